//! Table-driven tests of the engine: every rule kind, path tricks, ordering.

use super::*;

const CUSTOMER: &str = r#"
# The first customer: two users on one folder.
[[network]]
name = "office"
cidrs = ["10.0.0.0/8", "127.0.0.1"]

[[network]]
name = "internet"
cidrs = ["0.0.0.0/0", "::/0"]
tls_before_user = true
prot_p_required = true
deny_commands = ["SITE", "PORT", "EPRT"]

[[network]]
name = "blocked"
cidrs = ["192.0.2.0/24"]
action = "deny"

[groups]
staff = ["full"]

[[rule]]
name = "staff-all"
groups = ["staff"]
paths = ["/shared/**"]
allow = ["all"]

[[rule]]
name = "writer-upload"
users = ["writer"]
paths = ["/shared/**"]
allow = ["write"]

[users.writer]
deny_commands = ["SITE"]

[defaults]
permissions = []
"#;

fn policy() -> Policy {
    Policy::from_toml(CUSTOMER, "customer.toml").unwrap()
}

struct View {
    net: &'static str,
    tls: bool,
    pbsz: bool,
    prot: bool,
    cert: bool,
    user: Option<&'static str>,
    logged_in: bool,
    cwd: &'static [u8],
    previous: Option<Verb>,
    data_ready: bool,
}

impl View {
    fn user(u: &'static str) -> View {
        View {
            net: "office",
            tls: true,
            pbsz: true,
            prot: true,
            cert: false,
            user: Some(u),
            logged_in: true,
            cwd: b"/shared",
            previous: None,
            data_ready: true,
        }
    }
}

fn eval(p: &Policy, v: &View, line: &[u8]) -> Verdict {
    let net = p.networks.iter().find(|n| n.name == v.net).unwrap();
    let view = SessionView {
        network: net,
        tls: v.tls,
        pbsz: v.pbsz,
        prot_private: v.prot,
        client_cert: v.cert,
        user: v.user,
        logged_in: v.logged_in,
        cwd: v.cwd,
        previous: v.previous.as_ref(),
        data_ready: v.data_ready,
    };
    p.evaluate(&view, &Command::parse(line).unwrap())
}

fn code(v: &Verdict) -> u16 {
    match v {
        Verdict::Allow => 0,
        Verdict::AllowIfNew { .. } => 1,
        Verdict::Deny(d) => d.code,
    }
}

#[test]
fn first_customer_permissions() {
    let p = policy();
    let full = View::user("full");
    let writer = View::user("writer");
    // (view, command, expected code: 0 allow, 1 allow if new, else the denial code)
    let cases: &[(&View, &[u8], u16)] = &[
        (&full, b"RETR a.csv", 0),
        (&full, b"STOR a.csv", 0),
        (&full, b"LIST", 0),
        (&full, b"DELE a.csv", 0),
        (&full, b"RNFR a.csv", 0),
        (&full, b"MKD new", 0),
        (&full, b"RMD new", 0),
        (&full, b"RETR /etc/passwd", 550),
        (&full, b"RETR ../../etc/passwd", 550),
        (&writer, b"STOR in.csv", 1),
        (&writer, b"STOU", 0),
        (&writer, b"APPE in.csv", 1),
        (&writer, b"RETR in.csv", 550),
        (&writer, b"LIST", 550),
        (&writer, b"LIST -la", 550),
        (&writer, b"NLST /shared", 550),
        (&writer, b"MLSD", 550),
        (&writer, b"SIZE in.csv", 550),
        (&writer, b"DELE in.csv", 550),
        (&writer, b"RNFR in.csv", 550),
        (&writer, b"MKD d", 550),
        (&writer, b"SITE CHMOD 777 in.csv", 534),
        (&writer, b"STOR ../outside.csv", 550),
        (&writer, b"STOR //shared/../etc/x", 550),
        (&writer, b"STOR /shared/./sub/../x.csv", 1),
        (&writer, b"CWD /etc", 0),
        (&writer, b"PWD", 0),
    ];
    for (v, line, want) in cases {
        let got = eval(&p, v, line);
        assert_eq!(code(&got), *want, "{} {:?}: {got:?}", v.user.unwrap(), String::from_utf8_lossy(line));
    }
    // The denial names the rule and the resolved path.
    let Verdict::Deny(d) = eval(&p, &writer, b"RETR ./x/../in.csv") else { panic!() };
    assert_eq!(d.reason, "Permission denied: user writer may not read /shared/in.csv (rule writer-upload)");
    // Users no rule names get [defaults]: nothing here.
    let Verdict::Deny(d) = eval(&p, &View::user("stranger"), b"RETR a") else { panic!() };
    assert_eq!(d.rule, "default");
}

