//! Which circuit's cell a channel sends next when several wait for it: C tor's EWMA
//! circuit scheduling (the "circuitmux" with its EWMA policy, from Tang and Goldberg's
//! CircEWMA, which proposal 324 counts on beside congestion control: "the combination of
//! RTT-based congestion signaling, a congestion window update algorithm, and Circuit-EWMA").
//!
//! Each circuit side on a channel keeps a count of the cells it sent there, decaying
//! exponentially with a half-life of `CircuitPriorityHalflifeMsec` (param-spec §2, default
//! 30 s) in steps of `CircuitPriorityTickSecs` (proposal 324 §6.5.3, default 10 s); when the
//! channel has room, the waiting circuit with the smallest count sends the next cell. A
//! circuit that has been quiet, or that just started, goes ahead of one that has been
//! sending in bulk, and two bulk circuits sharing a full channel alternate so that their
//! counts, and so their rates, stay equal: neither starves the other however much it has
//! queued. Without competition (nothing waits) a circuit moves its cells at once.
//!
//! As in C tor, counts are kept as of the start of the current tick: a cell sent a fraction
//! `f` into the tick adds `F^-f` (F the decay per tick), and when the tick advances every
//! count is multiplied by F per tick passed, so that counts taken at different times
//! compare.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use onion_circuit::Instant;

/// `CircuitPriorityHalflifeMsec`'s default (param-spec §2: 30,000 ms): after this long a
/// circuit's cell count has halved.
pub(crate) const HALFLIFE: Duration = Duration::from_secs(30);

/// `CircuitPriorityTickSecs`'s default (proposal 324 §6.5.3: 10 s): counts decay in steps
/// this long.
pub(crate) const TICK: Duration = Duration::from_secs(10);

/// Which way a circuit's cells leave on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Side {
    /// Toward the client (the circuit came in on this channel).
    ToClient,
    /// Toward the next hop.
    ToNext,
}

/// One circuit side's decaying count of cells sent.
#[derive(Debug, Clone, Copy)]
struct Count {
    /// Cells, as of the start of tick `tick`.
    value: f64,
    tick: u64,
    /// Whether it has cells waiting for room on the channel.
    waiting: bool,
}

/// A multiplicative hash of a circuit side's key: the keys are the relay's own circuit
/// numbers, handed out in sequence, never chosen by a peer, so a keyed hash's defence
/// against chosen collisions buys nothing here, and SipHash on every cell sent costs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads consecutive numbers over the high bits hashbrown uses.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

/// The EWMA scheduler of one channel: the counts of the circuit sides that use it and the
/// ones waiting for room. It holds one entry per circuit side on the channel, removed with
/// the circuit ([`CircMux::remove`]), so it is bounded by the channel's circuit limit.
#[derive(Debug)]
pub(crate) struct CircMux {
    counts: HashMap<(u64, Side), Count, BuildHasherDefault<SeqHasher>>,
    /// The waiting circuit sides, smallest count first: (count's bits as of `tick`, circuit,
    /// side). A non-negative `f64`'s bits order as the number does.
    waiting: BTreeSet<(u64, u64, Side)>,
    /// The current tick (virtual time divided by [`TICK`]).
    tick: u64,
    /// The count's decay per tick: `0.5 ^ (TICK / HALFLIFE)`.
    factor: f64,
    /// The weight of a cell sent at the instant kept, `factor ^ -f` ([`CircMux::sent`]):
    /// every cell a channel sends while the clock stands still weighs the same, so the power
    /// is computed once per instant rather than once per cell.
    weight: Option<(Instant, f64)>,
}

impl Default for CircMux {
    fn default() -> Self {
        CircMux::new(HALFLIFE)
    }
}

impl CircMux {
    /// A scheduler whose counts halve every `halflife`.
    pub(crate) fn new(halflife: Duration) -> Self {
        CircMux {
            counts: HashMap::default(),
            waiting: BTreeSet::new(),
            tick: 0,
            factor: Self::factor_of(halflife),
            weight: None,
        }
    }

    /// The decay per tick for `halflife`, at least 1e-9: below that (a half-life under a
    /// third of a second) a tick forgets everything anyway, and a zero factor would make a
    /// cell sent into a tick weigh `0^-f`, infinite.
    fn factor_of(halflife: Duration) -> f64 {
        let ticks = halflife.as_secs_f64().max(1e-3) / TICK.as_secs_f64();
        0.5f64.powf(1.0 / ticks).max(1e-9)
    }

