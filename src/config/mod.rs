//! ftpgate's configuration: TOML on disk, flags on top, validated once on load
//! with errors that name the field.

mod backend;
mod cluster;
mod connector;
mod limits;
mod scan;
mod units;
pub use backend::{BackendConfig, Balance, NamedBackend, NamedPool, ProxyVersion};
pub use cluster::{ClusterConfig, ClusterSettings, FailMode};
pub use connector::{
    connector_name, valid_connector_name, ConnectorConfig, ConnectorFile, ConnectorSettings, ConnectorsConfig,
    ConnectorsSettings, CONNECTOR_PREFIX,
};
pub use limits::{Limits, PassiveConfig, PortRange, Timeouts};
pub use scan::{ScanConfig, ScanFallback, ScanSettings, Scanner};
pub use units::{parse_seconds, with_ftp_port};

use crate::tls_options::{BackendTlsOptions, BackendVerify, ServerTlsOptions, TlsVersion};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// The line of `key` (`"passive.ports"`, `"policy"`, `"tls.cert (--cert)"`)
/// in a configuration file's text: the first `key =` inside its table
/// (`[passive]`, or `[[listener]]` for `listener.*`), or before any table
/// for a top-level key. `None`: the key is not in the file (a default, or
/// a flag).
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let key = key.split(" (").next().unwrap_or(key);
    let (table, name) = match key.rsplit_once('.') {
        Some((t, n)) => (t, n),
        None => ("", key),
    };
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[') {
            current = h.trim_start_matches('[').trim_end_matches(']').trim();
            if current == table && name.is_empty() {
                return Some(i + 1);
            }
            continue;
        }
        let defines = l.strip_prefix(name).is_some_and(|rest| rest.trim_start().starts_with('='));
        if current == table && defines {
            return Some(i + 1);
        }
    }
    // A whole table named as the field (`listener`, `backend`).
    text.lines()
        .position(|l| {
            let h = l.trim().trim_start_matches('[').trim_end_matches(']');
            l.trim().starts_with('[') && h == key
        })
        .map(|i| i + 1)
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Policy file (TOML): networks, permissions, login limits. Without one,
    /// only the protocol's own ordering rules apply.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Client-facing control listeners.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// The FTP server behind ftpgate. Required (from the file or `--backend`).
    #[serde(default)]
    pub backend: Option<BackendConfig>,
    /// More backends by name, for bastion users mapped to them in the policy
    /// (`backend = "NAME"`). They share `[backend]`'s TLS settings.
    #[serde(default)]
    pub backends: std::collections::BTreeMap<String, NamedBackend>,
    /// ftpgate's own certificate for TLS with clients (explicit and implicit FTPS).
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub passive: PassiveConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Shared state for several instances (Redis).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Uploads scanned for malware before the client hears `226`.
    #[serde(default)]
    pub scan: ScanConfig,
    /// Where outbound connectors dial in (backends `connector:NAME`).
    #[serde(default)]
    pub connectors: ConnectorsConfig,
}

/// The admin socket `ftpgate who` and `ftpgate bans` talk to.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A Unix socket (mode 0600, never on the network). Default: none.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// Where `ftpgate who` and `ftpgate bans` look when not told.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/ftpgate/admin.sock";

/// What clients see of ftpgate itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Text of ftpgate's own `220` greeting. The backend's greeting is never
    /// shown: a bastion does not tell scanners which server and version sit
    /// behind it. Default: [`DEFAULT_BANNER`].
    #[serde(default)]
    pub banner: Option<String>,
}

