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
}
