//! FTPS through ftpgate: every combination of client leg and backend leg with
//! real vsftpd (strict: TLS required, `require_ssl_reuse=YES`) and real clients,
//! plus the refusals: foreign TLS sessions, wrong client certificates,
//! untrusted backends, plaintext injected after AUTH.

mod common;
use common::*;
use ftpgate::config::{BackendTlsMode, ClientTlsMode};
use ftpgate::metrics::Metrics;
use ftpgate::tls::TlsVersion;
use std::path::Path;
use std::time::Duration;

const SIZE: usize = 3 * 1024 * 1024;

struct Setup {
    certs: TestCerts,
    backend: Vsftpd,
    gate: Gate,
}

fn setup(client: ClientTlsMode, backend_mode: BackendTlsMode, max: TlsVersion, reuse: bool) -> Setup {
    let certs = TestCerts::new();
    let conf = match backend_mode {
        BackendTlsMode::Off => String::new(),
        BackendTlsMode::Explicit => vsftpd_tls_conf(&certs, false),
        BackendTlsMode::Implicit => vsftpd_tls_conf(&certs, true),
    };
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &conf);
    let server = certs.server_options();
    let tweak_backend = backend_tls(&certs, backend_mode, max);
    let gate = Gate::start_with(backend.addr, move |s| {
        tweak_backend(s);
        s.listeners[0].tls = client;
        s.require_session_reuse = reuse;
        if client != ClientTlsMode::Off {
            s.client_tls = Some(server);
        }
    });
    Setup { certs, backend, gate }
}

fn curl_tls_args(s: &Setup, client: ClientTlsMode) -> (Vec<String>, String) {
    let ca = s.certs.path("ca.pem").display().to_string();
    let port = s.gate.addr.port();
    match client {
        ClientTlsMode::Off => (vec![], format!("ftp://127.0.0.1:{port}")),
        ClientTlsMode::Implicit => (vec!["--cacert".into(), ca], format!("ftps://127.0.0.1:{port}")),
        _ => (vec!["--ssl-reqd".into(), "--cacert".into(), ca], format!("ftp://127.0.0.1:{port}")),
    }
}

/// Upload and download through curl in the given data mode; both compared by hash.
fn curl_roundtrip(s: &Setup, client: ClientTlsMode, mode: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let data = payload(SIZE, 42);
    let src = work.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let (tls, url) = curl_tls_args(s, client);
    let mut args: Vec<String> = tls.clone();
    args.extend(mode.iter().map(|m| m.to_string()));
    let mut up = args.clone();
    up.extend(["-T".into(), src.display().to_string(), format!("{url}/up.bin")]);
    let out = curl(&up.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status, 0, "upload: {}", out.stderr);
    assert_eq!(sha256_file(&s.backend.root.join("up.bin")), sha256(&data), "backend copy differs");
    let dst = work.path().join("dst.bin");
    let mut down = args.clone();
    down.extend(["-o".into(), dst.display().to_string(), format!("{url}/up.bin")]);
    let out = curl(&down.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status, 0, "download: {}", out.stderr);
    assert_eq!(sha256_file(&dst), sha256(&data), "download differs");
}

fn check_resumption(s: &Setup, client: ClientTlsMode, backend: BackendTlsMode) {
    let m = &s.gate.metrics;
    if backend != BackendTlsMode::Off {
        assert!(Metrics::get(&m.tls_backend_data_resumed) >= 2, "backend data connections must resume");
        assert_eq!(Metrics::get(&m.tls_backend_data_full), 0, "no backend data connection may do a full handshake");
    }
    if client != ClientTlsMode::Off {
        assert!(Metrics::get(&m.tls_client_control) >= 1);
        assert!(Metrics::get(&m.tls_client_data_resumed) >= 2, "curl resumes on data connections");
    }
    s.gate.assert_drained();
}

