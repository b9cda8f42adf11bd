//! Zero-copy relay between two plain TCP sockets with splice(2): bytes move
//! socket -> pipe -> socket inside the kernel and never enter user space.
//!
//! The only `unsafe` of the crate lives here, each block with its reason.
//! Pitfalls handled:
//! - splice runs inside tokio's `try_io`, so readiness is cleared only when
//!   the kernel says `EAGAIN` (calling it outside spins).
//! - `EAGAIN` from socket -> pipe is ambiguous (socket empty, or pipe slots
//!   full), so the pipe is refilled only when it is empty; a half-full pipe
//!   could otherwise stall the end of a stream.
//! - A pipe is always drained before its direction ends, and never reused.
//! - Pipes are counted: past [`MAX_PIPES`] (the per-user pipe page budget
//!   would shrink new pipes to one page) relays take the copy path.

#![allow(unsafe_code)]

use super::{stall_watch, HalfEnd, Limit, Limits, Moved, RelayEnd, RelayReport, Side};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipes alive at once across the process (two per spliced relay).
pub const MAX_PIPES: usize = 2048;
/// Bytes asked of one splice call.
const SPLICE_CHUNK: usize = 1 << 20;
/// Pipe capacity asked for: fewer syscalls per byte than the default 64 KiB.
/// Linux's default per-user budget (`pipe-user-pages-soft`, 64 MiB) covers 128
/// relays at this size; past it the request fails and the pipe keeps its
/// default size, which is still correct, only slower.
const PIPE_SIZE: libc::c_int = 256 * 1024;

static PIPES: AtomicUsize = AtomicUsize::new(0);

/// A non-blocking pipe, counted while it lives.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe now.
    len: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        if PIPES.fetch_add(1, Ordering::Relaxed) >= MAX_PIPES {
            PIPES.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other("pipe budget exhausted"));
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid, writable array of two descriptors, as
        // pipe2 requires; on success both are fresh descriptors we now own.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            PIPES.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
        // nobody else; OwnedFd takes that ownership and closes them on drop.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory; on
        // failure (over the per-user budget) the pipe keeps its default size.
        let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok(Pipe { read, write, len: 0 })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pipes in use now (for metrics and tests).
pub fn pipes_in_use() -> usize {
    PIPES.load(Ordering::Relaxed)
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (they
    // are borrowed from live sockets and pipes), the offsets are null as
    // required for sockets and pipes, and splice touches no user memory.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One direction: `from` -> pipe -> `to` until EOF, then shut down `to`'s
/// write half. Errors say whether the reading side (`true`) failed.
/// `limit` bounds each splice call to what the rate allows (a burst at
/// most) and what the cap leaves; with no limit nothing changes.
async fn splice_half(
    from: &TcpStream,
    to: &TcpStream,
    mut pipe: Pipe,
    count: &Moved,
    limit: &Limit,
    last_activity: &AtomicU64,
    start: Instant,
) -> Result<(), HalfEnd> {
    let mut moved = 0u64;
    loop {
        debug_assert_eq!(pipe.len, 0);
        let want = if limit.is_none() { SPLICE_CHUNK } else { limit.next_read(SPLICE_CHUNK, moved) };
        let n = loop {
            from.readable().await.map_err(|e| HalfEnd::Io(true, e))?;
            match from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), want)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(HalfEnd::Io(true, e)),
            }
        };
        if n == 0 {
            // The pipe is empty here: nothing is lost by ending.
            let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        count.read.fetch_add(n as u64, Ordering::Relaxed);
        // Past the cap the rest stays in the pipe, which is dropped unused.
        pipe.len = limit.allowed(n, moved);
        let capped = pipe.len < n;
        count.delayed(limit.pay(pipe.len).await);
        moved += pipe.len as u64;
        while pipe.len > 0 {
            to.writable().await.map_err(|e| HalfEnd::Io(false, e))?;
            match to.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), to.as_raw_fd(), pipe.len)) {
                Ok(w) => {
                    pipe.len -= w;
                    count.written.fetch_add(w as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(HalfEnd::Io(false, e)),
            }
        }
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if capped {
            let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
            return Err(HalfEnd::Cap);
        }
    }
}

/// Like [`super::relay`] for two plain TCP sockets, without copying through
/// user space. Returns the sockets back if no pipes could be had, so the
/// caller can take the copy path.
pub async fn relay(
    a: TcpStream,
    b: TcpStream,
    stall: Duration,
    limits: &Limits,
) -> Result<RelayReport, (TcpStream, TcpStream)> {
    let (pa, pb) = match (Pipe::new(), Pipe::new()) {
        (Ok(pa), Ok(pb)) => (pa, pb),
        _ => return Err((a, b)),
    };
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let (a_to_b, b_to_a) = (&limits.progress.a_to_b, &limits.progress.b_to_a);
    let end = tokio::select! {
        r = splice_half(&a, &b, pa, a_to_b, &limits.a_to_b, &last_activity, start) => super::end_of(Side::A, r),
        r = splice_half(&b, &a, pb, b_to_a, &limits.b_to_a, &last_activity, start) => super::end_of(Side::B, r),
        () = stall_watch(&last_activity, start, stall) => RelayEnd::Stalled,
        () = limits.stop.notified() => RelayEnd::Cancelled,
    };
    Ok(RelayReport::new(a_to_b, b_to_a, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn splices_both_ways_and_propagates_eof() {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let before = pipes_in_use();
        let task = tokio::spawn(async move { relay(a, b, Duration::from_secs(10), &Limits::default()).await });
        let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let send = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == payload, "spliced bytes differ");
        let report = task.await.unwrap().unwrap();
        assert_eq!(report.a_to_b, payload.len() as u64);
        assert!(matches!(report.end, RelayEnd::Eof(Side::A)));
        drop(writer.await.unwrap());
        assert_eq!(pipes_in_use(), before, "pipes are released");
    }
}
