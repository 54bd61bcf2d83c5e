//! The crate's one error type, [`enum@Error`], and the classification of every error of the
//! crate.
//!
//! Each module has its own error (naming the field, key or message that failed); each of
//! them converts into [`enum@Error`] with `From` and has a `kind()` giving the stack's one
//! classification, [`ErrorKind`] (from onion-cell). What another party sent (a descriptor
//! from an HSDir, an INTRODUCE2 from a client, a message at a relay) that does not parse or
//! verify is [`ErrorKind::PeerProtocol`]; what the caller gave (an address, a key, an
//! introduction point index, a configuration) is [`ErrorKind::Misuse`].

pub use onion_cell::ErrorKind;

use crate::address::AddressError;
use crate::client::ClientError;
use crate::desc::DescError;
use crate::keys::HsKeyError;
use crate::linkspec::LinkSpecError;
use crate::msg::MsgError;
use crate::ntor::NtorError;
use crate::publish::PublishError;
use crate::relay::{RelayRoleError, StoreError};
use crate::service::ServiceError;
use crate::time::TimeError;

/// Any onion-hs error; [`Error::kind`] classifies it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string is not a v3 onion address.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Key material is not usable.
    #[error(transparent)]
    Key(#[from] HsKeyError),
    /// A time-period configuration is invalid.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// A link specifier block is malformed.
    #[error(transparent)]
    LinkSpec(#[from] LinkSpecError),
    /// hs-ntor failed.
    #[error(transparent)]
    Ntor(#[from] NtorError),
    /// A message body is malformed or unauthentic.
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// A descriptor could not be read or built.
    #[error(transparent)]
    Desc(#[from] DescError),
    /// The client machine failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The service machine failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The publisher failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// An introduction or rendezvous point refused a message.
    #[error(transparent)]
    RelayRole(#[from] RelayRoleError),
    /// An HSDir refused a descriptor.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Who is to blame: the kind of the error inside.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Address(e) => e.kind(),
            Error::Key(e) => e.kind(),
            Error::Time(e) => e.kind(),
            Error::LinkSpec(e) => e.kind(),
            Error::Ntor(e) => e.kind(),
            Error::Msg(e) => e.kind(),
            Error::Desc(e) => e.kind(),
            Error::Client(e) => e.kind(),
            Error::Service(e) => e.kind(),
            Error::Publish(e) => e.kind(),
            Error::RelayRole(e) => e.kind(),
            Error::Store(e) => e.kind(),
        }
    }
}

impl AddressError {
    /// Always [`ErrorKind::Misuse`]: the address is the caller's (rend-spec-v3 §6).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Misuse
    }
}

impl HsKeyError {
    /// A key that is not a usable point came from what a peer sent (a descriptor, a
    /// message): [`ErrorKind::PeerProtocol`]; where it is the caller's (an address given to
    /// the client) the wrapping error says [`ErrorKind::Misuse`]. A key file or a key pair
    /// that does not match is the caller's: [`ErrorKind::Misuse`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            HsKeyError::NotOnCurve | HsKeyError::Torsion => ErrorKind::PeerProtocol,
            HsKeyError::BadKeyFile(_) | HsKeyError::Mismatch => ErrorKind::Misuse,
        }
    }
}

impl TimeError {
    /// Always [`ErrorKind::Misuse`]: the time-period configuration is the caller's
    /// (rend-spec-v3 §2.2.1).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Misuse
    }
}

impl LinkSpecError {
    /// The kind of onion-cell's error: a block that does not decode is the peer's, one that
    /// cannot be encoded the caller's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LinkSpecError::Wire(e) => e.kind(),
        }
    }
}

impl NtorError {
    /// Always [`ErrorKind::PeerProtocol`]: the other end's key or AUTH is wrong
    /// (rend-spec-v3 §3.3.2).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::PeerProtocol
    }
}

impl MsgError {
    /// [`ErrorKind::PeerProtocol`] for a body that is truncated or does not authenticate,
    /// [`ErrorKind::Unsupported`] for a field value this implementation does not do, and
    /// onion-cell's kind for a wire error (a field too long to encode is the caller's).
    pub fn kind(&self) -> ErrorKind {
        match self {
            MsgError::Unsupported { .. } => ErrorKind::Unsupported,
            MsgError::Wire { err, .. } => err.kind(),
            MsgError::Truncated { .. }
            | MsgError::BadHandshakeAuth
            | MsgError::BadSignature
            | MsgError::BadMac
            | MsgError::BadKey(_)
            | MsgError::Ntor(_) => ErrorKind::PeerProtocol,
        }
    }
}

impl DescError {
    /// A descriptor that does not parse, decrypt or verify is its sender's fault
    /// ([`ErrorKind::PeerProtocol`], rend-spec-v3 §2.4, §2.5); a missing or wrong client
    /// authorization key and a value that cannot be built into a descriptor are the
    /// caller's ([`ErrorKind::Misuse`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DescError::ClientAuthRequired
            | DescError::ClientNotAuthorized
            | DescError::Build(_) => ErrorKind::Misuse,
            DescError::Netdoc(e) => e.kind(),
            DescError::RawLinkSpec { err, .. } => err.kind(),
            DescError::Key { err, .. } => err.kind(),
            DescError::Cert { err, .. } => err.kind(),
            DescError::TooLarge(_)
            | DescError::NotText(_)
            | DescError::Syntax { .. }
            | DescError::Missing(_)
            | DescError::Duplicate(_)
            | DescError::BadVersion(_)
            | DescError::OutOfRange(_)
            | DescError::WrongBlindedKey
            | DescError::BadSignature
            | DescError::CiphertextTooShort { .. }
            | DescError::BadMac { .. }
            | DescError::TooManyIntroPoints(_) => ErrorKind::PeerProtocol,
        }
    }
}

