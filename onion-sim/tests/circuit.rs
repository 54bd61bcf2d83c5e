//! The in-memory Tor network: a client fetches more than 1 MiB through guard, middle and exit
//! over real channels, circuits and streams, with virtual time and a seeded RNG.

use onion_circuit::circuit::HandshakeKind;
use onion_sim::circuit::{self as sim, SimConfig, CLIENT_ADDR, WEB_ADDR, WEB_HOST};

fn print_story(r: &sim::Report) {
    for l in &r.story {
        eprintln!(
            "{:>10.3} ms  {:<7} {}",
            l.at.as_secs_f64() * 1e3,
            l.party,
            l.text
        );
    }
}

#[test]
fn three_hop_fetch_of_more_than_a_mebibyte() {
    let cfg = SimConfig::default();
    let r = sim::run(cfg.clone()).expect("run");
    print_story(&r);
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert!(r.body.len() > 1 << 20);
    assert_eq!(r.body.len() as u64, cfg.response_len);
    assert!(r.body == r.expected_body, "body intact");
    // SENDMEs flowed both ways: the client acknowledged the exit's DATA (circuit v1 and
    // stream), and the exit checked the client's authenticated SENDMEs.
    assert!(
        r.client_stats.circ_sendmes_sent >= 25,
        "{:?}",
        r.client_stats
    );
    assert!(
        r.client_stats.stream_sendmes_sent >= 55,
        "{:?}",
        r.client_stats
    );
    assert_eq!(
        r.exit_stats.circ_sendmes_received,
        r.client_stats.circ_sendmes_sent
    );
    assert_eq!(
        r.exit_stats.stream_sendmes_received,
        r.client_stats.stream_sendmes_sent
    );
    assert_eq!(
        r.exit_stats.data_cells_sent,
        r.client_stats.data_cells_received
    );
}

#[test]
fn each_relay_sees_only_its_neighbours() {
    let r = sim::run(SimConfig {
        response_len: 50_000,
        ..SimConfig::default()
    })
    .expect("run");
    let client = CLIENT_ADDR.to_string();
    let web = WEB_ADDR.to_string();
    let guard = r.seen_by("guard").expect("guard");
    let middle = r.seen_by("middle").expect("middle");
    let exit = r.seen_by("exit").expect("exit");
    assert!(guard.contains(&client));
    assert!(
        guard.iter().any(|a| a.starts_with("10.0.0.2")),
        "guard knows the middle"
    );
    assert!(
        guard
            .iter()
            .all(|a| !a.contains(&web) && !a.contains(WEB_HOST) && !a.starts_with("10.0.0.3")),
        "the guard never sees the destination nor the exit: {guard:?}"
    );
    assert!(
        middle
            .iter()
            .all(|a| !a.contains(&client) && !a.contains(&web) && !a.contains(WEB_HOST)),
        "the middle sees only guard and exit: {middle:?}"
    );
    assert!(exit.iter().any(|a| a.contains(&web)));
    assert!(
        exit.iter()
            .all(|a| !a.contains(&client) && !a.starts_with("10.0.0.1")),
        "the exit never sees the client nor the guard: {exit:?}"
    );
    let web_seen = r.seen_by("web").expect("web");
    assert_eq!(
        web_seen.iter().cloned().collect::<Vec<_>>(),
        vec!["10.0.0.3".to_owned()]
    );
}

#[test]
fn deterministic_for_a_seed() {
    let cfg = SimConfig {
        response_len: 20_000,
        ..SimConfig::default()
    };
    let a = sim::run(cfg.clone()).expect("run");
    let b = sim::run(cfg).expect("run");
    assert_eq!(a.story, b.story);
    assert_eq!(a.total_time, b.total_time);
}

#[test]
fn other_shapes_one_hop_and_four_hops_create_fast() {
    let one = sim::run(SimConfig {
        hops: 1,
        response_len: 30_000,
        first_hop: HandshakeKind::Ntor,
        ..SimConfig::default()
    })
    .expect("1 hop");
    assert_eq!(one.body, one.expected_body);
    let four = sim::run(SimConfig {
        hops: 4,
        response_len: 30_000,
        first_hop: HandshakeKind::CreateFast,
        ..SimConfig::default()
    })
    .expect("4 hops");
    assert_eq!(four.body, four.expected_body);
}
