//! Random sessions against an honest simulated world: a backend that answers
//! each command as an FTP server would (greeting, AUTH TLS, login, passive
//! ports, transfers that end in 226, 426 or 451, ABOR, multi-line replies,
//! a 421 now and then), a driver whose work sometimes fails (backend
//! connect, TLS on either leg, passive port, active connect), data that ends
//! in order, cut or never, and clients that abort, change protection, leave.
//! Whatever happens, the core never panics, answers every command exactly
//! once (a closed session owes at most its closing 421), never sends a
//! denied command to the backend, never reports a completed transfer whose
//! data did not all arrive, and says `421`/`221` before it closes (unless the
//! client left). The test prints what its cases reached and fails when they
//! stop reaching logins, transfers and aborts.

use super::login::AwaitingPass;
use super::tests::*;
use super::*;
use crate::relay::Side;
use crate::session::outcome::DataError;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::VecDeque;

/// Client lines, weighted towards what makes sessions do things.
fn client_line() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just("USER alice"),
        4 => Just("PASS pw"),
        5 => Just("EPSV"),
        1 => Just("PASV"),
        1 => Just("PORT 127,0,0,1,200,10"),
        4 => Just("RETR a"),
        3 => Just("STOR b"),
        1 => Just("APPE b"),
        2 => Just("LIST"),
        1 => Just("REST 10"),
        4 => Just("ABOR"),
        2 => Just("NOOP"),
        1 => Just("PWD"),
        1 => Just("CWD /x"),
        1 => Just("TYPE I"),
        1 => Just("DELE a"),
        1 => Just("FEAT"),
        1 => Just("SYST"),
        1 => Just("AUTH TLS"),
        1 => Just("PBSZ 0"),
        1 => Just("PROT P"),
        1 => Just("PROT C"),
        1 => Just("SITE x"),
        1 => Just("SIZE a"),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Client(&'static str),
    Invalid,
    /// The backend answers what it owes next; the number picks among the
    /// honest answers.
    Backend(u8),
    /// The data channel ends: in order, cut, or never connected.
    Data(u8),
    Timer(u8),
    Drain,
    DrainDeadline,
    ClientGone,
    BackendDies,
}

fn step() -> impl Strategy<Value = Step> {
    // Endings are rare (about one step in a thousand each), so sessions
    // live long enough to log in, transfer and abort.
    let ending = prop_oneof![
        1 => Just(Step::Drain),
        1 => Just(Step::DrainDeadline),
        1 => Just(Step::ClientGone),
        1 => Just(Step::BackendDies),
        1 => Just(Step::Client("QUIT")),
        4 => (0u8..4).prop_map(Step::Timer),
        32 => Just(Step::Invalid),
    ];
    prop_oneof![
        40 => client_line().prop_map(Step::Client),
        56 => any::<u8>().prop_map(Step::Backend),
        16 => any::<u8>().prop_map(Step::Data),
        3 => ending,
    ]
}

/// What the backend has been asked and not yet answered with a final reply.
#[derive(Debug, Clone, PartialEq)]
enum Owed {
    Greeting,
    Reply(Verb),
    /// A transfer the backend accepted with 150: its final reply.
    TransferEnd,
}

/// What the cases reached, summed over all of them.
#[derive(Debug, Default)]
struct Coverage {
    cases: usize,
    logged_in: usize,
    transfers: usize,
    aborts_during: usize,
    aborts_after: usize,
    backend_failures: usize,
    tls_failures: usize,
    driver_failures: usize,
    drained: usize,
}

/// The world around the core: answers its requests as the driver would,
/// plays an honest backend, and keeps the books the invariants are checked on.
struct World {
    rng: u64,
    commands: usize,
    finals: usize,
    owed: VecDeque<Owed>,
    quit_sent: bool,
    closed: bool,
    last_delivered: Option<bool>,
    /// This case's coverage.
    logged_in: bool,
    transfers: usize,
    aborts_during: bool,
    aborts_after: bool,
    backend_failures: bool,
    tls_failures: bool,
    driver_failures: bool,
    /// What happened, for a failure's message.
    trace: Vec<String>,
}

