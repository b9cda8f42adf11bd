//! What a transfer's client hears, decided from what happened to the data
//! and what the backend said. Pure: no sockets, no tasks, no clock, so every
//! rule is a unit test (the first piece of the session core that the
//! sans-IO issue asks for; the driver in `transfer.rs` gathers the inputs
//! and sends the outputs).
//!
//! The rules: a `2xx` reaches the client only for a transfer whose relay
//! ended in order (every byte delivered); a data connection the client broke
//! or never opened gets ftpgate's own `425` (`522` when its TLS session did
//! not resume the control connection's) instead of the backend's view; an
//! upload stopped at its size limit gets the limit's reply. Around `ABOR`,
//! a transfer the client did not fully get is `426`, and `ABOR`'s own reply
//! says a transfer was aborted (`226`, not "no transfer" `225`).

use super::outcome::{DataError, DataOutcome};
use crate::protocol::codes;
use crate::protocol::Reply;
use crate::relay::{RelayEnd, Side};

/// The client's final reply to a transfer command and what to log.
#[derive(Debug)]
pub struct TransferVerdict {
    pub reply: Reply,
    /// Every byte reached the receiving side and the backend confirmed it.
    pub complete: bool,
    /// The result in words, for the transfer log line.
    pub result: String,
}

/// Why a relay did not end with an orderly close, in words for a 426 reply.
/// Side A is the client leg (see `data::spawn`).
pub fn relay_failure(end: &RelayEnd) -> String {
    match end {
        RelayEnd::Eof(_) => "data connection closed".into(),
        RelayEnd::Stalled => "no data moved within the stall timeout".into(),
        RelayEnd::CapReached(_) => "the upload passed its size limit".into(),
        RelayEnd::Cancelled => "the transfer was aborted".into(),
        RelayEnd::Failed(Side::A, e) => format!("client data connection failed ({e})"),
        RelayEnd::Failed(Side::B, e) => format!("backend data connection failed ({e})"),
    }
}

/// The final reply for a transfer: `backend` is the backend's final reply,
/// `over_cap` the size limit's reply when the upload was stopped at it.
pub fn transfer_verdict(outcome: &DataOutcome, backend: Reply, over_cap: Option<Reply>) -> TransferVerdict {
    let mut reply = backend;
    if let DataOutcome::Failed(e) = outcome {
        if e.is_client_side() {
            // The backend only saw its data connection break; the client
            // deserves to know why.
            let code =
                if matches!(e, DataError::NotResumed) { codes::TLS_NOT_RESUMED } else { codes::CANNOT_OPEN_DATA };
            reply = Reply::single(code, &format!("Data connection refused: {e}"));
        }
    }
    if let Some(over) = over_cap {
        reply = over;
    }
    if let DataOutcome::Relayed(r) = outcome {
        // A backend that saw only an orderly close (a plain data leg shut
        // down after the client's leg broke) reports success for a
        // truncated file; the client must not believe it.
        if reply.is_positive() && !matches!(r.end, RelayEnd::Eof(_) | RelayEnd::CapReached(_)) {
            reply = Reply::single(codes::TRANSFER_ABORTED, &format!("Transfer aborted: {}", relay_failure(&r.end)));
        }
    }
    let in_order = matches!(outcome, DataOutcome::Relayed(r) if matches!(r.end, RelayEnd::Eof(_)));
    let complete = reply.is_positive() && in_order;
    let result = match outcome {
        _ if complete => "complete".to_string(),
        DataOutcome::Relayed(r) if matches!(r.end, RelayEnd::CapReached(_)) => "stopped at the size limit".into(),
        DataOutcome::Relayed(r) if !in_order => relay_failure(&r.end),
        DataOutcome::Relayed(_) => format!("refused by the backend ({})", reply.code),
        DataOutcome::Failed(e) => format!("data connection failed: {e}"),
    };
    TransferVerdict { reply, complete, result }
}

/// The transfer's final reply when the client sent `ABOR` during it:
/// `delivered` says the relay had moved every byte and ended in order first.
/// A backend may have written everything into socket buffers (and said
/// `226`) before the client stopped reading.
pub fn aborted_transfer_reply(delivered: bool, transfer: Reply) -> Reply {
    if !delivered && transfer.is_positive() {
        return Reply::single(
            codes::TRANSFER_ABORTED,
            "Transfer aborted: the data connection was closed before every byte was delivered",
        );
    }
    transfer
}

