//! The service's publishing state machine: keep introduction points, build descriptors for
//! both upload slots and upload them to the responsible HSDirs, all sans-IO.
//!
//! [`HsService`] works on the messages; [`Publisher`] decides *when* and *where*. The
//! embedder feeds it consensus views ([`Publisher::set_consensus`]), the outcome of what it
//! was asked to do (intro circuits built, established or closed; uploads done or failed;
//! INTRODUCE2 cells), and the time; it drains [`PublishAction`]s with
//! [`Publisher::poll_action`] and calls [`Publisher::handle_timeout`] at
//! [`Publisher::poll_timeout`]. Time (`now`, a wall-clock [`Timestamp`]) comes first in every
//! input, the caller's RNG after it.
//!
//! A run loop, with the embedder's circuits and HSDir uploads stood in by an introduction
//! point of [`crate::relay`] answering ESTABLISH_INTRO and by uploads that all succeed:
//!
//! ```
//! use onion_cell::RelayMsg;
//! use onion_crypto::RsaIdentity;
//! use onion_dir::Timestamp;
//! use onion_hs::linkspec::RawLinkSpec;
//! use onion_hs::publish::{
//!     ConsensusView, IntroCandidate, IntroId, IntroState, PublishAction, PublishError, Publisher,
//!     PublisherConfig,
//! };
//! use onion_hs::relay::IntroPoint;
//! use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
//! use onion_hs::service::{HsService, HsServiceConfig};
//! use onion_hs::{ExpandedKeypair, TimePeriodConfig};
//! use rand_core::{CryptoRngCore, SeedableRng};
//!
//! /// A message that arrived on the circuit of introduction point `intro`.
//! fn on_intro_msg(
//!     p: &mut Publisher,
//!     now: Timestamp,
//!     intro: IntroId,
//!     msg: &RelayMsg<'_>,
//!     rng: &mut impl CryptoRngCore,
//! ) -> Result<(), PublishError> {
//!     match msg {
//!         RelayMsg::IntroEstablished(_) => p.intro_established(now, intro, rng),
//!         RelayMsg::Introduce2(m) => {
//!             let req = p.handle_introduce2(now, intro, m, rng)?;
//!             // Build a circuit to req.link_specifiers / req.onion_key, send
//!             // RelayMsg::Rendezvous1(req.rendezvous1) on it, then add
//!             // req.keys.service_layer() as its last hop and serve streams.
//!             let _ = req;
//!             Ok(())
//!         }
//!         _ => Ok(()), // anything else: the embedder closes the circuit
//!     }
//! }
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7); // the caller's CSPRNG
//! let hs = HsService::new(ExpandedKeypair::generate(&mut rng), HsServiceConfig::default());
//! let mut p = Publisher::new(hs, PublisherConfig::default());
//! let mut now = Timestamp::from_unix(1_795_428_000); // the wall clock
//! let end = now.add_secs(4 * 3600);
//! let id = |i: u8| RsaIdentity([i; 20]);
//! let view = ConsensusView {
//!     valid_after: now,
//!     periods: TimePeriodConfig::default(),
//!     shared_random: SharedRandom { current: Some([1; 32]), previous: Some([0; 32]) },
//!     params: HsDirParams::default(),
//!     hsdirs: (0..20)
//!         .map(|i| HsDirRelay { ed25519_id: [i; 32], rsa_id: id(i), is_hsdir: true })
//!         .collect(),
//!     intro_candidates: (100..110)
//!         .map(|i| IntroCandidate {
//!             rsa_id: id(i),
//!             link_specifiers: vec![RawLinkSpec::rsa_id(id(i))],
//!             onion_key: [i; 32],
//!         })
//!         .collect(),
//! };
//! // The introduction points' side (one for all relays here; circuits named by IntroId).
//! let mut intro_relays = IntroPoint::default();
//! let mut uploads = 0;
//! p.set_consensus(now, view, &mut rng); // on every new consensus
//! loop {
//!     while let Some(action) = p.poll_action() {
//!         match action {
//!             PublishAction::BuildIntroCircuit { intro, relay: _ } => {
//!                 // A 3-hop circuit ending at the relay; its last hop's KH (tor-spec §5.2):
//!                 let kh = [7; 20];
//!                 let est = p.intro_circuit_built(intro, &kh)?; // RelayMsg::EstablishIntro
//!                 let at = onion_crypto::Instant::ZERO; // the relay's monotonic clock
//!                 let est = intro_relays.handle_establish_intro(intro, at, &kh, &est)?;
//!                 let msg = RelayMsg::IntroEstablished(est.reply);
//!                 on_intro_msg(&mut p, now, intro, &msg, &mut rng)?;
//!             }
//!             PublishAction::CloseIntroCircuit { intro } => intro_relays.circuit_closed(intro),
//!             PublishAction::Upload { upload, descriptor, .. } => {
//!                 // POST `descriptor` to the HSDir (service::UPLOAD_PATH) over a circuit.
//!                 assert!(descriptor.starts_with("hs-descriptor 3\n"));
//!                 uploads += 1;
//!                 p.upload_result(now, upload, true, &mut rng);
//!             }
//!         }
//!     }
//!     match p.poll_timeout() {
//!         Some(t) if t <= end => {
//!             now = now.max(t);
//!             p.handle_timeout(now, &mut rng);
//!         }
//!         _ => break,
//!     }
//! }
//! let intros = p.intro_points();
//! assert_eq!(intros.len(), 3);
//! assert!(intros.iter().all(|i| i.state == IntroState::Established));
//! assert!(uploads >= 2 * 8); // both descriptors, each to its responsible HSDirs, re-uploaded
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What it implements:
//! - rend-spec-v3 §3.1 \[REG_INTRO_POINT\]: a number of introduction points (default 3), each a
//!   relay from the consensus with fresh keys. A circuit that fails or closes is rebuilt to the
//!   same relay (the keys, and so the published descriptors, stay valid) with exponential
//!   backoff, a few times; then the relay is dropped, excluded for a while, and another is
//!   picked. Launches are rate limited per window.
//! - Intro point rotation (param-spec §8 `hs_intro_min/max_lifetime`,
//!   `hs_intro_min/max_introduce2`, as C tor): each point lives a random 18–24 h, or until a
//!   random 16384–32768 INTRODUCE2 cells arrived. A rotated point leaves new descriptors at
//!   once but keeps its circuit until the descriptors without it were uploaded to every
//!   responsible HSDir, since clients may hold the older descriptor (§2.2.5 \[EXPIRE-DESC\]).
//! - §2.2.2.1 and §2.2.4.2 \[SERVICEUPLOAD\]: two descriptors, for the time periods and SRVs
//!   [`SharedRandom::service_upload`] gives for the consensus's valid-after, each uploaded to
//!   its responsible HSDirs (§2.2.3 \[WHERE-HSDESC\], `hsdir_spread_store` per replica).
//! - Re-upload (§2.2.2 \[WHEN-HSDESC\]): a slot that is new (time-period change), whose
//!   responsible HSDirs or SRV changed with a new consensus, whose introduction points
//!   changed, or whose random 60–120 min timer fired is rebuilt, with a larger revision counter
//!   (§2.4, [`HsService::build_descriptor`]), and uploaded to all its HSDirs. A failed upload is
//!   retried with exponential backoff up to a limit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use onion_crypto::RsaIdentity;
use onion_dir::Timestamp;
use rand_core::CryptoRngCore;

