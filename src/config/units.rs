//! Values operators write the short way: durations with units, backends
//! without a port.

use serde::Deserialize;

/// A backend named without a port (`ftp.internal`, `10.0.0.20`, `[::1]`,
/// `::1`) is on port 21, as every FTP client assumes.
pub fn with_ftp_port(address: &str) -> String {
    if let Ok(ip) = address.parse::<std::net::Ipv6Addr>() {
        return format!("[{ip}]:21");
    }
    if address.starts_with('[') && address.ends_with(']') {
        return format!("{address}:21");
    }
    if !address.is_empty() && !address.contains(':') {
        return format!("{address}:21");
    }
    address.to_string()
}

/// A duration in whole seconds: `30`, `"30s"`, `"15m"`, `"2h"`.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{text:?} is not a duration such as \"30s\" or \"15m\""))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        other => return Err(format!("{text:?}: unknown unit {other:?}; use s, m or h")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too long"))
}

pub(super) fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => parse_seconds(&t).map_err(serde::de::Error::custom),
    }
}
