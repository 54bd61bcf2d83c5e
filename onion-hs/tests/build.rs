//! Descriptors we build: round trip through our parser, client authorization on and off, clear
//! failures, and decryption by stem (an independent implementation) when it is installed.

use onion_dir::Timestamp;
use onion_hs::desc::{self, BuildIntroPoint, ClientAuthConfig, DescError, DescriptorBuilder};
use onion_hs::keys::ExpandedKeypair;
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::time::TimePeriod;
use proptest::prelude::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

const NOW: u64 = 1_795_418_409;
const EXPIRY_HOURS: u32 = (NOW / 3600) as u32 + 24 * 365;

fn intro_point(rng: &mut ChaCha20Rng, port: u16) -> BuildIntroPoint {
    let mut rsa = [0u8; 20];
    rng.fill_bytes(&mut rsa);
    let mut ed = [0u8; 32];
    rng.fill_bytes(&mut ed);
    let mut onion = [0u8; 32];
    rng.fill_bytes(&mut onion);
    let auth = ExpandedKeypair::generate(rng);
    let enc = StaticSecret::random_from_rng(&mut *rng);
    BuildIntroPoint {
        link_specifiers: vec![
            RawLinkSpec::ipv4(std::net::SocketAddrV4::new([127, 0, 0, 1].into(), port)),
            RawLinkSpec::rsa_id(onion_crypto::RsaIdentity(rsa)),
            RawLinkSpec::ed25519_id(ed),
        ],
        onion_key_ntor: onion,
        auth_key: *auth.public_bytes(),
        enc_key_ntor: XPublic::from(&enc).to_bytes(),
    }
}

struct Built {
    id: ExpandedKeypair,
    period: TimePeriod,
    text: String,
    ips: Vec<BuildIntroPoint>,
    revision: u64,
}

fn build(seed: u64, n_ips: usize, revision: u64, clients: &[XPublic]) -> Built {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let id = ExpandedKeypair::generate(&mut rng);
    let period = TimePeriod::new(3_740_454 + seed % 7, 8, 4);
    let blinded = id.blind(period);
    let signing = ExpandedKeypair::generate(&mut rng);
    let ips: Vec<_> = (0..n_ips)
        .map(|i| intro_point(&mut rng, 9000 + i as u16))
        .collect();
    let b = DescriptorBuilder {
        blinded: &blinded,
        credential: id.id_key().credential(),
        signing_key: &signing,
        cert_expiry_hours: EXPIRY_HOURS,
        revision_counter: revision,
        lifetime_minutes: 180,
        create2_formats: vec![2],
        intro_auth_required: None,
        single_onion_service: false,
        other_lines: vec!["flow-control 1-2 31".into()],
        intro_points: ips.clone(),
        client_auth: (!clients.is_empty()).then(|| ClientAuthConfig {
            clients: clients.to_vec(),
        }),
    };
    let text = b.build(&mut rng).unwrap();
    Built {
        id,
        period,
        text,
        ips,
        revision,
    }
}

fn check_round_trip(b: &Built, client: Option<&StaticSecret>) {
    let id = b.id.id_key();
    let hs = desc::decode(
        &b.text,
        &id,
        Some(b.period),
        client,
        Timestamp::from_unix(NOW),
    )
    .unwrap();
    assert_eq!(hs.revision_counter, b.revision);
    assert_eq!(hs.blinded_key, *b.id.blind(b.period).public().as_bytes());
    assert_eq!(hs.second_layer.create2_formats, vec![2]);
    assert_eq!(hs.second_layer.other_lines, vec!["flow-control 1-2 31"]);
    assert_eq!(hs.second_layer.intro_points.len(), b.ips.len());
    assert_eq!(hs.first_layer.auth_clients.len() % 16, 0);
    for (got, want) in hs.second_layer.intro_points.iter().zip(&b.ips) {
        assert_eq!(got.link_specifiers, want.link_specifiers);
        assert_eq!(got.onion_key_ntor, want.onion_key_ntor);
        assert_eq!(got.auth_key(), &want.auth_key);
        assert_eq!(got.enc_key_ntor, want.enc_key_ntor);
    }
}

#[test]
fn build_then_parse() {
    let b = build(1, 3, 42, &[]);
    assert!(b
        .text
        .starts_with("hs-descriptor 3\ndescriptor-lifetime 180\n"));
    assert!(b.text.len() < desc::MAX_DESCRIPTOR_LEN);
    check_round_trip(&b, None);
    // A client that has a key still reads a descriptor without client auth.
    let k = StaticSecret::from([9u8; 32]);
    check_round_trip(&b, Some(&k));
}

