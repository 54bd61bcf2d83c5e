//! Network-status consensus documents, both flavours (dir-spec §3.4.1, §3.9):
//! preamble, authority sections, router status entries, footer and signatures.
//!
//! Parsing borrows from the document text: nicknames, version strings and
//! parameter names are `&'a str` slices of it; everything else is decoded into
//! small fixed-size values. A parsed document is an [`UnverifiedConsensus`]
//! (typestate): it becomes a [`Consensus`] only after its signatures verify
//! against a quorum of authority key certificates
//! ([`UnverifiedConsensus::verify`]), or when the caller explicitly says it
//! trusts the text ([`UnverifiedConsensus::assume_verified`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV6};

use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::authcert::AuthCert;
use crate::encode::{base64_fixed, hex_fixed};
use crate::error::{ParseError, ParseProblem, VerifyError};
use crate::ids::{MdDigest, ProtoCache, Protocols, RelayFlags, RsaIdentity};
use crate::netdoc::{
    is_known, rule, Item, Limits, Multiplicity::*, ObjRule, Rule, Section, SeenItems, Tokenizer,
};
use crate::policy::PolicySummary;
use crate::Timestamp;

/// The two consensus flavours a client meets (dir-spec §3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// The full ("ns") consensus: `r` lines carry a server-descriptor digest.
    Ns,
    /// The microdescriptor consensus: `m` lines carry microdescriptor digests.
    Microdesc,
}

impl Flavor {
    /// The flavour's name as in `network-status-version 3 <name>` and in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Ns => "ns",
            Flavor::Microdesc => "microdesc",
        }
    }
}

/// `Keyword=Int32` lists: `params` (param-spec) and `bandwidth-weights`
/// (dir-spec §3.4.1). Sorted by keyword in the document; kept in document order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetParams<'a> {
    /// The entries in document order.
    pub entries: Vec<(&'a str, i32)>,
}

impl<'a> NetParams<'a> {
    fn parse(it: &Item<'a>) -> Result<Self, ParseError> {
        let mut entries = Vec::new();
        for a in it.args() {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| it.err(ParseProblem::BadArgument("Keyword=Int32")))?;
            let v: i32 = v
                .parse()
                .map_err(|_| it.err(ParseProblem::BadArgument("Int32 value")))?;
            if k.is_empty() {
                return Err(it.err(ParseProblem::BadArgument("empty keyword")));
            }
            entries.push((k, v));
        }
        Ok(NetParams { entries })
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<i32> {
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The value of `name` clamped to `[min, max]`, or `default` if absent
    /// (param-spec: out-of-range values are clamped).
    pub fn get_clamped(&self, name: &str, default: i32, min: i32, max: i32) -> i32 {
        self.get(name)
            .map_or(default, |v| v.clamp(min, max.max(min)))
    }
}

/// One `shared-rand-current-value` or `shared-rand-previous-value` line (dir-spec §3.4.1):
/// the value and how many reveals made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRandValue {
    /// Number of reveals that contributed.
    pub num_reveals: u32,
    /// The 32-byte value.
    pub value: [u8; 32],
}

/// One authority section (dir-spec §3.4.1 `dir-source`, `contact`, `vote-digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSource<'a> {
    /// Authority nickname (ends in `-legacy` for a legacy-key entry).
    pub nickname: &'a str,
    /// The authority's v3 identity (hash of its authority identity key).
    pub identity: RsaIdentity,
    /// Hostname as written.
    pub hostname: &'a str,
    /// IP address.
    pub address: IpAddr,
    /// Directory port.
    pub dir_port: u16,
    /// OR port.
    pub or_port: u16,
    /// Contact line (absent for legacy entries).
    pub contact: Option<&'a str>,
    /// Digest of the authority's vote (absent for legacy entries).
    pub vote_digest: Option<[u8; 20]>,
}

/// One router status entry (dir-spec §3.4.1 "r" … "m", §3.9.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStatus<'a> {
    /// Nickname.
    pub nickname: &'a str,
    /// RSA identity (fingerprint).
    pub identity: RsaIdentity,
    /// SHA-1 digest of the server descriptor (ns flavour only).
    pub descriptor_digest: Option<[u8; 20]>,
    /// Publication time of the descriptor (meaningless in recent microdesc
    /// consensuses, which write a fixed 2038 date).
    pub published: Timestamp,
    /// IPv4 address.
    pub address: Ipv4Addr,
    /// OR port.
    pub or_port: u16,
    /// Directory port (0 if none).
    pub dir_port: u16,
    /// The first IPv6 OR address of the `a` lines, if any (tor uses only the
    /// first; further `a` lines are accepted and ignored).
    pub ipv6: Option<SocketAddrV6>,
    /// Known flags of the `s` line.
    pub flags: RelayFlags,
    /// The `v` line (e.g. `Tor 0.4.7.10`).
    pub version: Option<&'a str>,
    /// The `pr` line (empty if absent).
    pub protocols: Protocols,
    /// `w Bandwidth=` in kilobytes per second (absent if there is no `w` line).
    pub bandwidth: Option<u32>,
    /// `w Measured=` (votes only, normally absent in a consensus).
    pub measured: Option<u32>,
    /// `w Unmeasured=1`: the bandwidth is self-reported.
    pub unmeasured: bool,
    /// The `p` exit-policy summary (ns flavour).
    pub policy: Option<PolicySummary>,
    /// The microdescriptor digest of the `m` line (microdesc flavour).
    pub md_digest: Option<MdDigest>,
}

