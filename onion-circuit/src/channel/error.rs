//! Errors of the channel state machine.
//!
//! [`ChanError`] is why a channel closed: every variant is fatal, and names the cell, field
//! or check that failed. [`SendError`] is a refused local command (the channel stays
//! usable). [`CertsError`] details a CERTS cell that did not authenticate the responder
//! (tor-spec §4.2).

use onion_cell::CircId;

use crate::error::ErrorKind;
use onion_crypto::{Ed25519Identity, RsaIdentity};

/// Why a channel closed. Every variant is fatal for the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChanError {
    /// The handshake (VERSIONS … NETINFO) did not finish within
    /// [`super::ChanConfig::handshake_timeout`].
    #[error("channel handshake timed out")]
    HandshakeTimeout,
    /// A cell could not be decoded (tor-spec §3, §4).
    #[error("malformed {cmd} cell: {error}")]
    MalformedCell {
        /// The command's name (or number).
        cmd: &'static str,
        /// What was wrong, naming the field.
        error: onion_cell::Error,
    },
    /// A cell the protocol does not allow at this point (tor-spec §4: "no other cell type is
    /// allowed to intervene besides those specified").
    #[error("unexpected {cmd} cell while {state}")]
    UnexpectedCell {
        /// The command's name (or number).
        cmd: &'static str,
        /// What the channel was doing.
        state: &'static str,
    },
    /// A handshake cell that may appear only once appeared again.
    #[error("duplicate {cmd} cell during handshake")]
    DuplicateCell {
        /// The command's name.
        cmd: &'static str,
    },
    /// The peer's VERSIONS cell shares no link protocol version with ours (tor-spec §4.1).
    #[error("no common link protocol version (peer offered {offered:?}, we support 3..=5)")]
    NoCommonVersion {
        /// The versions the peer offered (at most the first 16).
        offered: Vec<u16>,
    },
    /// The responder's CERTS cell does not authenticate it (tor-spec §4.2).
    #[error("CERTS: {0}")]
    Certs(#[from] CertsError),
    /// The responder authenticated, but as another relay than the one we meant to reach
    /// (tor-spec §2: "If the key is not as expected, the party must close the connection").
    #[error("peer identity mismatch: expected rsa {expected_rsa:?} ed25519 {expected_ed:?}, got rsa {got_rsa} ed25519 {got_ed}")]
    IdentityMismatch {
        /// The RSA identity we expected, if any.
        expected_rsa: Option<RsaIdentity>,
        /// The ed25519 identity we expected, if any.
        expected_ed: Option<Ed25519Identity>,
        /// The RSA identity the peer proved.
        got_rsa: RsaIdentity,
        /// The ed25519 identity the peer proved.
        got_ed: Ed25519Identity,
    },
    /// A circuit command (CREATE*, CREATED*, RELAY*, DESTROY) on circuit id 0, which is
    /// reserved for cells that belong to no circuit (tor-spec §5.1.1).
    #[error("{cmd} cell on circuit id 0")]
    CircuitCellOnIdZero {
        /// The command's name.
        cmd: &'static str,
    },
    /// An authenticating initiator's AUTHENTICATE cell is wrong (tor-spec §4.4.2).
    #[error("bad AUTHENTICATE cell: {reason}")]
    AuthenticateRejected {
        /// What is wrong.
        reason: &'static str,
    },
    /// The embedder reported that the TLS connection ended.
    #[error("connection closed by peer")]
    ConnectionClosed,
    /// The embedder closed the channel with [`super::Channel::close`].
    #[error("channel closed locally")]
    ClosedLocally,
}

/// A CERTS cell that does not authenticate the responder (tor-spec §4.2, cert-spec); it is
/// defined beside the certificate-chain check in onion-crypto.
pub use onion_crypto::relay_keys::CertsError;

/// A local command the channel refused. The channel itself is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The handshake has not finished: circuits cannot be used yet.
    #[error("channel is not open yet")]
    NotOpen,
    /// The channel has closed.
    #[error("channel is closed")]
    Closed,
    /// The message is a link-handshake message that the channel sends itself
    /// (VERSIONS, CERTS, AUTH_CHALLENGE, AUTHENTICATE, AUTHORIZE, NETINFO), or an unknown
    /// command.
    #[error("{cmd} cannot be sent through Channel::send")]
    NotACircuitMessage {
        /// The command's name.
        cmd: &'static str,
    },
    /// The circuit id is not in use on this channel (tor-spec §5.5.1: relay cells for a
    /// circuit that is not open are dropped).
    #[error("circuit {0} is not in use on this channel")]
    UnknownCircuit(CircId),
    /// The message does not fit the circuit's state: e.g. CREATE2 on an id that the peer
    /// allocated, CREATED2 on one we allocated, or RELAY before CREATED.
    #[error("{cmd} not allowed on circuit {circ_id} in its current state")]
    WrongCircuitState {
        /// The circuit.
        circ_id: CircId,
        /// The command's name.
        cmd: &'static str,
    },
    /// No free circuit id after 64 random draws, or the circuit map is full (tor-spec
    /// §5.1.1).
    #[error("no circuit id available")]
    CircIdsExhausted,
    /// The outbound buffer holds [`super::ChanConfig::max_outbound_bytes`] already: drain
    /// `poll_transmit` first.
    #[error("outbound buffer full")]
    QueueFull,
    /// The message could not be encoded (body too long for a cell).
    #[error("cannot encode cell: {0}")]
    Encode(onion_cell::Error),
}

impl ChanError {
    /// Who is to blame: the peer ([`ErrorKind::PeerProtocol`]), a deadline, or a channel
    /// closed by either end ([`ErrorKind::Closed`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ChanError::HandshakeTimeout => ErrorKind::Timeout,
            ChanError::ConnectionClosed | ChanError::ClosedLocally => ErrorKind::Closed,
            ChanError::NoCommonVersion { .. } => ErrorKind::Unsupported,
            ChanError::MalformedCell { .. }
            | ChanError::UnexpectedCell { .. }
            | ChanError::DuplicateCell { .. }
            | ChanError::Certs(_)
            | ChanError::IdentityMismatch { .. }
            | ChanError::CircuitCellOnIdZero { .. }
            | ChanError::AuthenticateRejected { .. } => ErrorKind::PeerProtocol,
        }
    }
}

impl SendError {
    /// Who is to blame: a refused send is the caller's ([`ErrorKind::Misuse`]), a bound
    /// ([`ErrorKind::Resource`]) or a closed channel; never the peer's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SendError::Closed => ErrorKind::Closed,
            SendError::CircIdsExhausted | SendError::QueueFull => ErrorKind::Resource,
            SendError::NotOpen
            | SendError::NotACircuitMessage { .. }
            | SendError::UnknownCircuit(_)
            | SendError::WrongCircuitState { .. }
            | SendError::Encode(_) => ErrorKind::Misuse,
        }
    }
}
