//! The onion-service sub-machines driven by a fake core over a synthetic network whose
//! relays run onion-hs's real introduction and rendezvous point roles and store and serve
//! descriptors as HSDirs: a hosted service ([`OnionServices::host`]) publishes, and a
//! client ([`OnionServices::connect`]) fetches its descriptor, introduces itself and meets
//! it, every message built and checked by the real machines of both ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use onion_dir::netview::NetView;
use onion_dir::{consensus, microdesc, synth};
use onion_hs::client::HsClient;
use onion_hs::keys::ExpandedKeypair;
use onion_hs::relay::{IntroPoint, RendPoint};
use onion_hs::x25519_dalek::{PublicKey as XPublic, StaticSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;
use crate::dir::DirMode;

/// The synthetic consensus's valid-after (2022-11-19 10:00:00 UTC) plus ten minutes.
const WALL: Timestamp = Timestamp(1_668_852_000 + 600);

fn directory() -> Arc<Directory> {
    let net = synth::network(60, 7);
    let cons = consensus::parse(&net.consensus).unwrap().assume_verified();
    let mds = microdesc::parse_many(&net.microdescs).unwrap();
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    Arc::new(Directory::from_consensus(
        &cons,
        view,
        DirMode::Micro,
        60,
        String::new(),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Client,
    Host,
}

type CKey = (Side, HsCircRef);

/// A relay's onion-service roles and its HSDir store.
#[derive(Default)]
struct Relay {
    intro: IntroPoint<CKey>,
    rend: RendPoint<CKey>,
    store: Vec<String>,
}

struct Circ {
    purpose: HsPurpose,
    last: HopTarget,
    kh: [u8; 20],
    vhop: Option<VirtualHop>,
}

/// The fake core and the network.
struct Net {
    now: Instant,
    rng: ChaCha20Rng,
    dir: Arc<Directory>,
    client: OnionServices,
    host: OnionServices,
    relays: HashMap<[u8; 20], Relay>,
    circs: HashMap<CKey, Circ>,
    /// Every circuit asked for: side, purpose, last relay.
    builds: Vec<(Side, HsPurpose, [u8; 20])>,
    /// Circuits of these purposes fail to build, this many times.
    fail_builds: HashMap<HsPurpose, usize>,
    /// Circuits of these purposes are never answered (kept in `deferred`).
    defer: HashSet<HsPurpose>,
    deferred: Vec<(Side, HsCircRef, HopTarget)>,
    /// HSDirs answer this many fetches with 404.
    not_found: usize,
    /// Introduction points refuse this many INTRODUCE1 (status 1), not forwarding them.
    refuse_intro: usize,
    /// INTRODUCE2 bodies are captured instead of delivered.
    capture_intro2: bool,
    captured: Vec<(HsCircRef, Vec<u8>)>,
    ready: Vec<(HsRequest, HsCircRef)>,
    failed: Vec<(HsRequest, HsError)>,
    published: Vec<ServiceId>,
    /// Incoming streams the host timed out ([`HsAction::IncomingTimedOut`]).
    timed_out: Vec<IncomingRef>,
    /// Every onion-service message body in the order it crossed the network: what a
    /// machine sent (as its circuit would encode it) and what a relay answered.
    wire_log: Vec<(Side, RelayCmd, Vec<u8>)>,
}

impl Net {
    fn new(seed: u64) -> Net {
        Net::with_cc(seed, false, false)
    }

    /// A network whose client and host run congestion control (proposal 324) as told; the
    /// synthetic consensus enables it (no `cc_alg`: C tor's default, Vegas).
    fn with_cc(seed: u64, client_cc: bool, host_cc: bool) -> Net {
        let dir = directory();
        let now = Instant::from_duration(Duration::from_secs(1000));
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let config = |cc| HsConfig {
            congestion_control: cc,
            ..HsConfig::default()
        };
        let mut client = OnionServices::new(config(client_cc), now, WALL);
        let mut host = OnionServices::new(config(host_cc), now, WALL);
        client.set_directory(&dir, now, WALL, &mut rng).unwrap();
        host.set_directory(&dir, now, WALL, &mut rng).unwrap();
        Net {
            now,
            rng,
            dir,
            client,
            host,
            relays: HashMap::new(),
            circs: HashMap::new(),
            builds: Vec::new(),
            fail_builds: HashMap::new(),
            defer: HashSet::new(),
            deferred: Vec::new(),
            not_found: 0,
            refuse_intro: 0,
            capture_intro2: false,
            captured: Vec::new(),
            ready: Vec::new(),
            failed: Vec::new(),
            published: Vec::new(),
            timed_out: Vec::new(),
            wire_log: Vec::new(),
        }
    }

    fn m(&mut self, side: Side) -> &mut OnionServices {
        match side {
            Side::Client => &mut self.client,
            Side::Host => &mut self.host,
        }
    }

    /// Host a service on port 80 and run until it is published.
    fn publish(&mut self, clients: Vec<XPublic>) -> (ServiceId, String) {
        self.publish_with(|cfg| cfg.authorized_clients = clients)
    }

    /// Host a service on port 80, configured by `f`, and run until it is published.
    fn publish_with(&mut self, f: impl FnOnce(&mut HostConfig)) -> (ServiceId, String) {
        let id = ExpandedKeypair::generate(&mut self.rng);
        let mut cfg = HostConfig::new(id, vec![80]);
        f(&mut cfg);
        let (now, rng) = (self.now, &mut self.rng);
        let svc = self.host.host(cfg, now, rng).unwrap();
        self.pump();
        assert_eq!(self.published, vec![svc], "the service is published");
        let addr = self.host.service_address(svc).unwrap().to_string();
        (svc, addr)
    }

    fn connect(&mut self, addr: &str, isolation: u64) -> HsRequest {
        let (now, rng) = (self.now, &mut self.rng);
        let r = self.client.connect(addr, isolation, now, rng).unwrap();
        self.pump();
        r
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        let wall = Timestamp(
            WALL.0
                + self
                    .now
                    .saturating_duration_since(Instant::from_duration(Duration::from_secs(1000)))
                    .as_secs(),
        );
        let (now, rng) = (self.now, &mut self.rng);
        self.client.handle_timeout(now, wall, rng);
        self.host.handle_timeout(now, wall, rng);
        self.pump();
    }

    fn count(&self, side: Side, purpose: HsPurpose) -> usize {
        self.builds
            .iter()
            .filter(|b| b.0 == side && b.1 == purpose)
            .count()
    }

    fn pump(&mut self) {
        for _ in 0..100_000 {
            if let Some(a) = self.client.poll_action() {
                self.apply(Side::Client, a);
            } else if let Some(a) = self.host.poll_action() {
                self.apply(Side::Host, a);
            } else {
                return;
            }
        }
        panic!("the machines do not settle");
    }

    fn deliver(&mut self, side: Side, circ: HsCircRef, cmd: RelayCmd, body: &[u8]) {
        self.wire_log.push((side, cmd, body.to_vec()));
        let msg = RelayMsg::decode(cmd, body).unwrap();
        let (now, rng) = (self.now, &mut self.rng);
        match side {
            Side::Client => self.client.handle_message(circ, &msg, now, rng),
            Side::Host => self.host.handle_message(circ, &msg, now, rng),
        }
    }

    fn rendezvous_point(&self) -> HopTarget {
        hop_target(&self.dir.view.relays()[10]).unwrap()
    }

    fn apply(&mut self, side: Side, a: HsAction) {
        let now = self.now;
        match a {
            HsAction::BuildCircuit {
                circ,
                purpose,
                last_hop,
            } => {
                assert_eq!(last_hop.is_none(), purpose.core_chooses_last_hop());
                let last = last_hop.unwrap_or_else(|| self.rendezvous_point());
                self.builds.push((side, purpose, last.rsa_id.0));
                if let Some(n) = self.fail_builds.get_mut(&purpose).filter(|n| **n > 0) {
                    *n -= 1;
                    let rng = &mut self.rng;
                    match side {
                        Side::Client => {
                            self.client
                                .handle_circuit_closed(circ, "build failed", now, rng)
                        }
                        Side::Host => {
                            self.host
                                .handle_circuit_closed(circ, "build failed", now, rng)
                        }
                    }
                    return;
                }
                if self.defer.contains(&purpose) {
                    self.deferred.push((side, circ, last));
                    return;
                }
                let mut kh = [0u8; 20];
                self.rng.fill_bytes(&mut kh);
                self.circs.insert(
                    (side, circ),
                    Circ {
                        purpose,
                        last: last.clone(),
                        kh,
                        vhop: None,
                    },
                );
                let rng = &mut self.rng;
                match side {
                    Side::Client => self.client.handle_circuit_built(circ, &last, &kh, now, rng),
                    Side::Host => self.host.handle_circuit_built(circ, &last, &kh, now, rng),
                }
            }
            HsAction::SendMessage { circ, msg } => {
                // The network carries what the circuit's cell would: the message encoded once.
                let (cmd, body) = (msg.cmd(), wire(&msg));
                self.wire_log.push((side, cmd, body.clone()));
                let c = self
                    .circs
                    .get(&(side, circ))
                    .expect("message on a built circuit");
                let (rsa, kh) = (c.last.rsa_id.0, c.kh);
                let relay = self.relays.entry(rsa).or_default();
                match cmd {
                    RelayCmd::ESTABLISH_INTRO => {
                        assert_eq!(c.purpose, HsPurpose::ServiceIntro);
                        let reply = relay
                            .intro
                            .handle_establish_intro(
                                (side, circ),
                                self.now,
                                &kh,
                                &decoded(cmd, &body),
                            )
                            .unwrap()
                            .reply;
                        let reply = wire(&RelayMsg::IntroEstablished(reply));
                        self.deliver(side, circ, RelayCmd::INTRO_ESTABLISHED, &reply);
                    }
                    RelayCmd::ESTABLISH_RENDEZVOUS => {
                        assert_eq!(c.purpose, HsPurpose::ClientRend);
                        relay
                            .rend
                            .handle_establish_rendezvous((side, circ), &decoded(cmd, &body))
                            .unwrap();
                        self.deliver(side, circ, RelayCmd::RENDEZVOUS_ESTABLISHED, &[]);
                    }
                    RelayCmd::INTRODUCE1 => {
                        assert_eq!(c.purpose, HsPurpose::ClientIntro);
                        let routing = relay
                            .intro
                            .handle_introduce1(self.now, &decoded(cmd, &body));
                        if self.refuse_intro > 0 {
                            self.refuse_intro -= 1;
                            let [hi, lo] = onion_cell::hs::IntroduceAckStatus::UNKNOWN_SERVICE
                                .0
                                .to_be_bytes();
                            let ack = [hi, lo, 0];
                            self.deliver(side, circ, RelayCmd::INTRODUCE_ACK, &ack);
                            return;
                        }
                        if let Some(((s2, c2), m2)) = routing.to_service {
                            let b2 = wire(&RelayMsg::Introduce2(m2));
                            if self.capture_intro2 {
                                self.captured.push((c2, b2));
                            } else {
                                self.deliver(s2, c2, RelayCmd::INTRODUCE2, &b2);
                            }
                        }
                        let ack = wire(&RelayMsg::IntroduceAck(routing.ack));
                        self.deliver(side, circ, RelayCmd::INTRODUCE_ACK, &ack);
                    }
                    RelayCmd::RENDEZVOUS1 => {
                        assert_eq!(c.purpose, HsPurpose::ServiceRend);
                        let joined = relay
                            .rend
                            .handle_rendezvous1((side, circ), &decoded(cmd, &body));
                        if let Ok(j) = joined {
                            let r2 = wire(&RelayMsg::Rendezvous2(j.rendezvous2));
                            self.deliver(j.client.0, j.client.1, RelayCmd::RENDEZVOUS2, &r2);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            HsAction::DirRequest { circ, request, .. } => {
                let c = self
                    .circs
                    .get(&(side, circ))
                    .expect("dir request on a built circuit");
                let rsa = c.last.rsa_id.0;
                let text = String::from_utf8(request).unwrap();
                let relay = self.relays.entry(rsa).or_default();
                let response = if let Some(body) = text.strip_prefix("POST /tor/hs/3/publish ") {
                    assert_eq!(c.purpose, HsPurpose::HsDirUpload);
                    let desc = body.split_once("\r\n\r\n").unwrap().1;
                    relay.store.push(desc.to_string());
                    "HTTP/1.0 200 OK\r\n\r\n".to_string()
                } else {
                    assert_eq!(c.purpose, HsPurpose::HsDirFetch);
                    let path = text
                        .strip_prefix("GET /tor/hs/3/")
                        .and_then(|t| t.split(' ').next())
                        .unwrap()
                        .trim_end_matches('=')
                        .to_string();
                    let found = relay.store.iter().rev().find(|d| {
                        let o = onion_hs::desc::OuterDescriptor::parse(d).unwrap();
                        let b = o.claimed_blinded_key().unwrap();
                        onion_crypto::Ed25519Identity(*b.as_bytes())
                            .to_base64()
                            .trim_end_matches('=')
                            == path
                    });
                    match found {
                        Some(d) if self.not_found == 0 => format!("HTTP/1.0 200 OK\r\n\r\n{d}"),
                        _ => {
                            self.not_found = self.not_found.saturating_sub(1);
                            "HTTP/1.0 404 Not found\r\n\r\n".to_string()
                        }
                    }
                };
                let rng = &mut self.rng;
                let r = Ok(response.into_bytes());
                match side {
                    Side::Client => self.client.handle_dir_response(circ, r, now, rng),
                    Side::Host => self.host.handle_dir_response(circ, r, now, rng),
                }
            }
            HsAction::AddVirtualHop { circ, hop } => {
                let c = self.circs.get_mut(&(side, circ)).unwrap();
                assert!(c.vhop.is_none());
                hop.layer().unwrap();
                c.vhop = Some(hop);
            }
            HsAction::CloseCircuit { circ } => {
                self.circs.remove(&(side, circ));
                for r in self.relays.values_mut() {
                    r.intro.circuit_closed((side, circ));
                }
            }
            HsAction::Ready { request, circ } => self.ready.push((request, circ)),
            HsAction::Failed { request, error } => self.failed.push((request, error)),
            HsAction::Published { service } => self.published.push(service),
            HsAction::IncomingTimedOut { stream } => self.timed_out.push(stream),
        }
        let _ = self.m(side);
    }

    /// The service's joined rendezvous circuits.
    fn host_rend_circs(&self) -> Vec<HsCircRef> {
        self.circs
            .iter()
            .filter(|((s, _), c)| {
                *s == Side::Host && c.purpose == HsPurpose::ServiceRend && c.vhop.is_some()
            })
            .map(|((_, r), _)| *r)
            .collect()
    }
}

#[test]
fn client_meets_hosted_service_through_real_descriptor_intro_and_rendezvous() {
    let mut net = Net::new(1);
    let (svc, addr) = net.publish(vec![]);
    // 3 introduction points, two descriptors uploaded to their HSDirs.
    assert_eq!(net.count(Side::Host, HsPurpose::ServiceIntro), 3);
    assert!(net.count(Side::Host, HsPurpose::HsDirUpload) >= 8);
    assert!(net.host.service_stats(svc).unwrap().uploads_ok >= 8);

    let req = net.connect(&addr, 0);
    assert!(net.failed.is_empty(), "{:?}", net.failed);
    let (r, circ) = net.ready[0];
    assert_eq!(r, req);
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 1);
    assert_eq!(net.count(Side::Client, HsPurpose::ClientIntro), 1);
    assert_eq!(net.count(Side::Client, HsPurpose::ClientRend), 1);
    // Both ends hold the same virtual-hop keys, each its own side.
    let client_hop = net.circs[&(Side::Client, circ)].vhop.clone().unwrap();
    let host_circ = net.host_rend_circs();
    assert_eq!(host_circ.len(), 1);
    let host_hop = net.circs[&(Side::Host, host_circ[0])].vhop.clone().unwrap();
    assert_eq!(client_hop.key_material(), host_hop.key_material());
    assert_eq!(client_hop.side(), VirtualHopSide::Client);
    assert!(host_hop.accepts_streams() && !client_hop.accepts_streams());
    // The introduction and fetch circuits are closed; the rendezvous circuits stay.
    assert_eq!(
        net.circs.keys().filter(|k| k.0 == Side::Client).count(),
        1,
        "only the rendezvous circuit is left"
    );
    // Streams: port 80 offered to the service's application, others refused.
    let now = net.now;
    assert_eq!(
        net.host
            .incoming_stream(host_circ[0], 80, IncomingRef(1), now),
        IncomingDecision::Offer { service: svc }
    );
    assert_eq!(
        net.host
            .incoming_stream(host_circ[0], 81, IncomingRef(2), now),
        IncomingDecision::Reject(REJECT_PORT)
    );
    // Only the host's rendezvous circuits take streams.
    assert_eq!(
        net.host
            .incoming_stream(HsCircRef(u64::MAX), 80, IncomingRef(3), now),
        IncomingDecision::Reject(EndReason::MISC)
    );
    assert_eq!(net.host.service_stats(svc).unwrap().rendezvous, 1);

    // The same service and isolation: the same circuit at once, nothing built.
    let builds = net.builds.len();
    let req2 = net.connect(&addr, 0);
    assert_eq!(net.ready[1], (req2, circ));
    assert_eq!(net.builds.len(), builds);

    // Another isolation token: a new rendezvous, with the cached descriptor (no fetch).
    net.connect(&addr, 7);
    assert_eq!(net.ready.len(), 3);
    assert_ne!(net.ready[2].1, circ);
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 1);
    assert_eq!(net.count(Side::Client, HsPurpose::ClientRend), 2);

    // Once dirty, the circuit is not handed out again.
    net.advance(Duration::from_secs(601));
    net.connect(&addr, 0);
    assert_eq!(net.ready.len(), 4);
    assert_ne!(net.ready[3].1, circ);
}

/// SHA3-256 of a wire log: side, command, length and bytes of every message in order.
fn wire_digest(log: &[(Side, RelayCmd, Vec<u8>)]) -> String {
    use sha3::Digest as _;
    let mut h = sha3::Sha3_256::new();
    for (side, cmd, body) in log {
        h.update([*side as u8, cmd.0]);
        h.update((body.len() as u32).to_be_bytes());
        h.update(body);
    }
    hex::encode(h.finalize())
}

#[test]
fn onion_service_messages_cross_the_network_byte_for_byte_as_before() {
    // A seeded publication and connection: every ESTABLISH_INTRO, INTRO_ESTABLISHED,
    // ESTABLISH_RENDEZVOUS, RENDEZVOUS_ESTABLISHED, INTRODUCE1, INTRODUCE2, INTRODUCE_ACK,
    // RENDEZVOUS1 and RENDEZVOUS2 body, in order, as the machines had them encoded when
    // they handed bodies to the core (digest recorded then).
    let mut net = Net::new(1);
    let (_, addr) = net.publish(vec![]);
    net.connect(&addr, 0);
    assert_eq!(net.ready.len(), 1);
    let cmds: HashSet<RelayCmd> = net.wire_log.iter().map(|(_, c, _)| *c).collect();
    assert_eq!(
        cmds.len(),
        9,
        "every onion-service message crossed: {cmds:?}"
    );
    assert_eq!(
        wire_digest(&net.wire_log),
        "adf45bce518b4b0d31a8cb7cda1b3167fa627acd848a9ab81b9b472ccf8251c7"
    );
}

#[test]
fn client_authorization_missing_wrong_and_right() {
    let mut net = Net::new(2);
    let key = StaticSecret::random_from_rng(&mut net.rng);
    let (_, addr) = net.publish(vec![XPublic::from(&key)]);

    net.connect(&addr, 0);
    let e = &net.failed[0].1;
    assert_eq!(*e, HsError::ClientAuthMissing);
    assert_eq!(e.socks5_reply(), 0xF4);
    // The descriptor is the same on every HSDir: one fetch, then the answer.
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 1);

    let wrong = StaticSecret::random_from_rng(&mut net.rng);
    net.client.set_client_auth(&addr, Some(wrong)).unwrap();
    net.connect(&addr, 0);
    assert_eq!(net.failed[1].1, HsError::ClientAuthWrong);
    assert_eq!(net.failed[1].1.socks5_reply(), 0xF5);

    net.client.set_client_auth(&addr, Some(key)).unwrap();
    net.connect(&addr, 0);
    assert_eq!(net.failed.len(), 2);
    assert_eq!(net.ready.len(), 1);
}

#[test]
fn hsdir_failures_move_to_the_next_hsdir() {
    let mut net = Net::new(3);
    let (_, addr) = net.publish(vec![]);
    // Two circuits to HSDirs fail, one HSDir has no descriptor; the fourth gives it.
    net.fail_builds.insert(HsPurpose::HsDirFetch, 2);
    net.not_found = 1;
    net.connect(&addr, 0);
    assert!(net.failed.is_empty(), "{:?}", net.failed);
    assert_eq!(net.ready.len(), 1);
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 4);
    let dirs: HashSet<[u8; 20]> = net
        .builds
        .iter()
        .filter(|b| b.1 == HsPurpose::HsDirFetch)
        .map(|b| b.2)
        .collect();
    assert_eq!(dirs.len(), 4, "each attempt asks another HSDir");
}

#[test]
fn every_hsdir_failing_is_descriptor_not_found() {
    let mut net = Net::new(4);
    let (_, addr) = net.publish(vec![]);
    net.not_found = usize::MAX;
    net.connect(&addr, 0);
    let e = &net.failed[0].1;
    // hsdir_n_replicas 2 × hsdir_spread_fetch 3.
    assert!(
        matches!(e, HsError::DescriptorNotFound { tried: 6, .. }),
        "{e:?}"
    );
    assert_eq!(e.socks5_reply(), 0xF0);
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 6);
    assert!(
        net.circs.keys().all(|k| k.0 == Side::Host),
        "no client circuit left"
    );
}

#[test]
fn intro_failures_move_to_the_next_intro_point() {
    let mut net = Net::new(5);
    let (_, addr) = net.publish(vec![]);
    // The first introduction circuit fails, the second point refuses; the third works.
    net.fail_builds.insert(HsPurpose::ClientIntro, 1);
    net.refuse_intro = 1;
    net.connect(&addr, 0);
    assert!(net.failed.is_empty(), "{:?}", net.failed);
    assert_eq!(net.ready.len(), 1);
    let intros: Vec<[u8; 20]> = net
        .builds
        .iter()
        .filter(|b| b.1 == HsPurpose::ClientIntro)
        .map(|b| b.2)
        .collect();
    assert_eq!(intros.len(), 3);
    assert_eq!(intros.iter().collect::<HashSet<_>>().len(), 3);
    // One rendezvous circuit served all three tries.
    assert_eq!(net.count(Side::Client, HsPurpose::ClientRend), 1);
}

#[test]
fn all_intro_points_failing_refetches_a_cached_descriptor_once_then_fails() {
    let mut net = Net::new(6);
    let (_, addr) = net.publish(vec![]);
    net.connect(&addr, 0);
    assert_eq!(net.ready.len(), 1);
    // Every introduction point refuses: from the fetched descriptor it is a failure.
    net.refuse_intro = usize::MAX;
    net.connect(&addr, 1);
    let e = &net.failed[0].1;
    // The refusal's typed status, as the introduction point gave it, is the last failure.
    assert!(
        matches!(e, HsError::IntroFailed { tried: 3, last }
            if last == "introduction point refused: service id not recognised (1)"),
        "{e:?}"
    );
    assert_eq!(e.socks5_reply(), 0xF2);
    // The cached descriptor was fetched again once before giving up.
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 2);
    assert_eq!(net.count(Side::Client, HsPurpose::ClientIntro), 1 + 6);
}

#[test]
fn a_silent_introduction_times_out() {
    let mut net = Net::new(7);
    let (_, addr) = net.publish(vec![]);
    net.defer.insert(HsPurpose::ClientIntro);
    net.connect(&addr, 0);
    assert!(net.failed.is_empty());
    let t = net.client.poll_timeout().unwrap();
    assert_eq!(t, net.now + Duration::from_secs(120));
    net.advance(Duration::from_secs(120));
    assert_eq!(net.failed[0].1, HsError::IntroTimedOut);
    assert_eq!(net.failed[0].1.socks5_reply(), 0xF7);
}

#[test]
fn bad_address_is_refused_at_once() {
    let mut net = Net::new(8);
    let (now, rng) = (net.now, &mut net.rng);
    let e = net
        .client
        .connect("example.onion", 0, now, rng)
        .unwrap_err();
    assert!(matches!(e, HsError::BadAddress(_)));
    assert_eq!(e.socks5_reply(), 0xF6);
}

/// `n` INTRODUCE1 from independent clients of the published service, through its first
/// introduction point, each on its own cookie: (the host's intro circuit, INTRODUCE2 body).
fn introductions(net: &mut Net, addr: &str, n: usize) -> Vec<(HsCircRef, Vec<u8>)> {
    let a: onion_hs::OnionAddress = addr.parse().unwrap();
    let hsnet = net.client.net().unwrap().clone();
    let sel = hsnet
        .shared_random
        .client_fetch(&hsnet.periods, hsnet.valid_after);
    let c = HsClient::new(a).unwrap();
    let d = net
        .relays
        .values()
        .flat_map(|r| r.store.iter())
        .find_map(|d| c.handle_descriptor(WALL, d, sel.period, None).ok())
        .unwrap();
    let ip = d.intro_points()[0].clone();
    let id = a.identity_key().unwrap();
    let subcred = id.blind(sel.period).subcredential(&id.credential());
    let rp = net.rendezvous_point();
    let rsa = ip
        .link_specifiers
        .iter()
        .find_map(|l| l.as_rsa_id())
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut rend_cookie = [0u8; 20];
        net.rng.fill_bytes(&mut rend_cookie);
        let pt = onion_hs::msg::IntroducePlaintext {
            rend_cookie,
            extensions: vec![],
            onion_key_type: onion_hs::msg::ONION_KEY_TYPE_NTOR,
            onion_key: rp.ntor_key.0.to_vec(),
            link_specifiers: link_specs_of(&rp),
        };
        let (body, _) = onion_hs::msg::Introduce::build_client(
            &mut net.rng,
            ip.auth_key(),
            &ip.enc_key_ntor,
            &subcred,
            &[],
            &pt,
        )
        .unwrap();
        let body = wire(&RelayMsg::Introduce1(body));
        let m = decoded(RelayCmd::INTRODUCE1, &body);
        let now = net.now;
        let relay = net.relays.get_mut(&rsa.0).unwrap();
        let routing = relay.intro.handle_introduce1(now, &m);
        let ((side, circ), m2) = routing.to_service.unwrap();
        assert_eq!(side, Side::Host);
        out.push((circ, wire(&RelayMsg::Introduce2(m2))));
    }
    out
}