impl RouterStatus<'_> {
    /// The bandwidth used for weighting (0 without a `w` line).
    pub fn weight(&self) -> u32 {
        self.bandwidth.unwrap_or(0)
    }
}

/// Digest algorithm of a `directory-signature` (dir-spec §3.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// SHA-1 (the default when no algorithm is written).
    Sha1,
    /// SHA-256.
    Sha256,
    /// Something else: ignored by verification, as the spec requires.
    Unknown,
}

/// One `directory-signature` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySignature {
    /// How the signed part was hashed.
    pub algorithm: DigestAlgorithm,
    /// The signing authority's v3 identity.
    pub identity: RsaIdentity,
    /// SHA-1 of the authority's signing key (DER).
    pub signing_key_digest: RsaIdentity,
    /// The RSA signature bytes.
    pub signature: Vec<u8>,
}

/// A parsed consensus (dir-spec §3.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consensus<'a> {
    /// The document text.
    pub text: &'a str,
    /// Length of the signed prefix (through the space after the first
    /// `directory-signature`).
    pub signed_len: usize,
    /// Flavour.
    pub flavor: Flavor,
    /// `consensus-method`.
    pub consensus_method: Option<u32>,
    /// `valid-after`.
    pub valid_after: Timestamp,
    /// `fresh-until`.
    pub fresh_until: Timestamp,
    /// `valid-until`.
    pub valid_until: Timestamp,
    /// `voting-delay VoteSeconds DistSeconds`.
    pub voting_delay: (u32, u32),
    /// `client-versions` (comma-separated list, as written).
    pub client_versions: Option<&'a str>,
    /// `server-versions` (comma-separated list, as written).
    pub server_versions: Option<&'a str>,
    /// `known-flags`.
    pub known_flags: Vec<&'a str>,
    /// `recommended-client-protocols`.
    pub recommended_client_protocols: Protocols,
    /// `recommended-relay-protocols`.
    pub recommended_relay_protocols: Protocols,
    /// `required-client-protocols`.
    pub required_client_protocols: Protocols,
    /// `required-relay-protocols`.
    pub required_relay_protocols: Protocols,
    /// `params` (param-spec).
    pub params: NetParams<'a>,
    /// `shared-rand-previous-value`.
    pub shared_rand_previous: Option<SharedRandValue>,
    /// `shared-rand-current-value`.
    pub shared_rand_current: Option<SharedRandValue>,
    /// Authority sections.
    pub authorities: Vec<DirSource<'a>>,
    /// Router status entries, in document order (ascending identity).
    pub relays: Vec<RouterStatus<'a>>,
    /// `bandwidth-weights` of the footer.
    pub bandwidth_weights: NetParams<'a>,
    /// The signatures.
    pub signatures: Vec<DirectorySignature>,
}

/// Whether a consensus may be used at a given time (dir-spec §5.1, tor's
/// `networkstatus_consensus_reasonably_live`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Freshness {
    /// Before `valid-after`.
    NotYetValid,
    /// Between `valid-after` and `valid-until`: usable.
    Live,
    /// Expired, but by no more than 24 hours: usable for bootstrapping and
    /// tolerated by tor clients while they fetch a new one.
    ReasonablyLive,
    /// More than 24 hours past `valid-until`.
    Expired,
}

/// How long after `valid-until` a consensus is still "reasonably live"
/// (tor's `REASONABLY_LIVE_TIME`, 24 hours).
pub const REASONABLY_LIVE_SECS: u64 = 24 * 3600;

impl Consensus<'_> {
    /// Liveness at wall-clock time `now` (dir-spec §5.1).
    pub fn freshness(&self, now: Timestamp) -> Freshness {
        if now < self.valid_after {
            Freshness::NotYetValid
        } else if now <= self.valid_until {
            Freshness::Live
        } else if now <= self.valid_until.add_secs(REASONABLY_LIVE_SECS) {
            Freshness::ReasonablyLive
        } else {
            Freshness::Expired
        }
    }

    /// The entry of the relay with this identity (entries are sorted, so this
    /// is a binary search).
    pub fn relay(&self, id: &RsaIdentity) -> Option<&RouterStatus<'_>> {
        self.relays
            .binary_search_by(|r| r.identity.cmp(id))
            .ok()
            .and_then(|i| self.relays.get(i))
    }

    /// When a client holding this consensus should fetch the next one (dir-spec §5.1): at a
    /// time drawn uniformly from `[start, end)`, where `start` is 3/4 of a voting interval
    /// (`fresh-until − valid-after`) after `fresh-until`, when the caches should all have
    /// the new one, and `end` is 7/8 of the way from `start` to `valid-until`, so that the
    /// fetch has time to finish before this one expires. The draw is random so that clients
    /// do not all ask at once. For a malformed consensus whose times are out of order,
    /// `start` is clamped to `valid-until` and the window is empty.
    pub fn refresh_window(&self) -> (Timestamp, Timestamp) {
        refresh_window(self.valid_after, self.fresh_until, self.valid_until)
    }

    /// Is `now` before `fresh-until` (no newer consensus expected yet)?
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        self.valid_after <= now && now < self.fresh_until
    }

    /// The signed prefix of the document (dir-spec §3.4.1: from
    /// `network-status-version` through the space after `directory-signature`).
    pub fn signed_part(&self) -> &[u8] {
        self.text.as_bytes().get(..self.signed_len).unwrap_or(&[])
    }

    /// The digest that signatures with `alg` sign (`None` for unknown algorithms).
    pub fn signed_digest(&self, alg: DigestAlgorithm) -> Option<Vec<u8>> {
        match alg {
            DigestAlgorithm::Sha1 => Some(Sha1::digest(self.signed_part()).to_vec()),
            DigestAlgorithm::Sha256 => Some(Sha256::digest(self.signed_part()).to_vec()),
            DigestAlgorithm::Unknown => None,
        }
    }
}

