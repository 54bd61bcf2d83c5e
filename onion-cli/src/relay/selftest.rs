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

use std::net::SocketAddr;
use std::time::Duration;

use onion_circuit::channel::{ChanEvent, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_crypto::relay_keyset::RelayKeySet;
use rand_core::OsRng;

use crate::cmd::handshake::{LinkChannel, Pumped};

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
    let addr = t.addr;
    let expected = PeerIds {
        rsa: Some(t.hop.rsa_id),
        ed25519: t.hop.ed_id,
    };
    let mut link =
        LinkChannel::connect(addr, expected, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    let clock = link.clock;
    let deadline = clock.now() + TIMEOUT;
    let mut circ: Option<(onion_cell::CircId, Circuit)> = None;
    let result = loop {
        while let Some(ev) = link.chan.poll_event() {
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
                    let id = link
                        .chan
                        .new_circ_id(&mut OsRng)
                        .map_err(|e| format!("circuit id: {e:?}"))?;
                    link.chan
                        .send(id, &create)
                        .map_err(|e| format!("CREATE2: {e:?}"))?;
                    circ = Some((id, c));
                }
                ChanEvent::CircuitCell { circ_id, msg } => {
                    if let Some((id, c)) = circ.as_mut() {
                        if *id == circ_id {
                            c.handle_cell(clock.now(), msg);
                        }
                    }
                }
                ChanEvent::Closed(e) => return Err(format!("{addr}: channel: {e}")),
                _ => {}
            }
        }
        if let Some((_, c)) = circ.as_mut() {
            match c.poll_event() {
                Some(CircEvent::HopAdded { .. }) => break Ok(clock.until(deadline)),
                Some(CircEvent::Closed { error: Some(e), .. }) => {
                    break Err(format!("{addr}: circuit: {e}"))
                }
                _ => {}
            }
            if c.is_closed() {
                break Err(format!("{addr}: the circuit to ourselves was refused"));
            }
        }
        match link.pump(deadline) {
            Ok(Pumped::Input) => {}
            Ok(Pumped::Deadline) => break Err(format!("{addr}: no circuit within {TIMEOUT:?}")),
            Ok(Pumped::Eof) => break Err(format!("{addr}: connection closed")),
            Err(e) => break Err(e),
        }
    };
    link.close();
    result.map(|left| TIMEOUT.saturating_sub(left))
}
