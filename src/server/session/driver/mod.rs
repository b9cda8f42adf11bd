//! The driver of one session: it owns the sockets, the TLS streams, the data
//! channel and the timers, feeds the sans-IO [`Core`] what happens on them,
//! and carries out what the core asks for, in order. One `select!` per wait,
//! over the client, the backend, the data channel, the earliest timer and
//! the start of a drain; the drain deadline cuts through whatever runs.

use super::backend::BackendSide;
use super::control::{ClientControl, ClientEvent};
use super::data::DataChannel;
use super::throttle::{self, TransferPlan};

mod data_setup;
use super::TLS_HANDSHAKE_TIMEOUT;
use crate::cluster::leases::Counted;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::protocol::command::TransferDirection;
use crate::protocol::{Reply, Verb};
use crate::server::context::{Lifecycle, SessionContext, SessionSlot, SharedStateDown};
use crate::server::registry;
use crate::session::core::{self, ClientTls, ClientTlsRefused, Core, Input, LoginGate, Output, Timer};
use crate::tls::SessionAcceptors;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the last words (426, 421) may take once the drain deadline passed.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// The core's view of the process: the policy in force, the default
/// backend's features, the counters.
pub(super) struct ContextEnv(pub Arc<SessionContext>);

impl core::Env for ContextEnv {
    fn policy(&self) -> Arc<Policy> {
        self.0.policy()
    }
    fn backend_feat(&self) -> Option<Reply> {
        self.0.backend_feat.get()
    }
    fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}

pub(super) struct Driver {
    ctx: Arc<SessionContext>,
    core: Core<ContextEnv>,
    client: ClientControl,
    /// The client's control connection failed or closed; the core knows.
    client_dead: bool,
    backend: BackendSide,
    client_peer: SocketAddr,
    client_local: SocketAddr,
    /// Data connections, like control ones, start with a PROXY protocol
    /// header, believed only from these senders.
    proxy_from: Option<crate::config::ProxySenders>,
    /// This session's TLS server configs (control and data), if TLS is offered.
    acceptor: Option<SessionAcceptors>,
    /// The data channel set up (passive) or running.
    data: Option<DataChannel>,
    /// The running transfer's limits and slot.
    plan: Option<TransferPlan>,
    transfer_started: Option<Instant>,
    /// When each armed timer fires, indexed by `Timer as usize` (no heap:
    /// idle sessions are most sessions).
    deadlines: [Option<tokio::time::Instant>; Timer::ALL.len()],
    drain_seen: bool,
    /// This session's line in `ftpgate who` and `/status`.
    who: registry::Registration,
    _address_slot: SessionSlot<IpAddr>,
    /// Held from a successful login on, for the per-user session limit.
    user_slot: Option<SessionSlot<String>>,
    user: String,
}

/// Resolves once the drain deadline has passed.
async fn drain_deadline(closing: &tokio::sync::watch::Sender<Lifecycle>) {
    let mut rx = closing.subscribe();
    let _ = rx.wait_for(|l| *l == Lifecycle::DrainDeadline).await;
}

impl Driver {
    /// The driver of an admitted session: its core (greeting queued), the
    /// client's control connection (TLS already, for implicit FTPS), its
    /// line in `ftpgate who`, and the per-address slot it holds.
    pub fn new(
        ctx: Arc<SessionContext>,
        id: u64,
        client: ClientControl,
        config: core::CoreConfig,
        proxy_from: Option<crate::config::ProxySenders>,
        acceptor: Option<SessionAcceptors>,
        address_slot: SessionSlot<IpAddr>,
    ) -> Driver {
        let (client_peer, client_local) = (config.client_peer, config.client_local);
        let client_tls = client.is_tls().then(|| client_tls(&client));
        Driver {
            core: Core::new(ContextEnv(Arc::clone(&ctx)), config, client_tls),
            who: ctx.registry.register(id, client_peer),
            ctx,
            client,
            client_dead: false,
            backend: BackendSide::detached(),
            client_peer,
            client_local,
            proxy_from,
            acceptor,
            data: None,
            plan: None,
            transfer_started: None,
            deadlines: [None; Timer::ALL.len()],
            drain_seen: false,
            _address_slot: address_slot,
            user_slot: None,
            user: String::new(),
        }
    }

