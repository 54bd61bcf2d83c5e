//! `onion sim`: run the in-memory Tor network and tell its story.
//!
//! By default the embedder's client, `onion_client::Client` (the code `onion get` runs),
//! starts with nothing stored in a simulated network of directory authorities, guard, middle
//! and exit relays (every one an `onion_relay::Relay`, the machine `onion relay` runs) and a
//! web server: it bootstraps from the authorities, builds a circuit and fetches a document
//! through it, with virtual time and a seeded RNG. We print one line per significant step,
//! the SHA-256 of the fetched body and the throughput (in virtual network time, and in
//! wall-clock CPU time for all the parties). `--circuit` tells the same fetch cell by cell from
//! a bare onion-circuit client; `--client`, `--onion` and `--bottleneck` run the other
//! scenarios.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use onion_circuit::circuit::HandshakeKind;
use onion_sim::circuit::{self as sim, web, SimConfig, StoryLine};
use onion_sim::client::driver::Outcome;
use onion_sim::client::runs;
use onion_sim::client::world::WorldConfig;
use sha2::{Digest, Sha256};

mod bottleneck;
mod onion;

/// `onion sim`: onion_client::Client bootstraps from simulated authorities and fetches N
/// bytes over HTTP through a circuit of onion_relay::Relay relays, and each step is printed.
#[derive(clap::Args)]
pub struct Args {
    /// Seed of every random choice (the same seed gives the same run).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Size of the fetched document (default: 1500000; with --onion, the page size; with
    /// --client, each stream's, default 1048576).
    #[arg(long, value_name = "N", value_parser = parse_bytes)]
    bytes: Option<u64>,
    /// With --circuit: the number of relays in the circuit (1-8). (The client of the
    /// default run chooses its paths itself: three hops, path-spec §2.)
    #[arg(long, value_name = "N", requires = "circuit", value_parser = clap::value_parser!(u64).range(1..=8))]
    hops: Option<u64>,
    /// One-way latency of every simulated link.
    #[arg(long, value_name = "N")]
    latency_ms: Option<u64>,
    /// Bandwidth of every simulated link.
    #[arg(long, value_name = "N")]
    bandwidth_mbit: Option<u64>,
    /// With --circuit: the handshake of the first hop. (The client of the default run
    /// chooses as C tor does: ntor, ntor-v3 with an exit it negotiates congestion control with.)
    #[arg(long, value_name = "ntor|ntor-v3|fast", requires = "circuit", value_parser = parse_first_hop)]
    first_hop: Option<HandshakeKind>,
    /// Print only the outcome, not the story.
    #[arg(long, short)]
    quiet: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Run the onion-service scenario instead: onion_client::Client as client and as
    /// service host, onion_relay::Relay as HSDirs, introduction and rendezvous points.
    #[arg(long, conflicts_with_all = ["hops", "latency_ms", "bandwidth_mbit", "first_hop", "quiet"])]
    onion: bool,
    /// Run the embedder's client (onion_client::Client) instead, on a simulated network
    /// with directory authorities: it bootstraps from them, then fetches --streams documents
    /// of --bytes each in parallel (default: 100 of 1 MiB), every body's SHA-256 checked.
    #[arg(long, conflicts_with_all = ["onion", "hops", "first_hop"])]
    client: bool,
    /// With --client: the number of parallel streams.
    #[arg(long, value_name = "N", requires = "client", value_parser = clap::value_parser!(u64).range(1..=1000))]
    streams: Option<u64>,
    /// Relays offer congestion control (proposal 324) and the client negotiates it with the
    /// exits (the default run and --client).
    #[arg(long, conflicts_with_all = ["onion", "circuit", "bottleneck"])]
    congestion_control: bool,
    /// Tell the fetch cell by cell instead: a bare onion-circuit client (one channel, one
    /// circuit through --hops relays, no directory) fetches --bytes from the web server
    /// through onion_relay::Relay relays.
    #[arg(long, conflicts_with_all = ["onion", "client", "bottleneck"])]
    circuit: bool,
    /// Run the congestion-control experiment instead (proposal 324): a --bytes download
    /// (default 50 MiB) through guard, middle and exit whose guard-middle link is a
    /// --bandwidth-mbit bottleneck (default 200) with a bounded queue, with Tor Vegas and
    /// with fixed windows; --json adds the trace of cwnd, RTT and inflight.
    #[arg(long, conflicts_with_all = ["onion", "client", "hops", "latency_ms", "first_hop"])]
    bottleneck: bool,
    /// With --bottleneck: the path's round-trip time (default 100).
    #[arg(long, value_name = "N", requires = "bottleneck")]
    rtt_ms: Option<u64>,
    /// With --bottleneck: run Tor Vegas as a consensus carrying NAME=VALUE would set it for
    /// exit circuits (C tor's names and ranges, e.g. cc_sscap_exit=10000); repeatable, the
    /// other parameters keep C tor's defaults.
    #[arg(long = "cc-param", value_name = "NAME=VALUE", requires = "bottleneck", value_parser = parse_cc_param)]
    cc_params: Vec<(String, i32)>,
    /// With --onion: the number of relays.
    #[arg(long, value_name = "N", requires = "onion")]
    relays: Option<usize>,
    /// With --onion: the service requires client authorization.
    #[arg(long, requires = "onion")]
    client_auth: bool,
}

