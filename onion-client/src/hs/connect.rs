//! The client side: from a `.onion` address to a rendezvous circuit that carries streams to
//! the service (rend-spec-v3 §2.2.4.1, §3.2, §4), driving the stages of `onion_hs::client`
//! (`HsClient`, then `Described`, `RendPending`, `RendReady` and one `Introduction` per
//! introduction point tried).
//!
//! 1. Descriptor: the time period and shared random value of the consensus select the hash
//!    ring (§2.2.4.1 \[CLIENTFETCH\], §2.2.3); the responsible HSDirs
//!    (`hsdir_spread_fetch` per replica) are tried in random order, one circuit each, with
//!    `GET /tor/hs/3/<blinded key>` over BEGIN_DIR (§2.2.6), until one gives a descriptor
//!    that verifies and decrypts (with the client authorization key configured for the
//!    address, §2.5.1.2). Descriptors are cached, a bounded number, until their
//!    `descriptor-lifetime` ends or the time period changes. A descriptor encrypted to
//!    authorized clients that the key does not open is the same on every HSDir: the fetch
//!    stops there.
//! 2. Rendezvous and introduction at once: a rendezvous circuit (3 hops to a rendezvous
//!    point the core chooses) gets ESTABLISH_RENDEZVOUS (§3.2.1), while a circuit to the
//!    first introduction point is built; once RENDEZVOUS_ESTABLISHED arrived and the
//!    introduction circuit is up, INTRODUCE1 (§3.2.2) goes out. A refused INTRODUCE_ACK, a
//!    failed circuit or no ACK in time moves on to the next introduction point. When every
//!    introduction point of a cached descriptor failed, the descriptor is fetched again
//!    once (the service may have moved).
//! 3. RENDEZVOUS2 (§4.2) completes hs-ntor: the service's virtual hop is handed to the core
//!    ([`super::HsAction::AddVirtualHop`]), with congestion control (proposal 324) when
//!    the embedder runs it, the consensus enables it and the descriptor's `flow-control`
//!    line advertises it with an acceptable `sendme_inc` (C tor's
//!    `hs_circ_setup_congestion_control`: the `_onion` Vegas parameters, the exit ones for
//!    a single onion service). The circuit then carries every stream to that service with
//!    the same isolation token until it is dirty (`max_circuit_dirtiness` after it was
//!    ready), as C tor reuses rendezvous circuits.
//!
//! Failures are typed ([`HsError`]) in the classes C tor's extended SOCKS errors tell apart
//! (proposal 304).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use onion_cell::RelayMsg;
use onion_circuit::cc::CcConfig;
use onion_circuit::circuit::HopTarget;
use onion_dir::Timestamp;
use onion_hs::client::{ClientError, Described, HsClient, Introduction, RendPending, RendReady};
use onion_hs::desc::DescError;
use onion_hs::time::TimePeriod;
use onion_hs::x25519_dalek::StaticSecret;
use onion_hs::OnionAddress;
use rand_core::CryptoRngCore;

use super::{
    hop_target, hop_target_from_link_specs, link_specs_of, HsAction, HsCircRef, HsError, HsPurpose,
    Shared, VirtualHop, VirtualHopSide,
};
use crate::dir::Failure;
use crate::Instant;

/// Largest descriptor accepted, as an HTTP body (rend-spec-v3 §2.4: descriptors are at most
/// 50 000 bytes).
pub const MAX_DESCRIPTOR_BODY: usize = 50_000;

/// One connect request ([`super::OnionServices::connect`]). Never reused within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HsRequest(pub u64);

/// Timeouts and bounds of the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// How long one connection attempt may take in all (C tor's `SocksTimeout`, 120 s).
    pub connect_timeout: Duration,
    /// How long an HSDir may take to answer on a built circuit.
    pub dir_timeout: Duration,
    /// How long RENDEZVOUS_ESTABLISHED may take on a built rendezvous circuit.
    pub rend_established_timeout: Duration,
    /// How long INTRODUCE_ACK may take before the next introduction point is tried.
    pub intro_ack_timeout: Duration,
    /// Rendezvous circuits tried per attempt (a failed one is replaced with a new cookie).
    pub rend_attempts: u32,
    /// How long a ready rendezvous circuit takes new streams (C tor's
    /// `MaxCircuitDirtiness`, 10 minutes).
    pub max_circuit_dirtiness: Duration,
    /// Connection attempts (distinct service and isolation) in flight at once; beyond it
    /// [`super::OnionServices::connect`] fails with [`HsError::Resource`].
    pub max_attempts: usize,
    /// Requests waiting at once, over all attempts; the same reaction beyond it.
    pub max_requests: usize,
    /// Descriptors cached; the oldest is forgotten first.
    pub descriptor_cache: usize,
    /// Client authorization keys held; [`super::OnionServices::set_client_auth`] beyond it
    /// fails with [`HsError::Resource`].
    pub max_client_auth_keys: usize,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            connect_timeout: Duration::from_secs(120),
            dir_timeout: Duration::from_secs(60),
            rend_established_timeout: Duration::from_secs(30),
            intro_ack_timeout: Duration::from_secs(30),
            rend_attempts: 2,
            max_circuit_dirtiness: Duration::from_secs(600),
            max_attempts: 64,
            max_requests: 1024,
            descriptor_cache: 128,
            max_client_auth_keys: 4096,
        }
    }
}

