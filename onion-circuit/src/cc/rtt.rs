//! RTT measurement for congestion control (proposal 324 §2.1, §2.1.1, §2.1.2).
//!
//! Each circuit SENDME gives one sample: the time from sending the cell that made the peer
//! send it to the SENDME's arrival. Samples are smoothed with an N-count EWMA whose N is
//! small in slow start and grows with the window afterwards; the minimum RTT is the smallest
//! smoothed value seen (not the smallest raw sample, which one lucky cell could set), and is
//! raised when the window has collapsed to `cwnd_min`, so that an abnormally low minimum
//! cannot wedge the circuit. Samples that look like a stalled or jumping clock are dropped.
//! All arithmetic is C tor's, in whole microseconds.

use super::CcConfig;

/// A new sample more than this many times larger or smaller than the smoothed RTT points at
/// a clock jump rather than the network (proposal 324 §2.1.1).
pub const DELTA_DISCREPANCY_RATIO_MAX: u64 = 5000;

/// The RTT state of one circuit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RttEstimator {
    /// The N-EWMA smoothed RTT (µs), 0 before the first accepted sample.
    pub ewma_usec: u64,
    /// The minimum smoothed RTT (µs), 0 before the first accepted sample.
    pub min_usec: u64,
    /// The largest raw sample accepted (µs).
    pub max_usec: u64,
    /// Samples dropped as a clock stall or jump.
    pub clock_stalls: u64,
    /// Times the minimum RTT was raised because the window sat at `cwnd_min`.
    pub rtt_resets: u64,
    /// Whether the last evidence says the clock is stalled: a zero-length sample sets it, a
    /// normal sample clears it (C tor keeps this process-wide; here it is per circuit).
    pub clock_broken: bool,
}

/// The N-count EWMA of proposal 324 §2.1.2: `(2·curr + (N−1)·prev) / (N+1)`, or `curr` when
/// there is no previous value.
pub fn n_count_ewma(curr: u64, prev: u64, n: u64) -> u64 {
    if prev == 0 {
        curr
    } else {
        (2 * curr + (n - 1) * prev) / (n + 1)
    }
}

/// A weighted mean of `a` and `b` giving `pct_max` percent to the larger (C tor
/// `percent_max_mix`): 0 is the minimum, 100 the maximum.
pub fn percent_max_mix(a: u64, b: u64, pct_max: u8) -> u64 {
    let (max, min) = (a.max(b), a.min(b));
    let pct = u64::from(pct_max.min(100));
    pct * max / 100 + (100 - pct) * min / 100
}

impl RttEstimator {
    /// Whether a sample `new_usec` must be dropped, given the smoothed RTT `old_usec`
    /// (proposal 324 §2.1.1). A zero sample is a stalled clock. The ratio tests apply only
    /// once slow start is over and a smoothed RTT exists: a sudden increase beyond
    /// [`DELTA_DISCREPANCY_RATIO_MAX`] is a forward jump (dropped); a sudden decrease is
    /// dropped only while the clock is already known to be stalled.
    pub fn stalled_or_jumped(&mut self, in_slow_start: bool, old_usec: u64, new_usec: u64) -> bool {
        if new_usec == 0 {
            self.clock_broken = true;
            return true;
        }
        if in_slow_start || self.ewma_usec == 0 {
            return false;
        }
        if old_usec > new_usec.saturating_mul(DELTA_DISCREPANCY_RATIO_MAX) {
            return self.clock_broken;
        }
        if new_usec > old_usec.saturating_mul(DELTA_DISCREPANCY_RATIO_MAX) {
            return true;
        }
        self.clock_broken = false;
        false
    }

    /// Take a raw sample `rtt_usec` (C tor `congestion_control_update_circuit_rtt`). `ewma_n`
    /// is the EWMA count for the current state, `at_cwnd_min` whether the window sits at
    /// `cwnd_min` after slow start. Returns the sample, or 0 if it was dropped.
    pub fn update(
        &mut self,
        cfg: &CcConfig,
        in_slow_start: bool,
        at_cwnd_min: bool,
        ewma_n: u64,
        rtt_usec: u64,
    ) -> u64 {
        if self.stalled_or_jumped(in_slow_start, self.ewma_usec, rtt_usec) {
            self.clock_stalls += 1;
            return 0;
        }
        self.ewma_usec = n_count_ewma(rtt_usec, self.ewma_usec, ewma_n);
        self.max_usec = self.max_usec.max(rtt_usec);
        if self.min_usec == 0 {
            self.min_usec = self.ewma_usec;
        } else if at_cwnd_min && !in_slow_start {
            self.min_usec = percent_max_mix(self.ewma_usec, self.min_usec, cfg.rtt_reset_pct);
            self.rtt_resets += 1;
        } else if self.ewma_usec < self.min_usec {
            self.min_usec = self.ewma_usec;
        }
        rtt_usec
    }
}
