//! `onion serve --target 127.0.0.1:PORT --key-dir DIR [--port VIRTPORT]
//! [--client-auth FILE|DIR]... [--authorities FILE] [--data-dir DIR] [--timeout SECS]`: host
//! a v3 onion service whose streams to VIRTPORT (default 80) are forwarded to the local TCP
//! port, as C tor's `HiddenServicePort VIRTPORT 127.0.0.1:PORT`.
//!
//! `--client-auth` (repeatable) restricts the service to authorized clients (rend-spec-v3
//! §1.9.1, §2.5.1): each FILE, or each `*.auth` file in DIR (C tor's
//! `authorized_clients/`), holds `descriptor:x25519:<base32 public key>`; only the holders of
//! the matching private keys (`onion get --client-key`, C tor's `ClientOnionAuthDir`) can
//! decrypt the descriptor.
//!
//! The identity key is read from, or created in, DIR in C tor's formats
//! (`hs_ed25519_secret_key`, `hs_ed25519_public_key`, `hostname`), so a C tor service
//! directory can be served by onion and back; it is the state an embedder keeps for
//! [`Client::host_onion_service`] to host the same service after a restart. The address is
//! the first line on stdout; progress goes to stderr ("service published" once the first
//! descriptor reached an HSDir). The target must accept connections at startup. Runs until
//! killed.
//!
//! Everything Tor runs on [`onion_client::Client`] ([`Driver`]): publication, introduction
//! points and their rotation, INTRODUCE2 admission (25/s, bursts of 200, at most 64
//! waiting: `onion_client::hs::HostConfig`), rendezvous circuits, and the directory
//! refreshes. This module connects each stream the client hands over
//! ([`Event::IncomingStream`]) to the target and moves bytes both ways with a bound on
//! each:
//!
//! - **Client to target.** Bytes are read from the stream only while the target socket's
//!   output queue is under [`OUT_HIGH`](crate::net::pipe::OUT_HIGH) (then until it drains
//!   to [`OUT_LOW`]); meanwhile the stream's receive buffer in the client fills and the
//!   client holds that stream only (no stream SENDME, tor-spec §7.4, or XOFF under
//!   congestion control), so a target that stops reading stops its own client.
//! - **Target to client.** The target is read only as far as [`Client::write`] takes its
//!   bytes ([`READ_AHEAD`] ahead at most): when the stream's windows are full, TCP holds the
//!   target back until [`Event::StreamWritable`].
//! - A stream is answered only once its target connection is made, as C tor's service
//!   does: the client gets RELAY_CONNECTED ([`Client::accept_stream`]) when the target
//!   accepted, and RELAY_END ([`Client::reject_stream`]) with the reason C tor's service
//!   sends for the same failure ([`end_reason_for`]: CONNECTREFUSED for a refused
//!   connection, so a C tor client's SOCKS application sees "connection refused" at once
//!   instead of an empty reply).
//! - At most [`MAX_TARGETS`] target connections are open; a stream beyond that is refused
//!   at once (END RESOURCELIMIT). The target is connected on a thread of its own (within
//!   [`TARGET_CONNECT_TIMEOUT`]), so the loop never waits for it.
//!
//! Congestion control (proposal 324) runs by default, as C tor 0.4.9 does when
//! its consensus enables it (cc_alg != 0): the descriptor advertises
//! `flow-control 1-2 <cc_sendme_inc>`, and the rendezvous circuit of a client that asks for
//! it in INTRODUCE2 runs Tor Vegas on the client's virtual hop ("rendezvous with a client
//! (congestion control, ...)" on stderr); a client that does not ask gets fixed windows.
//! With `--no-congestion-control`, or when the consensus disables it, the descriptor has no
//! `flow-control` line and an introduction that asks anyway is dropped.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_circuit::Instant;
use onion_client::hs::{HostConfig, ServiceStats};
use onion_client::{Client, Event, ServiceHandle, StreamHandle};
use onion_hs::x25519_dalek::PublicKey as XPublic;
use onion_hs::ExpandedKeypair;
use rand_core::OsRng;

use super::get::NetArgs;
use crate::net::driver::{self, Driver, Happening};
use crate::net::event::{self, Input};
use crate::net::pipe::{next_blocked, read_grant, Pipe, OUT_LOW, READ_AHEAD};
use crate::net::private::{self, DirKind};

