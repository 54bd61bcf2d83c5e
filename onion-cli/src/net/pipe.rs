//! A local application's socket (a SOCKS client) that the event loop drives without ever
//! blocking on it, with flow control in both directions.
//!
//! The loop thread owns every state machine, so it must never wait for one slow application:
//! a blocking `write` to a client that does not read would stall every circuit. A [`Pipe`]
//! gives the socket two small threads of its own:
//!
//! - the **writer** drains an output buffer the loop fills ([`Pipe::push`] only appends and
//!   never blocks). The loop watches [`Pipe::queued`] and stops taking data for the stream
//!   when it is high (no more stream SENDMEs, tor-spec §7.4, so the exit stops sending);
//!   [`Pipe::wake_below`] asks the writer to wake the loop (an empty [`Input::Bytes`]) once
//!   the buffer has drained, so the loop need not poll.
//! - the **reader** reads only as many bytes as the loop granted ([`Pipe::grant`]): the loop
//!   grants what the stream and circuit package windows (tor-spec §7.3–7.4) can send, so the
//!   application is held back by TCP rather than by our memory.
//!
//! Both forward what happens ([`Input::Bytes`], [`Input::Closed`]) into the loop's inbox under
//! the id the inbox gave ([`super::event::Inbox::sender`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::event::{ConnId, Input};

/// Largest single read or write.
const CHUNK: usize = 16 * 1024;

/// Bytes queued for a socket at which what feeds it is held: for a local socket (a SOCKS
/// client, an onion service's target), its Tor stream (no stream SENDME goes out, so the far
/// end stops after one stream window, tor-spec §7.4); for a relay's socket, the client's
/// output to it ([`onion_client::Client::set_blocked`]). About one stream window (500 cells
/// of 498 bytes), so a reader that keeps up is never held.
pub const OUT_HIGH: usize = 256 * 1024;
/// The level at which what was held is released.
pub const OUT_LOW: usize = 64 * 1024;
/// How many bytes of a local socket's input may be read ahead of what the stream and circuit
/// package windows can send (tor-spec §7.3-7.4), at most (the windows usually allow less):
/// the rest stays in the kernel, so a fast sender is held back by TCP.
pub const READ_AHEAD: usize = 32 * 1024;

/// How many more bytes to let a local socket send: what `want` allows beyond the bytes it
/// already sent that wait here (`buffered`) and the read credit it has not used yet
/// (`in_flight`).
pub fn read_grant(want: usize, buffered: usize, in_flight: usize) -> usize {
    want.saturating_sub(buffered.saturating_add(in_flight))
}

/// Whether a socket's output is blocked now: it becomes so at [`OUT_HIGH`] queued bytes and
/// stays so until the queue drains to [`OUT_LOW`] (hysteresis, so that what feeds it is not
/// held and released on every cell).
pub fn next_blocked(blocked: bool, queued: usize) -> bool {
    if blocked {
        queued > OUT_LOW
    } else {
        queued >= OUT_HIGH
    }
}

/// How long a write may block once the connection is finishing.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// The state shared by the loop and the two threads.
#[derive(Default)]
struct State {
    /// Bytes for the application, not yet handed to the socket.
    out: VecDeque<u8>,
    /// Bytes the writer took from `out` and is writing now.
    writing: usize,
    /// Flush the queue, then close the socket (the stream ended).
    finish: bool,
    /// Stop at once, dropping the queue (the connection is aborted).
    closed: bool,
    /// How many more bytes the reader may read.
    credit: usize,
    /// Wake the loop once `out` + `writing` is at most this many bytes.
    wake_below: Option<usize>,
}

impl State {
    fn queued(&self) -> usize {
        self.out.len() + self.writing
    }
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a plain assignment, so a panicking holder cannot leave the state
        // half-changed: a poisoned lock is still usable.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }
}

/// One application socket; see the [module documentation](self).
pub struct Pipe {
    shared: Arc<Shared>,
    sock: TcpStream,
}

