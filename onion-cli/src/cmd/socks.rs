//! `onion socks --listen 127.0.0.1:PORT [--authorities FILE] [--data-dir DIR] [--timeout SECS]
//! [--dir-mode micro|full]`:
//! a SOCKS5 proxy over the stack, as C tor's SocksPort (CONNECT with a host name or an
//! address; names are resolved by the exit), for curl (`--socks5-hostname`) and browsers.
//!
//! One thread runs every state machine: the [`Client`] loop plus the SOCKS connections. It
//! never blocks on a SOCKS client: each client socket is a [`Pipe`], whose own threads read
//! only what the loop granted and write from a buffer the loop fills.
//!
//! - **Client to exit.** The loop grants a client no more bytes than its stream and circuit
//!   package windows can send (tor-spec §7.3–7.4, [`OPEN_READ_AHEAD`] at most), so a fast
//!   uploader is held back by TCP.
//! - **Exit to client.** When a client's output buffer reaches [`OUT_HIGH`], its stream is
//!   held ([`Circuit::hold_stream`](onion_circuit::circuit::Circuit::hold_stream)): its data
//!   still comes in, but no stream SENDME goes out, so the exit stops after the stream
//!   window (500 cells, tor-spec §7.4), until the buffer drains to [`OUT_LOW`]. The other
//!   streams of its circuit go on meanwhile: a client that stops reading stalls nobody but
//!   itself, and its buffer is bounded by [`OUT_HIGH`] plus one stream window.
//! - **Refused streams** (END before CONNECTED) are retried as C tor's client does
//!   ([`BeginError::retry`]), up to [`ATTEMPTS`] attempts, before the SOCKS reply is sent: the
//!   circuit is no longer used for new streams, and an exit that refused by policy or for
//!   lack of resources is avoided for that request. A stream that gets no answer within
//!   [`CONNECT_TIMEOUT`], or whose circuit dies while it waits, is retried the same way.
//!   The final reply code maps the last END reason ([`socks_code`]).
//!
//! The directory is replaced when its consensus's refresh time comes (dir-spec §5.1: a random
//! time after the caches have the next one and before this one expires), so a proxy left
//! running keeps a live consensus; the guards see every new one.
//!
//! Streams share a circuit per destination port until it dies, is retired or has taken new
//! streams for [`MAX_DIRTINESS`]; then the next request builds a new one, avoiding relays
//! that failed. Building a circuit blocks the loop for its duration, which keeps this example
//! short: meanwhile every circuit is held, so the other clients' bytes wait at the exits
//! (their stream windows), not in our memory.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use onion_cell::relaymsg::{BeginFlags, EndReason};
use onion_circuit::circuit::CircEvent;
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use onion_dir::RsaIdentity;

use crate::cmd::get::NetOptions;
use crate::net::bootstrap::REFRESH_RETRY;
use crate::net::client::{BeginError, Client, Retry};
use crate::net::event::Input;
use crate::net::path;
use crate::net::pipe::Pipe;
use crate::net::socks::{self, Target};

const USAGE: &str = "usage: onion socks --listen ADDR:PORT [--authorities FILE] [--data-dir DIR] \
     [--timeout SECS] [--dir-mode micro|full] [--handshake-timeout SECS]";

/// A client's output buffer at which its stream is held (about one stream window).
const OUT_HIGH: usize = 256 * 1024;
/// The level at which a held stream is released.
const OUT_LOW: usize = 64 * 1024;
/// How many bytes of an open stream may be read ahead of the circuit, at most (the
/// windows usually allow less).
const OPEN_READ_AHEAD: usize = 32 * 1024;
/// How many bytes a client may send before its stream is open (greeting, request and
/// optimistic data; a request is at most 262 bytes).
const HANDSHAKE_READ: usize = 1024;
/// Attempts at opening one stream (C tor retries a refused stream a bounded number of times).
const ATTEMPTS: usize = 3;
/// How long a stream may wait for CONNECTED before it is retried elsewhere (C tor waits
/// 10 to 15 s before it tries another circuit).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a circuit takes new streams (C tor's `MaxCircuitDirtiness` default): after that,
/// new streams go on a new circuit, so that one circuit does not link all of a user's
/// activity, and the old one is closed once its streams are done.
const MAX_DIRTINESS: Duration = Duration::from_secs(600);
/// How long a client may take from connecting to sending a complete greeting and request
/// (`--handshake-timeout`): one that connects and sends nothing, or stops halfway, would
/// otherwise keep its socket and two pipe threads until it disconnects. Ours, not C tor's
/// (which has no such limit of its own); a SOCKS client sends both at once.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one CONNECT request stands in its attempts.
struct Request {
    target: Target,
    /// Attempts made so far (the one under way included).
    attempt: usize,
    /// Exits that refused this request by policy or for lack of resources.
    avoid: Vec<RsaIdentity>,
}

