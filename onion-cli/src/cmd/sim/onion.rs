//! `onion sim --onion`: the onion-service scenario of the in-memory network
//! (`onion_sim::hs`): a service publishes its descriptor to HSDirs and keeps introduction
//! points; a client fetches the descriptor, meets the service at a rendezvous point and
//! fetches a page over the joined circuit (rend-spec-v3 §2–§4). Every party and relay talks
//! over channels (link handshake, cells as bytes on in-memory links). One line per
//! significant event, then each relay's channel peers, what each side learned of the other's
//! relays and the page's SHA-256.

use onion_sim::hs::{self as sim, HsSimConfig};

use super::{list, print_json, print_outcome, print_sets, print_story, sets_json, story_json};

/// Entry point of `onion sim --onion`: a service, a client and `--relays` relays (HSDirs,
/// introduction and rendezvous points) in memory, all over channels; the client fetches
/// `--bytes` (default 300000) from the service end to end.
pub fn run(args: &super::Args) -> Result<(), String> {
    let mut cfg = HsSimConfig::default();
    cfg.seed = args.seed.unwrap_or(cfg.seed);
    cfg.page_len = args.bytes.unwrap_or(cfg.page_len);
    cfg.relays = args.relays.unwrap_or(cfg.relays);
    cfg.client_auth = args.client_auth;
    let json = args.json;
    let r = sim::run(&cfg).map_err(|e| format!("onion-service simulation failed: {e}"))?;
    let intact = r.body == r.expected_body;
    if json {
        let out = serde_json::json!({
            "seed": cfg.seed,
            "address": r.address,
            "status": r.status_line,
            "bytes": r.body.len(),
            "sha256": r.digest_hex(),
            "intact": intact,
            "intro_points": r.intro_points,
            "rendezvous_point": r.rend_point,
            "client_path": r.client_path,
            "service_path": r.service_path,
            "client_learned": r.client_learned,
            "service_learned": r.service_learned,
            "hsdirs": r.hsdirs,
            "channel_peers": sets_json(&r.neighbours),
            "link_bytes": r.link_bytes,
            "client_circuit_sendmes": r.client_stats.circ_sendmes_sent,
            "client_stream_sendmes": r.client_stats.stream_sendmes_sent,
            "story": story_json(&r.story),
        });
        return print_json(&out, intact, "the page");
    }
    let title = format!(
        "onion sim --onion: client -> onion service over {} relays, {} bytes, seed {}{} (virtual time, in-memory channel links: {} ms one way, {} Mbit/s)",
        cfg.relays,
        cfg.page_len,
        cfg.seed,
        if cfg.client_auth {
            ", client authorization"
        } else {
            ""
        },
        sim::LATENCY.as_millis(),
        sim::BANDWIDTH / 125_000,
    );
    print_story(&title, &r.story);
    print_sets(
        "channels: whom each relay had a channel with (its neighbours on circuits):",
        &r.neighbours,
    );
    println!("client built circuits through:  {}", list(&r.client_path));
    println!("service built circuits through: {}", list(&r.service_path));
    println!(
        "client learned of the service:  {} (introduction points, from the descriptor)",
        list(&r.client_learned)
    );
    println!(
        "service learned of the client:  {} (rendezvous point, from INTRODUCE2)",
        list(&r.service_learned)
    );
    println!(
        "flow:        {} circuit and {} stream SENDMEs from the client, end to end through the rendezvous point",
        r.client_stats.circ_sendmes_sent, r.client_stats.stream_sendmes_sent
    );
    println!(
        "links:       {} bytes of cells crossed the channel links in {:.3} s of virtual time",
        r.link_bytes,
        r.total_time.as_secs_f64()
    );
    print_outcome(&r.status_line, &r.body, intact, "service")
}
