//! One shared passive port: accepts data connections, reads their PROXY
//! header where a session expects one, and hands each connection to the
//! reservation it belongs to (by source address, and under `PROT P` by the
//! session its TLS handshake resumes).

use super::{PassivePool, Refusal, Slot, LINGER};
use crate::metrics::Metrics;
use crate::protocol::TransferDirection;
use crate::tls::stream::{ClientStream, ReadAhead};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

/// Strangers on the passive ports, logged once a minute each.
static STRANGERS_LOGGED: std::sync::LazyLock<crate::log_limit::PerKey<IpAddr>> =
    std::sync::LazyLock::new(|| crate::log_limit::PerKey::new(Duration::from_secs(60)));

/// Data connections in a PROXY header read, and in a TLS handshake, per
/// port: a flood of silent connections cannot grow without bound, nor hold
/// up the clients' own (they are served concurrently).
const MAX_PENDING: usize = 64;

/// How long a PROXY protocol sender may take to send a data connection's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Handshake = (Vec<Arc<Slot>>, SocketAddr, Result<(usize, Box<TlsStream<ReadAhead<TcpStream>>>), Refusal>);

enum Event {
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
    Header(TcpStream, SocketAddr, Result<Option<SocketAddr>, crate::proxy_protocol::ProxyError>),
    Handshake(Handshake),
    Tick,
}

