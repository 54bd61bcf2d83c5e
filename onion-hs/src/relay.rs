//! The relay side of the onion-service protocols: what an introduction point (rend-spec-v3
//! §3.1, §3.2), a rendezvous point (§4.1, §4.2) and an HSDir (§2.2, the v3 descriptor store)
//! keep.
//!
//! Circuits are named by the embedder's own key type `C` (e.g. a channel and circuit id):
//! this module only decides which message goes to which circuit. Time is a parameter: whole
//! seconds of a monotonic clock for the INTRODUCE2 rate limit, the wall clock ([`Timestamp`])
//! for descriptors.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::desc::{DescError, OuterDescriptor, MAX_DESCRIPTOR_LEN};
use crate::msg::{EstablishIntro, Introduce, MsgError, REND_COOKIE_LEN};
use onion_cell::hs as wire;
use onion_cell::hs::IntroduceAckStatus;
use onion_crypto::Instant;
use onion_dir::Timestamp;

/// Bound on registered introduction or rendezvous circuits per relay (memory bound).
pub const MAX_REGISTRATIONS: usize = 65_536;

/// Largest value of the INTRODUCE2 rate and burst (param-spec
/// `HiddenServiceEnableIntroDoS*PerSec`, rend-spec-v3 §3.1.1.1: INT32_MAX).
pub const INTRO_DOS_MAX: u32 = i32::MAX as u32;

/// Errors of the relay-side roles; the circuit that sent the message should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayRoleError {
    /// The body is malformed or unauthentic.
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// The auth key or cookie is already registered on another circuit.
    #[error("already in use by another circuit")]
    InUse,
    /// The circuit already has an introduction or rendezvous role.
    #[error("circuit already has an onion-service role")]
    CircuitBusy,
    /// Too many registrations.
    #[error("too many registrations")]
    Full,
    /// RENDEZVOUS1 names a cookie no circuit registered (or one that was already used).
    #[error("RENDEZVOUS1 for an unknown rendezvous cookie")]
    UnknownCookie,
}

/// The network-wide INTRODUCE2 defence of an introduction point (param-spec
/// `HiddenServiceEnableIntroDoSDefense`, `...RatePerSec`, `...BurstPerSec`): the values
/// every introduction circuit uses unless its ESTABLISH_INTRO carried the DoS extension
/// (rend-spec-v3 §3.1.1.1), which takes precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntroDosParams {
    /// Whether the defence applies (consensus default 0: off).
    pub enabled: bool,
    /// Tokens added per second (default 25).
    pub rate_per_sec: u32,
    /// Bucket size (default 200).
    pub burst_per_sec: u32,
}

impl Default for IntroDosParams {
    fn default() -> Self {
        IntroDosParams {
            enabled: false,
            rate_per_sec: 25,
            burst_per_sec: 200,
        }
    }
}

impl IntroDosParams {
    /// The values from consensus parameters (`None` where the consensus has none), clamped
    /// to their bounds as C tor's `networkstatus_get_param` clamps them: enabled 0..=1,
    /// rate and burst 0..=INT32_MAX.
    pub fn from_consensus(enabled: Option<i64>, rate: Option<i64>, burst: Option<i64>) -> Self {
        let d = IntroDosParams::default();
        let clamp = |v: Option<i64>, def: u32| {
            v.map_or(def, |v| {
                u32::try_from(v.clamp(0, i64::from(INTRO_DOS_MAX))).unwrap_or(def)
            })
        };
        IntroDosParams {
            enabled: enabled.map_or(d.enabled, |v| v.clamp(0, 1) == 1),
            rate_per_sec: clamp(rate, d.rate_per_sec),
            burst_per_sec: clamp(burst, d.burst_per_sec),
        }
    }
}

/// A token bucket counted in whole seconds of the monotonic clock, as C tor's
/// `token_bucket_ctr` (on its coarse monotonic seconds): full at start, `rate` tokens added
/// per second boundary passed, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    rate: u32,
    burst: u32,
    tokens: u32,
    /// The whole second (of the clock's origin) of the last refill.
    last: u64,
}

/// Whole seconds of `now` since the monotonic clock's origin: the bucket's unit.
fn whole_secs(now: Instant) -> u64 {
    (now - Instant::ZERO).as_secs()
}

