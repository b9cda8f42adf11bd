//! Fault cases a real server cannot produce, with an in-process fake backend
//! that follows a script: lying PASV replies, replies split across segments, a
//! backend that dies mid-transfer or never answers. Plus failures at ftpgate's
//! own edge: backend unreachable, idle clients, session and port limits.

mod common;
use common::*;
use ftpgate::metrics::Metrics;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A scripted backend: accepts one control connection and hands it to `script`.
fn fake_backend<F>(script: F) -> (SocketAddr, std::thread::JoinHandle<()>)
where
    F: FnOnce(FakeControl) + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        script(FakeControl { reader: BufReader::new(s.try_clone().unwrap()), stream: s });
    });
    (addr, t)
}

struct FakeControl {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl FakeControl {
    fn send(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).unwrap();
    }
    /// Reads one command line and checks it starts with `want`.
    fn expect(&mut self, want: &str) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(want), "fake backend expected {want:?}, got {line:?}");
        line
    }
    fn login(&mut self) {
        self.send("220 fake\r\n");
        self.expect("USER");
        self.send("331 pw\r\n");
        self.expect("PASS");
        self.send("230 in\r\n");
        // ftpgate learns the working directory after every login.
        self.expect("PWD");
        self.send("257 \"/\" is the current directory\r\n");
    }
}

fn raw_login(addr: SocketAddr) -> RawClient {
    let mut c = RawClient::connect(addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER u").0, 331);
    assert_eq!(c.cmd("PASS p").0, 230);
    c
}

#[test]
fn lying_pasv_reply_is_not_followed_and_epsv_falls_back_to_pasv() {
    let data_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = data_listener.local_addr().unwrap().port();
    let body = payload(300_000, 5);
    let sent = body.clone();
    let (addr, t) = fake_backend(move |mut b| {
        b.login();
        for round in 0..2 {
            if round == 0 {
                b.expect("EPSV");
                b.send("502 EPSV not implemented\r\n");
            }
            // ftpgate must remember that EPSV failed and go straight to PASV.
            b.expect("PASV");
            // Names a host that is not this backend: ftpgate must not connect there.
            b.send(&format!("227 Entering Passive Mode (10,255,255,1,{},{}).\r\n", port >> 8, port & 255));
            let (mut d, _) = data_listener.accept().unwrap();
            b.expect("RETR");
            b.send("150 here it comes\r\n");
            d.write_all(&sent).unwrap();
            drop(d);
            b.send("226 done\r\n");
        }
        b.expect("QUIT");
        b.send("221 bye\r\n");
    });
    let gate = Gate::start(addr);
    let mut c = raw_login(gate.addr);
    for _ in 0..2 {
        let (code, text) = c.cmd("EPSV");
        assert_eq!(code, 229, "{text}");
        let p: u16 =
            text.split("|||").nth(1).unwrap().trim_end_matches(|ch: char| !ch.is_ascii_digit()).parse().unwrap();
        let mut d = TcpStream::connect(("127.0.0.1", p)).unwrap();
        assert_eq!(c.cmd("RETR f").0, 150);
        let mut got = Vec::new();
        d.read_to_end(&mut got).unwrap();
        assert_eq!(c.reply(), (226, "226 done\r\n".to_string()));
        assert_eq!(got, body);
    }
    assert_eq!(c.cmd("QUIT").0, 221);
    t.join().unwrap();
    gate.assert_drained();
}

#[test]
fn multiline_reply_split_across_segments_arrives_whole() {
    let (addr, t) = fake_backend(|mut b| {
        b.send("220 fake\r\n");
        b.expect("USER");
        for piece in
            ["23", "0-Welcome\r", "\n230-200 inner line that looks like", " a code\r\n230", "-\r\n", "230 Done\r\n"]
        {
            b.send(piece);
            b.stream.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        b.expect("PWD");
        b.send("257 \"/\"\r\n");
        b.expect("QUIT");
        b.send("221 bye\r\n");
    });
    let gate = Gate::start(addr);
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER u").0, 331, "ftpgate answers USER; the backend opens at PASS");
    // A backend that logs USER in without a password: its 230 answers PASS.
    let (code, text) = c.cmd("PASS p");
    assert_eq!(code, 230);
    assert_eq!(text, "230-Welcome\r\n230-200 inner line that looks like a code\r\n230-\r\n230 Done\r\n");
    assert_eq!(c.cmd("QUIT").0, 221);
    t.join().unwrap();
}

#[test]
fn backend_dying_mid_transfer_gives_421_and_a_clean_close() {
    let data_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = data_listener.local_addr().unwrap().port();
    let (addr, t) = fake_backend(move |mut b| {
        b.login();
        b.expect("EPSV");
        b.send(&format!("229 Entering Extended Passive Mode (|||{port}|)\r\n"));
        let (mut d, _) = data_listener.accept().unwrap();
        b.expect("RETR");
        b.send("150 here\r\n");
        d.write_all(&[7u8; 100_000]).unwrap();
        // Dies: data and control closed without a final reply.
    });
    let gate = Gate::start(addr);
    let mut c = raw_login(gate.addr);
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("RETR f").0, 150);
    d.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    match d.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "the data connection must end: {e}"),
    }
    assert!(got.len() <= 100_000 && got.iter().all(|&b| b == 7), "only what the backend sent");
    t.join().unwrap();
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("backend closed the control connection"), "{text}");
    assert!(c.closed());
    gate.assert_drained();
    assert!(Metrics::get(&gate.metrics.backend_errors) >= 1);
    assert_eq!(gate.metrics.backend_errors_by_kind.lock().unwrap().get("closed"), Some(&1));
}

