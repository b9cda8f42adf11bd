//! Uploads streamed to a malware scanner while they are relayed (`[scan]`):
//! clamd's `INSTREAM` (`clamd.rs`) or an ICAP `REQMOD` (`icap.rs`).
//!
//! The client leg of an upload is wrapped in [`ScanTee`]: every byte read
//! from the client is also queued, in a bounded channel, for a task that
//! feeds the scanner; memory per upload is that channel whatever the file's
//! size. The relay's end closes the stream, and the verdict comes before the
//! session lets the backend's `226` through.

mod clamd;
mod icap;

use crate::config::{ScanSettings, Scanner};
use crate::session::outcome::ScanVerdict;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Chunks queued for the scanner per upload (each at most one relay read).
const QUEUED_CHUNKS: usize = 16;

/// One upload's scan, from its first byte to the verdict.
pub struct UploadScan {
    task: tokio::task::JoinHandle<Result<Option<String>, String>>,
    oversize: Arc<AtomicBool>,
    settings: Arc<ScanSettings>,
}

/// Starts scanning an upload whose client leg is `client`: the returned
/// stream tees what is read from it into the scan.
pub fn start<S>(client: S, settings: Arc<ScanSettings>) -> (ScanTee<S>, UploadScan) {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
    let oversize = Arc::new(AtomicBool::new(false));
    let task = match &settings.scanner {
        Scanner::Icap { .. } => tokio::spawn(icap::reqmod(settings.scanner.clone(), rx, settings.timeout)),
        _ => tokio::spawn(clamd::instream(settings.scanner.clone(), rx, settings.timeout)),
    };
    let tee = ScanTee {
        inner: client,
        tx: Some(PollSender::new(tx)),
        seen: Arc::new(AtomicU64::new(0)),
        max: settings.max_size,
        oversize: Arc::clone(&oversize),
    };
    (tee, UploadScan { task, oversize, settings })
}

impl UploadScan {
    /// The verdict, once the upload's last byte went out (the tee dropped or
    /// at EOF). Bounded by `[scan] timeout`.
    pub async fn verdict(self) -> ScanVerdict {
        let s = &self.settings;
        let answer = match tokio::time::timeout(s.timeout, self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("scan task failed: {e}")),
            Err(_) => Err(format!("no verdict within {} s", s.timeout.as_secs())),
        };
        let oversize = self.oversize.load(Ordering::Relaxed);
        match answer {
            Ok(Some(signature)) => ScanVerdict::Infected(signature),
            Ok(None) if !oversize => ScanVerdict::Clean,
            Ok(None) => {
                let reason = format!("larger than [scan] max_size = {} bytes", s.max_size);
                if s.reject_oversize {
                    ScanVerdict::Unscanned { reason, oversize: true }
                } else {
                    ScanVerdict::AcceptedUnscanned(reason)
                }
            }
            Err(reason) => {
                let reason = format!("{}: {reason}", s.scanner);
                if s.reject_on_error {
                    ScanVerdict::Unscanned { reason, oversize: false }
                } else {
                    ScanVerdict::AcceptedUnscanned(reason)
                }
            }
        }
    }
}

/// Whether the scanner answers (`PING` to clamd, `OPTIONS` to an ICAP
/// service) within `timeout`: `ftpgate check`, the health gauge, `/readyz`.
pub async fn ping(scanner: &Scanner, timeout: Duration) -> Result<(), String> {
    let talk = async {
        match scanner {
            Scanner::Icap { .. } => icap::options(scanner).await,
            _ => clamd::ping(scanner).await,
        }
    };
    tokio::time::timeout(timeout, talk)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs())))
}

/// One step of the conversation with the scanner, with its own deadline.
async fn step(
    what: &str,
    timeout: Duration,
    f: impl std::future::Future<Output = io::Result<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress within {} s", timeout.as_secs())),
    }
}

/// Keeps `ftpgate_scanner_up` current: clamd's `PING` every
/// `health_interval` (1 without `[scan]`). Reads the live configuration on
/// each round, so a reload that adds or drops `[scan]` is followed.
pub async fn health(live: Arc<crate::server::LiveContext>) {
    loop {
        let ctx = Arc::clone(&live.borrow());
        let up = match &ctx.settings.scan {
            None => true,
            Some(s) => match ping(&s.scanner, s.timeout.min(Duration::from_secs(5))).await {
                Ok(()) => true,
                Err(e) => {
                    if SCANNER_DOWN_LOGGED.allow(&()) {
                        tracing::warn!(target: "ftpgate::server", scanner = %s.scanner, error = %e, "malware scanner unreachable; said once a minute");
                    }
                    false
                }
            },
        };
        ctx.metrics.scanner_up.store(u64::from(up), Ordering::Relaxed);
        tokio::time::sleep(ctx.settings.health_interval).await;
    }
}

static SCANNER_DOWN_LOGGED: std::sync::LazyLock<crate::log_limit::PerKey<()>> =
    std::sync::LazyLock::new(|| crate::log_limit::PerKey::new(Duration::from_secs(60)));

/// The client leg of a scanned upload: reads go to the relay and, copied,
/// to the scan. Writes pass through untouched.
pub struct ScanTee<S> {
    inner: S,
    /// `None` once the scan has all it gets: the end of the upload, more
    /// than `max` bytes, or a scanner that gave up.
    tx: Option<PollSender<Bytes>>,
    seen: Arc<AtomicU64>,
    max: u64,
    oversize: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ScanTee<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Room in the queue first, so a byte read is a byte the scan gets.
        if let Some(tx) = this.tx.as_mut() {
            match tx.poll_reserve(cx) {
                Poll::Ready(Ok(())) => {}
                // The scan gave up (its error is its verdict): relay on.
                Poll::Ready(Err(_)) => this.tx = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if new.is_empty() {
            // End of the upload: closing the queue ends the INSTREAM.
            this.tx = None;
            return Poll::Ready(Ok(()));
        }
        let total = this.seen.fetch_add(new.len() as u64, Ordering::Relaxed) + new.len() as u64;
        if total > this.max {
            this.oversize.store(true, Ordering::Relaxed);
            this.tx = None;
        } else if let Some(tx) = this.tx.as_mut() {
            if tx.send_item(Bytes::copy_from_slice(new)).is_err() {
                this.tx = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ScanTee<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
