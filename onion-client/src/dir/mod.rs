//! The directory machine: bootstrap from the directory authorities or fallback caches, then
//! refresh at dir-spec §5.1 times from directory guards, into an owned verified
//! [`Directory`] — sans-IO, in the shape of every machine of onion.
//!
//! # What it does (dir-spec §5 "Client operation")
//!
//! 1. The consensus of the mode's flavour (`/tor/status-vote/current/consensus[-microdesc]/
//!    F1+F2+...`, §5.1: the suffix names the configured authorities). A refresh offers the
//!    consensus it holds (`X-Or-Diff-From-Consensus`, §4.5.2) and applies a diff
//!    (§4.5.1, [`onion_dir::consdiff`]); a diff that does not apply is followed by a request
//!    for the whole document.
//! 2. The key certificates it lacks of the authorities that signed it (`/tor/keys/fp/A+B`,
//!    §4.3). Each certificate must verify; the consensus needs valid signatures of more than
//!    half of the configured v3 authorities (§3.4.1), its flavour, and must not be past
//!    `valid-until`.
//! 3. Only once the consensus verified, the descriptors it names that are not held, in
//!    batches (92 microdescriptors, §4.3; 96 server descriptors), up to
//!    [`DirConfig::max_parallel`] requests at once. What one
//!    bootstrap or refresh takes in descriptor bodies is capped by
//!    [`DirMode::descriptor_budget`].
//! 4. The directory is built once ([`Directory`], shared as an `Arc`), handed over with the
//!    documents to persist, and the next refresh is set at a random time of the consensus's
//!    refresh window (§5.1).
//!
//! A failed request (transport failure, HTTP error, timeout, a document that does not
//! verify) is retried from another source, up to [`DirConfig::max_attempts`] per document;
//! then [`DirEvent::Failed`] says why, and the machine tries again after
//! [`DirConfig::retry_delay`], keeping the directory it has.
//!
//! # Driving it
//!
//! Inputs: [`DirMachine::handle_response`], [`DirMachine::handle_timeout`]. Outputs:
//! [`DirMachine::poll_request`] (what to fetch, from which [`Source`]),
//! [`DirMachine::poll_event`], [`DirMachine::poll_timeout`]. After every input, drain
//! requests and events until `None`, then sleep until the timeout. The machine knows no
//! circuit: the embedder carries each request over a BEGIN_DIR stream to the source it names
//! (tor-spec §6.2.1), decodes the HTTP response ([`decode_response`]) and hands back the body.
//!
//! Persistence without files: [`DirEvent::Persist`] hands over documents with how long they
//! are worth keeping; the embedder gives them back to [`DirMachine::new`] ([`Cached`]), where
//! they are verified again like any document from the network.

pub mod authorities;
mod directory;
mod sources;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use onion_circuit::Instant;
use onion_dir::consdiff;
use onion_dir::http::{DirRequest, Encoding, ResponseReader};
use onion_dir::{RsaIdentity, Timestamp};
use rand_core::CryptoRngCore;

use crate::error::Error;
use crate::text::escape;

pub use directory::{cc_config, DirMode, Directory, DocKind};
pub use sources::{
    c_tor_fallbacks, parse_fallbacks, Authority, Fallback, FallbackError, C_TOR_FALLBACKS,
    MAX_FALLBACKS,
};

use directory::{CertSet, Checked, SigCheck, Wanted};

/// The largest consensus body accepted (the public `ns` consensus is about 3 MB).
pub const MAX_CONSENSUS: usize = 16 << 20;
/// The largest certificate response accepted (one certificate is about 2 KB).
pub const MAX_CERTS: usize = 1 << 20;
/// Bytes of each authority fingerprint in the consensus URL suffix (C tor sends 3).
const FP_PREFIX_BYTES: usize = 3;
/// The most events held for the embedder; when full, the oldest is dropped (the embedder
/// drains them after every call, so this is reached only if it stops doing so).
pub const MAX_EVENTS: usize = 256;

