//! Circuits built ahead of need (path-spec §2.1.1): the client remembers the ports its
//! streams used ([`crate::predict::PredictedPorts`]) and, once a second while predictions are
//! in force, launches what [`PredictedPorts::wanted`] asks for, so that a new stream usually
//! finds a built circuit.
//!
//! What is launched, and its bounds:
//! - exit circuits for the predicted ports fewer than two usable circuits handle, and
//!   build-time test circuits while the timeout is learned (path-spec §2.4.2);
//! - internal circuits (`G -> L2 -> M`, vanguards-lite) while onion services were used
//!   recently, which a rendezvous circuit then takes as it is (C tor's cannibalization of a
//!   preemptive internal circuit for a client rendezvous point, `onion.rs`);
//! - never more than [`crate::predict::MAX_UNUSED_OPEN_CIRCUITS`] clean circuits, never more
//!   than half of [`crate::Limits::max_building`] builds in flight (on-demand circuits keep
//!   the other half), and never past [`crate::Limits::max_circuits`].
//!
//! A hosted onion service's stable internal circuits are not built ahead (its introduction
//! and rendezvous circuits end at relays named by others, which would need a built circuit
//! to be extended; they are built on demand).

use std::time::Duration;

use onion_dir::policy::ExitTarget;
use onion_dir::select::path::{ExitRequest, PathOptions};
use onion_dir::select::vanguards::VanguardShape;
use onion_dir::{RelayFlags, RsaIdentity};

use super::circ::{exit_allows, CircPhase, Purpose};
use crate::dir::Directory;
use crate::guards::LastHop;
use crate::predict::{CircuitPool, Clean, ConsensusPath, Launch, MIN_CIRCUITS_HANDLING_STREAM};
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

    /// An onion service was asked for: internal circuits are wanted for a while.
    pub(super) fn predict_internal(&mut self) {
        let now = self.now;
        self.predict.record_internal(now, false, &mut self.rng);
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
            // A hosted service's circuits are built on demand (module documentation).
            let want =
                self.predict
                    .wanted(now, &pool, path, false, &self.build_times, &mut self.rng);
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

    /// A preemptive internal circuit, built and clean, for a rendezvous circuit to take.
    pub(super) fn take_internal(&mut self) -> Option<u64> {
        let key = self
            .circs
            .iter()
            .find(|(_, c)| {
                c.internal && c.phase == CircPhase::Open && c.streams.is_empty() && !c.timed_out
            })
            .map(|(k, _)| *k)?;
        let c = self.circs.get_mut(&key)?;
        c.internal = false;
        Some(key)
    }
}
