//! Logging in: opening the backend control connection (at login, never
//! before), bastion users checked at ftpgate, failed-login bans, and the
//! working directory the policy resolves paths against.

use super::*;

/// Opens a backend control connection within the connect timeout and, if
/// configured, starts it with a PROXY protocol header naming the client and
/// the address it reached ftpgate at.
pub(super) async fn connect_backend_control(
    s: &Settings,
    address: &str,
    client: SocketAddr,
    local: SocketAddr,
) -> io::Result<TcpStream> {
    let connect = async {
        let mut tcp = TcpStream::connect(address).await?;
        if let Some(version) = s.backend_proxy_protocol {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &crate::proxy_protocol::encode(version, client, local))
                .await?;
        }
        Ok(tcp)
    };
    tokio::time::timeout(s.backend_connect, connect).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

impl Session {
    /// Takes a fresh backend control connection to where commands can flow:
    /// implicit TLS, the greeting (never shown to the client: ftpgate greets
    /// itself), explicit TLS. A refusing greeting (`421`, or anything but
    /// `220` after any `120`) ends the session with `421` and the reason.
    pub(super) async fn open_backend(&mut self) -> SessionResult<()> {
        let reply_timeout = self.settings().backend_reply;
        if let (Some(tls), BackendTlsMode::Implicit) = (&self.backend_tls, self.settings().backend_tls) {
            let started = Instant::now();
            watch_client(&mut self.client, &mut self.queued, self.backend.upgrade(tls, TLS_HANDSHAKE_TIMEOUT))
                .await??;
            self.ctx.metrics.tls_version("backend_control", self.backend.tls_version());
            self.ctx.metrics.latency.backend_tls_handshake.observe(started.elapsed().as_secs_f64());
        }
        loop {
            let greeting =
                watch_client(&mut self.client, &mut self.queued, self.backend.next_within(reply_timeout)).await??;
            if greeting.code == 220 {
                return self.secure_backend().await;
            }
            if !greeting.is_preliminary() {
                return Err(BackendError::Refused { command: "a session", reply: greeting.text() }.into());
            }
        }
    }

    pub(super) async fn on_login(&mut self) -> SessionResult<()> {
        self.logged_in = true;
        Metrics::inc(&self.ctx.metrics.logins_ok);
        self.ctx.login_ok(self.client_peer.ip()).await;
        let user = self.user.clone().unwrap_or_default();
        // Counted without a limit: USER checked it. A refusal here (the shared
        // state went away, failing closed) leaves the session uncounted.
        self.user_slot = self.ctx.take_slot(&self.ctx.per_user, user.clone(), Counted::User, 0).await.ok().flatten();
        info!(target: "ftpgate::audit", %user, "login");
        self.who.entry.logged_in();
        self.refresh_cwd().await
    }

    pub(super) async fn on_login_failure(&mut self) {
        let ip = self.client_peer.ip();
        let policy = self.ctx.policy();
        let banned = self.ctx.login_failed(ip, &policy.login).await;
        Metrics::inc(&self.ctx.metrics.logins_failed);
        let user = self.user.as_deref().unwrap_or("-");
        info!(target: "ftpgate::audit", user, "login failed");
        if let Some(length) = banned {
            warn!(target: "ftpgate::audit", %ip, seconds = length.as_secs(), "address banned after failed logins");
        }
    }

