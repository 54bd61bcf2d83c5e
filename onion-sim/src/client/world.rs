//! The simulated Tor network a client runs against over "sockets": directory authorities,
//! guard, middle and exit relays, a web server behind the exits, and the connections
//! between them, in virtual time with one seeded RNG.
//!
//! Every relay runs the real relay side of onion-circuit: a responder
//! [`Channel`] per accepted connection (VERSIONS, CERTS with real link certificates bound to
//! the connection's TLS-certificate digest, AUTH_CHALLENGE, NETINFO: tor-spec §4), a
//! [`RelayCircuit`] per CREATE2 (ntor, ntor-v3), EXTEND2 over an initiator channel to the
//! next relay (tor-spec §5.3), exit streams to the web server (tor-spec §6.2), RESOLVE
//! (§6.4) and BEGIN_DIR streams answered from the authorities' signed documents (dir-spec
//! §4, §6); every relay is also an HSDir (descriptor uploads and fetches, rend-spec-v3
//! §2.2.6), an introduction point and a rendezvous point that joins circuits (§3.1, §4.2),
//! on onion-hs's relay roles. Only TCP and TLS are simulated: a connection is two byte pipes that delay what
//! they carry by the sum of the two ends' access latencies plus the time the slower end's
//! bandwidth needs, and a connection's TLS certificate is a random digest.
//!
//! The client side is raw: [`World::connect`] opens a connection to an address (or fails),
//! [`World::send`] writes bytes, and [`World::poll_event`] gives what arrived
//! ([`NetEvent`]), so that anything speaking Tor's link protocol, such as
//! `onion_client::Client` through [`super::driver`], can be the client.
//!
//! Backpressure: a relay moves a circuit's cells onto its channels only while those
//! channels' outbound queues are under [`CHAN_HIGH`], and a channel's bytes onto the
//! connection only while less than [`SEND_BUFFER`] bytes wait to be sent there (a TCP
//! send buffer); nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use onion_cell::chancell::{ChanMsg, DestroyReason};
use onion_cell::relaymsg::{EndReason, ResolvedAnswer, ResolvedValue};
use onion_cell::CircId;
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, PeerIds, RelayLinkKeys};
use onion_circuit::relay::{RelayCircuit, RelayConfig, RelayEvent, RelayKeys, RelayOutput};
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use onion_crypto::keys::{NtorOnionKey, NtorSecretKey};
use onion_dir::{RsaIdentity, Timestamp};

use onion_cell::RelayCmd;
use onion_hs::cellmsg;
use onion_hs::relay::{IntroPoint, RendPoint};

use super::authority::{self, AuthoritySource, DirAuthority, Publication, RelayEntry};
use crate::circuit::web::{self, WebConn};
use crate::circuit::{SimError, StoryLine, WEB_ADDR, WEB_HOST};
use crate::hs::hsdir::HsDir;

/// The wall-clock time at virtual time zero (2026-05-28 20:26:40 UTC), as the circuit
/// simulator's certificates use.
pub const WALL_BASE: u64 = 1_780_000_000;

/// A channel's outbound queue above which a relay stops moving circuit cells onto it.
pub const CHAN_HIGH: usize = 64 * 1024;
/// Bytes a connection end lets wait for the link (a TCP send buffer) before it stops
/// taking more from its channel.
pub const SEND_BUFFER: usize = 128 * 1024;
/// Largest directory request a relay buffers; a longer one ends the stream (RESOURCELIMIT).
pub const MAX_DIR_REQUEST: usize = 64 * 1024;
/// Older consensuses the authorities keep to serve diffs from (dir-spec §4.5.2).
pub const KEEP_OLD_CONSENSUSES: usize = 8;

/// The wall clock at virtual time `now`.
pub fn wall_at(now: Instant) -> Timestamp {
    Timestamp(WALL_BASE + now.as_nanos() / 1_000_000_000)
}

fn system_time(now: Instant) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(WALL_BASE) + Duration::from_nanos(now.as_nanos())
}

/// One end's access link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSpec {
    /// One-way delay to the network's core.
    pub latency: Duration,
    /// Bytes per second (0 = unlimited).
    pub bandwidth: u64,
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
    pub relay_link: LinkSpec,
    /// The client's access link.
    pub client_link: LinkSpec,
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
            relay_link: LinkSpec {
                latency: Duration::from_millis(10),
                bandwidth: 12_500_000,
            },
            client_link: LinkSpec {
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
    Relay { r: usize, chan: usize },
}

/// A TCP+TLS connection: `ends[0]` opened it, `ends[1]` (a relay) accepted it;
/// `pipes[i]` carries bytes toward `ends[i]`.
#[derive(Debug)]
struct Conn {
    ends: [End; 2],
    pipes: [Pipe; 2],
    latency: Duration,
    bandwidth: u64,
    /// When TCP and TLS are done: no bytes move before.
    open_at: Instant,
    /// The client was told it is open.
    announced: bool,
    /// When each end learns that the connection is gone (then it is forgotten there).
    close_at: [Option<Instant>; 2],
    digest: [u8; 32],
}