#[test]
fn client_authorization() {
    let alice = StaticSecret::from([1u8; 32]);
    let bob = StaticSecret::from([2u8; 32]);
    let eve = StaticSecret::from([3u8; 32]);
    let b = build(2, 2, 7, &[XPublic::from(&alice), XPublic::from(&bob)]);
    check_round_trip(&b, Some(&alice));
    check_round_trip(&b, Some(&bob));
    let id = b.id.id_key();
    assert_eq!(
        desc::decode(
            &b.text,
            &id,
            Some(b.period),
            Some(&eve),
            Timestamp::from_unix(NOW)
        )
        .unwrap_err(),
        DescError::ClientNotAuthorized
    );
    assert_eq!(
        desc::decode(
            &b.text,
            &id,
            Some(b.period),
            None,
            Timestamp::from_unix(NOW)
        )
        .unwrap_err(),
        DescError::ClientAuthRequired
    );
}

#[test]
fn seventeen_clients_give_32_lines() {
    let keys: Vec<XPublic> = (0..17u8)
        .map(|i| XPublic::from(&StaticSecret::from([i + 10; 32])))
        .collect();
    let b = build(3, 1, 1, &keys);
    let hs = desc::decode(
        &b.text,
        &b.id.id_key(),
        Some(b.period),
        Some(&StaticSecret::from([26u8; 32])),
        Timestamp::from_unix(NOW),
    )
    .unwrap();
    assert_eq!(hs.first_layer.auth_clients.len(), 32);
}

/// Decrypt with stem (`/usr/bin/python3`, Debian's python3-stem) and print the intro points.
const STEM_SCRIPT: &str = r#"
import sys, json, base64
from stem.descriptor.hidden_service import HiddenServiceDescriptorV3
raw = open(sys.argv[1], 'rb').read()
d = HiddenServiceDescriptorV3(raw, validate=True)
inner = d.decrypt(sys.argv[2])
out = {'revision_counter': d.revision_counter, 'formats': inner.formats, 'intro': []}
for ip in inner.introduction_points:
    out['intro'].append({
        'ls': [[l.type, l.pack().hex()] for l in ip.link_specifiers],
        'onion_key': ip.onion_key_raw,
        'auth_key': base64.b64encode(ip.auth_key_cert.key).decode(),
        'enc_key': ip.enc_key_raw,
    })
print(json.dumps(out))
"#;

