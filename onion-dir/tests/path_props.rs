//! Properties of path selection: no chosen path breaks a family, subnet, flag, policy or
//! exclusion rule (path-spec §2.2), on random networks and on the real network documents.

use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use onion_dir::consensus::BandwidthWeights;
use onion_dir::netview::{NetView, RelayIdx, RelayRecord};
use onion_dir::policy::{ExitTarget, PortSet, RelayPolicy};
use onion_dir::select::path::{
    Exclusions, ExitRequest, Path, PathConfig, PathError, PathOptions, PathSelector,
    LONG_LIVED_PORTS,
};
use onion_dir::{RelayFlags, RsaIdentity};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Whether two records are one family, judged from the records alone: each lists the other
/// (dir-spec §2.1.1), or they share a `family-ids` token (proposal 321, C tor 0.4.9).
fn one_family(a: &RelayRecord, b: &RelayRecord) -> bool {
    (a.family.contains(&b.rsa_id) && b.family.contains(&a.rsa_id))
        || a.family_ids.iter().any(|x| b.family_ids.contains(x))
}

/// Independent check of every rule for an exit path (guard first, exit last).
fn check_exit_path(
    view: &NetView,
    path: &Path,
    target: Option<ExitTarget>,
    opts: &PathOptions<'_>,
    cfg: &PathConfig,
) -> Result<(), String> {
    let recs: Vec<&RelayRecord> = path
        .hops()
        .iter()
        .map(|h| view.relay(*h).unwrap())
        .collect();
    let port = match target {
        Some(ExitTarget::Port(p)) | Some(ExitTarget::Addr(_, p)) => Some(p),
        None => None,
    };
    let stable = opts.need_stable || port.is_some_and(|p| cfg.long_lived_ports.contains(&p));
    for (i, a) in recs.iter().enumerate() {
        let f = a.flags;
        if !f.contains(RelayFlags::RUNNING) || !f.contains(RelayFlags::VALID) {
            return Err(format!("hop {i} not Running+Valid"));
        }
        if opts.need_fast && !f.contains(RelayFlags::FAST) {
            return Err(format!("hop {i} not Fast"));
        }
        if stable && !f.contains(RelayFlags::STABLE) {
            return Err(format!("hop {i} not Stable"));
        }
        if opts.exclude.contains(path.hops()[i]) {
            return Err(format!("hop {i} excluded"));
        }
        for (j, b) in recs.iter().enumerate().skip(i + 1) {
            if a.rsa_id == b.rsa_id {
                return Err(format!("hops {i} and {j} are the same relay"));
            }
            if one_family(a, b) {
                return Err(format!("hops {i} and {j} are in one family"));
            }
            if cfg.enforce_distinct_subnets {
                if let (Some(x), Some(y)) = (a.ipv4, b.ipv4) {
                    if x.ip().octets()[..2] == y.ip().octets()[..2] {
                        return Err(format!("hops {i} and {j} share a /16"));
                    }
                }
                if let (Some(x), Some(y)) = (a.ipv6, b.ipv6) {
                    if x.ip().segments()[..2] == y.ip().segments()[..2] {
                        return Err(format!("hops {i} and {j} share a /32"));
                    }
                }
            }
        }
    }
    let guard = recs[0];
    if !guard.flags.contains(RelayFlags::GUARD) || guard.flags.contains(RelayFlags::MIDDLE_ONLY) {
        return Err("guard lacks Guard or is MiddleOnly".into());
    }
    let exit = recs[recs.len() - 1];
    if exit.flags.contains(RelayFlags::BAD_EXIT) || exit.flags.contains(RelayFlags::MIDDLE_ONLY) {
        return Err("exit is BadExit or MiddleOnly".into());
    }
    match (&exit.policy, target) {
        (RelayPolicy::Summary { v4, .. }, Some(ExitTarget::Port(p))) => {
            if !v4.ranges().iter().any(|&(lo, hi)| lo <= p && p <= hi) {
                return Err(format!("exit does not allow port {p}"));
            }
        }
        (_, Some(t)) => {
            if !exit.policy.allows(t) {
                return Err("exit policy rejects target".into());
            }
        }
        (_, None) => {
            if !exit.policy.allows_some_port() {
                return Err("exit allows no port".into());
            }
        }
    }
    Ok(())
}

const PORTS: [u16; 5] = [22, 80, 443, 6667, 9999];

fn arb_flags() -> impl Strategy<Value = RelayFlags> {
    // Mostly usable relays, with every flag sometimes missing.
    proptest::collection::vec(0u8..10, 9).prop_map(|v| {
        let pick = |i: usize, f: RelayFlags, p: u8| if v[i] < p { f } else { RelayFlags::empty() };
        pick(0, RelayFlags::RUNNING, 9)
            | pick(1, RelayFlags::VALID, 9)
            | pick(2, RelayFlags::FAST, 8)
            | pick(3, RelayFlags::STABLE, 7)
            | pick(4, RelayFlags::GUARD, 5)
            | pick(5, RelayFlags::EXIT, 4)
            | pick(6, RelayFlags::BAD_EXIT, 1)
            | pick(7, RelayFlags::MIDDLE_ONLY, 1)
            | pick(8, RelayFlags::V2DIR, 7)
    })
}

