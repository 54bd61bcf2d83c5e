//! `onion_client::Client` on the simulated network (`onion_sim::client`), driven exactly as
//! an embedder drives it over sockets: the runs of [`onion_sim::client::runs`].

use std::time::Duration;

use onion_circuit::circuit::HandshakeKind;
use onion_client::Isolation;
use onion_sim::client::driver::Outcome;
use onion_sim::client::runs;
use onion_sim::client::world::WorldConfig;

fn cfg(seed: u64) -> WorldConfig {
    WorldConfig {
        seed,
        ..WorldConfig::default()
    }
}

/// From nothing to a verified directory, fetched over BEGIN_DIR from the simulated
/// authorities: every relay usable, progress reported up to 100%, and the consensus,
/// certificates and microdescriptors asked of the authorities.
#[test]
fn bootstrap_from_simulated_authorities() {
    let mut sim = onion_sim::client::driver::Sim::new(cfg(1), None).expect("sim");
    let rep = runs::bootstrap(&mut sim, Duration::from_secs(300)).expect("bootstrap");
    println!("bootstrap: {rep:?}");
    assert_eq!(rep.relays_usable, sim.world.n_relays());
    assert_eq!(rep.progress.last(), Some(&100));
    let paths: Vec<&str> = rep.requests.iter().map(|l| l.path.as_str()).collect();
    assert!(
        paths.iter().any(|p| p.contains("consensus-microdesc")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("/tor/keys/")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("/tor/micro/d/")),
        "{paths:?}"
    );
    assert!(rep.requests.iter().all(|l| l.relay.starts_with("auth")));
    assert!(rep.time < Duration::from_secs(30), "{:?}", rep.time);
    // Same seed, same run.
    let mut again = onion_sim::client::driver::Sim::new(cfg(1), None).expect("sim");
    let rep2 = runs::bootstrap(&mut again, Duration::from_secs(300)).expect("bootstrap");
    assert_eq!(rep.time, rep2.time);
    assert_eq!(rep.requests, rep2.requests);
}

/// 100 concurrent streams with one isolation share a few circuits; every body arrives with
/// the web server's SHA-256.
#[test]
fn hundred_concurrent_streams_share_circuits() {
    let (mut sim, _) = runs::bootstrapped(cfg(2)).expect("bootstrap");
    let rep = runs::streams(
        &mut sim,
        100,
        64 * 1024,
        Isolation::NONE,
        Duration::from_secs(600),
    )
    .expect("streams");
    println!(
        "100 streams: {} ok, {} circuits at the exits, {:.1} MB/s virtual, {:?}",
        rep.ok,
        rep.exit_circuits,
        rep.throughput() / 1e6,
        rep.time
    );
    assert_eq!(rep.ok, 100, "{:?}", rep.failures);
    assert_eq!(rep.body_bytes, 100 * 64 * 1024);
    assert!(rep.exit_circuits >= 1 && rep.exit_circuits < 10, "{rep:?}");
}

/// The exit dies mid-transfer: the stream ends with an error (not a clean end, not a
/// complete body), and the next stream is carried through another exit.
#[test]
fn relay_dying_mid_transfer() {
    let rep = runs::relay_dies(cfg(3)).expect("run");
    println!("relay dies: {rep:?}");
    // The circuit was destroyed under the stream: its end says so.
    assert!(
        matches!(&rep.first, Outcome::Failed(why) if why.contains("DESTROY")),
        "{rep:?}"
    );
    assert!(rep.received >= 256 * 1024 && rep.received < 4 << 20);
    assert_eq!(rep.second, Outcome::Ok);
    assert!(
        rep.second_exit.as_ref().is_some_and(|e| *e != rep.killed),
        "{rep:?}"
    );
}

/// The guard in use dies: the next stream goes through another guard; once it is back and
/// the retry time passed, the client uses it again.
#[test]
fn guard_failure_and_recovery() {
    let rep = runs::guard_failure(cfg(4), Duration::from_secs(3600)).expect("run");
    println!("guard failure: {rep:?}");
    assert_eq!(rep.while_down, Outcome::Ok, "{rep:?}");
    // Another guard carried the stream (the dead one cannot hold a connection).
    assert!(!rep.guards_while_down.is_empty(), "{rep:?}");
    assert_eq!(rep.after, Outcome::Ok);
    assert!(rep.guards_after.contains(&rep.first_guard), "{rep:?}");
}

