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

/// Offset of the 1-byte relay command in the relay body (tor-spec §6.1).
pub const CMD_OFFSET: usize = 0;

/// Offset of the 2-byte 'Recognized' field in the relay body (tor-spec §6.1).
pub const RECOGNIZED_OFFSET: usize = 1;

/// Offset of the 2-byte StreamID field in the relay body (tor-spec §6.1).
pub const STREAM_ID_OFFSET: usize = 3;

/// Offset of the 4-byte digest field in the relay body.
pub const DIGEST_OFFSET: usize = 5;

/// Offset of the 2-byte Length field in the relay body (tor-spec §6.1).
pub const LENGTH_OFFSET: usize = 9;

/// A stream id (tor-spec §6.1): never zero. The header's StreamID field is zero for
/// messages about the circuit itself; that field is an `Option<StreamId>` here
/// ([`RelayCell::stream_id`], [`RelayCellBody::stream_id`]), `None` for zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(core::num::NonZeroU16);

impl StreamId {
    /// The id `v`, or `None` for zero (reserved for circuit-level messages).
    pub const fn new(v: u16) -> Option<Self> {
        match core::num::NonZeroU16::new(v) {
            Some(n) => Some(StreamId(n)),
            None => None,
        }
    }

    /// The id as carried in the relay header.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// The header's StreamID field for `id`: zero for `None` (a circuit-level message).
    pub fn to_field(id: Option<StreamId>) -> u16 {
        id.map_or(0, StreamId::get)
    }
}

impl From<StreamId> for u16 {
    fn from(id: StreamId) -> u16 {
        id.get()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The StreamID field of a relay body: `None` for zero (a circuit-level message).
pub fn read_stream_id(body: &[u8; CELL_BODY_LEN]) -> Option<StreamId> {
    StreamId::new(u16::from_be_bytes([
        body[STREAM_ID_OFFSET],
        body[STREAM_ID_OFFSET + 1],
    ]))
}

/// The Length field of a relay body, unchecked.
pub fn read_length(body: &[u8; CELL_BODY_LEN]) -> u16 {
    u16::from_be_bytes([body[LENGTH_OFFSET], body[LENGTH_OFFSET + 1]])
}

/// The Length field of a relay body, checked: a length beyond the 498 data bytes a cell
/// has is malformed (tor-spec §6.1).
pub fn read_data_len(body: &[u8; CELL_BODY_LEN]) -> Result<usize> {
    let len = usize::from(read_length(body));
    if len > MAX_RELAY_DATA_LEN {
        return Err(Error::BadLength {
            field: "relay Length",
            len,
        });
    }
    Ok(len)
}

/// Writes a RELAY_DATA header and up to 498 bytes of `data` into `out`, with `recognized`
/// and `digest` zero and the padding untouched (see [`pad_after_data`]); returns how many
/// bytes of `data` it took. This is the DATA fast path: no [`RelayMsg`] in between.
pub fn encode_data_into(
    out: &mut [u8; CELL_BODY_LEN],
    stream_id: Option<StreamId>,
    data: &[u8],
) -> usize {
    let n = data.len().min(MAX_RELAY_DATA_LEN);
    write_header(out, RelayCmd::DATA, stream_id, n);
    out[RELAY_HEADER_LEN..RELAY_HEADER_LEN + n].copy_from_slice(&data[..n]);
    n
}

/// Fills the padding of a plaintext relay body after its Length data bytes (tor-spec
/// §6.1: four zero bytes, then random bytes from `rng`). A Length beyond 498 is taken as 498.
pub fn pad_after_data<R: RngCore + ?Sized>(body: &mut [u8; CELL_BODY_LEN], rng: &mut R) {
    let len = usize::from(read_length(body)).min(MAX_RELAY_DATA_LEN);
    fill_padding(&mut body[RELAY_HEADER_LEN..], len, rng);
}

/// Writes the 11-byte header: command, `recognized` zero, stream id, `digest` zero, Length.
fn write_header(
    out: &mut [u8; CELL_BODY_LEN],
    cmd: RelayCmd,
    stream_id: Option<StreamId>,
    len: usize,
) {
    out[CMD_OFFSET] = cmd.0;
    out[RECOGNIZED_OFFSET..STREAM_ID_OFFSET].fill(0);
    out[STREAM_ID_OFFSET..DIGEST_OFFSET]
        .copy_from_slice(&StreamId::to_field(stream_id).to_be_bytes());
    out[DIGEST_OFFSET..LENGTH_OFFSET].fill(0);
    out[LENGTH_OFFSET..RELAY_HEADER_LEN].copy_from_slice(&(len as u16).to_be_bytes());
}

/// A decoded relay cell: stream id and message (the message borrows from the body).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayCell<'a> {
    /// The stream, or `None` for a circuit-level message (StreamID zero).
    pub stream_id: Option<StreamId>,
    /// The message.
    pub msg: RelayMsg<'a>,
}

impl<'a> RelayCell<'a> {
    /// Builds a relay cell.
    pub fn new(stream_id: Option<StreamId>, msg: RelayMsg<'a>) -> Self {
        RelayCell { stream_id, msg }
    }

