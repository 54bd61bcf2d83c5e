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
        &mut rng,
        vec![RawLinkSpec::rsa_id(onion_dir::RsaIdentity([1; 20]))],
        [2; 32],
    );
    let _ = service.handle_intro_established(ip);
    let period = onion_hs::TimePeriod::new(100, 1440, 720);
    let Ok(text) = service.build_descriptor(&mut rng, period, 1_795_418_409) else {
        return;
    };
    for chunk in data.split(|&b| b == 0xff).take(8) {
        let _ = service.handle_introduce2(&mut rng, ip, chunk);
    }
    // A genuine introduction whose rendezvous fields come from the fuzzer.
    let Ok(mut client) = onion_hs::client::HsClient::new(service.address()) else {
        return;
    };
    if client
        .handle_descriptor(&text, period, None, 1_795_418_409)
        .is_err()
    {
        return;
    }
    let _ = client.establish_rendezvous(&mut rng);
    let _ = client.handle_rendezvous_established();
    let specs: Vec<RawLinkSpec> = data
        .chunks(20)
        .take(4)
        .map(|c| RawLinkSpec {
            ty: c[0].wrapping_add(4),
            body: c.to_vec(),
        })
        .collect();
    if let Ok((_, body)) = client.introduce(&mut rng, &[3; 32], specs) {
        if let Ok(req) = service.handle_introduce2(&mut rng, ip, &body) {
            let _ = client.handle_rendezvous2(&req.rendezvous1[20..]);
        }
        assert!(
            service.handle_introduce2(&mut rng, ip, &body).is_err(),
            "replay accepted"
        );
    }
});
