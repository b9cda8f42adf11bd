//! The bastion's decision engine: given what a session has done so far and the
//! next command, allow or deny it, and say which rule decided. Pure: no I/O, no
//! clock (time is passed in), so every rule is table-tested.
//!
//! A policy file (TOML, see `policy/example.toml`) has networks (CIDR allow and
//! deny lists with TLS requirements), path rules (per-user and per-group
//! permissions on path globs), per-user command lists, and login limits.

pub mod auth;
pub mod bans;
pub mod explain;
pub mod limits;
mod model;
pub mod path;

use crate::protocol::{codes, Command, Verb};
use ipnet::IpNet;
pub use model::PolicyError;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// What a user may do to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// LIST, NLST, MLSD, STAT with a path; MLST, SIZE, MDTM (which `read` also allows).
    List,
    /// RETR.
    Read,
    /// STOR, STOU, APPE of a new file.
    Write,
    /// STOR or APPE onto an existing file, MFMT.
    Overwrite,
    Delete,
    Rename,
    Mkdir,
    Rmdir,
    Site,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::List,
        Permission::Read,
        Permission::Write,
        Permission::Overwrite,
        Permission::Delete,
        Permission::Rename,
        Permission::Mkdir,
        Permission::Rmdir,
        Permission::Site,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::List => "list",
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Overwrite => "overwrite",
            Permission::Delete => "delete",
            Permission::Rename => "rename",
            Permission::Mkdir => "mkdir",
            Permission::Rmdir => "rmdir",
            Permission::Site => "site",
        }
    }

    pub fn from_name(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u16);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);
    pub fn all() -> Permissions {
        Permissions(Permission::ALL.iter().fold(0, |a, p| a | p.bit()))
    }
    pub fn with(self, p: Permission) -> Permissions {
        Permissions(self.0 | p.bit())
    }
    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }
    fn union(self, o: Permissions) -> Permissions {
        Permissions(self.0 | o.0)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Permission::ALL.iter().filter(|p| self.has(**p)).map(|p| p.name()).collect();
        if names.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// Client networks, matched in order; the first that contains the client's
/// address applies.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub cidrs: Vec<IpNet>,
    /// `false`: clients from here are refused at connect.
    pub allow: bool,
    /// `false`: nothing but AUTH (and FEAT, HELP, NOOP, QUIT) until TLS is up.
    pub plain_allowed: bool,
    /// USER and PASS only after AUTH TLS.
    pub tls_before_user: bool,
    /// Transfers only under PROT P.
    pub prot_p_required: bool,
    /// USER only with a verified client certificate (mutual TLS).
    pub client_cert_required: bool,
    /// Verbs refused from this network (upper-case).
    pub deny_commands: Vec<String>,
    /// If set, the only verbs accepted from this network (plus QUIT).
    pub allow_commands: Option<Vec<String>>,
    /// Transfer limits for users connecting from here (below the user's and
    /// its groups' own, above the defaults).
    pub limits: limits::TransferLimits,
}

/// Permissions on path globs for some users and groups.
#[derive(Debug, Clone)]
pub struct PathRule {
    pub name: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub paths: Vec<Vec<u8>>,
    pub allow: Permissions,
}

/// Failed-login and session limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins from one address before it is refused.
    pub max_failures: u32,
    /// First refusal period in seconds; doubles with every further ban.
    pub ban_seconds: u64,
    pub max_ban_seconds: u64,
    /// Sessions open at once from one address / for one user (0: no limit).
    pub max_sessions_per_address: usize,
    pub max_sessions_per_user: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            max_failures: 5,
            ban_seconds: 60,
            max_ban_seconds: 3600,
            max_sessions_per_address: 0,
            max_sessions_per_user: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub networks: Vec<Network>,
    pub rules: Vec<PathRule>,
    /// Group name to its member users.
    pub groups: HashMap<String, Vec<String>>,
    /// Verbs refused per user (upper-case).
    pub user_deny_commands: HashMap<String, Vec<String>>,
    /// Per user: if set, the only verbs accepted once the user is known (plus QUIT).
    pub user_allow_commands: HashMap<String, Vec<String>>,
    /// Users who authenticate at ftpgate, not at the backend.
    pub bastion_users: HashMap<String, auth::BastionUser>,
    /// Permissions of users no path rule names.
    pub default_permissions: Permissions,
    pub login: LoginLimits,
    /// `[defaults]` transfer limits.
    pub default_limits: limits::TransferLimits,
    /// `[users.NAME]` transfer limits.
    pub user_limits: HashMap<String, limits::TransferLimits>,
    /// `[group_limits.NAME]` transfer limits.
    pub group_limits: HashMap<String, limits::TransferLimits>,
}

