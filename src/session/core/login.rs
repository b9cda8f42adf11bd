//! Each command's way in: TLS required on the listener, the policy gate (bans,
//! session limits, rules; a denied command never reaches the backend), what
//! ftpgate answers itself before a backend exists (the front door), and
//! logging in, through to the backend or as a bastion user checked here.

use super::failure::OverLimit;
use super::interface::LoginGate;
use super::interface::Output;
use super::interface::Timer;
use super::AfterOpen;
use super::Pending;
use super::Waiting;
use super::{Core, Env};
use crate::config::ClientTlsMode;
use crate::metrics::Metrics;
use crate::policy::limits::TransferLimits;
use crate::policy::{Denial, Network, Policy, SessionView, Verdict};
use crate::protocol::codes;
use crate::protocol::command::TransferDirection;
use crate::protocol::Command;
use crate::protocol::Reply;
use crate::protocol::Verb;
use tracing::debug;
use tracing::info;
use tracing::warn;

/// `SYST` before login: what nearly every server says, and what clients
/// expect for listing parsers; it names no software.
const SYST_REPLY: &str = "UNIX Type: L8";

/// Who the client is, as far as its login got.
#[derive(Debug, Default)]
pub(super) struct LoginState {
    /// The name in the last USER.
    pub(super) user: Option<String>,
    /// A USER answered by ftpgate itself, waiting for its PASS.
    pub(super) awaiting: AwaitingPass,
    pub(super) logged_in: bool,
    /// The login deadline passed while the session was busy.
    pub(super) overdue: bool,
}

/// A USER that ftpgate answered `331` itself.
#[derive(Debug, Default)]
pub(super) enum AwaitingPass {
    #[default]
    Nothing,
    /// A bastion user: its PASS is checked by ftpgate.
    Bastion(String),
    /// A pass-through user: the backend is opened only when PASS comes
    /// (then USER and PASS go to it), so a client that never sends one holds
    /// no backend connection.
    Deferred(Command),
}

impl<E: Env> Core<E> {
    /// One command from the queue, from the top.
    pub(super) fn run_command(&mut self, cmd: Command) {
        debug!(target: "ftpgate::session", command = %cmd, "client command");
        if self.config.mode == ClientTlsMode::Required
            && self.protection.tls.is_none()
            && !crate::protocol::command::ALLOWED_BEFORE_TLS.contains(&cmd.verb.as_str())
        {
            let text = format!("TLS required on this listener: send AUTH TLS before {}", cmd.verb);
            return self.reply(codes::NOT_LOGGED_IN, &text);
        }
        let policy = self.env.policy();
        let network = match policy.admit(self.config.client_peer.ip()) {
            Ok(network) => network,
            Err(d) => {
                // A reload removed this client's network.
                self.metrics().count_command(cmd.verb.as_str(), "denied");
                self.deny(&cmd, &d);
                return self.close();
            }
        };
        if matches!(cmd.verb, Verb::User | Verb::Pass) {
            let limit = policy.login.max_sessions_per_user;
            let user = (cmd.verb == Verb::User && limit > 0).then(|| cmd.arg_str().unwrap_or("").to_string());
            self.out.push_back(Output::CheckLogin { user });
            self.waiting = Waiting::LoginCheck(cmd);
            return;
        }
        self.evaluate_on(&policy, network, cmd);
    }

    pub(super) fn on_login_checked(&mut self, gate: LoginGate) {
        let Waiting::LoginCheck(cmd) = std::mem::replace(&mut self.waiting, Waiting::Command) else { return };
        if let Some(reason) = gate.refusal {
            self.metrics().count_command(cmd.verb.as_str(), "denied");
            self.deny(&cmd, &Denial { code: codes::NOT_AVAILABLE, rule: "login".into(), reason });
            return self.close();
        }
        let limit = self.env.policy().login.max_sessions_per_user;
        if let (Verb::User, Some(open)) = (&cmd.verb, gate.user_sessions) {
            if limit > 0 && open >= limit {
                let user = cmd.arg_str().unwrap_or("").to_string();
                self.metrics().count_command(cmd.verb.as_str(), "denied");
                let reason = format!("Too many sessions for user {user} (limit {limit})");
                // Not a bad command: a client may poll for its turn.
                self.refuse_login(&cmd, &Denial { code: codes::NOT_LOGGED_IN, rule: "login".into(), reason });
                return self.resume();
            }
        }
        self.evaluate(cmd);
        self.resume_if_idle();
    }

