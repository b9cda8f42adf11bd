//! The backend probe: a short control session (greeting, `FEAT`, `QUIT`)
//! at start and after each reload, so `FEAT` before login can list what
//! ftpgate and the backend both support without a client's connection ever
//! reaching the backend.

use crate::config::BackendTlsMode;
use crate::protocol::{Command, Verb};
use crate::server::session::control::{BackendControl, BackendError};
use crate::server::SessionContext;
use crate::tls::stream::BackendStream;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

/// Bound on the TLS handshake of an implicit-FTPS probe.
const PROBE_TLS_TIMEOUT: Duration = Duration::from_secs(15);

/// Learns the default backend's `FEAT` into `ctx.backend_feat`. Failures are
/// logged and leave the cache as it was; sessions then offer ftpgate's own
/// features before login.
pub async fn learn_feat(ctx: Arc<SessionContext>) {
    match probe(&ctx).await {
        Ok(()) => debug!(target: "ftpgate::backend", backend = %ctx.backend.address, "backend features learnt"),
        Err(e) => warn!(target: "ftpgate::backend", backend = %ctx.backend.address, error = %e, "backend probe failed"),
    }
}

async fn probe(ctx: &SessionContext) -> Result<(), BackendError> {
    let s = &ctx.settings;
    let connect = crate::server::dial::control(&ctx.connectors, &ctx.backend.address);
    let mut opened = tokio::time::timeout(s.backend_connect, connect)
        .await
        .map_err(|_| BackendError::Timeout(s.backend_connect.as_secs()))??;
    if let Some(version) = s.backend_proxy_protocol {
        // The probe is ftpgate's own connection and says so.
        opened.conn.write_all(&crate::proxy_protocol::encode(version, opened.local, opened.peer)).await?;
    }
    let mut backend = BackendControl::new(BackendStream::Plain(opened.conn));
    if let (Some(tls), BackendTlsMode::Implicit) = (&ctx.backend.tls, s.backend_tls) {
        backend.upgrade(&tls.for_session(), PROBE_TLS_TIMEOUT).await?;
    }
    let greeting = loop {
        let r = backend.next_within(s.backend_reply).await?;
        if !r.is_preliminary() {
            break r;
        }
    };
    if greeting.code != crate::protocol::codes::READY {
        return Err(BackendError::Refused { command: "the probe", reply: greeting.text() });
    }
    backend.send(&Command::new(Verb::Feat, None)).await?;
    let feat = loop {
        let r = backend.next_within(s.backend_reply).await?;
        if !r.is_preliminary() {
            break r;
        }
    };
    ctx.backend_feat.set(&feat);
    let _ = backend.send(&Command::new(Verb::Quit, None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), backend.next()).await;
    backend.shutdown().await;
    Ok(())
}

/// Health checks of the backend pools (the default and the named ones), for
/// as long as the process runs: every `health_interval` each member must accept a
/// connection and greet with `220` (implicit-TLS backends: accept) within
/// the connect timeout; one that fails gets no new sessions until it passes.
pub async fn health_checks(live: Arc<crate::server::LiveContext>) {
    loop {
        let ctx = Arc::clone(&live.borrow());
        let s = &ctx.settings;
        let members = ctx.pools().flat_map(|p| (0..p.members.len()).map(move |i| (Arc::clone(p), i)));
        let checks = members.map(|(pool, i)| {
            let ctx = Arc::clone(&ctx);
            let address = pool.members[i].target.address.clone();
            async move {
                let up = greets(&ctx, &address).await;
                if up != pool.is_healthy(i) {
                    if up {
                        tracing::info!(target: "ftpgate::backend", backend = %address, "backend passes its health check again");
                    } else {
                        warn!(target: "ftpgate::backend", backend = %address, "backend failed its health check; no new sessions go there");
                    }
                }
                pool.set_healthy(i, up);
            }
        });
        for c in checks {
            c.await;
        }
        // A connector that dials in is checked at once (and the backend's
        // FEAT learnt through it), not at the next interval.
        let joined = tokio::select! {
            () = tokio::time::sleep(s.health_interval) => false,
            () = ctx.connectors.joined() => true,
        };
        if joined {
            learn_feat(Arc::clone(&ctx)).await;
        }
    }
}

async fn greets(ctx: &SessionContext, address: &str) -> bool {
    let s = &ctx.settings;
    let check = async {
        let mut opened = crate::server::dial::control(&ctx.connectors, address).await.ok()?;
        if let Some(version) = s.backend_proxy_protocol {
            opened.conn.write_all(&crate::proxy_protocol::encode(version, opened.local, opened.peer)).await.ok()?;
        }
        if s.backend_tls == BackendTlsMode::Implicit {
            return Some(());
        }
        let mut backend = BackendControl::new(BackendStream::Plain(opened.conn));
        let greeting = backend.next().await.ok()?;
        let _ = backend.send(&Command::new(Verb::Quit, None)).await;
        backend.shutdown().await;
        (greeting.code == crate::protocol::codes::READY).then_some(())
    };
    tokio::time::timeout(s.backend_connect, check).await.ok().flatten().is_some()
}
