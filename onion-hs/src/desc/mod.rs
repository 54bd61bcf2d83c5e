//! v3 onion-service descriptors: rend-spec-v3 §2.4 \[DESC-OUTER\] and §2.5 \[HS-DESC-ENC\].
//!
//! Reading: [`OuterDescriptor::parse`] (the signed outer document; nothing verified yet) →
//! [`OuterDescriptor::verify`] (signing-key certificate by the blinded key, descriptor
//! signature, expiry) → [`VerifiedOuter::decrypt`] (both layers, with client authorization)
//! giving a [`HsDescriptor`]. [`decode`] does all of it for a client that knows the address
//! and the time period.
//!
//! Writing: [`DescriptorBuilder`] signs, encrypts and encodes a descriptor exactly in C tor's
//! layout (first layer padded to a multiple of 10 000 bytes, 16 `auth-client` lines at least).

mod build;
pub mod crypt;
mod inner;
pub(crate) mod netdoc;
mod outer;

pub use build::{BuildIntroPoint, ClientAuthConfig, DescriptorBuilder};
pub use inner::{AuthClient, FirstLayer, IntroPointDesc, SecondLayer};
pub use outer::{decode, OuterDescriptor, VerifiedOuter};

use crate::cert::CertError;
use crate::keys::HsKeyError;
use crate::linkspec::LinkSpecError;

/// Maximum descriptor size HSDirs accept (rend-spec-v3 §2.4); larger input is refused.
pub const MAX_DESCRIPTOR_LEN: usize = 50_000;
/// The first-layer plaintext is padded with NULs to a multiple of this (rend-spec-v3 §2.5.1.1).
pub const PLAINTEXT_PADDING_MULTIPLE: usize = 10_000;
/// Maximum number of introduction points (rend-spec-v3 §2.5.4).
pub const MAX_INTRO_POINTS: usize = 20;
/// Prefix of the descriptor signature (rend-spec-v3 §2.4).
pub const SIG_PREFIX: &[u8] = b"Tor onion service descriptor sig v3";

/// Why a descriptor could not be read or built. Each variant names the field or layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescError {
    /// More than [`MAX_DESCRIPTOR_LEN`] bytes.
    #[error("descriptor is {0} bytes, more than the 50000 allowed")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("{0} is not UTF-8 text")]
    NotText(&'static str),
    /// The text is not a well-formed sequence of dir-spec §1.2 items (a malformed keyword
    /// line or object, too large, too many items), as onion-dir's tokenizer reports it.
    #[error("{0}")]
    Netdoc(#[from] onion_dir::ParseError),
    /// A line or item is malformed.
    #[error("line {line}: {keyword}: {what}")]
    Syntax {
        /// 1-based line number in the document or decrypted layer.
        line: usize,
        /// The keyword (empty if unknown).
        keyword: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// A required keyword is absent.
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// A keyword that must appear once appears again.
    #[error("duplicate `{0}`")]
    Duplicate(&'static str),
    /// `hs-descriptor` is not first or not version 3.
    #[error("not a v3 onion service descriptor ({0})")]
    BadVersion(&'static str),
    /// A value out of range (e.g. descriptor-lifetime).
    #[error("`{0}` out of range")]
    OutOfRange(&'static str),
    /// The descriptor signing certificate failed.
    #[error("{field}: {err}")]
    Cert {
        /// Which certificate.
        field: &'static str,
        /// Why.
        err: CertError,
    },
    /// A key failed to decode.
    #[error("{field}: {err}")]
    Key {
        /// Which key.
        field: &'static str,
        /// Why.
        err: HsKeyError,
    },
    /// The descriptor's blinded key is not the one of the expected service and period.
    #[error("descriptor is for another onion address or time period (blinded key mismatch)")]
    WrongBlindedKey,
    /// The outer signature does not verify.
    #[error("descriptor signature is invalid")]
    BadSignature,
    /// An encrypted blob shorter than salt + MAC.
    #[error("{layer} layer: ciphertext of {len} bytes is too short")]
    CiphertextTooShort {
        /// Layer.
        layer: &'static str,
        /// Its length.
        len: usize,
    },
    /// A layer's MAC does not verify: wrong address/subcredential (outer), or wrong or missing
    /// client authorization (inner).
    #[error("{layer} layer: MAC mismatch (wrong onion address, or corrupt)")]
    BadMac {
        /// Layer.
        layer: &'static str,
    },
    /// The service requires client authorization and no client key was given.
    #[error("descriptor is encrypted for authorized clients; a client key is required")]
    ClientAuthRequired,
    /// The given client key is not among the authorized clients.
    #[error("client key is not authorized for this descriptor")]
    ClientNotAuthorized,
    /// A link specifier block is malformed.
    #[error("introduction point {index}: {err}")]
    RawLinkSpec {
        /// Introduction point (0-based).
        index: usize,
        /// Why.
        err: LinkSpecError,
    },
    /// More than 20 introduction points.
    #[error("{0} introduction points, more than 20")]
    TooManyIntroPoints(usize),
    /// Building: an argument cannot be encoded.
    #[error("cannot build descriptor: {0}")]
    Build(&'static str),
}

impl DescError {
    pub(crate) fn syntax(line: usize, keyword: &'static str, what: &'static str) -> Self {
        DescError::Syntax {
            line,
            keyword,
            what,
        }
    }
}

/// Keywords we know, as `'static` labels for errors.
pub(crate) fn known_keyword(kw: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "hs-descriptor",
        "descriptor-lifetime",
        "descriptor-signing-key-cert",
        "revision-counter",
        "superencrypted",
        "signature",
        "desc-auth-type",
        "desc-auth-ephemeral-key",
        "auth-client",
        "encrypted",
        "create2-formats",
        "intro-auth-required",
        "single-onion-service",
        "introduction-point",
        "onion-key",
        "auth-key",
        "enc-key",
        "enc-key-cert",
        "legacy-key",
        "legacy-key-cert",
    ];
    KNOWN
        .iter()
        .find(|k| **k == kw)
        .copied()
        .unwrap_or("(unknown)")
}

/// A fully decoded descriptor: outer fields and both decrypted layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDescriptor {
    /// `descriptor-lifetime`, minutes.
    pub lifetime_minutes: u16,
    /// `revision-counter`.
    pub revision_counter: u64,
    /// The blinded key from the signing-key certificate.
    pub blinded_key: [u8; 32],
    /// The descriptor signing key `KP_hs_desc_sign`.
    pub signing_key: [u8; 32],
    /// Expiry of the signing-key certificate, hours since the epoch.
    pub signing_cert_expiry_hours: u32,
    /// The first layer (client authorization data).
    pub first_layer: FirstLayer,
    /// The second layer (introduction points).
    pub second_layer: SecondLayer,
}
