//! The circuit map of one channel and circuit-id allocation (tor-spec §5.1.1 "Choosing
//! circuit IDs in create cells", §5.4 "Tearing down circuits", §5.5.1 "Circuit ID Checks").
//!
//! The map records which circuit ids are in use on this channel and whether each is still
//! waiting for its CREATED/CREATED2/CREATED_FAST answer. It is bounded: a peer cannot make
//! it grow past [`super::ChanConfig::max_circuits`] entries.

use std::collections::HashMap;

use onion_cell::CircId;
use rand_core::CryptoRngCore;

/// How many random ids to try before giving up, as C tor does (tor-spec §5.1.1: "today's
/// Tor stops after 64").
pub(crate) const MAX_ID_ATTEMPTS: usize = 64;

/// Which side of the channel allocated a circuit id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircOrigin {
    /// We allocated it (and send, or sent, the CREATE cell).
    Local,
    /// The peer allocated it with a CREATE/CREATE2/CREATE_FAST cell.
    Remote,
}

/// The state of one circuit id on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircState {
    /// Reserved by [`super::Channel::new_circ_id`] or created by the peer, and the CREATED
    /// answer has not gone through yet.
    Pending,
    /// CREATED/CREATED2/CREATED_FAST went through: relay cells may flow.
    Open,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CircEntry {
    pub(crate) origin: CircOrigin,
    pub(crate) state: CircState,
}

/// The set of circuit ids in use on one channel.
///
/// Ids are chosen by the peer, so the map keeps std's keyed (SipHash) hasher against
/// collision flooding; since relay cells mostly come in runs on one circuit, the last entry
/// looked up is kept aside and answers most per-cell lookups without hashing.
#[derive(Debug, Clone)]
pub(crate) struct CircMap {
    entries: HashMap<CircId, CircEntry>,
    max: usize,
    /// A copy of the entry of `hot.0`, always equal to `entries[hot.0]` (or `hot.0` is zero,
    /// which is never in the map).
    hot: (CircId, CircEntry),
}

/// The `hot` value meaning "nothing cached": id zero is never a key.
const NO_HOT: (CircId, CircEntry) = (
    CircId::ZERO,
    CircEntry {
        origin: CircOrigin::Local,
        state: CircState::Pending,
    },
);

impl CircMap {
    pub(crate) fn new(max: usize) -> Self {
        CircMap {
            entries: HashMap::new(),
            max,
            hot: NO_HOT,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.max
    }

    pub(crate) fn get(&self, id: CircId) -> Option<CircEntry> {
        if id == self.hot.0 && !id.is_zero() {
            return Some(self.hot.1);
        }
        self.entries.get(&id).copied()
    }

    /// [`CircMap::get`] for the per-cell paths: also makes `id` the cached entry.
    pub(crate) fn get_hot(&mut self, id: CircId) -> Option<CircEntry> {
        if id == self.hot.0 && !id.is_zero() {
            return Some(self.hot.1);
        }
        let e = self.entries.get(&id).copied()?;
        self.hot = (id, e);
        Some(e)
    }

    pub(crate) fn insert(&mut self, id: CircId, origin: CircOrigin) -> bool {
        if id.is_zero() || self.is_full() || self.entries.contains_key(&id) {
            return false;
        }
        let e = CircEntry {
            origin,
            state: CircState::Pending,
        };
        self.entries.insert(id, e);
        self.hot = (id, e);
        true
    }

    pub(crate) fn set_open(&mut self, id: CircId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.state = CircState::Open;
            self.hot = (id, *e);
        }
    }

    pub(crate) fn remove(&mut self, id: CircId) -> Option<CircEntry> {
        if id == self.hot.0 {
            self.hot = NO_HOT;
        }
        self.entries.remove(&id)
    }

    pub(crate) fn clear(&mut self) {
        self.hot = NO_HOT;
        self.entries.clear();
    }

    /// Draws a fresh, unused id for a circuit we create.
    ///
    /// `wide` is true on link protocol 4 and later (4-byte ids). `high` says whether our
    /// ids carry the most significant bit: on link protocol 4+ the connection's initiator
    /// sets it and the responder clears it (§5.1.1). On link protocol 3 the spec bases the
    /// choice on the two identity keys, but "a client with no public key MAY choose any
    /// CircID"; we keep the same initiator-high/responder-low split there, which never
    /// collides either.
    pub(crate) fn allocate(
        &mut self,
        wide: bool,
        high: bool,
        rng: &mut impl CryptoRngCore,
    ) -> Option<CircId> {
        if self.is_full() {
            return None;
        }
        for _ in 0..MAX_ID_ATTEMPTS {
            let raw = rng.next_u32();
            let id = pick_id(raw, wide, high);
            if !id.is_zero() && !self.entries.contains_key(&id) {
                self.insert(id, CircOrigin::Local);
                return Some(id);
            }
        }
        None
    }
}

