//! A relay's link-authentication keys, the certificates of its CERTS cells, and the
//! certificate-chain check of a peer's CERTS cell (tor-spec 4.2 "CERTS cells", cert-spec).
//!
//! [`LinkKeys`] holds the long-term keys (RSA-1024 identity, ed25519 identity, ed25519
//! signing key) and the long-lived certificates made from them, with C tor 0.4.9's
//! lifetimes; it makes the four certificates a responder sends ([`ResponderCerts`], types
//! 2, 4, 5, 7) and those an authenticating initiator sends ([`InitiatorCredentials`],
//! types 2, 4, 6, 7).
//!
//! [`verify_cert_chain`] checks the certificates of a CERTS cell exactly as C tor 0.4.9
//! does (`or_handshake_certs_ed25519_ok`, tor-spec 4.2 "To authenticate the responder as
//! having a given Ed25519,RSA identity key combination", and the same for an initiator):
//!
//! * the type-4 certificate names its signer (the ed25519 identity) in a
//!   signed-with-ed25519-key extension and is signed by it;
//! * the leaf certificate (type 5, or 6 for an initiator) is signed by the key that the
//!   type-4 certificate certifies (cert-spec A.4: CERT_KEY_TYPE 01 is accepted as well as
//!   03 in type 5, for relays before 0.4.5.1-alpha);
//! * no ed25519 certificate is expired (`now <= EXPIRATION_DATE * 3600`);
//! * the RSA identity certificate is a valid self-signed RSA-1024 certificate, with C
//!   tor's clock tolerances ([`crate::x509`]);
//! * the cross-certificate (type 7) is signed by the RSA identity key, certifies the
//!   ed25519 identity of the type-4 certificate, and is not expired.
//!
//! Which certificates a CERTS cell must hold, which identities are expected and the
//! comparison of the leaf with the TLS certificate are the channel's business
//! (`onion-circuit`), not this module's.
//!
//! RSA-1024 key generation is slow (tens of milliseconds, much more in debug builds without
//! optimised dependencies): generate once and reuse in tests.

use alloc::vec::Vec;

use rand_core::CryptoRngCore;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::cert::{CertKeyType, CertType, Ed25519CertBuilder, Timestamp, UncheckedEd25519Cert};
use crate::error::CertError;
use crate::keys::{
    Ed25519Identity, Ed25519Keypair, Ed25519PublicKey, Ed25519Signer, ExpandedEd25519Keypair,
    RsaIdentity,
};
use crate::rsa::{RsaKeypair, RsaPublicKey};
use crate::rsa_crosscert::RsaCrosscert;
use crate::x509::RsaX509Cert;

/// CertType of the RSA identity certificate in a CERTS cell (tor-spec 4.2).
pub const CERTS_RSA_ID: u8 = 2;
/// CertType of the Ed25519 Id->Signing certificate.
pub const CERTS_ED_ID_SIGNING: u8 = CertType::IDENTITY_V_SIGNING.0;
/// CertType of the Ed25519 Signing->Link certificate (a responder's leaf).
pub const CERTS_ED_SIGNING_LINK: u8 = CertType::SIGNING_V_TLS_CERT.0;
/// CertType of the Ed25519 Signing->Auth certificate (an authenticating initiator's leaf).
pub const CERTS_ED_SIGNING_AUTH: u8 = CertType::SIGNING_V_LINK_AUTH.0;
/// CertType of the RSA->Ed25519 cross-certificate.
pub const CERTS_RSA_ED_CROSSCERT: u8 = 7;

/// How long the certificates made by [`LinkKeys`] last, as C tor's defaults: the
/// Id->Signing certificate 30 days, the Signing->Link and Signing->Auth certificates 2
/// days, the cross-certificate 6 months (C tor: until the RSA certificate's expiry).
const SIGNING_CERT_LIFETIME: u64 = 30 * 24 * 3600;
const LINK_CERT_LIFETIME: u64 = 2 * 24 * 3600;
const CROSSCERT_LIFETIME: u64 = 183 * 24 * 3600;

