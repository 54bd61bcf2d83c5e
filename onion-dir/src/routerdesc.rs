//! Server descriptors (dir-spec §2.1.1): a relay's self-signed description,
//! with its RSA and ed25519 signatures and the cross-certificates that prove
//! possession of its onion keys.
//!
//! [`parse_many`] / [`UnverifiedRouterDesc::parse`] give unverified documents;
//! [`UnverifiedRouterDesc::verify`] checks, at a wall-clock time:
//! * `router-signature`: RSA (PKCS#1 v1.5, bare SHA-1 digest) by `signing-key`
//!   over `router` … `router-signature` NL (dir-spec §1.3);
//! * `identity-ed25519`: a type-4 certificate of the ed25519 signing key, signed
//!   by the master key named in `master-key-ed25519` (cert-spec §2.1);
//! * `router-sig-ed25519`: ed25519 by that signing key over
//!   SHA-256("Tor router descriptor signature v1" || `router` … `router-sig-ed25519 `);
//! * `onion-key-crosscert`: RSA by the TAP onion key over
//!   SHA-1(identity key) || master key;
//! * `ntor-onion-key-crosscert`: a type-0x0A certificate of the master key,
//!   signed by the ed25519 key derived from the ntor key and the sign bit.
//!
//! The RSA and ed25519 certificate primitives are onion-crypto's.

use std::net::{Ipv4Addr, SocketAddrV6};

use sha1::{Digest, Sha1};
use sha2::Sha256;

use onion_crypto::cert::{CertType, Timestamp, UncheckedEd25519Cert};

use crate::encode::{base64_fixed, hex_fixed};
use crate::error::{ParseError, ParseProblem, VerifyError};
use crate::ids::{Ed25519Identity, Protocols, RsaIdentity};
use crate::microdesc::Family;
use crate::netdoc::{rule, split_signed_documents, Item, Multiplicity::*, ObjRule, Rule, Section};
use crate::policy::{ExitPolicy, PolicyRule, PolicySummary};
use crate::sig::RsaKey;

/// `bandwidth bandwidth-avg bandwidth-burst bandwidth-observed` (bytes per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// Average rate the relay is willing to sustain.
    pub average: u64,
    /// Burst rate.
    pub burst: u64,
    /// Observed capacity.
    pub observed: u64,
}

/// A server descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterDesc<'a> {
    /// The document text (`router` … end of `router-signature`).
    pub text: &'a str,
    /// SHA-1 of `router` … `router-signature` NL: the descriptor digest of ns
    /// consensus `r` lines.
    pub digest: [u8; 20],
    /// Nickname.
    pub nickname: &'a str,
    /// IPv4 address.
    pub address: Ipv4Addr,
    /// OR port.
    pub or_port: u16,
    /// Directory port (0 if none).
    pub dir_port: u16,
    /// The first IPv6 `or-address`.
    pub ipv6: Option<SocketAddrV6>,
    /// RSA identity: SHA-1 of `signing-key` (matched against `fingerprint`).
    pub fingerprint: RsaIdentity,
    /// `master-key-ed25519`.
    pub master_key: Option<Ed25519Identity>,
    /// `identity-ed25519` certificate (cert-spec §2.1, type 4), decoded by onion-crypto;
    /// its signature and expiry are checked by [`UnverifiedRouterDesc::verify`].
    pub identity_cert: Option<UncheckedEd25519Cert>,
    /// `platform`.
    pub platform: Option<&'a str>,
    /// `proto`.
    pub protocols: Protocols,
    /// `published`.
    pub published: Timestamp,
    /// `uptime` in seconds.
    pub uptime: Option<u64>,
    /// `bandwidth`.
    pub bandwidth: Bandwidth,
    /// `family`.
    pub family: Family<'a>,
    /// `onion-key` (TAP, RSA-1024), if present.
    pub onion_key: Option<RsaKey>,
    /// `signing-key`: the RSA identity key.
    pub signing_key: RsaKey,
    /// `ntor-onion-key`.
    pub ntor_onion_key: [u8; 32],
    /// Sign bit of `ntor-onion-key-crosscert`.
    pub ntor_sign_bit: u8,
    /// `accept`/`reject`/`accept6`/`reject6` rules in order.
    pub exit_policy: ExitPolicy,
    /// `ipv6-policy` summary (missing means `reject 1-65535`).
    pub ipv6_policy: PolicySummary,
    /// `contact`.
    pub contact: Option<&'a str>,
    /// `hidden-service-dir`.
    pub hidden_service_dir: bool,
    /// `tunnelled-dir-server`.
    pub tunnelled_dir_server: bool,
    /// `extra-info-digest` (SHA-1).
    pub extra_info_digest: Option<[u8; 20]>,
}

