//! Bounded line framing for the client side of the control channel.
//!
//! Every byte the client sends is bounded here: a line longer than
//! [`MAX_COMMAND_LINE`] is answered with an error once and then skipped up to its
//! LF, so a peer cannot make ftpgate buffer without limit. Telnet IAC sequences
//! (RFC 959 4.1.3 sends `IAC IP IAC DM` before `ABOR`; RFC 854) are removed, and
//! the line must end in CRLF: a bare CR or LF would let one client line become
//! two backend commands.

use super::command::{Command, CommandError};
use bytes::BytesMut;

/// Longest command line accepted, CRLF included. RFC 959 sets no limit; paths on
/// real servers stay far below this.
pub const MAX_COMMAND_LINE: usize = 2048;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Splits command lines off a client read buffer.
#[derive(Debug, Default)]
pub struct CommandDecoder {
    /// Set after an overlong line was reported, until its LF arrives.
    skipping: bool,
    /// Set after a line ended with a bare LF, until a line ends with CRLF.
    /// A client library, ftpgate and the backend could disagree on where
    /// such a line ends, so nothing up to the next CRLF is executed: each
    /// fragment is answered on its own and the client stays in step however
    /// it counts lines.
    resyncing: bool,
}

impl CommandDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the next command or line error in `buf`, or `None` if more bytes
    /// are needed. Consumed bytes are removed from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Result<Command, CommandError>> {
        loop {
            let lf = buf.iter().position(|&b| b == b'\n');
            if self.skipping {
                match lf {
                    Some(i) => {
                        let _ = buf.split_to(i + 1);
                        self.skipping = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                }
            }
            return match lf {
                Some(i) if i < MAX_COMMAND_LINE => {
                    let line = buf.split_to(i + 1);
                    let crlf = line.len() >= 2 && line[line.len() - 2] == b'\r';
                    if std::mem::replace(&mut self.resyncing, !crlf) {
                        return Some(Err(CommandError::AfterBareLf));
                    }
                    Some(parse_line(&line))
                }
                Some(i) => {
                    let _ = buf.split_to(i + 1);
                    Some(Err(CommandError::TooLong(MAX_COMMAND_LINE)))
                }
                None if buf.len() >= MAX_COMMAND_LINE => {
                    buf.clear();
                    self.skipping = true;
                    Some(Err(CommandError::TooLong(MAX_COMMAND_LINE)))
                }
                None => None,
            };
        }
    }
}

/// `line` ends with LF. Checks the terminator, strips Telnet, parses.
fn parse_line(line: &[u8]) -> Result<Command, CommandError> {
    let body = &line[..line.len() - 1];
    let Some(body) = body.strip_suffix(b"\r") else {
        return Err(CommandError::BareLf);
    };
    Command::parse(&strip_telnet(body))
}

/// Removes Telnet command sequences and undoubles `IAC IAC`. A lone `IAC`
/// followed by a non-command byte (the `DM` of a Synch travels out of band and
/// is missing from the stream) is dropped alone.
pub fn strip_telnet(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !input.contains(&IAC) {
        return std::borrow::Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != IAC {
            out.push(b);
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            Some(&IAC) => {
                out.push(IAC);
                i += 2;
            }
            Some(&SB) => {
                // Skip the subnegotiation up to IAC SE.
                let mut j = i + 2;
                while j + 1 < input.len() && !(input[j] == IAC && input[j + 1] == SE) {
                    j += 1;
                }
                i = (j + 2).min(input.len());
            }
            Some(&c) if (WILL..=DONT).contains(&c) => i += 3,
            Some(&c) if c >= SE => i += 2,
            _ => i += 1,
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Verb;
    use proptest::prelude::*;

    fn decode_all(input: &[u8]) -> Vec<Result<Command, CommandError>> {
        let mut d = CommandDecoder::new();
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        while let Some(r) = d.decode(&mut buf) {
            out.push(r);
        }
        out
    }

    #[test]
    fn splits_crlf_lines() {
        let r = decode_all(b"USER a\r\nPASS b\r\nNOOP");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].as_ref().unwrap().verb, Verb::Pass);
    }

    #[test]
    fn bare_lf_and_cr_are_errors_not_splits() {
        let r = decode_all(b"USER a\nPASS b\r\nNOOP\r\n");
        assert_eq!(r[0], Err(CommandError::BareLf));
        assert_eq!(r[1], Err(CommandError::AfterBareLf));
        assert_eq!(r[2].as_ref().unwrap().verb, Verb::Noop);
        // Every fragment up to the next CRLF is refused, not only the first.
        let r = decode_all(b"NOOP\nDELE x\nRMD y\r\nPWD\r\n");
        assert_eq!(r[..3], [Err(CommandError::BareLf), Err(CommandError::AfterBareLf), Err(CommandError::AfterBareLf)]);
        assert_eq!(r[3].as_ref().unwrap().verb, Verb::Pwd);
        let r = decode_all(b"USER a\rDELE x\r\n");
        assert_eq!(r, vec![Err(CommandError::BareCr)]);
    }

    #[test]
    fn overlong_line_reported_once_then_skipped() {
        let mut input = b"STOR ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 5000));
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let mut d = CommandDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = vec![];
        for chunk in input.chunks(700) {
            buf.extend_from_slice(chunk);
            while let Some(r) = d.decode(&mut buf) {
                out.push(r);
            }
            assert!(buf.len() <= MAX_COMMAND_LINE + 700);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Err(CommandError::TooLong(MAX_COMMAND_LINE)));
        assert_eq!(out[1].as_ref().unwrap().verb, Verb::Noop);
    }

    #[test]
    fn telnet_abort_sequences() {
        // IAC IP IAC DM ABOR, and the same with DM removed by out-of-band delivery.
        for input in [&b"\xff\xf4\xff\xf2ABOR\r\n"[..], &b"\xff\xf4\xffABOR\r\n"[..]] {
            let r = decode_all(input);
            assert_eq!(r[0].as_ref().unwrap().verb, Verb::Abor, "{input:?}");
        }
        let r = decode_all(b"RETR a\xff\xffb\r\n");
        assert_eq!(r[0].as_ref().unwrap().arg.as_deref(), Some(&b"a\xffb"[..]));
        assert_eq!(&strip_telnet(b"\xff\xfb\x01NOOP")[..], b"NOOP");
    }

    proptest! {
        #[test]
        fn decoder_is_bounded_and_total(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..900), 0..10)) {
            let mut d = CommandDecoder::new();
            let mut buf = BytesMut::new();
            for c in chunks {
                buf.extend_from_slice(&c);
                while d.decode(&mut buf).is_some() {}
                prop_assert!(buf.len() < MAX_COMMAND_LINE);
            }
        }
    }
}
