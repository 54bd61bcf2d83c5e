//! Congestion control on the simulated network (proposal 324, `onion_sim::cc`): a download
//! through a 3-hop circuit whose guard–middle link is a 200 Mbit/s bottleneck with a bounded
//! queue, Tor Vegas against fixed windows, at 20, 100 and 300 ms round trips, and a second
//! client sharing the bottleneck.
//!
//! The transfers here are smaller than the 50 MiB of the reference experiment, to keep the
//! tests' CPU time small (virtual time is free, the cells' cryptography is not); the full
//! runs are `cargo run --release -p onion-sim --example cc` and the ignored test below.

use std::time::Duration;

use onion_sim::cc::{self, CcReport, Experiment};

fn run(rtt_ms: u64, mib: u64, congestion_control: bool) -> CcReport {
    cc::run(Experiment {
        rtt: Duration::from_millis(rtt_ms),
        transfer: mib << 20,
        congestion_control,
        ..Experiment::default()
    })
    .expect("the download completes intact")
}

/// The bottleneck link's own queue (its untransmitted bytes and the middle relay's channel
/// buffer) never exceeds its bound, not even by part of a cell: a full link holds the cells
/// in the relay's circuit queues. All that waits at the bottleneck (link, channel and
/// circuit queues) stays within the link's bound plus what Vegas aims to keep queued (beta,
/// 248 cells) and one window's growth: it never grows with the transfer.
fn assert_queue_bounded(r: &CcReport) {
    assert!(
        r.max_link_queue <= r.config.queue_limit as u64,
        "link queue {} > bound {}\n{}",
        r.max_link_queue,
        r.config.queue_limit,
        r.summary()
    );
    let bound = r.config.queue_limit as u64 + 2 * 248 * 514;
    assert!(
        r.max_queue <= bound,
        "queue {} > {bound}\n{}",
        r.max_queue,
        r.summary()
    );
}

#[test]
fn cc_fills_a_20ms_bottleneck_where_fixed_windows_fill_half() {
    let cc = run(20, 16, true);
    let fixed = run(20, 8, false);
    let d = cc.downloads[0];
    assert!(d.negotiated, "the exit agreed to congestion control");
    assert_eq!(
        d.stream_sendmes, 0,
        "no stream SENDMEs under congestion control"
    );
    // A circuit SENDME every 31 cells received (the body and head in 498-byte cells).
    let cells = d.bytes / 498;
    assert!(
        (cells / 31..=cells / 31 + cells / 31 / 20).contains(&d.circ_sendmes),
        "{} SENDMEs for about {cells} cells",
        d.circ_sendmes
    );
    assert!(
        cc.utilization() >= 0.80,
        "congestion control reaches {:.1} % of the bottleneck\n{}",
        100.0 * cc.utilization(),
        cc.summary()
    );
    // Fixed windows: the 500-cell stream window per round trip (its SENDMEs come back
    // after 50 cells), about half the bottleneck at 20 ms.
    let f = fixed.downloads[0];
    assert!(!f.negotiated);
    assert!(f.stream_sendmes > 0);
    let per_rtt = fixed.cells_per_rtt();
    assert!(
        (400.0..=520.0).contains(&per_rtt),
        "fixed windows: {per_rtt:.0} cells per RTT"
    );
    assert!(cc.utilization() > 1.8 * fixed.utilization());
    assert_queue_bounded(&cc);
    assert_queue_bounded(&fixed);
}

