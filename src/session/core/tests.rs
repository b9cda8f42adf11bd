//! The core driven by hand, with no server: each test feeds inputs and checks
//! the outputs, in order. Shared helpers live here; `tests_flow` holds the
//! transfer, ABOR and lifecycle flows, `tests_prop` the property test.

use super::*;
use crate::config::ClientTlsMode;
use crate::policy::auth::{BastionUser, Secret};
use crate::policy::Policy;
pub(super) use crate::relay::{RelayEnd, RelayReport, Side};
use std::sync::Arc;

pub(super) struct TestEnv {
    pub policy: Arc<Policy>,
    pub metrics: Arc<Metrics>,
}

impl Env for TestEnv {
    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy)
    }
    fn backend_feat(&self) -> Option<Reply> {
        None
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

pub(super) const BACKEND: &str = "127.0.0.9:21";

pub(super) fn config() -> CoreConfig {
    CoreConfig {
        mode: ClientTlsMode::Explicit,
        tls_offered: true,
        client_peer: "127.0.0.1:40000".parse().unwrap(),
        client_local: "127.0.0.1:2121".parse().unwrap(),
        public_address: None,
        banner: "ftpgate ready".into(),
        idle: Duration::from_secs(300),
        login_timeout: Duration::from_secs(60),
        backend_reply: Duration::from_secs(30),
        data_connect: Duration::from_secs(10),
        client_cert_user_match: false,
        max_bad_commands: 10,
        max_bad_commands_after_login: 100,
    }
}

pub(super) struct Harness {
    pub core: Core<TestEnv>,
    pub metrics: Arc<Metrics>,
}

pub(super) fn harness() -> Harness {
    with(Policy::permissive(), config(), None)
}

pub(super) fn with(policy: Policy, config: CoreConfig, tls: Option<ClientTls>) -> Harness {
    let metrics = Arc::new(Metrics::default());
    let env = TestEnv { policy: Arc::new(policy), metrics: Arc::clone(&metrics) };
    let mut core = Core::new(env, config, tls);
    let greeting = drain(&mut core);
    assert_eq!(codes_of(&greeting), vec![220]);
    Harness { core, metrics }
}

pub(super) fn drain(core: &mut Core<TestEnv>) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// The reply codes the client hears, in order.
pub(super) fn codes_of(outs: &[Output]) -> Vec<u16> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Reply(r) => Some(r.code),
            _ => None,
        })
        .collect()
}

/// The commands sent to the backend, as lines.
pub(super) fn sent(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(c) => Some(c.to_string()),
            _ => None,
        })
        .collect()
}

