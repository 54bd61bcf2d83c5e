//! Channel configuration and the identities a channel proves or expects.

use core::time::Duration;
use std::net::IpAddr;

use onion_crypto::{Ed25519Identity, RsaIdentity};

/// Tunables of a channel. Start from [`ChanConfig::default`] and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChanConfig {
    /// How long the link handshake (VERSIONS … NETINFO, tor-spec §4) may take before the
    /// channel closes with [`super::ChanError::HandshakeTimeout`]. Default 30 s.
    pub handshake_timeout: Duration,
    /// The most circuits this channel tracks at once; CREATE cells beyond it are answered
    /// with DESTROY (RESOURCELIMIT). Default 8192.
    pub max_circuits: usize,
    /// The most bytes waiting in the outbound buffer: [`super::Channel::send`] fails with
    /// [`super::SendError::QueueFull`] beyond it and input stops being consumed until the
    /// embedder drains [`super::Channel::poll_transmit`]. Default 4 MiB.
    pub max_outbound_bytes: usize,
    /// The most events waiting in the queue; input stops being consumed until the embedder
    /// drains [`super::Channel::poll_event`]. Default 256.
    pub max_pending_events: usize,
    /// The peer's address as we see it (the TCP peer address), sent as OTHERADDR in our
    /// NETINFO cell (tor-spec §4.5). `None` sends an empty address of type 0.
    pub peer_addr: Option<IpAddr>,
    /// Our own public addresses, sent as MYADDR in NETINFO by a responder (relay). Clients
    /// send none, as C tor does. At most 255 are sent.
    pub my_addrs: Vec<IpAddr>,
    /// Whether the peer may create circuits on this channel (CREATE/CREATE2/CREATE_FAST).
    /// `None` (the default) means: yes on a responder (we are a relay), no on an initiator
    /// (a client answers such cells with DESTROY, as C tor does). A relay that opened a
    /// channel to another relay sets `Some(true)`.
    pub accept_inbound_circuits: Option<bool>,
    /// Once open, send a PADDING cell when nothing was transmitted for this long (tor-spec
    /// §3 keepalives; C tor's KeepalivePeriod is 5 minutes), so that NATs and idle timers
    /// do not drop a long-lived connection. `None` (the default) sends none; the check runs
    /// from [`super::Channel::handle_timeout`] at [`super::Channel::poll_timeout`].
    pub keepalive: Option<Duration>,
    /// Responder only: check an initiator that authenticates (CERTS with types 2, 4, 6, 7
    /// and AUTHENTICATE of type 3, tor-spec §4.4.2) and report its identities in
    /// [`super::ChanOpen::peer`]. The channel then asks for the TLS exporter value through
    /// [`super::Channel::tls_exporter_needed`] and waits for
    /// [`super::Channel::provide_tls_exporter`]. A bad CERTS or AUTHENTICATE cell closes
    /// the channel, as in C tor. Default `false`: authentication is ignored and every
    /// initiator counts as an unauthenticated client.
    pub verify_initiator_auth: bool,
}

impl Default for ChanConfig {
    fn default() -> Self {
        ChanConfig {
            handshake_timeout: Duration::from_secs(30),
            max_circuits: 8192,
            max_outbound_bytes: 4 << 20,
            max_pending_events: 256,
            peer_addr: None,
            my_addrs: Vec::new(),
            accept_inbound_circuits: None,
            keepalive: None,
            verify_initiator_auth: false,
        }
    }
}

/// A relay's identities: the legacy RSA identity (SHA-1 of its RSA-1024 key) and the
/// ed25519 identity (tor-spec §1.1, §4.2).
///
/// As an expectation (the `expected` argument of [`super::Channel::initiator`]), each
/// present identity must match what the responder proves; an absent one is not checked.
/// As a result ([`super::ChanOpen::peer`]), it holds the identities the peer proved: both
/// for a responder we authenticated, neither for an unauthenticated initiator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerIds {
    /// The RSA identity (fingerprint).
    pub rsa: Option<RsaIdentity>,
    /// The ed25519 identity.
    pub ed25519: Option<Ed25519Identity>,
}

impl PeerIds {
    /// Expect (or report) both identities.
    pub fn new(rsa: RsaIdentity, ed25519: Ed25519Identity) -> Self {
        PeerIds {
            rsa: Some(rsa),
            ed25519: Some(ed25519),
        }
    }

    /// Expect only an RSA identity (as from an old-style fingerprint).
    pub fn rsa_only(rsa: RsaIdentity) -> Self {
        PeerIds {
            rsa: Some(rsa),
            ed25519: None,
        }
    }

    /// Expect only an ed25519 identity.
    pub fn ed25519_only(ed25519: Ed25519Identity) -> Self {
        PeerIds {
            rsa: None,
            ed25519: Some(ed25519),
        }
    }

    /// True when neither identity is present.
    pub fn is_empty(&self) -> bool {
        self.rsa.is_none() && self.ed25519.is_none()
    }
}
