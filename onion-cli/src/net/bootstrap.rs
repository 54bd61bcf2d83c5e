//! Bootstrap: from a list of directory authorities to a verified view of the network, by
//! driving [`onion_client::dir::DirMachine`] (dir-spec §5 "Client operation"; the machine
//! decides what to fetch, verifies everything and builds the directory once).
//!
//! This driver carries the machine's requests: a channel to the source it names (an
//! authority or fallback directory, which must prove its RSA identity, with a one-hop
//! CREATE_FAST circuit; or a directory guard chosen by the guard manager, with an ntor
//! one-hop circuit, guard-spec §4.6) and one BEGIN_DIR stream per request (tor-spec §6.2.1),
//! so no directory traffic leaves the Tor protocol. Responses are decoded by
//! [`onion_client::dir::decode_response`] (deflate, gzip or identity) and handed back. The
//! documents the machine hands over are kept in the data directory (`net/cache.rs`) until
//! the time it gives, and come back to it at the next start, where they are verified again.
//!
//! Two modes ([`DirMode`]). Microdescriptors are C tor's default and the default on the
//! public network. The full-descriptor mode (`UseMicrodescriptors 0`) is the default on a
//! testing network: a descriptor carries the complete exit policy, so exits of a private
//! network (which accept only 127.0.0.0/8, a policy no microdescriptor summary can express:
//! it reads `reject 1-65535`) are usable. On the public network the fallback directories of
//! C tor 0.4.9 are asked along with the authorities.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use onion_circuit::channel::PeerIds;
use onion_circuit::circuit::{HandshakeKind, HopTarget};
use onion_circuit::Instant;
use onion_client::dir::{
    self, Authority, Cached, DirConfig, DirEvent, DirMachine, DocKind, Failure, Fallback, Request,
};
use onion_crypto::keys::NtorOnionKey;
use onion_dir::select::path::{PathConfig, PathSelector};
use onion_dir::{RsaIdentity, Timestamp};
use rand_core::OsRng;
use std::net::SocketAddr;

use super::authority::DirAuthority;
use super::cache::Cache;
use super::client::{Client, Target};
use super::http;
use super::path;

/// How long one directory request may take (circuit, stream and response), at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// The mode of the directory machine.
    pub fn client(self) -> dir::DirMode {
        match self {
            DirMode::Micro => dir::DirMode::Micro,
            DirMode::Full => dir::DirMode::Full,
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
}

/// A verified directory: the directory machine's owned directory, shared, and figures for
/// reports. It dereferences to [`onion_client::dir::Directory`] (`dir.view`, the consensus
/// parameters, times and guard list: nothing re-parses the consensus).
#[derive(Clone)]
pub struct Directory {
    inner: Arc<dir::Directory>,
    /// How it was obtained, for reports.
    pub summary: Summary,
}

impl Deref for Directory {
    type Target = dir::Directory;
    fn deref(&self) -> &dir::Directory {
        &self.inner
    }
}

/// The shortest wait before the next directory refresh, and the wait after a failed one:
/// a directory whose refresh time has already passed (one reused late in its life, or one the
/// network has not replaced yet) is not asked for again in a loop.
pub const REFRESH_RETRY: Duration = Duration::from_secs(10);

impl Directory {
    /// Wrap a directory of the machine.
    pub fn new(inner: Arc<dir::Directory>) -> Directory {
        let summary = Summary {
            valid_after: inner.valid_after.to_string(),
        };
        Directory { inner, summary }
    }

    /// How long from now until this directory should be replaced: a random time in its
    /// consensus's refresh window (dir-spec §5.1, [`dir::Directory::refresh_delay`]), zero if
    /// that time has passed (a consensus reused from the data directory late in its life).
    pub fn refresh_delay(&self) -> Duration {
        self.inner
            .refresh_delay(Timestamp::from(SystemTime::now()), &mut OsRng)
    }
}

/// Figures of one bootstrap (for progress and refresh decisions).
#[derive(Debug, Clone)]
pub struct Summary {
    /// The consensus' valid-after time.
    pub valid_after: String,
}

/// Progress reporting on stderr ("bootstrap NN%: ...").
pub fn progress(pct: u8, what: &str) {
    eprintln!("onion: bootstrap {pct:>3}%: {what}");
}

/// Where a bootstrap takes its documents from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// The data directory's documents while the consensus is live, else the authorities
    /// (and, on the public network, the fallback directories): start-up.
    CacheOrAuthorities,
    /// A refresh of `current`, offering its consensus for a diff and reusing the descriptors
    /// it holds that the new consensus still names (dir-spec §5.2): from directory guards
    /// first (`guard`; dir-spec §5, guard-spec §4.6), then the authorities.
    Refresh {
        /// The directory being replaced.
        current: &'a Directory,
        /// Ask directory guards before the authorities.
        guard: bool,
    },
}

