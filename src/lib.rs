//! ftpgate: a TLS-terminating FTP/FTPS proxy and bastion.
//!
//! Layers, each depending only on those before it: [`protocol`] (pure wire
//! format), [`policy`] (pure decisions), [`session`] (the control channel as
//! a state machine with no I/O), [`server`] (sockets, TLS streams, data
//! channels, timers, lifecycle). [`relay`], [`tls`], [`config`] and
//! [`metrics`] are leaves that know nothing of sessions. The map of the
//! whole house is `docs/ARCHITECTURE.md`.

#![deny(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod connector;
pub mod log_limit;
pub mod metrics;
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
