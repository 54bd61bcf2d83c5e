//! Onion-service relay message bodies (rend-spec-v3 §3 "The introduction protocol" and §4
//! "The rendezvous protocol").
//!
//! | message | section |
//! |---|---|
//! | [`EstablishIntro`] | §3.1.1 \[EST_INTRO\], DoS extension §3.1.1.1 ([`crate::extension::DosParams`]) |
//! | [`IntroEstablished`] | §3.1.3 \[INTRO_ESTABLISHED\] |
//! | [`Introduce`] (INTRODUCE1 and INTRODUCE2) | §3.2.1 \[FMT_INTRO1\], §3.3.2 |
//! | [`IntroducePlaintext`] (the decrypted ENCRYPTED_DATA) | §3.3 \[PROCESS_INTRO2\] |
//! | [`IntroduceAck`] | §3.2.2 \[INTRO_ACK\] |
//! | [`EstablishRendezvous`] | §4.1 \[EST_REND_POINT\] |
//! | [`Rendezvous1`], [`Rendezvous2`] | §4.2 \[JOIN_REND\] |
//!
//! # MACs and signatures over byte prefixes
//!
//! ESTABLISH_INTRO carries a MAC (`HANDSHAKE_AUTH`) of every earlier field and a signature
//! of every field before `SIG_LEN`; INTRODUCE1 carries a MAC of every byte before `MAC`.
//! These cover the *encoded* bytes, so this module gives both directions:
//!
//! * building: [`EstablishIntro::encode_mac_input`] and
//!   [`EstablishIntro::encode_sig_input`] write the covered prefix (the MAC and signature
//!   fields of `self` are ignored by the first, the signature by the second), so a
//!   service computes `HANDSHAKE_AUTH` over the first output, fills it in, signs
//!   [`ESTABLISH_INTRO_SIG_PREFIX`] followed by the second output, then encodes the whole
//!   message. [`Introduce::encode_mac_input`] does the same for INTRODUCE1.
//! * checking: [`EstablishIntro::decode_with_ranges`] and [`Introduce::decode_with_ranges`]
//!   return the byte ranges of the received body that the MAC and signature cover, so the
//!   check runs over the bytes actually received.

use crate::error::{Error, Result};
use crate::extension::ExtList;
use crate::linkspec::{self, LinkSpec};
use crate::reader::Reader;
use crate::writer::{len_u16, Writer};
use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::ops::Range;

/// The string prefixed to the signed part of ESTABLISH_INTRO (rend-spec-v3 §3.1.1).
pub const ESTABLISH_INTRO_SIG_PREFIX: &[u8] = b"Tor establish-intro cell v1";

/// MAC_LEN for the SHA3-256 MACs of the v3 onion-service protocol.
pub const HS_MAC_LEN: usize = 32;

/// AUTH_KEY_TYPE (rend-spec-v3 §3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthKeyType(pub u8);

impl AuthKeyType {
    /// `[02]`: Ed25519 key; SHA3-256 MAC.
    pub const ED25519_SHA3_256: AuthKeyType = AuthKeyType(2);
}

/// ESTABLISH_INTRO (rend-spec-v3 §3.1.1).
///
/// ```text
/// AUTH_KEY_TYPE [1] AUTH_KEY_LEN [2] AUTH_KEY [AUTH_KEY_LEN]
/// N_EXTENSIONS [1] extensions
/// HANDSHAKE_AUTH [32] SIG_LEN [2] SIG [SIG_LEN]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EstablishIntro<'a> {
    /// AUTH_KEY_TYPE.
    pub auth_key_type: AuthKeyType,
    /// AUTH_KEY: the introduction point authentication key KP_hs_ipt_sid.
    pub auth_key: Cow<'a, [u8]>,
    /// Extensions (e.g. [`crate::extension::DosParams`]).
    pub extensions: ExtList<'a>,
    /// HANDSHAKE_AUTH: MAC of the earlier fields, keyed with the circuit's KH.
    pub handshake_auth: [u8; HS_MAC_LEN],
    /// SIG: signature by AUTH_KEY of the prefix string and all fields before SIG_LEN.
    pub sig: Cow<'a, [u8]>,
}

