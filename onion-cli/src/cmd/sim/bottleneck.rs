//! `onion sim --bottleneck`: congestion control (proposal 324) against fixed windows on a
//! path with a bottleneck, and two congestion-controlled circuits sharing it, from
//! `onion_sim::cc`: guard, middle and exit are `onion_relay::Relay` machines, the ones
//! `onion relay` runs, so the middle relay's circuit scheduling decides the shares.

use std::time::Duration;

use onion_sim::cc::{self, CcReport, Experiment};

use super::Args;

/// One run as JSON: the downloads, the queue, and (with congestion control) the trace.
fn report_json(r: &CcReport) -> serde_json::Value {
    let downloads: Vec<_> = r
        .downloads
        .iter()
        .map(|d| {
            serde_json::json!({
                "bytes": d.bytes,
                "start_s": d.start.as_secs_f64(),
                "end_s": d.end.as_secs_f64(),
                "throughput_MBps": d.throughput() / 1e6,
                "negotiated": d.negotiated,
                "max_cwnd": d.max_cwnd,
                "circuit_sendmes_sent": d.circ_sendmes,
                "stream_sendmes_sent": d.stream_sendmes,
            })
        })
        .collect();
    let trace: Vec<_> = r
        .trace
        .iter()
        .map(|s| {
            serde_json::json!({
                "at_ms": s.at.as_secs_f64() * 1e3,
                "cwnd": s.cwnd,
                "inflight": s.inflight,
                "rtt_ms": s.rtt_ms,
                "min_rtt_ms": s.min_rtt_ms,
                "slow_start": s.slow_start,
                "queue_bytes": s.queue,
                "received": s.received[0],
            })
        })
        .collect();
    let overlap = r.overlap.map(|[a, b]| {
        serde_json::json!({
            "first_MBps": a / 1e6,
            "second_MBps": b / 1e6,
            "jain_index": r.jain(),
        })
    });
    serde_json::json!({
        "utilization": r.utilization(),
        "second_half_utilization": r.steady_utilization(),
        "after_slow_start_utilization": r.after_slow_start_utilization(),
        "slow_start_exit_cwnd": r.slow_start_exit_cwnd(),
        "cells_per_rtt": r.cells_per_rtt(),
        "max_queue_bytes": r.max_queue,
        "max_link_queue_bytes": r.max_link_queue,
        "while_both_ran": overlap,
        "mean_queue_bytes": r.mean_queue,
        "downloads": downloads,
        "trace": trace,
        "trace_dropped": r.trace_dropped,
    })
}

/// Run the experiment with and without congestion control, and with a second
/// congestion-controlled circuit starting ten round trips after the first, and print all
/// three (the first with its trace).
pub fn run(args: &Args) -> Result<(), String> {
    let base = Experiment::default();
    let cfg = Experiment {
        seed: args.seed.unwrap_or(base.seed),
        rtt: args.rtt_ms.map_or(base.rtt, Duration::from_millis),
        bottleneck: args
            .bandwidth_mbit
            .map_or(base.bottleneck, |b| b.saturating_mul(125_000).max(1)),
        transfer: args.bytes.unwrap_or(base.transfer),
        ..base
    }
    .with_consensus(&args.cc_params)
    .map_err(|e| format!("--cc-param: {e}"))?;
    let run = |congestion_control: bool, second_after: Option<Duration>| {
        cc::run(Experiment {
            congestion_control,
            second_after,
            ..cfg.clone()
        })
        .map_err(|e| format!("simulation failed: {e}"))
    };
    let (with, without) = (run(true, None)?, run(false, None)?);
    let shared = run(true, Some(cfg.rtt * 10))?;
    if args.json {
        let out = serde_json::json!({
            "seed": cfg.seed,
            "rtt_ms": cfg.rtt.as_secs_f64() * 1e3,
            "bottleneck_Mbps": cfg.bottleneck as f64 * 8.0 / 1e6,
            "queue_limit_bytes": cfg.queue_limit,
            "bytes": cfg.transfer,
            "consensus_params": cfg
                .consensus
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "congestion_control": report_json(&with),
            "fixed_windows": report_json(&without),
            "two_circuits": report_json(&shared),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    print!("{}", with.summary());
    print!("{}", with.trace_summary(20));
    println!();
    print!("{}", without.summary());
    println!();
    println!(
        "a second circuit starting {} ms after the first:",
        (cfg.rtt * 10).as_millis()
    );
    print!("{}", shared.summary());
    Ok(())
}
