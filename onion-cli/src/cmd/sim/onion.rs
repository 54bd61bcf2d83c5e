//! `onion sim --onion`: the onion-service scenario of the in-memory network
//! (`onion_hs::sim`): a service publishes its descriptor to HSDirs and keeps introduction
//! points; a client fetches the descriptor, meets the service at a rendezvous point and
//! fetches a page over the joined circuit (rend-spec-v3 §2–§4). One line per significant
//! event, then what each side learned of the other's relays and the page's SHA-256.

use onion_hs::sim::{self, HsSimConfig};

const HELP: &str =
    "usage: onion sim --onion [--seed N] [--bytes N] [--relays N] [--client-auth] [--json]

Runs an onion service, a client and N relays (HSDirs, introduction and rendezvous points) in
memory; the client fetches N bytes (default 300000) from the service end to end.";

fn parse<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
    v.ok_or_else(|| format!("{flag} needs a value"))?
        .parse()
        .map_err(|_| format!("bad value for {flag}"))
}

fn list(s: &std::collections::BTreeSet<String>) -> String {
    if s.is_empty() {
        return "(none)".into();
    }
    s.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// Entry point of `onion sim --onion`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut cfg = HsSimConfig::default();
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--onion" => {}
            "--seed" => cfg.seed = parse(a, it.next())?,
            "--bytes" => cfg.page_len = parse(a, it.next())?,
            "--relays" => cfg.relays = parse(a, it.next())?,
            "--client-auth" => cfg.client_auth = true,
            "--json" => json = true,
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n{HELP}")),
        }
    }
    if cfg.page_len > onion_circuit::sim::web::MAX_BODY {
        return Err(format!(
            "--bytes is at most {}",
            onion_circuit::sim::web::MAX_BODY
        ));
    }
    let r = sim::run(&cfg).map_err(|e| format!("onion-service simulation failed: {e}"))?;
    let intact = r.body == r.expected_body;
    if json {
        let story: Vec<_> = r
            .story
            .iter()
            .map(|l| {
                serde_json::json!({
                    "at_ms": l.at.as_secs_f64() * 1e3, "party": l.party, "event": l.text
                })
            })
            .collect();
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
            "client_circuit_sendmes": r.client_stats.circ_sendmes_sent,
            "client_stream_sendmes": r.client_stats.stream_sendmes_sent,
            "story": story,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "onion sim --onion: client -> onion service over {} relays, {} bytes, seed {}{}",
        cfg.relays,
        cfg.page_len,
        cfg.seed,
        if cfg.client_auth {
            ", client authorization"
        } else {
            ""
        }
    );
    println!();
    for l in &r.story {
        println!(
            "{:>9.3} ms  {:<8} {}",
            l.at.as_secs_f64() * 1e3,
            l.party,
            l.text
        );
    }
    println!();
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
    println!("status:      {}", r.status_line);
    println!(
        "received:    {} bytes, {}",
        r.body.len(),
        if intact {
            "identical to what the service sent"
        } else {
            "CORRUPTED"
        }
    );
    println!("sha256:      {}", r.digest_hex());
    if intact {
        Ok(())
    } else {
        Err("the page arrived corrupted".into())
    }
}
