//! A handful of passive ports shared by every session (issue 22): many
//! addresses at once, many PROT P sessions of one address told apart by the
//! TLS session they resume, plain sessions of one address waiting for a port
//! of their own, and a thief from the client's own address.

mod common;

use common::*;
use ftpgate::config::{BackendTlsMode, ClientTlsMode};
use ftpgate::metrics::Metrics;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DOWNLOADS: usize = 50;

/// vsftpd with a passive range wide enough for hundreds of sessions at once,
/// and the 50 files sessions download. vsftpd picks a random port of its
/// range and gives up after ten that are taken (`500 OOPS:
/// priv_sock_get_int` to the client): with 500 sessions holding ports of a
/// 1000-port range CI once lost that draw, so the range is 4000 ports.
fn backend() -> (Vsftpd, HashMap<String, String>) {
    let pasv = port_range(4000);
    let backend = Vsftpd::start_with(
        "127.0.0.1".parse().unwrap(),
        &format!("pasv_min_port={}\npasv_max_port={}\n", pasv.min, pasv.max),
    );
    let mut sums = HashMap::new();
    for k in 0..DOWNLOADS {
        let data = payload(48 * 1024 + k * 997, 1000 + k as u64);
        backend.put(&format!("d{k}.bin"), &data);
        sums.insert(format!("d{k}.bin"), sha256(&data));
    }
    (backend, sums)
}

/// Upload files for sessions 0, 2, 4 ... of `n`, by name.
fn uploads(dir: &Path, n: usize) -> HashMap<String, String> {
    (0..n)
        .step_by(2)
        .map(|i| {
            let data = payload(32 * 1024 + i * 131, 5000 + i as u64);
            let name = format!("u{i}.bin");
            std::fs::write(dir.join(&name), &data).unwrap();
            (name, sha256(&data))
        })
        .collect()
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/shared_ports.py").display().to_string()
}

/// Runs `n` concurrent ftplib sessions from `sources`; every download and
/// upload checked by SHA-256 on both sides.
fn run_sessions(
    gate: &Gate,
    backend: &Vsftpd,
    sums: &HashMap<String, String>,
    mode: &str,
    n: usize,
    sources: &[String],
    ca: Option<&Path>,
) {
    let work = tempfile::tempdir().unwrap();
    let sent = uploads(work.path(), n);
    let mut cmd = Command::new("python3");
    cmd.args([
        script(),
        "127.0.0.1".into(),
        gate.addr.port().to_string(),
        USER.into(),
        PASSWORD.into(),
        mode.into(),
        n.to_string(),
        sources.join(","),
        work.path().display().to_string(),
    ]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = run_client(&mut cmd, Duration::from_secs(400));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let results: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), n, "{}", out.stderr);
    let errors: Vec<&serde_json::Value> = results.iter().filter(|r| r.get("error").is_some()).collect();
    assert!(errors.is_empty(), "{} of {n} sessions failed, first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    for r in &results {
        let name = r["name"].as_str().unwrap();
        let got = r["sha256"].as_str().unwrap();
        if r["op"] == "RETR" {
            assert_eq!(got, sums[name], "session {}: download of {name} differs (crossed?)", r["i"]);
        } else {
            assert_eq!(got, sent[name], "session {}: sent bytes", r["i"]);
            assert_eq!(sha256_file(&backend.root.join(name)), sent[name], "session {}: backend copy of {name}", r["i"]);
        }
    }
}

#[test]
fn five_hundred_sessions_from_fifty_addresses_through_four_ports() {
    let (backend, sums) = backend();
    let range = port_range(4);
    let gate = Gate::start_with(backend.addr, |s| {
        s.passive_ports = range;
        s.data_connect = Duration::from_secs(60);
        // Five hundred vsftpd logins at once on a small machine: its replies
        // are slow, and that is not what is tested here.
        s.backend_reply = Duration::from_secs(90);
        s.backend_connect = Duration::from_secs(30);
        // The first sessions wait, logged in, until the last one is.
        s.idle_control = Duration::from_secs(300);
    });
    let sources: Vec<String> = (2..52).map(|k| format!("127.0.0.{k}")).collect();
    run_sessions(&gate, &backend, &sums, "plain", 500, &sources, None);
    let m = &gate.metrics;
    assert_eq!(Metrics::get(&m.transfers_ok), 500);
    assert_eq!(Metrics::get(&m.data_connections_refused), 0);
    assert_eq!(Metrics::get(&m.passive_ports_exhausted), 0);
    println!(
        "500 sessions, 50 addresses, 4 ports: {} setups waited for a port of their own",
        Metrics::get(&m.passive_waits)
    );
    gate.assert_drained();
    assert_eq!(Metrics::get(&m.passive_reservations), 0);
}

