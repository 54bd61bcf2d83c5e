//! The reachability and bandwidth self-tests (C tor's `router_do_reachability_checks` and
//! `router_perform_bandwidth_test`, dir-spec §2.1: a relay publishes once it has seen that
//! its ORPort works).
//!
//! Reachability: the relay opens, as a client, a TLS connection to the ORPort address it
//! is about to publish, completes the link handshake expecting its own identities (tor-spec
//! §4), and builds a one-hop circuit to itself with CREATE2 ntor against its own onion key
//! (tor-spec §5.1). Success means the published address accepts connections, presents
//! certificates that verify, and answers CREATE2: what a client's first hop needs. (C tor
//! routes its test circuit through other relays to learn whether the address is reachable
//! from outside; on a private network's loopback addresses both say the same.) Testing
//! networks skip it with `--assume-reachable`, as C tor's `AssumeReachable`.
//!
//! Bandwidth: on that circuit the relay then sends itself RELAY_DROP cells (tor-spec §6.1,
//! long-range padding the last hop discards), as many as C tor's bandwidth self-test sends
//! over its testing circuits ([`bandwidth_test_cells`]), so that its bandwidth history
//! ([`onion_relay::bwhist`]) holds the bytes it wrote (this side) and read (the ORPort's
//! side) before its first descriptor: an observed bandwidth of 0 keeps authorities from
//! voting it Fast, and C tor clients choose by that bandwidth. A BEGIN_DIR after the DROP
//! cells, answered by the relay once it has read them all, ends the test (CONNECTED or
//! END: either shows the cells before it were read).
//!
//! Bounds: the whole test runs in its own thread under one deadline ([`TIMEOUT`]); at most
//! [`onion_circuit::flow::CIRC_WINDOW_START`] DROP cells.

use std::net::SocketAddr;
use std::time::Duration;

use onion_cell::chancell::CELL_BODY_LEN;
use onion_cell::relaymsg::RelayMsg;
use onion_circuit::channel::{ChanEvent, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::flow::CIRC_WINDOW_START;
use onion_circuit::stream::StreamEvent;
use onion_crypto::relay_keyset::RelayKeySet;
use rand_core::OsRng;

use crate::cmd::handshake::{LinkChannel, Pumped};

/// Deadline of one self-test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of one cell on a link of version 4 or later (circuit id, command, body; tor-spec
/// §3): C tor's `CELL_MAX_NETWORK_SIZE`.
pub const WIRE_CELL_LEN: u64 = 4 + 1 + CELL_BODY_LEN as u64;

/// How many DROP cells the bandwidth self-test sends for a relay whose bandwidth rate is
/// `rate` bytes per second: ten seconds' worth at that rate, at most one circuit window
/// (C tor's `router_perform_bandwidth_test`, which spreads them over its testing circuits).
pub fn bandwidth_test_cells(rate: u64) -> u64 {
    (rate.saturating_mul(10) / WIRE_CELL_LEN).min(u64::from(CIRC_WINDOW_START))
}

/// What a successful self-test did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How long the circuit to ourselves took to build (reachability).
    pub took: Duration,
    /// DROP cells the relay read on its ORPort, known because it answered the BEGIN_DIR
    /// after them (0 when the bandwidth test failed: the reachability result stands).
    pub cells: u64,
    /// Bytes of cells this side wrote (the CREATE2, the DROP cells, the BEGIN_DIR).
    pub bytes_written: u64,
    /// Why the bandwidth part failed, if it did.
    pub bandwidth_error: Option<String>,
}

/// What the self-test needs of the relay: where it listens and who it is.
#[derive(Debug, Clone)]
pub struct Target {
    /// The ORPort address to be published.
    pub addr: SocketAddr,
    /// The identities and onion key a client learns from the descriptor.
    pub hop: HopTarget,
    /// DROP cells to send once the circuit is built ([`bandwidth_test_cells`]).
    pub drop_cells: u64,
}

