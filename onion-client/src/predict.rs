//! Predicted ports and preemptive circuits (path-spec §2.1.1): which clean circuits to keep
//! built ahead of need, so that a new stream finds one ready.
//!
//! [`PredictedPorts`] remembers the exit ports streams asked for, and whether internal
//! (onion-service) circuits were needed, within a relevance window; [`PredictedPorts::wanted`]
//! then decides, from a summary of the circuits the client has, the next circuit to launch.
//! The rules are C tor's (`predict_ports.c`, `circuit_predict_and_launch_new`), which refine
//! the spec's text:
//!
//! - The window is C tor's `CircuitsAvailableTimeout`: `nf_conntimeout_clients` (30 min by
//!   default) plus a random part of up to the same again, so 30 to 60 minutes, drawn again
//!   each time a prediction is made while none was in force. (The spec's one hour,
//!   `PredictedPortsRelevanceTime`, is obsolete.)
//! - At start, port 443 is predicted (C tor 0.4.9; the spec's text says 80), and internal
//!   circuits are predicted from the first decision on, for one window.
//! - A resolve predicts port 80 (C tor's `rep_hist_note_used_resolve`).
//! - No more preemptive circuits once 14 clean ones are open or building
//!   ([`MAX_UNUSED_OPEN_CIRCUITS`]; the spec's text says 12).
//! - An exit circuit is launched while some predicted port is handled by fewer than 2
//!   usable exit circuits ([`MIN_CIRCUITS_HANDLING_STREAM`]); its exit should accept as many
//!   of the unhandled ports as possible. A port in `LongLivedPorts` asks for a stable
//!   circuit.
//! - A hosted onion service wants 3 clean stable internal circuits; an onion-service client
//!   (internal prediction in force) wants 3 clean internal ones, 2 of them stable if a stable
//!   one was asked for. (C tor's `needs_hs_client_circuits` tests the pointer `needs_uptime`
//!   rather than its value, so it asks for 2 stable ones even when none was asked for, and
//!   then launches unstable ones, which never satisfy it, up to the 14-circuit bound; here
//!   the spec's intent is followed.)
//! - While the build timeout is being learned, a test circuit every `cbttestfreq` while
//!   fewer than `cbtmaxopencircs` clean circuits exist (path-spec §2.4.2).
//! - At most one circuit per decision, in that order; C tor decides once a second.
//!
//! On-demand circuits (for a stream no circuit can carry) are limited separately, by
//! [`MAX_CLIENT_CIRCUITS_PENDING`] ([`may_launch_on_demand`]); C tor does not apply that
//! limit to preemptive circuits, which the 14 clean circuits bound instead.
//!
//! The list is never persisted (path-spec §2.1.1).

use std::time::Duration;

use rand_core::RngCore;

use crate::timeout::BuildTimes;
use crate::Instant;

/// No preemptive circuit is launched while this many clean circuits are open or building
/// (C tor's `MAX_UNUSED_OPEN_CIRCUITS`).
pub const MAX_UNUSED_OPEN_CIRCUITS: usize = 14;

/// A predicted port is covered when this many usable exit circuits can carry it (C tor's
/// `MIN_CIRCUITS_HANDLING_STREAM`; path-spec §2.1.1 "two fast clean exit circuits").
pub const MIN_CIRCUITS_HANDLING_STREAM: usize = 2;

/// At most this many general client circuits are pending (building) before a new on-demand
/// circuit waits (C tor's `MaxClientCircuitsPending` default).
pub const MAX_CLIENT_CIRCUITS_PENDING: usize = 32;

/// How many distinct ports are remembered. C tor keeps no bound; here the least recently
/// used port is forgotten to make room, so a client talking to many ports predicts its 64
/// most recent ones.
pub const MAX_PREDICTED_PORTS: usize = 64;

/// C tor's default `LongLivedPorts`: streams to these ports ask for stable circuits.
pub const DEFAULT_LONG_LIVED_PORTS: [u16; 12] = [
    21, 22, 706, 1863, 5050, 5190, 5222, 5223, 6523, 6667, 6697, 8300,
];

