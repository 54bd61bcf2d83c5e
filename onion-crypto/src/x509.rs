//! The RSA X.509 certificates of the link handshake (tor-spec 4.2 "CERTS cells").
//!
//! A responder's CERTS cell carries an RSA-1024 identity certificate (CertType 2, "ID",
//! self-signed) and, in the legacy RSA-only scheme, a link-key certificate (CertType 1)
//! signed by the identity key. Tor cares only about the keys and signatures: the names are
//! random-looking host names and there are no extensions to enforce.
//!
//! [`RsaX509Cert::decode`] parses DER and extracts the subject RSA key;
//! [`RsaX509Cert::verify_signature`] checks the signature (sha256WithRSAEncryption or
//! sha1WithRSAEncryption); [`check_identity_cert`] does the whole CertType-2 check.
//! [`RsaX509Cert::create`] makes certificates; [`RsaX509Cert::create_identity`] makes a
//! relay's identity certificate shaped as C tor 0.4.9 makes it.
//!
//! Validity is checked as C tor checks it (`tor_tls_cert_is_valid`,
//! `tor_x509_check_cert_lifetime_internal`): a certificate is still accepted up to
//! [`PAST_SLOP_SECS`] (2 days) after notAfter and from [`FUTURE_SLOP_SECS`] (30 days)
//! before notBefore, since clocks are often wrong.

use alloc::string::String;
use alloc::vec::Vec;
use core::str::FromStr;
use core::time::Duration;

use der::asn1::{Any, BitString, GeneralizedTime, ObjectIdentifier, UtcTime};
use der::{Decode, Encode, Reader, SliceReader};
use rand_core::CryptoRngCore;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use crate::cert::Timestamp;
use crate::error::CertError;
use crate::keys::RsaIdentity;
use crate::rsa::{RsaKeypair, RsaPublicKey};

/// rsaEncryption (PKCS#1).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// sha1WithRSAEncryption.
const SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
/// sha256WithRSAEncryption.
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// Largest certificate accepted (a CERTS cell entry has a 2-byte length anyway).
pub const MAX_CERT_LEN: usize = 65535;

/// How long after notAfter C tor still accepts a link-handshake X.509 certificate
/// (`TOR_X509_PAST_SLOP`, 2 days).
pub const PAST_SLOP_SECS: u64 = 2 * 24 * 60 * 60;
/// How long before notBefore C tor already accepts one (`TOR_X509_FUTURE_SLOP`, 30 days).
pub const FUTURE_SLOP_SECS: u64 = 30 * 24 * 60 * 60;

/// Signature algorithms Tor's X.509 certificates use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum X509SigAlg {
    /// sha1WithRSAEncryption (older C tor).
    Sha1WithRsa,
    /// sha256WithRSAEncryption (C tor today).
    Sha256WithRsa,
}

/// A decoded X.509 certificate with an RSA subject key.
#[derive(Debug, Clone)]
pub struct RsaX509Cert {
    der: Vec<u8>,
    tbs_der: Vec<u8>,
    subject_key: RsaPublicKey,
    sig_alg: X509SigAlg,
    signature: Vec<u8>,
    not_before: Timestamp,
    not_after: Timestamp,
    self_issued: bool,
}

/// The encoded TBSCertificate of a certificate: the first element of its outer SEQUENCE.
fn raw_tbs(der: &[u8]) -> Result<&[u8], der::Error> {
    let mut r = SliceReader::new(der)?;
    let tbs = r.sequence(|seq| {
        let tbs = seq.tlv_bytes()?;
        seq.tlv_bytes()?; // signatureAlgorithm
        seq.tlv_bytes()?; // signatureValue
        Ok(tbs)
    })?;
    r.finish(tbs)
}

