//! The two decrypted layers of a descriptor: rend-spec-v3 §2.5.1.2 (first layer plaintext:
//! client authorization) and §2.5.2.2 (second layer plaintext: introduction points).

use onion_dir::Timestamp;

use crate::cert::{Ed25519Cert, CERT_TYPE_HS_INTRO_AUTH, CERT_TYPE_HS_NTOR_ENC};
use crate::linkspec::{self, RawLinkSpec};
use crate::util::{b64_decode, b64_decode_array, b64_nopad, b64_pad};

use super::netdoc::{tokenize, write_object, Item};
use super::{DescError, MAX_INTRO_POINTS};

const CERT_TAG: &str = "ED25519 CERT";
const MSG_TAG: &str = "MESSAGE";

/// One `auth-client` line: a descriptor cookie encrypted to one client (or fake data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthClient {
    /// `client-id`: first 8 bytes of the client's KDF output.
    pub client_id: [u8; 8],
    /// `iv` of the cookie encryption.
    pub iv: [u8; 16],
    /// `encrypted-cookie`.
    pub encrypted_cookie: [u8; 16],
}

/// The first layer plaintext (rend-spec-v3 §2.5.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstLayer {
    /// `desc-auth-type` (always `x25519` today).
    pub auth_type: String,
    /// `desc-auth-ephemeral-key`: the service's ephemeral x25519 key `KP_hss_desc_enc`.
    pub ephemeral_key: [u8; 32],
    /// The `auth-client` lines (real and fake).
    pub auth_clients: Vec<AuthClient>,
    /// The `encrypted` blob: the second layer ciphertext.
    pub encrypted: Vec<u8>,
}

fn once<'a, 'b>(
    items: &'b [Item<'a>],
    kw: &'static str,
) -> Result<Option<&'b Item<'a>>, DescError> {
    let mut it = items.iter().filter(|i| i.kw == kw);
    let first = it.next();
    if it.next().is_some() {
        return Err(DescError::Duplicate(kw));
    }
    Ok(first)
}

fn exactly_once<'a, 'b>(
    items: &'b [Item<'a>],
    kw: &'static str,
) -> Result<&'b Item<'a>, DescError> {
    once(items, kw)?.ok_or(DescError::Missing(kw))
}

fn key32(item: &Item<'_>, s: Option<&str>) -> Result<[u8; 32], DescError> {
    s.and_then(b64_decode_array::<32>).ok_or(DescError::syntax(
        item.line,
        item.kw_static(),
        "bad 32-byte base64 key",
    ))
}

/// Strip the NUL padding C tor adds before encryption, and require text.
pub(crate) fn layer_text<'a>(pt: &'a [u8], what: &'static str) -> Result<&'a str, DescError> {
    let end = pt.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    core::str::from_utf8(&pt[..end]).map_err(|_| DescError::NotText(what))
}

impl FirstLayer {
    /// Parse the decrypted first layer (NUL padding already stripped).
    pub fn parse(text: &str) -> Result<Self, DescError> {
        let items = tokenize(text)?;
        let t = exactly_once(&items, "desc-auth-type")?;
        let auth_type = t
            .arg_list()
            .next()
            .ok_or(DescError::syntax(t.line, t.kw_static(), "missing type"))?
            .to_string();
        let e = exactly_once(&items, "desc-auth-ephemeral-key")?;
        let ephemeral_key = key32(e, e.arg_list().next())?;
        let mut auth_clients = Vec::new();
        for i in items.iter().filter(|i| i.kw == "auth-client") {
            let mut a = i.arg_list();
            let bad = || DescError::syntax(i.line, "auth-client", "bad field");
            let client_id = a.next().and_then(b64_decode_array::<8>).ok_or_else(bad)?;
            let iv = a.next().and_then(b64_decode_array::<16>).ok_or_else(bad)?;
            let encrypted_cookie = a.next().and_then(b64_decode_array::<16>).ok_or_else(bad)?;
            auth_clients.push(AuthClient {
                client_id,
                iv,
                encrypted_cookie,
            });
        }
        if auth_clients.is_empty() {
            return Err(DescError::Missing("auth-client"));
        }
        let enc = exactly_once(&items, "encrypted")?;
        let encrypted = enc.object(MSG_TAG)?.to_vec();
        Ok(FirstLayer {
            auth_type,
            ephemeral_key,
            auth_clients,
            encrypted,
        })
    }

