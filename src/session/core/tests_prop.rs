//! Random sessions against a simulated world: whatever a client, a backend
//! and the clock do, in whatever order, the core never panics, answers every
//! command exactly once, never sends a denied command to the backend, never
//! reports a completed transfer whose data did not all arrive, and says
//! `421`/`221` before it closes (unless the client left).

use super::tests::*;
use super::*;
use crate::relay::Side;
use proptest::prelude::*;

const LINES: &[&str] = &[
    "USER alice",
    "PASS pw",
    "NOOP",
    "PWD",
    "CWD /x",
    "TYPE I",
    "EPSV",
    "PASV",
    "PORT 127,0,0,1,200,10",
    "RETR a",
    "STOR b",
    "LIST",
    "REST 10",
    "ABOR",
    "DELE a",
    "FEAT",
    "SYST",
    "AUTH TLS",
    "PBSZ 0",
    "PROT P",
    "QUIT",
    "SITE x",
    "EPSV ALL",
    "SIZE a",
];

const CODES: &[u16] = &[150, 200, 213, 226, 227, 229, 230, 250, 257, 331, 350, 421, 425, 426, 500, 530, 550];

#[derive(Debug, Clone)]
enum Step {
    Client(usize),
    Invalid,
    Backend(usize),
    Data(u8),
    Timer(u8),
    Drain,
    DrainDeadline,
    ClientGone,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..LINES.len()).prop_map(Step::Client),
        1 => Just(Step::Invalid),
        6 => (0..CODES.len()).prop_map(Step::Backend),
        2 => (0u8..4).prop_map(Step::Data),
        1 => (0u8..4).prop_map(Step::Timer),
        1 => Just(Step::Drain),
        1 => Just(Step::DrainDeadline),
        1 => Just(Step::ClientGone),
    ]
}

fn reply_for(code: u16) -> Reply {
    match code {
        227 => Reply::single(227, "Entering Passive Mode (127,0,0,9,117,48)"),
        229 => Reply::single(229, "Entering Extended Passive Mode (|||30000|)"),
        257 => Reply::single(257, "\"/x\" is the current directory"),
        c => Reply::single(c, "backend says so"),
    }
}

/// The world around the core: answers its requests as the driver would,
/// plays the backend, and keeps the books the invariants are checked on.
#[derive(Default)]
struct World {
    /// Commands the client sent that the core accepted.
    commands: usize,
    /// Final replies (2xx-5xx) the client heard, greeting excluded.
    finals: usize,
    /// Final replies the backend still owes.
    owed: usize,
    plans: usize,
    quit_sent: bool,
    closed: bool,
    /// How the last data transfer ended: every byte delivered or not.
    last_delivered: Option<bool>,
}

