//! The control channel of one session as a state machine with no I/O: no
//! tokio, no sockets, no TLS objects, no clock. The driver
//! (`server::session::driver`) feeds it [`Input`]s (a client command, a backend
//! reply, a TLS handshake's result, a data transfer's end, a timer) and
//! carries out the [`Output`]s it queues (a reply to the client, a command to
//! the backend, a leg to upgrade, a passive port to open, a timer to arm), in
//! order. Every rule about what the client hears and when is decided here,
//! so it is unit-tested without a server (see `tests`).
//!
//! The session is always in one [`Waiting`] state, named for what it waits
//! for, as rustls names `ExpectClientHello`. Client commands that arrive
//! while it waits for something else are queued and run in order once it
//! waits for a command again, so every command gets exactly one final reply,
//! in the order the commands were sent (RFC 959).
//!
//! One file per concern: `login` (USER/PASS, bastion users, the policy gate,
//! what is answered before a backend exists), `backend` (the backend's
//! greeting, ftpgate's own FTPS towards it, the replay), `security`
//! (AUTH/PBSZ/PROT), `setup` (PASV/EPSV/PORT/EPRT and the backend's passive
//! port), `transfer` (the held final reply), `abort` (ABOR and its order,
//! and the log line of a cut transfer), `lifecycle`
//! (timers, failures, the drain deadline); `interface` holds the inputs and
//! outputs.

mod abort;
mod backend;
mod bad_input;
mod failure;
mod interface;
mod lifecycle;
mod login;
mod scan;
mod security;
mod setup;
mod transfer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_flow;
#[cfg(test)]
mod tests_prop;

pub use backend::BackendSecurity;
pub use failure::{BackendFailure, DataSetupFailure, OverLimit};
pub use interface::{ClientTls, ClientTlsRefused, CoreConfig, Env, Input, LoginGate, Output, Timer};
pub use setup::DataSetup;
pub use transfer::{TransferLog, TransferStart};

use super::outcome::DataOutcome;
use crate::metrics::Metrics;
use crate::protocol::codes;
use crate::protocol::{Command, Reply, Verb};
use std::collections::VecDeque;
use std::time::Duration;
use tracing::{debug, warn};

/// Commands a client may pipeline while the session waits for something
/// else before the driver stops reading from it.
pub const MAX_QUEUED_COMMANDS: usize = 16;

/// What a backend reply that the core waits for is for.
#[derive(Debug)]
enum Pending {
    /// Relayed as it is; `cmd` says what else it changes.
    Forward(Command),
    /// USER/PASS/ACCT of a pass-through login.
    Login(Command),
    /// The USER that ftpgate answered itself, sent once PASS came and the
    /// backend opened; the PASS follows (its reply is the client's).
    DeferredUser(Command),
    /// `SIZE` of the file an `APPE` under a size cap appends to.
    AppendSize(transfer::Starting),
    /// `SIZE` asked to see whether an upload would overwrite a file.
    OverwriteCheck {
        cmd: Command,
        denial: crate::policy::Denial,
        limits: Option<crate::policy::limits::TransferLimits>,
    },
    /// `REST 0` after a refused transfer; `then` is the refusal.
    ClearRest {
        then: Reply,
    },
    /// `PWD` after login or CWD; `then` is the reply still owed.
    Cwd {
        then: Option<Reply>,
    },
    Feat,
    /// The backend's passive port (EPSV, or PASV once EPSV is refused).
    BackendPassive {
        epsv: bool,
        purpose: setup::PassivePurpose,
    },
    /// The transfer command itself.
    TransferStart(transfer::Starting),
    /// A bastion user's mapped account: USER, then PASS.
    BastionUser(String),
    BastionPass(String),
    /// `DELE` of an upload's partial file cut at the size limit.
    CapDele(Box<transfer::Finishing>),
    /// `DELE` of an upload the scanner rejected.
    ScanDele(Box<scan::Rejected>),
    /// The transfer's and then ABOR's own final reply.
    Abor(abort::Aborting),
    /// A step of opening the backend connection.
    Opening(backend::OpenStep),
}

