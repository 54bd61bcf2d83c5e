//! The congestion-control experiment of `onion_sim::cc` at 20, 100 and 300 ms round trips,
//! with and without congestion control, and with a second client sharing the bottleneck.
//!
//! `cargo run --release -p onion-sim --example cc [MiB]` prints each run's summary and the
//! wall-clock time it took (the simulated time is virtual).

use std::time::{Duration, Instant};

use onion_sim::cc::{self, Experiment};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("one") {
        // `one MiB RTT_MS QUEUE_KIB CC(0|1) [TRACE_EVERY [SECOND_AFTER_MS [SSCAP SS_MAX
        // CWND_INC CWND_INIT]]]`: one run, with its trace; the last four replace C tor's
        // default `cc_sscap_exit`, `cc_ss_max`, `cc_cwnd_inc` and `cc_cwnd_init` (0 keeps
        // the default).
        let n = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
        let cfg = Experiment {
            transfer: n(2, 50) << 20,
            rtt: Duration::from_millis(n(3, 100)),
            queue_limit: n(4, 256) as usize * 1024,
            congestion_control: n(5, 1) == 1,
            second_after: (n(7, 0) > 0).then(|| Duration::from_millis(n(7, 0))),
            ..Experiment::default()
        };
        let d = cfg.vegas;
        let or = |v: u64, d: u32| if v == 0 { d } else { v as u32 };
        let cfg = Experiment {
            vegas: onion_circuit::cc::CcConfig {
                ss_cwnd_cap: or(n(8, 0), d.ss_cwnd_cap),
                ss_cwnd_max: or(n(9, 0), d.ss_cwnd_max),
                cwnd_inc: or(n(10, 0), d.cwnd_inc),
                cwnd_init: or(n(11, 0), d.cwnd_init),
                ..d
            },
            ..cfg
        };
        let every = n(6, 0) as usize;
        match cc::run(cfg) {
            Ok(r) => {
                print!("{}", r.summary());
                if every > 0 {
                    for s in r.trace.iter().step_by(every) {
                        println!(
                            "{:>8.3} s cwnd {:>5} inflight {:>5} rtt {:>7.2} ms min {:>7.2} ms ss {} queue {:>7} B got {:?}",
                            s.at.as_secs_f64(), s.cwnd, s.inflight, s.rtt_ms, s.min_rtt_ms,
                            s.slow_start as u8, s.queue, s.received
                        );
                    }
                }
            }
            Err(e) => println!("failed: {e}"),
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("params") {
        // `params MiB RTT_MS [SECOND_AFTER_MS] [NAME=VALUE ...]`: one Vegas run under those
        // consensus values (C tor's names and ranges), its summary and wall-clock time.
        let n = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
        let second = n(4, 0);
        let first_param = if args.get(4).is_some_and(|a| a.contains('=')) {
            4
        } else {
            5
        };
        let params: Result<Vec<_>, _> = args
            .iter()
            .skip(first_param)
            .map(|a| cc::parse_cc_param(a))
            .collect();
        let cfg = params.and_then(|p| {
            Experiment {
                transfer: n(2, 50) << 20,
                rtt: Duration::from_millis(n(3, 100)),
                second_after: (first_param == 5 && second > 0)
                    .then(|| Duration::from_millis(second)),
                ..Experiment::default()
            }
            .with_consensus(&p)
        });
        let t = Instant::now();
        match cfg.map(cc::run) {
            Ok(Ok(r)) => print!("{}", r.summary()),
            Ok(Err(e)) => println!("failed: {e}"),
            Err(e) => println!("bad parameter: {e}"),
        }
        println!("  (wall clock {:.2} s)", t.elapsed().as_secs_f64());
        return;
    }
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    for rtt in [100, 20, 300] {
        for (congestion_control, second) in [(true, false), (false, false), (true, true)] {
            let cfg = Experiment {
                rtt: Duration::from_millis(rtt),
                transfer: mib << 20,
                congestion_control,
                second_after: second.then(|| Duration::from_millis(20 * rtt)),
                ..Experiment::default()
            };
            let t = Instant::now();
            match cc::run(cfg) {
                Ok(r) => print!("{}", r.summary()),
                Err(e) => println!("failed: {e}"),
            }
            println!("  (wall clock {:.2} s)\n", t.elapsed().as_secs_f64());
        }
    }
}