/// The byte ranges of a received ESTABLISH_INTRO body covered by its MAC and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstablishIntroRanges {
    /// Bytes covered by HANDSHAKE_AUTH (everything before it).
    pub mac_input: Range<usize>,
    /// Bytes covered by SIG, after [`ESTABLISH_INTRO_SIG_PREFIX`] (everything before
    /// SIG_LEN, HANDSHAKE_AUTH included).
    pub sig_input: Range<usize>,
}

impl<'a> EstablishIntro<'a> {
    /// Decodes the body; bytes after SIG are ignored.
    pub fn decode(body: &'a [u8]) -> Result<Self> {
        Self::decode_with_ranges(body).map(|(m, _)| m)
    }

    /// Decodes the body and returns the ranges covered by the MAC and the signature.
    pub fn decode_with_ranges(body: &'a [u8]) -> Result<(Self, EstablishIntroRanges)> {
        let mut r = Reader::new(body);
        let auth_key_type = AuthKeyType(r.u8("ESTABLISH_INTRO AUTH_KEY_TYPE")?);
        let klen = r.u16("ESTABLISH_INTRO AUTH_KEY_LEN")? as usize;
        let auth_key = r.take(klen, "ESTABLISH_INTRO AUTH_KEY")?;
        let extensions = ExtList::decode(&mut r)?;
        let mac_end = r.consumed();
        let handshake_auth = r.array("ESTABLISH_INTRO HANDSHAKE_AUTH")?;
        let sig_end = r.consumed();
        let slen = r.u16("ESTABLISH_INTRO SIG_LEN")? as usize;
        let sig = r.take(slen, "ESTABLISH_INTRO SIG")?;
        Ok((
            EstablishIntro {
                auth_key_type,
                auth_key: Cow::Borrowed(auth_key),
                extensions,
                handshake_auth,
                sig: Cow::Borrowed(sig),
            },
            EstablishIntroRanges {
                mac_input: 0..mac_end,
                sig_input: 0..sig_end,
            },
        ))
    }

    /// Writes the bytes HANDSHAKE_AUTH covers: AUTH_KEY_TYPE through the extensions.
    pub fn encode_mac_input<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_u8(self.auth_key_type.0);
        w.write_u16(len_u16(
            "ESTABLISH_INTRO AUTH_KEY_LEN",
            self.auth_key.len(),
        )?);
        w.write_all(&self.auth_key);
        self.extensions.encode(w)
    }

    /// Writes the bytes SIG covers (after the prefix string): the MAC input and
    /// HANDSHAKE_AUTH.
    pub fn encode_sig_input<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        self.encode_mac_input(w)?;
        w.write_all(&self.handshake_auth);
        Ok(())
    }

    /// Encodes the whole body.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        self.encode_sig_input(w)?;
        w.write_u16(len_u16("ESTABLISH_INTRO SIG_LEN", self.sig.len())?);
        w.write_all(&self.sig);
        Ok(())
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> EstablishIntro<'static> {
        EstablishIntro {
            auth_key_type: self.auth_key_type,
            auth_key: Cow::Owned(self.auth_key.into_owned()),
            extensions: self.extensions.into_owned(),
            handshake_auth: self.handshake_auth,
            sig: Cow::Owned(self.sig.into_owned()),
        }
    }
}

/// INTRO_ESTABLISHED (rend-spec-v3 §3.1.3): an extension list. An empty body (sent by
/// legacy relays) decodes as an empty list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct IntroEstablished<'a> {
    /// Extensions.
    pub extensions: ExtList<'a>,
}

impl<'a> IntroEstablished<'a> {
    /// Decodes the body; extra bytes are ignored.
    pub fn decode(body: &'a [u8]) -> Result<Self> {
        if body.is_empty() {
            return Ok(IntroEstablished::default());
        }
        let mut r = Reader::new(body);
        Ok(IntroEstablished {
            extensions: ExtList::decode(&mut r)?,
        })
    }

