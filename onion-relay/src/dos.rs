//! Per-address defences of dos-spec ("DoS mitigation parameters"): concurrent connections
//! per client address and the circuit-creation token bucket, as C tor's `dos.c` runs them.

use std::collections::HashMap;
use std::net::IpAddr;

use onion_circuit::Instant;

use crate::config::Limits;

/// Tokens are counted in thousandths, so that a rate of a few per second refills smoothly
/// without floating point.
const MILLI: u64 = 1000;

/// What one address is doing.
#[derive(Debug, Clone)]
struct AddrState {
    conns: usize,
    /// Circuit-creation tokens, in thousandths.
    tokens: u64,
    refilled: Instant,
    /// Refused until then (DoSCircuitCreationDefenseType 2).
    blocked_until: Option<Instant>,
}

/// The per-address table. Entries live while the address has connections or is blocked.
#[derive(Debug, Default, Clone)]
pub(crate) struct AddrTable {
    addrs: HashMap<IpAddr, AddrState>,
}

/// Why a CREATE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateVerdict {
    Allow,
    /// The address emptied its bucket now or earlier and is blocked.
    Refuse,
}

impl AddrTable {
    /// A connection from `ip` arrives: refused when it already has `max` (returns false).
    pub(crate) fn open(&mut self, ip: IpAddr, max: usize, limits: &Limits, now: Instant) -> bool {
        let st = self.addrs.entry(ip).or_insert_with(|| AddrState {
            conns: 0,
            tokens: u64::from(limits.create_burst) * MILLI,
            refilled: now,
            blocked_until: None,
        });
        if st.conns >= max {
            return false;
        }
        st.conns += 1;
        true
    }

    /// A connection from `ip` ended.
    pub(crate) fn close(&mut self, ip: IpAddr, now: Instant) {
        if let Some(st) = self.addrs.get_mut(&ip) {
            st.conns = st.conns.saturating_sub(1);
            let blocked = st.blocked_until.is_some_and(|t| t > now);
            if st.conns == 0 && !blocked {
                self.addrs.remove(&ip);
            }
        }
    }

    /// A client at `ip` sends a CREATE: C tor's `dos_cc_new_create_cell` then
    /// `dos_cc_get_defense_type`. The bucket refills at `create_rate` per second up to
    /// `create_burst` and is only drawn from while the address has at least
    /// `create_min_conns` connections; when it is empty the address is refused for
    /// `create_defense_period`.
    pub(crate) fn create(&mut self, ip: IpAddr, limits: &Limits, now: Instant) -> CreateVerdict {
        let Some(st) = self.addrs.get_mut(&ip) else {
            return CreateVerdict::Allow;
        };
        if let Some(t) = st.blocked_until {
            if t > now {
                return CreateVerdict::Refuse;
            }
            st.blocked_until = None;
        }
        let elapsed_ms = u64::try_from((now - st.refilled).as_millis()).unwrap_or(u64::MAX);
        let cap = u64::from(limits.create_burst) * MILLI;
        st.tokens = st
            .tokens
            .saturating_add(elapsed_ms.saturating_mul(u64::from(limits.create_rate)))
            .min(cap);
        st.refilled = now;
        if st.conns < limits.create_min_conns {
            return CreateVerdict::Allow;
        }
        if st.tokens >= MILLI {
            st.tokens -= MILLI;
            return CreateVerdict::Allow;
        }
        st.blocked_until = now.checked_add(limits.create_defense_period);
        CreateVerdict::Refuse
    }