/// The bytes of a BIT STRING that must hold whole bytes (a key or a signature).
fn whole_bytes<'a>(b: &'a BitString, field: &'static str) -> Result<&'a [u8], CertError> {
    b.as_bytes().ok_or(CertError::BadField {
        field,
        reason: "bit string with unused bits",
    })
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> CertError {
    move |_| CertError::Der { what }
}

impl RsaX509Cert {
    /// Decode a DER certificate; its subject key must be RSA.
    pub fn decode(der: &[u8]) -> Result<Self, CertError> {
        if der.len() > MAX_CERT_LEN {
            return Err(CertError::BadField {
                field: "X.509 certificate",
                reason: "longer than 65535 bytes",
            });
        }
        let cert = Certificate::from_der(der).map_err(der_err("X.509 certificate"))?;
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(CertError::BadField {
                field: "subjectPublicKeyInfo",
                reason: "not an RSA key",
            });
        }
        let subject_key = RsaPublicKey::from_pkcs1_der(whole_bytes(
            &spki.subject_public_key,
            "subjectPublicKey",
        )?)?;
        let sig_alg = match cert.signature_algorithm.oid {
            o if o == SHA256_WITH_RSA => X509SigAlg::Sha256WithRsa,
            o if o == SHA1_WITH_RSA => X509SigAlg::Sha1WithRsa,
            _ => {
                return Err(CertError::BadField {
                    field: "signatureAlgorithm",
                    reason: "not sha1/sha256WithRSAEncryption",
                })
            }
        };
        // OpenSSL's X509_verify (and so C tor) refuses a certificate whose two signature
        // AlgorithmIdentifiers differ, parameters included.
        if tbs.signature != cert.signature_algorithm {
            return Err(CertError::BadField {
                field: "tbsCertificate.signature",
                reason: "differs from signatureAlgorithm",
            });
        }
        let signature = whole_bytes(&cert.signature, "signatureValue")?.to_vec();
        // The signature covers the TBSCertificate as received (as OpenSSL verifies it), not
        // a re-encoding of what we decoded.
        let tbs_der = raw_tbs(der).map_err(der_err("tbsCertificate"))?.to_vec();
        Ok(RsaX509Cert {
            der: der.to_vec(),
            tbs_der,
            subject_key,
            sig_alg,
            signature,
            not_before: Timestamp(tbs.validity.not_before.to_unix_duration().as_secs()),
            not_after: Timestamp(tbs.validity.not_after.to_unix_duration().as_secs()),
            self_issued: tbs.issuer == tbs.subject,
        })
    }

    /// The certified RSA key.
    pub fn subject_key(&self) -> &RsaPublicKey {
        &self.subject_key
    }
    /// The signature algorithm.
    pub fn sig_alg(&self) -> X509SigAlg {
        self.sig_alg
    }
    /// notBefore.
    pub fn not_before(&self) -> Timestamp {
        self.not_before
    }
    /// notAfter.
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }
    /// Whether issuer and subject names are equal.
    pub fn is_self_issued(&self) -> bool {
        self.self_issued
    }
    /// The DER encoding.
    pub fn as_der(&self) -> &[u8] {
        &self.der
    }
    /// SHA-256 of the DER encoding: what a type-5 ed25519 cert certifies for the TLS cert.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// Check the signature with the issuer's key.
    pub fn verify_signature(&self, issuer: &RsaPublicKey) -> Result<(), CertError> {
        let r = match self.sig_alg {
            X509SigAlg::Sha256WithRsa => {
                issuer.verify_prefixed::<Sha256>(&Sha256::digest(&self.tbs_der), &self.signature)
            }
            X509SigAlg::Sha1WithRsa => {
                issuer.verify_prefixed::<Sha1>(&Sha1::digest(&self.tbs_der), &self.signature)
            }
        };
        r.map_err(|_| CertError::BadSignature {
            what: "X.509 certificate",
        })
    }

    /// Check that `now` lies within `[notBefore, notAfter]`.
    pub fn check_valid_at(&self, now: Timestamp) -> Result<(), CertError> {
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after {
            return Err(CertError::Expired {
                expired_at: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// Check validity with C tor's clock-skew tolerances (`tor_tls_cert_is_valid`): still
    /// accepted up to [`PAST_SLOP_SECS`] after notAfter and from [`FUTURE_SLOP_SECS`]
    /// before notBefore.
    pub fn check_valid_at_with_slop(&self, now: Timestamp) -> Result<(), CertError> {
        if now.0.saturating_add(FUTURE_SLOP_SECS) < self.not_before.0 {
            return Err(CertError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now.0 > self.not_after.0.saturating_add(PAST_SLOP_SECS) {
            return Err(CertError::Expired {
                expired_at: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// Check a self-signed certificate as C tor's `tor_tls_cert_is_valid` does, apart from
    /// the key size (callers check that, see [`check_identity_cert`]): the signature
    /// verifies with the certificate's own key, and `now` lies within the validity period
    /// widened by C tor's tolerances ([`Self::check_valid_at_with_slop`]).
    pub fn verify_self_signed(&self, now: Timestamp) -> Result<(), CertError> {
        self.verify_signature(&self.subject_key)?;
        self.check_valid_at_with_slop(now)
    }

    /// Create a certificate for `subject_key`, named `CN=subject_cn`, signed by `issuer`
    /// (named `CN=issuer_cn`) with sha256WithRSAEncryption, valid in
    /// `[not_before, not_after]`. For a self-signed identity certificate pass the identity
    /// key as both subject and issuer, with equal names.
    pub fn create(
        rng: &mut impl CryptoRngCore,
        subject_key: &RsaPublicKey,
        subject_cn: &str,
        issuer: &RsaKeypair,
        issuer_cn: &str,
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Result<Vec<u8>, CertError> {
        let alg = AlgorithmIdentifierOwned {
            oid: SHA256_WITH_RSA,
            parameters: Some(Any::null()),
        };
        let mut serial = [0u8; 8];
        rng.fill_bytes(&mut serial);
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let name = |cn: &str| -> Result<Name, CertError> {
            let mut s = String::from("CN=");
            s.push_str(cn);
            Name::from_str(&s).map_err(der_err("X.509 name"))
        };
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            subject_public_key: BitString::from_bytes(&subject_key.to_pkcs1_der())
                .map_err(der_err("subjectPublicKey"))?,
        };
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&serial).map_err(der_err("serialNumber"))?,
            signature: alg.clone(),
            issuer: name(issuer_cn)?,
            validity: Validity {
                not_before: x509_time(not_before)?,
                not_after: x509_time(not_after)?,
            },
            subject: name(subject_cn)?,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: None,
        };
        let tbs_der = tbs.to_der().map_err(der_err("tbsCertificate"))?;
        let sig = issuer.sign_prefixed::<Sha256>(rng, &Sha256::digest(&tbs_der))?;
        let cert = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: alg,
            signature: BitString::from_bytes(&sig).map_err(der_err("signatureValue"))?,
        };
        cert.to_der().map_err(der_err("X.509 certificate"))
    }
}

/// How long the identity certificates made by [`RsaX509Cert::create_identity`] last (C
/// tor: `IDENTITY_CERT_LIFETIME`, one year).
pub const IDENTITY_CERT_LIFETIME_SECS: u64 = 365 * 24 * 60 * 60;

impl RsaX509Cert {
    /// Make a self-signed X.509 identity certificate (CERTS CertType 2) for `key`, shaped
    /// as C tor's: version 3, random serial, subject and issuer `CN=www.<random>.net`,
    /// sha256WithRSAEncryption, valid for [`IDENTITY_CERT_LIFETIME_SECS`] from a random
    /// day boundary up to two days before `now`.
    pub fn create_identity(
        key: &RsaKeypair,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, CertError> {
        const DAY: u64 = 24 * 60 * 60;
        let start = now.0.saturating_sub(u64::from(rng.next_u32()) % (2 * DAY));
        let start = start - start % DAY;
        let cn = random_hostname(rng);
        Self::create(
            rng,
            key.public(),
            &cn,
            key,
            &cn,
            Timestamp(start),
            Timestamp(start.saturating_add(IDENTITY_CERT_LIFETIME_SECS)),
        )
    }
}

/// A random host name as C tor puts in its certificates (`crypto_random_hostname(8, 20,
/// "www.", ".net")`): 8 to 20 base32 characters.
fn random_hostname(rng: &mut impl CryptoRngCore) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let len = 8 + (rng.next_u32() % 13) as usize;
    let mut s = String::from("www.");
    for _ in 0..len {
        s.push(char::from(ALPHABET[(rng.next_u32() % 32) as usize]));
    }
    s.push_str(".net");
    s
}

fn x509_time(t: Timestamp) -> Result<Time, CertError> {
    let d = Duration::from_secs(t.0);
    match UtcTime::from_unix_duration(d) {
        Ok(u) => Ok(Time::UtcTime(u)),
        Err(_) => GeneralizedTime::from_unix_duration(d)
            .map(Time::GeneralTime)
            .map_err(der_err("X.509 time")),
    }
}

/// Check a CERTS-cell identity certificate (CertType 2): DER decodes, the key is an
/// RSA-1024 key with e = 65537, it is self-signed, and it is valid at `now`. Returns the
/// identity key and its RSA identity digest.
pub fn check_identity_cert(
    der: &[u8],
    now: Timestamp,
) -> Result<(RsaPublicKey, RsaIdentity), CertError> {
    let c = RsaX509Cert::decode(der)?;
    c.subject_key().check_relay_key()?;
    c.verify_self_signed(now)?;
    let id = c.subject_key().identity();
    Ok((c.subject_key, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::sync::OnceLock;

    const NOW: Timestamp = Timestamp(1_780_000_000);

    fn key() -> &'static RsaKeypair {
        static K: OnceLock<RsaKeypair> = OnceLock::new();
        K.get_or_init(|| {
            let mut rng = ChaCha20Rng::seed_from_u64(4);
            RsaKeypair::generate_1024(&mut rng).expect("key")
        })
    }

    fn check(der: &[u8], now: u64) -> Result<RsaPublicKey, CertError> {
        let c = RsaX509Cert::decode(der)?;
        c.verify_self_signed(Timestamp(now))?;
        Ok(c.subject_key)
    }

    #[test]
    fn made_certificates_verify_with_c_tor_tolerances() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let der = RsaX509Cert::create_identity(key(), NOW, &mut rng).expect("cert");
        let c = RsaX509Cert::decode(&der).expect("der");
        let (nb, na) = (c.not_before().0, c.not_after().0);
        assert!(nb <= NOW.0 && nb % 86400 == 0 && na == nb + IDENTITY_CERT_LIFETIME_SECS);
        assert!(c.is_self_issued());
        let k = check(&der, NOW.0).expect("valid");
        assert_eq!(k.identity(), key().public().identity());
        // Up to 2 days after notAfter: still accepted; later: expired.
        assert!(check(&der, na + PAST_SLOP_SECS).is_ok());
        assert_eq!(
            check(&der, na + PAST_SLOP_SECS + 1).unwrap_err(),
            CertError::Expired {
                expired_at: Timestamp(na),
                now: Timestamp(na + PAST_SLOP_SECS + 1)
            }
        );
        // Up to 30 days before notBefore: accepted; earlier: not yet valid.
        assert!(check(&der, nb - FUTURE_SLOP_SECS).is_ok());
        assert!(matches!(
            check(&der, nb - FUTURE_SLOP_SECS - 1),
            Err(CertError::NotYetValid { .. })
        ));
    }

    #[test]
    fn garbage_and_tampering_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let der = RsaX509Cert::create_identity(key(), NOW, &mut rng).expect("cert");
        assert!(matches!(
            check(b"not a certificate", NOW.0),
            Err(CertError::Der { .. })
        ));
        assert!(check(&der[..der.len() - 1], NOW.0).is_err());
        // Any single bit flip makes it fail (DER error or bad signature), never panic.
        for pos in (0..der.len()).step_by(7) {
            let mut bad = der.clone();
            bad[pos] ^= 0x10;
            assert!(check(&bad, NOW.0).is_err(), "flip at {pos}");
        }
    }
}