    /// Encodes the body.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        self.extensions.encode(w)
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> IntroEstablished<'static> {
        IntroEstablished {
            extensions: self.extensions.into_owned(),
        }
    }
}

/// INTRODUCE1 / INTRODUCE2 (rend-spec-v3 §3.2.1, with the ENCRYPTED part of §3.3.2).
///
/// ```text
/// LEGACY_KEY_ID [20] AUTH_KEY_TYPE [1] AUTH_KEY_LEN [2] AUTH_KEY [AUTH_KEY_LEN]
/// N_EXTENSIONS [1] extensions
/// ENCRYPTED: CLIENT_PK [32] ENCRYPTED_DATA [..] MAC [32]   (to the end of the body)
/// ```
///
/// The MAC covers every byte before it (as C tor computes it); see
/// [`Introduce::decode_with_ranges`] and [`Introduce::encode_mac_input`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Introduce<'a> {
    /// LEGACY_KEY_ID (all zero in v3 cells).
    pub legacy_key_id: [u8; 20],
    /// AUTH_KEY_TYPE.
    pub auth_key_type: AuthKeyType,
    /// AUTH_KEY: the introduction point authentication key.
    pub auth_key: Cow<'a, [u8]>,
    /// Cleartext extensions.
    pub extensions: ExtList<'a>,
    /// CLIENT_PK: the client's ephemeral X25519 key X.
    pub client_pk: [u8; 32],
    /// ENCRYPTED_DATA: the encrypted [`IntroducePlaintext`].
    pub encrypted_data: Cow<'a, [u8]>,
    /// MAC.
    pub mac: [u8; HS_MAC_LEN],
}

impl<'a> Introduce<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self> {
        Self::decode_with_ranges(body).map(|(m, _)| m)
    }

    /// Decodes the body and returns the range the MAC covers (all bytes before MAC).
    pub fn decode_with_ranges(body: &'a [u8]) -> Result<(Self, Range<usize>)> {
        let mut r = Reader::new(body);
        let legacy_key_id = r.array("INTRODUCE LEGACY_KEY_ID")?;
        let auth_key_type = AuthKeyType(r.u8("INTRODUCE AUTH_KEY_TYPE")?);
        let klen = r.u16("INTRODUCE AUTH_KEY_LEN")? as usize;
        let auth_key = r.take(klen, "INTRODUCE AUTH_KEY")?;
        let extensions = ExtList::decode(&mut r)?;
        let client_pk = r.array("INTRODUCE CLIENT_PK")?;
        let rest = r.rest();
        let Some(data_len) = rest.len().checked_sub(HS_MAC_LEN) else {
            return Err(Error::Truncated {
                field: "INTRODUCE MAC",
                need: HS_MAC_LEN - rest.len(),
            });
        };
        let (data, mac) = rest.split_at(data_len);
        let mac: [u8; HS_MAC_LEN] = mac.try_into().map_err(|_| Error::BadLength {
            field: "INTRODUCE MAC",
            len: mac.len(),
        })?;
        Ok((
            Introduce {
                legacy_key_id,
                auth_key_type,
                auth_key: Cow::Borrowed(auth_key),
                extensions,
                client_pk,
                encrypted_data: Cow::Borrowed(data),
                mac,
            },
            0..body.len() - HS_MAC_LEN,
        ))
    }

    /// Writes every byte the MAC covers: the whole body except MAC.
    pub fn encode_mac_input<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_all(&self.legacy_key_id);
        w.write_u8(self.auth_key_type.0);
        w.write_u16(len_u16("INTRODUCE AUTH_KEY_LEN", self.auth_key.len())?);
        w.write_all(&self.auth_key);
        self.extensions.encode(w)?;
        w.write_all(&self.client_pk);
        w.write_all(&self.encrypted_data);
        Ok(())
    }

    /// Encodes the body.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        self.encode_mac_input(w)?;
        w.write_all(&self.mac);
        Ok(())
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> Introduce<'static> {
        Introduce {
            legacy_key_id: self.legacy_key_id,
            auth_key_type: self.auth_key_type,
            auth_key: Cow::Owned(self.auth_key.into_owned()),
            extensions: self.extensions.into_owned(),
            client_pk: self.client_pk,
            encrypted_data: Cow::Owned(self.encrypted_data.into_owned()),
            mac: self.mac,
        }
    }
}