#[test]
fn path_tricks_do_not_escape() {
    let p = Policy::from_toml(
        "[[rule]]\nname = \"pub\"\nusers = [\"u\"]\npaths = [\"/pub/**\"]\nallow = [\"read\"]\n",
        "t",
    )
    .unwrap();
    let mut v = View::user("u");
    v.net = "any";
    v.cwd = b"/pub";
    let cases: &[(&[u8], u16)] = &[
        (b"RETR a", 0),
        (b"RETR ../secret", 550),
        (b"RETR /pub/../secret", 550),
        (b"RETR //secret", 550),
        (b"RETR /./secret", 550),
        (b"RETR sub/../../secret", 550),
        (b"RETR ../pub/a", 0),
        (b"RETR %2e%2e/secret", 0),
        (b"RETR caf\xe9", 0),
        (b"RETR ../caf\xe9", 550),
        (b"RETR dir/", 0),
        (b"SIZE a", 0),
        (b"MDTM a", 0),
        (b"LIST", 550),
    ];
    for (line, want) in cases {
        assert_eq!(code(&eval(&p, &v, line)), *want, "{:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn ordering() {
    let p = Policy::permissive();
    let fresh = View { net: "any", ..fresh_view() };
    let with_prev = |prev: Verb| View { previous: Some(prev), ..View { net: "any", ..View::user("u") } };
    let cases: Vec<(View, &[u8], u16)> = vec![
        (fresh, b"PBSZ 0", 503),
        (View { net: "any", tls: true, ..View { net: "any", ..fresh_view() } }, b"PROT P", 503),
        (View { net: "any", ..fresh_view() }, b"PASS x", 503),
        (View { net: "any", previous: Some(Verb::User), ..fresh_view() }, b"PASS x", 0),
        (View { net: "any", ..fresh_view() }, b"RETR x", 530),
        (View { net: "any", ..fresh_view() }, b"CWD /", 530),
        (View { net: "any", ..fresh_view() }, b"FEAT", 0),
        (with_prev(Verb::Other("RNFR".into())), b"RNTO b", 0),
        (View { net: "any", ..View::user("u") }, b"RNTO b", 503),
        (with_prev(Verb::Rest), b"LIST", 503),
        (with_prev(Verb::Rest), b"RETR a", 0),
        (with_prev(Verb::Rest), b"EPSV", 0),
        (View { data_ready: false, ..View { net: "any", ..View::user("u") } }, b"RETR a", 503),
    ];
    for (view, line, want) in cases {
        assert_eq!(code(&eval(&p, &view, line)), want, "{:?} after {:?}", String::from_utf8_lossy(line), view.previous);
    }
}

fn fresh_view() -> View {
    View { tls: false, pbsz: false, prot: false, user: None, logged_in: false, ..View::user("u") }
}

#[test]
fn networks() {
    let p = policy();
    assert_eq!(p.admit("10.1.2.3".parse().unwrap()).unwrap().name, "office");
    assert_eq!(p.admit("::ffff:10.1.2.3".parse().unwrap()).unwrap().name, "office");
    assert_eq!(p.admit("198.51.100.1".parse().unwrap()).unwrap().name, "internet");
    assert_eq!(p.admit("192.0.2.9".parse().unwrap()).unwrap().name, "internet", "first match wins");
    let only_office = Policy::from_toml("[[network]]\nname = \"o\"\ncidrs = [\"10.0.0.0/8\"]\n", "t").unwrap();
    assert_eq!(only_office.admit("8.8.8.8".parse().unwrap()).unwrap_err().code, 421);
    let denied =
        Policy::from_toml("[[network]]\nname = \"x\"\ncidrs = [\"::/0\", \"0.0.0.0/0\"]\naction = \"deny\"\n", "t")
            .unwrap();
    assert_eq!(denied.admit("10.0.0.1".parse().unwrap()).unwrap_err().rule, "network x");

    let internet = View {
        net: "internet",
        tls: false,
        pbsz: false,
        prot: false,
        user: None,
        logged_in: false,
        ..View::user("full")
    };
    assert_eq!(code(&eval(&p, &internet, b"USER full")), 530, "TLS before USER");
    let internet_tls = View { net: "internet", ..View::user("full") };
    assert_eq!(code(&eval(&p, &internet_tls, b"PORT 1,2,3,4,5,6")), 534);
    let clear = View { prot: false, ..View { net: "internet", ..View::user("full") } };
    assert_eq!(code(&eval(&p, &clear, b"RETR a")), 521, "PROT P required");
    assert_eq!(code(&eval(&p, &View::user("full"), b"PORT 1,2,3,4,5,6")), 0, "office may use active mode");
    let certs = Policy::from_toml(
        "[[network]]\nname = \"c\"\ncidrs = [\"::/0\"]\nclient_cert_required = true\nplain_allowed = false\n",
        "t",
    )
    .unwrap();
    let no_cert = View { net: "c", user: None, logged_in: false, ..View::user("u") };
    assert_eq!(code(&eval(&certs, &no_cert, b"USER u")), 530);
    assert_eq!(code(&eval(&certs, &View { cert: true, ..no_cert }, b"USER u")), 0);
    let allow = Policy::from_toml(
        "[[network]]\nname = \"a\"\ncidrs = [\"::/0\"]\nallow_commands = [\"user\", \"pass\", \"stor\", \"epsv\"]\n\n\
         [users.u]\nallow_commands = [\"STOR\", \"EPSV\", \"USER\", \"PASS\", \"CWD\"]\n",
        "t",
    )
    .unwrap();
    let a = View { net: "a", ..View::user("u") };
    assert_eq!(code(&eval(&allow, &a, b"STOR x")), 0);
    assert_eq!(code(&eval(&allow, &a, b"QUIT")), 0, "QUIT is always allowed");
    assert_eq!(code(&eval(&allow, &a, b"RETR x")), 534, "not in the network's allow list");
    assert_eq!(code(&eval(&allow, &a, b"CWD /")), 534, "in the user's list but not the network's");
    let plain = View { net: "c", tls: false, user: None, logged_in: false, ..View::user("u") };
    assert_eq!(code(&eval(&certs, &plain, b"SYST")), 0);
    assert_eq!(code(&eval(&certs, &plain, b"USER u")), 534, "no plain FTP at all from c");
}

#[test]
fn file_errors_name_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[[rule]]\nname = \"r\"\nusers = [\"u\"]\npaths = [\"/**\"]\nallow = [\"read\", \"downlaod\"]\n",
            "line 5: unknown permission \"downlaod\"",
        ),
        ("[[network]]\nname = \"n\"\ncidrs = [\"10.0.0.0/33\"]\n", "line 3: network n: \"10.0.0.0/33\""),
        ("[[network]]\nname = \"n\"\ncidrs = [\"::/0\"]\naction = \"maybe\"\n", "line 4: network n: action"),
        (
            "[[rule]]\nname = \"r\"\ngroups = [\"ghosts\"]\npaths = [\"/**\"]\nallow = []\n",
            "line 3: rule r: unknown group",
        ),
        ("[[rule]]\nname = \"r\"\nusers = [\"u\"]\npaths = [\"relative\"]\nallow = []\n", "line 4: rule r: path"),
        ("[[rule]]\nname = \"r\"\nusers = [\"u\"]\npaths = [\"/\"]\nallow = []\ncolour = 1\n", "line 6"),
    ];
    for (text, want) in cases {
        let err = Policy::from_toml(text, "p.toml").unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn shipped_example_is_valid() {
    let p = Policy::from_toml(include_str!("../../policy/example.toml"), "policy/example.toml").unwrap();
    assert!(p.summary().contains("rule writer-upload: writer may write on /shared/**"), "{}", p.summary());
    let office = p.network_for("10.1.2.3".parse().unwrap()).unwrap();
    let writer = p.limits_for(Some("writer"), office);
    assert_eq!(writer.upload_rate, Some(2 << 20));
    assert_eq!(writer.max_upload_size, Some(512 << 20));
    assert_eq!(writer.download_rate, Some(50 << 20), "from [defaults]");
    assert_eq!(p.limits_for(Some("full"), office).download_rate, Some(20 << 20), "the group's beats the default");
    let err = Policy::from_toml(
        "[group_limits.nobody]
download_rate = \"1MiB/s\"\n",
        "p.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("group_limits.nobody: no such group"), "{err}");
}

#[test]
fn bastion_users_and_their_secrets() {
    let hash = auth::hash_password("pw").unwrap();
    // Only this test uses this variable.
    std::env::set_var("FTPGATE_TEST_BACKEND_PW", "s3cret");
    let text = format!(
        "[users.ann]\npassword = \"{hash}\"\nbackend_user = \"svc\"\nbackend_password_env = \"FTPGATE_TEST_BACKEND_PW\"\n"
    );
    let p = Policy::from_toml(&text, "t").unwrap();
    let ann = &p.bastion_users["ann"];
    assert_eq!((ann.backend_user.as_str(), ann.backend_password.expose()), ("svc", "s3cret"));
    assert!(!format!("{p:?}").contains("s3cret"), "secrets never print");
    assert!(p.summary().contains("user ann: logs in at ftpgate, mapped to svc on backend (default)"));
    let cases: &[(&str, &str)] = &[
        (
            "[users.b]\npassword = \"plain\"\nbackend_password_env = \"X\"\n",
            "line 2: users.b.password: not an argon2id hash",
        ),
        (
            &format!("[users.b]\npassword = \"{hash}\"\nbackend_password_env = \"FTPGATE_SURELY_UNSET_VAR\"\n"),
            "line 3: users.b.backend_password_env: variable FTPGATE_SURELY_UNSET_VAR is not set",
        ),
        (
            &format!("[users.b]\npassword = \"{hash}\"\n"),
            "set exactly one of backend_password_env, backend_password_file",
        ),
    ];
    for (text, want) in cases {
        let err = Policy::from_toml(text, "t").unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}