pub(super) fn text_of(outs: &[Output], code: u16) -> String {
    outs.iter()
        .find_map(|o| match o {
            Output::Reply(r) if r.code == code => Some(r.text()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {code} in {outs:?}"))
}

pub(super) fn closes(outs: &[Output]) -> bool {
    outs.iter().any(|o| matches!(o, Output::Close { .. }))
}

pub(super) fn relayed(end: RelayEnd, up: u64, down: u64) -> DataOutcome {
    DataOutcome::Relayed(RelayReport {
        a_to_b: up,
        b_to_a: down,
        a_read: up,
        b_read: down,
        a_to_b_delayed: Duration::ZERO,
        b_to_a_delayed: Duration::ZERO,
        end,
    })
}

pub(super) fn delivered(down: u64) -> DataOutcome {
    relayed(RelayEnd::Eof(Side::B), 0, down)
}

impl Harness {
    pub fn input(&mut self, input: Input) -> Vec<Output> {
        self.core.handle(input);
        drain(&mut self.core)
    }

    pub fn cmd(&mut self, line: &str) -> Vec<Output> {
        let cmd = Command::parse(line.as_bytes()).expect("a valid test line");
        self.input(Input::Command(cmd))
    }

    pub fn backend(&mut self, code: u16, text: &str) -> Vec<Output> {
        self.input(Input::BackendReply(Reply::single(code, text)))
    }

    /// The backend connection the core asked for is up and greets: what
    /// follows the greeting.
    pub fn connected(&mut self) -> Vec<Output> {
        let out = self.input(Input::BackendConnected {
            peer: BACKEND.parse().unwrap(),
            name: None,
            security: BackendSecurity::Plain,
        });
        assert!(sent(&out).is_empty() && codes_of(&out).is_empty(), "nothing before the greeting: {out:?}");
        let out = self.backend(220, "vsftpd 3.0.3");
        assert!(codes_of(&out).is_empty(), "the backend's greeting is not the client's: {out:?}");
        out
    }

    /// USER (answered by ftpgate) and PASS, with the checks answered as a
    /// quiet world would: what follows PASS's check (the backend is asked for).
    pub fn user_and_pass(&mut self, user: &str) -> Vec<Output> {
        self.cmd(&format!("USER {user}"));
        self.input(Input::LoginChecked(LoginGate::default()));
        self.cmd("PASS secret");
        self.input(Input::LoginChecked(LoginGate::default()))
    }

    /// USER and PASS through to the backend, with the checks the core asks
    /// for answered as a quiet world would.
    pub fn login(&mut self) {
        let out = self.cmd("USER alice");
        assert!(out.iter().any(|o| matches!(o, Output::CheckLogin { .. })), "{out:?}");
        let out = self.input(Input::LoginChecked(LoginGate::default()));
        assert_eq!(codes_of(&out), [331], "ftpgate answers USER itself: {out:?}");
        assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })), "no backend before PASS: {out:?}");
        let out = self.cmd("PASS secret");
        assert!(sent(&out).is_empty(), "the ban check comes first: {out:?}");
        let out = self.input(Input::LoginChecked(LoginGate::default()));
        assert!(out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })), "{out:?}");
        let out = self.connected();
        assert_eq!(sent(&out), ["USER alice"]);
        let out = self.backend(331, "Password please");
        assert!(codes_of(&out).is_empty(), "the backend's 331 is ftpgate's business: {out:?}");
        assert_eq!(sent(&out), ["PASS ****"]);
        let out = self.backend(230, "Welcome");
        assert!(out.iter().any(|o| matches!(o, Output::LoginSucceeded { .. })));
        assert_eq!(sent(&out), ["PWD"], "the working directory is learnt before 230");
        assert!(codes_of(&out).is_empty(), "230 waits for PWD: {out:?}");
        let out = self.backend(257, "\"/home/alice\" is the current directory");
        assert_eq!(codes_of(&out), [230]);
    }

    /// EPSV through to a passive port (50000).
    pub fn epsv(&mut self) {
        let out = self.cmd("EPSV");
        assert_eq!(sent(&out), ["EPSV"]);
        let out = self.backend(229, "Entering Extended Passive Mode (|||30000|)");
        let backend = out.iter().find_map(|o| match o {
            Output::OpenPassive { backend, .. } => Some(*backend),
            _ => None,
        });
        assert_eq!(backend, Some("127.0.0.9:30000".parse().unwrap()));
        let out = self.input(Input::PassiveReady(Ok(50000)));
        assert_eq!(text_of(&out, 229), "Entering Extended Passive Mode (|||50000|)");
    }

    /// A transfer command through to the backend's 150.
    pub fn start(&mut self, line: &str) -> Vec<Output> {
        let out = self.cmd(line);
        assert!(out.iter().any(|o| matches!(o, Output::PlanTransfer { .. })), "{out:?}");
        let out = self.input(Input::TransferPlanned(true));
        assert_eq!(sent(&out), [line]);
        let out = self.backend(150, "Opening BINARY mode data connection (10 bytes)");
        assert_eq!(codes_of(&out), [150]);
        assert!(out.iter().any(|o| matches!(o, Output::StartRelay(_))));
        assert!(self.core.transferring());
        out
    }
}

#[test]
fn greets_and_arms_login_and_idle_timers() {
    let mut core = Core::new(
        TestEnv { policy: Arc::new(Policy::permissive()), metrics: Arc::new(Metrics::default()) },
        config(),
        None,
    );
    let out = drain(&mut core);
    assert_eq!(text_of(&out, 220), "ftpgate ready");
    assert!(out.iter().any(|o| matches!(o, Output::Arm(Timer::Login, d) if d.as_secs() == 60)));
    assert!(out.iter().any(|o| matches!(o, Output::Arm(Timer::Idle, d) if d.as_secs() == 300)));
}

