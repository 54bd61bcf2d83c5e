//! An in-process network of relays for driving a [`Client`]: each relay has real link keys
//! and certificates, a responder [`Channel`] per connection the client opens, and real
//! [`RelayCircuit`]s. An EXTEND2 is answered by the named relay's circuit directly (the
//! cells between relays go as channel messages without a channel between them: what is
//! tested is the client). Each relay is an exit with a few services by host name, and may
//! serve directory documents over BEGIN_DIR.
//!
//! Exit services (the host of a BEGIN):
//! * `echo` — CONNECTED, then every byte received is sent back;
//! * `big<N>` — CONNECTED, then N bytes of `b'x'`, then END (DONE);
//! * `refuse` — END (EXITPOLICY) at once;
//! * `end-<N>` — END with reason N at once;
//! * `mute` — no answer at all;
//! * `destroy` — the exit's circuit goes away (DESTROY toward the client);
//! * `silent` — CONNECTED, then nothing;
//! * anything else — CONNECTED and END (DONE).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_cell::chancell::{ChanMsg, DestroyReason};
use onion_cell::relaymsg::{EndReason, ResolvedAnswer, ResolvedValue};
use onion_cell::CircId;
use onion_circuit::cc::CcConfig;
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, RelayLinkKeys};
use onion_circuit::relay::{RelayCircuit, RelayConfig, RelayEvent, RelayKeys, RelayOutput};
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_client::dir::{Authority, DirConfig, DirMode, Directory};
use onion_client::{Client, ClientConfig, ConnId, Error, Event, Instant, StreamHandle, Timestamp};
use onion_crypto::keys::{NtorOnionKey, NtorSecretKey};
use onion_dir::consensus::BandwidthWeights;
use onion_dir::netview::{NetView, RelayRecord};
use onion_dir::policy::{PortSet, RelayPolicy};
use onion_dir::{RelayFlags, RsaIdentity};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub const TORNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-dir/testdata/tornet");

/// Ten seconds after the test network's consensus became valid (2026-11-23 07:20:10).
pub const WALL: Timestamp = Timestamp(1_795_418_410);

pub fn testdata(name: &str) -> String {
    std::fs::read_to_string(format!("{TORNET}/{name}")).unwrap()
}

/// An authority that cannot be reached (no ORPort): refreshes of an adopted directory fail
/// at once and stay out of the way.
pub fn unreachable_authority() -> Authority {
    Authority {
        name: "nowhere".into(),
        rsa_id: RsaIdentity([1; 20]),
        v3ident: RsaIdentity([2; 20]),
        or_addr: None,
    }
}

/// A client configuration on [`unreachable_authority`] whose own directory refreshes go
/// nowhere: the adopted directory's refresh fails (the relays serve no consensus) and is
/// not tried again during a test.
pub fn quiet_config() -> ClientConfig {
    let mut dir = DirConfig::new(vec![unreachable_authority()], vec![], DirMode::Micro);
    dir.refresh_from_guards = false;
    dir.retry_delay = Duration::from_secs(7200);
    ClientConfig::new(dir)
}

/// Whether stream `s` opened.
pub fn opened(net: &Net, s: StreamHandle) -> bool {
    net.events
        .iter()
        .any(|e| matches!(e, Event::StreamOpened { stream } if *stream == s))
}

/// Whether stream `s` closed, and its error if it did.
pub fn closed(net: &Net, s: StreamHandle) -> Option<Option<Error>> {
    net.events.iter().find_map(|e| match e {
        Event::StreamClosed { stream, error } if *stream == s => Some(error.clone()),
        _ => None,
    })
}

/// The wall clock at virtual time `now` (the run starts at [`WALL`]).
pub fn wall(now: Instant) -> Timestamp {
    Timestamp(WALL.0 + now.saturating_duration_since(Instant::ZERO).as_secs())
}

fn system(now: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(wall(now).0)
}

