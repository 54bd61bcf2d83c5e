//! Channel cells: commands and typed bodies (tor-spec §3 "Cell Packet format", §4
//! "Negotiating and initializing connections", §5.1 "CREATE and CREATED cells", §5.4
//! "Tearing down circuits", §7.2 "Link padding").
//!
//! A [`ChanCell`] is a circuit id plus a [`ChanMsg`]. Decoding borrows variable-size
//! payloads from the input (`Cow::Borrowed`, [`RelayPayload::Borrowed`]); call
//! [`ChanMsg::into_owned`] to keep a message beyond the input buffer. The framing (circuit
//! id width, fixed versus variable length) lives in [`crate::codec`].

use crate::circid::CircId;
use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::writer::{len_u16, len_u8, Writer};
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the body of a fixed-length cell (PAYLOAD_LEN, tor-spec §0.2).
pub const CELL_BODY_LEN: usize = 509;

/// TAP_C_HANDSHAKE_LEN (tor-spec §0.2): the CREATE onion skin.
pub const TAP_C_HANDSHAKE_LEN: usize = 186;
/// TAP_S_HANDSHAKE_LEN (tor-spec §0.2): the CREATED reply.
pub const TAP_S_HANDSHAKE_LEN: usize = 148;
/// HASH_LEN (tor-spec §0.2), the size of CREATE_FAST key material.
pub const HASH_LEN: usize = 20;

/// A channel cell command byte (tor-spec §3).
///
/// A newtype rather than an enum so that unknown commands are representable and kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChanCmd(pub u8);

macro_rules! chan_cmds {
    ($($(#[$doc:meta])* $name:ident = $v:expr,)*) => {
        impl ChanCmd {
            $($(#[$doc])* pub const $name: ChanCmd = ChanCmd($v);)*

            /// The spec's name of this command, if it is known.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($v => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

chan_cmds! {
    /// 0: link padding (fixed length).
    PADDING = 0,
    /// 1: CREATE, TAP handshake (obsolete).
    CREATE = 1,
    /// 2: CREATED, TAP reply (obsolete).
    CREATED = 2,
    /// 3: RELAY, end-to-end data.
    RELAY = 3,
    /// 4: DESTROY, tear down a circuit.
    DESTROY = 4,
    /// 5: CREATE_FAST, first hop without public key.
    CREATE_FAST = 5,
    /// 6: CREATED_FAST.
    CREATED_FAST = 6,
    /// 7: VERSIONS (variable length).
    VERSIONS = 7,
    /// 8: NETINFO.
    NETINFO = 8,
    /// 9: RELAY_EARLY, a RELAY cell limited in number (§5.6).
    RELAY_EARLY = 9,
    /// 10: CREATE2.
    CREATE2 = 10,
    /// 11: CREATED2.
    CREATED2 = 11,
    /// 12: PADDING_NEGOTIATE (§7.2).
    PADDING_NEGOTIATE = 12,
    /// 128: VPADDING (variable length).
    VPADDING = 128,
    /// 129: CERTS (variable length).
    CERTS = 129,
    /// 130: AUTH_CHALLENGE (variable length).
    AUTH_CHALLENGE = 130,
    /// 131: AUTHENTICATE (variable length).
    AUTHENTICATE = 131,
    /// 132: AUTHORIZE (variable length, reserved).
    AUTHORIZE = 132,
}

impl ChanCmd {
    /// True if this command uses the variable-length cell format on a link protocol that
    /// has variable-length cells for commands >= 128 (v3 and later, and before
    /// negotiation); see also [`crate::codec::CellFormat::is_var_len`].
    pub fn is_var_len_v3(self) -> bool {
        self.0 == 7 || self.0 >= 128
    }
}

impl fmt::Debug for ChanCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "ChanCmd({})", self.0),
        }
    }
}

impl fmt::Display for ChanCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A DESTROY / RELAY_TRUNCATED reason (tor-spec §5.4). Unknown values are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DestroyReason(pub u8);

macro_rules! named_u8 {
    ($ty:ident { $($(#[$doc:meta])* $name:ident = $v:expr,)* }) => {
        impl $ty {
            $($(#[$doc])* pub const $name: $ty = $ty($v);)*
            /// The spec's name of this value, if known.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($v => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{n}({})", self.0),
                    None => write!(f, "{}({})", stringify!($ty), self.0),
                }
            }
        }
    };
}
pub(crate) use named_u8;

named_u8!(DestroyReason {
    /// 0: no reason given.
    NONE = 0,
    /// 1: Tor protocol violation.
    PROTOCOL = 1,
    /// 2: internal error.
    INTERNAL = 2,
    /// 3: a client sent a TRUNCATE command.
    REQUESTED = 3,
    /// 4: not currently operating; trying to save bandwidth.
    HIBERNATING = 4,
    /// 5: out of memory, sockets, or circuit ids.
    RESOURCELIMIT = 5,
    /// 6: unable to reach relay.
    CONNECTFAILED = 6,
    /// 7: connected to relay, but its OR identity was not as expected.
    OR_IDENTITY = 7,
    /// 8: the channel carrying this circuit died.
    CHANNEL_CLOSED = 8,
    /// 9: the circuit has expired for being dirty or old.
    FINISHED = 9,
    /// 10: circuit construction took too long.
    TIMEOUT = 10,
    /// 11: the circuit was destroyed without a client TRUNCATE.
    DESTROYED = 11,
    /// 12: request for unknown onion service.
    NOSUCHSERVICE = 12,
});

/// A CREATE2 / EXTEND2 handshake type (HTYPE, tor-spec §5.1, proposal 332).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HandshakeType(pub u16);

impl HandshakeType {
    /// 0x0000: TAP.
    pub const TAP: HandshakeType = HandshakeType(0);
    /// 0x0002: ntor (tor-spec §5.1.4).
    pub const NTOR: HandshakeType = HandshakeType(2);
    /// 0x0003: ntor-v3 (proposal 332).
    pub const NTOR_V3: HandshakeType = HandshakeType(3);

    /// The name of this handshake type, if known.
    pub fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("TAP"),
            2 => Some("ntor"),
            3 => Some("ntor-v3"),
            _ => None,
        }
    }
}

impl fmt::Debug for HandshakeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "HandshakeType({})", self.0),
        }
    }
}

