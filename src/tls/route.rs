//! Telling apart the TLS data connections of several sessions that share one
//! passive port and one client address (an office NAT): the connection's
//! handshake resumes the session it belongs to.
//!
//! Each session keeps its own ticket key and session cache (see
//! [`super::ServerTls::for_session`]), so a ticket only ever resumes the
//! session that issued it. The routing configuration built here for one
//! incoming connection asks each candidate session's ticket key and cache in
//! turn and remembers which one knew the ticket (or TLS 1.2 session id); a
//! fresh handshake, or a ticket of a session that is not a candidate, matches
//! none. rustls' own `received_resumption_data` would do the same for TLS 1.3
//! with one shared key, but it is not filled in for TLS 1.2 resumption, and a
//! shared key would let one session's ticket resume another's everywhere.

use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::ServerConfig;
use std::sync::{Arc, Mutex};

/// Which candidate, by index, knew the ticket or session id the client
/// offered. Filled during the handshake; read once it is over.
#[derive(Debug, Default)]
pub struct Matched(Mutex<Option<usize>>);

impl Matched {
    pub fn get(&self) -> Option<usize> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, i: usize) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(i);
    }
}

/// A configuration for one data connection whose session is one of
/// `candidates` (each a session's data configuration): resumption looks in
/// every candidate's ticket key and cache, and no ticket or session is
/// issued (which session would it belong to?).
pub fn routing_config(candidates: &[Arc<ServerConfig>]) -> Option<(Arc<ServerConfig>, Arc<Matched>)> {
    let first = candidates.first()?;
    let matched = Arc::new(Matched::default());
    let mut config = (**first).clone();
    config.ticketer = Arc::new(RoutingTickets {
        keys: candidates.iter().map(|c| Arc::clone(&c.ticketer)).collect(),
        matched: Arc::clone(&matched),
    });
    config.session_storage = Arc::new(RoutingSessions {
        caches: candidates.iter().map(|c| Arc::clone(&c.session_storage)).collect(),
        matched: Arc::clone(&matched),
    });
    config.send_tls13_tickets = 0;
    Some((Arc::new(config), matched))
}

#[derive(Debug)]
struct RoutingTickets {
    keys: Vec<Arc<dyn ProducesTickets>>,
    matched: Arc<Matched>,
}

impl ProducesTickets for RoutingTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.keys.first().map_or(0, |k| k.lifetime())
    }

    /// No tickets from a routed connection: they would resume no session.
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    /// AEAD under each candidate's key; a ticket opens under at most one
    /// (each session's key is random), so the first that opens it is the
    /// session that issued it.
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.keys.iter().enumerate().find_map(|(i, k)| {
            let plain = k.decrypt(cipher)?;
            self.matched.set(i);
            Some(plain)
        })
    }
}

#[derive(Debug)]
struct RoutingSessions {
    caches: Vec<Arc<dyn StoresServerSessions>>,
    matched: Arc<Matched>,
}

impl StoresServerSessions for RoutingSessions {
    /// Sessions from a routed handshake belong to no control connection.
    fn put(&self, _key: Vec<u8>, _value: Vec<u8>) -> bool {
        false
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.caches.iter().enumerate().find_map(|(i, c)| {
            let v = c.get(key)?;
            self.matched.set(i);
            Some(v)
        })
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.caches.iter().enumerate().find_map(|(i, c)| {
            let v = c.take(key)?;
            self.matched.set(i);
            Some(v)
        })
    }

    fn can_cache(&self) -> bool {
        true
    }
}
