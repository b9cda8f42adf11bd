//! The `ftpgate` binary as an operator runs it: `check` on good and bad files,
//! `run` from flags alone in front of a real vsftpd, and the quickstart script.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ftpgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ftpgate"))
}

#[test]
fn check_accepts_the_shipped_example() {
    let out = run_client(ftpgate().args(["check", "--config", "deploy/ftpgate.toml"]), Duration::from_secs(20));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("listen 0.0.0.0:21 (plain FTP)"), "{}", out.stdout);
    assert!(out.stdout.contains("listen [::]:21 (plain FTP)"), "{}", out.stdout);
    assert!(out.stdout.contains("passive ports 50000-50007: 8 port(s) shared by all sessions"), "{}", out.stdout);
    assert!(out.stdout.contains("8 plain data setup(s)"), "{}", out.stdout);
}

#[test]
fn check_names_field_and_line_of_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[[listener]]\naddress = \"127.0.0.1:2121\"\n\n[backend]\naddress = \"127.0.0.1:21\"\ntimeout = 5\n",
    )
    .unwrap();
    let out = run_client(ftpgate().args(["check", "--config", p.to_str().unwrap()]), Duration::from_secs(20));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("line 6") && out.stderr.contains("timeout"), "{}", out.stderr);

    std::fs::write(
        &p,
        "[[listener]]\naddress = \"127.0.0.1:2121\"\n[backend]\naddress = \"h:21\"\n[passive]\nports = \"9-3\"\n",
    )
    .unwrap();
    let out = run_client(ftpgate().args(["check", "--config", p.to_str().unwrap()]), Duration::from_secs(20));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("passive.ports"), "{}", out.stderr);

    let out = run_client(ftpgate().args(["check", "--listen", "127.0.0.1:2121"]), Duration::from_secs(20));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("backend.address"), "{}", out.stderr);
}

#[test]
fn run_from_flags_alone() {
    let backend = Vsftpd::start();
    backend.put("hello.txt", b"hello through ftpgate\n");
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let port = addr.port();
    let child = KillOnDrop::new(cmd.args(["--public-address", "127.0.0.1"]).spawn().unwrap());
    wait_for_greeting(format!("127.0.0.1:{port}").parse().unwrap());
    let out = curl(&["--disable-epsv", &format!("ftp://127.0.0.1:{port}/hello.txt")]);
    drop(child);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hello through ftpgate\n");
}

#[test]
fn quickstart_script_works() {
    let out = run_client(
        Command::new("bash")
            .args(["scripts/quickstart.sh", "--check"])
            .env("FTPGATE_BIN", env!("CARGO_BIN_EXE_ftpgate")),
        Duration::from_secs(300),
    );
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("quickstart check passed (plain and explicit FTPS)"), "{}", out.stdout);
    // The backend is up before ftpgate starts: no failed probe first.
    assert!(!out.stderr.contains("backend probe failed"), "{}", out.stderr);
    // --remove takes away what the quick start made.
    assert!(Command::new("id").arg("ftpdemo").output().unwrap().status.success(), "the demo user exists after a run");
    let removed = run_client(Command::new("bash").args(["scripts/quickstart.sh", "--remove"]), Duration::from_secs(60));
    assert_eq!(removed.status, 0, "{}\n{}", removed.stdout, removed.stderr);
    assert!(removed.stdout.contains("removed user ftpdemo"), "{}", removed.stdout);
    assert!(!Command::new("id").arg("ftpdemo").output().unwrap().status.success(), "the demo user is gone");
    assert!(!std::path::Path::new("/etc/pam.d/ftpgate-demo").exists(), "the PAM file is gone");
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ftpgate-quickstart."))
        .collect();
    assert!(left.is_empty(), "run folders left: {left:?}");
}

