//! `onion socks --listen 127.0.0.1:PORT [--authorities FILE] [--data-dir DIR] [--timeout SECS]
//! [--dir-mode micro|full] [--allow-non-loopback] [--extended-errors]`:
//! a SOCKS proxy over the stack, as C tor's SocksPort (SOCKS4, SOCKS4a and SOCKS5 CONNECT with a
//! host name or an address; names are resolved by the exit), for curl (`--socks5-hostname`)
//! and browsers.
//!
//! **Names** ([`destination`](onion_client::socks::destination), address-spec §2–3, as C tor's
//! `parse_extended_hostname`). ASCII case is ignored and one trailing dot is dropped
//! (`x.onion.` is `x.onion`: C tor 0.4.9 does not drop it, and sends `x.onion.` to an exit).
//! - `<addr>.onion` and `<anything>.<addr>.onion` go to the onion service `<addr>`
//!   (rend-spec-v3 §2.1), never to an exit: the stream is a
//!   BEGIN with an empty host on the rendezvous circuit (only the port names the target,
//!   rend-spec-v3 §1.1). The rendezvous circuit takes the later streams to that service until
//!   it dies or has taken streams for C tor's `MaxCircuitDirtiness` (10 minutes), as C tor reuses it. A stream the
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
//!   ([`ReplyCode`](onion_client::socks::ReplyCode), 0xF0–0xF7). They are off by default, as in C tor: RFC 1928 leaves the
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
//! The proxy runs on [`onion_client::Client`] ([`super::proxy`]): the client chooses, builds
//! and shares circuits (per isolation token, until they are dirty), retries refused streams
//! and refreshes the directory; the proxy speaks SOCKS and moves bytes with flow control both
//! ways. This module holds the command line, the listening checks, the accept thread and the
//! reply codes.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use crate::cmd::get::NetArgs;
use crate::net::event::Input;

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
    /// Congestion control: a client that stops reading gets its stream stopped by XOFF
    /// where it runs, by stream windows where it does not.
    #[command(flatten)]
    cc: super::get::CcArgs,
    #[command(flatten)]
    net: NetArgs,
}

fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| format!("{v:?}: not an ADDR:PORT"))
}

/// How many SOCKS connections are served at once. Each costs a socket and two threads
/// ([`Pipe`](crate::net::pipe::Pipe)); a browser opens a few dozen at most.
pub(super) const MAX_CONNS: usize = 512;
/// The first pause after `accept` failed.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause after `accept` failed again and again.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How many bytes a client may send before its stream is open (greeting, request and
/// optimistic data; no message is longer than [`onion_client::socks::MAX_MESSAGE`]).
pub(super) const HANDSHAKE_READ: usize = 1024;
/// How long a client may take from connecting to sending a complete greeting and request
/// (`--handshake-timeout`): one that connects and sends nothing, or stops halfway, would
/// otherwise keep its socket and two pipe threads until it disconnects. Ours, not C tor's
/// (which has no such limit of its own); a SOCKS client sends both at once.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

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
        cc,
        net,
    } = args;
    let congestion_control = cc.enabled();
    let handshake_timeout = Duration::from_secs(handshake_timeout);
    let warning = check_listen(listen, allow_non_loopback)?;
    let opts = net.open()?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let listener = TcpListener::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    super::proxy::run(
        &opts,
        listener,
        listen,
        handshake_timeout,
        extended_errors,
        congestion_control,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        const { assert!(HANDSHAKE_READ >= onion_client::socks::MAX_MESSAGE) };
    }
}