/// `onion serve` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    /// The local TCP service that streams to the virtual port are forwarded to.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_target)]
    target: SocketAddr,
    /// The service's key directory (C tor's `HiddenServiceDir` files; created if missing).
    #[arg(long, value_name = "DIR")]
    key_dir: PathBuf,
    /// The onion service's virtual port (C tor's `HiddenServicePort VIRTPORT`).
    #[arg(long, value_name = "VIRTPORT", default_value_t = 80,
          value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Authorized clients: a `<name>.auth` file or a directory of them (repeatable).
    #[arg(long, value_name = "FILE|DIR")]
    client_auth: Vec<PathBuf>,
    /// Congestion control offered to clients: the descriptor advertises flow-control, and
    /// clients that ask get it.
    #[command(flatten)]
    cc: super::get::CcArgs,
    #[command(flatten)]
    net: NetArgs,
}

fn parse_target(v: &str) -> Result<SocketAddr, String> {
    let t: SocketAddr = v.parse().map_err(|_| format!("{v:?}: not an ADDR:PORT"))?;
    if t.port() == 0 {
        return Err(format!("{v:?}: port 0"));
    }
    Ok(t)
}

const SECRET_FILE: &str = "hs_ed25519_secret_key";
const SECRET_HEADER: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";
const PUBLIC_HEADER: &[u8; 32] = b"== ed25519v1-public: type0 ==\0\0\0";

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let Args {
        target,
        key_dir,
        port,
        client_auth,
        cc,
        net,
    } = args;
    let congestion_control = cc.enabled();
    let mut clients: Vec<XPublic> = Vec::new();
    for path in &client_auth {
        clients.extend(read_client_auth(path)?);
    }
    let opts = net.open()?;
    let identity = load_or_create_key(&key_dir)?;
    // A target that is not listening is almost surely a typo: say so now, not per stream.
    TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .map_err(|e| format!("--target {target}: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", identity.id_key().address())
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);

    let mut cfg = opts.client_config()?;
    cfg.congestion_control = congestion_control;
    let mut d = Driver::new(cfg, opts.cache.clone())?;
    let dir = d.bootstrap(d.deadline(opts.timeout))?;
    // The consensus decides both the descriptor's line and the circuits' parameters; the
    // client reads them itself, this is what it will offer.
    if congestion_control {
        match dir.congestion_control(onion_dir::ccparams::CcPath::Onion) {
            Some(c) => eprintln!(
                "onion: congestion control offered (flow-control 1-2 {})",
                c.sendme_inc
            ),
            None => eprintln!("onion: the consensus disables congestion control (cc_alg=0)"),
        }
    }
    if !clients.is_empty() {
        eprintln!(
            "onion: client authorization: {} authorized client(s)",
            clients.len()
        );
    }
    let mut config = HostConfig::new(identity, vec![port]);
    config.authorized_clients = clients;
    let service = d
        .client
        .host_onion_service(config, d.now())
        .map_err(|e| format!("hosting the service: {e}"))?;
    let (connected_tx, connected_rx) = channel();
    let mut s = Serve {
        service,
        target,
        port,
        targets: HashMap::new(),
        by_stream: HashMap::new(),
        connected_tx,
        connected_rx,
        stats: ServiceStats::default(),
        announced: BTreeSet::new(),
    };
    loop {
        // The service's counters are looked at once a second at least: publication and
        // introductions happen inside the client without an event for the application.
        let wake = d.deadline(STATS_INTERVAL);
        match d.next(Some(wake)) {
            None => {}
            Some(Happening::App(input)) => s.input(&mut d, input),
            Some(Happening::Client(ev)) => s.event(&mut d, ev),
        }
        s.report(&d.client);
    }
}

/// How often the service's counters are reported, at most.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Target connections open (or being opened) at once, at most: each costs a socket and two
/// threads ([`Pipe`]). A stream beyond it is closed at once.
pub const MAX_TARGETS: usize = 256;

/// How long connecting to the target may take: less than the client's bound on an
/// undecided stream (`HostConfig::undecided_timeout`, 10 s), so that the stream is answered
/// with the connect's own outcome.
pub const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(8);

/// Circuits remembered as announced: far more than the rendezvous circuits open at once.
const MAX_ANNOUNCED: usize = 1024;

