//! Bootstrap: from a list of directory authorities to a verified view of the network
//! (dir-spec §5 "Client operation", §4 "Directory cache operation" for the URLs).
//!
//! 1. A channel to an authority's ORPort (it must prove the RSA identity of its
//!    `DirAuthority` line), a one-hop CREATE_FAST circuit, and BEGIN_DIR streams on it
//!    (tor-spec §6.2.1): no directory traffic leaves the Tor protocol.
//! 2. The consensus of the mode's flavour (`/tor/status-vote/current/consensus[-microdesc]/
//!    F1+F2+...`, dir-spec §5.1: the suffix names the configured authorities), and the key
//!    certificates of the authorities that signed it (`/tor/keys/fp/A+B+...`). Each
//!    certificate must verify; the consensus must carry valid signatures from more than half
//!    of the configured v3 authorities (dir-spec §3.4.1).
//! 3. Only once the consensus has verified (so that nobody on the path, nor the directory,
//!    can make the client send requests for relays of a forged document): the relays'
//!    descriptors, in batches: microdescriptors by digest (`/tor/micro/d/...`, at most 92 a
//!    request, dir-spec §5.2; each is kept only if its SHA-256 is the digest of a consensus
//!    `m` line), or server descriptors by digest (`/tor/server/d/...`, 96 a request), each
//!    checked against its own signatures. What one bootstrap or refresh takes in descriptor
//!    bodies is capped ([`DirMode::descriptor_budget`]).
//!
//! Two modes share this one code path ([`DirMode`]). Microdescriptors are C tor's default
//! and the default on the public network. The full-descriptor mode (`UseMicrodescriptors 0`)
//! is the default on a testing network: a descriptor carries the complete exit policy, so
//! exits of a private network (which accept only 127.0.0.0/8, a policy no microdescriptor
//! summary can express: it reads `reject 1-65535`) are usable. Documents are kept in the data
//! directory and reused while the consensus is live; they are verified again on every use.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_circuit::channel::PeerIds;
use onion_circuit::circuit::{HandshakeKind, HopTarget};
use onion_circuit::Instant;
use onion_crypto::keys::NtorOnionKey;
use onion_dir::authcert::{self, AuthCert};
use onion_dir::consdiff;
use onion_dir::consensus::{self, Consensus, Flavor};
use onion_dir::http::DirRequest;
use onion_dir::microdesc;
use onion_dir::netview::NetView;
use onion_dir::path::{PathConfig, PathSelector};
use onion_dir::routerdesc::{self, RouterDesc};
use onion_dir::{MdDigest, RsaIdentity, Timestamp};
use rand_core::{OsRng, RngCore};

use super::authority::DirAuthority;
use super::cache::Cache;
use super::client::{Client, Target};
use super::http;
use super::path;
use super::text;

/// Upper bounds on directory responses (the public ns consensus is ~3 MB).
const MAX_CONSENSUS: usize = 16 << 20;
const MAX_CERTS: usize = 1 << 20;
/// Bytes of each authority fingerprint in the consensus URL suffix (C tor sends 3).
const FP_PREFIX_BYTES: usize = 3;

/// Which descriptors a client uses (dir-spec §5: C tor's `UseMicrodescriptors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirMode {
    /// The microdescriptor consensus and microdescriptors (C tor's default): small, but exit
    /// policies are only port summaries.
    Micro,
    /// The `ns` consensus and server descriptors, with complete exit policies.
    Full,
}

impl DirMode {
    /// Parse a `--dir-mode` value (`micro` or `full`).
    pub fn parse(s: &str) -> Result<DirMode, String> {
        match s {
            "micro" => Ok(DirMode::Micro),
            "full" => Ok(DirMode::Full),
            _ => Err(format!("--dir-mode {s:?}: expected micro or full")),
        }
    }

    /// The default for a network: full descriptors on a testing network (every authority on
    /// a loopback or private address; its exits' 127.0.0.0/8 policies need them),
    /// microdescriptors otherwise.
    pub fn default_for(auths: &[DirAuthority]) -> DirMode {
        match path::is_testing_network(auths) {
            true => DirMode::Full,
            false => DirMode::Micro,
        }
    }

