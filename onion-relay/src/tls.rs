//! The TLS certificate a relay's ORPort presents (tor-spec §2: "the responder's
//! certificate is ... a link certificate", certified for the channel by the ed25519
//! Signing->Link certificate of the CERTS cell, §4.2).
//!
//! Initiators do not check the TLS certificate's chain: they compare its SHA-256 digest
//! with the one the type-5 certificate of our CERTS cell names. Any self-signed certificate
//! works; it is made like C tor's (RSA key, random `www.<base32>.net` names, issued a day
//! back). The key is RSA-2048 because rustls with ring does not sign with smaller RSA keys.

use onion_crypto::cert::Timestamp;
use onion_crypto::rsa::RsaKeypair;
use onion_crypto::x509::RsaX509Cert;
use rand_core::CryptoRngCore;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::event::Error;

/// Lifetime of a generated link certificate (C tor makes them valid for about a year and
/// replaces the TLS context every 2 hours, `MAX_SSL_KEY_LIFETIME_INTERNAL`; an embedder that
/// wants that calls [`crate::Relay::set_link_cert`] on its own schedule).
pub const LINK_CERT_LIFETIME_SECS: u64 = 365 * 24 * 3600;

/// A TLS certificate and its private key, for the embedder's TLS server.
#[derive(Clone)]
pub struct TlsLinkCert {
    cert_der: Vec<u8>,
    key_pkcs1_der: Zeroizing<Vec<u8>>,
    sha256: [u8; 32],
}

impl core::fmt::Debug for TlsLinkCert {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsLinkCert")
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

impl TlsLinkCert {
    /// A fresh RSA-2048 key and self-signed certificate valid from a day before `now` for
    /// [`LINK_CERT_LIFETIME_SECS`]. Slow (an RSA-2048 key generation).
    pub fn generate(now: Timestamp, rng: &mut impl CryptoRngCore) -> Result<Self, Error> {
        let key = RsaKeypair::generate(rng, 2048).map_err(|e| Error::Keys(e.to_string()))?;
        let mut name = [0u8; 10];
        rng.fill_bytes(&mut name);
        let cn = format!("www.{}.net", hex::encode(name));
        let start = Timestamp(now.0.saturating_sub(24 * 3600));
        let end = Timestamp(now.0.saturating_add(LINK_CERT_LIFETIME_SECS));
        let cert = RsaX509Cert::create(rng, key.public(), &cn, &key, &cn, start, end)
            .map_err(|e| Error::Keys(e.to_string()))?;
        let der = key.to_pkcs1_der().map_err(|e| Error::Keys(e.to_string()))?;
        Ok(Self::from_der(cert, der))
    }

    /// A certificate and key made elsewhere: `cert_der` an X.509 certificate, `key` its
    /// private key as PKCS#1 DER (or any encoding the embedder's TLS library takes: only
    /// the certificate's digest matters to the relay).
    pub fn from_der(cert_der: Vec<u8>, key: Zeroizing<Vec<u8>>) -> Self {
        let sha256 = Sha256::digest(&cert_der).into();
        TlsLinkCert {
            cert_der,
            key_pkcs1_der: key,
            sha256,
        }
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key (PKCS#1 DER for generated certificates).
    pub fn key_der(&self) -> &[u8] {
        &self.key_pkcs1_der
    }

    /// SHA-256 of the certificate: what the Signing->Link certificate certifies.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}