/// `--bytes N`, bounded by what the simulated web server will produce.
fn parse_bytes(v: &str) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|_| format!("not a number: {v:?}"))?;
    if n > sim::web::MAX_BODY {
        return Err(format!("at most {}", sim::web::MAX_BODY));
    }
    Ok(n)
}

/// `--cc-param NAME=VALUE`: the syntax here, the name and range when the experiment is set up.
fn parse_cc_param(v: &str) -> Result<(String, i32), String> {
    onion_sim::cc::parse_cc_param(v).map_err(|e| e.to_string())
}

fn parse_first_hop(v: &str) -> Result<HandshakeKind, String> {
    match v {
        "ntor" => Ok(HandshakeKind::Ntor),
        "ntor-v3" => Ok(HandshakeKind::NtorV3),
        "fast" => Ok(HandshakeKind::CreateFast),
        _ => Err("takes ntor, ntor-v3 or fast".into()),
    }
}

/// The story as JSON objects: `{at_ms, party, event}`.
fn story_json(story: &[StoryLine]) -> Vec<serde_json::Value> {
    story
        .iter()
        .map(|l| {
            serde_json::json!({
                "at_ms": l.at.as_secs_f64() * 1e3, "party": l.party, "event": l.text
            })
        })
        .collect()
}

/// Sets by name as a JSON object.
fn sets_json(sets: &[(String, BTreeSet<String>)]) -> serde_json::Map<String, serde_json::Value> {
    sets.iter()
        .map(|(p, s)| (p.clone(), serde_json::json!(s)))
        .collect()
}

fn list(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        return "(none)".into();
    }
    s.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// A title line, a blank line, then one line per story event: virtual time, party, text.
fn print_story(title: &str, story: &[StoryLine]) {
    println!("{title}");
    println!();
    let w = story
        .iter()
        .map(|l| l.party.len())
        .max()
        .unwrap_or(0)
        .max(7);
    for l in story {
        println!(
            "{:>9.3} ms  {:<w$} {}",
            l.at.as_secs_f64() * 1e3,
            l.party,
            l.text
        );
    }
}

/// A heading, then one line per name with its set.
fn print_sets(heading: &str, sets: &[(String, BTreeSet<String>)]) {
    println!();
    println!("{heading}");
    let w = sets.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (n, s) in sets {
        println!("  {n:<w$} {}", list(s));
    }
    println!();
}

/// The status line, what arrived, and its SHA-256; an error if it is not what `sender` sent.
fn print_outcome(status: &str, body: &[u8], intact: bool, sender: &str) -> Result<(), String> {
    println!("status:      {status}");
    println!(
        "received:    {} bytes, {}",
        body.len(),
        if intact {
            format!("identical to what the {sender} sent")
        } else {
            "CORRUPTED".to_owned()
        }
    );
    println!("sha256:      {}", hex::encode(Sha256::digest(body)));
    if intact {
        Ok(())
    } else {
        Err(format!("the body does not match what the {sender} sent"))
    }
}

/// The `--json` report on stdout; an error if the body did not arrive intact (`what` names it).
fn print_json(out: &serde_json::Value, intact: bool, what: &str) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(out).map_err(|e| e.to_string())?
    );
    if intact {
        Ok(())
    } else {
        Err(format!("{what} does not match what was sent"))
    }
}

/// Entry point of `onion sim`.
pub fn run(args: Args) -> Result<(), String> {
    if args.onion {
        return onion::run(&args);
    }
    if args.client {
        return run_client(&args);
    }
    if args.bottleneck {
        return bottleneck::run(&args);
    }
    if args.circuit {
        return run_circuit(&args);
    }
    run_document(&args)
}

