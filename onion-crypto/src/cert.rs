//! Tor's ed25519 certificates (cert-spec 2): decode, verify, create.
//!
//! ```text
//! VERSION(1)=1 | CERT_TYPE(1) | EXPIRATION_DATE(4, hours since the epoch) |
//! CERT_KEY_TYPE(1) | CERTIFIED_KEY(32) | N_EXTENSIONS(1) | EXTENSIONS | SIGNATURE(64)
//! extension: ExtLength(2) | ExtType(1) | ExtFlags(1) | ExtData(ExtLength)
//! ```
//!
//! Decoding gives an [`UncheckedEd25519Cert`]; only [`UncheckedEd25519Cert::verify`] (the
//! signature, by the key in the signed-with-ed25519-key extension or a key the caller
//! supplies, and the expiry against a wall-clock time the caller supplies) turns it into an
//! [`Ed25519Cert`]. [`Ed25519CertBuilder`] creates certificates.
//!
//! Also here: the ntor-onion-key cross-certificate of server descriptors (cert type 0x0A,
//! signed by the ed25519 key converted from the ntor onion key; dir-spec 2.1.1,
//! proposal 228): [`verify_ntor_onion_key_crosscert`], [`create_ntor_onion_key_crosscert`].

use alloc::vec::Vec;
use core::ops::Deref;

use ed25519_dalek::Verifier as _;

use crate::error::CertError;
use crate::keys::{
    ed25519_from_curve25519_public, Ed25519Identity, Ed25519PublicKey, Ed25519Signature,
    Ed25519Signer, NtorOnionKey, NtorSecretKey,
};

pub use crate::time::Timestamp;

/// Certificate types (cert-spec A.1 "CERT_TYPE").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertType(pub u8);

impl CertType {
    /// Type `[04]`: ed25519 signing key, signed by the identity key.
    pub const IDENTITY_V_SIGNING: CertType = CertType(0x04);
    /// Type `[05]`: TLS link certificate (SHA-256 of the X.509 DER), signed by the signing key.
    pub const SIGNING_V_TLS_CERT: CertType = CertType(0x05);
    /// Type `[06]`: link authentication key, signed by the signing key.
    pub const SIGNING_V_LINK_AUTH: CertType = CertType(0x06);
    /// Type `[07]`: RSA→ed25519 cross-certificate (a different format: see
    /// [`crate::rsa_crosscert`]).
    pub const RSA_ID_V_IDENTITY: CertType = CertType(0x07);
    /// Type `[08]`: onion service: blinded identity signs the descriptor signing key.
    pub const HS_BLINDED_ID_V_SIGNING: CertType = CertType(0x08);
    /// Type `[09]`: onion service: descriptor signing key signs an intro point auth key.
    pub const HS_IP_V_SIGNING: CertType = CertType(0x09);
    /// Type `[0A]`: ntor onion key (as ed25519) cross-certifies the relay identity.
    pub const NTOR_CC_IDENTITY: CertType = CertType(0x0A);
    /// Type `[0B]`: onion service: descriptor signing key signs an intro point encryption key.
    pub const HS_IP_CC_SIGNING: CertType = CertType(0x0B);
}

/// Types of the certified key (cert-spec A.4 "CERT_KEY_TYPE").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertKeyType(pub u8);

impl CertKeyType {
    /// Type `[01]`: an ed25519 key.
    pub const ED25519: CertKeyType = CertKeyType(1);
    /// Type `[02]`: SHA-256 of an RSA key.
    pub const SHA256_OF_RSA: CertKeyType = CertKeyType(2);
    /// Type `[03]`: SHA-256 of an X.509 certificate (the TLS link cert, cert type 5).
    pub const SHA256_OF_X509: CertKeyType = CertKeyType(3);
}

/// Extension type `[04]` signed-with-ed25519-key (cert-spec 2.2.1).
pub const EXT_SIGNED_WITH_ED25519_KEY: u8 = 4;
/// ExtFlags bit: the extension affects validation; unknown ones make the cert invalid.
pub const EXT_FLAG_AFFECTS_VALIDATION: u8 = 1;

/// One certificate extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExtension {
    /// ExtType.
    pub ext_type: u8,
    /// ExtFlags.
    pub flags: u8,
    /// ExtData.
    pub data: Vec<u8>,
}

