//! Property tests for every parser that reads what a peer or an operator
//! wrote: PROXY protocol v1/v2 headers, the policy file, path resolution
//! against rule roots, `257` replies, and the control-line codec split at
//! every byte boundary. Each asserts an exact result, not only "no panic".

use bytes::BytesMut;
use ftpgate::config::ProxyVersion;
use ftpgate::policy::path::{glob_match, parse_257, resolve};
use ftpgate::policy::Policy;
use ftpgate::protocol::codec::{CommandDecoder, MAX_COMMAND_LINE};
use ftpgate::proxy_protocol::{encode, parse, Parsed};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// ---------------------------------------------------------------- PROXY

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
    ]
}

/// The source address `encode` writes: canonical, and IPv4-mapped when the
/// two addresses are of different families.
fn written_source(source: SocketAddr, destination: SocketAddr) -> SocketAddr {
    let (s, d) = (source.ip().to_canonical(), destination.ip().to_canonical());
    match (s, d) {
        (IpAddr::V4(v4), IpAddr::V6(_)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), source.port()),
        _ => SocketAddr::new(s, source.port()),
    }
}

/// A v2 LOCAL header (health checks): no address, 16 bytes.
const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn proxy_parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        if let Parsed::Header { len, .. } = parse(&bytes) {
            prop_assert!(len <= bytes.len());
        }
    }

    /// A header followed by client bytes: exactly the header is claimed (no
    /// client byte lost), the source is the one written, and every strict
    /// prefix of the header asks for more instead of guessing.
    #[test]
    fn proxy_headers_parse_back_exactly(
        v2 in any::<bool>(),
        source in socket_addr(),
        destination in socket_addr(),
        tlvs in proptest::collection::vec((0xE0u8..=0xEF, proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
        after in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = if v2 {
            let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
            let (s, d) = (written_source(source, destination), canonical(destination));
            let d = match (s, d) {
                (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
                _ => d,
            };
            let mut b = ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                (s, d),
            );
            for (kind, value) in &tlvs {
                b = b.write_tlv(*kind, value).unwrap();
            }
            b.build().unwrap()
        } else {
            encode(ProxyVersion::V1, source, destination)
        };
        if !v2 || tlvs.is_empty() {
            prop_assert_eq!(&header, &encode(if v2 { ProxyVersion::V2 } else { ProxyVersion::V1 }, source, destination));
        }
        let mut wire = header.clone();
        wire.extend_from_slice(&after);
        prop_assert_eq!(parse(&wire), Parsed::Header { len: header.len(), source: Some(written_source(source, destination)) });
        for cut in 0..header.len() {
            prop_assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "prefix of {} bytes of {:?}", cut, header);
        }
    }

    /// A v2 header whose length field promises more than arrives is never
    /// taken as a header, and a damaged signature is not a header at all.
    #[test]
    fn proxy_truncated_or_damaged_v2_is_not_a_header(source in socket_addr(), flip in 0usize..12, extra in 1u16..2000) {
        let mut header = encode(ProxyVersion::V2, source, source);
        let len = u16::from_be_bytes([header[14], header[15]]);
        let promised = len.saturating_add(extra);
        header[14..16].copy_from_slice(&promised.to_be_bytes());
        prop_assert_eq!(parse(&header), Parsed::Incomplete);
        let mut damaged = encode(ProxyVersion::V2, source, source);
        damaged[flip] ^= 0x40;
        prop_assert_eq!(parse(&damaged), Parsed::Invalid);
    }
}

#[test]
fn proxy_local_and_unknown_carry_no_address() {
    let mut wire = V2_LOCAL.to_vec();
    wire.extend_from_slice(b"USER x\r\n");
    assert_eq!(parse(&wire), Parsed::Header { len: 16, source: None });
    let v1 = b"PROXY UNKNOWN\r\nUSER x\r\n";
    assert_eq!(parse(v1), Parsed::Header { len: 15, source: None });
    let v1 = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_eq!(parse(v1), Parsed::Header { len: v1.len(), source: None });
    // v1 is at most 107 bytes: a longer line is refused, not waited for.
    let long = format!("PROXY TCP4 {} 10.0.0.1 1 2\r\n", "1".repeat(120));
    assert_eq!(parse(long.as_bytes()), Parsed::Invalid);
    assert_eq!(parse(b"USER x\r\n"), Parsed::Invalid);
}

// ---------------------------------------------------------------- policy

const POLICY: &str = r#"[[network]]
name = "office"
cidrs = ["10.0.0.0/8", "127.0.0.0/8"]
action = "allow"
download_rate = "10MiB/s"

[groups]
staff = ["full"]

[[rule]]
name = "staff-all"
groups = ["staff"]
paths = ["/shared/**"]
allow = ["read", "list"]

[users.writer]
upload_rate = "2MiB/s"
max_upload_size = "512MiB"
max_transfers = 2

[group_limits.staff]
download_rate = "20MiB/s"

[defaults]
permissions = []
download_rate = "50MiB/s"

