//! Scripted SENDME sequences whose expected windows are worked out by hand from proposal 324
//! §3.3 and C tor 0.4.9's rules (the arithmetic is written out beside each assertion).

use core::time::Duration;
use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

const MS: u64 = 1_000_000;

/// A path that acknowledges every SENDME-eliciting cell exactly `rtt` after it was sent:
/// the test fills the window, then delivers SENDMEs one at a time, each with its own RTT,
/// refilling the window after each. The machine only ever subtracts a cell's send time from
/// its SENDME's arrival, so the script places each arrival exactly `rtt` after its cell even
/// when that is earlier than the previous arrival.
struct Path {
    cc: CongestionControl,
    /// Send times of the SENDME-eliciting cells in flight, oldest first.
    eliciting: VecDeque<Instant>,
    now: Instant,
}

impl Path {
    fn new(cfg: CcConfig) -> Self {
        let mut p = Path {
            cc: CongestionControl::new(cfg),
            eliciting: VecDeque::new(),
            now: Instant::ZERO,
        };
        p.fill();
        p
    }

    fn fill(&mut self) {
        while self.cc.can_send() {
            if self.cc.on_data_sent(self.now).unwrap() {
                self.eliciting.push_back(self.now);
            }
        }
        assert_eq!(self.cc.on_data_sent(self.now), None, "window closed");
    }

    /// The next SENDME arrives `rtt_ms` after its cell was sent; then the window is refilled.
    fn sendme(&mut self, rtt_ms: u64) {
        let sent = self.eliciting.pop_front().expect("a SENDME is due");
        self.now = sent + Duration::from_nanos(rtt_ms * MS);
        self.cc.on_sendme(self.now, false, 0).unwrap();
        self.fill();
    }
}

#[test]
fn sendme_eliciting_cells_are_every_sendme_inc_th() {
    let mut cc = CongestionControl::new(CcConfig::default());
    let mut marks = Vec::new();
    for _ in 0..124 {
        if cc.on_data_sent(Instant::ZERO).unwrap() {
            marks.push(cc.inflight());
        }
    }
    assert_eq!(marks, vec![31, 62, 93, 124]);
    assert!(!cc.can_send());
    assert_eq!(cc.send_window(), 0);
    // With sendme_inc = 1 the first cell (nothing in flight) elicits nothing, as in C tor.
    let mut one = CongestionControl::new(CcConfig {
        sendme_inc: 1,
        ..CcConfig::default()
    });
    assert_eq!(one.on_data_sent(Instant::ZERO), Some(false));
    assert_eq!(one.on_data_sent(Instant::ZERO), Some(true));
}

#[test]
fn unexpected_sendme_is_an_error() {
    let mut cc = CongestionControl::new(CcConfig::default());
    for _ in 0..30 {
        cc.on_data_sent(Instant::ZERO).unwrap();
    }
    assert_eq!(
        cc.on_sendme(Instant::from_nanos(MS), false, 0),
        Err(CcError::UnexpectedSendme)
    );
    assert_eq!(cc.inflight(), 30);
}

#[test]
fn slow_start_grows_by_sendme_inc_then_rfc3742_above_the_cap() {
    let mut p = Path::new(CcConfig::default());
    // Constant RTT: BDP = cwnd, queue use 0 < gamma; the window is full at every SENDME
    // (inflight = cwnd), so each SENDME adds (100·31 + 50)/100 = 31 while cwnd <= 600.
    for k in 1..=16u64 {
        p.sendme(100);
        assert_eq!(p.cc.cwnd(), 124 + 31 * k, "after SENDME {k}");
        assert!(p.cc.in_slow_start());
    }
    assert_eq!(p.cc.cwnd(), 620);
    // Above sscap 600: inc = max((31·600 + cwnd) / (2·cwnd), 1).
    p.sendme(100); // (18600 + 620) / 1240 = 15
    assert_eq!(p.cc.cwnd(), 635);
    p.sendme(100); // (18600 + 635) / 1270 = 15
    assert_eq!(p.cc.cwnd(), 650);
    assert_eq!(p.cc.rtt().ewma_usec, 100_000);
    assert_eq!(p.cc.rtt().min_usec, 100_000);
    assert_eq!(p.cc.inflight(), 650);
}

