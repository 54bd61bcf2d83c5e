//! Tor Vegas: the congestion-window update run on every circuit SENDME (proposal 324 §3.3).
//!
//! Vegas estimates the bandwidth-delay product as `cwnd · min_rtt / ewma_rtt` (§3.1.2): the
//! part of the window the path carries without queueing. `queue_use = cwnd − BDP` is then
//! the number of cells sitting in queues along the path, and the thresholds act on it:
//!
//! - slow start: while `queue_use < gamma` (and the channel is not blocked), grow by
//!   `sendme_inc · cwnd_inc_pct_ss / 100` per SENDME — only when the window is actually full —
//!   with RFC 3742's limited growth above `ss_cwnd_cap`; at `gamma` set `cwnd = BDP + gamma`
//!   and leave slow start; slow start also ends at `ss_cwnd_max`;
//! - afterwards, once every `cwnd / (cwnd_inc_rate · sendme_inc)` SENDMEs (every SENDME when
//!   that rounds to 0): above `delta` cut to `BDP + delta − cwnd_inc`, above `beta` (or with
//!   a blocked channel) shrink by `cwnd_inc`, below `alpha` grow by `cwnd_inc` if the window
//!   is full; never below `cwnd_min`;
//! - the window is never above `cwnd_max`.
//!
//! "Full" (C tor 0.4.7.11 and later): the window counts as full once inflight comes within
//! `cwnd_full_gap · sendme_inc` of it and as not full once inflight drops below
//! `cwnd_full_minpct` percent of it; the flag is forgotten once per window of SENDMEs (or at
//! each update), so an application that does not fill the window does not grow it.

use super::rtt::RttEstimator;
use super::CcConfig;
use crate::Instant;

/// The Vegas state of one circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vegas {
    /// The congestion window (cells).
    pub cwnd: u64,
    /// Whether slow start is running.
    pub in_slow_start: bool,
    /// The bandwidth-delay product estimate (cells) of the last SENDME.
    pub bdp: u64,
    /// Whether the window was last seen full.
    pub cwnd_full: bool,
    /// Whether the channel was last reported blocked.
    pub blocked_chan: bool,
    /// SENDMEs until the next steady-state window update.
    pub next_cc_event: u64,
    /// SENDMEs until a window's worth has been acknowledged.
    pub next_cwnd_event: u64,
}

impl Vegas {
    /// The state at circuit start.
    pub fn new(cfg: &CcConfig) -> Self {
        Vegas {
            cwnd: u64::from(cfg.cwnd_init),
            in_slow_start: true,
            bdp: 0,
            cwnd_full: false,
            blocked_chan: false,
            next_cc_event: 1,
            next_cwnd_event: 0,
        }
    }

    fn sendme_inc(cfg: &CcConfig) -> u64 {
        u64::from(cfg.sendme_inc.max(1))
    }

    /// SENDMEs per window, rounded (C tor `SENDME_PER_CWND`).
    pub fn sendme_per_cwnd(&self, cfg: &CcConfig) -> u64 {
        let inc = Self::sendme_inc(cfg);
        (self.cwnd + inc / 2) / inc
    }

    /// SENDMEs between steady-state updates, rounded; 1 in slow start (C tor
    /// `CWND_UPDATE_RATE`). 0 means every SENDME.
    pub fn cwnd_update_rate(&self, cfg: &CcConfig) -> u64 {
        if self.in_slow_start {
            1
        } else {
            let per = u64::from(cfg.cwnd_inc_rate.max(1)) * Self::sendme_inc(cfg);
            (self.cwnd + per / 2) / per
        }
    }

    /// The N of the RTT N-EWMA (proposal 324 §2.1.2): `cc_ewma_ss` in slow start, else
    /// `cc_ewma_cwnd_pct` percent of the update rate capped at `cc_ewma_max`; at least 2.
    pub fn ewma_count(&self, cfg: &CcConfig) -> u64 {
        let n = if self.in_slow_start {
            u64::from(cfg.ewma_ss)
        } else {
            (self.cwnd_update_rate(cfg) * u64::from(cfg.ewma_cwnd_pct) / 100)
                .min(u64::from(cfg.ewma_max))
        };
        n.max(2)
    }

    /// The RFC 3742 limited slow-start increment.
    fn ss_inc(&self, cfg: &CcConfig) -> u64 {
        let inc = Self::sendme_inc(cfg);
        let cap = u64::from(cfg.ss_cwnd_cap);
        if self.cwnd <= cap {
            (u64::from(cfg.cwnd_inc_pct_ss) * inc + 50) / 100
        } else {
            ((inc * cap + self.cwnd) / (2 * self.cwnd)).max(1)
        }
    }

