//! FTP replies (RFC 959 section 4.2) and an incremental parser for the backend side.
//!
//! A reply is `ddd text CRLF`, or a multi-line reply that opens with `ddd-text`
//! and ends at the first line that starts with the same code and a space. Inner
//! lines may start with anything, digits included, so only that exact terminator
//! ends the reply. The parser keeps the raw bytes so replies ftpgate does not
//! change are forwarded exactly as the backend sent them.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Longest single reply line accepted from a backend.
pub const MAX_REPLY_LINE: usize = 8 * 1024;
/// Largest whole reply accepted from a backend. `STAT <dir>` answers with a
/// directory listing on the control connection, so this is generous but bounded.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text of each line: for the first and last line without the `ddd-`/`ddd `
    /// prefix, inner lines verbatim. Never empty.
    pub lines: Vec<Vec<u8>>,
    /// The reply exactly as received or formatted, CRLFs included.
    pub raw: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("reply line does not start with a three-digit code")]
    BadCode,
    #[error("reply line longer than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
    #[error("reply longer than {MAX_REPLY_BYTES} bytes")]
    TooLong,
}

impl Reply {
    /// A single- or multi-line reply from text lines. Inner lines that start with
    /// a digit get a leading space so they cannot end the reply early.
    pub fn new<L: AsRef<[u8]>>(code: u16, lines: &[L]) -> Reply {
        assert!((100..600).contains(&code), "reply code {code} out of range");
        let lines: Vec<Vec<u8>> =
            if lines.is_empty() { vec![Vec::new()] } else { lines.iter().map(|l| sanitize_line(l.as_ref())).collect() };
        let mut raw = Vec::new();
        let n = lines.len();
        for (i, line) in lines.iter().enumerate() {
            if i == 0 || i == n - 1 {
                raw.extend_from_slice(format!("{code}{}", if i == n - 1 { ' ' } else { '-' }).as_bytes());
            } else if line.first().is_some_and(|b| b.is_ascii_digit()) {
                raw.push(b' ');
            }
            raw.extend_from_slice(line);
            raw.extend_from_slice(b"\r\n");
        }
        let mut stored = lines;
        // Keep `lines` equal to what a parser of `raw` would yield.
        for l in stored.iter_mut().take(n.saturating_sub(1)).skip(1) {
            if l.first().is_some_and(|b| b.is_ascii_digit()) {
                l.insert(0, b' ');
            }
        }
        Reply { code, lines: stored, raw: Bytes::from(raw) }
    }

    /// A one-line reply.
    pub fn single(code: u16, text: &str) -> Reply {
        Reply::new(code, &[text])
    }

    /// First line's text, lossily decoded, for logs and for parsing 227/229.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines[0]).into_owned()
    }

    pub fn is_preliminary(&self) -> bool {
        (100..200).contains(&self.code)
    }
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// Replies are built from our own constants and relayed text; a CR or LF inside
/// a line would let that text forge extra replies, so it becomes a space.
fn sanitize_line(line: &[u8]) -> Vec<u8> {
    line.iter().map(|&b| if b == b'\r' || b == b'\n' || b == 0 { b' ' } else { b }).collect()
}

/// Incremental reply parser. Feed it the connection's read buffer after every
/// read; it returns `Ok(None)` until a whole reply is present and remembers how
/// far it has scanned so a long multi-line reply is not rescanned per read.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// Code of the multi-line reply in progress and the offset scanned so far.
    pending: Option<(u16, usize)>,
}

fn line_code(line: &[u8]) -> Option<u16> {
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&line[0]) {
        return None;
    }
    Some(u16::from(line[0] - b'0') * 100 + u16::from(line[1] - b'0') * 10 + u16::from(line[2] - b'0'))
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Splits one complete reply off the front of `buf`, if there is one.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        loop {
            let (code, start) = match self.pending {
                Some(p) => p,
                None => {
                    let Some(end) = memchr_lf(buf, 0) else {
                        if buf.len() > MAX_REPLY_LINE {
                            return Err(ReplyError::LineTooLong);
                        }
                        return check_partial(buf.len());
                    };
                    let first = strip_eol(&buf[..=end]);
                    if end >= MAX_REPLY_LINE {
                        return Err(ReplyError::LineTooLong);
                    }
                    let code = line_code(first).ok_or(ReplyError::BadCode)?;
                    match first.get(3) {
                        Some(b'-') => {
                            self.pending = Some((code, end + 1));
                            continue;
                        }
                        None | Some(b' ') => return Ok(Some(split_reply(buf, code, end + 1))),
                        Some(_) => return Err(ReplyError::BadCode),
                    }
                }
            };
            let Some(end) = memchr_lf(buf, start) else {
                if buf.len() - start > MAX_REPLY_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                return check_partial(buf.len());
            };
            if end - start >= MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            if end + 1 > MAX_REPLY_BYTES {
                return Err(ReplyError::TooLong);
            }
            let line = strip_eol(&buf[start..=end]);
            let is_last = line_code(line) == Some(code) && (line.len() == 3 || line[3] == b' ');
            if is_last {
                self.pending = None;
                return Ok(Some(split_reply(buf, code, end + 1)));
            }
            self.pending = Some((code, end + 1));
        }
    }
}