    /// Forget blocks that ended for addresses without connections.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.addrs
            .retain(|_, s| s.conns > 0 || s.blocked_until.is_some_and(|t| t > now));
    }

    /// Number of addresses tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.addrs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;
    use std::net::Ipv4Addr;

    fn ip() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
    }

    #[test]
    fn connections_per_address_are_bounded() {
        let l = Limits::default();
        let mut t = AddrTable::default();
        let now = Instant::ZERO;
        assert!(t.open(ip(), 2, &l, now));
        assert!(t.open(ip(), 2, &l, now));
        assert!(!t.open(ip(), 2, &l, now));
        t.close(ip(), now);
        assert!(t.open(ip(), 2, &l, now));
        t.close(ip(), now);
        t.close(ip(), now);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn create_bucket_refills_at_the_rate_and_blocks_when_empty() {
        let l = Limits {
            create_rate: 2,
            create_burst: 4,
            create_min_conns: 1,
            create_defense_period: Duration::from_secs(10),
            ..Limits::default()
        };
        let mut t = AddrTable::default();
        let now = Instant::ZERO;
        assert!(t.open(ip(), 10, &l, now));
        for _ in 0..4 {
            assert_eq!(t.create(ip(), &l, now), CreateVerdict::Allow);
        }
        assert_eq!(t.create(ip(), &l, now), CreateVerdict::Refuse);
        // Blocked for the defense period even though the bucket refills meanwhile.
        let later = now + Duration::from_secs(5);
        assert_eq!(t.create(ip(), &l, later), CreateVerdict::Refuse);
        let after = now + Duration::from_secs(11);
        assert_eq!(t.create(ip(), &l, after), CreateVerdict::Allow);
        // Below the connection threshold nothing is counted.
        let other = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        let strict = Limits {
            create_min_conns: 3,
            ..l
        };
        assert!(t.open(other, 10, &strict, now));
        for _ in 0..100 {
            assert_eq!(t.create(other, &strict, now), CreateVerdict::Allow);
        }
    }

    #[test]
    fn queue_age_follows_the_front_of_the_queue() {
        let t = |s| Instant::ZERO + Duration::from_secs(s);
        let mut q = QueueAge::default();
        assert_eq!(q.oldest(), None);
        q.sync(3, t(1));
        q.sync(5, t(2));
        assert_eq!(q.oldest(), Some(t(1)));
        q.pop(2);
        assert_eq!(q.oldest(), Some(t(1)));
        q.pop(1);
        assert_eq!(q.oldest(), Some(t(2)));
        // Taken without being seen one by one: the length says how many.
        q.sync(1, t(3));
        assert_eq!(q.oldest(), Some(t(2)));
        q.sync(0, t(3));
        assert_eq!(q.oldest(), None);
        // Bounded: the newest kept time stands for later batches.
        for s in 0..100 {
            q.sync(s as usize + 1, t(10 + s));
        }
        assert_eq!(q.oldest(), Some(t(10)));
        assert!(q.marks.len() <= AGE_MARKS);
        q.pop(99);
        assert!(q.oldest().is_some());
        q.pop(1);
        assert_eq!(q.oldest(), None);
    }
}

/// How many insertion times one [`QueueAge`] keeps. Beyond it, new items share the newest
/// kept time (they count as older than they are), so the state stays bounded.
const AGE_MARKS: usize = 16;

/// When the items of one FIFO queue (cells, or bytes of a stream buffer) were queued, for
/// the out-of-memory handler: C tor stamps every queued cell and buffer chunk and closes
/// the circuits whose oldest queued data is oldest first (`circuits_handle_oom`, dos-spec
/// "Responding to low memory").
///
/// The queue is seen only through its length: [`QueueAge::sync`] after items were added
/// (they are stamped `now`) and [`QueueAge::pop`] for each item taken from the front.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueAge {
    /// `(total pushed after this batch, when)`, oldest first.
    marks: std::collections::VecDeque<(u64, Instant)>,
    pushed: u64,
    popped: u64,
}

impl QueueAge {
    /// Items taken from the front.
    pub(crate) fn pop(&mut self, n: u64) {
        self.popped = self.popped.saturating_add(n).min(self.pushed);
        while self.marks.front().is_some_and(|m| m.0 <= self.popped) {
            self.marks.pop_front();
        }
    }

    /// The queue holds `len` items now: more than we know of were added at `now`; fewer
    /// were taken from the front.
    pub(crate) fn sync(&mut self, len: usize, now: Instant) {
        let len = len as u64;
        let held = self.pushed - self.popped;
        if len < held {
            self.pop(held - len);
            return;
        }
        if len == held {
            return;
        }
        self.pushed += len - held;
        let full = self.marks.len() >= AGE_MARKS;
        match self.marks.back_mut() {
            Some(m) if m.1 >= now || full => m.0 = self.pushed,
            _ => self.marks.push_back((self.pushed, now)),
        }
    }

    /// When the oldest item still queued was added; `None` when empty.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.marks.front().map(|m| m.1)
    }
}