/// Why a command was refused: the reply code, the rule that decided, and a
/// text for the client and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: u16,
    pub rule: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Allowed if `path` does not exist yet (the user may write but not
    /// overwrite); the session asks the backend, and denies with `denial` if it does.
    AllowIfNew {
        path: Vec<u8>,
        denial: Denial,
    },
    Deny(Denial),
}

/// What the engine needs to know about a session.
#[derive(Debug, Clone)]
pub struct SessionView<'a> {
    pub network: &'a Network,
    /// The control connection is TLS.
    pub tls: bool,
    pub pbsz: bool,
    pub prot_private: bool,
    /// A verified client certificate was presented.
    pub client_cert: bool,
    /// The name sent with USER, if any.
    pub user: Option<&'a str>,
    pub logged_in: bool,
    /// Working directory as the backend reported it.
    pub cwd: &'a [u8],
    /// Verb of the previous command that was accepted.
    pub previous: Option<&'a Verb>,
    /// A PASV/EPSV/PORT/EPRT is waiting for a transfer.
    pub data_ready: bool,
}

/// Commands that make sense before login.
const BEFORE_LOGIN: &[&str] = &[
    "AUTH", "PBSZ", "PROT", "CCC", "USER", "PASS", "ACCT", "FEAT", "QUIT", "SYST", "HELP", "NOOP", "OPTS", "HOST",
    "CLNT", "LANG",
];
/// What may come between REST and the transfer it positions.
const AFTER_REST: &[&str] = &["RETR", "STOR", "APPE", "PASV", "EPSV", "PORT", "EPRT", "TYPE"];

fn deny(code: u16, rule: impl Into<String>, reason: impl Into<String>) -> Verdict {
    Verdict::Deny(Denial { code, rule: rule.into(), reason: reason.into() })
}

impl Policy {
    /// No networks, no rules: everything the protocol allows. Ordering rules
    /// still apply.
    pub fn permissive() -> Policy {
        Policy {
            networks: vec![Network {
                name: "any".into(),
                cidrs: vec!["0.0.0.0/0".parse().expect("literal"), "::/0".parse().expect("literal")],
                allow: true,
                plain_allowed: true,
                tls_before_user: false,
                prot_p_required: false,
                client_cert_required: false,
                deny_commands: vec![],
                allow_commands: None,
                limits: limits::TransferLimits::default(),
            }],
            rules: vec![],
            groups: HashMap::new(),
            user_deny_commands: HashMap::new(),
            user_allow_commands: HashMap::new(),
            bastion_users: HashMap::new(),
            default_permissions: Permissions::all(),
            login: LoginLimits::default(),
            default_limits: limits::TransferLimits::default(),
            user_limits: HashMap::new(),
            group_limits: HashMap::new(),
        }
    }

    /// The transfer limits for `user` connecting from `network`: the user's
    /// own, then the tightest of its groups', the network's, the defaults'.
    pub fn limits_for(&self, user: Option<&str>, network: &Network) -> limits::TransferLimits {
        let own = user.and_then(|u| self.user_limits.get(u)).copied().unwrap_or_default();
        let groups = user
            .map(|u| {
                self.groups
                    .iter()
                    .filter(|(_, members)| members.iter().any(|m| m == u))
                    .filter_map(|(g, _)| self.group_limits.get(g))
                    .fold(limits::TransferLimits::default(), |acc, l| acc.tightest(*l))
            })
            .unwrap_or_default();
        own.or(groups).or(network.limits).or(self.default_limits)
    }

    /// The network a client address belongs to; `None` if none contains it.
    pub fn network_for(&self, ip: IpAddr) -> Option<&Network> {
        let ip = ip.to_canonical();
        self.networks.iter().find(|n| n.cidrs.iter().any(|c| c.contains(&ip)))
    }

