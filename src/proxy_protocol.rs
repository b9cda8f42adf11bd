//! PROXY protocol v1 and v2 (HAProxy, nginx, cloud load balancers) on client
//! listeners and their data connections, parsed with the `ppp` crate: the
//! address in the header, not the balancer's, is the client's for policy,
//! bans, logs and the data-connection address check.

use crate::config::ProxyVersion;
use ppp::v1;
use ppp::v2;
use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpStream;

/// Longest header accepted: v1 is at most 107 bytes; v2 TLVs from balancers
/// stay far below this.
const MAX_HEADER: usize = 1024;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header within {0} s")]
    Timeout(u64),
    #[error("connection closed before the PROXY protocol header ended")]
    Closed,
    #[error("not a PROXY protocol header")]
    Invalid,
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// The reason label in `ftpgate_proxy_header_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::Timeout(_) => "timeout",
            _ => "invalid",
        }
    }
}

/// Connections from senders not named in `proxy_from` are logged once per
/// address per minute (they may come in floods).
static UNTRUSTED_LOGGED: std::sync::LazyLock<crate::log_limit::PerKey<std::net::IpAddr>> =
    std::sync::LazyLock::new(|| crate::log_limit::PerKey::new(Duration::from_secs(60)));

/// Refuses (counts, and logs once per address per minute) a connection to a
/// PROXY protocol port from a sender the configuration does not name.
pub fn refuse_untrusted(peer: SocketAddr, port: u16, metrics: &crate::metrics::Metrics) {
    metrics.proxy_header_error("untrusted");
    if UNTRUSTED_LOGGED.allow(&peer.ip().to_canonical()) {
        tracing::warn!(target: "ftpgate::proxy",
            %peer, port,
            "closed a connection to a PROXY protocol port from a sender not in proxy_from (further ones from \
             this address are counted in ftpgate_proxy_header_errors_total, not logged, for a minute)"
        );
    }
}

/// Reads the header off the front of `stream` without consuming anything
/// after it (peek, then read exactly the header), so no client byte is lost.
/// `Ok(None)`: a header without an address (health checks, `LOCAL`).
pub async fn read_header(stream: &TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, ProxyError> {
    match tokio::time::timeout(timeout, read(stream)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout(timeout.as_secs())),
    }
}

/// What the bytes at the front of a connection say, as far as they go.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header: more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes; `source` is `None` for `LOCAL` (v2) and
    /// `UNKNOWN` (v1), which carry no client address.
    Header { len: usize, source: Option<SocketAddr> },
    /// Not a PROXY protocol header.
    Invalid,
}

/// Parses the header at the front of `buf`, which may hold client bytes after
/// it. Pure, so it is property-tested on its own (truncations, TLVs, garbage).
pub fn parse(buf: &[u8]) -> Parsed {
    // ppp calls some v1 prefixes invalid (one that ends after a port's
    // space, say), so a header split by TCP would be refused: a v1 header
    // is complete only at its CRLF, within 107 bytes.
    const V1: &[u8] = b"PROXY ";
    const V1_MAX: usize = 107;
    let v1_prefix = buf.len() < V1.len() && V1.starts_with(buf) || buf.starts_with(V1);
    if v1_prefix && buf.len() < V1_MAX && !buf.windows(2).any(|w| w == b"\r\n") {
        return Parsed::Incomplete;
    }
    match HeaderResult::parse(buf) {
        r if r.is_incomplete() => Parsed::Incomplete,
        HeaderResult::V1(Ok(h)) => Parsed::Header { len: h.header.len(), source: v1_source(&h.addresses) },
        HeaderResult::V2(Ok(h)) => Parsed::Header { len: h.len(), source: v2_source(&h.addresses) },
        _ => Parsed::Invalid,
    }
}