/// ONION_KEY_TYPE of the INTRODUCE plaintext (rend-spec-v3 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnionKeyType(pub u8);

impl OnionKeyType {
    /// `[01]` NTOR: a 32-byte X25519 key.
    pub const NTOR: OnionKeyType = OnionKeyType(1);
}

/// The decrypted ENCRYPTED_DATA of INTRODUCE2 (rend-spec-v3 §3.3 \[PROCESS_INTRO2\]).
///
/// ```text
/// RENDEZVOUS_COOKIE (20 bytes) N_EXTENSIONS [1] extensions
/// ONION_KEY_TYPE [1] ONION_KEY_LEN [2] ONION_KEY [ONION_KEY_LEN]
/// NSPEC [1] link specifiers   PAD [to the end]
/// ```
///
/// PAD is ignored on decode and not written on encode (the sender pads the plaintext to
/// the length it wants before encrypting).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntroducePlaintext<'a> {
    /// RENDEZVOUS_COOKIE.
    pub rendezvous_cookie: [u8; 20],
    /// Extensions (e.g. [`crate::extension::CcRequest`], proof of work).
    pub extensions: ExtList<'a>,
    /// ONION_KEY_TYPE.
    pub onion_key_type: OnionKeyType,
    /// ONION_KEY of the rendezvous point.
    pub onion_key: Cow<'a, [u8]>,
    /// Link specifiers of the rendezvous point, to be forwarded verbatim.
    pub link_specs: Vec<LinkSpec<'a>>,
}

impl<'a> IntroducePlaintext<'a> {
    /// Decodes a decrypted plaintext; trailing PAD is ignored.
    pub fn decode(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let rendezvous_cookie = r.array("RENDEZVOUS_COOKIE")?;
        let extensions = ExtList::decode(&mut r)?;
        let onion_key_type = OnionKeyType(r.u8("ONION_KEY_TYPE")?);
        let klen = r.u16("ONION_KEY_LEN")? as usize;
        let onion_key = r.take(klen, "ONION_KEY")?;
        let link_specs = linkspec::decode_list(&mut r)?;
        Ok(IntroducePlaintext {
            rendezvous_cookie,
            extensions,
            onion_key_type,
            onion_key: Cow::Borrowed(onion_key),
            link_specs,
        })
    }

    /// Encodes the plaintext (without PAD).
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_all(&self.rendezvous_cookie);
        self.extensions.encode(w)?;
        w.write_u8(self.onion_key_type.0);
        w.write_u16(len_u16("ONION_KEY_LEN", self.onion_key.len())?);
        w.write_all(&self.onion_key);
        linkspec::encode_list(&self.link_specs, w)
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> IntroducePlaintext<'static> {
        IntroducePlaintext {
            rendezvous_cookie: self.rendezvous_cookie,
            extensions: self.extensions.into_owned(),
            onion_key_type: self.onion_key_type,
            onion_key: Cow::Owned(self.onion_key.into_owned()),
            link_specs: self
                .link_specs
                .into_iter()
                .map(LinkSpec::into_owned)
                .collect(),
        }
    }
}

/// INTRODUCE_ACK STATUS (rend-spec-v3 §3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IntroduceAckStatus(pub u16);

impl IntroduceAckStatus {
    /// `00 00`: relayed to the service.
    pub const SUCCESS: IntroduceAckStatus = IntroduceAckStatus(0);
    /// `00 01`: service id not recognised.
    pub const UNKNOWN_SERVICE: IntroduceAckStatus = IntroduceAckStatus(1);
    /// `00 02`: bad message format.
    pub const BAD_FORMAT: IntroduceAckStatus = IntroduceAckStatus(2);
    /// `00 03`: can't relay the cell to the service.
    pub const CANT_RELAY: IntroduceAckStatus = IntroduceAckStatus(3);
}