struct RChan {
    chan: Channel,
    conn: usize,
    /// Whom we connected to (initiator side), to reuse for extends.
    to: Option<usize>,
    /// Circuits waiting for this (initiator) channel to open to send their CREATE2.
    waiting: Vec<(usize, ChanMsg<'static>)>,
}

struct RCirc {
    circ: RelayCircuit,
    client: (usize, CircId),
    next: Option<(usize, CircId)>,
    /// The circuit of this relay it is joined to (rendezvous point, rend-spec-v3 §4.2).
    spliced: Option<usize>,
}

/// An exit's connection to the web server for one stream.
struct ExitConn {
    circ: usize,
    stream: StreamId,
    web: WebConn,
    connect_at: Option<Instant>,
    /// The client's bytes on their way to the web server.
    to_web: VecDeque<(Instant, Vec<u8>)>,
    /// Response bytes the circuit has not taken yet.
    pending: Vec<u8>,
    done: bool,
}

/// A BEGIN_DIR stream.
struct DirConn {
    circ: usize,
    stream: StreamId,
    request: Vec<u8>,
    response: Option<(Vec<u8>, usize)>,
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

/// A relay of the world.
pub struct Relay {
    name: String,
    role: Role,
    addr: SocketAddr,
    link: LinkSpec,
    link_keys: RelayLinkKeys,
    keys: RelayKeys,
    ntor_public: NtorOnionKey,
    up: bool,
    chans: Vec<Option<RChan>>,
    circs: Vec<Option<RCirc>>,
    by_client: HashMap<(usize, CircId), usize>,
    by_next: HashMap<(usize, CircId), usize>,
    exits: Vec<ExitConn>,
    dirs: Vec<DirConn>,
    /// Introduction-point and rendezvous-point state (rend-spec-v3 §3.1, §4.1), by circuit.
    intro: IntroPoint<usize>,
    rend: RendPoint<usize>,
    /// The onion-service descriptors this relay stores as an HSDir (rend-spec-v3 §2.2.6).
    hsdir: HsDir,
    stats: RelayStats,
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

fn short(id: &[u8]) -> String {
    id.iter().take(4).map(|b| format!("{b:02X}")).collect()
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
                let link_keys =
                    RelayLinkKeys::generate(&mut rng, system_time(Instant::ZERO)).map_err(setup)?;
                let ids = link_keys.ids();
                let (Some(rsa_id), Some(ed_id)) = (ids.rsa, ids.ed25519) else {
                    return Err(setup("relay keys without identities"));
                };
                let ntor = NtorSecretKey::generate(&mut rng);
                let ntor_public = *ntor.public();
                if role == Role::Authority {
                    authorities.push((DirAuthority::generate(&name, &mut rng)?, relays.len()));
                }
                relays.push(Relay {
                    name,
                    role,
                    addr: SocketAddr::new(IpAddr::V4(ip), 9001),
                    link: cfg.relay_link,
                    link_keys,
                    keys: RelayKeys {
                        rsa_id,
                        ed_id,
                        ntor_keys: vec![ntor],
                    },
                    ntor_public,
                    up: true,
                    chans: Vec::new(),
                    circs: Vec::new(),
                    by_client: HashMap::new(),
                    by_next: HashMap::new(),
                    exits: Vec::new(),
                    dirs: Vec::new(),
                    intro: IntroPoint::default(),
                    rend: RendPoint::default(),
                    hsdir: HsDir::default(),
                    stats: RelayStats::default(),
                });
            }
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
            cfg,
        };
        w.docs.current = w.make_publication(va)?;
        Ok(w)
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
                rsa_id: self.relays[*r].keys.rsa_id,
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
        self.relays[r].keys.rsa_id
    }