#[derive(Debug, Clone)]
struct ArbRelay {
    flags: RelayFlags,
    net: u8,
    v6net: Option<u8>,
    bw: u32,
    fam: Vec<u8>,
    /// Family IDs drawn from a small pool, so that groups of several relays form.
    fids: Vec<u8>,
    accept: bool,
    ports: Vec<u16>,
}

fn arb_relay(n: u8) -> impl Strategy<Value = ArbRelay> {
    (
        arb_flags(),
        0u8..12,
        proptest::option::of(0u8..6),
        0u32..5000,
        proptest::collection::vec(0..n, 0..4),
        proptest::collection::vec(0u8..8, 0..3),
        any::<bool>(),
        proptest::collection::vec(proptest::sample::select(PORTS.to_vec()), 0..3),
    )
        .prop_map(
            |(flags, net, v6net, bw, fam, fids, accept, ports)| ArbRelay {
                flags,
                net,
                v6net,
                bw,
                fam,
                fids,
                accept,
                ports,
            },
        )
}

fn build(relays: &[ArbRelay]) -> NetView {
    let recs = relays
        .iter()
        .enumerate()
        .map(|(i, r)| RelayRecord {
            nickname: format!("n{i}"),
            rsa_id: RsaIdentity([i as u8; 20]),
            ipv4: Some(SocketAddrV4::new(
                Ipv4Addr::new(10, r.net, i as u8, 1),
                9001,
            )),
            ipv6: r.v6net.map(|n| {
                SocketAddrV6::new(
                    Ipv6Addr::new(0x2001, u16::from(n), 0, 0, 0, 0, 0, i as u16),
                    9001,
                    0,
                    0,
                )
            }),
            flags: r.flags,
            bandwidth: r.bw,
            family: r.fam.iter().map(|&j| RsaIdentity([j; 20])).collect(),
            family_ids: r.fids.iter().map(|&j| format!("ed25519:fam{j}")).collect(),
            policy: RelayPolicy::Summary {
                v4: PortSet::from_summary(r.accept, r.ports.iter().map(|&p| (p, p))),
                v6: PortSet::none(),
            },
            ..Default::default()
        })
        .collect();
    let w = BandwidthWeights::parse_line(
        "Wbd=0 Wbe=0 Wbg=389 Wbm=10000 Wdb=10000 Web=10000 Wed=10000 Wee=10000 Weg=10000 \
         Wem=10000 Wgb=10000 Wgd=0 Wgg=9611 Wgm=9611 Wmb=10000 Wmd=0 Wme=0 Wmg=389 Wmm=10000",
        None,
    );
    NetView::from_records(recs, w).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn exit_paths_obey_every_rule(
        relays in proptest::collection::vec(arb_relay(30), 3..30),
        excl in proptest::collection::vec(0u32..30, 0..4),
        port_i in 0usize..6,
        len in 2usize..6,
        subnets in any::<bool>(),
        need_fast in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let view = build(&relays);
        // The rules are checked strictly here; the Fast/Stable fallback has its own test.
        let cfg = PathConfig { enforce_distinct_subnets: subnets, relax_capacity_flags: false, ..PathConfig::default() };
        let sel = PathSelector::with_config(&view, cfg.clone());
        let ex = Exclusions::from_indices(excl.iter().copied().filter(|&i| (i as usize) < relays.len()).map(RelayIdx));
        let opts = PathOptions { need_fast, need_stable: false, exclude: &ex };
        let target = PORTS.get(port_i).map(|&p| ExitTarget::Port(p));
        let req = target.map_or(ExitRequest::Any, ExitRequest::Target);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        match sel.exit_path(req, len, None, &opts, &mut rng) {
            Ok(p) => {
                prop_assert_eq!(p.len(), len);
                if let Err(e) = check_exit_path(&view, &p, target, &opts, &cfg) {
                    return Err(TestCaseError::fail(e));
                }
            }
            Err(PathError::NoCandidates("exit")) => {
                // Then no relay at all can be this exit.
                let stable = target.is_some_and(|t| matches!(t, ExitTarget::Port(p) if LONG_LIVED_PORTS.contains(&p)));
                for i in 0..view.len() {
                    let idx = RelayIdx(i as u32);
                    let r = view.relay(idx).unwrap();
                    let f = r.flags;
                    let ok = f.contains(RelayFlags::RUNNING | RelayFlags::VALID)
                        && (!need_fast || f.contains(RelayFlags::FAST))
                        && (!stable || f.contains(RelayFlags::STABLE))
                        && !f.contains(RelayFlags::BAD_EXIT)
                        && !f.contains(RelayFlags::MIDDLE_ONLY)
                        && !ex.contains(idx)
                        && target.map_or(r.policy.allows_some_port(), |t| r.policy.allows(t));
                    prop_assert!(!ok, "relay {} could have been the exit", i);
                }
            }
            Err(PathError::NoCandidates(_)) => {}
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
        }
    }

    #[test]
    fn same_family_matches_the_records(relays in proptest::collection::vec(arb_relay(30), 1..30)) {
        let view = build(&relays);
        for i in 0..view.len() as u32 {
            let a = RelayIdx(i);
            let mut fam = Vec::new();
            for j in 0..view.len() as u32 {
                let b = RelayIdx(j);
                let expect = i != j && one_family(view.relay(a).unwrap(), view.relay(b).unwrap());
                prop_assert_eq!(view.same_family(a, b), expect, "{} {}", i, j);
                if expect {
                    fam.push(b);
                }
            }
            prop_assert_eq!(view.family_of(a), fam);
        }
    }

    #[test]
    fn internal_paths_obey_family_and_subnet(
        relays in proptest::collection::vec(arb_relay(30), 3..30),
        len in 1usize..7,
        target in proptest::option::of(0u32..30),
        seed in any::<u64>(),
    ) {
        let view = build(&relays);
        let cfg = PathConfig { relax_capacity_flags: false, ..PathConfig::default() };
        let sel = PathSelector::with_config(&view, cfg);
        let target = target.filter(|&t| (t as usize) < relays.len()).map(RelayIdx);
        let opts = PathOptions { need_stable: true, ..PathOptions::default() };
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        if let Ok(p) = sel.internal_path(len, target, None, &opts, &mut rng) {
            prop_assert_eq!(p.len(), len);
            if let Some(t) = target {
                prop_assert_eq!(p.hops().last(), Some(&t));
            }
            for (i, &a) in p.hops().iter().enumerate() {
                for &b in &p.hops()[i + 1..] {
                    prop_assert!(a != b);
                    prop_assert!(!view.same_family(a, b));
                    prop_assert!(!one_family(view.relay(a).unwrap(), view.relay(b).unwrap()));
                    prop_assert!(!view.same_subnet(a, b));
                }
                // Every hop but a caller-named target meets the circuit flags.
                if Some(a) != target {
                    prop_assert!(view.flags(a).contains(RelayFlags::FAST | RelayFlags::STABLE | RelayFlags::RUNNING | RelayFlags::VALID));
                }
            }
            if len > 1 || target.is_none() {
                let first = p.hops()[0];
                if Some(first) != target {
                    prop_assert!(view.flags(first).contains(RelayFlags::GUARD));
                }
            }
        }
    }
}

