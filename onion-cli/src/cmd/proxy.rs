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
//! **Isolation** (path-spec §2.2, C tor's `IsolateSOCKSAuth`, on by default): a client that
//! offers username/password authentication (RFC 1929) is asked for it, any pair is accepted,
//! and each distinct pair is its own [`Isolation`] token, so its streams never share a
//! circuit with another pair's. Clients without authentication share [`Isolation::NONE`].

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use onion_circuit::Instant;
use onion_client::{Client, Error, Event, Isolation, StreamHandle};

use super::get::NetOptions;
use super::socks::{accept_loop, socks_code, Slot, HANDSHAKE_READ, MAX_CONNS};
use crate::net::driver::{self, Driver, Happening};
use crate::net::event::Input;
use crate::net::pipe::{next_blocked, read_grant, Pipe, OUT_LOW, READ_AHEAD};
use crate::net::socks::{self, Destination, Method};

/// Where one SOCKS connection stands.
enum Phase {
    /// Waiting for the greeting.
    Greeting,
    /// Waiting for the RFC 1929 username/password.
    Auth,
    /// Waiting for the request.
    Request,
    /// The stream is opening.
    Connecting {
        stream: StreamHandle,
        target: String,
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
    /// Isolation tokens by username and password.
    tokens: HashMap<socks::Credentials, Isolation>,
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
        tokens: HashMap::new(),
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
            .filter(|c| matches!(c.phase, Phase::Greeting | Phase::Auth | Phase::Request))
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
                matches!(c.phase, Phase::Greeting | Phase::Auth | Phase::Request)
                    && c.accepted + self.handshake_timeout <= now
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
                            phase: Phase::Greeting,
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
                    Phase::Greeting | Phase::Auth | Phase::Request => {
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
                    c.phase = Phase::Open { stream };
                    c.pipe.push(&socks::reply(0));
                }
            }
            Event::StreamClosed { error, .. } => {
                let Some(Phase::Connecting { target, .. }) = self.conns.get(&id).map(|c| &c.phase)
                else {
                    // Open: what was received is read out first (`pump`), then it closes.
                    return self.pump(&mut d.client, id, now);
                };
                let code = match &error {
                    Some(e) => {
                        eprintln!("onion: SOCKS stream: {target}: {e}");
                        error_code(e, self.extended_errors)
                    }
                    // Ended cleanly before CONNECTED: an onion service ends a stream to a port
                    // it does not serve so.
                    None => socks_code(onion_cell::relaymsg::EndReason::DONE),
                };
                return self.fail(&mut d.client, id, code, now);
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
        eprintln!("onion: {}", driver::circuit_line(&view));
    }

