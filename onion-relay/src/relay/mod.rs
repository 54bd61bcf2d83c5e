//! The relay machine: connections, channels and circuits. Exit and directory streams are in
//! [`exit`], the onion-service roles (HSDir, introduction and rendezvous point) in [`hs`].

mod exit;
#[cfg(test)]
mod fwd_tests;
mod hs;
#[cfg(test)]
mod hs_tests;
mod mux;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use onion_cell::chancell::{ChanMsg, DestroyReason};
use onion_cell::CircId;
use onion_circuit::channel::{
    BodyPool, ChanConfig, ChanError, ChanEvent, Channel, InitiatorAuth, InitiatorCredentials,
    InputBuffer, PeerIds, ResponderCerts,
};
use onion_circuit::relay::{ExtendRequest, RelayCircuit, RelayEvent, RelayKeys as CircKeys};
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_circuit::Instant;
use onion_crypto::cert::Timestamp;
use onion_crypto::relay_keyset::{OnionKeyParams, RelayKeySet, Rotation};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::CryptoRngCore;

use crate::config::{ConsensusParams, RelayConfig};
use crate::dir::{DirCache, DirDocuments};
use crate::dos::{AddrTable, CreateVerdict, QueueAge};
use crate::event::{is_internal, ConnId, Error, Event, StreamHandle};
use crate::tls::TlsLinkCert;

use self::exit::Exit;
use self::hs::{HsPurpose, HsRoles};
use self::mux::{CircMux, Side};

/// Bytes of one cell on a link-protocol-4+ channel, for memory accounting.
const CELL_BYTES: usize = 514;

/// Relay-cell bodies kept for the cells received next once the cells they held were
/// written out ([`BodyPool`]): 128 KiB, the cells of one full TCP send buffer's delivery,
/// which a relay takes in before it forwards any of them.
const SPARE_BODIES: usize = 256;

/// How often the link certificates (Signing->Link, Signing->Auth, 2 days valid) are made
/// anew.
const CERT_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// Counters for tests, logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Circuits created (CREATE2 / CREATE_FAST answered).
    pub circuits_created: u64,
    /// CREATE cells refused by the circuit-creation defence.
    pub creates_refused_dos: u64,
    /// Inbound connections refused (per-address or total limit).
    pub connections_refused: u64,
    /// Circuits closed for holding too many cells ([`crate::Limits::circuit_queue_cells`]).
    pub circuits_killed_queue: u64,
    /// Circuits closed by the out-of-memory handler.
    pub circuits_killed_oom: u64,
    /// Outbound channels opened for EXTEND2.
    pub channels_opened: u64,
    /// EXTEND2 requests served on an existing channel.
    pub channels_reused: u64,
    /// Onion-service descriptors stored by the HSDir (`POST /tor/hs/3/publish`).
    pub hs_descriptors_stored: u64,
    /// Descriptor uploads refused (invalid, too large, not newer).
    pub hs_descriptors_refused: u64,
    /// Descriptors served (`GET /tor/hs/3/...` answered with 200).
    pub hs_descriptors_served: u64,
    /// Introduction circuits established (ESTABLISH_INTRO accepted).
    pub intro_established: u64,
    /// INTRODUCE1 cells relayed to a service as INTRODUCE2.
    pub introduce2_relayed: u64,
    /// INTRODUCE1 cells answered with a failure status.
    pub introduce1_nacked: u64,
    /// INTRODUCE1 cells refused by the INTRODUCE2 rate limit.
    pub introduce1_rate_limited: u64,
    /// Rendezvous cookies registered (ESTABLISH_RENDEZVOUS accepted).
    pub rend_established: u64,
    /// Circuit pairs joined at this rendezvous point (RENDEZVOUS1 matched).
    pub rend_joined: u64,
    /// Cells passed between joined circuits.
    pub rend_cells_spliced: u64,
    /// ESTABLISH_RENDEZVOUS dropped from single-hop clients.
    pub rend_refused_single_hop: u64,
    /// Circuits closed for an onion-service protocol violation or limit.
    pub hs_circuits_closed: u64,
}

/// One connection and its channel.
#[derive(Debug)]
struct Conn {
    /// `None` while an outbound connection is being opened by the embedder.
    chan: Option<Channel>,
    outbound: bool,
    /// The address of an inbound connection's peer (counted in the per-address table).
    peer_ip: Option<IpAddr>,
    /// Where an outbound connection goes.
    addr: Option<SocketAddr>,
    /// Identities an outbound connection's peer must prove.
    expected: PeerIds,
    /// Identities the peer proved once open.
    proven: PeerIds,
    open: bool,
    inbuf: InputBuffer,
    /// CREATE2 cells of circuits waiting for this channel to open.
    waiting: Vec<(u64, ChanMsg<'static>)>,
    /// Which circuit sends next when several wait for this channel's output (C tor's
    /// EWMA circuit scheduling): the circuits that stopped because it was full, or because
    /// others were waiting before them.
    mux: CircMux,
    /// Circuits with a side on this channel (may hold stale entries).
    circs: BTreeSet<u64>,
    /// Connect deadline of an outbound connection not yet handed to a channel.
    deadline: Option<Instant>,
    /// The embedder said its socket is full.
    embedder_blocked: bool,
    exporter_asked: bool,
    /// Output taken from the channel and not yet given to the embedder (a
    /// [`Relay::poll_transmit_to`] asked for less), from `pending_off` on.
    pending: Vec<u8>,
    pending_off: usize,
    /// Open and without circuits since then.
    idle_since: Option<Instant>,
}

impl Conn {
    fn new(outbound: bool) -> Self {
        Conn {
            chan: None,
            outbound,
            peer_ip: None,
            addr: None,
            expected: PeerIds::default(),
            proven: PeerIds::default(),
            open: false,
            inbuf: InputBuffer::new(),
            waiting: Vec::new(),
            mux: CircMux::default(),
            circs: BTreeSet::new(),
            deadline: None,
            embedder_blocked: false,
            exporter_asked: false,
            pending: Vec::new(),
            pending_off: 0,
            idle_since: None,
        }
    }

    /// Output bytes waiting for the embedder.
    fn out_len(&self) -> usize {
        self.chan.as_ref().map_or(0, Channel::outbound_len)
            + (self.pending.len() - self.pending_off)
    }