enum State {
    Greeting,
    Request,
    /// The next attempt starts at `at`.
    Waiting {
        req: Request,
        at: Instant,
    },
    /// BEGIN sent at `since`.
    Connecting {
        circ: usize,
        stream: StreamId,
        req: Request,
        since: Instant,
    },
    Open {
        circ: usize,
        stream: StreamId,
    },
}

struct Conn {
    pipe: Pipe,
    /// Bytes received and not yet parsed (greeting, request).
    buf: Vec<u8>,
    /// Bytes from the application the circuit has not taken yet.
    up: Vec<u8>,
    /// Read credit granted and not yet arrived.
    in_flight: usize,
    state: State,
    /// The application closed its side: end the stream once `up` is sent.
    eof: bool,
    /// Its output buffer filled up (to [`OUT_HIGH`]) and has not drained (to [`OUT_LOW`]) yet:
    /// its stream is held.
    blocked: bool,
    /// When it connected: its greeting and request are due within the handshake timeout.
    accepted: Instant,
}

impl Conn {
    fn circ(&self) -> Option<usize> {
        match self.state {
            State::Connecting { circ, .. } | State::Open { circ, .. } => Some(circ),
            _ => None,
        }
    }

    fn stream(&self) -> Option<(usize, StreamId)> {
        match self.state {
            State::Connecting { circ, stream, .. } | State::Open { circ, stream } => {
                Some((circ, stream))
            }
            _ => None,
        }
    }
}

/// An exit circuit the proxy made.
struct PoolCirc {
    circ: usize,
    /// The destination port it was built for.
    port: u16,
    /// Its exit relay.
    exit: Option<RsaIdentity>,
    /// Its length when built: fewer hops means a hop cut it (RELAY_TRUNCATED, tor-spec §5.4)
    /// and it no longer reaches the exit.
    hops: usize,
    /// Whether new streams may use it (C tor retires a circuit on which a stream was refused).
    usable: bool,
    /// When it was built: it takes new streams for [`MAX_DIRTINESS`] only.
    born: Instant,
}

/// The circuit of `pool` a new stream to `port` goes on: one built for that port, not
/// retired, younger than [`MAX_DIRTINESS`], not through an exit in `avoid`, and `ok` (still
/// reaching its exit).
fn pick(
    pool: &[PoolCirc],
    port: u16,
    avoid: &[RsaIdentity],
    now: Instant,
    ok: impl Fn(&PoolCirc) -> bool,
) -> Option<usize> {
    pool.iter()
        .find(|p| {
            p.usable
                && p.port == port
                && now < p.born + MAX_DIRTINESS
                && !p.exit.is_some_and(|e| avoid.contains(&e))
                && ok(p)
        })
        .map(|p| p.circ)
}