#[test]
fn forty_plain_sessions_of_one_address_through_four_ports() {
    let (backend, sums) = backend();
    let range = port_range(4);
    let gate = Gate::start_with(backend.addr, |s| {
        s.passive_ports = range;
        s.data_connect = Duration::from_secs(60);
    });
    run_sessions(&gate, &backend, &sums, "plain", 40, &["127.0.0.1".to_string()], None);
    let m = &gate.metrics;
    assert_eq!(Metrics::get(&m.transfers_ok), 40);
    // Forty setups at once, four ports, one address: some had to wait.
    let waits = Metrics::get(&m.passive_waits);
    println!("40 plain sessions, one address, 4 ports: {waits} setups waited for a port of their own");
    assert!(waits > 0, "no setup waited: the test did not reach the wait");
    assert_eq!(Metrics::get(&m.passive_ports_exhausted), 0);
    gate.assert_drained();
}

fn tls_gate(backend: &Vsftpd, certs: &TestCerts) -> Gate {
    let server = certs.server_options();
    Gate::start_with(backend.addr, move |s| {
        s.passive_ports = port_range(4);
        s.data_connect = Duration::from_secs(60);
        s.listeners[0].tls = ClientTlsMode::Explicit;
        s.client_tls = Some(server);
        s.require_session_reuse = true;
        s.backend_tls = BackendTlsMode::Off;
        s.max_sessions_per_address = 200;
        s.backend_reply = Duration::from_secs(90);
    })
}

#[test]
fn a_hundred_prot_p_sessions_of_one_address_through_four_ports() {
    let (backend, sums) = backend();
    let certs = TestCerts::new();
    let gate = tls_gate(&backend, &certs);
    let ca = certs.path("ca.pem");
    let port = gate.addr.port();
    // curl (OpenSSL) and lftp (GnuTLS) alongside 80 ftplib sessions.
    let work = tempfile::tempdir().unwrap();
    let others: Vec<_> = (0..20)
        .map(|k| {
            let (ca, dst) = (ca.display().to_string(), work.path().join(format!("o{k}.bin")));
            let name = format!("d{}.bin", k + 10);
            std::thread::spawn(move || {
                let out = if k % 2 == 0 {
                    curl(&[
                        "--ssl-reqd",
                        "--cacert",
                        &ca,
                        "-o",
                        dst.to_str().unwrap(),
                        &format!("ftp://127.0.0.1:{port}/{name}"),
                    ])
                } else {
                    lftp(
                        &format!("ftp://127.0.0.1:{port}"),
                        &format!(
                            "set ftp:ssl-allow yes; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; \
                             set ssl:ca-file {ca}; get {name} -o {}",
                            dst.display()
                        ),
                    )
                };
                (name, dst, out)
            })
        })
        .collect();
    run_sessions(&gate, &backend, &sums, "tls", 80, &["127.0.0.1".to_string()], Some(&ca));
    for t in others {
        let (name, dst, out) = t.join().unwrap();
        assert_eq!(out.status, 0, "{name}: {}", out.stderr);
        assert_eq!(sha256_file(&dst), sums[&name], "{name} differs (crossed?)");
    }
    let m = &gate.metrics;
    assert_eq!(Metrics::get(&m.transfers_ok), 100);
    assert_eq!(Metrics::get(&m.passive_tls_refused), 0);
    assert_eq!(Metrics::get(&m.tls_client_data_full), 0, "every data connection resumed its own session");
    let routed = Metrics::get(&m.passive_tls_routed);
    println!("100 PROT P sessions, one address, 4 ports: {routed} data connections routed by resumption");
    assert!(routed > 0, "sessions never shared a port: the test did not reach the routing");
    gate.assert_drained();
}

#[test]
fn a_thief_from_the_clients_address_is_refused_and_the_victim_completes() {
    let (backend, sums) = backend();
    let certs = TestCerts::new();
    let gate = tls_gate(&backend, &certs);
    let work = tempfile::tempdir().unwrap();
    let out = run_client(
        Command::new("python3").args([
            script(),
            "127.0.0.1".into(),
            gate.addr.port().to_string(),
            USER.into(),
            PASSWORD.into(),
            "thief".into(),
            "1".into(),
            "127.0.0.1".into(),
            work.path().display().to_string(),
            certs.path("ca.pem").display().to_string(),
        ]),
        Duration::from_secs(120),
    );
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let r: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    for thief in ["thief_fresh", "thief_foreign"] {
        let said = r[thief].as_str().unwrap();
        assert!(said.starts_with("refused") || said == "read b''", "{thief} got data: {said}");
    }
    assert_eq!(r["sha256"], sums["d0.bin"], "the victim's download: {r}");
    assert!(r["victim_end"].as_str().unwrap().starts_with("226"), "{r}");
    let m = &gate.metrics;
    assert_eq!(Metrics::get(&m.passive_tls_refused), 2);
    assert_eq!(Metrics::get(&m.transfers_ok), 1);
    gate.assert_drained();
}
