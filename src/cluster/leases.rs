//! Session counts shared by instances, as leases: each counted session is a
//! member of a sorted set (`prefix:sessions:address:IP`,
//! `prefix:sessions:user:NAME`) scored with the time its lease ends. The
//! instance holding it refreshes every lease every third of `cluster.lease`
//! and removes it when the session ends; the leases of an instance that
//! crashed simply run out, so a crash never locks a user out for longer than
//! one lease. Counting drops ended leases first.
//!
//! A lease taken while Redis was unreachable is kept locally and written at
//! the next refresh that reaches Redis, so the counts are whole again after
//! an outage.

use super::{Cluster, ClusterError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::debug;

/// Takes a lease unless `limit` (0: none) live leases are held already.
/// KEYS: the set. ARGV: limit, member, lease in ms. Returns 1 if taken.
const TAKE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[1])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Live leases in a set. KEYS: the set.
const COUNT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"#;

/// Extends (or writes again) leases. KEYS: sets. ARGV: lease in ms, then
/// one member per key.
const REFRESH_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + ms, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ms)
end
return #KEYS
"#;

/// Leases refreshed per request, so one refresh never blocks Redis for long.
const REFRESH_BATCH: usize = 500;

/// What a lease counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Sessions from one client address.
    Address,
    /// Logged-in sessions of one user.
    User,
}

impl Counted {
    fn label(self) -> &'static str {
        match self {
            Counted::Address => "address",
            Counted::User => "user",
        }
    }
}

/// The leases this instance holds: id to (set, member).
pub struct Leases {
    held: Mutex<HashMap<u64, (String, String)>>,
    next: AtomicU64,
    take: redis::Script,
    count: redis::Script,
    refresh: redis::Script,
}

impl Leases {
    pub(super) fn new() -> Leases {
        Leases {
            held: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            take: redis::Script::new(TAKE_SCRIPT),
            count: redis::Script::new(COUNT_SCRIPT),
            refresh: redis::Script::new(REFRESH_SCRIPT),
        }
    }

    /// Leases held by this instance now.
    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One counted session in the shared state; dropping it ends the lease.
pub struct Lease {
    cluster: Arc<Cluster>,
    id: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.id)
    }
}

impl Cluster {
    fn set_key(&self, counted: Counted, id: &str) -> String {
        // A user name may hold anything a client sent; keep keys printable.
        let id: String = id.chars().map(|c| if c.is_control() || c == ' ' { '_' } else { c }).collect();
        format!("{}:sessions:{}:{id}", self.settings.prefix, counted.label())
    }

    fn hold(self: &Arc<Self>, key: String) -> (Lease, String) {
        let id = self.leases.next.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}:{id}", self.instance);
        self.leases.held.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (key, member.clone()));
        (Lease { cluster: Arc::clone(self), id }, member)
    }

    /// Takes a lease on `id`'s count unless `limit` (0: none) are held
    /// cluster-wide: `Ok(None)` when the limit is reached.
    pub async fn take(
        self: &Arc<Self>,
        counted: Counted,
        id: &str,
        limit: usize,
    ) -> Result<Option<Lease>, ClusterError> {
        let key = self.set_key(counted, id);
        let (lease, member) = self.hold(key.clone());
        let ms = self.settings.lease.as_millis() as u64;
        let script = &self.leases.take;
        let taken: i64 = self
            .call(
                |mut c| async move { Ok(script.key(&key).arg(limit).arg(&member).arg(ms).invoke_async(&mut c).await?) },
            )
            .await?;
        if taken == 1 {
            Ok(Some(lease))
        } else {
            // Not in Redis: forget it without a ZREM.
            self.leases.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&lease.id);
            std::mem::forget(lease);
            Ok(None)
        }
    }

    /// A lease held without asking Redis (it was unreachable and the instance
    /// fails open): written at the next refresh that reaches Redis.
    pub fn take_unconfirmed(self: &Arc<Self>, counted: Counted, id: &str) -> Lease {
        self.hold(self.set_key(counted, id)).0
    }

    /// Live leases on `id`'s count, cluster-wide.
    pub async fn count(&self, counted: Counted, id: &str) -> Result<usize, ClusterError> {
        let key = self.set_key(counted, id);
        let script = &self.leases.count;
        let n: i64 = self.call(|mut c| async move { Ok(script.key(&key).invoke_async(&mut c).await?) }).await?;
        Ok(n.max(0) as usize)
    }

    /// Refreshes this instance's leases every third of `cluster.lease`, for
    /// as long as the process runs.
    pub async fn refresh_leases(self: Arc<Self>) {
        let every = self.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let held: Vec<(String, String)> =
                self.leases.held.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
            let ms = self.settings.lease.as_millis() as u64;
            if held.is_empty() {
                // Keeps `reachable` (and `/readyz` when failing closed) current.
                let _ =
                    self.call(|mut c| async move { Ok(redis::cmd("PING").query_async::<String>(&mut c).await?) }).await;
            }
            for batch in held.chunks(REFRESH_BATCH) {
                let script = &self.leases.refresh;
                let r = self
                    .call(|mut c| async move {
                        let mut inv = script.prepare_invoke();
                        inv.arg(ms);
                        for (key, member) in batch {
                            inv.key(key).arg(member);
                        }
                        Ok(inv.invoke_async::<i64>(&mut c).await?)
                    })
                    .await;
                if r.is_err() {
                    break;
                }
            }
            debug!(target: "ftpgate::cluster", leases = held.len(), "cluster leases refreshed");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some((key, member)) = self.cluster.leases.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id)
        else {
            return;
        };
        // The lease runs out by itself if this cannot reach Redis.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let cluster = Arc::clone(&self.cluster);
            rt.spawn(async move {
                let _ = cluster
                    .call(|mut c| async move {
                        Ok(redis::cmd("ZREM").arg(&key).arg(&member).query_async::<i64>(&mut c).await?)
                    })
                    .await;
            });
        }
    }
}
