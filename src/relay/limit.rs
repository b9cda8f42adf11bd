//! Byte limits on one direction of a relay: a rate (a token bucket that may
//! be shared by several relays, so one user's transfers split one rate) and
//! a cap on how many bytes may pass. Bytes only; who the limits belong to is
//! the caller's business.

use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock: the same as std's outside tests, and paused with them.
use tokio::time::Instant;

/// A token bucket in bytes. Relays pay for what they moved after the fact
/// and may run into debt; the next payer waits until the debt is repaid, so
/// the long-run rate holds exactly whatever the read sizes, and relays that
/// share a bucket share its rate.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    refilled: Instant,
}

/// The smallest burst: one full copy buffer, so a slow rate still moves
/// whole reads.
const MIN_BURST: u64 = 64 * 1024;

impl TokenBucket {
    /// `rate` bytes per second (at least 1); the burst is a quarter second of
    /// rate, at least [`MIN_BURST`]. Starts full.
    pub fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1) as f64;
        let burst = (rate / 4.0).max(MIN_BURST as f64);
        TokenBucket { rate, burst, state: Mutex::new(BucketState { tokens: burst, refilled: Instant::now() }) }
    }

    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// The most one read should take at once, so debts stay short.
    pub fn burst(&self) -> usize {
        self.burst as usize
    }

    /// Pays for `n` bytes just moved; returns how long the caller must wait
    /// before moving more.
    pub fn charge(&self, n: usize) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        s.tokens = (s.tokens + now.duration_since(s.refilled).as_secs_f64() * self.rate).min(self.burst);
        s.refilled = now;
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }
}

/// What may pass in one direction of a relay.
#[derive(Debug, Clone, Default)]
pub struct Limit {
    pub rate: Option<Arc<TokenBucket>>,
    /// At most this many bytes pass; one more ends the relay with
    /// [`super::RelayEnd::CapReached`].
    pub cap: Option<u64>,
}

impl Limit {
    pub fn none() -> Limit {
        Limit::default()
    }

    pub fn is_none(&self) -> bool {
        self.rate.is_none() && self.cap.is_none()
    }

    /// How many bytes the next read may take: a buffer's worth, no more
    /// than a burst, and one past what the cap leaves (so a sender that
    /// stops exactly at the cap is not cut off).
    pub fn next_read(&self, buffer: usize, moved: u64) -> usize {
        let mut n = buffer;
        if let Some(b) = &self.rate {
            n = n.min(b.burst());
        }
        if let Some(cap) = self.cap {
            n = n.min(usize::try_from(cap.saturating_sub(moved).saturating_add(1)).unwrap_or(usize::MAX));
        }
        n.max(1)
    }

    /// Of `n` bytes just read after `moved` had passed: how many may be
    /// written (fewer than `n` when the cap is passed).
    pub fn allowed(&self, n: usize, moved: u64) -> usize {
        match self.cap {
            Some(cap) => n.min(usize::try_from(cap.saturating_sub(moved)).unwrap_or(usize::MAX)),
            None => n,
        }
    }

    /// Pays for `n` bytes and waits as the rate requires; returns the wait.
    pub async fn pay(&self, n: usize) -> Duration {
        let Some(b) = &self.rate else { return Duration::ZERO };
        let wait = b.charge(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

/// Limits for both directions of a relay, where it counts what passed, and
/// how its owner stops it early.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub a_to_b: Limit,
    pub b_to_a: Limit,
    pub progress: Arc<super::Progress>,
    /// Notified to end the relay before its peers do (`RelayEnd::Cancelled`).
    /// A permit is kept, so a stop sent before the relay starts still counts.
    pub stop: Arc<tokio::sync::Notify>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_runs_into_debt_and_says_how_long_to_wait() {
        let b = TokenBucket::new(1_000_000);
        assert_eq!(b.burst(), 250_000);
        assert_eq!(b.charge(250_000), Duration::ZERO, "a full burst is free");
        let wait = b.charge(500_000);
        assert!(wait >= Duration::from_millis(490) && wait <= Duration::from_millis(510), "{wait:?}");
    }

    #[test]
    fn cap_lets_exactly_the_cap_through() {
        let l = Limit { rate: None, cap: Some(10) };
        assert_eq!(l.next_read(65536, 0), 11, "one byte past the cap shows the sender went on");
        assert_eq!(l.allowed(11, 0), 10);
        assert_eq!(l.next_read(65536, 10), 1);
        assert_eq!(l.allowed(1, 10), 0);
        assert_eq!(Limit::none().next_read(65536, 1 << 40), 65536);
    }

    #[tokio::test(start_paused = true)]
    async fn shared_bucket_splits_the_rate() {
        let b = Arc::new(TokenBucket::new(100_000));
        let l = Limit { rate: Some(Arc::clone(&b)), cap: None };
        let start = tokio::time::Instant::now();
        // Two relays moving 200 kB each on one 100 kB/s bucket: about 3.35 s
        // (the 65,536-byte burst is free).
        let one = async {
            for _ in 0..20 {
                l.pay(10_000).await;
            }
        };
        let two = async {
            for _ in 0..20 {
                l.pay(10_000).await;
            }
        };
        tokio::join!(one, two);
        let took = start.elapsed().as_secs_f64();
        assert!((3.2..3.6).contains(&took), "{took}");
    }
}
