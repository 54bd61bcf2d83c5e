//! The relay cell body: header, message and padding (tor-spec §6.1 "Relay cells").
//!
//! ```text
//! Relay command [1] 'Recognized' [2] StreamID [2] Digest [4] Length [2]
//! Data [Length] Padding [509 - 11 - Length]
//! ```
//!
//! [`RelayCellBody`] is the 509-byte plaintext a circuit encrypts and decrypts in place:
//! the relay crypto (in `onion-crypto`/`onion-circuit`) sets `recognized` and `digest`;
//! this module fills in the rest. Padding follows the spec's recommendation (proposal
//! 289): four zero bytes after the data, then random bytes, drawn from the caller's RNG.

use crate::chancell::CELL_BODY_LEN;
use crate::error::{Error, Result};
use crate::relaymsg::{RelayCmd, RelayMsg, MAX_RELAY_DATA_LEN};
use crate::writer::{SliceWriter, Writer};
use core::fmt;
use rand_core::RngCore;

/// Length of the relay header (command, recognized, stream id, digest, length).
pub const RELAY_HEADER_LEN: usize = 11;

/// Offset of the 4-byte digest field in the relay body.
pub const DIGEST_OFFSET: usize = 5;

/// A stream id (tor-spec §6.1). Zero means "the circuit itself" (control messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId(pub u16);

impl StreamId {
    /// The id of circuit-level (control) messages.
    pub const CONTROL: StreamId = StreamId(0);

    /// True for the control id 0.
    pub fn is_control(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A decoded relay cell: stream id and message (the message borrows from the body).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayCell<'a> {
    /// The stream.
    pub stream_id: StreamId,
    /// The message.
    pub msg: RelayMsg<'a>,
}

impl<'a> RelayCell<'a> {
    /// Builds a relay cell.
    pub fn new(stream_id: StreamId, msg: RelayMsg<'a>) -> Self {
        RelayCell { stream_id, msg }
    }

    /// Decodes a plaintext relay body: header, then the message.
    ///
    /// Fails if Length exceeds 498 or the message is malformed. The `recognized` and
    /// `digest` fields are not checked here: that is the relay crypto's job.
    pub fn decode(body: &'a [u8; CELL_BODY_LEN]) -> Result<Self> {
        let cmd = RelayCmd(body[0]);
        let stream_id = StreamId(u16::from_be_bytes([body[3], body[4]]));
        let len = u16::from_be_bytes([body[9], body[10]]) as usize;
        let data = body
            .get(RELAY_HEADER_LEN..RELAY_HEADER_LEN + len)
            .filter(|_| len <= MAX_RELAY_DATA_LEN)
            .ok_or(Error::BadLength {
                field: "relay Length",
                len,
            })?;
        Ok(RelayCell {
            stream_id,
            msg: RelayMsg::decode(cmd, data)?,
        })
    }

    /// Encodes into a fresh plaintext relay body, with `recognized` and `digest` zero
    /// and the padding of tor-spec §6.1 drawn from `rng`.
    ///
    /// A thin convenience wrapper over [`RelayCell::encode_into`] for tests and one-off
    /// cells: it zeroes a 509-byte body and returns it by value, which costs about three
    /// times the encoding itself for a full DATA message (copies of the body, not work).
    /// Code that sends many cells encodes into the buffer the cell will travel in.
    pub fn encode<R: RngCore + ?Sized>(&self, rng: &mut R) -> Result<RelayCellBody> {
        let mut body = RelayCellBody::ZERO;
        self.encode_into(&mut body.0, rng)?;
        Ok(body)
    }

