//! Test harness: real vsftpd backends, ftpgate in-process or as the binary, and
//! helpers for real clients. Everything listens on loopback with free ports.
#![allow(dead_code, unused_imports)]

mod cluster;
mod edge;
mod process;
mod proftpd;
pub use cluster::*;
pub use edge::*;
pub use process::*;
pub use proftpd::*;

use ftpgate::config::{BackendTlsMode, ClientTlsMode, ListenerSettings, PortRange, Settings};
use ftpgate::metrics::Metrics;
use ftpgate::server::SessionContext;
use ftpgate::tls::{BackendTlsOptions, BackendVerify, ServerTlsOptions, TlsVersion};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const USER: &str = "ftpgatetest";
/// A second system user with the same password, for per-user policy tests.
pub const USER2: &str = "ftpgatetest2";
pub const PASSWORD: &str = "ftpgate-Test-pw1";
const PAM_SERVICE: &str = "ftpgate-test";

/// Creates the system user and PAM service vsftpd authenticates against.
/// Idempotent and serialised across test processes with flock.
pub fn ensure_test_user() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = format!(
            "for u in {USER} {USER2}; do id -u $u >/dev/null 2>&1 || useradd -M -d / -s /usr/sbin/nologin $u; \
             usermod -d / $u >/dev/null 2>&1; echo \"$u:{PASSWORD}\" | chpasswd; done; \
             [ -f /etc/pam.d/{PAM_SERVICE} ] || printf 'auth required pam_unix.so\\naccount required pam_unix.so\\nsession required pam_permit.so\\n' > /etc/pam.d/{PAM_SERVICE}; \
             mkdir -p /var/run/vsftpd/empty"
        );
        let st = Command::new("flock").args(["/tmp/ftpgate-test-setup.lock", "sh", "-c", &script]).status().expect("flock");
        assert!(st.success(), "creating the test user failed (tests need root: run scripts/test.sh)");
    });
}

pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0)).unwrap().local_addr().unwrap().port()
}

/// A range of `len` ports that are free on loopback now, below Linux's
/// ephemeral range: a random start in 20000-32000, checked port by port and
/// drawn again when another service holds one of them.
pub fn port_range(len: u16) -> PortRange {
    for _ in 0..200 {
        let min = 20000 + (rand_u32() % (12000 - u32::from(len))) as u16;
        // One port at a time, each released at once: a range of thousands
        // must not need thousands of descriptors (the soft limit may be 1024).
        if (min..min + len).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return PortRange { min, max: min + len - 1 };
        }
    }
    panic!("no run of {len} free ports in 20000-32000 on 127.0.0.1");
}

/// `listener.accept()` with a deadline: a test waiting for a connection
/// that never comes fails instead of hanging the suite.
pub fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                listener.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection to {:?} within {limit:?}", listener.local_addr());
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

pub fn rand_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    h.finish() as u32
}

pub fn wait_for_greeting(addr: SocketAddr) {
    greeting(addr);
}

/// Whether the server at `addr` greets with a 220 line containing `token`
/// (false: it greets with something else, so it is another test's server).
pub fn greeting_from(addr: SocketAddr, token: &str) -> bool {
    greeting(addr).contains(token)
}

