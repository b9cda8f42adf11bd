//! Transfer limits in a session: the user's shared rate buckets, the
//! concurrent-transfer count, and the upload size cap counted per file per
//! session (so `REST`+`STOR` or many `APPE`s cannot pass it).

use super::*;
use crate::policy::limits::{size_text, TransferLimits};
use crate::relay::{Limit, Limits, TokenBucket};
use std::collections::HashMap;

/// One token bucket per user and direction, shared by all of that user's
/// transfers on this instance, so two parallel downloads split the rate.
#[derive(Debug, Default)]
pub struct RateBuckets {
    map: Mutex<HashMap<(String, TransferDirection), Arc<TokenBucket>>>,
}

/// How long a departed client's upload may take to report its end.
const DEPARTED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Buckets kept before idle ones (held by no transfer) are dropped.
const BUCKETS_KEPT: usize = 1024;

impl RateBuckets {
    /// The user's bucket for `direction` at `rate`; a changed rate (after a
    /// reload) starts a new bucket for transfers from now on.
    pub fn get(&self, user: &str, direction: TransferDirection, rate: u64) -> Arc<TokenBucket> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > BUCKETS_KEPT {
            map.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let b = map.entry((user.to_string(), direction)).or_insert_with(|| Arc::new(TokenBucket::new(rate)));
        if b.rate() != rate {
            *b = Arc::new(TokenBucket::new(rate));
        }
        Arc::clone(b)
    }
}

/// What an upload may still write, and what to do when it passes that.
#[derive(Debug)]
pub(super) struct UploadCap {
    /// The file, as the backend resolves it; `None` for `STOU`.
    pub path: Option<Vec<u8>>,
    pub limit: u64,
    /// A `STOR` that did not resume: the partial file is removed (`DELE`).
    pub remove_partial: bool,
}

/// Everything a transfer runs under.
pub(super) struct TransferPlan {
    pub limits: Limits,
    pub cap: Option<UploadCap>,
    /// Held while the transfer runs (`max_transfers`).
    pub _slot: Option<limits::Slot<String>>,
}

impl Session {
    fn transfer_limits(&self) -> TransferLimits {
        let policy = self.ctx.policy();
        match policy.admit(self.client_peer.ip()) {
            Ok(network) => policy.limits_for(self.user.as_deref(), network),
            Err(_) => TransferLimits::default(),
        }
    }

    /// The limits for `cmd`, or the `450` that refuses it (`max_transfers`).
    /// `resumed`: a `REST` offset is in force.
    pub(super) fn plan_transfer(
        &mut self,
        cmd: &Command,
        direction: TransferDirection,
        resumed: bool,
    ) -> Result<TransferPlan, Reply> {
        let l = self.transfer_limits();
        let user = self.user.clone().unwrap_or_default();
        let slot = match l.max_transfers {
            Some(max) => match self.ctx.transfers.take(user.clone(), max) {
                Some(slot) => Some(slot),
                None => {
                    Metrics::inc(&self.ctx.metrics.transfers_refused_max);
                    info!(target: "ftpgate::audit", %user, max, command = %cmd.verb, "transfer refused: too many at once");
                    return Err(Reply::single(
                        450,
                        &format!("Too many transfers at once for {user} (limit {max}); try again when one has ended"),
                    ));
                }
            },
            None => None,
        };
        let rate = match direction {
            TransferDirection::Download => l.download_rate,
            TransferDirection::Upload => l.upload_rate,
        };
        let rate = rate.map(|r| self.ctx.rate_buckets.get(&user, direction, r));
        let mut limits = Limits::default();
        let mut cap = None;
        match direction {
            TransferDirection::Download => limits.b_to_a = Limit { rate, cap: None },
            TransferDirection::Upload => {
                if let Some(max) = l.max_upload_size {
                    let path = (cmd.verb != Verb::Stou)
                        .then(|| crate::policy::path::resolve(&self.cwd, cmd.arg.as_deref().unwrap_or_default()));
                    let used = path.as_ref().and_then(|p| self.uploaded.get(p)).copied().unwrap_or(0);
                    cap = Some(UploadCap {
                        path,
                        limit: max,
                        remove_partial: cmd.verb == Verb::Stor && !resumed && used == 0,
                    });
                    limits.a_to_b = Limit { rate, cap: Some(max.saturating_sub(used)) };
                } else {
                    limits.a_to_b = Limit { rate, cap: None };
                }
            }
        }
        Ok(TransferPlan { limits, cap, _slot: slot })
    }

    /// After an upload: counts what reached the file; when the relay stopped
    /// it at the cap, removes a new file's partial copy (silently) or says in
    /// the audit log that it was left, and returns the `552` for the client.
    pub(super) async fn settle_upload(
        &mut self,
        cap: Option<UploadCap>,
        written: u64,
        capped: bool,
    ) -> SessionResult<Option<Reply>> {
        let Some(cap) = cap else { return Ok(None) };
        if let Some(p) = &cap.path {
            *self.uploaded.entry(p.clone()).or_insert(0) += written;
        }
        if !capped {
            return Ok(None);
        }
        Metrics::inc(&self.ctx.metrics.uploads_capped);
        let user = self.user.clone().unwrap_or_default();
        let path = cap.path.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        if let (true, Some(p)) = (cap.remove_partial, &cap.path) {
            self.backend.send(&Command::new(Verb::Other("DELE".into()), Some(p))).await?;
            let r = self.silent_reply().await?;
            info!(target: "ftpgate::audit", %user, %path, limit = cap.limit, removed = r.is_positive(), "upload stopped at the size limit; partial file removed");
        } else {
            info!(target: "ftpgate::audit", %user, %path, limit = cap.limit, "upload stopped at the size limit; partial file left (append or resumed upload)");
        }
        Ok(Some(Reply::single(
            552,
            &format!("Exceeded storage allocation: uploads are limited to {} per file", size_text(cap.limit)),
        )))
    }

    /// The backend's final reply, shown to no one (the client may be gone).
    async fn silent_reply(&mut self) -> SessionResult<Reply> {
        loop {
            let r = self.backend.next_within(self.settings().backend_reply).await?;
            if !r.is_preliminary() {
                return Ok(r);
            }
        }
    }

    /// The client left during an upload (curl, still sending when ftpgate
    /// stopped reading at the cap, sees its data connection reset and quits):
    /// a capped new file is still removed from the backend.
    pub(super) async fn settle_upload_of_departed_client(
        &mut self,
        channel: &mut DataChannel,
        outcome: Option<DataOutcome>,
        final_reply: Option<Reply>,
        cap: Option<UploadCap>,
    ) {
        if !cap.as_ref().is_some_and(|c| c.remove_partial) {
            return;
        }
        let outcome = match outcome {
            Some(o) => o,
            None => match tokio::time::timeout(DEPARTED_GRACE, &mut channel.task).await {
                Ok(Ok(o)) => o,
                _ => return,
            },
        };
        let DataOutcome::Relayed(r) = &outcome else { return };
        if !matches!(r.end, RelayEnd::CapReached(_)) {
            return;
        }
        if final_reply.is_none() && self.silent_reply().await.is_err() {
            return;
        }
        let _ = self.settle_upload(cap, r.a_to_b, true).await;
    }
}
