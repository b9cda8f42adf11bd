//! Backend pools (issue 13): sessions balanced over two real vsftpd, health
//! checks that take a dead backend out of rotation, /readyz on the pool.

mod common;
use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

fn metric(metrics: SocketAddr, series: &str) -> Option<u64> {
    scrape_opt(metrics, series).0
}

fn readyz(metrics: SocketAddr) -> String {
    let url = format!("http://{metrics}/readyz");
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn upload_lands(addr: SocketAddr, name: &str) {
    let mut c = RawClient::connect(addr);
    c.login();
    let mut d = c.epsv_data();
    assert_eq!(c.cmd(&format!("STOR {name}")).0, 150);
    std::io::Write::write_all(&mut d, name.as_bytes()).unwrap();
    drop(d);
    assert_eq!(c.reply().0, 226);
    assert_eq!(c.cmd("QUIT").0, 221);
}

#[test]
fn pool_balances_and_skips_a_dead_backend() {
    let a = Vsftpd::start();
    let b = Vsftpd::start();
    let dir = tempfile::tempdir().unwrap();
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (listen, metrics) = (free_port(ip), free_port(ip));
    let range = port_range(50);
    let config = dir.path().join("pool.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{listen}\"\n[backend]\naddress = [\"{}\", \"{}\"]\n\
             balance = \"least-connections\"\nhealth_interval = \"1s\"\n[passive]\nports = \"{}-{}\"\n\
             [metrics]\naddress = \"127.0.0.1:{metrics}\"\n",
            a.addr, b.addr, range.min, range.max
        ),
    )
    .unwrap();
    let _child = ftpgate_with_config(&config);
    let addr = SocketAddr::new(ip, listen);
    let metrics = SocketAddr::new(ip, metrics);
    wait_for_greeting(addr);

    // Least connections: with one session held on the first backend, the
    // next login goes to the second.
    let mut held = RawClient::connect(addr);
    held.login();
    upload_lands(addr, "second.txt");
    assert_eq!(std::fs::read(b.root.join("second.txt")).unwrap(), b"second.txt");
    assert!(!a.root.join("second.txt").exists());
    assert_eq!(metric(metrics, &format!("ftpgate_backend_sessions{{backend=\"{}\"}}", a.addr)), Some(1));
    assert_eq!(readyz(metrics), "200");

    // The second backend dies: the health check takes it out, logins go on.
    let b_addr = b.addr;
    drop(b);
    let up = format!("ftpgate_backend_up{{backend=\"{b_addr}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(metrics, &up) != Some(0) {
        assert!(Instant::now() < deadline, "the dead backend is still marked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..3 {
        upload_lands(addr, &format!("after{i}.txt"));
        assert_eq!(std::fs::read(a.root.join(format!("after{i}.txt"))).unwrap(), format!("after{i}.txt").as_bytes());
    }
    assert_eq!(readyz(metrics), "200", "one backend of the pool is enough");
    drop(held);
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(metrics) != "503" {
        assert!(Instant::now() < deadline, "/readyz must fail with no backend left");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A named backend for bastion users can be a pool too: round-robin over two
/// real vsftpd, with health and session metrics per member.
#[test]
fn named_backend_pool_for_bastion_users() {
    let archive_a = Vsftpd::start();
    let archive_b = Vsftpd::start();
    let default = Vsftpd::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("backend.pw");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let hash = ftpgate::policy::auth::hash_password("alice-secret").unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[users.gate-alice]\npassword = \"{hash}\"\nbackend = \"archive\"\nbackend_user = \"{USER}\"\n\
             backend_password_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (listen, metrics) = (free_port(ip), free_port(ip));
    let range = port_range(50);
    let config = dir.path().join("pool.toml");
    std::fs::write(
        &config,
        format!(
            "policy = \"{}\"\n[[listener]]\naddress = \"127.0.0.1:{listen}\"\n[backend]\naddress = \"{}\"\n\
             health_interval = \"1s\"\n[backends.archive]\naddress = [\"{}\", \"{}\"]\nbalance = \"round-robin\"\n\
             [passive]\nports = \"{}-{}\"\n[metrics]\naddress = \"127.0.0.1:{metrics}\"\n",
            policy.display(),
            default.addr,
            archive_a.addr,
            archive_b.addr,
            range.min,
            range.max
        ),
    )
    .unwrap();
    let _child = ftpgate_with_config(&config);
    let addr = SocketAddr::new(ip, listen);
    let metrics = SocketAddr::new(ip, metrics);
    wait_for_greeting(addr);
    for name in ["first.txt", "second.txt"] {
        let mut c = RawClient::connect(addr);
        assert_eq!(c.reply().0, 220);
        assert_eq!(c.cmd("USER gate-alice").0, 331);
        assert_eq!(c.cmd("PASS alice-secret").0, 230);
        let mut d = c.epsv_data();
        assert_eq!(c.cmd(&format!("STOR {name}")).0, 150);
        std::io::Write::write_all(&mut d, name.as_bytes()).unwrap();
        drop(d);
        assert_eq!(c.reply().0, 226);
        assert_eq!(c.cmd("QUIT").0, 221);
    }
    // On a backend with exactly the bytes sent (each upload's data is its name).
    let on = |v: &Vsftpd, n: &str| std::fs::read(v.root.join(n)).is_ok_and(|b| b == n.as_bytes());
    assert!(on(&archive_a, "first.txt") && on(&archive_b, "second.txt"), "round-robin over the archive pool");
    assert!(!default.root.join("first.txt").exists() && !default.root.join("second.txt").exists());
    for member in [archive_a.addr, archive_b.addr] {
        assert_eq!(metric(metrics, &format!("ftpgate_backend_up{{backend=\"{member}\"}}")), Some(1));
    }
}
