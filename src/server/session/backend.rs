//! The backend control connection, from the driver's side: connected at
//! login (never before), with the PROXY header and implicit TLS as
//! configured, and taken to TLS when the core's `AUTH TLS` is accepted. The
//! greeting and the rest of the opening sequence are the core's.

use super::control::{BackendControl, BackendError};
use super::TLS_HANDSHAKE_TIMEOUT;
use crate::config::BackendTlsMode;
use crate::connector::Via;
use crate::metrics::Metrics;
use crate::protocol::{Command, Verb};
use crate::server::context::SessionContext;
use crate::server::{dial, pool};
use crate::session::core::BackendSecurity;
use crate::tls::stream::BackendStream;
use crate::tls::BackendSessionTls;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Opens a backend control connection (directly or through a connector)
/// within the connect timeout and, if configured, starts it with a PROXY
/// protocol header naming the client and the address it reached ftpgate at.
async fn connect_control(
    ctx: &SessionContext,
    address: &str,
    client: SocketAddr,
    local: SocketAddr,
) -> io::Result<dial::ControlConn> {
    let s = &ctx.settings;
    let connect = async {
        let mut opened = dial::control(&ctx.connectors, address).await?;
        if let Some(version) = s.backend_proxy_protocol {
            tokio::io::AsyncWriteExt::write_all(
                &mut opened.conn,
                &crate::proxy_protocol::encode(version, client, local),
            )
            .await?;
        }
        Ok(opened)
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
    /// How data connections reach the backend (as the control connection did).
    pub dialer: dial::Dialer,
    /// The connector the control connection goes through, if any.
    pub via: Option<Via>,
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
            dialer: dial::Dialer::Direct,
            via: None,
        }
    }

    /// Connects this session to the backend `name` (`None`: the default
    /// pool): TCP, the PROXY header, implicit TLS as configured; an earlier
    /// backend connection is closed. The greeting and explicit TLS are the
    /// core's (`session::core::backend`).
    pub async fn connect(
        &mut self,
        ctx: &SessionContext,
        name: Option<&str>,
        user: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<(SocketAddr, BackendSecurity), BackendError> {
        let pool = match name {
            Some(n) => ctx.named_backends.get(n),
            None => Some(&ctx.pool),
        };
        let Some(pool) = pool else { return Err(BackendError::Unreachable(format!("no backend named {name:?}"))) };
        let slot = pool.pick(user);
        let target = &pool.members[slot.index].target;
        let s = &ctx.settings;
        let started = Instant::now();
        let connected = connect_control(ctx, &target.address, client, local).await;
        Metrics::inc(&ctx.metrics.backend_connections);
        if connected.is_err() {
            pool.connect_failed(slot.index);
        }
        let opened = match connected {
            Ok(t) => {
                ctx.metrics.latency.backend_connect.observe(started.elapsed().as_secs_f64());
                t
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(BackendError::Unreachable("it did not accept the connection in time".into()))
            }
            Err(e) => return Err(BackendError::Unreachable(e.to_string())),
        };
        let peer = opened.peer;
        self.dialer = opened.dialer;
        self.via = opened.via;
        let mut old = std::mem::replace(&mut self.control, BackendControl::new(BackendStream::Plain(opened.conn)));
        if std::mem::replace(&mut self.open, true) {
            let _ = old.send(&Command::new(Verb::Quit, None)).await;
            old.shutdown().await;
        }
        self.dead = false;
        self.peer = Some(peer);
        self.tls = target.tls.as_ref().map(|t| t.for_session());
        self.slot = Some(slot);
        let security = match (&self.tls, s.backend_tls) {
            (None, _) => BackendSecurity::Plain,
            (Some(_), BackendTlsMode::Implicit) => {
                self.upgrade(ctx).await?;
                BackendSecurity::ImplicitTls
            }
            (Some(_), _) => BackendSecurity::ExplicitTls,
        };
        Ok((peer, security))
    }

    /// Takes the control connection to TLS (implicit FTPS at connect, or
    /// after the backend's `234`).
    pub async fn upgrade(&mut self, ctx: &SessionContext) -> Result<(), BackendError> {
        let Some(tls) = self.tls.clone() else { return Err(BackendError::Closed) };
        let started = Instant::now();
        self.control.upgrade(&tls, TLS_HANDSHAKE_TIMEOUT).await?;
        ctx.metrics.tls_version("backend_control", self.control.tls_version());
        ctx.metrics.latency.backend_tls_handshake.observe(started.elapsed().as_secs_f64());
        Ok(())
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
