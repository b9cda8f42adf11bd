//! Outbound connectors (issue 21): a real vsftpd reached only through an
//! `ftpgate connector` that dialled out to the edge; real clients on the
//! edge's front. Files are checked by SHA-256 on both sides.

mod common;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIG: usize = 10 * 1024 * 1024;

/// curl up and down (PASV/EPSV or active), a listing, and ftplib's whole
/// scenario (STOR, RETR, REST, APPE, LIST, NLST, MKD, RNFR/RNTO, DELE).
fn roundtrips(edge: &Edge, backend: &Vsftpd, tls_front: bool) {
    let work = tempfile::tempdir().unwrap();
    let want = write_payload(work.path(), "up.bin", BIG, 21);
    let up = work.path().join("up.bin");
    let tls: &[&str] = if tls_front { &["--ssl-reqd", "--cacert", "/dev/null", "-k"] } else { &[] };
    // Active mode over FTPS is left out for curl: Debian's curl 7.88 never
    // starts TLS on an active data connection (fixed in curl 8.0).
    let modes: &[&[&str]] =
        if tls_front { &[&[], &["--disable-epsv"]] } else { &[&[], &["-P", "-"], &["--disable-epsv"]] };
    for (i, mode) in modes.iter().enumerate() {
        let name = format!("up{i}.bin");
        let out = curl(&[tls, mode, &["-T", up.to_str().unwrap(), &format!("{}/{name}", edge.url())]].concat());
        assert_eq!(out.status, 0, "curl upload {mode:?}: {}\n{}", out.stderr, edge.log());
        assert_eq!(sha256_file(&backend.root.join(&name)), want, "uploaded file {mode:?}");
        let down = work.path().join(format!("down{i}.bin"));
        let out = curl(&[tls, mode, &["-o", down.to_str().unwrap(), &format!("{}/{name}", edge.url())]].concat());
        assert_eq!(out.status, 0, "curl download {mode:?}: {}", out.stderr);
        assert_eq!(sha256_file(&down), want, "downloaded file {mode:?}");
    }
    let out = curl(&[tls, &[&format!("{}/", edge.url())]].concat());
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("up0.bin") && out.stdout.contains("up1.bin"), "{}", out.stdout);
    if tls_front {
        return;
    }
    for mode in ["pasv", "active"] {
        let work = tempfile::tempdir().unwrap();
        let want = write_payload(work.path(), "big.bin", BIG, 7);
        backend.put("big.bin", &payload(BIG, 7));
        for leftover in ["app.bin", "moved.bin", "up0.bin", "up1.bin", "up2.bin"] {
            let _ = std::fs::remove_file(backend.root.join(leftover));
        }
        let out = python_client(&[
            &edge.addr.ip().to_string(),
            &edge.addr.port().to_string(),
            USER,
            PASSWORD,
            mode,
            "full",
            work.path().to_str().unwrap(),
        ]);
        assert_eq!(out.status, 0, "ftplib {mode}: {}\n{}", out.stderr, edge.log());
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(v["stor"], "226 Transfer complete.", "{mode}");
        assert_eq!(v["down_sha"], want.as_str(), "{mode}");
        assert_eq!(v["tail_sha"], sha256(&payload(BIG, 7)[1000..]).as_str(), "{mode}: REST 1000 + RETR");
        assert_eq!(v["appe_sha"], want.as_str(), "{mode}: STOR + APPE");
        assert_eq!(v["list"], "226 Directory send OK.", "{mode}");
        assert_eq!(v["quit"], "221 Goodbye.", "{mode}");
    }
}

#[test]
fn plain_vsftpd_behind_a_connector_with_curl_lftp_and_ftplib() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start();
    let edge = Edge::start(&certs, "connector:dc1", &[]);
    let code = |edge: &Edge| {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/readyz", edge.metrics)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(code(&edge), "503", "not ready before the connector dialled in");
    let _c = connector(&certs, edge.connectors, "dc1", backend.addr, &[]);
    edge.wait_links("dc1", 2);
    assert_eq!(code(&edge), "200");
    roundtrips(&edge, &backend, false);
    let out = lftp(&edge.url(), "put /etc/hostname -o host.txt; get host.txt -o /dev/null; ls");
    assert_eq!(out.status, 0, "lftp: {}", out.stderr);
    assert!(out.stdout.contains("host.txt"), "{}", out.stdout);
    // The session and its data went through the connector: counted there.
    assert!(scrape(edge.metrics, "ftpgate_connector_streams_total{name=\"dc1\",kind=\"control\"}") >= 8);
    assert!(scrape(edge.metrics, "ftpgate_connector_streams_total{name=\"dc1\",kind=\"data\"}") >= 20);
    assert!(edge.log().contains("connector link joined"), "{}", edge.log());
}

