//! Interop with the reference implementation: the `onion` binary against a private C tor
//! network on 127.0.0.1 (started once for this test binary by `support::network`; see
//! the README's "Against real Tor"). Every test is skipped, with a notice, when `tor` is not
//! installed; in CI (`.ci/run`) it always is.

mod support;

use std::time::Duration;

use support::{network, onion, run_bounded};

/// Test 1: a link handshake with every C tor relay of the network negotiates link protocol
/// version 5 and verifies the relay's RSA and ed25519 identities (tor-spec §4).
#[test]
fn link_handshake_with_every_relay() {
    let Some(net) = network() else { return };
    assert_eq!(net.relays.len(), 8, "3 authorities + 2 exits + 3 middles");
    for r in &net.relays {
        let (st, out, err) = run_bounded(
            onion()
                .args(["handshake", &r.or_addr, "--rsa-id", &r.fingerprint])
                .args(["--ed-id", &r.ed25519]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(
            st.success(),
            "{}: onion handshake failed: {err}",
            r.nickname
        );
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {out}", r.nickname));
        assert_eq!(v["link_version"], 5, "{}: {v}", r.nickname);
        assert_eq!(v["rsa_id"], r.fingerprint.as_str(), "{}", r.nickname);
        assert_eq!(v["ed_id"], r.ed25519.as_str(), "{}", r.nickname);
        assert_eq!(v["rsa_verified"], true, "{}", r.nickname);
        assert_eq!(v["ed_verified"], true, "{}", r.nickname);
    }
}

/// Test 1, negative side: a relay that is not who we expect is refused with a clear
/// one-line error, and quickly.
#[test]
fn link_handshake_refuses_the_wrong_identity() {
    let Some(net) = network() else { return };
    let r = net.relay("relay0");
    let other = net.relay("relay1");
    let (st, out, err) = run_bounded(
        onion().args(["handshake", &r.or_addr, "--rsa-id", &other.fingerprint]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!st.success(), "accepted the wrong RSA identity: {out}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    let (st, _, err) = run_bounded(
        onion()
            .args(["handshake", &r.or_addr, "--rsa-id", &r.fingerprint])
            .args(["--ed-id", &other.ed25519]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!st.success(), "accepted the wrong ed25519 identity");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
}

/// The `r` lines' identities (base64) of a consensus document, sorted.
fn consensus_identities(text: &str) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("r "))
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    ids.sort();
    ids
}

/// A fresh data directory inside the network's directory.
fn data_dir(net: &support::TorNet, name: &str) -> std::path::PathBuf {
    let d = net.dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn get(
    net: &support::TorNet,
    url: &str,
    data_dir: &std::path::Path,
    timeout_s: u64,
) -> (std::process::ExitStatus, String, String) {
    run_bounded(
        onion()
            .args(["get", url, "--authorities"])
            .arg(&net.authorities_file)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--timeout", &timeout_s.to_string()]),
        Duration::from_secs(timeout_s + 30),
    )
    .unwrap()
}

/// Test 2 and 3: bootstrap from the private authorities (the consensus verifies; its relays
/// are the ones C tor's own client has), then `onion get` of the local page through a C tor
/// exit; a second run reuses the cached documents.
#[test]
fn bootstrap_and_get_through_an_exit() {
    let Some(net) = network() else { return };
    let dd = data_dir(net, "onion-get");
    let (st, out, err) = get(net, &net.http_url, &dd, 90);
    assert!(st.success(), "onion get failed: {err}");
    assert_eq!(out, net.http_body, "body differs; stderr: {err}");
    assert!(
        err.contains("consensus verified (3 authority signatures valid, 2 needed"),
        "{err}"
    );
    assert!(err.contains("circuit built:"), "{err}");
    // Our verified consensus lists the same relays as C tor's client's.
    let ours = std::fs::read_to_string(dd.join("cached-consensus")).unwrap();
    let theirs = std::fs::read_to_string(net.client_datadir.join("cached-consensus")).unwrap();
    let valid_after = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("valid-after "))
            .map(str::to_string)
    };
    eprintln!(
        "ours: {:?}, C tor client's: {:?}",
        valid_after(&ours),
        valid_after(&theirs)
    );
    let (a, b) = (consensus_identities(&ours), consensus_identities(&theirs));
    assert_eq!(a.len(), net.relays.len(), "{a:?}");
    assert_eq!(a, b, "relay lists differ");
    // A second run uses the cached documents while the consensus is live (a testing
    // network's consensus is valid for only a few short voting intervals; if it has expired
    // meanwhile, the run must fetch a new one and still work).
    let live_for = std::fs::read_to_string(dd.join("cached-consensus.valid-until"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(|until| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            until.saturating_sub(now)
        })
        .expect("no cached-consensus.valid-until after the first run");
    let first_guard = first_hop(&err);
    let (st, out, err) = get(net, &net.http_url, &dd, 60);
    assert!(st.success(), "second onion get failed: {err}");
    assert_eq!(out, net.http_body);
    if live_for > 5 {
        assert!(err.contains("using cached directory documents"), "{err}");
    } else {
        eprintln!("cached consensus expired ({live_for} s left) before the second run; refetched");
    }
    // Both runs entered through a guard kept in the data directory's `state` file
    // (guard-spec §4): the sampled guards persist, and every guard used is confirmed there.
    let state = std::fs::read_to_string(dd.join("state")).expect("no guard state file");
    for guard in [first_guard, first_hop(&err)] {
        assert!(
            state.lines().any(|l| l.starts_with("Guard ")
                && l.contains(&format!(" nickname={guard} "))
                && l.contains(" confirmed_on=")),
            "guard {guard} is not a confirmed guard in the state file:\n{state}"
        );
    }
}

/// A SOCKS5 CONNECT to the host and port of `base_url` through the proxy at `proxy`, and an
/// HTTP/1.0 GET of `path` on it; the stream is returned unread past the SOCKS reply.
fn socks_get(proxy: &str, base_url: &str, path: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let hostport = base_url.trim_start_matches("http://").trim_end_matches('/');
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    let port: u16 = port.parse().unwrap();
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, 0]);
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [5, 0], "SOCKS reply {reply:?}");
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())
        .unwrap();
    s
}

/// The first hop of the last "circuit built: A -> B -> C" line of a run's stderr.
fn first_hop(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.split("circuit built: ").nth(1))
        .and_then(|hops| hops.split(" -> ").next())
        .unwrap_or_else(|| panic!("no circuit built:\n{stderr}"))
        .to_string()
}

