//! Unit tests of path selection on small hand-made networks.

use std::net::{Ipv4Addr, SocketAddrV4};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::consensus::BandwidthWeights;
use crate::policy::{PortSet, RelayPolicy};

fn relay(n: u8, ip: [u8; 4], flags: RelayFlags, bw: u32, exit_ports: &[(u16, u16)]) -> RelayRecord {
    RelayRecord {
        nickname: format!("r{n}"),
        rsa_id: RsaIdentity([n; 20]),
        ipv4: Some(SocketAddrV4::new(Ipv4Addr::from(ip), 9001)),
        flags,
        bandwidth: bw,
        policy: RelayPolicy::Summary {
            v4: PortSet::from_ranges(exit_ports.iter().copied()),
            v6: PortSet::none(),
        },
        ..Default::default()
    }
}

fn base() -> RelayFlags {
    RelayFlags::RUNNING | RelayFlags::VALID | RelayFlags::FAST | RelayFlags::STABLE
}

#[test]
fn three_hops_distinct_and_ordered() {
    let g = base() | RelayFlags::GUARD | RelayFlags::V2DIR;
    let e = base() | RelayFlags::EXIT;
    let recs = vec![
        relay(1, [10, 1, 0, 1], g, 100, &[]),
        relay(2, [10, 2, 0, 1], base(), 100, &[]),
        relay(3, [10, 3, 0, 1], e, 100, &[(80, 80)]),
    ];
    let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
    let sel = PathSelector::new(&view);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let p = sel
        .exit_path(
            ExitRequest::Target(ExitTarget::Port(80)),
            3,
            None,
            &PathOptions::default(),
            &mut rng,
        )
        .unwrap();
    assert_eq!(p.hops(), &[RelayIdx(0), RelayIdx(1), RelayIdx(2)]);
    // Port 443 is allowed by nobody.
    assert_eq!(
        sel.exit_path(
            ExitRequest::Target(ExitTarget::Port(443)),
            3,
            None,
            &PathOptions::default(),
            &mut rng
        ),
        Err(PathError::NoCandidates("exit"))
    );
    // The same /16 as the exit rules the middle out, unless subnets are not enforced.
    let recs = vec![
        relay(1, [10, 1, 0, 1], g, 100, &[]),
        relay(2, [10, 3, 7, 7], base(), 100, &[]),
        relay(3, [10, 3, 0, 1], e, 100, &[(80, 80)]),
    ];
    let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
    let sel = PathSelector::new(&view);
    assert_eq!(
        sel.exit_path(ExitRequest::Any, 3, None, &PathOptions::default(), &mut rng),
        Err(PathError::NoCandidates("middle"))
    );
    let cfg = PathConfig {
        enforce_distinct_subnets: false,
        ..PathConfig::default()
    };
    let sel = PathSelector::with_config(&view, cfg);
    assert!(sel
        .exit_path(ExitRequest::Any, 3, None, &PathOptions::default(), &mut rng)
        .is_ok());
}

#[test]
fn family_needs_both_sides() {
    let g = base() | RelayFlags::GUARD;
    let e = base() | RelayFlags::EXIT;
    let mut a = relay(1, [10, 1, 0, 1], g, 100, &[]);
    let mut b = relay(2, [10, 2, 0, 1], e, 100, &[(1, 65535)]);
    a.family = vec![RsaIdentity([2; 20])];
    let view =
        NetView::from_records(vec![a.clone(), b.clone()], BandwidthWeights::default()).unwrap();
    assert!(!view.same_family(RelayIdx(0), RelayIdx(1)));
    b.family = vec![RsaIdentity([1; 20])];
    let view = NetView::from_records(vec![a, b], BandwidthWeights::default()).unwrap();
    assert!(view.same_family(RelayIdx(0), RelayIdx(1)));
    assert!(view.same_family(RelayIdx(1), RelayIdx(0)));
    let sel = PathSelector::new(&view);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    assert_eq!(
        sel.exit_path(ExitRequest::Any, 2, None, &PathOptions::default(), &mut rng),
        Err(PathError::NoCandidates("guard"))
    );
}

#[test]
fn shared_family_id_separates_without_family_lines() {
    // Proposal 321: a guard and an exit with one `family-ids` token in common, neither
    // listing the other, never share a circuit; a third relay with another ID can take over.
    let g = base() | RelayFlags::GUARD;
    let e = base() | RelayFlags::EXIT;
    let id = |s: &str| vec![s.to_owned()];
    let mut a = relay(1, [10, 1, 0, 1], g, 100, &[]);
    let mut b = relay(2, [10, 2, 0, 1], e, 100, &[(1, 65535)]);
    a.family_ids = id("ed25519:shared");
    b.family_ids = id("ed25519:shared");
    let view =
        NetView::from_records(vec![a.clone(), b.clone()], BandwidthWeights::default()).unwrap();
    assert!(view.same_family(RelayIdx(0), RelayIdx(1)));
    let sel = PathSelector::new(&view);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let o = PathOptions::default();
    assert_eq!(
        sel.exit_path(ExitRequest::Any, 2, None, &o, &mut rng),
        Err(PathError::NoCandidates("guard"))
    );
    // The guard handed in by the guard manager is refused too.
    assert_eq!(
        sel.exit_path(ExitRequest::Any, 2, Some(RelayIdx(0)), &o, &mut rng),
        Err(PathError::GuardConflict(RsaIdentity([1; 20])))
    );
    // A second guard whose ID differs (by one character) is usable: always it, never `a`.
    let mut c = relay(3, [10, 3, 0, 1], g, 1000, &[]);
    c.family_ids = id("ed25519:sharee");
    let view = NetView::from_records(vec![a, b, c], BandwidthWeights::default()).unwrap();
    let sel = PathSelector::new(&view);
    for _ in 0..50 {
        let p = sel
            .exit_path(ExitRequest::Any, 2, None, &o, &mut rng)
            .unwrap();
        assert_eq!(p.hops(), &[RelayIdx(2), RelayIdx(1)]);
    }
}

