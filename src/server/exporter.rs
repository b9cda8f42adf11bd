//! The operator's HTTP endpoint: `/metrics` (Prometheus text format, rendered
//! with the `prometheus` crate from ftpgate's counters), `/healthz` (the
//! process answers) and `/readyz` (the backend accepts connections).

use super::status_page;
use crate::metrics::Metrics;
use crate::server::{LiveContext, SessionContext};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long `/readyz` waits for the backend to accept a connection.
const READY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn counter(r: &Registry, name: &str, help: &str, v: u64) {
    let c = IntCounter::new(name, help).expect("valid metric name");
    c.inc_by(v);
    let _ = r.register(Box::new(c));
}

fn gauge(r: &Registry, name: &str, help: &str, v: u64) {
    let g = IntGauge::new(name, help).expect("valid metric name");
    g.set(v as i64);
    let _ = r.register(Box::new(g));
}

fn labelled(r: &Registry, name: &str, help: &str, labels: &[&str], values: &[(&[&str], u64)]) {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    for (l, v) in values {
        c.with_label_values(l).inc_by(*v);
    }
    let _ = r.register(Box::new(c));
}

/// A labelled counter family in seconds (fractional).
fn labelled_f(r: &Registry, name: &str, help: &str, labels: &[&str], values: &[(&[&str], f64)]) {
    let c = prometheus::CounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    for (l, v) in values {
        c.with_label_values(l).inc_by(*v);
    }
    let _ = r.register(Box::new(c));
}

