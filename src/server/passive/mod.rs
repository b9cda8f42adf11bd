//! Client-facing passive ports, shared by every session.
//!
//! A session does not get a port of its own: it gets a reservation of
//! (port, client address) on a listener that all sessions share, so a range
//! of a handful of ports (a Kubernetes Service, a cloud load balancer, a
//! NAT) serves any number of sessions. A data connection goes to the session
//! that reserved its port for the connection's source address.
//!
//! The rule that keeps sessions apart: a client address (counted as the
//! per-address rules count it, IPv6 by prefix) holds at most one plain
//! reservation on a port, and a plain reservation is alone there for its
//! address. Sessions of one address under `PROT P` may share a port: the
//! data connection's TLS handshake resumes its own control session, which
//! tells them apart ([`crate::tls::route`]). A plain setup that finds every
//! port held by its address waits for one to come free.

mod port;

use crate::config::{PortRange, ProxySenders};
use crate::metrics::{GaugeGuard, Metrics};
use crate::protocol::TransferDirection;
use crate::session::core::DataSetupFailure;
use crate::session::outcome::DataError;
use crate::tls::stream::ClientStream;
use crate::tls::SessionAcceptors;
use rand::Rng;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

/// The session's word that the backend accepted the transfer command.
pub type Go = tokio::sync::watch::Receiver<Option<crate::relay::Limits>>;

/// How long a reservation still waits once a connection that may have been
/// its own was refused: long enough for its own client, which connects
/// right after the 227/229, to get through after a thief from its address;
/// short enough that a client whose handshake really failed hears why soon.
const AFTER_REFUSAL: Duration = Duration::from_secs(3);

/// How long a port stays bound after its last reservation ended, so a busy
/// port is not closed and bound again between two transfers.
const LINGER: Duration = Duration::from_secs(2);

/// What a session asks for when it prepares a passive data connection.
pub struct Claim {
    /// The client's address, exactly: only a connection from it is accepted.
    pub client_ip: IpAddr,
    /// The client's address as per-address rules count it (IPv6 by prefix):
    /// what "ports the address holds" counts.
    pub key: IpAddr,
    /// The session came through a PROXY protocol sender: its data connection
    /// comes the same way, with a header naming the client.
    pub proxy: Option<ProxySenders>,
    /// `PROT P`: the client leg's TLS, done by the port on accepting.
    pub tls: Option<ClaimTls>,
    /// `timeouts.data_connect`.
    pub timeout: Duration,
}

/// The session's TLS for a data connection accepted under `PROT P`.
pub struct ClaimTls {
    pub acceptors: SessionAcceptors,
    /// Known once the transfer command arrived: downloads get tickets.
    pub direction: Arc<OnceLock<TransferDirection>>,
    /// Refuse a data connection that does not resume the control session.
    pub require_reuse: bool,
    pub go: Go,
}

/// One reservation, shared by the session (through [`Reservation`]) and the
/// port that delivers its connection.
struct Slot {
    claim: Claim,
    deliver: Mutex<Option<oneshot::Sender<ClientStream>>>,
    /// A connection from the client's address arrived and waits in a TLS
    /// handshake that may start only after the backend's 150.
    touched: AtomicBool,
    touch: Notify,
    /// Why the last connection that may have been this reservation's was
    /// refused, for the session's reply if none comes.
    refusal: Mutex<Option<Refusal>>,
}

/// Why a TLS data connection was not handed to a reservation it may have
/// belonged to. The reservation stands: the refused connection may have been
/// a thief's from the same address.
#[derive(Debug, Clone)]
enum Refusal {
    /// It resumed no session waiting there (or reuse is required and it
    /// resumed none at all).
    NotResumed,
    Tls(String),
    Timeout(u64),
}

impl Slot {
    fn tls(&self) -> bool {
        self.claim.tls.is_some()
    }

    /// A connection from the client's address arrived and may be this
    /// reservation's (its TLS handshake tells).
    fn touch(&self) {
        self.touched.store(true, Ordering::Relaxed);
        self.touch.notify_waiters();
    }

