//! The embedder's run loop for `onion_client::Client` on a [`World`]: what a real embedder
//! does with sockets, a clock and files, done with simulated connections, virtual time and
//! memory.
//!
//! * [`Event::Connect`] opens a connection to the address ([`World::connect`]); when TCP and
//!   TLS are up the client gets [`Client::handle_connected`] with the relay's TLS-certificate
//!   digest (as a real embedder reads it from its TLS library), or
//!   [`Client::handle_closed`] if the connection failed;
//! * bytes move both ways through [`Client::poll_transmit`] and [`Client::handle_input`];
//!   [`Event::Disconnect`] closes the connection after what was given for it is sent;
//! * timers: [`Client::poll_timeout`] and [`Client::handle_timeout`] with the virtual
//!   monotonic clock and the matching wall clock;
//! * [`Event::Persist`] is kept in memory ([`Persisted`]) and handed back as
//!   [`State`] when a client is started again ([`Sim::restart`]);
//! * every other event goes to the application side: [`Fetches`], which writes HTTP
//!   requests on opened streams, reads the responses and checks their bodies' SHA-256.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use sha2::{Digest, Sha256};

use onion_circuit::Instant;
use onion_client::dir::{Cached, DirConfig, DirMode, DocKind};
use onion_client::{
    Client, ClientConfig, ConnId, Event, Isolation, Persist, ServiceHandle, State, StreamHandle,
};

use crate::circuit::web::WebConn;

use super::world::{LinkId, NetEvent, World, WorldConfig};
use crate::circuit::{SimError, WEB_HOST};

/// What the client handed over for storage, as a real embedder's data directory would keep
/// it.
#[derive(Debug, Clone, Default)]
pub struct Persisted {
    /// The directory documents, by kind.
    pub directory: Cached,
    /// The guard state.
    pub guards: Option<String>,
    /// The circuit build times.
    pub build_times: Option<String>,
    /// How many times something was handed over.
    pub writes: usize,
}

impl Persisted {
    /// The state to start a client with.
    pub fn state(&self) -> State {
        let mut s = State::default();
        s.directory = self.directory.clone();
        s.guards = self.guards.clone();
        s.build_times = self.build_times.clone();
        s
    }

    fn store(&mut self, p: Persist) {
        self.writes += 1;
        match p {
            Persist::Directory { kind, text, .. } => match kind {
                DocKind::Consensus => self.directory.consensus = Some(text),
                DocKind::Certificates => self.directory.certificates = Some(text),
                _ => self.directory.descriptors = Some(text),
            },
            Persist::Guards(g) => self.guards = Some(g),
            Persist::BuildTimes(b) => self.build_times = Some(b),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

/// How one HTTP fetch through the client ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// The whole body arrived and its SHA-256 is the web server's.
    Ok,
    /// The stream ended with an error (its kind and text).
    Failed(String),
    /// The stream ended cleanly but the body was wrong (short, or another SHA-256).
    BadBody(String),
}

/// One HTTP fetch: `GET /<size>` from the web server through the client.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// The stream.
    pub stream: StreamHandle,
    /// The body size asked for.
    pub size: u64,
    request: Vec<u8>,
    written: usize,
    head: Vec<u8>,
    head_done: bool,
    body: Sha256,
    /// Body bytes received.
    pub body_len: u64,
    /// The fetch is done when `size` body bytes arrived (an onion service's stream, which
    /// its host cannot end with reason DONE), instead of at a clean end of the stream.
    complete_on_length: bool,
    /// When the fetch started.
    pub started: Instant,
    /// When the stream opened.
    pub opened: Option<Instant>,
    /// When it ended.
    pub ended: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
    /// The circuit carrying it when it opened ([`Client::stream_circuit`]: path, handshakes,
    /// congestion control).
    pub circuit_opened: Option<onion_client::CircuitView>,
    /// The same when it ended, before it was read out ([`Sim::watch_circuits`] keeps the
    /// view of the last read): the circuit's flow-control counters and congestion window at
    /// the end of the transfer.
    pub circuit_ended: Option<onion_client::CircuitView>,
}

/// The application side: fetches in progress and done, and the events it saw.
#[derive(Debug, Default)]
pub struct Fetches {
    /// Every fetch started, in order.
    pub all: Vec<Fetch>,
    by_stream: HashMap<StreamHandle, usize>,
    /// SHA-256 of the web server's body of each size, computed once.
    expected: BTreeMap<u64, [u8; 32]>,
    buf: Vec<u8>,
}

impl Fetches {
    /// Fetches that ended.
    pub fn finished(&self) -> usize {
        self.all
            .iter()
            .filter(|f| f.outcome != Outcome::Running)
            .count()
    }

