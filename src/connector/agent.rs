//! `ftpgate connector`: runs inside the private network, dials out to the
//! edge (`links` TLS connections, each HTTP/2 with this side as the server)
//! and opens, for each stream the edge asks for, a TCP connection to its own
//! backend: the control address it was given, or that host's passive ports.
//! It never connects anywhere else, whatever the edge asks, so an edge taken
//! over reaches the FTP server and nothing more of the private network.

use super::edge::hex;
use super::tunnel::StreamCount;
use super::{CONNECTION_WINDOW, FRAME_SIZE, HEADER_BACKEND, HEADER_INSTANCE, HEADER_NAME, HEADER_PEER, HEADER_REASON};
use super::{HELLO_PATH, STREAM_WINDOW};
use crate::tls::read_ahead::ReadAhead;
use bytes::Bytes;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

/// Backend connections must be made within this.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Dialling the edge (TCP, TLS, HTTP/2 preface) must be done within this.
const EDGE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off after a failed link: from `BACKOFF_FIRST`, doubling, with
/// jitter, to `BACKOFF_CAP`. While the edge merely refuses connections (it
/// is restarting) the cap is `BACKOFF_CAP_REFUSED`, so links come back
/// within a second of it listening again.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
const BACKOFF_CAP_REFUSED: Duration = Duration::from_secs(1);
/// The reason given for a session refused while stopping.
pub(super) const DRAINING: &str = "connector stopping";
/// Bytes read at once from either side of a stream.
const CARRY_BUFFER: usize = 256 * 1024;
/// Links are pinged this often; one unanswered for `PING_TIMEOUT` is dead.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

pub use crate::config::ConnectorSettings as AgentSettings;

#[derive(Default)]
struct Counters {
    links_up: AtomicUsize,
    streams_open: Arc<AtomicUsize>,
    reconnects: AtomicU64,
    bytes_to_backend: AtomicU64,
    bytes_from_backend: AtomicU64,
    streams: Mutex<BTreeMap<&'static str, u64>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    fn bump(m: &Mutex<BTreeMap<&'static str, u64>>, k: &'static str) {
        *m.lock().unwrap_or_else(|e| e.into_inner()).entry(k).or_insert(0) += 1;
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let g = |o: &mut String, n: &str, h: &str, t: &str, v: u64| {
            let _ = writeln!(o, "# HELP {n} {h}\n# TYPE {n} {t}\n{n} {v}");
        };
        g(
            &mut o,
            "ftpgate_connector_links_up",
            "Links to the edge up now.",
            "gauge",
            self.links_up.load(Ordering::Relaxed) as u64,
        );
        g(
            &mut o,
            "ftpgate_connector_streams_open",
            "Streams open now.",
            "gauge",
            self.streams_open.load(Ordering::Relaxed) as u64,
        );
        g(
            &mut o,
            "ftpgate_connector_reconnects_total",
            "Links to the edge opened again after one ended or failed.",
            "counter",
            self.reconnects.load(Ordering::Relaxed),
        );
        let _ = writeln!(o, "# HELP ftpgate_connector_bytes_total Bytes carried, by direction.\n# TYPE ftpgate_connector_bytes_total counter");
        let _ = writeln!(
            o,
            "ftpgate_connector_bytes_total{{direction=\"to_backend\"}} {}",
            self.bytes_to_backend.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "ftpgate_connector_bytes_total{{direction=\"from_backend\"}} {}",
            self.bytes_from_backend.load(Ordering::Relaxed)
        );
        let _ = writeln!(o, "# HELP ftpgate_connector_streams_total Streams served, by kind.\n# TYPE ftpgate_connector_streams_total counter");
        for (k, n) in self.streams.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "ftpgate_connector_streams_total{{kind=\"{k}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP ftpgate_connector_refused_total Streams refused: a target outside this connector's backend, a backend that did not answer.\n# TYPE ftpgate_connector_refused_total counter");
        for (k, n) in self.refused.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "ftpgate_connector_refused_total{{reason=\"{k}\"}} {n}");
        }
        o
    }
}