impl Bucket {
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: whole_secs(now),
        }
    }

    fn adjust(&mut self, rate: u32, burst: u32) {
        self.rate = rate;
        self.burst = burst;
        self.tokens = self.tokens.min(burst);
    }

    fn refill(&mut self, now: Instant) {
        let now = whole_secs(now);
        let elapsed = now.saturating_sub(self.last);
        if elapsed == 0 {
            return;
        }
        let add = u64::from(self.rate).saturating_mul(elapsed);
        let t = u64::from(self.tokens).saturating_add(add);
        self.tokens = u32::try_from(t.min(u64::from(self.burst))).unwrap_or(self.burst);
        self.last = now;
    }

    /// One INTRODUCE1 arrived: refill, take a token if any, and allow while tokens remain
    /// (C tor's `hs_dos_can_send_intro2`; a bucket of `burst` lets `burst - 1` through at
    /// once).
    fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(1);
        self.tokens > 0
    }
}

/// The INTRODUCE2 defence of one introduction circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IntroCirc {
    auth_key: [u8; 32],
    /// Set by the ESTABLISH_INTRO DoS extension: consensus changes do not apply.
    explicit: bool,
    enabled: bool,
    bucket: Bucket,
}

/// What an introduction point does with an INTRODUCE1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroduceRouting<C> {
    /// Forward this INTRODUCE2, the INTRODUCE1 unchanged, to the service's circuit (`None`
    /// if no service).
    pub to_service: Option<(C, wire::Introduce<'static>)>,
    /// Send this INTRODUCE_ACK back to the client (`RelayMsg::IntroduceAck`).
    pub ack: wire::IntroduceAck<'static>,
    /// The service's INTRODUCE2 rate limit refused it.
    pub rate_limited: bool,
}

impl<C> IntroduceRouting<C> {
    /// The status in [`IntroduceRouting::ack`].
    pub fn status(&self) -> IntroduceAckStatus {
        self.ack.status
    }
}

/// The INTRODUCE_ACK an introduction point answers with `status` (rend-spec-v3 §3.2.2): no
/// extensions, as C tor sends it.
pub fn introduce_ack(status: IntroduceAckStatus) -> wire::IntroduceAck<'static> {
    wire::IntroduceAck {
        status,
        extensions: Default::default(),
    }
}

/// What an accepted ESTABLISH_INTRO did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established<C> {
    /// The INTRO_ESTABLISHED to send back (`RelayMsg::IntroEstablished`; no extensions, as
    /// C tor sends it).
    pub reply: wire::IntroEstablished<'static>,
    /// The circuit that held this auth key before (it stays open but gets no more
    /// INTRODUCE2, as in C tor's circuit map).
    pub replaced: Option<C>,
    /// The INTRODUCE2 rate and burst applied to this circuit, `None` when the defence is off.
    pub dos: Option<(u32, u32)>,
    /// The DoS extension was present and set this circuit's defence.
    pub dos_explicit: bool,
}

/// An introduction point: auth keys registered by services (ESTABLISH_INTRO), each with its
/// INTRODUCE2 rate limit.
#[derive(Debug, Clone)]
pub struct IntroPoint<C> {
    by_key: HashMap<[u8; 32], C>,
    circs: HashMap<C, IntroCirc>,
    defaults: IntroDosParams,
    max: usize,
    rate_limited: u64,
}

impl<C: Copy + Eq + Hash> Default for IntroPoint<C> {
    fn default() -> Self {
        Self::new(IntroDosParams::default(), MAX_REGISTRATIONS)
    }
}

impl<C: Copy + Eq + Hash> IntroPoint<C> {
    /// An introduction point applying `defaults` (until [`IntroPoint::set_dos_defaults`])
    /// and holding at most `max` introduction circuits.
    pub fn new(defaults: IntroDosParams, max: usize) -> Self {
        IntroPoint {
            by_key: HashMap::new(),
            circs: HashMap::new(),
            defaults,
            max,
            rate_limited: 0,
        }
    }

    /// New network-wide defaults (a new consensus): applied to every circuit whose
    /// ESTABLISH_INTRO did not set its own, as C tor's `hs_dos_consensus_has_changed`.
    pub fn set_dos_defaults(&mut self, d: IntroDosParams) {
        self.defaults = d;
        for c in self.circs.values_mut().filter(|c| !c.explicit) {
            c.enabled = d.enabled;
            c.bucket.adjust(d.rate_per_sec, d.burst_per_sec);
        }
    }

    /// The network-wide defaults in force.
    pub fn dos_defaults(&self) -> IntroDosParams {
        self.defaults
    }