/// The port predicted at start (C tor's `predicted_ports_init`).
pub const INITIAL_PORT: u16 = 443;

/// The port a resolve request predicts (C tor's `rep_hist_note_used_resolve`).
pub const RESOLVE_PORT: u16 = 80;

/// A hosted onion service wants this many clean stable internal circuits.
const SUFFICIENT_UPTIME_INTERNAL_HS_SERVERS: usize = 3;
/// An onion-service client wants this many clean internal circuits.
const SUFFICIENT_INTERNAL_HS_CLIENTS: usize = 3;
/// ... of which this many stable, when stability was asked for.
const SUFFICIENT_UPTIME_INTERNAL_HS_CLIENTS: usize = 2;

/// `nf_conntimeout_clients`: default, minimum and maximum, in seconds (C tor's
/// `channelpadding.c`).
const CONNTIMEOUT_CLIENTS: (i64, i64, i64) = (30 * 60, 60, 24 * 60 * 60);

/// Whether on-demand circuits may be launched with `pending` general client circuits
/// already building ([`MAX_CLIENT_CIRCUITS_PENDING`]). When not, the stream waits until a
/// pending circuit finishes.
pub fn may_launch_on_demand(pending: usize) -> bool {
    pending < MAX_CLIENT_CIRCUITS_PENDING
}

/// What the directory lets the client build (C tor's `router_have_consensus_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsensusPath {
    /// Not known yet: no consensus, or not checked.
    Unknown,
    /// Only internal circuits: the consensus lists no usable exit.
    Internal,
    /// Exit circuits too.
    Exit,
}

/// The counts of clean circuits [`PredictedPorts::wanted`] needs. A clean circuit is open or
/// still building, not closing, general-purpose or a vanguards-lite internal circuit, more
/// than one hop, never used by a stream and still usable for new streams (C tor's
/// `circuit_is_available_for_use`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clean {
    /// All clean circuits.
    pub total: usize,
    /// Clean internal circuits (no exit chosen for a port).
    pub internal: usize,
    /// Clean internal circuits built from stable relays.
    pub internal_stable: usize,
}

/// The client's circuits as [`PredictedPorts::wanted`] sees them.
pub trait CircuitPool {
    /// The clean circuits.
    fn clean(&self) -> Clean;
    /// How many exit circuits could carry a new stream to `port` now: open or building, not
    /// closing, general purpose, not internal, not one-hop, usable for new streams, clean or
    /// dirty for less than `MaxCircuitDirtiness`, not yet tied to an isolation token, with an
    /// exit whose policy accepts `port`; only stable circuits when `need_stable`. The
    /// implementation may stop counting at [`MIN_CIRCUITS_HANDLING_STREAM`].
    fn exits_handling(&self, port: u16, need_stable: bool) -> usize;
}

/// The next circuit to launch, from [`PredictedPorts::wanted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// A general-purpose exit circuit of fast relays. Choose its exit among those whose
    /// policy accepts at least one of `ports` (bandwidth-weighted, path-spec §2.2.1); if
    /// none accepts any, choose among all exits and call
    /// [`PredictedPorts::remove`]`(&ports)`, as C tor does.
    Exit {
        /// The predicted ports fewer than two usable circuits can carry yet.
        ports: Vec<u16>,
        /// Build it from stable relays (a port among `LongLivedPorts`).
        stable: bool,
    },
    /// An internal circuit of fast relays for onion services (vanguards-lite purpose).
    Internal {
        /// Build it from stable relays.
        stable: bool,
        /// For a hosted service (true) or for the onion-service client (false).
        for_service: bool,
    },
    /// A build-time measurement circuit of fast relays (path-spec §2.4.2): a general exit
    /// circuit, or an internal one when the consensus has no exit.
    Test {
        /// Internal instead of exit.
        internal: bool,
    },
}