/// A relay's link-authentication keys and the long-lived certificates made from them:
/// the RSA-1024 identity key and its self-signed X.509 certificate, the ed25519 identity
/// and the ed25519 signing key with its Id->Signing certificate, and the RSA->Ed25519
/// cross-certificate (tor-spec 4.2, cert-spec). Secrets are zeroized on drop by the key
/// types.
pub struct LinkKeys {
    rsa_identity: RsaKeypair,
    ed_identity: Ed25519Identity,
    signing: ExpandedEd25519Keypair,
    rsa_id_cert: Vec<u8>,
    id_signing_cert: Vec<u8>,
    crosscert: Vec<u8>,
}

impl core::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LinkKeys")
            .field("rsa_identity", &self.rsa_identity.public().identity())
            .field("ed_identity", &self.ed_identity)
            .finish_non_exhaustive()
    }
}

impl LinkKeys {
    /// Generates fresh keys (RSA-1024 identity, ed25519 identity, ed25519 signing key) and
    /// certificates valid from `now`. Includes an RSA-1024 key generation: slow.
    pub fn generate(
        now: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CertError> {
        let rsa = RsaKeypair::generate_1024(rng)?;
        let identity = Ed25519Keypair::generate(rng);
        let signing = Ed25519Keypair::generate(rng);
        Self::from_keys(rsa, &identity, signing, now, rng)
    }

    /// Certifies existing keys: `identity` signs the Id->Signing certificate of `signing`
    /// (and is not kept: it may be an offline master key), `rsa_identity` signs its X.509
    /// certificate and the cross-certificate.
    pub fn from_keys(
        rsa_identity: RsaKeypair,
        identity: &dyn Ed25519Signer,
        signing: Ed25519Keypair,
        now: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CertError> {
        let now = now.into();
        let ed_identity = identity.identity();
        let id_signing_cert = Ed25519CertBuilder::new(
            CertType::IDENTITY_V_SIGNING,
            CertKeyType::ED25519,
            *signing.identity().as_bytes(),
            hours_after(now, SIGNING_CERT_LIFETIME),
        )
        .include_signing_key(true)
        .sign(identity)?;
        Self::assemble(
            rng,
            rsa_identity,
            ed_identity,
            signing.to_expanded(),
            id_signing_cert,
            now,
        )
    }

    /// Certifies keys whose ed25519 master identity is offline (C tor's
    /// `OfflineMasterKey`): `id_signing_cert` is the Id->Signing certificate (type 4) that
    /// the master key made for `signing`, as C tor's `ed25519_signing_cert` file holds it.
    /// The certificate must name its signer (cert-spec 2.2.1), certify `signing`, carry a
    /// valid signature by the named key and be unexpired at `now`; the RSA identity signs
    /// a fresh X.509 certificate and cross-certificate.
    pub fn from_signing_cert(
        rsa_identity: RsaKeypair,
        signing: ExpandedEd25519Keypair,
        id_signing_cert: Vec<u8>,
        now: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CertError> {
        let now = now.into();
        let cert = UncheckedEd25519Cert::decode(&id_signing_cert)?
            .expect_type(CertType::IDENTITY_V_SIGNING)?;
        let ed_identity = *cert.signing_key().ok_or(CertError::MissingSigningKey)?;
        let certified = cert.verify(None, now)?.certified_public_key()?;
        if certified != signing.public_key() {
            return Err(CertError::BadField {
                field: "CERTIFIED_KEY",
                reason: "Id->Signing certificate certifies another signing key",
            });
        }
        Self::assemble(
            rng,
            rsa_identity,
            ed_identity,
            signing,
            id_signing_cert,
            now,
        )
    }

    fn assemble(
        rng: &mut impl CryptoRngCore,
        rsa_identity: RsaKeypair,
        ed_identity: Ed25519Identity,
        signing: ExpandedEd25519Keypair,
        id_signing_cert: Vec<u8>,
        now: Timestamp,
    ) -> Result<Self, CertError> {
        let crosscert = RsaCrosscert::create(
            rng,
            &rsa_identity,
            &ed_identity,
            hours_after(now, CROSSCERT_LIFETIME),
        )?;
        let rsa_id_cert = RsaX509Cert::create_identity(&rsa_identity, now, rng)?;
        Ok(LinkKeys {
            rsa_identity,
            ed_identity,
            signing,
            rsa_id_cert,
            id_signing_cert,
            crosscert,
        })
    }

    /// The ed25519 signing key pair (signs descriptors and the short-lived link
    /// certificates).
    pub fn signing_keypair(&self) -> &ExpandedEd25519Keypair {
        &self.signing
    }

    /// The encoded Id->Signing certificate (type 4): the `identity-ed25519` object of the
    /// relay's descriptors and the contents of C tor's `ed25519_signing_cert` file.
    pub fn id_signing_cert(&self) -> &[u8] {
        &self.id_signing_cert
    }

    /// The encoded RSA->Ed25519 cross-certificate (CERTS type 7).
    pub fn crosscert(&self) -> &[u8] {
        &self.crosscert
    }

    /// When the RSA->Ed25519 cross-certificate expires (Unix seconds).
    pub fn crosscert_expiry(&self) -> Timestamp {
        RsaCrosscert::decode(&self.crosscert)
            .map(|c| Timestamp(u64::from(c.expiration_hours()) * 3600))
            .unwrap_or(Timestamp(0))
    }

    /// The RSA identity key pair (also signs the relay's descriptors).
    pub fn rsa_identity(&self) -> &RsaKeypair {
        &self.rsa_identity
    }

    /// The ed25519 identity.
    pub fn ed_identity(&self) -> Ed25519Identity {
        self.ed_identity
    }

    /// The ed25519 signing key that the Id->Signing certificate certifies.
    pub fn signing_key(&self) -> Ed25519PublicKey {
        self.signing.public_key()
    }

    /// Credentials to authenticate as this relay when opening channels (tor-spec 4.4.2):
    /// a fresh ed25519 authentication key with its Signing->Auth certificate (type 6, valid
    /// 2 days from `now`), plus the long-lived certificates.
    pub fn initiator_credentials(
        &self,
        now: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<InitiatorCredentials, CertError> {
        let auth_key = Ed25519Keypair::generate(rng);
        let signing_auth = self.leaf_cert(
            CertType::SIGNING_V_LINK_AUTH,
            CertKeyType::ED25519,
            *auth_key.identity().as_bytes(),
            now.into(),
        )?;
        Ok(InitiatorCredentials {
            rsa_id: self.rsa_id_cert.clone(),
            id_signing: self.id_signing_cert.clone(),
            signing_auth,
            crosscert: self.crosscert.clone(),
            auth_key,
            rsa_key_sha256: Sha256::digest(self.rsa_identity.public().to_pkcs1_der()).into(),
            ed_identity: self.ed_identity,
        })
    }

    /// The CERTS cell contents for a TLS connection whose certificate has SHA-256 digest
    /// `tls_cert_sha256`: a fresh Signing->Link certificate (valid 2 days from `now`) plus
    /// the long-lived certificates.
    pub fn responder_certs(
        &self,
        tls_cert_sha256: &[u8; 32],
        now: impl Into<Timestamp>,
    ) -> Result<ResponderCerts, CertError> {
        let link = self.leaf_cert(
            CertType::SIGNING_V_TLS_CERT,
            CertKeyType::SHA256_OF_X509,
            *tls_cert_sha256,
            now.into(),
        )?;
        Ok(ResponderCerts {
            rsa_id: self.rsa_id_cert.clone(),
            id_signing: self.id_signing_cert.clone(),
            signing_link: link,
            crosscert: self.crosscert.clone(),
        })
    }

    /// A short-lived certificate (Signing->Link or Signing->Auth) signed by the signing
    /// key, valid 2 days from `now`.
    fn leaf_cert(
        &self,
        cert_type: CertType,
        key_type: CertKeyType,
        key: [u8; 32],
        now: Timestamp,
    ) -> Result<Vec<u8>, CertError> {
        Ed25519CertBuilder::new(
            cert_type,
            key_type,
            key,
            hours_after(now, LINK_CERT_LIFETIME),
        )
        .sign(&self.signing)
    }
}

/// The ed25519 certificate expiration (hours) `secs` after `now`.
fn hours_after(now: Timestamp, secs: u64) -> u32 {
    Ed25519CertBuilder::hours_from_unix(Timestamp(now.0.saturating_add(secs)))
}

/// The certificates a responder sends in its CERTS cell: the RSA identity certificate
/// (type 2), the Ed25519 Id->Signing certificate (type 4), the Signing->Link certificate
/// for this TLS certificate (type 5) and the RSA->Ed25519 cross-certificate (type 7).
///
/// Make them with [`LinkKeys::responder_certs`], or from certificates loaded from a
/// relay's key directory with [`ResponderCerts::from_encoded`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderCerts {
    rsa_id: Vec<u8>,
    id_signing: Vec<u8>,
    signing_link: Vec<u8>,
    crosscert: Vec<u8>,
}

impl ResponderCerts {
    /// Wraps already encoded certificates (X.509 DER for `rsa_id`, cert-spec formats for
    /// the others). They are sent as they are.
    pub fn from_encoded(
        rsa_id: Vec<u8>,
        id_signing: Vec<u8>,
        signing_link: Vec<u8>,
        crosscert: Vec<u8>,
    ) -> Self {
        ResponderCerts {
            rsa_id,
            id_signing,
            signing_link,
            crosscert,
        }
    }

    /// The (CertType, body) entries of the CERTS cell, in C tor's order (2, 4, 5, 7).
    pub fn entries(&self) -> [(u8, &[u8]); 4] {
        [
            (CERTS_RSA_ID, &self.rsa_id),
            (CERTS_ED_ID_SIGNING, &self.id_signing),
            (CERTS_ED_SIGNING_LINK, &self.signing_link),
            (CERTS_RSA_ED_CROSSCERT, &self.crosscert),
        ]
    }

    /// The certificate of a CertType, if this set has it (for tests that tamper with one).
    pub fn get(&self, cert_type: u8) -> Option<&[u8]> {
        match cert_type {
            CERTS_RSA_ID => Some(&self.rsa_id),
            CERTS_ED_ID_SIGNING => Some(&self.id_signing),
            CERTS_ED_SIGNING_LINK => Some(&self.signing_link),
            CERTS_RSA_ED_CROSSCERT => Some(&self.crosscert),
            _ => None,
        }
    }

    /// Replaces the certificate of a CertType (2, 4, 5 or 7; others are ignored). Meant for
    /// tests and for embedders that rotate the link certificate.
    pub fn set(&mut self, cert_type: u8, body: Vec<u8>) {
        match cert_type {
            CERTS_RSA_ID => self.rsa_id = body,
            CERTS_ED_ID_SIGNING => self.id_signing = body,
            CERTS_ED_SIGNING_LINK => self.signing_link = body,
            CERTS_RSA_ED_CROSSCERT => self.crosscert = body,
            _ => {}
        }
    }

    /// What AUTHENTICATE must name as the responder (SID, SID_ED, SCERT; tor-spec 4.4.2),
    /// read from these certificates without checking them; `None` if they do not decode.
    pub fn auth_fields(&self) -> Option<([u8; 32], Ed25519Identity, [u8; 32])> {
        let x509 = RsaX509Cert::decode(&self.rsa_id).ok()?;
        let sid = Sha256::digest(x509.subject_key().to_pkcs1_der()).into();
        let sid_ed = *UncheckedEd25519Cert::decode(&self.id_signing)
            .ok()?
            .signing_key()?;
        let link = UncheckedEd25519Cert::decode(&self.signing_link).ok()?;
        Some((sid, sid_ed, *link.certified_key()))
    }
}

/// What a relay needs to authenticate itself when it opens a channel to another relay
/// (tor-spec 4.4, link authentication type 3, Ed25519-SHA256-RFC5705): its CERTS cell
/// (types 2, 4, 6 and 7) and the ed25519 authentication key certified by the type-6
/// certificate. Make it with [`LinkKeys::initiator_credentials`].
#[derive(Clone, Debug)]
pub struct InitiatorCredentials {
    rsa_id: Vec<u8>,
    id_signing: Vec<u8>,
    signing_auth: Vec<u8>,
    crosscert: Vec<u8>,
    auth_key: Ed25519Keypair,
    rsa_key_sha256: [u8; 32],
    ed_identity: Ed25519Identity,
}

impl InitiatorCredentials {
    /// The ed25519 identity these credentials prove (CID_ED).
    pub fn ed25519_identity(&self) -> Ed25519Identity {
        self.ed_identity
    }

    /// The context of the TLS exporter of AUTHENTICATE's TLSSECRETS: the CID field, SHA-256
    /// of the DER encoding of the RSA identity key, as C tor computes it.
    pub fn tls_exporter_context(&self) -> [u8; 32] {
        self.rsa_key_sha256
    }

    /// SHA-256 of the PKCS#1 DER encoding of the RSA identity key (AUTHENTICATE's CID).
    pub fn rsa_key_sha256(&self) -> &[u8; 32] {
        &self.rsa_key_sha256
    }

    /// The ed25519 authentication key that signs AUTHENTICATE.
    pub fn auth_key(&self) -> &Ed25519Keypair {
        &self.auth_key
    }

    /// The (CertType, body) entries of the CERTS cell, in C tor's order (2, 4, 6, 7).
    pub fn entries(&self) -> [(u8, &[u8]); 4] {
        [
            (CERTS_RSA_ID, &self.rsa_id),
            (CERTS_ED_ID_SIGNING, &self.id_signing),
            (CERTS_ED_SIGNING_AUTH, &self.signing_auth),
            (CERTS_RSA_ED_CROSSCERT, &self.crosscert),
        ]
    }
}

/// The four certificates of a CERTS cell that [`verify_cert_chain`] checks.
#[derive(Clone, Copy, Debug)]
pub struct CertChain<'a> {
    /// Type 2: the self-signed X.509 RSA identity certificate.
    pub rsa_id: &'a [u8],
    /// Type 4: Ed25519 Id->Signing.
    pub id_signing: &'a [u8],
    /// The leaf: type 5 (Signing->Link) from a responder, type 6 (Signing->Auth) from an
    /// authenticating initiator.
    pub leaf: &'a [u8],
    /// Type 7: the RSA->Ed25519 cross-certificate.
    pub crosscert: &'a [u8],
}

/// What a valid certificate chain proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedCerts {
    /// The RSA identity (SHA-1 of the RSA identity key).
    pub rsa: RsaIdentity,
    /// The ed25519 identity.
    pub ed: Ed25519Identity,
    /// The ed25519 signing key certified by the identity.
    pub signing_key: Ed25519PublicKey,
    /// SHA-256 of the PKCS#1 DER encoding of the RSA identity key (the SID or CID of
    /// AUTHENTICATE, tor-spec 4.4.2).
    pub rsa_key_sha256: [u8; 32],
    /// The key the leaf certificate certifies: the TLS certificate digest (type 5) or the
    /// ed25519 authentication key (type 6).
    pub leaf_key: [u8; 32],
}

/// A CERTS cell that does not authenticate its sender (tor-spec 4.2, cert-spec): the
/// error of [`verify_cert_chain`], and of the channel's checks around it (missing or
/// duplicate certificates, TLS certificate mismatch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// A certificate type the check needs is absent.
    #[error("missing certificate type {cert_type} ({name})")]
    Missing {
        /// The CertType.
        cert_type: u8,
        /// Its name in tor-spec 4.2.
        name: &'static str,
    },
    /// "A CERTS cell may have no more than one certificate of each CertType."
    #[error("more than one certificate of type {cert_type}")]
    Duplicate {
        /// The CertType.
        cert_type: u8,
    },
    /// A certificate failed to decode or verify.
    #[error("certificate type {cert_type}: {error}")]
    Cert {
        /// The CertType.
        cert_type: u8,
        /// The failure.
        error: CertError,
    },
    /// The RSA identity key is not a 1024-bit key (tor-spec 4.2: "The certified key in the
    /// ID certificate is a 1024-bit RSA key").
    #[error("RSA identity key has {bits} bits, not 1024")]
    RsaKeySize {
        /// Its size.
        bits: usize,
    },
    /// The Id->Signing certificate (type 4) does not carry its signing key in a
    /// signed-with-ed25519-key extension, so the ed25519 identity is unknown.
    #[error("Id->Signing certificate does not name the ed25519 identity key")]
    NoEd25519Identity,
    /// The link certificate (type 5) does not certify the TLS certificate that the peer
    /// presented (tor-spec 4.2: "The certified key in the Signing->Link certificate
    /// matches the SHA256 digest of the certificate that was used to authenticate the TLS
    /// connection").
    #[error("Signing->Link certificate does not match the TLS certificate")]
    TlsCertMismatch,
    /// The RSA->ed25519 cross-certificate (type 7) certifies another ed25519 key than the
    /// identity in the Id->Signing certificate.
    #[error("RSA->Ed25519 cross-certificate names another ed25519 identity")]
    CrossCertKeyMismatch,
}

