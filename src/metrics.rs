//! Process-wide counters and gauges. Plain atomics for now so every layer can
//! count without a dependency on an exporter; the Prometheus endpoint reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Latency histograms (seconds).
#[derive(Debug, Clone)]
pub struct Latencies {
    pub transfer: prometheus::Histogram,
    pub backend_connect: prometheus::Histogram,
    pub client_tls_handshake: prometheus::Histogram,
    pub backend_tls_handshake: prometheus::Histogram,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Histogram {
    prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid histogram")
}

impl Default for Latencies {
    fn default() -> Self {
        let fast = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        Latencies {
            transfer: histogram(
                "ftpgate_transfer_duration_seconds",
                "Duration of data transfers, from the transfer command to the final reply.",
                vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
            ),
            backend_connect: histogram(
                "ftpgate_backend_connect_duration_seconds",
                "Time to connect to the backend's control port.",
                fast.clone(),
            ),
            client_tls_handshake: histogram(
                "ftpgate_client_tls_handshake_duration_seconds",
                "TLS handshakes with clients on control connections.",
                fast.clone(),
            ),
            backend_tls_handshake: histogram(
                "ftpgate_backend_tls_handshake_duration_seconds",
                "TLS handshakes with the backend on control connections.",
                fast,
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub latency: Latencies,
    /// Connections on PROXY protocol listeners (control or passive) refused:
    /// all, and by reason (`untrusted` sender, `invalid` header, `timeout`).
    pub proxy_header_errors: AtomicU64,
    pub proxy_header_errors_by_reason: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Client sessions open now.
    pub sessions_open: AtomicU64,
    pub sessions_total: AtomicU64,
    /// Clients turned away because `limits.max_sessions` was reached.
    pub sessions_refused: AtomicU64,
    /// Commands and connections refused by the policy.
    pub policy_denials: AtomicU64,
    /// The same, by the rule that decided (rule names come from the policy
    /// file, so their number is bounded by it).
    pub policy_denials_by_rule: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// PASS answered 530 by the backend.
    pub logins_failed: AtomicU64,
    pub logins_ok: AtomicU64,
    /// Sessions by listener address and its TLS mode.
    pub sessions_by_listener: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    /// Transfers by kind (`file`, `listing`) and result (`ok`, `failed`, `aborted`).
    pub transfers_by_kind: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Uploads judged by the malware scanner, by result.
    pub scans_by_result: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Whether the scanner answered its last health check (1) or not (0).
    pub scanner_up: AtomicU64,
    /// Backend errors by kind (`connect`, `closed`, `timeout`, `malformed`, `tls`, `refused`, `passive_reply`, `data_connect`).
    pub backend_errors_by_kind: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Commands by verb (known verbs only, others as OTHER) and result.
    pub commands: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    /// USER refused by ftpgate itself (client certificate mismatch).
    pub logins_refused: AtomicU64,
    /// Requests to the shared state (Redis) that failed or timed out.
    pub cluster_errors: AtomicU64,
    /// Sessions ended by the front door, by reason (address_limit, policy,
    /// login_timeout).
    pub session_refusals_by_reason: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// TLS handshakes by leg (client_control, client_data, backend_control,
    /// backend_data) and negotiated version.
    pub tls_versions: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// The highest TLS version each backend is offered (`backend.max_tls_version`).
    pub backend_tls_max: std::sync::Mutex<std::collections::BTreeMap<String, &'static str>>,
    /// Uploads stopped at `max_upload_size`.
    pub uploads_capped: AtomicU64,
    /// Transfers refused by `max_transfers`.
    pub transfers_refused_max: AtomicU64,
    /// Time relays waited for rate limits, per direction (microseconds).
    pub rate_wait_upload_us: AtomicU64,
    pub rate_wait_download_us: AtomicU64,
    /// Backend control connections opened (at login, never before).
    pub backend_connections: AtomicU64,
    /// Command lines refused before reaching the backend (syntax, length, NUL,
    /// bare CR/LF).
    pub commands_rejected: AtomicU64,
    /// PORT/EPRT refused by bounce protection.
    pub active_refused: AtomicU64,
    /// Client-facing passive listeners open now.
    pub passive_listeners_open: AtomicU64,
    /// Control-connection listeners accepting clients now.
    pub listeners_up: AtomicU64,
    /// SIGHUP reloads that took effect, and those refused (old configuration
    /// kept).
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// PASV/EPSV that found no free port in the range.
    pub passive_ports_exhausted: AtomicU64,
    /// Passive reservations (port, client address) held now.
    pub passive_reservations: AtomicU64,
    /// Passive setups that waited because their address held every port.
    pub passive_waits: AtomicU64,
    /// TLS data connections told apart by the session they resumed, among
    /// several sessions of one address on one port.
    pub passive_tls_routed: AtomicU64,
    /// TLS data connections on a passive port that resumed no session
    /// waiting there for their address (a fresh handshake where reuse is
    /// required or the port is shared, or another session's ticket).
    pub passive_tls_refused: AtomicU64,
    /// Connections to a passive port from an address other than the client's.
    pub data_connections_refused: AtomicU64,
    /// Data relays running now.
    pub data_channels_open: AtomicU64,
    /// Data relays that ran zero-copy (splice) and those that copied (a TLS
    /// leg, or no pipes left).
    pub relays_spliced: AtomicU64,
    pub relays_copied: AtomicU64,
    pub transfers_ok: AtomicU64,
    pub transfers_failed: AtomicU64,
    pub transfers_aborted: AtomicU64,
    /// Data bytes by direction and leg: taken from the sending leg, and
    /// delivered to the receiving one (less when a transfer broke between).
    pub bytes_client_to_backend: AtomicU64,
    pub bytes_backend_to_client: AtomicU64,
    pub bytes_read_from_client: AtomicU64,
    pub bytes_read_from_backend: AtomicU64,
    /// Backend unreachable, closed, timed out or sent an unusable reply.
    pub backend_errors: AtomicU64,
    /// TLS handshakes on the client control leg (AUTH TLS or implicit).
    pub tls_client_control: AtomicU64,
    /// Client data-connection handshakes that resumed the control session, and
    /// those that did not (refused when session reuse is required).
    pub tls_client_data_resumed: AtomicU64,
    pub tls_client_data_full: AtomicU64,
    pub tls_backend_data_resumed: AtomicU64,
    pub tls_backend_data_full: AtomicU64,
    /// Failed TLS handshakes with clients (control or data).
    pub tls_client_failures: AtomicU64,
    /// Failed accepts (out of descriptors, mostly), by listener (ftp,
    /// passive, http, admin).
    pub accept_errors_by_listener: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Side-door connections (HTTP, admin socket) refused at their cap.
    pub side_connections_refused: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Malformed, unknown and denied commands, by kind.
    pub bad_commands_by_kind: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Sessions ended by a panic inside them (a bug: the client got 421).
    pub session_panics: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn count_denial(&self, rule: &str) {
        Metrics::inc(&self.policy_denials);
        let mut by_rule = self.policy_denials_by_rule.lock().unwrap_or_else(|e| e.into_inner());
        *by_rule.entry(rule.to_string()).or_insert(0) += 1;
    }

    pub fn session_opened(&self, listener: std::net::SocketAddr, tls: &'static str) {
        Metrics::inc(&self.sessions_total);
        let mut m = self.sessions_by_listener.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((listener.to_string(), tls)).or_insert(0) += 1;
    }

    /// Counts a finished transfer; `result` is `ok`, `failed` or `aborted`.
    pub fn transfer(&self, kind: &'static str, result: &'static str) {
        Metrics::inc(match result {
            "ok" => &self.transfers_ok,
            "aborted" => &self.transfers_aborted,
            _ => &self.transfers_failed,
        });
        let mut m = self.transfers_by_kind.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((kind, result)).or_insert(0) += 1;
    }

    /// Counts a scanner verdict; `result` as `ScanVerdict::label`.
    pub fn scanned(&self, result: &'static str) {
        let mut m = self.scans_by_result.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(result).or_insert(0) += 1;
    }

    pub fn scans_for(&self, result: &str) -> u64 {
        self.scans_by_result.lock().unwrap_or_else(|e| e.into_inner()).get(result).copied().unwrap_or(0)
    }

    pub fn tls_version(&self, leg: &'static str, version: Option<&'static str>) {
        let Some(version) = version else { return };
        let mut m = self.tls_versions.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((leg, version)).or_insert(0) += 1;
    }

    pub fn tls_versions_for(&self, leg: &'static str, version: &'static str) -> u64 {
        self.tls_versions.lock().unwrap_or_else(|e| e.into_inner()).get(&(leg, version)).copied().unwrap_or(0)
    }

    pub fn accept_error(&self, listener: &'static str) {
        bump(&self.accept_errors_by_listener, listener);
    }

    pub fn side_connection_refused(&self, listener: &'static str) {
        bump(&self.side_connections_refused, listener);
    }

    pub fn bad_command(&self, kind: &'static str) {
        bump(&self.bad_commands_by_kind, kind);
    }

    pub fn bad_commands_for(&self, kind: &str) -> u64 {
        count_of(&self.bad_commands_by_kind, kind)
    }

    pub fn proxy_header_error(&self, reason: &'static str) {
        Metrics::inc(&self.proxy_header_errors);
        bump(&self.proxy_header_errors_by_reason, reason);
    }

    pub fn proxy_header_errors_for(&self, reason: &str) -> u64 {
        count_of(&self.proxy_header_errors_by_reason, reason)
    }

    pub fn session_refused(&self, reason: &'static str) {
        bump(&self.session_refusals_by_reason, reason);
    }

    pub fn refusals_for(&self, reason: &str) -> u64 {
        count_of(&self.session_refusals_by_reason, reason)
    }

    pub fn backend_error(&self, kind: &'static str) {
        Metrics::inc(&self.backend_errors);
        bump(&self.backend_errors_by_kind, kind);
    }

    /// Counts one command. Verbs outside the FTP vocabulary are folded into
    /// `OTHER` so a client cannot grow the label set.
    pub fn count_command(&self, verb: &str, result: &'static str) {
        const KNOWN: &[&str] = &[
            "ABOR", "ACCT", "APPE", "AUTH", "CCC", "CDUP", "CLNT", "CWD", "DELE", "EPRT", "EPSV", "FEAT", "HELP",
            "HOST", "LANG", "LIST", "MDTM", "MFMT", "MKD", "MLSD", "MLST", "MODE", "NLST", "NOOP", "OPTS", "PASS",
            "PASV", "PBSZ", "PORT", "PROT", "PWD", "QUIT", "REIN", "REST", "RETR", "RMD", "RNFR", "RNTO", "SITE",
            "SIZE", "STAT", "STOR", "STOU", "STRU", "SYST", "TYPE", "USER", "XCUP", "XCWD", "XMKD", "XPWD", "XRMD",
        ];
        let verb = if KNOWN.contains(&verb) { verb } else { "OTHER" };
        let mut c = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((verb.to_string(), result)).or_insert(0) += 1;
    }

    pub fn denials_for(&self, rule: &str) -> u64 {
        self.policy_denials_by_rule.lock().unwrap_or_else(|e| e.into_inner()).get(rule).copied().unwrap_or(0)
    }

    pub fn backend_errors_for(&self, kind: &str) -> u64 {
        self.backend_errors_by_kind.lock().unwrap_or_else(|e| e.into_inner()).get(kind).copied().unwrap_or(0)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

type LabelCounts = std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>;

/// Adds one to `label`'s count in a labelled counter.
fn bump(counts: &LabelCounts, label: &'static str) {
    *counts.lock().unwrap_or_else(|e| e.into_inner()).entry(label).or_insert(0) += 1;
}

/// `label`'s count in a labelled counter.
fn count_of(counts: &LabelCounts, label: &str) -> u64 {
    counts.lock().unwrap_or_else(|e| e.into_inner()).get(label).copied().unwrap_or(0)
}

/// Holds a gauge up while alive, so every exit path (error, panic, cancel)
/// brings it back down.
#[derive(Debug)]
pub struct GaugeGuard {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicU64,
}

impl GaugeGuard {
    pub fn new(metrics: &Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicU64) -> GaugeGuard {
        gauge(metrics).fetch_add(1, Ordering::Relaxed);
        GaugeGuard { metrics: Arc::clone(metrics), gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Ordering::Relaxed);
    }
}