    /// Fetches that ended well.
    pub fn ok(&self) -> usize {
        self.all.iter().filter(|f| f.outcome == Outcome::Ok).count()
    }

    fn get(&mut self, s: StreamHandle) -> Option<&mut Fetch> {
        let i = *self.by_stream.get(&s)?;
        self.all.get_mut(i)
    }

    fn write_more(client: &mut Client, f: &mut Fetch, now: Instant) {
        while f.written < f.request.len() {
            match client.write(f.stream, &f.request[f.written..], now) {
                Ok(0) => return,
                Ok(n) => f.written += n,
                Err(e) => {
                    f.outcome = Outcome::Failed(format!("write: {e} ({:?})", e.kind()));
                    f.ended = Some(now);
                    return;
                }
            }
        }
    }

    fn read_all(&mut self, client: &mut Client, s: StreamHandle, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(64 * 1024, 0);
        let expected = self.expected.clone();
        if let Some(f) = self.get(s) {
            loop {
                match client.read(s, &mut buf, now) {
                    Ok(Some(0)) => {
                        f.finish(&expected, now, None);
                        break;
                    }
                    Ok(Some(n)) => {
                        f.take(&buf[..n]);
                        if f.complete_on_length && f.head_done && f.body_len >= f.size {
                            f.finish(&expected, now, None);
                            client.close(s, now);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        f.finish(&expected, now, Some(format!("read: {e} ({:?})", e.kind())));
                        break;
                    }
                }
            }
        }
        self.buf = buf;
    }
}

impl Fetch {
    /// The response's status line (empty until the head arrived).
    pub fn status_line(&self) -> String {
        let end = self
            .head
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(if self.head_done { self.head.len() } else { 0 });
        String::from_utf8_lossy(&self.head[..end]).into_owned()
    }

    /// Whether the response's head arrived.
    pub fn head_done(&self) -> bool {
        self.head_done
    }

    fn take(&mut self, mut bytes: &[u8]) {
        if !self.head_done {
            let room = 16 * 1024usize.saturating_sub(self.head.len());
            let n = bytes.len().min(room);
            self.head.extend_from_slice(&bytes[..n]);
            if let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                self.head_done = true;
                let rest = self.head.split_off(end + 4);
                self.body_len += rest.len() as u64;
                self.body.update(&rest);
            }
            bytes = &bytes[n..];
            if !self.head_done {
                return;
            }
        }
        self.body_len += bytes.len() as u64;
        self.body.update(bytes);
    }

