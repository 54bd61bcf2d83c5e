//! The server side of Tor's SOCKS port, sans-IO: a codec an embedder puts in front of
//! [`Client::connect`](crate::Client::connect) to serve applications over SOCKS4, SOCKS4a and
//! SOCKS5, as C tor's `SocksPort` does (socks-extensions.txt; RFC 1928, RFC 1929).
//!
//! - [`Handshake`] takes the bytes an application sent, as they arrive, and says what to
//!   answer ([`Step::Reply`]) until the request is complete ([`Step::Request`]). It never
//!   looks at more than one message at a time, and no message is longer than
//!   [`MAX_MESSAGE`] bytes, so an embedder that buffers at most that much (plus the
//!   optimistic data it accepts, socks-extensions §5) holds every handshake.
//! - A request it cannot serve is a [`SocksError`] that names what was wrong and carries the
//!   reply C tor 0.4.9 sends before it closes ([`SocksError::reply`]).
//! - [`IsolationKey`] maps a request's username and password to an [`Isolation`] token
//!   (C tor's `IsolateSOCKSAuth`, on by default; path-spec §2.2).
//! - [`reply_code`] is the reply for a stream the client could not open, from the client's
//!   typed [`Error`] (C tor's `stream_end_reason_to_socks5_response`, with the extended codes
//!   of proposal 304 on a port with `ExtendedErrors`).
//! - [`destination`] tells Tor's special names apart (address-spec §2-3): `.onion`, `.exit`.
//!
//! A server reads what the application sent, answers each step, and opens the stream once
//! the request is complete (here the greeting and the request came in one read):
//!
//! ```
//! use onion_client::socks::{self, Destination, Handshake, IsolationKey, ReplyCode, Step};
//!
//! let key = IsolationKey::new([7; 32]); // drawn once from the embedder's RNG
//! let mut buf = vec![5, 1, 0]; // what the socket gave: the greeting ("no authentication")
//! buf.extend_from_slice(&[5, 1, 0, 3, 11]); // and CONNECT to a host name of 11 bytes
//! buf.extend_from_slice(b"example.com");
//! buf.extend_from_slice(&80u16.to_be_bytes());
//! let mut to_app = Vec::new();
//! let mut h = Handshake::new();
//! let request = loop {
//!     match h.handle_input(&buf) {
//!         Ok(Step::NeedMore) => unreachable!("read more from the socket, then call again"),
//!         Ok(Step::Reply { consumed, reply }) => {
//!             buf.drain(..consumed);
//!             to_app.extend_from_slice(&reply);
//!         }
//!         Ok(Step::Request { consumed, request }) => {
//!             buf.drain(..consumed); // what is left is optimistic data for the stream
//!             break request;
//!         }
//!         Err(e) => {
//!             to_app.extend_from_slice(&e.reply().unwrap_or_default());
//!             unreachable!("send the reply, then close: {e}");
//!         }
//!     }
//! };
//! assert_eq!(to_app, socks::NO_AUTH);
//! let isolation = key.isolation(&request.credentials);
//! let Ok(Destination::Exit(host)) = socks::destination(&request.host) else {
//!     unreachable!("an onion service, or a name refused with its reply_code")
//! };
//! // `client.connect(&host, request.port, isolation, now)`; on `Event::StreamOpened`:
//! let opened = socks::reply(request.version, ReplyCode::SUCCEEDED);
//! assert_eq!((host.as_str(), request.port, opened[1]), ("example.com", 80, 0));
//! assert_eq!(isolation, onion_client::Isolation::NONE);
//! ```
//!
//! What C tor does that this does not: the RESOLVE and RESOLVE_PTR commands
//! (socks-extensions §2) are refused as unsupported commands (reply 7), as are BIND and UDP
//! ASSOCIATE in C tor; `SafeSocks` and `PreferSOCKSNoAuth` are not offered.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use onion_cell::relaymsg::EndReason;

use crate::{Error, Isolation};

/// The longest message a client sends in a handshake: an RFC 1929 username/password request
/// with both fields 255 bytes long. A SOCKS4 request whose user id and host name make it
/// longer is refused ([`RequestError::TooLong`]).
pub const MAX_MESSAGE: usize = 1 + 1 + 255 + 1 + 255;

/// The longest SOCKS4 or SOCKS4a request accepted (C tor's `MAX_SOCKS_MESSAGE_LEN`).
const MAX_SOCKS4: usize = 512;

/// The prefix of a SOCKS5 username that carries Tor's extended parameters
/// (socks-extensions "Extended auth", C tor 0.4.9.1-alpha and later).
pub const EXTENDED_AUTH_MAGIC: &[u8] = b"<torS0X>";

/// A SOCKS5 reply code (RFC 1928 §6), or one of the extended codes of proposal 304.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyCode(pub u8);