/// A parsed descriptor whose signatures have not been checked (typestate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedRouterDesc<'a> {
    desc: RouterDesc<'a>,
    router_signature: Vec<u8>,
    ed_signed_digest: Option<[u8; 32]>,
    ed_signature: Option<[u8; 64]>,
    onion_crosscert: Option<Vec<u8>>,
    ntor_crosscert: Option<UncheckedEd25519Cert>,
}

const RULES: &[Rule] = &[
    rule("router", Once, ObjRule::Forbidden),
    rule(
        "identity-ed25519",
        AtMostOnce,
        ObjRule::Required("ED25519 CERT"),
    ),
    rule("master-key-ed25519", AtMostOnce, ObjRule::Forbidden),
    rule("bandwidth", Once, ObjRule::Forbidden),
    rule("platform", AtMostOnce, ObjRule::Forbidden),
    rule("published", Once, ObjRule::Forbidden),
    rule("fingerprint", AtMostOnce, ObjRule::Forbidden),
    rule("hibernating", AtMostOnce, ObjRule::Forbidden),
    rule("uptime", AtMostOnce, ObjRule::Forbidden),
    rule("onion-key", AtMostOnce, ObjRule::Required("RSA PUBLIC KEY")),
    rule(
        "onion-key-crosscert",
        AtMostOnce,
        ObjRule::Required("CROSSCERT"),
    ),
    rule("ntor-onion-key", Once, ObjRule::Forbidden),
    rule(
        "ntor-onion-key-crosscert",
        AtMostOnce,
        ObjRule::Required("ED25519 CERT"),
    ),
    rule("signing-key", Once, ObjRule::Required("RSA PUBLIC KEY")),
    rule("accept", Any, ObjRule::Forbidden),
    rule("reject", Any, ObjRule::Forbidden),
    rule("accept6", Any, ObjRule::Forbidden),
    rule("reject6", Any, ObjRule::Forbidden),
    rule("ipv6-policy", AtMostOnce, ObjRule::Forbidden),
    rule("family", AtMostOnce, ObjRule::Forbidden),
    rule("caches-extra-info", AtMostOnce, ObjRule::Forbidden),
    rule("extra-info-digest", AtMostOnce, ObjRule::Forbidden),
    rule("hidden-service-dir", AtMostOnce, ObjRule::Forbidden),
    rule("contact", AtMostOnce, ObjRule::Forbidden),
    rule("proto", AtMostOnce, ObjRule::Forbidden),
    rule("or-address", Any, ObjRule::Forbidden),
    rule("tunnelled-dir-server", AtMostOnce, ObjRule::Forbidden),
    rule("router-sig-ed25519", AtMostOnce, ObjRule::Forbidden),
    rule("router-signature", Once, ObjRule::Required("SIGNATURE")),
];

/// Most descriptors in one batch.
pub const MAX_DESCRIPTORS: usize = 200_000;
/// Most policy rules in one descriptor.
const MAX_POLICY_RULES: usize = 4096;

/// Parse concatenated descriptors (`@` annotation lines allowed, as in tor's
/// `cached-descriptors` files).
pub fn parse_many(text: &str) -> Result<Vec<UnverifiedRouterDesc<'_>>, ParseError> {
    split_signed_documents(text, "router", RULES, MAX_DESCRIPTORS, one)
}

