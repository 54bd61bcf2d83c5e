//! An onion service in the in-memory Tor network (rend-spec-v3 §2–§4 end to end), over real
//! channels.
//!
//! The network is the circuit simulator's ([`crate::circuit::net::Net`]): relays with real link
//! keys and certificates accept channels (VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO, cells as
//! bytes on in-memory links with latency and bandwidth), run real relay circuits
//! ([`RelayCircuit`](onion_circuit::relay::RelayCircuit): ntor-v3, tor1 layers, SENDMEs) and
//! extend over channels of their own; the client and the service are parties of that network,
//! with their own channels and client circuits. Virtual time, one seeded RNG. On top of that
//! each relay gets the onion-service edge handlers of this module:
//!
//! * relays 4.. are HSDirs ([`hsdir::HsDir`] behind the circuit simulator's BEGIN_DIR handler:
//!   `POST /tor/hs/3/publish`, `GET /tor/hs/3/<blinded key>`);
//! * every relay can be an introduction point and a rendezvous point ([`roles::HsRoles`]:
//!   ESTABLISH_INTRO checked against the circuit's `KH`, INTRODUCE1 → INTRODUCE2, the two
//!   rendezvous circuits joined with [`RelayCircuit::splice`](onion_circuit::relay::RelayCircuit::splice)).
//!
//! [`run`] plays the whole story:
//!
//! 1. the service builds a 3-hop circuit to each of its introduction points and sends
//!    ESTABLISH_INTRO there (§3.1);
//! 2. it builds its descriptors for the two upload slots and POSTs them to the responsible
//!    HSDirs of the hash ring, each over a 3-hop circuit and a BEGIN_DIR stream (§2.2.4.2);
//! 3. the client computes the responsible HSDirs, fetches the descriptor over a 3-hop circuit
//!    and decrypts it (§2.2.4.1);
//! 4. it picks a rendezvous point, builds a circuit there and sends ESTABLISH_RENDEZVOUS
//!    (§3.2), then INTRODUCE1 over a circuit to an introduction point, which forwards it to
//!    the service as INTRODUCE2 and acknowledges it (§3.2, §3.3);
//! 5. the service completes hs-ntor, builds a circuit to the rendezvous point and sends
//!    RENDEZVOUS1; the rendezvous point joins the circuits and sends RENDEZVOUS2 to the client
//!    (§4.1, §4.2); both ends add the virtual hop (AES-256 / SHA3-256 tor1 layer);
//! 6. the client opens a stream over the joined circuit and fetches a page with HTTP/1.0; the
//!    service answers from a small web server; SENDMEs flow end to end through the splice.
//!
//! Each party reuses its channel to its guard for all its circuits (tor-spec §5.3.1), and
//! each middle its channels to the third hops. The [`HsReport`] records what each side built
//! and what the protocol told it, and each relay's channel peers, so that tests can check
//! that neither learns the other's relays beyond the introduction points (which the
//! descriptor names) and the rendezvous point (which INTRODUCE2 names), and that the
//! introduction and rendezvous points never touch either party.

pub mod hsdir;
pub mod roles;
mod world;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use onion_cell::relaymsg::BeginFlags;
use onion_cell::RelayCmd;
use onion_circuit::flow::FlowStats;
use onion_hs::client::HsClient;
use onion_hs::desc::ClientAuthConfig;
use onion_hs::keys::ExpandedKeypair;
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::service::{HsService, HsServiceConfig, UPLOAD_PATH};
use onion_hs::time::TimePeriodConfig;
use rand_chacha::rand_core::RngCore;
use sha2::Digest as _;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use self::world::World;
use crate::circuit::web::expected_body;
use crate::circuit::StoryLine;

pub use self::world::{CLIENT_ADDR, SERVICE_ADDR};

