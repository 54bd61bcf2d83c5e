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

use sha2::{Digest, Sha256};

use onion_crypto::cert::{Timestamp, UncheckedEd25519Cert};

use crate::error::{ParseError, ParseProblem, VerifyError};
use crate::ids::{Ed25519Identity, RsaIdentity};
use crate::netdoc::{rule, split_signed_documents, Item, Multiplicity::*, ObjRule, Rule, Section};
use crate::routerdesc::{exactly_one, identity_cert, nickname, verify_ed25519, Signed};
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
        exactly_one(parse_many(text)?, "extra-info")
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
                verify_ed25519(cert, master, now, self.ed_signed_digest, self.ed_signature)?
            }
        }
        Ok(self.info)
    }
}

fn one<'a>(doc: &'a str, items: Vec<Item<'a>>) -> Result<UnverifiedExtraInfo<'a>, ParseError> {
    let (Some(first), Some(last)) = (items.first().copied(), items.last().copied()) else {
        return Err(ParseError::new(0, "", ParseProblem::Truncated));
    };
    let sec = Section::check(items, RULES, first.line, first.keyword)?;
    let e = first;
    let nickname = nickname(&e)?;
    let fingerprint = RsaIdentity::from_hex(e.arg(1, "fingerprint")?)
        .map_err(|_| e.err(ParseProblem::BadArgument("fingerprint (40 hex digits)")))?;
    let p = sec.required("published")?;
    let published = Timestamp::parse(p.arg(0, "date")?, p.arg(1, "time")?)
        .ok_or_else(|| p.err(ParseProblem::BadArgument("YYYY-MM-DD HH:MM:SS")))?;
    let identity_cert = identity_cert(&sec)?;

    let signed = Signed::parse(doc, &e, &last, &sec)?;
    let sha256: [u8; 32] = Sha256::digest(signed.text.as_bytes()).into();
    Ok(UnverifiedExtraInfo {
        info: ExtraInfo {
            text: signed.text,
            nickname,
            fingerprint,
            published,
            identity_cert,
            sha1: signed.sha1,
            sha256,
        },
        router_signature: signed.router_signature,
        ed_signed_digest: signed.ed_signed_digest,
        ed_signature: signed.ed_signature,
    })
}
