//! The transfer log in the standard xferlog format (wu-ftpd, ProFTPD, vsftpd),
//! so existing log tools and fail2ban filters read ftpgate's transfers:
//!
//! `Sat Nov 21 22:00:00 2026 1 10.0.0.7 1048576 /in/a.csv b _ i r alice ftp 0 * c`
//!
//! current time (UTC), seconds, client address, bytes, file, type (a/b),
//! special action (_), direction (o out / i in), access mode (r), user,
//! service, authentication method, authenticated user id, completion (c/i).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct TransferRecord {
    pub finished: SystemTime,
    pub seconds: u64,
    pub client: IpAddr,
    pub bytes: u64,
    pub path: Vec<u8>,
    pub binary: bool,
    /// Upload (client to server).
    pub incoming: bool,
    pub user: String,
    pub complete: bool,
}

impl TransferRecord {
    pub fn line(&self) -> String {
        // Fields are space-separated: a space inside a name would shift them.
        let path: String =
            String::from_utf8_lossy(&self.path).chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
        let user: String = self.user.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
        format!(
            "{} {} {} {} {} {} _ {} r {} ftp 0 * {}\n",
            ctime(self.finished),
            self.seconds.max(1),
            self.client.to_canonical(),
            self.bytes,
            path,
            if self.binary { 'b' } else { 'a' },
            if self.incoming { 'i' } else { 'o' },
            if user.is_empty() { "-".to_string() } else { user },
            if self.complete { 'c' } else { 'i' },
        )
    }
}

/// Days since 1970-01-01, seconds into that day, and the civil date
/// (year, month, day) in UTC (Howard Hinnant's algorithm): no time-zone
/// crate for two log formats.
fn utc(t: SystemTime) -> (i64, u64, i64, i64, i64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (days, secs % 86_400, yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, for log lines an operator reads against a clock.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let (_, rem, year, month, day) = utc(t);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// `Www Mmm dd hh:mm:ss yyyy` in UTC, as ctime(3) writes it.
fn ctime(t: SystemTime) -> String {
    let (days, rem, year, month, day) = utc(t);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        year
    )
}

/// An append-only xferlog file.
#[derive(Debug)]
pub struct XferLog {
    file: Mutex<std::fs::File>,
}

impl XferLog {
    pub fn open(path: &Path) -> std::io::Result<XferLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(XferLog { file: Mutex::new(file) })
    }

    /// One line, one write: concurrent sessions never interleave within a line.
    pub fn record(&self, r: &TransferRecord) {
        let line = r.line();
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!(target: "ftpgate::transfer", error = %e, "cannot write the transfer log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_format() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000);
        assert_eq!(rfc3339_utc(t), "2026-05-28T20:26:40Z");
    }

    #[test]
    fn ctime_format() {
        assert_eq!(ctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(UNIX_EPOCH + Duration::from_secs(1_795_297_325)), "Sat Nov 21 21:42:05 2026");
        assert_eq!(ctime(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn line_format() {
        let r = TransferRecord {
            finished: UNIX_EPOCH + Duration::from_secs(1_795_297_325),
            seconds: 0,
            client: "::ffff:10.0.0.7".parse().unwrap(),
            bytes: 1_048_576,
            path: b"/in/my report.csv".to_vec(),
            binary: true,
            incoming: true,
            user: "alice".into(),
            complete: true,
        };
        assert_eq!(r.line(), "Sat Nov 21 21:42:05 2026 1 10.0.0.7 1048576 /in/my_report.csv b _ i r alice ftp 0 * c\n");
    }
}