    /// Encode as C tor does (no final newline).
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(
            200 + 80 * self.auth_clients.len() + self.encrypted.len() * 4 / 3,
        );
        s.push_str("desc-auth-type ");
        s.push_str(&self.auth_type);
        s.push_str("\ndesc-auth-ephemeral-key ");
        s.push_str(&b64_pad(&self.ephemeral_key));
        s.push('\n');
        for c in &self.auth_clients {
            s.push_str("auth-client ");
            s.push_str(&b64_nopad(&c.client_id));
            s.push(' ');
            s.push_str(&b64_nopad(&c.iv));
            s.push(' ');
            s.push_str(&b64_nopad(&c.encrypted_cookie));
            s.push('\n');
        }
        s.push_str("encrypted\n");
        write_object(&mut s, MSG_TAG, &self.encrypted);
        s
    }
}

/// One introduction point of the second layer (rend-spec-v3 §2.5.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroPointDesc {
    /// Link specifiers, verbatim and in order.
    pub link_specifiers: Vec<RawLinkSpec>,
    /// `onion-key ntor`: the intro point relay's ntor onion key.
    pub onion_key_ntor: [u8; 32],
    /// `auth-key` certificate (type 09); its certified key is `KP_hs_ipt_sid`.
    pub auth_key_cert: Ed25519Cert,
    /// `enc-key ntor`: `KP_hss_ntor`, the service's encryption key for INTRODUCE2.
    pub enc_key_ntor: [u8; 32],
    /// `enc-key-cert` (type 0B) certifying the ed25519 form of `enc_key_ntor`.
    pub enc_key_cert: Ed25519Cert,
}

impl IntroPointDesc {
    /// `KP_hs_ipt_sid`, the introduction point authentication key.
    pub fn auth_key(&self) -> &[u8; 32] {
        &self.auth_key_cert.certified_key
    }

    /// Check both certificates against the descriptor signing key at `now`, and that the
    /// enc-key certificate certifies this `enc-key` (as ed25519, sign bit 0, prop228 A).
    pub fn verify(&self, signing_key: &[u8; 32], now: Timestamp) -> Result<(), DescError> {
        self.auth_key_cert
            .verify(CERT_TYPE_HS_INTRO_AUTH, Some(signing_key), now)
            .map_err(|err| DescError::Cert {
                field: "auth-key",
                err,
            })?;
        self.enc_key_cert
            .verify(CERT_TYPE_HS_NTOR_ENC, Some(signing_key), now)
            .map_err(|err| DescError::Cert {
                field: "enc-key-cert",
                err,
            })?;
        match crate::ntor::x25519_to_ed25519(&self.enc_key_ntor) {
            Some(ed) if ed == self.enc_key_cert.certified_key => Ok(()),
            _ => Err(DescError::Cert {
                field: "enc-key-cert",
                err: crate::cert::CertError::BadField {
                    field: "CERTIFIED_KEY",
                    reason: "not the ed25519 form of enc-key",
                },
            }),
        }
    }
}

/// The second layer plaintext (rend-spec-v3 §2.5.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondLayer {
    /// `create2-formats`.
    pub create2_formats: Vec<u16>,
    /// `intro-auth-required` types, if the line is present.
    pub intro_auth_required: Option<Vec<String>>,
    /// `single-onion-service` present.
    pub single_onion_service: bool,
    /// Top-level lines this crate does not interpret (e.g. `flow-control`, `pow-params`),
    /// kept verbatim in order.
    pub other_lines: Vec<String>,
    /// Introduction points, at most 20.
    pub intro_points: Vec<IntroPointDesc>,
}