/// Every TLS handshake on each leg negotiated the version the test names:
/// the backend leg's cap, and TLS 1.3 (rustls and curl's default) towards
/// the client.
fn check_versions(s: &Setup, client: ClientTlsMode, backend: BackendTlsMode, max: TlsVersion) {
    let m = &s.gate.metrics;
    let (want, other) = if max == TlsVersion::V12 { ("1.2", "1.3") } else { ("1.3", "1.2") };
    if backend != BackendTlsMode::Off {
        for leg in ["backend_control", "backend_data"] {
            assert!(m.tls_versions_for(leg, want) >= 1, "{leg} never negotiated TLS {want}");
            assert_eq!(m.tls_versions_for(leg, other), 0, "{leg} negotiated TLS {other}");
        }
    }
    if client != ClientTlsMode::Off {
        for leg in ["client_control", "client_data"] {
            assert!(m.tls_versions_for(leg, "1.3") >= 1, "{leg} never negotiated TLS 1.3");
            assert_eq!(m.tls_versions_for(leg, "1.2"), 0, "{leg} negotiated TLS 1.2");
        }
    }
}

macro_rules! matrix {
    ($($name:ident: $client:ident, $backend:ident, $max:ident, [$($mode:expr),*];)*) => {$(
        #[test]
        fn $name() {
            let s = setup(ClientTlsMode::$client, BackendTlsMode::$backend, TlsVersion::$max, true);
            curl_roundtrip(&s, ClientTlsMode::$client, &[$($mode),*]);
            check_resumption(&s, ClientTlsMode::$client, BackendTlsMode::$backend);
            check_versions(&s, ClientTlsMode::$client, BackendTlsMode::$backend, TlsVersion::$max);
        }
    )*};
}

matrix! {
    plain_to_explicit_tls13_epsv: Off, Explicit, V13, [];
    plain_to_explicit_tls12_pasv: Off, Explicit, V12, ["--disable-epsv"];
    plain_to_implicit_tls13_active: Off, Implicit, V13, ["-P", "-"];
    plain_to_implicit_tls12_epsv: Off, Implicit, V12, [];
    explicit_to_plain_epsv: Explicit, Off, V13, [];
    explicit_to_explicit_tls13_pasv: Explicit, Explicit, V13, ["--disable-epsv"];
    explicit_to_explicit_tls12_epsv: Explicit, Explicit, V12, [];
    explicit_to_implicit_epsv: Explicit, Implicit, V13, [];
    implicit_to_plain_pasv: Implicit, Off, V13, ["--disable-epsv"];
    implicit_to_explicit_epsv: Implicit, Explicit, V13, [];
    implicit_to_implicit_tls12_epsv: Implicit, Implicit, V12, [];
    required_to_explicit_epsv: Required, Explicit, V13, [];
}

fn lftp_tls(s: &Setup, url: &str, extra: &str) -> Output {
    let work = tempfile::tempdir().unwrap();
    let data = payload(SIZE, 7);
    let src = work.path().join("l.bin");
    std::fs::write(&src, &data).unwrap();
    let back = work.path().join("back.bin");
    let out = lftp(
        url,
        &format!(
            "set ftp:ssl-allow yes; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file {ca}; {extra}; \
             put {src} -o l.bin; get l.bin -o {back}; cls -1",
            ca = s.certs.path("ca.pem").display(),
            src = src.display(),
            back = back.display()
        ),
    );
    if out.status == 0 {
        let got = std::fs::metadata(&back).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            sha256_file(&back),
            sha256(&data),
            "lftp download differs ({extra}): got {got} bytes of {}, backend has {:?}",
            data.len(),
            std::fs::metadata(s.backend.root.join("l.bin")).map(|m| m.len())
        );
        assert_eq!(sha256_file(&s.backend.root.join("l.bin")), sha256(&data));
    }
    out
}

