//! Transfers: the limits a transfer runs under, its final reply held until
//! the relay has delivered every byte (with 425/426/522 put in for what the
//! backend cannot see), the upload size cap, and `ABOR` with the replies
//! queued around it (RFC 959: the transfer's reply, then the replies of the
//! commands sent before `ABOR`, then `ABOR`'s).

use super::failure::DataSetupFailure;
use super::interface::Output;
use super::interface::Timer;
use super::setup;
use super::setup::DataSetup;
use super::Pending;
use super::Waiting;
use super::{Core, Env};
use crate::metrics::Metrics;
use crate::policy::limits::{size_text, TransferLimits};
use crate::protocol::codes;
use crate::protocol::command::TransferDirection;
use crate::protocol::Command;
use crate::protocol::Reply;
use crate::protocol::Verb;
use crate::relay::RelayEnd;
use crate::session::outcome::DataOutcome;
use crate::session::verdict;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::debug;
use tracing::info;
use tracing::warn;

/// How long a departed client's upload may take to report its end.
const DEPARTED_GRACE: Duration = Duration::from_secs(2);

/// What an upload may still write, and what to do when it passes that.
#[derive(Debug, Clone)]
pub(super) struct UploadCap {
    /// The file, as the backend resolves it; `None` for `STOU`.
    pub(super) path: Option<Vec<u8>>,
    limit: u64,
    /// A `STOR` that did not resume: the partial file is removed (`DELE`).
    remove_partial: bool,
}

/// A transfer command on its way to the backend.
#[derive(Debug)]
pub(super) struct Starting {
    cmd: Command,
    direction: TransferDirection,
    setup: DataSetup,
    cap: Option<UploadCap>,
    max_transfers: Option<usize>,
    /// The limits it runs under, until they go to the driver.
    limits: Option<Box<crate::policy::limits::TransferLimits>>,
    /// What of the size cap the file already uses.
    used: u64,
}

/// A transfer the backend accepted.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) cmd: Command,
    pub(super) direction: TransferDirection,
    pub(super) cap: Option<UploadCap>,
    pub(super) outcome: Option<DataOutcome>,
    pub(super) final_reply: Option<Reply>,
    /// The scanner's verdict on an upload (`[scan]`).
    pub(super) scan: Option<crate::session::outcome::ScanVerdict>,
    /// Where the upload landed on the backend: the command's path, or the
    /// name a `STOU`'s 150 gave.
    pub(super) landed: Vec<u8>,
}

/// A transfer cut at the size cap, waiting for its partial file's `DELE`.
#[derive(Debug)]
pub(super) struct Finishing {
    cmd: Command,
    direction: TransferDirection,
    cap: UploadCap,
    outcome: DataOutcome,
    reply: Reply,
}

/// The session's data side between transfers.
#[derive(Debug, Default)]
pub(super) struct TransferState {
    /// The data connection prepared for the next transfer.
    pub(super) setup: Option<DataSetup>,
    /// `EPSV ALL` (RFC 2428): every other setup command is refused.
    pub(super) epsv_all: bool,
    /// The backend holds this REST offset for the next transfer.
    pub(super) rest_offset: Option<u64>,
    /// TYPE I (or L 8) in force, for the transfer log.
    pub(super) binary: bool,
    /// Bytes uploaded per file in this session, for `max_upload_size`.
    pub(super) uploaded: HashMap<Vec<u8>, u64>,
    /// The last transfer ended without its data (its final reply a 4xx or
    /// 5xx) and no command went to the backend since: an `ABOR` the client
    /// sent while it still saw that transfer running gets `226`, not the
    /// backend's "no transfer" `225`, as during the transfer.
    pub(super) cut: bool,
}

/// The client left during an upload that may have to be removed.
#[derive(Debug)]
pub(super) struct Departed {
    cap: UploadCap,
    pub(super) outcome: Option<DataOutcome>,
    final_reply: Option<Reply>,
    deleting: bool,
}

/// What the driver needs when a transfer starts (for `who` and the logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStart {
    pub command: String,
    /// The path as the backend resolves it.
    pub path: String,
    pub direction: TransferDirection,
    /// The backend's 125/150 text (it may announce the size).
    pub reply_text: String,
}

