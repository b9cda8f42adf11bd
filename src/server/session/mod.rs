//! One client session, from the server's side: the admission checks at
//! connect, implicit TLS, then the [`driver`] that runs the sans-IO
//! `session::core` over the real connections.
//!
//! Commands go to the backend and replies come back verbatim, except for what
//! ftpgate must own: data-channel setup (`PASV`, `EPSV`, `PORT`, `EPRT`), which
//! ftpgate answers itself so every data connection runs through its own ports;
//! the transfer commands, whose final reply is held until the data relay has
//! delivered every byte; `ABOR`; and `FEAT`, filtered to what ftpgate carries.

pub mod control;
pub mod data;

mod backend;
mod driver;
mod throttle;
mod unwind;

use super::context::{SessionContext, SessionSlot, SharedStateDown};
use super::limits;
use crate::cluster::leases::Counted;
use crate::config::{ClientTlsMode, ListenerSettings};
use crate::metrics::{GaugeGuard, Metrics};
use crate::protocol::{codes, Reply};
use crate::session::core;
use crate::tls::stream::ClientStream;
use crate::tls::SessionAcceptors;
use control::ClientControl;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

/// Bound on any TLS handshake on a control connection.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs one client session to its end: admission, implicit TLS, then the
/// driver. Never panics on peer input; every exit path closes both control
/// connections and any data channel. `proxied` is the client's address from
/// a PROXY protocol header, if the listener takes one.
pub async fn run(
    client: TcpStream,
    listener: ListenerSettings,
    ctx: Arc<SessionContext>,
    id: u64,
    proxied: Option<SocketAddr>,
) {
    let mode = listener.tls;
    let Some(client_peer) = proxied.or_else(|| client.peer_addr().ok()) else { return };
    let Ok(client_local) = client.local_addr() else { return };
    // `user` is filled in at USER, so every later line of the session names it.
    let span = tracing::info_span!("session", id, client = %client_peer, user = tracing::field::Empty);
    async move {
        let _open = GaugeGuard::new(&ctx.metrics, |m| &m.sessions_open);
        let _running = ctx.sessions.enter();
        ctx.metrics.session_opened(listener.address, tls_label(mode));
        prepare_socket(&client);
        // One acceptor per session: its session cache binds data connections to
        // this control connection.
        let acceptor = match (mode, &ctx.client_tls) {
            (ClientTlsMode::Off, _) | (_, None) => None,
            (_, Some(t)) => match t.for_session() {
                Ok(a) => Some(a),
                Err(e) => {
                    warn!(target: "ftpgate::tls", error = %e, "cannot set up TLS for the session");
                    return;
                }
            },
        };
        let mut client = ClientControl::new(ClientStream::Plain(client));
        let address_slot = match admit(&ctx, client_peer.ip()).await {
            Ok(slot) => slot,
            Err(refusal) => return refuse(&ctx, &mut client, mode, refusal).await,
        };
        if mode == ClientTlsMode::Implicit && !implicit_tls(&ctx, &mut client, acceptor.as_ref()).await {
            return;
        }
        let config = core_config(&ctx, mode, acceptor.is_some(), client_peer, client_local);
        let proxy_from = listener.proxy_protocol.then(|| listener.proxy_from.clone());
        let mut session = driver::Driver::new(Arc::clone(&ctx), id, client, config, proxy_from, acceptor, address_slot);
        info!(target: "ftpgate::session", tls = ?mode, "session opened");
        let ran = unwind::CatchUnwind::new(session.run()).await;
        if let Err(panic) = ran {
            Metrics::inc(&ctx.metrics.session_panics);
            tracing::error!(target: "ftpgate::session", panic = %unwind::message(panic.as_ref()), "session failed with an internal error (a bug); closing it");
            session.after_panic().await;
        }
        debug!(target: "ftpgate::session", "session closed");
        info!(target: "ftpgate::session", "session ended");
    }
    .instrument(span)
    .await
}

fn tls_label(mode: ClientTlsMode) -> &'static str {
    match mode {
        ClientTlsMode::Off => "off",
        ClientTlsMode::Explicit => "explicit",
        ClientTlsMode::Required => "required",
        ClientTlsMode::Implicit => "implicit",
    }
}