    fn finish(&mut self, expected: &BTreeMap<u64, [u8; 32]>, now: Instant, error: Option<String>) {
        if self.outcome != Outcome::Running {
            return;
        }
        self.ended = Some(now);
        if let Some(e) = error {
            self.outcome = Outcome::Failed(e);
            return;
        }
        let digest: [u8; 32] = self.body.clone().finalize().into();
        self.outcome = if !self.head.starts_with(b"HTTP/1.0 200") {
            Outcome::BadBody(format!(
                "status line {:?}",
                String::from_utf8_lossy(&self.head[..self.head.len().min(40)])
            ))
        } else if self.body_len != self.size {
            Outcome::BadBody(format!("{} body bytes of {}", self.body_len, self.size))
        } else if expected.get(&self.size) != Some(&digest) {
            Outcome::BadBody("SHA-256 differs from the web server's body".into())
        } else {
            Outcome::Ok
        };
    }
}

/// A second client on the same world that hosts an onion service and serves the web
/// server's bodies on its streams (`GET /<n>`, as [`crate::circuit::web`]).
pub struct Service {
    /// The client hosting the service.
    pub client: Client,
    /// The service.
    pub handle: ServiceHandle,
    /// Its `.onion` name.
    pub address: String,
    links: HashMap<ConnId, LinkId>,
    conns: HashMap<LinkId, ConnId>,
    /// What it handed over for storage.
    pub persisted: Persisted,
    /// Its events other than connections and streams.
    pub events: VecDeque<(Instant, Event)>,
    streams: HashMap<StreamHandle, (WebConn, Vec<u8>, bool)>,
    /// Streams its clients opened.
    pub incoming: usize,
    /// Responses it finished writing.
    pub served: usize,
    /// Refuse incoming streams with this END reason instead of accepting them
    /// ([`Client::reject_stream`]), as a service whose target is down does.
    pub refuse: Option<onion_cell::relaymsg::EndReason>,
}

impl core::fmt::Debug for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("address", &self.address)
            .field("incoming", &self.incoming)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Write what the stream's response has left, within what the client takes; half-close
    /// the stream once the whole response is written.
    fn serve(&mut self, s: StreamHandle, now: Instant) {
        let Some((web, pending, done)) = self.streams.get_mut(&s) else {
            return;
        };
        while !*done {
            if pending.is_empty() {
                web.poll_output_into(64 * 1024, pending);
            }
            if pending.is_empty() {
                if web.is_done() {
                    // The whole response is written: end the stream (RELAY_END after the
                    // data; the client has no way to send END with reason DONE, so the
                    // fetching side relies on the response's Content-Length).
                    *done = true;
                    self.served += 1;
                    self.client.close(s, now);
                }
                return;
            }
            match self.client.write(s, pending, now) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    pending.drain(..n);
                }
            }
        }
    }

    fn on_event(&mut self, world: &mut World, ev: Event, now: Instant) {
        match ev {
            Event::Connect { conn, addr, .. } => {
                let link = world.connect(addr);
                self.links.insert(conn, link);
                self.conns.insert(link, conn);
            }
            Event::Disconnect { conn } => {
                if let Some(link) = self.links.remove(&conn) {
                    self.conns.remove(&link);
                    world.close(link);
                }
            }
            Event::Persist(p) => self.persisted.store(p),
            Event::IncomingStream { stream, .. } => {
                // The web server is in the world: the stream is accepted at once.
                self.incoming += 1;
                if let Some(reason) = self.refuse {
                    let _ = self.client.reject_stream(stream, reason, now);
                } else if self.client.accept_stream(stream, now).is_ok() {
                    self.streams
                        .insert(stream, (world.web_conn(), Vec::new(), false));
                }
            }
            Event::StreamReadable { stream } => {
                let mut buf = [0u8; 4096];
                while let Ok(Some(n)) = self.client.read(stream, &mut buf, now) {
                    if n == 0 {
                        break;
                    }
                    if let Some((web, _, _)) = self.streams.get_mut(&stream) {
                        web.handle_input(&buf[..n]);
                    }
                }
                self.serve(stream, now);
            }
            Event::StreamWritable { stream } => self.serve(stream, now),
            Event::StreamClosed { stream, .. } => {
                self.streams.remove(&stream);
            }
            other => self.events.push_back((now, other)),
        }
    }

    /// Move the service's client's outputs; whether anything moved.
    fn step(&mut self, world: &mut World, out: &mut Vec<u8>) -> bool {
        let now = world.now();
        let mut moved = false;
        while let Some(ev) = self.client.poll_event() {
            moved = true;
            self.on_event(world, ev, now);
        }
        loop {
            out.clear();
            let Some(conn) = self.client.poll_transmit(now, out) else {
                break;
            };
            moved = true;
            if let Some(&link) = self.links.get(&conn) {
                world.send(link, out.clone());
            }
        }
        moved
    }

    /// Give it a network event if it is about one of its connections.
    fn take(&mut self, ev: &NetEvent, now: Instant) -> bool {
        match ev {
            NetEvent::Connected { link, cert_sha256 } => match self.conns.get(link) {
                Some(&c) => self.client.handle_connected(c, now, *cert_sha256),
                None => return false,
            },
            NetEvent::Data { link, bytes } => match self.conns.get(link) {
                Some(&c) => self.client.handle_input(c, now, bytes),
                None => return false,
            },
            NetEvent::Closed { link } => match self.conns.remove(link) {
                Some(c) => {
                    self.links.remove(&c);
                    self.client.handle_closed(c, now);
                }
                None => return false,
            },
        }
        true
    }
}

