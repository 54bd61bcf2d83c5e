//! The driver's decision logic, free of any runtime: what to do with each of the client's
//! outputs and with each input from a transport or an application handle. The tokio task
//! (`runtime.rs`) only moves bytes between sockets and this [`Engine`], and sleeps
//! until its next deadline; tests drive the same [`Engine`] with a fake [`Transport`].
//!
//! Shared with the application's handles are one [`StreamShared`] per stream (its bounded
//! buffers and wakers, behind a mutex held only for a copy) and one [`ServiceShared`] per
//! hosted onion service; a handle that changes something marks itself in the [`Signal`],
//! whose notification wakes the driver task, which then [`Engine::service_dirty`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use onion_cell::relaymsg::EndReason;
use onion_circuit::Instant;
use onion_client::hs::HostConfig;
use onion_client::{
    Client, ConnId, Error as ClientError, Event, Isolation, ServiceHandle, StreamHandle, Timestamp,
};
use tokio::sync::{watch, Notify};

use crate::config::PersistQueue;
use crate::error::{Error, ErrorKind};

/// Bytes the adapter holds per stream for the application to read, beyond the client's own
/// per-stream buffer ([`onion_client::Limits::stream_recv_buffer`]). When it is full the
/// driver stops reading that stream from the client, whose buffer then fills and holds the
/// stream at the exit (no SENDME goes out): a slow reader stops only its own stream.
pub const STREAM_READ_BUFFER: usize = 64 * 1024;
/// Bytes the adapter holds per stream that the application wrote and the client has not
/// taken yet. When it is full `poll_write` is `Pending` until the client takes more, which
/// it does when the stream's and circuit's windows open ([`Event::StreamWritable`]).
pub const STREAM_WRITE_BUFFER: usize = 32 * 1024;
/// Bytes queued for one relay connection at which the client is told the connection is
/// blocked ([`Client::set_blocked`]): its circuits keep their cells, the other connections
/// go on.
pub const CONN_HIGH: usize = 256 * 1024;
/// The queue level at which a blocked connection is unblocked.
pub const CONN_LOW: usize = 64 * 1024;
/// Incoming streams a hosted service holds for the application to take; one more is closed
/// at once (RELAY_END), as a full listen queue refuses a TCP connection.
pub const MAX_PENDING_INCOMING: usize = 64;

/// What the engine asks of the network layer: the relay connections.
pub trait Transport {
    /// Open TCP and TLS to `addr` for `conn`; report back with [`Engine::connected`] or
    /// [`Engine::closed`].
    fn connect(&mut self, conn: ConnId, addr: SocketAddr);
    /// Queue `bytes` (TLS plaintext) on `conn`; returns the bytes now queued on it. When
    /// that reaches [`CONN_HIGH`] the transport must call [`Engine::drained`] once the
    /// queue is at or below [`CONN_LOW`].
    fn send(&mut self, conn: ConnId, bytes: &[u8]) -> usize;
    /// Send what is queued on `conn`, then close it.
    fn close(&mut self, conn: ConnId);
}

/// What a handle changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dirty {
    Stream(StreamHandle),
    Service(ServiceHandle),
}

/// The handles' way to wake the driver: a set of what changed (each handle at most once,
/// so it is bounded by the number of handles) and a notification.
#[derive(Debug, Default)]
pub struct Signal {
    dirty: Mutex<Vec<Dirty>>,
    /// Notified (one permit is kept) when something was marked.
    pub notify: Notify,
}

impl Signal {
    fn mark(&self, d: Dirty) {
        lock(&self.dirty).push(d);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<Dirty> {
        std::mem::take(&mut *lock(&self.dirty))
    }
}

/// A poisoned lock means a panic elsewhere while it was held; the state is plain data that
/// stays consistent between statements, so go on with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

/// Where a stream stands.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// BEGIN sent, waiting for CONNECTED.
    Opening,
    /// Open.
    Open,
    /// It never opened.
    Failed(Error),
}

/// Half-close progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    No,
    /// The application asked; the driver does it once the write buffer is empty.
    Requested,
    Done,
}

