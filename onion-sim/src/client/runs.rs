//! Scenarios of `onion_client::Client` on the simulated network, as functions that tests
//! and `onion sim --client` call. Each returns figures in virtual time; a caller that wants
//! CPU time measures around the call (this crate reads no clock).
//!
//! | run | what it shows |
//! |---|---|
//! | [`fetch_document`] | `onion sim`: bootstrap, one circuit, one document fetched through it, told step by step |
//! | [`bootstrap`] | from nothing to a verified directory fetched from the simulated authorities |
//! | [`streams`] | many concurrent streams sharing circuits, every body's SHA-256 checked |
//! | [`relay_dies`] | the exit dies mid-transfer: the stream ends with its reason, the next stream gets a new circuit through another exit |
//! | [`guard_failure`] | the guard in use dies: streams go through another guard; when it is back, it is used again |
//! | [`refresh_by_diff`] | the authorities publish a new consensus; the client refreshes with a consensus diff |
//! | [`restart`] | a client restarted from what it persisted is usable without fetching the consensus again |
//! | [`onion_service`] | a second client hosts an onion service with client authorization; the client fails to reach it without its key and fetches from it with it |
//! | [`onion_fetch`] | `onion sim --onion`: the same with or without client authorization, with the story and the relays in each onion-service role |

use std::collections::BTreeSet;
use std::time::Duration;

use onion_client::{Event, Isolation};
use onion_dir::Timestamp;

use super::driver::{Outcome, Sim};
use super::world::{DirLog, Role, WorldConfig};
use crate::circuit::SimError;

/// What a bootstrap did.
#[derive(Debug, Clone)]
pub struct BootstrapReport {
    /// Virtual time to a usable directory.
    pub time: Duration,
    /// Relays usable in the directory.
    pub relays_usable: usize,
    /// The bootstrap percentages the client reported, in order.
    pub progress: Vec<u8>,
    /// Directory requests the relays answered.
    pub requests: Vec<DirLog>,
    /// Connections the client opened.
    pub connects: usize,
}

/// Bootstrap `sim`'s client (at most `limit` of virtual time).
pub fn bootstrap(sim: &mut Sim, limit: Duration) -> Result<BootstrapReport, SimError> {
    let time = sim.run_until(limit, |s| s.client.is_bootstrapped())?;
    let progress = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Bootstrap { percent, .. } => Some(*percent),
            _ => None,
        })
        .collect();
    Ok(BootstrapReport {
        time,
        relays_usable: sim.client.directory().map_or(0, |d| d.view.len()),
        progress,
        requests: sim.world.dir_log().to_vec(),
        connects: sim.connects,
    })
}

/// A world of `cfg` with a bootstrapped client.
pub fn bootstrapped(cfg: WorldConfig) -> Result<(Sim, BootstrapReport), SimError> {
    let mut sim = Sim::new(cfg, None)?;
    let rep = bootstrap(&mut sim, Duration::from_secs(300))?;
    Ok((sim, rep))
}

/// What a batch of streams did.
#[derive(Debug, Clone)]
pub struct StreamsReport {
    /// Streams started.
    pub streams: usize,
    /// Streams whose whole body arrived with the right SHA-256.
    pub ok: usize,
    /// How the others ended.
    pub failures: Vec<String>,
    /// Body bytes received (all streams).
    pub body_bytes: u64,
    /// Virtual time from the first request to the last body byte.
    pub time: Duration,
    /// Circuits the exits accepted during the batch: how many circuits the streams shared.
    pub exit_circuits: u64,
    /// Connections the client opened during the batch.
    pub connects: usize,
}

