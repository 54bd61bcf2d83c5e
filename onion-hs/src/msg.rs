//! What onion services require of the onion-service relay messages, rend-spec-v3 §3 and §4,
//! and the cryptography bound to them: ESTABLISH_INTRO (its MAC over the circuit's `KH`, its
//! signature, the DoS extension), INTRODUCE1/INTRODUCE2 (the hs-ntor encrypted section and
//! its plaintext, the MAC) and RENDEZVOUS1.
//!
//! There is one codec for these messages: onion-cell's ([`onion_cell::hs`],
//! [`onion_cell::extension`]), which decodes them without copying inside `RelayMsg`. This
//! module takes them as decoded there (`from_cell`) and adds what the onion-service protocol
//! asks beyond the wire format: an ed25519 AUTH_KEY, a 64-byte signature, the v3 INTRODUCE
//! (LEGACY_KEY_ID all zero), which key MACs or signs which bytes, and the encryption of the
//! INTRODUCE plaintext. Messages without cryptography (INTRO_ESTABLISHED, INTRODUCE_ACK,
//! ESTABLISH_RENDEZVOUS, RENDEZVOUS2) are onion-cell's alone.

use std::borrow::Cow;

use onion_cell::extension::{self as cellext, ExtBody as _, ExtList};
use onion_cell::hs as wire;
use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;

use crate::keys::{ExpandedKeypair, Subcredential};
use crate::linkspec::RawLinkSpec;
use crate::ntor::{self, HsNtorClient, IntroKeys, NtorError};
use crate::ops::{aes256_ctr_xor, ct_eq, hs_mac};

/// AUTH_KEY_TYPE 02: ed25519 key, SHA3-256 MAC.
pub const AUTH_KEY_TYPE_ED25519: u8 = wire::AuthKeyType::ED25519_SHA3_256.0;
/// Signature prefix of ESTABLISH_INTRO (onion-cell's).
pub use onion_cell::hs::ESTABLISH_INTRO_SIG_PREFIX;
/// ESTABLISH_INTRO extension 01: DoS parameters (§3.1.1.1).
pub const EXT_DOS_PARAMS: u8 = 1;
/// Length of a rendezvous cookie.
pub const REND_COOKIE_LEN: usize = 20;
/// C tor pads INTRODUCE1 so that everything but `X` and the MAC is at least this long.
pub const INTRODUCE1_MIN_SIZE: usize = 246;
/// ONION_KEY_TYPE 01: ntor.
pub const ONION_KEY_TYPE_NTOR: u8 = wire::OnionKeyType::NTOR.0;

