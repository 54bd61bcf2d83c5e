//! Microdescriptors (dir-spec §3.3): the client's view of a relay's keys,
//! family and exit-policy summaries, identified by the SHA-256 of their exact
//! text, which consensus `m` lines name ([`crate::ids::MdDigest`]).
//!
//! A batch (a `/tor/micro/d/...` response, or tor's `cached-microdescs` file
//! with `@annotation` lines) is split into documents: each starts at an
//! `onion-key` item (or, for microdescriptors without the TAP key, at the item
//! after the previous document's end), and its digest covers exactly its own
//! items, annotations excluded.

use std::net::SocketAddrV6;

use sha2::{Digest, Sha256};

use crate::encode::base64_fixed;
use crate::error::{ParseError, ParseProblem};
use crate::ids::{Ed25519Identity, MdDigest, ProtoCache, Protocols, RsaIdentity};
use crate::netdoc::{Item, Limits, SeenItems, Tokenizer};
use crate::policy::PolicySummary;

/// A relay family as written on a `family` line (dir-spec §2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Family<'a>(pub &'a str);

/// One member of a [`Family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyMember<'a> {
    /// `$HEXID`, `$HEXID=nick` or `$HEXID~nick`.
    Id(RsaIdentity),
    /// A bare nickname (obsolete and ambiguous; path selection ignores it).
    Nickname(&'a str),
    /// Anything else (kept for forward compatibility, never matches).
    Other(&'a str),
}

impl<'a> Family<'a> {
    /// The members, in document order.
    pub fn members(&self) -> impl Iterator<Item = FamilyMember<'a>> + 'a {
        self.0.split_ascii_whitespace().map(|m| {
            if let Some(rest) = m.strip_prefix('$') {
                let hex = rest.split(['=', '~']).next().unwrap_or("");
                match RsaIdentity::from_hex(hex) {
                    Ok(id) => FamilyMember::Id(id),
                    Err(_) => FamilyMember::Other(m),
                }
            } else if !m.is_empty() && m.len() <= 19 && m.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                FamilyMember::Nickname(m)
            } else {
                FamilyMember::Other(m)
            }
        })
    }

    /// The fingerprint members.
    pub fn ids(&self) -> impl Iterator<Item = RsaIdentity> + 'a {
        self.members().filter_map(|m| match m {
            FamilyMember::Id(id) => Some(id),
            _ => None,
        })
    }

    /// Does the family name this identity?
    pub fn contains(&self, id: &RsaIdentity) -> bool {
        self.ids().any(|i| i == *id)
    }

    /// Is the family empty?
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

/// The relay's family IDs, as written on a `family-ids` line: space-separated, sorted tokens
/// such as `ed25519:<unpadded base64 of a 32-byte family public key>`.
///
/// This is Tor proposal 321 ("happy families"), implemented by C tor 0.4.9 and not yet in the
/// June 2023 dir-spec: relays that share a secret family key prove it in their server
/// descriptors (`family-cert`), and directory authorities list the verified family IDs in
/// each microdescriptor. Two relays whose `family-ids` share a token are in the same family,
/// whether or not their `family` lines list each other.
///
/// The tokens are opaque: other algorithm prefixes may be added, so they are compared only as
/// exact strings and never decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyIds<'a>(pub &'a str);

impl<'a> FamilyIds<'a> {
    /// The ID tokens, in document order (the authorities write them sorted).
    pub fn ids(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.split_ascii_whitespace()
    }

    /// Does the line carry exactly this ID?
    pub fn contains(&self, id: &str) -> bool {
        self.ids().any(|i| i == id)
    }

    /// Is the line absent or empty?
    pub fn is_empty(&self) -> bool {
        self.ids().next().is_none()
    }
}

