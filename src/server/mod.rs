//! Accept loops: one per client listener, each spawning a session per client.

use crate::config::ListenerSettings;
use crate::metrics::Metrics;
use crate::protocol::Reply;
use crate::session::{self, SessionContext};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{error, info, warn};

/// Serves clients on already-bound `listeners`, each with its TLS mode, until
/// `shutdown` completes. Tests bind port 0 and pass the listeners in. Running
/// sessions are not waited for.
pub async fn run(
    listeners: Vec<(TcpListener, ListenerSettings)>,
    ctx: Arc<SessionContext>,
    shutdown: impl Future<Output = ()>,
) {
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, settings) in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, tls = ?settings.tls, proxy_protocol = settings.proxy_protocol, backend = %ctx.settings.backend, "accepting FTP clients");
        }
        tasks.spawn(accept_loop(listener, settings, Arc::clone(&ctx), Arc::clone(&ids)));
    }
    shutdown.await;
    tasks.abort_all();
}

/// How long a load balancer may take to send the PROXY protocol header.
const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn accept_loop(listener: TcpListener, settings: ListenerSettings, ctx: Arc<SessionContext>, ids: Arc<AtomicU64>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if Metrics::get(&ctx.metrics.sessions_open) >= ctx.settings.max_sessions as u64 {
                    Metrics::inc(&ctx.metrics.sessions_refused);
                    warn!(%peer, max = ctx.settings.max_sessions, "session limit reached; refusing client");
                    tokio::spawn(refuse(stream, ctx.settings.max_sessions));
                    continue;
                }
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    let client = if settings.proxy_protocol {
                        match crate::proxy_protocol::read_header(&stream, PROXY_HEADER_TIMEOUT).await {
                            Ok(addr) => addr,
                            Err(e) => {
                                Metrics::inc(&ctx.metrics.proxy_header_errors);
                                warn!(%peer, error = %e, "refused connection without a valid PROXY protocol header");
                                return;
                            }
                        }
                    } else {
                        None
                    };
                    session::run(stream, settings, ctx, id, client).await
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, max: usize) {
    let reply = Reply::single(421, &format!("Too many sessions (limit {max}); try again later"));
    let _ = stream.write_all(&reply.raw).await;
    let _ = stream.shutdown().await;
}