    fn refused(&self, why: Refusal) {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.touch.notify_waiters();
    }

    fn was_refused(&self) -> bool {
        self.refusal.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// What the session says when its connection never came.
    fn timed_out(&self) -> DataError {
        match self.refusal.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(Refusal::NotResumed) => DataError::NotResumed,
            Some(Refusal::Tls(e)) => DataError::ClientTls(io::Error::other(e)),
            Some(Refusal::Timeout(s)) => DataError::TlsTimeout(s),
            None => DataError::ClientTimeout(self.claim.timeout.as_secs()),
        }
    }
}

/// One bound port: its reservations, and since when it has none.
struct PortEntry {
    slots: Vec<Arc<Slot>>,
    empty_since: Option<Instant>,
    _open: GaugeGuard,
}

/// Every passive port bound now, keyed by (local address, port): a client
/// reaches the port on the address it reached ftpgate on.
pub struct PassivePool {
    ports: Mutex<HashMap<SocketAddr, PortEntry>>,
    /// Signalled whenever a reservation ends, for setups waiting for a port.
    freed: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PassivePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassivePool").field("ports", &self.lock().len()).finish()
    }
}

/// Why no port could be reserved now.
enum Busy {
    /// Every port is held by this address (it may come free).
    HeldByAddress,
    /// No port of the range could be bound at all (another program holds
    /// them, or the range is empty).
    Unusable,
}

impl PassivePool {
    pub fn new(metrics: Arc<Metrics>) -> Arc<PassivePool> {
        Arc::new(PassivePool { ports: Mutex::default(), freed: Notify::new(), metrics })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, PortEntry>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a port of `range` on `local_ip` for `claim`, waiting up to
    /// `claim.timeout` for one while every port is held by the client's
    /// address.
    pub async fn reserve(
        self: &Arc<Self>,
        local_ip: IpAddr,
        range: PortRange,
        claim: Claim,
    ) -> Result<Reservation, DataSetupFailure> {
        let wait = claim.timeout;
        let deadline = tokio::time::Instant::now() + wait;
        let mut claim = Some(claim);
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_reserve(local_ip, range, &mut claim) {
                Ok(r) => return Ok(r),
                Err(Busy::Unusable) => {
                    Metrics::inc(&self.metrics.passive_ports_exhausted);
                    return Err(DataSetupFailure::PassiveRangeFull { min: range.min, max: range.max });
                }
                Err(Busy::HeldByAddress) => {}
            }
            if !waited {
                waited = true;
                Metrics::inc(&self.metrics.passive_waits);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                Metrics::inc(&self.metrics.passive_ports_exhausted);
                return Err(DataSetupFailure::PassivePortsBusy { ports: range.len(), waited: wait.as_secs() });
            }
        }
    }

    /// Picks a port, starting at a random one so ports are hard to predict
    /// (a client on another network cannot guess where the next transfer
    /// lands): the first the address holds nothing on, binding it if no
    /// session uses it yet; under `PROT P`, failing that, the port where the
    /// address holds the fewest reservations, all of them TLS.
    ///
    /// `claim` is taken only when a reservation is made.
    fn try_reserve(
        self: &Arc<Self>,
        local_ip: IpAddr,
        range: PortRange,
        claim: &mut Option<Claim>,
    ) -> Result<Reservation, Busy> {
        let Some(c) = claim.as_ref() else { return Err(Busy::HeldByAddress) };
        let (key, tls) = (c.key, c.tls.is_some());
        let len = range.len();
        let first = rand::thread_rng().gen_range(0..len);
        let mut ports = self.lock();
        let mut shared: Option<(SocketAddr, usize)> = None;
        let mut any_bound = false;
        for i in 0..len {
            let at = SocketAddr::new(local_ip, range.min + ((first + i) % len) as u16);
            let Some(entry) = ports.get(&at) else {
                let Ok(listener) = std_bind(at) else { continue };
                let entry = PortEntry {
                    slots: vec![],
                    empty_since: None,
                    _open: GaugeGuard::new(&self.metrics, |m| &m.passive_listeners_open),
                };
                ports.insert(at, entry);
                tokio::spawn(port::serve(Arc::downgrade(self), at, listener));
                return Ok(self.insert(&mut ports, at, claim));
            };
            any_bound = true;
            let mine: Vec<&Arc<Slot>> = entry.slots.iter().filter(|s| s.claim.key == key).collect();
            if mine.is_empty() {
                return Ok(self.insert(&mut ports, at, claim));
            }
            if tls && mine.iter().all(|s| s.tls()) && shared.is_none_or(|(_, n)| mine.len() < n) {
                shared = Some((at, mine.len()));
            }
        }
        match shared {
            Some((at, _)) => Ok(self.insert(&mut ports, at, claim)),
            None if any_bound => Err(Busy::HeldByAddress),
            None => Err(Busy::Unusable),
        }
    }