/// The decoded contents of an ed25519 certificate, shared by the unchecked and the checked
/// form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519CertBody {
    cert_type: CertType,
    expiration_hours: u32,
    key_type: CertKeyType,
    certified_key: [u8; 32],
    extensions: Vec<CertExtension>,
    signing_key: Option<Ed25519Identity>,
    signature: [u8; 64],
    signed_len: usize,
    encoded: Vec<u8>,
}

impl Ed25519CertBody {
    /// CERT_TYPE.
    pub fn cert_type(&self) -> CertType {
        self.cert_type
    }
    /// EXPIRATION_DATE in hours since the epoch.
    pub fn expiration_hours(&self) -> u32 {
        self.expiration_hours
    }
    /// The expiry as a Unix time (valid up to and including this second).
    pub fn expiry(&self) -> Timestamp {
        Timestamp(u64::from(self.expiration_hours) * 3600)
    }
    /// CERT_KEY_TYPE.
    pub fn key_type(&self) -> CertKeyType {
        self.key_type
    }
    /// CERTIFIED_KEY (an ed25519 key or a SHA-256 digest, see [`Self::key_type`]).
    pub fn certified_key(&self) -> &[u8; 32] {
        &self.certified_key
    }
    /// CERTIFIED_KEY as an ed25519 identity, if the key type says it is one.
    pub fn certified_ed25519(&self) -> Option<Ed25519Identity> {
        (self.key_type == CertKeyType::ED25519).then_some(Ed25519Identity(self.certified_key))
    }
    /// All extensions, in order.
    pub fn extensions(&self) -> &[CertExtension] {
        &self.extensions
    }
    /// The key named by the signed-with-ed25519-key extension, if present.
    pub fn signing_key(&self) -> Option<&Ed25519Identity> {
        self.signing_key.as_ref()
    }
    /// SIGNATURE.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    /// The bytes covered by the signature (everything before it).
    pub fn signed_part(&self) -> &[u8] {
        &self.encoded[..self.signed_len]
    }
    /// The whole encoded certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }
}

/// A decoded ed25519 certificate whose signature and expiry have not been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncheckedEd25519Cert(Ed25519CertBody);

/// An ed25519 certificate with a valid signature, unexpired at the time it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Cert(Ed25519CertBody);

impl Deref for UncheckedEd25519Cert {
    type Target = Ed25519CertBody;
    fn deref(&self) -> &Ed25519CertBody {
        &self.0
    }
}
impl Deref for Ed25519Cert {
    type Target = Ed25519CertBody;
    fn deref(&self) -> &Ed25519CertBody {
        &self.0
    }
}

