//! The admin subcommands' side: which socket to ask, and the asking.

use super::{AdminArgs, DEFAULT_CONFIG};
use crate::config::Config;
use anyhow::Context;
use std::path::PathBuf;

impl AdminArgs {
    /// `--admin-socket`, else the configuration's `[admin] socket`, else
    /// /run/ftpgate/admin.sock when there is no configuration file at all.
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.admin_socket {
            return Ok(p.clone());
        }
        let path = self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        if self.config.is_none() && !path.exists() {
            return Ok(PathBuf::from(crate::config::DEFAULT_ADMIN_SOCKET));
        }
        let config = Config::load(&path)?;
        config.admin.socket.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no [admin] socket, so the running ftpgate opens none; set one there (or pass --admin-socket)",
                path.display()
            )
        })
    }
}

/// Asks the running instance over its admin socket and prints the answer;
/// an answer that starts with `error:` fails the command.
pub(super) fn admin_request(a: &AdminArgs, request: &str) -> anyhow::Result<()> {
    let socket = a.socket()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(crate::server::admin::ask(&socket, request)).with_context(|| {
        format!(
            "cannot reach ftpgate's admin socket {} (is ftpgate running with [admin] socket or --admin-socket?)",
            socket.display()
        )
    })?;
    if let Some(e) = answer.strip_prefix("error: ") {
        anyhow::bail!("{}", e.trim_end());
    }
    print!("{answer}");
    Ok(())
}
