//! Connections that may or may not be TLS, for both legs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection from a client: ftpgate is the TLS server.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Taken apart for a TLS upgrade that failed; every operation fails.
    Detached,
}

/// A connection to the backend: ftpgate is the TLS client.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Detached,
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

            pub fn tcp(&self) -> Option<&TcpStream> {
                match self {
                    $ty::Plain(s) => Some(s),
                    $ty::Tls(t) => Some(t.get_ref().0),
                    $ty::Detached => None,
                }
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