/// A consensus whose signatures have not been checked (typestate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedConsensus<'a>(Consensus<'a>);

/// The outcome of a signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureReport {
    /// Configured authorities whose signature verified, each counted once.
    pub verified: Vec<RsaIdentity>,
    /// Signatures that could not be checked for lack of a certificate
    /// (identity, signing-key digest): the caller may fetch these certificates.
    pub missing_certs: Vec<(RsaIdentity, RsaIdentity)>,
    /// Signatures that were checked and failed.
    pub bad: Vec<RsaIdentity>,
    /// Distinct verified authorities needed (more than half of those configured).
    pub needed: usize,
}

impl SignatureReport {
    /// Is the quorum reached?
    pub fn quorum(&self) -> bool {
        self.needed > 0 && self.verified.len() >= self.needed
    }
}

impl<'a> UnverifiedConsensus<'a> {
    /// Look at the parsed document before verification (e.g. to find which
    /// certificates to fetch). Nothing in it is authenticated yet.
    pub fn peek(&self) -> &Consensus<'a> {
        &self.0
    }

    /// Check every signature against `certs` and report, without deciding.
    /// `authorities` is the configured list of v3 authority identities;
    /// certificates are used only if they verify and are valid at `now`.
    pub fn check_signatures(
        &self,
        authorities: &[RsaIdentity],
        certs: &[AuthCert],
        now: Timestamp,
    ) -> SignatureReport {
        let mut rep = SignatureReport {
            verified: Vec::new(),
            missing_certs: Vec::new(),
            bad: Vec::new(),
            needed: authorities.len() / 2 + 1,
        };
        let c = &self.0;
        let mut sha1 = None;
        let mut sha256 = None;
        for sig in &c.signatures {
            if !authorities.contains(&sig.identity) || rep.verified.contains(&sig.identity) {
                continue;
            }
            let digest = match sig.algorithm {
                DigestAlgorithm::Sha1 => {
                    sha1.get_or_insert_with(|| c.signed_digest(DigestAlgorithm::Sha1))
                }
                DigestAlgorithm::Sha256 => {
                    sha256.get_or_insert_with(|| c.signed_digest(DigestAlgorithm::Sha256))
                }
                DigestAlgorithm::Unknown => continue,
            };
            let Some(digest) = digest.as_deref() else {
                continue;
            };
            let cert = certs.iter().find(|k| {
                k.fingerprint == sig.identity
                    && k.signing_key_digest() == sig.signing_key_digest
                    && k.is_valid_at(now)
            });
            match cert {
                None => rep
                    .missing_certs
                    .push((sig.identity, sig.signing_key_digest)),
                Some(k) => match k.signing_key.verify_digest(digest, &sig.signature) {
                    Ok(()) => rep.verified.push(sig.identity),
                    Err(_) => rep.bad.push(sig.identity),
                },
            }
        }
        rep
    }

    /// Verify: accept the consensus only if more than half of the configured
    /// `authorities` have a valid signature on it (dir-spec §3.4.1, §5.1),
    /// using certificates valid at `now`.
    pub fn verify(
        self,
        authorities: &[RsaIdentity],
        certs: &[AuthCert],
        now: Timestamp,
    ) -> Result<Consensus<'a>, VerifyError> {
        let rep = self.check_signatures(authorities, certs, now);
        if rep.quorum() {
            Ok(self.0)
        } else {
            Err(VerifyError::NoQuorum {
                good: rep.verified.len(),
                needed: rep.needed,
            })
        }
    }

    /// Skip verification: for documents whose authenticity the caller has
    /// established otherwise (tests, benchmarks, research tools).
    pub fn assume_verified(self) -> Consensus<'a> {
        self.0
    }
}

