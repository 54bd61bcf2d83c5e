//! An in-memory network: a client (onion-circuit's `Channel::initiator` and client
//! `Circuit`) and several [`Relay`] machines joined by byte pipes, with fake TCP targets
//! and a fake resolver at the exits. No sockets, no TLS: each link has a random
//! "certificate digest" and "exporter value" that both ends agree on.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_cell::chancell::DestroyReason;
use onion_cell::relaymsg::{BeginFlags, EndReason, ResolvedValue};
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_crypto::relay_keyset::RelayKeySet;
use onion_dir::policy::ExitPolicy;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::*;

pub(crate) fn wall0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

/// The public address the fake resolver gives `example.com`.
const EXAMPLE: IpAddr = IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34));

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Client(usize),
    Relay(usize, ConnId),
}

#[derive(Debug)]
struct Link {
    a: End,
    b: End,
    exporter: [u8; 32],
    open: bool,
}

/// A fake TCP target at an exit: records what it receives, sends `reply` then closes.
#[derive(Debug, Default)]
struct Target {
    received: Vec<u8>,
    reply: Vec<u8>,
    sent: usize,
    closed_by_relay: bool,
    eof_sent: bool,
}

struct ClientChan {
    chan: Channel,
    circs: BTreeMap<u32, usize>,
}

/// A client circuit and what it saw.
pub(crate) struct ClientCirc {
    pub(crate) circ: Circuit,
    chan: usize,
    id: onion_cell::CircId,
    pub(crate) events: Vec<CircEvent>,
    pub(crate) data: HashMap<u16, Vec<u8>>,
    pub(crate) ended: HashMap<u16, EndReason>,
    pub(crate) closed: Option<Option<DestroyReason>>,
    path: Vec<usize>,
    hops_wanted: usize,
}

pub(crate) struct Net {
    pub(crate) now: onion_circuit::Instant,
    rng: ChaCha20Rng,
    pub(crate) relays: Vec<Relay>,
    addrs: Vec<SocketAddr>,
    links: Vec<Link>,
    next_conn: u64,
    clients: Vec<ClientChan>,
    pub(crate) circs: Vec<ClientCirc>,
    targets: HashMap<(usize, StreamHandle), Target>,
    /// Targets never answer connects to this port (to test timeouts).
    pub(crate) silent_port: u16,
    pub(crate) reply: Vec<u8>,
    /// Leave the relays' Connect events unanswered (a connection that never completes).
    pub(crate) ignore_connects: bool,
    /// Targets read what the exit gives them (false: a target that stopped reading).
    pub(crate) targets_read: bool,
    /// The configuration of client circuits.
    pub(crate) circ_config: CircConfig,
    /// The directory requests each relay reported answering ([`Event::DirAnswered`]).
    pub(crate) dir_answered: Vec<(usize, crate::dir::DirAnswered)>,
}

pub(crate) fn policy(text: &str) -> ExitPolicy {
    let rules = text
        .split(',')
        .map(|r| {
            let (kw, pat) = r.trim().split_once(' ').expect("rule");
            onion_dir::policy::PolicyRule::parse(kw, pat).expect("rule")
        })
        .collect();
    ExitPolicy { rules }
}

impl Net {
    pub(crate) fn new(seed: u64) -> Net {
        Net {
            now: onion_circuit::Instant::ZERO,
            rng: ChaCha20Rng::seed_from_u64(seed),
            relays: Vec::new(),
            addrs: Vec::new(),
            links: Vec::new(),
            next_conn: 0,
            clients: Vec::new(),
            circs: Vec::new(),
            targets: HashMap::new(),
            silent_port: 82,
            reply: Vec::new(),
            ignore_connects: false,
            targets_read: true,
            circ_config: CircConfig::default(),
            dir_answered: Vec::new(),
        }
    }

