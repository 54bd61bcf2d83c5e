//! An async front end over [`onion_client`] for applications written with tokio: bootstrap
//! a Tor client, open streams that are tokio [`AsyncRead`](tokio::io::AsyncRead) +
//! [`AsyncWrite`](tokio::io::AsyncWrite) byte streams (to hosts through exits and to `.onion`
//! services alike), and host onion services.
//!
//! ```no_run
//! use onion_tokio::{TorClient, TorClientConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tor = TorClient::bootstrap(TorClientConfig::default()).await?;
//! let mut stream = tor.connect(("example.com", 80)).await?;
//! stream.write_all(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n").await?;
//! let mut page = Vec::new();
//! stream.read_to_end(&mut page).await?;
//! tor.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Design: one driver task, wakers, and bounded per-stream buffers
//!
//! [`onion_client::Client`] is a sans-IO machine: it opens no socket and reads no clock. This
//! crate owns it in **one driver task** ([`TorClient::create`] spawns it), which is the only
//! code that ever touches the client:
//!
//! - **Relay connections.** For each [`onion_client::Event::Connect`] the driver spawns a
//!   connection task: TCP, then TLS with any certificate accepted (a relay's certificate is
//!   self-signed; the channel checks its SHA-256, handed to
//!   [`onion_client::Client::handle_connected`], against the CERTS cell, tor-spec §4.2).
//!   The task sends what it reads to the driver over a bounded channel (64 messages of at
//!   most 16 KiB): when the driver is behind, the task stops reading and TCP holds the relay
//!   back. What the client transmits is appended to the connection's outgoing queue; when
//!   that queue reaches [`engine::CONN_HIGH`] the client is told the connection is blocked
//!   ([`onion_client::Client::set_blocked`]), so its circuits keep their cells while other
//!   connections go on, until the task has written it down to [`engine::CONN_LOW`].
//! - **Timers.** The driver sleeps until [`onion_client::Client::poll_timeout`] (on tokio's
//!   clock) and calls `handle_timeout`.
//! - **Streams.** Each [`DataStream`] shares a small state with the driver (a mutex held only
//!   to copy bytes): a read buffer of at most [`engine::STREAM_READ_BUFFER`] bytes, a write
//!   buffer of at most [`engine::STREAM_WRITE_BUFFER`] bytes, and the reader's and writer's
//!   wakers. The driver fills the read buffer from `Client::read` on `StreamReadable` and
//!   wakes the reader; it stops reading the client when the buffer is full, the client's own
//!   per-stream buffer then fills and holds that stream (no SENDME goes to the exit), and the
//!   circuit's other streams flow on. A reader that drains its buffer to half marks the
//!   stream so the driver reads on. A writer that finds its buffer full gets `Pending`; the
//!   driver hands the buffer to `Client::write` as the windows allow and, on
//!   `StreamWritable`, gives it more and wakes the writer. Handles mark what they changed in
//!   a shared set (one entry per handle) and notify the driver.
//! - **Commands** (`connect`, `launch_onion_service`, `shutdown`) go to the driver over a
//!   bounded channel (64) with a one-shot reply; a caller waits for room.
//! - **Persistence.** [`onion_client::Event::Persist`] goes to a writer task, the latest of
//!   each kind only, which writes the data directory from tokio's blocking pool.
//!
//! The decision logic is in [`engine::Engine`], free of tokio's runtime (its tests drive it
//! with a fake transport); the tokio code only moves bytes and sleeps. Nothing in the async
//! code blocks a thread: files are written from `spawn_blocking`, and the client's work
//! (cryptography, parsing) runs in short steps between awaits.
//!
//! The driver ends when [`TorClient::shutdown`] is called, or when every [`TorClient`],
//! stream and service handle is dropped.

mod config;
pub mod engine;
mod error;
mod runtime;
mod stream;

use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use onion_client::hs::HostConfig;
use onion_client::{Client, State};
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{parse_authorities, TorClientConfig, TorClientConfigBuilder, PUBLIC_AUTHORITIES};
pub use engine::BootstrapStatus;
pub use error::{Error, ErrorKind};
pub use onion_client::Isolation;
pub use onion_hs::{ExpandedKeypair, OnionAddress};
pub use stream::DataStream;

