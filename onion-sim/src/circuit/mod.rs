//! The circuit-level story: one fetch through a circuit, told cell by cell, on the relays
//! `onion relay` runs, in virtual time with one seeded RNG.
//!
//! A bare client made of one onion-circuit [`Channel`](onion_circuit::channel::Channel) and
//! one client [`Circuit`](onion_circuit::circuit::Circuit) (no directory, no guard logic: the
//! path is given) connects over the simulated network of
//! [`crate::client::world`] to its first relay, whose every relay is an
//! [`onion_relay::Relay`], the machine `onion relay` runs: the link handshake (VERSIONS,
//! CERTS, AUTH_CHALLENGE, NETINFO: tor-spec §4) with real link certificates, then the circuit
//! hop by hop (CREATE2 or CREATE_FAST, then EXTEND2 in RELAY_EARLY cells: tor-spec §5.1,
//! §5.3, §5.6), a stream to `www.example.com:80` through the exit (BEGIN, CONNECTED: §6.2),
//! an HTTP request, the response (large enough that circuit and stream SENDMEs flow: §7.3,
//! §7.4), the web server's close (RELAY_END DONE), after which the client tears the circuit
//! down (DESTROY) and every relay frees it. The exit's streams go to the world's web server
//! ([`web`]); BEGIN_DIR is answered by the relays' directory caches.
//!
//! [`run`] plays it; the [`Report`] holds a story line for every significant step of the
//! client and the relays, the body received, the client's flow-control counters, and the
//! addresses each relay saw, so that tests can check that each relay knows only its
//! neighbours. [`wired`] wires a client circuit to relay circuits cell by cell without
//! channels, for tests, fuzz targets and benchmarks.

pub(crate) mod bare;
pub mod web;
pub mod wired;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use onion_cell::relaymsg::BeginFlags;
use onion_circuit::channel::{ChanEvent, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, HandshakeKind, HopTarget};
use onion_circuit::flow::FlowStats;
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_circuit::Instant;

use self::bare::BareCircuit;
use crate::client::world::{AccessLink, LinkId, NetEvent, Role, World, WorldConfig};

/// The destination's hostname, resolved by the exit's (simulated) DNS.
pub const WEB_HOST: &str = "www.example.com";
/// The destination's address.
pub const WEB_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
/// The client's address (what its guard sees).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The web server's name in [`Report::seen`].
pub const WEB: &str = "web";

/// Settings of a simulated run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the one RNG every party draws from (keys, handshakes, padding).
    pub seed: u64,
    /// Number of relays in the circuit (the last one is the exit); at least 1.
    pub hops: usize,
    /// Size of the HTTP response body the client asks for.
    pub response_len: u64,
    /// One-way delay of every link (half of it on each end's access link).
    pub latency: Duration,
    /// Bytes per second each link direction carries (0 = unlimited).
    pub bandwidth: u64,
    /// The handshake used to create the first hop (later hops use ntor-v3).
    pub first_hop: HandshakeKind,
    /// Whether to record a story line for every significant event.
    pub story: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            hops: 3,
            response_len: 1_500_000,
            latency: Duration::from_millis(10),
            bandwidth: 12_500_000,
            first_hop: HandshakeKind::NtorV3,
            story: true,
        }
    }
}

/// One step of the story: when, who, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryLine {
    /// Virtual time since the start.
    pub at: Duration,
    /// The party ("client", a relay's name such as "guard0", "authorities", "service").
    pub party: String,
    /// What happened.
    pub text: String,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// One line per significant event, in time order.
    pub story: Vec<StoryLine>,
    /// The HTTP status line the client received.
    pub status_line: String,
    /// The HTTP response body the client received.
    pub body: Vec<u8>,
    /// The body the server sent (to compare).
    pub expected_body: Vec<u8>,
    /// Virtual time from the request leaving the client to the last body byte arriving.
    pub transfer_time: Duration,
    /// Virtual time of the whole run (connection to the last relay freeing the circuit).
    pub total_time: Duration,
    /// The client's flow-control counters.
    pub client_stats: FlowStats,
    /// The relays of the circuit, first hop first: name and address.
    pub path: Vec<(String, SocketAddr)>,
    /// For each relay of the circuit and the web server, the network addresses (and
    /// hostnames) it saw.
    pub seen: Vec<(String, BTreeSet<String>)>,
    /// Bytes that crossed the connections, in both directions, for the record.
    pub link_bytes: u64,
}