    /// A relay at 10.0.0.<n>:9001 with `f` applied to its configuration.
    pub(crate) fn add_relay(&mut self, f: impl FnOnce(&mut RelayConfig)) -> usize {
        let n = self.relays.len();
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, n as u8 + 1));
        let mut cfg = RelayConfig::new(vec![ip]);
        cfg.extend_allow_private = true;
        let mut fake = vec![0u8; 64];
        self.rng.fill_bytes(&mut fake);
        cfg.link_cert = Some(TlsLinkCert::from_der(fake, Zeroizing::new(Vec::new())));
        f(&mut cfg);
        let keys = RelayKeySet::generate(wall0(), false, &mut self.rng).expect("keys");
        let relay = Relay::new(cfg, keys, self.now, wall0().into(), &mut self.rng).expect("relay");
        self.relays.push(relay);
        self.addrs.push(SocketAddr::new(ip, 9001));
        n
    }

    pub(crate) fn target(&self, r: usize) -> HopTarget {
        let keys = self.relays[r].keys();
        HopTarget {
            rsa_id: keys.rsa_identity().public().identity(),
            ed_id: Some(keys.ed_identity()),
            ntor_key: *keys.ntor_key().public(),
            addrs: vec![self.addrs[r]],
            ntor_v3: true,
        }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// A client connection from `from` to relay `r`; returns (client index, relay conn) or
    /// the relay's refusal.
    pub(crate) fn connect_client(
        &mut self,
        r: usize,
        from: IpAddr,
    ) -> Result<(usize, ConnId), Error> {
        let conn = self.conn();
        self.relays[r].handle_accepted(conn, self.now, SocketAddr::new(from, 40000))?;
        let ids = self.relays[r].identities();
        let sha = self.relays[r].link_cert().sha256();
        let chan = Channel::initiator(ChanConfig::default(), ids, Some(sha), self.now, wall0());
        self.clients.push(ClientChan {
            chan,
            circs: BTreeMap::new(),
        });
        let c = self.clients.len() - 1;
        self.links.push(Link {
            a: End::Client(c),
            b: End::Relay(r, conn),
            exporter: [0; 32],
            open: true,
        });
        self.run();
        Ok((c, conn))
    }

    /// Build a circuit on client channel `c` through `path` (the first hop must be the
    /// relay `c` is connected to). Returns the circuit index; run() completes it.
    pub(crate) fn build(&mut self, c: usize, path: &[usize], kind: HandshakeKind) -> usize {
        let first = self.target(path[0]);
        let i = self.start(c, &first, kind, path, path.len());
        self.run();
        i
    }

    /// Send the CREATE for a circuit to `first` on client channel `c`; once its first hop is
    /// added, it is extended along `path` until it has `hops_wanted` hops.
    fn start(
        &mut self,
        c: usize,
        first: &HopTarget,
        kind: HandshakeKind,
        path: &[usize],
        hops_wanted: usize,
    ) -> usize {
        let (circ, create) = Circuit::create(
            self.circ_config.clone(),
            first,
            kind,
            self.now,
            &mut self.rng,
        )
        .expect("create");
        let ch = &mut self.clients[c];
        let id = ch.chan.new_circ_id(&mut self.rng).expect("id");
        ch.chan.send(id, &create).expect("send");
        let i = self.circs.len();
        ch.circs.insert(id.get(), i);
        self.circs.push(ClientCirc {
            circ,
            chan: c,
            id,
            events: Vec::new(),
            data: HashMap::new(),
            ended: HashMap::new(),
            closed: None,
            path: path.to_vec(),
            hops_wanted,
        });
        i
    }

    pub(crate) fn hops(&self, i: usize) -> usize {
        self.circs[i].circ.n_hops()
    }

    /// Move everything until nothing moves.
    pub(crate) fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("network does not settle");
    }

    /// Advance the clock by `d` and fire timers.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        let wall = wall0() + (self.now - onion_circuit::Instant::ZERO);
        for r in &mut self.relays {
            r.handle_timeout(self.now, wall.into());
        }
        for c in &mut self.circs {
            c.circ.handle_timeout(self.now);
        }
        self.run();
    }

    fn link_of(&self, e: End) -> Option<usize> {
        self.links
            .iter()
            .position(|l| l.open && (l.a == e || l.b == e))
    }

    fn deliver(&mut self, from: End, bytes: &[u8]) {
        let Some(l) = self.link_of(from) else {
            return;
        };
        let to = if self.links[l].a == from {
            self.links[l].b
        } else {
            self.links[l].a
        };
        match to {
            End::Client(c) => {
                let mut off = 0;
                while off < bytes.len() {
                    let n = self.clients[c].chan.handle_input(self.now, &bytes[off..]);
                    if self.clients[c].chan.is_closed() {
                        return;
                    }
                    off += n;
                    self.client_events(c);
                    if n == 0 {
                        break;
                    }
                }
            }
            End::Relay(r, conn) => self.relays[r].handle_input(conn, self.now, bytes),
        }
    }

    fn close_link(&mut self, l: usize) {
        if !self.links[l].open {
            return;
        }
        self.links[l].open = false;
        for e in [self.links[l].a, self.links[l].b] {
            match e {
                End::Client(c) => {
                    self.clients[c].chan.handle_connection_closed();
                    self.client_events(c);
                }
                End::Relay(r, conn) => self.relays[r].handle_closed(conn, self.now),
            }
        }
    }

    /// Close the connection of relay `r` named `conn` (as a socket error would).
    pub(crate) fn cut(&mut self, r: usize, conn: ConnId) {
        if let Some(l) = self.link_of(End::Relay(r, conn)) {
            self.close_link(l);
            self.run();
        }
    }

    /// The connection relay `a` holds toward relay `b`, if any.
    pub(crate) fn relay_link(&self, a: usize, b: usize) -> Option<(ConnId, ConnId)> {
        self.links
            .iter()
            .filter(|l| l.open)
            .find_map(|l| match (l.a, l.b) {
                (End::Relay(x, cx), End::Relay(y, cy)) if x == a && y == b => Some((cx, cy)),
                (End::Relay(x, cx), End::Relay(y, cy)) if x == b && y == a => Some((cy, cx)),
                _ => None,
            })
    }

    fn client_events(&mut self, c: usize) {
        while let Some(ev) = self.clients[c].chan.poll_event() {
            match ev {
                ChanEvent::CircuitCell { circ_id, msg } => {
                    if let Some(&i) = self.clients[c].circs.get(&circ_id.get()) {
                        let now = self.now;
                        self.circs[i].circ.handle_cell(now, msg);
                    }
                }
                ChanEvent::Closed(_) => {
                    for i in self.clients[c].circs.values() {
                        self.circs[*i].circ.destroy();
                    }
                }
                _ => {}
            }
        }
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        // Clients.
        for c in 0..self.clients.len() {
            let mut out = Vec::new();
            while self.clients[c].chan.poll_transmit(&mut out).is_some() {
                moved = true;
                let b = core::mem::take(&mut out);
                self.deliver(End::Client(c), &b);
            }
        }
        for i in 0..self.circs.len() {
            moved |= self.circ_step(i);
        }
        // Relays.
        for r in 0..self.relays.len() {
            while let Some(ev) = self.relays[r].poll_event() {
                moved = true;
                self.relay_event(r, ev);
            }
            let mut out = Vec::new();
            while let Some(conn) = self.relays[r].poll_transmit(self.now, &mut out) {
                moved = true;
                let b = core::mem::take(&mut out);
                self.deliver(End::Relay(r, conn), &b);
            }
        }
        // Targets push their replies.
        let keys: Vec<(usize, StreamHandle)> = self.targets.keys().copied().collect();
        for (r, s) in keys {
            let now = self.now;
            let Some(t) = self.targets.get_mut(&(r, s)) else {
                continue;
            };
            if t.closed_by_relay || t.eof_sent {
                continue;
            }
            if t.received.is_empty() {
                // Like an HTTP server: nothing until the request arrives.
            } else if t.sent < t.reply.len() {
                let end = t.reply.len().min(t.sent + (16 << 10));
                let n = self.relays[r].handle_target_data(s, now, &t.reply[t.sent..end]);
                let t = self.targets.get_mut(&(r, s)).expect("target");
                t.sent += n;
                moved |= n > 0;
            } else if !t.reply.is_empty() {
                // A sink (empty reply) never closes; a server closes after its reply.
                t.eof_sent = true;
                moved = true;
                self.relays[r].handle_target_closed(s, now);
            }
        }
        moved
    }

    fn circ_step(&mut self, i: usize) -> bool {
        let mut moved = false;
        loop {
            let cc = &mut self.circs[i];
            let mut any = false;
            while let Some(m) = cc.circ.poll_cell(&mut self.rng) {
                any = true;
                let _ = self.clients[cc.chan].chan.send(cc.id, &m);
            }
            let Some(ev) = cc.circ.poll_event() else {
                moved |= any;
                return moved;
            };
            moved = true;
            match &ev {
                CircEvent::HopAdded { hops } if *hops < cc.hops_wanted => {
                    let next = cc.path[*hops];
                    let t = self.target(next);
                    let now = self.now;
                    let cc = &mut self.circs[i];
                    let r = if *hops + 1 == cc.hops_wanted {
                        cc.circ.extend_exit(&t, now, &mut self.rng)
                    } else {
                        cc.circ.extend(&t, now, &mut self.rng)
                    };
                    r.expect("extend");
                }
                CircEvent::Stream(StreamEvent::Data { stream, data }) => {
                    cc.data
                        .entry(stream.get())
                        .or_default()
                        .extend_from_slice(data);
                }
                CircEvent::Stream(StreamEvent::Ended { stream, reason }) => {
                    cc.ended.insert(stream.get(), *reason);
                }
                CircEvent::Closed { remote_reason, .. } => cc.closed = Some(*remote_reason),
                _ => {}
            }
            self.circs[i].events.push(ev);
        }
    }

    fn relay_event(&mut self, r: usize, ev: Event) {
        let now = self.now;
        match ev {
            Event::Connect { .. } if self.ignore_connects => {}
            Event::Connect { conn, addr, .. } => {
                let Some(to) = self.addrs.iter().position(|a| *a == addr) else {
                    self.relays[r].handle_closed(conn, now);
                    return;
                };
                let acc = self.conn();
                let from = SocketAddr::new(self.addrs[r].ip(), 50000);
                if self.relays[to].handle_accepted(acc, now, from).is_err() {
                    self.relays[r].handle_closed(conn, now);
                    return;
                }
                let mut exporter = [0u8; 32];
                self.rng.fill_bytes(&mut exporter);
                self.links.push(Link {
                    a: End::Relay(r, conn),
                    b: End::Relay(to, acc),
                    exporter,
                    open: true,
                });
                let sha = self.relays[to].link_cert().sha256();
                self.relays[r].handle_connected(conn, now, sha, exporter);
            }
            Event::Disconnect { conn } => {
                if let Some(l) = self.link_of(End::Relay(r, conn)) {
                    self.close_link(l);
                }
            }
            Event::TlsExporter { conn, .. } => {
                if let Some(l) = self.link_of(End::Relay(r, conn)) {
                    let e = self.links[l].exporter;
                    self.relays[r].provide_tls_exporter(conn, now, e);
                }
            }
            Event::Resolve { request, name } => {
                let answer = match name.as_str() {
                    "example.com" => Ok(vec![EXAMPLE]),
                    "internal.example" => Ok(vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))]),
                    _ => Err(ResolveError::NotFound),
                };
                self.relays[r].handle_resolved(request, now, answer);
            }
            Event::OpenTarget { stream, addr } => {
                if addr.port() == 81 {
                    self.relays[r].handle_target_failed(stream, now, TargetError::Refused);
                } else if addr.port() != self.silent_port {
                    self.targets.insert(
                        (r, stream),
                        Target {
                            reply: self.reply.clone(),
                            ..Target::default()
                        },
                    );
                    self.relays[r].handle_target_connected(stream, now, addr);
                }
            }
            Event::TargetData { .. } if !self.targets_read => {}
            Event::TargetData { stream } => {
                let mut buf = Vec::new();
                while self.relays[r].target_transmit(stream, now, &mut buf, 4096) > 0 {}
                if let Some(t) = self.targets.get_mut(&(r, stream)) {
                    t.received.extend_from_slice(&buf);
                }
            }
            Event::ResumeTarget { .. } => {}
            Event::DirAnswered(a) => self.dir_answered.push((r, a)),
            Event::CloseTarget { stream } => {
                if let Some(t) = self.targets.get_mut(&(r, stream)) {
                    t.closed_by_relay = true;
                }
            }
        }
    }

    /// Everything the targets of relay `r` received.
    pub(crate) fn target_received(&self, r: usize) -> Vec<u8> {
        let mut v: Vec<_> = self.targets.iter().filter(|((x, _), _)| *x == r).collect();
        v.sort_by_key(|((_, s), _)| *s);
        v.into_iter()
            .flat_map(|(_, t)| t.received.clone())
            .collect()
    }

    pub(crate) fn begin(&mut self, i: usize, host: &str, port: u16) -> StreamId {
        let now = self.now;
        let s = self.circs[i]
            .circ
            .begin(host, port, BeginFlags::default(), now)
            .expect("begin");
        self.run();
        s
    }

    pub(crate) fn send(&mut self, i: usize, s: StreamId, data: &[u8]) {
        let mut off = 0;
        while off < data.len() {
            let n = self.circs[i].circ.send(s, &data[off..]).expect("send");
            off += n;
            self.run();
            assert!(n > 0 || off == data.len(), "stream blocked");
        }
    }
}

