//! Error types of onion-crypto.
//!
//! One enum per concern (handshakes, certificates, keys, relay-cell crypto), all
//! `#[non_exhaustive]`, plus the umbrella [`enum@Error`] that wraps them. Every variant names
//! the field or check that failed so that a caller can act on it (close a circuit, reject a
//! descriptor, log a precise reason).

use thiserror::Error;

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
    #[error("certificate expired at {expired_at} (unix seconds), now {now}")]
    Expired {
        /// Expiry time in seconds since the epoch.
        expired_at: u64,
        /// The time it was checked against.
        now: u64,
    },
    /// The certificate is not yet valid (X.509 notBefore).
    #[error("certificate not valid before {not_before} (unix seconds), now {now}")]
    NotYetValid {
        /// Start of validity.
        not_before: u64,
        /// The time it was checked against.
        now: u64,
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