    fn queued(&self) -> usize {
        self.inbuf.len() + self.out_len()
    }
}

/// One circuit through this relay.
#[derive(Debug)]
struct Circ {
    rc: RelayCircuit,
    /// The channel and id toward the client (where the CREATE came from).
    client: (ConnId, CircId),
    /// The channel and id toward the next hop, once CREATE2 went out there.
    next: Option<(ConnId, CircId)>,
    /// The channel being opened or handshaking for this circuit's EXTEND2.
    waiting_on: Option<ConnId>,
    /// Events are held because an exit stream's buffer toward its target is full.
    held: bool,
    /// Exit and directory streams of this circuit.
    streams: BTreeSet<StreamHandle>,
    /// When the queued cells (each way) and stream bytes were queued, for the
    /// out-of-memory handler.
    age_to_client: QueueAge,
    age_to_next: QueueAge,
    age_streams: QueueAge,
    /// The onion-service role.
    hs: HsPurpose,
    /// An INTRODUCE1 came on it (only one may).
    introduced: bool,
    /// A cell went through it since the last idle sweep ([`RelayConfig::compact_idle`]).
    used: bool,
    /// Its key schedules are freed ([`RelayCircuit::compact`]) and no cell came since.
    compacted: bool,
}

/// A Tor relay as a sans-IO state machine: guard (accepting client channels), middle
/// (forwarding cells), exit (streams to TCP targets allowed by the exit policy) and
/// directory cache (BEGIN_DIR), with the dos-spec defences of [`crate::Limits`].
///
/// The embedder owns sockets, TLS and the clock; see the [crate documentation](crate) for
/// the run loop.
pub struct Relay {
    cfg: RelayConfig,
    keys: RelayKeySet,
    circ_keys: CircKeys,
    tls: TlsLinkCert,
    certs: ResponderCerts,
    creds: InitiatorCredentials,
    certs_at: Instant,
    rng: ChaCha20Rng,
    now: Instant,
    /// The wall clock as last given, and the monotonic time it was given at.
    wall: Timestamp,
    wall_at: Instant,
    conns: BTreeMap<ConnId, Conn>,
    next_out: u64,
    /// Where the last `poll_transmit` stopped (round-robin).
    tx_cursor: Option<ConnId>,
    circs: BTreeMap<u64, Circ>,
    /// Every channel's EWMA half-life ([`crate::config::circuit_priority_halflife`]).
    halflife: Duration,
    next_circ: u64,
    by_in: HashMap<(ConnId, CircId), u64>,
    by_out: HashMap<(ConnId, CircId), u64>,
    dirty: BTreeSet<u64>,
    /// Channels with room and circuits waiting for it ([`Relay::mux_fill`]).
    to_fill: BTreeSet<ConnId>,
    streams: BTreeMap<StreamHandle, Exit>,
    by_stream: HashMap<(u64, u16), StreamHandle>,
    next_stream: u64,
    events: VecDeque<Event>,
    addrs: AddrTable,
    relay_addrs: HashSet<IpAddr>,
    dir: DirCache,
    hs: HsRoles,
    stats: RelayStats,
    /// Input bytes since the last memory check.
    unchecked_bytes: usize,
    /// When idle circuits are next looked for ([`RelayConfig::compact_idle`]).
    next_idle_sweep: Option<Instant>,
    /// Bodies of forwarded cells, reused for the next cells received.
    bodies: BodyPool,
}

impl core::fmt::Debug for Relay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Relay")
            .field("ids", &self.identities())
            .field("conns", &self.conns.len())
            .field("circs", &self.circs.len())
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

fn circ_keys(keys: &RelayKeySet) -> CircKeys {
    CircKeys {
        rsa_id: keys.rsa_identity().public().identity(),
        ed_id: keys.ed_identity(),
        ntor_keys: keys.ntor_keys().to_vec(),
    }
}

fn key_err(e: impl core::fmt::Display) -> Error {
    Error::Keys(e.to_string())
}

impl Relay {
    /// A relay with `keys` (the embedder loads or generates them, `onion_crypto`'s
    /// [`RelayKeySet`]). `now` is the monotonic clock and `wall` the wall clock (certificate
    /// validity, NETINFO: the stack's [`Timestamp`]); `rng` seeds the relay's own ChaCha20 generator, used for every
    /// later draw (handshakes, circuit ids, padding).
    pub fn new(
        config: RelayConfig,
        keys: RelayKeySet,
        now: Instant,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Relay, Error> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut cfg = config;
        let tls = match cfg.link_cert.take() {
            Some(t) => t,
            None => TlsLinkCert::generate(wall, &mut rng)?,
        };
        let certs = keys
            .link_keys()
            .responder_certs(&tls.sha256(), wall)
            .map_err(key_err)?;
        let creds = keys
            .link_keys()
            .initiator_credentials(wall, &mut rng)
            .map_err(key_err)?;
        Ok(Relay {
            circ_keys: circ_keys(&keys),
            keys,
            tls,
            certs,
            creds,
            certs_at: now,
            rng,
            now,
            wall,
            wall_at: now,
            conns: BTreeMap::new(),
            next_out: 0,
            tx_cursor: None,
            circs: BTreeMap::new(),
            halflife: crate::config::circuit_priority_halflife(cfg.circuit_priority_halflife, None),
            next_circ: 0,
            by_in: HashMap::new(),
            by_out: HashMap::new(),
            dirty: BTreeSet::new(),
            to_fill: BTreeSet::new(),
            streams: BTreeMap::new(),
            by_stream: HashMap::new(),
            next_stream: 0,
            events: VecDeque::new(),
            addrs: AddrTable::default(),
            relay_addrs: HashSet::new(),
            dir: DirCache::default(),
            hs: HsRoles::new(&cfg),
            stats: RelayStats::default(),
            unchecked_bytes: 0,
            next_idle_sweep: cfg.compact_idle.map(|d| now + d),
            bodies: BodyPool::new(SPARE_BODIES),
            cfg,
        })
    }

    // ------------------------------------------------------------------------------------
    // Views and settings.

    /// The TLS certificate and key the embedder's TLS server must present on every
    /// inbound connection (the CERTS cell certifies its digest).
    pub fn link_cert(&self) -> &TlsLinkCert {
        &self.tls
    }

    /// Our identities (RSA and ed25519).
    pub fn identities(&self) -> PeerIds {
        PeerIds::new(self.circ_keys.rsa_id, self.circ_keys.ed_id)
    }

    /// The context of the TLS exporter value [`Relay::handle_connected`] needs for
    /// outbound connections: our CID, SHA-256 of our RSA identity key (tor-spec §4.4.2).
    pub fn tls_exporter_context(&self) -> [u8; 32] {
        self.creds.tls_exporter_context()
    }

    /// The keys.
    pub fn keys(&self) -> &RelayKeySet {
        &self.keys
    }

    /// Counters.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// Circuits held.
    pub fn n_circuits(&self) -> usize {
        self.circs.len()
    }

    /// Connections held (inbound, outbound, and outbound being opened).
    pub fn n_connections(&self) -> usize {
        self.conns.len()
    }

    /// The identities the peer of `conn` proved, once its channel is open (empty for
    /// clients, which do not authenticate).
    pub fn connection_peer(&self, conn: ConnId) -> Option<PeerIds> {
        self.conns.get(&conn).filter(|c| c.open).map(|c| c.proven)
    }

    /// The congestion control (proposal 324) of each circuit held that negotiated it and
    /// ends here (window, inflight, RTT: what C tor's exit would report), with a number
    /// naming the circuit within this relay, in the order the circuits were created.
    pub fn circuit_congestion(
        &self,
    ) -> impl Iterator<Item = (u64, &onion_circuit::cc::CongestionControl)> + '_ {
        self.circs
            .iter()
            .filter_map(|(k, c)| c.rc.congestion_control().map(|cc| (*k, cc)))
    }

