//! Real clients (curl, lftp, Python ftplib, suppaftp) through ftpgate to a real
//! vsftpd, in every data-connection mode, over IPv4 and IPv6 loopback.

mod common;
use common::*;
use std::net::IpAddr;
use std::path::Path;

const BIG: usize = 10 * 1024 * 1024;

fn write_payload(dir: &Path, name: &str, len: usize, seed: u64) -> (std::path::PathBuf, String) {
    let data = payload(len, seed);
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    (p, sha256(&data))
}

/// curl upload, download, listing and delete in one data-connection mode.
fn curl_roundtrip(ip: IpAddr, mode_args: &[&str]) {
    let backend = Vsftpd::start_with(ip, "");
    let gate = Gate::start_on(ip, backend.addr, |_| {});
    let work = tempfile::tempdir().unwrap();
    let (src, want) = write_payload(work.path(), "src.bin", BIG, 1);
    let url = gate.url();

    let up = curl(&[mode_args, &["-T", src.to_str().unwrap(), &format!("{url}/up.bin")]].concat());
    assert_eq!(up.status, 0, "upload failed: {}", up.stderr);
    assert_eq!(sha256_file(&backend.root.join("up.bin")), want, "backend file differs from upload");

    let dst = work.path().join("down.bin");
    let down = curl(&[mode_args, &["-o", dst.to_str().unwrap(), &format!("{url}/up.bin")]].concat());
    assert_eq!(down.status, 0, "download failed: {}", down.stderr);
    assert_eq!(sha256_file(&dst), want, "downloaded file differs");

    let list = curl(&[mode_args, &["--list-only", &format!("{url}/")]].concat());
    assert_eq!(list.status, 0, "{}", list.stderr);
    assert_eq!(list.stdout.lines().collect::<Vec<_>>(), vec!["up.bin"]);

    let del = curl(&[mode_args, &["-Q", "DELE up.bin", &format!("{url}/")]].concat());
    assert_eq!(del.status, 0, "{}", del.stderr);
    assert!(!backend.root.join("up.bin").exists());
    drop(gate_drained(gate));
}

fn gate_drained(gate: Gate) -> Gate {
    gate.assert_drained();
    assert!(ftpgate::metrics::Metrics::get(&gate.metrics.transfers_ok) >= 3);
    // Plain on both legs: every data relay is zero-copy.
    assert!(ftpgate::metrics::Metrics::get(&gate.metrics.relays_spliced) >= 3);
    assert_eq!(ftpgate::metrics::Metrics::get(&gate.metrics.relays_copied), 0);
    gate
}

#[test]
fn curl_epsv_ipv4() {
    curl_roundtrip("127.0.0.1".parse().unwrap(), &[]);
}

#[test]
fn curl_pasv_ipv4() {
    curl_roundtrip("127.0.0.1".parse().unwrap(), &["--disable-epsv"]);
}

#[test]
fn curl_active_port_ipv4() {
    curl_roundtrip("127.0.0.1".parse().unwrap(), &["--disable-eprt", "-P", "-"]);
}

#[test]
fn curl_active_eprt_ipv4() {
    curl_roundtrip("127.0.0.1".parse().unwrap(), &["-P", "-"]);
}

#[test]
fn curl_epsv_ipv6() {
    curl_roundtrip("::1".parse().unwrap(), &[]);
}

#[test]
fn curl_active_eprt_ipv6() {
    curl_roundtrip("::1".parse().unwrap(), &["-P", "-"]);
}

