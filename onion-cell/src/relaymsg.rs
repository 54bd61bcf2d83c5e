//! Relay messages: the typed contents of a relay cell (tor-spec §6 "Application connections
//! and stream management", §5.1.2 "EXTEND and EXTENDED cells", §7.3.1 "SENDME Cell Format",
//! proposal 324 §4 XON/XOFF, rend-spec-v3 §3–4 for the onion-service messages in
//! [`crate::hs`]).
//!
//! [`RelayMsg::decode`] reads the message body (the `Length` bytes of `Data` of a relay
//! cell; see [`crate::relay`] for the header) and borrows byte fields from it.
//! [`RelayMsg::encode_body`] writes it back. Unknown relay commands decode to
//! [`RelayMsg::Unknown`] with their bytes kept.

use crate::chancell::{
    named_u8, read_hdata, write_hdata, DestroyReason, HandshakeType, TAP_C_HANDSHAKE_LEN,
    TAP_S_HANDSHAKE_LEN,
};
use crate::error::{Error, Result};
use crate::extension::expect_value;
use crate::hs::{
    EstablishIntro, EstablishRendezvous, IntroEstablished, Introduce, IntroduceAck, Rendezvous1,
    Rendezvous2,
};
use crate::linkspec::{self, LinkSpec};
use crate::reader::Reader;
use crate::writer::{len_u8, Writer};
use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The largest relay message body: 509 - 11 header bytes (tor-spec §6.1).
pub const MAX_RELAY_DATA_LEN: usize = 498;

/// A relay command byte (tor-spec §6.1). A newtype so that unknown commands are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayCmd(pub u8);

named_u8!(RelayCmd {
    /// 1: open a stream.
    BEGIN = 1,
    /// 2: stream data.
    DATA = 2,
    /// 3: close a stream.
    END = 3,
    /// 4: stream opened.
    CONNECTED = 4,
    /// 5: flow-control acknowledgement.
    SENDME = 5,
    /// 6: legacy (TAP) extend.
    EXTEND = 6,
    /// 7: legacy extended.
    EXTENDED = 7,
    /// 8: tear down the circuit after this hop.
    TRUNCATE = 8,
    /// 9: the circuit was truncated.
    TRUNCATED = 9,
    /// 10: long-range padding.
    DROP = 10,
    /// 11: resolve a hostname.
    RESOLVE = 11,
    /// 12: answer to RESOLVE.
    RESOLVED = 12,
    /// 13: open a directory stream.
    BEGIN_DIR = 13,
    /// 14: extend the circuit.
    EXTEND2 = 14,
    /// 15: circuit extended.
    EXTENDED2 = 15,
    /// 19: conflux link (prop 329).
    CONFLUX_LINK = 19,
    /// 20: conflux linked.
    CONFLUX_LINKED = 20,
    /// 21: conflux linked ack.
    CONFLUX_LINKED_ACK = 21,
    /// 22: conflux switch.
    CONFLUX_SWITCH = 22,
    /// 32: establish an introduction point.
    ESTABLISH_INTRO = 32,
    /// 33: establish a rendezvous point.
    ESTABLISH_RENDEZVOUS = 33,
    /// 34: client to introduction point.
    INTRODUCE1 = 34,
    /// 35: introduction point to service.
    INTRODUCE2 = 35,
    /// 36: service to rendezvous point.
    RENDEZVOUS1 = 36,
    /// 37: rendezvous point to client.
    RENDEZVOUS2 = 37,
    /// 38: introduction point established.
    INTRO_ESTABLISHED = 38,
    /// 39: rendezvous point established.
    RENDEZVOUS_ESTABLISHED = 39,
    /// 40: introduction acknowledged.
    INTRODUCE_ACK = 40,
    /// 41: circuit padding negotiate (padding-spec §3).
    PADDING_NEGOTIATE = 41,
    /// 42: circuit padding negotiated.
    PADDING_NEGOTIATED = 42,
    /// 43: XOFF, stop reading (prop 324).
    XOFF = 43,
    /// 44: XON, resume reading (prop 324).
    XON = 44,
});

