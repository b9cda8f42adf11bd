//! `timeouts.data_connect` and `timeouts.transfer_stall` through the binary:
//! the reply the client gets, and the passive port and descriptors freed
//! (counted in /proc). Plus REST+STOR resume checked on the backend file.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Waits (10 s at most) until ftpgate holds `want` descriptors again.
fn fds_back_to(pid: u32, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds(pid) != want {
        assert!(Instant::now() < deadline, "ftpgate holds {} descriptors, {want} before", fds(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listening(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/tcp").unwrap().lines().any(|l| {
        l.split_whitespace().nth(1).is_some_and(|a| format!("{a} ").ends_with(&hex))
            && l.split_whitespace().nth(3) == Some("0A")
    })
}

#[test]
fn data_connect_and_transfer_stall_free_ports_and_descriptors() {
    let backend = Vsftpd::start();
    backend.put("big.bin", &payload(64 << 20, 90));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(&config, "[timeouts]\ndata_connect = 2\ntransfer_stall = 2\n").unwrap();
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let child = KillOnDrop::new(cmd.args(["--config", config.to_str().unwrap()]).spawn().unwrap());
    wait_for_greeting(addr);
    let pid = child.id();
    let mut c = RawClient::connect(addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    let idle = fds(pid);

    // EPSV, RETR, and the client never connects: 425 once data_connect has
    // passed since EPSV opened the port.
    let started = Instant::now();
    let (code, text) = c.cmd("EPSV");
    assert_eq!(code, 229);
    let port = epsv_port(&text);
    assert!(listening(port), "the passive port is open");
    let (code, text) = c.cmd("RETR big.bin");
    let code = if code == 150 { c.reply().0 } else { code };
    assert_eq!(code, 425, "{text}");
    assert!(started.elapsed() >= Duration::from_secs(2), "not before data_connect");
    // A port is closed a moment (2 s) after its last reservation ended.
    let closing = Instant::now() + Duration::from_secs(6);
    while listening(port) {
        assert!(Instant::now() < closing, "the passive port is closed after 425");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(TcpStream::connect(SocketAddr::new(addr.ip(), port)).is_err());
    fds_back_to(pid, idle);
    assert_eq!(c.cmd("NOOP").0, 200);

    // A client that connects and stops reading: 426 after transfer_stall.
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    let mut first = vec![0u8; 64 * 1024];
    d.read_exact(&mut first).unwrap();
    let (code, text) = c.reply();
    assert_eq!(code, 426, "{text}");
    drop(d);
    fds_back_to(pid, idle);
    assert_eq!(c.cmd("NOOP").0, 200, "the session goes on");
    assert_eq!(c.cmd("QUIT").0, 221);
}

/// REST n + STOR writes the tail at n: the backend file is the original head
/// and the new tail, byte for byte.
#[test]
fn rest_stor_resumes_on_the_backend_file() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let whole = payload(3 << 20, 91);
    let cut = 1_234_567;
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    for (rest, part) in [(None, &whole[..cut]), (Some(cut), &whole[cut..])] {
        let mut d = c.epsv_data();
        if let Some(n) = rest {
            assert_eq!(c.cmd(&format!("REST {n}")).0, 350);
        }
        assert_eq!(c.cmd("STOR resumed.bin").0, 150);
        d.write_all(part).unwrap();
        drop(d);
        assert_eq!(c.reply().0, 226);
    }
    assert_eq!(sha256_file(&backend.root.join("resumed.bin")), sha256(&whole));
}
