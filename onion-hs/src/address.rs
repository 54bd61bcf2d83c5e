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

/// Characters per base32 group: 8 characters carry 40 bits, five bytes.
const GROUP_CHARS: usize = 8;
/// Base32 groups in an address: 56 / 8, carrying the 35 bytes `PUBKEY | CHECKSUM | VERSION`.
const GROUPS: usize = ADDRESS_LEN / GROUP_CHARS;

/// `CHECKSUM = H(".onion checksum" | PUBKEY | VERSION)[:2]` (rend-spec-v3 §6), with
/// H = SHA3-256 (§0.3), from the 48-byte hash input given as six little-endian lanes (see
/// [`checksum_input_from_key`] and [`checksum_input_from_groups`]).
///
/// 15 + 32 + 1 = 48 bytes is less than SHA3-256's 136-byte rate, so the hash is exactly one
/// Keccak-f\[1600\] permutation of the padded block, and only two output bytes are wanted:
/// [`crate::keccak::sha3_256_48_lane0`] pads the block and permutes it (specialised for the
/// zero lanes of the padded block and for computing output lane 0 alone), and the checksum is
/// the low two bytes of that lane. This skips the generic sponge's buffering, which cost more
/// than the permutation itself; `checksum_matches_sha3_crate` in the tests checks it against the
/// `sha3` crate.
fn checksum(input: &[u64; 6]) -> [u8; 2] {
    let out = crate::keccak::sha3_256_48_lane0(input).to_le_bytes();
    [out[0], out[1]]
}

/// Little-endian lane of up to eight bytes of `bytes` from `start` (zero past the end).
const fn lane_of(bytes: &[u8], start: usize) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < 8 {
        if start + i < bytes.len() {
            v |= (bytes[start + i] as u64) << (8 * i);
        }
        i += 1;
    }
    v
}

/// Lane 0 of the checksum input: `".onion c"`.
const LANE0: u64 = lane_of(CHECKSUM_CONST, 0);
/// The low seven bytes of lane 1: `"hecksum"`; the top byte is the key's first.
const LANE1_LOW: u64 = lane_of(CHECKSUM_CONST, 8);

/// The checksum input `".onion checksum" | PUBKEY | VERSION` as six little-endian lanes.
///
/// Key byte `i` is hash-input byte `15 + i`, so with the key read as four little-endian words
/// `k0..k3`, lane `L ≥ 2` is the top seven bytes of `k(L−2)` and the low byte of `k(L−1)`
/// (`VERSION` for lane 5), and lane 1 ends with the key's first byte. Built in registers
/// rather than by copying into a 48-byte block and reading lanes back: those reads span the
/// copy's stores, cannot be forwarded from them, and wait for them to reach the cache.
/// `checksum_input_from_key_matches_bytes` checks it against the block construction.
fn checksum_input_from_key(key: &[u8; 32]) -> [u64; 6] {
    let mut k = [0u64; 4];
    for (word, bytes) in k.iter_mut().zip(key.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        *word = u64::from_le_bytes(b);
    }
    [
        LANE0,
        LANE1_LOW | (k[0] << 56),
        (k[0] >> 8) | (k[1] << 56),
        (k[1] >> 8) | (k[2] << 56),
        (k[2] >> 8) | (k[3] << 56),
        (k[3] >> 8) | (u64::from(VERSION) << 56),
    ]
}

/// The same six lanes as [`checksum_input_from_key`], assembled in registers straight from the
/// decoded base32 groups, so parsing does not store the key bytes and load them back as lanes
/// (a load that spans several smaller stores waits for them to reach the cache).
///
/// The 35 decoded bytes `PUBKEY | CHECKSUM | VERSION` are a big-endian bit string split into
/// 40-bit groups. Hash-input byte `15 + i` is decoded byte `i`, so lane `L` (bytes `8L..8L+8`)
/// holds decoded bytes `8L − 15 ..`: the 64 bits of the string starting at bit `8(8L − 15)`,
/// byte-swapped into little-endian order. Lane 0 and the low seven bytes of lane 1 are the
/// constant `".onion c"`/`"hecksum"`, and the top byte of lane 5 is `VERSION`, not the first
/// checksum byte that follows the key in the string. `checksum_input_from_groups_matches_bytes`
/// checks this against the byte-wise block construction.
fn checksum_input_from_groups(g: &[u64; GROUPS]) -> [u64; 6] {
    // Decoded bytes 1..9 start at bit 8 (group 0, offset 8); 9..17 at bit 72 (group 1, offset
    // 32); 17..25 at bit 136 (group 3, offset 16); 25..33 at bit 200 (group 4, offset 40).
    let first = g[0] >> 32;
    [
        LANE0,
        LANE1_LOW | (first << 56),
        bits64(window(g, 0), 8).swap_bytes(),
        bits64(window(g, 1), 32).swap_bytes(),
        bits64(window(g, 3), 16).swap_bytes(),
        (bits64(window(g, 4), 40).swap_bytes() & !(0xff << 56)) | (u64::from(VERSION) << 56),
    ]
}

