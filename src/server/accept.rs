//! What every accept loop does when `accept` fails. Out of descriptors
//! (`EMFILE`, `ENFILE`) the listening socket stays readable, so a loop that
//! just tries again spins at 100% CPU and starves the sessions it serves: it
//! backs off instead, and the condition is logged once per episode and
//! counted per listener (`ftpgate_accept_errors_total{listener}`).

use crate::metrics::Metrics;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long an accept loop sleeps after a failed accept.
const BACKOFF: Duration = Duration::from_millis(100);

/// One listener's accept errors, logged once until an accept succeeds again.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    logged: AtomicBool,
}

impl AcceptErrors {
    pub const fn new(listener: &'static str) -> Self {
        AcceptErrors { listener, logged: AtomicBool::new(false) }
    }

    /// Counts and (once) logs the error, then backs off.
    pub async fn failed(&self, e: &io::Error, metrics: &Metrics) {
        metrics.accept_error(self.listener);
        if !self.logged.swap(true, Ordering::Relaxed) {
            let scarce = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
            tracing::error!(target: "ftpgate::server",
                listener = self.listener, error = %e, out_of_descriptors = scarce,
                "accept failed; backing off (logged once until accepting works again, counted in ftpgate_accept_errors_total)"
            );
        }
        tokio::time::sleep(BACKOFF).await;
    }

    /// An accept worked: the next failure is logged again.
    pub fn succeeded(&self) {
        if self.logged.swap(false, Ordering::Relaxed) {
            tracing::info!(target: "ftpgate::server", listener = self.listener, "accepting again");
        }
    }
}

/// A listener a side door accepts on (TCP for HTTP, Unix for the admin socket).
pub trait SideListener: Send + Sync {
    type Stream: Send + 'static;
    fn accept_stream(&self) -> impl std::future::Future<Output = io::Result<Self::Stream>> + Send;
}

impl SideListener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl SideListener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// A side door's accept loop (HTTP, admin socket): at most `cap` clients at
/// once, each handled as its own task holding a slot; past the cap a new
/// connection is dropped at once and counted; accept errors back off.
pub async fn serve_capped<L, H, F>(
    errors: &'static AcceptErrors,
    cap: usize,
    live: std::sync::Arc<crate::server::LiveContext>,
    listener: &L,
    handle: H,
) where
    L: SideListener,
    H: Fn(L::Stream, std::sync::Arc<crate::server::LiveContext>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(cap));
    loop {
        let stream = match listener.accept_stream().await {
            Ok(stream) => {
                errors.succeeded();
                stream
            }
            Err(e) => {
                let metrics = std::sync::Arc::clone(&live.borrow().metrics);
                errors.failed(&e, &metrics).await;
                continue;
            }
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            live.borrow().metrics.side_connection_refused(errors.listener);
            continue;
        };
        let work = handle(stream, std::sync::Arc::clone(&live));
        tokio::spawn(async move {
            let _slot = slot;
            work.await;
        });
    }
}