/// What a client's onion-service circuits cost (C tor's cannibalization, path-spec §2.3):
/// a circuit taken from the pre-built internal ones needs at most one EXTEND2 once the need
/// arises (none for a client's rendezvous point), one built from scratch a CREATE2 and an
/// EXTEND2 per further hop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HsCircuitStats {
    /// Onion-service circuits taken from pre-built internal circuits.
    pub cannibalized: u64,
    /// Onion-service circuits built from scratch (no pre-built circuit fitted).
    pub launched: u64,
    /// EXTEND2 cells sent for onion-service circuits after they were asked for.
    pub extends: u64,
}

/// One remembered port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Predicted {
    port: u16,
    last_used: Instant,
}

/// The ports and internal circuits predicted from recent use (path-spec §2.1.1).
#[derive(Debug, Clone)]
pub struct PredictedPorts {
    /// At most [`MAX_PREDICTED_PORTS`], distinct.
    ports: Vec<Predicted>,
    /// The relevance window in force (C tor's `prediction_timeout`).
    relevance: Duration,
    /// `nf_conntimeout_clients`, or the embedder's `CircuitsAvailableTimeout`, before the
    /// random part.
    base: Duration,
    /// Whether `base` was set by the embedder (consensus changes then leave it alone).
    base_configured: bool,
    /// When a prediction was last made (C tor's `last_prediction_add_time`).
    last_add: Instant,
    /// When internal circuits were last needed; `None` until the first decision, which
    /// starts the window (C tor initializes it lazily).
    internal: Option<Instant>,
    /// When stable internal circuits were last needed.
    internal_stable: Option<Instant>,
    /// Ports that ask for stable circuits.
    long_lived: Vec<u16>,
}

impl PredictedPorts {
    /// A new list at `now` predicting [`INITIAL_PORT`], with the default window
    /// (`nf_conntimeout_clients` 30 min, randomized by `rng` to 30–60 min) and
    /// [`DEFAULT_LONG_LIVED_PORTS`].
    pub fn new(now: Instant, rng: &mut impl RngCore) -> PredictedPorts {
        let mut p = PredictedPorts {
            ports: Vec::new(),
            relevance: Duration::ZERO,
            base: Duration::from_secs(CONNTIMEOUT_CLIENTS.0 as u64),
            base_configured: false,
            last_add: now,
            internal: None,
            internal_stable: None,
            long_lived: DEFAULT_LONG_LIVED_PORTS.to_vec(),
        };
        p.record(INITIAL_PORT, now, rng);
        p
    }

