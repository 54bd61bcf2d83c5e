//! Link specifiers as used inside onion-service messages and descriptors, rend-spec-v3 §0.4
//! \[BUILDING-BLOCKS\] (formats from tor-spec §5.1.2).
//!
//! The spec asks clients and services to forward link specifiers verbatim and in order, and not
//! to reject unknown types, so each is kept as its raw (type, body) pair with typed accessors.
//! The wire format is onion-cell's ([`onion_cell::linkspec`]); this owned raw form is what
//! descriptors and the client/service machines carry, convertible both ways.

use onion_cell::linkspec::LinkSpec as L;
use onion_crypto::RsaIdentity;
use std::net::{SocketAddrV4, SocketAddrV6};

/// LSTYPE 00: TLS-over-TCP, IPv4 address and port.
pub const LS_IPV4: u8 = onion_cell::linkspec::LinkSpecType::ORPORT_V4.0;
/// LSTYPE 01: TLS-over-TCP, IPv6 address and port.
pub const LS_IPV6: u8 = onion_cell::linkspec::LinkSpecType::ORPORT_V6.0;
/// LSTYPE 02: legacy (RSA SHA-1) identity.
pub const LS_RSA_ID: u8 = onion_cell::linkspec::LinkSpecType::RSA_ID.0;
/// LSTYPE 03: ed25519 identity.
pub const LS_ED25519_ID: u8 = onion_cell::linkspec::LinkSpecType::ED25519_ID.0;

/// A malformed link specifier list, or one that cannot be encoded (onion-cell's error,
/// naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkSpecError {
    /// Decoding or encoding failed in onion-cell (truncated field, bad length of a known
    /// type, trailing bytes, more than 255 specifiers or a body longer than 255 bytes).
    #[error("link specifier list: {0}")]
    Wire(#[from] onion_cell::Error),
}

/// One link specifier kept as its raw type and body, exactly as received: unlike onion-cell's
/// typed [`onion_cell::linkspec::LinkSpec`], a known type with a body of the wrong length is
/// carried, not refused (rend-spec-v3 §0.4: forward link specifiers verbatim).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawLinkSpec {
    /// LSTYPE.
    pub ty: u8,
    /// LSPEC (at most 255 bytes).
    pub body: Vec<u8>,
}

impl RawLinkSpec {
    /// IPv4 address and OR port.
    pub fn ipv4(addr: SocketAddrV4) -> Self {
        L::OrPortV4(addr).into()
    }
    /// IPv6 address and OR port.
    pub fn ipv6(addr: SocketAddrV6) -> Self {
        L::OrPortV6(addr).into()
    }
    /// RSA identity.
    pub fn rsa_id(id: RsaIdentity) -> Self {
        L::RsaId(id.0).into()
    }
    /// Ed25519 identity.
    pub fn ed25519_id(id: [u8; 32]) -> Self {
        L::Ed25519Id(id).into()
    }
    /// This specifier decoded by onion-cell into its typed form; `None` if a known type has
    /// a body of the wrong length.
    pub fn typed(&self) -> Option<L<'static>> {
        let mut enc = Vec::with_capacity(2 + self.body.len());
        self.to_cell().encode(&mut enc).ok()?;
        let l = L::decode(&mut onion_cell::reader::Reader::new(&enc)).ok()?;
        Some(l.into_owned())
    }
    /// The IPv4 address, if this is type 00.
    pub fn as_ipv4(&self) -> Option<SocketAddrV4> {
        match self.typed()? {
            L::OrPortV4(a) => Some(a),
            _ => None,
        }
    }
    /// The IPv6 address, if this is type 01.
    pub fn as_ipv6(&self) -> Option<SocketAddrV6> {
        match self.typed()? {
            L::OrPortV6(a) => Some(a),
            _ => None,
        }
    }
    /// The RSA identity, if this is type 02.
    pub fn as_rsa_id(&self) -> Option<RsaIdentity> {
        match self.typed()? {
            L::RsaId(id) => Some(RsaIdentity(id)),
            _ => None,
        }
    }
    /// The ed25519 identity, if this is type 03.
    pub fn as_ed25519_id(&self) -> Option<[u8; 32]> {
        match self.typed()? {
            L::Ed25519Id(id) => Some(id),
            _ => None,
        }
    }
}

