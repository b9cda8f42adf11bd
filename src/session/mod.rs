//! One client session: the control-channel state machine between a client and
//! its backend, and the data channels it opens.
//!
//! Commands go to the backend and replies come back verbatim, except for what
//! ftpgate must own: data-channel setup (`PASV`, `EPSV`, `PORT`, `EPRT`), which
//! ftpgate answers itself so every data connection runs through its own ports;
//! the transfer commands, whose final reply is held until the data relay has
//! delivered every byte; `ABOR`; and `FEAT`, filtered to what ftpgate carries.

pub mod active;
pub mod control;
pub mod data;
pub mod feat;
pub mod limits;
pub mod pool;
pub mod prelogin;
pub mod registry;

mod context;
mod gate;
mod login;
mod security;
mod setup;
mod throttle;
mod transfer;
mod verdict;

pub use context::{BackendTarget, ContextError, Lifecycle, LiveContext, SessionContext};
use context::{SessionSlot, SharedStateDown};
use setup::DataSetup;

use crate::cluster::leases::Counted;
use crate::config::{BackendTlsMode, ClientTlsMode, ListenerSettings, Settings};
use crate::metrics::{GaugeGuard, Metrics};
use crate::passive;
use crate::policy::bans::LoginGuard;
use crate::policy::{Denial, Policy, PolicyError, SessionView, Verdict};
use crate::protocol::address;
use crate::protocol::command::TransferDirection;
use crate::protocol::{Command, Reply, Verb};
use crate::relay::RelayEnd;
use crate::tls::stream::{BackendStream, ClientStream};
use crate::tls::{BackendSessionTls, BackendTls, ServerTls, SessionAcceptors, TlsError};
use control::{BackendControl, BackendError, ClientControl, ClientEvent};
use data::{DataChannel, DataOutcome, DataTls};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

/// Commands a client may pipeline during a transfer before ftpgate stops
/// reading from it; they run, in order, once the transfer ends.
const MAX_QUEUED_COMMANDS: usize = 16;