impl fmt::Display for RelayCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A RELAY_END reason (tor-spec §6.3). Unknown values are kept (OPs MUST accept them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndReason(pub u8);

named_u8!(EndReason {
    /// 1: catch-all.
    MISC = 1,
    /// 2: couldn't look up hostname.
    RESOLVEFAILED = 2,
    /// 3: remote host refused connection.
    CONNECTREFUSED = 3,
    /// 4: exit policy forbids the address or port.
    EXITPOLICY = 4,
    /// 5: circuit is being destroyed.
    DESTROY = 5,
    /// 6: connection closed normally.
    DONE = 6,
    /// 7: connection timed out.
    TIMEOUT = 7,
    /// 8: routing error.
    NOROUTE = 8,
    /// 9: relay is hibernating.
    HIBERNATING = 9,
    /// 10: internal error.
    INTERNAL = 10,
    /// 11: no resources.
    RESOURCELIMIT = 11,
    /// 12: connection reset.
    CONNRESET = 12,
    /// 13: Tor protocol violation.
    TORPROTOCOL = 13,
    /// 14: BEGIN_DIR sent to a non-directory relay.
    NOTDIRECTORY = 14,
});

/// RELAY_BEGIN flags (tor-spec §6.2). Bit 1 is the least significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BeginFlags(pub u32);

impl BeginFlags {
    /// Bit 1: IPv6 okay.
    pub const IPV6_OKAY: u32 = 1 << 0;
    /// Bit 2: IPv4 not okay.
    pub const IPV4_NOT_OKAY: u32 = 1 << 1;
    /// Bit 3: IPv6 preferred.
    pub const IPV6_PREFERRED: u32 = 1 << 2;
}

/// RELAY_BEGIN (tor-spec §6.2): `ADDRPORT` (`ADDRESS ":" PORT NUL`) then `FLAGS` (4 bytes).
///
/// `host` is stored without the square brackets of an IPv6 literal; they are added back on
/// encoding when the host contains a `:`. A host containing `[` or `]` otherwise is rejected.
/// Absent FLAGS decode as 0, and zero FLAGS are not sent (as C tor does).
///
/// The host may be empty: a client opening a stream to an onion service over the rendezvous
/// circuit sends only the port (`":80"`, as C tor does; rend-spec-v3 §1.1: the service maps
/// streams to its own targets), so the wire
/// format allows it. An exit must refuse an empty host itself (it names no destination).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Begin<'a> {
    /// Hostname, IPv4 dotted quad or IPv6 address (without brackets).
    pub host: Cow<'a, str>,
    /// Port, 1..=65535.
    pub port: u16,
    /// FLAGS.
    pub flags: BeginFlags,
}

impl<'a> Begin<'a> {
    fn decode(r: &mut Reader<'a>) -> Result<Self> {
        let addrport = r.take_nul_terminated("BEGIN ADDRPORT")?;
        let s = core::str::from_utf8(addrport).map_err(|_| Error::BadString {
            field: "BEGIN ADDRPORT",
        })?;
        let (host, port) = s.rsplit_once(':').ok_or(Error::BadString {
            field: "BEGIN ADDRPORT",
        })?;
        let host = match host.strip_prefix('[') {
            Some(h) => h.strip_suffix(']').ok_or(Error::BadString {
                field: "BEGIN ADDRESS",
            })?,
            None => host,
        };
        if host.contains(['[', ']']) || (host.contains(':') && !s.starts_with('[')) {
            return Err(Error::BadString {
                field: "BEGIN ADDRESS",
            });
        }
        let port = parse_port(port)?;
        let flags = if r.remaining() >= 4 {
            r.u32("BEGIN FLAGS")?
        } else {
            0
        };
        Ok(Begin {
            host: Cow::Borrowed(host),
            port,
            flags: BeginFlags(flags),
        })
    }

    fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        if self.host.contains(['\0', '[', ']']) || self.port == 0 {
            return Err(Error::BadString {
                field: "BEGIN ADDRPORT",
            });
        }
        if self.host.contains(':') {
            w.write_u8(b'[');
            w.write_all(self.host.as_bytes());
            w.write_u8(b']');
        } else {
            w.write_all(self.host.as_bytes());
        }
        w.write_u8(b':');
        let mut buf = [0u8; 5];
        w.write_all(fmt_port(self.port, &mut buf));
        w.write_u8(0);
        if self.flags.0 != 0 {
            w.write_u32(self.flags.0);
        }
        Ok(())
    }
}

fn parse_port(s: &str) -> Result<u16> {
    let bad = Error::BadString {
        field: "BEGIN PORT",
    };
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let v: u32 = s.bytes().fold(0, |a, b| a * 10 + u32::from(b - b'0'));
    match u16::try_from(v) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::BadValue {
            field: "BEGIN PORT",
            value: u64::from(v),
        }),
    }
}

fn fmt_port(mut p: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (p % 10) as u8;
        p /= 10;
        if p == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// RELAY_DATA (tor-spec §6.2): up to 498 bytes of stream data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Data<'a> {
    /// The bytes.
    pub data: Cow<'a, [u8]>,
}

impl<'a> Data<'a> {
    /// Wraps `data`, which must be at most [`MAX_RELAY_DATA_LEN`] bytes.
    pub fn new(data: &'a [u8]) -> Result<Self> {
        if data.len() > MAX_RELAY_DATA_LEN {
            return Err(Error::TooLong {
                field: "DATA",
                len: data.len(),
                max: MAX_RELAY_DATA_LEN,
            });
        }
        Ok(Data {
            data: Cow::Borrowed(data),
        })
    }

