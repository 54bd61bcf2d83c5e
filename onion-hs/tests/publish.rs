//! The publishing state machine under virtual time: a harness plays the embedder (circuits,
//! INTRO_ESTABLISHED, HSDir uploads) with configurable failures, and every uploaded descriptor
//! is decoded and checked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use onion_dir::{RsaIdentity, Timestamp};
use onion_hs::client::{HsClient, EXT_CC_REQUEST};
use onion_hs::desc;
use onion_hs::keys::{ExpandedKeypair, HsIdKey};
use onion_hs::linkspec::{RawLinkSpec, LS_RSA_ID};
use onion_hs::msg::{Extension, Introduce, IntroducePlaintext, ONION_KEY_TYPE_NTOR};
use onion_hs::publish::{
    ConsensusView, IntroCandidate, IntroId, IntroState, PublishAction, PublishError, Publisher,
    PublisherConfig, UploadId,
};
use onion_hs::relay::IntroPoint;
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::service::{HsService, HsServiceConfig, ServiceError};
use onion_hs::time::{TimePeriod, TimePeriodConfig};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// 2026-11-23 10:00 UTC: after the day's SRV (00:00), before the period starts (12:00).
const T0: u64 = 1_795_428_000 - 1_795_428_000 % 86_400 + 10 * 3600;
const HOUR: u64 = 3600;

/// An INTRODUCE2 as the service's circuit hands it over, decoded by onion-cell.
type Introduce2 = onion_cell::hs::Introduce<'static>;