#[test]
fn introduce2_flood_is_limited_by_the_token_bucket() {
    let mut net = Net::new(9);
    let (svc, addr) = net.publish(vec![]);
    let intros = introductions(&mut net, &addr, 300);
    // Rendezvous circuits complete at once, so the queue never fills: the bucket decides.
    for (circ, body) in &intros {
        net.deliver(Side::Host, *circ, RelayCmd::INTRODUCE2, body);
        net.pump();
    }
    let s = net.host.service_stats(svc).unwrap();
    assert_eq!(s.introductions, 200, "the burst");
    assert_eq!(s.dropped_rate, 100);
    assert_eq!(s.dropped_queue_full, 0);
    assert_eq!(net.count(Side::Host, HsPurpose::ServiceRend), 200);
    // One second later, the rate's worth (fresh cells: the dropped ones were not seen).
    net.advance(Duration::from_secs(1));
    let more = introductions(&mut net, &addr, 30);
    for (circ, body) in &more {
        net.deliver(Side::Host, *circ, RelayCmd::INTRODUCE2, body);
        net.pump();
    }
    let s = net.host.service_stats(svc).unwrap();
    assert_eq!(s.introductions, 225);
    assert_eq!(s.dropped_rate, 105);
}

#[test]
fn introduce2_flood_is_bounded_by_the_queue_and_the_build_limit() {
    let mut net = Net::new(10);
    let (svc, addr) = net.publish(vec![]);
    let intros = introductions(&mut net, &addr, 150);
    // Rendezvous circuits never finish building: 16 in flight, 64 waiting, the rest
    // dropped before decryption.
    net.defer.insert(HsPurpose::ServiceRend);
    for (circ, body) in &intros {
        net.deliver(Side::Host, *circ, RelayCmd::INTRODUCE2, body);
        net.pump();
    }
    let s = net.host.service_stats(svc).unwrap();
    assert_eq!(net.count(Side::Host, HsPurpose::ServiceRend), 16);
    assert_eq!(s.introductions, 16 + 64);
    assert_eq!(s.dropped_queue_full, 150 - 80);
    assert_eq!(s.dropped_rate, 0);
    // Waiting too long (half of the 30 s rendezvous timeout) drops the queued ones; the
    // builds in flight time out and are retried once.
    net.advance(Duration::from_secs(16));
    let s = net.host.service_stats(svc).unwrap();
    assert_eq!(s.stale, 64);
}

