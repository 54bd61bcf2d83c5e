//! The service side (rend-spec-v3 §2.2.4.2, §3.1, §3.3, §4.2), as a sans-IO state machine over
//! onion-cell's relay messages: introduction points and their keys, ESTABLISH_INTRO, descriptors for the
//! two upload slots and the HSDirs to upload them to, INTRODUCE2 with a replay cache, and the
//! RENDEZVOUS1 reply with the keys of the virtual hop.
//!
//! One introduction, run in memory: the relays' roles come from [`crate::relay`], the client
//! is [`crate::client`], and what would cross circuits are onion-cell's relay messages.
//!
//! ```
//! use onion_cell::RelayMsg;
//! use onion_crypto::{tor1::ClientLayer, RsaIdentity};
//! use onion_dir::Timestamp;
//! use onion_hs::client::HsClient;
//! use onion_hs::linkspec::RawLinkSpec;
//! use onion_hs::relay::{IntroPoint, RendPoint};
//! use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
//! use onion_hs::service::{HsService, HsServiceConfig, RendezvousRequest, ServiceError};
//! use onion_hs::{ExpandedKeypair, TimePeriodConfig};
//! use rand_core::{CryptoRngCore, SeedableRng};
//!
//! /// A message that arrived on the circuit of introduction point `ip`.
//! fn on_intro_msg(
//!     s: &mut HsService,
//!     ip: usize,
//!     msg: &RelayMsg<'_>,
//!     rng: &mut impl CryptoRngCore,
//! ) -> Result<Option<RendezvousRequest>, ServiceError> {
//!     match msg {
//!         RelayMsg::IntroEstablished(_) => s.handle_intro_established(ip).map(|()| None),
//!         // Checked against the replay cache, decrypted, hs-ntor completed.
//!         RelayMsg::Introduce2(m) => s.handle_introduce2(ip, m, rng).map(Some),
//!         _ => Ok(None), // anything else: the embedder closes the circuit
//!     }
//! }
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1); // the caller's CSPRNG
//! let now = Timestamp::from_unix(1_795_428_000); // the wall clock; a consensus valid-after
//! let (periods, params) = (TimePeriodConfig::default(), HsDirParams::default());
//! let shared_random = SharedRandom { current: Some([1; 32]), previous: Some([0; 32]) };
//! let relay = |i: u8| RsaIdentity([i; 20]);
//! let relays: Vec<HsDirRelay> = (0..20)
//!     .map(|i| HsDirRelay { ed25519_id: [i; 32], rsa_id: relay(i), is_hsdir: true })
//!     .collect();
//! let mut s = HsService::new(ExpandedKeypair::generate(&mut rng), HsServiceConfig::default());
//!
//! // An introduction point on relay 3: build a circuit to it (circuit 1 at the relay) and
//! // send ESTABLISH_INTRO; the relay answers INTRO_ESTABLISHED.
//! let mut intro_relay: IntroPoint<u32> = IntroPoint::default();
//! let ip = s.add_intro_point(vec![RawLinkSpec::rsa_id(relay(3))], [3; 32], &mut rng);
//! let circuit_kh = [9; 20]; // the circuit's last hop's KH (tor-spec §5.2)
//! let est = s.establish_intro(ip, &circuit_kh)?; // RelayMsg::EstablishIntro
//! let at = onion_crypto::Instant::ZERO; // the relay's monotonic clock
//! let reply = intro_relay.handle_establish_intro(1, at, &circuit_kh, &est)?.reply;
//! on_intro_msg(&mut s, ip, &RelayMsg::IntroEstablished(reply), &mut rng)?;
//!
//! // On each new consensus: both descriptors, each POSTed to its HSDirs (UPLOAD_PATH).
//! let mut uploaded = Vec::new(); // (HSDir, period, descriptor)
//! for slot in shared_random.service_upload(&periods, now) {
//!     let text = s.build_descriptor(now, slot.period, &mut rng)?;
//!     for hsdir in s.hsdirs_to_upload(&relays, &slot, &params) {
//!         uploaded.push((hsdir, slot.period, text.clone()));
//!     }
//! }
//!
//! // A client fetches the descriptor, sets up a rendezvous point (relay 7, circuit 2 there)
//! // and introduces itself.
//! let lookup = HsClient::new(s.address())?;
//! let sel = shared_random.client_fetch(&periods, now);
//! let text = lookup
//!     .hsdirs_to_fetch(&relays, &sel, &params)
//!     .into_iter()
//!     .find_map(|d| uploaded.iter().find(|u| u.0 == d && u.1 == sel.period))
//!     .map(|u| u.2.clone())
//!     .expect("on a responsible HSDir");
//! let described = lookup.handle_descriptor(now, &text, sel.period, None)?;
//! let mut rend_relay: RendPoint<u32> = RendPoint::default();
//! let (pending, est_rend) = described.establish_rendezvous(&mut rng);
//! rend_relay.handle_establish_rendezvous(2, &est_rend)?;
//! let ready = pending.handle_rendezvous_established();
//! let rp = vec![RawLinkSpec::rsa_id(relay(7))];
//! let (intro, intro1) = ready.introduce(&mut rng, 0, &[7; 32], rp.clone())?;
//! let routing = intro_relay.handle_introduce1(at, &intro1);
//! intro.handle_introduce_ack(&routing.ack)?;
//! let (circuit, intro2) = routing.to_service.expect("relayed to the service");
//! assert_eq!(circuit, 1);
//!
//! // INTRODUCE2 reaches the service: it builds a circuit to the rendezvous point (circuit 4
//! // there) and sends RENDEZVOUS1; the client gets RENDEZVOUS2.
//! let req = on_intro_msg(&mut s, ip, &RelayMsg::Introduce2(intro2), &mut rng)?;
//! let req = req.expect("a rendezvous request");
//! assert_eq!((req.link_specifiers.clone(), req.onion_key), (rp, [7; 32]));
//! let joined = rend_relay.handle_rendezvous1(4, &req.rendezvous1)?;
//! let client_keys = intro.handle_rendezvous2(&joined.rendezvous2)?;
//!
//! // Both ends now share the virtual hop's keys.
//! let (mut c, mut v) = (client_keys.client_layer()?, req.keys.service_layer()?);
//! let mut cell: onion_crypto::tor1::CellBody = [0; 509];
//! cell[11..16].copy_from_slice(b"hello");
//! c.originate(&mut cell);
//! assert!(v.decrypt(&mut cell));
//! assert_eq!(&cell[11..16], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashSet, VecDeque};