impl<'a> UnverifiedRouterDesc<'a> {
    /// Parse exactly one descriptor.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        exactly_one(parse_many(text)?, "router")
    }

    /// The parsed, unauthenticated contents.
    pub fn peek(&self) -> &RouterDesc<'a> {
        &self.desc
    }

    /// Verify every signature and cross-certificate; certificates must be
    /// unexpired at `now`.
    pub fn verify(self, now: Timestamp) -> Result<RouterDesc<'a>, VerifyError> {
        let d = &self.desc;
        d.signing_key
            .verify_digest(&d.digest, &self.router_signature)?;
        let master = d.master_key.map(|k| k.0);
        if let Some(cert) = &d.identity_cert {
            let master = master.ok_or(VerifyError::Inconsistent(
                "identity-ed25519 without master-key-ed25519",
            ))?;
            verify_ed25519(
                cert,
                &Ed25519Identity(master),
                now,
                self.ed_signed_digest,
                self.ed_signature,
            )?;
            // ntor-onion-key-crosscert: the ntor key (as ed25519) certifies the master key.
            let cc = self
                .ntor_crosscert
                .as_ref()
                .ok_or(VerifyError::Inconsistent(
                    "missing ntor-onion-key-crosscert",
                ))?;
            if cc.cert_type() != CertType::NTOR_CC_IDENTITY || *cc.certified_key() != master {
                return Err(VerifyError::Inconsistent(
                    "ntor-onion-key-crosscert does not certify the master key",
                ));
            }
            onion_crypto::cert::verify_ntor_onion_key_crosscert(
                cc.as_bytes(),
                &onion_crypto::keys::NtorOnionKey(d.ntor_onion_key),
                d.ntor_sign_bit,
                &Ed25519Identity(master),
                Timestamp(now.unix()),
            )
            .map_err(|_| VerifyError::BadSignature("ntor-onion-key-crosscert"))?;
        }
        if let (Some(ok), Some(cc)) = (&d.onion_key, &self.onion_crosscert) {
            let mut msg = [0u8; 52];
            msg[..20].copy_from_slice(&d.fingerprint.0);
            msg[20..].copy_from_slice(&master.unwrap_or([0; 32]));
            ok.verify_digest(&msg, cc)
                .map_err(|_| VerifyError::BadSignature("onion-key-crosscert"))?;
        } else if d.onion_key.is_some() {
            return Err(VerifyError::Inconsistent(
                "onion-key without onion-key-crosscert",
            ));
        }
        Ok(self.desc)
    }
}

fn u64_arg(it: &Item<'_>, n: usize, what: &'static str) -> Result<u64, ParseError> {
    let s = it.arg(n, what)?;
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(it.err(ParseProblem::BadArgument(what)));
    }
    s.parse()
        .map_err(|_| it.err(ParseProblem::BadArgument(what)))
}

fn u16_arg(it: &Item<'_>, n: usize, what: &'static str) -> Result<u16, ParseError> {
    u16::try_from(u64_arg(it, n, what)?).map_err(|_| it.err(ParseProblem::BadArgument(what)))
}

fn rsa(it: &Item<'_>) -> Result<RsaKey, ParseError> {
    RsaKey::from_der(&it.object_bytes("RSA PUBLIC KEY")?)
        .map_err(|_| it.err(ParseProblem::BadObject))
}

