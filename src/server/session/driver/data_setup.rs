//! The driver's data setups: a reservation on the shared passive ports
//! (`PASV`/`EPSV`), or both legs connected out (`PORT`/`EPRT`).

use super::Driver;
use crate::protocol::command::TransferDirection;
use crate::server::passive;
use crate::server::session::data::{self, DataTls};
use crate::session::core;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{debug, warn};

impl Driver {
    /// TLS for the legs of a data connection set up now (`PROT` applies to
    /// data connections set up after it).
    pub(super) fn data_tls(&self, private: bool) -> DataTls {
        DataTls {
            client: if private { self.acceptor.clone() } else { None },
            direction: Arc::default(),
            require_reuse: self.ctx.settings.require_session_reuse,
            backend: self.backend.tls.clone(),
            metrics: Arc::clone(&self.ctx.metrics),
            scan: self.ctx.settings.scan.clone().map(Arc::new),
        }
    }

    /// Reserves a shared passive port for the client's address (waiting for
    /// one while the address holds them all) and starts waiting for the
    /// client on it; the backend leg is connected once the client's is in.
    pub(super) async fn open_passive(
        &mut self,
        backend: SocketAddr,
        private: bool,
    ) -> Result<u16, core::DataSetupFailure> {
        // A new PASV replaces the one before: its reservation ends first, so
        // a session never waits for a port it holds itself.
        self.data = None;
        let s = Arc::clone(&self.ctx.settings);
        let tls = self.data_tls(private);
        let go = data::go_channel();
        let claim = passive::Claim {
            client_ip: self.client_peer.ip(),
            key: self.ctx.address_key(self.client_peer.ip()),
            proxy: self.proxy_from.clone(),
            tls: tls.client.clone().map(|acceptors| passive::ClaimTls {
                acceptors,
                direction: Arc::clone(&tls.direction),
                require_reuse: tls.require_reuse,
                go: go.subscribe(),
            }),
            timeout: s.data_connect,
        };
        let reservation =
            self.ctx.passive.reserve(self.client_local.ip().to_canonical(), s.passive_ports, claim).await.inspect_err(
                |why| warn!(target: "ftpgate::session", reason = why.label(), %why, "no passive port for the client"),
            )?;
        let port = reservation.port();
        debug!(target: "ftpgate::session", port, %backend, "passive data channel prepared");
        let (connect, client_go) = (s.data_connect, go.subscribe());
        let dialer = self.backend.dialer.clone();
        self.data = Some(data::spawn(
            async move {
                // Plain: the connection comes at once, then the backend leg.
                // TLS: the backend leg as soon as a connection from the
                // client's address arrives (see `Reservation::arrival`).
                let arrival = reservation.arrival();
                let client = reservation.connection(client_go);
                tokio::pin!(client);
                let early = tokio::select! {
                    c = &mut client => Err(c),
                    () = arrival => Ok(data::connect_backend(&dialer, backend, connect).await),
                };
                match early {
                    Err(Ok(client)) => Ok((Ok(client), data::connect_backend(&dialer, backend, connect).await?)),
                    Err(Err(e)) => {
                        data::reset_backend(&dialer, backend, connect).await;
                        Err(e)
                    }
                    // The backend leg is in: a client leg that fails now is
                    // ended on the backend's side as any TLS failure is
                    // (`DataTls::wrap` closes it politely).
                    Ok(backend_leg) => Ok((client.await, backend_leg?)),
                }
            },
            tls,
            go,
            s.data_connect,
            s.transfer_stall,
        ));
        Ok(port)
    }

    /// Both legs of an active-mode transfer; ftpgate connects out after the
    /// command, so the direction is known before a client could start TLS.
    pub(super) async fn connect_active(
        &mut self,
        client_addr: SocketAddr,
        backend_addr: SocketAddr,
        direction: TransferDirection,
        private: bool,
    ) -> Result<(), core::DataSetupFailure> {
        let s = Arc::clone(&self.ctx.settings);
        let backend = data::connect_backend(&self.backend.dialer, backend_addr, s.data_connect).await.map_err(|e| {
            self.ctx.metrics.backend_error("data_connect");
            core::DataSetupFailure::BackendConnect(e.to_string())
        })?;
        let client = data::connect_client(self.client_local.ip(), client_addr, s.data_connect)
            .await
            .map_err(|e| core::DataSetupFailure::ClientConnect(e.to_string()))?;
        let tls = self.data_tls(private);
        let _ = tls.direction.set(direction);
        let legs = std::future::ready(Ok((Ok(crate::tls::stream::ClientStream::Plain(client)), backend)));
        self.data = Some(data::spawn(legs, tls, data::go_channel(), s.data_connect, s.transfer_stall));
        Ok(())
    }
}