/// The 509-byte body of a RELAY or RELAY_EARLY cell, still encrypted as it travels on a
/// channel. Borrowed from the input on decode; owned (boxed) when built or kept.
///
/// Use [`RelayPayload::to_mut`] to get a mutable array for in-place decryption, and
/// [`crate::relay::RelayCellBody`] to read the header once the body is decrypted.
///
/// Equality and hashing compare the bytes, whether borrowed or owned.
#[derive(Clone)]
pub enum RelayPayload<'a> {
    /// Borrowed from the decoded input.
    Borrowed(&'a [u8; CELL_BODY_LEN]),
    /// Owned.
    Owned(Box<[u8; CELL_BODY_LEN]>),
}

impl RelayPayload<'_> {
    /// The 509 bytes.
    pub fn as_bytes(&self) -> &[u8; CELL_BODY_LEN] {
        match self {
            RelayPayload::Borrowed(b) => b,
            RelayPayload::Owned(b) => b,
        }
    }

    /// A mutable view, copying borrowed bytes into a box first.
    pub fn to_mut(&mut self) -> &mut [u8; CELL_BODY_LEN] {
        if let RelayPayload::Borrowed(b) = *self {
            *self = RelayPayload::Owned(Box::new(*b));
        }
        match self {
            RelayPayload::Owned(b) => b,
            // Unreachable after the conversion above; return a fresh box rather than panic.
            RelayPayload::Borrowed(_) => {
                *self = RelayPayload::Owned(Box::new([0; CELL_BODY_LEN]));
                self.to_mut()
            }
        }
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> RelayPayload<'static> {
        match self {
            RelayPayload::Borrowed(b) => RelayPayload::Owned(Box::new(*b)),
            RelayPayload::Owned(b) => RelayPayload::Owned(b),
        }
    }

    /// The owned boxed array (copying if borrowed).
    pub fn into_box(self) -> Box<[u8; CELL_BODY_LEN]> {
        match self {
            RelayPayload::Borrowed(b) => Box::new(*b),
            RelayPayload::Owned(b) => b,
        }
    }
}