impl Report {
    /// The addresses party `name` saw.
    pub fn seen_by(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.seen.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Setting up keys or certificates failed.
    #[error("setup: {0}")]
    Setup(String),
    /// Nothing left to happen, but the client has not finished.
    #[error("stalled at {at:?}: {what}")]
    Stalled {
        /// Virtual time.
        at: Duration,
        /// The client's state.
        what: String,
    },
    /// The client's circuit failed.
    #[error("client circuit failed: {0}")]
    Circuit(String),
    /// The virtual time limit passed.
    #[error("virtual time limit exceeded")]
    TimeLimit,
}

/// Run the main scenario with `cfg`.
pub fn run(cfg: SimConfig) -> Result<Report, SimError> {
    let mut sim = Sim::new(cfg)?;
    sim.run_to_end()?;
    Ok(sim.report())
}

fn kind_name(k: HandshakeKind) -> &'static str {
    match k {
        HandshakeKind::Ntor => "ntor",
        HandshakeKind::NtorV3 => "ntor-v3",
        HandshakeKind::CreateFast => "CREATE_FAST",
    }
}

/// The most bytes from the first hop held for the channel (as onion-client's default
/// `Limits::channel_inbound`); beyond it the run fails.
const INBOUND_LIMIT: usize = 1 << 20;

/// The bare client: one channel to the first hop, one circuit through the path, one
/// stream; what it does with their events.
struct Client {
    link: Option<LinkId>,
    path: Vec<HopTarget>,
    names: Vec<String>,
    first_hop: HandshakeKind,
    /// The channel to the first hop and the circuit on it.
    bare: BareCircuit,
    rng: ChaCha20Rng,
    response_len: u64,
    stream: Option<StreamId>,
    request_sent: Option<Instant>,
    last_byte: Option<Instant>,
    response: Vec<u8>,
    head_len: Option<usize>,
    status_line: String,
    stats: FlowStats,
    done: Option<Instant>,
    failure: Option<String>,
}

