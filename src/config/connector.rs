//! `[connectors]` on the edge (where outbound connectors dial in) and
//! `[connector]` for the `ftpgate connector` process inside the private
//! network (docs/connectors.md).

use super::units::seconds;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The prefix of a backend address reached through connectors.
pub const CONNECTOR_PREFIX: &str = "connector:";

/// The connector name in a backend address `connector:NAME`, if it is one.
pub fn connector_name(address: &str) -> Option<&str> {
    address.strip_prefix(CONNECTOR_PREFIX)
}

/// A connector name: what its certificate's common name says, so letters,
/// digits, `-`, `_` and `.` (a DNS-name-like label), 1 to 63 of them.
pub fn valid_connector_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// Where connectors dial in (`--connector-listen`). Unset: no connectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// CA (PEM) that must have signed a connector's client certificate
    /// (`--connector-ca`); the certificate's common name is its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// The edge's certificate for connectors; default `[tls] cert`/`key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[connectors]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorsSettings {
    pub listen: SocketAddr,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The connector names the backends use; a connector with any other
    /// name is refused.
    pub names: Vec<String>,
}

impl ConnectorsConfig {
    /// `names`: the connector names the backend addresses use;
    /// `tls`: `[tls] cert` and `key`, the default certificate.
    pub fn validate(
        &self,
        names: Vec<String>,
        tls: (Option<&PathBuf>, Option<&PathBuf>),
    ) -> Result<Option<ConnectorsSettings>, (&'static str, String)> {
        let Some(listen) = self.listen else {
            if let Some(n) = names.first() {
                return Err((
                    "connectors.listen",
                    format!("backend address connector:{n} needs a place for connectors to dial in ([connectors] listen or --connector-listen)"),
                ));
            }
            return Ok(None);
        };
        let ca = self.ca.clone().ok_or((
            "connectors.ca",
            "required with connectors.listen: the CA whose certificates connectors present (--connector-ca)"
                .to_string(),
        ))?;
        let cert = self
            .cert
            .clone()
            .or_else(|| tls.0.cloned())
            .ok_or(("connectors.cert", "the edge's certificate for connectors: set it, or [tls] cert".to_string()))?;
        let key = self
            .key
            .clone()
            .or_else(|| tls.1.cloned())
            .ok_or(("connectors.key", "the key of connectors.cert: set it, or [tls] key".to_string()))?;
        if names.is_empty() {
            return Err((
                "connectors.listen",
                "no backend uses a connector (address = \"connector:NAME\"); every connector would be refused"
                    .to_string(),
            ));
        }
        Ok(Some(ConnectorsSettings { listen, ca, cert, key, names }))
    }
}

/// `[connector]`: the `ftpgate connector` process (flags override it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The edge's connector listener, `HOST:PORT` (`--edge`).
    #[serde(default)]
    pub edge: Option<String>,
    /// The name the edge's certificate must carry; default: the host of `edge`.
    #[serde(default)]
    pub edge_name: Option<String>,
    /// Pin the edge's certificate by SHA-256 fingerprint instead of `ca`.
    #[serde(default)]
    pub edge_fingerprint: Option<String>,
    /// This connector's name; its certificate must carry it (`--name`).
    #[serde(default)]
    pub name: Option<String>,
    /// The FTP server's control address, `HOST:PORT` (`--backend`).
    #[serde(default)]
    pub backend: Option<String>,
    /// The backend's passive ports `MIN-MAX` the connector may open; default:
    /// any port of the backend host.
    #[serde(default)]
    pub backend_ports: Option<String>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA (PEM) for the edge's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// TLS connections to the edge (`--links`), default 2.
    #[serde(default)]
    pub links: Option<usize>,
    /// Serve /metrics, /healthz, /readyz here; the only port it listens on.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Streams at once per link (default 1024).
    #[serde(default)]
    pub max_streams: Option<u32>,
    /// How long a stop (SIGTERM) waits for open streams (default 30 s).
    #[serde(default = "default_drain", deserialize_with = "seconds")]
    pub drain: u64,
}