    /// The policy's rules for `cmd` after a wait (the login checks), with
    /// the policy as it is now.
    fn evaluate(&mut self, cmd: Command) {
        let policy = self.env.policy();
        let Ok(network) = policy.admit(self.config.client_peer.ip()) else { return self.close() };
        self.evaluate_on(&policy, network, cmd);
    }

    /// The policy's rules for `cmd` from the client's `network`: one
    /// evaluation per command, the transfer limits included (they travel
    /// with the command to its start).
    fn evaluate_on(&mut self, policy: &Policy, network: &Network, cmd: Command) {
        let view = SessionView {
            network,
            tls: self.protection.tls.is_some(),
            pbsz: self.protection.pbsz,
            prot_private: self.protection.prot_private,
            client_cert: self.has_certificate(),
            user: self.login.user.as_deref(),
            logged_in: self.login.logged_in,
            cwd: &self.cwd,
            previous: self.previous.as_ref(),
            data_ready: self.transfers.setup.is_some(),
        };
        let verdict = policy.evaluate(&view, &cmd);
        let limits = cmd.verb.transfer_direction().map(|_| policy.limits_for(self.login.user.as_deref(), network));
        let denial = match verdict {
            Verdict::Allow => None,
            Verdict::Deny(d) => Some(d),
            Verdict::AllowIfNew { path, denial } if self.backend.is_open() => {
                // Asked with SIZE, which every server here answers with 213 for a file.
                let check = Pending::OverwriteCheck { cmd, denial, limits };
                return self.ask_backend(Command::new(Verb::Size, Some(&path)), check);
            }
            Verdict::AllowIfNew { .. } => None,
        };
        match denial {
            Some(d) => {
                self.metrics().count_command(cmd.verb.as_str(), "denied");
                self.deny(&cmd, &d);
            }
            None => {
                self.metrics().count_command(cmd.verb.as_str(), "allowed");
                self.allowed(cmd, limits);
            }
        }
    }

    /// Answers a refused command, logs it for the audit trail and counts it.
    pub(super) fn deny(&mut self, cmd: &Command, d: &Denial) {
        self.metrics().count_denial(&d.rule);
        if self.note_bad(super::bad_input::BadCommand::Denied) {
            self.log_denial(cmd, d);
        }
        self.answer_denial(cmd, d);
    }

    /// A login refused by a limit (not by the rules): answered and logged
    /// like a denial, not counted as a bad command.
    fn refuse_login(&mut self, cmd: &Command, d: &Denial) {
        self.metrics().count_denial(&d.rule);
        if self.may_log_refusal() {
            self.log_denial(cmd, d);
        }
        self.answer_denial(cmd, d);
    }

    fn answer_denial(&mut self, cmd: &Command, d: &Denial) {
        let reply = Reply::single(d.code, &d.reason);
        if cmd.verb.transfer_direction().is_some() {
            return self.refuse_transfer(reply);
        }
        self.send_reply(reply);
    }

    fn log_denial(&self, cmd: &Command, d: &Denial) {
        info!(
            target: "ftpgate::audit",
            user = self.login.user.as_deref().unwrap_or("-"),
            command = %cmd.verb,
            denied_by = %d.rule,
            code = d.code,
            reason = %d.reason,
            "denied"
        );
    }

