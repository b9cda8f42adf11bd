//! Configuration parsing and validation.
use super::*;

#[test]
fn durations_take_units() {
    let c = Config::from_toml("[timeouts]\nidle_control = \"15m\"\nlogin = \"30s\"\ndrain = 5\n", "t").unwrap();
    assert_eq!((c.timeouts.idle_control, c.timeouts.login, c.timeouts.drain), (900, 30, 5));
    let e = Config::from_toml("[timeouts]\nlogin = \"30 parsecs\"\n", "t").unwrap_err().to_string();
    assert!(e.contains("unknown unit"), "{e}");
    assert_eq!(with_ftp_port("ftp.internal"), "ftp.internal:21");
    assert_eq!(with_ftp_port("::1"), "[::1]:21");
    assert_eq!(with_ftp_port("10.0.0.1:2121"), "10.0.0.1:2121");
}

#[test]
fn shipped_example_is_valid() {
    let text = include_str!("../../deploy/ftpgate.toml");
    let s = Config::from_toml(text, "deploy/ftpgate.toml").unwrap().validate().unwrap();
    assert_eq!(s.passive_ports, PortRange { min: 50000, max: 50007 });
}

#[test]
fn unknown_field_names_field_and_line() {
    let err = Config::from_toml("[passive]\nports = \"1-2\"\nportz = 3\n", "x.toml").unwrap_err().to_string();
    assert!(err.contains("portz") && err.contains("line 3"), "{err}");
}

#[test]
fn validation_names_field() {
    let c = Config::from_toml(
        "[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"h:21\"\n[passive]\nports = \"6000-5000\"\n",
        "x",
    )
    .unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.starts_with("passive.ports:"), "{err}");
    let c =
        Config::from_toml("[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"nohost:notaport\"\n", "x")
            .unwrap();
    assert!(c.validate().unwrap_err().to_string().starts_with("backend.address:"));
    let c = Config::from_toml("[backend]\naddress = \"h:21\"\n", "x").unwrap();
    assert!(c.validate().unwrap_err().to_string().starts_with("listener:"));
    let c = Config::from_toml(
        "[[listener]]\naddress = \"127.0.0.1:990\"\ntls = \"implicit\"\n[backend]\naddress = \"h:21\"\n",
        "x",
    )
    .unwrap();
    assert!(c.validate().unwrap_err().to_string().starts_with("tls.cert:"));
    let c = Config::from_toml(
        "[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"h:21\"\nfingerprint = \"ab\"\n",
        "x",
    )
    .unwrap();
    assert!(c.validate().unwrap_err().to_string().starts_with("backend.fingerprint:"));
    let err = Config::from_toml("[[listener]]\naddress = \"127.0.0.1:21\"\ntls = \"sometimes\"\n", "x").unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
}

/// The defaults the README and the example promise, asserted as defaults
/// (nothing set by the test): session reuse required, 50 sessions per
/// address, login within 60 s, 10 bad commands before login (100 after),
/// IPv6 counted per /64, the /status page on, TLS 1.2 at most towards
/// backends.
#[test]
fn documented_defaults_hold() {
    let minimal = "[[listener]]\naddress = \"127.0.0.1:2121\"\n\n[backend]\naddress = \"127.0.0.1:21\"\n";
    let s = Config::from_toml(minimal, "t").unwrap().validate().unwrap();
    assert!(s.require_session_reuse, "require_session_reuse is on by default");
    assert_eq!(s.max_sessions_per_address, 50);
    assert_eq!(s.login_timeout, Duration::from_secs(60));
    assert_eq!((s.max_bad_commands, s.max_bad_commands_after_login), (10, 100));
    assert_eq!(s.ipv6_prefix, 64);
    assert!(s.status_page);
    assert_eq!(s.backend_tls_options.max_version, crate::tls_options::TlsVersion::V12, "TLS 1.2 towards backends");
    assert!(s.listeners.iter().all(|l| !l.proxy_protocol && !l.proxy_from.trusts("127.0.0.1".parse().unwrap())));
}

#[test]
fn keys_are_found_in_their_tables() {
    let text = "policy = \"p.toml\"\n\n[[listener]]\naddress = \"127.0.0.1:21\"\n\n[passive]\n# ports = \"1-2\"\nports = \"60000-50000\"\n\n[tls]\ncert = \"c.pem\"\n";
    assert_eq!(super::line_of_key(text, "policy"), Some(1));
    assert_eq!(super::line_of_key(text, "passive.ports"), Some(8), "not the comment");
    assert_eq!(super::line_of_key(text, "tls.cert (--cert)"), Some(11));
    assert_eq!(super::line_of_key(text, "listener.address"), Some(4));
    assert_eq!(super::line_of_key(text, "listener"), Some(3));
    assert_eq!(super::line_of_key(text, "tls.key"), None, "a default or a flag has no line");
}

