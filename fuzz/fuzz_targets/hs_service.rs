//! Fuzz the onion-service state machine (onion-hs): a service with one established
//! introduction point fed arbitrary INTRODUCE2 bodies, plus a well-formed one built by a real
//! client with fuzzer-chosen rendezvous data, so that the decrypting and replay paths run too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_hs::keys::ExpandedKeypair;
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::service::{HsService, HsServiceConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut service = HsService::new(
        ExpandedKeypair::from_seed(&[9; 32]),
        HsServiceConfig::default(),
    );
    let ip = service.add_intro_point(
        vec![RawLinkSpec::rsa_id(onion_dir::RsaIdentity([1; 20]))],
        [2; 32],
        &mut rng,
    );
    let _ = service.handle_intro_established(ip);
    let period = onion_hs::TimePeriod::new(100, 1440, 720);
    let now = onion_dir::Timestamp::from_unix(1_795_418_409);
    let Ok(text) = service.build_descriptor(now, period, &mut rng) else {
        return;
    };
    for chunk in data.split(|&b| b == 0xff).take(8) {
        // What the service's intro circuit hands over: onion-cell's decoding.
        if let Ok(m) = onion_cell::hs::Introduce::decode(chunk) {
            let _ = service.handle_introduce2(ip, &m, &mut rng);
        }
    }
    // A genuine introduction whose rendezvous fields come from the fuzzer.
    let Ok(client) = onion_hs::client::HsClient::new(service.address()) else {
        return;
    };
    let Ok(described) = client.handle_descriptor(now, &text, period, None) else {
        return;
    };
    let ready = described
        .establish_rendezvous(&mut rng)
        .0
        .handle_rendezvous_established();
    let specs: Vec<RawLinkSpec> = data
        .chunks(20)
        .take(4)
        .map(|c| RawLinkSpec {
            ty: c[0].wrapping_add(4),
            body: c.to_vec(),
        })
        .collect();
    if let Ok((intro, intro1)) = ready.introduce(&mut rng, 0, &[3; 32], specs) {
        let mut body = Vec::new();
        if intro1.encode(&mut body).is_err() {
            panic!("the client's INTRODUCE1 does not encode");
        }
        let Ok(m) = onion_cell::hs::Introduce::decode(&body) else {
            panic!("the client's INTRODUCE1 does not decode");
        };
        if let Ok(req) = service.handle_introduce2(ip, &m, &mut rng) {
            let r2 = onion_cell::hs::Rendezvous2 {
                handshake_info: req.rendezvous1.handshake_info.clone(),
            };
            let _ = intro.handle_rendezvous2(&r2);
        }
        assert!(
            service.handle_introduce2(ip, &m, &mut rng).is_err(),
            "replay accepted"
        );
    }
});