async fn read(stream: &TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut last = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let (len, addr) = match parse(&buf[..n]) {
            Parsed::Incomplete => {
                if n >= MAX_HEADER {
                    return Err(ProxyError::TooLong);
                }
                if n == last {
                    // peek returns at once while bytes wait; give the rest time to come.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                last = n;
                continue;
            }
            Parsed::Header { len, source } => (len, source),
            Parsed::Invalid => return Err(ProxyError::Invalid),
        };
        let mut header = vec![0u8; len];
        let mut read = 0;
        while read < len {
            stream.readable().await?;
            match stream.try_read(&mut header[read..]) {
                Ok(0) => return Err(ProxyError::Closed),
                Ok(k) => read += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(addr);
    }
}

fn v1_source(a: &v1::Addresses) -> Option<SocketAddr> {
    match a {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(a: &v2::Addresses) -> Option<SocketAddr> {
    match a {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    }
}

/// The header ftpgate sends to a backend for a client at `source` that
/// reached ftpgate at `destination`. Mixed address families (an IPv4 client
/// on a dual-stack listener) are written as IPv6, IPv4-mapped.
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (mut source, mut destination) = (canonical(source), canonical(destination));
    if source.is_ipv4() != destination.is_ipv4() {
        let mapped = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => SocketAddr::new(std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
            v6 => v6,
        };
        (source, destination) = (mapped(source), mapped(destination));
    }
    match version {
        ProxyVersion::V1 => v1::Addresses::from((source, destination)).to_string().into_bytes(),
        ProxyVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        // Only a TLV section over 64 KiB can fail, and none is written.
        .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (c, l.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn v1_header_then_data_untouched() {
        let (mut c, mut s) = pair().await;
        c.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 21\r\nUSER x\r\n").await.unwrap();
        let addr = read_header(&s, Duration::from_secs(5)).await.unwrap();
        assert_eq!(addr, Some("192.0.2.7:5555".parse().unwrap()));
        let mut rest = [0u8; 8];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"USER x\r\n");
    }

    #[tokio::test]
    async fn v2_header_split_in_two_writes() {
        let (mut c, s) = pair().await;
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            ("[2001:db8::7]:4000".parse::<SocketAddr>().unwrap(), "[2001:db8::1]:21".parse::<SocketAddr>().unwrap()),
        )
        .build()
        .unwrap();
        let (a, b) = header.split_at(10);
        c.write_all(a).await.unwrap();
        let reader = tokio::spawn(async move { read_header(&s, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.write_all(b).await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), Some("[2001:db8::7]:4000".parse().unwrap()));
    }

    #[tokio::test]
    async fn garbage_and_silence_are_refused() {
        let (mut c, s) = pair().await;
        c.write_all(b"USER x\r\n").await.unwrap();
        assert!(matches!(read_header(&s, Duration::from_secs(5)).await, Err(ProxyError::Invalid)));
        let (_c, s) = pair().await;
        assert!(matches!(read_header(&s, Duration::from_millis(100)).await, Err(ProxyError::Timeout(_))));
    }

    #[test]
    fn encoded_headers_parse_back() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let listener: SocketAddr = "198.51.100.1:21".parse().unwrap();
        let v1 = encode(ProxyVersion::V1, client, listener);
        assert_eq!(v1, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 21\r\n");
        let v2 = encode(ProxyVersion::V2, client, listener);
        match ppp::v2::Header::try_from(v2.as_slice()).unwrap().addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!((a.source_address, a.source_port), ("192.0.2.7".parse().unwrap(), 40000));
                assert_eq!((a.destination_address, a.destination_port), ("198.51.100.1".parse().unwrap(), 21));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let listener: SocketAddr = "[2001:db8::1]:21".parse().unwrap();
        assert_eq!(encode(ProxyVersion::V1, client, listener), b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 40000 21\r\n");
        // An IPv4 client seen through a dual-stack socket is plain IPv4 again.
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:40000".parse().unwrap();
        let local: SocketAddr = "[::ffff:198.51.100.1]:21".parse().unwrap();
        assert!(encode(ProxyVersion::V1, mapped, local).starts_with(b"PROXY TCP4 192.0.2.7 "));
    }
}
