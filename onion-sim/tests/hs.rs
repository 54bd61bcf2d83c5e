//! The onion-service story in the in-memory network (onion_hs::sim): a client fetches a page
//! from an onion service end to end, and neither side learns the other's relays beyond what
//! the protocol names (rend-spec-v3 §2–§4).

use onion_hs::sim::{run, HsReport, HsSimConfig, HsSimError};

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
