//! Transfers, ABOR, timers, drain and the end of a session, driven by hand.

use super::tests::*;
use super::*;
use crate::relay::Side;
use crate::session::outcome::DataError;

fn logged_in() -> Harness {
    let mut h = harness();
    h.login();
    h
}

#[test]
fn final_reply_is_held_until_the_data_has_ended() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    let out = h.backend(226, "Transfer complete");
    assert!(codes_of(&out).is_empty(), "226 before the relay ended: {out:?}");
    let out = h.input(Input::DataEnded(delivered(10)));
    assert_eq!(codes_of(&out), [226]);
    let log = out.iter().find_map(|o| match o {
        Output::TransferEnded(Some(l)) => Some(l.clone()),
        _ => None,
    });
    let log = log.expect("logged");
    assert!(log.complete && log.bytes == 10 && log.path == b"/home/alice/a.bin", "{log:?}");
    assert_eq!(Metrics::get(&h.metrics.transfers_ok), 1);
}

#[test]
fn data_that_ends_first_waits_for_the_reply_with_a_timeout() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    let out = h.input(Input::DataEnded(delivered(10)));
    assert!(codes_of(&out).is_empty());
    assert!(out.iter().any(|o| matches!(o, Output::Arm(Timer::BackendReply, _))), "{out:?}");
    let out = h.input(Input::Timeout(Timer::BackendReply));
    assert_eq!(codes_of(&out), [421], "421 answers the transfer command too");
    assert!(closes(&out));
}

#[test]
fn a_cut_download_never_gets_226() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    h.backend(226, "Transfer complete");
    let cut = relayed(RelayEnd::Failed(Side::A, std::io::ErrorKind::ConnectionReset.into()), 0, 4);
    let out = h.input(Input::DataEnded(cut));
    assert_eq!(codes_of(&out), [426]);
    assert!(text_of(&out, 426).contains("client data connection failed"));
    assert_eq!(Metrics::get(&h.metrics.transfers_failed), 1);
}

#[test]
fn a_client_that_never_connects_gets_425_not_the_backends_view() {
    let mut h = logged_in();
    h.epsv();
    h.start("LIST");
    h.backend(426, "Connection closed; transfer aborted");
    let out = h.input(Input::DataEnded(DataOutcome::Failed(DataError::ClientTimeout(10))));
    assert_eq!(codes_of(&out), [425]);
    let mut h = logged_in();
    h.epsv();
    h.start("LIST");
    let out = h.backend(426, "Connection closed; transfer aborted");
    assert!(out.iter().any(|o| matches!(o, Output::AbortData)), "the backend gave up: {out:?}");
    let out = h.input(Input::DataEnded(DataOutcome::Failed(DataError::NotResumed)));
    assert_eq!(codes_of(&out), [522]);
}

#[test]
fn a_refused_transfer_releases_its_data_setup() {
    let mut h = logged_in();
    h.epsv();
    h.cmd("RETR missing");
    h.input(Input::TransferPlanned(true));
    let out = h.backend(550, "No such file");
    assert_eq!(codes_of(&out), [550]);
    assert!(out.iter().any(|o| matches!(o, Output::DropData)));
    assert!(!out.iter().any(|o| matches!(o, Output::StartRelay(_))), "no TLS ticket spent");
    assert_eq!(codes_of(&h.cmd("RETR again")), [503], "the setup was used up");
}

#[test]
fn rest_is_cleared_after_a_transfer_refused_before_the_backend() {
    let mut h = logged_in();
    h.cmd("REST 100");
    assert_eq!(codes_of(&h.backend(350, "Restarting at 100")), [350]);
    h.epsv();
    h.cmd("RETR a.bin");
    let out = h.input(Input::TransferPlanned(false));
    assert_eq!(sent(&out), ["REST 0"], "the offset must not shift the next transfer");
    assert!(codes_of(&out).is_empty(), "450 after the REST is cleared");
    let out = h.backend(350, "Restarting at 0");
    assert_eq!(codes_of(&out), [450]);
    assert!(h.core.transfers.rest_offset.is_none());
}

