//! Extra-info documents (dir-spec §2.1.2): what a relay publishes beside its server
//! descriptor (statistics, mostly), signed like it.
//!
//! [`parse_many`] / [`UnverifiedExtraInfo::parse`] give unverified documents;
//! [`UnverifiedExtraInfo::verify`] checks them against the relay's server descriptor, whose
//! keys an extra-info document does not carry:
//! * `router-signature`: RSA (PKCS#1 v1.5, bare SHA-1 digest) by the descriptor's
//!   `signing-key` over `extra-info` … `router-signature` NL (§1.3), and the fingerprint
//!   of the `extra-info` line is that key's;
//! * `identity-ed25519`: the type-4 certificate of the signing key, signed by the master
//!   key, which must be the descriptor's (`master-key-ed25519`);
//! * `router-sig-ed25519`: ed25519 by that signing key over SHA-256 of
//!   `"Tor router descriptor signature v1"` and `extra-info` … `router-sig-ed25519 `.
//!
//! Statistics items are skipped (kept nowhere): onion uses none of them.
//! [`ExtraInfo::sha1`] and [`ExtraInfo::sha256`] are the two digests a descriptor's
//! `extra-info-digest` names.

use sha1::{Digest, Sha1};
use sha2::Sha256;

use onion_crypto::cert::{CertType, Timestamp, UncheckedEd25519Cert};

use crate::encode::base64_fixed;
use crate::error::{ErrorKind, ParseError, VerifyError};
use crate::ids::{Ed25519Identity, RsaIdentity};
use crate::netdoc::{rule, split_signed_documents, Item, Multiplicity::*, ObjRule, Rule, Section};
use crate::sig::RsaKey;

/// An extra-info document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraInfo<'a> {
    /// The document text (`extra-info` … end of the `router-signature` object).
    pub text: &'a str,
    /// Nickname.
    pub nickname: &'a str,
    /// The relay's RSA identity, from the `extra-info` line.
    pub fingerprint: RsaIdentity,
    /// `published`.
    pub published: Timestamp,
    /// `identity-ed25519`, when present.
    pub identity_cert: Option<UncheckedEd25519Cert>,
    /// SHA-1 of `extra-info` … `router-signature` NL (the first digest of
    /// `extra-info-digest`).
    pub sha1: [u8; 20],
    /// SHA-256 of the whole document, signature included (the second digest).
    pub sha256: [u8; 32],
}

/// A parsed extra-info document whose signatures have not been checked (typestate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedExtraInfo<'a> {
    info: ExtraInfo<'a>,
    router_signature: Vec<u8>,
    ed_signed_digest: Option<[u8; 32]>,
    ed_signature: Option<[u8; 64]>,
}

const RULES: &[Rule] = &[
    rule("extra-info", Once, ObjRule::Forbidden),
    rule(
        "identity-ed25519",
        AtMostOnce,
        ObjRule::Required("ED25519 CERT"),
    ),
    rule("published", Once, ObjRule::Forbidden),
    rule("router-sig-ed25519", AtMostOnce, ObjRule::Forbidden),
    rule("router-signature", Once, ObjRule::Required("SIGNATURE")),
];

/// Most documents in one batch.
pub const MAX_DOCUMENTS: usize = 200_000;

/// Parse concatenated extra-info documents (`@` annotation lines allowed, as in C tor's
/// `cached-extrainfo` files).
pub fn parse_many(text: &str) -> Result<Vec<UnverifiedExtraInfo<'_>>, ParseError> {
    split_signed_documents(text, "extra-info", RULES, MAX_DOCUMENTS, one)
}

