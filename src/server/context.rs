//! What all sessions share: settings, metrics, TLS, backends, the policy,
//! login bans and session counts, and the process's lifecycle. SIGHUP builds
//! a new generation; bans, counts and the drain signal carry over.

use super::limits::RateBuckets;
use super::pool::BackendTarget;
use super::{limits, pool, registry};
use crate::config::{BackendTlsMode, Settings};
use crate::metrics::Metrics;
use crate::policy::bans::LoginGuard;
use crate::policy::{Policy, PolicyError};
use crate::session::feat;
use crate::tls::{ServerTls, TlsError};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::warn;

/// Everything a session needs from the server, shared by all sessions.
#[derive(Debug)]
pub struct SessionContext {
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// ftpgate's TLS server side, when any listener offers TLS.
    pub client_tls: Option<Arc<ServerTls>>,
    /// The default backend.
    pub backend: BackendTarget,
    /// Backends (pools) bastion users may be mapped to, by name.
    pub named_backends: std::collections::HashMap<String, Arc<pool::Pool>>,
    /// The policy in force, shared by every generation of the context: SIGHUP
    /// swaps it, and running sessions see the new one from their next command.
    policy: Arc<RwLock<Arc<Policy>>>,
    /// Failed logins per client address; bans outlive reloads.
    pub logins: Arc<Mutex<LoginGuard>>,
    /// Infected uploads per client address (`[scan] ban_after`), counted
    /// apart from failed logins; a ban lands in `logins`.
    malware: Arc<Mutex<LoginGuard>>,
    pub per_address: Arc<limits::Counts<IpAddr>>,
    /// The passive ports every session shares; reservations outlive reloads.
    pub passive: Arc<crate::server::passive::PassivePool>,
    /// Live links of outbound connectors; they outlive reloads.
    pub connectors: Arc<crate::connector::Connectors>,
    pub per_user: Arc<limits::Counts<String>>,
    /// The clock bans are measured on.
    started: Instant,
    pub xferlog: Option<Arc<crate::xferlog::XferLog>>,
    /// The backends pass-through users are balanced over (one, or a pool).
    pub pool: Arc<pool::Pool>,
    /// Every session now, for `ftpgate who` and `/status`.
    pub registry: Arc<registry::Registry>,
    /// Each user's shared rate buckets (`download_rate`, `upload_rate`).
    pub rate_buckets: Arc<RateBuckets>,
    /// Data transfers running per user (`max_transfers`).
    pub transfers: Arc<limits::Counts<String>>,
    /// The default backend's features, for `FEAT` before login.
    pub backend_feat: Arc<feat::FeatCache>,
    /// Where ftpgate is in its shutdown, watched by every session.
    pub closing: Arc<tokio::sync::watch::Sender<Lifecycle>>,
    /// The sessions running now, whichever generation started them.
    pub sessions: Arc<OpenSessions>,
    /// Bans and session counts shared with other instances (`[cluster]`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The sessions running now: the drain waits for their end instead of
/// polling a gauge.
#[derive(Debug, Default)]
pub struct OpenSessions {
    count: std::sync::atomic::AtomicUsize,
    all_ended: tokio::sync::Notify,
}

/// One running session; dropping it (however the session ends) counts it out.
#[derive(Debug)]
pub struct OpenSession(Arc<OpenSessions>);

impl OpenSessions {
    pub fn enter(self: &Arc<Self>) -> OpenSession {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenSession(Arc::clone(self))
    }

    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once no session is running.
    pub async fn all_ended(&self) {
        loop {
            let ended = self.all_ended.notified();
            tokio::pin!(ended);
            // Registered before the count is read, so an end in between is not missed.
            ended.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.all_ended.notify_waiters();
        }
    }
}

/// Where the process stands in its lifecycle. Sessions between commands
/// close with `421` once draining starts; at the drain deadline every session
/// still open closes, whatever it waits for (a transfer's client gets `426`
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Serving,
    Draining,
    DrainDeadline,
}

/// The context new sessions start with. SIGHUP replaces it with one built
/// from the reloaded configuration; running sessions keep the one they
/// started with (backend, TLS, limits), except for the policy, which they all
/// share.
pub type LiveContext = tokio::sync::watch::Sender<Arc<SessionContext>>;