/// Run the subcommand (until killed).
pub fn run(args: &[String]) -> Result<(), String> {
    let mut listen: Option<SocketAddr> = None;
    let mut handshake_timeout = HANDSHAKE_TIMEOUT;
    let mut rest_args = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--listen" {
            let v = it.next().ok_or(USAGE)?;
            listen = Some(
                v.parse()
                    .map_err(|_| format!("--listen {v:?}: not an ADDR:PORT"))?,
            );
        } else if a == "--handshake-timeout" {
            let v = it.next().ok_or(USAGE)?;
            let secs: u64 = v
                .parse()
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| format!("--handshake-timeout {v:?}: not a positive number"))?;
            handshake_timeout = Duration::from_secs(secs);
        } else {
            rest_args.push(a.clone());
        }
    }
    let listen = listen.ok_or(USAGE)?;
    let (opts, rest) = NetOptions::parse(&rest_args, USAGE)?;
    if !rest.is_empty() {
        return Err(USAGE.into());
    }
    let listener = TcpListener::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    let mut client = Client::new();
    let mut dir = opts.bootstrap(&mut client)?;
    let mut next_refresh = client.deadline(dir.refresh_delay().max(REFRESH_RETRY));
    let config = path::path_config(&opts.auths);
    client.inbox().listen(listener);
    eprintln!("onion: SOCKS5 proxy listening on {listen}");
    let mut proxy = Proxy {
        conns: Vec::new(),
        pool: Vec::new(),
        avoid: Vec::new(),
        handshake_timeout,
    };
    loop {
        let build = |c: &mut Client, host: &str, port: u16, avoid: &mut Vec<RsaIdentity>| {
            let deadline = c.deadline(opts.timeout);
            let (circ, hops) =
                path::exit_circuit_retrying(c, &dir, &config, host, port, avoid, deadline)?;
            let exit = hops
                .last()
                .and_then(|n| dir.view.by_nickname(n))
                .and_then(|i| dir.view.relay(i))
                .map(|r| r.rsa_id);
            Ok((circ, exit))
        };
        let wake = if proxy.events_waiting(&client) {
            // Events that waited while a circuit was built (holds released): take them now.
            client.clock.now()
        } else {
            proxy
                .next_wake()
                .map_or(next_refresh, |w| w.min(next_refresh))
        };
        let _ = client.step(wake);
        while let Some(input) = client.take_other() {
            proxy.input(&mut client, input, &build);
        }
        proxy.circuit_events(&mut client);
        proxy.timers(&mut client, &build);
        proxy.pump(&mut client);
        let _ = client.flush();
        if client.clock.now() >= next_refresh {
            // dir-spec §5.1: the consensus's refresh time has come. Fetching blocks the loop,
            // as building a circuit does; circuits already built go on with their relays.
            let delay = match opts.refresh(&mut client, &dir) {
                Ok(d) => {
                    dir = d;
                    dir.refresh_delay()
                }
                Err(e) => {
                    eprintln!("onion: directory refresh: {e}; retrying in {REFRESH_RETRY:?}");
                    REFRESH_RETRY
                }
            };
            next_refresh = client.deadline(delay.max(REFRESH_RETRY));
        }
    }
}

/// Builds an exit circuit for `host:port`, avoiding (and adding to) the given relays;
/// returns the circuit and its exit.
type Build<'a> = dyn Fn(
        &mut Client,
        &str,
        u16,
        &mut Vec<RsaIdentity>,
    ) -> Result<(usize, Option<RsaIdentity>), String>
    + 'a;

struct Proxy {
    conns: Vec<Conn>,
    pool: Vec<PoolCirc>,
    /// Relays that failed while building circuits: later paths leave them out.
    avoid: Vec<RsaIdentity>,
    /// [`HANDSHAKE_TIMEOUT`] or `--handshake-timeout`.
    handshake_timeout: Duration,
}

/// Whether circuit `c` can still carry cells.
fn alive(client: &Client, c: usize) -> bool {
    client
        .circs
        .get(c)
        .is_some_and(|c| c.dead.is_none() && !c.circ.is_closed())
}

/// Whether the pooled circuit `p` still reaches its exit.
fn intact(client: &Client, p: &PoolCirc) -> bool {
    alive(client, p.circ) && client.circs[p.circ].circ.n_hops() >= p.hops
}

impl Proxy {
    fn find(&self, id: u64) -> Option<usize> {
        self.conns.iter().position(|c| c.pipe.id() == id)
    }