#[test]
fn replayed_introduce2_is_dropped() {
    let mut net = Net::new(11);
    let (svc, addr) = net.publish(vec![]);
    let intro = introductions(&mut net, &addr, 1).remove(0);
    net.deliver(Side::Host, intro.0, RelayCmd::INTRODUCE2, &intro.1);
    net.pump();
    net.deliver(Side::Host, intro.0, RelayCmd::INTRODUCE2, &intro.1);
    net.pump();
    let s = net.host.service_stats(svc).unwrap();
    assert_eq!((s.introductions, s.replays), (1, 1));
    assert_eq!(net.count(Side::Host, HsPurpose::ServiceRend), 1);
}

#[test]
fn a_closed_intro_circuit_is_rebuilt_to_the_same_relay() {
    let mut net = Net::new(12);
    let (_, _addr) = net.publish(vec![]);
    let (circ, relay) = net
        .circs
        .iter()
        .find(|((s, _), c)| *s == Side::Host && c.purpose == HsPurpose::ServiceIntro)
        .map(|((_, r), c)| (*r, c.last.rsa_id.0))
        .unwrap();
    net.circs.remove(&(Side::Host, circ));
    for r in net.relays.values_mut() {
        r.intro.circuit_closed((Side::Host, circ));
    }
    let (now, rng) = (net.now, &mut net.rng);
    net.host.handle_circuit_closed(circ, "DESTROY", now, rng);
    net.pump();
    assert_eq!(net.count(Side::Host, HsPurpose::ServiceIntro), 3);
    // After the publisher's backoff (5 s), the same relay again.
    net.advance(Duration::from_secs(5));
    let last = net
        .builds
        .iter()
        .rev()
        .find(|b| b.1 == HsPurpose::ServiceIntro)
        .unwrap();
    assert_eq!(net.count(Side::Host, HsPurpose::ServiceIntro), 4);
    assert_eq!(last.2, relay);
}

