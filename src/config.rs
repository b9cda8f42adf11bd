//! ftpgate's configuration: TOML on disk, flags on top, validated once on load
//! with errors that name the field.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing control listeners.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// The FTP server behind ftpgate. Required (from the file or `--backend`).
    #[serde(default)]
    pub backend: Option<BackendConfig>,
    #[serde(default)]
    pub passive: PassiveConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT` to accept FTP clients on, IPv4 or IPv6 (`[::1]:2121`).
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `HOST:PORT` of the backend FTP server; a host name is resolved per session.
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveConfig {
    /// Client-facing passive data ports, `"MIN-MAX"`. These must be open at the
    /// firewall; every client data connection lands on one of them.
    #[serde(default = "default_passive_ports")]
    pub ports: String,
    /// Address written into `227` replies when ftpgate sits behind NAT. Without
    /// it, the local address of the client's control connection is used.
    #[serde(default)]
    pub public_address: Option<IpAddr>,
}

fn default_passive_ports() -> String {
    "50000-60000".to_string()
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig { ports: default_passive_ports(), public_address: None }
    }
}

/// All in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// A client that sends no command for this long gets `421` and is closed.
    #[serde(default = "default_idle_control")]
    pub idle_control: u64,
    /// How long a client or backend data connection may take to arrive or connect.
    #[serde(default = "default_data_connect")]
    pub data_connect: u64,
    /// A transfer that moves no byte in either direction for this long is aborted.
    #[serde(default = "default_transfer_stall")]
    pub transfer_stall: u64,
    /// Connecting to the backend's control port.
    #[serde(default = "default_backend_connect")]
    pub backend_connect: u64,
    /// Waiting for a backend reply to a command (transfers excepted, which are
    /// bounded by `transfer_stall`).
    #[serde(default = "default_backend_reply")]
    pub backend_reply: u64,
}

fn default_idle_control() -> u64 {
    900
}
fn default_data_connect() -> u64 {
    30
}
fn default_transfer_stall() -> u64 {
    300
}
fn default_backend_connect() -> u64 {
    10
}
fn default_backend_reply() -> u64 {
    60
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            idle_control: default_idle_control(),
            data_connect: default_data_connect(),
            transfer_stall: default_transfer_stall(),
            backend_connect: default_backend_connect(),
            backend_reply: default_backend_reply(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Client sessions open at once; past it new clients get `421` and are closed.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

fn default_max_sessions() -> usize {
    1000
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_sessions: default_max_sessions() }
    }
}

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| format!("expected MIN-MAX, got {s:?}"))?;
        let min: u16 = a.trim().parse().map_err(|_| format!("{a:?} is not a port number"))?;
        let max: u16 = b.trim().parse().map_err(|_| format!("{b:?} is not a port number"))?;
        if min == 0 || min > max {
            return Err(format!("need 1 <= MIN <= MAX, got {min}-{max}"));
        }
        Ok(PortRange { min, max })
    }

    pub fn len(&self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Configuration after validation, in the types the server uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listeners: Vec<SocketAddr>,
    pub backend: String,
    pub passive_ports: PortRange,
    pub public_address: Option<IpAddr>,
    pub idle_control: Duration,
    pub data_connect: Duration,
    pub transfer_stall: Duration,
    pub backend_connect: Duration,
    pub backend_reply: Duration,
    pub max_sessions: usize,
}

impl Config {
    pub fn from_toml(text: &str, path: &str) -> Result<Config, ConfigError> {
        // toml's message carries the line, column and field name.
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_string(), message: e.to_string() })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    pub fn validate(&self) -> Result<Settings, ConfigError> {
        if self.listeners.is_empty() {
            return Err(invalid("listener", "at least one [[listener]] (or --listen) is required"));
        }
        let backend = self
            .backend
            .as_ref()
            .ok_or_else(|| invalid("backend.address", "a backend is required ([backend] address or --backend)"))?;
        let has_port = backend
            .address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !has_port {
            return Err(invalid("backend.address", format!("expected HOST:PORT, got {:?}", backend.address)));
        }
        let passive_ports = PortRange::parse(&self.passive.ports).map_err(|m| invalid("passive.ports", m))?;
        let t = &self.timeouts;
        for (field, v) in [
            ("timeouts.idle_control", t.idle_control),
            ("timeouts.data_connect", t.data_connect),
            ("timeouts.transfer_stall", t.transfer_stall),
            ("timeouts.backend_connect", t.backend_connect),
            ("timeouts.backend_reply", t.backend_reply),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1 second"));
            }
        }
        if self.limits.max_sessions == 0 {
            return Err(invalid("limits.max_sessions", "must be at least 1"));
        }
        Ok(Settings {
            listeners: self.listeners.iter().map(|l| l.address).collect(),
            backend: backend.address.clone(),
            passive_ports,
            public_address: self.passive.public_address,
            idle_control: Duration::from_secs(t.idle_control),
            data_connect: Duration::from_secs(t.data_connect),
            transfer_stall: Duration::from_secs(t.transfer_stall),
            backend_connect: Duration::from_secs(t.backend_connect),
            backend_reply: Duration::from_secs(t.backend_reply),
            max_sessions: self.limits.max_sessions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../deploy/ftpgate.toml");
        let s = Config::from_toml(text, "deploy/ftpgate.toml").unwrap().validate().unwrap();
        assert_eq!(s.passive_ports, PortRange { min: 50000, max: 60000 });
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let err = Config::from_toml("[passive]\nports = \"1-2\"\nportz = 3\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("portz") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn validation_names_field() {
        let c = Config::from_toml(
            "[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"h:21\"\n[passive]\nports = \"6000-5000\"\n",
            "x",
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("passive.ports:"), "{err}");
        let c = Config::from_toml("[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"nohost\"\n", "x")
            .unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("backend.address:"));
        let c = Config::from_toml("[backend]\naddress = \"h:21\"\n", "x").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("listener:"));
    }
}