/// One relay.
pub struct Relay {
    pub name: String,
    pub addr: SocketAddr,
    pub link: RelayLinkKeys,
    pub keys: RelayKeys,
    pub ntor: NtorOnionKey,
    /// Connections are refused (TCP fails).
    pub down: bool,
    /// Connections are never answered (TCP hangs).
    pub blackhole: bool,
    /// Documents served over BEGIN_DIR, by path prefix.
    pub docs: Vec<(String, String)>,
    /// EXTEND2 cells toward it are never answered (a relay that hangs mid-build).
    pub mute: bool,
    /// The ports its exit policy summary allows (all by default; [`PortSet::none`] makes it a
    /// non-exit in the directory). Its circuits still serve BEGINs: only the client's choice
    /// is tested.
    pub exit_ports: PortSet,
    /// Without the Stable flag in the directory (never a guard then).
    pub unstable: bool,
}

/// Where a relay circuit's cells toward the client go.
#[derive(Clone, Copy)]
enum Up {
    Client(ConnId, CircId),
    Relay(usize),
}

struct RCirc {
    relay: usize,
    circ: RelayCircuit,
    up: Up,
    next: Option<usize>,
}

/// What an exit stream does.
enum Service {
    Echo,
    Dir(Vec<u8>),
    Silent,
}

struct Outbox {
    data: VecDeque<u8>,
    end: bool,
    service: Service,
}

/// The network and the client's view of it.
pub struct Net {
    pub now: Instant,
    pub rng: ChaCha20Rng,
    pub relays: Vec<Relay>,
    conns: BTreeMap<ConnId, (usize, Channel)>,
    rcs: Vec<Option<RCirc>>,
    by_client: HashMap<(ConnId, CircId), usize>,
    outbox: BTreeMap<(usize, u16), Outbox>,
    /// Every event the client gave, in order (Connect and Disconnect are acted on too).
    pub events: Vec<Event>,
    /// Bytes the client sent, per connection.
    pub sent: BTreeMap<ConnId, usize>,
    /// Connections the client asked for.
    pub connects: usize,
    /// A connection whose bytes are not delivered (the embedder cannot write to it).
    pub stalled: Option<ConnId>,
    /// Relays answer a request for congestion control (proposal 324) with C tor's defaults.
    pub congestion_control: bool,
    /// The relays' initial congestion window (cells) instead of C tor's default: an exit
    /// whose window has grown, with that much in flight at once.
    pub relay_cwnd_init: Option<u32>,
    /// Every BEGIN a relay received: the relay's index and the host asked for.
    pub begins: Vec<(usize, String)>,
    /// Every RELAY_END a relay received from the client: the relay's index and the reason.
    pub ends: Vec<(usize, EndReason)>,
    /// Consensus parameters for [`Net::directory`] (`name=value`, space-separated; empty for
    /// none, the test network's own).
    pub params: String,
}