#[test]
fn cc_at_100ms_and_300ms_far_above_fixed_windows() {
    for (rtt, mib, factor) in [(100, 24, 4.0), (300, 24, 4.0)] {
        let cc = run(rtt, mib, true);
        let fixed = run(rtt, 2, false);
        assert!(cc.downloads[0].negotiated);
        // Fixed windows are held to the stream window, ~500 cells a round trip.
        let per_rtt = fixed.cells_per_rtt();
        assert!(
            (400.0..=520.0).contains(&per_rtt),
            "{rtt} ms, fixed windows: {per_rtt:.0} cells per RTT"
        );
        assert!(
            cc.utilization() > factor * fixed.utilization(),
            "{rtt} ms: {:.1} % vs {:.1} %\n{}",
            100.0 * cc.utilization(),
            100.0 * fixed.utilization(),
            cc.summary()
        );
        assert_queue_bounded(&cc);
        // Why the whole transfer stays under 80 % (README): at 100 ms slow start ends on
        // Vegas' gamma signal at about 3,300-3,600 cells, under the 4,864-cell BDP; at 300 ms
        // it runs to cc_ss_max (5,000) plus at most one SENDME's increment. Afterwards the
        // window grows by 31 cells per RTT and the circuit carries it every RTT.
        let exit = cc.slow_start_exit_cwnd();
        match rtt {
            100 => assert!((3_000..=4_000).contains(&exit), "{exit}"),
            _ => assert!((5_000..=5_050).contains(&exit), "{exit}"),
        }
        if rtt != 100 {
            // (At 300 ms only a few RTTs of the 24 MiB are left after slow start.)
            continue;
        }
        let carried = exit as f64 * 498.0 / (rtt as f64 / 1e3) / cc.config.bottleneck as f64;
        assert!(
            cc.after_slow_start_utilization() >= 0.95 * carried,
            "{rtt} ms: {:.3} after slow start, window alone {carried:.3}",
            cc.after_slow_start_utilization()
        );
    }
}

/// The trace follows Vegas: slow start first, then a window that stays within C tor's
/// bounds, an RTT no lower than the path's, and what is in flight within the window.
#[test]
fn trace_of_cwnd_rtt_and_inflight() {
    let r = run(100, 12, true);
    let live: Vec<_> = r.trace.iter().filter(|s| s.cwnd > 0).collect();
    assert!(live.len() > 100, "{} samples", live.len());
    assert!(live[0].slow_start);
    let ss_end = live
        .iter()
        .position(|s| !s.slow_start)
        .expect("slow start ends");
    assert!(ss_end > 0);
    for s in &live {
        assert!(s.cwnd >= 124 && s.cwnd <= 5000 + 1000, "cwnd {}", s.cwnd);
        assert!(
            s.inflight <= s.cwnd,
            "{} in flight, cwnd {}",
            s.inflight,
            s.cwnd
        );
        if s.rtt_ms > 0.0 {
            assert!(s.min_rtt_ms >= 100.0 && s.rtt_ms >= s.min_rtt_ms, "{s:?}");
            // Vegas keeps the queue short: the smoothed RTT stays within 20 ms of the path's.
            assert!(s.rtt_ms < 120.0, "{s:?}");
        }
    }
    // The window grew well beyond its start.
    assert!(live.iter().map(|s| s.cwnd).max().unwrap() > 2000);
    let mut last = 0;
    for s in &r.trace {
        assert!(s.received[0] >= last);
        last = s.received[0];
    }
}

#[test]
fn a_second_circuit_gets_a_fair_share() {
    let r = cc::run(Experiment {
        rtt: Duration::from_millis(20),
        transfer: 20 << 20,
        second_after: Some(Duration::from_millis(100)),
        ..Experiment::default()
    })
    .expect("both downloads complete");
    assert_eq!(r.downloads.len(), 2);
    assert!(r.downloads.iter().all(|d| d.negotiated));
    let [a, b] = r.overlap.expect("the downloads overlapped");
    let share = b / (a + b);
    assert!(
        (0.35..=0.65).contains(&share),
        "the second got {:.1} % of what both got\n{}",
        100.0 * share,
        r.summary()
    );
    let jain = r.jain().expect("two rates");
    assert!(jain >= 0.95, "Jain's index {jain:.3}\n{}", r.summary());
    // Together they still fill the bottleneck.
    assert!(
        (a + b) / r.config.bottleneck as f64 >= 0.8,
        "{}",
        r.summary()
    );
    assert_queue_bounded(&r);
}

/// The reference experiment with 50 MiB (about a second of CPU each in release builds):
/// `cargo test --release -p onion-sim --test cc_sim -- --ignored --nocapture`.
#[test]
#[ignore]
fn reference_50_mib() {
    for rtt in [20, 100, 300] {
        for congestion_control in [true, false] {
            let r = run(rtt, 50, congestion_control);
            println!("{}", r.summary());
        }
        let r = cc::run(Experiment {
            rtt: Duration::from_millis(rtt),
            second_after: Some(Duration::from_millis(10 * rtt)),
            ..Experiment::default()
        })
        .expect("both downloads complete");
        println!("{}", r.summary());
    }
}

