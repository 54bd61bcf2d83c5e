//! What the client tells its embedder ([`Event`], [`Persist`]) and the handles it names
//! things by ([`ConnId`], [`StreamHandle`], [`ServiceHandle`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use onion_circuit::channel::PeerIds;
use onion_dir::Timestamp;

use crate::dir::{Directory, DocKind};
use crate::Error;

/// One TCP+TLS connection the client asked the embedder to open ([`Event::Connect`]). The
/// client never reuses an id within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One application byte stream, or one pending name resolution
/// ([`crate::Client::resolve`]). Never reused within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamHandle(pub(crate) u64);

impl StreamHandle {
    /// The handle's number, for logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// One onion service the client hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceHandle(pub u64);

/// What the client asks of, or tells, its embedder ([`crate::Client::poll_event`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Open TCP to `addr`, then TLS (any certificate: the relay proves itself inside the
    /// channel, tor-spec §4.2), then call [`crate::Client::handle_connected`] with the SHA-256
    /// of the peer's certificate, or [`crate::Client::handle_closed`] if either failed.
    Connect {
        /// The id to report it under.
        conn: ConnId,
        /// Where.
        addr: SocketAddr,
        /// The identities the relay must prove (checked by the client).
        ids: PeerIds,
    },
    /// Send what [`crate::Client::poll_transmit`] gave for `conn`, then close it. The client
    /// has forgotten it: nothing more about it is expected. Not sent for a connection the
    /// embedder reported closed ([`crate::Client::handle_closed`]).
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// The stream is open (RELAY_CONNECTED): [`crate::Client::write`] takes bytes now.
    StreamOpened {
        /// The stream.
        stream: StreamHandle,
    },
    /// [`crate::Client::read`] has bytes or the end of the stream for it.
    StreamReadable {
        /// The stream.
        stream: StreamHandle,
    },
    /// [`crate::Client::write`] returned 0 earlier and would take bytes now.
    StreamWritable {
        /// The stream.
        stream: StreamHandle,
    },
    /// The stream ended from the other side or by a failure: `None` for a clean end (the
    /// exit's END with reason DONE), else why. Not sent after [`crate::Client::close`].
    ///
    /// The ending is also what [`crate::Client::read`] gives once the bytes received before
    /// it are read: `Ok(Some(0))` for a clean end, `Err(error)` (the same error) otherwise.
    /// That read forgets the handle, as [`crate::Client::close`] does; until then writes
    /// fail with the same error. An application may therefore rely on `read` alone.
    StreamClosed {
        /// The stream.
        stream: StreamHandle,
        /// Why, if not a clean end.
        error: Option<Error>,
    },
    /// The answers to [`crate::Client::resolve`] (tor-spec §6.4).
    Resolved {
        /// The request's handle.
        request: StreamHandle,
        /// The addresses, or why there are none.
        answers: Result<Vec<IpAddr>, Error>,
    },
    /// A client opened a stream to a hosted onion service (RELAY_BEGIN, rend-spec-v3 §4.2).
    /// It is undecided: the client has no answer yet. Connect to the service's target,
    /// then [`crate::Client::accept_stream`] (RELAY_CONNECTED; read and write it as any
    /// other stream from then on) or [`crate::Client::reject_stream`] with the reason
    /// (RELAY_END, e.g. CONNECTREFUSED when the target refused, as C tor's service sends).
    /// Undecided streams are bounded per rendezvous circuit and per service, and one left
    /// undecided for [`crate::hs::HostConfig::undecided_timeout`] is refused with END
    /// TIMEOUT and reported by [`Event::StreamClosed`].
    IncomingStream {
        /// The service.
        service: ServiceHandle,
        /// The new stream, waiting for the application's decision.
        stream: StreamHandle,
        /// The virtual port asked for.
        port: u16,
    },
    /// Bootstrap progress, for a progress line (C tor's `Bootstrapped N%`).
    Bootstrap {
        /// 0 to 100.
        percent: u8,
        /// What happened.
        what: String,
    },
    /// A directory bootstrap or refresh gave up (every source failed); it is tried again
    /// after [`crate::dir::DirConfig::retry_delay`] and the directory in use is kept.
    DirectoryFailed(Error),
    /// A new verified directory is in use.
    DirectoryChanged(Arc<Directory>),
    /// Something to store and hand back in [`crate::State`] at the next start.
    Persist(Persist),
}

/// State for the embedder to store ([`Event::Persist`]); the latest of each kind replaces
/// the earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Persist {
    /// A directory document, worth keeping until `keep_until`
    /// ([`crate::State::directory`]).
    Directory {
        /// Which document.
        kind: DocKind,
        /// Its text.
        text: String,
        /// When it stops being useful.
        keep_until: Timestamp,
    },
    /// The guard state ([`crate::State::guards`]).
    Guards(String),
    /// The circuit build times ([`crate::State::build_times`]).
    BuildTimes(String),
}
