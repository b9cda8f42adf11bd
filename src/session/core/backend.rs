//! Opening the backend control connection, at login and never before: the
//! driver connects (TCP, a PROXY header, implicit TLS when configured); the
//! core takes it from there, hidden from the client (ftpgate greeted it
//! itself): the backend's greeting, ftpgate's own explicit FTPS (`AUTH TLS`,
//! the handshake, `PBSZ 0`, `PROT P`), then what the client said before login
//! that the backend must hear too (`HOST`, `OPTS UTF8`). Then the command
//! that needed the backend runs.

use super::failure::BackendFailure;
use super::interface::Output;
use super::AfterOpen;
use super::Pending;
use super::Waiting;
use super::{Core, Env};
use crate::protocol::codes;
use crate::protocol::Command;
use crate::protocol::Reply;
use crate::protocol::Verb;
use std::collections::VecDeque;
use std::net::SocketAddr;
use tracing::debug;
use tracing::info;

/// How the backend control connection is secured, once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendSecurity {
    Plain,
    /// TLS from the first byte (the driver did the handshake): `PBSZ`/`PROT` follow.
    ImplicitTls,
    /// `AUTH TLS` after the greeting, then `PBSZ`/`PROT`.
    ExplicitTls,
}

/// The backend control connection as the core knows it: one state at a
/// time, each owning only what is true in it.
#[derive(Debug)]
pub(super) enum BackendLink {
    /// No backend connection yet (before login). `replay`: what the client
    /// said before login that the backend must hear too (`HOST`, `OPTS UTF8`).
    Detached { replay: Vec<Command> },
    /// Asked of the driver (`ConnectBackend`), not connected yet.
    Connecting(Opening),
    /// Connected: greeting, ftpgate's own FTPS and the replay under way.
    /// Replies are read; the client's commands wait.
    Opening(Conn, Opening),
    /// Takes the client's commands.
    Open(Conn),
}

/// A connected backend control connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// Its control address: data connections go to this host.
    peer: SocketAddr,
    /// The named backend; `None`: the default.
    name: Option<String>,
    /// Cleared once it refuses EPSV; PASV is used from then on.
    pub(super) epsv: bool,
    /// QUIT went to it, or it is gone: nothing more is sent at the end.
    pub(super) quit_sent: bool,
}

impl BackendLink {
    pub(super) fn new() -> BackendLink {
        BackendLink::Detached { replay: Vec::new() }
    }

    fn conn(&self) -> Option<&Conn> {
        match self {
            BackendLink::Opening(c, _) | BackendLink::Open(c) => Some(c),
            _ => None,
        }
    }

    pub(super) fn conn_mut(&mut self) -> Option<&mut Conn> {
        match self {
            BackendLink::Opening(c, _) | BackendLink::Open(c) => Some(c),
            _ => None,
        }
    }

    /// Connected: its replies are read.
    pub(super) fn connected(&self) -> bool {
        self.conn().is_some()
    }

    /// Takes the client's commands.
    pub(super) fn is_open(&self) -> bool {
        matches!(self, BackendLink::Open(_))
    }

    /// The named backend of the connection; `None`: the default, or none.
    pub(super) fn name(&self) -> Option<&str> {
        self.conn().and_then(|c| c.name.as_deref())
    }

    pub(super) fn peer(&self) -> Option<SocketAddr> {
        self.conn().map(|c| c.peer)
    }

    /// Whether QUIT is still to be sent to it when the session closes.
    pub(super) fn owes_quit(&self) -> bool {
        self.conn().is_some_and(|c| !c.quit_sent)
    }

    /// QUIT went, or the connection is gone: nothing more to say to it.
    pub(super) fn quit_sent(&mut self) {
        if let Some(c) = self.conn_mut() {
            c.quit_sent = true;
        }
    }

    /// What to replay once a backend is open; `None` once one was asked for.
    pub(super) fn replay_mut(&mut self) -> Option<&mut Vec<Command>> {
        match self {
            BackendLink::Detached { replay } => Some(replay),
            _ => None,
        }
    }
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
        let replay = self.backend.replay_mut().map(std::mem::take).unwrap_or_default().into();
        self.backend = BackendLink::Connecting(Opening { then, security: BackendSecurity::Plain, replay });
        self.waiting = Waiting::BackendConnect;
    }

    pub(super) fn on_backend_connected(&mut self, peer: SocketAddr, name: Option<String>, security: BackendSecurity) {
        if !matches!(self.waiting, Waiting::BackendConnect) {
            return;
        }
        let BackendLink::Connecting(mut opening) = std::mem::replace(&mut self.backend, BackendLink::new()) else {
            return;
        };
        opening.security = security;
        // A new connection: whatever the last one was (a bastion user may move
        // to another backend), it takes no commands until it is ready.
        let conn = Conn { peer, name, epsv: true, quit_sent: false };
        self.backend = BackendLink::Opening(conn, opening);
        self.expect_backend(Pending::Opening(OpenStep::Greeting), self.config.backend_reply);
    }

    fn opening_mut(&mut self) -> Option<&mut Opening> {
        match &mut self.backend {
            BackendLink::Opening(_, o) => Some(o),
            _ => None,
        }
    }

    pub(super) fn on_opening_reply(&mut self, step: OpenStep, r: Reply) {
        let security = self.opening_mut().map_or(BackendSecurity::Plain, |o| o.security);
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
                debug!(target: "ftpgate::session", "backend control connection secured");
                self.replay_next();
            }
            (OpenStep::Prot, _) => self.refused_by_backend("PROT P", &r),
            (OpenStep::Replay, code) => {
                debug!(target: "ftpgate::session", code, "replayed to the backend");
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
        if let Some(cmd) = self.opening_mut().and_then(|o| o.replay.pop_front()) {
            return self.ask_backend(cmd, Pending::Opening(OpenStep::Replay));
        }
        let BackendLink::Opening(conn, opening) = std::mem::replace(&mut self.backend, BackendLink::new()) else {
            return;
        };
        info!(target: "ftpgate::session", backend = %conn.peer, name = conn.name.as_deref().unwrap_or("default"), "backend control connection open");
        self.backend = BackendLink::Open(conn);
        self.waiting = Waiting::Command;
        match opening.then {
            AfterOpen::Bastion(name) => self.bastion_backend_login(name),
            AfterOpen::Login(pass) => self.deferred_login(pass),
        }
        self.resume_if_idle();
    }
}