/// The authorities publish the next consensus: the client refreshes in the dir-spec §5.1
/// window and receives a consensus diff, which it applies and verifies.
#[test]
fn directory_refresh_by_diff() {
    let rep = runs::refresh_by_diff(cfg(5)).expect("run");
    println!("refresh: {rep:?}");
    assert!(rep.after.0 > rep.before.0);
    assert!(rep.requests.iter().any(|l| l.diff), "{rep:?}");
}

/// A client restarted from what it persisted does not fetch the consensus again and can
/// fetch at once.
#[test]
fn restart_from_persisted_state() {
    let rep = runs::restart(cfg(6)).expect("run");
    println!("restart: {rep:?}");
    assert_eq!(rep.consensus_requests, 0, "{rep:?}");
    assert_eq!(rep.fetch, Outcome::Ok);
}

/// Streams of different isolation tokens never share a circuit: two groups of streams
/// need at least two circuits at the exits (the second group may take a clean circuit
/// built while the first ran, so the count is over both batches).
#[test]
fn isolated_streams_use_separate_circuits() {
    let (mut sim, _) = runs::bootstrapped(cfg(8)).expect("bootstrap");
    let a = runs::streams(&mut sim, 5, 10_000, Isolation(1), Duration::from_secs(120))
        .expect("streams");
    let b = runs::streams(&mut sim, 5, 10_000, Isolation(2), Duration::from_secs(120))
        .expect("streams");
    assert_eq!((a.ok, b.ok), (5, 5), "{a:?} {b:?}");
    assert!(a.exit_circuits >= 1, "{a:?}");
    assert!(a.exit_circuits + b.exit_circuits >= 2, "{a:?} {b:?}");
}

/// The benchmark run: 100 parallel 1 MiB streams; throughput in virtual time and CPU time
/// per byte (wall clock of this process) printed.
#[test]
fn benchmark_hundred_parallel_mebibyte_streams() {
    let (mut sim, _) = runs::bootstrapped(cfg(9)).expect("bootstrap");
    let cpu = std::time::Instant::now();
    let rep = runs::streams(
        &mut sim,
        100,
        1 << 20,
        Isolation::NONE,
        Duration::from_secs(3600),
    )
    .expect("streams");
    let cpu = cpu.elapsed();
    println!(
        "100 x 1 MiB: {} ok over {} circuits in {:.2} s virtual ({:.1} MB/s); CPU {:.2} s, {:.0} ns per body byte",
        rep.ok,
        rep.exit_circuits,
        rep.time.as_secs_f64(),
        rep.throughput() / 1e6,
        cpu.as_secs_f64(),
        cpu.as_nanos() as f64 / rep.body_bytes.max(1) as f64
    );
    assert_eq!(rep.ok, 100, "{:?}", rep.failures);
    assert_eq!(rep.body_bytes, 100 << 20);
}

/// The benchmark run with congestion control (proposal 324) negotiated with the exits:
/// every body intact, and faster than fixed windows on the same network.
#[test]
fn benchmark_with_congestion_control() {
    let run = |cc: bool| {
        let (mut sim, _) = runs::bootstrapped(WorldConfig {
            congestion_control: cc,
            ..cfg(10)
        })
        .expect("bootstrap");
        let cpu = std::time::Instant::now();
        let rep = runs::streams(
            &mut sim,
            20,
            1 << 20,
            Isolation::NONE,
            Duration::from_secs(3600),
        )
        .expect("streams");
        println!(
            "20 x 1 MiB, congestion control {cc}: {} ok in {:.2} s virtual ({:.1} MB/s), CPU {:.2} s",
            rep.ok,
            rep.time.as_secs_f64(),
            rep.throughput() / 1e6,
            cpu.elapsed().as_secs_f64()
        );
        assert_eq!(rep.ok, 20, "{:?}", rep.failures);
        rep.throughput()
    };
    let fixed = run(false);
    let vegas = run(true);
    assert!(vegas > fixed, "{vegas} vs {fixed}");
}