    fn input(&mut self, client: &mut Client, input: Input, build: &Build<'_>) {
        match input {
            Input::Accepted(sock) => {
                let _ = sock.set_nodelay(true);
                let (id, tx) = client.inbox().sender();
                match Pipe::start(sock, id, tx) {
                    Ok(pipe) => self.conns.push(Conn {
                        pipe,
                        buf: Vec::new(),
                        up: Vec::new(),
                        in_flight: 0,
                        state: State::Greeting,
                        eof: false,
                        blocked: false,
                        accepted: client.clock.now(),
                    }),
                    Err(e) => eprintln!("onion: SOCKS client: {e}"),
                }
            }
            // An empty read is the writer's wake-up: its buffer drained (see `pump`).
            Input::Bytes(_, data) if data.is_empty() => {}
            Input::Bytes(id, data) => {
                let Some(i) = self.find(id) else { return };
                let c = &mut self.conns[i];
                c.in_flight = c.in_flight.saturating_sub(data.len());
                match c.state {
                    State::Greeting | State::Request => {
                        c.buf.extend_from_slice(&data);
                        if let Err(e) = self.handshake(client, i, build) {
                            eprintln!("onion: SOCKS client: {e}");
                        }
                    }
                    _ => c.up.extend_from_slice(&data),
                }
            }
            Input::Closed(id, err) => {
                let Some(i) = self.find(id) else { return };
                let c = &mut self.conns[i];
                match (&c.state, err) {
                    (State::Open { .. }, None) => c.eof = true,
                    _ => self.abort(client, i),
                }
            }
        }
    }

    /// Remove connection `i`, ending its stream.
    fn take(&mut self, client: &mut Client, i: usize) -> Conn {
        let c = self.conns.swap_remove(i);
        if let Some((circ, stream)) = c.stream() {
            if let Some(cc) = client.circs.get_mut(circ) {
                let _ = cc.circ.close_stream(stream);
            }
        }
        c
    }

    /// Close connection `i` at once.
    fn abort(&mut self, client: &mut Client, i: usize) {
        self.take(client, i).pipe.abort();
    }

    /// Send SOCKS reply `code` (a failure) to connection `i`, then close it.
    fn fail(&mut self, client: &mut Client, i: usize, code: u8) {
        let c = self.take(client, i);
        c.pipe.push(&socks::reply(code));
        c.pipe.finish();
    }

    /// Parse the greeting and request of connection `i`; start the request.
    fn handshake(
        &mut self,
        client: &mut Client,
        i: usize,
        build: &Build<'_>,
    ) -> Result<(), String> {
        let c = &mut self.conns[i];
        if let State::Greeting = c.state {
            match socks::parse_greeting(&c.buf) {
                Ok(None) => return Ok(()),
                Ok(Some(n)) => {
                    c.buf.drain(..n);
                    c.pipe.push(&socks::NO_AUTH);
                    c.state = State::Request;
                }
                Err(e) => {
                    let c = self.take(client, i);
                    c.pipe.push(&socks::NO_METHOD);
                    c.pipe.finish();
                    return Err(e.to_string());
                }
            }
        }
        let (n, target) = match socks::parse_request(&c.buf) {
            Ok(None) => return Ok(()),
            Ok(Some(r)) => r,
            Err(e) => {
                self.fail(client, i, e.reply.unwrap_or(1));
                return Err(e.to_string());
            }
        };
        let c = &mut self.conns[i];
        c.buf.drain(..n);
        c.up = std::mem::take(&mut c.buf);
        let req = Request {
            target,
            attempt: 0,
            avoid: Vec::new(),
        };
        self.attempt(client, i, req, build);
        Ok(())
    }