use config::DataDir;
use engine::{Engine, ServiceShared, Signal, StreamShared};
use runtime::{Clock, Command, Driver};

/// Commands waiting for the driver, at most.
const COMMANDS: usize = 64;

/// What every handle shares: the way to the driver. The driver runs while one is alive.
#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<BootstrapStatus>,
    next_isolation: AtomicU64,
    bootstrap_timeout: Duration,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

type Handle = Arc<Inner>;

/// A Tor client running on tokio. Cheap to clone (all clones drive one client).
#[derive(Debug, Clone)]
pub struct TorClient {
    inner: Handle,
}

impl TorClient {
    /// Start a client and wait until it has a usable directory (at most the configured
    /// bootstrap timeout). Use [`TorClient::create`] and [`TorClient::bootstrap_events`] to
    /// watch the progress meanwhile.
    pub async fn bootstrap(config: TorClientConfig) -> Result<TorClient, Error> {
        let c = TorClient::create(config).await?;
        c.wait_bootstrapped().await?;
        Ok(c)
    }

    /// Start a client without waiting for its bootstrap: streams opened meanwhile wait for
    /// the directory. Must be called within a tokio runtime (the driver is spawned on it).
    pub async fn create(config: TorClientConfig) -> Result<TorClient, Error> {
        let TorClientConfig {
            client,
            data_dir,
            bootstrap_timeout,
        } = config;
        let clock = Clock::new();
        let now = clock.now();
        let mode = client.dir.mode;
        // Reading the data directory and checking the cached documents take file reads and
        // signature checks: off the async threads.
        let (client, data_dir) = tokio::task::spawn_blocking(move || {
            let (dd, state) = match data_dir {
                Some(p) => {
                    let dd = DataDir::open(&p, mode)?;
                    let st = dd.load(SystemTime::now());
                    (Some(dd), st)
                }
                None => (None, State::default()),
            };
            let c = Client::new(client, state, now, runtime::wall(), &mut rand_core::OsRng)?;
            Ok::<_, Error>((c, dd))
        })
        .await
        .map_err(|e| Error::local(ErrorKind::Misuse, format!("start: {e}")))??;
        let signal = Arc::new(Signal::default());
        let engine = Engine::new(client, signal.clone());
        let status = engine.status();
        let (commands, rx) = mpsc::channel(COMMANDS);
        let driver = Driver {
            engine,
            signal,
            clock,
            data_dir,
            commands: rx,
        };
        tokio::spawn(driver.run());
        Ok(TorClient {
            inner: Arc::new(Inner {
                commands,
                status,
                next_isolation: AtomicU64::new(1),
                bootstrap_timeout,
            }),
        })
    }

