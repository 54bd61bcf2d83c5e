//! Entry guard selection (guard-spec §4): a sampled set, filtered and primary guards,
//! confirmation on use, retries on a schedule, and a persistent state.
//!
//! [`GuardMgr`] is a sans-IO state machine. Time is a parameter (`now`, a wall-clock
//! [`Timestamp`]: the persistent dates are wall-clock dates), randomness is the caller's RNG
//! (after `now`), and the network comes in as a [`NetView`]. The embedding drives it like
//! this, and persists [`GuardMgr::to_state_string`] (restored by
//! [`GuardMgr::from_state_str`]):
//!
//! ```
//! use onion_dir::netview::NetView;
//! use onion_dir::select::guard::{GuardEvent, GuardMgr, GuardParams, GuardUsage};
//! use onion_dir::select::path::PathConfig;
//! use onion_dir::Timestamp;
//! # use rand_core::SeedableRng;
//!
//! fn turn(
//!     mgr: &mut GuardMgr,
//!     view: &NetView,
//!     now: Timestamp,
//!     built: bool,
//!     rng: &mut impl rand_core::CryptoRngCore,
//! ) -> Option<Timestamp> {
//!     mgr.update_consensus(now, view, rng); // on each new consensus
//!     let config = PathConfig::default();
//!     if let Ok(pick) = mgr.select(now, view, GuardUsage::Data, &[], &config, rng) {
//!         // Build the circuit through `pick.guard`, then report how it went.
//!         let _ = match built {
//!             true => mgr.circuit_succeeded(now, pick.circ, rng).map(drop),
//!             false => mgr.circuit_failed(now, pick.circ),
//!         };
//!     }
//!     if mgr.poll_timeout().is_some_and(|t| t <= now) {
//!         mgr.handle_timeout(now);
//!     }
//!     while let Some(ev) = mgr.poll_event() {
//!         match ev {
//!             GuardEvent::CircuitUsable(_circ) => { /* attach streams */ }
//!             GuardEvent::CircuitExpired(_circ) => { /* close it */ }
//!         }
//!     }
//!     mgr.poll_timeout() // sleep until then, or until the next input
//! }
//!
//! let mut mgr = GuardMgr::new(GuardParams::default());
//! let view = NetView::from_records(Vec::new(), Default::default()).unwrap();
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1); // the caller's CSPRNG
//! let now = Timestamp::from_unix(1_700_000_000);
//! assert_eq!(turn(&mut mgr, &view, now, true, &mut rng), None);
//! // Persist, and restore at the next start.
//! let text = mgr.to_state_string();
//! let restored = GuardMgr::from_state_str(GuardParams::default(), &text).unwrap();
//! assert_eq!(restored.to_state_string(), text);
//! ```
//!
//! Events tell the embedding when a circuit that was waiting for a better guard may be used
//! ([`GuardEvent::CircuitUsable`]) or should be closed ([`GuardEvent::CircuitExpired`]).

pub mod state;

use std::time::Duration;

use rand_core::CryptoRngCore;

use crate::consensus::Consensus;
use crate::ids::{RelayFlags, RsaIdentity};
use crate::netview::{uniform_below, NetView, RelayIdx, WeightRole};
use crate::select::path::{
    Exclusions, ExitRequest, Path, PathConfig, PathError, PathOptions, PathSelector,
};
use crate::Timestamp;

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;
const MINUTE: u64 = 60;

/// How long to wait before retrying a failing guard, as a function of how long it has been
/// failing (guard-spec §4.5, A.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// `(failing for less than, retry every)` pairs in seconds, in increasing order.
    pub steps: Vec<(u64, u64)>,
    /// The retry interval after the last step.
    pub then: u64,
}

impl RetrySchedule {
    /// `PRIMARY_GUARDS_RETRY_SCHED`: every 10 minutes for the first six hours, every 90
    /// minutes for the next 90 hours, every 4 hours for the next 3 days, every 9 hours
    /// thereafter.
    pub fn primary_default() -> Self {
        Self {
            steps: vec![
                (6 * HOUR, 10 * MINUTE),
                (96 * HOUR, 90 * MINUTE),
                (96 * HOUR + 3 * DAY, 4 * HOUR),
            ],
            then: 9 * HOUR,
        }
    }

    /// `GUARDS_RETRY_SCHED`: every hour for the first six hours, every 4 hours for 90
    /// hours, every 18 hours for the next 3 days, every 36 hours thereafter.
    pub fn nonprimary_default() -> Self {
        Self {
            steps: vec![
                (6 * HOUR, HOUR),
                (96 * HOUR, 4 * HOUR),
                (96 * HOUR + 3 * DAY, 18 * HOUR),
            ],
            then: 36 * HOUR,
        }
    }

    /// The retry interval for a guard that has been failing for `failing_for` seconds.
    pub fn interval(&self, failing_for: u64) -> u64 {
        self.steps
            .iter()
            .find(|(until, _)| failing_for < *until)
            .map_or(self.then, |(_, every)| *every)
    }
}

