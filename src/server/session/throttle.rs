//! Transfer limits shared between sessions: the user's rate buckets and the
//! concurrent-transfer count. (The upload size cap, counted per file per
//! session, is the core's.)

use crate::policy::limits::TransferLimits;
use crate::protocol::command::TransferDirection;
use crate::relay::{Limit, Limits};
use crate::server::context::SessionContext;
use crate::server::limits;

/// Everything a running transfer holds: its limits, and its slot among the
/// user's `max_transfers`.
pub(super) struct TransferPlan {
    pub limits: Limits,
    /// `[scan]` applies to this transfer (an upload, and the policy does
    /// not exempt the user).
    pub scan: bool,
    pub _slot: Option<limits::Slot<String>>,
}

/// Takes a transfer slot for `user` and sets up the rate bucket and the
/// upload cap the core decided; `None`: all of the user's `max_transfers`
/// are running.
pub(super) fn plan(
    ctx: &SessionContext,
    user: &str,
    direction: TransferDirection,
    l: &TransferLimits,
    upload_cap: Option<u64>,
) -> Option<TransferPlan> {
    let slot = match l.max_transfers {
        Some(max) => Some(ctx.transfers.take(user.to_string(), max)?),
        None => None,
    };
    let rate = match direction {
        TransferDirection::Download => l.download_rate,
        TransferDirection::Upload => l.upload_rate,
    };
    let rate = rate.map(|r| ctx.rate_buckets.get(user, direction, r));
    let mut limits = Limits::default();
    match direction {
        TransferDirection::Download => limits.b_to_a = Limit { rate, cap: None },
        TransferDirection::Upload => limits.a_to_b = Limit { rate, cap: upload_cap },
    }
    let scan = direction == TransferDirection::Upload && l.scan.unwrap_or(true);
    Some(TransferPlan { limits, scan, _slot: slot })
}
