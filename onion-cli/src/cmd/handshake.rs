//! `onion handshake ADDR:PORT --rsa-id HEX [--ed-id BASE64] [--timeout SECS]`: open a
//! channel to one relay (TLS, then the link handshake of tor-spec §4) and print, as JSON, the
//! negotiated link version and the identities the relay proved with its CERTS cell.
//!
//! The relay must prove the given identities: a mismatch is an error (exit status 1).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use onion_circuit::channel::{ChanConfig, ChanEvent, ChanOpen, Channel, PeerIds};
use onion_circuit::Instant;
use onion_crypto::{Ed25519Identity, RsaIdentity};

use crate::net::tls::TlsLink;
use crate::net::Clock;

/// `onion handshake` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    /// The relay's ORPort.
    #[arg(value_name = "ADDR:PORT", value_parser = parse_addr)]
    addr: SocketAddr,
    /// The RSA identity the relay must prove (40 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_rsa)]
    rsa_id: RsaIdentity,
    /// The ed25519 identity the relay must prove (base64).
    #[arg(long, value_name = "BASE64", value_parser = parse_ed)]
    ed_id: Option<Ed25519Identity>,
    /// Time limit in seconds (1-600).
    #[arg(long, value_name = "SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("bad address {s:?} (want IP:PORT)"))
}

fn parse_rsa(s: &str) -> Result<RsaIdentity, String> {
    RsaIdentity::from_hex(s).map_err(|e| format!("--rsa-id {s:?}: {e}"))
}

fn parse_ed(s: &str) -> Result<Ed25519Identity, String> {
    Ed25519Identity::from_base64(s).map_err(|e| format!("--ed-id {s:?}: {e}"))
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let (addr, rsa, ed) = (args.addr, args.rsa_id, args.ed_id);
    let timeout = Duration::from_secs(args.timeout);
    let expected = PeerIds {
        rsa: Some(rsa),
        ed25519: ed,
    };
    let (mut tls, open) = open_channel(addr, expected, timeout)?;
    let out = serde_json::json!({
        "addr": addr.to_string(),
        "link_version": open.link_version,
        "rsa_id": open.peer.rsa.map(|i| i.to_string()),
        "ed_id": open.peer.ed25519.map(|i| i.to_base64()),
        "rsa_verified": open.peer.rsa == Some(rsa),
        "ed_verified": open.peer.ed25519.is_some() && (ed.is_none() || open.peer.ed25519 == ed),
        "tls_cert_sha256": hex::encode(tls.cert_sha256()),
        "clock_skew_secs": open.clock_skew_secs,
    });
    tls.close();
    println!("{out}");
    Ok(())
}

/// TLS to `addr`, then the link handshake (tor-spec §4: VERSIONS, CERTS, AUTH_CHALLENGE,
/// NETINFO) as the initiator expecting `expected`, all within `timeout`.
fn open_channel(
    addr: SocketAddr,
    expected: PeerIds,
    timeout: Duration,
) -> Result<(TlsLink, ChanOpen), String> {
    let mut link = LinkChannel::connect(addr, expected, timeout)?;
    let deadline = link.clock.now() + timeout;
    loop {
        while let Some(ev) = link.chan.poll_event() {
            match ev {
                ChanEvent::Open(open) => return Ok((link.tls, open)),
                ChanEvent::Closed(e) => return Err(format!("{addr}: channel: {e}")),
                _ => {}
            }
        }
        match link.pump(deadline)? {
            Pumped::Input => {}
            Pumped::Deadline => {
                return Err(format!(
                    "{addr}: link handshake timed out after {timeout:?}"
                ))
            }
            Pumped::Eof => {
                link.chan.handle_connection_closed();
                return Err(match link.chan.poll_event() {
                    Some(ChanEvent::Closed(e)) => format!("{addr}: channel: {e}"),
                    _ => format!("{addr}: connection closed during the handshake"),
                });
            }
        }
    }
}

/// What [`LinkChannel::pump`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// The channel got input or a timer fired: poll its events.
    Input,
    /// The deadline passed.
    Deadline,
    /// The relay closed the connection.
    Eof,
}

