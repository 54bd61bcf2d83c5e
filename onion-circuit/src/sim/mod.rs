//! A deterministic, in-memory Tor network: a client, relays (guard, middle, exit) and a
//! destination web server in one process, with virtual time and a seeded RNG.
//!
//! Every party runs the real state machines of this crate: [`Channel`]s (link handshake with
//! real certificates, cells encoded to bytes), client [`Circuit`]s and [`RelayCircuit`]s (real
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
//! The module is public so that `onion sim` and onion-hs tests can reuse it; the parties are
//! kept in plain structs so that more kinds (onion services, introduction and rendezvous
//! points) can be added next to them.

pub mod web;
pub mod wired;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_cell::chancell::{ChanMsg, DestroyReason};
use onion_cell::relaymsg::{BeginFlags, EndReason, ResolvedAnswer, ResolvedValue};
use onion_cell::CircId;
use onion_crypto::keys::NtorSecretKey;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::channel::{ChanConfig, ChanEvent, Channel, PeerIds, RelayLinkKeys};
use crate::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use crate::flow::FlowStats;
use crate::relay::{RelayCircuit, RelayEvent, RelayKeys, RelayOutput};
use crate::stream::StreamId;
use crate::Instant;

use self::web::WebConn;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Client,
    Relay(usize),
}

#[derive(Debug, Clone, Copy)]
struct Endpoint {
    who: Who,
    chan: usize,
}

#[derive(Debug, Default)]
struct Pipe {
    q: VecDeque<(Instant, Vec<u8>)>,
    free_at: Instant,
}

impl Pipe {
    fn push(&mut self, now: Instant, bytes: Vec<u8>, latency: Duration, bandwidth: u64) {
        let start = self.free_at.max(now);
        let tx = if bandwidth == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(
                (bytes.len() as u64).saturating_mul(1_000_000_000) / bandwidth.max(1),
            )
        };
        self.free_at = start + tx;
        self.q.push_back((self.free_at + latency, bytes));
    }
}

/// A bidirectional in-memory connection; `pipes[i]` carries bytes toward `ends[i]`.
struct Link {
    ends: [Endpoint; 2],
    pipes: [Pipe; 2],
}

