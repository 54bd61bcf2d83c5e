//! Directory authority key certificates (dir-spec §3.1).
//!
//! A certificate binds an authority's medium-term *signing key* (which signs
//! consensuses) to its long-term *identity key* (whose SHA-1 is the v3 identity
//! configured in clients). Verification checks the identity key's signature
//! over the certificate, the signing key's cross-certification of the identity
//! key digest, the fingerprint, and the validity period at a given time.

use sha1::{Digest, Sha1};

use crate::error::{ParseError, ParseProblem, VerifyError};
use crate::ids::RsaIdentity;
use crate::netdoc::{
    is_known, rule, Item, Limits, Multiplicity::*, ObjRule, Rule, Section, Tokenizer,
};
use crate::sig::RsaKey;
use crate::Timestamp;

/// A verified authority key certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCert {
    /// The authority's v3 identity (SHA-1 of the identity key DER).
    pub fingerprint: RsaIdentity,
    /// `dir-address`, as written.
    pub dir_address: Option<String>,
    /// `dir-key-published`.
    pub published: Timestamp,
    /// `dir-key-expires`.
    pub expires: Timestamp,
    /// The long-term identity key.
    pub identity_key: RsaKey,
    /// The signing key that signs consensuses.
    pub signing_key: RsaKey,
}

impl AuthCert {
    /// SHA-1 of the signing key DER (the `signing-key-digest` of signatures).
    pub fn signing_key_digest(&self) -> RsaIdentity {
        self.signing_key.digest()
    }

    /// Is `now` within `[published, expires]`?
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.published <= now && now <= self.expires
    }
}

/// A parsed certificate whose signatures have not been checked (typestate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedAuthCert<'a> {
    /// The certificate's text.
    pub text: &'a str,
    cert: AuthCert,
    certification_digest: [u8; 20],
    crosscert: Vec<u8>,
    certification: Vec<u8>,
}

impl<'a> UnverifiedAuthCert<'a> {
    /// The parsed, unauthenticated contents.
    pub fn peek(&self) -> &AuthCert {
        &self.cert
    }

    /// Verify the cross-certification and the identity key's signature, and
    /// that the certificate is valid at `now` (dir-spec §3.1).
    pub fn verify(self, now: Timestamp) -> Result<AuthCert, VerifyError> {
        self.verify_signatures()?;
        if now < self.cert.published {
            return Err(VerifyError::Expired(
                "authority certificate published in the future",
            ));
        }
        if now > self.cert.expires {
            return Err(VerifyError::Expired("authority certificate expired"));
        }
        Ok(self.cert)
    }

    /// Verify only the signatures, ignoring the validity period.
    pub fn verify_signatures(&self) -> Result<(), VerifyError> {
        // The cross-certification: the signing key signs the SHA-1 of the
        // identity key DER (PKCS#1 v1.5, no DigestInfo).
        let id_digest = self.cert.identity_key.digest();
        self.cert
            .signing_key
            .verify_digest(&id_digest.0, &self.crosscert)
            .map_err(|_| VerifyError::BadCrossCert)?;
        self.cert
            .identity_key
            .verify_digest(&self.certification_digest, &self.certification)
    }
}

const RULES: &[Rule] = &[
    rule("dir-key-certificate-version", Once, ObjRule::Forbidden),
    rule("dir-address", AtMostOnce, ObjRule::Forbidden),
    rule("fingerprint", Once, ObjRule::Forbidden),
    rule(
        "dir-identity-key",
        Once,
        ObjRule::Required("RSA PUBLIC KEY"),
    ),
    rule("dir-key-published", Once, ObjRule::Forbidden),
    rule("dir-key-expires", Once, ObjRule::Forbidden),
    rule("dir-signing-key", Once, ObjRule::Required("RSA PUBLIC KEY")),
    rule("dir-key-crosscert", Once, ObjRule::Optional),
    rule(
        "dir-key-certification",
        Once,
        ObjRule::Required("SIGNATURE"),
    ),
];

fn time(it: &Item<'_>) -> Result<Timestamp, ParseError> {
    Timestamp::parse(it.arg(0, "date")?, it.arg(1, "time")?)
        .ok_or_else(|| it.err(ParseProblem::BadArgument("YYYY-MM-DD HH:MM:SS")))
}

fn rsa_key(it: &Item<'_>) -> Result<RsaKey, ParseError> {
    let der = it.object_bytes("RSA PUBLIC KEY")?;
    RsaKey::from_der(&der).map_err(|_| it.err(ParseProblem::BadObject))
}

/// Most certificates accepted in one batch (9 authorities today).
const MAX_CERTS: usize = 256;

