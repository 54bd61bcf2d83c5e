//! Extension lists (proposal 332 §"meta-encoding", rend-spec-v3 §3.1.1 \[EST_INTRO\]).
//!
//! The same encoding carries the extensions of the ntor-v3 client and server messages
//! (circuit extensions, proposal 332 and proposal 324 §10.3) and of the onion-service
//! messages ESTABLISH_INTRO, INTRO_ESTABLISHED, INTRODUCE1/2 (outer and encrypted part) and
//! INTRODUCE_ACK:
//!
//! ```text
//! N_EXTENSIONS   [1 byte]
//! N_EXTENSIONS times:
//!    EXT_FIELD_TYPE [1 byte]
//!    EXT_FIELD_LEN  [1 byte]
//!    EXT_FIELD      [EXT_FIELD_LEN bytes]
//! ```
//!
//! (C tor encodes the ntor-v3 message with the same leading `N_EXTENSIONS` count as the
//! onion-service messages.) Unknown extension types are kept raw; per the spec a receiver
//! uses the first occurrence of a type, which is what [`ExtList::find`] returns. Known types
//! have typed bodies implementing [`ExtBody`]: [`CcRequest`], [`CcResponse`] and
//! [`DosParams`].

use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::writer::{len_u8, with_u8_len, Writer};
use alloc::borrow::Cow;
use alloc::vec::Vec;

/// One extension field, kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extension<'a> {
    /// EXT_FIELD_TYPE.
    pub ext_type: u8,
    /// EXT_FIELD (at most 255 bytes).
    pub body: Cow<'a, [u8]>,
}

impl<'a> Extension<'a> {
    /// Builds an extension from a typed body.
    pub fn from_typed<T: ExtBody>(body: &T) -> Result<Extension<'static>> {
        let mut v = Vec::new();
        body.encode_body(&mut v)?;
        len_u8("EXT_FIELD_LEN", v.len())?;
        Ok(Extension {
            ext_type: T::EXT_TYPE,
            body: Cow::Owned(v),
        })
    }

    /// Decodes this extension's body as `T`; `None` if the type is not `T`'s.
    pub fn typed<T: ExtBody>(&self) -> Option<Result<T>> {
        (self.ext_type == T::EXT_TYPE).then(|| T::decode_body(&self.body))
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> Extension<'static> {
        Extension {
            ext_type: self.ext_type,
            body: Cow::Owned(self.body.into_owned()),
        }
    }
}

/// A typed extension body.
pub trait ExtBody: Sized {
    /// Its EXT_FIELD_TYPE.
    const EXT_TYPE: u8;
    /// Decodes EXT_FIELD.
    fn decode_body(body: &[u8]) -> Result<Self>;
    /// Encodes EXT_FIELD.
    fn encode_body<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()>;
}

/// A list of extensions with its leading `N_EXTENSIONS` count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExtList<'a>(pub Vec<Extension<'a>>);

impl<'a> ExtList<'a> {
    /// An empty list (encoded as a single zero byte).
    pub fn new() -> Self {
        ExtList(Vec::new())
    }

    /// Decodes `N_EXTENSIONS` and the extensions.
    pub fn decode(r: &mut Reader<'a>) -> Result<Self> {
        let n = r.u8("N_EXTENSIONS")? as usize;
        let mut v = Vec::with_capacity(n.min(r.remaining() / 2));
        for _ in 0..n {
            let ext_type = r.u8("EXT_FIELD_TYPE")?;
            let len = r.u8("EXT_FIELD_LEN")? as usize;
            let body = r.take(len, "EXT_FIELD")?;
            v.push(Extension {
                ext_type,
                body: Cow::Borrowed(body),
            });
        }
        Ok(ExtList(v))
    }

    /// Decodes a whole message that is exactly an extension list (e.g. an ntor-v3 message).
    pub fn decode_all(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let l = Self::decode(&mut r)?;
        r.expect_end("extension list")?;
        Ok(l)
    }

