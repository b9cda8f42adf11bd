//! How ftpgate reaches a backend: its own TCP connection, or a stream
//! through an outbound connector (`connector:NAME`). Sessions, the probe,
//! health checks and `/readyz` all open backend connections here.

use crate::config::connector_name;
use crate::connector::{Connectors, Target, Via};
use crate::tls::stream::BackendConn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// How a session's data connections reach the backend: the way its control
/// connection did, and through a connector the same connector process.
#[derive(Clone, Default)]
pub enum Dialer {
    #[default]
    Direct,
    Connector {
        connectors: Arc<Connectors>,
        name: String,
        instance: String,
    },
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dialer::Direct => write!(f, "Direct"),
            Dialer::Connector { name, instance, .. } => write!(f, "Connector({name}, {instance})"),
        }
    }
}

/// A backend control connection, opened.
pub struct ControlConn {
    pub conn: BackendConn,
    /// The backend's address (through a connector: as the connector reached it).
    pub peer: SocketAddr,
    /// The address it was reached from (through a connector: the link's far end).
    pub local: SocketAddr,
    pub dialer: Dialer,
    pub via: Option<Via>,
}

fn connector_error(e: crate::connector::ConnectorError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string())
}

/// Opens a control connection to `address` (`HOST:PORT` or
/// `connector:NAME`); the caller bounds the time.
pub async fn control(connectors: &Arc<Connectors>, address: &str) -> io::Result<ControlConn> {
    if let Some(name) = connector_name(address) {
        let opened = connectors.open(name, None, Target::Control).await.map_err(connector_error)?;
        let peer =
            opened.peer.ok_or_else(|| io::Error::other(format!("connector {name} did not say what it reached")))?;
        let dialer = Dialer::Connector {
            connectors: Arc::clone(connectors),
            name: name.to_string(),
            instance: opened.via.instance.clone(),
        };
        return Ok(ControlConn {
            conn: BackendConn::Tunnel(Box::new(opened.tunnel)),
            peer,
            local: opened.via.peer,
            dialer,
            via: Some(opened.via),
        });
    }
    let tcp = TcpStream::connect(address).await?;
    let _ = tcp.set_nodelay(true);
    Ok(ControlConn {
        peer: tcp.peer_addr()?,
        local: tcp.local_addr()?,
        conn: BackendConn::Tcp(tcp),
        dialer: Dialer::Direct,
        via: None,
    })
}

impl Dialer {
    /// A data connection to the backend's `addr`; the caller bounds the time.
    pub async fn data(&self, addr: SocketAddr) -> io::Result<BackendConn> {
        match self {
            Dialer::Direct => Ok(BackendConn::Tcp(TcpStream::connect(addr).await?)),
            Dialer::Connector { connectors, name, instance } => {
                let opened =
                    connectors.open(name, Some(instance), Target::Data(addr)).await.map_err(connector_error)?;
                Ok(BackendConn::Tunnel(Box::new(opened.tunnel)))
            }
        }
    }
}