    /// Whether a client from `ip` may connect at all, with the rule that decided.
    pub fn admit(&self, ip: IpAddr) -> Result<&Network, Denial> {
        match self.network_for(ip) {
            Some(n) if n.allow => Ok(n),
            Some(n) => Err(Denial {
                code: codes::NOT_AVAILABLE,
                rule: format!("network {}", n.name),
                reason: format!("connections from {ip} are refused"),
            }),
            None => Err(Denial {
                code: codes::NOT_AVAILABLE,
                rule: "networks".into(),
                reason: format!("{ip} is in no allowed network"),
            }),
        }
    }

    /// Permissions of `user` on the resolved `path`, and the rule(s) that gave them.
    pub fn permissions(&self, user: &str, path: &[u8]) -> (Permissions, String) {
        let mut named = false;
        let mut perms = Permissions::NONE;
        let mut why = vec![];
        for r in &self.rules {
            let applies = r.users.iter().any(|u| u == user)
                || r.groups.iter().any(|g| self.groups.get(g).is_some_and(|m| m.iter().any(|u| u == user)));
            if !applies {
                continue;
            }
            named = true;
            if r.paths.iter().any(|p| path::glob_match(p, path)) {
                perms = perms.union(r.allow);
                why.push(r.name.clone());
            }
        }
        if !named {
            return (self.default_permissions, "default".into());
        }
        let rule =
            if why.is_empty() { "rules (no path matched)".to_string() } else { format!("rule {}", why.join(", ")) };
        (perms, rule)
    }

    /// Decides one command.
    pub fn evaluate(&self, v: &SessionView<'_>, cmd: &Command) -> Verdict {
        let verb = cmd.verb.as_str();
        let net = v.network;
        let net_rule = || format!("network {}", net.name);

        let listed = |l: &[String]| verb == "QUIT" || l.iter().any(|d| d == verb);
        if net.deny_commands.iter().any(|d| d == verb) || net.allow_commands.as_deref().is_some_and(|l| !listed(l)) {
            return deny(codes::POLICY_REFUSED, net_rule(), format!("{verb} is not allowed from network {}", net.name));
        }
        if let Some(user) = v.user {
            if self.user_deny_commands.get(user).is_some_and(|l| l.iter().any(|d| d == verb))
                || self.user_allow_commands.get(user).is_some_and(|l| !listed(l))
            {
                return deny(
                    codes::POLICY_REFUSED,
                    format!("user {user}"),
                    format!("{verb} is not allowed for user {user}"),
                );
            }
        }
        if !v.tls && !net.plain_allowed && !crate::protocol::command::ALLOWED_BEFORE_TLS.contains(&verb) {
            return deny(
                codes::POLICY_REFUSED,
                net_rule(),
                format!("plain FTP is not allowed from network {}: use AUTH TLS", net.name),
            );
        }
        if matches!(cmd.verb, Verb::User | Verb::Pass | Verb::Acct) {
            if !v.tls && net.tls_before_user {
                return deny(
                    codes::NOT_LOGGED_IN,
                    net_rule(),
                    format!("TLS required before login from network {}: send AUTH TLS first", net.name),
                );
            }
            if net.client_cert_required && !v.client_cert {
                return deny(
                    codes::NOT_LOGGED_IN,
                    net_rule(),
                    format!("a client certificate is required from network {}", net.name),
                );
            }
        }

        // RFC 959 and RFC 4217 ordering.
        let prev = v.previous.map(Verb::as_str);
        match cmd.verb {
            Verb::Pbsz if !v.tls => {
                return deny(codes::BAD_SEQUENCE, "ordering", "PBSZ requires AUTH TLS first (RFC 4217)")
            }
            Verb::Prot if !v.tls => {
                return deny(codes::BAD_SEQUENCE, "ordering", "PROT requires AUTH TLS first (RFC 4217)")
            }
            Verb::Prot if !v.pbsz => {
                return deny(codes::BAD_SEQUENCE, "ordering", "PROT requires PBSZ first (RFC 4217)")
            }
            Verb::Pass if prev != Some("USER") => {
                return deny(codes::BAD_SEQUENCE, "ordering", "PASS must follow USER")
            }
            _ => {}
        }
        if verb == "RNTO" && prev != Some("RNFR") {
            return deny(codes::BAD_SEQUENCE, "ordering", "RNTO must immediately follow RNFR");
        }
        if prev == Some("REST") && !AFTER_REST.contains(&verb) {
            return deny(codes::BAD_SEQUENCE, "ordering", "REST must be followed by RETR, STOR or APPE");
        }
        if !v.logged_in && !BEFORE_LOGIN.contains(&verb) {
            return deny(codes::NOT_LOGGED_IN, "login", format!("Please log in with USER and PASS before {verb}"));
        }
        let transfer = cmd.verb.transfer_direction().is_some();
        if transfer && !v.data_ready {
            return deny(codes::BAD_SEQUENCE, "ordering", format!("Use PASV, EPSV, PORT or EPRT before {verb}"));
        }
        if transfer && net.prot_p_required && !v.prot_private {
            return Verdict::Deny(Denial {
                code: codes::PROTECTION_REQUIRED,
                rule: net_rule(),
                reason: format!("data connections from network {} must be protected: send PROT P", net.name),
            });
        }

        // Path permissions.
        let Some(user) = v.user.filter(|_| v.logged_in) else { return Verdict::Allow };
        let Some((needed, target)) = needed_permission(v.cwd, cmd) else { return Verdict::Allow };
        let (perms, rule) = self.permissions(user, &target);
        let shown = String::from_utf8_lossy(&target).into_owned();
        let denial = |p: Permission| Denial {
            code: codes::FILE_UNAVAILABLE,
            rule: rule.clone(),
            reason: format!("Permission denied: user {user} may not {} {shown} ({rule})", p.name()),
        };
        match needed {
            Permission::Write if matches!(cmd.verb, Verb::Stor) && !perms.has(Permission::Overwrite) => {
                if perms.has(Permission::Write) {
                    Verdict::AllowIfNew { path: target, denial: denial(Permission::Overwrite) }
                } else {
                    Verdict::Deny(denial(Permission::Write))
                }
            }
            Permission::Overwrite if matches!(cmd.verb, Verb::Appe) && !perms.has(Permission::Overwrite) => {
                // Appending to a new file is writing it.
                if perms.has(Permission::Write) {
                    Verdict::AllowIfNew { path: target, denial: denial(Permission::Overwrite) }
                } else {
                    Verdict::Deny(denial(Permission::Write))
                }
            }
            p if perms.has(p) => Verdict::Allow,
            // A file's size and date are part of reading it (clients ask SIZE
            // before RETR to show progress or resume).
            Permission::List if matches!(verb, "SIZE" | "MDTM" | "MLST") && perms.has(Permission::Read) => {
                Verdict::Allow
            }
            p => Verdict::Deny(denial(p)),
        }
    }
}