fn lock<T: Clone>(m: &std::sync::Mutex<T>) -> T {
    m.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A labelled counter family from a map snapshot.
fn from_map(r: &Registry, name: &str, help: &str, labels: &[&str], series: impl Iterator<Item = (Vec<String>, u64)>) {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    for (l, v) in series {
        let l: Vec<&str> = l.iter().map(String::as_str).collect();
        c.with_label_values(&l).inc_by(v);
    }
    let _ = r.register(Box::new(c));
}

/// The shared state's gauges, when `[cluster]` is set.
fn render_cluster(cluster: Option<&crate::cluster::Cluster>) -> String {
    let Some(c) = cluster else { return String::new() };
    let r = Registry::new();
    gauge(
        &r,
        "ftpgate_cluster_up",
        "1 while the shared state (Redis) answered the last request.",
        u64::from(c.reachable()),
    );
    gauge(
        &r,
        "ftpgate_cluster_leases",
        "Session counts this instance holds in the shared state.",
        c.leases.len() as u64,
    );
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&r.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The exposition text for one scrape. Built fresh each time from the
/// atomics, so the hot path never touches a registry.
pub fn render(m: &Metrics) -> String {
    let g = Metrics::get;
    let r = Registry::new();
    gauge(&r, "ftpgate_sessions_open", "Client sessions open now.", g(&m.sessions_open));
    counter(&r, "ftpgate_sessions_total", "Client sessions accepted.", g(&m.sessions_total));
    counter(
        &r,
        "ftpgate_sessions_refused_total",
        "Clients refused because the session limit was reached.",
        g(&m.sessions_refused),
    );
    counter(
        &r,
        "ftpgate_commands_rejected_total",
        "Command lines refused before the backend (syntax, length, NUL, bare CR/LF).",
        g(&m.commands_rejected),
    );
    counter(
        &r,
        "ftpgate_session_panics_total",
        "Sessions ended by an internal error (a panic; the client got 421). Any value above 0 is a bug.",
        g(&m.session_panics),
    );
    counter(&r, "ftpgate_active_mode_refused_total", "PORT/EPRT refused by bounce protection.", g(&m.active_refused));
    gauge(
        &r,
        "ftpgate_passive_listeners_open",
        "Client-facing passive ports bound now (shared by all sessions).",
        g(&m.passive_listeners_open),
    );
    gauge(&r, "ftpgate_listeners_up", "Client listeners accepting connections now.", g(&m.listeners_up));
    from_map(
        &r,
        "ftpgate_proxy_header_errors_total",
        "Connections on PROXY protocol listeners (control or passive) refused, by reason (untrusted: not from a \
         proxy_from sender; invalid; timeout).",
        &["reason"],
        lock(&m.proxy_header_errors_by_reason).iter().map(|(k, n)| (vec![k.to_string()], *n)),
    );
    counter(
        &r,
        "ftpgate_cluster_errors_total",
        "Requests to the shared state (Redis) that failed or timed out.",
        g(&m.cluster_errors),
    );
    counter(&r, "ftpgate_config_reloads_total", "Configuration reloads (SIGHUP) that took effect.", g(&m.reloads_ok));
    counter(
        &r,
        "ftpgate_config_reload_failures_total",
        "Configuration reloads refused; the previous configuration stays in force.",
        g(&m.reloads_failed),
    );
    counter(
        &r,
        "ftpgate_passive_ports_exhausted_total",
        "PASV/EPSV answered 425: no port of the range could be bound, or the client's address held every port until timeouts.data_connect.",
        g(&m.passive_ports_exhausted),
    );
    gauge(
        &r,
        "ftpgate_passive_reservations",
        "Passive reservations (port, client address) waiting for their data connection now.",
        g(&m.passive_reservations),
    );
    counter(
        &r,
        "ftpgate_passive_waits_total",
        "Passive setups that waited because their client address held a reservation on every port.",
        g(&m.passive_waits),
    );
    counter(
        &r,
        "ftpgate_passive_tls_routed_total",
        "TLS data connections given to one of several sessions of one address on one port by the session they resumed.",
        g(&m.passive_tls_routed),
    );
    counter(
        &r,
        "ftpgate_passive_tls_refused_total",
        "TLS data connections on a passive port that resumed no session waiting there for their address.",
        g(&m.passive_tls_refused),
    );
    counter(
        &r,
        "ftpgate_data_connections_refused_total",
        "Data connections from an address other than the client's.",
        g(&m.data_connections_refused),
    );
    gauge(&r, "ftpgate_data_channels_open", "Data channels open now.", g(&m.data_channels_open));
    from_map(
        &r,
        "ftpgate_transfers_total",
        "Data transfers by kind (file, listing) and result.",
        &["kind", "result"],
        lock(&m.transfers_by_kind).iter().map(|((k, res), n)| (vec![k.to_string(), res.to_string()], *n)),
    );
    from_map(
        &r,
        "ftpgate_scan_total",
        "Uploads judged by the malware scanner ([scan]) by result: clean, infected, error_rejected, \
         error_accepted, oversize_rejected.",
        &["result"],
        lock(&m.scans_by_result).iter().map(|(res, n)| (vec![res.to_string()], *n)),
    );
    gauge(
        &r,
        "ftpgate_scanner_up",
        "Whether the malware scanner answered its last health check (1) or not (0); 1 without [scan].",
        g(&m.scanner_up),
    );
    from_map(
        &r,
        "ftpgate_sessions_by_listener_total",
        "Client sessions accepted, by listener and its TLS mode.",
        &["listener", "tls"],
        lock(&m.sessions_by_listener).iter().map(|((l, t), n)| (vec![l.clone(), t.to_string()], *n)),
    );
    labelled(
        &r,
        "ftpgate_data_bytes_total",
        "Data connection payload bytes by direction and leg: read from the sending leg, written to the receiving leg.",
        &["direction", "leg"],
        &[
            (&["client_to_backend", "client"], g(&m.bytes_read_from_client)),
            (&["client_to_backend", "backend"], g(&m.bytes_client_to_backend)),
            (&["backend_to_client", "backend"], g(&m.bytes_read_from_backend)),
            (&["backend_to_client", "client"], g(&m.bytes_backend_to_client)),
        ],
    );
    labelled(
        &r,
        "ftpgate_data_relays_total",
        "Data relays by how they moved bytes.",
        &["kind"],
        &[(&["splice"], g(&m.relays_spliced)), (&["copy"], g(&m.relays_copied))],
    );
    from_map(
        &r,
        "ftpgate_tls_versions_total",
        "TLS handshakes by leg and negotiated protocol version.",
        &["leg", "version"],
        lock(&m.tls_versions).iter().map(|((l, v), n)| (vec![l.to_string(), v.to_string()], *n)),
    );
    let max = prometheus::IntGaugeVec::new(
        Opts::new(
            "ftpgate_backend_tls_max_version",
            "1 for the highest TLS version each backend is offered (backend.max_tls_version; 1.2 by default).",
        ),
        &["backend", "version"],
    )
    .expect("valid metric name");
    for (backend, version) in lock(&m.backend_tls_max).iter() {
        max.with_label_values(&[backend.as_str(), version]).set(1);
    }
    let _ = r.register(Box::new(max));
    from_map(
        &r,
        "ftpgate_accept_errors_total",
        "Failed accepts (out of descriptors, mostly) by listener; each loop backs off instead of spinning.",
        &["listener"],
        lock(&m.accept_errors_by_listener).iter().map(|(k, n)| (vec![k.to_string()], *n)),
    );
    from_map(
        &r,
        "ftpgate_side_connections_refused_total",
        "Connections to /metrics and /status (http) or the admin socket (admin) refused at their cap.",
        &["listener"],
        lock(&m.side_connections_refused).iter().map(|(k, n)| (vec![k.to_string()], *n)),
    );
    from_map(
        &r,
        "ftpgate_bad_commands_total",
        "Malformed (invalid), unknown and denied commands from clients, by kind.",
        &["kind"],
        lock(&m.bad_commands_by_kind).iter().map(|(k, n)| (vec![k.to_string()], *n)),
    );
    from_map(
        &r,
        "ftpgate_session_refusals_total",
        "Sessions refused or closed by the front door, by reason (address_limit, banned, policy, cluster, login_timeout, bad_commands).",
        &["reason"],
        lock(&m.session_refusals_by_reason).iter().map(|(k, n)| (vec![k.to_string()], *n)),
    );
    counter(&r, "ftpgate_uploads_capped_total", "Uploads stopped at max_upload_size (552).", g(&m.uploads_capped));
    counter(
        &r,
        "ftpgate_transfers_refused_max_total",
        "Transfers refused by max_transfers (450).",
        g(&m.transfers_refused_max),
    );
    labelled_f(
        &r,
        "ftpgate_rate_limit_wait_seconds_total",
        "Time transfers waited for their user's rate limit, by direction.",
        &["direction"],
        &[
            (&["upload"], g(&m.rate_wait_upload_us) as f64 / 1e6),
            (&["download"], g(&m.rate_wait_download_us) as f64 / 1e6),
        ],
    );
    counter(
        &r,
        "ftpgate_backend_connections_total",
        "Backend control connections opened; only logins open them.",
        g(&m.backend_connections),
    );
    from_map(
        &r,
        "ftpgate_backend_errors_total",
        "Backend errors by kind (connect, closed, io, timeout, malformed, tls, refused, passive_reply, data_connect).",
        &["kind"],
        lock(&m.backend_errors_by_kind).iter().map(|(k, n)| (vec![k.to_string()], *n)),
    );
    labelled(
        &r,
        "ftpgate_tls_handshakes_total",
        "TLS handshakes by leg and kind.",
        &["leg", "kind"],
        &[
            (&["client_control", "full"], g(&m.tls_client_control)),
            (&["client_data", "resumed"], g(&m.tls_client_data_resumed)),
            (&["client_data", "full"], g(&m.tls_client_data_full)),
            (&["backend_data", "resumed"], g(&m.tls_backend_data_resumed)),
            (&["backend_data", "full"], g(&m.tls_backend_data_full)),
        ],
    );
    counter(&r, "ftpgate_tls_client_failures_total", "Failed TLS handshakes with clients.", g(&m.tls_client_failures));
    labelled(
        &r,
        "ftpgate_logins_total",
        "Logins by result.",
        &["result"],
        &[(&["ok"], g(&m.logins_ok)), (&["failed"], g(&m.logins_failed)), (&["refused"], g(&m.logins_refused))],
    );
    let commands = m.commands.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let labels: Vec<(Vec<&str>, u64)> = commands.iter().map(|((v, res), n)| (vec![v.as_str(), *res], *n)).collect();
    let values: Vec<(&[&str], u64)> = labels.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
    labelled(&r, "ftpgate_commands_total", "Client commands by verb and result.", &["verb", "result"], &values);
    let by_rule = m.policy_denials_by_rule.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let rules: Vec<(Vec<&str>, u64)> = by_rule.iter().map(|(k, v)| (vec![k.as_str()], *v)).collect();
    let values: Vec<(&[&str], u64)> = rules.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
    labelled(
        &r,
        "ftpgate_policy_denials_total",
        "Commands and connections refused by the policy, by rule.",
        &["rule"],
        &values,
    );
    for h in [
        &m.latency.transfer,
        &m.latency.backend_connect,
        &m.latency.client_tls_handshake,
        &m.latency.backend_tls_handshake,
    ] {
        let _ = r.register(Box::new(h.clone()));
    }
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&r.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Per-backend series of the pool, labelled with the backend's address.
pub fn render_pool(members: &[crate::server::pool::MemberView]) -> String {
    let r = Registry::new();
    let up = prometheus::IntGaugeVec::new(
        Opts::new("ftpgate_backend_up", "1 while the backend passes its health checks."),
        &["backend"],
    )
    .expect("valid metric name");
    let sessions = prometheus::IntGaugeVec::new(
        Opts::new("ftpgate_backend_sessions", "Sessions on the backend now (pass-through users)."),
        &["backend"],
    )
    .expect("valid metric name");
    let errors = IntCounterVec::new(
        Opts::new("ftpgate_backend_connect_errors_total", "Logins that could not reach the backend."),
        &["backend"],
    )
    .expect("valid metric name");
    for m in members {
        up.with_label_values(&[&m.address]).set(i64::from(m.healthy));
        sessions.with_label_values(&[&m.address]).set(m.sessions as i64);
        errors.with_label_values(&[&m.address]).inc_by(m.connect_errors);
    }
    let _ = r.register(Box::new(up));
    let _ = r.register(Box::new(sessions));
    let _ = r.register(Box::new(errors));
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&r.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    live: Arc<LiveContext>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ctx = Arc::clone(&live.borrow());
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render(&ctx.metrics)
                + &render_pool(&ctx.pools().flat_map(|p| p.view()).collect::<Vec<_>>())
                + &render_cluster(ctx.cluster.as_deref())
                + &ctx.connectors.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/status" if ctx.settings.status_page => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            status_page::render(&status_header(&ctx), &ctx.registry.rows()),
        ),
        "/" => (StatusCode::OK, "text/html; charset=utf-8", status_page::index(ctx.settings.status_page)),
        "/readyz" => {
            let (ready, why) = readiness(&ctx).await;
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, "text/plain", why)
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    // The pages show what peers typed: nothing in them may run or be sniffed
    // into something that runs, and nothing may frame them.
    headers.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(hyper::header::X_CONTENT_TYPE_OPTIONS, hyper::header::HeaderValue::from_static("nosniff"));
    headers.insert(hyper::header::REFERRER_POLICY, hyper::header::HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

/// Ready: not draining, every configured listener accepting, and the backend
/// taking TCP connections. A load balancer takes an unready instance out of
/// rotation.
async fn readiness(ctx: &SessionContext) -> (bool, String) {
    if *ctx.closing.borrow() != crate::server::Lifecycle::Serving {
        return (false, "draining for shutdown\n".into());
    }
    let up = Metrics::get(&ctx.metrics.listeners_up);
    let wanted = ctx.settings.listeners.len() as u64;
    if up < wanted {
        return (false, format!("{up} of {wanted} client listeners accepting\n"));
    }
    if let Some(c) = &ctx.cluster {
        // Failing open, an outage of the shared state is no reason to take
        // the instance out of the balancer; failing closed, it refuses logins.
        if c.fail_closed() && !c.reachable() {
            return (false, format!("shared state {} unreachable (cluster.fail = closed)\n", c.settings.address));
        }
    }
    if let Some(s) = ctx.settings.scan.as_ref().filter(|s| s.reject_on_error) {
        // Uploads would all be refused: out of rotation until it is back.
        if let Err(e) = crate::server::scan::ping(&s.scanner, READY_CONNECT_TIMEOUT).await {
            return (
                false,
                format!("malware scanner ({}) unreachable ([scan] on_error = \"reject\"): {e}\n", s.scanner),
            );
        }
    }
    // Every connector a backend uses has a live link.
    if let Err(why) = ctx.connectors.ready() {
        return (false, format!("{why}\n"));
    }
    // Ready while any backend of the pool takes connections; all are tried at once.
    let mut tries = tokio::task::JoinSet::new();
    for m in &ctx.pool.members {
        let address = m.target.address.clone();
        let connectors = Arc::clone(&ctx.connectors);
        tries.spawn(async move {
            let connect = crate::server::dial::control(&connectors, &address);
            match tokio::time::timeout(READY_CONNECT_TIMEOUT, connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("backend unreachable: {e}")),
                Err(_) => Err("backend did not answer in time".to_string()),
            }
        });
    }
    let mut why = Vec::new();
    while let Some(r) = tries.join_next().await {
        match r {
            Ok(Ok(())) => return (true, "ready\n".into()),
            Ok(Err(e)) => why.push(e),
            Err(e) => why.push(format!("backend check failed: {e}")),
        }
    }
    (false, format!("{}\n", why.join("; ")))
}

/// Serves the endpoint on an already-bound listener until the task is dropped.
/// Each request reads the context `live` holds then.
///
/// Bounded like every side door: at most [`MAX_HTTP_CONNECTIONS`] at once
/// (more are closed at once and counted), request headers within
/// [`HTTP_HEADER_TIMEOUT`], a whole connection within [`HTTP_CONNECTION_TIME`],
/// and accept errors back off instead of spinning, so a flood of idle
/// connections here cannot take the descriptors FTP needs.
/// When the process started serving HTTP (with the process, in practice):
/// `/status`'s uptime, which a reload does not reset.
static STARTED: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

/// `/status`'s header: version, uptime, listeners, backends by name with
/// their health (no addresses), bans on this instance.
fn status_header(ctx: &SessionContext) -> status_page::Header {
    let pools = std::iter::once(("default", &ctx.pool)).chain(ctx.named_backends.iter().map(|(n, p)| (n.as_str(), p)));
    let backends = pools
        .flat_map(|(name, pool)| {
            pool.view().into_iter().enumerate().map(move |(i, m)| (format!("{name} #{}", i + 1), m.healthy, m.sessions))
        })
        .collect();
    status_page::Header {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: STARTED.elapsed().as_secs(),
        listeners: ctx
            .settings
            .listeners
            .iter()
            .map(|l| format!("{} ({:?})", l.address, l.tls).to_lowercase())
            .collect(),
        backends,
        bans: ctx.logins.lock().unwrap_or_else(|e| e.into_inner()).banned(ctx.now()).len(),
        connectors: ctx.connectors.views().into_iter().map(|v| (v.name, v.links, v.instances, v.streams)).collect(),
    }
}

pub async fn serve(listener: TcpListener, live: Arc<LiveContext>) {
    std::sync::LazyLock::force(&STARTED);
    static ACCEPT: crate::server::accept::AcceptErrors = crate::server::accept::AcceptErrors::new("http");
    crate::server::accept::serve_capped(&ACCEPT, MAX_HTTP_CONNECTIONS, live, &listener, |stream, live| async move {
        let svc = hyper::service::service_fn(move |req| handle(req, Arc::clone(&live)));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HTTP_HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc);
        let _ = tokio::time::timeout(HTTP_CONNECTION_TIME, conn).await;
    })
    .await
}

/// Connections to the metrics listener at once.
pub const MAX_HTTP_CONNECTIONS: usize = 64;
/// Time for a request's headers to arrive.
const HTTP_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Time one connection may stay open, requests and keep-alive together.
const HTTP_CONNECTION_TIME: std::time::Duration = std::time::Duration::from_secs(30);