#[test]
fn commands_sent_during_a_transfer_are_answered_after_it_in_order() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    for line in ["NOOP", "PWD", "TYPE I"] {
        let out = h.cmd(line);
        assert!(codes_of(&out).is_empty() && sent(&out).is_empty(), "{line} ran during the transfer: {out:?}");
    }
    h.backend(226, "Transfer complete");
    let out = h.input(Input::DataEnded(delivered(10)));
    assert_eq!(codes_of(&out), [226]);
    assert_eq!(sent(&out), ["NOOP"]);
    assert_eq!(codes_of(&h.backend(200, "NOOP ok")), [200]);
    assert_eq!(codes_of(&h.backend(257, "\"/home/alice\"")), [257]);
    assert_eq!(codes_of(&h.backend(200, "Binary")), [200]);
    assert!(h.core.transfers.binary);
}

#[test]
fn abor_comes_after_the_transfer_reply_and_the_queued_commands() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR big.bin");
    h.cmd("NOOP");
    let out = h.cmd("ABOR");
    assert!(matches!(out.first(), Some(Output::StopData)), "the legs close before ABOR goes out: {out:?}");
    assert_eq!(sent(&out), ["ABOR"]);
    let out = h.backend(426, "Transfer aborted");
    assert_eq!(codes_of(&out), [426], "the transfer's reply first");
    let out = h.backend(226, "ABOR successful");
    assert_eq!(sent(&out), ["NOOP"], "then the command sent before ABOR");
    assert!(codes_of(&out).is_empty(), "ABOR's reply waits for NOOP's: {out:?}");
    let out = h.backend(200, "NOOP ok");
    assert_eq!(codes_of(&out), [200, 226]);
    assert_eq!(Metrics::get(&h.metrics.transfers_aborted), 1);
}

#[test]
fn abor_turns_an_early_226_into_426_for_bytes_not_delivered() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR big.bin");
    // The backend wrote everything into socket buffers and said 226 before
    // the client stopped reading.
    h.backend(226, "Transfer complete");
    let out = h.cmd("ABOR");
    assert_eq!(codes_of(&out), [426], "not 226: the client did not get every byte");
    let out = h.backend(225, "No transfer to ABOR");
    assert_eq!(codes_of(&out), [226], "ABOR's reply says a transfer was aborted");
}

/// The backend cut the transfer itself (its 426) and then finds no transfer
/// to abort (225): the client, which sent ABOR during its transfer, hears
/// 426 and 226 as RFC 959 says, even though every byte had been relayed.
#[test]
fn abor_after_the_backends_own_426_is_answered_226() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    h.input(Input::DataEnded(delivered(10)));
    h.cmd("ABOR");
    assert_eq!(codes_of(&h.backend(426, "Failure writing network stream")), [426]);
    assert_eq!(codes_of(&h.backend(225, "No transfer to ABOR")), [226]);
}

/// The transfer ended with 426 before the client's ABOR reached ftpgate:
/// the backend finds no transfer (225), the client hears 226 as it would
/// have during the transfer. A later ABOR is the backend's to answer.
#[test]
fn abor_just_after_a_cut_transfer_is_answered_226() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    h.input(Input::DataEnded(delivered(10)));
    assert_eq!(codes_of(&h.backend(426, "Failure writing network stream")), [426]);
    h.cmd("ABOR");
    assert_eq!(codes_of(&h.backend(225, "No transfer to ABOR")), [226]);
    h.cmd("ABOR");
    assert_eq!(codes_of(&h.backend(225, "No transfer to ABOR")), [225]);
}