impl PartialEq for RelayPayload<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for RelayPayload<'_> {}

impl core::hash::Hash for RelayPayload<'_> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl From<[u8; CELL_BODY_LEN]> for RelayPayload<'static> {
    fn from(b: [u8; CELL_BODY_LEN]) -> Self {
        RelayPayload::Owned(Box::new(b))
    }
}

impl fmt::Debug for RelayPayload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayPayload(")?;
        for b in &self.as_bytes()[..16] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// VERSIONS body (tor-spec §4.1): a list of 2-byte link protocol versions, no padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Versions {
    /// The versions offered, in the order sent.
    pub versions: Vec<u16>,
}

impl Versions {
    /// The highest version present in both `self` and `ours` (tor-spec §4.1).
    pub fn best_shared(&self, ours: &[u16]) -> Option<u16> {
        self.versions
            .iter()
            .copied()
            .filter(|v| ours.contains(v))
            .max()
    }
}

/// One certificate of a CERTS cell (tor-spec §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertEntry<'a> {
    /// CertType (1..=7 defined; see [`CertEntry::TYPE_NAMES`]).
    pub cert_type: u8,
    /// The certificate bytes (X.509 DER for types 1–3, cert-spec format otherwise).
    pub body: Cow<'a, [u8]>,
}

impl CertEntry<'_> {
    /// Names of CertTypes 1..=7 (index = type - 1).
    pub const TYPE_NAMES: [&'static str; 7] = [
        "RSA link",
        "RSA identity",
        "RSA authenticate",
        "Ed25519 signing",
        "Ed25519 TLS link",
        "Ed25519 authenticate",
        "RSA->Ed25519 cross-cert",
    ];
}

/// CERTS body (tor-spec §4.2). Extra bytes after the last certificate are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Certs<'a> {
    /// The certificates in the order sent.
    pub certs: Vec<CertEntry<'a>>,
}

impl<'a> Certs<'a> {
    /// The first certificate of the given type.
    pub fn find(&self, cert_type: u8) -> Option<&[u8]> {
        self.certs
            .iter()
            .find(|c| c.cert_type == cert_type)
            .map(|c| &*c.body)
    }
}

/// AUTH_CHALLENGE body (tor-spec §4.3). Extra bytes are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthChallenge {
    /// The random challenge.
    pub challenge: [u8; 32],
    /// Authentication methods accepted (1 = RSA-SHA256-TLSSecret, 3 = Ed25519-SHA256-RFC5705).
    pub methods: Vec<u16>,
}

/// AUTHENTICATE body (tor-spec §4.4). Extra bytes after the authentication are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authenticate<'a> {
    /// AuthType (1 or 3).
    pub auth_type: u16,
    /// The Authentication field (AUTH0001/AUTH0003 ... SIG), signed by the initiator.
    pub auth: Cow<'a, [u8]>,
}

/// An address in a NETINFO cell (tor-spec §4.5). Unknown types and wrong lengths are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetinfoAddr<'a> {
    /// ATYPE 0x04, ALEN 4.
    Ip(IpAddr),
    /// Any other ATYPE/ALEN combination ("should be ignored" by the receiver).
    Other {
        /// ATYPE.
        atype: u8,
        /// AVAL.
        value: Cow<'a, [u8]>,
    },
}

