//! The simulated Tor network a client runs against over "sockets": directory authorities,
//! guard, middle and exit relays, a web server behind the exits, and the connections
//! between them, in virtual time with one seeded RNG.
//!
//! Every relay is an [`onion_relay::Relay`], the machine `onion relay` runs over TCP and
//! TLS: the responder handshake (VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO: tor-spec §4),
//! circuits (ntor, ntor-v3, CREATE_FAST), EXTEND2 over authenticated channels to the next
//! relay (tor-spec §5.3), exit streams under an exit policy (tor-spec §6.2), RESOLVE (§6.4),
//! the directory cache (BEGIN_DIR answered from the authorities' signed documents, key
//! certificates and consensus diffs: dir-spec §4, appendix B), and the onion-service roles
//! (HSDir, introduction and rendezvous point: rend-spec-v3 §2.2.6, §3.1, §4.2). The world
//! plays what `onion relay`'s embedder plays: TCP and TLS (a connection is two byte pipes
//! that delay what they carry by the sum of the two ends' access latencies plus the time
//! the slower end's bandwidth needs; a relay's link certificate is a random DER blob whose
//! SHA-256 the connection's initiator is handed, and the TLS exporter value a random
//! digest both ends share), the resolver (only [`WEB_HOST`] resolves) and the exits' TCP
//! connections to the web server.
//!
//! The client side is raw: [`World::connect`] opens a connection to an address (or fails),
//! [`World::send`] writes bytes, and [`World::poll_event`] gives what arrived
//! ([`NetEvent`]), so that anything speaking Tor's link protocol, such as
//! `onion_client::Client` through [`super::driver`], can be the client.
//!
//! Backpressure: a relay's bytes move onto a connection only while less than
//! [`SEND_BUFFER`] bytes wait to be sent there (a TCP send buffer); the relay holds the
//! rest within its own limits ([`onion_relay::Limits`]). Nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use onion_circuit::Instant;
use onion_crypto::keys::NtorOnionKey;
use onion_crypto::relay_keyset::RelayKeySet;
use onion_dir::{Ed25519Identity, RsaIdentity, Timestamp};
use onion_relay::{
    ConnId, DirDocuments, Event as RelayEvent, ResolveError, StreamHandle, TargetError, TlsLinkCert,
};

use super::authority::{self, AuthoritySource, DirAuthority, Publication, RelayEntry};
use crate::circuit::web::{self, WebConn};
use crate::circuit::{SimError, StoryLine, WEB_ADDR, WEB_HOST};

/// The wall-clock time at virtual time zero (2026-05-28 20:26:40 UTC), as the circuit
/// simulator's certificates use.
pub const WALL_BASE: u64 = 1_780_000_000;

/// Bytes a connection end lets wait for the link (a TCP send buffer) before it stops
/// taking more from its channel.
pub const SEND_BUFFER: usize = 128 * 1024;
/// Largest directory request head a relay buffers (an HSDir also allows an onion-service
/// descriptor's size for an upload, [`onion_relay::Limits::max_dir_request`]); a longer
/// one ends the stream (RESOURCELIMIT).
pub const MAX_DIR_REQUEST: usize = 64 * 1024;
/// Older consensuses the authorities keep to serve diffs from (dir-spec §4.5.2).
pub const KEEP_OLD_CONSENSUSES: usize = 8;

/// A directory request's path for the story: up to 72 characters, then how much was cut
/// (a request for many digests is long).
fn short_path(path: &str) -> String {
    match path.char_indices().nth(72) {
        Some((i, _)) => format!("{}... ({} characters)", &path[..i], path.len()),
        None => path.to_owned(),
    }
}

/// The wall clock at virtual time `now`.
pub fn wall_at(now: Instant) -> Timestamp {
    Timestamp(WALL_BASE + now.as_nanos() / 1_000_000_000)
}

fn system_time(now: Instant) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(WALL_BASE) + Duration::from_nanos(now.as_nanos())
}

/// One end's access link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLink {
    /// One-way delay to the network's core.
    pub latency: Duration,
    /// Bytes per second (0 = unlimited).
    pub bandwidth: u64,
}

/// The connection between two relays when it is not what their access links make
/// ([`World::set_relay_pair_link`]): a bottleneck, or a link of its own latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairLink {
    /// One-way delay.
    pub latency: Duration,
    /// Bytes per second (0 = unlimited).
    pub bandwidth: u64,
    /// Bytes each end lets wait for the link before it stops taking more from its channel
    /// (the link's bounded queue, a TCP send buffer; [`SEND_BUFFER`] otherwise). Whatever
    /// does not fit waits in the relay, within its own limits.
    pub send_buffer: usize,
    /// Largest piece a write is cut into (a TLS record's payload, 16 KiB), each delivered
    /// once its last byte is through the link, so that a large write does not arrive all
    /// at once when its whole transmission is over; 0: whole writes. A full send buffer
    /// takes more once a record's room is free.
    pub record: usize,
}

/// What a relay does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A directory authority (also a relay and a directory cache).
    Authority,
    /// A guard (Guard flag).
    Guard,
    /// A middle relay (no Guard, no Exit flag).
    Middle,
    /// An exit to the web server (Exit flag, `accept 80,443`).
    Exit,
}

/// Settings of a [`World`].
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// Seed of the one RNG (keys, handshakes, the client's own RNG, the web bodies).
    pub seed: u64,
    /// Number of directory authorities.
    pub authorities: usize,
    /// Number of guards.
    pub guards: usize,
    /// Number of middle relays.
    pub middles: usize,
    /// Number of exits.
    pub exits: usize,
    /// Every relay's access link.
    pub relay_link: AccessLink,
    /// The client's access link.
    pub client_link: AccessLink,
    /// One-way delay between an exit and the web server.
    pub web_latency: Duration,
    /// Whether relays answer a congestion-control request (proposal 324: Tor Vegas with
    /// the default parameters, XON/XOFF on exit streams); otherwise every circuit runs fixed
    /// windows (tor-spec §7.3).
    pub congestion_control: bool,
    /// Whether to record story lines.
    pub story: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 1,
            authorities: 3,
            guards: 3,
            middles: 3,
            exits: 3,
            relay_link: AccessLink {
                latency: Duration::from_millis(10),
                bandwidth: 12_500_000,
            },
            client_link: AccessLink {
                latency: Duration::from_millis(20),
                bandwidth: 12_500_000,
            },
            web_latency: Duration::from_millis(5),
            congestion_control: false,
            story: false,
        }
    }
}

