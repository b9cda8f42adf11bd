//! PROXY protocol listeners: the header's address is the client's for the
//! policy and for the data-connection check; connections without a header are
//! refused.

mod common;
use common::*;
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
    assert_eq!(gate.metrics.denials_for("connect"), 1);
}
