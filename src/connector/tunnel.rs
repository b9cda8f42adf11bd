//! One HTTP/2 stream as a byte stream (`AsyncRead` + `AsyncWrite`), on both
//! ends of a connector link: the edge relays a backend control or data
//! connection through it, the connector copies it to the TCP connection it
//! opened. Half-close maps to `END_STREAM`; dropping a stream that has not
//! ended resets it (`RST_STREAM CANCEL`), which the other end sees as an
//! error, as a TCP reset would be.

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most a single write hands to h2 at once: flow control grants at most
/// the stream's window anyway; this keeps one write from reserving more.
const MAX_WRITE: usize = 256 * 1024;

/// Counts a link's open streams while it lives (least-streams balancing).
#[derive(Debug)]
pub struct StreamCount(Arc<AtomicUsize>);

impl StreamCount {
    pub fn new(counter: &Arc<AtomicUsize>) -> StreamCount {
        counter.fetch_add(1, Ordering::Relaxed);
        StreamCount(Arc::clone(counter))
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Tunnel {
    send: SendStream<Bytes>,
    /// Taken by a drop that lingers.
    recv: Option<RecvStream>,
    /// Received and not yet read.
    pending: Bytes,
    /// Where written bytes are copied for h2. Each write is split off as
    /// its own `Bytes`; once h2 has sent and dropped those, the next write
    /// reuses the same allocation instead of a fresh one per write (glibc
    /// returned and faulted in those pages again, a fifth of the CPU).
    outgoing: BytesMut,
    read_eof: bool,
    write_ended: bool,
    /// Open-stream gauges this stream counts in while it lives.
    _counts: Vec<StreamCount>,
    /// Bytes (received, sent), counted as they move, if wanted.
    bytes: Option<Arc<ByteCounts>>,
}

/// Bytes through a connector name's streams, both ways.
#[derive(Debug, Default)]
pub struct ByteCounts {
    pub received: std::sync::atomic::AtomicU64,
    pub sent: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").field("read_eof", &self.read_eof).field("write_ended", &self.write_ended).finish()
    }
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::Error::other("connector link failed"));
    }
    let kind = match e.reason() {
        Some(h2::Reason::CANCEL) | Some(h2::Reason::NO_ERROR) => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, format!("connector stream: {e}"))
}

impl Tunnel {
    pub fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        counts: Vec<StreamCount>,
        bytes: Option<Arc<ByteCounts>>,
    ) -> Tunnel {
        Tunnel {
            send,
            recv: Some(recv),
            pending: Bytes::new(),
            outgoing: BytesMut::new(),
            read_eof: false,
            write_ended: false,
            _counts: counts,
            bytes,
        }
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                if let Some(b) = &this.bytes {
                    b.received.fetch_add(n as u64, Ordering::Relaxed);
                }
                this.pending.advance(n);
                // The window opens again only for what was read: a reader that
                // stops holds the sender back, and memory stays bounded.
                if let Some(recv) = this.recv.as_mut() {
                    let _ = recv.flow_control().release_capacity(n);
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            let Some(recv) = this.recv.as_mut() else { return Poll::Ready(Ok(())) };
            match ready!(recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => this.read_eof = true,
            }
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write_ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.send.reserve_capacity(buf.len().min(MAX_WRITE));
        loop {
            let granted = this.send.capacity();
            if granted > 0 {
                let n = granted.min(buf.len());
                this.outgoing.reserve(n);
                this.outgoing.extend_from_slice(&buf[..n]);
                let chunk = this.outgoing.split().freeze();
                this.send.send_data(chunk, false).map_err(io_error)?;
                if let Some(b) = &this.bytes {
                    b.sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                return Poll::Ready(Ok(n));
            }
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2's connection task writes what was sent; nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !std::mem::replace(&mut this.write_ended, true) {
            this.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// How long a stream whose sending side ended is kept open to take the
/// other side's end, as a closed TCP socket lingers.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Tunnel {
    fn drop(&mut self) {
        if !self.write_ended {
            // Cut, not finished: the other end must not take it for an end
            // of file (a truncated upload would look complete).
            self.send.send_reset(h2::Reason::CANCEL);
            return;
        }
        if self.read_eof {
            return;
        }
        // This side said all it had to say (END_STREAM) and is done reading.
        // Dropping the stream now would reset it (h2 cancels a stream no one
        // holds), and a reset that overtakes the end of an upload makes the
        // far end cut the connection to the server before the server read
        // the last bytes. Like a closed TCP socket, take the rest and let go.
        let (Ok(runtime), Some(mut recv)) = (tokio::runtime::Handle::try_current(), self.recv.take()) else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                while let Some(Ok(data)) = std::future::poll_fn(|cx| recv.poll_data(cx)).await {
                    let _ = recv.flow_control().release_capacity(data.len());
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}
