//! RSA keys as Tor uses them (tor-spec 0.3, dir-spec 1.3 "signatures").
//!
//! * The relay identity is `SHA-1(PKCS#1 DER of the public key)` ([`RsaPublicKey::identity`]).
//! * Signatures are PKCS#1 v1.5. Two forms exist: the standard one with a DigestInfo
//!   prefix (X.509 certificates, [`RsaPublicKey::verify_prefixed`]) and Tor's own
//!   "unprefixed" form, where the padded block holds the bare digest (or the bare data):
//!   directory signatures (`router-signature`, `directory-signature`), the RSA→ed25519
//!   cross-certificate and the TAP onion-key cross-certificate
//!   ([`RsaPublicKey::verify_unprefixed`]).
//! * [`RsaKeypair`] signs, for relays and tests. RSA-1024 key generation takes tens of
//!   milliseconds (more in debug builds): keep tests that generate keys few.
//!
//! The `rsa` crate's private-key operation is not constant time (RUSTSEC-2023-0071,
//! "Marvin"); it matters for decryption oracles, which Tor does not expose, and signing
//! here always uses blinding (`sign_with_rng`).

use alloc::vec::Vec;

use ::rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use ::rsa::traits::PublicKeyParts;
use ::rsa::{BigUint, Pkcs1v15Sign};
use base64::Engine as _;
use digest::const_oid::AssociatedOid;
use digest::Digest;
use rand_core::CryptoRngCore;
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::keys::{RsaIdentity, B64_LENIENT};

/// Largest RSA modulus accepted from the network or documents (bits). Tor uses 1024 for
/// relay keys and up to 3072 for directory authority identity keys; 8192 bounds the work
/// a hostile document can cause.
pub const MAX_RSA_BITS: usize = 8192;

/// An RSA public key.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey(::rsa::RsaPublicKey);

impl core::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RsaPublicKey({} bits, {})", self.bits(), self.identity())
    }
}

impl RsaPublicKey {
    /// Decode a PKCS#1 `RSAPublicKey` DER structure (what Tor documents carry between
    /// `-----BEGIN RSA PUBLIC KEY-----` lines).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let k = ::rsa::pkcs1::RsaPublicKey::try_from(der).map_err(|_| KeyError::BadRsaDer)?;
        let n = BigUint::from_bytes_be(k.modulus.as_bytes());
        let e = BigUint::from_bytes_be(k.public_exponent.as_bytes());
        let key = ::rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
            .map_err(|_| KeyError::BadRsaKey("modulus or exponent out of range"))?;
        Ok(RsaPublicKey(key))
    }

    /// Decode the PEM form `-----BEGIN RSA PUBLIC KEY----- ... -----END RSA PUBLIC KEY-----`.
    pub fn from_pkcs1_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_decode(pem, "RSA PUBLIC KEY").ok_or(KeyError::BadEncoding {
            encoding: "PEM",
            what: "RSA public key",
        })?;
        Self::from_pkcs1_der(&der)
    }

    /// The PKCS#1 DER encoding (the input of the identity digest).
    pub fn to_pkcs1_der(&self) -> Vec<u8> {
        match self.0.to_pkcs1_der() {
            Ok(d) => d.into_vec(),
            // Encoding a valid key cannot fail; an empty vector would make every digest
            // comparison fail safely.
            Err(_) => Vec::new(),
        }
    }

    /// The Tor RSA identity: SHA-1 of the PKCS#1 DER encoding.
    pub fn identity(&self) -> RsaIdentity {
        RsaIdentity(Sha1::digest(self.to_pkcs1_der()).into())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.n().bits()
    }

    /// Is this a key Tor accepts as a relay identity or onion key: 1024 bits, e = 65537
    /// (tor-spec 0.3)?
    pub fn check_relay_key(&self) -> Result<(), KeyError> {
        if self.bits() != 1024 {
            return Err(KeyError::BadRsaKey("relay RSA keys must be 1024 bits"));
        }
        if *self.0.e() != BigUint::from(65537u32) {
            return Err(KeyError::BadRsaKey(
                "relay RSA keys must use exponent 65537",
            ));
        }
        Ok(())
    }

    /// Verify a standard PKCS#1 v1.5 signature (DigestInfo for `D`, then the digest) over
    /// `digest`, the already computed hash of the signed data.
    pub fn verify_prefixed<D: Digest + AssociatedOid>(
        &self,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<(), KeyError> {
        self.0
            .verify(Pkcs1v15Sign::new::<D>(), digest, signature)
            .map_err(|_| KeyError::BadRsaSignature)
    }

    /// Verify a Tor "unprefixed" PKCS#1 v1.5 signature: the padded block holds `data`
    /// itself (a bare SHA-1 or SHA-256 digest for directory signatures, 52 raw bytes for
    /// the onion-key cross-certificate).
    pub fn verify_unprefixed(&self, data: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        self.0
            .verify(Pkcs1v15Sign::new_unprefixed(), data, signature)
            .map_err(|_| KeyError::BadRsaSignature)
    }

    /// The wrapped `rsa` crate key.
    pub fn as_rsa(&self) -> &::rsa::RsaPublicKey {
        &self.0
    }

    /// Size of a signature made by this key, in bytes.
    pub fn size(&self) -> usize {
        self.0.size()
    }
}