struct Agent {
    settings: AgentSettings,
    instance: String,
    tls: tokio_rustls::TlsConnector,
    counters: Counters,
    /// Stopping: new sessions (control streams) are refused with 503.
    draining: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("connector --metrics {0}: {1}")]
    Metrics(SocketAddr, std::io::Error),
}

fn client_config(s: &AgentSettings) -> Result<rustls::ClientConfig, crate::tls::TlsError> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| crate::tls::TlsError::Config(e.to_string()))?;
    let builder = match (&s.fingerprint, &s.ca) {
        (Some(pin), _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::verify::Pinned::new(Some(*pin), provider))),
        (None, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in crate::tls::load_certs(ca)? {
                roots.add(c).map_err(|e| crate::tls::TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            builder.with_root_certificates(roots)
        }
        (None, None) => {
            return Err(crate::tls::TlsError::Config("connector: --ca or --edge-fingerprint is required".into()))
        }
    };
    let mut config = builder
        .with_client_auth_cert(crate::tls::load_certs(&s.cert)?, crate::tls::load_key(&s.key)?)
        .map_err(|e| crate::tls::TlsError::Config(format!("{}: {e}", s.cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Runs the connector until `stop` turns true, then drains: new sessions
/// are refused (the edge sends them to another connector of the name) while
/// the sessions already here keep their control streams and may still open
/// data streams, for up to `drain`; then the links close.
pub async fn run(settings: AgentSettings, mut stop: watch::Receiver<bool>) -> Result<(), AgentError> {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(&settings)?));
    let instance = hex(&rand::thread_rng().gen::<[u8; 8]>());
    let agent =
        Arc::new(Agent { settings, instance, tls, counters: Counters::default(), draining: Default::default() });
    if let Some(addr) = agent.settings.metrics {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| AgentError::Metrics(addr, e))?;
        tokio::spawn(serve_metrics(listener, Arc::clone(&agent)));
    }
    info!(target: "ftpgate::connector", name = %agent.settings.name, edge = %agent.settings.edge,
        backend = %agent.settings.backend, links = agent.settings.links, instance = %agent.instance, "connector starting");
    let links: Vec<_> =
        (0..agent.settings.links.max(1)).map(|i| tokio::spawn(link_loop(Arc::clone(&agent), i))).collect();
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    agent.draining.store(true, Ordering::Relaxed);
    let open = agent.counters.streams_open.load(Ordering::Relaxed);
    info!(target: "ftpgate::connector", streams = open, drain_seconds = agent.settings.drain.as_secs(),
        "connector stopping: new sessions refused, open streams drain");
    let drained = tokio::time::timeout(agent.settings.drain, async {
        while agent.counters.streams_open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if drained.is_err() {
        warn!(target: "ftpgate::connector", streams = agent.counters.streams_open.load(Ordering::Relaxed),
            "drain time over: cutting the streams still open");
    }
    for l in links {
        l.abort();
    }
    Ok(())
}

fn backoff(failures: u32, refused: bool) -> Duration {
    let cap = if refused { BACKOFF_CAP_REFUSED } else { BACKOFF_CAP };
    let base = BACKOFF_FIRST.saturating_mul(1 << failures.min(16)).min(cap);
    // Jitter (50-100%) so connectors restarted together do not dial in step.
    base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// Keeps one link up: dials, serves, dials again. Ends when `run` aborts it.
async fn link_loop(agent: Arc<Agent>, index: usize) {
    let mut failures = 0u32;
    let mut served_before = false;
    loop {
        let dialled = tokio::time::timeout(EDGE_CONNECT_TIMEOUT, dial(&agent)).await;
        let refused = match dialled {
            Ok(Ok(connection)) => {
                if served_before {
                    agent.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                served_before = true;
                failures = 0;
                info!(target: "ftpgate::connector", link = index, edge = %agent.settings.edge, "link to the edge up");
                let why = serve(&agent, connection).await;
                warn!(target: "ftpgate::connector", link = index, reason = %why, "link to the edge ended; dialling again");
                // Reconnect at once after a link that worked.
                continue;
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    warn!(target: "ftpgate::connector", link = index, edge = %agent.settings.edge, error = %e, failures,
                        "cannot reach the edge; trying again with back-off");
                }
                e.kind() == std::io::ErrorKind::ConnectionRefused
            }
            Err(_) => {
                failures += 1;
                false
            }
        };
        tokio::time::sleep(backoff(failures, refused)).await;
    }
}

type Connection = h2::server::Connection<tokio_rustls::client::TlsStream<ReadAhead<TcpStream>>, Bytes>;

async fn dial(agent: &Agent) -> std::io::Result<Connection> {
    let tcp = TcpStream::connect(&agent.settings.edge).await?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(agent.settings.edge_name.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tls = agent.tls.connect(name, ReadAhead::data(tcp)).await?;
    h2::server::Builder::new()
        .max_concurrent_streams(agent.settings.max_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE)
        // Bounds what a misbehaving edge can make this side hold.
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(STREAM_WINDOW as usize)
        .handshake(tls)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Serves one link until it ends.
async fn serve(agent: &Arc<Agent>, mut connection: Connection) -> String {
    agent.counters.links_up.fetch_add(1, Ordering::Relaxed);
    // An edge host that vanished without a FIN is noticed by a ping that
    // goes unanswered, and the link is dialled again.
    let mut ping = connection.ping_pong();
    let keepalive = async {
        let Some(ping) = ping.as_mut() else { return std::future::pending::<String>().await };
        loop {
            tokio::time::sleep(PING_INTERVAL).await;
            match tokio::time::timeout(PING_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("ping failed: {e}"),
                Err(_) => return "the edge did not answer a ping within 20 s".to_string(),
            }
        }
    };
    tokio::pin!(keepalive);
    let why = loop {
        tokio::select! {
            why = &mut keepalive => break why,
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    tokio::spawn(stream(Arc::clone(agent), request, respond));
                }
                Some(Err(e)) => break e.to_string(),
                None => break "closed by the edge".to_string(),
            },
        }
    };
    agent.counters.links_up.fetch_sub(1, Ordering::Relaxed);
    why
}

fn answer(
    respond: &mut h2::server::SendResponse<Bytes>,
    status: http::StatusCode,
    headers: &[(&str, String)],
) -> Option<h2::SendStream<Bytes>> {
    let mut r = http::Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    let response = r.body(()).ok()?;
    respond
        .send_response(response, status != http::StatusCode::OK || headers.iter().any(|(k, _)| *k == HEADER_NAME))
        .ok()
}

/// The backend's addresses and port now (a host name resolved again per
/// stream, so a backend that moves is followed).
async fn backend_addresses(backend: &str) -> Vec<SocketAddr> {
    tokio::net::lookup_host(backend).await.map(|a| a.collect()).unwrap_or_default()
}

/// Whether the edge may have `target`: the backend's control address, or a
/// port of the backend host in `ports` (default: any unprivileged port,
/// where passive ports live). Nothing else.
fn allowed(target: SocketAddr, backend: &[SocketAddr], ports: Option<(u16, u16)>) -> bool {
    let host = |ip: IpAddr| backend.iter().any(|b| b.ip().to_canonical() == ip.to_canonical());
    if backend.iter().any(|b| b.ip().to_canonical() == target.ip().to_canonical() && b.port() == target.port()) {
        return true;
    }
    let port_ok = match ports {
        Some((lo, hi)) => (lo..=hi).contains(&target.port()),
        // Passive ports are unprivileged; ssh, smtp and the rest are not.
        None => target.port() >= 1024,
    };
    host(target.ip()) && port_ok
}

async fn stream(
    agent: Arc<Agent>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let s = &agent.settings;
    let c = &agent.counters;
    if request.method() == http::Method::GET && request.uri().path() == HELLO_PATH {
        let backend =
            backend_addresses(&s.backend).await.first().map_or_else(|| s.backend.clone(), SocketAddr::to_string);
        answer(
            &mut respond,
            http::StatusCode::OK,
            &[(HEADER_NAME, s.name.clone()), (HEADER_INSTANCE, agent.instance.clone()), (HEADER_BACKEND, backend)],
        );
        return;
    }
    let target = (request.method() == http::Method::CONNECT)
        .then(|| request.uri().authority().and_then(|a| a.as_str().parse::<SocketAddr>().ok()))
        .flatten();
    let backend = backend_addresses(&s.backend).await;
    let Some(target) = target.filter(|t| allowed(*t, &backend, s.ports)) else {
        Counters::bump(&c.refused, "target");
        let asked = request.uri().to_string();
        warn!(target: "ftpgate::audit", connector = %s.name, asked = %crate::text::shown(&asked, 200), backend = %s.backend,
            "stream refused: the edge asked for a target outside this connector's backend");
        answer(
            &mut respond,
            http::StatusCode::FORBIDDEN,
            &[(HEADER_REASON, "target not allowed by the connector".into())],
        );
        return;
    };
    let kind = if backend.contains(&target) { "control" } else { "data" };
    if kind == "control" && agent.draining.load(Ordering::Relaxed) {
        // A new session: the edge takes it to another connector of the name.
        answer(&mut respond, http::StatusCode::SERVICE_UNAVAILABLE, &[(HEADER_REASON, DRAINING.into())]);
        return;
    }
    let tcp = match tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            Counters::bump(&c.refused, "backend_unreachable");
            answer(&mut respond, http::StatusCode::BAD_GATEWAY, &[(HEADER_REASON, format!("backend {target}: {e}"))]);
            return;
        }
        Err(_) => {
            Counters::bump(&c.refused, "backend_unreachable");
            answer(
                &mut respond,
                http::StatusCode::GATEWAY_TIMEOUT,
                &[(HEADER_REASON, format!("backend {target}: no answer within 10 s"))],
            );
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let Some(send) = answer(&mut respond, http::StatusCode::OK, &[(HEADER_PEER, target.to_string())]) else { return };
    Counters::bump(&c.streams, kind);
    let _open = StreamCount::new(&c.streams_open);
    let (to_backend, from_backend, cut) = carry(send, request.into_body(), tcp).await;
    c.bytes_to_backend.fetch_add(to_backend, Ordering::Relaxed);
    c.bytes_from_backend.fetch_add(from_backend, Ordering::Relaxed);
    if cut {
        Counters::bump(&c.streams, "cut");
    }
}

/// Copies both ways until both ends are done. Returns the bytes each way
/// and whether the edge cut its side (reset) while the backend's side was
/// still open: then the backend connection is reset too, so a cut upload
/// never looks complete to the server. A stream the edge ended
/// (END_STREAM) closes politely.
///
/// Works on the HTTP/2 stream itself rather than through `Tunnel`: data
/// frames are written to the server straight from the buffers h2 hands
/// over, and the server's bytes go to h2 in the buffer they were read into,
/// one copy fewer each way.
async fn carry(mut send: h2::SendStream<Bytes>, mut recv: h2::RecvStream, mut tcp: TcpStream) -> (u64, u64, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, down) = {
        let (mut from_backend, mut to_backend) = tcp.split();
        let up = async {
            let mut moved = 0u64;
            while let Some(data) = std::future::poll_fn(|cx| recv.poll_data(cx)).await {
                let data = data.map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionReset, e.to_string()))?;
                to_backend.write_all(&data).await?;
                moved += data.len() as u64;
                // The window opens again only for what the server took.
                let _ = recv.flow_control().release_capacity(data.len());
            }
            let _ = to_backend.shutdown().await;
            Ok::<u64, std::io::Error>(moved)
        };
        let down = async {
            let failed = |e: h2::Error| std::io::Error::new(std::io::ErrorKind::ConnectionReset, e.to_string());
            let mut moved = 0u64;
            // One allocation reused: each read is split off for h2, and once
            // h2 has sent it `reserve` takes the same memory back.
            let mut buf = bytes::BytesMut::new();
            loop {
                buf.reserve(CARRY_BUFFER);
                if from_backend.read_buf(&mut buf).await? == 0 {
                    send.send_data(Bytes::new(), true).map_err(failed)?;
                    return Ok::<u64, std::io::Error>(moved);
                }
                moved += buf.len() as u64;
                let mut data = buf.split().freeze();
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let granted = match send.capacity() {
                        0 => match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                            Some(Ok(n)) => n,
                            Some(Err(e)) => return Err(failed(e)),
                            None => return Err(std::io::ErrorKind::BrokenPipe.into()),
                        },
                        n => n,
                    };
                    let chunk = data.split_to(granted.min(data.len()));
                    send.send_data(chunk, false).map_err(failed)?;
                }
            }
        };
        tokio::pin!(up, down);
        tokio::select! {
            u = &mut up => match u {
                Ok(_) => (u, down.await),
                Err(e) => (Err(e), Err(std::io::ErrorKind::Interrupted.into())),
            },
            d = &mut down => (up.await, d),
        }
    };
    let cut = up.is_err() && down.is_err();
    if cut {
        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    }
    (up.unwrap_or(0), down.unwrap_or(0), cut)
}

