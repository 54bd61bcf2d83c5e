//! Path selection on the private C tor network of `testdata/tornet/`: every relay sits on
//! 127.0.0.1 and the exits allow only 127.0.0.0/8, so this needs the full-descriptor view
//! and `enforce_distinct_subnets = false` (C tor's `EnforceDistinctSubnets 0`).

use onion_dir::netview::{ExitTarget, NetView, RelayFlags};
use onion_dir::path::{ExitRequest, PathConfig, PathError, PathOptions, PathSelector};
use onion_dir::Timestamp;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/tornet/cached-consensus"
));
const MDCONS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/tornet/cached-microdesc-consensus"
));
const MDS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/tornet/cached-microdescs.new"
));
const DESCS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/tornet/cached-descriptors.new"
));

fn full_view() -> NetView {
    let cons = onion_dir::consensus::parse(NS).unwrap().assume_verified();
    // The consensus' valid-after: the descriptors' certificates are valid then.
    let now = Timestamp::parse_str("2026-11-23 07:20:00").unwrap();
    let descs: Vec<_> = onion_dir::routerdesc::parse_many(DESCS)
        .unwrap()
        .into_iter()
        .map(|d| d.verify(now).unwrap())
        .collect();
    NetView::from_router_descs(&cons, &descs).unwrap()
}

#[test]
fn full_descriptor_paths_reach_localhost() {
    let view = full_view();
    assert_eq!(view.len(), 8, "every relay has a descriptor");
    let private = PathConfig {
        enforce_distinct_subnets: false,
        ..PathConfig::default()
    };
    let sel = PathSelector::with_config(&view, private);
    let opts = PathOptions::default();
    let target = ExitTarget::Addr("127.0.0.1".parse().unwrap(), 8080);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut exits_seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let p = sel
            .exit_path(ExitRequest::Target(target), 3, None, &opts, &mut rng)
            .unwrap();
        let recs: Vec<_> = p.records(&view).collect();
        assert_eq!(recs.len(), 3);
        let exit = recs[2];
        assert!(exit.nickname.starts_with("exit"), "{}", exit.nickname);
        exits_seen.insert(exit.nickname.clone());
        // Wgd = 0 in this consensus: a Guard+Exit relay never serves as a guard.
        assert!(!recs[0].flags.contains(RelayFlags::EXIT));
        assert!(recs[0].flags.contains(RelayFlags::GUARD));
        assert!(recs
            .iter()
            .all(|r| r.ntor_onion_key.is_some() && r.ed_id.is_some()));
        assert_ne!(recs[0].rsa_id, recs[1].rsa_id);
    }
    assert_eq!(exits_seen.len(), 2);
    // An address outside 127.0.0.0/8 is refused by every exit.
    let far = ExitTarget::Addr("8.8.8.8".parse().unwrap(), 443);
    assert_eq!(
        sel.exit_path(ExitRequest::Target(far), 3, None, &opts, &mut rng),
        Err(PathError::NoCandidates("exit"))
    );
    // With distinct subnets enforced (the default), no two relays on 127.0.0.1 can share a
    // path.
    let strict = PathSelector::new(&view);
    assert!(matches!(
        strict.exit_path(ExitRequest::Target(target), 3, None, &opts, &mut rng),
        Err(PathError::NoCandidates(_))
    ));
}

#[test]
fn microdescriptor_view_has_no_exit_for_localhost() {
    let cons = onion_dir::consensus::parse(MDCONS)
        .unwrap()
        .assume_verified();
    let mds = onion_dir::microdesc::parse_many(MDS).unwrap();
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    assert_eq!(view.len(), 8);
    let sel = PathSelector::with_config(
        &view,
        PathConfig {
            enforce_distinct_subnets: false,
            ..PathConfig::default()
        },
    );
    let opts = PathOptions::default();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    // The summaries say "reject 1-65535": the 127.0.0.0/8 policy is invisible here.
    assert_eq!(
        sel.exit_path(
            ExitRequest::Target(ExitTarget::Port(80)),
            3,
            None,
            &opts,
            &mut rng
        ),
        Err(PathError::NoCandidates("exit"))
    );
    // Internal (onion-service) paths need no exit policy.
    let p = sel.internal_path(4, None, None, &opts, &mut rng).unwrap();
    assert_eq!(p.len(), 4);
}