/// Onion-service client and host, both `Client`s on the same network, with client
/// authorization: without the key the client cannot read the descriptor; with it, the body
/// arrives whole through introduction and rendezvous.
#[test]
fn onion_service_with_client_authorization() {
    let rep = runs::onion_service(cfg(11), 200_000).expect("run");
    println!("onion service: {rep:?}");
    assert!(matches!(rep.without_key, Outcome::Failed(_)), "{rep:?}");
    assert_eq!(rep.with_key, Outcome::Ok, "{rep:?}");
    assert_eq!((rep.incoming, rep.served), (1, 1), "{rep:?}");
    assert!(rep.hsdir_requests >= 2, "{rep:?}");
}

/// The links' bandwidth bounds what the client gets: with every exit's access link at
/// 1 MB/s, a 2 MiB body takes at least two seconds of virtual time, and the same run with
/// the default links is faster. The same seed gives the same run.
#[test]
fn link_bandwidth_bounds_throughput_and_runs_repeat() {
    use onion_sim::client::world::{AccessLink, Role};
    let run = |slow: bool| {
        let (mut sim, _) = runs::bootstrapped(cfg(12)).expect("bootstrap");
        if slow {
            for r in sim.world.relays_of(Role::Exit) {
                sim.world.set_relay_link(
                    r,
                    AccessLink {
                        latency: Duration::from_millis(10),
                        bandwidth: 1_000_000,
                    },
                );
            }
        }
        let rep = runs::streams(
            &mut sim,
            1,
            2 << 20,
            Isolation::NONE,
            Duration::from_secs(600),
        )
        .expect("streams");
        assert_eq!(rep.ok, 1, "{rep:?}");
        rep.time
    };
    let slow = run(true);
    let fast = run(false);
    println!("2 MiB: {slow:?} over 1 MB/s exit links, {fast:?} over the defaults");
    assert!(slow >= Duration::from_secs(2), "{slow:?}");
    assert!(fast < slow, "{fast:?} vs {slow:?}");
    assert_eq!(run(true), slow, "same seed, same run");
}

/// The authorities' signatures are checked for real: a consensus changed after signing is
/// refused (the client reports the failure and stays without a directory).
#[test]
fn tampered_consensus_is_refused() {
    let mut sim = onion_sim::client::driver::Sim::new(cfg(13), None).expect("sim");
    assert!(sim.world.tamper_consensus());
    let r = sim.run_until(Duration::from_secs(120), |s| {
        s.events
            .iter()
            .any(|(_, e)| matches!(e, onion_client::Event::DirectoryFailed(_)))
    });
    assert!(r.is_ok(), "no failure reported: {}", sim.status());
    assert!(!sim.client.is_bootstrapped());
    let failed = sim.events.iter().find_map(|(_, e)| match e {
        onion_client::Event::DirectoryFailed(err) => Some(err.to_string()),
        _ => None,
    });
    println!("refused: {failed:?}");
    assert!(
        failed.as_deref().is_some_and(|f| f.contains("verif")),
        "{failed:?}"
    );
}

/// 100 concurrent streams in ten isolation groups: at least ten circuits, spread over the
/// exits, every body intact.
#[test]
fn hundred_streams_in_ten_isolation_groups() {
    let (mut sim, _) = runs::bootstrapped(cfg(14)).expect("bootstrap");
    for g in 0..10 {
        for _ in 0..10 {
            sim.fetch(100_000, Isolation(g + 1)).expect("fetch");
        }
    }
    sim.run_until(Duration::from_secs(600), |s| s.fetches.finished() == 100)
        .expect("run");
    assert_eq!(sim.fetches.ok(), 100, "{}", sim.status());
    let exits = sim.world.relays_of(onion_sim::client::world::Role::Exit);
    let circuits: Vec<u64> = exits
        .iter()
        .map(|&r| sim.world.relay_stats(r).circuits)
        .collect();
    println!("circuits per exit: {circuits:?}");
    assert!(circuits.iter().sum::<u64>() >= 10, "{circuits:?}");
    assert!(
        circuits.iter().filter(|&&c| c > 0).count() >= 2,
        "{circuits:?}"
    );
}

