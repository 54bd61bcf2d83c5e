//! Stream flow control on congestion-controlled circuits: XON/XOFF and the XON rate advisory
//! (proposal 324 §4).
//!
//! A congestion-controlled circuit has no stream windows: the edge that receives a stream's
//! data (the client toward its application, the exit toward the destination) tells the other
//! edge to stop with RELAY_XOFF when more than `cc_xoff_client` / `cc_xoff_exit` cells of it
//! wait in its buffer, and to go on with RELAY_XON when the buffer has drained (§4.1.1).
//!
//! The XON carries an advisory rate, `kbps_ewma` (§4.1.1, in units of 1000 bytes per second):
//! how fast the receiving edge has been draining its buffer, so that the sender can pace its
//! reading of the stream instead of filling the buffer again and drawing the next XOFF. This
//! module computes that rate as C tor 0.4.9 does (`flow_control_decide_xon`):
//!
//! - while data is buffered, the bytes written out are counted from the moment buffering
//!   began; once more than `cc_xon_rate` cells' worth has drained, a rate sample is taken
//!   (C tor divides the byte count of the *previous* measurement by the time of the current
//!   one; the first measurement uses its own count) and smoothed with the N-count EWMA of
//!   `cc_xon_ewma_cnt`;
//! - an XOFF clears the rate (the buffer filled, so the rate was wrong);
//! - with no XOFF outstanding, an advisory XON goes out when the smoothed rate moves more than
//!   `cc_xon_change_pct` percent from the rate last sent; with an XOFF outstanding, the XON
//!   goes out once the buffer is empty;
//! - after `cc_xon_rate` cells drained with the buffer empty, the rate is doubled (the reader
//!   is faster than the rate said), so the next change test sends a higher advisory.
//!
//! The sending edge ([`RateLimit`]) does as C tor's `circuit_process_stream_xon`: the rate
//! (bytes per second = `kbps_ewma` × 1000, 0 meaning unlimited) becomes both the rate and the
//! burst of a token bucket that bounds how fast it packages the stream.
//!
//! XOFF is not sent the moment the buffer passes its limit: as C tor 0.4.9 does, the first
//! arrival over the limit starts a grace period of [`XOFF_GRACE_PERIOD`] (5 ms), so that an
//! edge that received a burst of cells in one go gets a chance to write them out; XOFF goes
//! out at the first arrival after the grace period that still finds the buffer over the
//! limit, and a buffer back under the limit ends the grace period.
//!
//! One difference from C tor, not visible on the wire: C tor stops measuring while its
//! process-wide "monotonic clock unreliable" flag is set; here time only moves forward by
//! contract, so a zero-length interval simply gives no sample.

use core::time::Duration;

use super::rtt::n_count_ewma;
use crate::Instant;

/// Payload bytes of one full RELAY_DATA cell: the unit of the `cc_xoff_*` and `cc_xon_rate`
/// parameters (C tor multiplies them by `RELAY_PAYLOAD_SIZE`).
const CELL_BYTES: u64 = 498;

/// More than this many cells buffered means the buffer is not draining between writes
/// (C tor's `MAX_EXPECTED_CELL_BURST`): the XON decision is then taken on arrival too.
const MAX_EXPECTED_CELL_BURST: u64 = 32;

/// How long the buffer may stay over the XOFF limit before XOFF is sent (C tor 0.4.9's
/// `XOFF_GRACE_PERIOD_USEC`): XOFF goes out at the first arrival *more* than this after the
/// arrival that first found the buffer over the limit.
pub const XOFF_GRACE_PERIOD: Duration = Duration::from_millis(5);

/// The consensus parameters of stream flow control (proposal 324 §6.5.5;
/// `onion_dir::ccparams` reads them). [`Default`] is C tor 0.4.9's defaults. Counts are in
/// cells of 498 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowCtrlParams {
    /// `cc_xoff_client`: cells buffered at a client (or onion-service) edge before XOFF.
    pub xoff_client: u32,
    /// `cc_xoff_exit`: cells buffered at an exit edge before XOFF.
    pub xoff_exit: u32,
    /// `cc_xon_change_pct`: change of the drain rate, in percent, that sends an advisory XON.
    pub xon_change_pct: u32,
    /// `cc_xon_rate`: cells drained between two drain-rate samples.
    pub xon_rate: u32,
    /// `cc_xon_ewma_cnt`: N of the drain rate's N-count EWMA.
    pub xon_ewma_cnt: u32,
}

