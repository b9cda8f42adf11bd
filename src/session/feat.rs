//! `FEAT` filtering (RFC 2389): the client must never be offered a feature
//! ftpgate cannot carry. Features that only change what travels inside the
//! control or data stream pass; those that need ftpgate's cooperation (TLS
//! negotiation, which ftpgate terminates itself) are replaced by ftpgate's own.

use crate::protocol::codes;
use crate::protocol::Reply;
use std::sync::RwLock;

/// Features ftpgate relays transparently when the backend offers them. Matched
/// on the first word, case-insensitively.
const CARRIED: &[&str] =
    &["MDTM", "MFMT", "MFCT", "MFF", "MLST", "SIZE", "REST", "TVFS", "UTF8", "LANG", "CLNT", "HOST"];

/// Features ftpgate implements itself whatever the backend says.
const OWN: &[&str] = &["EPRT", "EPSV", "PASV"];

/// Builds the client's `211` reply from the backend's. A backend error reply is
/// returned unchanged.
pub fn filter(backend: &Reply, extra: &[&str]) -> Reply {
    if backend.code != codes::FEATURES {
        return backend.clone();
    }
    let n = backend.lines.len();
    let mut features: Vec<String> = OWN.iter().chain(extra).map(|f| format!(" {f}")).collect();
    for line in backend.lines.iter().take(n.saturating_sub(1)).skip(1) {
        let text = String::from_utf8_lossy(line);
        let word = text.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        if CARRIED.contains(&word.as_str()) {
            // REST is only carried in stream mode.
            if word == "REST" && !text.to_ascii_uppercase().contains("STREAM") {
                continue;
            }
            features.push(format!(" {}", text.trim()));
        }
    }
    let mut lines = vec!["Features:".to_string()];
    lines.extend(features);
    lines.push("End".to_string());
    Reply::new(crate::protocol::codes::FEATURES, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_carried_drops_tls_adds_own() {
        let vsftpd = Reply::new(
            211,
            &[
                "Features:",
                " AUTH TLS",
                " EPRT",
                " EPSV",
                " MDTM",
                " PASV",
                " PBSZ",
                " PROT",
                " REST STREAM",
                " SIZE",
                " TVFS",
                " UTF8",
                " MODE Z",
                "End",
            ],
        );
        let out = String::from_utf8(filter(&vsftpd, &[]).raw.to_vec()).unwrap();
        assert_eq!(out, "211-Features:\r\n EPRT\r\n EPSV\r\n PASV\r\n MDTM\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n");
    }

    #[test]
    fn errors_pass() {
        let r = Reply::single(502, "no");
        assert_eq!(filter(&r, &[]), r);
    }
}

/// The most recent `FEAT` reply of the default backend, learnt by a probe at
/// start and on reload and refreshed by every logged-in session's `FEAT`.
/// Before login, `FEAT` is answered from it.
#[derive(Debug, Default)]
pub struct FeatCache(RwLock<Option<Reply>>);

impl FeatCache {
    pub fn get(&self) -> Option<Reply> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, reply: &Reply) {
        if reply.code == codes::FEATURES {
            *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(reply.clone());
        }
    }
}