    /// Runs the session until the core closes it, or the drain deadline.
    pub async fn run(&mut self) {
        let closing = Arc::clone(&self.ctx.closing);
        let cut = tokio::select! {
            () = self.drive() => false,
            () = drain_deadline(&closing) => true,
        };
        if cut {
            self.core.handle(Input::DrainDeadline);
            let _ = tokio::time::timeout(LAST_WORDS, self.flush()).await;
            if !self.core.is_closed() {
                self.close(false).await;
            }
        }
    }

    async fn drive(&mut self) {
        loop {
            self.flush().await;
            if self.core.is_closed() {
                return;
            }
            let input = self.next_input().await;
            if let (Input::DataEnded(_), Some(verdict)) =
                (&input, self.data.as_ref().and_then(DataChannel::scan_verdict))
            {
                self.ctx.scanned(self.client_peer.ip(), &verdict);
                self.core.handle(Input::Scanned(verdict));
            }
            self.core.handle(input);
        }
    }

    /// Carries out everything the core has asked for so far.
    async fn flush(&mut self) {
        while let Some(out) = self.core.poll_output() {
            self.execute(out).await;
        }
    }

    async fn next_input(&mut self) -> Input {
        let next_timer =
            Timer::ALL.iter().filter_map(|&t| self.deadlines[t as usize].map(|at| (t, at))).min_by_key(|&(_, at)| at);
        let (timer, at) = next_timer.unwrap_or((Timer::Idle, tokio::time::Instant::now()));
        let mut closing = self.ctx.closing.subscribe();
        let watch_data = self.core.wants_data_end() && self.data.as_ref().is_some_and(DataChannel::running);
        let data = &mut self.data;
        tokio::select! {
            e = self.client.next(), if self.core.wants_client() && !self.client_dead => match e {
                Ok(ClientEvent::Command(c)) => {
                    #[cfg(debug_assertions)]
                    super::unwind::injected_fault(c.verb.as_str());
                    self.who.entry.command();
                    Input::Command(c)
                }
                Ok(ClientEvent::Invalid(e)) => Input::Invalid(e.to_string()),
                Ok(ClientEvent::Closed) | Err(_) => {
                    self.client_dead = true;
                    Input::ClientGone
                }
            },
            r = self.backend.control.next(), if self.core.reads_backend() && !self.backend.dead => match r {
                Ok(r) => Input::BackendReply(r),
                Err(e) => {
                    self.backend.dead = true;
                    Input::BackendFailed(e.into())
                }
            },
            o = async { match data.as_mut() { Some(d) => d.ended().await, None => std::future::pending().await } }, if watch_data => {
                Input::DataEnded(o)
            }
            () = tokio::time::sleep_until(at), if next_timer.is_some() => {
                self.deadlines[timer as usize] = None;
                Input::Timeout(timer)
            }
            () = async { let _ = closing.wait_for(|c| *c != Lifecycle::Serving).await; }, if !self.drain_seen => {
                self.drain_seen = true;
                Input::Drain
            }
        }
    }

    async fn reply(&mut self, r: &Reply) {
        if self.client_dead {
            return;
        }
        if self.client.send(r).await.is_err() {
            self.client_dead = true;
            self.core.handle(Input::ClientGone);
        }
    }