/// Guard, middle, exit (accepting port 80) and a client connected to the guard.
pub(crate) fn three_relays(seed: u64) -> (Net, usize) {
    let mut net = Net::new(seed);
    net.add_relay(|_| {});
    net.add_relay(|_| {});
    net.add_relay(|c| c.exit_policy = Some(policy("accept *:80, reject *:*")));
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)))
        .expect("connect");
    (net, c)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Circuits no cell went through for one to two idle periods have their key schedules
/// freed at every relay; the next cells rebuild them and the data arrives intact.
#[test]
fn idle_circuits_are_compacted_and_work_after() {
    let (mut net, c) = three_relays(31);
    net.reply = pattern(100_000);
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 3);
    // One period: the build used the circuit.
    net.advance(Duration::from_secs(5));
    for r in 0..3 {
        assert_eq!(net.relays[r].n_compacted_circuits(), 0, "relay {r}");
    }
    // A second period without a cell: compacted.
    net.advance(Duration::from_secs(5));
    for r in 0..3 {
        assert_eq!(net.relays[r].n_compacted_circuits(), 1, "relay {r}");
        assert!(net.relays[r].poll_timeout().is_some());
    }
    let s = net.begin(i, "example.com", 80);
    net.send(i, s, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    for r in 0..3 {
        assert_eq!(net.relays[r].n_compacted_circuits(), 0, "relay {r}");
    }
    assert_eq!(net.target_received(2), b"GET / HTTP/1.0\r\n\r\n");
    let got = net.circs[i].data.get(&s.get()).cloned().unwrap_or_default();
    assert!(got == pattern(100_000));
    // Off: never compacted.
    let mut net = Net::new(32);
    net.add_relay(|c| c.compact_idle = None);
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)))
        .expect("connect");
    let i = net.build(c, &[0], HandshakeKind::CreateFast);
    assert_eq!(net.hops(i), 1);
    net.advance(Duration::from_secs(30));
    assert_eq!(net.relays[0].n_compacted_circuits(), 0);
}

#[test]
fn three_hop_fetch_through_an_exit_and_teardown() {
    let (mut net, c) = three_relays(1);
    net.reply = pattern(300_000);
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 3, "{:?}", net.circs[i].events);
    let s = net.begin(i, "example.com", 80);
    net.send(i, s, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    assert_eq!(net.target_received(2), b"GET / HTTP/1.0\r\n\r\n");
    let got = net.circs[i].data.get(&s.get()).cloned().unwrap_or_default();
    assert_eq!(got.len(), 300_000);
    assert!(got == pattern(300_000));
    assert_eq!(net.circs[i].ended.get(&s.get()), Some(&EndReason::DONE));
    assert!(net.circs[i].events.iter().any(|e| matches!(
        e,
        CircEvent::StreamConnected { addr: Some((ip, _)), .. } if *ip == EXAMPLE
    )));
    for r in 0..3 {
        assert_eq!(net.relays[r].n_circuits(), 1, "relay {r}");
    }
    // The client tears the circuit down: every relay frees it.
    net.circs[i].circ.destroy();
    net.run();
    for r in 0..3 {
        assert_eq!(net.relays[r].n_circuits(), 0, "relay {r}");
        assert_eq!(net.relays[r].n_streams(), 0, "relay {r}");
    }
}

#[test]
fn ntor_and_create_fast_first_hops() {
    let (mut net, c) = three_relays(2);
    let a = net.build(c, &[0, 1], HandshakeKind::Ntor);
    let b = net.build(c, &[0], HandshakeKind::CreateFast);
    assert_eq!((net.hops(a), net.hops(b)), (2, 1));
    assert_eq!(net.relays[0].stats().circuits_created, 2);
}

#[test]
fn extend2_reuses_the_channel_to_the_next_relay_and_it_is_authenticated() {
    let (mut net, c) = three_relays(3);
    let a = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    let b = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!((net.hops(a), net.hops(b)), (3, 3));
    for r in 0..2 {
        let st = net.relays[r].stats();
        assert_eq!(st.channels_opened, 1, "relay {r}");
        assert_eq!(st.channels_reused, 1, "relay {r}");
    }
    // The middle verified the guard's AUTHENTICATE: its inbound channel proves the
    // guard's identities (tor-spec §4.4.2).
    let (_, mid_side) = net.relay_link(0, 1).expect("link");
    assert_eq!(
        net.relays[1].connection_peer(mid_side),
        Some(net.relays[0].identities())
    );
    // Client channels do not authenticate.
    assert_eq!(
        net.relays[0].connection_peer(ConnId(1)),
        Some(PeerIds::default())
    );
}

#[test]
fn a_wrong_tls_exporter_closes_the_relay_channel() {
    let (mut net, c) = three_relays(4);
    // Corrupt the exporter value the middle will be given for the guard's connection.
    let first = net.target(0);
    let i = net.start(c, &first, HandshakeKind::NtorV3, &[0, 1], 1);
    net.run();
    let t = net.target(1);
    let now = net.now;
    net.circs[i]
        .circ
        .extend(&t, now, &mut net.rng)
        .expect("extend");
    // Step by hand until the guard asks to connect, then lie about the exporter.
    for _ in 0..100 {
        net.step_until_connect();
        if !net.links.iter().any(|l| matches!(l.b, End::Relay(1, _))) {
            continue;
        }
        break;
    }
    for l in &mut net.links {
        if matches!(l.b, End::Relay(1, _)) {
            l.exporter[0] ^= 1;
        }
    }
    net.run();
    assert!(
        net.relay_link(0, 1).is_none(),
        "the middle refused the guard"
    );
    assert_eq!(net.relays[1].n_circuits(), 0);
    assert_eq!(net.relays[0].n_circuits(), 0);
    assert!(net.circs[i].closed.is_some());
    assert_eq!(net.hops(i), 1);
}

impl Net {
    /// One step, stopping after the first relay Connect event was handled.
    fn step_until_connect(&mut self) {
        for c in 0..self.clients.len() {
            let mut out = Vec::new();
            while self.clients[c].chan.poll_transmit(&mut out).is_some() {
                let b = core::mem::take(&mut out);
                self.deliver(End::Client(c), &b);
            }
        }
        for i in 0..self.circs.len() {
            self.circ_step(i);
        }
        for r in 0..self.relays.len() {
            while let Some(ev) = self.relays[r].poll_event() {
                let connect = matches!(ev, Event::Connect { .. });
                self.relay_event(r, ev);
                if connect {
                    return;
                }
            }
            let mut out = Vec::new();
            while let Some(conn) = self.relays[r].poll_transmit(self.now, &mut out) {
                let b = core::mem::take(&mut out);
                self.deliver(End::Relay(r, conn), &b);
            }
        }
    }
}

