//! Congestion control for the sending side of a circuit: Tor Vegas (proposal 324).
//!
//! A congestion-controlled circuit replaces the fixed 1000-cell circuit package window
//! (tor-spec §7.3) by a congestion window `cwnd` that follows the measured round-trip time:
//! the sender may have at most `cwnd` RELAY_DATA cells in flight (sent and not yet
//! acknowledged, proposal 324 §2.2), the receiver sends a SENDME every `sendme_inc` DATA cells
//! (negotiated in the ntor-v3 handshake, proposal 324 §4.1), and each SENDME both acknowledges
//! `sendme_inc` cells and gives one RTT sample: the time from sending the cell that made the
//! peer send it to its arrival (§2.1).
//!
//! The machine is a pure function of its inputs, as every machine here: [`CongestionControl::
//! on_data_sent`] for each DATA cell packaged and [`CongestionControl::on_sendme`] for each
//! circuit SENDME, each with `now`. It runs exactly C tor 0.4.9's integer arithmetic
//! (`congestion_control_common.c`, `congestion_control_vegas.c`), so that both ends of a
//! circuit with C tor behave alike:
//!
//! - [`rtt`]: RTT samples, the N-EWMA smoothing (§2.1.2), min-RTT tracking and its reset at
//!   `cwnd_min`, and the clock-stall and clock-jump heuristics (§2.1.1) that discard samples.
//! - [`vegas`]: the window update (§3.3): limited slow start (RFC 3742), the gamma exit, the
//!   alpha/beta/delta steady-state rules once per window, and the "cwnd full" rule.
//!
//! Two deliberate differences from C tor, both only in degenerate configurations: C tor keeps
//! the "clock is broken" flag process-wide, here it belongs to the circuit (no global state);
//! and a window decrement that would wrap below zero in C's unsigned arithmetic saturates at
//! zero here (then `cwnd_min` applies) instead of wrapping to a huge window.

pub mod flowctl;
pub mod rtt;
pub mod vegas;

use std::collections::VecDeque;

use crate::Instant;

pub use vegas::Vegas;

/// Cells in one TLS record (16 KiB / 514-byte cells): C tor's unit for windows.
const TLS_RECORD_MAX_CELLS: u32 = (16 * 1024) / 514;
/// Cells in one OR-connection output buffer: the unit of the Vegas thresholds.
const OUTBUF_CELLS: u32 = 2 * TLS_RECORD_MAX_CELLS;

/// The parameters of one congestion-controlled circuit: the consensus values (proposal 324
/// §6.5; `onion_dir::ccparams` reads them) for the circuit's kind of path, and the
/// negotiated `sendme_inc`. [`Default`] is C tor 0.4.9's defaults for an exit circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcConfig {
    /// Cells acknowledged by one SENDME, as negotiated (≥ 1).
    pub sendme_inc: u8,
    /// `cc_cwnd_init`: the window at the start.
    pub cwnd_init: u32,
    /// `cc_cwnd_inc_pct_ss`: the slow-start increment per SENDME, percent of `sendme_inc`.
    pub cwnd_inc_pct_ss: u32,
    /// `cc_cwnd_inc`: the steady-state increment or decrement.
    pub cwnd_inc: u32,
    /// `cc_cwnd_inc_rate`: steady-state updates per window of SENDMEs.
    pub cwnd_inc_rate: u32,
    /// `cc_cwnd_min`: the smallest window after slow start.
    pub cwnd_min: u32,
    /// `cc_cwnd_max`: the largest window.
    pub cwnd_max: u32,
    /// `cc_rtt_reset_pct`: weight (percent) of the larger of EWMA and min RTT when min RTT is
    /// reset because the window sits at `cwnd_min`.
    pub rtt_reset_pct: u8,
    /// `cc_ewma_cwnd_pct`: EWMA count after slow start, percent of updates per window.
    pub ewma_cwnd_pct: u8,
    /// `cc_ewma_max`: the largest EWMA count.
    pub ewma_max: u8,
    /// `cc_ewma_ss`: the EWMA count in slow start.
    pub ewma_ss: u8,
    /// `cc_vegas_alpha_*`: grow the window below this queue use (cells).
    pub alpha: u32,
    /// `cc_vegas_beta_*`: shrink the window above this queue use.
    pub beta: u32,
    /// `cc_vegas_gamma_*`: leave slow start at this queue use.
    pub gamma: u32,
    /// `cc_vegas_delta_*`: above this queue use, cut the window to BDP + delta.
    pub delta: u32,
    /// `cc_sscap_*`: the RFC 3742 cap on slow-start growth.
    pub ss_cwnd_cap: u32,
    /// `cc_ss_max`: slow start ends at this window.
    pub ss_cwnd_max: u32,
    /// `cc_cwnd_full_gap`: the window is full while inflight is within this many
    /// `sendme_inc` of it.
    pub cwnd_full_gap: u32,
    /// `cc_cwnd_full_minpct`: the window is not full once inflight drops below this percent.
    pub cwnd_full_minpct: u32,
    /// `cc_cwnd_full_per_cwnd`: forget "full" once per window of SENDMEs (true) or at each
    /// window update (false).
    pub cwnd_full_per_cwnd: bool,
}

