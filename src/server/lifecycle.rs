//! The process's lifecycle around the accept loops: the tasks a running
//! instance keeps going, SIGHUP reloads, the signal that stops it, and the
//! drain.

use crate::config::{ListenerSettings, Settings};
use crate::metrics::Metrics;
use crate::server::{Lifecycle, LiveContext};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// After the drain deadline, how long sessions get to tell their clients
/// (426, 421) before the process exits.
const DRAIN_GRACE: Duration = Duration::from_millis(1500);

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
    tokio::spawn(super::scan::health(Arc::clone(live)));
}

/// Runs a started instance to its end: SIGHUP reloads (`reread` reads the
/// configuration again), the accept loops until SIGINT or SIGTERM, then the
/// drain, with systemd told at each step.
pub async fn serve(
    listeners: Vec<(TcpListener, ListenerSettings)>,
    live: Arc<LiveContext>,
    reread: impl Fn() -> Result<Settings, String> + Send + 'static,
) {
    let reload_live = Arc::clone(&live);
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            reload(&reload_live, reread());
        }
    });
    crate::systemd::notify("READY=1");
    super::run(listeners, Arc::clone(&live), shutdown_signal()).await;
    // Listeners are closed now. Let transfers finish, then everyone gets 421.
    crate::systemd::notify("STOPPING=1");
    drain(&live).await;
}

/// SIGHUP: makes the configuration read again (with its certificates and
/// policy) the one new sessions start with; the accept loops follow the new
/// listener list. Running sessions keep their backend connection and
/// settings and follow the new policy from their next command. Anything
/// wrong keeps the old configuration in force, and the log says why.
pub fn reload(live: &LiveContext, settings: Result<Settings, String>) {
    crate::systemd::notify("RELOADING=1");
    let current = Arc::clone(&live.borrow());
    let next = settings.and_then(|s| {
        let metrics_moved = s.metrics != current.settings.metrics;
        let next = current.reloaded(s).map_err(|e| e.to_string())?;
        Ok((next, metrics_moved))
    });
    match next {
        Ok((next, metrics_moved)) => {
            if metrics_moved {
                tracing::warn!(target: "ftpgate::server", "the metrics address changed; it takes effect at the next restart");
            }
            Metrics::inc(&current.metrics.reloads_ok);
            tracing::info!(target: "ftpgate::server",
                backend = %next.settings.backend,
                listeners = next.settings.listeners.len(),
                "configuration reloaded; new sessions use it"
            );
            let next = Arc::new(next);
            tokio::spawn(super::probe::learn_feat(Arc::clone(&next)));
            live.send_replace(next);
        }
        Err(e) => {
            Metrics::inc(&current.metrics.reloads_failed);
            tracing::error!(target: "ftpgate::server", error = %e, "configuration reload failed; keeping the running configuration");
        }
    }
    crate::systemd::notify("READY=1");
}

/// Resolves at SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!(target: "ftpgate::server", "shutting down");
}

/// Once the listeners are closed: lets running sessions finish within
/// `timeouts.drain` (idle ones get 421 at once), then tells every session
/// still open to close (426 for a transfer, then 421) and gives them
/// `DRAIN_GRACE` to say it. Waits on the sessions' ends, not a poll.
pub async fn drain(live: &LiveContext) {
    let ctx = Arc::clone(&live.borrow());
    ctx.closing.send_replace(Lifecycle::Draining);
    let sessions = Arc::clone(&ctx.sessions);
    let deadline = std::time::SystemTime::now() + ctx.settings.drain;
    tracing::info!(target: "ftpgate::server",
        sessions = sessions.count(),
        transfers = crate::metrics::Metrics::get(&ctx.metrics.data_channels_open),
        drain_seconds = ctx.settings.drain.as_secs(),
        deadline = %crate::xferlog::rfc3339_utc(deadline),
        "draining: listeners closed; idle sessions get 421 now, running transfers may finish until the deadline"
    );
    if tokio::time::timeout(ctx.settings.drain, sessions.all_ended()).await.is_ok() {
        return;
    }
    tracing::warn!(target: "ftpgate::server", sessions = sessions.count(), "drain timeout: closing the remaining sessions");
    ctx.closing.send_replace(Lifecycle::DrainDeadline);
    let _ = tokio::time::timeout(DRAIN_GRACE, sessions.all_ended()).await;
}