/// The 32 key bytes of the decoded groups, assembled as four big-endian 64-bit words (the
/// 64 bits of the string at bits 0, 64, 128 and 192) so that they are written with four
/// word stores rather than the dozen narrow ones that copying five bytes per group makes.
/// `key_from_groups_matches_bytes` checks it against that copy.
fn key_from_groups(g: &[u64; GROUPS]) -> [u8; 32] {
    let words = [
        bits64(window(g, 0), 0),
        bits64(window(g, 1), 24),
        bits64(window(g, 3), 8),
        bits64(window(g, 4), 32),
    ];
    let mut key = [0u8; 32];
    for (out, w) in key.chunks_exact_mut(8).zip(words) {
        out.copy_from_slice(&w.to_be_bytes());
    }
    key
}

/// Groups `k`, `k + 1` and `k + 2` as one 120-bit big-endian window.
fn window(g: &[u64; GROUPS], k: usize) -> u128 {
    (u128::from(g[k]) << 80) | (u128::from(g[k + 1]) << 40) | u128::from(g[k + 2])
}

/// The 64 bits starting `off` bits into a [`window`].
fn bits64(w: u128, off: u32) -> u64 {
    (w >> (120 - 64 - off)) as u64
}

/// For each of four character positions, the character's base32 value already shifted to
/// its place in a 20-bit half group (position 0 highest), or [`BAD`] outside the alphabet.
/// Four characters then decode with four look-ups and three ORs, a third of the work of
/// shifting each value in (the per-position tables of fast base64 decoders such as modp_b64);
/// 4 KiB of tables. Measured 4–6 ns faster per address than one 256-byte table.
const PLACED: [[u32; 256]; 4] = {
    let mut t = [[BAD; 256]; 4];
    let mut pos = 0;
    while pos < 4 {
        let mut c = 0;
        while c < 256 {
            let v = DECODE[c];
            if v & 0x80 == 0 {
                t[pos][c] = (v as u32) << (5 * (3 - pos));
            }
            c += 1;
        }
        pos += 1;
    }
    t
};

/// Marks a character outside the alphabet in [`PLACED`]; above every value bit.
const BAD: u32 = 1 << 31;

/// Decode 56 base32 characters into seven 40-bit groups (big-endian, eight characters each),
/// or return the offset of the first character outside the alphabet.
fn decode_groups(label: &[u8; ADDRESS_LEN]) -> Result<[u64; GROUPS], usize> {
    let mut groups = [0u64; GROUPS];
    // OR of every half group: BAD set iff some character is outside the alphabet (those
    // groups are then discarded).
    let mut bad: u32 = 0;
    let half = |c: &[u8]| {
        PLACED[0][usize::from(c[0])]
            | PLACED[1][usize::from(c[1])]
            | PLACED[2][usize::from(c[2])]
            | PLACED[3][usize::from(c[3])]
    };
    for (chunk, group) in label.chunks_exact(GROUP_CHARS).zip(groups.iter_mut()) {
        let (hi, lo) = (half(&chunk[..4]), half(&chunk[4..]));
        bad |= hi | lo;
        *group = (u64::from(hi) << 20) | u64::from(lo);
    }
    if bad & BAD != 0 {
        // Slow path only on error: find the first bad character.
        return Err(label
            .iter()
            .position(|&c| DECODE[usize::from(c)] & 0x80 != 0)
            .unwrap_or(0));
    }
    Ok(groups)
}

/// `b` without a final `.onion` (in any ASCII case), or all of `b`.
///
/// One 48-bit comparison instead of six case-folded byte comparisons: OR-ing 0x20 into the
/// five letter bytes folds exactly `A-Z` onto `a-z` for these letters (`x | 0x20` is `o` only
/// for `O` and `o`, and likewise for `n` and `i`), and the dot's byte is compared as it is.
fn strip_onion_suffix(b: &[u8]) -> &[u8] {
    const SUFFIX: u64 = u64::from_le_bytes(*b".onion\0\0");
    const FOLD: u64 = u64::from_le_bytes([0, 0x20, 0x20, 0x20, 0x20, 0x20, 0, 0]);
    let Some(n) = b.len().checked_sub(6) else {
        return b;
    };
    let mut tail = [0u8; 8];
    tail[..6].copy_from_slice(&b[n..]);
    if u64::from_le_bytes(tail) | FOLD == SUFFIX {
        &b[..n]
    } else {
        b
    }
}