#[test]
fn a_failed_rendezvous_circuit_is_replaced_once_then_fails() {
    let mut net = Net::new(13);
    let (_, addr) = net.publish(vec![]);
    net.fail_builds.insert(HsPurpose::ClientRend, 1);
    net.connect(&addr, 0);
    assert!(net.failed.is_empty(), "{:?}", net.failed);
    assert_eq!(net.ready.len(), 1);
    assert_eq!(net.count(Side::Client, HsPurpose::ClientRend), 2);

    net.fail_builds.insert(HsPurpose::ClientRend, 2);
    net.connect(&addr, 1);
    let e = &net.failed[0].1;
    assert!(matches!(e, HsError::RendezvousFailed(_)), "{e:?}");
    assert_eq!(e.socks5_reply(), 0xF3);
    assert_eq!(net.count(Side::Client, HsPurpose::ClientRend), 4);
}

#[test]
fn congestion_control_on_the_virtual_hop_only_when_both_ends_run_it() {
    for (client_cc, host_cc) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut net = Net::with_cc(14, client_cc, host_cc);
        let (_, addr) = net.publish(vec![]);
        net.connect(&addr, 0);
        assert_eq!(
            net.ready.len(),
            1,
            "{client_cc} {host_cc}: {:?}",
            net.failed
        );
        let client_hop = net.circs[&(Side::Client, net.ready[0].1)]
            .vhop
            .clone()
            .unwrap();
        let host_circ = net.host_rend_circs()[0];
        let host_hop = net.circs[&(Side::Host, host_circ)].vhop.clone().unwrap();
        let (c, h) = (
            client_hop.congestion_control(),
            host_hop.congestion_control(),
        );
        if client_cc && host_cc {
            let expect = OnionCc::from_directory(&net.dir).unwrap().onion;
            assert_eq!(c, Some(expect));
            assert_eq!(h, Some(expect));
            assert_eq!(expect.sendme_inc, 31);
        } else {
            assert_eq!((c, h), (None, None), "{client_cc} {host_cc}");
        }
    }
}