/// One client stream and its target connection.
enum Target {
    /// The target is being connected; the stream's bytes wait in the client.
    Connecting(StreamHandle),
    /// Connected: bytes move both ways.
    Open {
        stream: StreamHandle,
        pipe: Pipe,
        /// The target's bytes the stream has not taken yet.
        up: Vec<u8>,
        /// Read credit granted and not yet arrived.
        in_flight: usize,
        /// The target closed its side.
        eof: bool,
        /// The target's output queue is full: the stream is not read.
        blocked: bool,
    },
}

/// The service's state besides the client.
struct Serve {
    service: ServiceHandle,
    target: SocketAddr,
    port: u16,
    /// Target connections by inbox id.
    targets: HashMap<event::ConnId, Target>,
    by_stream: HashMap<StreamHandle, event::ConnId>,
    /// Finished target connects (each also wakes the loop under its inbox id).
    connected_tx: Sender<(event::ConnId, std::io::Result<TcpStream>)>,
    connected_rx: Receiver<(event::ConnId, std::io::Result<TcpStream>)>,
    /// The counters last reported.
    stats: ServiceStats,
    /// The rendezvous circuits already announced, at most [`MAX_ANNOUNCED`].
    announced: BTreeSet<u64>,
}

impl Serve {
    fn event(&mut self, d: &mut Driver, ev: Event) {
        let now = d.now();
        let (stream, closed) = match ev {
            Event::IncomingStream { stream, port, .. } => {
                return self.incoming(d, stream, port);
            }
            Event::StreamReadable { stream } | Event::StreamWritable { stream } => (stream, false),
            Event::StreamClosed { stream, .. } => (stream, true),
            Event::Bootstrap { percent, what } => return driver::progress(percent, &what),
            Event::DirectoryFailed(e) => {
                return eprintln!("onion: directory refresh failed: {e}; retrying later")
            }
            _ => return,
        };
        let Some(&id) = self.by_stream.get(&stream) else {
            return;
        };
        if let Some(Target::Connecting(_)) = self.targets.get(&id) {
            // Ended before the target was reached: the connect's result will be dropped.
            if closed {
                self.by_stream.remove(&stream);
                self.targets.remove(&id);
                d.client.close(stream, now);
            }
            return;
        }
        self.pump(&mut d.client, id, now);
    }

    /// A client opened a stream to the service: announce its circuit once, and connect the
    /// target on a thread of its own.
    fn incoming(&mut self, d: &mut Driver, stream: StreamHandle, port: u16) {
        let now = d.now();
        if let Some(view) = d.client.stream_circuit(stream) {
            if self.announced.insert(view.circuit) {
                while self.announced.len() > MAX_ANNOUNCED {
                    self.announced.pop_first();
                }
                match view.congestion_control {
                    Some(cc) => eprintln!(
                        "onion: rendezvous with a client (congestion control, sendme_inc {})",
                        cc.sendme_inc
                    ),
                    None => eprintln!("onion: rendezvous with a client"),
                }
            }
        }
        if port != self.port || self.targets.len() >= MAX_TARGETS {
            // The client refuses other ports itself; this is a second line.
            let reason = if port == self.port {
                eprintln!("onion: {MAX_TARGETS} target connections open: stream refused");
                EndReason::RESOURCELIMIT
            } else {
                EndReason::DONE
            };
            return refuse(&mut d.client, stream, reason, now);
        }
        let (id, wake) = d.app_sender();
        let tx = self.connected_tx.clone();
        let target = self.target;
        let spawned = std::thread::Builder::new()
            .name(format!("connect-{id}"))
            .spawn(move || {
                let r = TcpStream::connect_timeout(&target, TARGET_CONNECT_TIMEOUT);
                if tx.send((id, r)).is_ok() {
                    // Wake the loop; the result waits in the channel.
                    let _ = wake.send(Input::Bytes(id, Vec::new()));
                }
            });
        if spawned.is_err() {
            return refuse(&mut d.client, stream, EndReason::RESOURCELIMIT, now);
        }
        self.targets.insert(id, Target::Connecting(stream));
        self.by_stream.insert(stream, id);
    }

    fn input(&mut self, d: &mut Driver, input: Input) {
        let now = d.now();
        while let Ok((id, r)) = self.connected_rx.try_recv() {
            self.connected(d, id, r);
        }
        match input {
            Input::Bytes(id, data) => {
                if let Some(Target::Open { up, in_flight, .. }) = self.targets.get_mut(&id) {
                    *in_flight = in_flight.saturating_sub(data.len());
                    up.extend_from_slice(&data);
                }
                self.pump(&mut d.client, id, now);
            }
            // End of the target's output (a failed write is reported the same way): the
            // stream ends once what was read is sent.
            Input::Closed(id, _) => {
                if let Some(Target::Open { eof, .. }) = self.targets.get_mut(&id) {
                    *eof = true;
                }
                self.pump(&mut d.client, id, now);
            }
            Input::Accepted(_) => {}
        }
    }

