//! The CERTS cell (tor-spec §4.2): which certificates a peer's CERTS cell must hold, the
//! identities they prove, and the comparison of the responder's link certificate with the
//! TLS certificate; and the CERTS cells a relay sends.
//!
//! The certificate cryptography lives in [`onion_crypto::relay_keys`] (chain check as C tor
//! 0.4.9's `or_handshake_certs_ed25519_ok`, key and certificate creation) and
//! [`onion_crypto::x509`]. This module adds the link protocol around it:
//!
//! * at most one certificate of each type (unknown types are ignored); exactly one of
//!   types 2 (RSA identity, X.509), 4 (Ed25519 Id->Signing), 5 (Signing->Link; 6,
//!   Signing->Auth, from an authenticating initiator) and 7 (RSA->Ed25519
//!   cross-certificate) is required;
//! * the type-5 certificate certifies the SHA-256 digest of the TLS certificate of the
//!   connection.
//!
//! RSA-only authentication (types 1 and 2 without ed25519 certificates) is refused: every
//! C tor relay since 0.3.0 has an ed25519 identity, and C tor itself never falls back to
//! RSA-only once ed25519 certificates are present.

use std::borrow::Cow;

use onion_cell::chancell::{CertEntry, Certs};
use onion_crypto::cert::Timestamp;
use onion_crypto::keys::{Ed25519Keypair, Ed25519Signer};
use onion_crypto::relay_keys::{
    verify_cert_chain, CertChain, LinkKeys, VerifiedCerts, CERTS_ED_ID_SIGNING,
    CERTS_ED_SIGNING_AUTH, CERTS_ED_SIGNING_LINK, CERTS_RSA_ED_CROSSCERT, CERTS_RSA_ID,
};
use onion_crypto::rsa::RsaKeypair;
use onion_crypto::CertError;
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;

pub use onion_crypto::relay_keys::{InitiatorCredentials, ResponderCerts};

use super::config::PeerIds;
use super::error::CertsError;

fn type_name(t: u8) -> &'static str {
    match t {
        1 => "RSA link",
        2 => "RSA identity",
        3 => "RSA authenticate",
        4 => "Ed25519 Id->Signing",
        5 => "Ed25519 Signing->Link",
        6 => "Ed25519 Signing->Auth",
        7 => "RSA->Ed25519 cross-certificate",
        _ => "unknown",
    }
}

/// Finds the single certificate of type `t`.
fn find<'c>(slots: &[Option<&'c [u8]>; 8], t: u8) -> Result<&'c [u8], CertsError> {
    slots
        .get(usize::from(t))
        .copied()
        .flatten()
        .ok_or(CertsError::Missing {
            cert_type: t,
            name: type_name(t),
        })
}

/// What a valid CERTS cell proves.
pub(crate) type CertsProof = VerifiedCerts;

/// Checks a responder's CERTS cell; returns what it proves.
///
/// `tls_cert_sha256` is the SHA-256 of the TLS certificate the responder presented;
/// `None` skips the link check (no TLS). `now` is the wall clock in Unix seconds.
pub(crate) fn verify_responder_certs(
    certs: &Certs<'_>,
    tls_cert_sha256: Option<&[u8; 32]>,
    now: u64,
) -> Result<CertsProof, CertsError> {
    let proof = verify_certs(certs, CERTS_ED_SIGNING_LINK, now)?;
    // §4.2: "The certified key in the Signing->Link certificate matches the SHA256 digest
    // of the certificate that was used to authenticate the TLS connection." (cert-spec
    // A.4: CERT_KEY_TYPE 01 is accepted as well as 03 here, for relays before
    // 0.4.5.1-alpha.)
    if let Some(tls) = tls_cert_sha256 {
        if !bool::from(proof.leaf_key.ct_eq(tls)) {
            return Err(CertsError::TlsCertMismatch);
        }
    }
    Ok(proof)
}

/// Checks an authenticating initiator's CERTS cell (tor-spec §4.2, "To authenticate the
/// initiator as having a given Ed25519,RSA identity key combination"): as for a responder,
/// with a Signing->Auth certificate (type 6) in place of the Signing->Link one.
pub(crate) fn verify_initiator_certs(
    certs: &Certs<'_>,
    now: u64,
) -> Result<CertsProof, CertsError> {
    verify_certs(certs, CERTS_ED_SIGNING_AUTH, now)
}

