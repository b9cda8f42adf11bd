//! `[backend]` and `[backends.NAME]`: the FTP servers behind ftpgate.

use super::units::seconds;
use super::{default_max_tls, BackendTlsMode};
use crate::tls_options::TlsVersion;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedBackend {
    /// `HOST:PORT`, or a list of them: a pool, balanced by `balance`, checked
    /// every `[backend] health_interval` like the default pool.
    #[serde(deserialize_with = "one_or_many")]
    pub address: Vec<String>,
    /// How this pool's backend is chosen at login (see `[backend] balance`).
    #[serde(default)]
    pub balance: Balance,
}

/// A named backend (pool) checked: its members as `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPool {
    pub addresses: Vec<String>,
    pub balance: Balance,
}

impl NamedPool {
    /// One backend, balanced by the default.
    pub fn single(address: impl Into<String>) -> NamedPool {
        NamedPool { addresses: vec![address.into()], balance: Balance::default() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `HOST:PORT` of the backend FTP server (a host name is resolved per
    /// session), or a list of them: a pool, balanced by `balance`.
    #[serde(deserialize_with = "one_or_many")]
    pub address: Vec<String>,
    /// How a pool's backend is chosen at login: `least-connections`,
    /// `round-robin` or `user` (a user stays on one backend while it is up).
    #[serde(default)]
    pub balance: Balance,
    /// Seconds between a pool's health checks (connect, read the 220).
    #[serde(default = "default_health_interval", deserialize_with = "seconds")]
    pub health_interval: u64,
    /// TLS towards the backend: `off`, `explicit`, `implicit`.
    #[serde(default)]
    pub tls: BackendTlsMode,
    /// CA (PEM) to verify the backend certificate with; default: system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Name the backend certificate must carry; default: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Pin the backend certificate by its SHA-256 fingerprint instead of a CA.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Do not verify the backend certificate at all. Logged on every start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Highest TLS version offered to the backend: `"1.2"` (the default, see
    /// `default_max_tls`) or `"1.3"` for servers that send new session
    /// tickets on data connections (vsftpd, pure-ftpd).
    #[serde(default = "default_max_tls")]
    pub max_tls_version: TlsVersion,
    /// Send a PROXY protocol header (`"v1"` or `"v2"`) at the start of each
    /// backend control connection, so a backend that understands it (ProFTPD
    /// mod_proxy_protocol, an HAProxy in front of the servers) sees the real
    /// client address. Data connections carry none: FTP servers do not
    /// expect it there.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyVersion>,
}

/// A PROXY protocol version ftpgate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
}

/// How a backend pool balances new sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    LeastConnections,
    RoundRobin,
    User,
}

fn default_health_interval() -> u64 {
    5
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(a) => vec![a],
        Raw::Many(v) => v,
    })
}

impl BackendConfig {
    pub fn new(address: Vec<String>) -> BackendConfig {
        BackendConfig {
            address,
            balance: Balance::default(),
            health_interval: default_health_interval(),
            tls: BackendTlsMode::Off,
            ca: None,
            server_name: None,
            fingerprint: None,
            insecure_skip_verify: false,
            max_tls_version: default_max_tls(),
            proxy_protocol: None,
        }
    }
}