const PREAMBLE_RULES: &[Rule] = &[
    rule("network-status-version", Once, ObjRule::Forbidden),
    rule("vote-status", Once, ObjRule::Forbidden),
    rule("consensus-method", AtMostOnce, ObjRule::Forbidden),
    rule("valid-after", Once, ObjRule::Forbidden),
    rule("fresh-until", Once, ObjRule::Forbidden),
    rule("valid-until", Once, ObjRule::Forbidden),
    rule("voting-delay", Once, ObjRule::Forbidden),
    rule("client-versions", AtMostOnce, ObjRule::Forbidden),
    rule("server-versions", AtMostOnce, ObjRule::Forbidden),
    rule("package", Any, ObjRule::Forbidden),
    rule("known-flags", Once, ObjRule::Forbidden),
    rule(
        "recommended-client-protocols",
        AtMostOnce,
        ObjRule::Forbidden,
    ),
    rule(
        "recommended-relay-protocols",
        AtMostOnce,
        ObjRule::Forbidden,
    ),
    rule("required-client-protocols", AtMostOnce, ObjRule::Forbidden),
    rule("required-relay-protocols", AtMostOnce, ObjRule::Forbidden),
    rule("params", AtMostOnce, ObjRule::Forbidden),
    rule("shared-rand-previous-value", AtMostOnce, ObjRule::Forbidden),
    rule("shared-rand-current-value", AtMostOnce, ObjRule::Forbidden),
];

const AUTH_RULES: &[Rule] = &[
    rule("dir-source", Once, ObjRule::Forbidden),
    rule("contact", Once, ObjRule::Forbidden),
    rule("vote-digest", Once, ObjRule::Forbidden),
];

const LEGACY_AUTH_RULES: &[Rule] = &[
    rule("dir-source", Once, ObjRule::Forbidden),
    rule("contact", AtMostOnce, ObjRule::Forbidden),
    rule("vote-digest", AtMostOnce, ObjRule::Forbidden),
];

const FOOTER_RULES: &[Rule] = &[
    rule("directory-footer", Once, ObjRule::Forbidden),
    rule("bandwidth-weights", AtMostOnce, ObjRule::Forbidden),
];

/// [`Consensus::refresh_window`] for a consensus valid from `valid_after`, fresh until
/// `fresh_until` and valid until `valid_until` (dir-spec §5.1), for holders of those times
/// without the parsed document.
pub fn refresh_window(
    valid_after: Timestamp,
    fresh_until: Timestamp,
    valid_until: Timestamp,
) -> (Timestamp, Timestamp) {
    let interval = fresh_until.0.saturating_sub(valid_after.0);
    let start = fresh_until
        .0
        .saturating_add(interval - interval / 4)
        .min(valid_until.0);
    let end = start + valid_until.0.saturating_sub(start).saturating_mul(7) / 8;
    (Timestamp(start), Timestamp(end))
}

/// Most authority sections accepted (there are 9 authorities today).
const MAX_AUTHORITIES: usize = 64;
/// Most signatures accepted.
const MAX_SIGNATURES: usize = 128;

fn parse_u32(it: &Item<'_>, s: &str, what: &'static str) -> Result<u32, ParseError> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(it.err(ParseProblem::BadArgument(what)));
    }
    s.parse()
        .map_err(|_| it.err(ParseProblem::BadArgument(what)))
}

fn parse_u16(it: &Item<'_>, s: &str, what: &'static str) -> Result<u16, ParseError> {
    u16::try_from(parse_u32(it, s, what)?).map_err(|_| it.err(ParseProblem::BadArgument(what)))
}

fn parse_time(it: &Item<'_>, first: usize) -> Result<Timestamp, ParseError> {
    let d = it.arg(first, "date")?;
    let t = it.arg(first + 1, "time")?;
    Timestamp::parse(d, t).ok_or_else(|| it.err(ParseProblem::BadArgument("YYYY-MM-DD HH:MM:SS")))
}

fn parse_protocols(it: Option<&Item<'_>>) -> Result<Protocols, ParseError> {
    match it {
        None => Ok(Protocols::default()),
        Some(it) => Protocols::parse(it.args)
            .ok_or_else(|| it.err(ParseProblem::BadArgument("protocol list"))),
    }
}

fn parse_sr(it: Option<&Item<'_>>) -> Result<Option<SharedRandValue>, ParseError> {
    let Some(it) = it else { return Ok(None) };
    let num_reveals = parse_u32(it, it.arg(0, "NumReveals")?, "NumReveals")?;
    let value = base64_fixed(it.arg(1, "Value")?)
        .ok_or_else(|| it.err(ParseProblem::BadArgument("base64 32-byte value")))?;
    Ok(Some(SharedRandValue { num_reveals, value }))
}

/// Parse a consensus of either flavour.
pub fn parse(text: &str) -> Result<UnverifiedConsensus<'_>, ParseError> {
    Parser::new(text)?.run().map(UnverifiedConsensus)
}

impl<'a> UnverifiedConsensus<'a> {
    /// Parse a consensus of either flavour (dir-spec §3.4.1, §3.9).
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        parse(text)
    }
}

struct Parser<'a> {
    tok: Tokenizer<'a>,
    flavor: Flavor,
}