/// An INTRODUCE1 the client built, as onion-cell decodes it on arrival.
fn cell(m: &onion_cell::hs::Introduce<'_>) -> onion_cell::hs::Introduce<'static> {
    let mut body = Vec::new();
    m.encode(&mut body).unwrap();
    onion_cell::hs::Introduce::decode(&body)
        .unwrap()
        .into_owned()
}

/// A well-formed INTRODUCE2 that no introduction point issued (its auth key is `[k; 32]`).
fn junk(k: u8) -> Introduce2 {
    onion_cell::hs::Introduce {
        legacy_key_id: [0; 20],
        auth_key_type: onion_cell::hs::AuthKeyType::ED25519_SHA3_256,
        auth_key: vec![k; 32].into(),
        extensions: Default::default(),
        client_pk: [k; 32],
        encrypted_data: vec![k; 10].into(),
        mac: [k; 32],
    }
}

#[derive(Debug, Clone)]
struct Uploaded {
    at: u64,
    hsdir: RsaIdentity,
    period: TimePeriod,
    revision: u64,
    intro_keys: Vec<[u8; 32]>,
    ok: bool,
    text: Arc<str>,
}

struct Harness {
    p: Publisher,
    id: HsIdKey,
    rng: ChaCha20Rng,
    now: u64,
    view: ConsensusView,
    /// Circuits to these relays fail.
    bad_relays: HashSet<RsaIdentity>,
    /// Make the first relay ever picked bad.
    first_pick_bad: bool,
    /// Uploads to these HSDirs fail; the count is how many more times (u32::MAX: always).
    bad_hsdirs: BTreeMap<RsaIdentity, u32>,
    /// Keep uploads pending instead of answering them.
    hold_uploads: bool,
    held: Vec<(UploadId, RsaIdentity)>,
    uploads: Vec<Uploaded>,
    launches: Vec<(u64, IntroId, RsaIdentity)>,
    closed: Vec<(u64, IntroId)>,
    /// Intro points whose circuits are open (for the embedder).
    open: HashSet<IntroId>,
    /// The intro relays' side: ESTABLISH_INTRO registrations, by relay (circuit = intro id).
    roles: BTreeMap<RsaIdentity, IntroPoint<u64>>,
    relay_of: BTreeMap<IntroId, RsaIdentity>,
}

fn relay(ed: u8, rsa: u8, hsdir: bool) -> HsDirRelay {
    HsDirRelay {
        ed25519_id: [ed; 32],
        rsa_id: RsaIdentity([rsa; 20]),
        is_hsdir: hsdir,
    }
}

fn view(valid_after: u64, srv: SharedRandom, n_hsdirs: u8, n_intro: u8) -> ConsensusView {
    ConsensusView {
        valid_after: Timestamp::from_unix(valid_after),
        periods: TimePeriodConfig::default(),
        shared_random: srv,
        params: HsDirParams::default(),
        hsdirs: (0..n_hsdirs).map(|i| relay(i, i, true)).collect(),
        intro_candidates: (0..n_intro)
            .map(|i| IntroCandidate {
                rsa_id: RsaIdentity([100 + i; 20]),
                link_specifiers: vec![RawLinkSpec::rsa_id(RsaIdentity([100 + i; 20]))],
                onion_key: [i; 32],
            })
            .collect(),
    }
}

fn srv(day: u8) -> SharedRandom {
    SharedRandom {
        current: Some([day; 32]),
        previous: Some([day.wrapping_sub(1); 32]),
    }
}

impl Harness {
    fn new(seed: u64, config: PublisherConfig) -> Harness {
        Harness::with_service(seed, config, HsServiceConfig::default())
    }

    fn with_service(seed: u64, config: PublisherConfig, hs_config: HsServiceConfig) -> Harness {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = ExpandedKeypair::generate(&mut rng);
        let id = identity.id_key();
        let hs = HsService::new(identity, hs_config);
        Harness {
            p: Publisher::new(hs, config),
            id,
            rng,
            now: T0,
            view: view(T0, srv(1), 30, 10),
            bad_relays: HashSet::new(),
            first_pick_bad: false,
            bad_hsdirs: BTreeMap::new(),
            hold_uploads: false,
            held: Vec::new(),
            uploads: Vec::new(),
            launches: Vec::new(),
            closed: Vec::new(),
            open: HashSet::new(),
            roles: BTreeMap::new(),
            relay_of: BTreeMap::new(),
        }
    }

    fn consensus(&mut self, v: ConsensusView) {
        self.view = v.clone();
        self.p
            .set_consensus(Timestamp::from_unix(self.now), v, &mut self.rng);
        self.pump();
        self.no_spin();
    }

    /// Do everything the publisher asked for, answering at once.
    fn pump(&mut self) {
        while let Some(a) = self.p.poll_action() {
            match a {
                PublishAction::BuildIntroCircuit { intro, relay } => {
                    if self.first_pick_bad && self.launches.is_empty() {
                        self.bad_relays.insert(relay);
                    }
                    self.launches.push((self.now, intro, relay));
                    if self.bad_relays.contains(&relay) {
                        self.p
                            .intro_circuit_closed(
                                Timestamp::from_unix(self.now),
                                intro,
                                &mut self.rng,
                            )
                            .unwrap();
                        continue;
                    }
                    let mut kh = [0u8; 20];
                    self.rng.fill_bytes(&mut kh);
                    let est = self.p.intro_circuit_built(intro, &kh).unwrap();
                    // A rebuilt circuit replaces the old one (its id is the intro id here).
                    let role = self.roles.entry(relay).or_default();
                    role.circuit_closed(intro.0);
                    role.handle_establish_intro(intro.0, onion_crypto::Instant::ZERO, &kh, &est)
                        .expect("the intro relay accepts ESTABLISH_INTRO");
                    self.relay_of.insert(intro, relay);
                    self.open.insert(intro);
                    self.p
                        .intro_established(Timestamp::from_unix(self.now), intro, &mut self.rng)
                        .unwrap();
                }
                PublishAction::CloseIntroCircuit { intro } => {
                    assert!(self.open.remove(&intro), "closing a circuit not open");
                    if let Some(role) = self
                        .relay_of
                        .get(&intro)
                        .and_then(|r| self.roles.get_mut(r))
                    {
                        role.circuit_closed(intro.0);
                    }
                    self.closed.push((self.now, intro));
                }
                PublishAction::Upload {
                    upload,
                    hsdir,
                    period,
                    revision,
                    descriptor,
                } => {
                    let ok = match self.bad_hsdirs.get_mut(&hsdir) {
                        Some(n) if *n > 0 => {
                            if *n != u32::MAX {
                                *n -= 1;
                            }
                            false
                        }
                        _ => true,
                    };
                    self.record(hsdir, period, revision, &descriptor, ok);
                    if self.hold_uploads {
                        self.held.push((upload, hsdir));
                    } else {
                        self.p.upload_result(
                            Timestamp::from_unix(self.now),
                            upload,
                            ok,
                            &mut self.rng,
                        );
                    }
                }
            }
        }
    }

    fn record(
        &mut self,
        hsdir: RsaIdentity,
        period: TimePeriod,
        revision: u64,
        text: &Arc<str>,
        ok: bool,
    ) {
        let d = desc::decode(
            text,
            &self.id,
            Some(period),
            None,
            Timestamp::from_unix(self.now),
        )
        .expect("uploaded descriptor decodes");
        assert_eq!(d.revision_counter, revision);
        let n = self.p.config().intro_points;
        assert!(
            d.second_layer.intro_points.len() <= n && !d.second_layer.intro_points.is_empty(),
            "descriptor with {} intro points",
            d.second_layer.intro_points.len()
        );
        let intro_keys = d
            .second_layer
            .intro_points
            .iter()
            .map(|ip| ip.auth_key_cert.certified_key)
            .collect();
        self.uploads.push(Uploaded {
            at: self.now,
            hsdir,
            period,
            revision,
            intro_keys,
            ok,
            text: text.clone(),
        });
    }

    /// Answer the held uploads (success).
    fn release(&mut self) {
        for (id, _) in std::mem::take(&mut self.held) {
            self.p
                .upload_result(Timestamp::from_unix(self.now), id, true, &mut self.rng);
        }
        self.pump();
    }

    /// Run virtual time forward to `until`, firing every timeout on the way.
    fn advance_to(&mut self, until: u64) {
        for _ in 0..100_000 {
            match self.p.poll_timeout().map(Timestamp::unix) {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.p
                        .handle_timeout(Timestamp::from_unix(self.now), &mut self.rng);
                    self.pump();
                    self.no_spin();
                }
                _ => break,
            }
        }
        self.now = until;
        self.p
            .handle_timeout(Timestamp::from_unix(self.now), &mut self.rng);
        self.pump();
        self.no_spin();
    }

    /// Once everything due was done, the next timeout is in the future (no busy loop).
    fn no_spin(&self) {
        if let Some(t) = self.p.poll_timeout().map(Timestamp::unix) {
            assert!(t > self.now, "timeout {t} not after now {}", self.now);
        }
    }

    fn established(&self) -> usize {
        self.p
            .intro_points()
            .iter()
            .filter(|i| !i.retired && i.state == IntroState::Established)
            .count()
    }
}

