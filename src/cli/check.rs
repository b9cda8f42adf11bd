//! `ftpgate check`: validate the configuration, load what it names, and say
//! what ftpgate would do (or print the effective configuration).

use super::RunArgs;
use crate::config::ClientTlsMode;
use crate::metrics::Metrics;
use crate::server::SessionContext;
use anyhow::Context;

pub(super) fn check(args: &RunArgs, print: bool) -> anyhow::Result<()> {
    let config = args.config()?;
    let s = config.validate().map_err(|e| args.placed(e.into()))?;
    if print {
        // The effective configuration in the file's own names, and
        // nothing else on stdout, so it reads back as a configuration
        // file. Keys and passwords live in their files; a password in
        // the Redis URL is masked.
        SessionContext::new(s, Metrics::new()).map_err(|e| args.placed(e.into()))?;
        print!("{}", config.to_toml_masked().context("printing the configuration")?);
        eprintln!("configuration OK");
        return Ok(());
    }
    let describe = |l: &crate::config::ListenerSettings| match l.tls {
        ClientTlsMode::Off => "plain FTP",
        ClientTlsMode::Explicit => "plain FTP or explicit FTPS",
        ClientTlsMode::Required => "explicit FTPS required",
        ClientTlsMode::Implicit => "implicit FTPS",
    };
    for l in &s.listeners {
        let proxy = if l.proxy_protocol { ", PROXY protocol" } else { "" };
        println!("listen {} ({}{proxy})", l.address, describe(l));
    }
    println!("backend {} (TLS: {:?})", s.backend, s.backend_tls);
    println!("{}", crate::server::passive::capacity_line(s.passive_ports, s.max_sessions_per_address));
    if let Some(c) = &s.connectors {
        println!(
            "connectors dial in at {} (certificates from {}; names {})",
            c.listen,
            c.ca.display(),
            c.names.join(", ")
        );
    }
    if let Some(ip) = s.public_address {
        println!("public address {ip}");
    }
    if let Some(p) = &s.policy {
        println!("policy {}", p.display());
    }
    if let Some(m) = s.metrics {
        println!("metrics http://{m}/metrics");
    }
    if let Some(scan) = &s.scan {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        match rt.block_on(crate::server::scan::ping(&scan.scanner, scan.timeout)) {
            Ok(()) => println!("scan: {} reachable", scan.scanner),
            Err(e) => println!("scan: {} NOT reachable: {e}", scan.scanner),
        }
    }
    // Loading the certificates and the policy is part of checking.
    SessionContext::new(s, Metrics::new()).map_err(|e| args.placed(e.into()))?;
    println!("configuration OK");
    Ok(())
}
