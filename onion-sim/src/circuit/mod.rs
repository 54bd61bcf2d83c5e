//! A deterministic, in-memory Tor network: a client, relays (guard, middle, exit) and a
//! destination web server in one process, with virtual time and a seeded RNG.
//!
//! Every party runs the real state machines of onion-circuit: [`Channel`](onion_circuit::channel::Channel)s (link handshake with
//! real certificates, cells encoded to bytes), client [`Circuit`](onion_circuit::circuit::Circuit)s and
//! [`RelayCircuit`](onion_circuit::relay::RelayCircuit)s (real
//! ntor / ntor-v3 handshakes, tor1 layers, SENDME flow control). Only the transport is
//! simulated: the bytes a channel writes travel on an in-memory link (no TLS; the TLS
//! certificate digest the link certificates bind to is a per-link random value) that delays
//! them by a latency plus the time the link's bandwidth needs to carry them.
//!
//! [`run`] plays the main scenario: the client opens a channel to the guard, builds a circuit
//! hop by hop (CREATE2, then EXTEND2 through the guard and the middle), opens a stream to
//! `www.example.com:80` through the exit, sends an HTTP request, receives the response (large
//! enough that circuit and stream SENDMEs flow), and the web server closes the connection
//! (RELAY_END DONE), after which the client tears the circuit down (DESTROY). The [`Report`]
//! holds a story line for every significant step of every party, the body received, the
//! flow-control counters, and the addresses each party saw, so that tests can check that each
//! relay knows only its neighbours.
//!
//! The network is built from parts that other scenarios reuse ([`crate::cc`] runs its
//! congestion-control experiment on them):
//!
//! * [`net`]: the network itself ([`net::Net`]): relays with their channels and relay
//!   circuits, client parties with their channels and circuits, in-memory links, virtual time,
//!   one seeded RNG, the story; relays get their edge behaviour from [`net::Edge`] handlers;
//! * [`exit`]: the exit handler (BEGIN to the web server over simulated TCP, RESOLVE);
//! * [`dir`]: the BEGIN_DIR handler, answering with a pluggable [`dir::DirService`];
//! * [`web`]: the web server; [`wired`]: circuits wired cell by cell without channels.
//!
//! [`Sim`] is the scenario above: a [`net::Net`] with one party (the client, whose
//! [`net::Driver`] acts on its circuit's events) and one [`exit::Exit`].

pub mod dir;
pub mod exit;
pub mod net;
pub mod web;
pub mod wired;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use onion_cell::relaymsg::BeginFlags;

use onion_circuit::circuit::{CircEvent, HandshakeKind};
use onion_circuit::flow::FlowStats;
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;

use self::exit::{Exit, WEB};
use self::net::{CircRef, Driver, Net, NetConfig};

/// The destination's hostname, resolved by the exit's (simulated) DNS.
pub const WEB_HOST: &str = "www.example.com";
/// The destination's address.
pub const WEB_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
/// The client's address (what its guard sees).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// Settings of a simulated run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the one RNG every party draws from (keys, handshakes, padding).
    pub seed: u64,
    /// Number of relays in the circuit (the last one is the exit); at least 1.
    pub hops: usize,
    /// Size of the HTTP response body the client asks for.
    pub response_len: u64,
    /// One-way delay of every link.
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
    /// The party ("client", "guard", "middle", "exit", "web", or "relayN").
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
    /// Virtual time of the whole run (channel set-up to the last DESTROY).
    pub total_time: Duration,
    /// The client's flow-control counters.
    pub client_stats: FlowStats,
    /// The exit's flow-control counters.
    pub exit_stats: FlowStats,
    /// For each party, the network addresses (and hostnames) it saw.
    pub seen: Vec<(String, BTreeSet<String>)>,
    /// Bytes that crossed the channel links, in both directions, for the record.
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

/// The client of the main scenario: what it does with its circuit's events.
#[derive(Debug, Default)]
struct Client {
    response_len: u64,
    circ: Option<CircRef>,
    stream: Option<StreamId>,
    request_sent: Option<Instant>,
    last_byte: Option<Instant>,
    response: Vec<u8>,
    head_len: Option<usize>,
    content_len: Option<u64>,
    status_line: String,
    stats: FlowStats,
    done: bool,
}

/// The main scenario's network: a client party, `hops` relays (the last one an exit) and the
/// web server behind the exit.
pub struct Sim {
    cfg: SimConfig,
    net: Net,
    party: usize,
    path: Vec<usize>,
    client: Client,
}

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("net", &self.net)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

fn relay_name(i: usize, n: usize) -> String {
    match (i, n) {
        (0, 1) => "exit".into(),
        (0, _) => "guard".into(),
        (i, n) if i + 1 == n => "exit".into(),
        (1, 3) => "middle".into(),
        (i, _) => format!("relay{}", i + 1),
    }
}