/// Per-entry "seen" bits for the router-entry multiplicity rules.
const SEEN_S: u16 = 1;
const SEEN_V: u16 = 2;
const SEEN_PR: u16 = 4;
const SEEN_W: u16 = 8;
const SEEN_P: u16 = 16;
const SEEN_M: u16 = 32;

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, ParseError> {
        Ok(Parser {
            tok: Tokenizer::new(text, Limits::LARGE)?,
            flavor: Flavor::Ns,
        })
    }

    fn next(&mut self) -> Result<Option<Item<'a>>, ParseError> {
        self.tok.next().transpose()
    }

    fn run(mut self) -> Result<Consensus<'a>, ParseError> {
        let text = self.tok.doc();
        // ---- preamble
        let first = self
            .next()?
            .ok_or_else(|| ParseError::new(0, "", ParseProblem::Truncated))?;
        if first.keyword != "network-status-version" {
            return Err(first.err(ParseProblem::MissingItem("network-status-version")));
        }
        let mut pre = vec![first];
        let mut pending = loop {
            let it = self.next()?.ok_or_else(|| {
                ParseError::new(self.tok_line(), "", ParseProblem::MissingItem("dir-source"))
            })?;
            match it.keyword {
                "dir-source" => break it,
                "r" | "directory-footer" | "directory-signature" | "contact" | "vote-digest" => {
                    return Err(it.err(ParseProblem::UnexpectedItem))
                }
                k if is_known(PREAMBLE_RULES, k) => pre.push(it),
                _ => {}
            }
        };
        let pre = Section::check(pre, PREAMBLE_RULES, first.line, first.keyword)?;
        let mut c = self.preamble(text, &pre)?;

        // ---- authority sections
        let mut auth_items = vec![pending];
        loop {
            let it = self.next()?.ok_or_else(|| {
                ParseError::new(
                    self.tok_line(),
                    "",
                    ParseProblem::MissingItem("directory-signature"),
                )
            })?;
            match it.keyword {
                "dir-source" | "r" | "directory-footer" | "directory-signature" => {
                    let items = std::mem::take(&mut auth_items);
                    c.authorities.push(Self::authority(items)?);
                    if c.authorities.len() > MAX_AUTHORITIES {
                        return Err(it.err(ParseProblem::TooManyItems {
                            limit: MAX_AUTHORITIES,
                        }));
                    }
                    if it.keyword == "dir-source" {
                        auth_items.push(it);
                    } else {
                        pending = it;
                        break;
                    }
                }
                k if PREAMBLE_RULES.iter().any(|r| r.keyword == k) => {
                    return Err(it.err(ParseProblem::UnexpectedItem))
                }
                k if is_known(AUTH_RULES, k) => auth_items.push(it),
                _ => {}
            }
        }

        // ---- router status entries
        // One exact pre-count (a fast substring scan) avoids regrowing a
        // multi-megabyte vector; bounded by the document size limit.
        let entries = memchr::memmem::find_iter(text.as_bytes(), b"\nr ").count();
        c.relays.reserve_exact(entries);
        let mut last_pr = ProtoCache::new();
        while pending.keyword == "r" {
            let next = self.router(pending, &mut last_pr, &mut c.relays)?;
            pending = next.ok_or_else(|| {
                ParseError::new(
                    self.tok_line(),
                    "",
                    ParseProblem::MissingItem("directory-signature"),
                )
            })?;
        }

        // ---- footer
        if pending.keyword == "directory-footer" {
            let mut items = vec![pending];
            pending = loop {
                let it = self.next()?.ok_or_else(|| {
                    ParseError::new(
                        self.tok_line(),
                        "",
                        ParseProblem::MissingItem("directory-signature"),
                    )
                })?;
                match it.keyword {
                    "directory-signature" => break it,
                    "r" | "dir-source" | "directory-footer" => {
                        return Err(it.err(ParseProblem::UnexpectedItem))
                    }
                    k if is_known(FOOTER_RULES, k) => items.push(it),
                    _ => {}
                }
            };
            let foot = Section::check(items, FOOTER_RULES, pending.line, pending.keyword)?;
            if let Some(bw) = foot.get("bandwidth-weights") {
                c.bandwidth_weights = NetParams::parse(bw)?;
            }
        }

        // ---- signatures
        if pending.keyword != "directory-signature" {
            return Err(pending.err(ParseProblem::UnexpectedItem));
        }
        c.signed_len = pending.start + "directory-signature ".len();
        if text
            .as_bytes()
            .get(pending.start + "directory-signature".len())
            != Some(&b' ')
        {
            return Err(pending.err(ParseProblem::MalformedLine));
        }
        let mut sig_item = Some(pending);
        while let Some(it) = sig_item {
            if it.keyword != "directory-signature" {
                return Err(it.err(ParseProblem::UnexpectedItem));
            }
            if c.signatures.len() >= MAX_SIGNATURES {
                return Err(it.err(ParseProblem::TooManyItems {
                    limit: MAX_SIGNATURES,
                }));
            }
            if let Some(sig) = Self::signature(&it)? {
                c.signatures.push(sig);
            }
            sig_item = self.next()?;
        }
        Ok(c)
    }

    fn tok_line(&self) -> u32 {
        self.tok.line()
    }

    fn preamble(
        &mut self,
        text: &'a str,
        pre: &Section<'a, '_>,
    ) -> Result<Consensus<'a>, ParseError> {
        let v = pre.required("network-status-version")?;
        if v.arg(0, "version")? != "3" {
            return Err(v.err(ParseProblem::Unsupported(
                "network-status-version other than 3",
            )));
        }
        self.flavor = match v.args().nth(1) {
            None | Some("ns") => Flavor::Ns,
            Some("microdesc") => Flavor::Microdesc,
            Some(_) => return Err(v.err(ParseProblem::Unsupported("consensus flavour"))),
        };
        let vs = pre.required("vote-status")?;
        if vs.arg(0, "status")? != "consensus" {
            return Err(vs.err(ParseProblem::Unsupported(
                "votes (only consensuses are parsed)",
            )));
        }
        let consensus_method = match pre.get("consensus-method") {
            Some(it) => Some(parse_u32(it, it.arg(0, "method")?, "method")?),
            None => None,
        };
        let va = pre.required("valid-after")?;
        let fu = pre.required("fresh-until")?;
        let vu = pre.required("valid-until")?;
        let valid_after = parse_time(va, 0)?;
        let fresh_until = parse_time(fu, 0)?;
        let valid_until = parse_time(vu, 0)?;
        if fresh_until < valid_after {
            return Err(fu.err(ParseProblem::BadArgument("fresh-until before valid-after")));
        }
        if valid_until < fresh_until {
            return Err(vu.err(ParseProblem::BadArgument("valid-until before fresh-until")));
        }
        let vd = pre.required("voting-delay")?;
        let voting_delay = (
            parse_u32(vd, vd.arg(0, "VoteSeconds")?, "VoteSeconds")?,
            parse_u32(vd, vd.arg(1, "DistSeconds")?, "DistSeconds")?,
        );
        let params = match pre.get("params") {
            Some(it) => NetParams::parse(it)?,
            None => NetParams::default(),
        };
        Ok(Consensus {
            text,
            signed_len: 0,
            flavor: self.flavor,
            consensus_method,
            valid_after,
            fresh_until,
            valid_until,
            voting_delay,
            client_versions: pre.get("client-versions").map(|i| i.args),
            server_versions: pre.get("server-versions").map(|i| i.args),
            known_flags: pre.required("known-flags")?.args().collect(),
            recommended_client_protocols: parse_protocols(pre.get("recommended-client-protocols"))?,
            recommended_relay_protocols: parse_protocols(pre.get("recommended-relay-protocols"))?,
            required_client_protocols: parse_protocols(pre.get("required-client-protocols"))?,
            required_relay_protocols: parse_protocols(pre.get("required-relay-protocols"))?,
            params,
            shared_rand_previous: parse_sr(pre.get("shared-rand-previous-value"))?,
            shared_rand_current: parse_sr(pre.get("shared-rand-current-value"))?,
            authorities: Vec::new(),
            relays: Vec::new(),
            bandwidth_weights: NetParams::default(),
            signatures: Vec::new(),
        })
    }

    fn authority(items: Vec<Item<'a>>) -> Result<DirSource<'a>, ParseError> {
        let ds = *items.first().ok_or_else(|| {
            ParseError::new(0, "dir-source", ParseProblem::MissingItem("dir-source"))
        })?;
        let nickname = ds.arg(0, "nickname")?;
        let rules = if nickname.ends_with("-legacy") {
            LEGACY_AUTH_RULES
        } else {
            AUTH_RULES
        };
        let sec = Section::check(items, rules, ds.line, ds.keyword)?;
        let identity = RsaIdentity::from_hex(ds.arg(1, "identity")?)
            .map_err(|_| ds.err(ParseProblem::BadArgument("identity (hex)")))?;
        let hostname = ds.arg(2, "address")?;
        let address = ds
            .arg(3, "IP")?
            .parse()
            .map_err(|_| ds.err(ParseProblem::BadArgument("IP")))?;
        let dir_port = parse_u16(&ds, ds.arg(4, "dirport")?, "dirport")?;
        let or_port = parse_u16(&ds, ds.arg(5, "orport")?, "orport")?;
        let vote_digest = match sec.get("vote-digest") {
            Some(it) => Some(
                hex_fixed(it.arg(0, "digest")?)
                    .ok_or_else(|| it.err(ParseProblem::BadArgument("digest (hex)")))?,
            ),
            None => None,
        };
        Ok(DirSource {
            nickname,
            identity,
            hostname,
            address,
            dir_port,
            or_port,
            contact: sec.get("contact").map(|i| i.args),
            vote_digest,
        })
    }

    /// Parse one router entry starting at `r`; return it and the item after it.
    fn router(
        &mut self,
        r: Item<'a>,
        last_pr: &mut ProtoCache<'a>,
        out: &mut Vec<RouterStatus<'a>>,
    ) -> Result<Option<Item<'a>>, ParseError> {
        r.no_object()?;
        let mut args = r.args();
        let mut a = |what| {
            args.next()
                .ok_or_else(|| r.err(ParseProblem::MissingArgument(what)))
        };
        let nickname = a("nickname")?;
        if nickname.is_empty()
            || nickname.len() > 19
            || !nickname.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(r.err(ParseProblem::BadArgument("nickname")));
        }
        let identity = base64_fixed(a("identity")?)
            .map(RsaIdentity)
            .ok_or_else(|| r.err(ParseProblem::BadArgument("identity (base64)")))?;
        let descriptor_digest = match self.flavor {
            Flavor::Ns => Some(
                base64_fixed::<20>(a("digest")?)
                    .ok_or_else(|| r.err(ParseProblem::BadArgument("digest (base64)")))?,
            ),
            Flavor::Microdesc => None,
        };
        let (d, t) = (a("publication date")?, a("publication time")?);
        let published = Timestamp::parse(d, t)
            .ok_or_else(|| r.err(ParseProblem::BadArgument("publication")))?;
        let address = crate::encode::parse_ipv4(a("IP")?)
            .ok_or_else(|| r.err(ParseProblem::BadArgument("IP")))?;
        let or_port = parse_u16(&r, a("ORPort")?, "ORPort")?;
        let dir_port = parse_u16(&r, a("DirPort")?, "DirPort")?;
        let mut rs = RouterStatus {
            nickname,
            identity,
            descriptor_digest,
            published,
            address,
            or_port,
            dir_port,
            ipv6: None,
            flags: RelayFlags::empty(),
            version: None,
            protocols: Protocols::default(),
            bandwidth: None,
            measured: None,
            unmeasured: false,
            policy: None,
            md_digest: None,
        };
        let mut seen = SeenItems::default();
        let once = |seen: &mut SeenItems, bit: u16, it: &Item<'_>| -> Result<(), ParseError> {
            seen.once(bit, it)?;
            it.no_object()
        };
        let next = loop {
            let Some(it) = self.next()? else { break None };
            match it.keyword {
                "r" | "directory-footer" | "directory-signature" => break Some(it),
                "a" => {
                    it.no_object()?;
                    let s = it.arg(0, "address:port")?;
                    if s.starts_with('[') {
                        let sa: SocketAddrV6 = s
                            .parse()
                            .map_err(|_| it.err(ParseProblem::BadArgument("[IPv6]:port")))?;
                        if rs.ipv6.is_none() {
                            rs.ipv6 = Some(sa);
                        }
                    }
                }
                "s" => {
                    once(&mut seen, SEEN_S, &it)?;
                    for f in it.args() {
                        if let Some(fl) = RelayFlags::from_name(f) {
                            rs.flags = rs.flags | fl;
                        }
                    }
                }
                "v" => {
                    once(&mut seen, SEEN_V, &it)?;
                    rs.version = Some(it.args);
                }
                "pr" => {
                    once(&mut seen, SEEN_PR, &it)?;
                    rs.protocols = last_pr.get(&it)?;
                }
                "w" => {
                    once(&mut seen, SEEN_W, &it)?;
                    for kv in it.args() {
                        match kv.split_once('=') {
                            Some(("Bandwidth", v)) => {
                                rs.bandwidth = Some(parse_u32(&it, v, "Bandwidth")?)
                            }
                            Some(("Measured", v)) => {
                                rs.measured = Some(parse_u32(&it, v, "Measured")?)
                            }
                            Some(("Unmeasured", v)) => rs.unmeasured = v == "1",
                            _ => {}
                        }
                    }
                    if rs.bandwidth.is_none() {
                        return Err(it.err(ParseProblem::MissingArgument("Bandwidth=")));
                    }
                }
                "p" => {
                    once(&mut seen, SEEN_P, &it)?;
                    rs.policy = Some(PolicySummary::from_item(&it)?);
                }
                "m" => {
                    once(&mut seen, SEEN_M, &it)?;
                    if self.flavor == Flavor::Microdesc {
                        rs.md_digest =
                            Some(MdDigest::from_base64(it.arg(0, "digest")?).ok_or_else(|| {
                                it.err(ParseProblem::BadArgument("digest (base64)"))
                            })?);
                    }
                }
                "dir-source" | "contact" | "vote-digest" | "bandwidth-weights" => {
                    return Err(it.err(ParseProblem::UnexpectedItem))
                }
                k if PREAMBLE_RULES.iter().any(|r| r.keyword == k) => {
                    return Err(it.err(ParseProblem::UnexpectedItem))
                }
                _ => {}
            }
        };
        if !seen.has(SEEN_S) {
            return Err(r.err(ParseProblem::MissingItem("s")));
        }
        if self.flavor == Flavor::Microdesc && rs.md_digest.is_none() {
            return Err(r.err(ParseProblem::MissingItem("m")));
        }
        // dir-spec §3.4.1: entries are sorted in ascending order by identity
        // (which also rules out duplicates and lets [`Consensus::relay`] search).
        if out.last().is_some_and(|prev| prev.identity >= rs.identity) {
            return Err(r.err(ParseProblem::BadArgument("identity not in ascending order")));
        }
        out.push(rs);
        Ok(next)
    }

    /// One `directory-signature`. Entries with an unknown algorithm are kept
    /// when well-formed and skipped otherwise (dir-spec §3.4.1: they MUST be
    /// ignored, so their form is not ours to judge); `Ok(None)` then.
    fn signature(it: &Item<'a>) -> Result<Option<DirectorySignature>, ParseError> {
        let args: Vec<&str> = it.args().take(4).collect();
        // The algorithm is optional: a first argument of 40 hex digits is the
        // identity of a sha1 signature.
        let (algorithm, rest) = match args.first() {
            Some(a) if RsaIdentity::from_hex(a).is_ok() => (DigestAlgorithm::Sha1, args.get(..)),
            Some(&"sha1") => (DigestAlgorithm::Sha1, args.get(1..)),
            Some(&"sha256") => (DigestAlgorithm::Sha256, args.get(1..)),
            Some(_) => (DigestAlgorithm::Unknown, args.get(1..)),
            None => (DigestAlgorithm::Sha1, None),
        };
        let (id, key) = match rest.unwrap_or(&[]) {
            [id, key, ..] => (*id, *key),
            _ if algorithm == DigestAlgorithm::Unknown => return Ok(None),
            _ => return Err(it.err(ParseProblem::MissingArgument("identity signing-key-digest"))),
        };
        let parsed = (
            RsaIdentity::from_hex(id).ok(),
            RsaIdentity::from_hex(key).ok(),
            it.object_bytes("SIGNATURE"),
        );
        match (algorithm, parsed) {
            (_, (Some(identity), Some(signing_key_digest), Ok(signature))) => {
                Ok(Some(DirectorySignature {
                    algorithm,
                    identity,
                    signing_key_digest,
                    signature,
                }))
            }
            (DigestAlgorithm::Unknown, _) => Ok(None),
            (_, (None, _, _)) => Err(it.err(ParseProblem::BadArgument("identity (hex)"))),
            (_, (_, None, _)) => Err(it.err(ParseProblem::BadArgument("signing-key-digest (hex)"))),
            (_, (_, _, Err(e))) => Err(e),
        }
    }
}

