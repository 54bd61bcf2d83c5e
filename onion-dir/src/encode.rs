//! Small encoders/decoders used by the documents: base64 without padding
//! (dir-spec writes identities and digests unpadded), hex, and fixed-size variants
//! that decode into arrays without allocating.

/// Value of one base64 character, or 0xFF.
const fn b64_table() -> [u8; 256] {
    let mut t = [0xFFu8; 256];
    let alpha = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alpha[i] as usize] = i as u8;
        i += 1;
    }
    t
}
static B64: [u8; 256] = b64_table();
const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 decoding one character at a time: six bits in, a byte out whenever eight have
/// gathered; `bits` (under 8) are left over in `acc`.
#[derive(Default)]
struct Sextets {
    acc: u32,
    bits: u32,
}

impl Sextets {
    /// Takes character `c`: `None` if it is outside the alphabet, else the byte it
    /// completes, if any.
    #[inline]
    fn push(&mut self, c: u8) -> Option<Option<u8>> {
        let v = B64[usize::from(c)];
        if v == 0xFF {
            return None;
        }
        self.acc = (self.acc << 6) | u32::from(v);
        self.bits += 6;
        if self.bits < 8 {
            return Some(None);
        }
        self.bits -= 8;
        let byte = (self.acc >> self.bits) as u8;
        self.acc &= (1 << self.bits) - 1;
        Some(Some(byte))
    }
}

/// Decode base64 (padding optional, no whitespace) into exactly `N` bytes.
pub fn base64_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim_end_matches('=');
    let need = (N * 4).div_ceil(3);
    if s.len() != need {
        return None;
    }
    let mut out = [0u8; N];
    let bytes = s.as_bytes();
    // Whole 4-character groups, 3 bytes each.
    let groups = N / 3;
    let mut bad = 0u8;
    for g in 0..groups {
        let (Some(i), Some(o)) = (bytes.get(4 * g..4 * g + 4), out.get_mut(3 * g..3 * g + 3))
        else {
            return None;
        };
        let (a, b, c, d) = (
            B64[usize::from(i[0])],
            B64[usize::from(i[1])],
            B64[usize::from(i[2])],
            B64[usize::from(i[3])],
        );
        bad |= (a | b | c | d) & 0x80;
        let n = (u32::from(a) << 18) | (u32::from(b) << 12) | (u32::from(c) << 6) | u32::from(d);
        o[0] = (n >> 16) as u8;
        o[1] = (n >> 8) as u8;
        o[2] = n as u8;
    }
    if bad != 0 {
        return None;
    }
    let mut tail = Sextets::default();
    let mut o = 3 * groups;
    for &c in bytes.get(4 * groups..)? {
        if let Some(byte) = tail.push(c)? {
            *out.get_mut(o)? = byte;
            o += 1;
        }
    }
    // Non-canonical trailing bits are rejected.
    if o != N || tail.acc != 0 {
        return None;
    }
    Some(out)
}

/// Decode base64 possibly wrapped over lines (line feeds ignored, dir-spec §1.2),
/// padding optional.
pub fn base64_decode_lines(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut sextets = Sextets::default();
    let mut pad = false;
    for &c in s.as_bytes() {
        if c == b'\n' {
            continue;
        }
        if c == b'=' {
            pad = true;
            continue;
        }
        if pad {
            return None;
        }
        if let Some(byte) = sextets.push(c)? {
            out.push(byte);
        }
    }
    if sextets.bits >= 6 {
        return None;
    }
    Some(out)
}

/// Encode base64 without padding (the form dir-spec uses for digests and keys).
pub fn base64_unpadded(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            s.push(char::from(ALPHA[idx]));
        }
    }
    s
}

/// Decode exactly `N` bytes of hex (either case).
pub fn hex_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parse a dotted-quad IPv4 address (decimal octets, no leading zeros), faster
/// than the general `FromStr` for the consensus hot path.
pub fn parse_ipv4(s: &str) -> Option<std::net::Ipv4Addr> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in out.iter_mut() {
        let p = parts.next()?.as_bytes();
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.first() == Some(&b'0')) {
            return None;
        }
        let mut v = 0u16;
        for &c in p {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(c - b'0');
        }
        *o = u8::try_from(v).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(std::net::Ipv4Addr::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known() {
        assert_eq!(base64_fixed::<3>("AAEC"), Some([0, 1, 2]));
        assert_eq!(base64_fixed::<1>("AA=="), Some([0]));
        assert_eq!(base64_fixed::<1>("AB"), None);
        assert_eq!(base64_decode_lines("AA\nEC\n"), Some(vec![0, 1, 2]));
        assert_eq!(base64_unpadded(&[0xff]), "/w");
    }

    #[test]
    fn partial_groups_and_bad_characters() {
        assert_eq!(base64_fixed::<2>("AAE"), Some([0, 1]));
        // Trailing bits that are not zero: not the canonical encoding.
        assert_eq!(base64_fixed::<2>("AAF"), None);
        assert_eq!(base64_fixed::<2>("AA*"), None);
        assert_eq!(base64_fixed::<4>("AAECAw*"), None);
        assert_eq!(base64_fixed::<4>("AAECAw"), Some([0, 1, 2, 3]));
        // The line form does not judge the trailing bits, only a lone sixth.
        assert_eq!(base64_decode_lines("AAF"), Some(vec![0, 1]));
        assert_eq!(base64_decode_lines("A"), None);
        assert_eq!(base64_decode_lines("AA*A"), None);
        assert_eq!(base64_decode_lines("AA=A"), None);
        assert_eq!(base64_decode_lines("AAE=\n"), Some(vec![0, 1]));
    }

    proptest! {
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let s = base64_unpadded(&data);
            prop_assert_eq!(base64_decode_lines(&s), Some(data.clone()));
        }
        #[test]
        fn ipv4_like_std(s in "[0-9.]{0,16}") {
            prop_assert_eq!(parse_ipv4(&s), s.parse().ok());
        }
        #[test]
        fn ipv4_roundtrip(a: [u8; 4]) {
            let ip = std::net::Ipv4Addr::from(a);
            prop_assert_eq!(parse_ipv4(&ip.to_string()), Some(ip));
        }
        #[test]
        fn fixed_roundtrip(data in any::<[u8; 20]>()) {
            prop_assert_eq!(base64_fixed::<20>(&base64_unpadded(&data)), Some(data));
        }
    }
}
