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

/// The method-selection reply "username/password" (RFC 1929).
pub const USER_PASS: [u8; 2] = [VER, 0x02];
/// The RFC 1929 reply "success": any username and password are accepted; they only name an
/// isolation class (C tor's `IsolateSOCKSAuth`, on by default).
pub const AUTH_OK: [u8; 2] = [1, 0];

/// The authentication method chosen from a greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No authentication (0x00).
    NoAuth,
    /// Username and password (0x02, RFC 1929), chosen whenever offered, as C tor does
    /// (unless its `PreferSOCKSNoAuth`): the pair isolates the client's streams.
    UserPass,
}

/// Parse the greeting (VER, NMETHODS, METHODS); returns the bytes consumed and the method
/// chosen: username/password when offered, else no authentication.
pub fn parse_greeting_method(buf: &[u8]) -> Result<Option<(usize, Method)>, SocksError> {
    let Some(end) = parse_greeting_any(buf)? else {
        return Ok(None);
    };
    let methods = &buf[2..end];
    if methods.contains(&2) {
        Ok(Some((end, Method::UserPass)))
    } else if methods.contains(&0) {
        Ok(Some((end, Method::NoAuth)))
    } else {
        Err(err(
            None,
            "client offers neither \"no authentication\" nor username/password",
        ))
    }
}

/// The length of a greeting whose version is right, whatever its methods.
fn parse_greeting_any(buf: &[u8]) -> Result<Option<usize>, SocksError> {
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
    Ok(buf.get(2..end).map(|_| end))
}

/// A username and password (RFC 1929): the isolation class they name.
pub type Credentials = (Vec<u8>, Vec<u8>);

/// Parse an RFC 1929 username/password request (VER=1, ULEN, UNAME, PLEN, PASSWD); returns
/// the bytes consumed and the username and password.
pub fn parse_user_pass(buf: &[u8]) -> Result<Option<(usize, Credentials)>, SocksError> {
    let [ver, ulen, ..] = *buf else {
        return Ok(None);
    };
    if ver != 1 {
        return Err(err(None, format!("username/password version {ver}, not 1")));
    }
    let uend = 2 + usize::from(ulen);
    let Some(&plen) = buf.get(uend) else {
        return Ok(None);
    };
    let end = uend + 1 + usize::from(plen);
    let Some(pass) = buf.get(uend + 1..end) else {
        return Ok(None);
    };
    Ok(Some((end, (buf[2..uend].to_vec(), pass.to_vec()))))
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

/// RFC 1928 §6 "general SOCKS server failure".
pub const GENERAL_FAILURE: u8 = 0x01;

/// The extended reply codes of proposal 304 (C tor's `ExtendedErrors` SocksPort flag, tor(1)),
/// values RFC 1928 leaves unassigned. C tor sends them only on a port with that flag, since
/// an RFC 1928 client cannot know them; `onion socks --extended-errors` does the same.
// Only HS_BAD_ADDRESS is sent from here; the other codes come with the client's error
// (`onion_client::hs::HsError::socks5_reply`); the table stays whole, and tests check them.
#[allow(dead_code)]
pub mod ext {
    /// 0xF0: the onion service's descriptor cannot be found on the hash ring.
    pub const HS_DESC_NOT_FOUND: u8 = 0xF0;
    /// 0xF1: the descriptor cannot be parsed, or its signature does not verify.
    pub const HS_DESC_INVALID: u8 = 0xF1;
    /// 0xF2: introduction failed at every introduction point.
    pub const HS_INTRO_FAILED: u8 = 0xF2;
    /// 0xF3: the rendezvous failed.
    pub const HS_REND_FAILED: u8 = 0xF3;
    /// 0xF4: the descriptor is encrypted to authorized clients, and we have no key.
    pub const HS_MISSING_CLIENT_AUTH: u8 = 0xF4;
    /// 0xF5: the descriptor is encrypted to authorized clients, and our key is not one.
    pub const HS_BAD_CLIENT_AUTH: u8 = 0xF5;
    /// 0xF6: the `.onion` address is invalid (length, characters, checksum, version).
    pub const HS_BAD_ADDRESS: u8 = 0xF6;
    /// 0xF7: every introduction point timed out.
    pub const HS_INTRO_TIMEDOUT: u8 = 0xF7;
}

/// Where a requested host name leads, once Tor's special names are recognised
/// (address-spec §2–3, as C tor's `parse_extended_hostname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A v3 onion service (rend-spec-v3 §1.2): reached through a rendezvous circuit, never
    /// through an exit. Sub-domains (`www.<addr>.onion`) name the same service.
    Onion(onion_hs::OnionAddress),
    /// A host name or an address literal, for an exit to resolve and connect to.
    Exit(String),
}