/// An RSA private key (relay identity or onion key, or a test key). Zeroized on drop by
/// the `rsa` crate.
#[derive(Clone)]
pub struct RsaKeypair {
    secret: ::rsa::RsaPrivateKey,
    public: RsaPublicKey,
}

impl core::fmt::Debug for RsaKeypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RsaKeypair({:?})", self.public)
    }
}

impl RsaKeypair {
    /// Generate an RSA-1024 key with e = 65537, as relays use. Slow: tens of milliseconds.
    pub fn generate_1024(rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        Self::generate(rng, 1024)
    }

    /// Generate a key of `bits` bits with e = 65537.
    pub fn generate(rng: &mut impl CryptoRngCore, bits: usize) -> Result<Self, KeyError> {
        let secret = ::rsa::RsaPrivateKey::new(rng, bits)
            .map_err(|_| KeyError::RsaOperation("key generation"))?;
        let public = RsaPublicKey(secret.to_public_key());
        Ok(RsaKeypair { secret, public })
    }

    /// Decode a PKCS#1 `RSAPrivateKey` DER structure (C tor's `secret_id_key` body).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let secret = ::rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|_| KeyError::BadRsaDer)?;
        let public = RsaPublicKey(secret.to_public_key());
        Ok(RsaKeypair { secret, public })
    }

    /// The PKCS#1 DER encoding of the private key (zeroized on drop).
    pub fn to_pkcs1_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.secret
            .to_pkcs1_der()
            .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|_| KeyError::RsaOperation("PKCS#1 encoding"))
    }

    /// The public key.
    pub fn public(&self) -> &RsaPublicKey {
        &self.public
    }

    /// Standard PKCS#1 v1.5 signature over the digest `digest` computed with `D`.
    pub fn sign_prefixed<D: Digest + AssociatedOid>(
        &self,
        rng: &mut impl CryptoRngCore,
        digest: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.secret
            .sign_with_rng(rng, Pkcs1v15Sign::new::<D>(), digest)
            .map_err(|_| KeyError::RsaOperation("signing"))
    }

    /// Tor's unprefixed PKCS#1 v1.5 signature over `data` (see
    /// [`RsaPublicKey::verify_unprefixed`]).
    pub fn sign_unprefixed(
        &self,
        rng: &mut impl CryptoRngCore,
        data: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.secret
            .sign_with_rng(rng, Pkcs1v15Sign::new_unprefixed(), data)
            .map_err(|_| KeyError::RsaOperation("signing"))
    }

    /// The wrapped `rsa` crate key.
    pub fn as_rsa(&self) -> &::rsa::RsaPrivateKey {
        &self.secret
    }
}

/// Decode the base64 body between `-----BEGIN {label}-----` and `-----END {label}-----`.
/// Returns `None` on any framing or base64 error.
pub fn pem_decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let s = pem.trim();
    let rest = s
        .strip_prefix("-----BEGIN ")?
        .strip_prefix(label)?
        .strip_prefix("-----")?;
    let end = rest.find("-----END ")?;
    let (body, tail) = rest.split_at(end);
    let tail = tail
        .strip_prefix("-----END ")?
        .strip_prefix(label)?
        .strip_prefix("-----")?;
    if !tail.trim().is_empty() {
        return None;
    }
    let compact: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    B64_LENIENT.decode(compact).ok()
}
