//! The host side: onion services the client publishes and serves (rend-spec-v3 §2.2.4.2,
//! §3.1, §3.3, §4.2), driving `onion_hs::publish::Publisher` (which owns
//! `onion_hs::service::HsService`) over circuits the core builds.
//!
//! - The publisher decides *when* and *where*: introduction points (3 by default, relays
//!   with Stable, Running and Valid and an ntor key), their rebuild after a failure and
//!   rotation (§3.1, param-spec `hs_intro_*`), the descriptors of both upload slots
//!   (§2.2.4.2), their upload to the responsible HSDirs and the re-uploads (§2.2.2). This
//!   machine carries out what it asks: a circuit to an introduction point, then
//!   ESTABLISH_INTRO bound to the last hop's `KH` (§3.1.1; without the DoS extension, as C
//!   tor when `HiddenServiceEnableIntroDoSDefense` is off, its default); a circuit to an
//!   HSDir, then `POST /tor/hs/3/publish` over BEGIN_DIR (§2.2.6); and it reports every
//!   outcome back. An introduction circuit whose INTRO_ESTABLISHED does not come within
//!   [`HostConfig::step_timeout`] is closed and reported as failed.
//! - INTRODUCE2 (§3.3) is admitted before any decryption only while fewer than
//!   [`HostConfig::max_pending_intros`] introductions wait and a token bucket over all
//!   introduction points of the service allows it ([`HostConfig::intro_rate`] per second,
//!   [`HostConfig::intro_burst`] at once: C tor's `HiddenServiceEnableIntroDoSRatePerSec` 25
//!   and `...BurstPerSec` 200). Beyond either the INTRODUCE2 is dropped and counted
//!   ([`ServiceStats`]); the client tries another introduction point or gives up. Admitted
//!   ones are decrypted and replay-checked by the service (per introduction point, and
//!   rendezvous cookies service-wide); replays are dropped and counted.
//! - Rendezvous (§4.2): at most [`HostConfig::max_rend_builds`] circuits to clients'
//!   rendezvous points are built at once (C tor's `MAX_CHEAP_REND_CIRCUITS_IN_PROGRESS`,
//!   16); the others wait in the queue, and one that waited more than half of
//!   [`HostConfig::rend_timeout`] (C tor's `MAX_REND_TIMEOUT`, 30 s) before its first
//!   attempt is dropped, as the client will have given up. A failed build is retried once
//!   on another path within the timeout. A built circuit gets RENDEZVOUS1 and the client's
//!   virtual hop ([`super::HsAction::AddVirtualHop`], streams accepted), with congestion
//!   control when the service runs it and the client asks for it; a client that asks for
//!   it from a service that does not run it is refused (the descriptor did not offer it).
//! - Streams the client opens on a joined rendezvous circuit (RELAY_BEGIN, rend-spec-v3
//!   §4.2, tor-spec §6.2) to one of the service's ports are offered to the application,
//!   which accepts (RELAY_CONNECTED) or rejects (RELAY_END with its reason, as C tor's
//!   service sends CONNECTREFUSED when its target refuses) each of them
//!   ([`super::OnionServices::incoming_stream`]); a port the service does not serve is
//!   refused at once. Undecided streams are bounded: at most
//!   [`HostConfig::max_undecided_per_circuit`] per rendezvous circuit and
//!   [`HostConfig::max_undecided`] per service; a BEGIN beyond either is refused with END
//!   RESOURCELIMIT (tor-spec §6.3: "the OR has no resources to fulfill the request")
//!   without troubling the application. One the application has not decided within
//!   [`HostConfig::undecided_timeout`] is refused with END TIMEOUT
//!   ([`super::HsAction::IncomingTimedOut`]), as C tor's service ends a stream whose
//!   target's connect timed out.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_cell::RelayMsg;
use onion_circuit::cc::CcConfig;
use onion_circuit::circuit::HopTarget;
use onion_dir::{RelayFlags, Timestamp};
use onion_hs::desc::ClientAuthConfig;
use onion_hs::keys::ExpandedKeypair;
use onion_hs::publish::{
    ConsensusView, IntroCandidate, IntroId, PublishAction, PublishError, Publisher,
    PublisherConfig, UploadId,
};
use onion_hs::service::{HsService, HsServiceConfig, RendezvousRequest, ServiceError, UPLOAD_PATH};
use onion_hs::x25519_dalek::PublicKey as XPublic;
use rand_core::CryptoRngCore;