/// How the machine works: its sources, its mode and its limits.
#[derive(Debug, Clone)]
pub struct DirConfig {
    /// The directory authorities: their v3 identities decide which signatures count.
    pub authorities: Vec<Authority>,
    /// Fallback directory caches asked at bootstrap along with the authorities (empty on a
    /// private network; [`c_tor_fallbacks`] for the public one).
    pub fallbacks: Vec<Fallback>,
    /// Microdescriptors or server descriptors.
    pub mode: DirMode,
    /// Attempts per document (the consensus with its certificates, or one descriptor
    /// batch) before [`DirEvent::Failed`].
    pub max_attempts: u32,
    /// How long a request may take.
    pub request_timeout: Duration,
    /// The wait after a failed bootstrap or refresh, and the shortest wait before a refresh
    /// (so that a directory whose refresh time has passed is not asked again in a loop).
    pub retry_delay: Duration,
    /// Descriptor requests in flight at once.
    pub max_parallel: usize,
    /// The most descriptor bytes one bootstrap or refresh takes in
    /// ([`DirMode::descriptor_budget`] unless changed).
    pub descriptor_budget: usize,
    /// Refresh from directory guards ([`Source::DirGuard`]) before the authorities and
    /// fallbacks (guard-spec §4.6, dir-spec §5: a client with a consensus asks caches).
    pub refresh_from_guards: bool,
}

impl DirConfig {
    /// A configuration with C tor's usual limits: 6 attempts, 60 s per request, 10 s between
    /// rounds, 4 descriptor requests at once, refresh from directory guards.
    pub fn new(authorities: Vec<Authority>, fallbacks: Vec<Fallback>, mode: DirMode) -> Self {
        DirConfig {
            authorities,
            fallbacks,
            mode,
            max_attempts: 6,
            request_timeout: Duration::from_secs(60),
            retry_delay: Duration::from_secs(10),
            max_parallel: 4,
            descriptor_budget: mode.descriptor_budget(),
            refresh_from_guards: true,
        }
    }
}

/// Documents the embedder kept from an earlier run ([`DirEvent::Persist`]); each is verified
/// again before use.
#[derive(Debug, Clone, Default)]
pub struct Cached {
    /// The consensus of the configured mode's flavour.
    pub consensus: Option<String>,
    /// Authority key certificates.
    pub certificates: Option<String>,
    /// Descriptors of the mode's kind.
    pub descriptors: Option<String>,
}

/// Names one request of the machine, to match its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Whom to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The configured authority of this index (over a one-hop circuit to its ORPort).
    Authority(usize),
    /// The configured fallback directory of this index.
    Fallback(usize),
    /// One of the embedder's directory guards (guard-spec §4.6 `GuardUsage::Dir`); after a
    /// failure the embedder should choose another.
    DirGuard,
}

/// One HTTP GET for the embedder to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its name, for [`DirMachine::handle_response`].
    pub id: RequestId,
    /// Whom to ask.
    pub source: Source,
    /// What it fetches.
    pub kind: DocKind,
    /// The HTTP path.
    pub path: String,
    /// The `X-Or-Diff-From-Consensus` value, if a diff is offered (dir-spec §4.5.2).
    pub diff_from: Option<String>,
    /// The largest body (decoded) the embedder may hand back; it should stop reading past it
    /// and report [`Failure::TooLarge`].
    pub max_body: usize,
}

