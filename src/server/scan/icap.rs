//! An ICAP `REQMOD` (RFC 3507) for an upload: the file as the body of an
//! HTTP `PUT`, in chunks as it arrives, after a preview. Tested against
//! c-icap with virus_scan in front of clamd.
//!
//! A small client of our own: the ICAP crates found (icap-rs and others)
//! buffer the whole body or speak only OPTIONS; an upload must stream with
//! bounded memory and a deadline per step.

use super::step;
use crate::config::Scanner;
use bytes::Bytes;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Bytes sent as the preview (RFC 3507 4.5): enough for a service to decide
/// by the file's type, little enough to hold.
const PREVIEW: usize = 4096;

/// An ICAP response head larger than this is nonsense.
const MAX_HEAD: usize = 64 * 1024;

/// Why `scanner` is not an ICAP service; never happens (callers match).
fn parts(scanner: &Scanner) -> io::Result<(&str, u16, &str)> {
    match scanner {
        Scanner::Icap { host, port, service } => Ok((host, *port, service)),
        _ => Err(io::Error::other("not an ICAP service")),
    }
}

async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await
}

/// `OPTIONS`: the service exists and answers `200`.
pub(super) async fn options(scanner: &Scanner) -> Result<(), String> {
    let (host, port, service) = parts(scanner).map_err(|e| e.to_string())?;
    let mut conn = connect(host, port).await.map_err(|e| format!("connect: {e}"))?;
    let req =
        format!("OPTIONS icap://{host}:{port}/{service} ICAP/1.0\r\nHost: {host}\r\nEncapsulated: null-body=0\r\n\r\n");
    conn.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let head = read_head(&mut conn).await.map_err(|e| format!("answer: {e}"))?;
    match status(&head) {
        Some(200) => Ok(()),
        _ => Err(format!("answered {:?}", crate::text::shown(first_line(&head), 200))),
    }
}

/// Streams the upload from `rx` and returns `Ok(Some(threat))` when the
/// service blocked it, `Ok(None)` when it let it through (`204`, or `200`
/// with the request unchanged), `Err` for anything else.
pub(super) async fn reqmod(
    scanner: Scanner,
    mut rx: mpsc::Receiver<Bytes>,
    timeout: Duration,
) -> Result<Option<String>, String> {
    let (host, port, service) = parts(&scanner).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(timeout, connect(host, port))
        .await
        .map_err(|_| format!("connect: no answer within {} s", timeout.as_secs()))?
        .map_err(|e| format!("connect: {e}"))?;
    // The upload as an HTTP PUT: services that scan uploads look at request bodies.
    let http = "PUT /upload HTTP/1.1\r\nHost: ftpgate\r\n\r\n";
    let head = format!(
        "REQMOD icap://{host}:{port}/{service} ICAP/1.0\r\nHost: {host}\r\nAllow: 204\r\nPreview: {PREVIEW}\r\n\
         Encapsulated: req-hdr=0, req-body={}\r\n\r\n{http}",
        http.len()
    );
    step("send", timeout, conn.write_all(head.as_bytes())).await?;
    // The preview: the first PREVIEW bytes, or the whole upload if shorter.
    let mut preview = Vec::with_capacity(PREVIEW);
    let mut rest: Option<Bytes> = None;
    let mut ended = false;
    while preview.len() < PREVIEW {
        match rx.recv().await {
            Some(chunk) => {
                let take = (PREVIEW - preview.len()).min(chunk.len());
                preview.extend_from_slice(&chunk[..take]);
                if take < chunk.len() {
                    rest = Some(chunk.slice(take..));
                }
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let mut framed = chunked(&preview);
    framed.extend_from_slice(if ended { b"0; ieof\r\n\r\n" } else { b"0\r\n\r\n" });
    step("preview", timeout, conn.write_all(&framed)).await?;
    if !ended {
        let head = within(timeout, read_head(&mut conn)).await?;
        match status(&head) {
            Some(100) => {}
            // Decided on the preview.
            _ => return verdict(&head),
        }
        if let Some(r) = rest {
            step("stream", timeout, conn.write_all(&chunked(&r))).await?;
        }
        while let Some(chunk) = rx.recv().await {
            // A service that stops reading ends the scan (per on_error),
            // never the upload: dropping `rx` stops the tee.
            step("stream", timeout, conn.write_all(&chunked(&chunk))).await?;
        }
        step("end of stream", timeout, conn.write_all(b"0\r\n\r\n")).await?;
    }
    let head = within(timeout, read_head(&mut conn)).await?;
    verdict(&head)
}

fn chunked(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

async fn within<T>(timeout: Duration, f: impl std::future::Future<Output = io::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("answer: {e}")),
        Err(_) => Err(format!("answer: none within {} s", timeout.as_secs())),
    }
}

/// The response's status line and headers, up to the blank line; what
/// follows (an encapsulated response) is not needed.
async fn read_head(conn: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(String::from_utf8_lossy(&head).into_owned());
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("response head too long"));
        }
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed without a complete answer"));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

fn first_line(head: &str) -> &str {
    head.lines().next().unwrap_or_default()
}

fn status(head: &str) -> Option<u16> {
    let mut words = first_line(head).split_whitespace();
    match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("ICAP/1.") => code.parse().ok(),
        _ => None,
    }
}

