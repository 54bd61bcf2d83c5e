//! Socket threads of the relay: one reader thread per socket that sends what it reads to
//! the relay's loop, and one writer thread per socket that writes what the loop queues.
//! The loop alone holds the TLS sessions and the `onion_relay::Relay`.
//!
//! Bounds: the loop's inbox is a bounded channel ([`INBOX`] messages of at most
//! [`READ_CHUNK`] bytes): a full inbox stops every reader until the loop catches up. A
//! writer's queue is bounded by the loop: past [`WRITE_HIGH`] queued bytes the connection is
//! reported blocked to the relay (or the target's stream stops taking data), and the writer
//! says [`Msg::Drained`] once it is under [`WRITE_LOW`].

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};

use onion_relay::{ConnId, ResolveError, StreamHandle, TargetError, TlsLinkCert};

/// Messages in the loop's inbox.
pub const INBOX: usize = 256;
/// Bytes one read takes.
pub const READ_CHUNK: usize = 16 << 10;
/// Queued bytes at which a writer counts as full.
pub const WRITE_HIGH: usize = 1 << 20;
/// Queued bytes under which a full writer drains again.
pub const WRITE_LOW: usize = 256 << 10;

/// Which socket a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// A TLS connection (inbound or outbound).
    Conn(ConnId),
    /// An exit stream's TCP connection.
    Target(StreamHandle),
}

/// What the socket threads tell the loop.
#[derive(Debug)]
pub enum Msg {
    /// The listener accepted a connection.
    Accepted(TcpStream, SocketAddr),
    /// An outbound TCP connection (EXTEND2) is open; TLS comes next.
    Connected(ConnId, TcpStream),
    /// An outbound TCP connection could not be opened.
    ConnectFailed(ConnId, String),
    /// Bytes read.
    Data(Key, Vec<u8>),
    /// The socket reached EOF or failed.
    Closed(Key),
    /// A full writer is under [`WRITE_LOW`] again.
    Drained(Key),
    /// A name resolution finished.
    Resolved(StreamHandle, Result<Vec<IpAddr>, ResolveError>),
    /// An exit stream's TCP connection is open.
    TargetUp(StreamHandle, TcpStream, SocketAddr),
    /// An exit stream's TCP connection failed.
    TargetFailed(StreamHandle, TargetError),
    /// A new TLS link certificate was made (its rotation is due).
    LinkCert(Box<TlsLinkCert>),
    /// The consensuses fetched from an authority, or why the fetch failed.
    Consensus(Result<Box<super::view::Fetched>, String>),
    /// A batch of descriptors fetched for the directory cache.
    Descriptors(super::view::Batch),
    /// The descriptor fetch ended; the errors of its failed requests.
    DescriptorsDone(Vec<String>),
    /// The self-test ended: what it did, or why the ORPort is not reachable.
    SelfTest(Result<super::selftest::Outcome, String>),
}

#[derive(Default)]
struct WState {
    bufs: VecDeque<Vec<u8>>,
    bytes: usize,
    close: bool,
    full: bool,
}

/// The loop's handle on a writer thread.
#[derive(Clone)]
pub struct Writer {
    st: Arc<(Mutex<WState>, Condvar)>,
}

impl Writer {
    /// Starts the writer thread of `sock` (a clone of the reader's socket).
    pub fn spawn(sock: TcpStream, key: Key, tx: SyncSender<Msg>) -> Writer {
        let st = Arc::new((Mutex::new(WState::default()), Condvar::new()));
        let st2 = st.clone();
        std::thread::spawn(move || write_loop(sock, key, tx, st2));
        Writer { st }
    }

    /// Queues `bytes`; returns true when the queue is now past [`WRITE_HIGH`] (the caller
    /// stops feeding it until [`Msg::Drained`]).
    pub fn push(&self, bytes: Vec<u8>) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let (m, cv) = &*self.st;
        let Ok(mut s) = m.lock() else { return true };
        s.bytes += bytes.len();
        s.bufs.push_back(bytes);
        cv.notify_one();
        if s.bytes > WRITE_HIGH {
            s.full = true;
        }
        s.full
    }

    /// Writes what is queued, then shuts the socket down.
    pub fn close(&self) {
        let (m, cv) = &*self.st;
        if let Ok(mut s) = m.lock() {
            s.close = true;
            cv.notify_one();
        }
    }
}

fn write_loop(
    mut sock: TcpStream,
    key: Key,
    tx: SyncSender<Msg>,
    st: Arc<(Mutex<WState>, Condvar)>,
) {
    let (m, cv) = &*st;
    loop {
        let next = {
            let Ok(mut s) = m.lock() else { return };
            loop {
                if let Some(b) = s.bufs.pop_front() {
                    break Some(b);
                }
                if s.close {
                    break None;
                }
                s = match cv.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
        };
        let Some(buf) = next else {
            let _ = sock.flush();
            // The relay closes a target or a connection only when it is done with it
            // (`Event::CloseTarget`, `Event::Disconnect`): the reader ends too.
            let _ = sock.shutdown(Shutdown::Both);
            return;
        };
        if sock.write_all(&buf).is_err() {
            let _ = sock.shutdown(Shutdown::Both);
            let _ = tx.send(Msg::Closed(key));
            return;
        }
        let drained = {
            let Ok(mut s) = m.lock() else { return };
            s.bytes -= buf.len();
            if s.full && s.bytes < WRITE_LOW {
                s.full = false;
                true
            } else {
                false
            }
        };
        if drained && tx.send(Msg::Drained(key)).is_err() {
            return;
        }
    }
}

/// Lets the loop stop a reader thread between reads (an exit stream whose data the relay
/// does not take yet).
#[derive(Clone, Default)]
pub struct Pause {
    st: Arc<(Mutex<bool>, Condvar)>,
}

impl Pause {
    /// Pauses (`true`) or resumes (`false`) the reader.
    pub fn set(&self, paused: bool) {
        let (m, cv) = &*self.st;
        if let Ok(mut p) = m.lock() {
            *p = paused;
            cv.notify_all();
        }
    }

    fn wait(&self) {
        let (m, cv) = &*self.st;
        let Ok(mut p) = m.lock() else { return };
        while *p {
            p = match cv.wait(p) {
                Ok(p) => p,
                Err(_) => return,
            };
        }
    }
}

/// Starts the reader thread of `sock`.
pub fn spawn_reader(mut sock: TcpStream, key: Key, tx: SyncSender<Msg>, pause: Option<Pause>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if let Some(p) = &pause {
                p.wait();
            }
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Msg::Closed(key));
                    return;
                }
                Ok(n) => {
                    if tx.send(Msg::Data(key, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}
