//! PROXY protocol listeners: the header's address is the client's for the
//! policy and for the data-connection check; connections without a header are
//! refused.

mod common;
use common::*;
use ftpgate::config::ProxySenders;
use ftpgate::metrics::Metrics;
use std::io::{Read, Write};
use std::net::TcpStream;

#[test]
fn header_address_drives_policy_and_data_checks() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[[network]]\nname = \"customers\"\ncidrs = [\"198.51.100.0/24\"]\n\n\
         [[network]]\nname = \"blocked\"\ncidrs = [\"192.0.2.0/24\"]\naction = \"deny\"\n",
    )
    .unwrap();
    let backend = Vsftpd::start();
    backend.put("p.bin", &payload(300_000, 6));
    let gate = Gate::start_with(backend.addr, move |s| {
        s.listeners[0].proxy_protocol = true;
        s.listeners[0].proxy_from = ProxySenders::new(&["127.0.0.1/32".parse().unwrap()]);
        s.policy = Some(policy);
    });
    let port = gate.addr.port();

    // A blocked network behind the balancer is refused by its real address.
    let mut c = RawClient::connect(gate.addr);
    c.send_raw(format!("PROXY TCP4 192.0.2.7 127.0.0.1 40000 {port}\r\n").as_bytes());
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");

    // No header at all: closed without a greeting.
    let mut bare = RawClient::connect(gate.addr);
    assert!(bare.closed());

    let mut c = RawClient::connect(gate.addr);
    c.send_raw(format!("PROXY TCP4 198.51.100.9 127.0.0.1 40001 {port}\r\n").as_bytes());
    c.login();
    let (code, text) = c.cmd("EPSV");
    assert_eq!(code, 229);
    let data_port = epsv_port(&text);
    // A data connection that claims another client is refused...
    let mut other = TcpStream::connect(("127.0.0.1", data_port)).unwrap();
    other.write_all(format!("PROXY TCP4 198.51.100.10 127.0.0.1 40002 {data_port}\r\n").as_bytes()).unwrap();
    other.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 8];
    assert!(matches!(other.read(&mut b), Ok(0) | Err(_)));
    // ...a connection that sends nothing does not hold up the next one (its
    // header would be awaited for the whole data-connect timeout)...
    let silent = TcpStream::connect(("127.0.0.1", data_port)).unwrap();
    // ...and the right one carries the file.
    let mut d = TcpStream::connect(("127.0.0.1", data_port)).unwrap();
    d.write_all(format!("PROXY TCP4 198.51.100.9 127.0.0.1 40003 {data_port}\r\n").as_bytes()).unwrap();
    assert_eq!(c.cmd("RETR p.bin").0, 150);
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(c.reply().0, 226);
    assert_eq!(sha256(&got), sha256(&payload(300_000, 6)));
    assert_eq!(Metrics::get(&gate.metrics.data_connections_refused), 1);
    assert_eq!(Metrics::get(&gate.metrics.proxy_header_errors), 1, "the bare control connection");
    // The port is shared: the silent connection's header is still awaited,
    // and its end without one is counted.
    drop(silent);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Metrics::get(&gate.metrics.proxy_header_errors) < 2 {
        assert!(std::time::Instant::now() < deadline, "a connection closed without a header is counted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(gate.metrics.denials_for("connect"), 1);
}

/// `backend.proxy_protocol`: the backend control connection starts with a
/// PROXY header naming the real client. A real HAProxy (accept-proxy) in front
/// of vsftpd logs the address it received; the client's own address here
/// arrives at ftpgate in a PROXY header too, so it travels two hops.
#[test]
fn backend_receives_the_client_address_in_a_proxy_header() {
    for version in [ftpgate::config::ProxyVersion::V1, ftpgate::config::ProxyVersion::V2] {
        let backend = Vsftpd::start();
        backend.put("h.txt", b"through haproxy\n");
        let dir = tempfile::tempdir().unwrap();
        let front = free_port("127.0.0.1".parse().unwrap());
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  log stdout format raw local0\ndefaults\n  mode tcp\n  log global\n  option logasap\n\
                 timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend ftp\n  bind 127.0.0.1:{front} accept-proxy\n  log-format \"client=%ci:%cp\"\n\
                 default_backend vsftpd\n\
                 backend vsftpd\n  server s1 {}\n",
                backend.addr
            ),
        )
        .unwrap();
        let log = dir.path().join("haproxy.log");
        let _haproxy = KillOnDrop::new(
            std::process::Command::new("haproxy")
                .args(["-db", "-f", cfg.to_str().unwrap()])
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("haproxy missing: run scripts/test.sh"),
        );
        wait_for_port(format!("127.0.0.1:{front}").parse().unwrap());
        let gate = Gate::start_with(format!("127.0.0.1:{front}").parse().unwrap(), move |s| {
            s.listeners[0].proxy_protocol = true;
            s.listeners[0].proxy_from = ProxySenders::new(&["127.0.0.1/32".parse().unwrap()]);
            s.backend_proxy_protocol = Some(version);
        });
        let port = gate.addr.port();
        let mut c = RawClient::connect(gate.addr);
        c.send_raw(format!("PROXY TCP4 198.51.100.44 127.0.0.1 41234 {port}\r\n").as_bytes());
        c.login();
        assert_eq!(c.cmd("MDTM h.txt").0, 213, "{version:?}: commands reach vsftpd through HAProxy");
        assert_eq!(c.cmd("QUIT").0, 221);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("client=198.51.100.44:41234") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{version:?}: HAProxy logged: {text}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Headers are believed only from `proxy_from`: a client that reaches the
/// listener directly and claims another address is closed unanswered, on
/// the control port and on a passive port, so it can neither pick its
/// address nor take another client's download.
#[test]
fn headers_from_senders_not_in_proxy_from_are_refused() {
    let backend = Vsftpd::start();
    backend.put("secret.bin", &payload(200_000, 8));
    // The "load balancer" is 127.0.0.2; clients reaching ftpgate directly come from 127.0.0.1.
    let gate = Gate::start_with(backend.addr, move |s| {
        s.listeners[0].proxy_protocol = true;
        s.listeners[0].proxy_from = ProxySenders::new(&["127.0.0.2/32".parse().unwrap()]);
    });
    let port = gate.addr.port();
    // Control: a spoofed header from an untrusted sender gets no greeting.
    let mut spoof = RawClient::connect(gate.addr);
    spoof.send_raw(format!("PROXY TCP4 198.51.100.9 127.0.0.1 40000 {port}\r\n").as_bytes());
    assert!(spoof.closed(), "no reply to an untrusted sender");
    assert_eq!(gate.metrics.proxy_header_errors_for("untrusted"), 1);

    // The victim, through the balancer.
    let mut victim = connect_from("127.0.0.2", gate.addr);
    victim.send_raw(format!("PROXY TCP4 198.51.100.9 127.0.0.1 40001 {port}\r\n").as_bytes());
    victim.login();
    let (code, text) = victim.cmd("EPSV");
    assert_eq!(code, 229);
    let data_port = epsv_port(&text);
    // The thief connects to the victim's passive port first, claiming the victim's address.
    let mut thief = TcpStream::connect(("127.0.0.1", data_port)).unwrap();
    thief.write_all(format!("PROXY TCP4 198.51.100.9 127.0.0.1 40002 {data_port}\r\n").as_bytes()).unwrap();
    thief.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut stolen = Vec::new();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "the thief got {} bytes", stolen.len());
    let mut d = connect_from("127.0.0.2", ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), data_port).into()).stream;
    d.write_all(format!("PROXY TCP4 198.51.100.9 127.0.0.1 40003 {data_port}\r\n").as_bytes()).unwrap();
    assert_eq!(victim.cmd("RETR secret.bin").0, 150);
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(victim.reply().0, 226);
    assert_eq!(sha256(&got), sha256(&payload(200_000, 8)), "the victim gets the whole file");
    assert_eq!(gate.metrics.proxy_header_errors_for("untrusted"), 2, "control and passive");
    let (_, text) = scrape_opt(gate.metrics_addr, "ftpgate_proxy_header_errors_total");
    assert!(text.contains("ftpgate_proxy_header_errors_total{reason=\"untrusted\"} 2"), "{text}");
    assert_eq!(victim.cmd("QUIT").0, 221);
}