    /// A command the policy let through: answered before a backend exists,
    /// or run. `limits`: a transfer's, decided with its verdict.
    pub(super) fn allowed(&mut self, cmd: Command, limits: Option<TransferLimits>) {
        if cmd.verb == Verb::User && self.config.client_cert_user_match {
            let name = cmd.arg_str().unwrap_or("");
            if !self.matches_certificate(name) {
                // Refused before any backend is opened for it.
                Metrics::inc(&self.metrics().logins_refused);
                warn!(target: "ftpgate::session", user = %name, "user name does not match the client certificate");
                return self
                    .reply(codes::NOT_LOGGED_IN, "Login refused: user name does not match your client certificate");
            }
        }
        if !self.backend.is_open() {
            match cmd.verb {
                Verb::Auth | Verb::Pbsz | Verb::Prot | Verb::Ccc | Verb::Rein => {}
                Verb::User => {}
                Verb::Pass if matches!(self.login.awaiting, AwaitingPass::Bastion(_)) => {}
                Verb::Pass if matches!(self.login.awaiting, AwaitingPass::Deferred(_)) => {
                    // As dispatch would: the ordering rules see this PASS.
                    self.previous = Some(Verb::Pass);
                    return self.open_backend(self.backend.name().map(str::to_string), AfterOpen::Login(cmd));
                }
                _ => return self.before_backend(cmd),
            }
        }
        self.dispatch(cmd, limits);
    }

    /// The front door: what ftpgate answers itself before a backend exists,
    /// so idle or hostile connections never reach one and scanners never
    /// learn which server sits behind ftpgate.
    fn before_backend(&mut self, cmd: Command) {
        match cmd.verb {
            Verb::Quit => {
                self.backend.quit_sent();
                self.reply(codes::CLOSING, "Goodbye.");
                self.close();
            }
            Verb::Feat => {
                let reply = self.feat_reply(self.env.backend_feat());
                self.send_reply(reply);
            }
            Verb::Pass => self.reply(codes::BAD_SEQUENCE, "Login with USER first."),
            Verb::Syst => self.reply(codes::SYSTEM_TYPE, SYST_REPLY),
            Verb::Noop => self.reply(codes::OK, "NOOP ok."),
            Verb::Help => self.reply(codes::HELP, "Log in with USER and PASS; FEAT lists the extensions offered."),
            Verb::Clnt => self.reply(codes::OK, "Noted."),
            Verb::Opts => {
                let arg = cmd.arg_str().unwrap_or("").to_ascii_uppercase();
                if arg == "UTF8" || arg == "UTF8 ON" {
                    // Replayed to the backend once it is connected.
                    if let Some(replay) = self.backend.replay_mut() {
                        replay.push(cmd);
                    }
                    self.reply(codes::OK, "Always in UTF8 mode.");
                } else {
                    self.reply(codes::BAD_ARGUMENT, "Option not understood before login.");
                }
            }
            Verb::Host => {
                if cmd.arg.as_deref().is_none_or(<[u8]>::is_empty) {
                    self.reply(codes::BAD_ARGUMENT, "HOST needs a host name.");
                } else {
                    // RFC 7151: the backend's virtual host is chosen at login,
                    // so HOST goes to the backend before USER does.
                    if let Some(replay) = self.backend.replay_mut() {
                        replay.retain(|c| c.verb != Verb::Host);
                        replay.push(cmd);
                    }
                    self.reply(codes::READY, "Host accepted.");
                }
            }
            _ => self.reply(codes::NOT_LOGGED_IN, "Please log in with USER and PASS first."),
        }
    }

    /// Runs an allowed command.
    pub(super) fn dispatch(&mut self, cmd: Command, limits: Option<TransferLimits>) {
        self.previous = Some(cmd.verb.clone());
        match cmd.verb.clone() {
            Verb::Pasv | Verb::Epsv => self.passive(cmd),
            Verb::Port | Verb::Eprt => self.active(&cmd),
            v if v.transfer_direction().is_some() => {
                let direction = v.transfer_direction().unwrap_or(TransferDirection::Download);
                self.start_transfer(cmd, direction, limits.unwrap_or_default())
            }
            Verb::Feat => self.ask_backend(cmd, Pending::Feat),
            Verb::Auth => self.auth(&cmd),
            Verb::Pbsz => self.pbsz(&cmd),
            Verb::Prot => self.prot(&cmd),
            Verb::Ccc => {
                self.reply(codes::POLICY_REFUSED, "CCC refused: ftpgate keeps the control connection encrypted")
            }
            Verb::Quit => {
                self.backend.quit_sent();
                self.ask_backend(cmd.clone(), Pending::Forward(cmd));
            }
            // Resetting a session that may have TLS on both legs, each set up
            // on its own, is not something any client needs; vsftpd refuses too.
            Verb::Rein => self.reply(codes::NOT_IMPLEMENTED, "REIN is not supported; reconnect instead"),
            Verb::User => self.user(cmd),
            Verb::Pass if matches!(self.login.awaiting, AwaitingPass::Bastion(_)) => {
                let name = match std::mem::take(&mut self.login.awaiting) {
                    AwaitingPass::Bastion(name) => name,
                    _ => String::new(),
                };
                self.bastion_password(name, &cmd);
            }
            Verb::Pass | Verb::Acct => self.ask_backend(cmd.clone(), Pending::Login(cmd)),
            _ => self.ask_backend(cmd.clone(), Pending::Forward(cmd)),
        }
    }