    /// What a client knows of relay `r` from its microdescriptor, to build a circuit
    /// through it by hand (tests of the network itself).
    pub fn relay_target(&self, r: usize) -> onion_circuit::circuit::HopTarget {
        let relay = &self.relays[r];
        onion_circuit::circuit::HopTarget {
            rsa_id: relay.keys.rsa_id,
            ed_id: Some(relay.keys.ed_id),
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
            .filter(|&r| self.relays[r].up && !self.relays[r].exits.is_empty())
            .collect()
    }

    /// The relay at `addr`.
    pub fn relay_at(&self, addr: SocketAddr) -> Option<usize> {
        self.relays.iter().position(|x| x.addr == addr)
    }

    /// Relay `r`'s counters.
    pub fn relay_stats(&self, r: usize) -> RelayStats {
        self.relays[r].stats
    }

    /// Relay `r`'s open circuits.
    pub fn relay_circuits(&self, r: usize) -> usize {
        self.relays[r].circs.iter().flatten().count()
    }

    /// Whether relay `r` is up.
    pub fn relay_up(&self, r: usize) -> bool {
        self.relays[r].up
    }

    /// Set relay `r`'s access link.
    pub fn set_relay_link(&mut self, r: usize, link: LinkSpec) {
        self.relays[r].link = link;
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
        for ci in 0..self.conns.len() {
            let c = &mut self.conns[ci];
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
            // Mark this side closed for good.
            c.ends[side] = End::Relay {
                r: usize::MAX,
                chan: usize::MAX,
            };
        }
        let relay = &mut self.relays[r];
        relay.up = false;
        relay.chans.clear();
        relay.circs.clear();
        relay.by_client.clear();
        relay.by_next.clear();
        relay.exits.clear();
        relay.dirs.clear();
        relay.intro = IntroPoint::default();
        relay.rend = RendPoint::default();
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
        let mut digest = [0u8; 32];
        self.rng.fill_bytes(&mut digest);
        let mut conn = Conn {
            ends: [End::Client, End::Client],
            pipes: [Pipe::default(), Pipe::default()],
            latency: lat,
            bandwidth: 0,
            open_at: self.now + lat * 4,
            announced: false,
            close_at: [None, None],
            digest,
        };
        match target {
            Some(r) => {
                let from = IpAddr::V4(crate::circuit::CLIENT_ADDR);
                match self.accept(r, ci, from, &digest) {
                    Ok(chan) => {
                        conn.ends[1] = End::Relay { r, chan };
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
                for c in 0..self.relays[r].chans.len() {
                    moved |= self.chan_events(r, c);
                }
                for i in 0..self.relays[r].circs.len() {
                    moved |= self.circ_step(r, i);
                }
                moved |= self.exit_step(r);
                moved |= self.dir_step(r);
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
    /// closing, a link draining, a web server's answer, a relay circuit's timer).
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
                    if !matches!(c.ends[side], End::Relay { r: usize::MAX, .. }) {
                        consider(Some(*at));
                    }
                }
            }
            if c.open_at > self.now && c.close_at[0].is_none() {
                consider(Some(c.open_at));
            }
        }
        for (ci, c) in self.conns.iter().enumerate() {
            for side in 0..2 {
                if let End::Relay { r, chan } = c.ends[side] {
                    let blocked = self
                        .relays
                        .get(r)
                        .and_then(|x| x.chans.get(chan)?.as_ref())
                        .is_some_and(|s| s.conn == ci && s.chan.outbound_len() > 0);
                    if blocked {
                        consider(
                            c.pipes[1 - side]
                                .drains_to(SEND_BUFFER, c.bandwidth)
                                .filter(|&d| d > self.now),
                        );
                    }
                }
            }
        }
        for r in self.relays.iter().filter(|r| r.up) {
            for e in &r.exits {
                consider(e.connect_at);
                consider(e.to_web.front().map(|(t, _)| *t));
            }
            for rc in r.circs.iter().flatten() {
                consider(rc.circ.poll_timeout());
            }
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
                if c.ends[0] == End::Client {
                    let link = self.client_link_of(ci);
                    let digest = self.conns[ci].digest;
                    self.events.push_back(NetEvent::Connected {
                        link,
                        cert_sha256: digest,
                    });
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
                        End::Relay { r, chan } => self.feed(r, chan, &bytes),
                    }
                }
                if self.conns[ci].close_at[side].is_some_and(|at| at <= now) {
                    match self.conns[ci].ends[side] {
                        End::Client => {
                            let link = self.client_link_of(ci);
                            self.events.push_back(NetEvent::Closed { link });
                            self.conns[ci].ends[0] = End::Relay {
                                r: usize::MAX,
                                chan: usize::MAX,
                            };
                        }
                        End::Relay { r, chan } if r != usize::MAX => {
                            if let Some(Some(s)) = self.relays[r].chans.get_mut(chan) {
                                s.chan.handle_connection_closed();
                            }
                            self.chan_events(r, chan);
                            self.conns[ci].ends[side] = End::Relay {
                                r: usize::MAX,
                                chan: usize::MAX,
                            };
                        }
                        End::Relay { .. } => {}
                    }
                    self.conns[ci].pipes[side] = Pipe::default();
                }
            }
        }
        for r in 0..self.relays.len() {
            if !self.relays[r].up {
                continue;
            }
            for s in self.relays[r].chans.iter_mut().flatten() {
                if s.chan.poll_timeout().is_some_and(|t| t <= now) {
                    s.chan.handle_timeout(now);
                }
            }
            for rc in self.relays[r].circs.iter_mut().flatten() {
                if rc.circ.poll_timeout().is_some_and(|t| t <= now) {
                    rc.circ.handle_timeout(now);
                }
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
    // Relays: channels.

    /// Relay `r` accepts connection `ci` from `from`: a responder channel whose link
    /// certificate certifies `digest`. Returns the channel's index.
    fn accept(
        &mut self,
        r: usize,
        ci: usize,
        from: IpAddr,
        digest: &[u8; 32],
    ) -> Result<usize, SimError> {
        let now = self.now;
        let relay = &mut self.relays[r];
        let certs = relay
            .link_keys
            .responder_certs(digest, system_time(now))
            .map_err(setup)?;
        let mut cfg = ChanConfig::default();
        cfg.peer_addr = Some(from);
        cfg.my_addrs = vec![relay.addr.ip()];
        let chan = Channel::responder(cfg, &certs, now, system_time(now), &mut self.rng);
        relay.chans.push(Some(RChan {
            chan,
            conn: ci,
            to: None,
            waiting: Vec::new(),
        }));
        relay.stats.connections += 1;
        Ok(relay.chans.len() - 1)
    }

    fn feed(&mut self, r: usize, c: usize, bytes: &[u8]) {
        let now = self.now;
        let mut off = 0;
        while off < bytes.len() {
            let Some(Some(s)) = self.relays[r].chans.get_mut(c) else {
                return;
            };
            let n = match s.chan.handle_input(now, &bytes[off..]) {
                Ok(n) => n,
                Err(_) => {
                    self.chan_events(r, c);
                    return;
                }
            };
            off += n;
            let had = self.chan_events(r, c);
            if n == 0 && !had {
                return;
            }
        }
        self.chan_events(r, c);
    }

    fn chan_events(&mut self, r: usize, c: usize) -> bool {
        let mut any = false;
        loop {
            let Some(Some(s)) = self.relays[r].chans.get_mut(c) else {
                return any;
            };
            let Some(ev) = s.chan.poll_event() else {
                return any;
            };
            any = true;
            match ev {
                ChanEvent::Open(_) => {
                    let waiting = std::mem::take(&mut s.waiting);
                    for (i, create) in waiting {
                        self.send_create(r, c, i, create);
                    }
                }
                ChanEvent::CircuitCell { circ_id, msg } => self.circ_cell(r, c, circ_id, msg),
                ChanEvent::CircuitKilled { circ_id, .. } => {
                    self.chan_lost_circ(r, c, circ_id);
                }
                ChanEvent::Closed(e) => {
                    self.log_relay(r, || format!("channel closed: {e}"));
                    self.chan_closed(r, c);
                    return any;
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }

    /// A channel is gone: circuits on it are destroyed toward their other side.
    fn chan_closed(&mut self, r: usize, c: usize) {
        let now = self.now;
        let Some(Some(slot)) = self.relays[r].chans.get_mut(c) else {
            return;
        };
        let waiting = std::mem::take(&mut slot.waiting);
        let ci = slot.conn;
        self.relays[r].chans[c] = None;
        // Close the connection too (the peer learns it one latency later).
        if let Some(conn) = self.conns.get_mut(ci) {
            let side = conn
                .ends
                .iter()
                .position(|e| *e == End::Relay { r, chan: c });
            if let Some(side) = side {
                let other = 1 - side;
                conn.ends[side] = End::Relay {
                    r: usize::MAX,
                    chan: usize::MAX,
                };
                if conn.close_at[other].is_none() {
                    conn.close_at[other] = Some(now + conn.latency);
                }
            }
        }
        let relay = &mut self.relays[r];
        for (i, _) in waiting {
            if let Some(rc) = relay.circs.get_mut(i).and_then(Option::as_mut) {
                rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
            }
        }
        for i in 0..relay.circs.len() {
            let Some(rc) = relay.circs[i].as_mut() else {
                continue;
            };
            if rc.client.0 == c {
                relay.by_client.remove(&rc.client);
                let _ = rc
                    .circ
                    .handle_from_client(now, ChanMsg::Destroy(DestroyReason::CHANNEL_CLOSED));
            } else if rc.next.is_some_and(|n| n.0 == c) {
                if let Some(n) = rc.next.take() {
                    relay.by_next.remove(&n);
                }
                let _ = rc
                    .circ
                    .handle_from_next(now, ChanMsg::Destroy(DestroyReason::CHANNEL_CLOSED));
            }
        }
    }

    fn chan_lost_circ(&mut self, r: usize, c: usize, id: CircId) {
        let now = self.now;
        let relay = &mut self.relays[r];
        if let Some(i) = relay.by_client.remove(&(c, id)) {
            if let Some(rc) = relay.circs[i].as_mut() {
                let _ = rc
                    .circ
                    .handle_from_client(now, ChanMsg::Destroy(DestroyReason::PROTOCOL));
            }
        } else if let Some(i) = relay.by_next.remove(&(c, id)) {
            if let Some(rc) = relay.circs[i].as_mut() {
                rc.next = None;
                let _ = rc
                    .circ
                    .handle_from_next(now, ChanMsg::Destroy(DestroyReason::PROTOCOL));
            }
        }
    }

    fn chan(&mut self, r: usize, c: usize) -> Option<&mut Channel> {
        self.relays[r]
            .chans
            .get_mut(c)
            .and_then(Option::as_mut)
            .map(|s| &mut s.chan)
    }

    /// Move channels' bytes onto their connections, within the send buffer.
    fn flush(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for ci in 0..self.conns.len() {
            if self.conns[ci].open_at > now {
                continue;
            }
            for side in 0..2 {
                let End::Relay { r, chan } = self.conns[ci].ends[side] else {
                    continue;
                };
                if r == usize::MAX || self.conns[ci].close_at[side].is_some() {
                    continue;
                }
                let (lat, bw) = (self.conns[ci].latency, self.conns[ci].bandwidth);
                if self.conns[ci].pipes[1 - side].backlog(now, bw) >= SEND_BUFFER {
                    continue;
                }
                let Some(ch) = self.chan(r, chan) else {
                    continue;
                };
                if ch.outbound_len() == 0 {
                    continue;
                }
                let mut out = Vec::with_capacity(ch.outbound_len().min(1 << 20));
                if ch.poll_transmit(&mut out).is_some() && !out.is_empty() {
                    moved = true;
                    // A client that closed its end reads nothing more.
                    if self.conns[ci].close_at[1 - side].is_none() {
                        self.conns[ci].pipes[1 - side].push(now, out, lat, bw);
                    }
                }
            }
        }
        moved
    }

    // ------------------------------------------------------------------------------------
    // Relays: circuits.

    fn circ_cell(&mut self, r: usize, c: usize, id: CircId, msg: ChanMsg<'static>) {
        let now = self.now;
        let relay = &mut self.relays[r];
        if let Some(&i) = relay.by_client.get(&(c, id)) {
            if matches!(msg, ChanMsg::Destroy(_)) {
                relay.by_client.remove(&(c, id));
            }
            if let Some(rc) = relay.circs[i].as_mut() {
                let _ = rc.circ.handle_from_client(now, msg);
            }
            return;
        }
        if let Some(&i) = relay.by_next.get(&(c, id)) {
            if matches!(msg, ChanMsg::Destroy(_)) {
                relay.by_next.remove(&(c, id));
                if let Some(rc) = relay.circs[i].as_mut() {
                    rc.next = None;
                }
            }
            if let Some(rc) = relay.circs[i].as_mut() {
                let _ = rc.circ.handle_from_next(now, msg);
            }
            return;
        }
        if !matches!(msg, ChanMsg::Create2(_) | ChanMsg::CreateFast(_)) {
            return;
        }
        let mut rcfg = RelayConfig::default();
        if self.cfg.congestion_control {
            rcfg.congestion_control = Some(onion_circuit::cc::CcConfig::default());
        }
        match RelayCircuit::accept_with(&relay.keys, &rcfg, &msg, now, &mut self.rng) {
            Ok((circ, reply)) => {
                let Some(Some(s)) = relay.chans.get_mut(c) else {
                    return;
                };
                if s.chan.send(id, &reply).is_err() {
                    return;
                }
                let i = match relay.circs.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        relay.circs.push(None);
                        relay.circs.len() - 1
                    }
                };
                relay.circs[i] = Some(RCirc {
                    circ,
                    client: (c, id),
                    next: None,
                    spliced: None,
                });
                relay.by_client.insert((c, id), i);
                relay.stats.circuits += 1;
                self.log_relay(r, || format!("circuit {:#010x} created", id.get()));
            }
            Err(e) => {
                let reason = e.destroy_reason();
                if let Some(Some(s)) = relay.chans.get_mut(c) {
                    let _ = s.chan.send(id, &ChanMsg::Destroy(reason));
                }
                self.log_relay(r, || format!("CREATE refused: {e}"));
            }
        }
    }

    /// Whether relay `r`'s circuit `i` may put cells on its channels now.
    fn has_room(&self, r: usize, rc: &RCirc) -> bool {
        let relay = &self.relays[r];
        let room = |c: usize| {
            relay
                .chans
                .get(c)
                .and_then(Option::as_ref)
                .map_or(true, |s| s.chan.outbound_len() < CHAN_HIGH)
        };
        room(rc.client.0) && rc.next.map_or(true, |n| room(n.0))
    }

    fn circ_step(&mut self, r: usize, i: usize) -> bool {
        let mut moved = false;
        for _ in 0..10_000 {
            let Some(rc) = self.relays[r].circs[i].as_ref() else {
                return moved;
            };
            let room = self.has_room(r, rc);
            let relay = &mut self.relays[r];
            let Some(rc) = relay.circs[i].as_mut() else {
                return moved;
            };
            let (client, next) = (rc.client, rc.next);
            let mut sent = false;
            if room {
                while let Some(out) = rc.circ.poll_cell(&mut self.rng) {
                    sent = true;
                    match out {
                        RelayOutput::ToClient(m) => {
                            if let Some(Some(s)) = relay.chans.get_mut(client.0) {
                                let _ = s.chan.send(client.1, &m);
                            }
                            if matches!(m, ChanMsg::Destroy(_)) {
                                relay.by_client.remove(&client);
                            }
                        }
                        RelayOutput::ToNext(m) => {
                            if let Some(n) = next {
                                if let Some(Some(s)) = relay.chans.get_mut(n.0) {
                                    let _ = s.chan.send(n.1, &m);
                                }
                                if matches!(m, ChanMsg::Destroy(_)) {
                                    relay.by_next.remove(&n);
                                    rc.next = None;
                                }
                            } else if matches!(m, ChanMsg::Destroy(_)) {
                                for s in relay.chans.iter_mut().flatten() {
                                    s.waiting.retain(|(w, _)| *w != i);
                                }
                            }
                        }
                    }
                    let full = |c: usize| {
                        relay
                            .chans
                            .get(c)
                            .and_then(Option::as_ref)
                            .is_some_and(|s| s.chan.outbound_len() >= CHAN_HIGH)
                    };
                    if full(client.0) || next.is_some_and(|n| full(n.0)) {
                        break;
                    }
                }
            }
            // A joined circuit's cells go to its partner (rend-spec-v3 §4.2).
            let mut joined = Vec::new();
            if rc.spliced.is_some() {
                while let Some(b) = rc.circ.poll_spliced() {
                    joined.push(b);
                }
            }
            let partner = rc.spliced;
            let ev = rc.circ.poll_event();
            let closed = rc.circ.is_closed();
            if let Some(j) = partner {
                if !joined.is_empty() {
                    sent = true;
                    if let Some(other) = relay.circs.get_mut(j).and_then(Option::as_mut) {
                        for b in joined {
                            let _ = other.circ.splice_in(b);
                        }
                    }
                }
            }
            if ev.is_none() {
                if closed && !sent {
                    let now = self.now;
                    if let Some(rc) = relay.circs[i].take() {
                        relay.by_client.remove(&rc.client);
                        if let Some(n) = rc.next {
                            relay.by_next.remove(&n);
                        }
                        // The joined circuit goes down with it: to that circuit, its partner
                        // is its next hop (tor-spec §5.4).
                        if let Some(other) =
                            rc.spliced.and_then(|j| relay.circs.get_mut(j)?.as_mut())
                        {
                            other.spliced = None;
                            let _ = other
                                .circ
                                .handle_from_next(now, ChanMsg::Destroy(DestroyReason::FINISHED));
                        }
                    }
                    relay.exits.retain(|e| e.circ != i);
                    relay.dirs.retain(|d| d.circ != i);
                    relay.intro.circuit_closed(i);
                    return true;
                }
                return moved || sent;
            }
            moved = true;
            if let Some(ev) = ev {
                self.relay_event(r, i, ev);
            }
        }
        moved
    }

    fn rcirc(&mut self, r: usize, i: usize) -> Option<&mut RelayCircuit> {
        self.relays[r]
            .circs
            .get_mut(i)?
            .as_mut()
            .map(|rc| &mut rc.circ)
    }

    fn relay_event(&mut self, r: usize, i: usize, ev: RelayEvent) {
        let now = self.now;
        let role = self.relays[r].role;
        match ev {
            RelayEvent::Extend(req) => self.extend(r, i, req),
            RelayEvent::Begin {
                stream, host, port, ..
            } => {
                let ip = if host.eq_ignore_ascii_case(WEB_HOST) {
                    Some(IpAddr::V4(WEB_ADDR))
                } else {
                    host.parse::<IpAddr>().ok()
                };
                let verdict = if role != Role::Exit {
                    Some(EndReason::EXITPOLICY)
                } else if ip.is_none() {
                    Some(EndReason::RESOLVEFAILED)
                } else if ip != Some(IpAddr::V4(WEB_ADDR)) || port != 80 {
                    Some(EndReason::CONNECTREFUSED)
                } else {
                    None
                };
                if let Some(reason) = verdict {
                    if let Some(c) = self.rcirc(r, i) {
                        let _ = c.end_stream(stream, reason);
                    }
                    self.log_relay(r, || format!("BEGIN {host}:{port} refused ({reason:?})"));
                    return;
                }
                let wl = self.cfg.web_latency;
                let web = WebConn::with_pattern(self.pattern.clone());
                self.relays[r].exits.push(ExitConn {
                    circ: i,
                    stream,
                    web,
                    connect_at: Some(now + wl * 2),
                    to_web: VecDeque::new(),
                    pending: Vec::new(),
                    done: false,
                });
                self.log_relay(r, || {
                    format!("stream {stream}: BEGIN {host}:{port}, connecting")
                });
            }
            RelayEvent::BeginDir { stream } => {
                if let Some(c) = self.rcirc(r, i) {
                    if c.connected(stream, None).is_ok() {
                        self.relays[r].dirs.push(DirConn {
                            circ: i,
                            stream,
                            request: Vec::new(),
                            response: None,
                        });
                    }
                }
            }
            RelayEvent::Resolve { stream, query } => {
                let value = if role == Role::Exit && query.eq_ignore_ascii_case(WEB_HOST) {
                    ResolvedValue::Ip(IpAddr::V4(WEB_ADDR))
                } else {
                    ResolvedValue::NontransientError(b"Error resolving hostname".to_vec().into())
                };
                if let Some(c) = self.rcirc(r, i) {
                    let _ = c.resolved(stream, vec![ResolvedAnswer { value, ttl: 300 }]);
                }
            }
            RelayEvent::Data { stream, data } => {
                let wl = self.cfg.web_latency;
                let relay = &mut self.relays[r];
                if let Some(e) = relay
                    .exits
                    .iter_mut()
                    .find(|e| e.circ == i && e.stream == stream && !e.done)
                {
                    e.to_web.push_back((now + wl, data.to_vec()));
                    return;
                }
                let Some(d) = relay
                    .dirs
                    .iter_mut()
                    .find(|d| d.circ == i && d.stream == stream)
                else {
                    return;
                };
                if d.response.is_some() {
                    return;
                }
                if d.request.len() + data.len() > MAX_DIR_REQUEST {
                    relay.dirs.retain(|d| !(d.circ == i && d.stream == stream));
                    if let Some(c) = self.rcirc(r, i) {
                        let _ = c.end_stream(stream, EndReason::RESOURCELIMIT);
                    }
                    return;
                }
                d.request.extend_from_slice(&data);
                let onion =
                    d.request.starts_with(b"POST ") || d.request.starts_with(b"GET /tor/hs/");
                if onion {
                    if let Some((resp, what)) = relay.hsdir.answer(&d.request) {
                        let status = resp
                            .get(9..12)
                            .and_then(|s| core::str::from_utf8(s).ok()?.parse().ok())
                            .unwrap_or(0);
                        let line = String::from_utf8_lossy(&d.request[..d.request.len().min(60)])
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_owned();
                        d.response = Some((resp, 0));
                        relay.stats.dir_requests += 1;
                        let name = relay.name.clone();
                        self.log(&name, what);
                        self.dir_log.push(DirLog {
                            at: now - Instant::ZERO,
                            relay: name,
                            path: line,
                            status,
                            diff: false,
                            len: 0,
                        });
                    }
                    return;
                }
                if memchr(&d.request, b"\r\n\r\n") {
                    let request = std::mem::take(&mut d.request);
                    let (status, body, path, diff) = answer(&self.docs, &request);
                    let len = body.len();
                    let head = match status {
                        200 => "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_owned(),
                        s => format!("HTTP/1.0 {s} Not found\r\n\r\n"),
                    };
                    let mut resp = head.into_bytes();
                    resp.extend_from_slice(&body);
                    if let Some(d) = self.relays[r]
                        .dirs
                        .iter_mut()
                        .find(|d| d.circ == i && d.stream == stream)
                    {
                        d.response = Some((resp, 0));
                    }
                    self.relays[r].stats.dir_requests += 1;
                    let name = self.relays[r].name.clone();
                    self.log(
                        &name,
                        format!(
                            "directory request {path}: {status}{}, {len} bytes",
                            if diff { " (consensus diff)" } else { "" }
                        ),
                    );
                    self.dir_log.push(DirLog {
                        at: now - Instant::ZERO,
                        relay: name,
                        path,
                        status,
                        diff,
                        len,
                    });
                }
            }
            RelayEvent::Msg { stream: None, msg } => {
                let cmd = msg.cmd();
                match cellmsg::body_of(&msg) {
                    Ok(body) => self.onion_msg(r, i, cmd, &body),
                    Err(e) => self.log_relay(r, || format!("{cmd} dropped: {e}")),
                }
            }
            RelayEvent::StreamEnded { stream, .. } => {
                let relay = &mut self.relays[r];
                relay.exits.retain(|e| !(e.circ == i && e.stream == stream));
                relay.dirs.retain(|d| !(d.circ == i && d.stream == stream));
            }
            RelayEvent::Closed { error } => {
                self.log_relay(r, || match &error {
                    None => format!("circuit {i} closed"),
                    Some(e) => format!("circuit {i} closed: {e}"),
                });
                let relay = &mut self.relays[r];
                relay.exits.retain(|e| e.circ != i);
                relay.dirs.retain(|d| d.circ != i);
            }
            _ => {}
        }
    }

    /// Send an onion-service message on circuit `i` of relay `r`, toward its client.
    fn send_onion(&mut self, r: usize, i: usize, cmd: RelayCmd, body: &[u8]) {
        let sent = cellmsg::to_relay_msg(cmd, body)
            .map_err(|e| e.to_string())
            .and_then(|m| match self.rcirc(r, i) {
                Some(c) => c.send_msg(None, &m).map_err(|e| e.to_string()),
                None => Err("circuit closed".into()),
            });
        if let Err(e) = sent {
            self.log_relay(r, || format!("cannot send {cmd}: {e}"));
        }
    }

    /// An onion-service message on circuit `i` of relay `r`: the introduction point
    /// (ESTABLISH_INTRO checked against the circuit's `KH`, INTRODUCE1 forwarded as
    /// INTRODUCE2 and acknowledged, rend-spec-v3 §3.1, §3.2) and the rendezvous point
    /// (ESTABLISH_RENDEZVOUS, RENDEZVOUS1 answered with RENDEZVOUS2 and the two circuits
    /// joined, §4.1, §4.2). Other messages are dropped.
    fn onion_msg(&mut self, r: usize, i: usize, cmd: RelayCmd, body: &[u8]) {
        if cmd == RelayCmd::ESTABLISH_INTRO {
            let Some(kh) = self.rcirc(r, i).map(|c| *c.kh()) else {
                return;
            };
            match self.relays[r].intro.handle_establish_intro(i, &kh, body) {
                Ok(reply) => {
                    self.send_onion(r, i, RelayCmd::INTRO_ESTABLISHED, &reply);
                    self.log_relay(r, || "introduction point established".into());
                }
                Err(e) => self.log_relay(r, || format!("ESTABLISH_INTRO refused: {e}")),
            }
        } else if cmd == RelayCmd::INTRODUCE1 {
            let routing = self.relays[r].intro.handle_introduce1(body);
            if let Some((svc, b2)) = &routing.to_service {
                self.send_onion(r, *svc, RelayCmd::INTRODUCE2, b2);
                self.log_relay(r, || "INTRODUCE1 forwarded as INTRODUCE2".into());
            }
            self.send_onion(r, i, RelayCmd::INTRODUCE_ACK, &routing.ack);
        } else if cmd == RelayCmd::ESTABLISH_RENDEZVOUS {
            match self.relays[r].rend.handle_establish_rendezvous(i, body) {
                Ok(()) => self.send_onion(r, i, RelayCmd::RENDEZVOUS_ESTABLISHED, &[]),
                Err(e) => self.log_relay(r, || format!("ESTABLISH_RENDEZVOUS refused: {e}")),
            }
        } else if cmd == RelayCmd::RENDEZVOUS1 {
            match self.relays[r].rend.handle_rendezvous1(i, body) {
                Ok(j) => {
                    // RENDEZVOUS2 is queued before the join: the client's next cell.
                    self.send_onion(r, j.client, RelayCmd::RENDEZVOUS2, &j.rendezvous2);
                    let joined = self.splice(r, j.client, j.service);
                    self.log_relay(r, || format!("rendezvous: circuits joined: {joined}"));
                }
                Err(e) => self.log_relay(r, || format!("RENDEZVOUS1 refused: {e}")),
            }
        }
    }

    /// Join circuits `a` and `b` of relay `r`; false if either cannot be.
    fn splice(&mut self, r: usize, a: usize, b: usize) -> bool {
        let relay = &mut self.relays[r];
        let joinable = |relay: &mut Relay, i: usize| {
            relay
                .circs
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|rc| {
                    !rc.circ.is_closed() && !rc.circ.has_next() && !rc.circ.is_spliced()
                })
        };
        if a == b || !joinable(relay, a) || !joinable(relay, b) {
            return false;
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(rc) = relay.circs.get_mut(x).and_then(Option::as_mut) {
                if rc.circ.splice().is_err() {
                    return false;
                }
                rc.spliced = Some(y);
            }
        }
        true
    }

    fn extend(&mut self, r: usize, i: usize, req: onion_circuit::relay::ExtendRequest) {
        let target = req
            .addrs
            .iter()
            .find_map(|a| self.relay_at(*a))
            .filter(|&t| self.relays[t].up && self.relays[t].keys.rsa_id == req.rsa_id);
        let Some(t) = target else {
            if let Some(c) = self.rcirc(r, i) {
                c.extend_failed(DestroyReason::CONNECTFAILED);
            }
            self.log_relay(r, || {
                format!(
                    "EXTEND2 to {}... failed: no such relay up",
                    short(&req.rsa_id.0)
                )
            });
            return;
        };
        // Reuse a channel we opened to that relay (tor-spec §5.3.1).
        let existing = self.relays[r].chans.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.to == Some(t) && !s.chan.is_closed())
        });
        let c = match existing {
            Some(c) => c,
            None => {
                let now = self.now;
                let lat = self.relays[r].link.latency + self.relays[t].link.latency;
                let bw = bw_min(self.relays[r].link.bandwidth, self.relays[t].link.bandwidth);
                let mut digest = [0u8; 32];
                self.rng.fill_bytes(&mut digest);
                let ci = self.conns.len();
                let from = self.relays[r].addr.ip();
                let Ok(tc) = self.accept(t, ci, from, &digest) else {
                    if let Some(c) = self.rcirc(r, i) {
                        c.extend_failed(DestroyReason::INTERNAL);
                    }
                    return;
                };
                let mut cfg = ChanConfig::default();
                cfg.peer_addr = Some(self.relays[t].addr.ip());
                cfg.my_addrs = vec![from];
                let expected = PeerIds {
                    rsa: Some(req.rsa_id),
                    ed25519: req.ed_id,
                };
                let chan = Channel::initiator(cfg, expected, Some(digest), now, system_time(now));
                let relay = &mut self.relays[r];
                relay.chans.push(Some(RChan {
                    chan,
                    conn: ci,
                    to: Some(t),
                    waiting: Vec::new(),
                }));
                let c = relay.chans.len() - 1;
                self.conns.push(Conn {
                    ends: [End::Relay { r, chan: c }, End::Relay { r: t, chan: tc }],
                    pipes: [Pipe::default(), Pipe::default()],
                    latency: lat,
                    bandwidth: bw,
                    open_at: now + lat * 2,
                    announced: true,
                    close_at: [None, None],
                    digest,
                });
                c
            }
        };
        let open = self.relays[r].chans[c]
            .as_ref()
            .is_some_and(|s| s.chan.is_open());
        if open {
            self.send_create(r, c, i, req.create);
        } else if let Some(Some(s)) = self.relays[r].chans.get_mut(c) {
            s.waiting.push((i, req.create));
        }
    }