#[test]
fn abor_after_every_byte_arrived_keeps_226() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    h.input(Input::DataEnded(delivered(10)));
    let out = h.cmd("ABOR");
    assert_eq!(sent(&out), ["ABOR"]);
    let out = h.backend(226, "Transfer complete");
    assert_eq!(codes_of(&out), [226]);
    let out = h.backend(225, "No transfer to ABOR");
    assert_eq!(codes_of(&out), [225]);
}

#[test]
fn an_upload_past_its_cap_is_removed_and_gets_552() {
    let p = crate::policy::Policy::from_toml("[defaults]\nmax_upload_size = \"1KiB\"\n", "t").unwrap();
    let mut h = with(p, config(), None);
    h.login();
    h.epsv();
    let out = h.cmd("STOR big.bin");
    assert!(out.iter().any(|o| matches!(o, Output::PlanTransfer { upload_cap: Some(1024), .. })), "{out:?}");
    h.input(Input::TransferPlanned(true));
    h.backend(150, "Ok to send data");
    h.backend(226, "Transfer complete");
    let out = h.input(Input::DataEnded(relayed(RelayEnd::CapReached(Side::A), 1024, 0)));
    assert_eq!(sent(&out), ["DELE /home/alice/big.bin"]);
    assert!(codes_of(&out).is_empty());
    let out = h.backend(250, "Deleted");
    assert_eq!(codes_of(&out), [552]);
    assert_eq!(Metrics::get(&h.metrics.uploads_capped), 1);
    // What was written counts against the next try on the same file, even
    // where the backend no longer knows the file.
    h.epsv();
    let out = h.cmd("APPE big.bin");
    assert_eq!(sent(&out), ["SIZE /home/alice/big.bin"], "APPE starts from the file's size");
    let out = h.backend(550, "No such file");
    assert!(out.iter().any(|o| matches!(o, Output::PlanTransfer { upload_cap: Some(0), .. })), "{out:?}");
    h.input(Input::TransferPlanned(false));
    // Another file: its size on the backend counts.
    h.epsv();
    h.cmd("APPE other.bin");
    let out = h.backend(213, "1000");
    assert!(out.iter().any(|o| matches!(o, Output::PlanTransfer { upload_cap: Some(24), .. })), "{out:?}");
}

#[test]
fn active_mode_connects_both_legs_before_the_command_goes_out() {
    let mut h = logged_in();
    assert_eq!(codes_of(&h.cmd("PORT 127,0,0,1,200,10")), [200]);
    h.cmd("STOR up.bin");
    let out = h.input(Input::TransferPlanned(true));
    assert_eq!(sent(&out), ["EPSV"], "the backend is always passive");
    let out = h.backend(229, "(|||30001|)");
    let connect = out.iter().find_map(|o| match o {
        Output::ConnectActive { client, backend, .. } => Some((*client, *backend)),
        _ => None,
    });
    assert_eq!(connect, Some(("127.0.0.1:51210".parse().unwrap(), "127.0.0.9:30001".parse().unwrap())));
    assert!(sent(&out).is_empty());
    let out = h.input(Input::ActiveConnected(Err(DataSetupFailure::ClientConnect("connection refused".into()))));
    assert_eq!(codes_of(&out), [425]);
    assert!(sent(&out).is_empty(), "STOR never reached the backend");
}

#[test]
fn the_idle_clock_stops_during_a_command_and_starts_again_after() {
    let mut h = logged_in();
    let out = h.cmd("SIZE a");
    assert!(out.iter().any(|o| matches!(o, Output::Disarm(Timer::Idle))), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::Arm(Timer::Idle, _))), "{out:?}");
    let out = h.backend(213, "10");
    assert!(matches!(out.last(), Some(Output::Arm(Timer::Idle, d)) if d.as_secs() == 300), "{out:?}");
    // A timer that fires while a command runs (a late delivery) does nothing.
    h.cmd("SIZE b");
    assert!(h.input(Input::Timeout(Timer::Idle)).is_empty());
}