impl SecondLayer {
    /// Parse the decrypted second layer (padding stripped).
    pub fn parse(text: &str) -> Result<Self, DescError> {
        let items = tokenize(text)?;
        let first_ip = items
            .iter()
            .position(|i| i.kw == "introduction-point")
            .unwrap_or(items.len());
        let (head, tail) = items.split_at(first_ip);
        let cf = exactly_once(head, "create2-formats")?;
        let create2_formats = cf
            .arg_list()
            .map(|a| a.parse::<u16>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| DescError::syntax(cf.line, cf.kw_static(), "bad handshake type"))?;
        let intro_auth_required =
            once(head, "intro-auth-required")?.map(|i| i.arg_list().map(str::to_string).collect());
        let single_onion_service = once(head, "single-onion-service")?.is_some();
        let other_lines = head
            .iter()
            .filter(|i| {
                !matches!(
                    i.kw,
                    "create2-formats" | "intro-auth-required" | "single-onion-service"
                )
            })
            .map(|i| i.text.to_string())
            .collect();
        let mut intro_points = Vec::new();
        let mut rest = tail;
        while let Some((first, after)) = rest.split_first() {
            let end = after
                .iter()
                .position(|i| i.kw == "introduction-point")
                .unwrap_or(after.len());
            let (section, next) = after.split_at(end);
            if intro_points.len() == MAX_INTRO_POINTS {
                return Err(DescError::TooManyIntroPoints(MAX_INTRO_POINTS + 1));
            }
            intro_points.push(parse_intro_point(intro_points.len(), first, section)?);
            rest = next;
        }
        Ok(SecondLayer {
            create2_formats,
            intro_auth_required,
            single_onion_service,
            other_lines,
            intro_points,
        })
    }

    /// Encode as C tor does.
    pub fn encode(&self) -> Result<String, DescError> {
        if self.intro_points.len() > MAX_INTRO_POINTS {
            return Err(DescError::TooManyIntroPoints(self.intro_points.len()));
        }
        let mut s = String::with_capacity(100 + 800 * self.intro_points.len());
        s.push_str("create2-formats");
        for f in &self.create2_formats {
            s.push(' ');
            s.push_str(&f.to_string());
        }
        s.push('\n');
        if let Some(types) = &self.intro_auth_required {
            s.push_str("intro-auth-required");
            for t in types {
                s.push(' ');
                s.push_str(t);
            }
            s.push('\n');
        }
        if self.single_onion_service {
            s.push_str("single-onion-service\n");
        }
        for l in &self.other_lines {
            if l.contains('\n') || !l.split(' ').next().is_some_and(|k| !k.is_empty()) {
                return Err(DescError::Build("other line is not a single keyword line"));
            }
            s.push_str(l);
            s.push('\n');
        }
        for ip in &self.intro_points {
            let mut ls = Vec::new();
            linkspec::encode_list(&ip.link_specifiers, &mut ls)
                .map_err(|_| DescError::Build("link specifiers"))?;
            s.push_str("introduction-point ");
            s.push_str(&b64_pad(&ls));
            s.push_str("\nonion-key ntor ");
            s.push_str(&b64_pad(&ip.onion_key_ntor));
            s.push_str("\nauth-key\n");
            write_object(&mut s, CERT_TAG, &ip.auth_key_cert.encode());
            s.push_str("\nenc-key ntor ");
            s.push_str(&b64_pad(&ip.enc_key_ntor));
            s.push_str("\nenc-key-cert\n");
            write_object(&mut s, CERT_TAG, &ip.enc_key_cert.encode());
            s.push('\n');
        }
        Ok(s)
    }
}

fn parse_intro_point(
    index: usize,
    head: &Item<'_>,
    section: &[Item<'_>],
) -> Result<IntroPointDesc, DescError> {
    let ls_bytes = head
        .arg_list()
        .next()
        .and_then(b64_decode)
        .ok_or(DescError::syntax(head.line, head.kw_static(), "bad base64"))?;
    let link_specifiers =
        linkspec::parse_list(&ls_bytes).map_err(|err| DescError::RawLinkSpec { index, err })?;
    let ntor_of = |kw: &'static str| -> Result<[u8; 32], DescError> {
        let mut found = None;
        for i in section.iter().filter(|i| i.kw == kw) {
            let mut a = i.arg_list();
            if a.next() == Some("ntor") {
                if found.is_some() {
                    return Err(DescError::Duplicate(kw));
                }
                found = Some(key32(i, a.next())?);
            }
        }
        found.ok_or(DescError::Missing(kw))
    };
    let onion_key_ntor = ntor_of("onion-key")?;
    let enc_key_ntor = ntor_of("enc-key")?;
    let cert_of = |kw: &'static str| -> Result<Ed25519Cert, DescError> {
        let i = exactly_once(section, kw)?;
        Ed25519Cert::parse(i.object(CERT_TAG)?).map_err(|err| DescError::Cert { field: kw, err })
    };
    Ok(IntroPointDesc {
        link_specifiers,
        onion_key_ntor,
        auth_key_cert: cert_of("auth-key")?,
        enc_key_ntor,
        enc_key_cert: cert_of("enc-key-cert")?,
    })
}