    /// The mode's name, as `--dir-mode` spells it.
    pub fn name(self) -> &'static str {
        match self {
            DirMode::Micro => "micro",
            DirMode::Full => "full",
        }
    }

    fn flavor(self) -> Flavor {
        match self {
            DirMode::Micro => Flavor::Microdesc,
            DirMode::Full => Flavor::Ns,
        }
    }

    /// Data-directory file names: consensus, certificates, descriptors (C tor's names).
    fn files(self) -> [&'static str; 3] {
        match self {
            DirMode::Micro => [
                "cached-microdesc-consensus",
                "cached-certs",
                "cached-microdescs",
            ],
            DirMode::Full => ["cached-consensus", "cached-certs", "cached-descriptors"],
        }
    }

    /// The most descriptor bytes (response bodies) one bootstrap or refresh takes in: about
    /// three times what the public network's relays need today (~2.2 MB of
    /// microdescriptors, ~10 MB of server descriptors for ~8,000 relays), room for its growth
    /// while bounding what a directory can make the client download. When the next response
    /// would pass it, fetching stops and the bootstrap fails with an error saying so (a
    /// refresh from a directory guard then asks the authorities, as after any failure):
    /// going on with the descriptors that arrived would let a directory choose which relays
    /// the client may use.
    pub fn descriptor_budget(self) -> usize {
        match self {
            DirMode::Micro => 8 << 20,
            DirMode::Full => 32 << 20,
        }
    }

    fn descs_name(self) -> &'static str {
        match self {
            DirMode::Micro => "microdescriptors",
            DirMode::Full => "server descriptors",
        }
    }
}

/// A verified directory: the documents and the path-selection view built from them.
pub struct Directory {
    /// The consensus text (verified).
    pub consensus: String,
    /// Relays usable for paths: in the consensus and with a verified descriptor.
    pub view: NetView,
    /// How it was obtained, for reports.
    pub summary: Summary,
    /// The descriptors' text as fetched (or reused), so that a refresh fetches only those it
    /// lacks.
    pub descriptors: String,
}

/// The shortest wait before the next directory refresh, and the wait after a failed one:
/// a directory whose refresh time has already passed (one reused late in its life, or one the
/// network has not replaced yet) is not asked for again in a loop.
pub const REFRESH_RETRY: Duration = Duration::from_secs(10);

impl Directory {
    /// How long from now until this directory should be replaced: a random time in its
    /// consensus's refresh window (dir-spec §5.1, [`Consensus::refresh_window`]), zero if
    /// that time has passed (a consensus reused from the data directory late in its life).
    pub fn refresh_delay(&self) -> Duration {
        let Ok(cons) = consensus::parse(&self.consensus) else {
            return Duration::ZERO;
        };
        let (start, end) = cons.assume_verified().refresh_window();
        let span = end.0.saturating_sub(start.0);
        let at = start.0 + OsRng.next_u64() % span.saturating_add(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Duration::from_secs(at.saturating_sub(now))
    }
}

/// Figures of one bootstrap (for progress and `onion bootstrap`).
#[derive(Debug, Clone)]
pub struct Summary {
    /// The mode used.
    pub mode: DirMode,
    /// Relays listed in the consensus.
    pub relays: usize,
    /// Valid signatures of configured authorities on the consensus.
    pub signatures_valid: usize,
    /// Valid signatures needed (more than half of the configured authorities).
    pub signatures_needed: usize,
    /// Descriptors held that the consensus names (by digest) and that verified.
    pub descriptors: usize,
    /// The consensus' valid-after time.
    pub valid_after: String,
    /// Whether the documents came from the data directory.
    pub cached: bool,
}

/// Progress reporting on stderr ("bootstrap NN%: ...").
pub fn progress(pct: u8, what: &str) {
    eprintln!("onion: bootstrap {pct:>3}%: {what}");
}

/// Where a bootstrap takes its documents from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// The data directory's documents while the consensus is live, else the authorities
    /// (start-up).
    CacheOrAuthorities,
    /// A refresh of `current`: from a directory guard chosen from it (`guard`; dir-spec §5,
    /// once a client has a consensus it asks directory caches, not the authorities, and
    /// guard-spec §4.6 has it ask its own guards, `GuardUsage::Dir`, over a one-hop circuit)
    /// or from the authorities. Only the descriptors `current` lacks are fetched: those it
    /// holds that the new consensus still names are reused (dir-spec §5.2: a client downloads
    /// the descriptors it does not have).
    Refresh {
        /// The directory being replaced.
        current: &'a Directory,
        /// Ask a directory guard rather than the authorities.
        guard: bool,
    },
}