    fn has_certificate(&self) -> bool {
        self.protection.tls.as_ref().is_some_and(|t| t.certificate_names.is_some())
    }

    /// Whether `user` is one of the names in the client certificate. No
    /// certificate (no TLS yet, or mutual TLS off) never matches.
    fn matches_certificate(&self, user: &str) -> bool {
        self.protection
            .tls
            .as_ref()
            .and_then(|t| t.certificate_names.as_ref())
            .is_some_and(|names| names.iter().any(|n| n == user))
    }

    fn user(&mut self, cmd: Command) {
        let name = cmd.arg_str().unwrap_or("").to_string();
        self.login.user = Some(name.clone());
        self.out.push_back(Output::UserNamed(name.clone()));
        self.login.awaiting = AwaitingPass::Nothing;
        let policy = self.env.policy();
        if let Some(bu) = policy.bastion_users.get(&name) {
            if bu.client_cert && !self.has_certificate() {
                let d = Denial {
                    code: codes::NOT_LOGGED_IN,
                    rule: "bastion user".into(),
                    reason: "Login refused: this user needs a client certificate".into(),
                };
                return self.deny(&cmd, &d);
            }
            self.login.awaiting = AwaitingPass::Bastion(name);
            return self.reply(codes::NEED_PASSWORD, "Password required");
        }
        if !self.backend.is_open() {
            // Answered here; the backend hears USER once PASS comes.
            self.login.awaiting = AwaitingPass::Deferred(cmd);
            return self.reply(codes::NEED_PASSWORD, "Password required.");
        }
        self.ask_backend(cmd.clone(), Pending::Login(cmd));
    }

    /// The backend is open for a deferred login: USER goes first.
    pub(super) fn deferred_login(&mut self, pass: Command) {
        match std::mem::take(&mut self.login.awaiting) {
            AwaitingPass::Deferred(user) => self.ask_backend(user, Pending::DeferredUser(pass)),
            _ => self.reply(codes::BAD_SEQUENCE, "Login with USER first."),
        }
    }

    /// The backend's reply to the deferred USER: `331` sends the PASS;
    /// anything else is the answer to the client's PASS (`230`: no password
    /// needed; `530`: refused, a failed login).
    pub(super) fn on_deferred_user_reply(&mut self, pass: Command, r: Reply) {
        if r.code == codes::NEED_PASSWORD {
            return self.ask_backend(pass.clone(), Pending::Login(pass));
        }
        self.on_login_reply(pass, r);
    }

    /// The backend's final reply to a pass-through USER/PASS/ACCT. The login
    /// is counted (session slots, failures, bans) before the client hears of
    /// it, so its next connection, here or on another instance, sees the count.
    pub(super) fn on_login_reply(&mut self, cmd: Command, r: Reply) {
        if r.code == codes::LOGGED_IN {
            return self.logged_in(Some(r));
        }
        if r.code == codes::NOT_LOGGED_IN && cmd.verb == Verb::Pass {
            self.out.push_back(Output::LoginFailed { user: self.user_name() });
        }
        self.send_reply(r);
        self.resume();
    }

    /// Logged in: counted, then the working directory is learnt from the
    /// backend so rules see paths as the backend resolves them; `then` (the
    /// `230`) goes to the client after that.
    fn logged_in(&mut self, then: Option<Reply>) {
        self.login.logged_in = true;
        self.reset_bad_count();
        self.out.push_back(Output::Disarm(Timer::Login));
        self.out.push_back(Output::LoginSucceeded { user: self.user_name() });
        self.ask_backend(Command::new(Verb::Pwd, None), Pending::Cwd { then });
    }

