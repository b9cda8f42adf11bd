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
    m.scanned("infected");
    let text = ftpgate::server::exporter::render(&m);
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
fn systemd_units_verify() {
    // The template is verified as one of its instances.
    for (file, as_name) in [
        ("deploy/ftpgate.service", "ftpgate.service"),
        ("deploy/cluster/ftpgate@.service", "ftpgate@a.service"),
        ("deploy/connector/ftpgate-connector.service", "ftpgate-connector.service"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let unit = std::fs::read_to_string(file).unwrap();
        // verify insists that ExecStart exists; point it at the binary under test.
        let unit = unit.replace("/usr/local/bin/ftpgate", env!("CARGO_BIN_EXE_ftpgate"));
        let path = dir.path().join(as_name);
        std::fs::write(&path, unit).unwrap();
        // verify runs `man` for Documentation=man:ftpgate(1): give it the page
        // the package installs.
        std::fs::create_dir(dir.path().join("man1")).unwrap();
        let page = run_client(Command::new(env!("CARGO_BIN_EXE_ftpgate")).arg("man"), Duration::from_secs(20));
        std::fs::write(dir.path().join("man1/ftpgate.1"), page.stdout).unwrap();
        let mut verify = Command::new("systemd-analyze");
        verify.arg("verify").arg(&path).env("MANPATH", dir.path());
        let out = run_client(&mut verify, Duration::from_secs(60));
        assert_eq!(out.status, 0, "{file}: {}", out.stderr);
        assert!(!out.stderr.contains(&format!("{as_name}:")), "warnings about {file}: {}", out.stderr);
    }
}

/// The two-instance examples: each configuration is valid, the passive
/// ranges are disjoint and are the ones HAProxy forwards, and every instance
/// shares one Redis and prefix.
#[test]
fn cluster_examples_fit_together() {
    let haproxy = std::fs::read_to_string("deploy/haproxy.cfg").unwrap();
    let mut seen = Vec::new();
    for name in ["a", "b"] {
        let path = format!("deploy/cluster/{name}.toml");
        let config = ftpgate::config::Config::load(std::path::Path::new(&path)).unwrap();
        let s = config.validate().unwrap_or_else(|e| panic!("{path}: {e}"));
        let cluster = s.cluster.clone().expect("[cluster] set");
        let range = format!("{}-{}", s.passive_ports.min, s.passive_ports.max);
        assert!(haproxy.contains(&format!("bind :{range}")), "haproxy.cfg forwards {range} ({path})");
        assert!(s.listeners.iter().all(|l| l.proxy_protocol), "{path}: HAProxy sends PROXY headers");
        seen.push((s.passive_ports, cluster.address, cluster.prefix));
    }
    assert!(seen[0].0.max < seen[1].0.min || seen[1].0.max < seen[0].0.min, "disjoint passive ranges");
    assert_eq!((&seen[0].1, &seen[0].2), (&seen[1].1, &seen[1].2), "one Redis and prefix");

    // Kubernetes: one Deployment, ConfigMap and passive Service per instance.
    let yaml = std::fs::read_to_string("deploy/kubernetes/ftpgate-cluster.yaml").unwrap();
    let mut ranges = Vec::new();
    for doc in yaml.split("\n---\n") {
        let Some(start) = doc.find("ftpgate.toml: |\n") else { continue };
        let block: String = doc[start + "ftpgate.toml: |\n".len()..]
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let s = ftpgate::config::Config::from_toml(&block, "configmap").unwrap().validate().unwrap();
        assert_eq!(s.cluster.as_ref().unwrap().address, "ftpgate-redis:6379");
        ranges.push(s.passive_ports);
    }
    assert_eq!(ranges.len(), 2);
    assert!(ranges[0].max < ranges[1].min, "disjoint passive ranges");
    for (range, name) in ranges.iter().zip(["a", "b"]) {
        let service = yaml.split("\n---\n").find(|d| d.contains(&format!("name: ftpgate-{name}-passive"))).unwrap();
        for port in range.min..=range.max {
            assert!(service.contains(&format!("port: {port}}}")), "ftpgate-{name}-passive must expose {port}");
        }
    }
}

#[test]
fn nftables_haproxy_and_prometheus_files_are_accepted() {
    check(Command::new("nft").args(["-c", "-f", "deploy/nftables.conf"]));
    check(Command::new("nft").args(["-c", "-f", "deploy/connector/nftables-private.conf"]));
    check(Command::new("nft").args(["-c", "-f", "deploy/connector/nftables-edge.conf"]));
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
    assert_eq!(s.passive_ports.len(), 8, "the documented 8 shared ports");
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
            concat!(
                include_str!("../src/config/mod.rs"),
                include_str!("../src/config/backend.rs"),
                include_str!("../src/config/cluster.rs"),
                include_str!("../src/config/limits.rs"),
                include_str!("../src/config/scan.rs")
            ),
            include_str!("../deploy/ftpgate.toml"),
            "deploy/ftpgate.toml",
        ),
        (include_str!("../src/policy/model.rs"), include_str!("../policy/example.toml"), "policy/example.toml"),
        (
            include_str!("../src/config/connector.rs"),
            concat!(include_str!("../deploy/ftpgate.toml"), include_str!("../deploy/connector/connector.toml")),
            "deploy/ftpgate.toml and deploy/connector/connector.toml",
        ),
    ] {
        let keys = config_keys(source);
        assert!(keys.len() > 15, "parsed too few keys: {keys:?}");
        let missing: Vec<&String> = keys.iter().filter(|k| !mentions(example, k)).collect();
        assert!(missing.is_empty(), "{name} does not document: {missing:?}");
    }
}

/// docs/ARCHITECTURE.md is the map of the house: every file or folder it
/// names in backticks (from the repository root, or under src/) exists, so
/// a move or a rename cannot leave it pointing at nothing.
#[test]
fn architecture_doc_names_only_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    for (i, chunk) in text.split('`').enumerate() {
        // Odd chunks are inside backticks.
        if i % 2 == 0 || chunk.contains(' ') {
            continue;
        }
        let path = chunk.trim_end_matches('/');
        let looks_like_a_path = chunk.ends_with(".rs") || chunk.ends_with(".md") || chunk.ends_with('/');
        if !looks_like_a_path {
            continue;
        }
        let found = [root.join(path), root.join("src").join(path)].iter().any(|p| p.exists());
        assert!(found, "docs/ARCHITECTURE.md names `{chunk}`, which is neither in the repository nor under src/");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} paths found: the check no longer reads the document");
}

/// The connector examples: the edge's configuration is valid and needs the
/// connector the connector's configuration names; that one is valid too.
#[test]
fn connector_examples_are_valid_and_agree() {
    let edge = ftpgate::config::Config::load(std::path::Path::new("deploy/connector/edge.toml")).unwrap();
    let s = edge.validate().unwrap();
    let needed = s.connectors.expect("[connectors]").names;
    let text = std::fs::read_to_string("deploy/connector/connector.toml").unwrap();
    let file: ftpgate::config::ConnectorFile = toml::from_str(&text).unwrap();
    let c = file.connector.validate().unwrap();
    assert_eq!(needed, vec![c.name.clone()]);
    assert_eq!(c.edge.rsplit(':').next(), Some("7443"));
    assert_eq!(c.links, 2);
    assert_eq!(c.ports, Some((50000, 50100)));
}