#[test]
fn lftp_explicit_both_legs_passive_and_active() {
    for passive in ["on", "off"] {
        let s = setup(ClientTlsMode::Explicit, BackendTlsMode::Explicit, TlsVersion::V13, true);
        let url = format!("ftp://127.0.0.1:{}", s.gate.addr.port());
        // lftp turns ssl-allow off in the harness defaults; this script turns it back on.
        let out = lftp_tls(&s, &url, &format!("set ftp:passive-mode {passive}"));
        assert_eq!(out.status, 0, "lftp passive={passive}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), "l.bin");
        check_resumption(&s, ClientTlsMode::Explicit, BackendTlsMode::Explicit);
    }
}

/// lftp (GnuTLS) presents the control connection's session on every data
/// connection, so a run of uploads, which get no new tickets, keeps resuming:
/// 12 files with `mput`, session reuse required on both legs.
#[test]
fn lftp_uploads_in_a_row_keep_resuming() {
    let s = setup(ClientTlsMode::Explicit, BackendTlsMode::Explicit, TlsVersion::V13, true);
    let work = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for i in 0..12 {
        let name = format!("m{i}.bin");
        std::fs::write(work.path().join(&name), payload(100_000 + i * 1000, i as u64)).unwrap();
        names.push(name);
    }
    let out = lftp(
        &format!("ftp://127.0.0.1:{}", s.gate.addr.port()),
        &format!(
            "set ftp:ssl-allow yes; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file {ca}; \
             lcd {dir}; mput {files}",
            ca = s.certs.path("ca.pem").display(),
            dir = work.path().display(),
            files = names.join(" ")
        ),
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(sha256_file(&s.backend.root.join(name)), sha256(&payload(100_000 + i * 1000, i as u64)), "{name}");
    }
    assert_eq!(Metrics::get(&s.gate.metrics.tls_client_data_resumed), 12);
    assert_eq!(Metrics::get(&s.gate.metrics.tls_client_data_full), 0);
    check_resumption(&s, ClientTlsMode::Explicit, BackendTlsMode::Explicit);
}

#[test]
fn lftp_implicit_to_plain() {
    let s = setup(ClientTlsMode::Implicit, BackendTlsMode::Off, TlsVersion::V13, true);
    let url = format!("ftps://127.0.0.1:{}", s.gate.addr.port());
    let out = lftp_tls(&s, &url, "set ftp:passive-mode on");
    assert_eq!(out.status, 0, "{}", out.stderr);
}

fn python_tls(s: &Setup, mode: &str, reuse: &str) -> serde_json::Value {
    python_tls_scenario(s, mode, reuse, "full")
}

fn python_tls_scenario(s: &Setup, mode: &str, reuse: &str, scenario: &str) -> serde_json::Value {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("big.bin"), payload(SIZE, 9)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ftplib_tls_client.py");
    let mut c = std::process::Command::new("python3");
    c.arg(script).args([
        "127.0.0.1",
        &s.gate.addr.port().to_string(),
        USER,
        PASSWORD,
        s.certs.path("ca.pem").to_str().unwrap(),
        mode,
        reuse,
        scenario,
        work.path().to_str().unwrap(),
    ]);
    let out = run_client(&mut c, std::time::Duration::from_secs(90));
    assert_eq!(out.status, 0, "{}", out.stderr);
    serde_json::from_str(out.stdout.trim()).unwrap()
}

#[test]
fn python_ftplib_with_session_reuse_through_strict_backend() {
    let s = setup(ClientTlsMode::Explicit, BackendTlsMode::Explicit, TlsVersion::V13, true);
    let v = python_tls(&s, "explicit", "yes");
    assert_eq!(v["retr"], "226 Transfer complete.", "{v}");
    assert_eq!(v["sha"], sha256(&payload(SIZE, 9)).as_str());
    check_resumption(&s, ClientTlsMode::Off, BackendTlsMode::Explicit);
}

/// After the data connection's handshake ftpgate sends nothing an uploading
/// client would leave unread (TLS 1.3 session tickets did: lftp then closed
/// with unread bytes, the kernel sent a reset and the end of the upload was
/// lost). Resuming and non-resuming clients, explicit and implicit.
#[test]
fn upload_data_connection_carries_nothing_the_client_must_read() {
    for (mode, client, reuse) in
        [("explicit", ClientTlsMode::Explicit, "yes"), ("implicit", ClientTlsMode::Implicit, "no")]
    {
        let s = setup(client, BackendTlsMode::Explicit, TlsVersion::V13, reuse == "yes");
        let v = python_tls_scenario(&s, mode, reuse, "upload-silence");
        assert_eq!(v["unread_after_upload"], 0, "{mode}: {v}");
        assert_eq!(v["stor"], "226 Transfer complete.", "{mode}: {v}");
        assert_eq!(sha256_file(&s.backend.root.join("tls.bin")), sha256(&payload(SIZE, 9)), "{mode}");
        assert_eq!(v["sha"], sha256(&payload(SIZE, 9)).as_str(), "{mode}: {v}");
    }
}

#[test]
fn stock_python_ftplib_works_when_reuse_is_optional() {
    // Stock ftplib never resumes: vsftpd with require_ssl_reuse refuses it
    // directly, ftpgate with reuse optional carries it.
    let s = setup(ClientTlsMode::Implicit, BackendTlsMode::Explicit, TlsVersion::V13, false);
    let v = python_tls(&s, "implicit", "no");
    assert_eq!(v["stor"], "226 Transfer complete.", "{v}");
    assert_eq!(v["sha"], sha256(&payload(SIZE, 9)).as_str());
    assert_eq!(Metrics::get(&s.gate.metrics.tls_client_data_full), 3, "STOR, RETR and NLST, none resumed");
}

#[test]
fn stock_python_ftplib_is_refused_when_reuse_is_required() {
    let s = setup(ClientTlsMode::Explicit, BackendTlsMode::Off, TlsVersion::V13, true);
    let v = python_tls(&s, "explicit", "no");
    let err = v["error"].as_str().unwrap_or_else(|| panic!("must fail: {v}"));
    assert!(err.starts_with("522") && err.contains("session reuse required"), "{err}");
    assert!(Metrics::get(&s.gate.metrics.tls_client_data_full) >= 1);
    assert!(
        !s.backend.root.join("tls.bin").exists()
            || std::fs::metadata(s.backend.root.join("tls.bin")).unwrap().len() == 0
    );
}

#[test]
fn another_clients_tls_session_is_refused_on_data_connections() {
    let s = setup(ClientTlsMode::Explicit, BackendTlsMode::Off, TlsVersion::V13, true);
    let v = python_tls(&s, "explicit", "foreign");
    let err = v["error"].as_str().unwrap_or_else(|| panic!("must fail: {v}"));
    assert!(err.starts_with("522"), "{err}");
}

#[test]
fn untrusted_backend_certificate_gives_421() {
    let other = TestCerts::new();
    let certs = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    // ftpgate trusts a different CA than the one that signed vsftpd's certificate.
    let gate = Gate::start_with(backend.addr, backend_tls(&other, BackendTlsMode::Explicit, TlsVersion::V13));
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220, "ftpgate greets; the backend is opened at PASS");
    assert_eq!(c.cmd(&format!("USER {USER}")).0, 331);
    let (code, text) = c.cmd(&format!("PASS {PASSWORD}"));
    assert_eq!(code, 421, "{text}");
    // Both test CAs share a name, so webpki reports the signature, not the issuer.
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(c.closed());
    gate.assert_drained();
}