/// The consensus `valid-after` the run pretends to be in (2026-11-23 07:20:00 UTC).
pub const VALID_AFTER: u64 = 1_795_418_400;
/// One-way delay of every channel link.
pub const LATENCY: Duration = Duration::from_millis(10);
/// Bytes per second each link direction carries (100 Mbit/s).
pub const BANDWIDTH: u64 = 12_500_000;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct HsSimConfig {
    /// Seed of the one RNG every party draws from.
    pub seed: u64,
    /// Number of relays (at least 10: two path relays for each side, three introduction
    /// points, a rendezvous point and HSDirs).
    pub relays: usize,
    /// Size of the page body the client fetches.
    pub page_len: u64,
    /// Whether the service requires client authorization (the client holds the key).
    pub client_auth: bool,
}

impl Default for HsSimConfig {
    fn default() -> Self {
        HsSimConfig {
            seed: 1,
            relays: 12,
            page_len: 300_000,
            client_auth: false,
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HsSimError {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(&'static str),
    /// A step of the scenario failed.
    #[error("{step}: {detail}")]
    Step {
        /// The step.
        step: &'static str,
        /// What went wrong.
        detail: String,
    },
}

fn fail(step: &'static str, detail: impl core::fmt::Display) -> HsSimError {
    HsSimError::Step {
        step,
        detail: detail.to_string(),
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct HsReport {
    /// One line per significant event, in time order.
    pub story: Vec<StoryLine>,
    /// The service's onion address.
    pub address: String,
    /// The HTTP status line the client received.
    pub status_line: String,
    /// The page body the client received.
    pub body: Vec<u8>,
    /// The body the service's web server sent.
    pub expected_body: Vec<u8>,
    /// SHA-256 of `body`.
    pub digest: [u8; 32],
    /// Relays the client built circuits through (its own choices).
    pub client_path: BTreeSet<String>,
    /// Relays the service built circuits through (its own choices).
    pub service_path: BTreeSet<String>,
    /// Relays of the service named to the client by the protocol (the descriptor's
    /// introduction points).
    pub client_learned: BTreeSet<String>,
    /// Relays of the client named to the service by the protocol (INTRODUCE2's rendezvous
    /// point).
    pub service_learned: BTreeSet<String>,
    /// The service's guard and middle relays (private to it).
    pub service_private: BTreeSet<String>,
    /// The client's guard and middle relays (private to it).
    pub client_private: BTreeSet<String>,
    /// The introduction points.
    pub intro_points: Vec<String>,
    /// The rendezvous point.
    pub rend_point: String,
    /// For each relay, the parties and relays it has a channel with (its neighbours on the
    /// circuits through it).
    pub neighbours: Vec<(String, BTreeSet<String>)>,
    /// Virtual time of the whole run.
    pub total_time: Duration,
    /// Bytes that crossed the channel links, both directions.
    pub link_bytes: u64,
    /// The HSDirs the descriptors were uploaded to (public: chosen by the hash ring).
    pub hsdirs: BTreeSet<String>,
    /// The client's flow-control counters on the rendezvous circuit (SENDMEs end to end).
    pub client_stats: FlowStats,
    /// The service's flow-control counters on its rendezvous circuit.
    pub service_stats: FlowStats,
}

impl HsReport {
    /// The neighbours a relay saw.
    pub fn neighbours_of(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.neighbours
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// The digest as lowercase hex.
    pub fn digest_hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn split_http(resp: &[u8]) -> (String, &[u8]) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let line_end = resp.windows(2).position(|w| w == b"\r\n").unwrap_or(end);
    let status = String::from_utf8_lossy(&resp[..line_end.min(end)]).into_owned();
    (status, resp.get(end + 4..).unwrap_or_default())
}

/// Run the onion-service story (see the module documentation).
pub fn run(cfg: &HsSimConfig) -> Result<HsReport, HsSimError> {
    if cfg.relays < 10 || cfg.relays > 200 {
        return Err(HsSimError::Config("relays must be 10..=200"));
    }
    let mut w = World::new(cfg.seed, cfg.relays)?;
    let (cp, sp) = (w.client, w.service);
    let page_seed = cfg.seed ^ 0x5eed;
    let (c_guard, c_mid, s_guard, s_mid) = (0, 1, 2, 3);
    let tp = TimePeriodConfig::testing_network(20).map_err(|e| fail("time period", e))?;
    let params = HsDirParams {
        n_replicas: 2,
        spread_fetch: 2,
        spread_store: 3,
    };
    let sr = SharedRandom {
        current: Some([0xcc; 32]),
        previous: Some([0xbb; 32]),
    };
    let ring: Vec<HsDirRelay> = (0..cfg.relays)
        .map(|r| {
            let (rsa, ed) = w.net.relay_ids(r);
            HsDirRelay {
                ed25519_id: ed.0,
                rsa_id: rsa,
                is_hsdir: w.is_hsdir(r),
            }
        })
        .collect();

    // The service.
    let client_secret = {
        let mut k = [0u8; 32];
        w.net.rng().fill_bytes(&mut k);
        StaticSecret::from(k)
    };
    let mut scfg = HsServiceConfig::default();
    if cfg.client_auth {
        scfg.client_auth = Some(ClientAuthConfig {
            clients: vec![XPublic::from(&client_secret)],
        });
    }
    let mut service = HsService::new(ExpandedKeypair::generate(w.net.rng()), scfg);
    let address = service.address().to_string();
    w.say("service", format!("onion service {address} starts"));

    // 1. Introduction points: three of the relays 4.. chosen by the service.
    let mut candidates: Vec<usize> = (4..cfg.relays).collect();
    let mut ips = Vec::new();
    for _ in 0..3 {
        let k = (w.net.rng().next_u32() as usize) % candidates.len();
        ips.push(candidates.remove(k));
    }
    let mut ip_of_circ = HashMap::new();
    for &ipr in &ips {
        let specs = w.specs(ipr);
        let ntor_key = w.net.relay_target(ipr).ntor_key.0;
        let ipi = service.add_intro_point(w.net.rng(), specs, ntor_key);
        let o = w.build(sp, &[s_guard, s_mid, ipr])?;
        let kh = *w
            .net
            .circuit(o)
            .and_then(|c| c.hop_kh(2))
            .ok_or(fail("ESTABLISH_INTRO", "no KH"))?;
        let body = service
            .establish_intro(ipi, &kh)
            .map_err(|e| fail("ESTABLISH_INTRO", e))?;
        w.send(o, RelayCmd::ESTABLISH_INTRO, &body)?;
        w.run()?;
        w.take_msg(o, RelayCmd::INTRO_ESTABLISHED)
            .ok_or(fail("ESTABLISH_INTRO", "no INTRO_ESTABLISHED"))?;
        service
            .handle_intro_established(ipi)
            .map_err(|e| fail("INTRO_ESTABLISHED", e))?;
        ip_of_circ.insert(o, ipi);
        let n = w.name(ipr);
        w.say("service", format!("introduction point {n} established"));
    }

    // 2. Descriptors to the responsible HSDirs.
    let mut uploads: Vec<(usize, String)> = Vec::new();
    let mut hsdirs = BTreeSet::new();
    for slot in sr.service_upload(&tp, VALID_AFTER) {
        let now_unix = w.unix();
        let text = service
            .build_descriptor(w.net.rng(), slot.period, now_unix)
            .map_err(|e| fail("descriptor", e))?;
        let dirs = service.hsdirs_to_upload(&ring, &slot, &params);
        let names: Vec<String> = dirs.iter().map(|&d| w.name(d)).collect();
        let line = format!(
            "descriptor for time period {} ({} bytes, encrypted) → HSDirs {}",
            slot.period.num(),
            text.len(),
            names.join(", ")
        );
        w.say("service", line);
        hsdirs.extend(names);
        uploads.extend(dirs.into_iter().map(|d| (d, text.clone())));
    }
    for (d, text) in uploads {
        let o = w.build(sp, &[s_guard, s_mid, d])?;
        let req = format!(
            "POST {UPLOAD_PATH} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        let resp = w.dir_exchange(o, req.as_bytes())?;
        let (status, _) = split_http(&resp);
        if !status.contains(" 200 ") {
            return Err(fail("upload", status));
        }
        w.destroy(o);
        w.run()?;
    }

    // 3. The client fetches the descriptor.
    let addr = onion_hs::OnionAddress::parse(&address).map_err(|e| fail("address", e))?;
    w.say("client", format!("connecting to {address}"));
    let mut client = HsClient::new(addr).map_err(|e| fail("client", e))?;
    let sel = sr.client_fetch(&tp, VALID_AFTER);
    let dirs = client.hsdirs_to_fetch(&ring, &sel, &params);
    let key = cfg.client_auth.then_some(&client_secret);
    let mut fetched = false;
    for d in dirs {
        let o = w.build(cp, &[c_guard, c_mid, d])?;
        let req = format!("GET {} HTTP/1.0\r\n\r\n", client.fetch_path(sel.period));
        let resp = w.dir_exchange(o, req.as_bytes())?;
        w.destroy(o);
        w.run()?;
        let (status, body) = split_http(&resp);
        let dn = w.name(d);
        if !status.contains(" 200 ") {
            w.say(
                "client",
                format!("HSDir {dn}: {status}; trying the next one"),
            );
            continue;
        }
        let text = String::from_utf8_lossy(body).into_owned();
        let now_unix = w.unix();
        match client.handle_descriptor(&text, sel.period, key, now_unix) {
            Ok(()) => {
                w.say(
                    "client",
                    format!("descriptor from HSDir {dn} verified and decrypted"),
                );
                fetched = true;
                break;
            }
            Err(e) => w.say(
                "client",
                format!("descriptor from HSDir {dn} rejected: {e}"),
            ),
        }
    }
    if !fetched {
        return Err(fail("fetch", "no HSDir had a usable descriptor"));
    }
    let desc_ips: Vec<Vec<RawLinkSpec>> = client
        .descriptor()
        .map(|d| {
            d.second_layer
                .intro_points
                .iter()
                .map(|ip| ip.link_specifiers.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut client_learned = BTreeSet::new();
    for specs in &desc_ips {
        let r = w
            .relay_by_specs(specs)
            .ok_or(fail("descriptor", "unknown intro point"))?;
        client_learned.insert(w.name(r));
    }
    let line = format!(
        "descriptor names introduction points {}",
        client_learned
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    w.say("client", line);

    // 4. Rendezvous point and introduction.
    let rp_candidates: Vec<usize> = (4..cfg.relays)
        .filter(|r| !client_learned.contains(&w.name(*r)))
        .collect();
    let rp = rp_candidates[(w.net.rng().next_u32() as usize) % rp_candidates.len()];
    let rend_o = w.build(cp, &[c_guard, c_mid, rp])?;
    let est = client
        .establish_rendezvous(w.net.rng())
        .map_err(|e| fail("ESTABLISH_RENDEZVOUS", e))?;
    w.send(rend_o, RelayCmd::ESTABLISH_RENDEZVOUS, &est)?;
    w.run()?;
    w.take_msg(rend_o, RelayCmd::RENDEZVOUS_ESTABLISHED)
        .ok_or(fail("ESTABLISH_RENDEZVOUS", "no RENDEZVOUS_ESTABLISHED"))?;
    client
        .handle_rendezvous_established()
        .map_err(|e| fail("RENDEZVOUS_ESTABLISHED", e))?;
    let rpn = w.name(rp);
    w.say("client", format!("rendezvous point {rpn} ready"));

    let rp_key = w.net.relay_target(rp).ntor_key.0;
    let rp_specs = w.specs(rp);
    let (ipd, intro1) = client
        .introduce(w.net.rng(), &rp_key, rp_specs)
        .map_err(|e| fail("INTRODUCE1", e))?;
    let ipr = w
        .relay_by_specs(&ipd.link_specifiers)
        .ok_or(fail("INTRODUCE1", "unknown intro point"))?;
    let intro_o = w.build(cp, &[c_guard, c_mid, ipr])?;
    w.send(intro_o, RelayCmd::INTRODUCE1, &intro1)?;
    let ipn = w.name(ipr);
    w.say("client", format!("INTRODUCE1 sent through {ipn}"));
    w.run()?;
    let ack = w
        .take_msg(intro_o, RelayCmd::INTRODUCE_ACK)
        .ok_or(fail("INTRODUCE1", "no INTRODUCE_ACK"))?;
    client
        .handle_introduce_ack(&ack)
        .map_err(|e| fail("INTRODUCE_ACK", e))?;
    w.say("client", "INTRODUCE_ACK: success");
    w.destroy(intro_o);

    // 5. The service answers at the rendezvous point.
    let mut intro2 = None;
    for (&o, &ipi) in &ip_of_circ {
        if let Some(b) = w.take_msg(o, RelayCmd::INTRODUCE2) {
            intro2 = Some((ipi, b));
        }
    }
    let (ipi, intro2) = intro2.ok_or(fail("INTRODUCE2", "none arrived"))?;
    let req = service
        .handle_introduce2(w.net.rng(), ipi, &intro2)
        .map_err(|e| fail("INTRODUCE2", e))?;
    let srp = w
        .relay_by_specs(&req.link_specifiers)
        .ok_or(fail("INTRODUCE2", "unknown rendezvous point"))?;
    let mut service_learned = BTreeSet::new();
    service_learned.insert(w.name(srp));
    let srpn = w.name(srp);
    w.say(
        "service",
        format!("INTRODUCE2 decrypted, hs-ntor done: meet the client at {srpn}"),
    );
    let svc_o = w.build(sp, &[s_guard, s_mid, srp])?;
    w.send(svc_o, RelayCmd::RENDEZVOUS1, &req.rendezvous1)?;
    let layer = req
        .keys
        .service_layer()
        .map_err(|e| fail("virtual hop", e))?;
    let circ = w
        .net
        .circuit_mut(svc_o)
        .ok_or(fail("virtual hop", "no circuit"))?;
    circ.add_virtual_hop(Box::new(layer))
        .map_err(|e| fail("virtual hop", e))?;
    circ.set_accept_inbound_streams(true);
    w.serve(svc_o, page_seed);
    w.run()?;
    let r2 = w
        .take_msg(rend_o, RelayCmd::RENDEZVOUS2)
        .ok_or(fail("RENDEZVOUS2", "none arrived"))?;
    let keys = client
        .handle_rendezvous2(&r2)
        .map_err(|e| fail("RENDEZVOUS2", e))?;
    let layer = keys.client_layer().map_err(|e| fail("virtual hop", e))?;
    w.net
        .circuit_mut(rend_o)
        .ok_or(fail("virtual hop", "no circuit"))?
        .add_virtual_hop(Box::new(layer))
        .map_err(|e| fail("virtual hop", e))?;
    w.net.events(rend_o).clear();
    w.say(
        "client",
        "RENDEZVOUS2: hs-ntor verified, virtual hop added (AES-256, SHA3-256)",
    );

    // 6. A page over the joined circuit.
    let now = w.at();
    let stream = w
        .net
        .circuit_mut(rend_o)
        .ok_or(fail("BEGIN", "no circuit"))?
        .begin(&address, 80, BeginFlags::default(), now)
        .map_err(|e| fail("BEGIN", e))?;
    w.run()?;
    let t0 = w.at();
    let req = format!("GET /{} HTTP/1.0\r\nHost: {address}\r\n\r\n", cfg.page_len);
    w.say(
        "client",
        format!("stream {} connected; GET /{}", stream.get(), cfg.page_len),
    );
    let resp = w.stream_exchange(rend_o, stream, req.as_bytes())?;
    let (status_line, body) = split_http(&resp);
    let body = body.to_vec();
    let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
    let took = w.at().saturating_duration_since(t0);
    w.say(
        "client",
        format!(
            "{status_line}: {} bytes in {:.2} s of virtual time",
            body.len(),
            took.as_secs_f64()
        ),
    );
    let stats = |w: &World, at| w.net.circuit(at).map(|c| c.stats()).unwrap_or_default();
    let client_stats = stats(&w, rend_o);
    let service_stats = stats(&w, svc_o);
    w.destroy(rend_o);
    w.run()?;
    w.say("client", "rendezvous circuit destroyed");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    w.say("client", format!("page SHA-256 {hex}"));

    Ok(HsReport {
        story: w.net.story().to_vec(),
        address,
        status_line,
        expected_body: expected_body(page_seed, cfg.page_len),
        body,
        digest,
        client_path: w.paths(cp),
        service_path: w.paths(sp),
        client_learned,
        service_learned,
        service_private: [w.name(s_guard), w.name(s_mid)].into_iter().collect(),
        client_private: [w.name(c_guard), w.name(c_mid)].into_iter().collect(),
        intro_points: ips.iter().map(|&i| w.name(i)).collect(),
        rend_point: w.name(rp),
        neighbours: (0..cfg.relays)
            .map(|r| (w.name(r), w.net.relay_peers(r)))
            .collect(),
        total_time: w.net.elapsed(),
        link_bytes: w.net.link_bytes(),
        hsdirs,
        client_stats,
        service_stats,
    })
}

#[cfg(test)]
mod tests {
    use super::hsdir::HsDir;
    use super::*;
    use onion_hs::msg::IntroduceAck;
    use proptest::prelude::*;

    fn service(w: &mut World) -> HsService {
        HsService::new(
            ExpandedKeypair::generate(w.net.rng()),
            HsServiceConfig::default(),
        )
    }

    /// ESTABLISH_INTRO whose MAC covers another circuit's KH is refused by the intro point
    /// (rend-spec-v3 §3.1.1), over real circuits and channels; the right KH is accepted.
    #[test]
    fn establish_intro_with_wrong_kh_refused() {
        let mut w = World::new(11, 10).unwrap();
        let mut svc = service(&mut w);
        let specs = w.specs(5);
        let ip = svc.add_intro_point(w.net.rng(), specs, [0; 32]);
        let o = w.build(w.service, &[2, 3, 5]).unwrap();
        let wrong = *w.net.circuit(o).unwrap().hop_kh(1).unwrap();
        let body = svc.establish_intro(ip, &wrong).unwrap();
        w.send(o, RelayCmd::ESTABLISH_INTRO, &body).unwrap();
        w.run().unwrap();
        assert!(w.take_msg(o, RelayCmd::INTRO_ESTABLISHED).is_none());
        assert!(w
            .net
            .story()
            .iter()
            .any(|l| l.party == "relay5" && l.text.contains("ESTABLISH_INTRO refused")));
        let o2 = w.build(w.service, &[2, 3, 5]).unwrap();
        let kh = *w.net.circuit(o2).unwrap().hop_kh(2).unwrap();
        let body = svc.establish_intro(ip, &kh).unwrap();
        w.send(o2, RelayCmd::ESTABLISH_INTRO, &body).unwrap();
        w.run().unwrap();
        assert!(w.take_msg(o2, RelayCmd::INTRO_ESTABLISHED).is_some());
    }

    /// INTRODUCE1 for a service the intro point does not know: INTRODUCE_ACK with status 1
    /// (rend-spec-v3 §3.2.3), and nothing is forwarded.
    #[test]
    fn introduce1_for_unknown_service_nacked() {
        let mut w = World::new(12, 10).unwrap();
        let mut svc = service(&mut w);
        let specs = w.specs(6);
        let ip = svc.add_intro_point(w.net.rng(), specs, [1; 32]);
        svc.handle_intro_established(ip).unwrap();
        let period = TimePeriodConfig::testing_network(20)
            .unwrap()
            .period_at(VALID_AFTER);
        let text = svc
            .build_descriptor(w.net.rng(), period, VALID_AFTER)
            .unwrap();
        let mut client = HsClient::new(svc.address()).unwrap();
        client
            .handle_descriptor(&text, period, None, VALID_AFTER)
            .unwrap();
        client.establish_rendezvous(w.net.rng()).unwrap();
        client.handle_rendezvous_established().unwrap();
        let specs = w.specs(7);
        let (_, body) = client.introduce(w.net.rng(), &[2; 32], specs).unwrap();
        let o = w.build(w.client, &[0, 1, 6]).unwrap();
        w.send(o, RelayCmd::INTRODUCE1, &body).unwrap();
        w.run().unwrap();
        let ack = w.take_msg(o, RelayCmd::INTRODUCE_ACK).unwrap();
        assert_eq!(IntroduceAck::parse(&ack).unwrap().status, 1);
        let all: Vec<_> = w
            .net
            .party_circuits(w.client)
            .chain(w.net.party_circuits(w.service))
            .collect();
        assert!(all.into_iter().all(|at| w.net.events(at).is_empty()));
    }

    /// RENDEZVOUS1 with an unknown cookie joins nothing and the client gets no RENDEZVOUS2.
    #[test]
    fn rendezvous1_unknown_cookie_refused() {
        let mut w = World::new(13, 10).unwrap();
        let o = w.build(w.service, &[2, 3, 8]).unwrap();
        let body = onion_hs::msg::Rendezvous1 {
            rend_cookie: [7; 20],
            handshake_info: [0; 64],
        }
        .encode();
        w.send(o, RelayCmd::RENDEZVOUS1, &body).unwrap();
        w.run().unwrap();
        let story = w.net.story();
        assert!(story.iter().any(|l| l.text.contains("RENDEZVOUS1 refused")));
        assert!(!story.iter().any(|l| l.text.contains("circuits joined")));
    }

    /// Parties reuse their channel to the guard: the service's two circuits through relay 2
    /// open one channel, and relay 2 extends to relay 3 over one channel too.
    #[test]
    fn channels_reused_between_circuits() {
        let mut w = World::new(15, 10).unwrap();
        w.build(w.service, &[2, 3, 8]).unwrap();
        w.build(w.service, &[2, 3, 9]).unwrap();
        let opened = |who: &str| {
            w.net
                .story()
                .iter()
                .filter(|l| l.party == who && l.text.starts_with("opening a channel"))
                .count()
        };
        assert_eq!(opened("service"), 1);
        assert_eq!(opened("relay2"), 1);
        assert_eq!(opened("relay3"), 2);
        assert_eq!(
            w.net.relay_peers(3),
            ["relay2", "relay8", "relay9"].map(String::from).into()
        );
    }

    /// HSDir: a descriptor POSTed is served back by GET under its blinded key; an unknown
    /// key is a 404, an incomplete POST waits, a garbage one is a 400 (rend-spec-v3 §2.2.6).
    #[test]
    fn hsdir_stores_and_serves() {
        let mut w = World::new(16, 10).unwrap();
        let mut svc = service(&mut w);
        let period = TimePeriodConfig::testing_network(20)
            .unwrap()
            .period_at(VALID_AFTER);
        let text = svc
            .build_descriptor(w.net.rng(), period, VALID_AFTER)
            .unwrap();
        let mut dir = HsDir::default();
        let post = format!(
            "POST {UPLOAD_PATH} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        assert!(dir.answer(&post.as_bytes()[..post.len() - 1]).is_none());
        let (resp, _) = dir.answer(post.as_bytes()).unwrap();
        assert!(resp.starts_with(b"HTTP/1.0 200 "));
        assert_eq!(dir.len(), 1);
        let client = HsClient::new(svc.address()).unwrap();
        let get = format!("GET {} HTTP/1.0\r\n\r\n", client.fetch_path(period));
        let (resp, _) = dir.answer(get.as_bytes()).unwrap();
        let (status, body) = split_http(&resp);
        assert!(status.contains(" 200 "));
        assert_eq!(body, text.as_bytes());
        let (resp, _) = dir.answer(b"GET /tor/hs/3/AAAA HTTP/1.0\r\n\r\n").unwrap();
        assert!(resp.starts_with(b"HTTP/1.0 404 "));
        let bad = format!("POST {UPLOAD_PATH} HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
        let (resp, _) = dir.answer(bad.as_bytes()).unwrap();
        assert!(resp.starts_with(b"HTTP/1.0 400 "));
        assert_eq!(dir.len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The HSDir's request handling never panics on arbitrary bytes, and answers every
        /// complete POST.
        #[test]
        fn hsdir_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut dir = HsDir::default();
            let _ = dir.answer(&bytes);
            let mut req = b"GET /tor/hs/3/".to_vec();
            req.extend_from_slice(&bytes);
            req.extend_from_slice(b" HTTP/1.0\r\n\r\n");
            let _ = dir.answer(&req);
            let mut post = format!("POST {UPLOAD_PATH} HTTP/1.0\r\nContent-Length: {}\r\n\r\n", bytes.len()).into_bytes();
            post.extend_from_slice(&bytes);
            prop_assert!(dir.answer(&post).is_some());
        }
    }
}