/// Bootstrap from `auths` in `mode` (or from a directory guard, see [`Source`]), and store
/// what was fetched in `cache`. Everything is verified against the authorities' keys
/// whatever its source.
pub fn bootstrap(
    client: &mut Client,
    auths: &[DirAuthority],
    mode: DirMode,
    cache: Option<&Cache>,
    from: Source<'_>,
    deadline: Instant,
) -> Result<Directory, String> {
    let use_cached = matches!(from, Source::CacheOrAuthorities);
    let now = SystemTime::now();
    let v3: Vec<RsaIdentity> = auths
        .iter()
        .filter_map(|a| a.v3ident.map(RsaIdentity))
        .collect();
    let files = mode.files();

    let cached = cache.filter(|_| use_cached).and_then(|c| {
        Some(Documents {
            consensus: c.get_live(files[0], now)?,
            certs: c.get_live(files[1], now)?,
            descriptors: c.get_live(files[2], now)?,
        })
    });
    let from_cache = cached.is_some();
    let docs = match cached {
        Some(docs) => {
            progress(10, "using cached directory documents");
            docs
        }
        None => {
            progress(5, &format!("directory mode: {}", mode.name()));
            let dir = match from {
                Source::Refresh {
                    current,
                    guard: true,
                } => open_dir_guard_circuit(client, current, deadline)?,
                _ => DirCircuit::None,
            };
            let mut net = NetFetch {
                dir,
                client,
                auths,
                deadline,
            };
            let docs = fetch_documents(&mut net, &v3, mode, from, now, mode.descriptor_budget());
            net.dir.close(net.client);
            docs?
        }
    };
    let Documents {
        consensus: cons_text,
        certs: certs_text,
        descriptors: descs_text,
    } = docs;

    let ts = Timestamp::from(now);
    let (cons, signatures) = verify_consensus(&cons_text, &certs_text, &v3, mode, ts)?;
    progress(
        90,
        &format!(
            "consensus verified ({} authority signatures valid, {} needed; {} relays)",
            signatures.0,
            signatures.1,
            cons.relays.len()
        ),
    );
    let (view, descriptors) = match mode {
        DirMode::Micro => {
            let mds = microdesc::parse_many(&descs_text)
                .map_err(|e| format!("microdescriptors do not parse: {e}"))?;
            // A microdescriptor is authenticated by its digest alone (dir-spec §3.3): it
            // counts only if a verified `m` line names its SHA-256.
            let wanted: HashSet<MdDigest> =
                cons.relays.iter().filter_map(|r| r.md_digest).collect();
            let matched = mds.iter().filter(|m| wanted.contains(&m.digest)).count();
            let view = NetView::from_microdescs(&cons, &mds);
            (view, matched)
        }
        DirMode::Full => {
            let descs: Vec<RouterDesc<'_>> = routerdesc::parse_many(&descs_text)
                .map_err(|e| format!("server descriptors do not parse: {e}"))?
                .into_iter()
                .filter_map(|d| d.verify(ts).ok())
                .collect();
            let n = descs.len();
            (NetView::from_router_descs(&cons, &descs), n)
        }
    };
    let view = view.map_err(|e| format!("network view: {e}"))?;
    if view.is_empty() {
        return Err("no relay with a valid descriptor in the consensus".into());
    }
    // Reused while live (dir-spec §5: a consensus past fresh-until is still usable until
    // valid-until; C tor starts from it and fetches a newer one), so a second run soon after
    // the first, or one on a testing network whose consensus is fresh for only one short
    // voting interval, does not fetch everything again.
    let reuse_until = SystemTime::from(cons.valid_until);
    if let (Some(c), false) = (cache, from_cache) {
        let stored = c
            .put(files[0], &cons_text, reuse_until)
            .and_then(|_| c.put(files[1], &certs_text, reuse_until))
            .and_then(|_| c.put(files[2], &descs_text, reuse_until));
        if let Err(e) = stored {
            eprintln!("onion: warning: cannot write the data directory: {e}");
        }
    }
    progress(
        100,
        &format!(
            "{} relays usable, {} {}",
            view.len(),
            descriptors,
            mode.descs_name()
        ),
    );
    let summary = Summary {
        mode,
        relays: cons.relays.len(),
        signatures_valid: signatures.0,
        signatures_needed: signatures.1,
        descriptors,
        valid_after: cons.valid_after.to_string(),
        cached: from_cache,
    };
    Ok(Directory {
        consensus: cons_text,
        view,
        summary,
        descriptors: descs_text,
    })
}

/// The three documents of a directory, as text: the consensus, the authority key
/// certificates and the descriptors.
struct Documents {
    consensus: String,
    certs: String,
    descriptors: String,
}

/// One HTTP GET to the directory in use (an authority or a directory guard).
trait DirFetch {
    /// GET `path` with the header fields `extra`, taking at most `max` bytes: `Ok(Ok(body))`
    /// if the status is 200, `Ok(Err((status, reason)))` for another status (the reason as
    /// received), `Err` for a transport or framing failure.
    fn get_raw(
        &mut self,
        path: &str,
        max: usize,
        extra: &[(&str, &str)],
    ) -> Result<Result<String, (u16, String)>, String>;

    /// The directory's name, for errors.
    fn name(&self) -> String;

    /// GET `path`: the body if the status is 200, else an error naming the status (and the
    /// reason phrase, escaped).
    fn get(&mut self, path: &str, max: usize) -> Result<String, String> {
        self.get_raw(path, max, &[])?.map_err(|(status, reason)| {
            format!(
                "directory request {path} to {}: HTTP {status} {}",
                self.name(),
                text::escape(&reason)
            )
        })
    }
}

