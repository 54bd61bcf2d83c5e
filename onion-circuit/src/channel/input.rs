//! The bytes TLS delivered that a [`Channel`] has not consumed yet, as every embedder of a
//! channel keeps them.

use super::Channel;
use crate::Instant;

/// A buffer of this capacity or more is freed once empty, so that a burst leaves no
/// standing allocation behind on an idle channel.
const SHRINK_ABOVE: usize = 64 << 10;

/// Input a [`Channel`] has not consumed yet.
///
/// [`Channel::handle_input`] takes less than it is offered only while its event queue or
/// outbound buffer is full (or a responder waits for the TLS exporter): the embedder keeps
/// the rest, offers it again once it has drained the channel's events, and bounds what it
/// keeps, since a peer that sends faster than the channel's events are handled would
/// otherwise grow it without end. This is that store, with its limit;
/// [`Fed::again`] is the rule for when to offer the rest again.
///
/// ```
/// # use onion_circuit::channel::{ChanConfig, Channel, InputBuffer, PeerIds};
/// # use onion_circuit::Instant;
/// # let now = Instant::ZERO;
/// # let mut chan = Channel::initiator(ChanConfig::default(), PeerIds::default(), None, now,
/// #     onion_crypto::Timestamp::from_unix(1_700_000_000));
/// let mut input = InputBuffer::new();
/// let limit = 1 << 20; // what the embedder keeps at most per channel
/// // Bytes arrive from TLS:
/// if input.push(&[0, 0, 7, 0, 2, 0, 3], limit).is_err() {
///     // Over the limit: the peer floods; close the connection.
/// }
/// loop {
///     let fed = input.feed(&mut chan, now);
///     let mut evented = false;
///     while let Some(_ev) = chan.poll_event() {
///         evented = true; // handle it
///     }
///     if !fed.again(evented) {
///         break;
///     }
/// }
/// assert!(input.is_empty());
/// ```
#[derive(Debug, Default, Clone)]
pub struct InputBuffer {
    buf: Vec<u8>,
}

/// [`InputBuffer::push`] would hold more than its limit: nothing was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("channel input beyond its limit")]
pub struct InputFull;

/// What one [`InputBuffer::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Fed {
    /// Bytes the channel consumed.
    pub used: usize,
    /// Bytes still waiting after it.
    pub left: usize,
}

impl Fed {
    /// Whether to feed again once the channel's events are handled (`evented`: there were
    /// some): while bytes wait and the last round moved something (bytes consumed, or
    /// events drained that may have made room). A round that moved nothing ends the loop;
    /// the rest waits for the next input or timeout.
    pub fn again(self, evented: bool) -> bool {
        self.left > 0 && (self.used > 0 || evented)
    }
}

