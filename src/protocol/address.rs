//! Data-connection addresses on the control channel: the `227` reply to `PASV`
//! and the `PORT` argument (`h1,h2,h3,h4,p1,p2`, RFC 959), the `229` reply to
//! `EPSV` (`(|||port|)`) and the `EPRT` argument (`|1|addr|port|`, RFC 2428).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("expected six comma-separated numbers h1,h2,h3,h4,p1,p2 each 0-255")]
    BadHostPort,
    #[error("expected (|||port|) with a port from 1 to 65535")]
    BadEpsv,
    #[error("expected |proto|address|port| with proto 1 or 2")]
    BadEprt,
    #[error("network protocol {0} is not supported, use (1,2)")]
    UnsupportedProtocol(String),
}

/// Parses `h1,h2,h3,h4,p1,p2` (the PORT argument and the inside of a 227 reply).
pub fn parse_host_port(s: &str) -> Result<SocketAddrV4, AddressError> {
    let nums: Vec<u8> = s
        .trim()
        .split(',')
        .map(|n| n.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| AddressError::BadHostPort)?;
    if nums.len() != 6 {
        return Err(AddressError::BadHostPort);
    }
    let ip = Ipv4Addr::new(nums[0], nums[1], nums[2], nums[3]);
    Ok(SocketAddrV4::new(ip, u16::from(nums[4]) << 8 | u16::from(nums[5])))
}

pub fn format_host_port(addr: SocketAddrV4) -> String {
    let [a, b, c, d] = addr.ip().octets();
    let p = addr.port();
    format!("{a},{b},{c},{d},{},{}", p >> 8, p & 0xff)
}

/// Finds the address in a `227` reply text. Servers differ on the wrapping
/// (`(h,h,h,h,p,p)`, `=h,h,...`, or bare), so take the first run of six numbers.
pub fn parse_227(text: &str) -> Result<SocketAddrV4, AddressError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let end =
                bytes[i..].iter().position(|b| !(b.is_ascii_digit() || *b == b',')).map_or(bytes.len(), |p| p + i);
            if let Ok(a) = parse_host_port(&text[i..end]) {
                return Ok(a);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    Err(AddressError::BadHostPort)
}

/// Text of our `227` reply.
pub fn format_227(addr: SocketAddrV4) -> String {
    format!("Entering Passive Mode ({}).", format_host_port(addr))
}

/// Finds the port in a `229` reply text: `(<d><d><d>port<d>)` where `<d>` is any
/// printable delimiter, `|` in practice.
pub fn parse_229(text: &str) -> Result<u16, AddressError> {
    let open = text.find('(').ok_or(AddressError::BadEpsv)?;
    let inner = &text[open + 1..];
    let close = inner.find(')').ok_or(AddressError::BadEpsv)?;
    let inner = &inner[..close];
    let d = inner.chars().next().ok_or(AddressError::BadEpsv)?;
    let parts: Vec<&str> = inner.split(d).collect();
    // "|||port|" splits into ["", "", "", "port", ""].
    if parts.len() != 5 || !parts[1].is_empty() || !parts[2].is_empty() || !parts[4].is_empty() {
        return Err(AddressError::BadEpsv);
    }
    match parts[3].parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(AddressError::BadEpsv),
    }
}

pub fn format_229(port: u16) -> String {
    format!("Entering Extended Passive Mode (|||{port}|)")
}