use onion_dir::Timestamp;
use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use crate::desc::{BuildIntroPoint, ClientAuthConfig, DescError, DescriptorBuilder};
use crate::keys::{ExpandedKeypair, Subcredential};
use crate::linkspec::RawLinkSpec;
use crate::msg::{EstablishIntro, Extension, Introduce, MsgError, Rendezvous1, REND_COOKIE_LEN};
use crate::ntor::{self, HsRendKeys, NtorError};
use crate::ops::sha3_256;
use crate::ring::{HashRing, HsDirParams, HsDirRelay, RingSelector};
use crate::time::TimePeriod;

/// The HSDir URL path descriptors are POSTed to (rend-spec-v3 §2.2.6).
pub const UPLOAD_PATH: &str = "/tor/hs/3/publish";

/// Service failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No such introduction point.
    #[error("no introduction point {0}")]
    NoSuchIntroPoint(usize),
    /// A message failed (including a bad INTRODUCE2 MAC).
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// hs-ntor failed.
    #[error(transparent)]
    Ntor(#[from] NtorError),
    /// Building a descriptor failed.
    #[error(transparent)]
    Desc(#[from] DescError),
    /// This INTRODUCE2 (or its rendezvous cookie) was seen before: dropped silently.
    #[error("INTRODUCE2 replay")]
    Replay,
    /// INTRODUCE2 whose AUTH_KEY is not this introduction point's.
    #[error("INTRODUCE2 for another introduction point")]
    WrongIntroPoint,
    /// The onion key type of the rendezvous point is not ntor.
    #[error("rendezvous point onion key type {0} unsupported")]
    UnsupportedOnionKey(u8),
    /// The intro point is not established yet.
    #[error("introduction point {0} is not established")]
    NotEstablished(usize),
}

/// Service configuration.
#[derive(Debug, Clone)]
pub struct HsServiceConfig {
    /// Certificate lifetime in hours (C tor: 54, covering the descriptor's periods).
    pub cert_lifetime_hours: u32,
    /// `descriptor-lifetime` (minutes).
    pub desc_lifetime_minutes: u16,
    /// Client authorization (None: open service).
    pub client_auth: Option<ClientAuthConfig>,
    /// Replay cache bound per introduction point (entries); the oldest entries are
    /// forgotten first. Each introduction point has its own cache for its whole life, as C
    /// tor's (rend-spec-v3 §3.3: a service MUST reject an INTRODUCE2 whose encrypted part it
    /// has seen on that introduction point); the default covers every INTRODUCE2 an
    /// introduction point takes before the publisher rotates it (at most 32,768,
    /// `hs_intro_max_introduce2`), so within its life nothing is forgotten.
    pub replay_cache_size: usize,
    /// Bound on the service-wide cache of rendezvous cookies (the same cookie through two
    /// introduction points is a replay too); the oldest are forgotten first.
    pub cookie_cache_size: usize,
    /// Congestion control (proposal 324) for rendezvous circuits: `Some(sendme_inc)` (the
    /// consensus `cc_sendme_inc`) writes `flow-control 1-2 <sendme_inc>` in the descriptor
    /// ([`flow_control_line`]), as C tor 0.4.9 does when its consensus enables congestion
    /// control, so that clients may ask for it in INTRODUCE2
    /// ([`RendezvousRequest::asks_congestion_control`]). `None` (the default) writes no line.
    pub flow_control_sendme_inc: Option<u8>,
}

/// The descriptor line advertising congestion control (rend-spec-v3 §2.5.2.2, proposal 324
/// §6.1): the FlowCtrl versions this implementation speaks (1: stream SENDMEs, 2: congestion
/// control), as C tor 0.4.9 writes them, and the SENDME increment.
pub fn flow_control_line(sendme_inc: u8) -> String {
    format!("flow-control 1-2 {sendme_inc}")
}

impl Default for HsServiceConfig {
    fn default() -> Self {
        HsServiceConfig {
            cert_lifetime_hours: 54,
            desc_lifetime_minutes: 180,
            client_auth: None,
            replay_cache_size: 32_768,
            cookie_cache_size: 16_384,
            flow_control_sendme_inc: None,
        }
    }
}

/// One of the service's introduction points.
pub struct ServiceIntroPoint {
    /// The intro relay's link specifiers (published in the descriptor).
    pub link_specifiers: Vec<RawLinkSpec>,
    /// The intro relay's ntor onion key.
    pub onion_key: [u8; 32],
    auth: ExpandedKeypair,
    enc: StaticSecret,
    established: bool,
    /// Published in descriptors (false once retired by rotation, §3.1 / C tor's rotation).
    in_descriptor: bool,
    /// Tags of the INTRODUCE2 cells seen through this introduction point.
    replay: ReplayCache,
}

/// A bounded set of 32-byte tags that forgets the oldest first.
struct ReplayCache {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    cap: usize,
}

impl ReplayCache {
    fn new(cap: usize) -> Self {
        ReplayCache {
            seen: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn contains(&self, tag: &[u8; 32]) -> bool {
        self.seen.contains(tag)
    }

    /// Remember `tag`; `false` if it was already there.
    fn insert(&mut self, tag: [u8; 32]) -> bool {
        if !self.seen.insert(tag) {
            return false;
        }
        self.order.push_back(tag);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

impl ServiceIntroPoint {
    /// `KP_hs_ipt_sid`.
    pub fn auth_key(&self) -> &[u8; 32] {
        self.auth.public_bytes()
    }
    /// Whether INTRO_ESTABLISHED arrived (and its circuit has not been reported closed).
    pub fn is_established(&self) -> bool {
        self.established
    }
    /// Whether new descriptors list it (not retired).
    pub fn is_in_descriptor(&self) -> bool {
        self.in_descriptor
    }
}

/// A client's request, decrypted from INTRODUCE2: where to meet it, and what to send.
pub struct RendezvousRequest {
    /// Link specifiers of the rendezvous point (extend to it verbatim).
    pub link_specifiers: Vec<RawLinkSpec>,
    /// Its ntor onion key.
    pub onion_key: [u8; 32],
    /// The RENDEZVOUS1 to send (`RelayMsg::Rendezvous1`) on the circuit to it.
    pub rendezvous1: onion_cell::hs::Rendezvous1<'static>,
    /// Keys of the virtual hop ([`HsRendKeys::service_layer`]).
    pub keys: HsRendKeys,
    /// The extensions the client sent (e.g. congestion control request).
    pub extensions: Vec<Extension>,
}

impl RendezvousRequest {
    /// Whether the client asks for congestion control on the rendezvous circuit
    /// ([`EXT_CC_REQUEST`](crate::client::EXT_CC_REQUEST), proposal 324 §4.2). A client that
    /// asks runs congestion control there: it sends no stream-level SENDME and treats one
    /// from the service as a protocol violation, so a service that does not run congestion
    /// control must refuse the introduction (as C tor's does when its own is off) rather
    /// than answer it.
    pub fn asks_congestion_control(&self) -> bool {
        self.extensions
            .iter()
            .any(|e| e.ty == crate::client::EXT_CC_REQUEST)
    }
}

/// An onion service.
pub struct HsService {
    identity: ExpandedKeypair,
    config: HsServiceConfig,
    /// Introduction points by index; removed ones leave `None` so indices stay valid.
    intro_points: Vec<Option<ServiceIntroPoint>>,
    /// Subcredentials of the periods we published descriptors for (INTRODUCE2 may use any).
    subcreds: VecDeque<(TimePeriod, Subcredential)>,
    /// Rendezvous cookies seen, through any introduction point.
    cookies: ReplayCache,
    revision: u64,
}

impl HsService {
    /// A service with identity key pair `identity`.
    pub fn new(identity: ExpandedKeypair, config: HsServiceConfig) -> Self {
        HsService {
            identity,
            intro_points: Vec::new(),
            subcreds: VecDeque::new(),
            cookies: ReplayCache::new(config.cookie_cache_size),
            config,
            revision: 0,
        }
    }

    /// The revision counter of the last descriptor built (0 before the first).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The onion address.
    pub fn address(&self) -> crate::OnionAddress {
        self.identity.id_key().address()
    }

    /// Choose a relay as introduction point: fresh auth and encryption keys for it.
    pub fn add_intro_point(
        &mut self,
        link_specifiers: Vec<RawLinkSpec>,
        onion_key: [u8; 32],
        rng: &mut impl CryptoRngCore,
    ) -> usize {
        let auth = ExpandedKeypair::generate(rng);
        let mut e = [0u8; 32];
        rng.fill_bytes(&mut e);
        let enc = StaticSecret::from(e);
        self.intro_points.push(Some(ServiceIntroPoint {
            link_specifiers,
            onion_key,
            auth,
            enc,
            established: false,
            in_descriptor: true,
            replay: ReplayCache::new(self.config.replay_cache_size),
        }));
        self.intro_points.len() - 1
    }

    /// The introduction points that were not removed, with their indices.
    pub fn intro_points(&self) -> impl Iterator<Item = (usize, &ServiceIntroPoint)> {
        self.intro_points
            .iter()
            .enumerate()
            .filter_map(|(i, ip)| Some((i, ip.as_ref()?)))
    }

    fn ip(&self, i: usize) -> Result<&ServiceIntroPoint, ServiceError> {
        self.intro_points
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(ServiceError::NoSuchIntroPoint(i))
    }

    fn ip_mut(&mut self, i: usize) -> Result<&mut ServiceIntroPoint, ServiceError> {
        self.intro_points
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or(ServiceError::NoSuchIntroPoint(i))
    }

    /// The circuit of intro point `i` closed: it is no longer established (and leaves new
    /// descriptors) until a new circuit to the same relay sends ESTABLISH_INTRO with the same
    /// keys again, which keeps already-published descriptors valid (rend-spec-v3 §3.1.1).
    pub fn handle_intro_closed(&mut self, i: usize) -> Result<(), ServiceError> {
        self.ip_mut(i)?.established = false;
        Ok(())
    }

    /// Leave intro point `i` out of descriptors built from now on, while it still accepts
    /// INTRODUCE2 from clients holding an older descriptor (intro point rotation).
    pub fn retire_intro_point(&mut self, i: usize) -> Result<(), ServiceError> {
        self.ip_mut(i)?.in_descriptor = false;
        Ok(())
    }

    /// Forget intro point `i` and its keys: INTRODUCE2 for it fails from now on.
    pub fn remove_intro_point(&mut self, i: usize) -> Result<(), ServiceError> {
        self.ip(i)?;
        if let Some(slot) = self.intro_points.get_mut(i) {
            *slot = None;
        }
        Ok(())
    }

    /// ESTABLISH_INTRO (`RelayMsg::EstablishIntro`) for intro point `i` on a circuit with
    /// handshake key `circuit_kh`.
    pub fn establish_intro(
        &self,
        i: usize,
        circuit_kh: &[u8],
    ) -> Result<onion_cell::hs::EstablishIntro<'static>, ServiceError> {
        let ip = self.ip(i)?;
        Ok(EstablishIntro::build(&ip.auth, vec![], circuit_kh)?.1)
    }

    /// INTRO_ESTABLISHED arrived for intro point `i`.
    pub fn handle_intro_established(&mut self, i: usize) -> Result<(), ServiceError> {
        self.ip_mut(i)?.established = true;
        Ok(())
    }

    /// Build the descriptor for `period` with the established introduction points that are
    /// not retired, with a fresh descriptor signing key and a revision counter that only grows,
    /// at wall-clock `now` (certificates expire `cert_lifetime_hours` after it).
    pub fn build_descriptor(
        &mut self,
        now: Timestamp,
        period: TimePeriod,
        rng: &mut impl CryptoRngCore,
    ) -> Result<String, ServiceError> {
        let now_unix = now.unix();
        let blinded = self.identity.blind(period);
        let cred = self.identity.id_key().credential();
        let subcred = blinded.public().subcredential(&cred);
        if !self.subcreds.iter().any(|(p, _)| *p == period) {
            self.subcreds.push_back((period, subcred));
            while self.subcreds.len() > 3 {
                self.subcreds.pop_front();
            }
        }
        // Revision counters must grow across rebuilds (rend-spec-v3 §2.4); seconds since the
        // epoch, or one more than last time if the clock stood still.
        self.revision = now_unix.max(self.revision.saturating_add(1));
        let signing = ExpandedKeypair::generate(rng);
        let ips = self
            .intro_points
            .iter()
            .flatten()
            .filter(|ip| ip.established && ip.in_descriptor)
            .map(|ip| BuildIntroPoint {
                link_specifiers: ip.link_specifiers.clone(),
                onion_key_ntor: ip.onion_key,
                auth_key: *ip.auth.public_bytes(),
                enc_key_ntor: XPublic::from(&ip.enc).to_bytes(),
            })
            .collect();
        let b = DescriptorBuilder {
            blinded: &blinded,
            credential: cred,
            signing_key: &signing,
            cert_expiry_hours: u32::try_from(now_unix / 3600)
                .unwrap_or(u32::MAX)
                .saturating_add(self.config.cert_lifetime_hours),
            revision_counter: self.revision,
            lifetime_minutes: self.config.desc_lifetime_minutes,
            create2_formats: vec![2],
            intro_auth_required: None,
            single_onion_service: false,
            other_lines: self
                .config
                .flow_control_sendme_inc
                .map(flow_control_line)
                .into_iter()
                .collect(),
            intro_points: ips,
            client_auth: self.config.client_auth.clone(),
        };
        Ok(b.build(rng)?)
    }

    /// The HSDirs (positions in `relays`) to upload the descriptor of `sel` to:
    /// `hsdir_spread_store` per replica.
    pub fn hsdirs_to_upload(
        &self,
        relays: &[HsDirRelay],
        sel: &RingSelector,
        params: &HsDirParams,
    ) -> Vec<usize> {
        HashRing::new(relays, &sel.srv, sel.period).responsible(
            &self.identity.id_key().blind(sel.period),
            params.n_replicas,
            params.spread_store,
        )
    }

    /// How many INTRODUCE2 tags introduction point `i` remembers (none if it was removed).
    pub fn replay_cache_len(&self, i: usize) -> usize {
        self.ip(i).map_or(0, |ip| ip.replay.len())
    }

    /// INTRODUCE2 on intro point `i`'s circuit: check it is not a replay, decrypt it with one
    /// of the published periods' subcredentials, and complete hs-ntor.
    pub fn handle_introduce2(
        &mut self,
        i: usize,
        msg: &onion_cell::hs::Introduce<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<RendezvousRequest, ServiceError> {
        let ip = self.ip(i)?;
        if !ip.established {
            return Err(ServiceError::NotEstablished(i));
        }
        let m = Introduce::from_cell(msg)?;
        if !crate::ops::ct_eq(&m.auth_key, ip.auth.public_bytes()) {
            return Err(ServiceError::WrongIntroPoint);
        }
        let mut last = MsgError::BadMac;
        let mut found = None;
        for (_, sc) in self.subcreds.iter().rev() {
            match m.decrypt(&ip.enc, sc) {
                Ok(pt) => {
                    found = Some(pt);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let pt = found.ok_or(ServiceError::Msg(last))?;
        if pt.onion_key_type != crate::msg::ONION_KEY_TYPE_NTOR {
            return Err(ServiceError::UnsupportedOnionKey(pt.onion_key_type));
        }
        let onion_key: [u8; 32] = pt
            .onion_key
            .as_slice()
            .try_into()
            .map_err(|_| ServiceError::UnsupportedOnionKey(pt.onion_key_type))?;
        // Replays: the same encrypted section, or the same rendezvous cookie.
        let tag_body = sha3_256(&[b"intro", &m.client_pk, &m.encrypted]);
        let tag_cookie = sha3_256(&[b"cookie", &pt.rend_cookie]);
        if self.ip(i)?.replay.contains(&tag_body) || self.cookies.contains(&tag_cookie) {
            return Err(ServiceError::Replay);
        }
        self.cookies.insert(tag_cookie);
        if let Some(Some(ip)) = self.intro_points.get_mut(i) {
            ip.replay.insert(tag_body);
        }
        let ip = self.ip(i)?;
        let (info, keys) =
            ntor::service_finish(rng, &ip.enc, ip.auth.public_bytes(), &m.client_pk)?;
        let rend_cookie: [u8; REND_COOKIE_LEN] = pt.rend_cookie;
        Ok(RendezvousRequest {
            link_specifiers: pt.link_specifiers,
            onion_key,
            rendezvous1: Rendezvous1 {
                rend_cookie,
                handshake_info: info,
            }
            .to_cell(),
            keys,
            extensions: pt.extensions,
        })
    }
}
