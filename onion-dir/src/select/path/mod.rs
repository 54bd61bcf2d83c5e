//! Path selection (path-spec §2.2): which relays a circuit goes through.
//!
//! The order is path-spec's: the exit (or last hop) first, then the guard, then the middle
//! hops front to back. Every hop
//!
//! * has `Running` and `Valid`, `Fast` for a "fast" circuit and `Stable` for a "stable" one
//!   (path-spec §1.1, §2.2; long-lived ports ask for `Stable`), plus the flags of its position
//!   ([`WeightRole::required_flags`]): `Guard` for the first hop, and an exit policy allowing
//!   the request and no `BadExit` for the exit (path-spec §2.2.1);
//! * is drawn with probability proportional to its bandwidth times the consensus weight for
//!   that position (`Wgg`, `Wmg`, `Wee`, ..., see [`BandwidthWeights::relay_weight`]);
//! * is never the same relay as, in the same family as, or (unless
//!   [`PathConfig::enforce_distinct_subnets`] is off, as on private test networks) in the
//!   same IPv4 /16 or IPv6 /32 as another hop (path-spec §2.2). Two relays are one family
//!   when their `family` lines list each other (dir-spec §2.1.1) or their `family-ids`
//!   share an ID (proposal 321 "happy families", as C tor 0.4.9 clients judge it; see
//!   [`NetView::same_family`]);
//! * is not in the caller's [`Exclusions`].
//!
//! A choice first draws from the precomputed cumulative weights of the position (a binary
//! search) and rejects candidates that break a rule; after [`REJECTION_TRIES`] rejections it
//! falls back to an exact linear pass over the eligible relays. Both give exactly the
//! bandwidth-weighted distribution restricted to the acceptable relays, so the fallback only
//! changes the speed. All randomness comes from the caller's RNG: a seeded RNG reproduces a
//! path.
//!
//! [`BandwidthWeights::relay_weight`]: crate::consensus::BandwidthWeights::relay_weight

use rand_core::CryptoRngCore;

use crate::ids::{RelayFlags, RsaIdentity};
use crate::netview::{NetView, RelayIdx, RelayRecord, WeightRole};
use crate::policy::ExitTarget;

/// How many weighted draws are rejected before falling back to the exact linear pass.
pub const REJECTION_TRIES: usize = 32;

/// The longest path this module builds (onion-service circuits use 4; vanguards up to 5-6).
pub const MAX_PATH_LEN: usize = 8;

/// The default "long-lived" ports: a stream to one of them asks for a `Stable` circuit
/// (path-spec §2.2).
pub const LONG_LIVED_PORTS: [u16; 11] =
    [21, 22, 706, 1863, 5050, 5190, 5222, 5223, 6667, 6697, 8300];

/// Options that hold for every path built with one [`PathSelector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathConfig {
    /// Refuse two hops in the same IPv4 /16 or IPv6 /32 (C tor's `EnforceDistinctSubnets`,
    /// default on; a private network on 127.0.0.1 must turn it off).
    pub enforce_distinct_subnets: bool,
    /// Ports whose streams need a `Stable` circuit.
    pub long_lived_ports: Vec<u16>,
    /// When no relay for a hop has the `Fast`/`Stable` flags the circuit needs, choose among
    /// relays without them rather than fail (C tor's fallback in `router_choose_random_node`;
    /// default on). Off, such a hop fails with [`PathError::NoCandidates`].
    pub relax_capacity_flags: bool,
}

impl Default for PathConfig {
    fn default() -> Self {
        Self {
            enforce_distinct_subnets: true,
            long_lived_ports: LONG_LIVED_PORTS.to_vec(),
            relax_capacity_flags: true,
        }
    }
}

/// Relays the caller does not want in a path (C tor's `ExcludeNodes`, or the hops of a
/// circuit being replaced).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusions {
    sorted: Vec<u32>,
}

impl Exclusions {
    /// No exclusion.
    pub fn none() -> Self {
        Self::default()
    }

    /// Exclude these relays.
    pub fn from_indices(idx: impl IntoIterator<Item = RelayIdx>) -> Self {
        let mut sorted: Vec<u32> = idx.into_iter().map(|i| i.0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self { sorted }
    }

    /// Exclude the relays of `view` with these identities (identities not in the view are
    /// ignored: they cannot be chosen anyway).
    pub fn from_ids<'a>(view: &NetView, ids: impl IntoIterator<Item = &'a RsaIdentity>) -> Self {
        Self::from_indices(ids.into_iter().filter_map(|id| view.by_rsa_id(id)))
    }