#[test]
fn silent_backend_times_out_with_421() {
    let (addr, t) = fake_backend(|mut b| {
        b.send("220 fake\r\n");
        b.expect("USER");
        // Never answers; holds the connection until ftpgate gives up.
        let mut buf = [0u8; 64];
        while matches!(b.stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    let gate = Gate::start_with(addr, |s| s.backend_reply = Duration::from_secs(1));
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER u").0, 331);
    let (code, text) = c.cmd("PASS p");
    assert_eq!(code, 421);
    assert!(text.contains("did not reply within 1 s"), "{text}");
    assert!(c.closed());
    t.join().unwrap();
    gate.assert_drained();
}

#[test]
fn malformed_backend_reply_gives_421() {
    let (addr, t) = fake_backend(|mut b| {
        b.send("220 fake\r\n");
        b.expect("USER");
        b.send("hello there\r\n");
    });
    let gate = Gate::start(addr);
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER u").0, 331);
    let (code, text) = c.cmd("PASS p");
    assert_eq!(code, 421);
    assert!(text.contains("malformed reply"), "{text}");
    assert!(c.closed());
    t.join().unwrap();
}

#[test]
fn unusable_passive_reply_gives_425_and_session_continues() {
    let (addr, t) = fake_backend(|mut b| {
        b.login();
        b.expect("EPSV");
        b.send("229 Entering Extended Passive Mode (|||0|)\r\n");
        b.expect("NOOP");
        b.send("200 ok\r\n");
    });
    let gate = Gate::start(addr);
    let mut c = raw_login(gate.addr);
    let (code, text) = c.cmd("EPSV");
    assert_eq!(code, 425, "{text}");
    assert!(text.contains("unusable passive reply"));
    assert_eq!(c.cmd("NOOP").0, 200);
    t.join().unwrap();
}

#[test]
fn unreachable_backend_gives_421() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gate = Gate::start(closed);
    let mut c = RawClient::connect(gate.addr);
    // ftpgate greets itself and answers USER; the backend is needed only at PASS.
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("USER u").0, 331);
    let (code, text) = c.cmd("PASS p");
    assert_eq!(code, 421);
    assert!(text.contains("backend unreachable"), "{text}");
    assert!(!text.contains(&closed.port().to_string()), "the backend's address is not told to clients: {text}");
    assert_eq!(gate.metrics.backend_errors_by_kind.lock().unwrap().get("connect"), Some(&1));
    assert!(c.closed());
    gate.assert_drained();
}

#[test]
fn idle_client_gets_421() {
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.idle_control = Duration::from_secs(1));
    let mut c = RawClient::connect(gate.addr);
    assert_eq!(c.reply().0, 220);
    let (code, text) = c.reply();
    assert_eq!(code, 421);
    assert!(text.contains("Idle timeout"), "{text}");
    assert!(c.closed());
    gate.assert_drained();
}

/// The idle clock stops while a command runs and starts again after it, so a
/// logged-in client that goes quiet is closed too.
#[test]
fn idle_client_after_login_gets_421() {
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.idle_control = Duration::from_secs(2));
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("PWD").0, 257);
    let quiet = std::time::Instant::now();
    let (code, text) = c.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("Idle timeout (2 s)"), "{text}");
    assert!(quiet.elapsed() >= Duration::from_millis(1500), "{:?}", quiet.elapsed());
    assert!(c.closed());
    gate.assert_drained();
}

#[test]
fn session_limit_refuses_with_421() {
    let backend = Vsftpd::start();
    let gate = Gate::start_with(backend.addr, |s| s.max_sessions = 1);
    let mut first = RawClient::connect(gate.addr);
    assert_eq!(first.reply().0, 220);
    let mut second = RawClient::connect(gate.addr);
    let (code, text) = second.reply();
    assert_eq!(code, 421);
    assert!(text.contains("Too many sessions"), "{text}");
    assert_eq!(Metrics::get(&gate.metrics.sessions_refused), 1);
    assert_eq!(first.cmd("QUIT").0, 221);
}

/// A control connection from `source` (another loopback address).
fn raw_from(source: &str, gate: SocketAddr) -> RawClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source.parse().unwrap(), 0).into()).unwrap();
    socket.connect(&gate.into()).unwrap();
    RawClient::from_stream(socket.into())
}

