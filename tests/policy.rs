//! The policy engine in front of a real vsftpd: the first customer's two users
//! on one folder, TLS requirements per network, FTPS ordering, failed-login
//! bans, per-user session limits, and reloads.

mod common;
use common::*;
use ftpgate::config::ClientTlsMode;
use ftpgate::metrics::Metrics;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `full` (USER) may do everything, `writer` (USER2) may only upload new files.
fn customer_policy(dir: &std::path::Path, extra: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(
        &p,
        format!(
            "[[rule]]\nname = \"full\"\nusers = [\"{USER}\"]\npaths = [\"/**\"]\nallow = [\"all\"]\n\n\
             [[rule]]\nname = \"writer-upload\"\nusers = [\"{USER2}\"]\npaths = [\"/**\"]\nallow = [\"write\"]\n\n\
             [defaults]\npermissions = []\n{extra}"
        ),
    )
    .unwrap();
    p
}

/// curl as `user` (with the test password unless `user` is `name:password`).
fn curl_as(user: &str, args: &[&str]) -> Output {
    let credentials = if user.contains(':') { user.to_string() } else { format!("{user}:{PASSWORD}") };
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "--max-time", "30", "--user", &credentials]).args(args);
    run_client(&mut c, Duration::from_secs(60))
}

#[test]
fn first_customer_full_and_upload_only_users() {
    let dir = tempfile::tempdir().unwrap();
    let policy = customer_policy(dir.path(), "");
    let backend = Vsftpd::start();
    backend.put("report.csv", b"a,b\n1,2\n");
    let gate = Gate::start_with(backend.addr, |s| s.policy = Some(policy));
    let url = gate.url();
    let src = dir.path().join("in.csv");
    std::fs::write(&src, payload(200_000, 3)).unwrap();

    // writer: upload works, byte-exact.
    let up = curl_as(USER2, &["-T", src.to_str().unwrap(), &format!("{url}/in.csv")]);
    assert_eq!(up.status, 0, "{}", up.stderr);
    assert_eq!(sha256_file(&backend.root.join("in.csv")), sha256(&payload(200_000, 3)));
    // ...but not overwriting, downloading, listing, deleting or renaming.
    let again = curl_as(USER2, &["-T", src.to_str().unwrap(), &format!("{url}/in.csv")]);
    assert_ne!(again.status, 0);
    assert!(again.stderr.contains("550"), "{}", again.stderr);
    let down = curl_as(USER2, &[&format!("{url}/report.csv")]);
    assert_ne!(down.status, 0);
    assert!(down.stdout.is_empty(), "no byte of the file may reach the writer");
    let list = curl_as(USER2, &["--list-only", &format!("{url}/")]);
    assert_ne!(list.status, 0, "{}", list.stdout);
    let del = curl_as(USER2, &["-Q", "DELE report.csv", &format!("{url}/")]);
    assert_ne!(del.status, 0);
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd(&format!("USER {USER2}")).0, 331);
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).0, 230);
    let (code, text) = c.cmd("RNFR report.csv");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("may not rename /report.csv (rule writer-upload)"), "{text}");
    let (code, text) = c.cmd("RETR ../../report.csv");
    assert_eq!(code, 503, "ordering first: no data connection prepared ({text})");
    let _data = c.epsv_data();
    let (code, text) = c.cmd("RETR ../../report.csv");
    assert_eq!(code, 550, "{text}");
    assert_eq!(c.cmd("QUIT").0, 221);
    // None of that reached the backend.
    let log = backend.log();
    for verb in ["RETR", "LIST", "NLST", "DELE", "RNFR"] {
        assert!(
            !log.lines().any(|l| l.contains(&format!("[{USER2}]")) && l.contains(&format!("\"{verb}"))),
            "{verb} from the writer reached the backend:\n{log}"
        );
    }
    assert!(std::fs::read(backend.root.join("report.csv")).is_ok());

    // full: everything.
    let down = curl_as(USER, &[&format!("{url}/report.csv")]);
    assert_eq!((down.status, down.stdout.as_str()), (0, "a,b\n1,2\n"), "{}", down.stderr);
    let list = curl_as(USER, &["--list-only", &format!("{url}/")]);
    assert_eq!(list.stdout.lines().collect::<Vec<_>>(), vec!["in.csv", "report.csv"]);
    let ren = curl_as(USER, &["-Q", "RNFR in.csv", "-Q", "RNTO done.csv", "-Q", "DELE report.csv", &format!("{url}/")]);
    assert_eq!(ren.status, 0, "{}", ren.stderr);
    assert!(backend.root.join("done.csv").exists() && !backend.root.join("report.csv").exists());
    assert!(Metrics::get(&gate.metrics.policy_denials) >= 7);
    // overwrite, RETR, LIST (curl's NLST), DELE, RNFR, RETR ../../
    assert_eq!(gate.metrics.denials_for("rule writer-upload"), 6, "{:?}", gate.metrics.policy_denials_by_rule);
    gate.assert_drained();
}

