//! v3 onion addresses, rend-spec-v3 §6 \[ONIONADDRESS\].
//!
//! `onion_address = base32(PUBKEY | CHECKSUM | VERSION) + ".onion"` with
//! `CHECKSUM = H(".onion checksum" | PUBKEY | VERSION)[:2]` and `VERSION = 3`.
//!
//! Parsing checks length, alphabet, version and checksum but does not decompress the key (that
//! costs several microseconds and is only needed once the key is used); call
//! [`OnionAddress::identity_key`] for a validated curve point.

use core::fmt;
use core::str::FromStr;

use crate::keys::{HsIdKey, KeyError};

/// Number of base32 characters of a v3 address, without the `.onion` suffix.
pub const ADDRESS_LEN: usize = 56;
/// The only onion address version this crate knows (rend-spec-v3 §6).
pub const VERSION: u8 = 3;
const CHECKSUM_CONST: &[u8] = b".onion checksum";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// base32 value of each byte (either case); 0x80 marks bytes outside the alphabet.
const DECODE: [u8; 256] = {
    let mut t = [0x80u8; 256];
    let mut i = 0;
    while i < 26 {
        t[b'a' as usize + i] = i as u8;
        t[b'A' as usize + i] = i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 6 {
        t[b'2' as usize + d] = 26 + d as u8;
        d += 1;
    }
    t
};

/// Why a string is not a v3 onion address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The address label (without `.onion` and sub-domains) is not 56 characters long.
    #[error("onion address label has {0} characters, expected 56")]
    BadLength(usize),
    /// A character outside the base32 alphabet (`a-z`, `2-7`).
    #[error("onion address character {pos} ({ch:?}) is not base32")]
    BadCharacter {
        /// Byte offset in the 56-character label.
        pos: usize,
        /// The offending character.
        ch: char,
    },
    /// The version byte is not 3.
    #[error("onion address version {0} is not supported (only 3)")]
    BadVersion(u8),
    /// The two checksum bytes do not match the key and version.
    #[error("onion address checksum mismatch")]
    BadChecksum,
    /// A sub-domain label before the address is empty (`..` or a leading dot).
    #[error("onion address has an empty domain label")]
    EmptyLabel,
}

/// A syntactically valid v3 onion address: the service's 32-byte ed25519 identity key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnionAddress {
    key: [u8; 32],
}

/// Lanes (64-bit words) in the Keccak-f\[1600\] state.
const KECCAK_LANES: usize = 25;
/// SHA3-256's rate in bytes (FIPS 202 §6.1: 1600 − 2·256 bits).
const SHA3_256_RATE: usize = 136;

/// `CHECKSUM = H(".onion checksum" | PUBKEY | VERSION)[:2]` (rend-spec-v3 §6), with
/// H = SHA3-256 (§0.3).
///
/// The input is 15 + 32 + 1 = 48 bytes, less than SHA3-256's 136-byte rate, so the hash is
/// exactly one Keccak-f\[1600\] permutation of the padded block: absorb the six input lanes,
/// apply the SHA3 domain/padding bits by hand (FIPS 202 §B.2: `0x06` after the message, `0x80`
/// in the last byte of the rate), permute once, and read the first two output bytes from the
/// low end of lane 0 (lanes are little-endian). This skips the generic sponge's buffering,
/// which cost more than the permutation itself; `checksum_matches_sha3_crate` in the tests
/// checks it against the `sha3` crate.
fn checksum(key: &[u8; 32]) -> [u8; 2] {
    let mut block = [0u8; 48];
    block[..15].copy_from_slice(CHECKSUM_CONST);
    block[15..47].copy_from_slice(key);
    block[47] = VERSION;
    let mut state = [0u64; KECCAK_LANES];
    for (lane, bytes) in state.iter_mut().zip(block.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        *lane = u64::from_le_bytes(b);
    }
    // Padding: byte 48 (lane 6, byte 0) gets 0x06; byte 135 (lane 16, byte 7) gets 0x80.
    state[48 / 8] ^= 0x06;
    state[(SHA3_256_RATE - 1) / 8] ^= 0x80 << 56;
    keccak::f1600(&mut state);
    let out = state[0].to_le_bytes();
    [out[0], out[1]]
}

impl OnionAddress {
    /// The address of an identity public key (any 32 bytes; see [`OnionAddress::identity_key`]).
    pub fn from_public_key(key: [u8; 32]) -> Self {
        OnionAddress { key }
    }

    /// The raw 32-byte identity public key `KP_hs_id`.
    pub fn public_key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The identity key as a validated ed25519 point (on the curve, no torsion component).
    pub fn identity_key(&self) -> Result<HsIdKey, KeyError> {
        HsIdKey::from_bytes(&self.key)
    }

