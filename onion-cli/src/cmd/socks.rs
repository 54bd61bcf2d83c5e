//! `onion socks --listen 127.0.0.1:PORT [--authorities FILE] [--data-dir DIR] [--timeout SECS]
//! [--dir-mode micro|full] [--allow-non-loopback] [--extended-errors]`:
//! a SOCKS5 proxy over the stack, as C tor's SocksPort (CONNECT with a host name or an
//! address; names are resolved by the exit), for curl (`--socks5-hostname`) and browsers.
//!
//! **Names** ([`socks::destination`], address-spec §2–3, as C tor's
//! `parse_extended_hostname`). ASCII case is ignored and one trailing dot is dropped
//! (`x.onion.` is `x.onion`: C tor 0.4.9 does not drop it, and sends `x.onion.` to an exit).
//! - `<addr>.onion` and `<anything>.<addr>.onion` go to the onion service `<addr>`
//!   (rend-spec-v3 §2.1, through [`onion::connect`]), never to an exit: the stream is a
//!   BEGIN with an empty host on the rendezvous circuit (only the port names the target,
//!   rend-spec-v3 §1.1). The rendezvous circuit takes the later streams to that service until
//!   it dies or has taken streams for [`MAX_DIRTINESS`], as C tor reuses it. A stream the
//!   service refuses is not retried (C tor does not retry rendezvous streams); one that gets
//!   no CONNECTED within `--timeout` (C tor's `SocksTimeout`, 120 s by default) gets reply 6.
//! - A `.onion` name whose address is malformed (length, characters, checksum, version, a key
//!   that is not an ed25519 point), a `.exit` name (disabled in C tor for its risks), and a
//!   name with characters no host name has are refused at once, before anything is sent,
//!   with C tor's reply: 1, general failure (it closes them with END reason TORPROTOCOL).
//! - A service that cannot be reached gets C tor's reply for the step that failed: 4, host
//!   unreachable, when no descriptor was found or every introduction point failed; 1
//!   otherwise. With `--extended-errors` (C tor's SocksPort flag `ExtendedErrors`, which Tor
//!   Browser sets) these, and a malformed address, get the codes of proposal 304 instead
//!   ([`socks::ext`], 0xF0–0xF7). They are off by default, as in C tor: RFC 1928 leaves the
//!   values unassigned, and a client that does not expect them may misreport them.
//!
//! **Where it listens, and how many.** `--listen` must be a loopback address unless
//! `--allow-non-loopback` is given (then a warning is printed): anyone who reaches the port
//! uses the Tor network as this user. At most [`MAX_CONNS`] SOCKS connections are served at
//! once; the accept thread accepts one more and closes it at once (the client sees the
//! connection closed before any reply, rather than hanging in the listen backlog), logging
//! once per burst of refusals. When `accept` itself fails (out of file descriptors: EMFILE),
//! it sleeps, from [`ACCEPT_BACKOFF_MIN`] doubling up to [`ACCEPT_BACKOFF_MAX`], logging once
//! per burst, instead of retrying at once forever.
//!
//! One thread runs every state machine: the [`Client`] loop plus the SOCKS connections. It
//! never blocks on a SOCKS client: each client socket is a [`Pipe`], whose own threads read
//! only what the loop granted and write from a buffer the loop fills.
//!
//! - **Client to exit.** The loop grants a client no more bytes than its stream and circuit
//!   package windows can send (tor-spec §7.3–7.4, [`READ_AHEAD`] at most), so a fast
//!   uploader is held back by TCP.
//! - **Exit to client.** When a client's output buffer reaches [`OUT_HIGH`](crate::net::pipe::OUT_HIGH), its stream is
//!   held ([`Circuit::hold_stream`](onion_circuit::circuit::Circuit::hold_stream)): its data
//!   still comes in, but no stream SENDME goes out, so the exit stops after the stream
//!   window (500 cells, tor-spec §7.4), until the buffer drains to [`OUT_LOW`]. The other
//!   streams of its circuit go on meanwhile: a client that stops reading stalls nobody but
//!   itself, and its buffer is bounded by [`OUT_HIGH`](crate::net::pipe::OUT_HIGH) plus one stream window.
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
//! that failed. Building a circuit, and connecting to an onion service (descriptor,
//! rendezvous and introduction circuits: up to `--timeout`), blocks the loop for its
//! duration, which keeps this example short: meanwhile every circuit is held, so the other
//! clients' bytes wait at the exits and services (their stream windows), not in our memory,
//! and new connections wait, counted against [`MAX_CONNS`], in the loop's inbox.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use onion_cell::relaymsg::{BeginFlags, EndReason};
use onion_circuit::circuit::CircEvent;
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use onion_dir::RsaIdentity;
use onion_hs::OnionAddress;