fn check_partial(len: usize) -> Result<Option<Reply>, ReplyError> {
    if len > MAX_REPLY_BYTES {
        Err(ReplyError::TooLong)
    } else {
        Ok(None)
    }
}

fn memchr_lf(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..].iter().position(|&b| b == b'\n').map(|i| i + from)
}

fn split_reply(buf: &mut BytesMut, code: u16, len: usize) -> Reply {
    let raw = buf.split_to(len).freeze();
    let mut lines: Vec<Vec<u8>> = raw.split_inclusive(|&b| b == b'\n').map(|l| strip_eol(l).to_vec()).collect();
    let n = lines.len();
    for (i, line) in lines.iter_mut().enumerate() {
        if i == 0 || i == n - 1 {
            line.drain(..line.len().min(4));
        }
    }
    Reply { code, lines, raw }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Vec<Reply> {
        let mut p = ReplyParser::new();
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        while let Some(r) = p.parse(&mut buf).unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn single_line() {
        let r = parse_all(b"220 (vsFTPd 3.0.3)\r\n");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 220);
        assert_eq!(r[0].text(), "(vsFTPd 3.0.3)");
    }

    #[test]
    fn multi_line_with_inner_digits() {
        let input =
            b"211-Features:\r\n EPSV\r\n211-not the end\r\n211x nor this\r\n200 nor this\r\n211 End\r\n220 next\r\n";
        let r = parse_all(input);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, 211);
        assert_eq!(r[0].lines.len(), 6);
        assert_eq!(r[0].lines[5], b"End");
        assert_eq!(&r[0].raw[..], &input[..input.len() - 10]);
        assert_eq!(r[1].code, 220);
    }

    #[test]
    fn split_across_reads() {
        let input = b"230-Welcome\r\n230-more\r\n230 Login successful.\r\n";
        let mut p = ReplyParser::new();
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in input.iter() {
            buf.extend_from_slice(&[*b]);
            if let Some(r) = p.parse(&mut buf).unwrap() {
                got = Some(r);
            }
        }
        let r = got.unwrap();
        assert_eq!(r.code, 230);
        assert_eq!(&r.raw[..], &input[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn bare_code_line_and_lf_only() {
        let r = parse_all(b"200\n");
        assert_eq!(r[0].code, 200);
    }

    #[test]
    fn rejects_garbage_and_overlong() {
        let mut p = ReplyParser::new();
        assert_eq!(p.parse(&mut BytesMut::from(&b"hello\r\n"[..])), Err(ReplyError::BadCode));
        let mut p = ReplyParser::new();
        assert_eq!(p.parse(&mut BytesMut::from(&b"600 no\r\n"[..])), Err(ReplyError::BadCode));
        let mut p = ReplyParser::new();
        let long = vec![b'2'; MAX_REPLY_LINE + 10];
        assert_eq!(p.parse(&mut BytesMut::from(&long[..])), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn formatting_escapes_inner_lines() {
        let r = Reply::new(211, &["Features:", "200 looks like an end", "End"]);
        assert_eq!(&r.raw[..], b"211-Features:\r\n 200 looks like an end\r\n211 End\r\n");
        let r = Reply::single(500, "bad\r\n200 forged");
        assert_eq!(&r.raw[..], b"500 bad  200 forged\r\n");
    }

    proptest! {
        #[test]
        fn parse_format_roundtrip(code in 100u16..600, lines in proptest::collection::vec("[ -~]{0,40}", 1..6)) {
            let r = Reply::new(code, &lines);
            let parsed = parse_all(&r.raw);
            prop_assert_eq!(parsed.len(), 1);
            prop_assert_eq!(&parsed[0], &r);
        }

        #[test]
        fn parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut p = ReplyParser::new();
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = p.parse(&mut buf) {}
        }
    }
}
