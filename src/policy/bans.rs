//! Failed-login tracking per client address: after `max_failures` failures in a
//! row an address is refused for `ban_seconds`, doubling with each further ban
//! up to `max_ban_seconds`. Time is passed in, so the engine stays pure.

use super::LoginLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Addresses tracked at most; the oldest entries go first beyond this, so a
/// spray of addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default, Clone)]
struct Entry {
    failures: u32,
    /// Bans so far; the next lasts `ban_seconds * 2^bans`.
    bans: u32,
    banned_until: Option<Duration>,
    last_seen: Duration,
}

#[derive(Debug, Default)]
pub struct LoginGuard {
    entries: HashMap<IpAddr, Entry>,
}

impl LoginGuard {
    /// When `ip`'s ban ends, if it is banned at `now`.
    pub fn banned_until(&self, ip: IpAddr, now: Duration) -> Option<Duration> {
        self.entries.get(&ip.to_canonical()).and_then(|e| e.banned_until).filter(|&t| t > now)
    }

    /// Records a failed login; returns the ban's end if this failure started one.
    pub fn failure(&mut self, ip: IpAddr, now: Duration, limits: &LoginLimits) -> Option<Duration> {
        if self.entries.len() >= MAX_TRACKED && !self.entries.contains_key(&ip.to_canonical()) {
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last_seen).map(|(ip, _)| *ip) {
                self.entries.remove(&oldest);
            }
        }
        let e = self.entries.entry(ip.to_canonical()).or_default();
        e.last_seen = now;
        e.failures += 1;
        if limits.max_failures == 0 || e.failures < limits.max_failures {
            return None;
        }
        let secs = limits.ban_seconds.saturating_mul(1u64 << e.bans.min(32)).min(limits.max_ban_seconds);
        e.bans += 1;
        e.failures = 0;
        let until = now + Duration::from_secs(secs);
        e.banned_until = Some(until);
        Some(until)
    }

    /// Bans `ip` until `until` (another rule than failed logins decided it).
    pub fn ban(&mut self, ip: IpAddr, now: Duration, until: Duration) {
        let e = self.entries.entry(ip.to_canonical()).or_default();
        e.last_seen = now;
        e.banned_until = Some(e.banned_until.map_or(until, |t| t.max(until)));
    }

    /// Addresses banned at `now`, with when each ban ends, soonest first.
    pub fn banned(&self, now: Duration) -> Vec<(IpAddr, Duration)> {
        let mut v: Vec<(IpAddr, Duration)> =
            self.entries.iter().filter_map(|(ip, e)| e.banned_until.filter(|&t| t > now).map(|t| (*ip, t))).collect();
        v.sort_by_key(|&(ip, t)| (t, ip));
        v
    }

    /// Ends `ip`'s ban and forgets its failures; whether it was banned.
    pub fn lift(&mut self, ip: IpAddr, now: Duration) -> bool {
        let was = self.banned_until(ip, now).is_some();
        self.entries.remove(&ip.to_canonical());
        was
    }

    /// A successful login clears the failure count (bans served are remembered
    /// so a repeat offender's next ban is longer).
    pub fn success(&mut self, ip: IpAddr) {
        if let Some(e) = self.entries.get_mut(&ip.to_canonical()) {
            e.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_are_listed_and_lifted() {
        let limits = LoginLimits { max_failures: 1, ..LoginLimits::default() };
        let mut g = LoginGuard::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Duration::from_secs(10);
        assert!(g.failure(ip, now, &limits).is_some());
        assert_eq!(g.banned(now).len(), 1);
        assert!(g.lift(ip, now));
        assert!(g.banned(now).is_empty() && g.banned_until(ip, now).is_none());
        assert!(!g.lift(ip, now), "lifting twice says it was not banned");
    }

    #[test]
    fn bans_grow_and_expire() {
        let limits = LoginLimits { max_failures: 3, ban_seconds: 10, max_ban_seconds: 25, ..LoginLimits::default() };
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut g = LoginGuard::default();
        let t = Duration::from_secs;
        assert_eq!(g.failure(ip, t(0), &limits), None);
        assert_eq!(g.failure(ip, t(1), &limits), None);
        assert_eq!(g.failure(ip, t(2), &limits), Some(t(12)));
        assert_eq!(g.banned_until(ip, t(5)), Some(t(12)));
        assert_eq!(
            g.banned_until("::ffff:192.0.2.7".parse().unwrap(), t(5)),
            Some(t(12)),
            "mapped form is the same host"
        );
        assert_eq!(g.banned_until(ip, t(12)), None);
        assert_eq!(g.banned_until("192.0.2.8".parse().unwrap(), t(5)), None);
        for s in 13..15 {
            assert_eq!(g.failure(ip, t(s), &limits), None);
        }
        assert_eq!(g.failure(ip, t(15), &limits), Some(t(35)), "second ban doubles");
        g.success(ip);
        for s in 40..42 {
            g.failure(ip, t(s), &limits);
        }
        assert_eq!(g.failure(ip, t(42), &limits), Some(t(67)), "capped at max_ban_seconds");
    }
}