use crate::cmd::get::NetArgs;
use crate::net::bootstrap::REFRESH_RETRY;
use crate::net::client::{BeginError, Client, Retry};
use crate::net::event::Input;
use crate::net::onion::{self, ConnectError, Failure};
use crate::net::path;
use crate::net::pipe::{next_blocked, read_grant, Pipe, OUT_LOW, READ_AHEAD};
use crate::net::socks::{self, Destination, Target};

/// `onion socks` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    /// Where to listen (a loopback address unless --allow-non-loopback).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Close a client that has not sent its greeting and request within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = HANDSHAKE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout: u64,
    /// Listen on a non-loopback address (anyone who can reach it can use the proxy).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Reply with the extended SOCKS error codes of proposal 304 (0xF0-0xF7) for onion
    /// services, as C tor's `ExtendedErrors` SocksPort flag.
    #[arg(long)]
    extended_errors: bool,
    /// Negotiate congestion control (proposal 324) with exits that support it, and with
    /// onion services whose descriptor advertises flow-control; a client that stops reading
    /// then gets its stream stopped by XOFF instead of stream windows.
    #[arg(long)]
    congestion_control: bool,
    #[command(flatten)]
    net: NetArgs,
}

fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| format!("{v:?}: not an ADDR:PORT"))
}

/// How many SOCKS connections are served at once. Each costs a socket and two threads
/// ([`Pipe`]); a browser opens a few dozen at most.
pub(super) const MAX_CONNS: usize = 512;
/// The first pause after `accept` failed.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause after `accept` failed again and again.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How many bytes a client may send before its stream is open (greeting, request and
/// optimistic data; a request is at most 262 bytes).
pub(super) const HANDSHAKE_READ: usize = 1024;
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
    /// The name as requested (an onion service's, for the log) or the exit's destination.
    target: Target,
    /// The onion service it goes to, if it names one.
    onion: Option<OnionAddress>,
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
    /// Its output buffer filled up (to [`OUT_HIGH`](crate::net::pipe::OUT_HIGH)) and has not drained (to [`OUT_LOW`]) yet:
    /// its stream is held.
    blocked: bool,
    /// When it connected: its greeting and request are due within the handshake timeout.
    accepted: Instant,
    /// Its place under [`MAX_CONNS`], given back when it is dropped.
    _slot: Slot,
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

/// An exit circuit, or a rendezvous circuit to an onion service, the proxy made.
struct PoolCirc {
    circ: usize,
    /// The destination port it was built for (exit circuits).
    port: u16,
    /// The onion service it reaches (a rendezvous circuit), or `None` for an exit circuit.
    onion: Option<OnionAddress>,
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
                && p.onion.is_none()
                && p.port == port
                && now < p.born + MAX_DIRTINESS
                && !p.exit.is_some_and(|e| avoid.contains(&e))
                && ok(p)
        })
        .map(|p| p.circ)
}

/// The rendezvous circuit of `pool` a new stream to the onion service `addr` goes on: one to
/// that service, not retired, younger than [`MAX_DIRTINESS`], and `ok` (still alive).
fn pick_onion(
    pool: &[PoolCirc],
    addr: &OnionAddress,
    now: Instant,
    ok: impl Fn(&PoolCirc) -> bool,
) -> Option<usize> {
    pool.iter()
        .find(|p| {
            p.usable && p.onion.as_ref() == Some(addr) && now < p.born + MAX_DIRTINESS && ok(p)
        })
        .map(|p| p.circ)
}