    /// Exit, directory and resolve streams held.
    pub fn n_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes queued in circuits, channels and exit buffers (what
    /// [`crate::Limits::max_queued_bytes`] bounds).
    pub fn queued_bytes(&self) -> usize {
        let conns: usize = self.conns.values().map(Conn::queued).sum();
        let circs: usize = self.circs.keys().map(|k| self.circ_queued(*k)).sum();
        conns + circs
    }

    /// Replaces the key set (after [`RelayKeySet::rotate`]): new circuits use its onion
    /// keys, new channels its certificates.
    pub fn set_keys(&mut self, keys: RelayKeySet, now: Instant) -> Result<(), Error> {
        self.see(now);
        let wall = self.wall_now();
        let certs = keys
            .link_keys()
            .responder_certs(&self.tls.sha256(), wall)
            .map_err(key_err)?;
        let creds = keys
            .link_keys()
            .initiator_credentials(wall, &mut self.rng)
            .map_err(key_err)?;
        self.circ_keys = circ_keys(&keys);
        self.keys = keys;
        self.certs = certs;
        self.creds = creds;
        self.certs_at = now;
        Ok(())
    }

    /// Runs [`RelayKeySet::rotate`] on our keys at the current wall clock (call it at
    /// [`RelayKeySet::next_event`]): new onion keys answer CREATE2 at once while the
    /// previous ones keep answering until their grace period ends; new certificates go
    /// into channels opened from now on. When [`Rotation::descriptor_changed`] the
    /// embedder publishes a new descriptor; when [`Rotation::files_changed`] it writes
    /// [`RelayKeySet::to_files`].
    pub fn rotate_keys(
        &mut self,
        now: Instant,
        params: &OnionKeyParams,
    ) -> Result<Rotation, Error> {
        self.see(now);
        let wall = self.wall_now();
        let r = self
            .keys
            .rotate(wall, params, &mut self.rng)
            .map_err(key_err)?;
        self.circ_keys = circ_keys(&self.keys);
        if r.signing_key || r.link_certs {
            self.refresh_certs();
        }
        Ok(r)
    }

    /// Replaces the TLS link certificate for connections accepted from now on.
    pub fn set_link_cert(&mut self, tls: TlsLinkCert, now: Instant) -> Result<(), Error> {
        self.see(now);
        let certs = self
            .keys
            .link_keys()
            .responder_certs(&tls.sha256(), self.wall_now())
            .map_err(key_err)?;
        self.tls = tls;
        self.certs = certs;
        Ok(())
    }

    /// The addresses of known relays (from the consensus): exempt from the per-address
    /// connection and circuit-creation limits, as C tor exempts them.
    pub fn set_relay_addresses(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        self.relay_addrs = addrs.into_iter().collect();
    }

    /// A new consensus's parameters ([`ConsensusParams`]): circuits created from now on
    /// negotiate and run congestion control with its values (circuits already open keep
    /// the ones they negotiated: a circuit's `sendme_inc` is fixed by its handshake,
    /// proposal 324 §4.1); the exit streams' XOFF thresholds (§4) and the per-circuit
    /// queue bound (`circ_max_cell_queue_size`) apply to every circuit at once: a circuit
    /// already holding more cells than a lowered bound is closed, DESTROY
    /// (RESOURCELIMIT) both ways.
    pub fn set_consensus_params(&mut self, params: ConsensusParams, now: Instant) {
        self.see(now);
        self.cfg.circuits = params.circuits;
        let limit = params.circuit_queue_cells;
        self.cfg.limits.circuit_queue_cells = limit;
        self.halflife = crate::config::circuit_priority_halflife(
            self.cfg.circuit_priority_halflife,
            Some(params.circuit_priority_halflife),
        );
        for c in self.conns.values_mut() {
            c.mux.set_halflife(self.halflife);
        }
        // Queues already beyond a lowered bound: closed now, as the next cell would.
        let over: Vec<u64> = self
            .circs
            .iter()
            .filter(|(_, c)| c.rc.queued_to_next() > limit || c.rc.queued_to_client() > limit)
            .map(|(k, _)| *k)
            .collect();
        for k in over {
            self.stats.circuits_killed_queue += 1;
            self.kill_circ(k, DestroyReason::RESOURCELIMIT);
        }
        self.settle();
    }

    /// The documents the directory cache serves (replacing the previous ones).
    pub fn set_directory_documents(&mut self, docs: DirDocuments) {
        self.dir = DirCache::new(docs);
    }

    fn see(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The wall clock now, extrapolated from the last one given on the monotonic clock.
    fn wall_now(&self) -> Timestamp {
        self.wall.add_secs((self.now - self.wall_at).as_secs())
    }

    fn chan_config(&self, peer: Option<IpAddr>, outbound: bool) -> ChanConfig {
        let mut c = ChanConfig::default();
        c.max_circuits = self.cfg.limits.circuits_per_channel;
        c.peer_addr = peer;
        c.my_addrs = self.cfg.addresses.clone();
        c.keepalive = self.cfg.keepalive;
        if outbound {
            c.accept_inbound_circuits = Some(true);
        } else {
            c.verify_initiator_auth = self.cfg.verify_initiator_auth;
        }
        c
    }

    // ------------------------------------------------------------------------------------
    // Transports.

    /// The embedder's TLS server accepted `conn` from `peer` (presenting
    /// [`Relay::link_cert`]). Refused, with [`Error::Refused`], beyond
    /// [`crate::Limits::max_connections`] or [`crate::Limits::max_conns_per_addr`]: close it
    /// then. The responder handshake starts when the initiator's VERSIONS arrives.
    pub fn handle_accepted(
        &mut self,
        conn: ConnId,
        now: Instant,
        peer: SocketAddr,
    ) -> Result<(), Error> {
        self.see(now);
        if conn.is_outbound() || self.conns.contains_key(&conn) {
            return Err(Error::Refused("connection id in use or reserved"));
        }
        if self.conns.len() >= self.cfg.limits.max_connections {
            self.stats.connections_refused += 1;
            return Err(Error::Refused("Limits::max_connections"));
        }
        let ip = peer.ip();
        let max = if self.relay_addrs.contains(&ip) {
            usize::MAX
        } else {
            self.cfg.limits.max_conns_per_addr
        };
        if !self.addrs.open(ip, max, &self.cfg.limits, self.now) {
            self.stats.connections_refused += 1;
            return Err(Error::Refused("Limits::max_conns_per_addr"));
        }
        let cfg = self.chan_config(Some(ip), false);
        let chan = Channel::responder(cfg, &self.certs, self.now, self.wall_now(), &mut self.rng);
        let mut c = Conn::new(false);
        c.mux.set_halflife(self.halflife);
        c.chan = Some(chan);
        c.peer_ip = Some(ip);
        self.conns.insert(conn, c);
        Ok(())
    }

    /// The outbound connection `conn` ([`Event::Connect`]) is up: `peer_cert_sha256` is
    /// SHA-256 of the certificate the peer presented in TLS, `tls_exporter` the RFC 5705
    /// exporter value of the session with label
    /// [`onion_circuit::channel::TLS_EXPORTER_LABEL`], context
    /// [`Relay::tls_exporter_context`] and length 32. The channel authenticates as us
    /// (tor-spec §4.4.2).
    pub fn handle_connected(
        &mut self,
        conn: ConnId,
        now: Instant,
        peer_cert_sha256: [u8; 32],
        tls_exporter: [u8; 32],
    ) {
        self.see(now);
        let wall = self.wall_now();
        let cfg_peer = self.conns.get(&conn).and_then(|c| c.addr).map(|a| a.ip());
        let cfg = self.chan_config(cfg_peer, true);
        let creds = self.creds.clone();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.outbound || c.chan.is_some() {
            return;
        }
        let auth = InitiatorAuth {
            credentials: creds,
            tls_exporter,
        };
        c.chan = Some(Channel::initiator_authenticated(
            cfg,
            c.expected,
            peer_cert_sha256,
            auth,
            self.now,
            wall,
            &mut self.rng,
        ));
        c.deadline = None;
        self.pump_conn(conn);
        self.settle();
    }

    /// The TLS exporter value asked for by [`Event::TlsExporter`].
    pub fn provide_tls_exporter(&mut self, conn: ConnId, now: Instant, value: [u8; 32]) {
        self.see(now);
        let Some(ch) = self.conns.get_mut(&conn).and_then(|c| c.chan.as_mut()) else {
            return;
        };
        ch.provide_tls_exporter(value);
        self.pump_conn(conn);
        self.settle();
    }

    /// Bytes TLS delivered on `conn`. Input beyond [`crate::Limits::channel_inbound`] that
    /// the channel has not processed closes it.
    pub fn handle_input(&mut self, conn: ConnId, now: Instant, bytes: &[u8]) {
        self.see(now);
        let limit = self.cfg.limits.channel_inbound;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.chan.is_none() {
            return;
        }
        if c.inbuf.len().saturating_add(bytes.len()) > limit {
            self.close_conn(conn, true);
            self.settle();
            return;
        }
        self.unchecked_bytes = self.unchecked_bytes.saturating_add(bytes.len());
        self.pump_conn_with(conn, bytes);
        self.settle();
    }

    /// `conn` closed (EOF, error), or an outbound connection could not be opened: its
    /// circuits are torn down (DESTROY to their other side) and circuits waiting to extend
    /// over it fail.
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) {
        self.see(now);
        self.close_conn(conn, false);
        self.settle();
    }

    /// The embedder's socket for `conn` is full (`true`) or drains again (`false`): while
    /// blocked, [`Relay::poll_transmit`] skips it and its channel's output grows to
    /// [`crate::Limits::channel_outbound`], after which circuits keep their cells.
    pub fn set_blocked(&mut self, conn: ConnId, blocked: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.embedder_blocked = blocked;
        }
    }

