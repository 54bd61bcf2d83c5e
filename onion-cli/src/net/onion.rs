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
//!
//! Congestion control (proposal 324), as C tor 0.4.9's client: when the embedder runs it
//! (`onion get/socks --congestion-control` on a consensus that enables it) and the
//! descriptor advertises `flow-control` with FlowCtrl=2, INTRODUCE1 asks for it and the
//! service's virtual hop runs Tor Vegas with the consensus `_onion` parameters and the
//! descriptor's `sendme_inc` (C tor: `hs_circ_setup_congestion_control`, `CC_PATH_ONION`;
//! the exit parameters for a single onion service). The relays of the rendezvous circuit
//! are not asked: C tor runs congestion control end to end with the service only.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use onion_cell::hs::{EstablishRendezvous, Introduce};
use onion_cell::relaymsg::RelayMsg;
use onion_circuit::cc::CcConfig;
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

/// The step at which connecting to an onion service failed, in the classes that C tor's
/// extended SOCKS errors (proposal 304, tor(1) `ExtendedErrors`) tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No responsible HSDir gave a descriptor (not found, or not reachable).
    DescNotFound,
    /// Descriptors arrived, and none parsed and verified.
    DescInvalid,
    /// The descriptor is encrypted to authorized clients and no key was given.
    MissingClientAuth,
    /// The descriptor is encrypted to authorized clients and the key given is not one.
    BadClientAuth,
    /// Every introduction point failed.
    IntroFailed,
    /// Introduction failed because the time ran out.
    IntroTimedOut,
    /// The rendezvous circuit, ESTABLISH_RENDEZVOUS or RENDEZVOUS2 failed.
    RendFailed,
    /// The address's key is unusable.
    BadAddress,
    /// Anything else (the directory has no usable onion-service parameters).
    Other,
}

/// Why [`connect`] failed: the step, and a message for the log.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// The step that failed.
    pub failure: Failure,
    /// What happened.
    pub msg: String,
}

impl ConnectError {
    fn new(failure: Failure, msg: impl Into<String>) -> ConnectError {
        ConnectError {
            failure,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<ConnectError> for String {
    fn from(e: ConnectError) -> String {
        e.msg
    }
}

/// Open a circuit to the onion service `addr`; returns the rendezvous circuit, ready for
/// streams. `client_key` decrypts a descriptor encrypted to authorized clients
/// (rend-spec-v3 §2.5.1.2). Every other circuit it builds (HSDir, introduction) is
/// destroyed before it returns, and so is the rendezvous circuit when it fails. With `cc`,
/// the circuit runs congestion control with a service that advertises it (see the module
/// documentation).
#[allow(clippy::too_many_arguments)]
pub fn connect(
    client: &mut Client,
    dir: &Directory,
    config: &PathConfig,
    testing: bool,
    addr: OnionAddress,
    client_key: Option<&onion_hs::x25519_dalek::StaticSecret>,
    cc: Option<&OnionCc>,
    deadline: Instant,
) -> Result<usize, ConnectError> {
    let hp = HsParams::of(dir, testing).map_err(|e| ConnectError::new(Failure::Other, e))?;
    let sel = hp.shared_random.client_fetch(&hp.periods, hp.valid_after);
    let relays = hsdir_ring(dir);
    let ring: Vec<HsDirRelay> = relays.iter().map(|(_, r)| *r).collect();

    let mut hs = HsClient::new(addr)
        .map_err(|e| ConnectError::new(Failure::BadAddress, format!("onion address: {e}")))?;
    let blinded = onion_crypto::Ed25519Identity(*hs.blinded_key(sel.period).as_bytes());
    let url = format!("/tor/hs/3/{}", blinded.to_base64());
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    // 1. The descriptor.
    let mut errors = Vec::new();
    let mut failure = Failure::DescNotFound;
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
                failure = match e {
                    ClientError::Desc(DescError::ClientAuthRequired) => Failure::MissingClientAuth,
                    _ => Failure::BadClientAuth,
                };
                errors.push(format!("{name}: {e}"));
                break;
            }
            Err(e) => {
                eprintln!("onion: HSDir {name}: {e}");
                errors.push(format!("{name}: {e}"));
                failure = Failure::DescInvalid;
            }
        }
    }
    if hs.descriptor().is_none() {
        return Err(ConnectError::new(
            failure,
            format!("no onion-service descriptor ({})", errors.join("; ")),
        ));
    }

