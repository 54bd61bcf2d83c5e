//! Guards and paths: every path the client builds, and what its circuit's fate teaches.
//!
//! [`Guards`] puts together, sans-IO:
//!
//! * onion-dir's guard manager ([`GuardMgr`], guard-spec §4): the sampled, confirmed and
//!   primary guards, their retry schedules, and the circuits waiting for a better guard
//!   (§4.9);
//! * the vanguards-lite layer-2 set ([`Layer2Guards`], Tor proposal 333) for the second hop of
//!   onion-service circuits;
//! * path selection ([`PathSelector`], path-spec §2.2) for exit, internal, onion-service and
//!   one-hop directory circuits;
//! * a short memory of relays that failed an extension ([`AVOID_FAILED_FOR`]), which the next
//!   paths leave out.
//!
//! No file, clock or global random number generator is touched: the wall-clock time
//! ([`Timestamp`]: guard-spec dates are wall-clock dates that outlive the process) and a
//! `&mut impl CryptoRngCore` are parameters, and the persistent state goes in and out as text
//! (guard-spec A.5 `Guard` lines, the lines C tor keeps in its `state` file).
//!
//! # Driving it
//!
//! Feed it each new [`Directory`], ask it for a path, build the circuit through the path's
//! [`HopTarget`]s, and report the circuit's fate with the path's [`Ticket`]. After any call,
//! drain [`Guards::poll_event`] and [`Guards::poll_persist`]; call [`Guards::handle_timeout`]
//! at [`Guards::poll_timeout`]. Here on a synthetic network:
//!
//! ```
//! use onion_client::dir::{DirMode, Directory};
//! use onion_client::guards::{Blame, Built, Guards, GuardsConfig, GuardsEvent, LastHop};
//! use onion_client::Timestamp;
//! use onion_dir::netview::NetView;
//! use onion_dir::policy::ExitTarget;
//! use onion_dir::select::path::{ExitRequest, PathOptions};
//! use onion_dir::select::vanguards::HsCircuitKind;
//!
//! # fn main() -> Result<(), onion_client::Error> {
//! # let net = onion_dir::synth::network(200, 1);
//! # let cons = onion_dir::consensus::parse(&net.consensus).unwrap().assume_verified();
//! # let mds = onion_dir::microdesc::parse_many(&net.microdescs).unwrap();
//! # let view = NetView::from_microdescs(&cons, &mds).unwrap();
//! # let mut config = GuardsConfig::default();
//! # config.path.enforce_distinct_subnets = false; // the synthetic network crowds few /16s
//! let dir: Directory = // from the directory machine (DirEvent::Directory)
//! #   Directory::from_consensus(&cons, view, DirMode::Micro, 200, String::new());
//! let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(7);
//! let wall = Timestamp(1_795_418_410); // the embedder's wall clock
//! let saved: Option<String> = None; // what an earlier run stored
//! let (mut guards, bad_state) = Guards::new(saved.as_deref(), config);
//! assert!(bad_state.is_none()); // else: report it; the guards start afresh
//! guards.on_directory(&dir, wall, &mut rng);
//!
//! // An exit circuit for port 443.
//! let request = ExitRequest::Target(ExitTarget::Port(443));
//! let path = guards.exit_path(&dir, request, 3, &PathOptions::default(), wall, &mut rng)?;
//! // ... open a channel to path.hops[0], CREATE2, EXTEND2 to path.hops[1], path.hops[2] ...
//! match guards.built(path.ticket, wall, &mut rng)? {
//!     Built::Usable => { /* attach streams */ }
//!     Built::Wait => { /* keep it unused until GuardsEvent::Usable or ::Abandon names it */ }
//! }
//! // ... later the circuit closes:
//! guards.closed(path.ticket, wall);
//!
//! // An onion-service circuit to an HSDir, through a layer-2 vanguard (proposal 333).
//! let hsdir = dir.view.relay(onion_dir::netview::RelayIdx(5)).unwrap().rsa_id;
//! let shape = HsCircuitKind::ClientHsDir.shape();
//! let opts = PathOptions { need_stable: true, ..PathOptions::default() };
//! let path = guards.vanguard_path(&dir, shape, LastHop::Relay(hsdir), &opts, wall, &mut rng)?;
//! assert_eq!(path.hops.len(), 4);
//! // The extension to the third hop failed: that relay is avoided for a while.
//! guards.failed(path.ticket, Blame::Hop(2), wall);
//!
//! while let Some(event) = guards.poll_event() {
//!     match event {
//!         GuardsEvent::Usable(_ticket) => { /* its circuit may carry streams now */ }
//!         GuardsEvent::Abandon(ticket) => { /* close its circuit */ guards.closed(ticket, wall) }
//!     }
//! }
//! if let Some(text) = guards.poll_persist() {
//!     // store `text`; give it to Guards::new at the next start
//!     assert!(text.starts_with("Guard in=default "));
//! }
//! if let Some(at) = guards.poll_timeout() {
//!     // at wall-clock `at`:
//!     guards.handle_timeout(at);
//! }
//! # Ok(()) }
//! ```
//!
//! Every path-returning call hands out a [`Ticket`]; each ticket must end with
//! [`Guards::failed`] or [`Guards::closed`] (a built circuit that is later closed), so that the
//! guard manager stops counting the circuit. At most [`MAX_TICKETS`] tickets are open at once.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use onion_circuit::circuit::HopTarget;
use onion_crypto::keys::NtorOnionKey;
use onion_dir::netview::{RelayIdx, RelayRecord};
use onion_dir::select::guard::state::GuardStateError;
use onion_dir::select::guard::{
    GuardCircId, GuardCircState, GuardEvent, GuardMgr, GuardParams, GuardPick, GuardUsage,
    Reachable, RetrySchedule,
};
use onion_dir::select::path::{Exclusions, ExitRequest, PathConfig, PathOptions, PathSelector};
use onion_dir::select::vanguards::{
    self, Layer2Guard, Layer2Guards, VanguardParams, VanguardShape,
};
use onion_dir::{RsaIdentity, Timestamp};
use rand_core::CryptoRngCore;

