//! How the configuration asks for TLS to be set up: plain values shared by
//! `config` (which reads and checks them) and `tls` (which builds rustls
//! configurations from them and loads the files). No rustls and no file
//! access here, so `config` does not depend on `tls`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, clap::ValueEnum)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    #[value(name = "1.2")]
    V12,
    #[serde(rename = "1.3")]
    #[value(name = "1.3")]
    V13,
}

/// Client-leg settings: ftpgate's certificate and what it asks of clients.
#[derive(Debug, Clone)]
pub struct ServerTlsOptions {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    pub min_version: TlsVersion,
    /// Allowed cipher suites by rustls name; empty: rustls' safe defaults.
    pub cipher_suites: Vec<String>,
}

/// How ftpgate checks the backend's certificate.
#[derive(Debug, Clone, Default)]
pub enum BackendVerify {
    /// The operating system's trusted roots.
    #[default]
    SystemRoots,
    /// A CA certificate file (PEM).
    CaFile(PathBuf),
    /// The SHA-256 of the backend's certificate (DER), whatever signed it.
    Fingerprint(String),
    /// No check at all. Logged as a warning on every start.
    Insecure,
}

#[derive(Debug, Clone)]
pub struct BackendTlsOptions {
    pub verify: BackendVerify,
    /// Name to verify the certificate against; defaults to the backend host.
    pub server_name: Option<String>,
    pub max_version: TlsVersion,
}

/// A SHA-256 fingerprint as operators write it: 64 hex digits, colons allowed.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