/// One stream's state shared by its handle and the driver.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) open: Phase,
    pub(crate) open_waker: Option<Waker>,
    /// Received bytes for the application (at most [`STREAM_READ_BUFFER`]).
    pub(crate) rx: VecDeque<u8>,
    /// No more bytes come: a clean end or why not.
    pub(crate) end: Option<Result<(), Error>>,
    pub(crate) read_waker: Option<Waker>,
    /// The driver stopped reading the client because `rx` was full: the handle marks the
    /// stream once it has read `rx` down to half.
    pub(crate) want_more: bool,
    /// Written bytes the client has not taken (at most [`STREAM_WRITE_BUFFER`]).
    pub(crate) tx: Vec<u8>,
    pub(crate) shutdown: Shutdown,
    pub(crate) write_err: Option<Error>,
    /// The writer (poll_write, poll_flush, poll_shutdown) waiting for room or progress.
    pub(crate) write_waker: Option<Waker>,
    /// The handle is gone: close the stream (an undecided incoming stream is refused).
    pub(crate) dropped: bool,
    /// A hosted service's incoming stream the application has not accepted yet (the client
    /// has sent the other end nothing: `Client::accept_stream` is still to come).
    pub(crate) undecided: bool,
    /// The application accepted the undecided stream: the driver accepts it in the client.
    pub(crate) accept: bool,
    /// Marked in the signal and not serviced yet.
    queued: bool,
}

/// One stream: its handle and state.
#[derive(Debug)]
pub struct StreamShared {
    pub(crate) handle: StreamHandle,
    state: Mutex<StreamState>,
    signal: Arc<Signal>,
}

impl StreamShared {
    fn new(handle: StreamHandle, open: Phase, signal: Arc<Signal>) -> Arc<StreamShared> {
        Arc::new(StreamShared {
            handle,
            state: Mutex::new(StreamState {
                open,
                open_waker: None,
                rx: VecDeque::new(),
                end: None,
                read_waker: None,
                want_more: false,
                tx: Vec::new(),
                shutdown: Shutdown::No,
                write_err: None,
                write_waker: None,
                dropped: false,
                undecided: false,
                accept: false,
                queued: false,
            }),
            signal,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.state)
    }

    /// Ask the driver to look at this stream (called with its state locked).
    pub(crate) fn mark(&self, st: &mut StreamState) {
        if !st.queued {
            st.queued = true;
            self.signal.mark(Dirty::Stream(self.handle));
        }
    }
}

/// One hosted service's queue of incoming streams, shared with its handles.
#[derive(Debug, Default)]
pub(crate) struct ServiceState {
    pub(crate) queue: VecDeque<(Arc<StreamShared>, u16)>,
    pub(crate) waker: Option<Waker>,
    /// The service no longer runs (stopped, or the client shut down).
    pub(crate) ended: bool,
    /// The application stopped it.
    pub(crate) stop: bool,
    queued: bool,
}

/// A hosted service: its handle and state.
#[derive(Debug)]
pub struct ServiceShared {
    pub(crate) handle: ServiceHandle,
    state: Mutex<ServiceState>,
    signal: Arc<Signal>,
}

impl ServiceShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ServiceState> {
        lock(&self.state)
    }

    /// Ask the driver to stop the service.
    pub(crate) fn stop(&self) {
        let mut st = self.lock();
        st.stop = true;
        if !st.queued {
            st.queued = true;
            self.signal.mark(Dirty::Service(self.handle));
        }
    }
}

/// Bootstrap progress, as the client reports it.
#[derive(Debug, Clone, Default)]
pub struct BootstrapStatus {
    /// 0 to 100.
    pub percent: u8,
    /// What happened last.
    pub what: String,
    /// A verified directory with relays is in use: streams can be opened.
    pub ready: bool,
    /// The bootstrap gave up (every directory source failed) before `ready`; the client
    /// tries again later.
    pub error: Option<Error>,
}

/// The driver's state around one [`Client`]; see the [module documentation](self).
pub struct Engine {
    /// The client machine.
    pub client: Client,
    signal: Arc<Signal>,
    streams: HashMap<StreamHandle, Arc<StreamShared>>,
    services: HashMap<ServiceHandle, Arc<ServiceShared>>,
    /// Connections open or opening.
    conns: HashSet<ConnId>,
    /// Connections the client was told are blocked.
    blocked: HashSet<ConnId>,
    status: watch::Sender<BootstrapStatus>,
    /// State for the data directory, the latest of each kind.
    pub(crate) persist: PersistQueue,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Bytes taken from the client per stream (tests compare them with what was read).
    #[cfg(test)]
    pulled: HashMap<StreamHandle, usize>,
}