    /// Introduction circuits registered.
    pub fn len(&self) -> usize {
        self.circs.len()
    }

    /// Whether no introduction circuit is registered.
    pub fn is_empty(&self) -> bool {
        self.circs.is_empty()
    }

    /// Whether `circ` is a registered introduction circuit.
    pub fn is_intro_circuit(&self, circ: C) -> bool {
        self.circs.contains_key(&circ)
    }

    /// INTRODUCE1 cells refused by the rate limit so far.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited
    }

    /// Handle ESTABLISH_INTRO on `circ` whose circuit-handshake `KH` is `circuit_kh`, at
    /// `now` (rend-spec-v3 §3.1.1): the auth key's signature and the MAC over `KH` are
    /// checked; a circuit that already is an introduction circuit is refused; an auth key
    /// registered on another circuit moves to this one (C tor's behaviour; the spec's
    /// "reject" would let a dead circuit hold the key). The DoS extension (§3.1.1.1) sets the
    /// circuit's INTRODUCE2 limit as C tor does: a zero rate or burst, a value above
    /// INT32_MAX or a burst below the rate turn the defence off for this circuit; an
    /// extension that does not parse leaves the network defaults.
    pub fn handle_establish_intro(
        &mut self,
        circ: C,
        now: Instant,
        circuit_kh: &[u8],
        msg: &wire::EstablishIntro<'_>,
    ) -> Result<Established<C>, RelayRoleError> {
        let m = EstablishIntro::from_cell(msg)?;
        m.verify(circuit_kh)?;
        if self.circs.contains_key(&circ) {
            return Err(RelayRoleError::CircuitBusy);
        }
        let replaced = self.by_key.get(&m.auth_key).copied();
        if replaced.is_none() && self.circs.len() >= self.max {
            return Err(RelayRoleError::Full);
        }
        let d = self.defaults;
        let mut ic = IntroCirc {
            auth_key: m.auth_key,
            explicit: false,
            enabled: d.enabled,
            bucket: Bucket::new(d.rate_per_sec, d.burst_per_sec, now),
        };
        match m.dos_params() {
            Some(Ok(p)) => {
                ic.explicit = true;
                let rate = p.rate_per_sec.unwrap_or(0);
                let burst = p.burst_per_sec.unwrap_or(0);
                let valid = rate > 0 && burst > 0 && burst >= rate;
                match (u32::try_from(rate), u32::try_from(burst)) {
                    (Ok(r), Ok(b)) if valid && r <= INTRO_DOS_MAX && b <= INTRO_DOS_MAX => {
                        ic.enabled = true;
                        ic.bucket = Bucket::new(r, b, now);
                    }
                    _ => ic.enabled = false,
                }
            }
            // Values above INT32_MAX: the extension parsed, its values are unusable.
            Some(Err(MsgError::Unsupported {
                field: "PARAM_VALUE",
                ..
            })) => {
                ic.explicit = true;
                ic.enabled = false;
            }
            Some(Err(_)) | None => {}
        }
        if let Some(old) = replaced {
            self.circs.remove(&old);
        }
        self.by_key.insert(m.auth_key, circ);
        self.circs.insert(circ, ic);
        Ok(Established {
            reply: wire::IntroEstablished::default(),
            replaced,
            dos: ic.enabled.then_some((ic.bucket.rate, ic.bucket.burst)),
            dos_explicit: ic.explicit,
        })
    }

    /// Handle INTRODUCE1 from a client at `now` (rend-spec-v3 §3.2): a message that is
    /// not a v3 INTRODUCE1 with an ed25519 auth key gets BAD_FORMAT; an auth key no circuit
    /// registered gets UNKNOWN_ID; the service circuit's INTRODUCE2 bucket is then charged, and an empty bucket also gets
    /// UNKNOWN_ID (C tor's answer, so that clients move on to another introduction point);
    /// otherwise the body goes unchanged to the service as INTRODUCE2 with SUCCESS.
    pub fn handle_introduce1(
        &mut self,
        now: Instant,
        msg: &wire::Introduce<'_>,
    ) -> IntroduceRouting<C> {
        let m = match Introduce::from_cell(msg) {
            Ok(m) => m,
            Err(_) => return routing(None, IntroduceAckStatus::BAD_FORMAT, false),
        };
        let Some(&svc) = self.by_key.get(&m.auth_key) else {
            return routing(None, IntroduceAckStatus::UNKNOWN_SERVICE, false);
        };
        if let Some(ic) = self.circs.get_mut(&svc) {
            if ic.enabled && !ic.bucket.allow(now) {
                self.rate_limited = self.rate_limited.saturating_add(1);
                return routing(None, IntroduceAckStatus::UNKNOWN_SERVICE, true);
            }
        }
        routing(
            Some((svc, msg.clone().into_owned())),
            IntroduceAckStatus::SUCCESS,
            false,
        )
    }

    /// Forget a circuit (it closed).
    pub fn circuit_closed(&mut self, circ: C) {
        if let Some(ic) = self.circs.remove(&circ) {
            if self.by_key.get(&ic.auth_key) == Some(&circ) {
                self.by_key.remove(&ic.auth_key);
            }
        }
    }
}

