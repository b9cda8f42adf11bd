//! Accept loops: one per client listener, each spawning a session per client.
//! A reload that changes the listener list opens, restarts or closes accept
//! loops to match; sessions already running are not touched.

pub mod accept;
pub mod admin;
pub mod connectors;
pub mod context;
pub mod dial;
pub mod exporter;
pub mod lifecycle;
pub mod limits;
pub mod passive;
pub mod pool;
pub mod probe;
pub mod registry;
pub mod scan;
pub mod session;
pub mod status_page;

pub use context::{ContextError, Lifecycle, LiveContext, SessionContext};
pub use pool::BackendTarget;

use crate::config::ListenerSettings;
use crate::metrics::{GaugeGuard, Metrics};
use crate::protocol::Reply;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// Serves clients on already-bound `listeners`, each with its TLS mode, until
/// `shutdown` completes. Tests bind port 0 and pass the listeners in. Each
/// accepted client starts its session with the context `live` holds at that
/// moment. Running sessions are not waited for.
pub async fn run(
    listeners: Vec<(TcpListener, ListenerSettings)>,
    live: Arc<LiveContext>,
    shutdown: impl Future<Output = ()>,
) {
    let ids = Arc::new(AtomicU64::new(1));
    let mut loops = AcceptLoops { running: HashMap::new(), live: Arc::clone(&live), ids };
    for (listener, settings) in listeners {
        let addr = listener.local_addr().unwrap_or(settings.address);
        loops.start(addr, Arc::new(listener), settings);
    }
    let mut changes = live.subscribe();
    changes.mark_unchanged();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            r = changes.changed() => {
                if r.is_err() {
                    shutdown.as_mut().await;
                    break;
                }
                let wanted = changes.borrow_and_update().settings.listeners.clone();
                loops.reconcile(&wanted).await;
            }
        }
    }
    for (_, (listener, _, task)) in loops.running.drain() {
        task.abort();
        // An aborted task is dropped when the runtime next gets to it; wait
        // for that, so every listening socket is closed when this returns
        // (no client is accepted into the kernel's queue while draining).
        let _ = task.await;
        drop(listener);
    }
}

struct AcceptLoops {
    /// By the address the listener is bound to.
    running: HashMap<SocketAddr, (Arc<TcpListener>, ListenerSettings, JoinHandle<()>)>,
    live: Arc<LiveContext>,
    ids: Arc<AtomicU64>,
}

impl AcceptLoops {
    fn start(&mut self, addr: SocketAddr, listener: Arc<TcpListener>, settings: ListenerSettings) {
        info!(target: "ftpgate::server", %addr, tls = ?settings.tls, proxy_protocol = settings.proxy_protocol, "accepting FTP clients");
        let task = tokio::spawn(accept_loop(
            Arc::clone(&listener),
            settings.clone(),
            Arc::clone(&self.live),
            Arc::clone(&self.ids),
        ));
        self.running.insert(addr, (listener, settings, task));
    }

    /// Makes the running accept loops match `wanted`: a listener whose TLS
    /// mode or PROXY setting changed keeps its socket (no connection is
    /// refused meanwhile) and gets a new loop; a new address is bound; an
    /// address no longer wanted is closed. A bind failure is logged and the
    /// rest still applies.
    async fn reconcile(&mut self, wanted: &[ListenerSettings]) {
        let keep: Vec<SocketAddr> = wanted.iter().map(|l| l.address).collect();
        let gone: Vec<SocketAddr> = self.running.keys().filter(|a| !keep.contains(a)).copied().collect();
        for addr in gone {
            if let Some((_, _, task)) = self.running.remove(&addr) {
                task.abort();
                info!(target: "ftpgate::server", %addr, "stopped accepting FTP clients (removed from the configuration)");
            }
        }
        for l in wanted {
            match self.running.remove(&l.address) {
                Some((listener, old, task)) if old == *l => {
                    self.running.insert(l.address, (listener, old, task));
                }
                Some((listener, _, task)) => {
                    task.abort();
                    self.start(l.address, listener, l.clone());
                }
                None => match bind(l.address).await {
                    Ok(listener) => self.start(l.address, Arc::new(listener), l.clone()),
                    Err(e) => {
                        error!(target: "ftpgate::server", addr = %l.address, error = %e, "cannot listen on a newly configured address")
                    }
                },
            }
        }
    }
}

/// The control listeners' accept errors.
static FTP_ACCEPT: accept::AcceptErrors = accept::AcceptErrors::new("ftp");

/// Pending connections the kernel queues per client listener (capped by
/// `net.core.somaxconn`). tokio's default, 128, drops handshakes when a burst
/// of clients arrives at once, and each dropped one waits seconds for a
/// retransmit.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a client listener with [`LISTEN_BACKLOG`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv6 only, so that `0.0.0.0` can be a listener too.
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long a load balancer may take to send the PROXY protocol header.
const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn accept_loop(
    listener: Arc<TcpListener>,
    settings: ListenerSettings,
    live: Arc<LiveContext>,
    ids: Arc<AtomicU64>,
) {
    let metrics = Arc::clone(&live.borrow().metrics);
    // Counted while the loop runs, for /readyz.
    let _up = GaugeGuard::new(&metrics, |m| &m.listeners_up);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                FTP_ACCEPT.succeeded();
                let ctx = Arc::clone(&live.borrow());
                let max = ctx.settings.max_sessions;
                if Metrics::get(&ctx.metrics.sessions_open) >= max as u64 {
                    Metrics::inc(&ctx.metrics.sessions_refused);
                    warn!(target: "ftpgate::server", %peer, max, "session limit reached; refusing client");
                    tokio::spawn(refuse(stream, max));
                    continue;
                }
                if settings.proxy_protocol && !settings.proxy_from.trusts(peer.ip()) {
                    // Closed before a byte is read or answered: its header
                    // would choose its own address.
                    crate::proxy_protocol::refuse_untrusted(peer, settings.address.port(), &ctx.metrics);
                    continue;
                }
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let settings = settings.clone();
                tokio::spawn(async move {
                    let client = if settings.proxy_protocol {
                        match crate::proxy_protocol::read_header(&stream, PROXY_HEADER_TIMEOUT).await {
                            Ok(addr) => addr,
                            Err(e) => {
                                ctx.metrics.proxy_header_error(e.label());
                                warn!(target: "ftpgate::server", %peer, error = %e, "refused connection without a valid PROXY protocol header");
                                return;
                            }
                        }
                    } else {
                        None
                    };
                    session::run(stream, settings, ctx, id, client).await
                });
            }
            Err(e) => FTP_ACCEPT.failed(&e, &metrics).await,
        }
    }
}

async fn refuse(mut stream: TcpStream, max: usize) {
    let reply = Reply::single(
        crate::protocol::codes::NOT_AVAILABLE,
        &format!("Too many sessions (limit {max}); try again later"),
    );
    let _ = stream.write_all(&reply.raw).await;
    let _ = stream.shutdown().await;
}
