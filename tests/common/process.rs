//! The processes tests start and end by PID: ftpgate's binary and its
//! metrics, and connections from chosen loopback addresses.

use super::*;

/// A process the test started, killed (by its PID) if the test ends early.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child taken")
    }
    /// Hands the process back, no longer killed on drop.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            // A failing test shows what the process logged (see ftpgate_run).
            if std::thread::panicking() {
                if let Ok(path) = std::fs::read_link(format!("/proc/{}/fd/2", c.id())) {
                    if let Ok(log) = std::fs::read_to_string(&path) {
                        eprintln!("--- stderr of pid {} ({}) ---\n{log}", c.id(), path.display());
                    }
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ftpgate run` of the binary under test in front of `backend`, on a free
/// loopback port with a passive range of its own, stdio closed. Callers add
/// flags (and stdio or environment) and spawn it.
pub fn ftpgate_run(backend: SocketAddr) -> (Command, SocketAddr) {
    let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap()));
    let range = port_range(8);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    // The log is kept in a file and printed when the test fails.
    let log = std::fs::File::create(std::env::temp_dir().join(format!("ftpgate-test-{}.log", addr.port()))).unwrap();
    cmd.args(["run", "--listen", &addr.to_string(), "--backend", &backend.to_string()])
        .args(["--passive-ports", &format!("{}-{}", range.min, range.max)])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    (cmd, addr)
}

/// A connection from a given loopback source address (127.0.0.2, ...), to
/// test what is per address.
pub fn connect_from(source: &str, to: SocketAddr) -> RawClient {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    s.connect(&to.into()).unwrap();
    RawClient::from_stream(s.into())
}

/// One series (`name` or `name{labels}`) from a running ftpgate's
/// /metrics, if present, and the whole text.
pub fn scrape_opt(addr: SocketAddr, name: &str) -> (Option<u64>, String) {
    let out = Command::new("curl").args(["-sf", &format!("http://{addr}/metrics")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()));
    (v.map(|v| v as u64), text)
}

/// The sum of every series of a metric family (all label sets) on a running
/// ftpgate; 0 when no series of it exists yet (a labelled counter shows
/// nothing until one of its labels is counted).
pub fn scrape_sum(addr: SocketAddr, family: &str) -> u64 {
    let out = Command::new("curl").args(["-sf", &format!("http://{addr}/metrics")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ftpgate_sessions_total"), "no metrics from {addr}: {text}");
    text.lines()
        .filter(|l| l.strip_prefix(family).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One label-less series from a running ftpgate's /metrics.
pub fn scrape(addr: SocketAddr, name: &str) -> u64 {
    let (v, text) = scrape_opt(addr, name);
    v.unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

/// Waits (10 s at most) until `name` on a running ftpgate reaches `at_least`:
/// proof that something happened, instead of a sleep.
pub fn wait_for_metric(addr: SocketAddr, name: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (v, text) = scrape_opt(addr, name);
        if v.is_some_and(|v| v >= at_least) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} did not reach {at_least}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ftpgate run --config FILE` of the binary under test, stdio closed,
/// killed when the test ends.
pub fn ftpgate_with_config(config: &Path) -> KillOnDrop {
    KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_ftpgate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}
