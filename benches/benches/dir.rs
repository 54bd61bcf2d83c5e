//! Directory documents (onion-dir): parse throughput of the real public-network
//! documents (November 2022, 6,088 relays), of a generated 70,000-relay
//! consensus, signature verification, and applying a consensus diff.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::io::Read;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use onion_dir::consensus::{self, DigestAlgorithm};
use onion_dir::{authcert, consdiff, microdesc, synth, RsaIdentity, Timestamp};

fn testdata(path: &str) -> String {
    let p = format!(
        "{}/../onion-dir/testdata/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    if p.ends_with(".gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .expect("gzip");
        s
    } else {
        String::from_utf8(raw).expect("utf-8")
    }
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("dir-parse");
    let docs = [
        (
            "real-microdesc-consensus",
            testdata("real/real-microdesc-consensus-2022-11-19.txt.gz"),
        ),
        (
            "real-ns-consensus",
            testdata("real/real-ns-consensus-2022-11-19.txt.gz"),
        ),
    ];
    for (name, text) in &docs {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                consensus::parse(black_box(text))
                    .expect("parse")
                    .assume_verified()
                    .relays
                    .len()
            })
        });
    }
    let mds = testdata("real/real-cached-microdescs-2022-11-19.txt.gz");
    g.throughput(Throughput::Bytes(mds.len() as u64));
    g.bench_function("real-microdescs", |b| {
        b.iter(|| microdesc::parse_many(black_box(&mds)).expect("parse").len())
    });
    for n in [7_000usize, 70_000] {
        let net = synth::network(n, 1);
        g.throughput(Throughput::Bytes(net.consensus.len() as u64));
        g.bench_function(format!("synth-consensus-{n}"), |b| {
            b.iter(|| {
                consensus::parse(black_box(&net.consensus))
                    .expect("parse")
                    .assume_verified()
                    .relays
                    .len()
            })
        });
        g.throughput(Throughput::Bytes(net.microdescs.len() as u64));
        g.bench_function(format!("synth-microdescs-{n}"), |b| {
            b.iter(|| {
                microdesc::parse_many(black_box(&net.microdescs))
                    .expect("parse")
                    .len()
            })
        });
    }
    g.finish();
}

fn verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("dir-verify");
    let now = Timestamp::parse_str("2026-11-23 07:20:09").expect("time");
    let certs_text = testdata("tornet/cached-certs");
    g.bench_function("authcert-parse-verify-3", |b| {
        b.iter(|| {
            authcert::parse_many(black_box(&certs_text))
                .expect("parse")
                .into_iter()
                .map(|c| c.verify(now).expect("verify"))
                .collect::<Vec<_>>()
        })
    });
    let certs: Vec<_> = authcert::parse_many(&certs_text)
        .expect("parse")
        .into_iter()
        .map(|c| c.verify(now).expect("verify"))
        .collect();
    let auths: Vec<RsaIdentity> = certs.iter().map(|c| c.fingerprint).collect();
    let text = testdata("tornet/cached-microdesc-consensus");
    g.bench_function("tornet-consensus-3-signatures", |b| {
        b.iter(|| {
            consensus::parse(black_box(&text))
                .expect("parse")
                .verify(&auths, &certs, now)
                .expect("verify")
                .relays
                .len()
        })
    });
    // The digest half of verifying a real consensus (its certificates are not
    // in the fixtures): SHA-256 over the 2.1 MB signed part.
    let real = testdata("real/real-microdesc-consensus-2022-11-19.txt.gz");
    let parsed = consensus::parse(&real).expect("parse").assume_verified();
    g.throughput(Throughput::Bytes(parsed.signed_len as u64));
    g.bench_function("real-consensus-sha256-digest", |b| {
        b.iter(|| black_box(&parsed).signed_digest(DigestAlgorithm::Sha256))
    });
    g.finish();
}

/// Applying a consensus diff (dir-spec §4.5, appendix E) that changes 5% of the
/// lines of the real consensus (every 20th line, and new signatures), as a
/// client with last hour's consensus does: header, SHA3-256 of the base's
/// signed part, the edit, SHA3-256 of the result.
fn consdiff_apply(c: &mut Criterion) {
    let base = testdata("real/real-ns-consensus-2022-11-19.txt.gz");
    let lines: Vec<&str> = base.lines().collect();
    let sig = lines
        .iter()
        .position(|l| l.starts_with("directory-signature "))
        .expect("signatures");
    // Back to front, as C tor writes them: the signatures out and back in,
    // then every 20th line.
    let mut cmds = format!("{},$d\n{sig}a\n", sig + 1);
    for l in &lines[sig..] {
        cmds.push_str(l);
        cmds.push('\n');
    }
    cmds.push_str(".\n");
    for n in (20..sig).step_by(20).rev() {
        cmds.push_str(&format!("{n}c\n{} changed\n.\n", lines[n - 1]));
    }
    let from = consdiff::signed_part_digest(&base).expect("signed part");
    let diff = |to: &str| format!("network-status-diff-version 1\nhash {from} {to}\n{cmds}");
    // The result's digest, learnt from the check that refuses a wrong one.
    let to = match consdiff::apply(&base, &diff(&"0".repeat(64))) {
        Err(consdiff::DiffError::ToDigestMismatch { actual, .. }) => hex::encode(actual),
        other => panic!("{other:?}"),
    };
    let diff = diff(&to);
    let mut g = c.benchmark_group("dir-consdiff");
    g.throughput(Throughput::Bytes(base.len() as u64));
    g.bench_function("real-ns-consensus-5pct", |b| {
        b.iter(|| {
            consdiff::apply(black_box(&base), black_box(&diff))
                .expect("apply")
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, parse, verify, consdiff_apply);
criterion_main!(benches);