#[test]
fn idle_timeout_says_421_and_closes() {
    let mut h = logged_in();
    let out = h.input(Input::Timeout(Timer::Idle));
    assert_eq!(codes_of(&out), [421]);
    assert!(text_of(&out, 421).contains("Idle timeout (300 s)"));
    assert!(matches!(out.last(), Some(Output::Close { quit_backend: true })));
}

#[test]
fn login_timeout_waits_for_a_pending_reply_then_closes() {
    let mut h = harness();
    h.user_and_pass("alice");
    h.connected();
    let out = h.input(Input::Timeout(Timer::Login));
    assert!(out.is_empty(), "the PASS's reply is still owed: {out:?}");
    h.backend(331, "Password please");
    let out = h.backend(530, "Login incorrect.");
    assert_eq!(codes_of(&out), [530, 421]);
    assert!(closes(&out));
    assert_eq!(h.metrics.refusals_for("login_timeout"), 1);
}

#[test]
fn drain_closes_idle_sessions_and_lets_transfers_finish() {
    let mut h = logged_in();
    let out = h.input(Input::Drain);
    assert_eq!(codes_of(&out), [421]);
    assert!(closes(&out));
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    let out = h.input(Input::Drain);
    assert!(out.is_empty(), "the transfer goes on: {out:?}");
    h.backend(226, "Transfer complete");
    let out = h.input(Input::DataEnded(delivered(10)));
    assert_eq!(codes_of(&out), [226, 421]);
    assert!(closes(&out));
}

#[test]
fn drain_deadline_cuts_a_transfer_with_426_then_421() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    let out = h.input(Input::DrainDeadline);
    assert!(matches!(out.first(), Some(Output::AbortData)), "{out:?}");
    assert_eq!(codes_of(&out), [426, 421]);
    assert!(closes(&out));
    assert!(h.core.is_closed());
    assert!(h.input(Input::DataEnded(delivered(10))).is_empty(), "nothing after the end");
}

#[test]
fn unsolicited_421_from_the_backend_is_relayed_and_ends_the_session() {
    let mut h = logged_in();
    let out = h.backend(421, "Timeout.");
    assert_eq!(codes_of(&out), [421]);
    assert!(matches!(out.last(), Some(Output::Close { quit_backend: false })));
}

#[test]
fn a_backend_that_stops_answering_gets_the_client_a_421() {
    let mut h = logged_in();
    h.cmd("SIZE a");
    let out = h.input(Input::Timeout(Timer::BackendReply));
    assert_eq!(codes_of(&out), [421]);
    assert!(text_of(&out, 421).contains("did not reply within 30 s"));
    assert_eq!(h.metrics.backend_errors_for("timeout"), 1);
    let mut h = logged_in();
    h.cmd("SIZE a");
    let out = h.input(Input::BackendFailed(BackendFailure::Closed));
    assert_eq!(codes_of(&out), [421]);
}

#[test]
fn a_client_that_leaves_ends_the_session_quietly() {
    let mut h = logged_in();
    h.cmd("SIZE a");
    let out = h.input(Input::ClientGone);
    assert!(codes_of(&out).is_empty());
    assert!(matches!(out.last(), Some(Output::Close { quit_backend: true })));
}

#[test]
fn quit_before_a_backend_exists_and_after() {
    let mut h = harness();
    let out = h.cmd("QUIT");
    assert_eq!(codes_of(&out), [221]);
    assert!(matches!(out.last(), Some(Output::Close { quit_backend: false })));
    let mut h = logged_in();
    let out = h.cmd("QUIT");
    assert_eq!(sent(&out), ["QUIT"]);
    let out = h.backend(221, "Goodbye.");
    assert_eq!(codes_of(&out), [221]);
    assert!(matches!(out.last(), Some(Output::Close { quit_backend: false })), "QUIT went already");
}