impl Default for FlowCtrlParams {
    fn default() -> Self {
        FlowCtrlParams {
            xoff_client: 500,
            xoff_exit: 500,
            xon_change_pct: 25,
            xon_rate: 500,
            xon_ewma_cnt: 2,
        }
    }
}

impl FlowCtrlParams {
    /// Bytes buffered at a client edge above which XOFF is sent.
    pub fn xoff_client_bytes(&self) -> u64 {
        u64::from(self.xoff_client) * CELL_BYTES
    }

    /// Bytes buffered at an exit edge above which XOFF is sent.
    pub fn xoff_exit_bytes(&self) -> u64 {
        u64::from(self.xoff_exit) * CELL_BYTES
    }

    fn xon_rate_bytes(&self) -> u64 {
        u64::from(self.xon_rate) * CELL_BYTES
    }
}

/// A flow-control message the receiving edge must send on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSignal {
    /// RELAY_XOFF: stop sending.
    Xoff,
    /// RELAY_XON with this advisory rate (1000 bytes per second; 0: no advice).
    Xon {
        /// The advisory rate.
        kbps_ewma: u32,
    },
}

/// The receiving edge's drain-rate measurement for one stream (C tor's `drained_bytes`,
/// `prev_drained_bytes`, `drain_start_usec`, `ewma_drain_rate` and `ewma_rate_last_sent`).
/// Whether an XOFF is outstanding is kept by the caller (the stream's `xoff_sent`) and passed
/// in, so there is one copy of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainRate {
    drained_bytes: u32,
    prev_drained_bytes: u32,
    drain_start: Option<Instant>,
    ewma_drain_rate: u32,
    ewma_rate_last_sent: u32,
    /// When an arrival first found the buffer over the XOFF limit (C tor's
    /// `xoff_grace_period_start_usec`); `None` while under it or once XOFF went out.
    xoff_grace_start: Option<Instant>,
}

impl DrainRate {
    /// The smoothed drain rate (1000 bytes per second), 0 if unknown.
    pub fn ewma_kbps(&self) -> u32 {
        self.ewma_drain_rate
    }

    /// The rate the last XON carried.
    pub fn last_sent_kbps(&self) -> u32 {
        self.ewma_rate_last_sent
    }

    /// Data arrived for the stream and `buffered` bytes of it now wait to be written out
    /// (C tor `flow_control_decide_xoff`): XOFF once the buffer has stayed past `limit`
    /// bytes for longer than [`XOFF_GRACE_PERIOD`], else possibly an advisory XON when the
    /// buffer is not draining.
    pub fn on_buffered(
        &mut self,
        p: &FlowCtrlParams,
        now: Instant,
        buffered: u64,
        limit: u64,
        xoff_sent: &mut bool,
    ) -> Option<FlowSignal> {
        let mut out = None;
        if buffered > limit {
            if !*xoff_sent {
                match self.xoff_grace_start {
                    None => self.xoff_grace_start = Some(now),
                    Some(start) if now > start + XOFF_GRACE_PERIOD => {
                        *xoff_sent = true;
                        // The rate was wrong if the buffer filled up.
                        self.ewma_drain_rate = 0;
                        self.xoff_grace_start = None;
                        out = Some(FlowSignal::Xoff);
                    }
                    Some(_) => {}
                }
            }
        } else {
            self.xoff_grace_start = None;
        }
        if buffered > MAX_EXPECTED_CELL_BURST * CELL_BYTES {
            // After an XOFF this cannot send (an XOFF is outstanding and the buffer is not
            // empty): it only starts the drain clock.
            let xon = self.on_drained(p, now, 0, buffered, xoff_sent);
            out = out.or(xon);
        }
        out
    }

