//! The deployment files, checked with the tools that will read them: systemd,
//! nft, HAProxy, promtool; the dashboard and alert rules may only name metrics
//! ftpgate exports; the Kubernetes ConfigMap holds a valid configuration.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

fn check(cmd: &mut Command) {
    let out = run_client(cmd, Duration::from_secs(60));
    assert_eq!(out.status, 0, "{cmd:?}\n{}\n{}", out.stdout, out.stderr);
}

/// Metric family names in the exporter's output. A labelled family appears
/// once it has a series, so give the by-rule denials one.
fn exported() -> BTreeSet<String> {
    let m = ftpgate::metrics::Metrics::default();
    m.count_denial("rule example");
    m.transfer("file", "ok");
    m.backend_error("closed");
    m.session_opened("127.0.0.1:21".parse().unwrap(), "off");
    m.count_command("RETR", "allowed");
    let text = ftpgate::exporter::render(&m);
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().to_string()).collect()
}

fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("ftpgate_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string("deploy/ftpgate.service").unwrap();
    // verify insists that ExecStart exists; point it at the binary under test.
    let unit = unit.replace("/usr/local/bin/ftpgate", env!("CARGO_BIN_EXE_ftpgate"));
    let path = dir.path().join("ftpgate.service");
    std::fs::write(&path, unit).unwrap();
    let out = run_client(Command::new("systemd-analyze").arg("verify").arg(&path), Duration::from_secs(60));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("ftpgate.service:"), "warnings about the unit: {}", out.stderr);
}

#[test]
fn nftables_haproxy_and_prometheus_files_are_accepted() {
    check(Command::new("nft").args(["-c", "-f", "deploy/nftables.conf"]));
    check(Command::new("haproxy").args(["-c", "-f", "deploy/haproxy.cfg"]));
    check(Command::new("promtool").args(["check", "config", "deploy/prometheus/prometheus.yml"]));
    check(Command::new("promtool").args(["check", "rules", "deploy/prometheus/alerts.yml"]));
}

#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("ftpgate_transfers_total"), "{exported:?}");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/ftpgate-dashboard.json").unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(exprs.len() >= 10);
    let alerts = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    for text in exprs.iter().map(String::as_str).chain([alerts.as_str()]) {
        for name in names_in(text) {
            assert!(exported.contains(&name), "{name} is not exported by ftpgate (in {text})");
        }
    }
}

#[test]
fn kubernetes_configmap_holds_a_valid_configuration() {
    let yaml = std::fs::read_to_string("deploy/kubernetes/ftpgate.yaml").unwrap();
    let start = yaml.find("ftpgate.toml: |\n").unwrap() + "ftpgate.toml: |\n".len();
    let block: String = yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let config = ftpgate::config::Config::from_toml(&block, "configmap").unwrap();
    let s = config.validate().unwrap();
    assert_eq!(s.passive_ports.len(), 5);
    for port in s.passive_ports.min..=s.passive_ports.max {
        assert!(yaml.contains(&format!("port: {port}")), "Service must expose passive port {port}");
    }
}

/// Field names of the structs that derive `Deserialize` in a Rust source
/// file, with serde renames applied: the keys a configuration file can hold.
fn config_keys(source: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut deserialize = false;
    let mut in_struct = false;
    let mut rename: Option<String> = None;
    for line in source.lines() {
        let t = line.trim();
        if t.starts_with("#[derive(") {
            deserialize = t.contains("Deserialize");
        } else if (t.starts_with("pub struct ") || t.starts_with("struct ")) && t.ends_with('{') {
            in_struct = deserialize;
        } else if in_struct && t == "}" {
            in_struct = false;
        } else if in_struct && t.starts_with("#[serde(") && t.contains("rename = \"") {
            rename = t.split("rename = \"").nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
        } else if in_struct && !t.starts_with("//") && !t.starts_with("#[") && t.contains(':') {
            let name = t.trim_start_matches("pub ").split(':').next().unwrap_or("").trim().to_string();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push(rename.take().unwrap_or(name));
            }
        }
    }
    keys
}

fn mentions(example: &str, key: &str) -> bool {
    example.lines().any(|l| {
        let l = l.trim_start_matches(['#', ' ']);
        l.starts_with(&format!("{key} ="))
            || l.starts_with(&format!("[{key}]"))
            || l.starts_with(&format!("[[{key}]]"))
            || l.starts_with(&format!("[{key}."))
    })
}

/// The shipped examples document every key the configuration and policy
/// formats accept (commented out where optional): adding a field without
/// documenting it fails here.
#[test]
fn examples_document_every_setting() {
    for (source, example, name) in [
        (
            concat!(include_str!("../src/config/mod.rs"), include_str!("../src/config/backend.rs")),
            include_str!("../deploy/ftpgate.toml"),
            "deploy/ftpgate.toml",
        ),
        (include_str!("../src/policy/model.rs"), include_str!("../policy/example.toml"), "policy/example.toml"),
    ] {
        let keys = config_keys(source);
        assert!(keys.len() > 20, "parsed too few keys: {keys:?}");
        let missing: Vec<&String> = keys.iter().filter(|k| !mentions(example, k)).collect();
        assert!(missing.is_empty(), "{name} does not document: {missing:?}");
    }
}
