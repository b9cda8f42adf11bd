//! The operator endpoint of a live instance during real transfers: values move
//! by the right amounts, and `promtool check metrics` accepts the output.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn get(gate: &Gate, path: &str) -> (u16, String) {
    let out = run_client(
        Command::new("curl").args(["-sS", "-w", "\n%{http_code}", &format!("http://{}{path}", gate.metrics_addr)]),
        std::time::Duration::from_secs(20),
    );
    let (body, code) = out.stdout.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_move_with_real_transfers_and_pass_promtool() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let (code, body) = get(&gate, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(value(&body, "ftpgate_sessions_total"), 0);

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("m.bin");
    std::fs::write(&src, payload(1 << 20, 12)).unwrap();
    let url = gate.url();
    assert_eq!(curl(&["-T", src.to_str().unwrap(), &format!("{url}/m.bin")]).status, 0);
    let down = curl(&["-o", "/dev/null", &format!("{url}/m.bin")]);
    assert_eq!(down.status, 0, "{}", down.stderr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    c.send_raw(b"NOOP\0\r\n");
    assert_eq!(c.reply().0, 500);
    assert_eq!(c.cmd("QUIT").0, 221);
    gate.assert_drained();

    let (_, body) = get(&gate, "/metrics");
    assert_eq!(value(&body, "ftpgate_sessions_total"), 3);
    assert_eq!(value(&body, "ftpgate_sessions_open"), 0);
    assert_eq!(value(&body, "ftpgate_commands_rejected_total"), 1);
    assert_eq!(value(&body, "ftpgate_transfers_total{kind=\"file\",result=\"ok\"}"), 2);
    assert_eq!(
        value(&body, &format!("ftpgate_sessions_by_listener_total{{listener=\"{}\",tls=\"off\"}}", gate.addr)),
        3
    );
    for (direction, leg) in [
        ("client_to_backend", "client"),
        ("client_to_backend", "backend"),
        ("backend_to_client", "backend"),
        ("backend_to_client", "client"),
    ] {
        assert_eq!(
            value(&body, &format!("ftpgate_data_bytes_total{{direction=\"{direction}\",leg=\"{leg}\"}}")),
            1 << 20
        );
    }
    assert_eq!(value(&body, "ftpgate_data_relays_total{kind=\"splice\"}"), 2);
    assert_eq!(value(&body, "ftpgate_passive_listeners_open"), 0);
    assert_eq!(value(&body, "ftpgate_transfer_duration_seconds_count"), 2);
    assert_eq!(value(&body, "ftpgate_logins_total{result=\"ok\"}"), 3);
    assert_eq!(value(&body, "ftpgate_commands_total{result=\"allowed\",verb=\"RETR\"}"), 1);
    assert_eq!(value(&body, "ftpgate_commands_total{result=\"invalid\",verb=\"OTHER\"}"), 1);
    assert_eq!(value(&body, "ftpgate_backend_connect_duration_seconds_count"), 3);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool missing: run scripts/test.sh (Debian package prometheus)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(get(&gate, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(&gate, "/readyz").0, 200);
    assert_eq!(value(&body, "ftpgate_listeners_up"), 1);
    assert_eq!(get(&gate, "/nope").0, 404);

    // A reload asks for a second listener on an address something else holds:
    // the first keeps serving, but the instance is not ready.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut wanted = (*gate.settings).clone();
    let mut extra = wanted.listeners[0].clone();
    extra.address = squatter.local_addr().unwrap();
    wanted.listeners.push(extra);
    let next = gate.live.borrow().reloaded(wanted).unwrap();
    gate.live.send_replace(std::sync::Arc::new(next));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let r = get(&gate, "/readyz");
        if r.0 != 200 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 503, "{body}");
    assert_eq!(body, "1 of 2 client listeners accepting\n");
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220, "the listener that is up still serves");
    drop(c);
    let next = gate.live.borrow().reloaded((*gate.settings).clone()).unwrap();
    gate.live.send_replace(std::sync::Arc::new(next));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&gate, "/readyz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "ready again after the listener list is fixed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(backend);
    let (code, body) = get(&gate, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("backend unreachable"), "{body}");
}

#[test]
fn xferlog_has_one_standard_line_per_file_transfer() {
    let backend = Vsftpd::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xferlog");
    let log_path = log.clone();
    let gate = Gate::start_with(backend.addr, move |s| s.xferlog = Some(log_path));
    let src = dir.path().join("x y.bin");
    std::fs::write(&src, payload(123_456, 1)).unwrap();
    let url = gate.url();
    assert_eq!(curl(&["-T", src.to_str().unwrap(), &format!("{url}/x%20y.bin")]).status, 0);
    assert_eq!(curl(&["-o", "/dev/null", &format!("{url}/x%20y.bin")]).status, 0);
    assert_eq!(curl(&["--list-only", &format!("{url}/")]).status, 0, "listings are not logged");
    gate.assert_drained();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').filter(|f| !f.is_empty()).collect()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (fields, dir) in lines.iter().zip(["i", "o"]) {
        // 5 fields of ctime, then 13 xferlog fields.
        assert_eq!(fields.len(), 18, "{fields:?}");
        assert_eq!(&fields[6..], &["127.0.0.1", "123456", "/x_y.bin", "b", "_", dir, "r", USER, "ftp", "0", "*", "c"]);
        assert!(fields[5].parse::<u64>().unwrap() >= 1);
    }
}