    /// `written` bytes of the stream were written out and `buffered` still wait (C tor
    /// `flow_control_decide_xon`): updates the drain rate and says whether an XON is due,
    /// either the one that ends an XOFF (the buffer is empty) or an advisory one (the rate
    /// changed by more than `cc_xon_change_pct`).
    pub fn on_drained(
        &mut self,
        p: &FlowCtrlParams,
        now: Instant,
        written: u64,
        buffered: u64,
        xoff_sent: &mut bool,
    ) -> Option<FlowSignal> {
        let written = u32::try_from(written).unwrap_or(u32::MAX);
        if self.drained_bytes >= u32::MAX - written {
            // Halve the count and move the start halfway to now, keeping the rate.
            self.drained_bytes /= 2;
            if let Some(start) = self.drain_start {
                self.drain_start = Some(start + (now - start) / 2);
            }
        }
        self.drained_bytes = self.drained_bytes.saturating_add(written);
        if self.drain_start.is_none() && buffered > 0 {
            self.drain_start = Some(now);
            self.drained_bytes = 0;
        }
        if let Some(start) = self.drain_start {
            if u64::from(self.drained_bytes) > p.xon_rate_bytes() {
                if self.prev_drained_bytes == 0 {
                    self.prev_drained_bytes = self.drained_bytes;
                }
                let rate = drain_rate_kbps(self.prev_drained_bytes, now - start);
                self.prev_drained_bytes = self.drained_bytes;
                if rate != 0 {
                    self.ewma_drain_rate = u32::try_from(n_count_ewma(
                        u64::from(rate),
                        u64::from(self.ewma_drain_rate),
                        u64::from(p.xon_ewma_cnt),
                    ))
                    .unwrap_or(u32::MAX);
                    self.drained_bytes = 0;
                    self.drain_start = None;
                }
            }
        }
        let mut out = None;
        if !*xoff_sent {
            if self.rate_changed(p) {
                out = Some(self.xon(xoff_sent));
            }
        } else if buffered == 0 {
            out = Some(self.xon(xoff_sent));
        }
        if buffered == 0 {
            self.drain_start = None;
            if u64::from(self.drained_bytes) >= p.xon_rate_bytes() && self.ewma_rate_last_sent != 0
            {
                // Drained a whole measurement with nothing waiting: the reader is faster than
                // the rate says.
                self.ewma_drain_rate = self.ewma_drain_rate.saturating_mul(2).min(i32::MAX as u32);
                self.prev_drained_bytes = self.drained_bytes;
                self.drained_bytes = 0;
            }
        }
        out
    }

    /// The XON to send now (C tor `circuit_send_stream_xon`): it carries the current rate,
    /// which is remembered as the last sent, and ends the outstanding XOFF.
    pub fn xon(&mut self, xoff_sent: &mut bool) -> FlowSignal {
        self.ewma_rate_last_sent = self.ewma_drain_rate;
        *xoff_sent = false;
        FlowSignal::Xon {
            kbps_ewma: self.ewma_drain_rate,
        }
    }

    /// An XOFF forced by the embedding (it holds the stream): clears the rate as an XOFF on a
    /// full buffer does.
    pub fn xoff(&mut self, xoff_sent: &mut bool) -> FlowSignal {
        *xoff_sent = true;
        self.ewma_drain_rate = 0;
        FlowSignal::Xoff
    }

    /// Whether the smoothed rate moved more than `cc_xon_change_pct` from the last one sent
    /// (never before a rate was sent).
    fn rate_changed(&self, p: &FlowCtrlParams) -> bool {
        let last = u64::from(self.ewma_rate_last_sent);
        if last == 0 {
            return false;
        }
        let cur = u64::from(self.ewma_drain_rate);
        let pct = u64::from(p.xon_change_pct);
        cur > (100 + pct) * last / 100 || cur < (100u64.saturating_sub(pct)) * last / 100
    }
}

/// Bytes over an interval, in 1000 bytes per second (C tor `compute_drain_rate`): at least 1,
/// saturating at `i32::MAX`, 0 for an empty interval (no sample).
fn drain_rate_kbps(bytes: u32, over: Duration) -> u32 {
    let usec = u64::try_from(over.as_micros()).unwrap_or(u64::MAX);
    if usec == 0 {
        return 0;
    }
    let bytes = u64::from(bytes);
    if bytes > (i32::MAX / 1000) as u64 {
        return i32::MAX as u32;
    }
    u32::try_from((bytes * 1000) / usec)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The sending edge's pacing of one stream after an XON with a rate (C tor adjusts the edge
/// connection's token bucket): at most `rate` bytes per second with a burst of one second's
/// worth. Unlimited until an XON carries a rate, and again after an XON with rate 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Bytes per second; `None`: unlimited.
    rate: Option<u64>,
    tokens: u64,
    last: Option<Instant>,
}

impl RateLimit {
    /// The rate in force, bytes per second (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// An XON arrived at `now` with `kbps_ewma`: the bucket's rate and burst become
    /// `kbps_ewma × 1000` bytes per second (0, or more than `i32::MAX`, means unlimited), and
    /// what it holds is cut to the new burst.
    pub fn on_xon(&mut self, now: Instant, kbps_ewma: u32) {
        let rate = u64::from(kbps_ewma) * 1000;
        if rate == 0 || rate > i32::MAX as u64 {
            *self = RateLimit::default();
            return;
        }
        self.refill(now);
        // Coming from unlimited, the bucket is full.
        let held = if self.rate.is_none() {
            rate
        } else {
            self.tokens
        };
        self.rate = Some(rate);
        self.tokens = held.min(rate);
        self.last = Some(now);
    }