/// A PROXY listener without proxy_from does not start, and says why.
#[test]
fn proxy_protocol_without_proxy_from_is_refused_at_start() {
    let text =
        "[[listener]]\naddress = \"127.0.0.1:2121\"\nproxy_protocol = true\n\n[backend]\naddress = \"127.0.0.1:21\"\n";
    let err = ftpgate::config::Config::from_toml(text, "t.toml").unwrap().validate().unwrap_err().to_string();
    assert!(err.contains("proxy_from") && err.contains("claim any address"), "{err}");
    let ok = text.replace("proxy_protocol = true", "proxy_protocol = true\nproxy_from = [\"10.0.0.5/32\"]");
    assert!(ftpgate::config::Config::from_toml(&ok, "t.toml").unwrap().validate().is_ok());
}

/// IPv6 clients count per /64 (`[limits] ipv6_prefix`): three addresses of
/// one /64 (named by a trusted balancer) are one client for the
/// per-address limit; another /64 is another client.
#[test]
fn ipv6_addresses_of_one_prefix_share_the_per_address_limit() {
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, move |s| {
        s.listeners[0].proxy_protocol = true;
        s.listeners[0].proxy_from = ProxySenders::new(&["127.0.0.1/32".parse().unwrap()]);
        s.max_sessions_per_address = 2;
    });
    let port = gate.addr.port();
    let from = |src: &str| {
        let mut c = RawClient::connect(gate.addr);
        c.send_raw(format!("PROXY TCP6 {src} ::1 40000 {port}\r\n").as_bytes());
        c
    };
    let mut a = from("2001:db8:0:1::a");
    assert_eq!(a.reply().0, 220);
    let mut b = from("2001:db8:0:1:ffff::b");
    assert_eq!(b.reply().0, 220);
    let mut c = from("2001:db8:0:1::c");
    let (code, text) = c.reply();
    assert_eq!(code, 421, "a third address of the same /64: {text}");
    let mut other = from("2001:db8:0:2::a");
    assert_eq!(other.reply().0, 220, "another /64 is another client");
    assert_eq!(gate.metrics.refusals_for("address_limit"), 1);
}