/// The main scenario: a bare client, `hops` [`onion_relay::Relay`] relays (the last one an
/// exit) and the web server behind the exit, on a [`World`].
pub struct Sim {
    cfg: SimConfig,
    world: World,
    path: Vec<usize>,
    client: Client,
    /// When the last relay of the path freed the circuit.
    freed: Option<Instant>,
}

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("world", &self.world)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Create the parties (keys, certificates, addresses) without starting anything: one
    /// directory authority (the world's relays need a consensus to serve; the client does
    /// not use it), a guard, `hops - 2` middles and an exit.
    pub fn new(cfg: SimConfig) -> Result<Sim, SimError> {
        let n = cfg.hops.max(1);
        let access = AccessLink {
            latency: cfg.latency / 2,
            bandwidth: cfg.bandwidth,
        };
        let mut world = World::new(WorldConfig {
            seed: cfg.seed,
            authorities: 1,
            guards: usize::from(n > 1),
            middles: n.saturating_sub(2),
            exits: 1,
            relay_link: access,
            client_link: access,
            web_latency: cfg.latency,
            congestion_control: false,
            story: cfg.story,
        })?;
        let path: Vec<usize> = [Role::Guard, Role::Middle, Role::Exit]
            .into_iter()
            .flat_map(|role| world.relays_of(role))
            .collect();
        let rng = ChaCha20Rng::seed_from_u64(world.rng().next_u64());
        let client = Client {
            link: None,
            path: path.iter().map(|&r| world.relay_target(r)).collect(),
            names: path
                .iter()
                .map(|&r| world.relay_name(r).to_owned())
                .collect(),
            first_hop: cfg.first_hop,
            bare: BareCircuit::default(),
            rng,
            response_len: cfg.response_len,
            stream: None,
            request_sent: None,
            last_byte: None,
            response: Vec::new(),
            head_len: None,
            status_line: String::new(),
            stats: FlowStats::default(),
            done: None,
            failure: None,
        };
        Ok(Sim {
            cfg,
            world,
            path,
            client,
            freed: None,
        })
    }

    /// The network, for a closer look.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Start: the client connects to its first hop and will build its circuit when the
    /// channel is open.
    pub fn start(&mut self) -> Result<(), SimError> {
        if self.client.link.is_none() {
            let addr = self.world.relay_addr(self.path[0]);
            self.client.link = Some(self.world.connect(addr));
        }
        Ok(())
    }

    /// Move everything that can move without time passing.
    fn pump(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = self.world.pump();
            moved |= self.client.step(&mut self.world);
            if !moved {
                break;
            }
        }
    }

    /// Whether every relay of the path has freed the circuit.
    fn all_freed(&self) -> bool {
        self.path.iter().all(|&r| self.world.relay_circuits(r) == 0)
    }

    /// Run until the client has finished and every relay of the path freed the circuit.
    pub fn run_to_end(&mut self) -> Result<(), SimError> {
        self.start()?;
        let limit = Instant::ZERO + Duration::from_secs(3600);
        loop {
            self.pump();
            if let Some(f) = &self.client.failure {
                return Err(SimError::Circuit(f.clone()));
            }
            if let Some(done) = self.client.done {
                if self.all_freed() {
                    self.freed = Some(self.world.now());
                    self.world
                        .log("client", "every relay of the path freed the circuit");
                    return Ok(());
                }
                if self.world.now() > done + Duration::from_secs(60) {
                    return Err(SimError::Stalled {
                        at: self.world.now() - Instant::ZERO,
                        what: "relays still hold the circuit a minute after DESTROY".into(),
                    });
                }
            }
            let next = [self.world.next_time(), self.client.next_time()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                return Err(SimError::Stalled {
                    at: self.world.now() - Instant::ZERO,
                    what: format!(
                        "client has {} bytes of the response",
                        self.client.response.len()
                    ),
                });
            };
            if next > limit {
                return Err(SimError::TimeLimit);
            }
            self.world.advance_to(next);
            self.client.handle_timeout(self.world.now());
        }
    }

    /// What the run produced.
    pub fn report(&self) -> Report {
        let c = &self.client;
        let body = c
            .head_len
            .map(|h| c.response[h.min(c.response.len())..].to_vec())
            .unwrap_or_default();
        let mut seen: Vec<(String, BTreeSet<String>)> = self
            .path
            .iter()
            .map(|&r| {
                (
                    self.world.relay_name(r).to_owned(),
                    self.world.relay_seen(r).clone(),
                )
            })
            .collect();
        // The web server sees the exits that opened a connection to it.
        let web: BTreeSet<String> = self
            .path
            .iter()
            .filter(|&&r| self.world.relay_stats(r).exit_streams > 0)
            .map(|&r| self.world.relay_addr(r).ip().to_string())
            .collect();
        seen.push((WEB.to_owned(), web));
        Report {
            story: self.world.story().to_vec(),
            status_line: c.status_line.clone(),
            expected_body: web::expected_body(self.cfg.seed, self.cfg.response_len),
            body,
            transfer_time: match (c.request_sent, c.last_byte) {
                (Some(a), Some(b)) => b - a,
                _ => Duration::ZERO,
            },
            total_time: self.freed.unwrap_or(self.world.now()) - Instant::ZERO,
            client_stats: c
                .bare
                .circ
                .as_ref()
                .map_or(c.stats, |(_, circ)| circ.stats()),
            path: self
                .path
                .iter()
                .map(|&r| {
                    (
                        self.world.relay_name(r).to_owned(),
                        self.world.relay_addr(r),
                    )
                })
                .collect(),
            seen,
            link_bytes: self.world.link_bytes(),
        }
    }
}

