//! Bandwidth and size limits (issue 14) with real vsftpd and curl: only the
//! lower bounds of durations are asserted (speed itself belongs in benches),
//! contents always by SHA-256.

mod common;
use common::*;
use ftpgate::config::BackendTlsMode;
use ftpgate::metrics::Metrics;
use ftpgate::tls::TlsVersion;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn policy(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("limits.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn user_arg() -> String {
    format!("{USER}:{PASSWORD}")
}

/// Downloads `name` with curl; returns the bytes and how long it took.
fn timed_download(gate: &Gate, name: &str) -> (Vec<u8>, Duration) {
    let work = tempfile::tempdir().unwrap();
    let dst = work.path().join("dst");
    let started = Instant::now();
    let out = curl(&["-s", "-u", &user_arg(), "-o", dst.to_str().unwrap(), &format!("{}/{name}", gate.url())]);
    let took = started.elapsed();
    assert_eq!(out.status, 0, "{}", out.stderr);
    (std::fs::read(&dst).unwrap(), took)
}

#[test]
fn download_rate_holds_on_the_splice_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, &format!("[users.{USER}]\ndownload_rate = \"2MiB/s\"\n"));
    let backend = Vsftpd::start();
    let data = payload(10 * MIB, 21);
    backend.put("ten.bin", &data);
    let gate = Gate::start_with(backend.addr, move |s| s.policy = Some(p));
    let (got, took) = timed_download(&gate, "ten.bin");
    assert_eq!(sha256(&got), sha256(&data));
    assert!(took >= Duration::from_secs(4), "10 MiB at 2 MiB/s took only {took:?}");
    assert!(Metrics::get(&gate.metrics.relays_spliced) >= 1, "the plain legs were spliced");
    assert!(Metrics::get(&gate.metrics.rate_wait_download_us) > 3_000_000);
}

#[test]
fn download_rate_holds_with_a_tls_backend() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, "[defaults]\ndownload_rate = \"2MiB/s\"\n");
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    let data = payload(10 * MIB, 22);
    backend.put("ten.bin", &data);
    let tweak = backend_tls(&certs, BackendTlsMode::Explicit, TlsVersion::V13);
    let gate = Gate::start_with(backend.addr, move |s| {
        tweak(s);
        s.policy = Some(p);
    });
    let (got, took) = timed_download(&gate, "ten.bin");
    assert_eq!(sha256(&got), sha256(&data));
    assert!(took >= Duration::from_secs(4), "10 MiB at 2 MiB/s took only {took:?}");
    assert_eq!(Metrics::get(&gate.metrics.relays_spliced), 0, "a TLS leg takes the copy path");
}

#[test]
fn upload_rate_holds() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, &format!("[users.{USER}]\nupload_rate = \"1MiB/s\"\n"));
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, move |s| s.policy = Some(p));
    let data = payload(4 * MIB, 23);
    let src = dir.path().join("up.bin");
    std::fs::write(&src, &data).unwrap();
    let started = Instant::now();
    let out = curl(&["-s", "-u", &user_arg(), "-T", src.to_str().unwrap(), &format!("{}/up.bin", gate.url())]);
    let took = started.elapsed();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&backend.root.join("up.bin")), sha256(&data));
    assert!(took >= Duration::from_secs(3), "4 MiB at 1 MiB/s took only {took:?}");
    assert!(Metrics::get(&gate.metrics.rate_wait_upload_us) > 2_000_000);
}

/// Two parallel downloads by one user share the user's rate: 2 x 5 MiB at
/// 2 MiB/s together take at least 4 s, though each alone would take 2.5.
#[test]
fn parallel_downloads_share_the_users_rate() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, &format!("[users.{USER}]\ndownload_rate = \"2MiB/s\"\n"));
    let backend = Vsftpd::start();
    let (a, b) = (payload(5 * MIB, 24), payload(5 * MIB, 25));
    backend.put("a.bin", &a);
    backend.put("b.bin", &b);
    let gate = Gate::start_with(backend.addr, move |s| s.policy = Some(p));
    let started = Instant::now();
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| timed_download(&gate, "a.bin"));
        let tb = s.spawn(|| timed_download(&gate, "b.bin"));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let took = started.elapsed();
    assert_eq!(sha256(&ra.0), sha256(&a));
    assert_eq!(sha256(&rb.0), sha256(&b));
    assert!(took >= Duration::from_secs(4), "10 MiB in all at 2 MiB/s took only {took:?}");
    assert!(ra.1.max(rb.1) >= Duration::from_secs(4), "{:?} {:?}", ra.1, rb.1);
}