/// Bound on any TLS handshake on a control connection.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
enum SessionError {
    #[error("client control connection: {0}")]
    Client(io::Error),
    /// The drain deadline passed; the client has been told.
    #[error("drain deadline reached")]
    DrainDeadline,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

type SessionResult<T> = Result<T, SessionError>;

enum Flow {
    Continue,
    Close,
}

/// What waits in the session's queue: commands the client pipelined during a
/// transfer, and replies that must follow them (an `ABOR`'s, which RFC 959
/// puts after the transfer's final reply and after every command sent before
/// it), so every command gets its reply in the order it was sent.
enum Queued {
    Event(ClientEvent),
    Reply(Reply),
}

/// Resolves once the drain deadline has passed.
async fn drain_deadline(closing: &tokio::sync::watch::Sender<Lifecycle>) {
    let mut rx = closing.subscribe();
    let _ = rx.wait_for(|l| *l == Lifecycle::DrainDeadline).await;
}

/// Runs one client session to its end. Never panics on peer input; every exit
/// path closes both control connections and any data channel.
/// `proxied` is the client's address from a PROXY protocol header, if the
/// listener takes one.
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
        let tls_label = match mode {
            ClientTlsMode::Off => "off",
            ClientTlsMode::Explicit => "explicit",
            ClientTlsMode::Required => "required",
            ClientTlsMode::Implicit => "implicit",
        };
        ctx.metrics.session_opened(listener.address, tls_label);
        let _ = client.set_nodelay(true);
        // Clients send ABOR as urgent data (Python's ftplib sends the whole line
        // with MSG_OOB); inline delivery keeps that byte in the command stream
        // instead of losing the line's LF.
        let _ = socket2::SockRef::from(&client).set_out_of_band_inline(true);
        // One acceptor per session: its session cache binds data connections to
        // this control connection.
        let acceptor = match (mode, &ctx.client_tls) {
            (ClientTlsMode::Off, _) | (_, None) => None,
            (_, Some(t)) => match t.for_session() {
                Ok(a) => Some(a),
                Err(e) => {
                    warn!(error = %e, "cannot set up TLS for the session");
                    return;
                }
            },
        };
        let mut client = ClientControl::new(ClientStream::Plain(client));
        let policy = ctx.policy();
        let per_address =
            limits::combined(ctx.settings.max_sessions_per_address, policy.login.max_sessions_per_address);
        let ip = client_peer.ip();
        let (refusal, reason, address_slot) = match (policy.admit(ip), ctx.banned_for(ip).await) {
            (Err(d), _) => (Some(d.reason), "policy", None),
            (Ok(_), Err(SharedStateDown)) => {
                (Some("shared login state unreachable; try again later".to_string()), "cluster", None)
            }
            (Ok(_), Ok(Some(left))) => {
                // Its login is refused before it can try.
                Metrics::inc(&ctx.metrics.logins_refused);
                let why = format!("too many failed logins from your address; try again in {} s", left.as_secs() + 1);
                (Some(why), "banned", None)
            }
            (Ok(_), Ok(None)) => {
                match ctx.take_slot(&ctx.per_address, ip.to_canonical(), Counted::Address, per_address).await {
                    Ok(slot) => (None, "address_limit", slot),
                    Err(SharedStateDown) => {
                        (Some("shared login state unreachable; try again later".to_string()), "cluster", None)
                    }
                }
            }
        };
        let Some(address_slot) = address_slot else {
            let why = refusal.unwrap_or_else(|| format!("too many sessions from your address (limit {per_address})"));
            ctx.metrics.count_denial("connect");
            ctx.metrics.session_refused(reason);
            info!(target: "ftpgate::audit", why, "connection refused");
            // Implicit-TLS clients expect a handshake first; they get a plain close.
            if mode != ClientTlsMode::Implicit {
                let _ = client.send(&Reply::single(421, &format!("Service not available: {why}"))).await;
            }
            client.shutdown().await;
            return;
        };
        if mode == ClientTlsMode::Implicit {
            let Some(acceptor) = &acceptor else { return };
            let started = Instant::now();
            let upgraded = client.upgrade(&acceptor.control, TLS_HANDSHAKE_TIMEOUT).await;
            ctx.metrics.latency.client_tls_handshake.observe(started.elapsed().as_secs_f64());
            if let Err(e) = upgraded {
                Metrics::inc(&ctx.metrics.tls_client_failures);
                warn!(error = %e, "implicit TLS handshake with client failed");
                return;
            }
            Metrics::inc(&ctx.metrics.tls_client_control);
            ctx.metrics.tls_version("client_control", client.tls_version());
        }
        let mut session = Session {
            ctx: Arc::clone(&ctx),
            client,
            // Opened at login (see `prelogin`).
            backend: BackendControl::new(BackendStream::Detached),
            backend_open: false,
            replay: Vec::new(),
            login_deadline: tokio::time::Instant::now() + ctx.settings.login_timeout,
            client_peer,
            client_local,
            backend_peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            mode,
            proxy_protocol: listener.proxy_protocol,
            acceptor,
            pbsz: false,
            prot_private: false,
            backend_tls: ctx.backend.tls.as_ref().map(|t| t.for_session()),
            backend_name: None,
            bastion_pending: None,
            data: None,
            backend_epsv: true,
            epsv_all: false,
            logged_in: false,
            rest_pending: false,
            queued: VecDeque::new(),
            transferring: false,
            uploaded: Default::default(),
            who: ctx.registry.register(id, client_peer),
            pool_slot: None,
            backend_quit: false,
            binary: false,
            user: None,
            cwd: b"/".to_vec(),
            previous: None,
            _address_slot: address_slot,
            user_slot: None,
        };
        info!(tls = ?mode, "session opened");
        let banner = format!("{} ", ctx.settings.banner);
        let served = tokio::select! {
            r = async {
                session.reply_text(220, banner.trim_end()).await?;
                session.serve().await
            } => r,
            () = drain_deadline(&ctx.closing) => Err(SessionError::DrainDeadline),
        };
        match served {
            Ok(()) => debug!("session closed"),
            Err(SessionError::DrainDeadline) => {
                // Dropping `serve` dropped any data channel with it; a client
                // whose transfer was cut must not wait for a 226 that cannot come.
                if session.transferring {
                    let _ = session.reply_text(426, "Transfer aborted: ftpgate is shutting down").await;
                }
                let _ = session.reply_text(421, "Service shutting down; please reconnect later").await;
                info!("session closed at the drain deadline");
            }
            Err(SessionError::Client(e)) => debug!(error = %e, "client control connection lost"),
            Err(SessionError::Backend(e)) => {
                ctx.metrics.backend_error(e.kind());
                warn!(error = %e, "closing session: backend failed");
                let _ = session.client.send(&Reply::single(421, &format!("Service not available: {e}"))).await;
            }
        }
        session.close().await;
        info!("session ended");
    }
    .instrument(span)
    .await
}

