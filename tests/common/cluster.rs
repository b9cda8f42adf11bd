//! Real `redis-server` and HAProxy (Debian packages) on loopback, started
//! and stopped by PID like vsftpd.

use super::*;

/// A redis-server on a free loopback port, no persistence.
pub struct Redis {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Option<KillOnDrop>,
    /// TLS only (`rediss://`), with the test CA's server certificate.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(None)
    }

    /// A redis-server that speaks TLS only, with `certs`' server certificate.
    pub fn start_tls(certs: &TestCerts) -> Redis {
        Redis::start_with(Some((certs.path("server.pem"), certs.path("server.key"), certs.path("ca.pem"))))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Redis {
        let mut dir = tempfile::tempdir().unwrap();
        for _attempt in 0..5 {
            let port = free_port("127.0.0.1".parse().unwrap());
            let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
            let mut r = Redis { addr, dir, child: None, tls: tls.clone() };
            if r.spawn() {
                return r;
            }
            dir = r.dir;
        }
        panic!("redis-server did not start on a free port in 5 attempts");
    }

    /// Starts it on `addr` (again, after `stop`); whether it answers PING.
    fn spawn(&mut self) -> bool {
        let port = self.addr.port().to_string();
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some((cert, key, ca)) => cmd
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                .args(["--tls-cert-file", cert.to_str().unwrap(), "--tls-key-file", key.to_str().unwrap()])
                .args(["--tls-ca-cert-file", ca.to_str().unwrap()]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.path().to_str().unwrap(), "--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not installed: run scripts/test.sh");
        self.child = Some(KillOnDrop::new(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).trim() == "PONG" {
                return true;
            }
            if self.child.as_mut().unwrap().child().try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{}/0", self.addr)
    }

    /// Stops the server (by its PID); `restart` brings it back on the same port.
    pub fn stop(&mut self) {
        self.child = None;
    }

    pub fn restart(&mut self) {
        assert!(self.spawn(), "redis-server did not come back on {}", self.addr);
    }

    /// One redis-cli command's output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()]);
        if let Some((_, _, ca)) = &self.tls {
            cmd.args(["--tls", "--cacert", ca.to_str().unwrap()]);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// An HAProxy (`haproxy -db`, in the foreground) with the given configuration.
pub struct Haproxy {
    pub dir: tempfile::TempDir,
    _child: KillOnDrop,
}

impl Haproxy {
    /// Starts HAProxy and waits until `wait_on` accepts connections.
    pub fn start(config: &str, wait_on: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("haproxy").args(["-c", "-q", "-f", path.to_str().unwrap()]).output().unwrap();
        assert!(check.status.success(), "haproxy -c:\n{}", String::from_utf8_lossy(&check.stderr));
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy not installed: run scripts/test.sh");
        let child = KillOnDrop::new(child);
        wait_for_port(wait_on);
        Haproxy { dir, _child: child }
    }
}
