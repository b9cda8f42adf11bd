//! The operator's every day, through the binary: `ftpgate who` and
//! `ftpgate bans` over the admin socket, the `/status` page, byte counters
//! that move while a transfer runs.

mod common;
use common::*;
use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

fn ftpgate(args: &[&str]) -> Output {
    run_client(Command::new(env!("CARGO_BIN_EXE_ftpgate")).args(args), Duration::from_secs(20))
}

/// A series that must be there: a missing one fails instead of reading 0.
fn metric_line(metrics: SocketAddr, series: &str) -> u64 {
    scrape(metrics, series)
}

#[test]
fn who_bans_status_and_live_counters() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!("[login]\nmax_failures = 1\nban_seconds = 600\n\n[users.{USER}]\ndownload_rate = \"1MiB/s\"\n"),
    )
    .unwrap();
    let backend = Vsftpd::start();
    let data = payload(12 << 20, 40);
    backend.put("big.bin", &data);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap())).parse().unwrap();
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let _child = KillOnDrop::new(
        cmd.args(["--admin-socket", socket.to_str().unwrap(), "--metrics", &metrics.to_string()])
            .args(["--policy", policy.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    wait_for_greeting(addr);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin socket is for root only");

    // A running, rate-limited download.
    let mut c = RawClient::connect(addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    let mut first = vec![0u8; 1 << 20];
    d.read_exact(&mut first).unwrap();

    let series = "ftpgate_data_bytes_total{direction=\"backend_to_client\",leg=\"client\"}";
    wait_for_metric(metrics, series, 1 << 20);
    let early = metric_line(metrics, series);
    assert!(early >= 1 << 20, "bytes are counted while the transfer runs: {early}");

    // The control connection has been quiet since RETR; the session is not
    // idle while its transfer runs, and `who` shows the two apart.
    std::thread::sleep(Duration::from_millis(2100));
    let who = ftpgate(&["who", "--admin-socket", socket.to_str().unwrap()]);
    assert_eq!(who.status, 0, "{}", who.stderr);
    assert!(who.stdout.lines().next().unwrap().contains("IDLE CTRL-IDLE"), "{}", who.stdout);
    let line = who.stdout.lines().find(|l| l.contains(USER)).unwrap_or_else(|| panic!("{}", who.stdout));
    assert!(line.contains("transfer") && line.contains("RETR /big.bin") && line.contains('%'), "{line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "transfer").unwrap();
    assert_eq!(words[at + 2], "-", "no idle time while the transfer runs: {line}");
    let control_idle: u64 = words[at + 3].trim_end_matches('s').parse().unwrap();
    assert!(control_idle >= 2, "the control connection's idle time counts: {line}");
    assert!(line.contains(" for ") && line.contains("s left"), "{line}");
    assert!(line.contains("of 12.0 MiB") && line.contains("s left"), "who shows the size and the time left: {line}");
    assert!(line.contains(&backend.addr.to_string()), "{line}");

    let page = Command::new("curl").args(["-sf", &format!("http://{metrics}/status")]).output().unwrap();
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("<progress") && page.contains(USER) && page.contains("RETR"), "{page}");
    assert!(!page.contains(PASSWORD));
    // The header about the instance, and the transfer's size, percent and time left.
    for want in [
        format!("<dd>{}</dd>", env!("CARGO_PKG_VERSION")),
        "Up for".to_string(),
        format!("{addr} (off)"),
        "default #1 up (1 session(s))".to_string(),
        "0 address(es)".to_string(),
        "of 12.0 MiB".to_string(),
        " left ".to_string(),
        "1 transfer(s)".to_string(),
        "<th>Control idle</th>".to_string(),
    ] {
        assert!(page.contains(&want), "/status lacks {want:?}: {page}");
    }
    assert!(!page.contains(&backend.addr.to_string()), "no backend address on /status");
    let index = Command::new("curl").args(["-sf", &format!("http://{metrics}/")]).output().unwrap();
    let index = String::from_utf8_lossy(&index.stdout);
    for link in ["/status", "/metrics", "/healthz", "/readyz"] {
        assert!(index.contains(&format!("href=\"{link}\"")), "/ lacks a link to {link}: {index}");
    }

    // The same page in a real browser (Debian's chromium, headless).
    let shot = dir.path().join("status.png");
    let browser = run_client(
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("http://{metrics}/status")),
        Duration::from_secs(90),
    );
    assert_eq!(browser.status, 0, "chromium failed: {}", browser.stderr);
    let dom = browser.stdout;
    assert!(
        dom.contains("<progress") && dom.contains(USER) && dom.contains("RETR /big.bin"),
        "{dom}\n{}",
        browser.stderr
    );
    assert!(dom.contains("http-equiv=\"refresh\""), "the page refreshes itself: {dom}");
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    if let Ok(keep) = std::env::var("FTPGATE_STATUS_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    assert!(png.starts_with(b"\x89PNG") && png.len() > 4096, "screenshot of {} bytes", png.len());
    // The page is live: read again later, the transfer has moved on.
    let bytes_on = |page: &str| -> u64 {
        let at = page.find("RETR /big.bin").unwrap_or_else(|| panic!("{page}"));
        page[at..]
            .split(|c: char| !c.is_ascii_digit())
            .find_map(|w| w.parse().ok().filter(|&n: &u64| n > 1000))
            .unwrap_or(0)
    };
    let (first_seen, page_again) = (bytes_on(&page), {
        wait_for_metric(metrics, series, early + (1 << 20));
        let p = Command::new("curl").args(["-sf", &format!("http://{metrics}/status")]).output().unwrap();
        String::from_utf8_lossy(&p.stdout).into_owned()
    });
    assert!(bytes_on(&page_again) > first_seen, "{page}\n---\n{page_again}");

    let mut rest = Vec::new();
    d.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert_eq!(sha256(&first), sha256(&data));
    assert_eq!(c.reply().0, 226);
    assert!(metric_line(metrics, series) >= data.len() as u64);

    // A failed login from 127.0.0.2 bans it; bans list shows it, lift ends it.
    let from = |ip: &str| connect_from(ip, addr);
    let mut bad = from("127.0.0.2");
    assert_eq!(bad.reply().0, 220);
    assert_eq!(bad.cmd(&format!("USER {USER}")).0, 331);
    assert_eq!(bad.cmd("PASS wrong").0, 530);
    let mut refused = from("127.0.0.2");
    assert_eq!(refused.reply().0, 421, "banned");
    let bans = ftpgate(&["bans", "list", "--admin-socket", socket.to_str().unwrap()]);
    assert!(
        bans.stdout.contains("127.0.0.2 banned for") && bans.stdout.contains("1 address(es) banned"),
        "{}",
        bans.stdout
    );
    assert!(metric_line(metrics, "ftpgate_logins_total{result=\"refused\"}") >= 1);
    let lift = ftpgate(&["bans", "lift", "127.0.0.2", "--admin-socket", socket.to_str().unwrap()]);
    assert_eq!(lift.status, 0, "{}", lift.stderr);
    assert!(lift.stdout.contains("ban on 127.0.0.2 lifted"), "{}", lift.stdout);
    let again = ftpgate(&["bans", "lift", "127.0.0.2", "--admin-socket", socket.to_str().unwrap()]);
    assert_ne!(again.status, 0, "lifting a ban that is not there fails");
    let mut ok = from("127.0.0.2");
    ok.login();
    let started = Instant::now();
    let who = ftpgate(&["who", "--admin-socket", socket.to_str().unwrap()]);
    assert!(who.stdout.contains("127.0.0.2") && started.elapsed() < Duration::from_secs(5), "{}", who.stdout);
}

/// `who` and `bans` find the admin socket in the configuration file, as
/// the running instance does (`--admin-socket` still overrides it); a file
/// without `[admin] socket` is named in the error.
#[test]
fn admin_commands_read_the_socket_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("ftpgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:2121\"\n\n[backend]\naddress = \"127.0.0.1:21\"\n\n[admin]\nsocket = \"{}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let backend = Vsftpd::start();
    let (mut cmd, addr) = ftpgate_run(backend.addr);
    let _child = KillOnDrop::new(cmd.args(["--config", config.to_str().unwrap()]).spawn().unwrap());
    wait_for_greeting(addr);
    let mut c = RawClient::connect(addr);
    c.login();
    let config_arg = config.to_str().unwrap();
    let who = ftpgate(&["who", "--config", config_arg]);
    assert_eq!(who.status, 0, "{}", who.stderr);
    assert!(who.stdout.contains(USER), "{}", who.stdout);
    let bans = ftpgate(&["bans", "list", "--config", config_arg]);
    assert_eq!(bans.status, 0, "{}", bans.stderr);
    assert!(bans.stdout.contains("0 address(es) banned") || bans.stdout.contains("no address"), "{}", bans.stdout);
    let lift = ftpgate(&["bans", "lift", "127.0.0.9", "--config", config_arg]);
    assert_ne!(lift.status, 0, "no such ban: {}", lift.stdout);
    // An explicit --admin-socket wins over the file.
    let wrong = ftpgate(&["who", "--config", config_arg, "--admin-socket", "/nonexistent/admin.sock"]);
    assert!(wrong.status != 0 && wrong.stderr.contains("/nonexistent/admin.sock"), "{}", wrong.stderr);
    // A configuration without [admin] socket says so, naming the file.
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[[listener]]\naddress = \"127.0.0.1:2121\"\n\n[backend]\naddress = \"127.0.0.1:21\"\n")
        .unwrap();
    let none = ftpgate(&["who", "--config", bare.to_str().unwrap()]);
    assert!(
        none.status != 0 && none.stderr.contains("bare.toml") && none.stderr.contains("[admin] socket"),
        "{}",
        none.stderr
    );
}
