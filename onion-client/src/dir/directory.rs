//! The owned, verified directory: what the consensus and the descriptors say, parsed once,
//! for every consumer (paths, guards, onion services, refresh timing).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use onion_circuit::cc::CcConfig;
use onion_dir::authcert::{self, AuthCert};
use onion_dir::ccparams::{CcParams, CcPath};
use onion_dir::consensus::{self, Consensus, Flavor, Freshness, NetParams};
use onion_dir::microdesc;
use onion_dir::netview::NetView;
use onion_dir::routerdesc::{self, RouterDesc};
use onion_dir::select::guard::guard_flags;
use onion_dir::{MdDigest, Protocols, RelayFlags, RsaIdentity, Timestamp};

use crate::error::Error;

/// Which descriptors a client uses (dir-spec §5; C tor's `UseMicrodescriptors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirMode {
    /// The microdescriptor consensus and microdescriptors (C tor's default): small, but exit
    /// policies are only port summaries.
    Micro,
    /// The `ns` consensus and server descriptors, with complete exit policies (what a
    /// private network's exits, which accept only 127.0.0.0/8, need).
    Full,
}

impl DirMode {
    /// The consensus flavour of the mode.
    pub fn flavor(self) -> Flavor {
        match self {
            DirMode::Micro => Flavor::Microdesc,
            DirMode::Full => Flavor::Ns,
        }
    }

    /// The most descriptor bytes (response bodies) one bootstrap or refresh takes in: about
    /// three times what the public network's relays need today (~2.2 MB of
    /// microdescriptors, ~10 MB of server descriptors for ~8,000 relays). When the next
    /// response would pass it, fetching stops with [`Error::Budget`]: going on with the
    /// descriptors that arrived would let a directory choose which relays the client uses.
    pub fn descriptor_budget(self) -> usize {
        match self {
            DirMode::Micro => 8 << 20,
            DirMode::Full => 32 << 20,
        }
    }

    /// Descriptors per request: 92 microdescriptors (dir-spec §4.3, the URL length limit of
    /// HTTP proxies), 96 server descriptors (C tor's `MAX_DL_PER_REQUEST`).
    pub fn batch(self) -> usize {
        match self {
            DirMode::Micro => onion_dir::http::MAX_MICRODESCS_PER_REQUEST,
            DirMode::Full => 96,
        }
    }

    /// The largest one descriptor may be: a request for `n` may bring `n` times this. A
    /// server descriptor is at most 20,000 bytes (C tor's `MAX_DESCRIPTOR_UPLOAD_SIZE`); a
    /// microdescriptor is a small part of one.
    pub fn max_descriptor(self) -> usize {
        match self {
            DirMode::Micro => 8 << 10,
            DirMode::Full => 20_000,
        }
    }

    /// The mode's name (`micro` or `full`).
    pub fn name(self) -> &'static str {
        match self {
            DirMode::Micro => "micro",
            DirMode::Full => "full",
        }
    }

    pub(crate) fn descriptors(self) -> DocKind {
        match self {
            DirMode::Micro => DocKind::Microdescs,
            DirMode::Full => DocKind::ServerDescs,
        }
    }
}

/// A kind of directory document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// A consensus of the mode's flavour (dir-spec §3.4.1).
    Consensus,
    /// Authority key certificates (dir-spec §3.1).
    Certificates,
    /// Microdescriptors (dir-spec §3.3).
    Microdescs,
    /// Server descriptors (dir-spec §2.1).
    ServerDescs,
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DocKind::Consensus => "consensus",
            DocKind::Certificates => "authority certificates",
            DocKind::Microdescs => "microdescriptors",
            DocKind::ServerDescs => "server descriptors",
        })
    }
}