/// A channel (tor-spec §4, as the initiator) to one relay over a blocking TLS link, for the
/// commands that talk to that relay and nothing else (`onion handshake`, the relay's
/// reachability self-test): no event loop, the channel's own timers and the caller's
/// deadline bound every read. Drive it as
/// `loop { drain link.chan.poll_event(); link.pump(deadline)? }`.
pub struct LinkChannel {
    /// The channel: poll its events, send cells on it.
    pub chan: Channel,
    /// The clock the channel runs on.
    pub clock: Clock,
    tls: TlsLink,
    addr: SocketAddr,
    sock: TcpStream,
    /// Plaintext received and not yet consumed by the channel (it stops early when its
    /// event queue is full; at most what one read brought).
    plain: Vec<u8>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl LinkChannel {
    /// TCP and TLS to `addr` within `timeout`, and a channel expecting `expected` that has
    /// started its handshake (handshake timeout `timeout`).
    pub fn connect(
        addr: SocketAddr,
        expected: PeerIds,
        timeout: Duration,
    ) -> Result<LinkChannel, String> {
        let clock = Clock::new();
        let mut tls = TlsLink::connect(addr, timeout).map_err(|e| e.to_string())?;
        let mut config = ChanConfig::default();
        config.handshake_timeout = timeout;
        config.peer_addr = Some(addr.ip());
        let cert = tls.cert_sha256();
        let chan = Channel::initiator(config, expected, Some(cert), clock.now(), SystemTime::now());
        let sock = tls.reader().map_err(|e| format!("{addr}: {e}"))?;
        let plain = tls.feed(&[]).map_err(|e| e.to_string())?;
        let mut link = LinkChannel {
            chan,
            clock,
            tls,
            addr,
            sock,
            plain,
            out: Vec::new(),
            buf: vec![0u8; 16 * 1024],
        };
        link.feed_channel();
        Ok(link)
    }

    /// Give the channel the plaintext it has not consumed yet.
    fn feed_channel(&mut self) {
        if !self.plain.is_empty() {
            // A protocol error closes the channel (all input consumed) and arrives as
            // ChanEvent::Closed.
            let used = self.chan.handle_input(self.clock.now(), &self.plain);
            self.plain.drain(..used.min(self.plain.len()));
        }
    }

    /// Send what the channel has to send, then wait for the relay until `deadline` or the
    /// channel's next timer, and give the channel what came (or the timer). Call it after
    /// draining the channel's events.
    pub fn pump(&mut self, deadline: Instant) -> Result<Pumped, String> {
        let addr = self.addr;
        if !self.plain.is_empty() {
            // Input held back by a full event queue, which the caller has drained since.
            self.feed_channel();
            return Ok(Pumped::Input);
        }
        while self.chan.poll_transmit(&mut self.out).is_some() {
            let left = self.clock.until(deadline).max(Duration::from_millis(1));
            let sent = self.tls.send(&self.out, left);
            self.out.clear();
            sent.map_err(|e| e.to_string())?;
        }
        if self.clock.now() >= deadline {
            return Ok(Pumped::Deadline);
        }
        let wake = self
            .chan
            .poll_timeout()
            .map_or(deadline, |t| t.min(deadline));
        let wait = self.clock.until(wake).max(Duration::from_millis(1));
        self.sock
            .set_read_timeout(Some(wait))
            .map_err(|e| format!("{addr}: {e}"))?;
        match self.sock.read(&mut self.buf) {
            Ok(0) => Ok(Pumped::Eof),
            Ok(n) => {
                let plain = self.tls.feed(&self.buf[..n]).map_err(|e| e.to_string())?;
                self.plain.extend(plain);
                self.feed_channel();
                Ok(Pumped::Input)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                self.chan.handle_timeout(self.clock.now());
                Ok(Pumped::Input)
            }
            Err(e) => Err(format!("{addr}: {e}")),
        }
    }

    /// Close the TLS connection (best effort).
    pub fn close(&mut self) {
        self.tls.close();
    }
}