#[test]
fn cached_descriptors_expire_with_their_lifetime() {
    let mut net = Net::new(15);
    let (_, addr) = net.publish(vec![]);
    net.connect(&addr, 0);
    net.connect(&addr, 1);
    assert_eq!(net.ready.len(), 2);
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 1);
    // descriptor-lifetime 180 minutes: then it is fetched again.
    net.advance(Duration::from_secs(180 * 60 + 1));
    net.connect(&addr, 2);
    assert_eq!(net.ready.len(), 3, "{:?}", net.failed);
    assert_eq!(net.count(Side::Client, HsPurpose::HsDirFetch), 2);
}

#[test]
fn onion_hosts_are_told_apart() {
    assert!(is_onion("abc.onion"));
    assert!(is_onion("www.ABC.ONION"));
    assert!(!is_onion(".onion"));
    assert!(!is_onion("onion"));
    assert!(!is_onion("example.com"));
    assert!(!is_onion("x.onion.example"));
}

#[test]
fn padding_on_onion_service_circuits_is_ignored() {
    let mut net = Net::new(16);
    let (_, addr) = net.publish(vec![]);
    // DROP on every client circuit while it connects: the attempt goes on.
    net.defer.insert(HsPurpose::ClientIntro);
    net.connect(&addr, 0);
    let circs: Vec<HsCircRef> = net
        .circs
        .keys()
        .filter(|k| k.0 == Side::Client)
        .map(|k| k.1)
        .collect();
    assert!(!circs.is_empty());
    for c in circs {
        net.deliver(Side::Client, c, RelayCmd::DROP, &[]);
    }
    net.pump();
    assert!(net.failed.is_empty(), "{:?}", net.failed);
    assert_eq!(
        net.count(Side::Client, HsPurpose::ClientRend),
        1,
        "no new rendezvous"
    );
    // The deferred introduction circuit completes: the connection succeeds.
    let (side, circ, last) = net.deferred.remove(0);
    net.defer.clear();
    let mut kh = [0u8; 20];
    net.rng.fill_bytes(&mut kh);
    net.circs.insert(
        (side, circ),
        Circ {
            purpose: HsPurpose::ClientIntro,
            last: last.clone(),
            kh,
            vhop: None,
        },
    );
    let (now, rng) = (net.now, &mut net.rng);
    net.client.handle_circuit_built(circ, &last, &kh, now, rng);
    net.pump();
    assert_eq!(net.ready.len(), 1, "{:?}", net.failed);
}

