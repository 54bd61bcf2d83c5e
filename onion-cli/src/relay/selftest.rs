//! The reachability self-test (C tor's `router_do_reachability_checks`, dir-spec §2.1: a
//! relay publishes once it has seen that its ORPort works): the relay opens, as a client,
//! a TLS connection to the ORPort address it is about to publish, completes the link
//! handshake expecting its own identities (tor-spec §4), and builds a one-hop circuit to
//! itself with CREATE2 ntor against its own onion key (tor-spec §5.1). Success means the
//! published address accepts connections, presents certificates that verify, and answers
//! CREATE2: what a client's first hop needs. (C tor routes its test circuit through other
//! relays to learn whether the address is reachable from outside; on a private network's
//! loopback addresses both say the same.) Testing networks skip it with
//! `--assume-reachable`, as C tor's `AssumeReachable`.
//!
//! Bounds: the whole test runs in its own thread under one deadline ([`TIMEOUT`]).

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_crypto::relay_keyset::RelayKeySet;
use rand_core::OsRng;

use crate::net::tls::TlsLink;
use crate::net::Clock;

/// Deadline of one self-test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What the self-test needs of the relay: where it listens and who it is.
#[derive(Debug, Clone)]
pub struct Target {
    /// The ORPort address to be published.
    pub addr: SocketAddr,
    /// The identities and onion key a client learns from the descriptor.
    pub hop: HopTarget,
}

impl Target {
    /// The self-test target of a relay at `addr` with `keys`.
    pub fn new(addr: SocketAddr, keys: &RelayKeySet) -> Target {
        Target {
            addr,
            hop: HopTarget {
                rsa_id: keys.rsa_identity().public().identity(),
                ed_id: Some(keys.ed_identity()),
                ntor_key: *keys.ntor_key().public(),
                addrs: vec![addr],
                ntor_v3: false,
            },
        }
    }
}

/// Runs the self-test; returns how long it took, or why it failed.
pub fn run(t: &Target) -> Result<Duration, String> {
    let clock = Clock::new();
    let deadline = clock.now() + TIMEOUT;
    let addr = t.addr;
    let mut tls = TlsLink::connect(addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    let mut config = ChanConfig::default();
    config.handshake_timeout = TIMEOUT;
    config.peer_addr = Some(addr.ip());
    let expected = PeerIds {
        rsa: Some(t.hop.rsa_id),
        ed25519: t.hop.ed_id,
    };
    let cert = tls.cert_sha256();
    let mut chan = Channel::initiator(config, expected, Some(cert), clock.now(), SystemTime::now());
    let mut sock = tls.reader().map_err(|e| format!("{addr}: {e}"))?;
    let mut plain = tls.feed(&[]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut circ: Option<(onion_cell::CircId, Circuit)> = None;
    let result = loop {
        if !plain.is_empty() {
            let used = chan
                .handle_input(clock.now(), &plain)
                .unwrap_or(plain.len());
            plain.drain(..used.min(plain.len()));
        }
        while let Some(ev) = chan.poll_event() {
            match ev {
                ChanEvent::Open(_) if circ.is_none() => {
                    let (c, create) = Circuit::create(
                        CircConfig::default(),
                        &t.hop,
                        HandshakeKind::Ntor,
                        clock.now(),
                        &mut OsRng,
                    )
                    .map_err(|e| format!("CREATE2: {e}"))?;
                    let id = chan
                        .new_circ_id(&mut OsRng)
                        .map_err(|e| format!("circuit id: {e:?}"))?;
                    chan.send(id, &create)
                        .map_err(|e| format!("CREATE2: {e:?}"))?;
                    circ = Some((id, c));
                }
                ChanEvent::CircuitCell { circ_id, msg } => {
                    if let Some((id, c)) = circ.as_mut() {
                        if *id == circ_id {
                            c.handle_cell(clock.now(), msg)
                                .map_err(|e| format!("circuit: {e}"))?;
                        }
                    }
                }
                ChanEvent::Closed(e) => return Err(format!("{addr}: channel: {e}")),
                _ => {}
            }
        }
        if let Some((_, c)) = circ.as_mut() {
            if let Some(CircEvent::HopAdded { .. }) = c.poll_event() {
                break Ok(clock.until(deadline));
            }
            if c.is_closed() {
                break Err(format!("{addr}: the circuit to ourselves was refused"));
            }
        }
        while chan.poll_transmit(&mut out).is_some() {
            let sent = tls.send(&out, TIMEOUT);
            out.clear();
            sent.map_err(|e| e.to_string())?;
        }
        let now = clock.now();
        if now >= deadline {
            break Err(format!("{addr}: no circuit within {TIMEOUT:?}"));
        }
        let wake = chan.poll_timeout().map_or(deadline, |t| t.min(deadline));
        let wait = clock.until(wake).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))
            .map_err(|e| format!("{addr}: {e}"))?;
        match sock.read(&mut buf) {
            Ok(0) => break Err(format!("{addr}: connection closed")),
            Ok(n) => plain.extend(tls.feed(&buf[..n]).map_err(|e| e.to_string())?),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                chan.handle_timeout(clock.now())
            }
            Err(e) => break Err(format!("{addr}: {e}")),
        }
    };
    tls.close();
    result.map(|left| TIMEOUT.saturating_sub(left))
}
