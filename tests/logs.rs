//! What the README promises of the logs, through the binary: the start line
//! (version, listeners with TLS modes, backend, metrics, policy), and one
//! `transfer ended` line and one xferlog record for every transfer however
//! it ends (in order, ABOR, the client leaving).

mod common;
use common::*;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn wait_for_log(path: &std::path::Path, what: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(what).count() >= count {
            return text;
        }
        assert!(Instant::now() < deadline, "{count} x {what:?} not in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn start_line_and_one_transfer_ended_line_per_transfer_however_it_ends() {
    let backend = Vsftpd::start();
    let big = payload(40 << 20, 61);
    backend.put("big.bin", &big);
    backend.put("small.txt", b"small\n");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    // A bastion user, to see that its login names the backend account.
    let secret = dir.path().join("backend.pw");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let hash = ftpgate::policy::auth::hash_password("gate-secret-pw").unwrap();
    std::fs::write(
        &policy,
        format!(
            "[users.gate-bob]\npassword = \"{hash}\"\nbackend_user = \"{USER}\"\nbackend_password_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let xferlog = dir.path().join("xferlog");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap())).parse().unwrap();
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let log = std::env::temp_dir().join(format!("ftpgate-test-{}.log", addr.port()));
    let _gate = KillOnDrop::new(
        cmd.args(["--metrics", &metrics.to_string(), "--policy", policy.to_str().unwrap()])
            .args(["--xferlog", xferlog.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    wait_for_greeting(addr);
    let text = std::fs::read_to_string(&log).unwrap();
    let start =
        text.lines().find(|l| l.contains("ftpgate starting")).unwrap_or_else(|| panic!("no start line:\n{text}"));
    for want in [
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        format!("{addr} tls=off"),
        backend.addr.to_string(),
        format!("metrics={metrics}"),
        policy.display().to_string(),
    ] {
        assert!(start.contains(&want), "the start line lacks {want:?}: {start}");
    }

    // In order.
    let mut c = RawClient::connect(addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("RETR small.txt").0, 150);
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(c.reply().0, 226);
    assert_eq!(got, b"small\n");
    wait_for_log(&log, "transfer ended", 1);

    // ABOR in the middle of a download.
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    let mut part = vec![0u8; 1 << 20];
    d.read_exact(&mut part).unwrap();
    c.send_raw(b"ABOR\r\n");
    let codes = [c.reply().0, c.reply().0];
    assert_eq!(codes, [426, 226]);
    drop(d);
    let text = wait_for_log(&log, "transfer ended", 2);
    assert!(
        text.contains("result=\"aborted by the client (ABOR)\"")
            || text.contains("result=aborted by the client (ABOR)"),
        "{text}"
    );

    // The client leaves in the middle of a download.
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    d.read_exact(&mut part).unwrap();
    // The control connection goes first and the data connection stays open
    // until the line is written: closed together, the data connection's
    // reset (unread bytes) may reach the session first, and that transfer
    // ends as "client data connection failed" instead, which is also true.
    drop(c);
    let text = wait_for_log(&log, "transfer ended", 3);
    drop(d);
    assert!(text.contains("cut: the client left"), "{text}");
    assert_eq!(text.matches("transfer started").count(), 3, "{text}");

    // One xferlog record each: the first complete (c), the others incomplete (i).
    let deadline = Instant::now() + Duration::from_secs(5);
    let records = loop {
        let x = std::fs::read_to_string(&xferlog).unwrap_or_default();
        if x.lines().count() >= 3 || Instant::now() > deadline {
            break x;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = records.lines().collect();
    assert_eq!(lines.len(), 3, "{records}");
    assert!(lines[0].ends_with(" c"), "{}", lines[0]);
    assert!(lines[1].ends_with(" i") && lines[2].ends_with(" i"), "{records}");

    // A bastion login names the backend account it was mapped to; neither
    // password is ever logged.
    let mut b = RawClient::connect(addr);
    assert_eq!(b.reply().0, 220);
    assert_eq!(b.cmd("USER gate-bob").0, 331);
    assert_eq!(b.cmd("PASS gate-secret-pw").0, 230);
    let text = wait_for_log(&log, "backend_account=", 1);
    let line = text.lines().find(|l| l.contains("backend_account=")).unwrap();
    assert!(line.contains("gate-bob") && line.contains(&format!("backend_account={USER}")), "{line}");
    assert!(!text.contains("gate-secret-pw") && !text.contains(PASSWORD), "a password reached the log");

    // Targets name what a line is about, from a short documented list; no
    // internal module path leaks into the log.
    let target_of = |what: &str| {
        let line = text.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} line:\n{text}"));
        line.split_whitespace()
            .find(|w| w.starts_with("ftpgate::"))
            .unwrap_or_default()
            .trim_end_matches(':')
            .to_string()
    };
    assert_eq!(target_of("transfer ended"), "ftpgate::transfer");
    assert_eq!(target_of("transfer started"), "ftpgate::transfer");
    assert_eq!(target_of("session opened"), "ftpgate::session");
    assert_eq!(target_of("bastion login mapped"), "ftpgate::audit");
    assert_eq!(target_of("ftpgate starting"), "ftpgate::server");
    const DOCUMENTED: [&str; 9] = [
        "ftpgate::server",
        "ftpgate::session",
        "ftpgate::transfer",
        "ftpgate::audit",
        "ftpgate::tls",
        "ftpgate::backend",
        "ftpgate::cluster",
        "ftpgate::proxy",
        "ftpgate::policy",
    ];
    for line in text.lines() {
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("ftpgate::") && w.ends_with(':')) {
            assert!(DOCUMENTED.contains(&t.trim_end_matches(':')), "undocumented log target in: {line}");
        }
    }
}