/// With its port taken, the quick start says which port and how to pick
/// another, and exits non-zero instead of waiting forever.
#[test]
fn quickstart_with_its_port_taken_says_so_and_exits() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run_client(
        Command::new("bash")
            .arg("scripts/quickstart.sh")
            .env("FTPGATE_BIN", env!("CARGO_BIN_EXE_ftpgate"))
            .env("FTPGATE_PORT", port.to_string()),
        Duration::from_secs(60),
    );
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(out.stderr.contains(&format!("port {port} on 127.0.0.1 is in use")), "{}", out.stderr);
    assert!(out.stderr.contains("FTPGATE_PORT="), "{}", out.stderr);
    assert!(!out.stdout.contains("ftpgate is running"), "{}", out.stdout);
}

#[test]
fn certs_init_then_implicit_ftps_and_sighup_reload() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let init = |force: bool| {
        let mut args = vec!["certs", "init", "--dir", &d, "--name", "127.0.0.1", "--client", "alice"];
        if force {
            args.push("--force");
        }
        run_client(ftpgate().args(&args), Duration::from_secs(20))
    };
    let out = init(false);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("server.pem"), "{}", out.stdout);
    for key in ["ca.key", "server.key", "client-alice.key"] {
        let mode = std::fs::metadata(dir.path().join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    assert_ne!(init(false).status, 0, "existing files are not replaced without --force");
    let old_ca = dir.path().join("old-ca.pem");
    std::fs::copy(dir.path().join("ca.pem"), &old_ca).unwrap();

    let backend = Vsftpd::start();
    backend.put("r.txt", b"reloaded\n");
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let port = addr.port();
    let metrics: std::net::SocketAddr =
        format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap())).parse().unwrap();
    let child = KillOnDrop::new(
        cmd.args(["--client-tls", "implicit", "--metrics", &metrics.to_string()])
            .args(["--cert", &format!("{d}/server.pem"), "--key", &format!("{d}/server.key")])
            .spawn()
            .unwrap(),
    );
    wait_for_port(format!("127.0.0.1:{port}").parse().unwrap());
    let url = format!("ftps://127.0.0.1:{port}/r.txt");
    let fetch = |ca: &std::path::Path| curl(&["--cacert", ca.to_str().unwrap(), &url]);
    let first = fetch(&old_ca);
    assert_eq!((first.status, first.stdout.as_str()), (0, "reloaded\n"), "{}", first.stderr);

    // New CA and certificate on disk, then SIGHUP: new sessions get the new one.
    assert_eq!(init(true).status, 0);
    let hup = |pid: u32| Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(hup(child.id()).success());
    let new_ca = dir.path().join("ca.pem");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fetch(&new_ca).status != 0 {
        assert!(std::time::Instant::now() < deadline, "reload not picked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(fetch(&old_ca).status, 0, "the old certificate is gone after reload");
    // A broken file on reload keeps the running certificate.
    std::fs::write(dir.path().join("server.pem"), "garbage").unwrap();
    assert!(hup(child.id()).success());
    wait_for_metric(metrics, "ftpgate_config_reload_failures_total", 1);
    let still = fetch(&new_ca);
    drop(child);
    assert_eq!(still.status, 0, "{}", still.stderr);
}

#[test]
fn policy_check_explain_and_passwd() {
    let out = run_client(ftpgate().args(["policy", "check", "policy/example.toml"]), Duration::from_secs(20));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("rule writer-upload: writer may write on /shared/**"), "{}", out.stdout);
    let explain = |user: &str, from: &str, tls: &str, cmd: &str| {
        let args =
            ["policy", "explain", "--policy", "policy/example.toml", "--user", user, "--from", from, "--tls", tls];
        run_client(ftpgate().args(args).args(["--cwd", "/shared", cmd]), Duration::from_secs(20)).stdout
    };
    assert_eq!(
        explain("writer", "10.0.0.5", "yes", "RETR report.csv"),
        "DENY 550 Permission denied: user writer may not read /shared/report.csv (rule writer-upload)\n\
         limits for writer: download 50 MiB/s, upload 2 MiB/s, upload size 512 MiB, transfers at once 2\n"
    );
    assert!(explain("full", "10.0.0.5", "no", "RETR report.csv").starts_with("ALLOW from network office"));
    let status = |user: &str, cmd: &str| {
        let args = ["policy", "explain", "--policy", "policy/example.toml", "--user", user, "--from", "10.0.0.5"];
        run_client(ftpgate().args(args).args(["--cwd", "/shared", cmd]), Duration::from_secs(20)).status
    };
    assert_eq!(status("full", "RETR report.csv"), 0, "an allowed command exits 0");
    assert_ne!(status("writer", "RETR report.csv"), 0, "a denied command exits non-zero");
    // check --print: the effective configuration as TOML in the file's own
    // names, flags applied, that reads back to the same configuration.
    let print = |config: &str, extra: &[&str]| {
        let out =
            run_client(ftpgate().args(["check", "--config", config, "--print"]).args(extra), Duration::from_secs(20));
        assert_eq!(out.status, 0, "{}", out.stderr);
        out.stdout
    };
    let printed = print("deploy/ftpgate.toml", &["--backend-max-tls-version", "1.3"]);
    for setting in
        ["[timeouts]", "idle_control = 900", "max_sessions_per_address = 50", "login = 60", "banner = ", "ports = "]
    {
        assert!(printed.contains(setting), "check --print lacks {setting}: {printed}");
    }
    assert!(printed.contains("max_tls_version = \"1.3\""), "the flag is applied: {printed}");
    assert!(!printed.contains("Settings {") && !printed.contains("V12"), "no Rust debug output: {printed}");
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    assert_eq!(print(again.to_str().unwrap(), &[]), printed, "the printed configuration reads back the same");
    assert!(explain("full", "203.0.113.9", "no", "USER full").starts_with("DENY 530 TLS required before login"));
    assert!(explain("full", "203.0.113.9", "yes", "SITE CHMOD 600 x")
        .starts_with("DENY 534 SITE is not allowed from network internet"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nname = \"r\"\nusers = [\"u\"]\npaths = [\"/**\"]\nallow = [\"reed\"]\n").unwrap();
    let out = run_client(ftpgate().args(["policy", "check", bad.to_str().unwrap()]), Duration::from_secs(20));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("line 5") && out.stderr.contains("reed"), "{}", out.stderr);

    let mut child = ftpgate().arg("passwd").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"open sesame\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(ftpgate::policy::auth::verify_password(hash.trim(), b"open sesame"), "{hash}");
}