#[test]
fn exit_policy_resolve_and_end_reasons() {
    let (mut net, c) = three_relays(5);
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    let cases: [(&str, u16, EndReason); 6] = [
        ("example.com", 25, EndReason::EXITPOLICY),
        ("93.184.216.34", 443, EndReason::EXITPOLICY),
        ("10.1.2.3", 80, EndReason::EXITPOLICY),
        ("internal.example", 80, EndReason::EXITPOLICY),
        ("nx.invalid", 80, EndReason::RESOLVEFAILED),
        ("foo.onion", 80, EndReason::RESOLVEFAILED),
    ];
    for (host, port, want) in cases {
        let s = net.begin(i, host, port);
        assert_eq!(
            net.circs[i].ended.get(&s.get()),
            Some(&want),
            "{host}:{port}"
        );
    }
    // Port 81: the fake target refuses; 82: never answers, then the relay's timeout.
    let mut net2 = {
        let mut n = Net::new(6);
        n.add_relay(|_| {});
        n.add_relay(|c| c.exit_policy = Some(policy("accept *:*")));
        n
    };
    let (c2, _) = net2
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)))
        .expect("connect");
    let j = net2.build(c2, &[0, 1], HandshakeKind::NtorV3);
    let s = net2.begin(j, "93.184.216.34", 81);
    assert_eq!(
        net2.circs[j].ended.get(&s.get()),
        Some(&EndReason::CONNECTREFUSED)
    );
    let s = net2.begin(j, "93.184.216.34", 82);
    assert_eq!(net2.circs[j].ended.get(&s.get()), None);
    assert_eq!(net2.relays[1].n_streams(), 1);
    net2.advance(Duration::from_secs(61));
    assert_eq!(net2.circs[j].ended.get(&s.get()), Some(&EndReason::TIMEOUT));
    assert_eq!(net2.relays[1].n_streams(), 0);
    // RESOLVE.
    let now = net.now;
    let r = net.circs[i]
        .circ
        .resolve("example.com", now)
        .expect("resolve");
    net.run();
    let answers = net.circs[i].events.iter().find_map(|e| match e {
        CircEvent::Resolved { stream, answers } if *stream == r => Some(answers.clone()),
        _ => None,
    });
    let answers = answers.expect("resolved");
    assert_eq!(answers[0].value, ResolvedValue::Ip(EXAMPLE));
    let now = net.now;
    let r = net.circs[i]
        .circ
        .resolve("nx.invalid", now)
        .expect("resolve");
    net.run();
    assert!(net.circs[i].events.iter().any(|e| matches!(
        e,
        CircEvent::Resolved { stream, answers }
            if *stream == r && matches!(answers[0].value, ResolvedValue::NontransientError(_))
    )));
    // A relay without an exit policy refuses BEGIN at the end of a 2-hop circuit.
    let k = net.build(c, &[0, 1], HandshakeKind::NtorV3);
    let s = net.begin(k, "example.com", 80);
    assert_eq!(
        net.circs[k].ended.get(&s.get()),
        Some(&EndReason::EXITPOLICY)
    );
}

#[test]
fn begin_dir_answers_from_the_directory_documents() {
    let mut net = Net::new(7);
    let r = net.add_relay(|c| c.dir_cache = true);
    let plain = net.add_relay(|_| {});
    let consensus = pattern(100_000)
        .into_iter()
        .map(|b| b'a' + b % 26)
        .collect::<Vec<u8>>();
    net.relays[r].set_directory_documents(DirDocuments {
        consensus_microdesc: Some(consensus.clone()),
        ..DirDocuments::default()
    });
    let (c, _) = net
        .connect_client(r, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)))
        .expect("connect");
    let i = net.build(c, &[r], HandshakeKind::CreateFast);
    let now = net.now;
    let s = net.circs[i].circ.begin_dir(now).expect("begin_dir");
    net.run();
    let req =
        onion_dir::http::DirRequest::consensus(onion_dir::consensus::Flavor::Microdesc, &[], 3);
    net.send(i, s, &req.to_bytes());
    net.run();
    assert_eq!(net.circs[i].ended.get(&s.get()), Some(&EndReason::DONE));
    let bytes = net.circs[i].data.get(&s.get()).cloned().unwrap_or_default();
    let mut rd = onion_dir::http::ResponseReader::new(1 << 20);
    rd.handle_bytes(&bytes).expect("bytes");
    let resp = rd.finish().expect("response");
    assert_eq!(resp.head.status, 200);
    assert_eq!(resp.body.as_bytes(), consensus.as_slice());
    // A relay that is not a directory cache: END NOTDIRECTORY.
    let (c2, _) = net
        .connect_client(plain, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)))
        .expect("connect");
    let j = net.build(c2, &[plain], HandshakeKind::CreateFast);
    let now = net.now;
    let s = net.circs[j].circ.begin_dir(now).expect("begin_dir");
    net.run();
    assert_eq!(
        net.circs[j].ended.get(&s.get()),
        Some(&EndReason::NOTDIRECTORY)
    );
}

#[test]
fn a_closed_channel_tears_its_circuits_down_on_both_sides() {
    let (mut net, c) = three_relays(8);
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 3);
    let (mid, _) = net.relay_link(1, 2).expect("middle to exit");
    net.cut(1, mid);
    for r in 0..3 {
        assert_eq!(net.relays[r].n_circuits(), 0, "relay {r}");
    }
    assert!(net.circs[i].closed.is_some());
    // The client's channel survives and a new circuit builds (a new channel to the exit).
    let j = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(j), 3);
    assert_eq!(net.relays[1].stats().channels_opened, 2);
}

#[test]
fn truncate_destroys_the_rest_of_the_circuit() {
    let (mut net, c) = three_relays(9);
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    net.circs[i].circ.truncate(1).expect("truncate");
    net.run();
    assert!(net.circs[i]
        .events
        .iter()
        .any(|e| matches!(e, CircEvent::Truncated { hops: 2, .. })));
    assert_eq!(net.relays[2].n_circuits(), 0);
    assert_eq!(net.relays[1].n_circuits(), 1);
    // Extend again from the middle: the channel to the exit is reused.
    let t = net.target(2);
    let now = net.now;
    net.circs[i]
        .circ
        .extend_exit(&t, now, &mut net.rng)
        .expect("extend");
    net.run();
    assert_eq!(net.hops(i), 3);
    assert_eq!(net.relays[1].stats().channels_opened, 1);
}

#[test]
fn connections_per_address_are_limited() {
    let mut net = Net::new(10);
    net.add_relay(|c| c.limits.max_conns_per_addr = 2);
    let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 4));
    assert!(net.connect_client(0, ip).is_ok());
    assert!(net.connect_client(0, ip).is_ok());
    assert_eq!(
        net.connect_client(0, ip).err(),
        Some(Error::Refused("Limits::max_conns_per_addr"))
    );
    // Another address, and a known relay's address, are not affected.
    assert!(net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 5)))
        .is_ok());
    net.relays[0].set_relay_addresses([ip]);
    assert!(net.connect_client(0, ip).is_ok());
    assert_eq!(net.relays[0].stats().connections_refused, 1);
}

#[test]
fn circuit_creation_rate_per_address_is_limited() {
    let mut net = Net::new(11);
    net.add_relay(|c| {
        c.limits.create_min_conns = 1;
        c.limits.create_burst = 3;
        c.limits.create_rate = 1;
        c.limits.create_defense_period = Duration::from_secs(30);
    });
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 6)))
        .expect("connect");
    let built: Vec<usize> = (0..4)
        .map(|_| net.build(c, &[0], HandshakeKind::CreateFast))
        .collect();
    let hops: Vec<usize> = built.iter().map(|&i| net.hops(i)).collect();
    assert_eq!(hops, [1, 1, 1, 0]);
    assert_eq!(
        net.circs[built[3]].closed,
        Some(Some(DestroyReason::RESOURCELIMIT))
    );
    // Still refused within the defence period even though tokens came back.
    net.advance(Duration::from_secs(10));
    let i = net.build(c, &[0], HandshakeKind::CreateFast);
    assert_eq!(net.hops(i), 0);
    net.advance(Duration::from_secs(25));
    let i = net.build(c, &[0], HandshakeKind::CreateFast);
    assert_eq!(net.hops(i), 1);
    assert_eq!(net.relays[0].stats().creates_refused_dos, 2);
}

#[test]
fn circuits_per_channel_are_limited() {
    let mut net = Net::new(12);
    net.add_relay(|c| c.limits.circuits_per_channel = 2);
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))
        .expect("connect");
    let hops: Vec<usize> = (0..3)
        .map(|_| {
            let i = net.build(c, &[0], HandshakeKind::CreateFast);
            net.hops(i)
        })
        .collect();
    assert_eq!(hops, [1, 1, 0]);
    assert_eq!(net.relays[0].n_circuits(), 2);
}