/// Whether the proxy may listen on `addr`: a loopback address always; any other only when
/// `allow` (`--allow-non-loopback`), and then with the warning returned. An IPv4-mapped IPv6
/// address counts as the IPv4 address it maps.
fn check_listen(addr: SocketAddr, allow: bool) -> Result<Option<String>, String> {
    if addr.ip().to_canonical().is_loopback() {
        return Ok(None);
    }
    let risk = "anyone who can reach it can use the Tor network through it, as this user";
    if allow {
        Ok(Some(format!(
            "onion: WARNING: listening on {addr}, not a loopback address: {risk}"
        )))
    } else {
        Err(format!(
            "--listen {addr}: not a loopback address ({risk}); add --allow-non-loopback \
             to listen there anyway"
        ))
    }
}

/// One connection's place under [`MAX_CONNS`]: the accept thread counted it in when it
/// accepted the socket; dropping the slot counts it out.
pub(super) struct Slot(pub(super) Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The pause after failed `accept` calls: [`ACCEPT_BACKOFF_MIN`], doubling on each failure in
/// a row up to [`ACCEPT_BACKOFF_MAX`]; reset by a success.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
}

impl Backoff {
    /// After a failure: how long to pause, and whether it starts a burst (log it then only).
    fn failed(&mut self) -> (Duration, bool) {
        let first = self.delay.is_none();
        let d = self
            .delay
            .map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
        self.delay = Some(d);
        (d, first)
    }

    /// After a success: whether it ends a burst of failures.
    fn succeeded(&mut self) -> bool {
        self.delay.take().is_some()
    }
}

/// The accept thread's loop: take connections from `accept` and hand them to the event loop
/// (`tx`), at most `max` at a time counted in `live` (the loop's [`Slot`]s count them out); a
/// connection over the limit is closed at once. A failed `accept` pauses the thread
/// ([`Backoff`], through `sleep`). `log` gets one line per burst of failures or refusals.
/// Returns when the event loop is gone.
pub(super) fn accept_loop(
    mut accept: impl FnMut() -> io::Result<TcpStream>,
    tx: &SyncSender<Input>,
    live: &AtomicUsize,
    max: usize,
    mut sleep: impl FnMut(Duration),
    mut log: impl FnMut(String),
) {
    let mut backoff = Backoff::default();
    let mut refusing = false;
    loop {
        let sock = match accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let (pause, first) = backoff.failed();
                if first {
                    log(format!(
                        "onion: SOCKS accept failed: {e}; retrying with backoff (up to {:?})",
                        ACCEPT_BACKOFF_MAX
                    ));
                }
                sleep(pause);
                continue;
            }
        };
        if backoff.succeeded() {
            log("onion: SOCKS accept works again".into());
        }
        if live.load(Ordering::Acquire) >= max {
            if !refusing {
                log(format!(
                    "onion: {max} SOCKS connections open: closing new ones until one ends"
                ));
                refusing = true;
            }
            drop(sock);
            continue;
        }
        refusing = false;
        live.fetch_add(1, Ordering::AcqRel);
        if tx.send(Input::Accepted(sock)).is_err() {
            return;
        }
    }
}

