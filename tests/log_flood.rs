//! Log volume is an attack surface: what a client sends before (and after)
//! login must not grow the log without bound, and a client that keeps
//! sending garbage is closed.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Four connections send malformed lines and unknown verbs as fast as they
/// can for up to 3 s: each is closed with 421 after the limit, the log stays
/// under 100 KB, and a normal client is served meanwhile.
#[test]
fn a_garbage_flood_is_closed_and_writes_little_log() {
    ensure_test_user();
    let backend = Vsftpd::start();
    backend.put("ok.txt", b"served meanwhile\n");
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let metrics = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    cmd.args(["--metrics", &metrics.to_string()]);
    let log = std::env::temp_dir().join(format!("ftpgate-test-{}.log", addr.port()));
    let _gate = KillOnDrop::new(cmd.spawn().unwrap());
    wait_for_greeting(addr);
    let floods: Vec<_> = [&b"NO\0OP\r\n"[..], b"XYZZ\r\n", b"NO\0OP\r\nXYZZ\r\n", b"DELE x\r\n"]
        .into_iter()
        .map(|line| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = s.try_clone().unwrap();
                let heard = std::thread::spawn(move || {
                    let mut all = Vec::new();
                    let _ = reader.read_to_end(&mut all);
                    String::from_utf8_lossy(&all).into_owned()
                });
                let start = Instant::now();
                let mut sent = 0u64;
                while start.elapsed() < Duration::from_secs(3) {
                    if s.write_all(&line.repeat(64)).is_err() {
                        break;
                    }
                    sent += 64;
                }
                (sent, start.elapsed(), heard.join().unwrap())
            })
        })
        .collect();
    let out = curl(&["-s", &format!("ftp://{USER}:{PASSWORD}@{addr}/ok.txt")]);
    assert_eq!(out.stdout, "served meanwhile\n", "{}", out.stderr);
    for f in floods {
        let (sent, took, heard) = f.join().unwrap();
        assert!(took < Duration::from_secs(3), "the connection was closed before the 3 s were up ({sent} lines sent)");
        let last = heard.lines().last().unwrap_or("");
        assert!(last.starts_with("421 Too many bad commands"), "last reply: {last:?}");
        assert!(heard.lines().count() <= 13, "greeting, 11 replies, 421: {heard}");
    }
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size < 100_000, "{size} bytes of log:\n{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(scrape(metrics, "ftpgate_session_refusals_total{reason=\"bad_commands\"}"), 4);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("not logged one by one"), "the summary line:\n{text}");
    eprintln!("log after the flood: {size} bytes");
}
