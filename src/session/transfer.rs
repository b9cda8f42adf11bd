//! Transfers: the final reply held until the relay delivered every byte,
//! 425/426/522 substitution, `ABOR` and the replies queued around it.

use super::*;

/// `file` for RETR/STOR/STOU/APPE, `listing` for LIST/NLST/MLSD.
pub(super) fn transfer_kind(cmd: &Command) -> &'static str {
    match cmd.verb {
        Verb::List | Verb::Nlst | Verb::Mlsd => "listing",
        _ => "file",
    }
}

impl Session {
    pub(super) async fn transfer(&mut self, cmd: &Command, direction: TransferDirection) -> SessionResult<()> {
        // The policy refuses transfers without a data setup; this is the backstop.
        let Some(setup) = self.data.take() else {
            return self.reply_text(503, &format!("Use PASV, EPSV, PORT or EPRT before {}", cmd.verb)).await;
        };
        // Refused before any data connection is made (a passive one the
        // client opened closes with the dropped setup).
        let plan = match self.plan_transfer(cmd, direction, self.rest_pending) {
            Ok(p) => p,
            Err(reply) => {
                if self.rest_pending {
                    self.clear_rest().await?;
                }
                return self.reply(&reply).await;
            }
        };
        let s = Arc::clone(&self.ctx.settings);
        let metrics = Arc::clone(&self.ctx.metrics);
        let channel = match setup {
            DataSetup::Passive(channel) => channel,
            DataSetup::Active(client_addr) => {
                let backend_addr = match self.backend_passive().await? {
                    Ok(a) => a,
                    Err(reply) => return self.reply(&reply).await,
                };
                let backend = match data::connect_backend(backend_addr, s.data_connect).await {
                    Ok(b) => b,
                    Err(e) => {
                        metrics.backend_error("data_connect");
                        return self.reply_text(425, &format!("Cannot open data connection: {e}")).await;
                    }
                };
                let client = match data::connect_client(self.client_local.ip(), client_addr, s.data_connect).await {
                    Ok(c) => c,
                    Err(e) => return self.reply_text(425, &format!("Cannot open data connection: {e}")).await,
                };
                // ftpgate connects out after the command, so the direction is
                // known before a client could start its handshake.
                let tls = self.data_tls();
                let _ = tls.direction.set(direction);
                data::spawn(std::future::ready(Ok((client, backend))), tls, s.data_connect, s.transfer_stall)
            }
        };
        channel.set_direction(direction);
        self.backend.send(cmd).await?;
        self.rest_pending = false;
        // The backend answers a transfer only once its data connection is up, which
        // waits for the client's; allow for both.
        let first = self.backend.next_within(s.backend_reply + s.data_connect).await?;
        if !first.is_preliminary() {
            drop(channel);
            metrics.transfer(transfer_kind(cmd), "failed");
            return self.reply(&first).await;
        }
        channel.backend_accepted(plan.limits.clone());
        self.reply(&first).await?;
        self.transferring = true;
        info!(user = self.user.as_deref().unwrap_or("-"), command = %cmd, "transfer started");
        self.who.entry.transfer(Some(registry::Transfer {
            command: cmd.verb.to_string(),
            path: String::from_utf8_lossy(&crate::policy::path::resolve(
                &self.cwd,
                cmd.arg.as_deref().unwrap_or_default(),
            ))
            .into_owned(),
            direction,
            started: Instant::now(),
            size: registry::announced_size(&first.text()),
            progress: Arc::clone(&plan.limits.progress),
        }));
        let done = self.complete_transfer(cmd, direction, channel, plan).await;
        self.who.entry.transfer(None);
        self.transferring = false;
        done
    }

