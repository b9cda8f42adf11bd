//! Command line: `ftpgate run`, `ftpgate check`, `ftpgate certs init`. Flags
//! override the file.

use crate::config::{BackendConfig, BackendTlsMode, ClientTlsMode, Config, ListenerConfig, Settings};
use crate::metrics::Metrics;
use crate::server::SessionContext;
use crate::tls::TlsVersion;
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

mod admin;
mod check;
mod connector;
pub mod malloc;
mod man;
mod placed;

use admin::admin_request;

#[derive(Debug, Parser)]
#[command(
    name = "ftpgate",
    version,
    about = "TLS-terminating FTP/FTPS proxy and bastion",
    long_about = "TLS-terminating FTP/FTPS proxy and bastion. ftpgate sits between FTP clients and an FTP \
                  server: plain, explicit and implicit FTPS clients; control and data relayed through its own \
                  passive ports; the backend leg upgraded to TLS with session reuse, so strict servers accept \
                  legacy clients; a policy engine (command order, TLS per network, per-user paths, bans, bastion \
                  users, limits); Prometheus metrics and a status page.",
    after_help = "Environment:\n  FTPGATE_LOG   log filter (error, warn, info, debug; or per target, e.g. ftpgate::audit=info,warn)\n  NO_COLOR      no colour codes in logs (none are written when stderr is not a terminal)\n  GLIBC_TUNABLES  unset: `run` and `connector` re-execute themselves once with glibc's allocator tuned for relaying (freed memory kept, not faulted in again); set (empty included): used as it is"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the proxy.
    Run(RunArgs),
    /// Validate the configuration (and load its certificates) and print what
    /// ftpgate would listen on.
    Check(CheckArgs),
    /// Certificates for ftpgate's TLS listeners and mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Policy files: validate them, and explain decisions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print an argon2id hash of a password (read from standard input) for a
    /// bastion user's `password` in the policy file.
    Passwd,
    /// Every session of the running instance: user, client, backend, state,
    /// idle time and the running transfer (as ProFTPD's ftpwho).
    Who(AdminArgs),
    /// Addresses banned after failed logins: list them, or lift one ban.
    #[command(subcommand)]
    Bans(BansCommand),
    /// The outbound connector, run inside the private network: dials out to
    /// the edge and carries its backend streams (docs/connectors.md).
    Connector(connector::ConnectorArgs),
    /// Print a shell completion script (bash, zsh, fish, ...) to standard output.
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the ftpgate(1) man page (roff) to standard output, or write it
    /// and one page per subcommand (ftpgate-run.1, ...) into a folder.
    Man {
        /// Write every page into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Print the effective configuration instead of the summary: every
    /// setting after the file, the defaults and the flags, as TOML that
    /// reads back as a configuration file (a Redis password masked).
    #[arg(long)]
    pub print: bool,
}