/// A client whose guard connection stops draining: the guard's queue for that circuit
/// fills with what the exit sends.
fn stalled_fetch(seed: u64, f: impl Fn(&mut Limits)) -> (Net, usize, ConnId) {
    let mut net = Net::new(seed);
    net.add_relay(|c| {
        c.limits.channel_outbound = 514;
        f(&mut c.limits);
    });
    net.add_relay(|_| {});
    net.add_relay(|c| c.exit_policy = Some(policy("accept *:80")));
    let (c, conn) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8)))
        .expect("connect");
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 3);
    (net, i, conn)
}

#[test]
fn a_circuit_holding_too_many_cells_is_closed() {
    let (mut net, i, conn) = stalled_fetch(13, |l| l.circuit_queue_cells = 100);
    net.reply = pattern(400_000);
    let s = net.begin(i, "example.com", 80);
    net.relays[0].set_blocked(conn, true);
    net.send(i, s, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    assert_eq!(net.relays[0].stats().circuits_killed_queue, 1);
    assert_eq!(net.relays[0].n_circuits(), 0);
    // DESTROY went on toward the exit: the other relays freed it too.
    assert_eq!(net.relays[1].n_circuits(), 0);
    assert_eq!(net.relays[2].n_circuits(), 0);
    net.relays[0].set_blocked(conn, false);
    net.run();
    assert_eq!(
        net.circs[i].closed,
        Some(Some(DestroyReason::RESOURCELIMIT))
    );
}

/// The queue bound a new consensus sets (`circ_max_cell_queue_size`) holds for circuits
/// already open: the same stalled fetch, under the default bound (50 000 cells) until the
/// consensus lowers it, is closed then.
#[test]
fn the_consensus_queue_bound_applies_to_open_circuits() {
    let (mut net, i, conn) = stalled_fetch(13, |_| {});
    net.reply = pattern(400_000);
    let s = net.begin(i, "example.com", 80);
    net.relays[0].set_blocked(conn, true);
    net.send(i, s, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    assert_eq!(net.relays[0].stats().circuits_killed_queue, 0);
    assert_eq!(net.relays[0].n_circuits(), 1);
    let now = net.now;
    let p = crate::ConsensusParams {
        circuits: onion_circuit::relay::RelayConfig::default(),
        circuit_queue_cells: 100,
        circuit_priority_halflife: std::time::Duration::from_secs(30),
    };
    net.relays[0].set_consensus_params(p, now);
    net.run();
    assert_eq!(net.relays[0].stats().circuits_killed_queue, 1);
    assert_eq!(net.relays[0].n_circuits(), 0);
    assert_eq!(net.relays[2].n_circuits(), 0);
    net.relays[0].set_blocked(conn, false);
    net.run();
    assert_eq!(
        net.circs[i].closed,
        Some(Some(DestroyReason::RESOURCELIMIT))
    );
}

#[test]
fn out_of_memory_closes_the_circuit_holding_the_most() {
    let (mut net, i, conn) = stalled_fetch(14, |l| l.max_queued_bytes = 200_000);
    // A second, idle circuit on the same channel.
    let c = net.circs[i].chan;
    let idle = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(idle), 3);
    net.reply = pattern(400_000);
    let s = net.begin(i, "example.com", 80);
    net.relays[0].set_blocked(conn, true);
    net.send(i, s, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    let st = net.relays[0].stats();
    assert_eq!(st.circuits_killed_oom, 1);
    assert!(net.relays[0].queued_bytes() <= 200_000);
    // The idle circuit survives.
    assert_eq!(net.relays[0].n_circuits(), 1);
    net.relays[0].set_blocked(conn, false);
    net.run();
    assert_eq!(
        net.circs[i].closed,
        Some(Some(DestroyReason::RESOURCELIMIT))
    );
    assert_eq!(net.circs[idle].closed, None);
}

#[test]
fn the_exit_pushes_back_on_its_target() {
    let (mut net, i, conn) = stalled_fetch(15, |_| {});
    net.reply = pattern(2_000_000);
    let s = net.begin(i, "example.com", 80);
    net.relays[0].set_blocked(conn, true);
    net.send(i, s, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    // The circuit window (1000 cells) and the exit's stream buffer bound what the target
    // could hand over.
    let sent = net.targets.values().map(|t| t.sent).sum::<usize>();
    assert!(sent < 1000 * 498 + (256 << 10) + (16 << 10), "{sent}");
    assert!(sent < 2_000_000);
    net.relays[0].set_blocked(conn, false);
    net.run();
    let got = net.circs[i].data.get(&s.get()).cloned().unwrap_or_default();
    assert!(got == pattern(2_000_000), "{}", got.len());
}

#[test]
fn without_initiator_verification_relays_count_as_clients() {
    let mut net = Net::new(26);
    net.add_relay(|_| {});
    net.add_relay(|c| c.verify_initiator_auth = false);
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 16)))
        .expect("connect");
    let i = net.build(c, &[0, 1], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 2);
    let (_, mid_side) = net.relay_link(0, 1).expect("link");
    assert_eq!(
        net.relays[1].connection_peer(mid_side),
        Some(PeerIds::default())
    );
}

#[test]
fn extend2_reuses_an_authenticated_inbound_channel() {
    let (mut net, c) = three_relays(16);
    let a = net.build(c, &[0, 1], HandshakeKind::NtorV3);
    assert_eq!(net.hops(a), 2);
    // A client of the middle extends back to the guard: the middle reuses the channel the
    // guard opened, whose peer proved the guard's identities (tor-spec §5.3.1).
    let (c2, _) = net
        .connect_client(1, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)))
        .expect("connect");
    let b = net.build(c2, &[1, 0], HandshakeKind::NtorV3);
    assert_eq!(net.hops(b), 2);
    let st = net.relays[1].stats();
    assert_eq!((st.channels_opened, st.channels_reused), (0, 1));
}

#[test]
fn extend2_failures_destroy_toward_the_client() {
    let (mut net, c) = three_relays(17);
    // An address where nothing listens: the embedder reports the connection closed.
    let mut t = net.target(1);
    t.addrs = vec![SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
        9001,
    )];
    let i = net.build(c, &[0], HandshakeKind::NtorV3);
    let now = net.now;
    net.circs[i]
        .circ
        .extend(&t, now, &mut net.rng)
        .expect("extend");
    net.run();
    assert_eq!(
        net.circs[i].closed,
        Some(Some(DestroyReason::CONNECTFAILED))
    );
    // The right address, the wrong identity: the channel refuses it (OR_IDENTITY).
    let mut t = net.target(1);
    t.rsa_id = net.target(2).rsa_id;
    t.ed_id = None;
    let i = net.build(c, &[0], HandshakeKind::NtorV3);
    let now = net.now;
    net.circs[i]
        .circ
        .extend(&t, now, &mut net.rng)
        .expect("extend");
    net.run();
    assert_eq!(net.circs[i].closed, Some(Some(DestroyReason::OR_IDENTITY)));
    // A private address without ExtendAllowPrivateAddresses: refused at once.
    let mut net = Net::new(18);
    net.add_relay(|c| c.extend_allow_private = false);
    net.add_relay(|_| {});
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)))
        .expect("connect");
    let i = net.build(c, &[0, 1], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 1);
    assert_eq!(
        net.circs[i].closed,
        Some(Some(DestroyReason::CONNECTFAILED))
    );
    assert_eq!(net.relays[0].stats().channels_opened, 0);
    // A connection that never completes: the connect timeout fails the extension.
    let (mut net, c) = three_relays(19);
    net.ignore_connects = true;
    let i = net.build(c, &[0, 1], HandshakeKind::NtorV3);
    assert_eq!(net.circs[i].closed, None);
    assert_eq!(net.relays[0].n_connections(), 2);
    net.advance(Duration::from_secs(11));
    assert_eq!(
        net.circs[i].closed,
        Some(Some(DestroyReason::CONNECTFAILED))
    );
    assert_eq!(net.relays[0].n_connections(), 1);
    assert_eq!(net.relays[0].n_circuits(), 0);
}