/// Standard base64 without padding (dir-spec §1.2's identity encoding in `r` lines).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl Net {
    /// `n` relays at 10.i.0.1:9001 (distinct /16s), all exits, guards and caches.
    pub fn new(n: usize, seed: u64) -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut relays = Vec::new();
        for i in 0..n {
            let link = RelayLinkKeys::generate(system(Instant::ZERO), &mut rng).unwrap();
            let ids = link.ids();
            let ntor = NtorSecretKey::generate(&mut rng);
            let ntor_pub = *ntor.public();
            relays.push(Relay {
                name: format!("relay{i}"),
                addr: SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(10, i as u8 + 1, 0, 1),
                    9001,
                )),
                link,
                keys: RelayKeys {
                    rsa_id: ids.rsa.unwrap(),
                    ed_id: ids.ed25519.unwrap(),
                    ntor_keys: vec![ntor],
                },
                ntor: ntor_pub,
                down: false,
                blackhole: false,
                docs: Vec::new(),
                exit_ports: PortSet::all(),
                mute: false,
                unstable: false,
            });
        }
        Net {
            now: Instant::ZERO,
            rng,
            relays,
            conns: BTreeMap::new(),
            rcs: Vec::new(),
            by_client: HashMap::new(),
            outbox: BTreeMap::new(),
            events: Vec::new(),
            sent: BTreeMap::new(),
            connects: 0,
            stalled: None,
            congestion_control: false,
            relay_cwnd_init: None,
            begins: Vec::new(),
            ends: Vec::new(),
            params: String::new(),
        }
    }

    /// The relays as directory records: every one a Guard, V2Dir, Stable and Fast relay
    /// (neither Guard nor Stable if `unstable`), an Exit unless its exit ports are none, with
    /// the `extra` flags.
    fn records(&self, extra: RelayFlags) -> Vec<RelayRecord> {
        self.relays
            .iter()
            .map(|r| {
                let SocketAddr::V4(v4) = r.addr else {
                    unreachable!()
                };
                let exit = if r.exit_ports == PortSet::none() {
                    0
                } else {
                    RelayFlags::EXIT.0
                };
                RelayRecord {
                    nickname: r.name.clone(),
                    rsa_id: r.keys.rsa_id,
                    ed_id: Some(r.keys.ed_id.0),
                    ntor_onion_key: Some(r.ntor.0),
                    ipv4: Some(v4),
                    flags: RelayFlags(
                        RelayFlags::RUNNING.0
                            | RelayFlags::VALID.0
                            | RelayFlags::FAST.0
                            | if r.unstable {
                                0
                            } else {
                                RelayFlags::STABLE.0 | RelayFlags::GUARD.0
                            }
                            | RelayFlags::V2DIR.0
                            | exit
                            | extra.0,
                    ),
                    bandwidth: 1000,
                    policy: RelayPolicy::Summary {
                        v4: r.exit_ports.clone(),
                        v6: PortSet::none(),
                    },
                    ..RelayRecord::default()
                }
            })
            .collect()
    }

    /// A directory of `records` over the consensus `text` (its times and parameters), every
    /// relay a listed guard.
    fn directory_of(&self, text: &str, records: Vec<RelayRecord>) -> Arc<Directory> {
        let view = NetView::from_records(records, BandwidthWeights::uniform(10000)).unwrap();
        let cons = onion_dir::consensus::parse(text).unwrap().assume_verified();
        let mut d = Directory::from_consensus(
            &cons,
            view,
            DirMode::Micro,
            self.relays.len(),
            String::new(),
        );
        let mut ids: Vec<RsaIdentity> = self.relays.iter().map(|r| r.keys.rsa_id).collect();
        ids.sort();
        d.listed_guards = ids;
        Arc::new(d)
    }

    /// A directory listing the relays (microdescriptor mode, over the test network's real
    /// consensus for its times and parameters), for [`Client::adopt_directory`].
    pub fn directory(&self) -> Arc<Directory> {
        let records = self.records(RelayFlags(0));
        // The test network's consensus with its relay entries replaced by ours (and their `pr`
        // lines: FlowCtrl=2 and Relay=4 offer congestion control).
        let tornet = testdata("cached-microdesc-consensus");
        let first = tornet.find("\nr ").unwrap() + 1;
        let footer = tornet.find("directory-footer").unwrap();
        let mut text = tornet[..first].to_owned();
        if !self.params.is_empty() {
            let at = text.find("shared-rand-current-value").unwrap();
            text.insert_str(at, &format!("params {}\n", self.params));
        }
        let mut sorted: Vec<&Relay> = self.relays.iter().collect();
        sorted.sort_by_key(|r| r.keys.rsa_id);
        for r in sorted {
            let SocketAddr::V4(v4) = r.addr else {
                unreachable!()
            };
            text.push_str(&format!(
                "r {} {} 2038-01-01 00:00:00 {} {} 0\nm {}\n\
                 s Exit Fast Guard Running Stable V2Dir Valid\nv Tor 0.4.9.11\n\
                 pr Cons=1-2 Desc=1-4 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 \
                 Link=3-5 LinkAuth=3 Microdesc=1-3 Relay=2-4\nw Bandwidth=1000\n",
                r.name,
                b64(&r.keys.rsa_id.0),
                v4.ip(),
                v4.port(),
                b64(&[7; 32]),
            ));
        }
        text.push_str(&tornet[footer..]);
        self.directory_of(&text, records)
    }

    /// [`Net::directory`] with every relay also an HSDir, over the test network's consensus
    /// unchanged (for onion-service tests: the hash ring is of these relays).
    pub fn hsdir_directory(&self) -> Arc<Directory> {
        let text = testdata("cached-microdesc-consensus");
        self.directory_of(&text, self.records(RelayFlags::HSDIR))
    }

    /// [`Net::hsdir_directory`] with [`Net::params`], and with the relays `unguarded` neither
    /// Guard-flagged nor in the consensus's guard list (no longer guards).
    pub fn hsdir_directory_with(&self, unguarded: &[RsaIdentity]) -> Arc<Directory> {
        let mut text = testdata("cached-microdesc-consensus");
        if !self.params.is_empty() {
            let at = text.find("shared-rand-current-value").unwrap();
            text.insert_str(at, &format!("params {}\n", self.params));
        }
        let mut records = self.records(RelayFlags::HSDIR);
        for r in records.iter_mut().filter(|r| unguarded.contains(&r.rsa_id)) {
            r.flags = RelayFlags(r.flags.0 & !RelayFlags::GUARD.0);
        }
        let mut d = self.directory_of(&text, records);
        if let Some(d) = Arc::get_mut(&mut d) {
            d.listed_guards.retain(|id| !unguarded.contains(id));
        }
        d
    }

    /// Run until nothing moves at the current time.
    pub fn run(&mut self, client: &mut Client) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(ev) = client.poll_event() {
                moved = true;
                self.on_event(client, ev);
            }
            let mut buf = Vec::new();
            while let Some(conn) = client.poll_transmit(self.now, &mut buf) {
                moved = true;
                *self.sent.entry(conn).or_default() += buf.len();
                self.relay_input(conn, &buf);
                buf.clear();
            }
            moved |= self.step_relays();
            let conns: Vec<ConnId> = self.conns.keys().copied().collect();
            for conn in conns {
                if self.stalled == Some(conn) {
                    continue;
                }
                let Some((_, ch)) = self.conns.get_mut(&conn) else {
                    continue;
                };
                let mut out = Vec::new();
                if ch.poll_transmit(&mut out).is_some() {
                    moved = true;
                    client.handle_input(conn, self.now, &out);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network did not settle");
    }

    /// Move the clock to the client's next timeout (at most to `until`) and run.
    pub fn advance(&mut self, client: &mut Client, until: Instant) {
        let t = client.poll_timeout().map_or(until, |t| t.min(until));
        self.now = self.now.max(t);
        client.handle_timeout(self.now, wall(self.now));
        self.run(client);
    }

    /// Run, advancing time, until `done` holds or `limit` of virtual time passed.
    pub fn run_until(
        &mut self,
        client: &mut Client,
        limit: Duration,
        mut done: impl FnMut(&Net) -> bool,
    ) -> bool {
        let end = self.now + limit;
        self.run(client);
        while !done(self) {
            if self.now >= end {
                return false;
            }
            let before = self.now;
            self.advance(client, end);
            if self.now == before && client.poll_timeout().map_or(true, |t| t > end) {
                self.now = end;
            }
        }
        true
    }

    fn on_event(&mut self, client: &mut Client, ev: Event) {
        match &ev {
            Event::Connect { conn, addr, ids } => {
                self.connects += 1;
                let r = self.relays.iter().position(|r| r.addr == *addr);
                if r.is_some_and(|r| self.relays[r].blackhole) {
                    self.events.push(ev);
                    return;
                }
                match r {
                    Some(r)
                        if !self.relays[r].down
                            && ids.rsa.map_or(true, |id| id == self.relays[r].keys.rsa_id) =>
                    {
                        let mut digest = [0u8; 32];
                        self.rng.fill_bytes(&mut digest);
                        let certs = self.relays[r]
                            .link
                            .responder_certs(&digest, system(self.now))
                            .unwrap();
                        let mut cfg = ChanConfig::default();
                        cfg.peer_addr = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
                        cfg.my_addrs = vec![addr.ip()];
                        let ch = Channel::responder(
                            cfg,
                            &certs,
                            self.now,
                            system(self.now),
                            &mut self.rng,
                        );
                        self.conns.insert(*conn, (r, ch));
                        client.handle_connected(*conn, self.now, digest);
                    }
                    _ => client.handle_closed(*conn, self.now),
                }
            }
            Event::Disconnect { conn } => {
                self.close_conn(*conn);
            }
            _ => {}
        }
        self.events.push(ev);
    }

    /// The relay end of `conn` goes away (its circuits close).
    pub fn close_conn(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        let gone: Vec<usize> = self
            .by_client
            .iter()
            .filter(|((c, _), _)| *c == conn)
            .map(|(_, i)| *i)
            .collect();
        for i in gone {
            self.kill_rc(i);
        }
        self.by_client.retain(|(c, _), _| *c != conn);
    }

    /// Relay `r` dies: its connections close (the client is told) and its circuits go.
    pub fn kill_relay(&mut self, client: &mut Client, r: usize) {
        self.relays[r].down = true;
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, (x, _))| *x == r)
            .map(|(c, _)| *c)
            .collect();
        for c in conns {
            self.close_conn(c);
            client.handle_closed(c, self.now);
        }
        for i in 0..self.rcs.len() {
            if self.rcs[i].as_ref().is_some_and(|rc| rc.relay == r) {
                self.kill_rc(i);
            }
        }
    }

    fn kill_rc(&mut self, i: usize) {
        let Some(rc) = self.rcs.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.outbox.retain(|(c, _), _| *c != i);
        // The previous relay learns its next hop went away (tor-spec §5.4).
        if let Up::Relay(j) = rc.up {
            let now = self.now;
            if let Some(prev) = self.rcs.get_mut(j).and_then(Option::as_mut) {
                prev.next = None;
                prev.circ
                    .handle_from_next(now, ChanMsg::Destroy(DestroyReason::CHANNEL_CLOSED));
            }
        }
        if let Some(n) = rc.next {
            self.kill_rc(n);
        }
    }

    fn relay_input(&mut self, conn: ConnId, bytes: &[u8]) {
        let now = self.now;
        let mut data = bytes.to_vec();
        loop {
            let Some((_, ch)) = self.conns.get_mut(&conn) else {
                return;
            };
            let n = ch.handle_input(now, &data);
            data.drain(..n);
            let mut evs = Vec::new();
            while let Some(e) = ch.poll_event() {
                evs.push(e);
            }
            let none = evs.is_empty();
            for e in evs {
                self.relay_chan_event(conn, e);
            }
            if data.is_empty() {
                return;
            }
            assert!(n > 0 || !none, "the relay channel stopped taking input");
        }
    }

    fn relay_chan_event(&mut self, conn: ConnId, ev: ChanEvent) {
        let now = self.now;
        let ChanEvent::CircuitCell { circ_id, msg } = ev else {
            return;
        };
        if let Some(&i) = self.by_client.get(&(conn, circ_id)) {
            if matches!(msg, ChanMsg::Destroy(_)) {
                self.by_client.remove(&(conn, circ_id));
            }
            if let Some(rc) = self.rcs[i].as_mut() {
                rc.circ.handle_from_client(now, msg);
            }
            return;
        }
        if !matches!(msg, ChanMsg::Create2(_) | ChanMsg::CreateFast(_)) {
            return;
        }
        let Some(&(r, _)) = self.conns.get(&conn) else {
            return;
        };
        match RelayCircuit::accept_with(
            &self.relays[r].keys,
            &self.relay_config(),
            &msg,
            now,
            &mut self.rng,
        ) {
            Ok((circ, reply)) => {
                let (_, ch) = self.conns.get_mut(&conn).unwrap();
                let _ = ch.send(circ_id, &reply);
                self.rcs.push(Some(RCirc {
                    relay: r,
                    circ,
                    up: Up::Client(conn, circ_id),
                    next: None,
                }));
                self.by_client.insert((conn, circ_id), self.rcs.len() - 1);
            }
            Err(e) => {
                let (_, ch) = self.conns.get_mut(&conn).unwrap();
                let _ = ch.send(circ_id, &ChanMsg::Destroy(e.destroy_reason()));
            }
        }
    }

    /// Move relay circuits' cells and act on their events; whether anything moved.
    fn step_relays(&mut self) -> bool {
        let mut moved = false;
        let now = self.now;
        for i in 0..self.rcs.len() {
            while let Some(rc) = self.rcs[i].as_mut() {
                let (up, next) = (rc.up, rc.next);
                if let Some(out) = rc.circ.poll_cell(&mut self.rng) {
                    moved = true;
                    match out {
                        RelayOutput::ToClient(m) => match up {
                            Up::Client(conn, id) => {
                                if let Some((_, ch)) = self.conns.get_mut(&conn) {
                                    let _ = ch.send(id, &m);
                                }
                            }
                            Up::Relay(j) => {
                                if let Some(prev) = self.rcs[j].as_mut() {
                                    prev.circ.handle_from_next(now, m);
                                }
                            }
                        },
                        RelayOutput::ToNext(m) => {
                            if let Some(nx) = next.and_then(|n| self.rcs[n].as_mut()) {
                                nx.circ.handle_from_client(now, m);
                            }
                        }
                    }
                    continue;
                }
                match rc.circ.poll_event() {
                    Some(ev) => {
                        moved = true;
                        self.relay_event(i, ev);
                    }
                    None => break,
                }
            }
            moved |= self.pump_outbox(i);
        }
        moved
    }

    fn relay_event(&mut self, i: usize, ev: RelayEvent) {
        let now = self.now;
        let Some(rc) = self.rcs[i].as_mut() else {
            return;
        };
        match ev {
            RelayEvent::Extend(req) => {
                if self
                    .relays
                    .iter()
                    .any(|r| r.mute && r.keys.rsa_id == req.rsa_id)
                {
                    return;
                }
                let to = self.relays.iter().position(|r| {
                    r.keys.rsa_id == req.rsa_id && req.addrs.first() == Some(&r.addr) && !r.down
                });
                let config = self.relay_config();
                let accepted = to.and_then(|to| {
                    RelayCircuit::accept_with(
                        &self.relays[to].keys,
                        &config,
                        &req.create,
                        now,
                        &mut self.rng,
                    )
                    .ok()
                    .map(|(c, reply)| (to, c, reply))
                });
                match accepted {
                    Some((to, circ, reply)) => {
                        self.rcs.push(Some(RCirc {
                            relay: to,
                            circ,
                            up: Up::Relay(i),
                            next: None,
                        }));
                        let n = self.rcs.len() - 1;
                        let rc = self.rcs[i].as_mut().unwrap();
                        rc.next = Some(n);
                        rc.circ.handle_from_next(now, reply);
                    }
                    None => {
                        let rc = self.rcs[i].as_mut().unwrap();
                        rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
                    }
                }
            }
            RelayEvent::Begin { stream, host, .. } => {
                self.begins.push((rc.relay, host.to_string()));
                if host == "refuse" {
                    let _ = rc.circ.end_stream(stream, EndReason::EXITPOLICY);
                    return;
                }
                if let Some(r) = host.strip_prefix("end-").and_then(|r| r.parse().ok()) {
                    let _ = rc.circ.end_stream(stream, EndReason(r));
                    return;
                }
                match host.as_str() {
                    "mute" => return,
                    "destroy" => return self.kill_rc(i),
                    _ => {}
                }
                let _ = rc.circ.connected(
                    stream,
                    Some((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80)), 300)),
                );
                let (service, data, end) = if host == "echo" {
                    (Service::Echo, VecDeque::new(), false)
                } else if host == "silent" {
                    (Service::Silent, VecDeque::new(), false)
                } else if let Some(n) = host
                    .strip_prefix("big")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    (
                        Service::Silent,
                        std::iter::repeat(b'x').take(n).collect(),
                        true,
                    )
                } else {
                    (Service::Silent, VecDeque::new(), true)
                };
                self.outbox
                    .insert((i, stream.get()), Outbox { data, end, service });
            }
            RelayEvent::BeginDir { stream } => {
                let _ = rc.circ.connected(stream, None);
                self.outbox.insert(
                    (i, stream.get()),
                    Outbox {
                        data: VecDeque::new(),
                        end: false,
                        service: Service::Dir(Vec::new()),
                    },
                );
            }
            RelayEvent::Resolve { stream, .. } => {
                let value = ResolvedValue::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)));
                let _ = rc
                    .circ
                    .resolved(stream, vec![ResolvedAnswer { value, ttl: 60 }]);
            }
            RelayEvent::Stream(StreamEvent::Data { stream, data }) => {
                let relay = rc.relay;
                let Some(ob) = self.outbox.get_mut(&(i, stream.get())) else {
                    return;
                };
                match &mut ob.service {
                    Service::Echo => ob.data.extend(data.iter()),
                    Service::Dir(req) => {
                        req.extend_from_slice(&data);
                        if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&req[..end]).to_string();
                            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                            let doc = self.relays[relay]
                                .docs
                                .iter()
                                .find(|(p, _)| path.starts_with(p.as_str()));
                            let resp = match doc {
                                Some((_, body)) => format!("HTTP/1.0 200 OK\r\n\r\n{body}"),
                                None => "HTTP/1.0 404 Not found\r\n\r\n".to_owned(),
                            };
                            ob.data.extend(resp.as_bytes());
                            ob.end = true;
                            ob.service = Service::Silent;
                        }
                    }
                    Service::Silent => {}
                }
            }
            RelayEvent::Stream(StreamEvent::Ended { stream, reason }) => {
                // DESTROY is the relay's own report of its circuit closing, not a cell.
                if reason != EndReason::DESTROY {
                    self.ends.push((rc.relay, reason));
                }
                self.outbox.remove(&(i, stream.get()));
            }
            RelayEvent::Closed { .. } => {
                self.outbox.retain(|(c, _), _| *c != i);
                if let Some(rc) = self.rcs[i].take() {
                    if let Up::Client(conn, id) = rc.up {
                        self.by_client.remove(&(conn, id));
                    }
                    if let Some(n) = rc.next {
                        self.kill_rc(n);
                    }
                }
            }
            _ => {}
        }
    }

    /// Send what exit streams of circuit `i` have, as windows allow.
    fn pump_outbox(&mut self, i: usize) -> bool {
        let mut moved = false;
        let keys: Vec<(usize, u16)> = self
            .outbox
            .range((i, 0)..=(i, u16::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(rc) = self.rcs[i].as_mut() else {
                return moved;
            };
            let Some(ob) = self.outbox.get_mut(&k) else {
                continue;
            };
            let Some(stream) = StreamId::new(k.1) else {
                continue;
            };
            while !ob.data.is_empty() {
                let cap = rc.circ.send_capacity(stream).min(ob.data.len()).min(4096);
                if cap == 0 {
                    break;
                }
                let chunk: Vec<u8> = ob.data.iter().take(cap).copied().collect();
                // Only what the circuit took leaves the outbox: the rest waits for the
                // next pump, as a real exit keeps unsent bytes in its socket buffer.
                match rc.circ.send(stream, &chunk) {
                    Ok(n) if n > 0 => {
                        ob.data.drain(..n);
                        moved = true;
                    }
                    _ => break,
                }
            }
            if ob.data.is_empty() && ob.end {
                let _ = rc.circ.end_stream(stream, EndReason::DONE);
                self.outbox.remove(&k);
                moved = true;
            }
        }
        moved
    }

    fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            congestion_control: self.congestion_control.then(|| CcConfig {
                cwnd_init: self
                    .relay_cwnd_init
                    .unwrap_or(CcConfig::default().cwnd_init),
                ..CcConfig::default()
            }),
            ..RelayConfig::default()
        }
    }

    /// Relay circuits alive now that run congestion control (proposal 324).
    pub fn cc_circuits(&self) -> usize {
        self.rcs
            .iter()
            .flatten()
            .filter(|r| r.circ.congestion_control().is_some())
            .count()
    }

    /// Relay circuits alive now.
    pub fn relay_circuits(&self) -> usize {
        self.rcs.iter().filter(|r| r.is_some()).count()
    }

    /// Client circuits of more than one hop alive now (their first relay circuit has a next
    /// hop): the exit circuits, not the one-hop directory circuits.
    pub fn multi_hop_circuits(&self) -> usize {
        self.rcs
            .iter()
            .flatten()
            .filter(|r| matches!(r.up, Up::Client(..)) && r.next.is_some())
            .count()
    }

    /// Whether the client ever had two connections to one relay at once.
    pub fn duplicate_channels(&self) -> bool {
        let mut open: Vec<(ConnId, SocketAddr)> = Vec::new();
        for e in &self.events {
            match e {
                Event::Connect { conn, addr, .. } => {
                    if open.iter().any(|(_, a)| a == addr) {
                        return true;
                    }
                    open.push((*conn, *addr));
                }
                Event::Disconnect { conn } => open.retain(|(c, _)| c != conn),
                _ => {}
            }
        }
        false
    }

    /// PADDING cells the relays received on the client's connections alive now.
    pub fn padding_received(&self) -> u64 {
        self.padding_by_conn().iter().sum()
    }

    /// PADDING cells the relays received, per client connection alive now.
    pub fn padding_by_conn(&self) -> Vec<u64> {
        self.conns
            .values()
            .map(|(_, ch)| ch.padding_cells())
            .collect()
    }

    /// Client connections (relay side) alive now.
    pub fn open_conns(&self) -> usize {
        self.conns.len()
    }
}
