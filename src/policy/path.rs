//! Paths as the backend will resolve them, and the globs rules are written in.
//!
//! Paths are bytes: FTP file names need not be UTF-8, and a rule must match the
//! exact name the backend will act on. Resolution is purely lexical, like a
//! chrooted Unix FTP server: `.` and empty segments vanish, `..` pops (and stops
//! at `/`), so `/pub/../etc`, `//etc` and `/pub/./../etc/` all become `/etc`.
//! Nothing is percent-decoded, because FTP servers do not decode either.

/// Resolves `arg` (absolute or relative) against the working directory `cwd`.
pub fn resolve(cwd: &[u8], arg: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let start: &[u8] = if arg.first() == Some(&b'/') { b"" } else { cwd };
    for seg in start.split(|&b| b == b'/').chain(arg.split(|&b| b == b'/')) {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(arg.len() + cwd.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The directory named in a `257 "<dir>" ...` reply; embedded quotes are
/// doubled (RFC 959 appendix II).
pub fn parse_257(text: &[u8]) -> Option<Vec<u8>> {
    let start = text.iter().position(|&b| b == b'"')? + 1;
    let mut out = Vec::new();
    let mut i = start;
    while i < text.len() {
        if text[i] == b'"' {
            if text.get(i + 1) == Some(&b'"') {
                out.push(b'"');
                i += 2;
                continue;
            }
            return Some(out);
        }
        out.push(text[i]);
        i += 1;
    }
    None
}

/// Matches a resolved path against a rule glob: `*` is any run of bytes within
/// one segment, `?` one byte, `**` any number of whole segments (so `/a/**`
/// matches `/a` itself and everything below it).
pub fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    let pat: Vec<&[u8]> = pattern.split(|&b| b == b'/').filter(|s| !s.is_empty()).collect();
    let segs: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|s| !s.is_empty()).collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&[u8]], segs: &[&[u8]]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&b"**", rest)) => (0..=segs.len()).any(|i| match_segments(rest, &segs[i..])),
        Some((p, rest)) => {
            segs.split_first().is_some_and(|(s, srest)| match_segment(p, s) && match_segments(rest, srest))
        }
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_table() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"/", b"a.txt", b"/a.txt"),
            (b"/pub", b"a.txt", b"/pub/a.txt"),
            (b"/pub", b"../etc/passwd", b"/etc/passwd"),
            (b"/pub", b"../../../../etc", b"/etc"),
            (b"/", b"//etc//passwd", b"/etc/passwd"),
            (b"/pub", b"./x/./y/", b"/pub/x/y"),
            (b"/pub", b"/abs", b"/abs"),
            (b"/pub", b"", b"/pub"),
            (b"/pub", b"..", b"/"),
            (b"/", b"%2e%2e/secret", b"/%2e%2e/secret"),
            (b"/", b"caf\xe9/../x", b"/x"),
            (b"/a", b"b\xff\xfe", b"/a/b\xff\xfe"),
            (b"/a", b"...", b"/a/..."),
        ];
        for (cwd, arg, want) in cases {
            assert_eq!(
                resolve(cwd, arg),
                want.to_vec(),
                "{:?} + {:?}",
                String::from_utf8_lossy(cwd),
                String::from_utf8_lossy(arg)
            );
        }
    }

    #[test]
    fn parse_257_table() {
        assert_eq!(parse_257(b"\"/home/x\" is the current directory"), Some(b"/home/x".to_vec()));
        assert_eq!(parse_257(b"\"/a \"\"q\"\" b\" created"), Some(b"/a \"q\" b".to_vec()));
        assert_eq!(parse_257(b"no quotes"), None);
        assert_eq!(parse_257(b"\"unterminated"), None);
    }

    #[test]
    fn glob_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"/**", b"/", true),
            (b"/**", b"/a/b/c", true),
            (b"/shared/**", b"/shared", true),
            (b"/shared/**", b"/shared/x/y.txt", true),
            (b"/shared/**", b"/sharedx", false),
            (b"/shared/*.csv", b"/shared/a.csv", true),
            (b"/shared/*.csv", b"/shared/sub/a.csv", false),
            (b"/shared/?.txt", b"/shared/a.txt", true),
            (b"/shared/?.txt", b"/shared/ab.txt", false),
            (b"/in/**/*.pdf", b"/in/2024/q1/x.pdf", true),
            (b"/in/**/*.pdf", b"/in/x.pdf", true),
            (b"/a", b"/a/b", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob_match(p, s), *want, "{:?} ~ {:?}", String::from_utf8_lossy(p), String::from_utf8_lossy(s));
        }
    }
}