/// A malformed or unauthentic message body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    /// The body ended inside the named field.
    #[error("{msg}: truncated in {field}")]
    Truncated {
        /// Message.
        msg: &'static str,
        /// Field.
        field: &'static str,
    },
    /// A field with an unsupported value.
    #[error("{msg}: unsupported {field} {value}")]
    Unsupported {
        /// Message.
        msg: &'static str,
        /// Field.
        field: &'static str,
        /// Value found.
        value: u64,
    },
    /// ESTABLISH_INTRO's HANDSHAKE_AUTH does not match the circuit's KH.
    #[error("ESTABLISH_INTRO: HANDSHAKE_AUTH mismatch")]
    BadHandshakeAuth,
    /// ESTABLISH_INTRO's signature does not verify.
    #[error("ESTABLISH_INTRO: bad signature")]
    BadSignature,
    /// INTRODUCE2's MAC does not verify.
    #[error("INTRODUCE2: MAC mismatch")]
    BadMac,
    /// The key does not decode.
    #[error("{0}: bad key")]
    BadKey(&'static str),
    /// hs-ntor failed.
    #[error(transparent)]
    Ntor(#[from] NtorError),
    /// Malformed or unencodable per onion-cell's wire format (other than truncation), e.g. a
    /// link specifier of a known type with the wrong length, or a field too long to encode.
    #[error("{msg}: {err}")]
    Wire {
        /// Message.
        msg: &'static str,
        /// onion-cell's error, naming the field.
        err: onion_cell::Error,
    },
}

fn trunc(msg: &'static str, field: &'static str) -> MsgError {
    MsgError::Truncated { msg, field }
}

/// Map onion-cell's error for message `msg`, keeping "need more bytes" apart.
fn wire_err(msg: &'static str) -> impl Fn(onion_cell::Error) -> MsgError {
    move |err| match err {
        onion_cell::Error::Truncated { field, .. } => MsgError::Truncated { msg, field },
        err => MsgError::Wire { msg, err },
    }
}

/// An ed25519 AUTH_KEY of exactly 32 bytes (the only kind v3 onion services use).
fn ed25519_auth_key(
    msg: &'static str,
    ty: wire::AuthKeyType,
    key: &[u8],
) -> Result<[u8; 32], MsgError> {
    if ty.0 != AUTH_KEY_TYPE_ED25519 {
        return Err(MsgError::Unsupported {
            msg,
            field: "AUTH_KEY_TYPE",
            value: ty.0.into(),
        });
    }
    key.try_into().map_err(|_| MsgError::Unsupported {
        msg,
        field: "AUTH_KEY_LEN",
        value: key.len() as u64,
    })
}

/// One `EXT_FIELD_TYPE | EXT_FIELD_LEN | EXT_FIELD` extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extension {
    /// EXT_FIELD_TYPE.
    pub ty: u8,
    /// EXT_FIELD (at most 255 bytes).
    pub body: Vec<u8>,
}

impl Extension {
    /// This extension as onion-cell's.
    pub fn to_cell(&self) -> cellext::Extension<'_> {
        cellext::Extension {
            ext_type: self.ty,
            body: Cow::Borrowed(&self.body),
        }
    }
}

impl From<&cellext::Extension<'_>> for Extension {
    fn from(e: &cellext::Extension<'_>) -> Self {
        Extension {
            ty: e.ext_type,
            body: e.body.to_vec(),
        }
    }
}

fn to_ext_list(exts: &[Extension]) -> ExtList<'_> {
    ExtList(exts.iter().map(Extension::to_cell).collect())
}

fn from_ext_list(l: &ExtList<'_>) -> Vec<Extension> {
    l.0.iter().map(Extension::from).collect()
}

/// DoS defence parameters of ESTABLISH_INTRO (§3.1.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DosParams {
    /// DOS_INTRODUCE2_RATE_PER_SEC (param 01), 0..=2^31-1.
    pub rate_per_sec: Option<u64>,
    /// DOS_INTRODUCE2_BURST_PER_SEC (param 02), 0..=2^31-1.
    pub burst_per_sec: Option<u64>,
}

impl DosParams {
    /// Encode as an extension (onion-cell's DoS-parameters format).
    pub fn to_extension(&self) -> Extension {
        let params = [
            (
                cellext::DosParamType::INTRODUCE2_RATE_PER_SEC,
                self.rate_per_sec,
            ),
            (
                cellext::DosParamType::INTRODUCE2_BURST_PER_SEC,
                self.burst_per_sec,
            ),
        ]
        .into_iter()
        .filter_map(|(t, v)| v.map(|v| (t, v)))
        .collect();
        let mut body = Vec::with_capacity(19);
        // At most two parameters: encoding cannot exceed N_PARAMS' range.
        let _ = cellext::DosParams(params).encode_body(&mut body);
        Extension {
            ty: EXT_DOS_PARAMS,
            body,
        }
    }

