//! The policy file format (TOML) and its validation. Errors name the line.

use super::limits::{parse_rate, parse_size, TransferLimits};
use super::{LoginLimits, Network, PathRule, Permission, Permissions, Policy};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use thiserror::Error;
use toml::Spanned;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: line {line}: {message}")]
    Invalid { path: String, line: usize, message: String },
    #[error("users.{user}.backend: no backend named {backend:?} in the configuration ([backends.{backend}])")]
    UnknownBackend { user: String, backend: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    login: Option<LoginFile>,
    #[serde(default)]
    defaults: Option<Defaults>,
    #[serde(default, rename = "network")]
    networks: Vec<NetworkFile>,
    #[serde(default)]
    groups: HashMap<String, Vec<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
    #[serde(default)]
    users: HashMap<String, UserFile>,
    /// Transfer limits per group (`[group_limits.NAME]`).
    #[serde(default)]
    group_limits: HashMap<String, Spanned<LimitsFile>>,
}

/// The transfer-limit keys, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    download_rate: Option<Spanned<String>>,
    upload_rate: Option<Spanned<String>>,
    max_upload_size: Option<Spanned<String>>,
    max_transfers: Option<Spanned<usize>>,
    scan: Option<Spanned<bool>>,
}

/// The limit keys of a table that also has other keys.
macro_rules! limits_of {
    ($t:expr) => {
        LimitsFile {
            download_rate: $t.download_rate.clone(),
            upload_rate: $t.upload_rate.clone(),
            max_upload_size: $t.max_upload_size.clone(),
            max_transfers: $t.max_transfers.clone(),
            scan: $t.scan.clone(),
        }
    };
}

