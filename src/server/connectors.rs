//! The edge's connector listener: accepts links from outbound connectors
//! (`[connectors] listen`) and hands each to `connector::edge::link`.

use crate::connector::edge;
use crate::connector::Connectors;
use crate::server::accept::AcceptErrors;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Accepts connector links until the task is dropped; at most
/// `edge::MAX_LINKS` at once (more are closed and counted).
pub async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    connectors: Arc<Connectors>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    static ERRORS: AcceptErrors = AcceptErrors::new("connectors");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => {
                ERRORS.succeeded();
                c
            }
            Err(e) => {
                ERRORS.failed(&e, &metrics).await;
                continue;
            }
        };
        let Some(slot) = connectors.admit() else { continue };
        let connectors = Arc::clone(&connectors);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            edge::link(tcp, peer, acceptor, connectors).await;
        });
    }
}
