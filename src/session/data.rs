//! Data connections: the client leg (accepted on a passive port, or connected
//! out for PORT/EPRT), the backend leg (always ftpgate connecting to the
//! backend's passive port), and the relay between them.

use crate::metrics::{GaugeGuard, Metrics};
use crate::passive::PassiveListener;
use crate::relay::{self, RelayReport};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("client did not open the data connection within {0} s")]
    ClientTimeout(u64),
    #[error("cannot accept the client data connection: {0}")]
    ClientAccept(io::Error),
    #[error("cannot connect to the client at {0}: {1}")]
    ClientConnect(SocketAddr, io::Error),
    #[error("cannot connect to the backend data port {0}: {1}")]
    BackendConnect(SocketAddr, io::Error),
    #[error("backend data port {0} did not answer within {1} s")]
    BackendTimeout(SocketAddr, u64),
}

/// How a data channel ended.
#[derive(Debug)]
pub enum DataOutcome {
    Relayed(RelayReport),
    Failed(DataError),
}

/// Accepts the client's data connection on `passive`, refusing (and counting)
/// connections from any address but the client's own.
pub async fn accept_client(
    passive: PassiveListener,
    client_ip: IpAddr,
    timeout: Duration,
    metrics: Arc<Metrics>,
) -> Result<TcpStream, DataError> {
    let accept = async {
        loop {
            let (stream, peer) = passive.listener.accept().await.map_err(DataError::ClientAccept)?;
            if peer.ip().to_canonical() == client_ip.to_canonical() {
                return Ok(stream);
            }
            Metrics::inc(&metrics.data_connections_refused);
            tracing::warn!(%peer, port = passive.port, "refused data connection from an address that is not the client's");
        }
    };
    tokio::time::timeout(timeout, accept).await.unwrap_or(Err(DataError::ClientTimeout(timeout.as_secs())))
}

/// Connects to a client's PORT/EPRT address from the address the client reached
/// ftpgate on, so the client's firewall sees the server it expects.
pub async fn connect_client(local_ip: IpAddr, addr: SocketAddr, timeout: Duration) -> Result<TcpStream, DataError> {
    let connect = async {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        let local_ip = match (local_ip.to_canonical(), addr) {
            (ip @ IpAddr::V4(_), SocketAddr::V4(_)) | (ip @ IpAddr::V6(_), SocketAddr::V6(_)) => ip,
            _ => local_ip,
        };
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

pub async fn connect_backend(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, DataError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(r) => r.map_err(|e| DataError::BackendConnect(addr, e)),
        Err(_) => Err(DataError::BackendTimeout(addr, timeout.as_secs())),
    }
}

/// A running data channel. Dropping it aborts the task, closing whatever legs
/// are open, so an abandoned PASV or an ended session leaks nothing.
#[derive(Debug)]
pub struct DataChannel {
    pub task: JoinHandle<DataOutcome>,
}

impl Drop for DataChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `legs` (establishing both connections) and then the relay, as its own
/// task so the control channel stays responsive (ABOR) during the transfer.
pub fn spawn<L>(legs: L, stall: Duration, metrics: &Arc<Metrics>) -> DataChannel
where
    L: Future<Output = Result<(TcpStream, TcpStream), DataError>> + Send + 'static,
{
    let metrics = Arc::clone(metrics);
    let task = tokio::spawn(async move {
        let _open = GaugeGuard::new(&metrics, |m| &m.data_channels_open);
        let (client, backend) = match legs.await {
            Ok(l) => l,
            Err(e) => return DataOutcome::Failed(e),
        };
        let _ = client.set_nodelay(true);
        let _ = backend.set_nodelay(true);
        let report = relay::relay(client, backend, stall).await;
        Metrics::add(&metrics.bytes_client_to_backend, report.a_to_b);
        Metrics::add(&metrics.bytes_backend_to_client, report.b_to_a);
        DataOutcome::Relayed(report)
    });
    DataChannel { task }
}