fn one<'a>(doc: &'a str, items: Vec<Item<'a>>) -> Result<UnverifiedRouterDesc<'a>, ParseError> {
    let (Some(first), Some(last)) = (items.first().copied(), items.last().copied()) else {
        return Err(ParseError::new(0, "", ParseProblem::Truncated));
    };
    let sec = Section::check(items, RULES, first.line, first.keyword)?;
    let r = first;
    let nickname = nickname(&r)?;
    let address = r
        .arg(1, "address")?
        .parse()
        .map_err(|_| r.err(ParseProblem::BadArgument("address")))?;
    let or_port = u16_arg(&r, 2, "ORPort")?;
    let _socks = u16_arg(&r, 3, "SOCKSPort")?;
    let dir_port = u16_arg(&r, 4, "DirPort")?;

    let signing_key = rsa(sec.required("signing-key")?)?;
    let fingerprint = signing_key.digest();
    if let Some(fp) = sec.get("fingerprint") {
        let hex: String = fp.args().collect();
        if RsaIdentity::from_hex(&hex).ok() != Some(fingerprint) {
            return Err(fp.err(ParseProblem::BadArgument(
                "fingerprint does not match signing-key",
            )));
        }
    }
    let identity_cert = identity_cert(&sec)?;
    let master_key = match sec.get("master-key-ed25519") {
        Some(it) => Some(
            Ed25519Identity::from_base64(it.arg(0, "key")?)
                .map_err(|_| it.err(ParseProblem::BadArgument("ed25519 key (base64)")))?,
        ),
        None => None,
    };
    let bw = sec.required("bandwidth")?;
    let bandwidth = Bandwidth {
        average: u64_arg(bw, 0, "bandwidth-avg")?,
        burst: u64_arg(bw, 1, "bandwidth-burst")?,
        observed: u64_arg(bw, 2, "bandwidth-observed")?,
    };
    let p = sec.required("published")?;
    let published = Timestamp::parse(p.arg(0, "date")?, p.arg(1, "time")?)
        .ok_or_else(|| p.err(ParseProblem::BadArgument("YYYY-MM-DD HH:MM:SS")))?;
    let protocols = match sec.get("proto") {
        Some(it) => Protocols::parse(it.args)
            .ok_or_else(|| it.err(ParseProblem::BadArgument("protocol list")))?,
        None => Protocols::default(),
    };
    let ntor = sec.required("ntor-onion-key")?;
    let ntor_onion_key = base64_fixed(ntor.arg(0, "key")?)
        .ok_or_else(|| ntor.err(ParseProblem::BadArgument("curve25519 key (base64)")))?;
    let (ntor_crosscert, ntor_sign_bit) = match sec.get("ntor-onion-key-crosscert") {
        Some(it) => {
            let bit = match it.arg(0, "Bit")? {
                "0" => 0,
                "1" => 1,
                _ => return Err(it.err(ParseProblem::BadArgument("Bit"))),
            };
            let c = UncheckedEd25519Cert::decode(&it.object_bytes("ED25519 CERT")?)
                .map_err(|_| it.err(ParseProblem::BadObject))?;
            (Some(c), bit)
        }
        None => (None, 0),
    };
    let onion_key = match sec.get("onion-key") {
        Some(it) => Some(rsa(it)?),
        None => None,
    };
    let onion_crosscert = match sec.get("onion-key-crosscert") {
        Some(it) => Some(it.object_bytes("CROSSCERT")?),
        None => None,
    };
    let mut rules = Vec::new();
    let mut ipv6 = None;
    for it in &sec.items {
        match it.keyword {
            "accept" | "reject" | "accept6" | "reject6" => {
                if rules.len() >= MAX_POLICY_RULES {
                    return Err(it.err(ParseProblem::TooManyItems {
                        limit: MAX_POLICY_RULES,
                    }));
                }
                rules.push(
                    PolicyRule::parse(it.keyword, it.arg(0, "exitpattern")?)
                        .ok_or_else(|| it.err(ParseProblem::BadArgument("exitpattern")))?,
                );
            }
            "or-address" if ipv6.is_none() => {
                let s = it.arg(0, "address:port")?;
                if s.starts_with('[') {
                    ipv6 = Some(
                        s.parse()
                            .map_err(|_| it.err(ParseProblem::BadArgument("[IPv6]:port")))?,
                    );
                }
            }
            _ => {}
        }
    }
    let ipv6_policy = match sec.get("ipv6-policy") {
        Some(it) => PolicySummary::from_item(it)?,
        None => PolicySummary::reject_all(),
    };
    let extra_info_digest = match sec.get("extra-info-digest") {
        Some(it) => Some(
            hex_fixed(it.arg(0, "digest")?)
                .ok_or_else(|| it.err(ParseProblem::BadArgument("digest (hex)")))?,
        ),
        None => None,
    };
    let uptime = match sec.get("uptime") {
        Some(it) => Some(u64_arg(it, 0, "uptime")?),
        None => None,
    };

    let signed = Signed::parse(doc, &r, &last, &sec)?;
    let desc = RouterDesc {
        text: signed.text,
        digest: signed.sha1,
        nickname,
        address,
        or_port,
        dir_port,
        ipv6,
        fingerprint,
        master_key,
        identity_cert,
        platform: sec.get("platform").map(|i| i.args),
        protocols,
        published,
        uptime,
        bandwidth,
        family: sec
            .get("family")
            .map_or(Family::default(), |i| Family(i.args)),
        onion_key,
        signing_key,
        ntor_onion_key,
        ntor_sign_bit,
        exit_policy: ExitPolicy { rules },
        ipv6_policy,
        contact: sec.get("contact").map(|i| i.args),
        hidden_service_dir: sec.get("hidden-service-dir").is_some(),
        tunnelled_dir_server: sec.get("tunnelled-dir-server").is_some(),
        extra_info_digest,
    };
    Ok(UnverifiedRouterDesc {
        desc,
        router_signature: signed.router_signature,
        ed_signed_digest: signed.ed_signed_digest,
        ed_signature: signed.ed_signature,
        onion_crosscert,
        ntor_crosscert,
    })
}

/// Exactly one document of `v`, whose first item is `keyword`.
pub(crate) fn exactly_one<T>(mut v: Vec<T>, keyword: &'static str) -> Result<T, ParseError> {
    match v.len() {
        1 => v
            .pop()
            .ok_or_else(|| ParseError::new(0, "", ParseProblem::Truncated)),
        0 => Err(ParseError::new(
            0,
            keyword,
            ParseProblem::MissingItem(keyword),
        )),
        _ => Err(ParseError::new(0, keyword, ParseProblem::DuplicateItem)),
    }
}

/// The nickname, first argument of a relay document's first item (`router`, `extra-info`;
/// dir-spec §2.1.1: 1 to 19 alphanumeric characters).
pub(crate) fn nickname<'a>(first: &Item<'a>) -> Result<&'a str, ParseError> {
    let nickname = first.arg(0, "nickname")?;
    if nickname.is_empty()
        || nickname.len() > 19
        || !nickname.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(first.err(ParseProblem::BadArgument("nickname")));
    }
    Ok(nickname)
}