impl Target {
    /// The self-test target of a relay at `addr` with `keys` and bandwidth rate `rate`
    /// (bytes per second).
    pub fn new(addr: SocketAddr, keys: &RelayKeySet, rate: u64) -> Target {
        Target {
            addr,
            drop_cells: bandwidth_test_cells(rate),
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

/// Where the self-test stands.
#[derive(Clone, Copy)]
enum Stage {
    /// Waiting for the channel, then for CREATED2.
    Reachability,
    /// The circuit is built after `took` (the ORPort is reachable); the DROP cells and the
    /// BEGIN_DIR (`stream`, once sent) go out, then its answer is awaited.
    Bandwidth {
        took: Duration,
        stream: Option<onion_circuit::stream::StreamId>,
    },
}

/// Runs the self-test; returns what it did, or why the ORPort is not reachable.
pub fn run(t: &Target) -> Result<Outcome, String> {
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
    let mut stage = Stage::Reachability;
    let mut written = 0u64;
    // Ok(Some(outcome)): done; Ok(None): go on; Err: this stage failed.
    let result = loop {
        let step = (|| -> Result<Option<Outcome>, String> {
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
                        written += WIRE_CELL_LEN;
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
            if let Some((id, c)) = circ.as_mut() {
                while let Some(ev) = c.poll_event() {
                    let waiting = match stage {
                        Stage::Reachability => None,
                        Stage::Bandwidth { took, stream } => Some((took, stream)),
                    };
                    match (ev, waiting) {
                        (CircEvent::HopAdded { .. }, None) => {
                            let took = TIMEOUT.saturating_sub(clock.until(deadline));
                            stage = Stage::Bandwidth { took, stream: None };
                            if t.drop_cells == 0 {
                                return Ok(Some(Outcome {
                                    took,
                                    cells: 0,
                                    bytes_written: written,
                                    bandwidth_error: None,
                                }));
                            }
                            for _ in 0..t.drop_cells {
                                c.send_msg(0, None, &RelayMsg::Drop)
                                    .map_err(|e| format!("DROP: {e}"))?;
                                written += send_cells(&mut link.chan, *id, c)?;
                            }
                            let stream = c
                                .begin_dir(clock.now())
                                .map_err(|e| format!("BEGIN_DIR: {e}"))?;
                            written += send_cells(&mut link.chan, *id, c)?;
                            stage = Stage::Bandwidth {
                                took,
                                stream: Some(stream),
                            };
                        }
                        (
                            CircEvent::StreamConnected { stream: s, .. }
                            | CircEvent::Stream(StreamEvent::Ended { stream: s, .. }),
                            Some((took, Some(stream))),
                        ) if s == stream => {
                            return Ok(Some(Outcome {
                                took,
                                cells: t.drop_cells,
                                bytes_written: written,
                                bandwidth_error: None,
                            }));
                        }
                        (CircEvent::Closed { error: Some(e), .. }, _) => {
                            return Err(format!("{addr}: circuit: {e}"))
                        }
                        _ => {}
                    }
                }
                if c.is_closed() {
                    return Err(format!("{addr}: the circuit to ourselves was closed"));
                }
                written += send_cells(&mut link.chan, *id, c)?;
            }
            match link.pump(deadline) {
                Ok(Pumped::Input) => Ok(None),
                Ok(Pumped::Deadline) => Err(format!("{addr}: not done within {TIMEOUT:?}")),
                Ok(Pumped::Eof) => Err(format!("{addr}: connection closed")),
                Err(e) => Err(e),
            }
        })();
        match step {
            Ok(None) => {}
            Ok(Some(outcome)) => break Ok(outcome),
            Err(e) => match stage {
                Stage::Reachability => break Err(e),
                // The ORPort answered CREATE2: reachable, whatever became of the rest.
                Stage::Bandwidth { took, .. } => {
                    break Ok(Outcome {
                        took,
                        cells: 0,
                        bytes_written: written,
                        bandwidth_error: Some(e),
                    })
                }
            },
        }
    };
    link.close();
    result
}

/// Moves the cells `c` has queued to the channel; returns their bytes on the wire.
fn send_cells(
    chan: &mut onion_circuit::channel::Channel,
    id: onion_cell::CircId,
    c: &mut Circuit,
) -> Result<u64, String> {
    let mut n = 0;
    while let Some(cell) = c.poll_cell(&mut OsRng) {
        chan.send(id, &cell).map_err(|e| format!("cell: {e:?}"))?;
        n += WIRE_CELL_LEN;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten seconds' worth of cells at the relay's rate, capped at one circuit window (C
    /// tor's `router_perform_bandwidth_test`: `BandwidthRate * 10 / CELL_MAX_NETWORK_SIZE`,
    /// at most `CIRCWINDOW_START`).
    #[test]
    fn bandwidth_test_sends_ten_seconds_of_cells_at_most_a_window() {
        assert_eq!(WIRE_CELL_LEN, 514);
        assert_eq!(bandwidth_test_cells(1 << 30), 1000);
        assert_eq!(bandwidth_test_cells(u64::MAX), 1000);
        assert_eq!(bandwidth_test_cells(20_560), 400);
        assert_eq!(bandwidth_test_cells(51), 0);
        assert_eq!(bandwidth_test_cells(0), 0);
    }
}