#[test]
fn scan_section_is_checked() {
    let base = "[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"h:21\"\n";
    let ok = Config::from_toml(&format!("{base}[scan]\nclamd = \"unix:/run/clamav/clamd.ctl\"\n"), "x.toml")
        .unwrap()
        .validate()
        .unwrap();
    let scan = ok.scan.unwrap();
    assert_eq!(scan.scanner.to_string(), "clamd at unix:/run/clamav/clamd.ctl");
    assert!(scan.reject_on_error && scan.reject_oversize, "secure defaults");
    assert_eq!((scan.timeout.as_secs(), scan.max_size), (30, 25 << 20));
    assert!(Config::from_toml(base, "x.toml").unwrap().validate().unwrap().scan.is_none());
    for (bad, key) in [
        ("clamd = \"http://x\"", "scan.clamd"),
        ("clamd = \"tcp:clamav:3310\"", "scan.clamd"),
        ("clamd = \"unix:\"", "scan.clamd"),
        ("clamd = \"tcp:127.0.0.1:3310\"\ntimeout = 0", "scan.timeout"),
        ("icap = \"http://x/avscan\"", "scan.icap"),
        ("icap = \"icap://x:99999/avscan\"", "scan.icap"),
        ("icap = \"icap://x:1344/\"", "scan.icap"),
        ("icap = \"icap://x/avscan\"\nclamd = \"unix:/c\"", "scan.icap"),
    ] {
        let err = Config::from_toml(&format!("{base}[scan]\n{bad}\n"), "x.toml").unwrap().validate().unwrap_err();
        assert!(err.to_string().starts_with(&format!("{key}:")), "{bad}: {err}");
    }
    let icap = Config::from_toml(&format!("{base}[scan]\nicap = \"icap://127.0.0.1/avscan\"\n"), "x.toml")
        .unwrap()
        .validate()
        .unwrap()
        .scan
        .unwrap();
    assert_eq!(icap.scanner.to_string(), "ICAP service icap://127.0.0.1:1344/avscan");
    let err = Config::from_toml(&format!("{base}[scan]\non_error = \"ignore\"\n"), "x.toml").unwrap_err().to_string();
    assert!(err.contains("on_error") || err.contains("ignore"), "{err}");
}

#[test]
fn connector_backends_need_a_place_to_dial_in() {
    let base = "[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"connector:dc1\"\n";
    let err =
        |extra: &str| Config::from_toml(&format!("{base}{extra}"), "x").unwrap().validate().unwrap_err().to_string();
    assert!(err("").starts_with("connectors.listen:"), "{}", err(""));
    let listen = "[connectors]\nlisten = \"127.0.0.1:7443\"\n";
    assert!(err(listen).starts_with("connectors.ca:"), "{}", err(listen));
    let no_cert = format!("{listen}ca = \"ca.pem\"\n");
    assert!(err(&no_cert).starts_with("connectors.cert:"), "{}", err(&no_cert));
    let ok = format!(
        "{listen}ca = \"ca.pem\"\ncert = \"s.pem\"\nkey = \"s.key\"\n[backends.b]\naddress = \"connector:dc2\"\n"
    );
    let s = Config::from_toml(&format!("{base}{ok}"), "x").unwrap().validate().unwrap();
    assert_eq!(s.connectors.unwrap().names, vec!["dc1".to_string(), "dc2".to_string()]);
    let bad = "[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"connector:a b\"\n";
    let e = Config::from_toml(bad, "x").unwrap().validate().unwrap_err().to_string();
    assert!(e.starts_with("backend.address:"), "{e}");
    // A listener for connectors no backend uses is a mistake, not a default.
    let unused = "[[listener]]\naddress = \"127.0.0.1:21\"\n[backend]\naddress = \"h:21\"\n[connectors]\nlisten = \"127.0.0.1:7443\"\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n";
    let e = Config::from_toml(unused, "x").unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("no backend uses a connector"), "{e}");
}

#[test]
fn connector_settings_are_checked() {
    let ok = ConnectorConfig {
        edge: Some("edge.example.com:7443".into()),
        name: Some("dc1".into()),
        backend: Some("10.0.0.5".into()),
        cert: Some("c.pem".into()),
        key: Some("c.key".into()),
        ca: Some("ca.pem".into()),
        ..ConnectorConfig::default()
    };
    let s = ok.validate().unwrap();
    assert_eq!(
        (s.edge_name.as_str(), s.backend.as_str(), s.links, s.ports),
        ("edge.example.com", "10.0.0.5:21", 2, None)
    );
    let field = |c: ConnectorConfig| c.validate().unwrap_err().0;
    assert_eq!(field(ConnectorConfig { edge: Some("nohost".into()), ..ok.clone() }), "connector.edge");
    assert_eq!(field(ConnectorConfig { name: Some("a b".into()), ..ok.clone() }), "connector.name");
    assert_eq!(field(ConnectorConfig { ca: None, ..ok.clone() }), "connector.ca");
    assert_eq!(field(ConnectorConfig { backend_ports: Some("9-1".into()), ..ok.clone() }), "connector.backend_ports");
    assert_eq!(field(ConnectorConfig { links: Some(0), ..ok.clone() }), "connector.links");
    let pinned = ConnectorConfig { ca: None, edge_fingerprint: Some("ab".repeat(32)), ..ok };
    assert!(pinned.validate().unwrap().fingerprint.is_some());
}
