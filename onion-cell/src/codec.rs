//! Channel cell framing: fixed and variable-length cells, circuit id width, the VERSIONS
//! special case (tor-spec §3 "Cell Packet format", §4.1 "Negotiating versions").
//!
//! ```text
//! fixed-length:    CircID [2 or 4] Command [1] Body [509]
//! variable-length: CircID [2 or 4] Command [1] Length [2] Body [Length]
//! ```
//!
//! Before a link protocol is negotiated, circuit ids are 2 bytes and commands 7 and
//! 128 and above are variable-length ([`CellFormat::UNNEGOTIATED`]): this is how the first
//! VERSIONS cell is read. Once VERSIONS cells have been exchanged, switch the format with
//! [`CellDecoder::set_format`]; cells already buffered but not yet returned are then read
//! with the new format, which is exactly what the spec requires.
//!
//! Two ways to decode:
//! * [`decode_cell`] on a slice: returns the cell (borrowing from the slice) and its
//!   length, or [`DecodeError::NeedMore`] if the slice holds only a prefix of a cell;
//! * [`CellDecoder`], which accepts arbitrary chunks (as TLS delivers them) and keeps
//!   partial data between calls.
//!
//! Encoding ([`encode_cell`], [`encode_cell_into`]) writes straight into a caller's
//! `Vec<u8>` or `&mut [u8]`.

use crate::chancell::{ChanCell, ChanCmd, ChanMsg, CELL_BODY_LEN};
use crate::circid::CircId;
use crate::error::{Error, Result};
use crate::writer::{len_u16, SliceWriter, Writer};
use alloc::vec::Vec;

/// The largest encoded cell: a variable-length cell with a 4-byte circuit id and a
/// 65535-byte body.
pub const MAX_CELL_LEN: usize = 4 + 1 + 2 + 65535;

/// How cells are framed on a channel: a function of the link protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellFormat {
    version: u16,
}

impl CellFormat {
    /// Before the VERSIONS exchange: 2-byte circuit ids; VERSIONS, VPADDING and AUTHORIZE
    /// may be received (tor-spec §4: the first cell may be VERSIONS, VPADDING or AUTHORIZE).
    pub const UNNEGOTIATED: CellFormat = CellFormat { version: 0 };

    /// The format for a negotiated link protocol `version` (1 and above).
    pub fn for_version(version: u16) -> Result<Self> {
        if version == 0 {
            return Err(Error::BadValue {
                field: "link protocol version",
                value: 0,
            });
        }
        Ok(CellFormat { version })
    }

    /// The negotiated link protocol version, or `None` before negotiation.
    pub fn version(self) -> Option<u16> {
        (self.version != 0).then_some(self.version)
    }

    /// CIRCID_LEN: 2 before negotiation and for versions 1–3, 4 from version 4 on.
    pub fn circ_id_len(self) -> usize {
        if self.version >= 4 {
            4
        } else {
            2
        }
    }

    /// The length of a fixed-length cell (512 or 514 bytes).
    pub fn fixed_cell_len(self) -> usize {
        self.circ_id_len() + 1 + CELL_BODY_LEN
    }

    /// Whether `cmd` uses the variable-length format: VERSIONS on version 2, VERSIONS and
    /// commands >= 128 on version 3 and later (and before negotiation); none on version 1.
    pub fn is_var_len(self, cmd: ChanCmd) -> bool {
        match self.version {
            1 => false,
            2 => cmd == ChanCmd::VERSIONS,
            _ => cmd.is_var_len_v3(),
        }
    }
}

/// Why [`decode_cell`] did not return a cell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is a valid prefix of a cell; at least `need` more bytes are required.
    #[error("need {need} more byte(s)")]
    NeedMore {
        /// Minimum number of additional bytes before a cell can be returned.
        need: usize,
    },
    /// The cell is complete but malformed.
    #[error("malformed cell: {0}")]
    Malformed(#[from] Error),
}

impl DecodeError {
    /// Who is to blame: a malformed cell is the peer's fault, as its [`Error::kind`] says;
    /// `NeedMore` is not a failure while the connection is open, and a connection that ends
    /// there broke in the middle of a cell ([`ErrorKind::Network`](crate::ErrorKind::Network),
    /// as a directory response cut short is).
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            DecodeError::NeedMore { .. } => crate::error::ErrorKind::Network,
            DecodeError::Malformed(e) => e.kind(),
        }
    }
}

/// Decodes one cell from the front of `buf`.
///
/// On success returns the cell, borrowing its payload from `buf`, and the number of bytes
/// it occupied. A malformed cell body is reported as [`DecodeError::Malformed`]; a caller
/// that wants to skip it can use [`cell_len`] to find its length.
#[inline]
pub fn decode_cell(
    format: CellFormat,
    buf: &[u8],
) -> core::result::Result<(ChanCell<'_>, usize), DecodeError> {
    let total = cell_len(format, buf)?;
    let cl = format.circ_id_len();
    let circ_id = CircId::new(if cl == 4 {
        u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])
    } else {
        u32::from(u16::from_be_bytes([buf[0], buf[1]]))
    });
    let cmd = ChanCmd(buf[cl]);
    let body_start = if format.is_var_len(cmd) {
        cl + 3
    } else {
        cl + 1
    };
    let body = buf
        .get(body_start..total)
        .ok_or(DecodeError::NeedMore { need: 1 })?;
    let msg = ChanMsg::decode(cmd, body)?;
    Ok((ChanCell { circ_id, msg }, total))
}

