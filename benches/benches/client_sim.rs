//! The embedder's client on the simulated network (onion-sim's `client` world).
//!
//! * `client_sim/100x1MiB/fixed_windows`: a bootstrapped `onion_client::Client` fetches 100
//!   bodies of 1 MiB at once through the simulated relays (`onion_sim::client::runs::streams`,
//!   the run `onion sim --client` prints), every body's SHA-256 checked; the relays answer no
//!   congestion-control request, so circuits run fixed SENDME windows (tor-spec §7.3).
//! * `client_sim/100x1MiB/congestion_control`: the same with the relays offering Tor Vegas
//!   (proposal 324 §3.3) and the client asking for it (`onion sim --client
//!   --congestion-control`).
//!
//! The throughput is wall-clock CPU of the client, the relays and the web server together on
//! one core, per body byte; the figures in virtual network time are what `onion sim --client`
//! prints. Bootstrapping (relay keys, certificates, directory documents) is done once per
//! variant, outside the timing; each iteration is a fresh batch of 100 streams on the same
//! client, so channels and circuits may be reused as an embedder's would.
//!
//! One iteration moves 100 MiB (about 2 s), so the group takes 10 flat samples of one
//! iteration each: `cargo bench -p onion-benches --bench client_sim` finishes in about a
//! minute per variant.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use onion_client::Isolation;
use onion_sim::client::runs;
use onion_sim::client::world::WorldConfig;

const STREAMS: usize = 100;
const BODY: u64 = 1 << 20;

fn bench_streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_sim/100x1MiB");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(STREAMS as u64 * BODY));
    for (name, cc) in [("fixed_windows", false), ("congestion_control", true)] {
        let cfg = WorldConfig {
            congestion_control: cc,
            ..WorldConfig::default()
        };
        let (mut sim, _boot) = runs::bootstrapped(cfg).expect("bootstrap");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let rep = runs::streams(
                        &mut sim,
                        STREAMS,
                        BODY,
                        Isolation::NONE,
                        Duration::from_secs(24 * 3600),
                    )
                    .expect("streams");
                    total += started.elapsed();
                    assert_eq!(rep.ok, STREAMS, "failures: {:?}", rep.failures);
                    assert_eq!(rep.body_bytes, STREAMS as u64 * BODY);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_streams);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