struct Session {
    ctx: Arc<SessionContext>,
    client: ClientControl,
    /// Detached until the backend is opened at login.
    backend: BackendControl,
    backend_open: bool,
    /// Said before login and replayed to the backend once it is open.
    replay: Vec<Command>,
    /// A client not logged in by then gets 421.
    login_deadline: tokio::time::Instant,
    client_peer: SocketAddr,
    client_local: SocketAddr,
    backend_peer: SocketAddr,
    /// The listener's TLS mode.
    mode: ClientTlsMode,
    /// Data connections, like control ones, start with a PROXY protocol header.
    proxy_protocol: bool,
    /// This session's TLS server configs (control and data), if TLS is offered.
    acceptor: Option<SessionAcceptors>,
    /// `PBSZ` done on a TLS control connection (RFC 4217 order: AUTH, PBSZ, PROT).
    pbsz: bool,
    /// `PROT P`: client data connections are TLS.
    prot_private: bool,
    /// This session's TLS client config towards the backend.
    backend_tls: Option<BackendSessionTls>,
    /// The named backend this session is connected to; `None`: the default.
    backend_name: Option<String>,
    /// A bastion user sent USER; PASS is checked by ftpgate.
    bastion_pending: Option<String>,
    data: Option<DataSetup>,
    /// Cleared once the backend refuses EPSV; PASV is used from then on.
    backend_epsv: bool,
    /// The client sent `EPSV ALL` (RFC 2428): refuse every other setup command.
    epsv_all: bool,
    logged_in: bool,
    /// The backend holds a REST offset for the next transfer.
    rest_pending: bool,
    queued: VecDeque<Queued>,
    /// A transfer's data channel is open: its client is owed a final reply.
    transferring: bool,
    /// The pool member this session's backend connection is on.
    pool_slot: Option<pool::PoolSlot>,
    /// This session's line in `ftpgate who` and `/status`.
    who: registry::Registration,
    /// Bytes uploaded per file in this session, for `max_upload_size`.
    uploaded: std::collections::HashMap<Vec<u8>, u64>,
    /// QUIT already went to the backend.
    backend_quit: bool,
    /// TYPE I (or L 8) in force, for the transfer log.
    binary: bool,
    /// The name given with USER.
    user: Option<String>,
    /// Working directory as the backend reports it (PWD after login and CWD).
    cwd: Vec<u8>,
    /// Verb of the last command the policy allowed.
    previous: Option<Verb>,
    _address_slot: SessionSlot<IpAddr>,
    /// Held from a successful login on, for the per-user session limit.
    user_slot: Option<SessionSlot<String>>,
}

impl Session {
    fn settings(&self) -> &Settings {
        &self.ctx.settings
    }

    async fn reply(&mut self, reply: &Reply) -> SessionResult<()> {
        self.client.send(reply).await.map_err(SessionError::Client)
    }

    async fn reply_text(&mut self, code: u16, text: &str) -> SessionResult<()> {
        self.reply(&Reply::single(code, text)).await
    }

