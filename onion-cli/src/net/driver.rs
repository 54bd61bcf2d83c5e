//! The I/O loop around one [`onion_client::Client`]: sockets, TLS, clocks and the data
//! directory for the sans-IO client, and the application's own sockets on the same loop.
//!
//! One thread (the caller's) owns the client and every TLS session. It never blocks on a
//! socket:
//!
//! - **Connects.** [`Event::Connect`] starts TCP and TLS on a thread of its own
//!   ([`TlsLink::connect`], bounded by the client's `connect_timeout`); the result comes back
//!   through the inbox and becomes [`Client::handle_connected`] (with the SHA-256 of the
//!   relay's certificate, which the client checks against the CERTS cell, tor-spec §4.2) or
//!   [`Client::handle_closed`].
//! - **Reading.** Each relay socket has a reader thread ([`Pipe`]) that reads only as many
//!   bytes as the loop granted ([`RELAY_READ`] ahead): what it read is decrypted here and
//!   given to [`Client::handle_input`], then granted again. A relay that sends faster than
//!   the client consumes is held back by TCP.
//! - **Writing.** What [`Client::poll_transmit`] gives is encrypted here and queued on the
//!   socket's writer thread. A socket whose queue reaches
//!   [`OUT_HIGH`](super::pipe::OUT_HIGH) (a relay that reads slowly, or not at all) is
//!   reported blocked ([`Client::set_blocked`]): the client gives nothing more for it, its
//!   circuits hold their cells, and the other connections go on; once the writer has drained
//!   it to [`OUT_LOW`] it is unblocked ([`next_blocked`], the rule of every socket the loop
//!   writes). So the queue never holds much more than `OUT_HIGH` plus one transmit.
//! - **Time.** [`Client::poll_timeout`] bounds every wait; [`Client::handle_timeout`] gets
//!   the monotonic clock ([`Clock`]) and the wall clock.
//! - **Persistence.** [`Event::Persist`] is written to the data directory at once
//!   ([`Cache`]: private files, replaced atomically), and [`load_state`] reads it back into
//!   the [`State`] of the next start.
//!
//! [`Driver::next`] runs the loop until something concerns the application: a client event
//! about its streams or the directory ([`Happening::Client`]), or an input on one of its own
//! sockets ([`Happening::App`], for sockets registered through [`Driver::app_sender`]).
//! Between two calls the application drives the client directly ([`Driver::client`]);
//! the next call sends what that produced.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use onion_circuit::Instant;
use onion_client::dir::authorities::{self, DirAuthority};
use onion_client::dir::{DirMode, Directory};
use onion_client::{Client, ClientConfig, ConnId, Event, PaddingStats, Persist, State};
use onion_dir::Timestamp;

use super::cache::Cache;
use super::event::{self, Inbox, Input};
use super::pipe::{next_blocked, Pipe, OUT_LOW};
use super::tls::{TlsError, TlsLink, TlsSession};
use super::Clock;

/// Bytes a relay socket may read ahead of the client (its reader thread's credit).
pub const RELAY_READ: usize = 128 * 1024;
/// How long one directory request may take (circuit, stream and response), at most.
pub const DIR_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Something for the application from [`Driver::next`].
#[derive(Debug)]
pub enum Happening {
    /// A client event other than connections and persistence (which the driver handles).
    Client(Event),
    /// An input on an application socket, or a connection its accept thread sent.
    App(Input),
}

/// One relay connection.
enum Relay {
    /// TCP and TLS run on a thread.
    Connecting,
    /// Up: the loop's TLS session, and the socket's reader and writer threads.
    Open {
        tls: Box<TlsSession>,
        pipe: Pipe,
        input: event::ConnId,
        /// The client was told it is blocked ([`Client::set_blocked`]).
        blocked: bool,
    },
}

