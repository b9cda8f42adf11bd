//! State shared by several ftpgate instances through Redis: failed-login
//! counts, bans, and session counts per client address and per user.
//!
//! Redis is an optimisation of the attacker's budget, not a dependency of
//! the service: every call is bounded by `cluster.timeout_ms`, and a failed
//! call is an outage (`Err`) that the caller answers with the instance's own
//! state (`fail = "open"`) or a refusal (`fail = "closed"`). One warning is
//! logged per outage; the connection is rebuilt on the next call, at most
//! once a second, so a dead Redis costs a fast error, not a timeout, per login.
//!
//! Keys (all under `prefix:`): `fail:IP` (failures in a row, forgotten after
//! an hour without one), `ban:IP` (a ban, expiring by itself), `bans:IP`
//! (bans served, for the doubling), `sessions:address:IP` and
//! `sessions:user:NAME` (sorted sets of leases, see [`leases`]). Times come
//! from Redis' own clock, so instances need not agree on theirs.

mod bounded;
pub mod leases;

use crate::config::{ClusterSettings, FailMode};
use crate::metrics::Metrics;
use crate::policy::LoginLimits;
use redis::aio::MultiplexedConnection;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{info, warn};

/// The shortest time between two attempts to reconnect to Redis.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Failures in a row are forgotten this long after the last one.
const FAILURE_WINDOW_SECS: u64 = 3600;

/// A repeat offender's ban count is remembered this long.
const BANS_MEMORY_SECS: u64 = 86_400;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("Redis {address} unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis sent an unexpected answer: {0}")]
    Answer(String),
}

/// Records a failed login; returns the ban's length in seconds if it started
/// one (0 otherwise). KEYS: fail, ban, bans. ARGV: max_failures, ban_seconds,
/// max_ban_seconds, failure window.
const FAILURE_SCRIPT: &str = r#"
local f = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local max = tonumber(ARGV[1])
if max == 0 or f < max then return 0 end
local n = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])
local secs = tonumber(ARGV[2]) * math.pow(2, math.min(n - 1, 32))
secs = math.floor(math.min(secs, tonumber(ARGV[3])))
if secs < 1 then secs = 1 end
redis.call('SET', KEYS[2], '1', 'EX', secs)
redis.call('DEL', KEYS[1])
return secs
"#;

/// One ftpgate instance's handle on the shared state.
pub struct Cluster {
    pub settings: ClusterSettings,
    /// This instance's name in lease members (host, pid, random).
    pub instance: String,
    connection: tokio::sync::Mutex<Link>,
    /// True during an outage, so it is logged once.
    down: AtomicBool,
    metrics: Arc<Metrics>,
    tls: Option<crate::tls::BackendSessionTls>,
    pub leases: leases::Leases,
    failure: redis::Script,
    /// Bans this instance earned on its own while Redis was unreachable,
    /// with their ends: enforced here, and written to Redis once it answers
    /// again (after which Redis holds them, and `bans lift` works on them).
    outage_bans: std::sync::Mutex<std::collections::HashMap<IpAddr, Instant>>,
}

/// Outage bans remembered at most (a flood of addresses during an outage
/// cannot grow the table without bound; the soonest to end go first).
const MAX_OUTAGE_BANS: usize = 65_536;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("address", &self.settings.address).field("instance", &self.instance).finish()
    }
}

#[derive(Default)]
struct Link {
    connection: Option<MultiplexedConnection>,
    /// The connection's reader and writer: aborted when the connection is
    /// dropped, so a peer still sending cannot keep it (and its buffers)
    /// alive in the background.
    driver: Option<tokio::task::JoinHandle<()>>,
    last_attempt: Option<Instant>,
}