impl Pipe {
    /// Start the reader and writer of `sock`; their inputs go to `tx` with id `id`.
    /// The reader reads nothing until [`Pipe::grant`] allows it.
    pub fn start(sock: TcpStream, id: ConnId, tx: SyncSender<Input>) -> io::Result<Pipe> {
        let shared = Arc::new(Shared {
            st: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let (r, w) = (sock.try_clone()?, sock.try_clone()?);
        let (sr, sw) = (shared.clone(), shared.clone());
        let txr = tx.clone();
        std::thread::Builder::new()
            .name(format!("pipe-r{id}"))
            .spawn(move || reader(r, id, &sr, &txr))?;
        std::thread::Builder::new()
            .name(format!("pipe-w{id}"))
            .spawn(move || writer(w, id, &sw, &tx))?;
        Ok(Pipe { shared, sock })
    }

    /// Queue `data` for the application. Never blocks; the caller bounds the buffer by
    /// watching [`Pipe::queued`].
    pub fn push(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        if st.closed || st.finish {
            return;
        }
        st.out.extend(data);
        drop(st);
        self.shared.cv.notify_all();
    }

    /// Bytes queued for the application and not yet written.
    pub fn queued(&self) -> usize {
        self.shared.lock().queued()
    }

    /// Allow the reader `n` more bytes.
    pub fn grant(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut st = self.shared.lock();
        st.credit = st.credit.saturating_add(n);
        drop(st);
        self.shared.cv.notify_all();
    }

    /// Ask for one empty [`Input::Bytes`] once at most `n` bytes are queued (soon, if that
    /// is already so).
    pub fn wake_below(&self, n: usize) {
        self.shared.lock().wake_below = Some(n);
        // The writer checks the level whenever it wakes, idle or not.
        self.shared.cv.notify_all();
    }

    /// Flush the queue, then close the socket. Reading stops now. An application that reads
    /// nothing for [`FINISH_TIMEOUT`] loses the rest (the writer must not live forever).
    pub fn finish(self) {
        let _ = self.sock.set_write_timeout(Some(FINISH_TIMEOUT));
        self.shared.lock().finish = true;
        self.shared.cv.notify_all();
    }

    /// Close the socket now, dropping the queue.
    pub fn abort(self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.out = VecDeque::new();
        drop(st);
        self.shared.cv.notify_all();
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

fn reader(mut sock: TcpStream, id: ConnId, shared: &Shared, tx: &SyncSender<Input>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let want = {
            let mut st = shared.lock();
            loop {
                if st.closed || st.finish {
                    return;
                }
                if st.credit > 0 {
                    break st.credit.min(CHUNK);
                }
                st = shared.wait(st);
            }
        };
        let input = match sock.read(&mut buf[..want]) {
            Ok(0) => Input::Closed(id, None),
            Ok(n) => {
                let mut st = shared.lock();
                st.credit = st.credit.saturating_sub(n);
                Input::Bytes(id, buf[..n].to_vec())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Input::Closed(id, Some(e)),
        };
        let last = matches!(input, Input::Closed(..));
        if tx.send(input).is_err() || last {
            return;
        }
    }
}

fn writer(mut sock: TcpStream, id: ConnId, shared: &Shared, tx: &SyncSender<Input>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let mut wake = false;
        {
            let mut st = shared.lock();
            loop {
                if st.closed {
                    return;
                }
                if st.wake_below.is_some_and(|n| st.queued() <= n) {
                    st.wake_below = None;
                    wake = true;
                    break;
                }
                if !st.out.is_empty() {
                    let n = st.out.len().min(CHUNK);
                    chunk.clear();
                    chunk.extend(st.out.drain(..n));
                    st.writing = n;
                    if st.out.is_empty() && st.out.capacity() > 4 * CHUNK {
                        st.out.shrink_to_fit();
                    }
                    break;
                }
                if st.finish {
                    drop(st);
                    let _ = sock.flush();
                    let _ = sock.shutdown(Shutdown::Both);
                    return;
                }
                st = shared.wait(st);
            }
        }
        if wake {
            if tx.send(Input::Bytes(id, Vec::new())).is_err() {
                return;
            }
            continue;
        }
        let r = sock.write_all(&chunk);
        let mut st = shared.lock();
        st.writing = 0;
        match r {
            Ok(()) => {}
            Err(e) => {
                st.closed = true;
                st.out = VecDeque::new();
                drop(st);
                shared.cv.notify_all();
                let _ = sock.shutdown(Shutdown::Both);
                let _ = tx.send(Input::Closed(id, Some(e)));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_never_exceed_what_the_windows_allow() {
        // Nothing buffered, nothing granted yet: the whole allowance.
        assert_eq!(read_grant(READ_AHEAD, 0, 0), READ_AHEAD);
        // Credit not used yet counts against the allowance.
        assert_eq!(read_grant(4980, 0, 4000), 980);
        assert_eq!(read_grant(4980, 1000, 3980), 0);
        // Windows closed (capacity 0): nothing more is read, whatever waits.
        assert_eq!(read_grant(0, 0, 0), 0);
        assert_eq!(read_grant(0, 500, 100), 0);
        // More buffered than now allowed (the window shrank): no negative grant.
        assert_eq!(read_grant(498, 10_000, 0), 0);
        assert_eq!(read_grant(usize::MAX, usize::MAX, usize::MAX), 0);
    }

    #[test]
    fn blocking_has_hysteresis() {
        assert!(!next_blocked(false, OUT_HIGH - 1));
        assert!(next_blocked(false, OUT_HIGH));
        // Still blocked between the marks.
        assert!(next_blocked(true, OUT_LOW + 1));
        assert!(next_blocked(true, OUT_HIGH * 4));
        assert!(!next_blocked(true, OUT_LOW));
        assert!(!next_blocked(false, OUT_LOW));
        const { assert!(OUT_LOW < OUT_HIGH) };
        // A held stream still takes the window in flight: the buffer stays within bounds.
        const { assert!(OUT_HIGH >= 500 * 498) };
    }
    use std::net::TcpListener;
    use std::sync::mpsc::{sync_channel, Receiver};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    fn next(rx: &Receiver<Input>) -> Input {
        rx.recv_timeout(Duration::from_secs(5)).expect("an input")
    }

    #[test]
    fn reads_only_what_was_granted() {
        let (mut app, sock) = pair();
        let (tx, rx) = sync_channel(16);
        let p = Pipe::start(sock, 7, tx).unwrap();
        app.write_all(&[1u8; 100]).unwrap();
        // Nothing granted: nothing read.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        p.grant(30);
        let mut got = 0;
        while got < 30 {
            match next(&rx) {
                Input::Bytes(7, b) => got += b.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, 30);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        p.grant(1000);
        while got < 100 {
            match next(&rx) {
                Input::Bytes(7, b) => got += b.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, 100);
        drop(app);
        assert!(matches!(next(&rx), Input::Closed(7, None)));
        p.abort();
    }

    #[test]
    fn push_never_blocks_and_wakes_when_drained() {
        let (mut app, sock) = pair();
        let (tx, rx) = sync_channel(16);
        let p = Pipe::start(sock, 3, tx).unwrap();
        // Far more than the socket buffers hold, with nobody reading: push returns at once.
        let big = vec![0xABu8; 16 << 20];
        let t = std::time::Instant::now();
        p.push(&big);
        assert!(t.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(100));
        assert!(p.queued() > 1 << 20, "{}", p.queued());
        p.wake_below(1 << 20);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        // The application reads: the buffer drains and the loop is woken once.
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            app.read_to_end(&mut all).unwrap();
            all
        });
        assert!(matches!(next(&rx), Input::Bytes(3, b) if b.is_empty()));
        assert!(p.queued() <= 1 << 20);
        p.push(b"tail");
        p.finish();
        let all = reading.join().unwrap();
        assert_eq!(all.len(), big.len() + 4);
        assert!(all[..big.len()].iter().all(|&b| b == 0xAB));
        assert_eq!(&all[big.len()..], b"tail");
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn abort_drops_queued_data_and_closes() {
        let (mut app, sock) = pair();
        let (tx, _rx) = sync_channel(16);
        let p = Pipe::start(sock, 1, tx).unwrap();
        p.push(&vec![1u8; 32 << 20]);
        std::thread::sleep(Duration::from_millis(50));
        p.abort();
        app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        // The connection ends (EOF or reset) well before 32 MiB arrive.
        let _ = app.read_to_end(&mut all);
        assert!(all.len() < 32 << 20, "{}", all.len());
    }

    #[test]
    fn write_failure_is_reported() {
        let (app, sock) = pair();
        let (tx, rx) = sync_channel(16);
        let p = Pipe::start(sock, 9, tx).unwrap();
        drop(app);
        // Writing to a closed peer fails (EPIPE or reset) after a few writes.
        let mut closed = false;
        for _ in 0..50 {
            p.push(&[0u8; 64 * 1024]);
            if let Ok(Input::Closed(9, Some(_))) = rx.recv_timeout(Duration::from_millis(100)) {
                closed = true;
                break;
            }
        }
        assert!(closed);
        assert_eq!(p.queued(), 0);
    }
}