fn gunzip(path: &str) -> String {
    let f = std::fs::File::open(path).unwrap();
    let mut s = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn real_network_paths_obey_every_rule() {
    let cons_text = gunzip(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/real/real-microdesc-consensus-2022-11-19.txt.gz"
    ));
    let md_text = gunzip(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/real/real-cached-microdescs-2022-11-19.txt.gz"
    ));
    let cons = onion_dir::consensus::parse(&cons_text)
        .unwrap()
        .assume_verified();
    let mds = onion_dir::microdesc::parse_many(&md_text).unwrap();
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    // Only the relays whose microdescriptor we hold are usable.
    let with_md = cons
        .relays
        .iter()
        .filter(|r| {
            r.md_digest
                .is_some_and(|d| mds.iter().any(|m| m.digest == d))
        })
        .count();
    assert_eq!(view.len(), with_md);
    assert!(view.len() > 1000, "{} relays", view.len());
    // Families on the real network are resolved (some relay has a mutual family member).
    assert!((0..view.len() as u32).any(|i| !view.family_of(RelayIdx(i)).is_empty()));

    let cfg = PathConfig::default();
    let sel = PathSelector::new(&view);
    let opts = PathOptions::default();
    let mut rng = ChaCha20Rng::seed_from_u64(2022);
    for i in 0..3000u32 {
        let port = [80u16, 443, 22, 6667][i as usize % 4];
        let target = Some(ExitTarget::Port(port));
        let p = sel
            .exit_path(
                ExitRequest::Target(ExitTarget::Port(port)),
                3,
                None,
                &opts,
                &mut rng,
            )
            .unwrap();
        check_exit_path(&view, &p, target, &opts, &cfg).unwrap();
    }
    // Known address: an exit whose summary allows the port.
    let t = ExitTarget::Addr("93.184.216.34".parse().unwrap(), 443);
    let p = sel
        .exit_path(ExitRequest::Target(t), 3, None, &opts, &mut rng)
        .unwrap();
    check_exit_path(&view, &p, Some(t), &opts, &cfg).unwrap();
    // Onion-service style paths.
    for len in [1usize, 4, 5] {
        let p = sel.internal_path(len, None, None, &opts, &mut rng).unwrap();
        assert_eq!(p.len(), len);
    }
    let hsdir = sel.choose_hsdir(&opts, &[], &mut rng).unwrap();
    assert!(view.flags(hsdir).contains(RelayFlags::HSDIR));
    let dir = sel.choose_dir(&opts, &mut rng).unwrap();
    assert!(view.flags(dir).contains(RelayFlags::V2DIR));
    // Reproducible with the same seed.
    let run = || {
        sel.exit_path(
            ExitRequest::Any,
            3,
            None,
            &opts,
            &mut ChaCha20Rng::seed_from_u64(5),
        )
        .unwrap()
    };
    assert_eq!(run(), run());
}