/// SIGTERM: listeners close at once, a running transfer finishes byte-exact,
/// then its session gets 421; systemd hears READY=1 and STOPPING=1.
#[test]
fn sigterm_drains_running_transfers_and_systemd_is_notified() {
    use std::io::Read;
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let backend = Vsftpd::start();
    let data = payload(20 << 20, 31);
    backend.put("big.bin", &data);
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let mut child = KillOnDrop::new(cmd.env("NOTIFY_SOCKET", &notify_path).spawn().unwrap());
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1", "readiness comes once the listeners are up");
    let mut c = RawClient::connect(addr);
    c.login();
    let mut idle = RawClient::connect(addr);
    idle.login();
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    let mut got = vec![0u8; 1 << 20];
    d.read_exact(&mut got).unwrap();

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    let (code, text) = idle.reply();
    assert_eq!(code, 421, "an idle session is told at once: {text}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "no new clients while draining");
    let mut rest = Vec::new();
    d.read_to_end(&mut rest).unwrap();
    got.extend_from_slice(&rest);
    assert!(got == data, "the running transfer completes byte-exact");
    assert_eq!(c.reply().0, 226);
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("shutting down"), "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.child().try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "ftpgate did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // The log says what drains and until when.
    let log = std::fs::read_to_string(std::env::temp_dir().join(format!("ftpgate-test-{}.log", addr.port()))).unwrap();
    let line = log.lines().find(|l| l.contains("draining")).unwrap_or_else(|| panic!("no draining line:\n{log}"));
    assert!(line.contains("sessions=2") && line.contains("transfers=1") && line.contains("deadline=20"), "{line}");
}

/// JSON logs: one object per line, every session line carries the user once
/// known, and no password ever appears.
#[test]
fn json_logs_carry_session_and_user_but_no_password() {
    let backend = Vsftpd::start();
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let child = KillOnDrop::new(
        cmd.args(["--log-format", "json"]).env("FTPGATE_LOG", "debug").stderr(Stdio::piped()).spawn().unwrap(),
    );
    wait_for_greeting(addr);
    let mut c = RawClient::connect(addr);
    c.login();
    assert_eq!(c.cmd("PASS again-a-secret").0, 503, "PASS after login is out of order");
    assert_eq!(c.cmd("QUIT").0, 221);
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.into_inner().wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.len() >= 4, "{stderr}");
    let login = lines
        .iter()
        .find(|l| l["fields"]["message"] == "login")
        .unwrap_or_else(|| panic!("no login audit line:\n{stderr}"));
    assert_eq!(login["target"], "ftpgate::audit");
    assert_eq!(login["span"]["user"], USER, "{login}");
    assert!(login["span"]["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!stderr.contains(PASSWORD) && !stderr.contains("again-a-secret"), "a password reached the log");
}

/// SIGHUP with a changed configuration file: new sessions go to the new
/// backend, a new listener opens and a removed one closes, while a session
/// that was running keeps its backend; a broken file changes nothing.
#[test]
fn sighup_reloads_backend_and_listeners_without_dropping_sessions() {
    let a = Vsftpd::start();
    a.put("a.txt", b"on a\n");
    let b = Vsftpd::start();
    b.put("b.txt", b"on b\n");
    let dir = tempfile::tempdir().unwrap();
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (l1, l2, metrics) = (free_port(ip), free_port(ip), free_port(ip));
    let range = port_range(50);
    let config = dir.path().join("ftpgate.toml");
    let write = |listeners: &[u16], backend: std::net::SocketAddr| {
        let mut t = String::new();
        for p in listeners {
            t.push_str(&format!("[[listener]]\naddress = \"127.0.0.1:{p}\"\n"));
        }
        t.push_str(&format!(
            "[backend]\naddress = \"{backend}\"\n[passive]\nports = \"{}-{}\"\n[metrics]\naddress = \"127.0.0.1:{metrics}\"\n",
            range.min, range.max
        ));
        std::fs::write(&config, t).unwrap();
    };
    write(&[l1], a.addr);
    let child = ftpgate_with_config(&config);
    let at = |p: u16| std::net::SocketAddr::new(ip, p);
    let metrics = at(metrics);
    wait_for_greeting(at(l1));
    let hup = || assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let mut old = RawClient::connect(at(l1));
    old.login();
    assert_eq!(old.cmd("MDTM a.txt").0, 213);

    write(&[l1, l2], b.addr);
    hup();
    wait_for_greeting(at(l2));
    assert_eq!(scrape(metrics, "ftpgate_config_reloads_total"), 1);
    assert_eq!(scrape(metrics, "ftpgate_listeners_up"), 2);
    for port in [l1, l2] {
        let mut c = RawClient::connect(at(port));
        c.login();
        assert_eq!(c.cmd("MDTM b.txt").0, 213, "new sessions on {port} reach the new backend");
        assert_eq!(c.cmd("MDTM a.txt").0, 550);
    }
    assert_eq!(old.cmd("MDTM a.txt").0, 213, "the running session keeps its backend");

    std::fs::write(&config, "[[listener]]\naddress = 42\n").unwrap();
    hup();
    wait_for_metric(metrics, "ftpgate_config_reload_failures_total", 1);
    let mut c = RawClient::connect(at(l2));
    c.login();
    assert_eq!(c.cmd("MDTM b.txt").0, 213, "a broken file keeps the running configuration");

    write(&[l2], b.addr);
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(at(l1)).is_ok() {
        assert!(Instant::now() < deadline, "removed listener still accepts");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(scrape(metrics, "ftpgate_listeners_up"), 1);
    assert_eq!(scrape(metrics, "ftpgate_config_reloads_total"), 2);
    assert_eq!(old.cmd("MDTM a.txt").0, 213, "sessions of a removed listener go on");
    assert_eq!(old.cmd("QUIT").0, 221);
}

/// A listener given by flag never weakens TLS: it takes the file's mode
/// when the file's listeners agree, `--client-tls` otherwise, and ftpgate
/// refuses to guess. A backend without a port is on port 21.
#[test]
fn listen_flag_keeps_the_files_tls_mode_and_backend_defaults_to_port_21() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let certs = TestCerts::new();
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let tls = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    let one = dir.path().join("one.toml");
    std::fs::write(
        &one,
        format!("[[listener]]\naddress = \"127.0.0.1:2121\"\ntls = \"explicit\"\n[backend]\naddress = \"ftp.internal\"\n{tls}"),
    )
    .unwrap();
    let check = |file: &std::path::Path, extra: &[&str]| {
        run_client(
            ftpgate().args(["check", "--config", file.to_str().unwrap(), "--listen", "127.0.0.1:3131"]).args(extra),
            Duration::from_secs(20),
        )
    };
    let out = check(&one, &[]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("listen 127.0.0.1:3131 (plain FTP or explicit FTPS)"), "{}", out.stdout);
    assert!(out.stdout.contains("backend ftp.internal:21"), "{}", out.stdout);
    let out = check(&one, &["--client-tls", "implicit"]);
    assert!(out.stdout.contains("listen 127.0.0.1:3131 (implicit FTPS)"), "{}", out.stdout);

    let two = dir.path().join("two.toml");
    std::fs::write(
        &two,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:21\"\n[[listener]]\naddress = \"127.0.0.1:990\"\ntls = \"implicit\"\n\
             [backend]\naddress = \"10.0.0.20:21\"\n{tls}"
        ),
    )
    .unwrap();
    let out = check(&two, &[]);
    assert_ne!(out.status, 0, "{d}: {}", out.stdout);
    assert!(out.stderr.contains("different TLS modes") && out.stderr.contains("--client-tls"), "{}", out.stderr);
}

/// Completions and the man page come from the same definitions as --help.
#[test]
fn completions_and_man_page() {
    let bash = run_client(ftpgate().args(["completions", "bash"]), Duration::from_secs(20));
    assert_eq!(bash.status, 0, "{}", bash.stderr);
    assert!(bash.stdout.contains("complete -F _ftpgate") && bash.stdout.contains("--admin-socket"), "{}", bash.stdout);
    for shell in ["zsh", "fish"] {
        let out = run_client(ftpgate().args(["completions", shell]), Duration::from_secs(20));
        assert!(out.status == 0 && out.stdout.contains("ftpgate"), "{shell}: {}", out.stderr);
    }
    let man = run_client(ftpgate().arg("man"), Duration::from_secs(20));
    assert_eq!(man.status, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH ftpgate 1") && man.stdout.contains("who"), "{}", man.stdout);
    // Every page: rendered by man(1), with the sections an operator looks
    // for, and every page it refers to written beside it.
    let dir = tempfile::tempdir().unwrap();
    let wrote = run_client(ftpgate().args(["man", "--dir", dir.path().to_str().unwrap()]), Duration::from_secs(20));
    assert_eq!(wrote.status, 0, "{}", wrote.stderr);
    let page = run_client(
        Command::new("man").arg("-l").arg(dir.path().join("ftpgate.1")).env("MANWIDTH", "100"),
        Duration::from_secs(20),
    );
    assert_eq!(page.status, 0, "{}", page.stderr);
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "SUBCOMMANDS",
        "FILES",
        "SIGNALS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(page.stdout.lines().any(|l| l == section), "no {section} section:\n{}", page.stdout);
    }
    assert!(page.stdout.contains("/etc/ftpgate/ftpgate.toml") && page.stdout.contains("SIGHUP"), "{}", page.stdout);
    let mut refs: Vec<&str> = page
        .stdout
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("ftpgate-") && w.ends_with("(1)"))
        .collect();
    refs.sort();
    refs.dedup();
    assert!(refs.len() >= 8, "{refs:?}");
    for r in refs {
        let file = dir.path().join(format!("{}.1", r.trim_end_matches("(1)")));
        assert!(file.exists(), "ftpgate(1) refers to {r}, which was not written");
    }
    let run = std::fs::read_to_string(dir.path().join("ftpgate-run.1")).unwrap();
    assert!(run.contains("backend\\-max\\-tls\\-version") || run.contains("backend-max-tls-version"), "{run}");
}

