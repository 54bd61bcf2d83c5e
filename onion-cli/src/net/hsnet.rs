//! What the onion service host ([`super::service`]) takes from the directory and the
//! network: the onion-service parameters of the consensus, circuits to a chosen relay, and
//! onion-service messages to a circuit's last hop. (The client side runs on
//! [`onion_client::Client`].)

use onion_cell::relaymsg::RelayMsg;
use onion_circuit::circuit::HopTarget;
use onion_circuit::Instant;
use onion_dir::netview::{RelayIdx, RelayRecord};
use onion_dir::select::path::{PathConfig, PathOptions, PathSelector};
use onion_dir::select::vanguards::VanguardShape;
use onion_dir::RelayFlags;
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::TimePeriodConfig;

use super::bootstrap::Directory;
use super::client::{BuildStatus, Client, LinkStatus, LinkTicket, Purpose};
use super::guards::GuardTicket;
use super::path;

/// The onion-service parameters of a (verified) consensus.
pub struct HsParams {
    /// `valid-after`, Unix seconds.
    pub valid_after: u64,
    /// Time periods (rend-spec-v3 §2.2.1): from `hsdir_interval`, or 24 voting intervals on
    /// a testing network, as C tor's `TestingTorNetwork`.
    pub periods: TimePeriodConfig,
    /// `shared-rand-current-value` / `shared-rand-previous-value`.
    pub shared_random: SharedRandom,
    /// `hsdir_n_replicas`, `hsdir_spread_fetch`, `hsdir_spread_store`.
    pub params: HsDirParams,
}

impl HsParams {
    /// Read them from `dir`'s consensus (verified by bootstrap).
    pub fn of(dir: &Directory, testing: bool) -> Result<HsParams, String> {
        let valid_after = dir.valid_after.0;
        let interval = u32::try_from(dir.voting_interval()).unwrap_or(3600);
        let periods = if testing {
            TimePeriodConfig::testing_network(interval)
        } else {
            let p = dir.param("hsdir_interval").map(i64::from);
            TimePeriodConfig::from_consensus(p, interval)
        }
        .map_err(|e| format!("time period: {e}"))?;
        Ok(HsParams {
            valid_after,
            periods,
            shared_random: SharedRandom {
                current: dir.shared_rand_current,
                previous: dir.shared_rand_previous,
            },
            params: HsDirParams::from_consensus(|k| dir.param(k).map(i64::from)),
        })
    }
}

/// Every relay with an ed25519 identity, with its HSDir flag, for the hash ring
/// (rend-spec-v3 §2.2.3), and where it is in the directory.
pub fn hsdir_ring(dir: &Directory) -> Vec<(RelayIdx, HsDirRelay)> {
    dir.view
        .relays()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            Some((
                RelayIdx(u32::try_from(i).ok()?),
                HsDirRelay {
                    ed25519_id: r.ed_id?,
                    rsa_id: r.rsa_id.0,
                    is_hsdir: r.flags.contains(RelayFlags::HSDIR),
                },
            ))
        })
        .collect()
}

/// An onion-service circuit being built without blocking the loop ([`start_circuit_to`]).
pub struct PendingCirc {
    stage: Stage,
    names: Vec<String>,
    guard: GuardTicket,
}

enum Stage {
    /// The channel to the guard is being opened.
    Link {
        ticket: LinkTicket,
        hops: Vec<HopTarget>,
        deadline: Instant,
    },
    /// The circuit is being built.
    Circ(usize),
    /// Reported (built or failed).
    Done,
}

/// An onion-service circuit to relay `last` (vanguards-lite, proposal 333 §1: `G -> L2 ->
/// M -> last`, 4 hops, through the client's guard and one of its layer-2 vanguards, since
/// the target was chosen by someone else or is published) without waiting: the path is
/// chosen, the channel to the guard opened (an open one is shared) and the circuit built, all
/// driven by the client's loop; [`poll_circuit`] tells when it is done.
pub fn start_circuit_to(
    client: &mut Client,
    dir: &Directory,
    config: &PathConfig,
    last: RelayIdx,
    deadline: Instant,
) -> Result<PendingCirc, String> {
    let opts = PathOptions {
        need_stable: true,
        ..PathOptions::default()
    };
    let sel = PathSelector::with_config(&dir.view, config.clone());
    let (p, guard) = client
        .guards
        .vanguard_path(&sel, VanguardShape::Long, Some(last), &opts)
        .map_err(|e| format!("path: {e}"))?;
    let records: Vec<&RelayRecord> = p.records(&dir.view).collect();
    let names: Vec<String> = records.iter().map(|r| r.nickname.clone()).collect();
    let started = (|| {
        let hops = records
            .iter()
            .map(|r| path::hop_target(r))
            .collect::<Result<Vec<_>, _>>()?;
        let (addr, ids) = path::guard_channel(&hops, &names)?;
        let ticket = client
            .start_connect(addr, ids, deadline)
            .map_err(|e| format!("guard {}: {e}", names[0]))?;
        Ok::<_, String>(Stage::Link {
            ticket,
            hops,
            deadline,
        })
    })();
    match started {
        Ok(stage) => Ok(PendingCirc {
            stage,
            names,
            guard,
        }),
        Err(e) => {
            client.guards.failed(&guard, e.starts_with("guard "));
            Err(e)
        }
    }
}

