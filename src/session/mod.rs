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
pub mod prelogin;

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

/// Commands a `required`-TLS listener accepts before `AUTH TLS`.
const ALLOWED_BEFORE_TLS: &[&str] = &["AUTH", "FEAT", "HELP", "NOOP", "QUIT", "SYST"];

/// Everything a session needs from the server, shared by all sessions.
#[derive(Debug)]
pub struct SessionContext {
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// ftpgate's TLS server side, when any listener offers TLS.
    pub client_tls: Option<Arc<ServerTls>>,
    /// The default backend.
    pub backend: BackendTarget,
    /// Backends bastion users may be mapped to, by name.
    pub named_backends: std::collections::HashMap<String, BackendTarget>,
    /// The policy in force, shared by every generation of the context: SIGHUP
    /// swaps it, and running sessions see the new one from their next command.
    policy: Arc<RwLock<Arc<Policy>>>,
    /// Failed logins per client address; bans outlive reloads.
    pub logins: Arc<Mutex<LoginGuard>>,
    pub per_address: Arc<limits::Counts<IpAddr>>,
    pub per_user: Arc<limits::Counts<String>>,
    /// The clock bans are measured on.
    started: Instant,
    pub xferlog: Option<Arc<crate::xferlog::XferLog>>,
    /// The default backend's features, for `FEAT` before login.
    pub backend_feat: Arc<prelogin::FeatCache>,
    /// Where ftpgate is in its shutdown, watched by every session.
    pub closing: Arc<tokio::sync::watch::Sender<Lifecycle>>,
}

/// Where the process stands in its lifecycle. Sessions between commands
/// close with `421` once draining starts; at the drain deadline every session
/// still open closes, whatever it waits for (a transfer's client gets `426`
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Serving,
    Draining,
    DrainDeadline,
}

/// The context new sessions start with. SIGHUP replaces it with one built
/// from the reloaded configuration; running sessions keep the one they
/// started with (backend, TLS, limits), except for the policy, which they all
/// share.
pub type LiveContext = tokio::sync::watch::Sender<Arc<SessionContext>>;

/// A backend ftpgate can connect a session to.
#[derive(Debug)]
pub struct BackendTarget {
    /// `HOST:PORT`.
    pub address: String,
    pub tls: Option<Arc<BackendTls>>,
}

impl BackendTarget {
    fn new(settings: &Settings, address: &str) -> Result<BackendTarget, TlsError> {
        let tls = match settings.backend_tls {
            BackendTlsMode::Off => None,
            _ => {
                let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
                Some(Arc::new(BackendTls::build(&settings.backend_tls_options, host)?))
            }
        };
        Ok(BackendTarget { address: address.to_string(), tls })
    }
}

/// Every backend a policy maps users to must exist in the configuration.
fn check_backend_names(
    policy: &Policy,
    named: &std::collections::HashMap<String, BackendTarget>,
) -> Result<(), PolicyError> {
    for (user, u) in &policy.bastion_users {
        if let Some(b) = &u.backend {
            if !named.contains_key(b) {
                return Err(PolicyError::UnknownBackend { user: user.clone(), backend: b.clone() });
            }
        }
    }
    Ok(())
}

