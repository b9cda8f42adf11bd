//! The `ftpgate` binary as an operator runs it: `check` on good and bad files,
//! `run` from flags alone in front of a real vsftpd, and the quickstart script.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ftpgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ftpgate"))
}

#[test]
fn check_accepts_the_shipped_example() {
    let out = run_client(ftpgate().args(["check", "--config", "deploy/ftpgate.toml"]), Duration::from_secs(20));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("listen 0.0.0.0:21 (plain FTP)"), "{}", out.stdout);
    assert!(out.stdout.contains("listen [::]:21 (plain FTP)"), "{}", out.stdout);
    assert!(out.stdout.contains("passive ports 50000-60000"), "{}", out.stdout);
}

#[test]
fn check_names_field_and_line_of_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[[listener]]\naddress = \"127.0.0.1:2121\"\n\n[backend]\naddress = \"127.0.0.1:21\"\ntimeout = 5\n",
    )
    .unwrap();
    let out = run_client(ftpgate().args(["check", "--config", p.to_str().unwrap()]), Duration::from_secs(20));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("line 6") && out.stderr.contains("timeout"), "{}", out.stderr);

    std::fs::write(
        &p,
        "[[listener]]\naddress = \"127.0.0.1:2121\"\n[backend]\naddress = \"h:21\"\n[passive]\nports = \"9-3\"\n",
    )
    .unwrap();
    let out = run_client(ftpgate().args(["check", "--config", p.to_str().unwrap()]), Duration::from_secs(20));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("passive.ports"), "{}", out.stderr);

    let out = run_client(ftpgate().args(["check", "--listen", "127.0.0.1:2121"]), Duration::from_secs(20));
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("backend.address"), "{}", out.stderr);
}

#[test]
fn run_from_flags_alone() {
    let backend = Vsftpd::start();
    backend.put("hello.txt", b"hello through ftpgate\n");
    let port = free_port("127.0.0.1".parse().unwrap());
    let range = port_range(50);
    let mut child = ftpgate()
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--backend",
            &backend.addr.to_string(),
            "--passive-ports",
            &format!("{}-{}", range.min, range.max),
            "--public-address",
            "127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_greeting(format!("127.0.0.1:{port}").parse().unwrap());
    let out = curl(&["--disable-epsv", &format!("ftp://127.0.0.1:{port}/hello.txt")]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hello through ftpgate\n");
}

#[test]
fn quickstart_script_works() {
    let out = run_client(
        Command::new("bash")
            .args(["scripts/quickstart.sh", "--check"])
            .env("FTPGATE_BIN", env!("CARGO_BIN_EXE_ftpgate")),
        Duration::from_secs(300),
    );
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("quickstart check passed"), "{}", out.stdout);
}