#[test]
fn front_door_answers_without_a_backend() {
    let mut h = harness();
    for (line, code) in [("SYST", 215), ("NOOP", 200), ("HELP", 214), ("CLNT curl", 200), ("OPTS UTF8 ON", 200)] {
        let out = h.cmd(line);
        assert_eq!(codes_of(&out), [code], "{line}");
        assert!(sent(&out).is_empty());
        assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })));
    }
    let out = h.cmd("FEAT");
    let feat = match &out[..] {
        [.., Output::Reply(r), _] | [.., Output::Reply(r)] => r.clone(),
        _ => panic!("{out:?}"),
    };
    assert_eq!(feat.code, 211);
    let text = String::from_utf8_lossy(&feat.raw).into_owned();
    assert!(text.contains("AUTH TLS") && text.contains("EPSV"), "{text}");
    h.cmd("PASS x");
    let out = h.input(Input::LoginChecked(LoginGate::default()));
    assert_eq!(codes_of(&out), [503], "PASS before USER, after the ban check");
    assert_eq!(codes_of(&h.cmd("LIST")), [530], "everything else waits for a login");
}

#[test]
fn replays_what_was_said_before_login_when_the_backend_opens() {
    let mut h = harness();
    h.cmd("HOST ftp.example.com");
    h.cmd("OPTS UTF8 ON");
    let out = h.user_and_pass("alice");
    assert!(out.iter().any(|o| matches!(o, Output::ConnectBackend { name: None })), "{out:?}");
    let out = h.connected();
    assert_eq!(sent(&out), ["HOST ftp.example.com"], "HOST first: it picks the virtual host");
    let out = h.backend(220, "Host accepted");
    assert_eq!(sent(&out), ["OPTS UTF8 ON"]);
    assert!(codes_of(&out).is_empty(), "the client had its replies already");
    let out = h.backend(200, "Always in UTF8 mode.");
    assert_eq!(sent(&out), ["USER alice"]);
}

#[test]
fn explicit_tls_towards_the_backend_is_hidden_from_the_client() {
    let mut h = harness();
    h.user_and_pass("alice");
    let out = h.input(Input::BackendConnected {
        peer: BACKEND.parse().unwrap(),
        name: None,
        security: BackendSecurity::ExplicitTls,
    });
    assert!(sent(&out).is_empty());
    // A 120 before the 220 is waited out.
    let out = h.backend(120, "Ready in a moment");
    assert!(sent(&out).is_empty() && codes_of(&out).is_empty(), "{out:?}");
    assert_eq!(sent(&h.backend(220, "ready")), ["AUTH TLS"]);
    let out = h.backend(234, "Proceed");
    assert!(matches!(out.last(), Some(Output::UpgradeBackend)), "{out:?}");
    assert_eq!(sent(&h.input(Input::BackendTls(Ok(())))), ["PBSZ 0"]);
    assert_eq!(sent(&h.backend(200, "PBSZ=0")), ["PROT P"]);
    let out = h.backend(200, "Protection set to Private");
    assert_eq!(sent(&out), ["USER alice"]);
    assert!(codes_of(&out).is_empty(), "nothing of this reached the client");
    assert_eq!(sent(&h.backend(331, "Password please")), ["PASS ****"]);
}

#[test]
fn a_backend_that_refuses_the_session_or_its_tls_gets_the_client_a_421() {
    for (security, replies, want) in [
        (BackendSecurity::Plain, &[(421, "Too many users")][..], "backend refused a session: Too many users"),
        (BackendSecurity::ExplicitTls, &[(220, "ready"), (500, "AUTH not understood")][..], "backend refused AUTH TLS"),
        (BackendSecurity::ImplicitTls, &[(220, "ready"), (200, "PBSZ=0"), (534, "no")][..], "backend refused PROT P"),
    ] {
        let mut h = harness();
        h.user_and_pass("alice");
        h.input(Input::BackendConnected { peer: BACKEND.parse().unwrap(), name: None, security });
        let mut out = vec![];
        for (code, text) in replies {
            out = h.backend(*code, text);
        }
        assert_eq!(codes_of(&out), [421], "{security:?}: {out:?}");
        assert!(text_of(&out, 421).contains(want), "{security:?}: {}", text_of(&out, 421));
        assert!(closes(&out));
        assert_eq!(h.metrics.backend_errors_for("refused"), 1);
    }
    let mut h = harness();
    h.user_and_pass("alice");
    h.input(Input::BackendConnected {
        peer: BACKEND.parse().unwrap(),
        name: None,
        security: BackendSecurity::ExplicitTls,
    });
    h.backend(220, "ready");
    h.backend(234, "Proceed");
    let out = h.input(Input::BackendTls(Err(BackendFailure::Tls("TLS handshake failed: unknown issuer".into()))));
    assert_eq!(codes_of(&out), [421]);
    assert!(text_of(&out, 421).contains("unknown issuer"));
    assert_eq!(h.metrics.backend_errors_for("tls"), 1);
}