/// The permission a command needs and the resolved path it acts on, or `None`
/// for commands that touch no file (navigation, settings, session commands).
pub fn needed_permission(cwd: &[u8], cmd: &Command) -> Option<(Permission, Vec<u8>)> {
    let arg = cmd.arg.as_deref().unwrap_or_default();
    let at = |a: &[u8]| path::resolve(cwd, a);
    let p = match cmd.verb.as_str() {
        "RETR" => (Permission::Read, at(arg)),
        "STOR" => (Permission::Write, at(arg)),
        "APPE" => (Permission::Overwrite, at(arg)),
        "STOU" => (Permission::Write, cwd.to_vec()),
        "LIST" | "NLST" | "MLSD" | "STAT" => {
            if cmd.verb.as_str() == "STAT" && arg.is_empty() {
                return None;
            }
            (Permission::List, at(&strip_list_options(arg)))
        }
        "MLST" | "SIZE" | "MDTM" => (Permission::List, at(arg)),
        "DELE" => (Permission::Delete, at(arg)),
        "RNFR" | "RNTO" => (Permission::Rename, at(arg)),
        "MKD" | "XMKD" => (Permission::Mkdir, at(arg)),
        "RMD" | "XRMD" => (Permission::Rmdir, at(arg)),
        "SITE" => (Permission::Site, cwd.to_vec()),
        // MFMT/MFCT <time> <path>: changes an existing file.
        "MFMT" | "MFCT" | "MFF" => {
            let path = arg.splitn(2, |&b| b == b' ').nth(1).unwrap_or_default();
            (Permission::Overwrite, at(path))
        }
        _ => return None,
    };
    Some(p)
}

/// `LIST -la dir` names `dir`: leading option words are for the server's ls.
fn strip_list_options(arg: &[u8]) -> Vec<u8> {
    let mut rest = arg;
    while rest.first() == Some(&b'-') {
        match rest.iter().position(|&b| b == b' ') {
            Some(i) => rest = &rest[i + 1..],
            None => return Vec::new(),
        }
    }
    rest.to_vec()
}

#[cfg(test)]
mod tests;
