//! The client machine: [`Client`] owns the directory machine, the channels to relays, the
//! circuits through them and the application's streams, and is driven by its embedder in
//! the shape of every onion machine (inputs `handle_*` and commands; outputs `poll_*`).
//!
//! | part | file | spec |
//! |---|---|---|
//! | channels: one per relay, shared; connect and idle timeouts; backpressure | `chan.rs` | tor-spec §2, §4 |
//! | circuits: builds in flight, retries, dirtiness, isolation, purposes | `circ.rs` | tor-spec §5, path-spec §2 |
//! | streams: begin, windows toward the application, END reasons | `stream.rs` | tor-spec §6, §7.4 |
//! | directory requests over BEGIN_DIR | `dirconn.rs` | tor-spec §6.2.1, dir-spec §5 |

mod chan;
mod circ;
mod config;
mod dirconn;
mod event;
mod onion;
mod preempt;
mod stream;
mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_cell::CircId;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};

use crate::dir::{DirMachine, Directory};
use crate::guards::{Guards, GuardsConfig, GuardsEvent};
use crate::predict::PredictedPorts;
use crate::timeout::BuildTimes;
use crate::{Error, Instant, Timestamp};

pub use chan::PaddingStats;
pub use circ::{msg_verdict, Purpose, Verdict};
pub use config::{ClientConfig, Isolation, Limits, State};
pub use event::{ConnId, Event, Persist, ServiceHandle, StreamHandle};
pub use view::{CcView, CircuitView, HopView};

use chan::Chan;
use circ::Circ;
use stream::{Phase, Stream, Target};

/// How long a one-hop directory circuit without streams is kept for the next request.
const DIR_CIRCUIT_IDLE: Duration = Duration::from_secs(60);
/// How long a built exit circuit that never carried a stream is kept (C tor's
/// `CircuitsAvailableTimeout` default, one hour).
const CLEAN_CIRCUIT_IDLE: Duration = Duration::from_secs(3600);
/// Circuit attempts per stream before it fails (C tor tries a stream on new circuits until
/// its SOCKS timeout; three paths cover a relay that is down and one more).
const STREAM_ATTEMPTS: u8 = 3;