/// Read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/ftpgate/ftpgate.toml";

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The configuration whose `[admin] socket` to ask (default:
    /// /etc/ftpgate/ftpgate.toml, if it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The running instance's admin socket, overriding the configuration's.
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BansCommand {
    /// Banned addresses and how long each ban lasts.
    List(AdminArgs),
    /// End the ban on ADDR (and forget its failed logins).
    Lift {
        /// The banned client address (IPv4 or IPv6).
        addr: IpAddr,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file (errors name the line) and print a summary.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Print the decision for one command and the rule that made it. The
    /// session is taken as logged in as USER, in the policy's view of cwd `/`,
    /// with a data connection prepared.
    Explain {
        /// The policy file (TOML).
        #[arg(long)]
        policy: PathBuf,
        /// The user the session is logged in as.
        #[arg(long)]
        user: String,
        /// Client address.
        #[arg(long)]
        from: IpAddr,
        /// Whether the control connection (and data, PROT P) is TLS.
        #[arg(long, value_parser = ["yes", "no"], default_value = "no")]
        tls: String,
        /// Whether a client certificate was presented.
        #[arg(long)]
        client_cert: bool,
        /// Working directory.
        #[arg(long, default_value = "/")]
        cwd: String,
        /// The command line, e.g. 'RETR /shared/report.csv'.
        command: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a CA, a server certificate signed by it and, on request, client
    /// certificates for mutual TLS. Private keys are written with mode 0600.
    Init {
        /// Folder to write the PEM files to.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Names for the server certificate: IP addresses or DNS names; repeatable.
        #[arg(long = "name", value_name = "IP|DNS", required = true)]
        names: Vec<String>,
        /// Also make a client certificate with this common name; repeatable.
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Also make a certificate for an outbound connector of this name
        /// (`connector-NAME.pem`/`.key`); repeatable.
        #[arg(long = "connector", value_name = "NAME")]
        connectors: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Key type of every certificate made.
        #[arg(long, value_enum, default_value = "ecdsa")]
        key_type: crate::tls::certs::KeyType,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reuse {
    #[value(alias = "required")]
    Yes,
    #[value(alias = "optional")]
    No,
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
    /// Backend FTP server, HOST[:PORT] (port 21 when left out); repeat for
    /// a pool (`[backend] address` as a list).
    #[arg(long, value_name = "HOST:PORT")]
    pub backend: Vec<String>,
    /// How a pool's backend is chosen at login (`backend.balance`).
    #[arg(long, value_enum)]
    pub balance: Option<crate::config::Balance>,
    /// Client-facing passive port range, MIN-MAX.
    #[arg(long, value_name = "MIN-MAX")]
    pub passive_ports: Option<String>,
    /// Address to announce in 227 replies (behind NAT).
    #[arg(long, value_name = "IP")]
    pub public_address: Option<IpAddr>,
    /// Policy file (TOML): networks, permissions, login limits.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Append one xferlog line per file transfer to this file.
    #[arg(long, value_name = "FILE")]
    pub xferlog: Option<PathBuf>,
    /// Scan every upload with clamd (`unix:PATH` or `tcp:HOST:PORT`) before
    /// the client hears 226 (`[scan] clamd`).
    #[arg(long, value_name = "ADDR")]
    pub scan_clamd: Option<String>,
    /// Scan every upload with an ICAP service (`icap://HOST:PORT/SERVICE`,
    /// `[scan] icap`) instead.
    #[arg(long, value_name = "URL")]
    pub scan_icap: Option<String>,
    /// Every listener expects a PROXY protocol header (from a load balancer).
    #[arg(long)]
    pub proxy_protocol: bool,
    /// A load balancer (CIDR; repeat for several) whose PROXY headers are
    /// believed; required with --proxy-protocol.
    #[arg(long, value_name = "CIDR")]
    pub proxy_from: Vec<ipnet::IpNet>,
    /// Log format on standard error.
    #[arg(long, value_enum)]
    pub log_format: Option<crate::config::LogFormat>,
    /// TLS with clients on every listener.
    #[arg(long, value_enum)]
    pub client_tls: Option<ClientTlsMode>,
    /// ftpgate's certificate chain (PEM) for clients.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Whether client data connections must resume the control session
    /// (`tls.require_session_reuse`; default yes).
    #[arg(long = "require-session-reuse", alias = "client-reuse", value_enum)]
    pub require_session_reuse: Option<Reuse>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: the FTP user name must match the client certificate
    /// (`tls.client_cert_user_match`).
    #[arg(long = "client-cert-user-match", alias = "client-cert-user")]
    pub client_cert_user_match: bool,
    /// TLS towards the backend.
    #[arg(long, value_enum)]
    pub backend_tls: Option<BackendTlsMode>,
    /// CA (PEM) for the backend certificate.
    #[arg(long, value_name = "FILE")]
    pub backend_ca: Option<PathBuf>,
    /// Pin the backend certificate by SHA-256 fingerprint.
    #[arg(long, value_name = "HEX")]
    pub backend_fingerprint: Option<String>,
    /// Name the backend certificate must carry (for IP backends).
    #[arg(long, value_name = "NAME")]
    pub backend_server_name: Option<String>,
    /// Highest TLS version towards the backend (`backend.max_tls_version`).
    #[arg(long = "backend-max-tls-version", alias = "backend-max-tls", value_enum)]
    pub backend_max_tls_version: Option<TlsVersion>,
    /// Do not verify the backend certificate, logged as a warning
    /// (`backend.insecure_skip_verify`).
    #[arg(long = "backend-insecure-skip-verify", alias = "backend-insecure")]
    pub backend_insecure_skip_verify: bool,
    /// Send a PROXY protocol header to the backend on control connections.
    #[arg(long, value_enum, value_name = "VERSION")]
    pub backend_proxy_protocol: Option<crate::config::ProxyVersion>,
    /// Text of ftpgate's own 220 greeting (`[server] banner`).
    #[arg(long, value_name = "TEXT")]
    pub banner: Option<String>,
    /// Seconds a client has to log in before it gets 421 (`timeouts.login`).
    #[arg(long, value_name = "SECONDS")]
    pub login_timeout: Option<u64>,
    /// Unix socket for `ftpgate who` and `ftpgate bans` (`[admin] socket`).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Redis shared by several instances for bans and session counts
    /// (`[cluster] redis`): `redis://HOST:PORT/DB` or `rediss://...`.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Where outbound connectors dial in (`[connectors] listen`).
    #[arg(long, value_name = "ADDR")]
    pub connector_listen: Option<SocketAddr>,
    /// CA whose certificates connectors must present (`[connectors] ca`).
    #[arg(long, value_name = "FILE")]
    pub connector_ca: Option<PathBuf>,
}

impl RunArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        self.config()?.validate().map_err(|e| self.placed(e.into()))
    }

    /// The configuration as the file says it with the flags applied, before
    /// validation: what `check --print` prints.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
                Config::load(std::path::Path::new(DEFAULT_CONFIG))?
            }
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            // A flag never weakens TLS: listeners given by flag take
            // --client-tls, or the mode the file's listeners agree on.
            let tls = match self.client_tls {
                Some(mode) => mode,
                None => {
                    let mut modes: Vec<ClientTlsMode> = config.listeners.iter().map(|l| l.tls).collect();
                    modes.dedup();
                    match modes.as_slice() {
                        [] => ClientTlsMode::Off,
                        [one] => *one,
                        _ => anyhow::bail!(
                            "--listen replaces the configuration's listeners, which use different TLS modes \
                             ({}); say which one the new listeners get with --client-tls",
                            config
                                .listeners
                                .iter()
                                .map(|l| format!("{} {:?}", l.address, l.tls))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
            };
            let proxy_protocol = config.listeners.iter().all(|l| l.proxy_protocol) && !config.listeners.is_empty();
            let proxy_from = config.listeners.first().map(|l| l.proxy_from.clone()).unwrap_or_default();
            config.listeners = self
                .listen
                .iter()
                .map(|&address| ListenerConfig { address, tls, proxy_protocol, proxy_from: proxy_from.clone() })
                .collect();
        }
        if let Some(mode) = self.client_tls {
            config.listeners.iter_mut().for_each(|l| l.tls = mode);
        }
        if self.proxy_protocol {
            config.listeners.iter_mut().for_each(|l| l.proxy_protocol = true);
        }
        if !self.proxy_from.is_empty() {
            config.listeners.iter_mut().for_each(|l| l.proxy_from = self.proxy_from.clone());
        }
        if !self.backend.is_empty() {
            match &mut config.backend {
                Some(existing) => existing.address = self.backend.clone(),
                None => config.backend = Some(BackendConfig::new(self.backend.clone())),
            }
        }
        if let (Some(b), Some(balance)) = (&mut config.backend, self.balance) {
            b.balance = balance;
        }
        if let Some(p) = &self.passive_ports {
            config.passive.ports = p.clone();
        }
        if let Some(ip) = self.public_address {
            config.passive.public_address = Some(ip);
        }
        if let Some(p) = &self.policy {
            config.policy = Some(p.clone());
        }
        if let Some(m) = self.metrics {
            config.metrics.address = Some(m);
        }
        if let Some(x) = &self.xferlog {
            config.logs.xferlog = Some(x.clone());
        }
        if let Some(c) = &self.scan_clamd {
            config.scan.clamd = Some(c.clone());
        }
        if let Some(c) = &self.scan_icap {
            config.scan.icap = Some(c.clone());
        }
        if let Some(b) = &self.banner {
            config.server.banner = Some(b.clone());
        }
        if let Some(t) = self.login_timeout {
            config.timeouts.login = t;
        }
        if let Some(p) = &self.admin_socket {
            config.admin.socket = Some(p.clone());
        }
        if let Some(r) = &self.redis {
            config.cluster.redis = Some(r.clone());
        }
        if let Some(a) = self.connector_listen {
            config.connectors.listen = Some(a);
        }
        if let Some(c) = &self.connector_ca {
            config.connectors.ca = Some(c.clone());
        }
        let t = &mut config.tls;
        t.cert = self.cert.clone().or(t.cert.take());
        t.key = self.key.clone().or(t.key.take());
        t.client_ca = self.client_ca.clone().or(t.client_ca.take());
        t.client_cert_user_match |= self.client_cert_user_match;
        if let Some(r) = self.require_session_reuse {
            t.require_session_reuse = r == Reuse::Yes;
        }
        if let Some(b) = &mut config.backend {
            if let Some(m) = self.backend_tls {
                b.tls = m;
            }
            b.ca = self.backend_ca.clone().or(b.ca.take());
            b.fingerprint = self.backend_fingerprint.clone().or(b.fingerprint.take());
            b.server_name = self.backend_server_name.clone().or(b.server_name.take());
            if let Some(v) = self.backend_max_tls_version {
                b.max_tls_version = v;
            }
            b.insecure_skip_verify |= self.backend_insecure_skip_verify;
            if let Some(v) = self.backend_proxy_protocol {
                b.proxy_protocol = Some(v);
            }
        }
        Ok(config)
    }
}

impl Cli {
    /// Whether `run` asks for JSON logs (flag or file). Logging starts before
    /// the configuration is validated, so a broken file still gets text errors.
    /// `run` and `connector` run for long and move bulk data: they get the
    /// allocator settings of [`malloc`].
    pub fn is_long_running(&self) -> bool {
        matches!(self.command, CliCommand::Run(_) | CliCommand::Connector(_))
    }

    pub fn wants_json_logs(&self) -> bool {
        let CliCommand::Run(args) = &self.command else { return false };
        if let Some(f) = args.log_format {
            return f == crate::config::LogFormat::Json;
        }
        args.config
            .as_deref()
            .and_then(|p| Config::load(p).ok())
            .is_some_and(|c| c.logs.format == crate::config::LogFormat::Json)
    }
}

pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        CliCommand::Check(CheckArgs { run: args, print }) => check::check(&args, print),
        CliCommand::Connector(args) => connector::run(args),
        CliCommand::Run(args) => {
            let settings = args.settings()?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run(settings, args))
        }
        CliCommand::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ftpgate", &mut out);
            print_all(&out)
        }
        CliCommand::Man { dir: None } => {
            let mut out = Vec::new();
            man::main_page(&mut out).context("rendering the man page")?;
            print_all(&out)
        }
        CliCommand::Man { dir: Some(dir) } => {
            for page in man::write_all(&dir).with_context(|| format!("writing the man pages into {}", dir.display()))? {
                println!("wrote {}", page.display());
            }
            Ok(())
        }
        CliCommand::Who(a) => admin_request(&a, "who"),
        CliCommand::Bans(BansCommand::List(a)) => admin_request(&a, "bans"),
        CliCommand::Bans(BansCommand::Lift { addr, admin }) => admin_request(&admin, &format!("lift {addr}")),
        CliCommand::Passwd => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            println!("{}", crate::policy::auth::hash_password(password).map_err(anyhow::Error::msg)?);
            Ok(())
        }
        CliCommand::Policy(PolicyCommand::Check { file }) => {
            let p = crate::policy::Policy::load(&file)?;
            print!("{}", p.summary());
            println!("policy OK");
            Ok(())
        }
        CliCommand::Policy(PolicyCommand::Explain { policy, user, from, tls, client_cert, cwd, command }) => {
            let p = crate::policy::Policy::load(&policy)?;
            let decision = crate::policy::explain::explain(&p, &user, from, tls == "yes", client_cert, &cwd, &command);
            println!("{decision}");
            let limits = p.admit(from).map(|network| p.limits_for(Some(&user), network)).unwrap_or_default();
            if !limits.is_empty() {
                println!("limits for {user}: {limits}");
            }
            // Scripts can test the decision by the exit status.
            anyhow::ensure!(decision.starts_with("ALLOW"), "denied");
            Ok(())
        }
        CliCommand::Certs(CertsCommand::Init { dir, names, clients, connectors, force, key_type }) => {
            for c in &connectors {
                anyhow::ensure!(
                    crate::config::valid_connector_name(c),
                    "--connector {c:?}: 1 to 63 letters, digits, '-', '_' or '.'"
                );
            }
            let who = crate::tls::certs::Holders { clients: &clients, connectors: &connectors };
            let g = crate::tls::certs::init(&dir, &names, who, force, key_type)?;
            for f in g.files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
    }
}