/// Whether a dot-separated list of sub-domain labels has an empty one (`..`, a leading dot,
/// or nothing at all before the address's dot).
fn has_empty_label(subdomains: &[u8]) -> bool {
    subdomains.split(|&c| c == b'.').any(|l| l.is_empty())
}

impl OnionAddress {
    /// The address of an identity public key (any 32 bytes: the address module checks no curve point; [`OnionAddress::identity_key`] in [`crate::keys`] does).
    pub fn from_public_key(key: [u8; 32]) -> Self {
        OnionAddress { key }
    }

    /// The raw 32-byte identity public key `KP_hs_id`.
    pub fn public_key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Parse an address: 56 base32 characters, optionally followed by `.onion`, optionally
    /// preceded by sub-domain labels (`www.<addr>.onion`). ASCII case is ignored.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let mut key = [0u8; 32];
        Self::parse_into(s, &mut key)?;
        Ok(OnionAddress { key })
    }

    /// [`OnionAddress::parse`], writing the key into `key` (which holds garbage on error).
    ///
    /// The key is written through this reference as soon as the label is decoded, before the
    /// checksum's permutation runs, rather than returned in a `Result` built after it: the
    /// compiler keeps stores to a `&mut` before the call but sinks the fields of a returned
    /// value after it, and a caller reading the fresh key with 16-byte loads then waits for
    /// four 8-byte stores that cannot be forwarded to it. Measured 3–5 ns per parse
    /// (`hs/address_parse`).
    fn parse_into(s: &str, key: &mut [u8; 32]) -> Result<(), AddressError> {
        let b = s.as_bytes();
        let b = strip_onion_suffix(b);
        // Fast path for the usual input: the last 56 bytes are the label, preceded by nothing
        // or by a dot. If they all decode, none of them is a dot (not base32), so this is the
        // label the general path below would find, and the result is the same; any bad
        // character falls through to the general path for its precise error. This skips
        // scanning the label for dots.
        if let Some(start) = b.len().checked_sub(ADDRESS_LEN) {
            if start == 0 || b[start - 1] == b'.' {
                let label: &[u8; ADDRESS_LEN] = b[start..]
                    .try_into()
                    .map_err(|_| AddressError::BadLength(b.len() - start))?;
                if let Ok(groups) = decode_groups(label) {
                    if start > 0 && has_empty_label(&b[..start - 1]) {
                        return Err(AddressError::EmptyLabel);
                    }
                    return Self::from_groups(&groups, key);
                }
            }
        }
        Self::parse_general(s, b, key)
    }

    /// The general parser of [`OnionAddress::parse`], given `s` with any `.onion` suffix
    /// stripped as `b`: the label is what follows the last dot, and every error is reported.
    fn parse_general(s: &str, b: &[u8], key: &mut [u8; 32]) -> Result<(), AddressError> {
        let label = match b.iter().rposition(|&c| c == b'.') {
            Some(dot) => {
                if has_empty_label(&b[..dot]) {
                    return Err(AddressError::EmptyLabel);
                }
                &b[dot + 1..]
            }
            None => b,
        };
        let label: &[u8; ADDRESS_LEN] = label
            .try_into()
            .map_err(|_| AddressError::BadLength(label.len()))?;
        match decode_groups(label) {
            Ok(groups) => Self::from_groups(&groups, key),
            Err(pos) => {
                // Report the character, not the byte, when it is non-ASCII.
                let off = b.len() - ADDRESS_LEN + pos;
                let ch = s.get(off..).and_then(|t| t.chars().next()).unwrap_or('?');
                Err(AddressError::BadCharacter { pos, ch })
            }
        }
    }

    /// Write the key of the decoded `PUBKEY | CHECKSUM | VERSION` into `key`, then check its
    /// version and checksum.
    fn from_groups(groups: &[u64; GROUPS], key: &mut [u8; 32]) -> Result<(), AddressError> {
        *key = key_from_groups(groups);
        let last = groups[GROUPS - 1].to_be_bytes();
        // The last group is key bytes 30, 31, then CHECKSUM (2 bytes), then VERSION.
        let version = last[7];
        if version != VERSION {
            return Err(AddressError::BadVersion(version));
        }
        let expected = checksum(&checksum_input_from_groups(groups));
        // A plain comparison: the address and its checksum are public, nothing here is secret.
        if expected != last[5..7] {
            return Err(AddressError::BadChecksum);
        }
        Ok(())
    }

    /// Write the 56 lowercase base32 characters (no `.onion`) into `out`.
    pub fn encode_into(&self, out: &mut [u8; ADDRESS_LEN]) {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&self.key);
        raw[32..34].copy_from_slice(&checksum(&checksum_input_from_key(&self.key)));
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
            prop_assert_eq!(checksum(&checksum_input_from_key(&key)), checksum_reference(&key));
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

    // The permutation's tests live here rather than in `keccak.rs` because the benchmark
    // compiles that file into itself (with `cfg(test)` under clippy) without these
    // dev-dependencies.
    proptest! {
        /// The specialised one-block SHA3-256 gives the first eight digest bytes of the `sha3`
        /// crate's SHA3-256 for any 48-byte message, not only checksum inputs.
        #[test]
        fn keccak_sha3_256_48_lane0_matches_sha3_crate(
            head in any::<[u8; 32]>(),
            tail in any::<[u8; 16]>(),
        ) {
            use sha3::Digest;
            let mut m = [0u8; 48];
            m[..32].copy_from_slice(&head);
            m[32..].copy_from_slice(&tail);
            let digest = sha3::Sha3_256::digest(m);
            let mut lanes = [0u64; 6];
            for (l, b) in lanes.iter_mut().zip(m.chunks_exact(8)) {
                *l = u64::from_le_bytes(b.try_into().unwrap());
            }
            let lane = crate::keccak::sha3_256_48_lane0(&lanes).to_le_bytes();
            prop_assert_eq!(&lane[..], &digest[..8]);
        }
    }

    proptest! {
        /// Lanes assembled from the decoded base32 groups equal those built from the key bytes.
        #[test]
        fn checksum_input_from_groups_matches_bytes(key in any::<[u8; 32]>(), sum in any::<[u8; 2]>()) {
            let mut raw = [0u8; 35];
            raw[..32].copy_from_slice(&key);
            raw[32..34].copy_from_slice(&sum);
            raw[34] = VERSION;
            let mut groups = [0u64; GROUPS];
            for (g, chunk) in groups.iter_mut().zip(raw.chunks_exact(5)) {
                let mut b = [0u8; 8];
                b[3..].copy_from_slice(chunk);
                *g = u64::from_be_bytes(b);
            }
            prop_assert_eq!(checksum_input_from_groups(&groups), checksum_input_reference(&key));
        }

        /// The fast path of `parse` gives exactly what the general parser gives, valid or not:
        /// random sub-domain prefixes, labels with dots, bad characters and wrong lengths.
        #[test]
        fn parse_fast_path_equals_general(
            key in any::<[u8; 32]>(),
            prefix in "([a-z.]{0,3}\\.)?",
            edit in proptest::option::of((0usize..56, "[a-z2-7.1é]")),
            cut in proptest::bool::ANY,
            suffix in proptest::bool::ANY,
        ) {
            let mut label = OnionAddress::from_public_key(key).encode();
            if let Some((pos, ch)) = edit {
                label.replace_range(pos..pos + 1, &ch);
            }
            if cut {
                label.pop();
            }
            let s = format!("{prefix}{label}{}", if suffix { ".onion" } else { "" });
            let b = s.strip_suffix(".onion").unwrap_or(&s).as_bytes();
            let mut key = [0u8; 32];
            let general = OnionAddress::parse_general(&s, b, &mut key).map(|()| OnionAddress { key });
            prop_assert_eq!(OnionAddress::parse(&s), general);
        }
    }

    /// The 48-bit suffix comparison equals a case-insensitive byte comparison for every
    /// single-byte change of `.onion` and for any short input.
    #[test]
    fn strip_onion_suffix_matches_byte_comparison() {
        let reference = |b: &[u8]| match b.len().checked_sub(6) {
            Some(n) if b[n..].eq_ignore_ascii_case(b".onion") => n,
            _ => b.len(),
        };
        for pos in 0..6 {
            for byte in 0..=255u8 {
                let mut s = *b"xx.onion";
                s[2 + pos] = byte;
                assert_eq!(strip_onion_suffix(&s).len(), reference(&s), "{s:?}");
            }
        }
        for len in 0..6 {
            assert_eq!(strip_onion_suffix(&b".onion"[..len]).len(), len);
        }
    }

    /// The checksum input built the plain way: the 48-byte block, read back as lanes.
    fn checksum_input_reference(key: &[u8; 32]) -> [u64; 6] {
        let mut block = [0u8; 48];
        block[..15].copy_from_slice(CHECKSUM_CONST);
        block[15..47].copy_from_slice(key);
        block[47] = VERSION;
        let mut lanes = [0u64; 6];
        for (lane, bytes) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = u64::from_le_bytes(bytes.try_into().unwrap());
        }
        lanes
    }

    proptest! {
        /// The register-built checksum input equals the block read back as lanes.
        #[test]
        fn checksum_input_from_key_matches_bytes(key in any::<[u8; 32]>()) {
            prop_assert_eq!(checksum_input_from_key(&key), checksum_input_reference(&key));
        }
    }

    proptest! {
        /// The word-wise key assembly equals copying the low five bytes of each group.
        #[test]
        fn key_from_groups_matches_bytes(groups in any::<[u64; GROUPS]>()) {
            let groups = groups.map(|g| g & ((1 << 40) - 1));
            let mut expected = [0u8; 32];
            for (out, g) in expected.chunks_mut(5).zip(groups) {
                out.copy_from_slice(&g.to_be_bytes()[3..3 + out.len()]);
            }
            prop_assert_eq!(key_from_groups(&groups), expected);
        }
    }

    /// The per-character decoder [`decode_groups`]'s tables are built from: values and the
    /// first bad offset.
    fn decode_groups_reference(label: &[u8; ADDRESS_LEN]) -> Result<[u64; GROUPS], usize> {
        if let Some(pos) = label
            .iter()
            .position(|&c| DECODE[usize::from(c)] & 0x80 != 0)
        {
            return Err(pos);
        }
        let mut groups = [0u64; GROUPS];
        for (chunk, g) in label.chunks_exact(GROUP_CHARS).zip(groups.iter_mut()) {
            *g = chunk
                .iter()
                .fold(0, |acc, &c| (acc << 5) | u64::from(DECODE[usize::from(c)]));
        }
        Ok(groups)
    }

    #[test]
    fn decode_every_byte_in_every_position() {
        for fill in [b'a', b'Z', b'7', 0xff, b'`'] {
            for pos in 0..GROUP_CHARS {
                for byte in 0..=255u8 {
                    let mut label = [fill; ADDRESS_LEN];
                    label[GROUP_CHARS + pos] = byte;
                    assert_eq!(decode_groups(&label), decode_groups_reference(&label));
                }
            }
        }
    }

    proptest! {
        /// Random labels mixing alphabet characters (both cases), their ASCII neighbours and
        /// arbitrary bytes decode as the per-character reference does.
        #[test]
        fn decode_groups_matches_reference(
            label in proptest::collection::vec(
                prop_oneof![
                    6 => proptest::sample::select(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ234567".to_vec()),
                    1 => proptest::sample::select(b"`{@[1890\x12\x17\xe1\xc1\xb2".to_vec()),
                    1 => any::<u8>(),
                ],
                ADDRESS_LEN,
            )
        ) {
            let label: [u8; ADDRESS_LEN] = label.try_into().unwrap();
            prop_assert_eq!(decode_groups(&label), decode_groups_reference(&label));
        }
    }

    #[test]
    fn checksum_known_answer() {
        // Python's hashlib.sha3_256(b".onion checksum" + key + b"\x03")[:2] and base32.
        let zero = OnionAddress::from_public_key([0; 32]);
        assert_eq!(checksum(&checksum_input_from_key(&[0; 32])), [0xcd, 0x0e]);
        assert_eq!(
            zero.encode(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaam2dqd"
        );
        let mut k = [0u8; 32];
        k.iter_mut().zip(0u8..).for_each(|(b, i)| *b = i);
        assert_eq!(checksum(&checksum_input_from_key(&k)), [0xb5, 0x10]);
        let a = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead";
        assert_eq!(OnionAddress::parse(a), Ok(OnionAddress::from_public_key(k)));
    }

    #[test]
    fn an_address_is_any_32_bytes_and_the_key_module_checks_the_point() {
        // y = 2 is not the encoding of a curve point: the address encodes and parses it
        // (rend-spec-v3 §6 checks only the checksum and version), the key module refuses it.
        let mut raw = [0u8; 32];
        raw[0] = 2;
        let a = OnionAddress::from_public_key(raw);
        assert_eq!(OnionAddress::parse(&a.encode()).unwrap(), a);
        assert!(a.identity_key().is_err());
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
