//! The network itself: relays and client parties joined by in-memory channel links, with
//! virtual time and one seeded RNG.
//!
//! A [`Net`] holds
//!
//! * **relays** ([`Net::add_relay`]): each with real link keys and certificates, an ntor key,
//!   its [`Channel`]s (responder for whoever connects, initiator when it extends), its
//!   [`RelayCircuit`]s, and a list of [`Edge`] handlers for what it does at the edge of a
//!   circuit (exit to a web server, a directory service, an introduction or rendezvous
//!   point, …). EXTEND2 is handled by the network itself: the relay opens (or reuses, tor-spec
//!   §5.3.1) a channel to the named relay and sends the CREATE2 there;
//! * **parties** ([`Net::add_party`]): clients of the network (a Tor client, an onion
//!   service), each with its channels and client [`Circuit`]s, built hop by hop through the
//!   relays a scenario names ([`Net::build_circuit`]);
//! * **links**: every channel writes real cells as bytes; a link carries them to the other end
//!   after a latency plus the time the link's bandwidth needs (no TLS: the TLS certificate
//!   digest the link certificates bind to is a per-link random value). Every link has the
//!   network's latency and bandwidth unless [`Net::set_link`] gave the pair of nodes its own
//!   [`LinkParams`], which may also bound the link's queue: a relay then stops moving cells
//!   onto that link while its queue is full, so they wait in the relay's circuit queues
//!   (served round-robin, a few cells per circuit at a time) and its channel reports itself
//!   blocked to congestion control, as a TCP connection's back-pressure does to C tor's.
//!
//! A scenario drives the network through a [`Driver`]: [`Net::pump`] moves everything that is
//! ready now (calling the driver for each client-circuit event), [`Net::advance`] moves the
//! virtual clock to the next delivery or relay-circuit timer (a half-closed exit stream's
//! window, tor-spec §6.2.1) and fires what is due. The driver either acts on events as they
//! come (the client in [`super::Sim`]) or lets them queue ([`Queue`]) and reads them
//! between calls, step by step.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_cell::chancell::{ChanMsg, DestroyReason};
use onion_cell::relaymsg::{EndReason, ResolvedAnswer, ResolvedValue};
use onion_cell::CircId;
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, PeerIds, RelayLinkKeys};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::flow::FlowStats;
use onion_circuit::relay::{RelayCircuit, RelayConfig, RelayEvent, RelayKeys};
use onion_circuit::Instant;

use super::{SimError, StoryLine};

/// Settings of a network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Seed of the one RNG every party draws from (keys, handshakes, circuit ids, padding).
    pub seed: u64,
    /// One-way delay of every link.
    pub latency: Duration,
    /// Bytes per second each link direction carries (0 = unlimited).
    pub bandwidth: u64,
    /// Whether to record a story line for every significant event.
    pub story: bool,
}

/// A node of the network: a client party or a relay (their indices from [`Net::add_party`]
/// and [`Net::add_relay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// A party.
    Party(usize),
    /// A relay.
    Relay(usize),
}

/// The settings of one link (both directions), overriding the network's
/// ([`Net::set_link`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkParams {
    /// One-way delay.
    pub latency: Duration,
    /// Bytes per second each direction carries (0 = unlimited).
    pub bandwidth: u64,
    /// The most bytes a direction holds that it has not yet transmitted (its queue, the
    /// sender's socket buffer); 0 = unbounded. A relay moves no more cells onto a full
    /// link: they wait in its circuits until the queue has half drained.
    pub queue_limit: usize,
    /// Bytes per record: a burst a channel writes is carried as records of at most this
    /// size, each arriving (and read) as soon as it has crossed the link, as TLS records
    /// (16 KiB at most) do. 0: a burst arrives whole, as on the network's default links,
    /// which a large window's burst then crosses as one unit.
    pub record_size: usize,
}

/// What waits at a relay for one of its links (bytes), see [`Net::queue_toward`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkQueue {
    /// Bytes on the link not yet transmitted (the bounded queue).
    pub link: u64,
    /// Bytes in the relay's channel toward it, not yet handed to the link.
    pub channel: u64,
    /// Cells waiting in the relay's circuits for that channel, in bytes (514 per cell).
    pub circuits: u64,
}

impl LinkQueue {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.link + self.channel + self.circuits
    }
}

/// Bytes of one cell on a link protocol 4+ channel.
const CELL_WIRE_LEN: u64 = 514;

/// On a link with a bounded queue, the cells a relay moves from one circuit before serving
/// the next (round-robin between the circuits sharing the link).
const ROUND_ROBIN_CELLS: usize = 8;

/// One of a party's client circuits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircRef {
    /// The party ([`Net::add_party`]'s index).
    pub party: usize,
    /// The circuit, in the order the party built them.
    pub circ: usize,
}

/// What a scenario does with client-circuit events and its own work.
///
/// Every method has a default, so `struct Q; impl Driver for Q {}` queues all events (see
/// [`Queue`]).
pub trait Driver {
    /// An event of a party's circuit. EXTEND2 steps are taken by the network ([`Net`] extends
    /// a circuit to the next relay of its path on each `HopAdded`); the driver sees the
    /// `HopAdded` of the last hop (the circuit is built) and every later event. The default
    /// queues the event for [`Net::events`].
    fn circ_event(&mut self, net: &mut Net, at: CircRef, ev: CircEvent) {
        net.events(at).push_back(ev);
    }

    /// A party's channel closed. The default records the failure ([`Net::party_failure`]).
    fn chan_closed(&mut self, net: &mut Net, party: usize, error: String) {
        net.fail_party(party, format!("channel closed: {error}"));
    }

    /// The scenario's own work (a server writing into a circuit); returns whether anything
    /// moved.
    fn step(&mut self, _net: &mut Net) -> bool {
        false
    }

    /// The scenario's next timer, if it waits for one.
    fn next_time(&self, _net: &Net) -> Option<Instant> {
        None
    }
}

/// A [`Driver`] that queues every event; the scenario reads them with [`Net::events`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Queue;

impl Driver for Queue {}

/// What a relay does at the edge of its circuits: the events that are not about extending.
///
/// Handlers are asked in the order they were added ([`Net::add_edge`]); the first that takes
/// an event returns `None`. An event nobody takes gets the default answer of a relay that
/// offers no service: BEGIN is refused by exit policy, BEGIN_DIR with NOTDIRECTORY, RESOLVE
/// with an error, onion-service messages are dropped (tor-spec §6.2, §6.4).
pub trait Edge {
    /// A relay-circuit event on circuit `circ` of this relay; `None` if taken.
    fn on_event(&mut self, cx: &mut RelayCx<'_>, circ: usize, ev: RelayEvent)
        -> Option<RelayEvent>;

    /// Work not triggered by an event (a server writing, back-pressure); whether it moved.
    fn step(&mut self, _cx: &mut RelayCx<'_>) -> bool {
        false
    }

    /// The next time this handler has something to deliver.
    fn next_time(&self) -> Option<Instant> {
        None
    }

    /// Deliver what is due at `cx.now()`.
    fn deliver_due(&mut self, _cx: &mut RelayCx<'_>) {}
}

/// A relay as an [`Edge`] handler sees it: its circuits, the clock, the RNG and the story.
pub struct RelayCx<'a> {
    now: Instant,
    latency: Duration,
    bandwidth: u64,
    rng: &'a mut ChaCha20Rng,
    story: &'a mut Story,
    others_seen: &'a mut Vec<(String, BTreeSet<String>)>,
    relay: &'a mut Relay,
}

impl RelayCx<'_> {
    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The one-way latency and the bandwidth of this relay's connections to the outside
    /// world (the network's links, unless [`Net::set_edge_link`] set them).
    pub fn link(&self) -> (Duration, u64) {
        self.relay
            .edge_link
            .unwrap_or((self.latency, self.bandwidth))
    }

