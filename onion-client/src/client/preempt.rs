//! Circuits built ahead of need (path-spec §2.1.1): the client remembers the ports its
//! streams used ([`crate::predict::PredictedPorts`]) and, once a second while predictions are
//! in force, launches what [`crate::predict::PredictedPorts::wanted`] asks for, so that a new stream usually
//! finds a built circuit.
//!
//! What is launched, and its bounds:
//! - exit circuits for the predicted ports fewer than two usable circuits handle, and
//!   build-time test circuits while the timeout is learned (path-spec §2.4.2);
//! - internal circuits (`G -> L2 -> M`, vanguards-lite) while onion services were used
//!   recently, and stable ones while this client hosts an onion service;
//! - never more than [`crate::predict::MAX_UNUSED_OPEN_CIRCUITS`] clean circuits, never more
//!   than half of [`crate::Limits::max_building`] builds in flight (on-demand circuits keep
//!   the other half), and never past [`crate::Limits::max_circuits`].
//!
//! The internal circuits are then cannibalized (path-spec §2.3; C tor's
//! `circuit_launch_by_extend_info` → `circuit_find_to_cannibalize` →
//! `circuit_extend_to_new_exit`): a client's rendezvous circuit takes one as it is, its last
//! hop becoming the rendezvous point (`G -> L2 -> RP`, proposal 333 §1); every other
//! onion-service circuit — a hosted service's introduction and rendezvous circuits, a
//! client's introduction circuit, HSDir fetches and uploads — takes one and extends it by
//! one hop to the relay it must reach (`G -> L2 -> M -> target`), so the need is met after
//! one EXTEND2 instead of a whole build ([`super::Client::cannibalize`]). Which circuit
//! may be taken follows C tor's rules (see [`super::Client::find_to_cannibalize`]); when
//! none fits, the circuit is built from scratch.

use std::time::Duration;

use onion_dir::policy::ExitTarget;
use onion_dir::select::path::{ExitRequest, PathOptions};
use onion_dir::select::vanguards::VanguardShape;
use onion_dir::{RelayFlags, RsaIdentity};

use onion_circuit::circuit::HopTarget;

use super::circ::{exit_allows, CircPhase, Purpose};
use super::CLEAN_CIRCUIT_IDLE;
use crate::dir::Directory;
use crate::guards::LastHop;
use crate::predict::{
    CircuitPool, Clean, ConsensusPath, HsCircuitStats, Launch, MIN_CIRCUITS_HANDLING_STREAM,
};
use crate::{Error, Instant};

/// How often predictions are looked at while they are in force (C tor decides once a
/// second).
pub(super) const PREDICT_EVERY: Duration = Duration::from_secs(1);

/// Launches per decision at most (each adds one clean circuit, and the clean ones are
/// bounded by `MAX_UNUSED_OPEN_CIRCUITS` anyway).
const MAX_LAUNCHES_PER_DECISION: usize = crate::predict::MAX_UNUSED_OPEN_CIRCUITS;

/// The client's circuits as the prediction rules see them.
struct Pool<'a> {
    circs: &'a std::collections::BTreeMap<u64, super::circ::Circ>,
    cfg: &'a super::ClientConfig,
    now: Instant,
    dir: Option<&'a Directory>,
}

impl Pool<'_> {
    /// Whether every hop of `path` has the Stable flag in the directory.
    fn stable(&self, path: &[RsaIdentity]) -> bool {
        let Some(dir) = self.dir else {
            return false;
        };
        path.iter().all(|id| {
            dir.view
                .by_rsa_id(id)
                .is_some_and(|i| dir.view.flags(i).contains(RelayFlags::STABLE))
        })
    }
}

