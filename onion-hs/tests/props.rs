//! Property tests: parsers never panic on arbitrary or mutated input, every encodable message
//! round-trips, and the hash ring behaves as specified.

use onion_hs::cert::Ed25519Cert;
use onion_hs::desc::{self, FirstLayer, OuterDescriptor, SecondLayer};
use onion_hs::keys::{ExpandedKeypair, HsIdKey, Subcredential};
use onion_hs::linkspec::{self, RawLinkSpec};
use onion_hs::msg::{
    DosParams, EstablishIntro, Extension, Introduce, IntroducePlaintext, Rendezvous1,
};
use onion_hs::ntor;
use onion_hs::ring::{HashRing, HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::time::{TimePeriod, TimePeriodConfig};
use onion_hs::OnionAddress;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

const NOW: u64 = 1_795_418_409;

fn real_desc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/hs-descriptor.client-fetched"
    ))
    .unwrap()
}

fn real_id() -> HsIdKey {
    HsIdKey::from_tor_file(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/hs.hs_ed25519_public_key"
        ))
        .unwrap(),
    )
    .unwrap()
}

fn arb_linkspec() -> impl Strategy<Value = RawLinkSpec> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| RawLinkSpec::ipv4(std::net::SocketAddrV4::new(ip.into(), p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| RawLinkSpec::ipv6(std::net::SocketAddrV6::new(ip.into(), p, 0, 0))),
        any::<[u8; 20]>().prop_map(|id| RawLinkSpec::rsa_id(onion_crypto::RsaIdentity(id))),
        any::<[u8; 32]>().prop_map(RawLinkSpec::ed25519_id),
        (4u8.., proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(ty, body)| RawLinkSpec { ty, body }),
    ]
}

