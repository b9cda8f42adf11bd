//! Log lines that a peer can cause are rate-limited: a flood of connections
//! or commands must not write the disk full or bury the lines that matter.
//! [`PerKey`] lets one line through per key (an address) per period, in a
//! table of bounded size; [`Budget`] lets the first few lines of a session
//! through and counts the rest for one summary line at its end.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered at most; past this, old entries are pruned, and if none
/// is old enough the line is suppressed (a flood from many addresses at
/// once still writes a bounded number of lines per period).
const MAX_KEYS: usize = 4096;

/// One log line per key per `period`.
#[derive(Debug)]
pub struct PerKey<K> {
    period: Duration,
    seen: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> PerKey<K> {
    pub fn new(period: Duration) -> Self {
        PerKey { period, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether a line about `key` should be written now.
    pub fn allow(&self, key: &K) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &K, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = seen.get(key) {
            if now.duration_since(*last) < self.period {
                return false;
            }
        } else if seen.len() >= MAX_KEYS {
            let period = self.period;
            seen.retain(|_, last| now.duration_since(*last) < period);
            if seen.len() >= MAX_KEYS {
                return false;
            }
        }
        seen.insert(key.clone(), now);
        true
    }
}

/// The first `full` lines of a kind in full, then only a count.
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    written: u32,
    suppressed: u64,
}

impl Budget {
    /// Whether this line may be written, counting it either way.
    pub fn allow(&mut self, full: u32) -> bool {
        if self.written < full {
            self.written += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines not written, for the summary at the end.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_per_period() {
        let l = PerKey::new(Duration::from_secs(60));
        let t = Instant::now();
        assert!(l.allow_at(&1, t));
        assert!(!l.allow_at(&1, t + Duration::from_secs(59)));
        assert!(l.allow_at(&2, t + Duration::from_secs(1)));
        assert!(l.allow_at(&1, t + Duration::from_secs(61)));
    }

    #[test]
    fn the_table_is_bounded() {
        let l = PerKey::new(Duration::from_secs(60));
        let t = Instant::now();
        for k in 0..MAX_KEYS {
            assert!(l.allow_at(&k, t));
        }
        assert!(!l.allow_at(&MAX_KEYS, t + Duration::from_secs(1)), "full of fresh keys: suppressed");
        assert!(l.allow_at(&MAX_KEYS, t + Duration::from_secs(61)), "old keys pruned");
        assert!(l.seen.lock().unwrap().len() <= MAX_KEYS);
    }

    #[test]
    fn budget_counts_what_it_suppresses() {
        let mut b = Budget::default();
        let allowed = (0..10).filter(|_| b.allow(3)).count();
        assert_eq!((allowed, b.suppressed()), (3, 7));
    }
}