use crate::linkspec::RawLinkSpec;
use crate::ring::{HsDirParams, HsDirRelay, RingSelector, SharedRandom};
use crate::service::{HsService, RendezvousRequest, ServiceError};
use crate::time::{TimePeriod, TimePeriodConfig};

/// Hard cap on introduction points (C tor's `HiddenServiceNumIntroductionPoints` maximum).
pub const MAX_INTRO_POINTS: usize = 20;

/// Tunables; the defaults are rend-spec-v3's and param-spec's (or C tor's where the spec is
/// silent). Ranges are inclusive, drawn uniformly with the caller's RNG. Durations count in
/// whole seconds: the publisher's clock is the wall clock ([`Timestamp`]), which has no finer
/// resolution, so any sub-second part is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    /// Introduction points to keep (default 3, at most [`MAX_INTRO_POINTS`]).
    pub intro_points: usize,
    /// Intro point lifetime (`hs_intro_min_lifetime`..`hs_intro_max_lifetime`: 18 h..24 h).
    pub intro_lifetime: (Duration, Duration),
    /// INTRODUCE2 cells before rotation (`hs_intro_min_introduce2`..`hs_intro_max_introduce2`:
    /// 16384..32768).
    pub intro_max_introduce2: (u32, u32),
    /// Periodic re-upload timer (§2.2.2: 60..120 minutes).
    pub reupload: (Duration, Duration),
    /// Consecutive circuit failures to one intro relay before it is replaced (C tor: 3).
    pub intro_circuit_retries: u32,
    /// First delay before rebuilding a failed intro circuit; doubles per failure.
    pub intro_retry_base: Duration,
    /// Intro circuit launches allowed per [`Self::intro_launch_window`] (default 10 per
    /// 300 s, C tor's figures), so that a broken network does not make the service build
    /// circuits without end.
    pub intro_launches_per_window: u32,
    /// Length of the launch rate-limit window.
    pub intro_launch_window: Duration,
    /// How long a replaced (failed) relay is not picked again.
    pub failed_relay_exclusion: Duration,
    /// Upload attempts per HSDir and descriptor before giving up until the next rebuild.
    pub upload_attempts: u32,
    /// First delay before retrying a failed upload; doubles per failure, up to
    /// [`Self::upload_retry_max`].
    pub upload_retry_base: Duration,
    /// Upper bound of the upload retry delay.
    pub upload_retry_max: Duration,
    /// How long to wait for all intro points before publishing with those established.
    pub publish_grace: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            intro_points: 3,
            intro_lifetime: (
                Duration::from_secs(18 * 3600),
                Duration::from_secs(24 * 3600),
            ),
            intro_max_introduce2: (16_384, 32_768),
            reupload: (Duration::from_secs(60 * 60), Duration::from_secs(120 * 60)),
            intro_circuit_retries: 3,
            intro_retry_base: Duration::from_secs(5),
            intro_launches_per_window: 10,
            intro_launch_window: Duration::from_secs(300),
            failed_relay_exclusion: Duration::from_secs(3600),
            upload_attempts: 5,
            upload_retry_base: Duration::from_secs(30),
            upload_retry_max: Duration::from_secs(30 * 60),
            publish_grace: Duration::from_secs(60),
        }
    }
}

