//! ftpgate: a TLS-terminating FTP/FTPS proxy and bastion.
//!
//! Layers, each depending only on those before it: [`protocol`] (pure wire
//! format), [`session`] (one client's control channel and data channels),
//! [`server`] (accept loops). [`relay`], [`config`], [`metrics`] and
//! [`passive`] are leaves that know nothing of sessions.

#![deny(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod exporter;
pub mod log_limit;
pub mod metrics;
pub mod passive;
pub mod policy;
pub mod protocol;
pub mod proxy_protocol;
pub mod relay;
pub mod server;
pub mod session;
pub mod systemd;
pub mod text;
pub mod tls;
pub mod tls_options;
pub mod xferlog;