use super::{
    hop_target, hop_target_from_link_specs, HsAction, HsCircRef, HsError, HsNet, HsPurpose, Shared,
    VirtualHop, VirtualHopSide, REJECT_PORT,
};
use crate::Instant;

/// Hosted services at once, at most; [`super::OnionServices::host`] beyond it fails with
/// [`HsError::Resource`].
pub const MAX_SERVICES: usize = 64;

/// The most an HSDir's answer to an upload may be, as an HTTP body (C tor's is empty).
pub const MAX_UPLOAD_BODY: usize = 4096;

/// One hosted service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u64);

/// A service to host.
pub struct HostConfig {
    /// The identity key pair `KS_hs_id` (the address is its public key, rend-spec-v3 §6);
    /// blinded keys per time period are derived from it.
    pub identity: ExpandedKeypair,
    /// The virtual ports clients may open streams to.
    pub ports: Vec<u16>,
    /// Client authorization (rend-spec-v3 §2.5.1.2): the x25519 public keys of the clients
    /// that may read the descriptor; empty for a public service.
    pub authorized_clients: Vec<XPublic>,
    /// The publisher's tunables (introduction points, rotation, re-upload timers).
    pub publisher: PublisherConfig,
    /// Introductions waiting for a rendezvous circuit, at most (64).
    pub max_pending_intros: usize,
    /// INTRODUCE2 admitted per second on average (25).
    pub intro_rate: u64,
    /// INTRODUCE2 admitted at once (200).
    pub intro_burst: u64,
    /// Rendezvous circuits built at once (16).
    pub max_rend_builds: usize,
    /// How long a rendezvous may take from INTRODUCE2 to a built circuit (30 s).
    pub rend_timeout: Duration,
    /// Circuits tried per rendezvous (2).
    pub rend_attempts: u32,
    /// How long INTRO_ESTABLISHED or an HSDir's answer to an upload may take (60 s).
    pub step_timeout: Duration,
    /// Incoming streams the application has not accepted or rejected yet, at most, on one
    /// rendezvous circuit (32: a browser opens about six streams at once to one host, and
    /// the application's decision takes one local connect). Beyond it: END RESOURCELIMIT.
    pub max_undecided_per_circuit: usize,
    /// Undecided incoming streams, at most, over all rendezvous circuits of the service
    /// (256). Beyond it: END RESOURCELIMIT.
    pub max_undecided: usize,
    /// How long the application may take to accept or reject an incoming stream (10 s: C
    /// tor's client gives up on a rendezvous stream that is not connected within 10 s,
    /// `compute_retry_timeout`, so a later answer serves nobody). Then: END TIMEOUT, and
    /// the application is told the stream closed.
    pub undecided_timeout: Duration,
}

impl HostConfig {
    /// A service with `identity` on `ports`, public, with C tor's defaults.
    pub fn new(identity: ExpandedKeypair, ports: Vec<u16>) -> Self {
        HostConfig {
            identity,
            ports,
            authorized_clients: Vec::new(),
            publisher: PublisherConfig::default(),
            max_pending_intros: 64,
            intro_rate: 25,
            intro_burst: 200,
            max_rend_builds: 16,
            rend_timeout: Duration::from_secs(30),
            rend_attempts: 2,
            step_timeout: Duration::from_secs(60),
            max_undecided_per_circuit: DEFAULT_MAX_UNDECIDED_PER_CIRCUIT,
            max_undecided: DEFAULT_MAX_UNDECIDED,
            undecided_timeout: DEFAULT_UNDECIDED_TIMEOUT,
        }
    }
}

/// [`HostConfig::max_undecided_per_circuit`] by default.
pub const DEFAULT_MAX_UNDECIDED_PER_CIRCUIT: usize = 32;
/// [`HostConfig::max_undecided`] by default.
pub const DEFAULT_MAX_UNDECIDED: usize = 256;
/// [`HostConfig::undecided_timeout`] by default.
pub const DEFAULT_UNDECIDED_TIMEOUT: Duration = Duration::from_secs(10);

/// An incoming stream of a hosted service, named by the core when it reports the stream
/// ([`super::OnionServices::incoming_stream`]); the core's own stream handle does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingRef(pub u64);

