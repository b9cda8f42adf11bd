//! Moves bytes between two streams until one side finishes. Knows nothing of FTP.
//!
//! The relay is two half-duplex copies. When one direction reaches end of file
//! the write half it fed is shut down, so the far peer sees the same orderly
//! close the near peer made, and the relay ends: a stream-mode transfer is over
//! when its sender closes. Any write still queued in the kernel is delivered
//! after the caller drops the streams, because the shutdown already sent FIN
//! after it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub mod limit;
#[cfg(target_os = "linux")]
pub mod splice;

pub use limit::{Limit, Limits, TokenBucket};

/// Per-direction copy buffer to start with. Large enough that a TLS writer
/// can emit full 16 KiB records and loopback transfers are not bounded by
/// syscall count.
pub const COPY_BUFFER: usize = 64 * 1024;
/// What a direction's buffer grows to once a read fills it (a bulk stream):
/// each write then carries up to 256 KiB, which through a connector is one
/// HTTP/2 frame instead of four. Through edge + connector, plain upload,
/// 512 MiB, 4 interleaved rounds: 1.30 -> 1.06 CPU s/GiB, 723 -> 789 MB/s.
/// A direction that never fills 64 KiB (commands' echo side, slow or
/// rate-limited peers) keeps the small buffer.
pub const BULK_COPY_BUFFER: usize = 256 * 1024;
/// Directions holding a grown buffer at once, process-wide: at most 192 MiB
/// more than the small buffers, whatever the peers do (a peer may push bulk
/// data both ways of every data connection it has). Past it a direction
/// keeps 64 KiB: slower, not wrong, as spliced relays past their pipe budget.
pub const MAX_BULK_BUFFERS: usize = 1024;

static BULK_BUFFERS: BulkBudget = BulkBudget::new(MAX_BULK_BUFFERS);

