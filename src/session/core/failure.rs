//! Why a step the driver carried out for the core failed, as typed values:
//! the core decides what the client hears from the kind, the metric label is
//! the kind's `label()`, and the text (bounded, from the driver) goes to the
//! log and the reply. No strings stand for kinds.

use std::fmt;

/// Why the backend control connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendFailure {
    /// It could not be opened (at login).
    Unreachable(String),
    /// The connection ended (or was never open).
    Closed,
    /// The backend ended the session with this reply (`421`).
    ClosedWith(String),
    /// Reading or writing failed.
    Io(String),
    /// A reply that is not FTP.
    Malformed(String),
    /// No reply within the backend reply timeout.
    Timeout { secs: u64 },
    /// ftpgate's TLS towards it failed.
    Tls(String),
    /// It refused a step of opening the session (greeting, AUTH, PBSZ, PROT).
    Refused { command: String, reply: String },
}

impl BackendFailure {
    /// The label in `ftpgate_backend_errors_total{kind}`.
    pub fn label(&self) -> &'static str {
        match self {
            BackendFailure::Unreachable(_) => "connect",
            BackendFailure::Closed | BackendFailure::ClosedWith(_) => "closed",
            BackendFailure::Io(_) => "io",
            BackendFailure::Malformed(_) => "malformed",
            BackendFailure::Timeout { .. } => "timeout",
            BackendFailure::Tls(_) => "tls",
            BackendFailure::Refused { .. } => "refused",
        }
    }
}

impl fmt::Display for BackendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendFailure::Unreachable(e) => write!(f, "backend unreachable ({e})"),
            BackendFailure::Closed => write!(f, "backend closed the control connection"),
            BackendFailure::ClosedWith(reply) => write!(f, "backend closed the session: {reply}"),
            BackendFailure::Io(e) => write!(f, "backend control connection failed: {e}"),
            BackendFailure::Malformed(e) => write!(f, "backend sent a malformed reply: {e}"),
            BackendFailure::Timeout { secs } => write!(f, "backend did not reply within {secs} s"),
            BackendFailure::Tls(e) => write!(f, "backend TLS: {e}"),
            BackendFailure::Refused { command, reply } => write!(f, "backend refused {command}: {reply}"),
        }
    }
}

/// Why a data connection could not be prepared (`425` to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSetupFailure {
    /// Every port of the passive range is in use.
    PassiveRangeFull { min: u16, max: u16 },
    /// The client's address held a reservation on each of the `ports`
    /// passive ports for `waited` seconds (plain data setups of one address
    /// never share a port).
    PassivePortsBusy { ports: usize, waited: u64 },
    /// Active mode: ftpgate could not connect to the backend's data port.
    BackendConnect(String),
    /// Active mode: ftpgate could not connect to the client's `PORT`/`EPRT` address.
    ClientConnect(String),
}

impl DataSetupFailure {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DataSetupFailure::PassiveRangeFull { .. } => "passive_range_full",
            DataSetupFailure::PassivePortsBusy { .. } => "passive_ports_busy",
            DataSetupFailure::BackendConnect(_) => "backend_connect",
            DataSetupFailure::ClientConnect(_) => "client_connect",
        }
    }
}

impl fmt::Display for DataSetupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSetupFailure::PassiveRangeFull { min, max } => {
                write!(f, "Cannot open passive port: all ports {min}-{max} are in use; try again later")
            }
            DataSetupFailure::PassivePortsBusy { ports, waited } => write!(
                f,
                "Cannot open passive port: other sessions from your address hold all {ports} passive ports \
                 (waited {waited} s); try again later"
            ),
            DataSetupFailure::BackendConnect(e) => write!(f, "Cannot open data connection: {e}"),
            DataSetupFailure::ClientConnect(e) => write!(f, "Cannot open data connection: {e}"),
        }
    }
}

/// Why a login that the backend accepted was refused at ftpgate's
/// per-user session limit, taken at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverLimit {
    /// The user's `max_sessions_per_user` are all in use.
    UserSessions { user: String, limit: usize },
    /// The shared state (Redis) is unreachable and fails closed.
    SharedStateDown,
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverLimit::UserSessions { user, limit } => {
                write!(f, "Too many sessions for user {user} (limit {limit}); try again later")
            }
            OverLimit::SharedStateDown => {
                write!(f, "Service not available: shared login state unreachable; try again later")
            }
        }
    }
}
