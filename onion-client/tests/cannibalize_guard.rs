//! A pre-built internal circuit is not cannibalized once its guard has left the guard
//! sample (C tor's `circuit_find_to_cannibalize` asks `entry_guard_could_succeed`), over the
//! in-process relay network (tests/support): the same run, with and without every guard
//! leaving the sample, differs only in that.

mod support;

use std::time::Duration;

use onion_client::hs::HostConfig;
use onion_client::{Client, State, Timestamp};
use onion_dir::RsaIdentity;
use onion_hs::keys::ExpandedKeypair;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{quiet_config, wall, Net, WALL};

const DAY: u64 = 86_400;

/// Cannibalized circuits of a hosted service's introduction circuits, after the sampled
/// guards were unlisted (`unlist`) for two days, or not.
fn cannibalized(unlist: bool) -> u64 {
    let mut net = Net::new(8, 14);
    // Unlisted guards leave the sample after one day (guard-spec §4.1); the layer-2
    // vanguards live 30 days, so that only the guards change.
    net.params = format!(
        "guard-remove-unlisted-guards-after-days=1 guard-hs-l2-lifetime-min={} \
         guard-hs-l2-lifetime-max={}",
        30 * DAY,
        30 * DAY
    );
    let mut cfg = quiet_config();
    cfg.preemptive_circuits = true;
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(net.hsdir_directory_with(&[]), net.now)
        .unwrap();
    net.run(&mut c);
    // Internal circuits are built ahead (stable ones: a service's introduction circuit
    // may take them).
    net.run_until(&mut c, Duration::from_secs(10), |n| {
        n.multi_hop_circuits() >= 3
    });
    assert!(net.multi_hop_circuits() >= 3);
    let unguarded: Vec<RsaIdentity> = match unlist {
        true => net.relays.iter().map(|r| r.keys.rsa_id).collect(),
        false => Vec::new(),
    };
    c.adopt_directory(net.hsdir_directory_with(&unguarded), net.now)
        .unwrap();
    // Two days later on the wall clock (the monotonic one barely moves: the circuits stay).
    let later = Timestamp(wall(net.now).0 + 2 * DAY);
    c.handle_timeout(net.now, later);
    c.adopt_directory(net.hsdir_directory_with(&unguarded), net.now)
        .unwrap();
    net.run(&mut c);
    let id = ExpandedKeypair::from_seed(&[3; 32]);
    c.host_onion_service(HostConfig::new(id, vec![80]), net.now)
        .unwrap();
    net.run(&mut c);
    c.onion_circuit_stats().cannibalized
}

#[test]
fn a_circuit_whose_guard_left_the_sample_is_not_cannibalized() {
    assert!(cannibalized(false) >= 1);
    assert_eq!(cannibalized(true), 0);
}
