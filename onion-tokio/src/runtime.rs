//! The tokio side: the driver task around the [`Engine`], one task per relay connection, and
//! the writer of the data directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use onion_circuit::Instant;
use onion_client::hs::HostConfig;
use onion_client::{ConnId, Isolation, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::{DataDir, PersistQueue};
use crate::engine::{
    lock, Engine, ServiceShared, Signal, StreamShared, Transport, CONN_HIGH, CONN_LOW,
};
use crate::error::Error;

/// Messages from connection tasks waiting for the driver, at most; a reader waits for room
/// (so a relay that sends faster than the client consumes is held back by TCP).
const CONN_MSGS: usize = 64;
/// Bytes one read from a relay socket takes.
const READ_CHUNK: usize = 16 * 1024;
/// Connection messages handled in one turn before the driver flushes.
const BATCH: usize = 32;

/// An application's request to the driver.
pub(crate) enum Command {
    Connect {
        host: String,
        port: u16,
        isolation: Isolation,
        reply: oneshot::Sender<Result<Arc<StreamShared>, Error>>,
    },
    Host {
        config: Box<HostConfig>,
        reply: oneshot::Sender<Result<(onion_hs::OnionAddress, Arc<ServiceShared>), Error>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What a connection task tells the driver.
enum ConnMsg {
    Connected(ConnId, [u8; 32]),
    Input(ConnId, Vec<u8>),
    Closed(ConnId),
    Drained(ConnId, usize),
}

/// The monotonic clock: the client's [`Instant`] counts from the driver's start (tokio's
/// clock, so that a paused test clock pauses it too).
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }
    pub(crate) fn now(&self) -> Instant {
        Instant::from_duration(self.start.elapsed())
    }
    fn at(&self, t: Instant) -> tokio::time::Instant {
        self.start + t.saturating_duration_since(Instant::ZERO)
    }
}

pub(crate) fn wall() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

/// One connection's outgoing queue, shared by the driver (which appends) and the
/// connection's task (which writes it out).
#[derive(Default)]
struct Outgoing {
    state: Mutex<OutState>,
    notify: Notify,
}

#[derive(Default)]
struct OutState {
    buf: Vec<u8>,
    /// Bytes taken by the task and being written.
    writing: usize,
    /// Tell the driver when the queue is at or below [`CONN_LOW`].
    report: bool,
    /// Close after writing what is queued.
    close: bool,
}

/// The relay connections as tokio tasks.
pub(crate) struct TokioTransport {
    conns: HashMap<ConnId, Arc<Outgoing>>,
    to_driver: mpsc::Sender<ConnMsg>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

impl Transport for TokioTransport {
    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        let out = Arc::new(Outgoing::default());
        self.conns.insert(conn, out.clone());
        let task = ConnTask {
            conn,
            addr,
            tls: self.tls.clone(),
            timeout: self.connect_timeout,
            to_driver: self.to_driver.clone(),
            out,
        };
        tokio::spawn(task.run());
    }

    fn send(&mut self, conn: ConnId, bytes: &[u8]) -> usize {
        let Some(out) = self.conns.get(&conn) else {
            return 0;
        };
        let mut st = lock(&out.state);
        st.buf.extend_from_slice(bytes);
        let queued = st.buf.len() + st.writing;
        if queued >= CONN_HIGH {
            st.report = true;
        }
        drop(st);
        out.notify.notify_one();
        queued
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(out) = self.conns.remove(&conn) {
            lock(&out.state).close = true;
            out.notify.notify_one();
        }
    }
}

struct ConnTask {
    conn: ConnId,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    to_driver: mpsc::Sender<ConnMsg>,
    out: Arc<Outgoing>,
}

impl ConnTask {
    async fn run(self) {
        let open = tokio::time::timeout(self.timeout, async {
            let tcp = TcpStream::connect(self.addr).await?;
            let _ = tcp.set_nodelay(true);
            // The name is not checked (see `onion_io::tls`); relays ignore SNI.
            let name = rustls::pki_types::ServerName::try_from("www.example.com")
                .map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await?;
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| onion_io::tls::cert_sha256(c.as_ref()))
                .ok_or_else(|| std::io::Error::other("the relay sent no certificate"))?;
            Ok::<_, std::io::Error>((tls, cert))
        })
        .await;
        let (mut tls, cert) = match open {
            Ok(Ok(x)) => x,
            _ => {
                let _ = self.to_driver.send(ConnMsg::Closed(self.conn)).await;
                return;
            }
        };
        if self
            .to_driver
            .send(ConnMsg::Connected(self.conn, cert))
            .await
            .is_err()
        {
            return;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let (data, close) = {
                let mut st = lock(&self.out.state);
                let data = std::mem::take(&mut st.buf);
                st.writing = data.len();
                (data, st.close)
            };
            if !data.is_empty() {
                if tls.write_all(&data).await.is_err() || tls.flush().await.is_err() {
                    break;
                }
                let report = {
                    let mut st = lock(&self.out.state);
                    st.writing = 0;
                    let queued = st.buf.len();
                    (st.report && queued <= CONN_LOW).then(|| {
                        st.report = false;
                        queued
                    })
                };
                if let Some(q) = report {
                    if self
                        .to_driver
                        .send(ConnMsg::Drained(self.conn, q))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
            if close {
                let _ = tls.shutdown().await;
                return;
            }
            tokio::select! {
                r = tls.read(&mut buf) => match r {
                    Ok(n) if n > 0 => {
                        let msg = ConnMsg::Input(self.conn, buf[..n].to_vec());
                        if self.to_driver.send(msg).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
                _ = self.out.notify.notified() => {}
            }
        }
        let _ = self.to_driver.send(ConnMsg::Closed(self.conn)).await;
    }
}

/// Everything the driver task owns.
pub(crate) struct Driver {
    pub(crate) engine: Engine,
    pub(crate) signal: Arc<Signal>,
    pub(crate) clock: Clock,
    pub(crate) data_dir: Option<DataDir>,
    pub(crate) commands: mpsc::Receiver<Command>,
}

impl Driver {
    /// Run until shut down, or until every handle is gone.
    pub(crate) async fn run(mut self) {
        let tls = onion_io::tls::client_config();
        let (to_driver, mut from_conns) = mpsc::channel(CONN_MSGS);
        let mut t = TokioTransport {
            conns: HashMap::new(),
            to_driver,
            tls,
            connect_timeout: self.engine.client.config().limits.connect_timeout,
        };
        let persist = Arc::new((Mutex::new(PersistQueue::default()), Notify::new()));
        let writer = self
            .data_dir
            .clone()
            .map(|dd| tokio::spawn(persist_task(dd, persist.clone())));
        // The last deadline handled, so that one the client keeps returning does not spin.
        let mut fired: Option<Instant> = None;
        let shutdown_reply = loop {
            let now = self.clock.now();
            self.engine.flush(now, &mut t);
            if self.engine.persist.len() > 0 {
                let taken = self.engine.persist.take();
                if self.data_dir.is_some() {
                    let mut q = lock(&persist.0);
                    for p in taken {
                        q.push(p);
                    }
                    drop(q);
                    persist.1.notify_one();
                }
            }
            let timer = self.engine.client.poll_timeout();
            let wake_at = match timer {
                Some(x) if x <= now && fired != Some(x) => {
                    fired = Some(x);
                    self.engine.timeout(now, wall());
                    continue;
                }
                Some(x) if x <= now => Some(now + Duration::from_millis(1)),
                x => x,
            };
            let sleep = async {
                match wake_at {
                    Some(w) => tokio::time::sleep_until(self.clock.at(w)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = from_conns.recv() => {
                    let mut next = m;
                    let mut n = 0;
                    while let Some(m) = next {
                        self.conn_msg(m);
                        n += 1;
                        if n >= BATCH {
                            break;
                        }
                        next = from_conns.try_recv().ok();
                    }
                }
                c = self.commands.recv() => match c {
                    None => break None,
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(c) => self.command(c),
                },
                _ = self.signal.notify.notified() => self.engine.service_dirty(self.clock.now()),
                _ = sleep => {
                    fired = None;
                    self.engine.timeout(self.clock.now(), wall());
                }
            }
        };
        let now = self.clock.now();
        self.engine.shutdown(now, &mut t);
        // The state handed over last is written before the shutdown is reported done.
        for p in self.engine.persist.take() {
            lock(&persist.0).push(p);
        }
        persist.1.notify_one();
        drop(persist);
        if let Some(w) = writer {
            let _ = w.await;
        }
        if let Some(r) = shutdown_reply {
            let _ = r.send(());
        }
    }

    fn conn_msg(&mut self, m: ConnMsg) {
        let now = self.clock.now();
        match m {
            ConnMsg::Connected(c, cert) => self.engine.connected(c, now, cert),
            ConnMsg::Input(c, bytes) => self.engine.input(c, now, &bytes),
            ConnMsg::Closed(c) => self.engine.closed(c, now),
            ConnMsg::Drained(c, q) => self.engine.drained(c, q),
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.clock.now();
        match c {
            Command::Connect {
                host,
                port,
                isolation,
                reply,
            } => {
                let r = self.engine.connect(&host, port, isolation, now);
                if let Err(Ok(s)) = reply.send(r) {
                    // The caller went away: close the stream.
                    s.lock().dropped = true;
                    self.engine.service(s.handle, now);
                }
            }
            Command::Host { config, reply } => {
                let r = self.engine.host(*config, now);
                if let Err(Ok((_, s))) = reply.send(r) {
                    s.stop();
                }
            }
            Command::Shutdown { .. } => {}
        }
    }
}

/// Writes persisted state to the data directory off the async threads, the latest of each
/// kind; a failed write is reported on stderr and the run goes on (the client has the state
/// in memory).
async fn persist_task(dd: DataDir, q: Arc<(Mutex<PersistQueue>, Notify)>) {
    loop {
        q.1.notified().await;
        let batch = lock(&q.0).take();
        if !batch.is_empty() {
            let dd = dd.clone();
            let r = tokio::task::spawn_blocking(move || {
                for p in batch {
                    dd.store(&p)?;
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if let Ok(Err(e)) = r {
                eprintln!("onion-tokio: cannot write the data directory: {e}");
            }
        }
        // The driver dropped its end after its last push and notification.
        if Arc::strong_count(&q) == 1 {
            return;
        }
    }
}