fn stem_available() -> bool {
    std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import stem.descriptor.hidden_service"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn stem_decrypts_our_descriptor() {
    if !stem_available() {
        eprintln!("SKIPPED: /usr/bin/python3 with stem is not installed");
        return;
    }
    let b = build(4, 3, 123_456, &[]);
    let dir = std::env::temp_dir().join(format!("onion-hs-stem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("desc");
    std::fs::write(&path, &b.text).unwrap();
    let addr = b.id.id_key().address().to_string();
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", STEM_SCRIPT, path.to_str().unwrap(), &addr])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "stem failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["revision_counter"], 123_456);
    assert_eq!(v["formats"], serde_json::json!([2]));
    let intro = v["intro"].as_array().unwrap();
    assert_eq!(intro.len(), 3);
    use base64::Engine as _;
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    for (s, ours) in intro.iter().zip(&b.ips) {
        let ls: Vec<String> = ours
            .link_specifiers
            .iter()
            .map(|l| {
                let mut v = vec![l.ty, l.body.len() as u8];
                v.extend_from_slice(&l.body);
                hex::encode(v)
            })
            .collect();
        let stem_ls: Vec<String> = s["ls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stem_ls, ls);
        assert_eq!(s["onion_key"].as_str().unwrap(), b64(&ours.onion_key_ntor));
        assert_eq!(s["auth_key"].as_str().unwrap(), b64(&ours.auth_key));
        assert_eq!(s["enc_key"].as_str().unwrap(), b64(&ours.enc_key_ntor));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prop_round_trip(seed in 0u64..1_000_000, n_ips in 0usize..5, revision in any::<u64>(),
                       n_clients in 0usize..4, wrong in any::<bool>()) {
        let secrets: Vec<StaticSecret> = (0..n_clients)
            .map(|i| StaticSecret::from([(seed as u8).wrapping_add(i as u8) | 1; 32]))
            .collect();
        let pubs: Vec<XPublic> = secrets.iter().map(XPublic::from).collect();
        let b = build(seed, n_ips, revision, &pubs);
        if let Some(s) = secrets.first() {
            check_round_trip(&b, Some(s));
            let outsider = StaticSecret::from([0xeeu8; 32]);
            prop_assert_eq!(
                desc::decode(&b.text, &b.id.id_key(), Some(b.period), Some(&outsider), Timestamp::from_unix(NOW)).unwrap_err(),
                DescError::ClientNotAuthorized
            );
        } else {
            check_round_trip(&b, None);
        }
        if wrong {
            let other = ExpandedKeypair::from_seed(&[0x55; 32]).id_key();
            prop_assert_eq!(
                desc::decode(&b.text, &other, Some(b.period), None, Timestamp::from_unix(NOW)).unwrap_err(),
                DescError::WrongBlindedKey
            );
            let is_bad_mac = matches!(
                desc::decode(&b.text, &other, None, None, Timestamp::from_unix(NOW)),
                Err(DescError::BadMac { layer: "superencrypted" })
            );
            prop_assert!(is_bad_mac);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Optional second-layer fields and unusual link specifiers survive build → parse.
    #[test]
    fn prop_second_layer_options(seed in any::<u64>(), single in any::<bool>(),
                                 auth_req in proptest::option::of(proptest::collection::vec("[a-z0-9]{1,10}", 1..3)),
                                 formats in proptest::collection::vec(1u16..5, 1..3),
                                 v6 in any::<[u8; 16]>(), odd_ty in 4u8.., odd_body in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let id = ExpandedKeypair::generate(&mut rng);
        let period = TimePeriod::new(19_000, 1440, 720);
        let blinded = id.blind(period);
        let signing = ExpandedKeypair::generate(&mut rng);
        let mut ip = intro_point(&mut rng, 443);
        ip.link_specifiers.push(RawLinkSpec::ipv6(std::net::SocketAddrV6::new(v6.into(), 9001, 0, 0)));
        ip.link_specifiers.push(RawLinkSpec { ty: odd_ty, body: odd_body });
        let b = DescriptorBuilder {
            blinded: &blinded,
            credential: id.id_key().credential(),
            signing_key: &signing,
            cert_expiry_hours: EXPIRY_HOURS,
            revision_counter: seed,
            lifetime_minutes: 30 + (seed % 691) as u16,
            create2_formats: formats.clone(),
            intro_auth_required: auth_req.clone(),
            single_onion_service: single,
            other_lines: vec![],
            intro_points: vec![ip.clone()],
            client_auth: None,
        };
        let text = b.build(&mut rng).unwrap();
        let hs = desc::decode(&text, &id.id_key(), Some(period), None, Timestamp::from_unix(NOW)).unwrap();
        prop_assert_eq!(hs.lifetime_minutes, 30 + (seed % 691) as u16);
        prop_assert_eq!(&hs.second_layer.create2_formats, &formats);
        prop_assert_eq!(&hs.second_layer.intro_auth_required, &auth_req);
        prop_assert_eq!(hs.second_layer.single_onion_service, single);
        prop_assert_eq!(&hs.second_layer.intro_points[0].link_specifiers, &ip.link_specifiers);
    }
}

#[test]
fn builder_rejects_bad_arguments() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let id = ExpandedKeypair::generate(&mut rng);
    let period = TimePeriod::new(1, 1440, 720);
    let blinded = id.blind(period);
    let signing = ExpandedKeypair::generate(&mut rng);
    let ips: Vec<_> = (0..21).map(|i| intro_point(&mut rng, i)).collect();
    let mut b = DescriptorBuilder {
        blinded: &blinded,
        credential: id.id_key().credential(),
        signing_key: &signing,
        cert_expiry_hours: EXPIRY_HOURS,
        revision_counter: 1,
        lifetime_minutes: 180,
        create2_formats: vec![2],
        intro_auth_required: None,
        single_onion_service: false,
        other_lines: vec![],
        intro_points: ips,
        client_auth: None,
    };
    assert_eq!(
        b.build(&mut rng).unwrap_err(),
        DescError::TooManyIntroPoints(21)
    );
    b.intro_points.truncate(1);
    b.lifetime_minutes = 10;
    assert_eq!(
        b.build(&mut rng).unwrap_err(),
        DescError::OutOfRange("descriptor-lifetime")
    );
    b.lifetime_minutes = 180;
    b.other_lines = vec!["two\nlines".into()];
    assert!(matches!(b.build(&mut rng), Err(DescError::Build(_))));
}

#[test]
fn tor_client_auth_files_pair_up() {
    // A service's `authorized_clients/alice.auth` and the client's `alice.auth_private`, as
    // C tor writes them (base32 of the x25519 keys), authorize and decrypt a descriptor.
    let alice = StaticSecret::from([5u8; 32]);
    let b32 = |k: &[u8]| data_encoding::BASE32_NOPAD.encode(k);
    let auth = format!(
        "descriptor:x25519:{}\n",
        b32(XPublic::from(&alice).as_bytes())
    );
    let public = onion_hs::keyfile::parse_authorized_client(&auth).unwrap();
    assert_eq!(public, XPublic::from(&alice));
    assert_eq!(
        onion_hs::keyfile::parse_authorized_client(&auth.to_lowercase()).unwrap(),
        public
    );
    let b = build(3, 1, 9, &[public]);
    let private = format!(
        "{}:descriptor:x25519:{}",
        b.id.id_key().address().encode(),
        b32(&alice.to_bytes())
    );
    let (sk, addr) = onion_hs::keyfile::parse_client_auth_key(&private).unwrap();
    assert_eq!(addr, Some(b.id.id_key().address()));
    check_round_trip(&b, Some(&sk));
    for bad in [
        "descriptor:x25519:",
        "descriptor:ed25519:AAAA",
        &auth[..auth.len() - 3],
        &format!("descriptor:x25519:{}1", &b32(&[0; 32])[..51]),
    ] {
        assert!(
            onion_hs::keyfile::parse_authorized_client(bad).is_err(),
            "{bad}"
        );
    }
}

/// INTRODUCE1 asks for congestion control only when the client's circuit runs it and the
/// descriptor advertises `flow-control` (C tor's client rule; a service asked for it treats
/// stream-level SENDMEs as a protocol violation).
#[test]
fn congestion_control_request_needs_both_sides() {
    use onion_hs::client::{advertises_flow_control, HsClient};
    let b = build(3, 2, 1, &[]);
    let hs = desc::decode(
        &b.text,
        &b.id.id_key(),
        Some(b.period),
        None,
        Timestamp::from_unix(NOW),
    )
    .unwrap();
    assert!(advertises_flow_control(&hs));
    let mut plain = hs.clone();
    plain.second_layer.other_lines.clear();
    assert!(!advertises_flow_control(&plain));
    // `flow-controlled` or an argument named so is not the keyword.
    plain.second_layer.other_lines = vec!["flow-controlled 1".into(), "x flow-control".into()];
    assert!(!advertises_flow_control(&plain));
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    for (cc, want) in [(false, false), (true, true)] {
        let c = HsClient::new(b.id.id_key().address()).unwrap();
        let mut d = c
            .handle_descriptor(Timestamp::from_unix(NOW), &b.text, b.period, None)
            .unwrap();
        d.set_congestion_control(cc);
        assert_eq!(d.congestion_control_requested(), want, "cc={cc}");
        let ready = d
            .establish_rendezvous(&mut rng)
            .0
            .handle_rendezvous_established();
        let (intro, _) = ready
            .introduce(
                &mut rng,
                0,
                &[9; 32],
                vec![RawLinkSpec::rsa_id(onion_crypto::RsaIdentity([9; 20]))],
            )
            .unwrap();
        assert_eq!(intro.congestion_control_requested(), want, "cc={cc}");
    }
}

/// The `flow-control` line counts only when its versions include FlowCtrl=2 and its
/// `sendme_inc` is a valid number (C tor: `hs_desc_supports_congestion_control`; a bad
/// `sendme_inc` makes C tor reject the descriptor, here the line is not an advertisement).
#[test]
fn flow_control_line_versions_and_sendme_inc() {
    use onion_hs::client::{advertises_flow_control, flow_control_sendme_inc};
    use onion_hs::service::flow_control_line;
    let b = build(3, 2, 1, &[]);
    let mut hs = desc::decode(
        &b.text,
        &b.id.id_key(),
        Some(b.period),
        None,
        Timestamp::from_unix(NOW),
    )
    .unwrap();
    assert_eq!(flow_control_line(31), "flow-control 1-2 31");
    for (line, want) in [
        ("flow-control 1-2 31", Some(31)),
        ("flow-control 2 33", Some(33)),
        ("flow-control 1,2-3 25", Some(25)),
        ("flow-control 1 31", None),
        ("flow-control 3-4 31", None),
        ("flow-control 1-2 0", None),
        ("flow-control 1-2 256", None),
        ("flow-control 1-2 x", None),
        ("flow-control 1-2", None),
        ("flow-control x-2 31", None),
    ] {
        hs.second_layer.other_lines = vec![line.to_string()];
        assert_eq!(flow_control_sendme_inc(&hs), want, "{line}");
        assert_eq!(advertises_flow_control(&hs), want.is_some(), "{line}");
    }
}