#[test]
fn network_requiring_tls_and_ftps_ordering() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new();
    let policy = customer_policy(
        dir.path(),
        "[[network]]\nname = \"loopback\"\ncidrs = [\"127.0.0.0/8\"]\ntls_before_user = true\nprot_p_required = true\n",
    );
    let backend = Vsftpd::start();
    backend.put("r.txt", b"protected\n");
    let server = certs.server_options();
    let gate = Gate::start_with(backend.addr, move |s| {
        s.policy = Some(policy);
        s.listeners[0].tls = ClientTlsMode::Explicit;
        s.client_tls = Some(server);
    });
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    let (code, text) = c.cmd("USER refused-before-tls");
    assert_eq!(code, 530, "{text}");
    assert!(text.contains("network loopback"), "{text}");
    assert_eq!(c.cmd("PBSZ 0").0, 503, "PBSZ before AUTH");
    assert_eq!(c.cmd("PROT P").0, 503, "PROT before AUTH");
    // curl with TLS but clear data: refused transfers; with PROT P: works.
    let ca = certs.path("ca.pem").display().to_string();
    let url = format!("ftp://127.0.0.1:{}/r.txt", gate.addr.port());
    let clear = curl(&["--ssl-control", "--cacert", &ca, &url]);
    assert_ne!(clear.status, 0, "PROT C must be refused: {}", clear.stdout);
    let private = curl(&["--ssl-reqd", "--cacert", &ca, &url]);
    assert_eq!((private.status, private.stdout.as_str()), (0, "protected\n"), "{}", private.stderr);
    // curl's logins after TLS reached the backend; the USER refused before TLS did not.
    let log = backend.log_after(&format!("\"USER {USER}\""));
    assert!(!log.contains("refused-before-tls"), "refused USER must not reach the backend: {log}");
}

#[test]
fn failed_logins_ban_the_address_for_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let policy = customer_policy(dir.path(), "[login]\nmax_failures = 2\nban_seconds = 2\n");
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.policy = Some(policy));
    for _ in 0..2 {
        let mut c = RawClient::connect(gate.addr);
        assert_eq!(c.reply().0, 220);
        assert_eq!(c.cmd(&format!("USER {USER}")).0, 331);
        assert_eq!(c.cmd("PASS wrong-password").0, 530);
    }
    let banned_at = Instant::now();
    let mut c = RawClient::connect(gate.addr);
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("too many failed logins"), "{text}");
    assert!(c.closed());
    // The ban ends after its period.
    loop {
        let mut c = RawClient::connect(gate.addr);
        if c.reply().0 == 220 {
            c.login_after_greeting();
            break;
        }
        assert!(banned_at.elapsed() < Duration::from_secs(10), "ban did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(banned_at.elapsed() >= Duration::from_millis(1500), "ban too short: {:?}", banned_at.elapsed());
    assert_eq!(Metrics::get(&gate.metrics.logins_failed), 2);
}

#[test]
fn per_user_session_limit() {
    let dir = tempfile::tempdir().unwrap();
    let policy = customer_policy(dir.path(), "[login]\nmax_sessions_per_user = 1\n");
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.policy = Some(policy));
    let mut first = RawClient::connect(gate.addr);
    first.login();
    let mut second = RawClient::connect(gate.addr);
    assert_eq!(second.reply().0, 220);
    let (code, text) = second.cmd(&format!("USER {USER}"));
    assert_eq!(code, 530, "{text}");
    assert!(text.contains("Too many sessions"), "{text}");
    assert_eq!(second.cmd(&format!("USER {USER2}")).0, 331, "another user is not limited");
    assert_eq!(first.cmd("QUIT").0, 221);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut third = RawClient::connect(gate.addr);
    assert_eq!(third.reply().0, 220);
    while third.cmd(&format!("USER {USER}")).0 != 331 {
        assert!(Instant::now() < deadline, "slot not released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Eight sessions of one user each send USER before any sends PASS (all
/// pass the courtesy check at USER): the slot taken at login decides, so
/// exactly the limit (3) get 230 and the rest 421, whatever the interleaving.
#[test]
fn per_user_limit_holds_when_logins_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let policy = customer_policy(dir.path(), "[login]\nmax_sessions_per_user = 3\n");
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.policy = Some(policy));
    let mut clients: Vec<RawClient> = (0..8).map(|_| RawClient::connect(gate.addr)).collect();
    for c in &mut clients {
        assert_eq!(c.reply().0, 220);
        assert_eq!(c.cmd(&format!("USER {USER}")).0, 331);
    }
    for c in &mut clients {
        c.send_raw(format!("PASS {PASSWORD}\r\n").as_bytes());
    }
    let codes: Vec<u16> = clients.iter_mut().map(|c| c.reply().0).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, [230, 230, 230, 421, 421, 421, 421, 421]);
    assert_eq!(gate.metrics.refusals_for("user_limit"), 5);
    for (c, code) in clients.iter_mut().zip(codes) {
        if code == 230 {
            assert_eq!(c.cmd("NOOP").0, 200, "the three logged in work");
        } else {
            assert!(c.closed(), "refused sessions end");
        }
    }
}

