//! The `[passive]`, `[timeouts]` and `[limits]` sections: what bounds a
//! session in ports, time and numbers.

use super::units::seconds;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// All in seconds: a number, or a string with a unit (`"90s"`, `"15m"`,
/// `"1h"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// A client that sends no command for this long gets `421` and is closed.
    #[serde(default = "default_idle_control", deserialize_with = "seconds")]
    pub idle_control: u64,
    /// How long a client or backend data connection may take to arrive or connect.
    #[serde(default = "default_data_connect", deserialize_with = "seconds")]
    pub data_connect: u64,
    /// A transfer that moves no byte in either direction for this long is aborted.
    #[serde(default = "default_transfer_stall", deserialize_with = "seconds")]
    pub transfer_stall: u64,
    /// Connecting to the backend's control port.
    #[serde(default = "default_backend_connect", deserialize_with = "seconds")]
    pub backend_connect: u64,
    /// Waiting for a backend reply to a command (transfers excepted, which are
    /// bounded by `transfer_stall`).
    #[serde(default = "default_backend_reply", deserialize_with = "seconds")]
    pub backend_reply: u64,
    /// On SIGTERM: how long running transfers may go on before every session
    /// is closed.
    #[serde(default = "default_drain", deserialize_with = "seconds")]
    pub drain: u64,
    /// A client that has not logged in this long after connecting gets `421`
    /// and is closed.
    #[serde(default = "default_login", deserialize_with = "seconds")]
    pub login: u64,
}

fn default_login() -> u64 {
    60
}

fn default_drain() -> u64 {
    30
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
            drain: default_drain(),
            login: default_login(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Client sessions open at once; past it new clients get `421` and are closed.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Sessions open at once from one client address, with or without a
    /// policy file (the policy's own limit applies on top); 0: no limit.
    /// Also bounds the passive ports one address can hold (one per session).
    #[serde(default = "default_max_sessions_per_address")]
    pub max_sessions_per_address: usize,
    /// Malformed, unknown or denied commands a client may send before
    /// login; one more and it hears `421` and is closed. 0: no limit.
    #[serde(default = "default_max_bad_commands")]
    pub max_bad_commands: u32,
    /// The same after login (counted afresh from login on).
    #[serde(default = "default_max_bad_commands_after_login")]
    pub max_bad_commands_after_login: u32,
    /// IPv6 clients are counted by this prefix for every per-address rule
    /// (session limit, failed logins and bans): one customer or attacker
    /// usually holds a whole /64, so counting each /128 would give it an
    /// unlimited number of addresses. 1 to 128.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_ipv6_prefix() -> u8 {
    64
}

fn default_max_bad_commands() -> u32 {
    10
}

fn default_max_bad_commands_after_login() -> u32 {
    100
}

fn default_max_sessions_per_address() -> usize {
    50
}

fn default_max_sessions() -> usize {
    1000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: default_max_sessions(),
            max_sessions_per_address: default_max_sessions_per_address(),
            max_bad_commands: default_max_bad_commands(),
            max_bad_commands_after_login: default_max_bad_commands_after_login(),
            ipv6_prefix: default_ipv6_prefix(),
        }
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