    /// The data as a [`bytes::Bytes`] (no copy if already owned).
    pub fn into_bytes(self) -> bytes::Bytes {
        match self.data {
            Cow::Borrowed(b) => bytes::Bytes::copy_from_slice(b),
            Cow::Owned(v) => bytes::Bytes::from(v),
        }
    }
}

/// The address an exit reports in an END (reason EXITPOLICY) message (tor-spec §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitPolicyAddr {
    /// The address the exit refused to connect to.
    pub addr: IpAddr,
    /// How long the answer may be cached, in seconds (0xffffffff when absent).
    pub ttl: u32,
}

/// RELAY_END (tor-spec §6.3): `Reason`, and for EXITPOLICY the address and TTL.
///
/// An empty body decodes as reason MISC; an EXITPOLICY address of the wrong length is
/// ignored (the spec says to process the message anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct End {
    /// Why the stream closed.
    pub reason: EndReason,
    /// For reason EXITPOLICY: the refused address.
    pub exit_policy: Option<ExitPolicyAddr>,
}

impl End {
    /// An END with `reason` and no address.
    pub fn new(reason: EndReason) -> Self {
        End {
            reason,
            exit_policy: None,
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let Some(reason) = r.peek_u8() else {
            return Ok(End::new(EndReason::MISC));
        };
        r.u8("END reason")?;
        let reason = EndReason(reason);
        let mut exit_policy = None;
        if reason == EndReason::EXITPOLICY {
            let rest = r.rest();
            let (addr, ttl) = match rest.len() {
                4 | 8 => (
                    IpAddr::V4(Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3])),
                    rest.get(4..8),
                ),
                16 | 20 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&rest[..16]);
                    (IpAddr::V6(Ipv6Addr::from(a)), rest.get(16..20))
                }
                _ => return Ok(End::new(reason)),
            };
            let ttl = ttl.map_or(u32::MAX, |t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]));
            exit_policy = Some(ExitPolicyAddr { addr, ttl });
        }
        Ok(End {
            reason,
            exit_policy,
        })
    }

    fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_u8(self.reason.0);
        if let Some(e) = &self.exit_policy {
            if self.reason != EndReason::EXITPOLICY {
                return Err(Error::BadValue {
                    field: "END reason with address",
                    value: u64::from(self.reason.0),
                });
            }
            write_ip(w, e.addr);
            w.write_u32(e.ttl);
        }
        Ok(())
    }
}

fn write_ip<W: Writer + ?Sized>(w: &mut W, a: IpAddr) {
    match a {
        IpAddr::V4(a) => w.write_all(&a.octets()),
        IpAddr::V6(a) => w.write_all(&a.octets()),
    }
}

/// RELAY_CONNECTED (tor-spec §6.2): empty, or an address and TTL.
///
/// ```text
/// IPv4 (4) TTL (4)
/// or: 0.0.0.0 (4) type 6 (1) IPv6 (16) TTL (4)
/// ```
///
/// As C tor does, a nonzero IPv4 address without TTL is accepted (the TTL then decodes as
/// 0xffffffff, the value tor-spec §6.3 gives an absent TTL), and an all-zero first word
/// must introduce the IPv6 form. Encoding an IPv4 `0.0.0.0` answer is therefore refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Connected {
    /// The address connected to and its TTL, if given.
    pub addr: Option<(IpAddr, u32)>,
}

impl Connected {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        if r.is_empty() {
            return Ok(Connected { addr: None });
        }
        let v4 = r.array::<4>("CONNECTED IPv4")?;
        if v4 == [0; 4] {
            let t = r.u8("CONNECTED address type")?;
            if t != 6 {
                return Err(Error::BadValue {
                    field: "CONNECTED address type",
                    value: u64::from(t),
                });
            }
            let v6 = r.array::<16>("CONNECTED IPv6")?;
            let ttl = r.u32("CONNECTED TTL")?;
            return Ok(Connected {
                addr: Some((IpAddr::V6(Ipv6Addr::from(v6)), ttl)),
            });
        }
        let ttl = if r.remaining() >= 4 {
            r.u32("CONNECTED TTL")?
        } else {
            u32::MAX
        };
        Ok(Connected {
            addr: Some((IpAddr::V4(Ipv4Addr::from(v4)), ttl)),
        })
    }

    fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        match self.addr {
            None => {}
            Some((IpAddr::V4(a), _)) if a.is_unspecified() => {
                return Err(Error::BadValue {
                    field: "CONNECTED IPv4",
                    value: 0,
                })
            }
            Some((IpAddr::V4(a), ttl)) => {
                w.write_all(&a.octets());
                w.write_u32(ttl);
            }
            Some((IpAddr::V6(a), ttl)) => {
                w.write_all(&[0, 0, 0, 0, 6]);
                w.write_all(&a.octets());
                w.write_u32(ttl);
            }
        }
        Ok(())
    }
}

