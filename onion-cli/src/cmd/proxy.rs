//! The SOCKS5 proxy of `onion socks` on [`onion_client::Client`] ([`Driver`]): the client
//! chooses and builds circuits, shares them between streams of one isolation class, retries
//! refused streams and refreshes the directory; this module only speaks SOCKS and moves
//! bytes between each application socket ([`Pipe`]) and its stream, with flow control both
//! ways:
//!
//! - **Application to exit.** A client's bytes are read only as far as [`Client::write`]
//!   takes them ([`READ_AHEAD`] ahead at most): when the stream's windows are full it takes
//!   none, nothing more is read, and TCP holds the application back until
//!   [`Event::StreamWritable`].
//! - **Exit to application.** Bytes are read from the stream only while the socket's output
//!   queue is under [`OUT_HIGH`](crate::net::pipe::OUT_HIGH) (then until it drains to
//!   [`OUT_LOW`]): the stream's receive buffer in the client fills, and the client holds that
//!   stream only (no SENDME, or XOFF under congestion control), so a reader that stops
//!   stalls nobody but itself.
//!
//! **SOCKS** is [`onion_client::socks`]: SOCKS4, SOCKS4a and SOCKS5 as C tor's SocksPort
//! speaks them, and C tor's reply for each failure.
//!
//! **Isolation** (path-spec §2.2, C tor's `IsolateSOCKSAuth`, on by default): a client that
//! offers username/password authentication (RFC 1929) is asked for it, any pair is accepted,
//! and each distinct pair is its own [`Isolation`] token ([`IsolationKey`]), so its streams
//! never share a circuit with another pair's. Clients without authentication share
//! [`Isolation::NONE`].

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use onion_circuit::Instant;
use onion_client::socks::{
    self, destination, reply, reply_code, Destination, Handshake, IsolationKey, ReplyCode, Step,
    Version,
};
use onion_client::{Client, Event, Isolation, StreamHandle};

use super::get::NetOptions;
use super::socks::{accept_loop, Slot, HANDSHAKE_READ, MAX_CONNS};
use crate::net::driver::{self, Driver, Happening};
use crate::net::event::Input;
use crate::net::pipe::{next_blocked, read_grant, Pipe, OUT_LOW, READ_AHEAD};

/// Where one SOCKS connection stands.
enum Phase {
    /// Waiting for the greeting, authentication and request.
    Handshake(Handshake),
    /// The stream is opening; its reply is in `version`.
    Connecting {
        stream: StreamHandle,
        target: String,
        version: Version,
    },
    /// The stream is open.
    Open { stream: StreamHandle },
}

/// One SOCKS connection.
struct Conn {
    pipe: Pipe,
    /// Greeting, authentication and request bytes not parsed yet.
    buf: Vec<u8>,
    /// The application's bytes the stream has not taken yet.
    up: Vec<u8>,
    /// Read credit granted and not yet arrived.
    in_flight: usize,
    phase: Phase,
    /// The application closed its side.
    eof: bool,
    /// Its output queue is full: its stream is not read.
    blocked: bool,
    /// Its greeting and request are due within the handshake timeout from then.
    accepted: Instant,
    isolation: Isolation,
    _slot: Slot,
}

impl Conn {
    fn stream(&self) -> Option<StreamHandle> {
        match &self.phase {
            Phase::Connecting { stream, .. } | Phase::Open { stream } => Some(*stream),
            _ => None,
        }
    }
}

/// The proxy's state besides the client.
struct Proxy {
    conns: HashMap<u64, Conn>,
    /// The connection of each stream.
    by_stream: HashMap<StreamHandle, u64>,
    /// Isolation tokens from usernames and passwords.
    isolation: IsolationKey,
    handshake_timeout: Duration,
    extended_errors: bool,
    live: Arc<AtomicUsize>,
    /// The circuits already announced ([`Proxy::announce`]), at most [`MAX_ANNOUNCED`].
    announced: BTreeSet<u64>,
}