/// The start line the README promises: version, listeners with their TLS
/// modes, backend, metrics and policy.
fn log_start(settings: &Settings) {
    let listeners: Vec<String> = settings
        .listeners
        .iter()
        .map(|l| {
            let proxy = if l.proxy_protocol { "+proxy" } else { "" };
            format!("{} tls={:?}{proxy}", l.address, l.tls).to_lowercase()
        })
        .collect();
    tracing::info!(target: "ftpgate::server",
        version = env!("CARGO_PKG_VERSION"),
        listeners = %listeners.join(", "),
        backend = %settings.backend_pool.join(", "),
        backend_tls = ?settings.backend_tls,
        metrics = %settings.metrics.map_or("off".to_string(), |a| a.to_string()),
        policy = %settings.policy.as_ref().map_or("none".to_string(), |p| p.display().to_string()),
        allocator = malloc::state(),
        "ftpgate starting"
    );
}

async fn run(settings: Settings, args: RunArgs) -> anyhow::Result<()> {
    log_start(&settings);
    let mut listeners = Vec::new();
    for l in &settings.listeners {
        let bound = crate::server::bind(l.address).await.with_context(|| format!("cannot listen on {}", l.address))?;
        listeners.push((bound, l.clone()));
    }
    let metrics_listener = match settings.metrics {
        Some(a) => {
            Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("cannot listen on {a} (metrics)"))?)
        }
        None => None,
    };
    let connector_listener = match &settings.connectors {
        Some(c) => Some((
            tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("cannot listen on {} ([connectors] listen)", c.listen))?,
            crate::connector::edge::acceptor(c).map_err(|e| args.placed(anyhow::anyhow!("connectors: {e}")))?,
        )),
        None => None,
    };
    let ctx = Arc::new(SessionContext::new(settings, Metrics::new()).map_err(|e| args.placed(e.into()))?);
    if let Some((listener, acceptor)) = connector_listener {
        let (connectors, metrics) = (Arc::clone(&ctx.connectors), Arc::clone(&ctx.metrics));
        tokio::spawn(crate::server::connectors::serve(listener, acceptor, connectors, metrics));
    }
    let live = Arc::new(crate::server::LiveContext::new(Arc::clone(&ctx)));
    crate::server::lifecycle::spawn_background(&live);
    if let Some(l) = metrics_listener {
        tokio::spawn(crate::server::exporter::serve(l, Arc::clone(&live)));
    }
    if let Some(path) = &ctx.settings.admin_socket {
        let l = crate::server::admin::bind(path)
            .with_context(|| format!("cannot open the admin socket {} ([admin] socket)", path.display()))?;
        tokio::spawn(crate::server::admin::serve(l, Arc::clone(&live)));
    }
    // SIGHUP reads the file again, with the same command-line overrides.
    let reread = move || args.settings().map_err(|e| format!("{e:#}"));
    crate::server::lifecycle::serve(listeners, live, reread).await;
    Ok(())
}

/// Writes to standard output; a reader that stops early (`| head`) is fine.
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
