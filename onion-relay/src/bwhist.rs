//! The relay's observed bandwidth: what its descriptor's `bandwidth` line states as
//! "bandwidth-observed" (dir-spec §2.1.1: "the maximum bandwidth ... the OR has been able
//! to sustain, within a ten-second period ... over the last day"), measured as C tor
//! measures it (its bandwidth history, `bwhist.c`):
//!
//! * bytes read and bytes written are counted separately, per second;
//! * a rolling sum over the last [`ROLLING_SECS`] seconds is kept, and its largest value in
//!   each [`PERIOD_SECS`] period is remembered, for the last [`PERIODS`] periods;
//! * the observed bandwidth is the smaller of the best read sum and the best write sum
//!   (not necessarily from the same window), divided by [`ROLLING_SECS`];
//! * the period under way counts only once it has been observed for longer than a minimum
//!   time (C tor's `TestingMinTimeToReportBandwidth`: a day, or nothing on a testing
//!   network, where it counts from its first second), so that a relay reports no
//!   bandwidth learned from its first hours unless the network is a testing one.
//!
//! Sans-IO: the caller gives the wall-clock time ([`Timestamp`], whole seconds) with every
//! count and query. The wall clock rather than the monotonic [`Instant`](crate::Instant):
//! the history is C tor's, which counts in `time_t` and saves its periods in its state
//! file to be read back after a restart, where a monotonic origin means nothing; its
//! periods span days, over which the two clocks drift apart anyway. A wall clock stepping
//! back loses nothing (the bytes count in the second under way). Memory is fixed:
//! [`ROLLING_SECS`] per-second counts and [`PERIODS`] maxima per direction.

use onion_crypto::Timestamp;

/// Length of the rolling window, seconds (C tor's `NUM_SECS_ROLLING_MEASURE`).
pub const ROLLING_SECS: u64 = 10;
/// Length of one period whose best window is remembered, seconds (C tor's
/// `NUM_SECS_BW_SUM_INTERVAL`: a day).
pub const PERIOD_SECS: u64 = 24 * 60 * 60;
/// Number of past periods remembered (C tor's `NUM_TOTALS`: five days' worth).
pub const PERIODS: usize = 5;
/// Minimum time the period under way must have been observed before its best window
/// counts, outside testing networks (C tor's default `TestingMinTimeToReportBandwidth`).
pub const MIN_OBSERVATION_SECS: u64 = 24 * 60 * 60;

/// One direction's history (C tor's `bw_array_t`, without the per-period totals).
#[derive(Debug, Clone)]
struct Direction {
    /// Bytes per second of the rolling window; `obs[cur]` is the second `cur_time`.
    obs: [u64; ROLLING_SECS as usize],
    cur: usize,
    /// The second being counted.
    cur_time: u64,
    /// Sum of the window's other seconds (all but `obs[cur]`).
    others: u64,
    /// Best window sum of the period under way.
    max_total: u64,
    /// When the period under way ends.
    next_period: u64,
    /// Best window sums of the past periods (ring).
    maxima: [u64; PERIODS],
    next_max: usize,
}

impl Direction {
    fn new(start: u64) -> Direction {
        Direction {
            obs: [0; ROLLING_SECS as usize],
            cur: 0,
            cur_time: start,
            others: 0,
            max_total: 0,
            next_period: start.saturating_add(PERIOD_SECS),
            maxima: [0; PERIODS],
            next_max: 0,
        }
    }

    /// Moves the current second forward to `when` (one step per second, at most one
    /// window plus one step per period skipped: a long gap is jumped over, since a
    /// window of idle seconds adds nothing).
    fn advance_to(&mut self, when: u64) {
        while when > self.cur_time {
            let total = self.others + self.obs[self.cur];
            self.max_total = self.max_total.max(total);
            let next = (self.cur + 1) % self.obs.len();
            self.others = total - self.obs[next];
            self.obs[next] = 0;
            self.cur = next;
            self.cur_time += 1;
            if self.cur_time >= self.next_period {
                self.maxima[self.next_max] = self.max_total;
                self.next_max = (self.next_max + 1) % PERIODS;
                self.max_total = 0;
                self.next_period = self.next_period.saturating_add(PERIOD_SECS);
            }
            if self.others == 0 && self.obs[self.cur] == 0 && when > self.cur_time {
                // The whole window is idle: skip to `when` (or the end of the period),
                // where nothing can change but the period boundary.
                let jump_to = when.min(self.next_period.saturating_sub(1));
                if jump_to > self.cur_time {
                    self.cur_time = jump_to;
                }
            }
        }
    }

    fn add(&mut self, when: u64, n: u64) {
        if when < self.cur_time {
            // C tor records nothing in the past; the clock stepped back: count it now.
            self.obs[self.cur] = self.obs[self.cur].saturating_add(n);
            return;
        }
        self.advance_to(when);
        self.obs[self.cur] = self.obs[self.cur].saturating_add(n);
    }

    /// The best window sum: the past periods', and the period under way's (including the
    /// window ending now) once it has been observed longer than `min_observation`.
    fn best(&self, min_observation: u64) -> u64 {
        let period_start = self.next_period.saturating_sub(PERIOD_SECS);
        let mut best = 0;
        if self.cur_time >= period_start.saturating_add(min_observation) {
            best = self.max_total.max(self.others + self.obs[self.cur]);
        }
        self.maxima.iter().copied().fold(best, u64::max)
    }
}