fn routing<C>(
    to_service: Option<(C, wire::Introduce<'static>)>,
    status: IntroduceAckStatus,
    limited: bool,
) -> IntroduceRouting<C> {
    IntroduceRouting {
        to_service,
        ack: introduce_ack(status),
        rate_limited: limited,
    }
}

/// A rendezvous point: cookies registered by clients (ESTABLISH_RENDEZVOUS).
#[derive(Debug, Clone)]
pub struct RendPoint<C> {
    by_cookie: HashMap<[u8; REND_COOKIE_LEN], C>,
    by_circ: HashMap<C, [u8; REND_COOKIE_LEN]>,
    max: usize,
}

impl<C: Copy + Eq + Hash> Default for RendPoint<C> {
    fn default() -> Self {
        Self::new(MAX_REGISTRATIONS)
    }
}

/// Two circuits joined by a rendezvous point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined<C> {
    /// The client's circuit, which gets the RENDEZVOUS2 body.
    pub client: C,
    /// The RENDEZVOUS2 for the client (`RelayMsg::Rendezvous2`).
    pub rendezvous2: wire::Rendezvous2<'static>,
    /// The service's circuit; from now on relay cells pass between the two unchanged.
    pub service: C,
}

impl<C: Copy + Eq + Hash> RendPoint<C> {
    /// A rendezvous point holding at most `max` pending cookies.
    pub fn new(max: usize) -> Self {
        RendPoint {
            by_cookie: HashMap::new(),
            by_circ: HashMap::new(),
            max,
        }
    }

    /// Cookies waiting for their RENDEZVOUS1.
    pub fn pending(&self) -> usize {
        self.by_cookie.len()
    }

    /// Whether `circ` waits with a cookie.
    pub fn is_waiting(&self, circ: C) -> bool {
        self.by_circ.contains_key(&circ)
    }

    /// Handle ESTABLISH_RENDEZVOUS on `circ` (rend-spec-v3 §4.1): a 20-byte cookie not in
    /// use. Beyond `max` pending cookies it is refused ([`RelayRoleError::Full`]). The reply
    /// RENDEZVOUS_ESTABLISHED has an empty body.
    pub fn handle_establish_rendezvous(
        &mut self,
        circ: C,
        msg: &wire::EstablishRendezvous,
    ) -> Result<(), RelayRoleError> {
        let cookie = msg.cookie;
        if self.by_circ.contains_key(&circ) {
            return Err(RelayRoleError::CircuitBusy);
        }
        if self.by_cookie.contains_key(&cookie) {
            return Err(RelayRoleError::InUse);
        }
        if self.by_cookie.len() >= self.max {
            return Err(RelayRoleError::Full);
        }
        self.by_cookie.insert(cookie, circ);
        self.by_circ.insert(circ, cookie);
        Ok(())
    }

    /// Handle RENDEZVOUS1 from the service on `circ` (rend-spec-v3 §4.2): the cookie's
    /// circuit gets everything after the cookie as RENDEZVOUS2 (as C tor copies it), and the
    /// cookie is used up.
    pub fn handle_rendezvous1(
        &mut self,
        circ: C,
        msg: &wire::Rendezvous1<'_>,
    ) -> Result<Joined<C>, RelayRoleError> {
        let client = self
            .by_cookie
            .remove(&msg.cookie)
            .ok_or(RelayRoleError::UnknownCookie)?;
        self.by_circ.remove(&client);
        Ok(Joined {
            client,
            rendezvous2: wire::Rendezvous2 {
                handshake_info: msg.handshake_info.clone().into_owned().into(),
            },
            service: circ,
        })
    }

