//! Error types of onion-crypto.
//!
//! One enum per concern (handshakes, certificates, keys, relay-cell crypto), all
//! `#[non_exhaustive]`, plus the umbrella [`enum@Error`] that wraps them. Every variant names
//! the field or check that failed so that a caller can act on it (close a circuit, reject a
//! descriptor, log a precise reason).
//!
//! Each of them has a `kind()` giving the stack's one classification, [`ErrorKind`] (from
//! onion-cell): what a peer sent that does not verify (a handshake reply, a certificate, a
//! key in a certificate) is [`ErrorKind::PeerProtocol`]; what the caller gave that cannot be
//! used (a key file, key material of the wrong length, an impossible KDF output) is
//! [`ErrorKind::Misuse`].

use thiserror::Error;

use crate::time::Timestamp;

pub use onion_cell::ErrorKind;

use crate::relay_keys::CertsError;
use crate::relay_keyset::KeySetError;

/// A circuit handshake (ntor, ntor-v3, CREATE_FAST) failed.
///
/// Reply-side failures never reveal which byte was wrong beyond the check that failed: an
/// attacker flipping bits learns nothing it did not already know.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake message has the wrong length for this handshake type.
    #[error("{what}: expected {expected} bytes, got {got}")]
    BadLength {
        /// Which message (e.g. "ntor server reply").
        what: &'static str,
        /// Required length (or minimum length for variable-length messages).
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// The server's AUTH value (ntor, ntor-v3) or KH (CREATE_FAST) did not match: the reply
    /// was corrupted, or it came from someone without the relay's onion key.
    #[error("server authentication ({field}) does not match")]
    BadAuth {
        /// The field that failed ("AUTH" or "KH").
        field: &'static str,
    },
    /// The client's MAC over its encrypted message (ntor-v3) did not verify.
    #[error("ntor-v3 client message MAC does not match")]
    BadClientMac,
    /// A Diffie-Hellman result was all zeros: the peer sent a small-order point.
    #[error("degenerate (non-contributory) curve25519 public key in {field}")]
    DegenerateKey {
        /// The field that carried the bad key ("Y", "X", "B").
        field: &'static str,
    },
    /// The client named an onion key (KEYID) that this relay does not hold.
    #[error("handshake names an onion key this relay does not have")]
    UnknownOnionKey,
    /// The client named a relay identity (NODEID) that is not ours.
    #[error("handshake names another relay's identity")]
    WrongRelayId,
    /// No onion keys were supplied to the server side.
    #[error("no onion keys supplied")]
    NoOnionKeys,
    /// Asked for more key material than the KDF can produce.
    #[error(transparent)]
    Kdf(#[from] KdfError),
}

/// A key-derivation function was asked for an impossible output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KdfError {
    /// HKDF-SHA256 can produce at most 255 * 32 bytes; KDF-TOR at most 256 * 20.
    #[error("requested {requested} bytes of key material, at most {max} possible")]
    OutputTooLong {
        /// Bytes requested.
        requested: usize,
        /// Maximum for this KDF.
        max: usize,
    },
}