    /// A target connect finished: accept the stream and start moving bytes, or refuse it
    /// with the reason for the failure.
    fn connected(&mut self, d: &mut Driver, id: event::ConnId, r: std::io::Result<TcpStream>) {
        let Some(Target::Connecting(stream)) = self.targets.get(&id) else {
            // The stream ended meanwhile: the socket is just dropped.
            return;
        };
        let stream = *stream;
        let (_, tx) = d.app_sender();
        let pipe = r.and_then(|sock| {
            let _ = sock.set_nodelay(true);
            Pipe::start(sock, id, tx)
        });
        let now = d.now();
        match pipe {
            Ok(pipe) => {
                if let Err(e) = d.client.accept_stream(stream, now) {
                    // The client gave up or timed the stream out meanwhile.
                    debug(&format!("stream {}: {e}", stream.get()));
                    self.targets.remove(&id);
                    self.by_stream.remove(&stream);
                    d.client.close(stream, now);
                    pipe.finish();
                    return;
                }
                let t = Target::Open {
                    stream,
                    pipe,
                    up: Vec::new(),
                    in_flight: 0,
                    eof: false,
                    blocked: false,
                };
                self.targets.insert(id, t);
                self.pump(&mut d.client, id, now);
            }
            Err(e) => {
                let reason = end_reason_for(&e);
                eprintln!(
                    "onion: target {}: {e}: stream refused ({reason:?})",
                    self.target
                );
                self.targets.remove(&id);
                self.by_stream.remove(&stream);
                refuse(&mut d.client, stream, reason, now);
            }
        }
    }

    /// Move bytes both ways for target connection `id` as far as the stream and the socket
    /// allow; end it when either side ended.
    fn pump(&mut self, client: &mut Client, id: event::ConnId, now: Instant) {
        let Some(Target::Open {
            stream,
            pipe,
            up,
            in_flight,
            eof,
            blocked,
        }) = self.targets.get_mut(&id)
        else {
            return;
        };
        let stream = *stream;
        while !up.is_empty() {
            match client.write(stream, up, now) {
                Ok(0) => break,
                Ok(n) => {
                    up.drain(..n);
                }
                Err(_) => {
                    up.clear();
                    break;
                }
            }
        }
        let mut ended = *eof && up.is_empty();
        // The queue may have drained since the stream was last read (the writer's wake-up).
        *blocked = next_blocked(*blocked, pipe.queued());
        let mut buf = [0u8; 16 * 1024];
        while !*blocked && !ended {
            match client.read(stream, &mut buf, now) {
                Ok(None) => break,
                Ok(Some(0)) => ended = true,
                Ok(Some(n)) => {
                    pipe.push(&buf[..n]);
                    *blocked = next_blocked(false, pipe.queued());
                }
                Err(e) => {
                    debug(&format!("stream {}: {e}", stream.get()));
                    ended = true;
                }
            }
        }
        if ended {
            // As C tor: either side's end ends the stream; what the target still has to
            // receive is flushed first.
            client.close(stream, now);
            self.by_stream.remove(&stream);
            if let Some(Target::Open { pipe, .. }) = self.targets.remove(&id) {
                pipe.finish();
            }
            return;
        }
        if *blocked {
            pipe.wake_below(OUT_LOW);
        }
        let g = read_grant(READ_AHEAD, up.len(), *in_flight);
        pipe.grant(g);
        *in_flight += g;
    }

    /// Log what changed in the service's counters: the first descriptor upload ("service
    /// published"), later uploads, and introductions that were dropped.
    fn report(&mut self, client: &Client) {
        let Some(now) = client.onion_service_stats(self.service) else {
            return;
        };
        let was = std::mem::replace(&mut self.stats, now);
        let published = format!("port {} to {}", self.port, self.target);
        for line in stats_lines(&was, &now, &published) {
            eprintln!("onion: {line}");
        }
    }
}