/// Maps a random 32-bit value to a circuit id of the right width and half.
pub(crate) fn pick_id(raw: u32, wide: bool, high: bool) -> CircId {
    let (mask, msb) = if wide {
        (0x7fff_ffffu32, 0x8000_0000u32)
    } else {
        (0x7fffu32, 0x8000u32)
    };
    let v = raw & mask;
    CircId::new(if high { v | msb } else { v })
}

/// True when `id` is in the half of the id space that the peer is allowed to allocate
/// (§5.1.1, link protocol 4 and later). On link protocol 3 any nonzero id is accepted.
pub(crate) fn peer_may_allocate(id: CircId, wide: bool, peer_is_initiator: bool) -> bool {
    if id.is_zero() {
        return false;
    }
    if !wide {
        return true;
    }
    id.high_bit_set() == peer_is_initiator
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn allocation_respects_halves() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut m = CircMap::new(1000);
        for _ in 0..200 {
            let id = m.allocate(true, true, &mut rng).expect("id");
            assert!(id.high_bit_set());
        }
        let mut m = CircMap::new(1000);
        for _ in 0..200 {
            let id = m.allocate(true, false, &mut rng).expect("id");
            assert!(!id.high_bit_set() && !id.is_zero());
        }
        let mut m = CircMap::new(1000);
        for _ in 0..200 {
            let id = m.allocate(false, true, &mut rng).expect("id");
            assert!(id.get() & 0x8000 != 0 && id.get() <= 0xffff);
        }
        assert_eq!(m.len(), 200);
    }

    #[test]
    fn map_is_bounded_and_ids_unique() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut m = CircMap::new(3);
        let a = m.allocate(true, true, &mut rng).expect("a");
        let b = m.allocate(true, true, &mut rng).expect("b");
        let c = m.allocate(true, true, &mut rng).expect("c");
        assert!(a != b && b != c && a != c);
        assert!(m.allocate(true, true, &mut rng).is_none());
        assert!(!m.insert(CircId::new(5), CircOrigin::Remote));
        m.remove(a);
        assert!(m.insert(CircId::new(5), CircOrigin::Remote));
        assert!(!m.insert(CircId::new(5), CircOrigin::Remote));
    }

    /// The cached entry always agrees with the map through inserts, state changes, removals
    /// and lookups of other ids.
    #[test]
    fn hot_entry_stays_consistent() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut m = CircMap::new(100);
        let a = m.allocate(true, true, &mut rng).expect("a");
        let b = CircId::new(0x0000_0042);
        assert!(m.insert(b, CircOrigin::Remote));
        assert_eq!(m.get(a).map(|e| e.state), Some(CircState::Pending));
        assert_eq!(m.get_hot(a).map(|e| e.origin), Some(CircOrigin::Local));
        m.set_open(b);
        assert_eq!(m.get_hot(a).map(|e| e.state), Some(CircState::Pending));
        assert_eq!(m.get(b).map(|e| e.state), Some(CircState::Open));
        m.set_open(a);
        assert_eq!(m.get_hot(a).map(|e| e.state), Some(CircState::Open));
        assert!(m.remove(a).is_some());
        assert!(m.get(a).is_none() && m.get_hot(a).is_none());
        assert_eq!(m.get_hot(b).map(|e| e.state), Some(CircState::Open));
        m.clear();
        assert!(m.get(b).is_none() && m.get_hot(b).is_none());
        assert!(m.get(CircId::ZERO).is_none() && m.get_hot(CircId::ZERO).is_none());
    }

    #[test]
    fn zero_never_used() {
        assert!(pick_id(0, true, false).is_zero());
        assert!(!peer_may_allocate(CircId::ZERO, true, true));
        let mut m = CircMap::new(10);
        assert!(!m.insert(CircId::ZERO, CircOrigin::Remote));
    }

    #[test]
    fn peer_half_rule() {
        assert!(peer_may_allocate(CircId::new(0x8000_0001), true, true));
        assert!(!peer_may_allocate(CircId::new(0x0000_0001), true, true));
        assert!(peer_may_allocate(CircId::new(0x0000_0001), true, false));
        assert!(!peer_may_allocate(CircId::new(0x8000_0001), true, false));
        assert!(peer_may_allocate(CircId::new(0x0001), false, false));
    }
}