    async fn serve(&mut self) -> SessionResult<()> {
        loop {
            let event = match self.queued.pop_front() {
                Some(Queued::Event(e)) => e,
                Some(Queued::Reply(r)) => {
                    self.reply(&r).await?;
                    continue;
                }
                None => {
                    let idle = self.settings().idle_control;
                    let mut closing = self.ctx.closing.subscribe();
                    tokio::select! {
                        e = self.client.next() => e.map_err(SessionError::Client)?,
                        // Draining: sessions between commands close now, those in a
                        // transfer finish it first and close when they get here.
                        () = async { let _ = closing.wait_for(|c| *c != Lifecycle::Serving).await; } => {
                            self.reply_text(421, "Service shutting down; please reconnect later").await?;
                            return Ok(());
                        }
                        r = self.backend.next(), if self.backend_open => {
                            // Unsolicited: typically the backend's own idle-timeout 421.
                            let r = r?;
                            self.reply(&r).await?;
                            if r.code == 421 {
                                return Ok(());
                            }
                            continue;
                        }
                        () = tokio::time::sleep_until(self.login_deadline), if !self.logged_in => {
                            self.ctx.metrics.session_refused("login_timeout");
                            info!(target: "ftpgate::audit", "no login within the login timeout");
                            let secs = self.settings().login_timeout.as_secs();
                            self.reply_text(421, &format!("Login timeout ({secs} s): log in sooner; closing control connection")).await?;
                            return Ok(());
                        }
                        () = tokio::time::sleep(idle) => {
                            self.reply_text(421, &format!("Idle timeout ({} s); closing control connection", idle.as_secs())).await?;
                            return Ok(());
                        }
                    }
                }
            };
            if let Flow::Close = self.handle(event).await? {
                return Ok(());
            }
        }
    }