#[test]
fn lengths_and_named_exit() {
    let g = base() | RelayFlags::GUARD | RelayFlags::V2DIR | RelayFlags::HSDIR;
    let recs: Vec<_> = (0..10u8)
        .map(|i| relay(i, [10, i, 0, 1], g, 10, &[(443, 443)]))
        .collect();
    let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
    let sel = PathSelector::new(&view);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let o = PathOptions::default();
    for len in 1..=MAX_PATH_LEN {
        let p = sel.internal_path(len, None, None, &o, &mut rng).unwrap();
        assert_eq!(p.len(), len);
    }
    assert_eq!(
        sel.internal_path(0, None, None, &o, &mut rng),
        Err(PathError::BadLength(0))
    );
    assert_eq!(
        sel.exit_path(ExitRequest::Any, 1, None, &o, &mut rng),
        Err(PathError::BadLength(1))
    );
    let p = sel
        .internal_path(4, Some(RelayIdx(5)), None, &o, &mut rng)
        .unwrap();
    assert_eq!(p.hops().last(), Some(&RelayIdx(5)));
    let p = sel
        .exit_path(
            ExitRequest::Named(RelayIdx(4), Some(ExitTarget::Port(443))),
            3,
            None,
            &o,
            &mut rng,
        )
        .unwrap();
    assert_eq!(p.hops().last(), Some(&RelayIdx(4)));
    assert_eq!(
        sel.exit_path(
            ExitRequest::Named(RelayIdx(4), Some(ExitTarget::Port(80))),
            3,
            None,
            &o,
            &mut rng
        ),
        Err(PathError::NamedExitUnsuitable(RsaIdentity([4; 20])))
    );
    // A guard handed in that is the exit itself conflicts.
    assert_eq!(
        sel.exit_path(
            ExitRequest::Named(RelayIdx(4), None),
            3,
            Some(RelayIdx(4)),
            &o,
            &mut rng
        ),
        Err(PathError::GuardConflict(RsaIdentity([4; 20])))
    );
    assert!(sel.choose_dir(&o, &mut rng).is_ok());
    assert!(sel.choose_hsdir(&o, &[], &mut rng).is_ok());
    assert_eq!(sel.hsdirs().count(), 10);
}

#[test]
fn seeded_rng_reproduces_and_exclusions_hold() {
    let g = base() | RelayFlags::GUARD | RelayFlags::EXIT;
    let recs: Vec<_> = (0..50u8)
        .map(|i| relay(i, [10, i, 0, 1], g, u32::from(i) + 1, &[(1, 65535)]))
        .collect();
    let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
    let sel = PathSelector::new(&view);
    let ex = Exclusions::from_indices((0..45).map(RelayIdx));
    let o = PathOptions {
        exclude: &ex,
        ..PathOptions::default()
    };
    let run = || {
        sel.exit_path(
            ExitRequest::Any,
            3,
            None,
            &o,
            &mut ChaCha20Rng::seed_from_u64(9),
        )
        .unwrap()
    };
    let a = run();
    assert_eq!(a, run());
    assert!(a.hops().iter().all(|h| h.0 >= 45));
}

#[test]
fn young_network_without_fast_falls_back_like_c_tor() {
    // No relay has earned Fast or Stable yet: C tor still builds circuits (it relaxes those
    // flags when nobody has them); the role flags (Guard, Exit) are never relaxed.
    let plain = RelayFlags::RUNNING | RelayFlags::VALID;
    let recs = vec![
        relay(1, [10, 1, 0, 1], plain | RelayFlags::GUARD, 0, &[]),
        relay(2, [10, 2, 0, 1], plain, 0, &[]),
        relay(3, [10, 3, 0, 1], plain | RelayFlags::EXIT, 0, &[(80, 80)]),
    ];
    let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let req = ExitRequest::Target(ExitTarget::Port(80));
    let p = PathSelector::new(&view)
        .exit_path(req, 3, None, &PathOptions::default(), &mut rng)
        .expect("fallback path");
    assert_eq!(p.hops(), &[RelayIdx(0), RelayIdx(1), RelayIdx(2)]);
    let strict = PathConfig {
        relax_capacity_flags: false,
        ..PathConfig::default()
    };
    assert!(matches!(
        PathSelector::with_config(&view, strict).exit_path(
            req,
            3,
            None,
            &PathOptions::default(),
            &mut rng
        ),
        Err(PathError::NoCandidates(_))
    ));
}

#[test]
fn excluding_keeps_the_requirements_and_swaps_the_exclusions() {
    let first = Exclusions::from_indices([RelayIdx(1)]);
    let o = PathOptions {
        need_fast: false,
        need_stable: true,
        exclude: &first,
    };
    let wider = o.exclude.with([RelayIdx(4)]);
    let w = o.excluding(&wider);
    assert!(!w.need_fast && w.need_stable);
    assert!(w.exclude.contains(RelayIdx(1)) && w.exclude.contains(RelayIdx(4)));
    assert!(!o.exclude.contains(RelayIdx(4)));
}