impl ReplyCode {
    /// 0x00 succeeded.
    pub const SUCCEEDED: ReplyCode = ReplyCode(0x00);
    /// 0x01 general SOCKS server failure.
    pub const GENERAL_FAILURE: ReplyCode = ReplyCode(0x01);
    /// 0x02 connection not allowed by ruleset (an exit policy refused it).
    pub const NOT_ALLOWED: ReplyCode = ReplyCode(0x02);
    /// 0x03 network unreachable.
    pub const NETWORK_UNREACHABLE: ReplyCode = ReplyCode(0x03);
    /// 0x04 host unreachable.
    pub const HOST_UNREACHABLE: ReplyCode = ReplyCode(0x04);
    /// 0x05 connection refused.
    pub const CONNECTION_REFUSED: ReplyCode = ReplyCode(0x05);
    /// 0x06 TTL expired (the exit, or we, gave up waiting).
    pub const TTL_EXPIRED: ReplyCode = ReplyCode(0x06);
    /// 0x07 command not supported.
    pub const COMMAND_NOT_SUPPORTED: ReplyCode = ReplyCode(0x07);
    /// 0x08 address type not supported.
    pub const ADDRESS_TYPE_NOT_SUPPORTED: ReplyCode = ReplyCode(0x08);
    /// 0xF0 (proposal 304): the onion service's descriptor cannot be found.
    pub const HS_DESC_NOT_FOUND: ReplyCode = ReplyCode(0xF0);
    /// 0xF1: the descriptor cannot be parsed, or its signature does not verify.
    pub const HS_DESC_INVALID: ReplyCode = ReplyCode(0xF1);
    /// 0xF2: introduction failed at every introduction point.
    pub const HS_INTRO_FAILED: ReplyCode = ReplyCode(0xF2);
    /// 0xF3: the rendezvous failed.
    pub const HS_REND_FAILED: ReplyCode = ReplyCode(0xF3);
    /// 0xF4: the descriptor is encrypted to authorized clients, and we have no key.
    pub const HS_MISSING_CLIENT_AUTH: ReplyCode = ReplyCode(0xF4);
    /// 0xF5: the descriptor is encrypted to authorized clients, and our key is not one.
    pub const HS_BAD_CLIENT_AUTH: ReplyCode = ReplyCode(0xF5);
    /// 0xF6: the `.onion` address is invalid (length, characters, checksum, version).
    pub const HS_BAD_ADDRESS: ReplyCode = ReplyCode(0xF6);
    /// 0xF7: every introduction point timed out.
    pub const HS_INTRO_TIMEDOUT: ReplyCode = ReplyCode(0xF7);
}

/// Which SOCKS a client speaks; replies follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOCKS4, or SOCKS4a when the request names a host.
    Socks4,
    /// SOCKS5 (RFC 1928).
    Socks5,
}

/// The reply to a request, in the client's version: a SOCKS5 reply (RFC 1928 §6) with
/// `code` and an unspecified IPv4 bound address, as C tor sends it, or a SOCKS4 reply
/// (granted, 90, when `code` is [`ReplyCode::SUCCEEDED`], else rejected, 91).
pub fn reply(version: Version, code: ReplyCode) -> Vec<u8> {
    let bound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    match version {
        Version::Socks5 => Socks5Reply { code, bound }.encode(),
        Version::Socks4 => Socks4Reply {
            granted: code == ReplyCode::SUCCEEDED,
            bound: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        }
        .encode()
        .to_vec(),
    }
}

/// A SOCKS5 reply (RFC 1928 §6): `VER REP RSV ATYP BND.ADDR BND.PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socks5Reply {
    /// The reply code.
    pub code: ReplyCode,
    /// The bound address (C tor sends 0.0.0.0:0 but for RESOLVE).
    pub bound: SocketAddr,
}

impl Socks5Reply {
    /// The reply's bytes (ATYP 1 or 4, as `bound` is).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![5, self.code.0, 0];
        match self.bound {
            SocketAddr::V4(a) => {
                out.push(1);
                out.extend_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                out.push(4);
                out.extend_from_slice(&a.ip().octets());
            }
        }
        out.extend_from_slice(&self.bound.port().to_be_bytes());
        out
    }

    /// Read a reply from the start of `buf` (a SOCKS client's side): `Ok(None)` until it is
    /// complete, else the reply and its length. A bound host name (ATYP 3), which no Tor
    /// sends for CONNECT, is refused.
    pub fn decode(buf: &[u8]) -> Result<Option<(Socks5Reply, usize)>, RequestError> {
        let [ver, code, rsv, atyp, ..] = *buf else {
            return Ok(None);
        };
        if ver != 5 {
            return Err(RequestError::Version(ver));
        }
        if rsv != 0 {
            return Err(RequestError::Reserved(rsv));
        }
        let (ip, end): (std::net::IpAddr, usize) = match atyp {
            1 => match buf.get(4..8) {
                Some(a) => (Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(), 8),
                None => return Ok(None),
            },
            4 => match buf.get(4..20).and_then(|a| <[u8; 16]>::try_from(a).ok()) {
                Some(a) => (Ipv6Addr::from(a).into(), 20),
                None => return Ok(None),
            },
            other => return Err(RequestError::AddressType(other)),
        };
        let Some(&[hi, lo]) = buf.get(end..end + 2) else {
            return Ok(None);
        };
        let bound = SocketAddr::new(ip, u16::from_be_bytes([hi, lo]));
        Ok(Some((
            Socks5Reply {
                code: ReplyCode(code),
                bound,
            },
            end + 2,
        )))
    }
}

/// A SOCKS4 reply: `VN=0 CD DSTPORT DSTIP`, CD 90 (granted) or 91 (rejected or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socks4Reply {
    /// Whether the request was granted.
    pub granted: bool,
    /// The bound address (C tor sends 0.0.0.0:0).
    pub bound: SocketAddrV4,
}

impl Socks4Reply {
    /// The reply's 8 bytes.
    pub fn encode(&self) -> [u8; 8] {
        let [p0, p1] = self.bound.port().to_be_bytes();
        let [a, b, c, d] = self.bound.ip().octets();
        [0, if self.granted { 90 } else { 91 }, p0, p1, a, b, c, d]
    }

    /// Read a reply (a SOCKS client's side): `Ok(None)` until 8 bytes are there; a reply
    /// whose version byte is not 0 or whose code is not 90-93 is refused.
    pub fn decode(buf: &[u8]) -> Result<Option<Socks4Reply>, RequestError> {
        let Some(&[vn, cd, p0, p1, a, b, c, d]) = buf.get(..8) else {
            return Ok(None);
        };
        if vn != 0 {
            return Err(RequestError::Version(vn));
        }
        if !(90..=93).contains(&cd) {
            return Err(RequestError::Command(cd));
        }
        let bound = SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([p0, p1]));
        Ok(Some(Socks4Reply {
            granted: cd == 90,
            bound,
        }))
    }
}

/// The method-selection reply "no authentication required" (RFC 1928 §3).
pub const NO_AUTH: [u8; 2] = [5, 0x00];
/// The method-selection reply "username/password" (RFC 1929).
pub const USER_PASS: [u8; 2] = [5, 0x02];
/// The method-selection reply "no acceptable methods".
pub const NO_METHOD: [u8; 2] = [5, 0xFF];
/// The RFC 1929 reply "success": every username and password is accepted; they only name an
/// isolation class.
pub const AUTH_OK: [u8; 2] = [1, 0];