    /// Decode the extension body (onion-cell's decoder); unknown parameter types are ignored,
    /// values above 2^31-1 rejected (§3.1.1.1).
    pub fn from_extension_body(b: &[u8]) -> Result<Self, MsgError> {
        const M: &str = "ESTABLISH_INTRO DoS extension";
        let cellext::DosParams(params) = cellext::DosParams::decode_body(b).map_err(wire_err(M))?;
        let mut p = DosParams {
            rate_per_sec: None,
            burst_per_sec: None,
        };
        for (t, v) in params {
            if v > 0x7fff_ffff {
                return Err(MsgError::Unsupported {
                    msg: M,
                    field: "PARAM_VALUE",
                    value: v,
                });
            }
            match t {
                cellext::DosParamType::INTRODUCE2_RATE_PER_SEC => p.rate_per_sec = Some(v),
                cellext::DosParamType::INTRODUCE2_BURST_PER_SEC => p.burst_per_sec = Some(v),
                _ => {}
            }
        }
        Ok(p)
    }
}

/// ESTABLISH_INTRO (§3.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstablishIntro {
    /// AUTH_KEY (`KP_hs_ipt_sid`).
    pub auth_key: [u8; 32],
    /// Extensions (e.g. [`DosParams::to_extension`]).
    pub extensions: Vec<Extension>,
    /// HANDSHAKE_AUTH.
    pub handshake_auth: [u8; 32],
    /// SIG.
    pub signature: [u8; 64],
    /// Bytes covered by HANDSHAKE_AUTH (everything before it).
    mac_covered: Vec<u8>,
}

impl EstablishIntro {
    const M: &'static str = "ESTABLISH_INTRO";

    /// Build and sign: `circuit_kh` is the circuit's `KH` from the circuit extension handshake.
    /// HANDSHAKE_AUTH is `MAC(KH, fields before it)`, SIG is by the auth key over the prefix
    /// string and every field before SIG_LEN (§3.1.1). Returns the checked form and the
    /// message to send (`RelayMsg::EstablishIntro`): its encoding is the one the MAC and
    /// signature cover, since onion-cell derives every length from its field.
    pub fn build(
        auth_keypair: &ExpandedKeypair,
        extensions: Vec<Extension>,
        circuit_kh: &[u8],
    ) -> Result<(Self, wire::EstablishIntro<'static>), MsgError> {
        let err = wire_err(Self::M);
        let mut mac_covered = Vec::with_capacity(64);
        let mut cell = wire::EstablishIntro {
            auth_key_type: wire::AuthKeyType::ED25519_SHA3_256,
            auth_key: Cow::Borrowed(auth_keypair.public_bytes()),
            extensions: to_ext_list(&extensions),
            handshake_auth: [0; 32],
            sig: Cow::Borrowed(&[]),
        };
        cell.encode_mac_input(&mut mac_covered).map_err(&err)?;
        cell.handshake_auth = hs_mac(circuit_kh, &[&mac_covered]);
        let mut signed = ESTABLISH_INTRO_SIG_PREFIX.to_vec();
        cell.encode_sig_input(&mut signed).map_err(&err)?;
        let signature = auth_keypair.sign(&signed).to_bytes();
        cell.sig = Cow::Owned(signature.to_vec());
        let handshake_auth = cell.handshake_auth;
        let cell = cell.into_owned();
        Ok((
            EstablishIntro {
                auth_key: *auth_keypair.public_bytes(),
                extensions,
                handshake_auth,
                signature,
                mac_covered,
            },
            cell,
        ))
    }

    /// Parse (the introduction point's side); then call [`EstablishIntro::verify`].
    pub fn parse(body: &[u8]) -> Result<Self, MsgError> {
        let (cell, _) =
            wire::EstablishIntro::decode_with_ranges(body).map_err(wire_err(Self::M))?;
        Self::from_cell(&cell)
    }