/// [`DirFetch`] over BEGIN_DIR streams of a one-hop circuit made on first use.
struct NetFetch<'a> {
    dir: DirCircuit,
    client: &'a mut Client,
    auths: &'a [DirAuthority],
    deadline: Instant,
}

impl DirFetch for NetFetch<'_> {
    fn get_raw(
        &mut self,
        path: &str,
        max: usize,
        extra: &[(&str, &str)],
    ) -> Result<Result<String, (u16, String)>, String> {
        self.dir
            .get_raw(self.client, self.auths, path, max, extra, self.deadline)
    }

    fn name(&self) -> String {
        match &self.dir {
            DirCircuit::Open { name, .. } => name.clone(),
            DirCircuit::None => String::new(),
        }
    }
}

/// Fetch the consensus (as a diff from `from`'s if the directory offers one) and the
/// certificates of its signers, verify it, and only then fetch the descriptors it names
/// that `from` does not hold, taking at most `budget` bytes of descriptor bodies in all
/// (see [`DirMode::descriptor_budget`]).
fn fetch_documents(
    dir: &mut impl DirFetch,
    v3: &[RsaIdentity],
    mode: DirMode,
    from: Source<'_>,
    now: SystemTime,
    budget: usize,
) -> Result<Documents, String> {
    let cons_path = DirRequest::consensus(mode.flavor(), v3, FP_PREFIX_BYTES).path;
    // dir-spec §4.5.2: a refresh offers the consensus it has, so that a cache may answer
    // with a diff from it.
    let base = match from {
        Source::Refresh { current, .. } => Some(current.consensus.as_str()),
        Source::CacheOrAuthorities => None,
    };
    let diff_from = base.and_then(consdiff::signed_part_digest);
    let offer: Vec<(&str, &str)> = diff_from
        .iter()
        .map(|d| ("X-Or-Diff-From-Consensus", d.as_str()))
        .collect();
    let body = get_consensus(dir, &cons_path, &offer)?;
    let cons_text = match base {
        Some(base) if consdiff::is_diff(&body) => match consdiff::apply(base, &body) {
            Ok(full) => {
                progress(
                    40,
                    &format!(
                        "consensus received as a diff ({} bytes for {})",
                        body.len(),
                        full.len()
                    ),
                );
                full
            }
            Err(e) => {
                progress(
                    40,
                    &format!("consensus diff does not apply ({e}); asking for it whole"),
                );
                get_consensus(dir, &cons_path, &[])?
            }
        },
        _ if consdiff::is_diff(&body) => {
            return Err("the directory sent a consensus diff nobody asked for".into())
        }
        _ => body,
    };
    progress(40, "consensus received");
    let unverified =
        consensus::parse(&cons_text).map_err(|e| format!("consensus does not parse: {e}"))?;
    let signers: Vec<String> = unverified
        .peek()
        .signatures
        .iter()
        .filter(|s| v3.contains(&s.identity))
        .map(|s| s.identity.to_string())
        .collect();
    if signers.is_empty() {
        return Err("consensus is signed by none of the configured authorities".into());
    }
    let certs_text = dir.get(&format!("/tor/keys/fp/{}", signers.join("+")), MAX_CERTS)?;
    progress(50, "authority key certificates received");

    // Nothing in the consensus is acted on before it verified.
    let (cons, _) = verify_consensus(&cons_text, &certs_text, v3, mode, Timestamp::from(now))?;
    progress(
        50,
        "consensus signatures valid; fetching the descriptors it names",
    );
    let held = match from {
        Source::Refresh { current, .. } => current.descriptors.as_str(),
        Source::CacheOrAuthorities => "",
    };
    let (mut descs_text, reused, requests) = match mode {
        DirMode::Micro => {
            let wanted: Vec<MdDigest> = cons.relays.iter().filter_map(|r| r.md_digest).collect();
            let held = microdesc::parse_many(held).unwrap_or_default();
            let (kept, n, missing) = split_held(held.iter().map(|m| (m.digest, m.text)), &wanted);
            (kept, n, DirRequest::microdescs(&missing))
        }
        DirMode::Full => {
            let wanted: Vec<[u8; 20]> = cons
                .relays
                .iter()
                .filter_map(|r| r.descriptor_digest)
                .collect();
            let held = routerdesc::parse_many(held).unwrap_or_default();
            let (kept, n, missing) = split_held(
                held.iter().map(|d| (d.peek().digest, d.peek().text)),
                &wanted,
            );
            (kept, n, DirRequest::server_descriptors(&missing))
        }
    };
    drop(cons);
    if reused > 0 {
        progress(
            50,
            &format!(
                "{reused} {} reused from the current directory",
                mode.descs_name()
            ),
        );
    }
    let mut left = budget;
    for (i, req) in requests.iter().enumerate() {
        if left == 0 {
            return Err(budget_error(mode, budget, i, requests.len()));
        }
        // A response larger than what is left of the budget is cut off by the transport
        // (the head does not count: it is bounded by `http::MAX_HEAD`).
        let body = dir
            .get(&req.path, left.saturating_add(http::MAX_HEAD))
            .map_err(|e| match e.contains("response larger than") {
                true => format!("{}; {e}", budget_error(mode, budget, i, requests.len())),
                false => e,
            })?;
        if body.len() > left {
            return Err(budget_error(mode, budget, i, requests.len()));
        }
        left -= body.len();
        descs_text.push_str(&body);
        progress(
            (50 + 40 * (i + 1) / requests.len().max(1)) as u8,
            &format!(
                "{} of {} requests for {}",
                i + 1,
                requests.len(),
                mode.descs_name()
            ),
        );
    }
    Ok(Documents {
        consensus: cons_text,
        certs: certs_text,
        descriptors: descs_text,
    })
}