/// Test 2, microdescriptor mode (`--dir-mode micro`, the public network's default): the
/// microdesc-flavour consensus from the private authorities verifies with their fetched key
/// certificates, every relay's microdescriptor arrives and matches its `m` line's digest, and
/// the relays are the ones C tor's own client lists.
#[test]
fn bootstrap_with_microdescriptors() {
    let Some(net) = network() else { return };
    let dd = data_dir(net, "onion-bootstrap-micro");
    let run = || {
        run_bounded(
            onion()
                .args(["bootstrap", "--dir-mode", "micro", "--authorities"])
                .arg(&net.authorities_file)
                .arg("--data-dir")
                .arg(&dd)
                .args(["--timeout", "60"]),
            Duration::from_secs(90),
        )
        .unwrap()
    };
    let (st, out, err) = run();
    assert!(st.success(), "onion bootstrap failed: {err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    let n = net.relays.len() as u64;
    assert_eq!(j["mode"], "micro", "{j}");
    assert_eq!(j["cached"], false, "{j}");
    assert_eq!(j["signatures_valid"], 3, "{j}");
    assert_eq!(j["signatures_needed"], 2, "{j}");
    assert_eq!(j["relays"], n, "{j}");
    assert_eq!(
        j["descriptors"], n,
        "every microdescriptor matched: {j}\n{err}"
    );
    assert_eq!(j["usable_relays"], n, "{j}");
    assert!(err.contains("directory mode: micro"), "{err}");
    assert!(err.contains("microdescriptors"), "{err}");
    // Our verified microdesc consensus lists the same relays as C tor's client's consensus.
    let ours = std::fs::read_to_string(dd.join("cached-microdesc-consensus")).unwrap();
    assert!(ours.contains("network-status-version 3 microdesc"));
    assert_eq!(
        ours.lines().filter(|l| l.starts_with("m ")).count() as u64,
        n
    );
    let theirs = std::fs::read_to_string(net.client_datadir.join("cached-microdesc-consensus"))
        .or_else(|_| std::fs::read_to_string(net.client_datadir.join("cached-consensus")))
        .unwrap();
    assert_eq!(consensus_identities(&ours), consensus_identities(&theirs));
    // A second run verifies the cached documents again and reports the same figures.
    let (st, out, err) = run();
    assert!(st.success(), "second onion bootstrap failed: {err}");
    let k: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    assert_eq!(k["cached"], true, "{k}");
    assert_eq!(k["descriptors"], n, "{k}");
    assert_eq!(k["usable_relays"], n, "{k}");
    // With microdescriptors no exit's summary allows 127.0.0.1 (`reject 1-65535`): without an
    // explicit exit `onion get` finds no path and says so in one line; naming the exit (by
    // fingerprint) fetches the page through it.
    let micro_get = |extra: &[&str]| {
        run_bounded(
            onion()
                .args(["get", &net.http_url, "--dir-mode", "micro", "--authorities"])
                .arg(&net.authorities_file)
                .arg("--data-dir")
                .arg(&dd)
                .args(["--timeout", "60"])
                .args(extra),
            Duration::from_secs(90),
        )
        .unwrap()
    };
    let (st, _, err) = micro_get(&[]);
    assert!(
        !st.success(),
        "a micro-mode client found an exit for 127.0.0.1: {err}"
    );
    assert!(
        err.trim()
            .lines()
            .last()
            .unwrap_or("")
            .contains("no path to 127.0.0.1"),
        "{err}"
    );
    let exit = net
        .relays
        .iter()
        .find(|r| r.role == "exit")
        .expect("an exit");
    // A young network's exit may refuse a stream (END MISC) while it does not yet know the
    // previous hop as a relay; make the request again, as a user would, at most 3 times.
    let mut attempt = 0;
    let (st, out, err) = loop {
        attempt += 1;
        let r = micro_get(&["--exit", &exit.fingerprint]);
        if r.0.success() || attempt >= 3 {
            break r;
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    assert!(
        st.success(),
        "onion get --exit {} failed: {err}",
        exit.nickname
    );
    assert_eq!(out, net.http_body, "body differs; stderr: {err}");
    assert!(err.contains(&format!("-> {}", exit.nickname)), "{err}");
}

/// Test 3, large body: 5 MiB through an exit, byte for byte (stream and circuit SENDMEs
/// from a real C tor exit, about 10 000 cells).
#[test]
fn get_a_5_mib_body() {
    let Some(net) = network() else { return };
    let mut body = Vec::with_capacity(5 << 20);
    let mut x: u32 = 0x9e37_79b9;
    while body.len() < 5 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        body.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(net.http_root.join("big.bin"), &body).unwrap();
    let url = format!("{}big.bin", net.http_url);
    let dd = data_dir(net, "onion-get-big");
    let (st, out, err) = support::run_bounded_bytes(
        onion()
            .args(["get", &url, "--authorities"])
            .arg(&net.authorities_file)
            .arg("--data-dir")
            .arg(&dd)
            .args(["--timeout", "120"]),
        Duration::from_secs(150),
    )
    .unwrap();
    assert!(st.success(), "onion get failed: {err}");
    assert_eq!(out.len(), body.len(), "{err}");
    assert!(out == body, "5 MiB body differs");
}

/// Asserts a failed run with exactly one line on stderr, and returns that line.
fn one_line_failure(args: &[&str], limit: Duration) -> String {
    let t = std::time::Instant::now();
    let (st, _, err) = run_bounded(onion().args(args), limit + Duration::from_secs(10)).unwrap();
    assert!(!st.success(), "{args:?} succeeded");
    assert!(t.elapsed() <= limit, "{args:?} took {:?}", t.elapsed());
    let last = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("onion: error: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    last
}

/// Bad input at the CLI: a one-line error and a non-zero exit, never a panic or a hang.
/// (No network needed.)
#[test]
fn bad_input_gives_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("onion-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let quick = Duration::from_secs(5);
    for (args, want) in [
        (vec!["get", "ftp://example.com/"], "malformed URL"),
        (vec!["get", "http://"], "malformed URL"),
        (vec!["get", "http://exa mple.com/"], "malformed URL"),
        (vec!["get", "http://127.0.0.1:99999/"], "malformed URL"),
        (vec!["get", "http://abcdef.onion/"], "bad onion address"),
        (
            vec![
                "get",
                "http://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.onion/",
            ],
            "bad onion address",
        ),
        (
            vec!["get", "http://x/", "--authorities", "/nonexistent/file"],
            "--authorities",
        ),
        (
            vec!["get", "http://x/", "--bogus"],
            "unexpected argument '--bogus'",
        ),
        (
            vec!["handshake", "not-an-address", "--rsa-id", "00"],
            "bad address",
        ),
        (
            vec!["handshake", "127.0.0.1:1", "--rsa-id", "zz"],
            "--rsa-id",
        ),
    ] {
        let line = one_line_failure(&args, quick);
        assert!(line.contains(want), "{args:?}: {line}");
    }
    // A malformed authority list names the line.
    let bad = dir.join("bad-authorities.txt");
    std::fs::write(&bad, "# ok\nDirAuthority a orport=1 127.0.0.1:1 XYZ\n").unwrap();
    let line = one_line_failure(
        &["get", "http://x/", "--authorities", bad.to_str().unwrap()],
        quick,
    );
    assert!(line.contains("line 2"), "{line}");
    // An unreachable authority: a clear error within the timeout.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = dir.join("unreachable.txt");
    std::fs::write(
        &unreachable,
        format!(
            "DirAuthority gone orport={port} v3ident=329F4451BAA808E78DF40D2F286080779AD22095 \
             127.0.0.1:{port} A07048407BC479AA3FDD636ABF78594D2378FAF6\n"
        ),
    )
    .unwrap();
    let line = one_line_failure(
        &[
            "get",
            "http://127.0.0.1/",
            "--authorities",
            unreachable.to_str().unwrap(),
            "--timeout",
            "5",
        ],
        Duration::from_secs(8),
    );
    assert!(line.contains("no directory authority reachable"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A consensus that fails verification (the list names other v3 identities for two of
/// the three authorities, so only one valid signature remains of the two needed) is
/// refused with a one-line error.
#[test]
fn consensus_failing_verification_is_refused() {
    let Some(net) = network() else { return };
    let mut lines = net.dirauthority_lines.clone();
    for l in lines.iter_mut().skip(1) {
        let start = l.find("v3ident=").unwrap() + "v3ident=".len();
        l.replace_range(
            start..start + 40,
            "0123456789ABCDEF0123456789ABCDEF01234567",
        );
    }
    let file = net.dir.join("wrong-v3idents.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let line = one_line_failure(
        &[
            "get",
            &net.http_url,
            "--authorities",
            file.to_str().unwrap(),
            "--timeout",
            "30",
        ],
        Duration::from_secs(40),
    );
    assert!(line.contains("consensus failed verification"), "{line}");
}

/// Test 4: `onion socks` as curl's SOCKS5 proxy (`--socks5-hostname`): the same page, twice
/// (the second stream reuses the circuit). Meanwhile a client that connects and sends only
/// half a greeting is closed after `--handshake-timeout`.
#[test]
fn socks_proxy_with_curl() {
    use std::io::{Read, Write};
    let Some(net) = network() else { return };
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let auths = net.authorities_file.to_str().unwrap();
    let mut d = support::Daemon::start(&[
        "socks",
        "--listen",
        &listen,
        "--authorities",
        auths,
        "--handshake-timeout",
        "3",
    ]);
    d.wait_for("SOCKS5 proxy listening", Duration::from_secs(90));
    let mut idle = std::net::TcpStream::connect(&listen).unwrap();
    idle.write_all(&[5]).unwrap();
    let idle_since = std::time::Instant::now();
    // A client that asks for 24 MiB and does not read (more than the loopback socket buffers
    // absorb): its stream is held at its window, the circuit's other streams are not, and it
    // gets everything once it reads.
    let slow_body: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(net.http_root.join("socks-slow.bin"), &slow_body).unwrap();
    let mut slow = socks_get(&listen, &net.http_url, "socks-slow.bin");
    let slow_since = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let mut retries = 0;
    for _ in 0..2 {
        let ((st, body, err), failed) = support::curl_socks_retrying(port, &net.http_url, 60, 3);
        retries += failed;
        assert!(st.success(), "curl failed: {err}\nonion:\n{}", d.stderr());
        assert_eq!(String::from_utf8_lossy(&body), net.http_body);
    }
    // Both requests share one circuit (a refused stream may cost a new one).
    let built = d.stderr().matches("circuit built").count();
    assert!(built >= 1 && built <= 1 + retries, "{}", d.stderr());
    // The slow client was not cut off, however long it kept the proxy's buffer full (a
    // proxy that held the whole circuit would have to drop it to serve the others): it now
    // reads its whole body.
    std::thread::sleep(Duration::from_secs(15).saturating_sub(slow_since.elapsed()));
    let mut got = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    slow.read_to_end(&mut got).unwrap();
    let body_at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header")
        + 4;
    assert!(
        got[body_at..] == slow_body[..],
        "slow client got {} body bytes",
        got.len() - body_at
    );
    // The half-greeting client: closed (EOF or reset), not before its 3 s.
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("idle SOCKS client got {n} bytes"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "idle SOCKS client not closed: {e}\n{}",
            d.stderr()
        ),
    }
    assert!(idle_since.elapsed() >= Duration::from_secs(3));
    d.wait_for("sent no complete request", Duration::from_secs(10));
    // dir-spec §5.1: the proxy fetches the next consensus in its refresh window (on this
    // network a voting interval is 20 s) and goes on serving with it.
    let verified = |d: &support::Daemon| d.stderr().matches("consensus verified").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while verified(&d) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(verified(&d) >= 2, "no directory refresh:\n{}", d.stderr());
    // The refresh was a refresh of the held consensus (offering it for a diff), not a new
    // bootstrap. Which source it asks (a directory guard first, dir-spec §5, then the
    // authorities) is the client's choice, checked by onion-client's unit test
    // `a_refreshing_machine_asks_guards_then_authorities`.
    let err = d.stderr();
    assert!(err.contains("refreshing the consensus"), "{err}");
    // It fetches only the descriptors it lacks (unit test `refresh_reuses_held_descriptors`);
    // on a young network every relay may have republished since, so this is reported, not
    // required. A cache may answer the offered consensus with a diff (dir-spec §4.5.2), or
    // not.
    for l in err.lines().filter(|l| {
        l.contains("reused from the current directory")
            || l.contains("consensus received as a diff")
            || l.contains("diff does not apply")
    }) {
        eprintln!("interop: refresh: {l}");
    }
    assert!(!err.contains("diff does not apply"), "{err}");
    let ((st, body, err), _) = support::curl_socks_retrying(port, &net.http_url, 60, 3);
    assert!(
        st.success(),
        "curl after the refresh failed: {err}\n{}",
        d.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&body), net.http_body);
}

/// Test 5: `onion get http://<C tor onion service>.onion/`: descriptor from the HSDirs,
/// rendezvous, introduction and hs-ntor with C tor's service; the page arrives.
#[test]
fn get_from_a_c_tor_onion_service() {
    let Some(net) = network() else { return };
    net.wait_onion().unwrap();
    let url = format!("http://{}/", net.onion_hostname);
    let dd = data_dir(net, "onion-get-hs");
    // The service re-uploads its descriptor at each new time period (8 minutes here); an
    // HSDir may briefly lack it, so allow a second try.
    let mut last = String::new();
    for _ in 0..2 {
        let (st, out, err) = get(net, &url, &dd, 90);
        if st.success() {
            assert_eq!(out, net.http_body, "{err}");
            assert!(err.contains("rendezvous complete"), "{err}");
            return;
        }
        last = err;
        std::thread::sleep(Duration::from_secs(5));
    }
    panic!("onion get of the onion service failed: {last}");
}

/// `SIGNAL NEWNYM` to C tor's client (its control port, cookie authentication): it forgets
/// which HSDirs it already asked for a descriptor, as `tornet wait --onion` does.
fn newnym(net: &support::TorNet) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let state = std::fs::read_to_string(net.dir.join("state.json")).map_err(|e| e.to_string())?;
    let state: serde_json::Value = serde_json::from_str(&state).map_err(|e| e.to_string())?;
    let port = state["nodes"]["client"]["controlport"]
        .as_u64()
        .ok_or("no client control port in state.json")?;
    let cookie =
        std::fs::read(net.client_datadir.join("control_auth_cookie")).map_err(|e| e.to_string())?;
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port as u16)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let hex: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
    write!(s, "AUTHENTICATE {hex}\r\nSIGNAL NEWNYM\r\nQUIT\r\n").map_err(|e| e.to_string())?;
    let mut r = std::io::BufReader::new(s);
    for _ in 0..2 {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("250") {
            return Err(format!("control port: {line}"));
        }
    }
    Ok(())
}

/// C tor's client fetches `url` through its SocksPort (curl, `curl_secs` at most a try) until
/// it gets `want`: it may have to ask again after an HSDir said "not found" (NEWNYM makes it
/// forget that), bounded to 240 s overall. Returns the successful fetch's time and the number
/// of attempts; on failure, panics with the tail of `service`'s log.
fn c_tor_fetches(
    net: &support::TorNet,
    url: &str,
    want: &[u8],
    curl_secs: u64,
    service: &support::Daemon,
) -> (Duration, u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let t = std::time::Instant::now();
        let (st, got, err) = support::curl_socks(net.socks_port, url, curl_secs);
        if st.success() && got.len() == want.len() {
            assert_eq!(sha256_hex(&got), sha256_hex(want), "{url}: body differs");
            return (t.elapsed(), attempt);
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "C tor's client did not fetch {url} after {attempt} attempts ({} of {} bytes, \
                 {err})\nonion:\n{}",
                got.len(),
                want.len(),
                support::last_lines(&service.stderr(), 30)
            );
        }
        eprintln!(
            "attempt {attempt}: {} bytes; curl: {}",
            got.len(),
            err.trim()
        );
        let _ = newnym(net);
        std::thread::sleep(Duration::from_secs(3 * u64::from(attempt.min(5))));
    }
}

/// Test 6: `onion serve` hosts an onion service (introduction points, descriptors on the
/// HSDirs); C tor's client fetches `http://<our address>.onion/` with curl through its
/// SocksPort (introduction, rendezvous, hs-ntor and a stream spliced to the local page).
#[test]
fn c_tor_client_fetches_from_onion_serve() {
    let Some(net) = network() else { return };
    let keys = data_dir(net, "onion-serve-keys");
    let target = format!("127.0.0.1:{}", net.http_port);
    let auths = net.authorities_file.to_str().unwrap();
    let mut d = support::Daemon::start(&[
        "serve",
        "--target",
        &target,
        "--key-dir",
        keys.to_str().unwrap(),
        "--authorities",
        auths,
    ]);
    d.wait_for("service published", Duration::from_secs(150));
    let host = std::fs::read_to_string(keys.join("hostname")).unwrap();
    let url = format!("http://{}/", host.trim());
    let (_, attempt) = c_tor_fetches(net, &url, net.http_body.as_bytes(), 60, &d);
    assert!(
        d.stderr().contains("rendezvous with a client"),
        "{}",
        d.stderr()
    );
    // A 2 MiB body: ~4200 DATA cells from the service, paced by the C tor client's circuit
    // and stream SENDMEs on the virtual hop.
    let big: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(net.http_root.join("serve-big.bin"), &big).unwrap();
    let (st, body, err) = support::curl_socks(net.socks_port, &format!("{url}serve-big.bin"), 90);
    assert!(
        st.success(),
        "curl of 2 MiB failed: {err}\nonion:\n{}",
        d.stderr()
    );
    assert!(
        body == big,
        "2 MiB body differs ({} bytes received)",
        body.len()
    );
    eprintln!(
        "onion serve, after {attempt} fetch attempt(s):\n{}",
        d.stderr()
    );
}

/// A one-page HTTP server on `listener` for the test's target: answers every request with
/// `body`, until the listener is dropped with the thread (it runs for the test's life).
fn serve_page(listener: std::net::TcpListener, body: &'static [u8]) {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let reply = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = c
                .write_all(reply.as_bytes())
                .and_then(|_| c.write_all(body));
        }
    });
}

