//! Every reply true and in order (issue 9): refused transfers that cost the
//! backend session no TLS ticket, replies in command order around ABOR, no
//! 2xx for a transfer the client did not get whole, replies at the drain
//! deadline, and the bare-LF framing rule.

mod common;
use common::*;
use ftpgate::config::BackendTlsMode;
use ftpgate::metrics::Metrics;
use ftpgate::tls::TlsVersion;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A data connection opened before the command, as curl, ftplib, Commons Net
/// and aioftp do.
fn preconnect(c: &mut RawClient) -> TcpStream {
    let d = c.epsv_data();
    d.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    d
}

/// Reads a data connection to its end; panics on a timeout (a hang is a failure).
fn read_all(mut d: TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    d.read_to_end(&mut v).expect("data connection must end, not hang");
    v
}

/// A refused transfer's data connection ends without a byte: EOF, or a
/// reset when the refusal came before ftpgate had taken the connection from
/// its passive port's accept queue. A hang fails.
fn closed_without_data(mut d: TcpStream) {
    let mut buf = [0u8; 16];
    match d.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a refused transfer's data connection must close without data: {other:?}"),
    }
}

/// 20 refused RETRs from a client that connects first, then a listing, then
/// a mixed run of 50 transfers on one session: every backend data connection
/// resumes the backend control session, none does a full handshake.
fn refused_transfers_keep_resumption(
    backend: SocketAddr,
    root: &std::path::Path,
    certs: &TestCerts,
    max: TlsVersion,
    mixed: usize,
) {
    let gate = Gate::start_with(backend, backend_tls(certs, BackendTlsMode::Explicit, max));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    for i in 0..20 {
        let d = preconnect(&mut c);
        let (code, text) = c.cmd(&format!("RETR nope{i}.bin"));
        assert_eq!(code, 550, "refusal {i}: {text}");
        // The refused transfer's data connection is closed, not left hanging.
        closed_without_data(d);
    }
    let d = preconnect(&mut c);
    let (code, text) = c.cmd("LIST");
    assert_eq!(code, 150, "{text}");
    read_all(d);
    let (code, text) = c.reply();
    assert_eq!(code, 226, "the listing after 20 refusals must work: {text}");

    let data = payload(200_000, 9);
    for i in 0..mixed {
        let d = preconnect(&mut c);
        match i % 4 {
            0 => {
                assert_eq!(c.cmd(&format!("STOR f{i}.bin")).0, 150);
                let mut d = d;
                d.write_all(&data).unwrap();
                drop(d);
                assert_eq!(c.reply().0, 226);
                assert_eq!(sha256_file(&root.join(format!("f{i}.bin"))), sha256(&data));
            }
            1 => {
                assert_eq!(c.cmd(&format!("RETR f{}.bin", i - 1)).0, 150);
                assert_eq!(sha256(&read_all(d)), sha256(&data));
                assert_eq!(c.reply().0, 226);
            }
            2 => {
                assert_eq!(c.cmd("NLST").0, 150);
                read_all(d);
                assert_eq!(c.reply().0, 226);
            }
            _ => {
                assert_eq!(c.cmd("RETR missing.bin").0, 550);
                closed_without_data(d);
            }
        }
    }
    let m = &gate.metrics;
    assert_eq!(Metrics::get(&m.tls_backend_data_full), 0, "a backend data connection did a full handshake");
    // The listing, and 3 of every 4 mixed transfers; refusals cost nothing.
    let transfers = (0..mixed).filter(|i| i % 4 != 3).count() as u64;
    assert_eq!(Metrics::get(&m.tls_backend_data_resumed), 1 + transfers);
    assert_eq!(c.cmd("QUIT").0, 221);
    gate.assert_drained();
}

#[test]
fn refused_transfers_do_not_spend_vsftpd_tls13_resumption() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    refused_transfers_keep_resumption(backend.addr, &backend.root, &certs, TlsVersion::V13, 50);
}

