//! What kind of failure an error of this crate is, told apart by who is to blame.
//!
//! Every error type of the crate ([`crate::circuit::CircError`],
//! [`crate::relay::RelayError`], [`crate::channel::ChanError`],
//! [`crate::channel::SendError`]) has a `kind()` giving one [`ErrorKind`], so that an
//! embedder decides what to do (drop a peer, fix its own call, retry later) without matching
//! on variants, and a relay picks the DESTROY reason it sends (tor-spec §5.4) from it.

use onion_cell::chancell::DestroyReason;

/// Who or what is to blame for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer (a relay, or at a relay the client side) sent something the protocol does
    /// not allow: a malformed cell, a message out of place, a broken window or handshake.
    PeerProtocol,
    /// The caller asked for something the machine's state or documentation rules out (a
    /// stream or hop that does not exist, an extension while another runs).
    Misuse,
    /// Something did not happen within its deadline (circuit build, channel handshake).
    Timeout,
    /// Something this implementation or the peer does not do (a handshake type, a key).
    Unsupported,
    /// A bound was reached (stream ids, a queue's limit): the caller may retry later.
    Resource,
    /// The circuit or channel is already closed, by us or by the peer.
    Closed,
    /// A failure of our own making that neither peer nor caller caused (a message that
    /// should always encode did not).
    Internal,
}

impl ErrorKind {
    /// The DESTROY reason a relay sends toward the client when a circuit closes on an error
    /// of this kind (tor-spec §5.4): PROTOCOL only for the peer's violations; a caller's
    /// misuse or our own failure is INTERNAL, a reached bound RESOURCELIMIT, a deadline
    /// TIMEOUT, and a circuit already closed DESTROYED.
    pub fn destroy_reason(self) -> DestroyReason {
        match self {
            ErrorKind::PeerProtocol | ErrorKind::Unsupported => DestroyReason::PROTOCOL,
            ErrorKind::Misuse | ErrorKind::Internal => DestroyReason::INTERNAL,
            ErrorKind::Timeout => DestroyReason::TIMEOUT,
            ErrorKind::Resource => DestroyReason::RESOURCELIMIT,
            ErrorKind::Closed => DestroyReason::DESTROYED,
        }
    }
}

impl core::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ErrorKind::PeerProtocol => "peer protocol violation",
            ErrorKind::Misuse => "misuse by the caller",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Resource => "resource limit",
            ErrorKind::Closed => "closed",
            ErrorKind::Internal => "internal error",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{ChanError, SendError};
    use crate::circuit::{CircError, Unexpected};
    use crate::relay::RelayError;
    use crate::stream::StreamId;
    use onion_cell::relaymsg::RelayCmd;

    fn sid() -> StreamId {
        StreamId::new(9).expect("nonzero")
    }

    #[test]
    fn a_relay_destroys_with_protocol_only_for_the_client_sides_faults() {
        let cases = [
            (
                RelayError::Protocol("x"),
                ErrorKind::PeerProtocol,
                DestroyReason::PROTOCOL,
            ),
            (
                RelayError::UnexpectedMsg(RelayCmd::CONNECTED),
                ErrorKind::PeerProtocol,
                DestroyReason::PROTOCOL,
            ),
            (
                RelayError::UnsupportedCreate("TAP"),
                ErrorKind::Unsupported,
                DestroyReason::PROTOCOL,
            ),
            (
                RelayError::NoSuchStream(sid()),
                ErrorKind::Misuse,
                DestroyReason::INTERNAL,
            ),
            (
                RelayError::Misuse("x"),
                ErrorKind::Misuse,
                DestroyReason::INTERNAL,
            ),
            (
                RelayError::QueueFull("x"),
                ErrorKind::Resource,
                DestroyReason::RESOURCELIMIT,
            ),
            (
                RelayError::Internal("x"),
                ErrorKind::Internal,
                DestroyReason::INTERNAL,
            ),
            (
                RelayError::Closed,
                ErrorKind::Closed,
                DestroyReason::DESTROYED,
            ),
        ];
        for (e, kind, reason) in cases {
            assert_eq!((e.kind(), e.destroy_reason()), (kind, reason), "{e}");
        }
    }

    #[test]
    fn a_circuit_error_tells_the_hops_fault_from_the_callers() {
        let cases = [
            (CircError::NoSuchStream(sid()), ErrorKind::Misuse),
            (CircError::ExtendInProgress, ErrorKind::Misuse),
            (CircError::NoSuchHop { hop: 3, hops: 1 }, ErrorKind::Misuse),
            (CircError::RelayEarlyExhausted, ErrorKind::Misuse),
            (CircError::BuildTimeout { hop: 0 }, ErrorKind::Timeout),
            (CircError::HandshakeUnsupported("x"), ErrorKind::Unsupported),
            (CircError::TooManyStreams, ErrorKind::Resource),
            (CircError::Closed, ErrorKind::Closed),
            (CircError::NotRecognized, ErrorKind::PeerProtocol),
            (
                CircError::Unexpected(Unexpected::InboundRelayEarly),
                ErrorKind::PeerProtocol,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn channel_errors_have_kinds() {
        assert_eq!(ChanError::HandshakeTimeout.kind(), ErrorKind::Timeout);
        assert_eq!(ChanError::ConnectionClosed.kind(), ErrorKind::Closed);
        assert_eq!(
            ChanError::NoCommonVersion { offered: vec![1] }.kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            ChanError::DuplicateCell { cmd: "CERTS" }.kind(),
            ErrorKind::PeerProtocol
        );
        assert_eq!(SendError::NotOpen.kind(), ErrorKind::Misuse);
        assert_eq!(SendError::QueueFull.kind(), ErrorKind::Resource);
        assert_eq!(SendError::Closed.kind(), ErrorKind::Closed);
    }
}
