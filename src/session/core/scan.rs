//! Uploads the malware scanner rejected (`[scan]`): the backend's `226` is
//! held until the verdict; a rejected file is removed with a hidden `DELE`
//! and the client hears why instead.

use super::transfer::Running;
use super::{Core, Env, Pending, Waiting};
use crate::protocol::command::TransferDirection;
use crate::protocol::{codes, Command, Reply, Verb};
use crate::relay::RelayEnd;
use crate::session::outcome::{DataOutcome, ScanVerdict};
use tracing::{info, warn};

/// An upload on its way out: the hidden `DELE` of `path` is under way.
#[derive(Debug)]
pub(super) struct Rejected {
    cmd: Command,
    direction: TransferDirection,
    outcome: DataOutcome,
    backend: Reply,
    path: Vec<u8>,
    verdict: ScanVerdict,
}

impl<E: Env> Core<E> {
    pub(super) fn on_scanned(&mut self, v: ScanVerdict) {
        if let Waiting::Transfer(t) = &mut self.waiting {
            t.scan = Some(v);
        }
    }

    /// Lets a transfer through unless the scanner rejected an upload that
    /// otherwise succeeded (a failed one is reported as failed already).
    pub(super) fn scan_gate(
        &mut self,
        t: &mut Running,
        outcome: DataOutcome,
        backend: Reply,
    ) -> Result<(DataOutcome, Reply), Box<Rejected>> {
        let Some(verdict) = t.scan.take() else { return Ok((outcome, backend)) };
        let delivered = matches!(&outcome, DataOutcome::Relayed(r) if matches!(r.end, RelayEnd::Eof(_)));
        if !backend.is_positive() || !delivered {
            return Ok((outcome, backend));
        }
        self.metrics().scanned(verdict.label());
        match &verdict {
            ScanVerdict::Clean => Ok((outcome, backend)),
            ScanVerdict::AcceptedUnscanned(why) => {
                let path = String::from_utf8_lossy(&t.landed).into_owned();
                warn!(target: "ftpgate::audit", user = %self.user_name(), client = %self.config.client_peer.ip(), %path, reason = %why, "upload accepted without a scan ([scan] on_error or on_oversize = \"accept\")");
                Ok((outcome, backend))
            }
            ScanVerdict::Infected(_) | ScanVerdict::Unscanned { .. } => Err(Box::new(Rejected {
                cmd: t.cmd.clone(),
                direction: t.direction,
                outcome,
                backend,
                path: t.landed.clone(),
                verdict,
            })),
        }
    }

    pub(super) fn remove_rejected(&mut self, r: Box<Rejected>) {
        let dele = Command::new(Verb::Dele, Some(&r.path));
        self.ask_backend(dele, Pending::ScanDele(r));
    }

    pub(super) fn on_scan_dele_reply(&mut self, r: Rejected, dele: Reply) {
        let path = String::from_utf8_lossy(&r.path).into_owned();
        let size = r.outcome.written_to_backend();
        let (code, mut text) = match &r.verdict {
            ScanVerdict::Infected(sig) => (codes::FILE_UNAVAILABLE, format!("Upload rejected: malware found ({sig})")),
            ScanVerdict::Unscanned { oversize: true, reason } => {
                (codes::EXCEEDED_STORAGE, format!("Upload rejected: it could not be scanned ({reason})"))
            }
            ScanVerdict::Unscanned { reason, .. } => {
                (codes::LOCAL_ERROR, format!("Upload rejected: the malware scanner failed ({reason})"))
            }
            ScanVerdict::Clean | ScanVerdict::AcceptedUnscanned(_) => return,
        };
        let what = match &r.verdict {
            ScanVerdict::Infected(sig) => sig.clone(),
            ScanVerdict::Unscanned { reason, .. } => format!("not scanned: {reason}"),
            _ => String::new(),
        };
        let (user, client) = (self.user_name(), self.config.client_peer.ip());
        if dele.is_positive() {
            info!(target: "ftpgate::audit", %user, %client, %path, size, signature = %what, removed = true, "upload rejected by the malware scan; file removed");
            text.push_str("; file removed");
        } else {
            // Say so: the client and the operator must not believe it gone.
            let refusal = crate::text::shown(&dele.text(), 200);
            warn!(target: "ftpgate::audit", %user, %client, %path, size, signature = %what, removed = false, backend = %refusal, "upload rejected by the malware scan; the backend refused to remove the file");
            text.push_str(&format!("; the file could not be removed (the server refused: {refusal})"));
        }
        let reply = Reply::single(code, &text);
        self.conclude(&r.cmd, r.direction, &r.outcome, r.backend, Some(reply));
    }
}
