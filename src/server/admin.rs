//! The admin socket: a Unix socket (mode 0600) where `ftpgate who` and
//! `ftpgate bans list|lift` ask the running instance. One request line, one
//! text answer, then the connection closes.

use crate::session::{registry, LiveContext};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// The longest request line read.
const MAX_REQUEST: u64 = 256;

/// Binds `path` (replacing a stale socket) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, live: Arc<LiveContext>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &live).await {
                warn!(error = %e, "admin socket request failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, live: &LiveContext) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST)).read_line(&mut line).await?;
    let ctx = Arc::clone(&live.borrow());
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match words.as_slice() {
        ["who"] => registry::render_text(&ctx.registry.rows()),
        ["bans"] => {
            let now = ctx.now();
            let bans = ctx.logins.lock().unwrap_or_else(|e| e.into_inner()).banned(now);
            let mut out = String::new();
            for (ip, until) in &bans {
                out.push_str(&format!("{ip} banned for {} s more\n", (*until - now).as_secs() + 1));
            }
            out.push_str(&format!("{} address(es) banned\n", bans.len()));
            out
        }
        ["lift", addr] => match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let lifted = ctx.logins.lock().unwrap_or_else(|e| e.into_inner()).lift(ip, ctx.now());
                info!(target: "ftpgate::audit", %ip, lifted, "ban lifted by the operator");
                if lifted {
                    format!("ban on {ip} lifted\n")
                } else {
                    format!("error: {ip} was not banned\n")
                }
            }
            Err(_) => format!("error: {addr:?} is not an IP address\n"),
        },
        _ => "error: unknown request; use who, bans, or lift ADDR\n".to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

/// The client side, for the CLI: sends `request`, returns the answer.
pub async fn ask(path: &Path, request: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(format!("{request}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await?;
    Ok(out)
}