fn verify_certs(certs: &Certs<'_>, leaf_type: u8, now: u64) -> Result<CertsProof, CertsError> {
    // §4.2: "A CERTS cell may have no more than one certificate of each CertType."
    let mut slots: [Option<&[u8]>; 8] = [None; 8];
    for CertEntry { cert_type, body } in &certs.certs {
        let Some(slot) = slots.get_mut(usize::from(*cert_type)) else {
            continue; // unknown types are ignored
        };
        if slot.is_some() {
            return Err(CertsError::Duplicate {
                cert_type: *cert_type,
            });
        }
        *slot = Some(body.as_ref());
    }
    let chain = CertChain {
        id_signing: find(&slots, CERTS_ED_ID_SIGNING)?,
        leaf: find(&slots, leaf_type)?,
        rsa_id: find(&slots, CERTS_RSA_ID)?,
        crosscert: find(&slots, CERTS_RSA_ED_CROSSCERT)?,
    };
    verify_cert_chain(&chain, leaf_type, Timestamp(now))
}

/// A CERTS cell body from (CertType, body) entries.
fn certs_cell<'a>(entries: [(u8, &'a [u8]); 4]) -> Certs<'a> {
    Certs {
        certs: entries
            .into_iter()
            .map(|(cert_type, b)| CertEntry {
                cert_type,
                body: Cow::Borrowed(b),
            })
            .collect(),
    }
}

/// The CERTS cell body of a responder (types 2, 4, 5, 7, in C tor's order).
pub(crate) fn responder_certs_cell(certs: &ResponderCerts) -> Certs<'_> {
    certs_cell(certs.entries())
}

/// The CERTS cell body of an authenticating initiator (types 2, 4, 6, 7).
pub(crate) fn initiator_certs_cell(creds: &InitiatorCredentials) -> Certs<'_> {
    certs_cell(creds.entries())
}

/// The label of the RFC 5705 TLS exporter whose output an authenticating initiator puts in
/// the TLSSECRETS field of AUTHENTICATE (tor-spec §4.4.2). The length is 32 and the
/// context is [`InitiatorCredentials::tls_exporter_context`]: the CID field (SHA-256 of the
/// initiator's RSA identity key), which is what C tor uses. (tor-spec §4.4.2 says the
/// ed25519 identity; the current torspec notes that C tor implemented CID instead and that
/// this is now the protocol.)
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER FOR TOR TLS CLIENT BINDING AUTH0003";

/// A relay's link-authentication keys ([`onion_crypto::relay_keys::LinkKeys`]) seen from
/// the channel: the identities they prove as [`PeerIds`]. Everything else forwards to the
/// crypto type.
#[derive(Debug)]
pub struct RelayLinkKeys(LinkKeys);

impl From<LinkKeys> for RelayLinkKeys {
    fn from(k: LinkKeys) -> Self {
        RelayLinkKeys(k)
    }
}

