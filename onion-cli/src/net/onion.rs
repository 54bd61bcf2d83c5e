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
use onion_dir::netview::RelayIdx;
use onion_dir::path::PathConfig;
use onion_dir::RsaIdentity;
use onion_hs::client::{ClientError, HsClient};
use onion_hs::desc::DescError;
use onion_hs::ring::HsDirRelay;
use onion_hs::OnionAddress;
use rand_core::OsRng;

use super::bootstrap::Directory;
use super::client::Client;
use super::hsnet::{circuit_to, dir_exchange, hsdir_ring, link_specs, send_to_last, HsParams};
use super::http;

/// Largest onion-service descriptor accepted (rend-spec-v3: 50 000 bytes).
const MAX_DESC: usize = 64 * 1024;

/// Open a circuit to the onion service `addr`; returns the rendezvous circuit, ready for
/// streams. `client_key` decrypts a descriptor encrypted to authorized clients
/// (rend-spec-v3 §2.5.1.2).
pub fn connect(
    client: &mut Client,
    dir: &Directory,
    config: &PathConfig,
    testing: bool,
    addr: OnionAddress,
    client_key: Option<&onion_hs::x25519_dalek::StaticSecret>,
    deadline: Instant,
) -> Result<usize, String> {
    let hp = HsParams::of(dir, testing)?;
    let sel = hp.shared_random.client_fetch(&hp.periods, hp.valid_after);
    let relays = hsdir_ring(dir);
    let ring: Vec<HsDirRelay> = relays.iter().map(|(_, r)| *r).collect();

    let mut hs = HsClient::new(addr).map_err(|e| format!("onion address: {e}"))?;
    let blinded = onion_crypto::Ed25519Identity(*hs.blinded_key(sel.period).as_bytes());
    let url = format!("/tor/hs/3/{}", blinded.to_base64());
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    // 1. The descriptor.
    let mut errors = Vec::new();
    for pos in hs.hsdirs_to_fetch(&ring, &sel, &hp.params) {
        let Some(&(idx, _)) = relays.get(pos) else {
            continue;
        };
        let name = dir
            .view
            .relay(idx)
            .map(|r| r.nickname.clone())
            .unwrap_or_default();
        let text = match fetch_desc(client, dir, config, idx, &url, deadline) {
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
    let (rend, names, rp) = circuit_to(client, dir, config, None, deadline)
        .map_err(|e| format!("rendezvous circuit: {e}"))?;
    eprintln!("onion: rendezvous circuit built: {}", names.join(" -> "));
    let est = hs
        .establish_rendezvous(&mut OsRng)
        .map_err(|e| e.to_string())?;
    let est =
        EstablishRendezvous::decode(&est).map_err(|e| format!("ESTABLISH_RENDEZVOUS: {e}"))?;
    send_to_last(client, rend, &RelayMsg::EstablishRendezvous(est))?;
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
    let rp_specs = link_specs(rp);
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
        let r = introduce(client, dir, config, RsaIdentity(ip_id), &body, deadline);
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

/// The descriptor at `url` from HSDir `hsdir`, over a 3-hop circuit and BEGIN_DIR.
fn fetch_desc(
    client: &mut Client,
    dir: &Directory,
    config: &PathConfig,
    hsdir: RelayIdx,
    url: &str,
    deadline: Instant,
) -> Result<String, String> {
    let (c, _, _) = circuit_to(client, dir, config, Some(hsdir), deadline)?;
    let body = dir_exchange(
        client,
        c,
        &http::get_request("127.0.0.1", url),
        MAX_DESC,
        deadline,
    )?;
    String::from_utf8(body).map_err(|_| "descriptor is not UTF-8".to_string())
}

fn introduce(
    client: &mut Client,
    dir: &Directory,
    config: &PathConfig,
    ip: RsaIdentity,
    body: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let idx = dir
        .view
        .by_rsa_id(&ip)
        .ok_or("introduction point not in the consensus")?;
    let (c, names, _) = circuit_to(client, dir, config, Some(idx), deadline)?;
    eprintln!("onion: introduction circuit built: {}", names.join(" -> "));
    let r = (|| {
        let intro = Introduce::decode(body).map_err(|e| format!("INTRODUCE1: {e}"))?;
        send_to_last(client, c, &RelayMsg::Introduce1(intro))?;
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