fn count_uploads(u: &[Uploaded], period: TimePeriod) -> usize {
    u.iter().filter(|x| x.period == period).count()
}

#[test]
fn first_consensus_publishes_both_slots_to_their_hsdirs() {
    let mut h = Harness::new(1, PublisherConfig::default());
    assert_eq!(
        h.p.poll_timeout(),
        None,
        "nothing to do without a consensus"
    );
    let v = h.view.clone();
    h.consensus(v);
    assert_eq!(h.launches.len(), 3);
    assert_eq!(h.established(), 3);
    let cfg = TimePeriodConfig::default();
    let cur = cfg.period_at(Timestamp::from_unix(T0));
    let slots: Vec<TimePeriod> = h.p.slots().iter().map(|s| s.0).collect();
    // Between the SRV and the new period (§2.2.4.2): current and next period.
    assert_eq!(slots, vec![cur, cur.next()]);
    // 2 replicas × spread_store 4 per slot, each HSDir once per slot.
    for p in [cur, cur.next()] {
        let to: HashSet<RsaIdentity> = h
            .uploads
            .iter()
            .filter(|u| u.period == p)
            .map(|u| u.hsdir)
            .collect();
        assert_eq!(count_uploads(&h.uploads, p), 8);
        assert_eq!(to.len(), 8);
    }
    assert!(h.uploads.iter().all(|u| u.intro_keys.len() == 3 && u.ok));
    // Nothing more until the periodic re-upload, 60–120 min later.
    let t = h.p.poll_timeout().unwrap().unix();
    assert!((T0 + HOUR..=T0 + 2 * HOUR).contains(&t), "{}", t - T0);
    // Intro point rotation parameters were drawn from param-spec's default ranges.
    for ip in h.p.intro_points() {
        assert!((T0 + 18 * HOUR..=T0 + 24 * HOUR).contains(&ip.expires_at.unix()));
        assert!((16_384..=32_768).contains(&ip.max_introduce2));
    }
}

#[test]
fn new_srv_brings_an_upload_for_the_new_period_only() {
    let mut h = Harness::new(2, PublisherConfig::default());
    let v = h.view.clone();
    h.consensus(v);
    let cur = TimePeriodConfig::default().period_at(Timestamp::from_unix(T0));
    // 12:00: the period starts; the slots are the same (period, SRV) pairs: no upload.
    h.advance_to(T0 + 2 * HOUR);
    let n0 = h.uploads.len();
    h.consensus(view(T0 + 2 * HOUR, srv(1), 30, 10));
    assert_eq!(h.uploads.len(), n0, "nothing changed at the period start");
    let slots: Vec<TimePeriod> = h.p.slots().iter().map(|s| s.0).collect();
    assert_eq!(slots, vec![cur, cur.next()]);
    // Next day 00:00: new SRV; the slots shift to (next, next+1); only next+1 is new.
    h.advance_to(T0 + 14 * HOUR);
    let before = h.uploads.len();
    let rev_next = h.p.slots()[1].1;
    h.consensus(view(T0 + 14 * HOUR, srv(2), 30, 10));
    let slots = h.p.slots();
    assert_eq!(slots[0].0, cur.next());
    assert_eq!(slots[0].1, rev_next, "the kept slot is not rebuilt");
    assert_eq!(slots[1].0, cur.next().next());
    let new: Vec<&Uploaded> = h.uploads[before..].iter().collect();
    assert_eq!(new.len(), 8);
    assert!(new.iter().all(|u| u.period == cur.next().next()));
    // The new period's revision is larger than any before.
    let max_old = h.uploads[..before]
        .iter()
        .map(|u| u.revision)
        .max()
        .unwrap();
    assert!(new.iter().all(|u| u.revision > max_old));
}

#[test]
fn changed_hsdirs_trigger_a_reupload_with_a_larger_revision() {
    let mut h = Harness::new(3, PublisherConfig::default());
    let v = h.view.clone();
    h.consensus(v);
    let n0 = h.uploads.len();
    let rev0 = h.uploads.iter().map(|u| u.revision).max().unwrap();
    h.now += 600;
    // Same consensus again: nothing.
    h.consensus(view(T0, srv(1), 30, 10));
    assert_eq!(h.uploads.len(), n0);
    // Twenty more HSDirs: the rings change, both slots are rebuilt and uploaded.
    h.consensus(view(T0 + HOUR, srv(1), 50, 10));
    let new = &h.uploads[n0..];
    assert_eq!(new.len(), 16);
    assert!(new.iter().all(|u| u.revision > rev0));
}