/// The client, its connections and its storage, on a [`World`].
pub struct Sim {
    /// The network.
    pub world: World,
    /// The client.
    pub client: Client,
    /// Its configuration (to restart it).
    pub config: ClientConfig,
    /// What it handed over for storage.
    pub persisted: Persisted,
    /// The application's fetches.
    pub fetches: Fetches,
    /// Events the driver does not consume (bootstrap, directory, resolve, ...), for the
    /// scenario to read.
    pub events: VecDeque<(Instant, Event)>,
    links: HashMap<ConnId, LinkId>,
    conns: HashMap<LinkId, ConnId>,
    /// Onion services hosted by other clients of the world ([`Sim::host_service`]).
    pub services: Vec<Service>,
    /// Connections the client asked for.
    pub connects: usize,
    /// Bytes the client sent and received.
    pub bytes: (u64, u64),
    /// Connections whose send buffer is full ([`Client::set_blocked`]).
    blocked: Vec<ConnId>,
    /// How many times a connection was reported blocked.
    pub blocked_count: u64,
    /// Record each fetch's circuit view ([`Fetch::circuit_ended`]) whenever its stream has
    /// bytes to read, so that the view before the end of the stream is kept (the client
    /// forgets a stream once it is read out). Off by default: it costs an allocation per
    /// readable event.
    pub watch_circuits: bool,
    out: Vec<u8>,
}

/// Bytes waiting on a client connection above which it is reported blocked
/// ([`Client::set_blocked`]), as a socket's full send buffer is; it is unblocked when half
/// of that is sent.
pub const CLIENT_SEND_BUFFER: usize = 256 * 1024;

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("world", &self.world)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The client configuration for `world`: its authorities, microdescriptors, congestion
/// control if the world's relays offer it, C tor's defaults otherwise.
pub fn client_config(world: &World) -> ClientConfig {
    let dir = DirConfig::new(world.authorities(), vec![], DirMode::Micro);
    let mut cfg = ClientConfig::new(dir);
    cfg.congestion_control = world.config().congestion_control;
    cfg
}

fn sim_err(e: impl core::fmt::Display) -> SimError {
    SimError::Setup(e.to_string())
}

impl Sim {
    /// A world as `cfg` says, and a client with `config` (from [`client_config`] when
    /// `None`) starting with nothing stored.
    pub fn new(cfg: WorldConfig, config: Option<ClientConfig>) -> Result<Sim, SimError> {
        let mut world = World::new(cfg)?;
        let config = config.unwrap_or_else(|| client_config(&world));
        let (now, wall) = (world.now(), world.wall());
        let client = Client::new(config.clone(), State::default(), now, wall, world.rng())
            .map_err(sim_err)?;
        let mut sim = Sim {
            world,
            client,
            config,
            persisted: Persisted::default(),
            fetches: Fetches::default(),
            events: VecDeque::new(),
            links: HashMap::new(),
            conns: HashMap::new(),
            services: Vec::new(),
            connects: 0,
            bytes: (0, 0),
            blocked: Vec::new(),
            blocked_count: 0,
            watch_circuits: false,
            out: Vec::new(),
        };
        sim.step();
        Ok(sim)
    }

