//! Building a 3-hop exit circuit from a verified [`Directory`] (path-spec §2).
//!
//! The path (exit first, then guard and middle, with weights, flags, family and /16 rules)
//! comes from `onion_dir::select::path`; this module only turns it into a channel to the first hop
//! and a circuit extended hop by hop with ntor (tor-spec §5.1.4).

use std::net::{IpAddr, SocketAddr};

use onion_circuit::channel::PeerIds;
use onion_circuit::circuit::HopTarget;
use onion_circuit::Instant;
use onion_crypto::keys::NtorOnionKey;
use onion_dir::policy::ExitTarget;
use onion_dir::netview::RelayRecord;
use onion_dir::select::path::{Exclusions, ExitRequest, PathConfig, PathOptions, PathSelector};
use onion_dir::RsaIdentity;

use super::authority::DirAuthority;
use super::bootstrap::Directory;
use super::client::{BuildStatus, Client};
use super::guards::GuardTicket;

/// What a hop needs from its directory record.
pub fn hop_target(r: &RelayRecord) -> Result<HopTarget, String> {
    let ntor = r
        .ntor_onion_key
        .ok_or_else(|| format!("relay {} has no ntor onion key", r.nickname))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    if let Some(a) = r.ipv4 {
        addrs.push(SocketAddr::V4(a));
    }
    if let Some(a) = r.ipv6 {
        addrs.push(SocketAddr::V6(a));
    }
    Ok(HopTarget {
        rsa_id: r.rsa_id,
        ed_id: r.ed_id.map(onion_crypto::Ed25519Identity),
        ntor_key: NtorOnionKey(ntor),
        addrs,
        ntor_v3: false,
    })
}

/// A network whose authorities are all on loopback or private addresses is a testing network,
/// as C tor's `TestingTorNetwork`: all its relays share one /16, and its onion-service time
/// period is 24 voting intervals.
pub fn is_testing_network(auths: &[DirAuthority]) -> bool {
    auths.iter().all(|a| {
        let ip = a.dir_addr.ip();
        ip.is_loopback() || ip.is_private()
    })
}

/// The path-selection rules for a network: the distinct-/16 rule is off on a testing network,
/// as C tor turns it off there.
pub fn path_config(auths: &[DirAuthority]) -> PathConfig {
    PathConfig {
        enforce_distinct_subnets: !is_testing_network(auths),
        ..PathConfig::default()
    }
}

/// Build a 3-hop circuit whose exit allows `host:port`, avoiding relays in `avoid`.
/// Returns the circuit's index and the nicknames of its hops.
pub fn exit_circuit(
    client: &mut Client,
    dir: &Directory,
    config: PathConfig,
    host: &str,
    port: u16,
    avoid: &[RsaIdentity],
    deadline: Instant,
) -> Result<(usize, Vec<String>), String> {
    let target = match host.parse::<IpAddr>() {
        Ok(ip) => ExitTarget::Addr(ip, port),
        Err(_) => ExitTarget::Port(port),
    };
    let exclude = Exclusions::from_ids(&dir.view, avoid.iter());
    let opts = PathOptions {
        exclude: &exclude,
        ..PathOptions::default()
    };
    let selector = PathSelector::with_config(&dir.view, config);
    let (path, guard) = client
        .guards
        .exit_path(&selector, ExitRequest::Target(target), &opts)
        .map_err(|e| format!("no path to {host}:{port}: {e}"))?;
    let hops: Vec<&RelayRecord> = path.records(&dir.view).collect();
    build_guarded(client, &hops, guard, deadline)
}

/// [`build`] a path whose guard the client's guard manager chose, and report the outcome to
/// it (guard-spec §4.7–4.8): built, or failed at the guard (no channel, no CREATED2), or
/// failed further on, which says nothing about the guard. A circuit the manager does not
/// approve yet (through a non-primary guard while a better one may work) is destroyed and
/// reported as an error, so that the caller's next attempt asks the manager again.
pub fn build_guarded(
    client: &mut Client,
    hops: &[&RelayRecord],
    guard: GuardTicket,
    deadline: Instant,
) -> Result<(usize, Vec<String>), String> {
    match build(client, hops, deadline) {
        Ok((circ, names)) => {
            if client.guards.built(&guard) {
                Ok((circ, names))
            } else {
                client.destroy(circ);
                Err(format!(
                    "guard {} is not a primary guard and a better one may work: \
                     circuit given up",
                    names.first().map_or("?", String::as_str)
                ))
            }
        }
        Err(e) => {
            client.guards.failed(&guard, e.starts_with("guard "));
            Err(e)
        }
    }
}

