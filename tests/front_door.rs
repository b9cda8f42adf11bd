//! The front door (issue 10): ftpgate greets itself, opens a backend
//! connection only for a login, closes clients that do not log in in time,
//! limits sessions per address without a policy file, and notices a client
//! that leaves in every state.

mod common;
use common::*;
use ftpgate::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// vsftpd allows 4 clients; 20 connections that never log in hold none of
/// them, and a real user transfers meanwhile. The greeting is ftpgate's own.
#[test]
fn idle_connections_never_reach_the_backend() {
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), "max_clients=4\n");
    let data = payload(1 << 20, 77);
    backend.put("f.bin", &data);
    let gate = Gate::start_with(backend.addr, |s| s.banner = "Example Corp FTP".into());
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = RawClient::connect(gate.addr);
        let (code, text) = c.reply();
        assert_eq!((code, text.as_str()), (220, "220 Example Corp FTP\r\n"));
        idle.push(c);
    }
    // Before login ftpgate answers itself.
    let c = &mut idle[0];
    assert_eq!(c.cmd("SYST").0, 215);
    assert_eq!(c.cmd("NOOP").0, 200);
    assert_eq!(c.cmd("OPTS UTF8 ON").0, 200);
    assert_eq!(c.cmd("CLNT test").0, 200);
    assert_eq!(c.cmd("PWD").0, 530, "PWD needs a login");
    assert_eq!(c.cmd("PASS x").0, 503, "PASS needs USER first");
    assert_eq!(Metrics::get(&gate.metrics.backend_connections), 0);
    let work = tempfile::tempdir().unwrap();
    let dst = work.path().join("f.bin");
    let user = format!("{USER}:{PASSWORD}");
    let out = curl(&["-s", "-u", &user, "-o", dst.to_str().unwrap(), &format!("{}/f.bin", gate.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&dst), sha256(&data));
    assert_eq!(Metrics::get(&gate.metrics.backend_connections), 1, "only the login opened a backend connection");
    assert!(!backend.log().is_empty());
    drop(idle);
    gate.assert_drained();
}

/// FEAT before login lists what ftpgate and the backend both support,
/// learnt by the probe the binary runs at start (no client connection
/// reaches the backend).
#[test]
fn feat_before_login_comes_from_the_backend_probe() {
    let backend = Vsftpd::start();
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let _child = KillOnDrop::new(cmd.args(["--banner", "Files R Us"]).spawn().unwrap());
    wait_for_greeting(addr);
    let mut text = String::new();
    wait_until("the probe's FEAT", Duration::from_secs(10), || {
        let mut c = RawClient::connect(addr);
        let (code, greeting) = c.reply();
        assert_eq!((code, greeting.as_str()), (220, "220 Files R Us\r\n"));
        let (code, t) = c.cmd("FEAT");
        assert_eq!(code, 211, "{t}");
        text = t;
        text.contains(" SIZE")
    });
    assert!(text.contains(" EPSV") && text.contains(" MDTM"), "{text}");
    assert!(!text.contains("AUTH TLS"), "no TLS on this listener: {text}");
    // vsftpd logs each login; the probe never logs in and no client did.
    let log = backend.log_after("\"FEAT\"");
    assert!(!log.contains("OK LOGIN"), "{log}");
}

#[test]
fn login_timeout_closes_with_421_and_is_counted() {
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.login_timeout = Duration::from_secs(1));
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("NOOP").0, 200, "commands before login do not reset the login timeout");
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("Login timeout"), "{text}");
    assert!(c.closed());
    assert_eq!(gate.metrics.refusals_for("login_timeout"), 1);
    // A client that logs in in time is not affected.
    let mut ok = RawClient::connect(gate.addr);
    ok.login();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ok.cmd("NOOP").0, 200);
    assert_eq!(ok.cmd("QUIT").0, 221);
    gate.assert_drained();
}

/// `[limits] max_sessions_per_address` holds without a policy file; another
/// address is unaffected.
#[test]
fn per_address_limit_without_a_policy_file() {
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.max_sessions_per_address = 3);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", gate.addr);
        assert_eq!(c.reply().0, 220);
        held.push(c);
    }
    let mut over = connect_from("127.0.0.1", gate.addr);
    let (code, text) = over.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("too many sessions from your address (limit 3)"), "{text}");
    assert!(over.closed());
    assert_eq!(gate.metrics.refusals_for("address_limit"), 1);
    let mut other = connect_from("127.0.0.2", gate.addr);
    other.login();
    assert_eq!(other.cmd("QUIT").0, 221);
    drop(held);
    // Slots come back when sessions end.
    wait_until("sessions to end", Duration::from_secs(5), || Metrics::get(&gate.metrics.sessions_open) == 0);
    let mut again = connect_from("127.0.0.1", gate.addr);
    again.login();
}

/// A backend that accepts and never greets: the client sends USER and PASS, gives up
/// and leaves; its session ends within a second and the backend connection
/// is closed, long before `backend_reply` (60 s).
#[test]
fn client_leaving_while_the_backend_is_silent_is_noticed() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let gate = Gate::start_with(addr, |s| s.backend_reply = Duration::from_secs(60));
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    // USER alone opens no backend connection: ftpgate answers it.
    assert_eq!(c.cmd("USER someone").0, 331);
    assert_eq!(Metrics::get(&gate.metrics.backend_connections), 0);
    c.send_raw(b"PASS secret\r\n");
    let session_side = accept_within(&l, Duration::from_secs(10));
    wait_until("the session's backend connection", Duration::from_secs(5), || {
        Metrics::get(&gate.metrics.backend_connections) == 1
    });
    let left = Instant::now();
    drop(c);
    wait_until("the session to end", Duration::from_secs(2), || Metrics::get(&gate.metrics.sessions_open) == 0);
    session_side.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut rest = vec![];
    let mut s = session_side;
    let n = s.read_to_end(&mut rest);
    assert!(n.is_ok(), "the backend connection must be closed, not left open: {n:?}");
    assert!(left.elapsed() < Duration::from_secs(3));
}

/// A trickling flood of 300 connections from one address (limit off): a
/// normal client is served meanwhile, and every session is gone within
/// seconds after the flood closes.
#[test]
fn trickling_flood_leaves_nothing_behind() {
    let backend = Vsftpd::start();
    backend.put("f.txt", b"served\n");
    let gate = Gate::start_with(backend.addr, |s| s.max_sessions_per_address = 0);
    let mut flood: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(gate.addr).unwrap()).collect();
    for (i, s) in flood.iter_mut().enumerate() {
        // Half a command each; some send USER without ever finishing a line.
        let _ = s.write_all(if i % 2 == 0 { b"US" } else { b"USER x" });
    }
    let out = curl(&["-s", "-u", &format!("{USER}:{PASSWORD}"), &format!("{}/f.txt", gate.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "served\n");
    assert_eq!(Metrics::get(&gate.metrics.backend_connections), 1, "the flood opened no backend connection");
    drop(flood);
    wait_until("the flood's sessions to end", Duration::from_secs(5), || {
        Metrics::get(&gate.metrics.sessions_open) == 0
    });
    gate.assert_drained();
}