#[test]
fn a_generated_link_certificate_serves_tls_and_the_handshake() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let keys = RelayKeySet::generate(wall0(), false, &mut rng).expect("keys");
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut relay = Relay::new(
        RelayConfig::new(vec![ip]),
        keys,
        onion_circuit::Instant::ZERO,
        wall0().into(),
        &mut rng,
    )
    .expect("relay");
    let tls = relay.link_cert().clone();
    // A TLS server accepts the certificate and key as they are.
    let cert = rustls::pki_types::CertificateDer::from(tls.cert_der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs1(tls.key_der().to_vec().into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key);
    assert!(server.is_ok(), "{:?}", server.err());
    let x = onion_crypto::x509::RsaX509Cert::decode(tls.cert_der()).expect("x509");
    x.verify_self_signed(onion_crypto::cert::Timestamp::from(wall0()))
        .expect("self-signed and valid now");
    // An initiator checking that certificate's digest completes the handshake.
    let now = onion_circuit::Instant::ZERO;
    let mut chan = Channel::initiator(
        ChanConfig::default(),
        relay.identities(),
        Some(tls.sha256()),
        now,
        wall0(),
    );
    let conn = ConnId(1);
    relay
        .handle_accepted(
            conn,
            now,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 5),
        )
        .expect("accept");
    let mut out = Vec::new();
    let mut open = false;
    for _ in 0..10 {
        if chan.poll_transmit(&mut out).is_some() {
            relay.handle_input(conn, now, &out);
            out.clear();
        }
        while relay.poll_transmit(now, &mut out).is_some() {}
        if !out.is_empty() {
            chan.handle_input(now, &out);
            assert_eq!(chan.close_error(), None, "input");
            out.clear();
        }
        while let Some(ev) = chan.poll_event() {
            open |= matches!(ev, ChanEvent::Open(ref o) if o.peer == relay.identities());
        }
    }
    assert!(open);
}

#[test]
fn congestion_controlled_exit_streams_both_ways() {
    let mut net = Net::new(23);
    net.circ_config.congestion_control = Some(Box::default());
    let (mut net, i) = {
        net.add_relay(|_| {});
        net.add_relay(|c| {
            c.exit_policy = Some(policy("accept *:80"));
            c.circuits.congestion_control = Some(onion_circuit::cc::CcConfig::default());
            c.limits.stream_buffer = 8192;
        });
        let (c, _) = net
            .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 14)))
            .expect("connect");
        let i = net.build(c, &[0, 1], HandshakeKind::NtorV3);
        (net, i)
    };
    assert!(
        net.circs[i].circ.congestion_control(1).is_some(),
        "negotiated"
    );
    // Download.
    net.reply = pattern(500_000);
    let s = net.begin(i, "example.com", 80);
    net.send(i, s, b"GET /");
    let got = net.circs[i].data.get(&s.get()).cloned().unwrap_or_default();
    assert!(got == pattern(500_000), "{}", got.len());
    assert_eq!(net.circs[i].ended.get(&s.get()), Some(&EndReason::DONE));
    // Upload into a target that stops reading: XOFF stops the client (no stream windows
    // under congestion control, proposal 324 §4).
    net.reply = Vec::new();
    let s = net.begin(i, "example.com", 80);
    net.targets_read = false;
    let upload = pattern(2_000_000);
    let off = net.upload_until_blocked(i, s, &upload, 0);
    // XOFF leaves once the exit's buffer has stayed full past the 5 ms grace period: the
    // client stops with what it sent until then (the test's clock moves 1 ms per round and
    // each round sends a congestion window), not with the whole upload.
    assert!(off < upload.len(), "{off}");
    let held = net.relays[1].queued_bytes();
    assert!(held > 8192 && held <= off, "{held} of {off}");
    // Stopped means stopped: more time and more tries send nothing.
    assert_eq!(net.upload_until_blocked(i, s, &upload, off), off);
    net.upload_rest(i, s, &upload, off);
    let rec = net.target_received(1);
    assert!(rec[5..] == upload, "{} of {}", rec.len(), upload.len());
}

/// Data a client sends into an exit stream whose target stopped reading waits in the held
/// circuit until XOFF stops the client; it counts toward the relay's memory limit, so a
/// client that sends faster than the XOFF can act (or ignores it) meets the out-of-memory
/// handler instead of growing the relay without bound.
#[test]
fn data_held_behind_a_full_stream_counts_toward_the_memory_limit() {
    let mut net = Net::new(31);
    net.circ_config.congestion_control = Some(Box::default());
    net.add_relay(|_| {});
    net.add_relay(|c| {
        c.exit_policy = Some(policy("accept *:80"));
        c.circuits.congestion_control = Some(onion_circuit::cc::CcConfig::default());
        c.limits.stream_buffer = 8192;
        c.limits.max_queued_bytes = 300_000;
    });
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 16)))
        .expect("connect");
    let i = net.build(c, &[0, 1], HandshakeKind::NtorV3);
    net.reply = Vec::new();
    let s = net.begin(i, "example.com", 80);
    net.targets_read = false;
    let upload = pattern(2_000_000);
    let mut off = 0;
    let mut most = 0;
    while off < upload.len() && net.circs[i].closed.is_none() {
        let n = net.circs[i].circ.send(s, &upload[off..]).unwrap_or(0);
        off += n;
        net.advance(Duration::from_millis(1));
        most = most.max(net.relays[1].queued_bytes());
        if n == 0 {
            break;
        }
    }
    assert_eq!(net.relays[1].stats().circuits_killed_oom, 1, "sent {off}");
    assert_eq!(net.relays[1].queued_bytes(), 0);
    // Bounded by the limit plus what one step can bring (one round of the test's clock).
    assert!(most <= 300_000 + off / 2, "{most} of {off}");
}

#[test]
fn rotated_onion_keys_and_the_previous_ones_both_answer() {
    let mut net = Net::new(24);
    net.add_relay(|_| {});
    let old = net.target(0);
    let params = onion_crypto::relay_keyset::OnionKeyParams::default();
    // 29 days later the ntor key is due (onion-key-rotation-days 28).
    net.advance(Duration::from_secs(29 * 24 * 3600));
    let now = net.now;
    let rot = net.relays[0].rotate_keys(now, &params).expect("rotate");
    assert!(rot.onion_keys && rot.descriptor_changed());
    let new = net.target(0);
    assert_ne!(old.ntor_key, new.ntor_key);
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 15)))
        .expect("connect");
    for (t, kind) in [
        (&old, HandshakeKind::Ntor),
        (&old, HandshakeKind::NtorV3),
        (&new, HandshakeKind::NtorV3),
    ] {
        let i = net.start(c, t, kind, &[0], 1);
        net.run();
        assert_eq!(net.hops(i), 1, "{kind:?}");
    }
    // After the grace period (7 days) the previous key is gone.
    net.advance(Duration::from_secs(8 * 24 * 3600));
    let now = net.now;
    let rot = net.relays[0].rotate_keys(now, &params).expect("rotate");
    assert!(rot.previous_onion_keys_expired);
    let i = net.start(c, &old, HandshakeKind::NtorV3, &[0], 1);
    net.run();
    assert_eq!(net.hops(i), 0);
    assert!(net.circs[i].closed.is_some());
}

/// A guard and an exit accepting port 80 (`f` adjusts the exit's configuration), a client
/// and a 2-hop circuit through them.
fn two_hop_exit(seed: u64, client: u8, f: impl FnOnce(&mut RelayConfig)) -> (Net, usize) {
    let mut net = Net::new(seed);
    net.add_relay(|_| {});
    net.add_relay(|c| {
        c.exit_policy = Some(policy("accept *:80"));
        f(c);
    });
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, client)))
        .expect("connect");
    let i = net.build(c, &[0, 1], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 2);
    (net, i)
}

impl Net {
    /// Send `data[off..]` on stream `s` until the circuit takes no more; returns the new
    /// offset.
    fn upload_until_blocked(
        &mut self,
        i: usize,
        s: StreamId,
        data: &[u8],
        mut off: usize,
    ) -> usize {
        while off < data.len() {
            let n = self.circs[i].circ.send(s, &data[off..]).expect("send");
            off += n;
            // Time passes while the upload goes on: an XOFF leaves only once the exit's
            // buffer has stayed over its limit past C tor 0.4.9's grace period (5 ms).
            self.advance(Duration::from_millis(1));
            if n == 0 {
                break;
            }
        }
        off
    }

