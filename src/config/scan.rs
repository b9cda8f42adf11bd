//! The `[scan]` section: uploads streamed to a malware scanner (clamd) while
//! they are relayed, and the backend's `226` held until it answers.

use super::units::seconds;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// clamd's socket: `"unix:PATH"` or `"tcp:HOST:PORT"` (`--scan-clamd`).
    /// Unset: uploads are not scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamd: Option<String>,
    /// An ICAP service instead (`REQMOD`, RFC 3507):
    /// `"icap://HOST:PORT/SERVICE"` (`--scan-icap`), e.g. c-icap's virus_scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icap: Option<String>,
    /// When the scanner is down, slow or answers nonsense: `"reject"` (the
    /// file is removed, `451`) or `"accept"` (`226`, a warning and a metric).
    #[serde(default)]
    pub on_error: ScanFallback,
    /// How long the scanner may take, from the upload's end to its verdict.
    #[serde(default = "default_timeout", deserialize_with = "seconds")]
    pub timeout: u64,
    /// Uploads larger than this (bytes) are not scanned whole; keep it at or
    /// below clamd's `StreamMaxLength` (25 MiB by default).
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// What becomes of an upload larger than `max_size`.
    #[serde(default)]
    pub on_oversize: ScanFallback,
    /// After this many infected uploads from one address, it is banned like
    /// an address with too many failed logins (the policy's `[login]` ban
    /// length). 0: never.
    #[serde(default)]
    pub ban_after: u32,
}

/// Reject (remove the file, `451`/`552`) or accept (`226`, with a warning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanFallback {
    #[default]
    Reject,
    Accept,
}

/// The same defaults as an empty `[scan]` table: a config built from flags
/// alone (`--scan-clamd`) gets them too.
impl Default for ScanConfig {
    fn default() -> ScanConfig {
        ScanConfig {
            clamd: None,
            icap: None,
            on_error: ScanFallback::default(),
            timeout: default_timeout(),
            max_size: default_max_size(),
            on_oversize: ScanFallback::default(),
            ban_after: 0,
        }
    }
}

fn default_timeout() -> u64 {
    30
}

fn default_max_size() -> u64 {
    25 << 20
}

/// The scanner uploads go to: clamd on a Unix or TCP socket, or an ICAP
/// service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanner {
    Unix(PathBuf),
    Tcp(SocketAddr),
    /// `icap://HOST:PORT/SERVICE`: `host` as written (sent in `Host:`),
    /// `port`, and the service's path.
    Icap {
        host: String,
        port: u16,
        service: String,
    },
}

impl std::fmt::Display for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scanner::Unix(p) => write!(f, "clamd at unix:{}", p.display()),
            Scanner::Tcp(a) => write!(f, "clamd at tcp:{a}"),
            Scanner::Icap { host, port, service } => write!(f, "ICAP service icap://{host}:{port}/{service}"),
        }
    }
}

/// `icap://HOST[:PORT]/SERVICE` (port 1344 by default).
fn parse_icap(url: &str) -> Result<Scanner, String> {
    let bad = || format!("{url:?}: write \"icap://HOST:PORT/SERVICE\", e.g. \"icap://127.0.0.1:1344/avscan\"");
    let rest = url.strip_prefix("icap://").ok_or_else(bad)?;
    let (authority, service) = rest.split_once('/').ok_or_else(bad)?;
    if service.is_empty() || service.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().map_err(|_| bad())?),
        _ => (authority, 1344),
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(bad());
    }
    Ok(Scanner::Icap { host: host.to_string(), port, service: service.to_string() })
}

/// `[scan]` after validation.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub scanner: Scanner,
    pub reject_on_error: bool,
    pub timeout: Duration,
    pub max_size: u64,
    pub reject_oversize: bool,
    /// Infected uploads before an address is banned; 0: never.
    pub ban_after: u32,
}

impl ScanConfig {
    /// `Ok(None)` when no scanner is configured.
    pub fn validate(&self) -> Result<Option<ScanSettings>, (&'static str, String)> {
        let clamd = match (&self.clamd, &self.icap) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(("scan.icap", "set one of scan.clamd and scan.icap, not both".into()));
            }
            (None, Some(url)) => return self.settings(parse_icap(url).map_err(|m| ("scan.icap", m))?),
            (Some(c), None) => c,
        };
        let clamd = if let Some(path) = clamd.strip_prefix("unix:") {
            if path.is_empty() {
                return Err((
                    "scan.clamd",
                    "unix: needs the socket's path, e.g. \"unix:/run/clamav/clamd.ctl\"".into(),
                ));
            }
            Scanner::Unix(PathBuf::from(path))
        } else if let Some(addr) = clamd.strip_prefix("tcp:") {
            let addr = addr.parse().map_err(|_| {
                ("scan.clamd", format!("{addr:?} is not HOST:PORT with a numeric address, e.g. \"tcp:127.0.0.1:3310\""))
            })?;
            Scanner::Tcp(addr)
        } else {
            return Err(("scan.clamd", format!("{clamd:?}: write \"unix:PATH\" or \"tcp:HOST:PORT\"")));
        };
        self.settings(clamd)
    }

    fn settings(&self, scanner: Scanner) -> Result<Option<ScanSettings>, (&'static str, String)> {
        if self.timeout == 0 {
            return Err(("scan.timeout", "must be at least 1 second".into()));
        }
        if self.max_size == 0 {
            return Err(("scan.max_size", "must be at least 1 byte".into()));
        }
        Ok(Some(ScanSettings {
            scanner,
            reject_on_error: self.on_error == ScanFallback::Reject,
            timeout: Duration::from_secs(self.timeout),
            max_size: self.max_size,
            reject_oversize: self.on_oversize == ScanFallback::Reject,
            ban_after: self.ban_after,
        }))
    }
}