#[test]
fn slow_start_ends_when_queue_use_reaches_gamma() {
    let mut p = Path::new(CcConfig::default());
    for _ in 0..4 {
        p.sendme(100);
    }
    assert_eq!(p.cc.cwnd(), 248);
    // RTT rises to 300 ms; N = cc_ewma_ss = 2, so ewma = (2·300000 + ewma)/3.
    p.sendme(300);
    // ewma = 700000/3 = 233333; BDP = 248·100000/233333 = 106; queue 142 < 186: +31.
    assert_eq!(p.cc.rtt().ewma_usec, 233_333);
    assert_eq!(p.cc.vegas().bdp, 106);
    assert_eq!(p.cc.cwnd(), 279);
    p.sendme(300);
    // ewma = 833333/3 = 277777; BDP = 279·100000/277777 = 100; queue 179 < 186: +31.
    assert_eq!(p.cc.rtt().ewma_usec, 277_777);
    assert_eq!((p.cc.vegas().bdp, p.cc.cwnd()), (100, 310));
    assert!(p.cc.in_slow_start());
    p.sendme(300);
    // ewma = 877777/3 = 292592; BDP = 310·100000/292592 = 105; queue 205 >= 186:
    // cwnd = BDP + gamma = 291, slow start over. The minimum RTT stayed 100 ms.
    assert_eq!(p.cc.rtt().ewma_usec, 292_592);
    assert_eq!((p.cc.vegas().bdp, p.cc.cwnd()), (105, 291));
    assert!(!p.cc.in_slow_start());
    assert_eq!(p.cc.rtt().min_usec, 100_000);
    // The update rate (291 + 480)/961 rounds to 0: every SENDME updates.
    assert_eq!(p.cc.vegas().next_cc_event, 0);

    // Steady state at 300 ms: N = max(min(0·50/100, 10), 2) = 2.
    p.sendme(300);
    // ewma = 892592/3 = 297530; BDP = 291·100000/297530 = 97; queue 194:
    // not > beta 248, not < alpha 186: no change.
    assert_eq!(
        (p.cc.rtt().ewma_usec, p.cc.vegas().bdp, p.cc.cwnd()),
        (297_530, 97, 291)
    );
    p.sendme(1000);
    // ewma = (2000000 + 297530)/3 = 765843; BDP = 29100000/765843 = 37; queue 254 > beta
    // 248: -cwnd_inc (1).
    assert_eq!(
        (p.cc.rtt().ewma_usec, p.cc.vegas().bdp, p.cc.cwnd()),
        (765_843, 37, 290)
    );
}

#[test]
fn steady_state_delta_cut_and_alpha_growth() {
    // Small thresholds so that every rule can be reached with small windows.
    let cfg = CcConfig {
        alpha: 10,
        beta: 20,
        gamma: 30,
        delta: 40,
        cwnd_inc: 2,
        ..CcConfig::default()
    };
    let mut p = Path::new(cfg);
    p.sendme(100); // ss: queue 0 < 30, full: 124 + 31 = 155 (31·5 > 2·31: no early exit)
    assert_eq!(p.cc.cwnd(), 155);
    p.sendme(200);
    // ewma = (400000 + 100000)/3 = 166666; BDP = 155·100000/166666 = 93; queue 62 >= 30:
    // cwnd = 93 + 30 = 123, slow start over.
    assert_eq!((p.cc.vegas().bdp, p.cc.cwnd()), (93, 123));
    assert!(!p.cc.in_slow_start());
    // 123 < cwnd_min 124 is possible on the gamma exit (C tor clamps only in steady state).
    p.sendme(400);
    // ewma = (800000 + 166666)/3 = 322222; BDP = 123·100000/322222 = 38; queue 85 > delta 40:
    // cwnd = 38 + 40 - 2 = 76, raised to cwnd_min 124.
    assert_eq!(
        (p.cc.rtt().ewma_usec, p.cc.vegas().bdp, p.cc.cwnd()),
        (322_222, 38, 124)
    );
    // Now at cwnd_min after slow start: the next sample resets min RTT to
    // percent_max_mix(ewma, min, 100) = the larger = the new EWMA.
    p.sendme(100);
    // ewma = (200000 + 322222)/3 = 174074 (ratio checks: 322222 < 100000·5000, fine);
    // min = 174074; BDP = 124; queue 0 < alpha, window full: +2.
    assert_eq!(p.cc.rtt().ewma_usec, 174_074);
    assert_eq!(p.cc.rtt().min_usec, 174_074);
    assert_eq!(p.cc.rtt().rtt_resets, 1);
    assert_eq!(p.cc.cwnd(), 126);
}

