//! The client run loop: channels, circuits and streams driven over real sockets.
//!
//! [`Client`] owns every state machine. [`Client::step`] is one turn of the loop described in
//! the [module documentation](super): wait for one input (or the earliest timeout), feed it,
//! route channel cells to their circuits, then drain every circuit's cells into its channel
//! and every channel's bytes into TLS. The blocking helpers ([`Client::connect`],
//! [`Client::create`], [`Client::begin`], [`Client::fetch`]) just call `step` until what
//! they wait for has happened or their deadline passed: every network wait is bounded.
//! [`Client::start_build`] builds a circuit without blocking: each step extends it as its
//! hops are added.
//!
//! Circuits and channels live in [`Slab`]s: a circuit its owner released
//! ([`Client::destroy`]) is freed at the next step, and so is a channel once it closed or
//! its last circuit is gone. Incoming cells find their circuit by (channel, circuit id) in
//! a map.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::time::Duration;

use onion_cell::chancell::DestroyReason;
use onion_cell::relaymsg::{BeginFlags, EndReason};
use onion_cell::CircId;
use onion_circuit::channel::{ChanEvent, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use rand_core::OsRng;

use super::event::{ConnId, Inbox, Input};
use super::guards::Guards;
use super::link::Link;
use super::tls::TlsLink;
use super::Clock;

// What a circuit is for and which onion-service messages it may receive: the one definition
// is onion-client's, shared with the Client.
pub use onion_client::{msg_verdict, Purpose, Verdict};

/// How many events may wait in one circuit's queue for its owner. Data is bounded by the
/// windows (1000 cells per circuit, tor-spec §7.3) and the rest by the streams, so a longer
/// queue means a peer sends what nobody takes; the circuit is closed.
pub const MAX_EVENTS: usize = 4096;

/// A circuit and where it lives.
pub struct Circ {
    /// Index of its channel in the client's links.
    pub link: usize,
    /// Its id on that channel.
    pub id: CircId,
    /// The state machine.
    pub circ: Circuit,
    /// Events not yet taken by the application.
    pub events: VecDeque<CircEvent>,
    /// Why it can no longer be used, once it cannot.
    pub dead: Option<String>,
    /// Leave the circuit's events in the machine: an application that cannot take more data
    /// sets it, so no stream SENDME goes out for data it has not taken (tor-spec §7.4) and
    /// the exit stops. A closed circuit then shows as `circ.is_closed()`, not as `dead`.
    pub hold: bool,
    /// What it is for; set by [`Client::set_purpose`].
    pub purpose: Purpose,
    /// Its owner released it ([`Client::destroy`]): the slot is freed at the next step.
    released: bool,
    /// A build under way ([`Client::start_build`]).
    build: Option<Build>,
}

/// A circuit being built without blocking: the hops still to add, and until when.
struct Build {
    rest: VecDeque<HopTarget>,
    /// Hops once the pending CREATE2 / EXTEND2 is answered.
    want: usize,
    deadline: Instant,
}

/// Where a build started by [`Client::start_build`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildStatus {
    /// Hops are still being added.
    Building,
    /// Every hop was added.
    Built,
    /// It failed after `hops` hops were added (0: the first hop never answered).
    Failed {
        /// Hops that were added.
        hops: usize,
        /// Why.
        why: String,
    },
}

/// What a stream to open is for.
pub enum Target<'a> {
    /// RELAY_BEGIN to `host:port` at the exit.
    Exit(&'a str, u16),
    /// RELAY_BEGIN_DIR to the last hop's directory service.
    Dir,
}

/// Slots addressed by index whose freed indices are reused: circuits and channels live in
/// one, so that what closed is freed while the indices others hold stay valid until then.
/// Indexing a free slot panics, as indexing past a `Vec`'s end does; [`Slab::get`] does not.
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    live: usize,
}

impl<T> Slab<T> {
    /// An empty slab.
    pub fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    /// Store `v` in a free slot (or a new one); returns its index.
    pub fn insert(&mut self, v: T) -> usize {
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(v);
                i
            }
            None => {
                self.slots.push(Some(v));
                self.slots.len() - 1
            }
        }
    }

    /// Take the value out of slot `i`, freeing it.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.slots.get_mut(i)?.take()?;
        self.live -= 1;
        self.free.push(i);
        Some(v)
    }

    /// The value in slot `i`, if any.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.slots.get(i)?.as_ref()
    }

    /// The value in slot `i`, if any.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// How many slots hold a value.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no slot holds a value.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// How many slots exist, used or free (what the slab's memory is proportional to).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The values with their indices.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_ref()?)))
    }

    /// The values with their indices.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_mut()?)))
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}

impl<T> std::ops::Index<usize> for Slab<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(v) => v,
            None => panic!("slot {i} is free"),
        }
    }
}

impl<T> std::ops::IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        match self.get_mut(i) {
            Some(v) => v,
            None => panic!("slot {i} is free"),
        }
    }
}

/// A channel and what the client knows about it.
struct LinkSlot {
    link: Link,
    /// Its handshake completed.
    open: bool,
    /// Why it closed, once it did.
    dead: Option<String>,
    /// Where it goes and whom it must reach (to share it among circuits).
    addr: SocketAddr,
    ids: PeerIds,
    /// Circuit slots on it (live or dead but not yet released).
    circs: usize,
    /// A circuit was created on it: once none is left it is closed.
    used: bool,
}

impl LinkSlot {
    /// A channel whose link handshake has just started.
    fn new(link: Link, addr: SocketAddr, ids: PeerIds) -> LinkSlot {
        LinkSlot {
            link,
            open: false,
            dead: None,
            addr,
            ids,
            circs: 0,
            used: false,
        }
    }
}