/// A verified directory: the consensus's facts, parsed once, and the path-selection view of
/// the relays that have a verified descriptor. Shared as an `Arc` by its consumers.
#[derive(Debug)]
pub struct Directory {
    /// The mode it was fetched in.
    pub mode: DirMode,
    /// Relays usable for paths: in the consensus and with a verified descriptor.
    pub view: NetView,
    /// `valid-after` (dir-spec §3.4.1).
    pub valid_after: Timestamp,
    /// `fresh-until`.
    pub fresh_until: Timestamp,
    /// `valid-until`.
    pub valid_until: Timestamp,
    /// The consensus `params` (param-spec), sorted by name.
    pub params: Vec<(String, i32)>,
    /// `shared-rand-current-value` (dir-spec §3.4.1; rend-spec-v3 §2.2.3 hash ring).
    pub shared_rand_current: Option<[u8; 32]>,
    /// `shared-rand-previous-value`.
    pub shared_rand_previous: Option<[u8; 32]>,
    /// Relays the consensus lists as guards (guard-spec §4.10 IS_LISTED: its guard flags
    /// and not MiddleOnly), whether or not their descriptor is held (guard-spec §4.12), sorted.
    pub listed_guards: Vec<RsaIdentity>,
    /// Relays listed in the consensus.
    pub relays_listed: usize,
    /// Each listed relay's `pr` line (dir-spec §3.4.1), as an index into `protocol_sets`,
    /// sorted by identity: what a client checks before asking a relay for a feature (such
    /// as congestion control, proposal 324: `FlowCtrl=2`, `Relay=4`).
    relay_protocols: Vec<(RsaIdentity, u32)>,
    /// The distinct `pr` lines (relays share a few dozen).
    protocol_sets: Vec<Protocols>,
    /// Configured authorities whose signature verified.
    pub signatures_valid: usize,
    /// Signatures needed (more than half of the configured authorities).
    pub signatures_needed: usize,
    /// Descriptors held that the consensus names and that verified.
    pub descriptors: usize,
    /// Whether the documents came from the embedder's store rather than the network.
    pub from_cache: bool,
    pub(crate) consensus_text: String,
    pub(crate) descriptors_text: String,
    pub(crate) certificates_text: String,
}

impl Directory {
    /// The consensus text: the base a refresh offers for a diff (dir-spec §4.5.2).
    pub fn consensus_text(&self) -> &str {
        &self.consensus_text
    }

    /// The held descriptors' text, as fetched.
    pub fn descriptors_text(&self) -> &str {
        &self.descriptors_text
    }

    /// The authority key certificates the consensus verified with (a refresh starts from
    /// them, verifying them again).
    pub fn certificates_text(&self) -> &str {
        &self.certificates_text
    }

    /// A directory from a consensus the caller has verified itself, and the view built from
    /// it: for simulations and tests with synthetic documents. The directory machine never
    /// calls it on a consensus that did not verify.
    pub fn from_consensus(
        cons: &Consensus<'_>,
        view: NetView,
        mode: DirMode,
        descriptors: usize,
        descriptors_text: String,
    ) -> Directory {
        let mut d = Directory::facts(cons, view, mode, descriptors);
        d.consensus_text = cons.text.to_owned();
        d.descriptors_text = descriptors_text;
        d
    }

    /// What the consensus says, without its text.
    fn facts(cons: &Consensus<'_>, view: NetView, mode: DirMode, descriptors: usize) -> Directory {
        let mut params: Vec<(String, i32)> = cons
            .params
            .entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        params.sort();
        params.dedup_by(|a, b| a.0 == b.0);
        let mut listed_guards: Vec<RsaIdentity> = cons
            .relays
            .iter()
            .filter(|r| {
                r.flags.contains(guard_flags()) && !r.flags.contains(RelayFlags::MIDDLE_ONLY)
            })
            .map(|r| r.identity)
            .collect();
        listed_guards.sort();
        listed_guards.dedup();
        let mut protocol_sets: Vec<Protocols> = Vec::new();
        let mut index: HashMap<Protocols, u32> = HashMap::new();
        let mut relay_protocols: Vec<(RsaIdentity, u32)> = cons
            .relays
            .iter()
            .map(|r| {
                let n = *index.entry(r.protocols).or_insert_with(|| {
                    protocol_sets.push(r.protocols);
                    u32::try_from(protocol_sets.len() - 1).unwrap_or(u32::MAX)
                });
                (r.identity, n)
            })
            .collect();
        relay_protocols.sort();
        relay_protocols.dedup_by(|a, b| a.0 == b.0);
        Directory {
            mode,
            view,
            valid_after: cons.valid_after,
            fresh_until: cons.fresh_until,
            valid_until: cons.valid_until,
            params,
            shared_rand_current: cons.shared_rand_current.map(|s| s.value),
            shared_rand_previous: cons.shared_rand_previous.map(|s| s.value),
            listed_guards,
            relays_listed: cons.relays.len(),
            relay_protocols,
            protocol_sets,
            signatures_valid: 0,
            signatures_needed: 0,
            descriptors,
            from_cache: false,
            consensus_text: String::new(),
            descriptors_text: String::new(),
            certificates_text: String::new(),
        }
    }