    /// With the targets reading again, send the rest of `data` and let it all arrive.
    fn upload_rest(&mut self, i: usize, s: StreamId, data: &[u8], mut off: usize) {
        self.targets_read = true;
        for _ in 0..100_000 {
            if off == data.len() {
                break;
            }
            self.drain_targets();
            off += self.circs[i].circ.send(s, &data[off..]).expect("send");
            self.run();
        }
        for _ in 0..1000 {
            self.drain_targets();
        }
    }

    /// Let every target read what its exit holds for it.
    fn drain_targets(&mut self) {
        let keys: Vec<(usize, StreamHandle)> = self.targets.keys().copied().collect();
        for (r, s) in keys {
            let mut buf = Vec::new();
            while self.relays[r].target_transmit(s, self.now, &mut buf, 4096) > 0 {}
            if let Some(t) = self.targets.get_mut(&(r, s)) {
                t.received.extend_from_slice(&buf);
            }
            self.run();
        }
    }
}

#[test]
fn a_target_that_stops_reading_stops_the_client() {
    let (mut net, i) = two_hop_exit(21, 12, |c| c.limits.stream_buffer = 4096);
    let s = net.begin(i, "example.com", 80);
    net.targets_read = false;
    let upload = pattern(1_000_000);
    let off = net.upload_until_blocked(i, s, &upload, 0);
    // The stream window (500 cells) plus the exit's buffer: no more got out of the client.
    assert!(off <= 500 * 498 + 4096 + 498, "{off}");
    // What the exit holds (its buffer and the cells held in the circuit behind it) is what
    // the window let through, counted in full for the out-of-memory handler.
    let held = net.relays[1].queued_bytes();
    assert!(held > 4096 && held <= 500 * 498 + 4096 + 498, "{held}");
    // The target reads again: everything arrives, in order.
    net.upload_rest(i, s, &upload, off);
    assert!(net.target_received(1) == upload);
}

#[test]
fn streams_and_channel_input_are_bounded() {
    let (mut net, i) = two_hop_exit(22, 13, |c| {
        c.limits.max_streams = 1;
        c.limits.channel_inbound = 4096;
    });
    let a = net.begin(i, "example.com", 80);
    let b = net.begin(i, "example.com", 80);
    assert_eq!(net.circs[i].ended.get(&a.get()), None);
    assert_eq!(
        net.circs[i].ended.get(&b.get()),
        Some(&EndReason::RESOURCELIMIT)
    );
    // More unprocessed input than Limits::channel_inbound: the channel closes.
    let (_, exit_side) = net.relay_link(0, 1).expect("link");
    net.relays[1].handle_input(exit_side, net.now, &[0u8; 5000]);
    assert!(matches!(
        net.relays[1].poll_event(),
        Some(Event::Disconnect { conn }) if conn == exit_side
    ));
    assert_eq!(net.relays[1].n_circuits(), 0);
}

#[test]
fn channels_without_circuits_close_when_idle() {
    let (mut net, c) = three_relays(25);
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 3);
    // Carrying a circuit: kept however long.
    net.advance(Duration::from_secs(200));
    assert!(net.relay_link(0, 1).is_some());
    net.circs[i].circ.destroy();
    net.run();
    net.advance(Duration::from_secs(100));
    assert!(net.relay_link(0, 1).is_some());
    // Three minutes without circuits: every channel closes, the client's too.
    net.advance(Duration::from_secs(100));
    assert!(net.relay_link(0, 1).is_none());
    assert!(net.relay_link(1, 2).is_none());
    for r in 0..3 {
        assert_eq!(net.relays[r].n_connections(), 0, "relay {r}");
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Accept(u8),
        Input(u8, Vec<u8>),
        Closed(u8),
        Timeout(u16),
        Exporter(u8),
        Resolved(u8, bool),
        TargetConnected(u8),
        TargetFailed(u8),
        TargetData(u8, Vec<u8>),
        TargetClosed(u8),
        TargetTransmit(u8),
        Transmit(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u8>().prop_map(Op::Accept),
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..600))
                .prop_map(|(c, b)| Op::Input(c, b)),
            any::<u8>().prop_map(Op::Closed),
            any::<u16>().prop_map(Op::Timeout),
            any::<u8>().prop_map(Op::Exporter),
            (any::<u8>(), any::<bool>()).prop_map(|(s, b)| Op::Resolved(s, b)),
            any::<u8>().prop_map(Op::TargetConnected),
            any::<u8>().prop_map(Op::TargetFailed),
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..100))
                .prop_map(|(s, b)| Op::TargetData(s, b)),
            any::<u8>().prop_map(Op::TargetClosed),
            any::<u8>().prop_map(Op::TargetTransmit),
            any::<u8>().prop_map(Op::Transmit),
        ]
    }

    #[derive(Debug, Clone)]
    enum CircOp {
        /// A relay cell body (command, stream, data) encrypted for hop 0 or 1.
        Raw(u8, u8, u16, Vec<u8>, bool),
        Begin(u8, u16),
        BeginDir,
        Resolve(u8),
        Data(u8, Vec<u8>),
        Close(u8),
        /// A new circuit.
        Build(bool),
        /// Time passes.
        Wait(u8),
    }

    fn circ_op() -> impl Strategy<Value = CircOp> {
        prop_oneof![
            (
                0u8..2,
                0u8..48,
                0u16..4,
                proptest::collection::vec(any::<u8>(), 0..40),
                any::<bool>()
            )
                .prop_map(|(h, c, s, d, e)| CircOp::Raw(h, c, s, d, e)),
            (
                0u8..4,
                prop_oneof![Just(80u16), Just(81), Just(82), Just(25)]
            )
                .prop_map(|(h, p)| CircOp::Begin(h, p)),
            Just(CircOp::BeginDir),
            (0u8..4).prop_map(CircOp::Resolve),
            (0u8..4, proptest::collection::vec(any::<u8>(), 0..2000))
                .prop_map(|(s, d)| CircOp::Data(s, d)),
            (0u8..4).prop_map(CircOp::Close),
            any::<bool>().prop_map(CircOp::Build),
            any::<u8>().prop_map(CircOp::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Arbitrary relay messages and stream use on real circuits: nothing panics, and once
        /// the client closes everything, the relays hold no circuit and no stream.
        #[test]
        fn circuits_are_freed_whatever_the_client_sends(
            ops in proptest::collection::vec(circ_op(), 1..30)
        ) {
            let mut net = Net::new(98);
            net.add_relay(|c| c.dir_cache = true);
            net.add_relay(|c| {
                c.exit_policy = Some(policy("accept *:80, accept *:81, accept *:82"));
                c.dir_cache = true;
                c.limits.stream_buffer = 4096;
            });
            net.reply = pattern(20_000);
            let (c, _) = net
                .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)))
                .expect("connect");
            let mut circs = vec![net.build(c, &[0, 1], HandshakeKind::NtorV3)];
            let hosts = ["example.com", "93.184.216.34", "nx.invalid", "10.0.0.1"];
            for o in ops {
                let i = *circs.last().expect("circ");
                let now = net.now;
                let circ = &mut net.circs[i].circ;
                match o {
                    CircOp::Raw(hop, cmd, stream, data, early) => {
                        let mut body = Box::new([0u8; 509]);
                        body[0] = cmd;
                        body[3..5].copy_from_slice(&stream.to_be_bytes());
                        let n = data.len().min(498);
                        body[9..11].copy_from_slice(&(n as u16).to_be_bytes());
                        body[11..11 + n].copy_from_slice(&data[..n]);
                        let _ = circ.send_raw(usize::from(hop), body, early);
                    }
                    CircOp::Begin(h, port) => {
                        let _ = circ.begin(hosts[usize::from(h)], port, BeginFlags::default(), now);
                    }
                    CircOp::BeginDir => {
                        let _ = circ.begin_dir(now);
                    }
                    CircOp::Resolve(h) => {
                        let _ = circ.resolve(hosts[usize::from(h)], now);
                    }
                    CircOp::Data(s, d) => {
                        if let Some(s) = StreamId::new(u16::from(s) + 1) {
                            let _ = circ.send(s, &d);
                        }
                    }
                    CircOp::Close(s) => {
                        if let Some(s) = StreamId::new(u16::from(s) + 1) {
                            let _ = circ.close_stream(s);
                        }
                    }
                    // An idle channel may have closed (Limits::channel_idle).
                    CircOp::Build(_) if !net.clients[c].chan.is_open() => {}
                    CircOp::Build(fast) => {
                        let kind = if fast { HandshakeKind::CreateFast } else { HandshakeKind::Ntor };
                        circs.push(net.build(c, &[0, 1], kind));
                    }
                    CircOp::Wait(s) => net.advance(Duration::from_secs(u64::from(s))),
                }
                net.run();
            }
            for i in circs {
                net.circs[i].circ.destroy();
            }
            net.run();
            for r in 0..2 {
                prop_assert_eq!(net.relays[r].n_circuits(), 0);
                prop_assert_eq!(net.relays[r].n_streams(), 0);
            }
        }
    }

    /// A VERSIONS cell: arbitrary input after it reaches the handshake's later states.
    const VERSIONS: &[u8] = &[0, 0, 7, 0, 6, 0, 3, 0, 4, 0, 5];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_relay_never_panics(ops in proptest::collection::vec(op(), 1..40)) {
            let mut net = Net::new(99);
            net.add_relay(|c| {
                c.exit_policy = Some(policy("accept *:*"));
                c.exit_reject_private = false;
                c.dir_cache = true;
            });
            let relay = &mut net.relays[0];
            let mut now = onion_circuit::Instant::ZERO;
            let h = |s: u8| StreamHandle(u64::from(s % 4));
            let ip = |c: u8| IpAddr::V4(Ipv4Addr::new(198, 51, 100, c % 4));
            for o in ops {
                match o {
                    Op::Accept(c) => {
                        if relay.handle_accepted(ConnId(u64::from(c % 4)), now, SocketAddr::new(ip(c), 1)).is_ok() {
                            relay.handle_input(ConnId(u64::from(c % 4)), now, VERSIONS);
                        }
                    }
                    Op::Input(c, b) => relay.handle_input(ConnId(u64::from(c % 4)), now, &b),
                    Op::Closed(c) => relay.handle_closed(ConnId(u64::from(c % 4)), now),
                    Op::Timeout(ms) => {
                        now = now + Duration::from_millis(u64::from(ms) * 10);
                        relay.handle_timeout(now, wall0().into());
                    }
                    Op::Exporter(c) => relay.provide_tls_exporter(ConnId(u64::from(c % 4)), now, [c; 32]),
                    Op::Resolved(s, ok) => relay.handle_resolved(
                        h(s),
                        now,
                        if ok { Ok(vec![EXAMPLE]) } else { Err(ResolveError::Transient) },
                    ),
                    Op::TargetConnected(s) => relay.handle_target_connected(h(s), now, SocketAddr::new(EXAMPLE, 80)),
                    Op::TargetFailed(s) => relay.handle_target_failed(h(s), now, TargetError::Reset),
                    Op::TargetData(s, b) => { relay.handle_target_data(h(s), now, &b); }
                    Op::TargetClosed(s) => relay.handle_target_closed(h(s), now),
                    Op::TargetTransmit(s) => {
                        let mut out = Vec::new();
                        relay.target_transmit(h(s), now, &mut out, 1000);
                    }
                    Op::Transmit(c) => {
                        let mut out = Vec::new();
                        relay.poll_transmit_to(ConnId(u64::from(c % 4)), now, &mut out, 100);
                        while relay.poll_transmit(now, &mut out).is_some() {}
                    }
                }
                while relay.poll_event().is_some() {}
                let _ = relay.poll_timeout();
                prop_assert!(relay.n_connections() <= 4);
            }
        }
    }
}