fn budget_error(mode: DirMode, budget: usize, done: usize, total: usize) -> String {
    format!(
        "{} responses exceed {budget} bytes, the limit for one bootstrap, after {done} of \
         {total} requests; stopped",
        mode.descs_name()
    )
}

/// Verify `cons_text` with the certificates in `certs_text` (each verified itself, and of a
/// configured authority) at `ts`: signatures of more than half of the configured v3
/// authorities (dir-spec §3.4.1), the flavour of `mode`, and still valid. The consensus and
/// (valid signatures, signatures needed).
fn verify_consensus<'c>(
    cons_text: &'c str,
    certs_text: &str,
    v3: &[RsaIdentity],
    mode: DirMode,
    ts: Timestamp,
) -> Result<(Consensus<'c>, (usize, usize)), String> {
    let certs: Vec<AuthCert> = authcert::parse_many(certs_text)
        .map_err(|e| format!("authority certificates do not parse: {e}"))?
        .into_iter()
        .filter_map(|c| c.verify(ts).ok())
        .filter(|c| v3.contains(&c.fingerprint))
        .collect();
    let unverified =
        consensus::parse(cons_text).map_err(|e| format!("consensus does not parse: {e}"))?;
    let report = unverified.check_signatures(v3, &certs, ts);
    let signatures = (report.verified.len(), report.needed);
    let cons: Consensus<'_> = unverified
        .verify(v3, &certs, ts)
        .map_err(|e| format!("consensus failed verification: {e}"))?;
    if cons.flavor != mode.flavor() {
        return Err(format!(
            "consensus has flavour {}, expected {}",
            cons.flavor.name(),
            mode.flavor().name()
        ));
    }
    if !cons.is_fresh(ts) && ts > cons.valid_until {
        return Err(format!(
            "consensus is no longer valid (valid-until {})",
            cons.valid_until
        ));
    }
    Ok((cons, signatures))
}

