//! Interop tests of `onion relay` in a private C tor network: two of our relays join it
//! (keys generated and kept, descriptors accepted by the C tor authorities), the
//! authorities list them Running and Valid, and a C tor client pinned to our relay as its
//! middle hop fetches a file through it. In its own test binary: its network gains relays
//! the other interop tests do not expect.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::{network, Daemon, TorNet};

/// A fresh private directory under the network's directory.
fn fresh_dir(net: &TorNet, name: &str) -> PathBuf {
    let d = net.dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Starts `onion relay` and waits for its key line; returns the daemon and the fingerprint.
fn start_relay(net: &TorNet, nickname: &str, data_dir: &Path, port: u16) -> (Daemon, String) {
    start_relay_with(net, nickname, data_dir, port, &[])
}

/// [`start_relay`] with more arguments.
fn start_relay_with(
    net: &TorNet,
    nickname: &str,
    data_dir: &Path,
    port: u16,
    more: &[&str],
) -> (Daemon, String) {
    let or_port = format!("127.0.0.1:{port}");
    let mut args = vec![
        "relay",
        "--or-port",
        &or_port,
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--authorities",
        net.authorities_file.to_str().unwrap(),
        "--nickname",
        nickname,
        "--contact",
        "onion-test@tornet.invalid",
        "--testing-network",
    ];
    args.extend_from_slice(more);
    let mut d = Daemon::start(&args);
    let line = d.wait_for("fingerprint", Duration::from_secs(60));
    let fp = line
        .split("fingerprint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(fp.len(), 40, "{line}");
    (d, fp)
}

/// Waits until every authority answered the upload with 200; returns those lines.
fn wait_accepted(d: &Daemon, n_auth: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = d.stderr();
        let ups: Vec<String> = err
            .lines()
            .filter(|l| l.contains("descriptor upload to"))
            .map(str::to_string)
            .collect();
        if ups.len() >= n_auth {
            assert!(
                ups.iter().all(|l| l.contains(": accepted")),
                "an authority refused the descriptor:\n{err}"
            );
            return ups;
        }
        assert!(Instant::now() < deadline, "uploads not answered:\n{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unpadded standard base64 (the consensus `r` line's identity form).
fn base64_unpadded(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The flags (`s` line) of the relay `fp` in the consensus at `path`, if listed.
fn consensus_flags(path: &Path, fp: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = hex::decode(fp).ok()?;
    let b64 = base64_unpadded(&id);
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("r ") && l.split(' ').nth(2) == Some(b64.as_str()) {
            for l2 in lines.by_ref() {
                if let Some(flags) = l2.strip_prefix("s ") {
                    return Some(flags.split(' ').map(str::to_string).collect());
                }
                if l2.starts_with("r ") {
                    return Some(Vec::new());
                }
            }
        }
    }
    None
}

/// Waits until the consensus at every path lists every relay of `fps` with Running and
/// Valid; returns the flags of each relay in the first path's consensus.
fn wait_listed(paths: &[PathBuf], fps: &[&str], timeout: Duration) -> Vec<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let all: Option<Vec<Vec<String>>> = paths
            .iter()
            .flat_map(|p| fps.iter().map(move |fp| consensus_flags(p, fp)))
            .collect();
        if let Some(all) = all {
            if all
                .iter()
                .all(|f| f.iter().any(|x| x == "Running") && f.iter().any(|x| x == "Valid"))
            {
                return all[..fps.len()].to_vec();
            }
        }
        assert!(
            Instant::now() < deadline,
            "not listed Running+Valid within {timeout:?}: {:?}",
            paths
                .iter()
                .map(|p| fps
                    .iter()
                    .map(|fp| consensus_flags(p, fp))
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A C tor client of the network with `extra` torrc lines; killed on drop.
struct TorClient {
    child: Child,
    dir: PathBuf,
    socks_port: u16,
}

impl TorClient {
    fn start(net: &TorNet, name: &str, extra: &str) -> TorClient {
        let dir = fresh_dir(net, name);
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let socks_port = support::free_port();
        let torrc = format!(
            "TestingTorNetwork 1\nDataDirectory {d}\nRunAsDaemon 0\nSandbox 0\n\
             Log notice file {d}/notice.log\nSafeLogging 0\nSocksPort 127.0.0.1:{socks_port}\n\
             Address 127.0.0.1\nAddressDisableIPv6 1\nClientUseIPv6 0\n\
             PathsNeededToBuildCircuits 0.67\nUseMicrodescriptors 0\n{auth}\n{extra}\n",
            d = dir.display(),
            auth = net.dirauthority_lines.join("\n"),
        );
        let torrc_path = dir.join("torrc");
        std::fs::write(&torrc_path, torrc).unwrap();
        let empty = dir.join("torrc-defaults");
        std::fs::write(&empty, "").unwrap();
        let child = Command::new("tor")
            .arg("-f")
            .arg(&torrc_path)
            .arg("--defaults-torrc")
            .arg(&empty)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tor");
        TorClient {
            child,
            dir,
            socks_port,
        }
    }

    fn wait_bootstrapped(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(self.dir.join("notice.log")).unwrap_or_default();
            if log.contains("Bootstrapped 100%") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "C tor client not bootstrapped:\n{}",
                support::last_lines(&log, 20)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for TorClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Steps in order, on one network: (1) two relays start, generate keys (0600 files in a 0700
/// directory) and keep them across a restart, and every C tor authority accepts their
/// descriptors; (2) the authorities' consensus lists both with Running and Valid; (3) a C
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