    /// Counts halve every `halflife` from now on (a new consensus's
    /// `CircuitPriorityHalflifeMsec`, param-spec §2): the counts kept stay, and decay at the
    /// new rate from their tick on, as C tor changes its one scale factor under every
    /// circuit's count.
    pub(crate) fn set_halflife(&mut self, halflife: Duration) {
        self.factor = Self::factor_of(halflife);
        self.weight = None;
    }

    fn tick_of(now: Instant) -> (u64, f64) {
        let t = TICK.as_nanos() as u64;
        let ns = now.as_nanos();
        (ns / t, (ns % t) as f64 / t as f64)
    }

    /// `c` as of tick `tick`.
    fn scale(factor: f64, c: &mut Count, tick: u64) {
        if c.tick < tick {
            let n = i32::try_from(tick - c.tick).unwrap_or(i32::MAX);
            c.value *= factor.powi(n);
            // Far below one cell: as good as nothing sent.
            if c.value < 1e-9 {
                c.value = 0.0;
            }
            c.tick = tick;
        }
    }

    /// Move to the tick of `now`: every waiting count is rescaled (the order stays).
    fn advance(&mut self, now: Instant) {
        let (tick, _) = Self::tick_of(now);
        if tick <= self.tick {
            return;
        }
        self.tick = tick;
        let factor = self.factor;
        self.waiting.clear();
        for (&(k, side), c) in self.counts.iter_mut() {
            Self::scale(factor, c, tick);
            if c.waiting {
                self.waiting.insert((c.value.to_bits(), k, side));
            }
        }
    }

    /// Circuit `k`'s side `side` sent one cell on the channel at `now`.
    pub(crate) fn sent(&mut self, k: u64, side: Side, now: Instant) {
        self.advance(now);
        let (tick, frac) = Self::tick_of(now);
        let tick = tick.max(self.tick);
        let factor = self.factor;
        let inc = match self.weight {
            Some((at, w)) if at == now => w,
            _ => {
                let w = factor.powf(-frac);
                self.weight = Some((now, w));
                w
            }
        };
        let c = self.counts.entry((k, side)).or_insert(Count {
            value: 0.0,
            tick,
            waiting: false,
        });
        Self::scale(factor, c, tick);
        if c.waiting {
            self.waiting.remove(&(c.value.to_bits(), k, side));
        }
        c.value += inc;
        if c.waiting {
            self.waiting.insert((c.value.to_bits(), k, side));
        }
    }

    /// Circuit `k`'s side `side` has cells and waits for room on the channel.
    pub(crate) fn wait(&mut self, k: u64, side: Side, now: Instant) {
        self.advance(now);
        let tick = self.tick;
        let factor = self.factor;
        let c = self.counts.entry((k, side)).or_insert(Count {
            value: 0.0,
            tick,
            waiting: false,
        });
        if !c.waiting {
            Self::scale(factor, c, tick);
            c.waiting = true;
            self.waiting.insert((c.value.to_bits(), k, side));
        }
    }

    /// Circuit `k`'s side `side` has nothing more to send here.
    pub(crate) fn unwait(&mut self, k: u64, side: Side) {
        if let Some(c) = self.counts.get_mut(&(k, side)) {
            if c.waiting {
                c.waiting = false;
                self.waiting.remove(&(c.value.to_bits(), k, side));
            }
        }
    }

    /// Whether any circuit waits for room.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The waiting circuit side to send the next cell: the smallest count.
    pub(crate) fn first(&self) -> Option<(u64, Side)> {
        self.waiting.first().map(|&(_, k, side)| (k, side))
    }

    /// Forget circuit `k` (it no longer uses the channel).
    pub(crate) fn remove(&mut self, k: u64) {
        for side in [Side::ToClient, Side::ToNext] {
            self.unwait(k, side);
            self.counts.remove(&(k, side));
        }
    }

    /// Circuit sides with a count here.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// Serve `cells` cells from a mux where both circuits always wait; how many each sent.
    fn serve(m: &mut CircMux, from_ms: u64, cells: u64) -> [u64; 2] {
        let mut n = [0u64; 2];
        for i in 0..cells {
            let now = at(from_ms + i / 10);
            let (k, side) = m.first().expect("both wait");
            m.sent(k, side, now);
            n[k as usize] += 1;
        }
        n
    }

    #[test]
    fn a_new_circuit_goes_ahead_of_a_bulk_one_until_their_counts_meet() {
        let mut m = CircMux::default();
        // Circuit 0 sent 1,000 cells alone.
        for i in 0..1000 {
            m.sent(0, Side::ToClient, at(i));
        }
        m.wait(0, Side::ToClient, at(1000));
        m.wait(1, Side::ToClient, at(1000));
        assert_eq!(m.first(), Some((1, Side::ToClient)));
        // The newcomer sends about as many as the other had sent (decayed a little
        // meanwhile), then they alternate.
        let n = serve(&mut m, 1000, 1000);
        assert!(n[1] >= 980, "{n:?}");
        let n = serve(&mut m, 1100, 1000);
        assert!((490..=510).contains(&n[0]), "{n:?}");
        assert_eq!(n[0] + n[1], 1000);
    }

