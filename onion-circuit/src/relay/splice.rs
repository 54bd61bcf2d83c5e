//! Onion-service hooks of a relay circuit (rend-spec-v3 §3.1.1, §4.2).
//!
//! * An introduction point checks the MAC of ESTABLISH_INTRO against the `KH` of the circuit
//!   handshake it answered (tor-spec §5.2.2): [`RelayCircuit::kh`].
//! * A rendezvous point joins the client's circuit and the service's circuit once RENDEZVOUS1
//!   matches a cookie: [`RelayCircuit::splice`] on both. From then on, a relay cell from the
//!   client side that this hop does not recognise (it carries the end-to-end virtual-hop layer)
//!   is not a protocol error but is handed to the embedding by
//!   [`RelayCircuit::poll_spliced`], with this hop's layer removed; the embedding passes it to
//!   the other circuit's [`RelayCircuit::splice_in`], which adds that circuit's layer and sends
//!   it toward its origin. The rendezvous point never sees the plaintext, and does no flow
//!   control of its own on joined cells (SENDMEs are end to end, as in C tor).

use std::collections::VecDeque;

use onion_cell::chancell::{ChanMsg, RelayPayload};
use onion_crypto::tor1::{self, CellBody};
use onion_crypto::KeyGenerator;

use super::{Inbound, Next, RelayCircuit, RelayError};

/// Length of `KH` (DIGEST_LEN).
pub const KH_LEN: usize = 20;

/// Bound on joined cells waiting for [`RelayCircuit::poll_spliced`] (memory bound).
pub const MAX_SPLICE_QUEUE: usize = 4096;

/// The onion-service state of one relay circuit.
pub(super) struct HsHooks {
    kh: [u8; KH_LEN],
    spliced: bool,
    out: VecDeque<Box<CellBody>>,
}

impl Drop for HsHooks {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.kh);
    }
}

impl HsHooks {
    /// `KH` from the handshake's key generator (the DIGEST_LEN bytes after the tor1 keys), or
    /// for CREATE_FAST the KH of its reply (tor-spec §5.1.5, §5.2.2).
    pub(super) fn new(kg: &KeyGenerator, reply: &ChanMsg<'_>) -> Result<HsHooks, RelayError> {
        let mut kh = [0u8; KH_LEN];
        if let ChanMsg::CreatedFast { kh: k, .. } = reply {
            kh.copy_from_slice(k);
        } else {
            let m = kg
                .expand(tor1::TOR1_KEY_LEN + KH_LEN)
                .map_err(|e| RelayError::Handshake(onion_crypto::HandshakeError::Kdf(e)))?;
            kh.copy_from_slice(&m[tor1::TOR1_KEY_LEN..]);
        }
        Ok(HsHooks {
            kh,
            spliced: false,
            out: VecDeque::new(),
        })
    }

    pub(super) fn is_spliced(&self) -> bool {
        self.spliced
    }

    /// Queue a joined cell; false if the queue is full.
    pub(super) fn push(&mut self, body: Box<CellBody>) -> bool {
        if self.out.len() >= MAX_SPLICE_QUEUE {
            return false;
        }
        self.out.push_back(body);
        true
    }
}

impl RelayCircuit {
    /// The `KH` of this circuit's handshake (tor-spec §5.2.2), which an introduction point
    /// checks ESTABLISH_INTRO's MAC against (rend-spec-v3 §3.1.1).
    pub fn kh(&self) -> &[u8; KH_LEN] {
        &self.hs.kh
    }

    /// Join this circuit to another one at a rendezvous point (rend-spec-v3 §4.2): call it on
    /// both circuits after RENDEZVOUS1 matched. Only a circuit that ends here can be joined.
    pub fn splice(&mut self) -> Result<(), RelayError> {
        if self.closed {
            return Err(RelayError::Closed);
        }
        if self.next != Next::None {
            return Err(RelayError::Misuse("splice of a circuit that continues"));
        }
        self.hs.spliced = true;
        Ok(())
    }

    /// Whether [`RelayCircuit::splice`] was called.
    pub fn is_spliced(&self) -> bool {
        self.hs.spliced
    }

    /// The next cell from the client side for the joined circuit (this hop's layer removed).
    pub fn poll_spliced(&mut self) -> Option<Box<CellBody>> {
        self.hs.out.pop_front()
    }

    /// A cell from the joined circuit: add this hop's layer and send it toward the client.
    pub fn splice_in(&mut self, mut body: Box<CellBody>) -> Result<(), RelayError> {
        if self.closed {
            return Err(RelayError::Closed);
        }
        if !self.hs.spliced {
            return Err(RelayError::Misuse("cell for a circuit that is not joined"));
        }
        self.crypto.encrypt_inbound(&mut body);
        self.to_client
            .push_back(Inbound::Ready(ChanMsg::Relay(RelayPayload::Owned(body))));
        Ok(())
    }
}