/// A host name refused before anything is sent to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRefused {
    /// A `.exit` name (address-spec §2): a client choosing the exit through a name a web
    /// page can make it use is refused, as C tor refuses it since 0.2.2.1-alpha.
    DotExit,
    /// A `.onion` name whose address is not a valid v3 address (length, characters,
    /// checksum, version), or whose key is not a valid ed25519 point: C tor's
    /// `hs_address_is_valid` checks both.
    BadOnion(String),
    /// A name with characters no host name has (C tor's `address_is_invalid_destination`:
    /// letters, digits, `-`, `_` and `.` only).
    Invalid,
}

impl NameRefused {
    /// The SOCKS reply code C tor 0.4.9 sends: it closes these requests with END reason
    /// TORPROTOCOL, which RFC 1928 reports as a general failure; with extended errors, a bad
    /// onion address is [`ext::HS_BAD_ADDRESS`] (`.exit` and invalid names have no extended
    /// code).
    pub fn reply(&self, extended: bool) -> u8 {
        match self {
            NameRefused::BadOnion(_) if extended => ext::HS_BAD_ADDRESS,
            _ => GENERAL_FAILURE,
        }
    }
}

impl fmt::Display for NameRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRefused::DotExit => write!(f, "\".exit\" names are refused"),
            NameRefused::BadOnion(e) => write!(f, "invalid onion address: {e}"),
            NameRefused::Invalid => write!(f, "not a valid host name"),
        }
    }
}