impl Engine {
    /// An engine around `client`; `signal` is shared with the handles.
    pub fn new(client: Client, signal: Arc<Signal>) -> Engine {
        let (status, _) = watch::channel(BootstrapStatus::default());
        Engine {
            client,
            signal,
            streams: HashMap::new(),
            services: HashMap::new(),
            conns: HashSet::new(),
            blocked: HashSet::new(),
            status,
            persist: PersistQueue::default(),
            buf: vec![0; 16 * 1024],
            out: Vec::new(),
            #[cfg(test)]
            pulled: HashMap::new(),
        }
    }

    /// A receiver of the bootstrap status.
    pub fn status(&self) -> watch::Receiver<BootstrapStatus> {
        self.status.subscribe()
    }

    /// Connections the client was told are blocked.
    pub fn blocked(&self) -> &HashSet<ConnId> {
        &self.blocked
    }

    /// Streams the engine tracks (handles alive or streams not yet closed).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Send what the client has to send and act on its events, until it has neither.
    pub fn flush(&mut self, now: Instant, t: &mut impl Transport) {
        loop {
            let mut busy = false;
            self.out.clear();
            while let Some(conn) = self.client.poll_transmit(now, &mut self.out) {
                busy = true;
                let queued = t.send(conn, &self.out);
                self.out.clear();
                if queued >= CONN_HIGH && self.blocked.insert(conn) {
                    self.client.set_blocked(conn, true);
                }
            }
            while let Some(ev) = self.client.poll_event() {
                busy = true;
                self.on_event(ev, now, t);
            }
            if !busy {
                return;
            }
        }
    }

    /// Act on one client event.
    pub fn on_event(&mut self, ev: Event, now: Instant, t: &mut impl Transport) {
        match ev {
            Event::Connect { conn, addr, .. } => {
                self.conns.insert(conn);
                t.connect(conn, addr);
            }
            Event::Disconnect { conn } => {
                self.conns.remove(&conn);
                self.blocked.remove(&conn);
                t.close(conn);
            }
            Event::StreamOpened { stream } => {
                if let Some(s) = self.streams.get(&stream) {
                    let mut st = s.lock();
                    if matches!(st.open, Phase::Opening) {
                        st.open = Phase::Open;
                    }
                    wake(&mut st.open_waker);
                }
                self.service(stream, now);
            }
            Event::StreamReadable { stream } | Event::StreamWritable { stream } => {
                self.service(stream, now)
            }
            Event::StreamClosed { stream, error } => {
                if let Some(s) = self.streams.get(&stream) {
                    let mut st = s.lock();
                    match st.open {
                        Phase::Opening => {
                            st.open = Phase::Failed(match error {
                                Some(e) => e.into(),
                                None => Error::local(
                                    ErrorKind::Network,
                                    "the stream closed before it opened",
                                ),
                            });
                            wake(&mut st.open_waker);
                        }
                        _ => {
                            if st.write_err.is_none() {
                                st.write_err = Some(match error {
                                    Some(e) => e.into(),
                                    None => Error::local(
                                        ErrorKind::Network,
                                        "the stream was ended by the other side",
                                    ),
                                });
                                st.tx.clear();
                                wake(&mut st.write_waker);
                            }
                        }
                    }
                }
                self.service(stream, now);
            }
            Event::IncomingStream {
                service,
                stream,
                port,
            } => self.incoming(service, stream, port, now),
            Event::Bootstrap { percent, what } => self.status.send_modify(|s| {
                s.percent = percent;
                s.what = what;
            }),
            Event::DirectoryChanged(d) => {
                let usable = !d.view.is_empty();
                self.status.send_modify(|s| {
                    if usable {
                        s.ready = true;
                        s.percent = 100;
                        s.error = None;
                    }
                });
            }
            Event::DirectoryFailed(e) => self.status.send_modify(|s| {
                if !s.ready {
                    s.error = Some(e.into());
                }
            }),
            Event::Persist(p) => self.persist.push(p),
            _ => {}
        }
    }