/// `onion serve` whose target is down answers a C tor client's stream with END
/// CONNECTREFUSED (as C tor's own service does, errno ECONNREFUSED) instead of CONNECTED
/// and then END: C tor's client gives its SOCKS application reply 5 ("connection
/// refused"), so curl exits at once with its SOCKS error (97, "(5)") rather than an empty
/// reply (52). Once the target listens again, the same service serves the page.
#[test]
fn c_tor_client_is_refused_by_onion_serve_whose_target_is_down() {
    let Some(net) = network() else { return };
    let keys = data_dir(net, "onion-serve-down-keys");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let auths = net.authorities_file.to_str().unwrap();
    let mut d = support::Daemon::start(&[
        "serve",
        "--target",
        &target.to_string(),
        "--key-dir",
        keys.to_str().unwrap(),
        "--authorities",
        auths,
    ]);
    d.wait_for("service published", Duration::from_secs(150));
    // The target goes down after the service started (it is checked at startup).
    drop(listener);
    let host = std::fs::read_to_string(keys.join("hostname")).unwrap();
    let url = format!("http://{}/", host.trim());
    // The first attempts may fail before the rendezvous (the descriptor reaching the
    // client's HSDirs); once the service is reached, its refusal is what curl reports.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (st, got, err) = support::curl_socks(net.socks_port, &url, 60);
        assert!(got.is_empty(), "a body from a service whose target is down");
        if d.stderr().contains("stream refused (CONNECTREFUSED(3))") {
            assert_eq!(st.code(), Some(97), "curl: {err}\nonion:\n{}", d.stderr());
            assert!(err.contains("(5)"), "curl: {err}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service was never reached after {attempt} attempts; curl: {err}\nonion:\n{}",
            support::last_lines(&d.stderr(), 30)
        );
        eprintln!("attempt {attempt}: curl: {}", err.trim());
        let _ = newnym(net);
        std::thread::sleep(Duration::from_secs(3));
    }
    // Again on the rendezvous circuit C tor keeps: refused promptly.
    let t = std::time::Instant::now();
    let (st, got, err) = support::curl_socks(net.socks_port, &url, 60);
    let took = t.elapsed();
    assert!(got.is_empty());
    assert_eq!(st.code(), Some(97), "curl: {err}");
    assert!(err.contains("(5)"), "curl: {err}");
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    eprintln!("C tor client refused by onion serve in {took:?}");
    // The target is back on the same port: the page is served.
    const PAGE: &[u8] = b"the target is back\n";
    serve_page(std::net::TcpListener::bind(target).unwrap(), PAGE);
    c_tor_fetches(net, &url, PAGE, 60, &d);
    assert!(!d.stderr().contains("panicked"), "{}", d.stderr());
}