/// The `bandwidth-weights` of a consensus (dir-spec §3.4.1 footer, path-spec §2.2), with the
/// `bwweightscale` they are expressed in.
///
/// Missing or malformed weights take the value 10000 (path-spec §2.2); negative ones are
/// treated as 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)] // the field names are the spec's keywords, documented on the type.
pub struct BandwidthWeights {
    pub wgg: u32,
    pub wgm: u32,
    pub wgd: u32,
    pub wmg: u32,
    pub wmm: u32,
    pub wme: u32,
    pub wmd: u32,
    pub weg: u32,
    pub wem: u32,
    pub wee: u32,
    pub wed: u32,
    pub wgb: u32,
    pub wmb: u32,
    pub web: u32,
    pub wdb: u32,
    pub wbg: u32,
    pub wbm: u32,
    pub wbe: u32,
    pub wbd: u32,
    /// The `bwweightscale` consensus parameter (param-spec; default 10000, at least 1).
    pub scale: u32,
}

impl Default for BandwidthWeights {
    fn default() -> Self {
        Self::uniform(10000)
    }
}

impl BandwidthWeights {
    /// Every weight equal to `scale`: plain bandwidth weighting.
    pub fn uniform(scale: u32) -> Self {
        let w = scale.max(1);
        Self {
            wgg: w,
            wgm: w,
            wgd: w,
            wmg: w,
            wmm: w,
            wme: w,
            wmd: w,
            weg: w,
            wem: w,
            wee: w,
            wed: w,
            wgb: w,
            wmb: w,
            web: w,
            wdb: w,
            wbg: w,
            wbm: w,
            wbe: w,
            wbd: w,
            scale: w,
        }
    }