/// A relay document's `identity-ed25519` certificate, decoded and not yet checked.
pub(crate) fn identity_cert(
    sec: &Section<'_, '_>,
) -> Result<Option<UncheckedEd25519Cert>, ParseError> {
    match sec.get("identity-ed25519") {
        Some(it) => Ok(Some(
            UncheckedEd25519Cert::decode(&it.object_bytes("ED25519 CERT")?)
                .map_err(|_| it.err(ParseProblem::BadObject))?,
        )),
        None => Ok(None),
    }
}

/// The signed parts of a relay document, server descriptor or extra-info (dir-spec §1.3,
/// §2.1.1, §2.1.2): what `router-signature` and `router-sig-ed25519` sign, and the
/// signatures.
pub(crate) struct Signed<'a> {
    /// The document, first item to the end of the `router-signature` object.
    pub(crate) text: &'a str,
    /// SHA-1 of the first item through the `router-signature` line and its newline: what
    /// the RSA identity key signs.
    pub(crate) sha1: [u8; 20],
    /// The `router-signature` object.
    pub(crate) router_signature: Vec<u8>,
    /// SHA-256 of "Tor router descriptor signature v1" and the document through
    /// `router-sig-ed25519 `: what the ed25519 signing key signs, when present.
    pub(crate) ed_signed_digest: Option<[u8; 32]>,
    /// The `router-sig-ed25519` signature, when present.
    pub(crate) ed_signature: Option<[u8; 64]>,
}

impl<'a> Signed<'a> {
    /// The signed parts of the document `doc` whose items run from `first` to `last` (its
    /// `router-signature`), with its section `sec`.
    pub(crate) fn parse(
        doc: &'a str,
        first: &Item<'a>,
        last: &Item<'a>,
        sec: &Section<'a, '_>,
    ) -> Result<Signed<'a>, ParseError> {
        let sig_line_end = doc
            .get(last.start..)
            .and_then(|s| s.find('\n'))
            .map(|n| last.start + n + 1)
            .ok_or_else(|| last.err(ParseProblem::Truncated))?;
        let signed = doc
            .get(first.start..sig_line_end)
            .ok_or_else(|| last.err(ParseProblem::Truncated))?;
        let text = doc
            .get(first.start..last.end)
            .ok_or_else(|| last.err(ParseProblem::Truncated))?;
        let (ed_signed_digest, ed_signature) = match sec.get("router-sig-ed25519") {
            Some(it) => {
                let sig: [u8; 64] = base64_fixed(it.arg(0, "signature")?).ok_or_else(|| {
                    it.err(ParseProblem::BadArgument("ed25519 signature (base64)"))
                })?;
                let end = it.start + "router-sig-ed25519 ".len();
                let part = doc
                    .get(first.start..end)
                    .ok_or_else(|| it.err(ParseProblem::Truncated))?;
                let mut h = Sha256::new();
                h.update(crate::relaydesc::ED_SIGNATURE_PREFIX);
                h.update(part.as_bytes());
                (Some(h.finalize().into()), Some(sig))
            }
            None => (None, None),
        };
        Ok(Signed {
            text,
            sha1: Sha1::digest(signed.as_bytes()).into(),
            router_signature: last.object_bytes("SIGNATURE")?,
            ed_signed_digest,
            ed_signature,
        })
    }
}

/// Check a relay document's ed25519 signatures (dir-spec §2.1.1): `identity-ed25519`
/// (`cert`) certifies the signing key, is signed by the relay's master key `master` and
/// valid at `now`; `router-sig-ed25519` (`ed_signed_digest`, `ed_signature`) is a strict
/// ed25519 signature (small-order keys refused) by that signing key.
pub(crate) fn verify_ed25519(
    cert: &UncheckedEd25519Cert,
    master: &Ed25519Identity,
    now: Timestamp,
    ed_signed_digest: Option<[u8; 32]>,
    ed_signature: Option<[u8; 64]>,
) -> Result<(), VerifyError> {
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
    let (Some(digest), Some(sig)) = (ed_signed_digest, ed_signature) else {
        return Err(VerifyError::Inconsistent(
            "identity-ed25519 without router-sig-ed25519",
        ));
    };
    Ed25519Identity(*cert.certified_key())
        .to_public_key()
        .map_err(|_| VerifyError::BadKey("ed25519"))?
        .verify_strict(&digest, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| VerifyError::BadSignature("ed25519"))?;
    Ok(())
}