/// One ended transfer, for the transfer log and the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLog {
    pub verb: Verb,
    /// As the backend resolves it (the working directory for `STOU`).
    pub path: Vec<u8>,
    pub direction: TransferDirection,
    /// Bytes moved, both ways.
    pub bytes: u64,
    pub complete: bool,
    pub code: u16,
    /// The result in words.
    pub result: String,
    pub binary: bool,
    pub user: String,
}

/// `file` for RETR/STOR/STOU/APPE, `listing` for LIST/NLST/MLSD.
pub fn transfer_kind(cmd: &Command) -> &'static str {
    match cmd.verb {
        Verb::List | Verb::Nlst | Verb::Mlsd => "listing",
        _ => "file",
    }
}

impl<E: Env> Core<E> {
    pub(super) fn resolve(&self, cmd: &Command) -> Vec<u8> {
        crate::policy::path::resolve(&self.cwd, cmd.arg.as_deref().unwrap_or_default())
    }

    /// `limits`: decided with the command's verdict (`evaluate_on`).
    pub(super) fn start_transfer(&mut self, cmd: Command, direction: TransferDirection, limits: TransferLimits) {
        // The policy refuses transfers without a data setup; this is the backstop.
        let Some(setup) = self.transfers.setup.take() else {
            return self.reply(codes::BAD_SEQUENCE, &format!("Use PASV, EPSV, PORT or EPRT before {}", cmd.verb));
        };
        let (mut cap, mut used) = (None, 0);
        if let (TransferDirection::Upload, Some(max)) = (direction, limits.max_upload_size) {
            let path = (cmd.verb != Verb::Stou).then(|| self.resolve(&cmd));
            let seen = path.as_ref().and_then(|p| self.transfers.uploaded.get(p)).copied().unwrap_or(0);
            used = match (&cmd.verb, self.transfers.rest_offset) {
                // A new file (or one overwritten from its start).
                (Verb::Stor | Verb::Stou, None | Some(0)) => 0,
                // Resumed: the file grows from the offset on.
                (Verb::Stor, Some(offset)) => offset.max(seen),
                // APPE: from the file's size, asked below.
                _ => seen,
            };
            if let Some(p) = &path {
                if used == 0 {
                    self.transfers.uploaded.remove(p);
                }
            }
            cap = Some(UploadCap {
                path,
                limit: max,
                remove_partial: matches!(cmd.verb, Verb::Stor | Verb::Stou) && used == 0,
            });
        }
        let max_transfers = limits.max_transfers;
        let s = Starting { cmd, direction, setup, cap, max_transfers, limits: Some(Box::new(limits)), used };
        if s.cmd.verb == Verb::Appe && s.cap.is_some() && self.backend.is_open() {
            let path = s.cap.as_ref().and_then(|c| c.path.clone()).unwrap_or_default();
            return self.ask_backend(Command::new(Verb::Size, Some(&path)), Pending::AppendSize(s));
        }
        self.plan_transfer(s);
    }

    /// `SIZE` before a capped `APPE`: the file's size counts against the cap.
    pub(super) fn on_append_size(&mut self, mut s: Starting, r: &Reply) {
        if r.code == codes::FILE_STATUS {
            let size = r.text().split_whitespace().next().and_then(|n| n.parse::<u64>().ok());
            // A size ftpgate cannot read counts as the whole cap used.
            s.used = s.used.max(size.unwrap_or(u64::MAX));
        }
        self.plan_transfer(s);
    }

    fn plan_transfer(&mut self, mut s: Starting) {
        let limits = s.limits.take().map(|l| *l).unwrap_or_default();
        let upload_cap = s.cap.as_ref().map(|c| c.limit.saturating_sub(s.used));
        let (user, direction) = (self.user_name(), s.direction);
        self.out.push_back(Output::PlanTransfer { user, direction, limits, upload_cap });
        self.waiting = Waiting::TransferPlan(s);
    }