    /// Build from the `Key=Value` pairs of a `bandwidth-weights` line and the `bwweightscale`
    /// parameter (`None` for the default 10000). Unknown keys are ignored.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, i64)>,
        bwweightscale: Option<i64>,
    ) -> Self {
        let scale = bwweightscale
            .filter(|s| (1..=i64::from(i32::MAX)).contains(s))
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(10000);
        let mut w = Self::uniform(10000);
        w.scale = scale;
        for (k, v) in pairs {
            let v = u32::try_from(v.clamp(0, i64::from(i32::MAX))).unwrap_or(0);
            let slot = match k {
                "Wgg" => &mut w.wgg,
                "Wgm" => &mut w.wgm,
                "Wgd" => &mut w.wgd,
                "Wmg" => &mut w.wmg,
                "Wmm" => &mut w.wmm,
                "Wme" => &mut w.wme,
                "Wmd" => &mut w.wmd,
                "Weg" => &mut w.weg,
                "Wem" => &mut w.wem,
                "Wee" => &mut w.wee,
                "Wed" => &mut w.wed,
                "Wgb" => &mut w.wgb,
                "Wmb" => &mut w.wmb,
                "Web" => &mut w.web,
                "Wdb" => &mut w.wdb,
                "Wbg" => &mut w.wbg,
                "Wbm" => &mut w.wbm,
                "Wbe" => &mut w.wbe,
                "Wbd" => &mut w.wbd,
                _ => continue,
            };
            *slot = v;
        }
        w
    }

    /// Parse the text after `bandwidth-weights` (`Wbd=0 Wbe=0 ...`). Malformed pairs are
    /// skipped, so their weights keep the default (path-spec §2.2).
    pub fn parse_line(line: &str, bwweightscale: Option<i64>) -> Self {
        Self::from_pairs(
            line.split_ascii_whitespace().filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.parse::<i64>().ok()?))
            }),
            bwweightscale,
        )
    }
}

impl Consensus<'_> {
    /// The footer's `bandwidth-weights` in the scale of the `bwweightscale` parameter
    /// (dir-spec §3.4.1, param-spec), ready for weighted relay choice.
    pub fn weights(&self) -> BandwidthWeights {
        BandwidthWeights::from_pairs(
            self.bandwidth_weights
                .entries
                .iter()
                .map(|(k, v)| (*k, i64::from(*v))),
            self.params.get("bwweightscale").map(i64::from),
        )
    }
}