    /// Time passed: handshake and connect deadlines, keepalives, half-closed streams,
    /// target connect and resolve deadlines, certificate refresh. `wall` is the wall
    /// clock now.
    pub fn handle_timeout(&mut self, now: Instant, wall: Timestamp) {
        self.see(now);
        self.wall = wall;
        self.wall_at = self.now;
        let now = self.now;
        if now >= self.certs_at + CERT_REFRESH {
            self.refresh_certs();
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let idle_over = c
                .idle_since
                .is_some_and(|t| t + self.cfg.limits.channel_idle <= now);
            if c.deadline.is_some_and(|d| d <= now) || idle_over {
                self.close_conn(id, true);
                continue;
            }
            if let Some(ch) = c.chan.as_mut() {
                if ch.poll_timeout().is_some_and(|t| t <= now) {
                    ch.handle_timeout(now);
                    self.pump_conn(id);
                }
            }
        }
        let due: Vec<u64> = self
            .circs
            .iter()
            .filter(|(_, c)| c.rc.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(c) = self.circs.get_mut(&k) {
                c.rc.handle_timeout(now);
                self.dirty.insert(k);
            }
        }
        if self.next_idle_sweep.is_some_and(|t| t <= now) {
            self.compact_idle_circuits();
        }
        self.stream_timeouts();
        self.hs_expire();
        self.addrs.expire(now);
        self.unchecked_bytes = usize::MAX;
        self.settle();
    }

    fn refresh_certs(&mut self) {
        let wall = self.wall_now();
        let lk = self.keys.link_keys();
        if let Ok(c) = lk.responder_certs(&self.tls.sha256(), wall) {
            self.certs = c;
        }
        if let Ok(c) = lk.initiator_credentials(wall, &mut self.rng) {
            self.creds = c;
        }
        self.certs_at = self.now;
    }