fn arb_ext() -> impl Strategy<Value = Extension> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..30))
        .prop_map(|(ty, body)| Extension { ty, body })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = String::from_utf8_lossy(&b);
        let _ = OnionAddress::parse(&s);
        let _ = OuterDescriptor::parse(&s);
        let _ = FirstLayer::parse(&s);
        let _ = SecondLayer::parse(&s);
        let _ = Ed25519Cert::parse(&b);
        let _ = linkspec::parse_list(&b);
        let _ = EstablishIntro::parse(&b);
        let _ = Introduce::parse(&b);
        let _ = IntroducePlaintext::parse(&b);
        let _ = Rendezvous1::parse(&b);
        let _ = DosParams::from_extension_body(&b);
        let _ = onion_hs::keyfile::parse_client_auth_key(&s);
        let _ = onion_hs::keyfile::parse_authorized_client(&s);
        let _ = HsIdKey::from_tor_file(&b);
        if let Ok(i) = Introduce::parse(&b) {
            let _ = i.decrypt(&StaticSecret::from([1u8; 32]), &Subcredential([0; 32]));
        }
    }

    #[test]
    fn netdoc_like_text_never_panics(lines in proptest::collection::vec(
        prop_oneof![
            Just("hs-descriptor 3".to_string()),
            Just("descriptor-lifetime 180".to_string()),
            Just("revision-counter 1".to_string()),
            Just("signature AAAA".to_string()),
            Just("superencrypted".to_string()),
            Just("introduction-point AwAGfwAAAZpD".to_string()),
            Just("onion-key ntor Zzfi61WTsoYWj58LUYXTzRlTPrX+Lut96XYRiOqwLkE=".to_string()),
            Just("create2-formats 2".to_string()),
            Just("-----BEGIN MESSAGE-----".to_string()),
            Just("-----END MESSAGE-----".to_string()),
            Just("-----BEGIN ED25519 CERT-----".to_string()),
            Just("-----END ED25519 CERT-----".to_string()),
            "[A-Za-z0-9+/=]{0,70}",
            "[ -~]{0,40}",
        ], 0..30)) {
        let s = lines.join("\n");
        let _ = OuterDescriptor::parse(&s);
        let _ = FirstLayer::parse(&s);
        let _ = SecondLayer::parse(&s);
    }

    /// Whatever second layer parses, its encoding parses back to the same value: lines kept
    /// verbatim stay verbatim, whatever their separators or `opt ` prefixes.
    #[test]
    fn second_layer_encoding_reparses_equal(lines in proptest::collection::vec(
        prop_oneof![
            Just("create2-formats 2".to_string()),
            Just("opt opt flow-control 1-2 31".to_string()),
            Just("opt\tpow-params v1 AAAA 0 1900000000".to_string()),
            Just("single-onion-service".to_string()),
            Just("intro-auth-required ed25519".to_string()),
            Just("".to_string()),
            "[a-z][a-z0-9-]{0,12}([ \t][ -~]{0,20})?",
        ], 0..12)) {
        let s = lines.join("\n");
        if let Ok(layer) = SecondLayer::parse(&s) {
            let encoded = layer.encode().unwrap();
            prop_assert_eq!(SecondLayer::parse(&encoded), Ok(layer));
        }
    }

    #[test]
    fn mutated_real_descriptor_never_panics(pos in 0usize..14108, byte in any::<u8>(), cut in any::<bool>()) {
        let mut b = real_desc().into_bytes();
        if cut { b.truncate(pos); } else if let Some(x) = b.get_mut(pos) { *x = byte; }
        let s = String::from_utf8_lossy(&b);
        let _ = desc::decode(&s, &real_id(), None, None, onion_dir::Timestamp::from_unix(NOW));
    }

    #[test]
    fn client_auth_key_files_round_trip(secret in any::<[u8; 32]>(), key in any::<[u8; 32]>(), upper in any::<bool>()) {
        // C tor's `.auth` (service side) and `.auth_private` (client side) formats.
        let b32 = |b: &[u8]| {
            let t = data_encoding::BASE32_NOPAD.encode(b);
            if upper { t } else { t.to_ascii_lowercase() }
        };
        let sk = StaticSecret::from(secret);
        let pk = XPublic::from(&sk);
        let parsed = onion_hs::keyfile::parse_authorized_client(&format!("descriptor:x25519:{}\n", b32(pk.as_bytes()))).unwrap();
        prop_assert_eq!(parsed.as_bytes(), pk.as_bytes());
        let addr = OnionAddress::from_public_key(key);
        let text = format!("{}:descriptor:x25519:{}", addr.to_string().trim_end_matches(".onion"), b32(&secret));
        let (back, for_addr) = onion_hs::keyfile::parse_client_auth_key(&text).unwrap();
        prop_assert_eq!(back.to_bytes(), secret);
        prop_assert_eq!(for_addr, Some(addr));
    }

    #[test]
    fn linkspec_round_trip(v in proptest::collection::vec(arb_linkspec(), 0..8)) {
        let mut out = Vec::new();
        linkspec::encode_list(&v, &mut out).unwrap();
        prop_assert_eq!(linkspec::parse_list(&out).unwrap(), v);
    }

    #[test]
    fn address_round_trip(key in any::<[u8; 32]>()) {
        let a = OnionAddress::from_public_key(key);
        prop_assert_eq!(OnionAddress::parse(&a.to_string()).unwrap(), a);
        prop_assert_eq!(OnionAddress::parse(&a.encode()).unwrap(), a);
    }

    #[test]
    fn messages_round_trip(cookie in any::<[u8; 20]>(), exts in proptest::collection::vec(arb_ext(), 0..4),
                           key in any::<[u8; 32]>(), ls in proptest::collection::vec(arb_linkspec(), 0..5),
                           info in any::<[u8; 64]>()) {
        let pt = IntroducePlaintext {
            rend_cookie: cookie,
            extensions: exts,
            onion_key_type: 1,
            onion_key: key.to_vec(),
            link_specifiers: ls,
        };
        let mut enc = pt.encode().unwrap();
        prop_assert_eq!(&IntroducePlaintext::parse(&enc).unwrap(), &pt);
        enc.extend_from_slice(&[0u8; 17]); // padding is ignored
        prop_assert_eq!(&IntroducePlaintext::parse(&enc).unwrap(), &pt);
        // INTRODUCE_ACK and INTRO_ESTABLISHED are onion-cell's alone (onion-cell's own
        // round-trip properties cover them).
        let r1 = Rendezvous1 { rend_cookie: cookie, handshake_info: info };
        let mut b = Vec::new();
        r1.to_cell().encode(&mut b).unwrap();
        prop_assert_eq!(Rendezvous1::parse(&b).unwrap(), r1);
    }

    #[test]
    fn introduce_round_trip(seed in any::<u64>(), cookie in any::<[u8; 20]>(),
                            ls in proptest::collection::vec(arb_linkspec(), 1..5),
                            exts in proptest::collection::vec(arb_ext(), 0..3)) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let auth = ExpandedKeypair::generate(&mut rng);
        let b = StaticSecret::random_from_rng(&mut rng);
        let subcred = Subcredential([7; 32]);
        let pt = IntroducePlaintext {
            rend_cookie: cookie, extensions: vec![], onion_key_type: 1,
            onion_key: vec![9; 32], link_specifiers: ls,
        };
        let (intro1, client) = Introduce::build_client(
            &mut rng, auth.public_bytes(), &XPublic::from(&b).to_bytes(), &subcred, &exts, &pt).unwrap();
        let mut body = Vec::new();
        intro1.encode(&mut body).unwrap();
        let intro = Introduce::parse(&body).unwrap();
        prop_assert_eq!(&intro.extensions, &exts);
        prop_assert_eq!(&intro.decrypt(&b, &subcred).unwrap(), &pt);
        prop_assert!(intro.decrypt(&b, &Subcredential([8; 32])).is_err());
        let (info, skeys) = ntor::service_finish(&mut rng, &b, auth.public_bytes(), &intro.client_pk).unwrap();
        let ckeys = client.finish(&info).unwrap();
        prop_assert_eq!(ckeys.to_bytes(), skeys.to_bytes());
    }

    #[test]
    fn establish_intro_round_trip(seed in any::<u64>(), kh in proptest::collection::vec(any::<u8>(), 20..21),
                                  rate in proptest::option::of(0u64..0x8000_0000), burst in proptest::option::of(0u64..0x8000_0000)) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let auth = ExpandedKeypair::generate(&mut rng);
        let dos = DosParams { rate_per_sec: rate, burst_per_sec: burst };
        let (msg, cell) = EstablishIntro::build(&auth, vec![dos.to_extension()], &kh).unwrap();
        let mut body = Vec::new();
        cell.encode(&mut body).unwrap();
        let parsed = EstablishIntro::parse(&body).unwrap();
        prop_assert_eq!(&parsed, &msg);
        parsed.verify(&kh).unwrap();
        prop_assert_eq!(parsed.dos_params().unwrap().unwrap(), dos);
        let mut wrong = kh.clone();
        wrong[0] ^= 1;
        prop_assert!(parsed.verify(&wrong).is_err());
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        let t = EstablishIntro::parse(&tampered).unwrap();
        prop_assert!(t.verify(&kh).is_err());
    }

    #[test]
    fn hash_ring_properties(n in 1usize..40, seed in any::<u64>(), replicas in 1u8..4, spread in 1u8..6) {
        use rand_chacha::rand_core::RngCore;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let relays: Vec<HsDirRelay> = (0..n).map(|i| {
            let mut ed = [0u8; 32];
            rng.fill_bytes(&mut ed);
            HsDirRelay { ed25519_id: ed, rsa_id: onion_crypto::RsaIdentity([i as u8; 20]), is_hsdir: i % 5 != 4 }
        }).collect();
        let period = TimePeriod::new(1000, 1440, 720);
        let ring = HashRing::new(&relays, &[3; 32], period);
        let id = ExpandedKeypair::generate(&mut rng).id_key();
        let got = ring.responsible(&id.blind(period), replicas, spread);
        let hsdirs = relays.iter().filter(|r| r.is_hsdir).count();
        prop_assert_eq!(got.len(), hsdirs.min(usize::from(replicas) * usize::from(spread)));
        let mut dedup = got.clone();
        dedup.sort_unstable();
        dedup.dedup();
        prop_assert_eq!(dedup.len(), got.len());
        prop_assert!(got.iter().all(|&i| relays[i].is_hsdir));
        // The first replica's first choice is the relay right after hs_index(1).
        if !ring.is_empty() {
            let idx = onion_hs::ring::hs_index(&id.blind(period), 1, period);
            let mut pos: Vec<([u8; 32], usize)> = relays.iter().enumerate().filter(|(_, r)| r.is_hsdir)
                .map(|(i, r)| (onion_hs::ring::hsdir_index(&r.ed25519_id, &[3; 32], period), i)).collect();
            pos.sort();
            let first = pos.iter().find(|p| p.0 > idx).unwrap_or(&pos[0]).1;
            prop_assert_eq!(got[0], first);
        }
    }
}