    fn insert(
        self: &Arc<Self>,
        ports: &mut HashMap<SocketAddr, PortEntry>,
        at: SocketAddr,
        claim: &mut Option<Claim>,
    ) -> Reservation {
        let claim = claim.take().expect("try_reserve holds a claim");
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(Slot {
            claim,
            deliver: Mutex::new(Some(tx)),
            touched: AtomicBool::new(false),
            touch: Notify::new(),
            refusal: Mutex::new(None),
        });
        if let Some(entry) = ports.get_mut(&at) {
            entry.slots.push(Arc::clone(&slot));
            entry.empty_since = None;
        }
        Metrics::inc(&self.metrics.passive_reservations);
        Reservation { pool: Arc::clone(self), at, slot, rx: Some(rx) }
    }

    /// Ends `slot`'s reservation if it still stands; its sender, to hand it
    /// its connection.
    fn take(&self, at: SocketAddr, slot: &Arc<Slot>) -> Option<oneshot::Sender<ClientStream>> {
        let mut ports = self.lock();
        let entry = ports.get_mut(&at)?;
        let i = entry.slots.iter().position(|s| Arc::ptr_eq(s, slot))?;
        entry.slots.swap_remove(i);
        if entry.slots.is_empty() {
            entry.empty_since = Some(Instant::now());
        }
        drop(ports);
        Metrics::dec(&self.metrics.passive_reservations);
        self.freed.notify_waiters();
        slot.deliver.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The reservations a connection to `at` from `ip` may belong to: the
    /// plain one alone, or every TLS one. `sender` is the PROXY protocol
    /// sender the connection came through, if any: only sessions that came
    /// through a sender their listener trusts expect that.
    fn candidates(&self, at: SocketAddr, ip: IpAddr, sender: Option<IpAddr>) -> Vec<Arc<Slot>> {
        let ports = self.lock();
        let Some(entry) = ports.get(&at) else { return vec![] };
        let ip = ip.to_canonical();
        let mut found: Vec<Arc<Slot>> = entry
            .slots
            .iter()
            .filter(|s| s.claim.client_ip.to_canonical() == ip)
            .filter(|s| match (&s.claim.proxy, sender) {
                (Some(senders), Some(sender)) => senders.trusts(sender),
                (None, None) => true,
                _ => false,
            })
            .cloned()
            .collect();
        if let Some(plain) = found.iter().position(|s| !s.tls()) {
            found = vec![found.swap_remove(plain)];
        }
        found
    }

    /// Whether a connection from `peer` to `at` starts with a PROXY header:
    /// some session waiting there came through a listener that trusts it.
    fn expects_header(&self, at: SocketAddr, peer: IpAddr) -> bool {
        let ports = self.lock();
        ports.get(&at).is_some_and(|e| e.slots.iter().any(|s| s.claim.proxy.as_ref().is_some_and(|p| p.trusts(peer))))
    }

    /// Whether some session waiting on `at` came through a PROXY sender.
    fn expects_headers(&self, at: SocketAddr) -> bool {
        self.lock().get(&at).is_some_and(|e| e.slots.iter().any(|s| s.claim.proxy.is_some()))
    }

    /// Closes `at` if it has had no reservation for [`LINGER`]; the listener
    /// is dropped under the lock, so a reservation made right after can bind
    /// the port again.
    fn close_if_idle(&self, at: SocketAddr, listener: &mut Option<TcpListener>) -> bool {
        let mut ports = self.lock();
        let idle = ports.get(&at).is_none_or(|e| e.empty_since.is_some_and(|t| t.elapsed() >= LINGER));
        if idle {
            ports.remove(&at);
            *listener = None;
        }
        idle
    }
}

/// A session's hold on (port, client address) until its data connection
/// arrives; dropped (the session moved on, ended, or timed out), the port is
/// free for that address again.
pub struct Reservation {
    pool: Arc<PassivePool>,
    at: SocketAddr,
    slot: Arc<Slot>,
    rx: Option<oneshot::Receiver<ClientStream>>,
}

impl Reservation {
    pub fn port(&self) -> u16 {
        self.at.port()
    }