    /// Stop the client (its connections close) and start a new one from what it stored.
    pub fn restart(&mut self) -> Result<(), SimError> {
        for link in self.conns.keys().copied().collect::<Vec<_>>() {
            self.world.close(link);
        }
        self.links.clear();
        self.conns.clear();
        self.blocked.clear();
        let (now, wall) = (self.world.now(), self.world.wall());
        self.client = Client::new(
            self.config.clone(),
            self.persisted.state(),
            now,
            wall,
            self.world.rng(),
        )
        .map_err(sim_err)?;
        self.step();
        Ok(())
    }

    /// Start a second client on the world that hosts an onion service on port 80 with
    /// identity `identity`, readable only by the holders of `authorized` keys (client
    /// authorization, rend-spec-v3 §2.5.1.2; empty: public). Returns its index in
    /// [`Sim::services`].
    pub fn host_service(
        &mut self,
        identity: onion_hs::keys::ExpandedKeypair,
        authorized: Vec<onion_hs::x25519_dalek::PublicKey>,
    ) -> Result<usize, SimError> {
        let (now, wall) = (self.now(), self.world.wall());
        let mut client = Client::new(
            self.config.clone(),
            State::default(),
            now,
            wall,
            self.world.rng(),
        )
        .map_err(sim_err)?;
        let mut hc = onion_client::hs::host::HostConfig::new(identity, vec![80]);
        hc.authorized_clients = authorized;
        let handle = client.host_onion_service(hc, now).map_err(sim_err)?;
        let address = client
            .onion_service_address(handle)
            .map(|a| a.to_string())
            .ok_or_else(|| SimError::Setup("hosted service without an address".into()))?;
        self.services.push(Service {
            client,
            handle,
            address,
            links: HashMap::new(),
            conns: HashMap::new(),
            persisted: Persisted::default(),
            events: VecDeque::new(),
            streams: HashMap::new(),
            incoming: 0,
            served: 0,
            refuse: None,
        });
        self.step();
        Ok(self.services.len() - 1)
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.world.now()
    }

    /// Start fetching `GET /<size>` from the web server through the client.
    pub fn fetch(&mut self, size: u64, isolation: Isolation) -> Result<StreamHandle, SimError> {
        self.fetch_from(WEB_HOST, size, isolation)
    }

    /// Start fetching `GET /<size>` from `host` (the web server's name, or a `.onion`
    /// name of a [`Service`]) port 80 through the client.
    pub fn fetch_from(
        &mut self,
        host: &str,
        size: u64,
        isolation: Isolation,
    ) -> Result<StreamHandle, SimError> {
        let now = self.now();
        if !self.fetches.expected.contains_key(&size) {
            let body = self.world.expected_body(size);
            self.fetches
                .expected
                .insert(size, Sha256::digest(&body).into());
        }
        let stream = self
            .client
            .connect(host, 80, isolation, now)
            .map_err(|e| SimError::Setup(format!("connect: {e}")))?;
        let request = format!("GET /{size} HTTP/1.0\r\nHost: {host}\r\n\r\n").into_bytes();
        self.fetches
            .by_stream
            .insert(stream, self.fetches.all.len());
        self.fetches.all.push(Fetch {
            stream,
            size,
            request,
            written: 0,
            head: Vec::new(),
            head_done: false,
            body: Sha256::new(),
            body_len: 0,
            complete_on_length: host.ends_with(".onion"),
            started: now,
            opened: None,
            ended: None,
            outcome: Outcome::Running,
            circuit_opened: None,
            circuit_ended: None,
        });
        self.step();
        Ok(stream)
    }