/// What to do with a stream a client opens on a rendezvous circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncomingDecision {
    /// Hand it to the application for `service`, undecided: the application accepts it
    /// (`Circuit::accept_stream`, RELAY_CONNECTED) or rejects it (`Circuit::reject_stream`)
    /// later; until then it counts against the undecided bounds, and the core reports the
    /// decision with [`super::OnionServices::incoming_decided`].
    Offer {
        /// The service.
        service: ServiceId,
    },
    /// Refuse it now (`Circuit::reject_stream`) with this reason.
    Reject(EndReason),
}

/// Counters of one hosted service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// INTRODUCE2 admitted, decrypted and queued for a rendezvous.
    pub introductions: u64,
    /// INTRODUCE2 dropped by the rate limit.
    pub dropped_rate: u64,
    /// INTRODUCE2 dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// INTRODUCE2 dropped as replays (rend-spec-v3 §3.3).
    pub replays: u64,
    /// INTRODUCE2 that did not decrypt or verify, or asked for what the service refuses.
    pub invalid: u64,
    /// Queued introductions dropped because they waited too long.
    pub stale: u64,
    /// Rendezvous circuits joined (RENDEZVOUS1 sent).
    pub rendezvous: u64,
    /// The time from an INTRODUCE2 to its RENDEZVOUS1, added up over `rendezvous`: mostly
    /// the rendezvous circuit's build (one EXTEND2 when a pre-built internal circuit was
    /// cannibalized, a whole build otherwise).
    pub rendezvous_delay_total: Duration,
    /// The same for the last rendezvous.
    pub rendezvous_delay_last: Duration,
    /// Incoming streams offered to the application.
    pub streams_offered: u64,
    /// Incoming streams refused because too many were undecided (END RESOURCELIMIT).
    pub streams_refused_full: u64,
    /// Incoming streams the application did not decide in time (END TIMEOUT).
    pub streams_timed_out: u64,
    /// Rendezvous given up.
    pub rendezvous_failed: u64,
    /// Descriptor uploads that succeeded.
    pub uploads_ok: u64,
    /// Descriptor uploads that failed.
    pub uploads_failed: u64,
}

/// A token bucket over the monotonic clock.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens, in thousandths.
    milli: u64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            milli: burst.saturating_mul(1000),
            last: now,
        }
    }

    /// Take one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let ms =
            u64::try_from(now.saturating_duration_since(self.last).as_millis()).unwrap_or(u64::MAX);
        self.last = now.max(self.last);
        self.milli = self
            .milli
            .saturating_add(ms.saturating_mul(self.rate))
            .min(self.burst.saturating_mul(1000));
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// An introduction waiting for, or being served by, a rendezvous circuit.
struct PendingIntro {
    req: RendezvousRequest,
    target: HopTarget,
    cc: Option<CcConfig>,
    since: Instant,
    attempts: u32,
}

/// What a circuit of a service is for.
enum Role {
    IntroBuilding(IntroId),
    IntroEstablishing { intro: IntroId, deadline: Instant },
    IntroEstablished(IntroId),
    UploadBuilding { upload: UploadId, request: Vec<u8> },
    Uploading { upload: UploadId, deadline: Instant },
    RendBuilding(Box<PendingIntro>),
    RendJoined,
}