impl Default for CcConfig {
    fn default() -> Self {
        let o = OUTBUF_CELLS;
        CcConfig {
            sendme_inc: 31,
            cwnd_init: 4 * TLS_RECORD_MAX_CELLS,
            cwnd_inc_pct_ss: 100,
            cwnd_inc: 1,
            cwnd_inc_rate: TLS_RECORD_MAX_CELLS,
            cwnd_min: 4 * TLS_RECORD_MAX_CELLS,
            cwnd_max: i32::MAX as u32,
            rtt_reset_pct: 100,
            ewma_cwnd_pct: 50,
            ewma_max: 10,
            ewma_ss: 2,
            alpha: 3 * o,
            beta: 4 * o,
            gamma: 3 * o,
            delta: 5 * o,
            ss_cwnd_cap: 600,
            ss_cwnd_max: 5000,
            cwnd_full_gap: 4,
            cwnd_full_minpct: 25,
            cwnd_full_per_cwnd: true,
        }
    }
}

/// A congestion-control violation by the peer; it tears the circuit down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CcError {
    /// A circuit SENDME arrived while no cell that asks for one was in flight: the peer
    /// acknowledged cells we never sent (proposal 324 §2.2; C tor closes the circuit).
    #[error("congestion control: SENDME with no SENDME-eliciting cell in flight")]
    UnexpectedSendme,
    /// The relay answered a congestion-control request we did not make (proposal 324 §4.1:
    /// the response extension only answers a request).
    #[error("congestion control: response extension without a request")]
    UnrequestedResponse,
    /// The negotiated `sendme_inc` is 0 or more than one away from the consensus value (C tor
    /// refuses such a circuit: proposal 324 §6.5.1, `cc_sendme_inc`).
    #[error("congestion control: sendme_inc {got} outside {consensus} ± 1")]
    SendmeIncOutOfRange {
        /// The relay's value.
        got: u8,
        /// The consensus value.
        consensus: u8,
    },
    /// The ntor-v3 server message is not a valid extension list (proposal 332).
    #[error("congestion control: bad ntor-v3 server extensions: {0}")]
    BadExtensions(onion_cell::Error),
}

impl CcConfig {
    /// Whether a relay's negotiated `sendme_inc` is acceptable: not 0 and within one of
    /// this configuration's (the consensus) value, as C tor requires.
    pub fn sendme_inc_acceptable(&self, got: u8) -> bool {
        let c = i32::from(self.sendme_inc);
        got != 0 && (c - 1..=c + 1).contains(&i32::from(got))
    }
}

/// The sending side of a congestion-controlled circuit (one per circuit, kept for the hop
/// that negotiated it: the last hop).
///
/// Bounds: at most `cwnd` cells may be in flight ([`CongestionControl::can_send`]), and one
/// timestamp is kept per `sendme_inc` of them, so the timestamp queue never holds more than
/// `cwnd_max / sendme_inc + 1` entries; [`CongestionControl::on_data_sent`] refuses to grow
/// it further (the caller's misuse of sending past the window).
#[derive(Debug, Clone)]
pub struct CongestionControl {
    cfg: CcConfig,
    vegas: Vegas,
    rtt: rtt::RttEstimator,
    /// When each SENDME-eliciting cell in flight was sent, oldest first.
    pending: VecDeque<Instant>,
    /// Cells sent and not yet acknowledged.
    inflight: u64,
}