    async fn handle(&mut self, event: ClientEvent) -> SessionResult<Flow> {
        let cmd = match event {
            ClientEvent::Closed => return Ok(Flow::Close),
            ClientEvent::Invalid(e) => {
                Metrics::inc(&self.ctx.metrics.commands_rejected);
                self.ctx.metrics.count_command("OTHER", "invalid");
                warn!(error = %e, "refused command line");
                self.reply_text(500, &format!("Syntax error: {e}; command refused")).await?;
                return Ok(Flow::Continue);
            }
            ClientEvent::Command(c) => c,
        };
        debug!(command = %cmd, "client command");
        self.who.entry.command();
        if self.mode == ClientTlsMode::Required
            && !self.client.is_tls()
            && !crate::protocol::command::ALLOWED_BEFORE_TLS.contains(&cmd.verb.as_str())
        {
            let text = format!("TLS required on this listener: send AUTH TLS before {}", cmd.verb);
            self.reply_text(530, &text).await?;
            return Ok(Flow::Continue);
        }
        match self.check_policy(&cmd).await? {
            Some(flow) => {
                self.ctx.metrics.count_command(cmd.verb.as_str(), "denied");
                return Ok(flow);
            }
            None => self.ctx.metrics.count_command(cmd.verb.as_str(), "allowed"),
        }
        if !self.backend_open {
            if let Some(flow) = self.before_backend(&cmd).await? {
                return Ok(flow);
            }
        }
        self.previous = Some(cmd.verb.clone());
        match cmd.verb.clone() {
            Verb::Pasv | Verb::Epsv => self.passive(&cmd).await?,
            Verb::Port | Verb::Eprt => self.active(&cmd).await?,
            v if v.transfer_direction().is_some() => {
                let direction = v.transfer_direction().unwrap_or(TransferDirection::Download);
                self.transfer(&cmd, direction).await?
            }
            Verb::Feat => {
                self.backend.send(&cmd).await?;
                let r = self.final_reply().await?;
                if self.backend_name.is_none() {
                    self.ctx.backend_feat.set(&r);
                }
                let reply = self.feat_reply(Some(r));
                self.reply(&reply).await?;
            }
            Verb::Auth => return self.auth(&cmd).await,
            Verb::Pbsz => self.pbsz(&cmd).await?,
            Verb::Prot => self.prot(&cmd).await?,
            Verb::Ccc => self.reply_text(534, "CCC refused: ftpgate keeps the control connection encrypted").await?,
            Verb::Rest => {
                let r = self.forward(&cmd).await?;
                self.rest_pending = r.code == 350;
            }
            Verb::Quit => {
                self.backend_quit = true;
                self.forward(&cmd).await?;
                return Ok(Flow::Close);
            }
            Verb::Rein => {
                // Resetting a session that may have TLS on both legs, each set up
                // on its own, is not something any client needs; vsftpd refuses too.
                self.reply_text(502, "REIN is not supported; reconnect instead").await?;
            }
            Verb::User if self.settings().client_cert_user_match && !self.user_matches_certificate(&cmd) => {
                Metrics::inc(&self.ctx.metrics.logins_refused);
                let user = String::from_utf8_lossy(cmd.arg.as_deref().unwrap_or_default()).into_owned();
                warn!(%user, "user name does not match the client certificate");
                self.reply_text(530, "Login refused: user name does not match your client certificate").await?;
            }
            Verb::User | Verb::Pass | Verb::Acct => {
                if cmd.verb == Verb::User {
                    self.user = cmd.arg_str().map(str::to_string);
                    self.who.entry.user(self.user.as_deref().unwrap_or("-"));
                    tracing::Span::current().record("user", self.user.as_deref().unwrap_or("-"));
                    self.bastion_pending = None;
                    let policy = self.ctx.policy();
                    if let Some(bu) = self.user.as_deref().and_then(|u| policy.bastion_users.get(u)) {
                        if bu.client_cert && self.client.peer_certificates().is_none() {
                            let d = Denial {
                                code: 530,
                                rule: "bastion user".into(),
                                reason: "Login refused: this user needs a client certificate".into(),
                            };
                            return self.deny(&cmd, &d).await.map(|()| Flow::Continue);
                        }
                        self.bastion_pending = self.user.clone();
                        self.reply_text(331, "Password required").await?;
                        return Ok(Flow::Continue);
                    }
                }
                if cmd.verb == Verb::Pass {
                    if let Some(name) = self.bastion_pending.take() {
                        return self.bastion_login(&name, &cmd).await.map(|()| Flow::Continue);
                    }
                }
                // The login is counted (session slots, failures, bans) before
                // the client hears of it, so its next connection, here or on
                // another instance, sees the count.
                self.backend.send(&cmd).await?;
                let r = self.final_reply().await?;
                if r.code == 230 {
                    self.on_login().await?;
                } else if r.code == 530 && cmd.verb == Verb::Pass {
                    self.on_login_failure().await;
                }
                self.reply(&r).await?;
            }
            Verb::Other(v) if v == "TYPE" => {
                let r = self.forward(&cmd).await?;
                if r.is_positive() {
                    let t = cmd.arg_str().unwrap_or("").to_ascii_uppercase();
                    self.binary = t.starts_with('I') || t.starts_with('L');
                }
            }
            Verb::Other(v) if matches!(v.as_str(), "CWD" | "CDUP" | "XCWD" | "XCUP") => {
                let r = self.forward(&cmd).await?;
                if r.is_positive() {
                    self.refresh_cwd().await?;
                }
            }
            _ => {
                self.forward(&cmd).await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Reads the backend's replies until a final one, relaying any preliminary
    /// replies to the client, and returns the final one unsent.
    async fn final_reply(&mut self) -> SessionResult<Reply> {
        let timeout = self.settings().backend_reply;
        loop {
            let r = watch_client(&mut self.client, &mut self.queued, self.backend.next_within(timeout)).await??;
            if !r.is_preliminary() {
                return Ok(r);
            }
            self.reply(&r).await?;
        }
    }

    /// Sends `cmd` to the backend and relays every reply to it.
    async fn forward(&mut self, cmd: &Command) -> SessionResult<Reply> {
        self.backend.send(cmd).await?;
        let r = self.final_reply().await?;
        self.reply(&r).await?;
        Ok(r)
    }

    /// Ends the session politely towards the backend (so it frees the login at
    /// once) and the client.
    async fn close(&mut self) {
        self.data = None;
        let quit = !self.backend_quit && self.backend_open;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            if quit {
                let _ = self.backend.send(&Command::new(Verb::Quit, None)).await;
            }
            self.backend.shutdown().await;
        })
        .await;
        self.client.shutdown().await;
    }
}

/// Runs `fut` (a wait on the backend) while reading the client, so a client
/// that leaves is noticed in every state: its session ends at once and frees
/// its backend connection, ports and counts. Commands the client pipelines
/// meanwhile wait in the queue, in order.
async fn watch_client<T>(
    client: &mut ClientControl,
    queued: &mut VecDeque<Queued>,
    fut: impl std::future::Future<Output = T>,
) -> SessionResult<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return Ok(r),
            e = client.next(), if queued.len() < MAX_QUEUED_COMMANDS => match e.map_err(SessionError::Client)? {
                ClientEvent::Closed => return Err(SessionError::Client(io::ErrorKind::UnexpectedEof.into())),
                other => queued.push_back(Queued::Event(other)),
            },
        }
    }
}