    /// PASS for a user authenticated at ftpgate: check the argon2id hash, move
    /// to the user's backend if it has one, and log in there with the mapped
    /// account. The client sees neither the backend account nor its replies.
    pub(super) async fn bastion_login(&mut self, name: &str, cmd: &Command) -> SessionResult<()> {
        let policy = self.ctx.policy();
        let Some(bu) = policy.bastion_users.get(name).cloned() else {
            self.on_login_failure().await;
            return self.reply_text(530, "Login incorrect.").await;
        };
        let password = cmd.arg.clone().unwrap_or_default();
        let hash = bu.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || crate::policy::auth::verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if !ok {
            self.on_login_failure().await;
            return self.reply_text(530, "Login incorrect.").await;
        }
        if !self.backend_open || bu.backend != self.backend_name {
            self.switch_backend(bu.backend.clone()).await?;
        }
        self.backend.send(&Command::new(Verb::User, Some(bu.backend_user.as_bytes()))).await?;
        let mut r = self.final_reply().await?;
        if r.code == 331 {
            self.backend.send(&Command::new(Verb::Pass, Some(bu.backend_password.expose().as_bytes()))).await?;
            r = self.final_reply().await?;
        }
        if r.code != 230 {
            warn!(user = name, backend_user = %bu.backend_user, reply = %r.text(), "backend refused the mapped account");
            return self.reply_text(530, "Login incorrect: the backend refused this user's account").await;
        }
        info!(
            target: "ftpgate::audit",
            user = name,
            backend_user = %bu.backend_user,
            backend = bu.backend.as_deref().unwrap_or("default"),
            "bastion login mapped to a backend account"
        );
        self.reply_text(230, "Login successful.").await?;
        self.on_login().await
    }

    /// Moves this session to another backend before login: connect, TLS as
    /// configured, greeting, and the old backend connection closed.
    pub(super) async fn switch_backend(&mut self, name: Option<String>) -> SessionResult<()> {
        let ctx = Arc::clone(&self.ctx);
        let pool = match &name {
            Some(n) => ctx.named_backends.get(n),
            None => Some(&ctx.pool),
        };
        let Some(pool) = pool else { return Err(BackendError::Closed.into()) };
        let slot = pool.pick(self.user.as_deref().unwrap_or(""));
        let target = &pool.members[slot.index].target;
        let s = Arc::clone(&self.ctx.settings);
        let connect = connect_backend_control(&s, &target.address, self.client_peer, self.client_local);
        let started = Instant::now();
        let connected = watch_client(&mut self.client, &mut self.queued, connect).await?;
        Metrics::inc(&self.ctx.metrics.backend_connections);
        if connected.is_err() {
            pool.connect_failed(slot.index);
        }
        let tcp = match connected {
            Ok(t) => {
                self.ctx.metrics.latency.backend_connect.observe(started.elapsed().as_secs_f64());
                t
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(BackendError::Unreachable("it did not accept the connection in time".into()).into())
            }
            Err(e) => return Err(BackendError::Unreachable(e.to_string()).into()),
        };
        let peer = tcp.peer_addr().map_err(BackendError::Io)?;
        let _ = tcp.set_nodelay(true);
        let tls = target.tls.as_ref().map(|t| t.for_session());
        let mut old = std::mem::replace(&mut self.backend, BackendControl::new(BackendStream::Plain(tcp)));
        if std::mem::replace(&mut self.backend_open, true) {
            let _ = old.send(&Command::new(Verb::Quit, None)).await;
            old.shutdown().await;
        }
        self.backend_peer = peer;
        self.backend_tls = tls;
        self.backend_epsv = true;
        self.backend_name = name;
        self.pool_slot = Some(slot);
        self.open_backend().await?;
        self.replay_to_backend().await?;
        info!(backend = %peer, name = self.backend_name.as_deref().unwrap_or("default"), "backend control connection open");
        let shown = match &self.backend_name {
            Some(n) => format!("{n} ({peer})"),
            None => peer.to_string(),
        };
        self.who.entry.backend(&shown);
        Ok(())
    }

    /// Learns the working directory from the backend (`257 "<dir>"`), so rules
    /// see paths as the backend will resolve them.
    pub(super) async fn refresh_cwd(&mut self) -> SessionResult<()> {
        self.backend.send(&Command::new(Verb::Other("PWD".into()), None)).await?;
        let r = self.final_reply().await?;
        if r.code == 257 {
            if let Some(dir) = crate::policy::path::parse_257(&r.lines[0]) {
                self.cwd = dir;
            }
        }
        Ok(())
    }
}