/// RELAY_SENDME (tor-spec §7.3.1): version 0 (no data) or version 1 (authenticated, a
/// 20-byte digest of the cell that triggered it).
///
/// Encoding: version 0 is sent as an empty body (as stream-level SENDMEs are), version 1
/// as `01 0014 DIGEST`. Decoding: an empty body or version 0 gives `tag: None`; version 1
/// needs DATA_LEN >= 20 and takes the first 20 bytes; other versions are an error (the
/// spec says to tear down the circuit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sendme {
    /// The v1 authentication digest.
    pub tag: Option<[u8; 20]>,
}

impl Sendme {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        if r.is_empty() {
            return Ok(Sendme { tag: None });
        }
        match r.u8("SENDME VERSION")? {
            0 => Ok(Sendme { tag: None }),
            1 => {
                let len = r.u16("SENDME DATA_LEN")? as usize;
                if len < 20 {
                    return Err(Error::BadLength {
                        field: "SENDME DATA_LEN",
                        len,
                    });
                }
                let data = r.take(len, "SENDME DATA")?;
                let mut tag = [0u8; 20];
                tag.copy_from_slice(&data[..20]);
                Ok(Sendme { tag: Some(tag) })
            }
            v => Err(Error::BadValue {
                field: "SENDME VERSION",
                value: u64::from(v),
            }),
        }
    }

    fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        if let Some(tag) = &self.tag {
            w.write_u8(1);
            w.write_u16(20);
            w.write_all(tag);
        }
        Ok(())
    }
}

/// RELAY_EXTEND2 (tor-spec §5.1.2): link specifiers, HTYPE, HLEN, HDATA.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extend2<'a> {
    /// Link specifiers of the next hop (order kept).
    pub linkspecs: Vec<LinkSpec<'a>>,
    /// HTYPE.
    pub handshake_type: HandshakeType,
    /// HDATA (the client handshake, e.g. an ntor-v3 onion skin with its encrypted
    /// extensions, see [`crate::extension`]).
    pub hdata: Cow<'a, [u8]>,
}

/// RELAY_EXTENDED2 (tor-spec §5.1.2): same as a CREATED2 body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extended2<'a> {
    /// HDATA.
    pub hdata: Cow<'a, [u8]>,
}

/// RELAY_EXTEND, legacy TAP form (tor-spec §5.1.2). Decode only in practice; encoding is
/// provided for tests and tools.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extend<'a> {
    /// IPv4 address of the next hop.
    pub addr: Ipv4Addr,
    /// ORPort.
    pub port: u16,
    /// Onion skin (TAP_C_HANDSHAKE_LEN bytes).
    pub onion_skin: Cow<'a, [u8]>,
    /// SHA-1 of the next hop's RSA identity key.
    pub rsa_id: [u8; 20],
}

/// RELAY_EXTENDED, legacy form: same as a CREATED body (TAP_S_HANDSHAKE_LEN bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extended<'a> {
    /// The TAP reply.
    pub hdata: Cow<'a, [u8]>,
}

/// RELAY_RESOLVE (tor-spec §6.4): a NUL-terminated hostname (or in-addr.arpa name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolve<'a> {
    /// The name to resolve.
    pub query: Cow<'a, str>,
}

/// One answer of a RESOLVED message (tor-spec §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResolvedValue<'a> {
    /// 0x00: a hostname.
    Hostname(Cow<'a, [u8]>),
    /// 0x04 / 0x06: an address.
    Ip(IpAddr),
    /// 0xF0: transient error (value ignored by receivers, kept here).
    TransientError(Cow<'a, [u8]>),
    /// 0xF1: non-transient error.
    NontransientError(Cow<'a, [u8]>),
    /// Another type, kept raw.
    Unknown {
        /// Type.
        answer_type: u8,
        /// Value.
        value: Cow<'a, [u8]>,
    },
}

/// An answer with its TTL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolvedAnswer<'a> {
    /// The value.
    pub value: ResolvedValue<'a>,
    /// Seconds it may be cached.
    pub ttl: u32,
}

/// RELAY_RESOLVED (tor-spec §6.4): any number of `Type Length Value TTL` answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Resolved<'a> {
    /// The answers in order.
    pub answers: Vec<ResolvedAnswer<'a>>,
}