/// A channel being opened without blocking the loop ([`Client::start_connect`]).
struct Connecting {
    ids: PeerIds,
    deadline: Instant,
    state: ConnState,
}

enum ConnState {
    /// TCP and TLS run on a thread of their own; the result arrives on the channel (and an
    /// empty input under `wake` wakes the loop).
    Tls {
        rx: Receiver<Result<TlsLink, String>>,
        wake: ConnId,
    },
    /// The channel handshake runs on link `idx` (or the link was already open).
    Handshake(usize),
}

/// Names a channel being opened by [`Client::start_connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTicket(u64);

/// Where a channel opened by [`Client::start_connect`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// TCP, TLS or the channel handshake is under way.
    Pending,
    /// Open: the channel's index (the ticket is used up).
    Ready(usize),
    /// It failed (the ticket is used up).
    Failed(String),
}

/// Channels opened without blocking at the same time, at most (each costs a thread while
/// TCP and TLS run).
pub const MAX_CONNECTING: usize = 32;

/// All the machines of one client, and the loop that drives them.
pub struct Client {
    /// The clock handed to the machines.
    pub clock: Clock,
    inbox: Inbox,
    rng: OsRng,
    links: Slab<LinkSlot>,
    /// Channel by the inbox id of its socket.
    by_conn: HashMap<ConnId, usize>,
    /// Circuit by channel and circuit id: incoming cells find theirs in constant time.
    by_id: HashMap<(usize, CircId), usize>,
    /// The circuits, by index. An index stays valid until [`Client::destroy`]; after the
    /// next step it may name another circuit.
    pub circs: Slab<Circ>,
    /// Inputs for sockets that are not channels (SOCKS clients), kept for the application.
    others: VecDeque<Input>,
    /// Channels being opened without blocking, by ticket.
    connecting: HashMap<u64, Connecting>,
    next_ticket: u64,
    /// The entry guards of every circuit this client builds.
    pub guards: Guards,
    /// Congestion control (proposal 324) to negotiate with exits, off when `None`.
    pub congestion_control: Option<ClientCc>,
}

/// Congestion control for a client's exit circuits: the Vegas parameters (consensus values for
/// exit paths) and the relays it may be asked of, those whose consensus entry lists
/// `FlowCtrl=2` and ntor-v3 (`Relay=4`).
#[derive(Debug, Clone, Default)]
pub struct ClientCc {
    /// The parameters the exit's answer is checked against and Vegas runs with.
    pub config: onion_circuit::cc::CcConfig,
    /// Exits that support congestion control.
    pub exits: std::collections::HashSet<onion_dir::RsaIdentity>,
}

impl Client {
    /// A client with no connections.
    pub fn new() -> Client {
        Client {
            clock: Clock::new(),
            inbox: Inbox::new(),
            rng: OsRng,
            links: Slab::new(),
            by_conn: HashMap::new(),
            by_id: HashMap::new(),
            circs: Slab::new(),
            others: VecDeque::new(),
            connecting: HashMap::new(),
            next_ticket: 0,
            guards: Guards::default(),
            congestion_control: None,
        }
    }

    /// The deadline `d` from now.
    pub fn deadline(&self, d: Duration) -> Instant {
        self.clock.now() + d
    }

    /// The inbox, to register more sockets (SOCKS clients) with the same loop.
    pub fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    /// How many channels and circuits are held now (live, or closed and not yet released by
    /// their owners): what the client's memory grows with.
    pub fn held(&self) -> (usize, usize) {
        (self.links.len(), self.circs.len())
    }

    /// How many circuit slots exist, used or free: the most circuits held at once so far.
    pub fn circuit_slots(&self) -> usize {
        self.circs.slots()
    }

    /// An open channel to `addr` whose peer proved `ids`, to share (tor-spec §2: one channel
    /// carries many circuits).
    fn open_link(&self, addr: SocketAddr, ids: PeerIds) -> Option<usize> {
        self.links
            .iter()
            .find(|(_, l)| l.open && l.dead.is_none() && l.addr == addr && l.ids == ids)
            .map(|(i, _)| i)
    }

