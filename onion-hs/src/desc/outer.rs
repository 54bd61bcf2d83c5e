//! The outer document, rend-spec-v3 §2.4 \[DESC-OUTER\], and decryption of its layers.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use onion_dir::Timestamp;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroize;

use crate::cert::{Ed25519Cert, CERT_TYPE_HS_DESC_SIGNING};
use crate::keys::{HsBlindedKey, HsIdKey};
use crate::ops::{aes256_ctr_xor, ct_eq};
use crate::time::TimePeriod;

use super::crypt::{self, Layer, COOKIE_LEN};
use super::inner::{layer_text, FirstLayer, SecondLayer};
use super::netdoc::tokenize;
use super::{DescError, HsDescriptor, MAX_DESCRIPTOR_LEN, SIG_PREFIX};

/// A parsed outer descriptor; nothing is verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuterDescriptor {
    /// `descriptor-lifetime` (minutes, 30..=720).
    pub lifetime_minutes: u16,
    /// `descriptor-signing-key-cert` (type 08, certifies `KP_hs_desc_sign`, signed by the
    /// blinded key).
    pub signing_cert: Ed25519Cert,
    /// `revision-counter`.
    pub revision_counter: u64,
    /// The `superencrypted` blob (`SALT | ENCRYPTED | MAC`).
    pub superencrypted: Vec<u8>,
    /// `signature`.
    pub signature: [u8; 64],
    /// The text covered by the signature (everything before the `signature` line).
    signed_text: Vec<u8>,
}

/// An outer descriptor whose signatures have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedOuter {
    outer: OuterDescriptor,
    blinded: HsBlindedKey,
}

impl OuterDescriptor {
    /// Parse the outer document (at most 50 000 bytes).
    pub fn parse(text: &str) -> Result<Self, DescError> {
        if text.len() > MAX_DESCRIPTOR_LEN {
            return Err(DescError::TooLarge(text.len()));
        }
        let items = tokenize(text)?;
        let first = items.first().ok_or(DescError::Missing("hs-descriptor"))?;
        if first.kw != "hs-descriptor" {
            return Err(DescError::BadVersion("does not start with hs-descriptor"));
        }
        if first.args.trim() != "3" {
            return Err(DescError::BadVersion("version is not 3"));
        }
        let mut lifetime = None;
        let mut cert = None;
        let mut rev = None;
        let mut sup = None;
        let mut sig = None;
        for (n, it) in items.iter().enumerate().skip(1) {
            let dup = |slot_full: bool, kw| {
                if slot_full {
                    Err(DescError::Duplicate(kw))
                } else {
                    Ok(())
                }
            };
            match it.kw {
                "hs-descriptor" => return Err(DescError::Duplicate("hs-descriptor")),
                "descriptor-lifetime" => {
                    dup(lifetime.is_some(), "descriptor-lifetime")?;
                    let v: u16 =
                        it.args.trim().parse().map_err(|_| {
                            DescError::syntax(it.line, it.kw_static(), "not a number")
                        })?;
                    if !(30..=720).contains(&v) {
                        return Err(DescError::OutOfRange("descriptor-lifetime"));
                    }
                    lifetime = Some(v);
                }
                "descriptor-signing-key-cert" => {
                    dup(cert.is_some(), "descriptor-signing-key-cert")?;
                    let c = Ed25519Cert::parse(it.object("ED25519 CERT")?).map_err(|err| {
                        DescError::Cert {
                            field: "descriptor-signing-key-cert",
                            err,
                        }
                    })?;
                    cert = Some(c);
                }
                "revision-counter" => {
                    dup(rev.is_some(), "revision-counter")?;
                    rev =
                        Some(it.args.trim().parse::<u64>().map_err(|_| {
                            DescError::syntax(it.line, it.kw_static(), "not a number")
                        })?);
                }
                "superencrypted" => {
                    dup(sup.is_some(), "superencrypted")?;
                    sup = Some(it.object("MESSAGE")?.to_vec());
                }
                "signature" => {
                    if n + 1 != items.len() {
                        return Err(DescError::syntax(it.line, "signature", "not the last item"));
                    }
                    let s = crate::util::b64_decode_array::<64>(it.args.trim()).ok_or(
                        DescError::syntax(it.line, "signature", "bad base64 signature"),
                    )?;
                    sig = Some((s, it.start));
                }
                // Unknown keywords are ignored (dir-spec §1.2).
                _ => {}
            }
        }
        let (signature, sig_start) = sig.ok_or(DescError::Missing("signature"))?;
        Ok(OuterDescriptor {
            lifetime_minutes: lifetime.ok_or(DescError::Missing("descriptor-lifetime"))?,
            signing_cert: cert.ok_or(DescError::Missing("descriptor-signing-key-cert"))?,
            revision_counter: rev.ok_or(DescError::Missing("revision-counter"))?,
            superencrypted: sup.ok_or(DescError::Missing("superencrypted"))?,
            signature,
            signed_text: text.as_bytes().get(..sig_start).unwrap_or(&[]).to_vec(),
        })
    }

    /// The blinded key named in the signing certificate (not yet verified).
    pub fn claimed_blinded_key(&self) -> Result<HsBlindedKey, DescError> {
        let k = self.signing_cert.signing_key.ok_or(DescError::Cert {
            field: "descriptor-signing-key-cert",
            err: crate::cert::CertError::MissingSigningKey,
        })?;
        HsBlindedKey::from_bytes(&k).map_err(|err| DescError::Key {
            field: "blinded key",
            err,
        })
    }