/// `204`: unmodified. `200` with `X-Infection-Found` or `X-Virus-ID`:
/// blocked, with the threat's name; `200` with a response in place of the
/// request (`res-hdr`, a block page): blocked. `200` carrying the request
/// back (`req-hdr`): the service rewrote it, or streams it before judging it
/// (c-icap's virus_scan outside `mode=simple`), so no verdict: an error.
/// Anything else: an error.
pub(super) fn verdict(head: &str) -> Result<Option<String>, String> {
    let shown = || crate::text::shown(first_line(head), 200).to_string();
    match status(head) {
        Some(204) => Ok(None),
        Some(200) => {
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
                    .map(|(_, v)| v.trim().to_string())
            };
            let threat = header("X-Infection-Found")
                .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("Threat=").map(str::to_string)))
                .filter(|t| !t.is_empty())
                .or_else(|| header("X-Virus-ID"));
            if let Some(threat) = threat {
                return Ok(Some(crate::text::shown(&threat, 200).to_string()));
            }
            match header("Encapsulated") {
                Some(e) if e.contains("res-hdr") => Ok(Some("blocked by the ICAP service".to_string())),
                _ => Err("the ICAP service sent the upload back instead of a verdict (204 for clean files): use a \
                          service mode that judges whole files, e.g. c-icap virus_scan mode=simple"
                    .to_string()),
            }
        }
        Some(code) => Err(format!("ICAP status {code}: {}", shown())),
        None => Err(format!("answered {:?}", shown())),
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn icap_answers() {
        assert_eq!(verdict("ICAP/1.0 204 Unmodified\r\nServer: C-ICAP/0.5.10"), Ok(None));
        let blocked =
            "ICAP/1.0 200 OK\r\nX-Infection-Found: Type=0; Resolution=2; Threat=Ftpgate.Test.Sig.UNOFFICIAL;\r\n\
                       X-Violations-Found: 1\r\nEncapsulated: res-hdr=0, res-body=108";
        assert_eq!(verdict(blocked), Ok(Some("Ftpgate.Test.Sig.UNOFFICIAL".into())));
        assert_eq!(
            verdict("ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0"),
            Ok(Some("blocked by the ICAP service".into()))
        );
        assert!(verdict("ICAP/1.0 500 Server error").unwrap_err().contains("500"));
        assert!(verdict("HTTP/1.1 200 OK").is_err());
        assert!(verdict("\u{1}\u{2}garbage").is_err());
    }
}