/// RFC 4648 base32 without padding, lower case (as C tor writes client-auth keys).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Client authorization end to end over the private network (rend-spec-v3 §2.5.1.2,
/// §1.9.1): `onion serve --client-auth` publishes a descriptor encrypted to one client key
/// (C tor's `authorized_clients/*.auth` format); `onion get --client-key` with the matching
/// `.auth_private` file fetches the page; without it, or with another client's key, the
/// descriptor does not decrypt and `onion get` says so.
#[test]
fn client_auth_between_onion_serve_and_onion_get() {
    use onion_hs::x25519_dalek::{PublicKey, StaticSecret};
    let Some(net) = network() else { return };
    let keys = data_dir(net, "onion-serve-auth-keys");
    let auth_dir = data_dir(net, "onion-serve-auth-clients");
    std::fs::create_dir_all(&auth_dir).unwrap();
    let secret = StaticSecret::from([0x5au8; 32]);
    let public = PublicKey::from(&secret);
    std::fs::write(
        auth_dir.join("alice.auth"),
        format!("descriptor:x25519:{}\n", base32(public.as_bytes())),
    )
    .unwrap();
    let target = format!("127.0.0.1:{}", net.http_port);
    let mut d = support::Daemon::start(&[
        "serve",
        "--target",
        &target,
        "--key-dir",
        keys.to_str().unwrap(),
        "--client-auth",
        auth_dir.to_str().unwrap(),
        "--authorities",
        net.authorities_file.to_str().unwrap(),
    ]);
    d.wait_for("service published", Duration::from_secs(150));
    let host = std::fs::read_to_string(keys.join("hostname")).unwrap();
    let host = host.trim();
    let url = format!("http://{host}/");
    let key_file = |name: &str, sk: &StaticSecret| {
        let f = net.dir.join(name);
        let addr = host.trim_end_matches(".onion");
        std::fs::write(
            &f,
            format!("{addr}:descriptor:x25519:{}\n", base32(&sk.to_bytes())),
        )
        .unwrap();
        f
    };
    let alice = key_file("alice.auth_private", &secret);
    let mallory = key_file("mallory.auth_private", &StaticSecret::from([0x33u8; 32]));
    let get_with = |key: Option<&std::path::Path>| {
        let mut cmd = onion();
        cmd.args(["get", &url, "--authorities"])
            .arg(&net.authorities_file)
            .args(["--timeout", "90"]);
        if let Some(k) = key {
            cmd.arg("--client-key").arg(k);
        }
        run_bounded(&mut cmd, Duration::from_secs(120)).unwrap()
    };
    // The descriptor may reach the HSDirs a moment after "published": allow a second try.
    let mut last = String::new();
    let mut fetched = false;
    for _ in 0..3 {
        let (st, out, err) = get_with(Some(&alice));
        if st.success() {
            assert_eq!(out, net.http_body, "{err}");
            fetched = true;
            break;
        }
        last = err;
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(
        fetched,
        "onion get --client-key failed: {last}\nonion serve:\n{}",
        support::last_lines(&d.stderr(), 30)
    );
    for key in [None, Some(mallory.as_path())] {
        let (st, _, err) = get_with(key);
        assert!(!st.success(), "fetched without the right key ({key:?})");
        assert!(
            err.contains("no onion-service descriptor") && err.contains("client"),
            "{key:?}: {err}"
        );
    }
}

/// `n` random bytes (the OS's RNG: a fixed pattern could hide a misplaced cell).
fn random_body(n: usize) -> Vec<u8> {
    use rand_core::RngCore;
    let mut v = vec![0u8; n];
    rand_core::OsRng.fill_bytes(&mut v);
    v
}

/// SHA-256 in hex, to compare bodies without printing them.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// 1 MiB of random bytes from C tor's onion service through `onion get` (introduction,
/// rendezvous, then ~2100 DATA cells paced by our stream and circuit SENDMEs). Our
/// INTRODUCE1 must not ask for congestion control (proposal 324): a C tor service that is
/// asked turns it on for the rendezvous circuit and then closes the circuit on our first
/// stream-level SENDME ("Congestion control got stream sendme"), after about 61 KB.
#[test]
fn onion_get_1_mib_from_a_c_tor_onion_service() {
    let Some(net) = network() else { return };
    net.wait_onion().unwrap();
    let body = random_body(1 << 20);
    std::fs::write(net.http_root.join("onion-big.bin"), &body).unwrap();
    let url = format!("http://{}/onion-big.bin", net.onion_hostname);
    let dd = data_dir(net, "onion-get-hs-big");
    let mut last = String::new();
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let (st, out, err) = support::run_bounded_bytes(
            onion()
                .args(["get", &url, "--authorities"])
                .arg(&net.authorities_file)
                .arg("--data-dir")
                .arg(&dd)
                .args(["--timeout", "120"]),
            Duration::from_secs(150),
        )
        .unwrap();
        if st.success() {
            assert_eq!(out.len(), body.len(), "{err}");
            assert_eq!(sha256_hex(&out), sha256_hex(&body), "1 MiB body differs");
            eprintln!(
                "onion get: 1 MiB from the C tor onion service in {:?}",
                t.elapsed()
            );
            return;
        }
        last = err;
        std::thread::sleep(Duration::from_secs(5));
    }
    panic!("onion get of 1 MiB from the onion service failed: {last}");
}

/// 1 MiB of random bytes from `onion serve` through C tor's client (curl on its SocksPort).
/// Our descriptor does not advertise `flow-control`, so C tor's client sets up no congestion
/// control on its rendezvous circuit and asks for none in INTRODUCE1; both ends then pace
/// the body with stream and circuit SENDMEs (tor-spec §7.3-7.4).
#[test]
fn c_tor_client_fetches_1_mib_from_onion_serve() {
    let Some(net) = network() else { return };
    let keys = data_dir(net, "onion-serve-big-keys");
    let target = format!("127.0.0.1:{}", net.http_port);
    let mut d = support::Daemon::start(&[
        "serve",
        "--target",
        &target,
        "--key-dir",
        keys.to_str().unwrap(),
        "--no-congestion-control",
        "--authorities",
        net.authorities_file.to_str().unwrap(),
    ]);
    d.wait_for("service published", Duration::from_secs(150));
    let body = random_body(1 << 20);
    std::fs::write(net.http_root.join("serve-random.bin"), &body).unwrap();
    let host = std::fs::read_to_string(keys.join("hostname")).unwrap();
    let url = format!("http://{}/serve-random.bin", host.trim());
    let (took, _) = c_tor_fetches(net, &url, &body, 90, &d);
    eprintln!("C tor client: 1 MiB from onion serve in {took:?}");
    let log = d.stderr();
    assert!(log.contains("rendezvous with a client"), "{log}");
    assert!(!log.contains("congestion control"), "{log}");
}