    /// A channel to `addr`, which must prove `ids`; returns its index. An open channel to
    /// the same relay is shared (tor-spec §2: one channel carries many circuits), so only
    /// the first circuit through a guard waits for TCP, TLS and the link handshake.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        ids: PeerIds,
        deadline: Instant,
    ) -> Result<usize, String> {
        if let Some(idx) = self.open_link(addr, ids) {
            return Ok(idx);
        }
        let timeout = self.clock.until(deadline).max(Duration::from_secs(1));
        let link = Link::connect(&mut self.inbox, &self.clock, addr, ids, timeout)?;
        let conn = link.conn;
        let idx = self.links.insert(LinkSlot::new(link, addr, ids));
        self.by_conn.insert(conn, idx);
        loop {
            self.dispatch();
            if let Some(e) = &self.links[idx].dead {
                return Err(e.clone());
            }
            if self.links[idx].open {
                return Ok(idx);
            }
            if let Err(e) = self.step(deadline) {
                self.kill_link(idx, &e);
                return Err(format!("{addr}: link handshake: {e}"));
            }
        }
    }

    /// Start opening a channel to `addr`, which must prove `ids`, without waiting: TCP and
    /// TLS on a thread of their own, then the channel handshake in the loop, all within
    /// `deadline`; [`Client::link_status`] tells when it is open. An open channel to the
    /// same relay is shared. At most [`MAX_CONNECTING`] at a time.
    pub fn start_connect(
        &mut self,
        addr: SocketAddr,
        ids: PeerIds,
        deadline: Instant,
    ) -> Result<LinkTicket, String> {
        let t = self.next_ticket;
        self.next_ticket += 1;
        let state = match self.open_link(addr, ids) {
            Some(idx) => ConnState::Handshake(idx),
            None => {
                if self.connecting.len() >= MAX_CONNECTING {
                    return Err(format!("{MAX_CONNECTING} channels already being opened"));
                }
                let (wake, wake_tx) = self.inbox.sender();
                let (tx, rx) = channel();
                let timeout = self.clock.until(deadline).max(Duration::from_secs(1));
                std::thread::Builder::new()
                    .name(format!("tls-{addr}"))
                    .spawn(move || {
                        let r = TlsLink::connect(addr, timeout).map_err(|e| e.to_string());
                        if tx.send(r).is_ok() {
                            let _ = wake_tx.send(Input::Bytes(wake, Vec::new()));
                        }
                    })
                    .map_err(|e| format!("{addr}: {e}"))?;
                ConnState::Tls { rx, wake }
            }
        };
        self.connecting.insert(
            t,
            Connecting {
                ids,
                deadline,
                state,
            },
        );
        Ok(LinkTicket(t))
    }

    /// How the channel of ticket `t` ([`Client::start_connect`]) goes. Once it is ready or
    /// failed, the ticket is used up.
    pub fn link_status(&mut self, t: LinkTicket) -> LinkStatus {
        let now = self.clock.now();
        let Some(c) = self.connecting.get_mut(&t.0) else {
            return LinkStatus::Failed("no such channel being opened".into());
        };
        if let ConnState::Tls { rx, .. } = &c.state {
            match rx.try_recv() {
                Ok(Ok(tls)) => {
                    let addr = tls.addr();
                    let timeout = self.clock.until(c.deadline).max(Duration::from_secs(1));
                    let ids = c.ids;
                    match Link::over(tls, &mut self.inbox, &self.clock, ids, timeout) {
                        Ok(link) => {
                            let conn = link.conn;
                            let idx = self.links.insert(LinkSlot::new(link, addr, ids));
                            self.by_conn.insert(conn, idx);
                            c.state = ConnState::Handshake(idx);
                        }
                        Err(e) => {
                            self.connecting.remove(&t.0);
                            return LinkStatus::Failed(e);
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.connecting.remove(&t.0);
                    return LinkStatus::Failed(e);
                }
                Err(TryRecvError::Disconnected) => {
                    self.connecting.remove(&t.0);
                    return LinkStatus::Failed("connecting thread gone".into());
                }
                Err(TryRecvError::Empty) if now >= c.deadline => {
                    self.connecting.remove(&t.0);
                    return LinkStatus::Failed("timed out connecting".into());
                }
                Err(TryRecvError::Empty) => return LinkStatus::Pending,
            }
        }
        let (ConnState::Handshake(idx), deadline) = (&c.state, c.deadline) else {
            return LinkStatus::Pending;
        };
        let idx = *idx;
        let status = match self.links.get(idx) {
            None => LinkStatus::Failed("channel closed".into()),
            Some(l) => match &l.dead {
                Some(why) => LinkStatus::Failed(why.clone()),
                None if l.open => LinkStatus::Ready(idx),
                None if now >= deadline => {
                    self.kill_link(idx, "link handshake timed out");
                    LinkStatus::Failed("link handshake timed out".into())
                }
                None => return LinkStatus::Pending,
            },
        };
        self.connecting.remove(&t.0);
        if let (LinkStatus::Ready(_), Some(l)) = (&status, self.links.get_mut(idx)) {
            // Its owner builds a circuit on it now; without one it is closed at the next step.
            l.used = true;
        }
        status
    }

    /// Give up the channel of ticket `t`: one still opening is closed (a TLS connection that
    /// completes later is dropped).
    pub fn cancel_connect(&mut self, t: LinkTicket) {
        if let Some(Connecting {
            state: ConnState::Handshake(idx),
            ..
        }) = self.connecting.remove(&t.0)
        {
            if let Some(l) = self.links.get_mut(idx) {
                l.used = true;
            }
        }
    }

    /// The earliest deadline of the channels being opened.
    fn connect_deadline(&self) -> Option<Instant> {
        self.connecting.values().map(|c| c.deadline).min()
    }

    /// Send CREATE2 for a new circuit on channel `link`; returns the circuit's index.
    fn start_create(
        &mut self,
        link: usize,
        first: &HopTarget,
        kind: HandshakeKind,
        deadline: Instant,
    ) -> Result<usize, String> {
        let slot = self.links.get_mut(link).ok_or("no such channel")?;
        if let Some(why) = &slot.dead {
            return Err(why.clone());
        }
        let l = &mut slot.link;
        let id = l
            .chan
            .new_circ_id(&mut self.rng)
            .map_err(|e| format!("circuit id: {e}"))?;
        let config = CircConfig {
            build_timeout: self.clock.until(deadline).max(Duration::from_secs(1)),
            congestion_control: self.congestion_control.as_ref().map(|c| Box::new(c.config)),
            ..CircConfig::default()
        };
        let (circ, create) = Circuit::create(config, first, kind, self.clock.now(), &mut self.rng)
            .map_err(|e| format!("create: {e}"))?;
        l.chan
            .send(id, &create)
            .map_err(|e| format!("create: {e}"))?;
        if let Err(e) = l.pump(&self.clock) {
            self.kill_link(link, &e);
            return Err(e);
        }
        slot.circs += 1;
        slot.used = true;
        let c = self.circs.insert(Circ {
            link,
            id,
            circ,
            events: VecDeque::new(),
            dead: None,
            hold: false,
            purpose: Purpose::General,
            released: false,
            build: None,
        });
        self.by_id.insert((link, id), c);
        Ok(c)
    }

    /// Create a one-hop circuit to the relay at the far end of channel `link`.
    pub fn create(
        &mut self,
        link: usize,
        first: &HopTarget,
        kind: HandshakeKind,
        deadline: Instant,
    ) -> Result<usize, String> {
        let c = self.start_create(link, first, kind, deadline)?;
        self.wait_hops(c, 1, deadline)?;
        Ok(c)
    }

    /// Start building a circuit through `hops` without waiting: CREATE2 (ntor) to the first
    /// over `link` now, then EXTEND2 to each next hop as the previous one is added
    /// ([`CircEvent::HopAdded`]), all within `deadline`. [`Client::build_status`] tells how
    /// it goes; a build past its deadline is destroyed and failed.
    pub fn start_build(
        &mut self,
        link: usize,
        hops: &[HopTarget],
        deadline: Instant,
    ) -> Result<usize, String> {
        let (first, rest) = hops.split_first().ok_or("empty path")?;
        let c = self.start_create(link, first, HandshakeKind::Ntor, deadline)?;
        let mut rest: VecDeque<HopTarget> = rest.iter().cloned().collect();
        // The exit of a congestion-controlled circuit is reached with ntor-v3, which carries
        // the request (proposal 324 §4.1).
        if let (Some(cc), Some(exit)) = (&self.congestion_control, rest.back_mut()) {
            exit.ntor_v3 |= exit.ed_id.is_some() && cc.exits.contains(&exit.rsa_id);
        }
        self.circs[c].build = Some(Build {
            rest,
            want: 1,
            deadline,
        });
        Ok(c)
    }

    /// How the build of circuit `c` ([`Client::start_build`]) goes.
    pub fn build_status(&self, c: usize) -> BuildStatus {
        match self.circs.get(c) {
            None => BuildStatus::Failed {
                hops: 0,
                why: "no such circuit".into(),
            },
            Some(circ) => match (&circ.dead, &circ.build) {
                (Some(why), _) => BuildStatus::Failed {
                    hops: circ.circ.n_hops(),
                    why: why.clone(),
                },
                (None, Some(_)) => BuildStatus::Building,
                (None, None) => BuildStatus::Built,
            },
        }
    }

    /// Advance the builds under way: extend the circuits whose last hop was added, fail the
    /// ones past their deadline.
    fn advance_builds(&mut self) {
        let now = self.clock.now();
        let building: Vec<usize> = self
            .circs
            .iter()
            .filter(|(_, c)| c.build.is_some() && c.dead.is_none())
            .map(|(i, _)| i)
            .collect();
        for c in building {
            let want = self.circs[c].build.as_ref().map_or(0, |b| b.want);
            let added = self
                .take_event(
                    c,
                    |e| matches!(e, CircEvent::HopAdded { hops } if *hops >= want),
                )
                .is_some();
            let circ = &mut self.circs[c];
            let Some(b) = circ.build.as_mut() else {
                continue;
            };
            if added {
                match b.rest.pop_front() {
                    None => {
                        circ.build = None;
                        continue;
                    }
                    Some(next) => {
                        b.want += 1;
                        // Only the last hop is asked for congestion control.
                        let r = if b.rest.is_empty() {
                            circ.circ.extend_exit(&next, now, &mut self.rng)
                        } else {
                            circ.circ.extend(&next, now, &mut self.rng)
                        };
                        if let Err(e) = r {
                            circ.dead = Some(format!("extend: {e}"));
                            continue;
                        }
                    }
                }
            }
            if now >= b.deadline {
                let hops = circ.circ.n_hops();
                circ.circ.destroy();
                circ.dead = Some(format!("timed out building hop {}", hops + 1));
            }
        }
    }

    fn wait_hops(&mut self, c: usize, hops: usize, deadline: Instant) -> Result<(), String> {
        loop {
            if self
                .take_event(
                    c,
                    |e| matches!(e, CircEvent::HopAdded { hops: h } if *h >= hops),
                )
                .is_some()
            {
                return Ok(());
            }
            self.check_alive(c)?;
            self.step(deadline)
                .map_err(|e| format!("building hop {hops}: {e}"))?;
        }
    }

    /// Declare what circuit `c` is for: which onion-service messages it may receive
    /// ([`msg_verdict`]).
    pub fn set_purpose(&mut self, c: usize, purpose: Purpose) {
        if let Some(circ) = self.circs.get_mut(c) {
            circ.purpose = purpose;
        }
    }
    /// Open a stream on circuit `c`; waits for RELAY_CONNECTED.
    pub fn begin(
        &mut self,
        c: usize,
        target: Target<'_>,
        deadline: Instant,
    ) -> Result<StreamId, BeginError> {
        let now = self.clock.now();
        let circ = &mut self
            .circs
            .get_mut(c)
            .ok_or_else(|| BeginError::Failed("no such circuit".into()))?
            .circ;
        let s = match target {
            Target::Exit(host, port) => circ.begin(host, port, BeginFlags(0), now),
            Target::Dir => circ.begin_dir(now),
        }
        .map_err(|e| BeginError::Failed(format!("begin: {e}")))?;
        loop {
            let ev = self.take_event(c, |e| match e {
                CircEvent::StreamConnected { stream, .. } => *stream == s,
                CircEvent::StreamEnded { stream, .. } => *stream == s,
                _ => false,
            });
            match ev {
                Some(CircEvent::StreamEnded { reason, .. }) => {
                    return Err(BeginError::Refused(reason))
                }
                Some(_) => return Ok(s),
                None => self.check_alive(c).map_err(BeginError::Failed)?,
            }
            self.step(deadline)
                .map_err(|e| BeginError::Failed(format!("opening stream: {e}")))?;
        }
    }

    /// Send `request` on stream `s` of circuit `c` and collect everything until the stream
    /// ends; `progress` sees the byte count as data arrives. At most `max` bytes are kept.
    pub fn fetch(
        &mut self,
        c: usize,
        s: StreamId,
        request: &[u8],
        max: usize,
        deadline: Instant,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<u8>, String> {
        let mut pending = request;
        let mut body = Vec::new();
        loop {
            if !pending.is_empty() && self.check_alive(c).is_ok() {
                let n = self.circs[c]
                    .circ
                    .send(s, pending)
                    .map_err(|e| format!("send: {e}"))?;
                pending = &pending[n..];
            }
            while let Some(ev) = self.take_event(c, |e| match e {
                CircEvent::Data { stream, .. } | CircEvent::StreamEnded { stream, .. } => {
                    *stream == s
                }
                _ => false,
            }) {
                match ev {
                    CircEvent::Data { data, .. } => {
                        if body.len() + data.len() > max {
                            let _ = self.circs[c].circ.close_stream(s);
                            return Err(format!("response larger than {max} bytes"));
                        }
                        body.extend_from_slice(&data);
                        progress(body.len());
                    }
                    CircEvent::StreamEnded { reason, .. } => {
                        return if reason == EndReason::DONE || reason == EndReason::MISC {
                            Ok(body)
                        } else {
                            Err(format!(
                                "stream ended after {} bytes: {}",
                                body.len(),
                                end_reason(reason)
                            ))
                        };
                    }
                    _ => {}
                }
            }
            if let Err(e) = self.check_alive(c) {
                return Err(format!("{e} after {} bytes", body.len()));
            }
            self.step(deadline)
                .map_err(|e| format!("after {} bytes: {e}", body.len()))?;
        }
    }

    /// Release circuit `c`: DESTROY if it is still open, and its events forgotten. This is
    /// how an owner gives a circuit index back; after the next step the index may name
    /// another circuit. A circuit that died on its own stays (dead) until its owner
    /// releases it.
    pub fn destroy(&mut self, c: usize) {
        if let Some(circ) = self.circs.get_mut(c) {
            circ.circ.destroy();
            circ.events.clear();
            circ.build = None;
            circ.dead.get_or_insert_with(|| "closed by us".into());
            circ.released = true;
        }
        let _ = self.flush();
    }

    fn check_alive(&self, c: usize) -> Result<(), String> {
        match self.circs.get(c) {
            None => Err("no such circuit".into()),
            Some(circ) => match &circ.dead {
                Some(why) => Err(why.clone()),
                None => Ok(()),
            },
        }
    }

    /// An input for a socket that is not a channel (SOCKS clients), if one arrived.
    pub fn take_other(&mut self) -> Option<Input> {
        self.others.pop_front()
    }

    /// The first queued event of circuit `c` that `pred` selects, removed from the queue;
    /// the others stay for whoever waits for them.
    fn take_event(&mut self, c: usize, pred: impl Fn(&CircEvent) -> bool) -> Option<CircEvent> {
        let q = &mut self.circs.get_mut(c)?.events;
        let i = q.iter().position(pred)?;
        q.remove(i)
    }

    /// Free what nobody holds any more: released circuits (their DESTROY went out with the
    /// flush that released them), and channels that closed or whose last circuit is gone
    /// (closed now).
    fn reap(&mut self) {
        if self.circs.is_empty() && self.links.is_empty() {
            return;
        }
        let released: Vec<usize> = self
            .circs
            .iter()
            .filter(|(_, c)| c.released)
            .map(|(i, _)| i)
            .collect();
        for c in released {
            if let Some(circ) = self.circs.remove(c) {
                self.by_id.remove(&(circ.link, circ.id));
                if let Some(l) = self.links.get_mut(circ.link) {
                    l.circs = l.circs.saturating_sub(1);
                }
            }
        }
        let idle: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| l.circs == 0 && (l.used || l.dead.is_some()))
            .map(|(i, _)| i)
            .collect();
        for idx in idle {
            if let Some(mut l) = self.links.remove(idx) {
                l.link.chan.close();
                let _ = l.link.pump(&self.clock);
                l.link.tls.close();
                self.by_conn.remove(&l.link.conn);
            }
        }
    }

    /// One turn of the loop: wait for one input or timeout, feed it, drain every machine.
    /// Inputs of sockets that are not channels are kept for [`Client::take_other`].
    /// Fails only when `deadline` passes.
    pub fn step(&mut self, deadline: Instant) -> Result<(), String> {
        self.flush()?;
        self.reap();
        let mut wake = deadline;
        for (_, l) in self.links.iter() {
            if let Some(t) = l.link.chan.poll_timeout() {
                wake = wake.min(t);
            }
        }
        for (_, c) in self.circs.iter() {
            if let Some(t) = c.circ.poll_timeout() {
                wake = wake.min(t);
            }
            if let Some(b) = &c.build {
                wake = wake.min(b.deadline);
            }
        }
        if let Some(t) = self.connect_deadline() {
            wake = wake.min(t);
        }
        let input = self.inbox.wait(Some(self.clock.until(wake)));
        let now = self.clock.now();
        let mut other = None;
        match input {
            Some(i @ (Input::Bytes(..) | Input::Closed(..))) => {
                let conn = match &i {
                    Input::Bytes(c, _) | Input::Closed(c, _) => *c,
                    Input::Accepted(_) => 0,
                };
                let waking = self
                    .connecting
                    .values()
                    .any(|c| matches!(c.state, ConnState::Tls { wake, .. } if wake == conn));
                match self.by_conn.get(&conn).copied() {
                    Some(idx) => {
                        if let Err(e) = self.links[idx].link.handle(&self.clock, i) {
                            self.kill_link(idx, &e);
                        }
                    }
                    // A channel's TCP and TLS are done: its owner sees it in link_status.
                    None if waking => {}
                    None => other = Some(i),
                }
            }
            Some(i @ Input::Accepted(_)) => other = Some(i),
            None => {
                for (_, l) in self.links.iter_mut() {
                    l.link.chan.handle_timeout(now);
                }
                for (_, c) in self.circs.iter_mut() {
                    let _ = c.circ.handle_timeout(now);
                }
                if now >= deadline {
                    return Err("timed out".into());
                }
            }
        }
        self.others.extend(other);
        self.dispatch();
        self.flush()?;
        self.advance_builds();
        self.flush()
    }

    /// Route channel events to circuits.
    fn dispatch(&mut self) {
        let now = self.clock.now();
        let idxs: Vec<usize> = self.links.iter().map(|(i, _)| i).collect();
        for idx in idxs {
            for ev in self.links[idx].link.take_events() {
                match ev {
                    ChanEvent::CircuitCell { circ_id, msg } => {
                        if let Some(&c) = self.by_id.get(&(idx, circ_id)) {
                            // A fatal error also arrives as CircEvent::Closed.
                            let _ = self.circs[c].circ.handle_cell(now, msg);
                        }
                    }
                    ChanEvent::Open(_) => self.links[idx].open = true,
                    ChanEvent::Closed(e) => self.kill_link(idx, &e.to_string()),
                    _ => {}
                }
            }
        }
    }

    fn kill_link(&mut self, idx: usize, why: &str) {
        let Some(l) = self.links.get_mut(idx) else {
            return;
        };
        let addr = l.link.tls.addr();
        let why = format!("channel to {addr} closed: {why}");
        l.link.chan.close();
        l.link.tls.close();
        l.dead = Some(why.clone());
        for (_, c) in self.circs.iter_mut().filter(|(_, c)| c.link == idx) {
            if c.dead.is_none() {
                c.dead = Some(why.clone());
            }
        }
    }

    /// Close circuit `c` for a protocol violation by a relay: DESTROY with reason PROTOCOL
    /// (tor-spec §5.4), handed to the channel at once, and the reason logged.
    fn violation(&mut self, c: usize, why: &str) {
        let Some(circ) = self.circs.get_mut(c) else {
            return;
        };
        eprintln!("onion: circuit closed: {why}");
        circ.circ.destroy_with_reason(DestroyReason::PROTOCOL);
        circ.dead
            .get_or_insert_with(|| format!("protocol violation: {why}"));
        circ.build = None;
        while let Some(cell) = circ.circ.poll_cell(&mut self.rng) {
            if let Some(l) = self.links.get_mut(circ.link).filter(|l| l.dead.is_none()) {
                let _ = l.link.chan.send(circ.id, &cell);
            }
        }
    }

    /// Drain every circuit's cells into its channel and events into its queue, then every
    /// channel's bytes into TLS.
    pub fn flush(&mut self) -> Result<(), String> {
        let mut bad = Vec::new();
        for (ci, c) in self.circs.iter_mut() {
            while let Some(cell) = c.circ.poll_cell(&mut self.rng) {
                let Some(l) = self.links.get_mut(c.link).filter(|l| l.dead.is_none()) else {
                    continue;
                };
                if let Err(e) = l.link.chan.send(c.id, &cell) {
                    c.dead = Some(format!("channel refused a cell: {e}"));
                }
            }
            if c.hold {
                continue;
            }
            while let Some(ev) = c.circ.poll_event() {
                match &ev {
                    CircEvent::Closed { .. } => {
                        c.dead.get_or_insert_with(|| closed_reason(&ev));
                    }
                    CircEvent::Msg { hop, stream, msg } => {
                        let n = c.circ.n_hops();
                        match msg_verdict(c.purpose, *hop, n, *stream, msg) {
                            Verdict::Accept => {}
                            Verdict::Ignore => continue,
                            Verdict::Violation(why) => {
                                bad.push((
                                    ci,
                                    format!("{:?} from hop {} of {n}: {why}", msg.cmd(), hop + 1),
                                ));
                                break;
                            }
                        }
                    }
                    _ => {}
                }
                if c.events.len() >= MAX_EVENTS {
                    bad.push((ci, format!("more than {MAX_EVENTS} events nobody took")));
                    break;
                }
                c.events.push_back(ev);
            }
        }
        for (c, why) in bad {
            self.violation(c, &why);
        }
        let idxs: Vec<usize> = self.links.iter().map(|(i, _)| i).collect();
        for idx in idxs {
            let l = &mut self.links[idx];
            if l.dead.is_none() {
                if let Err(e) = l.link.pump(&self.clock) {
                    self.kill_link(idx, &e);
                }
            }
        }
        Ok(())
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// A readable reason for a `CircEvent::Closed`.
pub fn closed_reason(ev: &CircEvent) -> String {
    match ev {
        CircEvent::Closed {
            remote_reason: Some(r),
            ..
        } => format!(
            "circuit destroyed by relay ({})",
            r.name().unwrap_or("unknown reason")
        ),
        CircEvent::Closed { error: Some(e), .. } => format!("circuit closed: {e}"),
        _ => "circuit closed".into(),
    }
}

/// Why [`Client::begin`] gave no open stream.
#[derive(Debug, Clone)]
pub enum BeginError {
    /// The far end answered with END before CONNECTED.
    Refused(EndReason),
    /// The request could not be sent, or the circuit failed while waiting.
    Failed(String),
}

/// What a client does after an exit refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Give up: the refusal would be the same anywhere.
    No,
    /// Try again on a new circuit; the exit may be chosen again.
    NewCircuit,
    /// Try again on a new circuit through another exit.
    OtherExit,
}

impl BeginError {
    /// C tor's client rule for an END before CONNECTED (tor-spec §6.3; C tor's
    /// `connection_ap_process_end_not_open`): an exit-policy refusal, an exit out of
    /// resources or hibernating rule that exit out; RESOLVEFAILED, TIMEOUT, MISC and NOROUTE
    /// are retried on a fresh circuit (MISC is what an exit answers when it does not yet know
    /// the previous hop as a relay, a matter of the middle hop, not of the exit). Everything
    /// else, and a failed circuit, ends the attempt.
    pub fn retry(&self) -> Retry {
        match self {
            BeginError::Refused(r) => match *r {
                EndReason::EXITPOLICY | EndReason::RESOURCELIMIT | EndReason::HIBERNATING => {
                    Retry::OtherExit
                }
                EndReason::RESOLVEFAILED
                | EndReason::TIMEOUT
                | EndReason::MISC
                | EndReason::NOROUTE => Retry::NewCircuit,
                _ => Retry::No,
            },
            BeginError::Failed(_) => Retry::No,
        }
    }
}

impl std::fmt::Display for BeginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BeginError::Refused(r) => write!(f, "stream refused: {}", end_reason(*r)),
            BeginError::Failed(e) => f.write_str(e),
        }
    }
}