    /// Act on one client event.
    fn on_event(&mut self, ev: Event) {
        let now = self.now();
        match ev {
            Event::Connect { conn, addr, .. } => {
                self.connects += 1;
                let link = self.world.connect(addr);
                self.links.insert(conn, link);
                self.conns.insert(link, conn);
            }
            Event::Disconnect { conn } => {
                // Everything poll_transmit gave for it was already handed to the link.
                if let Some(link) = self.links.remove(&conn) {
                    self.conns.remove(&link);
                    self.world.close(link);
                }
            }
            Event::Persist(p) => self.persisted.store(p),
            Event::StreamOpened { stream } => {
                let view = self.client.stream_circuit(stream);
                if let Some(f) = self.fetches.get(stream) {
                    f.opened = Some(now);
                    f.circuit_opened = view;
                    Fetches::write_more(&mut self.client, f, now);
                } else {
                    self.events.push_back((now, Event::StreamOpened { stream }));
                }
            }
            Event::StreamWritable { stream } => {
                if let Some(f) = self.fetches.get(stream) {
                    Fetches::write_more(&mut self.client, f, now);
                }
            }
            Event::StreamReadable { stream } => {
                if self.fetches.by_stream.contains_key(&stream) {
                    if self.watch_circuits {
                        let view = self.client.stream_circuit(stream);
                        if let Some(f) = self.fetches.get(stream) {
                            f.circuit_ended = view.or(f.circuit_ended.take());
                        }
                    }
                    self.fetches.read_all(&mut self.client, stream, now);
                } else {
                    self.events
                        .push_back((now, Event::StreamReadable { stream }));
                }
            }
            Event::StreamClosed { stream, error } => {
                if self.fetches.by_stream.contains_key(&stream) {
                    let view = self.client.stream_circuit(stream);
                    if let Some(f) = self.fetches.get(stream) {
                        f.circuit_ended = view.or(f.circuit_ended.take());
                    }
                    // Bytes received before the end stay readable.
                    self.fetches.read_all(&mut self.client, stream, now);
                    let expected = self.fetches.expected.clone();
                    if let Some(f) = self.fetches.get(stream) {
                        let why = error.as_ref().map(|e| format!("{e} ({:?})", e.kind()));
                        match why {
                            Some(w) => f.finish(&expected, now, Some(w)),
                            None if f.outcome == Outcome::Running => f.finish(&expected, now, None),
                            None => {}
                        }
                    }
                }
                self.events
                    .push_back((now, Event::StreamClosed { stream, error }));
            }
            other => self.events.push_back((now, other)),
        }
    }

    /// Move everything that can move without time passing; whether anything did.
    pub fn step(&mut self) -> bool {
        let mut any = false;
        for _ in 0..1_000_000 {
            let mut moved = false;
            let now = self.now();
            while let Some(ev) = self.client.poll_event() {
                moved = true;
                self.on_event(ev);
            }
            loop {
                self.out.clear();
                let Some(conn) = self.client.poll_transmit(now, &mut self.out) else {
                    break;
                };
                moved = true;
                if let Some(&link) = self.links.get(&conn) {
                    self.bytes.0 += self.out.len() as u64;
                    self.world.send(link, self.out.clone());
                    if self.world.backlog(link) >= CLIENT_SEND_BUFFER
                        && !self.blocked.contains(&conn)
                    {
                        self.blocked.push(conn);
                        self.blocked_count += 1;
                        self.client.set_blocked(conn, true);
                    }
                }
            }
            // Sockets whose send buffer drained take bytes again.
            let mut i = 0;
            while i < self.blocked.len() {
                let conn = self.blocked[i];
                let drained = self
                    .links
                    .get(&conn)
                    .map_or(true, |&l| self.world.backlog(l) <= CLIENT_SEND_BUFFER / 2);
                if drained {
                    self.blocked.swap_remove(i);
                    self.client.set_blocked(conn, false);
                    moved = true;
                } else {
                    i += 1;
                }
            }
            for svc in &mut self.services {
                moved |= svc.step(&mut self.world, &mut self.out);
            }
            moved |= self.world.pump();
            while let Some(nev) = self.world.poll_event() {
                moved = true;
                if self.services.iter_mut().any(|s| s.take(&nev, now)) {
                    continue;
                }
                match nev {
                    NetEvent::Connected { link, cert_sha256 } => {
                        if let Some(&conn) = self.conns.get(&link) {
                            if self.world.config().story {
                                let to = self.world.link_relay(link).map_or("?".to_owned(), |r| {
                                    self.world.relay_name(r).to_owned()
                                });
                                self.world.log(
                                    "client",
                                    format!("TCP and TLS up with {to}: link handshake (VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO) starts"),
                                );
                            }
                            self.client.handle_connected(conn, now, cert_sha256);
                        }
                    }
                    NetEvent::Data { link, bytes } => {
                        if let Some(&conn) = self.conns.get(&link) {
                            self.bytes.1 += bytes.len() as u64;
                            self.client.handle_input(conn, now, &bytes);
                        }
                    }
                    NetEvent::Closed { link } => {
                        if let Some(conn) = self.conns.remove(&link) {
                            self.links.remove(&conn);
                            self.client.handle_closed(conn, now);
                        }
                    }
                }
            }
            any |= moved;
            if !moved {
                break;
            }
        }
        any
    }