/// A certificate (ed25519 cert, RSA cross-cert, X.509) failed to decode or verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CertError {
    /// The input ended inside a field.
    #[error("truncated certificate: {field} needs {needed} more bytes")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes left after the signature.
    #[error("{extra} trailing bytes after certificate")]
    TrailingBytes {
        /// Number of extra bytes.
        extra: usize,
    },
    /// Unsupported certificate VERSION (cert-spec 2.1: only 1).
    #[error("unsupported certificate version {0}")]
    BadVersion(u8),
    /// A field holds a value that is not allowed.
    #[error("invalid certificate field {field}: {reason}")]
    BadField {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// An extension with the AFFECTS_VALIDATION flag that we do not understand (cert-spec 2.2.1).
    #[error("unrecognized extension type {0} marked as affecting validation")]
    UnknownCriticalExtension(u8),
    /// The same extension appears twice.
    #[error("duplicate extension type {0}")]
    DuplicateExtension(u8),
    /// No key to check the signature with: neither given nor in a signed-with-ed25519-key
    /// extension.
    #[error("certificate does not name its signing key and none was supplied")]
    MissingSigningKey,
    /// The signing key given by the caller differs from the one in the extension.
    #[error("certificate signing key does not match the expected key")]
    WrongSigningKey,
    /// The certificate is of a different type than the caller expected.
    #[error("certificate type {got} where {expected} was expected")]
    WrongCertType {
        /// Expected type.
        expected: u8,
        /// Type found.
        got: u8,
    },
    /// The certificate signature is not valid.
    #[error("bad signature on {what}")]
    BadSignature {
        /// Which certificate.
        what: &'static str,
    },
    /// The certificate expired before the given time.
    #[error("certificate expired at {expired_at}, now {now}")]
    Expired {
        /// When it expired.
        expired_at: Timestamp,
        /// The time it was checked against.
        now: Timestamp,
    },
    /// The certificate is not yet valid (X.509 notBefore).
    #[error("certificate not valid before {not_before}, now {now}")]
    NotYetValid {
        /// Start of validity.
        not_before: Timestamp,
        /// The time it was checked against.
        now: Timestamp,
    },
    /// DER decoding or encoding failed.
    #[error("DER error in {what}")]
    Der {
        /// What was being decoded.
        what: &'static str,
    },
    /// A key inside a certificate is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A key could not be decoded, or a key operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a valid ed25519 public key (not a curve point).
    #[error("invalid ed25519 public key")]
    BadEd25519Key,
    /// Not a valid curve25519 key of 32 bytes.
    #[error("invalid curve25519 key length {0}")]
    BadCurve25519Length(usize),
    /// The PKCS#1 DER encoding of an RSA key is invalid.
    #[error("invalid PKCS#1 DER RSA public key")]
    BadRsaDer,
    /// The RSA key has the wrong size or exponent for this use.
    #[error("RSA key unsuitable: {0}")]
    BadRsaKey(&'static str),
    /// An RSA signature did not verify.
    #[error("bad RSA signature")]
    BadRsaSignature,
    /// RSA signing or key generation failed.
    #[error("RSA operation failed: {0}")]
    RsaOperation(&'static str),
    /// A hex or base64 text encoding was invalid.
    #[error("invalid {encoding} encoding of {what}")]
    BadEncoding {
        /// "hex" or "base64".
        encoding: &'static str,
        /// What it should have been.
        what: &'static str,
    },
    /// A key file (C tor format) has the wrong header or length.
    #[error("bad key file: {0}")]
    BadKeyFile(&'static str),
}

/// Relay-cell crypto ("tor1") failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Tor1Error {
    /// The key material has the wrong length for this cipher and digest.
    #[error("tor1 key material: expected {expected} bytes, got {got}")]
    BadKeyLength {
        /// Required bytes.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Asked to send to a hop the circuit does not have.
    #[error("no hop {hop} on this circuit ({hops} hops)")]
    NoSuchHop {
        /// Requested hop index (0-based).
        hop: usize,
        /// Number of hops.
        hops: usize,
    },
    /// An inbound cell was not recognised by any hop: it is corrupt (or forged), and the
    /// circuit must be closed (tor-spec 5.5.3).
    #[error("inbound relay cell not recognised by any hop")]
    NotRecognized,
}

/// Any error from onion-crypto.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`HandshakeError`].
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// See [`CertError`].
    #[error(transparent)]
    Cert(#[from] CertError),
    /// See [`KeyError`].
    #[error(transparent)]
    Key(#[from] KeyError),
    /// See [`Tor1Error`].
    #[error(transparent)]
    Tor1(#[from] Tor1Error),
    /// See [`KdfError`].
    #[error(transparent)]
    Kdf(#[from] KdfError),
}

impl HandshakeError {
    /// [`ErrorKind::PeerProtocol`] for a handshake message that is malformed or does not
    /// authenticate (tor-spec §5.1.4, §5.1.5, proposal 332), [`ErrorKind::Misuse`] for a
    /// server side given no onion keys or a KDF asked for too much.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HandshakeError::BadLength { .. }
            | HandshakeError::BadAuth { .. }
            | HandshakeError::BadClientMac
            | HandshakeError::DegenerateKey { .. }
            | HandshakeError::UnknownOnionKey
            | HandshakeError::WrongRelayId => ErrorKind::PeerProtocol,
            HandshakeError::NoOnionKeys => ErrorKind::Misuse,
            HandshakeError::Kdf(e) => e.kind(),
        }
    }
}

impl KdfError {
    /// Always [`ErrorKind::Misuse`]: the caller asked for more key material than the KDF
    /// can produce.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Misuse
    }
}

impl CertError {
    /// Certificates come from peers (CERTS cells, descriptors): a certificate that does not
    /// decode or verify is [`ErrorKind::PeerProtocol`], one of a version or with a critical
    /// extension this implementation does not know is [`ErrorKind::Unsupported`]
    /// (cert-spec §2.1, §2.2.1), and a key inside it has its [`KeyError::kind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            CertError::BadVersion(_) | CertError::UnknownCriticalExtension(_) => {
                ErrorKind::Unsupported
            }
            CertError::Key(e) => e.kind(),
            CertError::Truncated { .. }
            | CertError::TrailingBytes { .. }
            | CertError::BadField { .. }
            | CertError::DuplicateExtension(_)
            | CertError::MissingSigningKey
            | CertError::WrongSigningKey
            | CertError::WrongCertType { .. }
            | CertError::BadSignature { .. }
            | CertError::Expired { .. }
            | CertError::NotYetValid { .. }
            | CertError::Der { .. } => ErrorKind::PeerProtocol,
        }
    }
}