/// Bootstrap from `auths` in `mode` (or refresh, see [`Source`]) before `deadline`, and
/// store what was fetched in `cache`. Everything is verified against the authorities' keys
/// whatever its source.
pub fn bootstrap(
    client: &mut Client,
    auths: &[DirAuthority],
    mode: DirMode,
    cache: Option<&Cache>,
    from: Source<'_>,
    deadline: Instant,
) -> Result<Directory, String> {
    let with_v3: Vec<&DirAuthority> = auths.iter().filter(|a| a.v3ident.is_some()).collect();
    let authorities: Vec<Authority> = with_v3
        .iter()
        .filter_map(|a| {
            Some(Authority {
                name: a.name(),
                rsa_id: RsaIdentity(a.fingerprint),
                v3ident: RsaIdentity(a.v3ident?),
                or_addr: a.or_addr(),
            })
        })
        .collect();
    if !authorities.iter().any(|a| a.or_addr.is_some()) {
        return Err("no authority with an ORPort (`orport=`) in the list".into());
    }
    let fallbacks = match path::is_testing_network(auths) {
        true => Vec::new(),
        false => dir::c_tor_fallbacks(),
    };
    let mut cfg = DirConfig::new(authorities, fallbacks.clone(), mode.client());
    cfg.request_timeout = REQUEST_TIMEOUT;
    cfg.refresh_from_guards = matches!(from, Source::Refresh { guard: true, .. });
    let wall = || Timestamp::from(SystemTime::now());
    let mut rng = OsRng;
    let now = client.clock.now();
    let mut machine = match from {
        Source::CacheOrAuthorities => {
            DirMachine::new(cfg, cached(cache, mode), now, wall(), &mut rng)
        }
        Source::Refresh { current, .. } => {
            DirMachine::refreshing(cfg, current.inner.clone(), now, wall(), &mut rng)
        }
    }
    .map_err(|e| e.to_string())?;
    let via = match from {
        Source::Refresh { current, .. } => Some(current),
        Source::CacheOrAuthorities => None,
    };
    let mut open: Option<(dir::Source, DirCircuit)> = None;
    // Whether any directory answered: if none did, the error says so first.
    let mut reached = false;
    let result = 'drive: loop {
        while let Some(ev) = machine.poll_event() {
            match ev {
                DirEvent::Progress { percent, what } => progress(percent, &what),
                DirEvent::Persist {
                    kind,
                    text,
                    keep_until,
                } => store(cache, mode, kind, &text, keep_until),
                DirEvent::Directory(d) => break 'drive Ok(Directory::new(d)),
                DirEvent::Failed(e) => break 'drive Err(e.to_string()),
            }
        }
        let Some(req) = machine.poll_request() else {
            break Err("the directories have no consensus newer than the one held".into());
        };
        if client.clock.now() >= deadline {
            break Err("directory bootstrap timed out".into());
        }
        let sources = Sources {
            auths: &with_v3,
            fallbacks: &fallbacks,
            via,
        };
        let answer = carry(client, &mut open, &req, &sources, deadline);
        reached |= !matches!(answer, Err(Failure::Network(_) | Failure::Timeout));
        if answer.is_err() {
            if let Some((_, mut c)) = open.take() {
                c.close(client);
            }
        }
        machine.handle_response(req.id, client.clock.now(), wall(), answer, &mut rng);
    };
    if let Some((_, mut c)) = open.take() {
        c.close(client);
    }
    let dir = result.map_err(|e| match reached {
        true => e,
        false => format!("no directory authority reachable ({e})"),
    })?;
    if dir.view.is_empty() {
        return Err("no relay with a valid descriptor in the consensus".into());
    }
    Ok(dir)
}

/// The documents of `mode` the data directory holds (each verified again by the machine).
fn cached(cache: Option<&Cache>, mode: DirMode) -> Cached {
    let Some(c) = cache else {
        return Cached::default();
    };
    let now = SystemTime::now();
    let [cons, certs, descs] = mode.files();
    Cached {
        consensus: c.get_live(cons, now),
        certificates: c.get_live(certs, now),
        descriptors: c.get_live(descs, now),
    }
}

/// Keep a document the machine handed over until `until`.
fn store(cache: Option<&Cache>, mode: DirMode, kind: DocKind, text: &str, until: Timestamp) {
    let Some(c) = cache else { return };
    let [cons, certs, descs] = mode.files();
    let name = match kind {
        DocKind::Consensus => cons,
        DocKind::Certificates => certs,
        DocKind::Microdescs | DocKind::ServerDescs => descs,
    };
    if let Err(e) = c.put(name, text, SystemTime::from(until)) {
        eprintln!("onion: warning: cannot write the data directory: {e}");
    }
}

/// What the machine's [`dir::Source`] indices name.
struct Sources<'a> {
    auths: &'a [&'a DirAuthority],
    fallbacks: &'a [Fallback],
    via: Option<&'a Directory>,
}