impl<'a> UnverifiedExtraInfo<'a> {
    /// Parse exactly one document.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        let mut v = parse_many(text)?;
        match v.len() {
            1 => v
                .pop()
                .ok_or_else(|| ParseError::new(0, "", ErrorKind::Truncated)),
            0 => Err(ParseError::new(
                0,
                "extra-info",
                ErrorKind::MissingItem("extra-info"),
            )),
            _ => Err(ParseError::new(0, "extra-info", ErrorKind::DuplicateItem)),
        }
    }

    /// The parsed, unauthenticated contents.
    pub fn peek(&self) -> &ExtraInfo<'a> {
        &self.info
    }

    /// Verify the signatures with the relay's RSA identity key (`signing_key`, from its
    /// server descriptor) and, when the relay has one, its ed25519 master identity
    /// (`master`); the ed25519 certificate must be unexpired at `now`. A document without
    /// ed25519 signatures is refused when `master` is given.
    pub fn verify(
        self,
        signing_key: &RsaKey,
        master: Option<&Ed25519Identity>,
        now: Timestamp,
    ) -> Result<ExtraInfo<'a>, VerifyError> {
        let d = &self.info;
        if signing_key.digest() != d.fingerprint {
            return Err(VerifyError::Inconsistent(
                "extra-info fingerprint is not the identity key's",
            ));
        }
        signing_key.verify_digest(&d.sha1, &self.router_signature)?;
        match (&d.identity_cert, master) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(VerifyError::Inconsistent(
                    "extra-info without identity-ed25519 for an ed25519 relay",
                ))
            }
            (Some(_), None) => {
                return Err(VerifyError::Inconsistent(
                    "identity-ed25519 without the relay's master key to check it",
                ))
            }
            (Some(cert), Some(master)) => {
                if cert.cert_type() != CertType::IDENTITY_V_SIGNING {
                    return Err(VerifyError::Inconsistent(
                        "identity-ed25519 has the wrong certificate type",
                    ));
                }
                if cert.signing_key() != Some(master) {
                    return Err(VerifyError::Inconsistent(
                        "identity-ed25519 is not signed by the relay's master key",
                    ));
                }
                let master_pk = master
                    .to_public_key()
                    .map_err(|_| VerifyError::BadKey("ed25519"))?;
                cert.check_signature(Some(&master_pk))
                    .map_err(|_| VerifyError::BadSignature("ed25519 certificate"))?;
                cert.check_valid_at(Timestamp(now.unix()))
                    .map_err(|_| VerifyError::Expired("ed25519 certificate"))?;
                let (Some(digest), Some(sig)) = (self.ed_signed_digest, self.ed_signature) else {
                    return Err(VerifyError::Inconsistent(
                        "identity-ed25519 without router-sig-ed25519",
                    ));
                };
                Ed25519Identity(*cert.certified_key())
                    .to_public_key()
                    .map_err(|_| VerifyError::BadKey("ed25519"))?
                    .verify_strict(&digest, &ed25519_dalek::Signature::from_bytes(&sig))
                    .map_err(|_| VerifyError::BadSignature("ed25519"))?;
            }
        }
        Ok(self.info)
    }
}

fn one<'a>(doc: &'a str, items: Vec<Item<'a>>) -> Result<UnverifiedExtraInfo<'a>, ParseError> {
    let (Some(first), Some(last)) = (items.first().copied(), items.last().copied()) else {
        return Err(ParseError::new(0, "", ErrorKind::Truncated));
    };
    let sec = Section::check(items, RULES, first.line, first.keyword)?;
    let e = first;
    let nickname = e.arg(0, "nickname")?;
    if nickname.is_empty()
        || nickname.len() > 19
        || !nickname.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(e.err(ErrorKind::BadArgument("nickname")));
    }
    let fingerprint = RsaIdentity::from_hex(e.arg(1, "fingerprint")?)
        .map_err(|_| e.err(ErrorKind::BadArgument("fingerprint (40 hex digits)")))?;
    let p = sec.required("published")?;
    let published = Timestamp::parse(p.arg(0, "date")?, p.arg(1, "time")?)
        .ok_or_else(|| p.err(ErrorKind::BadArgument("YYYY-MM-DD HH:MM:SS")))?;
    let identity_cert = match sec.get("identity-ed25519") {
        Some(it) => Some(
            UncheckedEd25519Cert::decode(&it.object_bytes("ED25519 CERT")?)
                .map_err(|_| it.err(ErrorKind::BadObject))?,
        ),
        None => None,
    };

    // Signed parts (dir-spec §1.3, §2.1.1).
    let sig_line_end = doc
        .get(last.start..)
        .and_then(|s| s.find('\n'))
        .map(|n| last.start + n + 1)
        .ok_or_else(|| last.err(ErrorKind::Truncated))?;
    let signed = doc
        .get(e.start..sig_line_end)
        .ok_or_else(|| last.err(ErrorKind::Truncated))?;
    let sha1: [u8; 20] = Sha1::digest(signed.as_bytes()).into();
    let whole = doc
        .get(e.start..last.end)
        .ok_or_else(|| last.err(ErrorKind::Truncated))?;
    let sha256: [u8; 32] = Sha256::digest(whole.as_bytes()).into();
    let router_signature = last.object_bytes("SIGNATURE")?;
    let (ed_signed_digest, ed_signature) = match sec.get("router-sig-ed25519") {
        Some(it) => {
            let sig: [u8; 64] = base64_fixed(it.arg(0, "signature")?)
                .ok_or_else(|| it.err(ErrorKind::BadArgument("ed25519 signature (base64)")))?;
            let end = it.start + "router-sig-ed25519 ".len();
            let part = doc
                .get(e.start..end)
                .ok_or_else(|| it.err(ErrorKind::Truncated))?;
            let mut h = Sha256::new();
            h.update(crate::relaydesc::ED_SIGNATURE_PREFIX);
            h.update(part.as_bytes());
            (Some(h.finalize().into()), Some(sig))
        }
        None => (None, None),
    };
    Ok(UnverifiedExtraInfo {
        info: ExtraInfo {
            text: whole,
            nickname,
            fingerprint,
            published,
            identity_cert,
            sha1,
            sha256,
        },
        router_signature,
        ed_signed_digest,
        ed_signature,
    })
}