struct Hosted {
    id: ServiceId,
    publisher: Publisher,
    ports: Vec<u16>,
    cc: Option<CcConfig>,
    config: HostLimits,
    circs: HashMap<HsCircRef, Role>,
    bucket: Option<TokenBucket>,
    queue: VecDeque<PendingIntro>,
    building: usize,
    stats: ServiceStats,
    published: bool,
    /// Incoming streams offered to the application and not decided yet: their rendezvous
    /// circuit and deadline.
    undecided: HashMap<IncomingRef, (HsCircRef, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct HostLimits {
    max_pending_intros: usize,
    intro_rate: u64,
    intro_burst: u64,
    max_rend_builds: usize,
    rend_timeout: Duration,
    rend_attempts: u32,
    step_timeout: Duration,
    max_undecided_per_circuit: usize,
    max_undecided: usize,
    undecided_timeout: Duration,
}

/// The host side. See the module documentation.
pub(crate) struct Host {
    services: Vec<Hosted>,
    next_id: u64,
    new_circs: Vec<HsCircRef>,
}

/// What the publisher needs of the directory.
fn consensus_view(net: &HsNet) -> ConsensusView {
    let intro_candidates = net
        .dir
        .view
        .relays()
        .iter()
        .filter(|r| {
            r.flags
                .contains(RelayFlags::STABLE | RelayFlags::RUNNING | RelayFlags::VALID)
        })
        .filter_map(|r| {
            let t = hop_target(r)?;
            Some(IntroCandidate {
                rsa_id: r.rsa_id,
                onion_key: r.ntor_onion_key?,
                link_specifiers: super::link_specs_of(&t),
            })
        })
        .collect();
    ConsensusView {
        valid_after: net.valid_after,
        periods: net.periods,
        shared_random: net.shared_random,
        params: net.params,
        hsdirs: net.ring.clone(),
        intro_candidates,
    }
}

/// The congestion control of a client's rendezvous circuit: the service's `offered` one if
/// the client `asks` (proposal 324 §4.2), fixed windows if not; a request to a service that
/// offers none is refused, as C tor refuses an INTRODUCE2 asking for it when its network
/// does not enable it.
fn rendezvous_cc(offered: Option<CcConfig>, asks: bool) -> Result<Option<CcConfig>, ()> {
    match (offered, asks) {
        (Some(cc), true) => Ok(Some(cc)),
        (None, true) => Err(()),
        (_, false) => Ok(None),
    }
}

impl Host {
    pub(crate) fn new() -> Self {
        Host {
            services: Vec::new(),
            next_id: 0,
            new_circs: Vec::new(),
        }
    }

    pub(crate) fn take_new_circuits(&mut self) -> Vec<HsCircRef> {
        std::mem::take(&mut self.new_circs)
    }

    pub(crate) fn address(&self, service: ServiceId) -> Option<onion_hs::OnionAddress> {
        self.services
            .iter()
            .find(|s| s.id == service)
            .map(|s| s.publisher.service().address())
    }

    pub(crate) fn stats(&self, service: ServiceId) -> Option<ServiceStats> {
        self.services
            .iter()
            .find(|s| s.id == service)
            .map(|s| s.stats)
    }

    pub(crate) fn add(
        &mut self,
        sh: &mut Shared,
        config: HostConfig,
        cc: Option<CcConfig>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<ServiceId, HsError> {
        if self.services.len() >= MAX_SERVICES {
            return Err(HsError::Resource("hosted onion services"));
        }
        let address = config.identity.id_key().address();
        if self
            .services
            .iter()
            .any(|s| s.publisher.service().address() == address)
        {
            return Err(HsError::Misuse("this onion service is hosted already"));
        }
        let clients = config.authorized_clients;
        let hs_config = HsServiceConfig {
            client_auth: (!clients.is_empty()).then_some(ClientAuthConfig { clients }),
            flow_control_sendme_inc: cc.map(|c| c.sendme_inc),
            ..HsServiceConfig::default()
        };
        let hs = HsService::new(config.identity, hs_config);
        self.next_id += 1;
        let id = ServiceId(self.next_id);
        self.services.push(Hosted {
            id,
            publisher: Publisher::new(hs, config.publisher),
            ports: config.ports,
            cc,
            config: HostLimits {
                max_pending_intros: config.max_pending_intros,
                intro_rate: config.intro_rate,
                intro_burst: config.intro_burst,
                max_rend_builds: config.max_rend_builds.max(1),
                rend_timeout: config.rend_timeout,
                rend_attempts: config.rend_attempts.max(1),
                step_timeout: config.step_timeout,
                max_undecided_per_circuit: config.max_undecided_per_circuit,
                max_undecided: config.max_undecided,
                undecided_timeout: config.undecided_timeout,
            },
            undecided: HashMap::new(),
            circs: HashMap::new(),
            bucket: None,
            queue: VecDeque::new(),
            building: 0,
            stats: ServiceStats::default(),
            published: false,
        });
        if let Some(net) = sh.net.as_ref() {
            let view = consensus_view(net);
            let wall = sh.clock.wall(now);
            let k = self.services.len() - 1;
            self.services[k].publisher.set_consensus(wall, view, rng);
            self.drain(sh, k, now, rng);
        }
        Ok(id)
    }

    pub(crate) fn remove(&mut self, sh: &mut Shared, service: ServiceId) -> Result<(), HsError> {
        let k = self
            .services
            .iter()
            .position(|s| s.id == service)
            .ok_or(HsError::Misuse("no such hosted service"))?;
        let s = self.services.remove(k);
        for circ in s.circs.into_keys() {
            sh.push(HsAction::CloseCircuit { circ });
        }
        Ok(())
    }

    pub(crate) fn set_directory(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(net) = sh.net.as_ref() else {
            return;
        };
        let view = consensus_view(net);
        let wall = sh.clock.wall(now);
        for k in 0..self.services.len() {
            self.services[k]
                .publisher
                .set_consensus(wall, view.clone(), rng);
            self.drain(sh, k, now, rng);
        }
    }

    fn find_circ(&self, circ: HsCircRef) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.circs.contains_key(&circ))
    }

    fn new_circ(
        &mut self,
        sh: &mut Shared,
        k: usize,
        role: Role,
        purpose: HsPurpose,
        target: HopTarget,
    ) {
        let c = sh.new_ref();
        self.new_circs.push(c);
        self.services[k].circs.insert(c, role);
        sh.push(HsAction::BuildCircuit {
            circ: c,
            purpose,
            last_hop: Some(target),
        });
    }

    /// Carry out what service `k`'s publisher asks, until it asks nothing more.
    fn drain(&mut self, sh: &mut Shared, k: usize, now: Instant, rng: &mut impl CryptoRngCore) {
        let wall = sh.clock.wall(now);
        // Each report may bring new actions; the publisher rate-limits its launches and
        // bounds its retries, so this ends.
        while let Some(a) = self.services[k].publisher.poll_action() {
            match a {
                PublishAction::BuildIntroCircuit { intro, relay } => {
                    let target = sh
                        .net
                        .as_ref()
                        .and_then(|n| n.relay_by_rsa(relay))
                        .and_then(hop_target);
                    match target {
                        Some(t) => self.new_circ(
                            sh,
                            k,
                            Role::IntroBuilding(intro),
                            HsPurpose::ServiceIntro,
                            t,
                        ),
                        None => {
                            let _ = self.services[k]
                                .publisher
                                .intro_circuit_closed(wall, intro, rng);
                        }
                    }
                }
                PublishAction::CloseIntroCircuit { intro } => {
                    let s = &mut self.services[k];
                    let circ = s.circs.iter().find_map(|(c, r)| match r {
                        Role::IntroBuilding(i)
                        | Role::IntroEstablishing { intro: i, .. }
                        | Role::IntroEstablished(i)
                            if *i == intro =>
                        {
                            Some(*c)
                        }
                        _ => None,
                    });
                    if let Some(circ) = circ {
                        s.circs.remove(&circ);
                        sh.push(HsAction::CloseCircuit { circ });
                    }
                }
                PublishAction::Upload {
                    upload,
                    hsdir,
                    descriptor,
                    ..
                } => {
                    let target = sh
                        .net
                        .as_ref()
                        .and_then(|n| n.relay_by_rsa(hsdir))
                        .and_then(hop_target);
                    let mut request = format!(
                        "POST {UPLOAD_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
                        descriptor.len()
                    )
                    .into_bytes();
                    request.extend_from_slice(descriptor.as_bytes());
                    match target {
                        Some(t) => self.new_circ(
                            sh,
                            k,
                            Role::UploadBuilding { upload, request },
                            HsPurpose::HsDirUpload,
                            t,
                        ),
                        None => {
                            self.services[k].stats.uploads_failed += 1;
                            self.services[k]
                                .publisher
                                .upload_result(wall, upload, false, rng);
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn circuit_built(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        kh: &[u8],
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(k) = self.find_circ(circ) else {
            sh.push(HsAction::CloseCircuit { circ });
            return;
        };
        let wall = sh.clock.wall(now);
        let s = &mut self.services[k];
        let step = s.config.step_timeout;
        let Some(role) = s.circs.remove(&circ) else {
            return;
        };
        match role {
            Role::IntroBuilding(intro) => match s.publisher.intro_circuit_built(intro, kh) {
                Ok(est) => {
                    sh.push(HsAction::SendMessage {
                        circ,
                        msg: RelayMsg::EstablishIntro(est),
                    });
                    s.circs.insert(
                        circ,
                        Role::IntroEstablishing {
                            intro,
                            deadline: now + step,
                        },
                    );
                }
                Err(_) => {
                    sh.push(HsAction::CloseCircuit { circ });
                    let _ = s.publisher.intro_circuit_closed(wall, intro, rng);
                }
            },
            Role::UploadBuilding { upload, request } => {
                sh.push(HsAction::DirRequest {
                    circ,
                    request,
                    max_body: MAX_UPLOAD_BODY,
                });
                s.circs.insert(
                    circ,
                    Role::Uploading {
                        upload,
                        deadline: now + step,
                    },
                );
            }
            Role::RendBuilding(p) => {
                sh.push(HsAction::SendMessage {
                    circ,
                    msg: RelayMsg::Rendezvous1(p.req.rendezvous1.clone()),
                });
                sh.push(HsAction::AddVirtualHop {
                    circ,
                    hop: VirtualHop {
                        keys: p.req.keys.clone(),
                        side: VirtualHopSide::Service,
                        cc: p.cc,
                    },
                });
                s.circs.insert(circ, Role::RendJoined);
                s.stats.rendezvous += 1;
                let delay = now.saturating_duration_since(p.since);
                s.stats.rendezvous_delay_last = delay;
                s.stats.rendezvous_delay_total =
                    s.stats.rendezvous_delay_total.saturating_add(delay);
                s.building = s.building.saturating_sub(1);
                self.start_rendezvous(sh, k, now);
            }
            other => {
                // Built twice: keep what it was.
                s.circs.insert(circ, other);
            }
        }
        self.drain(sh, k, now, rng);
    }

    pub(crate) fn circuit_closed(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(k) = self.find_circ(circ) else {
            return;
        };
        let wall = sh.clock.wall(now);
        let s = &mut self.services[k];
        let Some(role) = s.circs.remove(&circ) else {
            return;
        };
        match role {
            Role::IntroBuilding(intro)
            | Role::IntroEstablishing { intro, .. }
            | Role::IntroEstablished(intro) => {
                let _ = s.publisher.intro_circuit_closed(wall, intro, rng);
            }
            Role::UploadBuilding { upload, .. } | Role::Uploading { upload, .. } => {
                s.stats.uploads_failed += 1;
                s.publisher.upload_result(wall, upload, false, rng);
            }
            Role::RendBuilding(p) => {
                s.building = s.building.saturating_sub(1);
                self.rend_failed(k, *p, now);
                self.start_rendezvous(sh, k, now);
            }
            Role::RendJoined => {
                // Its streams end with it (the core ends them): nothing waits any more.
                s.undecided.retain(|_, (c, _)| *c != circ);
            }
        }
        self.drain(sh, k, now, rng);
    }

    /// A rendezvous attempt failed: retried on another path while attempts and time remain.
    fn rend_failed(&mut self, k: usize, mut p: PendingIntro, now: Instant) {
        let s = &mut self.services[k];
        if p.attempts < s.config.rend_attempts && now < p.since + s.config.rend_timeout {
            p.since = p.since.min(now);
            s.queue.push_front(p);
        } else {
            s.stats.rendezvous_failed += 1;
        }
    }

    /// Start rendezvous circuits for queued introductions, up to the bound; drop the ones
    /// that waited too long.
    fn start_rendezvous(&mut self, sh: &mut Shared, k: usize, now: Instant) {
        loop {
            let s = &mut self.services[k];
            if s.building >= s.config.max_rend_builds {
                return;
            }
            let Some(mut p) = s.queue.pop_front() else {
                return;
            };
            if p.attempts == 0 && now >= p.since + s.config.rend_timeout / 2 {
                s.stats.stale += 1;
                continue;
            }
            p.attempts += 1;
            s.building += 1;
            let target = p.target.clone();
            self.new_circ(
                sh,
                k,
                Role::RendBuilding(Box::new(p)),
                HsPurpose::ServiceRend,
                target,
            );
        }
    }

    pub(crate) fn message(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        msg: &RelayMsg<'_>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(k) = self.find_circ(circ) else {
            return;
        };
        let wall = sh.clock.wall(now);
        let s = &mut self.services[k];
        let intro = match s.circs.get(&circ) {
            Some(Role::IntroEstablishing { intro, .. }) => (*intro, false),
            Some(Role::IntroEstablished(intro)) => (*intro, true),
            _ => return,
        };
        match (msg, intro) {
            (RelayMsg::IntroEstablished(_), (intro, false)) => {
                s.circs.insert(circ, Role::IntroEstablished(intro));
                let _ = s.publisher.intro_established(wall, intro, rng);
            }
            (RelayMsg::Introduce2(m), (intro, true)) => {
                self.introduce2(k, intro, m, now, wall, rng);
                self.start_rendezvous(sh, k, now);
            }
            _ => {}
        }
        self.drain(sh, k, now, rng);
    }

    /// An INTRODUCE2: rate-limited and bounded before any decryption, then decrypted and
    /// replay-checked by the service, then queued (rend-spec-v3 §3.3, §4.2).
    fn introduce2(
        &mut self,
        k: usize,
        intro: IntroId,
        msg: &onion_cell::hs::Introduce<'_>,
        now: Instant,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) {
        let s = &mut self.services[k];
        let (rate, burst) = (s.config.intro_rate, s.config.intro_burst);
        if s.queue.len() >= s.config.max_pending_intros {
            s.stats.dropped_queue_full += 1;
            return;
        }
        let bucket = s
            .bucket
            .get_or_insert_with(|| TokenBucket::new(rate, burst, now));
        if !bucket.take(now) {
            s.stats.dropped_rate += 1;
            return;
        }
        let req = match s.publisher.handle_introduce2(wall, intro, msg, rng) {
            Ok(r) => r,
            Err(PublishError::Service(ServiceError::Replay)) => {
                s.stats.replays += 1;
                return;
            }
            Err(_) => {
                s.stats.invalid += 1;
                return;
            }
        };
        let Ok(cc) = rendezvous_cc(s.cc, req.asks_congestion_control()) else {
            s.stats.invalid += 1;
            return;
        };
        let Some(target) = hop_target_from_link_specs(&req.link_specifiers, req.onion_key) else {
            s.stats.invalid += 1;
            return;
        };
        s.stats.introductions += 1;
        s.queue.push_back(PendingIntro {
            req,
            target,
            cc,
            since: now,
            attempts: 0,
        });
    }

    pub(crate) fn dir_answer(
        &mut self,
        sh: &mut Shared,
        circ: HsCircRef,
        answer: Result<Vec<u8>, crate::dir::Failure>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let Some(k) = self.find_circ(circ) else {
            return;
        };
        let wall = sh.clock.wall(now);
        let s = &mut self.services[k];
        let Some(Role::Uploading { upload, .. }) = s.circs.get(&circ) else {
            return;
        };
        let upload = *upload;
        s.circs.remove(&circ);
        sh.push(HsAction::CloseCircuit { circ });
        let ok = answer.is_ok();
        if ok {
            s.stats.uploads_ok += 1;
            if !s.published {
                s.published = true;
                sh.push(HsAction::Published { service: s.id });
            }
        } else {
            s.stats.uploads_failed += 1;
        }
        s.publisher.upload_result(wall, upload, ok, rng);
        self.drain(sh, k, now, rng);
    }

    pub(crate) fn handle_timeout(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let wall = sh.clock.wall(now);
        for k in 0..self.services.len() {
            let s = &mut self.services[k];
            let late: Vec<HsCircRef> =
                s.circs
                    .iter()
                    .filter(|(_, r)| match r {
                        Role::IntroEstablishing { deadline, .. }
                        | Role::Uploading { deadline, .. } => now >= *deadline,
                        Role::RendBuilding(p) => now >= p.since + s.config.rend_timeout,
                        _ => false,
                    })
                    .map(|(c, _)| *c)
                    .collect();
            for circ in late {
                sh.push(HsAction::CloseCircuit { circ });
                self.circuit_closed(sh, circ, now, rng);
            }
            let s = &mut self.services[k];
            let mut late: Vec<IncomingRef> = s
                .undecided
                .iter()
                .filter(|(_, (_, deadline))| now >= *deadline)
                .map(|(r, _)| *r)
                .collect();
            late.sort();
            for stream in late {
                s.undecided.remove(&stream);
                s.stats.streams_timed_out += 1;
                sh.push(HsAction::IncomingTimedOut { stream });
            }
            let half = s.config.rend_timeout / 2;
            let before = s.queue.len();
            s.queue.retain(|p| p.attempts > 0 || now < p.since + half);
            s.stats.stale += (before - s.queue.len()) as u64;
            if s.publisher.poll_timeout().is_some_and(|t| t <= wall) {
                s.publisher.handle_timeout(wall, rng);
            }
            self.start_rendezvous(sh, k, now);
            self.drain(sh, k, now, rng);
        }
    }

    pub(crate) fn poll_timeout(&self, sh: &Shared) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for s in &self.services {
            if let Some(u) = s.publisher.poll_timeout() {
                at(sh.clock.instant_of(u));
            }
            for r in s.circs.values() {
                match r {
                    Role::IntroEstablishing { deadline, .. } | Role::Uploading { deadline, .. } => {
                        at(*deadline)
                    }
                    Role::RendBuilding(p) => at(p.since + s.config.rend_timeout),
                    _ => {}
                }
            }
            for (_, deadline) in s.undecided.values() {
                at(*deadline);
            }
            if let Some(p) = s.queue.front() {
                if p.attempts == 0 {
                    at(p.since + s.config.rend_timeout / 2);
                }
            }
        }
        t
    }
}

/// A hosted service's incoming streams, decided by the application (rend-spec-v3 §4.2: the
/// client's BEGIN on the rendezvous circuit).
impl super::OnionServices {
    /// A client asked for a stream to `port` on the rendezvous circuit `circ`
    /// (`CircEvent::IncomingStream`), which the core names `stream`: offer it to the
    /// application of a service (then emit `Event::IncomingStream`; it stays undecided
    /// until [`super::OnionServices::incoming_decided`] or [`HsAction::IncomingTimedOut`]) or
    /// reject it now with a reason: a port the service does not serve, a circuit that is
    /// no service's rendezvous circuit, or the undecided bounds
    /// ([`HostConfig::max_undecided_per_circuit`], [`HostConfig::max_undecided`]: END
    /// RESOURCELIMIT). A `stream` that is undecided already is refused the same way.
    pub fn incoming_stream(
        &mut self,
        circ: HsCircRef,
        port: u16,
        stream: IncomingRef,
        now: Instant,
    ) -> IncomingDecision {
        let Some(s) = self
            .host
            .services
            .iter_mut()
            .find(|s| matches!(s.circs.get(&circ), Some(Role::RendJoined)))
        else {
            return IncomingDecision::Reject(EndReason::MISC);
        };
        if !s.ports.contains(&port) {
            return IncomingDecision::Reject(REJECT_PORT);
        }
        let on_circ = s.undecided.values().filter(|(c, _)| *c == circ).count();
        if s.undecided.contains_key(&stream)
            || on_circ >= s.config.max_undecided_per_circuit
            || s.undecided.len() >= s.config.max_undecided
        {
            s.stats.streams_refused_full += 1;
            return IncomingDecision::Reject(EndReason::RESOURCELIMIT);
        }
        s.undecided
            .insert(stream, (circ, now + s.config.undecided_timeout));
        s.stats.streams_offered += 1;
        IncomingDecision::Offer { service: s.id }
    }

    /// The application accepted or rejected the incoming stream `stream`, or it ended
    /// before: it no longer counts as undecided. An unknown one is ignored.
    pub fn incoming_decided(&mut self, stream: IncomingRef) {
        for s in &mut self.host.services {
            s.undecided.remove(&stream);
        }
    }

    /// How many incoming streams of `service` wait for the application's decision.
    pub fn undecided_streams(&self, service: ServiceId) -> usize {
        self.host
            .services
            .iter()
            .find(|s| s.id == service)
            .map_or(0, |s| s.undecided.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::from_duration(Duration::from_secs(100));
        let mut b = TokenBucket::new(25, 200, t0);
        assert_eq!((0..1000).take_while(|_| b.take(t0)).count(), 200);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..1000).take_while(|_| b.take(t1)).count(), 25);
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..1000).take_while(|_| b.take(t2)).count(), 200);
        // A clock that goes back mints nothing.
        assert!(!b.take(t0));
    }

    #[test]
    fn congestion_control_only_when_offered_and_asked() {
        let cc = CcConfig {
            sendme_inc: 33,
            ..CcConfig::default()
        };
        assert_eq!(rendezvous_cc(Some(cc), true), Ok(Some(cc)));
        assert_eq!(rendezvous_cc(Some(cc), false), Ok(None));
        assert_eq!(rendezvous_cc(None, false), Ok(None));
        assert_eq!(rendezvous_cc(None, true), Err(()));
    }
}