/// A count of grown buffers with a ceiling.
pub(crate) struct BulkBudget {
    used: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// One grown buffer's place in its budget, given back on drop.
pub(crate) struct BulkSlot(&'static BulkBudget);

impl BulkBudget {
    pub(crate) const fn new(max: usize) -> BulkBudget {
        BulkBudget { used: std::sync::atomic::AtomicUsize::new(0), max }
    }

    pub(crate) fn take(&'static self) -> Option<BulkSlot> {
        let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        taken.ok().map(|_| BulkSlot(self))
    }

    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for BulkSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Grown copy buffers in use now (for tests and metrics).
pub fn bulk_buffers_in_use() -> usize {
    BULK_BUFFERS.in_use()
}

/// How long a stopped relay gives its legs to close in order.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Which of the two streams passed to [`relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// This side closed its sending direction; everything it sent was passed on
    /// and the other side's write half was shut down.
    Eof(Side),
    /// No byte moved in either direction for the stall timeout.
    Stalled,
    /// Reading from or writing to the named side failed.
    Failed(Side, io::Error),
    /// The named side sent more than its direction's cap: exactly the cap
    /// was passed on, the far side's write half was shut down.
    CapReached(Side),
    /// The owner stopped the relay (`Limits::stop`); both write halves were
    /// shut down in order.
    Cancelled,
}

/// Bytes moved, per direction: `a_to_b` and `b_to_a` were written to the far
/// side; `a_read` and `b_read` were taken from the near side. They differ only
/// when a write failed after its read.
#[derive(Debug)]
pub struct RelayReport {
    pub a_to_b: u64,
    pub b_to_a: u64,
    pub a_read: u64,
    pub b_read: u64,
    /// Time each direction waited for its rate limit.
    pub a_to_b_delayed: Duration,
    pub b_to_a_delayed: Duration,
    pub end: RelayEnd,
}

/// One direction's counters, readable while the relay runs.
#[derive(Debug, Default)]
pub struct Moved {
    pub read: AtomicU64,
    pub written: AtomicU64,
    /// Microseconds spent waiting for a rate limit.
    pub delayed_us: AtomicU64,
}

/// Both directions' counters of one relay, shared with whoever watches it
/// (live metrics, `ftpgate who`): the relay counts into them directly.
#[derive(Debug, Default)]
pub struct Progress {
    pub a_to_b: Moved,
    pub b_to_a: Moved,
}

impl Moved {
    pub(crate) fn delayed(&self, d: Duration) {
        if !d.is_zero() {
            self.delayed_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        }
    }
}

/// Why one direction stopped early: an I/O error (`true`: on the reading
/// side) or its cap.
pub(crate) enum HalfEnd {
    Io(bool, io::Error),
    Cap,
}

impl RelayReport {
    pub(crate) fn new(ab: &Moved, ba: &Moved, end: RelayEnd) -> RelayReport {
        RelayReport {
            a_to_b: ab.written.load(Ordering::Relaxed),
            b_to_a: ba.written.load(Ordering::Relaxed),
            a_read: ab.read.load(Ordering::Relaxed),
            b_read: ba.read.load(Ordering::Relaxed),
            a_to_b_delayed: Duration::from_micros(ab.delayed_us.load(Ordering::Relaxed)),
            b_to_a_delayed: Duration::from_micros(ba.delayed_us.load(Ordering::Relaxed)),
            end,
        }
    }
}

/// Relays between `a` and `b` until one of them finishes sending, one fails,
/// or nothing moves for `stall`. With a non-zero `linger` the other direction
/// then gets that long to finish too, which TLS legs need: the peers' replies
/// to our close_notify must be read, or closing sends a reset.
///
/// A TLS stream that ends without close_notify (`UnexpectedEof`) may have
/// been cut by a forged FIN on the path, so it is a failure of the side that
/// was read, whichever it is. The backend's final reply does not vouch for
/// its data: a server says `226` once its bytes are in its socket buffer,
/// not once they arrived, so a cut between backend and ftpgate would pass a
/// short file on as complete (tests/backend_tls_faults.rs).
pub async fn relay<A, B>(a: A, b: B, stall: Duration, linger: Duration, limits: &Limits) -> RelayReport
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let (a_to_b, b_to_a) = (&limits.progress.a_to_b, &limits.progress.b_to_a);
    let end = {
        let ab = copy_half(&mut a_read, &mut b_write, a_to_b, &limits.a_to_b, &last_activity, start);
        let ba = copy_half(&mut b_read, &mut a_write, b_to_a, &limits.b_to_a, &last_activity, start);
        tokio::pin!(ab, ba);
        let (end, a_still_running) = tokio::select! {
            r = &mut ab => (end_of(Side::A, r), false),
            r = &mut ba => (end_of(Side::B, r), true),
            () = stall_watch(&last_activity, start, stall) => (RelayEnd::Stalled, true),
            () = limits.stop.notified() => (RelayEnd::Cancelled, true),
        };
        if matches!(end, RelayEnd::Eof(_)) && !linger.is_zero() {
            if a_still_running {
                let _ = tokio::time::timeout(linger, &mut ab).await;
            } else {
                let _ = tokio::time::timeout(linger, &mut ba).await;
            }
        }
        end
    };
    if matches!(end, RelayEnd::Cancelled) {
        // An orderly end on both legs (close_notify on TLS ones): a strict
        // server (vsftpd) ends the whole session when a TLS data connection
        // breaks off mid-stream instead.
        let _ = tokio::time::timeout(CANCEL_GRACE, async {
            let _ = b_write.shutdown().await;
            let _ = a_write.shutdown().await;
        })
        .await;
    }
    RelayReport::new(a_to_b, b_to_a, end)
}

pub(crate) fn end_of(reader: Side, r: Result<(), HalfEnd>) -> RelayEnd {
    let other = if reader == Side::A { Side::B } else { Side::A };
    match r {
        Ok(()) => RelayEnd::Eof(reader),
        Err(HalfEnd::Io(true, e)) => RelayEnd::Failed(reader, e),
        Err(HalfEnd::Io(false, e)) => RelayEnd::Failed(other, e),
        Err(HalfEnd::Cap) => RelayEnd::CapReached(reader),
    }
}

/// Copies until EOF, then shuts down `to`. Errors say whether the reading side
/// (`true`) or the writing side failed. `limit` bounds what passes.
async fn copy_half<R, W>(
    from: &mut R,
    to: &mut W,
    count: &Moved,
    limit: &Limit,
    last_activity: &AtomicU64,
    start: Instant,
) -> Result<(), HalfEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUFFER];
    // `None` until the first full read asks the budget; then the slot held
    // while `buf` is the grown size, or `Some(None)` if the budget said no,
    // so a refused direction does not ask again on every read.
    let mut bulk: Option<Option<BulkSlot>> = None;
    let mut moved = 0u64;
    loop {
        let want = if limit.is_none() { buf.len() } else { limit.next_read(buf.len(), moved) };
        // A TLS peer that closed TCP without close_notify fails here with
        // `UnexpectedEof` (see `relay`).
        let n = from.read(&mut buf[..want]).await.map_err(|e| HalfEnd::Io(true, e))?;
        if n == 0 {
            to.shutdown().await.map_err(|e| HalfEnd::Io(false, e))?;
            return Ok(());
        }
        count.read.fetch_add(n as u64, Ordering::Relaxed);
        let pass = limit.allowed(n, moved);
        count.delayed(limit.pay(pass).await);
        to.write_all(&buf[..pass]).await.map_err(|e| HalfEnd::Io(false, e))?;
        if n == buf.len() && bulk.is_none() {
            let slot = BULK_BUFFERS.take();
            if slot.is_some() {
                buf.resize(BULK_COPY_BUFFER, 0);
            }
            bulk = Some(slot);
        }
        count.written.fetch_add(pass as u64, Ordering::Relaxed);
        moved += pass as u64;
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if pass < n {
            // Past the cap: the receiver keeps exactly the cap, in order.
            to.shutdown().await.map_err(|e| HalfEnd::Io(false, e))?;
            return Err(HalfEnd::Cap);
        }
    }
}

