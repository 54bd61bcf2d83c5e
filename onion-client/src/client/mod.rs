//! The client machine: [`Client`] owns the directory machine, the channels to relays, the
//! circuits through them and the application's streams, and is driven by its embedder in
//! the shape of every onion machine (inputs `handle_*` and commands; outputs `poll_*`).

mod config;
mod event;

use std::collections::VecDeque;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};

use crate::dir::{DirEvent, DirMachine, Directory};
use crate::{Error, Instant, Timestamp};

pub use config::{ClientConfig, Isolation, Limits, State};
pub use event::{ConnId, Event, Persist, ServiceHandle, StreamHandle};

/// The sans-IO Tor client (see the [crate documentation](crate) for its run loop).
///
/// Inputs: transport events ([`Client::handle_connected`], [`Client::handle_input`],
/// [`Client::handle_closed`]), time ([`Client::handle_timeout`]) and the application's
/// commands ([`Client::connect`], [`Client::resolve`], [`Client::write`], [`Client::read`],
/// [`Client::shutdown_write`], [`Client::close`]). Outputs: [`Client::poll_transmit`],
/// [`Client::poll_event`], [`Client::poll_timeout`]. After any input, drain both outputs
/// until `None`, then sleep until the timeout.
pub struct Client {
    cfg: ClientConfig,
    rng: ChaCha20Rng,
    now: Instant,
    /// The wall clock at `wall_at`: later wall times are extrapolated from the monotonic one.
    wall: Timestamp,
    wall_at: Instant,
    dir: DirMachine,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("now", &self.now)
            .field("bootstrapped", &self.is_bootstrapped())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`, starting from what an earlier run persisted (`state`, checked
    /// again at `wall`). `rng` is read once, to seed the client's own ChaCha20 generator:
    /// a run with the same seed and inputs is the same run.
    pub fn new(
        config: ClientConfig,
        state: State,
        now: Instant,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Client, Error> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let dir = DirMachine::new(config.dir.clone(), state.directory, now, wall, &mut rng)?;
        let mut c = Client {
            cfg: config,
            rng,
            now,
            wall,
            wall_at: now,
            dir,
            events: VecDeque::new(),
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

    /// The wall clock now, extrapolated from the last wall time given.
    fn wall_now(&self) -> Timestamp {
        let secs = self.now.saturating_duration_since(self.wall_at).as_secs();
        Timestamp(self.wall.0.saturating_add(secs))
    }

    fn see(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    // ---- transports ----

    /// The connection asked for by [`Event::Connect`] is up (TCP and TLS); `peer_cert_sha256`
    /// is SHA-256 of the DER certificate the relay presented in TLS, which its link
    /// certificate must certify (tor-spec §4.2).
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant, peer_cert_sha256: [u8; 32]) {
        self.see(now);
        let _ = (conn, peer_cert_sha256);
    }

    /// Bytes (TLS plaintext) arrived on `conn`.
    pub fn handle_input(&mut self, conn: ConnId, now: Instant, bytes: &[u8]) {
        self.see(now);
        let _ = (conn, bytes);
    }

    /// `conn` closed, or could not be opened.
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) {
        self.see(now);
        let _ = conn;
    }

    /// Time passed: deadlines up to `now` fire, a directory refresh that is due starts.
    /// `wall` is the wall clock now (it corrects the extrapolation).
    pub fn handle_timeout(&mut self, now: Instant, wall: Timestamp) {
        self.see(now);
        self.wall = wall;
        self.wall_at = self.now;
        let wall = self.wall_now();
        self.dir.handle_timeout(self.now, wall, &mut self.rng);
        self.drive_dir();
    }

    // ---- commands ----

    /// Open a stream to `host:port` through an exit whose policy allows `port`, on a circuit
    /// that carries only streams of `isolation`. [`Event::StreamOpened`] or
    /// [`Event::StreamClosed`] follows.
    pub fn connect(
        &mut self,
        host: &str,
        port: u16,
        isolation: Isolation,
        now: Instant,
    ) -> Result<StreamHandle, Error> {
        self.see(now);
        let _ = (host, port, isolation);
        Err(Error::Unsupported(
            "exit streams are not implemented yet".into(),
        ))
    }

    /// Ask an exit to resolve `name` (tor-spec §6.4). [`Event::Resolved`] follows.
    pub fn resolve(
        &mut self,
        name: &str,
        isolation: Isolation,
        now: Instant,
    ) -> Result<StreamHandle, Error> {
        self.see(now);
        let _ = (name, isolation);
        Err(Error::Unsupported("resolve is not implemented yet".into()))
    }

    /// Queue bytes on an open stream. Returns how many were taken: at most what the
    /// stream's and circuit's windows allow (tor-spec §7.3, §7.4); 0 means wait for
    /// [`Event::StreamWritable`].
    pub fn write(&mut self, s: StreamHandle, data: &[u8], now: Instant) -> Result<usize, Error> {
        self.see(now);
        let _ = (s, data);
        Err(Error::Misuse("no such stream"))
    }

    /// Take received bytes: `Some(n)` bytes copied, `Some(0)` the end of the stream (or an
    /// empty `buf`), `None` nothing yet (wait for [`Event::StreamReadable`]).
    pub fn read(
        &mut self,
        s: StreamHandle,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<Option<usize>, Error> {
        self.see(now);
        let _ = (s, buf);
        Err(Error::Misuse("no such stream"))
    }

    /// Half-close: no more writes.
    pub fn shutdown_write(&mut self, s: StreamHandle, now: Instant) -> Result<(), Error> {
        self.see(now);
        let _ = s;
        Err(Error::Misuse("no such stream"))
    }

    /// Close the stream (RELAY_END), forgetting what was not read. No event follows.
    pub fn close(&mut self, s: StreamHandle, now: Instant) {
        self.see(now);
        let _ = s;
    }

    // ---- outputs ----

    /// Append bytes to send on one connection to `out` and return it, or `None` when no
    /// connection has anything to send.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<ConnId> {
        self.see(now);
        let _ = out;
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dir.poll_timeout()
    }

    /// Move the directory machine's events into the client's.
    fn drive_dir(&mut self) {
        while let Some(ev) = self.dir.poll_event() {
            let ev = match ev {
                DirEvent::Progress { percent, what } => Event::Bootstrap { percent, what },
                DirEvent::Directory(d) => Event::DirectoryChanged(d),
                DirEvent::Persist {
                    kind,
                    text,
                    keep_until,
                } => Event::Persist(Persist::Directory {
                    kind,
                    text,
                    keep_until,
                }),
                DirEvent::Failed(e) => Event::DirectoryFailed(e),
            };
            self.events.push_back(ev);
        }
    }
}