/// The virtual hop runs the `_onion` parameters (the exit ones for a single onion
/// service) with the descriptor's `sendme_inc`, accepted within one of the consensus value
/// (C tor's `congestion_control_validate_sendme_increment`).
#[test]
fn virtual_hop_congestion_control_from_the_descriptor() {
    let onion = CcConfig {
        sendme_inc: 31,
        alpha: 1,
        ..CcConfig::default()
    };
    let single_onion = CcConfig {
        sendme_inc: 31,
        alpha: 2,
        ..CcConfig::default()
    };
    let cc = OnionCc {
        onion,
        single_onion,
    };
    let c = cc.for_descriptor(32, false).unwrap();
    assert_eq!((c.sendme_inc, c.alpha), (32, 1));
    let c = cc.for_descriptor(30, true).unwrap();
    assert_eq!((c.sendme_inc, c.alpha), (30, 2));
    for (inc, ok) in [(0, false), (29, false), (30, true), (32, true), (33, false)] {
        assert_eq!(cc.for_descriptor(inc, false).is_some(), ok, "{inc}");
    }
}

#[test]
fn error_classes() {
    let nf = HsError::DescriptorNotFound {
        tried: 1,
        last: String::new(),
    };
    assert_eq!(nf.kind(), ErrorKind::Network);
    assert_eq!(
        HsError::DescriptorInvalid(String::new()).kind(),
        ErrorKind::PeerProtocol
    );
    assert_eq!(HsError::IntroTimedOut.kind(), ErrorKind::Timeout);
    assert_eq!(HsError::BadAddress(String::new()).kind(), ErrorKind::Misuse);
    assert_eq!(HsError::Resource("x").kind(), ErrorKind::Resource);
    assert_eq!(HsError::Resource("x").socks5_reply(), 0x01);
}

