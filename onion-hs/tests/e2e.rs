//! An in-memory onion-service network at message level: HSDirs chosen by the hash ring, an
//! introduction point and a rendezvous point (relay roles), a service and a client. The client
//! fetches the descriptor, rendezvouses, introduces itself, and both ends then talk through the
//! virtual hop (AES-256/SHA3-256 tor1 layers from onion-crypto).

use std::collections::HashMap;

use onion_crypto::tor1::{CellBody, ClientLayer};
use onion_crypto::RsaIdentity;
use onion_dir::Timestamp;
use onion_hs::client::{ClientError, HsClient};
use onion_hs::desc::ClientAuthConfig;
use onion_hs::keys::ExpandedKeypair;
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::relay::{IntroPoint, RendPoint};
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::service::{HsService, HsServiceConfig, ServiceError};
use onion_hs::time::TimePeriodConfig;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

const VALID_AFTER: Timestamp = Timestamp::from_unix(1_795_418_400); // 2026-11-23 07:20:00, a test-network consensus
type Circ = u32;

struct Relay {
    hs: HsDirRelay,
    onion_key: [u8; 32],
    link_specs: Vec<RawLinkSpec>,
}

fn relays(rng: &mut ChaCha20Rng, n: usize) -> Vec<Relay> {
    (0..n)
        .map(|i| {
            let mut ed = [0u8; 32];
            let mut rsa = [0u8; 20];
            let mut onion = [0u8; 32];
            rng.fill_bytes(&mut ed);
            rng.fill_bytes(&mut rsa);
            rng.fill_bytes(&mut onion);
            Relay {
                hs: HsDirRelay {
                    ed25519_id: ed,
                    rsa_id: RsaIdentity(rsa),
                    is_hsdir: true,
                },
                onion_key: onion,
                link_specs: vec![
                    RawLinkSpec::ipv4(std::net::SocketAddrV4::new(
                        [127, 0, 0, 1].into(),
                        5000 + i as u16,
                    )),
                    RawLinkSpec::rsa_id(RsaIdentity(rsa)),
                    RawLinkSpec::ed25519_id(ed),
                ],
            }
        })
        .collect()
}