    // 2. The rendezvous point.
    let (rend, names, rp) = circuit_to(client, dir, config, None, deadline)
        .map_err(|e| ConnectError::new(Failure::RendFailed, format!("rendezvous circuit: {e}")))?;
    eprintln!("onion: rendezvous circuit built: {}", names.join(" -> "));
    let r = rendezvous(client, dir, config, &mut hs, cc, rend, rp, deadline);
    if r.is_err() {
        client.destroy(rend);
    }
    r.map(|()| rend)
}

/// Congestion control for rendezvous circuits, from the consensus (proposal 324 §6.5): the
/// Vegas parameters for onion-service paths (`cc_vegas_*_onion`) and for single onion
/// services (the exit ones), and the consensus `cc_sendme_inc` that bounds the descriptor's.
#[derive(Debug, Clone)]
pub struct OnionCc {
    /// Parameters for a rendezvous circuit to an ordinary onion service.
    pub onion: CcConfig,
    /// Parameters for one to a single onion service (C tor: `CC_PATH_ONION_SOS`).
    pub single_onion: CcConfig,
}

impl OnionCc {
    /// The configuration of the virtual hop to a service whose descriptor advertises
    /// `sendme_inc`, or `None` when C tor would reject that value: 0, or more than one away
    /// from the consensus `cc_sendme_inc` (`congestion_control_validate_sendme_increment`,
    /// which C tor applies to a descriptor's `flow-control` line as to an exit's answer;
    /// narrowed from half-to-twice to plus or minus one in 0.4.8.2-alpha).
    pub fn for_descriptor(&self, sendme_inc: u8, single_onion: bool) -> Option<CcConfig> {
        if !self.onion.sendme_inc_acceptable(sendme_inc) {
            return None;
        }
        let base = match single_onion {
            true => self.single_onion,
            false => self.onion,
        };
        Some(CcConfig { sendme_inc, ..base })
    }
}

