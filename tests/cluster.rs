//! Several instances sharing bans and session counts in a real redis-server,
//! and two instances behind a real HAProxy with PROXY protocol v2 on the
//! control port and on each instance's passive range.

mod common;
use common::*;
use ftpgate::config::PortRange;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn ftpgate(args: &[&str]) -> Output {
    run_client(Command::new(env!("CARGO_BIN_EXE_ftpgate")).args(args), Duration::from_secs(20))
}

/// One ftpgate binary sharing `redis`.
struct Instance {
    addr: SocketAddr,
    metrics: SocketAddr,
    socket: PathBuf,
    child: KillOnDrop,
}

impl Instance {
    /// `config` holds the `[cluster]` settings the flags have no name for.
    fn start(backend: SocketAddr, redis: &str, dir: &Path, name: &str, config: &str, extra: &[&str]) -> Instance {
        let socket = dir.join(format!("{name}.sock"));
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap())).parse().unwrap();
        // Listener and passive range from `extra`, or fresh loopback ones.
        let addr: SocketAddr = match extra.iter().position(|a| *a == "--listen") {
            Some(i) => extra[i + 1].parse().unwrap(),
            None => format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap())).parse().unwrap(),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
        cmd.args(["run", "--backend", &backend.to_string()]);
        if !extra.contains(&"--listen") {
            let range = port_range(30);
            cmd.args(["--listen", &addr.to_string(), "--passive-ports", &format!("{}-{}", range.min, range.max)]);
        }
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        cmd.args(["--config", config_path.to_str().unwrap(), "--redis", redis])
            .args(["--admin-socket", socket.to_str().unwrap(), "--metrics", &metrics.to_string()])
            .args(["--policy", dir.join("policy.toml").to_str().unwrap()])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        let child = KillOnDrop::new(cmd.spawn().unwrap());
        wait_for_port(metrics);
        Instance { addr, metrics, socket, child }
    }

    fn admin(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--admin-socket", self.socket.to_str().unwrap()]);
        ftpgate(&all)
    }
}

/// USER and PASS from `source`; the final reply codes.
fn try_login(source: &str, to: SocketAddr, password: &str) -> (u16, u16, String) {
    let mut c = connect_from(source, to);
    let (greeting, text) = c.reply();
    if greeting != 220 {
        return (greeting, 0, text);
    }
    let (user, text) = c.cmd(&format!("USER {USER}"));
    if user != 331 {
        return (user, 0, text);
    }
    let (pass, text) = c.cmd(&format!("PASS {password}"));
    (user, pass, text)
}