/// The status's meaning as rend-spec-v3 §3.2.2 gives it, and its number (a value the spec
/// does not define is kept and shown as a number).
impl core::fmt::Display for IntroduceAckStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match *self {
            Self::SUCCESS => "success",
            Self::UNKNOWN_SERVICE => "service id not recognised",
            Self::BAD_FORMAT => "bad message format",
            Self::CANT_RELAY => "can't relay the cell to the service",
            _ => "unknown status",
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// INTRODUCE_ACK (rend-spec-v3 §3.2.2): STATUS (2 bytes), extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct IntroduceAck<'a> {
    /// STATUS.
    pub status: IntroduceAckStatus,
    /// Extensions.
    pub extensions: ExtList<'a>,
}

impl<'a> IntroduceAck<'a> {
    /// Decodes the body; extra bytes are ignored.
    pub fn decode(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let status = IntroduceAckStatus(r.u16("INTRODUCE_ACK STATUS")?);
        let extensions = ExtList::decode(&mut r)?;
        Ok(IntroduceAck { status, extensions })
    }

    /// Encodes the body.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_u16(self.status.0);
        self.extensions.encode(w)
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> IntroduceAck<'static> {
        IntroduceAck {
            status: self.status,
            extensions: self.extensions.into_owned(),
        }
    }
}

/// ESTABLISH_RENDEZVOUS (rend-spec-v3 §4.1): RENDEZVOUS_COOKIE (20 bytes); extra bytes ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EstablishRendezvous {
    /// RENDEZVOUS_COOKIE.
    pub cookie: [u8; 20],
}

impl EstablishRendezvous {
    /// Decodes the body.
    pub fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        Ok(EstablishRendezvous {
            cookie: r.array("ESTABLISH_RENDEZVOUS RENDEZVOUS_COOKIE")?,
        })
    }

    /// Encodes the body.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_all(&self.cookie);
        Ok(())
    }
}

/// RENDEZVOUS1 (rend-spec-v3 §4.2): RENDEZVOUS_COOKIE (20 bytes), HANDSHAKE_INFO (to the end)
/// (for hs-ntor: SERVER_PK (32 bytes), AUTH (32 bytes)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rendezvous1<'a> {
    /// RENDEZVOUS_COOKIE.
    pub cookie: [u8; 20],
    /// HANDSHAKE_INFO.
    pub handshake_info: Cow<'a, [u8]>,
}

impl<'a> Rendezvous1<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let cookie = r.array("RENDEZVOUS1 RENDEZVOUS_COOKIE")?;
        Ok(Rendezvous1 {
            cookie,
            handshake_info: Cow::Borrowed(r.rest()),
        })
    }

    /// Encodes the body.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_all(&self.cookie);
        w.write_all(&self.handshake_info);
        Ok(())
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> Rendezvous1<'static> {
        Rendezvous1 {
            cookie: self.cookie,
            handshake_info: Cow::Owned(self.handshake_info.into_owned()),
        }
    }
}

/// RENDEZVOUS2 (rend-spec-v3 §4.2): HANDSHAKE_INFO (to the end), copied from RENDEZVOUS1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rendezvous2<'a> {
    /// HANDSHAKE_INFO.
    pub handshake_info: Cow<'a, [u8]>,
}

impl<'a> Rendezvous2<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self> {
        Ok(Rendezvous2 {
            handshake_info: Cow::Borrowed(body),
        })
    }

    /// Encodes the body.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_all(&self.handshake_info);
        Ok(())
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> Rendezvous2<'static> {
        Rendezvous2 {
            handshake_info: Cow::Owned(self.handshake_info.into_owned()),
        }
    }
}

/// Splits an hs-ntor HANDSHAKE_INFO into SERVER_PK and AUTH (rend-spec-v3 §3.3.2).
pub fn split_handshake_info(info: &[u8]) -> Result<(&[u8; 32], &[u8; 32])> {
    let mut r = Reader::new(info);
    let pk = r.take_array("HANDSHAKE_INFO SERVER_PK")?;
    let auth = r.take_array("HANDSHAKE_INFO AUTH")?;
    Ok((pk, auth))
}