fn default_drain() -> u64 {
    30
}

impl Default for ConnectorConfig {
    fn default() -> ConnectorConfig {
        ConnectorConfig {
            edge: None,
            edge_name: None,
            edge_fingerprint: None,
            name: None,
            backend: None,
            backend_ports: None,
            cert: None,
            key: None,
            ca: None,
            links: None,
            metrics: None,
            max_streams: None,
            drain: default_drain(),
        }
    }
}

/// A connector configuration file: `[connector]` alone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorFile {
    #[serde(default)]
    pub connector: ConnectorConfig,
}

/// `[connector]`, checked.
#[derive(Debug, Clone)]
pub struct ConnectorSettings {
    pub edge: String,
    pub edge_name: String,
    pub name: String,
    pub backend: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub fingerprint: Option<[u8; 32]>,
    pub links: usize,
    pub ports: Option<(u16, u16)>,
    pub metrics: Option<SocketAddr>,
    pub max_streams: u32,
    pub drain: Duration,
}

impl ConnectorConfig {
    pub fn validate(&self) -> Result<ConnectorSettings, (&'static str, String)> {
        let need =
            |v: &Option<String>, f: &'static str, flag: &str| v.clone().ok_or((f, format!("required (--{flag})")));
        let edge = need(&self.edge, "connector.edge", "edge")?;
        let (host, port) =
            edge.rsplit_once(':').ok_or(("connector.edge", format!("expected HOST:PORT, got {edge:?}")))?;
        if port.parse::<u16>().map_or(true, |p| p == 0) || host.is_empty() {
            return Err(("connector.edge", format!("expected HOST:PORT, got {edge:?}")));
        }
        let name = need(&self.name, "connector.name", "name")?;
        if !valid_connector_name(&name) {
            return Err(("connector.name", format!("{name:?}: 1 to 63 letters, digits, '-', '_' or '.'")));
        }
        let backend = super::with_ftp_port(&need(&self.backend, "connector.backend", "backend")?);
        let cert = self.cert.clone().ok_or(("connector.cert", "required (--cert)".to_string()))?;
        let key = self.key.clone().ok_or(("connector.key", "required (--key)".to_string()))?;
        let fingerprint = match &self.edge_fingerprint {
            Some(f) => Some(crate::tls_options::parse_fingerprint(f).ok_or((
                "connector.edge_fingerprint",
                format!("{f:?}: expected 64 hex digits (SHA-256), colons allowed"),
            ))?),
            None => None,
        };
        if fingerprint.is_none() && self.ca.is_none() {
            return Err((
                "connector.ca",
                "required to verify the edge (--ca), or pin it with --edge-fingerprint".into(),
            ));
        }
        let ports = match &self.backend_ports {
            Some(p) => {
                let (lo, hi) = p
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
                    .filter(|(a, b)| *a > 0 && a <= b)
                    .ok_or(("connector.backend_ports", format!("{p:?}: expected MIN-MAX, MIN <= MAX, MIN > 0")))?;
                Some((lo, hi))
            }
            None => None,
        };
        let links = self.links.unwrap_or(2);
        if !(1..=16).contains(&links) {
            return Err(("connector.links", format!("{links}: 1 to 16")));
        }
        let max_streams = self.max_streams.unwrap_or(1024);
        if max_streams == 0 {
            return Err(("connector.max_streams", "must be at least 1".into()));
        }
        Ok(ConnectorSettings {
            edge_name: self
                .edge_name
                .clone()
                .unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']').to_string()),
            edge,
            name,
            backend,
            cert,
            key,
            ca: self.ca.clone(),
            fingerprint,
            links,
            ports,
            metrics: self.metrics,
            max_streams,
            drain: Duration::from_secs(self.drain),
        })
    }
}
