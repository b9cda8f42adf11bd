//! The edge's side of connector links: a TLS listener where connectors dial
//! in with a client certificate from `[connectors] ca`, an HTTP/2 client on
//! each accepted link (the edge opens streams, the connector serves them),
//! and the registry sessions ask for a stream to their backend.

use super::tunnel::{ByteCounts, StreamCount, Tunnel};
use super::{
    ConnectorError, Target, HEADER_BACKEND, HEADER_INSTANCE, HEADER_NAME, HEADER_PEER, HEADER_REASON, HELLO_PATH,
};
use super::{CONNECTION_WINDOW, FRAME_SIZE, STREAM_WINDOW};
use crate::tls::read_ahead::ReadAhead;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// A link's TLS handshake and hello must be done within this.
const LINK_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream request the connector does not answer within this fails.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Links are pinged this often; one unanswered for `PING_TIMEOUT` is dead
/// (a connector host that vanished without a FIN).
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Links (accepted or in their handshake) at most; more are closed at once.
pub const MAX_LINKS: usize = 256;

pub use crate::config::ConnectorsSettings as EdgeSettings;

/// Which connector a session's streams go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub name: String,
    /// The connector process (one of several with the same name).
    pub instance: String,
    /// Where the connector's link came from.
    pub peer: SocketAddr,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connector {} at {}", self.name, self.peer)
    }
}

/// A stream opened to the backend through a connector.
pub struct Opened {
    pub tunnel: Tunnel,
    /// The address the connector reached (the backend's, as it sees it).
    pub peer: Option<SocketAddr>,
    pub via: Via,
}

struct Link {
    id: u64,
    via: Via,
    /// The connector's backend control address: the authority of control streams.
    backend: String,
    send: h2::client::SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
    /// The connector refused a new session: it is stopping.
    draining: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Counts {
    /// Streams open now, by (name, kind).
    open: BTreeMap<(String, &'static str), Arc<AtomicUsize>>,
    bytes: BTreeMap<String, Arc<ByteCounts>>,
    refused: BTreeMap<&'static str, u64>,
    joins: BTreeMap<String, u64>,
    streams: BTreeMap<(String, &'static str), u64>,
    stream_errors: BTreeMap<(String, &'static str), u64>,
}

/// Every live link, by connector name.
pub struct Connectors {
    settings: Option<EdgeSettings>,
    links: Mutex<HashMap<String, Vec<Arc<Link>>>>,
    next_id: AtomicU64,
    /// Links open or in their handshake (bounded by `MAX_LINKS`).
    accepted: Arc<AtomicUsize>,
    counts: Mutex<Counts>,
    /// Woken when a link joins: health checks and the FEAT probe run again
    /// at once instead of at their next interval.
    joined: tokio::sync::Notify,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors").field("settings", &self.settings).finish()
    }
}

/// One connector name as `/readyz`, `/status` and metrics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorView {
    pub name: String,
    pub links: usize,
    pub instances: usize,
    pub streams: usize,
}

impl Connectors {
    pub fn new(settings: Option<EdgeSettings>) -> Arc<Connectors> {
        Arc::new(Connectors {
            settings,
            links: Mutex::default(),
            next_id: AtomicU64::new(1),
            accepted: Arc::default(),
            counts: Mutex::default(),
            joined: tokio::sync::Notify::new(),
        })
    }

    pub fn settings(&self) -> Option<&EdgeSettings> {
        self.settings.as_ref()
    }

    fn refused(&self, reason: &'static str) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).refused.entry(reason).or_insert(0) += 1;
    }

    pub fn refused_for(&self, reason: &str) -> u64 {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).refused.get(reason).copied().unwrap_or(0)
    }

    /// The names the configuration needs, each with its live links.
    pub fn views(&self) -> Vec<ConnectorView> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let names = self.settings.as_ref().map(|s| s.names.clone()).unwrap_or_default();
        names
            .into_iter()
            .map(|name| {
                let l = links.get(&name).map(Vec::as_slice).unwrap_or_default();
                let mut instances: Vec<&str> = l.iter().map(|l| l.via.instance.as_str()).collect();
                instances.sort_unstable();
                instances.dedup();
                ConnectorView {
                    links: l.len(),
                    instances: instances.len(),
                    streams: l.iter().map(|l| l.streams.load(Ordering::Relaxed)).sum(),
                    name,
                }
            })
            .collect()
    }