/// A raw SOCKS5 CONNECT to `host:port` through the proxy at `proxy`: the reply code (RFC
/// 1928 §6, or proposal 304's extended codes) and how long the reply took.
fn socks_reply_code(proxy: &str, host: &str, port: u16) -> (u8, Duration) {
    use std::io::{Read, Write};
    let t = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, 0]);
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("no SOCKS reply for {host}: {e}"));
    assert_eq!(reply[0], 5, "{reply:?}");
    (reply[1], t.elapsed())
}

/// `onion socks` and C tor's onion service: `curl --socks5-hostname` fetches the page of
/// `http://<service>.onion/` (never through an exit: the proxy connects to the service and
/// begins the stream on the rendezvous circuit), the same page as `<service>.onion.` (one
/// trailing dot) and as `www.<service>.onion` on the same rendezvous circuit, and 1 MiB of
/// random bytes compared by SHA-256. `.exit` names and malformed `.onion` names are refused
/// at once with C tor's reply (1, general failure; 0xF6 with `--extended-errors`) without a
/// circuit; a valid address without a descriptor gets 4 (host unreachable; 0xF0 extended).
#[test]
fn socks_reaches_a_c_tor_onion_service() {
    let Some(net) = network() else { return };
    net.wait_onion().unwrap();
    let auths = net.authorities_file.to_str().unwrap();
    let start = |extra: &[&str]| {
        let listen = format!("127.0.0.1:{}", support::free_port());
        let mut args = vec!["socks", "--listen", &listen, "--authorities", auths];
        args.extend_from_slice(extra);
        let mut d = support::Daemon::start(&args);
        d.wait_for("SOCKS5 proxy listening", Duration::from_secs(90));
        (d, listen)
    };
    // Not on a non-loopback address unless asked: refused before anything else happens.
    let wild = format!("0.0.0.0:{}", support::free_port());
    let (st, _, err) = run_bounded(
        onion().args(["socks", "--listen", &wild, "--authorities", auths]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!st.success() && err.trim().lines().count() == 1, "{err}");
    assert!(err.contains("--allow-non-loopback"), "{err}");
    let (d, listen) = start(&[]);
    let (dx, listen_x) = start(&["--extended-errors"]);
    let onion = net.onion_hostname.clone();
    let label = onion.trim_end_matches(".onion");
    // One character changed: the checksum no longer matches.
    let bad = format!(
        "{}{}.onion",
        if label.starts_with('a') { "b" } else { "a" },
        &label[1..]
    );
    let exit = net
        .relays
        .iter()
        .find(|r| r.role == "exit")
        .map(|r| r.nickname.clone())
        .unwrap_or_else(|| "exit0".into());
    let refused = [
        (format!("127.0.0.1.{exit}.exit"), 1, 1),
        (format!("{exit}.exit"), 1, 1),
        (bad.clone(), 1, 0xF6),
        (format!("{bad}."), 1, 0xF6),
        (format!("www.{}", &bad), 1, 0xF6),
        (format!("{}.onion", &label[1..]), 1, 0xF6),
    ];
    for (host, code, ext_code) in &refused {
        for (proxy, want) in [(&listen, *code), (&listen_x, *ext_code)] {
            let (got, took) = socks_reply_code(proxy, host, net.http_port);
            assert_eq!(got, want, "{host} via {proxy}");
            assert!(took < Duration::from_secs(2), "{host}: {took:?}");
        }
    }
    // Nothing went to the network for them.
    for p in [&d, &dx] {
        let err = p.stderr();
        assert!(!err.contains("circuit built"), "{err}");
        assert!(!err.contains("HSDir"), "{err}");
    }

    let page = format!("http://{onion}/");
    let mut failed = 0;
    for url in [
        page.clone(),
        format!("http://{onion}./"),
        format!("http://www.{onion}/"),
    ] {
        let ((st, body, err), f) = support::curl_socks_retrying(
            listen.rsplit(':').next().unwrap().parse().unwrap(),
            &url,
            120,
            3,
        );
        failed += f;
        assert!(
            st.success(),
            "curl {url} failed: {err}\nonion:\n{}",
            support::last_lines(&d.stderr(), 40)
        );
        assert_eq!(String::from_utf8_lossy(&body), net.http_body, "{url}");
    }
    let err = d.stderr();
    // The service was reached by rendezvous, never through an exit: no exit circuit.
    assert!(err.contains("rendezvous complete"), "{err}");
    assert!(!err.contains("onion: circuit built:"), "{err}");
    // The three names share one rendezvous circuit (a failed attempt may cost another).
    let rendezvous = err.matches("rendezvous complete").count();
    assert!(rendezvous <= 1 + failed, "{rendezvous} rendezvous:\n{err}");

    // 1 MiB of random bytes, byte for byte.
    let body = random_body(1 << 20);
    std::fs::write(net.http_root.join("socks-onion-big.bin"), &body).unwrap();
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let ((st, got, e), _) =
        support::curl_socks_retrying(port, &format!("{page}socks-onion-big.bin"), 150, 3);
    assert!(
        st.success(),
        "1 MiB through onion socks failed: {e} ({} bytes)\nonion:\n{}",
        got.len(),
        support::last_lines(&d.stderr(), 40)
    );
    assert_eq!(got.len(), body.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&body), "1 MiB body differs");

    // A valid address (the ed25519 base point as key) that no service publishes: every
    // responsible HSDir answers 404.
    let mut key = [0x66u8; 32];
    key[0] = 0x58;
    let unknown = onion_hs::OnionAddress::from_public_key(key).to_string();
    let (code, took) = socks_reply_code(&listen, &unknown, 80);
    assert_eq!(
        code,
        4,
        "{unknown} took {took:?}\n{}",
        support::last_lines(&d.stderr(), 20)
    );
    let (code, _) = socks_reply_code(&listen_x, &unknown, 80);
    assert_eq!(code, 0xF0, "{}", support::last_lines(&dx.stderr(), 20));
    eprintln!("interop: unknown onion service refused after {took:?}");
}

/// A stream to `host:port` through C tor's SocksPort (SOCKS5, the name resolved by Tor):
/// the open socket, or the SOCKS reply code that refused it.
fn tor_stream(socks_port: u16, host: &str, port: u16) -> Result<std::net::TcpStream, String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", socks_port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    s.write_all(&[5, 1, 0]).map_err(|e| e.to_string())?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).map_err(|e| e.to_string())?;
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).map_err(|e| e.to_string())?;
    if reply[1] != 0 {
        return Err(format!("SOCKS reply {}", reply[1]));
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Resident memory (kB) of the running process whose command line contains `needle`.
fn rss_kb_of(needle: &str) -> Option<u64> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        return line.split_whitespace().nth(1)?.parse().ok();
    }
    None
}