    /// Start the next attempt of connection `i`'s request: a stream on a pooled circuit or
    /// on a new one.
    fn attempt(&mut self, client: &mut Client, i: usize, mut req: Request, build: &Build<'_>) {
        req.attempt += 1;
        let (host, port) = (req.target.host.clone(), req.target.port);
        let now = client.clock.now();
        let found = pick(&self.pool, port, &req.avoid, now, |p| intact(client, p));
        let circ = match found {
            Some(c) => c,
            None => {
                // Building blocks the loop (for seconds): meanwhile every circuit keeps its
                // data in its machine, so that exits stop at their stream windows instead of
                // filling our memory; they take their events again once it is built.
                for p in &self.pool {
                    client.circs[p.circ].hold = true;
                }
                let mut avoid = self.avoid.clone();
                avoid.extend(req.avoid.iter().copied());
                let built = build(client, &host, port, &mut avoid);
                for p in &self.pool {
                    client.circs[p.circ].hold = false;
                }
                for r in avoid {
                    if !self.avoid.contains(&r) && !req.avoid.contains(&r) {
                        self.avoid.push(r);
                    }
                }
                match built {
                    Ok((circ, exit)) => {
                        self.pool.push(PoolCirc {
                            circ,
                            port,
                            exit,
                            hops: client.circs[circ].circ.n_hops(),
                            born: client.clock.now(),
                            usable: true,
                        });
                        circ
                    }
                    Err(e) => {
                        // Other clients' inputs wait in the client while it builds, so `i`
                        // still names this connection.
                        eprintln!("onion: SOCKS stream: {host}:{port}: {e}");
                        self.fail(client, i, 1);
                        return;
                    }
                }
            }
        };
        let now = client.clock.now();
        let begun = client.circs[circ]
            .circ
            .begin(&host, port, begin_flags(&host), now);
        match begun {
            Ok(stream) => {
                self.conns[i].state = State::Connecting {
                    circ,
                    stream,
                    req,
                    since: now,
                };
            }
            Err(e) => {
                // Out of stream ids, or the circuit just closed: retire it, try another.
                eprintln!("onion: SOCKS stream: {host}:{port}: begin: {e}");
                self.retire(circ);
                if req.attempt < ATTEMPTS {
                    self.conns[i].state = State::Waiting { req, at: now };
                } else {
                    self.fail(client, i, 1);
                }
            }
        }
    }

    /// No new stream goes on circuit `c` any more.
    fn retire(&mut self, c: usize) {
        for p in self.pool.iter_mut().filter(|p| p.circ == c) {
            p.usable = false;
        }
    }

    /// Connection `i`'s stream was refused (or given up) for `reason` while connecting:
    /// retry it as C tor's client would, or send the final reply.
    fn refused(&mut self, client: &mut Client, i: usize, reason: EndReason) {
        let State::Connecting { circ, req, .. } =
            std::mem::replace(&mut self.conns[i].state, State::Greeting)
        else {
            return;
        };
        let err = BeginError::Refused(reason);
        self.retry_or_reply(client, i, circ, req, reason, err.retry(), &err.to_string());
    }

    /// Retry connection `i`'s request `req` (its attempt on `circ` ended for `reason`) as
    /// `retry` says, or send the final reply if it says no or the attempts are spent.
    #[allow(clippy::too_many_arguments)]
    fn retry_or_reply(
        &mut self,
        client: &mut Client,
        i: usize,
        circ: usize,
        req: Request,
        reason: EndReason,
        retry: Retry,
        err: &str,
    ) {
        let now = client.clock.now();
        let target = format!("{}:{}", req.target.host, req.target.port);
        if retry == Retry::No || req.attempt >= ATTEMPTS {
            eprintln!(
                "onion: SOCKS stream: {target}: {err} (attempt {})",
                req.attempt
            );
            self.fail(client, i, socks_code(reason));
            return;
        }
        eprintln!(
            "onion: SOCKS stream: {target}: {err} (attempt {}); trying a new circuit",
            req.attempt
        );
        self.retire(circ);
        let mut req = req;
        let delay = match retry {
            Retry::OtherExit => {
                let exit = self
                    .pool
                    .iter()
                    .find(|p| p.circ == circ)
                    .and_then(|p| p.exit);
                req.avoid.extend(exit);
                Duration::ZERO
            }
            // An exit that answered MISC may not know our middle relay yet (its consensus
            // lags behind ours): give it a moment, as `onion get` does.
            _ => Duration::from_secs(req.attempt as u64),
        };
        self.conns[i].state = State::Waiting {
            req,
            at: now + delay,
        };
    }