    /// A client opened a stream to a hosted service: queue it for the application, which
    /// accepts or rejects it ([`crate::IncomingRequest`]), or refuse it (END RESOURCELIMIT)
    /// when the queue is full or the service is gone.
    fn incoming(&mut self, service: ServiceHandle, stream: StreamHandle, port: u16, now: Instant) {
        let shared = StreamShared::new(stream, Phase::Opening, self.signal.clone());
        shared.lock().undecided = true;
        let queued = self.services.get(&service).is_some_and(|svc| {
            let mut st = svc.lock();
            if st.ended || st.stop || st.queue.len() >= MAX_PENDING_INCOMING {
                return false;
            }
            st.queue.push_back((shared.clone(), port));
            wake(&mut st.waker);
            true
        });
        if queued {
            self.streams.insert(stream, shared);
            self.service(stream, now);
        } else if self
            .client
            .reject_stream(stream, EndReason::RESOURCELIMIT, now)
            .is_err()
        {
            self.client.close(stream, now);
        }
    }

    /// Open a stream to `host:port` (`.onion` hosts too); the handle's state turns
    /// open or failed later (the stream handle waits for it).
    pub fn connect(
        &mut self,
        host: &str,
        port: u16,
        isolation: Isolation,
        now: Instant,
    ) -> Result<Arc<StreamShared>, Error> {
        let h = self.client.connect(host, port, isolation, now)?;
        let shared = StreamShared::new(h, Phase::Opening, self.signal.clone());
        self.streams.insert(h, shared.clone());
        Ok(shared)
    }

    /// Host an onion service; its address and its shared queue of incoming streams.
    pub fn host(
        &mut self,
        config: HostConfig,
        now: Instant,
    ) -> Result<(onion_hs::OnionAddress, Arc<ServiceShared>), Error> {
        let h = self.client.host_onion_service(config, now)?;
        let addr = self
            .client
            .onion_service_address(h)
            .ok_or_else(|| Error::from(ClientError::Misuse("hosted service has no address")))?;
        let shared = Arc::new(ServiceShared {
            handle: h,
            state: Mutex::new(ServiceState::default()),
            signal: self.signal.clone(),
        });
        self.services.insert(h, shared.clone());
        Ok((addr, shared))
    }

    /// Look at everything the handles marked.
    pub fn service_dirty(&mut self, now: Instant) {
        for d in self.signal.take() {
            match d {
                Dirty::Stream(h) => self.service(h, now),
                Dirty::Service(h) => {
                    let Some(svc) = self.services.get(&h).cloned() else {
                        continue;
                    };
                    let mut st = svc.lock();
                    st.queued = false;
                    if st.stop && !st.ended {
                        st.ended = true;
                        let pending: Vec<_> = st.queue.drain(..).collect();
                        wake(&mut st.waker);
                        drop(st);
                        let _ = self.client.stop_onion_service(h, now);
                        self.services.remove(&h);
                        for (s, _) in pending {
                            s.lock().dropped = true;
                            self.service(s.handle, now);
                        }
                    }
                }
            }
        }
    }

    /// Bring one stream up to date: close it if its handle is gone, give the client what
    /// the application wrote (as much as the windows take), half-close once that is all
    /// sent, and read from the client while the read buffer has room.
    pub fn service(&mut self, h: StreamHandle, now: Instant) {
        let Some(shared) = self.streams.get(&h).cloned() else {
            return;
        };
        let mut st = shared.lock();
        st.queued = false;
        if st.dropped && st.undecided && !st.accept {
            // Rejected (or dropped) before it was accepted: END CONNECTREFUSED, as C tor's
            // service answers when its target refuses; one that ended meanwhile is forgotten.
            drop(st);
            if self
                .client
                .reject_stream(h, EndReason::CONNECTREFUSED, now)
                .is_err()
            {
                self.client.close(h, now);
            }
            self.streams.remove(&h);
            return;
        }
        if st.undecided && st.accept {
            st.undecided = false;
            match self.client.accept_stream(h, now) {
                Ok(()) => {
                    if matches!(st.open, Phase::Opening) {
                        st.open = Phase::Open;
                    }
                }
                Err(e) => {
                    if matches!(st.open, Phase::Opening) {
                        st.open = Phase::Failed(e.into());
                    }
                }
            }
            wake(&mut st.open_waker);
        }
        if st.dropped {
            if matches!(st.open, Phase::Open) && st.write_err.is_none() && !st.tx.is_empty() {
                // Last bytes of a handle dropped without a flush: what the windows take.
                let _ = self.client.write(h, &st.tx, now);
            }
            drop(st);
            self.client.close(h, now);
            self.streams.remove(&h);
            return;
        }
        if !matches!(st.open, Phase::Open) {
            return;
        }
        if !st.tx.is_empty() && st.write_err.is_none() {
            match self.client.write(h, &st.tx, now) {
                Ok(0) => {}
                Ok(n) => {
                    st.tx.drain(..n);
                    wake(&mut st.write_waker);
                }
                Err(e) => {
                    st.write_err = Some(e.into());
                    st.tx.clear();
                    wake(&mut st.write_waker);
                }
            }
        }
        if st.shutdown == Shutdown::Requested && (st.tx.is_empty() || st.write_err.is_some()) {
            let _ = self.client.shutdown_write(h, now);
            st.shutdown = Shutdown::Done;
            wake(&mut st.write_waker);
        }
        let mut got = false;
        while st.end.is_none() && st.rx.len() < STREAM_READ_BUFFER {
            let room = (STREAM_READ_BUFFER - st.rx.len()).min(self.buf.len());
            match self.client.read(h, &mut self.buf[..room], now) {
                Ok(Some(0)) => st.end = Some(Ok(())),
                Ok(Some(n)) => {
                    st.rx.extend(&self.buf[..n]);
                    #[cfg(test)]
                    {
                        *self.pulled.entry(h).or_default() += n;
                    }
                }
                Ok(None) => break,
                Err(e) => st.end = Some(end_of(e)),
            }
            got = true;
        }
        st.want_more = st.end.is_none() && st.rx.len() >= STREAM_READ_BUFFER;
        if got {
            wake(&mut st.read_waker);
        }
    }

