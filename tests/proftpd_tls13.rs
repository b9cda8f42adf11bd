//! ProFTPD over TLS 1.3 with no setting (issue 24): a stock ProFTPD with
//! TLS 1.2 and 1.3 enabled and its default session-reuse requirement, behind
//! ftpgate with only `[backend] tls` and `ca` set. One session of 100
//! transfers (STOR, STOR, RETR, NLST, 25 times) through a plain front and
//! through an FTPS front: every transfer succeeds and every backend data
//! connection resumes the control session. Before the default changed, the
//! plain front's session got 425 from the third data connection on.

mod common;
use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

fn mixed_session(port: u16, ca: Option<&std::path::Path>) -> (Vec<u64>, Vec<bool>) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mixed_session.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["127.0.0.1", &port.to_string(), USER, PASSWORD, "25"]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = run_client(&mut cmd, Duration::from_secs(240));
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let codes = v["codes"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    let matches = v["matches"].as_array().unwrap().iter().map(|m| m.as_bool().unwrap()).collect();
    (codes, matches)
}

#[test]
fn a_hundred_mixed_transfers_to_proftpd_over_tls_with_no_setting() {
    let certs = TestCerts::new();
    let backend = Proftpd::start_tls(&certs);
    let dir = tempfile::tempdir().unwrap();
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (plain, ftps, metrics) = (free_port(ip), free_port(ip), free_port(ip));
    let range = port_range(20);
    let config = dir.path().join("ftpgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{plain}\"\n\n[[listener]]\naddress = \"127.0.0.1:{ftps}\"\n\
             tls = \"explicit\"\n\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n[backend]\naddress = \"{backend}\"\n\
             tls = \"explicit\"\nca = \"{ca}\"\n\n[passive]\nports = \"{}-{}\"\n\n[metrics]\naddress = \"127.0.0.1:{metrics}\"\n",
            range.min,
            range.max,
            cert = certs.path("server.pem").display(),
            key = certs.path("server.key").display(),
            backend = backend.addr,
            ca = certs.path("ca.pem").display(),
        ),
    )
    .unwrap();
    let _gate = ftpgate_with_config(&config);
    let metrics = SocketAddr::new(ip, metrics);
    wait_for_greeting(SocketAddr::new(ip, plain));
    let series = format!("ftpgate_backend_tls_max_version{{backend=\"{}\",version=\"1.2\"}}", backend.addr);
    assert_eq!(scrape(metrics, &series), 1, "the default and the metric that says so");

    let (codes, matches) = mixed_session(plain, None);
    assert_eq!(codes.len(), 100);
    assert!(codes.iter().all(|&c| c == 226), "plain front: {codes:?}\n{}", backend.log("tls.log"));
    assert!(matches.iter().all(|&m| m), "every download is what was uploaded");
    let (codes, matches) = mixed_session(ftps, Some(&certs.path("ca.pem")));
    assert!(codes.iter().all(|&c| c == 226), "FTPS front: {codes:?}\n{}", backend.log("tls.log"));
    assert!(matches.iter().all(|&m| m));

    assert_eq!(scrape(metrics, "ftpgate_tls_handshakes_total{kind=\"full\",leg=\"backend_data\"}"), 0);
    assert_eq!(scrape(metrics, "ftpgate_tls_handshakes_total{kind=\"resumed\",leg=\"backend_data\"}"), 200);
    assert_eq!(scrape(metrics, "ftpgate_tls_versions_total{leg=\"backend_data\",version=\"1.2\"}"), 200);
    let log = backend.log("tls.log");
    assert!(log.contains("TLS") && !log.contains("did not reuse"), "{log}");
}