/// One microdescriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Microdesc<'a> {
    /// The exact text (from its first item through the end of its last).
    pub text: &'a str,
    /// SHA-256 of `text`: the digest named by consensus `m` lines.
    pub digest: MdDigest,
    /// 1-based line number where it starts in the batch.
    pub line: u32,
    /// Base64 body of the TAP `onion-key` (RSA), if present (obsolete).
    pub tap_onion_key: Option<&'a str>,
    /// The curve25519 `ntor-onion-key`.
    pub ntor_onion_key: [u8; 32],
    /// `id ed25519`: the relay's ed25519 identity (ignore it if the consensus
    /// entry has `NoEdConsensus`, dir-spec §3.3).
    pub ed25519_id: Option<Ed25519Identity>,
    /// `family`.
    pub family: Family<'a>,
    /// `family-ids` (proposal 321 "happy families", C tor 0.4.9; empty if absent).
    pub family_ids: FamilyIds<'a>,
    /// `p`: IPv4 exit ports (missing means `reject 1-65535`).
    pub ipv4_policy: PolicySummary,
    /// `p6`: IPv6 exit ports (missing means `reject 1-65535`).
    pub ipv6_policy: PolicySummary,
    /// `pr` (empty if absent).
    pub protocols: Protocols,
    /// The first IPv6 `a` line (consensus methods 14–27 only).
    pub ipv6: Option<SocketAddrV6>,
}

impl Microdesc<'_> {
    /// Does the relay's policy summary allow exiting to `port` over IPv4
    /// (`ipv6 == false`, the `p` line) or IPv6 (the `p6` line)? (dir-spec §3.3;
    /// a summary is only a guess: the exit may still refuse some addresses.)
    pub fn allows_port(&self, ipv6: bool, port: u16) -> bool {
        if ipv6 {
            self.ipv6_policy.allows_port(port)
        } else {
            self.ipv4_policy.allows_port(port)
        }
    }
}

/// Most microdescriptors in one batch (ten times today's network).
pub const MAX_MICRODESCS: usize = 200_000;

/// Parse exactly one microdescriptor (annotations allowed before it).
pub fn parse_one(text: &str) -> Result<Microdesc<'_>, ParseError> {
    let mut v = parse_many(text)?;
    if v.len() != 1 {
        let line = v.get(1).map_or(0, |m| m.line);
        return Err(ParseError::new(
            line,
            "onion-key",
            ParseProblem::UnexpectedItem,
        ));
    }
    v.pop()
        .ok_or_else(|| ParseError::new(0, "", ParseProblem::Truncated))
}

/// Parse a batch of concatenated microdescriptors (with optional `@`
/// annotation lines, as in tor's cache files).
pub fn parse_many(text: &str) -> Result<Vec<Microdesc<'_>>, ParseError> {
    // Every microdescriptor has exactly one `ntor-onion-key`: pre-count them to
    // allocate once (bounded by the document size limit).
    let expected = memchr::memmem::find_iter(text.as_bytes(), b"ntor-onion-key ").count();
    let mut out = Vec::with_capacity(expected.min(MAX_MICRODESCS));
    let mut cur: Vec<Item<'_>> = Vec::with_capacity(16);
    // The current document's first item and end offset (unknown items count
    // for the text and digest but are not stored).
    let mut span: Option<(Item<'_>, usize)> = None;
    let mut has_ntor = false;
    let mut last_pr = ProtoCache::new();
    for it in Tokenizer::new(text, Limits::LARGE)? {
        let it = it?;
        let boundary = it.keyword.starts_with('@')
            || it.keyword == "onion-key"
            || (it.keyword == "ntor-onion-key" && has_ntor);
        if boundary {
            if let Some((first, end)) = span.take() {
                if out.len() >= MAX_MICRODESCS {
                    return Err(it.err(ParseProblem::TooManyItems {
                        limit: MAX_MICRODESCS,
                    }));
                }
                out.push(one(text, &first, end, &cur, &mut last_pr)?);
                cur.clear();
                has_ntor = false;
            }
        }
        if it.keyword.starts_with('@') {
            continue;
        }
        has_ntor |= it.keyword == "ntor-onion-key";
        match &mut span {
            Some((_, end)) => *end = it.end,
            None => span = Some((it, it.end)),
        }
        if KNOWN.contains(&it.keyword) {
            cur.push(it);
        }
    }
    if let Some((first, end)) = span {
        out.push(one(text, &first, end, &cur, &mut last_pr)?);
    }
    Ok(out)
}

