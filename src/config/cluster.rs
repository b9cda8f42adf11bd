//! `[cluster]`: state shared by several ftpgate instances through Redis.

use super::units::seconds;
use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT/DB` (or `rediss://` for TLS, verified with `ca` or
    /// the system roots). Every instance that names the same Redis and
    /// `prefix` shares failed-login counts, bans and session counts.
    /// Default: none, each instance keeps its own.
    #[serde(default)]
    pub redis: Option<String>,
    /// Prefix of every key ftpgate writes, one per deployment sharing a Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// What a login gets while Redis is unreachable: `open` (served with the
    /// instance's own counts and bans) or `closed` (refused with 421).
    #[serde(default)]
    pub fail: FailMode,
    /// How long a session's count outlives the instance that holds it: the
    /// instance refreshes it every third of this; a crashed instance's
    /// sessions stop counting after it.
    #[serde(default = "default_lease", deserialize_with = "seconds")]
    pub lease: u64,
    /// Milliseconds one Redis request may take before it counts as an outage.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// CA (PEM) for a `rediss://` server's certificate; default: system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// Logins while the shared state is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Serve logins with this instance's own state (an attacker's budget
    /// grows by the number of instances for the outage).
    #[default]
    Open,
    /// Refuse new sessions with 421 until Redis answers again.
    Closed,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            prefix: default_prefix(),
            fail: FailMode::default(),
            lease: default_lease(),
            timeout_ms: default_timeout_ms(),
            ca: None,
        }
    }
}

fn default_prefix() -> String {
    "ftpgate".into()
}

fn default_lease() -> u64 {
    30
}

fn default_timeout_ms() -> u64 {
    500
}

/// `[cluster]` checked: where Redis is and how to treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `HOST:PORT`.
    pub address: String,
    pub tls: bool,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub prefix: String,
    pub fail: FailMode,
    pub lease: Duration,
    pub timeout: Duration,
    pub ca: Option<PathBuf>,
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let Some(url) = &self.redis else { return Ok(None) };
        let (address, tls, db, username, password) = parse_url(url).map_err(|m| invalid("cluster.redis", m))?;
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err(invalid("cluster.prefix", "must be non-empty, without spaces"));
        }
        if self.lease < 3 {
            return Err(invalid("cluster.lease", "must be at least 3 seconds (it is refreshed every third)"));
        }
        if let Some(ca) = &self.ca {
            if !tls {
                return Err(invalid("cluster.ca", "only for rediss:// (TLS) URLs"));
            }
            if let Err(e) = std::fs::metadata(ca) {
                return Err(invalid("cluster.ca", format!("{}: {e}", ca.display())));
            }
        }
        if self.timeout_ms == 0 {
            return Err(invalid("cluster.timeout_ms", "must be at least 1"));
        }
        Ok(Some(ClusterSettings {
            address,
            tls,
            db,
            username,
            password,
            prefix: self.prefix.clone(),
            fail: self.fail,
            lease: Duration::from_secs(self.lease),
            timeout: Duration::from_millis(self.timeout_ms),
            ca: self.ca.clone(),
        }))
    }
}

type ParsedUrl = (String, bool, i64, Option<String>, Option<String>);

/// The URL with its password (if any) replaced by `***`, for printing.
pub(super) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, as Redis clients write it.
fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss://") {
        (true, r)
    } else {
        return Err(format!("{url:?}: expected redis://HOST:PORT/DB or rediss://..."));
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, "")) => (h, 0),
        Some((h, d)) => (h, d.parse::<i64>().map_err(|_| format!("{url:?}: database {d:?} is not a number"))?),
        None => (rest, 0),
    };
    if hostport.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let has_port = hostport.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
    let address = if has_port && !hostport.ends_with(']') { hostport.to_string() } else { format!("{hostport}:6379") };
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some(("", p)) => (None, Some(p.to_string())),
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(a.to_string()), None),
        },
    };
    Ok((address, tls, db, username, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_urls_hide_the_password() {
        assert_eq!(
            mask_password("rediss://ftp:s3cret@redis.internal:6390/1"),
            "rediss://ftp:***@redis.internal:6390/1"
        );
        assert_eq!(mask_password("redis://:pw@cache"), "redis://:***@cache");
        assert_eq!(mask_password("redis://cache:6379/0"), "redis://cache:6379/0");
    }

    #[test]
    fn urls_as_redis_clients_write_them() {
        assert_eq!(parse_url("redis://127.0.0.1:6380/2").unwrap(), ("127.0.0.1:6380".into(), false, 2, None, None));
        assert_eq!(parse_url("redis://cache").unwrap().0, "cache:6379");
        assert_eq!(parse_url("redis://[::1]").unwrap().0, "[::1]:6379");
        assert_eq!(parse_url("redis://[::1]:7000/").unwrap().0, "[::1]:7000");
        let (a, tls, _, u, p) = parse_url("rediss://ftp:s3cret@redis.internal:6390/1").unwrap();
        assert_eq!(
            (a.as_str(), tls, u.as_deref(), p.as_deref()),
            ("redis.internal:6390", true, Some("ftp"), Some("s3cret"))
        );
        assert_eq!(parse_url("redis://:pw@h").unwrap().4.as_deref(), Some("pw"));
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("redis://h/x").is_err());
    }

    #[test]
    fn settings_name_the_field() {
        let c = ClusterConfig { redis: Some("redis://h".into()), lease: 1, ..Default::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cluster.lease"), "{e}");
        let c = ClusterConfig { redis: Some("tcp://h".into()), lease: 30, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("cluster.redis"));
    }
}