#[test]
fn sighup_reload_keeps_old_policy_when_the_new_one_is_broken() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let policy = customer_policy(dir.path(), "");
    let backend = Vsftpd::start();
    backend.put("r.txt", b"readable\n");
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let port = addr.port();
    let metrics: std::net::SocketAddr =
        format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap())).parse().unwrap();
    let child = KillOnDrop::new(
        cmd.args(["--policy", policy.to_str().unwrap(), "--metrics", &metrics.to_string()]).spawn().unwrap(),
    );
    wait_for_greeting(format!("127.0.0.1:{port}").parse().unwrap());
    let url = format!("ftp://127.0.0.1:{port}/r.txt");
    let hup = |pid: u32| assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    assert_ne!(curl_as(USER2, &[&url]).status, 0, "writer may not read");
    std::fs::write(&policy, "[[rule]]\nname = \"broken\"\nallow = [\"fly\"]\n").unwrap();
    hup(child.id());
    wait_for_metric(metrics, "ftpgate_config_reload_failures_total", 1);
    assert_ne!(curl_as(USER2, &[&url]).status, 0, "broken reload must keep the old policy");
    assert_eq!(curl_as(USER, &[&url]).status, 0, "and must not lock everyone out");
    std::fs::write(
        &policy,
        format!(
            "[[rule]]\nname = \"all-read\"\nusers = [\"{USER}\", \"{USER2}\"]\npaths = [\"/**\"]\nallow = [\"read\"]\n"
        ),
    )
    .unwrap();
    hup(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let ok = loop {
        let out = curl_as(USER2, &[&url]);
        if out.status == 0 {
            break out;
        }
        assert!(Instant::now() < deadline, "good reload not applied");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    assert_eq!(ok.stdout, "readable\n");
}

/// Users who log in at ftpgate (argon2id) and are mapped to a backend account
/// the client never learns, on a backend chosen per user.
#[test]
fn bastion_users_are_mapped_to_backend_accounts_and_backends() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("backend.pw");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let hash = ftpgate::policy::auth::hash_password("alice-secret").unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[users.gate-alice]\npassword = \"{hash}\"\nbackend = \"archive\"\nbackend_user = \"{USER}\"\n\
             backend_password_file = \"{}\"\n\n\
             [users.gate-carol]\npassword = \"{hash}\"\nclient_cert = true\nbackend_user = \"{USER}\"\n\
             backend_password_file = \"{}\"\n",
            secret.display(),
            secret.display()
        ),
    )
    .unwrap();
    let default_backend = Vsftpd::start();
    let archive = Vsftpd::start();
    let archive_addr = archive.addr.to_string();
    let gate = Gate::start_with(default_backend.addr, move |s| {
        s.policy = Some(policy);
        s.named_backends.insert("archive".into(), ftpgate::config::NamedPool::single(archive_addr));
    });
    let url = gate.url();
    let src = dir.path().join("a.bin");
    std::fs::write(&src, payload(300_000, 8)).unwrap();
    let up = curl_as("gate-alice:alice-secret", &["-T", src.to_str().unwrap(), &format!("{url}/a.bin")]);
    assert_eq!(up.status, 0, "{}", up.stderr);
    assert_eq!(sha256_file(&archive.root.join("a.bin")), sha256(&payload(300_000, 8)), "lands on the archive backend");
    assert!(!default_backend.root.join("a.bin").exists());

    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER gate-alice").0, 331);
    let (code, text) = c.cmd("PASS wrong");
    assert_eq!((code, text.as_str()), (530, "530 Login incorrect.\r\n"));
    // Only the curl upload's login opened a backend connection; a wrong
    // bastion password opens none.
    assert_eq!(Metrics::get(&gate.metrics.backend_connections), 1);
    assert_eq!(c.cmd("USER gate-alice").0, 331);
    let (code, text) = c.cmd("PASS alice-secret");
    assert_eq!(code, 230, "{text}");
    assert!(!text.contains(USER), "the backend account stays hidden: {text}");
    let (code, text) = c.cmd("PWD");
    assert_eq!((code, text.contains("\"/\"")), (257, true), "{text}");
    assert_eq!(c.cmd("QUIT").0, 221);

    // client_cert = true: no certificate, no login (and nothing reaches a backend).
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    let (code, text) = c.cmd("USER gate-carol");
    assert_eq!(code, 530, "{text}");

    // Pass-through users still log in at the default backend.
    let plain = curl_as(USER, &["--list-only", &format!("{url}/")]);
    assert_eq!(plain.status, 0, "{}", plain.stderr);
    let marker = format!("\"USER {USER}\"");
    for log in [default_backend.log_after(&marker), archive.log_after(&marker)] {
        assert!(!log.contains("gate-alice") && !log.contains("gate-carol") && !log.contains("alice-secret"), "{log}");
    }
    assert_eq!(Metrics::get(&gate.metrics.logins_failed), 1);
}