    /// Parse an address: 56 base32 characters, optionally followed by `.onion`, optionally
    /// preceded by sub-domain labels (`www.<addr>.onion`). ASCII case is ignored.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let b = s.as_bytes();
        let b = match b.len().checked_sub(6) {
            Some(n) if b[n..].eq_ignore_ascii_case(b".onion") => &b[..n],
            _ => b,
        };
        let label = match b.iter().rposition(|&c| c == b'.') {
            Some(dot) => {
                // Sub-domain labels must be non-empty.
                if b[..dot].split(|&c| c == b'.').any(|l| l.is_empty()) {
                    return Err(AddressError::EmptyLabel);
                }
                &b[dot + 1..]
            }
            None => b,
        };
        let label: &[u8; ADDRESS_LEN] = label
            .try_into()
            .map_err(|_| AddressError::BadLength(label.len()))?;
        let mut raw = [0u8; 35];
        for (chunk_i, chunk) in label.chunks_exact(8).enumerate() {
            let mut acc: u64 = 0;
            let mut bad: u8 = 0;
            for &c in chunk {
                let v = DECODE[usize::from(c)];
                bad |= v;
                acc = (acc << 5) | u64::from(v & 31);
            }
            if bad & 0x80 != 0 {
                // Slow path only on error: find and report the first bad character.
                let j = chunk
                    .iter()
                    .position(|&c| DECODE[usize::from(c)] & 0x80 != 0)
                    .unwrap_or(0);
                let pos = chunk_i * 8 + j;
                // Report the character, not the byte, when it is non-ASCII.
                let off = b.len() - ADDRESS_LEN + pos;
                let ch = s.get(off..).and_then(|t| t.chars().next()).unwrap_or('?');
                return Err(AddressError::BadCharacter { pos, ch });
            }
            raw[chunk_i * 5..chunk_i * 5 + 5].copy_from_slice(&acc.to_be_bytes()[3..8]);
        }
        let version = raw[34];
        if version != VERSION {
            return Err(AddressError::BadVersion(version));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[..32]);
        if !crate::ops::ct_eq(&checksum(&key), &raw[32..34]) {
            return Err(AddressError::BadChecksum);
        }
        Ok(OnionAddress { key })
    }

    /// Write the 56 lowercase base32 characters (no `.onion`) into `out`.
    pub fn encode_into(&self, out: &mut [u8; ADDRESS_LEN]) {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&self.key);
        raw[32..34].copy_from_slice(&checksum(&self.key));
        raw[34] = VERSION;
        for (i, chunk) in raw.chunks_exact(5).enumerate() {
            let mut b = [0u8; 8];
            b[3..].copy_from_slice(chunk);
            let acc = u64::from_be_bytes(b);
            for j in 0..8 {
                out[i * 8 + j] = ALPHABET[((acc >> (35 - 5 * j)) & 31) as usize];
            }
        }
    }

    /// The 56 lowercase base32 characters, without `.onion`.
    pub fn encode(&self) -> String {
        let mut out = [0u8; ADDRESS_LEN];
        self.encode_into(&mut out);
        out.iter().map(|&c| char::from(c)).collect()
    }
}

impl fmt::Display for OnionAddress {
    /// `<56 characters>.onion`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; ADDRESS_LEN];
        self.encode_into(&mut out);
        // The alphabet is ASCII, so this cannot fail; fall back to an error rather than panic.
        let s = core::str::from_utf8(&out).map_err(|_| fmt::Error)?;
        write!(f, "{s}.onion")
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddress({self})")
    }
}

impl FromStr for OnionAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OnionAddress::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn checksum_reference(key: &[u8; 32]) -> [u8; 2] {
        use sha3::Digest;
        let h = sha3::Sha3_256::new()
            .chain_update(CHECKSUM_CONST)
            .chain_update(key)
            .chain_update([VERSION])
            .finalize();
        [h[0], h[1]]
    }

    proptest! {
        /// The hand-padded one-block Keccak equals the `sha3` crate's SHA3-256.
        #[test]
        fn checksum_matches_sha3_crate(key in any::<[u8; 32]>()) {
            prop_assert_eq!(checksum(&key), checksum_reference(&key));
        }

        /// Any key's address encodes and parses back; flipping the checksum is detected.
        #[test]
        fn encode_parse_round_trip(key in any::<[u8; 32]>()) {
            let a = OnionAddress::from_public_key(key);
            let text = a.encode();
            prop_assert_eq!(OnionAddress::parse(&text), Ok(a));
            let mut raw = data_encoding::BASE32_NOPAD.decode(text.to_uppercase().as_bytes()).unwrap();
            raw[33] ^= 1;
            let bad = data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase();
            prop_assert_eq!(OnionAddress::parse(&bad), Err(AddressError::BadChecksum));
        }
    }

    #[test]
    fn checksum_known_answer() {
        // Python's hashlib.sha3_256(b".onion checksum" + key + b"\x03")[:2] and base32.
        let zero = OnionAddress::from_public_key([0; 32]);
        assert_eq!(checksum(&[0; 32]), [0xcd, 0x0e]);
        assert_eq!(
            zero.encode(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaam2dqd"
        );
        let mut k = [0u8; 32];
        k.iter_mut().zip(0u8..).for_each(|(b, i)| *b = i);
        assert_eq!(checksum(&k), [0xb5, 0x10]);
        let a = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead";
        assert_eq!(OnionAddress::parse(a), Ok(OnionAddress::from_public_key(k)));
    }

    #[test]
    fn suffix_and_subdomains() {
        let a = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid";
        let p = OnionAddress::parse(a).unwrap();
        assert_eq!(OnionAddress::parse(&format!("{a}.onion")).unwrap(), p);
        assert_eq!(OnionAddress::parse(&format!("www.x.{a}.onion")).unwrap(), p);
        assert_eq!(
            OnionAddress::parse(&format!("{}.ONION", a.to_uppercase())).unwrap(),
            p
        );
        assert_eq!(
            OnionAddress::parse(&format!(".{a}.onion")),
            Err(AddressError::EmptyLabel)
        );
        assert_eq!(p.encode(), a);
        assert_eq!(p.to_string(), format!("{a}.onion"));
        let bad = format!("{}é", &a[..55]);
        assert!(matches!(
            OnionAddress::parse(&bad),
            Err(AddressError::BadLength(57))
        ));
        let bad = format!("{}1", &a[..55]);
        assert_eq!(
            OnionAddress::parse(&bad),
            Err(AddressError::BadCharacter { pos: 55, ch: '1' })
        );
    }
}