/// What to do once the backend is open.
#[derive(Debug)]
enum AfterOpen {
    Bastion(String),
    /// A pass-through login: the deferred USER, then this PASS.
    Login(Command),
}

/// What the session waits for.
#[derive(Debug)]
enum Waiting {
    /// The next client command.
    Command,
    /// The client's TLS handshake after `AUTH` (`private`: `AUTH SSL`/`TLS-P`).
    ClientTls {
        private: bool,
    },
    /// A final reply from the backend.
    BackendReply(Pending),
    /// The backend connection to be made (the continuation is in `opening`).
    BackendConnect,
    /// The backend control connection's TLS handshake after `AUTH TLS`.
    BackendTls,
    /// Bans and session counts for a USER or PASS.
    LoginCheck(Command),
    /// A bastion user's password hash check.
    Password(String),
    /// ftpgate's passive port for a PASV/EPSV (`pasv`: the 227 address).
    PassivePort {
        pasv: Option<std::net::Ipv4Addr>,
    },
    /// A transfer slot and limits.
    TransferPlan(transfer::Starting),
    /// Both legs of an active-mode transfer.
    ActiveConnect(transfer::Starting),
    /// The data relay's end and the backend's final reply.
    Transfer(transfer::Running),
    /// The client left during an upload whose partial file may need removing.
    Departed(transfer::Departed),
    Closed,
}

/// What waits in the queue: commands and bad lines the client sent while the
/// session waited for something else, and replies that must follow them
/// (ABOR's, after the commands sent before it).
#[derive(Debug)]
enum Queued {
    Command(Command),
    Invalid(String),
    Reply(Reply),
}

/// One session's control channel.
pub struct Core<E: Env> {
    env: E,
    config: CoreConfig,
    waiting: Waiting,
    queue: VecDeque<Queued>,
    out: VecDeque<Output>,
    /// TLS on the client's control connection and its data protection.
    protection: security::Protection,
    /// The backend control connection: detached, connecting, opening, open.
    backend: backend::BackendLink,
    /// Who the client is, as far as its login got.
    login: login::LoginState,
    /// Data setup, transfer modes and what the session uploaded.
    transfers: transfer::TransferState,
    draining: bool,
    /// Working directory as the backend reports it.
    cwd: Vec<u8>,
    /// Verb of the last command the policy allowed.
    previous: Option<Verb>,
    /// Malformed, unknown and denied commands: counted, logged sparingly.
    bad: bad_input::BadInput,
}

