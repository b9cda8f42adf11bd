//! TLS on the control connections: the client's `AUTH`/`PBSZ`/`PROT`
//! (RFC 4217) and ftpgate's own explicit FTPS towards the backend.

use super::*;

impl Session {
    /// Explicit FTPS towards the backend, on ftpgate's own initiative and hidden
    /// from the client: `AUTH TLS`, handshake, `PBSZ 0`, `PROT P`.
    pub(super) async fn secure_backend(&mut self) -> SessionResult<()> {
        let Some(tls) = self.backend_tls.clone() else { return Ok(()) };
        let t = self.settings().backend_reply;
        if !self.backend.is_tls() {
            self.backend.exchange(&Command::new(Verb::Auth, Some(b"TLS")), 234, t).await?;
            let started = Instant::now();
            self.backend.upgrade(&tls, TLS_HANDSHAKE_TIMEOUT).await?;
            self.ctx.metrics.tls_version("backend_control", self.backend.tls_version());
            self.ctx.metrics.latency.backend_tls_handshake.observe(started.elapsed().as_secs_f64());
        }
        self.backend.exchange(&Command::new(Verb::Pbsz, Some(b"0")), 200, t).await?;
        self.backend.exchange(&Command::new(Verb::Prot, Some(b"P")), 200, t).await?;
        debug!("backend control connection secured");
        Ok(())
    }

    /// `AUTH TLS` from the client (RFC 4217). `AUTH SSL` and `TLS-P` are the
    /// older spellings that also imply protected data connections.
    pub(super) async fn auth(&mut self, cmd: &Command) -> SessionResult<Flow> {
        let Some(acceptor) = self.acceptor.clone() else {
            self.reply_text(502, "AUTH is not offered on this listener: ftpgate has no TLS configured here").await?;
            return Ok(Flow::Continue);
        };
        if self.client.is_tls() {
            self.reply_text(503, "TLS is already active on this control connection").await?;
            return Ok(Flow::Continue);
        }
        let mechanism = cmd.arg_str().unwrap_or("").to_ascii_uppercase();
        let implies_private = match mechanism.as_str() {
            "TLS" | "TLS-C" => false,
            "SSL" | "TLS-P" => true,
            _ => {
                self.reply_text(504, "AUTH mechanism not supported; use AUTH TLS").await?;
                return Ok(Flow::Continue);
            }
        };
        if self.client.has_pending_input() || !self.queued.is_empty() {
            Metrics::inc(&self.ctx.metrics.commands_rejected);
            warn!("client pipelined plaintext after AUTH; closing");
            self.reply_text(421, "Commands sent after AUTH before the TLS handshake are refused; closing").await?;
            return Ok(Flow::Close);
        }
        self.reply_text(234, &format!("AUTH {mechanism} successful; proceed with TLS negotiation")).await?;
        let started = Instant::now();
        let upgraded = self.client.upgrade(&acceptor.control, TLS_HANDSHAKE_TIMEOUT).await;
        self.ctx.metrics.latency.client_tls_handshake.observe(started.elapsed().as_secs_f64());
        match upgraded {
            Ok(()) => {
                Metrics::inc(&self.ctx.metrics.tls_client_control);
                self.ctx.metrics.tls_version("client_control", self.client.tls_version());
                self.prot_private = implies_private;
                debug!("client control connection secured");
                Ok(Flow::Continue)
            }
            Err(e) => {
                // Nothing more can be said: the client expects TLS now.
                Metrics::inc(&self.ctx.metrics.tls_client_failures);
                warn!(error = %e, "TLS handshake with client failed");
                Ok(Flow::Close)
            }
        }
    }

    /// Ordering (AUTH, PBSZ, PROT) is the policy's to check.
    pub(super) async fn pbsz(&mut self, cmd: &Command) -> SessionResult<()> {
        if cmd.arg_str().is_none_or(|a| a.parse::<u64>().is_err()) {
            return self.reply_text(501, "PBSZ needs a decimal buffer size; use PBSZ 0").await;
        }
        self.pbsz = true;
        // The only buffer size TLS has (RFC 4217 section 8).
        self.reply_text(200, "PBSZ=0").await
    }

    pub(super) async fn prot(&mut self, cmd: &Command) -> SessionResult<()> {
        match cmd.arg_str().map(str::to_ascii_uppercase).as_deref() {
            Some("P") => {
                self.prot_private = true;
                self.reply_text(200, "Protection level set to Private: data connections use TLS").await
            }
            Some("C") => {
                self.prot_private = false;
                self.reply_text(200, "Protection level set to Clear: data connections are plain").await
            }
            Some("S") | Some("E") => self.reply_text(536, "Protection level not supported; use P or C").await,
            _ => self.reply_text(504, "PROT takes C or P").await,
        }
    }

    /// Whether the USER argument is one of the names in the client certificate.
    /// No certificate (no TLS yet, or mutual TLS off) never matches.
    pub(super) fn user_matches_certificate(&self, cmd: &Command) -> bool {
        let (Some(user), Some(chain)) = (cmd.arg_str(), self.client.peer_certificates()) else { return false };
        chain.first().is_some_and(|leaf| crate::tls::certificate_names(leaf.as_ref()).iter().any(|n| n == user))
    }
}