    /// The message as onion-cell decoded it (from a `RelayMsg::EstablishIntro`): check what
    /// onion services require of it (an ed25519 AUTH_KEY, a 64-byte SIG) and keep the bytes
    /// HANDSHAKE_AUTH and SIG cover. Every length in the covered prefix is derived from the
    /// field it counts, so its encoding is the one received, byte for byte. Bytes after SIG
    /// are ignored, as C tor's parser ignores them. Then call [`EstablishIntro::verify`].
    pub fn from_cell(cell: &wire::EstablishIntro<'_>) -> Result<Self, MsgError> {
        let m = Self::M;
        let auth_key = ed25519_auth_key(m, cell.auth_key_type, &cell.auth_key)?;
        let signature: [u8; 64] =
            cell.sig
                .as_ref()
                .try_into()
                .map_err(|_| MsgError::Unsupported {
                    msg: m,
                    field: "SIG_LEN",
                    value: cell.sig.len() as u64,
                })?;
        let mut mac_covered = Vec::with_capacity(64);
        cell.encode_mac_input(&mut mac_covered)
            .map_err(wire_err(m))?;
        Ok(EstablishIntro {
            auth_key,
            extensions: from_ext_list(&cell.extensions),
            handshake_auth: cell.handshake_auth,
            signature,
            mac_covered,
        })
    }

    /// Check HANDSHAKE_AUTH against the circuit's `KH` and the signature by AUTH_KEY.
    pub fn verify(&self, circuit_kh: &[u8]) -> Result<(), MsgError> {
        use ed25519_dalek::Verifier as _;
        if !ct_eq(
            &hs_mac(circuit_kh, &[&self.mac_covered]),
            &self.handshake_auth,
        ) {
            return Err(MsgError::BadHandshakeAuth);
        }
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.auth_key)
            .map_err(|_| MsgError::BadKey("ESTABLISH_INTRO AUTH_KEY"))?;
        let mut signed =
            Vec::with_capacity(ESTABLISH_INTRO_SIG_PREFIX.len() + self.mac_covered.len() + 32);
        signed.extend_from_slice(ESTABLISH_INTRO_SIG_PREFIX);
        signed.extend_from_slice(&self.mac_covered);
        signed.extend_from_slice(&self.handshake_auth);
        vk.verify(
            &signed,
            &ed25519_dalek::Signature::from_bytes(&self.signature),
        )
        .map_err(|_| MsgError::BadSignature)
    }

    /// The DoS parameters, if the extension is present (first occurrence).
    pub fn dos_params(&self) -> Option<Result<DosParams, MsgError>> {
        self.extensions
            .iter()
            .find(|e| e.ty == EXT_DOS_PARAMS)
            .map(|e| DosParams::from_extension_body(&e.body))
    }
}

/// The decrypted INTRODUCE payload (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroducePlaintext {
    /// RENDEZVOUS_COOKIE.
    pub rend_cookie: [u8; REND_COOKIE_LEN],
    /// Extensions (e.g. congestion control request, type 01).
    pub extensions: Vec<Extension>,
    /// ONION_KEY_TYPE (01 = ntor).
    pub onion_key_type: u8,
    /// ONION_KEY of the rendezvous point.
    pub onion_key: Vec<u8>,
    /// The rendezvous point's link specifiers.
    pub link_specifiers: Vec<RawLinkSpec>,
}

impl IntroducePlaintext {
    const M: &'static str = "INTRODUCE plaintext";

    /// Encode without padding.
    pub fn encode(&self) -> Result<Vec<u8>, MsgError> {
        let mut v = Vec::with_capacity(200);
        wire::IntroducePlaintext {
            rendezvous_cookie: self.rend_cookie,
            extensions: to_ext_list(&self.extensions),
            onion_key_type: wire::OnionKeyType(self.onion_key_type),
            onion_key: Cow::Borrowed(&self.onion_key),
            link_specs: self
                .link_specifiers
                .iter()
                .map(RawLinkSpec::to_cell)
                .collect(),
        }
        .encode(&mut v)
        .map_err(wire_err(Self::M))?;
        Ok(v)
    }