    /// Encodes `N_EXTENSIONS` and the extensions.
    pub fn encode<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_u8(len_u8("N_EXTENSIONS", self.0.len())?);
        for e in &self.0 {
            w.write_u8(e.ext_type);
            with_u8_len(w, "EXT_FIELD", |w| {
                w.write_all(&e.body);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The first extension of type `ext_type` (later ones MUST be ignored, prop 332).
    pub fn find(&self, ext_type: u8) -> Option<&Extension<'a>> {
        self.0.iter().find(|e| e.ext_type == ext_type)
    }

    /// The first extension of `T`'s type, decoded.
    pub fn get<T: ExtBody>(&self) -> Option<Result<T>> {
        self.find(T::EXT_TYPE).map(|e| T::decode_body(&e.body))
    }

    /// Appends a typed extension.
    pub fn push<T: ExtBody>(&mut self, body: &T) -> Result<()> {
        self.0.push(Extension::from_typed(body)?);
        Ok(())
    }

    /// Converts into a form that owns its bytes.
    pub fn into_owned(self) -> ExtList<'static> {
        ExtList(self.0.into_iter().map(Extension::into_owned).collect())
    }
}

/// Congestion control request (proposal 324 §10.3, §9.2): type `[01]`, empty body.
///
/// Sent by a client in its ntor-v3 message, or in the encrypted part of INTRODUCE1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CcRequest;

impl ExtBody for CcRequest {
    const EXT_TYPE: u8 = 0x01;
    fn decode_body(_body: &[u8]) -> Result<Self> {
        Ok(CcRequest)
    }
    fn encode_body<W: Writer + ?Sized>(&self, _w: &mut W) -> Result<()> {
        Ok(())
    }
}

/// Congestion control response (proposal 324 §10.3): type `[02]`, `sendme_inc` (1 byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CcResponse {
    /// The exit's `cc_sendme_inc`.
    pub sendme_inc: u8,
}

impl ExtBody for CcResponse {
    const EXT_TYPE: u8 = 0x02;
    fn decode_body(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let sendme_inc = r.u8("sendme_inc")?;
        Ok(CcResponse { sendme_inc })
    }
    fn encode_body<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_u8(self.sendme_inc);
        Ok(())
    }
}

/// A DoS parameter type of the ESTABLISH_INTRO DoS extension (rend-spec-v3 §3.1.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DosParamType(pub u8);

impl DosParamType {
    /// `[01]` DOS_INTRODUCE2_RATE_PER_SEC.
    pub const INTRODUCE2_RATE_PER_SEC: DosParamType = DosParamType(1);
    /// `[02]` DOS_INTRODUCE2_BURST_PER_SEC.
    pub const INTRODUCE2_BURST_PER_SEC: DosParamType = DosParamType(2);
}

/// The Denial-of-Service parameters extension of ESTABLISH_INTRO (rend-spec-v3 §3.1.1.1):
/// type `[01]`, `N_PARAMS (1)` then `N_PARAMS` times `PARAM_TYPE (1) PARAM_VALUE (8)`.
///
/// Values are kept as sent; range checks (0..=2147483647) are the receiver's policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DosParams(pub Vec<(DosParamType, u64)>);

impl ExtBody for DosParams {
    const EXT_TYPE: u8 = 0x01;
    fn decode_body(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let n = r.u8("N_PARAMS")? as usize;
        let mut v = Vec::with_capacity(n.min(r.remaining() / 9));
        for _ in 0..n {
            let t = r.u8("PARAM_TYPE")?;
            let val = r.u64("PARAM_VALUE")?;
            v.push((DosParamType(t), val));
        }
        r.expect_end("DoS parameters")?;
        Ok(DosParams(v))
    }
    fn encode_body<W: Writer + ?Sized>(&self, w: &mut W) -> Result<()> {
        w.write_u8(len_u8("N_PARAMS", self.0.len())?);
        for (t, v) in &self.0 {
            w.write_u8(t.0);
            w.write_u64(*v);
        }
        Ok(())
    }
}

/// Checks that a decoded value equals what the spec requires; a helper for version bytes.
pub(crate) fn expect_value(field: &'static str, got: u64, want: u64) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::BadValue { field, value: got })
    }
}
