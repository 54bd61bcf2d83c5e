//! Fuzz the onion-service publisher (onion-hs `publish`): the fuzzer plays the embedder and
//! the network, choosing which report comes next (circuit built, established or closed,
//! upload answered, INTRODUCE2 garbage, a new consensus, time passing), including reports
//! for the wrong intro point or upload. The publisher must never panic, never ask for more
//! introduction points than configured, and never leave a timer in the past after
//! `handle_timeout` (which would make an embedder spin).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::{RsaIdentity, Timestamp};
use onion_hs::keys::ExpandedKeypair;
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::publish::{
    ConsensusView, IntroCandidate, IntroId, PublishAction, Publisher, PublisherConfig, UploadId,
};
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::service::{HsService, HsServiceConfig};
use onion_hs::time::TimePeriodConfig;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const T0: u64 = 1_795_428_000;

fn view(valid_after: u64, day: u8, n_hsdirs: u8, n_intro: u8) -> ConsensusView {
    ConsensusView {
        valid_after: Timestamp::from_unix(valid_after),
        periods: TimePeriodConfig::default(),
        shared_random: SharedRandom {
            current: Some([day; 32]),
            previous: Some([day.wrapping_sub(1); 32]),
        },
        params: HsDirParams::default(),
        hsdirs: (0..n_hsdirs)
            .map(|i| HsDirRelay {
                ed25519_id: [i; 32],
                rsa_id: RsaIdentity([i; 20]),
                is_hsdir: i % 4 != 3,
            })
            .collect(),
        intro_candidates: (0..n_intro)
            .map(|i| IntroCandidate {
                rsa_id: RsaIdentity([100u8.wrapping_add(i); 20]),
                link_specifiers: vec![RawLinkSpec::rsa_id(RsaIdentity(
                    [100u8.wrapping_add(i); 20],
                ))],
                onion_key: [i; 32],
            })
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let hs = HsService::new(
        ExpandedKeypair::from_seed(&[3; 32]),
        HsServiceConfig::default(),
    );
    let config = PublisherConfig {
        intro_points: 1 + usize::from(data.first().copied().unwrap_or(0) % 5),
        ..PublisherConfig::default()
    };
    let max_intro = config.intro_points;
    let mut p = Publisher::new(hs, config);
    let mut now = T0;
    p.set_consensus(Timestamp::from_unix(now), view(now, 1, 12, 6), &mut rng);
    let mut intros: Vec<IntroId> = Vec::new();
    let mut uploads: Vec<UploadId> = Vec::new();
    for op in data.chunks(3).skip(1).take(400) {
        let (kind, a, b) = (op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0));
        while let Some(action) = p.poll_action() {
            match action {
                PublishAction::BuildIntroCircuit { intro, .. } => intros.push(intro),
                PublishAction::CloseIntroCircuit { intro } => intros.retain(|i| *i != intro),
                PublishAction::Upload { upload, .. } => uploads.push(upload),
            }
        }
        let pick_intro = |n: u8| {
            if intros.is_empty() || n == 255 {
                IntroId(u64::from(n))
            } else {
                intros[usize::from(n) % intros.len()]
            }
        };
        match kind % 8 {
            0 => {
                let _ = p.intro_circuit_built(pick_intro(a), &[b; 20]);
            }
            1 => {
                let _ = p.intro_established(Timestamp::from_unix(now), pick_intro(a), &mut rng);
            }
            2 => {
                let _ = p.intro_circuit_closed(Timestamp::from_unix(now), pick_intro(a), &mut rng);
            }
            3 if !uploads.is_empty() => {
                let u = uploads.swap_remove(usize::from(a) % uploads.len());
                p.upload_result(Timestamp::from_unix(now), u, b & 1 == 0, &mut rng);
            }
            4 => {
                if let Ok(m) = onion_cell::hs::Introduce::decode(op) {
                    let now = Timestamp::from_unix(now);
                    let _ = p.handle_introduce2(now, pick_intro(a), &m, &mut rng);
                }
            }
            5 => {
                let day = 1 + (now - T0) / 86_400;
                p.set_consensus(
                    Timestamp::from_unix(now),
                    view(now, day as u8, 4 + a % 16, b % 8),
                    &mut rng,
                );
            }
            _ => {
                now += u64::from(a) * u64::from(b) * 7 + 1;
            }
        }
        if let Some(t) = p.poll_timeout().map(Timestamp::unix) {
            if t <= now {
                p.handle_timeout(Timestamp::from_unix(now), &mut rng);
                if let Some(t2) = p.poll_timeout().map(Timestamp::unix) {
                    assert!(
                        t2 > now,
                        "timer {t2} still due at {now} after handle_timeout"
                    );
                }
            }
        }
        assert!(
            p.intro_points().len() <= 2 * max_intro + 1,
            "{} intro points kept for {max_intro} configured",
            p.intro_points().len()
        );
    }
});