/// `onion sim --circuit`: the cell-level story of one fetch.
fn run_circuit(args: &Args) -> Result<(), String> {
    let mut cfg = SimConfig::default();
    cfg.seed = args.seed.unwrap_or(cfg.seed);
    cfg.response_len = args.bytes.unwrap_or(cfg.response_len);
    cfg.hops = args.hops.map_or(cfg.hops, |h| h as usize);
    cfg.latency = args.latency_ms.map_or(cfg.latency, Duration::from_millis);
    cfg.bandwidth = args
        .bandwidth_mbit
        .map_or(cfg.bandwidth, |b| b.saturating_mul(125_000));
    cfg.first_hop = args.first_hop.unwrap_or(cfg.first_hop);
    let (quiet, json) = (args.quiet, args.json);
    cfg.story = !quiet || json;

    let started = Instant::now();
    let mut net =
        sim::Sim::new(cfg.clone()).map_err(|e| format!("simulation set-up failed: {e}"))?;
    let keygen = started.elapsed();
    let started = Instant::now();
    net.run_to_end()
        .map_err(|e| format!("simulation failed: {e}"))?;
    let wall = started.elapsed();
    let report = net.report();

    let digest = hex::encode(Sha256::digest(&report.body));
    let intact = report.body == report.expected_body;
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let mb = report.body.len() as f64 / 1e6;
    let virt_rate = mb / secs(report.transfer_time);
    let wall_rate = mb / secs(wall);

    if json {
        let out = serde_json::json!({
            "seed": cfg.seed,
            "status": report.status_line,
            "bytes": report.body.len(),
            "sha256": digest,
            "intact": intact,
            "transfer_virtual_s": report.transfer_time.as_secs_f64(),
            "throughput_virtual_MBps": virt_rate,
            "keygen_wall_s": keygen.as_secs_f64(),
            "wall_s": wall.as_secs_f64(),
            "throughput_wall_MBps": wall_rate,
            "link_bytes": report.link_bytes,
            "client_flow": {
                "data_cells_received": report.client_stats.data_cells_received,
                "circuit_sendmes_sent": report.client_stats.circ_sendmes_sent,
                "stream_sendmes_sent": report.client_stats.stream_sendmes_sent,
            },
            "seen": sets_json(&report.seen),
            "story": story_json(&report.story),
        });
        return print_json(&out, intact, "the fetched body");
    }
    let title = format!(
        "onion sim --circuit: client -> {} -> web server, {} bytes, seed {} (virtual time, in-memory links: {} ms one way, {} Mbit/s)",
        match cfg.hops {
            1 => "exit".to_owned(),
            3 => "guard -> middle -> exit".to_owned(),
            n => format!("{n} relays"),
        },
        cfg.response_len,
        cfg.seed,
        cfg.latency.as_millis(),
        cfg.bandwidth / 125_000,
    );
    print_story(&title, &report.story);
    if !quiet {
        print_sets(
            "what each party saw (network addresses and names):",
            &report.seen,
        );
    }
    let outcome = print_outcome(&report.status_line, &report.body, intact, "server");
    println!(
        "throughput:  {virt_rate:.2} MB/s in virtual network time ({:.3} s for the body)",
        report.transfer_time.as_secs_f64()
    );
    println!(
        "             {wall_rate:.2} MB/s of wall-clock CPU, all parties on one core ({:.3} s for handshakes and transfer; relay keys and certificates took {:.3} s before)",
        wall.as_secs_f64(),
        keygen.as_secs_f64()
    );
    outcome
}

/// The client world as the options say: seed, every access link's latency and bandwidth,
/// congestion control.
fn world_config(args: &Args) -> WorldConfig {
    let mut cfg = WorldConfig::default();
    cfg.seed = args.seed.unwrap_or(cfg.seed);
    if let Some(ms) = args.latency_ms {
        cfg.relay_link.latency = Duration::from_millis(ms);
        cfg.client_link.latency = Duration::from_millis(ms);
    }
    if let Some(b) = args.bandwidth_mbit {
        cfg.relay_link.bandwidth = b.saturating_mul(125_000);
        cfg.client_link.bandwidth = b.saturating_mul(125_000);
    }
    cfg.congestion_control = args.congestion_control;
    cfg
}