#[derive(Debug, Error)]
pub enum ContextError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("transfer log {0}: {1}")]
    Xferlog(String, io::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl SessionContext {
    /// Loads certificates and the policy, and builds the TLS configurations
    /// the settings ask for.
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<SessionContext, ContextError> {
        let client_tls = match &settings.client_tls {
            Some(o) => Some(Arc::new(ServerTls::load(o.clone())?)),
            None => None,
        };
        if matches!(settings.backend_tls_options.verify, crate::tls::BackendVerify::Insecure)
            && settings.backend_tls != BackendTlsMode::Off
        {
            warn!(
                "backend certificate verification is OFF (insecure_skip_verify): the backend leg is not authenticated"
            );
        }
        let backend = BackendTarget::new(&settings, &settings.backend)?;
        let mut named_backends = std::collections::HashMap::new();
        for (name, address) in &settings.named_backends {
            named_backends.insert(name.clone(), BackendTarget::new(&settings, address)?);
        }
        let policy = match &settings.policy {
            Some(p) => Policy::load(p)?,
            None => Policy::permissive(),
        };
        check_backend_names(&policy, &named_backends)?;
        let xferlog = match &settings.xferlog {
            Some(p) => Some(Arc::new(
                crate::xferlog::XferLog::open(p).map_err(|e| ContextError::Xferlog(p.display().to_string(), e))?,
            )),
            None => None,
        };
        Ok(SessionContext {
            xferlog,
            closing: Arc::new(tokio::sync::watch::Sender::new(Lifecycle::Serving)),
            backend_feat: Arc::default(),
            settings: Arc::new(settings),
            metrics,
            client_tls,
            backend,
            named_backends,
            policy: Arc::new(RwLock::new(Arc::new(policy))),
            logins: Arc::default(),
            per_address: Arc::default(),
            per_user: Arc::default(),
            started: Instant::now(),
        })
    }

    /// The next generation, built from reloaded `settings`: new certificates,
    /// backends and limits for new sessions. Bans, per-address and per-user
    /// counts, metrics and the drain signal carry over; the new policy goes
    /// into force for running sessions too. On error nothing changes.
    pub fn reloaded(&self, settings: Settings) -> Result<SessionContext, ContextError> {
        let same_xferlog = settings.xferlog == self.settings.xferlog;
        let mut next = SessionContext::new(settings, Arc::clone(&self.metrics))?;
        next.logins = Arc::clone(&self.logins);
        next.per_address = Arc::clone(&self.per_address);
        next.per_user = Arc::clone(&self.per_user);
        next.started = self.started;
        next.closing = Arc::clone(&self.closing);
        if next.settings.backend == self.settings.backend {
            // Until the reload's probe answers, the old features stand.
            next.backend_feat = Arc::clone(&self.backend_feat);
        }
        if same_xferlog {
            next.xferlog = self.xferlog.clone();
        }
        let policy = next.policy();
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
        next.policy = Arc::clone(&self.policy);
        Ok(next)
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the policy file again; a broken file leaves the old policy in force.
    pub fn reload_policy(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.settings.policy else { return Ok(false) };
        let p = Policy::load(path)?;
        check_backend_names(&p, &self.named_backends)?;
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
        Ok(true)
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn banned_for(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.now();
        self.logins.lock().unwrap_or_else(|e| e.into_inner()).banned_until(ip, now).map(|t| t - now)
    }
}

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

/// The data connection the client has asked for and not used yet.
enum DataSetup {
    /// Accepting on ftpgate's passive port from the moment the client was told
    /// it, so connections from other addresses are refused at once.
    Passive(DataChannel),
    /// The client listens at this address (PORT/EPRT).
    Active(SocketAddr),
}

/// `file` for RETR/STOR/STOU/APPE, `listing` for LIST/NLST/MLSD.
fn transfer_kind(cmd: &Command) -> &'static str {
    match cmd.verb {
        Verb::List | Verb::Nlst | Verb::Mlsd => "listing",
        _ => "file",
    }
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
        let refusal = match policy.admit(client_peer.ip()) {
            Err(d) => Some(d.reason),
            Ok(_) => ctx
                .banned_for(client_peer.ip())
                .map(|left| format!("too many failed logins from your address; try again in {} s", left.as_secs() + 1)),
        };
        let per_address =
            limits::combined(ctx.settings.max_sessions_per_address, policy.login.max_sessions_per_address);
        let address_slot = match refusal {
            Some(_) => None,
            None => ctx.per_address.take(client_peer.ip().to_canonical(), per_address),
        };
        let Some(address_slot) = address_slot else {
            let reason = if refusal.is_some() { "policy" } else { "address_limit" };
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
    _address_slot: limits::Slot<IpAddr>,
    /// Held from a successful login on, for the per-user session limit.
    user_slot: Option<limits::Slot<String>>,
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

    /// Takes a fresh backend control connection to where commands can flow:
    /// implicit TLS, the greeting (never shown to the client: ftpgate greets
    /// itself), explicit TLS. A refusing greeting (`421`, or anything but
    /// `220` after any `120`) ends the session with `421` and the reason.
    async fn open_backend(&mut self) -> SessionResult<()> {
        let reply_timeout = self.settings().backend_reply;
        if let (Some(tls), BackendTlsMode::Implicit) = (&self.backend_tls, self.settings().backend_tls) {
            let started = Instant::now();
            watch_client(&mut self.client, &mut self.queued, self.backend.upgrade(tls, TLS_HANDSHAKE_TIMEOUT))
                .await??;
            self.ctx.metrics.latency.backend_tls_handshake.observe(started.elapsed().as_secs_f64());
        }
        loop {
            let greeting =
                watch_client(&mut self.client, &mut self.queued, self.backend.next_within(reply_timeout)).await??;
            if greeting.code == 220 {
                return self.secure_backend().await;
            }
            if !greeting.is_preliminary() {
                return Err(BackendError::Refused { command: "a session", reply: greeting.text() }.into());
            }
        }
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
        debug!(command = ?cmd, "client command");
        if self.mode == ClientTlsMode::Required
            && !self.client.is_tls()
            && !ALLOWED_BEFORE_TLS.contains(&cmd.verb.as_str())
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
                let r = self.forward(&cmd).await?;
                if r.code == 230 {
                    self.on_login().await?;
                } else if r.code == 530 && cmd.verb == Verb::Pass {
                    self.on_login_failure();
                }
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

    /// Asks the policy about `cmd`. `None`: go ahead; otherwise the command was
    /// answered here and never reaches the backend.
    async fn check_policy(&mut self, cmd: &Command) -> SessionResult<Option<Flow>> {
        let policy = self.ctx.policy();
        let ip = self.client_peer.ip();
        let network = match policy.admit(ip) {
            Ok(n) => n,
            Err(d) => {
                // A reload removed this client's network.
                self.deny(cmd, &d).await?;
                return Ok(Some(Flow::Close));
            }
        };
        if matches!(cmd.verb, Verb::User | Verb::Pass) {
            if let Some(left) = self.ctx.banned_for(ip) {
                let d = Denial {
                    code: 421,
                    rule: "login".into(),
                    reason: format!("Too many failed logins from your address; try again in {} s", left.as_secs() + 1),
                };
                self.deny(cmd, &d).await?;
                return Ok(Some(Flow::Close));
            }
        }
        if cmd.verb == Verb::User {
            let limit = policy.login.max_sessions_per_user;
            let user = cmd.arg_str().unwrap_or("").to_string();
            if limit > 0 && self.ctx.per_user.get(&user) >= limit {
                let d = Denial {
                    code: 530,
                    rule: "login".into(),
                    reason: format!("Too many sessions for user {user} (limit {limit})"),
                };
                self.deny(cmd, &d).await?;
                return Ok(Some(Flow::Continue));
            }
        }
        let view = SessionView {
            network,
            tls: self.client.is_tls(),
            pbsz: self.pbsz,
            prot_private: self.prot_private,
            client_cert: self.client.peer_certificates().is_some(),
            user: self.user.as_deref(),
            logged_in: self.logged_in,
            cwd: &self.cwd,
            previous: self.previous.as_ref(),
            data_ready: self.data.is_some(),
        };
        let denial = match policy.evaluate(&view, cmd) {
            Verdict::Allow => return Ok(None),
            Verdict::Deny(d) => d,
            Verdict::AllowIfNew { path, denial } => {
                if !self.backend_has_file(&path).await? {
                    return Ok(None);
                }
                denial
            }
        };
        self.deny(cmd, &denial).await?;
        Ok(Some(Flow::Continue))
    }

    /// Answers a refused command, logs it for the audit trail and counts it.
    async fn deny(&mut self, cmd: &Command, d: &Denial) -> SessionResult<()> {
        self.ctx.metrics.count_denial(&d.rule);
        info!(
            target: "ftpgate::audit",
            user = self.user.as_deref().unwrap_or("-"),
            command = %cmd.verb,
            rule = %d.rule,
            code = d.code,
            reason = %d.reason,
            "denied"
        );
        if cmd.verb.transfer_direction().is_some() {
            // A refused transfer uses up its data setup, as on a server: the
            // data connection closes (costing no TLS ticket: its backend
            // handshake never started) and the passive port is free again.
            self.data = None;
        }
        if self.rest_pending && cmd.verb.transfer_direction().is_some() {
            // The backend accepted REST for a transfer that will not reach it;
            // clear it so it cannot shift the next transfer (as a server resets
            // its offset on any transfer attempt).
            self.backend.send(&Command::new(Verb::Rest, Some(b"0"))).await?;
            self.final_reply().await?;
            self.rest_pending = false;
        }
        self.reply_text(d.code, &d.reason).await
    }

    /// Whether `path` exists on the backend (for write-but-not-overwrite users).
    /// Asked with SIZE, which every server here answers with 213 for a file.
    async fn backend_has_file(&mut self, path: &[u8]) -> SessionResult<bool> {
        self.backend.send(&Command::new(Verb::Other("SIZE".into()), Some(path))).await?;
        let r = self.final_reply().await?;
        Ok(r.code == 213)
    }

    async fn on_login(&mut self) -> SessionResult<()> {
        self.logged_in = true;
        Metrics::inc(&self.ctx.metrics.logins_ok);
        self.ctx.logins.lock().unwrap_or_else(|e| e.into_inner()).success(self.client_peer.ip());
        let user = self.user.clone().unwrap_or_default();
        self.user_slot = self.ctx.per_user.take(user.clone(), 0);
        info!(target: "ftpgate::audit", %user, "login");
        self.refresh_cwd().await
    }

    fn on_login_failure(&mut self) {
        let ip = self.client_peer.ip();
        let policy = self.ctx.policy();
        let now = self.ctx.now();
        let banned = self.ctx.logins.lock().unwrap_or_else(|e| e.into_inner()).failure(ip, now, &policy.login);
        Metrics::inc(&self.ctx.metrics.logins_failed);
        let user = self.user.as_deref().unwrap_or("-");
        info!(target: "ftpgate::audit", user, "login failed");
        if let Some(until) = banned {
            warn!(target: "ftpgate::audit", %ip, seconds = (until - now).as_secs(), "address banned after failed logins");
        }
    }

    /// PASS for a user authenticated at ftpgate: check the argon2id hash, move
    /// to the user's backend if it has one, and log in there with the mapped
    /// account. The client sees neither the backend account nor its replies.
    async fn bastion_login(&mut self, name: &str, cmd: &Command) -> SessionResult<()> {
        let policy = self.ctx.policy();
        let Some(bu) = policy.bastion_users.get(name).cloned() else {
            self.on_login_failure();
            return self.reply_text(530, "Login incorrect.").await;
        };
        let password = cmd.arg.clone().unwrap_or_default();
        let hash = bu.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || crate::policy::auth::verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if !ok {
            self.on_login_failure();
            return self.reply_text(530, "Login incorrect.").await;
        }
        if !self.backend_open || bu.backend != self.backend_name {
            self.switch_backend(bu.backend.clone()).await?;
        }
        self.backend.send(&Command::new(Verb::User, Some(bu.backend_user.as_bytes()))).await?;
        let mut r = self.final_reply().await?;
        if r.code == 331 {
            self.backend.send(&Command::new(Verb::Pass, Some(bu.backend_password.expose().as_bytes()))).await?;
            r = self.final_reply().await?;
        }
        if r.code != 230 {
            warn!(user = name, backend_user = %bu.backend_user, reply = %r.text(), "backend refused the mapped account");
            return self.reply_text(530, "Login incorrect: the backend refused this user's account").await;
        }
        self.reply_text(230, "Login successful.").await?;
        self.on_login().await
    }

    /// Moves this session to another backend before login: connect, TLS as
    /// configured, greeting, and the old backend connection closed.
    async fn switch_backend(&mut self, name: Option<String>) -> SessionResult<()> {
        let target = match &name {
            Some(n) => self.ctx.named_backends.get(n),
            None => Some(&self.ctx.backend),
        };
        let Some(target) = target else { return Err(BackendError::Closed.into()) };
        let s = Arc::clone(&self.ctx.settings);
        let connect = connect_backend_control(&s, &target.address, self.client_peer, self.client_local);
        let started = Instant::now();
        let connected = watch_client(&mut self.client, &mut self.queued, connect).await?;
        Metrics::inc(&self.ctx.metrics.backend_connections);
        let tcp = match connected {
            Ok(t) => {
                self.ctx.metrics.latency.backend_connect.observe(started.elapsed().as_secs_f64());
                t
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(BackendError::Unreachable("it did not accept the connection in time".into()).into())
            }
            Err(e) => return Err(BackendError::Unreachable(e.to_string()).into()),
        };
        let peer = tcp.peer_addr().map_err(BackendError::Io)?;
        let _ = tcp.set_nodelay(true);
        let tls = target.tls.as_ref().map(|t| t.for_session());
        let mut old = std::mem::replace(&mut self.backend, BackendControl::new(BackendStream::Plain(tcp)));
        if std::mem::replace(&mut self.backend_open, true) {
            let _ = old.send(&Command::new(Verb::Quit, None)).await;
            old.shutdown().await;
        }
        self.backend_peer = peer;
        self.backend_tls = tls;
        self.backend_epsv = true;
        self.backend_name = name;
        self.open_backend().await?;
        self.replay_to_backend().await?;
        info!(backend = %peer, name = self.backend_name.as_deref().unwrap_or("default"), "backend control connection open");
        Ok(())
    }

    /// Learns the working directory from the backend (`257 "<dir>"`), so rules
    /// see paths as the backend will resolve them.
    async fn refresh_cwd(&mut self) -> SessionResult<()> {
        self.backend.send(&Command::new(Verb::Other("PWD".into()), None)).await?;
        let r = self.final_reply().await?;
        if r.code == 257 {
            if let Some(dir) = crate::policy::path::parse_257(&r.lines[0]) {
                self.cwd = dir;
            }
        }
        Ok(())
    }

    /// Explicit FTPS towards the backend, on ftpgate's own initiative and hidden
    /// from the client: `AUTH TLS`, handshake, `PBSZ 0`, `PROT P`.
    async fn secure_backend(&mut self) -> SessionResult<()> {
        let Some(tls) = self.backend_tls.clone() else { return Ok(()) };
        let t = self.settings().backend_reply;
        if !self.backend.is_tls() {
            self.backend.exchange(&Command::new(Verb::Auth, Some(b"TLS")), 234, t).await?;
            let started = Instant::now();
            self.backend.upgrade(&tls, TLS_HANDSHAKE_TIMEOUT).await?;
            self.ctx.metrics.latency.backend_tls_handshake.observe(started.elapsed().as_secs_f64());
        }
        self.backend.exchange(&Command::new(Verb::Pbsz, Some(b"0")), 200, t).await?;
        self.backend.exchange(&Command::new(Verb::Prot, Some(b"P")), 200, t).await?;
        debug!("backend control connection secured");
        Ok(())
    }

    /// `AUTH TLS` from the client (RFC 4217). `AUTH SSL` and `TLS-P` are the
    /// older spellings that also imply protected data connections.
    async fn auth(&mut self, cmd: &Command) -> SessionResult<Flow> {
        let Some(acceptor) = self.acceptor.clone() else {
            self.reply_text(502, "AUTH is not offered on this listener: ftpgate has no TLS configured here").await?;
            return Ok(Flow::Continue);
        };
        if self.client.is_tls() {
            self.reply_text(503, "TLS is already active on this control connection").await?;
            return Ok(Flow::Continue);
        }
        let mechanism = cmd.arg_str().unwrap_or("").to_ascii_uppercase();
        let implies_private = match mechanism.as_str() {
            "TLS" | "TLS-C" => false,
            "SSL" | "TLS-P" => true,
            _ => {
                self.reply_text(504, "AUTH mechanism not supported; use AUTH TLS").await?;
                return Ok(Flow::Continue);
            }
        };
        if self.client.has_pending_input() || !self.queued.is_empty() {
            Metrics::inc(&self.ctx.metrics.commands_rejected);
            warn!("client pipelined plaintext after AUTH; closing");
            self.reply_text(421, "Commands sent after AUTH before the TLS handshake are refused; closing").await?;
            return Ok(Flow::Close);
        }
        self.reply_text(234, &format!("AUTH {mechanism} successful; proceed with TLS negotiation")).await?;
        let started = Instant::now();
        let upgraded = self.client.upgrade(&acceptor.control, TLS_HANDSHAKE_TIMEOUT).await;
        self.ctx.metrics.latency.client_tls_handshake.observe(started.elapsed().as_secs_f64());
        match upgraded {
            Ok(()) => {
                Metrics::inc(&self.ctx.metrics.tls_client_control);
                self.prot_private = implies_private;
                debug!("client control connection secured");
                Ok(Flow::Continue)
            }
            Err(e) => {
                // Nothing more can be said: the client expects TLS now.
                Metrics::inc(&self.ctx.metrics.tls_client_failures);
                warn!(error = %e, "TLS handshake with client failed");
                Ok(Flow::Close)
            }
        }
    }

    /// Ordering (AUTH, PBSZ, PROT) is the policy's to check.
    async fn pbsz(&mut self, cmd: &Command) -> SessionResult<()> {
        if cmd.arg_str().is_none_or(|a| a.parse::<u64>().is_err()) {
            return self.reply_text(501, "PBSZ needs a decimal buffer size; use PBSZ 0").await;
        }
        self.pbsz = true;
        // The only buffer size TLS has (RFC 4217 section 8).
        self.reply_text(200, "PBSZ=0").await
    }

    async fn prot(&mut self, cmd: &Command) -> SessionResult<()> {
        match cmd.arg_str().map(str::to_ascii_uppercase).as_deref() {
            Some("P") => {
                self.prot_private = true;
                self.reply_text(200, "Protection level set to Private: data connections use TLS").await
            }
            Some("C") => {
                self.prot_private = false;
                self.reply_text(200, "Protection level set to Clear: data connections are plain").await
            }
            Some("S") | Some("E") => self.reply_text(536, "Protection level not supported; use P or C").await,
            _ => self.reply_text(504, "PROT takes C or P").await,
        }
    }

    /// Whether the USER argument is one of the names in the client certificate.
    /// No certificate (no TLS yet, or mutual TLS off) never matches.
    fn user_matches_certificate(&self, cmd: &Command) -> bool {
        let (Some(user), Some(chain)) = (cmd.arg_str(), self.client.peer_certificates()) else { return false };
        chain.first().is_some_and(|leaf| crate::tls::certificate_names(leaf.as_ref()).iter().any(|n| n == user))
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

    /// Asks the backend for a passive port: EPSV first, PASV once EPSV is
    /// refused. The address is always the backend control connection's peer,
    /// whatever the reply says, so a lying backend cannot aim ftpgate elsewhere.
    /// `Ok(Err(reply))` is a backend refusal to pass on to the client.
    async fn backend_passive(&mut self) -> SessionResult<Result<SocketAddr, Reply>> {
        let ip = self.backend_peer.ip();
        if self.backend_epsv {
            self.backend.send(&Command::new(Verb::Epsv, None)).await?;
            let r = self.final_reply().await?;
            match r.code {
                229 => {
                    return Ok(match address::parse_229(&r.text()) {
                        Ok(port) => Ok(SocketAddr::new(ip, port)),
                        Err(e) => Err(self.unusable_passive_reply(&r, &e.to_string())),
                    })
                }
                500 | 501 | 502 | 504 | 522 => {
                    debug!(code = r.code, "backend refused EPSV; using PASV from now on");
                    self.backend_epsv = false;
                }
                _ => return Ok(Err(r)),
            }
        }
        self.backend.send(&Command::new(Verb::Pasv, None)).await?;
        let r = self.final_reply().await?;
        if r.code != 227 {
            return Ok(Err(r));
        }
        Ok(match address::parse_227(&r.text()) {
            Ok(named) => {
                if IpAddr::V4(*named.ip()) != ip.to_canonical() {
                    debug!(named = %named, using = %ip, "backend named another host in 227; connecting to its control address");
                }
                Ok(SocketAddr::new(ip, named.port()))
            }
            Err(e) => Err(self.unusable_passive_reply(&r, &e.to_string())),
        })
    }

    fn unusable_passive_reply(&self, r: &Reply, why: &str) -> Reply {
        self.ctx.metrics.backend_error("passive_reply");
        warn!(reply = %r.text(), why, "unusable passive reply from backend");
        Reply::single(425, "Cannot open data connection: backend sent an unusable passive reply")
    }

    async fn passive(&mut self, cmd: &Command) -> SessionResult<()> {
        let client_v4 = self.client_peer.ip().to_canonical().is_ipv4();
        if cmd.verb == Verb::Epsv {
            match cmd.arg_str().map(str::to_ascii_uppercase).as_deref() {
                None | Some("") => {}
                Some("ALL") => {
                    self.epsv_all = true;
                    return self.reply_text(200, "EPSV ALL accepted; PORT, EPRT and PASV are now refused").await;
                }
                Some("1") if client_v4 => {}
                Some("2") if !client_v4 => {}
                Some(_) => {
                    let own = if client_v4 { 1 } else { 2 };
                    return self.reply_text(522, &format!("Network protocol not supported, use ({own})")).await;
                }
            }
        } else if self.epsv_all {
            return self.reply_text(503, "PASV refused after EPSV ALL (RFC 2428)").await;
        }
        // Any earlier unused setup is abandoned, as a server would.
        self.data = None;
        let pasv_ip = match (cmd.verb == Verb::Pasv, self.settings().public_address) {
            (false, _) => None,
            (true, Some(IpAddr::V4(ip))) => Some(ip),
            (true, _) => match self.client_local.ip().to_canonical() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => {
                    return self.reply_text(500, "PASV cannot describe an IPv6 address; use EPSV").await;
                }
            },
        };
        let backend = match self.backend_passive().await? {
            Ok(a) => a,
            Err(reply) => return self.reply(&reply).await,
        };
        let range = self.settings().passive_ports;
        let Some(listener) = passive::bind(self.client_local.ip().to_canonical(), range, &self.ctx.metrics) else {
            warn!(min = range.min, max = range.max, "passive port range exhausted");
            let text =
                format!("Cannot open passive port: all ports {}-{} are in use; try again later", range.min, range.max);
            return self.reply_text(425, &text).await;
        };
        let text = match pasv_ip {
            Some(ip) => address::format_227(std::net::SocketAddrV4::new(ip, listener.port)),
            None => address::format_229(listener.port),
        };
        let code = if pasv_ip.is_some() { 227 } else { 229 };
        debug!(port = listener.port, %backend, "passive data channel prepared");
        let s = &self.ctx.settings;
        let (client_ip, connect, metrics) = (self.client_peer.ip(), s.data_connect, Arc::clone(&self.ctx.metrics));
        let proxy = self.proxy_protocol;
        let channel = data::spawn(
            async move {
                let client = data::accept_client(listener, client_ip, connect, metrics, proxy).await?;
                let backend = data::connect_backend(backend, connect).await?;
                Ok((client, backend))
            },
            self.data_tls(),
            s.data_connect,
            s.transfer_stall,
        );
        self.data = Some(DataSetup::Passive(channel));
        self.reply_text(code, &text).await
    }

    /// TLS for the legs of a data connection set up now. `PROT` applies to
    /// data connections set up after it.
    fn data_tls(&self) -> DataTls {
        DataTls {
            client: if self.prot_private { self.acceptor.clone() } else { None },
            direction: Arc::default(),
            require_reuse: self.settings().require_session_reuse,
            backend: self.backend_tls.clone(),
            metrics: Arc::clone(&self.ctx.metrics),
        }
    }

    async fn active(&mut self, cmd: &Command) -> SessionResult<()> {
        if self.epsv_all {
            return self.reply_text(503, &format!("{} refused after EPSV ALL (RFC 2428)", cmd.verb)).await;
        }
        match active::check(cmd, self.client_peer.ip()) {
            Ok(addr) => {
                self.data = Some(DataSetup::Active(addr));
                self.reply_text(200, &format!("{} command successful", cmd.verb)).await
            }
            Err(reply) => {
                Metrics::inc(&self.ctx.metrics.active_refused);
                warn!(command = ?cmd, reply = %reply.text(), "refused active-mode address");
                self.reply(&reply).await
            }
        }
    }

    async fn transfer(&mut self, cmd: &Command, direction: TransferDirection) -> SessionResult<()> {
        // The policy refuses transfers without a data setup; this is the backstop.
        let Some(setup) = self.data.take() else {
            return self.reply_text(503, &format!("Use PASV, EPSV, PORT or EPRT before {}", cmd.verb)).await;
        };
        let s = Arc::clone(&self.ctx.settings);
        let metrics = Arc::clone(&self.ctx.metrics);
        let channel = match setup {
            DataSetup::Passive(channel) => channel,
            DataSetup::Active(client_addr) => {
                let backend_addr = match self.backend_passive().await? {
                    Ok(a) => a,
                    Err(reply) => return self.reply(&reply).await,
                };
                let backend = match data::connect_backend(backend_addr, s.data_connect).await {
                    Ok(b) => b,
                    Err(e) => {
                        metrics.backend_error("data_connect");
                        return self.reply_text(425, &format!("Cannot open data connection: {e}")).await;
                    }
                };
                let client = match data::connect_client(self.client_local.ip(), client_addr, s.data_connect).await {
                    Ok(c) => c,
                    Err(e) => return self.reply_text(425, &format!("Cannot open data connection: {e}")).await,
                };
                // ftpgate connects out after the command, so the direction is
                // known before a client could start its handshake.
                let tls = self.data_tls();
                let _ = tls.direction.set(direction);
                data::spawn(std::future::ready(Ok((client, backend))), tls, s.data_connect, s.transfer_stall)
            }
        };
        channel.set_direction(direction);
        self.backend.send(cmd).await?;
        self.rest_pending = false;
        // The backend answers a transfer only once its data connection is up, which
        // waits for the client's; allow for both.
        let first = self.backend.next_within(s.backend_reply + s.data_connect).await?;
        if !first.is_preliminary() {
            drop(channel);
            metrics.transfer(transfer_kind(cmd), "failed");
            return self.reply(&first).await;
        }
        channel.backend_accepted();
        self.reply(&first).await?;
        self.transferring = true;
        let done = self.complete_transfer(cmd, direction, channel).await;
        self.transferring = false;
        done
    }

    /// Waits for both the data relay and the backend's final reply, and sends
    /// that reply only after the relay has delivered every byte. Watches the
    /// client meanwhile for `ABOR`; other commands wait in the queue.
    async fn complete_transfer(
        &mut self,
        cmd: &Command,
        direction: TransferDirection,
        mut channel: DataChannel,
    ) -> SessionResult<()> {
        let started = Instant::now();
        let reply_timeout = self.settings().backend_reply;
        let mut outcome: Option<DataOutcome> = None;
        let mut final_reply: Option<Reply> = None;
        while outcome.is_none() || final_reply.is_none() {
            tokio::select! {
                r = &mut channel.task, if outcome.is_none() => {
                    outcome = Some(r.unwrap_or_else(|e| DataOutcome::Failed(data::DataError::ClientAccept(io::Error::other(e.to_string())))));
                }
                r = self.backend.next(), if final_reply.is_none() => {
                    let r = r?;
                    if r.is_preliminary() {
                        self.reply(&r).await?;
                    } else {
                        if r.code >= 400 {
                            // The backend gave up; nothing more will move.
                            channel.task.abort();
                        }
                        final_reply = Some(r);
                    }
                }
                e = self.client.next(), if self.queued.len() < MAX_QUEUED_COMMANDS => {
                    match e.map_err(SessionError::Client)? {
                        ClientEvent::Command(c) if c.verb == Verb::Abor => {
                            let delivered = matches!(&outcome, Some(DataOutcome::Relayed(r)) if matches!(r.end, RelayEnd::Eof(_)));
                            return self.abort_transfer(cmd, channel, final_reply, delivered).await;
                        }
                        ClientEvent::Closed => {
                            return Err(SessionError::Client(io::ErrorKind::UnexpectedEof.into()));
                        }
                        other => self.queued.push_back(Queued::Event(other)),
                    }
                }
                () = tokio::time::sleep(reply_timeout), if outcome.is_some() && final_reply.is_none() => {
                    return Err(BackendError::Timeout(reply_timeout.as_secs()).into());
                }
            }
        }
        let (Some(outcome), Some(mut reply)) = (outcome, final_reply) else {
            unreachable!("loop exits when both are set")
        };
        if let DataOutcome::Failed(e) = &outcome {
            if e.is_client_side() {
                // The backend only saw its data connection break; the client
                // deserves to know why.
                debug!(backend_reply = %reply.text(), "replacing the backend's final reply");
                let code = if matches!(e, data::DataError::NotResumed) { 522 } else { 425 };
                reply = Reply::single(code, &format!("Data connection refused: {e}"));
            }
        }
        if let DataOutcome::Relayed(r) = &outcome {
            // A backend that saw only an orderly close (a plain data leg shut
            // down after the client's leg broke) reports success for a
            // truncated file; the client must not believe it.
            if reply.is_positive() && !matches!(r.end, RelayEnd::Eof(_)) {
                debug!(backend_reply = %reply.text(), end = ?r.end, "replacing the backend's final reply");
                reply = Reply::single(426, &format!("Transfer aborted: {}", relay_failure(&r.end)));
            }
        }
        let ok =
            reply.is_positive() && matches!(&outcome, DataOutcome::Relayed(r) if matches!(r.end, RelayEnd::Eof(_)));
        self.ctx.metrics.transfer(transfer_kind(cmd), if ok { "ok" } else { "failed" });
        let moved = match &outcome {
            DataOutcome::Relayed(r) => r.a_to_b + r.b_to_a,
            DataOutcome::Failed(_) => 0,
        };
        self.log_transfer(cmd, direction, started, moved, ok);
        self.ctx.metrics.latency.transfer.observe(started.elapsed().as_secs_f64());
        match &outcome {
            DataOutcome::Relayed(r) => info!(
                command = %cmd.verb, ?direction, to_backend = r.a_to_b, to_client = r.b_to_a, end = ?r.end, code = reply.code,
                "transfer finished"
            ),
            DataOutcome::Failed(e) => {
                warn!(command = %cmd.verb, error = %e, code = reply.code, "data connection failed")
            }
        }
        self.reply(&reply).await
    }

    /// One xferlog line for a file transfer (listings are not file transfers).
    fn log_transfer(&self, cmd: &Command, direction: TransferDirection, started: Instant, bytes: u64, complete: bool) {
        let Some(log) = &self.ctx.xferlog else { return };
        if !matches!(cmd.verb, Verb::Retr | Verb::Stor | Verb::Appe | Verb::Stou) {
            return;
        }
        let path = match cmd.verb {
            Verb::Stou => self.cwd.clone(),
            _ => crate::policy::path::resolve(&self.cwd, cmd.arg.as_deref().unwrap_or_default()),
        };
        log.record(&crate::xferlog::TransferRecord {
            finished: std::time::SystemTime::now(),
            seconds: started.elapsed().as_secs(),
            client: self.client_peer.ip(),
            bytes,
            path,
            binary: self.binary,
            incoming: direction == TransferDirection::Upload,
            user: self.user.clone().unwrap_or_default(),
            complete,
        });
    }

    /// `ABOR` during a transfer: close both data legs first (so the backend's
    /// transfer ends even if it ignores urgent data), then pass `ABOR` on.
    /// The client gets the transfer's final reply, then the replies to the
    /// commands it sent before `ABOR` (queued), then `ABOR`'s (RFC 959).
    /// `delivered`: the relay had already moved every byte and ended in order;
    /// otherwise a backend `226` (it may have written everything into socket
    /// buffers before the client stopped reading) becomes `426`, and the
    /// `ABOR` reply says a transfer was aborted (`226`).
    async fn abort_transfer(
        &mut self,
        cmd: &Command,
        mut channel: DataChannel,
        final_reply: Option<Reply>,
        delivered: bool,
    ) -> SessionResult<()> {
        channel.task.abort();
        // Wait until the legs are really closed before the backend hears ABOR.
        let _ = (&mut channel.task).await;
        self.ctx.metrics.transfer(transfer_kind(cmd), if delivered { "ok" } else { "aborted" });
        info!(delivered, "transfer aborted by client");
        self.backend.send(&Command::new(Verb::Abor, None)).await?;
        let mut transfer_reply = match final_reply {
            Some(r) => r,
            None => self.final_reply().await?,
        };
        if !delivered && transfer_reply.is_positive() {
            debug!(backend_reply = %transfer_reply.text(), "replacing the backend's final reply: the client did not get every byte");
            transfer_reply =
                Reply::single(426, "Transfer aborted: the data connection was closed before every byte was delivered");
        }
        self.reply(&transfer_reply).await?;
        let mut abor_reply = self.final_reply().await?;
        if !delivered && abor_reply.code == 225 {
            abor_reply = Reply::single(226, "ABOR successful; the transfer was aborted");
        }
        if self.queued.is_empty() {
            self.reply(&abor_reply).await
        } else {
            self.queued.push_back(Queued::Reply(abor_reply));
            Ok(())
        }
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

/// Opens a backend control connection within the connect timeout and, if
/// configured, starts it with a PROXY protocol header naming the client and
/// the address it reached ftpgate at.
async fn connect_backend_control(
    s: &Settings,
    address: &str,
    client: SocketAddr,
    local: SocketAddr,
) -> io::Result<TcpStream> {
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

/// Why a relay did not end with an orderly close, in words for a 426 reply.
/// Side A is the client leg (see `data::spawn`).
fn relay_failure(end: &RelayEnd) -> String {
    match end {
        RelayEnd::Eof(_) => "data connection closed".into(),
        RelayEnd::Stalled => "no data moved within the stall timeout".into(),
        RelayEnd::Failed(crate::relay::Side::A, e) => format!("client data connection failed ({e})"),
        RelayEnd::Failed(crate::relay::Side::B, e) => format!("backend data connection failed ({e})"),
    }
}