/// A connection the client side opened ([`World::connect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub usize);

/// What happened on the client side's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// TCP and TLS are up; the relay's TLS certificate has this SHA-256.
    Connected {
        /// The connection.
        link: LinkId,
        /// The certificate digest the relay's link certificate certifies.
        cert_sha256: [u8; 32],
    },
    /// Bytes arrived.
    Data {
        /// The connection.
        link: LinkId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The connection failed to open or closed (refused, reset, the relay died).
    Closed {
        /// The connection.
        link: LinkId,
    },
}

/// One direction of a connection: chunks with their arrival times.
#[derive(Debug, Default)]
struct Pipe {
    q: VecDeque<(Instant, Vec<u8>)>,
    /// When the link finishes sending what it holds.
    free_at: Option<Instant>,
}

impl Pipe {
    fn push(&mut self, now: Instant, bytes: Vec<u8>, latency: Duration, bandwidth: u64) {
        let start = self.free_at.map_or(now, |f| f.max(now));
        let tx = if bandwidth == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(
                (bytes.len() as u64).saturating_mul(1_000_000_000) / bandwidth.max(1),
            )
        };
        let done = start + tx;
        self.free_at = Some(done);
        self.q.push_back((done + latency, bytes));
    }

    /// Bytes still waiting to be sent at `now`.
    fn backlog(&self, now: Instant, bandwidth: u64) -> usize {
        match self.free_at {
            Some(f) if f > now && bandwidth > 0 => {
                let ns = (f - now).as_nanos();
                (ns.saturating_mul(u128::from(bandwidth)) / 1_000_000_000) as usize
            }
            _ => 0,
        }
    }

    /// When the backlog falls to `level` bytes.
    fn drains_to(&self, level: usize, bandwidth: u64) -> Option<Instant> {
        let f = self.free_at?;
        if bandwidth == 0 {
            return None;
        }
        let ns = (level as u64).saturating_mul(1_000_000_000) / bandwidth;
        Some(Instant::from_nanos(f.as_nanos().saturating_sub(ns)))
    }

    fn next_at(&self) -> Option<Instant> {
        self.q.front().map(|(t, _)| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_at().is_some_and(|t| t <= now) {
            self.q.pop_front().map(|(_, b)| b)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Client,
    Relay { r: usize, conn: ConnId },
}

/// The end of a connection that is gone (its relay died or closed it).
const GONE: End = End::Relay {
    r: usize::MAX,
    conn: ConnId(u64::MAX),
};

/// A TCP+TLS connection: `ends[0]` opened it, `ends[1]` (a relay) accepted it;
/// `pipes[i]` carries bytes toward `ends[i]`.
#[derive(Debug)]
struct Conn {
    ends: [End; 2],
    pipes: [Pipe; 2],
    latency: Duration,
    bandwidth: u64,
    /// Bytes an end lets wait for the link ([`SEND_BUFFER`] unless a [`PairLink`] says).
    send_buffer: usize,
    /// Pieces relays' writes are delivered in ([`PairLink::record`]; 0: whole).
    record: usize,
    /// When TCP and TLS are done: no bytes move before.
    open_at: Instant,
    /// The opener was told it is open.
    announced: bool,
    /// When each end learns that the connection is gone (then it is forgotten there).
    close_at: [Option<Instant>; 2],
    /// The TLS exporter value both ends share (tor-spec §4.4.2).
    exporter: [u8; 32],
}

/// An exit's TCP connection to the web server for one exit stream.
struct Target {
    web: WebConn,
    /// When the TCP connect completes.
    connect_at: Option<Instant>,
    /// The client's bytes on their way to the web server.
    to_web: VecDeque<(Instant, Vec<u8>)>,
    /// Response bytes the relay has not taken yet.
    pending: Vec<u8>,
    /// The relay took less than offered: nothing more is offered until it says
    /// [`RelayEvent::ResumeTarget`] (a socket the embedder stops reading).
    paused: bool,
}

/// Counters of one relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted.
    pub connections: u64,
    /// Circuits created here (CREATE2 answered).
    pub circuits: u64,
    /// Exit streams connected to the web server.
    pub exit_streams: u64,
    /// Response bytes packaged into exit streams.
    pub exit_bytes: u64,
    /// Directory requests answered.
    pub dir_requests: u64,
}
/// A relay of the world: an [`onion_relay::Relay`] and what its embedder keeps.
pub struct Relay {
    name: String,
    role: Role,
    addr: SocketAddr,
    link: AccessLink,
    /// The seed its keys are made from (the same keys again when it comes back).
    key_seed: u64,
    machine: onion_relay::Relay,
    rsa_id: RsaIdentity,
    ed_id: Ed25519Identity,
    ntor_public: NtorOnionKey,
    /// SHA-256 of its link certificate (what TLS would show an initiator).
    cert_sha256: [u8; 32],
    up: bool,
    next_conn: u64,
    targets: HashMap<StreamHandle, Target>,
    stats: RelayStats,
    /// The addresses and names it learned: its peers' addresses, exit targets, names it
    /// resolved (what a relay knows of who talks to whom).
    seen: std::collections::BTreeSet<String>,
}

impl core::fmt::Debug for Relay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("addr", &self.addr)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

/// One directory request a relay answered, for tests and the story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirLog {
    /// When.
    pub at: Duration,
    /// Which relay answered.
    pub relay: String,
    /// The path asked for.
    pub path: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// Whether a consensus diff was served.
    pub diff: bool,
    /// Body bytes.
    pub len: usize,
}

/// What the directory caches serve: the authorities' certificates and consensuses.
#[derive(Debug)]
struct DirDocs {
    certs: Vec<(RsaIdentity, String)>,
    current: Publication,
    older: VecDeque<Publication>,
}

/// The simulated network (see the module documentation).
pub struct World {
    cfg: WorldConfig,
    now: Instant,
    rng: ChaCha20Rng,
    authorities: Vec<(DirAuthority, usize)>,
    relays: Vec<Relay>,
    conns: Vec<Conn>,
    /// The client side's connections (indices into `conns`).
    client_links: Vec<usize>,
    events: VecDeque<NetEvent>,
    docs: DirDocs,
    pattern: Rc<[u8]>,
    story: Vec<StoryLine>,
    dir_log: Vec<DirLog>,
    link_bytes: u64,
    /// Links between two relays set apart from their access links (smaller index first).
    pair_links: HashMap<(usize, usize), PairLink>,
}

