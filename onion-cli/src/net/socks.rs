//! The server side of SOCKS5 (RFC 1928) as Tor's SocksPort speaks it: no authentication,
//! CONNECT only, with the destination given as a host name (ATYP 3, what
//! `curl --socks5-hostname` and browsers send) or an address literal, so that names are
//! resolved by the exit (tor-spec §6.2 "Opening streams"), never locally.
//!
//! Pure parsing over the bytes received so far: `Ok(None)` means "need more bytes".

use std::fmt;

/// The SOCKS version byte.
const VER: u8 = 5;

/// Where a CONNECT request wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A host name or an address literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// A request this proxy cannot serve; the reply code to send before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksError {
    /// RFC 1928 §6 reply code (1 general failure, 7 command not supported, 8 address type
    /// not supported), or `None` when the greeting itself failed (reply `05 FF`).
    pub reply: Option<u8>,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SOCKS: {}", self.reason)
    }
}

impl std::error::Error for SocksError {}

fn err(reply: Option<u8>, reason: impl Into<String>) -> SocksError {
    SocksError {
        reply,
        reason: reason.into(),
    }
}

/// The method-selection reply "no authentication required".
pub const NO_AUTH: [u8; 2] = [VER, 0x00];
/// The method-selection reply "no acceptable methods".
pub const NO_METHOD: [u8; 2] = [VER, 0xFF];

/// Parse the greeting (VER, NMETHODS, METHODS); returns the bytes consumed.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<usize>, SocksError> {
    let [ver, n, ..] = *buf else {
        return Ok(None);
    };
    if ver != VER {
        return Err(err(
            None,
            format!("version {ver}, only SOCKS5 is supported"),
        ));
    }
    let end = 2 + usize::from(n);
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    if !methods.contains(&0) {
        return Err(err(None, "client offers no \"no authentication\" method"));
    }
    Ok(Some(end))
}

/// Parse a request (VER CMD RSV ATYP DST.ADDR DST.PORT); returns bytes consumed and target.
pub fn parse_request(buf: &[u8]) -> Result<Option<(usize, Target)>, SocksError> {
    let [ver, cmd, _rsv, atyp, ..] = *buf else {
        return Ok(None);
    };
    if ver != VER {
        return Err(err(Some(1), format!("request version {ver}")));
    }
    if cmd != 1 {
        return Err(err(
            Some(7),
            format!("command {cmd} not supported (only CONNECT)"),
        ));
    }
    let (host, at) = match atyp {
        1 => match buf.get(4..8) {
            Some(a) => (format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]), 8),
            None => return Ok(None),
        },
        3 => {
            let Some(&len) = buf.get(4) else {
                return Ok(None);
            };
            let end = 5 + usize::from(len);
            let Some(name) = buf.get(5..end) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| err(Some(1), "host name is empty or not printable ASCII"))?;
            (name.to_ascii_lowercase(), end)
        }
        4 => match buf.get(4..20) {
            Some(a) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                (std::net::Ipv6Addr::from(o).to_string(), 20)
            }
            None => return Ok(None),
        },
        other => return Err(err(Some(8), format!("address type {other} not supported"))),
    };
    let Some(p) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([p[0], p[1]]);
    Ok(Some((at + 2, Target { host, port })))
}

/// A reply with code `rep` (0 = succeeded) and an unspecified bound address.
pub fn reply(rep: u8) -> [u8; 10] {
    [VER, rep, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting() {
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 2, 0, 9]), Ok(Some(4)));
        assert_eq!(parse_greeting(&[4, 1, 0]).unwrap_err().reply, None);
        assert!(parse_greeting(&[5, 1, 2]).is_err());
    }

    #[test]
    fn requests() {
        let mut r = vec![5, 1, 0, 3, 9];
        r.extend_from_slice(b"Example.C");
        r.extend_from_slice(&[0, 80]);
        for cut in 0..r.len() {
            assert_eq!(parse_request(&r[..cut]), Ok(None), "cut {cut}");
        }
        let (n, t) = parse_request(&r).unwrap().unwrap();
        assert_eq!((n, t.host.as_str(), t.port), (r.len(), "example.c", 80));
        let (n, t) = parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 7])
            .unwrap()
            .unwrap();
        assert_eq!((n, t.host.as_str(), t.port), (10, "127.0.0.1", 8080));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 1]);
        assert_eq!(parse_request(&v6).unwrap().unwrap().1.host, "::1");
        assert_eq!(parse_request(&[5, 2, 0, 1]).unwrap_err().reply, Some(7));
        assert_eq!(parse_request(&[5, 1, 0, 9]).unwrap_err().reply, Some(8));
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]).unwrap_err().reply,
            Some(1)
        );
        assert_eq!(reply(0), [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_greeting(&data);
            if let Ok(Some((n, _))) = parse_request(&data) {
                proptest::prop_assert!(n <= data.len());
            }
        }
    }
}