/// Bytes read and written by the relay over time, and the bandwidth they show.
#[derive(Debug, Clone)]
pub struct BandwidthHistory {
    read: Direction,
    written: Direction,
    min_observation: u64,
}

impl BandwidthHistory {
    /// A history starting at `now`. `testing_network`: the period under way
    /// counts at once (C tor's testing networks set `TestingMinTimeToReportBandwidth` to 0);
    /// otherwise only after [`MIN_OBSERVATION_SECS`].
    pub fn new(now: Timestamp, testing_network: bool) -> BandwidthHistory {
        BandwidthHistory {
            read: Direction::new(now.unix()),
            written: Direction::new(now.unix()),
            min_observation: if testing_network {
                0
            } else {
                MIN_OBSERVATION_SECS
            },
        }
    }

    /// `n` bytes were read at `now`.
    pub fn note_read(&mut self, now: Timestamp, n: u64) {
        self.read.add(now.unix(), n);
    }

    /// `n` bytes were written at `now`.
    pub fn note_written(&mut self, now: Timestamp, n: u64) {
        self.written.add(now.unix(), n);
    }

    /// The observed bandwidth at `now`, bytes per second: the smaller of the best read and
    /// the best write window, each over [`ROLLING_SECS`] seconds (C tor's
    /// `bwhist_bandwidth_assess`).
    pub fn observed(&mut self, now: Timestamp) -> u64 {
        self.read.advance_to(now.unix());
        self.written.advance_to(now.unix());
        let r = self.read.best(self.min_observation);
        let w = self.written.best(self.min_observation);
        r.min(w) / ROLLING_SECS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix(1_780_000_000);

    /// The observed rate is the best 10-second sum divided by 10, not a mean over a longer
    /// span: a 10-second burst of 100 kB/s followed by 50 idle seconds reads 100 kB/s.
    #[test]
    fn best_ten_second_window() {
        let mut h = BandwidthHistory::new(T0, true);
        for s in 0..10 {
            h.note_read(T0.add_secs(s), 100_000);
            h.note_written(T0.add_secs(s), 100_000);
        }
        assert_eq!(h.observed(T0.add_secs(60)), 100_000);
        // A slower but longer stretch later does not lower it.
        for s in 100..200 {
            h.note_read(T0.add_secs(s), 10_000);
            h.note_written(T0.add_secs(s), 10_000);
        }
        assert_eq!(h.observed(T0.add_secs(300)), 100_000);
    }

    /// The window slides by the second: 500 kB in 5 seconds straddling two aligned
    /// 10-second blocks still counts whole.
    #[test]
    fn window_slides_by_the_second() {
        let mut h = BandwidthHistory::new(T0, true);
        for s in 7..12 {
            h.note_read(T0.add_secs(s), 100_000);
            h.note_written(T0.add_secs(s), 100_000);
        }
        assert_eq!(h.observed(T0.add_secs(30)), 50_000);
    }

    /// Read and written are assessed separately and the smaller wins (a relay that only
    /// receives has no capacity to show).
    #[test]
    fn smaller_direction_wins() {
        let mut h = BandwidthHistory::new(T0, true);
        h.note_read(T0.add_secs(1), 1_000_000);
        assert_eq!(h.observed(T0.add_secs(20)), 0);
        h.note_written(T0.add_secs(30), 200_000);
        assert_eq!(h.observed(T0.add_secs(31)), 20_000);
        // The window under way counts before its second has passed.
        h.note_written(T0.add_secs(40), 10_000_000);
        assert_eq!(h.observed(T0.add_secs(40)), 100_000);
    }

    /// Outside a testing network the first day's windows do not count until the day has
    /// been observed; the best window of a past period counts for five days.
    #[test]
    fn periods_and_minimum_observation() {
        let mut h = BandwidthHistory::new(T0, false);
        h.note_read(T0.add_secs(5), 50_000);
        h.note_written(T0.add_secs(5), 50_000);
        assert_eq!(h.observed(T0.add_secs(3600)), 0);
        // The first period ends: its best window is remembered.
        assert_eq!(h.observed(T0.add_secs(PERIOD_SECS + 1)), 5_000);
        assert_eq!(h.observed(T0.add_secs(5 * PERIOD_SECS - 1)), 5_000);
        // Five periods later it is forgotten.
        assert_eq!(h.observed(T0.add_secs(6 * PERIOD_SECS + 1)), 0);
    }

    /// A testing network counts the period under way at once.
    #[test]
    fn testing_network_counts_at_once() {
        let mut h = BandwidthHistory::new(T0, true);
        h.note_read(T0, 514_000);
        h.note_written(T0, 514_000);
        assert_eq!(h.observed(T0), 51_400);
        assert_eq!(h.observed(T0.add_secs(2)), 51_400);
    }

    /// Counts given for an earlier second than the one under way (a clock stepping back)
    /// go to the current second instead of being lost or corrupting the window.
    #[test]
    fn clock_stepping_back() {
        let mut h = BandwidthHistory::new(T0.add_secs(100), true);
        h.note_read(T0, 10_000);
        h.note_written(T0, 10_000);
        assert_eq!(h.observed(T0.add_secs(100)), 1_000);
    }
}