    /// Update the BDP estimate from the RTT state (C tor `congestion_control_update_circuit_bdp`).
    /// Returns whether Vegas should run on this SENDME: a sample was taken or the channel is
    /// blocked.
    fn update_bdp(
        &mut self,
        cfg: &CcConfig,
        rtt: &RttEstimator,
        curr_rtt_usec: u64,
        chan_blocked: bool,
        chan_queued: u64,
    ) -> bool {
        if rtt.ewma_usec == 0 {
            // The clock has stalled for the circuit's whole life: the window itself is the
            // only estimate, less what waits on a blocked channel.
            let mut cwnd = self.cwnd;
            let min = u64::from(cfg.cwnd_min);
            if chan_blocked {
                cwnd = if chan_queued >= cwnd {
                    min
                } else {
                    (cwnd - chan_queued).max(min)
                };
                self.blocked_chan = true;
            } else {
                self.blocked_chan = false;
            }
            self.bdp = cwnd;
            return chan_blocked;
        }
        self.bdp = self.cwnd.saturating_mul(rtt.min_usec) / rtt.ewma_usec;
        if chan_blocked {
            if !self.blocked_chan {
                self.next_cc_event = 0;
                self.blocked_chan = true;
            }
        } else if self.blocked_chan {
            self.blocked_chan = false;
            self.next_cc_event = 0;
        }
        chan_blocked || curr_rtt_usec != 0
    }

    /// Run on one SENDME (C tor `congestion_control_vegas_process_sendme` followed by the
    /// `cc_cwnd_max` clamp). `inflight` is the count before this SENDME's acknowledgement,
    /// `sent` when the acknowledged SENDME-eliciting cell was sent.
    #[allow(clippy::too_many_arguments)]
    pub fn on_sendme(
        &mut self,
        cfg: &CcConfig,
        rtt: &mut RttEstimator,
        inflight: u64,
        sent: Instant,
        now: Instant,
        chan_blocked: bool,
        chan_queued: u64,
    ) {
        self.next_cc_event = self.next_cc_event.saturating_sub(1);
        self.next_cwnd_event = self.next_cwnd_event.saturating_sub(1);

        let sample = u64::try_from((now - sent).as_micros()).unwrap_or(u64::MAX);
        let at_min = self.cwnd == u64::from(cfg.cwnd_min);
        let n = self.ewma_count(cfg);
        let curr = rtt.update(cfg, self.in_slow_start, at_min, n, sample);
        if !self.update_bdp(cfg, rtt, curr, chan_blocked, chan_queued) {
            return;
        }

        let queue_use = self.cwnd.saturating_sub(self.bdp);
        let inc = Self::sendme_inc(cfg);
        if inflight + u64::from(cfg.cwnd_full_gap) * inc >= self.cwnd {
            self.cwnd_full = true;
        } else if 100 * inflight < u64::from(cfg.cwnd_full_minpct) * self.cwnd {
            self.cwnd_full = false;
        }

        let cwnd_inc = u64::from(cfg.cwnd_inc);
        if self.in_slow_start {
            if queue_use < u64::from(cfg.gamma) && !self.blocked_chan {
                if self.cwnd_full {
                    let ss = self.ss_inc(cfg);
                    self.cwnd += ss;
                    if ss * self.sendme_per_cwnd(cfg) <= cwnd_inc * u64::from(cfg.cwnd_inc_rate) {
                        self.in_slow_start = false;
                    }
                }
            } else {
                self.cwnd = self.bdp + u64::from(cfg.gamma);
                self.in_slow_start = false;
            }
            if self.cwnd >= u64::from(cfg.ss_cwnd_max) {
                self.cwnd = u64::from(cfg.ss_cwnd_max);
                self.in_slow_start = false;
            }
        } else if self.next_cc_event == 0 {
            if queue_use > u64::from(cfg.delta) {
                self.cwnd = (self.bdp + u64::from(cfg.delta)).saturating_sub(cwnd_inc);
            } else if queue_use > u64::from(cfg.beta) || self.blocked_chan {
                self.cwnd = self.cwnd.saturating_sub(cwnd_inc);
            } else if self.cwnd_full && queue_use < u64::from(cfg.alpha) {
                self.cwnd += cwnd_inc;
            }
            self.cwnd = self.cwnd.max(u64::from(cfg.cwnd_min));
        }

        if self.next_cwnd_event == 0 {
            self.next_cwnd_event = self.sendme_per_cwnd(cfg);
        }
        if self.next_cc_event == 0 {
            self.next_cc_event = self.cwnd_update_rate(cfg);
        }
        let reset = if cfg.cwnd_full_per_cwnd {
            self.next_cwnd_event == self.sendme_per_cwnd(cfg)
        } else {
            self.next_cc_event == self.cwnd_update_rate(cfg)
        };
        if reset {
            self.cwnd_full = false;
        }
        self.cwnd = self.cwnd.min(u64::from(cfg.cwnd_max));
    }
}