    /// Forget a circuit (it closed): its cookie is no longer pending.
    pub fn circuit_closed(&mut self, circ: C) {
        if let Some(cookie) = self.by_circ.remove(&circ) {
            self.by_cookie.remove(&cookie);
        }
    }
}

/// Why an HSDir refused a descriptor (the answer is 400, as C tor's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Larger than the store's descriptor size limit (`HSV3MaxDescriptorSize`).
    #[error("descriptor is {0} bytes, more than allowed")]
    TooLarge(usize),
    /// It does not parse, or its certificate or signature fails.
    #[error("descriptor refused: {0}")]
    Desc(#[from] DescError),
    /// Not newer than the one held for the same blinded key (rend-spec-v3 §2.4
    /// `revision-counter`: only a greater counter replaces).
    #[error("revision counter {got} is not above the {have} held")]
    NotNewer {
        /// The held descriptor's counter.
        have: u64,
        /// The offered one's.
        got: u64,
    },
}

/// What a stored descriptor did to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The descriptor's blinded key.
    pub blinded_key: [u8; 32],
    /// Its revision counter.
    pub revision_counter: u64,
    /// It replaced an older revision.
    pub replaced: bool,
    /// Descriptors evicted (oldest first) to make room.
    pub evicted: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    text: Arc<str>,
    revision: u64,
    stored_at: Timestamp,
    expires: Timestamp,
}

/// The bounds of an [`HsDirStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsDirLimits {
    /// Largest descriptor accepted (param-spec `HSV3MaxDescriptorSize`, default 50 000).
    pub max_descriptor: usize,
    /// Descriptors held at once.
    pub max_entries: usize,
    /// Descriptor bytes held at once.
    pub max_bytes: usize,
}

impl Default for HsDirLimits {
    fn default() -> Self {
        HsDirLimits {
            max_descriptor: MAX_DESCRIPTOR_LEN,
            max_entries: 16_384,
            max_bytes: 64 << 20,
        }
    }
}

/// An HSDir's v3 descriptor store (rend-spec-v3 §2.2: `POST /tor/hs/3/publish`,
/// `GET /tor/hs/3/<z>`), keyed by blinded key.
///
/// A descriptor is stored when its outer layer parses, its signing-key certificate is signed
/// by the blinded key and unexpired, its signature is good (§2.4), and its revision counter
/// is above the one held for that key. It is dropped `descriptor-lifetime` after it was
/// stored, as C tor's `cache_clean_v3_as_dir`. Like C tor, the store takes any valid
/// descriptor, whether or not this relay is one of the key's responsible HSDirs (clients and
/// services choose by the hash ring, §2.2.3). Full (count or bytes): the descriptors stored
/// earliest are evicted first, as C tor's out-of-memory handler cleans its HSDir cache by
/// age.
#[derive(Debug, Clone, Default)]
pub struct HsDirStore {
    entries: HashMap<[u8; 32], Entry>,
    bytes: usize,
    limits: HsDirLimits,
}

impl HsDirStore {
    /// An empty store with `limits`.
    pub fn new(limits: HsDirLimits) -> Self {
        HsDirStore {
            entries: HashMap::new(),
            bytes: 0,
            limits,
        }
    }

    /// Descriptors held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The store's bounds.
    pub fn limits(&self) -> HsDirLimits {
        self.limits
    }