/// Circuits remembered as announced: far more than the circuits a client keeps open at once.
const MAX_ANNOUNCED: usize = 1024;

/// Run the proxy on `listener` until killed.
pub fn run(
    opts: &NetOptions,
    listener: TcpListener,
    listen: SocketAddr,
    handshake_timeout: Duration,
    extended_errors: bool,
    congestion_control: bool,
) -> Result<(), String> {
    let mut cfg = opts.client_config()?;
    cfg.congestion_control = congestion_control;
    let mut d = Driver::new(cfg, opts.cache.clone())?;
    d.bootstrap(d.deadline(opts.timeout))?;
    let live = Arc::new(AtomicUsize::new(0));
    let (_, tx) = d.app_sender();
    let counted = live.clone();
    std::thread::Builder::new()
        .name("socks-accept".into())
        .spawn(move || {
            accept_loop(
                || listener.accept().map(|(s, _)| s),
                &tx,
                &counted,
                MAX_CONNS,
                std::thread::sleep,
                |l| eprintln!("{l}"),
            )
        })
        .map_err(|e| format!("accept thread: {e}"))?;
    eprintln!("onion: SOCKS5 proxy listening on {listen}");
    let mut p = Proxy {
        conns: HashMap::new(),
        by_stream: HashMap::new(),
        isolation: isolation_key(),
        handshake_timeout,
        extended_errors,
        live,
        announced: BTreeSet::new(),
    };
    loop {
        let wake = p.next_wake();
        match d.next(wake) {
            None => p.timers(&mut d),
            Some(Happening::App(input)) => p.input(&mut d, input),
            Some(Happening::Client(ev)) => p.event(&mut d, ev),
        }
    }
}

