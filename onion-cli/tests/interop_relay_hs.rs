//! Interop test of `onion relay`'s onion-service roles in a private C tor network: a C tor
//! onion service publishes its descriptor to the HSDirs (ours among them) and keeps its
//! introduction points on our relays; a C tor client fetches its page through one of them with
//! one of our relays as rendezvous point. In its own test binary: its network gains relays the other interop
//! tests do not expect.

mod relay_support;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use relay_support::{
    fresh_dir, last_stats, sha256_hex, start_relay_with, wait_accepted, wait_listed, TorClient,
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
/// relay, and Guard and HSDir for every relay). The C tor service and client are configured
/// so that C tor's own random choices can only fall on our relays where the check needs
/// them (`ExcludeNodes` with `StrictNodes 0`: an excluded relay is still used where nothing
/// else will do, as for the HSDirs the hash ring names). C tor's onion-service circuits
/// that need uptime (the service's introduction circuits) take their second hop only from
/// Stable relays (`pick_restricted_middle_node` has no fallback), and its random picks
/// prefer Stable relays (`router_choose_random_node` falls back to others only when none
/// is left); ours, younger than the network, are not Stable within a test's time. And
/// circuits that need capacity take Fast relays: the test waits until ours are Fast
/// (at once: their first descriptors carry the bandwidth of their bandwidth self-test).
///
/// * The service keeps its guards on two C tor middles and its second hops on the C tor
///   relays (it excludes the authorities; `HSLayer2Nodes` names the middles and exits, as
///   C tor otherwise picks its sticky second hops once at start, possibly before it has
///   every descriptor) and asks for as many introduction points as there are C tor relays
///   plus three: once the Stable ones are taken, the rest are ours. Its introduction
///   circuits need a second hop that is Stable and Fast and not its guard, and the
///   authorities of a young network vote Stable on a median uptime the C tor relays,
///   started together, sit around: with the middles alone as second hops, a run where
///   only the service's guard among them was Stable failed every introduction circuit
///   ("Failed to find node for hop #2 of our path") for minutes; the exits widen the
///   choice. A service that still does not bootstrap or introduce itself through ours in
///   time is replaced, a bounded number of times.
/// * The client enters through the third C tor middle as its bridge (a bridge is never
///   picked for another position: `router_can_choose_node` takes only general-purpose
///   descriptors there) and excludes every other C tor relay: its rendezvous point
///   (`pick_rendezvous_node`, or the last hop of a preemptive internal circuit it
///   cannibalizes, both `router_choose_random_node` over the general-purpose relays not
///   excluded) is one of ours. It introduces itself through an introduction point that is
///   not excluded (`client_get_random_intro` prefers those): one of ours, or its bridge
///   (an onion-service circuit may end at its own guard), so INTRODUCE2 through ours is
///   reported, not asserted. (With the C tor middle as an ordinary guard, C tor took it as
///   rendezvous point too; with one of our young relays as its only guard, C tor 0.4.9
///   built no circuit: "Failed to find node for hop #1".) The client uses
///   microdescriptors: C tor 0.4.9 bridge clients with full descriptors stop at 75 % (see
///   `interop_relay_dir`). It starts once its bridge's consensus lists our relays with the
///   flags it needs and the bridge holds their microdescriptors: a bridge client has no
///   other source of them, and without them it has no middle for any circuit ("Failed to
///   find node for hop #2 of our path") until it asks again, later than the test waits.
///
/// The service uploads its descriptor to the responsible HSDirs; the client fetches the
/// page, sha256 equal. Our relays' counters show ESTABLISH_INTRO accepted and one of
/// them holding the rendezvous: ESTABLISH_RENDEZVOUS accepted,
/// RENDEZVOUS1 matched to it (joined) and cells spliced between the two circuits. Our
/// HSDirs storing the descriptor depends on the hash ring (our three among eleven HSDirs,
/// up to eight responsible): it is reported, not asserted.
#[test]
fn c_tor_service_and_client_use_our_hsdir_introduction_and_rendezvous_points() {
    let Some(net) = network_any_exit() else {
        return;
    };
    let n_auth = net.dirauthority_lines.len();
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:5.1}s] {what}", t0.elapsed().as_secs_f64());
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
    step("our relays' descriptors accepted");
    let flags = wait_listed(&auth_consensus, &fp_refs, Duration::from_secs(120));
    step(&format!("listed: {flags:?}"));
    for f in &flags {
        assert!(f.iter().any(|x| x == "HSDir"), "HSDir flag: {f:?}");
        assert!(f.iter().any(|x| x == "Guard"), "Guard flag: {f:?}");
    }

    // Fast: our relays' first descriptors state the bandwidth their self-test measured, so
    // the first consensus listing them normally says Fast already.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let fast = fps.iter().all(|fp| {
            relay_support::consensus_flags(&auth_consensus[0], fp)
                .is_some_and(|f| f.iter().any(|x| x == "Fast"))
        });
        if fast {
            break;
        }
        assert!(Instant::now() < deadline, "our relays are not Fast");
        std::thread::sleep(Duration::from_secs(1));
    }
    step("our relays Fast");
    for d in &relays {
        let err = d.stderr();
        eprintln!(
            "{}",
            err.lines()
                .find(|l| l.contains("publishing descriptor"))
                .unwrap_or_default()
        );
    }

    let middles: Vec<&support::Relay> = net.relays.iter().filter(|r| r.role == "middle").collect();
    assert!(middles.len() >= 2);
    let ids = |rs: &mut dyn Iterator<Item = &support::Relay>| -> String {
        rs.map(|r| format!("${}", r.fingerprint))
            .collect::<Vec<_>>()
            .join(",")
    };
    let c_tor_relays: Vec<&support::Relay> = net
        .relays
        .iter()
        .filter(|r| r.role != "authority")
        .collect();
    let n_intro = c_tor_relays.len() + 3;
    let service_config = format!(
        "EntryNodes {}\nHSLayer2Nodes {}\nExcludeNodes {}\nStrictNodes 0\n\
         ConfluxEnabled 0\nHiddenServiceNumIntroductionPoints {n_intro}\n",
        ids(&mut middles[..2].iter().copied()),
        ids(&mut c_tor_relays.iter().copied()),
        ids(&mut net.relays.iter().filter(|r| r.role == "authority")),
    );
    assert!(middles.len() >= 3);
    let client_guard = middles[2];
    let client_config = format!(
        "UseBridges 1\nBridge {} {}\nUseMicrodescriptors 1\nExcludeNodes {}\n\
         StrictNodes 0\nConfluxEnabled 0\n",
        client_guard.or_addr,
        client_guard.fingerprint,
        ids(&mut net
            .relays
            .iter()
            .filter(|r| r.fingerprint != client_guard.fingerprint)),
    );

    // The service. Its random choices (which of its EntryNodes is its guard, which
    // HSLayer2Nodes middle a circuit takes) meet the C tor middles' flags, which the
    // authorities revise every consensus (20 s here): an introduction circuit needs a
    // second hop that is Stable and Fast and not its guard, with no fallback
    // (`pick_restricted_middle_node`), and a young network's middles are sometimes not all
    // Stable, or not all Fast. A service that has not bootstrapped, or not established an
    // introduction point on our relays, in its time is replaced by a fresh one (fresh
    // data directory, fresh choices), a bounded number of times within a bounded time.
    let wait = |what: &str, deadline: Instant, ok: &dyn Fn() -> bool| -> bool {
        while !ok() {
            if Instant::now() >= deadline {
                eprintln!(
                    "{what}: not in time; our relays:\n{}",
                    relays
                        .iter()
                        .map(|d| support::last_lines(&d.stderr(), 2))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        true
    };
    let service_deadline = Instant::now() + Duration::from_secs(150);
    let mut service = None;
    for attempt in 0..3 {
        if Instant::now() >= service_deadline {
            break;
        }
        let name = format!("hs-service{attempt}");
        let hs_dir = net.dir.join(&name).join("hs");
        let svc = TorClient::start(
            net,
            &name,
            &format!(
                "HiddenServiceDir {}\nHiddenServicePort 80 127.0.0.1:{}\n\
                 {service_config}",
                hs_dir.display(),
                net.http_port,
            ),
        );
        let log = || std::fs::read_to_string(svc.dir.join("notice.log")).unwrap_or_default();
        let attempt_deadline = (Instant::now() + Duration::from_secs(60)).min(service_deadline);
        if !wait("service bootstrap", attempt_deadline, &|| {
            log().contains("Bootstrapped 100%")
        }) {
            eprintln!(
                "service {attempt} not bootstrapped:\n{}",
                support::last_lines(&log(), 8)
            );
            continue;
        }
        step(&format!("service {attempt} bootstrapped"));
        let intro_before = total(&relays, "intro_established");
        let attempt_deadline = (Instant::now() + Duration::from_secs(60)).min(service_deadline);
        if !wait(
            "introduction points on our relays",
            attempt_deadline,
            &|| total(&relays, "intro_established") > intro_before,
        ) {
            eprintln!(
                "service {attempt} established no introduction point on ours:\n{}",
                support::last_lines(&log(), 8)
            );
            continue;
        }
        step(&format!(
            "service {attempt}: introduction point established on ours"
        ));
        let host = match std::fs::read_to_string(hs_dir.join("hostname")) {
            Ok(h) => h.trim().to_string(),
            Err(e) => panic!("{}: {e}", hs_dir.join("hostname").display()),
        };
        service = Some((svc, host));
        break;
    }
    let Some((_service, host)) = service else {
        panic!("no C tor service bootstrapped and introduced itself through our relays in time");
    };

    // The client bootstraps from its bridge's cached microdescriptor consensus, which may
    // be older than the authorities' latest: until it lists our relays Fast (and the first
    // one Exit), the client, excluding every other relay, has no exit for the circuit it
    // builds to bootstrap ("Failed to choose an exit server") nor a relay for some
    // positions, and waits for the bridge's next consensus. Start it only once the
    // bridge's consensus gives our relays the flags the client needs.
    let bridge_consensus = client_guard.datadir.join("cached-microdesc-consensus");
    let bridge_wait = Instant::now();
    let deadline = bridge_wait + Duration::from_secs(120);
    loop {
        let ready = fps.iter().enumerate().all(|(i, fp)| {
            relay_support::consensus_flags(&bridge_consensus, fp).is_some_and(|f| {
                ["Fast", "Running", "Valid"]
                    .iter()
                    .chain(if i == 0 { &["Exit"][..] } else { &[][..] })
                    .all(|need| f.iter().any(|x| x == need))
            })
        });
        if ready {
            eprintln!(
                "the bridge's consensus lists our relays Fast after {:.0?}",
                bridge_wait.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge's consensus does not list our relays Fast"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // A bridge client takes its microdescriptors from its bridge alone, and a relay without
    // its microdescriptor is no candidate for any position. The bridge fetches those of a
    // new consensus after it (its microdescriptor consensus may list our relays before it
    // holds theirs): a client started then gets the others' only and, excluding every
    // other relay, has no middle ("Failed to find node for hop #2 of our path") until it
    // asks again, on a retry schedule longer than the test. Start it once the bridge holds
    // our relays' microdescriptors.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = relay_support::microdescs_missing(&client_guard.datadir, &fp_refs);
        if missing.is_empty() {
            step("the bridge holds our relays' microdescriptors");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge lacks the microdescriptors of {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The client. C tor's bridge client sometimes never builds a circuit ("Failed to find
    // node for hop #1": its bridge's descriptor not usable yet when it first builds, and
    // then a long retry schedule), and its choices of introduction point and paths are
    // random: a client that does not bootstrap or fetch in time is replaced by a fresh
    // one (fresh data directory, fresh choices), a bounded number of times within a
    // bounded time.
    let url = format!("http://{host}/");
    let client_deadline = Instant::now() + Duration::from_secs(200);
    let mut got = Vec::new();
    let mut client_log = String::new();
    for client_attempt in 0..4 {
        if Instant::now() >= client_deadline {
            break;
        }
        let client = TorClient::start(net, &format!("hs-client{client_attempt}"), &client_config);
        let log = || std::fs::read_to_string(client.dir.join("notice.log")).unwrap_or_default();
        let boot_deadline = (Instant::now() + Duration::from_secs(45)).min(client_deadline);
        while !log().contains("Bootstrapped 100%") && Instant::now() < boot_deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        client_log = log();
        step(&format!("client {client_attempt} started and waited for"));
        if !client_log.contains("Bootstrapped 100%") {
            eprintln!(
                "client {client_attempt} not bootstrapped within 45 s:\n{}",
                support::last_lines(&client_log, 6)
            );
            continue;
        }
        for attempt in 0..3 {
            let left = client_deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_secs(5) {
                break;
            }
            let (st, out, err) =
                support::curl_socks(client.socks_port, &url, left.as_secs().min(45));
            if st.success() {
                got = out;
                break;
            }
            eprintln!("client {client_attempt}, fetch {attempt}: {}", err.trim());
            std::thread::sleep(Duration::from_secs(2));
        }
        client_log = log();
        if !got.is_empty() {
            step(&format!("client {client_attempt} fetched the page"));
            break;
        }
    }
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(net.http_body.as_bytes()),
        "client log:\n{}",
        support::last_lines(&client_log, 20)
    );
    assert!(
        wait(
            "the rendezvous joined by our relays",
            Instant::now() + Duration::from_secs(150),
            &|| total(&relays, "rend_joined") >= 1
        ),
        "no rendezvous joined by our relays"
    );
    // One of our relays held the rendezvous: it accepted the client's
    // ESTABLISH_RENDEZVOUS, matched the service's RENDEZVOUS1 to it, and spliced the two
    // circuits (the page went through it).
    let rp: Vec<HashMap<String, u64>> = relays
        .iter()
        .filter_map(last_stats)
        .filter(|s| s.get("rend_joined").copied().unwrap_or(0) >= 1)
        .collect();
    assert!(!rp.is_empty());
    for s in &rp {
        assert!(s["rend_established"] >= s["rend_joined"], "{s:?}");
        assert!(s["rend_cells_spliced"] >= 2, "{s:?}");
    }
    for d in &relays {
        eprintln!(
            "{}",
            d.stderr()
                .lines()
                .rfind(|l| l.contains("stats:"))
                .unwrap_or_default()
        );
    }
    eprintln!(
        "our HSDirs stored {} descriptors and served {}; INTRODUCE2 relayed by ours: {}",
        total(&relays, "hsdir_stored"),
        total(&relays, "hsdir_served"),
        total(&relays, "introduce2")
    );
}
