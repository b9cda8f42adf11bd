//! Data connections: the client leg (accepted on a passive port, or connected
//! out for PORT/EPRT), the backend leg (always ftpgate connecting to the
//! backend's passive port), TLS on either, and the relay between them.

use crate::metrics::{GaugeGuard, Metrics};
use crate::protocol::TransferDirection;
use crate::relay;
use crate::server::dial::Dialer;
use crate::tls::stream::{BackendConn, BackendStream, ClientStream, ReadAhead};
use crate::tls::{self, BackendSessionTls, SessionAcceptors};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::LazyConfigAcceptor;

/// Backends warned about TLS 1.3 resumption, once an hour each.
static TICKET_WARNED: std::sync::LazyLock<crate::log_limit::PerKey<String>> =
    std::sync::LazyLock::new(|| crate::log_limit::PerKey::new(Duration::from_secs(3600)));

/// After a TLS transfer, how long to wait for the peers' close_notify and EOF.
/// Closing with unread bytes (late session tickets) sends a TCP reset, which
/// can make a peer discard the end of a transfer.
const TLS_LINGER: Duration = Duration::from_secs(5);

pub use crate::session::outcome::{DataError, DataOutcome, ScanVerdict};

/// TLS to put on each leg of one data connection.
#[derive(Clone)]
pub struct DataTls {
    /// Client leg under `PROT P`: the session's own configurations.
    pub client: Option<SessionAcceptors>,
    /// What the connection carries, set by the session when the transfer
    /// command arrives. A passive connection is accepted before that, so the
    /// client leg's configuration is chosen only once its ClientHello is in.
    pub direction: Arc<OnceLock<TransferDirection>>,
    /// Refuse client data connections that do not resume the control session.
    pub require_reuse: bool,
    pub backend: Option<BackendSessionTls>,
    pub metrics: Arc<Metrics>,
    /// `[scan]`: an upload's client leg is teed into clamd.
    pub scan: Option<Arc<crate::config::ScanSettings>>,
}

impl DataTls {
    fn any(&self) -> bool {
        self.client.is_some() || self.backend.is_some()
    }

    /// Puts TLS on both legs at once: the backend starts its handshake only
    /// after it sent `150`, and the client only after it read it, so neither
    /// may wait for the other.
    ///
    /// The backend leg's handshake waits for `go` (the backend's 125/150):
    /// clients connect before they send the transfer command, and a command
    /// the backend refuses never gets a handshake on its side, so starting
    /// early would spend a single-use TLS 1.3 ticket for nothing (two such
    /// misses and vsftpd answers 522, ProFTPD 425). The client leg may start
    /// before the 150 (aioftp does) or after it (curl, lftp); its timeout
    /// counts from `go`, so a client that connects early and sends its
    /// command later is not cut off.
    async fn wrap(
        &self,
        client: Result<ClientStream, DataError>,
        backend: BackendConn,
        timeout: Duration,
        go: Go,
    ) -> Result<(ClientStream, BackendStream), DataError> {
        let client_leg = async {
            let client = client?;
            // A passive connection under PROT P comes with TLS on it: the
            // shared port needed the handshake to know whose it is.
            let (acceptors, client) = match (&self.client, client) {
                (Some(acceptors), ClientStream::Plain(tcp)) => (acceptors, tcp),
                (_, ready) => return Ok(ready),
            };
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), ReadAhead::data(client))
                .await
                .map_err(DataError::ClientTls)?;
            // Clients start the handshake after the transfer command's 150, so
            // the direction is known here.
            let download = self.direction.get() == Some(&TransferDirection::Download);
            let config = acceptors.for_data(download);
            let tls = start.into_stream(config).await.map_err(DataError::ClientTls)?;
            let resumed = tls::resumed(tls.get_ref().1);
            self.metrics.tls_version("client_data", Some(tls::version_label(tls.get_ref().1)));
            Metrics::inc(if resumed {
                &self.metrics.tls_client_data_resumed
            } else {
                &self.metrics.tls_client_data_full
            });
            if self.require_reuse && !resumed {
                return Err(DataError::NotResumed);
            }
            Ok(ClientStream::Tls(Box::new(tls)))
        };
        let backend_leg = async {
            let Some(b) = &self.backend else { return Ok(BackendStream::Plain(backend)) };
            wait_for_go(go.clone()).await;
            let tls = b
                .connector
                .connect(b.server_name.clone(), ReadAhead::data(backend))
                .await
                .map_err(DataError::BackendTls)?;
            let resumed = tls::resumed(tls.get_ref().1);
            self.metrics.tls_version("backend_data", Some(tls::version_label(tls.get_ref().1)));
            Metrics::inc(if resumed {
                &self.metrics.tls_backend_data_resumed
            } else {
                &self.metrics.tls_backend_data_full
            });
            if !resumed && tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
                // TLS 1.3 tickets are single-use in rustls; a server that sends
                // none (pure-ftpd) or too few (OpenSSL-based ProFTPD on uploads)
                // leaves nothing to resume with, and strict servers refuse the
                // connection. Said once per backend an hour, with the session
                // (the data task runs in the session's span); the count is in
                // ftpgate_tls_handshakes_total{leg="backend_data",kind="full"}.
                let backend = b.server_name.to_str().into_owned();
                if TICKET_WARNED.allow(&backend) {
                    tracing::warn!(target: "ftpgate::tls",
                        %backend,
                        "backend data connection did not resume the control session over TLS 1.3: no unused \
                         session ticket from this server (it sent none, or fewer than there were data \
                         connections); a server that requires session reuse refuses such connections, so keep \
                         [backend] max_tls_version at its default \"1.2\" for it (docs/troubleshooting.md); said once an hour"
                    );
                }
            }
            Ok(BackendStream::Tls(Box::new(tls)))
        };
        let (client, backend) =
            tokio::join!(within_after(go.clone(), timeout, client_leg), within_after(go.clone(), timeout, backend_leg));
        match (client, backend) {
            (Ok(c), Ok(b)) => Ok((c, b)),
            (Err(e), Ok(mut b)) => {
                // A backend whose data handshake is cut off may end the whole
                // session (vsftpd does); closed politely, it sees an empty
                // transfer and the session goes on.
                let _ = tokio::time::timeout(timeout, b.shutdown()).await;
                Err(e)
            }
            (Ok(_), Err(e)) | (Err(e), Err(_)) => Err(e),
        }
    }
}