    /// Wait until the client has a usable directory, at most the configured bootstrap
    /// timeout. Errors when the bootstrap gave up (every directory source failed; the
    /// client tries again later) or timed out.
    pub async fn wait_bootstrapped(&self) -> Result<(), Error> {
        let mut rx = self.inner.status.clone();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.ready {
                        return Ok(());
                    }
                    if let Some(e) = &s.error {
                        return Err(e.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(Error::shutdown());
                }
            }
        };
        tokio::time::timeout(self.inner.bootstrap_timeout, wait)
            .await
            .map_err(|_| Error::timeout("bootstrap"))?
    }

    /// The bootstrap progress as a stream of status updates (the current one first; a
    /// slow consumer sees the latest, not every step).
    pub fn bootstrap_events(&self) -> BootstrapEvents {
        let mut rx = self.inner.status.clone();
        rx.mark_changed();
        BootstrapEvents { rx }
    }

    /// The bootstrap status now.
    pub fn bootstrap_status(&self) -> BootstrapStatus {
        self.inner.status.borrow().clone()
    }

    /// Open a stream to `target` (`(host, port)`, `"host:port"`, a socket address; a
    /// `.onion` host reaches that onion service) through Tor, and wait until it is open.
    pub async fn connect(&self, target: impl IntoTorAddr) -> Result<DataStream, Error> {
        self.connect_with_isolation(target, Isolation::NONE).await
    }

    /// [`TorClient::connect`] on a circuit that carries only streams of `isolation`
    /// (path-spec §2.2 stream isolation; [`TorClient::isolation_token`] makes new ones).
    pub async fn connect_with_isolation(
        &self,
        target: impl IntoTorAddr,
        isolation: Isolation,
    ) -> Result<DataStream, Error> {
        let (host, port) = target.into_tor_addr()?;
        let (reply, rx) = oneshot::channel();
        self.command(Command::Connect {
            host,
            port,
            isolation,
            reply,
        })
        .await?;
        let shared: Arc<StreamShared> = rx.await.map_err(|_| Error::shutdown())??;
        // Made at once: dropping this future closes the stream.
        let stream = DataStream::new(shared, self.inner.clone());
        stream.wait_open().await?;
        Ok(stream)
    }

    /// A new isolation token, different from every other one this client gave.
    pub fn isolation_token(&self) -> Isolation {
        Isolation(self.inner.next_isolation.fetch_add(1, Ordering::Relaxed))
    }

    /// Host an onion service: published once the client has a directory. Returns the
    /// service (its address; dropping it stops the service) and its incoming requests.
    pub async fn launch_onion_service(
        &self,
        config: OnionServiceConfig,
    ) -> Result<(OnionService, IncomingRequests), Error> {
        if config.ports.is_empty() {
            return Err(Error::config("an onion service needs at least one port"));
        }
        let identity = match config.key {
            Some(k) => k,
            None => ExpandedKeypair::generate(&mut rand_core::OsRng),
        };
        let host = HostConfig::new(identity, config.ports);
        let (reply, rx) = oneshot::channel();
        self.command(Command::Host {
            config: Box::new(host),
            reply,
        })
        .await?;
        let (address, shared) = rx.await.map_err(|_| Error::shutdown())??;
        Ok((
            OnionService {
                address,
                shared: shared.clone(),
                _client: self.inner.clone(),
            },
            IncomingRequests {
                shared,
                client: self.inner.clone(),
            },
        ))
    }

    /// Shut the client down: every stream ends (RELAY_END), every service stops, relay
    /// connections close, and the state last handed over is written to the data directory
    /// before this returns. Handles used afterwards fail with kind `Misuse`.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.command(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn command(&self, c: Command) -> Result<(), Error> {
        self.inner
            .commands
            .send(c)
            .await
            .map_err(|_| Error::shutdown())
    }
}

/// Bootstrap progress updates ([`TorClient::bootstrap_events`]).
#[derive(Debug)]
pub struct BootstrapEvents {
    rx: watch::Receiver<BootstrapStatus>,
}

impl BootstrapEvents {
    /// The next status, or `None` once the client is gone.
    pub async fn next(&mut self) -> Option<BootstrapStatus> {
        self.rx.changed().await.ok()?;
        let s = self.rx.borrow_and_update().clone();
        Some(s)
    }
}

/// Where to connect: a host name or address and a port.
pub trait IntoTorAddr {
    /// The host and port; errors (kind `Misuse`) for text that is not `host:port`.
    fn into_tor_addr(self) -> Result<(String, u16), Error>;
}

impl IntoTorAddr for (&str, u16) {
    fn into_tor_addr(self) -> Result<(String, u16), Error> {
        Ok((self.0.to_string(), self.1))
    }
}

impl IntoTorAddr for (String, u16) {
    fn into_tor_addr(self) -> Result<(String, u16), Error> {
        Ok(self)
    }
}

impl IntoTorAddr for (IpAddr, u16) {
    fn into_tor_addr(self) -> Result<(String, u16), Error> {
        Ok((self.0.to_string(), self.1))
    }
}

impl IntoTorAddr for SocketAddr {
    fn into_tor_addr(self) -> Result<(String, u16), Error> {
        Ok((self.ip().to_string(), self.port()))
    }
}