/// The loop around one client; see the [module documentation](self).
pub struct Driver {
    /// The client. Drive it directly between calls to [`Driver::next`].
    pub client: Client,
    clock: Clock,
    inbox: Inbox,
    cache: Option<Cache>,
    mode: DirMode,
    connect_timeout: Duration,
    relays: HashMap<ConnId, Relay>,
    /// The relay connection of an inbox id.
    by_input: HashMap<event::ConnId, ConnId>,
    /// Finished connects (sent by their threads; each also wakes the inbox under `wake`).
    connected_rx: Receiver<(ConnId, Result<TlsLink, TlsError>)>,
    connected_tx: Sender<(ConnId, Result<TlsLink, TlsError>)>,
    wake: event::ConnId,
    wake_tx: SyncSender<Input>,
    happenings: VecDeque<Happening>,
    /// Whether any relay connection came up: a run that fails without one failed to reach
    /// the network at all, and says so.
    pub reached: bool,
    /// The last deadline [`Client::handle_timeout`] was called for, so that a deadline the
    /// client keeps returning does not spin the loop.
    fired: Option<Instant>,
    plain: Vec<u8>,
    wire: Vec<u8>,
    /// Link padding as last reported (`ONION_DEBUG`).
    padding: PaddingStats,
}

/// The client's configuration for the authorities `auths` in `mode`
/// ([`ClientConfig::for_network`]: C tor's fallbacks on the public network, none and relaxed
/// path rules on a testing network), with [`DIR_REQUEST_TIMEOUT`].
pub fn client_config(auths: &[DirAuthority], mode: DirMode) -> Result<ClientConfig, String> {
    let authorities = authorities::v3_authorities(auths);
    if !authorities.iter().any(|a| a.or_addr.is_some()) {
        return Err("no authority with an ORPort (`orport=`) in the list".into());
    }
    let mut cfg = ClientConfig::for_network(authorities, mode);
    cfg.dir.request_timeout = DIR_REQUEST_TIMEOUT;
    Ok(cfg)
}

/// What the data directory holds for a client in `mode` (nothing without one): the live
/// directory documents, the guard state and the circuit build times. The client checks all
/// of it again.
pub fn load_state(cache: Option<&Cache>, mode: DirMode) -> State {
    cache.map_or_else(State::default, |c| c.load(mode, SystemTime::now()))
}

/// The wall clock, for the client.
pub fn wall() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

impl Driver {
    /// A client for `config`, started from the data directory `cache` (if any), and its loop.
    pub fn new(config: ClientConfig, cache: Option<Cache>) -> Result<Driver, String> {
        let clock = Clock::new();
        let mode = config.dir.mode;
        let connect_timeout = config.limits.connect_timeout;
        let state = load_state(cache.as_ref(), mode);
        let client = Client::new(config, state, clock.now(), wall(), &mut rand_core::OsRng)
            .map_err(|e| e.to_string())?;
        let mut inbox = Inbox::new();
        let (wake, wake_tx) = inbox.sender();
        let (connected_tx, connected_rx) = channel();
        Ok(Driver {
            client,
            clock,
            inbox,
            cache,
            mode,
            connect_timeout,
            relays: HashMap::new(),
            by_input: HashMap::new(),
            connected_rx,
            connected_tx,
            wake,
            wake_tx,
            happenings: VecDeque::new(),
            reached: false,
            fired: None,
            plain: Vec::new(),
            wire: Vec::new(),
            padding: PaddingStats::default(),
        })
    }

    /// The monotonic time now, for the client's commands.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The instant `d` from now.
    pub fn deadline(&self, d: Duration) -> Instant {
        self.clock.now() + d
    }

    /// A fresh inbox id and a sender, for an application socket whose inputs
    /// [`Driver::next`] returns as [`Happening::App`] (e.g. a [`Pipe`] to a SOCKS client).
    pub fn app_sender(&mut self) -> (event::ConnId, SyncSender<Input>) {
        self.inbox.sender()
    }