/// The answer to a plain HTTP request sent to the SOCKS port (socks-extensions §4): an
/// application configured to use the port as an HTTP proxy learns why it fails.
pub const NOT_AN_HTTP_PROXY: &[u8] = b"HTTP/1.0 501 Tor is not an HTTP Proxy\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n\
This is a SOCKS proxy, not an HTTP proxy: configure your application to use it as SOCKS.\n";

/// A username and password (RFC 1929), or a SOCKS4 user id (as the username). An empty
/// field counts as absent, as in C tor (which accepts empty fields, against RFC 1929, for
/// clients that send them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The username, if any and not empty.
    pub username: Option<Vec<u8>>,
    /// The password, if any and not empty.
    pub password: Option<Vec<u8>>,
}

impl Credentials {
    fn new(username: &[u8], password: &[u8]) -> Credentials {
        let field = |f: &[u8]| (!f.is_empty()).then(|| f.to_vec());
        Credentials {
            username: field(username),
            password: field(password),
        }
    }

    /// Whether neither field is given: the stream asks for no isolation of its own.
    pub fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none()
    }
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// SOCKS4(a) or SOCKS5: the version of the final reply ([`reply`]).
    pub version: Version,
    /// The destination: a host name (lower case, printable ASCII), an IPv4 literal or an
    /// IPv6 literal without brackets. Pass it to [`destination`].
    pub host: String,
    /// The destination port (never 0).
    pub port: u16,
    /// What the client authenticated with: its isolation class ([`IsolationKey`]).
    pub credentials: Credentials,
}

/// Why a request (or, client side, a reply) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A version byte that is not the message's.
    Version(u8),
    /// A reserved byte that is not 0.
    Reserved(u8),
    /// A command other than CONNECT (BIND, UDP ASSOCIATE, RESOLVE, RESOLVE_PTR, unknown).
    Command(u8),
    /// An address type other than IPv4 (1), host name (3) or IPv6 (4).
    AddressType(u8),
    /// A host name that is empty, not printable ASCII or (SOCKS4a) has no end.
    HostName,
    /// Port 0.
    ZeroPort,
    /// A SOCKS4 request for address 0.0.0.0.
    ZeroAddress,
    /// A SOCKS4 request longer than C tor accepts (512 bytes).
    TooLong,
}

impl RequestError {
    /// The SOCKS5 reply code C tor 0.4.9 sends for it: 7 for an unsupported command, 1
    /// (general failure) for everything else, an unknown address type included (checked
    /// against C tor 0.4.9.11).
    pub fn code(&self) -> ReplyCode {
        match self {
            RequestError::Command(_) => ReplyCode::COMMAND_NOT_SUPPORTED,
            _ => ReplyCode::GENERAL_FAILURE,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Version(v) => write!(f, "version byte {v}"),
            RequestError::Reserved(r) => write!(f, "reserved byte {r}, not 0"),
            RequestError::Command(c) => write!(f, "command {c} not supported (only CONNECT)"),
            RequestError::AddressType(a) => write!(f, "address type {a} not supported"),
            RequestError::HostName => write!(f, "host name is empty or not printable ASCII"),
            RequestError::ZeroPort => write!(f, "port 0"),
            RequestError::ZeroAddress => write!(f, "SOCKS4 address 0.0.0.0"),
            RequestError::TooLong => write!(f, "SOCKS4 request longer than {MAX_SOCKS4} bytes"),
        }
    }
}

/// A handshake that failed. Send [`SocksError::reply`] (if any), then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocksError {
    /// The first byte is no SOCKS version (4 or 5): closed without a reply.
    Version(u8),
    /// The client sent an HTTP request: it gets [`NOT_AN_HTTP_PROXY`].
    Http,
    /// A SOCKS5 greeting offering no method at all: closed without a reply.
    NoMethods,
    /// A SOCKS5 greeting offering neither "no authentication" nor username/password: the
    /// reply is [`NO_METHOD`].
    NoAcceptableMethod,
    /// An RFC 1929 message whose version byte is not 1: closed without a reply.
    AuthVersion(u8),
    /// A username with [`EXTENDED_AUTH_MAGIC`] in a form C tor does not accept: a format
    /// other than `0`, or `0` followed by more bytes. C tor answers it with a SOCKS5 general
    /// failure.
    ExtendedAuth,
    /// A request this proxy does not serve; the reply is in `version`.
    Request {
        /// The request's version.
        version: Version,
        /// What was wrong.
        error: RequestError,
    },
}

impl SocksError {
    /// The bytes to send before closing, as C tor 0.4.9 does (`None`: close at once).
    pub fn reply(&self) -> Option<Vec<u8>> {
        match self {
            SocksError::Version(_) | SocksError::NoMethods | SocksError::AuthVersion(_) => None,
            SocksError::Http => Some(NOT_AN_HTTP_PROXY.to_vec()),
            SocksError::NoAcceptableMethod => Some(NO_METHOD.to_vec()),
            SocksError::ExtendedAuth => Some(reply(Version::Socks5, ReplyCode::GENERAL_FAILURE)),
            SocksError::Request { version, error } => Some(reply(*version, error.code())),
        }
    }
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksError::Version(v) => write!(f, "SOCKS version {v} (only 4 and 5)"),
            SocksError::Http => write!(f, "an HTTP request on the SOCKS port"),
            SocksError::NoMethods => write!(f, "SOCKS5 greeting offers no method"),
            SocksError::NoAcceptableMethod => write!(
                f,
                "SOCKS5 greeting offers neither \"no authentication\" nor username/password"
            ),
            SocksError::AuthVersion(v) => write!(f, "username/password version {v}, not 1"),
            SocksError::ExtendedAuth => {
                write!(f, "extended SOCKS parameters in a format other than \"0\"")
            }
            SocksError::Request { error, .. } => write!(f, "SOCKS request: {error}"),
        }
    }
}

