//! `onion bootstrap [--authorities FILE] [--data-dir DIR] [--timeout SECS] [--dir-mode M]`:
//! bootstrap only, and print what was obtained as JSON on stdout.
//!
//! The same bootstrap as `onion get` and `onion socks` (`net/bootstrap.rs`): the consensus of
//! the mode's flavour verified with the fetched authority certificates, and the descriptors
//! (microdescriptors matched to the consensus `m` lines by digest, or signed server
//! descriptors). It shows a directory mode working without building a circuit, e.g. the
//! microdescriptor mode on a private network, whose exits no summary lets us use.

use crate::cmd::get::NetArgs;
use crate::net::client::Client;
use crate::net::driver::{self, Driver};

/// `onion bootstrap` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    net: NetArgs,
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let opts = args.net.open()?;
    if crate::net::driver::enabled() {
        return run_client(&opts);
    }
    let mut client = Client::new();
    let dir = opts.bootstrap(&mut client)?;
    let s = &dir.summary;
    let exits = dir
        .view
        .relays()
        .iter()
        .filter(|r| r.flags.contains(onion_dir::RelayFlags::EXIT))
        .count();
    let out = serde_json::json!({
        "mode": s.mode.name(),
        "valid_after": s.valid_after,
        "relays": s.relays,
        "usable_relays": dir.view.len(),
        "usable_exit_flagged": exits,
        "descriptors": s.descriptors,
        "signatures_valid": s.signatures_valid,
        "signatures_needed": s.signatures_needed,
        "cached": s.cached,
        // guard-spec §4.6: the guards every circuit would enter through (kept in the data
        // directory's `state` file, if one is given).
        "primary_guards": client
            .guards
            .primary()
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}

/// `onion bootstrap` on [`onion_client::Client`].
fn run_client(opts: &crate::cmd::get::NetOptions) -> Result<(), String> {
    let cfg = driver::client_config(&opts.auths, opts.dir_mode.client())?;
    let mut d = Driver::new(cfg, opts.cache.clone())?;
    let dir = d.bootstrap(d.deadline(opts.timeout))?;
    let exits = dir
        .view
        .relays()
        .iter()
        .filter(|r| r.flags.contains(onion_dir::RelayFlags::EXIT))
        .count();
    let out = serde_json::json!({
        "mode": dir.mode.name(),
        "valid_after": dir.valid_after.to_string(),
        "relays": dir.relays_listed,
        "usable_relays": dir.view.len(),
        "usable_exit_flagged": exits,
        "descriptors": dir.descriptors,
        "signatures_valid": dir.signatures_valid,
        "signatures_needed": dir.signatures_needed,
        "cached": dir.from_cache,
    });
    println!("{out}");
    Ok(())
}