#[test]
fn pass_through_login_counts_before_the_client_hears() {
    let mut h = harness();
    h.login();
    assert_eq!(h.core.cwd, b"/home/alice");
    assert!(h.core.login.logged_in);
}

#[test]
fn failed_login_is_counted_then_answered() {
    let mut h = harness();
    h.user_and_pass("alice");
    h.connected();
    h.backend(331, "Password please");
    let out = h.backend(530, "Login incorrect.");
    let failed = out.iter().position(|o| matches!(o, Output::LoginFailed { .. })).expect("counted");
    let reply = out.iter().position(|o| matches!(o, Output::Reply(r) if r.code == 530)).expect("answered");
    assert!(failed < reply, "{out:?}");
}

#[test]
fn banned_address_gets_421_and_nothing_reaches_a_backend() {
    let mut h = harness();
    h.cmd("USER alice");
    let out = h.input(Input::LoginChecked(LoginGate { refusal: Some("banned for 60 s".into()), user_sessions: None }));
    assert_eq!(codes_of(&out), [421]);
    assert!(closes(&out));
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. } | Output::Send(_))));
    assert_eq!(h.metrics.denials_for("login"), 1);
}

#[test]
fn user_session_limit_refuses_user_with_530() {
    let mut p = Policy::permissive();
    p.login.max_sessions_per_user = 2;
    let mut h = with(p, config(), None);
    let out = h.cmd("USER alice");
    assert!(out.iter().any(|o| matches!(o, Output::CheckLogin { user: Some(u) } if u == "alice")));
    let out = h.input(Input::LoginChecked(LoginGate { refusal: None, user_sessions: Some(2) }));
    assert_eq!(codes_of(&out), [530]);
    assert!(text_of(&out, 530).contains("limit 2"));
    assert!(!closes(&out) && !out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })));
}

#[test]
fn required_tls_refuses_all_but_the_allowed_commands() {
    let mut c = config();
    c.mode = ClientTlsMode::Required;
    let mut h = with(Policy::permissive(), c, None);
    assert_eq!(codes_of(&h.cmd("USER alice")), [530]);
    assert_eq!(codes_of(&h.cmd("NOOP")), [200]);
    let out = h.cmd("AUTH TLS");
    assert!(matches!(&out[..], [.., Output::UpgradeClient { ok }] if ok.code == 234), "{out:?}");
    h.input(Input::ClientTls(Ok(ClientTls::default())));
    let out = h.cmd("USER alice");
    assert!(out.iter().any(|o| matches!(o, Output::CheckLogin { .. })), "{out:?}");
}

