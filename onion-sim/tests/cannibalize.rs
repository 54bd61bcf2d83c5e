//! Onion-service circuits on the simulated network (the service and its visitor are
//! `onion_client::Client`s, the relays `onion_relay::Relay`):
//! - a hosted service answering an INTRODUCE2 while it has a clean stable internal circuit
//!   cannibalizes it (path-spec §2.3, C tor's `circuit_launch_by_extend_info`): ONE EXTEND2
//!   to the rendezvous point, and RENDEZVOUS1 goes out sooner than after a build from
//!   scratch (a service without pre-built circuits);
//! - a visitor's stream that the service ends before CONNECTED with TIMEOUT, RESOURCELIMIT
//!   or EXITPOLICY is not tried again (C tor's `connection_ap_process_end_not_open` retries
//!   only streams that are not rendezvous streams): the service sees it once.

use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_client::predict::HsCircuitStats;
use onion_client::Isolation;
use onion_sim::client::driver::{Outcome, Sim};
use onion_sim::client::runs;
use onion_sim::client::world::WorldConfig;

/// A bootstrapped visitor and a published public service (index 0), whose client builds
/// internal circuits ahead when `preemptive`; then `settle` of virtual time.
fn published(seed: u64, preemptive: bool, settle: Duration) -> Sim {
    let cfg = WorldConfig {
        seed,
        ..WorldConfig::default()
    };
    let (mut sim, _) = runs::bootstrapped(cfg).expect("bootstrap");
    let visitor = sim.config.clone();
    sim.config.preemptive_circuits = preemptive;
    let identity = onion_hs::keys::ExpandedKeypair::generate(sim.world.rng());
    let svc = sim.host_service(identity, vec![]).expect("host");
    sim.config = visitor;
    assert_eq!(svc, 0);
    sim.run_until(Duration::from_secs(600), |s| {
        let c = &s.services[0].client;
        c.onion_service_stats(s.services[0].handle)
            .is_some_and(|st| st.uploads_ok > 0)
    })
    .expect("published");
    let until = sim.now() + settle;
    let _ = sim.run_until(settle + Duration::from_secs(1), |s| s.now() >= until);
    sim
}

fn fetch(sim: &mut Sim, isolation: u64) -> Outcome {
    let address = sim.services[0].address.clone();
    sim.fetch_from(&address, 10_000, Isolation(isolation))
        .expect("fetch");
    let i = sim.fetches.all.len() - 1;
    sim.run_until(Duration::from_secs(600), |s| {
        s.fetches.all[i].outcome != Outcome::Running
    })
    .expect("the fetch ends");
    sim.fetches.all[i].outcome.clone()
}

fn circuit_stats(sim: &Sim) -> HsCircuitStats {
    sim.services[0].client.onion_circuit_stats()
}

/// The service's onion-service circuits opened during one fetch, and the time from the
/// INTRODUCE2 to its RENDEZVOUS1.
fn rendezvous(sim: &mut Sim) -> (HsCircuitStats, Duration) {
    let before = circuit_stats(sim);
    assert_eq!(fetch(sim, 1), Outcome::Ok);
    let after = circuit_stats(sim);
    let svc = &sim.services[0];
    let st = svc.client.onion_service_stats(svc.handle).unwrap();
    assert_eq!(st.rendezvous, 1);
    let delta = HsCircuitStats {
        cannibalized: after.cannibalized - before.cannibalized,
        launched: after.launched - before.launched,
        extends: after.extends - before.extends,
    };
    (delta, st.rendezvous_delay_last)
}

#[test]
fn a_service_meets_the_rendezvous_point_with_one_extend_on_a_prebuilt_circuit() {
    // Settled: its stable internal circuits are built (three, for a hosted service).
    let mut sim = published(51, true, Duration::from_secs(30));
    let (delta, cannibalized) = rendezvous(&mut sim);
    assert_eq!(
        delta,
        HsCircuitStats {
            cannibalized: 1,
            launched: 0,
            extends: 1
        },
        "the rendezvous circuit is one pre-built circuit plus one hop"
    );

    // The same network and visitor; the service has no circuit built ahead.
    let mut sim = published(51, false, Duration::from_secs(30));
    let (delta, fresh) = rendezvous(&mut sim);
    assert_eq!(
        delta,
        HsCircuitStats {
            cannibalized: 0,
            launched: 1,
            extends: 3
        },
        "G -> L2 -> M -> RP built from scratch"
    );
    eprintln!("INTRODUCE2 to RENDEZVOUS1: {cannibalized:?} cannibalized, {fresh:?} from scratch");
    assert!(
        cannibalized < fresh,
        "INTRODUCE2 to RENDEZVOUS1: {cannibalized:?} cannibalized, {fresh:?} from scratch"
    );
}

#[test]
fn a_rendezvous_stream_the_service_ends_before_connected_is_not_retried() {
    let mut sim = published(52, true, Duration::ZERO);
    for (n, reason) in [
        EndReason::RESOURCELIMIT,
        EndReason::TIMEOUT,
        EndReason::EXITPOLICY,
    ]
    .into_iter()
    .enumerate()
    {
        sim.services[0].refuse = Some(reason);
        let outcome = fetch(&mut sim, 1);
        let Outcome::Failed(text) = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(text.contains(&format!("{reason:?}")), "{reason:?}: {text}");
        let svc = &sim.services[0];
        let st = svc.client.onion_service_stats(svc.handle).unwrap();
        assert_eq!(
            st.streams_offered as usize,
            n + 1,
            "{reason:?}: the service saw the stream once"
        );
    }
}
