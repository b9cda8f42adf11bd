//! The backend control connection, from the driver's side: opened at login
//! (never before), greeted, secured as configured (implicit FTPS, or
//! ftpgate's own `AUTH TLS`/`PBSZ 0`/`PROT P`, hidden from the client), and
//! told what the client said before login. None of this reaches the client:
//! ftpgate greets it itself.

use super::control::{BackendControl, BackendError};
use super::TLS_HANDSHAKE_TIMEOUT;
use crate::config::{BackendTlsMode, Settings};
use crate::metrics::Metrics;
use crate::protocol::{codes, Command, Verb};
use crate::server::context::SessionContext;
use crate::server::pool;
use crate::tls::stream::BackendStream;
use crate::tls::BackendSessionTls;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tracing::{debug, info};

/// Opens a backend control connection within the connect timeout and, if
/// configured, starts it with a PROXY protocol header naming the client and
/// the address it reached ftpgate at.
async fn connect_control(s: &Settings, address: &str, client: SocketAddr, local: SocketAddr) -> io::Result<TcpStream> {
    let connect = async {
        let mut tcp = TcpStream::connect(address).await?;
        if let Some(version) = s.backend_proxy_protocol {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &crate::proxy_protocol::encode(version, client, local))
                .await?;
        }
        Ok(tcp)
    };
    tokio::time::timeout(s.backend_connect, connect).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// The session's backend control connection and what belongs to it.
pub(super) struct BackendSide {
    pub control: BackendControl,
    /// Detached until the backend is opened at login.
    pub open: bool,
    /// A read or write failed; the core has been told.
    pub dead: bool,
    pub peer: Option<SocketAddr>,
    /// This session's TLS client config towards the backend.
    pub tls: Option<BackendSessionTls>,
    /// The pool member this session's backend connection is on.
    pub slot: Option<pool::PoolSlot>,
}

impl BackendSide {
    pub fn detached() -> BackendSide {
        BackendSide {
            control: BackendControl::new(BackendStream::Detached),
            open: false,
            dead: false,
            peer: None,
            tls: None,
            slot: None,
        }
    }

    /// Moves this session to the backend `name` (`None`: the default pool):
    /// connect, TLS as configured, greeting, `replay`; an earlier backend
    /// connection is closed. Returns the new control connection's peer.
    pub async fn switch(
        &mut self,
        ctx: &SessionContext,
        name: Option<&str>,
        user: &str,
        replay: Vec<Command>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<SocketAddr, BackendError> {
        let pool = match name {
            Some(n) => ctx.named_backends.get(n),
            None => Some(&ctx.pool),
        };
        let Some(pool) = pool else { return Err(BackendError::Unreachable(format!("no backend named {name:?}"))) };
        let slot = pool.pick(user);
        let target = &pool.members[slot.index].target;
        let s = &ctx.settings;
        let started = Instant::now();
        let connected = connect_control(s, &target.address, client, local).await;
        Metrics::inc(&ctx.metrics.backend_connections);
        if connected.is_err() {
            pool.connect_failed(slot.index);
        }
        let tcp = match connected {
            Ok(t) => {
                ctx.metrics.latency.backend_connect.observe(started.elapsed().as_secs_f64());
                t
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(BackendError::Unreachable("it did not accept the connection in time".into()))
            }
            Err(e) => return Err(BackendError::Unreachable(e.to_string())),
        };
        let peer = tcp.peer_addr()?;
        let _ = tcp.set_nodelay(true);
        let mut old = std::mem::replace(&mut self.control, BackendControl::new(BackendStream::Plain(tcp)));
        if std::mem::replace(&mut self.open, true) {
            let _ = old.send(&Command::new(Verb::Quit, None)).await;
            old.shutdown().await;
        }
        self.peer = Some(peer);
        self.tls = target.tls.as_ref().map(|t| t.for_session());
        self.slot = Some(slot);
        self.greet(ctx).await?;
        for cmd in replay {
            self.control.send(&cmd).await?;
            let r = self.final_reply(s.backend_reply).await?;
            debug!(command = %cmd.verb, code = r.code, "replayed to the backend");
        }
        info!(backend = %peer, name = name.unwrap_or("default"), "backend control connection open");
        Ok(peer)
    }

    /// Takes a fresh connection to where commands can flow: implicit TLS, the
    /// greeting, explicit TLS. A refusing greeting (`421`, or anything but
    /// `220` after any `120`) ends the session with `421` and the reason.
    async fn greet(&mut self, ctx: &SessionContext) -> Result<(), BackendError> {
        let s = &ctx.settings;
        if let (Some(tls), BackendTlsMode::Implicit) = (&self.tls, s.backend_tls) {
            let started = Instant::now();
            self.control.upgrade(tls, TLS_HANDSHAKE_TIMEOUT).await?;
            ctx.metrics.tls_version("backend_control", self.control.tls_version());
            ctx.metrics.latency.backend_tls_handshake.observe(started.elapsed().as_secs_f64());
        }
        loop {
            let greeting = self.control.next_within(s.backend_reply).await?;
            if greeting.code == codes::READY {
                return self.secure(ctx).await;
            }
            if !greeting.is_preliminary() {
                return Err(BackendError::Refused { command: "a session", reply: greeting.text() });
            }
        }
    }

    /// Explicit FTPS towards the backend, on ftpgate's own initiative and
    /// hidden from the client: `AUTH TLS`, handshake, `PBSZ 0`, `PROT P`.
    async fn secure(&mut self, ctx: &SessionContext) -> Result<(), BackendError> {
        let Some(tls) = self.tls.clone() else { return Ok(()) };
        let t = ctx.settings.backend_reply;
        if !self.control.is_tls() {
            self.control.exchange(&Command::new(Verb::Auth, Some(b"TLS")), 234, t).await?;
            let started = Instant::now();
            self.control.upgrade(&tls, TLS_HANDSHAKE_TIMEOUT).await?;
            ctx.metrics.tls_version("backend_control", self.control.tls_version());
            ctx.metrics.latency.backend_tls_handshake.observe(started.elapsed().as_secs_f64());
        }
        self.control.exchange(&Command::new(Verb::Pbsz, Some(b"0")), 200, t).await?;
        self.control.exchange(&Command::new(Verb::Prot, Some(b"P")), 200, t).await?;
        debug!("backend control connection secured");
        Ok(())
    }

    async fn final_reply(&mut self, timeout: Duration) -> Result<crate::protocol::Reply, BackendError> {
        loop {
            let r = self.control.next_within(timeout).await?;
            if !r.is_preliminary() {
                return Ok(r);
            }
        }
    }

    /// Ends the backend session politely (so it frees the login at once).
    pub async fn close(&mut self, quit: bool) {
        let quit = quit && self.open && !self.dead;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if quit {
                let _ = self.control.send(&Command::new(Verb::Quit, None)).await;
            }
            self.control.shutdown().await;
        })
        .await;
    }
}
