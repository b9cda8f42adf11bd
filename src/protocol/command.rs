//! FTP commands as the client sends them (RFC 959 section 4.1, RFC 2428, RFC 4217).
//!
//! The verb is case-insensitive on the wire and stored upper-case; the argument is
//! kept byte-exact (file names need not be UTF-8) so what reaches the backend is
//! exactly what the client meant, minus anything that could split the line.

use std::fmt;
use thiserror::Error;

/// Longest verb we accept. RFC 959 verbs are 3 or 4 letters; extensions such as
/// `XMKD` or `HOST` fit too. Anything longer is not an FTP verb.
pub const MAX_VERB_LEN: usize = 8;

/// Commands a client may send on a connection that must be secured before it
/// is used (RFC 4217 section 4: `AUTH` itself, and the harmless ones that
/// carry no credentials or paths). One list, for the `required` listener
/// mode and for networks that allow no plain FTP.
pub const ALLOWED_BEFORE_TLS: &[&str] = &["AUTH", "FEAT", "HELP", "NOOP", "QUIT", "SYST"];

/// The verbs ftpgate itself looks at (or sends on its own). Everything else is
/// carried as [`Verb::Other`] and forwarded to the backend unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verb {
    User,
    Pass,
    Acct,
    Quit,
    Rein,
    Auth,
    Pbsz,
    Prot,
    Ccc,
    Pasv,
    Epsv,
    Port,
    Eprt,
    Retr,
    Stor,
    Stou,
    Appe,
    List,
    Nlst,
    Mlsd,
    Rest,
    Abor,
    Feat,
    Type,
    Cwd,
    Cdup,
    Xcwd,
    Xcup,
    Pwd,
    Size,
    Dele,
    Syst,
    Noop,
    Help,
    Clnt,
    Opts,
    Host,
    Other(String),
}

impl Verb {
    fn from_upper(s: &str) -> Verb {
        match s {
            "USER" => Verb::User,
            "PASS" => Verb::Pass,
            "ACCT" => Verb::Acct,
            "QUIT" => Verb::Quit,
            "REIN" => Verb::Rein,
            "AUTH" => Verb::Auth,
            "PBSZ" => Verb::Pbsz,
            "PROT" => Verb::Prot,
            "CCC" => Verb::Ccc,
            "PASV" => Verb::Pasv,
            "EPSV" => Verb::Epsv,
            "PORT" => Verb::Port,
            "EPRT" => Verb::Eprt,
            "RETR" => Verb::Retr,
            "STOR" => Verb::Stor,
            "STOU" => Verb::Stou,
            "APPE" => Verb::Appe,
            "LIST" => Verb::List,
            "NLST" => Verb::Nlst,
            "MLSD" => Verb::Mlsd,
            "REST" => Verb::Rest,
            "ABOR" => Verb::Abor,
            "FEAT" => Verb::Feat,
            "TYPE" => Verb::Type,
            "CWD" => Verb::Cwd,
            "CDUP" => Verb::Cdup,
            "XCWD" => Verb::Xcwd,
            "XCUP" => Verb::Xcup,
            "PWD" => Verb::Pwd,
            "SIZE" => Verb::Size,
            "DELE" => Verb::Dele,
            "SYST" => Verb::Syst,
            "NOOP" => Verb::Noop,
            "HELP" => Verb::Help,
            "CLNT" => Verb::Clnt,
            "OPTS" => Verb::Opts,
            "HOST" => Verb::Host,
            other => Verb::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Verb::User => "USER",
            Verb::Pass => "PASS",
            Verb::Acct => "ACCT",
            Verb::Quit => "QUIT",
            Verb::Rein => "REIN",
            Verb::Auth => "AUTH",
            Verb::Pbsz => "PBSZ",
            Verb::Prot => "PROT",
            Verb::Ccc => "CCC",
            Verb::Pasv => "PASV",
            Verb::Epsv => "EPSV",
            Verb::Port => "PORT",
            Verb::Eprt => "EPRT",
            Verb::Retr => "RETR",
            Verb::Stor => "STOR",
            Verb::Stou => "STOU",
            Verb::Appe => "APPE",
            Verb::List => "LIST",
            Verb::Nlst => "NLST",
            Verb::Mlsd => "MLSD",
            Verb::Rest => "REST",
            Verb::Abor => "ABOR",
            Verb::Feat => "FEAT",
            Verb::Type => "TYPE",
            Verb::Cwd => "CWD",
            Verb::Cdup => "CDUP",
            Verb::Xcwd => "XCWD",
            Verb::Xcup => "XCUP",
            Verb::Pwd => "PWD",
            Verb::Size => "SIZE",
            Verb::Dele => "DELE",
            Verb::Syst => "SYST",
            Verb::Noop => "NOOP",
            Verb::Help => "HELP",
            Verb::Clnt => "CLNT",
            Verb::Opts => "OPTS",
            Verb::Host => "HOST",
            Verb::Other(s) => s,
        }
    }