/// `onion sim --onion`: a public service and one with client authorization, both on
/// `onion_relay::Relay` relays; the page arrives intact, through relays that stored the
/// descriptor, held introduction circuits and joined the rendezvous.
#[test]
fn onion_fetch_with_and_without_client_authorization() {
    use onion_sim::client::runs::onion_fetch;
    for auth in [false, true] {
        let r = onion_fetch(WorldConfig::default(), 300_000, auth).expect("run");
        assert_eq!(r.outcome, Outcome::Ok, "auth {auth}: {r:?}");
        assert_eq!(r.body_len, 300_000);
        assert_eq!(r.served, r.incoming);
        match (&r.without_key, auth) {
            (None, false) => {}
            (Some(Outcome::Failed(_)), true) => {}
            (o, _) => panic!("auth {auth}: without the key {o:?}"),
        }
        assert!(!r.hsdirs_stored.is_empty() && !r.hsdirs_served.is_empty());
        assert!(r.hsdirs_served.is_subset(&r.hsdirs_stored));
        assert!(!r.intro_points.is_empty());
        assert!(r.introduced_at.is_subset(&r.intro_points));
        assert_eq!(r.rendezvous_points.len(), 1, "{r:?}");
        assert!(r.story.iter().any(|l| l.text.starts_with("page complete")));
    }
}

/// `onion sim`'s run: bootstrap, one circuit, one document. The circuit view the story
/// reports is the client's own: three hops of the world added with CREATE2 ntor, then
/// EXTEND2 (ntor-v3 to an exit the client negotiates congestion control with), and the
/// flow-control counters of the whole transfer (every DATA cell of the body, a circuit SENDME
/// per `sendme_inc` cells, no stream SENDMEs under congestion control).
#[test]
fn one_document_through_one_circuit_told_step_by_step() {
    let size = 400_000;
    let fixed = runs::fetch_document(cfg(3), size).expect("fixed windows");
    assert_eq!(fixed.outcome, Outcome::Ok, "{:?}", fixed.story);
    assert_eq!(fixed.status_line, "HTTP/1.0 200 OK");
    assert_eq!(fixed.body_len, size);
    let v = fixed.circuit_end.as_ref().expect("view at the end");
    assert_eq!(v.hops.len(), 3);
    let kinds: Vec<HandshakeKind> = v.hops.iter().map(|h| h.handshake).collect();
    assert_eq!(kinds, [HandshakeKind::Ntor; 3]);
    let cells = v.flow.data_cells_received;
    assert!(
        cells >= size / 498 && cells <= size / 498 + 5,
        "{:?}",
        v.flow
    );
    assert_eq!(v.flow.circ_sendmes_sent, cells / 100, "{:?}", v.flow);
    assert_eq!(v.flow.stream_sendmes_sent, cells / 50, "{:?}", v.flow);
    assert!(v.congestion_control.is_none());
    let told = |s: &str| fixed.story.iter().any(|l| l.text.contains(s));
    assert!(told("bootstrap 100%"));
    assert!(told("circuit 1 built: "));
    assert!(told("CONNECTED"));
    assert!(told(" DATA cells received"));

    let mut c = cfg(3);
    c.congestion_control = true;
    let cc = runs::fetch_document(c, size).expect("congestion control");
    assert_eq!(cc.outcome, Outcome::Ok);
    let v = cc.circuit_end.as_ref().expect("view at the end");
    assert_eq!(v.hops[0].handshake, HandshakeKind::Ntor);
    assert_eq!(v.hops[2].handshake, HandshakeKind::NtorV3);
    let inc = u64::from(v.congestion_control.expect("negotiated").sendme_inc);
    assert_eq!(v.flow.circ_sendmes_sent, v.flow.data_cells_received / inc);
    assert_eq!(v.flow.stream_sendmes_sent, 0);
    // The same seed, the same story.
    let again = runs::fetch_document(cfg(3), size).expect("again");
    assert_eq!(again.story, fixed.story);
}