    /// Decodes a plaintext relay body: header, then the message.
    ///
    /// Fails if Length exceeds 498 or the message is malformed. The `recognized` and
    /// `digest` fields are not checked here: that is the relay crypto's job.
    pub fn decode(body: &'a [u8; CELL_BODY_LEN]) -> Result<Self> {
        let cmd = RelayCmd(body[CMD_OFFSET]);
        let len = read_data_len(body)?;
        let data = &body[RELAY_HEADER_LEN..RELAY_HEADER_LEN + len];
        Ok(RelayCell {
            stream_id: read_stream_id(body),
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
    stream_id: Option<StreamId>,
    msg: &RelayMsg<'_>,
    out: &mut [u8; CELL_BODY_LEN],
    rng: &mut R,
) -> Result<()> {
    let rest = &mut out[RELAY_HEADER_LEN..];
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
    fill_padding(rest, len, rng);
    write_header(out, msg.cmd(), stream_id, len);
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
        RelayCmd(self.0[CMD_OFFSET])
    }

    /// 'Recognized' (zero in a plaintext body destined to us).
    pub fn recognized(&self) -> u16 {
        u16::from_be_bytes([self.0[RECOGNIZED_OFFSET], self.0[RECOGNIZED_OFFSET + 1]])
    }

    /// Stream id, `None` for a circuit-level message (StreamID zero).
    pub fn stream_id(&self) -> Option<StreamId> {
        read_stream_id(&self.0)
    }

    /// Digest field.
    pub fn digest(&self) -> [u8; 4] {
        let d = &self.0[DIGEST_OFFSET..LENGTH_OFFSET];
        [d[0], d[1], d[2], d[3]]
    }

    /// Sets the digest field.
    pub fn set_digest(&mut self, d: [u8; 4]) {
        self.0[DIGEST_OFFSET..DIGEST_OFFSET + 4].copy_from_slice(&d);
    }

    /// Sets the 'recognized' field.
    pub fn set_recognized(&mut self, v: u16) {
        self.0[RECOGNIZED_OFFSET..STREAM_ID_OFFSET].copy_from_slice(&v.to_be_bytes());
    }

    /// Length field.
    pub fn length(&self) -> u16 {
        read_length(&self.0)
    }

    /// The `Length` data bytes; fails if Length exceeds 498.
    pub fn data(&self) -> Result<&[u8]> {
        let len = read_data_len(&self.0)?;
        Ok(&self.0[RELAY_HEADER_LEN..RELAY_HEADER_LEN + len])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relaymsg::Data;

    /// An RNG of zeros, so that padding is reproducible.
    struct Zeros;
    impl RngCore for Zeros {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.fill(0)
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> core::result::Result<(), rand_core::Error> {
            d.fill(0);
            Ok(())
        }
    }

    #[test]
    fn stream_id_zero_is_the_circuit() {
        assert_eq!(StreamId::new(0), None);
        let id = StreamId::new(0x1234).expect("nonzero");
        assert_eq!((id.get(), u16::from(id)), (0x1234, 0x1234));
        assert_eq!(StreamId::to_field(None), 0);
        assert_eq!(StreamId::to_field(Some(id)), 0x1234);
        // A circuit-level message decodes with no stream; a stream message with its id.
        let body = RelayCell::new(None, RelayMsg::Drop)
            .encode(&mut Zeros)
            .unwrap();
        assert_eq!(body.as_bytes()[STREAM_ID_OFFSET..DIGEST_OFFSET], [0, 0]);
        assert_eq!(body.stream_id(), None);
        assert_eq!(body.decode().unwrap().stream_id, None);
        let body = RelayCell::new(Some(id), RelayMsg::Drop)
            .encode(&mut Zeros)
            .unwrap();
        assert_eq!(
            body.as_bytes()[STREAM_ID_OFFSET..DIGEST_OFFSET],
            [0x12, 0x34]
        );
        assert_eq!(body.decode().unwrap().stream_id, Some(id));
    }

    /// The DATA fast path writes exactly what the general encoder writes (tor-spec §6.1
    /// layout: command, recognized, stream id, digest, length, data, padding).
    #[test]
    fn data_fast_path_matches_the_encoder() {
        let id = StreamId::new(7);
        for n in [0, 1, 200, MAX_RELAY_DATA_LEN - 3, MAX_RELAY_DATA_LEN] {
            let data = vec![0xab; n];
            let want = RelayCell::new(id, RelayMsg::Data(Data::new(&data).unwrap()))
                .encode(&mut Zeros)
                .unwrap();
            let mut got = [0xffu8; CELL_BODY_LEN];
            assert_eq!(encode_data_into(&mut got, id, &data), n);
            pad_after_data(&mut got, &mut Zeros);
            assert_eq!(got, want.0, "{n} bytes");
            assert_eq!(read_stream_id(&got), id);
            assert_eq!(read_data_len(&got).unwrap(), n);
            assert_eq!(got[CMD_OFFSET], RelayCmd::DATA.0);
            assert_eq!(got[RECOGNIZED_OFFSET..STREAM_ID_OFFSET], [0, 0]);
            assert_eq!(got[DIGEST_OFFSET..LENGTH_OFFSET], [0; 4]);
        }
        // More than a cell holds: the first 498 bytes are taken.
        let mut got = [0u8; CELL_BODY_LEN];
        assert_eq!(
            encode_data_into(&mut got, id, &[1; 600]),
            MAX_RELAY_DATA_LEN
        );
        // A Length beyond the cell is malformed, not a panic.
        got[LENGTH_OFFSET..RELAY_HEADER_LEN].copy_from_slice(&499u16.to_be_bytes());
        assert!(read_data_len(&got).is_err());
        pad_after_data(&mut got, &mut Zeros);
    }
}