impl<'a> UnverifiedAuthCert<'a> {
    /// Parse one certificate.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        let mut all = parse_many(text)?;
        if all.len() != 1 {
            return Err(ParseError::new(
                0,
                "dir-key-certificate-version",
                ParseProblem::UnexpectedItem,
            ));
        }
        all.pop()
            .ok_or_else(|| ParseError::new(0, "", ParseProblem::Truncated))
    }
}

/// Parse a concatenation of certificates (as served by `/tor/keys/...` and
/// stored in tor's `cached-certs`).
pub fn parse_many(text: &str) -> Result<Vec<UnverifiedAuthCert<'_>>, ParseError> {
    let tok = Tokenizer::new(
        text,
        Limits {
            max_bytes: 4 << 20,
            max_items: 1 << 16,
        },
    )?;
    let mut out = Vec::new();
    let mut cur: Vec<Item<'_>> = Vec::new();
    for it in tok {
        let it = it?;
        if cur.is_empty() && it.keyword != "dir-key-certificate-version" {
            return Err(it.err(ParseProblem::MissingItem("dir-key-certificate-version")));
        }
        let last = it.keyword == "dir-key-certification";
        if is_known(RULES, it.keyword) {
            cur.push(it);
        }
        if last {
            if out.len() >= MAX_CERTS {
                return Err(it.err(ParseProblem::TooManyItems { limit: MAX_CERTS }));
            }
            out.push(one(text, std::mem::take(&mut cur))?);
        }
    }
    if let Some(it) = cur.first() {
        return Err(it.err(ParseProblem::MissingItem("dir-key-certification")));
    }
    if out.is_empty() {
        return Err(ParseError::new(0, "", ParseProblem::Truncated));
    }
    Ok(out)
}

fn one<'a>(doc: &'a str, items: Vec<Item<'a>>) -> Result<UnverifiedAuthCert<'a>, ParseError> {
    let (Some(first), Some(last)) = (items.first().copied(), items.last().copied()) else {
        return Err(ParseError::new(0, "", ParseProblem::Truncated));
    };
    let sec = Section::check(items, RULES, first.line, first.keyword)?;
    if first.arg(0, "version")? != "3" {
        return Err(first.err(ParseProblem::Unsupported(
            "key certificate version other than 3",
        )));
    }
    let fp = sec.required("fingerprint")?;
    let fingerprint = RsaIdentity::from_hex(fp.arg(0, "fingerprint")?)
        .map_err(|_| fp.err(ParseProblem::BadArgument("fingerprint (hex)")))?;
    let idk = sec.required("dir-identity-key")?;
    let identity_key = rsa_key(idk)?;
    if identity_key.bits() < 1024 {
        return Err(idk.err(ParseProblem::BadArgument(
            "identity key shorter than 1024 bits",
        )));
    }
    if identity_key.digest() != fingerprint {
        return Err(fp.err(ParseProblem::BadArgument(
            "fingerprint does not match dir-identity-key",
        )));
    }
    let signing_key = rsa_key(sec.required("dir-signing-key")?)?;
    let cc = sec.required("dir-key-crosscert")?;
    let crosscert = match cc.object {
        Some(o) if o.tag == "ID SIGNATURE" || o.tag == "SIGNATURE" => {
            o.decode().ok_or_else(|| cc.err(ParseProblem::BadObject))?
        }
        Some(_) => return Err(cc.err(ParseProblem::WrongObjectTag("ID SIGNATURE"))),
        None => return Err(cc.err(ParseProblem::MissingObject("ID SIGNATURE"))),
    };
    let certification = last.object_bytes("SIGNATURE")?;
    // dir-spec §1.3: from the initial item through the newline after the
    // signature item's keyword line.
    let kw_line_end = doc
        .get(last.start..)
        .and_then(|s| s.find('\n'))
        .map(|n| last.start + n + 1)
        .ok_or_else(|| last.err(ParseProblem::Truncated))?;
    let signed = doc
        .get(first.start..kw_line_end)
        .ok_or_else(|| last.err(ParseProblem::Truncated))?;
    let certification_digest: [u8; 20] = Sha1::digest(signed.as_bytes()).into();
    let text = doc.get(first.start..last.end).unwrap_or("");
    let dir_address = sec.get("dir-address").map(|i| i.args.to_owned());
    Ok(UnverifiedAuthCert {
        text,
        cert: AuthCert {
            fingerprint,
            dir_address,
            published: time(sec.required("dir-key-published")?)?,
            expires: time(sec.required("dir-key-expires")?)?,
            identity_key,
            signing_key,
        },
        certification_digest,
        crosscert,
        certification,
    })
}