fn cert_err(cert_type: u8) -> impl Fn(CertError) -> CertsError {
    move |error| CertsError::Cert { cert_type, error }
}

/// Checks the certificate chain of a CERTS cell at Unix time `now`, as C tor 0.4.9 does
/// (see the module documentation); `leaf_type` is the CertType the leaf must have (5 for a
/// responder, 6 for an initiator). The caller compares [`VerifiedCerts::leaf_key`] with
/// the TLS certificate or the AUTHENTICATE key.
pub fn verify_cert_chain(
    chain: &CertChain<'_>,
    leaf_type: u8,
    now: Timestamp,
) -> Result<VerifiedCerts, CertsError> {
    // Id->Signing: self-identifying, signed by the ed25519 identity.
    let id_signing = UncheckedEd25519Cert::decode(chain.id_signing)
        .and_then(|c| c.expect_type(CertType::IDENTITY_V_SIGNING))
        .map_err(cert_err(CERTS_ED_ID_SIGNING))?;
    let ed = *id_signing
        .signing_key()
        .ok_or(CertsError::NoEd25519Identity)?;
    let signing_key = id_signing
        .verify(None, now)
        .and_then(|c| c.certified_public_key())
        .map_err(cert_err(CERTS_ED_ID_SIGNING))?;

    // The leaf: signed by the signing key.
    let leaf = UncheckedEd25519Cert::decode(chain.leaf)
        .and_then(|c| c.expect_type(CertType(leaf_type)))
        .and_then(|c| c.verify(Some(&signing_key), now))
        .map_err(cert_err(leaf_type))?;

    // RSA identity certificate: self-signed, valid with C tor's tolerances, RSA-1024.
    let rsa_cert = RsaX509Cert::decode(chain.rsa_id)
        .and_then(|c| c.verify_self_signed(now).map(|()| c))
        .map_err(cert_err(CERTS_RSA_ID))?;
    let rsa_key: &RsaPublicKey = rsa_cert.subject_key();
    let bits = rsa_key.bits();
    if bits != 1024 {
        return Err(CertsError::RsaKeySize { bits });
    }

    // RSA->Ed25519 cross-certificate.
    let cc = RsaCrosscert::decode(chain.crosscert).map_err(cert_err(CERTS_RSA_ED_CROSSCERT))?;
    if !bool::from(cc.ed25519_key().0.ct_eq(&ed.0)) {
        return Err(CertsError::CrossCertKeyMismatch);
    }
    cc.verify(rsa_key, now)
        .map_err(cert_err(CERTS_RSA_ED_CROSSCERT))?;

    Ok(VerifiedCerts {
        rsa: rsa_key.identity(),
        ed,
        signing_key,
        rsa_key_sha256: Sha256::digest(rsa_key.to_pkcs1_der()).into(),
        leaf_key: *leaf.certified_key(),
    })
}