impl<'a> NetinfoAddr<'a> {
    fn decode(r: &mut Reader<'a>) -> Result<Self> {
        let atype = r.u8("NETINFO ATYPE")?;
        let alen = r.u8("NETINFO ALEN")? as usize;
        let v = r.take(alen, "NETINFO AVAL")?;
        Ok(match (atype, v.len()) {
            (4, 4) => NetinfoAddr::Ip(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            (6, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(v);
                NetinfoAddr::Ip(IpAddr::V6(Ipv6Addr::from(a)))
            }
            _ => NetinfoAddr::Other {
                atype,
                value: Cow::Borrowed(v),
            },
        })
    }

    fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        match self {
            NetinfoAddr::Ip(IpAddr::V4(a)) => {
                w.write_all(&[4, 4]);
                w.write_all(&a.octets());
            }
            NetinfoAddr::Ip(IpAddr::V6(a)) => {
                w.write_all(&[6, 16]);
                w.write_all(&a.octets());
            }
            NetinfoAddr::Other { atype, value } => {
                w.write_u8(*atype);
                w.write_u8(len_u8("NETINFO ALEN", value.len())?);
                w.write_all(value);
            }
        }
        Ok(())
    }

    fn into_owned(self) -> NetinfoAddr<'static> {
        match self {
            NetinfoAddr::Ip(a) => NetinfoAddr::Ip(a),
            NetinfoAddr::Other { atype, value } => NetinfoAddr::Other {
                atype,
                value: Cow::Owned(value.into_owned()),
            },
        }
    }

    /// The address, if it is a well-formed IPv4 or IPv6 address.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            NetinfoAddr::Ip(a) => Some(*a),
            NetinfoAddr::Other { .. } => None,
        }
    }
}

/// NETINFO body (tor-spec §4.5). Extra bytes are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netinfo<'a> {
    /// TIME: seconds since the Unix epoch (clients send 0).
    pub timestamp: u32,
    /// OTHERADDR: the address of the peer, as the sender sees it.
    pub other_addr: NetinfoAddr<'a>,
    /// The sender's own addresses (at most 255).
    pub my_addrs: Vec<NetinfoAddr<'a>>,
}

/// CREATE2 body (tor-spec §5.1): HTYPE, HLEN, HDATA.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Create2<'a> {
    /// HTYPE.
    pub handshake_type: HandshakeType,
    /// HDATA (at most 505 bytes so that it fits in a cell).
    pub hdata: Cow<'a, [u8]>,
}

/// CREATED2 body (tor-spec §5.1): HLEN, HDATA.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Created2<'a> {
    /// HDATA (at most 507 bytes).
    pub hdata: Cow<'a, [u8]>,
}

/// PADDING_NEGOTIATE body (tor-spec §7.2, padding-spec §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaddingNegotiate {
    /// Version (only 0 is defined).
    pub version: u8,
    /// Command: 1 = stop padding, 2 = start padding.
    pub command: u8,
    /// Low bound of the inactivity timeout, in ms.
    pub ito_low_ms: u16,
    /// High bound of the inactivity timeout, in ms.
    pub ito_high_ms: u16,
}

impl PaddingNegotiate {
    /// Command value: stop padding.
    pub const STOP: u8 = 1;
    /// Command value: start padding.
    pub const START: u8 = 2;
}

