//! Cannibalized onion-service circuits (path-spec §2.3, C tor's
//! `circuit_find_to_cannibalize` / `circuit_extend_to_new_exit`) over the in-process relay
//! network (tests/support): a hosted service's introduction circuits take the pre-built
//! stable internal circuits (`G -> L2 -> M`) and add one hop each, counted both by the
//! client (EXTEND2 cells it sent) and by the relays (relay circuits that appeared); without
//! pre-built circuits they are built from scratch; a circuit whose extension fails is closed
//! and never taken again.

mod support;

use onion_client::hs::HostConfig;
use onion_client::predict::HsCircuitStats;
use onion_client::{Client, ClientConfig, State};
use onion_hs::keys::ExpandedKeypair;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{quiet_config, Net, WALL};

fn config(preemptive: bool) -> ClientConfig {
    let mut cfg = quiet_config();
    cfg.preemptive_circuits = preemptive;
    cfg
}

/// A bootstrapped client on `net`, its preemptive circuits (if any) built.
fn client(net: &mut Net, preemptive: bool) -> Client {
    let dir = net.hsdir_directory();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(
        config(preemptive),
        State::default(),
        net.now,
        WALL,
        &mut rng,
    )
    .unwrap();
    c.adopt_directory(dir, net.now).unwrap();
    net.run(&mut c);
    c
}

fn host(net: &mut Net, c: &mut Client, seed: u8) {
    let id = ExpandedKeypair::from_seed(&[seed; 32]);
    c.host_onion_service(HostConfig::new(id, vec![80]), net.now)
        .unwrap();
    net.run(c);
}

#[test]
fn a_hosted_service_extends_prebuilt_internal_circuits_by_one_hop() {
    let mut net = Net::new(8, 14);
    let mut c = client(&mut net, true);
    // The internal circuits predicted at start are stable ones (C tor predicts stable
    // internal circuits from the start), which a service's introduction circuit needs.
    let (circuits, hops) = (net.multi_hop_circuits(), net.relay_circuits());
    assert!(circuits >= 3, "{circuits} pre-built circuits");
    assert_eq!(c.onion_circuit_stats(), HsCircuitStats::default());
    host(&mut net, &mut c, 3);
    // Three introduction points, each reached with ONE EXTEND2 on a pre-built circuit when
    // one fits (none of its relays is the introduction point or in its family), else
    // built from scratch (a CREATE2 and three EXTEND2).
    let st = c.onion_circuit_stats();
    assert_eq!(st.cannibalized + st.launched, 3, "{st:?}");
    assert!(st.cannibalized >= 2, "{st:?}");
    assert_eq!(st.extends, st.cannibalized + 3 * st.launched, "{st:?}");
    // The relays agree: one new relay circuit per cannibalized circuit, four per circuit
    // built from scratch; any other new client circuit (a pre-built one replacing those
    // taken) brings its three hops.
    let new_circuits = (net.multi_hop_circuits() - circuits) as u64;
    let others = new_circuits - st.launched;
    assert_eq!(
        (net.relay_circuits() - hops) as u64,
        st.cannibalized + 4 * st.launched + 3 * others
    );
}

#[test]
fn without_prebuilt_circuits_the_service_builds_from_scratch() {
    let mut net = Net::new(8, 14);
    let mut c = client(&mut net, false);
    let (circuits, hops) = (net.multi_hop_circuits(), net.relay_circuits());
    host(&mut net, &mut c, 3);
    let st = c.onion_circuit_stats();
    // `G -> L2 -> M -> I`: a CREATE2 and three EXTEND2 each.
    assert_eq!(
        st,
        HsCircuitStats {
            cannibalized: 0,
            launched: 3,
            extends: 9
        }
    );
    assert_eq!(net.multi_hop_circuits() - circuits, 3);
    assert_eq!(net.relay_circuits() - hops, 12);
}

#[test]
fn a_circuit_that_failed_to_extend_is_closed_and_not_reused() {
    let mut net = Net::new(8, 14);
    let mut c = client(&mut net, true);
    let circuits = net.multi_hop_circuits();
    // Every relay now refuses new connections: each EXTEND2 fails at the relay (TRUNCATED
    // or DESTROY back), while the channels already open keep working.
    for r in &mut net.relays {
        r.down = true;
    }
    host(&mut net, &mut c, 3);
    let st = c.onion_circuit_stats();
    assert!(st.cannibalized >= 1, "{st:?}");
    // One EXTEND2 each, refused: a cannibalized circuit's only one, a fresh build's first.
    assert_eq!(st.extends, st.cannibalized + st.launched, "{st:?}");
    // Every circuit taken is gone from the relays (closed after its failed extension),
    // so none was taken twice; no new circuit got past its first hop.
    let gone = circuits - net.multi_hop_circuits();
    assert_eq!(gone as u64, st.cannibalized, "{st:?}");
}