    fn send_create(&mut self, r: usize, c: usize, i: usize, create: ChanMsg<'static>) {
        let relay = &mut self.relays[r];
        let Some(Some(s)) = relay.chans.get_mut(c) else {
            return;
        };
        let id = match s.chan.new_circ_id(&mut self.rng) {
            Ok(id) => id,
            Err(_) => {
                if let Some(rc) = relay.circs.get_mut(i).and_then(Option::as_mut) {
                    rc.circ.extend_failed(DestroyReason::RESOURCELIMIT);
                }
                return;
            }
        };
        if s.chan.send(id, &create).is_err() {
            if let Some(rc) = relay.circs.get_mut(i).and_then(Option::as_mut) {
                rc.circ.extend_failed(DestroyReason::CONNECTFAILED);
            }
            return;
        }
        match relay.circs.get_mut(i).and_then(Option::as_mut) {
            Some(rc) => {
                rc.next = Some((c, id));
                relay.by_next.insert((c, id), i);
            }
            None => {
                let _ = s.chan.send(id, &ChanMsg::Destroy(DestroyReason::FINISHED));
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Relays: exit and directory streams.

    fn exit_deliver(&mut self, r: usize) {
        let now = self.now;
        for k in 0..self.relays[r].exits.len() {
            let e = &mut self.relays[r].exits[k];
            if e.connect_at.is_some_and(|t| t <= now) {
                e.connect_at = None;
                let (i, stream) = (e.circ, e.stream);
                let ok = self.rcirc(r, i).is_some_and(|c| {
                    c.connected(stream, Some((IpAddr::V4(WEB_ADDR), 300)))
                        .is_ok()
                });
                if ok {
                    self.relays[r].stats.exit_streams += 1;
                } else {
                    self.relays[r].exits[k].done = true;
                }
            }
            let e = &mut self.relays[r].exits[k];
            while e.to_web.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, bytes)) = e.to_web.pop_front() {
                    e.web.handle_input(&bytes);
                }
            }
        }
    }