/// The keywords of dir-spec §3.3 this parser interprets; others are skipped.
const KNOWN: &[&str] = &[
    "onion-key",
    "ntor-onion-key",
    "family",
    "family-ids",
    "p",
    "p6",
    "id",
    "pr",
    "a",
];

const SEEN_ONION: u16 = 1;
const SEEN_NTOR: u16 = 2;
const SEEN_FAMILY: u16 = 4;
const SEEN_P: u16 = 8;
const SEEN_P6: u16 = 16;
const SEEN_ID_ED: u16 = 32;
const SEEN_ID_RSA: u16 = 64;
const SEEN_PR: u16 = 128;
const SEEN_FAMILY_IDS: u16 = 256;

fn one<'a>(
    doc: &'a str,
    first: &Item<'a>,
    end: usize,
    items: &[Item<'a>],
    last_pr: &mut ProtoCache<'a>,
) -> Result<Microdesc<'a>, ParseError> {
    let text = doc.get(first.start..end).unwrap_or("");
    let mut md = Microdesc {
        text,
        digest: MdDigest(Sha256::digest(text.as_bytes()).into()),
        line: first.line,
        tap_onion_key: None,
        ntor_onion_key: [0; 32],
        ed25519_id: None,
        family: Family::default(),
        family_ids: FamilyIds::default(),
        ipv4_policy: PolicySummary::reject_all(),
        ipv6_policy: PolicySummary::reject_all(),
        protocols: Protocols::default(),
        ipv6: None,
    };
    let mut seen = SeenItems::default();
    for (i, it) in items.iter().enumerate() {
        if it.keyword != "onion-key" {
            it.no_object()?;
        }
        match it.keyword {
            "onion-key" => {
                if i != 0 || it.start != first.start {
                    return Err(it.err(ParseProblem::UnexpectedItem));
                }
                seen.once(SEEN_ONION, it)?;
                md.tap_onion_key = Some(it.object_tagged("RSA PUBLIC KEY")?.body);
            }
            "ntor-onion-key" => {
                seen.once(SEEN_NTOR, it)?;
                md.ntor_onion_key = base64_fixed(it.arg(0, "key")?)
                    .ok_or_else(|| it.err(ParseProblem::BadArgument("curve25519 key (base64)")))?;
            }
            "family" => {
                seen.once(SEEN_FAMILY, it)?;
                md.family = Family(it.args);
            }
            "family-ids" => {
                seen.once(SEEN_FAMILY_IDS, it)?;
                md.family_ids = FamilyIds(it.args);
            }
            "p" => {
                seen.once(SEEN_P, it)?;
                md.ipv4_policy = PolicySummary::from_item(it)?;
            }
            "p6" => {
                seen.once(SEEN_P6, it)?;
                md.ipv6_policy = PolicySummary::from_item(it)?;
            }
            "id" => match it.arg(0, "keytype")? {
                "ed25519" => {
                    seen.once(SEEN_ID_ED, it)?;
                    md.ed25519_id = Some(
                        Ed25519Identity::from_base64(it.arg(1, "key")?).map_err(|_| {
                            it.err(ParseProblem::BadArgument("ed25519 key (base64)"))
                        })?,
                    );
                }
                "rsa1024" => seen.once(SEEN_ID_RSA, it)?,
                _ => {}
            },
            "pr" => {
                seen.once(SEEN_PR, it)?;
                md.protocols = last_pr.get(it)?;
            }
            "a" => {
                let s = it.arg(0, "address:port")?;
                if md.ipv6.is_none() && s.starts_with('[') {
                    md.ipv6 = Some(
                        s.parse()
                            .map_err(|_| it.err(ParseProblem::BadArgument("[IPv6]:port")))?,
                    );
                }
            }
            _ => {}
        }
    }
    if !seen.has(SEEN_NTOR) {
        return Err(first.err(ParseProblem::MissingItem("ntor-onion-key")));
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::base64_unpadded;

    fn md(extra: &str) -> String {
        format!(
            "ntor-onion-key {}\n{extra}id ed25519 {}\n",
            base64_unpadded(&[7; 32]),
            base64_unpadded(&[9; 32])
        )
    }

    #[test]
    fn family_ids_line_is_kept() {
        let a = "ed25519:J2h5UtwvJzP7RLKwbjPOwzzYSnvURcqJDDAn8kSTtyA";
        let b = "ed25519:fHQxkY5xBbC6aOG2zQ0cGpNmyKKnIBd2UxSGY3d0ejE";
        let text = md(&format!(
            "family $0123456789ABCDEF0123456789ABCDEF01234567\nfamily-ids {a}  {b} x25519:later\n"
        ));
        let m = parse_one(&text).unwrap();
        assert_eq!(
            m.family_ids.ids().collect::<Vec<_>>(),
            [a, b, "x25519:later"]
        );
        assert!(m.family_ids.contains(a));
        assert!(!m.family_ids.contains("ed25519:J2h5"));
        assert!(!m.family_ids.is_empty());
        // The old `family` line is still read, independently.
        assert_eq!(m.family.ids().count(), 1);
        // The line counts for the digest like any other.
        assert_eq!(m.text, text);
        assert_ne!(m.digest, parse_one(&md("")).unwrap().digest);
        assert_eq!(m.ntor_onion_key, [7; 32]);
        assert!(m.ed25519_id.is_some());
    }

    #[test]
    fn family_ids_absent_empty_or_repeated() {
        let plain = md("");
        let none = parse_one(&plain).unwrap();
        assert!(none.family_ids.is_empty());
        assert_eq!(none.family_ids.ids().count(), 0);
        let bare = md("family-ids\n");
        let empty = parse_one(&bare).unwrap();
        assert!(empty.family_ids.is_empty());
        let twice = md("family-ids ed25519:a\nfamily-ids ed25519:b\n");
        let e = parse_one(&twice).unwrap_err();
        assert_eq!(
            (e.problem, e.keyword.as_str()),
            (ParseProblem::DuplicateItem, "family-ids")
        );
        let with_object = md("family-ids ed25519:a\n-----BEGIN X-----\nAAAA\n-----END X-----\n");
        assert!(parse_one(&with_object).is_err());
        // Two documents in one batch keep their own lines.
        let batch = format!(
            "{}{}",
            md("family-ids ed25519:a\n"),
            md("family-ids ed25519:b\n")
        );
        let v = parse_many(&batch).unwrap();
        assert_eq!(v.len(), 2);
        assert!(v[0].family_ids.contains("ed25519:a") && v[1].family_ids.contains("ed25519:b"));
    }

    /// A malformed `p`, `p6` or `pr` line (dir-spec §3.3) is an error naming that line and
    /// what was wrong with it; a repeated `pr` line is read again from the cache.
    #[test]
    fn malformed_policy_or_protocol_lines_are_named() {
        for (extra, kw, what) in [
            ("p maybe 80\n", "p", "policy summary"),
            ("p6 accept 5-1\n", "p6", "policy summary"),
            ("pr Link=x\n", "pr", "protocol list"),
        ] {
            let e = parse_one(&md(extra)).unwrap_err();
            assert_eq!(
                (e.problem, e.keyword.as_str()),
                (ParseProblem::BadArgument(what), kw),
                "{extra}"
            );
        }
        let batch = format!("{}{}", md("pr Link=1-5\n"), md("pr Link=1-5\n"));
        let v = parse_many(&batch).unwrap();
        assert_eq!(v[0].protocols, v[1].protocols);
        assert_ne!(v[0].protocols, Protocols::default());
    }
}
