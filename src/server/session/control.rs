//! The two control connections of a session: commands in from the client,
//! replies in from the backend. Both reads are cancel-safe (all parse state lives
//! in the struct, and a read either happens or not), so the session can
//! `select!` over them. Both can switch to TLS mid-stream (`AUTH TLS`).

use crate::protocol::codec::CommandDecoder;
use crate::protocol::command::CommandError;
use crate::protocol::reply::{ReplyError, ReplyParser};
use crate::protocol::{Command, Reply};
use crate::tls::stream::{BackendStream, ClientStream, ReadAhead};
use crate::tls::BackendSessionTls;
use bytes::BytesMut;
use std::io;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

/// Read chunk for control connections; control traffic is small.
const CONTROL_READ: usize = 4096;

impl ClientStream {
    /// Plain TCP needs care: a client that sends `ABOR` as urgent data (Python's
    /// ftplib sends the whole line with `MSG_OOB`) makes `recv` stop just before
    /// the urgent byte, and tokio's `AsyncRead` treats that short read as
    /// "drained" and waits for a wake-up that never comes. `readable()` +
    /// `try_read` keeps the readiness until the socket really says `WouldBlock`.
    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => loop {
                s.readable().await?;
                match s.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            other => other.read_buf(buf).await,
        }
    }
}

#[derive(Debug, Error)]
pub enum UpgradeError {
    #[error("plaintext arrived after AUTH before the TLS handshake (possible command injection)")]
    PlaintextAfterAuth,
    #[error("the connection already uses TLS")]
    AlreadyTls,
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("TLS handshake did not finish within {0} s")]
    Timeout(u64),
}

pub struct ClientControl {
    stream: ClientStream,
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

impl ClientControl {
    pub fn new(stream: ClientStream) -> Self {
        ClientControl { stream, buf: BytesMut::with_capacity(256), decoder: CommandDecoder::new() }
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The TLS version in force, as a metric label.
    pub fn tls_version(&self) -> Option<&'static str> {
        match &self.stream {
            ClientStream::Tls(t) => Some(crate::tls::version_label(t.get_ref().1)),
            _ => None,
        }
    }

    /// The verified client certificate chain, if mutual TLS is on.
    pub fn peer_certificates(&self) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
        match &self.stream {
            ClientStream::Tls(t) => t.get_ref().1.peer_certificates().map(|c| c.to_vec()),
            _ => None,
        }
    }

