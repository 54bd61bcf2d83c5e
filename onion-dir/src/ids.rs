//! Identifiers and small value types shared by the documents: relay identities,
//! digests, status flags (dir-spec §3.4.1 "known-flags") and subprotocol versions
//! (dir-spec §2.1.1 "proto", tor-spec §9).

use std::fmt;

use crate::encode::{base64_fixed, base64_unpadded};
use crate::error::{ParseError, ParseProblem};
use crate::netdoc::Item;

/// Relay identities are onion-crypto's types (tor-spec §0.3), so a fingerprint parsed
/// from a document is the same value the handshake and channel code check: upper-case
/// hex [`RsaIdentity`] and unpadded-base64 [`Ed25519Identity`] via `Display`.
pub use onion_crypto::keys::{Ed25519Identity, RsaIdentity};

/// SHA-256 digest of a microdescriptor's text (dir-spec §3.3), as in consensus `m` lines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MdDigest(pub [u8; 32]);

impl MdDigest {
    /// Parse unpadded base64.
    pub fn from_base64(s: &str) -> Option<Self> {
        base64_fixed(s).map(MdDigest)
    }
    /// Unpadded base64 (the `m` line and `/tor/micro/d/` form).
    pub fn to_base64(&self) -> String {
        base64_unpadded(&self.0)
    }
}
impl fmt::Debug for MdDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MdDigest({})", self.to_base64())
    }
}
impl fmt::Display for MdDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// Router status flags of a consensus `s` line (dir-spec §3.4.1). Unknown flags
/// are ignored, as the spec requires clients to do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RelayFlags(pub u16);

/// The flag names dir-spec §3.4.1 defines, in bit order.
const FLAG_NAMES: [&str; 14] = [
    "Authority",
    "BadExit",
    "Exit",
    "Fast",
    "Guard",
    "HSDir",
    "MiddleOnly",
    "NoEdConsensus",
    "Running",
    "Stable",
    "StaleDesc",
    "Sybil",
    "V2Dir",
    "Valid",
];

impl RelayFlags {
    /// Directory authority.
    pub const AUTHORITY: RelayFlags = RelayFlags(1 << 0);
    /// Must not be used as an exit.
    pub const BAD_EXIT: RelayFlags = RelayFlags(1 << 1);
    /// Suitable exit.
    pub const EXIT: RelayFlags = RelayFlags(1 << 2);
    /// Suitable for high-bandwidth circuits.
    pub const FAST: RelayFlags = RelayFlags(1 << 3);
    /// Suitable entry guard.
    pub const GUARD: RelayFlags = RelayFlags(1 << 4);
    /// Onion-service directory.
    pub const HSDIR: RelayFlags = RelayFlags(1 << 5);
    /// Only usable as a middle hop.
    pub const MIDDLE_ONLY: RelayFlags = RelayFlags(1 << 6);
    /// Ed25519 key not agreed by consensus.
    pub const NO_ED_CONSENSUS: RelayFlags = RelayFlags(1 << 7);
    /// Currently usable.
    pub const RUNNING: RelayFlags = RelayFlags(1 << 8);
    /// Suitable for long-lived circuits.
    pub const STABLE: RelayFlags = RelayFlags(1 << 9);
    /// Descriptor is stale.
    pub const STALE_DESC: RelayFlags = RelayFlags(1 << 10);
    /// Sybil.
    pub const SYBIL: RelayFlags = RelayFlags(1 << 11);
    /// Supports the v2 directory protocol (serves directory info).
    pub const V2DIR: RelayFlags = RelayFlags(1 << 12);
    /// Validated.
    pub const VALID: RelayFlags = RelayFlags(1 << 13);