impl core::fmt::Debug for World {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("relays", &self.relays)
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn setup(e: impl core::fmt::Display) -> SimError {
    SimError::Setup(e.to_string())
}

impl World {
    /// A world as `cfg` says, with a first consensus published (valid from the hour that
    /// contains virtual time zero).
    pub fn new(cfg: WorldConfig) -> Result<World, SimError> {
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        let pattern = web::pattern(cfg.seed);
        let roles = [
            (Role::Authority, cfg.authorities, "auth"),
            (Role::Guard, cfg.guards, "guard"),
            (Role::Middle, cfg.middles, "middle"),
            (Role::Exit, cfg.exits, "exit"),
        ];
        let mut relays = Vec::new();
        let mut authorities = Vec::new();
        for (k, (role, n, prefix)) in roles.into_iter().enumerate() {
            for i in 0..n {
                // One /16 per relay, so that path selection's subnet rule never binds.
                let ip = Ipv4Addr::new(10, (k * 50 + i + 1).min(255) as u8, 0, 1);
                let name = format!("{prefix}{i}");
                let key_seed = rng.next_u64();
                let machine = make_relay(role, ip, key_seed, &cfg, Instant::ZERO, &mut rng)?;
                let keys = machine.keys();
                let (rsa_id, ed_id) = (keys.rsa_identity().public().identity(), keys.ed_identity());
                let ntor_public = *keys.ntor_key().public();
                let cert_sha256 = machine.link_cert().sha256();
                if role == Role::Authority {
                    authorities.push((DirAuthority::generate(&name, &mut rng)?, relays.len()));
                }
                relays.push(Relay {
                    name,
                    role,
                    addr: SocketAddr::new(IpAddr::V4(ip), 9001),
                    link: cfg.relay_link,
                    key_seed,
                    machine,
                    rsa_id,
                    ed_id,
                    ntor_public,
                    cert_sha256,
                    up: true,
                    next_conn: 0,
                    targets: HashMap::new(),
                    stats: RelayStats::default(),
                    seen: Default::default(),
                });
            }
        }
        let relay_ips: Vec<IpAddr> = relays.iter().map(|r| r.addr.ip()).collect();
        for r in &mut relays {
            r.machine.set_relay_addresses(relay_ips.iter().copied());
        }
        let wall0 = wall_at(Instant::ZERO);
        let va = Timestamp(wall0.0 - wall0.0 % 3600);
        let mut certs = Vec::new();
        for (a, _) in &authorities {
            let text = a.certificate(
                Timestamp(va.0 - 86_400),
                Timestamp(va.0 + 365 * 86_400),
                &mut rng,
            )?;
            certs.push((a.v3ident(), text));
        }
        let mut w = World {
            now: Instant::ZERO,
            rng,
            authorities,
            relays,
            conns: Vec::new(),
            client_links: Vec::new(),
            events: VecDeque::new(),
            docs: DirDocs {
                certs,
                current: Publication {
                    valid_after: va,
                    consensus: String::new(),
                    microdescs: Vec::new(),
                },
                older: VecDeque::new(),
            },
            pattern,
            story: Vec::new(),
            dir_log: Vec::new(),
            link_bytes: 0,
            pair_links: HashMap::new(),
            cfg,
        };
        w.docs.current = w.make_publication(va)?;
        w.give_documents();
        Ok(w)
    }

    /// Hand every relay's directory cache the documents as they are now: the current
    /// consensus, the older ones as diff bases, every microdescriptor published and the
    /// authorities' key certificates.
    fn give_documents(&mut self) {
        let docs = self.documents();
        for r in &mut self.relays {
            r.machine.set_directory_documents(docs.clone());
        }
    }

    fn documents(&self) -> DirDocuments {
        let mut microdescs: Vec<Vec<u8>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in std::iter::once(&self.docs.current).chain(self.docs.older.iter()) {
            for (d, md) in &p.microdescs {
                if seen.insert(d.0) {
                    microdescs.push(md.clone().into_bytes());
                }
            }
        }
        DirDocuments {
            consensus_microdesc: Some(self.docs.current.consensus.clone().into_bytes()),
            previous_consensuses_microdesc: self
                .docs
                .older
                .iter()
                .rev()
                .map(|p| p.consensus.clone().into_bytes())
                .collect(),
            microdescs,
            authority_certs: self
                .docs
                .certs
                .iter()
                .map(|(_, t)| t.clone().into_bytes())
                .collect(),
            ..DirDocuments::default()
        }
    }

    fn make_publication(&mut self, valid_after: Timestamp) -> Result<Publication, SimError> {
        let entries: Vec<RelayEntry> = self.relays.iter().map(entry_of).collect();
        let sources: Vec<AuthoritySource<'_>> = self
            .authorities
            .iter()
            .map(|(a, r)| AuthoritySource {
                authority: a,
                addr: v4(self.relays[*r].addr),
            })
            .collect();
        authority::publish(&sources, &entries, valid_after, &mut self.rng)
    }

    /// The authorities publish the next consensus (valid one hour after the current one),
    /// listing the relays as they are now; the previous ones stay available as diff bases.
    pub fn publish_next(&mut self) -> Result<Timestamp, SimError> {
        let va = Timestamp(self.docs.current.valid_after.0 + authority::FRESH);
        let p = self.make_publication(va)?;
        let old = std::mem::replace(&mut self.docs.current, p);
        self.docs.older.push_front(old);
        self.docs.older.truncate(KEEP_OLD_CONSENSUSES);
        self.give_documents();
        self.log(
            "authorities",
            format!("published the consensus valid after {va}"),
        );
        Ok(va)
    }

    /// Change one relay's weight in the current consensus after it was signed, as an
    /// attacker on the path to a directory could: every signature on it is then invalid
    /// (tests of the client's verification). False if there was nothing to change.
    pub fn tamper_consensus(&mut self) -> bool {
        let c = &mut self.docs.current.consensus;
        match c.find("\nw Bandwidth=") {
            Some(i) => {
                c.insert(i + "\nw Bandwidth=".len(), '9');
                self.give_documents();
                true
            }
            None => false,
        }
    }

