//! `onion sim --onion` end to end through the binary: the story runs from publication to the
//! page's digest, and the JSON form reports an intact page and which relays held each role.

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
        "onion_relay::Relay relays",
        "service hosts ",
        "POST /tor/hs/3/publish: 200",
        "service descriptor uploaded to an HSDir",
        "client  fetches /20000 from ",
        "page complete: 20000 bytes",
        "HSDirs that stored the descriptor:",
        "HSDirs that served it:",
        "introduction points:",
        "INTRODUCE2 relayed by:",
        "rendezvous point:",
        "received:    20000 bytes",
        "identical to what the service sent",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256:      "))
        .expect("digest line");
    assert_eq!(digest.len(), 64, "{digest}");
}

/// The JSON form: the page arrived intact, and the roles are consistent with each other
/// (the HSDir that served the descriptor stored it, INTRODUCE2 came through one of the
/// service's introduction points, one rendezvous point).
#[test]
fn onion_sim_json() {
    let (ok, text) = onion(&["sim", "--onion", "--json", "--bytes", "5000"]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["intact"], true);
    assert_eq!(v["bytes"], 5000);
    assert_eq!(v["outcome"], "Ok");
    let role = |name: &str| -> Vec<String> {
        v["roles"][name]
            .as_array()
            .unwrap_or_else(|| panic!("role {name} in {text}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let stored = role("HSDirs that stored the descriptor:");
    let served = role("HSDirs that served it:");
    assert!(!served.is_empty() && served.iter().all(|h| stored.contains(h)));
    let intros = role("introduction points:");
    let relayed = role("INTRODUCE2 relayed by:");
    assert!(!relayed.is_empty() && relayed.iter().all(|r| intros.contains(r)));
    assert_eq!(role("rendezvous point:").len(), 1);
}

#[test]
fn onion_sim_bad_arguments() {
    let (ok, _) = onion(&["sim", "--onion", "--relays", "3"]);
    assert!(!ok);
    let (ok, _) = onion(&["sim", "--onion", "--bogus"]);
    assert!(!ok);
}