impl<'a> Resolved<'a> {
    fn decode(r: &mut Reader<'a>) -> Result<Self> {
        let mut answers = Vec::new();
        while !r.is_empty() {
            let t = r.u8("RESOLVED Type")?;
            let len = r.u8("RESOLVED Length")? as usize;
            let v = r.take(len, "RESOLVED Value")?;
            let ttl = r.u32("RESOLVED TTL")?;
            let bad = Error::BadLength {
                field: "RESOLVED Value",
                len,
            };
            let value = match t {
                0x00 => ResolvedValue::Hostname(Cow::Borrowed(v)),
                0x04 => ResolvedValue::Ip(IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(v).map_err(|_| bad)?,
                ))),
                0x06 => ResolvedValue::Ip(IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(v).map_err(|_| bad)?,
                ))),
                0xF0 => ResolvedValue::TransientError(Cow::Borrowed(v)),
                0xF1 => ResolvedValue::NontransientError(Cow::Borrowed(v)),
                t => ResolvedValue::Unknown {
                    answer_type: t,
                    value: Cow::Borrowed(v),
                },
            };
            answers.push(ResolvedAnswer { value, ttl });
        }
        Ok(Resolved { answers })
    }

    fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        for a in &self.answers {
            let (t, v): (u8, &[u8]) = match &a.value {
                ResolvedValue::Hostname(h) => (0, h),
                ResolvedValue::Ip(IpAddr::V4(ip)) => {
                    w.write_all(&[4, 4]);
                    w.write_all(&ip.octets());
                    w.write_u32(a.ttl);
                    continue;
                }
                ResolvedValue::Ip(IpAddr::V6(ip)) => {
                    w.write_all(&[6, 16]);
                    w.write_all(&ip.octets());
                    w.write_u32(a.ttl);
                    continue;
                }
                ResolvedValue::TransientError(v) => (0xF0, v),
                ResolvedValue::NontransientError(v) => (0xF1, v),
                ResolvedValue::Unknown { answer_type, value } => (*answer_type, value),
            };
            w.write_u8(t);
            w.write_u8(len_u8("RESOLVED Length", v.len())?);
            w.write_all(v);
            w.write_u32(a.ttl);
        }
        Ok(())
    }
}

/// XON (proposal 324 §4): `version` (0) and the advisory drain rate `kbps_ewma`
/// (0 = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Xon {
    /// Advisory rate in kilobytes per second; 0 means unlimited.
    pub kbps_ewma: u32,
}

