//! Command line: `ftpgate run` and `ftpgate check`. Flags override the file.

use crate::config::{BackendConfig, Config, ListenerConfig, Settings};
use crate::metrics::Metrics;
use crate::session::SessionContext;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "ftpgate", version, about = "TLS-terminating FTP/FTPS proxy and bastion")]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the proxy.
    Run(RunArgs),
    /// Validate the configuration and print what ftpgate would listen on.
    Check(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file; flags below override its values.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Client listener address, IPv4 or IPv6 (`[::1]:2121`); repeatable. Replaces
    /// the file's listeners.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Backend FTP server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub backend: Option<String>,
    /// Client-facing passive port range, MIN-MAX.
    #[arg(long, value_name = "MIN-MAX")]
    pub passive_ports: Option<String>,
    /// Address to announce in 227 replies (behind NAT).
    #[arg(long, value_name = "IP")]
    pub public_address: Option<IpAddr>,
}

impl RunArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.listeners = self.listen.iter().map(|&address| ListenerConfig { address }).collect();
        }
        if let Some(b) = &self.backend {
            config.backend = Some(BackendConfig { address: b.clone() });
        }
        if let Some(p) = &self.passive_ports {
            config.passive.ports = p.clone();
        }
        if let Some(ip) = self.public_address {
            config.passive.public_address = Some(ip);
        }
        Ok(config.validate()?)
    }
}

pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        CliCommand::Check(args) => {
            let s = args.settings()?;
            for l in &s.listeners {
                println!("listen {l} (plain FTP)");
            }
            println!("backend {}", s.backend);
            println!("passive ports {}-{}", s.passive_ports.min, s.passive_ports.max);
            if let Some(ip) = s.public_address {
                println!("public address {ip}");
            }
            println!("configuration OK");
            Ok(())
        }
        CliCommand::Run(args) => {
            let settings = args.settings()?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run(settings))
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in &settings.listeners {
        let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(l);
    }
    let ctx = Arc::new(SessionContext { settings: Arc::new(settings), metrics: Metrics::new() });
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
    };
    crate::server::run(listeners, ctx, shutdown).await;
    Ok(())
}
