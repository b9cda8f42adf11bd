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
            tracing::error!(
                listener = self.listener, error = %e, out_of_descriptors = scarce,
                "accept failed; backing off (logged once until accepting works again, counted in ftpgate_accept_errors_total)"
            );
        }
        tokio::time::sleep(BACKOFF).await;
    }

    /// An accept worked: the next failure is logged again.
    pub fn succeeded(&self) {
        if self.logged.swap(false, Ordering::Relaxed) {
            tracing::info!(listener = self.listener, "accepting again");
        }
    }
}