    /// A consensus parameter (param-spec), if the consensus sets it.
    pub fn param(&self, name: &str) -> Option<i32> {
        self.params
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .and_then(|i| self.params.get(i))
            .map(|(_, v)| *v)
    }

    /// The parameters as (name, value) pairs, as guard and vanguard parameter readers take them.
    pub fn param_entries(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.params.iter().map(|(k, v)| (k.as_str(), i64::from(*v)))
    }

    /// The consensus parameters as onion-dir's parameter readers take them.
    pub fn net_params(&self) -> NetParams<'_> {
        NetParams {
            entries: self.params.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        }
    }

    /// Congestion control (proposal 324 §6.5) for circuits on paths of kind `path`, from the
    /// consensus's `cc_*` parameters (the Vegas values of that path kind); `None` when the
    /// consensus runs fixed windows (`cc_alg=0`). The one mapping from consensus values to
    /// the circuit's configuration, for exit, onion-service and CLI circuits alike.
    pub fn congestion_control(&self, path: CcPath) -> Option<CcConfig> {
        cc_config(&CcParams::from_net_params(&self.net_params()), path)
    }

    /// The subprotocols the consensus lists for relay `id` (its `pr` line).
    pub fn protocols(&self, id: &RsaIdentity) -> Option<&Protocols> {
        let i = self
            .relay_protocols
            .binary_search_by(|(r, _)| r.cmp(id))
            .ok()?;
        let (_, set) = self.relay_protocols.get(i)?;
        self.protocol_sets.get(usize::try_from(*set).ok()?)
    }

    /// The listed relays whose subprotocols satisfy `pred`.
    pub fn relays_supporting<'a>(
        &'a self,
        pred: impl Fn(&Protocols) -> bool + 'a,
    ) -> impl Iterator<Item = RsaIdentity> + 'a {
        let ok: Vec<bool> = self.protocol_sets.iter().map(pred).collect();
        self.relay_protocols
            .iter()
            .filter(move |(_, set)| ok.get(*set as usize).copied().unwrap_or(false))
            .map(|(id, _)| *id)
    }

    /// Whether `id` is a listed guard (see [`Directory::listed_guards`]).
    pub fn is_listed_guard(&self, id: &RsaIdentity) -> bool {
        self.listed_guards.binary_search(id).is_ok()
    }

    /// The voting interval (`fresh-until − valid-after`), in seconds.
    pub fn voting_interval(&self) -> u64 {
        self.fresh_until.0.saturating_sub(self.valid_after.0)
    }

    /// Liveness at wall-clock time `now` (dir-spec §5.1).
    pub fn freshness(&self, now: Timestamp) -> Freshness {
        if now < self.valid_after {
            Freshness::NotYetValid
        } else if now <= self.valid_until {
            Freshness::Live
        } else if now <= self.valid_until.add_secs(consensus::REASONABLY_LIVE_SECS) {
            Freshness::ReasonablyLive
        } else {
            Freshness::Expired
        }
    }

    /// When to fetch the next consensus (dir-spec §5.1): the window `[start, end)` the time
    /// is drawn from, as [`Consensus::refresh_window`] computes it.
    pub fn refresh_window(&self) -> (Timestamp, Timestamp) {
        onion_dir::consensus::refresh_window(self.valid_after, self.fresh_until, self.valid_until)
    }

    /// How long from `wall` until the next consensus fetch: a time drawn uniformly from
    /// [`Directory::refresh_window`] (dir-spec §5.1), zero if it has passed.
    pub fn refresh_delay(&self, wall: Timestamp, rng: &mut impl rand_core::RngCore) -> Duration {
        let (start, end) = self.refresh_window();
        let span = end.0.saturating_sub(start.0);
        let at = start.0 + rng.next_u64() % span.max(1);
        Duration::from_secs(at.saturating_sub(wall.0))
    }
}

