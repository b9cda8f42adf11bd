//! Active-mode (`PORT`/`EPRT`) argument checks. ftpgate connects out to the
//! address a client names, so it must be the client's own address and not a
//! privileged port: otherwise any client could use ftpgate to reach hosts and
//! services behind the firewall (the FTP bounce attack, RFC 2577).

use crate::protocol::address::{self, AddressError};
use crate::protocol::{codes, Command, Reply, Verb};
use std::net::{IpAddr, SocketAddr};

/// Lowest port ftpgate will connect to for an active data connection.
pub const MIN_ACTIVE_PORT: u16 = 1024;

/// Parses and checks a `PORT` or `EPRT` command from a client whose control
/// connection comes from `client_ip`. The error is the reply to send.
pub fn check(cmd: &Command, client_ip: IpAddr) -> Result<SocketAddr, Reply> {
    let arg = cmd.arg_str().unwrap_or("");
    let parsed = match cmd.verb {
        Verb::Port => address::parse_host_port(arg).map(SocketAddr::V4),
        _ => address::parse_eprt(arg),
    };
    let addr = parsed.map_err(|e| match e {
        AddressError::UnsupportedProtocol(_) => Reply::single(codes::NETWORK_PROTOCOL_NOT_SUPPORTED, &format!("{e}")),
        _ => Reply::single(codes::BAD_ARGUMENT, &format!("Syntax error in {} argument: {e}", cmd.verb)),
    })?;
    if addr.ip().to_canonical() != client_ip.to_canonical() {
        return Err(Reply::single(
            codes::BAD_ARGUMENT,
            &format!("{} refused: {} is not your address (FTP bounce protection)", cmd.verb, addr.ip()),
        ));
    }
    if addr.port() < MIN_ACTIVE_PORT {
        return Err(Reply::single(
            codes::BAD_ARGUMENT,
            &format!("{} refused: port {} is below {MIN_ACTIVE_PORT} (FTP bounce protection)", cmd.verb, addr.port()),
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        Command::parse(line.as_bytes()).unwrap()
    }

    #[test]
    fn table() {
        let me: IpAddr = "10.1.2.3".parse().unwrap();
        let me6: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let cases: &[(&str, IpAddr, Result<&str, u16>)] = &[
            ("PORT 10,1,2,3,200,10", me, Ok("10.1.2.3:51210")),
            ("PORT 10,1,2,3,200,10", me6, Ok("10.1.2.3:51210")),
            ("PORT 10,1,2,4,200,10", me, Err(501)),
            ("PORT 10,1,2,3,0,21", me, Err(501)),
            ("PORT 10,1,2,3,300,1", me, Err(501)),
            ("PORT", me, Err(501)),
            ("EPRT |1|10.1.2.3|4000|", me, Ok("10.1.2.3:4000")),
            ("EPRT |2|::1|4000|", "::1".parse().unwrap(), Ok("[::1]:4000")),
            ("EPRT |2|::2|4000|", "::1".parse().unwrap(), Err(501)),
            ("EPRT |3|x|4000|", me, Err(522)),
            ("EPRT |1|10.1.2.3|80|", me, Err(501)),
        ];
        for (line, ip, want) in cases {
            let got = check(&cmd(line), *ip);
            match want {
                Ok(a) => assert_eq!(got.unwrap(), a.parse::<SocketAddr>().unwrap(), "{line}"),
                Err(code) => assert_eq!(got.unwrap_err().code, *code, "{line}"),
            }
        }
    }
}