#[test]
fn one_passive_port_serves_two_addresses_and_one_address_waits_for_it() {
    let backend = Vsftpd::start();
    let range = port_range(1);
    let gate = Gate::start_with(backend.addr, |s| {
        s.passive_ports = range;
        s.data_connect = Duration::from_secs(2);
    });
    let mut a = RawClient::connect(gate.addr);
    a.login();
    let (code, text) = a.cmd("EPSV");
    assert_eq!(code, 229, "{text}");
    assert!(text.contains(&format!("|||{}|", range.min)));
    // Another address shares the port.
    let mut other = raw_from("127.0.0.2", gate.addr);
    other.login();
    let (code, text) = other.cmd("EPSV");
    assert_eq!(code, 229, "{text}");
    assert!(text.contains(&format!("|||{}|", range.min)), "{text}");
    // A second plain session of 127.0.0.1 waits for the port: the first
    // session's reservation ends when its client does not connect within
    // timeouts.data_connect. (Waiting until 425 is in the pool's unit tests:
    // a reservation never outlives the wait of a setup made after it.)
    let mut b = RawClient::connect(gate.addr);
    b.login();
    let started = std::time::Instant::now();
    let (code, text) = b.cmd("EPSV");
    assert_eq!(code, 229, "{text}");
    assert!(text.contains(&format!("|||{}|", range.min)), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "did not wait: {:?}", started.elapsed());
    assert_eq!(Metrics::get(&gate.metrics.passive_waits), 1);
    assert_eq!(Metrics::get(&gate.metrics.passive_ports_exhausted), 0);
    // The second session's data connection works on the shared port.
    let data = TcpStream::connect(("127.0.0.1", range.min)).unwrap();
    let (code, text) = b.cmd("LIST");
    assert_eq!(code, 150, "{text}");
    let mut listing = String::new();
    let mut data = data;
    data.read_to_string(&mut listing).unwrap();
    assert_eq!(b.reply().0, 226);
    for c in [&mut a, &mut b, &mut other] {
        assert_eq!(c.cmd("QUIT").0, 221);
    }
    gate.assert_drained();
    assert_eq!(Metrics::get(&gate.metrics.passive_reservations), 0);
}

#[test]
fn passive_range_held_by_another_program_gives_425_at_once() {
    let backend = Vsftpd::start();
    let range = port_range(1);
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", range.min)).unwrap();
    let gate = Gate::start_with(backend.addr, |s| s.passive_ports = range);
    let mut a = RawClient::connect(gate.addr);
    a.login();
    let started = std::time::Instant::now();
    let (code, text) = a.cmd("EPSV");
    assert_eq!(code, 425, "{text}");
    assert!(text.contains("in use"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2), "waited for a port nobody can free");
    assert_eq!(Metrics::get(&gate.metrics.passive_ports_exhausted), 1);
    assert_eq!(Metrics::get(&gate.metrics.passive_waits), 0);
}

#[test]
fn client_vanishing_mid_transfer_releases_everything() {
    let backend = Vsftpd::start();
    // Larger than every socket buffer on the way, so the transfer cannot have
    // completed when the client vanishes.
    backend.put("big.bin", &payload(64 * 1024 * 1024, 9));
    let gate = Gate::start(backend.addr);
    {
        let mut c = RawClient::connect(gate.addr);
        c.login();
        let (code, text) = c.cmd("PASV");
        assert_eq!(code, 227);
        let mut d = TcpStream::connect(("127.0.0.1", pasv_port(&text))).unwrap();
        assert_eq!(c.cmd("RETR big.bin").0, 150);
        let mut buf = [0u8; 4096];
        d.read_exact(&mut buf).unwrap();
        // Both connections drop here without QUIT or ABOR.
    }
    gate.assert_drained();
    // The backend's transfer was cut (vsftpd logs 426) and its login released.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !backend.log().contains("426") {
        assert!(std::time::Instant::now() < deadline, "backend transfer not ended: {}", backend.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client whose upload connection breaks (reset) must not be told the
/// upload succeeded: over a plain data leg the backend sees only an orderly
/// close and answers 226 for a truncated file; ftpgate answers 426.
#[test]
fn upload_reset_by_client_is_not_reported_complete() {
    let backend = Vsftpd::start();
    let gate = Gate::start(backend.addr);
    let mut c = RawClient::connect(gate.addr);
    c.login();
    assert_eq!(c.cmd("TYPE I").0, 200);
    let mut d = c.epsv_data();
    assert_eq!(c.cmd("STOR cut.bin").0, 150);
    d.write_all(&payload(256 * 1024, 4)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Linger zero: close sends a reset, as a crashing client's kernel does.
    socket2::SockRef::from(&d).set_linger(Some(Duration::ZERO)).unwrap();
    drop(d);
    let (code, text) = c.reply();
    assert_eq!(code, 426, "{text}");
    assert!(text.contains("client data connection failed"), "{text}");
    assert_eq!(Metrics::get(&gate.metrics.transfers_failed), 1);
    assert_eq!(c.cmd("NOOP").0, 200, "the session goes on");
    drop(c);
    gate.assert_drained();
}
