//! What a [`crate::Relay`] asks its embedder to do, the names it gives connections and exit
//! streams, and its errors.

use std::net::{IpAddr, SocketAddr};

use onion_circuit::channel::PeerIds;

/// One TCP+TLS connection: inbound ones are named by the embedder
/// ([`crate::Relay::handle_accepted`]), outbound ones by the relay ([`Event::Connect`]).
/// Outbound ids have the top bit set, so an embedder that numbers its accepted connections
/// from 0 never collides with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The bit that marks ids the relay chose.
    pub const OUTBOUND_BIT: u64 = 1 << 63;

    /// Whether the relay chose this id (an outbound connection).
    pub fn is_outbound(self) -> bool {
        self.0 & Self::OUTBOUND_BIT != 0
    }
}

/// One exit stream (a TCP connection to a target) or one pending name resolution. Never
/// reused within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamHandle(pub(crate) u64);

impl StreamHandle {
    /// The number, for logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Why the embedder's TCP connection to a target failed or ended badly; each maps to the
/// RELAY_END reason C tor sends (tor-spec §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetError {
    /// Connection refused (ECONNREFUSED): END CONNECTREFUSED.
    Refused,
    /// The connect timed out: END TIMEOUT.
    Timeout,
    /// No route to the host or network unreachable: END NOROUTE.
    Unreachable,
    /// Connection reset by the target: END CONNRESET.
    Reset,
    /// Anything else: END MISC.
    Other,
}

impl TargetError {
    /// The RELAY_END reason for this failure (tor-spec §6.3, as C tor's
    /// `errno_to_stream_end_reason`).
    pub fn end_reason(self) -> onion_cell::relaymsg::EndReason {
        use onion_cell::relaymsg::EndReason;
        match self {
            TargetError::Refused => EndReason::CONNECTREFUSED,
            TargetError::Timeout => EndReason::TIMEOUT,
            TargetError::Unreachable => EndReason::NOROUTE,
            TargetError::Reset => EndReason::CONNRESET,
            TargetError::Other => EndReason::MISC,
        }
    }

    /// [`ErrorKind::Timeout`] for a connect that timed out, else [`ErrorKind::Network`]:
    /// the target's network failed, not a Tor peer and not the caller.
    pub fn kind(self) -> ErrorKind {
        match self {
            TargetError::Timeout => ErrorKind::Timeout,
            TargetError::Refused
            | TargetError::Unreachable
            | TargetError::Reset
            | TargetError::Other => ErrorKind::Network,
        }
    }
}

/// Why a name resolution failed (tor-spec §6.4: transient and non-transient errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name does not exist (NXDOMAIN): non-transient.
    NotFound,
    /// The resolver failed or timed out: transient.
    Transient,
}

impl ResolveError {
    /// Always [`ErrorKind::Network`]: the name cannot be reached through the resolver (for
    /// a while, or at all); neither the client asking nor the caller broke a rule.
    pub fn kind(self) -> ErrorKind {
        ErrorKind::Network
    }
}

/// Something the embedder must do. Drain with [`crate::Relay::poll_event`] after every
/// input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Open TCP and then TLS to `addr` (a relay we extend a circuit to), then call
    /// [`crate::Relay::handle_connected`] or, on failure, [`crate::Relay::handle_closed`].
    Connect {
        /// The id the relay gave this connection.
        conn: ConnId,
        /// Where.
        addr: SocketAddr,
        /// The identities the peer must prove (from the EXTEND2 link specifiers).
        ids: PeerIds,
    },
    /// Flush what [`crate::Relay::poll_transmit`] gave for `conn`, then close it.
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// An inbound initiator authenticates (tor-spec §4.4.2): give the RFC 5705 exporter
    /// value of `conn`'s TLS session with label
    /// [`onion_circuit::channel::TLS_EXPORTER_LABEL`], this context and length 32 to
    /// [`crate::Relay::provide_tls_exporter`]. Input on `conn` waits until then.
    TlsExporter {
        /// The connection.
        conn: ConnId,
        /// The exporter context (the initiator's CID, SHA-256 of its RSA identity key).
        context: [u8; 32],
    },
    /// Resolve `name` (an exit's RESOLVE, or the hostname of a BEGIN), then call
    /// [`crate::Relay::handle_resolved`].
    Resolve {
        /// The request.
        request: StreamHandle,
        /// The name.
        name: String,
    },
    /// Open a TCP connection to `addr` for an exit stream (the exit policy allowed it),
    /// then call [`crate::Relay::handle_target_connected`] or
    /// [`crate::Relay::handle_target_failed`].
    OpenTarget {
        /// The stream.
        stream: StreamHandle,
        /// The target.
        addr: SocketAddr,
    },
    /// Bytes for the target of `stream` wait: take them with
    /// [`crate::Relay::target_transmit`] (until it returns 0). Sent when the stream's
    /// buffer goes from empty to non-empty.
    TargetData {
        /// The stream.
        stream: StreamHandle,
    },
    /// [`crate::Relay::handle_target_data`] takes bytes of `stream` again (it took fewer
    /// than offered before).
    ResumeTarget {
        /// The stream.
        stream: StreamHandle,
    },
    /// Close the target connection of `stream` (after writing what
    /// [`crate::Relay::target_transmit`] still gives): the client ended the stream, the
    /// circuit went away, or the relay ended it. The handle is then forgotten.
    CloseTarget {
        /// The stream.
        stream: StreamHandle,
    },
    /// A directory request on a BEGIN_DIR stream was answered (directory cache or HSDir):
    /// for the embedder's logs and counters; nothing to do.
    DirAnswered(crate::dir::DirAnswered),
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay's keys could not make the certificates it needs.
    #[error("relay keys: {0}")]
    Keys(String),
    /// A limit refused the request ([`crate::Limits`] says which).
    #[error("refused: {0}")]
    Refused(&'static str),
    /// The connection or stream is not known (already closed, or never opened).
    #[error("unknown connection or stream")]
    Unknown,
}

/// The stack's one classification of failures (from onion-cell), given by every error of
/// this crate's `kind()`.
pub use onion_cell::ErrorKind;

impl Error {
    /// Who is to blame: a limit of [`crate::Limits`] is [`ErrorKind::Resource`], a
    /// connection or stream that is gone [`ErrorKind::Closed`], and keys that could not make
    /// the relay's certificates (keys already loaded and checked) [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Keys(_) => ErrorKind::Internal,
            Error::Refused(_) => ErrorKind::Resource,
            Error::Unknown => ErrorKind::Closed,
        }
    }
}

/// Whether `ip` is an address an exit or EXTEND2 must not reach without being told to
/// (C tor's `tor_addr_is_internal`): private, loopback, link-local, unspecified, CGNAT,
/// unique-local or multicast.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_or_resolver_failure_is_the_networks_and_a_limit_a_resource() {
        assert_eq!(TargetError::Timeout.kind(), ErrorKind::Timeout);
        assert_eq!(TargetError::Refused.kind(), ErrorKind::Network);
        assert_eq!(TargetError::Reset.kind(), ErrorKind::Network);
        assert_eq!(ResolveError::NotFound.kind(), ErrorKind::Network);
        assert_eq!(ResolveError::Transient.kind(), ErrorKind::Network);
        let refused = Error::Refused("Limits::max_connections");
        assert_eq!(refused.kind(), ErrorKind::Resource);
        assert_eq!(Error::Unknown.kind(), ErrorKind::Closed);
        assert_eq!(Error::Keys("link cert".into()).kind(), ErrorKind::Internal);
    }
}
