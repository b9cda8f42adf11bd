//! The policy gate: each command is checked before it reaches the backend;
//! denials are answered here, logged for the audit trail and counted.

use super::*;

impl Session {
    /// Asks the policy about `cmd`. `None`: go ahead; otherwise the command was
    /// answered here and never reaches the backend.
    pub(super) async fn check_policy(&mut self, cmd: &Command) -> SessionResult<Option<Flow>> {
        let policy = self.ctx.policy();
        let ip = self.client_peer.ip();
        let network = match policy.admit(ip) {
            Ok(n) => n,
            Err(d) => {
                // A reload removed this client's network.
                self.deny(cmd, &d).await?;
                return Ok(Some(Flow::Close));
            }
        };
        if matches!(cmd.verb, Verb::User | Verb::Pass) {
            let reason = match self.ctx.banned_for(ip).await {
                Ok(None) => None,
                Ok(Some(left)) => {
                    Metrics::inc(&self.ctx.metrics.logins_refused);
                    Some(format!("Too many failed logins from your address; try again in {} s", left.as_secs() + 1))
                }
                Err(SharedStateDown) => Some("Shared login state unreachable; try again later".to_string()),
            };
            if let Some(reason) = reason {
                let d = Denial { code: 421, rule: "login".into(), reason };
                self.deny(cmd, &d).await?;
                return Ok(Some(Flow::Close));
            }
        }
        if cmd.verb == Verb::User {
            let limit = policy.login.max_sessions_per_user;
            let user = cmd.arg_str().unwrap_or("").to_string();
            // Failing closed, an unreachable cluster refuses like a full one.
            let open = if limit > 0 { self.ctx.user_sessions(&user).await.unwrap_or(usize::MAX) } else { 0 };
            if limit > 0 && open >= limit {
                let d = Denial {
                    code: 530,
                    rule: "login".into(),
                    reason: format!("Too many sessions for user {user} (limit {limit})"),
                };
                self.deny(cmd, &d).await?;
                return Ok(Some(Flow::Continue));
            }
        }
        let view = SessionView {
            network,
            tls: self.client.is_tls(),
            pbsz: self.pbsz,
            prot_private: self.prot_private,
            client_cert: self.client.peer_certificates().is_some(),
            user: self.user.as_deref(),
            logged_in: self.logged_in,
            cwd: &self.cwd,
            previous: self.previous.as_ref(),
            data_ready: self.data.is_some(),
        };
        let denial = match policy.evaluate(&view, cmd) {
            Verdict::Allow => return Ok(None),
            Verdict::Deny(d) => d,
            Verdict::AllowIfNew { path, denial } => {
                if !self.backend_has_file(&path).await? {
                    return Ok(None);
                }
                denial
            }
        };
        self.deny(cmd, &denial).await?;
        Ok(Some(Flow::Continue))
    }

    /// Answers a refused command, logs it for the audit trail and counts it.
    pub(super) async fn deny(&mut self, cmd: &Command, d: &Denial) -> SessionResult<()> {
        self.ctx.metrics.count_denial(&d.rule);
        info!(
            target: "ftpgate::audit",
            user = self.user.as_deref().unwrap_or("-"),
            command = %cmd.verb,
            rule = %d.rule,
            code = d.code,
            reason = %d.reason,
            "denied"
        );
        if cmd.verb.transfer_direction().is_some() {
            // A refused transfer uses up its data setup, as on a server: the
            // data connection closes (costing no TLS ticket: its backend
            // handshake never started) and the passive port is free again.
            self.data = None;
        }
        if self.rest_pending && cmd.verb.transfer_direction().is_some() {
            self.clear_rest().await?;
        }
        self.reply_text(d.code, &d.reason).await
    }

    /// The backend accepted REST for a transfer that will not reach it;
    /// clears it so it cannot shift the next transfer (as a server resets its
    /// offset on any transfer attempt).
    pub(super) async fn clear_rest(&mut self) -> SessionResult<()> {
        self.backend.send(&Command::new(Verb::Rest, Some(b"0"))).await?;
        self.final_reply().await?;
        self.rest_pending = false;
        Ok(())
    }

    /// Whether `path` exists on the backend (for write-but-not-overwrite users).
    /// Asked with SIZE, which every server here answers with 213 for a file.
    pub(super) async fn backend_has_file(&mut self, path: &[u8]) -> SessionResult<bool> {
        self.backend.send(&Command::new(Verb::Other("SIZE".into()), Some(path))).await?;
        let r = self.final_reply().await?;
        Ok(r.code == 213)
    }
}