impl StreamsReport {
    /// Body bytes per second of virtual time.
    pub fn throughput(&self) -> f64 {
        self.body_bytes as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

fn exit_circuits(sim: &Sim) -> u64 {
    sim.world
        .relays_of(Role::Exit)
        .into_iter()
        .map(|r| sim.world.relay_stats(r).circuits)
        .sum()
}

/// Start `n` fetches of `size` bytes at once (same isolation) and run until all ended.
pub fn streams(
    sim: &mut Sim,
    n: usize,
    size: u64,
    isolation: Isolation,
    limit: Duration,
) -> Result<StreamsReport, SimError> {
    let first = sim.fetches.all.len();
    let circs0 = exit_circuits(sim);
    let connects0 = sim.connects;
    let start = sim.now();
    for _ in 0..n {
        sim.fetch(size, isolation)?;
    }
    sim.run_until(limit, |s| {
        s.fetches.all[first..]
            .iter()
            .all(|f| f.outcome != Outcome::Running)
    })?;
    let batch = &sim.fetches.all[first..];
    let end = batch.iter().filter_map(|f| f.ended).max().unwrap_or(start);
    Ok(StreamsReport {
        streams: n,
        ok: batch.iter().filter(|f| f.outcome == Outcome::Ok).count(),
        failures: batch
            .iter()
            .filter(|f| f.outcome != Outcome::Ok)
            .map(|f| format!("{:?}", f.outcome))
            .collect(),
        body_bytes: batch.iter().map(|f| f.body_len).sum(),
        time: end - start,
        exit_circuits: exit_circuits(sim) - circs0,
        connects: sim.connects - connects0,
    })
}

/// What happened when the exit died.
#[derive(Debug, Clone)]
pub struct RelayDiesReport {
    /// The exit that died.
    pub killed: String,
    /// Body bytes the first stream had when it ended.
    pub received: u64,
    /// How the first stream ended.
    pub first: Outcome,
    /// How the next stream ended.
    pub second: Outcome,
    /// The exit the next stream went through.
    pub second_exit: Option<String>,
}

/// Bootstrap, start a 4 MiB fetch, kill the exit carrying it once 256 KiB arrived, then
/// fetch again.
pub fn relay_dies(cfg: WorldConfig) -> Result<RelayDiesReport, SimError> {
    let (mut sim, _) = bootstrapped(cfg)?;
    let limit = Duration::from_secs(120);
    sim.fetch(4 << 20, Isolation::NONE)?;
    sim.run_until(limit, |s| {
        s.fetches.all[0].body_len >= 256 * 1024 || s.fetches.all[0].outcome != Outcome::Running
    })?;
    let exit = *sim
        .world
        .exits_streaming()
        .first()
        .ok_or_else(|| SimError::Setup("no exit is streaming".into()))?;
    let killed = sim.world.relay_name(exit).to_owned();
    sim.world.kill_relay(exit);
    sim.run_until(limit, |s| s.fetches.all[0].outcome != Outcome::Running)?;
    let (received, first) = (
        sim.fetches.all[0].body_len,
        sim.fetches.all[0].outcome.clone(),
    );
    sim.fetch(100_000, Isolation::NONE)?;
    let mut second_exit = None;
    sim.run_until(limit, |s| {
        if second_exit.is_none() {
            second_exit = s.world.exits_streaming().first().copied();
        }
        s.fetches.all[1].outcome != Outcome::Running
    })?;
    Ok(RelayDiesReport {
        killed,
        received,
        first,
        second: sim.fetches.all[1].outcome.clone(),
        second_exit: second_exit.map(|r| sim.world.relay_name(r).to_owned()),
    })
}

/// What happened around the guard's failure.
#[derive(Debug, Clone)]
pub struct GuardFailureReport {
    /// The guard in use at first.
    pub first_guard: String,
    /// How the fetch while it was down ended.
    pub while_down: Outcome,
    /// The guards the client was connected to while it was down.
    pub guards_while_down: Vec<String>,
    /// How the fetch after it came back ended.
    pub after: Outcome,
    /// The guards the client was connected to after it came back.
    pub guards_after: Vec<String>,
}

fn client_guards(sim: &Sim) -> Vec<String> {
    sim.world
        .client_relays()
        .into_iter()
        .filter(|&r| sim.world.relay_role(r) == Role::Guard)
        .map(|r| sim.world.relay_name(r).to_owned())
        .collect()
}

/// Bootstrap and fetch; kill the guard in use and fetch again; revive it, let
/// `recovery` of virtual time pass, and fetch again.
pub fn guard_failure(cfg: WorldConfig, recovery: Duration) -> Result<GuardFailureReport, SimError> {
    let (mut sim, _) = bootstrapped(cfg)?;
    let limit = Duration::from_secs(300);
    sim.fetch(50_000, Isolation::NONE)?;
    sim.run_until(limit, |s| s.fetches.all[0].outcome != Outcome::Running)?;
    let guards = client_guards(&sim);
    let first_guard = guards
        .first()
        .cloned()
        .ok_or_else(|| SimError::Setup(format!("no guard in use: {}", sim.status())))?;
    let g = (0..sim.world.n_relays())
        .find(|&r| sim.world.relay_name(r) == first_guard)
        .ok_or_else(|| SimError::Setup("guard vanished".into()))?;
    sim.world.kill_relay(g);
    // The reset reaches the client after one link latency; a stream started before that
    // rides a circuit already lost and ends with DESTROY, as C tor's would
    // (connection_edge_destroy does not retry an attached stream). The next stream is the
    // one started once the death is known.
    let noticed = sim.now() + Duration::from_secs(2);
    sim.run_until(limit, |s| s.now() >= noticed)?;
    sim.fetch(50_000, Isolation(1))?;
    let mut guards_while_down = Vec::new();
    sim.run_until(limit, |s| {
        for n in client_guards(s) {
            if !guards_while_down.contains(&n) {
                guards_while_down.push(n);
            }
        }
        s.fetches.all[1].outcome != Outcome::Running
    })?;
    sim.world.revive_relay(g);
    let until = sim.now() + recovery;
    sim.run_until(recovery + Duration::from_secs(1), |s| s.now() >= until)?;
    sim.fetch(50_000, Isolation(2))?;
    let mut guards_after = Vec::new();
    sim.run_until(limit, |s| {
        for n in client_guards(s) {
            if !guards_after.contains(&n) {
                guards_after.push(n);
            }
        }
        s.fetches.all[2].outcome != Outcome::Running
    })?;
    Ok(GuardFailureReport {
        first_guard,
        while_down: sim.fetches.all[1].outcome.clone(),
        guards_while_down,
        after: sim.fetches.all[2].outcome.clone(),
        guards_after,
    })
}

/// What the refresh did.
#[derive(Debug, Clone)]
pub struct RefreshReport {
    /// `valid-after` of the consensus the client had after bootstrap.
    pub before: Timestamp,
    /// `valid-after` of the consensus the client uses after the refresh.
    pub after: Timestamp,
    /// The consensus requests answered after the publication, with whether each was a diff.
    pub requests: Vec<DirLog>,
    /// Virtual time from the publication to the new directory.
    pub time: Duration,
}

fn valid_after(sim: &Sim) -> Option<Timestamp> {
    sim.client.directory().map(|d| d.valid_after)
}

/// Bootstrap; the authorities publish the next consensus; run until the client uses it
/// (at most four virtual hours).
pub fn refresh_by_diff(cfg: WorldConfig) -> Result<RefreshReport, SimError> {
    let (mut sim, _) = bootstrapped(cfg)?;
    let before = valid_after(&sim).ok_or_else(|| SimError::Setup("no directory".into()))?;
    let seen = sim.world.dir_log().len();
    let published = sim.world.publish_next()?;
    let time = sim.run_until(Duration::from_secs(4 * 3600), |s| {
        valid_after(s).is_some_and(|v| v >= published)
    })?;
    Ok(RefreshReport {
        before,
        after: valid_after(&sim).unwrap_or(before),
        requests: sim.world.dir_log()[seen..]
            .iter()
            .filter(|l| l.path.contains("consensus"))
            .cloned()
            .collect(),
        time,
    })
}

/// What a restart did.
#[derive(Debug, Clone)]
pub struct RestartReport {
    /// Consensus requests answered after the restart.
    pub consensus_requests: usize,
    /// Virtual time from the restart to a usable directory.
    pub time: Duration,
    /// How a fetch after the restart ended.
    pub fetch: Outcome,
}

/// Bootstrap, restart the client from what it persisted, fetch.
pub fn restart(cfg: WorldConfig) -> Result<RestartReport, SimError> {
    let (mut sim, _) = bootstrapped(cfg)?;
    // Let the client hand over what it wants to keep.
    sim.run_until(Duration::from_secs(5), |_| false).ok();
    let seen = sim.world.dir_log().len();
    sim.restart()?;
    let time = sim.run_until(Duration::from_secs(60), |s| s.client.is_bootstrapped())?;
    sim.fetch(10_000, Isolation::NONE)?;
    sim.run_until(Duration::from_secs(120), |s| {
        s.fetches.all[0].outcome != Outcome::Running
    })?;
    Ok(RestartReport {
        consensus_requests: sim.world.dir_log()[seen..]
            .iter()
            .filter(|l| l.path.contains("consensus"))
            .count(),
        time,
        fetch: sim.fetches.all[0].outcome.clone(),
    })
}

/// What the onion-service run did.
#[derive(Debug, Clone)]
pub struct OnionReport {
    /// The service's address.
    pub address: String,
    /// How the fetch without the authorization key ended.
    pub without_key: Outcome,
    /// How the fetch with it ended.
    pub with_key: Outcome,
    /// Virtual time of the fetch with the key (descriptor, introduction, rendezvous, body).
    pub time: Duration,
    /// Streams the service saw, and responses it finished.
    pub incoming: usize,
    /// Responses the service finished writing.
    pub served: usize,
    /// Descriptor uploads and fetches the HSDirs answered.
    pub hsdir_requests: usize,
}

/// Bootstrap a client and a service host; the service requires client authorization
/// (rend-spec-v3 §2.5.1.2). The client fetches `size` bytes from it first without its key,
/// then with it.
pub fn onion_service(cfg: WorldConfig, size: u64) -> Result<OnionReport, SimError> {
    let r = onion_fetch(cfg, size, true)?;
    Ok(OnionReport {
        address: r.address,
        without_key: r.without_key.unwrap_or(Outcome::Running),
        with_key: r.outcome,
        time: r.time,
        incoming: r.incoming,
        served: r.served,
        hsdir_requests: r.hsdir_requests,
    })
}

/// What [`onion_fetch`] did.
#[derive(Debug, Clone)]
pub struct OnionFetchReport {
    /// The service's address.
    pub address: String,
    /// With client authorization: how the fetch without the key ended.
    pub without_key: Option<Outcome>,
    /// How the fetch (with the key, if one is needed) ended: [`Outcome::Ok`] when the
    /// whole page arrived with the web server's SHA-256.
    pub outcome: Outcome,
    /// Page bytes received by that fetch.
    pub body_len: u64,
    /// Virtual time from the start until the descriptor was first uploaded.
    pub published: Duration,
    /// Virtual time of the fetch (descriptor, introduction, rendezvous, body).
    pub time: Duration,
    /// Streams the service saw.
    pub incoming: usize,
    /// Responses the service finished writing.
    pub served: usize,
    /// Descriptor uploads and fetches the HSDirs answered.
    pub hsdir_requests: usize,
    /// Relays that stored the service's descriptor (HSDirs).
    pub hsdirs_stored: BTreeSet<String>,
    /// Relays that served it to the client.
    pub hsdirs_served: BTreeSet<String>,
    /// Relays that accepted the service's introduction circuits.
    pub intro_points: BTreeSet<String>,
    /// Relays that relayed an INTRODUCE2 to the service.
    pub introduced_at: BTreeSet<String>,
    /// Relays that joined a rendezvous.
    pub rendezvous_points: BTreeSet<String>,
    /// The story: connections, directory requests and the run's steps, in virtual time.
    pub story: Vec<crate::circuit::StoryLine>,
}

/// `onion sim --onion`: bootstrap a client and a second client hosting an onion service on
/// `onion_relay::Relay` relays (HSDirs, introduction and rendezvous points all run the
/// relay's own code); the client fetches `size` bytes from the service (rend-spec-v3
/// §2–§4). With `client_auth` the service admits only one key (rend-spec-v3 §2.5.1.2): the
/// client first tries without it, then with it.
pub fn onion_fetch(
    mut cfg: WorldConfig,
    size: u64,
    client_auth: bool,
) -> Result<OnionFetchReport, SimError> {
    use onion_hs::x25519_dalek::{PublicKey, StaticSecret};
    cfg.story = true;
    let (mut sim, _) = bootstrapped(cfg)?;
    let start = sim.now();
    let identity = onion_hs::keys::ExpandedKeypair::generate(sim.world.rng());
    let key = StaticSecret::random_from_rng(&mut *sim.world.rng());
    let authorized = if client_auth {
        vec![PublicKey::from(&key)]
    } else {
        Vec::new()
    };
    let svc = sim.host_service(identity, authorized)?;
    let address = sim.services[svc].address.clone();
    sim.world.log(
        "service",
        format!(
            "hosts {address} on port 80{}",
            if client_auth {
                " (client authorization: one key)"
            } else {
                ""
            }
        ),
    );
    let limit = Duration::from_secs(600);
    // Published: an HSDir of its ring has the descriptor.
    sim.run_until(limit, |s| {
        let c = &s.services[svc].client;
        c.onion_service_stats(s.services[svc].handle)
            .is_some_and(|st| st.uploads_ok > 0)
    })?;
    let published = sim.now() - start;
    sim.world.log("service", "descriptor uploaded to an HSDir");
    let mut without_key = None;
    if client_auth {
        sim.world.log(
            "client",
            format!("fetches /{size} from {address} without the key"),
        );
        sim.fetch_from(&address, size, Isolation(1))?;
        let i = sim.fetches.all.len() - 1;
        sim.run_until(limit, |s| s.fetches.all[i].outcome != Outcome::Running)?;
        let o = sim.fetches.all[i].outcome.clone();
        sim.world.log("client", format!("without the key: {o:?}"));
        without_key = Some(o);
        sim.client
            .set_onion_client_auth(&address, Some(key))
            .map_err(|e| SimError::Setup(e.to_string()))?;
    }
    let fetch_start = sim.now();
    sim.world
        .log("client", format!("fetches /{size} from {address}"));
    sim.fetch_from(&address, size, Isolation(2))?;
    let i = sim.fetches.all.len() - 1;
    sim.run_until(limit, |s| s.fetches.all[i].outcome != Outcome::Running)?;
    let f = sim.fetches.all[i].clone();
    sim.world.log(
        "client",
        match &f.outcome {
            Outcome::Ok => format!(
                "page complete: {} bytes, SHA-256 the web server's",
                f.body_len
            ),
            o => format!("page failed: {o:?}"),
        },
    );
    let (mut hsdirs_stored, mut hsdirs_served) = (BTreeSet::new(), BTreeSet::new());
    let (mut intro_points, mut introduced_at, mut rendezvous_points) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for r in 0..sim.world.n_relays() {
        let st = sim.world.relay_machine_stats(r);
        let name = sim.world.relay_name(r).to_owned();
        for (n, set) in [
            (st.hs_descriptors_stored, &mut hsdirs_stored),
            (st.hs_descriptors_served, &mut hsdirs_served),
            (st.intro_established, &mut intro_points),
            (st.introduce2_relayed, &mut introduced_at),
            (st.rend_joined, &mut rendezvous_points),
        ] {
            if n > 0 {
                set.insert(name.clone());
            }
        }
    }
    Ok(OnionFetchReport {
        address,
        without_key,
        outcome: f.outcome,
        body_len: f.body_len,
        published,
        time: f.ended.unwrap_or(fetch_start) - fetch_start,
        incoming: sim.services[svc].incoming,
        served: sim.services[svc].served,
        hsdir_requests: sim
            .world
            .dir_log()
            .iter()
            .filter(|l| l.path.starts_with("POST") || l.path.contains("/tor/hs/"))
            .count(),
        hsdirs_stored,
        hsdirs_served,
        intro_points,
        introduced_at,
        rendezvous_points,
        story: sim.world.story().to_vec(),
    })
}

/// What [`fetch_document`] did.
#[derive(Debug, Clone)]
pub struct DocumentReport {
    /// Relays in the world (authorities included).
    pub relays: usize,
    /// The bootstrap.
    pub bootstrap: BootstrapReport,
    /// How the fetch ended: [`Outcome::Ok`] when the whole body arrived with the web
    /// server's SHA-256.
    pub outcome: Outcome,
    /// The response's status line.
    pub status_line: String,
    /// Body bytes received.
    pub body_len: u64,
    /// The circuit when the stream opened (path, handshakes, congestion control).
    pub circuit: Option<onion_client::CircuitView>,
    /// The same circuit when the stream ended (flow-control counters, final window).
    pub circuit_end: Option<onion_client::CircuitView>,
    /// Virtual time from `connect` to the stream's CONNECTED (circuit build included).
    pub open_time: Duration,
    /// Virtual time from CONNECTED to the end of the stream (request and body).
    pub transfer_time: Duration,
    /// Virtual time of the whole run.
    pub total_time: Duration,
    /// Bytes delivered over all connections.
    pub link_bytes: u64,
    /// The story: bootstrap, connections, directory requests, circuit, stream, progress.
    pub story: Vec<crate::circuit::StoryLine>,
}

/// Tells what the client did between two looks: new events (bootstrap progress, directory),
/// the circuit chosen and built for the stream, the stream opening, and the body's progress.
#[derive(Default)]
struct Narrator {
    events_seen: usize,
    stream: Option<onion_client::StreamHandle>,
    circuit_told: Option<(u64, bool)>,
    opened_told: bool,
    head_told: bool,
    quarters: u64,
}

fn hops_text(v: &onion_client::CircuitView) -> String {
    use onion_circuit::circuit::HandshakeKind;
    v.hops
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = h.nickname.clone().unwrap_or_else(|| "?".into());
            let kind = match h.handshake {
                HandshakeKind::CreateFast => "CREATE_FAST",
                HandshakeKind::Ntor => "ntor",
                HandshakeKind::NtorV3 => "ntor-v3",
            };
            let cell = if i == 0 { "CREATE2" } else { "EXTEND2" };
            match h.handshake {
                HandshakeKind::CreateFast => format!("{name} ({kind})"),
                _ => format!("{name} ({cell} {kind})"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn cc_text(cc: &onion_client::CcView) -> String {
    format!(
        "sendme_inc {}, cwnd {} cells, {} in flight, {}, RTT min {:.1} ms, smoothed {:.1} ms",
        cc.sendme_inc,
        cc.cwnd,
        cc.inflight,
        if cc.slow_start {
            "slow start"
        } else {
            "past slow start"
        },
        cc.rtt_min_usec as f64 / 1e3,
        cc.rtt_ewma_usec as f64 / 1e3
    )
}

/// The flow-control counters as one line.
pub fn flow_text(f: &onion_circuit::flow::FlowStats) -> String {
    format!(
        "{} DATA cells received, {} sent; {} circuit SENDMEs and {} stream SENDMEs sent; {} XOFF / {} XON sent, {} XOFF / {} XON received",
        f.data_cells_received,
        f.data_cells_sent,
        f.circ_sendmes_sent,
        f.stream_sendmes_sent,
        f.xoff_sent,
        f.xon_sent,
        f.xoff_received,
        f.xon_received
    )
}

impl Narrator {
    fn look(&mut self, sim: &mut Sim) {
        while let Some((_, ev)) = sim.events.get(self.events_seen) {
            self.events_seen += 1;
            let line = match ev {
                Event::Bootstrap { percent, what } => Some(format!("bootstrap {percent}%: {what}")),
                Event::DirectoryChanged(d) => Some(format!(
                    "directory: consensus valid after {}, {} relays usable",
                    d.valid_after,
                    d.view.len()
                )),
                Event::DirectoryFailed(e) => Some(format!("directory request failed: {e}")),
                _ => None,
            };
            if let Some(l) = line {
                sim.world.log("client", l);
            }
        }
        let Some(s) = self.stream else { return };
        if let Some(v) = sim.client.stream_circuit(s) {
            if self.circuit_told != Some((v.circuit, v.built)) {
                self.circuit_told = Some((v.circuit, v.built));
                let text = if v.built {
                    format!(
                        "circuit {} built: {} ({:?})",
                        v.circuit,
                        hops_text(&v),
                        v.purpose
                    )
                } else {
                    format!(
                        "circuit {} chosen for the stream, building: {}",
                        v.circuit,
                        v.path_string()
                    )
                };
                sim.world.log("client", text);
                if v.built {
                    let exit = v
                        .hops
                        .last()
                        .and_then(|h| h.nickname.clone())
                        .unwrap_or_default();
                    sim.world.log(
                        "client",
                        match &v.congestion_control {
                            Some(cc) => format!(
                                "congestion control (proposal 324, Tor Vegas) negotiated with {exit}: {}",
                                cc_text(cc)
                            ),
                            None => format!(
                                "no congestion control with {exit}: fixed SENDME windows (1000 cells per circuit, 500 per stream)"
                            ),
                        },
                    );
                }
            }
        }
        let Some(f) = sim.fetches.all.iter().find(|f| f.stream == s) else {
            return;
        };
        let (opened, head, body_len, size, started) =
            (f.opened, f.head_done(), f.body_len, f.size, f.started);
        let status = f.status_line();
        if let (Some(at), false) = (opened, self.opened_told) {
            self.opened_told = true;
            sim.world.log(
                "client",
                format!(
                    "stream {}: CONNECTED {:.3} s after connect; request \"GET /{size}\" written",
                    s.get(),
                    (at - started).as_secs_f64()
                ),
            );
        }
        if head && !self.head_told {
            self.head_told = true;
            sim.world.log(
                "client",
                format!("stream {}: response head \"{status}\"", s.get()),
            );
        }
        let q = (body_len * 4).checked_div(size).unwrap_or(0);
        if q > self.quarters && q < 4 {
            self.quarters = q;
            let since = opened.map_or(Duration::ZERO, |o| sim.now() - o);
            sim.world.log(
                "client",
                format!(
                    "stream {}: {body_len} body bytes (past {}%), {:.2} MB/s since CONNECTED",
                    s.get(),
                    q * 25,
                    body_len as f64 / 1e6 / since.as_secs_f64().max(1e-9)
                ),
            );
        }
    }
}

/// `onion sim`: a client with nothing stored bootstraps from the world's authorities, then
/// fetches `GET /<size>` from the web server through a circuit it builds (path-spec §2), the
/// embedder's way: every relay an [`onion_relay::Relay`], the client `onion_client::Client`
/// as `onion get` runs it. The story tells bootstrap progress, connections and link
/// handshakes, directory requests, the circuit (path, handshake per hop, congestion control),
/// the stream, the body's progress and the flow-control counters; `cfg.story` is set.
pub fn fetch_document(mut cfg: WorldConfig, size: u64) -> Result<DocumentReport, SimError> {
    cfg.story = true;
    let mut sim = Sim::new(cfg, None)?;
    sim.watch_circuits = true;
    let mut nar = Narrator::default();
    nar.look(&mut sim);
    let time = sim.run_until(Duration::from_secs(300), |s| {
        nar.look(s);
        s.client.is_bootstrapped()
    })?;
    let bootstrap = BootstrapReport {
        time,
        relays_usable: sim.client.directory().map_or(0, |d| d.view.len()),
        progress: sim
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Bootstrap { percent, .. } => Some(*percent),
                _ => None,
            })
            .collect(),
        requests: sim.world.dir_log().to_vec(),
        connects: sim.connects,
    };
    let s = sim.fetch(size, Isolation::NONE)?;
    sim.world.log(
        "client",
        format!(
            "stream {}: connect to {}:80 (the exit resolves the name)",
            s.get(),
            crate::circuit::WEB_HOST
        ),
    );
    nar.stream = Some(s);
    nar.look(&mut sim);
    let i = sim.fetches.all.len() - 1;
    sim.run_until(Duration::from_secs(3600), |s| {
        nar.look(s);
        s.fetches.all[i].outcome != Outcome::Running
    })?;
    let f = sim.fetches.all[i].clone();
    let end = f.ended.unwrap_or(sim.now());
    let transfer_time = f.opened.map_or(Duration::ZERO, |o| end - o);
    let rate = f.body_len as f64 / 1e6 / transfer_time.as_secs_f64().max(1e-9);
    sim.world.log(
        "client",
        match &f.outcome {
            Outcome::Ok => format!(
                "stream {}: ended by the exit (END DONE): {} body bytes in {:.3} s, {rate:.2} MB/s, SHA-256 the web server's",
                s.get(),
                f.body_len,
                transfer_time.as_secs_f64()
            ),
            o => format!("stream {}: {o:?} after {} body bytes", s.get(), f.body_len),
        },
    );
    if let Some(v) = &f.circuit_ended {
        sim.world.log(
            "client",
            format!("circuit {} flow control: {}", v.circuit, flow_text(&v.flow)),
        );
        if let Some(cc) = &v.congestion_control {
            sim.world
                .log("client", format!("circuit {} congestion control at the end (the client's own sending window; the exit's paces the download): {}", v.circuit, cc_text(cc)));
        }
    }
    Ok(DocumentReport {
        relays: sim.world.n_relays(),
        bootstrap,
        status_line: f.status_line(),
        outcome: f.outcome.clone(),
        body_len: f.body_len,
        circuit: f.circuit_opened.clone(),
        circuit_end: f.circuit_ended.clone(),
        open_time: f.opened.map_or(Duration::ZERO, |o| o - f.started),
        transfer_time,
        total_time: sim.now() - onion_circuit::Instant::ZERO,
        link_bytes: sim.world.link_bytes(),
        story: std::iter::once(crate::circuit::StoryLine {
            at: Duration::ZERO,
            party: "client".into(),
            text: format!(
                "starts with nothing stored; {} directory authorities configured",
                sim.world.authorities().len()
            ),
        })
        .chain(sim.world.story().iter().cloned())
        .collect(),
    })
}
