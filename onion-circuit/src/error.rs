//! What kind of failure an error of this crate is, told apart by who is to blame.
//!
//! Every error type of the crate ([`crate::circuit::CircError`],
//! [`crate::relay::RelayError`], [`crate::channel::ChanError`],
//! [`crate::channel::SendError`], and the violations they carry: [`crate::flow::FlowError`],
//! [`crate::stream::StreamError`], [`crate::cc::CcError`], [`crate::channel::CircViolation`];
//! [`crate::channel::InputFull`]) has a `kind()` giving one
//! [`ErrorKind`], so that an
//! embedder decides what to do (drop a peer, fix its own call, retry later) without matching
//! on variants, and a relay picks the DESTROY reason it sends (tor-spec §5.4) from it.

/// The stack's one classification of failures, defined in onion-cell so that every crate
/// shares it; [`ErrorKind::destroy_reason`] maps it to a DESTROY reason.
pub use onion_cell::ErrorKind;

impl crate::flow::FlowError {
    /// Always [`ErrorKind::PeerProtocol`]: a window overrun or a wrong SENDME is the peer's
    /// violation of tor-spec §7.3-7.4.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::PeerProtocol
    }
}

impl crate::stream::StreamError {
    /// Always [`ErrorKind::PeerProtocol`]: a cell the peer was not allowed to send on a
    /// stream (tor-spec §6.3).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::PeerProtocol
    }
}

impl crate::channel::CircViolation {
    /// How a peer broke the protocol on one circuit: [`ErrorKind::PeerProtocol`], or
    /// onion-cell's kind for a cell that does not decode (a feature not implemented is
    /// [`ErrorKind::Unsupported`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            crate::channel::CircViolation::Malformed { error, .. } => error.kind(),
            crate::channel::CircViolation::WrongState { .. } => ErrorKind::PeerProtocol,
        }
    }
}

impl crate::channel::InputFull {
    /// Always [`ErrorKind::Resource`]: the input buffer is at its limit; feed the channel
    /// and push the rest again.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Resource
    }
}

impl crate::cc::CcError {
    /// Always [`ErrorKind::PeerProtocol`]: a hop violated or misnegotiated congestion
    /// control (proposal 324).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::PeerProtocol
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{ChanError, SendError};
    use crate::circuit::{CircError, Unexpected};
    use crate::relay::RelayError;
    use crate::stream::StreamId;
    use onion_cell::chancell::DestroyReason;
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
    fn the_violations_circuits_carry_are_the_peers() {
        use crate::cc::CcError;
        use crate::flow::{FlowError, WindowKind};
        use crate::stream::StreamError;
        let flow = FlowError::WindowOverrun(WindowKind::Stream);
        assert_eq!(flow.kind(), ErrorKind::PeerProtocol);
        assert_eq!(
            StreamError::DataBeforeConnected(sid()).kind(),
            ErrorKind::PeerProtocol
        );
        assert_eq!(CcError::UnrequestedResponse.kind(), ErrorKind::PeerProtocol);
        let circ = CircError::Flow { hop: 1, err: flow };
        assert_eq!(circ.kind(), ErrorKind::PeerProtocol);
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
        let violation = crate::channel::CircViolation::WrongState {
            cmd: "CREATED2",
            state: "open",
        };
        assert_eq!(violation.kind(), ErrorKind::PeerProtocol);
        assert_eq!(crate::channel::InputFull.kind(), ErrorKind::Resource);
    }
}