impl ClientError {
    /// The address's key is the caller's ([`ErrorKind::Misuse`]), as is an introduction
    /// point index the descriptor does not list; a descriptor or message fault has its own
    /// kind; a service with no introduction point or one that refused the introduction
    /// cannot be reached now ([`ErrorKind::Network`], as C tor's client retries later).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Key(_) | ClientError::NoSuchIntroPoint(_) => ErrorKind::Misuse,
            ClientError::Desc(e) => e.kind(),
            ClientError::Msg(e) => e.kind(),
            ClientError::Ntor(e) => e.kind(),
            ClientError::NoIntroPoints | ClientError::IntroduceRefused(_) => ErrorKind::Network,
        }
    }
}

impl ServiceError {
    /// What a client or introduction point sent that is wrong or replayed is
    /// [`ErrorKind::PeerProtocol`]; a rendezvous point with an onion key type other than
    /// ntor is [`ErrorKind::Unsupported`]; an introduction point the service does not have
    /// or has not established is the caller's ([`ErrorKind::Misuse`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::NoSuchIntroPoint(_) | ServiceError::NotEstablished(_) => {
                ErrorKind::Misuse
            }
            ServiceError::Msg(e) => e.kind(),
            ServiceError::Ntor(e) => e.kind(),
            ServiceError::Desc(e) => e.kind(),
            ServiceError::Replay | ServiceError::WrongIntroPoint => ErrorKind::PeerProtocol,
            ServiceError::UnsupportedOnionKey(_) => ErrorKind::Unsupported,
        }
    }
}

impl PublishError {
    /// A report about an introduction point the publisher does not have or does not wait
    /// for is the caller's ([`ErrorKind::Misuse`]); a service failure has its own kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PublishError::UnknownIntro(_) | PublishError::UnexpectedReport(_) => ErrorKind::Misuse,
            PublishError::Service(e) => e.kind(),
        }
    }
}

impl RelayRoleError {
    /// At an introduction or rendezvous point: a full table is [`ErrorKind::Resource`];
    /// everything else is what the client or service on the circuit did wrong
    /// ([`ErrorKind::PeerProtocol`]: a key or cookie in use, a second role, an unknown
    /// cookie, rend-spec-v3 §3.1, §4.2), or the message's own kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RelayRoleError::Full => ErrorKind::Resource,
            RelayRoleError::Msg(e) => e.kind(),
            RelayRoleError::InUse | RelayRoleError::CircuitBusy | RelayRoleError::UnknownCookie => {
                ErrorKind::PeerProtocol
            }
        }
    }
}

impl StoreError {
    /// At an HSDir: a descriptor too large, not newer, or not valid is the uploader's fault
    /// ([`ErrorKind::PeerProtocol`], rend-spec-v3 §2.4), or the descriptor's own kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Desc(e) => e.kind(),
            StoreError::TooLarge(_) | StoreError::NotNewer { .. } => ErrorKind::PeerProtocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_another_party_sent_is_its_fault_and_what_the_caller_gave_the_callers() {
        let cases: [(Error, ErrorKind); 14] = [
            (AddressError::BadChecksum.into(), ErrorKind::Misuse),
            (HsKeyError::Torsion.into(), ErrorKind::PeerProtocol),
            (HsKeyError::BadKeyFile("header").into(), ErrorKind::Misuse),
            (TimeError::BadInterval(5).into(), ErrorKind::Misuse),
            (NtorError::BadAuth.into(), ErrorKind::PeerProtocol),
            (MsgError::BadMac.into(), ErrorKind::PeerProtocol),
            (
                MsgError::Unsupported {
                    msg: "ESTABLISH_INTRO",
                    field: "AUTH_KEY_TYPE",
                    value: 1,
                }
                .into(),
                ErrorKind::Unsupported,
            ),
            (DescError::BadSignature.into(), ErrorKind::PeerProtocol),
            (DescError::ClientAuthRequired.into(), ErrorKind::Misuse),
            (
                ClientError::Key(HsKeyError::NotOnCurve).into(),
                ErrorKind::Misuse,
            ),
            (ClientError::NoIntroPoints.into(), ErrorKind::Network),
            (ServiceError::Replay.into(), ErrorKind::PeerProtocol),
            (RelayRoleError::Full.into(), ErrorKind::Resource),
            (
                StoreError::NotNewer { have: 5, got: 4 }.into(),
                ErrorKind::PeerProtocol,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn a_wrapped_error_keeps_the_kind_of_what_is_inside() {
        let wire = onion_cell::Error::TooLong {
            field: "link specifier",
            len: 300,
            max: 255,
        };
        assert_eq!(LinkSpecError::Wire(wire.clone()).kind(), ErrorKind::Misuse);
        let truncated = onion_cell::Error::Truncated {
            field: "NSPEC",
            need: 1,
        };
        let desc = DescError::RawLinkSpec {
            index: 0,
            err: LinkSpecError::Wire(truncated),
        };
        assert_eq!(desc.kind(), ErrorKind::PeerProtocol);
        let publish = PublishError::Service(ServiceError::Desc(DescError::Build("too long")));
        assert_eq!(Error::from(publish).kind(), ErrorKind::Misuse);
        let role = RelayRoleError::Msg(MsgError::Wire {
            msg: "INTRODUCE1",
            err: wire,
        });
        assert_eq!(role.kind(), ErrorKind::Misuse);
        let unsupported_cert = DescError::Cert {
            field: "descriptor-signing-key-cert",
            err: onion_crypto::CertError::BadVersion(2),
        };
        assert_eq!(unsupported_cert.kind(), ErrorKind::Unsupported);
    }
}