impl Client {
    fn log(&self, world: &mut World, text: impl FnOnce() -> String) {
        if world.config().story {
            world.log("client", text());
        }
    }

    fn fail(&mut self, why: impl Into<String>) {
        if self.failure.is_none() {
            self.failure = Some(why.into());
        }
    }

    /// The channel's and the circuit's next timer, while the client is not done.
    fn next_time(&self) -> Option<Instant> {
        if self.done.is_some() {
            return None;
        }
        self.bare.next_time()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.done.is_none() {
            self.bare.handle_timeout(now);
        }
    }

    /// Move what can move: the world's events for our connection, the channel's events, the
    /// circuit's cells and events, our bytes onto the connection. Whether anything moved.
    fn step(&mut self, world: &mut World) -> bool {
        let now = world.now();
        let mut moved = false;
        while let Some(ev) = world.poll_event() {
            moved = true;
            match ev {
                NetEvent::Connected { link, cert_sha256 } if Some(link) == self.link => {
                    let first = &self.path[0];
                    let expected = PeerIds {
                        rsa: Some(first.rsa_id),
                        ed25519: first.ed_id,
                    };
                    self.bare
                        .connected(now, world.wall(), expected, cert_sha256);
                    let name = &self.names[0];
                    self.log(world, || {
                        format!("TCP and TLS up with {name}: VERSIONS sent (link handshake, tor-spec §4)")
                    });
                }
                NetEvent::Data { link, bytes } if Some(link) == self.link => {
                    if let Err(e) = self.bare.received(now, &bytes, INBOUND_LIMIT) {
                        self.fail(format!("the first hop's bytes: {e}"));
                    }
                }
                NetEvent::Closed { link } if Some(link) == self.link && self.done.is_none() => {
                    self.fail("the connection to the first hop closed");
                }
                _ => {}
            }
        }
        moved |= self.bare.feed(now);
        moved |= self.chan_events(world, now);
        moved |= self.circ_step(world, now);
        if let Some(link) = self.link {
            if let Some(out) = self.bare.transmit() {
                moved = true;
                world.send(link, out);
            }
        }
        moved
    }

    fn chan_events(&mut self, world: &mut World, now: Instant) -> bool {
        let mut moved = false;
        while let Some(ev) = self.bare.poll_chan_event(now) {
            moved = true;
            match ev {
                ChanEvent::Open(o) => {
                    let kind = self.first_hop;
                    let created = self.bare.create(
                        CircConfig::default(),
                        &self.path[0],
                        kind,
                        now,
                        &mut self.rng,
                    );
                    let id = match created {
                        Ok(id) => id,
                        Err(e) => {
                            self.fail(e);
                            return true;
                        }
                    };
                    let name = &self.names[0];
                    self.log(world, || {
                        format!(
                            "channel to {name} open (link protocol {}, its RSA and Ed25519 identities proved by CERTS); {} ({}) on circuit {:#x}",
                            o.link_version,
                            if kind == HandshakeKind::CreateFast { "CREATE_FAST" } else { "CREATE2" },
                            kind_name(kind),
                            id.get()
                        )
                    });
                }
                ChanEvent::CircuitKilled { reason, .. } => {
                    self.fail(format!("the channel killed the circuit: {reason}"))
                }
                ChanEvent::Closed(e) if self.done.is_none() => {
                    self.fail(format!("channel closed: {e}"));
                }
                _ => {}
            }
        }
        moved
    }

    fn circ_step(&mut self, world: &mut World, now: Instant) -> bool {
        let mut moved = false;
        loop {
            let (sent, err) = self.bare.send_cells(&mut self.rng);
            moved |= sent;
            if let Some(e) = err {
                self.fail(e);
            }
            let Some(ev) = self.bare.circ.as_mut().and_then(|(_, c)| c.poll_event()) else {
                return moved;
            };
            moved = true;
            self.circ_event(world, now, ev);
        }
    }

