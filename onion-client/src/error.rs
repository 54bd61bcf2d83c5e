//! The crate's one error type and its stable classification.

use onion_cell::relaymsg::EndReason;

use crate::dir::DocKind;

/// The stack's one classification of failures (defined in onion-cell; the same type as
/// `onion_circuit::ErrorKind`), so that an embedder can decide what to do (report a peer,
/// retry later, fix its own call) without matching on messages.
pub use onion_cell::ErrorKind;

/// The kind of a channel's or circuit's error as the client reports it: the same, except
/// that a channel or circuit closed under the client ([`ErrorKind::Closed`] at that layer)
/// is a network failure for the stream or request that needed it.
fn under_client(k: ErrorKind) -> ErrorKind {
    match k {
        ErrorKind::Closed => ErrorKind::Network,
        k => k,
    }
}

/// An error of `onion-client`. [`Error::kind`] gives its stable classification; the
/// variants carry the details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A directory document that does not parse (dir-spec §1.2).
    #[error("{doc} does not parse: {error}")]
    Malformed {
        /// Which document.
        doc: DocKind,
        /// The parser's error.
        error: onion_dir::ParseError,
    },
    /// A directory document whose signatures, digests or validity period do not verify
    /// (dir-spec §3.1, §3.4.1, §3.3).
    #[error("{doc} failed verification: {reason}")]
    Unverified {
        /// Which document.
        doc: DocKind,
        /// Why.
        reason: String,
    },
    /// A consensus diff that does not apply to the consensus it claims to start from
    /// (dir-spec §4.5.1), or one sent without being asked for.
    #[error("consensus diff refused: {0}")]
    BadDiff(String),
    /// A response body larger than the request allowed (the transport should have cut it
    /// off; the machine checks again).
    #[error("{doc} response of {len} bytes exceeds its limit of {limit} bytes")]
    TooLarge {
        /// Which document.
        doc: DocKind,
        /// Bytes received.
        len: usize,
        /// The request's limit.
        limit: usize,
    },
    /// The descriptors of one bootstrap or refresh would pass the mode's descriptor budget
    /// ([`crate::dir::DirMode::descriptor_budget`]).
    #[error(
        "{doc} responses exceed {budget} bytes, the limit for one bootstrap, after {done} of \
         {total} requests; stopped"
    )]
    Budget {
        /// Which documents.
        doc: DocKind,
        /// The budget in bytes.
        budget: usize,
        /// Requests answered within the budget.
        done: usize,
        /// Requests needed in all.
        total: usize,
    },
    /// A response body that is not UTF-8 text, as every directory document is (dir-spec §1.2).
    #[error("{0} response is not UTF-8 text")]
    NotText(DocKind),
    /// A consensus older than the one held (dir-spec §5.1: a client never goes back).
    #[error("the directory sent a consensus older than the one held")]
    Older,
    /// The embedder reported a transport failure (connection, circuit, stream).
    #[error("network failure: {0}")]
    Network(String),
    /// The directory answered with an HTTP status other than 200 (dir-spec §6).
    #[error("HTTP {status} {reason}")]
    Http {
        /// The status code.
        status: u16,
        /// The reason phrase, with control characters escaped.
        reason: String,
    },
    /// A request was not answered before its deadline.
    #[error("{doc} request timed out")]
    Timeout {
        /// Which document.
        doc: DocKind,
    },
    /// Every attempt allowed for one document failed; the last error is kept.
    #[error("gave up on the {doc} after {attempts} attempts; last: {last}")]
    GaveUp {
        /// Which document.
        doc: DocKind,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// A stream ended with RELAY_END and a reason other than DONE (tor-spec §6.3), or
    /// locally: TIMEOUT when the exit did not answer BEGIN in time, DESTROY when its circuit
    /// went away.
    #[error("stream ended: {0:?}")]
    StreamEnded(onion_cell::relaymsg::EndReason),
    /// A channel (link to a relay) failed or broke the link protocol (tor-spec §4).
    #[error("channel: {0}")]
    Channel(onion_circuit::channel::ChanError),
    /// A circuit failed: its build, a hop's handshake, or a relay cell a hop sent.
    #[error("circuit: {0}")]
    Circuit(onion_circuit::circuit::CircError),
    /// A circuit violated the onion-service protocol (a message its purpose does not allow,
    /// rend-spec-v3 §3); it was closed.
    #[error("circuit protocol violation: {0}")]
    Violation(&'static str),
    /// No path fits: the directory lists no relay usable for a hop.
    #[error("no path: {0}")]
    NoPath(String),
    /// A bound of [`crate::Limits`] is reached.
    #[error("limit reached: {0}")]
    Resource(&'static str),
    /// Connecting to or hosting an onion service failed ([`crate::hs::HsError`]: the
    /// proposal 304 classes, [`crate::hs::HsError::socks5_reply`]).
    #[error("onion service: {0}")]
    OnionService(crate::hs::HsError),
    /// A misuse of the API.
    #[error("misuse: {0}")]
    Misuse(&'static str),
    /// Something not implemented.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    /// The stable classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Malformed { .. }
            | Error::Unverified { .. }
            | Error::BadDiff(_)
            | Error::TooLarge { .. }
            | Error::Budget { .. }
            | Error::NotText(_)
            | Error::Older => ErrorKind::PeerProtocol,
            Error::Network(_) | Error::Http { .. } => ErrorKind::Network,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::GaveUp { last, .. } => last.kind(),
            Error::Misuse(_) => ErrorKind::Misuse,
            Error::OnionService(e) => e.kind(),
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Resource(_) => ErrorKind::Resource,
            Error::NoPath(_) => ErrorKind::Network,
            Error::Violation(_) => ErrorKind::PeerProtocol,
            Error::StreamEnded(r) => match *r {
                EndReason::TIMEOUT => ErrorKind::Timeout,
                EndReason::TORPROTOCOL => ErrorKind::PeerProtocol,
                EndReason::RESOURCELIMIT => ErrorKind::Resource,
                _ => ErrorKind::Network,
            },
            Error::Channel(e) => under_client(e.kind()),
            Error::Circuit(e) => under_client(e.kind()),
        }
    }
}

impl crate::dir::FallbackError {
    /// Always [`ErrorKind::Misuse`]: the fallback list is the embedder's.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Misuse
    }
}