    /// Encodes into `out`, overwriting all 509 bytes: header with `recognized` and
    /// `digest` zero, the message, then the padding of tor-spec §6.1 drawn from `rng`.
    /// This is the encoder; [`RelayCell::encode`] wraps it.
    pub fn encode_into<R: RngCore + ?Sized>(
        &self,
        out: &mut [u8; CELL_BODY_LEN],
        rng: &mut R,
    ) -> Result<()> {
        encode_relay(self.stream_id, &self.msg, out, rng)
    }
}

/// Encodes `msg` on `stream_id` into `out`: header with `recognized` and `digest` zero,
/// the message, then padding.
fn encode_relay<R: RngCore + ?Sized>(
    stream_id: StreamId,
    msg: &RelayMsg<'_>,
    out: &mut [u8; CELL_BODY_LEN],
    rng: &mut R,
) -> Result<()> {
    let (hdr, rest) = out.split_at_mut(RELAY_HEADER_LEN);
    let len = match msg {
        // Fast path for the hot message: one copy, no writer.
        RelayMsg::Data(d) => match rest.get_mut(..d.data.len()) {
            Some(dst) => {
                dst.copy_from_slice(&d.data);
                d.data.len()
            }
            None => usize::MAX,
        },
        msg => {
            let mut w = SliceWriter::new(rest);
            msg.encode_body(&mut w)?;
            w.position()
        }
    };
    if len > MAX_RELAY_DATA_LEN {
        return Err(Error::TooLong {
            field: "relay message",
            len: msg.to_body_vec().map_or(len, |v| v.len()),
            max: MAX_RELAY_DATA_LEN,
        });
    }
    hdr[0] = msg.cmd().0;
    hdr[1..5].copy_from_slice(&[0, 0, (stream_id.0 >> 8) as u8, stream_id.0 as u8]);
    hdr[5..9].fill(0);
    hdr[9..11].copy_from_slice(&(len as u16).to_be_bytes());
    fill_padding(rest, len, rng);
    Ok(())
}

/// Writes the tor-spec §6.1 padding after `len` data bytes of `data_area` (498 bytes):
/// four zero bytes, then random bytes from `rng`.
fn fill_padding<R: RngCore + ?Sized>(data_area: &mut [u8], len: usize, rng: &mut R) {
    if let Some(pad) = data_area.get_mut(len..) {
        let zeros = pad.len().min(4);
        let (z, random) = pad.split_at_mut(zeros);
        z.fill(0);
        if !random.is_empty() {
            rng.fill_bytes(random);
        }
    }
}

/// A 509-byte relay cell body (plaintext or ciphertext), owned and in-place mutable.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelayCellBody(pub [u8; CELL_BODY_LEN]);

impl RelayCellBody {
    /// An all-zero body.
    pub const ZERO: RelayCellBody = RelayCellBody([0; CELL_BODY_LEN]);

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; CELL_BODY_LEN] {
        &self.0
    }

    /// The bytes, mutable (for in-place encryption).
    pub fn as_mut_bytes(&mut self) -> &mut [u8; CELL_BODY_LEN] {
        &mut self.0
    }

    /// Relay command.
    pub fn cmd(&self) -> RelayCmd {
        RelayCmd(self.0[0])
    }

    /// 'Recognized' (zero in a plaintext body destined to us).
    pub fn recognized(&self) -> u16 {
        u16::from_be_bytes([self.0[1], self.0[2]])
    }

    /// Stream id.
    pub fn stream_id(&self) -> StreamId {
        StreamId(u16::from_be_bytes([self.0[3], self.0[4]]))
    }

    /// Digest field.
    pub fn digest(&self) -> [u8; 4] {
        [self.0[5], self.0[6], self.0[7], self.0[8]]
    }

    /// Sets the digest field.
    pub fn set_digest(&mut self, d: [u8; 4]) {
        self.0[DIGEST_OFFSET..DIGEST_OFFSET + 4].copy_from_slice(&d);
    }

    /// Sets the 'recognized' field.
    pub fn set_recognized(&mut self, v: u16) {
        self.0[1..3].copy_from_slice(&v.to_be_bytes());
    }

    /// Length field.
    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.0[9], self.0[10]])
    }

    /// The `Length` data bytes; fails if Length exceeds 498.
    pub fn data(&self) -> Result<&[u8]> {
        let len = self.length() as usize;
        self.0
            .get(RELAY_HEADER_LEN..RELAY_HEADER_LEN + len)
            .filter(|_| len <= MAX_RELAY_DATA_LEN)
            .ok_or(Error::BadLength {
                field: "relay Length",
                len,
            })
    }

    /// Decodes the message, borrowing from this body.
    pub fn decode(&self) -> Result<RelayCell<'_>> {
        RelayCell::decode(&self.0)
    }
}

impl From<[u8; CELL_BODY_LEN]> for RelayCellBody {
    fn from(b: [u8; CELL_BODY_LEN]) -> Self {
        RelayCellBody(b)
    }
}

impl fmt::Debug for RelayCellBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayCellBody")
            .field("cmd", &self.cmd())
            .field("recognized", &self.recognized())
            .field("stream_id", &self.stream_id())
            .field("digest", &self.digest())
            .field("length", &self.length())
            .finish()
    }
}
