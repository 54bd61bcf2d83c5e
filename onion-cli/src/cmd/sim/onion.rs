//! `onion sim --onion`: the onion-service scenario on the client world
//! (`onion_sim::client::runs::onion_fetch`): a second `onion_client::Client` hosts an onion
//! service, publishes its descriptor to HSDirs and keeps introduction points; the client
//! fetches the descriptor, meets the service at a rendezvous point and fetches a page over
//! the joined circuit (rend-spec-v3 §2–§4). Every relay is an `onion_relay::Relay`, the
//! machine `onion relay` runs. One line per significant event, then which relays held each
//! onion-service role, and the page's SHA-256.

use std::collections::BTreeSet;

use onion_sim::client::driver::Outcome;
use onion_sim::client::runs;
use onion_sim::client::world::WorldConfig;
use sha2::{Digest, Sha256};

use super::{print_json, print_sets, print_story, sets_json, story_json};

/// Entry point of `onion sim --onion`: a client and a service host on `--relays` relays
/// (default 9: guards, middles and exits in thirds, every one an HSDir); the client fetches
/// `--bytes` (default 300000) from the service end to end.
pub fn run(args: &super::Args) -> Result<(), String> {
    let mut cfg = WorldConfig::default();
    cfg.seed = args.seed.unwrap_or(cfg.seed);
    if let Some(n) = args.relays {
        if !(6..=60).contains(&n) {
            return Err(format!("--relays {n}: takes 6 to 60"));
        }
        cfg.guards = n / 3;
        cfg.exits = n / 3;
        cfg.middles = n - 2 * (n / 3);
    }
    let size = args.bytes.unwrap_or(300_000);
    let relays = cfg.guards + cfg.middles + cfg.exits;
    let r = runs::onion_fetch(cfg.clone(), size, args.client_auth)
        .map_err(|e| format!("onion-service simulation failed: {e}"))?;
    let intact = r.outcome == Outcome::Ok;
    let digest = intact.then(|| {
        hex::encode(Sha256::digest(onion_sim::circuit::web::expected_body(
            cfg.seed, size,
        )))
    });
    let sets: Vec<(String, BTreeSet<String>)> = vec![
        (
            "HSDirs that stored the descriptor:".into(),
            r.hsdirs_stored.clone(),
        ),
        ("HSDirs that served it:".into(), r.hsdirs_served.clone()),
        ("introduction points:".into(), r.intro_points.clone()),
        ("INTRODUCE2 relayed by:".into(), r.introduced_at.clone()),
        ("rendezvous point:".into(), r.rendezvous_points.clone()),
    ];
    if args.json {
        let out = serde_json::json!({
            "seed": cfg.seed,
            "address": r.address,
            "client_auth": args.client_auth,
            "without_key": r.without_key.as_ref().map(|o| format!("{o:?}")),
            "outcome": format!("{:?}", r.outcome),
            "bytes": r.body_len,
            "sha256": digest,
            "intact": intact,
            "published_virtual_s": r.published.as_secs_f64(),
            "fetch_virtual_s": r.time.as_secs_f64(),
            "hsdir_requests": r.hsdir_requests,
            "roles": sets_json(&sets),
            "story": story_json(&r.story),
        });
        return print_json(&out, intact, "the page");
    }
    let title = format!(
        "onion sim --onion: client -> onion service over {relays} onion_relay::Relay relays, {size} bytes, seed {}{} (virtual time)",
        cfg.seed,
        if args.client_auth {
            ", client authorization"
        } else {
            ""
        },
    );
    print_story(&title, &r.story);
    print_sets("which relays held each onion-service role:", &sets);
    if let Some(o) = &r.without_key {
        println!("without the key: {o:?}");
    }
    println!(
        "published:   after {:.3} s; {} HSDir requests (uploads and fetches)",
        r.published.as_secs_f64(),
        r.hsdir_requests
    );
    println!(
        "received:    {} bytes in {:.3} s, {}",
        r.body_len,
        r.time.as_secs_f64(),
        if intact {
            "identical to what the service sent".to_owned()
        } else {
            format!("FAILED: {:?}", r.outcome)
        }
    );
    if let Some(d) = digest {
        println!("sha256:      {d}");
        Ok(())
    } else {
        Err(format!("the page did not arrive intact: {:?}", r.outcome))
    }
}