/// The greeting's default text: names no server software and no version.
pub const DEFAULT_BANNER: &str = "FTP service ready";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Transfer log in the standard xferlog format (one line per file transfer).
    #[serde(default)]
    pub xferlog: Option<PathBuf>,
    /// `text` or `json` (one object per line, for log shippers).
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:PORT` for `/metrics`, `/healthz` and `/readyz`; off unless set.
    /// Keep it on loopback or a management network.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Serve the `/status` page (who is connected, what they transfer) on
    /// that address; `false` turns it off (404).
    #[serde(default = "default_true")]
    pub status: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT` to accept FTP clients on, IPv4 or IPv6 (`[::1]:2121`).
    pub address: SocketAddr,
    /// TLS with clients on this listener: `off` (plain FTP only), `explicit`
    /// (plain or `AUTH TLS`), `required` (`AUTH TLS` before `USER`), `implicit`
    /// (TLS from the first byte, usually port 990).
    #[serde(default)]
    pub tls: ClientTlsMode,
    /// Expect a PROXY protocol (v1 or v2) header on every connection, control
    /// and data, from a load balancer; its address is the client's.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The load balancers (CIDRs) whose PROXY headers are believed, on this
    /// listener and on the passive ports of its sessions. A header decides
    /// the client's address for the policy, bans, limits and the data
    /// connection check, so a connection from anywhere else is closed
    /// unanswered. Required with `proxy_protocol = true`.
    #[serde(default)]
    pub proxy_from: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    #[default]
    Off,
    Explicit,
    Required,
    Implicit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendTlsMode {
    #[default]
    Off,
    /// ftpgate sends `AUTH TLS`, `PBSZ 0`, `PROT P` itself, whatever the client does.
    Explicit,
    /// TLS from the first byte.
    Implicit,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM) presented to clients.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA (PEM) that must have signed client certificates: turns on mutual TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// A client data connection must resume its own control connection's TLS
    /// session. Turn off only for clients that cannot (Python ftplib, Apache
    /// Commons Net); the data connection is then not bound to the session.
    #[serde(default = "default_true")]
    pub require_session_reuse: bool,
    /// Lowest TLS version accepted from clients, `"1.2"` or `"1.3"`.
    #[serde(default = "default_min_tls")]
    pub min_version: TlsVersion,
    /// With mutual TLS: the FTP user name must be one of the client
    /// certificate's names (subject CN, or a DNS or e-mail SAN).
    #[serde(default)]
    pub client_cert_user_match: bool,
    /// Cipher suites offered to clients, by rustls name (for example
    /// `"TLS13_AES_256_GCM_SHA384"`), most preferred first. Empty: rustls'
    /// defaults, which are all modern AEAD suites.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

fn default_true() -> bool {
    true
}
fn default_min_tls() -> TlsVersion {
    TlsVersion::V12
}
/// TLS 1.2 towards backends unless `backend.max_tls_version = "1.3"`.
/// FTP servers that require session reuse (ProFTPD, vsftpd's
/// `require_ssl_reuse`) accept a data connection only if it resumes the
/// control connection's session. A TLS 1.2 session resumes any number of
/// times; a TLS 1.3 ticket is spent by one resumption in rustls (it cannot
/// offer one twice), so a server that sends no new tickets on data
/// connections (ProFTPD) refuses the session's data connections once the
/// control handshake's tickets are gone. TLS 1.2 here is ECDHE with AEAD
/// suites only (rustls offers nothing weaker).
pub(super) fn default_max_tls() -> TlsVersion {
    TlsVersion::V12
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            require_session_reuse: true,
            min_version: default_min_tls(),
            client_cert_user_match: false,
            cipher_suites: vec![],
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { address: None, status: true }
    }
}

/// A client listener after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub tls: ClientTlsMode,
    pub proxy_protocol: bool,
    /// Senders whose PROXY headers are believed (never empty with
    /// `proxy_protocol`).
    pub proxy_from: ProxySenders,
}

/// The load balancers allowed to send PROXY protocol headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySenders(std::sync::Arc<[ipnet::IpNet]>);

impl ProxySenders {
    pub fn new(nets: &[ipnet::IpNet]) -> ProxySenders {
        ProxySenders(nets.into())
    }

    /// Whether a connection from `peer` may speak for a client.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|n| n.contains(&peer))
    }
}