#[test]
fn refused_transfers_do_not_spend_vsftpd_tls12_resumption() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    refused_transfers_keep_resumption(backend.addr, &backend.root, &certs, TlsVersion::V12, 50);
}

/// ProFTPD over TLS 1.3: the 20 refusals cost nothing. Its mixed run is
/// capped at TLS 1.2: over TLS 1.3 ProFTPD sends no session ticket on upload
/// data connections (OpenSSL sends them when the server writes), rustls uses
/// each ticket once, so after two uploads the next data connection finds none
/// left and ProFTPD refuses the full handshake (425); see
/// docs/troubleshooting.md.
#[test]
fn refused_transfers_do_not_spend_proftpd_resumption() {
    let certs = TestCerts::new();
    let backend = Proftpd::start_tls(&certs);
    refused_transfers_keep_resumption(backend.addr, &backend.root, &certs, TlsVersion::V13, 0);
    refused_transfers_keep_resumption(backend.addr, &backend.root, &certs, TlsVersion::V12, 50);
}

/// The reproduction: one curl invocation, three URLs, one control
/// connection: 550 550 226 as against the server directly.
#[test]
fn curl_two_misses_then_listing_through_strict_vsftpd() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    let gate = Gate::start_with(backend.addr, backend_tls(&certs, BackendTlsMode::Explicit, TlsVersion::V13));
    let url = gate.url();
    let user = format!("{USER}:{PASSWORD}");
    let out = curl(&[
        "-s",
        "-u",
        &user,
        &format!("{url}/nope1.bin"),
        "-o",
        "/dev/null",
        &format!("{url}/nope2.bin"),
        "-o",
        "/dev/null",
        &format!("{url}/"),
        "-o",
        "/dev/null",
        "-w",
        "%{response_code} ",
    ]);
    assert_eq!(out.stdout.trim(), "550 550 226", "{}", out.stderr);
}

/// Pipelined during a download: the transfer's reply, then the queued
/// commands' replies in order, then ABOR's.
#[test]
fn replies_in_command_order_around_abor() {
    let backend = Vsftpd::start();
    backend.put("big.bin", &payload(30 << 20, 5));
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let mut d = preconnect(&mut c);
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    let mut got = vec![0u8; 1 << 20];
    d.read_exact(&mut got).unwrap();
    c.send_raw(b"NOOP\r\nPWD\r\nABOR\r\n");
    let codes: Vec<u16> = (0..4).map(|_| c.reply().0).collect();
    assert_eq!(codes, [426, 200, 257, 226], "transfer, NOOP, PWD, ABOR");
    // The session goes on in step.
    assert_eq!(c.cmd("NOOP").0, 200);
    drop(d);
    assert_eq!(c.cmd("QUIT").0, 221);
    gate.assert_drained();
}

/// A scripted backend that sends 226 as soon as it has queued the whole file
/// (into socket buffers), as a fast server does.
#[test]
fn early_226_is_not_passed_on_for_an_aborted_download() {
    let data_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data_port = data_l.local_addr().unwrap().port();
    let ctrl = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = ctrl.local_addr().unwrap();
    let script = std::thread::spawn(move || {
        let (s, _) = ctrl.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut expect = |want: &str| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with(want), "backend expected {want}, got {line:?}");
        };
        w.write_all(b"220 fake\r\n").unwrap();
        expect("USER");
        w.write_all(b"331 pw\r\n").unwrap();
        expect("PASS");
        w.write_all(b"230 in\r\n").unwrap();
        expect("PWD");
        w.write_all(b"257 \"/\"\r\n").unwrap();
        expect("EPSV");
        w.write_all(format!("229 ok (|||{data_port}|)\r\n").as_bytes()).unwrap();
        let (mut d, _) = data_l.accept().unwrap();
        expect("RETR");
        w.write_all(b"150 here it comes\r\n").unwrap();
        let writer = std::thread::spawn(move || {
            let _ = d.write_all(&payload(10 << 20, 1));
        });
        w.write_all(b"226 Transfer complete.\r\n").unwrap();
        expect("ABOR");
        w.write_all(b"225 No transfer to ABOR.\r\n").unwrap();
        writer.join().expect("the data writer thread panicked");
        expect("QUIT");
        let _ = w.write_all(b"221 bye\r\n");
    });
    let gate = Gate::start(backend);
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER u").0, 331);
    assert_eq!(c.cmd("PASS p").0, 230);
    let mut d = preconnect(&mut c);
    assert_eq!(c.cmd("RETR ten.bin").0, 150);
    let mut got = vec![0u8; 4 << 20];
    d.read_exact(&mut got).unwrap();
    c.send_raw(b"ABOR\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 426, "4 of 10 MiB is not a completed transfer: {text}");
    let (code, text) = c.reply();
    assert_eq!(code, 226, "ABOR of an aborted transfer: {text}");
    assert_eq!(c.cmd("QUIT").0, 221);
    script.join().unwrap();
    assert_eq!(Metrics::get(&gate.metrics.transfers_aborted), 1);
}

