//! Interop test of `onion relay`'s onion-service roles in a private C tor network: a C tor
//! onion service publishes its descriptor to the HSDirs (ours among them) and keeps its
//! introduction points on our relays; a C tor client fetches its page with one of our relays
//! as rendezvous point. In its own test binary: its network gains relays the other interop
//! tests do not expect.

mod relay_support;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use relay_support::{
    fresh_dir, last_stats, start_relay_with, wait_accepted, wait_listed, TorClient,
};
use support::{network_any_exit, Daemon};

/// The sum of counter `name` over our relays' latest stats lines.
fn total(relays: &[Daemon], name: &str) -> u64 {
    relays
        .iter()
        .filter_map(last_stats)
        .map(|m: HashMap<String, u64>| m.get(name).copied().unwrap_or(0))
        .sum()
}

/// Three of our relays join the network (one an exit: the authorities vote Exit for any
/// relay). The C tor service and client exclude the C tor authorities and exits
/// (`ExcludeNodes`, `StrictNodes 0`: they may still use them where they must, as for the
/// HSDirs the hash ring names) and take C tor middle relays as guards (C tor takes as guards
/// only directory caches; and with every C tor middle excluded as well, C tor 0.4.9 found no
/// middle hop among our three young relays), so their introduction points are ours or C tor
/// middles. The service uploads its descriptor to the responsible HSDirs, ours among them,
/// and keeps introduction points on ours; new clients fetch its page (the descriptor from
/// the HSDirs) until one introduced itself through one of our relays. Our relays' counters
/// show ESTABLISH_INTRO accepted, descriptors stored and served, and INTRODUCE2 relayed.
///
/// Not covered here: our relay as rendezvous point. C tor picks rendezvous points among
/// Stable relays while it has any, and our relays, started after the network's, are not
/// Stable within a test's time; the in-memory test `onion-relay` `relay::hs_tests` covers
/// the rendezvous and the splice end to end.
#[test]
#[ignore = "depends on C tor choosing our relays among eleven for its HSDirs and introduction points; passed twice, then timed out once on a clean clone: run it with --ignored"]
fn c_tor_service_and_client_use_our_hsdir_and_introduction_points() {
    let Some(net) = network_any_exit() else {
        return;
    };
    let n_auth = net.dirauthority_lines.len();
    let mut relays = Vec::new();
    let mut fps = Vec::new();
    for (name, exit) in [("onionHsA", true), ("onionHsB", false), ("onionHsC", false)] {
        let dir = fresh_dir(net, name);
        let more: &[&str] = if exit {
            &["--exit-policy", "accept *:*"]
        } else {
            &[]
        };
        let (d, fp) = start_relay_with(net, name, &dir, support::free_port(), more);
        relays.push(d);
        fps.push(fp);
    }
    for d in &relays {
        wait_accepted(d, n_auth, Duration::from_secs(60));
    }
    let auth_consensus: Vec<_> = net
        .relays
        .iter()
        .filter(|r| r.role == "authority")
        .map(|r| r.datadir.join("cached-consensus"))
        .collect();
    let fp_refs: Vec<&str> = fps.iter().map(String::as_str).collect();
    let flags = wait_listed(&auth_consensus, &fp_refs, Duration::from_secs(120));
    for f in &flags {
        assert!(f.iter().any(|x| x == "HSDir"), "HSDir flag: {f:?}");
    }

    // Guards: C tor middle relays (the service may not have a single EntryNodes); the
    // authorities and the C tor exits are excluded.
    let middles: Vec<&support::Relay> = net.relays.iter().filter(|r| r.role == "middle").collect();
    assert!(middles.len() >= 2);
    let config = |guards: &[&support::Relay]| {
        let excluded: Vec<String> = net
            .relays
            .iter()
            .filter(|r| r.role != "middle")
            .map(|r| format!("${}", r.fingerprint))
            .collect();
        let entry: Vec<String> = guards
            .iter()
            .map(|g| format!("${}", g.fingerprint))
            .collect();
        format!(
            "EntryNodes {}\nExcludeNodes {}\nExitNodes ${}\nStrictNodes 0\nConfluxEnabled 0\n",
            entry.join(","),
            excluded.join(","),
            fps[0]
        )
    };
    let service_config = config(&middles[..2]);
    let client_config = config(&middles[..1]);

    // The service.
    let hs_dir = net.dir.join("hs-service").join("hs");
    let service = TorClient::start(
        net,
        "hs-service",
        &format!(
            "HiddenServiceDir {}\nHiddenServicePort 80 127.0.0.1:{}\n\
             HiddenServiceNumIntroductionPoints 3\n{service_config}",
            hs_dir.display(),
            net.http_port,
        ),
    );
    service.wait_bootstrapped(Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(120);
    let host = loop {
        if let Ok(h) = std::fs::read_to_string(hs_dir.join("hostname")) {
            break h.trim().to_string();
        }
        assert!(Instant::now() < deadline, "no hostname");
        std::thread::sleep(Duration::from_millis(500));
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(150);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within 150 s; our relays:\n{}",
                relays
                    .iter()
                    .map(|d| support::last_lines(&d.stderr(), 2))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    // Introduction points established on our relays, descriptors stored by ours.
    wait("introduction points on our relays", &|| {
        total(&relays, "intro_established") >= 1
    });
    wait("descriptors on our HSDirs", &|| {
        total(&relays, "hsdir_stored") >= 1
    });

    // The clients (a new one while the introduction went through a C tor relay).
    let url = format!("http://{host}/");
    for round in 0..6 {
        let client = TorClient::start(net, &format!("hs-client-{round}"), &client_config);
        client.wait_bootstrapped(Duration::from_secs(120));
        let mut got = Vec::new();
        for attempt in 0..6 {
            let (st, out, err) = support::curl_socks(client.socks_port, &url, 60);
            if st.success() && out == net.http_body.as_bytes() {
                got = out;
                break;
            }
            eprintln!("round {round} attempt {attempt}: {}", err.trim());
            std::thread::sleep(Duration::from_secs(3));
        }
        assert_eq!(
            got,
            net.http_body.as_bytes(),
            "client log:\n{}",
            support::last_lines(
                &std::fs::read_to_string(client.dir.join("notice.log")).unwrap_or_default(),
                20
            )
        );
        std::thread::sleep(Duration::from_secs(2));
        if total(&relays, "introduce2") >= 1 {
            break;
        }
    }
    wait("INTRODUCE2 relayed, descriptors served", &|| {
        total(&relays, "introduce2") >= 1 && total(&relays, "hsdir_served") >= 1
    });
    for d in &relays {
        eprintln!(
            "{}",
            d.stderr()
                .lines()
                .rfind(|l| l.contains("stats:"))
                .unwrap_or_default()
        );
    }
}
