//! Cancelled transfers, as ordinary clients cancel (read a little, ABOR,
//! close the data connection at once), must never end a session: every ABOR
//! is answered in order and the session goes on. A panic inside a session
//! (a bug) must not end it silently either: the client hears 421 and the
//! process keeps serving everyone else.

mod common;
use common::*;
use ftpgate::metrics::Metrics;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Runs tests/clients/cancel_client.py; returns each round's reply codes.
fn cancels(gate: SocketAddr, rounds: usize, file: &str, ca: Option<&std::path::Path>) -> Vec<Vec<u64>> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/cancel_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["127.0.0.1", &gate.port().to_string(), USER, PASSWORD, &rounds.to_string(), file]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = run_client(&mut cmd, Duration::from_secs(120));
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert!(v.get("error").is_none(), "{v}");
    v["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect())
        .collect()
}

/// Each cancelled round: 150, then 426 and ABOR's 226 (cut: ftpgate's rule,
/// whatever the backend said), or the transfer's 226 and ABOR's own reply
/// as the backend gave it (every byte was delivered before ABOR arrived),
/// then NOOP's 200.
fn assert_cancel_rounds(rounds: &[Vec<u64>], want: usize) {
    assert_eq!(rounds.len(), want, "{rounds:?}");
    for (i, r) in rounds.iter().enumerate() {
        let ok = matches!(r.as_slice(), [150, 426, 226, 200] | [150, 226, 225 | 226, 200]);
        assert!(ok, "round {i}: {r:?} (all: {rounds:?})");
    }
}

#[test]
fn fifty_cancels_against_vsftpd_plain_in_one_session_and_across_sessions() {
    ensure_test_user();
    let backend = Vsftpd::start();
    backend.put("big.bin", &payload(8 << 20, 3));
    let gate = Gate::start(backend.addr);
    assert_cancel_rounds(&cancels(gate.addr, 50, "big.bin", None), 50);
    // Across sessions: five at once, ten cancels each.
    let addr = gate.addr;
    let runs: Vec<_> = (0..5).map(|_| std::thread::spawn(move || cancels(addr, 10, "big.bin", None))).collect();
    for r in runs {
        assert_cancel_rounds(&r.join().unwrap(), 10);
    }
    assert_eq!(Metrics::get(&gate.metrics.session_panics), 0);
    gate.assert_drained();
}

#[test]
fn fifty_cancels_against_vsftpd_under_prot_p() {
    ensure_test_user();
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    backend.put("big.bin", &payload(8 << 20, 4));
    let server = certs.server_options();
    let tweak = backend_tls(&certs, ftpgate::config::BackendTlsMode::Explicit, ftpgate::tls_options::TlsVersion::V12);
    let gate = Gate::start_with(backend.addr, move |s| {
        tweak(s);
        s.listeners[0].tls = ftpgate::config::ClientTlsMode::Explicit;
        s.client_tls = Some(server);
    });
    let ca = certs.path("ca.pem");
    assert_cancel_rounds(&cancels(gate.addr, 50, "big.bin", Some(&ca)), 50);
    assert_eq!(Metrics::get(&gate.metrics.session_panics), 0);
    gate.assert_drained();
}

/// The fault that panicked the driver: the data connection has ended (the
/// whole file delivered, EOF) and the backend has not sent its 226 yet when
/// the client's ABOR arrives. Five times in one session.
#[test]
fn abor_after_the_data_connection_ended_is_answered() {
    let ctrl = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = ctrl.local_addr().unwrap();
    let data_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data_port = data_l.local_addr().unwrap().port();
    let script = std::thread::spawn(move || {
        let (s, _) = ctrl.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(b"220 fake\r\n").unwrap();
        let mut data = None;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let reply: &[u8] = match line.split_whitespace().next().unwrap_or("") {
                "USER" => b"331 pw\r\n",
                "PASS" => b"230 in\r\n",
                "PWD" => b"257 \"/\"\r\n",
                "NOOP" => b"200 ok\r\n",
                "EPSV" => {
                    w.write_all(format!("229 ok (|||{data_port}|)\r\n").as_bytes()).unwrap();
                    data = Some(data_l.accept().unwrap().0);
                    continue;
                }
                "RETR" => {
                    w.write_all(b"150 here it comes\r\n").unwrap();
                    let mut d: TcpStream = data.take().unwrap();
                    let _ = d.write_all(&payload(1_000_000, 9));
                    drop(d);
                    // No 226 until ABOR: the race the client wins.
                    continue;
                }
                "ABOR" => b"226 Transfer complete\r\n226 ABOR successful\r\n",
                "QUIT" => {
                    let _ = w.write_all(b"221 bye\r\n");
                    return;
                }
                _ => b"502 no\r\n",
            };
            w.write_all(reply).unwrap();
        }
    });
    let gate = Gate::start(backend);
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER u").0, 331);
    assert_eq!(c.cmd("PASS p").0, 230);
    for round in 0..5 {
        let mut d = c.epsv_data();
        assert_eq!(c.cmd("RETR f").0, 150, "round {round}");
        let mut got = Vec::new();
        d.read_to_end(&mut got).unwrap();
        assert_eq!(sha256(&got), sha256(&payload(1_000_000, 9)), "round {round}");
        // The data channel's end reaches the session before ABOR does.
        std::thread::sleep(Duration::from_millis(50));
        c.send_raw(b"ABOR\r\n");
        let (code, text) = c.reply();
        assert_eq!(code, 226, "round {round}: every byte was delivered: {text}");
        let (code, text) = c.reply();
        assert_eq!(code, 226, "round {round}: ABOR's own reply: {text}");
        assert_eq!(c.cmd("NOOP").0, 200, "round {round}");
    }
    assert_eq!(c.cmd("QUIT").0, 221);
    script.join().unwrap();
    assert_eq!(Metrics::get(&gate.metrics.session_panics), 0);
    gate.assert_drained();
}

/// A panic injected into one session's driver (debug builds only): that
/// client hears 421, the panic is logged and counted, and another session
/// logged in meanwhile goes on.
#[test]
fn a_panic_in_one_session_says_421_and_the_others_go_on() {
    ensure_test_user();
    let backend = Vsftpd::start();
    backend.put("a.txt", b"still here\n");
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let metrics = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    cmd.args(["--metrics", &metrics.to_string()]).env("FTPGATE_TEST_PANIC_VERB", "XPNC");
    let log = std::env::temp_dir().join(format!("ftpgate-test-{}.log", addr.port()));
    let _gate = KillOnDrop::new(cmd.spawn().unwrap());
    wait_for_greeting(addr);
    let mut other = RawClient::connect(addr);
    other.login();
    let mut victim = RawClient::connect(addr);
    victim.login();
    let (code, text) = victim.cmd("XPNC");
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("internal error"), "{text}");
    assert!(victim.closed(), "the session ends after its 421");
    assert_eq!(other.cmd("NOOP").0, 200, "the other session goes on");
    let out = curl(&["-s", &format!("ftp://{USER}:{PASSWORD}@{addr}/a.txt")]);
    assert_eq!(out.stdout, "still here\n", "new sessions are served: {}", out.stderr);
    assert_eq!(scrape(metrics, "ftpgate_session_panics_total"), 1);
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("internal error")).unwrap_or_else(|| panic!("no log line:\n{text}"));
    assert!(line.contains("ERROR") && line.contains("id=") && line.contains("fault injected"), "{line}");
    assert_eq!(other.cmd("QUIT").0, 221);
}
