//! A pool of backends for pass-through users: chosen at login by
//! least-connections, round-robin or user (a user stays on one backend while
//! it is healthy, what ProFTPD mod_proxy calls PerUser). Health checks mark
//! members down; running sessions on a member that goes down are left alone.

use crate::config::Balance;
use crate::config::{BackendTlsMode, Settings};
use crate::tls::{BackendTls, TlsError};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A backend ftpgate can connect a session to.
#[derive(Debug)]
pub struct BackendTarget {
    /// `HOST:PORT`.
    pub address: String,
    pub tls: Option<Arc<BackendTls>>,
}

impl BackendTarget {
    pub(super) fn new(settings: &Settings, address: &str) -> Result<BackendTarget, TlsError> {
        let tls = match settings.backend_tls {
            BackendTlsMode::Off => None,
            _ => {
                let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
                Some(Arc::new(BackendTls::build(&settings.backend_tls_options, host)?))
            }
        };
        Ok(BackendTarget { address: address.to_string(), tls })
    }
}

#[derive(Debug)]
pub struct Pool {
    pub members: Vec<Member>,
    balance: Balance,
    next: AtomicUsize,
}

#[derive(Debug)]
pub struct Member {
    pub target: BackendTarget,
    healthy: AtomicBool,
    sessions: AtomicU64,
    connect_errors: AtomicU64,
}

/// A session's place on a member; dropping it gives the place back.
#[derive(Debug)]
pub struct PoolSlot {
    pool: Arc<Pool>,
    pub index: usize,
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        self.pool.members[self.index].sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One member as metrics and `/readyz` see it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub address: String,
    pub healthy: bool,
    pub sessions: u64,
    pub connect_errors: u64,
}

impl Pool {
    pub fn new(targets: Vec<BackendTarget>, balance: Balance) -> Pool {
        let members = targets
            .into_iter()
            .map(|target| Member {
                target,
                healthy: AtomicBool::new(true),
                sessions: AtomicU64::new(0),
                connect_errors: AtomicU64::new(0),
            })
            .collect();
        Pool { members, balance, next: AtomicUsize::new(0) }
    }

    /// The member a new session of `user` goes to, among the healthy ones;
    /// when none is healthy, among all (the checks may be wrong, and a
    /// refused login says more than a refused connection).
    pub fn pick(self: &Arc<Self>, user: &str) -> PoolSlot {
        let healthy: Vec<usize> = (0..self.members.len()).filter(|&i| self.is_healthy(i)).collect();
        let candidates: Vec<usize> = if healthy.is_empty() { (0..self.members.len()).collect() } else { healthy };
        let index = match self.balance {
            Balance::LeastConnections => {
                *candidates.iter().min_by_key(|&&i| (self.members[i].sessions.load(Ordering::Relaxed), i)).unwrap_or(&0)
            }
            Balance::RoundRobin => candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()],
            Balance::User => {
                // Hashed over the whole pool, so a user moves only while its
                // own backend is down.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                user.hash(&mut h);
                let home = (h.finish() % self.members.len() as u64) as usize;
                if candidates.contains(&home) {
                    home
                } else {
                    candidates[(h.finish() % candidates.len() as u64) as usize]
                }
            }
        };
        self.members[index].sessions.fetch_add(1, Ordering::Relaxed);
        PoolSlot { pool: Arc::clone(self), index }
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.members[i].healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, i: usize, up: bool) {
        self.members[i].healthy.store(up, Ordering::Relaxed);
    }

    /// A login could not reach member `i`: counted, and skipped until the
    /// next health check finds it up again.
    pub fn connect_failed(&self, i: usize) {
        self.members[i].connect_errors.fetch_add(1, Ordering::Relaxed);
        self.set_healthy(i, false);
    }

    pub fn any_healthy(&self) -> bool {
        (0..self.members.len()).any(|i| self.is_healthy(i))
    }

    pub fn view(&self) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|m| MemberView {
                address: m.target.address.clone(),
                healthy: m.healthy.load(Ordering::Relaxed),
                sessions: m.sessions.load(Ordering::Relaxed),
                connect_errors: m.connect_errors.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, balance: Balance) -> Arc<Pool> {
        let targets = (0..n).map(|i| BackendTarget { address: format!("10.0.0.{i}:21"), tls: None }).collect();
        Arc::new(Pool::new(targets, balance))
    }

    #[test]
    fn least_connections_round_robin_and_user() {
        let p = pool(2, Balance::LeastConnections);
        let a = p.pick("x");
        let b = p.pick("x");
        assert_ne!(a.index, b.index, "the second session goes to the emptier backend");
        drop(a);
        assert_eq!(p.pick("y").index, 0);

        let p = pool(3, Balance::RoundRobin);
        let picks: Vec<usize> = (0..4).map(|_| p.pick("u").index).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        p.set_healthy(1, false);
        let picks: Vec<usize> = (0..4).map(|_| p.pick("u").index).collect();
        assert!(!picks.contains(&1), "an unhealthy member gets no new session: {picks:?}");

        let p = pool(3, Balance::User);
        let home = p.pick("alice").index;
        assert!((0..5).all(|_| p.pick("alice").index == home), "a user stays on one backend");
        p.set_healthy(home, false);
        assert_ne!(p.pick("alice").index, home, "while it is down the user moves");
        p.set_healthy(home, true);
        assert_eq!(p.pick("alice").index, home, "and comes back");
        for i in 0..3 {
            p.set_healthy(i, false);
        }
        let _ = p.pick("alice");
        assert!(!p.any_healthy());
    }
}