/// Polls (10 s at most) until a fresh login from `source` is accepted.
fn login_eventually(source: &str, to: SocketAddr) -> RawClient {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = connect_from(source, to);
        assert_eq!(c.reply().0, 220);
        let (code, text) = c.cmd(&format!("USER {USER}"));
        if code == 331 {
            assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).0, 230);
            return c;
        }
        assert_eq!(code, 530, "{text}");
        assert!(Instant::now() < deadline, "the user's session count never came down: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn http_status(addr: SocketAddr, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bans_and_session_counts_are_shared_and_leases_expire() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[login]\nmax_failures = 2\nban_seconds = 600\nmax_sessions_per_user = 1\n",
    )
    .unwrap();
    let mut redis = Redis::start();
    let backend = Vsftpd::start();
    let cluster = "[cluster]\nlease = 3\nprefix = \"t1\"\n";
    let a = Instance::start(backend.addr, &redis.url(), dir.path(), "a", cluster, &[]);
    let b = Instance::start(backend.addr, &redis.url(), dir.path(), "b", cluster, &[]);
    wait_for_greeting(a.addr);
    wait_for_greeting(b.addr);

    // Two failed logins on A ban the address on B too.
    let mut bad = connect_from("127.0.0.7", a.addr);
    assert_eq!(bad.reply().0, 220);
    for _ in 0..2 {
        assert_eq!(bad.cmd(&format!("USER {USER}")).0, 331);
        assert_eq!(bad.cmd("PASS wrong").0, 530);
    }
    let (code, _, text) = try_login("127.0.0.7", b.addr, PASSWORD);
    assert_eq!(code, 421, "banned on B after failing on A: {text}");
    assert!(text.contains("failed logins"), "{text}");
    let ttl: i64 = redis.cli(&["TTL", "t1:ban:127.0.0.7"]).trim().parse().unwrap();
    assert!((590..=600).contains(&ttl), "the ban lives in Redis with its length: {ttl}");
    assert!(scrape(b.metrics, "ftpgate_logins_total{result=\"refused\"}") >= 1);
    let list = b.admin(&["bans", "list"]);
    assert!(
        list.stdout.contains("127.0.0.7 banned for") && list.stdout.contains("cluster 127.0.0.1:"),
        "{}",
        list.stdout
    );
    let lift = b.admin(&["bans", "lift", "127.0.0.7"]);
    assert!(lift.stdout.contains("ban on 127.0.0.7 lifted"), "{} {}", lift.stdout, lift.stderr);
    let (_, pass, text) = try_login("127.0.0.7", a.addr, PASSWORD);
    assert_eq!(pass, 230, "lifted on B, lifted on A: {text}");

    // One session per user across both instances.
    // The session try_login left ends when ftpgate sees its close: poll.
    let mut on_a = login_eventually("127.0.0.8", a.addr);
    let (code, _, text) = try_login("127.0.0.9", b.addr, PASSWORD);
    assert_eq!(code, 530, "the user's one session is on A: {text}");
    assert!(text.contains("Too many sessions"), "{text}");
    assert_eq!(on_a.cmd("QUIT").0, 221);
    let mut on_b = login_eventually("127.0.0.9", b.addr);
    let who = b.admin(&["who"]);
    assert!(who.stdout.contains("reachable: this instance holds"), "{}", who.stdout);
    assert_eq!(on_b.cmd("QUIT").0, 221);

    // An instance that dies holding a session: its lease runs out.
    let mut held = login_eventually("127.0.0.8", a.addr);
    drop(a);
    let (code, _, _) = try_login("127.0.0.9", b.addr, PASSWORD);
    assert_eq!(code, 530, "A's lease outlives A for a moment");
    let after_crash = login_eventually("127.0.0.9", b.addr);
    assert!(held.closed());

    // Redis gone: B fails open, counts the errors, stays ready, and comes
    // back by itself.
    redis.stop();
    let (code, _, text) = try_login("127.0.0.10", b.addr, PASSWORD);
    assert_eq!(code, 530, "the user's session on B still counts locally: {text}");
    drop(after_crash);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, pass, _) = try_login("127.0.0.10", b.addr, PASSWORD);
        if pass == 230 {
            break;
        }
        assert!(Instant::now() < deadline, "no login while Redis was down");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(scrape(b.metrics, "ftpgate_cluster_errors_total") >= 1);
    assert_eq!(scrape(b.metrics, "ftpgate_cluster_up"), 0);
    assert_eq!(http_status(b.metrics, "/readyz"), "200", "failing open keeps the instance in the balancer");
    redis.restart();
    wait_for_metric(b.metrics, "ftpgate_cluster_up", 1);
    drop(b);
}

#[test]
fn failing_closed_refuses_logins_while_redis_is_down() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "").unwrap();
    let mut redis = Redis::start();
    let backend = Vsftpd::start();
    let gate =
        Instance::start(backend.addr, &redis.url(), dir.path(), "c", "[cluster]\nfail = \"closed\"\nlease = 3\n", &[]);
    wait_for_greeting(gate.addr);
    let (_, pass, _) = try_login("127.0.0.1", gate.addr, PASSWORD);
    assert_eq!(pass, 230);
    assert_eq!(http_status(gate.metrics, "/readyz"), "200");
    redis.stop();
    let (code, _, text) = try_login("127.0.0.1", gate.addr, PASSWORD);
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("shared login state unreachable"), "{text}");
    assert_eq!(http_status(gate.metrics, "/readyz"), "503", "failing closed takes the instance out");
    assert!(scrape(gate.metrics, "ftpgate_session_refusals_total{reason=\"cluster\"}") >= 1);
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_login("127.0.0.1", gate.addr, PASSWORD).1 != 230 {
        assert!(Instant::now() < deadline, "logins did not come back with Redis");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = gate.child.id();
}

