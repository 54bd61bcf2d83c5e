//! `onion sim --onion` end to end through the binary: the story ends with the page's digest,
//! the JSON form reports an intact page, and the sides learn only the protocol-named relays.

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

#[test]
fn onion_sim_tells_the_onion_service_story() {
    let (ok, text) = onion(&["sim", "--onion", "--bytes", "20000", "--seed", "3"]);
    assert!(ok, "{text}");
    for needle in [
        "HSDir stores descriptor",
        "descriptor from HSDir",
        "rendezvous point: cookie registered",
        "INTRODUCE1 → INTRODUCE2",
        "circuits joined",
        "virtual hop added",
        "HTTP/1.0 200 OK: 20000 bytes",
        "identical to what the service sent",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let story_end = text
        .lines()
        .find(|l| l.contains("page SHA-256"))
        .expect("digest line");
    let digest = story_end.rsplit(' ').next().unwrap();
    assert!(text.contains(&format!("sha256:      {digest}")));
}

#[test]
fn onion_sim_json() {
    let (ok, text) = onion(&["sim", "--onion", "--json", "--bytes", "5000"]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["intact"], true);
    assert_eq!(v["bytes"], 5000);
    let learned = v["service_learned"].as_array().unwrap();
    assert_eq!(learned.len(), 1);
    assert_eq!(learned[0], v["rendezvous_point"]);
    assert_eq!(v["client_learned"].as_array().unwrap().len(), 3);
}

#[test]
fn onion_sim_bad_arguments() {
    let (ok, _) = onion(&["sim", "--onion", "--relays", "3"]);
    assert!(!ok);
    let (ok, _) = onion(&["sim", "--onion", "--bogus"]);
    assert!(!ok);
}