/// Checks and converts the limit keys of `[where_]`.
fn transfer_limits(
    where_: &str,
    l: &LimitsFile,
    err: &impl Fn(usize, String) -> PolicyError,
) -> Result<TransferLimits, PolicyError> {
    let rate = |v: &Option<Spanned<String>>, key: &str| {
        v.as_ref()
            .map(|s| parse_rate(s.get_ref()).map_err(|m| err(s.span().start, format!("{where_}.{key}: {m}"))))
            .transpose()
    };
    let max_upload_size = l
        .max_upload_size
        .as_ref()
        .map(|s| parse_size(s.get_ref()).map_err(|m| err(s.span().start, format!("{where_}.max_upload_size: {m}"))))
        .transpose()?;
    if let Some(n) = &l.max_transfers {
        if *n.get_ref() == 0 {
            return Err(err(
                n.span().start,
                format!("{where_}.max_transfers: must be at least 1 (leave it out for none)"),
            ));
        }
    }
    Ok(TransferLimits {
        download_rate: rate(&l.download_rate, "download_rate")?,
        upload_rate: rate(&l.upload_rate, "upload_rate")?,
        max_upload_size,
        max_transfers: l.max_transfers.as_ref().map(|n| *n.get_ref()),
        scan: l.scan.as_ref().map(|s| *s.get_ref()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginFile {
    max_failures: Option<u32>,
    ban_seconds: Option<u64>,
    max_ban_seconds: Option<u64>,
    max_sessions_per_address: Option<usize>,
    max_sessions_per_user: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    /// Permissions of users that no rule names. Default: all.
    #[serde(default)]
    permissions: Option<Vec<Spanned<String>>>,
    download_rate: Option<Spanned<String>>,
    upload_rate: Option<Spanned<String>>,
    max_upload_size: Option<Spanned<String>>,
    max_transfers: Option<Spanned<usize>>,
    scan: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    name: String,
    cidrs: Vec<Spanned<String>>,
    #[serde(default = "allow")]
    action: Spanned<String>,
    #[serde(default = "yes")]
    plain_allowed: bool,
    #[serde(default)]
    tls_before_user: bool,
    #[serde(default)]
    prot_p_required: bool,
    #[serde(default)]
    client_cert_required: bool,
    #[serde(default)]
    deny_commands: Vec<String>,
    #[serde(default)]
    allow_commands: Option<Vec<String>>,
    download_rate: Option<Spanned<String>>,
    upload_rate: Option<Spanned<String>>,
    max_upload_size: Option<Spanned<String>>,
    max_transfers: Option<Spanned<usize>>,
    scan: Option<Spanned<bool>>,
}

fn allow() -> Spanned<String> {
    Spanned::new(0..0, "allow".to_string())
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    paths: Vec<Spanned<String>>,
    allow: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    #[serde(default)]
    deny_commands: Vec<String>,
    #[serde(default)]
    allow_commands: Option<Vec<String>>,
    /// argon2id hash (`ftpgate passwd`): the user logs in at ftpgate.
    password: Option<Spanned<String>>,
    #[serde(default)]
    client_cert: bool,
    /// A backend named in the configuration's `[backends]`.
    backend: Option<String>,
    backend_user: Option<String>,
    backend_password_env: Option<Spanned<String>>,
    backend_password_file: Option<Spanned<String>>,
    download_rate: Option<Spanned<String>>,
    upload_rate: Option<Spanned<String>>,
    max_upload_size: Option<Spanned<String>>,
    max_transfers: Option<Spanned<usize>>,
    scan: Option<Spanned<bool>>,
}

/// A TOML or schema error as one line naming the file and line; toml's own
/// rendering spans several lines with a caret, which logs and journald break.
fn parse_error(text: &str, path: &str, e: &toml::de::Error) -> PolicyError {
    let message = e.message().trim_end().replace('\n', "; ");
    match e.span() {
        Some(span) => PolicyError::Invalid { path: path.to_string(), line: line_of(text, span.start), message },
        None => PolicyError::Parse { path: path.to_string(), message },
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

fn permissions(
    items: &[Spanned<String>],
    err: &impl Fn(usize, String) -> PolicyError,
) -> Result<Permissions, PolicyError> {
    let mut p = Permissions::NONE;
    for item in items {
        if item.get_ref() == "all" {
            p = Permissions::all();
            continue;
        }
        let perm = Permission::from_name(item.get_ref()).ok_or_else(|| {
            let known: Vec<&str> = Permission::ALL.iter().map(|p| p.name()).collect();
            err(item.span().start, format!("unknown permission {:?}; known: all, {}", item.get_ref(), known.join(", ")))
        })?;
        p = p.with(perm);
    }
    Ok(p)
}

impl Policy {
    pub fn from_toml(text: &str, path: &str) -> Result<Policy, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        let err = |offset: usize, message: String| PolicyError::Invalid {
            path: path.to_string(),
            line: line_of(text, offset),
            message,
        };

        let mut networks = vec![];
        for n in file.networks {
            let mut cidrs = vec![];
            for c in &n.cidrs {
                let net: IpNet = c
                    .get_ref()
                    .parse()
                    .or_else(|_| c.get_ref().parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        err(c.span().start, format!("network {}: {:?} is not a CIDR or address", n.name, c.get_ref()))
                    })?;
                cidrs.push(net);
            }
            let allow = match n.action.get_ref().as_str() {
                "allow" => true,
                "deny" => false,
                other => {
                    return Err(err(
                        n.action.span().start,
                        format!("network {}: action must be allow or deny, not {other:?}", n.name),
                    ))
                }
            };
            let limits = transfer_limits(&format!("network {}", n.name), &limits_of!(n), &err)?;
            networks.push(Network {
                name: n.name,
                cidrs,
                allow,
                plain_allowed: n.plain_allowed,
                tls_before_user: n.tls_before_user,
                prot_p_required: n.prot_p_required,
                client_cert_required: n.client_cert_required,
                deny_commands: upper(&n.deny_commands),
                allow_commands: n.allow_commands.as_deref().map(upper),
                limits,
            });
        }
        if networks.is_empty() {
            networks = Policy::permissive().networks;
        }
        let mut rules = vec![];
        for r in file.rules {
            for g in &r.groups {
                if !file.groups.contains_key(g.get_ref()) {
                    return Err(err(g.span().start, format!("rule {}: unknown group {:?}", r.name, g.get_ref())));
                }
            }
            for p in &r.paths {
                if !p.get_ref().starts_with('/') {
                    return Err(err(
                        p.span().start,
                        format!("rule {}: path {:?} must start with /", r.name, p.get_ref()),
                    ));
                }
            }
            let allow = permissions(&r.allow, &err)?;
            rules.push(PathRule {
                name: r.name,
                users: r.users,
                groups: r.groups.into_iter().map(Spanned::into_inner).collect(),
                paths: r.paths.into_iter().map(|p| p.into_inner().into_bytes()).collect(),
                allow,
            });
        }
        let default_permissions = match file.defaults.as_ref().and_then(|d| d.permissions.as_ref()) {
            Some(p) => permissions(p, &err)?,
            None => Permissions::all(),
        };
        let default_limits = match &file.defaults {
            Some(d) => transfer_limits("defaults", &limits_of!(d), &err)?,
            None => TransferLimits::default(),
        };
        let mut user_limits = HashMap::new();
        for (name, u) in &file.users {
            let l = transfer_limits(&format!("users.{name}"), &limits_of!(u), &err)?;
            if !l.is_empty() {
                user_limits.insert(name.clone(), l);
            }
        }
        let mut group_limits = HashMap::new();
        for (name, g) in &file.group_limits {
            if !file.groups.contains_key(name) {
                return Err(err(g.span().start, format!("group_limits.{name}: no such group in [groups]")));
            }
            group_limits.insert(name.clone(), transfer_limits(&format!("group_limits.{name}"), g.get_ref(), &err)?);
        }
        let d = LoginLimits::default();
        let login = match file.login {
            Some(l) => LoginLimits {
                max_failures: l.max_failures.unwrap_or(d.max_failures),
                ban_seconds: l.ban_seconds.unwrap_or(d.ban_seconds),
                max_ban_seconds: l.max_ban_seconds.unwrap_or(d.max_ban_seconds),
                max_sessions_per_address: l.max_sessions_per_address.unwrap_or(0),
                max_sessions_per_user: l.max_sessions_per_user.unwrap_or(0),
            },
            None => d,
        };
        let mut bastion_users = HashMap::new();
        for (name, u) in &file.users {
            let Some(hash) = &u.password else { continue };
            if !super::auth::valid_hash(hash.get_ref()) {
                return Err(err(
                    hash.span().start,
                    format!("users.{name}.password: not an argon2id hash (use `ftpgate passwd`)"),
                ));
            }
            let backend_user = u.backend_user.clone().unwrap_or_else(|| name.clone());
            let secret = match (&u.backend_password_env, &u.backend_password_file) {
                (Some(var), None) => std::env::var(var.get_ref()).map_err(|_| {
                    err(
                        var.span().start,
                        format!("users.{name}.backend_password_env: variable {} is not set", var.get_ref()),
                    )
                })?,
                (None, Some(f)) => {
                    std::fs::read_to_string(f.get_ref()).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(
                        |e| err(f.span().start, format!("users.{name}.backend_password_file: {}: {e}", f.get_ref())),
                    )?
                }
                _ => {
                    return Err(err(
                        hash.span().start,
                        format!("users.{name}: set exactly one of backend_password_env, backend_password_file"),
                    ))
                }
            };
            bastion_users.insert(
                name.clone(),
                super::auth::BastionUser {
                    password_hash: hash.get_ref().clone(),
                    client_cert: u.client_cert,
                    backend: u.backend.clone(),
                    backend_user,
                    backend_password: super::auth::Secret::new(secret),
                },
            );
        }
        Ok(Policy {
            networks,
            rules,
            groups: file.groups,
            bastion_users,
            user_deny_commands: file.users.iter().map(|(u, f)| (u.clone(), upper(&f.deny_commands))).collect(),
            user_allow_commands: file
                .users
                .iter()
                .filter_map(|(u, f)| f.allow_commands.as_deref().map(|l| (u.clone(), upper(l))))
                .collect(),
            default_permissions,
            login,
            default_limits,
            user_limits,
            group_limits,
        })
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.display().to_string(), source })?;
        Policy::from_toml(&text, &path.display().to_string())
    }

    /// A short description for `ftpgate policy check`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for n in &self.networks {
            let cidrs: Vec<String> = n.cidrs.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "network {}: {} {} (plain {}, TLS before USER {}, PROT P required {}, client cert required {}{})\n",
                n.name,
                if n.allow { "allow" } else { "deny" },
                cidrs.join(" "),
                yn(n.plain_allowed),
                yn(n.tls_before_user),
                yn(n.prot_p_required),
                yn(n.client_cert_required),
                if n.deny_commands.is_empty() {
                    String::new()
                } else {
                    format!(", denies {}", n.deny_commands.join(" "))
                }
            ));
        }
        for r in &self.rules {
            let paths: Vec<String> = r.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
            let who: Vec<String> =
                r.users.iter().cloned().chain(r.groups.iter().map(|g| format!("group {g}"))).collect();
            out.push_str(&format!("rule {}: {} may {} on {}\n", r.name, who.join(", "), r.allow, paths.join(" ")));
        }
        out.push_str(&format!("users no rule names may: {}\n", self.default_permissions));
        let mut bastion: Vec<_> = self.bastion_users.iter().collect();
        bastion.sort_by(|a, b| a.0.cmp(b.0));
        for (name, u) in bastion {
            out.push_str(&format!(
                "user {name}: logs in at ftpgate{}, mapped to {} on backend {}\n",
                if u.client_cert { " with a client certificate" } else { "" },
                u.backend_user,
                u.backend.as_deref().unwrap_or("(default)")
            ));
        }
        if !self.default_limits.is_empty() {
            out.push_str(&format!("default limits: {}\n", self.default_limits));
        }
        for n in self.networks.iter().filter(|n| !n.limits.is_empty()) {
            out.push_str(&format!("network {} limits: {}\n", n.name, n.limits));
        }
        let mut groups: Vec<_> = self.group_limits.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        for (g, l) in groups {
            out.push_str(&format!("group {g} limits: {l}\n"));
        }
        let mut users: Vec<_> = self.user_limits.iter().collect();
        users.sort_by(|a, b| a.0.cmp(b.0));
        for (u, l) in users {
            out.push_str(&format!("user {u} limits: {l}\n"));
        }
        let l = &self.login;
        out.push_str(&format!(
            "login: ban after {} failures for {}s (doubling, max {}s); sessions per address {}, per user {}\n",
            l.max_failures,
            l.ban_seconds,
            l.max_ban_seconds,
            limit(l.max_sessions_per_address),
            limit(l.max_sessions_per_user)
        ));
        out
    }
}

fn upper(verbs: &[String]) -> Vec<String> {
    verbs.iter().map(|c| c.to_ascii_uppercase()).collect()
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn limit(n: usize) -> String {
    if n == 0 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}
