//! Real C tor 0.4.9 data from a private test network: the service's key files, address and its
//! descriptors for two adjacent time periods, checked against stem's independent decryption
//! (`stem-summary.json`).

use base64::Engine as _;
use onion_hs::desc::{self, DescError, OuterDescriptor};
use onion_hs::keys::{ExpandedKeypair, HsIdKey};
use onion_hs::time::{TimePeriod, TimePeriodConfig};
use onion_hs::OnionAddress;
use serde_json::Value;

const HARVEST_UNIX: u64 = 1_795_418_409; // 2026-11-23 07:20:09 UTC

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn stem() -> Value {
    serde_json::from_slice(&read("stem-summary.json")).unwrap()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}

fn id_key() -> HsIdKey {
    HsIdKey::from_tor_file(&read("hs.hs_ed25519_public_key")).unwrap()
}

#[test]
fn key_files_and_address() {
    let id = id_key();
    let host = String::from_utf8(read("hs.hostname")).unwrap();
    assert_eq!(id.address().to_string(), host.trim());
    assert_eq!(OnionAddress::parse(host.trim()).unwrap(), id.address());
    let kp = ExpandedKeypair::from_tor_file(&read("hs.hs_ed25519_secret_key")).unwrap();
    assert_eq!(kp.public_bytes(), id.as_bytes());
    assert_eq!(
        kp.to_expanded_bytes().to_vec(),
        read("hs.hs_ed25519_secret_key")[32..]
    );
}

#[test]
fn testing_network_time_periods() {
    // 20 s voting interval: 8-minute periods with a 4-minute offset.
    let cfg = TimePeriodConfig::testing_network(20).unwrap();
    assert_eq!(cfg.length_minutes(), 8);
    assert_eq!(cfg.rotation_offset_minutes(), 4);
    let p = cfg.period_at(onion_dir::Timestamp::from_unix(HARVEST_UNIX));
    assert_eq!(p.num(), 3_740_454);
    // stem: period 3740454 starts 2026-11-23 07:16:00.
    assert_eq!(p.start().unix(), HARVEST_UNIX - 4 * 60 - 9);
    let s = stem();
    for (file, d) in s["onion_service"]["descriptors"].as_object().unwrap() {
        let period = TimePeriod::new(d["time_period_num"].as_u64().unwrap(), 8, 4);
        let blinded = id_key().blind(period);
        assert_eq!(
            blinded.as_bytes().to_vec(),
            b64(d["blinded_key_b64"].as_str().unwrap()),
            "{file}"
        );
    }
}