    /// Reads `nf_conntimeout_clients` (default 1800 s, clamped to 60 s–24 h) from consensus
    /// `(name, value)` pairs; it takes effect when the window is next drawn. Ignored when
    /// [`PredictedPorts::set_window`] set the window.
    pub fn set_params<'a>(&mut self, params: impl IntoIterator<Item = (&'a str, i64)>) {
        if self.base_configured {
            return;
        }
        let (default, min, max) = CONNTIMEOUT_CLIENTS;
        let v = params
            .into_iter()
            .filter(|(k, _)| *k == "nf_conntimeout_clients")
            .last()
            .map_or(default, |(_, v)| v.clamp(min, max));
        self.base = Duration::from_secs(v as u64);
    }

    /// Sets the window's base (C tor's `CircuitsAvailableTimeout`, at most 24 h), or goes
    /// back to the consensus value with `None`. The window is this plus a random part of up
    /// to the same.
    pub fn set_window(&mut self, base: Option<Duration>) {
        match base {
            Some(b) => {
                self.base = b.min(Duration::from_secs(CONNTIMEOUT_CLIENTS.2 as u64));
                self.base_configured = true;
            }
            None => {
                self.base = Duration::from_secs(CONNTIMEOUT_CLIENTS.0 as u64);
                self.base_configured = false;
            }
        }
    }

    /// Sets the ports whose streams ask for stable circuits (C tor's `LongLivedPorts`);
    /// at most [`MAX_PREDICTED_PORTS`] are kept.
    pub fn set_long_lived_ports(&mut self, ports: &[u16]) {
        self.long_lived = ports.iter().copied().take(MAX_PREDICTED_PORTS).collect();
    }

    /// Whether streams to `port` ask for stable circuits (C tor's `LongLivedPorts`).
    pub fn is_long_lived(&self, port: u16) -> bool {
        self.long_lived.contains(&port)
    }

    /// A stream to `port` was asked for at `now` (C tor's `rep_hist_note_used_port`). Port 0
    /// is ignored.
    pub fn record(&mut self, port: u16, now: Instant, rng: &mut impl RngCore) {
        if port == 0 {
            return;
        }
        self.expire(now);
        if let Some(p) = self.ports.iter_mut().find(|p| p.port == port) {
            p.last_used = now;
            self.last_add = now;
            return;
        }
        if !self.any_predicted(now) {
            self.draw_window(rng);
        }
        self.last_add = now;
        if self.ports.len() >= MAX_PREDICTED_PORTS {
            if let Some(oldest) = (0..self.ports.len()).min_by_key(|&i| self.ports[i].last_used) {
                self.ports.remove(oldest);
            }
        }
        self.ports.push(Predicted {
            port,
            last_used: now,
        });
    }

    /// A name was resolved at `now`: predicts [`RESOLVE_PORT`].
    pub fn record_resolve(&mut self, now: Instant, rng: &mut impl RngCore) {
        self.record(RESOLVE_PORT, now, rng);
    }

    /// An internal (onion-service) circuit was needed at `now`; `stable` if it had to be
    /// built from stable relays (C tor's `rep_hist_note_used_internal`).
    pub fn record_internal(&mut self, now: Instant, stable: bool, rng: &mut impl RngCore) {
        if !self.any_predicted(now) {
            self.draw_window(rng);
        }
        self.last_add = now;
        self.internal = Some(now);
        if stable {
            self.internal_stable = Some(now);
        }
    }

    /// Forgets `ports` (no exit accepts them: see [`Launch::Exit`]).
    pub fn remove(&mut self, ports: &[u16]) {
        self.ports.retain(|p| !ports.contains(&p.port));
    }

    /// The predicted ports at `now`: those used within the window, in the order they were
    /// first predicted.
    pub fn predicted(&self, now: Instant) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .filter(move |p| self.relevant(p.last_used, now))
            .map(|p| p.port)
    }

    /// Whether anything is predicted at `now`. When not, C tor builds no circuit ahead of
    /// need ("dormant" circuit building). (C tor counts a port whose time is over until its
    /// next decision removes it; here it stops counting when its time is over.)
    pub fn any_predicted(&self, now: Instant) -> bool {
        self.ports.iter().any(|p| self.relevant(p.last_used, now))
            || self.internal.is_some_and(|t| self.relevant(t, now))
    }

    /// How long predictions stay in force after the last one, at `now` (C tor's
    /// `predicted_ports_prediction_time_remaining`).
    pub fn time_remaining(&self, now: Instant) -> Duration {
        self.relevance
            .saturating_sub(now.saturating_duration_since(self.last_add))
    }

    /// How long a circuit launched at `now` may stay unused before it is closed: while the
    /// timeout is learned, `learning` ([`BuildTimes::learning_idle_timeout`]); otherwise the
    /// time predictions remain in force plus one second plus a random part of up to 5% (so
    /// that unused circuits do not all close at once), as C tor's `origin_circuit_new`.
    pub fn circuit_idle_timeout(
        &self,
        now: Instant,
        learning: Option<Duration>,
        rng: &mut impl RngCore,
    ) -> Duration {
        if let Some(t) = learning {
            return t;
        }
        let remaining = self.time_remaining(now).as_secs();
        let extra = rng.next_u64() % (1 + remaining / 20);
        Duration::from_secs(remaining + 1 + extra)
    }

    /// The next circuit to launch at `now`, or `None` when the circuits `pool` has are
    /// enough (the rules of C tor's `circuit_predict_and_launch_new`, in the module
    /// documentation). Call it once a second, and again after launching what it gave (the
    /// new circuit then counts in `pool`), until `None`. `path` is what the directory
    /// allows; `hosting_services` whether this client runs an onion service; `build_times`
    /// says whether test circuits are wanted. Expired ports are forgotten. `rng` draws a
    /// new window if a hosted service's need starts one.
    pub fn wanted(
        &mut self,
        now: Instant,
        pool: &impl CircuitPool,
        path: ConsensusPath,
        hosting_services: bool,
        build_times: &BuildTimes,
        rng: &mut impl RngCore,
    ) -> Option<Launch> {
        self.expire(now);
        let clean = pool.clean();
        if clean.total >= MAX_UNUSED_OPEN_CIRCUITS {
            return None;
        }
        // Exit circuits for the predicted ports fewer than two circuits can carry.
        if path == ConsensusPath::Exit {
            let unhandled: Vec<u16> = self
                .ports
                .iter()
                .map(|p| p.port)
                .filter(|&port| {
                    pool.exits_handling(port, self.long_lived.contains(&port))
                        < MIN_CIRCUITS_HANDLING_STREAM
                })
                .collect();
            if !unhandled.is_empty() {
                let stable = unhandled.iter().any(|p| self.long_lived.contains(p));
                return Some(Launch::Exit {
                    ports: unhandled,
                    stable,
                });
            }
        }
        // Stable internal circuits for a hosted onion service.
        if hosting_services
            && clean.internal_stable < SUFFICIENT_UPTIME_INTERNAL_HS_SERVERS
            && path != ConsensusPath::Unknown
        {
            self.record_internal(now, true, rng);
            return Some(Launch::Internal {
                stable: true,
                for_service: true,
            });
        }
        // Internal circuits for the onion-service client.
        if let Some(need_stable) = self.predicted_internal(now) {
            let requires_stable =
                need_stable && clean.internal_stable < SUFFICIENT_UPTIME_INTERNAL_HS_CLIENTS;
            if (requires_stable || clean.internal < SUFFICIENT_INTERNAL_HS_CLIENTS)
                && path != ConsensusPath::Unknown
            {
                return Some(Launch::Internal {
                    stable: need_stable,
                    for_service: false,
                });
            }
        }
        // Test circuits while the build timeout is being learned.
        if path != ConsensusPath::Unknown
            && clean.total < build_times.max_open_test_circuits()
            && build_times.needs_test_circuit(now)
        {
            return Some(Launch::Test {
                internal: path == ConsensusPath::Internal,
            });
        }
        None
    }

    /// Whether internal circuits are predicted at `now`, and if so whether stable ones (C
    /// tor's `rep_hist_get_predicted_internal`; the first call starts the window).
    fn predicted_internal(&mut self, now: Instant) -> Option<bool> {
        let internal = *self.internal.get_or_insert(now);
        let stable = *self.internal_stable.get_or_insert(now);
        if !self.relevant(internal, now) {
            return None;
        }
        Some(self.relevant(stable, now))
    }

    /// Whether a use at `t` is still in force at `now`.
    fn relevant(&self, t: Instant, now: Instant) -> bool {
        t.checked_add(self.relevance).map_or(true, |end| end >= now)
    }

    fn expire(&mut self, now: Instant) {
        let relevance = self.relevance;
        self.ports.retain(|p| {
            p.last_used
                .checked_add(relevance)
                .map_or(true, |end| end >= now)
        });
    }

    /// Draws the window: the base plus a uniform random part below the base (C tor's
    /// `channelpadding_get_circuits_available_timeout`), in whole seconds.
    fn draw_window(&mut self, rng: &mut impl RngCore) {
        let base = self.base.as_secs();
        let extra = if base == 0 { 0 } else { rng.next_u64() % base };
        self.relevance = Duration::from_secs(base + extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn at(secs: u64) -> Instant {
        Instant::from_duration(Duration::from_secs(secs))
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(3)
    }

    /// A client's circuits: each clean or usable exit circuit with the ports its exit
    /// accepts.
    #[derive(Default)]
    struct Pool {
        exits: Vec<(Vec<u16>, bool)>,
        clean: Clean,
    }

    impl Pool {
        /// Adds what `launch` asks for, its exit accepting exactly the ports asked.
        fn launch(&mut self, launch: &Launch) {
            self.clean.total += 1;
            match launch {
                Launch::Exit { ports, stable } => self.exits.push((ports.clone(), *stable)),
                Launch::Internal { stable, .. } => {
                    self.clean.internal += 1;
                    self.clean.internal_stable += usize::from(*stable);
                }
                Launch::Test { .. } => {}
            }
        }
    }

    impl CircuitPool for Pool {
        fn clean(&self) -> Clean {
            self.clean
        }
        fn exits_handling(&self, port: u16, need_stable: bool) -> usize {
            self.exits
                .iter()
                .filter(|(ports, stable)| ports.contains(&port) && (*stable || !need_stable))
                .count()
        }
    }

    /// Learning done: no test circuits.
    fn learned() -> BuildTimes {
        BuildTimes::new([("cbtmincircs", 1)]).tap(|b| {
            b.record_success(Duration::from_millis(500), false);
        })
    }

    trait Tap: Sized {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }
    impl<T> Tap for T {}

    #[test]
    fn port_443_predicted_at_start_for_30_to_60_minutes() {
        for seed in 0..20 {
            let mut r = ChaCha20Rng::seed_from_u64(seed);
            let p = PredictedPorts::new(at(0), &mut r);
            assert_eq!(p.predicted(at(0)).collect::<Vec<_>>(), vec![443]);
            let window = p.time_remaining(at(0));
            assert!(window >= Duration::from_secs(1800) && window < Duration::from_secs(3600));
            assert_eq!(p.predicted(at(window.as_secs())).count(), 1);
            assert_eq!(p.predicted(at(window.as_secs() + 1)).count(), 0);
        }
    }

    #[test]
    fn use_refreshes_and_window_follows_consensus() {
        let mut r = rng();
        let mut p = PredictedPorts::new(at(0), &mut r);
        p.set_params([("nf_conntimeout_clients", 60)]);
        let first = p.time_remaining(at(0));
        p.record(22, at(100), &mut r);
        p.record(0, at(100), &mut r);
        // The window is drawn again only when nothing was predicted.
        assert_eq!(p.time_remaining(at(100)), first);
        assert_eq!(p.predicted(at(100)).collect::<Vec<_>>(), vec![443, 22]);
        p.record(443, at(1000), &mut r);
        let t = 1000 + first.as_secs();
        assert_eq!(p.predicted(at(t)).collect::<Vec<_>>(), vec![443]);
        assert_eq!(p.predicted(at(t + 1)).count(), 0);
        // Everything expired (internal predictions never started): the next use draws a
        // window from nf_conntimeout_clients = 60 s, so 60 to 119 s.
        let mut pool = Pool::default();
        pool.clean.total = 20;
        p.wanted(
            at(t + 1),
            &pool,
            ConsensusPath::Exit,
            false,
            &learned(),
            &mut r,
        );
        assert!(!p.any_predicted(at(t + 1)));
        p.record(80, at(t + 2), &mut r);
        let w = p.time_remaining(at(t + 2));
        assert!(
            w >= Duration::from_secs(60) && w < Duration::from_secs(120),
            "{w:?}"
        );
        // A configured window overrides the consensus.
        p.set_window(Some(Duration::from_secs(200_000)));
        p.set_params([("nf_conntimeout_clients", 60)]);
        p.remove(&[80, 443]);
        p.internal = None;
        p.record_resolve(at(10_000), &mut r);
        assert_eq!(p.predicted(at(10_000)).collect::<Vec<_>>(), vec![80]);
        let w = p.time_remaining(at(10_000));
        assert!(
            w >= Duration::from_secs(86_400) && w < Duration::from_secs(172_800),
            "{w:?}"
        );
    }

    #[test]
    fn list_is_bounded() {
        let mut r = rng();
        let mut p = PredictedPorts::new(at(0), &mut r);
        for port in 1..=200u16 {
            p.record(port, at(u64::from(port)), &mut r);
        }
        let ports: Vec<u16> = p.predicted(at(200)).collect();
        assert_eq!(ports.len(), MAX_PREDICTED_PORTS);
        assert_eq!(ports, (137..=200).collect::<Vec<u16>>());
    }

    #[test]
    fn decisions_follow_c_tor_order() {
        let mut r = rng();
        let mut p = PredictedPorts::new(at(0), &mut r);
        let bt = learned();
        let mut pool = Pool::default();
        let exit = ConsensusPath::Exit;
        // Port 443 needs two exit circuits.
        let want = p.wanted(at(1), &pool, exit, false, &bt, &mut r).unwrap();
        assert_eq!(
            want,
            Launch::Exit {
                ports: vec![443],
                stable: false
            }
        );
        pool.launch(&want);
        assert_eq!(
            p.wanted(at(1), &pool, exit, false, &bt, &mut r),
            Some(want.clone())
        );
        pool.launch(&want);
        // Then internal circuits for the onion-service client, predicted from the first
        // decision on: three, two of them stable.
        let mut internal = 0;
        while let Some(w) = p.wanted(at(2), &pool, exit, false, &bt, &mut r) {
            assert_eq!(
                w,
                Launch::Internal {
                    stable: true,
                    for_service: false
                }
            );
            pool.launch(&w);
            internal += 1;
        }
        assert_eq!(internal, 3);
        assert_eq!(pool.clean.total, 5);
        // A long-lived port asks for stable exits; the ports already covered are not asked.
        p.record(22, at(3), &mut r);
        let want = p.wanted(at(3), &pool, exit, false, &bt, &mut r).unwrap();
        assert_eq!(
            want,
            Launch::Exit {
                ports: vec![22],
                stable: true
            }
        );
        // An unstable circuit for port 22 does not cover it.
        pool.exits.push((vec![22], false));
        assert_eq!(p.wanted(at(3), &pool, exit, false, &bt, &mut r), Some(want));
        // Hosting a service: three stable internal circuits, marked as such. Three are
        // there; one gets used.
        pool.exits.push((vec![22], true));
        pool.exits.push((vec![22], true));
        assert_eq!(p.wanted(at(4), &pool, exit, true, &bt, &mut r), None);
        pool.clean.total -= 1;
        pool.clean.internal -= 1;
        pool.clean.internal_stable -= 1;
        let want = p.wanted(at(4), &pool, exit, true, &bt, &mut r).unwrap();
        assert_eq!(
            want,
            Launch::Internal {
                stable: true,
                for_service: true
            }
        );
        pool.launch(&want);
        assert_eq!(p.wanted(at(4), &pool, exit, true, &bt, &mut r), None);
        // 14 clean circuits: nothing more, whatever is predicted.
        p.record(8080, at(5), &mut r);
        pool.clean.total = MAX_UNUSED_OPEN_CIRCUITS;
        assert_eq!(p.wanted(at(5), &pool, exit, true, &bt, &mut r), None);
    }

    #[test]
    fn path_limits_and_test_circuits() {
        let mut r = rng();
        let mut p = PredictedPorts::new(at(0), &mut r);
        let mut bt = BuildTimes::new([]);
        let mut pool = Pool::default();
        // No consensus path: nothing.
        assert_eq!(
            p.wanted(at(1), &pool, ConsensusPath::Unknown, true, &bt, &mut r),
            None
        );
        // Internal paths only: no exit circuits; internal ones, then test circuits (internal).
        let internal = ConsensusPath::Internal;
        while let Some(w) = p.wanted(at(1), &pool, internal, false, &bt, &mut r) {
            if let Launch::Test { internal } = w {
                assert!(internal);
                break;
            }
            assert!(matches!(w, Launch::Internal { .. }));
            pool.launch(&w);
        }
        assert_eq!(pool.clean.internal, 3);
        // Test circuits every cbttestfreq while under cbtmaxopencircs clean circuits.
        bt.note_launched(at(1));
        assert_eq!(p.wanted(at(5), &pool, internal, false, &bt, &mut r), None);
        assert_eq!(
            p.wanted(at(12), &pool, internal, false, &bt, &mut r),
            Some(Launch::Test { internal: true })
        );
        pool.clean.total = 10;
        assert_eq!(p.wanted(at(12), &pool, internal, false, &bt, &mut r), None);
    }

    #[test]
    fn idle_prediction_builds_nothing() {
        let mut r = rng();
        let mut p = PredictedPorts::new(at(0), &mut r);
        let pool = Pool {
            exits: vec![(vec![443], false), (vec![443], false)],
            ..Pool::default()
        };
        let bt = learned();
        // The first decision that gets past the exit circuits starts the internal window;
        // after both windows, nothing.
        assert_eq!(
            p.wanted(at(0), &pool, ConsensusPath::Exit, false, &bt, &mut r),
            Some(Launch::Internal {
                stable: true,
                for_service: false
            })
        );
        let later = at(3601);
        assert_eq!(
            p.wanted(later, &pool, ConsensusPath::Exit, false, &bt, &mut r),
            None
        );
        assert!(!p.any_predicted(later));
        assert_eq!(p.time_remaining(later), Duration::ZERO);
    }

    #[test]
    fn on_demand_limit_and_idle_timeout() {
        assert!(may_launch_on_demand(31));
        assert!(!may_launch_on_demand(32));
        let mut r = rng();
        let p = PredictedPorts::new(at(0), &mut r);
        let remaining = p.time_remaining(at(100)).as_secs();
        for _ in 0..50 {
            let t = p.circuit_idle_timeout(at(100), None, &mut r).as_secs();
            assert!(
                t > remaining && t <= remaining + 1 + remaining / 20,
                "{t} {remaining}"
            );
        }
        let learn = Some(Duration::from_secs(180));
        assert_eq!(
            p.circuit_idle_timeout(at(100), learn, &mut r),
            Duration::from_secs(180)
        );
    }

    proptest! {
        /// Whatever the uses and the pool, the loop of decisions ends within the clean
        /// circuit bound and never asks for more than the bound's worth of circuits.
        #[test]
        fn decisions_always_converge(
            uses in proptest::collection::vec((any::<u16>(), 0u64..10_000), 0..100),
            hosting in any::<bool>(),
        ) {
            let mut r = rng();
            let mut p = PredictedPorts::new(at(0), &mut r);
            let bt = BuildTimes::new([]);
            let mut pool = Pool::default();
            let mut now = 0;
            for (port, dt) in uses {
                now += dt;
                if port % 7 == 0 {
                    p.record_internal(at(now), port % 2 == 0, &mut r);
                } else {
                    p.record(port, at(now), &mut r);
                }
                prop_assert!(p.predicted(at(now)).count() <= MAX_PREDICTED_PORTS);
                let mut launched = 0;
                while let Some(w) = p.wanted(at(now), &pool, ConsensusPath::Exit, hosting, &bt, &mut r) {
                    if let Launch::Exit { ports, .. } = &w {
                        prop_assert!(!ports.is_empty() && ports.len() <= MAX_PREDICTED_PORTS);
                    }
                    pool.launch(&w);
                    launched += 1;
                    prop_assert!(launched <= MAX_UNUSED_OPEN_CIRCUITS);
                }
                prop_assert!(pool.clean.total <= MAX_UNUSED_OPEN_CIRCUITS);
                // Use the circuits: they are no longer clean.
                pool = Pool::default();
            }
        }
    }
}