impl std::error::Error for SocksError {}

/// What to do after [`Handshake::handle_input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The message is not complete: call again with more bytes.
    NeedMore,
    /// The first `consumed` bytes were one message: send `reply`, drop them and go on with
    /// the rest.
    Reply {
        /// Bytes of the message.
        consumed: usize,
        /// What to send.
        reply: Vec<u8>,
    },
    /// The request is complete in the first `consumed` bytes; what follows is the
    /// application's optimistic data (socks-extensions §5), for the stream. The final reply
    /// ([`reply`]) is sent once the stream opened or failed.
    Request {
        /// Bytes of the message.
        consumed: usize,
        /// The request.
        request: Request,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet: the first byte tells the version.
    Start,
    /// SOCKS5 with username/password chosen: the RFC 1929 message is due.
    Auth,
    /// SOCKS5: the request is due.
    Request,
    /// The request was returned, or the handshake failed.
    Done,
}

/// The server side of one SOCKS handshake; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Handshake {
    phase: Phase,
    credentials: Credentials,
    /// An RFC 1929 message was taken (one per handshake).
    got_auth: bool,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake::new()
    }
}

impl Handshake {
    /// A handshake that has received nothing.
    pub fn new() -> Handshake {
        Handshake {
            phase: Phase::Start,
            credentials: Credentials::default(),
            got_auth: false,
        }
    }

    /// Whether the request was returned or the handshake failed: nothing more is parsed.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Look at the bytes received and not consumed yet (`buf` starts with the next message);
    /// at most [`MAX_MESSAGE`] of them are read. After an error, or once the request was
    /// returned, every call fails with [`SocksError::Version`]`(0)`.
    pub fn handle_input(&mut self, buf: &[u8]) -> Result<Step, SocksError> {
        let r = self.step(buf);
        if matches!(r, Err(_) | Ok(Step::Request { .. })) {
            self.phase = Phase::Done;
        }
        r
    }

    fn step(&mut self, buf: &[u8]) -> Result<Step, SocksError> {
        let Some(&first) = buf.first() else {
            return Ok(Step::NeedMore);
        };
        match self.phase {
            Phase::Done => Err(SocksError::Version(0)),
            Phase::Start => match first {
                4 => self.socks4(buf),
                5 => self.greeting(buf),
                b'G' | b'H' | b'P' | b'C' => Err(SocksError::Http),
                v => Err(SocksError::Version(v)),
            },
            Phase::Auth => self.user_pass(buf),
            // A client that sends username/password after choosing no authentication is
            // accepted (socks-extensions §1.1, as C tor).
            Phase::Request if first == 1 && !self.got_auth => self.user_pass(buf),
            Phase::Request => self.socks5_request(buf),
        }
    }

    /// A SOCKS5 greeting: VER NMETHODS METHODS. Username/password is chosen whenever
    /// offered, as C tor does (unless its `PreferSOCKSNoAuth`), so that it isolates the
    /// client's streams.
    fn greeting(&mut self, buf: &[u8]) -> Result<Step, SocksError> {
        let [_, n, ..] = *buf else {
            return Ok(Step::NeedMore);
        };
        if n == 0 {
            return Err(SocksError::NoMethods);
        }
        let end = 2 + usize::from(n);
        let Some(methods) = buf.get(2..end) else {
            return Ok(Step::NeedMore);
        };
        let (reply, next) = if methods.contains(&2) {
            (USER_PASS, Phase::Auth)
        } else if methods.contains(&0) {
            (NO_AUTH, Phase::Request)
        } else {
            return Err(SocksError::NoAcceptableMethod);
        };
        self.phase = next;
        Ok(Step::Reply {
            consumed: end,
            reply: reply.to_vec(),
        })
    }

    /// An RFC 1929 request: VER=1 ULEN UNAME PLEN PASSWD.
    fn user_pass(&mut self, buf: &[u8]) -> Result<Step, SocksError> {
        let [ver, ulen, ..] = *buf else {
            return Ok(Step::NeedMore);
        };
        if ver != 1 {
            return Err(SocksError::AuthVersion(ver));
        }
        let uend = 2 + usize::from(ulen);
        let Some(&plen) = buf.get(uend) else {
            return Ok(Step::NeedMore);
        };
        let end = uend + 1 + usize::from(plen);
        let (Some(user), Some(pass)) = (buf.get(2..uend), buf.get(uend + 1..end)) else {
            return Ok(Step::NeedMore);
        };
        if let Some(ext) = user.strip_prefix(EXTENDED_AUTH_MAGIC) {
            // Format 0: the password is the isolation parameter, the rest of the username is
            // empty. As the username is then always the same bytes, isolating by the pair
            // is isolating by the parameter.
            if ext != b"0" {
                return Err(SocksError::ExtendedAuth);
            }
        }
        self.credentials = Credentials::new(user, pass);
        self.got_auth = true;
        self.phase = Phase::Request;
        Ok(Step::Reply {
            consumed: end,
            reply: AUTH_OK.to_vec(),
        })
    }

    /// A SOCKS5 request: VER CMD RSV ATYP DST.ADDR DST.PORT.
    fn socks5_request(&mut self, buf: &[u8]) -> Result<Step, SocksError> {
        let fail = |error| SocksError::Request {
            version: Version::Socks5,
            error,
        };
        let [ver, cmd, rsv, atyp, ..] = *buf else {
            return Ok(Step::NeedMore);
        };
        if ver != 5 {
            return Err(fail(RequestError::Version(ver)));
        }
        let (host, at) = match atyp {
            1 => match buf.get(4..8) {
                Some(a) => (Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(), 8),
                None => return Ok(Step::NeedMore),
            },
            3 => {
                let Some(&len) = buf.get(4) else {
                    return Ok(Step::NeedMore);
                };
                let end = 5 + usize::from(len);
                let Some(name) = buf.get(5..end) else {
                    return Ok(Step::NeedMore);
                };
                (host_name(name).ok_or(fail(RequestError::HostName))?, end)
            }
            4 => match buf.get(4..20).and_then(|a| <[u8; 16]>::try_from(a).ok()) {
                Some(a) => (Ipv6Addr::from(a).to_string(), 20),
                None => return Ok(Step::NeedMore),
            },
            other => return Err(fail(RequestError::AddressType(other))),
        };
        let Some(&[hi, lo]) = buf.get(at..at + 2) else {
            return Ok(Step::NeedMore);
        };
        // The whole message is parsed before its fields are judged, as C tor does.
        if rsv != 0 {
            return Err(fail(RequestError::Reserved(rsv)));
        }
        if cmd != 1 {
            return Err(fail(RequestError::Command(cmd)));
        }
        let port = u16::from_be_bytes([hi, lo]);
        if port == 0 {
            return Err(fail(RequestError::ZeroPort));
        }
        Ok(Step::Request {
            consumed: at + 2,
            request: Request {
                version: Version::Socks5,
                host,
                port,
                credentials: std::mem::take(&mut self.credentials),
            },
        })
    }