    /// Check the signing-key certificate (type 08, signed by the blinded key, unexpired at
    /// `now`) and the descriptor signature. If `expected` is given, the blinded key must
    /// equal it (a client passes the key it derived from the address and period).
    pub fn verify(
        self,
        expected: Option<&HsBlindedKey>,
        now: Timestamp,
    ) -> Result<VerifiedOuter, DescError> {
        let blinded = self.claimed_blinded_key()?;
        if let Some(e) = expected {
            if !ct_eq(e.as_bytes(), blinded.as_bytes()) {
                return Err(DescError::WrongBlindedKey);
            }
        }
        self.signing_cert
            .verify(CERT_TYPE_HS_DESC_SIGNING, Some(blinded.as_bytes()), now)
            .map_err(|err| DescError::Cert {
                field: "descriptor-signing-key-cert",
                err,
            })?;
        let vk = VerifyingKey::from_bytes(&self.signing_cert.certified_key).map_err(|_| {
            DescError::Key {
                field: "descriptor signing key",
                err: crate::keys::HsKeyError::NotOnCurve,
            }
        })?;
        let mut msg = Vec::with_capacity(SIG_PREFIX.len() + self.signed_text.len());
        msg.extend_from_slice(SIG_PREFIX);
        msg.extend_from_slice(&self.signed_text);
        vk.verify(&msg, &Signature::from_bytes(&self.signature))
            .map_err(|_| DescError::BadSignature)?;
        Ok(VerifiedOuter {
            outer: self,
            blinded,
        })
    }
}

impl VerifiedOuter {
    /// The verified blinded key.
    pub fn blinded_key(&self) -> &HsBlindedKey {
        &self.blinded
    }

    /// The outer fields.
    pub fn outer(&self) -> &OuterDescriptor {
        &self.outer
    }

    /// Decrypt both layers with the service identity `id` (giving the subcredential) and, for
    /// services with client authorization, the client's x25519 secret key. Introduction point
    /// certificates are checked against the descriptor signing key at `now`.
    pub fn decrypt(
        &self,
        id: &HsIdKey,
        client_key: Option<&StaticSecret>,
        now: Timestamp,
    ) -> Result<HsDescriptor, DescError> {
        let subcred = self.blinded.subcredential(&id.credential());
        let o = &self.outer;
        let pt1 = crypt::decrypt(
            Layer::Outer,
            &o.superencrypted,
            &self.blinded,
            None,
            &subcred,
            o.revision_counter,
        )?;
        let first = FirstLayer::parse(layer_text(&pt1, "first layer")?)?;

        let mut cookie: Option<[u8; COOKIE_LEN]> = None;
        if let Some(sk) = client_key {
            let eph = XPublic::from(first.ephemeral_key);
            let mut seed = sk.diffie_hellman(&eph).to_bytes();
            let (id8, mut ckey) = crypt::client_keys(&subcred, &seed);
            seed.zeroize();
            // Look at every line in constant time per line; take the first match.
            for c in &first.auth_clients {
                if ct_eq(&c.client_id, &id8) && cookie.is_none() {
                    let mut ck = c.encrypted_cookie;
                    aes256_ctr_xor(&ckey, &c.iv, &mut ck);
                    cookie = Some(ck);
                }
            }
            ckey.zeroize();
        }
        let pt2 = crypt::decrypt(
            Layer::Inner,
            &first.encrypted,
            &self.blinded,
            cookie.as_ref(),
            &subcred,
            o.revision_counter,
        );
        if let Some(c) = cookie.as_mut() {
            c.zeroize();
        }
        let pt2 = match (pt2, client_key.is_some(), cookie.is_some()) {
            (Ok(p), _, _) => p,
            (Err(DescError::BadMac { .. }), false, _) => return Err(DescError::ClientAuthRequired),
            (Err(DescError::BadMac { .. }), true, false) => {
                return Err(DescError::ClientNotAuthorized)
            }
            (Err(e), _, _) => return Err(e),
        };
        let second = SecondLayer::parse(layer_text(&pt2, "second layer")?)?;
        let signing_key = o.signing_cert.certified_key;
        for ip in &second.intro_points {
            ip.verify(&signing_key, now)?;
        }
        Ok(HsDescriptor {
            lifetime_minutes: o.lifetime_minutes,
            revision_counter: o.revision_counter,
            blinded_key: *self.blinded.as_bytes(),
            signing_key,
            signing_cert_expiry_hours: o.signing_cert.expiry_hours,
            first_layer: first,
            second_layer: second,
        })
    }
}

/// A client's whole path: parse, check that the descriptor is the one of `id` for `period`
/// (when given; otherwise the blinded key in the certificate is trusted), verify signatures at
/// `now`, and decrypt.
pub fn decode(
    text: &str,
    id: &HsIdKey,
    period: Option<TimePeriod>,
    client_key: Option<&StaticSecret>,
    now: Timestamp,
) -> Result<HsDescriptor, DescError> {
    let outer = OuterDescriptor::parse(text)?;
    let expected = period.map(|p| id.blind(p));
    outer
        .verify(expected.as_ref(), now)?
        .decrypt(id, client_key, now)
}
