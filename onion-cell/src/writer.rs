//! Encoding into caller-owned buffers, without intermediate allocation.
//!
//! Encoders are generic over [`Writer`], which is implemented for `Vec<u8>` (grows as
//! needed) and for [`SliceWriter`] (a caller's `&mut [u8]`, never reallocated). Length
//! fields are written as placeholders and patched once the length is known, so that no
//! message is encoded twice.

use crate::error::{Error, Result};
use alloc::vec::Vec;

/// A sink for encoded bytes.
pub trait Writer {
    /// Appends `bytes`.
    fn write_all(&mut self, bytes: &[u8]);
    /// Appends `n` zero bytes.
    fn write_zeros(&mut self, n: usize);
    /// Number of bytes written so far.
    fn position(&self) -> usize;
    /// Overwrites already-written bytes at `pos` (used to patch length fields).
    fn patch(&mut self, pos: usize, bytes: &[u8]);

    /// Appends one byte.
    fn write_u8(&mut self, v: u8) {
        self.write_all(&[v]);
    }
    /// Appends a big-endian 16-bit integer.
    fn write_u16(&mut self, v: u16) {
        self.write_all(&v.to_be_bytes());
    }
    /// Appends a big-endian 32-bit integer.
    fn write_u32(&mut self, v: u32) {
        self.write_all(&v.to_be_bytes());
    }
    /// Appends a big-endian 64-bit integer.
    fn write_u64(&mut self, v: u64) {
        self.write_all(&v.to_be_bytes());
    }
}

impl Writer for Vec<u8> {
    fn write_all(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn write_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
    fn position(&self) -> usize {
        self.len()
    }
    fn patch(&mut self, pos: usize, bytes: &[u8]) {
        if let Some(dst) = self.get_mut(pos..pos.saturating_add(bytes.len())) {
            dst.copy_from_slice(bytes);
        }
    }
}

/// A [`Writer`] over a caller's fixed slice.
///
/// Writing past the end does not panic: the writer remembers the overflow and
/// [`SliceWriter::finish`] reports [`Error::BufferTooSmall`].
#[derive(Debug)]
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> SliceWriter<'a> {
    /// Writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter {
            buf,
            pos: 0,
            overflow: false,
        }
    }

    /// Returns the number of bytes written, or an error if the slice was too small.
    pub fn finish(self) -> Result<usize> {
        if self.overflow {
            Err(Error::BufferTooSmall { need: self.pos })
        } else {
            Ok(self.pos)
        }
    }
}

impl Writer for SliceWriter<'_> {
    #[inline]
    fn write_all(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => dst.copy_from_slice(bytes),
            None => self.overflow = true,
        }
        self.pos = end;
    }
    fn write_zeros(&mut self, n: usize) {
        let end = self.pos.saturating_add(n);
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => dst.fill(0),
            None => self.overflow = true,
        }
        self.pos = end;
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn patch(&mut self, pos: usize, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(pos..pos.saturating_add(bytes.len())) {
            dst.copy_from_slice(bytes);
        }
    }
}

/// Writes a one-byte length placeholder, runs `body`, then patches the length.
///
/// Fails with [`Error::TooLong`] if the body is longer than 255 bytes.
pub(crate) fn with_u8_len<W: Writer + ?Sized>(
    w: &mut W,
    field: &'static str,
    body: impl FnOnce(&mut W) -> Result<()>,
) -> Result<()> {
    let at = w.position();
    w.write_u8(0);
    body(w)?;
    let len = w.position() - at - 1;
    let v = u8::try_from(len).map_err(|_| Error::TooLong {
        field,
        len,
        max: u8::MAX as usize,
    })?;
    w.patch(at, &[v]);
    Ok(())
}

/// Converts a count or length to `u8`, or reports which field overflowed.
pub(crate) fn len_u8(field: &'static str, len: usize) -> Result<u8> {
    u8::try_from(len).map_err(|_| Error::TooLong {
        field,
        len,
        max: u8::MAX as usize,
    })
}

/// Converts a count or length to `u16`, or reports which field overflowed.
pub(crate) fn len_u16(field: &'static str, len: usize) -> Result<u16> {
    u16::try_from(len).map_err(|_| Error::TooLong {
        field,
        len,
        max: u16::MAX as usize,
    })
}
