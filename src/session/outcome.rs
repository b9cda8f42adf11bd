//! How a data channel ended, as plain values: what the session core and the
//! transfer verdicts decide on, with no tasks or sockets in them.

use crate::relay::RelayReport;
use std::io;
use std::net::SocketAddr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("client did not open the data connection within {0} s")]
    ClientTimeout(u64),
    #[error("cannot accept the client data connection: {0}")]
    ClientAccept(io::Error),
    #[error("cannot connect to the client at {0}: {1}")]
    ClientConnect(SocketAddr, io::Error),
    #[error("TLS handshake with the client failed on the data connection: {0}")]
    ClientTls(io::Error),
    #[error("data connection TLS session does not resume the control connection's session (session reuse required)")]
    NotResumed,
    #[error("cannot connect to the backend data port {0}: {1}")]
    BackendConnect(SocketAddr, io::Error),
    #[error("backend data port {0} did not answer within {1} s")]
    BackendTimeout(SocketAddr, u64),
    #[error("TLS handshake with the backend failed on the data connection: {0}")]
    BackendTls(io::Error),
    #[error("data connection TLS handshake did not finish within {0} s")]
    TlsTimeout(u64),
    #[error("data task ended abnormally: {0}")]
    Task(String),
}

impl DataError {
    /// Whether the client side (and not the backend) caused the failure; the
    /// client then gets ftpgate's own reply instead of the backend's.
    pub fn is_client_side(&self) -> bool {
        matches!(
            self,
            DataError::ClientTimeout(_)
                | DataError::ClientAccept(_)
                | DataError::ClientConnect(..)
                | DataError::ClientTls(_)
                | DataError::NotResumed
        )
    }
}

/// How a data channel ended.
#[derive(Debug)]
pub enum DataOutcome {
    Relayed(RelayReport),
    Failed(DataError),
}

impl DataOutcome {
    /// Bytes the client sent that reached the backend (an upload's size).
    pub fn written_to_backend(&self) -> u64 {
        match self {
            DataOutcome::Relayed(r) => r.a_to_b,
            DataOutcome::Failed(_) => 0,
        }
    }
}

/// What the malware scanner said about an upload (`[scan]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanVerdict {
    Clean,
    /// The scanner found this signature.
    Infected(String),
    /// Not scanned whole (the scanner down, slow or answering nonsense, or
    /// the upload larger than `max_size`), and `[scan]` says reject.
    Unscanned {
        reason: String,
        oversize: bool,
    },
    /// The same, and `[scan]` says accept: `226`, with a warning.
    AcceptedUnscanned(String),
}

impl ScanVerdict {
    /// `ftpgate_scan_total{result}`.
    pub fn label(&self) -> &'static str {
        match self {
            ScanVerdict::Clean => "clean",
            ScanVerdict::Infected(_) => "infected",
            ScanVerdict::Unscanned { oversize: true, .. } => "oversize_rejected",
            ScanVerdict::Unscanned { .. } => "error_rejected",
            ScanVerdict::AcceptedUnscanned(_) => "error_accepted",
        }
    }
}
