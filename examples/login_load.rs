//! Login load generator for the benchmark (benches/run.py): N threads each
//! run FTPS sessions back to back for a fixed time (AUTH TLS, USER/PASS, PBSZ,
//! PROT P, EPSV + LIST over a resumed TLS data connection, QUIT) and the total
//! sessions per second is printed. Written in Rust with blocking I/O so the
//! client costs far less CPU than the server it measures (the Python clients
//! it replaces were the bottleneck).
//!
//! usage: login_load ADDR CA_PEM USER PASSWORD CLIENTS SECONDS

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: login_load ADDR CA_PEM USER PASSWORD CLIENTS SECONDS");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let mut roots = RootCertStore::empty();
    for cert in ftpgate::tls::load_certs(std::path::Path::new(&args[2])).expect("CA_PEM") {
        roots.add(cert).expect("CA certificate");
    }
    let config = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let (user, password) = (args[3].clone(), args[4].clone());
    let clients: usize = args[5].parse().expect("CLIENTS");
    let seconds: u64 = args[6].parse().expect("SECONDS");
    let end = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (config, user, password) = (Arc::clone(&config), user.clone(), password.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                let mut failed = 0u64;
                while Instant::now() < end {
                    match session(addr, &config, &user, &password) {
                        Ok(()) => done += 1,
                        Err(e) => {
                            failed += 1;
                            if failed <= 3 {
                                eprintln!("session failed: {e}");
                            }
                        }
                    }
                }
                (done, failed)
            })
        })
        .collect();
    let (mut done, mut failed) = (0, 0);
    for t in threads {
        let (d, f) = t.join().expect("client thread");
        done += d;
        failed += f;
    }
    println!("{:.1}", done as f64 / seconds as f64);
    if failed > 0 {
        eprintln!("{failed} sessions failed");
        std::process::exit(1);
    }
}

fn session(addr: SocketAddr, base: &Arc<ClientConfig>, user: &str, password: &str) -> Result<(), String> {
    // Each session is a new client: its own resumption store, so the data
    // connection resumes this control connection's session and no other.
    let mut config = (**base).clone();
    config.resumption = rustls::client::Resumption::in_memory_sessions(16);
    let config = &Arc::new(config);
    let name = ServerName::IpAddress(addr.ip().into());
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).ok();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut plain = BufReader::new(tcp);
    expect(&mut plain, 220)?;
    plain.get_mut().write_all(b"AUTH TLS\r\n").map_err(|e| e.to_string())?;
    expect(&mut plain, 234)?;
    let conn = ClientConnection::new(Arc::clone(config), name.clone()).map_err(|e| e.to_string())?;
    let mut control = BufReader::new(StreamOwned::new(conn, plain.into_inner()));
    command(&mut control, &format!("USER {user}"), 331)?;
    command(&mut control, &format!("PASS {password}"), 230)?;
    command(&mut control, "PBSZ 0", 200)?;
    command(&mut control, "PROT P", 200)?;
    let epsv = command(&mut control, "EPSV", 229)?;
    let port: u16 = epsv.split('|').nth(3).and_then(|p| p.parse().ok()).ok_or_else(|| format!("bad 229: {epsv}"))?;
    let data = TcpStream::connect(SocketAddr::new(addr.ip(), port)).map_err(|e| e.to_string())?;
    data.set_read_timeout(Some(Duration::from_secs(30))).ok();
    command(&mut control, "LIST", 150)?;
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
    let mut data: Tls = StreamOwned::new(conn, data);
    let mut listing = Vec::new();
    match data.read_to_end(&mut listing) {
        Ok(_) => {}
        // A server that closes without close_notify still sent the listing.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(format!("LIST data: {e}")),
    }
    // Close our side too, as FTP clients do: servers send the final reply
    // only once the data connection is closed both ways.
    data.conn.send_close_notify();
    let _ = data.flush();
    drop(data);
    expect(&mut control, 226).map_err(|e| format!("end of LIST: {e}"))?;
    command(&mut control, "QUIT", 221)?;
    Ok(())
}

fn command<S: Read + Write>(control: &mut BufReader<S>, line: &str, want: u16) -> Result<String, String> {
    control.get_mut().write_all(format!("{line}\r\n").as_bytes()).map_err(|e| format!("{line}: {e}"))?;
    control.get_mut().flush().map_err(|e| format!("{line}: {e}"))?;
    expect(control, want).map_err(|e| format!("{line}: {e}"))
}

/// Reads one reply (multi-line too) and checks its code.
fn expect<R: Read>(r: &mut BufReader<R>, want: u16) -> Result<String, String> {
    let mut last = String::new();
    loop {
        last.clear();
        if r.read_line(&mut last).map_err(|e| e.to_string())? == 0 {
            return Err(format!("connection closed waiting for {want}"));
        }
        let b = last.as_bytes();
        if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
            break;
        }
    }
    let code: u16 = last[..3].parse().unwrap_or(0);
    if code == want {
        Ok(last.trim_end().to_string())
    } else {
        Err(format!("wanted {want}, got {}", last.trim_end()))
    }
}