    fn circ_event(&mut self, world: &mut World, now: Instant, ev: CircEvent) {
        let n = self.path.len();
        let Some((_, circ)) = &mut self.bare.circ else {
            return;
        };
        match ev {
            CircEvent::HopAdded { hops } if hops < n => {
                let next = &self.path[hops];
                if let Err(e) = circ.extend(next, now, &mut self.rng) {
                    self.fail(format!("extend: {e}"));
                    return;
                }
                let (added, to) = (&self.names[hops - 1], &self.names[hops]);
                let how = match (hops, self.first_hop) {
                    (1, HandshakeKind::CreateFast) => "CREATED_FAST",
                    (1, _) => "CREATED2",
                    _ => "EXTENDED2",
                };
                let kind = if next.ntor_v3 { "ntor-v3" } else { "ntor" };
                self.log(world, || {
                    format!("hop {hops} ({added}) added ({how}); EXTEND2 ({kind}) to {to} in a RELAY_EARLY cell")
                });
            }
            CircEvent::HopAdded { hops } => {
                let r = circ.begin(WEB_HOST, 80, BeginFlags::default(), now);
                let (last, path) = (&self.names[hops - 1], self.names.join(" -> "));
                match r {
                    Ok(s) => {
                        self.stream = Some(s);
                        self.log(world, || {
                            format!("hop {hops} ({last}) added: circuit {path} built; stream {s}: BEGIN {WEB_HOST}:80 to the exit")
                        });
                    }
                    Err(e) => self.fail(format!("begin: {e}")),
                }
            }
            CircEvent::StreamConnected { stream, addr } => {
                let a = addr.map_or("?".to_owned(), |(ip, _)| ip.to_string());
                let req = format!(
                    "GET /{} HTTP/1.0\r\nHost: {WEB_HOST}\r\nUser-Agent: onion-sim\r\n\r\n",
                    self.response_len
                );
                match circ.send(stream, req.as_bytes()) {
                    Ok(_) => {
                        self.request_sent = Some(now);
                        let len = self.response_len;
                        self.log(world, || {
                            format!("stream {stream}: CONNECTED (the exit reached {a}); sent HTTP request \"GET /{len}\"")
                        });
                    }
                    Err(e) => self.fail(format!("send: {e}")),
                }
            }
            CircEvent::Stream(StreamEvent::Data { data, .. }) => {
                self.response.extend_from_slice(&data);
                self.last_byte = Some(now);
                if self.head_len.is_none() {
                    if let Some(p) = self.response.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&self.response[..p]).into_owned();
                        self.head_len = Some(p + 4);
                        self.status_line = head.lines().next().unwrap_or("").to_owned();
                        let announced: u64 = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("Content-Length: ")
                                    .and_then(|v| v.trim().parse().ok())
                            })
                            .unwrap_or(0);
                        self.response
                            .reserve(usize::try_from(announced.min(web::MAX_BODY)).unwrap_or(0));
                        let status = self.status_line.clone();
                        self.log(world, || {
                            format!("response head: \"{status}\", {announced} body bytes announced")
                        });
                    }
                }
            }
            CircEvent::Stream(StreamEvent::Ended { stream, reason }) => {
                let got = self
                    .head_len
                    .map_or(0, |h| self.response.len().saturating_sub(h));
                circ.destroy();
                self.stats = circ.stats();
                let stats = self.stats;
                self.done = Some(now);
                self.log(world, || {
                    format!("stream {stream}: RELAY_END from the exit, reason {reason:?}; {got} body bytes received")
                });
                self.log(world, || {
                    format!(
                        "tearing the circuit down (DESTROY). Flow control: {} DATA cells received, {} circuit SENDMEs (v1, authenticated) and {} stream SENDMEs sent",
                        stats.data_cells_received, stats.circ_sendmes_sent, stats.stream_sendmes_sent
                    )
                });
            }
            CircEvent::Closed {
                remote_reason,
                error,
            } if self.done.is_none() => {
                self.fail(format!(
                    "circuit closed: remote {remote_reason:?}, error {error:?}"
                ));
            }
            CircEvent::Truncated { hops, reason } => {
                self.fail(format!("truncated to {hops} hops: {reason:?}"));
            }
            _ => {}
        }
    }
}