impl Sim {
    /// Create the parties (keys, certificates, addresses) without starting anything.
    pub fn new(cfg: SimConfig) -> Result<Sim, SimError> {
        let n = cfg.hops.max(1);
        let mut net = Net::new(NetConfig {
            seed: cfg.seed,
            latency: cfg.latency,
            bandwidth: cfg.bandwidth,
            story: cfg.story,
        });
        let mut path = Vec::with_capacity(n);
        for i in 0..n {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)), 9001);
            path.push(net.add_relay(&relay_name(i, n), addr)?);
        }
        let exit = path[n - 1];
        net.add_edge(exit, Box::new(Exit::new(cfg.seed)));
        let party = net.add_party("client", IpAddr::V4(CLIENT_ADDR));
        Ok(Sim {
            client: Client {
                response_len: cfg.response_len,
                ..Client::default()
            },
            cfg,
            net,
            party,
            path,
        })
    }

    /// The network, for a closer look.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Start: the client connects to its guard and will build its circuit when the channel
    /// is open.
    pub fn start(&mut self) -> Result<(), SimError> {
        let at = self
            .net
            .build_circuit(self.party, &self.path, self.cfg.first_hop)?;
        self.client.circ = Some(at);
        Ok(())
    }

    /// Run until the client has finished and the network is quiet.
    pub fn run_to_end(&mut self) -> Result<(), SimError> {
        self.start()?;
        let limit = Instant::ZERO + Duration::from_secs(3600);
        loop {
            self.net.pump(&mut self.client);
            if let Some(f) = self.net.party_failure(self.party) {
                return Err(SimError::Circuit(f.to_owned()));
            }
            let next = self.net.next_time(&self.client);
            if self.client.done && next.is_none() {
                return Ok(());
            }
            let Some(next) = next else {
                let circ = self.client.circ.and_then(|c| self.net.circuit(c));
                return Err(SimError::Stalled {
                    at: self.net.elapsed(),
                    what: format!(
                        "client has {} of the response, circuit {circ:?}",
                        self.client.response.len(),
                    ),
                });
            };
            if next > limit {
                return Err(SimError::TimeLimit);
            }
            self.net.advance_to(next, &mut self.client);
        }
    }

    /// What the run produced.
    pub fn report(&self) -> Report {
        let c = &self.client;
        let body = c
            .head_len
            .map(|h| c.response[h.min(c.response.len())..].to_vec())
            .unwrap_or_default();
        let mut seen = Vec::new();
        for r in 0..self.net.n_relays() {
            seen.push((
                self.net.relay_name(r).to_owned(),
                self.net.relay_seen(r).clone(),
            ));
        }
        seen.push((
            WEB.to_owned(),
            self.net.other_seen(WEB).cloned().unwrap_or_default(),
        ));
        let exit = self.path[self.path.len() - 1];
        Report {
            story: self.net.story().to_vec(),
            status_line: c.status_line.clone(),
            expected_body: web::expected_body(self.cfg.seed, self.cfg.response_len),
            body,
            transfer_time: match (c.request_sent, c.last_byte) {
                (Some(a), Some(b)) => b - a,
                _ => Duration::ZERO,
            },
            total_time: self.net.elapsed(),
            client_stats: c
                .circ
                .and_then(|at| self.net.circuit(at))
                .map_or(c.stats, |circ| circ.stats()),
            exit_stats: self.net.relay_stats(exit).unwrap_or_default(),
            seen,
            link_bytes: self.net.link_bytes(),
        }
    }
}

impl Client {
    fn body_len(&self) -> usize {
        self.head_len
            .map_or(0, |h| self.response.len().saturating_sub(h))
    }
}

