//! Connections that may or may not be TLS, for both legs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use super::read_ahead::ReadAhead;

/// A connection from a client: ftpgate is the TLS server.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<ReadAhead<TcpStream>>>),
    /// Taken apart for a TLS upgrade that failed; every operation fails.
    Detached,
}

/// A connection to the backend: ftpgate is the TLS client.
pub enum BackendStream {
    Plain(BackendConn),
    Tls(Box<tokio_rustls::client::TlsStream<ReadAhead<BackendConn>>>),
    Detached,
}

/// Any byte stream a backend connection can run over besides TCP.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Duplex for T {}

/// How ftpgate reaches the backend: a TCP connection of its own, or a
/// stream through an outbound connector (`connector:NAME`). Only the first
/// can be spliced.
pub enum BackendConn {
    Tcp(TcpStream),
    Tunnel(Box<dyn Duplex>),
}

impl BackendConn {
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            BackendConn::Tcp(t) => Some(t),
            BackendConn::Tunnel(_) => None,
        }
    }

    pub fn set_nodelay(&self) {
        if let BackendConn::Tcp(t) = self {
            let _ = t.set_nodelay(true);
        }
    }
}

impl AsyncRead for BackendConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendConn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BackendConn::Tunnel(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendConn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BackendConn::Tunnel(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    // rustls writes several records at once where the socket takes a
    // vector; without these it would make one system call per record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendConn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendConn::Tunnel(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendConn::Tcp(s) => s.is_write_vectored(),
            BackendConn::Tunnel(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendConn::Tcp(s) => Pin::new(s).poll_flush(cx),
            BackendConn::Tunnel(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendConn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BackendConn::Tunnel(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection was lost in a TLS upgrade")
}

macro_rules! delegate_io {
    ($ty:ident) => {
        impl $ty {
            pub fn is_tls(&self) -> bool {
                matches!(self, $ty::Tls(_))
            }
        }

        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $ty::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
                    $ty::Detached => Poll::Ready(Err(detached())),
                }
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $ty::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
                    $ty::Detached => Poll::Ready(Err(detached())),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_flush(cx),
                    $ty::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
                    $ty::Detached => Poll::Ready(Err(detached())),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $ty::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
                    $ty::Detached => Poll::Ready(Err(detached())),
                }
            }
        }
    };
}

delegate_io!(ClientStream);
delegate_io!(BackendStream);

impl ClientStream {
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(t) => Some(t.get_ref().0.get_ref()),
            ClientStream::Detached => None,
        }
    }
}

impl BackendStream {
    /// The TCP connection under it; `None` through a connector.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            BackendStream::Plain(s) => s.tcp(),
            BackendStream::Tls(t) => t.get_ref().0.get_ref().tcp(),
            BackendStream::Detached => None,
        }
    }
}