/// A window larger than a channel's send buffer (4 MiB, `ChanConfig::max_outbound_bytes`):
/// with `cc_cwnd_init` at C tor's largest allowed value (10,000 cells, 5 MB), the exit's
/// first burst is more than the channels along the path buffer. The relays hold what does
/// not fit in their circuit queues and lose no cell: the download arrives intact (a lost
/// cell would break the relay-crypto digest chain and the client would close the circuit).
#[test]
fn a_burst_larger_than_a_channel_buffer_loses_no_cell() {
    let r = cc::run(Experiment {
        rtt: Duration::from_millis(100),
        transfer: 8 << 20,
        vegas: onion_circuit::cc::CcConfig {
            cwnd_init: 10_000,
            ss_cwnd_max: 20_000,
            ..onion_circuit::cc::CcConfig::default()
        },
        ..Experiment::default()
    })
    .expect("the download completes intact");
    assert!(r.downloads[0].max_cwnd >= 10_000, "{}", r.summary());
    assert!(r.max_queue > 2 << 20, "the burst queued: {}", r.summary());
    assert!(r.max_link_queue <= r.config.queue_limit as u64);
}

/// Consensus values, within C tor's ranges, with which Vegas fills a 100 ms path where C tor's
/// defaults cannot (see the README's congestion-control section): a large first window
/// (`cc_cwnd_init` 10,000, the largest allowed), slow start growing sixfold per round trip
/// without RFC 3742's cap (`cc_cwnd_inc_pct_ss` 500, `cc_sscap_exit` and `cc_ss_max` out of
/// reach), Vegas' queue thresholds at their maxima so that the burst of a large window does
/// not end slow start early nor cut the window, and fewer, larger SENDMEs.
const FILLING: [(&str, i32); 10] = [
    ("cc_cwnd_init", 10_000),
    ("cc_cwnd_inc_pct_ss", 500),
    ("cc_sscap_exit", 100_000),
    ("cc_ss_max", 100_000),
    ("cc_vegas_alpha_exit", 800),
    ("cc_vegas_beta_exit", 1000),
    ("cc_vegas_gamma_exit", 1000),
    ("cc_vegas_delta_exit", 100_000),
    ("cc_cwnd_inc", 10),
    ("cc_sendme_inc", 62),
];