/// A relay that may serve as introduction point (Stable, with an ntor onion key, as the
/// embedder's path selection decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroCandidate {
    /// RSA identity.
    pub rsa_id: RsaIdentity,
    /// Link specifiers published in descriptors (§2.5.2.2 `introduction-point`).
    pub link_specifiers: Vec<RawLinkSpec>,
    /// ntor onion key (`onion-key ntor`).
    pub onion_key: [u8; 32],
}

/// What the publisher needs from a consensus.
#[derive(Debug, Clone)]
pub struct ConsensusView {
    /// `valid-after`: selects the upload slots (§2.2.4.2).
    pub valid_after: Timestamp,
    /// Time period length and offset (§2.2.1).
    pub periods: TimePeriodConfig,
    /// `shared-rand-current-value` / `shared-rand-previous-value`.
    pub shared_random: SharedRandom,
    /// `hsdir_n_replicas`, `hsdir_spread_store`.
    pub params: HsDirParams,
    /// Every relay with an ed25519 identity and whether it has the HSDir flag.
    pub hsdirs: Vec<HsDirRelay>,
    /// Relays usable as introduction points.
    pub intro_candidates: Vec<IntroCandidate>,
}

/// One introduction point of the publisher (stable across circuit rebuilds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntroId(pub u64);

/// One upload request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub u64);

/// Something the embedder must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishAction {
    /// Build a circuit whose last hop is `relay` (a 3-hop internal circuit), then call
    /// [`Publisher::intro_circuit_built`] with its last hop's `KH` and send the returned
    /// ESTABLISH_INTRO; or report [`Publisher::intro_circuit_closed`] on failure.
    BuildIntroCircuit {
        /// Which intro point.
        intro: IntroId,
        /// Its relay.
        relay: RsaIdentity,
    },
    /// Close the circuit of this intro point (rotated out, or given up); no report expected.
    CloseIntroCircuit {
        /// Which intro point.
        intro: IntroId,
    },
    /// POST `descriptor` to HSDir `hsdir` ([`crate::service::UPLOAD_PATH`], over an anonymous
    /// circuit, §2.2.6), then report [`Publisher::upload_result`].
    Upload {
        /// Which upload (for the report).
        upload: UploadId,
        /// The HSDir.
        hsdir: RsaIdentity,
        /// The time period the descriptor is for.
        period: TimePeriod,
        /// Its revision counter.
        revision: u64,
        /// The descriptor text.
        descriptor: Arc<str>,
    },
}

/// Publisher errors (reports the publisher cannot place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No such (current) introduction point: never existed, or rotated out and removed.
    #[error("no introduction point {0:?}")]
    UnknownIntro(IntroId),
    /// The intro point is not waiting for this report (e.g. a circuit built twice).
    #[error("introduction point {0:?} did not expect this report")]
    UnexpectedReport(IntroId),
    /// The service failed (ESTABLISH_INTRO, INTRODUCE2, descriptor build).
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Where an intro point's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntroState {
    /// [`PublishAction::BuildIntroCircuit`] was emitted; waiting for the circuit.
    Building,
    /// ESTABLISH_INTRO was handed out; waiting for INTRO_ESTABLISHED.
    Establishing,
    /// INTRO_ESTABLISHED arrived.
    Established,
    /// The circuit failed or closed; rebuilt at `retry_at`.
    Waiting {
        /// When the next circuit is launched.
        retry_at: Timestamp,
    },
}

