//! Data-connection setup: `PASV`/`EPSV` answered on ftpgate's own passive
//! ports, `PORT`/`EPRT` checked against bounce attacks, the backend always in
//! passive mode (EPSV first, PASV once refused), and never aimed anywhere but
//! the backend's control address, whatever its reply says.

use super::failure::BackendFailure;
use super::failure::DataSetupFailure;
use super::interface::Output;
use super::transfer;
use super::Pending;
use super::Waiting;
use super::{Core, Env};
use crate::metrics::Metrics;
use crate::protocol::address;
use crate::protocol::codes;
use crate::protocol::Command;
use crate::protocol::Reply;
use crate::protocol::Verb;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use tracing::debug;
use tracing::warn;

/// The data connection the client has asked for and not used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSetup {
    /// ftpgate accepts on its passive port (the driver holds the channel).
    Passive,
    /// The client listens at this address (PORT/EPRT).
    Active(SocketAddr),
}

/// What the backend's passive port is wanted for.
#[derive(Debug)]
pub(super) enum PassivePurpose {
    /// A client's PASV (`Some`: the address for 227) or EPSV.
    Client { pasv: Option<Ipv4Addr> },
    /// An active-mode transfer, whose backend leg ftpgate connects itself.
    Transfer(transfer::Starting),
}

/// Backend refusals of EPSV after which PASV is used for the session.
const EPSV_REFUSED: &[u16] = &[500, 501, 502, 504, 522];

impl<E: Env> Core<E> {
    pub(super) fn passive(&mut self, cmd: Command) {
        let client_v4 = self.config.client_peer.ip().to_canonical().is_ipv4();
        if cmd.verb == Verb::Epsv {
            match cmd.arg_str().map(str::to_ascii_uppercase).as_deref() {
                None | Some("") => {}
                Some("ALL") => {
                    self.transfers.epsv_all = true;
                    return self.reply(codes::OK, "EPSV ALL accepted; PORT, EPRT and PASV are now refused");
                }
                Some("1") if client_v4 => {}
                Some("2") if !client_v4 => {}
                Some(_) => {
                    let own = if client_v4 { 1 } else { 2 };
                    return self.reply(
                        codes::NETWORK_PROTOCOL_NOT_SUPPORTED,
                        &format!("Network protocol not supported, use ({own})"),
                    );
                }
            }
        } else if self.transfers.epsv_all {
            return self.reply(codes::BAD_SEQUENCE, "PASV refused after EPSV ALL (RFC 2428)");
        }
        // Any earlier unused setup is abandoned, as a server would.
        self.drop_data();
        let pasv = match (cmd.verb == Verb::Pasv, self.config.public_address) {
            (false, _) => None,
            (true, Some(IpAddr::V4(ip))) => Some(ip),
            (true, _) => match self.config.client_local.ip().to_canonical() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => {
                    return self.reply(codes::SYNTAX_ERROR, "PASV cannot describe an IPv6 address; use EPSV")
                }
            },
        };
        self.backend_passive(PassivePurpose::Client { pasv });
    }

    pub(super) fn drop_data(&mut self) {
        if self.transfers.setup.take() == Some(DataSetup::Passive) {
            self.out.push_back(Output::DropData);
        }
    }

    /// Asks the backend for a passive port.
    pub(super) fn backend_passive(&mut self, purpose: PassivePurpose) {
        let epsv = self.backend.conn_mut().is_none_or(|c| c.epsv);
        let verb = if epsv { Verb::Epsv } else { Verb::Pasv };
        self.ask_backend(Command::new(verb, None), Pending::BackendPassive { epsv, purpose });
    }

    pub(super) fn on_backend_passive(&mut self, epsv: bool, purpose: PassivePurpose, r: Reply) {
        let ip = match self.backend.peer() {
            Some(p) => p.ip(),
            None => return self.backend_failed(BackendFailure::Closed),
        };
        let addr = match (epsv, r.code) {
            (true, codes::EXTENDED_PASSIVE) => address::parse_229(&r.text()).map(|port| SocketAddr::new(ip, port)),
            (true, code) if EPSV_REFUSED.contains(&code) => {
                debug!(target: "ftpgate::session", code, "backend refused EPSV; using PASV from now on");
                if let Some(c) = self.backend.conn_mut() {
                    c.epsv = false;
                }
                return self.backend_passive(purpose);
            }
            (false, codes::PASSIVE) => address::parse_227(&r.text()).map(|named| {
                if IpAddr::V4(*named.ip()) != ip.to_canonical() {
                    debug!(target: "ftpgate::session", named = %named, using = %ip, "backend named another host in 227; connecting to its control address");
                }
                SocketAddr::new(ip, named.port())
            }),
            _ => return self.passive_refused(purpose, r),
        };
        let backend = match addr {
            Ok(a) => a,
            Err(e) => {
                self.metrics().backend_error("passive_reply");
                warn!(target: "ftpgate::session", reply = %r.text(), why = %e, "unusable passive reply from backend");
                let reply = Reply::single(
                    codes::CANNOT_OPEN_DATA,
                    "Cannot open data connection: backend sent an unusable passive reply",
                );
                return self.passive_refused(purpose, reply);
            }
        };
        match purpose {
            PassivePurpose::Client { pasv } => {
                self.out.push_back(Output::OpenPassive { backend, private: self.protection.prot_private });
                self.waiting = Waiting::PassivePort { pasv };
            }
            PassivePurpose::Transfer(s) => self.connect_active(s, backend),
        }
    }

    /// The backend would not give a passive port: the client hears its reply.
    fn passive_refused(&mut self, purpose: PassivePurpose, reply: Reply) {
        if let PassivePurpose::Transfer(_) = purpose {
            self.release_data_setup();
        }
        self.send_reply(reply);
        self.resume();
    }

    pub(super) fn on_passive_ready(&mut self, port: Result<u16, DataSetupFailure>) {
        let Waiting::PassivePort { pasv } = std::mem::replace(&mut self.waiting, Waiting::Command) else { return };
        match port {
            Ok(port) => {
                debug!(target: "ftpgate::session", port, "passive data channel prepared");
                self.transfers.setup = Some(DataSetup::Passive);
                match pasv {
                    Some(ip) => self.reply(codes::PASSIVE, &address::format_227(std::net::SocketAddrV4::new(ip, port))),
                    None => self.reply(codes::EXTENDED_PASSIVE, &address::format_229(port)),
                }
            }
            Err(why) => {
                debug!(target: "ftpgate::session", reason = why.label(), "no passive port");
                self.reply(codes::CANNOT_OPEN_DATA, &why.to_string())
            }
        }
        self.resume();
    }

    pub(super) fn active(&mut self, cmd: &Command) {
        if self.transfers.epsv_all {
            return self.reply(codes::BAD_SEQUENCE, &format!("{} refused after EPSV ALL (RFC 2428)", cmd.verb));
        }
        match crate::session::active::check(cmd, self.config.client_peer.ip()) {
            Ok(addr) => {
                self.drop_data();
                self.transfers.setup = Some(DataSetup::Active(addr));
                self.reply(codes::OK, &format!("{} command successful", cmd.verb));
            }
            Err(reply) => {
                Metrics::inc(&self.metrics().active_refused);
                warn!(target: "ftpgate::session", command = ?cmd, reply = %reply.text(), "refused active-mode address");
                self.send_reply(reply);
            }
        }
    }
}