/// Where `host` (as [`parse_request`] returns it: lower case, printable ASCII) leads.
///
/// One trailing dot is dropped first (`x.onion.` and `example.com.` are the absolute forms
/// of the same names), so that no spelling of a `.onion` or `.exit` name reaches an exit
/// (C tor 0.4.9 does not drop it: it sends `x.onion.` to an exit). An IPv6 literal in
/// brackets is taken without them. `.noconnect` (address-spec §4) is an ordinary name, as in
/// C tor since 0.2.2.1-alpha.
pub fn destination(host: &str) -> Result<Destination, NameRefused> {
    let name = host.strip_suffix('.').unwrap_or(host);
    let name = name.to_ascii_lowercase();
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(a) => Ok(Destination::Exit(a.to_string())),
            Err(_) => Err(NameRefused::Invalid),
        };
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(Destination::Exit(name));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(NameRefused::Invalid);
    }
    // A name without a dot is an ordinary one, even `onion` or `exit`.
    let tld = name.rsplit_once('.').map_or("", |(_, t)| t);
    match tld {
        "exit" => Err(NameRefused::DotExit),
        "onion" => {
            let addr = onion_hs::OnionAddress::parse(&name)
                .map_err(|e| NameRefused::BadOnion(e.to_string()))?;
            addr.identity_key()
                .map_err(|e| NameRefused::BadOnion(format!("identity key: {e}")))?;
            Ok(Destination::Onion(addr))
        }
        _ => Ok(Destination::Exit(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Username/password is chosen when offered (C tor's IsolateSOCKSAuth), "no
    /// authentication" otherwise; a greeting offering neither is refused.
    #[test]
    fn greeting_methods_and_user_pass() {
        assert_eq!(parse_greeting_method(&[5, 1]), Ok(None));
        assert_eq!(
            parse_greeting_method(&[5, 1, 0]),
            Ok(Some((3, Method::NoAuth)))
        );
        assert_eq!(
            parse_greeting_method(&[5, 2, 0, 2, 9]),
            Ok(Some((4, Method::UserPass)))
        );
        assert!(parse_greeting_method(&[5, 1, 1]).is_err());
        assert!(parse_greeting_method(&[4, 1, 0]).is_err());
        let req = [1, 2, b'u', b'1', 3, b'p', b'w', b'd', 0xAA];
        for n in 0..8 {
            assert_eq!(parse_user_pass(&req[..n]), Ok(None), "{n}");
        }
        assert_eq!(
            parse_user_pass(&req),
            Ok(Some((8, (b"u1".to_vec(), b"pwd".to_vec()))))
        );
        assert_eq!(parse_user_pass(&[1, 0, 0]), Ok(Some((3, (vec![], vec![])))));
        assert!(parse_user_pass(&[5, 0, 0]).is_err());
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

    #[test]
    fn special_names() {
        // The ed25519 base point: a valid identity key.
        let mut key = [0x66u8; 32];
        key[0] = 0x58;
        let addr = onion_hs::OnionAddress::from_public_key(key);
        let label = addr.encode();
        let onion = |h: &str| destination(h);
        let want = Ok(Destination::Onion(addr));
        // The service, in every spelling of its name.
        assert_eq!(onion(&format!("{label}.onion")), want);
        assert_eq!(onion(&format!("{label}.onion.")), want);
        assert_eq!(onion(&format!("www.{label}.onion")), want);
        assert_eq!(onion(&format!("a.b.{label}.onion.")), want);
        assert_eq!(onion(&format!("{}.ONION", label.to_uppercase())), want);
        // A bad checksum (one character changed), a bad length, a bad character.
        let mut bad = label.clone().into_bytes();
        bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).unwrap();
        for h in [
            format!("{bad}.onion"),
            format!("{bad}.onion."),
            format!("{}.onion", &label[1..]),
            "example.onion".to_string(),
            ".onion".to_string(),
        ] {
            let r = onion(&h);
            assert!(matches!(r, Err(NameRefused::BadOnion(_))), "{h}: {r:?}");
            assert_eq!(r.as_ref().unwrap_err().reply(false), 1);
            assert_eq!(r.unwrap_err().reply(true), 0xF6);
        }
        assert_eq!(
            onion(&format!("{bad}.onion")),
            Err(NameRefused::BadOnion(
                onion_hs::AddressError::BadChecksum.to_string()
            ))
        );
        // A well-formed address whose key C tor refuses ("ed25519 validation failed", "bad
        // pubkey"; checked with C tor 0.4.9.11): the bytes 0, 1, ..., 31.
        let off_curve = onion_hs::OnionAddress::from_public_key(std::array::from_fn(|i| i as u8));
        let r = onion(&format!("{}.onion", off_curve.encode()));
        assert!(matches!(r, Err(NameRefused::BadOnion(_))), "{r:?}");
        // `.exit` in any form; its reply has no extended code.
        for h in ["example.com.exit1.exit", "exit1.exit", "x.exit.", "a.EXIT"] {
            assert_eq!(onion(h), Err(NameRefused::DotExit), "{h}");
        }
        assert_eq!(NameRefused::DotExit.reply(true), 1);
        // Ordinary names and literals go to an exit; one trailing dot is dropped.
        let exit = |h: &str| Ok(Destination::Exit(h.to_string()));
        assert_eq!(onion("example.com."), exit("example.com"));
        assert_eq!(onion("Example.com"), exit("example.com"));
        assert_eq!(onion("my_host-1.example"), exit("my_host-1.example"));
        assert_eq!(onion("exit"), exit("exit"));
        assert_eq!(onion("onion"), exit("onion"));
        assert_eq!(onion("exit.example.com"), exit("exit.example.com"));
        assert_eq!(onion("127.0.0.1"), exit("127.0.0.1"));
        assert_eq!(onion("2001:db8::1"), exit("2001:db8::1"));
        assert_eq!(onion("[2001:DB8::1]"), exit("2001:db8::1"));
        // Characters no host name has.
        for h in ["a/b", "a:b", "x@y.com", "[1.2.3.4]", ".", "", "a b"] {
            assert_eq!(onion(h), Err(NameRefused::Invalid), "{h:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_greeting_method(&data);
            if let Ok(Some((n, t))) = parse_request(&data) {
                proptest::prop_assert!(n <= data.len());
                let _ = destination(&t.host);
            }
        }
    }
}