    fn refill(&mut self, now: Instant) {
        let (Some(rate), Some(last)) = (self.rate, self.last) else {
            return;
        };
        let elapsed = u64::try_from((now - last).as_nanos()).unwrap_or(u64::MAX);
        let add = u128::from(elapsed) * u128::from(rate) / 1_000_000_000;
        if add > 0 {
            self.tokens = (u128::from(self.tokens) + add).min(u128::from(rate)) as u64;
            self.last = Some(now);
        }
    }

    /// Bytes that may be packaged at `now` (`u64::MAX` when unlimited).
    pub fn available(&mut self, now: Instant) -> u64 {
        match self.rate {
            None => u64::MAX,
            Some(_) => {
                self.refill(now);
                self.tokens
            }
        }
    }

    /// `n` bytes were packaged.
    pub fn take(&mut self, n: u64) {
        if self.rate.is_some() {
            self.tokens = self.tokens.saturating_sub(n);
        }
    }

    /// When at least `want` bytes (capped at the burst) will be available, if limited and
    /// not yet.
    pub fn ready_at(&self, want: u64) -> Option<Instant> {
        let (rate, last) = (self.rate?, self.last?);
        let want = want.min(rate);
        if self.tokens >= want {
            return None;
        }
        let missing = want - self.tokens;
        let nanos = (u128::from(missing) * 1_000_000_000).div_ceil(u128::from(rate));
        Some(last + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

/// The flow-control state of one stream on a congestion-controlled circuit, kept only once
/// it is needed (a rate measured or received).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFlowCtl {
    /// As the receiving edge: the drain rate for our XONs.
    pub drain: DrainRate,
    /// As the sending edge: the pacing the other edge's last XON asked for.
    pub limit: RateLimit,
    /// Data was refused for lack of tokens: the embedding waits for [`RateLimit::ready_at`].
    pub starved: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    const CELL: u64 = CELL_BYTES;

    /// A reader draining 498 kB/s behind a full buffer: XOFF once the buffer has stayed
    /// over 500 cells for more than the grace period, the rate measured over `cc_xon_rate`
    /// cells, and the XON that ends the XOFF carries it.
    #[test]
    fn xoff_then_xon_with_measured_rate() {
        let p = FlowCtrlParams::default();
        let mut d = DrainRate::default();
        let mut xoff = false;
        let limit = p.xoff_client_bytes();
        assert_eq!(d.on_buffered(&p, at(0), 100 * CELL, limit, &mut xoff), None);
        // Over the limit at 1 ms: the grace period starts, no XOFF yet.
        assert_eq!(d.on_buffered(&p, at(1), 501 * CELL, limit, &mut xoff), None);
        assert!(!xoff);
        // 6 ms is exactly the grace period later: still nothing (C tor's test is "later
        // than"); 7 ms is past it.
        assert_eq!(d.on_buffered(&p, at(6), 550 * CELL, limit, &mut xoff), None);
        assert_eq!(
            d.on_buffered(&p, at(7), 600 * CELL, limit, &mut xoff),
            Some(FlowSignal::Xoff)
        );
        assert!(xoff);
        // A later arrival over the limit sends nothing more.
        assert_eq!(
            d.on_buffered(&p, at(20), 600 * CELL, limit, &mut xoff),
            None
        );
        // Drain 498 bytes per ms from t = 8 ms; the buffer holds 600 cells.
        let mut buffered = 600 * CELL;
        let mut out = Vec::new();
        for ms in 8..=607 {
            buffered -= CELL;
            if let Some(s) = d.on_drained(&p, at(ms), CELL, buffered, &mut xoff) {
                out.push((ms, s));
            }
        }
        // The first sample, at 508 ms (the 501st cell): 501 cells drained over the 508 ms
        // since buffering began (t = 0: the first arrival already held more than 32 cells)
        // → 501 × 498 × 1000 / 508,000 µs = 491 kB/s.
        assert_eq!(d.ewma_kbps(), 491);
        assert_eq!(out, vec![(607, FlowSignal::Xon { kbps_ewma: 491 })]);
        assert!(!xoff);
        assert_eq!(d.last_sent_kbps(), 491);
    }

    /// The XOFF grace period (C tor 0.4.9 `flow_control_decide_xoff`): a buffer that passes
    /// the limit and is back under it within 5 ms draws no XOFF, and the next crossing starts
    /// a new grace period; with no arrival after the grace period, no XOFF either.
    #[test]
    fn xoff_grace_period() {
        let p = FlowCtrlParams::default();
        let limit = p.xoff_exit_bytes();
        let mut d = DrainRate::default();
        let mut xoff = false;
        let us = |u: u64| Instant::ZERO + Duration::from_micros(u);
        // Over at 0: grace starts. Under at 3 ms (the edge wrote most of it out): it ends.
        assert_eq!(d.on_buffered(&p, us(0), 501 * CELL, limit, &mut xoff), None);
        assert_eq!(
            d.on_buffered(&p, us(3_000), 10 * CELL, limit, &mut xoff),
            None
        );
        // Over again at 6 ms, more than 5 ms after the first crossing: a new grace period,
        // not an XOFF.
        assert_eq!(
            d.on_buffered(&p, us(6_000), 501 * CELL, limit, &mut xoff),
            None
        );
        assert_eq!(
            d.on_buffered(&p, us(11_000), 520 * CELL, limit, &mut xoff),
            None
        );
        assert!(!xoff);
        // 5.001 ms after the new crossing and still over: XOFF, once.
        assert_eq!(
            d.on_buffered(&p, us(11_001), 530 * CELL, limit, &mut xoff),
            Some(FlowSignal::Xoff)
        );
        assert!(xoff);
        assert_eq!(
            d.on_buffered(&p, us(30_000), 600 * CELL, limit, &mut xoff),
            None
        );
    }

    /// C tor's quirk: later samples divide the previous measurement's bytes by the current
    /// one's time, and the EWMA (N = 2) weighs the new sample 2/3.
    #[test]
    fn later_samples_use_previous_byte_count() {
        let p = FlowCtrlParams {
            xon_rate: 10,
            ..FlowCtrlParams::default()
        };
        let mut d = DrainRate::default();
        let mut xoff = false;
        // Buffering starts at 0 ms; 11 cells drain by 10 ms: first sample 5478 B / 10 ms.
        assert_eq!(d.on_drained(&p, at(0), 0, 100 * CELL, &mut xoff), None);
        assert_eq!(
            d.on_drained(&p, at(10), 11 * CELL, 89 * CELL, &mut xoff),
            None
        );
        assert_eq!(d.ewma_kbps(), 547);
        // Measurement restarts at 20 ms; 22 cells by 30 ms: the sample is the previous count
        // (11 cells) over 10 ms again, 547; EWMA (2·547 + 547) / 3 = 547.
        assert_eq!(d.on_drained(&p, at(20), 0, 80 * CELL, &mut xoff), None);
        assert_eq!(
            d.on_drained(&p, at(30), 22 * CELL, 58 * CELL, &mut xoff),
            None
        );
        assert_eq!(d.ewma_kbps(), 547);
        // Next: 11 cells over 40 ms, sample = 22 cells / 40 ms = 273; EWMA (2·273+547)/3 = 364.
        assert_eq!(d.on_drained(&p, at(40), 0, 50 * CELL, &mut xoff), None);
        assert_eq!(
            d.on_drained(&p, at(80), 11 * CELL, 39 * CELL, &mut xoff),
            None
        );
        assert_eq!(d.ewma_kbps(), 364);
    }

    /// An advisory XON goes out, without XOFF, once the rate moves more than 25 % from the
    /// last one sent; and after a measurement's worth drained with an empty buffer, the rate
    /// doubles.
    #[test]
    fn advisory_xon_on_rate_change_and_doubling() {
        let p = FlowCtrlParams {
            xon_rate: 10,
            ..FlowCtrlParams::default()
        };
        let mut d = DrainRate::default();
        let mut xoff = false;
        d.on_drained(&p, at(0), 0, 100 * CELL, &mut xoff);
        d.on_drained(&p, at(10), 11 * CELL, 89 * CELL, &mut xoff);
        assert_eq!(d.ewma_kbps(), 547);
        // No rate sent yet: no advisory XON. Send one (as an XOFF/XON cycle would).
        assert_eq!(d.xon(&mut xoff), FlowSignal::Xon { kbps_ewma: 547 });
        // The buffer empties and 11 more cells drain with nothing waiting: the rate doubles
        // and, being 100 % above the last sent, an advisory XON follows at the next write.
        assert_eq!(d.on_drained(&p, at(11), 11 * CELL, 0, &mut xoff), None);
        assert_eq!(d.ewma_kbps(), 1094);
        assert_eq!(
            d.on_drained(&p, at(12), CELL, 0, &mut xoff),
            Some(FlowSignal::Xon { kbps_ewma: 1094 })
        );
        assert!(!xoff);
    }

    #[test]
    fn drain_rate_bounds() {
        assert_eq!(drain_rate_kbps(1000, Duration::ZERO), 0);
        assert_eq!(drain_rate_kbps(1, Duration::from_secs(10)), 1);
        assert_eq!(
            drain_rate_kbps(u32::MAX, Duration::from_secs(1)),
            i32::MAX as u32
        );
        assert_eq!(drain_rate_kbps(1_000_000, Duration::from_secs(1)), 1000);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of arrivals and writes: no panic, XOFF and XON alternate (never two
        /// XOFFs without an XON between), and an XON ending an XOFF comes only with an empty
        /// buffer.
        #[test]
        fn xon_xoff_alternate(
            steps in proptest::collection::vec((0u64..50, 0u64..2000, proptest::prelude::any::<bool>()), 1..300),
            xon_rate in 1u32..600,
        ) {
            use proptest::prelude::*;
            let p = FlowCtrlParams { xon_rate, ..FlowCtrlParams::default() };
            let mut d = DrainRate::default();
            let (mut xoff, mut t, mut buffered) = (false, 0u64, 0u64);
            for (dt, cells, arrive) in steps {
                t += dt;
                let was_off = xoff;
                let sig = if arrive {
                    buffered += cells * CELL;
                    d.on_buffered(&p, at(t), buffered, p.xoff_client_bytes(), &mut xoff)
                } else {
                    let w = buffered.min(cells * CELL);
                    buffered -= w;
                    d.on_drained(&p, at(t), w, buffered, &mut xoff)
                };
                match sig {
                    Some(FlowSignal::Xoff) => prop_assert!(!was_off && xoff),
                    Some(FlowSignal::Xon { kbps_ewma }) => {
                        prop_assert!(!xoff);
                        prop_assert!(kbps_ewma <= i32::MAX as u32);
                        if was_off { prop_assert_eq!(buffered, 0); }
                    }
                    None => prop_assert_eq!(was_off, xoff),
                }
            }
        }

        /// Whatever the XONs and the timing, the bucket never holds more than one second's
        /// worth, never lets more through than it holds, and says when it refills.
        #[test]
        fn rate_limit_within_burst(
            steps in proptest::collection::vec((0u64..2000, 0u32..5000, 0u64..20_000, proptest::prelude::any::<bool>()), 1..200),
        ) {
            use proptest::prelude::*;
            let mut r = RateLimit::default();
            let mut t = 0;
            for (dt, kbps, want, xon) in steps {
                t += dt;
                if xon {
                    r.on_xon(at(t), kbps);
                }
                let avail = r.available(at(t));
                match r.rate() {
                    None => prop_assert_eq!(avail, u64::MAX),
                    Some(rate) => {
                        prop_assert!(avail <= rate);
                        let take = want.min(avail);
                        r.take(take);
                        if take < want {
                            let ready = r.ready_at(want);
                            prop_assert!(ready.map_or(true, |x| x > at(t)) || want > rate);
                        }
                    }
                }
            }
        }
    }

    /// XON with 10 kB/s: at most 10,000 bytes at once, refilled at 10 bytes per ms; rate 0
    /// lifts the limit.
    #[test]
    fn rate_limit_token_bucket() {
        let mut r = RateLimit::default();
        assert_eq!(r.available(at(0)), u64::MAX);
        r.on_xon(at(0), 10);
        assert_eq!(r.rate(), Some(10_000));
        assert_eq!(r.available(at(0)), 10_000);
        r.take(10_000);
        assert_eq!(r.available(at(0)), 0);
        assert_eq!(r.ready_at(498), Some(at(0) + Duration::from_micros(49_800)));
        assert_eq!(r.available(at(100)), 1000);
        assert_eq!(r.available(at(5000)), 10_000, "capped at the burst");
        // A lower rate cuts what the bucket holds to the new burst.
        r.on_xon(at(5000), 2);
        assert_eq!(r.available(at(5000)), 2000);
        r.on_xon(at(5000), 0);
        assert_eq!(r.available(at(5000)), u64::MAX);
        assert_eq!(r.ready_at(498), None);
    }
}
