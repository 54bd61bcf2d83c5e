//! What a channel reports to its embedder and to the circuit layer.

use std::net::IpAddr;

use onion_cell::chancell::ChanMsg;
use onion_cell::CircId;

use super::config::PeerIds;
use super::error::ChanError;

/// An event from [`super::Channel::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChanEvent {
    /// The handshake finished: circuits may now be created (tor-spec §4).
    Open(ChanOpen),
    /// A cell for the circuit layer: CREATE*, CREATED*, RELAY, RELAY_EARLY or DESTROY.
    ///
    /// When `msg` is DESTROY the channel has already forgotten the circuit (tor-spec §5.4:
    /// "After a DESTROY cell has been processed, an OR ignores all data or destroy cells for
    /// the corresponding circuit"). CREATE* opens a new circuit allocated by the peer;
    /// answer it with [`super::Channel::send`].
    CircuitCell {
        /// The circuit.
        circ_id: CircId,
        /// The message.
        msg: ChanMsg<'static>,
    },
    /// The channel tore a circuit down itself, sent DESTROY to the peer, and forgot it,
    /// because the peer broke the protocol on that circuit.
    CircuitKilled {
        /// The circuit.
        circ_id: CircId,
        /// What the peer did.
        reason: CircViolation,
    },
    /// The channel closed. No more events follow; close the TLS connection.
    Closed(ChanError),
}

/// How a peer broke the protocol on one circuit (the channel survives).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CircViolation {
    /// A cell for this circuit could not be decoded.
    #[error("malformed {cmd} cell: {error}")]
    Malformed {
        /// The command's name.
        cmd: &'static str,
        /// The decoding error.
        error: onion_cell::Error,
    },
    /// A cell that makes no sense in the circuit's state: CREATED for a circuit that did
    /// not send CREATE, RELAY before CREATED, CREATE on a circuit id already in use.
    #[error("{cmd} cell not allowed in circuit state {state}")]
    WrongState {
        /// The command's name.
        cmd: &'static str,
        /// The circuit's state.
        state: &'static str,
    },
}

/// The result of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChanOpen {
    /// The negotiated link protocol version (3, 4 or 5).
    pub link_version: u16,
    /// The identities the peer proved: both for a responder that an initiator authenticated
    /// with its CERTS cell; neither for an initiator seen by a responder (clients do not
    /// authenticate, and this implementation does not verify AUTHENTICATE).
    pub peer: PeerIds,
    /// The peer's wall clock minus ours, in seconds, from the NETINFO TIME field (tor-spec
    /// §4.5), or `None` if the peer sent 0 (as clients do). Like C tor, treat it as a hint:
    /// the peer can lie.
    pub clock_skew_secs: Option<i64>,
    /// Our address as the peer sees it (NETINFO OTHERADDR), if it is an IPv4/IPv6 address.
    pub our_addr_seen_by_peer: Option<IpAddr>,
    /// The peer's own addresses (NETINFO MYADDR), IPv4/IPv6 only.
    pub peer_addrs: Vec<IpAddr>,
    /// True when we authenticated to the peer with CERTS and AUTHENTICATE (an initiator
    /// made with [`super::Channel::initiator_authenticated`] whose peer offered method 3).
    pub we_authenticated: bool,
}