    /// Waits for both the data relay and the backend's final reply, and sends
    /// that reply only after the relay has delivered every byte. Watches the
    /// client meanwhile for `ABOR`; other commands wait in the queue.
    pub(super) async fn complete_transfer(
        &mut self,
        cmd: &Command,
        direction: TransferDirection,
        mut channel: DataChannel,
        mut plan: throttle::TransferPlan,
    ) -> SessionResult<()> {
        let started = Instant::now();
        let reply_timeout = self.settings().backend_reply;
        let mut outcome: Option<DataOutcome> = None;
        let mut final_reply: Option<Reply> = None;
        while outcome.is_none() || final_reply.is_none() {
            tokio::select! {
                r = &mut channel.task, if outcome.is_none() => {
                    outcome = Some(r.unwrap_or_else(|e| DataOutcome::Failed(data::DataError::Task(e.to_string()))));
                }
                r = self.backend.next(), if final_reply.is_none() => {
                    let r = r?;
                    if r.is_preliminary() {
                        self.reply(&r).await?;
                    } else {
                        if r.code >= 400 {
                            // The backend gave up; nothing more will move.
                            channel.task.abort();
                        }
                        final_reply = Some(r);
                    }
                }
                e = self.client.next(), if self.queued.len() < MAX_QUEUED_COMMANDS => {
                    match e.map_err(SessionError::Client)? {
                        ClientEvent::Command(c) if c.verb == Verb::Abor => {
                            let delivered = matches!(&outcome, Some(DataOutcome::Relayed(r)) if matches!(r.end, RelayEnd::Eof(_)));
                            return self.abort_transfer(cmd, channel, final_reply, delivered).await;
                        }
                        ClientEvent::Closed => {
                            let cap = plan.cap.take();
                            self.settle_upload_of_departed_client(&mut channel, outcome, final_reply, cap).await;
                            return Err(SessionError::Client(io::ErrorKind::UnexpectedEof.into()));
                        }
                        other => self.queued.push_back(Queued::Event(other)),
                    }
                }
                () = tokio::time::sleep(reply_timeout), if outcome.is_some() && final_reply.is_none() => {
                    return Err(BackendError::Timeout(reply_timeout.as_secs()).into());
                }
            }
        }
        let (Some(outcome), Some(reply)) = (outcome, final_reply) else { unreachable!("loop exits when both are set") };
        let (written, capped) = match &outcome {
            DataOutcome::Relayed(r) => (r.a_to_b, matches!(r.end, RelayEnd::CapReached(_))),
            DataOutcome::Failed(_) => (0, false),
        };
        if let DataOutcome::Relayed(r) = &outcome {
            let m = &self.ctx.metrics;
            Metrics::add(&m.rate_wait_upload_us, r.a_to_b_delayed.as_micros() as u64);
            Metrics::add(&m.rate_wait_download_us, r.b_to_a_delayed.as_micros() as u64);
        }
        let over_cap = self.settle_upload(plan.cap, written, capped).await?;
        let backend_code = reply.code;
        let verdict::TransferVerdict { reply, complete: ok, result } =
            verdict::transfer_verdict(&outcome, reply, over_cap);
        if reply.code != backend_code {
            debug!(backend_code, code = reply.code, "replaced the backend's final reply");
        }
        self.ctx.metrics.transfer(transfer_kind(cmd), if ok { "ok" } else { "failed" });
        let moved = match &outcome {
            DataOutcome::Relayed(r) => r.a_to_b + r.b_to_a,
            DataOutcome::Failed(_) => 0,
        };
        self.log_transfer(cmd, direction, started, moved, ok);
        self.ctx.metrics.latency.transfer.observe(started.elapsed().as_secs_f64());
        let secs = started.elapsed().as_secs_f64();
        let path =
            String::from_utf8_lossy(&crate::policy::path::resolve(&self.cwd, cmd.arg.as_deref().unwrap_or_default()))
                .into_owned();
        info!(
            user = self.user.as_deref().unwrap_or("-"),
            command = %cmd.verb,
            %path,
            bytes = moved,
            seconds = format!("{secs:.2}"),
            rate = format!("{}/s", registry::human((moved as f64 / secs.max(0.001)) as u64)),
            code = reply.code,
            %result,
            "transfer ended"
        );
        self.reply(&reply).await
    }

    /// One xferlog line for a file transfer (listings are not file transfers).
    pub(super) fn log_transfer(
        &self,
        cmd: &Command,
        direction: TransferDirection,
        started: Instant,
        bytes: u64,
        complete: bool,
    ) {
        let Some(log) = &self.ctx.xferlog else { return };
        if !matches!(cmd.verb, Verb::Retr | Verb::Stor | Verb::Appe | Verb::Stou) {
            return;
        }
        let path = match cmd.verb {
            Verb::Stou => self.cwd.clone(),
            _ => crate::policy::path::resolve(&self.cwd, cmd.arg.as_deref().unwrap_or_default()),
        };
        log.record(&crate::xferlog::TransferRecord {
            finished: std::time::SystemTime::now(),
            seconds: started.elapsed().as_secs(),
            client: self.client_peer.ip(),
            bytes,
            path,
            binary: self.binary,
            incoming: direction == TransferDirection::Upload,
            user: self.user.clone().unwrap_or_default(),
            complete,
        });
    }

    /// `ABOR` during a transfer: close both data legs first (so the backend's
    /// transfer ends even if it ignores urgent data), then pass `ABOR` on.
    /// The client gets the transfer's final reply, then the replies to the
    /// commands it sent before `ABOR` (queued), then `ABOR`'s (RFC 959).
    /// `delivered`: the relay had already moved every byte and ended in order;
    /// otherwise a backend `226` (it may have written everything into socket
    /// buffers before the client stopped reading) becomes `426`, and the
    /// `ABOR` reply says a transfer was aborted (`226`).
    pub(super) async fn abort_transfer(
        &mut self,
        cmd: &Command,
        mut channel: DataChannel,
        final_reply: Option<Reply>,
        delivered: bool,
    ) -> SessionResult<()> {
        // The legs are closed (in order) before the backend hears ABOR.
        channel.stop().await;
        self.ctx.metrics.transfer(transfer_kind(cmd), if delivered { "ok" } else { "aborted" });
        info!(delivered, "transfer aborted by client");
        self.backend.send(&Command::new(Verb::Abor, None)).await?;
        let transfer_reply = match final_reply {
            Some(r) => r,
            None => self.final_reply().await?,
        };
        self.reply(&verdict::aborted_transfer_reply(delivered, transfer_reply)).await?;
        let abor_reply = verdict::abor_reply(delivered, self.final_reply().await?);
        if self.queued.is_empty() {
            self.reply(&abor_reply).await
        } else {
            self.queued.push_back(Queued::Reply(abor_reply));
            Ok(())
        }
    }
}
