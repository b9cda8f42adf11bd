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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let c = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(c)
}

/// What the backend does after sending part of the file at RETR.
#[derive(Clone, Copy, PartialEq)]
enum AfterPart {
    /// Drops both connections: no close_notify, no reply.
    Dies,
    /// Closes the data connection's TCP without close_notify (a truncation
    /// an attacker on the path could make) and then claims `226` on the
    /// control connection, which stays up.
    Claims226,
}

/// Answers ftpgate's login and setup like an FTPS server; at RETR it sends
/// `sent` bytes over TLS and then does `after`.
fn dying_backend(config: Arc<ServerConfig>, sent: usize) -> SocketAddr {
    scripted_backend(config, sent, AfterPart::Dies)
}

fn scripted_backend(config: Arc<ServerConfig>, sent: usize, after: AfterPart) -> SocketAddr {
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
                    if after == AfterPart::Claims226 {
                        let _ = d.sock.shutdown(std::net::Shutdown::Both);
                        drop(d);
                        "226 Transfer complete".to_string()
                    } else {
                        // Dies: no close_notify on either connection, no reply.
                        let _ = d.sock.shutdown(std::net::Shutdown::Both);
                        let _ = control.get_mut().sock.shutdown(std::net::Shutdown::Both);
                        return;
                    }
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

/// The truncation case: the data connection ends without close_notify and
/// the backend says 226 anyway. A relay that took the TCP FIN for the end
/// of the file would pass a short file on with a 2xx; ftpgate must answer
/// with a 4xx and keep the session.
#[test]
fn truncated_tls_data_with_a_226_is_not_passed_on_as_complete() {
    let certs = TestCerts::new();
    let sent = 1 << 20;
    let backend = scripted_backend(server_config(&certs), sent, AfterPart::Claims226);
    let gate = Gate::start_with(backend, backend_tls(&certs, BackendTlsMode::Explicit, TlsVersion::V13));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let mut d = c.epsv_data();
    d.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(c.cmd("RETR big.bin").0, 150);
    let mut got = Vec::new();
    let _ = d.read_to_end(&mut got);
    let whole = payload(sent, 7);
    assert!(got.len() <= sent && got[..] == whole[..got.len()], "not a prefix of what the backend sent");
    let (code, text) = c.reply();
    assert!((400..500).contains(&code), "a truncated download got {code}: {text}");
    // The control connection is fine: the session goes on.
    assert_eq!(c.cmd("NOOP").0, 200);
}