/// `onion serve` with peers that stop: a client that does not read a target producing
/// without end, and a target that does not read what a client uploads. The service reads
/// the first only as far as the stream's windows allow (its stream stops once C tor's
/// client stops sending SENDMEs; tor-spec §7.4), holds the second's stream once its buffer
/// is full, and meanwhile serves a third client at once: the target connections are
/// neither read without limit nor written to from the loop.
#[test]
fn onion_serve_bounds_what_it_buffers_for_peers_that_stop() {
    use std::io::{BufRead, Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let Some(net) = network() else { return };
    // The target: "flood" writes without end (counting what the kernel took), "stall"
    // never reads, anything else gets a short answer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let flooded = Arc::new(AtomicU64::new(0));
    let f2 = flooded.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let f = f2.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(sock.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let mut w = sock;
                match line.trim() {
                    "flood" => {
                        let chunk = vec![0x5au8; 64 * 1024];
                        while let Ok(n) = w.write(&chunk) {
                            f.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    "stall" => std::thread::sleep(Duration::from_secs(600)),
                    _ => {
                        let _ = w.write_all(b"small answer\n");
                    }
                }
            });
        }
    });
    let keys = data_dir(net, "onion-serve-stop-keys");
    let mut d = support::Daemon::start(&[
        "serve",
        "--target",
        &target,
        "--key-dir",
        keys.to_str().unwrap(),
        "--authorities",
        net.authorities_file.to_str().unwrap(),
    ]);
    d.wait_for("service published", Duration::from_secs(150));
    let host = std::fs::read_to_string(keys.join("hostname")).unwrap();
    let host = host.trim().to_string();
    // The first stream waits for C tor's client to fetch the descriptor: retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut attempt = 0;
    let mut flood = loop {
        attempt += 1;
        match tor_stream(net.socks_port, &host, 80) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("attempt {attempt}: {e}");
                let _ = newnym(net);
                std::thread::sleep(Duration::from_secs(3 * attempt.min(5)));
            }
            Err(e) => panic!(
                "no stream to {host}: {e}\nonion:\n{}",
                support::last_lines(&d.stderr(), 30)
            ),
        }
    };
    flood.write_all(b"flood\n").unwrap();
    // Read a little, then stop reading.
    let mut first = [0u8; 1000];
    flood.read_exact(&mut first).unwrap();
    // A client uploading to the target that does not read, on a thread: it is blocked
    // once the buffers along the way are full.
    let mut stall = tor_stream(net.socks_port, &host, 80).unwrap();
    let uploaded = Arc::new(AtomicU64::new(0));
    let u2 = uploaded.clone();
    std::thread::spawn(move || {
        let _ = stall.write_all(b"stall\n");
        let chunk = vec![0xa5u8; 64 * 1024];
        while let Ok(n) = stall.write(&chunk) {
            u2.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_secs(15));
    let (f1, u1) = (
        flooded.load(Ordering::Relaxed),
        uploaded.load(Ordering::Relaxed),
    );
    let rss1 = rss_kb_of("onion-serve-stop-keys");
    // Meanwhile a third client is served, promptly.
    let t = std::time::Instant::now();
    let mut small = tor_stream(net.socks_port, &host, 80).unwrap();
    small.write_all(b"small\n").unwrap();
    small
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    small.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "small answer\n");
    let took = t.elapsed();
    std::thread::sleep(Duration::from_secs(10));
    let (f2, u2) = (
        flooded.load(Ordering::Relaxed),
        uploaded.load(Ordering::Relaxed),
    );
    let rss2 = rss_kb_of("onion-serve-stop-keys");
    eprintln!("onion serve resident memory: {rss1:?} then {rss2:?} kB");
    if let (Some(a), Some(b)) = (rss1, rss2) {
        assert!(b < 128 * 1024, "onion serve holds {b} kB");
        assert!(b < a + 8 * 1024, "onion serve grew from {a} to {b} kB");
    }
    eprintln!(
        "target wrote {f1} then {f2} bytes to the service for a client that stopped reading; \
         a client uploaded {u1} then {u2} bytes to a target that does not read; \
         a third client served in {took:?}"
    );
    // Both flows stopped: the service buffers neither (kernel socket buffers on loopback
    // hold a few MiB; the windows 500 cells of 498 bytes).
    assert!(f2 < 32 << 20, "target wrote {f2} bytes");
    assert!(f2 - f1 < 1 << 20, "still reading the target: {f1} -> {f2}");
    assert!(u2 - u1 < 1 << 20, "still taking the upload: {u1} -> {u2}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    drop(flood);
}

/// The `[warn]` lines C tor relays logged after `from` (per relay, the length of its
/// `notice.log` then) that concern congestion control or SENDMEs.
fn cc_warnings(from: &[(String, usize)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, start) in from {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.get(*start..).unwrap_or("").lines() {
            let l = line.to_ascii_lowercase();
            if line.contains("[warn]")
                && (l.contains("sendme") || l.contains("congestion") || l.contains("protocol"))
            {
                out.push(format!("{path}: {line}"));
            }
        }
    }
    out
}

/// Proposal 324 against C tor: `onion get --congestion-control` of 10 MiB of random bytes
/// through a C tor exit. The exit (FlowCtrl=2, ntor-v3) answers the CC_FIELD_REQUEST with
/// sendme_inc 31, the circuit then runs Tor Vegas toward it (circuit SENDMEs every 31 cells,
/// no stream SENDMEs, which C tor would close the circuit for), the body arrives byte for
/// byte, and no relay logs a congestion-control or SENDME warning. The same fetch with fixed
/// windows is timed for comparison (both after a warm-up run that caches the directory).
#[test]
fn get_10_mib_with_congestion_control() {
    let Some(net) = network() else { return };
    let body = random_body(10 << 20);
    let want = sha256_hex(&body);
    std::fs::write(net.http_root.join("cc.bin"), &body).unwrap();
    let url = format!("{}cc.bin", net.http_url);
    let dd = data_dir(net, "onion-get-cc");
    let run = |cc: bool| {
        let mut cmd = onion();
        cmd.args(["get", &url, "--authorities"])
            .arg(&net.authorities_file)
            .arg("--data-dir")
            .arg(&dd)
            .args(["--timeout", "120"]);
        cmd.arg(match cc {
            true => "--congestion-control",
            false => "--no-congestion-control",
        });
        let t = std::time::Instant::now();
        let (st, out, err) =
            support::run_bounded_bytes(&mut cmd, Duration::from_secs(150)).unwrap();
        (st, out, err, t.elapsed())
    };
    let (st, _, err, _) = run(false);
    assert!(st.success(), "warm-up: {err}");
    let logs: Vec<(String, usize)> = net
        .relays
        .iter()
        .map(|r| {
            let p = r.datadir.join("notice.log").display().to_string();
            let n = std::fs::metadata(&p).map_or(0, |m| m.len() as usize);
            (p, n)
        })
        .collect();
    let (st, out, err, took_cc) = run(true);
    assert!(st.success(), "onion get --congestion-control failed: {err}");
    assert!(
        err.contains("congestion control negotiated: sendme_inc 31"),
        "not negotiated: {err}"
    );
    assert!(err.contains("congestion control at the end"), "{err}");
    assert_eq!(out.len(), body.len(), "{err}");
    assert_eq!(sha256_hex(&out), want, "body differs");
    let (st, out, err2, took_fixed) = run(false);
    assert!(st.success(), "{err2}");
    assert_eq!(sha256_hex(&out), want);
    // For reference: C tor's own client (congestion control on by default) through the
    // same network, curl over its SOCKS port.
    let t = std::time::Instant::now();
    let (st, out, cerr) = support::curl_socks(net.socks_port, &url, 120);
    let took_ctor = t.elapsed();
    assert!(st.success(), "C tor client: {cerr}");
    assert_eq!(sha256_hex(&out), want);
    let mib = |d: Duration| 10.0 / d.as_secs_f64();
    eprintln!(
        "10 MiB (process start to end): onion with congestion control {:.2} s ({:.2} MiB/s), \
         onion with fixed windows {:.2} s ({:.2} MiB/s), C tor client via SOCKS {:.2} s \
         ({:.2} MiB/s)",
        took_cc.as_secs_f64(),
        mib(took_cc),
        took_fixed.as_secs_f64(),
        mib(took_fixed),
        took_ctor.as_secs_f64(),
        mib(took_ctor)
    );
    eprintln!("{}", support::last_lines(&err, 4));
    let warns = cc_warnings(&logs);
    assert!(warns.is_empty(), "C tor warnings: {warns:#?}");
}

/// XON/XOFF against C tor (proposal 324 §4.1.1): `onion socks --congestion-control`, and a
/// SOCKS client that asks for 24 MiB, stops reading for 15 s, then reads everything. Under
/// congestion control there are no stream windows, so only onion's XOFF (sent when the
/// client's buffer is full) stops the C tor exit: onion's memory grows by far less than the
/// body while the client sleeps. The XON sent when the buffer drains restarts the exit, the
/// body arrives whole, and no relay logs a congestion-control, SENDME or protocol warning.
#[test]
fn socks_client_that_stops_reading_is_stopped_by_xoff() {
    use std::io::Read;
    let Some(net) = network() else { return };
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let auths = net.authorities_file.to_str().unwrap();
    let mut d = support::Daemon::start(&[
        "socks",
        "--listen",
        &listen,
        "--authorities",
        auths,
        "--congestion-control",
    ]);
    d.wait_for("SOCKS5 proxy listening", Duration::from_secs(90));
    let body = random_body(24 << 20);
    let want = sha256_hex(&body);
    std::fs::write(net.http_root.join("xoff.bin"), &body).unwrap();
    let logs: Vec<(String, usize)> = net
        .relays
        .iter()
        .map(|r| {
            let p = r.datadir.join("notice.log").display().to_string();
            let n = std::fs::metadata(&p).map_or(0, |m| m.len() as usize);
            (p, n)
        })
        .collect();
    let rss0 = rss_kb_of(&listen).expect("onion socks RSS");
    let mut s = socks_get(&listen, &net.http_url, "xoff.bin");
    std::thread::sleep(Duration::from_secs(15));
    let rss1 = rss_kb_of(&listen).expect("onion socks RSS");
    let err = d.stderr();
    assert!(
        err.contains("(congestion control)"),
        "the exit circuit did not negotiate congestion control:\n{err}"
    );
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let start = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header")
        + 4;
    assert_eq!(
        got.len() - start,
        body.len(),
        "body cut short; onion socks said:\n{}",
        support::last_lines(&d.stderr(), 30)
    );
    assert_eq!(sha256_hex(&got[start..]), want, "body differs");
    eprintln!(
        "onion socks RSS: {rss0} KiB before, {rss1} KiB after 15 s of a client not reading \
         a 24 MiB body"
    );
    assert!(
        rss1 < rss0 + 8 * 1024,
        "onion buffered {} KiB for a client that does not read",
        rss1 - rss0
    );
    let warns = cc_warnings(&logs);
    assert!(warns.is_empty(), "C tor warnings: {warns:#?}");
}

/// Every C tor `notice.log` of the network (relays, the onion service, the client) with its
/// length now, so that [`cc_warnings`] reads only what is logged afterwards.
fn all_tor_logs(net: &support::TorNet) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(&net.dir).into_iter().flatten().flatten() {
        let p = e.path().join("notice.log");
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((p.display().to_string(), m.len() as usize));
        }
    }
    assert!(!out.is_empty(), "no C tor logs under {}", net.dir.display());
    out
}