    /// `conn` is up (TCP and TLS); `cert_sha256` is the SHA-256 of the relay's certificate.
    pub fn connected(&mut self, conn: ConnId, now: Instant, cert_sha256: [u8; 32]) {
        self.client.handle_connected(conn, now, cert_sha256);
    }

    /// TLS plaintext arrived on `conn`.
    pub fn input(&mut self, conn: ConnId, now: Instant, bytes: &[u8]) {
        self.client.handle_input(conn, now, bytes);
    }

    /// `conn` failed or closed.
    pub fn closed(&mut self, conn: ConnId, now: Instant) {
        if self.conns.remove(&conn) {
            self.blocked.remove(&conn);
            self.client.handle_closed(conn, now);
        }
    }

    /// The transport's queue for `conn` drained to `queued` bytes.
    pub fn drained(&mut self, conn: ConnId, queued: usize) {
        if queued <= CONN_LOW && self.blocked.remove(&conn) {
            self.client.set_blocked(conn, false);
        }
    }

    /// Time passed.
    pub fn timeout(&mut self, now: Instant, wall: Timestamp) {
        self.client.handle_timeout(now, wall);
    }

    /// Shut down: every stream ends (RELAY_END) and its handle sees an error of kind
    /// `Misuse` ("shut down"); every service stops; every connection is closed after what
    /// is queued on it is sent.
    pub fn shutdown(&mut self, now: Instant, t: &mut impl Transport) {
        for (h, s) in std::mem::take(&mut self.streams) {
            self.client.close(h, now);
            let mut st = s.lock();
            if matches!(st.open, Phase::Opening) {
                st.open = Phase::Failed(Error::shutdown());
            }
            st.end.get_or_insert(Err(Error::shutdown()));
            st.write_err.get_or_insert(Error::shutdown());
            wake(&mut st.open_waker);
            wake(&mut st.read_waker);
            wake(&mut st.write_waker);
        }
        for (h, s) in std::mem::take(&mut self.services) {
            let _ = self.client.stop_onion_service(h, now);
            let mut st = s.lock();
            st.ended = true;
            st.queue.clear();
            wake(&mut st.waker);
        }
        self.flush(now, t);
        for conn in self.conns.drain() {
            t.close(conn);
        }
        self.status.send_modify(|s| {
            if !s.ready {
                s.error.get_or_insert(Error::shutdown());
            }
        });
    }
}

/// How a stream's end reads for the application. After a stream opened, END with reason
/// DONE or MISC ends it as a clean end of file: C tor's exits end a finished stream with
/// either (the exit side closed its TCP connection), and C tor's SOCKS port shows any END
/// after CONNECTED as a plain close (tor-spec §6.3). Other reasons are errors.
fn end_of(e: ClientError) -> Result<(), Error> {
    use onion_cell::relaymsg::EndReason;
    match e {
        ClientError::StreamEnded(r) if r == EndReason::DONE || r == EndReason::MISC => Ok(()),
        e => Err(e.into()),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