#[test]
fn plaintext_pipelined_after_auth_is_refused_and_the_session_ends() {
    let mut h = harness();
    // USER arrives while ftpgate is busy (the backend check of an earlier
    // command), so both sit in the queue when AUTH runs.
    h.login();
    h.cmd("SIZE a");
    h.cmd("AUTH TLS");
    h.cmd("DELE important");
    let out = h.backend(213, "10");
    assert_eq!(codes_of(&out), [213, 421]);
    assert!(closes(&out));
    assert!(sent(&out).is_empty(), "DELE never ran: {out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::UpgradeClient { .. })));
    // The driver's own check (bytes not yet parsed) ends the same way.
    let mut h = harness();
    h.cmd("AUTH TLS");
    let out = h.input(Input::ClientTls(Err(ClientTlsRefused::Pipelined)));
    assert_eq!(codes_of(&out), [421]);
    assert!(closes(&out));
}

#[test]
fn auth_where_no_tls_is_offered_gets_502() {
    let mut c = config();
    c.tls_offered = false;
    let mut h = with(Policy::permissive(), c, None);
    assert_eq!(codes_of(&h.cmd("AUTH TLS")), [502]);
    let mut h = harness();
    assert_eq!(codes_of(&h.cmd("AUTH KERBEROS")), [504]);
}

#[test]
fn certificate_names_must_match_the_user() {
    // bob is refused before a backend is opened for him.
    let mut c = config();
    c.client_cert_user_match = true;
    let tls = ClientTls { certificate_names: Some(vec!["alice".into()]) };
    let mut h = with(Policy::permissive(), c, Some(tls));
    h.cmd("USER bob");
    let out = h.input(Input::LoginChecked(LoginGate::default()));
    assert_eq!(codes_of(&out), [530]);
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. } | Output::Send(_))), "{out:?}");
    assert_eq!(Metrics::get(&h.metrics.logins_refused), 1);
    let out = h.user_and_pass("alice");
    assert!(out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })), "{out:?}");
    let out = h.connected();
    assert_eq!(sent(&out), ["USER alice"]);
}

fn bastion_policy(client_cert: bool) -> Policy {
    let mut p = Policy::permissive();
    p.bastion_users.insert(
        "ann".into(),
        BastionUser {
            password_hash: "$argon2id$fake".into(),
            client_cert,
            backend: None,
            backend_user: "svc".into(),
            backend_password: Secret::new("s3cret".into()),
        },
    );
    p
}

#[test]
fn bastion_login_hides_the_backend_account_and_replies() {
    let mut h = with(bastion_policy(false), config(), None);
    h.cmd("USER ann");
    let out = h.input(Input::LoginChecked(LoginGate::default()));
    assert_eq!(codes_of(&out), [331], "ftpgate asks for the password itself");
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })), "no backend before the password");
    h.cmd("PASS pw");
    let out = h.input(Input::LoginChecked(LoginGate::default()));
    assert!(matches!(&out[..], [.., Output::VerifyPassword { password, .. }] if password == b"pw"), "{out:?}");
    let out = h.input(Input::PasswordChecked(true));
    assert!(out.iter().any(|o| matches!(o, Output::ConnectBackend { name: None, .. })));
    let out = h.connected();
    assert_eq!(sent(&out), ["USER svc"]);
    let out = h.backend(331, "Password required for svc");
    assert_eq!(sent(&out), ["PASS ****"]);
    assert!(codes_of(&out).is_empty(), "the backend's 331 is not the client's");
    let out = h.backend(230, "User svc logged in");
    assert!(codes_of(&out).is_empty());
    let out = h.backend(257, "\"/\"");
    assert_eq!(codes_of(&out), [230]);
    assert_eq!(text_of(&out, 230), "Login successful.", "the backend's text never shows");
}

#[test]
fn bastion_wrong_password_is_counted_and_refused() {
    let mut h = with(bastion_policy(false), config(), None);
    h.cmd("USER ann");
    h.input(Input::LoginChecked(LoginGate::default()));
    h.cmd("PASS nope");
    h.input(Input::LoginChecked(LoginGate::default()));
    let out = h.input(Input::PasswordChecked(false));
    assert!(out.iter().any(|o| matches!(o, Output::LoginFailed { user } if user == "ann")));
    assert_eq!(codes_of(&out), [530]);
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectBackend { .. })));
}

#[test]
fn bastion_user_needing_a_certificate_is_refused_without_one() {
    let mut h = with(bastion_policy(true), config(), None);
    h.cmd("USER ann");
    let out = h.input(Input::LoginChecked(LoginGate::default()));
    assert_eq!(codes_of(&out), [530]);
    assert_eq!(h.metrics.denials_for("bastion user"), 1);
}

#[test]
fn denied_commands_never_reach_the_backend() {
    let mut p = Policy::from_toml("[defaults]\npermissions = [\"read\", \"list\"]\n", "t").unwrap();
    p.user_deny_commands.insert("alice".into(), vec!["SITE".into()]);
    let mut h = with(p, config(), None);
    h.login();
    for line in ["DELE /home/alice/x", "SITE CHMOD 777 x", "MKD /home/alice/d"] {
        let out = h.cmd(line);
        assert_eq!(codes_of(&out).len(), 1, "{line}: {out:?}");
        assert!(codes_of(&out)[0] >= 500, "{line}: {out:?}");
        assert!(sent(&out).is_empty(), "{line} was sent: {out:?}");
    }
    assert_eq!(Metrics::get(&h.metrics.policy_denials), 3);
}