    /// Which way a transfer command moves file data, or `None` for commands that
    /// open no data connection.
    pub fn transfer_direction(&self) -> Option<TransferDirection> {
        match self {
            Verb::Retr | Verb::List | Verb::Nlst | Verb::Mlsd => Some(TransferDirection::Download),
            Verb::Stor | Verb::Stou | Verb::Appe => Some(TransferDirection::Upload),
            _ => None,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Direction of a data transfer, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferDirection {
    /// Backend to client: `RETR`, `LIST`, `NLST`, `MLSD`.
    Download,
    /// Client to backend: `STOR`, `STOU`, `APPE`.
    Upload,
}

/// One client command line, without its CRLF.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    pub verb: Verb,
    /// Everything after the first space, byte-exact. `Some(empty)` when the line
    /// ended with a lone space after the verb.
    pub arg: Option<Vec<u8>>,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // PASS arguments are secrets: never let them reach a log through Debug.
        let arg = match (&self.verb, &self.arg) {
            (Verb::Pass, Some(_)) => Some("****".to_string()),
            (_, Some(a)) => Some(String::from_utf8_lossy(a).into_owned()),
            (_, None) => None,
        };
        f.debug_struct("Command").field("verb", &self.verb).field("arg", &arg).finish()
    }
}

/// The line as the client sent it, for logs: `RETR /in/a.csv`; a `PASS` or
/// `ACCT` argument is masked.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verb)?;
        match (&self.verb, &self.arg) {
            (Verb::Pass | Verb::Acct, Some(_)) => write!(f, " ****"),
            (_, Some(a)) => write!(f, " {}", String::from_utf8_lossy(a)),
            (_, None) => Ok(()),
        }
    }
}

/// Why a command line was refused before it could reach the backend. Each maps
/// to a `500`/`501` reply whose text says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("empty command line")]
    Empty,
    #[error("command verb must be 1 to {MAX_VERB_LEN} ASCII letters")]
    BadVerb,
    #[error("NUL byte inside command")]
    Nul,
    #[error("bare CR inside command")]
    BareCr,
    #[error("bare LF inside command; lines must end with CRLF")]
    BareLf,
    #[error("line follows a bare LF; nothing runs until a line ends with CRLF")]
    AfterBareLf,
    #[error("command line longer than {0} bytes")]
    TooLong(usize),
}

impl Command {
    pub fn new(verb: Verb, arg: Option<&[u8]>) -> Command {
        Command { verb, arg: arg.map(<[u8]>::to_vec) }
    }

