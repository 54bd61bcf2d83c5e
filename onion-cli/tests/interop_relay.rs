//! Interop tests of `onion relay` in a private C tor network: two of our relays join it
//! (keys generated and kept, descriptors accepted by the C tor authorities), the
//! authorities list them Running and Valid, and a C tor client pinned to our relay as its
//! middle hop fetches a file through it. In its own test binary: its network gains relays
//! the other interop tests do not expect.

mod relay_support;
mod support;

use std::path::Path;
use std::time::Duration;

use relay_support::{fresh_dir, sha256_hex, start_relay, wait_accepted, wait_listed, TorClient};
use support::network;

/// Steps in order, on one network: (1) two relays start, generate keys (0600 files in a 0700
/// directory) and keep them across a restart, and every C tor authority accepts their
/// descriptors; (2) the authorities' consensus lists both with Running and Valid, and the
/// fresh relay with the non-zero bandwidth its bandwidth self-test measured; (3) a C
/// tor client pinned to one of them as middle (`MiddleNodes`, `StrictNodes 1`) fetches
/// 5 MiB through it, sha256 equal, and our relay counts the circuit.
#[test]
fn onion_relays_join_and_carry_a_c_tor_circuit() {
    let Some(net) = network() else { return };
    let n_auth = net.dirauthority_lines.len();
    let auth_consensus = net
        .relays
        .iter()
        .find(|r| r.role == "authority")
        .map(|r| r.datadir.join("cached-consensus"))
        .expect("an authority");

    // (1) Keys generated, then loaded after a restart; descriptors accepted.
    let dir_a = fresh_dir(net, "onion-relay-a");
    let dir_b = fresh_dir(net, "onion-relay-b");
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let (first, fp_a) = start_relay(net, "onionRelayA", &dir_a, port_a);
    assert!(
        first.stderr().contains("generated keys"),
        "{}",
        first.stderr()
    );
    wait_accepted(&first, n_auth, Duration::from_secs(60));
    // The authorities test a new relay's ORPort once, when its first descriptor arrives
    // (C tor's `dirserv_should_launch_reachability_test`); the restarted relay's
    // descriptor differs only cosmetically and brings no new test. Killed before those
    // tests finish, the relay would stay without Running until the authorities' slow
    // test cycle comes back to it: keep it until it is listed.
    wait_listed(
        std::slice::from_ref(&auth_consensus),
        &[&fp_a],
        Duration::from_secs(120),
    );
    drop(first);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir_a.join("keys")), 0o700);
        for f in [
            "secret_id_key",
            "ed25519_master_id_secret_key",
            "ed25519_signing_cert",
            "secret_onion_key_ntor",
            "secret_onion_key",
        ] {
            assert_eq!(mode(&dir_a.join("keys").join(f)), 0o600, "{f}");
        }
    }
    let (relay_a, fp_a2) = start_relay(net, "onionRelayA", &dir_a, port_a);
    assert!(
        relay_a.stderr().contains("loaded keys"),
        "{}",
        relay_a.stderr()
    );
    assert_eq!(fp_a, fp_a2, "the identity survives a restart");
    let (relay_b, fp_b) = start_relay(net, "onionRelayB", &dir_b, port_b);
    for l in wait_accepted(&relay_a, n_auth, Duration::from_secs(60))
        .iter()
        .chain(wait_accepted(&relay_b, n_auth, Duration::from_secs(60)).iter())
    {
        eprintln!("{l}");
    }

    // (2) Listed Running and Valid by the authorities (20-second voting in tornet), and
    // known to the C tor exits (an exit refuses streams from a previous hop it does not
    // know as a relay).
    let mut paths = vec![auth_consensus];
    paths.extend(
        net.relays
            .iter()
            .filter(|r| r.role == "exit")
            .map(|r| r.datadir.join("cached-consensus")),
    );
    let flags = wait_listed(&paths, &[&fp_a, &fp_b], Duration::from_secs(180));
    eprintln!(
        "consensus flags: onionRelayA {:?}, onionRelayB {:?}",
        flags[0], flags[1]
    );
    // Relay B ran once: its first descriptor, published after the bandwidth self-test,
    // states a non-zero observed bandwidth, and so does its first consensus entry (C tor
    // does the same: an entry with Bandwidth=0 is never Fast and is rarely chosen).
    let observed = relay_support::first_published_bandwidth(&relay_b);
    assert!(
        observed.is_some_and(|b| b > 0),
        "first descriptor's observed bandwidth {observed:?}:\n{}",
        relay_b.stderr()
    );
    let bw = relay_support::consensus_bandwidth(&paths[0], &fp_b);
    assert!(
        bw.is_some_and(|b| b > 0),
        "onionRelayB's consensus weight {bw:?}"
    );
    eprintln!(
        "onionRelayB: first descriptor's observed bandwidth {} bytes/s; consensus \
         Bandwidth={} (flags {:?})",
        observed.unwrap_or(0),
        bw.unwrap_or(0),
        flags[1]
    );
    // Our relays answer BEGIN_DIR and say `tunnelled-dir-server` (dir-spec §2.1.1): the
    // authorities vote them V2Dir.
    for (f, name) in flags.iter().zip(["onionRelayA", "onionRelayB"]) {
        assert!(f.iter().any(|x| x == "V2Dir"), "{name}: no V2Dir: {f:?}");
    }

    // (3) A C tor client with our relay A as its only possible middle hop.
    let body: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(net.http_root.join("relay5m.bin"), &body).unwrap();
    let client = TorClient::start(
        net,
        "tor-client-middle",
        &format!("MiddleNodes {fp_a}\nStrictNodes 1\n"),
    );
    client.wait_bootstrapped(Duration::from_secs(120));
    let url = format!("{}relay5m.bin", net.http_url);
    let mut got = Vec::new();
    for attempt in 0..4 {
        let (st, out, err) = support::curl_socks(client.socks_port, &url, 60);
        if st.success() && out.len() == body.len() {
            got = out;
            break;
        }
        eprintln!("fetch attempt {attempt}: {st} {} bytes: {err}", out.len());
        std::thread::sleep(Duration::from_secs(3));
    }
    assert_eq!(
        got.len(),
        body.len(),
        "{}\nclient log:\n{}",
        relay_a.stderr(),
        support::last_lines(
            &std::fs::read_to_string(client.dir.join("notice.log")).unwrap_or_default(),
            20
        )
    );
    assert_eq!(sha256_hex(&got), sha256_hex(&body));
    eprintln!(
        "fetched 5 MiB through onionRelayA as middle: sha256 {}",
        sha256_hex(&got)
    );
    // Relay A carried circuits (its counters are logged every 5 s).
    std::thread::sleep(Duration::from_secs(6));
    let err = relay_a.stderr();
    let stats = err
        .lines()
        .rfind(|l| l.contains("stats:"))
        .unwrap_or_default()
        .to_string();
    let created: u64 = stats
        .split("circuits_created ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(created > 0, "relay A created no circuit:\n{err}");
    eprintln!("relay A: {stats}");
    drop(client);
    drop(relay_b);
    drop(relay_a);
}