/// Configuration after validation, in the types the server uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    /// `/status` is served (`[metrics] status`).
    pub status_page: bool,
    pub xferlog: Option<PathBuf>,
    pub listeners: Vec<ListenerSettings>,
    pub backend: String,
    /// Named backends: name to its pool of `HOST:PORT`.
    pub named_backends: std::collections::BTreeMap<String, NamedPool>,
    /// Present when any listener offers TLS.
    pub client_tls: Option<ServerTlsOptions>,
    pub require_session_reuse: bool,
    /// USER must match the client certificate (mutual TLS only).
    pub client_cert_user_match: bool,
    pub backend_tls: BackendTlsMode,
    pub backend_tls_options: BackendTlsOptions,
    /// PROXY protocol header sent on backend control connections.
    pub backend_proxy_protocol: Option<ProxyVersion>,
    pub passive_ports: PortRange,
    pub public_address: Option<IpAddr>,
    pub idle_control: Duration,
    pub data_connect: Duration,
    pub transfer_stall: Duration,
    pub backend_connect: Duration,
    pub backend_reply: Duration,
    pub drain: Duration,
    pub max_sessions: usize,
    /// 0: no limit.
    pub max_sessions_per_address: usize,
    /// Bad commands before and after login (0: no limit).
    pub max_bad_commands: u32,
    pub max_bad_commands_after_login: u32,
    /// IPv6 clients count per prefix of this length for per-address rules.
    pub ipv6_prefix: u8,
    pub login_timeout: Duration,
    /// ftpgate's `220` text.
    pub banner: String,
    pub admin_socket: Option<PathBuf>,
    /// Every backend of the pool (`backend` is the first).
    pub backend_pool: Vec<String>,
    pub balance: Balance,
    pub health_interval: Duration,
    /// Redis shared by several instances, if any.
    pub cluster: Option<ClusterSettings>,
    /// `[scan]`: uploads go through clamd too.
    pub scan: Option<ScanSettings>,
    /// `[connectors]`: backends reached through outbound connectors.
    pub connectors: Option<ConnectorsSettings>,
}

