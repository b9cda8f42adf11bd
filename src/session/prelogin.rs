//! The front door: what a session does before it has a backend.
//!
//! ftpgate greets clients itself and opens the backend control connection
//! only when a login needs it: at `USER` for pass-through users, after
//! ftpgate has checked the password for bastion users. Until then it answers
//! the commands clients send before logging in (`AUTH`, `PBSZ`, `PROT`,
//! `FEAT`, `SYST`, `NOOP`, `HELP`, `QUIT`, `OPTS UTF8`, `CLNT`, `HOST`)
//! itself, so idle or hostile connections never reach the backend and
//! scanners never learn which server sits behind ftpgate.

use super::{feat, Flow, Session, SessionResult};
use crate::protocol::{Command, Reply, Verb};
use std::sync::RwLock;
use tracing::debug;

/// The most recent `FEAT` reply of the default backend, learnt by a probe at
/// start and on reload and refreshed by every logged-in session's `FEAT`.
/// Before login, `FEAT` is answered from it.
#[derive(Debug, Default)]
pub struct FeatCache(RwLock<Option<Reply>>);

impl FeatCache {
    pub fn get(&self) -> Option<Reply> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, reply: &Reply) {
        if reply.code == 211 {
            *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(reply.clone());
        }
    }
}

/// `SYST` before login: what nearly every server says, and what clients
/// expect for listing parsers; it names no software.
const SYST_REPLY: &str = "UNIX Type: L8";

impl Session {
    /// A command before the backend connection exists. `Some(flow)`: answered
    /// here. `None`: the normal path handles it (TLS commands, which never
    /// touch the backend; `USER`, for which the backend has just been
    /// opened; a bastion user's `USER`/`PASS`, checked by ftpgate).
    pub(super) async fn before_backend(&mut self, cmd: &Command) -> SessionResult<Option<Flow>> {
        let verb = cmd.verb.as_str();
        match cmd.verb {
            Verb::Auth | Verb::Pbsz | Verb::Prot | Verb::Ccc | Verb::Rein => return Ok(None),
            Verb::Quit => {
                self.backend_quit = true;
                self.reply_text(221, "Goodbye.").await?;
                return Ok(Some(Flow::Close));
            }
            Verb::Feat => {
                let reply = self.feat_reply(self.ctx.backend_feat.get());
                self.reply(&reply).await?;
                return Ok(Some(Flow::Continue));
            }
            Verb::User => {
                let bastion = cmd.arg_str().is_some_and(|u| self.ctx.policy().bastion_users.contains_key(u));
                if !bastion {
                    let name = self.backend_name.clone();
                    self.switch_backend(name).await?;
                }
                return Ok(None);
            }
            Verb::Pass if self.bastion_pending.is_some() => return Ok(None),
            Verb::Pass => {
                self.reply_text(503, "Login with USER first.").await?;
                return Ok(Some(Flow::Continue));
            }
            _ => {}
        }
        match verb {
            "SYST" => self.reply_text(215, SYST_REPLY).await?,
            "NOOP" => self.reply_text(200, "NOOP ok.").await?,
            "HELP" => self.reply_text(214, "Log in with USER and PASS; FEAT lists the extensions offered.").await?,
            "CLNT" => self.reply_text(200, "Noted.").await?,
            "OPTS" => {
                let arg = cmd.arg_str().unwrap_or("").to_ascii_uppercase();
                if arg == "UTF8" || arg == "UTF8 ON" {
                    // Replayed to the backend once it is connected.
                    self.replay.push(cmd.clone());
                    self.reply_text(200, "Always in UTF8 mode.").await?;
                } else {
                    self.reply_text(501, "Option not understood before login.").await?;
                }
            }
            "HOST" => {
                if cmd.arg.as_deref().is_none_or(<[u8]>::is_empty) {
                    self.reply_text(501, "HOST needs a host name.").await?;
                } else {
                    // RFC 7151: the backend's virtual host is chosen at login,
                    // so HOST goes to the backend before USER does.
                    self.replay.retain(|c| c.verb.as_str() != "HOST");
                    self.replay.push(cmd.clone());
                    self.reply_text(220, "Host accepted.").await?;
                }
            }
            _ => self.reply_text(530, "Please log in with USER and PASS first.").await?,
        }
        Ok(Some(Flow::Continue))
    }

    /// `FEAT` as the client sees it: the backend's features that ftpgate can
    /// carry, plus ftpgate's own; before any backend reply is known, only
    /// ftpgate's own.
    pub(super) fn feat_reply(&self, backend: Option<Reply>) -> Reply {
        let own: &[&str] = if self.acceptor.is_some() { &["AUTH TLS", "PBSZ", "PROT"] } else { &[] };
        let backend = backend.unwrap_or_else(|| Reply::new(211, &["Features:", "UTF8", "End"]));
        feat::filter(&backend, own)
    }

    /// Sends what the client said before login that the backend must hear
    /// too (`HOST`, `OPTS UTF8`), right after the backend's greeting and TLS.
    /// The client already had its reply; the backend's is only logged.
    pub(super) async fn replay_to_backend(&mut self) -> SessionResult<()> {
        for cmd in std::mem::take(&mut self.replay) {
            self.backend.send(&cmd).await?;
            let r = self.final_reply().await?;
            debug!(command = %cmd.verb, code = r.code, "replayed to the backend");
        }
        Ok(())
    }
}
