//! Key-derivation and hashing building blocks.
//!
//! * [`kdf_tor`]: KDF-TOR, the legacy SHA-1 counter KDF (tor-spec 5.2.1), used by
//!   CREATE_FAST.
//! * [`hkdf_sha256`]: HKDF-SHA256 (RFC 5869, tor-spec 5.2.2 "KDF-RFC5869"), used by ntor.
//! * [`sha3_256`], [`shake256`], [`hs_mac`]: the SHA3 building blocks of rend-spec-v3
//!   ("CRYPTOGRAPHY" section: `H`, `KDF` = SHAKE-256, `MAC(key, msg) =
//!   H(INT_8(len(key)) | key | msg)`), also used by ntor-v3 (proposal 332, A.1).
//! * [`KeyGenerator`]: what a completed handshake hands back; it expands the handshake's
//!   shared secret into as many key bytes as the caller needs (tor-spec 5.2).

use alloc::vec;
use alloc::vec::Vec;
use digest::{ExtendableOutput, Update, XofReader};
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use sha3::{Sha3_256, Shake256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KdfError;

/// Secret bytes that are wiped from memory when dropped.
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// Maximum output of HKDF-SHA256: 255 blocks of 32 bytes (RFC 5869 2.3).
pub const HKDF_SHA256_MAX: usize = 255 * 32;
/// Most key material [`KeyGenerator::expand`] hands out from a SHAKE-256 key stream (the
/// stream is unbounded; this only bounds the allocation).
pub const SHAKE_KEYSTREAM_MAX: usize = 1 << 16;
/// Maximum output of KDF-TOR: the counter is one byte, so 256 SHA-1 blocks.
pub const KDF_TOR_MAX: usize = 256 * 20;

/// KDF-TOR (tor-spec 5.2.1): `K = H(K0 | [00]) | H(K0 | [01]) | ...` with H = SHA-1,
/// truncated to `out.len()`.
pub fn kdf_tor(k0: &[u8], out: &mut [u8]) -> Result<(), KdfError> {
    if out.len() > KDF_TOR_MAX {
        return Err(KdfError::OutputTooLong {
            requested: out.len(),
            max: KDF_TOR_MAX,
        });
    }
    for (i, chunk) in out.chunks_mut(20).enumerate() {
        let mut h = Sha1::new();
        sha1::Digest::update(&mut h, k0);
        // i < 256 by the length check above.
        sha1::Digest::update(&mut h, [i as u8]);
        let mut block = h.finalize();
        chunk.copy_from_slice(&block[..chunk.len()]);
        block.zeroize();
    }
    Ok(())
}

/// HKDF-SHA256 extract-and-expand (RFC 5869; tor-spec 5.2.2), writing `out.len()` bytes.
///
/// As ntor uses it: `salt` = t_key, `ikm` = secret_input, `info` = m_expand.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), KdfError> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    hk.expand(info, out).map_err(|_| KdfError::OutputTooLong {
        requested: out.len(),
        max: HKDF_SHA256_MAX,
    })
}

/// HKDF-SHA256 expand step only, from an already extracted pseudo-random key.
pub fn hkdf_sha256_expand(prk: &[u8; 32], info: &[u8], out: &mut [u8]) -> Result<(), KdfError> {
    let too_long = KdfError::OutputTooLong {
        requested: out.len(),
        max: HKDF_SHA256_MAX,
    };
    let hk = hkdf::Hkdf::<Sha256>::from_prk(prk).map_err(|_| too_long)?;
    hk.expand(info, out).map_err(|_| too_long)
}

/// HMAC-SHA256(key, msg): the `H(x, t)` of the ntor handshake (tor-spec 5.1.4) is
/// `hmac_sha256(t, x)`.
pub fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    // HKDF-extract(salt, ikm) is exactly HMAC(salt, ikm), and its API is infallible.
    let mut ext = hkdf::HkdfExtract::<Sha256>::new(Some(key));
    for m in msg {
        ext.input_ikm(m);
    }
    ext.finalize().0.into()
}

/// SHA3-256 of the concatenation of `parts` (rend-spec-v3 `H`).
pub fn sha3_256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::default();
    for p in parts {
        sha3::Digest::update(&mut h, p);
    }
    sha3::Digest::finalize(h).into()
}

/// SHAKE-256 of the concatenation of `parts`, `out.len()` bytes (rend-spec-v3 `KDF`).
pub fn shake256(parts: &[&[u8]], out: &mut [u8]) {
    let mut h = Shake256::default();
    for p in parts {
        Update::update(&mut h, p);
    }
    h.finalize_xof().read(out);
}