    /// The current consensus and microdescriptors.
    pub fn publication(&self) -> &Publication {
        &self.docs.current
    }

    /// The authorities as a client is configured with them (the `DirAuthority` lines).
    pub fn authorities(&self) -> Vec<onion_client::dir::Authority> {
        self.authorities
            .iter()
            .map(|(a, r)| onion_client::dir::Authority {
                name: a.name.clone(),
                rsa_id: self.relays[*r].rsa_id,
                v3ident: a.v3ident(),
                or_addr: Some(self.relays[*r].addr),
            })
            .collect()
    }

    /// The number of relays (authorities included).
    pub fn n_relays(&self) -> usize {
        self.relays.len()
    }

    /// Relay `r`'s name.
    pub fn relay_name(&self, r: usize) -> &str {
        &self.relays[r].name
    }

    /// Relay `r`'s role.
    pub fn relay_role(&self, r: usize) -> Role {
        self.relays[r].role
    }

    /// Relay `r`'s address.
    pub fn relay_addr(&self, r: usize) -> SocketAddr {
        self.relays[r].addr
    }

    /// Relay `r`'s RSA identity.
    pub fn relay_rsa_id(&self, r: usize) -> RsaIdentity {
        self.relays[r].rsa_id
    }

    /// What a client knows of relay `r` from its microdescriptor, to build a circuit
    /// through it by hand (tests of the network itself).
    pub fn relay_target(&self, r: usize) -> onion_circuit::circuit::HopTarget {
        let relay = &self.relays[r];
        onion_circuit::circuit::HopTarget {
            rsa_id: relay.rsa_id,
            ed_id: Some(relay.ed_id),
            ntor_key: relay.ntor_public,
            addrs: vec![relay.addr],
            ntor_v3: true,
        }
    }

    /// The relays of `role`.
    pub fn relays_of(&self, role: Role) -> Vec<usize> {
        (0..self.relays.len())
            .filter(|&r| self.relays[r].role == role)
            .collect()
    }

