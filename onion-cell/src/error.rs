//! Errors of the cell and message codecs.
//!
//! Every decoding error names the wire field that was wrong (the field names follow the
//! spec's own names, e.g. `"CREATE2 HLEN"`), so that a log line tells a reader exactly
//! where a peer's bytes went wrong. The streaming channel decoder separates "the bytes
//! seen so far are a valid prefix, wait for more" ([`crate::codec::DecodeError::NeedMore`])
//! from "these bytes are malformed" ([`Error`]).
//!
//! [`ErrorKind`] is the one classification of failures for the whole stack: every crate's
//! error types have a `kind()` returning it (onion-circuit, onion-client and onion-tokio
//! re-export it as their own `ErrorKind`). It lives here because every crate of the stack
//! can depend on this one, which depends on none of them.

use crate::chancell::DestroyReason;

/// Who or what is to blame for a failure, so that an embedder decides what to do (drop or
/// report a peer, fix its own call, retry later) without matching on the variants of each
/// crate's errors, and a relay picks the DESTROY reason it sends (tor-spec §5.4) with
/// [`ErrorKind::destroy_reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A peer (a relay, a client at a relay, a directory, an onion service) sent something
    /// the protocol does not allow: a malformed cell or document, a message out of place, a
    /// signature or handshake that does not verify, more bytes than allowed.
    PeerProtocol,
    /// The network failed: a connection, channel or circuit broke under the caller, no
    /// relay could be reached, or a directory answered with an error status.
    Network,
    /// Something did not happen within its deadline (circuit build, channel handshake, a
    /// request).
    Timeout,
    /// The caller asked for something the state or the documentation rules out (a stream or
    /// hop that does not exist, a value too long to encode, a bad key or configuration
    /// given to the library).
    Misuse,
    /// Something this implementation or the peer does not do (a handshake type, a format
    /// version, a key type).
    Unsupported,
    /// A bound was reached (stream or circuit ids, a queue's limit, a byte budget): the
    /// caller may retry once others have finished.
    Resource,
    /// The object used (a circuit, channel or stream) is already closed, by us or by the
    /// peer.
    Closed,
    /// A failure of our own making that neither peer nor caller caused (a message that
    /// should always encode did not).
    Internal,
}

impl ErrorKind {
    /// The DESTROY reason a relay sends toward the client when a circuit closes on an error
    /// of this kind (tor-spec §5.4): PROTOCOL only for the peer's violations (and what it
    /// asked for that is not done); a caller's misuse or our own failure is INTERNAL, a
    /// reached bound RESOURCELIMIT, a deadline TIMEOUT, a broken connection CHANNEL_CLOSED,
    /// and a circuit already closed DESTROYED.
    pub fn destroy_reason(self) -> DestroyReason {
        match self {
            ErrorKind::PeerProtocol | ErrorKind::Unsupported => DestroyReason::PROTOCOL,
            ErrorKind::Misuse | ErrorKind::Internal => DestroyReason::INTERNAL,
            ErrorKind::Timeout => DestroyReason::TIMEOUT,
            ErrorKind::Resource => DestroyReason::RESOURCELIMIT,
            ErrorKind::Network => DestroyReason::CHANNEL_CLOSED,
            ErrorKind::Closed => DestroyReason::DESTROYED,
        }
    }
}

impl core::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ErrorKind::PeerProtocol => "peer protocol violation",
            ErrorKind::Network => "network failure",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Misuse => "misuse by the caller",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Resource => "resource limit reached",
            ErrorKind::Closed => "closed",
            ErrorKind::Internal => "internal error",
        })
    }
}

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

    /// Who is to blame: received bytes that do not decode are the peer's fault
    /// ([`ErrorKind::PeerProtocol`]), a feature this crate does not implement is
    /// [`ErrorKind::Unsupported`], and a value or buffer given to an encoder that does not
    /// fit is the caller's ([`ErrorKind::Misuse`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Truncated { .. }
            | Error::BadLength { .. }
            | Error::BadValue { .. }
            | Error::BadString { .. }
            | Error::TrailingBytes { .. } => ErrorKind::PeerProtocol,
            Error::TooLong { .. } | Error::BufferTooSmall { .. } => ErrorKind::Misuse,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
        }
    }
}

/// Result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DecodeError;

    #[test]
    fn received_bytes_are_the_peers_fault_and_encoder_inputs_the_callers() {
        let cases = [
            (
                Error::Truncated {
                    field: "CREATE2 HLEN",
                    need: 2,
                },
                ErrorKind::PeerProtocol,
            ),
            (
                Error::BadValue {
                    field: "END reason",
                    value: 300,
                },
                ErrorKind::PeerProtocol,
            ),
            (
                Error::TrailingBytes { field: "NETINFO" },
                ErrorKind::PeerProtocol,
            ),
            (
                Error::TooLong {
                    field: "host",
                    len: 600,
                    max: 498,
                },
                ErrorKind::Misuse,
            ),
            (Error::BufferTooSmall { need: 514 }, ErrorKind::Misuse),
            (Error::Unsupported { what: "TAP" }, ErrorKind::Unsupported),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.is_decode_error(), kind != ErrorKind::Misuse, "{e}");
        }
        let malformed = DecodeError::Malformed(Error::BadString { field: "VERSIONS" });
        assert_eq!(malformed.kind(), ErrorKind::PeerProtocol);
        assert_eq!(DecodeError::NeedMore { need: 3 }.kind(), ErrorKind::Network);
    }

    #[test]
    fn a_relay_answers_protocol_only_for_the_peers_faults() {
        assert_eq!(
            ErrorKind::PeerProtocol.destroy_reason(),
            DestroyReason::PROTOCOL
        );
        assert_eq!(ErrorKind::Misuse.destroy_reason(), DestroyReason::INTERNAL);
        assert_eq!(
            ErrorKind::Network.destroy_reason(),
            DestroyReason::CHANNEL_CLOSED
        );
        assert_eq!(
            ErrorKind::Resource.destroy_reason(),
            DestroyReason::RESOURCELIMIT
        );
        assert_eq!(ErrorKind::Timeout.destroy_reason(), DestroyReason::TIMEOUT);
        assert_eq!(ErrorKind::Closed.destroy_reason(), DestroyReason::DESTROYED);
    }
}
