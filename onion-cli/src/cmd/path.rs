//! `onion consensus path FILE (--microdescs FILE | --descriptors FILE) --seed N [--port P]
//! [--addr IP] [--len L] [--private]`: choose one path as the onion-dir path selector
//! would (path-spec §2.2) and print it as JSON.
//!
//! With `--microdescs` the consensus must be the microdesc flavour, with `--descriptors` the
//! `ns` flavour and a file of server descriptors (full-descriptor mode, needed on private
//! networks whose exits only allow 127.0.0.0/8). `--private` turns off the /16 rule
//! (EnforceDistinctSubnets 0) for networks on one host. Signatures are not checked here:
//! `onion consensus summary --certs` does that.

use std::net::IpAddr;

use onion_dir::netview::{NetView, RelayRecord};
use onion_dir::policy::ExitTarget;
use onion_dir::select::path::{ExitRequest, PathConfig, PathOptions, PathSelector};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{json, Value};

/// `onion consensus path` (see the module documentation).
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("docs").required(true).args(["microdescs", "descriptors"]))]
pub struct Args {
    /// The consensus file (microdesc flavour with --microdescs, ns with --descriptors).
    #[arg(value_name = "FILE")]
    consensus: String,
    /// Microdescriptors of the relays.
    #[arg(long, value_name = "FILE")]
    microdescs: Option<String>,
    /// Server descriptors of the relays (full-descriptor mode).
    #[arg(long, value_name = "FILE")]
    descriptors: Option<String>,
    /// Seed of the random choice (the same seed gives the same path).
    #[arg(long, value_name = "N")]
    seed: u64,
    /// A port the exit must allow.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// An address the exit must allow (with --port).
    #[arg(long, value_name = "IP", requires = "port")]
    addr: Option<IpAddr>,
    /// Path length.
    #[arg(long, value_name = "L", default_value_t = 3)]
    len: usize,
    /// Turn off the distinct-/16 rule (networks on one host).
    #[arg(long)]
    private: bool,
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn hop_json(position: &str, r: &RelayRecord) -> Value {
    json!({
        "position": position,
        "nickname": r.nickname,
        "fingerprint": r.rsa_id.to_string(),
        "ed25519": r.ed_id.map(|k| onion_dir::Ed25519Identity(k).to_base64()),
        "ntor_onion_key": r.ntor_onion_key.map(hex::encode),
        "address": r.ipv4.map(|a| a.to_string()),
        "ipv6": r.ipv6.map(|a| a.to_string()),
        "flags": r.flags.names().collect::<Vec<_>>(),
        "bandwidth": r.bandwidth,
    })
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let out = path_json(&args)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// The chosen path and its context, as JSON.
fn path_json(a: &Args) -> Result<Value, String> {
    let cons_text = read(&a.consensus)?;
    let cons = onion_dir::consensus::parse(&cons_text)
        .map_err(|e| format!("{}: {e}", a.consensus))?
        .assume_verified();
    let view = if let Some(md_path) = &a.microdescs {
        let text = read(md_path)?;
        let mds = onion_dir::microdesc::parse_many(&text).map_err(|e| format!("{md_path}: {e}"))?;
        NetView::from_microdescs(&cons, &mds)
    } else {
        let d_path = a.descriptors.as_deref().unwrap_or_default();
        let text = read(d_path)?;
        let descs: Vec<_> = onion_dir::routerdesc::parse_many(&text)
            .map_err(|e| format!("{d_path}: {e}"))?
            .into_iter()
            .map(|d| d.peek().clone())
            .collect();
        NetView::from_router_descs(&cons, &descs)
    }
    .map_err(|e| e.to_string())?;
    let cfg = PathConfig {
        enforce_distinct_subnets: !a.private,
        ..PathConfig::default()
    };
    let sel = PathSelector::with_config(&view, cfg);
    let target = match (a.addr, a.port) {
        (Some(ip), Some(p)) => Some(ExitTarget::Addr(ip, p)),
        (None, Some(p)) => Some(ExitTarget::Port(p)),
        (Some(_), None) => return Err("--addr needs --port".into()),
        (None, None) => None,
    };
    let request = target.map_or(ExitRequest::Any, ExitRequest::Target);
    let mut rng = ChaCha20Rng::seed_from_u64(a.seed);
    let path = sel
        .exit_path(request, a.len, None, &PathOptions::default(), &mut rng)
        .map_err(|e| e.to_string())?;
    let n = path.len();
    let hops: Vec<Value> = path
        .records(&view)
        .enumerate()
        .map(|(i, r)| {
            let pos = if i == 0 {
                "guard"
            } else if i + 1 == n {
                "exit"
            } else {
                "middle"
            };
            hop_json(pos, r)
        })
        .collect();
    Ok(json!({
        "flavor": cons.flavor.name(),
        "valid_after": cons.valid_after.unix(),
        "relays_in_consensus": cons.relays.len(),
        "relays_usable": view.len(),
        "seed": a.seed,
        "port": a.port,
        "addr": a.addr.map(|x| x.to_string()),
        "enforce_distinct_subnets": !a.private,
        "path": hops,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(s: &str) -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-dir/testdata/tornet");
        std::iter::once("path".to_string())
            .chain(s.replace("$T", dir).split_whitespace().map(str::to_string))
            .collect()
    }

    fn parse_args(a: &[String]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(a).map(|c| c.args)
    }

    #[test]
    fn private_network_path_is_reproducible() {
        let a = args(
            "$T/cached-consensus --descriptors $T/cached-descriptors.new --seed 9 \
             --addr 127.0.0.1 --port 80 --private",
        );
        let one = path_json(&parse_args(&a).unwrap()).unwrap();
        let two = path_json(&parse_args(&a).unwrap()).unwrap();
        assert_eq!(one, two);
        let hops = one["path"].as_array().unwrap();
        assert_eq!(hops.len(), 3);
        assert_eq!(hops[0]["position"], "guard");
        assert!(hops[2]["nickname"].as_str().unwrap().starts_with("exit"));
        // Without --private every relay shares 127.0.0.0/16: no path.
        let strict =
            args("$T/cached-consensus --descriptors $T/cached-descriptors.new --seed 9 --port 80");
        assert!(path_json(&parse_args(&strict).unwrap()).is_err());
    }

    #[test]
    fn microdesc_mode_and_bad_arguments() {
        let a = args("$T/cached-microdesc-consensus --microdescs $T/cached-microdescs.new --seed 1 --private --len 4");
        // The microdescriptor summaries of this network's exits say "reject 1-65535" (their
        // policy allows only 127.0.0.0/8): no exit path in microdescriptor mode.
        let err = path_json(&parse_args(&a).unwrap()).unwrap_err();
        assert!(err.contains("exit"), "{err}");
        assert!(parse_args(&args("$T/cached-consensus --seed 1")).is_err());
        assert!(parse_args(&args("$T/x --microdescs y")).is_err());
        assert!(parse_args(&args("$T/x --microdescs y --seed 1 --port 0")).is_err());
    }
}