/// An upload past `max_upload_size` is stopped at the cap with 552, and a
/// new file's partial copy is removed from the backend.
#[test]
fn upload_over_the_cap_gets_552_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, "[defaults]\nmax_upload_size = \"1MiB\"\n");
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, move |s| s.policy = Some(p));
    let src = dir.path().join("big.bin");
    std::fs::write(&src, payload(3 * MIB, 26)).unwrap();
    let out = curl(&["-s", "-S", "-u", &user_arg(), "-T", src.to_str().unwrap(), &format!("{}/big.bin", gate.url())]);
    // curl is still sending when ftpgate stops reading at the cap, so it
    // may report the broken data connection (55) rather than the 552.
    assert_ne!(out.status, 0, "curl must see the upload fail");
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.root.join("big.bin").exists() {
        assert!(Instant::now() < deadline, "the partial file was left on the backend");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(Metrics::get(&gate.metrics.uploads_capped), 1);
    // A client that reads its control connection sees the 552 with the limit.
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    let (code, text) = upload(&mut c, "STOR big2.bin", &payload(3 * MIB, 32));
    assert_eq!(code, 552, "{text}");
    assert!(text.contains("Exceeded storage allocation") && text.contains("1 MiB"), "{text}");
    assert!(!backend.root.join("big2.bin").exists(), "the partial file was left on the backend");
    // A file exactly at the cap is fine.
    let exact = payload(MIB, 27);
    std::fs::write(&src, &exact).unwrap();
    let out = curl(&["-s", "-S", "-u", &user_arg(), "-T", src.to_str().unwrap(), &format!("{}/exact.bin", gate.url())]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&backend.root.join("exact.bin")), sha256(&exact));
}

fn upload(c: &mut RawClient, verb: &str, data: &[u8]) -> (u16, String) {
    let mut d = c.epsv_data();
    assert_eq!(c.cmd(verb).0, 150);
    // The relay may stop reading at the cap: a refused tail is fine.
    let _ = d.write_all(data);
    drop(d);
    c.reply()
}

/// The cap counts per file per session: many APPEs, or REST+STOR, cannot
/// pass it. Appended and resumed files are left as they are (at the cap).
#[test]
fn appe_and_rest_cannot_dodge_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, "[defaults]\nmax_upload_size = \"1MiB\"\n");
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, move |s| s.policy = Some(p));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    let part = payload(600 * 1024, 28);
    assert_eq!(upload(&mut c, "APPE log.bin", &part).0, 226);
    let (code, text) = upload(&mut c, "APPE log.bin", &part);
    assert_eq!(code, 552, "{text}");
    assert!(text.contains("1 MiB"), "the text names the limit: {text}");
    assert_eq!(std::fs::metadata(backend.root.join("log.bin")).unwrap().len(), MIB as u64, "left at the cap");

    let first = payload(800 * 1024, 29);
    assert_eq!(upload(&mut c, "STOR r.bin", &first).0, 226);
    assert_eq!(c.cmd(&format!("REST {}", first.len())).0, 350);
    let (code, text) = upload(&mut c, "STOR r.bin", &payload(400 * 1024, 30));
    assert_eq!(code, 552, "{text}");
    let kept = std::fs::read(backend.root.join("r.bin")).unwrap();
    assert_eq!(kept.len(), MIB, "a resumed upload is left at the cap");
    assert_eq!(sha256(&kept[..first.len()]), sha256(&first));
    assert_eq!(c.cmd("NOOP").0, 200, "the session goes on");
    assert_eq!(Metrics::get(&gate.metrics.uploads_capped), 2);
}