    /// Run the loop until something concerns the application, or until `until` passes
    /// (then `None`). Sends what the client has to send first.
    pub fn next(&mut self, until: Option<Instant>) -> Option<Happening> {
        loop {
            self.flush();
            if let Some(h) = self.happenings.pop_front() {
                return Some(h);
            }
            let now = self.clock.now();
            if until.is_some_and(|u| now >= u) {
                return None;
            }
            let timer = self.client.poll_timeout();
            if let Some(t) = timer.filter(|&t| t <= now && self.fired != Some(t)) {
                self.fired = Some(t);
                self.client.handle_timeout(now, wall());
                continue;
            }
            // A deadline already fired and still returned waits for the next input, at most
            // a millisecond: the client gets the time again without the loop spinning.
            let wake_at = match timer {
                Some(t) if t <= now => Some(now + Duration::from_millis(1)),
                t => t,
            };
            let wait = [wake_at, until].into_iter().flatten().min();
            let input = self.inbox.wait(wait.map(|w| self.clock.until(w)));
            if wait.is_some_and(|w| self.clock.now() >= w) {
                self.fired = None;
            }
            if let Some(input) = input {
                self.input(input);
            }
        }
    }

    /// Feed one input from the inbox.
    fn input(&mut self, input: Input) {
        let id = match &input {
            Input::Bytes(id, _) | Input::Closed(id, _) => *id,
            Input::Accepted(_) => {
                self.happenings.push_back(Happening::App(input));
                return;
            }
        };
        if id == self.wake {
            while let Ok((conn, result)) = self.connected_rx.try_recv() {
                self.connected(conn, result);
            }
            return;
        }
        let Some(&conn) = self.by_input.get(&id) else {
            self.happenings.push_back(Happening::App(input));
            return;
        };
        let now = self.clock.now();
        match input {
            // The writer drained below the mark it was asked to report: unblock.
            Input::Bytes(_, data) if data.is_empty() => {
                if let Some(Relay::Open { pipe, blocked, .. }) = self.relays.get_mut(&conn) {
                    if *blocked && !next_blocked(true, pipe.queued()) {
                        *blocked = false;
                        self.client.set_blocked(conn, false);
                    } else if *blocked {
                        pipe.wake_below(OUT_LOW);
                    }
                }
            }
            Input::Bytes(_, data) => {
                let Some(Relay::Open { tls, pipe, .. }) = self.relays.get_mut(&conn) else {
                    return;
                };
                self.wire.clear();
                match tls.feed(&data, &mut self.wire) {
                    Ok(plain) => {
                        pipe.push(&self.wire);
                        pipe.grant(data.len());
                        if !plain.is_empty() {
                            self.client.handle_input(conn, now, &plain);
                        }
                    }
                    Err(e) => self.fail(conn, &e.to_string()),
                }
            }
            Input::Closed(_, err) => {
                let why = match err {
                    Some(e) => e.to_string(),
                    None => "closed by the relay".into(),
                };
                self.fail(conn, &why);
            }
            Input::Accepted(_) => {}
        }
    }