    /// Descriptor bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Store a POSTed descriptor at wall-clock `now` (see the type's documentation).
    pub fn publish(&mut self, body: &[u8], now: Timestamp) -> Result<Stored, StoreError> {
        if body.len() > self.limits.max_descriptor {
            return Err(StoreError::TooLarge(body.len()));
        }
        let text = core::str::from_utf8(body).map_err(|_| DescError::NotText("descriptor"))?;
        let outer = OuterDescriptor::parse(text)?;
        let lifetime = u64::from(outer.lifetime_minutes) * 60;
        let revision = outer.revision_counter;
        let verified = outer.verify(None, now)?;
        let key = *verified.blinded_key().as_bytes();
        let replaced = match self.entries.get(&key) {
            Some(e) if e.revision >= revision => {
                return Err(StoreError::NotNewer {
                    have: e.revision,
                    got: revision,
                })
            }
            Some(_) => true,
            None => false,
        };
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= old.text.len();
        }
        let mut evicted = 0;
        while !self.entries.is_empty()
            && (self.entries.len() >= self.limits.max_entries
                || self.bytes + text.len() > self.limits.max_bytes)
        {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(k, e)| (e.stored_at, **k))
                .map(|(k, _)| *k);
            let Some(k) = oldest else { break };
            if let Some(e) = self.entries.remove(&k) {
                self.bytes -= e.text.len();
                evicted += 1;
            }
        }
        self.bytes += text.len();
        self.entries.insert(
            key,
            Entry {
                text: text.into(),
                revision,
                stored_at: now,
                expires: now.add_secs(lifetime),
            },
        );
        Ok(Stored {
            blinded_key: key,
            revision_counter: revision,
            replaced,
            evicted,
        })
    }

    /// The descriptor for the blinded key `query` (base64, with or without padding, as in
    /// `GET /tor/hs/3/<query>`), if held and not expired at `now`.
    pub fn get(&self, query: &str, now: Timestamp) -> Option<Arc<str>> {
        let key = crate::util::b64_decode_array::<32>(query)?;
        self.entries
            .get(&key)
            .filter(|e| e.expires > now)
            .map(|e| e.text.clone())
    }

    /// Drop descriptors whose lifetime ended by `now` (the wake-up [`HsDirStore::poll_timeout`]
    /// asked for, or any later time).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = e.expires > now;
            if !keep {
                freed += e.text.len();
            }
            keep
        });
        self.bytes -= freed;
    }

    /// When the next descriptor expires: when to call [`HsDirStore::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.entries.values().map(|e| e.expires).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ExpandedKeypair;
    use crate::msg::DosParams;
    use proptest::prelude::*;

    fn keypair(seed: u8) -> ExpandedKeypair {
        use rand_core::SeedableRng as _;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
        ExpandedKeypair::generate(&mut rng)
    }

    fn establish(auth: &ExpandedKeypair, kh: &[u8], dos: Option<DosParams>) -> Vec<u8> {
        let ext = dos.map(|d| vec![d.to_extension()]).unwrap_or_default();
        let mut body = Vec::new();
        let (_, m) = EstablishIntro::build(auth, ext, kh).expect("build");
        m.encode(&mut body).expect("encode");
        body
    }

    /// A valid ESTABLISH_INTRO body as onion-cell decodes it.
    fn ei(body: &[u8]) -> wire::EstablishIntro<'_> {
        wire::EstablishIntro::decode(body).expect("valid")
    }

    fn introduce1(key: &[u8; 32]) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b.push(2);
        b.extend_from_slice(&32u16.to_be_bytes());
        b.extend_from_slice(key);
        b.push(0);
        b.extend_from_slice(&[7u8; 104]);
        b
    }

    /// The registrations agree both ways and stay within the bound.
    fn consistent<C: Copy + Eq + Hash + core::fmt::Debug>(ip: &IntroPoint<C>) {
        assert!(ip.circs.len() <= ip.max);
        assert_eq!(ip.by_key.len(), ip.circs.len());
        for (k, c) in &ip.by_key {
            assert_eq!(ip.circs.get(c).map(|x| x.auth_key), Some(*k));
        }
    }

    #[test]
    fn dos_extension_values_as_c_tor_reads_them() {
        let kh = [5u8; 20];
        type Case = (Option<u64>, Option<u64>, Option<(u32, u32)>);
        let cases: [Case; 7] = [
            (Some(10), Some(20), Some((10, 20))),
            (Some(10), Some(10), Some((10, 10))),
            (Some(10), Some(5), None),
            (Some(0), Some(5), None),
            (Some(5), None, None),
            (None, None, None),
            (
                Some(0x7fff_ffff),
                Some(0x7fff_ffff),
                Some((0x7fff_ffff, 0x7fff_ffff)),
            ),
        ];
        for (i, (rate, burst, want)) in cases.into_iter().enumerate() {
            let mut ip: IntroPoint<u8> = IntroPoint::new(
                IntroDosParams {
                    enabled: true,
                    rate_per_sec: 1,
                    burst_per_sec: 1,
                },
                8,
            );
            let auth = keypair(i as u8);
            let body = establish(
                &auth,
                &kh,
                Some(DosParams {
                    rate_per_sec: rate,
                    burst_per_sec: burst,
                }),
            );
            let e = ip
                .handle_establish_intro(1, Instant::ZERO, &kh, &ei(&body))
                .expect("accepted");
            assert_eq!(e.dos, want, "{rate:?} {burst:?}");
            assert!(e.dos_explicit);
        }
        // Without the extension: the defaults.
        let mut ip: IntroPoint<u8> = IntroPoint::default();
        let e = ip
            .handle_establish_intro(
                1,
                Instant::ZERO,
                &kh,
                &ei(&establish(&keypair(9), &kh, None)),
            )
            .expect("accepted");
        assert_eq!(e.dos, None);
        assert!(!e.dos_explicit);
    }

    /// A signed descriptor of a fresh service (revision `rev` of the same service for the
    /// same seed).
    fn descriptor(seed: u8, now: Timestamp) -> String {
        use crate::service::{HsService, HsServiceConfig};
        use rand_core::SeedableRng as _;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
        let mut svc = HsService::new(
            ExpandedKeypair::generate(&mut rng),
            HsServiceConfig::default(),
        );
        let ip = svc.add_intro_point(
            vec![crate::linkspec::RawLinkSpec::ed25519_id([1; 32])],
            [2; 32],
            &mut rng,
        );
        svc.handle_intro_established(ip).expect("established");
        let period = crate::time::TimePeriodConfig::testing_network(20)
            .expect("config")
            .period_at(now);
        svc.build_descriptor(now, period, &mut rng)
            .expect("descriptor")
    }

    #[test]
    fn a_full_store_evicts_the_oldest_and_expiry_frees_bytes() {
        let now = Timestamp::from_unix(1_780_000_000);
        let mut s = HsDirStore::new(HsDirLimits {
            max_entries: 2,
            ..HsDirLimits::default()
        });
        let (a, b, c) = (descriptor(1, now), descriptor(2, now), descriptor(3, now));
        let ka = s.publish(a.as_bytes(), now).expect("a").blinded_key;
        let kb = s
            .publish(b.as_bytes(), now.add_secs(1))
            .expect("b")
            .blinded_key;
        let st = s.publish(c.as_bytes(), now.add_secs(2)).expect("c");
        assert_eq!(st.evicted, 1);
        let b64 = |k: &[u8; 32]| crate::util::b64_pad(k);
        assert!(
            s.get(&b64(&ka), now.add_secs(2)).is_none(),
            "the oldest went"
        );
        assert_eq!(
            s.get(&b64(&kb), now.add_secs(2)).as_deref(),
            Some(b.as_str())
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s.bytes(), b.len() + c.len());
        // Bytes bound: room for one only.
        let mut small = HsDirStore::new(HsDirLimits {
            max_bytes: a.len().max(b.len()) + 10,
            ..HsDirLimits::default()
        });
        small.publish(a.as_bytes(), now).expect("a");
        assert_eq!(small.publish(b.as_bytes(), now).expect("b").evicted, 1);
        assert_eq!(small.len(), 1);
        // Too large for the size limit: refused.
        let mut tiny = HsDirStore::new(HsDirLimits {
            max_descriptor: 100,
            ..HsDirLimits::default()
        });
        assert!(matches!(
            tiny.publish(a.as_bytes(), now),
            Err(StoreError::TooLarge(_))
        ));
        // Expiry after descriptor-lifetime (180 minutes).
        let expiry = now.add_secs(1 + 180 * 60);
        assert_eq!(s.poll_timeout(), Some(expiry));
        s.handle_timeout(expiry);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), c.len());
    }

    #[test]
    fn consensus_values_are_clamped() {
        let p = IntroDosParams::from_consensus(Some(7), Some(-3), Some(i64::MAX));
        assert!(p.enabled);
        assert_eq!(p.rate_per_sec, 0);
        assert_eq!(p.burst_per_sec, INTRO_DOS_MAX);
        assert_eq!(
            IntroDosParams::from_consensus(None, None, None),
            IntroDosParams::default()
        );
    }

    proptest! {
        /// The bucket lets through what C tor's token_bucket_ctr would: with the tokens
        /// refilled by `rate` per whole second up to `burst`, one taken per INTRODUCE1, and
        /// the INTRODUCE1 allowed while any remain. Seconds are whole seconds of the
        /// monotonic clock: where in its second an INTRODUCE1 falls changes nothing.
        #[test]
        fn bucket_matches_its_model(
            rate in 0u32..50,
            burst in 0u32..50,
            steps in proptest::collection::vec((0u64..3, 1usize..5, 0u64..1_000_000_000), 1..40),
        ) {
            let at = |secs: u64, nanos: u64| Instant::from_nanos(secs * 1_000_000_000 + nanos);
            let mut b = Bucket::new(rate, burst, at(100, 999_999_999));
            let (mut tokens, mut last, mut now) = (u64::from(burst), 100u64, 100u64);
            for (dt, n, sub) in steps {
                now += dt;
                for _ in 0..n {
                    if now > last {
                        tokens = (tokens + u64::from(rate) * (now - last)).min(u64::from(burst));
                        last = now;
                    }
                    tokens = tokens.saturating_sub(1);
                    prop_assert_eq!(b.allow(at(now, sub)), tokens > 0);
                }
            }
        }

        /// Arbitrary bodies and orders never panic, and the registrations stay consistent
        /// and bounded.
        #[test]
        fn intro_point_never_panics(
            ops in proptest::collection::vec(
                (0u8..5, 0u8..4, proptest::collection::vec(any::<u8>(), 0..200)),
                1..40,
            ),
        ) {
            let kh = [3u8; 20];
            let auths = [keypair(1), keypair(2)];
            let mut ip: IntroPoint<u8> = IntroPoint::new(IntroDosParams::default(), 2);
            let mut now = Instant::ZERO;
            for (op, circ, bytes) in ops {
                match op {
                    0 => {
                        if let Ok(m) = wire::EstablishIntro::decode(&bytes) {
                            let _ = ip.handle_establish_intro(circ, now, &kh, &m);
                        }
                    }
                    1 => {
                        let a = &auths[usize::from(circ % 2)];
                        let _ = ip.handle_establish_intro(circ, now, &kh, &ei(&establish(a, &kh, None)));
                    }
                    2 => {
                        if let Ok(m) = wire::Introduce::decode(&bytes) {
                            let r = ip.handle_introduce1(now, &m);
                            prop_assert!(r.to_service.is_none() || r.status() == IntroduceAckStatus::SUCCESS);
                        }
                        let a = &auths[usize::from(circ % 2)];
                        let body = introduce1(a.public_bytes());
                        let r = ip.handle_introduce1(now, &wire::Introduce::decode(&body).expect("valid"));
                        prop_assert_eq!(r.to_service.is_some(), r.status() == IntroduceAckStatus::SUCCESS);
                    }
                    3 => ip.circuit_closed(circ),
                    _ => {
                        now = now + core::time::Duration::from_secs(u64::from(circ));
                        ip.set_dos_defaults(IntroDosParams {
                            enabled: bytes.first().is_some_and(|b| b & 1 == 1),
                            rate_per_sec: u32::from(circ),
                            burst_per_sec: bytes.len() as u32,
                        });
                    }
                }
                consistent(&ip);
            }
        }

        /// Arbitrary bodies never panic; pending cookies stay bounded and a closed circuit's
        /// cookie is gone.
        #[test]
        fn rend_point_never_panics(
            ops in proptest::collection::vec(
                (0u8..3, 0u8..6, proptest::collection::vec(0u8..3, 0..90)),
                1..40,
            ),
        ) {
            let mut rp: RendPoint<u8> = RendPoint::new(3);
            for (op, circ, bytes) in ops {
                match op {
                    0 => {
                        if let Ok(m) = wire::EstablishRendezvous::decode(&bytes) {
                            let _ = rp.handle_establish_rendezvous(circ, &m);
                        }
                    }
                    1 => {
                        let joined = wire::Rendezvous1::decode(&bytes)
                            .ok()
                            .and_then(|m| rp.handle_rendezvous1(circ, &m).ok());
                        if let Some(j) = joined {
                            prop_assert_eq!(&j.rendezvous2.handshake_info[..], &bytes[20..]);
                            prop_assert!(!rp.is_waiting(j.client));
                        }
                    }
                    _ => {
                        rp.circuit_closed(circ);
                        prop_assert!(!rp.is_waiting(circ));
                    }
                }
                prop_assert!(rp.pending() <= 3);
                prop_assert_eq!(rp.by_circ.len(), rp.by_cookie.len());
            }
        }

        /// Arbitrary uploads and queries never panic and nothing is stored.
        #[test]
        fn hsdir_store_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            query in "[A-Za-z0-9+/=]{0,60}",
        ) {
            let mut s = HsDirStore::default();
            prop_assert!(s.publish(&body, Timestamp::from_unix(1_780_000_000)).is_err());
            prop_assert!(s.get(&query, Timestamp::from_unix(1_780_000_000)).is_none());
            prop_assert!(s.is_empty());
            prop_assert_eq!(s.bytes(), 0);
        }
    }
}