impl InputBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no byte waits.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Keep `bytes`, unless the buffer would then hold more than `limit` bytes: then nothing
    /// is kept and the caller closes the connection (a peer that sends more than the
    /// channel can take).
    pub fn push(&mut self, bytes: &[u8], limit: usize) -> Result<(), InputFull> {
        if self.buf.len().saturating_add(bytes.len()) > limit {
            return Err(InputFull);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// [`InputBuffer::push`] then [`InputBuffer::feed`] for bytes just received, without
    /// the copy when nothing waits: the channel reads `bytes` where they are and only what
    /// it leaves is kept. The limit applies as in [`InputBuffer::push`] (over it nothing is
    /// kept or fed, and the caller closes the connection).
    pub fn push_feed(
        &mut self,
        chan: &mut Channel,
        now: Instant,
        bytes: &[u8],
        limit: usize,
    ) -> Result<Fed, InputFull> {
        if !self.buf.is_empty() {
            self.push(bytes, limit)?;
            return Ok(self.feed(chan, now));
        }
        if bytes.len() > limit {
            return Err(InputFull);
        }
        let used = if bytes.is_empty() {
            0
        } else {
            chan.handle_input(now, bytes).min(bytes.len())
        };
        self.buf.extend_from_slice(bytes.get(used..).unwrap_or(&[]));
        Ok(Fed {
            used,
            left: self.buf.len(),
        })
    }

    /// Offer the waiting bytes to `chan` ([`Channel::handle_input`]) and drop those it
    /// consumed. With nothing waiting the channel is not called (its deadlines belong to
    /// [`Channel::handle_timeout`]).
    pub fn feed(&mut self, chan: &mut Channel, now: Instant) -> Fed {
        let used = if self.buf.is_empty() {
            0
        } else {
            chan.handle_input(now, &self.buf).min(self.buf.len())
        };
        self.buf.drain(..used);
        if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
            self.buf = Vec::new();
        }
        Fed {
            used,
            left: self.buf.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{ChanConfig, ChanEvent, PeerIds};
    use onion_crypto::Timestamp;

    fn chan(max_pending_events: usize) -> Channel {
        let config = ChanConfig {
            max_pending_events,
            ..ChanConfig::default()
        };
        Channel::initiator(
            config,
            PeerIds::default(),
            None,
            Instant::ZERO,
            Timestamp::from_unix(1_700_000_000),
        )
    }

    #[test]
    fn push_refuses_beyond_limit_and_keeps_nothing() {
        let mut b = InputBuffer::new();
        assert_eq!(b.push(&[1; 10], 16), Ok(()));
        assert_eq!(b.push(&[2; 7], 16), Err(InputFull));
        assert_eq!(b.len(), 10);
        assert_eq!(b.push(&[3; 6], 16), Ok(()));
        assert_eq!(b.len(), 16);
    }

    #[test]
    fn feed_drops_what_the_channel_took() {
        let mut ch = chan(16);
        let mut b = InputBuffer::new();
        // A partial VERSIONS header: the channel takes it (it keeps partial cells itself).
        b.push(&[0, 0, 7], 1 << 10).unwrap();
        let fed = b.feed(&mut ch, Instant::ZERO);
        assert_eq!(fed, Fed { used: 3, left: 0 });
        assert!(!fed.again(true));
        assert!(b.is_empty());
        // Nothing waits: the channel is not called and nothing moves.
        assert_eq!(b.feed(&mut ch, Instant::ZERO), Fed { used: 0, left: 0 });
    }

    #[test]
    fn garbage_closes_the_channel_and_is_all_consumed() {
        let mut ch = chan(16);
        let mut b = InputBuffer::new();
        // A VERSIONS cell of odd length is malformed.
        b.push(&[0, 0, 7, 0, 3, 0, 3, 0], 1 << 10).unwrap();
        let fed = b.feed(&mut ch, Instant::ZERO);
        assert_eq!(fed.left, 0);
        assert!(!fed.again(false));
        let mut closed = false;
        while let Some(ev) = ch.poll_event() {
            closed |= matches!(ev, ChanEvent::Closed(_));
        }
        assert!(closed);
    }

    #[test]
    fn push_feed_is_push_then_feed() {
        // A VERSIONS cell and the start of the next, in two deliveries: the same bytes are
        // taken and kept whether they went through the buffer or not.
        let bytes = [0u8, 0, 7, 0, 2, 0, 4, 0, 0];
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            let (mut c1, mut c2) = (chan(16), chan(16));
            let (mut b1, mut b2) = (InputBuffer::new(), InputBuffer::new());
            let mut fed1 = Vec::new();
            let mut fed2 = Vec::new();
            for part in [a, b] {
                b1.push(part, 1 << 10).unwrap();
                fed1.push(b1.feed(&mut c1, Instant::ZERO));
                fed2.push(b2.push_feed(&mut c2, Instant::ZERO, part, 1 << 10).unwrap());
            }
            assert_eq!(fed1, fed2, "split at {split}");
            assert_eq!(b1.buf, b2.buf);
            assert_eq!(
                c1.poll_transmit(&mut Vec::new()),
                c2.poll_transmit(&mut Vec::new())
            );
            assert_eq!(c1.is_closed(), c2.is_closed());
        }
    }

    #[test]
    fn push_feed_refuses_beyond_limit_and_feeds_nothing() {
        let mut ch = chan(16);
        let mut b = InputBuffer::new();
        assert_eq!(
            b.push_feed(&mut ch, Instant::ZERO, &[0; 17], 16),
            Err(InputFull)
        );
        assert!(b.is_empty());
        // Nothing reached the channel: a VERSIONS cell is still its first.
        let fed = b.push_feed(&mut ch, Instant::ZERO, &[0, 0, 7, 0, 2, 0, 4], 16);
        assert_eq!(fed, Ok(Fed { used: 7, left: 0 }));
        assert!(!ch.is_closed());
    }

    #[test]
    fn again_only_while_bytes_wait_and_something_moved() {
        assert!(Fed { used: 1, left: 1 }.again(false));
        assert!(Fed { used: 0, left: 1 }.again(true));
        assert!(!Fed { used: 0, left: 1 }.again(false));
        assert!(!Fed { used: 5, left: 0 }.again(true));
    }

    #[test]
    fn a_large_buffer_is_freed_once_empty() {
        let mut ch = chan(16);
        let mut b = InputBuffer::new();
        // A closed channel consumes everything it is offered.
        ch.close();
        b.push(&vec![0; SHRINK_ABOVE + 1], usize::MAX).unwrap();
        let fed = b.feed(&mut ch, Instant::ZERO);
        assert_eq!(fed.left, 0);
        assert_eq!(b.buf.capacity(), 0);
    }
}