/// The log lines for the service's counters going from `was` to `now`: "service published;
/// forwarding `forwarding`" at the first successful upload (what the tests and users wait
/// for), then upload totals, and a line whenever introductions were dropped (rate limit,
/// full queue, replays, invalid, stale) or a rendezvous was given up.
fn stats_lines(was: &ServiceStats, now: &ServiceStats, forwarding: &str) -> Vec<String> {
    let mut out = Vec::new();
    if now.uploads_ok > was.uploads_ok {
        if was.uploads_ok == 0 {
            out.push(format!("service published; forwarding {forwarding}"));
        }
        out.push(format!(
            "descriptor uploads: {} done, {} failed",
            now.uploads_ok, now.uploads_failed
        ));
    } else if now.uploads_failed > was.uploads_failed {
        out.push(format!(
            "descriptor upload to an HSDir failed ({} done, {} failed)",
            now.uploads_ok, now.uploads_failed
        ));
    }
    let dropped = |s: &ServiceStats| {
        [
            s.dropped_rate,
            s.dropped_queue_full,
            s.replays,
            s.invalid,
            s.stale,
        ]
    };
    if dropped(now) != dropped(was) {
        out.push(format!(
            "introductions dropped: {} over the rate limit, {} with the queue full, {} \
             replays, {} invalid, {} waited too long",
            now.dropped_rate, now.dropped_queue_full, now.replays, now.invalid, now.stale
        ));
    }
    if now.rendezvous_failed > was.rendezvous_failed {
        out.push(format!(
            "rendezvous given up: {} of {}",
            now.rendezvous_failed,
            now.rendezvous + now.rendezvous_failed
        ));
    }
    out
}

/// Refuse the undecided stream `stream` with `reason`; one the client ended meanwhile is
/// just forgotten.
fn refuse(client: &mut Client, stream: StreamHandle, reason: EndReason, now: Instant) {
    if client.reject_stream(stream, reason, now).is_err() {
        client.close(stream, now);
    }
}

/// The END reason for a failed connection to the target, as C tor's service sends it
/// (`errno_to_stream_end_reason`, tor-spec §6.3): refused → CONNECTREFUSED, reset →
/// CONNRESET, timed out → TIMEOUT, unreachable network or host or not permitted →
/// NOROUTE, out of sockets or addresses → RESOURCELIMIT, anything else → MISC.
fn end_reason_for(e: &std::io::Error) -> EndReason {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => EndReason::CONNECTREFUSED,
        K::ConnectionReset => EndReason::CONNRESET,
        K::TimedOut => EndReason::TIMEOUT,
        K::NetworkUnreachable | K::HostUnreachable | K::PermissionDenied => EndReason::NOROUTE,
        K::AddrInUse | K::AddrNotAvailable | K::OutOfMemory => EndReason::RESOURCELIMIT,
        _ => EndReason::MISC,
    }
}

/// A line for whoever debugs the service (`ONION_DEBUG=1`).
fn debug(what: &str) {
    if std::env::var_os("ONION_DEBUG").is_some() {
        eprintln!("onion: debug: {what}");
    }
}

/// The largest `.auth` file read: one is a single `descriptor:x25519:<52 base32 chars>` line
/// of about 71 bytes; C tor sets no bound of its own, so this one leaves ample room for
/// whitespace while keeping a mistaken `--client-auth` (a large file) from being read whole.
const MAX_CLIENT_AUTH_FILE: u64 = 4096;

/// The most `*.auth` files read from one directory. A descriptor is at most 50,000 bytes
/// (rend-spec-v3 §2.5, C tor's `HS_DESC_MAX_LEN`) and each client costs an `auth-client`
/// line of 70 bytes that is encrypted and base64-encoded again in the outer layer (rend-spec
/// §2.5.1.2 and §2.5.2), so no more than about 530 clients fit; C tor counts none itself.
const MAX_CLIENT_AUTH_FILES: usize = 512;