impl<E: Env> Core<E> {
    /// A session whose client has just connected (`client_tls`: implicit
    /// FTPS, already up). Queues the greeting.
    pub fn new(env: E, config: CoreConfig, client_tls: Option<ClientTls>) -> Core<E> {
        let mut core = Core {
            backend: backend::BackendLink::new(),
            login: login::LoginState::default(),
            transfers: transfer::TransferState::default(),
            env,
            waiting: Waiting::Command,
            queue: VecDeque::new(),
            out: VecDeque::new(),
            protection: security::Protection { tls: client_tls, pbsz: false, prot_private: false },
            draining: false,
            cwd: b"/".to_vec(),
            previous: None,
            bad: Default::default(),
            config,
        };
        let banner = core.config.banner.clone();
        core.reply(codes::READY, banner.trim_end());
        core.out.push_back(Output::Arm(Timer::Login, core.config.login_timeout));
        core.out.push_back(Output::Arm(Timer::Idle, core.config.idle));
        core
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        let next = self.out.pop_front();
        if next.is_none() && self.out.capacity() > 0 {
            // Idle sessions are most sessions: they keep no buffer.
            self.out = VecDeque::new();
        }
        next
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.waiting, Waiting::Closed)
    }

    /// Whether the driver should read the client: not while the queue is full.
    pub fn wants_client(&self) -> bool {
        !self.is_closed() && self.queue.len() < MAX_QUEUED_COMMANDS
    }

    /// Whether a data transfer's end is awaited (the driver then watches the
    /// data channel).
    pub fn wants_data_end(&self) -> bool {
        match &self.waiting {
            Waiting::Transfer(t) => t.outcome.is_none(),
            Waiting::Departed(d) => d.outcome.is_none(),
            _ => false,
        }
    }

    /// Whether backend replies are read: once a backend is connected.
    pub fn reads_backend(&self) -> bool {
        self.backend.connected() && !self.is_closed()
    }

    /// Whether a transfer is running (for the registry and the deadline).
    pub fn transferring(&self) -> bool {
        matches!(self.waiting, Waiting::Transfer(_) | Waiting::BackendReply(Pending::Abor(_)))
    }

    pub fn handle(&mut self, input: Input) {
        if self.is_closed() {
            return;
        }
        match input {
            Input::Command(cmd) => self.on_command(cmd),
            Input::Invalid(e) => self.on_queued(Queued::Invalid(e)),
            Input::ClientGone => self.on_client_gone(),
            Input::BackendReply(r) => self.on_backend_reply(r),
            Input::BackendFailed(f) => self.backend_failed(f),
            Input::BackendConnected { peer, name, security } => self.on_backend_connected(peer, name, security),
            Input::BackendTls(r) => self.on_backend_tls(r),
            Input::ClientTls(r) => self.on_client_tls(r),
            Input::LoginChecked(gate) => self.on_login_checked(gate),
            Input::LoginOverLimit(why) => self.on_login_over_limit(why),
            Input::PasswordChecked(ok) => self.on_password_checked(ok),
            Input::PassiveReady(r) => self.on_passive_ready(r),
            Input::TransferPlanned(ok) => self.on_transfer_planned(ok),
            Input::ActiveConnected(r) => self.on_active_connected(r),
            Input::DataEnded(o) => self.on_data_ended(o),
            Input::Scanned(v) => self.on_scanned(v),
            Input::Timeout(t) => self.on_timeout(t),
            Input::Drain => {
                self.draining = true;
                if matches!(self.waiting, Waiting::Command) {
                    self.resume();
                }
            }
            Input::DrainDeadline => self.on_drain_deadline(),
        }
    }

    // ---- small helpers ------------------------------------------------------

    fn metrics(&self) -> &Metrics {
        self.env.metrics()
    }

    fn reply(&mut self, code: u16, text: &str) {
        self.out.push_back(Output::Reply(Reply::single(code, text)));
    }

    fn send_reply(&mut self, r: Reply) {
        self.out.push_back(Output::Reply(r));
    }

    /// Sends `cmd` to the backend and waits for its final reply.
    fn ask_backend(&mut self, cmd: Command, pending: Pending) {
        self.ask_backend_within(cmd, pending, self.config.backend_reply);
    }

    fn ask_backend_within(&mut self, cmd: Command, pending: Pending, timeout: Duration) {
        self.out.push_back(Output::Send(cmd));
        self.expect_backend(pending, timeout);
    }

    fn expect_backend(&mut self, pending: Pending, timeout: Duration) {
        self.out.push_back(Output::Arm(Timer::BackendReply, timeout));
        self.waiting = Waiting::BackendReply(pending);
    }

    fn close(&mut self) {
        if !self.is_closed() {
            self.log_bad_summary();
        }
        let quit_backend = self.backend.owes_quit();
        self.out.push_back(Output::Close { quit_backend });
        self.waiting = Waiting::Closed;
    }

    fn user_name(&self) -> String {
        self.login.user.clone().unwrap_or_default()
    }

    // ---- the command queue ----------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        if let Waiting::Transfer(_) = self.waiting {
            if cmd.verb == Verb::Abor {
                return self.abort_transfer();
            }
        }
        self.on_queued(Queued::Command(cmd));
    }

    fn on_queued(&mut self, q: Queued) {
        self.queue.push_back(q);
        if matches!(self.waiting, Waiting::Command) {
            self.resume();
        }
    }

    /// Back to waiting for a command: runs what the queue holds, in order,
    /// until one of them makes the session wait for something else.
    fn resume(&mut self) {
        self.waiting = Waiting::Command;
        loop {
            if !matches!(self.waiting, Waiting::Command) {
                return;
            }
            if self.login.overdue && !self.login.logged_in {
                return self.login_timeout();
            }
            if self.too_many_bad_commands() {
                return;
            }
            match self.queue.pop_front() {
                Some(Queued::Reply(r)) => self.send_reply(r),
                Some(Queued::Invalid(e)) => {
                    self.out.push_back(Output::Disarm(Timer::Idle));
                    Metrics::inc(&self.metrics().commands_rejected);
                    self.metrics().count_command("OTHER", "invalid");
                    if self.note_bad(bad_input::BadCommand::Invalid) {
                        warn!(target: "ftpgate::session", error = %e, "refused command line");
                    }
                    self.reply(codes::SYNTAX_ERROR, &format!("Syntax error: {e}; command refused"));
                }
                Some(Queued::Command(cmd)) => {
                    // The idle clock stops while a command runs.
                    self.out.push_back(Output::Disarm(Timer::Idle));
                    self.run_command(cmd);
                }
                None => {
                    if self.queue.capacity() > 0 {
                        self.queue = VecDeque::new();
                    }
                    if self.draining {
                        self.reply(codes::NOT_AVAILABLE, "Service shutting down; please reconnect later");
                        return self.close();
                    }
                    // Nothing left to do: the idle clock starts again.
                    self.out.push_back(Output::Arm(Timer::Idle, self.config.idle));
                    return;
                }
            }
        }
    }

    // ---- events from the backend, timers, the end ----------------------------

    fn on_backend_reply(&mut self, r: Reply) {
        match std::mem::replace(&mut self.waiting, Waiting::Command) {
            Waiting::BackendReply(pending) => {
                if r.is_preliminary() {
                    if let Pending::TransferStart(s) = pending {
                        self.out.push_back(Output::Disarm(Timer::BackendReply));
                        return self.transfer_accepted(s, r);
                    }
                    // A 1xx is relayed when the client's command is the one
                    // answered; ftpgate's own exchanges keep theirs.
                    if pending.relays_preliminary() {
                        self.send_reply(r);
                    }
                    // Each reply gets the whole timeout again.
                    self.expect_backend(pending, self.config.backend_reply);
                    return;
                }
                self.out.push_back(Output::Disarm(Timer::BackendReply));
                self.on_final_reply(pending, r);
            }
            Waiting::Transfer(t) => self.on_transfer_reply(t, r),
            Waiting::Departed(d) => self.on_departed_reply(d, r),
            Waiting::Command => {
                // Unsolicited: typically the backend's own idle-timeout 421.
                let closing = r.code == codes::NOT_AVAILABLE;
                self.send_reply(r);
                if closing {
                    self.backend.quit_sent();
                    self.close();
                }
            }
            other => {
                // Unsolicited while ftpgate waits on something else: relayed
                // only if it ends the session, which the client must hear.
                self.waiting = other;
                if r.code == codes::NOT_AVAILABLE {
                    self.backend_failed(BackendFailure::ClosedWith(r.text()));
                } else {
                    debug!(target: "ftpgate::session", code = r.code, "unsolicited backend reply dropped");
                }
            }
        }
    }

    fn on_final_reply(&mut self, pending: Pending, r: Reply) {
        match pending {
            Pending::Forward(cmd) => self.on_forwarded(cmd, r),
            Pending::Login(cmd) => self.on_login_reply(cmd, r),
            Pending::DeferredUser(pass) => self.on_deferred_user_reply(pass, r),
            Pending::AppendSize(s) => self.on_append_size(s, &r),
            Pending::OverwriteCheck { cmd, denial, limits } => {
                if r.code == codes::FILE_STATUS {
                    self.deny(&cmd, &denial);
                } else {
                    self.metrics().count_command(cmd.verb.as_str(), "allowed");
                    self.allowed(cmd, limits);
                }
                self.resume_if_idle();
            }
            Pending::ClearRest { then } => {
                self.transfers.rest_offset = None;
                self.send_reply(then);
                self.resume();
            }
            Pending::Cwd { then } => {
                if r.code == codes::PATH_CREATED {
                    if let Some(dir) = r.lines.first().and_then(|l| crate::policy::path::parse_257(l)) {
                        self.cwd = dir;
                    }
                }
                if let Some(then) = then {
                    self.send_reply(then);
                }
                self.resume();
            }
            Pending::Feat => {
                if self.backend.name().is_none() {
                    self.out.push_back(Output::FeatLearned(r.clone()));
                }
                let reply = self.feat_reply(Some(r));
                self.send_reply(reply);
                self.resume();
            }
            Pending::BackendPassive { epsv, purpose } => self.on_backend_passive(epsv, purpose, r),
            Pending::TransferStart(s) => self.on_transfer_start_reply(s, r),
            Pending::BastionUser(name) => self.on_bastion_user_reply(name, r),
            Pending::BastionPass(name) => self.on_bastion_pass_reply(name, r),
            Pending::CapDele(f) => self.on_cap_dele_reply(*f, r),
            Pending::ScanDele(f) => self.on_scan_dele_reply(*f, r),
            Pending::Abor(a) => self.on_abor_reply(a, r),
            Pending::Opening(step) => self.on_opening_reply(step, r),
        }
    }

    /// The final reply to a command forwarded as it is.
    fn on_forwarded(&mut self, cmd: Command, mut r: Reply) {
        if std::mem::take(&mut self.transfers.cut) && cmd.verb == Verb::Abor {
            r = super::verdict::abor_reply(false, r);
        }
        let positive = r.is_positive();
        match &cmd.verb {
            Verb::Rest => {
                // An offset the backend took but ftpgate cannot read counts
                // as the whole cap used (no upload passes unseen).
                self.transfers.rest_offset = (r.code == codes::PENDING)
                    .then(|| cmd.arg_str().and_then(|a| a.trim().parse().ok()).unwrap_or(u64::MAX))
            }
            Verb::Quit => {
                self.send_reply(r);
                return self.close();
            }
            Verb::Other(_) if matches!(r.code, codes::SYNTAX_ERROR | codes::NOT_IMPLEMENTED) => {
                self.note_bad(bad_input::BadCommand::Unknown);
            }
            Verb::Type if positive => {
                let t = cmd.arg_str().unwrap_or("").to_ascii_uppercase();
                self.transfers.binary = t.starts_with('I') || t.starts_with('L');
            }
            Verb::Cwd | Verb::Cdup | Verb::Xcwd | Verb::Xcup if positive => {
                self.send_reply(r);
                return self.ask_backend(Command::new(Verb::Pwd, None), Pending::Cwd { then: None });
            }
            _ => {}
        }
        self.send_reply(r);
        self.resume();
    }

    /// Resumes unless the last step left the session waiting on something.
    fn resume_if_idle(&mut self) {
        if matches!(self.waiting, Waiting::Command) {
            self.resume();
        }
    }
}

impl Pending {
    /// Whether a 1xx for this exchange belongs to the client.
    fn relays_preliminary(&self) -> bool {
        matches!(self, Pending::Forward(_) | Pending::Login(_) | Pending::Feat | Pending::TransferStart(_))
    }
}