/// Where a [`PendingCirc`] stands: `None` while it is being built; once built, its
/// circuit; once failed, why (the circuit released). The outcome is reported to the guard
/// manager as [`path::build_guarded`] does (a failure at the first hop is the guard's).
pub fn poll_circuit(client: &mut Client, p: &mut PendingCirc) -> Option<Result<usize, String>> {
    let guard_name = p.names.first().map_or("?", String::as_str);
    if let Stage::Link {
        ticket,
        hops,
        deadline,
    } = &p.stage
    {
        let started = match client.link_status(*ticket) {
            LinkStatus::Pending => return None,
            LinkStatus::Failed(e) => Err(format!("guard {guard_name}: {e}")),
            LinkStatus::Ready(link) => client
                .start_build(link, hops, *deadline)
                .map_err(|e| format!("guard {guard_name}: {e}")),
        };
        match started {
            Ok(c) => p.stage = Stage::Circ(c),
            Err(e) => {
                p.stage = Stage::Done;
                client.guards.failed(&p.guard, true);
                return Some(Err(e));
            }
        }
    }
    let Stage::Circ(c) = p.stage else {
        return Some(Err("circuit already reported".into()));
    };
    let r = match client.build_status(c) {
        BuildStatus::Building => return None,
        BuildStatus::Built => {
            if client.guards.built(&p.guard) {
                Ok(c)
            } else {
                Err(format!(
                    "guard {guard_name} is not a primary guard and a better one may work: \
                     circuit given up"
                ))
            }
        }
        BuildStatus::Failed { hops, why } => {
            client.guards.failed(&p.guard, hops == 0);
            Err(path::build_error(&p.names, hops, &why))
        }
    };
    p.stage = Stage::Done;
    if r.is_err() {
        client.destroy(c);
    }
    Some(r)
}

/// Give up a [`PendingCirc`] that was not reported yet: its channel or circuit is released.
pub fn abandon(client: &mut Client, p: PendingCirc) {
    match p.stage {
        Stage::Link { ticket, .. } => client.cancel_connect(ticket),
        Stage::Circ(c) => client.destroy(c),
        Stage::Done => {}
    }
}

/// Send `msg` to the last hop of circuit `c` (an onion-service message to an HSDir,
/// introduction or rendezvous point). The message that opens an onion-service exchange
/// gives the circuit its purpose, and so the answers it may receive ([`Purpose`]).
pub fn send_to_last(client: &mut Client, c: usize, msg: &RelayMsg<'_>) -> Result<(), String> {
    if let Some(p) = purpose_of(msg) {
        client.set_purpose(c, p);
    }
    let circ = &mut client.circs[c].circ;
    let last = circ.n_hops().checked_sub(1).ok_or("circuit has no hops")?;
    circ.send_msg(last, 0, msg)
        .map_err(|e| format!("send: {e}"))?;
    client.flush()
}

/// The purpose a circuit takes on by sending `msg` (rend-spec-v3 §3.1.1, §3.2.1, §3.3,
/// §4.1), if it opens an onion-service exchange.
pub fn purpose_of(msg: &RelayMsg<'_>) -> Option<Purpose> {
    match msg {
        RelayMsg::EstablishIntro(_) => Some(Purpose::ServiceIntro),
        RelayMsg::EstablishRendezvous(_) => Some(Purpose::ClientRend),
        RelayMsg::Introduce1(_) => Some(Purpose::ClientIntro),
        RelayMsg::Rendezvous1(_) => Some(Purpose::ServiceRend),
        _ => None,
    }
}

/// The link specifiers that name relay `r` in onion-service messages and descriptors
/// (rend-spec-v3 §2.5.2.2, §3.3): its IPv4 ORPort, RSA and ed25519 identities.
pub fn link_specs(r: &RelayRecord) -> Vec<onion_hs::linkspec::LinkSpec> {
    use onion_hs::linkspec::LinkSpec;
    let mut v = Vec::new();
    if let Some(a) = r.ipv4 {
        v.push(LinkSpec::ipv4(a));
    }
    v.push(LinkSpec::rsa_id(r.rsa_id.0));
    if let Some(ed) = r.ed_id {
        v.push(LinkSpec::ed25519_id(ed));
    }
    v
}