impl Driver for Client {
    fn circ_event(&mut self, net: &mut Net, at: CircRef, ev: CircEvent) {
        let now = net.now();
        match ev {
            CircEvent::HopAdded { .. } => {
                // Built: open the stream to the web server through the exit.
                let r = net
                    .circuit_mut(at)
                    .map(|c| c.begin(WEB_HOST, 80, BeginFlags::default(), now));
                match r {
                    Some(Ok(s)) => {
                        self.stream = Some(s);
                        net.log_party(
                            at.party,
                            format!("stream {s}: BEGIN {WEB_HOST}:80 to the exit"),
                        );
                    }
                    Some(Err(e)) => net.fail_party(at.party, e.to_string()),
                    None => {}
                }
            }
            CircEvent::StreamConnected { stream, addr } => {
                let a = addr.map_or("?".to_owned(), |(ip, _)| ip.to_string());
                net.log_party(
                    at.party,
                    format!("stream {stream}: CONNECTED (exit reached {a})"),
                );
                let req = format!(
                    "GET /{} HTTP/1.0\r\nHost: {WEB_HOST}\r\nUser-Agent: onion-sim\r\n\r\n",
                    self.response_len
                );
                if let Some(c) = net.circuit_mut(at) {
                    match c.send(stream, req.as_bytes()) {
                        Ok(_) => {
                            self.request_sent = Some(now);
                            net.log_party(
                                at.party,
                                format!(
                                    "stream {stream}: sent HTTP request \"GET /{}\"",
                                    self.response_len
                                ),
                            );
                        }
                        Err(e) => net.fail_party(at.party, e.to_string()),
                    }
                }
            }
            CircEvent::Data { data, .. } => {
                self.response.extend_from_slice(&data);
                self.last_byte = Some(now);
                if self.head_len.is_none() {
                    if let Some(p) = self.response.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&self.response[..p]).into_owned();
                        self.head_len = Some(p + 4);
                        self.status_line = head.lines().next().unwrap_or("").to_owned();
                        self.content_len = head.lines().find_map(|l| {
                            l.strip_prefix("Content-Length: ")
                                .and_then(|v| v.trim().parse().ok())
                        });
                        if let Some(n) = self.content_len {
                            let n = usize::try_from(n.min(web::MAX_BODY)).unwrap_or(0);
                            self.response.reserve(n);
                        }
                        net.log_party(
                            at.party,
                            format!(
                                "response head: \"{}\", {} body bytes announced",
                                self.status_line,
                                self.content_len.unwrap_or(0)
                            ),
                        );
                    }
                }
            }
            CircEvent::StreamEnded { stream, reason } => {
                let got = self.body_len();
                net.log_party(
                    at.party,
                    format!("stream {stream}: RELAY_END from the exit, reason {reason:?}; {got} body bytes received"),
                );
                if let Some(c) = net.circuit_mut(at) {
                    c.destroy();
                    self.stats = c.stats();
                }
                let stats = self.stats;
                net.log_party(
                    at.party,
                    format!(
                        "tearing the circuit down (DESTROY). Flow control: {} DATA cells received, {} circuit SENDMEs (v1, authenticated) and {} stream SENDMEs sent",
                        stats.data_cells_received, stats.circ_sendmes_sent, stats.stream_sendmes_sent
                    ),
                );
                self.done = true;
            }
            CircEvent::Closed {
                remote_reason,
                error,
            } if !self.done => {
                net.fail_party(
                    at.party,
                    format!("circuit closed: remote {remote_reason:?}, error {error:?}"),
                );
            }
            CircEvent::Truncated { hops, reason } => {
                net.fail_party(at.party, format!("truncated to {hops} hops: {reason:?}"));
            }
            _ => {}
        }
    }

    fn chan_closed(&mut self, net: &mut Net, party: usize, error: String) {
        if !self.done {
            net.fail_party(party, format!("channel closed: {error}"));
        }
    }

    /// While the client is not done, its channel and circuit timers count.
    fn next_time(&self, net: &Net) -> Option<Instant> {
        if self.done {
            None
        } else {
            self.circ.and_then(|at| net.party_timeout(at.party))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::net::{Endpoint, Who};
    use super::*;
    use onion_cell::chancell::{ChanMsg, DestroyReason, RelayPayload};
    use onion_cell::CircId;
    use rand_chacha::rand_core::RngCore;

    fn finished() -> Sim {
        let mut sim = Sim::new(SimConfig {
            response_len: 1000,
            story: false,
            ..SimConfig::default()
        })
        .expect("setup");
        sim.run_to_end().expect("run");
        sim
    }

    /// tor-spec §5.5.1: a RELAY cell for a circuit the relay does not know is dropped.
    #[test]
    fn cell_for_an_unknown_circuit_is_dropped() {
        let mut sim = finished();
        let before = sim.net.relays[0].circs.iter().flatten().count();
        let id = CircId::new(0x1234_5678);
        let junk = ChanMsg::Relay(RelayPayload::Owned(Box::new([7; 509])));
        sim.net.relay_circ_cell(0, 0, id, junk);
        sim.net
            .relay_circ_cell(0, 0, id, ChanMsg::Destroy(DestroyReason::NONE));
        sim.net.pump(&mut sim.client);
        assert_eq!(sim.net.relays[0].circs.iter().flatten().count(), before);
        assert!(sim.net.relays[0].by_client.is_empty());
    }

    /// A peer sending garbage bytes on an open channel: nothing panics and no circuit
    /// appears (the channel drops or refuses what it cannot use).
    #[test]
    fn garbage_on_a_channel() {
        let mut sim = finished();
        let ep = Endpoint {
            who: Who::Relay(0),
            chan: 0,
        };
        let mut junk = vec![0u8; 5140];
        sim.net.rng.fill_bytes(&mut junk);
        sim.net.feed(ep, &junk, &mut sim.client);
        sim.net.pump(&mut sim.client);
        assert!(sim.net.relays[0].circs.iter().flatten().next().is_none());
    }
}
