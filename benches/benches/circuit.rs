//! Circuit benchmarks (onion-circuit).
//!
//! * `circuit/relay_crypto_floor`: the relay crypto one DATA cell needs on its way from the
//!   exit to the client through three hops (exit originates, middle and guard add a layer,
//!   the client removes three and recognises the cell): the most the four parties could
//!   carry on one core if they did nothing but crypto.
//! * `circuit/e2e_3hop`: the circuit-level story of onion-sim (`onion_sim::circuit`): a bare
//!   client (one onion-circuit channel and circuit) and guard, middle and exit, each an
//!   `onion_relay::Relay` (the machine `onion relay` runs), on the simulated network's
//!   connections (cells encoded to bytes and parsed back), with the web server behind the
//!   exit: circuits and streams with SENDME flow control, fetching 4 MB, until every relay
//!   freed the circuit. Key generation (and the one directory authority the relays need) is
//!   outside the timing; link and circuit handshakes are inside.
//!
//! After criterion's runs, a short summary prints the end-to-end rate as a share of the
//! crypto floor (measured again in the same process, so the ratio holds on a noisy machine)
//! and what an idle circuit's key schedules cost to rebuild when it becomes active again.
//!
//! The heap held by an idle circuit and stream is measured by
//! `cargo test -p onion-circuit --test memory -- --nocapture` (a counting global allocator),
//! not here: such an allocator taxes every allocation of the fetch (atomic counters, about
//! 8 % of the end-to-end time measured) while the allocation-free crypto floor pays nothing,
//! which would bias the ratio.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use onion_crypto::tor1::{ClientCircuitCrypto, Tor1ClientHop, Tor1RelayCrypto, TOR1_KEY_LEN};
use onion_sim::circuit::{Sim, SimConfig};

const FETCH: u64 = 4_000_000;

struct Floor {
    client: ClientCircuitCrypto,
    relays: Vec<Tor1RelayCrypto>,
    cell: [u8; 509],
}

impl Floor {
    fn new() -> Floor {
        let mut client = ClientCircuitCrypto::new();
        let mut relays = Vec::new();
        for h in 0..3u8 {
            let keys: Vec<u8> = (0..TOR1_KEY_LEN as u8).map(|i| i ^ (h * 31)).collect();
            client.add_hop(Tor1ClientHop::from_key_material(&keys).expect("keys"));
            relays.push(Tor1RelayCrypto::from_key_material(&keys).expect("keys"));
        }
        let mut cell = [0u8; 509];
        cell[0] = 2; // DATA
        cell[10] = 0xf2; // length 498
        cell[9] = 0x01;
        Floor {
            client,
            relays,
            cell,
        }
    }

    /// One cell from the exit to the client.
    fn one(&mut self) -> usize {
        let mut c = self.cell;
        c[1] = 0;
        c[2] = 0;
        self.relays[2].originate_inbound(&mut c);
        self.relays[1].encrypt_inbound(&mut c);
        self.relays[0].encrypt_inbound(&mut c);
        self.client.decrypt_inbound(&mut c).unwrap_or(0)
    }
}

fn sim_config() -> SimConfig {
    SimConfig {
        seed: 7,
        response_len: FETCH,
        story: false,
        ..SimConfig::default()
    }
}

/// Time one fetch (keys made beforehand).
fn one_fetch() -> Duration {
    let mut sim = Sim::new(sim_config()).expect("setup");
    let t = Instant::now();
    sim.run_to_end().expect("run");
    let d = t.elapsed();
    assert_eq!(sim.report().body.len() as u64, FETCH);
    d
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("circuit");
    g.throughput(Throughput::Bytes(498));
    let mut floor = Floor::new();
    g.bench_function("relay_crypto_floor", |b| b.iter(|| black_box(floor.one())));
    g.throughput(Throughput::Bytes(FETCH));
    g.sample_size(10);
    g.bench_function("e2e_3hop", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| one_fetch()).sum())
    });
    g.finish();
}

fn floor_batch(floor: &mut Floor, cells: u32) -> Duration {
    let t = Instant::now();
    for _ in 0..cells {
        black_box(floor.one());
    }
    t.elapsed()
}

fn fetch_of(n: u64) -> Duration {
    let mut sim = Sim::new(SimConfig {
        response_len: n,
        ..sim_config()
    })
    .expect("setup");
    let t = Instant::now();
    sim.run_to_end().expect("run");
    t.elapsed()
}