impl World {
    fn feed(&mut self, h: &mut Harness, input: Input) -> Result<(), TestCaseError> {
        let client_gone = matches!(input, Input::ClientGone);
        if let Input::DataEnded(o) = &input {
            self.last_delivered = Some(matches!(o, DataOutcome::Relayed(r) if matches!(r.end, RelayEnd::Eof(_))));
        }
        let mut follow = std::collections::VecDeque::from([input]);
        while let Some(input) = follow.pop_front() {
            h.core.handle(input);
            let out = drain(&mut h.core);
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
                        prop_assert!(c.verb.as_str() != "DELE", "a denied command reached the backend");
                        self.owed += 1;
                        self.quit_sent |= c.verb == Verb::Quit;
                    }
                    Output::CheckLogin { .. } => follow.push_back(Input::LoginChecked(LoginGate::default())),
                    Output::ConnectBackend { .. } => {
                        // The new connection owes its greeting.
                        self.owed += 1;
                        follow.push_back(Input::BackendConnected {
                            peer: BACKEND.parse().unwrap(),
                            name: None,
                            security: BackendSecurity::ExplicitTls,
                        })
                    }
                    Output::UpgradeBackend => follow.push_back(Input::BackendTls(Ok(()))),
                    Output::VerifyPassword { .. } => follow.push_back(Input::PasswordChecked(true)),
                    Output::OpenPassive { .. } => follow.push_back(Input::PassiveReady(Ok(50000))),
                    Output::PlanTransfer { .. } => {
                        self.plans += 1;
                        follow.push_back(Input::TransferPlanned(!self.plans.is_multiple_of(4)));
                    }
                    Output::ConnectActive { .. } => follow.push_back(Input::ActiveConnected(Ok(()))),
                    Output::UpgradeClient { ok } => {
                        // The driver sends the 234 before the handshake.
                        self.finals += 1;
                        last_code = Some(ok.code);
                        follow.push_back(Input::ClientTls(Ok(ClientTls::default())));
                    }
                    Output::TransferEnded(Some(log)) => {
                        if (200..300).contains(&log.code) {
                            prop_assert_eq!(self.last_delivered, Some(true), "2xx for data not delivered");
                        }
                        let next = out[i + 1..].iter().find_map(|o| match o {
                            Output::Reply(r) => Some(r.code),
                            _ => None,
                        });
                        prop_assert_eq!(next, Some(log.code), "the log and the reply disagree");
                    }
                    Output::Close { .. } => {
                        let said = matches!(last_code, Some(421 | 221));
                        prop_assert!(said || client_gone || self.quit_sent, "closed without a word: {:?}", out);
                        self.closed = true;
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(self.closed, h.core.is_closed());
        }
        Ok(())
    }

    fn step(&mut self, h: &mut Harness, s: &Step) -> Result<(), TestCaseError> {
        match s {
            Step::Client(i) if h.core.wants_client() => {
                self.commands += 1;
                self.feed(h, Input::Command(Command::parse(LINES[*i].as_bytes()).unwrap()))
            }
            Step::Invalid if h.core.wants_client() => {
                self.commands += 1;
                self.feed(h, Input::Invalid("bare CR inside command".into()))
            }
            Step::Backend(i) if self.owed > 0 => {
                let r = reply_for(CODES[*i]);
                if !r.is_preliminary() {
                    self.owed -= 1;
                }
                self.feed(h, Input::BackendReply(r))
            }
            Step::Data(k) if h.core.wants_data_end() => {
                let o = match k {
                    0 | 1 => delivered(10),
                    2 => relayed(RelayEnd::Failed(Side::A, std::io::ErrorKind::ConnectionReset.into()), 0, 3),
                    _ => DataOutcome::Failed(crate::session::outcome::DataError::ClientTimeout(1)),
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
            _ => Ok(()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_sessions_keep_the_core_promises(steps in proptest::collection::vec(step(), 1..80)) {
        let policy = crate::policy::Policy::from_toml(
            "[[network]]\nname = \"all\"\ncidrs = [\"0.0.0.0/0\", \"::/0\"]\ndeny_commands = [\"DELE\"]\n",
            "t",
        ).unwrap();
        let mut h = with(policy, config(), None);
        let mut w = World::default();
        for s in &steps {
            w.step(&mut h, s)?;
        }
        // Let the world settle: the backend answers what it owes, transfers end.
        for _ in 0..200 {
            if h.core.is_closed() {
                break;
            }
            if h.core.wants_data_end() {
                w.feed(&mut h, Input::DataEnded(delivered(10)))?;
            } else if w.owed > 0 {
                w.owed -= 1;
                w.feed(&mut h, Input::BackendReply(reply_for(226)))?;
            } else {
                break;
            }
        }
        if h.core.is_closed() {
            // A closing 421 may come on top of the replies owed.
            prop_assert!(w.finals <= w.commands + 1, "{} finals for {} commands", w.finals, w.commands);
        } else {
            prop_assert!(matches!(h.core.waiting, Waiting::Command), "stuck in {:?}", h.core.waiting);
            prop_assert_eq!(w.finals, w.commands, "every command answered exactly once");
        }
    }
}