    /// Route circuit events to the connections; handle circuits that died.
    fn circuit_events(&mut self, client: &mut Client) {
        let circs: Vec<(usize, usize)> = self.pool.iter().map(|p| (p.circ, p.hops)).collect();
        for (circ, hops) in circs {
            while let Some(ev) = client.circs[circ].events.pop_front() {
                let (CircEvent::StreamConnected { stream, .. }
                | CircEvent::Data { stream, .. }
                | CircEvent::StreamEnded { stream, .. }) = ev
                else {
                    continue;
                };
                let Some(i) = self
                    .conns
                    .iter()
                    .position(|c| c.stream() == Some((circ, stream)))
                else {
                    continue;
                };
                let c = &mut self.conns[i];
                match ev {
                    CircEvent::StreamConnected { .. } => {
                        c.state = State::Open { circ, stream };
                        c.pipe.push(&socks::reply(0));
                    }
                    CircEvent::Data { data, .. } => c.pipe.push(&data),
                    CircEvent::StreamEnded { reason, .. } => {
                        if let State::Connecting { .. } = c.state {
                            self.refused(client, i, reason);
                        } else {
                            // The exit's END: the stream is gone; flush what came, then close.
                            let c = self.conns.swap_remove(i);
                            c.pipe.finish();
                        }
                    }
                    _ => {}
                }
            }
            let cut = client.circs[circ].circ.n_hops() < hops;
            if alive(client, circ) && !cut {
                continue;
            }
            let why = match &client.circs[circ].dead {
                Some(why) => why.clone(),
                None if cut => {
                    // Its streams are gone with the exit: give the rest up too.
                    client.destroy(circ);
                    format!("circuit cut after hop {}", client.circs[circ].circ.n_hops())
                }
                None => "circuit closed".into(),
            };
            eprintln!("onion: circuit lost: {why}");
            self.pool.retain(|p| p.circ != circ);
            while let Some(i) = self.conns.iter().position(|c| c.circ() == Some(circ)) {
                let c = &mut self.conns[i];
                if let State::Connecting { req, .. } =
                    std::mem::replace(&mut c.state, State::Greeting)
                {
                    // Nothing was sent on the stream yet: the request can go on a new
                    // circuit (C tor would fail it; a browser user prefers the page).
                    self.retry_or_reply(
                        client,
                        i,
                        circ,
                        req,
                        EndReason::DESTROY,
                        Retry::NewCircuit,
                        &why,
                    );
                } else {
                    self.abort(client, i);
                }
            }
        }
    }

