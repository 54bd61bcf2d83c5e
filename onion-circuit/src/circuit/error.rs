//! Errors of the client circuit machine.

use onion_cell::chancell::ChanCmd;
use onion_cell::relaymsg::RelayCmd;

use crate::error::ErrorKind;
use crate::flow::FlowError;
use crate::stream::{StreamError, StreamId};

/// Why a client circuit operation failed or why the circuit closed.
///
/// Two ways to meet one: a command (`begin`, `send`, `extend`, ...) returns it, and then the
/// circuit is as it was (the caller's mistake, a bound, a closed circuit); or a fault of a
/// hop found while handling an input ([`super::Circuit::handle_cell`],
/// [`super::Circuit::handle_timeout`], which return nothing) closes the circuit, and the
/// error arrives once, in [`super::CircEvent::Closed`]. [`CircError::kind`] tells them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CircError {
    /// The circuit is closed (destroyed by us or by the peer).
    #[error("circuit is closed")]
    Closed,
    /// A hop is being added; wait for it before extending again (tor-spec §5.3).
    #[error("an extension is already in progress")]
    ExtendInProgress,
    /// The circuit has no hop yet, or not the one asked for.
    #[error("no hop {hop} on this circuit ({hops} hops)")]
    NoSuchHop {
        /// Hop asked for (0-based).
        hop: usize,
        /// Hops the circuit has.
        hops: usize,
    },
    /// No RELAY_EARLY cell left to carry EXTEND2 (tor-spec §5.6: at most 8 per circuit).
    #[error("RELAY_EARLY budget exhausted: cannot extend further")]
    RelayEarlyExhausted,
    /// The requested handshake cannot be used with this relay (e.g. ntor-v3 without an
    /// ed25519 identity).
    #[error("handshake unsupported: {0}")]
    HandshakeUnsupported(&'static str),
    /// The relay's handshake reply (CREATED2, CREATED_FAST, EXTENDED2) did not verify.
    #[error("handshake with hop {hop} failed: {err}")]
    Handshake {
        /// Hop whose reply failed.
        hop: usize,
        /// The crypto failure.
        err: onion_crypto::HandshakeError,
    },
    /// CREATE2 / EXTEND2 got no answer within the circuit build timeout.
    #[error("hop {hop} did not answer within the build timeout")]
    BuildTimeout {
        /// The hop being added.
        hop: usize,
    },
    /// An inbound relay cell was recognised by no hop (tor-spec §5.5.3: tear the circuit down).
    #[error("inbound relay cell not recognised by any hop")]
    NotRecognized,
    /// A relay cell whose header or message does not decode.
    #[error("malformed relay cell from hop {hop}: {err}")]
    Malformed {
        /// The hop that sent it.
        hop: usize,
        /// The decoding error.
        err: onion_cell::Error,
    },
    /// A message that is not valid in the circuit's current state or direction.
    #[error("protocol violation: unexpected {0}")]
    Unexpected(Unexpected),
    /// A flow-control violation by a hop.
    #[error("flow control violation by hop {hop}: {err}")]
    Flow {
        /// The hop.
        hop: usize,
        /// The violation.
        err: FlowError,
    },
    /// Congestion control was negotiated wrongly or violated by a hop (proposal 324).
    #[error("congestion control with hop {hop}: {err}")]
    CongestionControl {
        /// The hop.
        hop: usize,
        /// The violation.
        err: crate::cc::CcError,
    },
    /// A stream-level violation.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// No such (open) stream.
    #[error("no open stream {0}")]
    NoSuchStream(StreamId),
    /// Too many streams on this circuit.
    #[error("too many streams on this circuit")]
    TooManyStreams,
    /// A relay message could not be encoded (e.g. a hostname longer than a cell).
    #[error("cannot encode {what}: {err}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The error.
        err: onion_cell::Error,
    },
}

impl CircError {
    /// Who is to blame: the hop ([`ErrorKind::PeerProtocol`]), the caller
    /// ([`ErrorKind::Misuse`]), a deadline, a missing feature, a bound, or a closed circuit.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CircError::Closed => ErrorKind::Closed,
            CircError::ExtendInProgress
            | CircError::NoSuchHop { .. }
            | CircError::RelayEarlyExhausted
            | CircError::NoSuchStream(_)
            | CircError::Encode { .. } => ErrorKind::Misuse,
            CircError::HandshakeUnsupported(_) => ErrorKind::Unsupported,
            CircError::BuildTimeout { .. } => ErrorKind::Timeout,
            CircError::TooManyStreams => ErrorKind::Resource,
            CircError::Handshake { .. }
            | CircError::NotRecognized
            | CircError::Malformed { .. }
            | CircError::Unexpected(_)
            | CircError::Flow { .. }
            | CircError::CongestionControl { .. }
            | CircError::Stream(_) => ErrorKind::PeerProtocol,
        }
    }
}

/// What arrived unexpectedly (see [`CircError::Unexpected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unexpected {
    /// A channel cell of this command (e.g. CREATED2 with no CREATE2 outstanding).
    ChanCell(ChanCmd),
    /// A relay message of this command from this hop.
    RelayMsg(RelayCmd),
    /// An inbound RELAY_EARLY cell (tor-spec §5.6: "MUST close the circuit immediately").
    InboundRelayEarly,
}

impl core::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Unexpected::ChanCell(c) => write!(f, "{c:?} cell"),
            Unexpected::RelayMsg(c) => write!(f, "relay {c:?} message"),
            Unexpected::InboundRelayEarly => f.write_str("inbound RELAY_EARLY cell"),
        }
    }
}