/// Serves the port bound at `at` until it has had no reservation for a while
/// (or ftpgate's pool is gone).
pub(super) async fn serve(pool: Weak<PassivePool>, at: SocketAddr, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut headers = JoinSet::new();
    let mut handshakes: JoinSet<Handshake> = JoinSet::new();
    let mut tick = tokio::time::interval(LINGER);
    loop {
        let event = {
            let Some(l) = listener.as_ref() else { return };
            tokio::select! {
                accepted = l.accept() => Event::Accepted(accepted),
                Some(Ok((s, peer, h))) = headers.join_next(), if !headers.is_empty() => Event::Header(s, peer, h),
                Some(Ok(h)) = handshakes.join_next(), if !handshakes.is_empty() => Event::Handshake(h),
                _ = tick.tick() => Event::Tick,
            }
        };
        let Some(pool) = pool.upgrade() else { return };
        match event {
            Event::Accepted(Ok((stream, peer))) => {
                if pool.expects_header(at, peer.ip()) {
                    if headers.len() >= MAX_PENDING {
                        pool.metrics.proxy_header_error("overload");
                        continue;
                    }
                    headers.spawn(async move {
                        let header = crate::proxy_protocol::read_header(&stream, HEADER_TIMEOUT).await;
                        (stream, peer, header)
                    });
                } else {
                    dispatch(&pool, at, stream, peer, None, &mut handshakes);
                }
            }
            Event::Accepted(Err(e)) => {
                // Out of descriptors, most likely: let others close some.
                tracing::warn!(target: "ftpgate::transfer", port = at.port(), error = %e, "passive port cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Event::Header(stream, peer, Ok(claimed)) => {
                dispatch(&pool, at, stream, claimed.unwrap_or(peer), Some(peer.ip()), &mut handshakes)
            }
            Event::Header(_, peer, Err(e)) => {
                pool.metrics.proxy_header_error(e.label());
                tracing::warn!(target: "ftpgate::transfer", %peer, error = %e, "refused data connection without a valid PROXY protocol header");
            }
            Event::Handshake((slots, peer, Ok((i, tls)))) => {
                if let Some(deliver) = pool.take(at, &slots[i]) {
                    let _ = deliver.send(ClientStream::Tls(tls));
                }
                if slots.len() > 1 {
                    Metrics::inc(&pool.metrics.passive_tls_routed);
                    tracing::debug!(target: "ftpgate::transfer", %peer, port = at.port(), sessions = slots.len(), "TLS data connection routed by the session it resumed");
                }
            }
            Event::Handshake((slots, peer, Err(why))) => {
                if matches!(why, Refusal::NotResumed) {
                    Metrics::inc(&pool.metrics.passive_tls_refused);
                    if STRANGERS_LOGGED.allow(&peer.ip()) {
                        tracing::warn!(target: "ftpgate::transfer",
                            %peer, port = at.port(), sessions = slots.len(),
                            "refused TLS data connection: it resumed no session waiting on this port for its address \
                             (a fresh handshake, or another session's ticket); the reservation stands"
                        );
                    }
                }
                for s in &slots {
                    s.refused(why.clone());
                }
            }
            Event::Tick => {
                if pool.close_if_idle(at, &mut listener) {
                    return;
                }
            }
        }
    }
}

/// Hands `stream` from `ip` to its reservation: at once for a plain one,
/// through a TLS handshake for TLS ones. A connection that matches none is
/// refused and counted.
fn dispatch(
    pool: &PassivePool,
    at: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
    sender: Option<IpAddr>,
    handshakes: &mut JoinSet<Handshake>,
) {
    let slots = pool.candidates(at, peer.ip(), sender);
    match slots.first() {
        // Sessions there came through PROXY senders and this is not one:
        // its header could have named any client.
        None if sender.is_none() && pool.expects_headers(at) => {
            crate::proxy_protocol::refuse_untrusted(peer, at.port(), &pool.metrics);
        }
        None => {
            Metrics::inc(&pool.metrics.data_connections_refused);
            // Counted always, logged once a minute per address (a flood of
            // strangers on the passive ports must not fill the log).
            if STRANGERS_LOGGED.allow(&peer.ip()) {
                tracing::warn!(target: "ftpgate::transfer", %peer, port = at.port(), "refused data connection from an address that has no reservation on this port");
            }
        }
        Some(plain) if !plain.tls() => {
            if let Some(deliver) = pool.take(at, plain) {
                let _ = deliver.send(ClientStream::Plain(stream));
            }
        }
        Some(_) => {
            if handshakes.len() >= MAX_PENDING {
                Metrics::inc(&pool.metrics.passive_tls_refused);
                return;
            }
            for s in &slots {
                s.touch();
            }
            let metrics = Arc::clone(&pool.metrics);
            handshakes.spawn(async move {
                let r = handshake(stream, &slots, &metrics).await;
                (slots, peer, r)
            });
        }
    }
}

/// The TLS handshake of a data connection that may belong to any of `slots`
/// (all TLS, one client address): which one it resumed, by index.
///
/// With one candidate the handshake runs on that session's own data
/// configuration (tickets on downloads, as on a port of its own), and like
/// there it may begin before the backend's 150 and has
/// `timeouts.data_connect` from it. With several, the routing configuration
/// (no tickets: which session would they belong to?) and twice that from
/// the connection, since no single 150 applies.
async fn handshake(
    stream: TcpStream,
    slots: &[Arc<Slot>],
    metrics: &Metrics,
) -> Result<(usize, Box<TlsStream<ReadAhead<TcpStream>>>), Refusal> {
    let timeout = slots[0].claim.timeout;
    let single = (slots.len() == 1).then(|| slots[0].claim.tls.as_ref()).flatten();
    let run = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), ReadAhead::data(stream))
            .await
            .map_err(|e| Refusal::Tls(e.to_string()))?;
        let (config, matched) = match single {
            Some(t) => (t.acceptors.for_data(t.direction.get() == Some(&TransferDirection::Download)), None),
            None => {
                let configs: Vec<_> =
                    slots.iter().filter_map(|s| s.claim.tls.as_ref()).map(|t| t.acceptors.for_data(false)).collect();
                let (config, matched) = crate::tls::route::routing_config(&configs).ok_or(Refusal::NotResumed)?;
                (config, Some(matched))
            }
        };
        let tls = start.into_stream(config).await.map_err(|e| Refusal::Tls(e.to_string()))?;
        let resumed = crate::tls::resumed(tls.get_ref().1);
        metrics.tls_version("client_data", Some(crate::tls::version_label(tls.get_ref().1)));
        Metrics::inc(if resumed { &metrics.tls_client_data_resumed } else { &metrics.tls_client_data_full });
        let which = match (&matched, single) {
            (None, Some(t)) => (resumed || !t.require_reuse).then_some(0),
            (Some(m), _) if resumed => m.get(),
            _ => None,
        };
        which.map(|i| (i, Box::new(tls))).ok_or(Refusal::NotResumed)
    };
    tokio::pin!(run);
    match single {
        Some(t) => {
            let mut go = t.go.clone();
            tokio::select! {
                r = &mut run => return r,
                // Err: the session dropped its channel; the clock starts now.
                _ = go.wait_for(Option::is_some) => {}
            }
            tokio::time::timeout(timeout, run).await.unwrap_or(Err(Refusal::Timeout(timeout.as_secs())))
        }
        None => tokio::time::timeout(timeout * 2, run).await.unwrap_or(Err(Refusal::Timeout(timeout.as_secs() * 2))),
    }
}