/// The sans-IO Tor client (see the [crate documentation](crate) for its run loop).
///
/// Inputs: transport events ([`Client::handle_connected`], [`Client::handle_input`],
/// [`Client::handle_closed`]), time ([`Client::handle_timeout`]) and the application's
/// commands ([`Client::connect`], [`Client::resolve`], [`Client::write`], [`Client::read`],
/// [`Client::shutdown_write`], [`Client::close`]). Outputs: [`Client::poll_transmit`],
/// [`Client::poll_event`], [`Client::poll_timeout`]. After any input, drain both outputs
/// until `None`, then sleep until the timeout.
///
/// # Limits
///
/// Every collection is bounded by [`Limits`]: channels, connects in flight, circuits,
/// builds in flight, streams per circuit and in all, bytes per stream for the application,
/// bytes per channel toward and from the embedder. A command past a limit fails with an
/// error of kind [`crate::ErrorKind::Resource`]; a circuit that cannot be built for want
/// of room is built later, while its stream waits (within its deadline).
pub struct Client {
    cfg: ClientConfig,
    rng: ChaCha20Rng,
    now: Instant,
    /// The wall clock at `wall_at`: later wall times are extrapolated from the monotonic one.
    wall: Timestamp,
    wall_at: Instant,
    dir: DirMachine,
    guards: Guards,
    /// Circuit build times and the timeout learned from them (path-spec §2.4).
    build_times: BuildTimes,
    /// Congestion control for exit circuits, from the directory in use.
    cc: Option<onion_circuit::cc::CcConfig>,
    chans: BTreeMap<ConnId, Chan>,
    circs: BTreeMap<u64, Circ>,
    /// Circuit by channel and circuit id, for incoming cells.
    by_id: HashMap<(ConnId, CircId), u64>,
    streams: BTreeMap<u64, Stream>,
    events: VecDeque<Event>,
    next_conn: u64,
    next_circ: u64,
    next_stream: u64,
    /// The connection `poll_transmit` served last (connections take turns).
    tx_last: Option<ConnId>,
    /// Input waits in connections' buffers because the event queue was full.
    input_held: bool,
    /// Onion services: the client and host sub-machines and their links (`onion.rs`).
    hs: onion::HsLinks,
    /// The ports and onion-service use predicted from recent streams, for circuits built
    /// ahead of need (path-spec §2.1.1, `preempt.rs`).
    predict: PredictedPorts,
    /// When predictions are looked at next.
    predict_at: Instant,
    /// Channel padding from the consensus (padding-spec §2.6).
    padding: chan::PaddingParams,
    /// Exits that refused every stream (END HIBERNATING or RESOURCELIMIT), oldest first, at
    /// most [`stream::MAX_REFUSING_EXITS`]: no stream uses them any more.
    refusing_exits: VecDeque<onion_dir::RsaIdentity>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("now", &self.now)
            .field("bootstrapped", &self.is_bootstrapped())
            .field("channels", &self.chans.len())
            .field("circuits", &self.circs.len())
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`, starting from what an earlier run persisted (`state`, checked
    /// again at `wall`). `rng` is read once, to seed the client's own ChaCha20 generator:
    /// a run with the same seed and inputs is the same run.
    ///
    /// Errors with kind [`crate::ErrorKind::Misuse`] for a configuration the directory
    /// machine refuses (no authority) or a zero limit.
    pub fn new(
        config: ClientConfig,
        state: State,
        now: Instant,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Client, Error> {
        let l = &config.limits;
        if l.max_channels == 0
            || l.max_connecting == 0
            || l.max_circuits == 0
            || l.max_building == 0
            || l.max_streams_per_circuit == 0
            || l.max_streams == 0
            || l.stream_recv_buffer == 0
            || l.channel_outbound == 0
        {
            return Err(Error::Misuse("every limit must be positive"));
        }
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let dir = DirMachine::new(
            config.dir.clone(),
            state.directory.clone(),
            now,
            wall,
            &mut rng,
        )?;
        let gcfg = GuardsConfig {
            path: config.path.clone(),
            ..GuardsConfig::default()
        };
        // A guard state that does not parse is replaced by a fresh sample (guards.rs).
        let (guards, _bad_state) = Guards::new(state.guards.as_deref(), gcfg);
        let no_params = std::iter::empty::<(&str, i64)>();
        let build_times = match &state.build_times {
            // A history that does not parse is dropped for an empty one: the timeout is
            // learned again.
            Some(text) => BuildTimes::from_state(no_params.clone(), text, &mut rng)
                .unwrap_or_else(|_| BuildTimes::new(no_params)),
            None => BuildTimes::new(no_params),
        };
        let hs = onion::HsLinks::new(&config, now, wall);
        let predict = PredictedPorts::new(now, &mut rng);
        let mut c = Client {
            cfg: config,
            rng,
            now,
            wall,
            wall_at: now,
            dir,
            guards,
            build_times,
            cc: None,
            chans: BTreeMap::new(),
            circs: BTreeMap::new(),
            by_id: HashMap::new(),
            streams: BTreeMap::new(),
            events: VecDeque::new(),
            next_conn: 0,
            next_circ: 0,
            next_stream: 0,
            tx_last: None,
            input_held: false,
            hs,
            predict,
            predict_at: now,
            padding: chan::PaddingParams::default(),
            refusing_exits: VecDeque::new(),
        };
        c.drive_dir();
        Ok(c)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The verified directory in use, if bootstrap got one.
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.dir.directory()
    }

    /// Whether a directory is in use, so circuits can be built.
    pub fn is_bootstrapped(&self) -> bool {
        self.dir.directory().is_some()
    }

    /// Use `directory`, verified elsewhere, as if bootstrap had fetched it, and refresh it
    /// from then on as usual (a refresh starts at once). For simulations and tests whose relays are synthetic (a
    /// [`Directory::from_consensus`] of documents they made): an embedder on a real network
    /// lets the client fetch and verify its directory. Errors with [`Error::Misuse`] when
    /// the directory's mode is not the configured one.
    pub fn adopt_directory(
        &mut self,
        directory: Arc<Directory>,
        now: Instant,
    ) -> Result<(), Error> {
        self.see(now);
        let wall = self.wall_now();
        let cfg = self.cfg.dir.clone();
        // It starts refreshing at once, as a machine made for a refresh does.
        self.dir = DirMachine::refreshing(cfg, directory.clone(), self.now, wall, &mut self.rng)?;
        self.new_directory(&directory);
        self.emit(Event::DirectoryChanged(directory));
        self.settle();
        Ok(())
    }

    /// A new directory is in use: the guard module, the build-time parameters and the
    /// congestion-control parameters follow it.
    fn new_directory(&mut self, d: &Arc<Directory>) {
        self.cc = d.congestion_control(onion_dir::ccparams::CcPath::Exit);
        self.build_times.set_params(d.param_entries());
        self.predict.set_params(d.param_entries());
        self.padding = chan::PaddingParams::from_entries(d.param_entries());
        let wall = self.wall_now();
        self.guards.on_directory(d, wall, &mut self.rng);
    }

    /// Channels, circuits and streams held now (for reports and memory tests).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.chans.len(), self.circs.len(), self.streams.len())
    }

    /// The wall clock now, extrapolated from the last wall time given.
    fn wall_now(&self) -> Timestamp {
        let secs = self.now.saturating_duration_since(self.wall_at).as_secs();
        Timestamp(self.wall.0.saturating_add(secs))
    }

    fn see(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Work that follows every input: streams find circuits, the directory machine's
    /// requests are carried, writable streams are told.
    fn settle(&mut self) {
        self.drive_hs();
        self.drive_dir();
        self.attach_streams();
        self.drive_dir();
        self.preempt();
        self.tell_writable();
        self.guard_events();
        if let Some(text) = self.build_times.take_changed() {
            self.emit(Event::Persist(Persist::BuildTimes(text)));
        }
        if let Some(text) = self.guards.poll_persist() {
            self.emit(Event::Persist(Persist::Guards(text)));
        }
    }

    /// Act on the guard module's verdicts on circuits waiting for a better guard
    /// (guard-spec §4.9).
    fn guard_events(&mut self) {
        while let Some(ev) = self.guards.poll_event() {
            let (GuardsEvent::Usable(t) | GuardsEvent::Abandon(t)) = ev;
            let Some(key) = self
                .circs
                .iter()
                .find(|(_, c)| c.ticket == Some(t))
                .map(|(k, _)| *k)
            else {
                continue;
            };
            match ev {
                GuardsEvent::Usable(_) => {
                    if let Some(c) = self.circs.get_mut(&key) {
                        if c.phase == circ::CircPhase::Waiting {
                            c.phase = circ::CircPhase::Open;
                        }
                    }
                }
                GuardsEvent::Abandon(_) => self.close_circ(key),
            }
        }
        self.attach_streams();
    }

    /// The monotonic time of wall-clock time `t` (extrapolated).
    fn instant_of(&self, t: Timestamp) -> Instant {
        self.now + Duration::from_secs(t.0.saturating_sub(self.wall_now().0))
    }

    // ---- transports ----

    /// The connection asked for by [`Event::Connect`] is up (TCP and TLS); `peer_cert_sha256`
    /// is SHA-256 of the DER certificate the relay presented in TLS, which its link
    /// certificate must certify (tor-spec §4.2). The link handshake starts (VERSIONS is
    /// queued for [`Client::poll_transmit`]). An unknown or already connected `conn` is
    /// ignored.
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant, peer_cert_sha256: [u8; 32]) {
        self.see(now);
        let wall = self.wall_now();
        if let Some(c) = self.chans.get_mut(&conn) {
            if c.channel.is_none() {
                c.start(self.now, wall, peer_cert_sha256);
            }
        }
        self.settle();
    }

    /// Bytes (TLS plaintext) arrived on `conn`. More than [`Limits::channel_inbound`] bytes
    /// the channel could not take yet close the connection (a peer that floods). Bytes for an
    /// unknown connection, or before [`Client::handle_connected`], are ignored.
    pub fn handle_input(&mut self, conn: ConnId, now: Instant, bytes: &[u8]) {
        self.see(now);
        self.chan_input(conn, bytes);
        self.settle();
    }

    /// `conn` closed, or could not be opened: its circuits fail, their streams are retried
    /// on other circuits or end.
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) {
        self.see(now);
        self.chan_closed(conn, false);
        self.settle();
    }

    /// The embedder's connection `conn` cannot take more bytes (`true`: its socket's send
    /// buffer is full), or can again (`false`). While blocked, [`Client::poll_transmit`]
    /// gives nothing for it, and its circuits' cells stay in the circuits (whose windows
    /// bound them, tor-spec §7.3): nothing is dropped and the embedder need not buffer more
    /// than one `poll_transmit` worth. Unknown connections are ignored.
    pub fn set_blocked(&mut self, conn: ConnId, blocked: bool) {
        if let Some(c) = self.chans.get_mut(&conn) {
            c.blocked = blocked;
        }
    }

    /// Time passed: deadlines up to `now` fire (connects, link handshakes, circuit builds,
    /// streams waiting for a circuit or a CONNECTED, directory requests), idle channels and
    /// circuits close, and a directory refresh that is due starts. `wall` is the wall clock
    /// now (it corrects the extrapolation).
    pub fn handle_timeout(&mut self, now: Instant, wall: Timestamp) {
        self.see(now);
        self.wall = wall;
        self.wall_at = self.now;
        let wall = self.wall_now();
        self.dir.handle_timeout(self.now, wall, &mut self.rng);
        self.guards.handle_timeout(wall);
        if self.input_held && self.events.len() < self.cfg.limits.max_events {
            self.input_held = false;
            let waiting: Vec<ConnId> = self
                .chans
                .iter()
                .filter(|(_, c)| !c.inbuf.is_empty())
                .map(|(k, _)| *k)
                .collect();
            for conn in waiting {
                self.pump_chan(conn);
            }
        }
        self.chan_timeouts();
        self.circ_timeouts();
        self.stream_timeouts();
        self.hs_timeout();
        self.settle();
    }

    // ---- commands ----

    /// Open a stream to `host:port` (a hostname or an IP address, resolved by the exit)
    /// through an exit whose policy allows `port`, on a circuit that carries only streams of
    /// `isolation`. [`Event::StreamOpened`] or [`Event::StreamClosed`] follows. Before
    /// bootstrap the stream waits for the directory.
    ///
    /// Errors: [`Error::Resource`] when [`Limits::max_streams`] streams exist;
    /// [`Error::Misuse`] for an empty host, one longer than 255 bytes or with a NUL, or port 0.
    pub fn connect(
        &mut self,
        host: &str,
        port: u16,
        isolation: Isolation,
        now: Instant,
    ) -> Result<StreamHandle, Error> {
        self.connect_inner(host, port, isolation, None, now)
    }

    /// Open a stream to `host:port` through the exit `exit` (path-spec §2.2.2, as C tor's
    /// `ExitNodes` with one relay and `StrictNodes`): its circuit ends at that relay whatever
    /// the relay's exit policy (summary) says, since only the exit itself decides; the guard
    /// and middle avoid the exit, its family and its /16. Circuits to a named exit carry
    /// only streams of `isolation` that name the same exit, and streams that name none never
    /// use them. A stream retried after a failure keeps its exit (only guard and middle
    /// change). Otherwise as [`Client::connect`].
    ///
    /// Errors as [`Client::connect`], and [`Error::Misuse`] for a `.onion` host (an onion
    /// service is not reached through an exit). An exit the directory does not list (with
    /// the Running and Valid flags) ends the stream with [`Error::NoPath`]
    /// ([`Event::StreamClosed`]).
    pub fn connect_via(
        &mut self,
        host: &str,
        port: u16,
        isolation: Isolation,
        exit: onion_dir::RsaIdentity,
        now: Instant,
    ) -> Result<StreamHandle, Error> {
        if crate::hs::is_onion(host) {
            return Err(Error::Misuse(
                "an onion service is not reached through a named exit",
            ));
        }
        self.connect_inner(host, port, isolation, Some(exit), now)
    }

    fn connect_inner(
        &mut self,
        host: &str,
        port: u16,
        isolation: Isolation,
        exit: Option<onion_dir::RsaIdentity>,
        now: Instant,
    ) -> Result<StreamHandle, Error> {
        self.see(now);
        if host.is_empty() || host.len() > 255 || host.contains('\0') || port == 0 {
            return Err(Error::Misuse(
                "host must be 1 to 255 bytes without NUL, port non-zero",
            ));
        }
        let target = Target::Exit {
            host: host.into(),
            port,
        };
        let h = self.new_stream(target, isolation)?;
        if let Some(s) = self.streams.get_mut(&h.0) {
            s.exit = exit;
        }
        match crate::hs::is_onion(host) {
            true => self.predict_internal(port),
            false => self.predict_port(port),
        }
        self.settle();
        Ok(h)
    }

    /// Ask an exit to resolve `name` (tor-spec §6.4). [`Event::Resolved`] follows.
    ///
    /// Errors as [`Client::connect`].
    pub fn resolve(
        &mut self,
        name: &str,
        isolation: Isolation,
        now: Instant,
    ) -> Result<StreamHandle, Error> {
        self.see(now);
        if name.is_empty() || name.len() > 255 || name.contains('\0') {
            return Err(Error::Misuse("name must be 1 to 255 bytes without NUL"));
        }
        let h = self.new_stream(Target::Resolve { name: name.into() }, isolation)?;
        self.predict_resolve();
        self.settle();
        Ok(h)
    }

    fn new_stream(&mut self, target: Target, isolation: Isolation) -> Result<StreamHandle, Error> {
        if self.streams.len() >= self.cfg.limits.max_streams {
            return Err(Error::Resource("too many streams (Limits::max_streams)"));
        }
        let deadline = self.now + self.cfg.stream_timeout + self.cfg.build_timeout;
        let h = self.next_stream;
        self.next_stream += 1;
        self.streams
            .insert(h, Stream::new(target, isolation, deadline));
        Ok(StreamHandle(h))
    }

    /// Queue bytes on an open stream. Returns how many were taken: at most what the
    /// stream's and circuit's windows allow (tor-spec §7.3, §7.4, or the congestion window,
    /// proposal 324); 0 means wait for [`Event::StreamWritable`].
    ///
    /// Errors: [`Error::Misuse`] for an unknown stream, one not open yet, or one after
    /// [`Client::shutdown_write`]; the stream's end error once it ended.
    pub fn write(&mut self, s: StreamHandle, data: &[u8], now: Instant) -> Result<usize, Error> {
        self.see(now);
        let st = self
            .streams
            .get_mut(&s.0)
            .ok_or(Error::Misuse("no such stream"))?;
        if let Some(end) = &st.end {
            return Err(end
                .as_deref()
                .cloned()
                .unwrap_or(Error::Misuse("the stream has ended")));
        }
        if st.phase != Phase::Open || st.write_closed || !matches!(st.target, Target::Exit { .. }) {
            return Err(Error::Misuse("the stream is not open for writing"));
        }
        let (Some(key), Some(id)) = (st.circ, st.id) else {
            return Err(Error::Misuse("the stream is not open for writing"));
        };
        let Some(circ) = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut()) else {
            return Err(Error::Misuse("the stream is not open for writing"));
        };
        let n = circ.send(id, data).map_err(Error::Circuit)?;
        if n < data.len() {
            st.want_writable = true;
        }
        Ok(n)
    }

    /// Take received bytes: `Ok(Some(n))` bytes copied, `Ok(Some(0))` the clean end of the
    /// stream, `Ok(None)` nothing yet (wait for [`Event::StreamReadable`]). A stream that
    /// ended with an error gives its bytes received before the end first, then `Err` with
    /// the error its [`Event::StreamClosed`] carried (an END reason as
    /// [`Error::StreamEnded`], a lost circuit as `StreamEnded(DESTROY)`, and so on): the
    /// ending always arrives through `read`, whether or not the event was looked at. After
    /// the end or the error the handle is forgotten (later calls: [`Error::Misuse`]). An
    /// empty `buf` gives `Ok(Some(0))` and changes nothing.
    ///
    /// Reading below half of [`Limits::stream_recv_buffer`] releases a stream held because
    /// its buffer was full (its SENDMEs or XON go out).
    pub fn read(
        &mut self,
        s: StreamHandle,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<Option<usize>, Error> {
        self.see(now);
        let st = self
            .streams
            .get_mut(&s.0)
            .ok_or(Error::Misuse("no such stream"))?;
        st.readable_told = false;
        if buf.is_empty() {
            return Ok(Some(0));
        }
        let n = st.take(buf);
        if n > 0 {
            if st.held && st.buffered() <= self.cfg.limits.stream_recv_buffer / 2 {
                st.held = false;
                if let (Some(key), Some(id)) = (st.circ, st.id) {
                    if let Some(c) = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut()) {
                        c.hold_stream(id, false);
                    }
                }
            }
            return Ok(Some(n));
        }
        match st.end.clone() {
            None => Ok(None),
            Some(end) => {
                self.streams.remove(&s.0);
                match end {
                    None => Ok(Some(0)),
                    Some(e) => Err(*e),
                }
            }
        }
    }

    /// Half-close: the application will write no more. Tor's relay protocol has no
    /// half-close (tor-spec §6.3: RELAY_END ends both directions), so nothing is sent, as C
    /// tor sends nothing when a SOCKS client half-closes: later writes fail with
    /// [`Error::Misuse`], and reading goes on until the exit ends the stream.
    pub fn shutdown_write(&mut self, s: StreamHandle, now: Instant) -> Result<(), Error> {
        self.see(now);
        let st = self
            .streams
            .get_mut(&s.0)
            .ok_or(Error::Misuse("no such stream"))?;
        st.write_closed = true;
        Ok(())
    }

    /// Close the stream: RELAY_END if it is open or connecting, and forget it and what was
    /// not read. No event follows. An unknown handle is ignored.
    ///
    /// The END's reason is MISC for a stream this client opened (tor-spec §6.3: an OP sends
    /// no other reason for its own streams; C tor rewrites even its normal-close DONE to
    /// MISC on client circuits) and DONE for a hosted onion service's incoming stream (the
    /// service is its stream's edge, and C tor's service ends a stream closed normally with
    /// DONE).
    pub fn close(&mut self, s: StreamHandle, now: Instant) {
        self.see(now);
        self.drop_stream(s.0, true);
        self.settle();
    }

    // ---- outputs ----

    /// Append bytes to send on one connection to `out` and return it, or `None` when no
    /// connection has anything to send. Connections take turns; on each, the circuits with
    /// cells take turns one cell at a time, and cells are taken from circuits only while
    /// the channel holds less than [`Limits::channel_outbound`] bytes. A connection the
    /// embedder cannot write ([`Client::set_blocked`]) is skipped and holds its circuits
    /// back (nothing is dropped).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<ConnId> {
        self.see(now);
        let conns: Vec<ConnId> = {
            let after = self.tx_last;
            let (later, first): (Vec<ConnId>, Vec<ConnId>) = self
                .chans
                .keys()
                .copied()
                .partition(|c| after.is_some_and(|a| *c > a));
            later.into_iter().chain(first).collect()
        };
        for conn in conns {
            if self.chans.get(&conn).map_or(true, |c| c.blocked) {
                continue;
            }
            self.fill_channel(conn);
            let Some(ch) = self.chans.get_mut(&conn).and_then(|c| c.channel.as_mut()) else {
                continue;
            };
            // The channel swaps its buffer with an empty `out`: give it a fresh one, so that
            // an idle channel does not keep the capacity of the embedder's largest write.
            let mut fresh = Vec::new();
            if ch.poll_transmit(&mut fresh).is_some() {
                if out.is_empty() {
                    std::mem::swap(out, &mut fresh);
                } else {
                    out.append(&mut fresh);
                }
                self.tx_last = Some(conn);
                self.chan_xfer(conn);
                return Some(conn);
            }
        }
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > 64 {
            // A burst (a thousand streams opening) leaves no standing allocation behind.
            self.events = VecDeque::new();
        }
        e
    }

    /// When [`Client::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.input_held && self.events.len() < self.cfg.limits.max_events {
            return Some(self.now);
        }
        let mut t = self.dir.poll_timeout();
        if let Some(g) = self.guards.poll_timeout() {
            let g = self.instant_of(g);
            t = Some(t.map_or(g, |t| t.min(g)));
        }
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for c in self.chans.values() {
            at(c.deadline);
            at(c.idle_close);
            at(c.pad_at);
            at(c.channel.as_ref().and_then(|ch| ch.poll_timeout()));
        }
        at(self.hs_poll_timeout());
        at(self.predict_timeout());
        for c in self.circs.values() {
            at(c.circ.as_ref().and_then(|x| x.poll_timeout()));
            at(self.circ_deadline(c));
        }
        for s in self.streams.values() {
            if let Phase::Waiting { deadline } = s.phase {
                at(Some(deadline));
            }
            if let (Phase::Connecting { deadline }, false) =
                (s.phase, matches!(s.target, Target::Dir { .. }))
            {
                at(Some(deadline));
            }
            if let Target::Dir { deadline, .. } = s.target {
                at(Some(deadline));
            }
        }
        t
    }

    /// Queue an event for the embedder.
    fn emit(&mut self, e: Event) {
        self.events.push_back(e);
    }
}

/// The END reason of a stream's end as the application sees it: `None` for DONE.
fn end_error(reason: EndReason) -> Option<Error> {
    (reason != EndReason::DONE).then_some(Error::StreamEnded(reason))
}

#[cfg(test)]
mod tests;