impl IntoTorAddr for &str {
    fn into_tor_addr(self) -> Result<(String, u16), Error> {
        let (host, port) = self
            .rsplit_once(':')
            .ok_or_else(|| Error::config(format!("{self:?} is not host:port")))?;
        let port = port
            .parse()
            .map_err(|_| Error::config(format!("{self:?}: bad port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok((host.to_string(), port))
    }
}

impl IntoTorAddr for String {
    fn into_tor_addr(self) -> Result<(String, u16), Error> {
        self.as_str().into_tor_addr()
    }
}

/// An onion service to host.
pub struct OnionServiceConfig {
    ports: Vec<u16>,
    key: Option<ExpandedKeypair>,
}

impl std::fmt::Debug for OnionServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionServiceConfig")
            .field("ports", &self.ports)
            .field("key", &self.key.as_ref().map(|_| "…"))
            .finish()
    }
}

impl OnionServiceConfig {
    /// A service on the virtual `ports`, with a new identity key (a new address each run;
    /// use [`OnionServiceConfig::identity`] to keep one).
    pub fn new(ports: impl Into<Vec<u16>>) -> Self {
        OnionServiceConfig {
            ports: ports.into(),
            key: None,
        }
    }

    /// The service's identity key (its address is the public key, rend-spec-v3 §6).
    pub fn identity(mut self, key: ExpandedKeypair) -> Self {
        self.key = Some(key);
        self
    }
}

/// A hosted onion service. Dropping it stops the service.
#[derive(Debug)]
pub struct OnionService {
    address: OnionAddress,
    shared: Arc<ServiceShared>,
    _client: Handle,
}

impl OnionService {
    /// The service's address (`<56 characters>.onion` when displayed).
    pub fn address(&self) -> &OnionAddress {
        &self.address
    }

    /// Stop the service: its circuits close, pending requests are refused.
    pub fn stop(self) {}
}

impl Drop for OnionService {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// The streams clients open to a hosted service, one [`IncomingRequest`] each. At most
/// [`engine::MAX_PENDING_INCOMING`] wait; more are refused until the application takes some.
#[derive(Debug)]
pub struct IncomingRequests {
    shared: Arc<ServiceShared>,
    client: Handle,
}

impl IncomingRequests {
    /// The next request, or `None` once the service stopped.
    pub async fn next(&mut self) -> Option<IncomingRequest> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Poll for the next request (`Ready(None)` once the service stopped).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<IncomingRequest>> {
        let mut st = self.shared.lock();
        if let Some((stream, port)) = st.queue.pop_front() {
            return Poll::Ready(Some(IncomingRequest {
                stream,
                accepted: false,
                port,
                client: self.client.clone(),
            }));
        }
        if st.ended {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A stream a client opened to a hosted service: accept it into a [`DataStream`] or reject
/// it (dropping it rejects it). The client is told nothing until then: accept once the
/// service can serve the stream (e.g. its backend connection is up), so that a client is
/// not told CONNECTED for a stream that then ends at once. A request neither accepted nor
/// rejected within `onion_client::hs::HostConfig::undecided_timeout` (10 s) is refused
/// with END TIMEOUT, and its stream then fails.
#[derive(Debug)]
pub struct IncomingRequest {
    stream: Arc<StreamShared>,
    accepted: bool,
    port: u16,
    client: Handle,
}

impl IncomingRequest {
    /// The virtual port the client asked for.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Take the stream: RELAY_CONNECTED goes to the client, and the [`DataStream`] opens
    /// (its reads and writes wait until then).
    pub fn accept(mut self) -> DataStream {
        self.accepted = true;
        {
            let mut st = self.stream.lock();
            st.accept = true;
            self.stream.mark(&mut st);
        }
        DataStream::new(self.stream.clone(), self.client.clone())
    }

    /// Refuse the stream: RELAY_END with reason CONNECTREFUSED, as C tor's onion service
    /// answers when its target refuses the connection (a C tor client reports "connection
    /// refused" to its SOCKS application).
    pub fn reject(self) {}
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if !self.accepted {
            let mut st = self.stream.lock();
            st.dropped = true;
            self.stream.mark(&mut st);
        }
    }
}