    /// Parse; PAD (anything after the link specifiers) is ignored. An ntor ONION_KEY must be
    /// 32 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, MsgError> {
        let m = Self::M;
        let cell = wire::IntroducePlaintext::decode(b).map_err(wire_err(m))?;
        if cell.onion_key_type == wire::OnionKeyType::NTOR && cell.onion_key.len() != 32 {
            return Err(MsgError::Unsupported {
                msg: m,
                field: "ONION_KEY_LEN",
                value: cell.onion_key.len() as u64,
            });
        }
        Ok(IntroducePlaintext {
            rend_cookie: cell.rendezvous_cookie,
            extensions: from_ext_list(&cell.extensions),
            onion_key_type: cell.onion_key_type.0,
            onion_key: cell.onion_key.into_owned(),
            link_specifiers: cell.link_specs.into_iter().map(RawLinkSpec::from).collect(),
        })
    }
}

/// INTRODUCE1 / INTRODUCE2 (§3.2.1, §3.3.2): same format, forwarded verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduce {
    /// AUTH_KEY (`KP_hs_ipt_sid`).
    pub auth_key: [u8; 32],
    /// Cleartext extensions.
    pub extensions: Vec<Extension>,
    /// CLIENT_PK `X`.
    pub client_pk: [u8; 32],
    /// ENCRYPTED_DATA.
    pub encrypted: Vec<u8>,
    /// MAC.
    pub mac: [u8; 32],
    /// Bytes covered by the MAC (the whole body before the MAC).
    mac_covered: Vec<u8>,
}

impl Introduce {
    const M: &'static str = "INTRODUCE1";

    /// Parse an INTRODUCE1/INTRODUCE2 body (only the v3 format: LEGACY_KEY_ID all zero).
    pub fn parse(body: &[u8]) -> Result<Self, MsgError> {
        let cell = wire::Introduce::decode(body).map_err(wire_err(Self::M))?;
        Self::from_cell(&cell)
    }

    /// The message as onion-cell decoded it (from a `RelayMsg::Introduce1` or
    /// `Introduce2`): check that it is the v3 format with an ed25519 AUTH_KEY, and keep the
    /// bytes the MAC covers (every length in them is derived from its field, so their
    /// encoding is the one received).
    pub fn from_cell(cell: &wire::Introduce<'_>) -> Result<Self, MsgError> {
        let m = Self::M;
        if cell.legacy_key_id.iter().any(|&b| b != 0) {
            return Err(MsgError::Unsupported {
                msg: m,
                field: "LEGACY_KEY_ID (non-zero)",
                value: 0,
            });
        }
        let mut mac_covered = Vec::with_capacity(cell.encrypted_data.len() + 128);
        cell.encode_mac_input(&mut mac_covered)
            .map_err(wire_err(m))?;
        Ok(Introduce {
            auth_key: ed25519_auth_key(m, cell.auth_key_type, &cell.auth_key)?,
            extensions: from_ext_list(&cell.extensions),
            client_pk: cell.client_pk,
            encrypted: cell.encrypted_data.to_vec(),
            mac: cell.mac,
            mac_covered,
        })
    }

    /// Client: build INTRODUCE1 for the intro point (`auth_key`, service enc key `enc_key`),
    /// encrypting `plaintext` (padded with zeros as C tor does). Returns the message to send
    /// (`RelayMsg::Introduce1`) and the handshake state to finish on RENDEZVOUS2.
    pub fn build_client(
        rng: &mut impl CryptoRngCore,
        auth_key: &[u8; 32],
        enc_key: &[u8; 32],
        subcred: &Subcredential,
        extensions: &[Extension],
        plaintext: &IntroducePlaintext,
    ) -> Result<(wire::Introduce<'static>, HsNtorClient), MsgError> {
        let (client, keys) = HsNtorClient::new(rng, auth_key, enc_key, subcred)?;
        let cell = Self::with_keys(auth_key, extensions, client.public_key(), &keys, plaintext)?;
        Ok((cell, client))
    }