use crate::dir::{Authority, Directory};
use crate::error::Error;

#[cfg(test)]
mod tests;

/// The most paths whose circuit's fate is not yet reported ([`Guards::failed`],
/// [`Guards::closed`]). Past it, a new path is refused with [`Error::Resource`]: the guard
/// manager compares every waiting circuit with every other (guard-spec §4.9), so the set must
/// stay small, and a client that never reports is leaking circuits anyway.
pub const MAX_TICKETS: usize = 1024;

/// How long a relay that failed an extension (or refused a circuit beyond the first hop) is
/// left out of new paths, in seconds. C tor retries the same path choice freely; ten minutes
/// keeps a relay that is down from spoiling every retry of a request, while a relay that
/// merely hiccuped is usable again soon (a consensus lasts an hour).
pub const AVOID_FAILED_FOR: u64 = 600;

/// The most relays avoided at once for failures; when full, the entry that expires first
/// makes room. A bound on memory, and on how much of the network failures can rule out (a
/// failing local link must not shrink the choice of relays to a few).
pub const MAX_AVOIDED: usize = 32;

/// How many times a path is drawn again when its guard would not be a primary guard
/// although a primary guard could serve another path (an exit in a primary guard's family,
/// say): a circuit through a non-primary guard may have to wait (guard-spec §4.9).
const REPICKS: usize = 4;

/// How the client chooses its paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardsConfig {
    /// Path-selection rules ([`path_config`] gives a network's).
    pub path: PathConfig,
    /// Seconds a relay that failed an extension is avoided ([`AVOID_FAILED_FOR`]).
    pub avoid_failed_for: u64,
}

impl Default for GuardsConfig {
    fn default() -> Self {
        GuardsConfig {
            path: PathConfig::default(),
            avoid_failed_for: AVOID_FAILED_FOR,
        }
    }
}

/// Whether the authorities describe a testing network (C tor's `TestingTorNetwork`): every
/// authority with a known address is on a loopback or private address (RFC 1918, IPv4
/// link-local, IPv6 unique-local fc00::/7), and at least one address is known. The public
/// network's authorities are all on public addresses.
pub fn is_testing_network(authorities: &[Authority]) -> bool {
    let mut addrs = authorities.iter().filter_map(|a| a.or_addr).peekable();
    addrs.peek().is_some() && addrs.all(|a| is_local(a.ip()))
}

/// Loopback, private or link-local.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The path-selection rules for the network of these authorities: on a testing network
/// ([`is_testing_network`]) two hops may share an IPv4 /16 or IPv6 /32, as C tor turns
/// `EnforceDistinctSubnets` off under `TestingTorNetwork` (all its relays are on one host);
/// otherwise path-spec §2.2's defaults.
pub fn path_config(authorities: &[Authority]) -> PathConfig {
    PathConfig {
        enforce_distinct_subnets: !is_testing_network(authorities),
        ..PathConfig::default()
    }
}

/// What a circuit needs of a relay from its directory record (tor-spec §5.1: identities, the
/// ntor onion key, the ORPort addresses, IPv4 first). `ntor_v3` is left off: the caller turns
/// it on for a hop it wants to negotiate a circuit extension with (congestion control,
/// proposal 324), after checking the relay's `Relay=4` with [`Directory::protocols`].
///
/// Errors with [`Error::NoPath`] for a relay without an ntor key or without any address.
pub fn hop_target(r: &RelayRecord) -> Result<HopTarget, Error> {
    let ntor = r
        .ntor_onion_key
        .ok_or_else(|| Error::NoPath(format!("relay {} has no ntor onion key", r.rsa_id)))?;
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(2);
    if let Some(a) = r.ipv4 {
        addrs.push(SocketAddr::V4(a));
    }
    if let Some(a) = r.ipv6 {
        addrs.push(SocketAddr::V6(a));
    }
    if addrs.is_empty() {
        return Err(Error::NoPath(format!("relay {} has no address", r.rsa_id)));
    }
    Ok(HopTarget {
        rsa_id: r.rsa_id,
        ed_id: r.ed_id.map(onion_crypto::Ed25519Identity),
        ntor_key: NtorOnionKey(ntor),
        addrs,
        ntor_v3: false,
    })
}

/// A handle for one path's circuit, to report its fate with. Opaque; unique within one
/// [`Guards`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// A path chosen for a circuit.
#[derive(Clone, Debug)]
pub struct PlannedPath {
    /// Report the circuit's fate with it.
    pub ticket: Ticket,
    /// The hops, guard first: open (or share) a channel to `hops[0]`, which must prove its
    /// identities, then extend to each next hop. Each has `ntor_v3` off ([`hop_target`]):
    /// the client turns it on where it wants the ntor-v3 handshake.
    pub hops: Vec<HopTarget>,
    /// The hops' nicknames (a hop the directory does not list is named by its identity), for
    /// messages.
    pub names: Vec<String>,
    /// Whether the circuit may carry traffic as soon as it is built: its guard is a primary
    /// guard, or no primary guard could have served it (guard-spec §4.6
    /// `usable_on_completion`). When false, [`Guards::built`] may answer [`Built::Wait`].
    pub usable_on_completion: bool,
}

