//! What goes in and out of the core: the inputs the driver feeds it, the
//! outputs it asks the driver to carry out, the settings it runs under and
//! what it reads from the rest of the process.

use super::failure::{BackendFailure, DataSetupFailure, OverLimit};
use super::{BackendSecurity, DataOutcome, TransferLog, TransferStart};
use crate::config::ClientTlsMode;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::protocol::command::TransferDirection;
use crate::protocol::{Command, Reply};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What the core reads from the world outside the session: the policy in
/// force (a reload swaps it between commands), the default backend's last
/// `FEAT` reply, and the counters.
pub trait Env {
    fn policy(&self) -> Arc<Policy>;
    fn backend_feat(&self) -> Option<Reply>;
    fn metrics(&self) -> &Metrics;
}

/// The settings one session runs under, fixed when it opens.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub mode: ClientTlsMode,
    /// ftpgate can accept `AUTH TLS` on this listener.
    pub tls_offered: bool,
    pub client_peer: SocketAddr,
    /// The address the client reached ftpgate at.
    pub client_local: SocketAddr,
    pub public_address: Option<IpAddr>,
    pub banner: String,
    pub idle: Duration,
    pub login_timeout: Duration,
    pub backend_reply: Duration,
    pub data_connect: Duration,
    /// USER must be one of the client certificate's names.
    pub client_cert_user_match: bool,
    /// Malformed, unknown or denied commands tolerated before login, and
    /// after it; past them `421`. 0: no limit.
    pub max_bad_commands: u32,
    pub max_bad_commands_after_login: u32,
}

/// The client's TLS on the control connection, once it is up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The names of a verified client certificate; `None`: no certificate.
    pub certificate_names: Option<Vec<String>>,
}

/// Why the client's control connection did not become TLS after `AUTH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientTlsRefused {
    /// Bytes arrived after `AUTH` before the handshake: plaintext that must
    /// not be obeyed as if it came over TLS. `234` was not sent.
    Pipelined,
    /// The handshake failed after `234`; nothing more can be said.
    Failed,
}

/// What the driver learnt about a login before the policy sees it: bans and
/// shared state (both may need the cluster), and the user's open sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginGate {
    /// The address is banned or the shared state is unreachable: `421`.
    pub refusal: Option<String>,
    /// Sessions the user has open now, when the core asked (`usize::MAX`:
    /// unknown, failing closed).
    pub user_sessions: Option<usize>,
}

/// Timers the core arms; the driver reports each one's expiry once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Timer {
    /// No command within `idle` while waiting for one.
    Idle,
    /// No login within `login_timeout` of the greeting.
    Login,
    /// The backend owes a reply.
    BackendReply,
    /// A departed client's upload may still report its end.
    DepartedGrace,
}

impl Timer {
    pub const ALL: [Timer; 4] = [Timer::Idle, Timer::Login, Timer::BackendReply, Timer::DepartedGrace];
}

#[derive(Debug)]
pub enum Input {
    Command(Command),
    /// A line the codec refused (its text says why).
    Invalid(String),
    ClientGone,
    BackendReply(Reply),
    /// The backend control connection failed (closed, I/O, malformed reply,
    /// TLS, refused greeting).
    BackendFailed(BackendFailure),
    /// The backend connection asked for with [`Output::ConnectBackend`] is
    /// connected (and TLS already, for implicit FTPS); `peer` is its control
    /// address. Its greeting comes next.
    BackendConnected {
        peer: SocketAddr,
        name: Option<String>,
        security: BackendSecurity,
    },
    /// The backend control connection's TLS handshake after `AUTH TLS`.
    BackendTls(Result<(), BackendFailure>),
    ClientTls(Result<ClientTls, ClientTlsRefused>),
    LoginChecked(LoginGate),
    /// The login succeeded on the backend but the user's session slot,
    /// taken atomically at that moment, was refused (the per-user limit is
    /// full, or the shared state is unreachable and fails closed): why.
    LoginOverLimit(OverLimit),
    PasswordChecked(bool),
    /// The passive port asked for, or why none could be opened.
    PassiveReady(Result<u16, DataSetupFailure>),
    /// The transfer may run (`false`: the user's `max_transfers` are all running).
    TransferPlanned(bool),
    /// The active-mode legs are connected, or why not.
    ActiveConnected(Result<(), DataSetupFailure>),
    DataEnded(DataOutcome),
    /// The scanner's verdict on the upload whose data channel ends next
    /// (fed just before its `DataEnded`).
    Scanned(crate::session::outcome::ScanVerdict),
    Timeout(Timer),
    /// ftpgate stops taking work: close once between commands.
    Drain,
    /// The drain deadline passed: close now, whatever is running.
    DrainDeadline,
}