    /// Whether `idx` is excluded.
    pub fn contains(&self, idx: RelayIdx) -> bool {
        self.sorted.binary_search(&idx.0).is_ok()
    }

    /// Whether nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// These exclusions plus `more` (vanguard paths exclude the hops already chosen by
    /// identity only, see [`crate::select::vanguards`]).
    pub fn with(&self, more: impl IntoIterator<Item = RelayIdx>) -> Self {
        Self::from_indices(self.sorted.iter().map(|&i| RelayIdx(i)).chain(more))
    }
}

/// Per-circuit requirements.
#[derive(Clone, Copy, Debug)]
pub struct PathOptions<'a> {
    /// Every hop needs `Fast` (a "fast" circuit; path-spec §2.2). Default true, as C tor's
    /// general-purpose circuits.
    pub need_fast: bool,
    /// Every hop needs `Stable`. Set automatically when the exit port is long-lived.
    pub need_stable: bool,
    /// Relays not to use.
    pub exclude: &'a Exclusions,
}

static NO_EXCLUSIONS: Exclusions = Exclusions { sorted: Vec::new() };

impl Default for PathOptions<'_> {
    fn default() -> Self {
        Self {
            need_fast: true,
            need_stable: false,
            exclude: &NO_EXCLUSIONS,
        }
    }
}

impl PathOptions<'_> {
    /// The same requirements with `exclude` as the relays not to use (typically the
    /// caller's exclusions widened with [`Exclusions::with`] for one hop).
    pub fn excluding<'b>(&self, exclude: &'b Exclusions) -> PathOptions<'b> {
        PathOptions {
            need_fast: self.need_fast,
            need_stable: self.need_stable,
            exclude,
        }
    }
}

/// What the exit of a path must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRequest {
    /// Any relay whose policy allows some port (a preemptive circuit).
    Any,
    /// A relay whose policy allows (or might allow) this target (path-spec §2.2.1).
    Target(ExitTarget),
    /// This relay, named by the caller (the `.exit` notation of path-spec §2.2.2). Its policy
    /// must still allow `target`, if one is given.
    Named(RelayIdx, Option<ExitTarget>),
}

/// Why no path could be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// No relay can take this position under the constraints.
    #[error("no suitable relay for the {0} position")]
    NoCandidates(&'static str),
    /// A relay index that is not in the view.
    #[error("relay index {0} is not in the network view")]
    UnknownRelay(u32),
    /// The caller-named exit cannot serve the request.
    #[error("the named exit {0} does not allow the requested target or is excluded")]
    NamedExitUnsuitable(RsaIdentity),
    /// The guard handed in conflicts with another hop (same relay, family or subnet) or is
    /// excluded.
    #[error("guard {0} conflicts with another hop of the path")]
    GuardConflict(RsaIdentity),
    /// The caller-named final hop cannot be used.
    #[error("target relay {0} is excluded or lacks a required flag")]
    TargetUnsuitable(RsaIdentity),
    /// The requested length is outside what this kind of path allows.
    #[error("path length {0} not supported (exit paths: 2..={MAX_PATH_LEN}, internal: 1..={MAX_PATH_LEN})")]
    BadLength(usize),
}

/// A chosen path: relay indices into the [`NetView`] it was chosen from, first hop first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    hops: Vec<RelayIdx>,
}

impl Path {
    /// A path of these hops, guard first, for the other path builders of this crate
    /// ([`crate::select::vanguards`]), which check the rules themselves.
    pub(crate) fn from_hops(hops: Vec<RelayIdx>) -> Self {
        Self { hops }
    }

    /// The hops, guard first.
    pub fn hops(&self) -> &[RelayIdx] {
        &self.hops
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether the path is empty (never, for a path built here).
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The relay records of the hops, guard first.
    pub fn records<'s, 'v: 's>(
        &'s self,
        view: &'v NetView,
    ) -> impl Iterator<Item = &'v RelayRecord> + 's {
        self.hops.iter().filter_map(move |&h| view.relay(h))
    }
}

/// Chooses paths over one [`NetView`].
#[derive(Clone, Debug)]
pub struct PathSelector<'v> {
    view: &'v NetView,
    config: PathConfig,
}