#[test]
fn clock_stalls_and_jumps_discard_samples() {
    let mut cc = CongestionControl::new(CcConfig {
        gamma: 0,
        ..CcConfig::default()
    });
    let t0 = Instant::ZERO;
    for _ in 0..124 {
        cc.on_data_sent(t0).unwrap(); // SENDME-eliciting: cells 31, 62, 93, 124
    }
    cc.on_sendme(t0 + Duration::from_millis(100), false, 0)
        .unwrap();
    // gamma 0: queue 0 >= 0, cwnd = BDP + 0 = 124, slow start over.
    assert!(!cc.in_slow_start());
    assert_eq!((cc.cwnd(), cc.rtt().ewma_usec), (124, 100_000));
    // A zero-length sample: a stalled clock; dropped, only inflight moves.
    cc.on_sendme(t0, false, 0).unwrap();
    assert_eq!(cc.rtt().clock_stalls, 1);
    assert!(cc.rtt().clock_broken);
    assert_eq!(
        (cc.cwnd(), cc.rtt().ewma_usec, cc.inflight()),
        (124, 100_000, 62)
    );
    // A sudden decrease (100000 > 1·5000) while the clock is known stalled: dropped.
    cc.on_sendme(t0 + Duration::from_micros(1), false, 0)
        .unwrap();
    assert_eq!(cc.rtt().clock_stalls, 2);
    // A sudden increase (600 s > 100 ms · 5000): dropped, the stalled flag untouched.
    cc.on_sendme(t0 + Duration::from_secs(600), false, 0)
        .unwrap();
    assert_eq!(cc.rtt().clock_stalls, 3);
    assert!(cc.rtt().clock_broken);
    assert_eq!(
        (cc.rtt().ewma_usec, cc.rtt().max_usec, cc.inflight()),
        (100_000, 100_000, 0)
    );
    // A normal sample is taken and clears the flag. The window sits at cwnd_min after slow
    // start, so min RTT is reset to max(ewma, min) = 100000; queue 0 < alpha and inflight
    // 31 + 4·31 >= 124 (full): +1.
    let t1 = t0 + Duration::from_secs(1);
    let eliciting = (0..31).filter(|_| cc.on_data_sent(t1).unwrap()).count();
    assert_eq!(eliciting, 1);
    cc.on_sendme(t1 + Duration::from_millis(100), false, 0)
        .unwrap();
    assert_eq!(cc.rtt().clock_stalls, 3);
    assert!(!cc.rtt().clock_broken);
    assert_eq!(
        (cc.rtt().ewma_usec, cc.rtt().min_usec, cc.rtt().rtt_resets),
        (100_000, 100_000, 1)
    );
    assert_eq!(cc.cwnd(), 125);
}

#[test]
fn sudden_decrease_is_kept_when_clock_is_not_known_broken() {
    let mut p = Path::new(CcConfig {
        gamma: 0,
        ..CcConfig::default()
    });
    p.sendme(100);
    assert!(!p.cc.in_slow_start() && !p.cc.rtt().clock_broken);
    let sent = p.eliciting.pop_front().unwrap();
    // 10 µs: 100000 > 10·5000, but the clock is not known stalled: sample kept.
    p.cc.on_sendme(sent + Duration::from_micros(10), false, 0)
        .unwrap();
    // ewma = (2·10 + 100000)/3 = 33340
    assert_eq!(p.cc.rtt().ewma_usec, 33_340);
    assert_eq!(p.cc.rtt().clock_stalls, 0);
}

#[test]
fn slow_start_stops_at_ss_max_and_cwnd_max_caps() {
    let mut p = Path::new(CcConfig {
        ss_cwnd_max: 500,
        ..CcConfig::default()
    });
    for _ in 0..12 {
        p.sendme(100); // 124 + 31·12 = 496
    }
    assert_eq!(p.cc.cwnd(), 496);
    p.sendme(100); // 527 >= 500: cwnd = 500, slow start over
    assert_eq!(p.cc.cwnd(), 500);
    assert!(!p.cc.in_slow_start());

    let mut q = Path::new(CcConfig {
        cwnd_max: 500,
        ..CcConfig::default()
    });
    for _ in 0..20 {
        q.sendme(100);
        assert!(q.cc.cwnd() <= 500 && q.cc.inflight() <= 500);
    }
    assert_eq!(q.cc.cwnd(), 500);
    assert!(q.cc.in_slow_start(), "cwnd_max does not end slow start");
}

#[test]
fn a_window_not_filled_does_not_grow() {
    let mut cc = CongestionControl::new(CcConfig::default());
    for _ in 0..124 {
        cc.on_data_sent(Instant::ZERO).unwrap();
    }
    let t = Instant::from_nanos(100 * MS);
    // No refill. "Full" means inflight + 4·31 >= cwnd.
    cc.on_sendme(t, false, 0).unwrap(); // 124 + 124 >= 124: full, 155
    cc.on_sendme(t, false, 0).unwrap(); // 93 + 124 >= 155: full, 186
    cc.on_sendme(t, false, 0).unwrap(); // 62 + 124 >= 186: full, 217
    assert_eq!(cc.cwnd(), 217);
    // 31 + 124 < 217, and 100·31 < 25·217: not full, no growth.
    cc.on_sendme(t, false, 0).unwrap();
    assert_eq!(cc.cwnd(), 217);
    assert!(!cc.vegas().cwnd_full);
    assert!(cc.in_slow_start());
    assert_eq!(cc.inflight(), 0);
}