impl World {
    fn new(seed: u64) -> World {
        World {
            rng: seed | 1,
            commands: 0,
            finals: 0,
            owed: VecDeque::new(),
            quit_sent: false,
            closed: false,
            last_delivered: None,
            logged_in: false,
            transfers: 0,
            aborts_during: false,
            aborts_after: false,
            backend_failures: false,
            tls_failures: false,
            driver_failures: false,
            trace: Vec::new(),
        }
    }

    /// One in `n`, from the case's own generator.
    fn one_in(&mut self, n: u64) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng.is_multiple_of(n)
    }

    fn feed(&mut self, h: &mut Harness, input: Input) -> Result<(), TestCaseError> {
        let client_gone = matches!(input, Input::ClientGone);
        if let Input::DataEnded(o) = &input {
            self.last_delivered = Some(matches!(o, DataOutcome::Relayed(r) if matches!(r.end, RelayEnd::Eof(_))));
        }
        let mut follow = VecDeque::from([input]);
        while let Some(input) = follow.pop_front() {
            if matches!(input, Input::BackendFailed(_)) {
                self.backend_failures = true;
            }
            // After a failed handshake on the client's control connection
            // nothing can be said to it (its TLS is broken): a silent close.
            let client_gone = client_gone || matches!(input, Input::ClientTls(Err(ClientTlsRefused::Failed)));
            self.trace.push(format!("in {input:?}"));
            // The close's 421 may answer what was queued before this input
            // (pipelined after AUTH: the queue is refused whole).
            let queued_before = h.core.queue.len();
            h.core.handle(input);
            let queued_at_close = h.core.queue.len().max(queued_before);
            let out = drain(&mut h.core);
            self.trace.push(format!("out {out:?}"));
            let mut last_code = None;
            for (i, o) in out.iter().enumerate() {
                match o {
                    Output::Reply(r) => {
                        prop_assert!(!self.closed, "a reply after the close");
                        if !r.is_preliminary() {
                            self.finals += 1;
                        }
                        last_code = Some(r.code);
                    }
                    Output::Send(c) => {
                        prop_assert!(c.verb != Verb::Dele, "a denied command reached the backend");
                        self.owed.push_back(Owed::Reply(c.verb.clone()));
                        self.quit_sent |= c.verb == Verb::Quit;
                    }
                    Output::CheckLogin { .. } => {
                        let refusal = self.one_in(200).then(|| "banned for 60 s".to_string());
                        follow.push_back(Input::LoginChecked(LoginGate { refusal, user_sessions: None }))
                    }
                    Output::ConnectBackend { .. } => {
                        if self.one_in(25) {
                            self.driver_failures = true;
                            follow.push_back(Input::BackendFailed(BackendFailure::Unreachable("refused".into())));
                        } else {
                            self.owed = VecDeque::from([Owed::Greeting]);
                            follow.push_back(Input::BackendConnected {
                                peer: BACKEND.parse().unwrap(),
                                name: None,
                                security: BackendSecurity::ExplicitTls,
                            })
                        }
                    }
                    Output::UpgradeBackend => {
                        let ok = !self.one_in(25);
                        self.tls_failures |= !ok;
                        follow.push_back(Input::BackendTls(if ok {
                            Ok(())
                        } else {
                            Err(BackendFailure::Tls("handshake failed".into()))
                        }))
                    }
                    Output::VerifyPassword { .. } => follow.push_back(Input::PasswordChecked(true)),
                    Output::OpenPassive { .. } => {
                        let ok = !self.one_in(12);
                        self.driver_failures |= !ok;
                        follow.push_back(Input::PassiveReady(if ok {
                            Ok(50000)
                        } else {
                            Err(DataSetupFailure::PassiveRangeFull { min: 50000, max: 50000 })
                        }))
                    }
                    Output::PlanTransfer { .. } => follow.push_back(Input::TransferPlanned(!self.one_in(10))),
                    Output::ConnectActive { .. } => {
                        let ok = !self.one_in(6);
                        self.driver_failures |= !ok;
                        follow.push_back(Input::ActiveConnected(if ok {
                            Ok(())
                        } else {
                            Err(DataSetupFailure::ClientConnect("refused".into()))
                        }))
                    }
                    Output::UpgradeClient { ok } => {
                        if self.one_in(20) {
                            self.tls_failures = true;
                            // The 234 went out, then the handshake failed.
                            self.finals += 1;
                            last_code = Some(ok.code);
                            follow.push_back(Input::ClientTls(Err(ClientTlsRefused::Failed)));
                        } else {
                            self.finals += 1;
                            last_code = Some(ok.code);
                            follow.push_back(Input::ClientTls(Ok(ClientTls::default())));
                        }
                    }
                    Output::StartRelay(_) => self.transfers += 1,
                    Output::StopData => {
                        // The stopped relay reports what it moved.
                        follow.push_back(Input::DataEnded(relayed(RelayEnd::Cancelled, 5, 5)));
                    }
                    Output::TransferEnded(Some(log)) => {
                        if (200..300).contains(&log.code) {
                            prop_assert_eq!(self.last_delivered, Some(true), "2xx for data not delivered");
                        }
                        let next = out[i + 1..].iter().find_map(|o| match o {
                            Output::Reply(r) => Some(r.code),
                            _ => None,
                        });
                        // Either the reply that follows, or none (the client left).
                        prop_assert!(next.is_none() || next == Some(log.code), "the log and the reply disagree");
                    }
                    Output::Close { .. } => {
                        let said = matches!(last_code, Some(421 | 221));
                        prop_assert!(said || client_gone || self.quit_sent, "closed without a word: {:?}", out);
                        if !client_gone {
                            // Everything answered but what was still queued
                            // (and the command in hand), which the 421 answers.
                            let unanswered = self.commands.saturating_sub(self.finals.saturating_sub(1));
                            prop_assert!(
                                unanswered <= queued_at_close + 1,
                                "{} commands, {} finals, {} queued at the close; trace:\n{}",
                                self.commands,
                                self.finals,
                                queued_at_close,
                                self.trace.join("\n")
                            );
                        }
                        self.closed = true;
                    }
                    _ => {}
                }
            }
            self.logged_in |= h.core.login.logged_in;
            prop_assert_eq!(self.closed, h.core.is_closed());
        }
        Ok(())
    }

    /// The backend's honest answer to what it owes next.
    fn backend_answer(&mut self, pick: u8) -> Option<Reply> {
        let owed = self.owed.pop_front()?;
        let r = |code, text: &str| Some(Reply::single(code, text));
        if pick == 0 && self.one_in(3) {
            // Now and then a server gives up on the session.
            return r(421, "Timeout");
        }
        match owed {
            Owed::Greeting => r(220, "ready"),
            Owed::TransferEnd => match pick % 8 {
                0 => r(426, "Connection closed; transfer aborted"),
                1 => r(451, "Local error"),
                _ => r(226, "Transfer complete"),
            },
            Owed::Reply(verb) => match verb {
                Verb::Auth => r(234, "Proceed"),
                Verb::Pbsz | Verb::Prot | Verb::Type | Verb::Noop => r(200, "ok"),
                Verb::User => {
                    if pick.is_multiple_of(10) {
                        r(530, "Not allowed")
                    } else {
                        r(331, "Password please")
                    }
                }
                Verb::Pass => {
                    if pick.is_multiple_of(7) {
                        r(530, "Login incorrect")
                    } else {
                        r(230, "Welcome")
                    }
                }
                Verb::Pwd => r(257, "\"/home/alice\" is the current directory"),
                Verb::Cwd => r(250, "ok"),
                Verb::Epsv => {
                    if pick.is_multiple_of(9) {
                        r(500, "EPSV not understood")
                    } else {
                        r(229, "Entering Extended Passive Mode (|||30000|)")
                    }
                }
                Verb::Pasv => r(227, "Entering Passive Mode (127,0,0,9,117,48)"),
                Verb::Retr | Verb::Stor | Verb::Appe | Verb::List | Verb::Nlst | Verb::Stou => {
                    if pick.is_multiple_of(6) {
                        r(550, "No such file")
                    } else {
                        self.owed.push_front(Owed::TransferEnd);
                        r(150, "Opening data connection")
                    }
                }
                Verb::Abor => r(226, "ABOR successful"),
                Verb::Rest => r(350, "Restarting"),
                Verb::Size => r(213, "1000"),
                Verb::Quit => r(221, "Goodbye"),
                Verb::Feat => Some(Reply::new(211, &["Features:", " EPSV", " UTF8", "End"])),
                Verb::Host | Verb::Opts => r(200, "ok"),
                _ => r(500, "Unknown command"),
            },
        }
    }

    fn step(&mut self, h: &mut Harness, s: &Step) -> Result<(), TestCaseError> {
        match s {
            Step::Client(line) if h.core.wants_client() => {
                // Clients mostly log in first: before login, other lines
                // often become the next step of a login.
                let line: &str = if !h.core.login.logged_in && !line.starts_with("USER") && self.one_in(2) {
                    if matches!(h.core.login.awaiting, AwaitingPass::Deferred(_)) {
                        "PASS pw"
                    } else {
                        "USER alice"
                    }
                } else {
                    line
                };
                if line == "ABOR" {
                    match &h.core.waiting {
                        Waiting::Transfer(t) if t.outcome.is_some() => self.aborts_after = true,
                        Waiting::Transfer(_) => self.aborts_during = true,
                        _ => {}
                    }
                }
                self.commands += 1;
                self.feed(h, Input::Command(Command::parse(line.as_bytes()).unwrap()))
            }
            Step::Invalid if h.core.wants_client() => {
                self.commands += 1;
                self.feed(h, Input::Invalid("bare CR inside command".into()))
            }
            // Servers often send a transfer's 226 only after its data
            // connection closed: most of the time, that is when it comes.
            Step::Backend(pick)
                if self.owed.front() == Some(&Owed::TransferEnd)
                    && h.core.wants_data_end()
                    && !pick.is_multiple_of(4) =>
            {
                Ok(())
            }
            Step::Backend(pick) if h.core.reads_backend() => match self.backend_answer(*pick) {
                Some(r) if r.code == 421 => {
                    // A server that says 421 closes its connection.
                    self.feed(h, Input::BackendReply(r))?;
                    self.owed.clear();
                    if h.core.reads_backend() {
                        self.feed(h, Input::BackendFailed(BackendFailure::Closed))?;
                    }
                    Ok(())
                }
                Some(r) => self.feed(h, Input::BackendReply(r)),
                None => Ok(()),
            },
            Step::Data(k) if h.core.wants_data_end() => {
                let o = match k % 7 {
                    0..=2 => delivered(10),
                    3 => relayed(RelayEnd::Failed(Side::A, std::io::ErrorKind::ConnectionReset.into()), 0, 3),
                    4 => DataOutcome::Failed(DataError::ClientTimeout(1)),
                    5 => {
                        // TLS on the data connection: not resumed, as strict
                        // servers refuse it.
                        self.tls_failures = true;
                        DataOutcome::Failed(DataError::NotResumed)
                    }
                    _ => relayed(RelayEnd::Failed(Side::B, std::io::ErrorKind::UnexpectedEof.into()), 7, 0),
                };
                self.feed(h, Input::DataEnded(o))
            }
            Step::Timer(k) => {
                let t = [Timer::Idle, Timer::Login, Timer::BackendReply, Timer::DepartedGrace][*k as usize];
                self.feed(h, Input::Timeout(t))
            }
            Step::Drain => self.feed(h, Input::Drain),
            Step::DrainDeadline => self.feed(h, Input::DrainDeadline),
            Step::ClientGone => self.feed(h, Input::ClientGone),
            Step::BackendDies if h.core.reads_backend() => {
                self.feed(h, Input::BackendFailed(BackendFailure::Io("connection reset".into())))
            }
            _ => Ok(()),
        }
    }

    /// Lets the world settle: the backend answers what it owes, transfers end.
    fn settle(&mut self, h: &mut Harness) -> Result<(), TestCaseError> {
        for _ in 0..400 {
            if h.core.is_closed() {
                break;
            }
            if h.core.wants_data_end() {
                self.feed(h, Input::DataEnded(delivered(10)))?;
            } else if h.core.reads_backend() && !self.owed.is_empty() {
                if let Some(r) = self.backend_answer(200) {
                    self.feed(h, Input::BackendReply(r))?;
                }
            } else {
                break;
            }
        }
        Ok(())
    }
}

