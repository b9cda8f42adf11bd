//! A Redis connection's stream with a bound on what the peer may send: at
//! most [`SLACK`] bytes plus [`RATIO`] times what ftpgate wrote. ftpgate's
//! replies from Redis are small (integers, a ban list), so a peer at the
//! Redis address that answers endlessly or hugely (the parser would buffer
//! the whole reply) gets the connection cut with an error instead of
//! growing ftpgate's memory; the connection is then rebuilt as after any
//! outage.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes a peer may send beyond the ratio (a full ban list fits).
const SLACK: u64 = 4 << 20;
/// Bytes a peer may send per byte written.
const RATIO: u64 = 256;

pub struct Bounded<S> {
    inner: S,
    read: u64,
    written: u64,
}

impl<S> Bounded<S> {
    pub fn new(inner: S) -> Self {
        Bounded { inner, read: 0, written: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let allowed = SLACK.saturating_add(self.written.saturating_mul(RATIO));
        if self.read >= allowed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("Redis sent {} bytes for {} written; cut off", self.read, self.written),
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.read += n;
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.written += *n as u64;
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_endless_answer_is_cut_off() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut b = Bounded::new(ours);
        b.write_all(b"PING\r\n").await.unwrap();
        let feeder = tokio::spawn(async move {
            let chunk = vec![b'x'; 1 << 16];
            while theirs.write_all(&chunk).await.is_ok() {}
        });
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let err = loop {
            match b.read(&mut sink).await {
                Ok(n) => total += n as u64,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(total <= SLACK + 6 * RATIO + (1 << 16), "{total}");
        drop(b);
        let _ = feeder.await;
    }
}