fn python_scenario(ip: IpAddr, mode: &str, scenario: &str) -> (Vsftpd, Gate, serde_json::Value, String) {
    let backend = Vsftpd::start_with(ip, "");
    let gate = Gate::start_on(ip, backend.addr, |_| {});
    let work = tempfile::tempdir().unwrap();
    let (_, want) = write_payload(work.path(), "big.bin", BIG, 7);
    backend.put("big.bin", &payload(BIG, 7));
    let out = python_client(&[
        &gate.addr.ip().to_string(),
        &gate.addr.port().to_string(),
        USER,
        PASSWORD,
        mode,
        scenario,
        work.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status, 0, "ftplib failed: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    (backend, gate, v, want)
}

fn check_python_full(mode: &str, ip: &str) {
    let (backend, gate, v, want) = python_scenario(ip.parse().unwrap(), mode, "full");
    let data = payload(BIG, 7);
    assert_eq!(v["stor"], "226 Transfer complete.");
    assert_eq!(v["retr"], "226 Transfer complete.");
    assert_eq!(v["down_sha"], want.as_str());
    assert_eq!(v["size"], BIG as u64);
    assert_eq!(v["rest_retr"], "226 Transfer complete.");
    assert_eq!(v["tail_sha"], sha256(&data[1000..]).as_str(), "REST 1000 + RETR must return the tail");
    assert_eq!(v["appe"], "226 Transfer complete.");
    assert_eq!(v["appe_sha"], want.as_str(), "STOR + APPE must rebuild the file");
    assert_eq!(v["mkd"], "/d");
    assert_eq!(v["rename"], "250 Rename successful.");
    assert_eq!(v["nlst"], serde_json::json!(["app.bin", "big.bin", "d"]));
    assert_eq!(v["list"], "226 Directory send OK.");
    assert!(v["list_lines"][0].as_str().unwrap().ends_with(" moved.bin"), "{}", v["list_lines"]);
    assert_eq!(v["delete"], "250 Delete operation successful.");
    assert_eq!(v["rmd"], "250 Remove directory operation successful.");
    assert_eq!(v["nlst_after"], serde_json::json!(["big.bin"]));
    assert_eq!(v["quit"], "221 Goodbye.");
    assert!(!backend.root.join("d").exists());
    gate.assert_drained();
    assert_eq!(ftpgate::metrics::Metrics::get(&gate.metrics.transfers_failed), 0);
}

#[test]
fn python_ftplib_pasv() {
    check_python_full("pasv", "127.0.0.1");
}

#[test]
fn python_ftplib_epsv() {
    check_python_full("epsv", "127.0.0.1");
}

#[test]
fn python_ftplib_active() {
    check_python_full("active", "127.0.0.1");
}

#[test]
fn python_ftplib_ipv6() {
    check_python_full("pasv", "::1");
}

#[test]
fn python_ftplib_abort_mid_download() {
    let (_backend, gate, v, want) = python_scenario("127.0.0.1".parse().unwrap(), "pasv", "abort");
    assert!(v["received_before_abort"].as_u64().unwrap() > 0);
    // The cut transfer gets 426, then ABOR 226: ftpgate's rule after a 426,
    // whether vsftpd said 225 or 226.
    assert_eq!(v["abort_first"].as_str().unwrap()[..3], *"426", "{v}");
    assert_eq!(v["abort_second"].as_str().unwrap()[..3], *"226", "{v}");
    assert_eq!(v["noop"], "200 NOOP ok.");
    assert_eq!(v["after_sha"], want.as_str(), "the session must transfer intact after ABOR");
    gate.assert_drained();
    assert_eq!(ftpgate::metrics::Metrics::get(&gate.metrics.transfers_aborted), 1);
}

fn lftp_roundtrip(passive: bool) {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let work = tempfile::tempdir().unwrap();
    let (src, want) = write_payload(work.path(), "src.bin", BIG, 3);
    let dst = work.path().join("back.bin");
    let mode = if passive { "on" } else { "off" };
    let out = lftp(
        &gate.url(),
        &format!(
            "set ftp:passive-mode {mode}; put {src} -o up.bin; mkdir sub; mv up.bin sub/up.bin; cls -1 sub; \
             get sub/up.bin -o {dst}; rm sub/up.bin; rmdir sub; cls -1",
            src = src.display(),
            dst = dst.display()
        ),
    );
    assert_eq!(out.status, 0, "lftp failed: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "sub/up.bin", "listing of sub, then of an empty root");
    assert_eq!(sha256_file(&dst), want);
    assert!(!backend.root.join("sub").exists());
    gate.assert_drained();
}

#[test]
fn lftp_passive() {
    lftp_roundtrip(true);
}

#[test]
fn lftp_active() {
    lftp_roundtrip(false);
}

fn suppaftp_roundtrip(mode: suppaftp::Mode, ip: &str) {
    let backend = Vsftpd::start_with(ip.parse().unwrap(), "");
    let gate = Gate::start_on(ip.parse().unwrap(), backend.addr, |_| {});
    let data = payload(BIG, 11);
    // Every socket has a deadline, so a stuck session fails the test instead of hanging the suite.
    let limit = Some(std::time::Duration::from_secs(30));
    let control = std::net::TcpStream::connect_timeout(&gate.addr, std::time::Duration::from_secs(10)).unwrap();
    control.set_read_timeout(limit).unwrap();
    control.set_write_timeout(limit).unwrap();
    let mut ftp = suppaftp::FtpStream::connect_with_stream(control).unwrap().passive_stream_builder(move |addr| {
        let s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
            .map_err(suppaftp::FtpError::ConnectionError)?;
        s.set_read_timeout(limit).map_err(suppaftp::FtpError::ConnectionError)?;
        s.set_write_timeout(limit).map_err(suppaftp::FtpError::ConnectionError)?;
        Ok(s)
    });
    if mode == suppaftp::Mode::Active {
        ftp = ftp.active_mode(std::time::Duration::from_secs(10));
    }
    ftp.set_mode(mode);
    ftp.login(USER, PASSWORD).unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary).unwrap();
    ftp.put_file("r.bin", &mut std::io::Cursor::new(&data)).unwrap();
    assert_eq!(sha256_file(&backend.root.join("r.bin")), sha256(&data));
    let got = ftp.retr_as_buffer("r.bin").unwrap().into_inner();
    assert_eq!(sha256(&got), sha256(&data));
    assert_eq!(ftp.size("r.bin").unwrap(), BIG);
    ftp.resume_transfer(BIG - 100).unwrap();
    let tail = ftp.retr_as_buffer("r.bin").unwrap().into_inner();
    assert_eq!(tail, data[BIG - 100..]);
    ftp.mkdir("x").unwrap();
    ftp.rename("r.bin", "x/r2.bin").unwrap();
    assert_eq!(ftp.nlst(Some("x")).unwrap(), vec!["x/r2.bin".to_string()]);
    let mlsd = ftp.mlsd(Some("x"));
    assert!(mlsd.is_err(), "vsftpd 3.0.3 has no MLSD; ftpgate must relay its refusal");
    ftp.rm("x/r2.bin").unwrap();
    ftp.rmdir("x").unwrap();
    assert_eq!(ftp.pwd().unwrap(), "/");
    ftp.quit().unwrap();
    gate.assert_drained();
}

#[test]
fn suppaftp_passive() {
    suppaftp_roundtrip(suppaftp::Mode::Passive, "127.0.0.1");
}

#[test]
fn suppaftp_extended_passive() {
    suppaftp_roundtrip(suppaftp::Mode::ExtendedPassive, "127.0.0.1");
}

#[test]
fn suppaftp_active() {
    suppaftp_roundtrip(suppaftp::Mode::Active, "127.0.0.1");
}

#[test]
fn suppaftp_extended_passive_ipv6() {
    suppaftp_roundtrip(suppaftp::Mode::ExtendedPassive, "::1");
}

/// 50 sessions at once, each with its own file up and down: all intact.
#[test]
fn fifty_concurrent_sessions() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let addr = gate.addr;
    let threads: Vec<_> = (0..50u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = payload(512 * 1024 + i as usize * 997, 100 + i);
                let mut ftp = suppaftp::FtpStream::connect(addr).unwrap();
                ftp.set_mode(if i % 2 == 0 { suppaftp::Mode::ExtendedPassive } else { suppaftp::Mode::Passive });
                ftp.login(USER, PASSWORD).unwrap();
                ftp.transfer_type(suppaftp::types::FileType::Binary).unwrap();
                let name = format!("c{i}.bin");
                ftp.put_file(&name, &mut std::io::Cursor::new(&data)).unwrap();
                let got = ftp.retr_as_buffer(&name).unwrap().into_inner();
                ftp.quit().unwrap();
                (name, sha256(&data), sha256(&got))
            })
        })
        .collect();
    for t in threads {
        let (name, want, got) = t.join().unwrap();
        assert_eq!(got, want, "{name} came back different");
        assert_eq!(sha256_file(&backend.root.join(&name)), want, "{name} differs on the backend");
    }
    gate.assert_drained();
    assert_eq!(ftpgate::metrics::Metrics::get(&gate.metrics.sessions_total), 50);
    assert_eq!(ftpgate::metrics::Metrics::get(&gate.metrics.transfers_ok), 100);
}