fn run_case(seed: u64, steps: &[Step]) -> Result<World, TestCaseError> {
    let policy = crate::policy::Policy::from_toml(
        "[[network]]\nname = \"all\"\ncidrs = [\"0.0.0.0/0\", \"::/0\"]\ndeny_commands = [\"DELE\"]\n",
        "t",
    )
    .unwrap();
    let mut c = config();
    // Long sessions: bad commands are part of the game, not its end.
    c.max_bad_commands = 0;
    c.max_bad_commands_after_login = 0;
    let mut h = with(policy, c, None);
    let mut w = World::new(seed);
    for s in steps {
        w.step(&mut h, s)?;
    }
    w.settle(&mut h)?;
    if !h.core.is_closed() {
        prop_assert!(matches!(h.core.waiting, Waiting::Command), "stuck in {:?}", h.core.waiting);
        prop_assert_eq!(w.finals, w.commands, "every command answered exactly once");
    }
    Ok(w)
}

#[test]
fn random_sessions_keep_the_core_promises() {
    let mut runner = TestRunner::new(Config { cases: 768, ..Config::default() });
    let cov = std::cell::RefCell::new(Coverage::default());
    let strategy = (any::<u64>(), proptest::collection::vec(step(), 40..300));
    let result = runner.run(&strategy, |(seed, steps)| {
        let w = run_case(seed, &steps)?;
        let mut c = cov.borrow_mut();
        c.cases += 1;
        c.logged_in += usize::from(w.logged_in);
        c.transfers += usize::from(w.transfers > 0);
        c.aborts_during += usize::from(w.aborts_during);
        c.aborts_after += usize::from(w.aborts_after);
        c.backend_failures += usize::from(w.backend_failures);
        c.tls_failures += usize::from(w.tls_failures);
        c.driver_failures += usize::from(w.driver_failures);
        c.drained += usize::from(w.closed);

        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = cov.into_inner();
    println!(
        "session core coverage: cases={} logged_in={} transfers={} aborts_during={} aborts_after={} \
         backend_failures={} tls_failures={} driver_failures={} closed={}",
        c.cases,
        c.logged_in,
        c.transfers,
        c.aborts_during,
        c.aborts_after,
        c.backend_failures,
        c.tls_failures,
        c.driver_failures,
        c.drained
    );
    // The cases must keep reaching the interesting states; a generator that
    // stops doing so makes this test vacuous, and fails it.
    assert!(c.logged_in * 2 >= c.cases, "fewer than half the cases log in: {c:?}");
    assert!(c.transfers * 4 >= c.cases, "fewer than a quarter transfer: {c:?}");
    assert!((c.aborts_during + c.aborts_after) * 10 >= c.cases, "fewer than a tenth abort a transfer: {c:?}");
    assert!(c.aborts_after * 100 >= c.cases, "too few ABORs after the data ended: {c:?}");
    assert!(c.backend_failures * 20 >= c.cases, "too few backend failures: {c:?}");
    assert!(c.tls_failures * 20 >= c.cases, "too few TLS failures: {c:?}");
    assert!(c.driver_failures * 20 >= c.cases, "too few failed driver steps: {c:?}");
}
