//! Link specifiers (tor-spec §5.1.2 "EXTEND and EXTENDED cells", rend-spec-v3 §2.5.2.2).
//!
//! A link specifier tells a relay how to reach, and how to authenticate, the next hop:
//!
//! ```text
//! LSTYPE (1) LSLEN (1) LSPEC (LSLEN)
//!   [00] IPv4 address (4) + ORPort (2)
//!   [01] IPv6 address (16) + ORPort (2)
//!   [02] legacy RSA identity (20)
//!   [03] Ed25519 identity (32)
//! ```
//!
//! Unrecognised types are kept as [`LinkSpec::Unknown`] (nodes MUST ignore them and onion
//! services MUST forward them verbatim), never rejected.

use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::writer::{len_u8, with_u8_len, Writer};
use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// A link specifier type number (LSTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkSpecType(pub u8);

impl LinkSpecType {
    /// `[00]` TLS-over-TCP, IPv4 address.
    pub const ORPORT_V4: LinkSpecType = LinkSpecType(0);
    /// `[01]` TLS-over-TCP, IPv6 address.
    pub const ORPORT_V6: LinkSpecType = LinkSpecType(1);
    /// `[02]` legacy (RSA, SHA-1) identity.
    pub const RSA_ID: LinkSpecType = LinkSpecType(2);
    /// `[03]` Ed25519 identity.
    pub const ED25519_ID: LinkSpecType = LinkSpecType(3);
}

/// One link specifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkSpec<'a> {
    /// `[00]`: an IPv4 address and ORPort.
    OrPortV4(SocketAddrV4),
    /// `[01]`: an IPv6 address and ORPort.
    OrPortV6(SocketAddrV6),
    /// `[02]`: SHA-1 digest of the relay's RSA identity key.
    RsaId([u8; 20]),
    /// `[03]`: the relay's Ed25519 identity key.
    Ed25519Id([u8; 32]),
    /// A type this crate does not know, kept byte for byte.
    Unknown {
        /// LSTYPE.
        ls_type: u8,
        /// LSPEC.
        body: Cow<'a, [u8]>,
    },
}

impl<'a> LinkSpec<'a> {
    /// The LSTYPE of this specifier.
    pub fn ls_type(&self) -> LinkSpecType {
        LinkSpecType(match self {
            LinkSpec::OrPortV4(_) => 0,
            LinkSpec::OrPortV6(_) => 1,
            LinkSpec::RsaId(_) => 2,
            LinkSpec::Ed25519Id(_) => 3,
            LinkSpec::Unknown { ls_type, .. } => *ls_type,
        })
    }

    /// Decodes one specifier (LSTYPE, LSLEN, LSPEC) from `r`.
    ///
    /// A known type with the wrong LSLEN is an error ([`Error::BadLength`]).
    pub fn decode(r: &mut Reader<'a>) -> Result<Self> {
        let ls_type = r.u8("LSTYPE")?;
        let len = r.u8("LSLEN")? as usize;
        let body = r.take(len, "LSPEC")?;
        let bad = || Error::BadLength {
            field: "LSPEC",
            len,
        };
        Ok(match ls_type {
            0 => {
                let a: &[u8; 6] = body.try_into().map_err(|_| bad())?;
                LinkSpec::OrPortV4(SocketAddrV4::new(
                    Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                    u16::from_be_bytes([a[4], a[5]]),
                ))
            }
            1 => {
                let a: &[u8; 18] = body.try_into().map_err(|_| bad())?;
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                LinkSpec::OrPortV6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    u16::from_be_bytes([a[16], a[17]]),
                    0,
                    0,
                ))
            }
            2 => LinkSpec::RsaId(body.try_into().map_err(|_| bad())?),
            3 => LinkSpec::Ed25519Id(body.try_into().map_err(|_| bad())?),
            t => LinkSpec::Unknown {
                ls_type: t,
                body: Cow::Borrowed(body),
            },
        })
    }

    /// Encodes this specifier (LSTYPE, LSLEN, LSPEC).
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_u8(self.ls_type().0);
        with_u8_len(w, "LSPEC", |w| {
            match self {
                LinkSpec::OrPortV4(a) => {
                    w.write_all(&a.ip().octets());
                    w.write_u16(a.port());
                }
                LinkSpec::OrPortV6(a) => {
                    w.write_all(&a.ip().octets());
                    w.write_u16(a.port());
                }
                LinkSpec::RsaId(id) => w.write_all(id),
                LinkSpec::Ed25519Id(id) => w.write_all(id),
                LinkSpec::Unknown { body, .. } => w.write_all(body),
            }
            Ok(())
        })
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> LinkSpec<'static> {
        match self {
            LinkSpec::OrPortV4(a) => LinkSpec::OrPortV4(a),
            LinkSpec::OrPortV6(a) => LinkSpec::OrPortV6(a),
            LinkSpec::RsaId(a) => LinkSpec::RsaId(a),
            LinkSpec::Ed25519Id(a) => LinkSpec::Ed25519Id(a),
            LinkSpec::Unknown { ls_type, body } => LinkSpec::Unknown {
                ls_type,
                body: Cow::Owned(body.into_owned()),
            },
        }
    }
}

/// Decodes `NSPEC` (1 byte) followed by that many link specifiers.
///
/// Allocation is bounded by the input: at most 255 entries of at least 2 bytes each.
pub fn decode_list<'a>(r: &mut Reader<'a>) -> Result<Vec<LinkSpec<'a>>> {
    let n = r.u8("NSPEC")? as usize;
    let mut v = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        v.push(LinkSpec::decode(r)?);
    }
    Ok(v)
}

/// Encodes `NSPEC` followed by the specifiers (at most 255).
pub fn encode_list<W: Writer + ?Sized>(specs: &[LinkSpec<'_>], w: &mut W) -> Result<()> {
    w.write_u8(len_u8("NSPEC", specs.len())?);
    for s in specs {
        s.encode(w)?;
    }
    Ok(())
}