/// Authority certificates that verified, with their text (for the store).
#[derive(Debug, Clone, Default)]
pub(crate) struct CertSet {
    pub certs: Vec<AuthCert>,
    pub texts: Vec<String>,
}

/// The most certificates kept: a few per authority (a new signing key overlaps the old one).
const MAX_CERTS: usize = 64;

impl CertSet {
    /// Add the certificates of `text` that verify at `now` and belong to a configured
    /// authority (`v3`), after dropping those no longer valid; one that does not parse makes
    /// the whole text fail. The set stays bounded whatever a directory sends.
    pub fn add(&mut self, text: &str, v3: &[RsaIdentity], now: Timestamp) -> Result<usize, Error> {
        let parsed = authcert::parse_many(text).map_err(|error| Error::Malformed {
            doc: DocKind::Certificates,
            error,
        })?;
        let (certs, texts): (Vec<AuthCert>, Vec<String>) = std::mem::take(&mut self.certs)
            .into_iter()
            .zip(std::mem::take(&mut self.texts))
            .filter(|(c, _)| c.is_valid_at(now))
            .unzip();
        self.certs = certs;
        self.texts = texts;
        let mut added = 0;
        for u in parsed {
            let t = u.text.to_owned();
            let Ok(c) = u.verify(now) else { continue };
            if !v3.contains(&c.fingerprint) || self.certs.contains(&c) {
                continue;
            }
            if self.certs.len() >= MAX_CERTS {
                break;
            }
            self.certs.push(c);
            self.texts.push(t);
            added += 1;
        }
        Ok(added)
    }

    /// All the certificates' text, for the store.
    pub fn text(&self) -> String {
        self.texts.concat()
    }

    /// The earliest expiry among them (when the stored copy stops being useful whole).
    pub fn expires(&self) -> Option<Timestamp> {
        self.certs.iter().map(|c| c.expires).min()
    }
}

/// A consensus that verified, with what the descriptor step needs.
pub(crate) struct Checked {
    /// Descriptor digests the consensus names (microdescriptor or server descriptor), in
    /// document order.
    pub wanted: Wanted,
    pub valid_after: Timestamp,
    pub signatures: (usize, usize),
}

/// Which descriptors a consensus names.
pub(crate) enum Wanted {
    Micro(Vec<MdDigest>),
    Full(Vec<[u8; 20]>),
}

/// The outcome of checking a consensus's signatures before verification: either the
/// certificates to fetch first, or the verdict.
pub(crate) enum SigCheck {
    /// Signatures of these authorities (v3 identities) lack a certificate.
    NeedCerts(Vec<RsaIdentity>),
    /// Verified.
    Verified(Checked),
}