/// One line per backend saying which TLS version it is offered and why, and
/// the same in `ftpgate_backend_tls_max_version`.
fn announce_backend_tls(settings: &Settings, metrics: &Metrics) {
    let (version, why) = match settings.backend_tls_options.max_version {
        crate::tls::TlsVersion::V12 => (
            "1.2",
            "TLS 1.3 tickets are single-use in rustls, and a server that requires session reuse but sends no new \
             tickets on data connections (ProFTPD) would refuse a session's data connections once they ran out; \
             TLS 1.2 sessions resume any number of times (set backend.max_tls_version = \"1.3\" for servers that \
             send tickets on data connections, such as vsftpd and pure-ftpd)",
        ),
        crate::tls::TlsVersion::V13 => (
            "1.3",
            "backend.max_tls_version = \"1.3\": each data connection spends one TLS 1.3 ticket, so the server \
             must send new ones on data connections (vsftpd and pure-ftpd do, ProFTPD does not)",
        ),
    };
    let addresses = std::iter::once(&settings.backend)
        .chain(&settings.backend_pool)
        .chain(settings.named_backends.values().flat_map(|n| &n.addresses));
    let mut seen = std::collections::BTreeMap::new();
    for address in addresses {
        if seen.insert(address.clone(), version).is_none() {
            tracing::info!(target: "ftpgate::tls", backend = %address, max_tls_version = version, "backend TLS: {why}");
        }
    }
    *metrics.backend_tls_max.lock().unwrap_or_else(|e| e.into_inner()) = seen;
}

/// Every backend a policy maps users to must exist in the configuration.
fn check_backend_names(
    policy: &Policy,
    named: &std::collections::HashMap<String, Arc<pool::Pool>>,
) -> Result<(), PolicyError> {
    for (user, u) in &policy.bastion_users {
        if let Some(b) = &u.backend {
            if !named.contains_key(b) {
                return Err(PolicyError::UnknownBackend { user: user.clone(), backend: b.clone() });
            }
        }
    }
    Ok(())
}