impl Config {
    /// The whole configuration as TOML, with every default written out and
    /// the one secret a file may hold (a password in `[cluster] redis`)
    /// replaced by `***`.
    pub fn to_toml_masked(&self) -> Result<String, toml::ser::Error> {
        let mut c = self.clone();
        if let Some(url) = &mut c.cluster.redis {
            *url = cluster::mask_password(url);
        }
        toml::to_string(&c)
    }

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
        let has_port = |a: &str| match connector_name(a) {
            Some(name) => valid_connector_name(name),
            None => a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0)),
        };
        let pool: Vec<String> = backend.address.iter().map(|a| with_ftp_port(a)).collect();
        if pool.is_empty() {
            return Err(invalid("backend.address", "at least one HOST:PORT"));
        }
        for a in &pool {
            if !has_port(a) {
                return Err(invalid("backend.address", format!("expected HOST:PORT or connector:NAME, got {a:?}")));
            }
        }
        if backend.health_interval == 0 {
            return Err(invalid("backend.health_interval", "must be at least 1 second"));
        }
        for (name, b) in &self.backends {
            if b.address.is_empty() {
                return Err(invalid("backends.address", format!("backend {name}: at least one HOST:PORT")));
            }
            for a in &b.address {
                if !has_port(&with_ftp_port(a)) {
                    return Err(invalid("backends.address", format!("backend {name}: expected HOST:PORT, got {a:?}")));
                }
            }
        }
        let client_tls = match self.listeners.iter().find(|l| l.tls != ClientTlsMode::Off) {
            None => None,
            Some(l) => {
                let why = |f| format!("required because listener {} uses TLS ({f})", l.address);
                let cert = self.tls.cert.clone().ok_or_else(|| invalid("tls.cert", why("--cert")))?;
                let key = self.tls.key.clone().ok_or_else(|| invalid("tls.key", why("--key")))?;
                Some(ServerTlsOptions {
                    cert,
                    key,
                    client_ca: self.tls.client_ca.clone(),
                    min_version: self.tls.min_version,
                    cipher_suites: self.tls.cipher_suites.clone(),
                })
            }
        };
        if self.tls.client_cert_user_match && self.tls.client_ca.is_none() {
            return Err(invalid("tls.client_cert_user_match", "needs tls.client_ca (mutual TLS)"));
        }
        let verify = match (&backend.ca, &backend.fingerprint, backend.insecure_skip_verify) {
            (None, None, false) => BackendVerify::SystemRoots,
            (Some(ca), None, false) => BackendVerify::CaFile(ca.clone()),
            (None, Some(f), false) => {
                if crate::tls_options::parse_fingerprint(f).is_none() {
                    return Err(invalid("backend.fingerprint", "expected 64 hex digits (SHA-256), colons allowed"));
                }
                BackendVerify::Fingerprint(f.clone())
            }
            (None, None, true) => BackendVerify::Insecure,
            _ => return Err(invalid("backend", "set at most one of ca, fingerprint, insecure_skip_verify")),
        };
        for l in &self.listeners {
            if l.proxy_protocol && l.proxy_from.is_empty() {
                return Err(invalid(
                    "listener.proxy_from",
                    format!(
                        "listener {} has proxy_protocol = true but no proxy_from: name the load balancers \
                         (CIDRs, or --proxy-from) whose PROXY headers are believed; from anyone else a header \
                         would let a client claim any address (another network's policy, a way around bans \
                         and limits, another client's data connection)",
                        l.address
                    ),
                ));
            }
        }
        let passive_ports = PortRange::parse(&self.passive.ports).map_err(|m| invalid("passive.ports", m))?;
        let t = &self.timeouts;
        for (field, v) in [
            ("timeouts.idle_control", t.idle_control),
            ("timeouts.data_connect", t.data_connect),
            ("timeouts.transfer_stall", t.transfer_stall),
            ("timeouts.backend_connect", t.backend_connect),
            ("timeouts.backend_reply", t.backend_reply),
            ("timeouts.login", t.login),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1 second"));
            }
        }
        if !(1..=128).contains(&self.limits.ipv6_prefix) {
            return Err(invalid("limits.ipv6_prefix", "must be 1 to 128 (64: count each /64 as one client)"));
        }
        if self.limits.max_sessions == 0 {
            return Err(invalid("limits.max_sessions", "must be at least 1"));
        }
        Ok(Settings {
            policy: self.policy.clone(),
            metrics: self.metrics.address,
            status_page: self.metrics.status,
            xferlog: self.logs.xferlog.clone(),
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerSettings {
                    address: l.address,
                    tls: l.tls,
                    proxy_protocol: l.proxy_protocol,
                    proxy_from: ProxySenders::new(&l.proxy_from),
                })
                .collect(),
            backend: pool[0].clone(),
            backend_pool: pool.clone(),
            balance: backend.balance,
            health_interval: Duration::from_secs(backend.health_interval),
            named_backends: self
                .backends
                .iter()
                .map(|(n, b)| {
                    let addresses = b.address.iter().map(|a| with_ftp_port(a)).collect();
                    (n.clone(), NamedPool { addresses, balance: b.balance })
                })
                .collect(),
            client_tls,
            require_session_reuse: self.tls.require_session_reuse,
            client_cert_user_match: self.tls.client_cert_user_match,
            backend_tls: backend.tls,
            backend_tls_options: BackendTlsOptions {
                verify,
                server_name: backend.server_name.clone(),
                max_version: backend.max_tls_version,
            },
            backend_proxy_protocol: backend.proxy_protocol,
            passive_ports,
            public_address: self.passive.public_address,
            idle_control: Duration::from_secs(t.idle_control),
            data_connect: Duration::from_secs(t.data_connect),
            transfer_stall: Duration::from_secs(t.transfer_stall),
            backend_connect: Duration::from_secs(t.backend_connect),
            backend_reply: Duration::from_secs(t.backend_reply),
            drain: Duration::from_secs(t.drain),
            max_sessions: self.limits.max_sessions,
            max_sessions_per_address: self.limits.max_sessions_per_address,
            max_bad_commands: self.limits.max_bad_commands,
            max_bad_commands_after_login: self.limits.max_bad_commands_after_login,
            ipv6_prefix: self.limits.ipv6_prefix,
            login_timeout: Duration::from_secs(t.login),
            banner: self.server.banner.clone().unwrap_or_else(|| DEFAULT_BANNER.to_string()),
            admin_socket: self.admin.socket.clone(),
            cluster: self.cluster.validate()?,
            scan: self.scan.validate().map_err(|(field, message)| invalid(field, message))?,
            connectors: self.connectors_settings(&pool)?,
        })
    }
}

impl Config {
    /// `[connectors]` with the connector names every backend address uses.
    fn connectors_settings(&self, pool: &[String]) -> Result<Option<ConnectorsSettings>, ConfigError> {
        let mut names: Vec<String> = pool
            .iter()
            .chain(self.backends.values().flat_map(|b| b.address.iter()))
            .filter_map(|a| connector_name(a).map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        self.connectors
            .validate(names, (self.tls.cert.as_ref(), self.tls.key.as_ref()))
            .map_err(|(field, message)| invalid(field, message))
    }
}

#[cfg(test)]
mod tests;
