//! Opening the backend control connection, at login and never before: the
//! driver connects (TCP, a PROXY header, implicit TLS when configured); the
//! core takes it from there, hidden from the client (ftpgate greeted it
//! itself): the backend's greeting, ftpgate's own explicit FTPS (`AUTH TLS`,
//! the handshake, `PBSZ 0`, `PROT P`), then what the client said before login
//! that the backend must hear too (`HOST`, `OPTS UTF8`). Then the command
//! that needed the backend runs.

use super::*;

/// How the backend control connection is secured, once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendSecurity {
    Plain,
    /// TLS from the first byte (the driver did the handshake): `PBSZ`/`PROT` follow.
    ImplicitTls,
    /// `AUTH TLS` after the greeting, then `PBSZ`/`PROT`.
    ExplicitTls,
}

/// A backend connection on its way to taking commands.
#[derive(Debug)]
pub(super) struct Opening {
    then: AfterOpen,
    security: BackendSecurity,
    /// Said before login, already answered; sent in order, replies only logged.
    replay: VecDeque<Command>,
}

/// Where an opening backend connection is.
#[derive(Debug)]
pub(super) enum OpenStep {
    Greeting,
    Auth,
    Pbsz,
    Prot,
    Replay,
}

impl<E: Env> Core<E> {
    /// Asks the driver for a backend connection (`name`: a named backend;
    /// `None`: the default pool); `then` runs once it is ready.
    pub(super) fn open_backend(&mut self, name: Option<String>, then: AfterOpen) {
        self.out.push_back(Output::ConnectBackend { name });
        let replay = std::mem::take(&mut self.replay).into();
        self.opening = Some(Opening { then, security: BackendSecurity::Plain, replay });
        self.waiting = Waiting::BackendConnect;
    }

    pub(super) fn on_backend_connected(&mut self, peer: SocketAddr, name: Option<String>, security: BackendSecurity) {
        if !matches!(self.waiting, Waiting::BackendConnect) {
            return;
        }
        let Some(opening) = &mut self.opening else { return };
        opening.security = security;
        // A new connection: whatever the last one was (a bastion user may move
        // to another backend), it takes no commands until it is ready.
        self.backend_connected = true;
        self.backend_open = false;
        self.backend_quit = false;
        self.backend_peer = Some(peer);
        self.backend_name = name;
        self.backend_epsv = true;
        self.expect_backend(Pending::Opening(OpenStep::Greeting), self.config.backend_reply);
    }

    pub(super) fn on_opening_reply(&mut self, step: OpenStep, r: Reply) {
        let security = self.opening.as_ref().map_or(BackendSecurity::Plain, |o| o.security);
        match (step, r.code) {
            (OpenStep::Greeting, codes::READY) => match security {
                BackendSecurity::ExplicitTls => {
                    self.ask_backend(Command::new(Verb::Auth, Some(b"TLS")), Pending::Opening(OpenStep::Auth))
                }
                BackendSecurity::ImplicitTls => self.ask_pbsz(),
                BackendSecurity::Plain => self.replay_next(),
            },
            (OpenStep::Greeting, _) => self.refused_by_backend("a session", &r),
            (OpenStep::Auth, codes::AUTH_OK) => {
                self.out.push_back(Output::UpgradeBackend);
                self.waiting = Waiting::BackendTls;
            }
            (OpenStep::Auth, _) => self.refused_by_backend("AUTH TLS", &r),
            (OpenStep::Pbsz, codes::OK) => {
                self.ask_backend(Command::new(Verb::Prot, Some(b"P")), Pending::Opening(OpenStep::Prot))
            }
            (OpenStep::Pbsz, _) => self.refused_by_backend("PBSZ 0", &r),
            (OpenStep::Prot, codes::OK) => {
                debug!("backend control connection secured");
                self.replay_next();
            }
            (OpenStep::Prot, _) => self.refused_by_backend("PROT P", &r),
            (OpenStep::Replay, code) => {
                debug!(code, "replayed to the backend");
                self.replay_next();
            }
        }
    }

    fn ask_pbsz(&mut self) {
        self.ask_backend(Command::new(Verb::Pbsz, Some(b"0")), Pending::Opening(OpenStep::Pbsz));
    }

    pub(super) fn on_backend_tls(&mut self, result: Result<(), BackendFailure>) {
        if !matches!(self.waiting, Waiting::BackendTls) {
            return;
        }
        match result {
            Ok(()) => self.ask_pbsz(),
            Err(e) => self.backend_failed(e),
        }
    }

    fn refused_by_backend(&mut self, command: &str, r: &Reply) {
        self.backend_failed(BackendFailure::Refused { command: command.to_string(), reply: r.text() });
    }

    fn replay_next(&mut self) {
        if let Some(cmd) = self.opening.as_mut().and_then(|o| o.replay.pop_front()) {
            return self.ask_backend(cmd, Pending::Opening(OpenStep::Replay));
        }
        let Some(opening) = self.opening.take() else { return };
        self.backend_open = true;
        info!(
            backend = %self.backend_peer.map(|p| p.to_string()).unwrap_or_default(),
            name = self.backend_name.as_deref().unwrap_or("default"),
            "backend control connection open"
        );
        self.waiting = Waiting::Command;
        match opening.then {
            AfterOpen::Bastion(name) => self.bastion_backend_login(name),
            AfterOpen::Login(pass) => self.deferred_login(pass),
        }
        self.resume_if_idle();
    }
}
