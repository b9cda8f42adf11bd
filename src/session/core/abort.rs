//! `ABOR` during a transfer: both data legs stopped in order, then `ABOR`
//! to the backend; the transfer's reply (`426` unless every byte was
//! delivered) and ABOR's own (`226` after a cut), each in its place among
//! the replies; and the `transfer ended` line of a transfer cut by ABOR,
//! the client leaving, the backend failing or the drain deadline.

use super::interface::Output;
use super::transfer::{transfer_kind, Running, TransferLog};
use super::Pending;
use super::Queued;
use super::Waiting;
use super::{Core, Env};
use crate::protocol::codes;
use crate::protocol::Command;
use crate::protocol::Reply;
use crate::protocol::Verb;
use crate::relay::RelayEnd;
use crate::session::outcome::DataOutcome;
use crate::session::verdict;
use tracing::info;

/// After `ABOR` went to the backend.
#[derive(Debug)]
pub(super) struct Aborting {
    /// A capped upload's file, whose bytes are counted when the stopped
    /// relay reports them.
    pub(super) cap_path: Option<Vec<u8>>,
    /// Every byte had been delivered, in order, before `ABOR`, and the
    /// client was told so: once its transfer got a 4xx (ftpgate's or the
    /// backend's own), ABOR's reply is `226` whatever the backend says.
    delivered: bool,
    /// The transfer's own final reply is still to come from the backend.
    transfer_reply_owed: bool,
    /// Commands the client sent before `ABOR` (queued during the transfer):
    /// ABOR's reply follows theirs and precedes those sent after it.
    queued_before: usize,
    /// The transfer's `transfer ended` line, written with its reply.
    log: Option<Box<TransferLog>>,
}

impl<E: Env> Core<E> {
    /// `ABOR` during a transfer: both data legs are closed in order first
    /// (so the backend's transfer ends even if it ignores urgent data), then
    /// `ABOR` goes to the backend.
    pub(super) fn abort_transfer(&mut self) {
        let Waiting::Transfer(t) = std::mem::replace(&mut self.waiting, Waiting::Command) else { return };
        let mut delivered = matches!(&t.outcome, Some(DataOutcome::Relayed(r)) if matches!(r.end, RelayEnd::Eof(_)));
        // Bytes of a capped upload count whatever ended it: known now, or
        // when the stopped relay reports (`count_aborted_upload`).
        let mut cap_path = t.cap.as_ref().and_then(|c| c.path.clone());
        if let (Some(p), Some(o)) = (&cap_path, &t.outcome) {
            *self.transfers.uploaded.entry(p.clone()).or_insert(0) += o.written_to_backend();
            cap_path = None;
        }
        self.out.push_back(Output::StopData);
        self.metrics().transfer(transfer_kind(&t.cmd), if delivered { "ok" } else { "aborted" });
        info!(target: "ftpgate::transfer", delivered, "transfer aborted by client");
        let transfer_reply_owed = t.final_reply.is_none();
        let mut log = Some(Box::new(self.cut_log(&t, codes::TRANSFER_ABORTED, "aborted by the client (ABOR)")));
        if let Some(r) = t.final_reply.clone() {
            let reply = verdict::aborted_transfer_reply(delivered, r);
            delivered &= reply.is_positive();
            self.log_cut_transfer(log.take(), reply.code);
            self.send_reply(reply);
        }
        let queued_before = self.queue.len();
        let a = Aborting { cap_path, delivered, transfer_reply_owed, queued_before, log };
        self.ask_backend(Command::new(Verb::Abor, None), Pending::Abor(a));
    }

    /// The `transfer ended` line of a transfer that ended without its own
    /// verdict (ABOR, the client left, the backend failed, the drain
    /// deadline): what it moved so far, and how it ended in words.
    pub(super) fn cut_log(&self, t: &Running, code: u16, result: &str) -> TransferLog {
        let bytes = match &t.outcome {
            Some(DataOutcome::Relayed(r)) => r.a_to_b + r.b_to_a,
            _ => 0,
        };
        let path = if t.cmd.verb == Verb::Stou { self.cwd.clone() } else { self.resolve(&t.cmd) };
        TransferLog {
            verb: t.cmd.verb.clone(),
            path,
            direction: t.direction,
            bytes,
            complete: false,
            code,
            result: result.to_string(),
            binary: self.transfers.binary,
            user: self.user_name(),
        }
    }

    /// Writes a cut transfer's line (once) with the code the client hears.
    fn log_cut_transfer(&mut self, log: Option<Box<TransferLog>>, code: u16) {
        if let Some(mut log) = log {
            log.code = code;
            log.complete = (200..300).contains(&code);
            self.out.push_back(Output::TransferEnded(Some(*log)));
        }
    }

    /// Ends the running transfer's books when the session ends under it:
    /// its `transfer ended` line with `code` (the reply that follows), or
    /// the line an ABOR still holds.
    pub(super) fn transfer_cut(&mut self, code: u16, result: &str) {
        if let Waiting::Transfer(t) = &self.waiting {
            let log = self.cut_log(t, code, result);
            return self.out.push_back(Output::TransferEnded(Some(log)));
        }
        let held = match &mut self.waiting {
            Waiting::BackendReply(Pending::Abor(a)) => a.log.take(),
            _ => None,
        };
        match held {
            Some(log) => self.log_cut_transfer(Some(log), code),
            None => self.out.push_back(Output::TransferEnded(None)),
        }
    }

    /// Whether ABOR is pending with the transfer's own reply still owed.
    pub(super) fn abort_owes_transfer_reply(&self) -> bool {
        matches!(&self.waiting, Waiting::BackendReply(Pending::Abor(a)) if a.transfer_reply_owed)
    }

    pub(super) fn on_abor_reply(&mut self, mut a: Aborting, r: Reply) {
        if a.transfer_reply_owed {
            a.transfer_reply_owed = false;
            let reply = verdict::aborted_transfer_reply(a.delivered, r);
            a.delivered &= reply.is_positive();
            self.log_cut_transfer(a.log.take(), reply.code);
            self.send_reply(reply);
            return self.expect_backend(Pending::Abor(a), self.config.backend_reply);
        }
        let abor = verdict::abor_reply(a.delivered, r);
        // After the replies of the commands the client sent before ABOR,
        // before those of the commands it sent after (the queue is not run
        // while ABOR's replies are awaited, so the position still holds).
        let at = a.queued_before.min(self.queue.len());
        self.queue.insert(at, Queued::Reply(abor));
        self.resume();
    }
}