/// Runs `leg`, bounded by `timeout` counted from the moment `go` is set: the
/// leg may make progress before that, unbounded (the session drops the whole
/// data channel when the command is refused or the session ends).
async fn within_after<T>(
    go: Go,
    timeout: Duration,
    leg: impl Future<Output = Result<T, DataError>>,
) -> Result<T, DataError> {
    tokio::pin!(leg);
    tokio::select! {
        r = &mut leg => return r,
        _ = wait_for_go(go) => {}
    }
    tokio::time::timeout(timeout, leg).await.unwrap_or(Err(DataError::TlsTimeout(timeout.as_secs())))
}

/// The session's word that the backend accepted the transfer command, with
/// the limits the transfer runs under.
pub type Go = crate::server::passive::Go;

/// The session's side of [`Go`]: made before the data channel, since a
/// passive reservation under `PROT P` needs the receiving side.
pub type GoSender = tokio::sync::watch::Sender<Option<relay::Limits>>;

pub fn go_channel() -> GoSender {
    tokio::sync::watch::channel(None).0
}

/// Waits until the session says the backend accepted the transfer command.
/// A dropped sender (the channel is being torn down) never says go.
async fn wait_for_go(mut go: Go) -> relay::Limits {
    let limits = go.wait_for(Option::is_some).await.map(|l| l.clone().unwrap_or_default());
    match limits {
        Ok(limits) => limits,
        Err(_) => std::future::pending().await,
    }
}

/// Connects to a client's PORT/EPRT address from the address the client reached
/// ftpgate on, so the client's firewall sees the server it expects.
pub async fn connect_client(local_ip: IpAddr, addr: SocketAddr, timeout: Duration) -> Result<TcpStream, DataError> {
    let connect = async {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        let local_ip = local_ip.to_canonical();
        if local_ip.is_ipv4() == addr.is_ipv4() {
            socket.bind(SocketAddr::new(local_ip, 0))?;
        }
        socket.connect(addr).await
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r.map_err(|e| DataError::ClientConnect(addr, e)),
        Err(_) => Err(DataError::ClientConnect(addr, io::ErrorKind::TimedOut.into())),
    }
}

pub async fn connect_backend(dialer: &Dialer, addr: SocketAddr, timeout: Duration) -> Result<BackendConn, DataError> {
    match tokio::time::timeout(timeout, dialer.data(addr)).await {
        Ok(r) => r.map_err(|e| DataError::BackendConnect(addr, e)),
        Err(_) => Err(DataError::BackendTimeout(addr, timeout.as_secs())),
    }
}