/// Proposal 324 on an onion service (C tor 0.4.9 client side): tornet's consensus enables
/// congestion control (cc_alg defaults to 2), so C tor's service descriptor has
/// `flow-control 1-2 31`; `onion get --congestion-control` then asks for it in INTRODUCE1
/// and runs Tor Vegas on the service's virtual hop with sendme_inc 31 (circuit SENDMEs
/// every 31 cells, no stream SENDMEs, which the C tor service would close the circuit
/// for). 5 MiB of random bytes arrive byte for byte and no C tor logs a warning about it.
#[test]
fn onion_cc_get_5_mib_from_a_c_tor_onion_service() {
    let Some(net) = network() else { return };
    net.wait_onion().unwrap();
    let body = random_body(5 << 20);
    std::fs::write(net.http_root.join("onion-cc.bin"), &body).unwrap();
    let url = format!("http://{}/onion-cc.bin", net.onion_hostname);
    let dd = data_dir(net, "onion-get-hs-cc");
    let logs = all_tor_logs(net);
    let (took, err) = onion_cc_get(net, &url, &dd, &body, 2, Duration::from_secs(5))
        .unwrap_or_else(|e| {
            panic!("onion get --congestion-control from the onion service failed: {e}")
        });
    assert!(err.contains("congestion control at the end"), "{err}");
    eprintln!(
        "onion get --congestion-control: 5 MiB from the C tor onion service in {took:?}\n{}",
        support::last_lines(&err, 3)
    );
    let warns = cc_warnings(&logs);
    assert!(warns.is_empty(), "C tor warnings: {warns:#?}");
}

/// `onion get --congestion-control URL` (data directory `dd`) until it succeeds, at most
/// `tries` times `pause` apart (a service's descriptor may not be on every HSDir yet): checks
/// that congestion control was set up with the service (sendme_inc 31) and that the body is
/// `want`; returns the successful run's time and stderr, or the last failure's stderr.
fn onion_cc_get(
    net: &support::TorNet,
    url: &str,
    dd: &std::path::Path,
    want: &[u8],
    tries: usize,
    pause: Duration,
) -> Result<(Duration, String), String> {
    let mut last = String::new();
    for _ in 0..tries {
        let t = std::time::Instant::now();
        let (st, out, err) = support::run_bounded_bytes(
            onion()
                .args(["get", url, "--congestion-control", "--authorities"])
                .arg(&net.authorities_file)
                .arg("--data-dir")
                .arg(dd)
                .args(["--timeout", "120"]),
            Duration::from_secs(150),
        )
        .unwrap();
        if st.success() {
            assert!(
                err.contains("rendezvous complete (congestion control, sendme_inc 31)"),
                "congestion control not set up with the service: {err}"
            );
            assert_eq!(out.len(), want.len(), "{err}");
            assert_eq!(sha256_hex(&out), sha256_hex(want), "{url}: body differs");
            return Ok((t.elapsed(), err));
        }
        last = err;
        std::thread::sleep(pause);
    }
    Err(last)
}

/// `onion serve --congestion-control` in front of tornet's HTTP server, once it published its
/// descriptor (which must advertise flow-control); returns it and its onion address.
fn start_cc_service(net: &support::TorNet, name: &str) -> (support::Daemon, String) {
    let keys = data_dir(net, name);
    let target = format!("127.0.0.1:{}", net.http_port);
    let mut d = support::Daemon::start(&[
        "serve",
        "--target",
        &target,
        "--key-dir",
        keys.to_str().unwrap(),
        "--authorities",
        net.authorities_file.to_str().unwrap(),
        "--congestion-control",
    ]);
    d.wait_for("service published", Duration::from_secs(150));
    let early = d.stderr();
    assert!(
        early.contains("congestion control offered (flow-control 1-2 31)"),
        "{early}"
    );
    let host = std::fs::read_to_string(keys.join("hostname")).unwrap();
    (d, host.trim().to_string())
}

/// Proposal 324 on an onion service (C tor 0.4.9 service side): `onion serve
/// --congestion-control` advertises `flow-control 1-2 31`, C tor's client asks for
/// congestion control in INTRODUCE1 and runs it on its rendezvous circuit, and the service
/// runs Tor Vegas on the client's virtual hop (no stream SENDMEs from the C tor client, no
/// stream windows). 5 MiB through C tor's SocksPort arrive byte for byte, the service says
/// the rendezvous circuit runs congestion control, and no C tor logs a warning about it.
#[test]
fn onion_cc_c_tor_client_fetches_5_mib_from_onion_serve() {
    let Some(net) = network() else { return };
    let (d, host) = start_cc_service(net, "onion-serve-cc-keys");
    let body = random_body(5 << 20);
    std::fs::write(net.http_root.join("serve-cc.bin"), &body).unwrap();
    let url = format!("http://{host}/serve-cc.bin");
    let logs = all_tor_logs(net);
    let (took, _) = c_tor_fetches(net, &url, &body, 120, &d);
    eprintln!("C tor client: 5 MiB from onion serve --congestion-control in {took:?}");
    let log = d.stderr();
    assert!(
        log.contains("rendezvous with a client (congestion control, sendme_inc 31)"),
        "{log}"
    );
    assert!(!log.contains("introduction refused"), "{log}");
    let warns = cc_warnings(&logs);
    assert!(warns.is_empty(), "C tor warnings: {warns:#?}");
}

/// Both ends onion: `onion get --congestion-control` from `onion serve
/// --congestion-control`: the client reads `flow-control 1-2 31` in the descriptor, asks,
/// and both virtual hops run Tor Vegas with sendme_inc 31; 5 MiB arrive byte for byte.
#[test]
fn onion_cc_get_from_onion_serve() {
    let Some(net) = network() else { return };
    let (d, host) = start_cc_service(net, "onion-serve-cc2-keys");
    let body = random_body(5 << 20);
    std::fs::write(net.http_root.join("serve-cc2.bin"), &body).unwrap();
    let url = format!("http://{host}/serve-cc2.bin");
    let dd = data_dir(net, "onion-get-serve-cc");
    let (took, err) = onion_cc_get(net, &url, &dd, &body, 4, Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "onion get --congestion-control from onion serve failed: {e}\nservice:\n{}",
                support::last_lines(&d.stderr(), 30)
            )
        });
    eprintln!(
        "onion get --congestion-control: 5 MiB from onion serve --congestion-control in \
         {took:?}\n{}",
        support::last_lines(&err, 3)
    );
    let log = d.stderr();
    assert!(
        log.contains("rendezvous with a client (congestion control, sendme_inc 31)"),
        "{log}"
    );
}

/// `onion socks --congestion-control` to C tor's onion service: the proxy's rendezvous
/// circuit asks for congestion control and runs Tor Vegas on the service's virtual hop
/// (sendme_inc 31), while no relay of its onion-service circuits is asked; 5 MiB through
/// curl arrive byte for byte and no C tor logs a warning about it.
#[test]
fn onion_cc_socks_fetches_from_a_c_tor_onion_service() {
    let Some(net) = network() else { return };
    net.wait_onion().unwrap();
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut d = support::Daemon::start(&[
        "socks",
        "--listen",
        &listen,
        "--authorities",
        net.authorities_file.to_str().unwrap(),
        "--congestion-control",
    ]);
    d.wait_for("SOCKS5 proxy listening", Duration::from_secs(90));
    let body = random_body(5 << 20);
    std::fs::write(net.http_root.join("onion-cc-socks.bin"), &body).unwrap();
    let url = format!("http://{}/onion-cc-socks.bin", net.onion_hostname);
    let logs = all_tor_logs(net);
    let ((st, got, err), _) = support::curl_socks_retrying(port, &url, 90, 3);
    let log = d.stderr();
    assert!(
        st.success(),
        "curl: {err}\nonion:\n{}",
        support::last_lines(&log, 30)
    );
    assert_eq!(got.len(), body.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&body), "5 MiB body differs");
    assert!(
        log.contains("rendezvous complete (congestion control, sendme_inc 31)"),
        "{log}"
    );
    let warns = cc_warnings(&logs);
    assert!(warns.is_empty(), "C tor warnings: {warns:#?}");
}