struct ChanSlot {
    chan: Channel,
    side: usize,
    peer_addr: IpAddr,
    peer_name: String,
    /// Circuits waiting for this channel to open to send their CREATE2: (circuit, CREATE2).
    waiting: Vec<(usize, ChanMsg<'static>)>,
}

struct ClientParty {
    chans: Vec<ChanSlot>,
    circ: Option<Circuit>,
    circ_id: Option<CircId>,
    path: Vec<HopTarget>,
    names: Vec<String>,
    stream: Option<StreamId>,
    request_sent: Option<Instant>,
    last_byte: Option<Instant>,
    response: Vec<u8>,
    head_len: Option<usize>,
    content_len: Option<u64>,
    status_line: String,
    done: bool,
    failed: Option<String>,
}

/// (channel index, circuit id) -> relay circuit index. The keys are ours (ids the channels
/// accepted), so a fast multiplicative hash is enough; SipHash showed up in profiles.
type CircMap = HashMap<(usize, CircId), usize, BuildHasherDefault<MulHasher>>;

/// A multiply-rotate hasher for small integer keys.
#[derive(Default)]
struct MulHasher(u64);

impl Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

struct RCirc {
    circ: RelayCircuit,
    client: (usize, CircId),
    next: Option<(usize, CircId)>,
}

struct RelayParty {
    name: String,
    addr: SocketAddr,
    link_keys: RelayLinkKeys,
    keys: RelayKeys,
    exit: bool,
    chans: Vec<ChanSlot>,
    circs: Vec<Option<RCirc>>,
    by_client: CircMap,
    by_next: CircMap,
    seen: BTreeSet<String>,
}

/// An exit's TCP connection to the web server.
struct Tcp {
    relay: usize,
    circ: usize,
    stream: StreamId,
    web: WebConn,
    connect_at: Option<Instant>,
    to_web: Pipe,
    to_exit: Pipe,
    /// Bytes arrived at the exit but not yet packaged (windows closed).
    exit_buf: Vec<u8>,
    in_flight: usize,
    closed: bool,
}

/// The whole network.
pub struct Sim {
    cfg: SimConfig,
    now: Instant,
    rng: ChaCha20Rng,
    client: ClientParty,
    relays: Vec<RelayParty>,
    links: Vec<Link>,
    tcps: Vec<Tcp>,
    story: Vec<StoryLine>,
    web_seen: BTreeSet<String>,
    link_bytes: u64,
    exit_stats: FlowStats,
    /// Delivered byte buffers, kept for reuse: a channel's output buffer is swapped with one
    /// of these, so it keeps its capacity instead of growing from zero for every flush.
    pool: Vec<Vec<u8>>,
    /// Scratch buffer for a relay circuit's outputs.
    outs: Vec<RelayOutput>,
}

fn wall(now: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000) + Duration::from_nanos(now.as_nanos())
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

fn short(id: &[u8]) -> String {
    id.iter().take(4).map(|b| format!("{b:02X}")).collect()
}

/// Run the main scenario with `cfg`.
pub fn run(cfg: SimConfig) -> Result<Report, SimError> {
    let mut sim = Sim::new(cfg)?;
    sim.run_to_end()?;
    Ok(sim.report())
}

impl Sim {
    /// Create the parties (keys, certificates, addresses) without starting anything.
    pub fn new(cfg: SimConfig) -> Result<Sim, SimError> {
        let n = cfg.hops.max(1);
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        let now = Instant::ZERO;
        let mut relays = Vec::with_capacity(n);
        let mut path = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            let link_keys = RelayLinkKeys::generate(&mut rng, wall(now))
                .map_err(|e| SimError::Setup(e.to_string()))?;
            let ids = link_keys.ids();
            let (Some(rsa_id), Some(ed_id)) = (ids.rsa, ids.ed25519) else {
                return Err(SimError::Setup("relay keys without identities".into()));
            };
            let ntor = NtorSecretKey::generate(&mut rng);
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)), 9001);
            let name = relay_name(i, n);
            path.push(HopTarget {
                rsa_id,
                ed_id: Some(ed_id),
                ntor_key: *ntor.public(),
                addrs: vec![addr],
                ntor_v3: true,
            });
            names.push(name.clone());
            relays.push(RelayParty {
                name,
                addr,
                keys: RelayKeys {
                    rsa_id,
                    ed_id,
                    ntor_keys: vec![ntor],
                },
                link_keys,
                exit: i + 1 == n,
                chans: Vec::new(),
                circs: Vec::new(),
                by_client: CircMap::default(),
                by_next: CircMap::default(),
                seen: BTreeSet::new(),
            });
        }
        Ok(Sim {
            now,
            rng,
            client: ClientParty {
                chans: Vec::new(),
                circ: None,
                circ_id: None,
                path,
                names,
                stream: None,
                request_sent: None,
                last_byte: None,
                response: Vec::new(),
                head_len: None,
                content_len: None,
                status_line: String::new(),
                done: false,
                failed: None,
            },
            relays,
            links: Vec::new(),
            tcps: Vec::new(),
            story: Vec::new(),
            web_seen: BTreeSet::new(),
            link_bytes: 0,
            exit_stats: FlowStats::default(),
            pool: Vec::new(),
            outs: Vec::new(),
            cfg,
        })
    }

    fn log(&mut self, party: &str, text: impl Into<String>) {
        if self.cfg.story {
            self.story.push(StoryLine {
                at: self.now - Instant::ZERO,
                party: party.to_owned(),
                text: text.into(),
            });
        }
    }

    /// Open a link from `from` to relay `to`: an initiator channel at `from` expecting
    /// `expected`, a responder channel at the relay. Returns the initiator's channel index.
    fn connect(&mut self, from: Who, to: usize, expected: PeerIds) -> Result<usize, SimError> {
        let mut digest = [0u8; 32];
        self.rng.fill_bytes(&mut digest);
        let (from_addr, from_name) = match from {
            Who::Client => (IpAddr::V4(CLIENT_ADDR), "client".to_owned()),
            Who::Relay(r) => (self.relays[r].addr.ip(), self.relays[r].name.clone()),
        };
        let to_addr = self.relays[to].addr;
        let certs = self.relays[to]
            .link_keys
            .responder_certs(&digest, wall(self.now))
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let rcfg = ChanConfig {
            peer_addr: Some(from_addr),
            my_addrs: vec![to_addr.ip()],
            ..ChanConfig::default()
        };
        let responder = Channel::responder(rcfg, &certs, self.now, wall(self.now), &mut self.rng);
        let icfg = ChanConfig {
            peer_addr: Some(to_addr.ip()),
            ..ChanConfig::default()
        };
        let initiator = Channel::initiator(icfg, expected, Some(digest), self.now, wall(self.now));
        let to_name = self.relays[to].name.clone();
        let from_chans = match from {
            Who::Client => &mut self.client.chans,
            Who::Relay(r) => &mut self.relays[r].chans,
        };
        let ic = from_chans.len();
        from_chans.push(ChanSlot {
            chan: initiator,
            side: 0,
            peer_addr: to_addr.ip(),
            peer_name: to_name,
            waiting: Vec::new(),
        });
        let rc = self.relays[to].chans.len();
        self.relays[to].chans.push(ChanSlot {
            chan: responder,
            side: 1,
            peer_addr: from_addr,
            peer_name: from_name,
            waiting: Vec::new(),
        });
        self.relays[to].seen.insert(from_addr.to_string());
        if let Who::Relay(r) = from {
            self.relays[r].seen.insert(to_addr.to_string());
        }
        self.links.push(Link {
            ends: [
                Endpoint {
                    who: from,
                    chan: ic,
                },
                Endpoint {
                    who: Who::Relay(to),
                    chan: rc,
                },
            ],
            pipes: [Pipe::default(), Pipe::default()],
        });
        Ok(ic)
    }

    fn slot(&mut self, ep: Endpoint) -> &mut ChanSlot {
        match ep.who {
            Who::Client => &mut self.client.chans[ep.chan],
            Who::Relay(r) => &mut self.relays[r].chans[ep.chan],
        }
    }

    /// Start: the client connects to its guard.
    pub fn start(&mut self) -> Result<(), SimError> {
        let guard = &self.client.path[0];
        let expected = PeerIds {
            rsa: Some(guard.rsa_id),
            ed25519: guard.ed_id,
        };
        let name = self.client.names[0].clone();
        let addr = self.relays[0].addr;
        self.log(
            "client",
            format!(
                "opening a channel to the {name} at {addr} (link handshake over in-memory TCP)"
            ),
        );
        self.connect(Who::Client, 0, expected)?;
        Ok(())
    }

    /// Run until the client has finished and the network is quiet.
    pub fn run_to_end(&mut self) -> Result<(), SimError> {
        self.start()?;
        let limit = Instant::ZERO + Duration::from_secs(3600);
        loop {
            self.pump();
            if let Some(f) = &self.client.failed {
                return Err(SimError::Circuit(f.clone()));
            }
            let next = self.next_time();
            if self.client.done && next.is_none() {
                return Ok(());
            }
            let Some(next) = next else {
                return Err(SimError::Stalled {
                    at: self.now - Instant::ZERO,
                    what: format!(
                        "client has {} of the response, circuit {:?}",
                        self.client.response.len(),
                        self.client.circ
                    ),
                });
            };
            if next > limit {
                return Err(SimError::TimeLimit);
            }
            self.now = self.now.max(next);
            self.deliver_due();
            self.timeouts();
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for l in &self.links {
            for p in &l.pipes {
                consider(p.q.front().map(|(at, _)| *at));
            }
        }
        for tcp in &self.tcps {
            consider(tcp.connect_at);
            consider(tcp.to_web.q.front().map(|(at, _)| *at));
            consider(tcp.to_exit.q.front().map(|(at, _)| *at));
        }
        if !self.client.done {
            for s in &self.client.chans {
                consider(s.chan.poll_timeout());
            }
            if let Some(c) = &self.client.circ {
                consider(c.poll_timeout());
            }
        }
        t
    }

    fn timeouts(&mut self) {
        let now = self.now;
        for s in &mut self.client.chans {
            if s.chan.poll_timeout().is_some_and(|t| t <= now) {
                s.chan.handle_timeout(now);
            }
        }
        for r in &mut self.relays {
            for s in &mut r.chans {
                if s.chan.poll_timeout().is_some_and(|t| t <= now) {
                    s.chan.handle_timeout(now);
                }
            }
        }
        if let Some(c) = &mut self.client.circ {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                let _ = c.handle_timeout(now);
            }
        }
    }

    /// Deliver every byte chunk and TCP event due at `now`.
    fn deliver_due(&mut self) {
        let now = self.now;
        for li in 0..self.links.len() {
            for side in 0..2 {
                while self.links[li].pipes[side]
                    .q
                    .front()
                    .is_some_and(|(at, _)| *at <= now)
                {
                    let Some((_, mut bytes)) = self.links[li].pipes[side].q.pop_front() else {
                        break;
                    };
                    let ep = self.links[li].ends[side];
                    self.feed(ep, &bytes);
                    if self.pool.len() < 16 && bytes.capacity() <= 1 << 20 {
                        bytes.clear();
                        self.pool.push(bytes);
                    }
                }
            }
        }
        for ti in 0..self.tcps.len() {
            if self.tcps[ti].connect_at.is_some_and(|t| t <= now) {
                self.tcps[ti].connect_at = None;
                self.tcp_connected(ti);
            }
            while self.tcps[ti]
                .to_web
                .q
                .front()
                .is_some_and(|(at, _)| *at <= now)
            {
                let Some((_, bytes)) = self.tcps[ti].to_web.q.pop_front() else {
                    break;
                };
                if let Some(line) = self.tcps[ti].web.handle_input(&bytes) {
                    let from = self.relays[self.tcps[ti].relay].addr.ip();
                    self.log("web", format!("request from {from}: \"{line}\""));
                }
            }
            while self.tcps[ti]
                .to_exit
                .q
                .front()
                .is_some_and(|(at, _)| *at <= now)
            {
                let Some((_, bytes)) = self.tcps[ti].to_exit.q.pop_front() else {
                    break;
                };
                let t = &mut self.tcps[ti];
                t.in_flight = t.in_flight.saturating_sub(bytes.len());
                // Package straight from the arriving chunk when nothing is waiting before it.
                let mut used = 0;
                if t.exit_buf.is_empty() && !t.closed {
                    if let Some(rc) = self.relays[t.relay]
                        .circs
                        .get_mut(t.circ)
                        .and_then(Option::as_mut)
                    {
                        used = rc.circ.send(t.stream, &bytes).unwrap_or(0);
                    }
                }
                t.exit_buf.extend_from_slice(&bytes[used..]);
            }
        }
    }

    /// Give bytes to a channel, handling its events as they come.
    fn feed(&mut self, ep: Endpoint, bytes: &[u8]) {
        self.link_bytes += bytes.len() as u64;
        let mut off = 0;
        while off < bytes.len() {
            let now = self.now;
            let r = self.slot(ep).chan.handle_input(now, &bytes[off..]);
            let n = match r {
                Ok(n) => n,
                Err(_) => {
                    self.chan_events(ep);
                    return;
                }
            };
            off += n;
            let had = self.chan_events(ep);
            if n == 0 && !had {
                // The channel refuses input without telling why: drop the rest.
                return;
            }
        }
        self.chan_events(ep);
    }

    /// Everything that is ready now, until nothing moves.
    fn pump(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            moved |= self.client_step();
            for r in 0..self.relays.len() {
                for c in 0..self.relays[r].chans.len() {
                    moved |= self.chan_events(Endpoint {
                        who: Who::Relay(r),
                        chan: c,
                    });
                }
                for i in 0..self.relays[r].circs.len() {
                    moved |= self.relay_circ_step(r, i);
                }
            }
            moved |= self.tcp_step();
            self.flush_links();
            if !moved {
                return;
            }
        }
    }

    fn flush_links(&mut self) {
        let (now, lat, bw) = (self.now, self.cfg.latency, self.cfg.bandwidth);
        for li in 0..self.links.len() {
            for side in 0..2 {
                let ep = self.links[li].ends[side];
                let mut out = self.pool.pop().unwrap_or_default();
                if self.slot(ep).chan.poll_transmit(&mut out).is_some() {
                    self.links[li].pipes[1 - side].push(now, out, lat, bw);
                } else {
                    self.pool.push(out);
                }
            }
        }
    }

    /// Drain a channel's events; returns whether there were any.
    fn chan_events(&mut self, ep: Endpoint) -> bool {
        let mut any = false;
        while let Some(ev) = self.slot(ep).chan.poll_event() {
            any = true;
            match ep.who {
                Who::Client => self.client_chan_event(ev),
                Who::Relay(r) => self.relay_chan_event(r, ep.chan, ev),
            }
        }
        any
    }

    // ----------------------------------------------------------------------------------
    // The client.

    fn client_chan_event(&mut self, ev: ChanEvent) {
        match ev {
            ChanEvent::Open(open) => {
                let name = self.client.chans[0].peer_name.clone();
                self.log(
                    "client",
                    format!(
                        "channel to the {name} open: link protocol v{}, the {name} proved its RSA and ed25519 identities",
                        open.link_version
                    ),
                );
                self.client_create();
            }
            ChanEvent::CircuitCell { circ_id, msg } => {
                if Some(circ_id) != self.client.circ_id {
                    return;
                }
                let now = self.now;
                if let Some(c) = &mut self.client.circ {
                    let _ = c.handle_cell(now, msg);
                }
            }
            ChanEvent::CircuitKilled { reason, .. } => {
                self.log("client", format!("channel killed the circuit: {reason}"));
            }
            ChanEvent::Closed(e) if !self.client.done => {
                self.client.failed = Some(format!("channel closed: {e}"));
            }
            // Other events (the TLS exporter request of initiator authentication, which the
            // simulated relays do not ask for) need nothing from the client. (The channel's
            // event set is still growing: this arm keeps the simulator compiling meanwhile.)
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn client_create(&mut self) {
        let target = self.client.path[0].clone();
        let kind = self.cfg.first_hop;
        let now = self.now;
        let (circ, create) =
            match Circuit::create(CircConfig::default(), &target, kind, now, &mut self.rng) {
                Ok(x) => x,
                Err(e) => {
                    self.client.failed = Some(e.to_string());
                    return;
                }
            };
        let id = match self.client.chans[0].chan.new_circ_id(&mut self.rng) {
            Ok(id) => id,
            Err(e) => {
                self.client.failed = Some(e.to_string());
                return;
            }
        };
        if let Err(e) = self.client.chans[0].chan.send(id, &create) {
            self.client.failed = Some(e.to_string());
            return;
        }
        self.client.circ = Some(circ);
        self.client.circ_id = Some(id);
        let what = match kind {
            HandshakeKind::Ntor => "CREATE2 (ntor)",
            HandshakeKind::NtorV3 => "CREATE2 (ntor-v3)",
            HandshakeKind::CreateFast => "CREATE_FAST",
        };
        let name = self.client.names[0].clone();
        self.log(
            "client",
            format!("circuit {:#010x}: {what} to the {name}", id.get()),
        );
    }

    fn client_step(&mut self) -> bool {
        if self.client.chans.is_empty() {
            return false;
        }
        let mut moved = self.chan_events(Endpoint {
            who: Who::Client,
            chan: 0,
        });
        let Some(id) = self.client.circ_id else {
            return moved;
        };
        loop {
            if let Some(circ) = &mut self.client.circ {
                while let Some(m) = circ.poll_cell(&mut self.rng) {
                    moved = true;
                    let _ = self.client.chans[0].chan.send(id, &m);
                }
            }
            // Events may queue cells (extend, begin, the request, SENDMEs): loop.
            let Some(ev) = self.client.circ.as_mut().and_then(Circuit::poll_event) else {
                return moved;
            };
            moved = true;
            self.client_circ_event(ev);
        }
    }

    fn client_circ_event(&mut self, ev: CircEvent) {
        let now = self.now;
        match ev {
            CircEvent::HopAdded { hops } => {
                let name = self.client.names[hops - 1].clone();
                self.log(
                    "client",
                    format!("hop {hops} ({name}) added: keys agreed, one more tor1 layer"),
                );
                if hops < self.client.path.len() {
                    let t = self.client.path[hops].clone();
                    let via = self.client.names[hops - 1].clone();
                    let next = self.client.names[hops].clone();
                    if let Some(c) = &mut self.client.circ {
                        if let Err(e) = c.extend(&t, now, &mut self.rng) {
                            self.client.failed = Some(e.to_string());
                            return;
                        }
                    }
                    self.log(
                        "client",
                        format!(
                            "EXTEND2 (ntor-v3) in RELAY_EARLY to the {via}: extend to the {next} at {}",
                            t.addrs[0]
                        ),
                    );
                } else {
                    self.log(
                        "client",
                        format!("circuit built: {}", self.client.names.join(" -> ")),
                    );
                    let r = self
                        .client
                        .circ
                        .as_mut()
                        .map(|c| c.begin(WEB_HOST, 80, BeginFlags::default(), now));
                    match r {
                        Some(Ok(s)) => {
                            self.client.stream = Some(s);
                            self.log(
                                "client",
                                format!("stream {s}: BEGIN {WEB_HOST}:80 to the exit"),
                            );
                        }
                        Some(Err(e)) => self.client.failed = Some(e.to_string()),
                        None => {}
                    }
                }
            }
            CircEvent::StreamConnected { stream, addr } => {
                let a = addr.map_or("?".to_owned(), |(ip, _)| ip.to_string());
                self.log(
                    "client",
                    format!("stream {stream}: CONNECTED (exit reached {a})"),
                );
                let req = format!(
                    "GET /{} HTTP/1.0\r\nHost: {WEB_HOST}\r\nUser-Agent: onion-sim\r\n\r\n",
                    self.cfg.response_len
                );
                if let Some(c) = &mut self.client.circ {
                    match c.send(stream, req.as_bytes()) {
                        Ok(_) => {
                            self.client.request_sent = Some(now);
                            self.log(
                                "client",
                                format!(
                                    "stream {stream}: sent HTTP request \"GET /{}\"",
                                    self.cfg.response_len
                                ),
                            );
                        }
                        Err(e) => self.client.failed = Some(e.to_string()),
                    }
                }
            }
            CircEvent::Data { data, .. } => {
                self.client.response.extend_from_slice(&data);
                self.client.last_byte = Some(now);
                if self.client.head_len.is_none() {
                    if let Some(p) = self
                        .client
                        .response
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                    {
                        let head = String::from_utf8_lossy(&self.client.response[..p]).into_owned();
                        self.client.head_len = Some(p + 4);
                        self.client.status_line = head.lines().next().unwrap_or("").to_owned();
                        self.client.content_len = head.lines().find_map(|l| {
                            l.strip_prefix("Content-Length: ")
                                .and_then(|v| v.trim().parse().ok())
                        });
                        if let Some(n) = self.client.content_len {
                            let n = usize::try_from(n.min(web::MAX_BODY)).unwrap_or(0);
                            self.client.response.reserve(n);
                        }
                        let status = self.client.status_line.clone();
                        self.log(
                            "client",
                            format!(
                                "response head: \"{status}\", {} body bytes announced",
                                self.client.content_len.unwrap_or(0)
                            ),
                        );
                    }
                }
            }
            CircEvent::StreamEnded { stream, reason } => {
                let got = self.body_len();
                self.log(
                    "client",
                    format!("stream {stream}: RELAY_END from the exit, reason {reason:?}; {got} body bytes received"),
                );
                if let Some(c) = &mut self.client.circ {
                    c.destroy();
                }
                let stats = self
                    .client
                    .circ
                    .as_ref()
                    .map(Circuit::stats)
                    .unwrap_or_default();
                self.log(
                    "client",
                    format!(
                        "tearing the circuit down (DESTROY). Flow control: {} DATA cells received, {} circuit SENDMEs (v1, authenticated) and {} stream SENDMEs sent",
                        stats.data_cells_received, stats.circ_sendmes_sent, stats.stream_sendmes_sent
                    ),
                );
                self.client.done = true;
            }
            CircEvent::Closed {
                remote_reason,
                error,
            } if !self.client.done => {
                self.client.failed = Some(format!(
                    "circuit closed: remote {remote_reason:?}, error {error:?}"
                ));
            }
            CircEvent::Truncated { hops, reason } => {
                self.client.failed = Some(format!("truncated to {hops} hops: {reason:?}"));
            }
            _ => {}
        }
    }

    fn body_len(&self) -> usize {
        self.client
            .head_len
            .map_or(0, |h| self.client.response.len().saturating_sub(h))
    }

    // ----------------------------------------------------------------------------------
    // Relays.

    fn relay_chan_event(&mut self, r: usize, c: usize, ev: ChanEvent) {
        let name = self.relays[r].name.clone();
        match ev {
            ChanEvent::Open(open) => {
                let peer = self.relays[r].chans[c].peer_name.clone();
                let addr = self.relays[r].chans[c].peer_addr;
                if self.relays[r].chans[c].side == 1 {
                    let auth = if open.peer.is_empty() {
                        "unauthenticated, as clients and extending relays are"
                    } else {
                        "authenticated"
                    };
                    self.log(
                        &name,
                        format!(
                            "accepted a channel from {addr} ({auth}), link v{}",
                            open.link_version
                        ),
                    );
                } else {
                    self.log(
                        &name,
                        format!("channel to the {peer} at {addr} open: identity verified from its CERTS"),
                    );
                    let waiting = std::mem::take(&mut self.relays[r].chans[c].waiting);
                    for (i, create) in waiting {
                        self.send_create(r, c, i, create);
                    }
                }
            }
            ChanEvent::CircuitCell { circ_id, msg } => self.relay_circ_cell(r, c, circ_id, msg),
            ChanEvent::CircuitKilled { circ_id, reason } => {
                self.log(
                    &name,
                    format!("channel killed circuit {:#x}: {reason}", circ_id.get()),
                );
            }
            ChanEvent::Closed(e) => {
                let waiting = std::mem::take(&mut self.relays[r].chans[c].waiting);
                for (i, _) in waiting {
                    if let Some(rc) = self.relays[r].circs.get_mut(i).and_then(Option::as_mut) {
                        rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
                    }
                }
                let _ = e;
            }
            // The simulated relays do not verify initiator AUTHENTICATE cells, so they never
            // ask for a TLS exporter value; nothing else needs an answer.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn send_create(&mut self, r: usize, c: usize, i: usize, create: ChanMsg<'static>) {
        let relay = &mut self.relays[r];
        let id = match relay.chans[c].chan.new_circ_id(&mut self.rng) {
            Ok(id) => id,
            Err(_) => {
                if let Some(rc) = relay.circs.get_mut(i).and_then(Option::as_mut) {
                    rc.circ.extend_failed(DestroyReason::RESOURCELIMIT);
                }
                return;
            }
        };
        if relay.chans[c].chan.send(id, &create).is_err() {
            if let Some(rc) = relay.circs.get_mut(i).and_then(Option::as_mut) {
                rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
            }
            return;
        }
        relay.by_next.insert((c, id), i);
        if let Some(rc) = relay.circs.get_mut(i).and_then(Option::as_mut) {
            rc.next = Some((c, id));
        }
        let peer = relay.chans[c].peer_name.clone();
        let name = relay.name.clone();
        self.log(
            &name,
            format!("CREATE2 sent to the {peer} on circuit {:#010x}", id.get()),
        );
    }

    fn relay_circ_cell(&mut self, r: usize, c: usize, id: CircId, msg: ChanMsg<'static>) {
        let now = self.now;
        let name = self.relays[r].name.clone();
        if let Some(&i) = self.relays[r].by_client.get(&(c, id)) {
            if matches!(msg, ChanMsg::Destroy(_)) {
                self.relays[r].by_client.remove(&(c, id));
                self.log(
                    &name,
                    "DESTROY from the client side: tearing down, passing it on",
                );
            }
            if let Some(rc) = self.relays[r].circs[i].as_mut() {
                let _ = rc.circ.handle_from_client(now, msg);
            }
            return;
        }
        if let Some(&i) = self.relays[r].by_next.get(&(c, id)) {
            match &msg {
                ChanMsg::Created2(_) => {
                    self.log(
                        &name,
                        "CREATED2 from the next hop: EXTENDED2 back toward the client",
                    );
                }
                ChanMsg::Destroy(_) => {
                    self.relays[r].by_next.remove(&(c, id));
                    if let Some(rc) = self.relays[r].circs[i].as_mut() {
                        rc.next = None;
                    }
                }
                _ => {}
            }
            if let Some(rc) = self.relays[r].circs[i].as_mut() {
                let _ = rc.circ.handle_from_next(now, msg);
            }
            return;
        }
        let what = match &msg {
            ChanMsg::Create2(c2) => format!("CREATE2 ({:?})", c2.handshake_type),
            ChanMsg::CreateFast(_) => "CREATE_FAST".to_owned(),
            _ => return,
        };
        let peer = self.relays[r].chans[c].peer_addr;
        match RelayCircuit::accept(&self.relays[r].keys, &msg, now, &mut self.rng) {
            Ok((circ, reply)) => {
                let relay = &mut self.relays[r];
                if relay.chans[c].chan.send(id, &reply).is_err() {
                    return;
                }
                let i = relay.circs.len();
                relay.circs.push(Some(RCirc {
                    circ,
                    client: (c, id),
                    next: None,
                }));
                relay.by_client.insert((c, id), i);
                self.log(
                    &name,
                    format!(
                        "{what} from {peer} on circuit {:#010x}: handshake done, CREATED2 sent",
                        id.get()
                    ),
                );
            }
            Err(e) => {
                let reason = e.destroy_reason();
                let _ = self.relays[r].chans[c]
                    .chan
                    .send(id, &ChanMsg::Destroy(reason));
                self.log(&name, format!("{what} from {peer} refused: {e}"));
            }
        }
    }

    /// Move a relay circuit's outputs to its channels and act on its events.
    fn relay_circ_step(&mut self, r: usize, i: usize) -> bool {
        let mut moved = false;
        loop {
            let Some(rc) = self.relays[r].circs[i].as_mut() else {
                return moved;
            };
            let (client, next) = (rc.client, rc.next);
            // Reuse one buffer for the outputs (this runs for every cell).
            let mut outs = std::mem::take(&mut self.outs);
            while let Some(out) = rc.circ.poll_cell(&mut self.rng) {
                outs.push(out);
            }
            let ev = if outs.is_empty() {
                rc.circ.poll_event()
            } else {
                None
            };
            let closed = rc.circ.is_closed();
            if outs.is_empty() && ev.is_none() {
                self.outs = outs;
                if closed {
                    let relay = &mut self.relays[r];
                    if let Some(rc) = relay.circs[i].take() {
                        relay.by_client.remove(&rc.client);
                        if let Some(n) = rc.next {
                            relay.by_next.remove(&n);
                        }
                    }
                }
                return moved;
            }
            moved = true;
            let relay = &mut self.relays[r];
            for out in outs.drain(..) {
                match out {
                    RelayOutput::ToClient(m) => {
                        let _ = relay.chans[client.0].chan.send(client.1, &m);
                        if matches!(m, ChanMsg::Destroy(_)) {
                            relay.by_client.remove(&client);
                        }
                    }
                    RelayOutput::ToNext(m) => {
                        if let Some(n) = next {
                            let _ = relay.chans[n.0].chan.send(n.1, &m);
                            if matches!(m, ChanMsg::Destroy(_)) {
                                relay.by_next.remove(&n);
                                if let Some(rc) = relay.circs[i].as_mut() {
                                    rc.next = None;
                                }
                            }
                        } else if matches!(m, ChanMsg::Destroy(_)) {
                            // Still connecting: forget the pending CREATE2.
                            for s in &mut relay.chans {
                                s.waiting.retain(|(w, _)| *w != i);
                            }
                        }
                    }
                }
            }
            self.outs = outs;
            if let Some(ev) = ev {
                self.relay_event(r, i, ev);
            }
        }
    }

    fn relay_event(&mut self, r: usize, i: usize, ev: RelayEvent) {
        let now = self.now;
        let name = self.relays[r].name.clone();
        match ev {
            RelayEvent::Extend(req) => {
                let Some(addr) = req.addrs.first().copied() else {
                    if let Some(rc) = self.relays[r].circs[i].as_mut() {
                        rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
                    }
                    return;
                };
                self.relays[r].seen.insert(addr.to_string());
                self.log(
                    &name,
                    format!(
                        "EXTEND2 (RELAY_EARLY): extend to {addr}, RSA id {}...",
                        short(&req.rsa_id.0)
                    ),
                );
                // Reuse an open channel to that relay if we have one (tor-spec §5.3.1).
                let existing = self.relays[r]
                    .chans
                    .iter()
                    .position(|s| s.side == 0 && s.peer_addr == addr.ip() && !s.chan.is_closed());
                let c = match existing {
                    Some(c) => c,
                    None => {
                        let Some(to) = self.relays.iter().position(|x| x.addr == addr) else {
                            if let Some(rc) = self.relays[r].circs[i].as_mut() {
                                rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
                            }
                            return;
                        };
                        let expected = PeerIds {
                            rsa: Some(req.rsa_id),
                            ed25519: req.ed_id,
                        };
                        let peer = self.relays[to].name.clone();
                        self.log(&name, format!("opening a channel to the {peer} at {addr}"));
                        match self.connect(Who::Relay(r), to, expected) {
                            Ok(c) => c,
                            Err(_) => {
                                if let Some(rc) = self.relays[r].circs[i].as_mut() {
                                    rc.circ.extend_failed(DestroyReason::INTERNAL);
                                }
                                return;
                            }
                        }
                    }
                };
                if self.relays[r].chans[c].chan.is_open() {
                    self.send_create(r, c, i, req.create);
                } else {
                    self.relays[r].chans[c].waiting.push((i, req.create));
                }
            }
            RelayEvent::Begin {
                stream, host, port, ..
            } => {
                self.relays[r].seen.insert(format!("{host}:{port}"));
                self.log(&name, format!("stream {stream}: BEGIN {host}:{port}"));
                let ip = if host.eq_ignore_ascii_case(WEB_HOST) {
                    Some(IpAddr::V4(WEB_ADDR))
                } else {
                    host.parse::<IpAddr>().ok()
                };
                let verdict = if !self.relays[r].exit {
                    Some(EndReason::EXITPOLICY)
                } else if ip.is_none() {
                    Some(EndReason::RESOLVEFAILED)
                } else if ip != Some(IpAddr::V4(WEB_ADDR)) || port != 80 {
                    Some(EndReason::CONNECTREFUSED)
                } else {
                    None
                };
                if let Some(reason) = verdict {
                    if let Some(rc) = self.relays[r].circs[i].as_mut() {
                        let _ = rc.circ.end_stream(stream, reason);
                    }
                    self.log(&name, format!("stream {stream}: refused ({reason:?})"));
                    return;
                }
                self.relays[r].seen.insert(format!("{WEB_ADDR}:80"));
                self.web_seen.insert(self.relays[r].addr.ip().to_string());
                self.log(
                    &name,
                    format!("stream {stream}: resolved {host} to {WEB_ADDR}; exit policy accepts port {port}; connecting"),
                );
                self.tcps.push(Tcp {
                    relay: r,
                    circ: i,
                    stream,
                    web: WebConn::new(self.cfg.seed),
                    connect_at: Some(now + self.cfg.latency * 2),
                    to_web: Pipe::default(),
                    to_exit: Pipe::default(),
                    exit_buf: Vec::new(),
                    in_flight: 0,
                    closed: false,
                });
            }
            RelayEvent::BeginDir { stream } => {
                if let Some(rc) = self.relays[r].circs[i].as_mut() {
                    let _ = rc.circ.end_stream(stream, EndReason::NOTDIRECTORY);
                }
                self.log(
                    &name,
                    format!("stream {stream}: BEGIN_DIR refused, no directory service here"),
                );
            }
            RelayEvent::Resolve { stream, query } => {
                let value = if query.eq_ignore_ascii_case(WEB_HOST) {
                    ResolvedValue::Ip(IpAddr::V4(WEB_ADDR))
                } else {
                    ResolvedValue::NontransientError(b"Error resolving hostname".to_vec().into())
                };
                if let Some(rc) = self.relays[r].circs[i].as_mut() {
                    let _ = rc
                        .circ
                        .resolved(stream, vec![ResolvedAnswer { value, ttl: 300 }]);
                }
                self.log(&name, format!("RESOLVE {query} answered"));
            }
            RelayEvent::Data { stream, data } => {
                let (lat, bw) = (self.cfg.latency, self.cfg.bandwidth);
                if let Some(t) = self
                    .tcps
                    .iter_mut()
                    .find(|t| t.relay == r && t.circ == i && t.stream == stream && !t.closed)
                {
                    t.to_web.push(now, data.to_vec(), lat, bw);
                }
            }
            RelayEvent::StreamEnded { stream, reason } => {
                self.log(
                    &name,
                    format!("stream {stream}: ended by the client ({reason:?})"),
                );
                for t in &mut self.tcps {
                    if t.relay == r && t.circ == i && t.stream == stream {
                        t.closed = true;
                    }
                }
            }
            RelayEvent::Closed { error } => {
                let stats = self.relays[r].circs[i]
                    .as_ref()
                    .map(|rc| rc.circ.stats())
                    .unwrap_or_default();
                let extra = if self.relays[r].exit {
                    format!(
                        " ({} DATA cells sent, {} circuit SENDMEs checked)",
                        stats.data_cells_sent, stats.circ_sendmes_received
                    )
                } else {
                    String::new()
                };
                if self.relays[r].exit {
                    self.exit_stats = stats;
                }
                match error {
                    None => self.log(&name, format!("circuit closed{extra}")),
                    Some(e) => self.log(&name, format!("circuit closed on error: {e}{extra}")),
                }
                for t in &mut self.tcps {
                    if t.relay == r && t.circ == i {
                        t.closed = true;
                    }
                }
            }
            _ => {}
        }
    }

    // ----------------------------------------------------------------------------------
    // The exit's TCP connections to the web server.

    fn tcp_connected(&mut self, ti: usize) {
        let (r, i, stream) = (
            self.tcps[ti].relay,
            self.tcps[ti].circ,
            self.tcps[ti].stream,
        );
        let name = self.relays[r].name.clone();
        let from = self.relays[r].addr.ip();
        self.log("web", format!("accepted a TCP connection from {from}"));
        if let Some(rc) = self.relays[r].circs.get_mut(i).and_then(Option::as_mut) {
            let _ = rc.circ.connected(stream, Some((IpAddr::V4(WEB_ADDR), 300)));
            self.log(
                &name,
                format!("stream {stream}: connected to {WEB_ADDR}:80, CONNECTED sent"),
            );
        }
    }

    fn tcp_step(&mut self) -> bool {
        let mut moved = false;
        let (now, lat, bw) = (self.now, self.cfg.latency, self.cfg.bandwidth);
        for ti in 0..self.tcps.len() {
            let t = &mut self.tcps[ti];
            if t.closed || t.connect_at.is_some() {
                continue;
            }
            let Some(rc) = self.relays[t.relay]
                .circs
                .get_mut(t.circ)
                .and_then(Option::as_mut)
            else {
                t.closed = true;
                continue;
            };
            // Package what arrived at the exit.
            if !t.exit_buf.is_empty() {
                if let Ok(n) = rc.circ.send(t.stream, &t.exit_buf) {
                    if n > 0 {
                        moved = true;
                        t.exit_buf.drain(..n);
                    }
                }
            }
            // The web server writes as much as the exit will take (TCP back-pressure).
            let room = rc
                .circ
                .send_capacity(t.stream)
                .saturating_sub(t.exit_buf.len() + t.in_flight);
            if room > 0 {
                let chunk = t.web.poll_output(room.min(256 * 1024));
                if !chunk.is_empty() {
                    moved = true;
                    t.in_flight += chunk.len();
                    t.to_exit.push(now, chunk, lat, bw);
                }
            }
            if t.web.is_done()
                && t.in_flight == 0
                && t.exit_buf.is_empty()
                && t.to_exit.q.is_empty()
            {
                t.closed = true;
                let stream = t.stream;
                let r = t.relay;
                let _ = rc.circ.end_stream(stream, EndReason::DONE);
                moved = true;
                let name = self.relays[r].name.clone();
                self.log("web", "response sent, closing the connection");
                self.log(
                    &name,
                    format!("stream {stream}: web server closed, RELAY_END (DONE) sent"),
                );
            }
        }
        moved
    }

    /// What the run produced.
    pub fn report(&self) -> Report {
        let body = self
            .client
            .head_len
            .map(|h| self.client.response[h.min(self.client.response.len())..].to_vec())
            .unwrap_or_default();
        let mut seen = Vec::new();
        for r in &self.relays {
            seen.push((r.name.clone(), r.seen.clone()));
        }
        seen.push(("web".to_owned(), self.web_seen.clone()));
        let exit_stats = self
            .relays
            .last()
            .and_then(|r| r.circs.iter().flatten().next().map(|rc| rc.circ.stats()))
            .unwrap_or(self.exit_stats);
        Report {
            story: self.story.clone(),
            status_line: self.client.status_line.clone(),
            expected_body: web::expected_body(self.cfg.seed, self.cfg.response_len),
            body,
            transfer_time: match (self.client.request_sent, self.client.last_byte) {
                (Some(a), Some(b)) => b - a,
                _ => Duration::ZERO,
            },
            total_time: self.now - Instant::ZERO,
            client_stats: self
                .client
                .circ
                .as_ref()
                .map(Circuit::stats)
                .unwrap_or_default(),
            exit_stats,
            seen,
            link_bytes: self.link_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_cell::chancell::RelayPayload;

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
        let before = sim.relays[0].circs.iter().flatten().count();
        let id = CircId::new(0x1234_5678);
        let junk = ChanMsg::Relay(RelayPayload::Owned(Box::new([7; 509])));
        sim.relay_circ_cell(0, 0, id, junk);
        sim.relay_circ_cell(0, 0, id, ChanMsg::Destroy(DestroyReason::NONE));
        sim.pump();
        assert_eq!(sim.relays[0].circs.iter().flatten().count(), before);
        assert!(sim.relays[0].by_client.is_empty());
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
        sim.rng.fill_bytes(&mut junk);
        sim.feed(ep, &junk);
        sim.pump();
        assert!(sim.relays[0].circs.iter().flatten().next().is_none());
    }
}
