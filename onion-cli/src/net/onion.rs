//! Connecting to a v3 onion service (rend-spec-v3 §2.2.4.1, §3.2, §4), driving
//! `onion_hs::client::HsClient` over circuits built by [`super::path::build`].
//!
//! 1. The time period and shared random value select the hash ring (a testing network's
//!    period is 24 voting intervals, as C tor's `TestingTorNetwork`); the descriptor is
//!    fetched over BEGIN_DIR from the responsible HSDirs, in order, until one has it.
//! 2. A rendezvous circuit (3 hops, the last is the rendezvous point) gets
//!    ESTABLISH_RENDEZVOUS.
//! 3. An introduction circuit to an introduction point carries INTRODUCE1; INTRODUCE_ACK
//!    must report success.
//! 4. RENDEZVOUS2 on the rendezvous circuit completes hs-ntor: the service's hop is added as
//!    a virtual hop, and streams (BEGIN with an empty host) go to the service.

use std::time::{SystemTime, UNIX_EPOCH};

use onion_cell::hs::{EstablishRendezvous, Introduce};
use onion_cell::relaymsg::RelayMsg;
use onion_circuit::Instant;
use onion_dir::consensus;
use onion_dir::netview::RelayIdx;
use onion_dir::path::{PathOptions, PathSelector};
use onion_dir::{RelayFlags, RsaIdentity};
use onion_hs::client::{ClientError, HsClient};
use onion_hs::desc::DescError;
use onion_hs::linkspec::LinkSpec;
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::time::TimePeriodConfig;
use onion_hs::OnionAddress;
use rand_core::OsRng;

use super::bootstrap::Directory;
use super::client::{Client, Target};
use super::http;
use super::path;

/// Largest onion-service descriptor accepted (rend-spec-v3: 50 000 bytes).
const MAX_DESC: usize = 64 * 1024;

/// Open a circuit to the onion service `addr`; returns the rendezvous circuit, ready for
/// streams. `client_key` decrypts a descriptor encrypted to authorized clients
/// (rend-spec-v3 §2.5.1.2).
pub fn connect(
    client: &mut Client,
    dir: &Directory,
    config: &onion_dir::path::PathConfig,
    testing: bool,
    addr: OnionAddress,
    client_key: Option<&onion_hs::x25519_dalek::StaticSecret>,
    deadline: Instant,
) -> Result<usize, String> {
    let cons = consensus::parse(&dir.consensus)
        .map_err(|e| format!("consensus: {e}"))?
        .assume_verified(); // verified by bootstrap
    let va = cons.valid_after.0;
    let interval = u32::try_from(cons.fresh_until.0.saturating_sub(va)).unwrap_or(3600);
    let cfg = if testing {
        TimePeriodConfig::testing_network(interval)
    } else {
        TimePeriodConfig::from_consensus(cons.params.get("hsdir_interval").map(i64::from), interval)
    }
    .map_err(|e| format!("time period: {e}"))?;
    let srv = SharedRandom {
        current: cons.shared_rand_current.as_ref().map(|s| s.value),
        previous: cons.shared_rand_previous.as_ref().map(|s| s.value),
    };
    let sel = srv.client_fetch(&cfg, va);
    let params = HsDirParams::from_consensus(|k| cons.params.get(k).map(i64::from));
    let relays: Vec<(RelayIdx, HsDirRelay)> = dir
        .view
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
        .collect();
    let ring: Vec<HsDirRelay> = relays.iter().map(|(_, r)| *r).collect();

    let mut hs = HsClient::new(addr).map_err(|e| format!("onion address: {e}"))?;
    let blinded = onion_crypto::Ed25519Identity(*hs.blinded_key(sel.period).as_bytes());
    let url = format!("/tor/hs/3/{}", blinded.to_base64());
    let selector = PathSelector::with_config(&dir.view, config.clone());
    let opts = PathOptions {
        need_stable: true,
        ..PathOptions::default()
    };
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    // 1. The descriptor.
    let mut errors = Vec::new();
    for pos in hs.hsdirs_to_fetch(&ring, &sel, &params) {
        let Some(&(idx, _)) = relays.get(pos) else {
            continue;
        };
        let name = dir
            .view
            .relay(idx)
            .map(|r| r.nickname.clone())
            .unwrap_or_default();
        let text = match fetch_desc(client, dir, &selector, &opts, idx, &url, deadline) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("onion: HSDir {name}: {e}");
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        match hs.handle_descriptor(&text, sel.period, client_key, now_unix) {
            Ok(()) => {
                eprintln!("onion: onion-service descriptor from HSDir {name}");
                break;
            }
            // Every HSDir holds the same descriptor: a key that cannot open it here cannot
            // open it anywhere (rend-spec-v3 §2.5.1.2), so stop asking.
            Err(
                e @ ClientError::Desc(
                    DescError::ClientAuthRequired | DescError::ClientNotAuthorized,
                ),
            ) => {
                errors.push(format!("{name}: {e}"));
                break;
            }
            Err(e) => {
                eprintln!("onion: HSDir {name}: {e}");
                errors.push(format!("{name}: {e}"));
            }
        }
    }
    if hs.descriptor().is_none() {
        return Err(format!(
            "no onion-service descriptor ({})",
            errors.join("; ")
        ));
    }

    // 2. The rendezvous point.
    let rp_path = selector
        .internal_path(3, None, None, &opts, &mut OsRng)
        .map_err(|e| format!("rendezvous path: {e}"))?;
    let rp_hops: Vec<_> = rp_path.records(&dir.view).collect();
    let rp = *rp_hops.last().ok_or("empty rendezvous path")?;
    let (rend, names) = path::build(client, &rp_hops, deadline)?;
    eprintln!("onion: rendezvous circuit built: {}", names.join(" -> "));
    let est = hs
        .establish_rendezvous(&mut OsRng)
        .map_err(|e| e.to_string())?;
    let est =
        EstablishRendezvous::decode(&est).map_err(|e| format!("ESTABLISH_RENDEZVOUS: {e}"))?;
    send(client, rend, &RelayMsg::EstablishRendezvous(est))?;
    client.wait_msg(
        rend,
        |m| matches!(m, RelayMsg::RendezvousEstablished),
        deadline,
    )?;
    hs.handle_rendezvous_established()
        .map_err(|e| e.to_string())?;

    // 3. Introduction, trying the introduction points in order.
    let rp_key = rp
        .ntor_onion_key
        .ok_or("rendezvous point has no ntor key")?;
    let mut rp_specs = Vec::new();
    if let Some(a) = rp.ipv4 {
        rp_specs.push(LinkSpec::ipv4(a));
    }
    rp_specs.push(LinkSpec::rsa_id(rp.rsa_id.0));
    if let Some(ed) = rp.ed_id {
        rp_specs.push(LinkSpec::ed25519_id(ed));
    }
    loop {
        let (ip, body) = hs
            .introduce(&mut OsRng, &rp_key, rp_specs.clone())
            .map_err(|e| format!("introduction: {e}"))?;
        let ip_id = ip
            .link_specifiers
            .iter()
            .find(|l| l.ty == onion_hs::linkspec::LS_RSA_ID)
            .and_then(|l| <[u8; 20]>::try_from(l.body.as_slice()).ok())
            .ok_or("introduction point without an RSA identity")?;
        let r = introduce(
            client,
            dir,
            &selector,
            &opts,
            RsaIdentity(ip_id),
            &body,
            deadline,
        );
        match r.and_then(|ack| hs.handle_introduce_ack(&ack).map_err(|e| e.to_string())) {
            Ok(()) => break,
            Err(e) => eprintln!("onion: introduction point {}: {e}", RsaIdentity(ip_id)),
        }
    }
    eprintln!("onion: introduced; waiting for the service at the rendezvous point");

    // 4. The service joins.
    let msg = client.wait_msg(rend, |m| matches!(m, RelayMsg::Rendezvous2(_)), deadline)?;
    let RelayMsg::Rendezvous2(r2) = msg else {
        return Err("expected RENDEZVOUS2".into());
    };
    let keys = hs
        .handle_rendezvous2(&r2.handshake_info)
        .map_err(|e| format!("RENDEZVOUS2: {e}"))?;
    let layer = keys.client_layer().map_err(|e| format!("hs layer: {e}"))?;
    client.circs[rend]
        .circ
        .add_virtual_hop(Box::new(layer))
        .map_err(|e| format!("virtual hop: {e}"))?;
    eprintln!("onion: rendezvous complete");
    Ok(rend)
}