    /// The relays the client has an open connection to (its guards, and directory
    /// sources during bootstrap).
    pub fn client_relays(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .client_links
            .iter()
            .filter_map(|&ci| {
                let c = &self.conns[ci];
                match (c.ends[0], c.ends[1]) {
                    (End::Client, End::Relay { r, .. }) if r != usize::MAX => Some(r),
                    _ => None,
                }
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The exits with a stream to the web server open now.
    pub fn exits_streaming(&self) -> Vec<usize> {
        (0..self.relays.len())
            .filter(|&r| self.relays[r].up && !self.relays[r].targets.is_empty())
            .collect()
    }

    /// The relay at `addr`.
    pub fn relay_at(&self, addr: SocketAddr) -> Option<usize> {
        self.relays.iter().position(|x| x.addr == addr)
    }

    /// Relay `r`'s counters.
    pub fn relay_stats(&self, r: usize) -> RelayStats {
        let relay = &self.relays[r];
        RelayStats {
            circuits: relay.stats.circuits + relay.machine.stats().circuits_created,
            ..relay.stats
        }
    }

    /// The counters of relay `r`'s machine (onion-service roles among them: descriptors
    /// stored and served, introduction and rendezvous points).
    pub fn relay_machine_stats(&self, r: usize) -> onion_relay::RelayStats {
        self.relays[r].machine.stats()
    }

    /// What relay `r` learned of the network: its peers' addresses (a client's as an IP,
    /// relays it connected to as IP and port), its exit targets, the names it resolved.
    pub fn relay_seen(&self, r: usize) -> &std::collections::BTreeSet<String> {
        &self.relays[r].seen
    }

    /// Relay `r`'s open circuits.
    pub fn relay_circuits(&self, r: usize) -> usize {
        self.relays[r].machine.n_circuits()
    }

    /// Whether relay `r` is up.
    pub fn relay_up(&self, r: usize) -> bool {
        self.relays[r].up
    }

    /// Set relay `r`'s access link.
    pub fn set_relay_link(&mut self, r: usize, link: AccessLink) {
        self.relays[r].link = link;
    }

    /// Connections opened from now on between relays `a` and `b` (either way) are `link`
    /// instead of what their access links make.
    pub fn set_relay_pair_link(&mut self, a: usize, b: usize, link: PairLink) {
        self.pair_links.insert((a.min(b), a.max(b)), link);
    }

    /// Bytes relay `from` has written toward relay `to` that their links have not sent yet
    /// (the link's queue, at most its send buffer), over all connections between them.
    pub fn relay_link_backlog(&self, from: usize, to: usize) -> usize {
        let now = self.now;
        self.conns
            .iter()
            .map(|c| {
                let side = |r: usize| {
                    c.ends
                        .iter()
                        .position(|e| matches!(e, End::Relay { r: x, .. } if *x == r))
                };
                match (side(from), side(to)) {
                    // Bytes toward `to` travel on the pipe of `to`'s side.
                    (Some(_), Some(t)) => c.pipes[t].backlog(now, c.bandwidth),
                    _ => 0,
                }
            })
            .sum()
    }

    /// Relay `r`'s machine, to look at its state (its circuits' congestion control).
    pub fn relay_machine(&self, r: usize) -> &onion_relay::Relay {
        &self.relays[r].machine
    }

    /// Relay `r`'s machine, to hand it what its embedder would (a consensus's parameters).
    pub fn relay_machine_mut(&mut self, r: usize) -> &mut onion_relay::Relay {
        &mut self.relays[r].machine
    }

    /// The directory requests answered so far.
    pub fn dir_log(&self) -> &[DirLog] {
        &self.dir_log
    }

    /// The story so far.
    pub fn story(&self) -> &[StoryLine] {
        &self.story
    }

    /// Add a story line.
    pub fn log(&mut self, party: &str, text: impl Into<String>) {
        if self.cfg.story {
            self.story.push(StoryLine {
                at: self.now - Instant::ZERO,
                party: party.to_owned(),
                text: text.into(),
            });
        }
    }

    fn log_relay(&mut self, r: usize, text: impl FnOnce() -> String) {
        if self.cfg.story {
            let name = self.relays[r].name.clone();
            self.log(&name, text());
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The wall clock now.
    pub fn wall(&self) -> Timestamp {
        wall_at(self.now)
    }

    /// The world's RNG (the client's RNG is seeded from it).
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }

    /// Bytes delivered over all connections so far.
    pub fn link_bytes(&self) -> u64 {
        self.link_bytes
    }

    /// The body the web server sends for `GET /<n>`.
    pub fn expected_body(&self, n: u64) -> Vec<u8> {
        web::expected_body(self.cfg.seed, n)
    }

    /// A connection to the web server's content (an onion service serves the same
    /// bodies, [`World::expected_body`]).
    pub fn web_conn(&self) -> WebConn {
        WebConn::with_pattern(self.pattern.clone())
    }

    /// Settings.
    pub fn config(&self) -> &WorldConfig {
        &self.cfg
    }

    // ------------------------------------------------------------------------------------
    // Failures.

    /// Relay `r` dies: its connections are reset (each peer learns it one latency later),
    /// its circuits and streams are gone, and new connections to it are refused until
    /// [`World::revive_relay`].
    pub fn kill_relay(&mut self, r: usize) {
        if !self.relays[r].up {
            return;
        }
        self.log_relay(r, || "dies: every connection reset".to_owned());
        let now = self.now;
        for c in &mut self.conns {
            let side = c
                .ends
                .iter()
                .position(|e| matches!(e, End::Relay { r: x, .. } if *x == r));
            let Some(side) = side else { continue };
            let other = 1 - side;
            c.pipes = [Pipe::default(), Pipe::default()];
            c.close_at[side] = None;
            if c.close_at[other].is_none() {
                c.close_at[other] = Some(now + c.latency);
            }
            c.ends[side] = GONE;
        }
        // Everything it held is gone: it comes back as a fresh machine with its keys.
        let relay = &self.relays[r];
        let (role, seed) = (relay.role, relay.key_seed);
        let IpAddr::V4(ip) = relay.addr.ip() else {
            return;
        };
        let cfg = self.cfg.clone();
        let Ok(mut machine) = make_relay(role, ip, seed, &cfg, now, &mut self.rng) else {
            return;
        };
        machine.set_relay_addresses(self.relays.iter().map(|x| x.addr.ip()));
        machine.set_directory_documents(self.documents());
        let relay = &mut self.relays[r];
        relay.stats.circuits += relay.machine.stats().circuits_created;
        relay.machine = machine;
        relay.up = false;
        relay.targets.clear();
    }

    /// Relay `r` comes back (same keys) and accepts connections again.
    pub fn revive_relay(&mut self, r: usize) {
        if !self.relays[r].up {
            self.relays[r].up = true;
            self.log_relay(r, || "back up".to_owned());
        }
    }

    // ------------------------------------------------------------------------------------
    // The client side's connections.

    /// Open a connection from the client to `addr`. A [`NetEvent::Connected`] follows when
    /// TCP and TLS are done (two round trips), or [`NetEvent::Closed`] after one round
    /// trip if nothing listens there or the relay is down.
    pub fn connect(&mut self, addr: SocketAddr) -> LinkId {
        let link = LinkId(self.client_links.len());
        let target = self.relay_at(addr).filter(|&r| self.relays[r].up);
        let lat = self.cfg.client_link.latency
            + target.map_or(self.cfg.relay_link.latency, |r| self.relays[r].link.latency);
        let ci = self.conns.len();
        let mut exporter = [0u8; 32];
        self.rng.fill_bytes(&mut exporter);
        let mut conn = Conn {
            ends: [End::Client, End::Client],
            pipes: [Pipe::default(), Pipe::default()],
            latency: lat,
            bandwidth: 0,
            send_buffer: SEND_BUFFER,
            record: 0,
            open_at: self.now + lat * 4,
            announced: false,
            close_at: [None, None],
            exporter,
        };
        match target {
            Some(r) => {
                let from = IpAddr::V4(crate::circuit::CLIENT_ADDR);
                match self.accept(r, from) {
                    Ok(rc) => {
                        conn.ends[1] = End::Relay { r, conn: rc };
                        conn.bandwidth = bw_min(
                            self.cfg.client_link.bandwidth,
                            self.relays[r].link.bandwidth,
                        );
                        self.log(
                            "client",
                            format!("connecting to {} at {addr}", self.relays[r].name),
                        );
                    }
                    Err(_) => {
                        conn.close_at[0] = Some(self.now + lat * 2);
                        conn.announced = true;
                    }
                }
            }
            None => {
                self.log("client", format!("connecting to {addr}: refused"));
                conn.close_at[0] = Some(self.now + lat * 2);
                conn.announced = true;
            }
        }
        self.conns.push(conn);
        self.client_links.push(ci);
        link
    }

    /// Write bytes on a client connection (ignored once it is closed).
    pub fn send(&mut self, link: LinkId, bytes: Vec<u8>) {
        let Some(&ci) = self.client_links.get(link.0) else {
            return;
        };
        let now = self.now;
        let c = &mut self.conns[ci];
        if c.close_at[0].is_some() || matches!(c.ends[1], End::Client) || bytes.is_empty() {
            return;
        }
        let at = now.max(c.open_at);
        c.pipes[1].push(at, bytes, c.latency, c.bandwidth);
    }

    /// Bytes the client wrote on `link` that its access link has not sent yet (what would
    /// sit in its socket's send buffer).
    pub fn backlog(&self, link: LinkId) -> usize {
        let Some(&ci) = self.client_links.get(link.0) else {
            return 0;
        };
        let c = &self.conns[ci];
        c.pipes[1].backlog(self.now, c.bandwidth)
    }

    /// When `link`'s backlog falls to `level` bytes (`None`: it never grows, or is there).
    pub fn drains_at(&self, link: LinkId, level: usize) -> Option<Instant> {
        let &ci = self.client_links.get(link.0)?;
        let c = &self.conns[ci];
        c.pipes[1]
            .drains_to(level, c.bandwidth)
            .filter(|&t| t > self.now)
    }

    /// Close a client connection; the relay learns it one latency later, after the bytes
    /// already written.
    pub fn close(&mut self, link: LinkId) {
        let Some(&ci) = self.client_links.get(link.0) else {
            return;
        };
        let now = self.now;
        let c = &mut self.conns[ci];
        if c.close_at[1].is_none() {
            // After the bytes already written (TCP closes after its send buffer drains).
            let last = c.pipes[1].q.back().map_or(now, |(t, _)| *t);
            c.close_at[1] = Some((now + c.latency).max(last));
        }
        c.close_at[0].get_or_insert(now);
        c.announced = true;
    }

    /// The next thing that happened on the client's connections.
    pub fn poll_event(&mut self) -> Option<NetEvent> {
        self.events.pop_front()
    }

    /// The relay a client connection goes to, if it was accepted.
    pub fn link_relay(&self, link: LinkId) -> Option<usize> {
        let ci = *self.client_links.get(link.0)?;
        match self.conns[ci].ends[1] {
            End::Relay { r, .. } if r != usize::MAX => Some(r),
            _ => None,
        }
    }

    // ------------------------------------------------------------------------------------
    // Time.

    /// Everything that can happen now without time passing, until nothing moves; whether
    /// anything did.
    pub fn pump(&mut self) -> bool {
        let mut any = false;
        for _ in 0..100_000 {
            let mut moved = false;
            for r in 0..self.relays.len() {
                if !self.relays[r].up {
                    continue;
                }
                moved |= self.relay_events(r);
                moved |= self.exit_step(r);
            }
            moved |= self.flush();
            any |= moved;
            if !moved {
                break;
            }
        }
        any
    }

    /// The next time something is due in the network (a delivery, a connection opening or
    /// closing, a link draining, a web server's answer, a relay's timer).
    pub fn next_time(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t: Instant| t.min(x)));
            }
        };
        for c in &self.conns {
            for p in &c.pipes {
                consider(p.next_at());
            }
            for (side, at) in c.close_at.iter().enumerate() {
                if let Some(at) = at {
                    if c.ends[side] != GONE {
                        consider(Some(*at));
                    }
                }
            }
            if c.open_at > self.now && c.close_at[0].is_none() {
                consider(Some(c.open_at));
            }
            // A relay end whose send buffer is full: when it drains.
            for side in 0..2 {
                if matches!(c.ends[side], End::Relay { r, .. } if r != usize::MAX) {
                    consider(
                        c.pipes[1 - side]
                            .drains_to(c.send_buffer - c.record.min(c.send_buffer), c.bandwidth)
                            .filter(|&d| d > self.now),
                    );
                }
            }
        }
        for r in self.relays.iter().filter(|r| r.up) {
            for e in r.targets.values() {
                consider(e.connect_at);
                consider(e.to_web.front().map(|(t, _)| *t));
            }
            consider(r.machine.poll_timeout());
        }
        t
    }

