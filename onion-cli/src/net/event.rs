//! Inputs for the event loop: one reader thread per socket, one queue into the loop.
//!
//! All protocol state (TLS sessions, channels, circuits, streams) lives in the loop's thread.
//! Reader threads only `read()` and forward what they got, so the loop can wait on a single
//! queue with a timeout (the earliest `poll_timeout()` of its machines) instead of polling
//! sockets. The queue is bounded: a reader that gets ahead of the loop blocks, so a fast
//! peer cannot make us buffer without limit.

use std::io;
use std::net::TcpStream;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

/// Identifies one watched socket.
pub type ConnId = u64;

/// Something that happened on a socket.
#[derive(Debug)]
pub enum Input {
    /// Bytes read from a socket.
    Bytes(ConnId, Vec<u8>),
    /// The socket reached end of stream (`None`) or failed.
    Closed(ConnId, Option<io::Error>),
    /// A listener accepted a connection (the SOCKS proxy's accept thread sends these).
    Accepted(TcpStream),
}

/// How many inputs may wait in the queue before readers block.
const QUEUE: usize = 256;

/// The loop's single source of inputs.
pub struct Inbox {
    tx: SyncSender<Input>,
    rx: Receiver<Input>,
    next_id: ConnId,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Inbox {
        let (tx, rx) = sync_channel(QUEUE);
        Inbox { tx, rx, next_id: 1 }
    }

    /// A fresh id and a sender into this inbox, for a socket the embedding reads on its own
    /// terms (the SOCKS proxy reads a client only as fast as its circuit can take the bytes).
    pub fn sender(&mut self) -> (ConnId, SyncSender<Input>) {
        let id = self.next_id;
        self.next_id += 1;
        (id, self.tx.clone())
    }

    /// The next input, waiting at most `timeout` (forever if `None`); `None` on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Input> {
        match timeout {
            Some(t) => match self.rx.recv_timeout(t) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
            },
            // The inbox holds a sender itself, so this cannot disconnect.
            None => self.rx.recv().ok(),
        }
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs from senders arrive in order under their ids; an empty inbox times out.
    #[test]
    fn inputs_arrive_in_order_under_their_ids() {
        let mut inbox = Inbox::new();
        let (a, tx_a) = inbox.sender();
        let (b, tx_b) = inbox.sender();
        assert_ne!(a, b);
        std::thread::spawn(move || {
            tx_a.send(Input::Bytes(a, b"hel".to_vec())).unwrap();
            tx_a.send(Input::Bytes(a, b"lo".to_vec())).unwrap();
            tx_b.send(Input::Closed(b, None)).unwrap();
        });
        let mut got = Vec::new();
        loop {
            match inbox.wait(Some(Duration::from_secs(5))) {
                Some(Input::Bytes(i, data)) if i == a => got.extend(data),
                Some(Input::Closed(i, None)) if i == b => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, b"hello");
        assert!(inbox.wait(Some(Duration::from_millis(10))).is_none());
    }
}