    pub async fn next(&mut self) -> io::Result<ClientEvent> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Some(Ok(c)) => return Ok(ClientEvent::Command(c)),
                Some(Err(e)) => return Ok(ClientEvent::Invalid(e)),
                None => {}
            }
            self.buf.reserve(CONTROL_READ);
            if self.stream.read_some(&mut self.buf).await? == 0 {
                return Ok(ClientEvent::Closed);
            }
        }
    }

    pub async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.stream.write_all(&reply.raw).await?;
        self.stream.flush().await
    }

    /// True if the client sent bytes ftpgate has not handled yet.
    pub fn has_pending_input(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Switches to TLS after `234` was sent. Anything the client pipelined
    /// after `AUTH` must be refused: it was sent in the clear and would otherwise
    /// be obeyed as if it came over TLS.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor, timeout: Duration) -> Result<(), UpgradeError> {
        if !self.buf.is_empty() {
            return Err(UpgradeError::PlaintextAfterAuth);
        }
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Detached) else {
            return Err(UpgradeError::AlreadyTls);
        };
        let tls = tokio::time::timeout(timeout, acceptor.accept(ReadAhead::passthrough(tcp)))
            .await
            .map_err(|_| UpgradeError::Timeout(timeout.as_secs()))?
            .map_err(UpgradeError::Handshake)?;
        self.stream = ClientStream::Tls(Box::new(tls));
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Ends the connection so that the last reply (`421`, `221`) is heard:
    /// closing a socket with unread input sends a TCP reset, and a client
    /// still sending would lose the reply with it. So: FIN after the reply,
    /// then what the client still sends is read and dropped, bounded in
    /// bytes and time, until its own end.
    pub async fn close_after_reply(&mut self) {
        self.shutdown().await;
        self.buf.clear();
        let drain = async {
            let mut dropped = 0;
            while dropped < CLOSE_DRAIN_BYTES {
                self.buf.clear();
                self.buf.reserve(CONTROL_READ);
                // A client that has gone quiet is not waited for.
                match tokio::time::timeout(CLOSE_QUIET, self.stream.read_some(&mut self.buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => dropped += n,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_DRAIN_TIME, drain).await;
        self.buf = BytesMut::new();
    }
}

/// How long and how much a closing connection's input is drained.
const CLOSE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);
const CLOSE_DRAIN_BYTES: usize = 256 * 1024;
/// A closing client that sends nothing for this long is not waited for.
const CLOSE_QUIET: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum BackendError {
    /// The control connection could not be opened (at login).
    #[error("backend unreachable ({0})")]
    Unreachable(String),
    #[error("backend closed the control connection")]
    Closed,
    #[error("backend control connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("backend sent a malformed reply: {0}")]
    Malformed(#[from] ReplyError),
    #[error("backend did not reply within {0} s")]
    Timeout(u64),
    #[error("backend TLS: {0}")]
    Tls(#[from] UpgradeError),
    #[error("backend refused {command}: {reply}")]
    Refused { command: &'static str, reply: String },
}

/// What the session core is told of a backend failure.
impl From<BackendError> for crate::session::core::BackendFailure {
    fn from(e: BackendError) -> Self {
        use crate::session::core::BackendFailure as F;
        match e {
            BackendError::Unreachable(why) => F::Unreachable(why),
            BackendError::Closed => F::Closed,
            BackendError::Io(e) => F::Io(e.to_string()),
            BackendError::Malformed(e) => F::Malformed(e.to_string()),
            BackendError::Timeout(secs) => F::Timeout { secs },
            BackendError::Tls(e) => F::Tls(e.to_string()),
            BackendError::Refused { command, reply } => F::Refused { command: command.to_string(), reply },
        }
    }
}

pub struct BackendControl {
    stream: BackendStream,
    buf: BytesMut,
    parser: ReplyParser,
}

impl BackendControl {
    pub fn new(stream: BackendStream) -> Self {
        BackendControl { stream, buf: BytesMut::with_capacity(512), parser: ReplyParser::new() }
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The TLS version in force, as a metric label.
    pub fn tls_version(&self) -> Option<&'static str> {
        match &self.stream {
            BackendStream::Tls(t) => Some(crate::tls::version_label(t.get_ref().1)),
            _ => None,
        }
    }

    pub async fn next(&mut self) -> Result<Reply, BackendError> {
        loop {
            if let Some(r) = self.parser.parse(&mut self.buf)? {
                return Ok(r);
            }
            self.buf.reserve(CONTROL_READ);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(BackendError::Closed);
            }
        }
    }

    /// The next reply, bounded by `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Reply, BackendError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout(timeout.as_secs())),
        }
    }

    pub async fn send(&mut self, command: &Command) -> Result<(), BackendError> {
        self.stream.write_all(&command.to_bytes()).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends a command ftpgate issues on its own and checks the reply code.
    pub async fn exchange(&mut self, command: &Command, want: u16, timeout: Duration) -> Result<Reply, BackendError> {
        self.send(command).await?;
        let r = self.next_within(timeout).await?;
        if r.code != want {
            let verb = match command.verb.as_str() {
                "AUTH" => "AUTH TLS",
                "PBSZ" => "PBSZ 0",
                "PROT" => "PROT P",
                _ => "a command",
            };
            return Err(BackendError::Refused { command: verb, reply: r.text() });
        }
        Ok(r)
    }

    /// Starts TLS on the control connection (after `234`, or at once for
    /// implicit FTPS).
    pub async fn upgrade(&mut self, tls: &BackendSessionTls, timeout: Duration) -> Result<(), BackendError> {
        if !self.buf.is_empty() {
            return Err(UpgradeError::PlaintextAfterAuth.into());
        }
        let BackendStream::Plain(tcp) = std::mem::replace(&mut self.stream, BackendStream::Detached) else {
            return Err(UpgradeError::AlreadyTls.into());
        };
        let stream =
            tokio::time::timeout(timeout, tls.connector.connect(tls.server_name.clone(), ReadAhead::passthrough(tcp)))
                .await
                .map_err(|_| UpgradeError::Timeout(timeout.as_secs()))?
                .map_err(UpgradeError::Handshake)?;
        let conn = stream.get_ref().1;
        tracing::debug!(target: "ftpgate::tls", version = ?conn.protocol_version(), cipher = ?conn.negotiated_cipher_suite().map(|c| c.suite()), "backend control TLS up");
        self.stream = BackendStream::Tls(Box::new(stream));
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