/// `NOOP\nDELE x\r\n`: neither runs; each fragment gets 500.
#[test]
fn nothing_runs_after_a_bare_lf_until_crlf() {
    let backend = Vsftpd::start();
    backend.put("keep.txt", b"keep me\n");
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    c.send_raw(b"NOOP\nDELE keep.txt\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("CRLF"), "{text}");
    let (code, text) = c.reply();
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("CRLF"), "{text}");
    assert_eq!(c.cmd("NOOP").0, 200, "in step again after CRLF");
    assert!(backend.root.join("keep.txt").exists(), "DELE after a bare LF ran");
    let log = backend.log_after(&format!("\"USER {USER}\""));
    assert!(!log.contains("DELE"), "DELE reached the backend: {log}");
}

/// SIGTERM with `timeouts.drain = 2` and slow readers: at the deadline each
/// transfer's client gets 426 then 421, an idle session 421 at once, and the
/// process exits within the deadline plus a second or two.
#[test]
fn drain_deadline_says_426_and_421_to_running_transfers() {
    let backend = Vsftpd::start();
    backend.put("big.bin", &payload(20 << 20, 3));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ftpgate.toml");
    std::fs::write(&config, "[timeouts]\ndrain = 2\n").unwrap();
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let mut child = KillOnDrop::new(cmd.args(["--config", config.to_str().unwrap()]).spawn().unwrap());
    wait_for_greeting(addr);
    let mut idle = RawClient::connect(addr);
    idle.login();
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = RawClient::connect(addr);
        c.login();
        let mut d = preconnect(&mut c);
        assert_eq!(c.cmd("RETR big.bin").0, 150);
        let mut buf = vec![0u8; 64 << 10];
        d.read_exact(&mut buf).unwrap();
        slow.push((c, d));
    }
    let sent = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(idle.reply().0, 421, "idle sessions are told at once");
    for (c, _d) in &mut slow {
        // The slow readers stop reading: their transfers cannot finish in 2 s.
        let (code, text) = c.reply();
        assert_eq!(code, 426, "{text}");
        let (code, text) = c.reply();
        assert_eq!(code, 421, "{text}");
    }
    let status = loop {
        if let Some(st) = child.child().try_wait().unwrap() {
            break st;
        }
        assert!(sent.elapsed() < Duration::from_secs(5), "ftpgate still running 5 s after SIGTERM with drain = 2");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(sent.elapsed() >= Duration::from_secs(2), "transfers get the whole drain time");
}