#[derive(Debug)]
pub enum Output {
    Reply(Reply),
    /// A command for the backend control connection.
    Send(Command),
    /// Send `ok` (`234`) and take the client's control connection to TLS;
    /// answer with [`Input::ClientTls`]. Refuse (without `234`) if the client
    /// sent more bytes after `AUTH`.
    UpgradeClient {
        ok: Reply,
    },
    /// Connect to (or switch to) the backend named (`None`: the default
    /// pool): TCP, the PROXY header and implicit TLS as configured. Answer
    /// with [`Input::BackendConnected`].
    ConnectBackend {
        name: Option<String>,
    },
    /// The backend said `234` to ftpgate's `AUTH TLS`: take its control
    /// connection to TLS. Answer with [`Input::BackendTls`].
    UpgradeBackend,
    /// Ask for bans (and, with `user`, that user's open sessions); answer with
    /// [`Input::LoginChecked`].
    CheckLogin {
        user: Option<String>,
    },
    /// Check a bastion user's password; answer with [`Input::PasswordChecked`].
    VerifyPassword {
        hash: String,
        password: Vec<u8>,
    },
    /// The client named itself (USER): for logs and `who`.
    UserNamed(String),
    /// Count a successful login (slots, cluster, audit) before its reply.
    LoginSucceeded {
        user: String,
    },
    /// Count a failed login (bans, audit) before its reply.
    LoginFailed {
        user: String,
    },
    /// The default backend's `FEAT` reply, for `FEAT` before login.
    FeatLearned(Reply),
    /// Open a passive port towards `backend`'s data port; answer with
    /// [`Input::PassiveReady`]. `private`: the client leg is TLS (`PROT P`).
    OpenPassive {
        backend: SocketAddr,
        private: bool,
    },
    /// The data setup (a passive port and whatever connected to it) is
    /// abandoned.
    DropData,
    /// Take a transfer slot and set up rate and size limits; answer with
    /// [`Input::TransferPlanned`].
    PlanTransfer {
        user: String,
        direction: TransferDirection,
        limits: crate::policy::limits::TransferLimits,
        upload_cap: Option<u64>,
    },
    /// Connect both legs of an active-mode transfer; answer with
    /// [`Input::ActiveConnected`].
    ConnectActive {
        client: SocketAddr,
        backend: SocketAddr,
        direction: TransferDirection,
        private: bool,
    },
    /// What the data connection will carry (before the command goes out).
    SetDirection(TransferDirection),
    /// The backend accepted the transfer (125/150): start TLS on the data
    /// legs and relay.
    StartRelay(TransferStart),
    /// Stop the relay in order (ABOR): both legs closed, close_notify on TLS.
    StopData,
    /// Drop the data channel at once (the backend gave up, or the deadline).
    AbortData,
    /// A transfer is over: log it (`None` when it was aborted unlogged).
    TransferEnded(Option<TransferLog>),
    Arm(Timer, Duration),
    Disarm(Timer),
    /// End the session: `quit_backend` asks for a `QUIT` to the backend first.
    Close {
        quit_backend: bool,
    },
}