#[test]
fn strict_ftps_vsftpd_behind_a_connector_resumes_tls_through_the_streams() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    let ca = certs.path("ca.pem");
    let tls = [
        "--backend-tls",
        "explicit",
        "--backend-ca",
        ca.to_str().unwrap(),
        "--backend-server-name",
        "127.0.0.1",
        "--client-tls",
        "explicit",
    ];
    let edge = Edge::start(&certs, "connector:dc1", &tls);
    let _c = connector(&certs, edge.connectors, "dc1", backend.addr, &[]);
    edge.wait_links("dc1", 2);
    // A plain client is secured transparently; an FTPS client too.
    roundtrips(&edge, &backend, false);
    roundtrips(&edge, &backend, true);
    let full = scrape_sum(edge.metrics, "ftpgate_tls_handshakes_total{leg=\"backend_data\",kind=\"full\"}");
    assert_eq!(full, 0, "every backend data connection resumed through the connector");
}

/// Two connectors of one name: one killed mid-session takes only its own
/// sessions (their clients hear 421); new sessions go to the other; it
/// rejoins when restarted; a restarted edge gets its links back by itself.
#[test]
fn connectors_fail_over_rejoin_and_reconnect_to_a_restarted_edge() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start();
    backend.put("f.bin", &payload(1 << 20, 3));
    let mut edge = Edge::start(&certs, "connector:dc1", &[]);
    let a = connector(&certs, edge.connectors, "dc1", backend.addr, &["--links", "1"]);
    edge.wait_links("dc1", 1);
    let _b = connector(&certs, edge.connectors, "dc1", backend.addr, &["--links", "1"]);
    edge.wait_links("dc1", 2);
    // Eight sessions, spread over both connectors by least streams.
    let mut sessions: Vec<RawClient> = (0..8)
        .map(|_| {
            let mut c = RawClient::connect(edge.addr);
            c.login();
            c
        })
        .collect();
    drop(a);
    edge.wait_links("dc1", 1);
    let mut cut = 0;
    for c in &mut sessions {
        let (code, text) = c.cmd("NOOP");
        match code {
            200 => {}
            421 => {
                cut += 1;
                assert!(text.contains("connector") || text.contains("backend"), "{text}");
            }
            other => panic!("NOOP: {other} {text}"),
        }
    }
    assert!((1..8).contains(&cut), "only the killed connector's sessions end: {cut} of 8 cut");
    // New sessions go to the connector that is left.
    let work = tempfile::tempdir().unwrap();
    let out = curl(&["-o", work.path().join("f").to_str().unwrap(), &format!("{}/f.bin", edge.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&work.path().join("f")), sha256(&payload(1 << 20, 3)));
    // A new connector process rejoins.
    let _a2 = connector(&certs, edge.connectors, "dc1", backend.addr, &["--links", "1"]);
    edge.wait_links("dc1", 2);
    // The edge restarts on the same connector address: links come back by themselves.
    let at = edge.connectors;
    drop(edge);
    std::thread::sleep(Duration::from_millis(500));
    edge = Edge::start_on(&certs, "connector:dc1", &[], Some(at));
    let restarted = Instant::now();
    edge.wait_links("dc1", 2);
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "links back {:?} after the edge returned",
        restarted.elapsed()
    );
    let out = curl(&["-o", work.path().join("g").to_str().unwrap(), &format!("{}/f.bin", edge.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&work.path().join("g")), sha256(&payload(1 << 20, 3)));
}

/// An nftables table the test adds and removes again.
struct NftTable(String);

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.0]).status();
    }
}