fn filling() -> Vec<(String, i32)> {
    FILLING.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn consensus_values_in_range_fill_a_100ms_bottleneck_that_defaults_cannot() {
    // 20 MiB instead of the reference 50 (which reaches 92.5 % in the README): enough for the
    // window to be at the bandwidth-delay product for most of the transfer.
    let base = Experiment {
        rtt: Duration::from_millis(100),
        transfer: 20 << 20,
        ..Experiment::default()
    };
    let tuned = cc::run(
        base.clone()
            .with_consensus(&filling())
            .expect("values in range"),
    )
    .expect("the download completes intact");
    let d = tuned.downloads[0];
    assert!(d.negotiated, "{}", tuned.summary());
    assert!(
        tuned.utilization() >= 0.80,
        "{:.3} of the bottleneck\n{}",
        tuned.utilization(),
        tuned.summary()
    );
    // The window went past the path's bandwidth-delay product (4,864 cells at 100 ms), which
    // C tor's cc_ss_max (5,000) and 31 cells per round trip afterwards keep it near.
    assert!(d.max_cwnd > 6000, "{}", tuned.summary());
    assert_eq!(d.stream_sendmes, 0);
    // One circuit SENDME per 62 cells (20 MiB is at least 42,109 cells; a few are not full),
    // half as many as at C tor's 31.
    let cells = (20u64 << 20).div_ceil(498);
    assert!(
        d.circ_sendmes >= cells / 62 - 1 && d.circ_sendmes <= cells / 62 * 21 / 20,
        "{} SENDMEs for {cells} cells",
        d.circ_sendmes
    );
    // The link's queue keeps its bound; what waits in the middle relay's circuit queue is
    // bounded by the window.
    assert!(tuned.max_link_queue <= tuned.config.queue_limit as u64);
    assert!(tuned.max_queue <= tuned.config.queue_limit as u64 + d.max_cwnd * 514);
    let default = cc::run(base).expect("the download completes intact");
    assert!(
        default.utilization() < 0.6,
        "C tor's defaults: {:.3}\n{}",
        default.utilization(),
        default.summary()
    );
}

/// Two circuits under the values above share the 100 ms bottleneck evenly. Their windows
/// keep megabytes queued at the middle relay; with its circuits served in a fixed order the
/// first circuit's queue held the channel and the second's CREATED2, EXTENDED2 and data
/// waited behind it until the first download ended. The middle relay schedules its
/// channel's circuits as C tor does (EWMA: the one that sent the fewest cells lately goes
/// first), so the second gets its circuit at once and both then get the same rate.
#[test]
fn two_circuits_under_large_windows_share_a_100ms_bottleneck_evenly() {
    let r = cc::run(
        Experiment {
            rtt: Duration::from_millis(100),
            transfer: 32 << 20,
            second_after: Some(Duration::from_millis(300)),
            ..Experiment::default()
        }
        .with_consensus(&filling())
        .expect("values in range"),
    )
    .expect("both downloads complete");
    let [a, b] = r.overlap.unwrap_or_else(|| {
        panic!(
            "the downloads did not overlap for 15 round trips\n{}",
            r.summary()
        )
    });
    let jain = r.jain().expect("two rates");
    assert!(jain >= 0.95, "Jain's index {jain:.3}\n{}", r.summary());
    // Together they fill the bottleneck.
    assert!(
        (a + b) / r.config.bottleneck as f64 >= 0.9,
        "{}",
        r.summary()
    );
    // The second's request left within a few round trips of its start, not behind the
    // first's queue.
    let d = r.downloads[1];
    assert!(
        d.start < Duration::from_millis(300 + 6 * 100),
        "second request at {:?}\n{}",
        d.start,
        r.summary()
    );
}

#[test]
fn consensus_values_are_checked_against_c_tor_s_names_and_ranges() {
    use onion_sim::cc::CcParamError;
    let with = |p: &[(&str, i32)]| {
        let p: Vec<(String, i32)> = p.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        Experiment::default().with_consensus(&p)
    };
    let e = with(&[("cc_sscap_exit", 99)]).unwrap_err();
    assert_eq!(
        e,
        CcParamError::OutOfRange {
            name: "cc_sscap_exit".into(),
            value: 99,
            min: 100,
            max: i32::MAX
        }
    );
    assert_eq!(
        e.to_string(),
        "cc_sscap_exit=99 is outside C tor's range [100, 2147483647] for it"
    );
    assert!(matches!(
        with(&[("cc_cwnd_init", 10_001)]),
        Err(CcParamError::OutOfRange { max: 10_000, .. })
    ));
    assert!(matches!(
        with(&[("cc_sscap_exitt", 1000)]),
        Err(CcParamError::Unknown(n)) if n == "cc_sscap_exitt"
    ));
    assert!(matches!(
        with(&[("cc_vegas_gamma_onion", 300)]),
        Err(CcParamError::NotUsed { .. })
    ));
    assert!(matches!(
        with(&[("cc_ss_max", 600), ("cc_ss_max", 700)]),
        Err(CcParamError::Repeated(n)) if n == "cc_ss_max"
    ));
    assert_eq!(with(&[("cc_alg", 0)]).unwrap_err(), CcParamError::Disabled);
    assert!(matches!(
        cc::parse_cc_param("cc_ss_max=5e3"),
        Err(CcParamError::Syntax(_))
    ));
    assert_eq!(
        cc::parse_cc_param("cc_ss_max=-3"),
        Ok(("cc_ss_max".to_owned(), -3))
    );
    // Values are applied as a consensus carrying them: the rest keep C tor's defaults.
    let x = with(&[("cc_ss_max", 20_000), ("cc_sendme_inc", 62)]).unwrap();
    assert_eq!((x.vegas.ss_cwnd_max, x.vegas.sendme_inc), (20_000, 62));
    assert_eq!(x.vegas.ss_cwnd_cap, 600);
    assert_eq!(x.consensus.len(), 2);
    // No values: exactly the defaults the experiment uses otherwise.
    assert_eq!(with(&[]).unwrap().vegas, Experiment::default().vegas);
}