async fn serve_metrics(listener: tokio::net::TcpListener, agent: Arc<Agent>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
            let Ok(Ok(n)) = read else { return };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics ") {
                ("200 OK", agent.counters.render())
            } else if head.starts_with("GET /healthz ") {
                ("200 OK", "ok\n".to_string())
            } else if head.starts_with("GET /readyz ") {
                if agent.counters.links_up.load(Ordering::Relaxed) > 0 {
                    ("200 OK", "ready\n".to_string())
                } else {
                    ("503 Service Unavailable", "no link to the edge\n".to_string())
                }
            } else {
                ("404 Not Found", "not found: /metrics, /healthz, /readyz\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.write_all(response.as_bytes())).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_backend_host_is_allowed() {
        let backend: Vec<SocketAddr> = vec!["10.0.0.5:21".parse().unwrap()];
        let t = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(allowed(t("10.0.0.5:21"), &backend, None));
        assert!(allowed(t("10.0.0.5:50001"), &backend, None));
        assert!(!allowed(t("10.0.0.6:21"), &backend, None), "another host");
        assert!(!allowed(t("10.0.0.5:0"), &backend, None));
        assert!(!allowed(t("10.0.0.5:22"), &backend, None), "a privileged port that is not the control port");
        assert!(allowed(t("10.0.0.5:21"), &backend, Some((50000, 50010))), "the control port always");
        assert!(allowed(t("10.0.0.5:50010"), &backend, Some((50000, 50010))));
        assert!(!allowed(t("10.0.0.5:22"), &backend, Some((50000, 50010))), "outside the passive range");
        assert!(!allowed(t("127.0.0.1:6379"), &backend, None));
    }

    #[test]
    fn back_off_grows_to_its_cap_with_jitter() {
        assert!(backoff(1, false) <= Duration::from_millis(200));
        assert!(backoff(30, false) <= BACKOFF_CAP && backoff(30, false) >= BACKOFF_CAP / 2);
        assert!(backoff(30, true) <= BACKOFF_CAP_REFUSED);
    }
}