    /// Move the clock to `t` (never back) and deliver what is due.
    pub fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        for ci in 0..self.conns.len() {
            // Opening.
            let c = &mut self.conns[ci];
            if !c.announced && c.open_at <= now && c.close_at[0].is_none() {
                c.announced = true;
                match (c.ends[0], c.ends[1]) {
                    (End::Client, _) => {
                        let link = self.client_link_of(ci);
                        let cert_sha256 = match self.conns[ci].ends[1] {
                            End::Relay { r, .. } if r != usize::MAX => self.relays[r].cert_sha256,
                            _ => [0; 32],
                        };
                        self.events
                            .push_back(NetEvent::Connected { link, cert_sha256 });
                    }
                    (End::Relay { r, conn }, End::Relay { r: t, .. })
                        if r != usize::MAX && t != usize::MAX =>
                    {
                        let (sha, exporter) = (self.relays[t].cert_sha256, c.exporter);
                        self.relays[r]
                            .machine
                            .handle_connected(conn, now, sha, exporter);
                    }
                    (End::Relay { r, conn }, _) if r != usize::MAX => {
                        self.relays[r].machine.handle_closed(conn, now);
                    }
                    _ => {}
                }
            }
            for side in 0..2 {
                while let Some(bytes) = self.conns[ci].pipes[side].pop_due(now) {
                    self.link_bytes += bytes.len() as u64;
                    match self.conns[ci].ends[side] {
                        End::Client => {
                            let link = self.client_link_of(ci);
                            self.events.push_back(NetEvent::Data { link, bytes });
                        }
                        End::Relay { r, conn } if r != usize::MAX => {
                            self.relays[r].machine.handle_input(conn, now, &bytes);
                        }
                        End::Relay { .. } => {}
                    }
                }
                if self.conns[ci].close_at[side].is_some_and(|at| at <= now) {
                    match self.conns[ci].ends[side] {
                        End::Client => {
                            let link = self.client_link_of(ci);
                            self.events.push_back(NetEvent::Closed { link });
                        }
                        End::Relay { r, conn } if r != usize::MAX => {
                            self.relays[r].machine.handle_closed(conn, now);
                        }
                        End::Relay { .. } => {}
                    }
                    self.conns[ci].ends[side] = GONE;
                    self.conns[ci].pipes[side] = Pipe::default();
                }
            }
        }
        let wall = wall_at(now);
        for r in 0..self.relays.len() {
            if !self.relays[r].up {
                continue;
            }
            let relay = &mut self.relays[r];
            if relay.machine.poll_timeout().is_some_and(|t| t <= now) {
                relay.machine.handle_timeout(now, wall);
            }
            self.exit_deliver(r);
        }
    }

    fn client_link_of(&self, ci: usize) -> LinkId {
        LinkId(
            self.client_links
                .iter()
                .position(|&x| x == ci)
                .unwrap_or(usize::MAX),
        )
    }

    // ------------------------------------------------------------------------------------
    // Relays: what the embedder of `onion relay` does, in memory.

    /// Relay `r` accepts a connection from `from`; its id there.
    fn accept(&mut self, r: usize, from: IpAddr) -> Result<ConnId, SimError> {
        let now = self.now;
        let relay = &mut self.relays[r];
        if !relay.up {
            return Err(SimError::Setup(format!("{} is down", relay.name)));
        }
        let conn = ConnId(relay.next_conn);
        relay.next_conn += 1;
        relay
            .machine
            .handle_accepted(conn, now, SocketAddr::new(from, 40000))
            .map_err(setup)?;
        relay.stats.connections += 1;
        relay.seen.insert(from.to_string());
        Ok(conn)
    }

    /// The connection and side where relay `r` has `conn`.
    fn conn_of(&self, r: usize, conn: ConnId) -> Option<(usize, usize)> {
        let want = End::Relay { r, conn };
        self.conns
            .iter()
            .enumerate()
            .find_map(|(ci, c)| c.ends.iter().position(|e| *e == want).map(|s| (ci, s)))
    }

