//! `onion bootstrap [--authorities FILE] [--data-dir DIR] [--timeout SECS] [--dir-mode M]`:
//! bootstrap only, and print what was obtained as JSON on stdout.
//!
//! The same bootstrap as `onion get` and `onion socks` ([`onion_client::Client`] driven by
//! `net/driver.rs`): the consensus of the mode's flavour verified with the fetched authority
//! certificates, and the descriptors (microdescriptors matched to the consensus `m` lines by
//! digest, or signed server descriptors). It shows a directory mode working without building
//! a circuit, e.g. the microdescriptor mode on a private network, whose exits no summary lets
//! us use. The primary guards every circuit would enter through (guard-spec §4.6) are drawn
//! from the new directory and the data directory's `state` file, which keeps them.

use onion_client::dir::authorities;
use onion_client::guards::{self, Guards, GuardsConfig};

use crate::cmd::get::NetArgs;
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
    let cfg = opts.client_config()?;
    let mut d = Driver::new(cfg, opts.cache.clone())?;
    let dir = d.bootstrap(d.deadline(opts.timeout))?;
    let exits = dir
        .view
        .relays()
        .iter()
        .filter(|r| r.flags.contains(onion_dir::RelayFlags::EXIT))
        .count();
    // guard-spec §4.6: the guards every circuit would enter through, from the state the data
    // directory keeps (the client's own, if it wrote one), kept there.
    let config = GuardsConfig {
        path: guards::path_config(&authorities::v3_authorities(&opts.auths)),
        ..GuardsConfig::default()
    };
    let state = opts.cache.as_ref().and_then(|c| c.guards());
    let (mut guards, bad) = Guards::new(state.as_deref(), config);
    if let Some(e) = bad {
        eprintln!("onion: guard state file ignored: {e}");
    }
    guards.on_directory(&dir, driver::wall(), &mut rand_core::OsRng);
    if let (Some(cache), Some(text)) = (&opts.cache, guards.poll_persist()) {
        if let Err(e) = cache.put_guards(&text) {
            eprintln!("onion: cannot write the guard state: {e}");
        }
    }
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
        "primary_guards": guards
            .primary()
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}
