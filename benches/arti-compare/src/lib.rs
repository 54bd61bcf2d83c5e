//! Interleaved A/B timing for the equal-work comparison of onion with Arti's crates.
//!
//! Criterion times one benchmark after another, so load from other processes on a shared
//! machine can favour whichever ran in a quiet moment. [`interleave`] instead runs the
//! contenders of one row in alternating chunks (rotating which goes first in each round), so
//! that load hits all of them alike, and reports each contender's per-round ratio to the
//! reference contender (Arti): the ratio stays meaningful when the absolute times do not.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::time::{Duration, Instant};

/// A contender: `run(n)` performs the measured operation `n` times.
pub struct Contender {
    /// Short label printed in the report (e.g. `onion`, `arti`).
    pub name: &'static str,
    /// Runs the operation the given number of times.
    pub run: Box<dyn FnMut(u64)>,
    /// Untimed preparation of the input for the next `run(n)` (at most [`SETUP_BATCH`]).
    pub setup: Option<Box<dyn FnMut(u64)>>,
}

/// The largest `n` passed to a contender's `setup`: longer runs are timed in batches, so
/// that prepared input stays bounded.
pub const SETUP_BATCH: u64 = 8192;

impl Contender {
    /// Wraps a closure.
    pub fn new(name: &'static str, run: impl FnMut(u64) + 'static) -> Self {
        Contender {
            name,
            run: Box::new(run),
            setup: None,
        }
    }

    /// Wraps a closure whose input for `n` operations is prepared, untimed, by `setup(n)`.
    pub fn with_setup(
        name: &'static str,
        setup: impl FnMut(u64) + 'static,
        run: impl FnMut(u64) + 'static,
    ) -> Self {
        Contender {
            name,
            run: Box::new(run),
            setup: Some(Box::new(setup)),
        }
    }

    /// Times `n` runs (preparation excluded).
    pub fn time(&mut self, n: u64) -> Duration {
        let Some(setup) = self.setup.as_mut() else {
            let t = Instant::now();
            (self.run)(n);
            return t.elapsed();
        };
        let mut total = Duration::ZERO;
        let mut left = n;
        while left > 0 {
            let b = left.min(SETUP_BATCH);
            setup(b);
            let t = Instant::now();
            (self.run)(b);
            total += t.elapsed();
            left -= b;
        }
        total
    }
}

/// One row of the comparison: the same work done by each contender.
pub struct Row {
    /// Row name, also the criterion group name.
    pub name: &'static str,
    /// The contenders; the last one is the reference the ratios are computed against.
    pub contenders: Vec<Contender>,
}

/// What [`interleave`] measured for one contender.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Contender label.
    pub name: &'static str,
    /// Median over rounds of the mean time per operation, in nanoseconds.
    pub median_ns: f64,
    /// Fastest round's mean time per operation, in nanoseconds.
    pub min_ns: f64,
    /// Per-round ratio reference time / this contender's time: median, 10th and 90th
    /// percentile (1.0 for the reference itself).
    pub ratio: [f64; 3],
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the contenders of `row` in `rounds` rounds of `chunk` operations each, alternating
/// between them (the first to run rotates each round), after one untimed warm-up round.
///
/// `chunk` is chosen so that the slowest contender's chunk lasts at least `min_chunk`.
pub fn interleave(row: &mut Row, rounds: usize, min_chunk: Duration) -> Vec<Summary> {
    let k = row.contenders.len();
    // Warm-up and calibration: double the chunk until every contender's chunk is long
    // enough to time reliably (bounded: 2^24 operations at most).
    let mut chunk = 1u64;
    loop {
        let slowest = row
            .contenders
            .iter_mut()
            .map(|c| c.time(chunk))
            .max()
            .unwrap_or_default();
        if slowest >= min_chunk || chunk >= 1 << 24 {
            break;
        }
        chunk *= 2;
    }
    let mut per_op = vec![Vec::with_capacity(rounds); k];
    for r in 0..rounds {
        for j in 0..k {
            let i = (r + j) % k;
            let d = row.contenders[i].time(chunk);
            per_op[i].push(d.as_secs_f64() * 1e9 / chunk as f64);
        }
    }
    let reference = k - 1;
    let mut out = Vec::with_capacity(k);
    for i in 0..k {
        let mut ratios: Vec<f64> = (0..rounds)
            .map(|r| per_op[reference][r] / per_op[i][r])
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mut t = per_op[i].clone();
        t.sort_by(f64::total_cmp);
        out.push(Summary {
            name: row.contenders[i].name,
            median_ns: percentile(&t, 0.5),
            min_ns: t.first().copied().unwrap_or(f64::NAN),
            ratio: [
                percentile(&ratios, 0.5),
                percentile(&ratios, 0.1),
                percentile(&ratios, 0.9),
            ],
        });
    }
    out
}

/// Formats a time in nanoseconds with a unit that keeps three significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Prints one row's summaries as `ROW` lines (one per contender).
pub fn report(row: &str, chunk_rounds: usize, sums: &[Summary]) {
    let reference = sums.last().map_or("reference", |s| s.name);
    for s in sums {
        println!(
            "ROW {row} | {:<24} | median {:>10} | min {:>10} | {reference}/this: median {:.2} (p10 {:.2}, p90 {:.2}) over {chunk_rounds} rounds",
            s.name,
            fmt_ns(s.median_ns),
            fmt_ns(s.min_ns),
            s.ratio[0],
            s.ratio[1],
            s.ratio[2],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_of_double_work_is_about_two() {
        // Two contenders doing 1x and 2x the same work: the reference (2x) over the 1x
        // contender must come out near 2, whatever the machine's load.
        fn work(n: u64, reps: u32) -> u64 {
            let mut x = 1u64;
            for _ in 0..n * u64::from(reps) * 200 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            x
        }
        let mut row = Row {
            name: "self-test",
            contenders: vec![
                Contender::new("one", |n| {
                    std::hint::black_box(work(n, 1));
                }),
                Contender::new("two", |n| {
                    std::hint::black_box(work(n, 2));
                }),
            ],
        };
        let s = interleave(&mut row, 21, Duration::from_micros(200));
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].ratio[0], 1.0);
        assert!(
            (1.5..2.6).contains(&s[0].ratio[0]),
            "ratio {:?}",
            s[0].ratio
        );
        assert!(s[0].median_ns < s[1].median_ns);
    }
}