impl RelayLinkKeys {
    /// [`LinkKeys::generate`]: fresh keys and certificates valid from `now`.
    pub fn generate(
        now: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CertError> {
        LinkKeys::generate(now, rng).map(Self)
    }

    /// [`LinkKeys::from_keys`]: certifies existing keys.
    pub fn from_keys(
        rsa_identity: RsaKeypair,
        identity: &dyn Ed25519Signer,
        signing: Ed25519Keypair,
        now: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CertError> {
        LinkKeys::from_keys(rsa_identity, identity, signing, now, rng).map(Self)
    }

    /// The identities these keys prove.
    pub fn ids(&self) -> PeerIds {
        PeerIds::new(
            self.0.rsa_identity().public().identity(),
            self.0.ed_identity(),
        )
    }

    /// The keys themselves.
    pub fn keys(&self) -> &LinkKeys {
        &self.0
    }

    /// The RSA identity key pair (also signs the relay's descriptors).
    pub fn rsa_identity(&self) -> &RsaKeypair {
        self.0.rsa_identity()
    }

    /// [`LinkKeys::initiator_credentials`].
    pub fn initiator_credentials(
        &self,
        now: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<InitiatorCredentials, CertError> {
        self.0.initiator_credentials(now, rng)
    }

    /// [`LinkKeys::responder_certs`].
    pub fn responder_certs(
        &self,
        tls_cert_sha256: &[u8; 32],
        now: impl Into<Timestamp>,
    ) -> Result<ResponderCerts, CertError> {
        self.0.responder_certs(tls_cert_sha256, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_crypto::cert::{CertKeyType, CertType, Ed25519CertBuilder};
    use onion_crypto::{Ed25519Identity, RsaIdentity};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const TLS: [u8; 32] = [3; 32];

    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_780_000_000)
    }

    fn set() -> (RelayLinkKeys, ResponderCerts) {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let k = RelayLinkKeys::generate(wall(), &mut rng).expect("keys");
        let c = k.responder_certs(&TLS, wall()).expect("certs");
        (k, c)
    }

    fn check(certs: &Certs<'_>) -> Result<(RsaIdentity, Ed25519Identity), CertsError> {
        verify_responder_certs(certs, Some(&TLS), Timestamp::from(wall()).0).map(|p| (p.rsa, p.ed))
    }

    #[test]
    fn missing_duplicate_and_unknown_certificates() {
        let (k, c) = set();
        let body = responder_certs_cell(&c);
        let ids = check(&body).expect("valid");
        assert_eq!(PeerIds::new(ids.0, ids.1), k.ids());
        for t in [2u8, 4, 5, 7] {
            let mut b = body.clone();
            b.certs.retain(|e| e.cert_type != t);
            assert!(
                matches!(check(&b), Err(CertsError::Missing { cert_type, .. }) if cert_type == t),
                "{t}"
            );
            let mut b = body.clone();
            let dup = b.certs.iter().find(|e| e.cert_type == t).cloned();
            b.certs.extend(dup);
            assert_eq!(check(&b), Err(CertsError::Duplicate { cert_type: t }));
        }
        // Unknown types (and an RSA link certificate, as C tor sends) are ignored.
        let mut b = body.clone();
        for t in [1u8, 3, 6, 9, 200] {
            b.certs.push(CertEntry {
                cert_type: t,
                body: Cow::Borrowed(&[1, 2, 3]),
            });
        }
        assert_eq!(check(&b), Ok(ids));
    }

    #[test]
    fn wrong_types_in_slots_are_refused() {
        let (_, c) = set();
        // The link certificate presented as the Id->Signing certificate and vice versa.
        let mut swapped = c.clone();
        swapped.set(4, c.get(5).expect("5").to_vec());
        swapped.set(5, c.get(4).expect("4").to_vec());
        assert!(matches!(
            check(&responder_certs_cell(&swapped)),
            Err(CertsError::Cert {
                cert_type: 4,
                error: CertError::WrongCertType {
                    expected: 4,
                    got: 5
                }
            })
        ));
    }

    #[test]
    fn id_signing_cert_must_name_its_signer() {
        let (_, c) = set();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let identity = Ed25519Keypair::generate(&mut rng);
        let unnamed = Ed25519CertBuilder::new(
            CertType::IDENTITY_V_SIGNING,
            CertKeyType::ED25519,
            [5; 32],
            Ed25519CertBuilder::hours_from_unix(Timestamp(1_790_000_000)),
        )
        .sign(&identity)
        .expect("sign");
        let mut c2 = c.clone();
        c2.set(4, unnamed);
        assert_eq!(
            check(&responder_certs_cell(&c2)),
            Err(CertsError::NoEd25519Identity)
        );
    }

    #[test]
    fn rsa_identity_must_be_1024_bits() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let big = RsaKeypair::generate(&mut rng, 1536).expect("key");
        let identity = Ed25519Keypair::generate(&mut rng);
        let signing = Ed25519Keypair::generate(&mut rng);
        let k = RelayLinkKeys::from_keys(big, &identity, signing, wall(), &mut rng).expect("keys");
        let c = k.responder_certs(&TLS, wall()).expect("certs");
        assert_eq!(
            check(&responder_certs_cell(&c)),
            Err(CertsError::RsaKeySize { bits: 1536 })
        );
    }
}
