//! `ftpgate connector`: the outbound connector's command line and its
//! `[connector]` file; flags override the file.

use crate::config::{ConnectorConfig, ConnectorFile};
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ConnectorArgs {
    /// A TOML file with a `[connector]` section; flags override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The edge's connector listener, HOST:PORT (`connector.edge`).
    #[arg(long, value_name = "HOST:PORT")]
    pub edge: Option<String>,
    /// The name the edge's certificate must carry (default: the host of --edge).
    #[arg(long, value_name = "NAME")]
    pub edge_name: Option<String>,
    /// Pin the edge's certificate by SHA-256 fingerprint instead of --ca.
    #[arg(long, value_name = "HEX")]
    pub edge_fingerprint: Option<String>,
    /// This connector's name; its certificate must carry it.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The FTP server's control address, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub backend: Option<String>,
    /// The backend's passive ports, MIN-MAX (default: any port of the backend host).
    #[arg(long, value_name = "MIN-MAX")]
    pub backend_ports: Option<String>,
    /// This connector's certificate (PEM), from `ftpgate certs init --connector NAME`.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA (PEM) for the edge's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// TLS connections to the edge (default 2).
    #[arg(long, value_name = "N")]
    pub links: Option<usize>,
    /// Serve /metrics, /healthz and /readyz here (the only port it listens on).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Seconds a stop (SIGTERM) waits for open streams (default 30).
    #[arg(long, value_name = "SECONDS")]
    pub drain: Option<u64>,
}

impl ConnectorArgs {
    fn config(&self) -> anyhow::Result<ConnectorConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
                toml::from_str::<ConnectorFile>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    .connector
            }
            None => ConnectorConfig::default(),
        };
        let o = |flag: &Option<String>, file: &mut Option<String>| {
            if flag.is_some() {
                *file = flag.clone();
            }
        };
        o(&self.edge, &mut c.edge);
        o(&self.edge_name, &mut c.edge_name);
        o(&self.edge_fingerprint, &mut c.edge_fingerprint);
        o(&self.name, &mut c.name);
        o(&self.backend, &mut c.backend);
        o(&self.backend_ports, &mut c.backend_ports);
        c.cert = self.cert.clone().or(c.cert);
        c.key = self.key.clone().or(c.key);
        c.ca = self.ca.clone().or(c.ca);
        c.links = self.links.or(c.links);
        c.metrics = self.metrics.or(c.metrics);
        if let Some(d) = self.drain {
            c.drain = d;
        }
        Ok(c)
    }
}

pub(super) fn run(args: ConnectorArgs) -> anyhow::Result<()> {
    let settings = args.config()?.validate().map_err(|(field, message)| {
        let file = args.config.as_ref().map_or(String::new(), |p| format!("{}: ", p.display()));
        anyhow::anyhow!("{file}{field}: {message}")
    })?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop_tx.send(true);
        });
        crate::connector::agent::run(settings, stop).await.map_err(anyhow::Error::from)
    })
}