    /// No flags.
    pub const fn empty() -> Self {
        RelayFlags(0)
    }
    /// The flag for a name, if dir-spec defines it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Authority" => Self::AUTHORITY,
            "BadExit" => Self::BAD_EXIT,
            "Exit" => Self::EXIT,
            "Fast" => Self::FAST,
            "Guard" => Self::GUARD,
            "HSDir" => Self::HSDIR,
            "MiddleOnly" => Self::MIDDLE_ONLY,
            "NoEdConsensus" => Self::NO_ED_CONSENSUS,
            "Running" => Self::RUNNING,
            "Stable" => Self::STABLE,
            "StaleDesc" => Self::STALE_DESC,
            "Sybil" => Self::SYBIL,
            "V2Dir" => Self::V2DIR,
            "Valid" => Self::VALID,
            _ => return None,
        })
    }
    /// True if every flag of `other` is set.
    pub const fn contains(self, other: RelayFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Union.
    pub const fn union(self, other: RelayFlags) -> Self {
        RelayFlags(self.0 | other.0)
    }
    /// The names of the set flags, in alphabetical (tor's) order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        FLAG_NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
    }
}

impl std::ops::BitOr for RelayFlags {
    type Output = RelayFlags;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Debug for RelayFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// The subprotocols tor-spec §9 defines, in [`Protocols`] slot order.
pub const PROTOCOL_NAMES: [&str; 13] = [
    "Cons",
    "Desc",
    "DirCache",
    "FlowCtrl",
    "HSDir",
    "HSIntro",
    "HSRend",
    "Link",
    "LinkAuth",
    "Microdesc",
    "Padding",
    "Relay",
    "Conflux",
];

/// Supported subprotocol versions (dir-spec §2.1.1 `proto`, tor-spec §9): one
/// bit set of versions 0..=63 per known protocol. Unknown protocols are ignored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Protocols(pub [u64; 13]);

impl Protocols {
    /// Parse `Name=1-3,5 Name2=1` entries. Returns `None` if malformed.
    pub fn parse(s: &str) -> Option<Self> {
        let mut p = Protocols::default();
        for entry in s.split_ascii_whitespace() {
            let (name, vers) = entry.split_once('=')?;
            let mut bits = 0u64;
            if !vers.is_empty() {
                for r in vers.split(',') {
                    let (lo, hi) = match r.split_once('-') {
                        Some((a, b)) => (a.parse::<u8>().ok()?, b.parse::<u8>().ok()?),
                        None => {
                            let v = r.parse::<u8>().ok()?;
                            (v, v)
                        }
                    };
                    if lo > hi || hi > 63 {
                        return None;
                    }
                    let width = u32::from(hi - lo) + 1;
                    let mask = if width == 64 {
                        u64::MAX
                    } else {
                        (1u64 << width) - 1
                    };
                    bits |= mask << lo;
                }
            }
            if let Some(i) = PROTOCOL_NAMES.iter().position(|n| *n == name) {
                if let Some(slot) = p.0.get_mut(i) {
                    *slot |= bits;
                }
            }
        }
        Some(p)
    }

