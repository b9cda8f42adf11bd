//! The side doors (metrics/status HTTP and the admin socket) are bounded:
//! a flood of idle connections is capped and timed out while FTP goes on
//! serving; /status shows nothing before login and carries security
//! headers; the admin socket never deletes a file, never takes over a live
//! instance's socket, and is gone after a clean stop.

mod common;
use common::*;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

fn http(addr: SocketAddr, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "--max-time", "5", &format!("http://{addr}{path}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn an_idle_flood_on_the_metrics_port_is_capped_and_ftp_goes_on() {
    let backend = Vsftpd::start();
    backend.put("f.txt", b"still served\n");
    let gate = Gate::start(backend.addr);
    let flood: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(gate.metrics_addr).unwrap()).collect();
    // FTP is served meanwhile.
    let out = curl(&["-s", "-u", &format!("{USER}:{PASSWORD}"), &format!("{}/f.txt", gate.url())]);
    assert_eq!(out.stdout, "still served\n", "{}", out.stderr);
    // Past the cap, connections are closed at once, and counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.metrics.side_connections_refused.lock().unwrap().get("http").copied().unwrap_or(0) < 136 {
        assert!(Instant::now() < deadline, "connections past the cap of 64 were not refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The idle ones that took a slot are cut at the header timeout (5 s);
    // then the endpoint answers again.
    let started = Instant::now();
    let mut first = flood.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut b = [0u8; 1];
    let _ = first.read(&mut b);
    assert!(started.elapsed() < Duration::from_secs(12), "an idle HTTP connection was held {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, body) = http(gate.metrics_addr, "/healthz");
        if head.starts_with("http/1.1 200") {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(Instant::now() < deadline, "the metrics endpoint did not come back: {head}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_shows_no_name_before_login_and_carries_security_headers() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let mut typed = RawClient::connect(gate.addr);
    assert_eq!(typed.reply().0, 220);
    // A password typed into the user field, with a terminal escape.
    assert_eq!(typed.cmd("USER hunter2\u{1b}[2J").0, 331);
    let (head, body) = http(gate.metrics_addr, "/status");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!body.contains("hunter2"), "a name before login is never shown: {body}");
    assert!(body.contains("1 session(s)"), "{body}");
    assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let mut logged = RawClient::connect(gate.addr);
    logged.login();
    let (_, body) = http(gate.metrics_addr, "/status");
    assert!(body.contains(USER), "a logged-in user is shown: {body}");
    assert!(!body.contains(&backend.addr.to_string()), "no backend address on the page: {body}");
    let off = Gate::start_with(backend.addr, |s| s.status_page = false);
    let (head, _) = http(off.metrics_addr, "/status");
    assert!(head.starts_with("http/1.1 404"), "[metrics] status = false: {head}");
}

#[test]
fn the_admin_socket_refuses_files_and_live_instances_and_is_removed_on_stop() {
    let backend = Vsftpd::start();
    let dir = tempfile::tempdir().unwrap();
    // A regular file at the path is refused, and left as it was.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"precious\n").unwrap();
    let (mut cmd, _) = ftpgate_run(backend.addr);
    let out = run_client(
        cmd.args(["--admin-socket", file.to_str().unwrap()]).stderr(std::process::Stdio::piped()),
        Duration::from_secs(20),
    );
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("not a socket"), "{}", out.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"precious\n");

    // A missing folder is made 0700; a second instance cannot take the socket over.
    let socket = dir.path().join("run").join("admin.sock");
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let mut first = KillOnDrop::new(cmd.args(["--admin-socket", socket.to_str().unwrap()]).spawn().unwrap());
    wait_for_greeting(addr);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(socket.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let (mut cmd, _) = ftpgate_run(backend.addr);
    let out = run_client(
        cmd.args(["--admin-socket", socket.to_str().unwrap()]).stderr(std::process::Stdio::piped()),
        Duration::from_secs(20),
    );
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("another running instance"), "{}", out.stderr);
    let who = run_client(
        Command::new(env!("CARGO_BIN_EXE_ftpgate")).args(["who", "--admin-socket", socket.to_str().unwrap()]),
        Duration::from_secs(10),
    );
    assert!(who.stdout.contains("session(s)"), "the first instance still answers: {}", who.stderr);
    // An idle admin client is timed out.
    let idle = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let _ = (&idle).read(&mut [0u8; 16]);
    assert!(started.elapsed() < Duration::from_secs(10), "an idle admin client was held {:?}", started.elapsed());
    // A clean stop removes the socket.
    assert!(Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap().success());
    let _ = first.child().wait();
    assert!(!socket.exists(), "the admin socket was left after a clean stop");
}
