//! The two control connections of a session: commands in from the client,
//! replies in from the backend. Both reads are cancel-safe (all parse state lives
//! in the struct, and `read_buf` either reads or does not), so the session can
//! `select!` over them.

use crate::protocol::codec::CommandDecoder;
use crate::protocol::command::CommandError;
use crate::protocol::reply::{ReplyError, ReplyParser};
use crate::protocol::{Command, Reply};
use bytes::BytesMut;
use std::io;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read chunk for control connections; control traffic is small.
const CONTROL_READ: usize = 4096;

/// Reading a client control connection. Plain TCP needs care: a client that
/// sends `ABOR` as urgent data (Python's ftplib sends the whole line with
/// `MSG_OOB`) makes `recv` stop just before the urgent byte, and tokio's
/// `AsyncRead` treats that short read as "drained" and waits for a wake-up that
/// never comes. Reading with `readable()` + `try_read` keeps the readiness until
/// the socket really returns `WouldBlock`.
pub trait ControlRead {
    fn read_some(&mut self, buf: &mut BytesMut) -> impl std::future::Future<Output = io::Result<usize>> + Send;
}

impl ControlRead for tokio::net::tcp::OwnedReadHalf {
    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}

impl<T: AsyncRead + Unpin + Send> ControlRead for tokio::io::ReadHalf<T> {
    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.read_buf(buf).await
    }
}

pub struct ClientControl<R, W> {
    read: R,
    write: W,
    buf: BytesMut,
    decoder: CommandDecoder,
}

/// What came in on the client's control connection.
pub enum ClientEvent {
    Command(Command),
    /// A line ftpgate refused to parse; answered with 500, never forwarded.
    Invalid(CommandError),
    Closed,
}

impl<R: ControlRead, W: AsyncWrite + Unpin> ClientControl<R, W> {
    pub fn new(read: R, write: W) -> Self {
        ClientControl { read, write, buf: BytesMut::with_capacity(256), decoder: CommandDecoder::new() }
    }

    pub async fn next(&mut self) -> io::Result<ClientEvent> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Some(Ok(c)) => return Ok(ClientEvent::Command(c)),
                Some(Err(e)) => return Ok(ClientEvent::Invalid(e)),
                None => {}
            }
            self.buf.reserve(CONTROL_READ);
            let n = self.read.read_some(&mut self.buf).await?;
            tracing::trace!(n, buffered = self.buf.len(), "client control read");
            if n == 0 {
                return Ok(ClientEvent::Closed);
            }
        }
    }

    pub async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.write.write_all(&reply.raw).await?;
        self.write.flush().await
    }

    pub async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
    }
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("backend closed the control connection")]
    Closed,
    #[error("backend control connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("backend sent a malformed reply: {0}")]
    Malformed(#[from] ReplyError),
    #[error("backend did not reply within {0} s")]
    Timeout(u64),
}

pub struct BackendControl<R, W> {
    read: R,
    write: W,
    buf: BytesMut,
    parser: ReplyParser,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> BackendControl<R, W> {
    pub fn new(read: R, write: W) -> Self {
        BackendControl { read, write, buf: BytesMut::with_capacity(512), parser: ReplyParser::new() }
    }

    pub async fn next(&mut self) -> Result<Reply, BackendError> {
        loop {
            if let Some(r) = self.parser.parse(&mut self.buf)? {
                return Ok(r);
            }
            self.buf.reserve(CONTROL_READ);
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Err(BackendError::Closed);
            }
        }
    }

    /// The next reply, bounded by `timeout`.
    pub async fn next_within(&mut self, timeout: std::time::Duration) -> Result<Reply, BackendError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout(timeout.as_secs())),
        }
    }

    pub async fn send(&mut self, command: &Command) -> Result<(), BackendError> {
        self.write.write_all(&command.to_bytes()).await?;
        self.write.flush().await?;
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
    }
}