/// The default `onion sim`: onion_client::Client bootstraps from the simulated authorities
/// and fetches one document through a circuit of onion_relay::Relay relays, told step by
/// step.
fn run_document(args: &Args) -> Result<(), String> {
    let cfg = world_config(args);
    let size = args.bytes.unwrap_or(1_500_000);
    let started = Instant::now();
    let r =
        runs::fetch_document(cfg.clone(), size).map_err(|e| format!("simulation failed: {e}"))?;
    let wall = started.elapsed();
    let intact = r.outcome == Outcome::Ok;
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let mb = r.body_len as f64 / 1e6;
    let virt_rate = mb / secs(r.transfer_time);
    let flow = r.circuit_end.as_ref().map(|v| v.flow).unwrap_or_default();
    let expected = hex::encode(Sha256::digest(web::expected_body(cfg.seed, size)));
    if args.json {
        let circuit = r.circuit.as_ref().map(|v| {
            serde_json::json!({
                "path": v.hops.iter().map(|h| h.nickname.clone()).collect::<Vec<_>>(),
                "handshakes": v.hops.iter().map(|h| handshake_name(h.handshake)).collect::<Vec<_>>(),
                "purpose": format!("{:?}", v.purpose),
            })
        });
        let cc = |v: Option<&onion_client::CircuitView>| {
            v.and_then(|v| v.congestion_control).map(|c| {
                serde_json::json!({
                    "sendme_inc": c.sendme_inc, "cwnd": c.cwnd, "inflight": c.inflight,
                    "slow_start": c.slow_start, "rtt_min_ms": c.rtt_min_usec as f64 / 1e3,
                    "rtt_ewma_ms": c.rtt_ewma_usec as f64 / 1e3,
                })
            })
        };
        let out = serde_json::json!({
            "seed": cfg.seed,
            "relays": r.relays,
            "status": r.status_line,
            "outcome": format!("{:?}", r.outcome),
            "bytes": r.body_len,
            "sha256": intact.then_some(expected),
            "intact": intact,
            "bootstrap_virtual_s": r.bootstrap.time.as_secs_f64(),
            "bootstrap_requests": r.bootstrap.requests.len(),
            "bootstrap_progress": r.bootstrap.progress,
            "relays_usable": r.bootstrap.relays_usable,
            "circuit": circuit,
            "congestion_control": cc(r.circuit.as_ref()),
            "congestion_control_end": cc(r.circuit_end.as_ref()),
            "open_virtual_s": r.open_time.as_secs_f64(),
            "transfer_virtual_s": r.transfer_time.as_secs_f64(),
            "throughput_virtual_MBps": virt_rate,
            "total_virtual_s": r.total_time.as_secs_f64(),
            "wall_s": wall.as_secs_f64(),
            "throughput_wall_MBps": mb / secs(wall),
            "link_bytes": r.link_bytes,
            "client_flow": {
                "data_cells_received": flow.data_cells_received,
                "data_cells_sent": flow.data_cells_sent,
                "circuit_sendmes_sent": flow.circ_sendmes_sent,
                "stream_sendmes_sent": flow.stream_sendmes_sent,
                "xoff_received": flow.xoff_received,
                "xon_received": flow.xon_received,
            },
            "story": if args.quiet { Vec::new() } else { story_json(&r.story) },
        });
        return print_json(&out, intact, "the fetched body");
    }
    let title = format!(
        "onion sim: onion_client::Client -> {} onion_relay::Relay relays ({} authorities) -> web server, {size} bytes, seed {} (virtual time; access links {} ms one way, {} Mbit/s; {})",
        r.relays,
        cfg.authorities,
        cfg.seed,
        cfg.relay_link.latency.as_millis(),
        cfg.relay_link.bandwidth / 125_000,
        if cfg.congestion_control {
            "relays offer congestion control"
        } else {
            "fixed SENDME windows"
        }
    );
    if args.quiet {
        println!("{title}");
    } else {
        print_story(&title, &r.story);
    }
    println!();
    println!(
        "bootstrap:   {} relays usable after {:.3} s virtual ({} directory requests)",
        r.bootstrap.relays_usable,
        r.bootstrap.time.as_secs_f64(),
        r.bootstrap.requests.len()
    );
    if let Some(v) = &r.circuit {
        println!("circuit:     {}", v.path_string());
    }
    println!("status:      {}", r.status_line);
    println!(
        "received:    {} bytes, {}",
        r.body_len,
        if intact {
            "identical to what the server sent (SHA-256 checked)".to_owned()
        } else {
            format!("FAILED: {:?}", r.outcome)
        }
    );
    if intact {
        println!("sha256:      {expected}");
    }
    println!("flow:        {}", onion_sim::client::runs::flow_text(&flow));
    println!(
        "throughput:  {virt_rate:.2} MB/s in virtual network time ({:.3} s for the body after {:.3} s to open the stream)",
        r.transfer_time.as_secs_f64(),
        r.open_time.as_secs_f64()
    );
    println!(
        "             {:.2} MB/s of wall-clock CPU, all parties on one core ({:.3} s for everything: keys, bootstrap, circuit, transfer)",
        mb / secs(wall),
        wall.as_secs_f64()
    );
    if intact {
        Ok(())
    } else {
        Err(format!("the fetch failed: {:?}", r.outcome))
    }
}