#[test]
fn ftps_command_order_and_required_tls() {
    let s = setup(ClientTlsMode::Required, BackendTlsMode::Off, TlsVersion::V13, true);
    let mut c = RawClient::connect(s.gate.addr);
    assert_eq!(c.reply().0, 220);
    let (code, text) = c.cmd(&format!("USER {USER}"));
    assert_eq!(code, 530, "{text}");
    assert!(text.contains("AUTH TLS"), "{text}");
    assert_eq!(c.cmd("PBSZ 0").0, 530, "required listener: nothing but AUTH and friends before TLS");
    let (code, text) = c.cmd("FEAT");
    assert_eq!(code, 211);
    assert!(text.contains(" AUTH TLS\r\n") && text.contains(" PBSZ\r\n") && text.contains(" PROT\r\n"), "{text}");
    assert_eq!(c.cmd("AUTH KERBEROS").0, 504);
    // Plaintext pipelined behind AUTH TLS must not survive into the TLS session.
    c.send_raw(b"AUTH TLS\r\nUSER injected\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(c.closed());
    assert!(!s.backend.log().contains("injected"));

    let s = setup(ClientTlsMode::Explicit, BackendTlsMode::Off, TlsVersion::V13, true);
    let mut c = RawClient::connect(s.gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("PBSZ 0").0, 503, "PBSZ before AUTH");
    assert_eq!(c.cmd("PROT P").0, 503, "PROT before AUTH");
    assert_eq!(c.cmd("CCC").0, 534);

    let v = python_tls_scenario(&s, "explicit", "yes", "order");
    assert_eq!(v["auth"].as_str().unwrap()[..3], *"234", "{v}");
    assert!(v["prot_first"].as_str().unwrap().starts_with("503 PROT requires PBSZ first"), "{v}");
    assert_eq!(v["pbsz"], "200 PBSZ=0");
    assert!(v["prot"].as_str().unwrap().starts_with("200 "), "{v}");
}

#[test]
fn mutual_tls_checks_client_certificates() {
    let certs = TestCerts::new();
    let foreign = TestCerts::new();
    let backend = Vsftpd::start();
    backend.put("m.txt", b"mutual\n");
    let mut server = certs.server_options();
    server.client_ca = Some(certs.path("ca.pem"));
    let gate = Gate::start_with(backend.addr, move |s| {
        s.listeners[0].tls = ClientTlsMode::Implicit;
        s.client_tls = Some(server);
    });
    let url = format!("ftps://127.0.0.1:{}/m.txt", gate.addr.port());
    let ca = certs.path("ca.pem").display().to_string();
    let with = |c: &TestCerts| {
        curl(&[
            "--cacert",
            &ca,
            "--cert",
            c.path("client-alice.pem").to_str().unwrap(),
            "--key",
            c.path("client-alice.key").to_str().unwrap(),
            &url,
        ])
    };
    let good = with(&certs);
    assert_eq!(good.status, 0, "{}", good.stderr);
    assert_eq!(good.stdout, "mutual\n");
    let none = curl(&["--cacert", &ca, &url]);
    assert_ne!(none.status, 0, "no client certificate must be refused");
    let wrong = with(&foreign);
    assert_ne!(wrong.status, 0, "a certificate from another CA must be refused");
    assert!(Metrics::get(&gate.metrics.tls_client_failures) >= 2);
}

const UPLOADS_IN_A_ROW: usize = 8;

/// The suppaftp Rust client over rustls: explicit FTPS to ftpgate, TLS 1.3 to a
/// strict vsftpd. A 10 MiB upload checks that TLS data connections are closed
/// politely (close_notify, then EOF), so the backend keeps every byte.
#[test]
fn rust_client_explicit_ftps_10mib_upload_over_tls13() {
    let s = setup(ClientTlsMode::Explicit, BackendTlsMode::Explicit, TlsVersion::V13, true);
    let mut roots = rustls::RootCertStore::empty();
    for c in ftpgate::tls::load_certs(&s.certs.path("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = suppaftp::RustlsConnector::from(std::sync::Arc::new(config));
    let ftp = suppaftp::RustlsFtpStream::connect(s.gate.addr).unwrap();
    let mut ftp = ftp.into_secure(connector, "127.0.0.1").unwrap();
    ftp.set_mode(suppaftp::Mode::ExtendedPassive);
    ftp.login(USER, PASSWORD).unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary).unwrap();
    let data = payload(10 * 1024 * 1024, 77);
    for round in 0..3 {
        let name = format!("r{round}.bin");
        ftp.put_file(&name, &mut std::io::Cursor::new(&data)).unwrap();
        assert_eq!(sha256_file(&s.backend.root.join(&name)), sha256(&data), "round {round}: backend copy differs");
        let back = ftp.retr_as_buffer(&name).unwrap().into_inner();
        assert_eq!(sha256(&back), sha256(&data), "round {round}: download differs");
    }
    // rustls uses each TLS 1.3 ticket once, and upload connections carry no
    // tickets (see `SessionAcceptors::for_data`): the 8 tickets of the last
    // download last for 8 uploads in a row. The 9th cannot resume, the
    // session-reuse requirement refuses it with 522, and the session (control
    // connection and backend) goes on.
    let small = payload(64 * 1024, 78);
    for i in 0..UPLOADS_IN_A_ROW {
        ftp.put_file(format!("u{i}.bin"), &mut std::io::Cursor::new(&small))
            .unwrap_or_else(|e| panic!("upload {i}: {e}"));
    }
    assert_eq!(Metrics::get(&s.gate.metrics.tls_client_data_full), 0);
    let refused = ftp.put_file("one-too-many.bin", &mut std::io::Cursor::new(&small)).unwrap_err().to_string();
    assert_eq!(Metrics::get(&s.gate.metrics.tls_client_data_full), 1);
    // The refused connection might have been a thief's from the client's
    // address: the session waits a moment for its own before the 522.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Metrics::get(&s.gate.metrics.transfers_failed) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(Metrics::get(&s.gate.metrics.transfers_failed), 1);
    assert_eq!(Metrics::get(&s.gate.metrics.passive_tls_refused), 1);
    // suppaftp reports the 522, or the broken pipe when its first write lost
    // the race with the refusal (it may then leave the 522 unread).
    let mut next = ftp.noop().map(|_| "200".to_string()).unwrap_or_else(|e| e.to_string());
    if refused.contains("522") {
        assert!(refused.contains("session reuse required"), "{refused}");
    } else {
        assert!(refused.contains("Broken pipe") || refused.contains("reset"), "{refused}");
        if next.contains("522") {
            next = ftp.noop().map(|_| "200".to_string()).unwrap_or_else(|e| e.to_string());
        }
    }
    assert_eq!(next, "200", "the session goes on");
    ftp.quit().unwrap();
    check_resumption(&s, ClientTlsMode::Explicit, BackendTlsMode::Explicit);
    assert_eq!(Metrics::get(&s.gate.metrics.relays_spliced), 0, "TLS legs take the copy path");
    assert_eq!(Metrics::get(&s.gate.metrics.transfers_ok), 6 + UPLOADS_IN_A_ROW as u64);
}

/// ProFTPD's mod_tls refuses data connections that do not reuse the control
/// session by default. A plain client and an FTPS client both reach it through
/// ftpgate, with TLS 1.2 and TLS 1.3 on the backend leg.
#[test]
fn proftpd_backend_requires_reuse_and_gets_it() {
    for (max, client) in [(TlsVersion::V13, ClientTlsMode::Off), (TlsVersion::V12, ClientTlsMode::Explicit)] {
        let certs = TestCerts::new();
        let backend = Proftpd::start_tls(&certs);
        let server = certs.server_options();
        let tweak = backend_tls(&certs, BackendTlsMode::Explicit, max);
        let gate = Gate::start_with(backend.addr, move |s| {
            tweak(s);
            s.listeners[0].tls = client;
            s.client_tls = Some(server);
        });
        let work = tempfile::tempdir().unwrap();
        let data = payload(SIZE, 5);
        let src = work.path().join("p.bin");
        std::fs::write(&src, &data).unwrap();
        let ca = certs.path("ca.pem").display().to_string();
        let base = format!("ftp://127.0.0.1:{}", gate.addr.port());
        let tls: Vec<&str> = if client == ClientTlsMode::Off { vec![] } else { vec!["--ssl-reqd", "--cacert", &ca] };
        let up = curl(&[tls.clone(), vec!["-T", src.to_str().unwrap(), &format!("{base}/p.bin")]].concat());
        assert_eq!(up.status, 0, "{max:?}: {}\n{}", up.stderr, backend.log("tls.log"));
        assert_eq!(sha256_file(&backend.root.join("p.bin")), sha256(&data));
        let dst = work.path().join("back.bin");
        let down = curl(&[tls.clone(), vec!["-o", dst.to_str().unwrap(), &format!("{base}/p.bin")]].concat());
        assert_eq!(down.status, 0, "{}", down.stderr);
        assert_eq!(sha256_file(&dst), sha256(&data));
        let list = curl(&[tls, vec!["--list-only", &format!("{base}/")]].concat());
        assert_eq!(list.stdout.trim(), "p.bin", "{}", list.stderr);
        assert!(Metrics::get(&gate.metrics.tls_backend_data_resumed) >= 3);
        assert_eq!(Metrics::get(&gate.metrics.tls_backend_data_full), 0);
        gate.assert_drained();
    }
}

#[test]
fn mutual_tls_user_must_match_certificate() {
    let dir = tempfile::tempdir().unwrap();
    ftpgate::tls::certs::init(
        dir.path(),
        &["127.0.0.1".into()],
        ftpgate::tls::certs::Holders { clients: &[USER.into(), "alice".into()], connectors: &[] },
        false,
        ftpgate::tls::certs::KeyType::Ecdsa,
    )
    .unwrap();
    let backend = Vsftpd::start();
    backend.put("m.txt", b"matched\n");
    let p = |n: &str| dir.path().join(n);
    let server = ftpgate::tls::ServerTlsOptions {
        cert: p("server.pem"),
        key: p("server.key"),
        client_ca: Some(p("ca.pem")),
        min_version: TlsVersion::V12,
        cipher_suites: vec![],
    };
    let gate = Gate::start_with(backend.addr, move |s| {
        s.listeners[0].tls = ClientTlsMode::Required;
        s.client_tls = Some(server);
        s.client_cert_user_match = true;
    });
    let url = format!("ftp://127.0.0.1:{}/m.txt", gate.addr.port());
    let ca = p("ca.pem").display().to_string();
    let with = |name: &str| {
        curl(&[
            "--ssl-reqd",
            "--cacert",
            &ca,
            "--cert",
            p(&format!("client-{name}.pem")).to_str().unwrap(),
            "--key",
            p(&format!("client-{name}.key")).to_str().unwrap(),
            &url,
        ])
    };
    let good = with(USER);
    assert_eq!(good.status, 0, "{}", good.stderr);
    assert_eq!(good.stdout, "matched\n");
    let bad = with("alice");
    assert_eq!(bad.status, 67, "curl's 'login denied': {}", bad.stderr);
    assert_eq!(Metrics::get(&gate.metrics.logins_refused), 1);
    // The refused attempt's USER never reached the backend.
    assert_eq!(backend.log().matches(&format!("\"USER {USER}\"")).count(), 1, "{}", backend.log());
}

#[test]
fn backend_verification_by_fingerprint_server_name_or_explicitly_none() {
    use ftpgate::tls::{BackendTlsOptions, BackendVerify};
    let certs = TestCerts::new();
    let other = TestCerts::new();
    let backend = Vsftpd::start_with("127.0.0.1".parse().unwrap(), &vsftpd_tls_conf(&certs, false));
    backend.put("v.txt", b"verified\n");
    let der = ftpgate::tls::load_certs(&certs.path("server.pem")).unwrap().remove(0);
    let pin: String = sha256(der.as_ref());
    /// label, verification, server-name override, Ok or a text the 421 must contain.
    type Case = (&'static str, BackendVerify, Option<&'static str>, Result<(), &'static str>);
    let cases: Vec<Case> = vec![
        ("pinned", BackendVerify::Fingerprint(pin.clone()), None, Ok(())),
        ("wrong pin", BackendVerify::Fingerprint("00".repeat(32)), None, Err("pinned SHA-256 fingerprint")),
        ("server name in SAN", BackendVerify::CaFile(certs.path("ca.pem")), Some("localhost"), Ok(())),
        (
            "server name not in SAN",
            BackendVerify::CaFile(certs.path("ca.pem")),
            Some("wrong.example"),
            Err("not valid for name \"wrong.example\""),
        ),
        ("insecure", BackendVerify::Insecure, None, Ok(())),
        ("other CA", BackendVerify::CaFile(other.path("ca.pem")), None, Err("invalid peer certificate")),
    ];
    for (label, verify, name, want) in cases {
        let gate = Gate::start_with(backend.addr, move |s| {
            s.backend_tls = BackendTlsMode::Explicit;
            s.backend_tls_options =
                BackendTlsOptions { verify, server_name: name.map(str::to_string), max_version: TlsVersion::V13 };
        });
        let out = curl(&[&format!("ftp://127.0.0.1:{}/v.txt", gate.addr.port())]);
        match want {
            Ok(()) => {
                assert_eq!(out.status, 0, "{label}: {}", out.stderr);
                assert_eq!(out.stdout, "verified\n", "{label}");
            }
            Err(text) => {
                let mut c = RawClient::connect(gate.addr);
                assert_eq!(c.reply().0, 220);
                assert_eq!(c.cmd(&format!("USER {USER}")).0, 331);
                let (code, reply) = c.cmd(&format!("PASS {PASSWORD}"));
                assert_eq!(code, 421, "{label}: {reply}");
                assert!(reply.contains(text), "{label}: {reply}");
            }
        }
    }
}
