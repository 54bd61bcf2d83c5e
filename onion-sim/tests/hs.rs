//! The onion-service story in the in-memory network (onion_sim::hs): a client fetches a page
//! from an onion service end to end, and neither side learns the other's relays beyond what
//! the protocol names (rend-spec-v3 §2–§4).

use onion_sim::hs::{run, HsReport, HsSimConfig, HsSimError};

fn check(r: &HsReport) {
    assert!(
        r.status_line.starts_with("HTTP/1.0 200"),
        "{}",
        r.status_line
    );
    assert_eq!(r.body.len(), r.expected_body.len());
    assert!(r.body == r.expected_body, "page corrupted");
    // The client learned exactly the introduction points, from the descriptor.
    let ips: std::collections::BTreeSet<String> = r.intro_points.iter().cloned().collect();
    assert_eq!(r.client_learned, ips);
    // The service learned exactly the rendezvous point, from INTRODUCE2.
    assert_eq!(
        r.service_learned,
        [r.rend_point.clone()].into_iter().collect()
    );
    // Neither built a circuit through the other's private relays.
    assert!(r.client_path.is_disjoint(&r.service_private), "{r:?}");
    assert!(r.service_path.is_disjoint(&r.client_private), "{r:?}");
    // The relays both sides used are only those the protocol names: introduction points,
    // the rendezvous point, and HSDirs (public, chosen by the hash ring).
    for n in r.client_path.intersection(&r.service_path) {
        assert!(
            ips.contains(n) || *n == r.rend_point || r.hsdirs.contains(n),
            "{n} shared"
        );
    }
    // The intro points and the rendezvous point are third hops: they never see either party,
    // only middles; the service's middle never sees the client, and vice versa.
    for n in r.intro_points.iter().chain([&r.rend_point]) {
        let seen = r.neighbours_of(n).unwrap();
        assert!(
            !seen.contains("client") && !seen.contains("service"),
            "{n}: {seen:?}"
        );
    }
    for n in &r.service_private {
        assert!(!r.neighbours_of(n).unwrap().contains("client"));
    }
    for n in &r.client_private {
        assert!(!r.neighbours_of(n).unwrap().contains("service"));
    }
    // The story ends with the page's digest.
    let last = r.story.last().unwrap();
    assert_eq!(last.text, format!("page SHA-256 {}", r.digest_hex()));
}

#[test]
fn client_fetches_page_from_onion_service() {
    let r = run(&HsSimConfig::default()).unwrap();
    check(&r);
    // Enough data that SENDMEs flowed end to end, through the joined circuits, on the
    // virtual hop: circuit-level (every 100 cells) and stream-level (every 50).
    assert!(r.body.len() > 250_000);
    assert!(
        r.client_stats.circ_sendmes_sent >= 5,
        "{:?}",
        r.client_stats
    );
    assert!(
        r.client_stats.stream_sendmes_sent >= 10,
        "{:?}",
        r.client_stats
    );
    assert_eq!(
        r.service_stats.circ_sendmes_received,
        r.client_stats.circ_sendmes_sent
    );
    for l in &r.story {
        eprintln!("{:>8.3} {:>8} {}", l.at.as_secs_f64(), l.party, l.text);
    }
}

#[test]
fn with_client_authorization_and_other_seeds() {
    for seed in [2, 3] {
        let r = run(&HsSimConfig {
            seed,
            client_auth: seed == 2,
            page_len: 20_000,
            ..HsSimConfig::default()
        })
        .unwrap();
        check(&r);
    }
}

#[test]
fn deterministic() {
    let cfg = HsSimConfig {
        page_len: 5000,
        ..HsSimConfig::default()
    };
    let a = run(&cfg).unwrap();
    let b = run(&cfg).unwrap();
    assert_eq!(a.story, b.story);
    assert_eq!(a.digest, b.digest);
}

#[test]
fn too_few_relays_refused() {
    let cfg = HsSimConfig {
        relays: 5,
        ..HsSimConfig::default()
    };
    assert!(matches!(run(&cfg), Err(HsSimError::Config(_))));
}

/// The same story in the channel-level network (`onion_sim::hs`): every party and relay talks
/// over channels with link handshakes; each party opens one channel, to its guard, and reuses
/// it for all its circuits (tor-spec §5.3.1); only the guards ever accept a channel from a
/// party; the rendezvous point joins the two circuits and tears the service's side down when
/// the client's side goes (rend-spec-v3 §4.2).
#[test]
fn onion_service_over_channels() {
    use onion_sim::hs::{run as sim_run, HsSimConfig, CLIENT_ADDR, SERVICE_ADDR};
    let r = sim_run(&HsSimConfig {
        seed: 4,
        page_len: 20_000,
        ..HsSimConfig::default()
    })
    .unwrap();
    assert_eq!(r.body, r.expected_body);
    let lines = |party: &str, prefix: &str| {
        r.story
            .iter()
            .filter(|l| l.party == party && l.text.starts_with(prefix))
            .count()
    };
    // One channel per party, to its guard, opened by a link handshake.
    assert_eq!(lines("client", "opening a channel to the relay0"), 1);
    assert_eq!(lines("client", "opening a channel"), 1);
    assert_eq!(lines("service", "opening a channel to the relay2"), 1);
    assert_eq!(lines("service", "opening a channel"), 1);
    assert_eq!(
        lines("client", "channel to the relay0 open: link protocol v5"),
        1
    );
    // Only the guards accepted channels from the parties' addresses.
    for (addr, guard) in [(CLIENT_ADDR, "relay0"), (SERVICE_ADDR, "relay2")] {
        let from = format!("accepted a channel from {addr} ");
        let who: Vec<&str> = r
            .story
            .iter()
            .filter(|l| l.text.starts_with(&from))
            .map(|l| l.party.as_str())
            .collect();
        assert_eq!(who, vec![guard]);
    }
    assert_eq!(
        r.neighbours_of("relay0").unwrap(),
        &["client", "relay1"].map(String::from).into()
    );
    assert!(r.neighbours_of("relay2").unwrap().contains("service"));
    // Many circuits, one channel: the client built at least three (descriptor fetch,
    // rendezvous, introduction), all over its one channel to its guard.
    let client_circuits = lines("client", "circuit built");
    assert!(client_circuits >= 3, "{client_circuits}");
    // Cells crossed the links as bytes: the page alone crosses six links, three on each side
    // of the rendezvous point.
    assert!(r.link_bytes > 6 * 20_000, "{}", r.link_bytes);
    // The rendezvous point joined the circuits, then closed both.
    let rp = r.rend_point.as_str();
    assert_eq!(
        lines(rp, "rendezvous point: RENDEZVOUS1 matches the cookie"),
        1
    );
    assert_eq!(lines(rp, "joined circuit closed"), 1);
}