    /// Act on relay `r`'s events; whether there were any.
    fn relay_events(&mut self, r: usize) -> bool {
        let mut any = false;
        while let Some(ev) = self.relays[r].machine.poll_event() {
            any = true;
            self.relay_event(r, ev);
        }
        any
    }

    fn relay_event(&mut self, r: usize, ev: RelayEvent) {
        let now = self.now;
        match ev {
            RelayEvent::Connect { conn, addr, .. } => self.relay_connect(r, conn, addr),
            RelayEvent::Disconnect { conn } => {
                // Flush what it still has for the peer, then close.
                if let Some((ci, side)) = self.conn_of(r, conn) {
                    let mut out = Vec::new();
                    while self.relays[r]
                        .machine
                        .poll_transmit_to(conn, now, &mut out, usize::MAX)
                        > 0
                    {}
                    let c = &mut self.conns[ci];
                    let other = 1 - side;
                    let (lat, bw) = (c.latency, c.bandwidth);
                    if !out.is_empty() && c.close_at[other].is_none() && now >= c.open_at {
                        c.pipes[other].push(now, out, lat, bw);
                    }
                    c.ends[side] = GONE;
                    if c.close_at[other].is_none() {
                        let last = c.pipes[other].q.back().map_or(now, |(t, _)| *t);
                        c.close_at[other] = Some((now + lat).max(last));
                    }
                }
                self.relays[r].machine.handle_closed(conn, now);
            }
            RelayEvent::TlsExporter { conn, .. } => {
                let exporter = self.conn_of(r, conn).map(|(ci, _)| self.conns[ci].exporter);
                match exporter {
                    Some(e) => self.relays[r].machine.provide_tls_exporter(conn, now, e),
                    None => self.relays[r].machine.handle_closed(conn, now),
                }
            }
            RelayEvent::Resolve { request, name } => {
                self.relays[r].seen.insert(name.clone());
                let answer = if name.eq_ignore_ascii_case(WEB_HOST) {
                    Ok(vec![IpAddr::V4(WEB_ADDR)])
                } else {
                    Err(ResolveError::NotFound)
                };
                self.relays[r].machine.handle_resolved(request, now, answer);
            }
            RelayEvent::OpenTarget { stream, addr } => {
                self.relays[r].seen.insert(addr.to_string());
                if addr != SocketAddr::new(IpAddr::V4(WEB_ADDR), 80) {
                    self.log_relay(r, || format!("connect to {addr}: refused"));
                    self.relays[r]
                        .machine
                        .handle_target_failed(stream, now, TargetError::Refused);
                    return;
                }
                let wl = self.cfg.web_latency;
                let web = WebConn::with_pattern(self.pattern.clone());
                self.relays[r].targets.insert(
                    stream,
                    Target {
                        web,
                        connect_at: Some(now + wl * 2),
                        to_web: VecDeque::new(),
                        pending: Vec::new(),
                        paused: false,
                    },
                );
                self.log_relay(r, || {
                    format!("exit stream {}: connecting to {addr}", stream.get())
                });
            }
            RelayEvent::TargetData { stream } => {
                let wl = self.cfg.web_latency;
                let mut buf = Vec::new();
                while self.relays[r]
                    .machine
                    .target_transmit(stream, now, &mut buf, 64 * 1024)
                    > 0
                {}
                if let Some(t) = self.relays[r].targets.get_mut(&stream) {
                    if !buf.is_empty() {
                        t.to_web.push_back((now + wl, buf));
                    }
                }
            }
            RelayEvent::CloseTarget { stream } => {
                self.relays[r].targets.remove(&stream);
            }
            RelayEvent::DirAnswered(a) => {
                self.relays[r].stats.dir_requests += 1;
                let name = self.relays[r].name.clone();
                self.log(
                    &name,
                    format!(
                        "directory request {} {}: {}{}, {} bytes",
                        a.method,
                        short_path(&a.path),
                        a.status,
                        if a.diff { " (consensus diff)" } else { "" },
                        a.len
                    ),
                );
                self.dir_log.push(DirLog {
                    at: now - Instant::ZERO,
                    relay: name,
                    path: a.path,
                    status: a.status,
                    diff: a.diff,
                    len: a.len,
                });
            }
            RelayEvent::ResumeTarget { stream } => {
                if let Some(t) = self.relays[r].targets.get_mut(&stream) {
                    t.paused = false;
                }
            }
            _ => {}
        }
    }

    /// Relay `r` opens a connection to `addr` for an EXTEND2 (Event::Connect): accepted
    /// at once by the relay there, TLS done two latencies later.
    fn relay_connect(&mut self, r: usize, conn: ConnId, addr: SocketAddr) {
        let now = self.now;
        let target = self.relay_at(addr).filter(|&t| self.relays[t].up && t != r);
        let from = self.relays[r].addr.ip();
        let accepted = target.map(|t| (t, self.accept(t, from)));
        let Some((t, Ok(tc))) = accepted else {
            self.log_relay(r, || format!("connect to {addr}: refused"));
            self.relays[r].machine.handle_closed(conn, now);
            return;
        };
        self.relays[r].seen.insert(addr.to_string());
        if self.cfg.story {
            let to = self.relays[t].name.clone();
            self.log_relay(r, || {
                format!("opening a connection to {to} at {addr} (for an EXTEND2)")
            });
        }
        let (lat, bw, send_buffer, record) = match self.pair_links.get(&(r.min(t), r.max(t))) {
            Some(p) => (p.latency, p.bandwidth, p.send_buffer, p.record),
            None => (
                self.relays[r].link.latency + self.relays[t].link.latency,
                bw_min(self.relays[r].link.bandwidth, self.relays[t].link.bandwidth),
                SEND_BUFFER,
                0,
            ),
        };
        let mut exporter = [0u8; 32];
        self.rng.fill_bytes(&mut exporter);
        self.conns.push(Conn {
            ends: [End::Relay { r, conn }, End::Relay { r: t, conn: tc }],
            pipes: [Pipe::default(), Pipe::default()],
            latency: lat,
            bandwidth: bw,
            send_buffer,
            record,
            open_at: now + lat * 2,
            announced: false,
            close_at: [None, None],
            exporter,
        });
    }

