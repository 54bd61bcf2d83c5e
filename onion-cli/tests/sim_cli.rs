//! `onion sim` end to end through the binary: by default onion_client::Client bootstraps from
//! the simulated authorities and fetches a document through onion_relay::Relay relays; the
//! story tells bootstrap, link handshake, circuit (path and handshakes), congestion control,
//! stream, progress and flow control; the JSON form reports the same; the same seed gives the
//! same story.

use std::process::Command;

fn onion(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_onion"))
        .args(args)
        .output()
        .expect("run onion");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json(args: &[&str]) -> serde_json::Value {
    let (ok, text) = onion(args);
    assert!(ok, "{text}");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn onion_sim_tells_the_client_story() {
    let (ok, text) = onion(&["sim", "--bytes", "300000", "--seed", "4"]);
    assert!(ok, "{text}");
    for needle in [
        "onion sim: onion_client::Client -> 12 onion_relay::Relay relays (3 authorities)",
        "starts with nothing stored; 3 directory authorities configured",
        "bootstrap 100%: 12 relays usable",
        "GET /tor/status-vote/current/consensus-microdesc/",
        "link handshake (VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO) starts",
        "(CREATE2 ntor), ",
        "(EXTEND2 ntor)",
        "no congestion control with exit",
        "exit stream 0: connecting to 203.0.113.80:80",
        "CONNECTED",
        "response head \"HTTP/1.0 200 OK\"",
        "(END DONE): 300000 body bytes",
        "status:      HTTP/1.0 200 OK",
        "received:    300000 bytes, identical to what the server sent",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The circuit line names three relays: a guard, a middle, an exit of the world.
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("circuit:     "))
        .expect("circuit line");
    let hops: Vec<&str> = path.split(" -> ").collect();
    assert_eq!(hops.len(), 3, "{path}");
    assert!(hops[0].starts_with("guard"), "{path}");
    assert!(hops[2].starts_with("exit"), "{path}");
    // Flow control: 300000 bytes need at least 300000/498 DATA cells, and with fixed
    // windows every 100 cells a circuit SENDME and every 50 a stream SENDME go back.
    let flow = text
        .lines()
        .find_map(|l| l.strip_prefix("flow:        "))
        .expect("flow line");
    let n = |what: &str| -> u64 {
        let end = flow.find(what).expect(what);
        flow[..end]
            .rsplit(|c: char| !c.is_ascii_digit())
            .find(|w| !w.is_empty())
            .and_then(|w| w.parse().ok())
            .expect("number")
    };
    let cells = n(" DATA cells received");
    assert!(
        (300_000 / 498..=300_000 / 498 + 10).contains(&cells),
        "{flow}"
    );
    assert_eq!(n(" circuit SENDMEs"), cells / 100, "{flow}");
    assert_eq!(n(" stream SENDMEs"), cells / 50, "{flow}");
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256:      "))
        .expect("digest line");
    assert_eq!(digest.len(), 64, "{digest}");
}

/// With congestion control the exit hop is added with ntor-v3 (the handshake that carries
/// the request, proposal 324 §4.1) and the client stops sending stream SENDMEs (flow control
/// by XON/XOFF instead).
#[test]
fn onion_sim_json_with_congestion_control() {
    let v = json(&[
        "sim",
        "--json",
        "--congestion-control",
        "--bytes",
        "200000",
        "--seed",
        "2",
    ]);
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["bytes"], 200_000);
    assert_eq!(v["status"], "HTTP/1.0 200 OK");
    assert_eq!(v["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(v["relays_usable"], 12);
    assert_eq!(
        v["bootstrap_progress"].as_array().and_then(|a| a.last()),
        Some(&serde_json::json!(100))
    );
    let hs = v["circuit"]["handshakes"].as_array().expect("handshakes");
    assert_eq!(hs.len(), 3, "{v}");
    assert_eq!(hs[0], "ntor");
    assert_eq!(hs[2], "ntor-v3");
    assert_eq!(v["congestion_control"]["sendme_inc"], 31, "{v}");
    let flow = &v["client_flow"];
    assert!(
        flow["data_cells_received"].as_u64() >= Some(200_000 / 498),
        "{v}"
    );
    assert_eq!(flow["stream_sendmes_sent"], 0, "{v}");
    assert!(flow["circuit_sendmes_sent"].as_u64() > Some(0), "{v}");
    assert!(v["story"].as_array().is_some_and(|s| s.len() > 10));
}

#[test]
fn onion_sim_is_deterministic_per_seed() {
    let run = |seed: &str| {
        let v = json(&["sim", "--json", "--bytes", "50000", "--seed", seed]);
        (
            v["story"].clone(),
            v["circuit"].clone(),
            v["link_bytes"].clone(),
        )
    };
    let a = run("9");
    assert_eq!(a, run("9"));
    assert_ne!(a.0, run("10").0);
}

#[test]
fn onion_sim_options_of_the_circuit_story_need_circuit() {
    let (ok, _) = onion(&["sim", "--hops", "2"]);
    assert!(!ok, "--hops belongs to --circuit");
    let (ok, _) = onion(&["sim", "--first-hop", "fast"]);
    assert!(!ok, "--first-hop belongs to --circuit");
    let (ok, _) = onion(&["sim", "--circuit", "--congestion-control"]);
    assert!(!ok);
}

/// `onion sim --circuit`: the same fetch cell by cell from a bare onion-circuit client
/// through onion_relay::Relay relays: the link handshake, CREATE2 and EXTEND2 with the
/// chosen handshake, BEGIN, CONNECTED, RELAY_END, DESTROY, every relay freeing the circuit,
/// and what each relay saw (its neighbours only).
#[test]
fn onion_sim_circuit_tells_the_cells() {
    let (ok, text) = onion(&[
        "sim",
        "--circuit",
        "--bytes",
        "120000",
        "--first-hop",
        "fast",
        "--hops",
        "4",
    ]);
    assert!(ok, "{text}");
    for needle in [
        "onion sim --circuit: client -> 4 relays -> web server",
        "TCP and TLS up with guard0",
        "channel to guard0 open (link protocol 5",
        "CREATE_FAST (CREATE_FAST) on circuit",
        "hop 1 (guard0) added (CREATED_FAST); EXTEND2 (ntor-v3) to middle0",
        "guard0  opening a connection to middle0",
        "hop 3 (middle1) added (EXTENDED2); EXTEND2 (ntor-v3) to exit0",
        "circuit guard0 -> middle0 -> middle1 -> exit0 built",
        "BEGIN www.example.com:80",
        "exit0   exit stream 0: connecting to 203.0.113.80:80",
        "RELAY_END from the exit, reason DONE",
        "tearing the circuit down (DESTROY)",
        "every relay of the path freed the circuit",
        "what each party saw",
        "received:    120000 bytes, identical to what the server sent",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let seen = |who: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(who) && l.contains(", "))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(seen("guard0").contains("198.51.100.7"), "{text}");
    assert!(!seen("middle0").contains("198.51.100.7"), "{text}");
    assert!(seen("exit0").contains("203.0.113.80:80"), "{text}");
    assert!(!seen("exit0").contains("198.51.100.7"), "{text}");
}