    /// A connect thread finished.
    fn connected(&mut self, conn: ConnId, result: Result<TlsLink, TlsError>) {
        let now = self.clock.now();
        if !matches!(self.relays.get(&conn), Some(Relay::Connecting)) {
            // The client gave it up meanwhile (Disconnect): close what came up.
            if let Ok(link) = result {
                let (_, sock, _) = link.into_session();
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        let opened = result.map_err(|e| e.to_string()).and_then(|link| {
            let (mut tls, sock, cert) = link.into_session();
            let (input, tx) = self.inbox.sender();
            let pipe = Pipe::start(sock, input, tx).map_err(|e| e.to_string())?;
            self.wire.clear();
            let plain = tls.feed(&[], &mut self.wire).map_err(|e| e.to_string())?;
            pipe.push(&self.wire);
            pipe.grant(RELAY_READ);
            Ok((tls, pipe, input, cert, plain))
        });
        match opened {
            Ok((tls, pipe, input, cert, plain)) => {
                self.reached = true;
                self.by_input.insert(input, conn);
                let tls = Box::new(tls);
                let blocked = false;
                let relay = Relay::Open {
                    tls,
                    pipe,
                    input,
                    blocked,
                };
                self.relays.insert(conn, relay);
                self.client.handle_connected(conn, now, cert);
                if !plain.is_empty() {
                    self.client.handle_input(conn, now, &plain);
                }
            }
            Err(e) => {
                debug(&format!("connection {}: {e}", conn.0));
                self.relays.remove(&conn);
                self.client.handle_closed(conn, now);
            }
        }
    }

    /// Close relay connection `conn` at once and tell the client.
    fn fail(&mut self, conn: ConnId, why: &str) {
        debug(&format!("connection {}: {why}", conn.0));
        if let Some(Relay::Open { pipe, input, .. }) = self.relays.remove(&conn) {
            self.by_input.remove(&input);
            pipe.abort();
        }
        self.client.handle_closed(conn, self.clock.now());
    }

    /// Send what the client has to send and act on its events, until it has neither.
    fn flush(&mut self) {
        self.flush_once();
        let padding = self.client.padding_stats();
        if padding != self.padding {
            self.padding = padding;
            let PaddingStats {
                channels,
                padded,
                sent,
                received,
            } = padding;
            debug(&format!(
                "link padding: {padded} of {channels} channels padded, {sent} PADDING cells \
                 sent, {received} received on them"
            ));
        }
    }

    fn flush_once(&mut self) {
        loop {
            let mut busy = false;
            let now = self.clock.now();
            self.plain.clear();
            while let Some(conn) = self.client.poll_transmit(now, &mut self.plain) {
                busy = true;
                self.send(conn);
                self.plain.clear();
            }
            while let Some(ev) = self.client.poll_event() {
                busy = true;
                self.event(ev);
            }
            if !busy {
                return;
            }
        }
    }

    /// Encrypt `self.plain` for `conn` and queue it on its socket; tell the client when the
    /// socket's queue is full.
    fn send(&mut self, conn: ConnId) {
        let Some(Relay::Open {
            tls, pipe, blocked, ..
        }) = self.relays.get_mut(&conn)
        else {
            // Not open (the client should not send there): nothing can carry it.
            return;
        };
        self.wire.clear();
        if let Err(e) = tls.encrypt(&self.plain, &mut self.wire) {
            return self.fail(conn, &e.to_string());
        }
        pipe.push(&self.wire);
        if !*blocked && next_blocked(false, pipe.queued()) {
            *blocked = true;
            pipe.wake_below(OUT_LOW);
            self.client.set_blocked(conn, true);
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Connect { conn, addr, .. } => {
                self.relays.insert(conn, Relay::Connecting);
                let (tx, wake_tx, wake) =
                    (self.connected_tx.clone(), self.wake_tx.clone(), self.wake);
                let timeout = self.connect_timeout;
                let spawned = std::thread::Builder::new()
                    .name(format!("tls-{addr}"))
                    .spawn(move || {
                        let r = TlsLink::connect(addr, timeout);
                        if tx.send((conn, r)).is_ok() {
                            let _ = wake_tx.send(Input::Bytes(wake, Vec::new()));
                        }
                    });
                if let Err(e) = spawned {
                    let e = TlsError::Io(addr, e);
                    self.connected(conn, Err(e));
                }
            }
            Event::Disconnect { conn } => {
                if let Some(Relay::Open {
                    mut tls,
                    pipe,
                    input,
                    ..
                }) = self.relays.remove(&conn)
                {
                    self.by_input.remove(&input);
                    self.wire.clear();
                    tls.close(&mut self.wire);
                    pipe.push(&self.wire);
                    pipe.finish();
                }
            }
            Event::Persist(p) => self.persist(p),
            ev => self.happenings.push_back(Happening::Client(ev)),
        }
    }

    /// Keep what the client handed over in the data directory (nothing without one). A
    /// failed write is reported and the run goes on: the client still has it in memory.
    fn persist(&mut self, p: Persist) {
        let Some(cache) = &self.cache else { return };
        if let Err(e) = cache.store(self.mode, &p) {
            eprintln!("onion: warning: cannot write the data directory: {e}");
        }
    }

    /// Drive the client until it has a verified directory (printing bootstrap progress) or
    /// `deadline` passes. Application inputs that arrive meanwhile are kept for later.
    pub fn bootstrap(&mut self, deadline: Instant) -> Result<Arc<Directory>, String> {
        let mut kept = VecDeque::new();
        let result = loop {
            match self.next(Some(deadline)) {
                None => break Err("directory bootstrap timed out".to_string()),
                Some(Happening::Client(Event::Bootstrap { percent, what })) => {
                    progress(percent, &what)
                }
                Some(Happening::Client(Event::DirectoryChanged(d))) => break Ok(d),
                Some(Happening::Client(Event::DirectoryFailed(e))) => break Err(e.to_string()),
                Some(h) => kept.push_back(h),
            }
        };
        kept.append(&mut self.happenings);
        self.happenings = kept;
        let dir = result.map_err(|e| match self.reached {
            true => e,
            false => format!("no directory authority reachable ({e})"),
        })?;
        if dir.view.is_empty() {
            return Err("no relay with a valid descriptor in the consensus".into());
        }
        Ok(dir)
    }
}

/// Progress reporting on stderr ("bootstrap NN%: ...").
pub fn progress(pct: u8, what: &str) {
    eprintln!("onion: bootstrap {pct:>3}%: {what}");
}

/// A line for whoever debugs the transport (`ONION_DEBUG=1`).
fn debug(what: &str) {
    if std::env::var_os("ONION_DEBUG").is_some() {
        eprintln!("onion: debug: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_client::dir::authorities as authority;

    /// An authority whose port is closed: the connects fail, the client is told each time
    /// (`handle_closed`), and bootstrap ends at its deadline with an error that says no
    /// directory was reached, without a panic or a hang.
    #[test]
    fn unreachable_authority_fails_within_the_deadline() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let auths = authority::parse_list(&format!(
            "DirAuthority gone orport={port} v3ident=329F4451BAA808E78DF40D2F286080779AD22095 \
             127.0.0.1:{port} A07048407BC479AA3FDD636ABF78594D2378FAF6\n"
        ))
        .unwrap();
        let cfg = client_config(&auths, DirMode::Full).unwrap();
        let mut d = Driver::new(cfg, None).unwrap();
        let t = std::time::Instant::now();
        let e = d.bootstrap(d.deadline(Duration::from_secs(3))).unwrap_err();
        assert!(e.contains("no directory authority reachable"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
        assert!(!d.reached);
    }

    /// The state handed to the client at start is what the data directory holds for the mode.
    #[test]
    fn state_is_read_back_from_the_data_directory() {
        let dir = std::env::temp_dir().join(format!("onion-driver-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cache::open(&dir).unwrap();
        assert!(load_state(Some(&c), DirMode::Micro).guards.is_none());
        c.put_guards("Guard in=default rsa_id=AA\n").unwrap();
        c.write(crate::net::cache::BUILD_TIMES_FILE, b"times")
            .unwrap();
        let later = SystemTime::now() + Duration::from_secs(600);
        c.put_document(
            DirMode::Micro,
            onion_client::dir::DocKind::Consensus,
            "c",
            later,
        )
        .unwrap();
        let st = load_state(Some(&c), DirMode::Micro);
        assert_eq!(st.guards.as_deref(), Some("Guard in=default rsa_id=AA\n"));
        assert_eq!(st.build_times.as_deref(), Some("times"));
        assert_eq!(st.directory.consensus.as_deref(), Some("c"));
        assert!(load_state(Some(&c), DirMode::Full)
            .directory
            .consensus
            .is_none());
        assert!(load_state(None, DirMode::Micro).guards.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