#[test]
fn failed_intro_relay_is_retried_with_backoff_then_replaced() {
    let mut h = Harness::new(4, PublisherConfig::default());
    h.first_pick_bad = true;
    let v = h.view.clone();
    h.consensus(v);
    let bad = h.launches[0].2;
    // Two intro points up: after the publish grace the descriptors go out with two.
    assert_eq!(h.established(), 2);
    h.advance_to(T0 + 120);
    let to_bad: Vec<u64> = h
        .launches
        .iter()
        .filter(|l| l.2 == bad)
        .map(|l| l.0 - T0)
        .collect();
    // Three attempts (5 s, then 10 s of backoff), then another relay.
    assert_eq!(to_bad, vec![0, 5, 15]);
    assert_eq!(h.established(), 3);
    assert!(h.p.intro_points().iter().all(|i| i.relay != bad));
    // The last descriptors have three intro points (the bad relay never established, so it
    // was never listed); 3 launches to it, 3 to good relays.
    let last = h.uploads.last().unwrap();
    assert_eq!(last.intro_keys.len(), 3);
    assert_eq!(h.launches.len(), 3 + 3);
}

#[test]
fn publish_waits_for_intro_points_then_for_the_grace() {
    let mut h = Harness::new(5, PublisherConfig::default());
    h.first_pick_bad = true;
    let v = h.view.clone();
    h.consensus(v);
    // The failing point is still being retried: no upload yet.
    assert!(h.uploads.is_empty());
    h.advance_to(T0 + 14);
    assert!(h.uploads.is_empty());
    // At 15 s the third relay is replaced and all three are up: publish with three.
    h.advance_to(T0 + 16);
    assert!(!h.uploads.is_empty());
    assert!(h.uploads.iter().all(|u| u.intro_keys.len() == 3));
}

#[test]
fn without_a_third_intro_point_publish_after_the_grace_with_two() {
    let mut h = Harness::new(11, PublisherConfig::default());
    h.first_pick_bad = true;
    // Only three candidates: the bad one is picked again after its replacement fails.
    h.view = view(T0, srv(1), 30, 3);
    let v = h.view.clone();
    h.consensus(v);
    h.advance_to(T0 + 59);
    assert!(h.uploads.is_empty());
    h.advance_to(T0 + 61);
    assert_eq!(h.uploads.len(), 16);
    assert!(h.uploads.iter().all(|u| u.intro_keys.len() == 2));
    // Launches stay within the rate limit: 10 per 300 s.
    h.advance_to(T0 + 299);
    assert!(h.launches.len() <= 10, "{}", h.launches.len());
    h.advance_to(T0 + 3600);
    assert!(h.launches.len() <= 10 * 12 + 3);
}

#[test]
fn closed_intro_circuit_is_rebuilt_to_the_same_relay_without_reupload() {
    let mut h = Harness::new(6, PublisherConfig::default());
    let v = h.view.clone();
    h.consensus(v);
    let n0 = h.uploads.len();
    let ip = h.p.intro_points()[1].clone();
    h.now += 600;
    h.open.remove(&ip.id);
    h.p.intro_circuit_closed(Timestamp::from_unix(h.now), ip.id, &mut h.rng)
        .unwrap();
    h.pump();
    assert!(matches!(
        h.p.intro_points()[1].state,
        IntroState::Waiting { retry_at } if retry_at == Timestamp::from_unix(h.now + 5)
    ));
    h.advance_to(h.now + 10);
    let again = h.launches.last().unwrap();
    assert_eq!((again.1, again.2), (ip.id, ip.relay));
    assert_eq!(h.established(), 3);
    // Back within the publish grace with the same keys: the descriptors stand.
    assert_eq!(h.uploads.len(), n0);
}

#[test]
fn failed_uploads_are_retried_with_backoff_and_given_up() {
    let mut h = Harness::new(7, PublisherConfig::default());
    // Find the responsible HSDirs first, with a throwaway run of the same seed.
    let mut probe = Harness::new(7, PublisherConfig::default());
    let v = probe.view.clone();
    probe.consensus(v);
    let flaky = probe.uploads[0].hsdir;
    let dead = probe.uploads[1].hsdir;
    h.bad_hsdirs.insert(flaky, 2);
    h.bad_hsdirs.insert(dead, u32::MAX);
    let v = h.view.clone();
    h.consensus(v);
    h.advance_to(T0 + 50 * 60);
    let times = |hsdir: RsaIdentity| -> Vec<(u64, bool)> {
        h.uploads
            .iter()
            .filter(|u| u.hsdir == hsdir && u.period == probe.uploads[0].period)
            .map(|u| (u.at - T0, u.ok))
            .collect()
    };
    assert_eq!(times(flaky), vec![(0, false), (30, false), (90, true)]);
    // 5 attempts: 0, +30, +60, +120, +240 s; then no more until the next rebuild.
    let d: Vec<u64> = times(dead).iter().map(|x| x.0).collect();
    assert_eq!(d, vec![0, 30, 90, 210, 450]);
    assert!(times(dead).iter().all(|x| !x.1));
}