/// Authorized clients' public keys from a `<name>.auth` file, or from every `*.auth` file of a
/// directory (C tor's `authorized_clients/`), in file-name order. Each file is at most
/// [`MAX_CLIENT_AUTH_FILE`] bytes and a directory holds at most [`MAX_CLIENT_AUTH_FILES`]
/// of them; beyond either the error is one line naming the path and the bound.
fn read_client_auth(path: &Path) -> Result<Vec<XPublic>, String> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("--client-auth {p}: {e}"))?;
    let files = if meta.is_dir() {
        let mut v: Vec<std::path::PathBuf> = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| format!("--client-auth {p}: {e}"))?;
        for f in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if f.extension().is_some_and(|x| x == "auth") {
                if v.len() == MAX_CLIENT_AUTH_FILES {
                    return Err(format!(
                        "--client-auth {p}: more than {MAX_CLIENT_AUTH_FILES} *.auth files"
                    ));
                }
                v.push(f);
            }
        }
        v.sort();
        if v.is_empty() {
            return Err(format!("--client-auth {p}: no *.auth files"));
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .map(|f| {
            let text = read_bounded_text(f, MAX_CLIENT_AUTH_FILE)
                .map_err(|e| format!("--client-auth {}: {e}", f.display()))?;
            onion_hs::keyfile::parse_authorized_client(&text)
                .map_err(|e| format!("--client-auth {}: {e}", f.display()))
        })
        .collect()
}

/// The text of `f`, refused if it is longer than `max` bytes or not UTF-8.
fn read_bounded_text(f: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(f)
        .and_then(|h| h.take(max.saturating_add(1)).read_to_end(&mut data))
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > max {
        return Err(format!("longer than {max} bytes"));
    }
    String::from_utf8(data).map_err(|_| "not UTF-8 text".to_string())
}

/// The identity key in `dir` (C tor's `hs_ed25519_secret_key`), or a new one written there
/// with `hs_ed25519_public_key` and `hostname`. The directory must be private
/// ([`private::check_private_dir`] with [`DirKind::Keys`]: created 0700 if missing; refused
/// if another user owns it or others may read or write it, as C tor refuses such a
/// `HiddenServiceDir`), and so must an existing secret key file (refused if its mode lets
/// others read it). New files are written 0600.
fn load_or_create_key(dir: &Path) -> Result<ExpandedKeypair, String> {
    let d = dir.display();
    create_private_dir(dir).map_err(|e| format!("--key-dir: {e}"))?;
    let file = dir.join(SECRET_FILE);
    // The file is 96 bytes (a 32-byte header and the expanded key); anything much longer
    // is not read.
    match private::read_secret(&file, 4096) {
        Ok(data) => {
            let data = zeroize::Zeroizing::new(data);
            return ExpandedKeypair::from_tor_file(&data)
                .map_err(|e| format!("{}: {e}", file.display()));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("--key-dir: {e}"))
        }
        Err(_) => {}
    }
    let key = ExpandedKeypair::generate(&mut OsRng);
    let mut secret = SECRET_HEADER.to_vec();
    secret.extend_from_slice(&zeroize::Zeroizing::new(key.to_expanded_bytes())[..]);
    let mut public = PUBLIC_HEADER.to_vec();
    public.extend_from_slice(key.public_bytes());
    let hostname = format!("{}\n", key.id_key().address());
    // The secret key goes last: a run interrupted before it leaves no key, and the next run
    // makes a new one and rewrites the other two files.
    let r = write_private(dir, "hs_ed25519_public_key", &public)
        .and_then(|_| write_private(dir, "hostname", hostname.as_bytes()))
        .and_then(|_| write_private(dir, SECRET_FILE, &secret));
    zeroize::Zeroize::zeroize(&mut secret);
    r.map_err(|e| format!("--key-dir {d}: {e}"))?;
    eprintln!("onion: new onion-service key written to {d}");
    Ok(key)
}

/// Check (or create, mode 0700) the key directory: see [`private::check_private_dir`].
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    private::check_private_dir(dir, DirKind::Keys)
}

