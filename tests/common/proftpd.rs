//! ProFTPD with mod_tls as a strict FTPS backend.

use super::*;

/// Where scripts/install-proftpd.sh unpacks ProFTPD.
pub fn proftpd_dir() -> PathBuf {
    PathBuf::from(std::env::var("FTPGATE_PROFTPD_DIR").unwrap_or_else(|_| "/opt/ftpgate-test/proftpd".into()))
}

/// A ProFTPD instance on loopback with mod_tls: explicit FTPS required, and its
/// default session-reuse requirement on data connections (no
/// `NoSessionReuseRequired`).
pub struct Proftpd {
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Proftpd {
    pub fn start_tls(certs: &TestCerts) -> Proftpd {
        ensure_test_user();
        let base = proftpd_dir();
        let bin = base.join("usr/sbin/proftpd");
        assert!(
            bin.exists(),
            "ProFTPD missing at {}: run scripts/install-proftpd.sh (scripts/test.sh does)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        Command::new("chown").args([USER, root.to_str().unwrap()]).status().unwrap();
        for _attempt in 0..5 {
            let token = format!("ftpgate-test-{:08x}", rand_u32());
            let port = free_port("127.0.0.1".parse().unwrap());
            let pasv = port_range(300);
            let d = dir.path().display();
            let conf = format!(
                "ServerType standalone\nServerName \"ftpgate test {token}\"\nDefaultServer on\nPort {port}\n\
             DefaultAddress 127.0.0.1\nSocketBindTight on\nUseIPv6 off\nUser {USER}\nGroup nogroup\n\
             PidFile {d}/proftpd.pid\nScoreboardFile {d}/proftpd.scoreboard\nWtmpLog off\nUseReverseDNS off\n\
             RequireValidShell off\nAuthOrder mod_auth_unix.c\nDefaultRoot {root}\nAllowOverwrite on\nUmask 022\n\
             PassivePorts {} {}\nSystemLog {d}/system.log\nTransferLog {d}/xfer.log\n\
             ModulePath {modules}\nLoadModule mod_tls.c\n\
             <IfModule mod_tls.c>\nTLSEngine on\nTLSRequired on\nTLSLog {d}/tls.log\nTLSProtocol TLSv1.2 TLSv1.3\n\
             TLSECCertificateFile {cert}\nTLSECCertificateKeyFile {key}\nTLSVerifyClient off\n</IfModule>\n",
                pasv.min,
                pasv.max,
                root = root.display(),
                modules = base.join("usr/lib/proftpd").display(),
                cert = certs.path("server.pem").display(),
                key = certs.path("server.key").display(),
            );
            let conf_path = dir.path().join("proftpd.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let child = Command::new(&bin)
                .args(["-n", "-q", "-c", conf_path.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut child = KillOnDrop::new(child);
            let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
            if greeting_from(addr, &token) {
                return Proftpd { addr, root, dir, child: child.into_inner() };
            }
            // Another test's server took the port first (see Vsftpd::start_with).
            let _ = child.child().kill();
        }
        panic!("ProFTPD did not start on a free port in 5 attempts");
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Proftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