    /// Build INTRODUCE1 from given keys (the deterministic core of
    /// [`Introduce::build_client`]): the MAC covers the encoding of every field before it,
    /// which is the encoding the returned message will have on the wire.
    pub fn with_keys(
        auth_key: &[u8; 32],
        extensions: &[Extension],
        client_pk: &[u8; 32],
        keys: &IntroKeys,
        plaintext: &IntroducePlaintext,
    ) -> Result<wire::Introduce<'static>, MsgError> {
        let err = wire_err(Self::M);
        let mut cell = wire::Introduce {
            legacy_key_id: [0; 20],
            auth_key_type: wire::AuthKeyType::ED25519_SHA3_256,
            auth_key: Cow::Borrowed(auth_key),
            extensions: to_ext_list(extensions),
            client_pk: *client_pk,
            encrypted_data: Cow::Borrowed(&[]),
            mac: [0; 32],
        };
        // C tor pads so that the fields before CLIENT_PK plus the plaintext reach the minimum.
        let mut covered = Vec::with_capacity(INTRODUCE1_MIN_SIZE + 64);
        cell.encode_mac_input(&mut covered).map_err(&err)?;
        let before_client_pk = covered.len().saturating_sub(32);
        let mut pt = plaintext.encode()?;
        let min = INTRODUCE1_MIN_SIZE.saturating_sub(before_client_pk);
        if pt.len() < min {
            pt.resize(min, 0);
        }
        aes256_ctr_xor(&keys.enc_key, &[0u8; 16], &mut pt);
        cell.encrypted_data = Cow::Owned(pt);
        covered.clear();
        cell.encode_mac_input(&mut covered).map_err(&err)?;
        cell.mac = hs_mac(&keys.mac_key, &[&covered]);
        Ok(cell.into_owned())
    }

    /// Service: check the MAC with the intro point's encryption secret key `b` and decrypt.
    pub fn decrypt(
        &self,
        b: &StaticSecret,
        subcred: &Subcredential,
    ) -> Result<IntroducePlaintext, MsgError> {
        let keys = ntor::service_intro_keys(b, &self.auth_key, &self.client_pk, subcred)?;
        if !ct_eq(&hs_mac(&keys.mac_key, &[&self.mac_covered]), &self.mac) {
            return Err(MsgError::BadMac);
        }
        let mut pt = self.encrypted.clone();
        aes256_ctr_xor(&keys.enc_key, &[0u8; 16], &mut pt);
        IntroducePlaintext::parse(&pt)
    }
}

/// RENDEZVOUS1 (§4.2): cookie and HANDSHAKE_INFO (`Y | AUTH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous1 {
    /// RENDEZVOUS_COOKIE.
    pub rend_cookie: [u8; REND_COOKIE_LEN],
    /// HANDSHAKE_INFO.
    pub handshake_info: [u8; 64],
}

/// The 64-byte hs-ntor HANDSHAKE_INFO (`SERVER_PK | AUTH`) at the start of `info`.
fn ntor_handshake_info(msg: &'static str, info: &[u8]) -> Result<[u8; 64], MsgError> {
    info.get(..64)
        .and_then(|c| c.try_into().ok())
        .ok_or(trunc(msg, "HANDSHAKE_INFO"))
}

impl Rendezvous1 {
    /// The message to send (`RelayMsg::Rendezvous1`).
    pub fn to_cell(&self) -> wire::Rendezvous1<'static> {
        wire::Rendezvous1 {
            cookie: self.rend_cookie,
            handshake_info: Cow::Owned(self.handshake_info.to_vec()),
        }
    }

    /// Parse (extra bytes ignored, as older padding rules allowed them).
    pub fn parse(b: &[u8]) -> Result<Self, MsgError> {
        const M: &str = "RENDEZVOUS1";
        let cell = wire::Rendezvous1::decode(b).map_err(wire_err(M))?;
        Ok(Rendezvous1 {
            rend_cookie: cell.cookie,
            handshake_info: ntor_handshake_info(M, &cell.handshake_info)?,
        })
    }
}