fn summary() {
    // Interleave the measurements and keep the best of each, so that a noisy machine (other
    // processes) affects both sides alike.
    let mut floor = Floor::new();
    let (mut best_floor, mut best_big, mut best_small) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    let cells = 20_000u32;
    for _ in 0..5 {
        best_floor = best_floor.min(floor_batch(&mut floor, cells));
        best_big = best_big.min(fetch_of(FETCH));
        best_small = best_small.min(fetch_of(1_000));
    }
    let mbs = |bytes: f64, d: Duration| bytes / d.as_secs_f64().max(1e-9) / 1e6;
    let floor_rate = mbs(f64::from(cells) * 498.0, best_floor);
    let e2e_rate = mbs(FETCH as f64, best_big);
    let steady = mbs((FETCH - 1_000) as f64, best_big.saturating_sub(best_small));
    println!(
        "circuit summary: relay crypto floor {floor_rate:.1} MB/s of payload; end-to-end 3-hop in-memory fetch of {FETCH} B: {e2e_rate:.1} MB/s including channel and circuit set-up ({:.0}% of the floor), {steady:.1} MB/s steady-state transfer ({:.0}% of the floor); set-up alone {:.2} ms ({:.0}% of the fetch's time)",
        100.0 * e2e_rate / floor_rate,
        100.0 * steady / floor_rate,
        best_small.as_secs_f64() * 1e3,
        100.0 * best_small.as_secs_f64() / best_big.as_secs_f64().max(1e-9),
    );
    reexpansion_summary();
}

/// What an idle circuit pays to become active again: one relay layer on a cell with the key
/// schedule freed before every cell ([`Tor1RelayCrypto::compact`], as the idle timer does)
/// against the same without, interleaved; the difference is one AES-128 key expansion (and
/// its allocation), paid once per direction and hop on the first cell after an idle period.
fn reexpansion_summary() {
    let keys: Vec<u8> = (0..TOR1_KEY_LEN as u8).collect();
    let mut warm = Tor1RelayCrypto::from_key_material(&keys).expect("keys");
    let mut cold = Tor1RelayCrypto::from_key_material(&keys).expect("keys");
    let mut cell = [7u8; 509];
    let n = 20_000u32;
    let (mut best_warm, mut best_cold) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..n {
            warm.encrypt_inbound(black_box(&mut cell));
        }
        best_warm = best_warm.min(t.elapsed());
        let t = Instant::now();
        for _ in 0..n {
            cold.compact();
            cold.encrypt_inbound(black_box(&mut cell));
        }
        best_cold = best_cold.min(t.elapsed());
    }
    let per = |d: Duration| d.as_secs_f64() * 1e9 / f64::from(n);
    println!(
        "circuit summary: one relay layer {:.0} ns per cell; after an idle period (key schedule freed) {:.0} ns: {:.0} ns to rebuild one direction's schedule, once per idle-to-active transition",
        per(best_warm),
        per(best_cold),
        per(best_cold) - per(best_warm)
    );
    println!(
        "circuit summary: heap of idle circuits and streams: cargo test -p onion-circuit --test memory -- --nocapture; size_of::<Circuit>() = {} B, size_of::<Tor1ClientHop>() = {} B (kept while idle)",
        std::mem::size_of::<onion_circuit::circuit::Circuit>(),
        std::mem::size_of::<Tor1ClientHop>()
    );
}

criterion_group!(benches, bench);

/// Nanoseconds this thread has run on a CPU (Linux's `/proc/thread-self/schedstat`; 0
/// elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // For profilers (`perf record`): fetches of this many bytes and nothing else,
    // `ONION_PROFILE_REPEAT` of them (default 1), every world's keys made before the first
    // fetch starts, so that key generation sits apart from the fetches in the samples.
    if let Some(n) = std::env::var("ONION_PROFILE_FETCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let repeat = std::env::var("ONION_PROFILE_REPEAT")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .clamp(1, 1000);
        let sims: Vec<Sim> = (0..repeat)
            .map(|_| {
                Sim::new(SimConfig {
                    response_len: n,
                    ..sim_config()
                })
                .expect("setup")
            })
            .collect();
        println!("keys made; fetching");
        let t = Instant::now();
        let cpu = thread_cpu_ns();
        let mut least = u64::MAX;
        // Each world is dropped after its fetch, as in the benchmark.
        for mut sim in sims {
            let c = thread_cpu_ns();
            sim.run_to_end().expect("run");
            least = least.min(thread_cpu_ns().saturating_sub(c));
        }
        let per = |x: u64| x as f64 / repeat as f64 / 1e6;
        println!(
            "{repeat} fetches of {n} B: {:?} each, {:.3} ms on the CPU each, least {:.3} ms (CPU time: what a shared machine's load inflates least)",
            t.elapsed() / u32::try_from(repeat).unwrap_or(1),
            per(thread_cpu_ns().saturating_sub(cpu)),
            least as f64 / 1e6,
        );
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    summary();
}