#[test]
fn rotation_by_introduce2_count_keeps_the_old_point_until_uploaded() {
    let config = PublisherConfig {
        intro_max_introduce2: (10, 20),
        ..PublisherConfig::default()
    };
    let mut h = Harness::new(8, config);
    let v = h.view.clone();
    h.consensus(v);
    let old = h.p.intro_points()[0].clone();
    assert!((10..=20).contains(&old.max_introduce2));
    h.now += 60;
    h.hold_uploads = true;
    for k in 0..old.max_introduce2 {
        // Junk bodies still count: rotation bounds what one intro point sees.
        assert!(h
            .p
            .handle_introduce2(
                Timestamp::from_unix(h.now),
                old.id,
                &junk(k as u8),
                &mut h.rng
            )
            .is_err());
        h.pump();
    }
    let ips = h.p.intro_points();
    let o = ips.iter().find(|i| i.id == old.id).unwrap();
    assert!(o.retired);
    assert_eq!(h.established(), 3, "a replacement is up");
    // New descriptors without the old point are out, but not answered: still open.
    let before_release = h.uploads.len();
    assert!(before_release > 16);
    let old_key = h.uploads[0].intro_keys.clone();
    let newest = h.uploads.last().unwrap().intro_keys.clone();
    assert_eq!(newest.len(), 3);
    assert_ne!(old_key, newest);
    assert!(h.closed.is_empty());
    assert!(h.open.contains(&old.id));
    // Once every HSDir answered, the old circuit is closed.
    h.hold_uploads = false;
    h.release();
    assert_eq!(h.closed, vec![(h.now, old.id)]);
    assert!(h.p.intro_points().iter().all(|i| i.id != old.id));
    assert!(h
        .p
        .handle_introduce2(Timestamp::from_unix(h.now), old.id, &junk(0), &mut h.rng)
        .is_err());
}

#[test]
fn rotation_by_lifetime_replaces_every_point_within_a_day() {
    let mut h = Harness::new(9, PublisherConfig::default());
    let v = h.view.clone();
    h.consensus(v);
    let first: Vec<IntroId> = h.p.intro_points().iter().map(|i| i.id).collect();
    let earliest =
        h.p.intro_points()
            .iter()
            .map(|i| i.expires_at.unix())
            .min()
            .unwrap();
    h.advance_to(earliest - 1);
    assert!(h.closed.is_empty());
    h.advance_to(T0 + 24 * HOUR + 60);
    let now: Vec<IntroId> = h.p.intro_points().iter().map(|i| i.id).collect();
    assert_eq!(now.len(), 3);
    assert!(now.iter().all(|i| !first.contains(i)));
    let mut closed: Vec<IntroId> = h.closed.iter().map(|c| c.1).collect();
    closed.sort();
    assert_eq!(closed, first);
    // Periodic re-uploads happened all along, 60–120 min apart, revisions growing.
    let p0 = h.uploads[0].period;
    let mut revs: Vec<(u64, u64)> = h
        .uploads
        .iter()
        .filter(|u| u.period == p0 && u.hsdir == h.uploads[0].hsdir)
        .map(|u| (u.at, u.revision))
        .collect();
    revs.dedup();
    assert!(revs.len() >= 12, "{}", revs.len());
    assert!(revs.windows(2).all(|w| w[1].1 > w[0].1));
    assert!(revs.windows(2).all(|w| w[1].0 - w[0].0 <= 2 * HOUR));
}

#[test]
fn intro_relay_leaving_the_consensus_is_rotated_out() {
    let mut h = Harness::new(10, PublisherConfig::default());
    let v = h.view.clone();
    h.consensus(v);
    let gone = h.p.intro_points()[2].clone();
    let mut v = view(T0 + HOUR, srv(1), 30, 10);
    v.intro_candidates.retain(|c| c.rsa_id != gone.relay);
    h.now = T0 + HOUR;
    h.consensus(v);
    assert!(h.p.intro_points().iter().all(|i| i.id != gone.id));
    assert_eq!(h.closed.last().map(|c| c.1), Some(gone.id));
    assert_eq!(h.established(), 3);
}