/// `onion socks` with `ONION_DEBUG=1` (its transport's debug lines, among them the client's
/// link padding counts), killed when dropped; its stderr lines are collected.
struct DebugDaemon {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DebugDaemon {
    fn start(args: &[&str]) -> DebugDaemon {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = onion()
            .args(args)
            .env("ONION_DEBUG", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start onion");
        let stderr = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        DebugDaemon { child, lines }
    }

    /// The last stderr line containing `needle`, waiting for one at most `timeout`.
    fn last_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|l| l.contains(needle))
                .cloned();
            if found.is_some() || std::time::Instant::now() > until {
                return found;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for DebugDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers of a `link padding: P of C channels padded, S PADDING cells sent, R received
/// on them` line: (P, C, S, R).
fn padding_counts(line: &str) -> (u64, u64, u64, u64) {
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match n[..] {
        [p, c, s, r] => (p, c, s, r),
        _ => panic!("not a padding line: {line}"),
    }
}

/// Link padding with C tor's defaults (padding-spec §2): our client and the C tor guard
/// negotiate link protocol 5 (from which both ends pad, tor-spec §4.1; no PADDING_NEGOTIATE
/// is needed to keep the defaults, and C tor's client sends none either), and once the guard
/// channel has carried a 3-hop circuit and is left idle, the guard sends PADDING cells (C tor
/// pads an idle client channel after 1.5 to 9.5 s) and so does our client. The counts are
/// the client's own ([`onion_client::Client::padding_stats`], printed by `ONION_DEBUG`).
#[test]
fn idle_guard_channel_is_padded_both_ways() {
    use std::io::Read;
    let Some(net) = network() else { return };
    let listen = format!("127.0.0.1:{}", support::free_port());
    let auths = net.authorities_file.to_str().unwrap();
    let d = DebugDaemon::start(&["socks", "--listen", &listen, "--authorities", auths]);
    let ready = d.last_line("SOCKS5 proxy listening", Duration::from_secs(120));
    assert!(ready.is_some(), "proxy not up:\n{}", d.stderr());
    // One fetch through a 3-hop circuit: the guard channel now carries full circuits.
    let mut s = socks_get(&listen, &net.http_url, "");
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(
        String::from_utf8_lossy(&got).ends_with(&net.http_body),
        "{}",
        d.stderr()
    );
    drop(s);
    // Idle: each end sends a PADDING cell after 1.5 to 9.5 s without a cell either way, and
    // starts again at every cell, so which end pads is a draw each time (about even): 90 s
    // leave about 13 draws for our client to win one.
    let until = std::time::Instant::now() + Duration::from_secs(90);
    let (mut line, mut counts) = (String::new(), (0, 0, 0, 0));
    while std::time::Instant::now() < until && (counts.2 == 0 || counts.3 == 0) {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(l) = d.last_line("link padding:", Duration::ZERO) {
            counts = padding_counts(&l);
            line = l;
        }
    }
    let (padded, channels, sent, received) = counts;
    eprintln!("{line}");
    assert!(padded >= 1 && padded <= channels, "{line}");
    assert!(
        sent >= 1,
        "our client sent no PADDING: {line}\n{}",
        d.stderr()
    );
    assert!(
        received >= 1,
        "the C tor guard sent no PADDING: {line}\n{}",
        d.stderr()
    );
}

/// What a SOCKS port answers to `msgs`, sent one at a time: the bytes received after each
/// (until 400 ms pass without more, at most 5 s), and whether the port then closed the
/// connection (within 3 s).
fn socks_exchange(port: u16, msgs: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut replies = Vec::new();
    let mut closed = false;
    let mut buf = [0u8; 4096];
    for m in msgs {
        if closed || s.write_all(m).is_err() {
            closed = true;
            break;
        }
        let mut got = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let mut quiet = Duration::from_secs(5);
        while std::time::Instant::now() < until {
            s.set_read_timeout(Some(quiet)).unwrap();
            match s.read(&mut buf) {
                Ok(0) | Err(_) if !got.is_empty() || quiet < Duration::from_secs(5) => break,
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    quiet = Duration::from_millis(400);
                }
                Err(_) => break,
            }
        }
        replies.push(got);
    }
    if !closed {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
    }
    (replies, closed)
}

/// `onion socks` answers handshakes it refuses as C tor's SocksPort does (the codec is
/// `onion_client::socks`): the same reply bytes, or none, and a closed connection, for
/// unknown versions, greetings without methods or acceptable ones, commands other than
/// CONNECT, unknown address types, a reserved byte, port 0, bad host names, `.exit` names,
/// Tor's extended SOCKS parameters in formats C tor refuses, SOCKS4 requests it refuses, and
/// an HTTP request (whose status line is C tor's). Asked of the network's C tor client.
#[test]
fn socks_refusals_match_c_tors_socks_port() {
    let Some(net) = network() else { return };
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let auths = net.authorities_file.to_str().unwrap();
    let mut d = support::Daemon::start(&["socks", "--listen", &listen, "--authorities", auths]);
    d.wait_for("SOCKS5 proxy listening", Duration::from_secs(120));
    let req = |cmd: u8, rsv: u8, atyp: u8, rest: &[u8]| [&[5, cmd, rsv, atyp][..], rest].concat();
    let name =
        |n: &str, port: u16| [&[n.len() as u8][..], n.as_bytes(), &port.to_be_bytes()].concat();
    let auth = |u: &[u8], p: &[u8]| [&[1, u.len() as u8][..], u, &[p.len() as u8], p].concat();
    let probes: Vec<Vec<Vec<u8>>> = vec![
        vec![vec![6, 1, 0]],
        vec![vec![5, 0]],
        vec![vec![5, 1, 1]],
        vec![vec![5, 1, 0], req(2, 0, 3, &name("example.com", 80))],
        vec![vec![5, 1, 0], req(3, 0, 3, &name("example.com", 80))],
        vec![vec![5, 1, 0], req(1, 0, 9, &[1, 2, 3, 4, 0, 80])],
        vec![vec![5, 1, 0], req(1, 1, 3, &name("example.com", 80))],
        vec![vec![5, 1, 0], req(1, 0, 3, &name("example.com", 0))],
        vec![vec![5, 1, 0], req(1, 0, 3, &name("a b", 80))],
        vec![vec![5, 1, 0], req(1, 0, 3, &name("example.com.exit", 80))],
        vec![vec![5, 1, 2], auth(b"<torS0X>1", b"x")],
        vec![vec![5, 1, 2], auth(b"<torS0X>0x", b"x")],
        vec![vec![5, 1, 2], auth(b"<torS0X>", b"")],
        vec![[&[4, 2, 0, 80, 0, 0, 0, 1][..], b"u\0example.com\0"].concat()],
        vec![vec![4, 1, 0, 80, 0, 0, 0, 0, 0]],
    ];
    for msgs in &probes {
        let msgs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let ours = socks_exchange(port, &msgs);
        let theirs = socks_exchange(net.socks_port, &msgs);
        assert_eq!(ours, theirs, "{msgs:?}: ours, then C tor's\n{}", d.stderr());
        assert!(ours.1, "{msgs:?}: not closed");
    }
    // Not vacuous: C tor answers a greeting without an acceptable method with 05 FF.
    let no_method = socks_exchange(port, &[&[5, 1, 1]]);
    assert_eq!(no_method, (vec![vec![5, 0xFF]], true));
    // An HTTP request: C tor's status line (the page that follows is each one's own).
    let get: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
    let status = |(r, _): (Vec<Vec<u8>>, bool)| {
        let text = String::from_utf8_lossy(&r[0]).into_owned();
        text.lines().next().unwrap_or("").to_string()
    };
    let ours = status(socks_exchange(port, &[get]));
    assert_eq!(ours, status(socks_exchange(net.socks_port, &[get])));
    assert_eq!(ours, "HTTP/1.0 501 Tor is not an HTTP Proxy");
}
