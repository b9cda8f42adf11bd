//! Clients that keep sending garbage: malformed lines, verbs the backend
//! does not know, commands the policy denies. Each is answered as usual, but
//! their log lines are rate-limited per session (the first few in full, one
//! summary with the count when the session ends) so that log volume does not
//! grow with what a client sends, and a client that sends more than the limit
//! (`[limits] max_bad_commands` before login, `max_bad_commands_after_login`
//! after) hears `421` and is closed.

use super::{Core, Env};
use crate::log_limit::Budget;
use crate::protocol::codes;
use tracing::{info, warn};

/// Log lines about bad commands written in full per session.
const LOGGED_IN_FULL: u32 = 5;

/// What was wrong with a command, the label of `ftpgate_bad_commands_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadCommand {
    /// Not a well-formed command line (length, NUL, bare CR/LF, verb).
    Invalid,
    /// A verb the backend does not implement (500/502 to a verb ftpgate does not know).
    Unknown,
    /// Refused by the policy or the protocol's order.
    Denied,
}

impl BadCommand {
    pub fn label(self) -> &'static str {
        match self {
            BadCommand::Invalid => "invalid",
            BadCommand::Unknown => "unknown",
            BadCommand::Denied => "denied",
        }
    }
}

/// A session's count of bad commands and its log budget.
#[derive(Debug, Default)]
pub(super) struct BadInput {
    /// Since the session began, or since login.
    count: u32,
    log: Budget,
}

impl<E: Env> Core<E> {
    /// Counts one bad command; whether its log line may be written.
    pub(super) fn note_bad(&mut self, kind: BadCommand) -> bool {
        self.metrics().bad_command(kind.label());
        self.bad.count = self.bad.count.saturating_add(1);
        self.bad.log.allow(LOGGED_IN_FULL)
    }

    /// Whether a line about a refusal that is not counted as bad (a login
    /// over its limit) may be written: the same per-session budget.
    pub(super) fn may_log_refusal(&mut self) -> bool {
        self.bad.log.allow(LOGGED_IN_FULL)
    }

    /// Login starts a fresh count, under the higher limit.
    pub(super) fn reset_bad_count(&mut self) {
        self.bad.count = 0;
    }

    /// Past the limit: `421` and the end of the session. Checked between
    /// commands, so the bad command itself was answered first.
    pub(super) fn too_many_bad_commands(&mut self) -> bool {
        let limit =
            if self.login.logged_in { self.config.max_bad_commands_after_login } else { self.config.max_bad_commands };
        if limit == 0 || self.bad.count <= limit {
            return false;
        }
        self.metrics().session_refused("bad_commands");
        info!(target: "ftpgate::audit", count = self.bad.count, limit, "closing session: too many bad commands");
        self.reply(codes::NOT_AVAILABLE, &format!("Too many bad commands (limit {limit}); closing"));
        self.close();
        true
    }

    /// The summary line at the session's end.
    pub(super) fn log_bad_summary(&self) {
        let suppressed = self.bad.log.suppressed();
        if suppressed > 0 {
            warn!(target: "ftpgate::session", suppressed, "refused commands of this session not logged one by one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Input, Output};

    #[test]
    fn the_eleventh_bad_line_before_login_closes_with_421() {
        let mut h = harness();
        for i in 0..10 {
            let out = h.input(Input::Invalid("NUL byte in command line".into()));
            assert_eq!(codes_of(&out), [500], "line {i}");
            assert!(!closes(&out));
        }
        let out = h.input(Input::Invalid("NUL byte in command line".into()));
        assert_eq!(codes_of(&out), [500, 421], "answered, then closed: {out:?}");
        assert!(text_of(&out, 421).contains("Too many bad commands"));
        assert!(closes(&out));
        assert_eq!(h.metrics.bad_commands_for("invalid"), 11);
        assert_eq!(h.metrics.refusals_for("bad_commands"), 1);
    }

    #[test]
    fn denied_commands_count_and_login_starts_a_higher_count() {
        let mut h = harness();
        // Before login, everything but the login and its preliminaries is denied.
        for _ in 0..6 {
            assert_eq!(codes_of(&h.cmd("DELE x")), [530]);
        }
        h.login();
        for i in 0..100 {
            let out = h.cmd("XYZZ");
            assert_eq!(sent(&out), ["XYZZ"], "after login unknown verbs reach the backend ({i})");
            let out = h.backend(500, "Unknown command");
            assert_eq!(codes_of(&out), [500]);
            assert!(!closes(&out), "{i}");
        }
        let out = h.cmd("XYZZ");
        assert_eq!(sent(&out), ["XYZZ"]);
        let out = h.backend(500, "Unknown command");
        assert_eq!(codes_of(&out), [500, 421]);
        assert!(out.iter().any(|o| matches!(o, Output::Close { .. })));
        assert_eq!(h.metrics.bad_commands_for("denied"), 6);
        assert_eq!(h.metrics.bad_commands_for("unknown"), 101);
    }
}
