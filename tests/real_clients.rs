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
