//! Fuzz the onion-service message bodies, link specifiers, certificates and onion addresses
//! (onion-hs), checking that whatever parses re-encodes to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_cell::hs as wire;
use onion_hs::msg::{EstablishIntro, Introduce, IntroducePlaintext, Rendezvous1};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, b)) = data.split_first() else {
        return;
    };
    match sel % 8 {
        0 => {
            if let Ok(m) = EstablishIntro::parse(b) {
                let _ = m.verify(&[0u8; 20]);
                let _ = m.dos_params();
            }
            // What an introduction point gets: onion-cell's decoding, then onion-hs's checks.
            if let Ok(c) = wire::EstablishIntro::decode(b) {
                if let Ok(m) = EstablishIntro::from_cell(&c) {
                    let _ = m.verify(&[0u8; 20]);
                }
            }
        }
        1 => {
            if let Ok(c) = wire::Introduce::decode(b) {
                if let Ok(m) = Introduce::from_cell(&c) {
                    let sk = onion_hs::x25519_dalek::StaticSecret::from([3u8; 32]);
                    let _ = m.decrypt(&sk, &onion_hs::keys::Subcredential([0; 32]));
                }
            }
        }
        2 => {
            if let Ok(p) = IntroducePlaintext::parse(b) {
                let e = p.encode().expect("re-encode");
                assert_eq!(IntroducePlaintext::parse(&e).ok(), Some(p));
            }
        }
        3 => {
            if let Ok(a) = wire::IntroduceAck::decode(b) {
                let mut e = Vec::new();
                a.encode(&mut e).expect("re-encode");
                assert_eq!(wire::IntroduceAck::decode(&e).ok(), Some(a));
            }
            let _ = wire::IntroEstablished::decode(b);
            let _ = Rendezvous1::parse(b);
        }
        4 => {
            if let Ok(v) = onion_hs::linkspec::parse_list(b) {
                let mut out = Vec::new();
                onion_hs::linkspec::encode_list(&v, &mut out).expect("re-encode");
                assert_eq!(out, b);
            }
        }
        5 => {
            if let Ok(c) = onion_hs::cert::Ed25519Cert::parse(b) {
                let _ = c.verify(c.cert_type, None, onion_dir::Timestamp::from_unix(0));
            }
        }
        _ => {
            if let Ok(a) = onion_hs::OnionAddress::parse(&String::from_utf8_lossy(b)) {
                assert_eq!(onion_hs::OnionAddress::parse(&a.to_string()).ok(), Some(a));
            }
        }
    }
});