    /// A SOCKS4 request: VN=4 CD DSTPORT DSTIP USERID NUL, and for SOCKS4a (DSTIP 0.0.0.x,
    /// x ≠ 0) HOST NUL after it.
    fn socks4(&mut self, buf: &[u8]) -> Result<Step, SocksError> {
        let fail = |error| SocksError::Request {
            version: Version::Socks4,
            error,
        };
        let buf = &buf[..buf.len().min(MAX_SOCKS4)];
        let Some(&[_, cmd, p0, p1, a, b, c, d]) = buf.get(..8) else {
            return Ok(Step::NeedMore);
        };
        // A NUL-terminated field starting at `from`: its bytes and where the next starts.
        let field = |from: usize| -> Result<Option<(&[u8], usize)>, SocksError> {
            let rest = buf.get(from..).unwrap_or(&[]);
            match rest.iter().position(|&x| x == 0) {
                Some(n) => Ok(Some((&rest[..n], from + n + 1))),
                None if buf.len() >= MAX_SOCKS4 => Err(fail(RequestError::TooLong)),
                None => Ok(None),
            }
        };
        let Some((user, after_user)) = field(8)? else {
            return Ok(Step::NeedMore);
        };
        let ip = Ipv4Addr::new(a, b, c, d);
        let socks4a = a == 0 && b == 0 && c == 0 && d != 0;
        let (host, end) = if socks4a {
            let Some((name, end)) = field(after_user)? else {
                return Ok(Step::NeedMore);
            };
            (host_name(name).ok_or(fail(RequestError::HostName))?, end)
        } else {
            (ip.to_string(), after_user)
        };
        if cmd != 1 {
            return Err(fail(RequestError::Command(cmd)));
        }
        let port = u16::from_be_bytes([p0, p1]);
        if port == 0 {
            return Err(fail(RequestError::ZeroPort));
        }
        if ip.is_unspecified() {
            return Err(fail(RequestError::ZeroAddress));
        }
        Ok(Step::Request {
            consumed: end,
            request: Request {
                version: Version::Socks4,
                host,
                port,
                credentials: Credentials::new(user, b""),
            },
        })
    }
}

/// A requested host name, lower-cased, if it is not empty and is printable ASCII.
fn host_name(name: &[u8]) -> Option<String> {
    let ok = !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic());
    ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The map from SOCKS credentials to isolation tokens (C tor's `IsolateSOCKSAuth`; path-spec
/// §2.2): streams whose username or password differ never share a circuit, streams with the
/// same pair may, and streams without any (or with both fields empty) get
/// [`Isolation::NONE`]. A SOCKS4 user id counts as a username without a password, as in C
/// tor.
///
/// The token is a keyed digest of the pair (HMAC-SHA256 under a key the embedder draws once
/// from its random number generator), so the map holds no state and no table grows with the
/// number of pairs an application uses; without the key, nobody can choose two pairs that
/// share a token.
#[derive(Clone)]
pub struct IsolationKey {
    key: [u8; 32],
}

impl fmt::Debug for IsolationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IsolationKey(..)")
    }
}

impl IsolationKey {
    /// A map keyed with `key` (random bytes, drawn once per run).
    pub fn new(key: [u8; 32]) -> IsolationKey {
        IsolationKey { key }
    }