#[test]
fn hsdir_params_from_consensus() {
    let p = HsDirParams::from_consensus(|k| match k {
        "hsdir_n_replicas" => Some(3),
        "hsdir_spread_fetch" => Some(0),
        "hsdir_spread_store" => Some(200),
        _ => None,
    });
    assert_eq!(p.n_replicas, 3);
    assert_eq!(p.spread_fetch, 3);
    assert_eq!(p.spread_store, 4);
}

#[test]
fn srv_selection_follows_spec_diagram() {
    // Public network: 1 h voting, 1440-minute periods, SRV at 00:00, TP at 12:00.
    let cfg = TimePeriodConfig::from_consensus(None, 3600).unwrap();
    let day = 1_460_505_600u64; // 2016-04-13 00:00 UTC
    let at = |secs: u64| onion_dir::Timestamp::from_unix(day + secs);
    let sr = SharedRandom {
        current: Some([2; 32]),
        previous: Some([1; 32]),
    };
    // 13:00: between TP and SRV: current SRV, current TP.
    let c1 = sr.client_fetch(&cfg, at(13 * 3600));
    assert!(cfg.between_tp_and_srv(at(13 * 3600)));
    assert_eq!(c1.srv, [2; 32]);
    assert_eq!(c1.period, cfg.period_at(at(13 * 3600)));
    // 01:00: between SRV and TP: previous SRV, and still the period that began yesterday 12:00.
    let c2 = sr.client_fetch(&cfg, at(3600));
    assert!(!cfg.between_tp_and_srv(at(3600)));
    assert_eq!(c2.srv, [1; 32]);
    assert_eq!(c2.period.start().unix(), day - 12 * 3600);
    // Service at 01:00 uploads (TP#1, SRV#1) and (TP#2, SRV#2).
    let [first, second] = sr.service_upload(&cfg, at(3600));
    assert_eq!((first.period, first.srv), (c2.period, [1; 32]));
    assert_eq!((second.period, second.srv), (c2.period.next(), [2; 32]));
    // Service at 13:00 uploads (TP#0, SRV#0) and (TP#1, SRV#1).
    let [first, second] = sr.service_upload(&cfg, at(13 * 3600));
    assert_eq!((first.period, first.srv), (c1.period.prev(), [1; 32]));
    assert_eq!((second.period, second.srv), (c1.period, [2; 32]));
    // Without SRVs, the disaster value of the wanted period is used.
    let none = SharedRandom::default();
    let d = none.client_fetch(&cfg, at(13 * 3600));
    assert_eq!(d.srv, onion_hs::ring::disaster_srv(d.period));
    // Test network: 20 s voting.
    let t = TimePeriodConfig::testing_network(20).unwrap();
    assert!(!t.between_tp_and_srv(onion_dir::Timestamp::from_unix(NOW - 9))); // 07:20:00 is an SRV boundary, TP at 07:24
    assert!(TimePeriodConfig::from_consensus(Some(10), 3600).is_err());
    assert_eq!(
        TimePeriodConfig::from_consensus(Some(60), 3600)
            .unwrap()
            .length_minutes(),
        60
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The client and service machines and the relay roles never panic on arbitrary bodies,
    /// in any order.
    #[test]
    fn machines_never_panic(seed in any::<u64>(), inputs in proptest::collection::vec(
        (0u8..7, proptest::collection::vec(any::<u8>(), 0..300)), 0..12)) {
        use onion_cell::hs::{IntroduceAck, Rendezvous2};
        use onion_hs::client::{Described, HsClient, Introduction, RendPending, RendReady};
        use onion_hs::relay::{IntroPoint, RendPoint};
        use onion_hs::service::{HsService, HsServiceConfig};
        enum Stage {
            Lookup,
            Described(Described),
            Pending(RendPending),
            Ready(RendReady, Option<Introduction>),
        }
        let now = onion_dir::Timestamp::from_unix(NOW);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut service = HsService::new(ExpandedKeypair::generate(&mut rng), HsServiceConfig::default());
        let ip = service.add_intro_point(vec![RawLinkSpec::rsa_id(onion_crypto::RsaIdentity([1; 20]))], [2; 32], &mut rng);
        service.handle_intro_established(ip).unwrap();
        let period = TimePeriod::new(3_740_454, 8, 4);
        let text = service.build_descriptor(now, period, &mut rng).unwrap();
        let client = HsClient::new(service.address()).unwrap();
        let mut stage = Stage::Lookup;
        let mut intro: IntroPoint<u8> = IntroPoint::default();
        let mut rend: RendPoint<u8> = RendPoint::default();
        for (kind, body) in inputs {
            match kind {
                0 => {
                    if let Ok(m) = onion_cell::hs::Introduce::decode(&body) {
                        let _ = service.handle_introduce2(ip, &m, &mut rng);
                    }
                }
                1 => {
                    if let (Stage::Ready(_, Some(i)), Ok(ack)) = (&stage, IntroduceAck::decode(&body)) {
                        let _ = i.handle_introduce_ack(&ack);
                    }
                }
                2 => {
                    if let (Stage::Ready(_, i), Ok(m)) = (&mut stage, Rendezvous2::decode(&body)) {
                        if let Some(i) = i.take() {
                            let _ = i.handle_rendezvous2(&m);
                        }
                    }
                }
                3 => {
                    if let Ok(m) = onion_cell::hs::EstablishIntro::decode(&body) {
                        let _ = intro.handle_establish_intro(1, onion_crypto::Instant::ZERO, &[0; 20], &m);
                    }
                    if let Ok(m) = onion_cell::hs::Introduce::decode(&body) {
                        let _ = intro.handle_introduce1(onion_crypto::Instant::ZERO, &m);
                    }
                }
                4 => {
                    if let Ok(m) = onion_cell::hs::EstablishRendezvous::decode(&body) {
                        let _ = rend.handle_establish_rendezvous(2, &m);
                    }
                    if let Ok(m) = onion_cell::hs::Rendezvous1::decode(&body) {
                        let _ = rend.handle_rendezvous1(3, &m);
                    }
                }
                5 => {
                    stage = match std::mem::replace(&mut stage, Stage::Lookup) {
                        Stage::Lookup => match client.handle_descriptor(now, &text, period, None) {
                            Ok(d) => Stage::Described(d),
                            Err(_) => Stage::Lookup,
                        },
                        Stage::Described(d) => Stage::Pending(d.establish_rendezvous(&mut rng).0),
                        Stage::Pending(p) => Stage::Ready(p.handle_rendezvous_established(), None),
                        s => s,
                    };
                }
                _ => {
                    if let Stage::Ready(r, i) = &mut stage {
                        if let Ok((n, _)) = r.introduce(&mut rng, body.len() % 3, &[3; 32], vec![]) {
                            *i = Some(n);
                        }
                    }
                }
            }
        }
    }
}
