//! Data-connection setup: `PASV`/`EPSV` answered on ftpgate's own passive
//! ports, `PORT`/`EPRT` checked against bounce attacks, the backend always
//! in passive mode (EPSV first, PASV once refused).

use super::*;

/// The data connection the client has asked for and not used yet.
pub(super) enum DataSetup {
    /// Accepting on ftpgate's passive port from the moment the client was told
    /// it, so connections from other addresses are refused at once.
    Passive(DataChannel),
    /// The client listens at this address (PORT/EPRT).
    Active(SocketAddr),
}

impl Session {
    /// Asks the backend for a passive port: EPSV first, PASV once EPSV is
    /// refused. The address is always the backend control connection's peer,
    /// whatever the reply says, so a lying backend cannot aim ftpgate elsewhere.
    /// `Ok(Err(reply))` is a backend refusal to pass on to the client.
    pub(super) async fn backend_passive(&mut self) -> SessionResult<Result<SocketAddr, Reply>> {
        let ip = self.backend_peer.ip();
        if self.backend_epsv {
            self.backend.send(&Command::new(Verb::Epsv, None)).await?;
            let r = self.final_reply().await?;
            match r.code {
                229 => {
                    return Ok(match address::parse_229(&r.text()) {
                        Ok(port) => Ok(SocketAddr::new(ip, port)),
                        Err(e) => Err(self.unusable_passive_reply(&r, &e.to_string())),
                    })
                }
                500 | 501 | 502 | 504 | 522 => {
                    debug!(code = r.code, "backend refused EPSV; using PASV from now on");
                    self.backend_epsv = false;
                }
                _ => return Ok(Err(r)),
            }
        }
        self.backend.send(&Command::new(Verb::Pasv, None)).await?;
        let r = self.final_reply().await?;
        if r.code != 227 {
            return Ok(Err(r));
        }
        Ok(match address::parse_227(&r.text()) {
            Ok(named) => {
                if IpAddr::V4(*named.ip()) != ip.to_canonical() {
                    debug!(named = %named, using = %ip, "backend named another host in 227; connecting to its control address");
                }
                Ok(SocketAddr::new(ip, named.port()))
            }
            Err(e) => Err(self.unusable_passive_reply(&r, &e.to_string())),
        })
    }

    pub(super) fn unusable_passive_reply(&self, r: &Reply, why: &str) -> Reply {
        self.ctx.metrics.backend_error("passive_reply");
        warn!(reply = %r.text(), why, "unusable passive reply from backend");
        Reply::single(425, "Cannot open data connection: backend sent an unusable passive reply")
    }

    pub(super) async fn passive(&mut self, cmd: &Command) -> SessionResult<()> {
        let client_v4 = self.client_peer.ip().to_canonical().is_ipv4();
        if cmd.verb == Verb::Epsv {
            match cmd.arg_str().map(str::to_ascii_uppercase).as_deref() {
                None | Some("") => {}
                Some("ALL") => {
                    self.epsv_all = true;
                    return self.reply_text(200, "EPSV ALL accepted; PORT, EPRT and PASV are now refused").await;
                }
                Some("1") if client_v4 => {}
                Some("2") if !client_v4 => {}
                Some(_) => {
                    let own = if client_v4 { 1 } else { 2 };
                    return self.reply_text(522, &format!("Network protocol not supported, use ({own})")).await;
                }
            }
        } else if self.epsv_all {
            return self.reply_text(503, "PASV refused after EPSV ALL (RFC 2428)").await;
        }
        // Any earlier unused setup is abandoned, as a server would.
        self.data = None;
        let pasv_ip = match (cmd.verb == Verb::Pasv, self.settings().public_address) {
            (false, _) => None,
            (true, Some(IpAddr::V4(ip))) => Some(ip),
            (true, _) => match self.client_local.ip().to_canonical() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => {
                    return self.reply_text(500, "PASV cannot describe an IPv6 address; use EPSV").await;
                }
            },
        };
        let backend = match self.backend_passive().await? {
            Ok(a) => a,
            Err(reply) => return self.reply(&reply).await,
        };
        let range = self.settings().passive_ports;
        let Some(listener) = passive::bind(self.client_local.ip().to_canonical(), range, &self.ctx.metrics) else {
            warn!(min = range.min, max = range.max, "passive port range exhausted");
            let text =
                format!("Cannot open passive port: all ports {}-{} are in use; try again later", range.min, range.max);
            return self.reply_text(425, &text).await;
        };
        let text = match pasv_ip {
            Some(ip) => address::format_227(std::net::SocketAddrV4::new(ip, listener.port)),
            None => address::format_229(listener.port),
        };
        let code = if pasv_ip.is_some() { 227 } else { 229 };
        debug!(port = listener.port, %backend, "passive data channel prepared");
        let s = &self.ctx.settings;
        let (client_ip, connect, metrics) = (self.client_peer.ip(), s.data_connect, Arc::clone(&self.ctx.metrics));
        let proxy = self.proxy_protocol;
        let channel = data::spawn(
            async move {
                let client = match data::accept_client(listener, client_ip, connect, metrics, proxy).await {
                    Ok(c) => c,
                    Err(e) => {
                        data::reset_backend(backend, connect).await;
                        return Err(e);
                    }
                };
                let backend = data::connect_backend(backend, connect).await?;
                Ok((client, backend))
            },
            self.data_tls(),
            s.data_connect,
            s.transfer_stall,
        );
        self.data = Some(DataSetup::Passive(channel));
        self.reply_text(code, &text).await
    }

    /// TLS for the legs of a data connection set up now. `PROT` applies to
    /// data connections set up after it.
    pub(super) fn data_tls(&self) -> DataTls {
        DataTls {
            client: if self.prot_private { self.acceptor.clone() } else { None },
            direction: Arc::default(),
            require_reuse: self.settings().require_session_reuse,
            backend: self.backend_tls.clone(),
            metrics: Arc::clone(&self.ctx.metrics),
        }
    }

    pub(super) async fn active(&mut self, cmd: &Command) -> SessionResult<()> {
        if self.epsv_all {
            return self.reply_text(503, &format!("{} refused after EPSV ALL (RFC 2428)", cmd.verb)).await;
        }
        match active::check(cmd, self.client_peer.ip()) {
            Ok(addr) => {
                self.data = Some(DataSetup::Active(addr));
                self.reply_text(200, &format!("{} command successful", cmd.verb)).await
            }
            Err(reply) => {
                Metrics::inc(&self.ctx.metrics.active_refused);
                warn!(command = ?cmd, reply = %reply.text(), "refused active-mode address");
                self.reply(&reply).await
            }
        }
    }
}