#[derive(Debug, Error)]
pub enum ContextError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("transfer log {0}: {1}")]
    Xferlog(String, io::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl SessionContext {
    /// Loads certificates and the policy, and builds the TLS configurations
    /// the settings ask for.
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<SessionContext, ContextError> {
        let client_tls = match &settings.client_tls {
            Some(o) => Some(Arc::new(ServerTls::load(o.clone())?)),
            None => None,
        };
        if matches!(settings.backend_tls_options.verify, crate::tls::BackendVerify::Insecure)
            && settings.backend_tls != BackendTlsMode::Off
        {
            warn!(target: "ftpgate::server",
                "backend certificate verification is OFF (insecure_skip_verify): the backend leg is not authenticated"
            );
        }
        let backend = BackendTarget::new(&settings, &settings.backend)?;
        let members =
            settings.backend_pool.iter().map(|a| BackendTarget::new(&settings, a)).collect::<Result<_, _>>()?;
        let pool = Arc::new(pool::Pool::new(members, settings.balance));
        let mut named_backends = std::collections::HashMap::new();
        for (name, named) in &settings.named_backends {
            let members = named.addresses.iter().map(|a| BackendTarget::new(&settings, a)).collect::<Result<_, _>>()?;
            named_backends.insert(name.clone(), Arc::new(pool::Pool::new(members, named.balance)));
        }
        if settings.backend_tls != BackendTlsMode::Off {
            announce_backend_tls(&settings, &metrics);
        }
        let policy = match &settings.policy {
            Some(p) => Policy::load(p)?,
            None => Policy::permissive(),
        };
        check_backend_names(&policy, &named_backends)?;
        let xferlog = match &settings.xferlog {
            Some(p) => Some(Arc::new(
                crate::xferlog::XferLog::open(p).map_err(|e| ContextError::Xferlog(p.display().to_string(), e))?,
            )),
            None => None,
        };
        let cluster = match &settings.cluster {
            Some(c) => Some(crate::cluster::Cluster::new(c.clone(), Arc::clone(&metrics))?),
            None => None,
        };
        Ok(SessionContext {
            passive: crate::server::passive::PassivePool::new(Arc::clone(&metrics)),
            connectors: crate::connector::Connectors::new(settings.connectors.clone()),
            cluster,
            xferlog,
            closing: Arc::new(tokio::sync::watch::Sender::new(Lifecycle::Serving)),
            sessions: Arc::default(),
            backend_feat: Arc::default(),
            rate_buckets: Arc::default(),
            registry: Arc::default(),
            transfers: Arc::default(),
            settings: Arc::new(settings),
            metrics,
            client_tls,
            backend,
            pool,
            named_backends,
            policy: Arc::new(RwLock::new(Arc::new(policy))),
            logins: Arc::default(),
            malware: Arc::default(),
            per_address: Arc::default(),
            per_user: Arc::default(),
            started: Instant::now(),
        })
    }

    /// The next generation, built from reloaded `settings`: new certificates,
    /// backends and limits for new sessions. Bans, per-address and per-user
    /// counts, metrics and the drain signal carry over; the new policy goes
    /// into force for running sessions too. On error nothing changes.
    pub fn reloaded(&self, settings: Settings) -> Result<SessionContext, ContextError> {
        let same_xferlog = settings.xferlog == self.settings.xferlog;
        let mut next = SessionContext::new(settings, Arc::clone(&self.metrics))?;
        next.logins = Arc::clone(&self.logins);
        next.malware = Arc::clone(&self.malware);
        next.per_address = Arc::clone(&self.per_address);
        next.passive = Arc::clone(&self.passive);
        if next.settings.connectors != self.settings.connectors {
            warn!(target: "ftpgate::server", "[connectors] or the connector names changed; that takes effect at the next restart");
        }
        next.connectors = Arc::clone(&self.connectors);
        next.per_user = Arc::clone(&self.per_user);
        next.started = self.started;
        next.closing = Arc::clone(&self.closing);
        next.sessions = Arc::clone(&self.sessions);
        next.rate_buckets = Arc::clone(&self.rate_buckets);
        next.registry = Arc::clone(&self.registry);
        next.transfers = Arc::clone(&self.transfers);
        // The shared state's connection and leases outlive reloads.
        if next.settings.cluster != self.settings.cluster {
            warn!(target: "ftpgate::server", "[cluster] changed; it takes effect at the next restart");
        }
        next.cluster = self.cluster.clone();
        if next.settings.backend == self.settings.backend {
            // Until the reload's probe answers, the old features stand.
            next.backend_feat = Arc::clone(&self.backend_feat);
        }
        if same_xferlog {
            next.xferlog = self.xferlog.clone();
        }
        let policy = next.policy();
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
        next.policy = Arc::clone(&self.policy);
        Ok(next)
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the policy file again; a broken file leaves the old policy in force.
    pub fn reload_policy(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.settings.policy else { return Ok(false) };
        let p = Policy::load(path)?;
        check_backend_names(&p, &self.named_backends)?;
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
        Ok(true)
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// How long `ip` stays banned. With `[cluster]` the shared state decides;
    /// this instance's own bans count only while Redis is unreachable (they
    /// hold what failed during the outage), so a ban lifted anywhere is lifted
    /// everywhere.
    /// The default pool and every named one, for health checks and metrics.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<pool::Pool>> {
        std::iter::once(&self.pool).chain(self.named_backends.values())
    }

    /// What per-address rules count `ip` as (IPv6 by `[limits] ipv6_prefix`).
    pub fn address_key(&self, ip: IpAddr) -> IpAddr {
        super::limits::address_key(ip, self.settings.ipv6_prefix)
    }

    pub(super) async fn banned_for(&self, ip: IpAddr) -> Result<Option<Duration>, SharedStateDown> {
        let ip = self.address_key(ip);
        if let Some(c) = &self.cluster {
            if let Some(shared) = self.shared(c, c.ban_left(ip).await)? {
                return Ok(shared);
            }
        }
        let now = self.now();
        Ok(self.logins.lock().unwrap_or_else(|e| e.into_inner()).banned_until(ip, now).map(|t| t - now))
    }

    /// A failed login from `ip`, counted in the cluster, or here when there is
    /// none or it is unreachable; the ban's length if it started one.
    pub(super) async fn login_failed(&self, ip: IpAddr, limits: &crate::policy::LoginLimits) -> Option<Duration> {
        let ip = self.address_key(ip);
        if let Some(c) = &self.cluster {
            if let Ok(shared) = c.login_failed(ip, limits).await {
                return shared;
            }
        }
        let now = self.now();
        let until = self.logins.lock().unwrap_or_else(|e| e.into_inner()).failure(ip, now, limits);
        if let (Some(c), Some(until)) = (&self.cluster, until) {
            // Earned during an outage: kept, and written to Redis on its return.
            c.remember_outage_ban(ip, std::time::Instant::now() + (until - now));
        }
        until.map(|t| t - now)
    }

    /// `[scan] ban_after`: counts an infected upload from `ip`, and bans the
    /// address (for the policy's login ban length) when it reached the
    /// limit. Local to this instance.
    pub(super) fn scanned(&self, ip: IpAddr, verdict: &crate::session::outcome::ScanVerdict) {
        let (crate::session::outcome::ScanVerdict::Infected(_), Some(scan)) = (verdict, &self.settings.scan) else {
            return;
        };
        if scan.ban_after == 0 {
            return;
        }
        let key = self.address_key(ip);
        let policy = self.policy();
        let limits = crate::policy::LoginLimits { max_failures: scan.ban_after, ..policy.login.clone() };
        let now = self.now();
        let Some(until) = self.malware.lock().unwrap_or_else(|e| e.into_inner()).failure(key, now, &limits) else {
            return;
        };
        self.logins.lock().unwrap_or_else(|e| e.into_inner()).ban(key, now, until);
        warn!(target: "ftpgate::audit", %ip, seconds = (until - now).as_secs(), uploads = scan.ban_after, "address banned after infected uploads ([scan] ban_after)");
    }

    pub(super) async fn login_ok(&self, ip: IpAddr) {
        let ip = self.address_key(ip);
        self.logins.lock().unwrap_or_else(|e| e.into_inner()).success(ip);
        if let Some(c) = &self.cluster {
            let _ = c.login_ok(ip).await;
        }
    }

    /// A session slot for `key`, unless `limit` (0: none) are taken here or
    /// in the cluster. While the cluster is unreachable the instance counts
    /// alone (`fail = "open"`) or refuses (`"closed"`).
    pub(super) async fn take_slot<K>(
        &self,
        here: &Arc<limits::Counts<K>>,
        key: K,
        counted: crate::cluster::leases::Counted,
        limit: usize,
    ) -> Result<Option<SessionSlot<K>>, SharedStateDown>
    where
        K: Eq + std::hash::Hash + Clone + std::fmt::Display,
    {
        let Some(local) = here.take(key.clone(), limit) else { return Ok(None) };
        let lease = match &self.cluster {
            None => None,
            Some(c) => match self.shared(c, c.take(counted, &key.to_string(), limit).await)? {
                Some(Some(lease)) => Some(lease),
                Some(None) => return Ok(None),
                None => Some(c.take_unconfirmed(counted, &key.to_string())),
            },
        };
        Ok(Some(SessionSlot { _local: local, _lease: lease }))
    }

    /// Sessions of `user` open now, here or anywhere in the cluster.
    pub(super) async fn user_sessions(&self, user: &str) -> Result<usize, SharedStateDown> {
        let here = self.per_user.get(&user.to_string());
        let shared = match &self.cluster {
            None => None,
            Some(c) => self.shared(c, c.count(crate::cluster::leases::Counted::User, user).await)?,
        };
        Ok(here.max(shared.unwrap_or(0)))
    }

    /// A shared-state answer; `None` when Redis failed and the instance fails
    /// open, `Err` when it fails closed.
    fn shared<T>(
        &self,
        c: &crate::cluster::Cluster,
        r: Result<T, crate::cluster::ClusterError>,
    ) -> Result<Option<T>, SharedStateDown> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(_) if c.fail_closed() => Err(SharedStateDown),
            Err(_) => Ok(None),
        }
    }
}

/// The shared state is unreachable and `cluster.fail = "closed"`.
#[derive(Debug, Clone, Copy)]
pub struct SharedStateDown;

/// One counted session: its slot here and its lease in the cluster.
#[derive(Debug)]
pub struct SessionSlot<K: Eq + std::hash::Hash + Clone> {
    _local: limits::Slot<K>,
    _lease: Option<crate::cluster::leases::Lease>,
}