/// A read-only view of one introduction point, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroInfo {
    /// Its id.
    pub id: IntroId,
    /// Its relay.
    pub relay: RsaIdentity,
    /// Its circuit's state.
    pub state: IntroState,
    /// Rotated out: no longer in new descriptors, closed once those are uploaded.
    pub retired: bool,
    /// INTRODUCE2 cells received.
    pub introduce2: u32,
    /// When it rotates out by age.
    pub expires_at: Timestamp,
    /// How many INTRODUCE2 cells rotate it out.
    pub max_introduce2: u32,
}

struct Intro {
    id: IntroId,
    /// Index in [`HsService`].
    index: usize,
    relay: RsaIdentity,
    state: IntroState,
    /// Consecutive circuit failures.
    failures: u32,
    expires_at: Timestamp,
    max_introduce2: u32,
    introduce2: u32,
    /// Descriptor generation current when it was retired; `None` while active.
    retired_gen: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadState {
    /// To be sent at `at`; `attempts` already failed.
    Pending {
        at: Timestamp,
        attempts: u32,
    },
    InFlight {
        id: UploadId,
        attempts: u32,
    },
    Done,
    GaveUp,
}

impl UploadState {
    /// Whether the first attempt for the current descriptor is still outstanding.
    fn first_round_open(self) -> bool {
        matches!(
            self,
            UploadState::Pending { attempts: 0, .. } | UploadState::InFlight { attempts: 0, .. }
        )
    }
}

/// One upload slot (§2.2.4.2: first or second descriptor).
struct Slot {
    selector: RingSelector,
    /// Responsible HSDirs and how the upload to each stands.
    hsdirs: Vec<(RsaIdentity, UploadState)>,
    /// The descriptor last built for this slot.
    text: Option<Arc<str>>,
    revision: u64,
    /// Generation of that build (a publisher-wide counter).
    built_gen: u64,
    /// Intro points in that build.
    built_intros: Vec<IntroId>,
    /// Rebuild needed regardless of intro points (new HSDirs, new SRV).
    dirty: bool,
    /// When the periodic re-upload is due (§2.2.2).
    next_reupload: Timestamp,
}

/// The publishing state machine. See the module documentation.
pub struct Publisher {
    hs: HsService,
    config: PublisherConfig,
    view: Option<ConsensusView>,
    intros: Vec<Intro>,
    slots: Vec<Slot>,
    actions: VecDeque<PublishAction>,
    next_id: u64,
    generation: u64,
    /// Launch times within the current rate-limit window.
    launches: VecDeque<Timestamp>,
    /// Relays recently given up on, and until when they are avoided.
    failed_relays: Vec<(RsaIdentity, Timestamp)>,
    /// Uploads in flight: id → (slot period, HSDir).
    in_flight: Vec<(UploadId, TimePeriod, RsaIdentity)>,
    /// Since when a descriptor is wanted but not all intro points are established.
    waiting_since: Option<Timestamp>,
    /// The time of the last step: timers already past then wait for something else (intro
    /// points), so [`Publisher::poll_timeout`] leaves them out instead of asking for a spin.
    last_now: Timestamp,
}

/// `t + d` on the wall clock, whole seconds, saturating.
fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.add_secs(d.as_secs())
}

/// A duration drawn uniformly from the inclusive range `(lo, hi)`, in whole seconds.
fn rand_duration(rng: &mut impl CryptoRngCore, (lo, hi): (Duration, Duration)) -> Duration {
    Duration::from_secs(rand_between(rng, (lo.as_secs(), hi.as_secs())))
}

fn rand_between(rng: &mut impl CryptoRngCore, (lo, hi): (u64, u64)) -> u64 {
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    match (hi - lo).checked_add(1) {
        Some(span) => lo + rng.next_u64() % span,
        None => rng.next_u64(),
    }
}

impl Publisher {
    /// A publisher for `hs` (whose own configuration gives client authorization and
    /// descriptor lifetime). `config.intro_points` is clamped to 1..=[`MAX_INTRO_POINTS`].
    pub fn new(hs: HsService, mut config: PublisherConfig) -> Self {
        config.intro_points = config.intro_points.clamp(1, MAX_INTRO_POINTS);
        Publisher {
            hs,
            config,
            view: None,
            intros: Vec::new(),
            slots: Vec::new(),
            actions: VecDeque::new(),
            next_id: 0,
            generation: 0,
            launches: VecDeque::new(),
            failed_relays: Vec::new(),
            in_flight: Vec::new(),
            waiting_since: None,
            last_now: Timestamp::from_unix(0),
        }
    }