impl Link {
    fn drop_connection(&mut self) {
        self.connection = None;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

impl Cluster {
    pub fn new(settings: ClusterSettings, metrics: Arc<Metrics>) -> Result<Arc<Cluster>, crate::tls::TlsError> {
        let tls = if settings.tls {
            let host = settings.address.rsplit_once(':').map_or(settings.address.as_str(), |(h, _)| h);
            let verify = match &settings.ca {
                Some(ca) => crate::tls::BackendVerify::CaFile(ca.clone()),
                None => crate::tls::BackendVerify::SystemRoots,
            };
            let options =
                crate::tls::BackendTlsOptions { verify, server_name: None, max_version: crate::tls::TlsVersion::V13 };
            Some(crate::tls::BackendTls::build(&options, host)?.for_session())
        } else {
            None
        };
        let instance = format!(
            "{}-{}-{:08x}",
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
            std::process::id(),
            rand::random::<u32>()
        );
        Ok(Arc::new(Cluster {
            leases: leases::Leases::new(),
            settings,
            instance,
            connection: tokio::sync::Mutex::new(Link::default()),
            down: AtomicBool::new(false),
            metrics,
            tls,
            failure: redis::Script::new(FAILURE_SCRIPT),
            outage_bans: Default::default(),
        }))
    }

    pub fn fail_closed(&self) -> bool {
        self.settings.fail == FailMode::Closed
    }

    /// Whether the last request reached Redis.
    pub fn reachable(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}:{kind}:{id}", self.settings.prefix)
    }

    async fn open(&self) -> Result<(MultiplexedConnection, tokio::task::JoinHandle<()>), ClusterError> {
        let s = &self.settings;
        let unreachable = |message: String| ClusterError::Unreachable { address: s.address.clone(), message };
        let tcp = tokio::net::TcpStream::connect(&s.address).await.map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut info = redis::RedisConnectionInfo::default().set_db(s.db).set_skip_set_lib_name();
        if let Some(u) = &s.username {
            info = info.set_username(u);
        }
        if let Some(p) = &s.password {
            info = info.set_password(p);
        }
        // The connection's driver runs as its own task until the connection drops.
        let connection = match &self.tls {
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS: {e}")))?;
                let (c, driver) = MultiplexedConnection::new_with_config(
                    &info,
                    bounded::Bounded::new(stream),
                    redis::AsyncConnectionConfig::new(),
                )
                .await?;
                (c, tokio::spawn(driver))
            }
            None => {
                let (c, driver) = MultiplexedConnection::new_with_config(
                    &info,
                    bounded::Bounded::new(tcp),
                    redis::AsyncConnectionConfig::new(),
                )
                .await?;
                (c, tokio::spawn(driver))
            }
        };
        Ok(connection)
    }