    #[test]
    fn two_bulk_circuits_alternate() {
        let mut m = CircMux::default();
        m.wait(0, Side::ToNext, at(0));
        m.wait(7, Side::ToClient, at(0));
        let mut n = [0u64; 2];
        for i in 0..10_000 {
            let (k, side) = m.first().expect("both wait");
            m.sent(k, side, at(i));
            n[usize::from(k == 7)] += 1;
            // Never more than one cell apart.
            assert!(n[0].abs_diff(n[1]) <= 1, "{n:?}");
        }
    }

    #[test]
    fn counts_halve_every_halflife() {
        let mut m = CircMux::default();
        for _ in 0..1000 {
            m.sent(0, Side::ToClient, at(0));
        }
        // 60 s later (two half-lives, six ticks): about 250 left. Circuit 1 sends 240 cells
        // and is still behind it; after 20 more it is ahead.
        for _ in 0..240 {
            m.sent(1, Side::ToClient, at(60_000));
        }
        m.wait(0, Side::ToClient, at(60_000));
        m.wait(1, Side::ToClient, at(60_000));
        assert_eq!(m.first(), Some((1, Side::ToClient)));
        for _ in 0..20 {
            m.sent(1, Side::ToClient, at(60_000));
        }
        assert_eq!(m.first(), Some((0, Side::ToClient)));
    }

    #[test]
    fn a_new_halflife_changes_the_decay_of_counts_already_kept() {
        // 1,000 cells at 0 s; 10 s (one tick) later: 1,000 × 0.5^(10/30) ≈ 794 under the
        // default half-life, 1,000 × 0.5^(10/10) = 500 once it is 10 s.
        let behind_by = |halflife: Option<Duration>| {
            let mut m = CircMux::default();
            for _ in 0..1000 {
                m.sent(0, Side::ToClient, at(0));
            }
            if let Some(h) = halflife {
                m.set_halflife(h);
            }
            m.wait(0, Side::ToClient, at(10_000));
            m.wait(1, Side::ToClient, at(10_000));
            // How many cells circuit 1 sends at 10 s before circuit 0 goes first.
            let mut n = 0;
            while m.first() == Some((1, Side::ToClient)) && n < 2000 {
                m.sent(1, Side::ToClient, at(10_000));
                n += 1;
            }
            n
        };
        assert!(
            (790..=800).contains(&behind_by(None)),
            "{}",
            behind_by(None)
        );
        let n = behind_by(Some(Duration::from_secs(10)));
        assert!((499..=501).contains(&n), "{n}");
        // The smallest half-life (1 ms): a tick later nothing is remembered, and a cell's
        // weight stays finite.
        assert_eq!(behind_by(Some(Duration::from_millis(1))), 1);
    }

    #[test]
    fn cells_sent_at_one_instant_weigh_as_computed_each_time() {
        // The weight of a cell is kept per instant: counts equal those of the formula,
        // also across instants and after the half-life changes at an instant already seen.
        let mut m = CircMux::default();
        let t = at(4_321);
        let frac = 4.321 / TICK.as_secs_f64();
        for _ in 0..3 {
            m.sent(0, Side::ToNext, t);
        }
        let w = m.factor.powf(-frac);
        assert!((m.counts[&(0, Side::ToNext)].value - 3.0 * w).abs() < 1e-12);
        m.set_halflife(Duration::from_secs(10));
        m.sent(1, Side::ToNext, t);
        let w10 = 0.5f64.powf(-frac);
        assert!((m.counts[&(1, Side::ToNext)].value - w10).abs() < 1e-12);
        m.sent(1, Side::ToNext, at(4_322));
        let w10b = 0.5f64.powf(-4.322 / TICK.as_secs_f64());
        assert!((m.counts[&(1, Side::ToNext)].value - (w10 + w10b)).abs() < 1e-12);
    }

    #[test]
    fn removed_circuits_are_forgotten() {
        let mut m = CircMux::default();
        m.sent(3, Side::ToClient, at(0));
        m.wait(3, Side::ToNext, at(0));
        assert!(m.has_waiting());
        m.remove(3);
        assert!(!m.has_waiting());
        assert_eq!(m.len(), 0);
        m.wait(4, Side::ToNext, at(0));
        m.unwait(4, Side::ToNext);
        assert_eq!(m.first(), None);
    }
}
