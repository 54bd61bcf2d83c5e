//! The channel and circuit of a bare client (no directory, no guard logic: the path is
//! given), as the circuit story ([`super::Sim`]) and the congestion-control experiment
//! ([`crate::cc`]) both drive them: the link handshake over one connection to the first hop
//! (tor-spec §4), the circuit created once the channel is open (§5.1), the cells between
//! them, the output for the connection, the timers. What each does with the circuit's
//! events (extending, the stream, the story) stays its own.

use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, InputBuffer, InputFull, PeerIds};
use onion_circuit::circuit::{CircConfig, Circuit, HandshakeKind, HopTarget};
use onion_circuit::Instant;
use onion_crypto::Timestamp;
use rand_chacha::rand_core::CryptoRngCore;

use onion_cell::CircId;

/// One channel to the first hop and the one circuit on it.
#[derive(Debug, Default)]
pub(crate) struct BareCircuit {
    /// The channel, once TCP and TLS are up.
    pub(crate) chan: Option<Channel>,
    /// Bytes from the first hop the channel has not taken yet (it takes less while its
    /// event queue is full); offered again on the next [`BareCircuit::feed`].
    inbuf: InputBuffer,
    /// The circuit and its id on the channel, once created.
    pub(crate) circ: Option<(CircId, Circuit)>,
}

impl BareCircuit {
    /// TCP and TLS are up with the first hop, whose link certificate has `cert_sha256`: the
    /// channel starts its handshake, expecting the identities `expected`.
    pub(crate) fn connected(
        &mut self,
        now: Instant,
        wall: Timestamp,
        expected: PeerIds,
        cert_sha256: [u8; 32],
    ) {
        self.chan = Some(Channel::initiator(
            ChanConfig::default(),
            expected,
            Some(cert_sha256),
            now,
            wall,
        ));
    }

    /// Bytes from the first hop: read where they lie while nothing waits before them, the
    /// rest kept up to `limit` bytes (beyond it the caller fails the run).
    pub(crate) fn received(
        &mut self,
        now: Instant,
        bytes: &[u8],
        limit: usize,
    ) -> Result<(), InputFull> {
        match &mut self.chan {
            Some(chan) => self.inbuf.push_feed(chan, now, bytes, limit).map(|_| ()),
            None => self.inbuf.push(bytes, limit),
        }
    }

    /// Offer the kept bytes to the channel again; whether it took any.
    pub(crate) fn feed(&mut self, now: Instant) -> bool {
        match &mut self.chan {
            Some(chan) => self.inbuf.feed(chan, now).used > 0,
            None => false,
        }
    }

    /// The channel's next event for the caller: cells for the circuit are handed to it here
    /// and not returned.
    pub(crate) fn poll_chan_event(&mut self, now: Instant) -> Option<ChanEvent> {
        loop {
            match self.chan.as_mut()?.poll_event()? {
                ChanEvent::CircuitCell { msg, .. } => {
                    if let Some((_, c)) = &mut self.circ {
                        c.handle_cell(now, msg);
                    }
                }
                ev => return Some(ev),
            }
        }
    }

    /// The channel is open: create the circuit to `first` with `kind` (CREATE2 or
    /// CREATE_FAST on a fresh circuit id). Why it failed, if it did.
    pub(crate) fn create(
        &mut self,
        config: CircConfig,
        first: &HopTarget,
        kind: HandshakeKind,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<CircId, String> {
        let chan = self.chan.as_mut().ok_or("create: no channel")?;
        let (circ, create) =
            Circuit::create(config, first, kind, now, rng).map_err(|e| format!("create: {e}"))?;
        let id = chan
            .new_circ_id(rng)
            .map_err(|e| format!("circuit id: {e}"))?;
        chan.send(id, &create)
            .map_err(|e| format!("send CREATE: {e}"))?;
        self.circ = Some((id, circ));
        Ok(id)
    }

    /// Move the circuit's cells onto the channel: whether any moved, and the first error of
    /// the channel refusing one.
    pub(crate) fn send_cells(&mut self, rng: &mut impl CryptoRngCore) -> (bool, Option<String>) {
        let (Some(chan), Some((id, circ))) = (&mut self.chan, &mut self.circ) else {
            return (false, None);
        };
        let (mut moved, mut err) = (false, None);
        while let Some(m) = circ.poll_cell(rng) {
            moved = true;
            if let Err(e) = chan.send(*id, &m) {
                err.get_or_insert_with(|| format!("send on the channel: {e}"));
            }
        }
        (moved, err)
    }

    /// The bytes to write on the connection, if any.
    pub(crate) fn transmit(&mut self) -> Option<Vec<u8>> {
        let chan = self.chan.as_mut()?;
        let mut out = Vec::new();
        while chan.poll_transmit(&mut out).is_some() {}
        (!out.is_empty()).then_some(out)
    }

    /// The channel's and the circuit's next timer.
    pub(crate) fn next_time(&self) -> Option<Instant> {
        let chan = self.chan.as_ref().and_then(Channel::poll_timeout);
        let circ = self.circ.as_ref().and_then(|(_, c)| c.poll_timeout());
        [chan, circ].into_iter().flatten().min()
    }

    /// The channel's and the circuit's timers that are due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(c) = &mut self.chan {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        if let Some((_, c)) = &mut self.circ {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
    }
}