    fn exit_step(&mut self, r: usize) -> bool {
        let mut moved = false;
        let relay = &mut self.relays[r];
        for e in &mut relay.exits {
            if e.done || e.connect_at.is_some() {
                continue;
            }
            let Some(c) = relay.circs.get_mut(e.circ).and_then(Option::as_mut) else {
                e.done = true;
                continue;
            };
            let c = &mut c.circ;
            if !e.pending.is_empty() {
                let n = c.send(e.stream, &e.pending).unwrap_or(0);
                if n > 0 {
                    moved = true;
                    relay.stats.exit_bytes += n as u64;
                    e.pending.drain(..n);
                }
            }
            if e.pending.is_empty() {
                let room = c.send_capacity(e.stream);
                if room > 0 {
                    let got = e.web.poll_output_into(room.min(64 * 1024), &mut e.pending);
                    if got > 0 {
                        moved = true;
                        let n = c.send(e.stream, &e.pending).unwrap_or(0);
                        relay.stats.exit_bytes += n as u64;
                        e.pending.drain(..n);
                    }
                }
            }
            if e.web.is_done() && e.pending.is_empty() {
                e.done = true;
                moved = true;
                let _ = c.end_stream(e.stream, EndReason::DONE);
            }
        }
        relay.exits.retain(|e| !e.done);
        moved
    }