    async fn execute(&mut self, out: Output) {
        match out {
            Output::Reply(r) => self.reply(&r).await,
            Output::Send(cmd) => {
                if self.backend.dead {
                    return;
                }
                if let Err(e) = self.backend.control.send(&cmd).await {
                    self.backend.dead = true;
                    self.core.handle(Input::BackendFailed(e.into()));
                }
            }
            Output::UpgradeClient { ok } => {
                let r = self.upgrade_client(&ok).await;
                self.core.handle(Input::ClientTls(r));
            }
            Output::ConnectBackend { name } => self.connect_backend(name).await,
            Output::UpgradeBackend => {
                let r = self.backend.upgrade(&self.ctx).await.map_err(core::BackendFailure::from);
                self.core.handle(Input::BackendTls(r));
            }
            Output::CheckLogin { user } => {
                let gate = self.check_login(user).await;
                self.core.handle(Input::LoginChecked(gate));
            }
            Output::VerifyPassword { hash, password } => {
                let ok = tokio::task::spawn_blocking(move || crate::policy::auth::verify_password(&hash, &password))
                    .await
                    .unwrap_or(false);
                self.core.handle(Input::PasswordChecked(ok));
            }
            Output::UserNamed(user) => {
                self.who.entry.user(&user);
                tracing::Span::current().record("user", user.as_str());
                self.user = user;
            }
            Output::LoginSucceeded { user } => self.login_succeeded(user).await,
            Output::LoginFailed { user } => self.login_failed(&user).await,
            Output::FeatLearned(r) => self.ctx.backend_feat.set(&r),
            Output::OpenPassive { backend, private } => {
                let r = self.open_passive(backend, private).await;
                self.core.handle(Input::PassiveReady(r));
            }
            Output::DropData => {
                self.data = None;
                self.plan = None;
            }
            Output::PlanTransfer { user, direction, limits, upload_cap } => {
                self.plan = throttle::plan(&self.ctx, &user, direction, &limits, upload_cap);
                self.core.handle(Input::TransferPlanned(self.plan.is_some()));
            }
            Output::ConnectActive { client, backend, direction, private } => {
                let r = self.connect_active(client, backend, direction, private).await;
                self.core.handle(Input::ActiveConnected(r));
            }
            Output::SetDirection(d) => {
                if let Some(data) = &self.data {
                    data.set_direction(d);
                }
            }
            Output::StartRelay(start) => self.start_relay(start),
            Output::StopData => {
                let stopped = match &mut self.data {
                    Some(data) => data.stop().await,
                    None => None,
                };
                self.data = None;
                // What the stopped relay moved still counts (upload caps).
                if let Some(outcome) = stopped {
                    self.core.handle(Input::DataEnded(outcome));
                }
            }
            Output::AbortData => {
                // The task ends at once; its end still reaches the core.
                if let Some(data) = &self.data {
                    data.abort();
                }
            }
            Output::TransferEnded(log) => self.transfer_ended(log),
            Output::Arm(t, d) => self.deadlines[t as usize] = Some(tokio::time::Instant::now() + d),
            Output::Disarm(t) => self.deadlines[t as usize] = None,
            Output::Close { quit_backend } => self.close(quit_backend).await,
        }
    }