fn send(client: &mut Client, c: usize, msg: &RelayMsg<'_>) -> Result<(), String> {
    let circ = &mut client.circs[c].circ;
    let last = circ.n_hops().checked_sub(1).ok_or("circuit has no hops")?;
    circ.send_msg(last, 0, msg)
        .map_err(|e| format!("send: {e}"))?;
    client.flush()
}

fn fetch_desc(
    client: &mut Client,
    dir: &Directory,
    selector: &PathSelector<'_>,
    opts: &PathOptions<'_>,
    hsdir: RelayIdx,
    url: &str,
    deadline: Instant,
) -> Result<String, String> {
    let p = selector
        .internal_path(3, Some(hsdir), None, opts, &mut OsRng)
        .map_err(|e| format!("path: {e}"))?;
    let hops: Vec<_> = p.records(&dir.view).collect();
    let (c, _) = path::build(client, &hops, deadline)?;
    let r = (|| {
        let s = client.begin(c, Target::Dir, deadline)?;
        let raw = client.fetch(
            c,
            s,
            &http::get_request("127.0.0.1", url),
            MAX_DESC,
            deadline,
            |_| {},
        )?;
        let resp = http::parse_response(&raw, true).map_err(|e| e.to_string())?;
        if resp.status != 200 {
            return Err(format!("HTTP {} {}", resp.status, resp.reason));
        }
        String::from_utf8(resp.body).map_err(|_| "descriptor is not UTF-8".to_string())
    })();
    client.destroy(c);
    r
}

fn introduce(
    client: &mut Client,
    dir: &Directory,
    selector: &PathSelector<'_>,
    opts: &PathOptions<'_>,
    ip: RsaIdentity,
    body: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let idx = dir
        .view
        .by_rsa_id(&ip)
        .ok_or("introduction point not in the consensus")?;
    let p = selector
        .internal_path(3, Some(idx), None, opts, &mut OsRng)
        .map_err(|e| format!("path: {e}"))?;
    let hops: Vec<_> = p.records(&dir.view).collect();
    let (c, names) = path::build(client, &hops, deadline)?;
    eprintln!("onion: introduction circuit built: {}", names.join(" -> "));
    let r = (|| {
        let intro = Introduce::decode(body).map_err(|e| format!("INTRODUCE1: {e}"))?;
        send(client, c, &RelayMsg::Introduce1(intro))?;
        let ack = client.wait_msg(c, |m| matches!(m, RelayMsg::IntroduceAck(_)), deadline)?;
        let RelayMsg::IntroduceAck(ack) = ack else {
            return Err("expected INTRODUCE_ACK".into());
        };
        let mut out = Vec::new();
        ack.encode(&mut out)
            .map_err(|e| format!("INTRODUCE_ACK: {e}"))?;
        Ok(out)
    })();
    client.destroy(c);
    r
}