/// `rediss://`: the shared state over TLS, verified with `[cluster] ca`.
#[test]
fn shared_state_over_tls() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[login]\nmax_failures = 1\nban_seconds = 300\n").unwrap();
    let redis = Redis::start_tls(&certs);
    let backend = Vsftpd::start();
    let config = format!("[cluster]\nca = \"{}\"\n", certs.path("ca.pem").display());
    let gate = Instance::start(backend.addr, &redis.url(), dir.path(), "tls", &config, &[]);
    wait_for_greeting(gate.addr);
    let (_, pass, _) = try_login("127.0.0.20", gate.addr, "wrong");
    assert_eq!(pass, 530);
    let ttl: i64 = redis.cli(&["TTL", "ftpgate:ban:127.0.0.20"]).trim().parse().unwrap();
    assert!((290..=300).contains(&ttl), "the ban went to Redis over TLS: {ttl}");
    let (code, _, _) = try_login("127.0.0.20", gate.addr, PASSWORD);
    assert_eq!(code, 421);
    assert_eq!(scrape(gate.metrics, "ftpgate_cluster_errors_total"), 0);
    assert_eq!(scrape(gate.metrics, "ftpgate_cluster_up"), 1);
}

/// HAProxy's configuration: the control port balanced round-robin over both
/// instances, each instance's passive range forwarded to it, all with
/// `send-proxy-v2`.
fn haproxy_config(control: SocketAddr, instances: &[(SocketAddr, PortRange)]) -> String {
    let mut c = format!(
        "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         frontend control\n  bind {control}\n  default_backend instances\n\
         backend instances\n  balance roundrobin\n"
    );
    for (i, (addr, _)) in instances.iter().enumerate() {
        c.push_str(&format!("  server i{i} {addr} send-proxy-v2\n"));
    }
    for (i, (addr, range)) in instances.iter().enumerate() {
        c.push_str(&format!(
            "frontend data{i}\n  bind {}:{}-{}\n  default_backend data{i}\nbackend data{i}\n  server i{i} {} send-proxy-v2\n",
            control.ip(),
            range.min,
            range.max,
            addr.ip()
        ));
    }
    c
}

