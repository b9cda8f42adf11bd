//! The socket under a TLS data connection, read through a buffer.
//!
//! rustls asks its transport for at most 4 KiB at a time (its deframer's
//! `READ_SIZE`), so a 16 KiB record costs four or more `read` calls; a
//! relay that moves a GiB makes a quarter of a million extra system calls
//! per direction. Under a data connection one 64 KiB read serves them all.
//! Control connections pass reads straight through and hold no buffer:
//! 64 KiB per idle session would be 640 MiB for ten thousand of them.
//! Writes always pass straight through, vectored where the socket is, so
//! rustls hands the kernel several records in one `writev`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much a data connection reads at once under TLS.
pub const DATA_READ_AHEAD: usize = 64 * 1024;

pub struct ReadAhead<T> {
    inner: T,
    /// Empty for a pass-through stream (no allocation).
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl<T> ReadAhead<T> {
    /// A data connection: reads of up to `DATA_READ_AHEAD` bytes.
    pub fn data(inner: T) -> ReadAhead<T> {
        ReadAhead { inner, buf: vec![0u8; DATA_READ_AHEAD].into_boxed_slice(), pos: 0, filled: 0 }
    }

    /// A control connection: every read goes to the socket as asked.
    pub fn passthrough(inner: T) -> ReadAhead<T> {
        ReadAhead { inner, buf: Box::default(), pos: 0, filled: 0 }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.filled {
            // Nothing buffered: a reader that asks for as much as the buffer
            // holds (or a pass-through stream) reads the socket directly.
            if this.buf.is_empty() || out.remaining() >= this.buf.len() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut into = ReadBuf::new(&mut this.buf);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            this.filled = into.filled().len();
            this.pos = 0;
        }
        let n = (this.filled - this.pos).min(out.remaining());
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_and_nothing_is_lost() {
        let (mut far, near) = tokio::io::duplex(256 * 1024);
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let send = payload.clone();
        let writer = tokio::spawn(async move {
            far.write_all(&send).await.unwrap();
            far.shutdown().await.unwrap();
        });
        let mut r = ReadAhead::data(near);
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, payload);
    }

    #[tokio::test]
    async fn passthrough_holds_no_buffer() {
        let (mut far, near) = tokio::io::duplex(1024);
        let mut r = ReadAhead::passthrough(near);
        assert!(r.buf.is_empty());
        far.write_all(b"220 hi\r\n").await.unwrap();
        let mut b = [0u8; 3];
        assert_eq!(r.read(&mut b).await.unwrap(), 3);
        assert_eq!(&b, b"220");
        let mut rest = [0u8; 16];
        assert_eq!(r.read(&mut rest).await.unwrap(), 5);
    }
}