/// The flags every hop of a circuit needs, from the per-circuit options.
fn circuit_flags(opts: &PathOptions<'_>) -> RelayFlags {
    let mut f = RelayFlags::empty();
    if opts.need_fast {
        f = f | RelayFlags::FAST;
    }
    if opts.need_stable {
        f = f | RelayFlags::STABLE;
    }
    f
}

/// Run `pick` with the capacity/uptime flags `need`, and, when no relay has them and `enabled`,
/// once more without: C tor's `router_choose_random_node` falls back the same way ("We couldn't find any
/// live Fast/Stable routers; falling back to list of all routers"), which matters in a young or
/// tiny network whose relays have not yet earned `Fast` or `Stable`. Role flags (`Guard`,
/// `Exit`, `HSDir`, ...) are never relaxed.
fn relaxing<F: FnMut(RelayFlags) -> Option<RelayIdx>>(
    enabled: bool,
    need: RelayFlags,
    mut pick: F,
) -> Option<RelayIdx> {
    pick(need).or_else(|| {
        if !enabled || need == RelayFlags::empty() {
            None
        } else {
            pick(RelayFlags::empty())
        }
    })
}

impl<'v> PathSelector<'v> {
    /// A selector with the default [`PathConfig`].
    pub fn new(view: &'v NetView) -> Self {
        Self::with_config(view, PathConfig::default())
    }

    /// A selector with the given configuration.
    pub fn with_config(view: &'v NetView, config: PathConfig) -> Self {
        Self { view, config }
    }