/// The parameters of guard-spec A.1 (names as there); times are [`Duration`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardParams {
    /// `MAX_SAMPLE_THRESHOLD`, percent of the guards in the consensus.
    pub max_sample_threshold_percent: u32,
    /// `MAX_SAMPLE_SIZE`.
    pub max_sample_size: usize,
    /// `GUARD_LIFETIME`.
    pub guard_lifetime: Duration,
    /// `GUARD_CONFIRMED_MIN_LIFETIME`.
    pub confirmed_min_lifetime: Duration,
    /// `REMOVE_UNLISTED_GUARDS_AFTER`.
    pub remove_unlisted_after: Duration,
    /// `MIN_FILTERED_SAMPLE`.
    pub min_filtered_sample: usize,
    /// `N_PRIMARY_GUARDS`.
    pub n_primary: usize,
    /// `NUM_USABLE_PRIMARY_GUARDS`.
    pub n_usable_primary: usize,
    /// `NUM_USABLE_PRIMARY_DIRECTORY_GUARDS`.
    pub n_usable_primary_dir: usize,
    /// `INTERNET_LIKELY_DOWN_INTERVAL`.
    pub internet_likely_down: Duration,
    /// `NONPRIMARY_GUARD_CONNECT_TIMEOUT`.
    pub nonprimary_connect_timeout: Duration,
    /// `NONPRIMARY_GUARD_IDLE_TIMEOUT`.
    pub nonprimary_idle_timeout: Duration,
    /// `PRIMARY_GUARDS_RETRY_SCHED`.
    pub primary_retry: RetrySchedule,
    /// `GUARDS_RETRY_SCHED`.
    pub nonprimary_retry: RetrySchedule,
    /// The version string written as `sampled_by`.
    pub version: String,
}

impl Default for GuardParams {
    fn default() -> Self {
        Self {
            max_sample_threshold_percent: 20,
            max_sample_size: 60,
            guard_lifetime: Duration::from_secs(120 * DAY),
            confirmed_min_lifetime: Duration::from_secs(60 * DAY),
            remove_unlisted_after: Duration::from_secs(20 * DAY),
            min_filtered_sample: 20,
            n_primary: 3,
            n_usable_primary: 1,
            n_usable_primary_dir: 3,
            internet_likely_down: Duration::from_secs(600),
            nonprimary_connect_timeout: Duration::from_secs(15),
            nonprimary_idle_timeout: Duration::from_secs(600),
            primary_retry: RetrySchedule::primary_default(),
            nonprimary_retry: RetrySchedule::nonprimary_default(),
            version: concat!("onion-", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

impl GuardParams {
    /// Apply the consensus `params` of param-spec §11 (`guard-lifetime-days`,
    /// `guard-n-primary-guards`, ...), each clamped to its documented range; unknown names
    /// and out-of-range values are ignored.
    pub fn with_consensus_params<'a>(
        mut self,
        params: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Self {
        /// Where a parameter goes, and in what unit.
        enum Slot<'s> {
            /// A time, counted in `unit` seconds.
            Secs(&'s mut Duration, u64),
            /// A count.
            Count(&'s mut usize),
            /// A percentage.
            Percent(&'s mut u32),
        }
        let max = i64::from(i32::MAX);
        for (k, v) in params {
            let (lo, hi, slot) = match k {
                "guard-lifetime-days" => (1, 3650, Slot::Secs(&mut self.guard_lifetime, DAY)),
                "guard-confirmed-min-lifetime-days" => {
                    (1, 3650, Slot::Secs(&mut self.confirmed_min_lifetime, DAY))
                }
                "guard-internet-likely-down-interval" => {
                    (1, max, Slot::Secs(&mut self.internet_likely_down, 1))
                }
                "guard-max-sample-size" => (1, max, Slot::Count(&mut self.max_sample_size)),
                "guard-max-sample-threshold-percent" => (
                    1,
                    100,
                    Slot::Percent(&mut self.max_sample_threshold_percent),
                ),
                "guard-min-filtered-sample-size" => {
                    (1, max, Slot::Count(&mut self.min_filtered_sample))
                }
                "guard-n-primary-guards" => (1, max, Slot::Count(&mut self.n_primary)),
                "guard-n-primary-guards-to-use" => {
                    (1, max, Slot::Count(&mut self.n_usable_primary))
                }
                "guard-n-primary-dir-guards-to-use" => {
                    (1, max, Slot::Count(&mut self.n_usable_primary_dir))
                }
                "guard-nonprimary-guard-connect-timeout" => {
                    (1, max, Slot::Secs(&mut self.nonprimary_connect_timeout, 1))
                }
                "guard-nonprimary-guard-idle-timeout" => {
                    (1, max, Slot::Secs(&mut self.nonprimary_idle_timeout, 1))
                }
                "guard-remove-unlisted-guards-after-days" => {
                    (1, 3650, Slot::Secs(&mut self.remove_unlisted_after, DAY))
                }
                _ => continue,
            };
            if !(lo..=hi).contains(&v) {
                continue;
            }
            // In range, so positive and at most `i32::MAX`: every conversion succeeds.
            match slot {
                Slot::Secs(s, unit) => {
                    *s = Duration::from_secs(u64::try_from(v).unwrap_or(0).saturating_mul(unit))
                }
                Slot::Count(c) => *c = usize::try_from(v).unwrap_or(0),
                Slot::Percent(p) => *p = u32::try_from(v).unwrap_or(0),
            }
        }
        self
    }
}

/// Whether a guard is believed reachable (guard-spec §4.1 `is_reachable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachable {
    /// We built a circuit through it.
    Yes,
    /// It failed, and the retry schedule has not yet let us try it again.
    No,
    /// Worth trying.
    Maybe,
}

/// One guard of the sampled set (guard-spec §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledGuard {
    /// Its identity.
    pub rsa_id: RsaIdentity,
    /// Its nickname when sampled.
    pub nickname: Option<String>,
    /// `ADDED_ON_DATE`, randomised into the past.
    pub sampled_on: Timestamp,
    /// `ADDED_BY_VERSION`.
    pub sampled_by: Option<String>,
    /// `IS_LISTED`: a usable guard in the latest consensus.
    pub listed: bool,
    /// `FIRST_UNLISTED_AT`, randomised into the past.
    pub unlisted_since: Option<Timestamp>,
    /// `CONFIRMED_ON_DATE`, randomised into the past.
    pub confirmed_on: Option<Timestamp>,
    /// Unknown `K=V` entries of the persisted line, kept (guard-spec A.5).
    pub extra: Vec<(String, String)>,
    /// `is_reachable` (not persisted).
    pub reachable: Reachable,
    /// `failing_since` (not persisted).
    pub failing_since: Option<Timestamp>,
    /// `last_tried_connect` (not persisted).
    pub last_tried: Option<Timestamp>,
    /// `is_pending` (not persisted).
    pub pending: bool,
}

impl SampledGuard {
    fn new(rsa_id: RsaIdentity, sampled_on: Timestamp) -> Self {
        Self {
            rsa_id,
            nickname: None,
            sampled_on,
            sampled_by: None,
            listed: true,
            unlisted_since: None,
            confirmed_on: None,
            extra: Vec::new(),
            reachable: Reachable::Maybe,
            failing_since: None,
            last_tried: None,
            pending: false,
        }
    }
}

/// What the guard is for (guard-spec §4.6 picks among more primaries for directory fetches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardUsage {
    /// A circuit for user traffic.
    Data,
    /// A directory fetch.
    Dir,
}

/// The state of a circuit with respect to its guard (guard-spec §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardCircState {
    /// Through a primary guard: usable as soon as built.
    UsableOnCompletion,
    /// Through a non-primary guard: usable only if no better guard turns out to work.
    UsableIfNoBetterGuard,
    /// Built through a non-primary guard; waiting to learn whether a better guard works.
    WaitingForBetterGuard,
    /// Usable for streams.
    Complete,
}

/// A handle for a circuit whose guard this manager chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuardCircId(pub u64);

/// The answer of [`GuardMgr::select`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardPick {
    /// The circuit handle to report success or failure with.
    pub circ: GuardCircId,
    /// The chosen guard.
    pub guard: RsaIdentity,
    /// Its index in the view it was chosen from.
    pub idx: RelayIdx,
    /// The circuit's initial state.
    pub state: GuardCircState,
}

/// Something the embedding must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardEvent {
    /// A circuit that was waiting for a better guard is now complete: attach streams.
    CircuitUsable(GuardCircId),
    /// A circuit waited too long for a better guard (`NONPRIMARY_GUARD_IDLE_TIMEOUT`): close it.
    CircuitExpired(GuardCircId),
}

