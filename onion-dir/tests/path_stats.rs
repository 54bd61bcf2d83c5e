//! Statistical tests: position frequencies match the bandwidth-weighted expectation
//! (path-spec §2.2, dir-spec §3.8.3) within binomial bounds computed from the sample size.
//!
//! The expected weights are recomputed here from the consensus text and the spec's formula,
//! independently of `BandwidthWeights::relay_weight`. A count `c` of `n` draws with expected
//! probability `p` passes when `|c - np| <= 5 sqrt(np(1-p)) + 1`: with a fixed seed the test is
//! deterministic, and a correct implementation fails a given relay's bound with probability
//! below 1e-6.

use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};

use onion_dir::consensus::BandwidthWeights;
use onion_dir::netview::{NetView, RelayIdx, RelayRecord};
use onion_dir::policy::{ExitTarget, PortSet, RelayPolicy};
use onion_dir::select::path::{ExitRequest, PathConfig, PathOptions, PathSelector};
use onion_dir::{RelayFlags, RsaIdentity};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn within_bounds(what: &str, counts: &[u64], expected: &[f64], n: u64) {
    assert_eq!(counts.len(), expected.len());
    let total: f64 = expected.iter().sum();
    assert!(total > 0.0, "{what}: no weight");
    let nf = n as f64;
    let mut worst = 0.0f64;
    for (i, (&c, &w)) in counts.iter().zip(expected).enumerate() {
        let p = w / total;
        let mean = nf * p;
        let sd = (nf * p * (1.0 - p)).sqrt();
        let dev = (c as f64 - mean).abs();
        assert!(
            dev <= 5.0 * sd + 1.0,
            "{what}: item {i}: {c} draws, expected {mean:.1} (sd {sd:.1})"
        );
        if sd > 0.0 {
            worst = worst.max(dev / sd);
        }
    }
    eprintln!(
        "{what}: worst deviation {worst:.2} sigma over {} items",
        counts.len()
    );
}