/// The total length of the cell at the front of `buf`, or how many more bytes are needed
/// to know it and to hold the whole cell.
#[inline]
pub fn cell_len(format: CellFormat, buf: &[u8]) -> core::result::Result<usize, DecodeError> {
    let cl = format.circ_id_len();
    let Some(&cmd) = buf.get(cl) else {
        return Err(DecodeError::NeedMore {
            need: cl + 1 - buf.len(),
        });
    };
    let total = if format.is_var_len(ChanCmd(cmd)) {
        match buf.get(cl + 1..cl + 3) {
            Some(l) => cl + 3 + u16::from_be_bytes([l[0], l[1]]) as usize,
            None => {
                return Err(DecodeError::NeedMore {
                    need: cl + 3 - buf.len(),
                })
            }
        }
    } else {
        format.fixed_cell_len()
    };
    if buf.len() < total {
        Err(DecodeError::NeedMore {
            need: total - buf.len(),
        })
    } else {
        Ok(total)
    }
}

/// Encodes `cell` and appends it to `w` (a `Vec<u8>` or a [`SliceWriter`]).
///
/// Fixed-length cells are padded with zeros to 509 body bytes (tor-spec §3: "Padding bytes
/// SHOULD be set to NUL"; RELAY bodies are already 509 bytes and carry their own padding).
/// Fails if the circuit id does not fit the format's width, if a fixed-length body exceeds
/// 509 bytes, or if a variable-length body exceeds 65535 bytes.
pub fn encode_cell<W: Writer + ?Sized>(
    format: CellFormat,
    cell: &ChanCell<'_>,
    w: &mut W,
) -> Result<()> {
    let id = cell.circ_id.get();
    if format.circ_id_len() == 4 {
        w.write_u32(id);
    } else {
        let id16 = u16::try_from(id).map_err(|_| Error::BadValue {
            field: "CircID",
            value: u64::from(id),
        })?;
        w.write_u16(id16);
    }
    let cmd = cell.msg.cmd();
    w.write_u8(cmd.0);
    if format.is_var_len(cmd) {
        let at = w.position();
        w.write_u16(0);
        cell.msg.encode_body(w)?;
        let len = len_u16("cell Length", w.position() - at - 2)?;
        w.patch(at, &len.to_be_bytes());
    } else {
        let start = w.position();
        cell.msg.encode_body(w)?;
        let used = w.position() - start;
        if used > CELL_BODY_LEN {
            return Err(Error::TooLong {
                field: "fixed-length cell body",
                len: used,
                max: CELL_BODY_LEN,
            });
        }
        w.write_zeros(CELL_BODY_LEN - used);
    }
    Ok(())
}

/// Encodes `cell` into the front of `out`; returns the number of bytes written.
pub fn encode_cell_into(format: CellFormat, cell: &ChanCell<'_>, out: &mut [u8]) -> Result<usize> {
    let mut w = SliceWriter::new(out);
    encode_cell(format, cell, &mut w)?;
    w.finish()
}

/// A streaming decoder: push bytes as they arrive, pull complete cells.
///
/// The decoder buffers only what it is given; it holds at most one partial cell plus the
/// complete cells not yet pulled. Callers bound memory by pulling cells (with
/// [`CellDecoder::next_cell`]) after every push, which keeps the buffer under
/// [`MAX_CELL_LEN`] plus the size of one pushed chunk.
#[derive(Debug, Clone)]
pub struct CellDecoder {
    format: CellFormat,
    buf: Vec<u8>,
    start: usize,
}

impl CellDecoder {
    /// A decoder reading cells of `format` (use [`CellFormat::UNNEGOTIATED`] on a fresh
    /// channel).
    pub fn new(format: CellFormat) -> Self {
        CellDecoder {
            format,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The current format.
    pub fn format(&self) -> CellFormat {
        self.format
    }

    /// Switches format (after VERSIONS negotiation); applies to cells not yet returned.
    pub fn set_format(&mut self, format: CellFormat) {
        self.format = format;
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Number of bytes buffered and not yet returned as cells.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Returns the next complete cell, `Ok(None)` if more bytes are needed.
    ///
    /// A malformed cell is consumed (framing is intact, so the stream stays in sync) and
    /// reported as an error; the caller decides whether to close the channel.
    pub fn next_cell(&mut self) -> Result<Option<ChanCell<'_>>> {
        let avail = self.buf.get(self.start..).unwrap_or(&[]);
        let len = match cell_len(self.format, avail) {
            Ok(l) => l,
            Err(DecodeError::NeedMore { .. }) => return Ok(None),
            Err(DecodeError::Malformed(e)) => return Err(e),
        };
        let begin = self.start;
        self.start += len;
        let bytes = self.buf.get(begin..begin + len).unwrap_or(&[]);
        match decode_cell(self.format, bytes) {
            Ok((cell, _)) => Ok(Some(cell)),
            Err(DecodeError::Malformed(e)) => Err(e),
            Err(DecodeError::NeedMore { need }) => Err(Error::Truncated {
                field: "cell",
                need,
            }),
        }
    }
}