    pub(super) fn on_transfer_planned(&mut self, ok: bool) {
        let Waiting::TransferPlan(s) = std::mem::replace(&mut self.waiting, Waiting::Command) else { return };
        if !ok {
            let user = self.user_name();
            let max = s.max_transfers.unwrap_or(0);
            Metrics::inc(&self.metrics().transfers_refused_max);
            info!(target: "ftpgate::audit", %user, max, command = %s.cmd.verb, "transfer refused: too many at once");
            self.release_data_setup();
            let text = format!("Too many transfers at once for {user} (limit {max}); try again when one has ended");
            self.refuse_transfer(Reply::single(codes::ACTION_NOT_TAKEN, &text));
            return self.resume_if_idle();
        }
        match s.setup {
            DataSetup::Passive => self.send_transfer(s),
            DataSetup::Active(_) => self.backend_passive(setup::PassivePurpose::Transfer(s)),
        }
    }

    /// The command did not start a transfer: its data setup (and any
    /// transfer slot taken for it) is released.
    pub(super) fn release_data_setup(&mut self) {
        self.out.push_back(Output::DropData);
    }

    /// A transfer refused before it reached the backend: a REST the backend
    /// accepted is cleared, so it cannot shift the next transfer (as a server
    /// resets its offset on any transfer attempt).
    pub(super) fn refuse_transfer(&mut self, reply: Reply) {
        self.drop_data();
        if self.transfers.rest_offset.is_some() {
            return self.ask_backend(Command::new(Verb::Rest, Some(b"0")), Pending::ClearRest { then: reply });
        }
        self.send_reply(reply);
    }

    pub(super) fn connect_active(&mut self, s: Starting, backend: SocketAddr) {
        let DataSetup::Active(client) = s.setup else { return self.send_transfer(s) };
        let (direction, private) = (s.direction, self.protection.prot_private);
        self.out.push_back(Output::ConnectActive { client, backend, direction, private });
        self.waiting = Waiting::ActiveConnect(s);
    }

    pub(super) fn on_active_connected(&mut self, r: Result<(), DataSetupFailure>) {
        let Waiting::ActiveConnect(s) = std::mem::replace(&mut self.waiting, Waiting::Command) else { return };
        match r {
            Ok(()) => self.send_transfer(s),
            Err(why) => {
                self.release_data_setup();
                debug!(target: "ftpgate::transfer", reason = why.label(), "active data connection failed");
                self.reply(codes::CANNOT_OPEN_DATA, &why.to_string());
                self.resume();
            }
        }
    }

    /// The transfer command goes to the backend, which answers it only once
    /// its data connection is up, which waits for the client's: the reply
    /// timeout allows for both.
    fn send_transfer(&mut self, s: Starting) {
        self.out.push_back(Output::SetDirection(s.direction));
        self.transfers.rest_offset = None;
        let timeout = self.config.backend_reply + self.config.data_connect;
        self.ask_backend_within(s.cmd.clone(), Pending::TransferStart(s), timeout);
    }

    /// 125/150: the data legs may start TLS and relay.
    pub(super) fn transfer_accepted(&mut self, mut s: Starting, r: Reply) {
        let mut landed = self.resolve(&s.cmd);
        if s.cmd.verb == Verb::Stou {
            // The name the backend chose ("150 FILE: name", RFC 1123 4.1.2.9),
            // so a partial file cut at the cap, or a rejected one, can be removed.
            let text = r.text();
            if let Some(name) = text.split_once("FILE: ").map(|(_, n)| n.trim()).filter(|n| !n.is_empty()) {
                landed = crate::policy::path::resolve(&self.cwd, name.as_bytes());
                if let Some(cap) = s.cap.as_mut() {
                    cap.path = Some(landed.clone());
                }
            }
        }
        let path = String::from_utf8_lossy(&self.resolve(&s.cmd)).into_owned();
        info!(target: "ftpgate::transfer", user = self.login.user.as_deref().unwrap_or("-"), command = %s.cmd, "transfer started");
        self.out.push_back(Output::StartRelay(TransferStart {
            command: s.cmd.verb.to_string(),
            path,
            direction: s.direction,
            reply_text: r.text(),
        }));
        self.send_reply(r);
        self.waiting = Waiting::Transfer(Running {
            cmd: s.cmd,
            direction: s.direction,
            cap: s.cap,
            outcome: None,
            final_reply: None,
            scan: None,
            landed,
        });
    }