/// GET the consensus at `path` with the header fields `extra`: its body, or an error that
/// says what the status means.
fn get_consensus(
    dir: &mut impl DirFetch,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<String, String> {
    match dir.get_raw(path, MAX_CONSENSUS, extra)? {
        Ok(body) => Ok(body),
        // dir-spec §5.1: with the authority suffix, a directory answers 404 when its
        // consensus lacks signatures from a majority of the named authorities.
        Err((404, reason)) => Err(format!(
            "consensus failed verification: the directory has none signed by a majority of \
             the configured authorities (HTTP 404 {})",
            text::escape(&reason)
        )),
        Err((status, reason)) => Err(format!(
            "directory request {path}: HTTP {status} {}",
            text::escape(&reason)
        )),
    }
}

/// The one-hop directory circuit, made on first use.
enum DirCircuit {
    None,
    Open { circ: usize, name: String },
}

impl DirCircuit {
    /// GET `path` (with the header fields `extra`) over a BEGIN_DIR stream: `Ok(body)` if the
    /// status is 200, else `Err((status, reason))`; the outer error is a transport or framing
    /// failure.
    fn get_raw(
        &mut self,
        client: &mut Client,
        auths: &[DirAuthority],
        path: &str,
        max: usize,
        extra: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Result<String, (u16, String)>, String> {
        if let DirCircuit::None = self {
            *self = open_dir_circuit(client, auths, deadline)?;
        }
        let DirCircuit::Open { circ, name } = self else {
            return Err("no directory circuit".into());
        };
        let ctx = |e: String| format!("directory request {path} to {name}: {e}");
        let stream = client
            .begin(*circ, Target::Dir, deadline)
            .map_err(|e| ctx(e.into()))?;
        let raw = client
            .fetch(
                *circ,
                stream,
                &http::get_request_with("127.0.0.1", path, extra),
                max,
                deadline,
                |_| {},
            )
            .map_err(ctx)?;
        let resp = http::parse_response(&raw, true).map_err(|e| ctx(e.to_string()))?;
        if resp.status != 200 {
            return Ok(Err((resp.status, resp.reason)));
        }
        if resp
            .header("content-encoding")
            .is_some_and(|e| e != "identity")
        {
            return Err(ctx("unexpected content encoding".into()));
        }
        String::from_utf8(resp.body)
            .map(Ok)
            .map_err(|_| ctx("body is not UTF-8".into()))
    }

    fn close(&mut self, client: &mut Client) {
        if let DirCircuit::Open { circ, .. } = self {
            client.destroy(*circ);
        }
        *self = DirCircuit::None;
    }
}

/// Try the authorities (from a random start) until one gives a one-hop circuit.
fn open_dir_circuit(
    client: &mut Client,
    auths: &[DirAuthority],
    deadline: Instant,
) -> Result<DirCircuit, String> {
    let candidates: Vec<&DirAuthority> = auths
        .iter()
        .filter(|a| a.v3ident.is_some() && a.or_port.is_some())
        .collect();
    if candidates.is_empty() {
        return Err("no authority with an ORPort (`orport=`) in the list".into());
    }
    let mut start = [0u8; 1];
    let _ = getrandom_byte(&mut start);
    let mut errors = Vec::new();
    for i in 0..candidates.len() {
        let a = candidates[(usize::from(start[0]) + i) % candidates.len()];
        let Some(addr) = a.or_addr() else { continue };
        // Each attempt gets a share of the remaining time, so one dead authority cannot
        // eat the whole budget.
        let left = client.clock.until(deadline);
        let attempt =
            client.deadline(left / u32::try_from(candidates.len() - i).unwrap_or(1).max(1));
        progress(
            5,
            &format!("connecting to authority {} at {addr}", a.name()),
        );
        match one_hop(client, a, addr, attempt) {
            Ok(circ) => {
                progress(
                    10,
                    &format!("directory circuit to {} built (CREATE_FAST)", a.name()),
                );
                return Ok(DirCircuit::Open {
                    circ,
                    name: a.name(),
                });
            }
            Err(e) => {
                eprintln!("onion: authority {}: {e}", a.name());
                errors.push(format!("{}: {e}", a.name()));
            }
        }
    }
    Err(format!(
        "no directory authority reachable ({})",
        errors.join("; ")
    ))
}

/// Of the descriptors `held` (digest and exact text), those whose digest is `wanted`, as one
/// text in `wanted`'s order, how many, and the digests of `wanted` that none of them has:
/// what is left to fetch. A digest named twice counts once.
fn split_held<'h, D: Copy + Eq + std::hash::Hash>(
    held: impl Iterator<Item = (D, &'h str)>,
    wanted: &[D],
) -> (String, usize, Vec<D>) {
    let mut held: HashMap<D, &str> = held.collect();
    let mut seen = HashSet::new();
    let mut kept = String::new();
    let mut n_kept = 0;
    let mut missing = Vec::new();
    for d in wanted.iter().filter(|d| seen.insert(**d)) {
        match held.remove(d) {
            Some(text) => {
                n_kept += 1;
                kept.push_str(text);
                if !text.ends_with('\n') {
                    kept.push('\n');
                }
            }
            None => missing.push(*d),
        }
    }
    (kept, n_kept, missing)
}

/// A one-hop circuit (ntor) to a directory guard the client's guard manager chooses from
/// `via`'s relays (guard-spec §4.6 `GuardUsage::Dir`: a primary guard, which has the V2Dir
/// flag, as every guard does); its fate is reported to the guard manager.
fn open_dir_guard_circuit(
    client: &mut Client,
    via: &Directory,
    deadline: Instant,
) -> Result<DirCircuit, String> {
    let sel = PathSelector::with_config(&via.view, PathConfig::default());
    let (idx, ticket) = client.guards.dir_guard(&sel)?;
    let rec = via
        .view
        .relay(idx)
        .ok_or("directory guard not in the directory")?;
    progress(
        5,
        &format!("connecting to directory guard {}", rec.nickname),
    );
    let (circ, _) = path::build_guarded(client, &[rec], ticket, deadline)?;
    progress(
        10,
        &format!("directory circuit to guard {} built", rec.nickname),
    );
    Ok(DirCircuit::Open {
        circ,
        name: rec.nickname.clone(),
    })
}

fn one_hop(
    client: &mut Client,
    a: &DirAuthority,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<usize, String> {
    let rsa = onion_crypto::RsaIdentity(a.fingerprint);
    let link = client.connect(addr, PeerIds::rsa_only(rsa), deadline)?;
    // CREATE_FAST needs no onion key: the TLS channel already authenticated the relay.
    let target = HopTarget {
        rsa_id: rsa,
        ed_id: None,
        ntor_key: NtorOnionKey([0; 32]),
        addrs: vec![addr],
        ntor_v3: false,
    };
    client.create(link, &target, HandshakeKind::CreateFast, deadline)
}

fn getrandom_byte(buf: &mut [u8]) -> Result<(), rand_core::Error> {
    use rand_core::RngCore;
    rand_core::OsRng.try_fill_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::authority;

    const TORNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-dir/testdata/tornet");

    fn testdata(name: &str) -> String {
        std::fs::read_to_string(format!("{TORNET}/{name}")).unwrap()
    }

    /// A directory that answers from fixed documents (by path prefix) and records every
    /// request, as a directory guard or authority would be seen by the client.
    struct FakeDir {
        answers: Vec<(&'static str, String)>,
        requests: Vec<String>,
    }

    impl DirFetch for FakeDir {
        fn get_raw(
            &mut self,
            path: &str,
            max: usize,
            _extra: &[(&str, &str)],
        ) -> Result<Result<String, (u16, String)>, String> {
            self.requests.push(path.to_string());
            match self.answers.iter().find(|(p, _)| path.starts_with(p)) {
                // As `Client::fetch`: a response longer than `max` is cut off (the head
                // counts too; say 100 bytes).
                Some((_, body)) if body.len() + 100 > max => {
                    Err(format!("response larger than {max} bytes"))
                }
                Some((_, body)) => Ok(Ok(body.clone())),
                None => Ok(Err((404, "Not found".into()))),
            }
        }

        fn name(&self) -> String {
            "fake".into()
        }
    }

    /// The private network's documents, answered in `mode`, with `consensus` as its
    /// consensus.
    fn fake(mode: DirMode, consensus: String) -> FakeDir {
        let descs = match mode {
            DirMode::Micro => ("/tor/micro/d/", testdata("cached-microdescs.new")),
            DirMode::Full => ("/tor/server/d/", testdata("cached-descriptors.new")),
        };
        FakeDir {
            answers: vec![
                ("/tor/status-vote/current/consensus", consensus),
                ("/tor/keys/fp/", testdata("cached-certs")),
                descs,
            ],
            requests: vec![],
        }
    }

    fn consensus_text(mode: DirMode) -> String {
        testdata(match mode {
            DirMode::Micro => "cached-microdesc-consensus",
            DirMode::Full => "cached-consensus",
        })
    }

    fn tornet_v3() -> Vec<RsaIdentity> {
        authority::parse_list(&testdata("dirauthority-lines.txt"))
            .unwrap()
            .iter()
            .filter_map(|a| a.v3ident.map(RsaIdentity))
            .collect()
    }

    /// Ten seconds after the test network's consensus became valid.
    fn tornet_now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_418_410)
    }

    fn descriptor_requests(dir: &FakeDir) -> usize {
        dir.requests
            .iter()
            .filter(|p| p.starts_with("/tor/micro/") || p.starts_with("/tor/server/"))
            .count()
    }

    /// A consensus that verifies is followed by descriptor requests; one altered after it
    /// was signed (a relay's address changed, as a directory on the path could) is refused
    /// before any descriptor is asked for: the client sends nothing a forged document names.
    #[test]
    fn descriptors_are_fetched_only_for_a_verified_consensus() {
        let v3 = tornet_v3();
        for mode in [DirMode::Micro, DirMode::Full] {
            let good = consensus_text(mode);
            let mut dir = fake(mode, good.clone());
            let docs = fetch_documents(
                &mut dir,
                &v3,
                mode,
                Source::CacheOrAuthorities,
                tornet_now(),
                mode.descriptor_budget(),
            )
            .unwrap();
            assert_eq!(docs.consensus, good);
            assert_eq!(descriptor_requests(&dir), 1, "{:?}", dir.requests);
            assert!(!docs.descriptors.is_empty());

            let forged = good.replacen("127.0.0.1 53337", "10.6.6.6 53337", 1);
            assert_ne!(forged, good);
            let mut dir = fake(mode, forged);
            let e = fetch_documents(
                &mut dir,
                &v3,
                mode,
                Source::CacheOrAuthorities,
                tornet_now(),
                mode.descriptor_budget(),
            )
            .err()
            .unwrap();
            assert!(e.starts_with("consensus failed verification"), "{e}");
            assert_eq!(descriptor_requests(&dir), 0, "{:?}", dir.requests);
            assert_eq!(dir.requests.len(), 2, "consensus and certificates only");

            // Signed, but by authorities that are not the configured ones: no certificate
            // or descriptor request either.
            let others = vec![RsaIdentity([0x42; 20])];
            let mut dir = fake(mode, good);
            let e = fetch_documents(
                &mut dir,
                &others,
                mode,
                Source::CacheOrAuthorities,
                tornet_now(),
                mode.descriptor_budget(),
            )
            .err()
            .unwrap();
            assert!(e.contains("none of the configured authorities"), "{e}");
            assert_eq!(dir.requests.len(), 1, "{:?}", dir.requests);
        }
    }

    /// Descriptor bodies are taken up to the budget: a response that would pass it stops the
    /// bootstrap with an error naming the limit; one that fits exactly is taken.
    #[test]
    fn descriptor_bytes_are_capped() {
        let v3 = tornet_v3();
        let mode = DirMode::Micro;
        let size = testdata("cached-microdescs.new").len();
        let run = |budget: usize| {
            let mut dir = fake(mode, consensus_text(mode));
            let r = fetch_documents(
                &mut dir,
                &v3,
                mode,
                Source::CacheOrAuthorities,
                tornet_now(),
                budget,
            );
            (r, dir.requests.len())
        };
        let (r, n) = run(size);
        assert_eq!(r.unwrap().descriptors.len(), size);
        assert_eq!(n, 3);
        for budget in [size - 1, 1] {
            let (r, n) = run(budget);
            let e = r.err().unwrap();
            assert!(
                e.contains(&format!("microdescriptors responses exceed {budget} bytes")),
                "{e}"
            );
            assert_eq!(n, 3);
        }
        // The budget is stated for the public network: about three times its descriptors.
        assert!(DirMode::Micro.descriptor_budget() >= 3 * 2_200_000);
        assert!(DirMode::Full.descriptor_budget() >= 3 * 10_000_000);
    }

    /// An HTTP reason phrase from the directory reaches the error without its control
    /// characters.
    #[test]
    fn directory_reason_phrases_are_escaped() {
        struct Hostile;
        impl DirFetch for Hostile {
            fn get_raw(
                &mut self,
                _: &str,
                _: usize,
                _: &[(&str, &str)],
            ) -> Result<Result<String, (u16, String)>, String> {
                Ok(Err((
                    503,
                    "Busy\x1b[2J\x1b[1;1Honion: bootstrap 100%: done".into(),
                )))
            }
            fn name(&self) -> String {
                "hostile".into()
            }
        }
        let e = get_consensus(&mut Hostile, "/tor/x", &[]).unwrap_err();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(
            e.ends_with("HTTP 503 Busy\\u{1b}[2J\\u{1b}[1;1Honion: bootstrap 100%: done"),
            "{e}"
        );
        let e = Hostile.get("/tor/keys/fp/A", 100).unwrap_err();
        assert!(!e.chars().any(char::is_control), "{e:?}");
    }

    /// A refresh keeps the held descriptors the new consensus still names, in its order and
    /// once each, and fetches only the rest; real microdescriptors re-parse to the same
    /// digests from the kept text.
    #[test]
    fn refresh_reuses_held_descriptors() {
        let held = [(1u8, "one\n"), (2, "two"), (3, "three\n")];
        let (kept, n, missing) = split_held(held.into_iter(), &[3, 4, 1, 3, 4]);
        assert_eq!(kept, "three\none\n");
        assert_eq!((n, missing), (2, vec![4]));
        let (kept, n, missing) = split_held(std::iter::empty::<(u8, &str)>(), &[1, 2]);
        assert_eq!((kept.as_str(), n, missing), ("", 0, vec![1, 2]));

        let net = onion_dir::synth::network(50, 3);
        let mds = microdesc::parse_many(&net.microdescs).unwrap();
        let wanted: Vec<MdDigest> = mds.iter().rev().step_by(2).map(|m| m.digest).collect();
        let (kept, n, missing) = split_held(mds.iter().map(|m| (m.digest, m.text)), &wanted);
        assert_eq!((n, missing.len()), (wanted.len(), 0));
        let again: Vec<MdDigest> = microdesc::parse_many(&kept)
            .unwrap()
            .iter()
            .map(|m| m.digest)
            .collect();
        assert_eq!(again, wanted);
    }

    #[test]
    fn dir_mode_parse_and_defaults() {
        assert_eq!(DirMode::parse("micro"), Ok(DirMode::Micro));
        assert_eq!(DirMode::parse("full"), Ok(DirMode::Full));
        assert!(DirMode::parse("ns").unwrap_err().contains("micro or full"));
        let public = authority::parse_list(authority::PUBLIC_AUTHORITIES).unwrap();
        assert_eq!(DirMode::default_for(&public), DirMode::Micro);
        let private = authority::parse_list(
            "DirAuthority auth0 orport=5000 no-v2 \
             v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:7000 \
             89ABCDEF0123456789ABCDEF0123456789ABCDEF\n",
        )
        .unwrap();
        assert_eq!(DirMode::default_for(&private), DirMode::Full);
        assert_eq!(DirMode::Micro.flavor(), Flavor::Microdesc);
        assert_eq!(DirMode::Full.files()[0], "cached-consensus");
    }
}
