//! Errors of the cell and message codecs.
//!
//! Every decoding error names the wire field that was wrong (the field names follow the
//! spec's own names, e.g. `"CREATE2 HLEN"`), so that a log line tells a reader exactly
//! where a peer's bytes went wrong. The streaming channel decoder separates "the bytes
//! seen so far are a valid prefix, wait for more" ([`crate::codec::DecodeError::NeedMore`])
//! from "these bytes are malformed" ([`Error`]).

/// A malformed, truncated or unencodable cell or message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended in the middle of `field`; `need` more bytes were required.
    #[error("truncated {field}: {need} more byte(s) needed")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many more bytes the field needed.
        need: usize,
    },
    /// A length (a length field, or the length of a fixed-size field) is invalid.
    #[error("bad length for {field}: {len}")]
    BadLength {
        /// The field whose length is wrong.
        field: &'static str,
        /// The offending length.
        len: usize,
    },
    /// A field holds a value the spec forbids.
    #[error("bad value for {field}: {value}")]
    BadValue {
        /// The field holding the value.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// A text field is not valid (missing NUL terminator, not UTF-8, bad syntax).
    #[error("bad string in {field}")]
    BadString {
        /// The text field.
        field: &'static str,
    },
    /// Bytes remained after `field` where the spec forbids extra bytes.
    #[error("trailing bytes after {field}")]
    TrailingBytes {
        /// The last field that was expected.
        field: &'static str,
    },
    /// On encoding: `field` is too long to be represented (`len` > `max`).
    #[error("{field} too long: {len} bytes, at most {max}")]
    TooLong {
        /// The field that does not fit.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The largest length the format allows.
        max: usize,
    },
    /// On encoding into a caller's slice: the slice is too small (`need` bytes required).
    #[error("output buffer too small: {need} bytes needed")]
    BufferTooSmall {
        /// The number of bytes the encoding needs.
        need: usize,
    },
    /// The input uses a feature this crate does not implement.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is unsupported.
        what: &'static str,
    },
}

impl Error {
    /// The wire field the error is about, if it concerns one field.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::Truncated { field, .. }
            | Error::BadLength { field, .. }
            | Error::BadValue { field, .. }
            | Error::BadString { field }
            | Error::TrailingBytes { field }
            | Error::TooLong { field, .. } => Some(field),
            Error::BufferTooSmall { .. } | Error::Unsupported { .. } => None,
        }
    }

    /// True for errors about received bytes (as opposed to a value or buffer given to an
    /// encoder).
    pub fn is_decode_error(&self) -> bool {
        !matches!(self, Error::TooLong { .. } | Error::BufferTooSmall { .. })
    }
}

/// Result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;