#[test]
fn random_failures_never_break_the_invariants() {
    for seed in 0..6u64 {
        let config = PublisherConfig {
            intro_max_introduce2: (5, 30),
            intro_lifetime: (
                std::time::Duration::from_secs(2 * HOUR),
                std::time::Duration::from_secs(5 * HOUR),
            ),
            ..PublisherConfig::default()
        };
        let mut h = Harness::new(100 + seed, config);
        let mut ev = ChaCha20Rng::seed_from_u64(seed);
        let v = h.view.clone();
        h.consensus(v);
        let mut last_rev: BTreeMap<u64, u64> = BTreeMap::new();
        for step in 0..48u64 {
            // A consensus an hour, a new SRV a day, HSDirs and intro relays coming and going.
            let t = T0 + step * HOUR;
            h.advance_to(t);
            let day = u8::try_from((t - (T0 - 10 * HOUR)) / 86_400).unwrap() + 1;
            let n_hsdir = 20 + (ev.next_u32() % 10) as u8;
            let n_intro = 4 + (ev.next_u32() % 6) as u8;
            h.bad_relays.clear();
            if ev.next_u32() % 3 == 0 {
                h.bad_relays
                    .insert(RsaIdentity([100 + (ev.next_u32() % 10) as u8; 20]));
            }
            h.bad_hsdirs.clear();
            h.bad_hsdirs
                .insert(RsaIdentity([(ev.next_u32() % 30) as u8; 20]), 2);
            h.consensus(view(t, srv(day), n_hsdir, n_intro));
            for ip in h.p.intro_points() {
                if ip.state == IntroState::Established && ev.next_u32() % 4 == 0 {
                    for _ in 0..(ev.next_u32() % 10) {
                        let _ = h.p.handle_introduce2(
                            Timestamp::from_unix(h.now),
                            ip.id,
                            &junk(3),
                            &mut h.rng,
                        );
                    }
                }
                if ip.state == IntroState::Established && ev.next_u32() % 8 == 0 {
                    h.open.remove(&ip.id);
                    h.p.intro_circuit_closed(Timestamp::from_unix(h.now), ip.id, &mut h.rng)
                        .unwrap();
                }
            }
            h.pump();
            let active = h.p.intro_points().iter().filter(|i| !i.retired).count();
            assert!(active <= 3, "seed {seed}: {active} active intro points");
        }
        // Revisions per period only grow; every descriptor had 1..=3 intro points (checked
        // on upload).
        for u in &h.uploads {
            let r = last_rev.entry(u.period.num()).or_insert(0);
            assert!(u.revision >= *r, "seed {seed}");
            *r = u.revision;
        }
        assert!(h.established() >= 1, "seed {seed}");
        assert!(h.uploads.len() > 100, "seed {seed}");
    }
}

#[test]
fn with_every_intro_relay_failing_nothing_is_published_and_nothing_spins() {
    let mut h = Harness::new(12, PublisherConfig::default());
    let v = h.view.clone();
    h.consensus(v);
    let n0 = h.uploads.len();
    // Every relay fails from now on; the open circuits close.
    h.bad_relays = (0..10u8).map(|i| RsaIdentity([100 + i; 20])).collect();
    h.now += 60;
    for ip in h.p.intro_points() {
        h.open.remove(&ip.id);
        h.p.intro_circuit_closed(Timestamp::from_unix(h.now), ip.id, &mut h.rng)
            .unwrap();
        h.pump();
    }
    // Past the periodic re-upload time: nothing to publish with, and no busy timer (the
    // harness checks every timeout lies in the future).
    h.advance_to(T0 + 3 * HOUR);
    assert_eq!(h.uploads.len(), n0);
    assert_eq!(h.established(), 0);
    // Launches stayed within 10 per 300 s.
    let launched = h.launches.len() - 3;
    assert!(launched <= 10 * (3 * 12) + 10, "{launched}");
    // Relays recover: intro points come back and the descriptors go out again.
    h.bad_relays.clear();
    h.advance_to(T0 + 3 * HOUR + 300);
    assert_eq!(h.established(), 3);
    assert!(h.uploads.len() >= n0 + 16);
}

/// A client with the descriptor in `text` introduces itself through its first intro point;
/// the intro relay routes it. Returns the intro point's relay and the INTRODUCE2 (if routed).
fn introduce(
    h: &mut Harness,
    text: &str,
    period: TimePeriod,
) -> (RsaIdentity, Option<(IntroId, Introduce2)>) {
    introduce_cc(h, text, period, false)
}

/// [`introduce`] by a client whose rendezvous circuit would (`cc`) or would not run
/// congestion control.
fn introduce_cc(
    h: &mut Harness,
    text: &str,
    period: TimePeriod,
    cc: bool,
) -> (RsaIdentity, Option<(IntroId, Introduce2)>) {
    let client = HsClient::new(h.id.address()).unwrap();
    let mut d = client
        .handle_descriptor(Timestamp::from_unix(h.now), text, period, None)
        .unwrap();
    d.set_congestion_control(cc);
    let (pending, est) = d.establish_rendezvous(&mut h.rng);
    let mut body = Vec::new();
    est.encode(&mut body).unwrap();
    assert!(!body.is_empty());
    let ready = pending.handle_rendezvous_established();
    let (intro, intro1) = ready
        .introduce(
            &mut h.rng,
            0,
            &[9; 32],
            vec![RawLinkSpec::rsa_id(RsaIdentity([9; 20]))],
        )
        .unwrap();
    let relay: RsaIdentity = ready.service().intro_points()[intro.intro_point()]
        .link_specifiers
        .iter()
        .find(|l| l.ty == LS_RSA_ID)
        .and_then(|l| l.as_rsa_id())
        .unwrap();
    let routing = h
        .roles
        .get_mut(&relay)
        .unwrap()
        .handle_introduce1(onion_crypto::Instant::ZERO, &cell(&intro1));
    (relay, routing.to_service.map(|(c, b)| (IntroId(c), b)))
}

