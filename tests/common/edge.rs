//! The edge and connector processes of the connector tests (issue 21).

use super::*;
use std::path::Path;

/// The edge: `ftpgate run` with `[connectors]` and a backend `connector:NAME`.
pub struct Edge {
    _process: KillOnDrop,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub connectors: SocketAddr,
    log: std::path::PathBuf,
}

impl Edge {
    pub fn start(certs: &TestCerts, backend: &str, extra: &[&str]) -> Edge {
        Edge::start_on(certs, backend, extra, None)
    }

    /// `connectors`: the connector listener's address (to restart an edge
    /// on the same one); a free port otherwise.
    pub fn start_on(certs: &TestCerts, backend: &str, extra: &[&str], connectors: Option<SocketAddr>) -> Edge {
        Edge::start_as(Command::new(env!("CARGO_BIN_EXE_ftpgate")), certs.dir.path(), backend, extra, connectors)
    }

    /// `command`: the binary, or a wrapper that runs it as another user;
    /// `certs`: the folder with ca.pem, server.pem and server.key.
    pub fn start_as(
        mut command: Command,
        certs: &Path,
        backend: &str,
        extra: &[&str],
        connectors: Option<SocketAddr>,
    ) -> Edge {
        let lo = "127.0.0.1".parse().unwrap();
        let addr = SocketAddr::new(lo, free_port(lo));
        let metrics = SocketAddr::new(lo, free_port(lo));
        let connectors = connectors.unwrap_or_else(|| SocketAddr::new(lo, free_port(lo)));
        let range = port_range(4);
        let log = std::env::temp_dir().join(format!("ftpgate-edge-{}.log", addr.port()));
        let process = KillOnDrop::new(
            command
                .args(["run", "--listen", &addr.to_string(), "--backend", backend])
                .args(["--passive-ports", &format!("{}-{}", range.min, range.max)])
                .args(["--metrics", &metrics.to_string(), "--connector-listen", &connectors.to_string()])
                .args(["--connector-ca", certs.join("ca.pem").to_str().unwrap()])
                .args(["--cert", certs.join("server.pem").to_str().unwrap()])
                .args(["--key", certs.join("server.key").to_str().unwrap()])
                .args(extra)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_for_port(metrics);
        Edge { _process: process, addr, metrics, connectors, log }
    }

    pub fn url(&self) -> String {
        format!("ftp://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (15 s at most) until connector `name` has `links` live links.
    pub fn wait_links(&self, name: &str, links: u64) {
        let series = format!("ftpgate_connector_links{{name=\"{name}\"}}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (v, text) = scrape_opt(self.metrics, &series);
            if v == Some(links) {
                return;
            }
            assert!(Instant::now() < deadline, "{series} never reached {links}:\n{text}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ftpgate connector` dialling `edge` for `backend`.
pub fn connector(certs: &TestCerts, edge: SocketAddr, name: &str, backend: SocketAddr, extra: &[&str]) -> KillOnDrop {
    let log = std::env::temp_dir().join(format!("ftpgate-connector-{name}-{}.log", rand_u32()));
    KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_ftpgate"))
            .args(["connector", "--edge", &edge.to_string(), "--name", name, "--backend", &backend.to_string()])
            .args(["--cert", certs.path(&format!("connector-{name}.pem")).to_str().unwrap()])
            .args(["--key", certs.path(&format!("connector-{name}.key")).to_str().unwrap()])
            .args(["--ca", certs.path("ca.pem").to_str().unwrap()])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

pub fn write_payload(dir: &Path, name: &str, len: usize, seed: u64) -> String {
    let data = payload(len, seed);
    std::fs::write(dir.join(name), &data).unwrap();
    sha256(&data)
}
