//! The benchmark script in its tiny mode, so it cannot rot. Nothing here is
//! timed: the run must complete and print a number for every row.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn benchmark_script_runs_in_tiny_mode() {
    let out = run_client(
        Command::new("python3").args(["benches/run.py", "--tiny"]).env("FTPGATE_BIN", env!("CARGO_BIN_EXE_ftpgate")),
        Duration::from_secs(600),
    );
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    for row in [
        "1. plain/plain: direct",
        "1. plain/plain: ftpgate",
        "2. plain client, TLS backend: ftpgate",
        "3. TLS/TLS: direct FTPS",
        "3. TLS/TLS: ftpgate",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("no row {row}:\n{}", out.stdout));
        let cells: Vec<f64> = line.split('|').filter_map(|c| c.trim().parse().ok()).collect();
        assert!(cells.len() == 2 && cells.iter().all(|v| *v > 0.0), "{line}");
    }
    assert!(out.stdout.contains("ftpgate / direct, plain"), "{}", out.stdout);
}