/// Why no guard could be chosen.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardError {
    /// No sampled guard is usable under the restrictions, even after resetting reachability.
    #[error("no usable guard")]
    NoUsableGuard,
    /// The circuit handle is unknown (already reported, or never issued).
    #[error("unknown guard circuit {0:?}")]
    UnknownCircuit(GuardCircId),
}

/// Why [`GuardMgr::exit_path`] could not build a path.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardPathError {
    /// Path selection failed (no exit, no middle, ...).
    #[error(transparent)]
    Path(#[from] PathError),
    /// No guard could be chosen.
    #[error(transparent)]
    Guard(#[from] GuardError),
}

/// A circuit the manager is tracking.
#[derive(Clone, Debug)]
struct TrackedCirc {
    id: GuardCircId,
    guard: RsaIdentity,
    state: GuardCircState,
    /// When it entered its current state.
    since: u64,
    /// Sampled guards this circuit could not use (its restrictions, guard-spec §4.6).
    disallowed: Vec<RsaIdentity>,
}

/// The guard-spec state machine. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct GuardMgr {
    params: GuardParams,
    /// The guard-state instance name (A.5 `in=`).
    instance: String,
    /// SAMPLED_GUARDS, in sample order.
    sampled: Vec<SampledGuard>,
    /// CONFIRMED_GUARDS, in priority order.
    confirmed: Vec<RsaIdentity>,
    /// PRIMARY_GUARDS.
    primary: Vec<RsaIdentity>,
    /// Guards excluded by configuration (ExcludeNodes and the like; guard-spec §4.2).
    excluded: Vec<RsaIdentity>,
    /// `last_time_on_internet`.
    last_time_on_internet: Option<u64>,
    circuits: Vec<TrackedCirc>,
    next_circ: u64,
    events: std::collections::VecDeque<GuardEvent>,
    /// Persisted lines of other instances, kept verbatim.
    foreign_lines: Vec<String>,
}

/// The flags of the {GUARDS} set (guard-spec §4.0), plus Running and Valid.
pub fn guard_flags() -> RelayFlags {
    RelayFlags::GUARD
        | RelayFlags::STABLE
        | RelayFlags::FAST
        | RelayFlags::V2DIR
        | RelayFlags::RUNNING
        | RelayFlags::VALID
}

/// Whether `idx` is in {GUARDS}: a relay usable as a guard for every circuit (guard-spec
/// §4.0).
pub fn is_listed_guard(view: &NetView, idx: RelayIdx) -> bool {
    view.flags(idx).contains(guard_flags()) && view.eligible(idx, WeightRole::Guard)
}