/// Extend every circuit in `circs` to `t` at once (a client looping on a doomed hop).
fn extend_all(net: &mut Net, circs: &[usize], t: &HopTarget) {
    let now = net.now;
    for &i in circs {
        net.circs[i]
            .circ
            .extend(t, now, &mut net.rng)
            .expect("extend");
    }
    net.run();
}

#[test]
fn a_burst_of_failed_extends_frees_every_circuit() {
    let mut net = Net::new(27);
    net.add_relay(|_| {});
    net.add_relay(|c| c.limits.circuits_per_channel = 10);
    net.add_relay(|_| {});
    let (c, _) = net
        .connect_client(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 17)))
        .expect("connect");
    let one_hop = |net: &mut Net, n: usize| -> Vec<usize> {
        (0..n)
            .map(|_| net.build(c, &[0], HandshakeKind::CreateFast))
            .collect()
    };
    // Nothing listens there: the embedder reports each connection closed.
    let mut dead = net.target(1);
    dead.addrs = vec![SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
        9001,
    )];
    let circs = one_hop(&mut net, 60);
    extend_all(&mut net, &circs, &dead);
    assert_eq!(net.relays[0].n_circuits(), 0);
    assert!(circs.iter().all(|&i| net.circs[i].closed.is_some()));
    // Connections that never complete: the connect timeout frees the waiting circuits.
    net.ignore_connects = true;
    let circs = one_hop(&mut net, 60);
    let t = net.target(1);
    extend_all(&mut net, &circs, &t);
    assert_eq!(net.relays[0].n_circuits(), 60);
    net.advance(Duration::from_secs(11));
    assert_eq!(net.relays[0].n_circuits(), 0);
    net.ignore_connects = false;
    // The client gives up while the extension waits for the connection.
    net.ignore_connects = true;
    let circs = one_hop(&mut net, 30);
    let t = net.target(2);
    extend_all(&mut net, &circs, &t);
    for &i in &circs {
        net.circs[i].circ.destroy();
    }
    net.run();
    assert_eq!(net.relays[0].n_circuits(), 0);
    net.advance(Duration::from_secs(11));
    net.ignore_connects = false;
    // The next relay refuses most CREATE2 cells (its per-channel limit).
    let circs = one_hop(&mut net, 60);
    let t = net.target(1);
    extend_all(&mut net, &circs, &t);
    let built = circs.iter().filter(|&&i| net.hops(i) == 2).count();
    assert_eq!(built, 10);
    assert_eq!(net.relays[0].n_circuits(), built);
    assert_eq!(net.relays[1].n_circuits(), built);
    // The next channel closes under the extended ones.
    let (mid, _) = net.relay_link(0, 1).expect("link");
    net.cut(0, mid);
    assert_eq!(net.relays[0].n_circuits(), 0);
    assert_eq!(net.relays[1].n_circuits(), 0);
    assert!(circs.iter().all(|&i| net.circs[i].closed.is_some()));
}

#[test]
fn out_of_memory_closes_the_circuit_with_the_oldest_queued_data_first() {
    let (mut net, a, conn) = stalled_fetch(29, |l| l.max_queued_bytes = 200_000);
    let c = net.circs[a].chan;
    let b = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(b), 3);
    net.reply = pattern(50_000);
    let sa = net.begin(a, "example.com", 80);
    net.reply = pattern(160_000);
    let sb = net.begin(b, "example.com", 80);
    net.relays[0].set_blocked(conn, true);
    // A stops draining first, with a little: about 100 cells wait at the guard.
    net.send(a, sa, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    net.advance(Duration::from_secs(5));
    assert_eq!(net.relays[0].stats().circuits_killed_oom, 0);
    assert!(net.relays[0].queued_bytes() > 50_000);
    // B queues three times as much, later: together above the limit.
    net.send(b, sb, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    net.advance(Duration::from_secs(1));
    assert_eq!(net.relays[0].stats().circuits_killed_oom, 1);
    assert!(net.relays[0].queued_bytes() <= 180_000);
    assert_eq!(net.relays[0].n_circuits(), 1);
    net.relays[0].set_blocked(conn, false);
    net.run();
    assert_eq!(
        net.circs[a].closed,
        Some(Some(DestroyReason::RESOURCELIMIT))
    );
    assert_eq!(net.circs[b].closed, None);
    let got = net.circs[b]
        .data
        .get(&sb.get())
        .cloned()
        .unwrap_or_default();
    assert!(got == pattern(160_000), "{}", got.len());
}