[login]
max_failures = 5
"#;

/// The value lines of [`POLICY`] and a wrong value for each: `(line, key,
/// wrong value)`. Every one must be reported at its own line.
fn wrong_values() -> Vec<(usize, &'static str, Vec<&'static str>)> {
    vec![
        (3, "cidrs", vec![r#"["10.0.0.0/33"]"#, r#"["office"]"#, r#"[7]"#, r#""10.0.0.0/8""#]),
        (4, "action", vec![r#""maybe""#, "true", r#""""#]),
        (5, "download_rate", vec![r#""fast""#, r#""-1MiB/s""#, "10", r#""10XB/s""#]),
        (8, "staff", vec![r#""full""#, "[1]"]),
        (12, "groups", vec![r#"["nobody"]"#, r#""staff""#]),
        (13, "paths", vec![r#"["shared/**"]"#, r#"[""]"#, "[[]]"]),
        (14, "allow", vec![r#"["fly"]"#, r#"["read", "teleport"]"#, r#""read""#]),
        (17, "upload_rate", vec![r#""""#, r#""2 parsecs""#]),
        (18, "max_upload_size", vec![r#""huge""#, r#""-5""#, "512"]),
        (19, "max_transfers", vec!["0", "-1", r#""two""#, "2.5"]),
        (22, "download_rate", vec![r#""ten""#]),
        (25, "permissions", vec![r#"["root"]"#, r#""all""#]),
        (26, "download_rate", vec![r#""x""#]),
        (29, "max_failures", vec![r#""five""#, "-5", "1e3"]),
    ]
}

fn line_named(message: &str) -> Option<usize> {
    let at = message.find("line ")? + 5;
    message[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn policy_sample_is_valid_and_every_wrong_value_names_its_line() {
    Policy::from_toml(POLICY, "p.toml").expect("the sample policy loads");
    let lines: Vec<&str> = POLICY.lines().collect();
    let mut checked = 0;
    for (line, key, values) in wrong_values() {
        assert!(lines[line - 1].starts_with(key), "line {line} of the sample is {:?}, not {key}", lines[line - 1]);
        for value in values {
            let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            edited[line - 1] = format!("{key} = {value}");
            let text = edited.join("\n");
            let e = Policy::from_toml(&text, "p.toml").expect_err(&format!("{key} = {value} was accepted")).to_string();
            assert!(e.starts_with("p.toml: "), "{e}");
            assert_eq!(line_named(&e), Some(line), "{key} = {value}: {e}");
            assert!(!e.contains('\n'), "one line per error: {e:?}");
            checked += 1;
        }
    }
    assert!(checked >= 35, "{checked}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any edit of the file (a line replaced by garbage, cut, duplicated, or
    /// a byte changed) loads or fails with one line naming the file and a
    /// line of the file; nothing panics.
    #[test]
    fn policy_errors_always_name_a_line(
        edits in proptest::collection::vec((0usize..40, 0u8..4, proptest::collection::vec(any::<u8>(), 0..12)), 1..4),
    ) {
        let mut lines: Vec<Vec<u8>> = POLICY.lines().map(|l| l.as_bytes().to_vec()).collect();
        for (at, kind, bytes) in edits {
            let at = at % lines.len();
            match kind {
                0 => lines[at] = bytes,
                1 => { lines.remove(at); }
                2 => { let l = lines[at].clone(); lines.insert(at, l); }
                _ => {
                    if !lines[at].is_empty() {
                        let i = bytes.first().copied().unwrap_or(0) as usize % lines[at].len();
                        lines[at][i] = bytes.get(1).copied().unwrap_or(b'"');
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&lines.join(&b'\n')).into_owned();
        if let Err(e) = Policy::from_toml(&text, "p.toml") {
            let e = e.to_string();
            prop_assert!(e.starts_with("p.toml: "), "{}", e);
            let line = line_named(&e);
            prop_assert!(line.is_some_and(|l| l >= 1 && l <= text.lines().count().max(1)), "{} in\n{}", e, text);
            prop_assert!(!e.contains('\n'), "{:?}", e);
        }
    }
}

// ---------------------------------------------------------------- paths

/// One step of a path as a client may write it.
#[derive(Debug, Clone)]
enum Step {
    Into(Vec<u8>),
    Up,
    Dot,
    Slash,
}

fn step() -> impl Strategy<Value = Step> {
    let name = proptest::collection::vec(any::<u8>().prop_filter("no slash", |b| *b != b'/'), 1..6)
        .prop_filter("not . or ..", |n| n != b"." && n != b"..");
    prop_oneof![4 => name.prop_map(Step::Into), 2 => Just(Step::Up), 1 => Just(Step::Dot), 1 => Just(Step::Slash)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The resolved path is the directory the steps walk to (computed here
    /// step by step, `..` stopping at `/`), in normal form, and a rule rooted
    /// at the working directory's top matches it exactly when the walk
    /// stayed under that root: `..`, `//`, `/./`, trailing slashes and
    /// non-UTF-8 names cannot carry a path out of a rule's root.
    #[test]
    fn resolution_walks_like_a_chrooted_server(
        cwd in proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 1..4), 0..4),
        absolute in any::<bool>(),
        steps in proptest::collection::vec(step(), 0..12),
        trailing in any::<bool>(),
    ) {
        let cwd_text: Vec<u8> = if cwd.is_empty() { b"/".to_vec() } else { cwd.iter().flat_map(|s| [b"/".as_slice(), s].concat()).collect() };
        let mut stack: Vec<Vec<u8>> = if absolute { vec![] } else { cwd.clone() };
        let mut arg: Vec<u8> = if absolute { b"/".to_vec() } else { vec![] };
        for s in &steps {
            match s {
                Step::Into(n) => { stack.push(n.clone()); arg.extend_from_slice(n); arg.push(b'/'); }
                Step::Up => { stack.pop(); arg.extend_from_slice(b"../"); }
                Step::Dot => arg.extend_from_slice(b"./"),
                // A slash first would make a relative argument absolute.
                Step::Slash if arg.is_empty() => {}
                Step::Slash => arg.push(b'/'),
            }
        }
        if !trailing && arg.len() > 1 && arg.ends_with(b"/") { arg.pop(); }
        let expected: Vec<u8> = if stack.is_empty() { b"/".to_vec() } else { stack.iter().flat_map(|s| [b"/".as_slice(), s].concat()).collect() };
        let got = resolve(&cwd_text, &arg);
        prop_assert_eq!(&got, &expected, "cwd {:?} arg {:?}", String::from_utf8_lossy(&cwd_text), String::from_utf8_lossy(&arg));
        prop_assert_eq!(resolve(b"/", &got), got.clone(), "normal form is a fixed point");
        if let Some(top) = cwd.first() {
            let rule = [b"/".as_slice(), top, b"/**"].concat();
            let under = stack.first() == Some(top);
            prop_assert_eq!(glob_match(&rule, &got), under, "rule {:?} path {:?}", String::from_utf8_lossy(&rule), String::from_utf8_lossy(&got));
        }
    }

    /// `257 "<dir>"` with quotes doubled gives the directory back, whatever
    /// its bytes; any text parses without panicking.
    #[test]
    fn pwd_replies_parse_back(
        dir in proptest::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\r' && *b != b'\n'), 0..40),
        tail in "[ -~]{0,20}",
        junk in proptest::collection::vec(any::<u8>(), 0..60),
    ) {
        let mut text = b"\"".to_vec();
        for &b in &dir {
            if b == b'"' { text.push(b'"'); }
            text.push(b);
        }
        text.push(b'"');
        text.push(b' ');
        text.extend_from_slice(tail.as_bytes());
        prop_assert_eq!(parse_257(&text), Some(dir));
        if let Some(d) = parse_257(&junk) { prop_assert!(d.len() < junk.len()); }
    }
}

// ---------------------------------------------------------------- codec

/// Pieces a client's byte stream is made of, the awkward ones included.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "(USER|PASS|NOOP|RETR|STOR|CWD|DELE|ABOR) [a-z./]{0,8}".prop_map(|s| format!("{s}\r\n").into_bytes()),
        1 => Just(b"NOOP\n".to_vec()),
        1 => Just(b"PWD\r".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\xff\xf4\xff\xf2ABOR\r\n".to_vec()),
        1 => Just(b"\xff\xfb\x01LIST\xff\xff\r\n".to_vec()),
        1 => (1usize..3).prop_map(|k| [vec![b'x'; MAX_COMMAND_LINE * k], b"\r\n".to_vec()].concat()),
        1 => Just(vec![b'y'; MAX_COMMAND_LINE - 2]),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

fn decode_in_chunks(input: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut d = CommandDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = vec![];
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        buf.extend_from_slice(&input[from..cut.max(from)]);
        from = cut.max(from);
        while let Some(r) = d.decode(&mut buf) {
            out.push(format!("{r:?}"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The decoder's state (an overlong line being skipped, the bare-LF
    /// resync) crosses reads: the same bytes give the same commands and
    /// errors whether they arrive at once, split at any one byte, or in
    /// random pieces.
    #[test]
    fn codec_gives_the_same_commands_however_the_bytes_arrive(
        pieces in proptest::collection::vec(piece(), 1..10),
        random_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let input = pieces.concat();
        let whole = decode_in_chunks(&input, &[]);
        let step = (input.len() / 300).max(1);
        for cut in (0..=input.len()).step_by(step) {
            prop_assert_eq!(&decode_in_chunks(&input, &[cut]), &whole, "split at {}", cut);
        }
        let mut cuts: Vec<usize> = random_cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        cuts.sort();
        prop_assert_eq!(&decode_in_chunks(&input, &cuts), &whole, "cuts {:?}", cuts);
        let bytewise: Vec<usize> = if input.len() <= 600 { (0..input.len()).collect() } else { vec![] };
        prop_assert_eq!(&decode_in_chunks(&input, &bytewise), &whole, "one byte at a time");
    }
}