pub(crate) async fn stall_watch(last_activity: &AtomicU64, start: Instant, stall: Duration) {
    loop {
        let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
        let deadline = last + stall;
        let now = start.elapsed();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(deadline - now).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::duplex;

    #[tokio::test]
    async fn relays_and_propagates_eof() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let task =
            tokio::spawn(async move { relay(a, b, Duration::from_secs(5), Duration::ZERO, &Limits::default()).await });
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let send = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        let report = task.await.unwrap();
        assert_eq!(report.a_to_b, payload.len() as u64);
        assert!(matches!(report.end, RelayEnd::Eof(Side::A)));
        drop(writer.await.unwrap());
    }

    #[test]
    fn bulk_budget_has_a_ceiling_and_gives_back() {
        static BUDGET: BulkBudget = BulkBudget::new(2);
        let a = BUDGET.take().expect("first");
        let b = BUDGET.take().expect("second");
        assert!(BUDGET.take().is_none(), "a third is refused");
        assert_eq!(BUDGET.in_use(), 2);
        drop(a);
        let c = BUDGET.take().expect("a place given back is taken again");
        drop((b, c));
        assert_eq!(BUDGET.in_use(), 0);
    }

    #[tokio::test]
    async fn a_bulk_direction_grows_its_buffer_and_gives_it_back() {
        // Duplex pipes large enough that one read fills 64 KiB.
        let (mut client, a) = duplex(1 << 20);
        let (b, mut server) = duplex(1 << 20);
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let send = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        let largest = Arc::new(AtomicU64::new(0));
        let b = LargestWrite { inner: b, largest: Arc::clone(&largest) };
        let report = relay(a, b, Duration::from_secs(5), Duration::ZERO, &Limits::default()).await;
        assert!(matches!(report.end, RelayEnd::Eof(Side::A)));
        assert!(reader.await.unwrap() == payload, "bytes differ");
        assert_eq!(report.a_to_b, payload.len() as u64);
        drop(writer.await.unwrap());
        let largest = largest.load(Ordering::Relaxed) as usize;
        assert!(largest > COPY_BUFFER && largest <= BULK_COPY_BUFFER, "largest write {largest}");
        // The only relay in the library's tests that fills its buffer.
        assert_eq!(bulk_buffers_in_use(), 0, "the grown buffer's place is given back");
    }

    /// Records the largest write it is asked for.
    struct LargestWrite<T> {
        inner: T,
        largest: Arc<AtomicU64>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for LargestWrite<T> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for LargestWrite<T> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.largest.fetch_max(buf.len() as u64, Ordering::Relaxed);
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stalls_out() {
        let (_client, a) = duplex(1024);
        let (b, _server) = duplex(1024);
        let report = relay(a, b, Duration::from_secs(3), Duration::ZERO, &Limits::default()).await;
        assert!(matches!(report.end, RelayEnd::Stalled));
    }
}