/// Steps 2 to 4 on the rendezvous circuit `rend` to `rp`: ESTABLISH_RENDEZVOUS, INTRODUCE1
/// through the introduction points in order, RENDEZVOUS2 and the service's virtual hop.
#[allow(clippy::too_many_arguments)]
fn rendezvous(
    client: &mut Client,
    dir: &Directory,
    config: &PathConfig,
    hs: &mut HsClient,
    cc: Option<&OnionCc>,
    rend: usize,
    rp: &onion_dir::netview::RelayRecord,
    deadline: Instant,
) -> Result<(), ConnectError> {
    let rend_err = |e: String| ConnectError::new(Failure::RendFailed, e);
    let est = hs
        .establish_rendezvous(&mut OsRng)
        .map_err(|e| rend_err(e.to_string()))?;
    let est = EstablishRendezvous::decode(&est)
        .map_err(|e| rend_err(format!("ESTABLISH_RENDEZVOUS: {e}")))?;
    send_to_last(client, rend, &RelayMsg::EstablishRendezvous(est)).map_err(rend_err)?;
    client
        .wait_msg(
            rend,
            |m| matches!(m, RelayMsg::RendezvousEstablished),
            deadline,
        )
        .map_err(rend_err)?;
    hs.handle_rendezvous_established()
        .map_err(|e| rend_err(e.to_string()))?;

    // 3. Introduction, trying the introduction points in order; asking for congestion
    // control when both ends run it.
    let vhop_cc = match (cc, hs.descriptor()) {
        (Some(cc), Some(d)) => hs.descriptor_sendme_inc().and_then(|inc| {
            let single = d.second_layer.single_onion_service;
            let c = cc.for_descriptor(inc, single);
            if c.is_none() {
                eprintln!("onion: the descriptor's flow-control sendme_inc {inc} is invalid");
            }
            c
        }),
        _ => None,
    };
    hs.set_congestion_control(vhop_cc.is_some());
    let rp_key = rp
        .ntor_onion_key
        .ok_or_else(|| rend_err("rendezvous point has no ntor key".into()))?;
    let rp_specs = link_specs(rp);
    let mut tried = Vec::new();
    loop {
        let (ip, body) = match hs.introduce(&mut OsRng, &rp_key, rp_specs.clone()) {
            Ok(next) => next,
            Err(e) => {
                // No introduction point left. C tor reports "timed out" only when the
                // time ran out (proposal 304, 0xF7).
                let failure = match client.clock.now() >= deadline {
                    true => Failure::IntroTimedOut,
                    false => Failure::IntroFailed,
                };
                return Err(ConnectError::new(
                    failure,
                    format!("introduction: {e} ({})", tried.join("; ")),
                ));
            }
        };
        let ip_id = ip
            .link_specifiers
            .iter()
            .find(|l| l.ty == onion_hs::linkspec::LS_RSA_ID)
            .and_then(|l| <[u8; 20]>::try_from(l.body.as_slice()).ok())
            .ok_or_else(|| {
                ConnectError::new(
                    Failure::IntroFailed,
                    "introduction point without an RSA identity",
                )
            })?;
        let r = introduce(client, dir, config, RsaIdentity(ip_id), &body, deadline);
        match r.and_then(|ack| hs.handle_introduce_ack(&ack).map_err(|e| e.to_string())) {
            Ok(()) => break,
            Err(e) => {
                eprintln!("onion: introduction point {}: {e}", RsaIdentity(ip_id));
                tried.push(format!("{}: {e}", RsaIdentity(ip_id)));
            }
        }
    }
    eprintln!("onion: introduced; waiting for the service at the rendezvous point");

    // 4. The service joins.
    let msg = client
        .wait_msg(rend, |m| matches!(m, RelayMsg::Rendezvous2(_)), deadline)
        .map_err(rend_err)?;
    let RelayMsg::Rendezvous2(r2) = msg else {
        return Err(rend_err("expected RENDEZVOUS2".into()));
    };
    let keys = hs
        .handle_rendezvous2(&r2.handshake_info)
        .map_err(|e| rend_err(format!("RENDEZVOUS2: {e}")))?;
    let layer = keys
        .client_layer()
        .map_err(|e| rend_err(format!("hs layer: {e}")))?;
    let circ = &mut client.circs[rend].circ;
    let added = match vhop_cc.filter(|_| hs.congestion_control_requested()) {
        Some(c) => circ.add_virtual_hop_cc(Box::new(layer), c),
        None => circ.add_virtual_hop(Box::new(layer)),
    };
    added.map_err(|e| rend_err(format!("virtual hop: {e}")))?;
    let last = circ.n_hops().saturating_sub(1);
    match circ.congestion_control(last) {
        Some(c) => eprintln!(
            "onion: rendezvous complete (congestion control, sendme_inc {})",
            c.config().sendme_inc
        ),
        None => eprintln!("onion: rendezvous complete"),
    }
    Ok(())
}

/// The descriptor at `url` from HSDir `hsdir`, over a 3-hop circuit and BEGIN_DIR (the
/// circuit is destroyed by [`dir_exchange`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The virtual hop runs the `_onion` parameters (the exit ones for a single onion
    /// service) with the descriptor's `sendme_inc`, accepted within one of the consensus
    /// value as C tor's `congestion_control_validate_sendme_increment`.
    #[test]
    fn virtual_hop_config_from_descriptor() {
        let onion = CcConfig {
            sendme_inc: 31,
            alpha: 1,
            ..CcConfig::default()
        };
        let single_onion = CcConfig {
            sendme_inc: 31,
            alpha: 2,
            ..CcConfig::default()
        };
        let cc = OnionCc {
            onion,
            single_onion,
        };
        let c = cc.for_descriptor(32, false).unwrap();
        assert_eq!((c.sendme_inc, c.alpha), (32, 1));
        let c = cc.for_descriptor(30, true).unwrap();
        assert_eq!((c.sendme_inc, c.alpha), (30, 2));
        for (inc, ok) in [
            (0, false),
            (15, false),
            (29, false),
            (30, true),
            (31, true),
            (32, true),
            (33, false),
            (62, false),
        ] {
            assert_eq!(cc.for_descriptor(inc, false).is_some(), ok, "{inc}");
        }
    }
}