#[test]
fn feat_after_login_is_filtered_and_learnt() {
    let mut h = logged_in();
    assert_eq!(sent(&h.cmd("FEAT")), ["FEAT"]);
    let out = h.input(Input::BackendReply(Reply::new(211, &["Features:", " MDTM", " AUTH TLS", " SITE FOO", "End"])));
    assert!(out.iter().any(|o| matches!(o, Output::FeatLearned(_))));
    let Some(Output::Reply(r)) = out.iter().find(|o| matches!(o, Output::Reply(_))) else { panic!("{out:?}") };
    let text = String::from_utf8_lossy(&r.raw).into_owned();
    assert!(text.contains("MDTM") && !text.contains("SITE FOO"), "{text}");
}

#[test]
fn cwd_refreshes_the_directory_rules_see() {
    let mut h = logged_in();
    let out = h.cmd("CWD /srv/in");
    assert_eq!(sent(&out), ["CWD /srv/in"]);
    let out = h.backend(250, "Directory changed");
    assert_eq!(codes_of(&out), [250]);
    assert_eq!(sent(&out), ["PWD"]);
    h.backend(257, "\"/srv/in\" is the current directory");
    assert_eq!(h.core.cwd, b"/srv/in");
}

/// USER is answered by ftpgate; the backend opens only at PASS, so a client
/// that never sends one holds no backend connection. The backend's answer
/// to the deferred USER, when final, is the answer to PASS.
#[test]
fn the_backend_opens_at_pass_and_its_user_reply_answers_pass() {
    let mut h = harness();
    h.cmd("USER alice");
    let out = h.input(Input::LoginChecked(LoginGate::default()));
    assert_eq!(codes_of(&out), [331]);
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })));
    // A second USER before PASS replaces the first.
    h.cmd("USER bob");
    h.input(Input::LoginChecked(LoginGate::default()));
    h.cmd("PASS pw");
    h.input(Input::LoginChecked(LoginGate::default()));
    assert_eq!(sent(&h.connected()), ["USER bob"]);
    // A server that needs no password: its 230 answers PASS.
    let out = h.backend(230, "Welcome");
    assert!(out.iter().any(|o| matches!(o, Output::LoginSucceeded { .. })), "{out:?}");
    assert_eq!(sent(&out), ["PWD"]);
    assert_eq!(codes_of(&h.backend(257, "\"/\"")), [230]);

    // A server that refuses the user outright: its 530 answers PASS, a failed login.
    let mut h = harness();
    h.user_and_pass("mallory");
    h.connected();
    let out = h.backend(530, "Not allowed");
    assert!(out.iter().any(|o| matches!(o, Output::LoginFailed { .. })), "{out:?}");
    assert_eq!(codes_of(&out), [530]);
    // PASS without USER is still a sequence error, and opens nothing.
    let mut h = harness();
    h.cmd("PASS x");
    let out = h.input(Input::LoginChecked(LoginGate::default()));
    assert_eq!(codes_of(&out), [503]);
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })));
}

/// `NOOP ABOR NOOP PWD` during a transfer: the transfer's reply, the NOOP
/// sent before ABOR, ABOR's, then what was sent after it.
#[test]
fn abor_reply_comes_between_commands_sent_before_and_after_it() {
    let mut h = logged_in();
    h.epsv();
    h.start("RETR a.bin");
    h.cmd("NOOP");
    let out = h.cmd("ABOR");
    assert!(matches!(out.first(), Some(Output::StopData)), "{out:?}");
    h.cmd("NOOP");
    h.cmd("PWD");
    let mut codes = codes_of(&h.backend(426, "Transfer aborted"));
    codes.extend(codes_of(&h.backend(226, "ABOR successful")));
    // NOOP goes to the backend in turn, then PWD.
    codes.extend(codes_of(&h.backend(200, "NOOP ok")));
    codes.extend(codes_of(&h.backend(200, "NOOP ok")));
    codes.extend(codes_of(&h.backend(257, "\"/home/alice\"")));
    assert_eq!(codes, [426, 200, 226, 200, 257]);
}