    /// Retries that are due, streams that waited too long, clients that stopped reading.
    fn timers(&mut self, client: &mut Client, build: &Build<'_>) {
        let now = client.clock.now();
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            match &c.state {
                State::Waiting { at, .. } if *at <= now => {
                    let State::Waiting { req, .. } =
                        std::mem::replace(&mut c.state, State::Greeting)
                    else {
                        unreachable!()
                    };
                    self.attempt(client, i, req, build);
                    // It may have failed and been removed: look at index `i` again.
                    continue;
                }
                State::Connecting {
                    circ,
                    stream,
                    since,
                    ..
                } if *since + CONNECT_TIMEOUT <= now => {
                    let (circ, stream) = (*circ, *stream);
                    let _ = client.circs[circ].circ.close_stream(stream);
                    self.refused(client, i, EndReason::TIMEOUT);
                    i = 0;
                    continue;
                }
                State::Greeting | State::Request if c.accepted + self.handshake_timeout <= now => {
                    eprintln!(
                        "onion: SOCKS client sent no complete request within {:?}: closed",
                        self.handshake_timeout
                    );
                    self.abort(client, i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// Move bytes both ways as far as windows and buffers allow; hold or release circuits;
    /// destroy retired circuits nobody uses.
    fn pump(&mut self, client: &mut Client) {
        let now = client.clock.now();
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let mut capacity = 0;
            if let State::Open { circ, stream } = c.state {
                if !c.up.is_empty() && alive(client, circ) {
                    if let Ok(n) = client.circs[circ].circ.send(stream, &c.up) {
                        c.up.drain(..n);
                    }
                }
                if c.eof && c.up.is_empty() {
                    // As C tor: the application's EOF ends the stream.
                    let c = self.take(client, i);
                    c.pipe.finish();
                    continue;
                }
                capacity = client.circs[circ].circ.send_capacity(stream);
            }
            let want = match c.state {
                State::Open { .. } => capacity.min(OPEN_READ_AHEAD),
                _ => HANDSHAKE_READ,
            };
            let g = read_grant(want, c.buf.len() + c.up.len(), c.in_flight);
            c.pipe.grant(g);
            c.in_flight += g;
            let was = c.blocked;
            c.blocked = next_blocked(c.blocked, c.pipe.queued());
            if c.blocked {
                c.pipe.wake_below(OUT_LOW);
            }
            if let (Some((circ, stream)), true) = (c.stream(), c.blocked != was) {
                client.circs[circ].circ.hold_stream(stream, c.blocked);
            }
            i += 1;
        }
        for p in self.pool.iter_mut() {
            if now >= p.born + MAX_DIRTINESS {
                p.usable = false;
            }
        }
        let conns = &self.conns;
        self.pool.retain(|p| {
            let idle = !p.usable && !conns.iter().any(|c| c.circ() == Some(p.circ));
            if idle {
                client.destroy(p.circ);
            }
            !idle
        });
    }

    /// Whether a circuit of the proxy has events nobody has looked at.
    fn events_waiting(&self, client: &Client) -> bool {
        self.pool.iter().any(|p| {
            client
                .circs
                .get(p.circ)
                .is_some_and(|c| !c.events.is_empty())
        })
    }

    /// When the loop must wake up even if nothing arrives.
    fn next_wake(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|c| match &c.state {
                State::Waiting { at, .. } => Some(*at),
                State::Connecting { since, .. } => Some(*since + CONNECT_TIMEOUT),
                State::Greeting | State::Request => Some(c.accepted + self.handshake_timeout),
                _ => None,
            })
            .min()
    }
}

/// RELAY_BEGIN flags (tor-spec §6.2) for `host`: an IPv6 literal needs "IPv6 okay" (we can
/// connect to IPv6 addresses), without which the exit has no address it may use; names and
/// IPv4 keep the default (IPv4 only), as C tor's SocksPort does.
fn begin_flags(host: &str) -> BeginFlags {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => BeginFlags(BeginFlags::IPV6_OKAY),
        _ => BeginFlags(0),
    }
}

/// How many more bytes to let a client send: what `want` allows beyond the bytes it already
/// sent that wait here (`buffered`) and the credit it has not used yet (`in_flight`).
fn read_grant(want: usize, buffered: usize, in_flight: usize) -> usize {
    want.saturating_sub(buffered.saturating_add(in_flight))
}

/// Whether a client's output is blocked now: it becomes so at [`OUT_HIGH`] queued bytes and
/// stays so until the queue drains to [`OUT_LOW`] (hysteresis, so that a stream is not held
/// and released on every cell).
fn next_blocked(blocked: bool, queued: usize) -> bool {
    if blocked {
        queued > OUT_LOW
    } else {
        queued >= OUT_HIGH
    }
}

/// RFC 1928 reply code for the RELAY_END reason (tor-spec §6.3) that finally refused a
/// stream: the closest meaning RFC 1928 §6 offers, as C tor's SocksPort reports them.
fn socks_code(reason: EndReason) -> u8 {
    match reason {
        // "connection not allowed by ruleset"
        EndReason::EXITPOLICY => 2,
        // "Network unreachable": the exit has no route to the destination.
        EndReason::NOROUTE => 3,
        // "Host unreachable": the name did not resolve.
        EndReason::RESOLVEFAILED => 4,
        // "Connection refused"
        EndReason::CONNECTREFUSED => 5,
        // "TTL expired": the exit (or we) gave up waiting.
        EndReason::TIMEOUT => 6,
        // "general SOCKS server failure"
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_never_exceed_what_the_windows_allow() {
        // Nothing buffered, nothing granted yet: the whole allowance.
        assert_eq!(read_grant(OPEN_READ_AHEAD, 0, 0), OPEN_READ_AHEAD);
        // Credit not used yet counts against the allowance.
        assert_eq!(read_grant(4980, 0, 4000), 980);
        assert_eq!(read_grant(4980, 1000, 3980), 0);
        // Windows closed (capacity 0): nothing more is read, whatever waits.
        assert_eq!(read_grant(0, 0, 0), 0);
        assert_eq!(read_grant(0, 500, 100), 0);
        // More buffered than now allowed (the window shrank): no negative grant.
        assert_eq!(read_grant(498, 10_000, 0), 0);
        assert_eq!(read_grant(usize::MAX, usize::MAX, usize::MAX), 0);
    }

    #[test]
    fn blocking_has_hysteresis() {
        assert!(!next_blocked(false, OUT_HIGH - 1));
        assert!(next_blocked(false, OUT_HIGH));
        // Still blocked between the marks.
        assert!(next_blocked(true, OUT_LOW + 1));
        assert!(next_blocked(true, OUT_HIGH * 4));
        // Released once drained to the low mark.
        assert!(!next_blocked(true, OUT_LOW));
        assert!(!next_blocked(false, OUT_LOW));
    }

    #[test]
    fn picks_a_fresh_usable_circuit_for_the_port() {
        let t0 = Instant::from_duration(Duration::from_secs(5));
        let exit_a = RsaIdentity([1u8; 20]);
        let exit_b = RsaIdentity([2u8; 20]);
        let circ = |circ, port, exit, usable| PoolCirc {
            circ,
            port,
            exit: Some(exit),
            hops: 3,
            usable,
            born: t0,
        };
        let pool = vec![
            circ(0, 443, exit_a, true),
            circ(1, 80, exit_a, false),
            circ(2, 80, exit_a, true),
            circ(3, 80, exit_b, true),
        ];
        let all = |_: &PoolCirc| true;
        assert_eq!(pick(&pool, 443, &[], t0, all), Some(0));
        // Retired circuits are skipped.
        assert_eq!(pick(&pool, 80, &[], t0, all), Some(2));
        // An exit that refused the request is avoided.
        assert_eq!(pick(&pool, 80, &[exit_a], t0, all), Some(3));
        assert_eq!(pick(&pool, 443, &[exit_a], t0, all), None);
        // Circuits that `ok` refuses (dead, or cut short) are skipped.
        assert_eq!(pick(&pool, 80, &[], t0, |p| p.circ != 2), Some(3));
        // No circuit for that port.
        assert_eq!(pick(&pool, 8080, &[], t0, all), None);
        // Too old for new streams.
        let late = t0 + MAX_DIRTINESS;
        assert_eq!(pick(&pool, 80, &[], late, all), None);
        let before = t0 + (MAX_DIRTINESS - Duration::from_secs(1));
        assert_eq!(pick(&pool, 80, &[], before, all), Some(2));
    }

    #[test]
    fn ipv6_literals_are_begun_with_ipv6_okay() {
        assert_eq!(begin_flags("::1").0, BeginFlags::IPV6_OKAY);
        assert_eq!(begin_flags("2001:db8::7").0, BeginFlags::IPV6_OKAY);
        assert_eq!(begin_flags("127.0.0.1").0, 0);
        assert_eq!(begin_flags("example.com").0, 0);
    }

    #[test]
    fn final_reply_codes() {
        assert_eq!(socks_code(EndReason::EXITPOLICY), 2);
        assert_eq!(socks_code(EndReason::NOROUTE), 3);
        assert_eq!(socks_code(EndReason::RESOLVEFAILED), 4);
        assert_eq!(socks_code(EndReason::CONNECTREFUSED), 5);
        assert_eq!(socks_code(EndReason::TIMEOUT), 6);
        assert_eq!(socks_code(EndReason::MISC), 1);
        assert_eq!(socks_code(EndReason::DESTROY), 1);
        assert_eq!(socks_code(EndReason::RESOURCELIMIT), 1);
    }

    #[test]
    fn bounds_are_consistent() {
        // The hold must release below the mark that set it, and the buffer bound must cover
        // at least one stream window (500 cells of 498 bytes) so that a reading client keeps
        // the exit busy.
        const { assert!(OUT_LOW < OUT_HIGH) };
        const { assert!(OUT_HIGH >= 500 * 498) };
        const { assert!(HANDSHAKE_READ >= 2 + 255 + 4 + 1 + 255 + 2) };
    }
}