/// `RAND(now, interval)`: a time between `now - interval` and `now` (guard-spec A.2).
fn rand_past(now: u64, interval: u64, rng: &mut impl CryptoRngCore) -> u64 {
    now.saturating_sub(uniform_below(rng, interval.saturating_add(1)))
}

impl GuardMgr {
    /// An empty manager (no sampled guard yet) for the instance named `default`.
    pub fn new(params: GuardParams) -> Self {
        Self {
            params,
            instance: "default".to_string(),
            sampled: Vec::new(),
            confirmed: Vec::new(),
            primary: Vec::new(),
            excluded: Vec::new(),
            last_time_on_internet: None,
            circuits: Vec::new(),
            next_circ: 0,
            events: std::collections::VecDeque::new(),
            foreign_lines: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &GuardParams {
        &self.params
    }

    /// Replace the parameters (e.g. after a consensus changed them).
    pub fn set_params(&mut self, params: GuardParams) {
        self.params = params;
    }

    /// SAMPLED_GUARDS, in sample order.
    pub fn sampled(&self) -> &[SampledGuard] {
        &self.sampled
    }

    /// CONFIRMED_GUARDS, highest priority first.
    pub fn confirmed(&self) -> &[RsaIdentity] {
        &self.confirmed
    }

    /// PRIMARY_GUARDS, first first.
    pub fn primary(&self) -> &[RsaIdentity] {
        &self.primary
    }

    /// Exclude these guards by configuration (guard-spec §4.2) and recompute the primary
    /// guards.
    pub fn set_excluded(&mut self, ids: Vec<RsaIdentity>) {
        self.excluded = ids;
        self.recompute_primary();
    }

    fn get(&self, id: &RsaIdentity) -> Option<&SampledGuard> {
        self.sampled.iter().find(|g| g.rsa_id == *id)
    }

    fn get_mut(&mut self, id: &RsaIdentity) -> Option<&mut SampledGuard> {
        self.sampled.iter_mut().find(|g| g.rsa_id == *id)
    }

    /// FILTERED_GUARDS membership (guard-spec §4.2).
    fn filtered(&self, g: &SampledGuard) -> bool {
        g.listed && !self.excluded.contains(&g.rsa_id)
    }

    /// USABLE_FILTERED_GUARDS membership.
    fn usable_filtered(&self, g: &SampledGuard) -> bool {
        self.filtered(g) && g.reachable != Reachable::No
    }

    fn is_primary(&self, id: &RsaIdentity) -> bool {
        self.primary.contains(id)
    }

    /// guard-spec §4.10: a new consensus, known only through `view`. A guard counts as
    /// listed when the view has it with the {GUARDS} flags; since a view holds only relays
    /// with descriptors, prefer [`GuardMgr::update_from_consensus`] when the consensus is at
    /// hand (guard-spec §4.12: a missing descriptor does not unlist a guard).
    pub fn update_consensus(
        &mut self,
        now: Timestamp,
        view: &NetView,
        rng: &mut impl CryptoRngCore,
    ) {
        let now = now.unix();
        self.update_listed(
            view,
            |id| {
                view.by_rsa_id(id)
                    .is_some_and(|idx| is_listed_guard(view, idx))
            },
            now,
            rng,
        );
    }

    /// guard-spec §4.10 with the consensus itself: IS_LISTED follows the consensus entry's
    /// flags (Guard, Stable, Fast, V2Dir, Running, Valid, not MiddleOnly), whether or not we
    /// hold the guard's descriptor; new guards are sampled from `view` (relays we can use).
    pub fn update_from_consensus(
        &mut self,
        now: Timestamp,
        cons: &Consensus<'_>,
        view: &NetView,
        rng: &mut impl CryptoRngCore,
    ) {
        let now = now.unix();
        let listed: std::collections::HashSet<RsaIdentity> = cons
            .relays
            .iter()
            .filter(|rs| {
                rs.flags.contains(guard_flags()) && !rs.flags.contains(RelayFlags::MIDDLE_ONLY)
            })
            .map(|rs| rs.identity)
            .collect();
        self.update_listed(view, |id| listed.contains(id), now, rng);
    }

    /// guard-spec §4.10 with the consensus's guard list given as identities (an owned
    /// directory's list of relays with the guard flags and not MiddleOnly), as
    /// [`GuardMgr::update_from_consensus`] computes it from the consensus itself.
    pub fn update_listed_ids(
        &mut self,
        now: Timestamp,
        view: &NetView,
        listed: &std::collections::HashSet<RsaIdentity>,
        rng: &mut impl CryptoRngCore,
    ) {
        self.update_listed(view, |id| listed.contains(id), now.unix(), rng);
    }

    /// The primary guards whose descriptor `view` lacks: fetch them first (guard-spec §4.12).
    pub fn missing_descriptors(&self, view: &NetView) -> Vec<RsaIdentity> {
        self.primary
            .iter()
            .filter(|id| view.by_rsa_id(id).is_none())
            .copied()
            .collect()
    }

    /// Updates IS_LISTED / FIRST_UNLISTED_AT, removes expired guards (the consensus is taken
    /// as live), extends the sample if too few guards are usable, and recomputes the primary
    /// guards.
    fn update_listed(
        &mut self,
        view: &NetView,
        is_listed: impl Fn(&RsaIdentity) -> bool,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) {
        let unlisted_fuzz = self.params.remove_unlisted_after.as_secs() / 5;
        for i in 0..self.sampled.len() {
            let id = self.sampled[i].rsa_id;
            let listed = is_listed(&id);
            let fuzzed = rand_past(now, unlisted_fuzz, rng);
            let g = &mut self.sampled[i];
            if listed {
                g.listed = true;
                g.unlisted_since = None;
            } else if g.listed || g.unlisted_since.is_none() {
                g.listed = false;
                g.unlisted_since = Some(Timestamp::from_unix(fuzzed).max(g.sampled_on));
            }
        }
        self.remove_expired(now);
        self.extend_sample(view, now, rng);
        self.recompute_primary();
    }

    /// guard-spec §4.1: drop guards unlisted for too long, and guards past their lifetime
    /// unless confirmed recently enough.
    fn remove_expired(&mut self, now: u64) {
        let p = &self.params;
        let expired = |g: &SampledGuard| {
            let unlisted_too_long = !g.listed
                && g.unlisted_since.is_some_and(|t| {
                    t.unix().saturating_add(p.remove_unlisted_after.as_secs()) < now
                });
            let too_old = g
                .sampled_on
                .unix()
                .saturating_add(p.guard_lifetime.as_secs())
                < now
                && g.confirmed_on.map_or(true, |c| {
                    c.unix().saturating_add(p.confirmed_min_lifetime.as_secs()) < now
                });
            unlisted_too_long || too_old
        };
        let gone: Vec<RsaIdentity> = self
            .sampled
            .iter()
            .filter(|g| expired(g))
            .map(|g| g.rsa_id)
            .collect();
        if gone.is_empty() {
            return;
        }
        self.sampled.retain(|g| !gone.contains(&g.rsa_id));
        self.confirmed.retain(|id| !gone.contains(id));
        self.primary.retain(|id| !gone.contains(id));
    }

    /// The most guards the sample may hold (guard-spec §4.1).
    fn max_sample(&self, n_guards: usize) -> usize {
        let by_threshold =
            n_guards.saturating_mul(self.params.max_sample_threshold_percent as usize) / 100;
        by_threshold
            .min(self.params.max_sample_size)
            .max(self.params.min_filtered_sample)
    }

    /// guard-spec §4.2: add guards, chosen from {GUARDS} - {SAMPLED_GUARDS} by the guard
    /// position weights, until USABLE_FILTERED_GUARDS has MIN_FILTERED_SAMPLE members or the
    /// sample is full.
    fn extend_sample(&mut self, view: &NetView, now: u64, rng: &mut impl CryptoRngCore) {
        let candidates: Vec<(RelayIdx, u64)> = view
            .role_members(WeightRole::Guard)
            .filter(|(idx, _)| is_listed_guard(view, *idx))
            .collect();
        let max = self.max_sample(candidates.len());
        loop {
            let usable = self
                .sampled
                .iter()
                .filter(|g| self.usable_filtered(g))
                .count();
            if usable >= self.params.min_filtered_sample || self.sampled.len() >= max {
                break;
            }
            let pool: Vec<(RelayIdx, u64)> = candidates
                .iter()
                .copied()
                .filter(|(idx, _)| {
                    view.relay(*idx)
                        .is_some_and(|r| self.get(&r.rsa_id).is_none())
                })
                .collect();
            let Some(idx) = weighted_choice(&pool, rng) else {
                break;
            };
            let Some(rec) = view.relay(idx) else {
                break;
            };
            let mut g = SampledGuard::new(
                rec.rsa_id,
                Timestamp::from_unix(rand_past(
                    now,
                    self.params.guard_lifetime.as_secs() / 10,
                    rng,
                )),
            );
            g.nickname = Some(rec.nickname.clone());
            g.sampled_by = Some(self.params.version.clone());
            self.sampled.push(g);
        }
    }

    /// guard-spec §4.4: the first N_PRIMARY_GUARDS of the confirmed and filtered guards,
    /// then the previous non-confirmed primaries that are still filtered, then filtered
    /// guards in sample order.
    fn recompute_primary(&mut self) {
        let n = self.params.n_primary;
        let mut new: Vec<RsaIdentity> = Vec::with_capacity(n);
        let push = |new: &mut Vec<RsaIdentity>, id: RsaIdentity| {
            if new.len() < n && !new.contains(&id) {
                new.push(id);
            }
        };
        for id in &self.confirmed {
            if self.get(id).is_some_and(|g| self.filtered(g)) {
                push(&mut new, *id);
            }
        }
        for id in &self.primary {
            if self.get(id).is_some_and(|g| self.filtered(g)) {
                push(&mut new, *id);
            }
        }
        for g in &self.sampled {
            if self.filtered(g) {
                push(&mut new, g.rsa_id);
            }
        }
        self.primary = new;
    }

    /// guard-spec §4.3 priority as a sort key: lower is higher priority.
    fn priority_key(&self, id: &RsaIdentity) -> (u8, usize, u64) {
        if let Some(pos) = self.confirmed.iter().position(|c| c == id) {
            return (0, pos, 0);
        }
        match self.get(id) {
            Some(g) if g.pending => (1, 0, g.last_tried.map_or(0, Timestamp::unix)),
            _ => (2, 0, 0),
        }
    }

    /// guard-spec §4.6: choose a guard for a new circuit that must not share the path with
    /// `avoid` (the hops already chosen, e.g. the exit: same relay, family or subnet, judged
    /// with `config`). Extends the sample first if needed.
    ///
    /// Guards missing from `view` (no descriptor) cannot carry a circuit and are skipped;
    /// guard-spec §4.12 wants the embedding to fetch the descriptors of the first primary
    /// guards before building circuits: see [`GuardMgr::missing_descriptors`].
    pub fn select(
        &mut self,
        now: Timestamp,
        view: &NetView,
        usage: GuardUsage,
        avoid: &[RelayIdx],
        config: &PathConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<GuardPick, GuardError> {
        self.select_excluding(now, view, usage, avoid, &Exclusions::none(), config, rng)
    }

    /// [`GuardMgr::select`] for a circuit that must also not go through the relays of
    /// `exclude` (a path's [`PathOptions::exclude`]: relays a caller found failing or
    /// refusing). They are a restriction of this circuit only (guard-spec §4.6), like
    /// `avoid` but without its family and subnet rules: a primary guard the circuit may not
    /// use is passed over for the next one, and it stays primary for other circuits.
    #[allow(clippy::too_many_arguments)]
    pub fn select_excluding(
        &mut self,
        now: Timestamp,
        view: &NetView,
        usage: GuardUsage,
        avoid: &[RelayIdx],
        exclude: &Exclusions,
        config: &PathConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<GuardPick, GuardError> {
        let now = now.unix();
        self.retry_due(now);
        if self
            .sampled
            .iter()
            .filter(|g| self.usable_filtered(g))
            .count()
            < self.params.min_filtered_sample
        {
            self.extend_sample(view, now, rng);
            self.recompute_primary();
        }
        let sel = PathSelector::with_config(view, config.clone());
        // A sampled guard is allowed for this circuit if it is in the view (we have its
        // descriptor), not excluded, and compatible with the hops to avoid.
        let allowed = |id: &RsaIdentity| -> Option<RelayIdx> {
            let idx = view.by_rsa_id(id)?;
            (!exclude.contains(idx) && sel.compatible(idx, avoid)).then_some(idx)
        };
        let disallowed: Vec<RsaIdentity> = self
            .sampled
            .iter()
            .filter(|g| allowed(&g.rsa_id).is_none())
            .map(|g| g.rsa_id)
            .collect();
        for attempt in 0..2 {
            if attempt == 1 {
                // Every usable guard is exhausted: mark all as maybe and try again.
                for g in &mut self.sampled {
                    g.reachable = Reachable::Maybe;
                }
            }
            // 1. A reachable primary guard.
            let n_use = match usage {
                GuardUsage::Data => self.params.n_usable_primary,
                GuardUsage::Dir => self.params.n_usable_primary_dir,
            }
            .max(1);
            let prim: Vec<(RsaIdentity, RelayIdx)> = self
                .primary
                .iter()
                .filter(|id| self.get(id).is_some_and(|g| g.reachable != Reachable::No))
                .filter_map(|id| allowed(id).map(|idx| (*id, idx)))
                .take(n_use)
                .collect();
            if !prim.is_empty() {
                let k = uniform_below(rng, prim.len() as u64) as usize;
                if let Some(&(id, idx)) = prim.get(k) {
                    return Ok(self.track(
                        id,
                        idx,
                        GuardCircState::UsableOnCompletion,
                        disallowed,
                        now,
                    ));
                }
            }
            // 2. Confirmed and usable guards in confirmation order, else 3. usable filtered
            // guards in sample order: in each, the first not pending (or the first).
            let not_pending =
                |(id, _): &&(RsaIdentity, RelayIdx)| self.get(id).is_some_and(|g| !g.pending);
            let first = |list: &[(RsaIdentity, RelayIdx)]| {
                list.iter().find(not_pending).or(list.first()).copied()
            };
            let confirmed: Vec<(RsaIdentity, RelayIdx)> = self
                .confirmed
                .iter()
                .filter(|id| self.get(id).is_some_and(|g| self.usable_filtered(g)))
                .filter_map(|id| allowed(id).map(|idx| (*id, idx)))
                .collect();
            let chosen = first(&confirmed).or_else(|| {
                let usable: Vec<(RsaIdentity, RelayIdx)> = self
                    .sampled
                    .iter()
                    .filter(|g| self.usable_filtered(g))
                    .filter_map(|g| allowed(&g.rsa_id).map(|idx| (g.rsa_id, idx)))
                    .collect();
                first(&usable)
            });
            if let Some((id, idx)) = chosen {
                return Ok(self.track(
                    id,
                    idx,
                    GuardCircState::UsableIfNoBetterGuard,
                    disallowed,
                    now,
                ));
            }
        }
        Err(GuardError::NoUsableGuard)
    }

    fn track(
        &mut self,
        id: RsaIdentity,
        idx: RelayIdx,
        state: GuardCircState,
        disallowed: Vec<RsaIdentity>,
        now: u64,
    ) -> GuardPick {
        if let Some(g) = self.get_mut(&id) {
            g.last_tried = Some(Timestamp::from_unix(now));
            if state == GuardCircState::UsableIfNoBetterGuard {
                g.pending = true;
            }
        }
        let circ = GuardCircId(self.next_circ);
        self.next_circ = self.next_circ.wrapping_add(1);
        self.circuits.push(TrackedCirc {
            id: circ,
            guard: id,
            state,
            since: now,
            disallowed,
        });
        GuardPick {
            circ,
            guard: id,
            idx,
            state,
        }
    }

    /// A whole exit path with its guard from this manager, in path-spec §2.2 order: the exit
    /// (for `request`), then the guard (guard-spec §4.6, avoiding the exit's family and
    /// subnet), then the middles. The returned [`GuardPick`] is the handle to report the
    /// circuit's fate with. If the path cannot be completed the guard circuit is forgotten
    /// (reported closed, blaming nobody).
    #[allow(clippy::too_many_arguments)]
    pub fn exit_path(
        &mut self,
        now: Timestamp,
        sel: &PathSelector<'_>,
        request: ExitRequest,
        len: usize,
        opts: &PathOptions<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Path, GuardPick), GuardPathError> {
        let (exit, target) = match request {
            ExitRequest::Named(idx, t) => (idx, t),
            ExitRequest::Target(t) => (sel.choose_exit(Some(t), opts, &[], rng)?, Some(t)),
            ExitRequest::Any => (sel.choose_exit(None, opts, &[], rng)?, None),
        };
        let pick = self.select_excluding(
            now,
            sel.view(),
            GuardUsage::Data,
            &[exit],
            opts.exclude,
            sel.config(),
            rng,
        )?;
        match sel.exit_path(
            ExitRequest::Named(exit, target),
            len,
            Some(pick.idx),
            opts,
            rng,
        ) {
            Ok(path) => Ok((path, pick)),
            Err(e) => {
                let _ = self.circuit_closed(now, pick.circ);
                Err(e.into())
            }
        }
    }

    /// Where tracked circuit `circ` is in `self.circuits`.
    fn circuit_pos(&self, circ: GuardCircId) -> Result<usize, GuardError> {
        self.circuits
            .iter()
            .position(|c| c.id == circ)
            .ok_or(GuardError::UnknownCircuit(circ))
    }

    /// The state of a tracked circuit.
    pub fn circuit_state(&self, circ: GuardCircId) -> Option<GuardCircState> {
        self.circuits.iter().find(|c| c.id == circ).map(|c| c.state)
    }

    /// guard-spec §4.8: the circuit was built, so its guard is reachable; it gets confirmed.
    /// Returns the circuit's new state.
    pub fn circuit_succeeded(
        &mut self,
        now: Timestamp,
        circ: GuardCircId,
        rng: &mut impl CryptoRngCore,
    ) -> Result<GuardCircState, GuardError> {
        let now = now.unix();
        let pos = self.circuit_pos(circ)?;
        let guard = self.circuits[pos].guard;
        let confirm_on = rand_past(now, self.params.guard_lifetime.as_secs() / 10, rng);
        let mut newly_confirmed = false;
        if let Some(g) = self.get_mut(&guard) {
            g.reachable = Reachable::Yes;
            g.failing_since = None;
            g.pending = false;
            if g.confirmed_on.is_none() {
                g.confirmed_on = Some(Timestamp::from_unix(confirm_on));
            }
        }
        if self.get(&guard).is_some() && !self.confirmed.contains(&guard) {
            self.confirmed.push(guard);
            newly_confirmed = true;
        }
        if newly_confirmed {
            let all_primary_confirmed = self.primary.iter().all(|p| self.confirmed.contains(p));
            if !all_primary_confirmed || self.primary.len() < self.params.n_primary {
                self.recompute_primary();
            }
        }
        let new_state = match self.circuits[pos].state {
            GuardCircState::UsableOnCompletion | GuardCircState::Complete => {
                GuardCircState::Complete
            }
            GuardCircState::UsableIfNoBetterGuard | GuardCircState::WaitingForBetterGuard => {
                GuardCircState::WaitingForBetterGuard
            }
        };
        if let Some(c) = self.circuits.get_mut(pos) {
            if c.state != new_state {
                c.since = now;
            }
            c.state = new_state;
        }
        let internet_was_down = self.last_time_on_internet.map_or(true, |t| {
            t.saturating_add(self.params.internet_likely_down.as_secs()) < now
        });
        self.last_time_on_internet = Some(now);
        if new_state == GuardCircState::WaitingForBetterGuard && internet_was_down {
            for id in self.primary.clone() {
                if let Some(g) = self.get_mut(&id) {
                    g.reachable = Reachable::Maybe;
                }
            }
        } else {
            self.update_waiting(now);
        }
        Ok(self.circuit_state(circ).unwrap_or(new_state))
    }

    /// guard-spec §4.7: the circuit failed in a way that blames its guard.
    pub fn circuit_failed(&mut self, now: Timestamp, circ: GuardCircId) -> Result<(), GuardError> {
        let now = now.unix();
        let pos = self.circuit_pos(circ)?;
        let c = self.circuits.remove(pos);
        if let Some(g) = self.get_mut(&c.guard) {
            g.reachable = Reachable::No;
            g.pending = false;
            if g.failing_since.is_none() {
                g.failing_since = Some(Timestamp::from_unix(now));
            }
        }
        self.update_waiting(now);
        Ok(())
    }

    /// The circuit was closed for a reason that says nothing about its guard: forget it.
    pub fn circuit_closed(&mut self, now: Timestamp, circ: GuardCircId) -> Result<(), GuardError> {
        let now = now.unix();
        let pos = self.circuit_pos(circ)?;
        let c = self.circuits.remove(pos);
        if let Some(g) = self.get_mut(&c.guard) {
            g.pending = false;
        }
        self.update_waiting(now);
        Ok(())
    }

    /// guard-spec §4.9: upgrade waiting circuits that nothing better can beat.
    ///
    /// The spec's first condition is "all primary guards are unreachable". Confirming the
    /// circuit's own guard may have made it primary (§4.4); then only the primaries ranked
    /// before it must be unreachable, as its circuit is now one through a primary guard.
    fn update_waiting(&mut self, now: u64) {
        let down = |id: &RsaIdentity| self.get(id).map_or(true, |g| g.reachable == Reachable::No);
        let mut upgrade = Vec::new();
        for c1 in self
            .circuits
            .iter()
            .filter(|c| c.state == GuardCircState::WaitingForBetterGuard)
        {
            let better_primaries_down = self
                .primary
                .iter()
                .take_while(|id| **id != c1.guard)
                .all(down);
            if !better_primaries_down {
                continue;
            }
            let p1 = self.priority_key(&c1.guard);
            let blocked = self.circuits.iter().any(|c2| {
                c2.id != c1.id
                    && !c1.disallowed.contains(&c2.guard)
                    && self.priority_key(&c2.guard) < p1
                    && match c2.state {
                        GuardCircState::Complete | GuardCircState::WaitingForBetterGuard => true,
                        GuardCircState::UsableIfNoBetterGuard => {
                            now.saturating_sub(c2.since)
                                <= self.params.nonprimary_connect_timeout.as_secs()
                        }
                        GuardCircState::UsableOnCompletion => false,
                    }
            });
            if !blocked {
                upgrade.push(c1.id);
            }
        }
        for id in upgrade {
            if let Some(c) = self.circuits.iter_mut().find(|c| c.id == id) {
                c.state = GuardCircState::Complete;
                c.since = now;
                self.events.push_back(GuardEvent::CircuitUsable(id));
            }
        }
    }

    /// guard-spec §4.5: guards whose retry time has come become "maybe" reachable.
    fn retry_due(&mut self, now: u64) {
        let primary = self.primary.clone();
        let p = &self.params;
        for g in &mut self.sampled {
            if g.reachable != Reachable::No {
                continue;
            }
            let sched = if primary.contains(&g.rsa_id) {
                &p.primary_retry
            } else {
                &p.nonprimary_retry
            };
            let failing = g.failing_since.map(Timestamp::unix);
            let failing_for = now.saturating_sub(failing.unwrap_or(now));
            let last = g.last_tried.map(Timestamp::unix).or(failing).unwrap_or(0);
            if now >= last.saturating_add(sched.interval(failing_for)) {
                g.reachable = Reachable::Maybe;
            }
        }
    }

    /// Run the time-driven rules: retries (§4.5), idle waiting circuits (§4.9), and
    /// upgrades that became possible because connect timeouts passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = now.unix();
        self.retry_due(now);
        let idle = self.params.nonprimary_idle_timeout.as_secs();
        let mut expired = Vec::new();
        self.circuits.retain(|c| {
            let keep = !(c.state == GuardCircState::WaitingForBetterGuard
                && now.saturating_sub(c.since) > idle);
            if !keep {
                expired.push(c.id);
            }
            keep
        });
        for id in expired {
            self.events.push_back(GuardEvent::CircuitExpired(id));
        }
        self.update_waiting(now);
    }

    /// The next time [`GuardMgr::handle_timeout`] has something to do, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let retries = self
            .sampled
            .iter()
            .filter(|g| g.reachable == Reachable::No)
            .map(|g| {
                let sched = if self.is_primary(&g.rsa_id) {
                    &self.params.primary_retry
                } else {
                    &self.params.nonprimary_retry
                };
                let failing = g.failing_since.map(Timestamp::unix);
                let last = g.last_tried.map(Timestamp::unix).or(failing).unwrap_or(0);
                // The interval can only grow with time; the current one is a lower bound.
                last.saturating_add(sched.interval(last.saturating_sub(failing.unwrap_or(last))))
            });
        let circs = self.circuits.iter().filter_map(|c| match c.state {
            GuardCircState::WaitingForBetterGuard => Some(
                c.since
                    .saturating_add(self.params.nonprimary_idle_timeout.as_secs() + 1),
            ),
            GuardCircState::UsableIfNoBetterGuard => Some(
                c.since
                    .saturating_add(self.params.nonprimary_connect_timeout.as_secs() + 1),
            ),
            _ => None,
        });
        retries.chain(circs).min().map(Timestamp::from_unix)
    }

    /// The next event for the embedding, if any.
    pub fn poll_event(&mut self) -> Option<GuardEvent> {
        self.events.pop_front()
    }
}

/// A weighted choice among `(relay, weight)` pairs (uniform if every weight is zero).
fn weighted_choice(pool: &[(RelayIdx, u64)], rng: &mut impl CryptoRngCore) -> Option<RelayIdx> {
    if pool.is_empty() {
        return None;
    }
    let total = pool.iter().fold(0u64, |a, (_, w)| a.saturating_add(*w));
    if total == 0 {
        let k = uniform_below(rng, pool.len() as u64) as usize;
        return pool.get(k).map(|(i, _)| *i);
    }
    let mut r = uniform_below(rng, total);
    for (i, w) in pool {
        if r < *w {
            return Some(*i);
        }
        r -= w;
    }
    pool.last().map(|(i, _)| *i)
}