/// A client that starts its data TLS handshake before the transfer command
/// (aioftp's order) works as well as one that starts after the 150; the
/// backend leg still waits for the backend's 150, so each resumes.
#[test]
fn client_data_tls_before_the_command_works() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    let server = certs.server_options();
    let tweak = backend_tls(&certs, BackendTlsMode::Explicit, TlsVersion::V13);
    let gate = Gate::start_with(backend.addr, move |s| {
        tweak(s);
        s.listeners[0].tls = ftpgate::config::ClientTlsMode::Explicit;
        s.client_tls = Some(server);
    });
    let work = tempfile::tempdir().unwrap();
    let data = payload(2 << 20, 12);
    std::fs::write(work.path().join("src.bin"), &data).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/early_tls_client.py");
    let ca = certs.path("ca.pem");
    let port = gate.addr.port().to_string();
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["127.0.0.1", &port, USER, PASSWORD, ca.to_str().unwrap(), work.path().to_str().unwrap()]);
    let out = run_client(&mut cmd, Duration::from_secs(60));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    // greeting, AUTH, USER, PASS, PBSZ, PROT, TYPE, EPSV, STOR 150+226, EPSV, RETR 150+226, QUIT
    let want = [220, 234, 331, 230, 200, 200, 200, 229, 150, 226, 229, 150, 226, 221];
    assert_eq!(v["codes"], serde_json::json!(want), "{v}");
    assert_eq!(v["sha"], sha256(&data).as_str());
    assert_eq!(sha256_file(&backend.root.join("up.bin")), sha256(&data));
    let m = &gate.metrics;
    assert_eq!(Metrics::get(&m.tls_client_data_resumed), 2);
    assert_eq!(Metrics::get(&m.tls_backend_data_resumed), 2);
    assert_eq!(Metrics::get(&m.tls_backend_data_full), 0);
}

/// Runs tests/clients/tls_faults_client.py against `gate` and returns the
/// reply codes it saw (after PROT P, in order).
fn tls_fault(gate: &Gate, certs: &TestCerts, scenario: &str, backend: &Vsftpd) -> Vec<u64> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tls_faults_client.py");
    let port = gate.addr.port().to_string();
    let ca = certs.path("ca.pem");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["127.0.0.1", &port, USER, PASSWORD, ca.to_str().unwrap(), scenario]);
    let out = run_client(&mut cmd, Duration::from_secs(60));
    assert_eq!(out.status, 0, "{scenario}: {}\nvsftpd's log:\n{}", out.stderr, backend.log());
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    v["codes"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect()
}

/// TLS on both legs of control and data (strict vsftpd behind): ABOR during
/// a download and during an upload, an upload cut without close_notify and
/// one reset. Replies stay in command order, and no cut upload gets a 2xx.
#[test]
fn tls_legs_abor_and_truncation() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    backend.put("big.bin", &payload(16 << 20, 31));
    let server = certs.server_options();
    let tweak = backend_tls(&certs, BackendTlsMode::Explicit, TlsVersion::V13);
    let gate = Gate::start_with(backend.addr, move |s| {
        tweak(s);
        s.listeners[0].tls = ftpgate::config::ClientTlsMode::Explicit;
        s.client_tls = Some(server);
    });
    // RETR's 150 and 426, NOOP's 200, ABOR's 226, then the closing NOOP.
    assert_eq!(tls_fault(&gate, &certs, "abor_download", &backend), [150, 426, 200, 226, 200]);
    assert_eq!(tls_fault(&gate, &certs, "abor_upload", &backend), [150, 426, 226, 200]);
    for (scenario, name) in [("upload_cut", "cut.bin"), ("upload_reset", "reset.bin")] {
        let codes = tls_fault(&gate, &certs, scenario, &backend);
        assert_eq!(codes.len(), 3, "{scenario}: {codes:?}");
        assert_eq!(codes[0], 150);
        assert!(codes[1] >= 400, "{scenario}: a cut upload must not get {}", codes[1]);
        assert_eq!(codes[2], 200, "{scenario}: the session goes on");
        // What reached the backend is a prefix of what the client sent (the
        // client's chunk is bytes 0..=255 repeated), never padded or reordered.
        let got = std::fs::read(backend.root.join(name)).expect("vsftpd keeps the partial upload");
        let sent: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        assert!(
            got.len() <= sent.len() && got[..] == sent[..got.len()],
            "{scenario}: {} bytes, not a prefix",
            got.len()
        );
    }
    assert_eq!(Metrics::get(&gate.metrics.tls_backend_data_full), 0, "every backend data connection resumed");
}