/// A relay message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RelayMsg<'a> {
    /// BEGIN (1).
    Begin(Begin<'a>),
    /// DATA (2).
    Data(Data<'a>),
    /// END (3).
    End(End),
    /// CONNECTED (4).
    Connected(Connected),
    /// SENDME (5).
    Sendme(Sendme),
    /// EXTEND (6), legacy.
    Extend(Extend<'a>),
    /// EXTENDED (7), legacy.
    Extended(Extended<'a>),
    /// TRUNCATE (8): empty.
    Truncate,
    /// TRUNCATED (9): a reason as in DESTROY.
    Truncated(DestroyReason),
    /// DROP (10): padding; the body is ignored.
    Drop,
    /// RESOLVE (11).
    Resolve(Resolve<'a>),
    /// RESOLVED (12).
    Resolved(Resolved<'a>),
    /// BEGIN_DIR (13): empty.
    BeginDir,
    /// EXTEND2 (14).
    Extend2(Extend2<'a>),
    /// EXTENDED2 (15).
    Extended2(Extended2<'a>),
    /// ESTABLISH_INTRO (32).
    EstablishIntro(EstablishIntro<'a>),
    /// ESTABLISH_RENDEZVOUS (33).
    EstablishRendezvous(EstablishRendezvous),
    /// INTRODUCE1 (34).
    Introduce1(Introduce<'a>),
    /// INTRODUCE2 (35).
    Introduce2(Introduce<'a>),
    /// RENDEZVOUS1 (36).
    Rendezvous1(Rendezvous1<'a>),
    /// RENDEZVOUS2 (37).
    Rendezvous2(Rendezvous2<'a>),
    /// INTRO_ESTABLISHED (38).
    IntroEstablished(IntroEstablished<'a>),
    /// RENDEZVOUS_ESTABLISHED (39): empty.
    RendezvousEstablished,
    /// INTRODUCE_ACK (40).
    IntroduceAck(IntroduceAck<'a>),
    /// XOFF (43): version 0, no other field.
    Xoff,
    /// XON (44).
    Xon(Xon),
    /// Any other command, body kept.
    Unknown {
        /// The command.
        cmd: RelayCmd,
        /// The body.
        body: Cow<'a, [u8]>,
    },
}

impl<'a> RelayMsg<'a> {
    /// The relay command of this message.
    pub fn cmd(&self) -> RelayCmd {
        match self {
            RelayMsg::Begin(_) => RelayCmd::BEGIN,
            RelayMsg::Data(_) => RelayCmd::DATA,
            RelayMsg::End(_) => RelayCmd::END,
            RelayMsg::Connected(_) => RelayCmd::CONNECTED,
            RelayMsg::Sendme(_) => RelayCmd::SENDME,
            RelayMsg::Extend(_) => RelayCmd::EXTEND,
            RelayMsg::Extended(_) => RelayCmd::EXTENDED,
            RelayMsg::Truncate => RelayCmd::TRUNCATE,
            RelayMsg::Truncated(_) => RelayCmd::TRUNCATED,
            RelayMsg::Drop => RelayCmd::DROP,
            RelayMsg::Resolve(_) => RelayCmd::RESOLVE,
            RelayMsg::Resolved(_) => RelayCmd::RESOLVED,
            RelayMsg::BeginDir => RelayCmd::BEGIN_DIR,
            RelayMsg::Extend2(_) => RelayCmd::EXTEND2,
            RelayMsg::Extended2(_) => RelayCmd::EXTENDED2,
            RelayMsg::EstablishIntro(_) => RelayCmd::ESTABLISH_INTRO,
            RelayMsg::EstablishRendezvous(_) => RelayCmd::ESTABLISH_RENDEZVOUS,
            RelayMsg::Introduce1(_) => RelayCmd::INTRODUCE1,
            RelayMsg::Introduce2(_) => RelayCmd::INTRODUCE2,
            RelayMsg::Rendezvous1(_) => RelayCmd::RENDEZVOUS1,
            RelayMsg::Rendezvous2(_) => RelayCmd::RENDEZVOUS2,
            RelayMsg::IntroEstablished(_) => RelayCmd::INTRO_ESTABLISHED,
            RelayMsg::RendezvousEstablished => RelayCmd::RENDEZVOUS_ESTABLISHED,
            RelayMsg::IntroduceAck(_) => RelayCmd::INTRODUCE_ACK,
            RelayMsg::Xoff => RelayCmd::XOFF,
            RelayMsg::Xon(_) => RelayCmd::XON,
            RelayMsg::Unknown { cmd, .. } => *cmd,
        }
    }

    /// Decodes the body of a relay message with command `cmd`.
    ///
    /// Bytes after the typed fields are ignored for messages whose spec says receivers
    /// ignore extra bytes or whose body runs to the end; TRUNCATE, BEGIN_DIR,
    /// RENDEZVOUS_ESTABLISHED and DROP ignore their body.
    #[inline]
    pub fn decode(cmd: RelayCmd, body: &'a [u8]) -> Result<Self> {
        if cmd == RelayCmd::DATA {
            return Ok(RelayMsg::Data(Data {
                data: Cow::Borrowed(body),
            }));
        }
        Self::decode_slow(cmd, body)
    }

    #[inline(never)]
    fn decode_slow(cmd: RelayCmd, body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let r = &mut r;
        Ok(match cmd {
            RelayCmd::BEGIN => RelayMsg::Begin(Begin::decode(r)?),
            RelayCmd::DATA => RelayMsg::Data(Data {
                data: Cow::Borrowed(body),
            }),
            RelayCmd::END => RelayMsg::End(End::decode(r)?),
            RelayCmd::CONNECTED => RelayMsg::Connected(Connected::decode(r)?),
            RelayCmd::SENDME => RelayMsg::Sendme(Sendme::decode(r)?),
            RelayCmd::EXTEND => RelayMsg::Extend(Extend {
                addr: Ipv4Addr::from(r.array::<4>("EXTEND Address")?),
                port: r.u16("EXTEND Port")?,
                onion_skin: Cow::Borrowed(r.take(TAP_C_HANDSHAKE_LEN, "EXTEND Onion skin")?),
                rsa_id: r.array("EXTEND Identity fingerprint")?,
            }),
            RelayCmd::EXTENDED => RelayMsg::Extended(Extended {
                hdata: Cow::Borrowed(r.take(TAP_S_HANDSHAKE_LEN, "EXTENDED HDATA")?),
            }),
            RelayCmd::TRUNCATE => RelayMsg::Truncate,
            RelayCmd::TRUNCATED => RelayMsg::Truncated(DestroyReason(r.u8("TRUNCATED reason")?)),
            RelayCmd::DROP => RelayMsg::Drop,
            RelayCmd::RESOLVE => {
                let q = r.take_nul_terminated("RESOLVE hostname")?;
                let q = core::str::from_utf8(q).map_err(|_| Error::BadString {
                    field: "RESOLVE hostname",
                })?;
                RelayMsg::Resolve(Resolve {
                    query: Cow::Borrowed(q),
                })
            }
            RelayCmd::RESOLVED => RelayMsg::Resolved(Resolved::decode(r)?),
            RelayCmd::BEGIN_DIR => RelayMsg::BeginDir,
            RelayCmd::EXTEND2 => {
                let linkspecs = linkspec::decode_list(r)?;
                let handshake_type = HandshakeType(r.u16("EXTEND2 HTYPE")?);
                let hdata = read_hdata(r, "EXTEND2 HLEN", "EXTEND2 HDATA")?;
                RelayMsg::Extend2(Extend2 {
                    linkspecs,
                    handshake_type,
                    hdata: Cow::Borrowed(hdata),
                })
            }
            RelayCmd::EXTENDED2 => RelayMsg::Extended2(Extended2 {
                hdata: Cow::Borrowed(read_hdata(r, "EXTENDED2 HLEN", "EXTENDED2 HDATA")?),
            }),
            RelayCmd::ESTABLISH_INTRO => RelayMsg::EstablishIntro(EstablishIntro::decode(body)?),
            RelayCmd::ESTABLISH_RENDEZVOUS => {
                RelayMsg::EstablishRendezvous(EstablishRendezvous::decode(body)?)
            }
            RelayCmd::INTRODUCE1 => RelayMsg::Introduce1(Introduce::decode(body)?),
            RelayCmd::INTRODUCE2 => RelayMsg::Introduce2(Introduce::decode(body)?),
            RelayCmd::RENDEZVOUS1 => RelayMsg::Rendezvous1(Rendezvous1::decode(body)?),
            RelayCmd::RENDEZVOUS2 => RelayMsg::Rendezvous2(Rendezvous2::decode(body)?),
            RelayCmd::INTRO_ESTABLISHED => {
                RelayMsg::IntroEstablished(IntroEstablished::decode(body)?)
            }
            RelayCmd::RENDEZVOUS_ESTABLISHED => RelayMsg::RendezvousEstablished,
            RelayCmd::INTRODUCE_ACK => RelayMsg::IntroduceAck(IntroduceAck::decode(body)?),
            RelayCmd::XOFF => {
                expect_value("XOFF version", u64::from(r.u8("XOFF version")?), 0)?;
                RelayMsg::Xoff
            }
            RelayCmd::XON => {
                expect_value("XON version", u64::from(r.u8("XON version")?), 0)?;
                RelayMsg::Xon(Xon {
                    kbps_ewma: r.u32("XON kbps_ewma")?,
                })
            }
            _ => RelayMsg::Unknown {
                cmd,
                body: Cow::Borrowed(body),
            },
        })
    }

    /// Encodes the message body (what goes in the relay cell's `Data` field).
    pub fn encode_body<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        match self {
            RelayMsg::Begin(b) => b.encode(w)?,
            RelayMsg::Data(d) => w.write_all(&d.data),
            RelayMsg::End(e) => e.encode(w)?,
            RelayMsg::Connected(c) => c.encode(w)?,
            RelayMsg::Sendme(s) => s.encode(w)?,
            RelayMsg::Extend(e) => {
                if e.onion_skin.len() != TAP_C_HANDSHAKE_LEN {
                    return Err(Error::BadLength {
                        field: "EXTEND Onion skin",
                        len: e.onion_skin.len(),
                    });
                }
                w.write_all(&e.addr.octets());
                w.write_u16(e.port);
                w.write_all(&e.onion_skin);
                w.write_all(&e.rsa_id);
            }
            RelayMsg::Extended(e) => {
                if e.hdata.len() != TAP_S_HANDSHAKE_LEN {
                    return Err(Error::BadLength {
                        field: "EXTENDED HDATA",
                        len: e.hdata.len(),
                    });
                }
                w.write_all(&e.hdata);
            }
            RelayMsg::Truncate | RelayMsg::Drop | RelayMsg::BeginDir => {}
            RelayMsg::RendezvousEstablished => {}
            RelayMsg::Truncated(r) => w.write_u8(r.0),
            RelayMsg::Resolve(q) => {
                if q.query.contains('\0') {
                    return Err(Error::BadString {
                        field: "RESOLVE hostname",
                    });
                }
                w.write_all(q.query.as_bytes());
                w.write_u8(0);
            }
            RelayMsg::Resolved(r) => r.encode(w)?,
            RelayMsg::Extend2(e) => {
                linkspec::encode_list(&e.linkspecs, w)?;
                w.write_u16(e.handshake_type.0);
                write_hdata(w, "EXTEND2 HLEN", &e.hdata)?;
            }
            RelayMsg::Extended2(e) => {
                write_hdata(w, "EXTENDED2 HLEN", &e.hdata)?;
            }
            RelayMsg::EstablishIntro(m) => m.encode(w)?,
            RelayMsg::EstablishRendezvous(m) => m.encode(w)?,
            RelayMsg::Introduce1(m) | RelayMsg::Introduce2(m) => m.encode(w)?,
            RelayMsg::Rendezvous1(m) => m.encode(w)?,
            RelayMsg::Rendezvous2(m) => m.encode(w)?,
            RelayMsg::IntroEstablished(m) => m.encode(w)?,
            RelayMsg::IntroduceAck(m) => m.encode(w)?,
            RelayMsg::Xoff => w.write_u8(0),
            RelayMsg::Xon(x) => {
                w.write_u8(0);
                w.write_u32(x.kbps_ewma);
            }
            RelayMsg::Unknown { body, .. } => w.write_all(body),
        }
        Ok(())
    }

    /// Encodes the body into a new vector (convenience for tests and tools).
    pub fn to_body_vec(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.encode_body(&mut v)?;
        Ok(v)
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> RelayMsg<'static> {
        fn own(c: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
            Cow::Owned(c.into_owned())
        }
        fn own_str(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(String::from(c))
        }
        match self {
            RelayMsg::Begin(b) => RelayMsg::Begin(Begin {
                host: own_str(b.host),
                port: b.port,
                flags: b.flags,
            }),
            RelayMsg::Data(d) => RelayMsg::Data(Data { data: own(d.data) }),
            RelayMsg::End(e) => RelayMsg::End(e),
            RelayMsg::Connected(c) => RelayMsg::Connected(c),
            RelayMsg::Sendme(s) => RelayMsg::Sendme(s),
            RelayMsg::Extend(e) => RelayMsg::Extend(Extend {
                addr: e.addr,
                port: e.port,
                onion_skin: own(e.onion_skin),
                rsa_id: e.rsa_id,
            }),
            RelayMsg::Extended(e) => RelayMsg::Extended(Extended {
                hdata: own(e.hdata),
            }),
            RelayMsg::Truncate => RelayMsg::Truncate,
            RelayMsg::Truncated(r) => RelayMsg::Truncated(r),
            RelayMsg::Drop => RelayMsg::Drop,
            RelayMsg::Resolve(q) => RelayMsg::Resolve(Resolve {
                query: own_str(q.query),
            }),
            RelayMsg::Resolved(r) => RelayMsg::Resolved(Resolved {
                answers: r
                    .answers
                    .into_iter()
                    .map(|a| ResolvedAnswer {
                        ttl: a.ttl,
                        value: match a.value {
                            ResolvedValue::Hostname(h) => ResolvedValue::Hostname(own(h)),
                            ResolvedValue::Ip(ip) => ResolvedValue::Ip(ip),
                            ResolvedValue::TransientError(v) => {
                                ResolvedValue::TransientError(own(v))
                            }
                            ResolvedValue::NontransientError(v) => {
                                ResolvedValue::NontransientError(own(v))
                            }
                            ResolvedValue::Unknown { answer_type, value } => {
                                ResolvedValue::Unknown {
                                    answer_type,
                                    value: own(value),
                                }
                            }
                        },
                    })
                    .collect(),
            }),
            RelayMsg::BeginDir => RelayMsg::BeginDir,
            RelayMsg::Extend2(e) => RelayMsg::Extend2(Extend2 {
                linkspecs: e.linkspecs.into_iter().map(LinkSpec::into_owned).collect(),
                handshake_type: e.handshake_type,
                hdata: own(e.hdata),
            }),
            RelayMsg::Extended2(e) => RelayMsg::Extended2(Extended2 {
                hdata: own(e.hdata),
            }),
            RelayMsg::EstablishIntro(m) => RelayMsg::EstablishIntro(m.into_owned()),
            RelayMsg::EstablishRendezvous(m) => RelayMsg::EstablishRendezvous(m),
            RelayMsg::Introduce1(m) => RelayMsg::Introduce1(m.into_owned()),
            RelayMsg::Introduce2(m) => RelayMsg::Introduce2(m.into_owned()),
            RelayMsg::Rendezvous1(m) => RelayMsg::Rendezvous1(m.into_owned()),
            RelayMsg::Rendezvous2(m) => RelayMsg::Rendezvous2(m.into_owned()),
            RelayMsg::IntroEstablished(m) => RelayMsg::IntroEstablished(m.into_owned()),
            RelayMsg::RendezvousEstablished => RelayMsg::RendezvousEstablished,
            RelayMsg::IntroduceAck(m) => RelayMsg::IntroduceAck(m.into_owned()),
            RelayMsg::Xoff => RelayMsg::Xoff,
            RelayMsg::Xon(x) => RelayMsg::Xon(x),
            RelayMsg::Unknown { cmd, body } => RelayMsg::Unknown {
                cmd,
                body: own(body),
            },
        }
    }
}