fn check_against_stem(file: &str) {
    let s = stem();
    let d = &s["onion_service"]["descriptors"][file];
    let period = TimePeriod::new(d["time_period_num"].as_u64().unwrap(), 8, 4);
    let text = String::from_utf8(read(file)).unwrap();
    let hs = desc::decode(
        &text,
        &id_key(),
        Some(period),
        None,
        onion_dir::Timestamp::from_unix(HARVEST_UNIX),
    )
    .unwrap();
    assert_eq!(hs.revision_counter, d["revision_counter"].as_u64().unwrap());
    assert_eq!(
        u64::from(hs.lifetime_minutes),
        d["lifetime_minutes"].as_u64().unwrap()
    );
    assert_eq!(
        hs.signing_key.to_vec(),
        b64(d["descriptor_signing_key_b64"].as_str().unwrap())
    );
    assert_eq!(
        hs.first_layer.auth_type,
        d["layer1_auth_type"].as_str().unwrap_or("x25519")
    );
    if let Some(n) = d["layer1_auth_clients"].as_u64() {
        assert_eq!(hs.first_layer.auth_clients.len() as u64, n);
    }
    let formats: Vec<u64> = d["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        hs.second_layer
            .create2_formats
            .iter()
            .map(|&f| u64::from(f))
            .collect::<Vec<_>>(),
        formats
    );
    assert_eq!(
        hs.second_layer.single_onion_service,
        d["is_single_service"].as_bool().unwrap()
    );
    let unrec: Vec<String> = d["inner_unrecognized_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(hs.second_layer.other_lines, unrec);
    let ips = d["introduction_points"].as_array().unwrap();
    assert_eq!(hs.second_layer.intro_points.len(), ips.len());
    assert!(!ips.is_empty());
    for (ours, theirs) in hs.second_layer.intro_points.iter().zip(ips) {
        let ls = theirs["link_specifiers"].as_array().unwrap();
        assert_eq!(ours.link_specifiers.len(), ls.len());
        for (a, b) in ours.link_specifiers.iter().zip(ls) {
            assert_eq!(u64::from(a.ty), b["link_type"].as_u64().unwrap());
            assert_eq!(hex::encode(&a.body), b["value_hex"].as_str().unwrap());
            if let Some(port) = b["port"].as_u64() {
                let sa = a.as_ipv4().unwrap();
                assert_eq!(u64::from(sa.port()), port);
                assert_eq!(sa.ip().to_string(), b["address"].as_str().unwrap());
            }
        }
        let ob = |k: &str| b64(theirs[k].as_str().unwrap());
        assert_eq!(ours.onion_key_ntor.to_vec(), ob("onion_key_ntor_b64"));
        assert_eq!(ours.auth_key().to_vec(), ob("auth_key_b64"));
        assert_eq!(
            ours.auth_key_cert.signing_key.unwrap().to_vec(),
            ob("auth_key_cert_signing_key_b64")
        );
        assert_eq!(ours.enc_key_ntor.to_vec(), ob("enc_key_ntor_b64"));
        assert_eq!(
            ours.enc_key_cert.certified_key.to_vec(),
            ob("enc_key_cert_key_b64")
        );
    }
}

#[test]
fn client_fetched_descriptor_matches_stem() {
    check_against_stem("hs-descriptor.client-fetched");
}

#[test]
fn service_descriptor_matches_stem() {
    check_against_stem("hs-descriptor.service");
}

#[test]
fn decrypted_layers_equal_stem_plaintexts() {
    let text = String::from_utf8(read("hs-descriptor.client-fetched")).unwrap();
    let hs = desc::decode(
        &text,
        &id_key(),
        None,
        None,
        onion_dir::Timestamp::from_unix(HARVEST_UNIX),
    )
    .unwrap();
    let l1 = String::from_utf8(read("hs-descriptor.layer1-plaintext")).unwrap();
    let l2 = String::from_utf8(read("hs-descriptor.layer2-plaintext")).unwrap();
    // Our encoders reproduce C tor's layout byte for byte.
    assert_eq!(hs.first_layer.encode(), l1);
    assert_eq!(hs.second_layer.encode().unwrap(), l2);
    assert_eq!(desc::FirstLayer::parse(&l1).unwrap(), hs.first_layer);
    assert_eq!(desc::SecondLayer::parse(&l2).unwrap(), hs.second_layer);
}

#[test]
fn wrong_address_or_period_fails_clearly() {
    let text = String::from_utf8(read("hs-descriptor.client-fetched")).unwrap();
    let other = ExpandedKeypair::from_seed(&[7u8; 32]).id_key();
    // With the period, the blinded key gives it away before any decryption.
    let p = TimePeriod::new(3_740_454, 8, 4);
    assert_eq!(
        desc::decode(
            &text,
            &other,
            Some(p),
            None,
            onion_dir::Timestamp::from_unix(HARVEST_UNIX)
        )
        .unwrap_err(),
        DescError::WrongBlindedKey
    );
    // The right key with the neighbouring period is also refused.
    assert_eq!(
        desc::decode(
            &text,
            &id_key(),
            Some(p.next()),
            None,
            onion_dir::Timestamp::from_unix(HARVEST_UNIX)
        )
        .unwrap_err(),
        DescError::WrongBlindedKey
    );
    // Without a period, the first layer's MAC fails.
    assert!(matches!(
        desc::decode(
            &text,
            &other,
            None,
            None,
            onion_dir::Timestamp::from_unix(HARVEST_UNIX)
        )
        .unwrap_err(),
        DescError::BadMac {
            layer: "superencrypted"
        }
    ));
    // After the certificate expiry (2026-11-25 14:00) it is refused.
    assert!(matches!(
        desc::decode(
            &text,
            &id_key(),
            Some(p),
            None,
            onion_dir::Timestamp::from_unix(HARVEST_UNIX + 3 * 86400)
        )
        .unwrap_err(),
        DescError::Cert {
            field: "descriptor-signing-key-cert",
            ..
        }
    ));
    // A modified body fails the signature.
    let tampered = text.replace("revision-counter 5518382", "revision-counter 5518383");
    assert_eq!(
        OuterDescriptor::parse(&tampered)
            .unwrap()
            .verify(None, onion_dir::Timestamp::from_unix(HARVEST_UNIX))
            .unwrap_err(),
        DescError::BadSignature
    );
}
