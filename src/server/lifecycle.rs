//! The process's lifecycle around the accept loops: the tasks a running
//! instance keeps going, the signal that stops it, and the drain.

use crate::metrics::Metrics;
use crate::session::{Lifecycle, LiveContext};
use std::sync::Arc;
use std::time::Duration;

/// After the drain deadline, how long sessions get to tell their clients
/// (426, 421) before the process exits.
const DRAIN_GRACE: Duration = Duration::from_millis(1500);

/// How often the drain looks whether every session has ended.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Starts what runs beside the sessions: the pool's health checks, the
/// backend's FEAT probe and, with `[cluster]`, the refresh of this instance's
/// session leases.
pub fn spawn_background(live: &Arc<LiveContext>) {
    let ctx = Arc::clone(&live.borrow());
    tokio::spawn(super::probe::health_checks(Arc::clone(live)));
    // The backend's FEAT, for clients that ask before logging in.
    tokio::spawn(super::probe::learn_feat(Arc::clone(&ctx)));
    if let Some(c) = &ctx.cluster {
        tokio::spawn(Arc::clone(c).refresh_leases());
    }
}

/// Resolves at SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}

/// Once the listeners are closed: lets running sessions finish within
/// `timeouts.drain` (idle ones get 421 at once), then tells every session
/// still open to close (426 for a transfer, then 421) and gives them
/// `DRAIN_GRACE` to say it.
pub async fn drain(live: &LiveContext) {
    let ctx = Arc::clone(&live.borrow());
    ctx.closing.send_replace(Lifecycle::Draining);
    let deadline = tokio::time::Instant::now() + ctx.settings.drain;
    while Metrics::get(&ctx.metrics.sessions_open) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let left = Metrics::get(&ctx.metrics.sessions_open);
    if left > 0 {
        tracing::warn!(sessions = left, "drain timeout: closing the remaining sessions");
        ctx.closing.send_replace(Lifecycle::DrainDeadline);
        let grace = tokio::time::Instant::now() + DRAIN_GRACE;
        while Metrics::get(&ctx.metrics.sessions_open) > 0 && tokio::time::Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
