//! Uploads scanned by a real clamd before the client hears `226` (issue 23):
//! clamd from Debian's clamav-daemon, on a Unix socket in a temp folder, with
//! a signature database the test writes (nothing is downloaded).

mod common;

use common::*;
use ftpgate::config::{ScanSettings, Scanner};
use ftpgate::metrics::Metrics;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The test pattern clamd is taught to call malware.
const MARK: &[u8] = b"FTPGATE-TEST-MALWARE-7f3a9c";
const SIGNATURE: &str = "Ftpgate.Test.Sig.UNOFFICIAL";

struct Clamd {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<KillOnDrop>,
}

impl Clamd {
    fn start() -> Clamd {
        Clamd::start_with("100M")
    }

    /// `stream_max`: clamd's `StreamMaxLength`.
    fn start_with(stream_max: &str) -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let hex: String = MARK.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(db.join("test.ndb"), format!("Ftpgate.Test.Sig:0:*:{hex}\n")).unwrap();
        let socket = dir.path().join("clamd.sock");
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "LocalSocket {}\nDatabaseDirectory {}\nForeground yes\nLogFile {}\nTemporaryDirectory {}\n\
                 StreamMaxLength {stream_max}\n",
                socket.display(),
                db.display(),
                dir.path().join("clamd.log").display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("clamd")
            .args(["-c", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd not installed: run scripts/test.sh");
        let child = KillOnDrop::new(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "clamd did not open its socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        Clamd { socket, _dir: dir, child: Some(child) }
    }

    fn settings(&self, reject_on_error: bool) -> ScanSettings {
        ScanSettings {
            scanner: Scanner::Unix(self.socket.clone()),
            reject_on_error,
            timeout: Duration::from_secs(5),
            max_size: 64 << 20,
            reject_oversize: true,
            ban_after: 0,
        }
    }

    fn stop(&mut self) {
        self.child = None;
    }
}

/// Uploads `data` with `verb` (STOR, APPE, STOU) over a raw session; the
/// final reply.
fn upload(c: &mut RawClient, verb: &str, name: &str, data: &[u8]) -> (u16, String) {
    let mut d = c.epsv_data();
    let line = if name.is_empty() { verb.to_string() } else { format!("{verb} {name}") };
    let (code, text) = c.cmd(&line);
    assert_eq!(code, 150, "{line}: {text}");
    // Written in pieces, so the pattern may straddle reads.
    for piece in data.chunks(7919) {
        d.write_all(piece).unwrap();
    }
    drop(d);
    c.reply()
}

fn with_mark_at(len: usize, at: usize, seed: u64) -> Vec<u8> {
    let mut data = payload(len, seed);
    data[at..at + MARK.len()].copy_from_slice(MARK);
    data
}

#[test]
fn clean_uploads_pass_and_infected_ones_are_removed_with_550() {
    let clamd = Clamd::start();
    let backend = Vsftpd::start();
    let scan = clamd.settings(true);
    let gate = Gate::start_with(backend.addr, move |s| s.scan = Some(scan));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);

    let clean = payload(3 << 20, 1);
    let (code, text) = upload(&mut c, "STOR", "clean.bin", &clean);
    assert_eq!(code, 226, "{text}");
    assert_eq!(sha256_file(&backend.root.join("clean.bin")), sha256(&clean));
    assert_eq!(gate.metrics.scans_for("clean"), 1);

    // The pattern at the start, in the middle, at the end, and across the
    // boundary of a 64 KiB read.
    let len = 2 << 20;
    for (i, at) in [0, len / 2, len - MARK.len(), 65536 - 10].into_iter().enumerate() {
        let name = format!("bad{i}.bin");
        let (code, text) = upload(&mut c, "STOR", &name, &with_mark_at(len, at, 10 + i as u64));
        assert_eq!(code, 550, "mark at {at}: {text}");
        assert!(text.contains(&format!("Upload rejected: malware found ({SIGNATURE})")), "{text}");
        assert!(text.contains("file removed"), "{text}");
        assert!(!backend.root.join(&name).exists(), "mark at {at}: the file is still on the backend");
    }
    assert_eq!(gate.metrics.scans_for("infected"), 4);

    // APPE: the appended bytes are scanned; a hit removes the whole file.
    let (code, _) = upload(&mut c, "STOR", "grow.bin", &payload(100_000, 3));
    assert_eq!(code, 226);
    let (code, text) = upload(&mut c, "APPE", "grow.bin", &with_mark_at(50_000, 20_000, 4));
    assert_eq!(code, 550, "{text}");
    assert!(!backend.root.join("grow.bin").exists());

    // STOU: the name the backend chose is the one removed.
    let before: Vec<_> = std::fs::read_dir(&backend.root).unwrap().map(|e| e.unwrap().file_name()).collect();
    let (code, text) = upload(&mut c, "STOU", "", &with_mark_at(80_000, 100, 5));
    assert_eq!(code, 550, "{text}");
    let after: Vec<_> = std::fs::read_dir(&backend.root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "STOU's file is removed");

    // Downloads are not scanned, and the session goes on.
    let d = c.epsv_data();
    assert_eq!(c.cmd("RETR clean.bin").0, 150);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut { d }, &mut got).unwrap();
    assert_eq!(c.reply().0, 226);
    assert_eq!(sha256(&got), sha256(&clean));
    assert_eq!(gate.metrics.scans_for("infected"), 6);
    assert_eq!(gate.metrics.scans_for("clean"), 2);
    assert_eq!(c.cmd("QUIT").0, 221);
    gate.assert_drained();
}