/// Whether every hop of `c` has the Stable flag in `dir`.
pub(super) fn path_stable(dir: Option<&std::sync::Arc<Directory>>, c: &super::circ::Circ) -> bool {
    let Some(dir) = dir else {
        return false;
    };
    c.path.iter().all(|h| {
        dir.view
            .by_rsa_id(&h.rsa_id)
            .is_some_and(|i| dir.view.flags(i).contains(RelayFlags::STABLE))
    })
}

impl CircuitPool for Pool<'_> {
    fn clean(&self) -> Clean {
        let mut clean = Clean::default();
        for c in self.circs.values() {
            if c.purpose != Purpose::General
                || c.path.len() < 2
                || c.timed_out
                || c.dirty_since.is_some()
                || c.isolation.is_some()
                || c.named_exit.is_some()
                || !c.streams.is_empty()
            {
                continue;
            }
            clean.total += 1;
            if c.internal {
                clean.internal += 1;
                let ids: Vec<RsaIdentity> = c.path.iter().map(|h| h.rsa_id).collect();
                if self.stable(&ids) {
                    clean.internal_stable += 1;
                }
            }
        }
        clean
    }

    fn exits_handling(&self, port: u16, need_stable: bool) -> usize {
        let dirty = self.cfg.max_circuit_dirtiness;
        let max = self.cfg.limits.max_streams_per_circuit;
        let mut n = 0;
        for c in self.circs.values() {
            let usable = c.purpose == Purpose::General
                && !c.internal
                && !c.unusable
                && !c.timed_out
                && c.path.len() > 1
                && c.isolation.is_none()
                && c.named_exit.is_none()
                && c.streams.len() < max
                && c.dirty_since
                    .map_or(true, |d| self.now.saturating_duration_since(d) < dirty)
                && exit_allows(self.dir, c.exit(), port);
            if !usable {
                continue;
            }
            if need_stable {
                let ids: Vec<RsaIdentity> = c.path.iter().map(|h| h.rsa_id).collect();
                if !self.stable(&ids) {
                    continue;
                }
            }
            n += 1;
            if n >= MIN_CIRCUITS_HANDLING_STREAM {
                break;
            }
        }
        n
    }
}

/// What the directory lets the client build (C tor's `router_have_consensus_path`): exit
/// circuits when some listed relay with the Exit flag allows some port.
pub(super) fn consensus_path(dir: Option<&Directory>) -> ConsensusPath {
    let Some(dir) = dir else {
        return ConsensusPath::Unknown;
    };
    let exits = dir
        .view
        .relays()
        .iter()
        .any(|r| r.flags.contains(RelayFlags::EXIT) && r.policy.allows_some_port());
    match exits {
        true => ConsensusPath::Exit,
        false => ConsensusPath::Internal,
    }
}

impl super::Client {
    /// A stream to `port` was asked for (C tor's `rep_hist_note_used_port`).
    pub(super) fn predict_port(&mut self, port: u16) {
        let now = self.now;
        self.predict.record(port, now, &mut self.rng);
    }

    /// A name resolution was asked for (predicts port 80, as C tor).
    pub(super) fn predict_resolve(&mut self) {
        let now = self.now;
        self.predict.record_resolve(now, &mut self.rng);
    }

    /// An onion service was asked for (`port` the stream's): internal circuits are wanted
    /// for a while, stable ones if the port is long-lived (C tor's
    /// `rep_hist_note_used_internal` with the stream's `need_uptime`).
    pub(super) fn predict_internal(&mut self, port: u16) {
        let now = self.now;
        let stable = self.cfg.path.long_lived_ports.contains(&port);
        self.predict.record_internal(now, stable, &mut self.rng);
    }

    /// When predictions should be looked at next, if they are in force.
    pub(super) fn predict_timeout(&self) -> Option<Instant> {
        if !self.cfg.preemptive_circuits || self.dir.directory().is_none() {
            return None;
        }
        let learning = self.build_times.needs_test_circuit(self.now)
            || self.build_times.learning_idle_timeout().is_some();
        match self.predict.any_predicted(self.now) || learning {
            true => Some(self.predict_at),
            false => None,
        }
    }

