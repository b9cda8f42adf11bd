//! Printing what a peer sent: user names, paths, command lines and panic
//! messages reach logs, `ftpgate who` and `/status`, where a control
//! character from the wire could clear or retitle the operator's terminal
//! (`ESC[2J`, `ESC]0;...BEL`) or forge a log line (CR, LF). Everything shown
//! goes through [`for_log`]: control characters escaped, bytes that are not
//! UTF-8 shown as `\xNN` (visible, not dropped), length bounded.

use std::fmt::Write as _;

/// `bytes` as printable text of at most `max` characters (plus a marker
/// saying how much was cut).
pub fn for_log(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown >= max {
                return cut(out, bytes.len());
            }
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                // Unicode bidi overrides and isolates reorder the rest of a line.
                '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
            shown += 1;
        }
        for b in chunk.invalid() {
            if shown >= max {
                return cut(out, bytes.len());
            }
            let _ = write!(out, "\\x{b:02x}");
            shown += 1;
        }
    }
    out
}

fn cut(mut out: String, total: usize) -> String {
    let _ = write!(out, "...({total} bytes)");
    out
}

/// [`for_log`] for text already held as a `str`.
pub fn shown(s: &str, max: usize) -> String {
    for_log(s.as_bytes(), max)
}

/// The log's writer: whatever a log line carries (a user name, a path, a
/// reply text from the backend, each a peer's bytes), control characters
/// reach neither the terminal nor the file as they are: every byte below
/// 0x20 (but tab and the line's final newline), DEL and the C1 controls are
/// written as `\xNN`. One forged line break or terminal escape in a field
/// can then neither fake a log line nor drive the operator's terminal.
pub struct SafeWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for SafeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + 16);
        let last = buf.len().saturating_sub(1);
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            let c1 = b == 0xc2 && buf.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n));
            if c1 {
                let _ = write!(out, "\\xc2\\x{:02x}", buf[i + 1]);
                i += 2;
                continue;
            }
            if (b < 0x20 && b != b'\t' && !(b == b'\n' && i == last)) || b == 0x7f {
                let _ = write!(out, "\\x{b:02x}");
            } else {
                out.push(b);
            }
            i += 1;
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_writer_escapes_controls_but_ends_lines() {
        use std::io::Write as _;
        let mut w = SafeWriter(Vec::new());
        w.write_all(b"user=\x1b[2J x\r\nINFO forged \xc2\x9b1m caf\xc3\xa9\tok\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "user=\\x1b[2J x\\x0d\\x0aINFO forged \\xc2\\x9b1m caf\u{e9}\tok\n"
        );
    }

    #[test]
    fn terminal_escapes_and_line_breaks_are_shown_not_obeyed() {
        assert_eq!(for_log(b"\x1b[2J\x1b]0;owned\x07bob", 100), "\\u{1b}[2J\\u{1b}]0;owned\\u{7}bob");
        assert_eq!(for_log(b"a\r\nINFO fake line", 100), "a\\u{d}\\u{a}INFO fake line");
        assert_eq!(for_log("x\u{202e}gpj.exe".as_bytes(), 100), "x\\u{202e}gpj.exe");
        assert_eq!(for_log("caf\u{e9} \u{0085}".as_bytes(), 100), "caf\u{e9} \\u{85}");
    }

    #[test]
    fn invalid_utf8_is_visible_and_backslashes_are_unambiguous() {
        assert_eq!(for_log(b"r\xe9sum\xe9.txt", 100), "r\\xe9sum\\xe9.txt");
        assert_eq!(for_log(b"a\\x41", 100), "a\\\\x41");
    }

    #[test]
    fn length_is_bounded() {
        let long = vec![b'a'; 10_000];
        let s = for_log(&long, 20);
        assert_eq!(s, format!("{}...(10000 bytes)", "a".repeat(20)));
        assert_eq!(for_log(b"", 5), "");
    }
}