/// A small reader over untrusted bytes that reports which field ran short.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CertError> {
        let rest = &self.b[self.pos..];
        if rest.len() < n {
            return Err(CertError::Truncated {
                field,
                needed: n - rest.len(),
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, CertError> {
        Ok(self.take(1, field)?[0])
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CertError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
}

/// Header of C tor's ed25519 certificate files (`ed25519_signing_cert`).
const CERT_FILE_TAG_PREFIX: &[u8] = b"== ed25519v1-cert: ";

impl UncheckedEd25519Cert {
    /// Decode a certificate. Unknown extensions are kept unless they carry the
    /// AFFECTS_VALIDATION flag (then the cert is rejected, cert-spec 2.2); an extension
    /// type may appear only once.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        let mut r = Reader { b: bytes, pos: 0 };
        let version = r.u8("VERSION")?;
        if version != 1 {
            return Err(CertError::BadVersion(version));
        }
        let cert_type = CertType(r.u8("CERT_TYPE")?);
        let expiration_hours = u32::from_be_bytes(r.array("EXPIRATION_DATE")?);
        let key_type = CertKeyType(r.u8("CERT_KEY_TYPE")?);
        let certified_key = r.array::<32>("CERTIFIED_KEY")?;
        let n_ext = r.u8("N_EXTENSIONS")?;
        let mut extensions = Vec::with_capacity(usize::from(n_ext));
        let mut signing_key = None;
        for _ in 0..n_ext {
            let len = u16::from_be_bytes(r.array("ExtLength")?);
            let ext_type = r.u8("ExtType")?;
            let flags = r.u8("ExtFlags")?;
            let data = r.take(usize::from(len), "ExtData")?;
            if extensions
                .iter()
                .any(|e: &CertExtension| e.ext_type == ext_type)
            {
                return Err(CertError::DuplicateExtension(ext_type));
            }
            match ext_type {
                EXT_SIGNED_WITH_ED25519_KEY => {
                    let k: [u8; 32] = data.try_into().map_err(|_| CertError::BadField {
                        field: "signed-with-ed25519-key extension",
                        reason: "must be 32 bytes",
                    })?;
                    signing_key = Some(Ed25519Identity(k));
                }
                t if flags & EXT_FLAG_AFFECTS_VALIDATION != 0 => {
                    return Err(CertError::UnknownCriticalExtension(t));
                }
                _ => {}
            }
            extensions.push(CertExtension {
                ext_type,
                flags,
                data: data.to_vec(),
            });
        }
        let signed_len = r.pos;
        let signature = r.array::<64>("SIGNATURE")?;
        if r.pos != bytes.len() {
            return Err(CertError::TrailingBytes {
                extra: bytes.len() - r.pos,
            });
        }
        Ok(UncheckedEd25519Cert(Ed25519CertBody {
            cert_type,
            expiration_hours,
            key_type,
            certified_key,
            extensions,
            signing_key,
            signature,
            signed_len,
            encoded: bytes.to_vec(),
        }))
    }

    /// Decode C tor's certificate file format: a 32-byte NUL-padded tag
    /// `== ed25519v1-cert: type4 ==` followed by the certificate.
    pub fn from_tor_cert_file(data: &[u8]) -> Result<Self, CertError> {
        if data.len() < 32 || !data.starts_with(CERT_FILE_TAG_PREFIX) {
            return Err(CertError::BadField {
                field: "certificate file tag",
                reason: "not an ed25519v1-cert file",
            });
        }
        Self::decode(&data[32..])
    }

    /// Check the signature and the expiry.
    ///
    /// The signature is checked with `signing_key` if given, else with the key in the
    /// signed-with-ed25519-key extension; if both are present they must agree. The cert is
    /// valid while `now <= EXPIRATION_DATE * 3600` (C tor's rule).
    pub fn verify(
        self,
        signing_key: Option<&Ed25519PublicKey>,
        now: Timestamp,
    ) -> Result<Ed25519Cert, CertError> {
        self.check_signature(signing_key)?;
        self.check_valid_at(now)?;
        Ok(Ed25519Cert(self.0))
    }

    /// Check only the signature; for callers that check the expiry themselves (e.g. with a
    /// tolerance). Use [`Self::verify`] otherwise.
    pub fn check_signature(&self, signing_key: Option<&Ed25519PublicKey>) -> Result<(), CertError> {
        let key = match (signing_key, &self.0.signing_key) {
            (Some(k), Some(ext)) => {
                if k.as_bytes() != &ext.0 {
                    return Err(CertError::WrongSigningKey);
                }
                *k
            }
            (Some(k), None) => *k,
            (None, Some(ext)) => ext.to_public_key()?,
            (None, None) => return Err(CertError::MissingSigningKey),
        };
        let sig = Ed25519Signature::from_bytes(&self.0.signature);
        key.verify(self.0.signed_part(), &sig)
            .map_err(|_| CertError::BadSignature {
                what: "ed25519 certificate",
            })
    }

    /// Check only the expiry.
    pub fn check_valid_at(&self, now: Timestamp) -> Result<(), CertError> {
        let exp = self.0.expiry();
        if now > exp {
            return Err(CertError::Expired {
                expired_at: exp,
                now,
            });
        }
        Ok(())
    }

    /// Require a particular certificate type.
    pub fn expect_type(self, t: CertType) -> Result<Self, CertError> {
        if self.0.cert_type != t {
            return Err(CertError::WrongCertType {
                expected: t.0,
                got: self.0.cert_type.0,
            });
        }
        Ok(self)
    }
}

impl Ed25519Cert {
    /// The certified key as an ed25519 public key (for chaining: e.g. the signing key of a
    /// type-4 cert verifies the type-5 and type-6 certs).
    pub fn certified_public_key(&self) -> Result<Ed25519PublicKey, CertError> {
        let id = self.certified_ed25519().ok_or(CertError::BadField {
            field: "CERT_KEY_TYPE",
            reason: "certified key is not an ed25519 key",
        })?;
        Ok(id.to_public_key()?)
    }
}

/// Creates ed25519 certificates (relays: types 4, 5, 6, 0A; onion services: 8, 9, 0B).
#[derive(Debug, Clone)]
pub struct Ed25519CertBuilder {
    cert_type: CertType,
    key_type: CertKeyType,
    certified_key: [u8; 32],
    expiration_hours: u32,
    include_signing_key: bool,
    extensions: Vec<CertExtension>,
}

impl Ed25519CertBuilder {
    /// A certificate of `cert_type` certifying `certified_key` (of `key_type`), expiring at
    /// `expiration_hours` hours after the epoch.
    pub fn new(
        cert_type: CertType,
        key_type: CertKeyType,
        certified_key: [u8; 32],
        expiration_hours: u32,
    ) -> Self {
        Ed25519CertBuilder {
            cert_type,
            key_type,
            certified_key,
            expiration_hours,
            include_signing_key: false,
            extensions: Vec::new(),
        }
    }

    /// The expiry rounded up to the next whole hour from a Unix time.
    pub fn hours_from_unix(t: Timestamp) -> u32 {
        u32::try_from(t.0.div_ceil(3600)).unwrap_or(u32::MAX)
    }

    /// Add the signed-with-ed25519-key extension naming the signer (required for type 4,
    /// cert-spec 2.2.1, and for onion-service type 8).
    pub fn include_signing_key(mut self, yes: bool) -> Self {
        self.include_signing_key = yes;
        self
    }

    /// Add another extension (after the signed-with-ed25519-key one).
    pub fn extension(mut self, ext: CertExtension) -> Self {
        self.extensions.push(ext);
        self
    }

    /// Encode and sign with `signer`.
    pub fn sign(&self, signer: &dyn Ed25519Signer) -> Result<Vec<u8>, CertError> {
        let n_ext = self.extensions.len() + usize::from(self.include_signing_key);
        let n_ext = u8::try_from(n_ext).map_err(|_| CertError::BadField {
            field: "N_EXTENSIONS",
            reason: "more than 255 extensions",
        })?;
        let mut out = Vec::with_capacity(104 + 36);
        out.push(1);
        out.push(self.cert_type.0);
        out.extend_from_slice(&self.expiration_hours.to_be_bytes());
        out.push(self.key_type.0);
        out.extend_from_slice(&self.certified_key);
        out.push(n_ext);
        if self.include_signing_key {
            out.extend_from_slice(&32u16.to_be_bytes());
            out.push(EXT_SIGNED_WITH_ED25519_KEY);
            out.push(0);
            out.extend_from_slice(signer.identity().as_bytes());
        }
        for e in &self.extensions {
            let len = u16::try_from(e.data.len()).map_err(|_| CertError::BadField {
                field: "ExtLength",
                reason: "extension longer than 65535 bytes",
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.push(e.ext_type);
            out.push(e.flags);
            out.extend_from_slice(&e.data);
        }
        let sig = signer.sign(&out);
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// Verify a server descriptor's `ntor-onion-key-crosscert` (dir-spec 2.1.1): a type-0x0A
/// certificate certifying the relay's ed25519 `identity`, signed by the ed25519 key
/// obtained from the ntor onion key and the descriptor's sign bit.
pub fn verify_ntor_onion_key_crosscert(
    cert: &[u8],
    ntor_key: &NtorOnionKey,
    sign_bit: u8,
    identity: &Ed25519Identity,
    now: Timestamp,
) -> Result<Ed25519Cert, CertError> {
    let c = UncheckedEd25519Cert::decode(cert)?.expect_type(CertType::NTOR_CC_IDENTITY)?;
    if c.key_type() != CertKeyType::ED25519 || c.certified_key() != identity.as_bytes() {
        return Err(CertError::BadField {
            field: "CERTIFIED_KEY",
            reason: "ntor cross-certificate does not certify this identity",
        });
    }
    if sign_bit > 1 {
        return Err(CertError::BadField {
            field: "ntor-onion-key-crosscert sign bit",
            reason: "must be 0 or 1",
        });
    }
    let key = ed25519_from_curve25519_public(ntor_key, sign_bit)?;
    c.verify(Some(&key), now)
}

/// Create an `ntor-onion-key-crosscert` for `identity`; returns the certificate and the
/// sign bit to publish next to it.
pub fn create_ntor_onion_key_crosscert(
    ntor_key: &NtorSecretKey,
    identity: &Ed25519Identity,
    expiration_hours: u32,
) -> Result<(Vec<u8>, u8), CertError> {
    let (kp, sign) = ntor_key.to_ed25519();
    let cert = Ed25519CertBuilder::new(
        CertType::NTOR_CC_IDENTITY,
        CertKeyType::ED25519,
        identity.0,
        expiration_hours,
    )
    .sign(&kp)?;
    Ok((cert, sign))
}