    /// Parses one line without its terminating CRLF. Telnet sequences must already
    /// have been removed by the codec.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.contains(&0) {
            return Err(CommandError::Nul);
        }
        if line.contains(&b'\n') {
            return Err(CommandError::BareLf);
        }
        if line.contains(&b'\r') {
            return Err(CommandError::BareCr);
        }
        if line.is_empty() {
            return Err(CommandError::Empty);
        }
        let (verb, arg) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        if verb.is_empty() || verb.len() > MAX_VERB_LEN || !verb.iter().all(u8::is_ascii_alphabetic) {
            return Err(CommandError::BadVerb);
        }
        // The bytes are ASCII letters, so this conversion cannot fail.
        let upper = String::from_utf8_lossy(verb).to_ascii_uppercase();
        Ok(Command { verb: Verb::from_upper(&upper), arg: arg.map(<[u8]>::to_vec) })
    }

    /// The argument as text for places that need it (addresses, numbers, TLS
    /// mechanisms), trimmed of surrounding spaces.
    pub fn arg_str(&self) -> Option<&str> {
        self.arg.as_deref().and_then(|a| std::str::from_utf8(a).ok()).map(str::trim)
    }

    /// Appends the wire form, `VERB[ SP arg] CRLF`, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.verb.as_str().as_bytes());
        if let Some(arg) = &self.arg {
            out.push(b' ');
            out.extend_from_slice(arg);
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.arg.as_ref().map_or(0, Vec::len));
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn verb_is_case_insensitive_and_arg_byte_exact() {
        let c = Command::parse(b"rEtR  dir/f\xffile").unwrap();
        assert_eq!(c.verb, Verb::Retr);
        assert_eq!(c.arg.as_deref(), Some(&b" dir/f\xffile"[..]));
        assert_eq!(c.to_bytes(), b"RETR  dir/f\xffile\r\n");
    }

    #[test]
    fn unknown_verbs_are_kept() {
        let c = Command::parse(b"xmkd foo").unwrap();
        assert_eq!(c.verb, Verb::Other("XMKD".into()));
        assert_eq!(c.to_bytes(), b"XMKD foo\r\n");
    }

    #[test]
    fn refuses_smuggling_bytes() {
        assert_eq!(Command::parse(b"USER a\nPASS b"), Err(CommandError::BareLf));
        assert_eq!(Command::parse(b"USER a\rPASS b"), Err(CommandError::BareCr));
        assert_eq!(Command::parse(b"RETR a\0b"), Err(CommandError::Nul));
        assert_eq!(Command::parse(b""), Err(CommandError::Empty));
        assert_eq!(Command::parse(b"RE1R x"), Err(CommandError::BadVerb));
        assert_eq!(Command::parse(b"VERYLONGVERB"), Err(CommandError::BadVerb));
        assert_eq!(Command::parse(b" USER"), Err(CommandError::BadVerb));
    }

    #[test]
    fn pass_is_masked_in_debug() {
        let c = Command::parse(b"PASS hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn transfer_directions() {
        assert_eq!(Verb::Retr.transfer_direction(), Some(TransferDirection::Download));
        assert_eq!(Verb::Mlsd.transfer_direction(), Some(TransferDirection::Download));
        assert_eq!(Verb::Appe.transfer_direction(), Some(TransferDirection::Upload));
        assert_eq!(Verb::Feat.transfer_direction(), None);
    }

    proptest! {
        #[test]
        fn parse_encode_roundtrip(verb in "[A-Za-z]{1,8}", arg in proptest::option::of(proptest::collection::vec(any::<u8>().prop_filter("line bytes", |b| *b != 0 && *b != b'\r' && *b != b'\n'), 0..64))) {
            let mut line = verb.clone().into_bytes();
            if let Some(a) = &arg { line.push(b' '); line.extend_from_slice(a); }
            let c = Command::parse(&line).unwrap();
            let wire = c.to_bytes();
            let again = Command::parse(&wire[..wire.len() - 2]).unwrap();
            prop_assert_eq!(&c, &again);
            prop_assert_eq!(c.arg, arg);
            prop_assert_eq!(c.verb.as_str(), verb.to_ascii_uppercase());
        }

        #[test]
        fn parse_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Command::parse(&line);
        }
    }
}
