//! How a session ends: timers (idle, login, a backend that stops
//! answering), the backend failing, the client leaving, the drain deadline.
//! Whatever ends it, the client hears why first (`421`, after a cut
//! transfer's `426` at the deadline), unless it is the one that left.

use super::failure::BackendFailure;
use super::interface::Output;
use super::interface::Timer;
use super::Waiting;
use super::{Core, Env};
use crate::protocol::codes;
use tracing::debug;
use tracing::info;
use tracing::warn;

impl<E: Env> Core<E> {
    pub(super) fn on_timeout(&mut self, timer: Timer) {
        match (timer, &self.waiting) {
            (Timer::Idle, Waiting::Command) => {
                let secs = self.config.idle.as_secs();
                self.reply(codes::NOT_AVAILABLE, &format!("Idle timeout ({secs} s); closing control connection"));
                self.close();
            }
            (Timer::Login, _) if !self.login.logged_in => {
                self.login.overdue = true;
                if matches!(self.waiting, Waiting::Command) {
                    self.login_timeout();
                }
            }
            (Timer::BackendReply, Waiting::BackendReply(_) | Waiting::Transfer(_)) => {
                let secs = self.config.backend_reply.as_secs();
                self.backend_failed(BackendFailure::Timeout { secs });
            }
            (Timer::BackendReply | Timer::DepartedGrace, Waiting::Departed(_)) => self.close(),
            _ => {}
        }
    }

    pub(super) fn login_timeout(&mut self) {
        self.metrics().session_refused("login_timeout");
        info!(target: "ftpgate::audit", "no login within the login timeout");
        let secs = self.config.login_timeout.as_secs();
        self.reply(
            codes::NOT_AVAILABLE,
            &format!("Login timeout ({secs} s): log in sooner; closing control connection"),
        );
        self.close();
    }

    /// The backend is gone or broke its protocol: the client hears why, with
    /// `421`, which answers whatever command was waiting (RFC 959 allows it
    /// as the reply to any command), a running transfer's included.
    pub(super) fn backend_failed(&mut self, failure: BackendFailure) {
        self.metrics().backend_error(failure.label());
        let text = failure.to_string();
        warn!(target: "ftpgate::session", error = %text, "closing session: backend failed");
        if matches!(self.waiting, Waiting::Departed(_)) {
            return self.close();
        }
        if self.transferring() {
            self.out.push_back(Output::AbortData);
            if self.abort_owes_transfer_reply() {
                // ABOR came first: the transfer gets its 426, ABOR the 421.
                self.transfer_cut(codes::TRANSFER_ABORTED, "cut: the backend failed");
                self.reply(codes::TRANSFER_ABORTED, "Transfer aborted: the server's connection was lost");
            } else {
                self.transfer_cut(codes::NOT_AVAILABLE, "cut: the backend failed");
            }
        }
        self.reply(codes::NOT_AVAILABLE, &format!("Service not available: {text}"));
        self.backend.quit_sent();
        self.close();
    }

    pub(super) fn on_client_gone(&mut self) {
        debug!(target: "ftpgate::session", "client control connection lost");
        match std::mem::replace(&mut self.waiting, Waiting::Command) {
            Waiting::Transfer(t) => self.transfer_departed(t),
            _ => self.close(),
        }
    }

    pub(super) fn on_drain_deadline(&mut self) {
        if matches!(self.waiting, Waiting::Departed(_)) {
            return self.close();
        }
        if self.transferring() {
            // The client must not wait for a 226 that cannot come.
            self.out.push_back(Output::AbortData);
            self.transfer_cut(codes::TRANSFER_ABORTED, "cut at the drain deadline");
            self.reply(codes::TRANSFER_ABORTED, "Transfer aborted: ftpgate is shutting down");
        }
        self.reply(codes::NOT_AVAILABLE, "Service shutting down; please reconnect later");
        info!(target: "ftpgate::session", "session closed at the drain deadline");
        self.close();
    }
}
