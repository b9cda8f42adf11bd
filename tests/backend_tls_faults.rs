//! A backend that dies in the middle of a TLS download: a scripted FTPS
//! server (rustls, blocking) that sends part of the file over a TLS data
//! connection, then drops both connections without close_notify or a reply.
//! The client must never get a 2xx for it.

mod common;
use common::*;
use ftpgate::config::BackendTlsMode;
use ftpgate::tls::TlsVersion;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

fn server_config(certs: &TestCerts) -> Arc<ServerConfig> {
    let chain = ftpgate::tls::load_certs(&certs.path("server.pem")).unwrap();
    let key = ftpgate::tls::load_key(&certs.path("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let c = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(c)
}

/// Answers ftpgate's login and setup like an FTPS server; at RETR it sends
/// `sent` bytes over TLS and then drops everything.
fn dying_backend(config: Arc<ServerConfig>, sent: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut tcp, _) = l.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(b"220 fake FTPS\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(&tcp).read_line(&mut line).unwrap();
        assert!(line.starts_with("AUTH TLS"), "{line:?}");
        tcp.write_all(b"234 go\r\n").unwrap();
        let conn = ServerConnection::new(Arc::clone(&config)).unwrap();
        let mut control = BufReader::new(StreamOwned::new(conn, tcp));
        let data = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = data.local_addr().unwrap().port();
        loop {
            let mut line = String::new();
            if control.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            let reply = match verb.as_str() {
                "USER" => "331 pw".to_string(),
                "PASS" => "230 in".to_string(),
                "PWD" => "257 \"/\"".to_string(),
                "EPSV" => format!("229 ok (|||{port}|)"),
                "PASV" => format!("227 ok (127,0,0,1,{},{})", port >> 8, port & 255),
                "RETR" => {
                    control.get_mut().write_all(b"150 here it comes\r\n").unwrap();
                    let (d, _) = data.accept().unwrap();
                    let conn = ServerConnection::new(Arc::clone(&config)).unwrap();
                    let mut d = StreamOwned::new(conn, d);
                    let _ = d.write_all(&payload(sent, 7));
                    let _ = d.flush();
                    // Dies: no close_notify on either connection, no reply.
                    let _ = d.sock.shutdown(std::net::Shutdown::Both);
                    let _ = control.get_mut().sock.shutdown(std::net::Shutdown::Both);
                    return;
                }
                _ => "200 ok".to_string(),
            };
            control.get_mut().write_all(format!("{reply}\r\n").as_bytes()).unwrap();
        }
    });
    addr
}

#[test]
fn backend_dying_during_a_tls_download_never_gets_2xx() {
    let certs = TestCerts::new();
    let sent = 3 << 20;
    let backend = dying_backend(server_config(&certs), sent);
    let gate = Gate::start_with(backend, backend_tls(&certs, BackendTlsMode::Explicit, TlsVersion::V13));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let mut d = c.epsv_data();
    d.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    let mut got = Vec::new();
    let _ = d.read_to_end(&mut got);
    assert!(got.len() <= sent, "more than the backend sent: {}", got.len());
    let (code, text) = c.reply();
    assert!(code >= 400, "a transfer the backend never finished got {code}: {text}");
    // The backend is gone: the session ends with 421 (now or at the next command).
    let mut codes = vec![code];
    if code != 421 {
        c.send_raw(b"NOOP\r\n");
        codes.push(c.reply().0);
    }
    assert_eq!(*codes.last().unwrap(), 421, "{codes:?}");
    assert!(c.closed());
}