impl Proxy {
    /// When the earliest handshake timeout falls.
    fn next_wake(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| matches!(c.phase, Phase::Handshake(_)))
            .map(|c| c.accepted + self.handshake_timeout)
            .min()
    }

    /// Close the connections whose handshake took too long.
    fn timers(&mut self, d: &mut Driver) {
        let now = d.now();
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.phase, Phase::Handshake(_)) && c.accepted + self.handshake_timeout <= now
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            eprintln!(
                "onion: SOCKS client sent no complete request within {:?}: closed",
                self.handshake_timeout
            );
            self.abort(&mut d.client, id, now);
        }
    }

    fn input(&mut self, d: &mut Driver, input: Input) {
        let now = d.now();
        match input {
            Input::Accepted(sock) => {
                // The accept thread counted it in; the slot counts it out when it goes.
                let slot = Slot(self.live.clone());
                let _ = sock.set_nodelay(true);
                let (id, tx) = d.app_sender();
                match Pipe::start(sock, id, tx) {
                    Ok(pipe) => {
                        let c = Conn {
                            pipe,
                            buf: Vec::new(),
                            up: Vec::new(),
                            in_flight: 0,
                            phase: Phase::Handshake(Handshake::new()),
                            eof: false,
                            blocked: false,
                            accepted: now,
                            isolation: Isolation::NONE,
                            _slot: slot,
                        };
                        self.conns.insert(id, c);
                        self.pump(&mut d.client, id, now);
                    }
                    Err(e) => eprintln!("onion: SOCKS client: {e}"),
                }
            }
            // An empty read is the writer's wake-up: its queue drained.
            Input::Bytes(id, data) if data.is_empty() => self.pump(&mut d.client, id, now),
            Input::Bytes(id, data) => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                c.in_flight = c.in_flight.saturating_sub(data.len());
                match c.phase {
                    Phase::Handshake(_) => {
                        c.buf.extend_from_slice(&data);
                        if let Err(e) = self.handshake(&mut d.client, id, now) {
                            eprintln!("onion: SOCKS client: {e}");
                        }
                    }
                    _ => c.up.extend_from_slice(&data),
                }
                self.pump(&mut d.client, id, now);
            }
            Input::Closed(id, err) => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                match (&c.phase, err) {
                    (Phase::Open { .. }, None) => {
                        c.eof = true;
                        self.pump(&mut d.client, id, now);
                    }
                    _ => self.abort(&mut d.client, id, now),
                }
            }
        }
    }

    fn event(&mut self, d: &mut Driver, ev: Event) {
        let now = d.now();
        let stream = match &ev {
            Event::StreamOpened { stream }
            | Event::StreamReadable { stream }
            | Event::StreamWritable { stream }
            | Event::StreamClosed { stream, .. } => *stream,
            Event::Bootstrap { percent, what } => return driver::progress(*percent, what),
            Event::DirectoryFailed(e) => {
                return eprintln!("onion: directory refresh failed: {e}; retrying later")
            }
            _ => return,
        };
        let Some(&id) = self.by_stream.get(&stream) else {
            return;
        };
        match ev {
            Event::StreamOpened { .. } => {
                self.announce(&d.client, stream);
                if let Some(c) = self.conns.get_mut(&id) {
                    if let Phase::Connecting { version, .. } = c.phase {
                        c.pipe.push(&reply(version, ReplyCode::SUCCEEDED));
                    }
                    c.phase = Phase::Open { stream };
                }
            }
            Event::StreamClosed { error, .. } => {
                let Some(&Phase::Connecting {
                    ref target,
                    version,
                    ..
                }) = self.conns.get(&id).map(|c| &c.phase)
                else {
                    // Open: what was received is read out first (`pump`), then it closes.
                    return self.pump(&mut d.client, id, now);
                };
                let code = match &error {
                    Some(e) => {
                        eprintln!("onion: SOCKS stream: {target}: {e}");
                        reply_code(e, self.extended_errors)
                    }
                    // Ended cleanly before CONNECTED: an onion service ends a stream to a port
                    // it does not serve so.
                    None => socks::end_reason_code(onion_cell::relaymsg::EndReason::DONE),
                };
                return self.fail(&mut d.client, id, &reply(version, code), now);
            }
            _ => {}
        }
        self.pump(&mut d.client, id, now);
    }

    /// Say which circuit stream `stream` opened on, once per circuit: `circuit built: A -> B
    /// -> C` for an exit circuit, `rendezvous complete` for an onion service's (each with
    /// whether congestion control runs on its last hop).
    fn announce(&mut self, client: &Client, stream: StreamHandle) {
        let Some(view) = client.stream_circuit(stream) else {
            return;
        };
        if !self.announced.insert(view.circuit) {
            return;
        }
        // Circuit numbers only grow: the oldest are forgotten first.
        while self.announced.len() > MAX_ANNOUNCED {
            self.announced.pop_first();
        }
        eprintln!("onion: {}", super::get::circuit_line(&view));
    }

    /// Parse the greeting, authentication and request of connection `id`; start the stream.
    fn handshake(&mut self, client: &mut Client, id: u64, now: Instant) -> Result<(), String> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let Phase::Handshake(h) = &mut c.phase else {
            return Ok(());
        };
        let (n, request) = loop {
            match h.handle_input(&c.buf) {
                Ok(Step::NeedMore) => return Ok(()),
                Ok(Step::Reply { consumed, reply }) => {
                    c.buf.drain(..consumed);
                    c.pipe.push(&reply);
                }
                Ok(Step::Request { consumed, request }) => break (consumed, request),
                Err(e) => {
                    self.fail(client, id, &e.reply().unwrap_or_default(), now);
                    return Err(e.to_string());
                }
            }
        };
        let version = request.version;
        // Tor's special names are decided here, before anything goes to the network.
        let host = match destination(&request.host) {
            Ok(Destination::Exit(host)) => host,
            Ok(Destination::Onion(addr)) => addr.to_string(),
            Err(refused) => {
                let code = refused.reply_code(self.extended_errors);
                self.fail(client, id, &reply(version, code), now);
                return Err(format!("{}: {refused}", request.host));
            }
        };
        c.buf.drain(..n);
        c.up = std::mem::take(&mut c.buf);
        let shown = format!("{}:{}", request.host, request.port);
        let isolation = self.isolation.isolation(&request.credentials);
        c.isolation = isolation;
        match client.connect(&host, request.port, isolation, now) {
            Ok(stream) => {
                c.phase = Phase::Connecting {
                    stream,
                    target: shown,
                    version,
                };
                self.by_stream.insert(stream, id);
                Ok(())
            }
            Err(e) => {
                let code = reply_code(&e, self.extended_errors);
                self.fail(client, id, &reply(version, code), now);
                Err(format!("{shown}: {e}"))
            }
        }
    }

    /// Move bytes both ways for connection `id` as far as the stream and the socket allow.
    fn pump(&mut self, client: &mut Client, id: u64, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut want = HANDSHAKE_READ;
        if let Phase::Open { stream } = c.phase {
            while !c.up.is_empty() {
                match client.write(stream, &c.up, now) {
                    Ok(0) => break,
                    Ok(n) => {
                        c.up.drain(..n);
                    }
                    Err(_) => {
                        c.up.clear();
                        break;
                    }
                }
            }
            if c.eof && c.up.is_empty() {
                // As C tor: the application's EOF ends the stream.
                return self.finish(client, id, now);
            }
            // The queue may have drained since the stream was last read (the writer's wake-up).
            c.blocked = next_blocked(c.blocked, c.pipe.queued());
            let mut buf = [0u8; 16 * 1024];
            while !c.blocked {
                match client.read(stream, &mut buf, now) {
                    Ok(None) => break,
                    Ok(Some(0)) => return self.finish(client, id, now),
                    Err(e) => {
                        eprintln!("onion: {}", stream_loss(&e));
                        return self.finish(client, id, now);
                    }
                    Ok(Some(n)) => {
                        c.pipe.push(&buf[..n]);
                        c.blocked = next_blocked(false, c.pipe.queued());
                    }
                }
            }
            if c.blocked {
                c.pipe.wake_below(OUT_LOW);
            }
            want = READ_AHEAD;
        }
        let g = read_grant(want, c.buf.len() + c.up.len(), c.in_flight);
        c.pipe.grant(g);
        c.in_flight += g;
    }

    /// Forget connection `id` and close its stream; the connection itself is returned.
    fn take(&mut self, client: &mut Client, id: u64, now: Instant) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        if let Some(s) = c.stream() {
            self.by_stream.remove(&s);
            client.close(s, now);
        }
        Some(c)
    }

    /// Flush what connection `id` has queued, then close it.
    fn finish(&mut self, client: &mut Client, id: u64, now: Instant) {
        if let Some(c) = self.take(client, id, now) {
            c.pipe.finish();
        }
    }

    /// Close connection `id` at once.
    fn abort(&mut self, client: &mut Client, id: u64, now: Instant) {
        if let Some(c) = self.take(client, id, now) {
            c.pipe.abort();
        }
    }

    /// Send the failure reply `bytes` (if any) to connection `id`, then close it.
    fn fail(&mut self, client: &mut Client, id: u64, bytes: &[u8], now: Instant) {
        if let Some(c) = self.take(client, id, now) {
            c.pipe.push(bytes);
            c.pipe.finish();
        }
    }
}

