//! Cannibalized onion-service circuits (path-spec §2.3, C tor's
//! `circuit_find_to_cannibalize` / `circuit_extend_to_new_exit`) over the in-process relay
//! network (tests/support): a hosted service's introduction circuits take the pre-built
//! stable internal circuits (`G -> L2 -> M`) and add one hop each, counted both by the
//! client (EXTEND2 cells it sent) and by the relays (relay circuits that appeared); without
//! pre-built circuits they are built from scratch; a circuit whose extension fails is closed
//! and never taken again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use onion_client::dir::{Authority, DirConfig, DirMode, Directory};
use onion_client::hs::HostConfig;
use onion_client::predict::HsCircuitStats;
use onion_client::{Client, ClientConfig, State};
use onion_dir::consensus::BandwidthWeights;
use onion_dir::netview::{NetView, RelayRecord};
use onion_dir::policy::{PortSet, RelayPolicy};
use onion_dir::{RelayFlags, RsaIdentity};
use onion_hs::keys::ExpandedKeypair;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{testdata, Net, WALL};

fn config(preemptive: bool) -> ClientConfig {
    let nowhere = Authority {
        name: "nowhere".into(),
        rsa_id: RsaIdentity([1; 20]),
        v3ident: RsaIdentity([2; 20]),
        or_addr: None,
    };
    let mut dir = DirConfig::new(vec![nowhere], vec![], DirMode::Micro);
    dir.refresh_from_guards = false;
    dir.retry_delay = Duration::from_secs(7200);
    let mut cfg = ClientConfig::new(dir);
    cfg.preemptive_circuits = preemptive;
    cfg
}

/// The network's relays as a directory of Stable relays, every one also an HSDir.
fn directory(net: &Net) -> Arc<Directory> {
    let records: Vec<RelayRecord> = net
        .relays
        .iter()
        .map(|r| {
            let std::net::SocketAddr::V4(v4) = r.addr else {
                unreachable!()
            };
            RelayRecord {
                nickname: r.name.clone(),
                rsa_id: r.keys.rsa_id,
                ed_id: Some(r.keys.ed_id.0),
                ntor_onion_key: Some(r.ntor.0),
                ipv4: Some(v4),
                flags: RelayFlags(
                    RelayFlags::RUNNING.0
                        | RelayFlags::VALID.0
                        | RelayFlags::FAST.0
                        | RelayFlags::STABLE.0
                        | RelayFlags::GUARD.0
                        | RelayFlags::EXIT.0
                        | RelayFlags::V2DIR.0
                        | RelayFlags::HSDIR.0,
                ),
                bandwidth: 1000,
                policy: RelayPolicy::Summary {
                    v4: PortSet::all(),
                    v6: PortSet::none(),
                },
                ..RelayRecord::default()
            }
        })
        .collect();
    let view = NetView::from_records(records, BandwidthWeights::uniform(10000)).unwrap();
    let text = testdata("cached-microdesc-consensus");
    let cons = onion_dir::consensus::parse(&text)
        .unwrap()
        .assume_verified();
    let mut d =
        Directory::from_consensus(&cons, view, DirMode::Micro, net.relays.len(), String::new());
    let mut ids: Vec<RsaIdentity> = net.relays.iter().map(|r| r.keys.rsa_id).collect();
    ids.sort();
    d.listed_guards = ids;
    Arc::new(d)
}

/// A bootstrapped client on `net`, its preemptive circuits (if any) built.
fn client(net: &mut Net, preemptive: bool) -> Client {
    let dir = directory(net);
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