    /// Move relays' bytes onto their connections, within the send buffer.
    fn flush(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for ci in 0..self.conns.len() {
            if self.conns[ci].open_at > now {
                continue;
            }
            for side in 0..2 {
                let End::Relay { r, conn } = self.conns[ci].ends[side] else {
                    continue;
                };
                if r == usize::MAX || self.conns[ci].close_at[side].is_some() {
                    continue;
                }
                let (lat, bw) = (self.conns[ci].latency, self.conns[ci].bandwidth);
                let buffer = self.conns[ci].send_buffer;
                let backlog = self.conns[ci].pipes[1 - side].backlog(now, bw);
                // A link cut into records is written a record at a time (not byte by byte
                // as it drains).
                if backlog >= buffer || buffer - backlog < self.conns[ci].record.min(buffer) {
                    continue;
                }
                let mut out = Vec::new();
                let n =
                    self.relays[r]
                        .machine
                        .poll_transmit_to(conn, now, &mut out, buffer - backlog);
                if n > 0 {
                    moved = true;
                    // A peer that closed its end reads nothing more.
                    if self.conns[ci].close_at[1 - side].is_none() {
                        let record = self.conns[ci].record;
                        let pipe = &mut self.conns[ci].pipes[1 - side];
                        if record > 0 && out.len() > record {
                            for piece in out.chunks(record) {
                                pipe.push(now, piece.to_vec(), lat, bw);
                            }
                        } else {
                            pipe.push(now, out, lat, bw);
                        }
                    }
                }
            }
        }
        moved
    }

    // ------------------------------------------------------------------------------------
    // Relays: the exits' connections to the web server.

    /// Connects that completed and the client's bytes that reached the web server.
    fn exit_deliver(&mut self, r: usize) {
        let now = self.now;
        let mut connected = Vec::new();
        for (h, t) in &mut self.relays[r].targets {
            if t.connect_at.is_some_and(|at| at <= now) {
                t.connect_at = None;
                connected.push(*h);
            }
            while t.to_web.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, bytes)) = t.to_web.pop_front() {
                    t.web.handle_input(&bytes);
                }
            }
        }
        connected.sort_unstable();
        for h in connected {
            let addr = SocketAddr::new(IpAddr::V4(WEB_ADDR), 80);
            self.relays[r].stats.exit_streams += 1;
            self.relays[r].machine.handle_target_connected(h, now, addr);
        }
    }

    /// The web server's bytes to the exit, as far as it takes them.
    fn exit_step(&mut self, r: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        let relay = &mut self.relays[r];
        let mut done = Vec::new();
        let mut handles: Vec<StreamHandle> = relay.targets.keys().copied().collect();
        handles.sort_unstable();
        for h in handles {
            let Some(t) = relay.targets.get_mut(&h) else {
                continue;
            };
            if t.connect_at.is_some() || t.paused {
                continue;
            }
            loop {
                if t.pending.is_empty() {
                    t.web.poll_output_into(64 * 1024, &mut t.pending);
                }
                if t.pending.is_empty() {
                    break;
                }
                let n = relay.machine.handle_target_data(h, now, &t.pending);
                if n > 0 {
                    moved = true;
                    relay.stats.exit_bytes += n as u64;
                }
                if n < t.pending.len() {
                    t.pending.drain(..n);
                    t.paused = true;
                    break;
                }
                t.pending.clear();
            }
            if t.web.is_done() && t.pending.is_empty() {
                done.push(h);
            }
        }
        for h in done {
            relay.targets.remove(&h);
            relay.machine.handle_target_closed(h, now);
            moved = true;
        }
        moved
    }
}

/// A relay machine for a relay of `role` at `ip`, its keys made from `key_seed` (so that a
/// relay that comes back has the same identity): a directory cache and HSDir, an exit
/// (`accept *:80, accept *:443`) if `role` says so, congestion control if `cfg` says so.
fn make_relay(
    role: Role,
    ip: Ipv4Addr,
    key_seed: u64,
    cfg: &WorldConfig,
    now: Instant,
    rng: &mut ChaCha20Rng,
) -> Result<onion_relay::Relay, SimError> {
    let mut key_rng = ChaCha20Rng::seed_from_u64(key_seed);
    let wall0 = system_time(Instant::ZERO);
    let keys = RelayKeySet::generate(wall0, false, &mut key_rng).map_err(setup)?;
    let mut c = onion_relay::RelayConfig::new(vec![IpAddr::V4(ip)]);
    c.extend_allow_private = true;
    c.dir_cache = true;
    c.hs_dir = true;
    c.limits.max_dir_request = MAX_DIR_REQUEST;
    if role == Role::Exit {
        let rules = [("accept", "*:80"), ("accept", "*:443"), ("reject", "*:*")]
            .iter()
            .filter_map(|(k, p)| onion_dir::policy::PolicyRule::parse(k, p))
            .collect();
        c.exit_policy = Some(onion_dir::policy::ExitPolicy { rules });
    }
    c.circuits.congestion_control = cfg
        .congestion_control
        .then(onion_circuit::cc::CcConfig::default);
    // TLS is simulated: the link certificate is an opaque blob whose digest the
    // connection's initiator is handed.
    let mut der = vec![0u8; 64];
    key_rng.fill_bytes(&mut der);
    c.link_cert = Some(TlsLinkCert::from_der(
        der,
        zeroize::Zeroizing::new(Vec::new()),
    ));
    onion_relay::Relay::new(c, keys, now, wall_at(now), rng).map_err(setup)
}

fn bw_min(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port()),
    }
}

/// What the consensus says of relay `r` as it is now (a dead relay is not Running).
fn entry_of(r: &Relay) -> RelayEntry {
    let mut flags = vec!["Fast", "Stable", "Valid", "V2Dir", "HSDir"];
    if r.up {
        flags.push("Running");
    }
    match r.role {
        Role::Authority => flags.push("Authority"),
        Role::Guard => flags.push("Guard"),
        Role::Middle => {}
        Role::Exit => flags.push("Exit"),
    }
    RelayEntry {
        nickname: r.name.clone(),
        rsa_id: r.rsa_id,
        ed_id: r.ed_id,
        ntor_key: r.ntor_public.0,
        addr: v4(r.addr),
        flags,
        exit_policy: (r.role == Role::Exit).then(|| "accept 80,443".to_owned()),
        bandwidth: match r.role {
            Role::Authority => 100,
            _ => 5000,
        },
    }
}