/// Carry `req` over a BEGIN_DIR stream of a one-hop circuit to its source (the open one if it
/// goes there, else a new one), and decode the answer.
fn carry(
    client: &mut Client,
    open: &mut Option<(dir::Source, DirCircuit)>,
    req: &Request,
    sources: &Sources<'_>,
    deadline: Instant,
) -> Result<Vec<u8>, Failure> {
    let attempt = client
        .clock
        .now()
        .checked_add(REQUEST_TIMEOUT)
        .map_or(deadline, |t| t.min(deadline));
    if open.as_ref().map(|(s, _)| *s) != Some(req.source) {
        if let Some((_, mut c)) = open.take() {
            c.close(client);
        }
        let circ = match req.source {
            dir::Source::Authority(i) => match sources.auths.get(i) {
                Some(a) => open_authority_circuit(client, a, attempt),
                None => Err("no such authority".into()),
            },
            dir::Source::Fallback(i) => match sources.fallbacks.get(i) {
                Some(f) => open_fallback_circuit(client, f, attempt),
                None => Err("no such fallback".into()),
            },
            dir::Source::DirGuard => match sources.via {
                Some(d) => open_dir_guard_circuit(client, d, attempt),
                None => Err("no directory guard without a directory".into()),
            },
        }
        .map_err(Failure::Network)?;
        *open = Some((req.source, circ));
    }
    let Some((_, DirCircuit { circ, name })) = open.as_ref() else {
        return Err(Failure::Network("no directory circuit".into()));
    };
    let circ = *circ;
    let ctx = |e: String| format!("directory request {} to {name}: {e}", req.path);
    let stream = client
        .begin(circ, Target::Dir, attempt)
        .map_err(|e| Failure::Network(ctx(e.into())))?;
    let raw = client
        .fetch(
            circ,
            stream,
            &req.to_http(),
            req.max_body.saturating_add(http::MAX_HEAD),
            attempt,
            |_| {},
        )
        .map_err(|e| match e.contains("response larger than") {
            true => Failure::TooLarge,
            false => Failure::Network(ctx(e)),
        })?;
    dir::decode_response(&raw, req.max_body)
}

/// A one-hop directory circuit, and the directory's name for messages.
struct DirCircuit {
    circ: usize,
    name: String,
}

impl DirCircuit {
    fn close(&mut self, client: &mut Client) {
        client.destroy(self.circ);
    }
}

/// A one-hop CREATE_FAST circuit to an authority's ORPort.
fn open_authority_circuit(
    client: &mut Client,
    a: &DirAuthority,
    deadline: Instant,
) -> Result<DirCircuit, String> {
    let addr = a.or_addr().ok_or("authority without an ORPort")?;
    progress(
        5,
        &format!("connecting to authority {} at {addr}", a.name()),
    );
    let circ = one_hop(client, a.fingerprint, addr, deadline)
        .map_err(|e| format!("authority {}: {e}", a.name()))?;
    progress(
        10,
        &format!("directory circuit to {} built (CREATE_FAST)", a.name()),
    );
    Ok(DirCircuit {
        circ,
        name: a.name(),
    })
}

/// A one-hop CREATE_FAST circuit to a fallback directory's ORPort.
fn open_fallback_circuit(
    client: &mut Client,
    f: &Fallback,
    deadline: Instant,
) -> Result<DirCircuit, String> {
    let addr = SocketAddr::V4(f.or_addr);
    let name = f.rsa_id.to_string();
    progress(
        5,
        &format!("connecting to fallback directory {name} at {addr}"),
    );
    let circ =
        one_hop(client, f.rsa_id.0, addr, deadline).map_err(|e| format!("fallback {name}: {e}"))?;
    progress(
        10,
        &format!("directory circuit to fallback {name} built (CREATE_FAST)"),
    );
    Ok(DirCircuit { circ, name })
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
    Ok(DirCircuit {
        circ,
        name: rec.nickname.clone(),
    })
}

/// A channel to `addr` that must prove the RSA identity `rsa`, and a CREATE_FAST circuit on
/// it (no onion key needed: the TLS channel already authenticated the relay).
fn one_hop(
    client: &mut Client,
    rsa: [u8; 20],
    addr: SocketAddr,
    deadline: Instant,
) -> Result<usize, String> {
    let rsa = onion_crypto::RsaIdentity(rsa);
    let link = client.connect(addr, PeerIds::rsa_only(rsa), deadline)?;
    let target = HopTarget {
        rsa_id: rsa,
        ed_id: None,
        ntor_key: NtorOnionKey([0; 32]),
        addrs: vec![addr],
        ntor_v3: false,
    };
    client.create(link, &target, HandshakeKind::CreateFast, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::authority;

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
        assert_eq!(DirMode::Micro.client(), dir::DirMode::Micro);
        assert_eq!(DirMode::Full.files()[0], "cached-consensus");
    }
}