fn prepare_socket(client: &TcpStream) {
    let _ = client.set_nodelay(true);
    // Clients send ABOR as urgent data (Python's ftplib sends the whole line
    // with MSG_OOB); inline delivery keeps that byte in the command stream
    // instead of losing the line's LF.
    let _ = socket2::SockRef::from(client).set_out_of_band_inline(true);
}

/// Why a connecting client is turned away before its greeting.
struct Refusal {
    /// The label in `ftpgate_sessions_refused_total{reason}`.
    reason: &'static str,
    /// What the client hears after "Service not available: ".
    why: String,
}

/// The checks at connect, in order: the policy's networks, a ban on the
/// address, then a slot under the per-address limit (IPv6 by prefix).
async fn admit(ctx: &SessionContext, ip: std::net::IpAddr) -> Result<SessionSlot<std::net::IpAddr>, Refusal> {
    let policy = ctx.policy();
    let cluster_down = || Refusal { reason: "cluster", why: "shared login state unreachable; try again later".into() };
    if let Err(d) = policy.admit(ip) {
        return Err(Refusal { reason: "policy", why: d.reason });
    }
    match ctx.banned_for(ip).await {
        Err(SharedStateDown) => return Err(cluster_down()),
        Ok(Some(left)) => {
            // Its login is refused before it can try.
            Metrics::inc(&ctx.metrics.logins_refused);
            let why = format!("too many failed logins from your address; try again in {} s", left.as_secs() + 1);
            return Err(Refusal { reason: "banned", why });
        }
        Ok(None) => {}
    }
    let per_address = limits::combined(ctx.settings.max_sessions_per_address, policy.login.max_sessions_per_address);
    match ctx.take_slot(&ctx.per_address, ctx.address_key(ip), Counted::Address, per_address).await {
        Ok(Some(slot)) => Ok(slot),
        Ok(None) => Err(Refusal {
            reason: "address_limit",
            why: format!("too many sessions from your address (limit {per_address})"),
        }),
        Err(SharedStateDown) => Err(cluster_down()),
    }
}

/// Counts and logs a refusal, tells the client why (`421`; implicit-TLS
/// clients expect a handshake first and get a plain close), and closes.
async fn refuse(ctx: &SessionContext, client: &mut ClientControl, mode: ClientTlsMode, r: Refusal) {
    ctx.metrics.count_denial("connect");
    ctx.metrics.session_refused(r.reason);
    info!(target: "ftpgate::audit", why = r.why, "connection refused");
    if mode != ClientTlsMode::Implicit {
        let _ = client.send(&Reply::single(codes::NOT_AVAILABLE, &format!("Service not available: {}", r.why))).await;
    }
    client.close_after_reply().await;
}

/// Implicit FTPS: the handshake comes before the greeting. `false`: it
/// failed (counted and logged) and the session ends.
async fn implicit_tls(ctx: &SessionContext, client: &mut ClientControl, acceptor: Option<&SessionAcceptors>) -> bool {
    let Some(acceptor) = acceptor else { return false };
    let started = Instant::now();
    let upgraded = client.upgrade(&acceptor.control, TLS_HANDSHAKE_TIMEOUT).await;
    ctx.metrics.latency.client_tls_handshake.observe(started.elapsed().as_secs_f64());
    if let Err(e) = upgraded {
        Metrics::inc(&ctx.metrics.tls_client_failures);
        warn!(target: "ftpgate::tls", error = %e, "implicit TLS handshake with client failed");
        return false;
    }
    Metrics::inc(&ctx.metrics.tls_client_control);
    ctx.metrics.tls_version("client_control", client.tls_version());
    true
}

/// The core's settings for one session, from the process settings.
fn core_config(
    ctx: &SessionContext,
    mode: ClientTlsMode,
    tls_offered: bool,
    client_peer: SocketAddr,
    client_local: SocketAddr,
) -> core::CoreConfig {
    let s = &ctx.settings;
    core::CoreConfig {
        mode,
        tls_offered,
        client_peer,
        client_local,
        public_address: s.public_address,
        banner: s.banner.clone(),
        idle: s.idle_control,
        login_timeout: s.login_timeout,
        backend_reply: s.backend_reply,
        data_connect: s.data_connect,
        client_cert_user_match: s.client_cert_user_match,
        max_bad_commands: s.max_bad_commands,
        max_bad_commands_after_login: s.max_bad_commands_after_login,
    }
}