#[test]
fn two_instances_behind_haproxy_share_bans_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[login]\nmax_failures = 1\nban_seconds = 600\nmax_sessions_per_user = 1\n",
    )
    .unwrap();
    let mut redis = Redis::start();
    let backend = Vsftpd::start();
    let data = payload(3 << 20, 77);
    backend.put("down.bin", &data);
    let control: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap())).parse().unwrap();
    let mut specs = Vec::new();
    let mut instances = Vec::new();
    for (name, ip) in [("a", "127.0.0.2"), ("b", "127.0.0.3")] {
        let listen: SocketAddr = format!("{ip}:{}", free_port(ip.parse().unwrap())).parse().unwrap();
        let range = port_range(20);
        let ports = format!("{}-{}", range.min, range.max);
        let args = [
            "--listen",
            &listen.to_string(),
            "--proxy-protocol",
            // HAProxy's connections to 127.0.0.2 and .3 come from 127.0.0.1 (lo's source address).
            "--proxy-from",
            "127.0.0.1/32",
            "--passive-ports",
            &ports,
            "--public-address",
            "127.0.0.1",
        ];
        instances.push(Instance::start(backend.addr, &redis.url(), dir.path(), name, "[cluster]\nlease = 3\n", &args));
        specs.push((listen, range));
    }
    let _haproxy = Haproxy::start(&haproxy_config(control, &specs), control);
    let url = format!("ftp://{USER}:{PASSWORD}@{control}");

    // Downloads and uploads by SHA-256, round-robin over both instances.
    for i in 0..2 {
        let out_path = dir.path().join(format!("down{i}.bin"));
        let r = curl(&["-sS", "--epsv", &format!("{url}/down.bin"), "-o", out_path.to_str().unwrap()]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        assert_eq!(sha256_file(&out_path), sha256(&data));
        let up = payload(2 << 20, 100 + i);
        let up_path = dir.path().join(format!("up{i}.bin"));
        std::fs::write(&up_path, &up).unwrap();
        let r = curl(&["-sS", "--disable-epsv", "-T", up_path.to_str().unwrap(), &format!("{url}/up{i}.bin")]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        assert_eq!(sha256_file(&backend.root.join(format!("up{i}.bin"))), sha256(&up));
    }
    for inst in &instances {
        assert!(scrape(inst.metrics, "ftpgate_sessions_total") >= 2, "HAProxy used both instances");
        assert_eq!(
            scrape_sum(inst.metrics, "ftpgate_proxy_header_errors_total"),
            0,
            "HAProxy's headers were all taken"
        );
    }

    // A ban earned through one instance holds on both (round-robin sends the
    // next two connections to one each); ftpgate sees the client's address
    // from the PROXY header.
    let (_, pass, _) = try_login("127.0.0.9", control, "wrong");
    assert_eq!(pass, 530);
    for _ in 0..2 {
        let (code, _, text) = try_login("127.0.0.9", control, PASSWORD);
        assert_eq!(code, 421, "{text}");
    }

    // One session per user across both.
    let mut first = connect_from("127.0.0.10", control);
    first.login();
    for _ in 0..2 {
        let (code, _, text) = try_login("127.0.0.11", control, PASSWORD);
        assert_eq!(code, 530, "{text}");
    }
    assert_eq!(first.cmd("QUIT").0, 221);

    // Redis stopped: logins keep working on both instances.
    redis.stop();
    for _ in 0..4 {
        let mut c = login_eventually("127.0.0.12", control);
        assert_eq!(c.cmd("QUIT").0, 221);
    }
    let errors: u64 = instances.iter().map(|i| scrape(i.metrics, "ftpgate_cluster_errors_total")).sum();
    assert!(errors >= 1);
}

/// A ban earned while Redis was unreachable is enforced by the instance
/// and written to Redis once it answers again (it was forgotten).
#[test]
fn a_ban_earned_during_an_outage_outlives_the_outage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[login]\nmax_failures = 2\nban_seconds = 600\n").unwrap();
    let mut redis = Redis::start();
    let backend = Vsftpd::start();
    let a = Instance::start(backend.addr, &redis.url(), dir.path(), "a", "[cluster]\nprefix = \"t5\"\n", &[]);
    wait_for_greeting(a.addr);
    redis.stop();
    let mut bad = connect_from("127.0.0.11", a.addr);
    assert_eq!(bad.reply().0, 220);
    for _ in 0..2 {
        assert_eq!(bad.cmd(&format!("USER {USER}")).0, 331);
        assert_eq!(bad.cmd("PASS wrong").0, 530);
    }
    let (code, _, text) = try_login("127.0.0.11", a.addr, PASSWORD);
    assert_eq!(code, 421, "banned during the outage: {text}");
    redis.restart();
    // Redis is back: the ban still holds, and Redis now holds it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, text) = try_login("127.0.0.11", a.addr, PASSWORD);
        assert_eq!(code, 421, "the outage's ban was forgotten: {text}");
        let ttl: i64 = redis.cli(&["TTL", "t5:ban:127.0.0.11"]).trim().parse().unwrap_or(-2);
        if ttl > 0 {
            assert!(ttl <= 600, "{ttl}");
            break;
        }
        assert!(Instant::now() < deadline, "the ban never reached Redis");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Now Redis holds it, lifting it anywhere lifts it.
    let lift = a.admin(&["bans", "lift", "127.0.0.11"]);
    assert!(lift.stdout.contains("lifted"), "{}", lift.stdout);
    let (_, pass, text) = try_login("127.0.0.11", a.addr, PASSWORD);
    assert_eq!(pass, 230, "{text}");
}

/// A peer at the Redis address that answers endlessly: ftpgate's memory
/// stays flat (the connection is cut), logins are served (fail open), and
/// the errors are counted.
#[test]
fn an_endless_redis_answer_is_cut_and_memory_stays_flat() {
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in fake.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = s.write_all(b"$2000000000\r\n");
                let chunk = vec![b'x'; 1 << 16];
                while s.write_all(&chunk).is_ok() {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "").unwrap();
    let backend = Vsftpd::start();
    let redis = format!("redis://{fake_addr}/0");
    let a = Instance::start(backend.addr, &redis, dir.path(), "a", "[cluster]\nfail = \"open\"\n", &[]);
    wait_for_greeting(a.addr);
    let started = Instant::now();
    let mut logins = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let (_, pass, text) = try_login("127.0.0.1", a.addr, PASSWORD);
        assert_eq!(pass, 230, "fail open: {text}");
        logins += 1;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!("endless Redis: {logins} logins, peak RSS {rss_kib} KiB");
    assert!(rss_kib < 120 * 1024, "peak RSS {rss_kib} KiB after {logins} logins against an endless Redis");
    assert!(scrape(a.metrics, "ftpgate_cluster_errors_total") >= 1);
}