fn run(client_auth: bool, seed: u64) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let net = relays(&mut rng, 12);
    let ring_relays: Vec<HsDirRelay> = net.iter().map(|r| r.hs).collect();
    let cfg = TimePeriodConfig::testing_network(20).unwrap();
    let params = HsDirParams::default();
    let sr = SharedRandom {
        current: Some([0xcc; 32]),
        previous: Some([0xbb; 32]),
    };
    let now = VALID_AFTER.add_secs(9);
    let client_secret = StaticSecret::from([0x42; 32]);

    // Service: three intro points on relays 0..3.
    let mut scfg = HsServiceConfig::default();
    if client_auth {
        scfg.client_auth = Some(ClientAuthConfig {
            clients: vec![XPublic::from(&client_secret)],
        });
    }
    let mut service = HsService::new(ExpandedKeypair::generate(&mut rng), scfg);
    let mut intro_relays: HashMap<usize, IntroPoint<Circ>> = HashMap::new();
    let mut svc_circ_of_ip = HashMap::new();
    for (r, relay) in net.iter().enumerate().take(3) {
        let ip = service.add_intro_point(relay.link_specs.clone(), relay.onion_key, &mut rng);
        let circ: Circ = 100 + r as u32;
        let mut kh = [0u8; 20];
        rng.fill_bytes(&mut kh);
        let body = service.establish_intro(ip, &kh).unwrap();
        let role = intro_relays.entry(r).or_default();
        // Wrong KH: refused.
        assert!(role
            .handle_establish_intro(circ, onion_crypto::Instant::ZERO, &[0u8; 20], &body)
            .is_err());
        role.handle_establish_intro(circ, onion_crypto::Instant::ZERO, &kh, &body)
            .unwrap();
        service.handle_intro_established(ip).unwrap();
        svc_circ_of_ip.insert(circ, ip);
    }

    // Upload both descriptors to their HSDirs.
    let mut hsdir_store: HashMap<usize, HashMap<[u8; 32], String>> = HashMap::new();
    for slot in sr.service_upload(&cfg, VALID_AFTER) {
        let text = service
            .build_descriptor(now, slot.period, &mut rng)
            .unwrap();
        let blinded = *service_blinded(&service, slot.period).as_bytes();
        let dirs = service.hsdirs_to_upload(&ring_relays, &slot, &params);
        assert_eq!(dirs.len(), 8);
        for d in dirs {
            hsdir_store
                .entry(d)
                .or_default()
                .insert(blinded, text.clone());
        }
    }

    // Client: fetch from the responsible HSDirs.
    let client = HsClient::new(service.address()).unwrap();
    let sel = sr.client_fetch(&cfg, VALID_AFTER);
    let want = *client.blinded_key(sel.period).as_bytes();
    assert!(client.fetch_path(sel.period).starts_with("/tor/hs/3/"));
    assert_eq!(client.fetch_path(sel.period).len(), "/tor/hs/3/".len() + 44);
    let dirs = client.hsdirs_to_fetch(&ring_relays, &sel, &params);
    assert_eq!(dirs.len(), 6);
    let mut fetched = None;
    for d in dirs {
        if let Some(text) = hsdir_store.get(&d).and_then(|m| m.get(&want)) {
            let key = client_auth.then_some(&client_secret);
            if client_auth {
                // Without the key the client is told it needs one.
                let probe = HsClient::new(service.address()).unwrap();
                assert!(matches!(
                    probe.handle_descriptor(now, text, sel.period, None),
                    Err(ClientError::Desc(
                        onion_hs::desc::DescError::ClientAuthRequired
                    ))
                ));
            }
            fetched = Some(
                client
                    .handle_descriptor(now, text, sel.period, key)
                    .unwrap(),
            );
            break;
        }
    }
    let described = fetched.expect("client found the descriptor on a responsible HSDir");
    assert_eq!(described.descriptor().second_layer.intro_points.len(), 3);

    // Rendezvous point: relay 7.
    let mut rend: RendPoint<Circ> = RendPoint::default();
    let client_rend_circ: Circ = 7;
    let (pending, est) = described.establish_rendezvous(&mut rng);
    rend.handle_establish_rendezvous(client_rend_circ, &est)
        .unwrap();
    let ready = pending.handle_rendezvous_established();

    // Introduce through the first intro point.
    let (intro, intro1) = ready
        .introduce(&mut rng, 0, &net[7].onion_key, net[7].link_specs.clone())
        .unwrap();
    let ip_desc = &ready.service().intro_points()[intro.intro_point()];
    let ip_relay = net
        .iter()
        .position(|r| r.link_specs == ip_desc.link_specifiers)
        .unwrap();
    let routing = intro_relays
        .get_mut(&ip_relay)
        .unwrap()
        .handle_introduce1(onion_crypto::Instant::ZERO, &intro1);
    intro.handle_introduce_ack(&routing.ack).unwrap();
    let (svc_circ, intro2) = routing.to_service.unwrap();
    let ip_index = svc_circ_of_ip[&svc_circ];
    let req = service
        .handle_introduce2(ip_index, &intro2, &mut rng)
        .unwrap();
    // The service learns the rendezvous point the client chose, nothing else.
    assert_eq!(req.link_specifiers, net[7].link_specs);
    assert_eq!(req.onion_key, net[7].onion_key);
    // A replayed INTRODUCE2 is dropped.
    assert!(matches!(
        service.handle_introduce2(ip_index, &intro2, &mut rng),
        Err(ServiceError::Replay)
    ));

    // The service joins the rendezvous point.
    let joined = rend.handle_rendezvous1(900, &req.rendezvous1).unwrap();
    assert_eq!(joined.client, client_rend_circ);
    let ckeys = intro.handle_rendezvous2(&joined.rendezvous2).unwrap();

    // End to end through the virtual hop.
    let mut c_layer = ckeys.client_layer().unwrap();
    let mut s_layer = req.keys.service_layer().unwrap();
    let mut cell: CellBody = [0u8; 509];
    cell[0] = 1; // BEGIN
    cell[11..19].copy_from_slice(b":80\0\0\0\0\0");
    c_layer.originate(&mut cell);
    assert!(s_layer.decrypt(&mut cell));
    assert_eq!(&cell[11..14], b":80");
    let page = b"HTTP/1.0 200 OK\r\n\r\nhello from the onion service";
    let mut reply: CellBody = [0u8; 509];
    reply[0] = 2; // DATA
    reply[11..11 + page.len()].copy_from_slice(page);
    s_layer.originate(&mut reply);
    assert!(c_layer.decrypt(&mut reply));
    assert_eq!(&reply[11..11 + page.len()], page);
}