impl From<BeginError> for String {
    fn from(e: BeginError) -> String {
        e.to_string()
    }
}

/// A readable RELAY_END reason.
pub fn end_reason(r: EndReason) -> String {
    match r.name() {
        Some(n) => n.to_string(),
        None => format!("reason {}", r.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_cell::relaymsg::RelayMsg;
    use onion_cell::RelayCmd;

    fn msg(cmd: RelayCmd, body: &[u8]) -> RelayMsg<'_> {
        RelayMsg::decode(cmd, body).unwrap()
    }

    #[test]
    fn onion_service_messages_only_from_the_last_hop_for_the_purpose() {
        use Purpose::*;
        let ack = msg(RelayCmd::INTRODUCE_ACK, &[0, 0, 0]);
        let est = msg(RelayCmd::INTRO_ESTABLISHED, &[0]);
        let rend2 = msg(RelayCmd::RENDEZVOUS2, &[7; 148]);
        let rend_est = RelayMsg::RendezvousEstablished;
        // Where each belongs: the last of 4 (or 3) hops, stream 0.
        assert_eq!(msg_verdict(ClientIntro, 3, 4, 0, &ack), Verdict::Accept);
        assert_eq!(msg_verdict(ClientRend, 2, 3, 0, &rend_est), Verdict::Accept);
        assert_eq!(msg_verdict(ClientRend, 2, 3, 0, &rend2), Verdict::Accept);
        assert_eq!(msg_verdict(ServiceIntro, 3, 4, 0, &est), Verdict::Accept);
        // From the guard or a middle hop.
        for hop in 0..3 {
            assert!(matches!(
                msg_verdict(ClientIntro, hop, 4, 0, &ack),
                Verdict::Violation(_)
            ));
            assert!(matches!(
                msg_verdict(ServiceIntro, hop, 4, 0, &est),
                Verdict::Violation(_)
            ));
        }
        assert!(matches!(
            msg_verdict(ClientRend, 1, 3, 0, &rend2),
            Verdict::Violation(_)
        ));
        // After the virtual hop was added, the rendezvous point is no longer the last hop.
        assert!(matches!(
            msg_verdict(ClientRend, 2, 4, 0, &rend2),
            Verdict::Violation(_)
        ));
        // On a stream.
        assert!(matches!(
            msg_verdict(ClientIntro, 3, 4, 5, &ack),
            Verdict::Violation(_)
        ));
        // For another purpose.
        for p in [General, HsDir, ClientRend, ServiceIntro, ServiceRend] {
            assert!(
                matches!(msg_verdict(p, 3, 4, 0, &ack), Verdict::Violation(_)),
                "{p:?}"
            );
        }
        for p in [General, HsDir, ClientIntro, ServiceIntro, ServiceRend] {
            assert!(
                matches!(msg_verdict(p, 2, 3, 0, &rend2), Verdict::Violation(_)),
                "{p:?}"
            );
        }
        for p in [General, HsDir, ClientIntro, ClientRend, ServiceRend] {
            assert!(
                matches!(msg_verdict(p, 3, 4, 0, &est), Verdict::Violation(_)),
                "{p:?}"
            );
        }
        // What only a relay receives never reaches a client or service.
        let rend1 = msg(RelayCmd::RENDEZVOUS1, &[1; 20 + 32 + 32]);
        assert!(matches!(
            msg_verdict(ServiceRend, 3, 4, 0, &rend1),
            Verdict::Violation(_)
        ));
        // Other messages are dropped, not queued, whatever the circuit.
        assert_eq!(
            msg_verdict(General, 0, 3, 0, &RelayMsg::Drop),
            Verdict::Ignore
        );
    }

    #[test]
    fn slab_reuses_freed_slots() {
        let mut s = Slab::new();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!((s[a], s[b], s.len()), ("a", "b", 2));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert!(s.get(a).is_none());
        let c = s.insert("c");
        assert_eq!(c, a);
        assert_eq!(s.slots(), 2);
        assert_eq!(s.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["c", "b"]);
        s.remove(b);
        s.remove(c);
        assert!(s.is_empty());
    }

    /// A circuit machine with its CREATE2 made, as [`Client::start_create`] makes one (no
    /// network: only the client's bookkeeping is under test).
    fn fake_circ(client: &mut Client, link: usize, id: u32) -> usize {
        let target = HopTarget {
            rsa_id: onion_dir::RsaIdentity([1; 20]),
            ed_id: None,
            ntor_key: onion_crypto::keys::NtorOnionKey([9; 32]),
            addrs: vec![],
            ntor_v3: false,
        };
        let (circ, _) = Circuit::create(
            CircConfig::default(),
            &target,
            HandshakeKind::Ntor,
            client.clock.now(),
            &mut OsRng,
        )
        .unwrap();
        let id = CircId::from(id);
        let c = client.circs.insert(Circ {
            link,
            id,
            circ,
            events: VecDeque::new(),
            dead: None,
            hold: false,
            purpose: Purpose::General,
            released: false,
            build: None,
        });
        client.by_id.insert((link, id), c);
        c
    }

    #[test]
    fn a_build_past_its_deadline_fails_and_is_destroyed() {
        let mut client = Client::new();
        let c = fake_circ(&mut client, 3, 0x8000_0042);
        let hop = |b: u8| HopTarget {
            rsa_id: onion_dir::RsaIdentity([b; 20]),
            ed_id: None,
            ntor_key: onion_crypto::keys::NtorOnionKey([b; 32]),
            addrs: vec![],
            ntor_v3: false,
        };
        let deadline = client.deadline(Duration::from_millis(50));
        client.circs[c].build = Some(Build {
            rest: [hop(2), hop(3)].into_iter().collect(),
            want: 1,
            deadline,
        });
        client.advance_builds();
        assert_eq!(client.build_status(c), BuildStatus::Building);
        std::thread::sleep(Duration::from_millis(60));
        client.advance_builds();
        assert_eq!(
            client.build_status(c),
            BuildStatus::Failed {
                hops: 0,
                why: "timed out building hop 1".into()
            }
        );
        assert!(client.circs[c].circ.is_closed());
        assert_eq!(
            client.build_status(c + 1),
            BuildStatus::Failed {
                hops: 0,
                why: "no such circuit".into()
            }
        );
    }

    /// Steps `client` until the channel of `t` is no longer pending (at most 10 s).
    fn wait_link(client: &mut Client, t: LinkTicket) -> LinkStatus {
        let end = client.deadline(Duration::from_secs(10));
        loop {
            match client.link_status(t) {
                LinkStatus::Pending => {
                    let wake = client.deadline(Duration::from_millis(50));
                    let _ = client.step(wake.min(end));
                }
                s => return s,
            }
        }
    }

    #[test]
    fn channels_open_off_the_loop_and_failures_are_reported() {
        let mut client = Client::new();
        // Nobody listens: the connect fails on its thread, the loop is woken and told.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let t0 = std::time::Instant::now();
        let t = client
            .start_connect(
                addr,
                PeerIds::default(),
                client.deadline(Duration::from_secs(5)),
            )
            .unwrap();
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "start_connect waited"
        );
        assert!(matches!(wait_link(&mut client, t), LinkStatus::Failed(_)));
        // A peer that accepts and never answers TLS: failed at the deadline, not before.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = std::time::Instant::now();
        let deadline = client.deadline(Duration::from_millis(300));
        let t = client
            .start_connect(silent.local_addr().unwrap(), PeerIds::default(), deadline)
            .unwrap();
        assert_eq!(client.link_status(t), LinkStatus::Pending);
        assert!(matches!(wait_link(&mut client, t), LinkStatus::Failed(_)));
        assert!(t0.elapsed() >= Duration::from_millis(300));
        // Tickets are used up; nothing is held.
        assert!(matches!(client.link_status(t), LinkStatus::Failed(_)));
        assert!(client.connecting.is_empty());
        assert_eq!(client.held(), (0, 0));
    }

    #[test]
    fn destroyed_circuits_are_freed_and_counts_stay_bounded() {
        let mut client = Client::new();
        let keep = fake_circ(&mut client, 7, 0x8000_0001);
        for round in 0..2000u32 {
            let batch: Vec<usize> = (0..5)
                .map(|k| fake_circ(&mut client, 7, 0x8000_0100 + round * 5 + k))
                .collect();
            for c in batch {
                client.destroy(c);
            }
            client.reap();
            assert_eq!(client.held(), (0, 1));
        }
        // 10,000 circuits built and released: memory is what 6 at once needed.
        assert!(client.circs.slots() <= 6, "{}", client.circs.slots());
        assert_eq!(client.by_id.len(), 1);
        assert!(client.circs.get(keep).is_some());
        // A circuit that died on its own stays until its owner releases it.
        client.circs[keep].dead = Some("destroyed by relay".into());
        client.reap();
        assert_eq!(client.held(), (0, 1));
        client.destroy(keep);
        client.reap();
        assert_eq!(client.held(), (0, 0));
        assert!(client.by_id.is_empty());
    }
}