#[test]
fn a_scanner_that_is_down_rejects_or_accepts_as_configured() {
    let mut clamd = Clamd::start();
    let backend = Vsftpd::start();
    let reject = clamd.settings(true);
    let accept = clamd.settings(false);
    clamd.stop();
    let strict = Gate::start_with(backend.addr, move |s| s.scan = Some(reject));
    let mut c = RawClient::connect(strict.addr);
    c.login();
    let started = Instant::now();
    let (code, text) = upload(&mut c, "STOR", "unscanned.bin", &payload(500_000, 6));
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("Upload rejected: the malware scanner failed") && text.contains("file removed"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by [scan] timeout");
    assert!(!backend.root.join("unscanned.bin").exists());
    assert_eq!(strict.metrics.scans_for("error_rejected"), 1);
    assert_eq!(c.cmd("QUIT").0, 221);

    let lenient = Gate::start_with(backend.addr, move |s| s.scan = Some(accept));
    let mut c = RawClient::connect(lenient.addr);
    c.login();
    let data = payload(500_000, 7);
    let (code, text) = upload(&mut c, "STOR", "accepted.bin", &data);
    assert_eq!(code, 226, "{text}");
    assert_eq!(sha256_file(&backend.root.join("accepted.bin")), sha256(&data));
    assert_eq!(lenient.metrics.scans_for("error_accepted"), 1);
    assert_eq!(Metrics::get(&lenient.metrics.transfers_ok), 1);
    assert_eq!(c.cmd("QUIT").0, 221);
}

#[test]
fn the_policy_exempts_a_trusted_account() {
    let clamd = Clamd::start();
    let backend = Vsftpd::start();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[rule]]\nname = \"all\"\nusers = [\"{USER}\", \"{USER2}\"]\npaths = [\"/**\"]\nallow = [\"all\"]\n\n\
             [defaults]\npermissions = []\n\n[users.{USER2}]\nscan = false\n"
        ),
    )
    .unwrap();
    let scan = clamd.settings(true);
    let gate = Gate::start_with(backend.addr, move |s| {
        s.scan = Some(scan);
        s.policy = Some(policy);
    });
    let bad = with_mark_at(100_000, 5000, 8);
    let mut scanned = RawClient::connect(gate.addr);
    scanned.login();
    assert_eq!(upload(&mut scanned, "STOR", "a.bin", &bad).0, 550);
    let mut trusted = RawClient::connect(gate.addr);
    let (_, greeting) = trusted.reply();
    assert!(greeting.starts_with("220") || !greeting.is_empty());
    assert_eq!(trusted.cmd(&format!("USER {USER2}")).0, 331);
    assert_eq!(trusted.cmd(&format!("PASS {PASSWORD}")).0, 230);
    let (code, text) = upload(&mut trusted, "STOR", "b.bin", &bad);
    assert_eq!(code, 226, "{text}");
    assert_eq!(sha256_file(&backend.root.join("b.bin")), sha256(&bad));
    assert_eq!(gate.metrics.scans_for("infected"), 1);
    assert_eq!(gate.metrics.scans_for("clean"), 0, "the exempt upload was not scanned at all");
}