/// Parses the `EPRT` argument, `<d>proto<d>address<d>port<d>`.
pub fn parse_eprt(s: &str) -> Result<SocketAddr, AddressError> {
    let s = s.trim();
    let d = s.chars().next().ok_or(AddressError::BadEprt)?;
    if d.is_ascii_alphanumeric() || d == '.' || d == ':' {
        return Err(AddressError::BadEprt);
    }
    let parts: Vec<&str> = s.split(d).collect();
    if parts.len() != 5 || !parts[0].is_empty() || !parts[4].is_empty() {
        return Err(AddressError::BadEprt);
    }
    let ip: IpAddr = match parts[1] {
        "1" => IpAddr::V4(parts[2].parse().map_err(|_| AddressError::BadEprt)?),
        "2" => IpAddr::V6(parts[2].parse().map_err(|_| AddressError::BadEprt)?),
        other => return Err(AddressError::UnsupportedProtocol(other.to_string())),
    };
    let port: u16 = parts[3].parse().map_err(|_| AddressError::BadEprt)?;
    if port == 0 {
        return Err(AddressError::BadEprt);
    }
    Ok(SocketAddr::new(ip, port))
}

pub fn format_eprt(addr: SocketAddr) -> String {
    let proto = if addr.is_ipv4() { 1 } else { 2 };
    format!("|{proto}|{}|{}|", addr.ip(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_port() {
        let a = parse_host_port("127,0,0,1,195,80").unwrap();
        assert_eq!(a, "127.0.0.1:50000".parse().unwrap());
        assert_eq!(format_host_port(a), "127,0,0,1,195,80");
        assert!(parse_host_port("127,0,0,1,256,0").is_err());
        assert!(parse_host_port("127,0,0,1,2").is_err());
        assert!(parse_host_port("a,b,c,d,e,f").is_err());
    }

    #[test]
    fn reply_227_variants() {
        let want: SocketAddrV4 = "10.0.0.5:4660".parse().unwrap();
        assert_eq!(parse_227("Entering Passive Mode (10,0,0,5,18,52).").unwrap(), want);
        assert_eq!(parse_227("Entering Passive Mode 10,0,0,5,18,52").unwrap(), want);
        assert_eq!(parse_227("=10,0,0,5,18,52").unwrap(), want);
        assert!(parse_227("Entering Passive Mode").is_err());
    }

    #[test]
    fn reply_229() {
        assert_eq!(parse_229("Entering Extended Passive Mode (|||6446|)").unwrap(), 6446);
        assert_eq!(parse_229("ok (!!!21!)").unwrap(), 21);
        assert!(parse_229("(|||0|)").is_err());
        assert!(parse_229("(|||70000|)").is_err());
        assert!(parse_229("(|1|2|3|)").is_err());
        assert!(parse_229("no parens").is_err());
    }

    #[test]
    fn eprt() {
        assert_eq!(parse_eprt("|1|132.235.1.2|6275|").unwrap(), "132.235.1.2:6275".parse().unwrap());
        assert_eq!(parse_eprt("|2|::1|5282|").unwrap(), "[::1]:5282".parse().unwrap());
        assert_eq!(parse_eprt("|3|x|1|"), Err(AddressError::UnsupportedProtocol("3".into())));
        assert!(parse_eprt("|1|::1|5282|").is_err());
        assert!(parse_eprt("|1|1.2.3.4|0|").is_err());
        assert!(parse_eprt("1|1.2.3.4|5|").is_err());
    }

    proptest! {
        #[test]
        fn host_port_roundtrip(ip in any::<u32>(), port in any::<u16>()) {
            let a = SocketAddrV4::new(Ipv4Addr::from(ip), port);
            prop_assert_eq!(parse_host_port(&format_host_port(a)).unwrap(), a);
            prop_assert_eq!(parse_227(&format_227(a)).unwrap(), a);
        }

        #[test]
        fn epsv_roundtrip(port in 1u16..) {
            prop_assert_eq!(parse_229(&format_229(port)).unwrap(), port);
        }

        #[test]
        fn eprt_roundtrip(addr in any::<SocketAddr>().prop_filter("port", |a| a.port() != 0)) {
            let addr = match addr { SocketAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)), a => a };
            prop_assert_eq!(parse_eprt(&format_eprt(addr)).unwrap(), addr);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,60}") {
            let _ = parse_227(&s);
            let _ = parse_229(&s);
            let _ = parse_eprt(&s);
        }
    }
}