/// Opens the backend's data connection only to reset it: when the client
/// never connected, a backend that waits for its own data connection (vsftpd
/// and ProFTPD do not read the control connection meanwhile) fails the
/// transfer at once with a 4xx instead of after its own timeout, so the
/// session's replies stay in step.
pub async fn reset_backend(dialer: &Dialer, addr: SocketAddr, timeout: Duration) {
    // Through a connector, dropping the stream unfinished resets it, and the
    // connector resets its backend connection in turn.
    if let Ok(BackendConn::Tcp(stream)) = connect_backend(dialer, addr, timeout).await {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
}

/// How often a running transfer's bytes reach the metrics.
const LIVE_COUNTER_PERIOD: Duration = Duration::from_secs(1);

/// What of a relay's progress the metrics have been told already.
#[derive(Default)]
struct LiveBytes {
    a_written: u64,
    b_written: u64,
    a_read: u64,
    b_read: u64,
}

impl LiveBytes {
    fn publish(&mut self, p: &relay::Progress, m: &Metrics) {
        use std::sync::atomic::Ordering::Relaxed;
        let step = |seen: &mut u64, now: u64, to: &std::sync::atomic::AtomicU64| {
            Metrics::add(to, now.saturating_sub(*seen));
            *seen = now.max(*seen);
        };
        step(&mut self.a_written, p.a_to_b.written.load(Relaxed), &m.bytes_client_to_backend);
        step(&mut self.b_written, p.b_to_a.written.load(Relaxed), &m.bytes_backend_to_client);
        step(&mut self.a_read, p.a_to_b.read.load(Relaxed), &m.bytes_read_from_client);
        step(&mut self.b_read, p.b_to_a.read.load(Relaxed), &m.bytes_read_from_backend);
    }
}

/// A running data channel. Dropping it aborts the task, closing whatever legs
/// are open, so an abandoned PASV or an ended session leaks nothing.
///
/// The task's handle is taken out of its slot the moment the task's outcome
/// is read, so an ended task can never be polled again (tokio panics on
/// `JoinHandle polled after completion`): a channel whose outcome was
/// delivered is inert, and stopping or aborting it does nothing.
#[derive(Debug)]
pub struct DataChannel {
    task: Option<JoinHandle<DataOutcome>>,
    direction: Arc<OnceLock<TransferDirection>>,
    go: tokio::sync::watch::Sender<Option<relay::Limits>>,
    /// The scanner's verdict on the upload, set before the task ends.
    scanned: Arc<std::sync::Mutex<Option<ScanVerdict>>>,
    /// The policy lets `[scan]` apply to this transfer.
    scan_on: Arc<std::sync::atomic::AtomicBool>,
}

impl DataChannel {
    /// Tells the data task what the connection carries; call before the
    /// transfer command goes to the backend.
    pub fn set_direction(&self, direction: TransferDirection) {
        let _ = self.direction.set(direction);
    }

    /// The backend answered the transfer command with 125/150: TLS
    /// handshakes on the data legs may start, and the relay, under `limits`.
    pub fn backend_accepted(&self, limits: relay::Limits) {
        self.go.send_replace(Some(limits));
    }

    /// Resolves with the task's outcome, once; afterwards it never resolves
    /// (the outcome was delivered). Cancel-safe: dropped before the end, the
    /// handle stays in its slot.
    pub async fn ended(&mut self) -> DataOutcome {
        let Some(task) = self.task.as_mut() else { return std::future::pending().await };
        let outcome = task.await;
        // Taken in the same poll that saw the end.
        self.task = None;
        outcome.unwrap_or_else(|e| DataOutcome::Failed(DataError::Task(e.to_string())))
    }

    /// Whether `[scan]` applies to the transfer about to start (the policy
    /// may exempt a user); call before [`backend_accepted`](Self::backend_accepted).
    pub fn set_scan(&self, on: bool) {
        self.scan_on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The scanner's verdict on this channel's upload, once it ended.
    pub fn scan_verdict(&self) -> Option<ScanVerdict> {
        self.scanned.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Whether the task's outcome is still to be read.
    pub fn running(&self) -> bool {
        self.task.is_some()
    }

    /// Ends the task at once, legs and all; its outcome (`Failed`, the task
    /// was cancelled) still reaches [`ended`](Self::ended).
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Ends the transfer early (ABOR): a running relay closes both legs in
    /// order, with close_notify on TLS legs, since a strict server (vsftpd)
    /// ends its whole session when a TLS data connection just breaks off. A
    /// channel whose relay has not started is simply dropped. Returns once
    /// the task has ended.
    pub async fn stop(&mut self) -> Option<DataOutcome> {
        let mut task = self.task.take()?;
        let stop = self.go.borrow().as_ref().map(|l| std::sync::Arc::clone(&l.stop));
        match stop {
            Some(stop) => stop.notify_one(),
            None => task.abort(),
        }
        match tokio::time::timeout(STOP_WAIT, &mut task).await {
            Ok(ended) => ended.ok(),
            Err(_) => {
                task.abort();
                task.await.ok()
            }
        }
    }
}

/// How long a stopped data channel may take to close its legs in order.
const STOP_WAIT: Duration = Duration::from_secs(3);

impl Drop for DataChannel {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Runs `legs` (both TCP connections; the client's may have failed after the
/// backend's was connected for it), puts TLS on them as
/// `tls` says, then relays, as its own task so the control channel stays
/// responsive (ABOR) during the transfer.
pub fn spawn<L>(legs: L, tls: DataTls, go: GoSender, connect_timeout: Duration, stall: Duration) -> DataChannel
where
    L: Future<Output = Result<(Result<ClientStream, DataError>, BackendConn), DataError>> + Send + 'static,
{
    let metrics = Arc::clone(&tls.metrics);
    let direction = Arc::clone(&tls.direction);
    let go_rx = go.subscribe();
    let scanned = Arc::<std::sync::Mutex<Option<ScanVerdict>>>::default();
    let verdict_slot = Arc::clone(&scanned);
    let scan_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scan_wanted = Arc::clone(&scan_on);
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let _open = GaugeGuard::new(&metrics, |m| &m.data_channels_open);
            let (client, backend) = match legs.await {
                Ok(l) => l,
                Err(e) => return DataOutcome::Failed(e),
            };
            if let Some(c) = client.as_ref().ok().and_then(ClientStream::tcp) {
                let _ = c.set_nodelay(true);
            }
            backend.set_nodelay();
            let linger = if tls.any() { TLS_LINGER } else { Duration::ZERO };
            let (client, backend) = match tls.wrap(client, backend, connect_timeout, go_rx.clone()).await {
                Ok(l) => l,
                Err(e) => return DataOutcome::Failed(e),
            };
            // Nothing is relayed before the backend accepted the command: the
            // limits come with its 150.
            let limits = wait_for_go(go_rx).await;
            let progress = Arc::clone(&limits.progress);
            let scan = tls.scan.clone().filter(|_| {
                tls.direction.get() == Some(&TransferDirection::Upload)
                    && scan_wanted.load(std::sync::atomic::Ordering::Relaxed)
            });
            let relayed = async {
                if let Some(settings) = scan {
                    // Scanned uploads take the copy path: the bytes pass
                    // through ftpgate's memory on their way to clamd anyway.
                    Metrics::inc(&metrics.relays_copied);
                    let (tee, scan) = crate::server::scan::start(client, settings);
                    let report = relay::relay(tee, backend, stall, linger, &limits).await;
                    if matches!(report.end, relay::RelayEnd::Eof(_)) {
                        let verdict = scan.verdict().await;
                        *verdict_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
                    }
                    return report;
                }
                match (client, backend) {
                    #[cfg(target_os = "linux")]
                    (ClientStream::Plain(c), BackendStream::Plain(BackendConn::Tcp(b))) => {
                        match relay::splice::relay(c, b, stall, &limits).await {
                            Ok(r) => {
                                Metrics::inc(&metrics.relays_spliced);
                                r
                            }
                            Err((c, b)) => {
                                Metrics::inc(&metrics.relays_copied);
                                relay::relay(c, b, stall, linger, &limits).await
                            }
                        }
                    }
                    (client, backend) => {
                        Metrics::inc(&metrics.relays_copied);
                        relay::relay(client, backend, stall, linger, &limits).await
                    }
                }
            };
            tokio::pin!(relayed);
            // The byte counters move while a transfer runs, not only at its end.
            let mut counted = LiveBytes::default();
            let mut tick = tokio::time::interval(LIVE_COUNTER_PERIOD);
            let report = loop {
                tokio::select! {
                    r = &mut relayed => break r,
                    _ = tick.tick() => counted.publish(&progress, &metrics),
                }
            };
            counted.publish(&progress, &metrics);
            DataOutcome::Relayed(report)
        },
        span,
    ));
    DataChannel { task: Some(task), direction, go, scanned, scan_on }
}