    /// The backend refused the transfer command outright.
    pub(super) fn on_transfer_start_reply(&mut self, s: Starting, r: Reply) {
        self.release_data_setup();
        self.metrics().transfer(transfer_kind(&s.cmd), "failed");
        self.send_reply(r);
        self.resume();
    }

    pub(super) fn on_transfer_reply(&mut self, mut t: Running, r: Reply) {
        if r.is_preliminary() {
            self.send_reply(r);
        } else {
            if r.code >= 400 {
                // The backend gave up; nothing more will move.
                self.out.push_back(Output::AbortData);
            }
            self.out.push_back(Output::Disarm(Timer::BackendReply));
            t.final_reply = Some(r);
        }
        self.transfer_step(t);
    }

    pub(super) fn on_data_ended(&mut self, outcome: DataOutcome) {
        match std::mem::replace(&mut self.waiting, Waiting::Command) {
            Waiting::Transfer(mut t) => {
                t.outcome = Some(outcome);
                if t.final_reply.is_none() {
                    self.out.push_back(Output::Arm(Timer::BackendReply, self.config.backend_reply));
                }
                self.transfer_step(t);
            }
            Waiting::Departed(mut d) => {
                d.outcome = Some(outcome);
                self.departed_step(d);
            }
            Waiting::BackendReply(Pending::Abor(mut a)) => {
                // The relay stopped by ABOR: a capped upload's bytes count.
                if let Some(p) = a.cap_path.take() {
                    *self.transfers.uploaded.entry(p).or_insert(0) += outcome.written_to_backend();
                }
                self.waiting = Waiting::BackendReply(Pending::Abor(a));
            }
            other => self.waiting = other,
        }
    }

    /// Waits for whichever of the relay's end and the final reply is missing;
    /// with both, settles the transfer.
    fn transfer_step(&mut self, mut t: Running) {
        if t.outcome.is_none() || t.final_reply.is_none() {
            self.waiting = Waiting::Transfer(t);
            return;
        }
        let (Some(outcome), Some(reply)) = (t.outcome.take(), t.final_reply.take()) else { return };
        let (outcome, reply) = match self.scan_gate(&mut t, outcome, reply) {
            Ok(both) => both,
            Err(rejected) => return self.remove_rejected(rejected),
        };
        let (written, capped) = match &outcome {
            DataOutcome::Relayed(r) => (r.a_to_b, matches!(r.end, RelayEnd::CapReached(_))),
            DataOutcome::Failed(_) => (0, false),
        };
        if let DataOutcome::Relayed(r) = &outcome {
            let m = self.metrics();
            Metrics::add(&m.rate_wait_upload_us, r.a_to_b_delayed.as_micros() as u64);
            Metrics::add(&m.rate_wait_download_us, r.b_to_a_delayed.as_micros() as u64);
        }
        let mut over_cap = None;
        if let Some(cap) = t.cap.take() {
            if let Some(p) = &cap.path {
                *self.transfers.uploaded.entry(p.clone()).or_insert(0) += written;
            }
            if capped {
                Metrics::inc(&self.metrics().uploads_capped);
                if let (true, Some(p)) = (cap.remove_partial, cap.path.clone()) {
                    let dele = Command::new(Verb::Dele, Some(&p));
                    let f = Finishing { cmd: t.cmd, direction: t.direction, cap, outcome, reply };
                    return self.ask_backend(dele, Pending::CapDele(Box::new(f)));
                }
                let path = cap.path.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                info!(target: "ftpgate::audit", user = %self.user_name(), %path, limit = cap.limit, "upload stopped at the size limit; partial file left (append or resumed upload)");
                over_cap = Some(cap_reply(cap.limit));
            }
        }
        self.conclude(&t.cmd, t.direction, &outcome, reply, over_cap);
    }

    pub(super) fn on_cap_dele_reply(&mut self, f: Finishing, r: Reply) {
        let path = f.cap.path.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        let mut reply = cap_reply(f.cap.limit);
        if r.is_positive() {
            info!(target: "ftpgate::audit", user = %self.user_name(), %path, limit = f.cap.limit, "upload stopped at the size limit; partial file removed");
        } else {
            // Say so: the client and the operator must not believe it gone.
            let refusal = crate::text::shown(&r.text(), 200);
            warn!(target: "ftpgate::audit", user = %self.user_name(), %path, limit = f.cap.limit, backend = %refusal, "upload stopped at the size limit; the backend refused to remove the partial file");
            reply = Reply::single(
                reply.code,
                &format!("{}; the partial file could not be removed (the server refused: {refusal})", reply.text()),
            );
        }
        self.conclude(&f.cmd, f.direction, &f.outcome, f.reply, Some(reply));
    }