/// The last hop of an internal or onion-service path.
#[derive(Clone, Debug)]
pub enum LastHop {
    /// A random relay (a pre-built circuit; a client's own rendezvous point).
    Random,
    /// A relay of the directory, by identity (an HSDir; a rendezvous or introduction point
    /// the directory lists).
    Relay(RsaIdentity),
    /// A relay given from elsewhere (an introduction point or rendezvous point named by an
    /// onion-service descriptor or an INTRODUCE2 cell), which the directory may not list.
    /// If the directory lists its identity, that relay is not used for another hop.
    External(HopTarget),
}

/// What [`Guards::built`] says about a built circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Built {
    /// Use it now.
    Usable,
    /// Its guard is not a primary guard and a better guard may still work (guard-spec §4.9):
    /// keep it unused until [`GuardsEvent::Usable`] or [`GuardsEvent::Abandon`] names its
    /// ticket.
    Wait,
}

/// Who is to blame for a failed build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The guard: no channel to it, or no CREATED2 (guard-spec §4.7). The guard manager marks
    /// it unreachable and retries it on its schedule (§4.5).
    Guard,
    /// The extension to `hops[i]` (i ≥ 1) failed: that relay is avoided by the next paths for
    /// [`GuardsConfig::avoid_failed_for`] seconds. `Hop(0)` is [`Blame::Guard`].
    Hop(usize),
    /// Nothing to do with the relays (a timeout of ours, the caller gave up): the guard
    /// manager forgets the circuit, blaming nobody.
    Other,
}

/// Something the client must act on (drain with [`Guards::poll_event`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuardsEvent {
    /// A circuit that was waiting for a better guard may now carry traffic (guard-spec §4.9:
    /// every better guard turned out unreachable).
    Usable(Ticket),
    /// A circuit waited longer than `NONPRIMARY_GUARD_IDLE_TIMEOUT` for a better guard
    /// (guard-spec §4.9): close it, then report [`Guards::closed`].
    Abandon(Ticket),
}

/// Where an open ticket's circuit stands.
#[derive(Clone, Debug)]
struct Open {
    /// The guard manager's circuit, while it tracks it.
    circ: Option<GuardCircId>,
    /// The hops' identities, to blame one of them.
    hops: Vec<RsaIdentity>,
    /// No primary guard could have served this path: usable once built whatever the guard
    /// manager thinks (its §4.9 check does not look at the circuit's restrictions for the
    /// primary guards).
    nothing_better: bool,
    /// [`Guards::built`] was called.
    built: bool,
    /// When its guard was chosen (Unix seconds): the guard manager's start of its
    /// `usable_if_no_better_guard` state.
    picked_at: u64,
    /// When it was built (Unix seconds): the start of `waiting_for_better_guard`.
    built_at: u64,
}

/// The guard manager, the layer-2 vanguards and the path rules of one client. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Guards {
    mgr: GuardMgr,
    /// In memory only: a new process draws a new set (proposal 333 §1).
    l2: Layer2Guards,
    config: GuardsConfig,
    /// Relays that failed an extension, and until when they are avoided (at most
    /// [`MAX_AVOIDED`]).
    avoided: Vec<(RsaIdentity, u64)>,
    open: HashMap<Ticket, Open>,
    next_ticket: u64,
    /// Bounded by the open tickets: at most one event per ticket is queued.
    events: VecDeque<GuardsEvent>,
    /// The state text last handed out (or given at start).
    persisted: String,
    /// Something may have changed the persistent state since.
    dirty: bool,
    /// The latest time given to [`Guards::handle_timeout`]: deadlines up to it are handled.
    handled: Option<u64>,
    /// A path is being drawn again without the avoided relays ([`Guards::relaxing`]).
    relaxed: bool,
}

impl Guards {
    /// Guards starting from `state`, the text a previous run handed out through
    /// [`Guards::poll_persist`] (or the `Guard` lines of a C tor `state` file), or from
    /// nothing. A state that does not parse is dropped for a fresh sample (safer than no
    /// client), and its error returned beside the guards for the embedder to report; the
    /// bad text is then replaced at the next [`Guards::poll_persist`].
    ///
    /// Nothing is usable before the first [`Guards::on_directory`].
    pub fn new(state: Option<&str>, config: GuardsConfig) -> (Guards, Option<GuardStateError>) {
        let params = GuardParams::default();
        let (mgr, err, persisted) = match state {
            None => (GuardMgr::new(params), None, String::new()),
            Some(text) => match GuardMgr::from_state_str(params.clone(), text) {
                Ok(mgr) => (mgr, None, text.to_owned()),
                Err(e) => (GuardMgr::new(params), Some(e), String::new()),
            },
        };
        let guards = Guards {
            mgr,
            l2: Layer2Guards::default(),
            config,
            avoided: Vec::new(),
            open: HashMap::new(),
            next_ticket: 0,
            events: VecDeque::new(),
            persisted,
            dirty: err.is_some(),
            handled: None,
            relaxed: false,
        };
        (guards, err)
    }

    /// The configuration.
    pub fn config(&self) -> &GuardsConfig {
        &self.config
    }

    /// The primary guards (guard-spec §4.4), first first.
    pub fn primary(&self) -> &[RsaIdentity] {
        self.mgr.primary()
    }

    /// The layer-2 vanguards (proposal 333), in the order they joined.
    pub fn layer2(&self) -> &[Layer2Guard] {
        self.l2.guards()
    }

    /// The guard manager, for reports.
    pub fn manager(&self) -> &GuardMgr {
        &self.mgr
    }

    /// The primary guards whose descriptor `dir` lacks: fetch them before building circuits
    /// (guard-spec §4.12), since a guard without a descriptor cannot carry one and the guard
    /// manager would pass over it for a lower-priority guard.
    pub fn missing_descriptors(&self, dir: &Directory) -> Vec<RsaIdentity> {
        self.mgr.missing_descriptors(&dir.view)
    }

    /// Forget the layer-2 vanguards; the next onion-service path draws a new set. C tor does
    /// so on `SIGNAL NEWNYM`, so that a new identity shares no second hop with the old one.
    pub fn forget_layer2(&mut self) {
        self.l2.clear();
    }