    /// Parse the greeting, authentication and request of connection `id`; start the stream.
    fn handshake(&mut self, client: &mut Client, id: u64, now: Instant) -> Result<(), String> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if let Phase::Greeting = c.phase {
            match socks::parse_greeting_method(&c.buf) {
                Ok(None) => return Ok(()),
                Ok(Some((n, method))) => {
                    c.buf.drain(..n);
                    match method {
                        Method::NoAuth => {
                            c.pipe.push(&socks::NO_AUTH);
                            c.phase = Phase::Request;
                        }
                        Method::UserPass => {
                            c.pipe.push(&socks::USER_PASS);
                            c.phase = Phase::Auth;
                        }
                    }
                }
                Err(e) => {
                    c.pipe.push(&socks::NO_METHOD);
                    self.finish(client, id, now);
                    return Err(e.to_string());
                }
            }
        }
        if let Phase::Auth = c.phase {
            match socks::parse_user_pass(&c.buf) {
                Ok(None) => return Ok(()),
                Ok(Some((n, creds))) => {
                    c.buf.drain(..n);
                    let next = Isolation(self.tokens.len() as u64 + 1);
                    c.isolation = *self.tokens.entry(creds).or_insert(next);
                    c.pipe.push(&socks::AUTH_OK);
                    c.phase = Phase::Request;
                }
                Err(e) => {
                    c.pipe.push(&[1, 1]);
                    self.finish(client, id, now);
                    return Err(e.to_string());
                }
            }
        }
        let (n, target) = match socks::parse_request(&c.buf) {
            Ok(None) => return Ok(()),
            Ok(Some(r)) => r,
            Err(e) => {
                self.fail(client, id, e.reply.unwrap_or(1), now);
                return Err(e.to_string());
            }
        };
        // Tor's special names are decided here, before anything goes to the network.
        let host = match socks::destination(&target.host) {
            Ok(Destination::Exit(host)) => host,
            Ok(Destination::Onion(addr)) => addr.to_string(),
            Err(refused) => {
                self.fail(client, id, refused.reply(self.extended_errors), now);
                return Err(format!("{}: {refused}", target.host));
            }
        };
        c.buf.drain(..n);
        c.up = std::mem::take(&mut c.buf);
        let shown = format!("{}:{}", target.host, target.port);
        match client.connect(&host, target.port, c.isolation, now) {
            Ok(stream) => {
                c.phase = Phase::Connecting {
                    stream,
                    target: shown,
                };
                self.by_stream.insert(stream, id);
                Ok(())
            }
            Err(e) => {
                let code = error_code(&e, self.extended_errors);
                self.fail(client, id, code, now);
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

    /// Send the failure reply `code` to connection `id`, then close it.
    fn fail(&mut self, client: &mut Client, id: u64, code: u8, now: Instant) {
        if let Some(c) = self.take(client, id, now) {
            c.pipe.push(&socks::reply(code));
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

/// The SOCKS reply for a stream the client could not open: C tor's for the END reason that
/// refused it ([`socks_code`]); for an onion service, 4 (host unreachable) when no
/// descriptor was found or usable or no introduction succeeded, as C tor closes those with
/// END reason RESOLVEFAILED, or with `extended` (`--extended-errors`) the proposal 304 code
/// of the step that failed ([`onion_client::hs::HsError::socks5_reply`]); 6 (TTL expired)
/// for a timeout; 1 (general failure) otherwise.
fn error_code(e: &Error, extended: bool) -> u8 {
    use onion_client::hs::HsError;
    match e {
        Error::StreamEnded(reason) => socks_code(*reason),
        Error::OnionService(h) if extended => h.socks5_reply(),
        Error::OnionService(
            HsError::DescriptorNotFound { .. }
            | HsError::DescriptorInvalid(_)
            | HsError::IntroFailed { .. }
            | HsError::IntroTimedOut,
        ) => 4,
        Error::OnionService(_) => socks::GENERAL_FAILURE,
        e if e.kind() == onion_client::ErrorKind::Timeout => 6,
        _ => socks::GENERAL_FAILURE,
    }
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
            tokens: HashMap::new(),
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

    /// Onion-service failures get C tor's replies: 4 for a descriptor or introduction that
    /// failed, 1 for the rest; with extended errors, the codes of proposal 304.
    #[test]
    fn onion_failures_map_to_c_tors_socks_replies() {
        use onion_client::hs::HsError;
        let not_found = Error::OnionService(HsError::DescriptorNotFound {
            tried: 6,
            last: "404".into(),
        });
        assert_eq!(error_code(&not_found, false), 4);
        assert_eq!(error_code(&not_found, true), socks::ext::HS_DESC_NOT_FOUND);
        let rend = Error::OnionService(HsError::RendezvousFailed("x".into()));
        assert_eq!(error_code(&rend, false), 1);
        assert_eq!(error_code(&rend, true), socks::ext::HS_REND_FAILED);
        let auth = Error::OnionService(HsError::ClientAuthMissing);
        assert_eq!(error_code(&auth, false), 1);
        assert_eq!(error_code(&auth, true), socks::ext::HS_MISSING_CLIENT_AUTH);
        let timeout = Error::OnionService(HsError::IntroTimedOut);
        assert_eq!(error_code(&timeout, false), 4);
        assert_eq!(error_code(&timeout, true), socks::ext::HS_INTRO_TIMEDOUT);
        let refused = Error::StreamEnded(onion_cell::relaymsg::EndReason::EXITPOLICY);
        assert_eq!(error_code(&refused, true), 2);
    }
}
