//! Interop test of `onion relay` as a directory cache (dir-spec §4, tor-spec §6.2.1): C tor
//! clients that use our relay as their bridge fetch everything through BEGIN_DIR streams
//! to it, as a bridge user does: our descriptor (`/tor/server/authority`), the consensus,
//! the authorities' key certificates, and the microdescriptors of every relay. A C tor client takes only what
//! verifies (signatures, digests), so its bootstrapping to 100% through our relay alone
//! shows that what the cache holds and serves is what it must be. In its own test binary:
//! its network gains a relay the other interop tests do not expect.

mod relay_support;
mod support;

use std::time::Duration;

use relay_support::{fresh_dir, start_relay, wait_accepted, wait_stats, TorClient};
use support::network;

/// Steps in order, on one network: (1) our relay starts, publishes, and fetches from an
/// authority both consensus flavours and every microdescriptor and server descriptor they
/// list (its log says none is missing); (2) a C tor client with our relay as its only
/// bridge, using microdescriptors, bootstraps to 100% from it alone, and our relay counts
/// the consensus, key-certificate, microdescriptor and descriptor (its own) requests it
/// answered, none refused; (3) restarted with no authority to fetch from, it serves the
/// documents it kept in its data directory (0600 files under C tor's names): a new C tor
/// bridge client takes from it the very consensus it kept.
#[test]
fn c_tor_bridge_clients_bootstrap_from_our_directory_cache() {
    let Some(net) = network() else { return };
    let n_auth = net.dirauthority_lines.len();
    let dir = fresh_dir(net, "onion-relay-dir");
    let port = support::free_port();
    let (relay, fp) = start_relay(net, "onionRelayDir", &dir, port);
    wait_accepted(&relay, n_auth, Duration::from_secs(60));

    // (1) The cache is complete: every listed document fetched and kept.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let line = loop {
        let err = relay.stderr();
        let last = err
            .lines()
            .rfind(|l| l.contains("directory cache holds"))
            .unwrap_or_default();
        if last.matches("(0 missing)").count() == 2 && !last.contains(" 0 microdescriptors") {
            break last.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache did not fill:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("{line}");
    assert!(
        !relay.stderr().contains("descriptors not kept"),
        "{}",
        relay.stderr()
    );

    // (2) A microdescriptor client whose only way in is our relay. (A C tor 0.4.9 bridge
    // client with full descriptors stops at 75 % with any bridge, a C tor relay as well:
    // "Not enough acceptable routers (0/3 direct ...)". `router_can_choose_node` refuses,
    // for a direct connection of a bridge user, a general-purpose descriptor and, through
    // its `else if`, a bridge-purpose one too; with full descriptors every node has one, so
    // `count_acceptable_nodes(nodes, 1)` is 0 and `new_route_len` discards every circuit.
    // With microdescriptors the other relays have no routerinfo and count as direct.)
    let bridge = format!("UseBridges 1\nBridge 127.0.0.1:{port} {fp}\n");
    let client = TorClient::start(
        net,
        "tor-client-bridge-md",
        &format!("{bridge}UseMicrodescriptors 1\n"),
    );
    client.wait_bootstrapped(Duration::from_secs(120));
    // (No file is fetched through it: the network's exits accept only its own loopback
    // addresses, which a microdescriptor's port summary cannot say, so a microdescriptor
    // client sees no exit here; the harness's clients use full descriptors for that reason.)
    let stats = wait_stats(
        &relay,
        "directory requests answered",
        Duration::from_secs(10),
        |s| {
            s.get("dir_microdescs").copied().unwrap_or(0) > 0
                && s.get("dir_consensus").copied().unwrap_or(0) > 0
                && s.get("dir_keys").copied().unwrap_or(0) > 0
                && s.get("dir_descriptors").copied().unwrap_or(0) > 0
        },
    );
    eprintln!("after the microdescriptor client: {stats:?}");
    assert_eq!(stats.get("dir_not_ok"), Some(&0), "{stats:?}");
    let log = std::fs::read_to_string(client.dir.join("notice.log")).unwrap_or_default();
    assert!(
        !log.contains("Received http status code 404"),
        "{}",
        support::last_lines(&log, 30)
    );
    drop(client);

    // (3) Restarted, our relay serves what it kept in its data directory before it fetches
    // anything: it is restarted with authorities whose DirPorts nobody listens on, so every
    // document it serves comes from its files (verified again at start). A new C tor
    // bridge client takes from it the consensus our relay kept, byte for byte.
    drop(relay);
    let kept = std::fs::read(dir.join("cached-microdesc-consensus")).expect("kept consensus");
    for f in [
        "cached-certs",
        "cached-consensus",
        "cached-microdesc-consensus",
        "cached-microdescs",
        "cached-descriptors",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(dir.join(f))
            .expect(f)
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{f}");
    }
    let dead = support::free_port();
    let lines: Vec<String> = net
        .dirauthority_lines
        .iter()
        .map(|l| {
            let mut w: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            let i = w.len() - 2;
            w[i] = format!("127.0.0.1:{dead}");
            w.join(" ")
        })
        .collect();
    let unreachable = dir.with_file_name("authorities-unreachable.txt");
    std::fs::write(&unreachable, lines.join("\n") + "\n").unwrap();
    let or_port = format!("127.0.0.1:{port}");
    let mut relay = support::Daemon::start(&[
        "relay",
        "--or-port",
        &or_port,
        "--data-dir",
        dir.to_str().unwrap(),
        "--authorities",
        unreachable.to_str().unwrap(),
        "--nickname",
        "onionRelayDir",
        "--testing-network",
        "--assume-reachable",
    ]);
    let restored = relay.wait_for("directory cache restored", Duration::from_secs(30));
    eprintln!("{restored}");
    assert!(
        restored.contains("microdescriptor consensus yes")
            && !restored.contains(" 0 microdescriptors"),
        "{restored}"
    );
    let client = TorClient::start(
        net,
        "tor-client-bridge-restarted",
        &format!("{bridge}UseMicrodescriptors 1\n"),
    );
    let stats = wait_stats(
        &relay,
        "consensus served after the restart",
        Duration::from_secs(60),
        |s| s.get("dir_consensus").copied().unwrap_or(0) > 0,
    );
    eprintln!("after the restart: {stats:?}");
    assert_eq!(stats.get("dir_not_ok"), Some(&0), "{stats:?}");
    let err = relay.stderr();
    assert!(
        !err.lines()
            .any(|l| l.starts_with("onion relay: consensus valid-after")),
        "our relay fetched a consensus:\n{err}"
    );
    // The C tor client keeps what it took (verified: `cached-`; waiting for certificates:
    // `unverified-`): the consensus our relay kept.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = [
            "cached-microdesc-consensus",
            "unverified-microdesc-consensus",
        ]
        .iter()
        .find_map(|f| std::fs::read(client.dir.join(f)).ok());
        if let Some(g) = got {
            break g;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the C tor client kept no consensus:\n{}",
            support::last_lines(
                &std::fs::read_to_string(client.dir.join("notice.log")).unwrap_or_default(),
                30
            )
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        relay_support::sha256_hex(&got),
        relay_support::sha256_hex(&kept),
        "the C tor client took another consensus than the one our relay kept"
    );
    drop(client);
    drop(relay);
}