/// Why an open stream ended before its end: `circuit lost: ...` when its circuit or channel
/// went away (DESTROY, a closed channel, a circuit-level failure), which is what a user
/// watching a download fail needs to know; otherwise the stream's own end.
fn stream_loss(e: &onion_client::Error) -> String {
    use onion_cell::relaymsg::EndReason;
    use onion_client::Error as E;
    match e {
        E::StreamEnded(r) if *r == EndReason::DESTROY => format!("circuit lost: {e}"),
        E::Channel(_) | E::Circuit(_) | E::Violation(_) => format!("circuit lost: {e}"),
        _ => format!("SOCKS stream ended: {e}"),
    }
}

/// The key of this run's isolation tokens, drawn from the OS.
fn isolation_key() -> IsolationKey {
    let mut key = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
    IsolationKey::new(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_client::dir::authorities as authority;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A driver whose client has a directory authority it cannot reach: SOCKS handshakes
    /// and stream requests run, streams wait for a directory.
    fn offline() -> (Driver, Proxy) {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let auths = authority::parse_list(&format!(
            "DirAuthority gone orport={port} v3ident=329F4451BAA808E78DF40D2F286080779AD22095 \
             127.0.0.1:{port} A07048407BC479AA3FDD636ABF78594D2378FAF6\n"
        ))
        .unwrap();
        let cfg = driver::client_config(&auths, onion_client::dir::DirMode::Full).unwrap();
        let p = Proxy {
            conns: HashMap::new(),
            by_stream: HashMap::new(),
            isolation: isolation_key(),
            handshake_timeout: Duration::from_secs(30),
            extended_errors: false,
            live: Arc::new(AtomicUsize::new(0)),
            announced: BTreeSet::new(),
        };
        (Driver::new(cfg, None).unwrap(), p)
    }

    /// Run the proxy's loop for a moment.
    fn spin(d: &mut Driver, p: &mut Proxy) {
        let until = d.deadline(Duration::from_millis(100));
        while let Some(h) = d.next(Some(until)) {
            match h {
                Happening::App(i) => p.input(d, i),
                Happening::Client(e) => p.event(d, e),
            }
        }
    }

    /// A SOCKS client that connects with `creds` (or none), and the isolation token its
    /// request got.
    fn isolation_of(
        d: &mut Driver,
        p: &mut Proxy,
        creds: Option<(&str, &str)>,
    ) -> (Isolation, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut app = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (sock, _) = l.accept().unwrap();
        p.live.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let before: Vec<u64> = p.conns.keys().copied().collect();
        p.input(d, Input::Accepted(sock));
        let mut reply = [0u8; 2];
        match creds {
            None => {
                app.write_all(&[5, 1, 0]).unwrap();
                spin(d, p);
                app.read_exact(&mut reply).unwrap();
                assert_eq!(reply, socks::NO_AUTH);
            }
            Some((u, pw)) => {
                app.write_all(&[5, 2, 0, 2]).unwrap();
                spin(d, p);
                app.read_exact(&mut reply).unwrap();
                assert_eq!(reply, socks::USER_PASS);
                let mut m = vec![1, u.len() as u8];
                m.extend_from_slice(u.as_bytes());
                m.push(pw.len() as u8);
                m.extend_from_slice(pw.as_bytes());
                app.write_all(&m).unwrap();
                spin(d, p);
                app.read_exact(&mut reply).unwrap();
                assert_eq!(reply, socks::AUTH_OK);
            }
        }
        app.write_all(&[5, 1, 0, 3, 11]).unwrap();
        app.write_all(b"example.com\x00\x50").unwrap();
        spin(d, p);
        let (_, c) = p.conns.iter().find(|(id, _)| !before.contains(id)).unwrap();
        assert!(matches!(c.phase, Phase::Connecting { .. }));
        (c.isolation, app)
    }

    /// IsolateSOCKSAuth: each username/password pair is its own isolation token, the same
    /// pair again the same token, and clients without authentication share
    /// `Isolation::NONE`.
    #[test]
    fn socks_credentials_choose_the_isolation_token() {
        let (mut d, mut p) = offline();
        let (none, _c1) = isolation_of(&mut d, &mut p, None);
        let (a, _c2) = isolation_of(&mut d, &mut p, Some(("alice", "1")));
        let (b, _c3) = isolation_of(&mut d, &mut p, Some(("alice", "2")));
        let (a2, _c4) = isolation_of(&mut d, &mut p, Some(("alice", "1")));
        let (none2, _c5) = isolation_of(&mut d, &mut p, None);
        assert_eq!(none, Isolation::NONE);
        assert_eq!(none2, Isolation::NONE);
        assert_ne!(a, Isolation::NONE);
        assert_ne!(a, b);
        assert_eq!(a, a2);
        assert_eq!(p.by_stream.len(), 5);
    }
}