/// The typed body of a channel cell.
///
/// Unknown commands decode to [`ChanMsg::Unknown`] with the body kept (tor-spec §3: "ORs
/// should generally not warn when encountering unrecognized commands").
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChanMsg<'a> {
    /// PADDING (0): body is padding and ignored.
    Padding,
    /// VPADDING (128): `len` bytes of padding (sent as zeros).
    Vpadding {
        /// Number of padding bytes.
        len: u16,
    },
    /// VERSIONS (7).
    Versions(Versions),
    /// CERTS (129).
    Certs(Certs<'a>),
    /// AUTH_CHALLENGE (130).
    AuthChallenge(AuthChallenge),
    /// AUTHENTICATE (131).
    Authenticate(Authenticate<'a>),
    /// AUTHORIZE (132): reserved; the body is kept raw.
    Authorize(Cow<'a, [u8]>),
    /// NETINFO (8).
    Netinfo(Netinfo<'a>),
    /// CREATE (1): TAP onion skin (TAP_C_HANDSHAKE_LEN bytes). Obsolete.
    Create(Cow<'a, [u8]>),
    /// CREATED (2): TAP reply (TAP_S_HANDSHAKE_LEN bytes). Obsolete.
    Created(Cow<'a, [u8]>),
    /// CREATE_FAST (5): key material X.
    CreateFast([u8; HASH_LEN]),
    /// CREATED_FAST (6): key material Y and derivative key data KH.
    CreatedFast {
        /// Y.
        y: [u8; HASH_LEN],
        /// Derivative key data (KDF-TOR).
        kh: [u8; HASH_LEN],
    },
    /// CREATE2 (10).
    Create2(Create2<'a>),
    /// CREATED2 (11).
    Created2(Created2<'a>),
    /// DESTROY (4).
    Destroy(DestroyReason),
    /// RELAY (3).
    Relay(RelayPayload<'a>),
    /// RELAY_EARLY (9).
    RelayEarly(RelayPayload<'a>),
    /// PADDING_NEGOTIATE (12).
    PaddingNegotiate(PaddingNegotiate),
    /// Any other command, body kept (for fixed-length cells: all 509 bytes).
    Unknown {
        /// The command byte.
        cmd: ChanCmd,
        /// The body.
        body: Cow<'a, [u8]>,
    },
}

impl<'a> ChanMsg<'a> {
    /// The command byte of this message.
    pub fn cmd(&self) -> ChanCmd {
        match self {
            ChanMsg::Padding => ChanCmd::PADDING,
            ChanMsg::Vpadding { .. } => ChanCmd::VPADDING,
            ChanMsg::Versions(_) => ChanCmd::VERSIONS,
            ChanMsg::Certs(_) => ChanCmd::CERTS,
            ChanMsg::AuthChallenge(_) => ChanCmd::AUTH_CHALLENGE,
            ChanMsg::Authenticate(_) => ChanCmd::AUTHENTICATE,
            ChanMsg::Authorize(_) => ChanCmd::AUTHORIZE,
            ChanMsg::Netinfo(_) => ChanCmd::NETINFO,
            ChanMsg::Create(_) => ChanCmd::CREATE,
            ChanMsg::Created(_) => ChanCmd::CREATED,
            ChanMsg::CreateFast(_) => ChanCmd::CREATE_FAST,
            ChanMsg::CreatedFast { .. } => ChanCmd::CREATED_FAST,
            ChanMsg::Create2(_) => ChanCmd::CREATE2,
            ChanMsg::Created2(_) => ChanCmd::CREATED2,
            ChanMsg::Destroy(_) => ChanCmd::DESTROY,
            ChanMsg::Relay(_) => ChanCmd::RELAY,
            ChanMsg::RelayEarly(_) => ChanCmd::RELAY_EARLY,
            ChanMsg::PaddingNegotiate(_) => ChanCmd::PADDING_NEGOTIATE,
            ChanMsg::Unknown { cmd, .. } => *cmd,
        }
    }

    /// Decodes the body of a cell with command `cmd`.
    ///
    /// `body` is the whole cell body: 509 bytes for a fixed-length cell, `Length` bytes for
    /// a variable-length one. Padding after the typed fields is ignored where the spec says
    /// so; VERSIONS must not carry any extra byte.
    #[inline]
    pub fn decode(cmd: ChanCmd, body: &'a [u8]) -> Result<Self> {
        // Fast path for the hot commands: borrow the 509-byte body.
        if cmd == ChanCmd::RELAY || cmd == ChanCmd::RELAY_EARLY {
            let p: &'a [u8; CELL_BODY_LEN] = body.try_into().map_err(|_| Error::BadLength {
                field: "RELAY body",
                len: body.len(),
            })?;
            return Ok(if cmd == ChanCmd::RELAY {
                ChanMsg::Relay(RelayPayload::Borrowed(p))
            } else {
                ChanMsg::RelayEarly(RelayPayload::Borrowed(p))
            });
        }
        Self::decode_slow(cmd, body)
    }

    #[inline(never)]
    fn decode_slow(cmd: ChanCmd, body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        Ok(match cmd {
            ChanCmd::PADDING => ChanMsg::Padding,
            ChanCmd::VPADDING => ChanMsg::Vpadding {
                len: len_u16("VPADDING body", body.len())?,
            },
            ChanCmd::VERSIONS => {
                if body.len() % 2 != 0 {
                    return Err(Error::BadLength {
                        field: "VERSIONS body",
                        len: body.len(),
                    });
                }
                ChanMsg::Versions(Versions {
                    versions: body
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                })
            }
            ChanCmd::CERTS => {
                let n = r.u8("CERTS N")? as usize;
                let mut certs = Vec::with_capacity(n.min(r.remaining() / 3));
                for _ in 0..n {
                    let cert_type = r.u8("CertType")?;
                    let clen = r.u16("CLEN")? as usize;
                    let c = r.take(clen, "Certificate")?;
                    certs.push(CertEntry {
                        cert_type,
                        body: Cow::Borrowed(c),
                    });
                }
                ChanMsg::Certs(Certs { certs })
            }
            ChanCmd::AUTH_CHALLENGE => {
                let challenge = r.array("AUTH_CHALLENGE Challenge")?;
                let n = r.u16("N_Methods")? as usize;
                let m = r.take(n * 2, "Methods")?;
                ChanMsg::AuthChallenge(AuthChallenge {
                    challenge,
                    methods: m
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                })
            }
            ChanCmd::AUTHENTICATE => {
                let auth_type = r.u16("AuthType")?;
                let len = r.u16("AuthLen")? as usize;
                let auth = r.take(len, "Authentication")?;
                ChanMsg::Authenticate(Authenticate {
                    auth_type,
                    auth: Cow::Borrowed(auth),
                })
            }
            ChanCmd::AUTHORIZE => ChanMsg::Authorize(Cow::Borrowed(body)),
            ChanCmd::NETINFO => {
                let timestamp = r.u32("NETINFO TIME")?;
                let other_addr = NetinfoAddr::decode(&mut r)?;
                let n = r.u8("NMYADDR")? as usize;
                let mut my_addrs = Vec::with_capacity(n.min(r.remaining() / 2));
                for _ in 0..n {
                    my_addrs.push(NetinfoAddr::decode(&mut r)?);
                }
                ChanMsg::Netinfo(Netinfo {
                    timestamp,
                    other_addr,
                    my_addrs,
                })
            }
            ChanCmd::CREATE => {
                ChanMsg::Create(Cow::Borrowed(r.take(TAP_C_HANDSHAKE_LEN, "CREATE HDATA")?))
            }
            ChanCmd::CREATED => {
                ChanMsg::Created(Cow::Borrowed(r.take(TAP_S_HANDSHAKE_LEN, "CREATED HDATA")?))
            }
            ChanCmd::CREATE_FAST => ChanMsg::CreateFast(r.array("CREATE_FAST X")?),
            ChanCmd::CREATED_FAST => ChanMsg::CreatedFast {
                y: r.array("CREATED_FAST Y")?,
                kh: r.array("CREATED_FAST KH")?,
            },
            ChanCmd::CREATE2 => {
                let handshake_type = HandshakeType(r.u16("CREATE2 HTYPE")?);
                let hdata = read_hdata(&mut r, "CREATE2 HLEN", "CREATE2 HDATA")?;
                ChanMsg::Create2(Create2 {
                    handshake_type,
                    hdata: Cow::Borrowed(hdata),
                })
            }
            ChanCmd::CREATED2 => {
                let hdata = read_hdata(&mut r, "CREATED2 HLEN", "CREATED2 HDATA")?;
                ChanMsg::Created2(Created2 {
                    hdata: Cow::Borrowed(hdata),
                })
            }
            ChanCmd::DESTROY => ChanMsg::Destroy(DestroyReason(r.u8("DESTROY reason")?)),
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                let p: &'a [u8; CELL_BODY_LEN] = body.try_into().map_err(|_| Error::BadLength {
                    field: "RELAY body",
                    len: body.len(),
                })?;
                if cmd == ChanCmd::RELAY {
                    ChanMsg::Relay(RelayPayload::Borrowed(p))
                } else {
                    ChanMsg::RelayEarly(RelayPayload::Borrowed(p))
                }
            }
            ChanCmd::PADDING_NEGOTIATE => ChanMsg::PaddingNegotiate(PaddingNegotiate {
                version: r.u8("PADDING_NEGOTIATE version")?,
                command: r.u8("PADDING_NEGOTIATE command")?,
                ito_low_ms: r.u16("ito_low_ms")?,
                ito_high_ms: r.u16("ito_high_ms")?,
            }),
            _ => ChanMsg::Unknown {
                cmd,
                body: Cow::Borrowed(body),
            },
        })
    }

    /// Encodes the body (without circuit id, command, length or fixed-cell padding).
    pub fn encode_body<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        match self {
            ChanMsg::Padding => {}
            ChanMsg::Vpadding { len } => w.write_zeros(*len as usize),
            ChanMsg::Versions(v) => {
                for x in &v.versions {
                    w.write_u16(*x);
                }
            }
            ChanMsg::Certs(c) => {
                w.write_u8(len_u8("CERTS N", c.certs.len())?);
                for e in &c.certs {
                    w.write_u8(e.cert_type);
                    w.write_u16(len_u16("CLEN", e.body.len())?);
                    w.write_all(&e.body);
                }
            }
            ChanMsg::AuthChallenge(a) => {
                w.write_all(&a.challenge);
                w.write_u16(len_u16("N_Methods", a.methods.len())?);
                for m in &a.methods {
                    w.write_u16(*m);
                }
            }
            ChanMsg::Authenticate(a) => {
                w.write_u16(a.auth_type);
                w.write_u16(len_u16("AuthLen", a.auth.len())?);
                w.write_all(&a.auth);
            }
            ChanMsg::Authorize(b) => w.write_all(b),
            ChanMsg::Netinfo(n) => {
                w.write_u32(n.timestamp);
                n.other_addr.encode(w)?;
                w.write_u8(len_u8("NMYADDR", n.my_addrs.len())?);
                for a in &n.my_addrs {
                    a.encode(w)?;
                }
            }
            ChanMsg::Create(h) => {
                check_len("CREATE HDATA", h.len(), TAP_C_HANDSHAKE_LEN)?;
                w.write_all(h);
            }
            ChanMsg::Created(h) => {
                check_len("CREATED HDATA", h.len(), TAP_S_HANDSHAKE_LEN)?;
                w.write_all(h);
            }
            ChanMsg::CreateFast(x) => w.write_all(x),
            ChanMsg::CreatedFast { y, kh } => {
                w.write_all(y);
                w.write_all(kh);
            }
            ChanMsg::Create2(c) => {
                w.write_u16(c.handshake_type.0);
                write_hdata(w, "CREATE2 HLEN", &c.hdata)?;
            }
            ChanMsg::Created2(c) => {
                write_hdata(w, "CREATED2 HLEN", &c.hdata)?;
            }
            ChanMsg::Destroy(r) => w.write_u8(r.0),
            ChanMsg::Relay(p) | ChanMsg::RelayEarly(p) => w.write_all(p.as_bytes()),
            ChanMsg::PaddingNegotiate(p) => {
                w.write_u8(p.version);
                w.write_u8(p.command);
                w.write_u16(p.ito_low_ms);
                w.write_u16(p.ito_high_ms);
            }
            ChanMsg::Unknown { body, .. } => w.write_all(body),
        }
        Ok(())
    }

    /// Converts into a form that owns its bytes (`ChanMsg<'static>`).
    pub fn into_owned(self) -> ChanMsg<'static> {
        fn own(c: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
            Cow::Owned(c.into_owned())
        }
        match self {
            ChanMsg::Padding => ChanMsg::Padding,
            ChanMsg::Vpadding { len } => ChanMsg::Vpadding { len },
            ChanMsg::Versions(v) => ChanMsg::Versions(v),
            ChanMsg::Certs(c) => ChanMsg::Certs(Certs {
                certs: c
                    .certs
                    .into_iter()
                    .map(|e| CertEntry {
                        cert_type: e.cert_type,
                        body: own(e.body),
                    })
                    .collect(),
            }),
            ChanMsg::AuthChallenge(a) => ChanMsg::AuthChallenge(a),
            ChanMsg::Authenticate(a) => ChanMsg::Authenticate(Authenticate {
                auth_type: a.auth_type,
                auth: own(a.auth),
            }),
            ChanMsg::Authorize(b) => ChanMsg::Authorize(own(b)),
            ChanMsg::Netinfo(n) => ChanMsg::Netinfo(Netinfo {
                timestamp: n.timestamp,
                other_addr: n.other_addr.into_owned(),
                my_addrs: n
                    .my_addrs
                    .into_iter()
                    .map(NetinfoAddr::into_owned)
                    .collect(),
            }),
            ChanMsg::Create(h) => ChanMsg::Create(own(h)),
            ChanMsg::Created(h) => ChanMsg::Created(own(h)),
            ChanMsg::CreateFast(x) => ChanMsg::CreateFast(x),
            ChanMsg::CreatedFast { y, kh } => ChanMsg::CreatedFast { y, kh },
            ChanMsg::Create2(c) => ChanMsg::Create2(Create2 {
                handshake_type: c.handshake_type,
                hdata: own(c.hdata),
            }),
            ChanMsg::Created2(c) => ChanMsg::Created2(Created2 {
                hdata: own(c.hdata),
            }),
            ChanMsg::Destroy(r) => ChanMsg::Destroy(r),
            ChanMsg::Relay(p) => ChanMsg::Relay(p.into_owned()),
            ChanMsg::RelayEarly(p) => ChanMsg::RelayEarly(p.into_owned()),
            ChanMsg::PaddingNegotiate(p) => ChanMsg::PaddingNegotiate(p),
            ChanMsg::Unknown { cmd, body } => ChanMsg::Unknown {
                cmd,
                body: own(body),
            },
        }
    }
}

/// Reads `HLEN HDATA`, the handshake data of CREATE2 and CREATED2 that EXTEND2 and
/// EXTENDED2 carry in the same form (tor-spec §5.1, §5.1.2); `hlen` and `hdata` name the
/// fields in errors.
pub(crate) fn read_hdata<'a>(
    r: &mut Reader<'a>,
    hlen: &'static str,
    hdata: &'static str,
) -> Result<&'a [u8]> {
    let n = r.u16(hlen)? as usize;
    r.take(n, hdata)
}

/// Writes `HLEN HDATA` (see [`read_hdata`]); handshake data longer than `u16::MAX` is an
/// error naming `hlen`.
pub(crate) fn write_hdata<W: Writer + ?Sized>(
    w: &mut W,
    hlen: &'static str,
    hdata: &[u8],
) -> Result<()> {
    w.write_u16(len_u16(hlen, hdata.len())?);
    w.write_all(hdata);
    Ok(())
}

fn check_len(field: &'static str, len: usize, want: usize) -> Result<()> {
    if len == want {
        Ok(())
    } else {
        Err(Error::BadLength { field, len })
    }
}

/// A channel cell: circuit id and message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChanCell<'a> {
    /// The circuit id (0 for channel-level cells).
    pub circ_id: CircId,
    /// The message.
    pub msg: ChanMsg<'a>,
}

impl<'a> ChanCell<'a> {
    /// Builds a cell.
    pub fn new(circ_id: CircId, msg: ChanMsg<'a>) -> Self {
        ChanCell { circ_id, msg }
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> ChanCell<'static> {
        ChanCell {
            circ_id: self.circ_id,
            msg: self.msg.into_owned(),
        }
    }
}
