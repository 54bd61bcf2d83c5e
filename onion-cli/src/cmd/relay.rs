//! `onion relay`: run a Tor relay (guard, middle, and exit when given an exit policy) on an
//! ORPort, publishing its descriptor to the directory authorities.
//!
//! Keys live in `DATA_DIR/keys` in C tor's formats (generated at the first start, loaded
//! after); the descriptor and extra-info document are uploaded to every authority at start
//! and on C tor's schedule (dir-spec §2.1), once the reachability self-test has built a
//! circuit to the relay's own ORPort (`--assume-reachable` skips it, as C tor's
//! `AssumeReachable`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::SystemTime;

use clap::Args as ClapArgs;
use onion_crypto::cert::Timestamp;
use onion_crypto::relay_keyset::OnionKeyParams;
use onion_dir::consensus::NetParams;
use onion_dir::policy::ExitPolicy;
use onion_relay::{Relay, RelayConfig};
use rand_core::OsRng;

use crate::relay::circparams::circuit_config;
use crate::relay::keys::{duplicate, KeyDir};
use crate::relay::publish::{parse_exit_policy, DescriptorTemplate};
use crate::relay::server::{run as serve, Setup};
use onion_client::dir::authorities as authority;

/// Run a relay.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The ORPort to listen on, e.g. 127.0.0.1:9001 (its address is the one published).
    #[arg(long, value_name = "IPV4:PORT")]
    or_port: SocketAddr,
    /// Data directory (keys in DATA_DIR/keys, mode 0700).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Directory authorities (C tor's DirAuthority lines).
    #[arg(long, value_name = "FILE")]
    authorities: PathBuf,
    /// Exit policy, C tor syntax, comma-separated (e.g. "accept 127.0.0.0/8:*, reject *:*").
    /// Without it the relay is not an exit (reject *:*).
    #[arg(long, value_name = "POLICY")]
    exit_policy: Option<String>,
    /// Nickname (1-19 letters and digits).
    #[arg(long, default_value = "onionRelay")]
    nickname: String,
    /// Contact information for the descriptor.
    #[arg(long, value_name = "TEXT")]
    contact: Option<String>,
    /// Bandwidth rate and burst in bytes per second.
    #[arg(long, value_name = "RATE", default_value_t = 1 << 30)]
    bandwidth: u64,
    /// A testing network (C tor's TestingTorNetwork): extend to and exit to private
    /// addresses, and republish on bandwidth changes at once.
    #[arg(long)]
    testing_network: bool,
    /// Seconds between replacements of the TLS link certificate (default 7200, C tor's
    /// period; shorter values are for tests).
    #[arg(long, value_name = "SECS", default_value_t = crate::relay::server::LINK_CERT_ROTATION.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    link_cert_lifetime: u64,
    /// Publish without the reachability self-test (C tor's `AssumeReachable`, as testing
    /// networks set).
    #[arg(long)]
    assume_reachable: bool,
}

/// The relay's configuration: a guard and middle, an exit when `exit_policy` is given, a
/// directory cache and HSDir answering BEGIN_DIR (tor-spec §6.2.1), and congestion control
/// on the circuits ending here since the descriptor advertises `FlowCtrl=2` (proposal 324
/// §4.1), with C tor's default parameters until the relay has a consensus.
fn relay_config(address: Ipv4Addr, exit_policy: Option<ExitPolicy>, testing: bool) -> RelayConfig {
    let mut cfg = RelayConfig::new(vec![IpAddr::V4(address)]);
    cfg.exit_policy = exit_policy;
    cfg.dir_cache = true;
    cfg.hs_dir = true;
    cfg.circuits = circuit_config(&NetParams::default());
    if testing {
        cfg.extend_allow_private = true;
        cfg.exit_reject_private = false;
    }
    cfg
}

/// Runs `onion relay`.
pub fn run(args: Args) -> Result<(), String> {
    let IpAddr::V4(address) = args.or_port.ip() else {
        return Err("--or-port: an IPv4 address is needed (the descriptor's router line)".into());
    };
    let text = std::fs::read_to_string(&args.authorities)
        .map_err(|e| format!("{}: {e}", args.authorities.display()))?;
    let authorities =
        authority::parse_list(&text).map_err(|e| format!("{}: {e}", args.authorities.display()))?;
    let exit_policy = match &args.exit_policy {
        Some(p) => Some(parse_exit_policy(p)?),
        None => None,
    };
    let wall = SystemTime::now();
    let unix = Timestamp::from(wall);
    let params = OnionKeyParams::new(None, None);
    let key_dir = KeyDir::open(&args.data_dir).map_err(|e| e.to_string())?;
    let (keys, generated) = key_dir.load_or_generate(unix, &params, &mut OsRng)?;
    let fp = keys.rsa_identity().public().identity();
    eprintln!(
        "onion relay: {} keys in {}: fingerprint {} ed25519 {}",
        if generated { "generated" } else { "loaded" },
        key_dir.keys_dir().display(),
        hex::encode_upper(fp.as_bytes()),
        keys.ed_identity()
    );
    let relay_keys = duplicate(&keys, unix, &mut OsRng)?;
    let cfg = relay_config(address, exit_policy.clone(), args.testing_network);
    let dir_cache = cfg.dir_cache || cfg.hs_dir;
    let listener =
        TcpListener::bind(args.or_port).map_err(|e| format!("--or-port {}: {e}", args.or_port))?;
    let clock = crate::net::Clock::new();
    let relay =
        Relay::new(cfg, relay_keys, clock.now(), unix, &mut OsRng).map_err(|e| e.to_string())?;
    eprintln!(
        "onion relay: ORPort listening on {} ({}); {}",
        args.or_port,
        if exit_policy.is_some() {
            "exit"
        } else {
            "not an exit"
        },
        if args.assume_reachable {
            "reachability self-test skipped (published at once, as C tor's AssumeReachable)"
        } else {
            "publishing once the reachability self-test succeeds"
        }
    );
    let template = DescriptorTemplate {
        nickname: args.nickname,
        address,
        or_port: args.or_port.port(),
        contact: args.contact,
        exit_policy: exit_policy.unwrap_or(ExitPolicy {
            rules: vec![onion_dir::policy::PolicyRule::parse("reject", "*:*")
                .ok_or("reject *:* does not parse")?],
        }),
        rate: args.bandwidth,
        tunnelled_dir_server: dir_cache,
    };
    serve(Setup {
        listener,
        relay,
        keys,
        key_dir,
        template,
        authorities,
        testing_network: args.testing_network,
        link_cert_rotation: std::time::Duration::from_secs(args.link_cert_lifetime),
        self_test: (!args.assume_reachable).then_some(args.or_port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptor advertises `FlowCtrl=1-2`: a relay built by `onion relay` answers a
    /// congestion-control request with `sendme_inc` (C tor's default 31) instead of running
    /// fixed windows.
    #[test]
    fn relay_runs_what_its_descriptor_advertises() {
        assert!(onion_dir::relaydesc::ONION_RELAY_PROTOCOLS.contains("FlowCtrl=1-2"));
        let cfg = relay_config(Ipv4Addr::new(127, 0, 0, 1), None, true);
        let cc = cfg
            .circuits
            .congestion_control
            .expect("congestion control on");
        assert_eq!(cc.sendme_inc, 31);
        assert!(cfg.dir_cache && cfg.hs_dir);
        assert!(cfg.extend_allow_private && !cfg.exit_reject_private);
        let cfg = relay_config(Ipv4Addr::new(127, 0, 0, 1), None, false);
        assert!(!cfg.extend_allow_private && cfg.exit_reject_private);
    }
}