fn gunzip(path: &str) -> String {
    let f = std::fs::File::open(path).unwrap();
    let mut s = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// The spec's weight for a relay in position `pos` (`g`, `m`, `e` or `b`), from the raw
/// `bandwidth-weights` entries.
fn spec_weight(w: &HashMap<String, f64>, pos: char, flags: RelayFlags, bw: u32) -> f64 {
    let guard = flags.contains(RelayFlags::GUARD);
    let exit = flags.contains(RelayFlags::EXIT) && !flags.contains(RelayFlags::BAD_EXIT);
    let class = match (guard, exit) {
        (true, true) => 'd',
        (true, false) => 'g',
        (false, true) => 'e',
        (false, false) => 'm',
    };
    let get = |k: String| w.get(&k).copied().unwrap_or(10000.0);
    let main = if pos == 'g' && class == 'e' {
        0.0
    } else {
        get(format!("W{pos}{class}"))
    };
    // Directory caches get the W?b factor in the middle and exit positions.
    let dir = if (pos == 'm' || pos == 'e') && flags.contains(RelayFlags::V2DIR) {
        get(format!("W{class}b")) / 10000.0
    } else {
        1.0
    };
    f64::from(bw) * main * dir
}

#[test]
fn real_network_position_frequencies() {
    let text = gunzip(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/real/real-ns-consensus-2022-11-19.txt.gz"
    ));
    let cons = onion_dir::consensus::parse(&text)
        .unwrap()
        .assume_verified();
    let view = NetView::from_consensus_only(&cons).unwrap();
    assert_eq!(view.len(), 6088);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("bandwidth-weights "))
        .unwrap();
    let raw: HashMap<String, f64> = line
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect();

    let sel = PathSelector::new(&view);
    let opts = PathOptions::default();
    let mut rng = ChaCha20Rng::seed_from_u64(20221119);
    let n: u64 = 60_000;
    let base = RelayFlags::RUNNING | RelayFlags::VALID | RelayFlags::FAST;
    let banned_end = RelayFlags::MIDDLE_ONLY;

    type Eligible = dyn Fn(&RelayRecord) -> bool;
    let roles: [(&str, char, Box<Eligible>); 4] = [
        (
            "guard",
            'g',
            Box::new(move |r: &RelayRecord| {
                r.flags.contains(base | RelayFlags::GUARD) && !r.flags.contains(banned_end)
            }),
        ),
        (
            "middle",
            'm',
            Box::new(move |r: &RelayRecord| r.flags.contains(base)),
        ),
        (
            "exit:443",
            'e',
            Box::new(move |r: &RelayRecord| {
                r.flags.contains(base)
                    && !r.flags.contains(RelayFlags::BAD_EXIT)
                    && !r.flags.contains(banned_end)
                    && match &r.policy {
                        RelayPolicy::Summary { v4, .. } => {
                            v4.ranges().iter().any(|&(lo, hi)| lo <= 443 && 443 <= hi)
                        }
                        RelayPolicy::Full { .. } => false,
                    }
            }),
        ),
        (
            "directory",
            'b',
            Box::new(move |r: &RelayRecord| {
                r.flags.contains(base | RelayFlags::V2DIR) && !r.flags.contains(banned_end)
            }),
        ),
    ];
    for (name, pos, eligible) in roles.iter() {
        let mut counts = vec![0u64; view.len()];
        for _ in 0..n {
            let idx = match *pos {
                'g' => sel.choose_guard(&opts, &[], &mut rng),
                'm' => sel.choose_middle(&opts, &[], &mut rng),
                'e' => sel.choose_exit(Some(ExitTarget::Port(443)), &opts, &[], &mut rng),
                _ => sel.choose_dir(&opts, &mut rng),
            }
            .unwrap();
            counts[idx.0 as usize] += 1;
        }
        let expected: Vec<f64> = view
            .relays()
            .iter()
            .map(|r| {
                if eligible(r) {
                    spec_weight(&raw, *pos, r.flags, r.bandwidth)
                } else {
                    0.0
                }
            })
            .collect();
        within_bounds(name, &counts, &expected, n);
        // Per weight class (Guard+Exit, Guard, Exit, neither): the Wxx weights at work.
        let class_of = |f: RelayFlags| {
            let g = f.contains(RelayFlags::GUARD);
            let e = f.contains(RelayFlags::EXIT) && !f.contains(RelayFlags::BAD_EXIT);
            usize::from(g) * 2 + usize::from(e)
        };
        let mut cc = vec![0u64; 4];
        let mut ce = vec![0f64; 4];
        for (i, r) in view.relays().iter().enumerate() {
            cc[class_of(r.flags)] += counts[i];
            ce[class_of(r.flags)] += expected[i];
        }
        within_bounds(&format!("{name} by class"), &cc, &ce, n);
    }
}

fn relay(n: u8, net: u8, flags: RelayFlags, bw: u32, fam: &[u8]) -> RelayRecord {
    RelayRecord {
        nickname: format!("r{n}"),
        rsa_id: RsaIdentity([n; 20]),
        ipv4: Some(SocketAddrV4::new(Ipv4Addr::new(10, net, n, 1), 9001)),
        flags,
        bandwidth: bw,
        family: fam.iter().map(|&j| RsaIdentity([j; 20])).collect(),
        policy: RelayPolicy::Summary {
            v4: PortSet::all(),
            v6: PortSet::none(),
        },
        ..Default::default()
    }
}