/// Bytes of an upload cut by ABOR count too, and APPE starts from the
/// file's size on the backend: four rounds of APPE of 900 KiB cut by ABOR
/// leave the file within the 1 MiB cap. A second STOR of the same name and a
/// STOU cut at the cap leave no partial file.
#[test]
fn aborted_appends_count_and_no_partial_file_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, "[defaults]\nmax_upload_size = \"1MiB\"\n");
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, move |s| s.policy = Some(p));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    for round in 0..4 {
        let mut d = c.epsv_data();
        assert_eq!(c.cmd("APPE grow.bin").0, 150, "round {round}");
        let _ = d.write_all(&payload(900 * 1024, 40 + round));
        c.send_raw(b"ABOR\r\nNOOP\r\n");
        drop(d);
        let mut codes = Vec::new();
        while codes.last() != Some(&200) {
            codes.push(c.reply().0);
            assert!(codes.len() <= 4, "round {round}: {codes:?}");
        }
        let len = std::fs::metadata(backend.root.join("grow.bin")).map(|m| m.len()).unwrap_or(0);
        assert!(len <= MIB as u64, "round {round}: the file grew to {len} bytes past the 1 MiB cap ({codes:?})");
    }
    // A second STOR of one name overwrites: cut at the cap, it is removed.
    assert_eq!(upload(&mut c, "STOR twice.bin", &payload(500 * 1024, 50)).0, 226);
    let (code, text) = upload(&mut c, "STOR twice.bin", &payload(3 * MIB, 51));
    assert_eq!(code, 552, "{text}");
    assert!(!backend.root.join("twice.bin").exists(), "the second STOR's partial file was left");
    // STOU: the name the backend chose is removed.
    let before: Vec<_> = std::fs::read_dir(&backend.root).unwrap().map(|e| e.unwrap().file_name()).collect();
    let (code, text) = upload(&mut c, "STOU", &payload(3 * MIB, 52));
    assert_eq!(code, 552, "{text}");
    let after: Vec<_> = std::fs::read_dir(&backend.root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "STOU's partial file was left");
    assert_eq!(c.cmd("NOOP").0, 200);
}

/// `max_transfers = 1`: a second transfer while one runs gets 450 and its
/// data connection is closed, not used.
#[test]
fn max_transfers_refuses_one_more_with_450() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, &format!("[users.{USER}]\nmax_transfers = 1\ndownload_rate = \"1MiB/s\"\n"));
    let backend = Vsftpd::start();
    backend.put("slow.bin", &payload(4 * MIB, 31));
    let gate = Gate::start_with(backend.addr, move |s| s.policy = Some(p));
    let mut first = RawClient::connect(gate.addr);
    first.login();
    let mut d1 = first.epsv_data();
    assert_eq!(first.cmd("RETR slow.bin").0, 150);
    let mut second = RawClient::connect(gate.addr);
    second.login();
    let mut d2 = second.epsv_data();
    d2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (code, text) = second.cmd("RETR slow.bin");
    assert_eq!(code, 450, "{text}");
    assert!(text.contains("limit 1"), "{text}");
    let mut buf = [0u8; 16];
    assert!(matches!(d2.read(&mut buf), Ok(0) | Err(_)), "the refused transfer's data connection is closed");
    assert_eq!(Metrics::get(&gate.metrics.transfers_refused_max), 1);
    let mut got = Vec::new();
    d1.read_to_end(&mut got).unwrap();
    assert_eq!(sha256(&got), sha256(&payload(4 * MIB, 31)), "the first transfer is whole");
    assert_eq!(first.reply().0, 226);
    // Once the first ended, the second may go.
    let mut d2 = second.epsv_data();
    assert_eq!(second.cmd("NLST").0, 150);
    let mut listing = Vec::new();
    d2.read_to_end(&mut listing).unwrap();
    assert_eq!(String::from_utf8_lossy(&listing), "slow.bin\r\n");
    assert_eq!(second.reply().0, 226);
}

#[test]
fn policy_check_names_the_key_and_line_of_a_bad_limit() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, "[defaults]\nmax_upload_size = \"4MiB\"\n\n[users.bob]\ndownload_rate = \"2 MiB\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftpgate"))
        .args(["policy", "check", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 5") && err.contains("users.bob.download_rate"), "{err}");
    let p = policy(&dir, &format!("[users.{USER}]\ndownload_rate = \"2MiB/s\"\nmax_transfers = 2\n"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftpgate"))
        .args(["policy", "explain", "--policy", p.to_str().unwrap(), "--user", USER, "--from", "127.0.0.1"])
        .arg("RETR x")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("download 2 MiB/s") && text.contains("transfers at once 2"), "{text}");
}