/// The service's joined rendezvous circuits after `n` clients (isolation tokens) met it.
fn met_by(net: &mut Net, addr: &str, n: u64) -> Vec<HsCircRef> {
    for i in 0..n {
        net.connect(addr, i);
    }
    assert!(net.failed.is_empty(), "{:?}", net.failed);
    let mut v = net.host_rend_circs();
    v.sort();
    assert_eq!(v.len() as u64, n);
    v
}

fn offer(net: &mut Net, circ: HsCircRef, r: u64) -> IncomingDecision {
    let now = net.now;
    net.host.incoming_stream(circ, 80, IncomingRef(r), now)
}

#[test]
fn undecided_incoming_streams_are_bounded_per_circuit() {
    let mut net = Net::new(31);
    let (svc, addr) = net.publish(vec![]);
    let circ = met_by(&mut net, &addr, 1)[0];
    let n = host::DEFAULT_MAX_UNDECIDED_PER_CIRCUIT as u64;
    for r in 1..=n {
        assert_eq!(
            offer(&mut net, circ, r),
            IncomingDecision::Offer { service: svc }
        );
    }
    assert_eq!(net.host.undecided_streams(svc), n as usize);
    // One more on the same circuit is refused as C tor's edge refuses what it has no
    // resources for; the application is not asked.
    assert_eq!(
        offer(&mut net, circ, n + 1),
        IncomingDecision::Reject(EndReason::RESOURCELIMIT)
    );
    // A reference already waiting is not taken twice.
    assert_eq!(
        offer(&mut net, circ, 1),
        IncomingDecision::Reject(EndReason::RESOURCELIMIT)
    );
    // A decision makes room for one.
    net.host.incoming_decided(IncomingRef(5));
    assert_eq!(
        offer(&mut net, circ, n + 2),
        IncomingDecision::Offer { service: svc }
    );
    assert_eq!(
        offer(&mut net, circ, n + 3),
        IncomingDecision::Reject(EndReason::RESOURCELIMIT)
    );
    let st = net.host.service_stats(svc).unwrap();
    assert_eq!((st.streams_offered, st.streams_refused_full), (n + 1, 3));
    // Unknown references are ignored.
    net.host.incoming_decided(IncomingRef(10_000));
    assert_eq!(net.host.undecided_streams(svc), n as usize);
}

#[test]
fn undecided_incoming_streams_are_bounded_per_service() {
    let mut net = Net::new(32);
    let (svc, addr) = net.publish_with(|c| {
        c.max_undecided_per_circuit = 3;
        c.max_undecided = 4;
    });
    let circs = met_by(&mut net, &addr, 2);
    let (a, b) = (circs[0], circs[1]);
    let ok = IncomingDecision::Offer { service: svc };
    let full = IncomingDecision::Reject(EndReason::RESOURCELIMIT);
    assert_eq!(
        [1, 2, 3, 4].map(|r| offer(&mut net, a, r)),
        [ok, ok, ok, full]
    );
    // The other circuit has room of its own, but the service as a whole has one left.
    assert_eq!([5, 6].map(|r| offer(&mut net, b, r)), [ok, full]);
    net.host.incoming_decided(IncomingRef(2));
    assert_eq!([7, 8].map(|r| offer(&mut net, b, r)), [ok, full]);
    assert_eq!(net.host.undecided_streams(svc), 4);
    // Closing a rendezvous circuit takes its undecided streams with it.
    let (now, rng) = (net.now, &mut net.rng);
    net.host.handle_circuit_closed(a, "DESTROY", now, rng);
    assert_eq!(net.host.undecided_streams(svc), 2);
    assert_eq!(offer(&mut net, b, 9), ok);
}