/// Parse `text` and verify it with `certs` at `now` (dir-spec §3.4.1: signatures of more
/// than half of the configured v3 authorities `v3`; the mode's flavour; not past
/// `valid-until`). Certificates are asked for when a quorum could only be reached with them.
pub(crate) fn check_consensus(
    text: &str,
    certs: &CertSet,
    v3: &[RsaIdentity],
    mode: DirMode,
    now: Timestamp,
) -> Result<SigCheck, Error> {
    let unverified = consensus::parse(text).map_err(|error| Error::Malformed {
        doc: DocKind::Consensus,
        error,
    })?;
    let unverified_reason = |reason: String| Error::Unverified {
        doc: DocKind::Consensus,
        reason,
    };
    let peek = unverified.peek();
    if peek.flavor != mode.flavor() {
        return Err(unverified_reason(format!(
            "flavour {}, expected {}",
            peek.flavor.name(),
            mode.flavor().name()
        )));
    }
    let signers: HashSet<RsaIdentity> = peek
        .signatures
        .iter()
        .map(|s| s.identity)
        .filter(|i| v3.contains(i))
        .collect();
    if signers.is_empty() {
        return Err(unverified_reason(
            "signed by none of the configured authorities".into(),
        ));
    }
    let report = unverified.check_signatures(v3, &certs.certs, now);
    if !report.quorum() {
        let mut missing: Vec<RsaIdentity> = report
            .missing_certs
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !report.verified.contains(id))
            .collect();
        missing.sort();
        missing.dedup();
        if report.verified.len() + missing.len() >= report.needed && !missing.is_empty() {
            return Ok(SigCheck::NeedCerts(missing));
        }
    }
    let signatures = (report.verified.len(), report.needed);
    let cons = unverified
        .verify(v3, &certs.certs, now)
        .map_err(|e| unverified_reason(e.to_string()))?;
    if now > cons.valid_until {
        return Err(unverified_reason(format!(
            "no longer valid (valid-until {})",
            cons.valid_until
        )));
    }
    let wanted = match mode {
        DirMode::Micro => Wanted::Micro(cons.relays.iter().filter_map(|r| r.md_digest).collect()),
        DirMode::Full => Wanted::Full(
            cons.relays
                .iter()
                .filter_map(|r| r.descriptor_digest)
                .collect(),
        ),
    };
    Ok(SigCheck::Verified(Checked {
        wanted,
        valid_after: cons.valid_after,
        signatures,
    }))
}

/// Build the directory from a consensus that [`check_consensus`] verified and the
/// descriptors `descs`, verifying the consensus once more (it is text held between the
/// two steps) and each descriptor: a microdescriptor counts only if a verified `m` line
/// names its SHA-256 (dir-spec §3.3), a server descriptor only if its signatures verify.
pub(crate) fn build(
    consensus_text: String,
    descriptors_text: String,
    certs: &CertSet,
    v3: &[RsaIdentity],
    mode: DirMode,
    now: Timestamp,
    from_cache: bool,
) -> Result<Directory, Error> {
    let unverified = consensus::parse(&consensus_text).map_err(|error| Error::Malformed {
        doc: DocKind::Consensus,
        error,
    })?;
    let report = unverified.check_signatures(v3, &certs.certs, now);
    let cons: Consensus<'_> =
        unverified
            .verify(v3, &certs.certs, now)
            .map_err(|e| Error::Unverified {
                doc: DocKind::Consensus,
                reason: e.to_string(),
            })?;
    if cons.flavor != mode.flavor() || now > cons.valid_until {
        return Err(Error::Unverified {
            doc: DocKind::Consensus,
            reason: "wrong flavour or no longer valid".into(),
        });
    }
    let doc = mode.descriptors();
    let malformed = |error| Error::Malformed { doc, error };
    let (view, descriptors) = match mode {
        DirMode::Micro => {
            let mds = microdesc::parse_many(&descriptors_text).map_err(malformed)?;
            let wanted: HashSet<MdDigest> =
                cons.relays.iter().filter_map(|r| r.md_digest).collect();
            let n = mds.iter().filter(|m| wanted.contains(&m.digest)).count();
            (NetView::from_microdescs(&cons, &mds), n)
        }
        DirMode::Full => {
            let descs: Vec<RouterDesc<'_>> = routerdesc::parse_many(&descriptors_text)
                .map_err(malformed)?
                .into_iter()
                .filter_map(|d| d.verify(now).ok())
                .collect();
            let wanted: HashSet<[u8; 20]> = cons
                .relays
                .iter()
                .filter_map(|r| r.descriptor_digest)
                .collect();
            let n = descs.iter().filter(|d| wanted.contains(&d.digest)).count();
            (NetView::from_router_descs(&cons, &descs), n)
        }
    };
    let view = view.map_err(|e| Error::Unverified {
        doc,
        reason: format!("network view: {e}"),
    })?;
    if view.is_empty() {
        return Err(Error::Unverified {
            doc,
            reason: "no relay of the consensus has a valid descriptor".into(),
        });
    }
    let mut dir = Directory::facts(&cons, view, mode, descriptors);
    drop(cons);
    dir.signatures_valid = report.verified.len();
    dir.signatures_needed = report.needed;
    dir.from_cache = from_cache;
    dir.consensus_text = consensus_text;
    dir.descriptors_text = descriptors_text;
    dir.certificates_text = certs.text();
    Ok(dir)
}