/// The binary with `--scan-clamd`: `check` says whether clamd answers, the
/// audit line names user, address, path, size and signature, the xferlog
/// marks the upload incomplete, /readyz follows clamd.
#[test]
fn the_operator_sees_the_rejection() {
    let mut clamd = Clamd::start();
    let backend = Vsftpd::start();
    let dir = tempfile::tempdir().unwrap();
    let xferlog = dir.path().join("xferlog");
    let metrics = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    let flag = format!("unix:{}", clamd.socket.display());
    let check = run_client(
        Command::new(env!("CARGO_BIN_EXE_ftpgate")).args([
            "check",
            "--listen",
            "127.0.0.1:2121",
            "--backend",
            &backend.addr.to_string(),
            "--scan-clamd",
            &flag,
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(check.status, 0, "{}", check.stderr);
    assert!(check.stdout.contains(&format!("scan: clamd at {flag} reachable")), "{}", check.stdout);
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let _child = KillOnDrop::new(
        cmd.args(["--scan-clamd", &flag, "--xferlog", xferlog.to_str().unwrap(), "--metrics", &metrics.to_string()])
            .spawn()
            .unwrap(),
    );
    wait_for_greeting(addr);
    let mut c = RawClient::connect(addr);
    c.login();
    let bad = with_mark_at(70_000, 600, 9);
    let (code, text) = upload(&mut c, "STOR", "evil.bin", &bad);
    assert_eq!(code, 550, "{text}");
    assert_eq!(c.cmd("QUIT").0, 221);
    let log_path = std::env::temp_dir().join(format!("ftpgate-test-{}.log", addr.port()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if let Some(l) = log.lines().find(|l| l.contains("upload rejected by the malware scan")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no audit line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for part in [
        format!("user={USER}"),
        "client=127.0.0.1".to_string(),
        "path=/evil.bin".to_string(),
        "size=70000".to_string(),
        format!("signature={SIGNATURE}"),
        "removed=true".to_string(),
    ] {
        assert!(line.contains(&part), "{part} missing: {line}");
    }
    let x = std::fs::read_to_string(&xferlog).unwrap();
    assert!(x.contains("evil.bin") && x.trim_end().ends_with(" i"), "xferlog marks it incomplete: {x}");
    let ready = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("curl").args(["-s", &format!("http://{metrics}/readyz")]).output().unwrap();
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if body.contains(want) {
                return body;
            }
            assert!(Instant::now() < deadline, "/readyz said {body:?}, not {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ready("ready");
    let (v, text) = scrape_opt(metrics, "ftpgate_scan_total{result=\"infected\"}");
    assert_eq!(v, Some(1), "{text}");
    clamd.stop();
    let body = ready("malware scanner");
    assert!(body.contains("unreachable"), "{body}");
}

/// A "clamd" that accepts and then neither reads nor answers: the upload is
/// not held up past `[scan] timeout`, and nothing is left when rejecting.
#[test]
fn a_scanner_that_never_answers_is_bounded_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mute.sock");
    let mute = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        mute.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok((c, _)) = mute.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let backend = Vsftpd::start();
    let scan = ScanSettings {
        scanner: Scanner::Unix(socket),
        reject_on_error: true,
        timeout: Duration::from_secs(2),
        max_size: 64 << 20,
        reject_oversize: true,
        ban_after: 0,
    };
    let gate = Gate::start_with(backend.addr, move |s| s.scan = Some(scan));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let started = Instant::now();
    // More than the socket buffers hold: the feeder blocks, times out and
    // lets the upload go on.
    let (code, text) = upload(&mut c, "STOR", "stuck.bin", &payload(8 << 20, 11));
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("no progress within 2 s") || text.contains("no verdict within 2 s"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!backend.root.join("stuck.bin").exists());
    assert_eq!(c.cmd("QUIT").0, 221);
    drop(held);
}

#[test]
fn prot_p_uploads_are_scanned_too() {
    let clamd = Clamd::start();
    let backend = Vsftpd::start();
    let certs = TestCerts::new();
    let server = certs.server_options();
    let scan = clamd.settings(true);
    let gate = Gate::start_with(backend.addr, move |s| {
        s.scan = Some(scan);
        s.listeners[0].tls = ftpgate::config::ClientTlsMode::Explicit;
        s.client_tls = Some(server);
    });
    let work = tempfile::tempdir().unwrap();
    let ca = certs.path("ca.pem").display().to_string();
    let url = format!("ftp://127.0.0.1:{}", gate.addr.port());
    let good = work.path().join("good.bin");
    std::fs::write(&good, payload(1 << 20, 12)).unwrap();
    let bad = work.path().join("bad.bin");
    std::fs::write(&bad, with_mark_at(1 << 20, 700_000, 13)).unwrap();
    let out = curl(&["--ssl-reqd", "--cacert", &ca, "-T", good.to_str().unwrap(), &format!("{url}/good.bin")]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&backend.root.join("good.bin")), sha256_file(&good));
    let out = curl(&["--ssl-reqd", "--cacert", &ca, "-T", bad.to_str().unwrap(), &format!("{url}/bad.bin")]);
    assert_ne!(out.status, 0, "curl must see the rejection");
    assert!(out.stderr.contains("550"), "{}", out.stderr);
    assert!(!backend.root.join("bad.bin").exists());
    assert_eq!(gate.metrics.scans_for("clean"), 1);
    assert_eq!(gate.metrics.scans_for("infected"), 1);
}

/// `[scan] ban_after`: an address that keeps uploading malware is banned
/// like one with too many failed logins; clean uploads do not count.
#[test]
fn repeated_malware_bans_the_address() {
    let clamd = Clamd::start();
    let backend = Vsftpd::start();
    let mut scan = clamd.settings(true);
    scan.ban_after = 2;
    let gate = Gate::start_with(backend.addr, move |s| s.scan = Some(scan));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(upload(&mut c, "STOR", "x.bin", &with_mark_at(10_000, 0, 14)).0, 550);
    assert_eq!(upload(&mut c, "STOR", "ok.bin", &payload(10_000, 15)).0, 226);
    // Still welcome after one.
    let mut other = RawClient::connect(gate.addr);
    assert_eq!(other.reply().0, 220);
    assert_eq!(upload(&mut c, "STOR", "y.bin", &with_mark_at(10_000, 0, 16)).0, 550);
    let mut banned = RawClient::connect(gate.addr);
    let (code, text) = banned.reply();
    assert_eq!(code, 421, "{text}");
    // Another address is not affected.
    let mut elsewhere = connect_from("127.0.0.2", gate.addr);
    assert_eq!(elsewhere.reply().0, 220);
}

/// c-icap with virus_scan in front of `clamd`, on a free loopback port.
struct CIcap {
    port: u16,
    _dir: tempfile::TempDir,
    _child: KillOnDrop,
}

impl CIcap {
    fn start(clamd: &Clamd) -> CIcap {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port("127.0.0.1".parse().unwrap());
        let d = dir.path().display();
        let conf = dir.path().join("c-icap.conf");
        std::fs::write(
            &conf,
            format!(
                "PidFile {d}/c-icap.pid\nCommandsSocket {d}/c-icap.ctl\nTimeout 60\nStartServers 1\nMaxServers 2\n\
                 MinSpareThreads 2\nMaxSpareThreads 4\nThreadsPerChild 4\nPort 127.0.0.1:{port}\nTmpDir {d}\n\
                 MaxMemObject 131072\nDebugLevel 1\nModulesDir /usr/lib/x86_64-linux-gnu/c_icap\n\
                 ServicesDir /usr/lib/x86_64-linux-gnu/c_icap\nTemplateDir /usr/share/c_icap/templates/\n\
                 TemplateDefaultLanguage en\nLoadMagicFile /etc/c-icap/c-icap.magic\nServerLog {d}/server.log\n\
                 AccessLog {d}/access.log\nModule common clamd_mod.so\nclamd_mod.ClamdSocket {}\n\
                 Service antivirus_module virus_scan.so\n\
                 ServiceAlias avscan virus_scan?allow204=on&sizelimit=off&mode=simple\nvirus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GIF JPEG MSOFFICE\n\
                 virus_scan.MaxObjectSize 100M\nvirus_scan.DefaultEngine clamd\n",
                clamd.socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("c-icap")
            .args(["-N", "-D", "-f", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("c-icap not installed: run scripts/test.sh");
        let child = KillOnDrop::new(child);
        wait_for_port(SocketAddr::new("127.0.0.1".parse().unwrap(), port));
        CIcap { port, _dir: dir, _child: child }
    }

    fn settings(&self) -> ScanSettings {
        ScanSettings {
            scanner: Scanner::Icap { host: "127.0.0.1".into(), port: self.port, service: "avscan".into() },
            reject_on_error: true,
            timeout: Duration::from_secs(10),
            max_size: 64 << 20,
            reject_oversize: true,
            ban_after: 0,
        }
    }
}

#[test]
fn uploads_scanned_through_icap() {
    let clamd = Clamd::start();
    let icap = CIcap::start(&clamd);
    let backend = Vsftpd::start();
    let scan = icap.settings();
    let gate = Gate::start_with(backend.addr, move |s| s.scan = Some(scan));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    // Shorter than the preview, and longer.
    for (name, data) in [("small.bin", payload(1000, 20)), ("big.bin", payload(3 << 20, 21))] {
        let (code, text) = upload(&mut c, "STOR", name, &data);
        assert_eq!(code, 226, "{name}: {text}");
        assert_eq!(sha256_file(&backend.root.join(name)), sha256(&data));
    }
    // In the preview, after it, across a read, at the very end.
    let len = 2 << 20;
    for (i, at) in [10, len / 2, 65536 - 10, len - MARK.len()].into_iter().enumerate() {
        let name = format!("icap-bad{i}.bin");
        let (code, text) = upload(&mut c, "STOR", &name, &with_mark_at(len, at, 30 + i as u64));
        assert_eq!(code, 550, "mark at {at}: {text}");
        assert!(text.contains(&format!("malware found ({SIGNATURE})")), "{text}");
        assert!(!backend.root.join(&name).exists());
    }
    assert_eq!(gate.metrics.scans_for("clean"), 2);
    assert_eq!(gate.metrics.scans_for("infected"), 4);
    let check = run_client(
        Command::new(env!("CARGO_BIN_EXE_ftpgate")).args([
            "check",
            "--listen",
            "127.0.0.1:2121",
            "--backend",
            &backend.addr.to_string(),
            "--scan-icap",
            &format!("icap://127.0.0.1:{}/avscan", icap.port),
        ]),
        Duration::from_secs(20),
    );
    assert!(check.stdout.contains("reachable") && !check.stdout.contains("NOT"), "{}", check.stdout);
}

/// An "ICAP server" that answers garbage: rejected per on_error, in bounded
/// time, no file left.
#[test]
fn an_icap_server_talking_nonsense_rejects_the_upload() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = [0u8; 65536];
                let _ = std::io::Read::read(&mut c, &mut buf);
                let _ = c.write_all(b"SPAM 999 nonsense\r\n\x01\x02\r\n\r\n");
            });
        }
    });
    let backend = Vsftpd::start();
    let scan = ScanSettings {
        scanner: Scanner::Icap { host: "127.0.0.1".into(), port, service: "avscan".into() },
        reject_on_error: true,
        timeout: Duration::from_secs(3),
        max_size: 64 << 20,
        reject_oversize: true,
        ban_after: 0,
    };
    let gate = Gate::start_with(backend.addr, move |s| s.scan = Some(scan));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let started = Instant::now();
    let (code, text) = upload(&mut c, "STOR", "n.bin", &payload(200_000, 40));
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("ICAP service") && text.contains("nonsense"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!backend.root.join("n.bin").exists());
    assert_eq!(gate.metrics.scans_for("error_rejected"), 1);
}

/// The resident memory of this process (the in-process ftpgate included), KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

/// A 1 GiB clean upload is scanned whole (clamd reads every byte) and
/// accepted, with memory flat: what ftpgate holds per upload is bounded by
/// its queue to the scanner, not by the file.
#[test]
fn a_one_gib_clean_upload_is_scanned_whole_with_flat_memory() {
    let clamd = Clamd::start_with("2048M");
    let backend = Vsftpd::start();
    let mut scan = clamd.settings(true);
    scan.max_size = 2 << 30;
    scan.timeout = Duration::from_secs(120);
    let gate = Gate::start_with(backend.addr, move |s| s.scan = Some(scan));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    let chunk = payload(1 << 20, 77);
    let mut want = <sha2::Sha256 as sha2::Digest>::new();
    let mut d = c.epsv_data();
    let (code, text) = c.cmd("STOR big.bin");
    assert_eq!(code, 150, "{text}");
    let before = rss_kib();
    let mut peak = before;
    for i in 0..1024 {
        d.write_all(&chunk).unwrap();
        sha2::Digest::update(&mut want, &chunk);
        if i % 16 == 0 {
            peak = peak.max(rss_kib());
        }
    }
    drop(d);
    let (code, text) = c.reply();
    peak = peak.max(rss_kib());
    assert_eq!(code, 226, "{text}");
    let grew = peak.saturating_sub(before);
    println!("1 GiB scanned upload: RSS {before} KiB before, peak {peak} KiB (+{grew} KiB)");
    assert!(grew < 64 * 1024, "memory grew by {grew} KiB during a 1 GiB upload");
    assert_eq!(gate.metrics.scans_for("clean"), 1);
    let mut got = <sha2::Sha256 as sha2::Digest>::new();
    let mut f = std::fs::File::open(backend.root.join("big.bin")).unwrap();
    std::io::copy(&mut f, &mut got).unwrap();
    assert_eq!(sha2::Digest::finalize(got), sha2::Digest::finalize(want), "the backend's file");
}