impl CongestionControl {
    /// A circuit's congestion control at the start: slow start, `cwnd = cwnd_init`.
    pub fn new(cfg: CcConfig) -> Self {
        let cfg = CcConfig {
            sendme_inc: cfg.sendme_inc.max(1),
            ..cfg
        };
        CongestionControl {
            vegas: Vegas::new(&cfg),
            rtt: rtt::RttEstimator::default(),
            pending: VecDeque::new(),
            inflight: 0,
            cfg,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CcConfig {
        &self.cfg
    }

    /// The current congestion window (cells).
    pub fn cwnd(&self) -> u64 {
        self.vegas.cwnd
    }

    /// DATA cells in flight: sent and not yet acknowledged by a SENDME.
    pub fn inflight(&self) -> u64 {
        self.inflight
    }

    /// Whether slow start is still running.
    pub fn in_slow_start(&self) -> bool {
        self.vegas.in_slow_start
    }

    /// The RTT estimator (smoothed, minimum and maximum RTT, clock stalls seen).
    pub fn rtt(&self) -> &rtt::RttEstimator {
        &self.rtt
    }

    /// The Vegas state (bandwidth-delay product estimate, "window full" flag, counters).
    pub fn vegas(&self) -> &Vegas {
        &self.vegas
    }

    /// How many more DATA cells may be sent now: `cwnd - inflight`, or 0 when the window
    /// was just cut below what is in flight (C tor's package window under congestion control).
    pub fn send_window(&self) -> u64 {
        self.vegas.cwnd.saturating_sub(self.inflight)
    }

    /// Payload bytes for the next DATA cell: the first cell of every `sendme_inc` is cut
    /// [`SENDME_UNPREDICTABLE_GAP`](crate::flow::SENDME_UNPREDICTABLE_GAP) bytes short so
    /// that its padding is random, which keeps the digest the SENDME echoes unpredictable
    /// (tor-spec §7.3), as fixed windows do per 100 cells.
    pub fn next_data_len(&self) -> usize {
        const FULL: usize = 498;
        let inc = u64::from(self.cfg.sendme_inc.max(1));
        if self.inflight % inc == 0 {
            FULL - crate::flow::SENDME_UNPREDICTABLE_GAP
        } else {
            FULL
        }
    }

    /// Whether one more DATA cell may be sent now.
    pub fn can_send(&self) -> bool {
        self.send_window() > 0
    }

    /// Whether the next DATA cell sent will make the peer send a SENDME: the caller then
    /// records that cell's digest for the authenticated SENDME (tor-spec §7.3.1). It is every
    /// `sendme_inc`-th cell counting what is in flight, never a cell sent with nothing in
    /// flight (C tor `circuit_sent_cell_for_sendme`).
    pub fn next_cell_elicits_sendme(&self) -> bool {
        self.inflight != 0 && (self.inflight + 1) % u64::from(self.cfg.sendme_inc) == 0
    }

    /// One DATA cell was sent at `now`. Returns whether it is a SENDME-eliciting cell (its
    /// send time is kept for the RTT sample). Returns `None`, changing nothing, if the window
    /// is closed: the caller must check [`CongestionControl::can_send`] first.
    pub fn on_data_sent(&mut self, now: Instant) -> Option<bool> {
        if !self.can_send() {
            return None;
        }
        let elicits = self.next_cell_elicits_sendme();
        self.inflight += 1;
        if elicits {
            self.pending.push_back(now);
        }
        Some(elicits)
    }

    /// A circuit SENDME arrived at `now` (after its digest was checked). Takes the RTT sample,
    /// runs Vegas and acknowledges `sendme_inc` cells (proposal 324 §2.1, §3.3).
    ///
    /// `chan_blocked` says whether the channel under the circuit refuses more cells now (C tor's
    /// "blocked on channel" congestion signal), `chan_queued` how many of this circuit's cells
    /// wait for it; a client with no such signal passes `false` and 0.
    pub fn on_sendme(
        &mut self,
        now: Instant,
        chan_blocked: bool,
        chan_queued: u64,
    ) -> Result<(), CcError> {
        let sent = self.pending.pop_front().ok_or(CcError::UnexpectedSendme)?;
        self.vegas.on_sendme(
            &self.cfg,
            &mut self.rtt,
            self.inflight,
            sent,
            now,
            chan_blocked,
            chan_queued,
        );
        self.inflight = self.inflight.saturating_sub(u64::from(self.cfg.sendme_inc));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