/// Of the descriptors held in `held` (text of a previous directory), those the new
/// consensus still names (`wanted`), as one text, how many, and the digests left to fetch.
/// A digest named twice counts once.
pub(crate) fn split_held(held: &str, wanted: &Wanted) -> (String, usize, Wanted) {
    match wanted {
        Wanted::Micro(w) => {
            let mds = microdesc::parse_many(held).unwrap_or_default();
            let (t, n, m) = split(mds.iter().map(|m| (m.digest, m.text)), w);
            (t, n, Wanted::Micro(m))
        }
        Wanted::Full(w) => {
            let ds = routerdesc::parse_many(held).unwrap_or_default();
            let (t, n, m) = split(ds.iter().map(|d| (d.peek().digest, d.peek().text)), w);
            (t, n, Wanted::Full(m))
        }
    }
}

fn split<'h, D: Copy + Eq + std::hash::Hash>(
    held: impl Iterator<Item = (D, &'h str)>,
    wanted: &[D],
) -> (String, usize, Vec<D>) {
    let mut held: HashMap<D, &str> = held.collect();
    let mut seen = HashSet::new();
    let mut kept = String::new();
    let mut n = 0;
    let mut missing = Vec::new();
    for d in wanted.iter().filter(|d| seen.insert(**d)) {
        match held.remove(d) {
            Some(text) => {
                n += 1;
                kept.push_str(text);
                if !text.ends_with('\n') {
                    kept.push('\n');
                }
            }
            None => missing.push(*d),
        }
    }
    (kept, n, missing)
}

/// Congestion control (proposal 324 §6.5) for circuits on paths of kind `path` from the
/// consensus's `cc_*` values `p` (the Vegas values of that path kind); `None` when the
/// consensus runs fixed windows (`cc_alg=0`). The one mapping from consensus values to the
/// circuit's configuration: client, onion-service and relay circuits all use it.
pub fn cc_config(p: &CcParams, path: CcPath) -> Option<CcConfig> {
    if !p.enabled() {
        return None;
    }
    let v = p.vegas(path);
    Some(CcConfig {
        sendme_inc: p.sendme_inc,
        cwnd_init: p.cwnd_init,
        cwnd_inc_pct_ss: p.cwnd_inc_pct_ss,
        cwnd_inc: p.cwnd_inc,
        cwnd_inc_rate: p.cwnd_inc_rate,
        cwnd_min: p.cwnd_min,
        cwnd_max: p.cwnd_max,
        rtt_reset_pct: p.rtt_reset_pct,
        ewma_cwnd_pct: p.ewma_cwnd_pct,
        ewma_max: p.ewma_max,
        ewma_ss: p.ewma_ss,
        alpha: v.alpha,
        beta: v.beta,
        gamma: v.gamma,
        delta: v.delta,
        ss_cwnd_cap: v.ss_cwnd_cap,
        ss_cwnd_max: v.ss_cwnd_max,
        cwnd_full_gap: v.cwnd_full_gap,
        cwnd_full_minpct: v.cwnd_full_minpct,
        cwnd_full_per_cwnd: v.cwnd_full_per_cwnd,
    })
}