    fn dir_step(&mut self, r: usize) -> bool {
        let mut moved = false;
        let relay = &mut self.relays[r];
        for d in &mut relay.dirs {
            let Some((resp, sent)) = &mut d.response else {
                continue;
            };
            let Some(c) = relay.circs.get_mut(d.circ).and_then(Option::as_mut) else {
                d.response = None;
                continue;
            };
            if *sent < resp.len() {
                let n = c.circ.send(d.stream, &resp[*sent..]).unwrap_or(0);
                if n > 0 {
                    moved = true;
                    *sent += n;
                }
            }
            if *sent >= resp.len() {
                let _ = c.circ.end_stream(d.stream, EndReason::DONE);
                moved = true;
                d.response = None;
                d.circ = usize::MAX;
            }
        }
        relay.dirs.retain(|d| d.circ != usize::MAX);
        moved
    }
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

fn memchr(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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
        rsa_id: r.keys.rsa_id,
        ed_id: r.keys.ed_id,
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

/// A directory cache's answer to one HTTP request (dir-spec §4, §6): status, body, the
/// path, and whether the body is a consensus diff.
fn answer(docs: &DirDocs, request: &[u8]) -> (u16, Vec<u8>, String, bool) {
    let text = String::from_utf8_lossy(request);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (method, path) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut diff_from: Vec<String> = Vec::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("X-Or-Diff-From-Consensus") {
                diff_from.extend(v.split(',').map(|s| s.trim().to_ascii_lowercase()));
            }
        }
    }
    let not_found = |path: String| (404, Vec::new(), path, false);
    if method != "GET" {
        return not_found(path);
    }
    if path.starts_with("/tor/status-vote/current/consensus-microdesc") {
        for old in &docs.older {
            if old.digest().is_some_and(|d| diff_from.contains(&d)) {
                if let Some(d) = authority::diff(&old.consensus, &docs.current.consensus) {
                    return (200, d.into_bytes(), path, true);
                }
            }
        }
        return (
            200,
            docs.current.consensus.clone().into_bytes(),
            path,
            false,
        );
    }
    if let Some(rest) = path.strip_prefix("/tor/keys/") {
        let wanted: Option<Vec<String>> = if rest == "all" {
            None
        } else if let Some(fps) = rest.strip_prefix("fp/") {
            Some(fps.split('+').map(str::to_ascii_uppercase).collect())
        } else if let Some(pairs) = rest.strip_prefix("fp-sk/") {
            Some(
                pairs
                    .split('+')
                    .map(|p| p.split('-').next().unwrap_or("").to_ascii_uppercase())
                    .collect(),
            )
        } else {
            return not_found(path);
        };
        let body: String = docs
            .certs
            .iter()
            .filter(|(id, _)| {
                wanted
                    .as_ref()
                    .map_or(true, |w| w.contains(&id.to_string().to_ascii_uppercase()))
            })
            .map(|(_, t)| t.as_str())
            .collect();
        if body.is_empty() {
            return not_found(path);
        }
        return (200, body.into_bytes(), path, false);
    }
    if let Some(list) = path.strip_prefix("/tor/micro/d/") {
        let mut body = String::new();
        for d in list.split('-') {
            let Some(d) = onion_dir::MdDigest::from_base64(d) else {
                continue;
            };
            let found = std::iter::once(&docs.current)
                .chain(docs.older.iter())
                .find_map(|p| p.microdescs.iter().find(|(x, _)| *x == d));
            if let Some((_, md)) = found {
                body.push_str(md);
            }
        }
        if body.is_empty() {
            return not_found(path);
        }
        return (200, body.into_bytes(), path, false);
    }
    not_found(path)
}
