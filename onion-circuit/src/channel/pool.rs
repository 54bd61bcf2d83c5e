//! Spare relay-cell bodies, so that a relay forwarding cells does not allocate and free a
//! body for every cell.
//!
//! A channel hands every RELAY cell it receives to its embedder in a body of its own
//! ([`ChanMsg::Relay`] with an owned [`RelayPayload`]): the relay decrypts it in place and
//! forwards the same body (tor-spec §5.5). Once the next channel has written it out, the body
//! is free again; kept here, the next cell received is copied into it instead of into a
//! fresh allocation. The pool is bounded ([`BodyPool::new`]): a body beyond the bound is
//! freed, so it never holds more than its bound however cells flow.

use onion_cell::chancell::{ChanMsg, RelayPayload, CELL_BODY_LEN};

/// One relay-cell body.
pub type CellBody = [u8; CELL_BODY_LEN];

/// Bodies a relay-cell forwarder reuses ([`Channel::swap_body_pool`](super::Channel)).
#[derive(Debug, Default)]
pub struct BodyPool {
    /// Boxed because the boxes themselves are what is reused: a cell's owned body is one.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<CellBody>>,
    max: usize,
}

/// A copy keeps the bound, not the spare bodies (nothing to share, nothing lost).
impl Clone for BodyPool {
    fn clone(&self) -> Self {
        BodyPool::new(self.max)
    }
}

impl BodyPool {
    /// A pool that keeps at most `max` bodies (each [`CELL_BODY_LEN`] bytes).
    pub fn new(max: usize) -> Self {
        BodyPool {
            spare: Vec::new(),
            max,
        }
    }

    /// Bodies kept.
    pub fn len(&self) -> usize {
        self.spare.len()
    }

    /// Whether no body is kept.
    pub fn is_empty(&self) -> bool {
        self.spare.is_empty()
    }

    /// Keep `body` for reuse (freed if the pool is full).
    pub fn put(&mut self, body: Box<CellBody>) {
        if self.spare.len() < self.max {
            self.spare.push(body);
        }
    }

    /// Keep the body of a RELAY or RELAY_EARLY message that has been sent; other messages
    /// are dropped.
    pub fn put_msg(&mut self, msg: ChanMsg<'_>) {
        if let ChanMsg::Relay(RelayPayload::Owned(b))
        | ChanMsg::RelayEarly(RelayPayload::Owned(b)) = msg
        {
            self.put(b);
        }
    }

    /// A kept body (holding an earlier cell's bytes), if there is one.
    pub(crate) fn take(&mut self) -> Option<Box<CellBody>> {
        self.spare.pop()
    }

    /// An owned copy of `bytes`, in a kept body if there is one.
    pub(crate) fn copy_of(&mut self, bytes: &CellBody) -> Box<CellBody> {
        match self.spare.pop() {
            Some(mut b) => {
                *b = *bytes;
                b
            }
            None => Box::new(*bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_bound_and_reuses_what_it_keeps() {
        let mut p = BodyPool::new(2);
        for i in 0..5u8 {
            p.put(Box::new([i; CELL_BODY_LEN]));
        }
        assert_eq!(p.len(), 2);
        let b = p.copy_of(&[9; CELL_BODY_LEN]);
        assert_eq!(*b, [9; CELL_BODY_LEN]);
        assert_eq!(p.len(), 1);
        p.put_msg(ChanMsg::Relay(RelayPayload::Owned(b)));
        p.put_msg(ChanMsg::Padding);
        assert_eq!(p.len(), 2);
        // Empty: a fresh body.
        let mut empty = BodyPool::new(0);
        empty.put(Box::new([1; CELL_BODY_LEN]));
        assert!(empty.is_empty());
        assert_eq!(*empty.copy_of(&[3; CELL_BODY_LEN]), [3; CELL_BODY_LEN]);
    }
}
