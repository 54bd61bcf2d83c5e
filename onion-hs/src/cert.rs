//! The onion-service use of cert-spec §2.1 Ed25519 certificates: types 08 (descriptor signing
//! key, signed by the blinded key), 09 (introduction point auth key) and 0B (introduction point
//! encryption key), each carrying the signed-with-ed25519-key extension (type 04).
//!
//! Decoding, signing and checking are `onion-crypto`'s ([`onion_crypto::cert`]); this module
//! adds only what rend-spec-v3 §2.4 and §2.5.2.2 ask of these certificates: the signing key must
//! be named in the extension and equal the key the context expects, and the certificate must be
//! of the expected type and unexpired.

use onion_crypto::cert::{CertKeyType, CertType, Ed25519CertBuilder, UncheckedEd25519Cert};
use onion_crypto::keys::{Ed25519PublicKey, Ed25519Signature};
use onion_crypto::Timestamp;

/// Something that can make ed25519 signatures (onion-crypto's trait; implemented here for this
/// crate's expanded and blinded keypairs).
pub use onion_crypto::keys::Ed25519Signer;
/// Why a certificate was rejected (onion-crypto's error type).
pub use onion_crypto::CertError;

/// Cert type 08: descriptor signing key, signed by the blinded key (rend-spec-v3 §2.4).
pub const CERT_TYPE_HS_DESC_SIGNING: u8 = CertType::HS_BLINDED_ID_V_SIGNING.0;
/// Cert type 09: introduction point auth key, signed by the descriptor signing key.
pub const CERT_TYPE_HS_INTRO_AUTH: u8 = CertType::HS_IP_V_SIGNING.0;
/// Cert type 0B: introduction point encryption key (as ed25519), signed by the descriptor signing key.
pub const CERT_TYPE_HS_NTOR_ENC: u8 = CertType::HS_IP_CC_SIGNING.0;
/// CERT_KEY_TYPE 01: an ed25519 key.
pub const CERT_KEY_TYPE_ED25519: u8 = CertKeyType::ED25519.0;

impl Ed25519Signer for crate::keys::ExpandedKeypair {
    fn public_key(&self) -> Ed25519PublicKey {
        *self.verifying_key()
    }
    fn sign(&self, msg: &[u8]) -> Ed25519Signature {
        crate::keys::ExpandedKeypair::sign(self, msg)
    }
}

impl Ed25519Signer for crate::keys::HsBlindedKeypair {
    fn public_key(&self) -> Ed25519PublicKey {
        *self.public().verifying_key()
    }
    fn sign(&self, msg: &[u8]) -> Ed25519Signature {
        crate::keys::HsBlindedKeypair::sign(self, msg)
    }
}

/// A decoded (not yet verified) Ed25519 certificate, cert-spec §2.1, with its fields at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Cert {
    /// CERT_TYPE.
    pub cert_type: u8,
    /// EXPIRATION_DATE, hours since the Unix epoch.
    pub expiry_hours: u32,
    /// CERT_KEY_TYPE.
    pub key_type: u8,
    /// CERTIFIED_KEY.
    pub certified_key: [u8; 32],
    /// The signed-with-ed25519-key extension, if present.
    pub signing_key: Option<[u8; 32]>,
    /// SIGNATURE.
    pub signature: [u8; 64],
    /// onion-crypto's decoded certificate (encoding, signed part, extensions).
    unchecked: UncheckedEd25519Cert,
}

impl Ed25519Cert {
    /// Parse a certificate body (onion-crypto's decoder: unknown critical extensions and
    /// repeated extensions are refused, allocation bounded by the input).
    pub fn parse(b: &[u8]) -> Result<Self, CertError> {
        let unchecked = UncheckedEd25519Cert::decode(b)?;
        Ok(Ed25519Cert {
            cert_type: unchecked.cert_type().0,
            expiry_hours: unchecked.expiration_hours(),
            key_type: unchecked.key_type().0,
            certified_key: *unchecked.certified_key(),
            signing_key: unchecked.signing_key().map(|k| k.0),
            signature: *unchecked.signature(),
            unchecked,
        })
    }

    /// Build and sign a certificate of `cert_type` certifying the ed25519 key `certified_key`,
    /// carrying the signing-key extension (rend-spec-v3 §2.4 requires it for type 08; C tor
    /// includes it in 09 and 0B too).
    pub fn sign(
        cert_type: u8,
        expiry_hours: u32,
        certified_key: [u8; 32],
        signer: &dyn Ed25519Signer,
    ) -> Result<Self, CertError> {
        let bytes = Ed25519CertBuilder::new(
            CertType(cert_type),
            CertKeyType::ED25519,
            certified_key,
            expiry_hours,
        )
        .include_signing_key(true)
        .sign(signer)?;
        Self::parse(&bytes)
    }

    /// The encoded certificate.
    pub fn encode(&self) -> Vec<u8> {
        self.unchecked.as_bytes().to_vec()
    }

    /// Check type, expiry (at `now`, valid through EXPIRATION_DATE × 3600 as in C tor), the
    /// signing-key extension (present, and equal to `expected_signer` if given) and the
    /// signature. Returns the signing key.
    pub fn verify(
        &self,
        expected_type: u8,
        expected_signer: Option<&[u8; 32]>,
        now: Timestamp,
    ) -> Result<[u8; 32], CertError> {
        if self.cert_type != expected_type {
            return Err(CertError::WrongCertType {
                expected: expected_type,
                got: self.cert_type,
            });
        }
        self.unchecked.check_valid_at(now)?;
        let signer = self.signing_key.ok_or(CertError::MissingSigningKey)?;
        if let Some(e) = expected_signer {
            if !crate::ops::ct_eq(e, &signer) {
                return Err(CertError::WrongSigningKey);
            }
        }
        self.unchecked.check_signature(None)?;
        Ok(signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ExpandedKeypair;

    #[test]
    fn sign_parse_verify_round_trip() {
        let signer = ExpandedKeypair::from_seed(&[7; 32]);
        let c = Ed25519Cert::sign(CERT_TYPE_HS_INTRO_AUTH, 500_000, [9; 32], &signer).unwrap();
        let parsed = Ed25519Cert::parse(&c.encode()).unwrap();
        assert_eq!(parsed, c);
        assert_eq!(parsed.signing_key, Some(*signer.public_bytes()));
        let now = Timestamp::from_unix(500_000 * 3600);
        assert_eq!(
            parsed.verify(CERT_TYPE_HS_INTRO_AUTH, Some(signer.public_bytes()), now),
            Ok(*signer.public_bytes())
        );
        assert!(matches!(
            parsed.verify(CERT_TYPE_HS_NTOR_ENC, None, now),
            Err(CertError::WrongCertType { .. })
        ));
        assert_eq!(
            parsed.verify(CERT_TYPE_HS_INTRO_AUTH, Some(&[1; 32]), now),
            Err(CertError::WrongSigningKey)
        );
        assert!(matches!(
            parsed.verify(CERT_TYPE_HS_INTRO_AUTH, None, now.add_secs(1)),
            Err(CertError::Expired { .. })
        ));
        let mut bad = c.encode();
        if let Some(last) = bad.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            Ed25519Cert::parse(&bad)
                .unwrap()
                .verify(CERT_TYPE_HS_INTRO_AUTH, None, now),
            Err(CertError::BadSignature { .. })
        ));
    }
}