    /// Two logins of one user raced past the check at USER: the slot taken
    /// at login decides, so exactly the limit get in. The backend session
    /// is ended (QUIT) and the client hears `421` instead of `230`.
    pub(super) fn on_login_over_limit(&mut self, why: OverLimit) {
        self.metrics().session_refused("user_limit");
        let why = why.to_string();
        info!(target: "ftpgate::audit", user = %self.user_name(), why, "login refused at the session limit");
        self.reply(codes::NOT_AVAILABLE, &why);
        self.close();
    }

    fn bastion_password(&mut self, name: String, cmd: &Command) {
        let Some(bu) = self.env.policy().bastion_users.get(&name).cloned() else {
            self.out.push_back(Output::LoginFailed { user: name });
            return self.reply(codes::NOT_LOGGED_IN, "Login incorrect.");
        };
        let password = cmd.arg.clone().unwrap_or_default();
        self.out.push_back(Output::VerifyPassword { hash: bu.password_hash, password });
        self.waiting = Waiting::Password(name);
    }

    pub(super) fn on_password_checked(&mut self, ok: bool) {
        let Waiting::Password(name) = std::mem::replace(&mut self.waiting, Waiting::Command) else { return };
        let backend = self.env.policy().bastion_users.get(&name).map(|bu| bu.backend.clone());
        let Some(backend) = backend.filter(|_| ok) else {
            self.out.push_back(Output::LoginFailed { user: name });
            self.reply(codes::NOT_LOGGED_IN, "Login incorrect.");
            return self.resume();
        };
        if !self.backend.is_open() || backend.as_deref() != self.backend.name() {
            return self.open_backend(backend, AfterOpen::Bastion(name));
        }
        self.bastion_backend_login(name);
        self.resume_if_idle();
    }

    /// Logs in on the backend with the bastion user's mapped account; the
    /// client sees neither the account nor the backend's replies.
    pub(super) fn bastion_backend_login(&mut self, name: String) {
        let Some(bu) = self.env.policy().bastion_users.get(&name).cloned() else {
            return self.reply(codes::NOT_LOGGED_IN, "Login incorrect.");
        };
        self.ask_backend(Command::new(Verb::User, Some(bu.backend_user.as_bytes())), Pending::BastionUser(name));
    }

    pub(super) fn on_bastion_user_reply(&mut self, name: String, r: Reply) {
        if r.code == codes::NEED_PASSWORD {
            if let Some(bu) = self.env.policy().bastion_users.get(&name).cloned() {
                let pass = Command::new(Verb::Pass, Some(bu.backend_password.expose().as_bytes()));
                return self.ask_backend(pass, Pending::BastionPass(name));
            }
        }
        self.on_bastion_pass_reply(name, r);
    }

    pub(super) fn on_bastion_pass_reply(&mut self, name: String, r: Reply) {
        if r.code != codes::LOGGED_IN {
            warn!(target: "ftpgate::session", user = %name, reply = %r.text(), "backend refused the mapped account");
            self.reply(codes::NOT_LOGGED_IN, "Login incorrect: the backend refused this user's account");
            return self.resume();
        }
        let account = self.env.policy().bastion_users.get(&name).map(|bu| bu.backend_user.clone()).unwrap_or_default();
        info!(
            target: "ftpgate::audit",
            user = %name,
            backend = self.backend.name().unwrap_or("default"),
            backend_account = %account,
            "bastion login mapped to a backend account"
        );
        self.logged_in(Some(Reply::single(codes::LOGGED_IN, "Login successful.")));
    }

    /// `FEAT` as the client sees it: the backend's features that ftpgate can
    /// carry, plus ftpgate's own; before any backend reply is known, only
    /// ftpgate's own.
    pub(super) fn feat_reply(&self, backend: Option<Reply>) -> Reply {
        let own: &[&str] = if self.config.tls_offered { &["AUTH TLS", "PBSZ", "PROT"] } else { &[] };
        let backend = backend.unwrap_or_else(|| Reply::new(codes::FEATURES, &["Features:", "UTF8", "End"]));
        crate::session::feat::filter(&backend, own)
    }
}