impl crate::dir::authorities::AuthorityError {
    /// Always [`ErrorKind::Misuse`]: the authority list is the embedder's.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Misuse
    }
}

impl crate::timeout::StateError {
    /// Always [`ErrorKind::Misuse`]: the saved build-time state is the embedder's to keep,
    /// and no peer wrote it.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Misuse
    }
}

impl crate::socks::RequestError {
    /// The SOCKS client is the proxy's peer: a command or address type this proxy does not
    /// serve is [`ErrorKind::Unsupported`], any other refused request
    /// [`ErrorKind::PeerProtocol`] (RFC 1928).
    pub fn kind(&self) -> ErrorKind {
        use crate::socks::RequestError as R;
        match self {
            R::Command(_) | R::AddressType(_) => ErrorKind::Unsupported,
            R::Version(_)
            | R::Reserved(_)
            | R::HostName
            | R::ZeroPort
            | R::ZeroAddress
            | R::TooLong => ErrorKind::PeerProtocol,
        }
    }
}

impl crate::socks::SocksError {
    /// The SOCKS client is the proxy's peer: an authentication method or extended
    /// authentication form this proxy does not accept is [`ErrorKind::Unsupported`], a
    /// refused request has [`crate::socks::RequestError::kind`], and anything else that is
    /// not SOCKS (an HTTP request, a bad version byte) is [`ErrorKind::PeerProtocol`].
    pub fn kind(&self) -> ErrorKind {
        use crate::socks::SocksError as S;
        match self {
            S::NoAcceptableMethod | S::ExtendedAuth => ErrorKind::Unsupported,
            S::Request { error, .. } => error.kind(),
            S::Version(_) | S::Http | S::NoMethods | S::AuthVersion(_) => ErrorKind::PeerProtocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, ErrorKind};
    use onion_circuit::channel::ChanError;
    use onion_circuit::circuit::CircError;

    /// Channel and circuit errors are classified by their own crate's `kind()`, through one
    /// mapping: a caller's misuse is never reported as the peer's fault.
    #[test]
    fn channel_and_circuit_errors_keep_their_layers_kind() {
        let cases = [
            (
                Error::Circuit(CircError::RelayEarlyExhausted),
                ErrorKind::Misuse,
            ),
            (
                Error::Circuit(CircError::Encode {
                    what: "BEGIN",
                    err: onion_cell::Error::TooLong {
                        field: "host",
                        len: 600,
                        max: 498,
                    },
                }),
                ErrorKind::Misuse,
            ),
            (
                Error::Circuit(CircError::NotRecognized),
                ErrorKind::PeerProtocol,
            ),
            (
                Error::Circuit(CircError::BuildTimeout { hop: 1 }),
                ErrorKind::Timeout,
            ),
            (Error::Circuit(CircError::Closed), ErrorKind::Network),
            (
                Error::Circuit(CircError::TooManyStreams),
                ErrorKind::Resource,
            ),
            (
                Error::Channel(ChanError::NoCommonVersion { offered: vec![2] }),
                ErrorKind::Unsupported,
            ),
            (
                Error::Channel(ChanError::HandshakeTimeout),
                ErrorKind::Timeout,
            ),
            (
                Error::Channel(ChanError::ConnectionClosed),
                ErrorKind::Network,
            ),
            (
                Error::Channel(ChanError::DuplicateCell { cmd: "CERTS" }),
                ErrorKind::PeerProtocol,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    /// What the embedder gave (lists, saved state) is its own misuse; what a SOCKS client
    /// sent is the peer's fault, or unsupported.
    #[test]
    fn list_state_and_socks_errors_have_kinds() {
        use crate::socks::{RequestError, SocksError, Version};
        let fallback = crate::dir::parse_fallbacks("not an address").unwrap_err();
        assert_eq!(fallback.kind(), ErrorKind::Misuse);
        let authority = crate::dir::authorities::parse_list("").unwrap_err();
        assert_eq!(authority.kind(), ErrorKind::Misuse);
        let state = crate::timeout::StateError::TooLong { len: 1 << 20 };
        assert_eq!(state.kind(), ErrorKind::Misuse);
        assert_eq!(SocksError::Http.kind(), ErrorKind::PeerProtocol);
        assert_eq!(
            SocksError::NoAcceptableMethod.kind(),
            ErrorKind::Unsupported
        );
        let bind = SocksError::Request {
            version: Version::Socks5,
            error: RequestError::Command(2),
        };
        assert_eq!(bind.kind(), ErrorKind::Unsupported);
        let port = SocksError::Request {
            version: Version::Socks5,
            error: RequestError::ZeroPort,
        };
        assert_eq!(port.kind(), ErrorKind::PeerProtocol);
    }
}
