//! RSA keys as directory documents carry them, on top of onion-crypto.
//!
//! dir-spec §1.3 signatures are PKCS#1 v1.5 type-1 padding around the *bare*
//! digest (no DigestInfo / algorithm identifier): onion-crypto's
//! [`onion_crypto::rsa::RsaPublicKey::verify_unprefixed`]. [`RsaKey`] adds the
//! DER exactly as the document wrote it, whose SHA-1 is the fingerprint
//! (tor-spec §0.3), so the digest is of the document's bytes instead
//! of re-encoding the key. Ed25519 signatures and certificates are verified with
//! onion-crypto directly ([`onion_crypto::cert`], [`onion_crypto::keys`]).
//!
//! Keys are public; nothing here is secret, so nothing needs zeroizing.

use sha1::{Digest, Sha1};

use crate::error::VerifyError;
use crate::ids::RsaIdentity;

/// A parsed RSA public key with its DER encoding as it appeared in the document
/// (whose SHA-1 is the key's identity digest, tor-spec §0.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaKey {
    key: onion_crypto::rsa::RsaPublicKey,
    der: Vec<u8>,
}

impl RsaKey {
    /// Parse a PKCS#1 `RSAPublicKey` DER encoding (the body of a
    /// `-----BEGIN RSA PUBLIC KEY-----` object). onion-crypto bounds the size.
    pub fn from_der(der: &[u8]) -> Result<Self, VerifyError> {
        let key = onion_crypto::rsa::RsaPublicKey::from_pkcs1_der(der)
            .map_err(|_| VerifyError::BadKey("RSA DER"))?;
        Ok(RsaKey {
            key,
            der: der.to_vec(),
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The onion-crypto key.
    pub fn key(&self) -> &onion_crypto::rsa::RsaPublicKey {
        &self.key
    }

    /// SHA-1 of the DER encoding: the relay/authority fingerprint or key digest.
    pub fn digest(&self) -> RsaIdentity {
        RsaIdentity(Sha1::digest(&self.der).into())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.bits()
    }

    /// Verify `sig` as PKCS#1 v1.5 padding of the bare `digest` (dir-spec §1.3).
    pub fn verify_digest(&self, digest: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        self.key
            .verify_unprefixed(digest, sig)
            .map_err(|_| VerifyError::BadSignature("RSA"))
    }
}