/// The onion-service MAC of rend-spec-v3 ("CRYPTOGRAPHY"):
/// `MAC(key, msg) = SHA3-256(INT_8(len(key)) | key | msg)`, where INT_8 is an 8-byte
/// big-endian length.
pub fn hs_mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let len = (key.len() as u64).to_be_bytes();
    sha3_256(&[&len, key, msg])
}

/// `ENCAP(s) = htonll(len(s)) | s` (proposal 332), fed straight into a hasher.
pub(crate) fn encap_len(s: &[u8]) -> [u8; 8] {
    (s.len() as u64).to_be_bytes()
}

#[derive(Zeroize, ZeroizeOnDrop)]
enum KeySource {
    /// ntor v1: KEY_SEED = HKDF-extract(t_key, secret_input), expanded with m_expand.
    Hkdf {
        prk: [u8; 32],
        #[zeroize(skip)]
        info: &'static [u8],
    },
    /// CREATE_FAST: KDF-TOR(X | Y), skipping the first 20 bytes (KH).
    KdfTor { k0: [u8; 40] },
    /// ntor-v3: SHAKE-256(ENCAP(T_FINAL) | key_seed), skipping the first 32 bytes
    /// (the server message key).
    Shake {
        key_seed: [u8; 32],
        #[zeroize(skip)]
        tweak: &'static [u8],
        skip: usize,
    },
}

/// The shared secret of a completed circuit handshake, ready to be expanded into keys.
///
/// `expand(n)` returns the first `n` bytes of the handshake's key stream as tor-spec 5.2
/// defines it for that handshake. For the relay-cell crypto (tor1), take
/// [`crate::tor1::TOR1_KEY_LEN`] (72) bytes: `Df | Db | Kf | Kb`. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyGenerator {
    src: KeySource,
}

impl core::fmt::Debug for KeyGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyGenerator(..)")
    }
}

impl KeyGenerator {
    pub(crate) fn hkdf(prk: [u8; 32], info: &'static [u8]) -> Self {
        KeyGenerator {
            src: KeySource::Hkdf { prk, info },
        }
    }
    pub(crate) fn kdf_tor(k0: [u8; 40]) -> Self {
        KeyGenerator {
            src: KeySource::KdfTor { k0 },
        }
    }
    pub(crate) fn shake(key_seed: [u8; 32], tweak: &'static [u8], skip: usize) -> Self {
        KeyGenerator {
            src: KeySource::Shake {
                key_seed,
                tweak,
                skip,
            },
        }
    }

    /// Fill `out` with the first `out.len()` bytes of key material.
    pub fn expand_into(&self, out: &mut [u8]) -> Result<(), KdfError> {
        match &self.src {
            KeySource::Hkdf { prk, info } => hkdf_sha256_expand(prk, info, out),
            KeySource::KdfTor { k0 } => {
                let total = out.len().checked_add(20).ok_or(KdfError::OutputTooLong {
                    requested: out.len(),
                    max: KDF_TOR_MAX - 20,
                })?;
                if total > KDF_TOR_MAX {
                    return Err(KdfError::OutputTooLong {
                        requested: out.len(),
                        max: KDF_TOR_MAX - 20,
                    });
                }
                let mut tmp = Zeroizing::new(vec![0u8; total]);
                kdf_tor(k0, &mut tmp)?;
                out.copy_from_slice(&tmp[20..]);
                Ok(())
            }
            KeySource::Shake {
                key_seed,
                tweak,
                skip,
            } => {
                let mut h = Shake256::default();
                Update::update(&mut h, &encap_len(tweak));
                Update::update(&mut h, tweak);
                Update::update(&mut h, key_seed);
                let mut r = h.finalize_xof();
                let mut skipped = [0u8; 64];
                let mut left = *skip;
                while left > 0 {
                    let n = left.min(skipped.len());
                    r.read(&mut skipped[..n]);
                    left -= n;
                }
                skipped.zeroize();
                r.read(out);
                Ok(())
            }
        }
    }

    /// The first `len` bytes of key material, zeroized on drop.
    pub fn expand(&self, len: usize) -> Result<SecretBytes, KdfError> {
        let max = match &self.src {
            KeySource::Hkdf { .. } => HKDF_SHA256_MAX,
            KeySource::KdfTor { .. } => KDF_TOR_MAX - 20,
            KeySource::Shake { .. } => SHAKE_KEYSTREAM_MAX,
        };
        if len > max {
            return Err(KdfError::OutputTooLong {
                requested: len,
                max,
            });
        }
        let mut out = Zeroizing::new(vec![0u8; len]);
        self.expand_into(&mut out)?;
        Ok(out)
    }
}