    /// Resolves once a connection that may be this reservation's arrived.
    /// Under `PROT P` the connection is handed over only after its TLS
    /// handshake, which the client starts after the backend's 150, and a
    /// backend (vsftpd) sends that only once its own data connection is in:
    /// so the session connects its backend leg when this resolves, before
    /// it knows the connection is its own.
    pub fn arrival(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let slot = Arc::clone(&self.slot);
        async move {
            loop {
                let notified = slot.touch.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if slot.touched.load(Ordering::Relaxed) {
                    return;
                }
                notified.await;
            }
        }
    }

    /// The client's data connection, TLS already on it under `PROT P`.
    /// Waits `timeout` from the reservation, or from the backend's 150 once
    /// that came; a connection whose TLS handshake waits for the 150 is
    /// waited for as long as the 150 takes.
    pub async fn connection(mut self, mut go: Go) -> Result<ClientStream, DataError> {
        let timeout = self.slot.claim.timeout;
        let mut rx = self.rx.take().expect("connection is called once");
        let mut deadline = Some(tokio::time::Instant::now() + timeout);
        let mut go_seen = go.borrow().is_some();
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let news = self.slot.touch.notified();
            tokio::select! {
                r = &mut rx => {
                    return r.map_err(|_| DataError::ClientAccept(io::Error::other("passive port closed")));
                }
                () = sleep => {
                    if !go_seen && self.slot.touched.load(Ordering::Relaxed) && !self.slot.was_refused() {
                        deadline = None;
                        continue;
                    }
                    return Err(self.slot.timed_out());
                }
                () = news => {
                    if self.slot.was_refused() {
                        let soon = tokio::time::Instant::now() + AFTER_REFUSAL;
                        deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
                    }
                }
                changed = go.changed(), if !go_seen => {
                    if changed.is_err() || go.borrow().is_some() {
                        go_seen = true;
                        if !self.slot.was_refused() {
                            let later = tokio::time::Instant::now() + timeout;
                            deadline = Some(deadline.map_or(later, |d| d.max(later)));
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _ = self.pool.take(self.at, &self.slot);
    }
}

fn std_bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // On Linux SO_REUSEADDR never lets two listeners share a port; it only lets
    // a port whose last data connection sits in TIME_WAIT be used again, which a
    // busy range needs.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // Sessions share the port: room for a burst of their data connections.
    socket.listen(128)
}

/// What `ftpgate check` says about a range: how many data setups one client
/// address may have pending at once.
pub fn capacity_line(range: PortRange, max_sessions_per_address: usize) -> String {
    let ports = range.len();
    let tls =
        if max_sessions_per_address == 0 { "any number".to_string() } else { max_sessions_per_address.to_string() };
    format!(
        "passive ports {}-{}: {ports} port(s) shared by all sessions; per client address at once: {ports} plain \
         data setup(s) (more wait up to timeouts.data_connect), {tls} under PROT P (one per session, limits.max_sessions_per_address)",
        range.min, range.max
    )
}

#[cfg(test)]
mod tests;