#[test]
fn bad_lines_get_500_and_are_counted() {
    let mut h = harness();
    let out = h.input(Input::Invalid("bare LF inside command; lines must end with CRLF".into()));
    assert_eq!(codes_of(&out), [500]);
    assert!(text_of(&out, 500).contains("CRLF"));
    assert_eq!(Metrics::get(&h.metrics.commands_rejected), 1);
}

#[test]
fn epsv_falls_back_to_pasv_for_the_rest_of_the_session() {
    let mut h = harness();
    h.login();
    assert_eq!(sent(&h.cmd("EPSV")), ["EPSV"]);
    let out = h.backend(500, "EPSV not understood");
    assert_eq!(sent(&out), ["PASV"], "the refusal is not the client's");
    assert!(codes_of(&out).is_empty());
    let out = h.backend(227, "Entering Passive Mode (127,0,0,9,117,48)");
    assert!(out.iter().any(|o| matches!(o, Output::OpenPassive { backend, .. } if backend.port() == 30000)));
    let out = h.input(Input::PassiveReady(Ok(50001)));
    assert_eq!(codes_of(&out), [229], "the client asked for EPSV and gets 229");
    assert_eq!(sent(&h.cmd("PASV")), ["PASV"], "EPSV is not tried again");
}

#[test]
fn a_lying_227_cannot_aim_ftpgate_elsewhere() {
    let mut h = harness();
    h.login();
    h.core.backend.conn_mut().expect("open after login").epsv = false;
    h.cmd("PASV");
    let out = h.backend(227, "Entering Passive Mode (10,0,0,99,117,48)");
    let backend = out.iter().find_map(|o| match o {
        Output::OpenPassive { backend, .. } => Some(*backend),
        _ => None,
    });
    assert_eq!(backend, Some("127.0.0.9:30000".parse().unwrap()), "the control address, the named port");
    let out = h.input(Input::PassiveReady(Ok(50002)));
    assert_eq!(text_of(&out, 227), "Entering Passive Mode (127,0,0,1,195,82).");
}

#[test]
fn an_unusable_passive_reply_gets_425() {
    let mut h = harness();
    h.login();
    h.cmd("EPSV");
    let out = h.backend(229, "Entering Extended Passive Mode (nonsense)");
    assert_eq!(codes_of(&out), [425]);
    assert!(!out.iter().any(|o| matches!(o, Output::OpenPassive { .. })));
    assert_eq!(h.metrics.backend_errors_for("passive_reply"), 1);
}

#[test]
fn passive_port_exhaustion_gets_425_with_the_reason() {
    let mut h = harness();
    h.login();
    h.cmd("EPSV");
    h.backend(229, "(|||30000|)");
    let out = h.input(Input::PassiveReady(Err(DataSetupFailure::PassiveRangeFull { min: 50000, max: 50001 })));
    assert_eq!(codes_of(&out), [425]);
    assert!(text_of(&out, 425).contains("50000-50001"));
}

#[test]
fn epsv_all_refuses_every_other_setup_and_port_checks_the_address() {
    let mut h = harness();
    h.login();
    assert_eq!(codes_of(&h.cmd("PORT 10,0,0,1,200,10")), [501], "another host: FTP bounce");
    assert_eq!(Metrics::get(&h.metrics.active_refused), 1);
    assert_eq!(codes_of(&h.cmd("PORT 127,0,0,1,0,21")), [501], "a privileged port");
    assert_eq!(codes_of(&h.cmd("PORT 127,0,0,1,200,10")), [200]);
    assert_eq!(codes_of(&h.cmd("EPSV ALL")), [200]);
    assert_eq!(codes_of(&h.cmd("PASV")), [503]);
    assert_eq!(codes_of(&h.cmd("EPRT |1|127.0.0.1|51000|")), [503]);
    assert_eq!(codes_of(&h.cmd("EPSV 2")), [522]);
}
