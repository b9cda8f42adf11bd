//! TLS on the client's control connection: `AUTH`, `PBSZ`, `PROT`, `CCC`
//! (RFC 4217). Their order is the policy's to check; the backend's own TLS
//! is set up by the driver when it opens the backend, hidden from the client.

use super::interface::ClientTls;
use super::interface::ClientTlsRefused;
use super::interface::Output;
use super::Waiting;
use super::{Core, Env};
use crate::metrics::Metrics;
use crate::protocol::codes;
use crate::protocol::Command;
use crate::protocol::Reply;
use tracing::debug;
use tracing::warn;

/// The client's side of RFC 4217: TLS on its control connection, then
/// `PBSZ` and `PROT`, in that order.
#[derive(Debug)]
pub(super) struct Protection {
    /// The control connection's TLS, once up.
    pub(super) tls: Option<ClientTls>,
    /// `PBSZ` done.
    pub(super) pbsz: bool,
    /// `PROT P`: client data connections are TLS.
    pub(super) prot_private: bool,
}

impl<E: Env> Core<E> {
    /// `AUTH TLS` from the client. `AUTH SSL` and `TLS-P` are the older
    /// spellings that also imply protected data connections.
    pub(super) fn auth(&mut self, cmd: &Command) {
        if !self.config.tls_offered {
            return self.reply(
                codes::NOT_IMPLEMENTED,
                "AUTH is not offered on this listener: ftpgate has no TLS configured here",
            );
        }
        if self.protection.tls.is_some() {
            return self.reply(codes::BAD_SEQUENCE, "TLS is already active on this control connection");
        }
        let mechanism = cmd.arg_str().unwrap_or("").to_ascii_uppercase();
        let private = match mechanism.as_str() {
            "TLS" | "TLS-C" => false,
            "SSL" | "TLS-P" => true,
            _ => return self.reply(codes::PARAMETER_NOT_IMPLEMENTED, "AUTH mechanism not supported; use AUTH TLS"),
        };
        if !self.queue.is_empty() {
            return self.refuse_pipelined();
        }
        let ok = Reply::single(codes::AUTH_OK, &format!("AUTH {mechanism} successful; proceed with TLS negotiation"));
        self.out.push_back(Output::UpgradeClient { ok });
        self.waiting = Waiting::ClientTls { private };
    }

    /// Commands sent in the clear after `AUTH` could be injected: refused,
    /// and the session ends.
    fn refuse_pipelined(&mut self) {
        Metrics::inc(&self.metrics().commands_rejected);
        warn!(target: "ftpgate::session", "client pipelined plaintext after AUTH; closing");
        self.queue.clear();
        self.reply(codes::NOT_AVAILABLE, "Commands sent after AUTH before the TLS handshake are refused; closing");
        self.close();
    }

    pub(super) fn on_client_tls(&mut self, result: Result<ClientTls, ClientTlsRefused>) {
        let Waiting::ClientTls { private } = self.waiting else { return };
        match result {
            Ok(tls) => {
                self.protection.tls = Some(tls);
                self.protection.prot_private = private;
                debug!(target: "ftpgate::session", "client control connection secured");
                self.resume();
            }
            Err(ClientTlsRefused::Pipelined) => self.refuse_pipelined(),
            // Nothing more can be said: the client expects TLS now.
            Err(ClientTlsRefused::Failed) => self.close(),
        }
    }

    pub(super) fn pbsz(&mut self, cmd: &Command) {
        if cmd.arg_str().is_none_or(|a| a.parse::<u64>().is_err()) {
            return self.reply(codes::BAD_ARGUMENT, "PBSZ needs a decimal buffer size; use PBSZ 0");
        }
        self.protection.pbsz = true;
        // The only buffer size TLS has (RFC 4217 section 8).
        self.reply(codes::OK, "PBSZ=0");
    }

    pub(super) fn prot(&mut self, cmd: &Command) {
        match cmd.arg_str().map(str::to_ascii_uppercase).as_deref() {
            Some("P") => {
                self.protection.prot_private = true;
                self.reply(codes::OK, "Protection level set to Private: data connections use TLS");
            }
            Some("C") => {
                self.protection.prot_private = false;
                self.reply(codes::OK, "Protection level set to Clear: data connections are plain");
            }
            Some("S") | Some("E") => {
                self.reply(codes::PROTECTION_NOT_SUPPORTED, "Protection level not supported; use P or C")
            }
            _ => self.reply(codes::PARAMETER_NOT_IMPLEMENTED, "PROT takes C or P"),
        }
    }
}