    /// When to call [`Relay::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.certs_at + CERT_REFRESH);
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for c in self.conns.values() {
            min(c.deadline);
            min(c.idle_since.map(|t| t + self.cfg.limits.channel_idle));
            min(c.chan.as_ref().and_then(Channel::poll_timeout));
        }
        for c in self.circs.values() {
            min(c.rc.poll_timeout());
        }
        for s in self.streams.values() {
            min(s.deadline);
        }
        min(self.hs_timeout());
        if !self.circs.is_empty() {
            min(self.next_idle_sweep);
        }
        t
    }

    /// The idle sweep ([`RelayConfig::compact_idle`]): a circuit no cell went through since
    /// the last sweep has its expanded AES key schedules freed ([`RelayCircuit::compact`]);
    /// its next cell rebuilds them. A circuit is so compacted after one to two periods
    /// without a cell.
    fn compact_idle_circuits(&mut self) {
        let Some(period) = self.cfg.compact_idle else {
            self.next_idle_sweep = None;
            return;
        };
        for c in self.circs.values_mut() {
            if !c.used && !c.compacted {
                c.rc.compact();
                c.compacted = true;
            }
            c.used = false;
        }
        self.next_idle_sweep = Some(self.now + period);
    }

    /// Circuits whose key schedules are freed by the idle sweep
    /// ([`RelayConfig::compact_idle`]).
    pub fn n_compacted_circuits(&self) -> usize {
        self.circs.values().filter(|c| c.compacted).count()
    }

    /// Appends bytes for one connection to `out` and names it; `None` when nothing waits.
    /// Connections are served in turn.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<ConnId> {
        self.see(now);
        let start = self.tx_cursor;
        let after = start.map_or(Vec::new(), |s| {
            self.conns
                .range((core::ops::Bound::Excluded(s), core::ops::Bound::Unbounded))
                .map(|(k, _)| *k)
                .collect()
        });
        let before: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|k| start.map_or(true, |s| *k <= s))
            .collect();
        for id in after.into_iter().chain(before) {
            if self.transmit_one(id, out, usize::MAX) > 0 {
                self.tx_cursor = Some(id);
                return Some(id);
            }
        }
        None
    }

    /// Appends at most about `max` bytes for `conn` to `out` (whole cells; at least one
    /// cell when any waits); returns how many. For an embedder that writes each socket as
    /// it drains.
    pub fn poll_transmit_to(
        &mut self,
        conn: ConnId,
        now: Instant,
        out: &mut Vec<u8>,
        max: usize,
    ) -> usize {
        self.see(now);
        self.transmit_one(conn, out, max)
    }

    fn transmit_one(&mut self, id: ConnId, out: &mut Vec<u8>, max: usize) -> usize {
        let Some(c) = self.conns.get_mut(&id) else {
            return 0;
        };
        if c.embedder_blocked {
            return 0;
        }
        if c.pending_off >= c.pending.len() {
            c.pending.clear();
            c.pending_off = 0;
            if let Some(ch) = c.chan.as_mut() {
                ch.poll_transmit(&mut c.pending);
            }
        }
        let avail = c.pending.len() - c.pending_off;
        let n = avail.min(max.max(1));
        if n == 0 {
            return 0;
        }
        if out.is_empty() && c.pending_off == 0 && n == avail {
            // All of it, to an empty buffer: hand the bytes over instead of copying them,
            // and keep a buffer as large for the channel's next output (allocated, not
            // copied into), so that it does not grow again from nothing.
            core::mem::swap(out, &mut c.pending);
            if c.pending.capacity() < n {
                c.pending = Vec::with_capacity(n.min(1 << 20));
            }
            c.pending.clear();
            c.pending_off = 0;
        } else {
            out.extend_from_slice(&c.pending[c.pending_off..c.pending_off + n]);
            c.pending_off += n;
        }
        if c.pending_off >= c.pending.len() && c.pending.capacity() > 1 << 20 {
            c.pending = Vec::new();
            c.pending_off = 0;
        }
        if c.mux.has_waiting() && c.out_len() < self.cfg.limits.channel_outbound {
            self.to_fill.insert(id);
            self.settle();
        }
        n
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ------------------------------------------------------------------------------------
    // Channels.

    /// Hand the buffered input to the channel until it takes no more, handling its events
    /// in between.
    fn pump_conn(&mut self, conn: ConnId) {
        self.pump_conn_with(conn, &[]);
    }

    /// [`Relay::pump_conn`] with `fresh` bytes just received after the buffered ones (the
    /// caller checked them against the input limit): read where they are, and only what
    /// the channel leaves is copied into the buffer.
    fn pump_conn_with(&mut self, conn: ConnId, mut fresh: &[u8]) {
        loop {
            let now = self.now;
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(ch) = c.chan.as_mut() else {
                return;
            };
            ch.swap_body_pool(&mut self.bodies);
            let fed = c
                .inbuf
                .push_feed(ch, now, core::mem::take(&mut fresh), usize::MAX);
            ch.swap_body_pool(&mut self.bodies);
            let Ok(fed) = fed else {
                return;
            };
            let evented = self.chan_events(conn);
            if let Some(c) = self.conns.get_mut(&conn) {
                if let Some(ctx) = c.chan.as_ref().and_then(Channel::tls_exporter_needed) {
                    if !c.exporter_asked {
                        c.exporter_asked = true;
                        self.events
                            .push_back(Event::TlsExporter { conn, context: ctx });
                    }
                }
            }
            if !fed.again(evented) {
                return;
            }
        }
    }

    fn chan_events(&mut self, conn: ConnId) -> bool {
        let mut any = false;
        loop {
            let Some(ev) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.chan.as_mut())
                .and_then(Channel::poll_event)
            else {
                return any;
            };
            any = true;
            match ev {
                ChanEvent::Open(open) => {
                    let Some(c) = self.conns.get_mut(&conn) else {
                        return any;
                    };
                    c.open = true;
                    c.idle_since = Some(self.now);
                    c.proven = open.peer;
                    let waiting = core::mem::take(&mut c.waiting);
                    for (k, create) in waiting {
                        self.send_create(k, conn, create);
                    }
                }
                ChanEvent::CircuitCell { circ_id, msg } => self.circ_cell(conn, circ_id, msg),
                ChanEvent::CircuitKilled { circ_id, .. } => {
                    // The channel sent DESTROY itself: our side of the circuit goes too.
                    self.circ_cell(conn, circ_id, ChanMsg::Destroy(DestroyReason::PROTOCOL));
                }
                ChanEvent::Closed(e) => {
                    let reason = match e {
                        ChanError::IdentityMismatch { .. } => DestroyReason::OR_IDENTITY,
                        _ => DestroyReason::CONNECTFAILED,
                    };
                    self.conn_gone(conn, reason, true);
                    return any;
                }
                _ => {}
            }
        }
    }

    /// Close `conn` ourselves (`tell`: ask the embedder to close it too).
    fn close_conn(&mut self, conn: ConnId, tell: bool) {
        if let Some(ch) = self.conns.get_mut(&conn).and_then(|c| c.chan.as_mut()) {
            ch.close();
        }
        self.conn_gone(conn, DestroyReason::CONNECTFAILED, tell);
    }

    /// Forget `conn`: tear down what used it.
    fn conn_gone(&mut self, conn: ConnId, extend_reason: DestroyReason, tell: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if self.tx_cursor == Some(conn) {
            self.tx_cursor = None;
        }
        if tell {
            self.events.push_back(Event::Disconnect { conn });
        }
        if let Some(ip) = c.peer_ip {
            self.addrs.close(ip, self.now);
        }
        let now = self.now;
        for (k, _) in c.waiting {
            if let Some(circ) = self.circs.get_mut(&k) {
                circ.waiting_on = None;
                circ.rc.extend_failed(extend_reason);
                self.dirty.insert(k);
            }
        }
        for k in c.circs {
            let Some(circ) = self.circs.get_mut(&k) else {
                continue;
            };
            if circ.client.0 == conn {
                self.by_in.remove(&circ.client);
                circ.rc
                    .handle_from_client(now, ChanMsg::Destroy(DestroyReason::CHANNEL_CLOSED));
                self.dirty.insert(k);
            }
            if let Some(n) = circ.next.filter(|n| n.0 == conn) {
                self.by_out.remove(&n);
                circ.next = None;
                circ.rc
                    .handle_from_next(now, ChanMsg::Destroy(DestroyReason::CHANNEL_CLOSED));
                self.dirty.insert(k);
            }
            if circ.waiting_on == Some(conn) {
                circ.waiting_on = None;
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Circuits.

    /// A cell for circuit `id` on `conn` (tor-spec §5.5.1: a cell for an unknown circuit
    /// that is not a CREATE is dropped).
    fn circ_cell(&mut self, conn: ConnId, id: CircId, msg: ChanMsg<'static>) {
        let now = self.now;
        let limit = self.cfg.limits.circuit_queue_cells;
        // A circuit id names one circuit side on a channel: ours (toward the next hop) and
        // the peer's (toward the client) come from the two halves of the id space (tor-spec
        // §5.1.1), so at most one table holds it. On a connection we opened, the bulk of the
        // cells answer our own circuits: that table is asked first, saving a lookup.
        let key = (conn, id);
        let (from_client, from_next) = if conn.is_outbound() {
            match self.by_out.get(&key) {
                Some(&k) => (None, Some(k)),
                None => (self.by_in.get(&key).copied(), None),
            }
        } else {
            match self.by_in.get(&key) {
                Some(&k) => (Some(k), None),
                None => (None, self.by_out.get(&key).copied()),
            }
        };
        if let Some(k) = from_client {
            if matches!(msg, ChanMsg::Destroy(_)) {
                self.by_in.remove(&(conn, id));
            }
            if let Some(c) = self.circs.get_mut(&k) {
                c.used = true;
                c.compacted = false;
                c.rc.handle_from_client(now, msg);
                if c.rc.queued_to_next() > limit || c.rc.queued_to_client() > limit {
                    self.stats.circuits_killed_queue += 1;
                    self.kill_circ(k, DestroyReason::RESOURCELIMIT);
                    return;
                }
                self.dirty.insert(k);
            }
            return;
        }
        if let Some(k) = from_next {
            if matches!(msg, ChanMsg::Destroy(_)) {
                self.by_out.remove(&(conn, id));
                if let Some(c) = self.circs.get_mut(&k) {
                    c.next = None;
                }
            }
            if let Some(c) = self.circs.get_mut(&k) {
                c.used = true;
                c.compacted = false;
                c.rc.handle_from_next(now, msg);
                if c.rc.queued_to_client() > limit {
                    self.stats.circuits_killed_queue += 1;
                    self.kill_circ(k, DestroyReason::RESOURCELIMIT);
                    return;
                }
                self.dirty.insert(k);
            }
            return;
        }
        if matches!(
            msg,
            ChanMsg::Create2(_) | ChanMsg::CreateFast(_) | ChanMsg::Create(_)
        ) {
            self.create(conn, id, msg);
        }
    }

    /// CREATE2 / CREATE_FAST on `conn` (tor-spec §5.1), after the circuit-creation defence.
    fn create(&mut self, conn: ConnId, id: CircId, msg: ChanMsg<'static>) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let client = c.proven.is_empty();
        if let (Some(ip), true) = (c.peer_ip, client) {
            if !self.relay_addrs.contains(&ip)
                && self.addrs.create(ip, &self.cfg.limits, now) == CreateVerdict::Refuse
            {
                self.stats.creates_refused_dos += 1;
                if let Some(ch) = c.chan.as_mut() {
                    let _ = ch.send(id, &ChanMsg::Destroy(DestroyReason::RESOURCELIMIT));
                }
                return;
            }
        }
        let Some(ch) = c.chan.as_mut() else {
            return;
        };
        match RelayCircuit::accept_with(
            &self.circ_keys,
            &self.cfg.circuits,
            &msg,
            now,
            &mut self.rng,
        ) {
            Ok((rc, reply)) => {
                if ch.send(id, &reply).is_err() {
                    let _ = ch.send(id, &ChanMsg::Destroy(DestroyReason::RESOURCELIMIT));
                    return;
                }
                let k = self.next_circ;
                self.next_circ += 1;
                c.circs.insert(k);
                c.idle_since = None;
                self.circs.insert(
                    k,
                    Circ {
                        rc,
                        client: (conn, id),
                        next: None,
                        waiting_on: None,
                        held: false,
                        streams: BTreeSet::new(),
                        age_to_client: QueueAge::default(),
                        age_to_next: QueueAge::default(),
                        age_streams: QueueAge::default(),
                        hs: HsPurpose::Or,
                        introduced: false,
                        used: true,
                        compacted: false,
                    },
                );
                self.by_in.insert((conn, id), k);
                self.stats.circuits_created += 1;
            }
            Err(e) => {
                let _ = ch.send(id, &ChanMsg::Destroy(e.destroy_reason()));
            }
        }
    }

    /// EXTEND2 (tor-spec §5.1.2, §5.3.1): reuse a channel to that relay, or open one.
    fn extend(&mut self, k: u64, req: ExtendRequest) {
        let fail = |s: &mut Self, reason| {
            if let Some(c) = s.circs.get_mut(&k) {
                c.rc.extend_failed(reason);
                s.dirty.insert(k);
            }
        };
        let addr = req
            .addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| req.addrs.first())
            .copied();
        let Some(addr) = addr else {
            return fail(self, DestroyReason::CONNECTFAILED);
        };
        if !self.cfg.extend_allow_private && is_internal(addr.ip()) {
            return fail(self, DestroyReason::CONNECTFAILED);
        }
        let matches = |ids: &PeerIds| {
            ids.rsa == Some(req.rsa_id) && req.ed_id.map_or(true, |e| ids.ed25519 == Some(e))
        };
        let existing = self.conns.iter().find_map(|(id, c)| {
            let usable = c.chan.as_ref().map_or(true, |ch| !ch.is_closed());
            let ok = if c.open {
                matches(&c.proven)
            } else {
                c.outbound && matches(&c.expected)
            };
            (usable && ok).then_some((*id, c.open))
        });
        match existing {
            Some((conn, true)) => {
                self.stats.channels_reused += 1;
                self.send_create(k, conn, req.create);
            }
            Some((conn, false)) => {
                self.stats.channels_reused += 1;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.waiting.push((k, req.create));
                }
                if let Some(c) = self.circs.get_mut(&k) {
                    c.waiting_on = Some(conn);
                }
            }
            None => {
                if self.conns.len() >= self.cfg.limits.max_connections {
                    return fail(self, DestroyReason::RESOURCELIMIT);
                }
                let conn = ConnId(ConnId::OUTBOUND_BIT | self.next_out);
                self.next_out += 1;
                let ids = PeerIds {
                    rsa: Some(req.rsa_id),
                    ed25519: req.ed_id,
                };
                let mut c = Conn::new(true);
                c.mux.set_halflife(self.halflife);
                c.addr = Some(addr);
                c.expected = ids;
                c.deadline = self.now.checked_add(self.cfg.limits.connect_timeout);
                c.waiting.push((k, req.create));
                self.conns.insert(conn, c);
                if let Some(c) = self.circs.get_mut(&k) {
                    c.waiting_on = Some(conn);
                }
                self.stats.channels_opened += 1;
                self.events.push_back(Event::Connect { conn, addr, ids });
            }
        }
    }

    /// Send circuit `k`'s CREATE2 on the open channel `conn`.
    fn send_create(&mut self, k: u64, conn: ConnId, create: ChanMsg<'static>) {
        let Some(circ) = self.circs.get_mut(&k) else {
            return;
        };
        circ.waiting_on = None;
        if circ.rc.is_closed() {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            circ.rc.extend_failed(DestroyReason::CONNECTFAILED);
            self.dirty.insert(k);
            return;
        };
        // No channel to send on: the extension fails rather than waiting for nothing.
        let Some(ch) = c.chan.as_mut() else {
            circ.rc.extend_failed(DestroyReason::CONNECTFAILED);
            self.dirty.insert(k);
            return;
        };
        let sent = match ch.new_circ_id(&mut self.rng) {
            Ok(id) => match ch.send(id, &create) {
                Ok(()) => Some(id),
                Err(_) => {
                    ch.release_circ_id(id);
                    None
                }
            },
            Err(_) => None,
        };
        match sent {
            Some(id) => {
                c.circs.insert(k);
                c.idle_since = None;
                self.by_out.insert((conn, id), k);
                circ.next = Some((conn, id));
            }
            None => circ.rc.extend_failed(DestroyReason::RESOURCELIMIT),
        }
        self.dirty.insert(k);
    }

    /// Run dirty circuits until nothing moves, then check memory.
    fn settle(&mut self) {
        let mut rounds = 0usize;
        'settle: loop {
            while let Some(k) = self.dirty.pop_first() {
                self.step_circ(k);
                rounds += 1;
                if rounds > 1_000_000 {
                    break 'settle;
                }
            }
            let Some(conn) = self.to_fill.pop_first() else {
                break;
            };
            self.mux_fill(conn);
        }
        if self.unchecked_bytes >= 64 << 10 {
            self.unchecked_bytes = 0;
            self.check_memory();
            while let Some(k) = self.dirty.pop_first() {
                self.step_circ(k);
            }
        }
    }

    /// Move circuit `k`'s cells to its channels, handle its events, free it once closed.
    fn step_circ(&mut self, k: u64) {
        let limit = self.cfg.limits.channel_outbound;
        let now = self.now;
        self.note_ages(k);
        if self.circs.get(&k).is_some_and(|c| c.held) {
            self.recheck_full_streams(k);
        }
        loop {
            let Some(c) = self.circs.get_mut(&k) else {
                return;
            };
            let mut moved = false;
            // Toward the next hop.
            loop {
                match c.next {
                    Some((nc, nid)) => {
                        let Some(ch) = self.conns.get_mut(&nc) else {
                            c.next = None;
                            continue;
                        };
                        if ch.chan.is_none() || c.rc.queued_to_next() == 0 {
                            break;
                        }
                        // Full, or others wait before it: the scheduler decides.
                        if ch.out_len() >= limit || ch.mux.has_waiting() {
                            ch.mux.wait(k, Side::ToNext, now);
                            if ch.out_len() < limit {
                                self.to_fill.insert(nc);
                            }
                            break;
                        }
                        let Some(m) = c.rc.poll_to_next() else {
                            break;
                        };
                        moved = true;
                        ch.mux.sent(k, Side::ToNext, now);
                        c.age_to_next.pop(1);
                        let destroy = matches!(m, ChanMsg::Destroy(_));
                        if let Some(chan) = ch.chan.as_mut() {
                            let _ = chan.send(nid, &m);
                        }
                        self.bodies.put_msg(m);
                        if destroy {
                            self.by_out.remove(&(nc, nid));
                            c.next = None;
                        }
                    }
                    None => {
                        let Some(m) = c.rc.poll_to_next() else {
                            break;
                        };
                        moved = true;
                        if matches!(m, ChanMsg::Destroy(_)) {
                            if let Some(w) = c.waiting_on.take() {
                                if let Some(wc) = self.conns.get_mut(&w) {
                                    wc.waiting.retain(|(x, _)| *x != k);
                                }
                            }
                        }
                    }
                }
            }
            // Toward the client.
            let (cc, cid) = c.client;
            match self.conns.get_mut(&cc) {
                Some(x) if x.chan.is_some() && self.by_in.contains_key(&(cc, cid)) => {
                    c.rc.set_client_channel_blocked(x.out_len() >= limit);
                    while c.rc.queued_to_client() > 0 {
                        // Full, or others wait before it: the scheduler decides.
                        if x.out_len() >= limit || x.mux.has_waiting() {
                            x.mux.wait(k, Side::ToClient, now);
                            if x.out_len() < limit {
                                self.to_fill.insert(cc);
                            }
                            break;
                        }
                        let Some(m) = c.rc.poll_to_client(&mut self.rng) else {
                            break;
                        };
                        moved = true;
                        x.mux.sent(k, Side::ToClient, now);
                        c.age_to_client.pop(1);
                        let destroy = matches!(m, ChanMsg::Destroy(_));
                        if let Some(chan) = x.chan.as_mut() {
                            let _ = chan.send(cid, &m);
                        }
                        self.bodies.put_msg(m);
                        if destroy {
                            self.by_in.remove(&(cc, cid));
                        }
                    }
                }
                _ => {
                    while c.rc.poll_to_client(&mut self.rng).is_some() {
                        moved = true;
                    }
                }
            }
            // Cells for the circuit joined to this one at the rendezvous point.
            if let HsPurpose::Joined(o) = c.hs {
                let mut joined = Vec::new();
                while let Some(b) = c.rc.poll_spliced() {
                    joined.push(b);
                }
                if !joined.is_empty() {
                    moved = true;
                    self.splice_to(k, o, joined);
                }
            }
            let Some(c) = self.circs.get_mut(&k) else {
                return;
            };
            // Exit streams waiting for window.
            if !c.streams.is_empty() {
                let hs: Vec<StreamHandle> = c.streams.iter().copied().collect();
                for h in hs {
                    moved |= self.flush_stream(h);
                }
            }
            let Some(c) = self.circs.get_mut(&k) else {
                return;
            };
            if !c.held || c.rc.is_closed() {
                if let Some(ev) = c.rc.poll_event() {
                    self.circ_event(k, ev);
                    continue;
                }
            }
            if moved {
                c.used = true;
                c.compacted = false;
                continue;
            }
            let done =
                c.rc.is_closed() && c.rc.queued_to_client() == 0 && c.rc.queued_to_next() == 0;
            if done {
                self.free_circ(k);
            } else {
                self.note_ages(k);
            }
            return;
        }
    }

    /// Give channel `conn`'s room to the circuits waiting for it, one cell at a time, the
    /// one with the fewest recently sent cells first ([`CircMux`], C tor's EWMA circuit
    /// scheduling), until it is full or none waits. The circuits that sent are stepped
    /// again afterwards (their events, their streams' data).
    fn mux_fill(&mut self, conn: ConnId) {
        let limit = self.cfg.limits.channel_outbound;
        let now = self.now;
        loop {
            let Some(x) = self.conns.get_mut(&conn) else {
                return;
            };
            if x.out_len() >= limit {
                return;
            }
            let Some((k, side)) = x.mux.first() else {
                return;
            };
            let Some(c) = self.circs.get_mut(&k) else {
                x.mux.remove(k);
                continue;
            };
            let msg = match side {
                Side::ToNext => match c.next {
                    Some((nc, nid)) if nc == conn => c.rc.poll_to_next().map(|m| (nid, m)),
                    _ => None,
                },
                Side::ToClient => {
                    if c.client.0 == conn && self.by_in.contains_key(&c.client) {
                        c.rc.poll_to_client(&mut self.rng).map(|m| (c.client.1, m))
                    } else {
                        None
                    }
                }
            };
            self.dirty.insert(k);
            let Some((id, m)) = msg else {
                x.mux.unwait(k, side);
                continue;
            };
            let destroy = matches!(m, ChanMsg::Destroy(_));
            if let Some(chan) = x.chan.as_mut() {
                let _ = chan.send(id, &m);
            }
            self.bodies.put_msg(m);
            x.mux.sent(k, side, now);
            let left = match side {
                Side::ToNext => {
                    c.age_to_next.pop(1);
                    if destroy {
                        self.by_out.remove(&(conn, id));
                        c.next = None;
                    }
                    c.rc.queued_to_next()
                }
                Side::ToClient => {
                    c.age_to_client.pop(1);
                    if destroy {
                        self.by_in.remove(&(conn, id));
                    }
                    c.rc.queued_to_client()
                }
            };
            if left == 0 || destroy {
                x.mux.unwait(k, side);
            }
        }
    }

    /// Stamp what circuit `k` queued since it was last seen with the current time.
    fn note_ages(&mut self, k: u64) {
        let streams = self.streams_queued(k);
        let now = self.now;
        if let Some(c) = self.circs.get_mut(&k) {
            c.age_to_client.sync(c.rc.queued_to_client(), now);
            c.age_to_next.sync(c.rc.queued_to_next(), now);
            c.age_streams.sync(streams, now);
        }
    }

    /// Bytes buffered in circuit `k`'s exit and directory streams.
    fn streams_queued(&self, k: u64) -> usize {
        self.circs.get(&k).map_or(0, |c| {
            c.streams
                .iter()
                .filter_map(|h| self.streams.get(h))
                .map(Exit::queued)
                .sum()
        })
    }

    /// How long circuit `k`'s oldest queued cell or stream byte has waited (C tor's
    /// `circuit_max_queued_item_age`: both cell queues and the streams' buffers).
    fn queued_age(&self, k: u64) -> Duration {
        let Some(c) = self.circs.get(&k) else {
            return Duration::ZERO;
        };
        [&c.age_to_client, &c.age_to_next, &c.age_streams]
            .into_iter()
            .filter_map(QueueAge::oldest)
            .min()
            .map_or(Duration::ZERO, |t| self.now - t)
    }

    fn circ_event(&mut self, k: u64, ev: RelayEvent) {
        match ev {
            RelayEvent::Extend(req) => self.extend(k, req),
            RelayEvent::Begin {
                stream, host, port, ..
            } => self.begin(k, stream, host, port),
            RelayEvent::BeginDir { stream } => self.begin_dir(k, stream),
            RelayEvent::Resolve { stream, query } => self.resolve(k, stream, query),
            RelayEvent::Stream(StreamEvent::Data { stream, data }) => {
                self.stream_data(k, stream, data)
            }
            RelayEvent::Stream(StreamEvent::Ended { stream, .. }) => self.client_ended(k, stream),
            RelayEvent::Closed { .. } => self.drop_streams(k),
            RelayEvent::Msg { stream, msg } => self.hs_msg(k, stream, *msg),
            _ => {}
        }
    }

    /// Remove circuit `k` (closed and drained).
    fn free_circ(&mut self, k: u64) {
        let Some(c) = self.circs.remove(&k) else {
            return;
        };
        if self.by_in.get(&c.client) == Some(&k) {
            self.by_in.remove(&c.client);
        }
        if let Some(n) = c.next {
            if self.by_out.get(&n) == Some(&k) {
                self.by_out.remove(&n);
            }
        }
        if let Some(w) = c.waiting_on {
            if let Some(wc) = self.conns.get_mut(&w) {
                wc.waiting.retain(|(x, _)| *x != k);
            }
        }
        for conn in [Some(c.client.0), c.next.map(|n| n.0)]
            .into_iter()
            .flatten()
        {
            if let Some(x) = self.conns.get_mut(&conn) {
                x.circs.remove(&k);
                x.mux.remove(k);
                // Forget circuits that no longer use this channel; none left: idle.
                let circs = &self.circs;
                x.circs.retain(|j| {
                    circs.get(j).is_some_and(|o| {
                        o.client.0 == conn
                            || o.next.is_some_and(|n| n.0 == conn)
                            || o.waiting_on == Some(conn)
                    })
                });
                if x.circs.is_empty() && x.open {
                    x.idle_since = Some(self.now);
                }
            }
        }
        for h in c.streams {
            self.forget_stream(h, true);
        }
        self.hs_circ_gone(k, c.hs);
    }

    /// Close circuit `k` now with DESTROY (`reason`) both ways (tor-spec §5.4), dropping
    /// its queued cells: the reaction of the queue and memory limits.
    fn kill_circ(&mut self, k: u64, reason: DestroyReason) {
        let Some(c) = self.circs.get(&k) else {
            return;
        };
        let (client, next) = (c.client, c.next);
        if self.by_in.get(&client) == Some(&k) {
            if let Some(ch) = self.conns.get_mut(&client.0).and_then(|x| x.chan.as_mut()) {
                let _ = ch.send(client.1, &ChanMsg::Destroy(reason));
            }
        }
        if let Some(n) = next {
            if let Some(ch) = self.conns.get_mut(&n.0).and_then(|x| x.chan.as_mut()) {
                let _ = ch.send(n.1, &ChanMsg::Destroy(DestroyReason::DESTROYED));
            }
        }
        self.free_circ(k);
    }

    /// Bytes circuit `k` holds: its cell queues and its streams' buffers.
    fn circ_queued(&self, k: u64) -> usize {
        let Some(c) = self.circs.get(&k) else {
            return 0;
        };
        let cells = (c.rc.queued_to_client() + c.rc.queued_to_next()) * CELL_BYTES;
        cells + c.rc.queued_event_bytes() + self.streams_queued(k)
    }

    /// The out-of-memory handler (dos-spec "Responding to low memory", C tor's
    /// `circuits_handle_oom`): above [`crate::Limits::max_queued_bytes`], close circuits
    /// until the total is below 90% of it, the one whose oldest queued cell or stream byte
    /// has waited longest first (a circuit that stopped draining long ago, not merely a
    /// busy one); equal ages, the one holding more first. Circuits holding nothing are
    /// left alone: closing them frees no queue (C tor would go on to them).
    fn check_memory(&mut self) {
        let max = self.cfg.limits.max_queued_bytes;
        let mut total = self.queued_bytes();
        if total <= max {
            return;
        }
        let goal = max / 10 * 9;
        let mut by_age: Vec<(Duration, usize, u64)> = self
            .circs
            .keys()
            .map(|k| (self.queued_age(*k), self.circ_queued(*k), *k))
            .filter(|(_, bytes, _)| *bytes > 0)
            .collect();
        by_age.sort_unstable_by(|a, b| b.cmp(a));
        for (_, bytes, k) in by_age {
            if total <= goal {
                break;
            }
            self.kill_circ(k, DestroyReason::RESOURCELIMIT);
            self.stats.circuits_killed_oom += 1;
            total = total.saturating_sub(bytes);
        }
    }
}

/// Stream ids on one circuit as the relay keys them.
fn skey(k: u64, s: StreamId) -> (u64, u16) {
    (k, s.get())
}