#[test]
fn clients_reach_the_service_through_published_and_rotated_intro_points() {
    let config = PublisherConfig {
        intro_max_introduce2: (2, 2),
        ..PublisherConfig::default()
    };
    let mut h = Harness::new(13, config);
    let v = h.view.clone();
    h.consensus(v);
    // What a client fetches with (§2.2.4.1): the current period.
    let sel = h
        .view
        .shared_random
        .client_fetch(&h.view.periods, h.view.valid_after);
    let old = h
        .uploads
        .iter()
        .find(|u| u.period == sel.period)
        .unwrap()
        .clone();
    h.now += 60;
    h.hold_uploads = true;
    // Two introductions through the first intro point rotate it (limit 2).
    let mut first = None;
    for _ in 0..2 {
        let (relay, routed) = introduce(&mut h, &old.text, sel.period);
        let (intro, body) = routed.expect("routed to the service");
        first.get_or_insert((relay, intro));
        let req =
            h.p.handle_introduce2(Timestamp::from_unix(h.now), intro, &body, &mut h.rng)
                .unwrap();
        assert_eq!(
            req.link_specifiers,
            vec![RawLinkSpec::rsa_id(RsaIdentity([9; 20]))]
        );
        h.pump();
    }
    let (relay, intro) = first.unwrap();
    let info =
        h.p.intro_points()
            .into_iter()
            .find(|i| i.id == intro)
            .unwrap();
    assert!(info.retired && info.relay == relay);
    // A client with the old descriptor still gets through while the new one is uploading.
    let (_, routed) = introduce(&mut h, &old.text, sel.period);
    let (i3, body) = routed.unwrap();
    assert_eq!(i3, intro);
    assert!(h
        .p
        .handle_introduce2(Timestamp::from_unix(h.now), i3, &body, &mut h.rng)
        .is_ok());
    // The new descriptor lists three points, not the rotated one.
    let new = h
        .uploads
        .iter()
        .rev()
        .find(|u| u.period == sel.period)
        .unwrap()
        .clone();
    assert!(new.revision > old.revision);
    assert_eq!(new.intro_keys.len(), 3);
    assert!(!new.intro_keys.contains(&old.intro_keys[0]));
    // Uploads answered: the rotated circuit closes; the old descriptor's first point is gone,
    // the new descriptor works.
    h.hold_uploads = false;
    h.release();
    assert!(h.closed.iter().any(|c| c.1 == intro));
    let (_, routed) = introduce(&mut h, &old.text, sel.period);
    assert!(routed.is_none(), "the intro relay forgot the rotated point");
    let (_, routed) = introduce(&mut h, &new.text, sel.period);
    let (i4, body) = routed.unwrap();
    assert_ne!(i4, intro);
    assert!(h
        .p
        .handle_introduce2(Timestamp::from_unix(h.now), i4, &body, &mut h.rng)
        .is_ok());
}

/// A client asks for congestion control in INTRODUCE1 only when its own rendezvous circuit
/// will run it *and* the service advertises `flow-control`: the publisher's descriptors do
/// not (onion's circuits do not run proposal 324), so the service sees no request either way.
#[test]
fn introduce2_carries_no_congestion_control_request() {
    let mut h = Harness::new(17, PublisherConfig::default());
    let v = h.view.clone();
    h.consensus(v);
    let sel = h
        .view
        .shared_random
        .client_fetch(&h.view.periods, h.view.valid_after);
    let desc = h
        .uploads
        .iter()
        .find(|u| u.period == sel.period)
        .unwrap()
        .clone();
    assert!(!desc.text.is_empty());
    for cc in [false, true] {
        let (_, routed) = introduce_cc(&mut h, &desc.text, sel.period, cc);
        let (intro, body) = routed.expect("routed to the service");
        let req =
            h.p.handle_introduce2(Timestamp::from_unix(h.now), intro, &body, &mut h.rng)
                .unwrap();
        assert!(
            req.extensions.iter().all(|e| e.ty != EXT_CC_REQUEST),
            "cc={cc}: {:?}",
            req.extensions
        );
        assert!(!req.asks_congestion_control());
        h.pump();
    }
    // A client that asks anyway (its own INTRODUCE1, with the request in the encrypted
    // part) is recognised as asking, so that a service without congestion control can
    // refuse it.
    let client = HsClient::new(h.id.address()).unwrap();
    let d = client
        .handle_descriptor(Timestamp::from_unix(h.now), &desc.text, sel.period, None)
        .unwrap()
        .descriptor()
        .clone();
    let ip = &d.second_layer.intro_points[0];
    let id = h.id;
    let subcred = id.blind(sel.period).subcredential(&id.credential());
    let pt = IntroducePlaintext {
        rend_cookie: [7; 20],
        extensions: vec![Extension {
            ty: EXT_CC_REQUEST,
            body: vec![],
        }],
        onion_key_type: ONION_KEY_TYPE_NTOR,
        onion_key: vec![9; 32],
        link_specifiers: vec![RawLinkSpec::rsa_id(RsaIdentity([9; 20]))],
    };
    let (intro1, _) = Introduce::build_client(
        &mut h.rng,
        ip.auth_key(),
        &ip.enc_key_ntor,
        &subcred,
        &[],
        &pt,
    )
    .unwrap();
    let relay: RsaIdentity = ip
        .link_specifiers
        .iter()
        .find(|l| l.ty == LS_RSA_ID)
        .and_then(|l| l.as_rsa_id())
        .unwrap();
    let (c, body) = h
        .roles
        .get_mut(&relay)
        .unwrap()
        .handle_introduce1(onion_crypto::Instant::ZERO, &cell(&intro1))
        .to_service
        .expect("routed");
    let req =
        h.p.handle_introduce2(Timestamp::from_unix(h.now), IntroId(c), &body, &mut h.rng)
            .unwrap();
    assert!(req.asks_congestion_control());
}