impl KeyError {
    /// A key or signature decoded from what a peer sent that is not valid is
    /// [`ErrorKind::PeerProtocol`]; a key file (the caller's own) that does not decode is
    /// [`ErrorKind::Misuse`], and a failed RSA operation on a valid key
    /// [`ErrorKind::Internal`]. Where the key is known to be the caller's
    /// ([`KeySetError`]), the wrapping error says [`ErrorKind::Misuse`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            KeyError::BadEd25519Key
            | KeyError::BadCurve25519Length(_)
            | KeyError::BadRsaDer
            | KeyError::BadRsaKey(_)
            | KeyError::BadRsaSignature
            | KeyError::BadEncoding { .. } => ErrorKind::PeerProtocol,
            KeyError::BadKeyFile(_) => ErrorKind::Misuse,
            KeyError::RsaOperation(_) => ErrorKind::Internal,
        }
    }
}

impl Tor1Error {
    /// [`ErrorKind::PeerProtocol`] for an inbound cell no hop recognises (tor-spec §5.5.3);
    /// [`ErrorKind::Misuse`] for key material of the wrong length or a hop the circuit does
    /// not have.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Tor1Error::NotRecognized => ErrorKind::PeerProtocol,
            Tor1Error::BadKeyLength { .. } | Tor1Error::NoSuchHop { .. } => ErrorKind::Misuse,
        }
    }
}

impl CertsError {
    /// Always the peer's: a CERTS cell that does not authenticate its sender is
    /// [`ErrorKind::PeerProtocol`] (tor-spec §4.2), except a certificate inside it of a kind
    /// this implementation does not support ([`CertError::kind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CertsError::Cert { error, .. } => error.kind(),
            _ => ErrorKind::PeerProtocol,
        }
    }
}

impl KeySetError {
    /// The key files and certificates of a relay's key set are the caller's: anything
    /// wrong with them is [`ErrorKind::Misuse`], except an RSA operation that failed on
    /// valid keys ([`ErrorKind::Internal`]).
    pub fn kind(&self) -> ErrorKind {
        let inner = match self {
            KeySetError::Key { error, .. } | KeySetError::BadIdentity(error) => error.kind(),
            KeySetError::Cert { error, .. } => error.kind(),
            _ => ErrorKind::Misuse,
        };
        match inner {
            ErrorKind::Internal => ErrorKind::Internal,
            _ => ErrorKind::Misuse,
        }
    }
}

impl Error {
    /// Who is to blame: the kind of the error inside.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Handshake(e) => e.kind(),
            Error::Cert(e) => e.kind(),
            Error::Key(e) => e.kind(),
            Error::Tor1(e) => e.kind(),
            Error::Kdf(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_bad_reply_or_certificate_is_its_fault_and_a_bad_call_the_callers() {
        let cases: [(Error, ErrorKind); 10] = [
            (
                HandshakeError::BadAuth { field: "AUTH" }.into(),
                ErrorKind::PeerProtocol,
            ),
            (HandshakeError::NoOnionKeys.into(), ErrorKind::Misuse),
            (
                KdfError::OutputTooLong {
                    requested: 9000,
                    max: 8160,
                }
                .into(),
                ErrorKind::Misuse,
            ),
            (
                CertError::BadSignature {
                    what: "Id->Signing",
                }
                .into(),
                ErrorKind::PeerProtocol,
            ),
            (CertError::BadVersion(2).into(), ErrorKind::Unsupported),
            (
                CertError::Expired {
                    expired_at: Timestamp(1),
                    now: Timestamp(2),
                }
                .into(),
                ErrorKind::PeerProtocol,
            ),
            (KeyError::BadKeyFile("header").into(), ErrorKind::Misuse),
            (KeyError::RsaOperation("sign").into(), ErrorKind::Internal),
            (Tor1Error::NotRecognized.into(), ErrorKind::PeerProtocol),
            (
                Tor1Error::BadKeyLength {
                    expected: 72,
                    got: 3,
                }
                .into(),
                ErrorKind::Misuse,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn the_same_bad_key_is_the_peers_in_a_certificate_and_the_callers_in_a_key_set() {
        let in_cert = CertError::Key(KeyError::BadEd25519Key);
        assert_eq!(in_cert.kind(), ErrorKind::PeerProtocol);
        let in_certs = CertsError::Cert {
            cert_type: 4,
            error: in_cert,
        };
        assert_eq!(in_certs.kind(), ErrorKind::PeerProtocol);
        assert_eq!(
            CertsError::Cert {
                cert_type: 4,
                error: CertError::UnknownCriticalExtension(9),
            }
            .kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(CertsError::TlsCertMismatch.kind(), ErrorKind::PeerProtocol);
        let in_key_set = KeySetError::Key {
            file: "ed25519_master_id_public_key",
            error: KeyError::BadEd25519Key,
        };
        assert_eq!(in_key_set.kind(), ErrorKind::Misuse);
        assert_eq!(
            KeySetError::BadIdentity(KeyError::RsaOperation("generate")).kind(),
            ErrorKind::Internal
        );
        assert_eq!(
            KeySetError::Missing("secret_id_key").kind(),
            ErrorKind::Misuse
        );
    }
}
