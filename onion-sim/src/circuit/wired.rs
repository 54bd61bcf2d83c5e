//! A client circuit and the relay circuits of its hops wired directly to each other, cell by
//! cell, with no channel in between: the smallest harness that runs real handshakes and
//! relay crypto. Benchmarks, fuzz targets and tests use it to get circuits into a given state
//! quickly; the full network with channels is [`super::Sim`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use onion_cell::chancell::ChanMsg;
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use onion_circuit::circuit::{CircConfig, CircError, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::relay::{RelayCircuit, RelayEvent, RelayKeys, RelayOutput};
use onion_circuit::Instant;

/// A client circuit and its hops, passing cells by hand.
pub struct Wired {
    /// The RNG every party draws from.
    pub rng: ChaCha20Rng,
    /// The current (virtual) time.
    pub now: Instant,
    /// The client's circuit.
    pub client: Circuit,
    /// Each relay's keys.
    pub keys: Vec<RelayKeys>,
    /// What the client knows of each relay.
    pub targets: Vec<HopTarget>,
    /// The relay circuits created so far (index = hop).
    pub hops: Vec<RelayCircuit>,
    /// Client events seen by [`Wired::run`].
    pub client_events: Vec<CircEvent>,
    /// Relay events seen by [`Wired::run`] (EXTEND2 requests are acted on, and kept).
    pub relay_events: Vec<(usize, RelayEvent)>,
    /// Errors the machines closed a circuit with while cells were passed (from their
    /// `Closed` events), and handshakes refused.
    pub errors: Vec<String>,
}

impl core::fmt::Debug for Wired {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Wired")
            .field("client", &self.client)
            .field("hops", &self.hops.len())
            .finish_non_exhaustive()
    }
}

impl Wired {
    /// `n` relays with fresh keys; the client has sent its CREATE (kind `kind`) to the first
    /// one and the reply has been handled. `ntor_v3` selects the handshake of later hops.
    pub fn new(
        seed: u64,
        kind: HandshakeKind,
        ntor_v3: bool,
        n: usize,
    ) -> Result<Wired, CircError> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut keys = Vec::new();
        let mut targets = Vec::new();
        for i in 0..n.max(1) {
            let b = (i as u8).wrapping_add(1);
            let ntor = NtorSecretKey::generate(&mut rng);
            targets.push(HopTarget {
                rsa_id: RsaIdentity([b; 20]),
                ed_id: Some(Ed25519Identity([b; 32])),
                ntor_key: *ntor.public(),
                addrs: vec![SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 0, 1, b)),
                    9001,
                )],
                ntor_v3,
            });
            keys.push(RelayKeys {
                rsa_id: RsaIdentity([b; 20]),
                ed_id: Ed25519Identity([b; 32]),
                ntor_keys: vec![ntor],
            });
        }
        let now = Instant::ZERO;
        let (client, create) =
            Circuit::create(CircConfig::default(), &targets[0], kind, now, &mut rng)?;
        let mut w = Wired {
            rng,
            now,
            client,
            keys,
            targets,
            hops: Vec::new(),
            client_events: Vec::new(),
            relay_events: Vec::new(),
            errors: Vec::new(),
        };
        w.forward(0, create);
        w.run();
        Ok(w)
    }

    /// Build: extend to every remaining relay.
    pub fn build(&mut self) -> Result<(), CircError> {
        for i in self.client.n_hops()..self.targets.len() {
            let t = self.targets[i].clone();
            self.client.extend(&t, self.now, &mut self.rng)?;
            self.run();
        }
        Ok(())
    }

    /// A cell arriving at hop `i` from its client side.
    pub fn forward(&mut self, i: usize, msg: ChanMsg<'static>) {
        if i == self.hops.len() {
            if let Some(keys) = self.keys.get(i) {
                match RelayCircuit::accept(keys, &msg, self.now, &mut self.rng) {
                    Ok((c, reply)) => {
                        self.hops.push(c);
                        self.backward(i, reply);
                    }
                    Err(e) => self.errors.push(e.to_string()),
                }
            }
            return;
        }
        if let Some(h) = self.hops.get_mut(i) {
            h.handle_from_client(self.now, msg);
        }
    }

    /// A cell from hop `i` toward the client (`i == 0`: to the client itself).
    pub fn backward(&mut self, i: usize, msg: ChanMsg<'static>) {
        if i == 0 {
            self.client.handle_cell(self.now, msg);
        } else if let Some(h) = self.hops.get_mut(i - 1) {
            h.handle_from_next(self.now, msg);
        }
    }

    /// Pass cells and collect events until nothing moves.
    pub fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(m) = self.client.poll_cell(&mut self.rng) {
                moved = true;
                self.forward(0, m);
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                if let CircEvent::Closed {
                    error: Some(err), ..
                } = &e
                {
                    self.errors.push(err.to_string());
                }
                self.client_events.push(e);
            }
            for i in 0..self.hops.len() {
                while let Some(out) = self.hops[i].poll_cell(&mut self.rng) {
                    moved = true;
                    match out {
                        RelayOutput::ToClient(m) => self.backward(i, m),
                        RelayOutput::ToNext(m) => self.forward(i + 1, m),
                    }
                }
                while let Some(e) = self.hops[i].poll_event() {
                    moved = true;
                    if let RelayEvent::Closed { error: Some(err) } = &e {
                        self.errors.push(err.to_string());
                    }
                    if let RelayEvent::Extend(req) = &e {
                        let create = req.create.clone();
                        self.relay_events.push((i, e));
                        self.forward(i + 1, create);
                        continue;
                    }
                    self.relay_events.push((i, e));
                }
            }
            if !moved {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds() {
        let mut w = Wired::new(3, HandshakeKind::NtorV3, true, 3).expect("create");
        w.build().expect("build");
        assert_eq!(w.client.n_hops(), 3);
        assert!(w.errors.is_empty(), "{:?}", w.errors);
    }
}
