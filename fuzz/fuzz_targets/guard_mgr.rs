//! Fuzz the guard state machine (onion-dir `guard`, guard-spec §4) with arbitrary event
//! sequences on a small network, checking its invariants after every event.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use onion_dir::consensus::BandwidthWeights;
use onion_dir::netview::{NetView, RelayIdx, RelayRecord};
use onion_dir::select::guard::{GuardCircId, GuardMgr, GuardParams, GuardUsage};
use onion_dir::select::path::{Exclusions, PathConfig};
use onion_dir::Timestamp;
use onion_dir::{RelayFlags, RsaIdentity};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn view(mask: u64) -> NetView {
    let flags = RelayFlags::RUNNING
        | RelayFlags::VALID
        | RelayFlags::FAST
        | RelayFlags::STABLE
        | RelayFlags::GUARD
        | RelayFlags::V2DIR;
    let recs = (0..40u8)
        .filter(|i| mask & (1 << i) == 0)
        .map(|i| RelayRecord {
            nickname: format!("g{i}"),
            rsa_id: RsaIdentity([i; 20]),
            ipv4: Some(SocketAddrV4::new(Ipv4Addr::new(10, i % 16, 0, i), 9001)),
            flags,
            bandwidth: u32::from(i) * 10,
            family: vec![RsaIdentity([i ^ 1; 20])],
            ..Default::default()
        })
        .collect();
    NetView::from_records(recs, BandwidthWeights::default()).expect("view")
}

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::seed_from_u64(data.len() as u64);
    let params = GuardParams {
        min_filtered_sample: 5,
        max_sample_size: 12,
        ..GuardParams::default()
    };
    let n_primary = params.n_primary;
    let mut mgr = GuardMgr::new(params);
    let mut v = view(0);
    let mut now: u64 = 1_800_000_000;
    let mut circs: Vec<GuardCircId> = Vec::new();
    mgr.update_consensus(Timestamp::from_unix(now), &v, &mut rng);
    for chunk in data.chunks(3).take(500) {
        let (op, a, b) = (
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        );
        match op % 8 {
            0 | 1 => {
                let usage = if a & 1 == 0 {
                    GuardUsage::Data
                } else {
                    GuardUsage::Dir
                };
                let avoid = [RelayIdx(u32::from(b) % v.len().max(1) as u32)];
                let avoid = if a & 2 == 0 { &avoid[..0] } else { &avoid[..] };
                // Bit 2: the circuit also excludes the relay `b` (and its neighbour), which it
                // must then never get as its guard.
                let excluded = [
                    RelayIdx(u32::from(b) % v.len().max(1) as u32),
                    RelayIdx(u32::from(b.wrapping_add(1)) % v.len().max(1) as u32),
                ];
                let exclude = if a & 4 == 0 {
                    Exclusions::none()
                } else {
                    Exclusions::from_indices(excluded)
                };
                let picked = mgr.select_excluding(
                    Timestamp::from_unix(now),
                    &v,
                    usage,
                    avoid,
                    &exclude,
                    &PathConfig::default(),
                    &mut rng,
                );
                if let Ok(p) = picked {
                    assert!(mgr.sampled().iter().any(|g| g.rsa_id == p.guard));
                    assert!(!exclude.contains(p.idx));
                    circs.push(p.circ);
                }
            }
            2 => {
                if let Some(&c) = circs.get(usize::from(a)) {
                    let _ = mgr.circuit_succeeded(Timestamp::from_unix(now), c, &mut rng);
                }
            }
            3 => {
                if !circs.is_empty() {
                    let c = circs.remove(usize::from(a) % circs.len());
                    let _ = mgr.circuit_failed(Timestamp::from_unix(now), c);
                }
            }
            4 => {
                if !circs.is_empty() {
                    let c = circs.remove(usize::from(a) % circs.len());
                    let _ = mgr.circuit_closed(Timestamp::from_unix(now), c);
                }
            }
            5 => {
                now += u64::from(a) * u64::from(b) * 60;
                mgr.handle_timeout(Timestamp::from_unix(now));
            }
            6 => {
                now += u64::from(a) * 86_400;
                v = view(u64::from(b) * 0x0101_0101 & 0xff_ffff_ffff);
                mgr.update_consensus(Timestamp::from_unix(now), &v, &mut rng);
            }
            _ => {
                let text = mgr.to_state_string();
                let m2 = GuardMgr::from_state_str(mgr.params().clone(), &text).expect("state");
                assert_eq!(m2.to_state_string(), text);
            }
        }
        while mgr.poll_event().is_some() {}
        // Invariants (guard-spec §4.1-4.4).
        assert!(mgr.primary().len() <= n_primary);
        for id in mgr.primary().iter().chain(mgr.confirmed()) {
            assert!(mgr.sampled().iter().any(|g| g.rsa_id == *id));
        }
        let mut ids: Vec<_> = mgr.sampled().iter().map(|g| g.rsa_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), mgr.sampled().len());
        assert!(mgr.sampled().len() <= 12);
    }
});
