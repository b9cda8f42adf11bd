//! Per-address and per-user session counts, shared by all sessions. A slot is
//! held for as long as the session (or its login) lives.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::protocol::command::TransferDirection;
use crate::relay::TokenBucket;

#[derive(Debug)]
pub struct Counts<K: Eq + Hash + Clone> {
    map: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> Default for Counts<K> {
    fn default() -> Self {
        Counts { map: Mutex::new(HashMap::new()) }
    }
}

/// One counted session; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash + Clone> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Counts<K> {
    /// Takes a slot for `key` unless `limit` (0: none) slots are taken already.
    pub fn take(self: &Arc<Self>, key: K, limit: usize) -> Option<Slot<K>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot { counts: Arc::clone(self), key })
    }

    pub fn get(&self, key: &K) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or(0)
    }
}

/// The key a client address is counted under by per-address rules: IPv4
/// (and IPv4-mapped IPv6) as it is, IPv6 cut to its first `v6_prefix` bits.
pub fn address_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// The tighter of two limits where 0 means none.
pub fn combined(a: usize, b: usize) -> usize {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut map = self.counts.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// One token bucket per user and direction, shared by all of that user's
/// transfers on this instance, so two parallel downloads split the rate.
#[derive(Debug, Default)]
pub struct RateBuckets {
    map: Mutex<HashMap<(String, TransferDirection), Arc<TokenBucket>>>,
}

/// Buckets kept before idle ones (held by no transfer) are dropped.
const BUCKETS_KEPT: usize = 1024;

impl RateBuckets {
    /// The user's bucket for `direction` at `rate`; a changed rate (after a
    /// reload) starts a new bucket for transfers from now on.
    pub fn get(&self, user: &str, direction: TransferDirection, rate: u64) -> Arc<TokenBucket> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > BUCKETS_KEPT {
            map.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let b = map.entry((user.to_string(), direction)).or_insert_with(|| Arc::new(TokenBucket::new(rate)));
        if b.rate() != rate {
            *b = Arc::new(TokenBucket::new(rate));
        }
        Arc::clone(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_and_release() {
        let c = Arc::new(Counts::default());
        let a = c.take("a", 2).unwrap();
        let b = c.take("a", 2).unwrap();
        assert!(c.take("a", 2).is_none());
        assert!(c.take("b", 2).is_some());
        drop(a);
        assert_eq!(c.get(&"a"), 1);
        assert!(c.take("a", 0).is_some(), "0 means no limit");
        drop(b);
    }

    #[test]
    fn combined_limit_is_the_tighter_nonzero_one() {
        assert_eq!(combined(0, 0), 0);
        assert_eq!(combined(50, 0), 50);
        assert_eq!(combined(0, 3), 3);
        assert_eq!(combined(50, 3), 3);
    }
}

#[cfg(test)]
mod address_key_tests {
    use super::address_key;

    #[test]
    fn ipv6_counts_by_prefix_and_ipv4_by_address() {
        let k = |s: &str, p| address_key(s.parse().unwrap(), p).to_string();
        assert_eq!(k("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:ffff::9", 64), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:3::1", 64), "2001:db8:1:3::");
        assert_eq!(k("2001:db8:1:2::1", 128), "2001:db8:1:2::1");
        assert_eq!(k("2001:db8:1:2::1", 48), "2001:db8:1::");
        assert_eq!(k("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(k("192.0.2.7", 64), "192.0.2.7");
    }
}