    /// The client's final reply for a transfer, and its log line.
    pub(super) fn conclude(
        &mut self,
        cmd: &Command,
        direction: TransferDirection,
        outcome: &DataOutcome,
        backend: Reply,
        over_cap: Option<Reply>,
    ) {
        let backend_code = backend.code;
        let v = verdict::transfer_verdict(outcome, backend, over_cap);
        if v.reply.code != backend_code {
            debug!(target: "ftpgate::transfer", backend_code, code = v.reply.code, "replaced the backend's final reply");
        }
        self.metrics().transfer(transfer_kind(cmd), if v.complete { "ok" } else { "failed" });
        self.transfers.cut = !v.reply.is_positive();
        let bytes = match outcome {
            DataOutcome::Relayed(r) => r.a_to_b + r.b_to_a,
            DataOutcome::Failed(_) => 0,
        };
        let path = if cmd.verb == Verb::Stou { self.cwd.clone() } else { self.resolve(cmd) };
        self.out.push_back(Output::TransferEnded(Some(TransferLog {
            verb: cmd.verb.clone(),
            path,
            direction,
            bytes,
            complete: v.complete,
            code: v.reply.code,
            result: v.result,
            binary: self.transfers.binary,
            user: self.user_name(),
        })));
        self.send_reply(v.reply);
        self.resume();
    }

    /// The client left during a transfer: a capped new upload's partial file
    /// is still removed from the backend; otherwise the session just ends.
    pub(super) fn transfer_departed(&mut self, t: Running) {
        let log = self.cut_log(&t, codes::TRANSFER_ABORTED, "cut: the client left");
        self.out.push_back(Output::TransferEnded(Some(log)));
        match t.cap {
            Some(cap) if cap.remove_partial && t.direction == TransferDirection::Upload => {
                if t.outcome.is_none() {
                    self.out.push_back(Output::Arm(Timer::DepartedGrace, DEPARTED_GRACE));
                }
                let d = Departed { cap, outcome: t.outcome, final_reply: t.final_reply, deleting: false };
                self.departed_step(d);
            }
            _ => self.close(),
        }
    }

    fn departed_step(&mut self, mut d: Departed) {
        let capped = match &d.outcome {
            None => {
                self.waiting = Waiting::Departed(d);
                return;
            }
            Some(DataOutcome::Relayed(r)) => matches!(r.end, RelayEnd::CapReached(_)),
            Some(DataOutcome::Failed(_)) => false,
        };
        if !capped {
            return self.close();
        }
        if d.final_reply.is_none() {
            self.out.push_back(Output::Arm(Timer::BackendReply, self.config.backend_reply));
            self.waiting = Waiting::Departed(d);
            return;
        }
        let Some(path) = d.cap.path.clone() else { return self.close() };
        Metrics::inc(&self.metrics().uploads_capped);
        d.deleting = true;
        self.out.push_back(Output::Send(Command::new(Verb::Dele, Some(&path))));
        self.out.push_back(Output::Arm(Timer::BackendReply, self.config.backend_reply));
        self.waiting = Waiting::Departed(d);
    }

    pub(super) fn on_departed_reply(&mut self, mut d: Departed, r: Reply) {
        if r.is_preliminary() {
            self.waiting = Waiting::Departed(d);
            return;
        }
        if d.deleting {
            let path = d.cap.path.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            info!(target: "ftpgate::audit", user = %self.user_name(), %path, limit = d.cap.limit, removed = r.is_positive(), "upload stopped at the size limit; partial file removed");
            return self.close();
        }
        d.final_reply = Some(r);
        self.departed_step(d);
    }
}

fn cap_reply(limit: u64) -> Reply {
    Reply::single(
        codes::EXCEEDED_STORAGE,
        &format!("Exceeded storage allocation: uploads are limited to {} per file", size_text(limit)),
    )
}