    /// The shared connection, opened again after an outage (at most once a
    /// second; in between, calls fail at once).
    async fn connection(&self) -> Result<MultiplexedConnection, ClusterError> {
        let mut link = self.connection.lock().await;
        if let Some(c) = &link.connection {
            return Ok(c.clone());
        }
        if link.last_attempt.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return Err(ClusterError::Unreachable {
                address: self.settings.address.clone(),
                message: "not reconnected yet".into(),
            });
        }
        link.last_attempt = Some(Instant::now());
        let (c, driver) = self.open().await?;
        link.connection = Some(c.clone());
        link.driver = Some(driver);
        Ok(c)
    }

    /// Runs one request within `cluster.timeout_ms`, counting and logging
    /// outages; a failed request drops the connection so the next reconnects.
    pub(crate) async fn call<T, F, Fut>(&self, request: F) -> Result<T, ClusterError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let timeout = self.settings.timeout;
        let result = match tokio::time::timeout(timeout, async { request(self.connection().await?).await }).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout(timeout)),
        };
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    info!(target: "ftpgate::cluster", redis = %self.settings.address, "shared state reachable again");
                }
            }
            Err(e) => {
                Metrics::inc(&self.metrics.cluster_errors);
                self.connection.lock().await.drop_connection();
                if !self.down.swap(true, Ordering::Relaxed) {
                    let serving = match self.settings.fail {
                        FailMode::Open => "logins are served with this instance's own counts and bans",
                        FailMode::Closed => "new sessions are refused (cluster.fail = \"closed\")",
                    };
                    warn!(target: "ftpgate::cluster", redis = %self.settings.address, error = %e, "shared state unreachable; {serving}");
                }
            }
        }
        result
    }

    /// A ban this instance started on its own during an outage.
    pub fn remember_outage_ban(&self, ip: IpAddr, until: Instant) {
        let mut bans = self.outage_bans.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        bans.retain(|_, end| *end > now);
        if bans.len() >= MAX_OUTAGE_BANS {
            if let Some(first) = bans.iter().min_by_key(|(_, end)| **end).map(|(ip, _)| *ip) {
                bans.remove(&first);
            }
        }
        bans.insert(ip.to_canonical(), until);
    }

    /// How long `ip` stays banned, if it is: in Redis, or by a ban of this
    /// instance's outage that Redis does not hold yet (those are written
    /// first, now that Redis answers).
    pub async fn ban_left(&self, ip: IpAddr) -> Result<Option<Duration>, ClusterError> {
        let ip = ip.to_canonical();
        let now = Instant::now();
        let flushed: Vec<IpAddr> = {
            let mut bans = self.outage_bans.lock().unwrap_or_else(|e| e.into_inner());
            bans.retain(|_, end| *end > now);
            bans.keys().copied().collect()
        };
        let pending: Vec<(String, u64)> = {
            let bans = self.outage_bans.lock().unwrap_or_else(|e| e.into_inner());
            bans.iter()
                .map(|(ip, end)| (self.key("ban", ip), end.duration_since(now).as_millis().max(1) as u64))
                .collect()
        };
        let key = self.key("ban", ip);
        let left = self
            .call(|mut c| async move {
                for (key, ms) in &pending {
                    // GT: never shortens a longer ban another instance set.
                    let set: redis::RedisResult<()> =
                        redis::cmd("SET").arg(key).arg("1").arg("PX").arg(*ms).arg("GT").query_async(&mut c).await;
                    if set.is_err() {
                        // Redis before 7 has no GT: only where no ban is.
                        let _: () = redis::cmd("SET")
                            .arg(key)
                            .arg("1")
                            .arg("PX")
                            .arg(*ms)
                            .arg("NX")
                            .query_async(&mut c)
                            .await?;
                    }
                }
                let ms: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut c).await?;
                Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
            })
            .await?;
        // Written: Redis holds them now.
        let mut bans = self.outage_bans.lock().unwrap_or_else(|e| e.into_inner());
        flushed.iter().for_each(|ip| {
            bans.remove(ip);
        });
        drop(bans);
        Ok(left)
    }

    /// Records a failed login from `ip`; the ban's length if it started one.
    pub async fn login_failed(&self, ip: IpAddr, limits: &LoginLimits) -> Result<Option<Duration>, ClusterError> {
        let ip = ip.to_canonical();
        let (fail, ban, bans) = (self.key("fail", ip), self.key("ban", ip), self.key("bans", ip));
        let script = &self.failure;
        let secs: u64 = self
            .call(|mut c| async move {
                let mut inv = script.key(fail);
                inv.key(ban).key(bans);
                inv.arg(limits.max_failures).arg(limits.ban_seconds).arg(limits.max_ban_seconds);
                inv.arg(FAILURE_WINDOW_SECS).arg(BANS_MEMORY_SECS);
                Ok(inv.invoke_async(&mut c).await?)
            })
            .await?;
        Ok((secs > 0).then(|| Duration::from_secs(secs)))
    }

    /// A successful login clears `ip`'s failures in a row.
    pub async fn login_ok(&self, ip: IpAddr) -> Result<(), ClusterError> {
        let key = self.key("fail", ip.to_canonical());
        self.call(|mut c| async move { Ok(redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await.map(|_| ())?) })
            .await
    }

    /// Every address banned now, with the time left, soonest end first.
    pub async fn bans(&self) -> Result<Vec<(IpAddr, Duration)>, ClusterError> {
        let pattern = self.key("ban", "*");
        let prefix_len = pattern.len() - 1;
        self.call(|mut c| async move {
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let mut out = Vec::new();
            for k in keys {
                let ms: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await?;
                if let (true, Ok(ip)) = (ms > 0, k[prefix_len..].parse::<IpAddr>()) {
                    out.push((ip, Duration::from_millis(ms as u64)));
                }
            }
            out.sort_by_key(|&(ip, left)| (left, ip));
            Ok(out)
        })
        .await
    }

    /// Lifts `ip`'s ban and forgets its failures; whether it was banned.
    pub async fn lift(&self, ip: IpAddr) -> Result<bool, ClusterError> {
        let ip = ip.to_canonical();
        let (ban, fail, bans) = (self.key("ban", ip), self.key("fail", ip), self.key("bans", ip));
        self.call(|mut c| async move {
            let was: i64 = redis::cmd("DEL").arg(&ban).query_async(&mut c).await?;
            let _: i64 = redis::cmd("DEL").arg(&fail).arg(&bans).query_async(&mut c).await?;
            Ok(was > 0)
        })
        .await
    }
}