    /// `234`, then the client's TLS handshake. Anything the client pipelined
    /// after `AUTH` is refused: it was sent in the clear.
    async fn upgrade_client(&mut self, ok: &Reply) -> Result<ClientTls, ClientTlsRefused> {
        if self.client.has_pending_input() {
            return Err(ClientTlsRefused::Pipelined);
        }
        let Some(acceptor) = self.acceptor.clone() else { return Err(ClientTlsRefused::Failed) };
        self.reply(ok).await;
        if self.client_dead {
            return Err(ClientTlsRefused::Failed);
        }
        let started = Instant::now();
        let upgraded = self.client.upgrade(&acceptor.control, TLS_HANDSHAKE_TIMEOUT).await;
        self.ctx.metrics.latency.client_tls_handshake.observe(started.elapsed().as_secs_f64());
        match upgraded {
            Ok(()) => {
                Metrics::inc(&self.ctx.metrics.tls_client_control);
                self.ctx.metrics.tls_version("client_control", self.client.tls_version());
                Ok(client_tls(&self.client))
            }
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.tls_client_failures);
                warn!(target: "ftpgate::tls", error = %e, "TLS handshake with client failed");
                Err(ClientTlsRefused::Failed)
            }
        }
    }

    /// Connects the backend while still reading the client: commands it
    /// pipelines wait in the core's queue, and a client that leaves ends the
    /// attempt at once (so abandoned sessions hold no backend connection).
    async fn connect_backend(&mut self, name: Option<String>) {
        let ctx = Arc::clone(&self.ctx);
        let user = self.user.clone();
        let (client_peer, client_local) = (self.client_peer, self.client_local);
        let result = {
            let opening = self.backend.connect(&ctx, name.as_deref(), &user, client_peer, client_local);
            tokio::pin!(opening);
            loop {
                tokio::select! {
                    r = &mut opening => break Some(r),
                    e = self.client.next(), if self.core.wants_client() && !self.client_dead => match e {
                        Ok(ClientEvent::Command(c)) => self.core.handle(Input::Command(c)),
                        Ok(ClientEvent::Invalid(e)) => self.core.handle(Input::Invalid(e.to_string())),
                        Ok(ClientEvent::Closed) | Err(_) => break None,
                    },
                }
            }
        };
        match result {
            None => {
                self.client_dead = true;
                self.core.handle(Input::ClientGone);
            }
            Some(Ok((peer, security))) => {
                let address = match &self.backend.via {
                    Some(via) => {
                        tracing::info!(target: "ftpgate::session", connector = %via.name, connector_at = %via.peer,
                            "backend reached through a connector");
                        format!("{peer} via {via}")
                    }
                    None => peer.to_string(),
                };
                self.who.entry.backend(name.as_deref().unwrap_or("default"), &address);
                self.core.handle(Input::BackendConnected { peer, name, security });
            }
            Some(Err(e)) => {
                self.backend.dead = true;
                self.core.handle(Input::BackendFailed(e.into()));
            }
        }
    }

    /// Bans (here or in the cluster) and, for `user`, its open sessions.
    async fn check_login(&mut self, user: Option<String>) -> LoginGate {
        let ip = self.client_peer.ip();
        let refusal = match self.ctx.banned_for(ip).await {
            Ok(None) => None,
            Ok(Some(left)) => {
                Metrics::inc(&self.ctx.metrics.logins_refused);
                Some(format!("Too many failed logins from your address; try again in {} s", left.as_secs() + 1))
            }
            Err(SharedStateDown) => Some("Shared login state unreachable; try again later".to_string()),
        };
        let user_sessions = match user {
            // Failing closed, an unreachable cluster refuses like a full one.
            Some(u) if refusal.is_none() => Some(self.ctx.user_sessions(&u).await.unwrap_or(usize::MAX)),
            _ => None,
        };
        LoginGate { refusal, user_sessions }
    }

    async fn login_succeeded(&mut self, user: String) {
        Metrics::inc(&self.ctx.metrics.logins_ok);
        self.ctx.login_ok(self.client_peer.ip()).await;
        // The slot is taken with the limit at the moment of login (atomically,
        // here and in the cluster): USER's check is only a courtesy, and
        // sessions that each sent USER before any sent PASS all passed it.
        let limit = self.ctx.policy().login.max_sessions_per_user;
        match self.ctx.take_slot(&self.ctx.per_user, user.clone(), Counted::User, limit).await {
            Ok(Some(slot)) => self.user_slot = Some(slot),
            Ok(None) => {
                let why = core::OverLimit::UserSessions { user: user.clone(), limit };
                return self.core.handle(Input::LoginOverLimit(why));
            }
            Err(SharedStateDown) => return self.core.handle(Input::LoginOverLimit(core::OverLimit::SharedStateDown)),
        }
        info!(target: "ftpgate::audit", %user, "login");
        self.who.entry.logged_in();
    }

    async fn login_failed(&mut self, user: &str) {
        let ip = self.client_peer.ip();
        let policy = self.ctx.policy();
        let banned = self.ctx.login_failed(ip, &policy.login).await;
        Metrics::inc(&self.ctx.metrics.logins_failed);
        info!(target: "ftpgate::audit", user = if user.is_empty() { "-" } else { user }, "login failed");
        if let Some(length) = banned {
            warn!(target: "ftpgate::audit", %ip, seconds = length.as_secs(), "address banned after failed logins");
        }
    }

    fn start_relay(&mut self, start: core::TransferStart) {
        let (Some(data), Some(plan)) = (&self.data, &self.plan) else { return };
        data.set_scan(plan.scan);
        data.backend_accepted(plan.limits.clone());
        self.transfer_started = Some(Instant::now());
        self.who.entry.transfer(Some(registry::Transfer {
            command: start.command,
            path: start.path,
            direction: start.direction,
            started: Instant::now(),
            size: registry::announced_size(&start.reply_text),
            progress: Arc::clone(&plan.limits.progress),
        }));
    }

    fn transfer_ended(&mut self, log: Option<core::TransferLog>) {
        self.who.entry.transfer(None);
        self.data = None;
        self.plan = None;
        let started = self.transfer_started.take().unwrap_or_else(Instant::now);
        let Some(log) = log else { return };
        let secs = started.elapsed().as_secs_f64();
        self.ctx.metrics.latency.transfer.observe(secs);
        info!(target: "ftpgate::transfer",
            user = if log.user.is_empty() { "-" } else { log.user.as_str() },
            command = %log.verb,
            path = %String::from_utf8_lossy(&log.path),
            bytes = log.bytes,
            seconds = format!("{secs:.2}"),
            rate = format!("{}/s", registry::human((log.bytes as f64 / secs.max(0.001)) as u64)),
            code = log.code,
            result = %log.result,
            "transfer ended"
        );
        // One xferlog line per file transfer (listings are not file transfers).
        let Some(xferlog) = &self.ctx.xferlog else { return };
        if !matches!(log.verb, Verb::Retr | Verb::Stor | Verb::Appe | Verb::Stou) {
            return;
        }
        xferlog.record(&crate::xferlog::TransferRecord {
            finished: std::time::SystemTime::now(),
            seconds: started.elapsed().as_secs(),
            client: self.client_peer.ip(),
            bytes: log.bytes,
            path: log.path,
            binary: log.binary,
            incoming: log.direction == TransferDirection::Upload,
            user: log.user,
            complete: log.complete,
        });
    }

    /// After a panic in this session: the client hears `421` (unless it
    /// left), the data channel, backend connection and slots are released.
    /// Every step is bounded: the state may be half-updated.
    pub async fn after_panic(&mut self) {
        self.data = None;
        self.plan = None;
        self.who.entry.transfer(None);
        if !self.client_dead {
            let bye = Reply::single(
                crate::protocol::codes::NOT_AVAILABLE,
                "Service not available: internal error in this session; please reconnect",
            );
            let _ = tokio::time::timeout(LAST_WORDS, self.client.send(&bye)).await;
        }
        self.backend.close(false).await;
        let _ = tokio::time::timeout(LAST_WORDS, self.client.shutdown()).await;
    }

    /// Ends the session politely towards the backend (so it frees the login
    /// at once) and the client.
    async fn close(&mut self, quit_backend: bool) {
        self.data = None;
        self.plan = None;
        self.who.entry.transfer(None);
        self.backend.close(quit_backend).await;
        if self.client_dead {
            self.client.shutdown().await;
        } else {
            self.client.close_after_reply().await;
        }
    }
}

/// What the core needs to know about the client's TLS.
fn client_tls(client: &ClientControl) -> ClientTls {
    let certificate_names = client
        .peer_certificates()
        .map(|chain| chain.first().map(|leaf| crate::tls::certificate_names(leaf.as_ref())).unwrap_or_default());
    ClientTls { certificate_names }
}