impl From<L<'_>> for RawLinkSpec {
    fn from(l: L<'_>) -> Self {
        let ty = l.ls_type().0;
        let body = match l {
            L::Unknown { body, .. } => body.into_owned(),
            known => {
                // A known type's body is fixed and at most 32 bytes: encoding cannot fail.
                let mut v = Vec::with_capacity(2 + 32);
                let _ = known.encode(&mut v);
                v.split_off(v.len().min(2))
            }
        };
        RawLinkSpec { ty, body }
    }
}

impl RawLinkSpec {
    /// This specifier as onion-cell's, byte for byte (kept raw, so even a body whose length
    /// does not fit its type is forwarded verbatim).
    pub fn to_cell(&self) -> L<'_> {
        L::Unknown {
            ls_type: self.ty,
            body: std::borrow::Cow::Borrowed(&self.body),
        }
    }
}

/// Parse a complete link specifier block (`NSPEC` then the specifiers, nothing after) with
/// onion-cell's decoder (a known type with the wrong length is refused, unknown types kept).
pub fn parse_list(b: &[u8]) -> Result<Vec<RawLinkSpec>, LinkSpecError> {
    let mut r = onion_cell::reader::Reader::new(b);
    let v = onion_cell::linkspec::decode_list(&mut r)?;
    r.expect_end("link specifier list")?;
    Ok(v.into_iter().map(RawLinkSpec::from).collect())
}

/// Append the encoded block (`NSPEC` then the specifiers) to `out` (onion-cell's encoder).
pub fn encode_list(specs: &[RawLinkSpec], out: &mut Vec<u8>) -> Result<(), LinkSpecError> {
    let cells: Vec<_> = specs.iter().map(RawLinkSpec::to_cell).collect();
    Ok(onion_cell::linkspec::encode_list(&cells, out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_accessors_and_raw_round_trip() {
        let v4 = SocketAddrV4::new([192, 0, 2, 7].into(), 9001);
        let v6 = SocketAddrV6::new([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1].into(), 443, 0, 0);
        let specs = vec![
            RawLinkSpec::ipv4(v4),
            RawLinkSpec::ipv6(v6),
            RawLinkSpec::rsa_id(RsaIdentity([2; 20])),
            RawLinkSpec::ed25519_id([3; 32]),
            RawLinkSpec {
                ty: 9,
                body: vec![1, 2, 3],
            },
        ];
        assert_eq!(specs[0].body, [192, 0, 2, 7, 0x23, 0x29]);
        assert_eq!(specs[0].as_ipv4(), Some(v4));
        assert_eq!(specs[1].as_ipv6(), Some(v6));
        assert_eq!(specs[2].as_rsa_id(), Some(RsaIdentity([2; 20])));
        assert_eq!(specs[3].as_ed25519_id(), Some([3; 32]));
        assert_eq!(specs[3].as_rsa_id(), None);
        assert_eq!(specs[4].typed().map(|l| l.ls_type().0), Some(9));
        let mut enc = Vec::new();
        encode_list(&specs, &mut enc).unwrap();
        assert_eq!(parse_list(&enc).unwrap(), specs);
        // A known type with the wrong length has no typed form and is refused on parse.
        let bad = RawLinkSpec {
            ty: LS_IPV4,
            body: vec![1, 2, 3],
        };
        assert_eq!(bad.as_ipv4(), None);
        let mut enc = Vec::new();
        encode_list(&[bad], &mut enc).unwrap();
        assert!(parse_list(&enc).is_err());
        enc.push(0);
        assert!(parse_list(&enc).is_err());
    }
}
