//! Interop test 7: a relay killed mid-transfer. In its own test binary, so that its own
//! private network can lose a relay without disturbing the other interop tests.

mod support;

use std::time::{Duration, Instant};

use support::{network, run_bounded_bytes, Daemon};

/// A relay of the circuit in use is killed (SIGKILL) during a download through
/// `onion socks`: the download fails promptly with a clear error on onion's side, and a new
/// request succeeds on a new circuit that avoids the dead relay.
#[test]
fn relay_killed_mid_transfer() {
    let Some(net) = network() else { return };
    // 64 MiB, read by curl at 2 MiB/s. The proxy buffers at most about 256 KiB for curl
    // (then it holds the circuit, and the exit stops after one stream window), so the body
    // is far larger than anything that can cross the circuit before the kill.
    let body: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(net.http_root.join("big.bin"), &body).unwrap();
    let url = format!("{}big.bin", net.http_url);

    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let auths = net.authorities_file.to_str().unwrap();
    let mut d = Daemon::start(&["socks", "--listen", &listen, "--authorities", auths]);
    d.wait_for("SOCKS5 proxy listening", Duration::from_secs(90));

    let proxy = format!("127.0.0.1:{port}");
    let (url2, proxy2) = (url.clone(), proxy.clone());
    let download = std::thread::spawn(move || {
        let t = Instant::now();
        let r = run_bounded_bytes(
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "60", "--limit-rate", "2M"])
                .args(["--socks5-hostname", &proxy2, &url2]),
            Duration::from_secs(80),
        )
        .unwrap();
        (r, t.elapsed())
    });
    let line = d.wait_for("circuit built:", Duration::from_secs(60));
    let hops: Vec<String> = line
        .split("circuit built:")
        .nth(1)
        .unwrap()
        .split("->")
        .map(|h| h.trim().to_string())
        .collect();
    assert_eq!(hops.len(), 3, "{line}");
    std::thread::sleep(Duration::from_millis(500));
    let victim = &hops[1];
    eprintln!("killing the middle relay {victim} of {hops:?}");
    let killed_at = Instant::now();
    net.kill_relay(victim);

    let ((st, got, err), took) = download.join().unwrap();
    assert!(
        !st.success(),
        "download survived the kill ({} bytes)",
        got.len()
    );
    assert!(got.len() < body.len(), "whole body arrived");
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "download hung {:?} after the kill (took {took:?}): {err}",
        killed_at.elapsed()
    );
    d.wait_for("circuit lost:", Duration::from_secs(10));

    // A new request gets a new circuit (without the dead relay) and the whole page.
    let ((st, got, err), _) = support::curl_socks_retrying(port, &net.http_url, 60, 3);
    assert!(
        st.success(),
        "new request failed: {err}\nonion:\n{}",
        d.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&got), net.http_body);
    let stderr = d.stderr();
    let built: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("circuit built:"))
        .collect();
    assert!(built.len() >= 2, "{stderr}");
    let last = built.last().unwrap();
    assert!(
        !last
            .split("->")
            .any(|h| h.trim().ends_with(victim.as_str())),
        "new circuit uses the dead relay: {last}"
    );
}