fn handshake_name(k: HandshakeKind) -> &'static str {
    match k {
        HandshakeKind::Ntor => "ntor",
        HandshakeKind::NtorV3 => "ntor-v3",
        HandshakeKind::CreateFast => "CREATE_FAST",
    }
}

/// `onion sim --client`: bootstrap the embedder's client from the simulated authorities,
/// then run the parallel streams and print a summary.
fn run_client(args: &Args) -> Result<(), String> {
    let cfg = world_config(args);
    let streams = args.streams.unwrap_or(100) as usize;
    let bytes = args.bytes.unwrap_or(1 << 20);
    let started = Instant::now();
    let (mut sim, boot) =
        runs::bootstrapped(cfg.clone()).map_err(|e| format!("bootstrap failed: {e}"))?;
    let boot_wall = started.elapsed();
    let started = Instant::now();
    let rep = runs::streams(
        &mut sim,
        streams,
        bytes,
        onion_client::Isolation::NONE,
        Duration::from_secs(24 * 3600),
    )
    .map_err(|e| format!("streams failed: {e}"))?;
    let wall = started.elapsed();
    let virt = rep.throughput() / 1e6;
    let cpu_ns = wall.as_nanos() as f64 / rep.body_bytes.max(1) as f64;
    let ok = rep.ok == streams;
    if args.json {
        let out = serde_json::json!({
            "seed": cfg.seed,
            "congestion_control": cfg.congestion_control,
            "relays": sim.world.n_relays(),
            "bootstrap_virtual_s": boot.time.as_secs_f64(),
            "bootstrap_wall_s": boot_wall.as_secs_f64(),
            "bootstrap_requests": boot.requests.len(),
            "relays_usable": boot.relays_usable,
            "streams": streams,
            "bytes_per_stream": bytes,
            "ok": rep.ok,
            "failures": rep.failures,
            "exit_circuits": rep.exit_circuits,
            "body_bytes": rep.body_bytes,
            "transfer_virtual_s": rep.time.as_secs_f64(),
            "throughput_virtual_MBps": virt,
            "wall_s": wall.as_secs_f64(),
            "cpu_ns_per_byte": cpu_ns,
        });
        return print_json(&out, ok, "a fetched body");
    }
    println!(
        "onion sim --client: onion_client::Client on {} simulated relays ({} authorities), seed {}, {}",
        sim.world.n_relays(),
        cfg.authorities,
        cfg.seed,
        if cfg.congestion_control {
            "congestion control (Tor Vegas) with the exits"
        } else {
            "fixed SENDME windows"
        }
    );
    println!(
        "bootstrap:   {} relays usable after {:.3} s virtual ({} directory requests, {} connections; {:.2} s wall with key generation)",
        boot.relays_usable,
        boot.time.as_secs_f64(),
        boot.requests.len(),
        boot.connects,
        boot_wall.as_secs_f64()
    );
    println!(
        "streams:     {}/{} bodies of {bytes} bytes intact (SHA-256 checked), over {} circuit(s) at the exits",
        rep.ok, streams, rep.exit_circuits
    );
    for f in rep.failures.iter().take(5) {
        println!("             failed: {f}");
    }
    println!(
        "throughput:  {virt:.2} MB/s in virtual network time ({:.3} s for {} bytes)",
        rep.time.as_secs_f64(),
        rep.body_bytes
    );
    println!(
        "             {:.2} MB/s of wall-clock CPU, {cpu_ns:.0} ns per body byte (client, relays and web server on one core)",
        rep.body_bytes as f64 / 1e6 / wall.as_secs_f64().max(1e-9)
    );
    if ok {
        Ok(())
    } else {
        Err(format!("{} of {streams} streams failed", streams - rep.ok))
    }
}