/// Every flag and subcommand says what it does in --help.
#[test]
fn every_flag_has_a_help_text() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} --{}", arg.get_long().unwrap_or(arg.get_id().as_str())));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(format!("{path} {}", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let cmd = <ftpgate::cli::Cli as clap::CommandFactory>::command();
    let mut missing = Vec::new();
    walk(&cmd, "ftpgate", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:?}");
}

/// Every configuration error names the file, the key and its line, once.
#[test]
fn configuration_errors_name_file_key_and_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = run_client(ftpgate().args(["check", "--config", path.to_str().unwrap()]), Duration::from_secs(20));
        assert_ne!(out.status, 0, "{name} was accepted");
        out.stderr.trim().to_string()
    };
    let base = "[[listener]]\naddress = \"127.0.0.1:2121\"\n\n[backend]\naddress = \"127.0.0.1:21\"\n";
    let e = check("range.toml", &format!("{base}\n[passive]\nports = \"60000-50000\"\n"));
    assert!(e.contains("range.toml: line 8: passive.ports:") && e.contains("60000-50000"), "{e}");
    let e = check("policy.toml", &format!("policy = \"/nonexistent/p.toml\"\n{base}"));
    assert!(e.contains("policy.toml: line 1: policy: cannot read the policy file /nonexistent/p.toml"), "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "printed once: {e}");
    let e = check(
        "cert.toml",
        "[[listener]]\naddress = \"127.0.0.1:2121\"\ntls = \"explicit\"\n\n[backend]\naddress = \"127.0.0.1:21\"\n\n\
         [tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
    );
    assert!(e.contains("cert.toml: line 9: tls.cert") && e.contains("/nonexistent/c.pem"), "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "printed once: {e}");
}

/// `run` re-executes itself once with glibc's allocator tuned (src/cli/malloc.rs):
/// the same process (its PID is the one spawned, and it serves), the tunables
/// in its environment; an operator's own GLIBC_TUNABLES, empty included, is kept.
#[test]
fn run_tunes_glibc_malloc_unless_the_operator_did() {
    let backend = Vsftpd::start();
    backend.put("hello.txt", b"tuned\n");
    let environ = |pid: u32| {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        raw.split(|&b| b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect::<Vec<_>>()
    };
    for operator in [None, Some(""), Some("glibc.malloc.arena_max=2")] {
        let (mut cmd, addr) = ftpgate_run(backend.addr);
        cmd.env_remove("GLIBC_TUNABLES").env_remove("FTPGATE_MALLOC_TUNED");
        if let Some(v) = operator {
            cmd.env("GLIBC_TUNABLES", v);
        }
        let child = KillOnDrop::new(cmd.spawn().unwrap());
        wait_for_greeting(addr);
        let out = curl(&[&format!("ftp://{addr}/hello.txt")]);
        assert_eq!((out.status, out.stdout.as_str()), (0, "tuned\n"), "{}", out.stderr);
        let env = environ(child.id());
        let log =
            std::fs::read_to_string(std::env::temp_dir().join(format!("ftpgate-test-{}.log", addr.port()))).unwrap();
        let said = if operator.is_some() {
            "allocator=\"GLIBC_TUNABLES from the environment\""
        } else {
            "allocator=\"tuned\""
        };
        assert!(log.lines().any(|l| l.contains("ftpgate starting") && l.contains(said)), "{said} not in:\n{log}");
        let tunables: Vec<_> = env.iter().filter(|v| v.starts_with("GLIBC_TUNABLES=")).collect();
        assert_eq!(tunables.len(), 1, "{env:?}");
        match operator {
            // glibc parses the value in place, so /proc shows it up to the first ':'.
            None => {
                assert!(tunables[0].starts_with("GLIBC_TUNABLES=glibc.malloc.trim_threshold=67108864"), "{tunables:?}");
                assert!(env.iter().any(|v| v == "FTPGATE_MALLOC_TUNED=1"), "{env:?}");
            }
            Some(v) => {
                assert_eq!(tunables[0], &format!("GLIBC_TUNABLES={v}"));
                assert!(!env.iter().any(|v| v.starts_with("FTPGATE_MALLOC_TUNED")), "not re-executed: {env:?}");
            }
        }
    }
}
