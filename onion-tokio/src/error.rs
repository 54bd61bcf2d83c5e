//! The crate's one error type, classified by the stack's one [`ErrorKind`] (defined in
//! onion-cell, re-exported by onion-client and here).

use std::fmt;
use std::io;

pub use onion_client::ErrorKind;

/// An error of `onion-tokio`: what onion-client reported (a stream's END reason, a circuit
/// or channel failure, a refused onion service, a limit), or what went wrong around it (a
/// configuration that does not parse, a data directory that cannot be written, a client that
/// was shut down). [`Error::kind`] classifies all of them with the stack's [`ErrorKind`].
#[derive(Debug, Clone)]
pub struct Error {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    /// From the Tor client machine.
    Client(onion_client::Error),
    /// A configuration the caller gave (kind `Misuse`).
    Config(String),
    /// The local system: a file or a socket (kind `Network` for sockets, `Misuse` for files:
    /// the caller chose the data directory).
    Local(ErrorKind, String),
    /// The client was shut down, or its task ended (kind `Misuse`: using it afterwards).
    Shutdown,
    /// Something did not finish before its deadline (kind `Timeout`).
    Timeout(&'static str),
}

impl Error {
    /// The stable classification of the error: onion-client's for its errors, and a fixed
    /// one for the adapter's own.
    pub fn kind(&self) -> ErrorKind {
        match &self.repr {
            Repr::Client(e) => e.kind(),
            Repr::Config(_) | Repr::Shutdown => ErrorKind::Misuse,
            Repr::Local(k, _) => *k,
            Repr::Timeout(_) => ErrorKind::Timeout,
        }
    }

    /// The onion-client error behind this one, if it came from the client machine.
    pub fn client_error(&self) -> Option<&onion_client::Error> {
        match &self.repr {
            Repr::Client(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn config(what: impl Into<String>) -> Error {
        Error {
            repr: Repr::Config(what.into()),
        }
    }

    pub(crate) fn local(kind: ErrorKind, what: impl Into<String>) -> Error {
        Error {
            repr: Repr::Local(kind, what.into()),
        }
    }

    pub(crate) fn shutdown() -> Error {
        Error {
            repr: Repr::Shutdown,
        }
    }

    pub(crate) fn timeout(what: &'static str) -> Error {
        Error {
            repr: Repr::Timeout(what),
        }
    }

    /// The error as an I/O error (for [`tokio::io::AsyncRead`] and
    /// [`tokio::io::AsyncWrite`]), with this error inside.
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match self.kind() {
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Network | ErrorKind::PeerProtocol | ErrorKind::Closed => {
                io::ErrorKind::ConnectionReset
            }
            ErrorKind::Misuse if matches!(self.repr, Repr::Shutdown) => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

impl From<onion_client::Error> for Error {
    fn from(e: onion_client::Error) -> Self {
        Error {
            repr: Repr::Client(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Client(e) => write!(f, "{e}"),
            Repr::Config(e) => write!(f, "configuration: {e}"),
            Repr::Local(_, e) => f.write_str(e),
            Repr::Shutdown => f.write_str("the Tor client was shut down"),
            Repr::Timeout(what) => write!(f, "{what} timed out"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Repr::Client(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind is onion-client's for its errors, and a fixed one for the adapter's own.
    #[test]
    fn kinds() {
        let e = Error::from(onion_client::Error::Resource("too many streams"));
        assert_eq!(e.kind(), ErrorKind::Resource);
        assert!(e.client_error().is_some());
        assert_eq!(Error::shutdown().kind(), ErrorKind::Misuse);
        assert_eq!(Error::timeout("bootstrap").kind(), ErrorKind::Timeout);
        assert_eq!(Error::config("x").kind(), ErrorKind::Misuse);
        let io = Error::timeout("connect").into_io();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        let inner = io
            .get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .unwrap();
        assert_eq!(inner.kind(), ErrorKind::Timeout);
    }
}