    /// The network's RNG.
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        self.rng
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.relay.name
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.relay.addr
    }

    /// Circuit `i` of this relay, if it is still open. The circuit is told the time first
    /// ([`RelayCircuit::handle_timeout`]), so that what the edge sends is stamped with it
    /// (congestion control's RTT samples start when a cell is sent).
    pub fn circ(&mut self, i: usize) -> Option<&mut RelayCircuit> {
        let now = self.now;
        self.relay
            .circs
            .get_mut(i)
            .and_then(Option::as_mut)
            .map(|rc| {
                rc.circ.handle_timeout(now);
                &mut rc.circ
            })
    }

    /// Join circuits `a` and `b` at this relay (rend-spec-v3 §4.2): from now on the cells
    /// [`RelayCircuit::poll_spliced`] gives on one go into the other. False if either refuses.
    pub fn splice(&mut self, a: usize, b: usize) -> bool {
        // Check both first, so that a refusal leaves neither half-joined.
        let joinable = |cx: &mut Self, i: usize| {
            cx.circ(i)
                .is_some_and(|c| !c.is_closed() && !c.has_next() && !c.is_spliced())
        };
        if a == b || !joinable(self, a) || !joinable(self, b) {
            return false;
        }
        let ok_a = self.circ(a).is_some_and(|c| c.splice().is_ok());
        let ok_b = self.circ(b).is_some_and(|c| c.splice().is_ok());
        if !(ok_a && ok_b) {
            return false;
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(rc) = self.relay.circs.get_mut(x).and_then(Option::as_mut) {
                rc.spliced = Some(y);
            }
        }
        true
    }

    /// Add a story line for `party` (usually the relay itself, [`RelayCx::name`]).
    pub fn log(&mut self, party: &str, text: impl Into<String>) {
        self.story.log(self.now, party, text);
    }

    /// Add a story line for this relay.
    pub fn say(&mut self, text: impl Into<String>) {
        self.story.log(self.now, &self.relay.name, text);
    }

    /// Record that this relay saw `what` (an address or a name).
    pub fn saw(&mut self, what: impl Into<String>) {
        self.relay.seen.insert(what.into());
    }

    /// Record that `party`, which is not a relay (the web server), saw `what`.
    pub fn other_saw(&mut self, party: &str, what: impl Into<String>) {
        let set = match self.others_seen.iter().position(|(n, _)| n == party) {
            Some(i) => &mut self.others_seen[i].1,
            None => {
                self.others_seen.push((party.to_owned(), BTreeSet::new()));
                let last = self.others_seen.len() - 1;
                &mut self.others_seen[last].1
            }
        };
        set.insert(what.into());
    }
}

/// The story: one line per significant event.
#[derive(Debug, Default)]
pub(crate) struct Story {
    on: bool,
    lines: Vec<StoryLine>,
}