/// A descriptor kept for later connections.
struct CachedDesc {
    text: String,
    period: TimePeriod,
    /// When it stops being used (fetch time + `descriptor-lifetime`).
    expires: Timestamp,
}

/// The key of a connection: the service's identity key and the isolation token.
type Key = ([u8; 32], u64);

/// Why the descriptor phase failed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchFailure {
    NotFound,
    Invalid,
}

struct Fetch {
    hsdirs: Vec<HopTarget>,
    next: usize,
    circ: Option<HsCircRef>,
    /// Until when the HSDir may answer (set once the request is out).
    step_deadline: Option<Instant>,
    period: TimePeriod,
    path: String,
    failure: FetchFailure,
    last: String,
}

/// The rendezvous circuit, and the client's stage that goes with it.
enum RendState {
    Building(Described),
    Establishing {
        deadline: Instant,
        rp: HopTarget,
        hs: RendPending,
    },
    Established {
        rp: HopTarget,
        hs: RendReady,
    },
    /// Only inside a step, while the stage moves on (it consumes the one it leaves).
    Moving,
}

impl RendState {
    /// The descriptor stage.
    fn service(&self) -> Option<&Described> {
        match self {
            RendState::Building(d) => Some(d),
            RendState::Establishing { hs, .. } => Some(hs.service()),
            RendState::Established { hs, .. } => Some(hs.service()),
            RendState::Moving => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntroCircState {
    Building,
    Built,
    Sent { deadline: Instant },
}

struct Intro {
    cc: Option<CcConfig>,
    rend: HsCircRef,
    rend_state: RendState,
    /// The introduction point whose circuit is current (descriptor order).
    ip_next: usize,
    /// The hs-ntor handshake of the last INTRODUCE1 sent, finished by RENDEZVOUS2.
    handshake: Option<Introduction>,
    intro: Option<(HsCircRef, IntroCircState)>,
    acked: bool,
    tried: usize,
    last: String,
}

enum Phase {
    Fetch(Fetch),
    Intro(Box<Intro>),
}

struct Attempt {
    key: Key,
    addr: OnionAddress,
    requests: Vec<HsRequest>,
    deadline: Instant,
    phase: Phase,
    /// The descriptor in use and its period (to start again after a rendezvous failure).
    desc: Option<(String, TimePeriod)>,
    from_cache: bool,
    refetched: bool,
    rend_attempts: u32,
}

/// A rendezvous circuit that carries streams.
struct ReadyCirc {
    circ: HsCircRef,
    since: Instant,
}

/// Ask the embedder for a circuit of `purpose` ending at `last_hop` (path-spec §2.2.2;
/// `None`: any last hop) for attempt `attempt`, and record it as that attempt's. Takes
/// [`Connector`]'s circuit fields apart from the attempts, so that a caller may hold the
/// attempt it builds for.
fn build_circ(
    circs: &mut HashMap<HsCircRef, u64>,
    new_circs: &mut Vec<HsCircRef>,
    sh: &mut Shared,
    attempt: u64,
    purpose: HsPurpose,
    last_hop: Option<HopTarget>,
) -> HsCircRef {
    let circ = sh.new_ref();
    circs.insert(circ, attempt);
    new_circs.push(circ);
    sh.push(HsAction::BuildCircuit {
        circ,
        purpose,
        last_hop,
    });
    circ
}

/// The client side. See the module documentation.
pub(crate) struct Connector {
    config: ConnectConfig,
    next_id: u64,
    attempts: HashMap<u64, Attempt>,
    by_key: HashMap<Key, u64>,
    circs: HashMap<HsCircRef, u64>,
    ready: HashMap<Key, ReadyCirc>,
    cache: HashMap<[u8; 32], CachedDesc>,
    cache_order: VecDeque<[u8; 32]>,
    auth: HashMap<[u8; 32], StaticSecret>,
    new_circs: Vec<HsCircRef>,
    n_requests: usize,
}

/// The end of one attempt, decided inside a step and carried out after it.
enum Outcome {
    Continue,
    Fail(HsError),
    Ready(HsCircRef),
    Refetch,
}

impl Connector {
    pub(crate) fn new(config: ConnectConfig) -> Self {
        Connector {
            config,
            next_id: 0,
            attempts: HashMap::new(),
            by_key: HashMap::new(),
            circs: HashMap::new(),
            ready: HashMap::new(),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            auth: HashMap::new(),
            new_circs: Vec::new(),
            n_requests: 0,
        }
    }

    pub(crate) fn take_new_circuits(&mut self) -> Vec<HsCircRef> {
        std::mem::take(&mut self.new_circs)
    }

    pub(crate) fn set_client_auth(
        &mut self,
        addr: &str,
        key: Option<StaticSecret>,
    ) -> Result<(), HsError> {
        let a = OnionAddress::parse(addr).map_err(|e| HsError::BadAddress(e.to_string()))?;
        let id = *a.public_key_bytes();
        self.forget_cached(&id);
        match key {
            Some(k) => {
                if !self.auth.contains_key(&id)
                    && self.auth.len() >= self.config.max_client_auth_keys
                {
                    return Err(HsError::Resource("client authorization keys"));
                }
                self.auth.insert(id, k);
            }
            None => {
                self.auth.remove(&id);
            }
        }
        Ok(())
    }

    fn forget_cached(&mut self, id: &[u8; 32]) {
        if self.cache.remove(id).is_some() {
            self.cache_order.retain(|k| k != id);
        }
    }

    fn cache_put(&mut self, id: [u8; 32], d: CachedDesc) {
        self.forget_cached(&id);
        while self.cache.len() >= self.config.descriptor_cache.max(1) {
            let Some(old) = self.cache_order.pop_front() else {
                break;
            };
            self.cache.remove(&old);
        }
        self.cache.insert(id, d);
        self.cache_order.push_back(id);
    }

    fn new_circ(
        &mut self,
        sh: &mut Shared,
        attempt: u64,
        purpose: HsPurpose,
        last_hop: Option<HopTarget>,
    ) -> HsCircRef {
        build_circ(
            &mut self.circs,
            &mut self.new_circs,
            sh,
            attempt,
            purpose,
            last_hop,
        )
    }

    fn close(&mut self, sh: &mut Shared, circ: HsCircRef) {
        if self.circs.remove(&circ).is_some() {
            sh.push(HsAction::CloseCircuit { circ });
        }
    }

    pub(crate) fn cancel(&mut self, request: HsRequest) {
        for a in self.attempts.values_mut() {
            let before = a.requests.len();
            a.requests.retain(|r| *r != request);
            self.n_requests -= before - a.requests.len();
        }
    }

    pub(crate) fn connect(
        &mut self,
        sh: &mut Shared,
        addr: &str,
        isolation: u64,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<HsRequest, HsError> {
        let a = OnionAddress::parse(addr).map_err(|e| HsError::BadAddress(e.to_string()))?;
        a.identity_key()
            .map_err(|e| HsError::BadAddress(e.to_string()))?;
        if sh.net.is_none() {
            return Err(HsError::NoDirectory("not bootstrapped".into()));
        }
        let key = (*a.public_key_bytes(), isolation);
        if self.n_requests >= self.config.max_requests {
            return Err(HsError::Resource("onion-service connect requests"));
        }
        self.next_id += 1;
        let request = HsRequest(self.next_id);
        if let Some(r) = self.ready.get(&key) {
            if now < r.since + self.config.max_circuit_dirtiness {
                sh.push(HsAction::Ready {
                    request,
                    circ: r.circ,
                });
                return Ok(request);
            }
            // Dirty: new streams go on a new circuit; the old one stays the core's for the
            // streams it carries.
            self.ready.remove(&key);
        }
        if let Some(id) = self.by_key.get(&key) {
            if let Some(at) = self.attempts.get_mut(id) {
                at.requests.push(request);
                self.n_requests += 1;
                return Ok(request);
            }
        }
        if self.attempts.len() >= self.config.max_attempts {
            return Err(HsError::Resource("onion-service connection attempts"));
        }
        self.next_id += 1;
        let id = self.next_id;
        let at = Attempt {
            key,
            addr: a,
            requests: vec![request],
            deadline: now + self.config.connect_timeout,
            // Replaced by `start`.
            phase: Phase::Fetch(Fetch {
                hsdirs: Vec::new(),
                next: 0,
                circ: None,
                step_deadline: None,
                period: TimePeriod::new(0, 1440, 720),
                path: String::new(),
                failure: FetchFailure::NotFound,
                last: String::new(),
            }),
            desc: None,
            from_cache: false,
            refetched: false,
            rend_attempts: 0,
        };
        self.n_requests += 1;
        self.attempts.insert(id, at);
        self.by_key.insert(key, id);
        let o = self.start(sh, id, now, rng);
        self.finish(sh, id, o, now, rng);
        Ok(request)
    }

    /// Begin (or begin again) with a cached descriptor, or fetch one.
    fn start(
        &mut self,
        sh: &mut Shared,
        id: u64,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Outcome {
        let Some(net) = sh.net.as_ref() else {
            return Outcome::Fail(HsError::NoDirectory("not bootstrapped".into()));
        };
        let sel = net
            .shared_random
            .client_fetch(&net.periods, net.valid_after);
        let Some(at) = self.attempts.get(&id) else {
            return Outcome::Continue;
        };
        let (addr_id, addr, refetched) = (at.key.0, at.addr, at.refetched);
        let wall = sh.clock.wall(now);
        if !refetched {
            let cached = self
                .cache
                .get(&addr_id)
                .filter(|d| d.period == sel.period && d.expires > wall)
                .map(|d| (d.text.clone(), d.period));
            if let Some((text, period)) = cached {
                let key = self.auth.get(&addr_id);
                let hs = match HsClient::new(addr) {
                    Ok(h) => h,
                    Err(e) => return Outcome::Fail(HsError::BadAddress(e.to_string())),
                };
                if let Ok(d) = hs.handle_descriptor(wall, &text, period, key) {
                    if let Some(at) = self.attempts.get_mut(&id) {
                        at.from_cache = true;
                        at.desc = Some((text, period));
                    }
                    return self.begin_intro(sh, id, d, now);
                }
                self.forget_cached(&addr_id);
            }
        }
        // Fetch.
        let hs = match HsClient::new(addr) {
            Ok(h) => h,
            Err(e) => return Outcome::Fail(HsError::BadAddress(e.to_string())),
        };
        let mut hsdirs: Vec<HopTarget> = hs
            .hsdirs_to_fetch(&net.ring, &sel, &net.params)
            .into_iter()
            .filter_map(|pos| net.ring_relay(pos).and_then(hop_target))
            .collect();
        // rend-spec-v3 §2.2.3: a client picks among the responsible HSDirs at random.
        for i in (1..hsdirs.len()).rev() {
            let j = usize::try_from(rng.next_u64() % (i as u64 + 1)).unwrap_or(0);
            hsdirs.swap(i, j);
        }
        let path = hs.fetch_path(sel.period);
        let Some(at) = self.attempts.get_mut(&id) else {
            return Outcome::Continue;
        };
        at.from_cache = false;
        at.desc = None;
        at.phase = Phase::Fetch(Fetch {
            hsdirs,
            next: 0,
            circ: None,
            step_deadline: None,
            period: sel.period,
            path,
            failure: FetchFailure::NotFound,
            last: "no responsible HSDir in the consensus".into(),
        });
        self.next_fetch(sh, id)
    }

    /// Ask the next HSDir, or fail when none is left.
    fn next_fetch(&mut self, sh: &mut Shared, id: u64) -> Outcome {
        let Some(at) = self.attempts.get_mut(&id) else {
            return Outcome::Continue;
        };
        let Phase::Fetch(f) = &mut at.phase else {
            return Outcome::Continue;
        };
        let Some(target) = f.hsdirs.get(f.next).cloned() else {
            let tried = f.next;
            return Outcome::Fail(match f.failure {
                FetchFailure::NotFound => HsError::DescriptorNotFound {
                    tried,
                    last: f.last.clone(),
                },
                FetchFailure::Invalid => HsError::DescriptorInvalid(f.last.clone()),
            });
        };
        f.next += 1;
        f.step_deadline = None;
        f.circ = Some(build_circ(
            &mut self.circs,
            &mut self.new_circs,
            sh,
            id,
            HsPurpose::HsDirFetch,
            Some(target),
        ));
        Outcome::Continue
    }

    /// A descriptor is in `hs`: rendezvous and introduction.
    fn begin_intro(
        &mut self,
        sh: &mut Shared,
        id: u64,
        mut hs: Described,
        _now: Instant,
    ) -> Outcome {
        let single = hs.descriptor().second_layer.single_onion_service;
        let cc = match sh.net.as_ref().and_then(|n| n.cc) {
            Some(cc) => hs
                .descriptor_sendme_inc()
                .and_then(|inc| cc.for_descriptor(inc, single)),
            None => None,
        };
        hs.set_congestion_control(cc.is_some());
        let rend = self.new_circ(sh, id, HsPurpose::ClientRend, None);
        let Some(at) = self.attempts.get_mut(&id) else {
            return Outcome::Continue;
        };
        at.phase = Phase::Intro(Box::new(Intro {
            cc,
            rend,
            rend_state: RendState::Building(hs),
            ip_next: 0,
            handshake: None,
            intro: None,
            acked: false,
            tried: 0,
            last: String::new(),
        }));
        self.launch_intro(sh, id)
    }

    /// Build a circuit to the current introduction point, skipping unusable ones; when none
    /// is left, refetch a cached descriptor once, else fail.
    fn launch_intro(&mut self, sh: &mut Shared, id: u64) -> Outcome {
        let Some(at) = self.attempts.get_mut(&id) else {
            return Outcome::Continue;
        };
        let Phase::Intro(it) = &mut at.phase else {
            return Outcome::Continue;
        };
        let ips = it
            .rend_state
            .service()
            .map(|d| d.intro_points().to_vec())
            .unwrap_or_default();
        loop {
            let Some(ip) = ips.get(it.ip_next) else {
                if at.from_cache && !at.refetched {
                    return Outcome::Refetch;
                }
                return Outcome::Fail(HsError::IntroFailed {
                    tried: it.tried,
                    last: it.last.clone(),
                });
            };
            match hop_target_from_link_specs(&ip.link_specifiers, ip.onion_key_ntor) {
                Some(t) => {
                    let c = build_circ(
                        &mut self.circs,
                        &mut self.new_circs,
                        sh,
                        id,
                        HsPurpose::ClientIntro,
                        Some(t),
                    );
                    it.intro = Some((c, IntroCircState::Building));
                    return Outcome::Continue;
                }
                None => {
                    it.tried += 1;
                    it.last = "introduction point without an RSA identity".into();
                    it.ip_next += 1;
                }
            }
        }
    }

    /// Send INTRODUCE1 once the rendezvous point is established and the introduction
    /// circuit is built.
    fn try_introduce(
        &mut self,
        sh: &mut Shared,
        id: u64,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Outcome {
        let timeout = self.config.intro_ack_timeout;
        let Some(at) = self.attempts.get_mut(&id) else {
            return Outcome::Continue;
        };
        let Phase::Intro(it) = &mut at.phase else {
            return Outcome::Continue;
        };
        let RendState::Established { rp, hs } = &it.rend_state else {
            return Outcome::Continue;
        };
        let Some((ic, IntroCircState::Built)) = it.intro else {
            return Outcome::Continue;
        };
        match hs.introduce(rng, it.ip_next, &rp.ntor_key.0, link_specs_of(rp)) {
            Ok((handshake, intro1)) => {
                it.handshake = Some(handshake);
                sh.push(HsAction::SendMessage {
                    circ: ic,
                    msg: RelayMsg::Introduce1(intro1),
                });
                it.intro = Some((
                    ic,
                    IntroCircState::Sent {
                        deadline: now + timeout,
                    },
                ));
                Outcome::Continue
            }
            Err(e) => Outcome::Fail(HsError::IntroFailed {
                tried: it.tried,
                last: e.to_string(),
            }),
        }
    }

    /// The current introduction point failed: its circuit is closed, the next one tried.
    fn intro_failed(&mut self, sh: &mut Shared, id: u64, why: String) -> Outcome {
        let Some(at) = self.attempts.get_mut(&id) else {
            return Outcome::Continue;
        };
        let Phase::Intro(it) = &mut at.phase else {
            return Outcome::Continue;
        };
        let old = it.intro.take();
        it.tried += 1;
        it.last = why;
        it.ip_next += 1;
        if let Some((c, _)) = old {
            self.close(sh, c);
        }
        self.launch_intro(sh, id)
    }

    /// The rendezvous circuit failed before RENDEZVOUS2: start again with a new cookie and
    /// a new circuit while attempts remain.
    fn rend_failed(&mut self, sh: &mut Shared, id: u64, why: &str, now: Instant) -> Outcome {
        let max = self.config.rend_attempts;
        let Some(at) = self.attempts.get_mut(&id) else {
            return Outcome::Continue;
        };
        at.rend_attempts += 1;
        let mut close = Vec::new();
        if let Phase::Intro(it) = &mut at.phase {
            close.push(it.rend);
            if let Some((c, _)) = it.intro.take() {
                close.push(c);
            }
        }
        let retry = at.rend_attempts < max && now < at.deadline;
        let desc = at.desc.clone();
        let addr = at.addr;
        let key = self.auth.get(&at.key.0).cloned();
        for c in close {
            self.close(sh, c);
        }
        if !retry {
            return Outcome::Fail(HsError::RendezvousFailed(why.to_string()));
        }
        let Some((text, period)) = desc else {
            return Outcome::Fail(HsError::RendezvousFailed(why.to_string()));
        };
        let hs = match HsClient::new(addr) {
            Ok(h) => h,
            Err(e) => return Outcome::Fail(HsError::BadAddress(e.to_string())),
        };
        let wall = sh.clock.wall(now);
        match hs.handle_descriptor(wall, &text, period, key.as_ref()) {
            Ok(d) => self.begin_intro(sh, id, d, now),
            Err(e) => Outcome::Fail(HsError::RendezvousFailed(format!(
                "{why}; descriptor no longer usable: {e}"
            ))),
        }
    }

    /// Carry out what a step decided.
    fn finish(
        &mut self,
        sh: &mut Shared,
        id: u64,
        o: Outcome,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        match o {
            Outcome::Continue => {}
            Outcome::Fail(error) => {
                let Some(at) = self.remove_attempt(sh, id, None) else {
                    return;
                };
                for request in at.requests {
                    sh.push(HsAction::Failed {
                        request,
                        error: error.clone(),
                    });
                }
            }
            Outcome::Ready(circ) => {
                let Some(at) = self.remove_attempt(sh, id, Some(circ)) else {
                    return;
                };
                // The rendezvous circuit stays known: its closure ends its reuse.
                self.circs.insert(circ, 0);
                self.ready.insert(at.key, ReadyCirc { circ, since: now });
                for request in at.requests {
                    sh.push(HsAction::Ready { request, circ });
                }
            }
            Outcome::Refetch => {
                let mut close = Vec::new();
                let addr_id = match self.attempts.get_mut(&id) {
                    Some(at) => {
                        at.refetched = true;
                        if let Phase::Intro(it) = &mut at.phase {
                            close.push(it.rend);
                            if let Some((c, _)) = it.intro.take() {
                                close.push(c);
                            }
                        }
                        at.key.0
                    }
                    None => return,
                };
                for c in close {
                    self.close(sh, c);
                }
                self.forget_cached(&addr_id);
                // A fresh fetch has `refetched` set, so `start` cannot come back here.
                let o = self.start(sh, id, now, rng);
                self.finish(sh, id, o, now, rng);
            }
        }
    }

    /// Forget attempt `id`, closing its circuits but `keep`.
    fn remove_attempt(
        &mut self,
        sh: &mut Shared,
        id: u64,
        keep: Option<HsCircRef>,
    ) -> Option<Attempt> {
        let at = self.attempts.remove(&id)?;
        self.by_key.remove(&at.key);
        self.n_requests = self.n_requests.saturating_sub(at.requests.len());
        let mine: Vec<HsCircRef> = self
            .circs
            .iter()
            .filter(|(_, a)| **a == id)
            .map(|(c, _)| *c)
            .collect();
        for c in mine {
            if Some(c) == keep {
                self.circs.remove(&c);
            } else {
                self.close(sh, c);
            }
        }
        Some(at)
    }

    pub(crate) fn circuit_built(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        last_hop: &HopTarget,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(&id) = self.circs.get(&circ) else {
            return;
        };
        let dir_timeout = self.config.dir_timeout;
        let rend_timeout = self.config.rend_established_timeout;
        let Some(at) = self.attempts.get_mut(&id) else {
            return;
        };
        let o = match &mut at.phase {
            Phase::Fetch(f) if f.circ == Some(circ) => {
                f.step_deadline = Some(now + dir_timeout);
                let request =
                    format!("GET {} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", f.path).into_bytes();
                sh.push(HsAction::DirRequest {
                    circ,
                    request,
                    max_body: MAX_DESCRIPTOR_BODY,
                });
                Outcome::Continue
            }
            Phase::Intro(it)
                if it.rend == circ && matches!(it.rend_state, RendState::Building(_)) =>
            {
                match std::mem::replace(&mut it.rend_state, RendState::Moving) {
                    RendState::Building(d) => {
                        let (hs, est) = d.establish_rendezvous(rng);
                        sh.push(HsAction::SendMessage {
                            circ,
                            msg: RelayMsg::EstablishRendezvous(est),
                        });
                        it.rend_state = RendState::Establishing {
                            deadline: now + rend_timeout,
                            rp: last_hop.clone(),
                            hs,
                        };
                    }
                    other => it.rend_state = other,
                }
                Outcome::Continue
            }
            Phase::Intro(it) if it.intro == Some((circ, IntroCircState::Building)) => {
                it.intro = Some((circ, IntroCircState::Built));
                self.try_introduce(sh, id, now, rng)
            }
            _ => {
                self.close(sh, circ);
                Outcome::Continue
            }
        };
        self.finish(sh, id, o, now, rng);
    }

    pub(crate) fn circuit_closed(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        why: &str,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(id) = self.circs.remove(&circ) else {
            return;
        };
        self.ready.retain(|_, r| r.circ != circ);
        let Some(at) = self.attempts.get_mut(&id) else {
            return;
        };
        let o = match &mut at.phase {
            Phase::Fetch(f) if f.circ == Some(circ) => {
                f.circ = None;
                f.last = why.to_string();
                self.next_fetch(sh, id)
            }
            Phase::Intro(it) if it.rend == circ => self.rend_failed(sh, id, why, now),
            Phase::Intro(it) if it.intro.is_some_and(|(c, _)| c == circ) => {
                if it.acked {
                    it.intro = None;
                    Outcome::Continue
                } else {
                    self.intro_failed(sh, id, why.to_string())
                }
            }
            _ => Outcome::Continue,
        };
        self.finish(sh, id, o, now, rng);
    }

    pub(crate) fn dir_answer(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        answer: Result<Vec<u8>, Failure>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(&id) = self.circs.get(&circ) else {
            return;
        };
        self.close(sh, circ);
        let wall = sh.clock.wall(now);
        let Some(at) = self.attempts.get_mut(&id) else {
            return;
        };
        let key = self.auth.get(&at.key.0).cloned();
        let addr = at.addr;
        let Phase::Fetch(f) = &mut at.phase else {
            return;
        };
        if f.circ != Some(circ) {
            return;
        }
        f.circ = None;
        f.step_deadline = None;
        let period = f.period;
        let text: Result<String, String> = answer
            .map_err(|e| failure_text(&e))
            .and_then(|b| String::from_utf8(b).map_err(|_| "descriptor is not UTF-8".to_string()));
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                f.last = e;
                let o = self.next_fetch(sh, id);
                return self.finish(sh, id, o, now, rng);
            }
        };
        let hs = match HsClient::new(addr) {
            Ok(h) => h,
            Err(e) => {
                return self.finish(
                    sh,
                    id,
                    Outcome::Fail(HsError::BadAddress(e.to_string())),
                    now,
                    rng,
                )
            }
        };
        let o = match hs.handle_descriptor(wall, &text, period, key.as_ref()) {
            Ok(d) => {
                let lifetime = u64::from(d.descriptor().lifetime_minutes);
                let addr_id = *addr.public_key_bytes();
                self.cache_put(
                    addr_id,
                    CachedDesc {
                        text: text.clone(),
                        period,
                        expires: wall.add_secs(lifetime * 60),
                    },
                );
                if let Some(at) = self.attempts.get_mut(&id) {
                    at.desc = Some((text, period));
                }
                self.begin_intro(sh, id, d, now)
            }
            // Every HSDir holds the same descriptor: a key that cannot open it here cannot
            // open it anywhere (rend-spec-v3 §2.5.1.2).
            Err(ClientError::Desc(DescError::ClientAuthRequired)) => {
                Outcome::Fail(HsError::ClientAuthMissing)
            }
            Err(ClientError::Desc(DescError::ClientNotAuthorized)) => {
                Outcome::Fail(HsError::ClientAuthWrong)
            }
            Err(e) => {
                f_invalid(&mut self.attempts, id, e.to_string());
                self.next_fetch(sh, id)
            }
        };
        self.finish(sh, id, o, now, rng);
    }

    pub(crate) fn message(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        msg: &RelayMsg<'_>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(&id) = self.circs.get(&circ) else {
            return;
        };
        let Some(at) = self.attempts.get_mut(&id) else {
            return;
        };
        let Phase::Intro(it) = &mut at.phase else {
            return;
        };
        let o = if circ == it.rend {
            match msg {
                RelayMsg::RendezvousEstablished => {
                    match std::mem::replace(&mut it.rend_state, RendState::Moving) {
                        RendState::Establishing { rp, hs, .. } => {
                            it.rend_state = RendState::Established {
                                rp,
                                hs: hs.handle_rendezvous_established(),
                            };
                            self.try_introduce(sh, id, now, rng)
                        }
                        other => {
                            it.rend_state = other;
                            self.rend_failed(sh, id, "unexpected RENDEZVOUS_ESTABLISHED", now)
                        }
                    }
                }
                RelayMsg::Rendezvous2(m) => match it.handshake.take() {
                    Some(h) => {
                        let asked = h.congestion_control_requested();
                        match h.handle_rendezvous2(m) {
                            Ok(keys) => {
                                let cc = it.cc.filter(|_| asked);
                                sh.push(HsAction::AddVirtualHop {
                                    circ,
                                    hop: VirtualHop {
                                        keys,
                                        side: VirtualHopSide::Client,
                                        cc,
                                    },
                                });
                                Outcome::Ready(circ)
                            }
                            Err(e) => self.rend_failed(sh, id, &format!("RENDEZVOUS2: {e}"), now),
                        }
                    }
                    None => self.rend_failed(sh, id, "RENDEZVOUS2 before INTRODUCE1", now),
                },
                _ => self.rend_failed(sh, id, "unexpected message on the rendezvous circuit", now),
            }
        } else if it.intro.is_some_and(|(c, _)| c == circ) {
            let acked = match (msg, &it.handshake) {
                (RelayMsg::IntroduceAck(ack), Some(h)) => {
                    h.handle_introduce_ack(ack).map_err(|e| e.to_string())
                }
                _ => Err("unexpected message on the introduction circuit".into()),
            };
            match acked {
                Ok(()) => {
                    it.acked = true;
                    it.intro = None;
                    self.close(sh, circ);
                    Outcome::Continue
                }
                Err(e) => self.intro_failed(sh, id, e),
            }
        } else {
            Outcome::Continue
        };
        self.finish(sh, id, o, now, rng);
    }

    pub(crate) fn handle_timeout(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let dirt = self.config.max_circuit_dirtiness;
        self.ready.retain(|_, r| now < r.since + dirt);
        let ids: Vec<u64> = self.attempts.keys().copied().collect();
        for id in ids {
            let Some(at) = self.attempts.get_mut(&id) else {
                continue;
            };
            let o = if now >= at.deadline {
                Outcome::Fail(match &at.phase {
                    Phase::Fetch(f) => HsError::DescriptorNotFound {
                        tried: f.next,
                        last: format!("timed out; {}", f.last),
                    },
                    Phase::Intro(it) if it.acked => {
                        HsError::RendezvousFailed("no RENDEZVOUS2 in time".into())
                    }
                    Phase::Intro(_) => HsError::IntroTimedOut,
                })
            } else {
                match &mut at.phase {
                    Phase::Fetch(f) if f.step_deadline.is_some_and(|d| now >= d) => {
                        f.step_deadline = None;
                        f.last = "the HSDir did not answer in time".into();
                        if let Some(c) = f.circ.take() {
                            self.close(sh, c);
                        }
                        self.next_fetch(sh, id)
                    }
                    Phase::Intro(it) => match (&it.rend_state, it.intro) {
                        (RendState::Establishing { deadline, .. }, _) if now >= *deadline => {
                            self.rend_failed(sh, id, "no RENDEZVOUS_ESTABLISHED in time", now)
                        }
                        (_, Some((_, IntroCircState::Sent { deadline }))) if now >= deadline => {
                            self.intro_failed(sh, id, "no INTRODUCE_ACK in time".into())
                        }
                        _ => Outcome::Continue,
                    },
                    _ => Outcome::Continue,
                }
            };
            self.finish(sh, id, o, now, rng);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for a in self.attempts.values() {
            at(a.deadline);
            match &a.phase {
                Phase::Fetch(f) => {
                    if let Some(d) = f.step_deadline {
                        at(d);
                    }
                }
                Phase::Intro(it) => {
                    if let RendState::Establishing { deadline, .. } = it.rend_state {
                        at(deadline);
                    }
                    if let Some((_, IntroCircState::Sent { deadline })) = it.intro {
                        at(deadline);
                    }
                }
            }
        }
        for r in self.ready.values() {
            at(r.since + self.config.max_circuit_dirtiness);
        }
        t
    }
}

/// A failed HSDir request, for errors.
pub(crate) fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Network(e) => e.clone(),
        Failure::Timeout => "timed out".into(),
        Failure::Http { status, reason } => {
            format!("HTTP {status} {}", crate::text::escape(reason))
        }
        other => format!("{other:?}"),
    }
}

/// Record that a descriptor was invalid for attempt `id`'s fetch.
fn f_invalid(attempts: &mut HashMap<u64, Attempt>, id: u64, why: String) {
    if let Some(Attempt {
        phase: Phase::Fetch(f),
        ..
    }) = attempts.get_mut(&id)
    {
        f.failure = FetchFailure::Invalid;
        f.last = why;
    }
}
