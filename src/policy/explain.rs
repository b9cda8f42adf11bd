//! `ftpgate policy explain`: one command's decision in one line, as the
//! session would make it. Pure: the caller prints it.

use std::net::IpAddr;

/// One line: `ALLOW ...` or `DENY <code> <reason> [rule]`.
pub fn explain(
    p: &crate::policy::Policy,
    user: &str,
    from: IpAddr,
    tls: bool,
    cert: bool,
    cwd: &str,
    line: &str,
) -> String {
    use crate::policy::{SessionView, Verdict};
    let network = match p.admit(from) {
        Ok(n) => n,
        Err(d) => return format!("DENY {} {} [{}]", d.code, d.reason, d.rule),
    };
    let cmd = match crate::protocol::Command::parse(line.as_bytes()) {
        Ok(c) => c,
        Err(e) => return format!("DENY 500 {e} [syntax]"),
    };
    let cwd = crate::policy::path::resolve(b"/", cwd.as_bytes());
    let view = SessionView {
        network,
        tls,
        pbsz: tls,
        prot_private: tls,
        client_cert: cert,
        user: Some(user),
        logged_in: !matches!(cmd.verb, crate::protocol::Verb::User | crate::protocol::Verb::Pass),
        cwd: &cwd,
        previous: match cmd.verb {
            crate::protocol::Verb::Pass => Some(&crate::protocol::Verb::User),
            _ => None,
        },
        data_ready: true,
    };
    let (perms, rule) = crate::policy::needed_permission(&cwd, &cmd)
        .map(|(_, path)| p.permissions(user, &path))
        .unwrap_or((crate::policy::Permissions::all(), "no path involved".into()));
    match p.evaluate(&view, &cmd) {
        Verdict::Allow => format!("ALLOW from network {} [{rule}: {perms}]", network.name),
        Verdict::AllowIfNew { path, denial } => format!(
            "ALLOW if {} does not exist yet, else DENY {} {} [{}]",
            String::from_utf8_lossy(&path),
            denial.code,
            denial.reason,
            denial.rule
        ),
        Verdict::Deny(d) => deny_line(&d),
    }
}

/// `DENY code reason [rule]`, naming the rule once: reasons that already
/// name it (`(rule writer-upload)`) are not followed by it again.
fn deny_line(d: &crate::policy::Denial) -> String {
    if d.reason.contains(&format!("(rule {})", d.rule.trim_start_matches("rule "))) {
        format!("DENY {} {}", d.code, d.reason)
    } else {
        format!("DENY {} {} [{}]", d.code, d.reason, d.rule)
    }
}
