//! The CREATE_FAST handshake (tor-spec 5.1.5) and its KDF-TOR key derivation (5.2.1).
//!
//! Used only for the first hop, where the TLS link already authenticated the relay. The
//! client sends `X` (20 random bytes); the relay answers `Y | KH` where
//! `K = KDF-TOR(X | Y)`, `KH = K[0..20]`, and the circuit keys are `K[20..]`.

use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::HandshakeError;
use crate::kdf::{kdf_tor, KeyGenerator};

/// Length of the CREATE_FAST body `X`.
pub const FAST_CLIENT_HANDSHAKE_LEN: usize = 20;
/// Length of the CREATED_FAST body `Y | KH`.
pub const FAST_SERVER_HANDSHAKE_LEN: usize = 40;

/// Entry point of the client side of CREATE_FAST.
#[derive(Debug, Clone, Copy)]
pub struct FastClient;

/// A CREATE_FAST handshake waiting for CREATED_FAST. Holds `X` (zeroized on drop).
pub struct FastClientPending {
    x: Zeroizing<[u8; 20]>,
}

impl core::fmt::Debug for FastClientPending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FastClientPending(..)")
    }
}

impl FastClient {
    /// Start: returns the pending state and the 20-byte CREATE_FAST body.
    pub fn start(
        rng: &mut impl CryptoRngCore,
    ) -> (FastClientPending, [u8; FAST_CLIENT_HANDSHAKE_LEN]) {
        let mut x = Zeroizing::new([0u8; 20]);
        rng.fill_bytes(&mut x[..]);
        let msg = *x;
        (FastClientPending { x }, msg)
    }
}

fn derive(x: &[u8], y: &[u8]) -> ([u8; 20], KeyGenerator) {
    let mut k0 = [0u8; 40];
    k0[..20].copy_from_slice(x);
    k0[20..].copy_from_slice(y);
    let mut kh = [0u8; 20];
    // 20 bytes is far below the KDF-TOR limit.
    let _ = kdf_tor(&k0, &mut kh);
    let gen = KeyGenerator::kdf_tor(k0);
    k0.zeroize();
    (kh, gen)
}

impl FastClientPending {
    /// Check the 40-byte CREATED_FAST body `Y | KH` and derive the circuit keys.
    pub fn finish(self, reply: &[u8]) -> Result<KeyGenerator, HandshakeError> {
        if reply.len() != FAST_SERVER_HANDSHAKE_LEN {
            return Err(HandshakeError::BadLength {
                what: "CREATED_FAST body",
                expected: FAST_SERVER_HANDSHAKE_LEN,
                got: reply.len(),
            });
        }
        let (kh, gen) = derive(&self.x[..], &reply[..20]);
        if !bool::from(kh.ct_eq(&reply[20..])) {
            return Err(HandshakeError::BadAuth { field: "KH" });
        }
        Ok(gen)
    }
}

/// Relay side: answer the 20-byte CREATE_FAST body with `Y | KH` and the circuit keys.
pub fn server(
    rng: &mut impl CryptoRngCore,
    msg: &[u8],
) -> Result<([u8; FAST_SERVER_HANDSHAKE_LEN], KeyGenerator), HandshakeError> {
    let mut y = [0u8; 20];
    rng.fill_bytes(&mut y);
    let r = server_with_y(&y, msg);
    y.zeroize();
    r
}

pub(crate) fn server_with_y(
    y: &[u8; 20],
    msg: &[u8],
) -> Result<([u8; FAST_SERVER_HANDSHAKE_LEN], KeyGenerator), HandshakeError> {
    if msg.len() != FAST_CLIENT_HANDSHAKE_LEN {
        return Err(HandshakeError::BadLength {
            what: "CREATE_FAST body",
            expected: FAST_CLIENT_HANDSHAKE_LEN,
            got: msg.len(),
        });
    }
    let (kh, gen) = derive(msg, y);
    let mut reply = [0u8; FAST_SERVER_HANDSHAKE_LEN];
    reply[..20].copy_from_slice(y);
    reply[20..].copy_from_slice(&kh);
    Ok((reply, gen))
}