/// Write the file `name` of the key directory `dir`, readable by its owner only and
/// replaced atomically ([`private::write_atomic`]).
fn write_private(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    private::write_atomic(dir, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("onion-serve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// "service published" comes once, at the first successful upload; later uploads and
    /// failures give totals; dropped introductions and lost rendezvous are each reported;
    /// nothing changed, nothing logged.
    #[test]
    fn service_counters_become_log_lines() {
        let zero = ServiceStats::default();
        let fwd = "port 80 to 127.0.0.1:8080";
        assert!(stats_lines(&zero, &zero, fwd).is_empty());
        let one = ServiceStats {
            uploads_ok: 1,
            ..zero
        };
        let lines = stats_lines(&zero, &one, fwd);
        assert_eq!(
            lines,
            [
                "service published; forwarding port 80 to 127.0.0.1:8080",
                "descriptor uploads: 1 done, 0 failed"
            ]
        );
        let more = ServiceStats {
            uploads_ok: 3,
            uploads_failed: 1,
            ..one
        };
        let lines = stats_lines(&one, &more, fwd);
        assert_eq!(lines, ["descriptor uploads: 3 done, 1 failed"]);
        let failed = ServiceStats {
            uploads_failed: 2,
            ..more
        };
        assert_eq!(
            stats_lines(&more, &failed, fwd),
            ["descriptor upload to an HSDir failed (3 done, 2 failed)"]
        );
        let flood = ServiceStats {
            dropped_rate: 7,
            dropped_queue_full: 2,
            rendezvous: 4,
            rendezvous_failed: 1,
            ..failed
        };
        let lines = stats_lines(&failed, &flood, fwd);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("7 over the rate limit, 2 with the queue full"));
        assert_eq!(lines[1], "rendezvous given up: 1 of 5");
        // Rendezvous that succeed and introductions taken are not logged per client here.
        let busy = ServiceStats {
            introductions: 9,
            rendezvous: 9,
            ..flood
        };
        assert!(stats_lines(&flood, &busy, fwd).is_empty());
    }

    /// A target's connect failures become the END reasons C tor's service sends for them.
    #[test]
    fn target_failures_become_c_tor_end_reasons() {
        use std::io::{Error, ErrorKind as K};
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(end_reason_for(&refused), EndReason::CONNECTREFUSED);
        for (kind, reason) in [
            (K::TimedOut, EndReason::TIMEOUT),
            (K::ConnectionReset, EndReason::CONNRESET),
            (K::HostUnreachable, EndReason::NOROUTE),
            (K::AddrNotAvailable, EndReason::RESOURCELIMIT),
            (K::Other, EndReason::MISC),
        ] {
            assert_eq!(end_reason_for(&Error::from(kind)), reason, "{kind:?}");
        }
    }

    #[test]
    fn key_is_created_then_loaded_in_tor_format() {
        let d = tmp("key");
        let k1 = load_or_create_key(&d).unwrap();
        let secret = std::fs::read(d.join(SECRET_FILE)).unwrap();
        assert_eq!(secret.len(), 96);
        assert_eq!(&secret[..32], SECRET_HEADER);
        let public = std::fs::read(d.join("hs_ed25519_public_key")).unwrap();
        assert_eq!(&public[32..], k1.public_bytes());
        let host = std::fs::read_to_string(d.join("hostname")).unwrap();
        assert_eq!(host.trim(), k1.id_key().address().to_string());
        let k2 = load_or_create_key(&d).unwrap();
        assert_eq!(k1.public_bytes(), k2.public_bytes());
        #[cfg(unix)]
        {
            for f in [SECRET_FILE, "hs_ed25519_public_key", "hostname"] {
                assert_eq!(mode(&d.join(f)), 0o600, "{f}");
            }
            assert_eq!(mode(&d), 0o700);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[cfg(unix)]
    fn chmod(p: &Path, m: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    /// A secret key others may read is refused with one line naming the file and its mode;
    /// so is a key directory others may read or write (as C tor refuses such a
    /// `HiddenServiceDir`); nothing is changed or created then.
    #[cfg(unix)]
    #[test]
    fn keys_and_key_directories_others_can_read_are_refused() {
        let d = tmp("perm");
        let k = load_or_create_key(&d).unwrap();
        chmod(&d.join(SECRET_FILE), 0o644);
        let e = load_or_create_key(&d).err().unwrap();
        assert!(
            e.contains(&d.join(SECRET_FILE).display().to_string())
                && e.contains("mode 0644")
                && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(mode(&d.join(SECRET_FILE)), 0o644, "left as it was");
        chmod(&d.join(SECRET_FILE), 0o600);
        for (m, what) in [
            (0o755, "other users can read it"),
            (0o777, "other users can write"),
        ] {
            chmod(&d, m);
            let e = load_or_create_key(&d).err().unwrap();
            assert!(
                e.contains(what) && e.contains(&format!("{m:04o}")) && !e.contains('\n'),
                "{e}"
            );
            assert_eq!(mode(&d), m, "left as it was");
        }
        chmod(&d, 0o700);
        assert_eq!(
            load_or_create_key(&d).unwrap().public_bytes(),
            k.public_bytes()
        );
        // A world-writable key directory without a key: refused before any key is written.
        std::fs::remove_file(d.join(SECRET_FILE)).unwrap();
        chmod(&d, 0o777);
        assert!(load_or_create_key(&d).is_err());
        assert!(!d.join(SECRET_FILE).exists());
        chmod(&d, 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn client_auth_files_and_directories() {
        let d = tmp("auth");
        std::fs::create_dir_all(&d).unwrap();
        // base32 of 32 bytes of 0x01 and of 0x02 (Python's base64.b32encode).
        let b32 = [
            "AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQ",
            "aibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaiba",
        ];
        let keys = [XPublic::from([1u8; 32]), XPublic::from([2u8; 32])];
        for (name, k) in ["alice", "bob"].iter().zip(b32) {
            let text = format!("descriptor:x25519:{k}\n");
            std::fs::write(d.join(format!("{name}.auth")), text).unwrap();
        }
        std::fs::write(d.join("notes.txt"), "ignored").unwrap();
        assert_eq!(read_client_auth(&d).unwrap(), keys);
        assert_eq!(read_client_auth(&d.join("bob.auth")).unwrap(), keys[1..]);
        std::fs::write(d.join("carol.auth"), "descriptor:x25519:nonsense").unwrap();
        let e = read_client_auth(&d).unwrap_err();
        assert!(e.contains("carol.auth") && !e.contains('\n'), "{e}");
        let e = read_client_auth(&d.join("missing.auth")).unwrap_err();
        assert!(e.starts_with("--client-auth "), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn client_auth_file_size_and_count_are_bounded() {
        let d = tmp("auth-bounds");
        std::fs::create_dir_all(&d).unwrap();
        let line = "descriptor:x25519:AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQ\n";
        // Exactly the bound (the key line padded with trailing whitespace) is read.
        let mut text = line.to_string();
        text.push_str(&" ".repeat(MAX_CLIENT_AUTH_FILE as usize - line.len()));
        let f = d.join("a.auth");
        std::fs::write(&f, &text).unwrap();
        assert_eq!(read_client_auth(&f).unwrap(), [XPublic::from([1u8; 32])]);
        // One byte more is refused with a one-line error naming the bound.
        text.push(' ');
        std::fs::write(&f, &text).unwrap();
        let e = read_client_auth(&f).unwrap_err();
        assert!(
            e.contains("a.auth") && e.contains("longer than 4096 bytes"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        // A directory of exactly MAX_CLIENT_AUTH_FILES files is read; one more is refused.
        std::fs::remove_file(&f).unwrap();
        for i in 0..MAX_CLIENT_AUTH_FILES {
            std::fs::write(d.join(format!("c{i:04}.auth")), line).unwrap();
        }
        assert_eq!(read_client_auth(&d).unwrap().len(), MAX_CLIENT_AUTH_FILES);
        std::fs::write(d.join("extra.auth"), line).unwrap();
        let e = read_client_auth(&d).unwrap_err();
        assert!(
            e.contains("more than 512 *.auth files") && !e.contains('\n'),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_key_file_and_bad_arguments_are_one_line_errors() {
        let d = tmp("bad");
        create_private_dir(&d).unwrap();
        write_private(&d, SECRET_FILE, b"garbage").unwrap();
        let e = load_or_create_key(&d).err().unwrap();
        assert!(e.contains(SECRET_FILE) && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        // Parse as `onion serve` would, then run; a parse error counts as the run's error.
        let run = |v: Vec<String>| -> Result<(), String> {
            let cli = <Cli as clap::Parser>::try_parse_from(
                std::iter::once("serve".to_string()).chain(v),
            )
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())?;
            run(cli.args)
        };
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port().to_string();
        drop(closed);
        let key_dir = tmp("target");
        let e = run(args(&[
            "--target",
            &format!("127.0.0.1:{closed_port}"),
            "--key-dir",
            key_dir.to_str().unwrap(),
        ]))
        .err()
        .unwrap();
        assert!(
            e.starts_with("--target 127.0.0.1:") && !e.contains('\n'),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&key_dir);
        for bad in [
            args(&["--key-dir", "/tmp/x"]),
            args(&["--target", "nonsense", "--key-dir", "/tmp/x"]),
            args(&["--target", "127.0.0.1:0", "--key-dir", "/tmp/x"]),
            args(&[
                "--target",
                "127.0.0.1:80",
                "--key-dir",
                "/tmp/x",
                "--port",
                "0",
            ]),
            args(&["--target", "127.0.0.1:80", "--key-dir", "/proc/nope/x"]),
        ] {
            let e = run(bad).err().unwrap();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
