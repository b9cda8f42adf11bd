//! Client-facing passive listeners drawn from the configured port range.

use crate::config::PortRange;
use crate::metrics::{GaugeGuard, Metrics};
use rand::Rng;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;

/// A bound passive port. Dropping it closes the port and releases the gauge.
#[derive(Debug)]
pub struct PassiveListener {
    pub listener: TcpListener,
    pub port: u16,
    _open: GaugeGuard,
}

/// Binds a listener on `ip` at a port from `range`. Starts at a random port so
/// concurrent sessions rarely collide and ports are hard to predict (a client
/// on another network cannot guess where the next transfer will land), then
/// probes upward. `None` when every port in the range is taken.
pub fn bind(ip: IpAddr, range: PortRange, metrics: &Arc<Metrics>) -> Option<PassiveListener> {
    let len = range.len();
    let first = rand::thread_rng().gen_range(0..len);
    for i in 0..len {
        let port = range.min + ((first + i) % len) as u16;
        match std_bind(SocketAddr::new(ip, port)) {
            Ok(listener) => {
                return Some(PassiveListener {
                    listener,
                    port,
                    _open: GaugeGuard::new(metrics, |m| &m.passive_listeners_open),
                })
            }
            Err(_) => continue,
        }
    }
    Metrics::inc(&metrics.passive_ports_exhausted);
    None
}

fn std_bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // On Linux SO_REUSEADDR never lets two listeners share a port; it only lets
    // a port whose last data connection sits in TIME_WAIT be used again, which a
    // busy range needs.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8)
}
