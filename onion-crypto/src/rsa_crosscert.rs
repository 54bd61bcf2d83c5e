//! RSA cross-certificates.
//!
//! * [`RsaCrosscert`]: the RSA→ed25519 cross-certificate of the CERTS cell (cert type 7,
//!   cert-spec 2.3 / A.1): the relay's RSA-1024 identity key vouches for its ed25519
//!   identity.
//!
//!   ```text
//!   ED25519_KEY(32) | EXPIRATION_DATE(4, hours) | SIGLEN(1) | SIGNATURE(SIGLEN)
//!   SIGNATURE = RSA-PKCS#1-v1.5-unprefixed(SHA256("Tor TLS RSA/Ed25519 cross-certificate"
//!                                                  | ED25519_KEY | EXPIRATION_DATE))
//!   ```
//! * [`verify_onion_key_crosscert`] / [`create_onion_key_crosscert`]: the TAP
//!   `onion-key-crosscert` of server descriptors (dir-spec 2.1.1): the RSA onion key signs
//!   `SHA1(DER(identity key)) | ed25519 identity` (52 bytes, unprefixed PKCS#1 v1.5).

use alloc::vec::Vec;

use rand_core::CryptoRngCore;
use sha2::{Digest as _, Sha256};

use crate::cert::Timestamp;
use crate::error::{CertError, KeyError};
use crate::keys::{Ed25519Identity, RsaIdentity};
use crate::rsa::{RsaKeypair, RsaPublicKey};

const PREFIX: &[u8] = b"Tor TLS RSA/Ed25519 cross-certificate";

/// A decoded RSA→ed25519 cross-certificate, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaCrosscert {
    ed25519_key: Ed25519Identity,
    expiration_hours: u32,
    signature: Vec<u8>,
}

impl RsaCrosscert {
    /// Decode (no trailing bytes allowed).
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() < 37 {
            return Err(CertError::Truncated {
                field: if bytes.len() < 32 {
                    "ED25519_KEY"
                } else if bytes.len() < 36 {
                    "EXPIRATION_DATE"
                } else {
                    "SIGLEN"
                },
                needed: 37 - bytes.len(),
            });
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes[..32]);
        let mut e = [0u8; 4];
        e.copy_from_slice(&bytes[32..36]);
        let siglen = usize::from(bytes[36]);
        let rest = &bytes[37..];
        if rest.len() < siglen {
            return Err(CertError::Truncated {
                field: "SIGNATURE",
                needed: siglen - rest.len(),
            });
        }
        if rest.len() > siglen {
            return Err(CertError::TrailingBytes {
                extra: rest.len() - siglen,
            });
        }
        Ok(RsaCrosscert {
            ed25519_key: Ed25519Identity(k),
            expiration_hours: u32::from_be_bytes(e),
            signature: rest.to_vec(),
        })
    }

    /// The certified ed25519 identity.
    pub fn ed25519_key(&self) -> &Ed25519Identity {
        &self.ed25519_key
    }
    /// EXPIRATION_DATE in hours since the epoch.
    pub fn expiration_hours(&self) -> u32 {
        self.expiration_hours
    }
    /// The RSA signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The SHA-256 digest that the RSA key signs.
    pub fn signed_digest(&self) -> [u8; 32] {
        digest(&self.ed25519_key, self.expiration_hours)
    }

    /// Verify the signature with the relay's RSA identity key and check the expiry
    /// (valid while `now <= EXPIRATION_DATE * 3600`).
    pub fn verify(&self, rsa_identity: &RsaPublicKey, now: Timestamp) -> Result<(), CertError> {
        rsa_identity
            .verify_unprefixed(&self.signed_digest(), &self.signature)
            .map_err(|_| CertError::BadSignature {
                what: "RSA->ed25519 cross-certificate",
            })?;
        let exp = u64::from(self.expiration_hours) * 3600;
        if now.0 > exp {
            return Err(CertError::Expired {
                expired_at: Timestamp(exp),
                now,
            });
        }
        Ok(())
    }

    /// Create and encode a cross-certificate with the relay's RSA identity key.
    pub fn create(
        rng: &mut impl CryptoRngCore,
        rsa_identity: &RsaKeypair,
        ed25519_key: &Ed25519Identity,
        expiration_hours: u32,
    ) -> Result<Vec<u8>, CertError> {
        let sig = rsa_identity.sign_unprefixed(rng, &digest(ed25519_key, expiration_hours))?;
        let siglen = u8::try_from(sig.len())
            .map_err(|_| KeyError::BadRsaKey("signature longer than 255 bytes"))?;
        let mut out = Vec::with_capacity(37 + sig.len());
        out.extend_from_slice(ed25519_key.as_bytes());
        out.extend_from_slice(&expiration_hours.to_be_bytes());
        out.push(siglen);
        out.extend_from_slice(&sig);
        Ok(out)
    }
}

fn digest(k: &Ed25519Identity, exp: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PREFIX);
    h.update(k.as_bytes());
    h.update(exp.to_be_bytes());
    h.finalize().into()
}

fn onion_cc_data(rsa_id: &RsaIdentity, ed: &Ed25519Identity) -> [u8; 52] {
    let mut d = [0u8; 52];
    d[..20].copy_from_slice(rsa_id.as_bytes());
    d[20..].copy_from_slice(ed.as_bytes());
    d
}

/// Verify a descriptor's `onion-key-crosscert`: `signature` by the RSA `onion_key` over
/// `SHA1(identity key) | ed25519 identity`.
pub fn verify_onion_key_crosscert(
    onion_key: &RsaPublicKey,
    signature: &[u8],
    rsa_identity: &RsaIdentity,
    ed25519_identity: &Ed25519Identity,
) -> Result<(), CertError> {
    onion_key
        .verify_unprefixed(&onion_cc_data(rsa_identity, ed25519_identity), signature)
        .map_err(|_| CertError::BadSignature {
            what: "onion-key-crosscert",
        })
}

/// Create an `onion-key-crosscert` signature with the RSA onion key.
pub fn create_onion_key_crosscert(
    rng: &mut impl CryptoRngCore,
    onion_key: &RsaKeypair,
    rsa_identity: &RsaIdentity,
    ed25519_identity: &Ed25519Identity,
) -> Result<Vec<u8>, CertError> {
    Ok(onion_key.sign_unprefixed(rng, &onion_cc_data(rsa_identity, ed25519_identity))?)
}
