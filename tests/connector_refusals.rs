//! Outbound connectors refusing what they must (issue 21): targets outside
//! the connector's backend, certificates from another CA, expired or for a
//! name no backend uses, garbage on the connector listener.

mod common;
use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The connector opens nothing but its backend: a stream to any other
/// address is refused and counted, whatever the edge asks.
#[test]
fn a_connector_refuses_streams_to_anything_but_its_backend() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let connector_metrics = SocketAddr::new(lo, free_port(lo));
    // A hostile edge: the test itself, with the edge's certificate.
    let edge_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let edge_addr = edge_listener.local_addr().unwrap();
    // Only the backend's passive range, as an operator sets it.
    let conf = std::fs::read_to_string(backend.dir.path().join("vsftpd.conf")).unwrap();
    let value = |k: &str| conf.lines().find_map(|l| l.strip_prefix(k)).unwrap().to_string();
    let range = format!("{}-{}", value("pasv_min_port="), value("pasv_max_port="));
    let args = ["--metrics", &connector_metrics.to_string(), "--links", "1", "--backend-ports", &range];
    let _c = connector(&certs, edge_addr, "dc1", backend.addr, &args);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let statuses = rt.block_on(async {
        edge_listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(edge_listener).unwrap();
        let o = ftpgate::connector::EdgeSettings {
            listen: edge_addr,
            ca: certs.path("ca.pem"),
            cert: certs.path("server.pem"),
            key: certs.path("server.key"),
            names: vec!["dc1".into()],
        };
        let acceptor = ftpgate::connector::edge::acceptor(&o).unwrap();
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let (send, conn) = h2::client::handshake(tls).await.unwrap();
        tokio::spawn(conn);
        let mut statuses = vec![];
        for target in [
            other_addr.to_string(),
            "127.0.0.2:22".to_string(),
            "10.1.2.3:21".to_string(),
            format!("localhost:{}", backend.addr.port()),
            backend.addr.to_string(),
        ] {
            let mut send = send.clone().ready().await.unwrap();
            let req = http::Request::builder().method("CONNECT").uri(target.as_str()).body(()).unwrap();
            let (resp, _stream) = send.send_request(req, false).unwrap();
            statuses.push((target, resp.await.unwrap().status().as_u16()));
        }
        statuses
    });
    let want: Vec<u16> = vec![403, 403, 403, 403, 200];
    assert_eq!(statuses.iter().map(|s| s.1).collect::<Vec<_>>(), want, "{statuses:?}");
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err(), "the other address must never have been connected to");
    let text = String::from_utf8_lossy(
        &Command::new("curl").args(["-sf", &format!("http://{connector_metrics}/metrics")]).output().unwrap().stdout,
    )
    .into_owned();
    assert!(text.contains("ftpgate_connector_refused_total{reason=\"target\"} 4"), "{text}");
}

/// Certificates from another CA, or for a name no backend uses, are refused
/// at the link's handshake and counted.
#[test]
fn connectors_with_a_foreign_certificate_or_an_unused_name_are_refused() {
    let certs = TestCerts::new();
    let foreign = TestCerts::new();
    let backend = Vsftpd::start();
    let edge = Edge::start(&certs, "connector:dc1", &[]);
    // dc1's name, another CA's certificate (the edge is verified with the right CA).
    let _f = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_ftpgate"))
            .args(["connector", "--edge", &edge.connectors.to_string(), "--name", "dc1"])
            .args(["--backend", &backend.addr.to_string()])
            .args(["--cert", foreign.path("connector-dc1.pem").to_str().unwrap()])
            .args(["--key", foreign.path("connector-dc1.key").to_str().unwrap()])
            .args(["--ca", certs.path("ca.pem").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The right CA, a name the edge does not use.
    let _u = connector(&certs, edge.connectors, "dc2", backend.addr, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let handshake = scrape_opt(edge.metrics, "ftpgate_connector_refused_total{reason=\"handshake\"}").0;
        let unknown = scrape_opt(edge.metrics, "ftpgate_connector_refused_total{reason=\"unknown_name\"}").0;
        if handshake.unwrap_or(0) >= 2 && unknown.unwrap_or(0) >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "refusals not counted:\n{}", edge.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(scrape(edge.metrics, "ftpgate_connector_links{name=\"dc1\"}"), 0);
    let mut c = RawClient::connect(edge.addr);
    assert_eq!(c.reply().0, 220);
    let (code, text) = c.cmd(&format!("USER {USER}"));
    let (code, text) = if code == 331 { c.cmd(&format!("PASS {PASSWORD}")) } else { (code, text) };
    assert_eq!(code, 421, "no connector: the client hears why ({text})");
    assert!(text.contains("no connector named dc1"), "{text}");
}

/// Garbage and silence on the connector listener: refused and counted, the
/// connection closed, nothing held.
#[test]
fn garbage_on_the_connector_listener_is_refused() {
    let certs = TestCerts::new();
    let edge = Edge::start(&certs, "connector:dc1", &[]);
    let mut junk = std::net::TcpStream::connect(edge.connectors).unwrap();
    std::io::Write::write_all(&mut junk, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01garbage").unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let closed = matches!(std::io::Read::read(&mut junk, &mut buf), Ok(0) | Err(_))
        || matches!(std::io::Read::read(&mut junk, &mut buf), Ok(0) | Err(_));
    assert!(closed, "the edge must close a connection that speaks no TLS");
    wait_for_metric(edge.metrics, "ftpgate_connector_refused_total{reason=\"handshake\"}", 1);
    assert_eq!(scrape(edge.metrics, "ftpgate_connector_links{name=\"dc1\"}"), 0);
}

/// A connector certificate from the right CA, for the right name, but
/// expired: refused at the handshake and counted.
#[test]
fn an_expired_connector_certificate_is_refused() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.path("ca.key")).unwrap()).unwrap();
    let ca = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(certs.path("ca.pem")).unwrap(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["dc1".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "dc1");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("old.key"), key.serialize_pem()).unwrap();
    let edge = Edge::start(&certs, "connector:dc1", &[]);
    let _old = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_ftpgate"))
            .args(["connector", "--edge", &edge.connectors.to_string(), "--name", "dc1"])
            .args(["--backend", &backend.addr.to_string()])
            .args(["--cert", dir.path().join("old.pem").to_str().unwrap()])
            .args(["--key", dir.path().join("old.key").to_str().unwrap()])
            .args(["--ca", certs.path("ca.pem").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_metric(edge.metrics, "ftpgate_connector_refused_total{reason=\"handshake\"}", 2);
    assert!(edge.log().contains("connector link refused"), "{}", edge.log());
    assert!(edge.log().to_lowercase().contains("expired"), "the reason names the expiry: {}", edge.log());
    assert_eq!(scrape(edge.metrics, "ftpgate_connector_links{name=\"dc1\"}"), 0);
    // The same name with a valid certificate is let in: the refusal was the date.
    let _good = connector(&certs, edge.connectors, "dc1", backend.addr, &[]);
    edge.wait_links("dc1", 2);
}