impl Story {
    fn log(&mut self, now: Instant, party: &str, text: impl Into<String>) {
        if self.on {
            self.lines.push(StoryLine {
                at: now - Instant::ZERO,
                party: party.to_owned(),
                text: text.into(),
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Party(usize),
    Relay(usize),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    pub(crate) who: Who,
    pub(crate) chan: usize,
}

/// What a [`Pipe`] carries: something with a length in bytes (the bytes themselves, or a
/// span of a stream whose bytes the receiver can read itself).
pub(crate) trait Chunk {
    /// Its length in bytes (what the link's bandwidth is charged).
    fn len(&self) -> usize;
}

impl Chunk for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// One direction of a simulated connection: chunks with their arrival times.
#[derive(Debug)]
pub(crate) struct Pipe<T = Vec<u8>> {
    pub(crate) q: VecDeque<(Instant, T)>,
    free_at: Instant,
}

impl<T> Default for Pipe<T> {
    fn default() -> Self {
        Pipe {
            q: VecDeque::new(),
            free_at: Instant::ZERO,
        }
    }
}

impl<T: Chunk> Pipe<T> {
    /// Send `bytes` at `now`: they arrive after the link has carried the earlier chunks and
    /// these (at `bandwidth` bytes per second), plus `latency`.
    pub(crate) fn push(&mut self, now: Instant, bytes: T, latency: Duration, bandwidth: u64) {
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

    /// When the first chunk arrives.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.q.front().map(|(at, _)| *at)
    }

    /// The first chunk, if it has arrived by `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_at().is_some_and(|at| at <= now) {
            self.q.pop_front().map(|(_, b)| b)
        } else {
            None
        }
    }
}

/// A bidirectional in-memory connection; `pipes[i]` carries bytes toward `ends[i]`.
struct Link {
    ends: [Endpoint; 2],
    pipes: [Pipe; 2],
    /// The capacity of the output buffer `ends[i]`'s channel last handed over: what it grew
    /// to for its last burst, so the buffer it gets in exchange should be as large.
    burst: [usize; 2],
    /// Latency, bandwidth and queue bound of this link.
    params: LinkParams,
    /// `ends[i]` held cells back because the direction away from it was full; it is woken
    /// when that direction has half drained.
    blocked: [bool; 2],
    /// The most bytes either end's channel buffers for sending
    /// ([`ChanConfig::max_outbound_bytes`]): a channel refuses cells beyond it.
    chan_max: usize,
}

impl Link {
    /// Bytes the direction away from `ends[side]` has not yet transmitted at `now`.
    fn backlog(&self, side: usize, now: Instant) -> u64 {
        let bw = self.params.bandwidth;
        if bw == 0 {
            return 0;
        }
        let left = self.pipes[1 - side].free_at.saturating_duration_since(now);
        u64::try_from(left.as_nanos().saturating_mul(u128::from(bw)) / 1_000_000_000)
            .unwrap_or(u64::MAX)
    }

    /// When the direction away from `ends[side]` is down to half its queue bound.
    fn half_drained_at(&self, side: usize) -> Instant {
        let bw = self.params.bandwidth.max(1);
        let half = (self.params.queue_limit / 2) as u64;
        let back = Duration::from_nanos(half.saturating_mul(1_000_000_000) / bw);
        let free = self.pipes[1 - side].free_at;
        Instant::ZERO + (free - Instant::ZERO).saturating_sub(back)
    }
}

pub(crate) struct ChanSlot {
    pub(crate) chan: Channel,
    /// 0: we opened it (initiator); 1: the peer did.
    side: usize,
    peer_addr: IpAddr,
    peer_name: String,
    /// A relay's circuits waiting for this channel to open to send their CREATE2.
    waiting: Vec<(usize, ChanMsg<'static>)>,
    /// A party's circuits waiting for this channel to open to be created.
    pending: Vec<usize>,
    /// The link this channel writes to: (link index, our side).
    link: (usize, usize),
}

/// A party's client circuit and what it is built through.
struct PartyCirc {
    circ: Option<Circuit>,
    chan: usize,
    id: Option<CircId>,
    kind: HandshakeKind,
    path: Vec<HopTarget>,
    relays: Vec<usize>,
    events: VecDeque<CircEvent>,
}

/// A client of the network.
struct Party {
    name: String,
    addr: IpAddr,
    chans: Vec<ChanSlot>,
    circs: Vec<PartyCirc>,
    failed: Option<String>,
    /// The configuration of the circuits it builds.
    circ_config: CircConfig,
}

/// (channel index, circuit id) -> relay circuit index, looked up for every cell a relay
/// receives. A relay of the simulator carries a handful of circuits, so a linear scan of a
/// short vector beats hashing (SipHash, then a multiplicative hash, showed up in profiles);
/// the most recently used entry is checked first, as consecutive cells tend to share a
/// circuit. The keys are ids the relay's own channels accepted, not peer-chosen lookups of
/// unbounded number.
#[derive(Debug, Default)]
pub(crate) struct CircMap {
    entries: Vec<((usize, CircId), usize)>,
    last: core::cell::Cell<usize>,
}

impl CircMap {
    pub(crate) fn get(&self, k: &(usize, CircId)) -> Option<&usize> {
        let last = self.last.get();
        if let Some((key, v)) = self.entries.get(last) {
            if key == k {
                return Some(v);
            }
        }
        let i = self.entries.iter().position(|(key, _)| key == k)?;
        self.last.set(i);
        Some(&self.entries[i].1)
    }

    pub(crate) fn insert(&mut self, k: (usize, CircId), v: usize) {
        match self.entries.iter_mut().find(|(key, _)| *key == k) {
            Some(e) => e.1 = v,
            None => self.entries.push((k, v)),
        }
    }

    pub(crate) fn remove(&mut self, k: &(usize, CircId)) -> Option<usize> {
        let i = self.entries.iter().position(|(key, _)| key == k)?;
        Some(self.entries.swap_remove(i).1)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub(crate) struct RCirc {
    pub(crate) circ: RelayCircuit,
    client: (usize, CircId),
    next: Option<(usize, CircId)>,
    /// The circuit of this relay it is joined to (rendezvous point).
    spliced: Option<usize>,
}

/// A relay of the network.
pub(crate) struct Relay {
    name: String,
    addr: SocketAddr,
    link_keys: RelayLinkKeys,
    keys: RelayKeys,
    ntor_public: onion_crypto::keys::NtorOnionKey,
    pub(crate) chans: Vec<ChanSlot>,
    pub(crate) circs: Vec<Option<RCirc>>,
    pub(crate) by_client: CircMap,
    by_next: CircMap,
    seen: BTreeSet<String>,
    /// The flow counters of the last circuit that closed here.
    closed_stats: Option<FlowStats>,
    edges: Vec<Box<dyn Edge>>,
    /// What the relay offers circuits (congestion control).
    config: RelayConfig,
    /// Latency and bandwidth of its connections outside the network (exit to destination).
    edge_link: Option<(Duration, u64)>,
}

/// How many delivered link buffers the network keeps for reuse, and the largest it keeps.
const POOL_BUFS: usize = 16;
const POOL_BUF_CAP: usize = 1 << 20;

/// The whole network (see the module documentation).
pub struct Net {
    cfg: NetConfig,
    now: Instant,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) relays: Vec<Relay>,
    parties: Vec<Party>,
    links: Vec<Link>,
    story: Story,
    others_seen: Vec<(String, BTreeSet<String>)>,
    link_bytes: u64,
    /// Delivered byte buffers, kept for reuse: a channel's output buffer is swapped with one
    /// of these ([`Net::take_buf`]), so it keeps its capacity instead of growing from zero
    /// for every flush.
    pool: Vec<Vec<u8>>,
    /// Links given their own settings ([`Net::set_link`]), by their two nodes.
    link_params: Vec<(Node, Node, LinkParams)>,
}

impl core::fmt::Debug for Net {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Net")
            .field("now", &self.now)
            .field("relays", &self.relays.len())
            .field("parties", &self.parties.len())
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

/// The wall-clock time the certificates are checked against: a fixed date plus virtual time.
pub(crate) fn wall(now: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000) + Duration::from_nanos(now.as_nanos())
}

/// How many cells a relay may move onto channel `slot` now. On a link without a queue
/// bound: as many whole cells as the channel's own buffer still takes
/// ([`ChanConfig::max_outbound_bytes`]; it is emptied onto the link at the end of every
/// pump pass). On a bounded link: a round-robin share of the whole cells that still fit
/// under the bound (the link's untransmitted bytes plus the channel's buffer), or none
/// once not one more cell fits: the link is then marked blocked until it has half
/// drained. Either way a full link or buffer holds: the relay drops nothing, the cells wait
/// in its circuit queues (the circuits' windows bound those), as a TCP socket that refuses
/// a write makes C tor's cells wait. (A cell handed to a full channel would be refused,
/// and lost.)
fn allowance(links: &mut [Link], slot: &ChanSlot, now: Instant) -> usize {
    let (li, side) = slot.link;
    let Some(l) = links.get_mut(li) else {
        return usize::MAX;
    };
    let room = l.chan_max.saturating_sub(slot.chan.outbound_len()) as u64 / CELL_WIRE_LEN;
    let limit = l.params.queue_limit as u64;
    if limit == 0 {
        return usize::try_from(room).unwrap_or(usize::MAX);
    }
    if l.blocked[side] {
        return 0;
    }
    let queued = l.backlog(side, now) + slot.chan.outbound_len() as u64;
    // Whole cells only: a cell that would cross the bound waits.
    let fit = limit.saturating_sub(queued) / CELL_WIRE_LEN;
    if fit == 0 {
        l.blocked[side] = true;
        return 0;
    }
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .min(ROUND_ROBIN_CELLS)
}

fn node_of(w: Who) -> Node {
    match w {
        Who::Party(p) => Node::Party(p),
        Who::Relay(r) => Node::Relay(r),
    }
}

fn short(id: &[u8]) -> String {
    id.iter().take(4).map(|b| format!("{b:02X}")).collect()
}

impl Net {
    /// An empty network at virtual time zero.
    pub fn new(cfg: NetConfig) -> Net {
        Net {
            now: Instant::ZERO,
            rng: ChaCha20Rng::seed_from_u64(cfg.seed),
            relays: Vec::new(),
            parties: Vec::new(),
            links: Vec::new(),
            story: Story {
                on: cfg.story,
                lines: Vec::new(),
            },
            others_seen: Vec::new(),
            link_bytes: 0,
            pool: Vec::new(),
            link_params: Vec::new(),
            cfg,
        }
    }

    /// Give the link between `a` and `b` (in both directions) its own latency, bandwidth and
    /// queue bound instead of the network's. Applies to links opened afterwards.
    pub fn set_link(&mut self, a: Node, b: Node, params: LinkParams) {
        self.link_params
            .retain(|(x, y, _)| !((*x == a && *y == b) || (*x == b && *y == a)));
        self.link_params.push((a, b, params));
    }

    /// The settings of the link between `a` and `b`.
    pub fn link_params(&self, a: Node, b: Node) -> LinkParams {
        self.link_params
            .iter()
            .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
            .map_or(
                LinkParams {
                    latency: self.cfg.latency,
                    bandwidth: self.cfg.bandwidth,
                    queue_limit: 0,
                    record_size: 0,
                },
                |(_, _, p)| *p,
            )
    }

    /// The latency and bandwidth of relay `r`'s connections outside the network (an exit's
    /// to its destination, [`RelayCx::link`]).
    pub fn set_edge_link(&mut self, r: usize, latency: Duration, bandwidth: u64) {
        if let Some(relay) = self.relays.get_mut(r) {
            relay.edge_link = Some((latency, bandwidth));
        }
    }

    /// What relay `r` offers the circuits created afterwards (congestion control, proposal
    /// 324: [`RelayConfig::congestion_control`]).
    pub fn set_relay_config(&mut self, r: usize, config: RelayConfig) {
        if let Some(relay) = self.relays.get_mut(r) {
            relay.config = config;
        }
    }

    /// The configuration of the circuits party `p` builds afterwards (congestion control to
    /// request from the exit: [`CircConfig::congestion_control`]).
    pub fn set_circ_config(&mut self, p: usize, config: CircConfig) {
        if let Some(party) = self.parties.get_mut(p) {
            party.circ_config = config;
        }
    }

    /// The open circuits of relay `r`, with their indices (in the order they were created).
    pub fn relay_circuits(&self, r: usize) -> impl Iterator<Item = (usize, &RelayCircuit)> + '_ {
        self.relays.get(r).into_iter().flat_map(|relay| {
            relay
                .circs
                .iter()
                .enumerate()
                .filter_map(|(i, rc)| Some((i, &rc.as_ref()?.circ)))
        })
    }

    /// What waits at relay `r` to go toward `to` (its first channel to that node): on the
    /// link, in the channel, and in the relay's circuits that use the channel.
    pub fn queue_toward(&self, r: usize, to: Node) -> LinkQueue {
        let Some(relay) = self.relays.get(r) else {
            return LinkQueue::default();
        };
        let me = Node::Relay(r);
        let Some((c, slot)) = relay.chans.iter().enumerate().find(|(_, s)| {
            let (li, side) = s.link;
            let other = self.links[li].ends[1 - side].who;
            node_of(other) == to && node_of(self.links[li].ends[side].who) == me
        }) else {
            return LinkQueue::default();
        };
        let (li, side) = slot.link;
        let mut circuits = 0u64;
        for rc in relay.circs.iter().flatten() {
            if rc.client.0 == c {
                circuits += rc.circ.queued_to_client() as u64;
            }
            if rc.next.is_some_and(|n| n.0 == c) {
                circuits += rc.circ.queued_to_next() as u64;
            }
        }
        LinkQueue {
            link: self.links[li].backlog(side, self.now),
            channel: slot.chan.outbound_len() as u64,
            circuits: circuits * CELL_WIRE_LEN,
        }
    }

    /// A relay named `name` at `addr`, with fresh link keys (RSA and ed25519 identities and
    /// certificates) and an ntor key, offering no edge service yet. Returns its index.
    pub fn add_relay(&mut self, name: &str, addr: SocketAddr) -> Result<usize, SimError> {
        let link_keys = RelayLinkKeys::generate(&mut self.rng, wall(self.now))
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let ids = link_keys.ids();
        let (Some(rsa_id), Some(ed_id)) = (ids.rsa, ids.ed25519) else {
            return Err(SimError::Setup("relay keys without identities".into()));
        };
        let ntor = NtorSecretKey::generate(&mut self.rng);
        let ntor_public = *ntor.public();
        self.relays.push(Relay {
            name: name.to_owned(),
            addr,
            keys: RelayKeys {
                rsa_id,
                ed_id,
                ntor_keys: vec![ntor],
            },
            ntor_public,
            link_keys,
            chans: Vec::new(),
            circs: Vec::new(),
            by_client: CircMap::default(),
            by_next: CircMap::default(),
            seen: BTreeSet::new(),
            closed_stats: None,
            edges: Vec::new(),
            config: RelayConfig::default(),
            edge_link: None,
        });
        Ok(self.relays.len() - 1)
    }

    /// Give relay `r` an edge service; handlers are asked in the order added.
    pub fn add_edge(&mut self, r: usize, edge: Box<dyn Edge>) {
        if let Some(relay) = self.relays.get_mut(r) {
            relay.edges.push(edge);
        }
    }

    /// A client party named `name` at `addr`. Returns its index.
    pub fn add_party(&mut self, name: &str, addr: IpAddr) -> usize {
        self.parties.push(Party {
            name: name.to_owned(),
            addr,
            chans: Vec::new(),
            circs: Vec::new(),
            failed: None,
            circ_config: CircConfig::default(),
        });
        self.parties.len() - 1
    }

    /// The number of relays.
    pub fn n_relays(&self) -> usize {
        self.relays.len()
    }

    /// Relay `r`'s name.
    pub fn relay_name(&self, r: usize) -> &str {
        &self.relays[r].name
    }

    /// Relay `r`'s address.
    pub fn relay_addr(&self, r: usize) -> SocketAddr {
        self.relays[r].addr
    }

    /// Relay `r`'s identities.
    pub fn relay_ids(&self, r: usize) -> (RsaIdentity, Ed25519Identity) {
        (self.relays[r].keys.rsa_id, self.relays[r].keys.ed_id)
    }

    /// What a client knows of relay `r` (as from its microdescriptor), to extend to it.
    pub fn relay_target(&self, r: usize) -> HopTarget {
        let relay = &self.relays[r];
        HopTarget {
            rsa_id: relay.keys.rsa_id,
            ed_id: Some(relay.keys.ed_id),
            ntor_key: relay.ntor_public,
            addrs: vec![relay.addr],
            ntor_v3: true,
        }
    }

    /// The relay whose RSA identity is `rsa`.
    pub fn relay_by_rsa(&self, rsa: &[u8; 20]) -> Option<usize> {
        self.relays.iter().position(|r| &r.keys.rsa_id.0 == rsa)
    }

    /// The addresses (and names) relay `r` saw.
    pub fn relay_seen(&self, r: usize) -> &BTreeSet<String> {
        &self.relays[r].seen
    }

    /// The names of the parties and relays relay `r` has a channel with: its neighbours on
    /// the circuits through it.
    pub fn relay_peers(&self, r: usize) -> BTreeSet<String> {
        self.relays[r]
            .chans
            .iter()
            .map(|s| s.peer_name.clone())
            .collect()
    }

    /// The flow counters of the first open circuit at relay `r`, or else of the last one that
    /// closed there.
    pub fn relay_stats(&self, r: usize) -> Option<FlowStats> {
        let relay = self.relays.get(r)?;
        relay
            .circs
            .iter()
            .flatten()
            .next()
            .map(|rc| rc.circ.stats())
            .or(relay.closed_stats)
    }

    /// What the non-relay `party` (the web server) saw.
    pub fn other_seen(&self, party: &str) -> Option<&BTreeSet<String>> {
        self.others_seen
            .iter()
            .find(|(n, _)| n == party)
            .map(|(_, s)| s)
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - Instant::ZERO
    }

    /// The network's RNG (scenarios draw their keys and choices from it too).
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }

    /// Add a story line.
    pub fn log(&mut self, party: &str, text: impl Into<String>) {
        self.story.log(self.now, party, text);
    }

    /// Whether story lines are recorded: a caller can skip formatting one when they are not.
    pub fn story_on(&self) -> bool {
        self.story.on
    }

    /// Add a story line for relay `r`, under its name (borrowed, not copied: this runs on
    /// paths every cell takes).
    pub fn log_relay(&mut self, r: usize, text: impl Into<String>) {
        if self.story.on {
            self.story.log(self.now, &self.relays[r].name, text);
        }
    }

    /// Add a story line for party `p`, under its name.
    pub fn log_party(&mut self, p: usize, text: impl Into<String>) {
        if self.story.on {
            self.story.log(self.now, &self.parties[p].name, text);
        }
    }

    /// The story so far.
    pub fn story(&self) -> &[StoryLine] {
        &self.story.lines
    }

    /// Bytes that crossed the links so far, both directions.
    pub fn link_bytes(&self) -> u64 {
        self.link_bytes
    }

    /// Party `p`'s name.
    pub fn party_name(&self, p: usize) -> &str {
        &self.parties[p].name
    }

    /// Why party `p` failed, if it did.
    pub fn party_failure(&self, p: usize) -> Option<&str> {
        self.parties.get(p).and_then(|x| x.failed.as_deref())
    }

    /// Record that party `p` failed (the first reason is kept).
    pub fn fail_party(&mut self, p: usize, why: impl Into<String>) {
        if let Some(x) = self.parties.get_mut(p) {
            x.failed.get_or_insert_with(|| why.into());
        }
    }

    /// The circuits party `p` has built (or started).
    pub fn party_circuits(&self, p: usize) -> impl Iterator<Item = CircRef> + '_ {
        (0..self.parties[p].circs.len()).map(move |circ| CircRef { party: p, circ })
    }

    /// The client circuit `at` (`None` until its first channel is open).
    pub fn circuit(&self, at: CircRef) -> Option<&Circuit> {
        self.parties
            .get(at.party)?
            .circs
            .get(at.circ)?
            .circ
            .as_ref()
    }

    /// The client circuit `at`, to command it.
    pub fn circuit_mut(&mut self, at: CircRef) -> Option<&mut Circuit> {
        self.parties
            .get_mut(at.party)?
            .circs
            .get_mut(at.circ)?
            .circ
            .as_mut()
    }

    /// The relays circuit `at` is built through (its path).
    pub fn circuit_relays(&self, at: CircRef) -> &[usize] {
        &self.parties[at.party].circs[at.circ].relays
    }

    /// The events queued for circuit `at` (by [`Driver::circ_event`]'s default).
    pub fn events(&mut self, at: CircRef) -> &mut VecDeque<CircEvent> {
        &mut self.parties[at.party].circs[at.circ].events
    }

    // ----------------------------------------------------------------------------------
    // Links and channels.

    /// Open a link from `from` to relay `to`: an initiator channel at `from` expecting
    /// `expected`, a responder channel at the relay. Returns the initiator's channel index.
    fn connect(&mut self, from: Who, to: usize, expected: PeerIds) -> Result<usize, SimError> {
        let mut digest = [0u8; 32];
        self.rng.fill_bytes(&mut digest);
        let (from_addr, from_name) = match from {
            Who::Party(p) => (self.parties[p].addr, self.parties[p].name.clone()),
            Who::Relay(r) => (self.relays[r].addr.ip(), self.relays[r].name.clone()),
        };
        let to_addr = self.relays[to].addr;
        let certs = self.relays[to]
            .link_keys
            .responder_certs(&digest, wall(self.now))
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let mut rcfg = ChanConfig::default();
        rcfg.peer_addr = Some(from_addr);
        rcfg.my_addrs = vec![to_addr.ip()];
        let resp_max = rcfg.max_outbound_bytes;
        let responder = Channel::responder(rcfg, &certs, self.now, wall(self.now), &mut self.rng);
        let mut icfg = ChanConfig::default();
        icfg.peer_addr = Some(to_addr.ip());
        let chan_max = icfg.max_outbound_bytes.min(resp_max);
        let initiator = Channel::initiator(icfg, expected, Some(digest), self.now, wall(self.now));
        let to_name = self.relays[to].name.clone();
        let from_chans = match from {
            Who::Party(p) => &mut self.parties[p].chans,
            Who::Relay(r) => &mut self.relays[r].chans,
        };
        let li = self.links.len();
        let ic = from_chans.len();
        from_chans.push(ChanSlot {
            chan: initiator,
            side: 0,
            peer_addr: to_addr.ip(),
            peer_name: to_name,
            waiting: Vec::new(),
            pending: Vec::new(),
            link: (li, 0),
        });
        let rc = self.relays[to].chans.len();
        self.relays[to].chans.push(ChanSlot {
            chan: responder,
            side: 1,
            peer_addr: from_addr,
            peer_name: from_name,
            waiting: Vec::new(),
            pending: Vec::new(),
            link: (li, 1),
        });
        let params = self.link_params(node_of(from), Node::Relay(to));
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
            burst: [0; 2],
            params,
            blocked: [false; 2],
            chan_max,
        });
        Ok(ic)
    }

    pub(crate) fn slot(&mut self, ep: Endpoint) -> &mut ChanSlot {
        match ep.who {
            Who::Party(p) => &mut self.parties[p].chans[ep.chan],
            Who::Relay(r) => &mut self.relays[r].chans[ep.chan],
        }
    }

    /// Start a circuit for party `p` through `path` (relay indices), the first hop created
    /// with `first_hop` and the others extended with ntor-v3. The party opens a channel to the
    /// first relay unless it has one (tor-spec §5.3.1); the circuit is created when that
    /// channel is open, and extended hop by hop as the hops are added. Nothing moves until
    /// [`Net::pump`].
    pub fn build_circuit(
        &mut self,
        p: usize,
        path: &[usize],
        first_hop: HandshakeKind,
    ) -> Result<CircRef, SimError> {
        let first = *path
            .first()
            .ok_or(SimError::Setup("empty path".to_owned()))?;
        if path.iter().any(|&r| r >= self.relays.len()) || p >= self.parties.len() {
            return Err(SimError::Setup("no such relay or party".to_owned()));
        }
        let targets: Vec<HopTarget> = path.iter().map(|&r| self.relay_target(r)).collect();
        let peer = self.relays[first].addr.ip();
        let existing = self.parties[p]
            .chans
            .iter()
            .position(|s| s.peer_addr == peer && !s.chan.is_closed());
        let chan = match existing {
            Some(c) => c,
            None => {
                let name = self.relays[first].name.clone();
                let addr = self.relays[first].addr;
                let pname = self.parties[p].name.clone();
                self.log(
                    &pname,
                    format!(
                        "opening a channel to the {name} at {addr} (link handshake over in-memory TCP)"
                    ),
                );
                let expected = PeerIds {
                    rsa: Some(targets[0].rsa_id),
                    ed25519: targets[0].ed_id,
                };
                self.connect(Who::Party(p), first, expected)?
            }
        };
        let party = &mut self.parties[p];
        let ci = party.circs.len();
        party.circs.push(PartyCirc {
            circ: None,
            chan,
            id: None,
            kind: first_hop,
            path: targets,
            relays: path.to_vec(),
            events: VecDeque::new(),
        });
        let at = CircRef { party: p, circ: ci };
        if party.chans[chan].chan.is_open() {
            self.party_create(at);
        } else {
            party.chans[chan].pending.push(ci);
        }
        Ok(at)
    }

    /// Everything that is ready now, until nothing moves.
    pub fn pump(&mut self, d: &mut dyn Driver) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            for p in 0..self.parties.len() {
                moved |= self.party_step(p, d);
            }
            for r in 0..self.relays.len() {
                for c in 0..self.relays[r].chans.len() {
                    moved |= self.chan_events(
                        Endpoint {
                            who: Who::Relay(r),
                            chan: c,
                        },
                        d,
                    );
                }
                for i in 0..self.relays[r].circs.len() {
                    moved |= self.relay_circ_step(r, i);
                }
            }
            for r in 0..self.relays.len() {
                moved |= self.with_edges(r, |e, cx| e.step(cx));
            }
            moved |= d.step(self);
            self.flush_links();
            if !moved {
                return;
            }
        }
    }

    /// The next time something is due: what is in flight ([`Net::next_activity`]) or a relay
    /// circuit's timer ([`Net::relay_timeout`]: the end of a half-closed exit stream's
    /// window). [`Net::advance`] moves the clock there, so every relay timer fires at its
    /// time. Channel and client-circuit timers (keepalives, idle checks) are not counted:
    /// they recur, and an idle network is quiet. See [`Net::party_timeout`] for a driver that
    /// waits on them.
    pub fn next_time(&self, d: &dyn Driver) -> Option<Instant> {
        match (self.next_activity(d), self.relay_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next time something in flight is due: a link delivery, an edge's delivery, or the
    /// driver's timer. `None` means the network is quiet (timers may still be pending).
    pub fn next_activity(&self, d: &dyn Driver) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for l in &self.links {
            for p in &l.pipes {
                consider(p.next_at());
            }
            for side in 0..2 {
                if l.blocked[side] {
                    consider(Some(l.half_drained_at(side)));
                }
            }
        }
        for r in &self.relays {
            for e in &r.edges {
                consider(e.next_time());
            }
        }
        consider(d.next_time(self));
        t
    }

    /// The earliest timer of the relays' circuits ([`RelayCircuit::poll_timeout`]).
    pub fn relay_timeout(&self) -> Option<Instant> {
        self.relays
            .iter()
            .flat_map(|r| r.circs.iter().flatten())
            .filter_map(|rc| rc.circ.poll_timeout())
            .min()
    }

    /// The earliest timer of party `p`'s channels and circuits.
    pub fn party_timeout(&self, p: usize) -> Option<Instant> {
        let party = &self.parties[p];
        let chans = party.chans.iter().filter_map(|s| s.chan.poll_timeout());
        let circs = party
            .circs
            .iter()
            .filter_map(|c| c.circ.as_ref().and_then(Circuit::poll_timeout));
        chans.chain(circs).min()
    }

    /// Move the clock to `next` (never back), deliver what is due and fire due timers.
    pub fn advance_to(&mut self, next: Instant, d: &mut dyn Driver) {
        self.now = self.now.max(next);
        self.deliver_due(d);
        self.timeouts();
    }

    /// Move the clock to the next due time ([`Net::next_time`]); false if nothing is due.
    pub fn advance(&mut self, d: &mut dyn Driver) -> bool {
        match self.next_time(d) {
            Some(t) => {
                self.advance_to(t, d);
                true
            }
            None => false,
        }
    }

    /// Pump and advance until the network is quiet (nothing in flight,
    /// [`Net::next_activity`]) or `limit` (virtual time) passes; false if the limit passed.
    /// Relay timers due before the last activity fire on the way, at their time; later ones
    /// stay pending (a half-closed stream's window outlives the exchange that ended it) and
    /// fire when the clock reaches them ([`Net::advance`], [`Net::run_timers`]).
    pub fn run_quiet(&mut self, d: &mut dyn Driver, limit: Instant) -> bool {
        loop {
            self.pump(d);
            if self.next_activity(d).is_none() {
                return true;
            }
            match self.next_time(d) {
                None => return true,
                Some(t) if t > limit => return false,
                Some(t) => self.advance_to(t, d),
            }
        }
    }

    /// Pump and advance until nothing at all is due, pending relay timers included, or
    /// `limit` passes; false if the limit passed.
    pub fn run_timers(&mut self, d: &mut dyn Driver, limit: Instant) -> bool {
        loop {
            self.pump(d);
            match self.next_time(d) {
                None => return true,
                Some(t) if t > limit => return false,
                Some(t) => self.advance_to(t, d),
            }
        }
    }

    fn timeouts(&mut self) {
        let now = self.now;
        for party in &mut self.parties {
            for s in &mut party.chans {
                if s.chan.poll_timeout().is_some_and(|t| t <= now) {
                    s.chan.handle_timeout(now);
                }
            }
        }
        for r in &mut self.relays {
            for s in &mut r.chans {
                if s.chan.poll_timeout().is_some_and(|t| t <= now) {
                    s.chan.handle_timeout(now);
                }
            }
            for rc in r.circs.iter_mut().flatten() {
                if rc.circ.poll_timeout().is_some_and(|t| t <= now) {
                    rc.circ.handle_timeout(now);
                }
            }
        }
        for party in &mut self.parties {
            for c in party.circs.iter_mut().filter_map(|c| c.circ.as_mut()) {
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now);
                }
            }
        }
    }

    /// Deliver every byte chunk and edge event due at `now`.
    fn deliver_due(&mut self, d: &mut dyn Driver) {
        let now = self.now;
        // A full link that has half drained takes cells again (the relays are pumped next).
        for l in &mut self.links {
            for side in 0..2 {
                if l.blocked[side] && l.half_drained_at(side) <= now {
                    l.blocked[side] = false;
                }
            }
        }
        for li in 0..self.links.len() {
            for side in 0..2 {
                while let Some(mut bytes) = self.links[li].pipes[side].pop_due(now) {
                    let ep = self.links[li].ends[side];
                    self.feed(ep, &bytes, d);
                    if self.pool.len() < POOL_BUFS && bytes.capacity() <= POOL_BUF_CAP {
                        bytes.clear();
                        self.pool.push(bytes);
                    }
                }
            }
        }
        for r in 0..self.relays.len() {
            self.with_edges(r, |e, cx| {
                e.deliver_due(cx);
                false
            });
        }
    }

    /// Give bytes to a channel, handling its events as they come.
    pub(crate) fn feed(&mut self, ep: Endpoint, bytes: &[u8], d: &mut dyn Driver) {
        self.link_bytes += bytes.len() as u64;
        let mut off = 0;
        while off < bytes.len() {
            let now = self.now;
            let n = self.slot(ep).chan.handle_input(now, &bytes[off..]);
            if self.slot(ep).chan.is_closed() {
                // The violation arrives as ChanEvent::Closed.
                self.chan_events(ep, d);
                return;
            }
            off += n;
            let had = self.chan_events(ep, d);
            if n == 0 && !had {
                // The channel refuses input without telling why: drop the rest.
                return;
            }
        }
        self.chan_events(ep, d);
    }

    fn flush_links(&mut self) {
        let now = self.now;
        for li in 0..self.links.len() {
            let (lat, bw) = (
                self.links[li].params.latency,
                self.links[li].params.bandwidth,
            );
            for side in 0..2 {
                let ep = self.links[li].ends[side];
                if self.slot(ep).chan.outbound_len() == 0 {
                    continue;
                }
                let mut out = self.take_buf(self.links[li].burst[side]);
                if self.slot(ep).chan.poll_transmit(&mut out).is_some() {
                    let record = self.links[li].params.record_size;
                    if record > 0 && out.len() > record {
                        // Records arrive one by one, as they are carried.
                        for piece in out.chunks(record) {
                            let mut b = self.take_buf(record);
                            b.extend_from_slice(piece);
                            self.links[li].pipes[1 - side].push(now, b, lat, bw);
                        }
                        if self.pool.len() < POOL_BUFS {
                            out.clear();
                            self.pool.push(out);
                        }
                        continue;
                    }
                    let link = &mut self.links[li];
                    link.burst[side] = out.capacity();
                    link.pipes[1 - side].push(now, out, lat, bw);
                } else if self.pool.len() < POOL_BUFS {
                    self.pool.push(out);
                }
            }
        }
    }

    /// An empty buffer of at least `want` bytes' capacity for a channel to write its next
    /// burst into: the smallest such buffer of the pool, else a new one.
    /// A channel given a smaller buffer than its bursts regrows it every time, and large
    /// regrowths take fresh pages from the system (page faults).
    fn take_buf(&mut self, want: usize) -> Vec<u8> {
        let mut best: Option<usize> = None;
        for (i, b) in self.pool.iter().enumerate() {
            let better = match best {
                None => true,
                Some(j) => {
                    let (cb, cj) = (b.capacity(), self.pool[j].capacity());
                    if cj >= want {
                        cb >= want && cb < cj
                    } else {
                        cb > cj
                    }
                }
            };
            if better {
                best = Some(i);
            }
        }
        match best {
            Some(i) if self.pool[i].capacity() >= want => self.pool.swap_remove(i),
            _ => Vec::with_capacity(want.min(POOL_BUF_CAP)),
        }
    }

    /// Drain a channel's events; returns whether there were any.
    fn chan_events(&mut self, ep: Endpoint, d: &mut dyn Driver) -> bool {
        let mut any = false;
        while let Some(ev) = self.slot(ep).chan.poll_event() {
            any = true;
            match ep.who {
                Who::Party(p) => self.party_chan_event(p, ep.chan, ev, d),
                Who::Relay(r) => self.relay_chan_event(r, ep.chan, ev),
            }
        }
        any
    }

    // ----------------------------------------------------------------------------------
    // Parties.

    fn party_chan_event(&mut self, p: usize, c: usize, ev: ChanEvent, d: &mut dyn Driver) {
        match ev {
            ChanEvent::Open(open) => {
                let name = self.parties[p].chans[c].peer_name.clone();
                self.log_party(
                    p,
                    format!(
                        "channel to the {name} open: link protocol v{}, the {name} proved its RSA and ed25519 identities",
                        open.link_version
                    ),
                );
                for ci in std::mem::take(&mut self.parties[p].chans[c].pending) {
                    self.party_create(CircRef { party: p, circ: ci });
                }
            }
            ChanEvent::CircuitCell { circ_id, msg } => {
                let now = self.now;
                let party = &mut self.parties[p];
                if let Some(pc) = party
                    .circs
                    .iter_mut()
                    .find(|x| x.chan == c && x.id == Some(circ_id))
                {
                    if let Some(circ) = &mut pc.circ {
                        circ.handle_cell(now, msg);
                    }
                }
            }
            ChanEvent::CircuitKilled { reason, .. } => {
                self.log_party(p, format!("channel killed the circuit: {reason}"));
            }
            ChanEvent::Closed(e) => {
                let ci: Vec<usize> = std::mem::take(&mut self.parties[p].chans[c].pending);
                for i in ci {
                    self.fail_party(p, format!("circuit {i}: its channel closed"));
                }
                d.chan_closed(self, p, e.to_string());
            }
            // Other events (the TLS exporter request of initiator authentication, which the
            // simulated relays do not ask for) need nothing from a party. (The channel's
            // event set is still growing: this arm keeps the simulator compiling meanwhile.)
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Create circuit `at` on its (open) channel: CREATE2 or CREATE_FAST to its first relay.
    fn party_create(&mut self, at: CircRef) {
        let now = self.now;
        let party = &mut self.parties[at.party];
        let pc = &mut party.circs[at.circ];
        let kind = pc.kind;
        let config = party.circ_config.clone();
        let (circ, create) = match Circuit::create(config, &pc.path[0], kind, now, &mut self.rng) {
            Ok(x) => x,
            Err(e) => {
                party.failed.get_or_insert(e.to_string());
                return;
            }
        };
        let slot = &mut party.chans[pc.chan];
        let id = match slot.chan.new_circ_id(&mut self.rng) {
            Ok(id) => id,
            Err(e) => {
                party.failed.get_or_insert(e.to_string());
                return;
            }
        };
        if let Err(e) = slot.chan.send(id, &create) {
            party.failed.get_or_insert(e.to_string());
            return;
        }
        pc.circ = Some(circ);
        pc.id = Some(id);
        let what = match kind {
            HandshakeKind::Ntor => "CREATE2 (ntor)",
            HandshakeKind::NtorV3 => "CREATE2 (ntor-v3)",
            HandshakeKind::CreateFast => "CREATE_FAST",
        };
        let name = self.relays[pc.relays[0]].name.clone();
        let pname = party.name.clone();
        self.log(
            &pname,
            format!("circuit {:#010x}: {what} to the {name}", id.get()),
        );
    }

    fn party_step(&mut self, p: usize, d: &mut dyn Driver) -> bool {
        let mut moved = false;
        for c in 0..self.parties[p].chans.len() {
            moved |= self.chan_events(
                Endpoint {
                    who: Who::Party(p),
                    chan: c,
                },
                d,
            );
        }
        for ci in 0..self.parties[p].circs.len() {
            loop {
                let party = &mut self.parties[p];
                let pc = &mut party.circs[ci];
                let (Some(circ), Some(id)) = (pc.circ.as_mut(), pc.id) else {
                    break;
                };
                while let Some(m) = circ.poll_cell(&mut self.rng) {
                    moved = true;
                    let _ = party.chans[pc.chan].chan.send(id, &m);
                }
                // Events may queue cells (extend, begin, requests, SENDMEs): loop.
                let Some(ev) = circ.poll_event() else {
                    break;
                };
                moved = true;
                self.party_circ_event(CircRef { party: p, circ: ci }, ev, d);
            }
        }
        moved
    }

    fn party_circ_event(&mut self, at: CircRef, ev: CircEvent, d: &mut dyn Driver) {
        let CircEvent::HopAdded { hops } = ev else {
            return d.circ_event(self, at, ev);
        };
        let pc = &self.parties[at.party].circs[at.circ];
        if hops == 0 || hops > pc.path.len() {
            // A virtual hop (onion services): the scenario's business.
            return d.circ_event(self, at, ev);
        }
        let names: Vec<String> = pc
            .relays
            .iter()
            .map(|&r| self.relays[r].name.clone())
            .collect();
        let pname = self.parties[at.party].name.clone();
        self.log(
            &pname,
            format!(
                "hop {hops} ({}) added: keys agreed, one more tor1 layer",
                names[hops - 1]
            ),
        );
        if hops == names.len() {
            self.log(&pname, format!("circuit built: {}", names.join(" -> ")));
            return d.circ_event(self, at, ev);
        }
        let now = self.now;
        let party = &mut self.parties[at.party];
        let pc = &mut party.circs[at.circ];
        let t = pc.path[hops].clone();
        let last = hops + 1 == pc.path.len();
        if let Some(c) = &mut pc.circ {
            // The last hop is asked for congestion control if the circuit's configuration
            // says so (C tor asks the exit alone).
            let r = if last {
                c.extend_exit(&t, now, &mut self.rng)
            } else {
                c.extend(&t, now, &mut self.rng)
            };
            if let Err(e) = r {
                party.failed.get_or_insert(e.to_string());
                return;
            }
        }
        self.log(
            &pname,
            format!(
                "EXTEND2 (ntor-v3) in RELAY_EARLY to the {}: extend to the {} at {}",
                names[hops - 1],
                names[hops],
                t.addrs[0]
            ),
        );
    }

    // ----------------------------------------------------------------------------------
    // Relays.

    /// Call `f` on each edge handler of relay `r` with a context; true if any returned true.
    fn with_edges(
        &mut self,
        r: usize,
        mut f: impl FnMut(&mut dyn Edge, &mut RelayCx<'_>) -> bool,
    ) -> bool {
        if self.relays[r].edges.is_empty() {
            return false;
        }
        let mut edges = std::mem::take(&mut self.relays[r].edges);
        let mut any = false;
        {
            let mut cx = RelayCx {
                now: self.now,
                latency: self.cfg.latency,
                bandwidth: self.cfg.bandwidth,
                rng: &mut self.rng,
                story: &mut self.story,
                others_seen: &mut self.others_seen,
                relay: &mut self.relays[r],
            };
            for e in &mut edges {
                any |= f(e.as_mut(), &mut cx);
            }
        }
        self.relays[r].edges = edges;
        any
    }

    fn relay_chan_event(&mut self, r: usize, c: usize, ev: ChanEvent) {
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
                    self.log_relay(
                        r,
                        format!(
                            "accepted a channel from {addr} ({auth}), link v{}",
                            open.link_version
                        ),
                    );
                } else {
                    self.log_relay(
                        r,
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
                self.log_relay(
                    r,
                    format!("channel killed circuit {:#x}: {reason}", circ_id.get()),
                );
            }
            ChanEvent::Closed(_) => {
                let waiting = std::mem::take(&mut self.relays[r].chans[c].waiting);
                for (i, _) in waiting {
                    if let Some(rc) = self.relays[r].circs.get_mut(i).and_then(Option::as_mut) {
                        rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
                    }
                }
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

    /// A cell for circuit `id` on channel `c` of relay `r` (tor-spec §5.5.1: one for an
    /// unknown circuit that is not a CREATE is dropped).
    pub(crate) fn relay_circ_cell(
        &mut self,
        r: usize,
        c: usize,
        id: CircId,
        msg: ChanMsg<'static>,
    ) {
        let now = self.now;
        if let Some(&i) = self.relays[r].by_client.get(&(c, id)) {
            if matches!(msg, ChanMsg::Destroy(_)) {
                self.relays[r].by_client.remove(&(c, id));
                self.log_relay(
                    r,
                    "DESTROY from the client side: tearing down, passing it on",
                );
            }
            if let Some(rc) = self.relays[r].circs[i].as_mut() {
                rc.circ.handle_from_client(now, msg);
            }
            return;
        }
        if let Some(&i) = self.relays[r].by_next.get(&(c, id)) {
            match &msg {
                ChanMsg::Created2(_) => {
                    self.log_relay(
                        r,
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
                rc.circ.handle_from_next(now, msg);
            }
            return;
        }
        let what = match &msg {
            ChanMsg::Create2(c2) => format!("CREATE2 ({:?})", c2.handshake_type),
            ChanMsg::CreateFast(_) => "CREATE_FAST".to_owned(),
            _ => return,
        };
        let peer = self.relays[r].chans[c].peer_addr;
        let relay = &self.relays[r];
        match RelayCircuit::accept_with(&relay.keys, &relay.config, &msg, now, &mut self.rng) {
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
                    spliced: None,
                }));
                relay.by_client.insert((c, id), i);
                self.log_relay(
                    r,
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
                self.log_relay(r, format!("{what} from {peer} refused: {e}"));
            }
        }
    }

    /// Move a relay circuit's outputs to its channels (or its joined circuit) and act on its
    /// events.
    fn relay_circ_step(&mut self, r: usize, i: usize) -> bool {
        let mut moved = false;
        loop {
            let relay = &mut self.relays[r];
            let Some(rc) = relay.circs[i].as_mut() else {
                return moved;
            };
            let (client, next, spliced) = (rc.client, rc.next, rc.spliced);
            // How many cells each side's channel takes now (a link with a bounded queue).
            let to_client = allowance(&mut self.links, &relay.chans[client.0], self.now);
            let to_next = next.map_or(usize::MAX, |n| {
                allowance(&mut self.links, &relay.chans[n.0], self.now)
            });
            rc.circ.set_client_channel_blocked(to_client == 0);
            // Each output goes to its channel as it comes (this runs for every cell: no
            // collecting them first).
            let mut sent = false;
            let mut left = to_next;
            while left > 0 {
                let Some(m) = rc.circ.poll_to_next() else {
                    break;
                };
                left -= 1;
                sent = true;
                if let Some(n) = next {
                    let _ = relay.chans[n.0].chan.send(n.1, &m);
                    if matches!(m, ChanMsg::Destroy(_)) {
                        relay.by_next.remove(&n);
                        rc.next = None;
                    }
                } else if matches!(m, ChanMsg::Destroy(_)) {
                    // Still connecting: forget the pending CREATE2.
                    for s in &mut relay.chans {
                        s.waiting.retain(|(w, _)| *w != i);
                    }
                }
            }
            let mut left = to_client;
            while left > 0 {
                let Some(m) = rc.circ.poll_to_client(&mut self.rng) else {
                    break;
                };
                left -= 1;
                sent = true;
                let _ = relay.chans[client.0].chan.send(client.1, &m);
                if matches!(m, ChanMsg::Destroy(_)) {
                    relay.by_client.remove(&client);
                }
            }
            let mut joined = Vec::new();
            if spliced.is_some() {
                while let Some(b) = rc.circ.poll_spliced() {
                    joined.push(b);
                }
            }
            let ev = if !sent && joined.is_empty() {
                rc.circ.poll_event()
            } else {
                None
            };
            let closed = rc.circ.is_closed();
            if !sent && joined.is_empty() && ev.is_none() {
                if closed {
                    let now = self.now;
                    if let Some(rc) = relay.circs[i].take() {
                        relay.by_client.remove(&rc.client);
                        if let Some(n) = rc.next {
                            relay.by_next.remove(&n);
                        }
                        // A rendezvous point tears the joined circuit down with it: to that
                        // circuit, its partner is its next hop, and a DESTROY from the next
                        // hop travels on toward its client (tor-spec §5.4).
                        let partner = rc.spliced.and_then(|j| relay.circs.get_mut(j)?.as_mut());
                        if let Some(other) = partner {
                            other.spliced = None;
                            other
                                .circ
                                .handle_from_next(now, ChanMsg::Destroy(DestroyReason::FINISHED));
                            self.log_relay(
                                r,
                                "joined circuit closed: DESTROY (FINISHED) to the other side",
                            );
                            moved = true;
                        }
                    }
                }
                return moved;
            }
            moved = true;
            if let Some(other) = spliced.and_then(|j| relay.circs.get_mut(j)?.as_mut()) {
                for b in joined {
                    let _ = other.circ.splice_in(b);
                }
            }
            if let Some(ev) = ev {
                self.relay_event(r, i, ev);
            }
        }
    }

    fn relay_event(&mut self, r: usize, i: usize, ev: RelayEvent) {
        let ev = match ev {
            RelayEvent::Extend(req) => return self.extend(r, i, req),
            RelayEvent::StreamEnded { stream, reason } => {
                self.log_relay(
                    r,
                    format!("stream {stream}: ended by the client ({reason:?})"),
                );
                RelayEvent::StreamEnded { stream, reason }
            }
            RelayEvent::Closed { error } => {
                let stats = self.relays[r].circs[i]
                    .as_ref()
                    .map(|rc| rc.circ.stats())
                    .unwrap_or_default();
                self.relays[r].closed_stats = Some(stats);
                let extra = if stats.data_cells_sent > 0 || stats.circ_sendmes_received > 0 {
                    format!(
                        " ({} DATA cells sent, {} circuit SENDMEs checked)",
                        stats.data_cells_sent, stats.circ_sendmes_received
                    )
                } else {
                    String::new()
                };
                match &error {
                    None => self.log_relay(r, format!("circuit closed{extra}")),
                    Some(e) => self.log_relay(r, format!("circuit closed on error: {e}{extra}")),
                }
                RelayEvent::Closed { error }
            }
            other => other,
        };
        let mut left = Some(ev);
        self.with_edges(r, |e, cx| {
            if let Some(ev) = left.take() {
                left = e.on_event(cx, i, ev);
            }
            false
        });
        if let Some(ev) = left {
            self.relay_default(r, i, ev);
        }
    }

    /// What a relay without an edge service answers.
    fn relay_default(&mut self, r: usize, i: usize, ev: RelayEvent) {
        let Some(rc) = self.relays[r].circs[i].as_mut() else {
            return;
        };
        match ev {
            RelayEvent::Begin {
                stream, host, port, ..
            } => {
                let _ = rc.circ.end_stream(stream, EndReason::EXITPOLICY);
                self.relays[r].seen.insert(format!("{host}:{port}"));
                self.log_relay(r, format!("stream {stream}: BEGIN {host}:{port}"));
                self.log_relay(
                    r,
                    format!("stream {stream}: refused ({:?})", EndReason::EXITPOLICY),
                );
            }
            RelayEvent::BeginDir { stream } => {
                let _ = rc.circ.end_stream(stream, EndReason::NOTDIRECTORY);
                self.log_relay(
                    r,
                    format!("stream {stream}: BEGIN_DIR refused, no directory service here"),
                );
            }
            RelayEvent::Resolve { stream, query } => {
                let value = ResolvedValue::NontransientError(b"Not an exit".to_vec().into());
                let _ = rc
                    .circ
                    .resolved(stream, vec![ResolvedAnswer { value, ttl: 300 }]);
                self.log_relay(r, format!("RESOLVE {query} refused: not an exit"));
            }
            _ => {}
        }
    }

    fn extend(&mut self, r: usize, i: usize, req: onion_circuit::relay::ExtendRequest) {
        let Some(addr) = req.addrs.first().copied() else {
            if let Some(rc) = self.relays[r].circs[i].as_mut() {
                rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
            }
            return;
        };
        self.relays[r].seen.insert(addr.to_string());
        self.log_relay(
            r,
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
                self.log_relay(r, format!("opening a channel to the {peer} at {addr}"));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_cell::relaymsg::BeginFlags;
    use std::net::Ipv4Addr;

    fn one_relay_net() -> (Net, CircRef) {
        let mut net = Net::new(NetConfig {
            seed: 9,
            latency: Duration::from_millis(5),
            bandwidth: 0,
            story: true,
        });
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)), 9001);
        let r = net.add_relay("exit", addr).expect("relay");
        let p = net.add_party("client", IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
        let at = net
            .build_circuit(p, &[r], HandshakeKind::NtorV3)
            .expect("build");
        (net, at)
    }

    fn limit() -> Instant {
        Instant::ZERO + Duration::from_secs(3600)
    }

    /// The circuit map finds what was inserted, forgets what was removed, and its
    /// most-recently-used shortcut never answers for a key it does not hold (removal moves
    /// entries around).
    #[test]
    fn circ_map_lookups() {
        let mut m = CircMap::default();
        let k = |c: usize, id: u32| (c, CircId::new(id));
        assert!(m.is_empty());
        for i in 0..5 {
            m.insert(k(i % 2, 0x8000_0000 + i as u32), i);
        }
        assert_eq!(m.get(&k(0, 0x8000_0004)), Some(&4));
        assert_eq!(
            m.get(&k(1, 0x8000_0004)),
            None,
            "same id on another channel"
        );
        assert_eq!(m.remove(&k(0, 0x8000_0000)), Some(0));
        // The shortcut pointed at the last entry, which the removal moved to slot 0.
        assert_eq!(m.get(&k(0, 0x8000_0004)), Some(&4));
        assert_eq!(m.get(&k(0, 0x8000_0000)), None);
        m.insert(k(1, 0x8000_0001), 9);
        assert_eq!(m.get(&k(1, 0x8000_0001)), Some(&9), "insert replaces");
        for i in 1..5 {
            assert!(m.remove(&k(i % 2, 0x8000_0000 + i as u32)).is_some());
        }
        assert!(m.is_empty());
        assert_eq!(m.get(&k(1, 0x8000_0001)), None);
    }

    /// The relay's only open circuit.
    fn relay_circ(net: &Net) -> &RelayCircuit {
        &net.relays[0]
            .circs
            .iter()
            .flatten()
            .next()
            .expect("relay circuit")
            .circ
    }

    /// tor-spec §6.2.1 as the relay side implements it: a stream the exit ended stays
    /// half-closed until its window ends; the network counts that timer
    /// ([`Net::next_time`]) and fires it at its time, so the stream is forgotten while the
    /// circuit stays open. Waiting for quiet ([`Net::run_quiet`]) does not wait for it.
    #[test]
    fn half_closed_exit_stream_expires_in_the_sim() {
        let (mut net, at) = one_relay_net();
        assert!(net.run_quiet(&mut Queue, limit()));
        assert!(matches!(
            net.events(at).pop_front(),
            Some(CircEvent::HopAdded { hops: 1 })
        ));
        let now = net.now();
        let stream = net
            .circuit_mut(at)
            .expect("circuit")
            .begin("www.example.com", 80, BeginFlags::default(), now)
            .expect("BEGIN");
        // The relay has no exit service: it refuses the BEGIN (EXITPOLICY), which ends the
        // stream on its side and leaves it half-closed there.
        assert!(net.run_quiet(&mut Queue, limit()));
        let ended = net.events(at).iter().any(|e| {
            matches!(e, CircEvent::StreamEnded { stream: s, reason }
                if *s == stream && *reason == EndReason::EXITPOLICY)
        });
        assert!(ended, "{:?}", net.events(at));
        let quiet_at = net.now();
        assert_eq!(relay_circ(&net).n_streams(), 1, "half-closed at the exit");
        let deadline = net.relay_timeout().expect("the half-closed window's end");
        assert!(deadline > quiet_at);
        assert!(deadline <= quiet_at + onion_circuit::relay::DEFAULT_HALF_CLOSED_TIMEOUT);
        assert_eq!(net.next_activity(&Queue), None, "nothing in flight");
        assert_eq!(net.next_time(&Queue), Some(deadline));

        // The clock moves to the timer, which fires: the stream is gone, the circuit stays.
        assert!(net.advance(&mut Queue));
        assert_eq!(net.now(), deadline);
        assert_eq!(relay_circ(&net).n_streams(), 0);
        assert!(!relay_circ(&net).is_closed());
        assert_eq!(net.relay_timeout(), None);
        assert_eq!(net.next_time(&Queue), None);
        assert!(net.run_timers(&mut Queue, limit()));
        assert_eq!(net.now(), deadline);
    }

    /// A relay timer that falls while something is still in flight fires at its own time
    /// ([`Net::run_quiet`] stops the clock there), not late with the next delivery.
    #[test]
    fn run_quiet_fires_relay_timers_on_the_way() {
        /// Records the clock at every pump pass.
        #[derive(Default)]
        struct Clock(Vec<Instant>);
        impl Driver for Clock {
            fn step(&mut self, net: &mut Net) -> bool {
                self.0.push(net.now());
                false
            }
        }
        let (mut net, at) = one_relay_net();
        assert!(net.run_quiet(&mut Queue, limit()));
        net.events(at).clear();
        // A window (3 ms) shorter than the link's latency (5 ms): it ends while the relay's
        // END is still on its way to the client.
        for rc in net.relays[0].circs.iter_mut().flatten() {
            rc.circ.set_half_closed_timeout(Duration::from_millis(3));
        }
        let now = net.now();
        net.circuit_mut(at)
            .expect("circuit")
            .begin("www.example.com", 80, BeginFlags::default(), now)
            .expect("BEGIN");
        let mut clock = Clock::default();
        assert!(net.run_quiet(&mut clock, limit()));
        let ended_at = net.now();
        assert!(net
            .events(at)
            .iter()
            .any(|e| matches!(e, CircEvent::StreamEnded { .. })));
        assert_eq!(relay_circ(&net).n_streams(), 0, "expired");
        // The BEGIN reached the relay one latency after `now`; its window ended 3 ms later,
        // and the clock stopped there, before the END reached the client (one more latency).
        let expiry = now + Duration::from_millis(5 + 3);
        assert!(clock.0.contains(&expiry), "{:?}", clock.0);
        assert!(ended_at > expiry);
    }
}