/// Whole 3-hop paths on a small network with families and shared subnets: the marginal
/// frequency of each relay in each position equals the exact value obtained by enumerating
/// exit, then guard given exit, then middle given both (path-spec §2.2 order).
#[test]
fn three_hop_marginals_match_exact_enumeration() {
    let u = RelayFlags::RUNNING | RelayFlags::VALID | RelayFlags::FAST | RelayFlags::STABLE;
    let g = u | RelayFlags::GUARD;
    let e = u | RelayFlags::EXIT;
    let d = g | RelayFlags::EXIT;
    let recs = vec![
        relay(0, 1, g, 900, &[1]),
        relay(1, 2, e, 700, &[0]),
        relay(2, 3, d, 500, &[]),
        relay(3, 3, g, 400, &[]),
        relay(4, 4, u, 800, &[5]),
        relay(5, 5, e, 300, &[4]),
        relay(6, 6, u, 200, &[]),
        relay(7, 6, g, 650, &[8]),
        relay(8, 7, e, 350, &[]), // lists nobody: family with 7 is one-sided
        relay(9, 8, u | RelayFlags::BAD_EXIT | RelayFlags::EXIT, 500, &[]),
        relay(10, 9, d, 0, &[]),
    ];
    let weights = BandwidthWeights::parse_line(
        "Wbd=0 Wbe=0 Wbg=4000 Wbm=10000 Wdb=10000 Web=10000 Wed=8000 Wee=10000 Weg=3000 \
         Wem=2000 Wgb=10000 Wgd=2500 Wgg=6000 Wgm=6000 Wmb=10000 Wmd=2500 Wme=1500 Wmg=4000 Wmm=10000",
        None,
    );
    let view = NetView::from_records(recs, weights).unwrap();
    let cfg = PathConfig::default();
    let sel = PathSelector::with_config(&view, cfg);
    let n_rel = view.len();
    let ids: Vec<RelayIdx> = (0..n_rel as u32).map(RelayIdx).collect();
    use onion_dir::netview::WeightRole;
    let w = |i: RelayIdx, role: WeightRole| view.role_weight(i, role) as f64;
    // Independent compatibility: distinct, mutual family, /16.
    let ok = |a: RelayIdx, b: RelayIdx| {
        let (ra, rb) = (view.relay(a).unwrap(), view.relay(b).unwrap());
        a != b
            && !(ra.family.contains(&rb.rsa_id) && rb.family.contains(&ra.rsa_id))
            && ra.ipv4.unwrap().ip().octets()[..2] != rb.ipv4.unwrap().ip().octets()[..2]
    };
    let mut pe = vec![0f64; n_rel];
    let mut pg = vec![0f64; n_rel];
    let mut pm = vec![0f64; n_rel];
    let te: f64 = ids.iter().map(|&i| w(i, WeightRole::Exit)).sum();
    for &ex in &ids {
        let p_e = w(ex, WeightRole::Exit) / te;
        if p_e == 0.0 {
            continue;
        }
        pe[ex.0 as usize] += p_e;
        let tg: f64 = ids
            .iter()
            .filter(|&&gd| ok(gd, ex))
            .map(|&gd| w(gd, WeightRole::Guard))
            .sum();
        for &gd in ids.iter().filter(|&&gd| ok(gd, ex)) {
            let p_g = p_e * w(gd, WeightRole::Guard) / tg;
            if p_g == 0.0 {
                continue;
            }
            pg[gd.0 as usize] += p_g;
            let tm: f64 = ids
                .iter()
                .filter(|&&m| ok(m, ex) && ok(m, gd))
                .map(|&m| w(m, WeightRole::Middle))
                .sum();
            for &m in ids.iter().filter(|&&m| ok(m, ex) && ok(m, gd)) {
                pm[m.0 as usize] += p_g * w(m, WeightRole::Middle) / tm;
            }
        }
    }
    let n: u64 = 60_000;
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let mut cg = vec![0u64; n_rel];
    let mut cm = vec![0u64; n_rel];
    let mut ce = vec![0u64; n_rel];
    let opts = PathOptions::default();
    for _ in 0..n {
        let p = sel
            .exit_path(ExitRequest::Any, 3, None, &opts, &mut rng)
            .unwrap();
        let h = p.hops();
        cg[h[0].0 as usize] += 1;
        cm[h[1].0 as usize] += 1;
        ce[h[2].0 as usize] += 1;
    }
    // The bad exit never exits; the zero-bandwidth relay is never chosen.
    assert_eq!(ce[9], 0);
    assert_eq!(cg[10] + cm[10] + ce[10], 0);
    within_bounds("exit", &ce, &pe, n);
    within_bounds("guard", &cg, &pg, n);
    within_bounds("middle", &cm, &pm, n);
}