/// The client's INTRODUCE1 through the `nth` introduction point of `text`, as the intro
/// relay routes it to the service.
fn introduce_via(
    h: &mut Harness,
    text: &str,
    period: TimePeriod,
    nth: usize,
) -> (IntroId, Introduce2) {
    let client = HsClient::new(h.id.address()).unwrap();
    let ready = client
        .handle_descriptor(Timestamp::from_unix(h.now), text, period, None)
        .unwrap()
        .establish_rendezvous(&mut h.rng)
        .0
        .handle_rendezvous_established();
    let (_, intro1) = ready
        .introduce(
            &mut h.rng,
            nth,
            &[9; 32],
            vec![RawLinkSpec::rsa_id(RsaIdentity([9; 20]))],
        )
        .unwrap();
    let relay: RsaIdentity = ready.service().intro_points()[nth]
        .link_specifiers
        .iter()
        .find(|l| l.ty == LS_RSA_ID)
        .and_then(|l| l.as_rsa_id())
        .unwrap();
    let (c, b) = h
        .roles
        .get_mut(&relay)
        .unwrap()
        .handle_introduce1(onion_crypto::Instant::ZERO, &cell(&intro1))
        .to_service
        .expect("routed");
    (IntroId(c), b)
}

/// Each introduction point remembers the INTRODUCE2 cells it carried for its whole life:
/// many introductions through another point do not push an old one out (a single shared
/// cache smaller than an introduction point's life would let a replay through).
#[test]
fn replay_cache_is_per_introduction_point() {
    let hs_config = HsServiceConfig {
        replay_cache_size: 8,
        cookie_cache_size: 8,
        ..HsServiceConfig::default()
    };
    let mut h = Harness::with_service(21, PublisherConfig::default(), hs_config);
    let v = h.view.clone();
    h.consensus(v);
    let sel = h
        .view
        .shared_random
        .client_fetch(&h.view.periods, h.view.valid_after);
    let desc = h
        .uploads
        .iter()
        .find(|u| u.period == sel.period)
        .unwrap()
        .clone();
    let (a, first) = introduce_via(&mut h, &desc.text, sel.period, 0);
    assert!(h
        .p
        .handle_introduce2(Timestamp::from_unix(h.now), a, &first, &mut h.rng)
        .is_ok());
    for _ in 0..12 {
        let (b, body) = introduce_via(&mut h, &desc.text, sel.period, 1);
        assert_ne!(a, b);
        assert!(h
            .p
            .handle_introduce2(Timestamp::from_unix(h.now), b, &body, &mut h.rng)
            .is_ok());
    }
    let err =
        h.p.handle_introduce2(Timestamp::from_unix(h.now), a, &first, &mut h.rng);
    assert!(
        err.is_err(),
        "the replay through the first point was accepted"
    );
    // The same INTRODUCE2 replayed through the point that carried it, right away, too.
    let (b, body) = introduce_via(&mut h, &desc.text, sel.period, 1);
    assert!(h
        .p
        .handle_introduce2(Timestamp::from_unix(h.now), b, &body, &mut h.rng)
        .is_ok());
    assert!(matches!(
        h.p.handle_introduce2(Timestamp::from_unix(h.now), b, &body, &mut h.rng),
        Err(PublishError::Service(ServiceError::Replay))
    ));
}

/// A service configured for congestion control advertises `flow-control 1-2 <sendme_inc>`
/// (C tor 0.4.9 with congestion control enabled), a client that runs it then asks in
/// INTRODUCE1 and reads the service's `sendme_inc`, and the service sees the request; a
/// client that does not run it does not ask.
#[test]
fn flow_control_service_advertises_and_is_asked() {
    let hs_config = HsServiceConfig {
        flow_control_sendme_inc: Some(33),
        ..HsServiceConfig::default()
    };
    let mut h = Harness::with_service(23, PublisherConfig::default(), hs_config);
    let v = h.view.clone();
    h.consensus(v);
    let sel = h
        .view
        .shared_random
        .client_fetch(&h.view.periods, h.view.valid_after);
    let desc = h
        .uploads
        .iter()
        .find(|u| u.period == sel.period)
        .unwrap()
        .clone();
    let client = HsClient::new(h.id.address()).unwrap();
    let described = client
        .handle_descriptor(Timestamp::from_unix(h.now), &desc.text, sel.period, None)
        .unwrap();
    assert_eq!(
        described.descriptor().second_layer.other_lines,
        vec!["flow-control 1-2 33"]
    );
    assert_eq!(described.descriptor_sendme_inc(), Some(33));
    for cc in [false, true] {
        let (_, routed) = introduce_cc(&mut h, &desc.text, sel.period, cc);
        let (intro, body) = routed.expect("routed to the service");
        let req =
            h.p.handle_introduce2(Timestamp::from_unix(h.now), intro, &body, &mut h.rng)
                .unwrap();
        assert_eq!(req.asks_congestion_control(), cc, "cc={cc}");
        h.pump();
    }
}
