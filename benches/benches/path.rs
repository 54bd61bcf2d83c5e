//! Path selection (onion-dir `path`, `netview`): one 3-hop path on the full real network
//! (November 2022, 6,088 relays) and on the relays whose microdescriptors we hold, single
//! position draws, and building the network view.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::io::Read;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use onion_dir::consensus;
use onion_dir::microdesc;
use onion_dir::netview::NetView;
use onion_dir::policy::ExitTarget;
use onion_dir::select::path::{ExitRequest, PathOptions, PathSelector};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn testdata(path: &str) -> String {
    let p = format!(
        "{}/../onion-dir/testdata/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut s = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

fn path(c: &mut Criterion) {
    let ns = testdata("real/real-ns-consensus-2022-11-19.txt.gz");
    let mdc = testdata("real/real-microdesc-consensus-2022-11-19.txt.gz");
    let mds_text = testdata("real/real-cached-microdescs-2022-11-19.txt.gz");
    let ns_cons = consensus::parse(&ns).expect("parse").assume_verified();
    let md_cons = consensus::parse(&mdc).expect("parse").assume_verified();
    let mds = microdesc::parse_many(&mds_text).expect("parse");
    let full = NetView::from_consensus_only(&ns_cons).expect("view");
    let partial = NetView::from_microdescs(&md_cons, &mds).expect("view");
    assert_eq!(full.len(), 6088);

    let mut g = c.benchmark_group("path");
    let opts = PathOptions::default();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (name, view) in [("real-6088", &full), ("real-md-1788", &partial)] {
        let sel = PathSelector::new(view);
        g.bench_function(format!("3hop-port443/{name}"), |b| {
            b.iter(|| {
                sel.exit_path(
                    black_box(ExitRequest::Target(ExitTarget::Port(443))),
                    3,
                    None,
                    &opts,
                    &mut rng,
                )
                .expect("path")
            })
        });
    }
    let sel = PathSelector::new(&full);
    g.bench_function("3hop-port22-stable/real-6088", |b| {
        b.iter(|| {
            sel.exit_path(
                black_box(ExitRequest::Target(ExitTarget::Port(22))),
                3,
                None,
                &opts,
                &mut rng,
            )
            .expect("path")
        })
    });
    g.bench_function("4hop-internal/real-6088", |b| {
        b.iter(|| {
            sel.internal_path(black_box(4), None, None, &opts, &mut rng)
                .expect("path")
        })
    });
    g.bench_function("middle/real-6088", |b| {
        b.iter(|| {
            sel.choose_middle(&opts, black_box(&[]), &mut rng)
                .expect("middle")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("netview");
    g.sample_size(20);
    g.bench_function("build/real-6088", |b| {
        b.iter(|| {
            NetView::from_consensus_only(black_box(&ns_cons))
                .expect("view")
                .len()
        })
    });
    g.bench_function("build/real-md-1788", |b| {
        b.iter(|| {
            NetView::from_microdescs(black_box(&md_cons), &mds)
                .expect("view")
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, path);
criterion_main!(benches);
