//! A zero-copy cursor over received bytes (tor-spec §0.1.1: all integers big-endian).
//!
//! Every read names the field it reads, so that a short input turns into a precise
//! [`Error::Truncated`] instead of a panic. Slices returned borrow from the input.

use crate::error::{Error, Result};

/// A cursor over a borrowed byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Number of bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Number of bytes read so far (the offset of the next byte).
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Reads `n` bytes of `field`, borrowing them from the input.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match rest.get(..n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Error::Truncated {
                field,
                need: n - rest.len(),
            }),
        }
    }

    /// Reads a fixed-size array of `field`, borrowing it from the input.
    pub fn take_array<const N: usize>(&mut self, field: &'static str) -> Result<&'a [u8; N]> {
        let s = self.take(N, field)?;
        s.try_into().map_err(|_| Error::BadLength {
            field,
            len: s.len(),
        })
    }

    /// Reads a fixed-size array of `field` by value.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        self.take_array::<N>(field).copied()
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a big-endian 16-bit integer.
    pub fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian 32-bit integer.
    pub fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian 64-bit integer.
    pub fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Reads everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        rest
    }

    /// Looks at the next byte without consuming it.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads a NUL-terminated string of `field`; returns it without the NUL, which is consumed.
    pub fn take_nul_terminated(&mut self, field: &'static str) -> Result<&'a [u8]> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(Error::BadString { field }),
        }
    }

    /// Fails with [`Error::TrailingBytes`] unless every byte was read.
    pub fn expect_end(&self, field: &'static str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes { field })
        }
    }
}