/// Build a circuit through `hops` in order: a channel to the first (which must prove its
/// RSA and ed25519 identities; an open one is shared), CREATE2 with ntor, then EXTEND2 to
/// each next hop: [`start_build`], waited for. A circuit that fails is released. Returns the
/// circuit's index and the hops' nicknames.
pub fn build(
    client: &mut Client,
    hops: &[&RelayRecord],
    deadline: Instant,
) -> Result<(usize, Vec<String>), String> {
    let (circ, names) = start_build(client, hops, deadline)?;
    loop {
        let failed = match client.build_status(circ) {
            BuildStatus::Building => match client.step(deadline) {
                Ok(()) => continue,
                Err(e) => {
                    let hops = client.circs.get(circ).map_or(0, |c| c.circ.n_hops());
                    (hops, format!("building hop {}: {e}", hops + 1))
                }
            },
            BuildStatus::Built => return Ok((circ, names)),
            BuildStatus::Failed { hops, why } => (hops, why),
        };
        client.destroy(circ);
        let (hops, why) = failed;
        return Err(build_error(&names, hops, &why));
    }
}

/// The error of a build through the hops named `names` that failed after `hops` hops were
/// added: the guard's when none was, else the extension to the next hop's.
pub fn build_error(names: &[String], hops: usize, why: &str) -> String {
    let at = names.get(hops).map_or("?", String::as_str);
    if hops == 0 {
        format!("guard {at}: {why}")
    } else {
        format!("extending to {at}: {why}")
    }
}

/// Where the channel of a path goes: the first hop's address and the identities it must
/// prove (`names` are the hops' nicknames, for the error).
pub fn guard_channel(
    hops: &[HopTarget],
    names: &[String],
) -> Result<(SocketAddr, PeerIds), String> {
    let first = hops.first().ok_or("empty path")?;
    let name = names.first().map_or("?", String::as_str);
    let addr = *first
        .addrs
        .first()
        .ok_or_else(|| format!("guard {name} has no address"))?;
    let ids = PeerIds {
        rsa: Some(first.rsa_id),
        ed25519: first.ed_id,
    };
    Ok((addr, ids))
}

/// Start building a circuit through `hops` without waiting for it ([`Client::start_build`]):
/// only the channel to the first hop is waited for, and only when no open channel to it
/// can be shared. Returns the circuit's index and the hops' nicknames; the caller follows
/// the build with [`Client::build_status`].
pub fn start_build(
    client: &mut Client,
    hops: &[&RelayRecord],
    deadline: Instant,
) -> Result<(usize, Vec<String>), String> {
    let names: Vec<String> = hops.iter().map(|r| r.nickname.clone()).collect();
    let targets = hops
        .iter()
        .map(|r| hop_target(r))
        .collect::<Result<Vec<_>, _>>()?;
    let (addr, ids) = guard_channel(&targets, &names)?;
    let link = client
        .connect(addr, ids, deadline)
        .map_err(|e| format!("guard {}: {e}", names[0]))?;
    let circ = client
        .start_build(link, &targets, deadline)
        .map_err(|e| format!("guard {}: {e}", names[0]))?;
    Ok((circ, names))
}

/// How many paths to try before giving up (a relay listed as running may be down).
pub const ATTEMPTS: usize = 3;

/// [`exit_circuit`], retried on a new path up to [`ATTEMPTS`] times. A relay a failed
/// attempt names (the guard that did not answer, the hop that could not be reached) is added
/// to `avoid` and left out of later paths.
pub fn exit_circuit_retrying(
    client: &mut Client,
    dir: &Directory,
    config: &PathConfig,
    host: &str,
    port: u16,
    avoid: &mut Vec<RsaIdentity>,
    deadline: Instant,
) -> Result<(usize, Vec<String>), String> {
    let mut last_err = String::new();
    for attempt in 1..=ATTEMPTS {
        match exit_circuit(client, dir, config.clone(), host, port, avoid, deadline) {
            Ok(c) => {
                let cc = client
                    .circs
                    .get(c.0)
                    .and_then(|x| x.circ.congestion_control(x.circ.n_hops().saturating_sub(1)))
                    .map_or("", |_| " (congestion control)");
                eprintln!("onion: circuit built: {}{cc}", c.1.join(" -> "));
                return Ok(c);
            }
            Err(e) => {
                eprintln!("onion: circuit attempt {attempt} failed: {e}");
                avoid.extend(failed_hop(dir, &e));
                last_err = e;
            }
        }
    }
    Err(format!(
        "no working circuit after {ATTEMPTS} attempts: {last_err}"
    ))
}

/// The relay named in a circuit-building error ("guard X: ...", "extending to X: ...").
fn failed_hop(dir: &Directory, err: &str) -> Option<RsaIdentity> {
    let name = err
        .strip_prefix("guard ")
        .or_else(|| err.strip_prefix("extending to "))?
        .split(':')
        .next()?;
    let idx = dir.view.by_nickname(name)?;
    dir.view.relay(idx).map(|r| r.rsa_id)
}
