//! clamd's `INSTREAM`: the upload in length-prefixed chunks, then the
//! answer `stream: OK` or `stream: NAME FOUND`.
//!
//! Written here rather than taken from the clamav-client crate: each chunk's
//! write and the final answer need their own deadline (a clamd that stops
//! reading must not stall the upload, and its failure must become a verdict
//! per `on_error`), which the crate's one-call stream scan does not offer.

use super::step;
use crate::config::Scanner;
use bytes::Bytes;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The longest answer clamd gives (`stream: NAME FOUND`), with room.
const MAX_ANSWER: usize = 4096;

/// Feeds clamd's `INSTREAM` from `rx` until it closes; `Ok(Some(name))` for
/// a signature found, `Ok(None)` clean, `Err` for anything else.
pub(super) async fn instream(
    clamd: Scanner,
    mut rx: mpsc::Receiver<Bytes>,
    timeout: Duration,
) -> Result<Option<String>, String> {
    let mut conn = tokio::time::timeout(timeout, connect(&clamd))
        .await
        .map_err(|_| format!("connect: no answer within {} s", timeout.as_secs()))?
        .map_err(|e| format!("connect: {e}"))?;
    step("send", timeout, conn.write_all(b"zINSTREAM\0")).await?;
    while let Some(chunk) = rx.recv().await {
        let mut framed = Vec::with_capacity(4 + chunk.len());
        framed.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        framed.extend_from_slice(&chunk);
        // A clamd that stops reading ends the scan (per on_error), never
        // the upload: dropping `rx` stops the tee.
        step("stream", timeout, conn.write_all(&framed)).await?;
    }
    step("end of stream", timeout, conn.write_all(&[0, 0, 0, 0])).await?;
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 512];
        loop {
            let n = conn.read(&mut buf).await?;
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.contains(&0) || answer.len() > MAX_ANSWER {
                return io::Result::Ok(());
            }
        }
    };
    step("answer", timeout, read).await?;
    parse_answer(&answer)
}

/// `stream: OK`, `stream: NAME FOUND`, or an error in clamd's words.
pub fn parse_answer(answer: &[u8]) -> Result<Option<String>, String> {
    let text = String::from_utf8_lossy(answer.split(|b| *b == 0).next().unwrap_or_default()).trim().to_string();
    let shown = crate::text::shown(&text, 200);
    let Some(rest) = text.strip_prefix("stream: ") else {
        return Err(if text.is_empty() { "closed without an answer".into() } else { format!("answered {shown:?}") });
    };
    if rest == "OK" {
        return Ok(None);
    }
    match rest.strip_suffix(" FOUND") {
        Some(name) if !name.is_empty() => Ok(Some(crate::text::shown(name, 200).to_string())),
        _ => Err(format!("answered {shown:?}")),
    }
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn connect(clamd: &Scanner) -> io::Result<Conn> {
    Ok(match clamd {
        Scanner::Unix(p) => Conn::Unix(tokio::net::UnixStream::connect(p).await?),
        Scanner::Tcp(a) => Conn::Tcp(tokio::net::TcpStream::connect(a).await?),
        Scanner::Icap { .. } => return Err(io::Error::other("not a clamd address")),
    })
}

impl Conn {
    async fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.write_all(b).await,
            Conn::Tcp(s) => s.write_all(b).await,
        }
    }

    async fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(b).await,
            Conn::Tcp(s) => s.read(b).await,
        }
    }
}

/// clamd's `PING`.
pub(super) async fn ping(clamd: &Scanner) -> Result<(), String> {
    let mut conn = connect(clamd).await.map_err(|e| format!("connect: {e}"))?;
    conn.write_all(b"zPING\0").await.map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).await.map_err(|e| format!("answer: {e}"))?;
    match &buf[..n] {
        b"PONG\0" => Ok(()),
        other => Err(format!("answered {:?}", String::from_utf8_lossy(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn clamd_answers() {
        assert_eq!(parse_answer(b"stream: OK\0"), Ok(None));
        assert_eq!(
            parse_answer(b"stream: Ftpgate.Test.Sig.UNOFFICIAL FOUND\0"),
            Ok(Some("Ftpgate.Test.Sig.UNOFFICIAL".into()))
        );
        assert!(parse_answer(b"INSTREAM size limit exceeded. ERROR\0").unwrap_err().contains("size limit"));
        assert!(parse_answer(b"").unwrap_err().contains("without an answer"));
        assert!(parse_answer(b"stream:  FOUND\0").is_err());
        assert!(parse_answer(b"garbage\x01\x02").is_err());
    }
}