    /// The service (address, keys).
    pub fn service(&self) -> &HsService {
        &self.hs
    }

    /// The configuration in force.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// The introduction points, active and retired.
    pub fn intro_points(&self) -> Vec<IntroInfo> {
        self.intros
            .iter()
            .map(|i| IntroInfo {
                id: i.id,
                relay: i.relay,
                state: i.state,
                retired: i.retired_gen.is_some(),
                introduce2: i.introduce2,
                expires_at: i.expires_at,
                max_introduce2: i.max_introduce2,
            })
            .collect()
    }

    /// The periods of the current upload slots, with the revision last built for each
    /// (`None` before the first build).
    pub fn slots(&self) -> Vec<(TimePeriod, Option<u64>)> {
        self.slots
            .iter()
            .map(|s| (s.selector.period, s.text.as_ref().map(|_| s.revision)))
            .collect()
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<PublishAction> {
        self.actions.pop_front()
    }

    /// A new consensus: recompute the upload slots (§2.2.4.2) and their responsible HSDirs
    /// (§2.2.3). A slot whose period is new, or whose SRV or HSDirs changed, is rebuilt and
    /// uploaded; intro points whose relay left the candidates are rotated out.
    pub fn set_consensus(
        &mut self,
        now: Timestamp,
        view: ConsensusView,
        rng: &mut impl CryptoRngCore,
    ) {
        let selectors = view
            .shared_random
            .service_upload(&view.periods, view.valid_after);
        let mut old = std::mem::take(&mut self.slots);
        for sel in selectors {
            let hsdirs: Vec<RsaIdentity> = self
                .hs
                .hsdirs_to_upload(&view.hsdirs, &sel, &view.params)
                .into_iter()
                .filter_map(|pos| view.hsdirs.get(pos).map(|r| r.rsa_id))
                .collect();
            let slot = match old.iter().position(|s| s.selector.period == sel.period) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    let mut a: Vec<RsaIdentity> = s.hsdirs.iter().map(|h| h.0).collect();
                    let mut b = hsdirs.clone();
                    a.sort_unstable();
                    b.sort_unstable();
                    if s.selector.srv != sel.srv || a != b {
                        s.selector = sel;
                        s.hsdirs = hsdirs.into_iter().map(|h| (h, UploadState::Done)).collect();
                        s.dirty = true;
                    }
                    s
                }
                None => Slot {
                    selector: sel,
                    hsdirs: hsdirs.into_iter().map(|h| (h, UploadState::Done)).collect(),
                    text: None,
                    revision: 0,
                    built_gen: 0,
                    built_intros: Vec::new(),
                    dirty: true,
                    next_reupload: now,
                },
            };
            self.slots.push(slot);
        }
        // Uploads for slots that are gone (or whose HSDirs changed) are stale now.
        let slots = &self.slots;
        self.in_flight.retain(|(id, period, hsdir)| {
            slots.iter().any(|s| {
                s.selector.period == *period
                    && s.hsdirs.iter().any(|(h, st)| {
                        h == hsdir && matches!(st, UploadState::InFlight { id: i, .. } if i == id)
                    })
            })
        });
        // Intro points on relays that left the consensus (or no longer qualify) rotate out.
        self.retire_where(|ip| !view.intro_candidates.iter().any(|c| c.rsa_id == ip.relay));
        self.view = Some(view);
        self.step(now, rng);
    }

    /// The circuit for `intro` is built; `circuit_kh` is its last hop's `KH` (tor-spec §5.2).
    /// Returns the ESTABLISH_INTRO to send on it (§3.1.1; `RelayMsg::EstablishIntro`).
    pub fn intro_circuit_built(
        &mut self,
        intro: IntroId,
        circuit_kh: &[u8],
    ) -> Result<onion_cell::hs::EstablishIntro<'static>, PublishError> {
        let k = self.find(intro)?;
        if self.intros[k].state != IntroState::Building {
            return Err(PublishError::UnexpectedReport(intro));
        }
        let msg = self.hs.establish_intro(self.intros[k].index, circuit_kh)?;
        self.intros[k].state = IntroState::Establishing;
        Ok(msg)
    }

    /// INTRO_ESTABLISHED arrived for `intro` (§3.1.3).
    pub fn intro_established(
        &mut self,
        now: Timestamp,
        intro: IntroId,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), PublishError> {
        let k = self.find(intro)?;
        if self.intros[k].state != IntroState::Establishing {
            return Err(PublishError::UnexpectedReport(intro));
        }
        self.hs.handle_intro_established(self.intros[k].index)?;
        self.intros[k].state = IntroState::Established;
        self.intros[k].failures = 0;
        self.step(now, rng);
        Ok(())
    }

    /// The circuit of `intro` failed to build, was refused, or closed after being
    /// established. It is rebuilt to the same relay after a backoff, or, after
    /// [`PublisherConfig::intro_circuit_retries`] consecutive failures, the point is dropped
    /// and another relay picked. A report for a retired point removes it.
    pub fn intro_circuit_closed(
        &mut self,
        now: Timestamp,
        intro: IntroId,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), PublishError> {
        let k = self.find(intro)?;
        let ip = &mut self.intros[k];
        if matches!(ip.state, IntroState::Waiting { .. }) {
            return Err(PublishError::UnexpectedReport(intro));
        }
        self.hs.handle_intro_closed(ip.index)?;
        ip.failures = ip.failures.saturating_add(1);
        if ip.retired_gen.is_some() || ip.failures >= self.config.intro_circuit_retries {
            if ip.retired_gen.is_none() {
                let until = after(now, self.config.failed_relay_exclusion);
                self.failed_relays.push((ip.relay, until));
            }
            self.remove(k, false);
        } else {
            let shift = ip.failures.saturating_sub(1).min(16);
            let delay = self.config.intro_retry_base.saturating_mul(1 << shift);
            ip.state = IntroState::Waiting {
                retry_at: after(now, delay),
            };
        }
        self.step(now, rng);
        Ok(())
    }

    /// An INTRODUCE2 arrived on `intro`'s circuit: counted towards rotation, then handed to
    /// [`HsService::handle_introduce2`] (replay check, decryption, hs-ntor; §3.3).
    pub fn handle_introduce2(
        &mut self,
        now: Timestamp,
        intro: IntroId,
        msg: &onion_cell::hs::Introduce<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<RendezvousRequest, PublishError> {
        let k = self.find(intro)?;
        self.intros[k].introduce2 = self.intros[k].introduce2.saturating_add(1);
        let index = self.intros[k].index;
        let r = self.hs.handle_introduce2(index, msg, rng);
        self.step(now, rng);
        Ok(r?)
    }

    /// How the upload `upload` ended. Failures are retried with backoff (up to
    /// [`PublisherConfig::upload_attempts`]); reports for superseded descriptors are ignored.
    pub fn upload_result(
        &mut self,
        now: Timestamp,
        upload: UploadId,
        ok: bool,
        rng: &mut impl CryptoRngCore,
    ) {
        if let Some(pos) = self.in_flight.iter().position(|u| u.0 == upload) {
            let (_, period, hsdir) = self.in_flight.swap_remove(pos);
            let cfg = &self.config;
            let st = self
                .slots
                .iter_mut()
                .filter(|s| s.selector.period == period)
                .flat_map(|s| s.hsdirs.iter_mut())
                .find(|(h, _)| *h == hsdir);
            if let Some((_, st)) = st {
                if let UploadState::InFlight { id, attempts } = *st {
                    if id == upload {
                        *st = if ok {
                            UploadState::Done
                        } else if attempts.saturating_add(1) >= cfg.upload_attempts {
                            UploadState::GaveUp
                        } else {
                            let shift = attempts.min(16);
                            let delay = cfg
                                .upload_retry_base
                                .saturating_mul(1 << shift)
                                .min(cfg.upload_retry_max);
                            UploadState::Pending {
                                at: after(now, delay),
                                attempts: attempts + 1,
                            }
                        };
                    }
                }
            }
        }
        self.step(now, rng);
    }

    /// When [`Publisher::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut t: Option<Timestamp> = None;
        let mut at = |x: Timestamp| t = Some(t.map_or(x, |t| t.min(x)));
        let launch_free = self.launch_free_at();
        for ip in &self.intros {
            if ip.retired_gen.is_none() {
                at(ip.expires_at);
                if let IntroState::Waiting { retry_at } = ip.state {
                    at(retry_at.max(launch_free));
                }
            }
        }
        if self.view.is_some() && self.active() < self.config.intro_points && self.can_pick() {
            at(launch_free);
        }
        let last = self.last_now;
        for s in &self.slots {
            if s.text.is_some() && s.next_reupload > last {
                at(s.next_reupload);
            }
            for (_, st) in &s.hsdirs {
                if let UploadState::Pending { at: x, .. } = st {
                    at(*x);
                }
            }
        }
        if let Some(w) = self.waiting_since {
            let t = after(w, self.config.publish_grace);
            if t > last {
                at(t);
            }
        }
        t
    }

    /// Time passed: rotate, relaunch, rebuild, re-upload as due.
    pub fn handle_timeout(&mut self, now: Timestamp, rng: &mut impl CryptoRngCore) {
        self.step(now, rng);
    }

    fn find(&self, intro: IntroId) -> Result<usize, PublishError> {
        self.intros
            .iter()
            .position(|i| i.id == intro)
            .ok_or(PublishError::UnknownIntro(intro))
    }

    /// Active (not retired) intro points.
    fn active(&self) -> usize {
        self.intros
            .iter()
            .filter(|i| i.retired_gen.is_none())
            .count()
    }

    /// When the launch rate limit next allows a launch.
    fn launch_free_at(&self) -> Timestamp {
        let limit = usize::try_from(self.config.intro_launches_per_window).unwrap_or(usize::MAX);
        if self.launches.len() < limit.max(1) {
            return Timestamp::from_unix(0);
        }
        self.launches.front().map_or(Timestamp::from_unix(0), |t| {
            after(*t, self.config.intro_launch_window)
        })
    }

    fn can_pick(&self) -> bool {
        self.view.as_ref().is_some_and(|v| {
            v.intro_candidates
                .iter()
                .any(|c| !self.intros.iter().any(|i| i.relay == c.rsa_id))
        })
    }

    fn launch(&mut self, k: usize, now: Timestamp) {
        self.launches.push_back(now);
        let ip = &mut self.intros[k];
        ip.state = IntroState::Building;
        self.actions.push_back(PublishAction::BuildIntroCircuit {
            intro: ip.id,
            relay: ip.relay,
        });
    }

    /// Rotate out every active intro point for which `pred` holds.
    fn retire_where(&mut self, pred: impl Fn(&Intro) -> bool) {
        let mut k = 0;
        while k < self.intros.len() {
            let before = self.intros.len();
            if self.intros[k].retired_gen.is_none() && pred(&self.intros[k]) {
                self.retire(k);
            }
            if self.intros.len() == before {
                k += 1;
            }
        }
    }

    /// Rotate intro point `k` out of new descriptors (kept until those are uploaded).
    fn retire(&mut self, k: usize) {
        let ip = &mut self.intros[k];
        if ip.state == IntroState::Established {
            ip.retired_gen = Some(self.generation);
            let _ = self.hs.retire_intro_point(ip.index);
        } else {
            // Not serving clients anyway: drop it now.
            self.remove(k, true);
        }
    }

    fn remove(&mut self, k: usize, close: bool) {
        let ip = self.intros.remove(k);
        let _ = self.hs.remove_intro_point(ip.index);
        if close && !matches!(ip.state, IntroState::Waiting { .. }) {
            self.actions
                .push_back(PublishAction::CloseIntroCircuit { intro: ip.id });
        }
    }

    /// Pick a new intro relay: not in use, preferably not recently failed.
    fn pick(&self, rng: &mut impl CryptoRngCore) -> Option<IntroCandidate> {
        let view = self.view.as_ref()?;
        let unused: Vec<&IntroCandidate> = view
            .intro_candidates
            .iter()
            .filter(|c| !self.intros.iter().any(|i| i.relay == c.rsa_id))
            .collect();
        let fresh: Vec<&IntroCandidate> = unused
            .iter()
            .copied()
            .filter(|c| !self.failed_relays.iter().any(|f| f.0 == c.rsa_id))
            .collect();
        let pool = if fresh.is_empty() { unused } else { fresh };
        let n = u64::try_from(pool.len()).ok().filter(|&n| n > 0)?;
        let i = usize::try_from(rng.next_u64() % n).ok()?;
        pool.get(i).map(|c| (*c).clone())
    }

    fn step(&mut self, now: Timestamp, rng: &mut impl CryptoRngCore) {
        if self.view.is_none() {
            return;
        }
        self.last_now = self.last_now.max(now);
        let window = self.config.intro_launch_window;
        while self
            .launches
            .front()
            .is_some_and(|&t| after(t, window) <= now)
        {
            self.launches.pop_front();
        }
        self.failed_relays.retain(|f| f.1 > now);

        // 1. Rotation by age or by INTRODUCE2 count.
        self.retire_where(|ip| now >= ip.expires_at || ip.introduce2 >= ip.max_introduce2);

        // 2. Relaunch waiting circuits, then add intro points up to the target, within the
        // launch rate limit.
        for k in 0..self.intros.len() {
            if let IntroState::Waiting { retry_at } = self.intros[k].state {
                if retry_at <= now && self.launch_free_at() <= now {
                    self.launch(k, now);
                }
            }
        }
        while self.active() < self.config.intro_points && self.launch_free_at() <= now {
            let Some(c) = self.pick(rng) else { break };
            let index = self
                .hs
                .add_intro_point(c.link_specifiers.clone(), c.onion_key, rng);
            let id = IntroId(self.next_id);
            self.next_id += 1;
            let lifetime = rand_duration(rng, self.config.intro_lifetime);
            let (lo, hi) = self.config.intro_max_introduce2;
            let max_introduce2 =
                u32::try_from(rand_between(rng, (u64::from(lo), u64::from(hi)))).unwrap_or(hi);
            self.intros.push(Intro {
                id,
                index,
                relay: c.rsa_id,
                state: IntroState::Building,
                failures: 0,
                expires_at: after(now, lifetime),
                max_introduce2,
                introduce2: 0,
                retired_gen: None,
            });
            let k = self.intros.len() - 1;
            self.launch(k, now);
        }

        // 3. Descriptors: rebuild slots that need it once intro points are ready.
        let in_desc: Vec<IntroId> = self
            .intros
            .iter()
            .filter(|i| i.retired_gen.is_none() && i.state == IntroState::Established)
            .map(|i| i.id)
            .collect();
        let wanted = self.slots.iter().any(|s| {
            s.text.is_none() || s.dirty || s.built_intros != in_desc || now >= s.next_reupload
        });
        let all = in_desc.len() >= self.config.intro_points;
        if wanted && !all {
            self.waiting_since.get_or_insert(now);
        } else {
            self.waiting_since = None;
        }
        let grace_over = self
            .waiting_since
            .is_some_and(|w| now >= after(w, self.config.publish_grace));
        let ready = !in_desc.is_empty() && (all || grace_over);
        if ready {
            for si in 0..self.slots.len() {
                let s = &self.slots[si];
                if !(s.text.is_none()
                    || s.dirty
                    || s.built_intros != in_desc
                    || now >= s.next_reupload)
                {
                    continue;
                }
                let period = s.selector.period;
                // A failure here is a local bug (e.g. no intro points); try again later.
                let Ok(text) = self.hs.build_descriptor(now, period, rng) else {
                    continue;
                };
                self.generation += 1;
                let reupload = rand_duration(rng, self.config.reupload);
                let s = &mut self.slots[si];
                s.text = Some(Arc::from(text));
                s.revision = self.hs.revision();
                s.built_gen = self.generation;
                s.built_intros = in_desc.clone();
                s.dirty = false;
                s.next_reupload = after(now, reupload);
                for (_, st) in &mut s.hsdirs {
                    *st = UploadState::Pending {
                        at: now,
                        attempts: 0,
                    };
                }
            }
            self.waiting_since = None;
        }

        // 4. Uploads that are due.
        for s in &mut self.slots {
            let Some(text) = &s.text else { continue };
            for (h, st) in &mut s.hsdirs {
                if let UploadState::Pending { at, attempts } = *st {
                    if at <= now {
                        let id = UploadId(self.next_id);
                        self.next_id += 1;
                        *st = UploadState::InFlight { id, attempts };
                        self.in_flight.push((id, s.selector.period, *h));
                        self.actions.push_back(PublishAction::Upload {
                            upload: id,
                            hsdir: *h,
                            period: s.selector.period,
                            revision: s.revision,
                            descriptor: text.clone(),
                        });
                    }
                }
            }
        }

        // 5. Retired intro points whose replacement descriptors reached every HSDir (each
        // upload of the first round answered) are closed.
        let slots = &self.slots;
        let published_after = |g: u64| {
            !slots.is_empty()
                && slots.iter().all(|s| {
                    s.text.is_some()
                        && s.built_gen > g
                        && !s.hsdirs.iter().any(|(_, st)| st.first_round_open())
                })
        };
        let done: Vec<usize> = self
            .intros
            .iter()
            .enumerate()
            .filter(|(_, i)| i.retired_gen.is_some_and(published_after))
            .map(|(k, _)| k)
            .collect();
        for k in done.into_iter().rev() {
            self.remove(k, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_between_stays_in_range() {
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        for _ in 0..1000 {
            let x = rand_between(&mut rng, (10, 12));
            assert!((10..=12).contains(&x));
        }
        assert_eq!(rand_between(&mut rng, (5, 5)), 5);
        let _ = rand_between(&mut rng, (0, u64::MAX));
    }
}