    /// The view paths are chosen from.
    pub fn view(&self) -> &'v NetView {
        self.view
    }

    /// The configuration.
    pub fn config(&self) -> &PathConfig {
        &self.config
    }

    /// Whether `c` may share a path with every relay of `chosen`: not the same relay, not the
    /// same family, not the same subnet (path-spec §2.2).
    #[inline]
    pub fn compatible(&self, c: RelayIdx, chosen: &[RelayIdx]) -> bool {
        let subnets = self.config.enforce_distinct_subnets;
        chosen.iter().all(|&s| !self.view.conflict(c, s, subnets))
    }

    /// Whether `c` meets the flag, exclusion and compatibility rules for a hop in `role`
    /// (everything but the exit policy).
    fn acceptable(
        &self,
        c: RelayIdx,
        role: WeightRole,
        need: RelayFlags,
        opts: &PathOptions<'_>,
        chosen: &[RelayIdx],
    ) -> bool {
        self.view.eligible(c, role)
            && self.view.flags(c).contains(need)
            && !opts.exclude.contains(c)
            && self.compatible(c, chosen)
    }

    /// Draw one relay for `role` among those passing `ok`, weighted (see module docs).
    fn pick<F: Fn(RelayIdx) -> bool>(
        &self,
        role: WeightRole,
        ok: F,
        rng: &mut impl CryptoRngCore,
    ) -> Option<RelayIdx> {
        for _ in 0..REJECTION_TRIES {
            let c = RelayIdx(self.view.sample_role(role, rng)?);
            if ok(c) {
                return Some(c);
            }
        }
        // Exact fallback: the same distribution, computed over the acceptable relays only.
        let (cum, members) = self.view.table(role);
        let mut total: u64 = 0;
        let mut count: u64 = 0;
        let mut prev = 0u64;
        for (&c, &m) in cum.iter().zip(members) {
            let w = c - prev;
            prev = c;
            if ok(RelayIdx(m)) {
                total += w;
                count += 1;
            }
        }
        if count == 0 {
            return None;
        }
        let mut prev = 0u64;
        if total == 0 {
            let mut k = crate::netview::uniform_below(rng, count);
            for &m in members {
                if ok(RelayIdx(m)) {
                    if k == 0 {
                        return Some(RelayIdx(m));
                    }
                    k -= 1;
                }
            }
            return None;
        }
        let mut r = crate::netview::uniform_below(rng, total);
        for (&c, &m) in cum.iter().zip(members) {
            let w = c - prev;
            prev = c;
            if w > 0 && ok(RelayIdx(m)) {
                if r < w {
                    return Some(RelayIdx(m));
                }
                r -= w;
            }
        }
        None
    }

    /// Choose an exit for `target` (`None`: any relay allowing some port), compatible with
    /// `chosen` (path-spec §2.2.1).
    pub fn choose_exit(
        &self,
        target: Option<ExitTarget>,
        opts: &PathOptions<'_>,
        chosen: &[RelayIdx],
        rng: &mut impl CryptoRngCore,
    ) -> Result<RelayIdx, PathError> {
        let opts = self.adjust_for_target(opts, target);
        relaxing(
            self.config.relax_capacity_flags,
            circuit_flags(&opts),
            |need| {
                self.pick(
                    WeightRole::Exit,
                    |c| {
                        self.acceptable(c, WeightRole::Exit, need, &opts, chosen)
                            && target.map_or(true, |t| {
                                self.view.relay(c).is_some_and(|r| r.policy.allows(t))
                            })
                    },
                    rng,
                )
            },
        )
        .ok_or(PathError::NoCandidates("exit"))
    }

    /// Choose a guard (first hop) compatible with `chosen`, weighted by `Wg?` (path-spec §5).
    /// A client with a guard manager asks it instead (see [`crate::select::guard`]).
    pub fn choose_guard(
        &self,
        opts: &PathOptions<'_>,
        chosen: &[RelayIdx],
        rng: &mut impl CryptoRngCore,
    ) -> Result<RelayIdx, PathError> {
        self.choose_in_role(WeightRole::Guard, RelayFlags::empty(), opts, chosen, rng)
            .ok_or(PathError::NoCandidates("guard"))
    }

    /// A relay acceptable for `role` with the circuit's flags plus `extra`, weighted for
    /// `role`: the shared body of the non-exit `choose_*` methods.
    fn choose_in_role(
        &self,
        role: WeightRole,
        extra: RelayFlags,
        opts: &PathOptions<'_>,
        chosen: &[RelayIdx],
        rng: &mut impl CryptoRngCore,
    ) -> Option<RelayIdx> {
        relaxing(
            self.config.relax_capacity_flags,
            circuit_flags(opts),
            |need| {
                self.pick(
                    role,
                    |c| self.acceptable(c, role, need | extra, opts, chosen),
                    rng,
                )
            },
        )
    }

    /// Choose a middle hop compatible with `chosen`, weighted by `Wm?`.
    pub fn choose_middle(
        &self,
        opts: &PathOptions<'_>,
        chosen: &[RelayIdx],
        rng: &mut impl CryptoRngCore,
    ) -> Result<RelayIdx, PathError> {
        self.choose_in_role(WeightRole::Middle, RelayFlags::empty(), opts, chosen, rng)
            .ok_or(PathError::NoCandidates("middle"))
    }

    /// Choose a relay with the `HSDir` flag, weighted as a middle hop, compatible with
    /// `chosen` (rend-spec-v3 §2.2.3; the hash ring itself lives in the onion-service crate,
    /// see [`PathSelector::hsdirs`]).
    pub fn choose_hsdir(
        &self,
        opts: &PathOptions<'_>,
        chosen: &[RelayIdx],
        rng: &mut impl CryptoRngCore,
    ) -> Result<RelayIdx, PathError> {
        self.choose_in_role(WeightRole::Middle, RelayFlags::HSDIR, opts, chosen, rng)
            .ok_or(PathError::NoCandidates("hsdir"))
    }

    /// Every relay with the `HSDir` flag (and `Running`, `Valid`), for the onion-service
    /// hash ring.
    pub fn hsdirs(&self) -> impl Iterator<Item = RelayIdx> + 'v {
        let view = self.view;
        (0..view.len() as u32).map(RelayIdx).filter(move |&i| {
            view.flags(i)
                .contains(RelayFlags::HSDIR | RelayFlags::RUNNING | RelayFlags::VALID)
        })
    }

    /// A one-hop directory path: a relay with `V2Dir`, weighted by `Wb?`.
    pub fn choose_dir(
        &self,
        opts: &PathOptions<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<RelayIdx, PathError> {
        self.choose_in_role(WeightRole::Dir, RelayFlags::empty(), opts, &[], rng)
            .ok_or(PathError::NoCandidates("directory"))
    }

    /// Streams to long-lived ports need a `Stable` circuit (path-spec §2.2).
    fn adjust_for_target<'o>(
        &self,
        opts: &PathOptions<'o>,
        target: Option<ExitTarget>,
    ) -> PathOptions<'o> {
        let port = match target {
            Some(ExitTarget::Port(p)) | Some(ExitTarget::Addr(_, p)) => Some(p),
            None => None,
        };
        let mut o = *opts;
        if port.is_some_and(|p| self.config.long_lived_ports.contains(&p)) {
            o.need_stable = true;
        }
        o
    }

    fn check_guard(
        &self,
        guard: RelayIdx,
        opts: &PathOptions<'_>,
        chosen: &[RelayIdx],
    ) -> Result<(), PathError> {
        let rec = self
            .view
            .relay(guard)
            .ok_or(PathError::UnknownRelay(guard.0))?;
        if opts.exclude.contains(guard) || !self.compatible(guard, chosen) {
            return Err(PathError::GuardConflict(rec.rsa_id));
        }
        Ok(())
    }

    /// An exit path of `len` hops (usually 3): exit first, then the guard (`guard`, when a
    /// guard manager chose it; it must not conflict with the exit), then the middles.
    pub fn exit_path(
        &self,
        request: ExitRequest,
        len: usize,
        guard: Option<RelayIdx>,
        opts: &PathOptions<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Path, PathError> {
        if !(2..=MAX_PATH_LEN).contains(&len) {
            return Err(PathError::BadLength(len));
        }
        let (exit, target) = match request {
            ExitRequest::Any => (self.choose_exit(None, opts, &[], rng)?, None),
            ExitRequest::Target(t) => (self.choose_exit(Some(t), opts, &[], rng)?, Some(t)),
            ExitRequest::Named(idx, t) => {
                let rec = self.view.relay(idx).ok_or(PathError::UnknownRelay(idx.0))?;
                let ok = !opts.exclude.contains(idx)
                    && t.map_or(rec.policy.allows_some_port(), |t| rec.policy.allows(t));
                if !ok {
                    return Err(PathError::NamedExitUnsuitable(rec.rsa_id));
                }
                (idx, t)
            }
        };
        let opts = self.adjust_for_target(opts, target);
        self.complete_path(exit, len, guard, &opts, rng)
    }

    /// An internal path of `len` hops (onion-service circuits: 4 to an introduction point or
    /// HSDir, 3 to a rendezvous point). When `target` is given it is the last hop (the
    /// caller's introduction point, rendezvous point or HSDir) and the other hops avoid its
    /// family and subnet; otherwise the last hop is chosen like a middle (path-spec §1.1
    /// "internal circuit"). Onion-service circuits should set `need_stable`.
    pub fn internal_path(
        &self,
        len: usize,
        target: Option<RelayIdx>,
        guard: Option<RelayIdx>,
        opts: &PathOptions<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Path, PathError> {
        if !(1..=MAX_PATH_LEN).contains(&len) {
            return Err(PathError::BadLength(len));
        }
        let last = match target {
            Some(t) => {
                let rec = self.view.relay(t).ok_or(PathError::UnknownRelay(t.0))?;
                let ok = !opts.exclude.contains(t)
                    && self
                        .view
                        .flags(t)
                        .contains(RelayFlags::RUNNING | RelayFlags::VALID);
                if !ok {
                    return Err(PathError::TargetUnsuitable(rec.rsa_id));
                }
                t
            }
            None if len == 1 => match guard {
                Some(g) => {
                    self.check_guard(g, opts, &[])?;
                    return Ok(Path { hops: vec![g] });
                }
                None => self.choose_guard(opts, &[], rng)?,
            },
            None => self.choose_middle(opts, &[], rng)?,
        };
        if len == 1 {
            return Ok(Path { hops: vec![last] });
        }
        self.complete_path(last, len, guard, opts, rng)
    }

    /// Given the last hop, choose the guard (or check the given one) and then the middles.
    fn complete_path(
        &self,
        last: RelayIdx,
        len: usize,
        guard: Option<RelayIdx>,
        opts: &PathOptions<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Path, PathError> {
        let mut hops: Vec<RelayIdx> = Vec::with_capacity(len);
        let guard = match guard {
            Some(g) => {
                self.check_guard(g, opts, &[last])?;
                g
            }
            None => self.choose_guard(opts, &[last], rng)?,
        };
        hops.push(guard);
        // The middles are checked against every hop already chosen, including the last.
        let mut chosen: Vec<RelayIdx> = Vec::with_capacity(len);
        chosen.push(last);
        chosen.push(guard);
        for _ in 2..len {
            let m = self.choose_middle(opts, &chosen, rng)?;
            chosen.push(m);
            hops.push(m);
        }
        hops.push(last);
        Ok(Path { hops })
    }
}

#[cfg(test)]
mod tests;