fn service_blinded(s: &HsService, p: onion_hs::TimePeriod) -> onion_hs::HsBlindedKey {
    onion_hs::OnionAddress::parse(&s.address().to_string())
        .unwrap()
        .identity_key()
        .unwrap()
        .blind(p)
}

#[test]
fn client_reaches_service_end_to_end() {
    run(false, 1);
}

#[test]
fn client_reaches_service_with_client_authorization() {
    run(true, 2);
}

#[test]
fn refused_introduction_is_reported_and_next_point_tried() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut service = HsService::new(
        ExpandedKeypair::generate(&mut rng),
        HsServiceConfig::default(),
    );
    for _ in 0..2 {
        let ip = service.add_intro_point(
            vec![RawLinkSpec::rsa_id(RsaIdentity([1; 20]))],
            [2; 32],
            &mut rng,
        );
        service.handle_intro_established(ip).unwrap();
    }
    let period = TimePeriodConfig::testing_network(20)
        .unwrap()
        .period_at(VALID_AFTER);
    let text = service
        .build_descriptor(VALID_AFTER, period, &mut rng)
        .unwrap();
    let client = HsClient::new(service.address()).unwrap();
    let described = client
        .handle_descriptor(VALID_AFTER, &text, period, None)
        .unwrap();
    // The lookup stage stays usable (another HSDir's copy decodes the same).
    assert!(client
        .handle_descriptor(VALID_AFTER, &text, period, None)
        .is_ok());
    let (pending, _) = described.establish_rendezvous(&mut rng);
    let ready = pending.handle_rendezvous_established();
    let (first, body) = ready.introduce(&mut rng, 0, &[3; 32], vec![]).unwrap();
    assert_eq!(first.intro_point(), 0);
    // An intro point that does not know the service.
    let mut empty: IntroPoint<Circ> = IntroPoint::default();
    let routing = empty.handle_introduce1(onion_crypto::Instant::ZERO, &body);
    assert!(routing.to_service.is_none());
    assert_eq!(
        first.handle_introduce_ack(&routing.ack),
        Err(ClientError::IntroduceRefused(
            onion_cell::hs::IntroduceAckStatus::UNKNOWN_SERVICE
        ))
    );
    // A status rend-spec-v3 §3.2.2 does not define is a refusal too, its value kept.
    let odd = onion_cell::hs::IntroduceAck::decode(&[0x12, 0x34, 0]).unwrap();
    let refused = first.handle_introduce_ack(&odd).unwrap_err();
    assert_eq!(
        refused,
        ClientError::IntroduceRefused(onion_cell::hs::IntroduceAckStatus(0x1234))
    );
    assert_eq!(
        refused.to_string(),
        "introduction point refused: unknown status (4660)"
    );
    // The second intro point, then one the descriptor does not list.
    let (second, _) = ready.introduce(&mut rng, 1, &[3; 32], vec![]).unwrap();
    assert_eq!(second.intro_point(), 1);
    assert_eq!(
        ready.introduce(&mut rng, 2, &[3; 32], vec![]).err(),
        Some(ClientError::NoSuchIntroPoint(2))
    );
}