    /// Does this set include version `v` of protocol `name`?
    pub fn supports(&self, name: &str, v: u8) -> bool {
        v < 64
            && PROTOCOL_NAMES
                .iter()
                .position(|n| *n == name)
                .and_then(|i| self.0.get(i))
                .is_some_and(|bits| bits & (1u64 << v) != 0)
    }
}

/// The `proto` line form (dir-spec §2.1.1): entries sorted by keyword, versions ascending
/// as compact ranges (`Relay=2,4`, `Link=3-5`), protocols without versions left out.
impl fmt::Display for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut order: Vec<(&str, u64)> = PROTOCOL_NAMES
            .iter()
            .copied()
            .zip(self.0.iter().copied())
            .filter(|(_, bits)| *bits != 0)
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (i, (name, bits)) in order.into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}=")?;
            let mut first = true;
            let mut v = 0u32;
            while v < 64 {
                if bits & (1u64 << v) == 0 {
                    v += 1;
                    continue;
                }
                let lo = v;
                while v + 1 < 64 && bits & (1u64 << (v + 1)) != 0 {
                    v += 1;
                }
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                if lo == v {
                    write!(f, "{lo}")?;
                } else {
                    write!(f, "{lo}-{v}")?;
                }
                v += 1;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (n, b) in PROTOCOL_NAMES.iter().zip(self.0.iter()) {
            if *b != 0 {
                m.entry(n, &format_args!("{b:#x}"));
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn id_roundtrips(a: [u8; 20], b: [u8; 32], f: u16) {
            let id = RsaIdentity(a);
            prop_assert_eq!(RsaIdentity::from_hex(&id.to_string()).ok(), Some(id));
            let ed = Ed25519Identity(b);
            prop_assert_eq!(Ed25519Identity::from_base64(&ed.to_string()).ok(), Some(ed));
            let md = MdDigest(b);
            prop_assert_eq!(MdDigest::from_base64(&md.to_base64()), Some(md));
            let flags = RelayFlags(f & 0x3fff);
            let back = flags.names().fold(RelayFlags::empty(), |acc, n| acc | RelayFlags::from_name(n).unwrap());
            prop_assert_eq!(back, flags);
        }

        #[test]
        fn protocols_display_round_trips(bits in proptest::array::uniform13(any::<u64>())) {
            let p = Protocols(bits);
            let text = p.to_string();
            prop_assert_eq!(Protocols::parse(&text), Some(p));
        }

        #[test]
        fn protocols_never_panic(s in "\\PC{0,60}") {
            let _ = Protocols::parse(&s);
        }
    }

    #[test]
    fn flags() {
        for (i, n) in FLAG_NAMES.iter().enumerate() {
            assert_eq!(RelayFlags::from_name(n), Some(RelayFlags(1 << i)));
        }
        let f = RelayFlags::from_name("Exit").unwrap() | RelayFlags::GUARD;
        assert!(f.contains(RelayFlags::EXIT));
        assert!(!f.contains(RelayFlags::FAST));
        assert_eq!(f.names().collect::<Vec<_>>(), ["Exit", "Guard"]);
        assert_eq!(RelayFlags::from_name("Named"), None);
    }

    #[test]
    fn protocols() {
        let p = Protocols::parse("Link=1-5 LinkAuth=1,3 Relay=2-4 Foo=9").unwrap();
        assert!(p.supports("Link", 5));
        assert!(!p.supports("LinkAuth", 2));
        assert!(p.supports("LinkAuth", 3));
        assert!(!p.supports("Relay", 1));
        assert!(!p.supports("Foo", 9));
        assert!(Protocols::parse("Link=5-1").is_none());
        assert!(Protocols::parse("Link=64").is_none());
        assert!(Protocols::parse("Link=0-63").unwrap().supports("Link", 63));
        // C tor 0.4.9.11's line prints back as it is.
        let c = "Conflux=1 Cons=1-2 Desc=1-4 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=3-5 LinkAuth=3 Microdesc=1-3 Padding=2 Relay=2-6";
        assert_eq!(Protocols::parse(c).unwrap().to_string(), c);
        assert_eq!(
            Protocols::parse("Relay=4,2 Link=5,3-4")
                .unwrap()
                .to_string(),
            "Link=3-5 Relay=2,4"
        );
        assert_eq!(Protocols::default().to_string(), "");
    }
}

/// A small cache of recently parsed `pr`/`proto` lines: a consensus repeats a
/// handful of distinct lines thousands of times, so comparing the text is much
/// cheaper than parsing it again.
#[derive(Debug)]
pub(crate) struct ProtoCache<'a> {
    entries: [(&'a str, Protocols); 8],
    next: usize,
}

impl<'a> ProtoCache<'a> {
    pub(crate) fn new() -> Self {
        ProtoCache {
            entries: [("", Protocols::default()); 8],
            next: 0,
        }
    }

    /// Parse the `pr` line `it` (dir-spec §3.4.1, §3.3), or return the cached result of an
    /// identical earlier line; a malformed list is an error at `it`.
    pub(crate) fn get(&mut self, it: &Item<'a>) -> Result<Protocols, ParseError> {
        let s = it.args;
        if let Some((_, p)) = self.entries.iter().find(|(t, _)| *t == s) {
            return Ok(*p);
        }
        let p = Protocols::parse(s)
            .ok_or_else(|| it.err(ParseProblem::BadArgument("protocol list")))?;
        if let Some(slot) = self.entries.get_mut(self.next % 8) {
            *slot = (s, p);
        }
        self.next = self.next.wrapping_add(1);
        Ok(p)
    }
}