impl Request {
    /// The request's bytes: `GET`, `Accept-Encoding` (deflate, gzip, identity: dir-spec
    /// §6.1), the diff offer if any.
    pub fn to_http(&self) -> Vec<u8> {
        let mut s = format!(
            "GET {} HTTP/1.0\r\nAccept-Encoding: deflate, gzip, identity\r\n",
            self.path
        );
        if let Some(d) = &self.diff_from {
            s.push_str("X-Or-Diff-From-Consensus: ");
            s.push_str(d);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// Why a request failed, as the embedder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection, circuit or stream failed or could not be made.
    Network(String),
    /// The embedder's own deadline passed.
    Timeout,
    /// The directory answered with a status other than 200.
    Http {
        /// The status code.
        status: u16,
        /// The reason phrase as received.
        reason: String,
    },
    /// The body passed the request's `max_body`.
    TooLarge,
}

/// Decode a directory's whole HTTP response (dir-spec §6: HTTP/1.0, the body ends with the
/// stream; deflate, gzip or identity) into the body [`DirMachine::handle_response`] takes,
/// or the failure to report.
pub fn decode_response(raw: &[u8], max_body: usize) -> Result<Vec<u8>, Failure> {
    let mut reader = ResponseReader::new(max_body);
    let too_large = |e: &onion_dir::HttpError| matches!(e, onion_dir::HttpError::TooLarge { .. });
    reader.handle_bytes(raw).map_err(|e| match too_large(&e) {
        true => Failure::TooLarge,
        false => Failure::Network(e.to_string()),
    })?;
    if let Ok(Some(head)) = reader.head() {
        if head.status != 200 {
            return Err(Failure::Http {
                status: head.status,
                reason: head.reason,
            });
        }
    }
    match reader.finish() {
        Ok(r) => Ok(r.body.into_bytes()),
        Err(e) if too_large(&e) => Err(Failure::TooLarge),
        Err(e) => Err(Failure::Network(e.to_string())),
    }
}

/// The encodings a request advertises (dir-spec §6.1), as [`Request::to_http`] writes them.
pub const ACCEPTED: [Encoding; 3] = [Encoding::Deflate, Encoding::Gzip, Encoding::Identity];

/// What the machine tells the embedder.
#[derive(Debug, Clone)]
pub enum DirEvent {
    /// Bootstrap or refresh progress, for a progress line.
    Progress {
        /// 0 to 100.
        percent: u8,
        /// What happened.
        what: String,
    },
    /// A new verified directory; consumers share it.
    Directory(Arc<Directory>),
    /// A document to store, worth keeping until `keep_until` (give it back in [`Cached`]).
    Persist {
        /// Which document.
        kind: DocKind,
        /// Its text.
        text: String,
        /// When it stops being useful.
        keep_until: Timestamp,
    },
    /// A bootstrap or refresh gave up; the machine tries again after the retry delay and
    /// keeps the directory it has.
    Failed(Error),
}

/// A request handed out and not yet answered.
#[derive(Debug, Clone)]
struct Pending {
    id: RequestId,
    source: Source,
    deadline: Instant,
    max_body: usize,
    diff_offered: bool,
    /// The descriptor batch it fetches, and the bytes of budget reserved for it.
    batch: Option<(usize, usize)>,
}

/// Fetching the consensus (and its certificates).
#[derive(Debug)]
struct ConsState {
    attempts: u32,
    refresh: bool,
    offer_diff: bool,
    guard_attempts: u32,
    /// A consensus that lacks certificates while they are fetched.
    awaiting_certs: Option<String>,
    failed: Vec<Source>,
}

/// One batch of descriptors.
#[derive(Debug)]
struct Batch {
    path: String,
    len: usize,
    attempts: u32,
    done: bool,
}

/// Fetching the descriptors of a verified consensus.
#[derive(Debug)]
struct DescState {
    consensus: String,
    from_cache: bool,
    certs_fetched: bool,
    source: Source,
    refresh: bool,
    batches: Vec<Batch>,
    queue: VecDeque<usize>,
    text: String,
    budget: usize,
    left: usize,
    done: usize,
    failed: Vec<Source>,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the next refresh (with a directory) or retry (without).
    Idle,
    Consensus(ConsState),
    Descriptors(DescState),
}

/// The sans-IO directory machine (see the [module documentation](self)).
#[derive(Debug)]
pub struct DirMachine {
    cfg: DirConfig,
    v3: Vec<RsaIdentity>,
    certs: CertSet,
    current: Option<Arc<Directory>>,
    /// Descriptors from the store, reused at bootstrap when a fresh consensus names them.
    held: String,
    phase: Phase,
    wake: Option<Instant>,
    now: Instant,
    next_id: u64,
    requests: VecDeque<Request>,
    pending: Vec<Pending>,
    events: VecDeque<DirEvent>,
    certs_fetched: bool,
}

impl DirMachine {
    /// A machine for `cfg`, starting from the documents in `cached` (verified again at
    /// `wall`: a live consensus with its certificates and descriptors gives a directory
    /// at once) or from the network.
    pub fn new(
        cfg: DirConfig,
        cached: Cached,
        now: Instant,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        let v3: Vec<RsaIdentity> = cfg.authorities.iter().map(|a| a.v3ident).collect();
        if v3.is_empty() {
            return Err(Error::Misuse("no directory authority configured"));
        }
        if cfg.max_attempts == 0 || cfg.max_parallel == 0 {
            return Err(Error::Misuse(
                "max_attempts and max_parallel must be positive",
            ));
        }
        let mut m = DirMachine {
            cfg,
            v3,
            certs: CertSet::default(),
            current: None,
            held: cached.descriptors.unwrap_or_default(),
            phase: Phase::Idle,
            wake: None,
            now,
            next_id: 0,
            requests: VecDeque::new(),
            pending: Vec::new(),
            events: VecDeque::new(),
            certs_fetched: false,
        };
        if let Some(text) = &cached.certificates {
            let _ = m.certs.add(text, &m.v3, wall);
        }
        m.progress(5, format!("directory mode: {}", m.cfg.mode.name()));
        let verified = cached.consensus.and_then(|text| {
            match directory::check_consensus(&text, &m.certs, &m.v3, m.cfg.mode, wall) {
                Ok(SigCheck::Verified(c)) => Some((text, c)),
                _ => None,
            }
        });
        match verified {
            Some((text, checked)) => {
                m.progress(
                    10,
                    "using cached directory documents (verified again)".into(),
                );
                let source = m.pick(&[], rng);
                m.start_descriptors(text, checked, source, false, true, wall, rng);
            }
            None => m.start_consensus(false, rng),
        }
        Ok(m)
    }

    /// A machine that holds `current` (a directory of an earlier machine, its certificates
    /// verified again at `wall`) and starts refreshing it now: from directory guards first if
    /// the configuration says so, offering `current`'s consensus for a diff and reusing its
    /// descriptors. For embedders that run one machine per refresh.
    pub fn refreshing(
        cfg: DirConfig,
        current: Arc<Directory>,
        now: Instant,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        if current.mode != cfg.mode {
            return Err(Error::Misuse("the directory was fetched in another mode"));
        }
        let certs = current.certificates_text().to_owned();
        let mut m = DirMachine::new(cfg, Cached::default(), now, wall, rng)?;
        // Forget the bootstrap request `new` queued: this machine refreshes instead.
        m.requests.clear();
        m.pending.clear();
        while m.events.pop_front().is_some() {}
        let _ = m.certs.add(&certs, &m.v3, wall);
        m.current = Some(current);
        m.start_consensus(true, rng);
        Ok(m)
    }

    /// The directory in use, if any.
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.current.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &DirConfig {
        &self.cfg
    }

    /// The next request to carry, if any.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DirEvent> {
        self.events.pop_front()
    }

    /// When [`DirMachine::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self.pending.iter().map(|p| p.deadline);
        let wake = match self.phase {
            Phase::Idle => self.wake,
            _ => None,
        };
        deadlines.chain(wake).min()
    }