#[test]
fn undecided_incoming_streams_time_out() {
    let mut net = Net::new(33);
    let (svc, addr) = net.publish(vec![]);
    let circ = met_by(&mut net, &addr, 1)[0];
    let t0 = net.now;
    let ok = IncomingDecision::Offer { service: svc };
    assert_eq!(offer(&mut net, circ, 1), ok);
    assert_eq!(offer(&mut net, circ, 2), ok);
    net.host.incoming_decided(IncomingRef(2));
    assert!(net
        .host
        .poll_timeout()
        .is_some_and(|t| t <= t0 + host::DEFAULT_UNDECIDED_TIMEOUT));
    net.advance(Duration::from_secs(5));
    assert_eq!(offer(&mut net, circ, 3), ok);
    net.advance(Duration::from_secs(4));
    assert!(net.timed_out.is_empty(), "not before the timeout");
    // 10 s after the offer: stream 1 times out (stream 2 was decided).
    net.advance(Duration::from_secs(1));
    assert_eq!(net.timed_out, [IncomingRef(1)]);
    assert_eq!(net.host.undecided_streams(svc), 1);
    net.advance(Duration::from_secs(5));
    assert_eq!(net.timed_out, [IncomingRef(1), IncomingRef(3)]);
    assert_eq!(net.host.undecided_streams(svc), 0);
    assert_eq!(net.host.service_stats(svc).unwrap().streams_timed_out, 2);
    // Reported once: nothing more later.
    net.advance(Duration::from_secs(60));
    assert_eq!(net.timed_out.len(), 2);
}

/// Close the host's introduction circuit `circ` as a DESTROY from the network would.
fn kill_host_circuit(net: &mut Net, circ: HsCircRef) {
    net.circs.remove(&(Side::Host, circ));
    for r in net.relays.values_mut() {
        r.intro.circuit_closed((Side::Host, circ));
    }
    let (now, rng) = (net.now, &mut net.rng);
    net.host.handle_circuit_closed(circ, "DESTROY", now, rng);
    net.pump();
}

/// The host's open introduction circuits and their relays.
fn intro_circuits(net: &Net) -> Vec<(HsCircRef, [u8; 20])> {
    let mut v: Vec<(HsCircRef, [u8; 20])> = net
        .circs
        .iter()
        .filter(|((s, _), c)| *s == Side::Host && c.purpose == HsPurpose::ServiceIntro)
        .map(|((_, r), c)| (*r, c.last.rsa_id.0))
        .collect();
    v.sort();
    v
}

/// rend-spec-v3 §3.1, §2.2.2: an introduction circuit that dies is built again to the same
/// relay and established anew (the point and its keys are the same, so the descriptor
/// still holds and nothing is uploaded); a relay that keeps failing is replaced by another,
/// and a new descriptor naming it is uploaded to the HSDirs, which clients then introduce
/// through.
#[test]
fn a_dead_intro_point_is_reestablished_then_replaced_and_republished() {
    let mut net = Net::new(34);
    let (svc, addr) = net.publish(vec![]);
    let uploads = |net: &Net| net.host.service_stats(svc).unwrap().uploads_ok;
    let before = uploads(&net);
    let intros = intro_circuits(&net);
    assert_eq!(intros.len(), 3);
    let (circ, dead) = intros[0];

    kill_host_circuit(&mut net, circ);
    assert_eq!(intro_circuits(&net).len(), 2);
    net.advance(Duration::from_secs(5));
    let now: Vec<[u8; 20]> = intro_circuits(&net).iter().map(|c| c.1).collect();
    assert_eq!(now.len(), 3, "re-established");
    assert!(now.contains(&dead), "to the same relay");
    net.advance(Duration::from_secs(120));
    assert_eq!(uploads(&net), before, "the descriptor still holds");

    // Its circuit dies again and the rebuilds fail: after 3 failures in a row the point is
    // replaced by another relay.
    net.fail_builds.insert(HsPurpose::ServiceIntro, 2);
    let circ = intro_circuits(&net)
        .into_iter()
        .find(|c| c.1 == dead)
        .unwrap()
        .0;
    kill_host_circuit(&mut net, circ);
    for _ in 0..12 {
        net.advance(Duration::from_secs(5));
    }
    let now: Vec<[u8; 20]> = intro_circuits(&net).iter().map(|c| c.1).collect();
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(!now.contains(&dead), "replaced");
    assert!(
        uploads(&net) >= before + 8,
        "republished: {} -> {}",
        before,
        uploads(&net)
    );
    // A client that fetches the descriptor now introduces through a live point.
    net.connect(&addr, 0);
    assert!(net.failed.is_empty(), "{:?}", net.failed);
    let intro = net
        .builds
        .iter()
        .rev()
        .find(|b| b.0 == Side::Client && b.1 == HsPurpose::ClientIntro)
        .unwrap();
    assert!(now.contains(&intro.2));
    assert_eq!(net.ready.len(), 1);
}

/// A message body as onion-cell decodes it on arrival, unwrapped to the variant's content.
fn decoded<'a, T: FromRelayMsg<'a>>(cmd: RelayCmd, body: &'a [u8]) -> T {
    T::from_msg(RelayMsg::decode(cmd, body).unwrap()).expect("the expected message")
}

/// The body the network carries for `m`.
fn wire(m: &RelayMsg<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode_body(&mut v).unwrap();
    v
}

/// The content of one onion-service `RelayMsg` variant.
trait FromRelayMsg<'a>: Sized {
    fn from_msg(m: RelayMsg<'a>) -> Option<Self>;
}

impl<'a> FromRelayMsg<'a> for onion_cell::hs::EstablishIntro<'a> {
    fn from_msg(m: RelayMsg<'a>) -> Option<Self> {
        match m {
            RelayMsg::EstablishIntro(x) => Some(x),
            _ => None,
        }
    }
}

impl<'a> FromRelayMsg<'a> for onion_cell::hs::EstablishRendezvous {
    fn from_msg(m: RelayMsg<'a>) -> Option<Self> {
        match m {
            RelayMsg::EstablishRendezvous(x) => Some(x),
            _ => None,
        }
    }
}

impl<'a> FromRelayMsg<'a> for onion_cell::hs::Introduce<'a> {
    fn from_msg(m: RelayMsg<'a>) -> Option<Self> {
        match m {
            RelayMsg::Introduce1(x) | RelayMsg::Introduce2(x) => Some(x),
            _ => None,
        }
    }
}

impl<'a> FromRelayMsg<'a> for onion_cell::hs::Rendezvous1<'a> {
    fn from_msg(m: RelayMsg<'a>) -> Option<Self> {
        match m {
            RelayMsg::Rendezvous1(x) => Some(x),
            _ => None,
        }
    }
}
