//! The admin socket: a Unix socket (mode 0600) where `ftpgate who` and
//! `ftpgate bans list|lift` ask the running instance. One request line, one
//! text answer, then the connection closes.

use crate::server::{registry, LiveContext, SessionContext};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

/// The longest request line read.
const MAX_REQUEST: u64 = 256;

/// Admin clients served at once; more are closed at once and counted.
const MAX_ADMIN_CONNECTIONS: usize = 16;
/// Time an admin client has to send its request and read the answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound admin socket; its file is removed when this is dropped (a
/// clean stop leaves nothing behind).
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: std::path::PathBuf,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` with mode 0600. A missing parent folder is made with mode
/// 0700. Refused: a path that exists and is not a socket (it is never
/// deleted), and a socket another live instance answers on (it is never
/// taken over); a stale socket (nobody answers) is replaced.
pub fn bind(path: &Path) -> std::io::Result<AdminSocket> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another running instance answers on {}; refusing to take it over", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(AdminSocket { listener, path: path.to_path_buf() })
}

pub async fn serve(socket: AdminSocket, live: Arc<LiveContext>) {
    static ACCEPT: crate::server::accept::AcceptErrors = crate::server::accept::AcceptErrors::new("admin");
    let listener = &socket.listener;
    crate::server::accept::serve_capped(&ACCEPT, MAX_ADMIN_CONNECTIONS, live, listener, |stream, live| async move {
        match tokio::time::timeout(ADMIN_TIMEOUT, answer(stream, &live)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(target: "ftpgate::server", error = %e, "admin socket request failed"),
            Err(_) => debug!(target: "ftpgate::server", "admin client timed out"),
        }
    })
    .await
}

async fn answer(stream: UnixStream, live: &LiveContext) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST)).read_line(&mut line).await?;
    let ctx = Arc::clone(&live.borrow());
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match words.as_slice() {
        ["who"] => {
            let mut out = registry::render_text(&ctx.registry.rows());
            if let Some(c) = &ctx.cluster {
                let state = if c.reachable() { "reachable" } else { "UNREACHABLE" };
                out.push_str(&format!(
                    "cluster {} {state}: this instance holds {} shared session counts\n",
                    c.settings.address,
                    c.leases.len()
                ));
            }
            out
        }
        ["bans"] => bans(&ctx).await,
        ["lift", addr] => match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => lift(&ctx, ip).await,
            Err(_) => format!("error: {addr:?} is not an IP address\n"),
        },
        _ => "error: unknown request; use who, bans, or lift ADDR\n".to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

/// Bans in force: this instance's, and the cluster's when `[cluster]` is set
/// (an address banned in both is listed once, with the longer time left).
async fn bans(ctx: &SessionContext) -> String {
    let now = ctx.now();
    let mut left: BTreeMap<IpAddr, Duration> = ctx
        .logins
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .banned(now)
        .into_iter()
        .map(|(ip, t)| (ip, t - now))
        .collect();
    let mut out = String::new();
    if let Some(c) = &ctx.cluster {
        match c.bans().await {
            Ok(shared) => {
                for (ip, l) in shared {
                    let e = left.entry(ip).or_default();
                    *e = (*e).max(l);
                }
                out.push_str(&format!(
                    "cluster {} (prefix {}): bans shared by every instance\n",
                    c.settings.address, c.settings.prefix
                ));
            }
            Err(e) => out.push_str(&format!("cluster unreachable ({e}); this instance's bans only\n")),
        }
    }
    let mut rows: Vec<(IpAddr, Duration)> = left.into_iter().collect();
    rows.sort_by_key(|&(ip, l)| (l, ip));
    for (ip, l) in &rows {
        out.push_str(&format!("{ip} banned for {} s more\n", l.as_secs() + 1));
    }
    out.push_str(&format!("{} address(es) banned\n", rows.len()));
    out
}

/// Lifts a ban here and in the cluster.
async fn lift(ctx: &SessionContext, ip: IpAddr) -> String {
    // Bans are kept under the address key (an IPv6 client's prefix).
    let ip = ctx.address_key(ip);
    let mut lifted = ctx.logins.lock().unwrap_or_else(|e| e.into_inner()).lift(ip, ctx.now());
    if let Some(c) = &ctx.cluster {
        match c.lift(ip).await {
            Ok(was) => lifted |= was,
            Err(e) => return format!("error: cluster unreachable ({e}); lifted on this instance only\n"),
        }
    }
    if lifted {
        info!(target: "ftpgate::audit", %ip, "ban lifted by the operator");
        format!("ban on {ip} lifted\n")
    } else {
        info!(target: "ftpgate::audit", %ip, "the operator asked to lift a ban, but the address was not banned");
        format!("error: {ip} was not banned\n")
    }
}

/// The client side, for the CLI: sends `request`, returns the answer.
pub async fn ask(path: &Path, request: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(format!("{request}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await?;
    Ok(out)
}