/// `ABOR`'s own reply: when a transfer was cut, it says so (`226`), not
/// "no transfer to abort" (`225`).
pub fn abor_reply(delivered: bool, abor: Reply) -> Reply {
    if !delivered && abor.code == codes::NO_TRANSFER {
        return Reply::single(codes::TRANSFER_COMPLETE, "ABOR successful; the transfer was aborted");
    }
    abor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelayReport;
    use std::io;
    use std::time::Duration;

    fn relayed(end: RelayEnd) -> DataOutcome {
        DataOutcome::Relayed(RelayReport {
            a_to_b: 10,
            b_to_a: 0,
            a_read: 10,
            b_read: 0,
            a_to_b_delayed: Duration::ZERO,
            b_to_a_delayed: Duration::ZERO,
            end,
        })
    }

    fn r(code: u16) -> Reply {
        Reply::single(code, "backend says")
    }

    #[test]
    fn an_orderly_transfer_keeps_the_backends_2xx() {
        let v = transfer_verdict(&relayed(RelayEnd::Eof(Side::B)), r(226), None);
        assert_eq!((v.reply.code, v.complete, v.result.as_str()), (226, true, "complete"));
    }

    #[test]
    fn a_client_leg_that_broke_turns_226_into_426() {
        let broken = RelayEnd::Failed(Side::A, io::ErrorKind::ConnectionReset.into());
        let v = transfer_verdict(&relayed(broken), r(226), None);
        assert_eq!(v.reply.code, 426);
        assert!(!v.complete);
        assert!(v.result.contains("client data connection failed"), "{}", v.result);
    }

    #[test]
    fn a_stalled_transfer_is_426_whatever_the_backend_says() {
        let v = transfer_verdict(&relayed(RelayEnd::Stalled), r(226), None);
        assert_eq!(v.reply.code, 426);
        assert!(v.reply.text().contains("stall"), "{}", v.reply.text());
    }

    #[test]
    fn a_backend_refusal_passes_through() {
        let v = transfer_verdict(&relayed(RelayEnd::Eof(Side::A)), r(550), None);
        assert_eq!((v.reply.code, v.complete), (550, false));
        assert_eq!(v.result, "refused by the backend (550)");
    }

    #[test]
    fn a_client_that_never_connected_gets_425() {
        let v = transfer_verdict(&DataOutcome::Failed(DataError::ClientTimeout(30)), r(426), None);
        assert_eq!(v.reply.code, 425);
        assert!(v.reply.text().contains("within 30 s"));
        assert!(!v.complete);
    }

    #[test]
    fn a_data_session_that_did_not_resume_gets_522() {
        let v = transfer_verdict(&DataOutcome::Failed(DataError::NotResumed), r(426), None);
        assert_eq!(v.reply.code, 522);
    }

    #[test]
    fn a_backend_side_failure_keeps_the_backends_reply() {
        let e = DataError::BackendTimeout("127.0.0.1:2121".parse().unwrap(), 30);
        let v = transfer_verdict(&DataOutcome::Failed(e), r(425), None);
        assert_eq!(v.reply.code, 425);
        assert_eq!(v.reply.text(), "backend says");
        assert!(v.result.starts_with("data connection failed"));
    }

    #[test]
    fn an_upload_stopped_at_its_cap_gets_the_caps_reply() {
        let over = Reply::single(552, "over the 1 MiB limit");
        let v = transfer_verdict(&relayed(RelayEnd::CapReached(Side::A)), r(226), Some(over));
        assert_eq!((v.reply.code, v.complete), (552, false));
        assert_eq!(v.result, "stopped at the size limit");
    }

    #[test]
    fn abor_before_every_byte_arrived_is_426_then_226() {
        let (t, a) = (aborted_transfer_reply(false, r(226)), abor_reply(false, r(225)));
        assert_eq!((t.code, a.code), (426, 226));
    }

    #[test]
    fn abor_after_delivery_keeps_the_backends_replies() {
        let (t, a) = (aborted_transfer_reply(true, r(226)), abor_reply(true, r(225)));
        assert_eq!((t.code, a.code), (226, 225));
    }

    #[test]
    fn abor_keeps_a_backends_failure_reply() {
        let (t, a) = (aborted_transfer_reply(false, r(426)), abor_reply(false, r(226)));
        assert_eq!((t.code, a.code), (426, 226));
        assert_eq!(t.text(), "backend says");
    }
}