    /// The relays avoided after failures at `now`, with when each is usable again.
    pub fn avoided(&self, now: Timestamp) -> impl Iterator<Item = (RsaIdentity, Timestamp)> + '_ {
        self.avoided
            .iter()
            .filter(move |(_, until)| *until > now.0)
            .map(|(id, until)| (*id, Timestamp(*until)))
    }

    /// guard-spec §4.10: a new directory. Its consensus gives the guard parameters
    /// (param-spec §11) and which guards are listed, whether or not their descriptor is held
    /// (§4.12); new guards are sampled from its relays with descriptors. The layer-2
    /// vanguards follow it too: parameters from the consensus, members that expired or left
    /// replaced (proposal 333).
    pub fn on_directory(&mut self, dir: &Directory, now: Timestamp, rng: &mut impl CryptoRngCore) {
        let params = GuardParams::default().with_consensus_params(dir.param_entries());
        self.mgr.set_params(params);
        let listed: std::collections::HashSet<RsaIdentity> =
            dir.listed_guards.iter().copied().collect();
        self.mgr.update_listed_ids(now, &dir.view, &listed, rng);
        self.l2
            .set_params(VanguardParams::from_consensus_params(dir.param_entries()));
        self.update_l2(dir, now, rng);
        self.drain_mgr();
        self.dirty = true;
    }

    /// [`Guards::exit_path`], with the avoided relays unless relaxed.
    fn exit_path_inner(
        &mut self,
        dir: &Directory,
        request: ExitRequest,
        len: usize,
        opts: &PathOptions<'_>,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PlannedPath, Error> {
        self.check_room()?;
        let sel = PathSelector::with_config(&dir.view, self.config.path.clone());
        let named = match request {
            ExitRequest::Named(idx, _) => Some(idx),
            _ => None,
        };
        let avoided = self.avoided_indices(dir, now, named);
        let avoid = opts.exclude.with(avoided.iter().copied());
        let hop_opts = opts.excluding(&avoid);
        let mut tries = 0;
        loop {
            tries += 1;
            let (exit, target) = match request {
                ExitRequest::Named(idx, t) => (idx, t),
                ExitRequest::Target(t) => (
                    sel.choose_exit(Some(t), &hop_opts, &[], rng)
                        .map_err(no_path)?,
                    Some(t),
                ),
                ExitRequest::Any => (
                    sel.choose_exit(None, &hop_opts, &[], rng)
                        .map_err(no_path)?,
                    None,
                ),
            };
            let redraw = !matches!(request, ExitRequest::Named(..)) && tries < REPICKS;
            let Some((pick, nothing_better)) =
                self.guard(&sel, GuardUsage::Data, &[exit], opts, now, rng, redraw)?
            else {
                continue;
            };
            let excl = except(opts.exclude, &avoided, pick.idx);
            let o = opts.excluding(&excl);
            let path = sel
                .exit_path(
                    ExitRequest::Named(exit, target),
                    len,
                    Some(pick.idx),
                    &o,
                    rng,
                )
                .map(|p| p.hops().to_vec())
                .map_err(no_path);
            return self.finish(dir, path, None, pick, nothing_better, now);
        }
    }

    /// [`Guards::internal_path`], with the avoided relays unless relaxed.
    fn internal_path_inner(
        &mut self,
        dir: &Directory,
        len: usize,
        last: LastHop,
        opts: &PathOptions<'_>,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PlannedPath, Error> {
        self.check_room()?;
        if len == 0 || len > onion_dir::select::path::MAX_PATH_LEN {
            return Err(Error::NoPath(format!("internal path of {len} hops")));
        }
        let sel = PathSelector::with_config(&dir.view, self.config.path.clone());
        let (target, external) = self.resolve_last(dir, last)?;
        if target.is_some() && len < 2 {
            return Err(Error::NoPath(
                "a one-hop path is its guard; it cannot end at a chosen relay".into(),
            ));
        }
        if external.is_some() && len < 2 {
            return Err(Error::NoPath(
                "a path to a relay given from elsewhere needs a guard before it".into(),
            ));
        }
        let external_idx = external
            .as_ref()
            .and_then(|h| dir.view.by_rsa_id(&h.rsa_id));
        let mut avoided = self.avoided_indices(dir, now, target);
        // An external last hop the directory lists is not used for another hop.
        avoided.extend(external_idx);
        let avoid = opts.exclude.with(avoided.iter().copied());
        let hop_opts = opts.excluding(&avoid);
        // An external last hop is appended to a path one hop shorter.
        let drawn_len = if external.is_some() { len - 1 } else { len };
        let mut tries = 0;
        loop {
            tries += 1;
            // The last hop first (a middle if none is given), so that the guard can avoid it.
            let end = match target {
                Some(t) => t,
                None => sel.choose_middle(&hop_opts, &[], rng).map_err(no_path)?,
            };
            // A fixed target cannot be drawn again: take what the manager gives for it.
            let redraw = target.is_none() && tries < REPICKS;
            // The guard is not the last hop, nor in its family or subnet (path-spec §2.2),
            // the external last hop included.
            let mut ends = vec![end];
            ends.extend(external_idx);
            let Some((pick, nothing_better)) =
                self.guard(&sel, GuardUsage::Data, &ends, opts, now, rng, redraw)?
            else {
                continue;
            };
            let excl = except(opts.exclude, &avoided, pick.idx);
            let o = opts.excluding(&excl);
            let path = if drawn_len == 1 {
                // The guard alone (then the external hop, if any): the random last hop only
                // served to draw the guard.
                Ok(vec![pick.idx])
            } else {
                sel.internal_path(drawn_len, Some(end), Some(pick.idx), &o, rng)
                    .map(|p| p.hops().to_vec())
                    .map_err(no_path)
            };
            return self.finish(dir, path, external, pick, nothing_better, now);
        }
    }

    /// [`Guards::vanguard_path`], with the avoided relays unless relaxed.
    fn vanguard_path_inner(
        &mut self,
        dir: &Directory,
        shape: VanguardShape,
        last: LastHop,
        opts: &PathOptions<'_>,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PlannedPath, Error> {
        if !self.l2.params().enabled {
            return self.internal_path_inner(dir, shape.path_len(), last, opts, now, rng);
        }
        self.check_room()?;
        // Expire on time even when no new directory came since the last update.
        self.update_l2(dir, now, rng);
        let sel = PathSelector::with_config(&dir.view, self.config.path.clone());
        let (target, external) = self.resolve_last(dir, last)?;
        let mut avoided = self.avoided_indices(dir, now, target);
        avoided.extend(
            external
                .as_ref()
                .and_then(|h| dir.view.by_rsa_id(&h.rsa_id)),
        );
        // No family or subnet restriction from the last hop (so nothing to draw again).
        let (pick, nothing_better) = self
            .guard(&sel, GuardUsage::Data, &[], opts, now, rng, false)?
            .ok_or_else(|| Error::NoPath("no guard".into()))?;
        let excl = except(opts.exclude, &avoided, pick.idx);
        let o = opts.excluding(&excl);
        // With an external last hop a random one is drawn in its place, then replaced: the
        // hops before it keep the shape's rules. `G -> L2 -> G` would ask L2 to extend back
        // to its predecessor, which relays refuse.
        let path = if shape == VanguardShape::Short
            && external.as_ref().is_some_and(|h| h.rsa_id == pick.guard)
        {
            Err(Error::NoPath(format!(
                "guard {} is the last hop of a 3-hop circuit",
                pick.guard
            )))
        } else {
            vanguards::vanguard_path(&sel, &self.l2, shape, target, pick.idx, &o, rng)
                .map_err(|e| Error::NoPath(e.to_string()))
                .map(|p| {
                    let hops = p.hops();
                    match external {
                        Some(_) => hops[..hops.len().saturating_sub(1)].to_vec(),
                        None => hops.to_vec(),
                    }
                })
        };
        self.finish(dir, path, external, pick, nothing_better, now)
    }

    /// An exit path of `len` hops (3 for C tor's general circuits; 2..=8), in path-spec §2.2
    /// order: the exit for `request`, then the guard from the guard manager (guard-spec §4.6,
    /// not in the exit's family or subnet), then the middles. `opts.exclude` (indices into
    /// `dir.view`) holds for every hop. Relays avoided after failures ([`Blame::Hop`],
    /// [`Guards::avoid`]) are left out of every hop but the guard (the guard manager judges
    /// guards) and a named exit (the caller's choice), as long as a path exists without
    /// them: avoiding is a preference, and a small network must not run out of paths.
    ///
    /// Errors: [`Error::NoPath`] when no relay fits a hop, [`Error::Resource`] when
    /// [`MAX_TICKETS`] tickets are open.
    pub fn exit_path(
        &mut self,
        dir: &Directory,
        request: ExitRequest,
        len: usize,
        opts: &PathOptions<'_>,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PlannedPath, Error> {
        self.relaxing(|g| g.exit_path_inner(dir, request, len, opts, now, rng))
    }

    /// An internal path of `len` hops (1..=8) ending at `last` (path-spec §2.2.2: for
    /// onion-service circuits without vanguards, or pre-built internal circuits), its guard
    /// from the guard manager and not the last hop nor in its family or subnet. Exclusions as
    /// in [`Guards::exit_path`]; a [`LastHop::External`] relay the directory lists is used
    /// for no other hop.
    ///
    /// `len` counts every hop, the last included: `len == 1` is the guard alone (with
    /// [`LastHop::Random`] only), and a path to a given relay has at least 2 hops.
    pub fn internal_path(
        &mut self,
        dir: &Directory,
        len: usize,
        last: LastHop,
        opts: &PathOptions<'_>,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PlannedPath, Error> {
        self.relaxing(|g| g.internal_path_inner(dir, len, last.clone(), opts, now, rng))
    }

    /// An onion-service path of `shape` (proposal 333 §1: `G -> L2 -> last` for a client's
    /// rendezvous circuit, `G -> L2 -> M -> last` for every other; see
    /// [`onion_dir::select::vanguards::HsCircuitKind::shape`]), its guard from the guard manager and
    /// its second hop from the layer-2 set.
    ///
    /// As C tor does for vanguard circuits, the guard is chosen with no restriction from the
    /// last hop: a rendezvous or introduction point chosen by someone else must not steer us
    /// off our primary guards (so a 4-hop path may end at its own guard; a 3-hop one is then
    /// refused, as `G -> L2 -> G` cannot be built). When the consensus turns vanguards-lite
    /// off (`vanguards-lite-enabled=0`) the path is an [`Guards::internal_path`] of the same
    /// length. Layer-2 members whose lifetime ran out are replaced first. Exclusions as in
    /// [`Guards::exit_path`].
    pub fn vanguard_path(
        &mut self,
        dir: &Directory,
        shape: VanguardShape,
        last: LastHop,
        opts: &PathOptions<'_>,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PlannedPath, Error> {
        self.relaxing(|g| g.vanguard_path_inner(dir, shape, last.clone(), opts, now, rng))
    }

    /// `f`, and again without the relays avoided after failures if it found no path while
    /// some were avoided.
    fn relaxing<T>(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match f(self) {
            Err(Error::NoPath(_)) if !self.avoided.is_empty() && !self.relaxed => {
                self.relaxed = true;
                let r = f(self);
                self.relaxed = false;
                r
            }
            r => r,
        }
    }

    /// A one-hop path to a directory guard (guard-spec §4.6 with the directory usage: one of
    /// the first `NUM_USABLE_PRIMARY_DIRECTORY_GUARDS` primary guards), for BEGIN_DIR
    /// requests (dir-spec §5: a client with a directory refreshes from its guards).
    pub fn dir_guard(
        &mut self,
        dir: &Directory,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PlannedPath, Error> {
        self.check_room()?;
        let sel = PathSelector::with_config(&dir.view, self.config.path.clone());
        let (pick, nothing_better) = self
            .guard(
                &sel,
                GuardUsage::Dir,
                &[],
                &PathOptions::default(),
                now,
                rng,
                false,
            )?
            .ok_or_else(|| Error::NoPath("no directory guard".into()))?;
        self.finish(dir, Ok(vec![pick.idx]), None, pick, nothing_better, now)
    }

    /// guard-spec §4.8: the circuit of `ticket` was built, so its guard is reachable (and
    /// becomes confirmed). [`Built::Usable`]: use it now. [`Built::Wait`]: its guard is not
    /// primary and a better guard may still work (§4.9); keep it unused until an event names
    /// the ticket. Either way report [`Guards::closed`] when the circuit closes.
    ///
    /// Errors with [`Error::Misuse`] for a ticket that is not open (already failed or
    /// closed, or never handed out).
    pub fn built(
        &mut self,
        ticket: Ticket,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Built, Error> {
        let open = self
            .open
            .get(&ticket)
            .ok_or(Error::Misuse("guard ticket not open"))?;
        if open.built {
            return Err(Error::Misuse("guard ticket reported built twice"));
        }
        let (circ, nothing_better) = (open.circ, open.nothing_better);
        if let Some(o) = self.open.get_mut(&ticket) {
            o.built = true;
            o.built_at = now.0;
        }
        let Some(circ) = circ else {
            // The manager stops tracking a circuit only after it was built.
            return Ok(Built::Usable);
        };
        // The guard may become confirmed (guard-spec §4.8), which the state keeps.
        self.dirty = true;
        let state = self.mgr.circuit_succeeded(now, circ, rng);
        let built = match state {
            Ok(GuardCircState::Complete) => Built::Usable,
            Ok(_) if nothing_better => {
                // No better guard can serve this circuit: the manager must not keep it
                // waiting (nor time it out later).
                let _ = self.mgr.circuit_closed(now, circ);
                if let Some(o) = self.open.get_mut(&ticket) {
                    o.circ = None;
                }
                Built::Usable
            }
            Ok(_) => Built::Wait,
            // The manager forgot it (it cannot, while the ticket is open): usable.
            Err(_) => Built::Usable,
        };
        self.drain_mgr();
        // Our own circuit may be among the upgraded ones: the answer says it already.
        if built == Built::Usable {
            self.events.retain(|e| *e != GuardsEvent::Usable(ticket));
        }
        if built == Built::Wait && self.events.contains(&GuardsEvent::Usable(ticket)) {
            self.events.retain(|e| *e != GuardsEvent::Usable(ticket));
            return Ok(Built::Usable);
        }
        Ok(built)
    }

    /// The circuit of `ticket` could not be built. [`Blame::Guard`]: guard-spec §4.7, the
    /// guard is marked unreachable; [`Blame::Hop`]`(i)`: `hops[i]` is avoided by the next
    /// paths for [`GuardsConfig::avoid_failed_for`] seconds (at most [`MAX_AVOIDED`] relays,
    /// the one expiring first making room); [`Blame::Other`]: nothing is learned. The ticket
    /// is closed. An unknown ticket is ignored.
    pub fn failed(&mut self, ticket: Ticket, blame: Blame, now: Timestamp) {
        let Some(open) = self.open.remove(&ticket) else {
            return;
        };
        self.events.retain(|e| match e {
            GuardsEvent::Usable(t) | GuardsEvent::Abandon(t) => *t != ticket,
        });
        let blame = match blame {
            Blame::Hop(0) => Blame::Guard,
            b => b,
        };
        if let Blame::Hop(i) = blame {
            if let Some(id) = open.hops.get(i) {
                self.avoid(*id, now);
            }
        }
        if let Some(circ) = open.circ {
            let _ = match blame {
                Blame::Guard => self.mgr.circuit_failed(now, circ),
                _ => self.mgr.circuit_closed(now, circ),
            };
        }
        self.drain_mgr();
    }

    /// The circuit of `ticket` closed (after use, or given up while waiting, or after
    /// [`GuardsEvent::Abandon`]): the guard manager stops counting it. This says nothing
    /// about its guard. An unknown ticket is ignored.
    pub fn closed(&mut self, ticket: Ticket, now: Timestamp) {
        self.failed(ticket, Blame::Other, now);
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<GuardsEvent> {
        self.events.pop_front()
    }

    /// When [`Guards::handle_timeout`] has something to do next: a failed guard's retry
    /// (guard-spec §4.5, on its schedule), a waiting circuit's idle timeout, or, while a
    /// circuit waits, the end of another circuit's `NONPRIMARY_GUARD_CONNECT_TIMEOUT`, after
    /// which that one no longer blocks it (§4.9). Always later than the last
    /// [`Guards::handle_timeout`]: a deadline that passed and was handled is not named again
    /// (a circuit still building past its connect timeout, say), so an embedder's loop that
    /// sleeps until this time never spins.
    ///
    /// The layer-2 vanguards need no timer: a member whose lifetime ran out is replaced
    /// before the next onion-service path. Failure exclusions end by themselves. If the wall
    /// clock steps back, deadlines before the last handled time are not named again; a
    /// guard whose retry they held is still retried at the next path (the guard manager
    /// checks retries whenever it chooses a guard).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let after = self.handled;
        let p = self.mgr.params();
        let primary = self.mgr.primary();
        let retries = self
            .mgr
            .sampled()
            .iter()
            .filter(|g| g.reachable == Reachable::No)
            .map(|g| {
                let sched = match primary.contains(&g.rsa_id) {
                    true => &p.primary_retry,
                    false => &p.nonprimary_retry,
                };
                let since = g.failing_since.map_or(0, |t| t.unix());
                let last = g.last_tried.or(g.failing_since).map_or(0, |t| t.unix());
                retry_time(sched, since, last)
            });
        let states: Vec<(GuardCircState, &Open)> = self
            .open
            .values()
            .filter_map(|o| Some((self.mgr.circuit_state(o.circ?)?, o)))
            .collect();
        let any_waiting = states
            .iter()
            .any(|(s, _)| *s == GuardCircState::WaitingForBetterGuard);
        let circuits = states.iter().filter_map(|(state, o)| match state {
            GuardCircState::WaitingForBetterGuard => Some(
                o.built_at
                    .saturating_add(p.nonprimary_idle_timeout.as_secs() + 1),
            ),
            GuardCircState::UsableIfNoBetterGuard if any_waiting => Some(
                o.picked_at
                    .saturating_add(p.nonprimary_connect_timeout.as_secs() + 1),
            ),
            _ => None,
        });
        retries
            .chain(circuits)
            .filter(|t| after.map_or(true, |a| *t > a))
            .min()
            .map(Timestamp)
    }

    /// Run the time-driven rules at wall-clock `now`: retries of failed guards, circuits that
    /// waited too long ([`GuardsEvent::Abandon`]) or may now be used ([`GuardsEvent::Usable`]),
    /// and the expiry of failure exclusions.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.handled = Some(self.handled.map_or(now.0, |h| h.max(now.0)));
        self.mgr.handle_timeout(now);
        self.avoided.retain(|(_, until)| *until > now.0);
        self.drain_mgr();
    }

    /// The guard state as text (guard-spec A.5 `Guard` lines) when it changed since it was
    /// last handed out (or given to [`Guards::new`]): store it and give it back to
    /// [`Guards::new`] at the next start. The layer-2 vanguards are not in it: a new process
    /// draws a new set (proposal 333 §1).
    pub fn poll_persist(&mut self) -> Option<String> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let text = self.mgr.to_state_string();
        if text == self.persisted {
            return None;
        }
        self.persisted.clone_from(&text);
        Some(text)
    }

    /// Refuse a new path when [`MAX_TICKETS`] are open.
    fn check_room(&self) -> Result<(), Error> {
        if self.open.len() >= MAX_TICKETS {
            return Err(Error::Resource(
                "too many circuits whose fate was not reported to the guard manager",
            ));
        }
        Ok(())
    }

    /// Bring the layer-2 set up to date with `dir` at `now`.
    fn update_l2(&mut self, dir: &Directory, now: Timestamp, rng: &mut impl CryptoRngCore) {
        if !self.l2.params().enabled {
            return;
        }
        let sel = PathSelector::with_config(&dir.view, self.config.path.clone());
        let _ = self.l2.update(now, &sel, &Exclusions::none(), rng);
    }

    /// The relays of `dir` avoided after failures at `now`, but for the caller's own choice
    /// of a last hop (`named`): avoiding steers random choices only, and a relay the caller
    /// must reach (a rendezvous point a client named, say) is tried again.
    fn avoided_indices(
        &mut self,
        dir: &Directory,
        now: Timestamp,
        named: Option<RelayIdx>,
    ) -> Vec<RelayIdx> {
        self.avoided.retain(|(_, until)| *until > now.0);
        if self.relaxed {
            return Vec::new();
        }
        self.avoided
            .iter()
            .filter_map(|(id, _)| dir.view.by_rsa_id(id))
            .filter(|&i| Some(i) != named)
            .collect()
    }

    /// Leave relay `id` out of the random choices of new paths for
    /// [`GuardsConfig::avoid_failed_for`] seconds from `now`, as after [`Blame::Hop`]: for
    /// failures seen outside a build (an exit that answered a stream with END reason
    /// TIMEOUT or RESOURCELIMIT, say). At most [`MAX_AVOIDED`] relays are avoided; the one
    /// whose exclusion ends first makes room. Guards are judged by the guard manager and
    /// are not affected.
    pub fn avoid(&mut self, id: RsaIdentity, now: Timestamp) {
        let until = now.0.saturating_add(self.config.avoid_failed_for);
        self.avoided.retain(|(_, u)| *u > now.0);
        if let Some(e) = self.avoided.iter_mut().find(|(i, _)| *i == id) {
            e.1 = until;
            return;
        }
        if self.avoided.len() >= MAX_AVOIDED {
            if let Some(first) = self
                .avoided
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(i, _)| i)
            {
                self.avoided.swap_remove(first);
            }
        }
        self.avoided.push((id, until));
    }

    /// The last hop's index in `dir`, or the external hop to append.
    fn resolve_last(
        &self,
        dir: &Directory,
        last: LastHop,
    ) -> Result<(Option<RelayIdx>, Option<HopTarget>), Error> {
        match last {
            LastHop::Random => Ok((None, None)),
            LastHop::Relay(id) => dir
                .view
                .by_rsa_id(&id)
                .map(|i| (Some(i), None))
                .ok_or_else(|| Error::NoPath(format!("relay {id} is not in the directory"))),
            LastHop::External(h) => Ok((None, Some(h))),
        }
    }

    /// A guard from the manager for a circuit whose other hops must not share a relay,
    /// family or subnet with it (`avoid`) and must not go through `opts.exclude`, with whether
    /// no primary guard could have served it; `None` when the path should be drawn again.
    ///
    /// Through a primary guard the circuit is usable once built. Through another guard it is
    /// usable at once only if no primary guard could have served this path (excluded by the
    /// caller, or the same relay, family or subnet as a hop of `avoid`, path-spec §2.2): then
    /// no better guard can ever beat it. Otherwise, if `redraw`, the pick goes back to the
    /// manager and `None` asks for another path (another exit may let a primary guard serve);
    /// if not, the circuit will wait for a better guard (§4.9) once built.
    #[allow(clippy::too_many_arguments)]
    fn guard(
        &mut self,
        sel: &PathSelector<'_>,
        usage: GuardUsage,
        avoid: &[RelayIdx],
        opts: &PathOptions<'_>,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
        redraw: bool,
    ) -> Result<Option<(GuardPick, bool)>, Error> {
        let sampled = self.mgr.sampled().len();
        let pick = self
            .mgr
            .select_excluding(
                now,
                sel.view(),
                usage,
                avoid,
                opts.exclude,
                sel.config(),
                rng,
            )
            .map_err(|e| Error::NoPath(e.to_string()))?;
        // Selecting may have extended the sample (guard-spec §4.6 first tops it up).
        if self.mgr.sampled().len() != sampled {
            self.dirty = true;
        }
        if pick.state == GuardCircState::UsableOnCompletion {
            return Ok(Some((pick, false)));
        }
        let view = sel.view();
        let primary_fits = self.mgr.primary().iter().any(|id| {
            view.by_rsa_id(id)
                .is_some_and(|idx| !opts.exclude.contains(idx) && sel.compatible(idx, avoid))
        });
        if primary_fits && redraw {
            let _ = self.mgr.circuit_closed(now, pick.circ);
            return Ok(None);
        }
        Ok(Some((pick, !primary_fits)))
    }

    /// A ticket for `path` (with `external` appended) around `pick`; on a path error the
    /// manager forgets the pick (nothing was tried through it).
    fn finish(
        &mut self,
        dir: &Directory,
        path: Result<Vec<RelayIdx>, Error>,
        external: Option<HopTarget>,
        pick: GuardPick,
        nothing_better: bool,
        now: Timestamp,
    ) -> Result<PlannedPath, Error> {
        let targets = path.and_then(|p| {
            let mut hops = Vec::with_capacity(p.len() + 1);
            let mut names = Vec::with_capacity(p.len() + 1);
            for &idx in &p {
                let r = dir
                    .view
                    .relay(idx)
                    .ok_or_else(|| Error::NoPath(format!("relay index {} not in view", idx.0)))?;
                hops.push(hop_target(r)?);
                names.push(r.nickname.clone());
            }
            if let Some(h) = external {
                names.push(
                    dir.view
                        .by_rsa_id(&h.rsa_id)
                        .and_then(|i| dir.view.relay(i))
                        .map_or_else(|| h.rsa_id.to_string(), |r| r.nickname.clone()),
                );
                hops.push(h);
            }
            Ok((hops, names))
        });
        let (hops, names) = match targets {
            Ok(t) => t,
            Err(e) => {
                let _ = self.mgr.circuit_closed(now, pick.circ);
                self.drain_mgr();
                return Err(e);
            }
        };
        let ticket = Ticket(self.next_ticket);
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.open.insert(
            ticket,
            Open {
                circ: Some(pick.circ),
                hops: hops.iter().map(|h| h.rsa_id).collect(),
                nothing_better,
                built: false,
                picked_at: now.0,
                built_at: 0,
            },
        );
        Ok(PlannedPath {
            ticket,
            hops,
            names,
            usable_on_completion: pick.state == GuardCircState::UsableOnCompletion
                || nothing_better,
        })
    }

    /// The guard manager's events as ours. A circuit it timed out is no longer its to
    /// track; the ticket stays open until [`Guards::closed`].
    fn drain_mgr(&mut self) {
        while let Some(ev) = self.mgr.poll_event() {
            let (circ, make): (GuardCircId, fn(Ticket) -> GuardsEvent) = match ev {
                GuardEvent::CircuitUsable(c) => (c, GuardsEvent::Usable),
                GuardEvent::CircuitExpired(c) => (c, GuardsEvent::Abandon),
            };
            let Some((ticket, open)) = self.open.iter_mut().find(|(_, o)| o.circ == Some(circ))
            else {
                continue;
            };
            if matches!(ev, GuardEvent::CircuitExpired(_)) {
                open.circ = None;
            }
            let ev = make(*ticket);
            if !self.events.contains(&ev) {
                self.events.push_back(ev);
            }
        }
    }
}

/// When a guard failing since `since` and last tried at `last` is retried under `sched`
/// (guard-spec §4.5): the first time `t` with `t >= last + interval(t - since)`, the test
/// the guard manager applies. The interval grows with the time failing, so the first
/// estimate can be early; each step moves to the next candidate, and the schedule has few
/// steps (the loop is bounded anyway).
fn retry_time(sched: &RetrySchedule, since: u64, last: u64) -> u64 {
    let mut t = last.saturating_add(sched.interval(last.saturating_sub(since)));
    for _ in 0..(sched.steps.len() + 2) {
        let due = last.saturating_add(sched.interval(t.saturating_sub(since)));
        if due <= t {
            break;
        }
        t = due;
    }
    t
}

/// A path-selection error as the crate's.
fn no_path(e: onion_dir::select::path::PathError) -> Error {
    Error::NoPath(e.to_string())
}

/// The caller's exclusions plus the relays avoided after failures, but for the guard `guard`
/// (the guard manager judges guards; a guard avoided after failing as another circuit's
/// middle is still this circuit's guard).
fn except(caller: &Exclusions, avoided: &[RelayIdx], guard: RelayIdx) -> Exclusions {
    caller.with(avoided.iter().copied().filter(|&i| i != guard))
}