    /// Advance to the next thing due (network or client timer), at most to `limit`;
    /// false if nothing is due before `limit` (the clock is then at `limit`).
    pub fn advance(&mut self, limit: Instant) -> bool {
        let now = self.now();
        let net = self.world.next_time();
        let timer = self.client.poll_timeout();
        let drain = self
            .blocked
            .iter()
            .filter_map(|c| self.links.get(c))
            .filter_map(|&l| self.world.drains_at(l, CLIENT_SEND_BUFFER / 2))
            .min();
        let services = self
            .services
            .iter()
            .filter_map(|s| s.client.poll_timeout())
            .min();
        let next = [net, timer, drain, services].into_iter().flatten().min();
        let Some(mut next) = next.filter(|&t| t <= limit) else {
            self.world.advance_to(limit);
            let wall = self.world.wall();
            self.client.handle_timeout(limit, wall);
            for s in &mut self.services {
                s.client.handle_timeout(limit, wall);
            }
            self.step();
            return false;
        };
        if next < now {
            next = now;
        }
        self.world.advance_to(next);
        let wall = self.world.wall();
        if timer.is_some_and(|t| t <= next) {
            self.client.handle_timeout(next, wall);
        }
        for s in &mut self.services {
            if s.client.poll_timeout().is_some_and(|t| t <= next) {
                s.client.handle_timeout(next, wall);
            }
        }
        self.step();
        true
    }

    /// Run until `done` says so or `limit` (virtual time from now) passes; the error tells
    /// where it stood.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Sim) -> bool,
    ) -> Result<Duration, SimError> {
        let start = self.now();
        let deadline = start + limit;
        let mut same = 0u32;
        loop {
            self.step();
            if done(self) {
                return Ok(self.now() - start);
            }
            if self.now() >= deadline {
                return Err(SimError::Stalled {
                    at: self.now() - Instant::ZERO,
                    what: self.status(),
                });
            }
            let before = self.now();
            self.advance(deadline);
            // A timer that stays due without the clock moving would spin: that is the
            // client's livelock, reported as such.
            if self.now() == before {
                same += 1;
                if same > 100_000 {
                    return Err(SimError::Stalled {
                        at: self.now() - Instant::ZERO,
                        what: format!("client timer due without progress: {}", self.status()),
                    });
                }
            } else {
                same = 0;
            }
        }
    }

    /// A one-line state summary for failures.
    pub fn status(&self) -> String {
        format!(
            "bootstrapped={} connects={} fetches: {} started, {} ok, {} finished; last events: {:?}",
            self.client.is_bootstrapped(),
            self.connects,
            self.fetches.all.len(),
            self.fetches.ok(),
            self.fetches.finished(),
            self.events
                .iter()
                .rev()
                .take(3)
                .map(|(_, e)| format!("{e:?}").chars().take(160).collect::<String>())
                .collect::<Vec<_>>()
        )
    }
}