    /// The isolation token of streams that authenticated with `c`.
    pub fn isolation(&self, c: &Credentials) -> Isolation {
        if c.is_empty() {
            return Isolation::NONE;
        }
        // Each field with a presence byte and its length, so that no two pairs share an input.
        let enc = |f: &Option<Vec<u8>>| match f {
            None => vec![0],
            Some(v) => [&[1, v.len() as u8][..], v].concat(),
        };
        let d = onion_crypto::kdf::hmac_sha256(&self.key, &[&enc(&c.username), &enc(&c.password)]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&d[..8]);
        // 0 is NONE: the one pair whose digest starts with eight zero bytes takes token 1.
        Isolation(u64::from_be_bytes(t).max(1))
    }
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
    /// The reply code C tor 0.4.9 sends: it closes these requests with END reason
    /// TORPROTOCOL, which RFC 1928 reports as a general failure; with extended errors, a bad
    /// onion address is [`ReplyCode::HS_BAD_ADDRESS`] (`.exit` and invalid names have no
    /// extended code).
    pub fn reply_code(&self, extended: bool) -> ReplyCode {
        match self {
            NameRefused::BadOnion(_) if extended => ReplyCode::HS_BAD_ADDRESS,
            _ => ReplyCode::GENERAL_FAILURE,
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

/// Where `host` (as [`Request::host`] has it) leads.
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
        return match inner.parse::<Ipv6Addr>() {
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

/// The reply code for the RELAY_END reason (tor-spec §6.3) that finally refused a stream: the
/// one C tor's SocksPort sends (`stream_end_reason_to_socks5_response`). A stream that ended
/// cleanly before CONNECTED counts as DONE (an onion service ends a stream to a port it does
/// not serve so).
pub fn end_reason_code(reason: EndReason) -> ReplyCode {
    match reason {
        EndReason::EXITPOLICY => ReplyCode::NOT_ALLOWED,
        // The name did not resolve, or the exit has no route to it.
        EndReason::RESOLVEFAILED | EndReason::NOROUTE => ReplyCode::HOST_UNREACHABLE,
        // Refused, reset, or closed before CONNECTED.
        EndReason::CONNECTREFUSED | EndReason::DONE | EndReason::CONNRESET => {
            ReplyCode::CONNECTION_REFUSED
        }
        // The exit (or we) gave up waiting.
        EndReason::TIMEOUT => ReplyCode::TTL_EXPIRED,
        _ => ReplyCode::GENERAL_FAILURE,
    }
}

/// The reply code for a stream the client could not open (its [`Error`], from
/// [`Client::connect`](crate::Client::connect) or [`crate::Event::StreamClosed`]): C tor's
/// for the END reason that refused it ([`end_reason_code`]); for an onion service, 4 (host
/// unreachable) when no descriptor was found or usable or no introduction succeeded, as C
/// tor closes those with END reason RESOLVEFAILED, or with `extended` (C tor's
/// `ExtendedErrors` SocksPort flag) the proposal 304 code of the step that failed
/// ([`crate::hs::HsError::socks5_reply`]); 6 (TTL expired) for any other timeout; 1 (general
/// failure) otherwise.
pub fn reply_code(e: &Error, extended: bool) -> ReplyCode {
    use crate::hs::HsError;
    match e {
        Error::StreamEnded(reason) => end_reason_code(*reason),
        Error::OnionService(h) if extended => ReplyCode(h.socks5_reply()),
        Error::OnionService(
            HsError::DescriptorNotFound { .. }
            | HsError::DescriptorInvalid(_)
            | HsError::IntroFailed { .. }
            | HsError::IntroTimedOut,
        ) => ReplyCode::HOST_UNREACHABLE,
        Error::OnionService(_) => ReplyCode::GENERAL_FAILURE,
        e if e.kind() == crate::ErrorKind::Timeout => ReplyCode::TTL_EXPIRED,
        _ => ReplyCode::GENERAL_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `msgs` one after the other (each whole), returning the replies and the result of
    /// the last.
    fn run(msgs: &[&[u8]]) -> (Vec<Vec<u8>>, Result<Step, SocksError>) {
        let mut h = Handshake::new();
        let mut replies = Vec::new();
        let mut last = Ok(Step::NeedMore);
        for m in msgs {
            last = h.handle_input(m);
            if let Ok(Step::Reply { consumed, reply }) = &last {
                assert_eq!(*consumed, m.len());
                replies.push(reply.clone());
            }
        }
        (replies, last)
    }

    fn request(r: Result<Step, SocksError>) -> Request {
        match r {
            Ok(Step::Request { request, .. }) => request,
            other => panic!("not a request: {other:?}"),
        }
    }

    /// Username/password is chosen when offered (C tor's IsolateSOCKSAuth), "no
    /// authentication" otherwise; every prefix of a message needs more bytes.
    #[test]
    fn socks5_handshake_and_credentials() {
        let greet = [5, 2, 0, 2];
        let auth = [1, 2, b'u', b'1', 3, b'p', b'w', b'd'];
        let mut req = vec![5, 1, 0, 3, 9];
        req.extend_from_slice(b"Example.C");
        req.extend_from_slice(&[0, 80]);
        let mut h = Handshake::new();
        for msg in [&greet[..], &auth, &req] {
            for n in 0..msg.len() {
                assert_eq!(h.clone().handle_input(&msg[..n]), Ok(Step::NeedMore), "{n}");
            }
            let mut with_more = msg.to_vec();
            with_more.extend_from_slice(b"GET / HTTP/1.0\r\n");
            match h.handle_input(&with_more).unwrap() {
                Step::Reply { consumed, reply } => {
                    assert_eq!(consumed, msg.len());
                    assert!(reply == USER_PASS || reply == AUTH_OK, "{reply:?}");
                }
                Step::Request { consumed, request } => {
                    assert_eq!(consumed, msg.len());
                    assert_eq!((request.host.as_str(), request.port), ("example.c", 80));
                    assert_eq!(request.version, Version::Socks5);
                    assert_eq!(request.credentials, Credentials::new(b"u1", b"pwd"));
                }
                Step::NeedMore => panic!("complete message"),
            }
        }
        assert!(h.is_done());
        assert!(h.handle_input(&req).is_err());
        // No authentication offered alone: chosen, and the request has no credentials.
        let (replies, last) = run(&[&[5, 1, 0], &[5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]]);
        assert_eq!(replies, [NO_AUTH.to_vec()]);
        let r = request(last);
        assert_eq!((r.host.as_str(), r.port), ("127.0.0.1", 8080));
        assert!(r.credentials.is_empty());
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 1]);
        assert_eq!(request(run(&[&[5, 1, 0], &v6]).1).host, "::1");
        // Username/password after "no authentication" was chosen is taken (socks-extensions
        // §1.1; C tor 0.4.9.11 answers 01 00), once.
        let (replies, last) = run(&[&[5, 1, 0], &[1, 1, b'u', 1, b'p'], &req]);
        assert_eq!(replies, [NO_AUTH.to_vec(), AUTH_OK.to_vec()]);
        assert_eq!(request(last).credentials, Credentials::new(b"u", b"p"));
        // Empty fields count as absent, as in C tor.
        let (_, last) = run(&[&greet, &[1, 0, 0], &req]);
        assert!(request(last).credentials.is_empty());
    }

    /// What C tor 0.4.9.11 answers to requests it refuses (checked against it: the reply
    /// bytes, or a close without reply).
    #[test]
    fn refusals_get_c_tors_replies() {
        let refused = |msgs: &[&[u8]]| run(msgs).1.unwrap_err();
        let fail5 = |c: u8| Some(vec![5, c, 0, 1, 0, 0, 0, 0, 0, 0]);
        let req = |cmd: u8, rsv: u8, atyp: u8, rest: &[u8]| {
            let mut v = vec![5, cmd, rsv, atyp];
            v.extend_from_slice(rest);
            v
        };
        let name = [1, b'a', 0, 80];
        // BIND: command not supported. An unknown address type, a reserved byte, a bad
        // host name, port 0: general failure.
        for (msg, code, want) in [
            (req(2, 0, 3, &name), 7, RequestError::Command(2)),
            (req(0xF0, 0, 3, &name), 7, RequestError::Command(0xF0)),
            (req(1, 0, 9, &[1, 2]), 1, RequestError::AddressType(9)),
            (req(1, 1, 3, &name), 1, RequestError::Reserved(1)),
            (
                req(1, 0, 3, &[3, b'a', b' ', b'b', 0, 80]),
                1,
                RequestError::HostName,
            ),
            (req(1, 0, 3, &[0, 0, 80]), 1, RequestError::HostName),
            (req(1, 0, 3, &[1, b'a', 0, 0]), 1, RequestError::ZeroPort),
            (req(4, 0, 3, &name), 7, RequestError::Command(4)),
        ] {
            let e = refused(&[&[5, 1, 0], &msg]);
            assert_eq!(
                e,
                SocksError::Request {
                    version: Version::Socks5,
                    error: want
                }
            );
            assert_eq!(e.reply(), fail5(code), "{msg:?}");
        }
        // Closed without a reply: an unknown version, a greeting without methods.
        assert_eq!(refused(&[&[6, 1, 0]]), SocksError::Version(6));
        assert_eq!(refused(&[&[5, 0]]), SocksError::NoMethods);
        assert_eq!(SocksError::NoMethods.reply(), None);
        assert_eq!(SocksError::Version(6).reply(), None);
        // No acceptable method: 05 FF.
        let e = refused(&[&[5, 1, 1]]);
        assert_eq!(e.reply(), Some(NO_METHOD.to_vec()));
        // An HTTP request: the 501 page.
        let e = refused(&[b"GET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(e, SocksError::Http);
        assert!(e.reply().unwrap().starts_with(b"HTTP/1.0 501 "));
        assert_eq!(
            refused(&[&[5, 1, 2], &[7, 0, 0]]),
            SocksError::AuthVersion(7)
        );
    }

    /// Extended parameters (socks-extensions "Extended auth"): format 0 with nothing after
    /// it is taken; any other form gets a SOCKS5 general failure instead of the RFC 1929
    /// answer, as C tor 0.4.9.11 sends.
    #[test]
    fn extended_auth_formats() {
        let auth = |user: &[u8], pass: &[u8]| {
            let mut m = vec![1, user.len() as u8];
            m.extend_from_slice(user);
            m.push(pass.len() as u8);
            m.extend_from_slice(pass);
            m
        };
        let (replies, last) = run(&[&[5, 1, 2], &auth(b"<torS0X>0", b"abc")]);
        assert_eq!(replies.last().unwrap(), &AUTH_OK.to_vec());
        assert!(last.is_ok());
        for user in [&b"<torS0X>0x"[..], b"<torS0X>1", b"<torS0X>2", b"<torS0X>"] {
            let e = run(&[&[5, 1, 2], &auth(user, b"abc")]).1.unwrap_err();
            assert_eq!(e, SocksError::ExtendedAuth);
            assert_eq!(e.reply(), Some(vec![5, 1, 0, 1, 0, 0, 0, 0, 0, 0]));
        }
    }

    #[test]
    fn socks4_and_socks4a() {
        let mut m = vec![4, 1, 0, 80, 0, 0, 0, 1];
        m.extend_from_slice(b"user\0Example.COM\0");
        for n in 0..m.len() {
            assert_eq!(
                Handshake::new().handle_input(&m[..n]),
                Ok(Step::NeedMore),
                "{n}"
            );
        }
        let r = request(Handshake::new().handle_input(&m));
        assert_eq!((r.host.as_str(), r.port), ("example.com", 80));
        assert_eq!(
            (r.version, r.credentials),
            (Version::Socks4, Credentials::new(b"user", b""))
        );
        let r = request(Handshake::new().handle_input(&[4, 1, 1, 187, 10, 0, 0, 1, 0]));
        assert_eq!((r.host.as_str(), r.port), ("10.0.0.1", 443));
        assert!(r.credentials.is_empty());
        // C tor 0.4.9.11: BIND and address 0.0.0.0 get 91 (rejected).
        for bad in [
            &[4, 2, 0, 80, 0, 0, 0, 1, 0, b'a', 0][..],
            &[4, 1, 0, 80, 0, 0, 0, 0, 0],
        ] {
            let e = Handshake::new().handle_input(bad).unwrap_err();
            assert_eq!(e.reply(), Some(vec![0, 91, 0, 0, 0, 0, 0, 0]), "{bad:?}");
        }
        // A user id without an end, longer than C tor takes.
        let long = [&[4, 1, 0, 80, 0, 0, 0, 1][..], &[b'x'; 600]].concat();
        assert_eq!(
            Handshake::new().handle_input(&long),
            Err(SocksError::Request {
                version: Version::Socks4,
                error: RequestError::TooLong
            })
        );
        assert_eq!(
            Handshake::new().handle_input(&long[..300]),
            Ok(Step::NeedMore)
        );
        assert_eq!(
            reply(Version::Socks4, ReplyCode::SUCCEEDED),
            [0, 90, 0, 0, 0, 0, 0, 0]
        );
    }

    /// IsolateSOCKSAuth: each pair is its own token, the same pair the same token; no
    /// credentials (or empty ones) share `Isolation::NONE`; a SOCKS4 user id is a username.
    #[test]
    fn credentials_choose_the_isolation_token() {
        let k = IsolationKey::new([7; 32]);
        let c = |u: &[u8], p: &[u8]| k.isolation(&Credentials::new(u, p));
        assert_eq!(c(b"", b""), Isolation::NONE);
        assert_eq!(k.isolation(&Credentials::default()), Isolation::NONE);
        let a = c(b"alice", b"1");
        assert_ne!(a, Isolation::NONE);
        assert_eq!(a, c(b"alice", b"1"));
        for other in [
            c(b"alice", b"2"),
            c(b"alice", b""),
            c(b"", b"alice"),
            c(b"alice1", b""),
        ] {
            assert_ne!(a, other);
            assert_ne!(other, Isolation::NONE);
        }
        assert_ne!(c(b"ab", b"c"), c(b"a", b"bc"));
        // Another key, other tokens.
        assert_ne!(
            IsolationKey::new([8; 32]).isolation(&Credentials::new(b"alice", b"1")),
            a
        );
    }

    #[test]
    fn special_names() {
        // The ed25519 base point: a valid identity key.
        let mut key = [0x66u8; 32];
        key[0] = 0x58;
        let addr = onion_hs::OnionAddress::from_public_key(key);
        let label = addr.encode();
        let onion = destination;
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
            assert_eq!(r.as_ref().unwrap_err().reply_code(false), ReplyCode(1));
            assert_eq!(r.unwrap_err().reply_code(true), ReplyCode(0xF6));
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
        assert_eq!(NameRefused::DotExit.reply_code(true), ReplyCode(1));
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

    #[test]
    fn end_reasons_map_to_c_tors_replies() {
        let code = |r| end_reason_code(r).0;
        assert_eq!(code(EndReason::EXITPOLICY), 2);
        assert_eq!(code(EndReason::NOROUTE), 4);
        assert_eq!(code(EndReason::RESOLVEFAILED), 4);
        assert_eq!(code(EndReason::DONE), 5);
        assert_eq!(code(EndReason::CONNRESET), 5);
        assert_eq!(code(EndReason::CONNECTREFUSED), 5);
        assert_eq!(code(EndReason::TIMEOUT), 6);
        assert_eq!(code(EndReason::TORPROTOCOL), 1);
        assert_eq!(code(EndReason::MISC), 1);
        assert_eq!(code(EndReason::DESTROY), 1);
        assert_eq!(code(EndReason::RESOURCELIMIT), 1);
    }

    /// Onion-service failures get C tor's replies: 4 for a descriptor or introduction that
    /// failed, 1 for the rest; with extended errors, the codes of proposal 304.
    #[test]
    fn onion_failures_map_to_c_tors_replies() {
        use crate::hs::HsError;
        let code = |e: &Error, x| reply_code(e, x);
        let not_found = Error::OnionService(HsError::DescriptorNotFound {
            tried: 6,
            last: "404".into(),
        });
        assert_eq!(code(&not_found, false), ReplyCode::HOST_UNREACHABLE);
        assert_eq!(code(&not_found, true), ReplyCode::HS_DESC_NOT_FOUND);
        let rend = Error::OnionService(HsError::RendezvousFailed("x".into()));
        assert_eq!(code(&rend, false), ReplyCode::GENERAL_FAILURE);
        assert_eq!(code(&rend, true), ReplyCode::HS_REND_FAILED);
        let auth = Error::OnionService(HsError::ClientAuthMissing);
        assert_eq!(code(&auth, false), ReplyCode::GENERAL_FAILURE);
        assert_eq!(code(&auth, true), ReplyCode::HS_MISSING_CLIENT_AUTH);
        let timeout = Error::OnionService(HsError::IntroTimedOut);
        assert_eq!(code(&timeout, false), ReplyCode::HOST_UNREACHABLE);
        assert_eq!(code(&timeout, true), ReplyCode::HS_INTRO_TIMEDOUT);
        let refused = Error::StreamEnded(EndReason::EXITPOLICY);
        assert_eq!(code(&refused, true), ReplyCode::NOT_ALLOWED);
        let stream_timeout = Error::StreamEnded(EndReason::TIMEOUT);
        assert_eq!(code(&stream_timeout, false), ReplyCode::TTL_EXPIRED);
        assert_eq!(code(&Error::Misuse("x"), false), ReplyCode::GENERAL_FAILURE);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes, in any chunks: no panic, never more consumed than given, never more
        /// than MAX_MESSAGE bytes in one message, and a request's host is one `destination`
        /// takes without panicking.
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..700),
                        cuts in proptest::collection::vec(0usize..700, 0..6)) {
            let mut h = Handshake::new();
            let mut buf: Vec<u8> = Vec::new();
            let mut cuts = cuts;
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut from = 0;
            for cut in cuts {
                let cut = cut.min(data.len());
                buf.extend_from_slice(&data[from..cut.max(from)]);
                from = cut.max(from);
                loop {
                    match h.handle_input(&buf) {
                        Ok(Step::NeedMore) => break,
                        Ok(Step::Reply { consumed, .. }) => {
                            prop_assert!(consumed > 0 && consumed <= buf.len().min(MAX_MESSAGE));
                            buf.drain(..consumed);
                        }
                        Ok(Step::Request { consumed, request }) => {
                            prop_assert!(consumed <= buf.len().min(MAX_SOCKS4));
                            prop_assert!(request.port != 0);
                            let _ = destination(&request.host);
                            return Ok(());
                        }
                        Err(e) => {
                            let _ = e.reply();
                            return Ok(());
                        }
                    }
                }
            }
        }

        #[test]
        fn replies_round_trip(code in any::<u8>(), v6 in any::<bool>(), ip in any::<[u8; 16]>(),
                              port in any::<u16>(), granted in any::<bool>()) {
            let bound = match v6 {
                true => SocketAddr::from((Ipv6Addr::from(ip), port)),
                false => SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], port)),
            };
            let r = Socks5Reply { code: ReplyCode(code), bound };
            let bytes = r.encode();
            prop_assert_eq!(Socks5Reply::decode(&bytes), Ok(Some((r, bytes.len()))));
            for n in 0..bytes.len() {
                prop_assert_eq!(Socks5Reply::decode(&bytes[..n]), Ok(None));
            }
            let r4 = Socks4Reply {
                granted,
                bound: SocketAddrV4::new(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]), port),
            };
            prop_assert_eq!(Socks4Reply::decode(&r4.encode()), Ok(Some(r4)));
        }
    }
}