/// The first 220 line from `addr`, waiting up to 10 s for a server to listen.
fn greeting(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("220") {
                return line;
            }
        }
        assert!(Instant::now() < deadline, "no FTP greeting from {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// For servers that greet only after a TLS handshake (implicit FTPS).
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A vsftpd instance on loopback with its own config, root folder and log.
pub struct Vsftpd {
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Vsftpd {
    pub fn start() -> Vsftpd {
        Vsftpd::start_with("127.0.0.1".parse().unwrap(), "")
    }

    /// `extra` is appended to the generated vsftpd.conf.
    pub fn start_with(ip: IpAddr, extra: &str) -> Vsftpd {
        ensure_test_user();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let st = Command::new("chown").args([USER, root.to_str().unwrap()]).status().unwrap();
        assert!(st.success());
        // Both test users share the folder, as the first customer's users did.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        // A port picked by binding to port 0 can be taken by another test's
        // server before vsftpd binds it; vsftpd then exits and the greeting
        // would come from the other server. A unique banner tells them apart.
        for _attempt in 0..5 {
            let port = free_port(ip);
            let pasv = port_range(300);
            let token = format!("ftpgate-test-{:08x}", rand_u32());
            let listen = if ip.is_ipv4() {
                format!("listen=YES\nlisten_ipv6=NO\nlisten_address={ip}\n")
            } else {
                format!("listen=NO\nlisten_ipv6=YES\nlisten_address6={ip}\n")
            };
            let conf = format!(
                "{listen}listen_port={port}\nbackground=NO\nanonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\n\
                 local_umask=022\nchroot_local_user=YES\nallow_writeable_chroot=YES\nlocal_root={root}\n\
                 pam_service_name={PAM_SERVICE}\ncheck_shell=NO\nseccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\n\
                 pasv_enable=YES\npasv_min_port={}\npasv_max_port={}\nport_enable=YES\n\
                 xferlog_enable=YES\nxferlog_std_format=NO\nlog_ftp_protocol=YES\nvsftpd_log_file={log}\n\
                 max_clients=0\nmax_per_ip=0\nidle_session_timeout=120\ndata_connection_timeout=60\n\
                 ftpd_banner={token}\n{extra}\n",
                pasv.min,
                pasv.max,
                root = root.display(),
                log = dir.path().join("vsftpd.log").display(),
            );
            let conf_path = dir.path().join("vsftpd.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let child = Command::new("vsftpd")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("vsftpd not installed: run scripts/test.sh");
            let mut child = KillOnDrop::new(child);
            let addr = SocketAddr::new(ip, port);
            let up = if extra.contains("implicit_ssl=YES") {
                wait_for_port(addr);
                // Implicit FTPS greets only inside TLS: a vsftpd that lost
                // the port has exited by now.
                std::thread::sleep(Duration::from_millis(100));
                child.child().try_wait().unwrap().is_none()
            } else {
                greeting_from(addr, &token)
            };
            if up {
                return Vsftpd { addr, root, dir, child: child.into_inner() };
            }
        }
        panic!("vsftpd did not start on a free port in 5 attempts");
    }

    /// The backend's protocol log: what commands actually reached it.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vsftpd.log")).unwrap_or_default()
    }

    /// The protocol log once it shows `marker` (waiting up to 5 s: vsftpd
    /// writes it from another process). The positive control for a test
    /// that asserts something is *not* in the log: a log that is missing or
    /// not written reads as empty, and every "not in the log" would pass.
    pub fn log_after(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(marker) {
                return log;
            }
            assert!(Instant::now() < deadline, "vsftpd's log never showed {marker:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes a file into the served folder, owned by the FTP user.
    pub fn put(&self, name: &str, data: &[u8]) {
        let p = self.root.join(name);
        std::fs::write(&p, data).unwrap();
        Command::new("chown").args([USER, p.to_str().unwrap()]).status().unwrap();
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Settings for a test instance of ftpgate in front of `backend`.
pub fn settings(backend: SocketAddr, listen: SocketAddr) -> Settings {
    Settings {
        policy: None,
        metrics: None,
        xferlog: None,
        listeners: vec![ListenerSettings {
            address: listen,
            tls: ClientTlsMode::Off,
            proxy_protocol: false,
            proxy_from: Default::default(),
        }],
        backend: backend.to_string(),
        named_backends: Default::default(),
        client_tls: None,
        require_session_reuse: true,
        client_cert_user_match: false,
        backend_tls: BackendTlsMode::Off,
        backend_tls_options: BackendTlsOptions {
            verify: BackendVerify::SystemRoots,
            server_name: None,
            max_version: TlsVersion::V13,
        },
        backend_proxy_protocol: None,
        passive_ports: port_range(4),
        public_address: None,
        idle_control: Duration::from_secs(60),
        data_connect: Duration::from_secs(10),
        transfer_stall: Duration::from_secs(30),
        backend_connect: Duration::from_secs(5),
        backend_reply: Duration::from_secs(15),
        drain: Duration::from_secs(5),
        max_sessions: 1000,
        max_sessions_per_address: 50,
        max_bad_commands: 10,
        max_bad_commands_after_login: 100,
        status_page: true,
        ipv6_prefix: 64,
        login_timeout: Duration::from_secs(60),
        banner: ftpgate::config::DEFAULT_BANNER.to_string(),
        admin_socket: None,
        backend_pool: vec![backend.to_string()],
        balance: ftpgate::config::Balance::LeastConnections,
        health_interval: Duration::from_secs(5),
        cluster: None,
        scan: None,
        connectors: None,
    }
}

/// ftpgate running in this process on its own runtime, so tests can read its
/// metrics. Dropping it stops the accept loops and the runtime.
pub struct Gate {
    pub addr: SocketAddr,
    /// Where /metrics, /healthz and /readyz answer.
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    /// What SIGHUP swaps in the binary; tests reload through it directly.
    pub live: Arc<ftpgate::server::LiveContext>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    pub fn start(backend: SocketAddr) -> Gate {
        Gate::start_on("127.0.0.1".parse().unwrap(), backend, |_| {})
    }

    pub fn start_with(backend: SocketAddr, tweak: impl FnOnce(&mut Settings)) -> Gate {
        Gate::start_on("127.0.0.1".parse().unwrap(), backend, tweak)
    }

    pub fn start_on(ip: IpAddr, backend: SocketAddr, tweak: impl FnOnce(&mut Settings)) -> Gate {
        if let Ok(filter) = std::env::var("FTPGATE_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let std_listener = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        metrics_listener.set_nonblocking(true).unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut s = settings(backend, addr);
        tweak(&mut s);
        let mode = s.listeners[0].clone();
        let metrics = Metrics::new();
        let ctx = Arc::new(SessionContext::new(s, Arc::clone(&metrics)).expect("TLS setup"));
        let settings = Arc::clone(&ctx.settings);
        let live = Arc::new(ftpgate::server::LiveContext::new(ctx));
        let live_for_gate = Arc::clone(&live);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let exporter = tokio::net::TcpListener::from_std(metrics_listener).unwrap();
                tokio::spawn(ftpgate::server::exporter::serve(exporter, Arc::clone(&live)));
                ftpgate::server::run(vec![(listener, mode)], live, async {
                    let _ = rx.await;
                })
                .await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Gate { addr, metrics_addr, metrics, settings, live: live_for_gate, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("ftp://{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("ftp://[{}]:{}", a.ip(), a.port()),
        }
    }

    /// Waits until no session, passive listener or data channel is left open.
    pub fn assert_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = &self.metrics;
            let open = [
                Metrics::get(&m.sessions_open),
                Metrics::get(&m.passive_listeners_open),
                Metrics::get(&m.data_channels_open),
            ];
            if open == [0, 0, 0] {
                return;
            }
            assert!(Instant::now() < deadline, "resources still open (sessions, passive, data): {open:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            // A panic in ftpgate's runtime thread fails the test (unless the
            // test is already failing: a second panic would abort).
            if t.join().is_err() && !std::thread::panicking() {
                panic!("ftpgate's server thread panicked");
            }
        }
    }
}

pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(p: &Path) -> String {
    sha256(&std::fs::read(p).unwrap())
}

/// Deterministic pseudo-random bytes (incompressible, so no layer can cheat).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a client program with a hard time limit, so a hang fails the test
/// instead of the suite.
pub fn run_client(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("client");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client timed out after {limit:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

pub fn curl(args: &[&str]) -> Output {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "60", "--user", &format!("{USER}:{PASSWORD}")]).args(args);
    run_client(&mut c, Duration::from_secs(90))
}

pub fn python_client(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ftplib_client.py");
    let mut c = Command::new("python3");
    c.arg(script).args(args);
    run_client(&mut c, Duration::from_secs(90))
}

pub fn lftp(url: &str, script: &str) -> Output {
    let mut c = Command::new("lftp");
    c.args([
        "-c",
        &format!(
            "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 20; set net:reconnect-interval-base 1; set ftp:ssl-allow no; \
             set xfer:clobber on; open -u {USER},{PASSWORD} {url}; {script}"
        ),
    ]);
    run_client(&mut c, Duration::from_secs(90))
}

/// A raw control connection for exact reply-code assertions.
pub struct RawClient {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(TcpStream::connect(addr).unwrap())
    }

    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        RawClient { stream, reader }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Reads one whole (possibly multi-line) reply: code and full text.
    pub fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        let mut first = String::new();
        self.reader.read_line(&mut first).unwrap();
        assert!(first.len() >= 3, "connection closed instead of a reply (got {first:?})");
        all.push_str(&first);
        let code: u16 = first[..3].parse().unwrap_or_else(|_| panic!("bad reply line {first:?}"));
        if first.as_bytes().get(3) == Some(&b'-') {
            loop {
                let mut l = String::new();
                if self.reader.read_line(&mut l).unwrap() == 0 {
                    break;
                }
                all.push_str(&l);
                if l.len() >= 4 && l[..3] == first[..3] && &l[3..4] == " " {
                    break;
                }
            }
        }
        (code, all)
    }

    /// True once the server has closed the connection (EOF or reset). A
    /// server that stays silent until the read timeout has not closed it.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted),
        }
    }

    /// EPSV, then a data connection to the port it names.
    pub fn epsv_data(&mut self) -> TcpStream {
        let (code, text) = self.cmd("EPSV");
        assert_eq!(code, 229, "{text}");
        TcpStream::connect((self.stream.peer_addr().unwrap().ip(), epsv_port(&text))).unwrap()
    }

    pub fn login(&mut self) {
        assert_eq!(self.reply().0, 220);
        self.login_after_greeting();
    }

    pub fn login_after_greeting(&mut self) {
        assert_eq!(self.cmd(&format!("USER {USER}")).0, 331);
        assert_eq!(self.cmd(&format!("PASS {PASSWORD}")).0, 230);
    }
}

/// A CA, a server certificate for 127.0.0.1/::1/localhost and client
/// certificates `alice` and `bob`, all made by ftpgate's own generator.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        ftpgate::tls::certs::init(
            dir.path(),
            &["127.0.0.1".into(), "::1".into(), "localhost".into()],
            ftpgate::tls::certs::Holders {
                clients: &["alice".into(), "bob".into()],
                connectors: &["dc1".into(), "dc2".into()],
            },
            false,
            ftpgate::tls::certs::KeyType::Ecdsa,
        )
        .unwrap();
        TestCerts { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Client-leg options with this server certificate.
    pub fn server_options(&self) -> ServerTlsOptions {
        ServerTlsOptions {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: None,
            min_version: TlsVersion::V12,
            cipher_suites: vec![],
        }
    }
}

impl Default for TestCerts {
    fn default() -> Self {
        TestCerts::new()
    }
}

/// vsftpd settings for a strict FTPS backend: TLS required for logins and data,
/// data connections must reuse the control session. `implicit` for implicit FTPS.
pub fn vsftpd_tls_conf(certs: &TestCerts, implicit: bool) -> String {
    format!(
        "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nforce_local_logins_ssl=YES\n\
         force_local_data_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH\nssl_tlsv1=NO\nssl_sslv2=NO\nssl_sslv3=NO\n\
         implicit_ssl={}\n",
        certs.path("server.pem").display(),
        certs.path("server.key").display(),
        if implicit { "YES" } else { "NO" }
    )
}

/// Settings tweak: backend leg over TLS, verified against the test CA.
pub fn backend_tls(certs: &TestCerts, mode: BackendTlsMode, max: TlsVersion) -> impl FnOnce(&mut Settings) {
    let ca = certs.path("ca.pem");
    move |s: &mut Settings| {
        s.backend_tls = mode;
        s.backend_tls_options =
            BackendTlsOptions { verify: BackendVerify::CaFile(ca), server_name: None, max_version: max };
    }
}

/// The port of a `229 ... (|||port|)` reply.
pub fn epsv_port(reply: &str) -> u16 {
    let inside = &reply[reply.find("(|||").expect("229 reply") + 4..];
    inside[..inside.find('|').unwrap()].parse().unwrap()
}

/// The port of a `227 ... (h1,h2,h3,h4,p1,p2)` reply.
pub fn pasv_port(reply: &str) -> u16 {
    let inside = &reply[reply.find('(').expect("227 reply") + 1..reply.find(')').unwrap()];
    let n: Vec<u16> = inside.split(',').map(|x| x.trim().parse().unwrap()).collect();
    n[4] * 256 + n[5]
}
