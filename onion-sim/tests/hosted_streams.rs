//! A hosted onion service's incoming streams through `onion_client::Client` on the simulated
//! network (both the service and its visitor are Clients, the relays `onion_relay::Relay`):
//! the service's application decides each stream (`Client::accept_stream` or
//! `Client::reject_stream`), and the visitor sees that decision: the body when accepted,
//! the END reason the service gave, at once, when refused.

use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_client::{Error, Event, Isolation};
use onion_sim::client::driver::{Outcome, Sim};
use onion_sim::client::runs;
use onion_sim::client::world::WorldConfig;

/// A bootstrapped visitor and a published public service (index 0).
fn published(seed: u64) -> Sim {
    let cfg = WorldConfig {
        seed,
        ..WorldConfig::default()
    };
    let (mut sim, _) = runs::bootstrapped(cfg).expect("bootstrap");
    let identity = onion_hs::keys::ExpandedKeypair::generate(sim.world.rng());
    let svc = sim.host_service(identity, vec![]).expect("host");
    assert_eq!(svc, 0);
    sim.run_until(Duration::from_secs(600), |s| {
        let c = &s.services[0].client;
        c.onion_service_stats(s.services[0].handle)
            .is_some_and(|st| st.uploads_ok > 0)
    })
    .expect("published");
    sim
}

fn fetch(sim: &mut Sim, isolation: u64) -> (Outcome, Duration) {
    let address = sim.services[0].address.clone();
    let start = sim.now();
    sim.fetch_from(&address, 10_000, Isolation(isolation))
        .expect("fetch");
    let i = sim.fetches.all.len() - 1;
    sim.run_until(Duration::from_secs(600), |s| {
        s.fetches.all[i].outcome != Outcome::Running
    })
    .expect("the fetch ends");
    let f = &sim.fetches.all[i];
    (f.outcome.clone(), f.ended.unwrap_or(start) - start)
}

/// Refused with CONNECTREFUSED (a service whose target is down, as C tor's sends): the
/// visitor's stream ends with that reason as soon as the answer crosses the rendezvous
/// circuit, never opened; accepted on the same rendezvous circuit, the body arrives whole.
#[test]
fn a_refused_stream_ends_with_the_services_reason_and_an_accepted_one_is_served() {
    let mut sim = published(41);
    sim.services[0].refuse = Some(EndReason::CONNECTREFUSED);
    let (outcome, _) = fetch(&mut sim, 1);
    let Outcome::Failed(text) = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(text.contains("CONNECTREFUSED"), "{text}");
    let f = &sim.fetches.all[0];
    assert_eq!(f.opened, None, "no CONNECTED before the refusal");
    assert_eq!(sim.services[0].served, 0);
    let svc = &sim.services[0];
    let st = svc.client.onion_service_stats(svc.handle).unwrap();
    assert_eq!((st.streams_offered, st.rendezvous), (1, 1));
    assert_eq!(
        svc.client.counts().2,
        0,
        "the refused stream is forgotten by the service"
    );

    // The rendezvous circuit is kept: the next stream of the same isolation meets the
    // service again at once, and is refused within one round trip of that circuit.
    let (outcome, took) = fetch(&mut sim, 1);
    assert!(matches!(&outcome, Outcome::Failed(t) if t.contains("CONNECTREFUSED")));
    assert!(took < Duration::from_secs(5), "{took:?}");

    sim.services[0].refuse = None;
    let (outcome, _) = fetch(&mut sim, 1);
    assert_eq!(outcome, Outcome::Ok);
    assert_eq!(sim.services[0].served, 1);
    let svc = &sim.services[0];
    let st = svc.client.onion_service_stats(svc.handle).unwrap();
    assert_eq!((st.streams_offered, st.rendezvous), (3, 1));
}

/// A port the service does not serve is refused with END DONE, as C tor's service refuses
/// it (no hint for a port scanner), without asking the application; the visitor reports it
/// as a refusal (`StreamEnded(DONE)`), not as a clean end of a stream that never opened,
/// and the rendezvous circuit goes on serving the service's port.
#[test]
fn a_port_the_service_does_not_serve_is_refused_with_done() {
    let mut sim = published(42);
    let address = sim.services[0].address.clone();
    let now = sim.now();
    let s = sim
        .client
        .connect(&address, 81, Isolation(1), now)
        .expect("connect");
    let closed = |sim: &Sim| {
        sim.events.iter().find_map(|(_, e)| match e {
            Event::StreamClosed { stream, error } if *stream == s => Some(error.clone()),
            _ => None,
        })
    };
    sim.run_until(Duration::from_secs(600), |sim| closed(sim).is_some())
        .expect("the stream ends");
    assert_eq!(
        closed(&sim),
        Some(Some(Error::StreamEnded(EndReason::DONE)))
    );
    assert!(!sim
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::StreamOpened { stream } if *stream == s)));
    assert_eq!(sim.services[0].incoming, 0, "the application was not asked");
    let (outcome, _) = fetch(&mut sim, 1);
    assert_eq!(outcome, Outcome::Ok);
    let svc = &sim.services[0];
    let st = svc.client.onion_service_stats(svc.handle).unwrap();
    assert_eq!((st.streams_offered, st.rendezvous), (1, 1));
}