    /// Time passed: requests past their deadline fail, and a refresh or retry that is due
    /// starts.
    pub fn handle_timeout(&mut self, now: Instant, wall: Timestamp, rng: &mut impl CryptoRngCore) {
        self.now = self.now.max(now);
        let expired: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|p| p.deadline <= self.now)
            .map(|p| p.id)
            .collect();
        for id in expired {
            self.handle_response(id, now, wall, Err(Failure::Timeout), rng);
        }
        if matches!(self.phase, Phase::Idle) && self.wake.is_some_and(|w| w <= self.now) {
            self.wake = None;
            let refresh = self.current.is_some();
            self.start_consensus(refresh, rng);
        }
    }

    /// The answer to request `id`: its decoded body, or why there is none. An answer to a
    /// request that is no longer pending (one that timed out) is ignored.
    pub fn handle_response(
        &mut self,
        id: RequestId,
        now: Instant,
        wall: Timestamp,
        result: Result<Vec<u8>, Failure>,
        rng: &mut impl CryptoRngCore,
    ) {
        self.now = self.now.max(now);
        let Some(i) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let p = self.pending.swap_remove(i);
        let kind_of_phase = match &self.phase {
            Phase::Consensus(c) if c.awaiting_certs.is_some() => DocKind::Certificates,
            Phase::Descriptors(_) => self.cfg.mode.descriptors(),
            _ => DocKind::Consensus,
        };
        let body = result
            .map_err(|f| failure_error(f, kind_of_phase, &p))
            .and_then(|b| {
                if b.len() > p.max_body {
                    return Err(Error::TooLarge {
                        doc: kind_of_phase,
                        len: b.len(),
                        limit: p.max_body,
                    });
                }
                String::from_utf8(b).map_err(|_| Error::NotText(kind_of_phase))
            });
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => {}
            Phase::Consensus(c) => self.on_consensus(c, &p, body, wall, rng),
            Phase::Descriptors(d) => self.on_descriptors(d, &p, body, wall, rng),
        }
    }

    fn on_consensus(
        &mut self,
        mut c: ConsState,
        p: &Pending,
        body: Result<String, Error>,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) {
        let outcome = match c.awaiting_certs.take() {
            Some(cons) => body.and_then(|certs| {
                self.certs.add(&certs, &self.v3, wall)?;
                self.certs_fetched = true;
                self.progress(50, "authority key certificates received".into());
                match directory::check_consensus(&cons, &self.certs, &self.v3, self.cfg.mode, wall)?
                {
                    SigCheck::Verified(checked) => Ok(Ok((cons, checked))),
                    SigCheck::NeedCerts(_) => Err(Error::Unverified {
                        doc: DocKind::Consensus,
                        reason: "the certificates received do not make a quorum".into(),
                    }),
                }
            }),
            None => body.and_then(|b| self.consensus_body(p, b, wall)),
        };
        match outcome {
            Ok(Ok((cons, checked))) => {
                let older = self
                    .current
                    .as_ref()
                    .map(|d| checked.valid_after.cmp(&d.valid_after));
                match older {
                    Some(std::cmp::Ordering::Less) => {
                        self.consensus_failed(c, p.source, Error::Older, rng)
                    }
                    Some(std::cmp::Ordering::Equal) => {
                        // The caches do not have the next one yet: ask again later, after
                        // an eighth of a voting interval (so that a public-network client
                        // does not download the same consensus every few seconds).
                        self.progress(100, "the directory has no newer consensus yet".into());
                        let interval = self.current.as_ref().map_or(0, |d| d.voting_interval());
                        self.idle(self.cfg.retry_delay.max(Duration::from_secs(interval / 8)));
                    }
                    _ => {
                        self.progress(
                            50,
                            format!(
                                "consensus signatures valid ({} of {} needed); fetching the \
                                 descriptors it names",
                                checked.signatures.0, checked.signatures.1
                            ),
                        );
                        self.start_descriptors(cons, checked, p.source, c.refresh, false, wall, rng)
                    }
                }
            }
            // Certificates to fetch first, from the same source.
            Ok(Err((cons, missing))) => {
                let ids: Vec<String> = missing.iter().map(|i| i.to_string()).collect();
                let path = format!("/tor/keys/fp/{}", ids.join("+"));
                c.awaiting_certs = Some(cons);
                self.request(p.source, DocKind::Certificates, path, None, MAX_CERTS, None);
                self.phase = Phase::Consensus(c);
            }
            Err(Error::BadDiff(_)) if p.diff_offered && c.offer_diff => {
                // The diff does not apply: ask the same source for the whole document.
                self.progress(
                    40,
                    "consensus diff does not apply; asking for it whole".into(),
                );
                c.offer_diff = false;
                self.request_consensus(&c, p.source);
                self.phase = Phase::Consensus(c);
            }
            Err(e) => self.consensus_failed(c, p.source, e, rng),
        }
    }

    /// A consensus body: the document, applied if it is a diff, then checked. `Ok(Ok)` if it
    /// verified, `Ok(Err)` if certificates are missing.
    #[allow(clippy::type_complexity)]
    fn consensus_body(
        &mut self,
        p: &Pending,
        body: String,
        wall: Timestamp,
    ) -> Result<Result<(String, Checked), (String, Vec<RsaIdentity>)>, Error> {
        let text = if consdiff::is_diff(&body) {
            let base = match (&self.current, p.diff_offered) {
                (Some(d), true) => d.consensus_text(),
                _ => return Err(Error::BadDiff("a diff nobody asked for".into())),
            };
            let full = consdiff::apply(base, &body).map_err(|e| Error::BadDiff(e.to_string()))?;
            if full.len() > MAX_CONSENSUS {
                return Err(Error::TooLarge {
                    doc: DocKind::Consensus,
                    len: full.len(),
                    limit: MAX_CONSENSUS,
                });
            }
            self.progress(
                40,
                format!(
                    "consensus received as a diff ({} bytes for {})",
                    body.len(),
                    full.len()
                ),
            );
            full
        } else {
            self.progress(40, "consensus received".into());
            body
        };
        match directory::check_consensus(&text, &self.certs, &self.v3, self.cfg.mode, wall)? {
            SigCheck::Verified(checked) => Ok(Ok((text, checked))),
            SigCheck::NeedCerts(missing) => Ok(Err((text, missing))),
        }
    }

    fn consensus_failed(
        &mut self,
        mut c: ConsState,
        source: Source,
        e: Error,
        rng: &mut impl CryptoRngCore,
    ) {
        c.attempts += 1;
        c.failed.push(source);
        if c.attempts >= self.cfg.max_attempts {
            return self.give_up(DocKind::Consensus, c.attempts, e);
        }
        self.progress(
            5,
            format!("consensus request failed ({e}); asking another directory"),
        );
        let next = self.next_consensus_source(&mut c, rng);
        self.request_consensus(&c, next);
        self.phase = Phase::Consensus(c);
    }

    fn next_consensus_source(&self, c: &mut ConsState, rng: &mut impl CryptoRngCore) -> Source {
        if c.refresh && self.cfg.refresh_from_guards && c.guard_attempts < 2 {
            c.guard_attempts += 1;
            return Source::DirGuard;
        }
        self.pick(&c.failed, rng)
    }

    fn start_consensus(&mut self, refresh: bool, rng: &mut impl CryptoRngCore) {
        let mut c = ConsState {
            attempts: 0,
            refresh,
            offer_diff: refresh,
            guard_attempts: 0,
            awaiting_certs: None,
            failed: Vec::new(),
        };
        self.progress(
            5,
            match refresh {
                true => "refreshing the consensus".into(),
                false => "fetching the consensus".into(),
            },
        );
        let source = self.next_consensus_source(&mut c, rng);
        self.request_consensus(&c, source);
        self.phase = Phase::Consensus(c);
    }

    fn request_consensus(&mut self, c: &ConsState, source: Source) {
        let path = DirRequest::consensus(self.cfg.mode.flavor(), &self.v3, FP_PREFIX_BYTES).path;
        let diff_from = match c.offer_diff {
            true => self
                .current
                .as_ref()
                .and_then(|d| consdiff::signed_part_digest(d.consensus_text())),
            false => None,
        };
        self.request(
            source,
            DocKind::Consensus,
            path,
            diff_from,
            MAX_CONSENSUS,
            None,
        );
    }

    /// Choose a source for a bootstrap request: at random among the authorities with an
    /// ORPort and the fallbacks, avoiding those in `failed` while others remain.
    fn pick(&self, failed: &[Source], rng: &mut impl CryptoRngCore) -> Source {
        let all: Vec<Source> = self
            .cfg
            .authorities
            .iter()
            .enumerate()
            .filter(|(_, a)| a.or_addr.is_some())
            .map(|(i, _)| Source::Authority(i))
            .chain((0..self.cfg.fallbacks.len()).map(Source::Fallback))
            .collect();
        let fresh: Vec<Source> = all
            .iter()
            .filter(|s| !failed.contains(s))
            .copied()
            .collect();
        let from = if fresh.is_empty() { &all } else { &fresh };
        match from.len() {
            0 => Source::DirGuard,
            n => from
                .get(usize::try_from(rng.next_u64() % n as u64).unwrap_or(0))
                .copied()
                .unwrap_or(Source::DirGuard),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_descriptors(
        &mut self,
        consensus: String,
        checked: Checked,
        source: Source,
        refresh: bool,
        from_cache: bool,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) {
        let held = match &self.current {
            Some(d) => d.descriptors_text(),
            None => self.held.as_str(),
        };
        let (text, reused, missing) = directory::split_held(held, &checked.wanted);
        if reused > 0 {
            self.progress(
                50,
                format!(
                    "{reused} {} reused from the {}",
                    self.cfg.mode.descriptors(),
                    match self.current {
                        Some(_) => "current directory",
                        None => "stored documents",
                    }
                ),
            );
        }
        let mode = self.cfg.mode;
        // One request per chunk of the mode's batch size.
        let batch = |len: usize, requests: Vec<DirRequest>| {
            requests.into_iter().next().map(|r| Batch {
                path: r.path,
                len,
                attempts: 0,
                done: false,
            })
        };
        let batches: Vec<Batch> = match &missing {
            Wanted::Micro(d) => d
                .chunks(mode.batch())
                .filter_map(|c| batch(c.len(), DirRequest::microdescs(c)))
                .collect(),
            Wanted::Full(d) => d
                .chunks(mode.batch())
                .filter_map(|c| batch(c.len(), DirRequest::server_descriptors(c)))
                .collect(),
        };
        let budget = self.cfg.descriptor_budget;
        let d = DescState {
            consensus,
            from_cache,
            certs_fetched: self.certs_fetched,
            source,
            refresh,
            queue: (0..batches.len()).collect(),
            batches,
            text,
            budget,
            left: budget,
            done: 0,
            failed: Vec::new(),
        };
        self.certs_fetched = false;
        self.descriptors_next(d, wall, rng);
    }

    /// Issue what may be issued of `d`, or finish it.
    fn descriptors_next(
        &mut self,
        mut d: DescState,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) {
        let mode = self.cfg.mode;
        while self.pending.len() < self.cfg.max_parallel {
            let Some(&b) = d.queue.front() else { break };
            let Some(batch) = d.batches.get(b) else {
                d.queue.pop_front();
                continue;
            };
            let want = batch.len.saturating_mul(mode.max_descriptor());
            let reserve = want.min(d.left);
            if reserve == 0 {
                if self.pending.is_empty() {
                    let total = d.batches.len();
                    let e = Error::Budget {
                        doc: mode.descriptors(),
                        budget: d.budget,
                        done: d.done,
                        total,
                    };
                    return self.give_up_now(e);
                }
                break;
            }
            d.queue.pop_front();
            d.left -= reserve;
            let source = match batch.attempts {
                0 => d.source,
                _ if d.refresh && self.cfg.refresh_from_guards && batch.attempts < 2 => {
                    Source::DirGuard
                }
                _ => self.pick(&d.failed, rng),
            };
            let path = batch.path.clone();
            self.request(
                source,
                mode.descriptors(),
                path,
                None,
                reserve,
                Some((b, reserve)),
            );
        }
        if d.queue.is_empty() && self.pending.is_empty() {
            return self.finish(d, wall, rng);
        }
        self.phase = Phase::Descriptors(d);
    }

    fn on_descriptors(
        &mut self,
        mut d: DescState,
        p: &Pending,
        body: Result<String, Error>,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some((b, reserved)) = p.batch else {
            self.phase = Phase::Descriptors(d);
            return;
        };
        let mode = self.cfg.mode;
        let doc = mode.descriptors();
        // A body checked as text of the right kind; what it holds is checked at the end.
        let body = body.and_then(|t| {
            let ok = match mode {
                DirMode::Micro => onion_dir::microdesc::parse_many(&t).map(|_| ()),
                DirMode::Full => onion_dir::routerdesc::parse_many(&t).map(|_| ()),
            };
            ok.map(|()| t)
                .map_err(|error| Error::Malformed { doc, error })
        });
        let budget_bound = d
            .batches
            .get(b)
            .is_some_and(|x| reserved < x.len.saturating_mul(mode.max_descriptor()));
        match body {
            Ok(t) => {
                d.left += reserved.saturating_sub(t.len());
                d.text.push_str(&t);
                if !t.is_empty() && !t.ends_with('\n') {
                    d.text.push('\n');
                }
                if let Some(x) = d.batches.get_mut(b) {
                    x.done = true;
                }
                d.done += 1;
                let total = d.batches.len().max(1);
                self.progress(
                    u8::try_from(50 + 40 * d.done / total).unwrap_or(90),
                    format!("{} of {} requests for {}", d.done, d.batches.len(), doc),
                );
                self.descriptors_next(d, wall, rng)
            }
            // Passing a limit that was the budget's: the budget is spent.
            Err(Error::TooLarge { .. }) if budget_bound => {
                let e = Error::Budget {
                    doc,
                    budget: d.budget,
                    done: d.done,
                    total: d.batches.len(),
                };
                self.give_up_now(e)
            }
            Err(e) => {
                d.left += reserved;
                d.failed.push(p.source);
                let Some(x) = d.batches.get_mut(b) else {
                    return;
                };
                x.attempts += 1;
                if x.attempts >= self.cfg.max_attempts {
                    let n = x.attempts;
                    return self.give_up(doc, n, e);
                }
                self.progress(
                    50,
                    format!("{doc} request failed ({e}); asking another directory"),
                );
                d.queue.push_front(b);
                self.descriptors_next(d, wall, rng)
            }
        }
    }

    fn finish(&mut self, d: DescState, wall: Timestamp, rng: &mut impl CryptoRngCore) {
        let mode = self.cfg.mode;
        let fetched_descriptors = d.done > 0;
        let built = directory::build(
            d.consensus,
            d.text,
            &self.certs,
            &self.v3,
            mode,
            wall,
            d.from_cache,
        );
        let dir = match built {
            Ok(dir) => Arc::new(dir),
            Err(e) => return self.give_up_now(e),
        };
        if !dir.from_cache {
            self.push(DirEvent::Persist {
                kind: DocKind::Consensus,
                text: dir.consensus_text().to_owned(),
                keep_until: dir.valid_until,
            });
        }
        if !dir.from_cache || fetched_descriptors {
            self.push(DirEvent::Persist {
                kind: mode.descriptors(),
                text: dir.descriptors_text().to_owned(),
                keep_until: dir.valid_until,
            });
        }
        if d.certs_fetched {
            if let Some(exp) = self.certs.expires() {
                self.push(DirEvent::Persist {
                    kind: DocKind::Certificates,
                    text: self.certs.text(),
                    keep_until: exp,
                });
            }
        }
        self.progress(
            90,
            format!(
                "consensus verified ({} authority signatures valid, {} needed; {} relays)",
                dir.signatures_valid, dir.signatures_needed, dir.relays_listed
            ),
        );
        self.progress(
            100,
            format!(
                "{} relays usable, {} {}",
                dir.view.len(),
                dir.descriptors,
                mode.descriptors()
            ),
        );
        self.held = String::new();
        self.current = Some(dir.clone());
        self.push(DirEvent::Directory(dir.clone()));
        // dir-spec §5.1: the next fetch at a random time of the refresh window.
        let delay = dir.refresh_delay(wall, rng);
        self.idle(delay.max(self.cfg.retry_delay));
    }

    /// One document failed every attempt: say so, keep what is held, retry later.
    fn give_up(&mut self, doc: DocKind, attempts: u32, last: Error) {
        self.give_up_now(Error::GaveUp {
            doc,
            attempts,
            last: Box::new(last),
        })
    }

    fn give_up_now(&mut self, e: Error) {
        // Answers to what is still in flight belong to this round: drop them.
        self.pending.clear();
        self.requests.clear();
        self.push(DirEvent::Failed(e));
        self.idle(self.cfg.retry_delay);
    }

    fn idle(&mut self, delay: Duration) {
        self.phase = Phase::Idle;
        self.wake = Some(self.now + delay);
    }

    fn request(
        &mut self,
        source: Source,
        kind: DocKind,
        path: String,
        diff_from: Option<String>,
        max_body: usize,
        batch: Option<(usize, usize)>,
    ) {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.pending.push(Pending {
            id,
            source,
            deadline: self.now + self.cfg.request_timeout,
            max_body,
            diff_offered: diff_from.is_some(),
            batch,
        });
        self.requests.push_back(Request {
            id,
            source,
            kind,
            path,
            diff_from,
            max_body,
        });
    }

    fn progress(&mut self, percent: u8, what: String) {
        self.push(DirEvent::Progress {
            percent: percent.min(100),
            what,
        });
    }

    fn push(&mut self, e: DirEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

fn failure_error(f: Failure, doc: DocKind, p: &Pending) -> Error {
    match f {
        // dir-spec §5.1: with the authority suffix in the URL, a directory answers 404 when
        // its consensus lacks signatures from a majority of the named authorities.
        Failure::Http {
            status: 404,
            reason,
        } if doc == DocKind::Consensus => Error::Unverified {
            doc,
            reason: format!(
                "the directory has none signed by a majority of the configured authorities \
                 (HTTP 404 {})",
                escape(&reason)
            ),
        },
        Failure::Network(s) => Error::Network(escape(&s)),
        Failure::Timeout => Error::Timeout { doc },
        Failure::Http { status, reason } => Error::Http {
            status,
            reason: escape(&reason),
        },
        Failure::TooLarge => Error::TooLarge {
            doc,
            len: p.max_body.saturating_add(1),
            limit: p.max_body,
        },
    }
}

#[cfg(test)]
mod tests;