proptest! {
    #[test]
    fn inflight_and_cwnd_stay_in_bounds(
        rtts in proptest::collection::vec(0u64..3000, 1..200),
        partial in proptest::collection::vec(0u64..200, 1..200),
        blocked in proptest::collection::vec(any::<bool>(), 1..200),
    ) {
        let cfg = CcConfig::default();
        let mut cc = CongestionControl::new(cfg);
        let mut sent_at: VecDeque<Instant> = VecDeque::new();
        let mut now = Instant::ZERO;
        for (i, rtt) in rtts.iter().enumerate() {
            // Send some of what the window allows, never more.
            let budget = partial[i % partial.len()];
            for _ in 0..budget {
                if !cc.can_send() {
                    prop_assert_eq!(cc.on_data_sent(now), None);
                    break;
                }
                if cc.on_data_sent(now).unwrap() {
                    sent_at.push_back(now);
                }
                prop_assert!(cc.inflight() <= cc.cwnd());
            }
            match sent_at.pop_front() {
                Some(s) => {
                    now = now.max(s + Duration::from_millis(*rtt));
                    let b = blocked[i % blocked.len()];
                    cc.on_sendme(now, b, i as u64).unwrap();
                }
                None => prop_assert_eq!(cc.on_sendme(now, false, 0), Err(CcError::UnexpectedSendme)),
            }
            prop_assert!(cc.cwnd() <= u64::from(cfg.cwnd_max));
            // With the default thresholds (gamma 186 > cwnd_min 124) even the gamma exit
            // stays above cwnd_min.
            prop_assert!(cc.cwnd() >= u64::from(cfg.cwnd_min));
        }
    }
}

proptest! {
    /// Any parameters within the consensus ranges, any SENDME timing (including zero and
    /// huge delays): no panic, sending never exceeds the window, cwnd never exceeds cwnd_max
    /// once a SENDME was processed.
    #[test]
    fn any_parameters_any_timing(
        sendme_inc in 1u8..=254,
        cwnd_init in 31u32..=10_000,
        cwnd_inc_pct_ss in 1u32..=500,
        cwnd_inc in 1u32..=1000,
        cwnd_inc_rate in 1u32..=250,
        cwnd_min in 31u32..=1000,
        cwnd_max in 500u32..=100_000,
        thresholds in proptest::collection::vec(0u32..=1000, 4),
        ss in (100u32..=5000, 500u32..=10_000),
        full in (0u32..=100, 0u32..=100, any::<bool>()),
        ewma in (1u8..=255, 2u8..=255, 2u8..=255, 0u8..=100),
        steps in proptest::collection::vec((0u16..600, 0u64..10_000_000, any::<bool>()), 1..120),
    ) {
        let cfg = CcConfig {
            sendme_inc,
            cwnd_init,
            cwnd_inc_pct_ss,
            cwnd_inc,
            cwnd_inc_rate,
            cwnd_min,
            cwnd_max,
            rtt_reset_pct: ewma.3,
            ewma_cwnd_pct: ewma.0,
            ewma_max: ewma.1,
            ewma_ss: ewma.2,
            alpha: thresholds[0],
            beta: thresholds[1],
            gamma: thresholds[2],
            delta: thresholds[3],
            ss_cwnd_cap: ss.0,
            ss_cwnd_max: ss.1,
            cwnd_full_gap: full.0,
            cwnd_full_minpct: full.1,
            cwnd_full_per_cwnd: full.2,
        };
        let mut cc = CongestionControl::new(cfg);
        let mut sent_at: VecDeque<Instant> = VecDeque::new();
        let mut now = Instant::ZERO;
        for (n, delay_us, blocked) in steps {
            for _ in 0..n {
                match cc.on_data_sent(now) {
                    None => break,
                    Some(e) => {
                        if e {
                            sent_at.push_back(now);
                        }
                    }
                }
                prop_assert!(cc.inflight() <= cc.cwnd());
            }
            now = now + Duration::from_micros(delay_us);
            if sent_at.pop_front().is_some() {
                cc.on_sendme(now, blocked, u64::from(n)).unwrap();
                prop_assert!(cc.cwnd() <= u64::from(cwnd_max.max(cwnd_init)));
            }
        }
    }
}