    /// Launch what the predictions ask for (at most once per [`PREDICT_EVERY`]).
    pub(super) fn preempt(&mut self) {
        if !self.cfg.preemptive_circuits || self.now < self.predict_at {
            return;
        }
        let Some(dir) = self.dir.directory().cloned() else {
            return;
        };
        self.predict_at = self.now + PREDICT_EVERY;
        let path = consensus_path(Some(&dir));
        for _ in 0..MAX_LAUNCHES_PER_DECISION {
            let room = self.building() < (self.cfg.limits.max_building / 2).max(1)
                && self.circs.len() < self.cfg.limits.max_circuits;
            if !room {
                return;
            }
            let now = self.now;
            let pool = Pool {
                circs: &self.circs,
                cfg: &self.cfg,
                now,
                dir: Some(&dir),
            };
            let hosting = self.hs_hosting();
            let want =
                self.predict
                    .wanted(now, &pool, path, hosting, &self.build_times, &mut self.rng);
            let Some(want) = want else {
                return;
            };
            if self.launch_predicted(&dir, want).is_err() {
                return;
            }
        }
    }

    /// Launch one preemptive circuit. Errors when none could be launched (no path, no
    /// room): the next decision tries again.
    fn launch_predicted(
        &mut self,
        dir: &std::sync::Arc<Directory>,
        want: Launch,
    ) -> Result<(), Error> {
        let wall = self.wall_now();
        let learning = self.build_times.learning_idle_timeout();
        let stable = match &want {
            Launch::Exit { stable, .. } | Launch::Internal { stable, .. } => *stable,
            Launch::Test { .. } => false,
        };
        let (planned, internal) = match want {
            Launch::Exit { ports, stable } => {
                let opts = PathOptions {
                    need_stable: stable,
                    ..PathOptions::default()
                };
                // An exit for the first predicted port some exit accepts; when none accepts
                // any, the ports are forgotten and any exit does (as C tor).
                let mut planned = None;
                for port in &ports {
                    let r = self.guards.exit_path(
                        dir,
                        ExitRequest::Target(ExitTarget::Port(*port)),
                        3,
                        &opts,
                        wall,
                        &mut self.rng,
                    );
                    match r {
                        Ok(p) => {
                            planned = Some(p);
                            break;
                        }
                        Err(Error::NoPath(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                let planned = match planned {
                    Some(p) => p,
                    None => {
                        self.predict.remove(&ports);
                        self.guards.exit_path(
                            dir,
                            ExitRequest::Any,
                            3,
                            &opts,
                            wall,
                            &mut self.rng,
                        )?
                    }
                };
                (planned, false)
            }
            Launch::Test { internal: false } => (
                self.guards.exit_path(
                    dir,
                    ExitRequest::Any,
                    3,
                    &PathOptions::default(),
                    wall,
                    &mut self.rng,
                )?,
                false,
            ),
            Launch::Internal { stable, .. } => self.internal_ahead(dir, stable)?,
            Launch::Test { internal: true } => self.internal_ahead(dir, false)?,
        };
        let key = self.launch(planned.hops, Some(planned.ticket), Purpose::General, false)?;
        let idle = self
            .predict
            .circuit_idle_timeout(self.now, learning, &mut self.rng);
        if let Some(c) = self.circs.get_mut(&key) {
            c.internal = internal;
            c.clean_idle = idle;
            c.stable = stable;
            if internal {
                // No congestion control with a relay that is no exit for us (proposal 324 is
                // negotiated with an exit).
                if let Some(last) = c.path.last_mut() {
                    last.ntor_v3 = false;
                }
            }
        }
        Ok(())
    }

    /// The path of an internal circuit built ahead (`G -> L2 -> M`, the shape of a client's
    /// rendezvous circuit, proposal 333 §1).
    fn internal_ahead(
        &mut self,
        dir: &Directory,
        stable: bool,
    ) -> Result<(crate::guards::PlannedPath, bool), Error> {
        let wall = self.wall_now();
        let opts = PathOptions {
            need_stable: stable,
            ..PathOptions::default()
        };
        let p = self.guards.vanguard_path(
            dir,
            VanguardShape::Short,
            LastHop::Random,
            &opts,
            wall,
            &mut self.rng,
        )?;
        Ok((p, true))
    }

    /// A preemptive internal circuit, built and clean, for a client's rendezvous circuit to
    /// take as it is (its last hop becomes the rendezvous point; C tor cannibalizes for
    /// `CIRCUIT_PURPOSE_C_ESTABLISH_REND` without extending), stable if `need_stable`. It is
    /// no longer internal.
    pub(super) fn take_internal(&mut self, need_stable: bool) -> Option<u64> {
        let key = self.find_to_cannibalize(None, need_stable)?;
        let c = self.circs.get_mut(&key)?;
        c.internal = false;
        c.idle_since = self.now;
        self.hs_note_cannibalized();
        Some(key)
    }

    /// A clean internal circuit that may be extended to `target` (or, with `None`, used as
    /// it is), following C tor's `circuit_find_to_cannibalize`: built and open, never used
    /// (not dirty, no stream, no isolation, no named exit), of the internal shape (3 hops:
    /// `G -> L2 -> M`), not being extended, not marked unusable for new streams, and stable
    /// when `need_stable`; `target` is none of its relays (by RSA or Ed25519 identity) and in
    /// the family of none ([`onion_dir::netview::NetView::same_family`]). When stability is
    /// not needed an unstable circuit is preferred, keeping the stable ones for those that
    /// need them.
    ///
    /// Its guard must still be usable (C tor's `entry_guard_could_succeed`): a circuit
    /// holds a guard ticket and its first hop is still in the guard sample (a guard
    /// dropped from the sample since, unlisted too long or past its lifetime, guard-spec
    /// §4.1, is not used again through an old circuit).
    ///
    /// vanguards-lite (proposal 333 §1): its second hop must still be one of the layer-2
    /// guards, whose lifetime may have ended since the circuit was built (C tor does not
    /// look; a circuit through a rotated-out L2 would keep it in use beyond its lifetime).
    pub(super) fn find_to_cannibalize(
        &self,
        target: Option<&HopTarget>,
        need_stable: bool,
    ) -> Option<u64> {
        let dir = self.dir.directory();
        let wall = self.wall_now();
        let l2 = self.guards.layer2();
        let in_l2 = |id: &onion_dir::RsaIdentity| {
            l2.is_empty() || l2.iter().any(|g| g.id == *id && g.expires_at > wall)
        };
        let conflicts = |hop: &HopTarget, t: &HopTarget| {
            if hop.rsa_id == t.rsa_id || (hop.ed_id.is_some() && hop.ed_id == t.ed_id) {
                return true;
            }
            let Some(d) = dir else {
                return false;
            };
            match (d.view.by_rsa_id(&hop.rsa_id), d.view.by_rsa_id(&t.rsa_id)) {
                (Some(a), Some(b)) => d.view.same_family(a, b),
                _ => false,
            }
        };
        let sampled = self.guards.manager().sampled();
        let guard_usable = |c: &super::circ::Circ| {
            c.ticket.is_some()
                && c.first()
                    .is_some_and(|g| sampled.iter().any(|s| s.rsa_id == g))
        };
        let mut best: Option<(u64, bool)> = None;
        for (k, c) in &self.circs {
            let usable = c.internal
                && !c.cannibalized
                && !c.unusable
                && guard_usable(c)
                && c.purpose == Purpose::General
                && c.phase == CircPhase::Open
                && !c.timed_out
                && c.dirty_since.is_none()
                && c.isolation.is_none()
                && c.named_exit.is_none()
                && c.streams.is_empty()
                && c.path.len() == 3
                && c.circ
                    .as_ref()
                    .is_some_and(|m| m.n_hops() == 3 && !m.is_closed() && !m.is_extending())
                && c.path.get(1).is_some_and(|h| in_l2(&h.rsa_id));
            if !usable {
                continue;
            }
            // Built from relays chosen Stable, or made of Stable relays only (path-spec
            // §1.1: a "stable" circuit), as the prediction rules count them.
            let stable = c.stable || path_stable(dir, c);
            if need_stable && !stable {
                continue;
            }
            if let Some(t) = target {
                if c.path.iter().any(|h| conflicts(h, t)) {
                    continue;
                }
            }
            // C tor keeps the first fit, unless it is stable and stability is not needed.
            if best.map_or(true, |(_, s)| s && !need_stable && !stable) {
                best = Some((*k, stable));
            }
        }
        best.map(|(k, _)| k)
    }

    /// Take a clean internal circuit for the onion-service `purpose` and extend it by one
    /// hop to `target` (EXTEND2, tor-spec §5.1.2; C tor's `circuit_extend_to_new_exit`).
    /// Returns its key, or `None` when no circuit fits ([`super::Client::find_to_cannibalize`])
    /// or the EXTEND2 could not be sent (that circuit is then closed, not offered again):
    /// the caller builds one from scratch. The circuit's build deadline starts again now.
    pub(super) fn cannibalize(
        &mut self,
        purpose: Purpose,
        target: &HopTarget,
        need_stable: bool,
    ) -> Option<u64> {
        let key = self.find_to_cannibalize(Some(target), need_stable)?;
        let now = self.now;
        let deadline = now + self.build_timeout(purpose);
        let c = self.circs.get_mut(&key)?;
        let m = c.circ.as_mut()?;
        let mut hop = target.clone();
        // No congestion control is negotiated with an onion-service circuit's last relay
        // (proposal 324 §4: with an exit or an onion service's virtual hop only).
        hop.ntor_v3 = false;
        match m.extend(&hop, now, &mut self.rng) {
            Ok(()) => {
                c.internal = false;
                c.cannibalized = true;
                c.purpose = purpose;
                c.path.push(hop);
                c.phase = CircPhase::Building;
                c.started = now;
                c.deadline = deadline;
                c.idle_since = now;
                c.clean_idle = CLEAN_CIRCUIT_IDLE;
                self.hs_note_cannibalized();
                self.hs_note_extend();
                Some(key)
            }
            Err(e) => {
                self.fail_circ(key, Error::Circuit(e), true);
                None
            }
        }
    }

    /// What this client's onion-service circuits cost (see [`HsCircuitStats`]): how many
    /// were cannibalized from pre-built internal circuits or built from scratch, and the
    /// EXTEND2 cells they needed once the need arose.
    pub fn onion_circuit_stats(&self) -> HsCircuitStats {
        self.hs.circ_stats
    }

    /// Whether this client hosts an onion service: then stable internal circuits are built
    /// ahead ([`crate::predict::PredictedPorts::wanted`]).
    fn hs_hosting(&self) -> bool {
        self.hs.hosted > 0
    }

    /// An onion-service circuit was cannibalized.
    fn hs_note_cannibalized(&mut self) {
        let s = &mut self.hs.circ_stats;
        s.cannibalized = s.cannibalized.saturating_add(1);
    }

    /// An onion-service circuit was built from scratch.
    pub(super) fn hs_note_launched(&mut self) {
        let s = &mut self.hs.circ_stats;
        s.launched = s.launched.saturating_add(1);
    }

    /// An EXTEND2 went out for an onion-service circuit.
    pub(super) fn hs_note_extend(&mut self) {
        let s = &mut self.hs.circ_stats;
        s.extends = s.extends.saturating_add(1);
    }
}
