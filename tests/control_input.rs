//! Bad and unusual input on the control channel, against a real vsftpd behind
//! ftpgate: exact reply codes, and proof that refused lines never reach the
//! backend.

mod common;
use common::*;
use ftpgate::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

#[test]
fn refused_lines_get_500_and_never_reach_the_backend() {
    let backend = Vsftpd::start();
    backend.put("keep.bin", b"precious");
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();

    let long = format!("MKD {}", "a".repeat(3000));
    let (code, text) = c.cmd(&long);
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("longer than 2048 bytes"), "{text}");

    c.send_raw(b"DELE keep\0.bin\r\n");
    let (code, text) = c.reply();
    assert_eq!((code, text.contains("NUL")), (500, true), "{text}");

    c.send_raw(b"NOOP\rDELE keep.bin\r\n");
    let (code, text) = c.reply();
    assert_eq!((code, text.contains("bare CR")), (500, true), "{text}");

    // After a bare LF nothing runs until a line ends with CRLF: each fragment
    // is refused on its own, so the client stays in step however it counts.
    c.send_raw(b"MKD smuggled\nNOOP\r\n");
    let (code, text) = c.reply();
    assert_eq!((code, text.contains("bare LF")), (500, true), "{text}");
    let (code, text) = c.reply();
    assert_eq!((code, text.contains("CRLF")), (500, true), "the fragment after the bare LF: {text}");
    assert_eq!(c.cmd("NOOP").0, 200);

    c.send_raw(b"12AB\r\n");
    assert_eq!(c.reply().0, 500);
    // Telnet IP/DM before a command are stripped, as RFC 959 expects for ABOR.
    c.send_raw(b"\xff\xf4\xff\xf2NOOP\r\n");
    assert_eq!(c.reply().0, 200);
    assert_eq!(c.cmd("QUIT").0, 221);
    assert!(c.closed());

    assert_eq!(std::fs::read(backend.root.join("keep.bin")).unwrap(), b"precious");
    assert!(!backend.root.join("smuggled").exists());
    let log = backend.log_after(&format!("\"USER {USER}\""));
    assert!(!log.contains("aaaaaaaa") && !log.contains("smuggled") && !log.contains("DELE"), "{log}");
    assert_eq!(Metrics::get(&gate.metrics.commands_rejected), 6);
    gate.assert_drained();
}

#[test]
fn active_mode_bounce_protection() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("PORT 127,0,0,1,200,0").0, 530, "no active mode before login");
    assert_eq!(c.cmd(&format!("USER {USER}")).0, 331);
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).0, 230);
    let (code, text) = c.cmd("PORT 10,0,0,1,200,10");
    assert_eq!(code, 501);
    assert!(text.contains("bounce"), "{text}");
    let (code, text) = c.cmd("PORT 127,0,0,1,0,25");
    assert_eq!(code, 501);
    assert!(text.contains("below 1024"), "{text}");
    assert_eq!(c.cmd("PORT 127,0,0,1,300,1").0, 501);
    assert_eq!(c.cmd("EPRT |1|192.0.2.1|5000|").0, 501);
    assert_eq!(c.cmd("EPRT |9|x|5000|").0, 522);
    assert_eq!(c.cmd("EPRT |1|127.0.0.1|5000|").0, 200);
    assert_eq!(Metrics::get(&gate.metrics.active_refused), 5);
    assert!(
        !backend.log().contains("PORT") && !backend.log().contains("EPRT"),
        "active setup never reaches the backend"
    );
}

#[test]
fn setup_ordering_and_tls_commands_without_tls() {
    let backend = Vsftpd::start();
    backend.put("f.bin", &payload(5000, 1));
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("PBSZ 0").0, 503);
    assert_eq!(c.cmd("PROT P").0, 503);
    assert_eq!(c.cmd("AUTH TLS").0, 502);
    let (code, text) = c.cmd("RETR f.bin");
    assert_eq!(code, 503, "{text}");
    // REST accepted by the backend, then a transfer refused by ftpgate: the
    // offset must not leak into the next transfer.
    assert_eq!(c.cmd("REST 4000").0, 350);
    assert_eq!(c.cmd("RETR f.bin").0, 503);
    let (code, text) = c.cmd("PASV");
    assert_eq!(code, 227);
    let port = pasv_port(&text);
    let mut data = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(c.cmd("RETR f.bin").0, 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert_eq!(c.reply().0, 226);
    assert_eq!(got, payload(5000, 1), "whole file, not from offset 4000");

    assert_eq!(c.cmd("EPSV ALL").0, 200);
    assert_eq!(c.cmd("PASV").0, 503);
    assert_eq!(c.cmd("PORT 127,0,0,1,200,0").0, 503);
    assert_eq!(c.cmd("EPSV 2").0, 522);
    let (code, text) = c.cmd("EPSV");
    assert_eq!(code, 229, "{text}");
    let _ = epsv_port(&text);
    let (code, text) = c.cmd("FEAT");
    assert_eq!(code, 211);
    assert_eq!(
        text,
        "211-Features:\r\n EPRT\r\n EPSV\r\n PASV\r\n MDTM\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n211 End\r\n"
    );
}

#[test]
fn multiline_replies_are_relayed_verbatim() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let mut direct = RawClient::connect(backend.addr);
    direct.login();
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let want = direct.cmd("HELP");
    assert_eq!(want.0, 214);
    assert!(want.1.lines().count() > 3, "vsftpd HELP is multi-line: {}", want.1);
    assert_eq!(c.cmd("HELP"), want);
}

#[test]
fn data_connection_from_another_address_is_refused() {
    let backend = Vsftpd::start();
    backend.put("f.bin", &payload(100_000, 2));
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let (code, text) = c.cmd("EPSV");
    assert_eq!(code, 229);
    let port = epsv_port(&text);
    // 127.0.0.2 is loopback but not the client's control address.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    let mut intruder: TcpStream = socket.into();
    intruder.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(intruder.read(&mut buf), Ok(0) | Err(_)), "intruder must be closed without data");
    let _ = intruder.write_all(b"x");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Metrics::get(&gate.metrics.data_connections_refused) < 1 {
        assert!(std::time::Instant::now() < deadline, "refusal not counted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The real client still gets its data.
    let mut data = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(c.cmd("RETR f.bin").0, 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert_eq!(c.reply().0, 226);
    assert_eq!(sha256(&got), sha256(&payload(100_000, 2)));
    assert_eq!(Metrics::get(&gate.metrics.data_connections_refused), 1);
}

#[test]
fn non_utf8_file_names_pass_byte_exact() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let mut data = c.epsv_data();
    c.send_raw(b"STOR caf\xe9 \xff\xff.txt\r\n");
    assert_eq!(c.reply().0, 150);
    data.write_all(b"latin-1 name").unwrap();
    drop(data);
    assert_eq!(c.reply().0, 226);
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff.txt");
    assert_eq!(std::fs::read(backend.root.join(name)).unwrap(), b"latin-1 name", "IAC IAC is one 0xff byte");
}

#[test]
fn stou_uploads_under_a_server_chosen_name() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    let mut data = c.epsv_data();
    let (code, text) = c.cmd("STOU");
    assert_eq!(code, 150, "{text}");
    data.write_all(&payload(70_000, 4)).unwrap();
    drop(data);
    assert_eq!(c.reply().0, 226);
    let files: Vec<_> = std::fs::read_dir(&backend.root).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(sha256_file(&files[0]), sha256(&payload(70_000, 4)));
    assert!(text.contains(files[0].file_name().unwrap().to_str().unwrap()), "150 names the file: {text}");
}