    /// Every needed connector name has a live link.
    pub fn ready(&self) -> Result<(), String> {
        let down: Vec<String> = self.views().into_iter().filter(|v| v.links == 0).map(|v| v.name).collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!("no live link from connector {}", down.join(", ")))
        }
    }

    fn pick(&self, name: &str, instance: Option<&str>, tried: &[u64]) -> Option<Arc<Link>> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .get(name)?
            .iter()
            .filter(|l| instance.is_none_or(|i| l.via.instance == i))
            .filter(|l| !tried.contains(&l.id))
            // A stopping connector keeps its sessions but takes no new ones.
            .filter(|l| instance.is_some() || !l.draining.load(Ordering::Relaxed))
            .min_by_key(|l| l.streams.load(Ordering::Relaxed))
            .cloned()
    }

    /// Opens a stream through a connector named `name` to `target`: for a
    /// session's first (control) stream the least busy link of any connector
    /// of that name; for its data streams a link of the same connector
    /// process (`instance`), which reaches the same backend.
    pub async fn open(&self, name: &str, instance: Option<&str>, target: Target) -> Result<Opened, ConnectorError> {
        // A link that is going away (GOAWAY, a stopping connector) fails the
        // request before the connector saw it: try the next one.
        let mut tried = vec![];
        loop {
            let Some(link) = self.pick(name, instance, &tried) else {
                return Err(ConnectorError::NoLink(name.to_string()));
            };
            tried.push(link.id);
            match self.open_on(&link, name, target).await {
                Err(ConnectorError::Link(..) | ConnectorError::Draining(..)) if tried.len() < 4 => continue,
                other => return other,
            }
        }
    }

    async fn open_on(&self, link: &Arc<Link>, name: &str, target: Target) -> Result<Opened, ConnectorError> {
        let kind = target.kind();
        let authority = match target {
            Target::Control => link.backend.clone(),
            Target::Data(addr) => addr.to_string(),
        };
        let (open, bytes) = {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let open = StreamCount::new(c.open.entry((name.to_string(), kind)).or_default());
            (open, Arc::clone(c.bytes.entry(name.to_string()).or_default()))
        };
        let opened = tokio::time::timeout(STREAM_OPEN_TIMEOUT, self.request(link, &authority, open, bytes)).await;
        let counted = |ok: bool| {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let m = if ok { &mut c.streams } else { &mut c.stream_errors };
            *m.entry((name.to_string(), kind)).or_insert(0) += 1;
        };
        match opened {
            Ok(Ok((tunnel, peer))) => {
                counted(true);
                Ok(Opened { tunnel, peer, via: link.via.clone() })
            }
            Ok(Err(e)) => {
                counted(false);
                if matches!(e, ConnectorError::Refused { .. }) {
                    self.refused("target");
                }
                Err(e)
            }
            Err(_) => {
                counted(false);
                Err(ConnectorError::Link(name.to_string(), "the connector did not answer in time".into()))
            }
        }
    }

    async fn request(
        &self,
        link: &Link,
        authority: &str,
        open: StreamCount,
        bytes: Arc<ByteCounts>,
    ) -> Result<(Tunnel, Option<SocketAddr>), ConnectorError> {
        let failed = |e: h2::Error| ConnectorError::Link(link.via.name.clone(), e.to_string());
        let mut send = link.send.clone().ready().await.map_err(failed)?;
        let request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(authority)
            .body(())
            .map_err(|e| ConnectorError::Link(link.via.name.clone(), e.to_string()))?;
        let count = StreamCount::new(&link.streams);
        let (response, stream) = send.send_request(request, false).map_err(failed)?;
        let response = response.await.map_err(failed)?;
        let header = |h: &str| response.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        if response.status() == http::StatusCode::SERVICE_UNAVAILABLE {
            link.draining.store(true, Ordering::Relaxed);
            return Err(ConnectorError::Draining(link.via.name.clone()));
        }
        if response.status() != http::StatusCode::OK {
            return Err(ConnectorError::Refused {
                name: link.via.name.clone(),
                target: authority.to_string(),
                why: header(HEADER_REASON).unwrap_or_else(|| response.status().to_string()),
            });
        }
        let peer = header(HEADER_PEER).and_then(|p| p.parse().ok());
        Ok((Tunnel::new(stream, response.into_body(), vec![count, open], Some(bytes)), peer))
    }

    /// Completes when the next link joins.
    pub async fn joined(&self) {
        self.joined.notified().await;
    }

    fn register(&self, link: Arc<Link>) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.joins.entry(link.via.name.clone()).or_insert(0) += 1;
        drop(c);
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.entry(link.via.name.clone()).or_default().push(link);
        drop(links);
        self.joined.notify_waiters();
    }

    fn unregister(&self, name: &str, id: u64) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = links.get_mut(name) {
            l.retain(|l| l.id != id);
        }
    }

    /// Prometheus text for the connector families.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let views = self.views();
        let _ = writeln!(out, "# HELP ftpgate_connector_up Whether a connector name has at least one live link.");
        let _ = writeln!(out, "# TYPE ftpgate_connector_up gauge");
        for v in &views {
            let _ = writeln!(out, "ftpgate_connector_up{{name=\"{}\"}} {}", v.name, u8::from(v.links > 0));
        }
        let _ = writeln!(out, "# HELP ftpgate_connector_links Live links per connector name.");
        let _ = writeln!(out, "# TYPE ftpgate_connector_links gauge");
        for v in &views {
            let _ = writeln!(out, "ftpgate_connector_links{{name=\"{}\"}} {}", v.name, v.links);
        }
        let _ = writeln!(out, "# HELP ftpgate_connector_streams Streams open now through connectors of a name.");
        let _ = writeln!(out, "# TYPE ftpgate_connector_streams gauge");
        for v in &views {
            let _ = writeln!(out, "ftpgate_connector_streams{{name=\"{}\"}} {}", v.name, v.streams);
        }
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP ftpgate_connector_open_streams Streams open now, by kind.");
        let _ = writeln!(out, "# TYPE ftpgate_connector_open_streams gauge");
        for ((name, kind), n) in &c.open {
            let _ = writeln!(
                out,
                "ftpgate_connector_open_streams{{name=\"{name}\",kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP ftpgate_connector_bytes_total Bytes through connectors' streams, by direction.");
        let _ = writeln!(out, "# TYPE ftpgate_connector_bytes_total counter");
        for (name, b) in &c.bytes {
            let r = b.received.load(Ordering::Relaxed);
            let s = b.sent.load(Ordering::Relaxed);
            let _ = writeln!(out, "ftpgate_connector_bytes_total{{name=\"{name}\",direction=\"from_backend\"}} {r}");
            let _ = writeln!(out, "ftpgate_connector_bytes_total{{name=\"{name}\",direction=\"to_backend\"}} {s}");
        }
        let _ = writeln!(out, "# HELP ftpgate_connector_streams_total Streams opened through connectors, by kind.");
        let _ = writeln!(out, "# TYPE ftpgate_connector_streams_total counter");
        for ((name, kind), n) in &c.streams {
            let _ = writeln!(out, "ftpgate_connector_streams_total{{name=\"{name}\",kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP ftpgate_connector_stream_errors_total Streams that could not be opened.");
        let _ = writeln!(out, "# TYPE ftpgate_connector_stream_errors_total counter");
        for ((name, kind), n) in &c.stream_errors {
            let _ = writeln!(out, "ftpgate_connector_stream_errors_total{{name=\"{name}\",kind=\"{kind}\"}} {n}");
        }
        let _ =
            writeln!(out, "# HELP ftpgate_connector_joins_total Links a connector name opened (reconnects included).");
        let _ = writeln!(out, "# TYPE ftpgate_connector_joins_total counter");
        for (name, n) in &c.joins {
            let _ = writeln!(out, "ftpgate_connector_joins_total{{name=\"{name}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP ftpgate_connector_refused_total Links and streams refused: a bad certificate or handshake, \
             a name no backend uses, a link over the cap, a target the connector refused."
        );
        let _ = writeln!(out, "# TYPE ftpgate_connector_refused_total counter");
        for (reason, n) in &c.refused {
            let _ = writeln!(out, "ftpgate_connector_refused_total{{reason=\"{reason}\"}} {n}");
        }
        out
    }
}

/// The TLS acceptor for connector links: certificates must chain to `ca`.
pub fn acceptor(s: &EdgeSettings) -> Result<TlsAcceptor, crate::tls::TlsError> {
    let provider = crate::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::load_certs(&s.ca)? {
        roots.add(c).map_err(|e| crate::tls::TlsError::Config(format!("{}: {e}", s.ca.display())))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| crate::tls::TlsError::Config(format!("{}: {e}", s.ca.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| crate::tls::TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(crate::tls::load_certs(&s.cert)?, crate::tls::load_key(&s.key)?)
        .map_err(|e| crate::tls::TlsError::Config(format!("{}: {e}", s.cert.display())))?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Connectors {
    /// A place for one more link, unless `MAX_LINKS` are open or in their
    /// handshake (counted as refused `link_cap`).
    pub fn admit(&self) -> Option<StreamCount> {
        if self.accepted.load(Ordering::Relaxed) >= MAX_LINKS {
            self.refused("link_cap");
            return None;
        }
        Some(StreamCount::new(&self.accepted))
    }
}

/// One link: handshake, hello, registration, then until it ends.
pub async fn link(tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, connectors: Arc<Connectors>) {
    let _ = tcp.set_nodelay(true);
    let setup = tokio::time::timeout(LINK_SETUP_TIMEOUT, setup(tcp, peer, &acceptor, &connectors)).await;
    let (link, connection) = match setup {
        Ok(Ok(l)) => l,
        Ok(Err((reason, why))) => {
            connectors.refused(reason);
            warn!(target: "ftpgate::audit", %peer, reason, error = %why, "connector link refused");
            return;
        }
        Err(_) => {
            connectors.refused("timeout");
            warn!(target: "ftpgate::audit", %peer, "connector link refused: no handshake within 10 s");
            return;
        }
    };
    let name = link.via.name.clone();
    let id = link.id;
    connectors.register(Arc::clone(&link));
    let ended = connection.await;
    connectors.unregister(&name, id);
    let open = link.streams.load(Ordering::Relaxed);
    warn!(target: "ftpgate::audit", connector = %name, %peer, instance = %link.via.instance, streams_cut = open,
        reason = %ended, "connector link left");
}

type Setup = (Arc<Link>, std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>);

async fn setup(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    connectors: &Connectors,
) -> Result<Setup, (&'static str, String)> {
    let tls = acceptor.accept(ReadAhead::data(tcp)).await.map_err(|e| ("handshake", e.to_string()))?;
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
    let Some(cert) = cert else { return Err(("handshake", "no client certificate".into())) };
    let fingerprint = hex(&Sha256::digest(&cert));
    let names = crate::tls::certificate_names(&cert);
    let Some(name) = names.first().cloned() else {
        return Err(("unknown_name", "certificate names no connector".into()));
    };
    let needed = connectors.settings.as_ref().map(|s| s.names.clone()).unwrap_or_default();
    if !needed.contains(&name) {
        return Err(("unknown_name", format!("certificate name {name:?} is no connector a backend uses")));
    }
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE)
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(|e| ("protocol", e.to_string()))?;
    let ping = connection.ping_pong();
    // The connection is driven from here on; the hello needs it running.
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<String>();
    let driver = tokio::spawn(async move {
        let mut ping = ping;
        let keepalive = async {
            let Some(ping) = ping.as_mut() else { return std::future::pending::<String>().await };
            loop {
                tokio::time::sleep(PING_INTERVAL).await;
                match tokio::time::timeout(PING_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => return "no answer to a ping within 20 s".to_string(),
                }
            }
        };
        let why = tokio::select! {
            r = &mut connection => match r { Ok(()) => "closed by the connector".to_string(), Err(e) => e.to_string() },
            why = keepalive => why,
        };
        let _ = ended_tx.send(why);
    });
    let hello = async {
        let mut send = send.clone().ready().await.map_err(|e| ("protocol", e.to_string()))?;
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri(format!("https://connector{HELLO_PATH}"))
            .body(())
            .map_err(|e| ("protocol", e.to_string()))?;
        let (response, _) = send.send_request(request, true).map_err(|e| ("protocol", e.to_string()))?;
        let response = response.await.map_err(|e| ("protocol", e.to_string()))?;
        let header = |h: &str| response.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok::<_, (&'static str, String)>((header(HEADER_NAME), header(HEADER_INSTANCE), header(HEADER_BACKEND)))
    };
    let (said, instance, backend) = match hello.await {
        Ok(h) => h,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let (Some(instance), Some(backend)) = (instance.filter(|i| i.len() <= 64), backend.filter(|b| b.len() <= 300))
    else {
        driver.abort();
        return Err(("protocol", "the connector's hello lacks its instance or backend".into()));
    };
    if said.as_deref() != Some(name.as_str()) {
        driver.abort();
        return Err(("unknown_name", format!("the connector says it is {said:?}, its certificate says {name:?}")));
    }
    let link = Arc::new(Link {
        id: connectors.next_id.fetch_add(1, Ordering::Relaxed),
        via: Via { name: name.clone(), instance: instance.clone(), peer },
        backend: backend.clone(),
        send,
        streams: Arc::default(),
        draining: Default::default(),
    });
    info!(target: "ftpgate::audit", connector = %name, %peer, %instance, %backend, fingerprint = %fingerprint, "connector link joined");
    let ended = Box::pin(async move {
        let why = ended_rx.await.unwrap_or_else(|_| "the link's task ended".to_string());
        driver.abort();
        why
    });
    Ok((link, ended))
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