/// Run the subcommand (until killed).
pub fn run(args: Args) -> Result<(), String> {
    let Args {
        listen,
        handshake_timeout,
        allow_non_loopback,
        extended_errors,
        congestion_control,
        net,
    } = args;
    let handshake_timeout = Duration::from_secs(handshake_timeout);
    let warning = check_listen(listen, allow_non_loopback)?;
    let opts = net.open()?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let listener = TcpListener::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    if crate::net::driver::enabled() {
        return super::proxy::run(
            &opts,
            listener,
            listen,
            handshake_timeout,
            extended_errors,
            congestion_control,
        );
    }
    let mut client = Client::new();
    let mut dir = opts.bootstrap(&mut client)?;
    let mut onion_cc = None;
    if congestion_control {
        client.congestion_control = crate::cmd::get::client_cc(&dir);
        onion_cc = crate::cmd::get::onion_cc(&dir);
    }
    let mut next_refresh = client.deadline(dir.refresh_delay().max(REFRESH_RETRY));
    let config = path::path_config(&opts.auths);
    let testing = path::is_testing_network(&opts.auths);
    let live = Arc::new(AtomicUsize::new(0));
    let (_, tx) = client.inbox().sender();
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
    let mut proxy = Proxy {
        conns: Vec::new(),
        pool: Vec::new(),
        avoid: Vec::new(),
        handshake_timeout,
        onion_timeout: opts.timeout,
        extended_errors,
        live,
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
        let connect_onion = |c: &mut Client, addr: OnionAddress| {
            let deadline = c.deadline(opts.timeout);
            onion::connect(
                c,
                &dir,
                &config,
                testing,
                addr,
                None,
                onion_cc.as_ref(),
                deadline,
            )
        };
        let build = Builders {
            exit: &build,
            onion: &connect_onion,
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
                    if congestion_control {
                        client.congestion_control = crate::cmd::get::client_cc(&dir);
                        onion_cc = crate::cmd::get::onion_cc(&dir);
                    }
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

/// Connects to an onion service ([`onion::connect`]); returns the rendezvous circuit.
type ConnectOnion<'a> = dyn Fn(&mut Client, OnionAddress) -> Result<usize, ConnectError> + 'a;

/// How new circuits are made: to an exit, or to an onion service.
struct Builders<'a> {
    exit: &'a Build<'a>,
    onion: &'a ConnectOnion<'a>,
}

struct Proxy {
    conns: Vec<Conn>,
    pool: Vec<PoolCirc>,
    /// Relays that failed while building circuits: later paths leave them out.
    avoid: Vec<RsaIdentity>,
    /// [`HANDSHAKE_TIMEOUT`] or `--handshake-timeout`.
    handshake_timeout: Duration,
    /// How long a stream to an onion service may wait for CONNECTED (`--timeout`).
    onion_timeout: Duration,
    /// `--extended-errors`: reply with the codes of proposal 304.
    extended_errors: bool,
    /// The connections counted under [`MAX_CONNS`] (shared with the accept thread).
    live: Arc<AtomicUsize>,
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

    fn input(&mut self, client: &mut Client, input: Input, build: &Builders<'_>) {
        match input {
            Input::Accepted(sock) => {
                // The accept thread counted it in; the slot counts it out when it goes.
                let slot = Slot(self.live.clone());
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
                        _slot: slot,
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
        build: &Builders<'_>,
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
        // Tor's special names are decided here, before anything goes to the network.
        let (onion, target) = match socks::destination(&target.host) {
            Ok(Destination::Onion(addr)) => (Some(addr), target),
            Ok(Destination::Exit(host)) => (
                None,
                Target {
                    host,
                    port: target.port,
                },
            ),
            Err(refused) => {
                self.fail(client, i, refused.reply(self.extended_errors));
                return Err(format!("{}: {refused}", target.host));
            }
        };
        let c = &mut self.conns[i];
        c.buf.drain(..n);
        c.up = std::mem::take(&mut c.buf);
        let req = Request {
            target,
            onion,
            attempt: 0,
            avoid: Vec::new(),
        };
        self.attempt(client, i, req, build);
        Ok(())
    }

    /// Start the next attempt of connection `i`'s request: a stream on a pooled circuit or
    /// on a new one.
    fn attempt(&mut self, client: &mut Client, i: usize, mut req: Request, build: &Builders<'_>) {
        req.attempt += 1;
        let (host, port) = (req.target.host.clone(), req.target.port);
        let now = client.clock.now();
        if let Some(addr) = req.onion {
            self.attempt_onion(client, i, req, addr, build);
            return;
        }
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
                let built = (build.exit)(client, &host, port, &mut avoid);
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
                            onion: None,
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

    /// Start the next attempt of connection `i`'s request for the onion service `addr`: a
    /// stream on its rendezvous circuit, connecting to the service first if there is none.
    fn attempt_onion(
        &mut self,
        client: &mut Client,
        i: usize,
        req: Request,
        addr: OnionAddress,
        build: &Builders<'_>,
    ) {
        let port = req.target.port;
        let now = client.clock.now();
        let circ = match pick_onion(&self.pool, &addr, now, |p| intact(client, p)) {
            Some(c) => c,
            None => {
                // As for a build (see `attempt`): the other circuits are held meanwhile.
                for p in &self.pool {
                    client.circs[p.circ].hold = true;
                }
                let connected = (build.onion)(client, addr);
                for p in &self.pool {
                    client.circs[p.circ].hold = false;
                }
                match connected {
                    Ok(circ) => {
                        self.pool.push(PoolCirc {
                            circ,
                            port,
                            onion: Some(addr),
                            exit: None,
                            hops: client.circs[circ].circ.n_hops(),
                            born: client.clock.now(),
                            usable: true,
                        });
                        circ
                    }
                    Err(e) => {
                        eprintln!("onion: SOCKS stream: {}:{port}: {e}", req.target.host);
                        self.fail(client, i, onion_code(e.failure, self.extended_errors));
                        return;
                    }
                }
            }
        };
        let now = client.clock.now();
        // Only the port names the target: the service maps it to its own (rend-spec-v3
        // §1.1), so the host is empty, as C tor's client sends it.
        match client.circs[circ].circ.begin("", port, BeginFlags(0), now) {
            Ok(stream) => {
                self.conns[i].state = State::Connecting {
                    circ,
                    stream,
                    req,
                    since: now,
                };
            }
            Err(e) => {
                eprintln!(
                    "onion: SOCKS stream: {}:{port}: begin: {e}",
                    req.target.host
                );
                self.retire(circ);
                if req.attempt < ATTEMPTS {
                    self.conns[i].state = State::Waiting { req, at: now };
                } else {
                    self.fail(client, i, socks::GENERAL_FAILURE);
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
        // C tor does not retry a stream to an onion service: the service itself refused.
        let retry = match req.onion {
            Some(_) => Retry::No,
            None => err.retry(),
        };
        self.retry_or_reply(client, i, circ, req, reason, retry, &err.to_string());
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
            while let Some(ev) = client
                .circs
                .get_mut(circ)
                .and_then(|c| c.events.pop_front())
            {
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
            let Some(cc) = client.circs.get(circ) else {
                continue;
            };
            let cut = cc.circ.n_hops() < hops;
            if alive(client, circ) && !cut {
                continue;
            }
            let why = match &cc.dead {
                Some(why) => why.clone(),
                // Its streams are gone with the exit (or service): give the rest up too.
                None if cut => format!("circuit cut after hop {}", cc.circ.n_hops()),
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
            // Its connections are gone from it: release it (its index may then be reused).
            client.destroy(circ);
        }
    }

    /// Retries that are due, streams that waited too long, clients that stopped reading.
    fn timers(&mut self, client: &mut Client, build: &Builders<'_>) {
        let now = client.clock.now();
        let onion_timeout = self.onion_timeout;
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
                    req,
                } if *since + connect_timeout(req, onion_timeout) <= now => {
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
                State::Open { .. } => capacity.min(READ_AHEAD),
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
                State::Connecting { since, req, .. } => {
                    Some(*since + connect_timeout(req, self.onion_timeout))
                }
                State::Greeting | State::Request => Some(c.accepted + self.handshake_timeout),
                _ => None,
            })
            .min()
    }
}

/// How long a stream for `req` may wait for CONNECTED: [`CONNECT_TIMEOUT`] at an exit (then
/// it is retried elsewhere), `onion_timeout` (`--timeout`) at an onion service (C tor waits
/// `SocksTimeout` for a rendezvous stream, and does not retry it).
fn connect_timeout(req: &Request, onion_timeout: Duration) -> Duration {
    match req.onion {
        Some(_) => onion_timeout,
        None => CONNECT_TIMEOUT,
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

/// RFC 1928 reply code for the RELAY_END reason (tor-spec §6.3) that finally refused a
/// stream: the one C tor's SocksPort sends (`stream_end_reason_to_socks5_response`).
pub(super) fn socks_code(reason: EndReason) -> u8 {
    match reason {
        // "connection not allowed by ruleset"
        EndReason::EXITPOLICY => 2,
        // "Host unreachable": the name did not resolve, or the exit has no route to it.
        EndReason::RESOLVEFAILED | EndReason::NOROUTE => 4,
        // "Connection refused": refused, reset, or closed before CONNECTED (an onion
        // service ends a stream to a port it does not serve with DONE).
        EndReason::CONNECTREFUSED | EndReason::DONE | EndReason::CONNRESET => 5,
        // "TTL expired": the exit (or we) gave up waiting.
        EndReason::TIMEOUT => 6,
        // "general SOCKS server failure"
        _ => socks::GENERAL_FAILURE,
    }
}

/// The SOCKS reply for an onion service that could not be reached, as C tor sends it: it
/// closes the request with END reason RESOLVEFAILED (reply 4, host unreachable) when no
/// descriptor was found or usable or no introduction succeeded, with MISC (reply 1) when
/// client authorization is missing or wrong, and fails the rest generally (1). With
/// `extended` (`--extended-errors`), the step is told apart by the codes of proposal 304.
fn onion_code(failure: Failure, extended: bool) -> u8 {
    use socks::ext;
    match (failure, extended) {
        (Failure::DescNotFound, true) => ext::HS_DESC_NOT_FOUND,
        (Failure::DescInvalid, true) => ext::HS_DESC_INVALID,
        (Failure::IntroFailed, true) => ext::HS_INTRO_FAILED,
        (Failure::IntroTimedOut, true) => ext::HS_INTRO_TIMEDOUT,
        (Failure::RendFailed, true) => ext::HS_REND_FAILED,
        (Failure::MissingClientAuth, true) => ext::HS_MISSING_CLIENT_AUTH,
        (Failure::BadClientAuth, true) => ext::HS_BAD_CLIENT_AUTH,
        (Failure::BadAddress, true) => ext::HS_BAD_ADDRESS,
        (
            Failure::DescNotFound
            | Failure::DescInvalid
            | Failure::IntroFailed
            | Failure::IntroTimedOut,
            false,
        ) => 4,
        _ => socks::GENERAL_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_fresh_usable_circuit_for_the_port() {
        let t0 = Instant::from_duration(Duration::from_secs(5));
        let exit_a = RsaIdentity([1u8; 20]);
        let exit_b = RsaIdentity([2u8; 20]);
        let circ = |circ, port, exit, usable| PoolCirc {
            circ,
            port,
            onion: None,
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
        assert_eq!(socks_code(EndReason::NOROUTE), 4);
        assert_eq!(socks_code(EndReason::DONE), 5);
        assert_eq!(socks_code(EndReason::CONNRESET), 5);
        assert_eq!(socks_code(EndReason::TORPROTOCOL), 1);
        assert_eq!(socks_code(EndReason::RESOLVEFAILED), 4);
        assert_eq!(socks_code(EndReason::CONNECTREFUSED), 5);
        assert_eq!(socks_code(EndReason::TIMEOUT), 6);
        assert_eq!(socks_code(EndReason::MISC), 1);
        assert_eq!(socks_code(EndReason::DESTROY), 1);
        assert_eq!(socks_code(EndReason::RESOURCELIMIT), 1);
    }

    #[test]
    fn onion_failures_get_c_tor_reply_codes() {
        // Without extended errors: RESOLVEFAILED (4) or a general failure (1), as C tor.
        assert_eq!(onion_code(Failure::DescNotFound, false), 4);
        assert_eq!(onion_code(Failure::DescInvalid, false), 4);
        assert_eq!(onion_code(Failure::IntroFailed, false), 4);
        assert_eq!(onion_code(Failure::IntroTimedOut, false), 4);
        assert_eq!(onion_code(Failure::RendFailed, false), 1);
        assert_eq!(onion_code(Failure::MissingClientAuth, false), 1);
        assert_eq!(onion_code(Failure::BadClientAuth, false), 1);
        assert_eq!(onion_code(Failure::BadAddress, false), 1);
        assert_eq!(onion_code(Failure::Other, false), 1);
        // With them: proposal 304.
        assert_eq!(onion_code(Failure::DescNotFound, true), 0xF0);
        assert_eq!(onion_code(Failure::DescInvalid, true), 0xF1);
        assert_eq!(onion_code(Failure::IntroFailed, true), 0xF2);
        assert_eq!(onion_code(Failure::RendFailed, true), 0xF3);
        assert_eq!(onion_code(Failure::MissingClientAuth, true), 0xF4);
        assert_eq!(onion_code(Failure::BadClientAuth, true), 0xF5);
        assert_eq!(onion_code(Failure::BadAddress, true), 0xF6);
        assert_eq!(onion_code(Failure::IntroTimedOut, true), 0xF7);
        assert_eq!(onion_code(Failure::Other, true), 1);
    }

    #[test]
    fn rendezvous_circuits_are_reused_per_service() {
        let t0 = Instant::from_duration(Duration::from_secs(5));
        let a = OnionAddress::from_public_key([1u8; 32]);
        let b = OnionAddress::from_public_key([2u8; 32]);
        let circ = |circ, onion: Option<OnionAddress>, usable| PoolCirc {
            circ,
            port: 80,
            onion,
            exit: None,
            hops: 4,
            usable,
            born: t0,
        };
        let pool = vec![
            circ(0, None, true),
            circ(1, Some(a), false),
            circ(2, Some(a), true),
            circ(3, Some(b), true),
        ];
        let all = |_: &PoolCirc| true;
        assert_eq!(pick_onion(&pool, &a, t0, all), Some(2));
        assert_eq!(pick_onion(&pool, &b, t0, all), Some(3));
        // A dead one is not used; nor a retired one; nor one past its dirtiness.
        assert_eq!(pick_onion(&pool, &a, t0, |p| p.circ != 2), None);
        assert_eq!(pick_onion(&pool, &a, t0 + MAX_DIRTINESS, all), None);
        // A rendezvous circuit never carries exit streams, whatever its port.
        assert_eq!(pick(&pool, 80, &[], t0, all), Some(0));
        assert_eq!(pick(&pool[1..], 80, &[], t0, all), None);
        let none = OnionAddress::from_public_key([3u8; 32]);
        assert_eq!(pick_onion(&pool, &none, t0, all), None);
    }

    #[test]
    fn listens_on_loopback_unless_told_otherwise() {
        let ok = |a: &str| check_listen(a.parse().unwrap(), false);
        assert_eq!(ok("127.0.0.1:9150"), Ok(None));
        assert_eq!(ok("127.3.4.5:9150"), Ok(None));
        assert_eq!(ok("[::1]:9150"), Ok(None));
        assert_eq!(ok("[::ffff:127.0.0.1]:9150"), Ok(None));
        for bad in [
            "0.0.0.0:9150",
            "192.168.1.2:9150",
            "[::]:9150",
            "[2001:db8::1]:1",
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.contains("--allow-non-loopback"), "{bad}: {e}");
            let w = check_listen(bad.parse().unwrap(), true).unwrap();
            assert!(w.is_some_and(|w| w.contains("WARNING")), "{bad}");
        }
    }

    #[test]
    fn accept_failures_back_off_exponentially() {
        let mut b = Backoff::default();
        let mut pauses = Vec::new();
        let mut firsts = 0;
        for _ in 0..10 {
            let (d, first) = b.failed();
            pauses.push(d);
            firsts += usize::from(first);
        }
        assert_eq!(firsts, 1, "one log line per burst");
        assert_eq!(pauses[0], ACCEPT_BACKOFF_MIN);
        assert_eq!(pauses[1], ACCEPT_BACKOFF_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), ACCEPT_BACKOFF_MAX);
        assert!(b.succeeded());
        assert!(!b.succeeded());
        assert_eq!(b.failed(), (ACCEPT_BACKOFF_MIN, true));
    }

    /// A connected pair of sockets; the accepted end is returned, the client end kept.
    fn accepted(l: &TcpListener, keep: &mut Vec<TcpStream>) -> TcpStream {
        keep.push(TcpStream::connect(l.local_addr().unwrap()).unwrap());
        l.accept().unwrap().0
    }

    #[test]
    fn accept_loop_sleeps_on_errors_instead_of_spinning() {
        // `accept` fails with EMFILE 40 times in a row, then gives a connection: the loop
        // sleeps between failures (growing pauses, at most 1 s each), logs the burst once
        // and its end once, and delivers the connection. It returns when the event loop is
        // gone (its receiver dropped before the next delivery).
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut keep = Vec::new();
        let mut socks = vec![accepted(&l, &mut keep), accepted(&l, &mut keep)];
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let mut rx = Some(rx);
        let (mut calls, mut delivered) = (0, 0);
        let live = AtomicUsize::new(0);
        let (mut slept, mut logs) = (Vec::new(), Vec::new());
        accept_loop(
            || {
                calls += 1;
                match calls {
                    1..=40 => Err(io::Error::from_raw_os_error(24)),
                    41 => Ok(socks.pop().unwrap()),
                    _ => {
                        let r = rx
                            .take()
                            .expect("the loop went on after the channel closed");
                        while let Ok(Input::Accepted(_)) = r.try_recv() {
                            delivered += 1;
                        }
                        Ok(socks.pop().unwrap())
                    }
                }
            },
            &tx,
            &live,
            8,
            |d| slept.push(d),
            |l| logs.push(l),
        );
        assert_eq!((calls, delivered), (42, 1));
        assert_eq!(slept.len(), 40);
        assert_eq!(slept[0], ACCEPT_BACKOFF_MIN);
        assert!(slept.iter().all(|&d| d <= ACCEPT_BACKOFF_MAX));
        assert_eq!(*slept.last().unwrap(), ACCEPT_BACKOFF_MAX);
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert!(logs[0].contains("accept failed"), "{logs:?}");
    }

    #[test]
    fn connections_over_the_limit_are_closed_at_once() {
        use std::io::Read;
        const MAX: usize = 2;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let live = Arc::new(AtomicUsize::new(0));
        let counted = live.clone();
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let logged = logs.clone();
        let thread = std::thread::spawn(move || {
            accept_loop(
                || l.accept().map(|(s, _)| s),
                &tx,
                &counted,
                MAX,
                std::thread::sleep,
                |m| logged.lock().unwrap().push(m),
            )
        });
        let wait = Duration::from_secs(5);
        let next = || match rx.recv_timeout(wait) {
            Ok(Input::Accepted(s)) => (Slot(live.clone()), s),
            other => panic!("expected a connection, got {other:?}"),
        };
        let clients: Vec<TcpStream> = (0..MAX)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut served: Vec<(Slot, TcpStream)> = (0..MAX).map(|_| next()).collect();
        assert_eq!(live.load(Ordering::Acquire), MAX);
        // Two more: closed at once, before any byte, and not handed to the loop.
        for _ in 0..2 {
            let mut over = TcpStream::connect(addr).unwrap();
            over.set_read_timeout(Some(wait)).unwrap();
            let t = std::time::Instant::now();
            let mut b = [0u8; 1];
            match over.read(&mut b) {
                Ok(0) => {}
                Ok(_) => panic!("got a byte"),
                Err(e) => assert!(
                    !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ),
                    "not closed: {e}"
                ),
            }
            assert!(t.elapsed() < Duration::from_secs(2));
        }
        assert!(rx.try_recv().is_err());
        assert_eq!(logs.lock().unwrap().len(), 1, "one line per burst");
        // One ends: the next is served again.
        drop(served.pop());
        assert_eq!(live.load(Ordering::Acquire), MAX - 1);
        let _again = TcpStream::connect(addr).unwrap();
        served.push(next());
        assert_eq!(live.load(Ordering::Acquire), MAX);
        // The loop is gone: the thread ends at its next connection.
        drop(rx);
        drop(served);
        let _last = TcpStream::connect(addr).unwrap();
        thread.join().unwrap();
        drop(clients);
    }

    #[test]
    fn bounds_are_consistent() {
        const { assert!(HANDSHAKE_READ >= 2 + 255 + 4 + 1 + 255 + 2) };
    }
}