/// The point of a connector: the edge cannot reach the FTP server at all,
/// and transfers work. The edge runs as `nobody`, and an nftables rule
/// rejects every connection of that user to the backend's control and
/// passive ports. An edge pointed at the backend directly fails (the rule
/// holds); through the connector, files go up and down intact.
#[test]
fn the_edge_has_no_inbound_path_to_the_backend() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start();
    let conf = std::fs::read_to_string(backend.dir.path().join("vsftpd.conf")).unwrap();
    let value = |k: &str| conf.lines().find_map(|l| l.strip_prefix(k)).unwrap().to_string();
    let (pasv_min, pasv_max) = (value("pasv_min_port="), value("pasv_max_port="));
    // What `nobody` needs: the binary and the edge's certificates, readable.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin = dir.path().join("ftpgate");
    std::fs::copy(env!("CARGO_BIN_EXE_ftpgate"), &bin).unwrap();
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::copy(certs.path(f), dir.path().join(f)).unwrap();
        std::fs::set_permissions(dir.path().join(f), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin.to_str().unwrap()]);
        c
    };
    let table = NftTable(format!("ftpgate_test_{:08x}", rand_u32()));
    let rules = format!(
        "table inet {t} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
         meta skuid 65534 ip daddr 127.0.0.1 tcp dport {{ {port}, {pasv_min}-{pasv_max} }} reject with tcp reset\n }}\n}}\n",
        t = table.0,
        port = backend.addr.port(),
    );
    let mut nft = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(nft.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
    drop(nft.stdin.take());
    assert!(nft.wait().unwrap().success(), "nft rejected the rules:\n{rules}");

    // The rule holds: an edge of the same user aimed at the backend directly
    // cannot log anyone in.
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let direct_addr = SocketAddr::new(lo, free_port(lo));
    let direct = KillOnDrop::new(
        as_nobody()
            .args(["run", "--listen", &direct_addr.to_string(), "--backend", &backend.addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(direct_addr);
    let mut c = RawClient::connect(direct_addr);
    assert_eq!(c.reply().0, 220);
    let (code, _) = c.cmd(&format!("USER {USER}"));
    let (code, text) = if code == 331 { c.cmd(&format!("PASS {PASSWORD}")) } else { (code, String::new()) };
    assert_eq!(code, 421, "the direct path must be closed: {text}");
    assert!(text.contains("unreachable"), "closed by the rule, not for another reason: {text}");
    drop(direct);

    let edge = Edge::start_as(as_nobody(), dir.path(), "connector:dc1", &[], None);
    let _c = connector(&certs, edge.connectors, "dc1", backend.addr, &[]);
    edge.wait_links("dc1", 2);
    let work = tempfile::tempdir().unwrap();
    let want = write_payload(work.path(), "up.bin", BIG, 5);
    let out = curl(&["-T", work.path().join("up.bin").to_str().unwrap(), &format!("{}/noinbound.bin", edge.url())]);
    assert_eq!(out.status, 0, "{}\n{}", out.stderr, edge.log());
    assert_eq!(sha256_file(&backend.root.join("noinbound.bin")), want);
    let down = work.path().join("down.bin");
    let out = curl(&["-o", down.to_str().unwrap(), &format!("{}/noinbound.bin", edge.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&down), want);
}

/// SIGTERM to a connector drains it: its sessions keep working (new data
/// connections included) while new sessions go elsewhere; it exits once its
/// sessions have ended.
#[test]
fn a_stopping_connector_keeps_its_sessions_and_takes_no_new_ones() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start();
    let data = payload(3 << 20, 9);
    backend.put("f.bin", &data);
    let edge = Edge::start(&certs, "connector:dc1", &[]);
    let mut a = connector(&certs, edge.connectors, "dc1", backend.addr, &["--links", "1", "--drain", "20"]);
    edge.wait_links("dc1", 1);
    let mut s = RawClient::connect(edge.addr);
    s.login();
    let st = Command::new("kill").args(["-TERM", &a.id().to_string()]).status().unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(300));
    // The session on the stopping connector still transfers.
    assert_eq!(s.cmd("TYPE I").0, 200);
    let mut conn = s.epsv_data();
    let (code, text) = s.cmd("RETR f.bin");
    assert_eq!(code, 150, "{text}");
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
    assert_eq!(s.reply().0, 226);
    assert_eq!(sha256(&got), sha256(&data), "download during the drain");
    // A new session is not taken by it.
    let mut n = RawClient::connect(edge.addr);
    assert_eq!(n.reply().0, 220);
    let (code, _) = n.cmd(&format!("USER {USER}"));
    let (code, text) = if code == 331 { n.cmd(&format!("PASS {PASSWORD}")) } else { (code, String::new()) };
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("stopping") || text.contains("no connector"), "{text}");
    // Another connector of the name takes new sessions.
    let _b = connector(&certs, edge.connectors, "dc1", backend.addr, &["--links", "1"]);
    edge.wait_links("dc1", 2);
    let mut n = RawClient::connect(edge.addr);
    n.login();
    // The stopping connector ends once its last session has.
    assert_eq!(s.cmd("QUIT").0, 221);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = a.child().try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the connector did not exit after its sessions ended");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(n.cmd("NOOP").0, 200, "the other connector's session is untouched");
}

/// ProFTPD (mod_tls, TLS required) behind a connector, curl on the front:
/// up, down, a resumed download (REST) and a listing, the edge doing the
/// backend TLS through the streams.
#[test]
fn proftpd_over_tls_behind_a_connector() {
    let certs = TestCerts::new();
    let backend = Proftpd::start_tls(&certs);
    let ca = certs.path("ca.pem");
    let tls = ["--backend-tls", "explicit", "--backend-ca", ca.to_str().unwrap(), "--backend-server-name", "127.0.0.1"];
    let edge = Edge::start(&certs, "connector:dc1", &tls);
    let _c = connector(&certs, edge.connectors, "dc1", backend.addr, &[]);
    edge.wait_links("dc1", 2);
    let work = tempfile::tempdir().unwrap();
    let want = write_payload(work.path(), "up.bin", BIG, 8);
    for mode in [&[][..], &["-P", "-"][..]] {
        let out = curl(
            &[mode, &["-T", work.path().join("up.bin").to_str().unwrap(), &format!("{}/p.bin", edge.url())]].concat(),
        );
        assert_eq!(out.status, 0, "upload {mode:?}: {}\n{}", out.stderr, edge.log());
        assert_eq!(sha256_file(&backend.root.join("p.bin")), want);
        let down = work.path().join("down.bin");
        let out = curl(&[mode, &["-o", down.to_str().unwrap(), &format!("{}/p.bin", edge.url())]].concat());
        assert_eq!(out.status, 0, "download {mode:?}: {}", out.stderr);
        assert_eq!(sha256_file(&down), want);
    }
    let tail = work.path().join("tail.bin");
    let out = curl(&["-C", "1000", "-o", tail.to_str().unwrap(), &format!("{}/p.bin", edge.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&tail), sha256(&payload(BIG, 8)[1000..]), "REST 1000 + RETR");
    let out = curl(&["-l", &format!("{}/", edge.url())]);
    assert_eq!(out.stdout.trim(), "p.bin", "{}", out.stderr);
}

/// Cancels as clients make them (RETR, read a little, ABOR, close at once)
/// through a connector: every round answered in order, the session goes on.
#[test]
fn cancels_through_a_connector() {
    let certs = TestCerts::new();
    let backend = Vsftpd::start();
    backend.put("big.bin", &payload(8 << 20, 3));
    let edge = Edge::start(&certs, "connector:dc1", &[]);
    let _c = connector(&certs, edge.connectors, "dc1", backend.addr, &[]);
    edge.wait_links("dc1", 2);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/cancel_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["127.0.0.1", &edge.addr.port().to_string(), USER, PASSWORD, "20", "big.bin"]);
    let out = run_client(&mut cmd, Duration::from_secs(120));
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 20, "{v}");
    for r in rounds {
        let codes: Vec<u64> = r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        assert!(matches!(codes.as_slice(), [150, 426, 226, 200] | [150, 226, 225 | 226, 200]), "{codes:?}");
    }
    // The session is usable afterwards through the same connector.
    let work = tempfile::tempdir().unwrap();
    let out = curl(&["-o", work.path().join("b").to_str().unwrap(), &format!("{}/big.bin", edge.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&work.path().join("b")), sha256(&payload(8 << 20, 3)));
}
