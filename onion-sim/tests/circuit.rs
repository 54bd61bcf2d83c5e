//! The circuit-level story: a bare client fetches more than 1 MiB through guard, middle and
//! exit, every one an `onion_relay::Relay`, over real channels, circuits and streams, with
//! virtual time and a seeded RNG.

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
    // SENDMEs flowed: the client acknowledged the exit's DATA with a circuit SENDME (v1,
    // authenticated) every 100 cells and a stream SENDME every 50 (tor-spec §7.3, §7.4);
    // had the exit not accepted them, its windows would have closed before the end.
    let s = r.client_stats;
    assert!(s.data_cells_received >= cfg.response_len / 498, "{s:?}");
    assert_eq!(s.circ_sendmes_sent, s.data_cells_received / 100, "{s:?}");
    assert_eq!(s.stream_sendmes_sent, s.data_cells_received / 50, "{s:?}");
    assert!(s.circ_sendmes_sent >= 25, "{s:?}");
    // Every relay freed the circuit after the client's DESTROY.
    assert!(r
        .story
        .last()
        .is_some_and(|l| l.text.contains("freed the circuit")));
}

#[test]
fn each_relay_sees_only_its_neighbours() {
    let r = sim::run(SimConfig {
        response_len: 50_000,
        ..SimConfig::default()
    })
    .expect("run");
    let ip = |i: usize| r.path[i].1.ip().to_string();
    let name = |i: usize| r.path[i].0.as_str();
    let client = CLIENT_ADDR.to_string();
    let web = WEB_ADDR.to_string();
    let guard = r.seen_by(name(0)).expect("guard");
    let middle = r.seen_by(name(1)).expect("middle");
    let exit = r.seen_by(name(2)).expect("exit");
    assert!(guard.contains(&client), "{guard:?}");
    assert!(
        guard.iter().any(|a| a.starts_with(&ip(1))),
        "guard knows the middle: {guard:?}"
    );
    assert!(
        guard
            .iter()
            .all(|a| !a.contains(&web) && !a.contains(WEB_HOST) && !a.starts_with(&ip(2))),
        "the guard never sees the destination nor the exit: {guard:?}"
    );
    assert!(
        middle.iter().any(|a| a.starts_with(&ip(0)))
            && middle.iter().any(|a| a.starts_with(&ip(2))),
        "the middle knows guard and exit: {middle:?}"
    );
    assert!(
        middle
            .iter()
            .all(|a| !a.contains(&client) && !a.contains(&web) && !a.contains(WEB_HOST)),
        "the middle sees only guard and exit: {middle:?}"
    );
    assert!(exit.iter().any(|a| a.contains(&web)), "{exit:?}");
    assert!(
        exit.contains(WEB_HOST),
        "the exit resolved the name: {exit:?}"
    );
    assert!(
        exit.iter()
            .all(|a| !a.contains(&client) && !a.starts_with(&ip(0))),
        "the exit never sees the client nor the guard: {exit:?}"
    );
    let web_seen = r.seen_by("web").expect("web");
    assert_eq!(web_seen.iter().cloned().collect::<Vec<_>>(), vec![ip(2)]);
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
