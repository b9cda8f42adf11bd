//! Bandwidth and size limits per user, group, network and by default:
//! `download_rate`, `upload_rate` (e.g. `"2MiB/s"`), `max_upload_size`
//! (e.g. `"4MiB"`) and `max_transfers` (concurrent data transfers). Pure
//! decisions: the relay enforces them.

use std::fmt;

/// The limits that apply to one user's transfers. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferLimits {
    /// Bytes per second from the backend to the user, shared by all of the
    /// user's downloads and listings on the instance.
    pub download_rate: Option<u64>,
    /// Bytes per second from the user to the backend, shared likewise.
    pub upload_rate: Option<u64>,
    /// Bytes one file may receive in one session, across `REST`+`STOR` and
    /// `APPE`s.
    pub max_upload_size: Option<u64>,
    /// Data transfers the user may run at once.
    pub max_transfers: Option<usize>,
    /// Uploads go through the malware scanner (`[scan]` in the main
    /// configuration); `false` exempts a trusted account. Unset: scanned.
    pub scan: Option<bool>,
}

impl TransferLimits {
    /// Each limit from `self`, or from `fallback` where `self` sets none: a
    /// user's own limit beats its groups', a group's its network's, a
    /// network's the defaults.
    pub fn or(self, fallback: TransferLimits) -> TransferLimits {
        TransferLimits {
            download_rate: self.download_rate.or(fallback.download_rate),
            upload_rate: self.upload_rate.or(fallback.upload_rate),
            max_upload_size: self.max_upload_size.or(fallback.max_upload_size),
            max_transfers: self.max_transfers.or(fallback.max_transfers),
            scan: self.scan.or(fallback.scan),
        }
    }

    /// The tighter of each limit: a user in several groups gets the
    /// strictest of them.
    pub fn tightest(self, other: TransferLimits) -> TransferLimits {
        fn min<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        TransferLimits {
            download_rate: min(self.download_rate, other.download_rate),
            upload_rate: min(self.upload_rate, other.upload_rate),
            max_upload_size: min(self.max_upload_size, other.max_upload_size),
            max_transfers: min(self.max_transfers, other.max_transfers),
            // A user in several groups is scanned if any of them says so.
            scan: match (self.scan, other.scan) {
                (Some(a), Some(b)) => Some(a || b),
                (a, b) => a.or(b),
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == TransferLimits::default()
    }
}

impl fmt::Display for TransferLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |r: Option<u64>| r.map_or("unlimited".to_string(), |r| format!("{}/s", size_text(r)));
        write!(
            f,
            "download {}, upload {}, upload size {}, transfers at once {}",
            rate(self.download_rate),
            rate(self.upload_rate),
            self.max_upload_size.map_or("unlimited".to_string(), size_text),
            self.max_transfers.map_or("unlimited".to_string(), |n| n.to_string()),
        )?;
        match self.scan {
            Some(false) => write!(f, ", uploads not scanned"),
            _ => Ok(()),
        }
    }
}

/// `4MiB`, `500 KB`, `1048576`: a byte count with an optional unit (B, KB,
/// MB, GB in powers of 1000; KiB, MiB, GiB in powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a size such as \"4MiB\""))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("{text:?}: unknown unit {other:?}; use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    let bytes = (n * mult).round();
    if !(1.0..=1e18).contains(&bytes) {
        return Err(format!("{text:?} must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `2MiB/s`: a size per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let Some(size) = text.trim().strip_suffix("/s") else {
        return Err(format!("{text:?} is not a rate such as \"2MiB/s\""));
    };
    parse_size(size)
}

/// A byte count the way an operator wrote it, for texts and `explain`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, n) in UNITS {
        if bytes >= n && bytes.is_multiple_of(n) {
            return format!("{} {unit}", bytes / n);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("500 KB"), Ok(500_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert!(parse_rate("2MiB").unwrap_err().contains("rate"));
        assert!(parse_size("4 MiBs").unwrap_err().contains("unknown unit"));
        assert!(parse_size("0").is_err());
        assert_eq!(size_text(4 << 20), "4 MiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }

    #[test]
    fn specific_beats_general_and_groups_take_the_tightest() {
        let user = TransferLimits { download_rate: Some(100), ..Default::default() };
        let g1 = TransferLimits { download_rate: Some(50), max_transfers: Some(3), ..Default::default() };
        let g2 = TransferLimits { max_transfers: Some(1), ..Default::default() };
        let defaults = TransferLimits { upload_rate: Some(10), max_transfers: Some(9), ..Default::default() };
        let l = user.or(g1.tightest(g2)).or(defaults);
        assert_eq!(l.download_rate, Some(100), "the user's own wins over its group's");
        assert_eq!(l.max_transfers, Some(1));
        assert_eq!(l.upload_rate, Some(10));
        assert_eq!(l.max_upload_size, None);
    }
}
