//! Path selection on the private C tor network of `testdata/tornet/`: every relay sits on
//! 127.0.0.1 and the exits allow only 127.0.0.0/8, so this needs the full-descriptor view
//! and `enforce_distinct_subnets = false` (C tor's `EnforceDistinctSubnets 0`).

use onion_dir::netview::NetView;
use onion_dir::policy::ExitTarget;
use onion_dir::select::path::{ExitRequest, PathConfig, PathError, PathOptions, PathSelector};
use onion_dir::RelayFlags;
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

/// The microdescriptor documents of the test network with `family-ids` lines (proposal 321,
/// C tor 0.4.9) added to the named relays, and the consensus `m` lines updated to the new
/// digests (the consensus is then unsigned: tests use `assume_verified`).
fn with_family_ids(ids: &[(&str, &str)]) -> (String, String) {
    let cons = onion_dir::consensus::parse(MDCONS)
        .unwrap()
        .assume_verified();
    let mds = onion_dir::microdesc::parse_many(MDS).unwrap();
    let (mut cons_text, mut md_text) = (MDCONS.to_owned(), MDS.to_owned());
    for &(nick, line) in ids {
        let rs = cons.relays.iter().find(|r| r.nickname == nick).unwrap();
        let md = mds.iter().find(|m| Some(m.digest) == rs.md_digest).unwrap();
        let ntor = md
            .text
            .lines()
            .find(|l| l.starts_with("ntor-onion-key "))
            .unwrap();
        let new = md
            .text
            .replacen(ntor, &format!("{ntor}\nfamily-ids {line}"), 1);
        let digest = onion_dir::microdesc::parse_one(&new).unwrap().digest;
        md_text = md_text.replacen(md.text, &new, 1);
        cons_text = cons_text.replacen(
            &format!("\nm {}\n", md.digest.to_base64()),
            &format!("\nm {}\n", digest.to_base64()),
            1,
        );
    }
    (cons_text, md_text)
}

#[test]
fn microdescriptor_family_ids_keep_families_apart() {
    const A: &str = "ed25519:VbrzPXDA0u6vYiZ6zYMF1tJbOmgwzeRbvAkI9+jdXzc";
    const B: &str = "ed25519:ZMk1vNHkcDt/Lgh8FJBkrAD9ZhglO6YtsJAjbn3oJzo";
    // Four families: {relay0, relay1, relay2, exit0} by A, {auth0, auth1} by B (auth1 also
    // holds a lone ID), {auth2}, {exit1}. Nobody has a `family` line.
    let (cons_text, md_text) = with_family_ids(&[
        ("relay0", A),
        ("relay1", A),
        ("relay2", &format!("{A} ed25519:unshared")),
        ("exit0", A),
        ("auth0", B),
        ("auth1", &format!("{B} ed25519:other")),
    ]);
    let cons = onion_dir::consensus::parse(&cons_text)
        .unwrap()
        .assume_verified();
    let mds = onion_dir::microdesc::parse_many(&md_text).unwrap();
    assert_eq!(mds.iter().filter(|m| m.family_ids.contains(A)).count(), 4);
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    assert_eq!(view.len(), 8, "every relay still has its microdescriptor");
    let idx = |n: &str| view.by_nickname(n).unwrap();
    let group = |n: &str| match n {
        "relay0" | "relay1" | "relay2" | "exit0" => 0,
        "auth0" | "auth1" => 1,
        "auth2" => 2,
        _ => 3,
    };
    let nicks = [
        "relay0", "relay1", "relay2", "exit0", "auth0", "auth1", "auth2", "exit1",
    ];
    for a in nicks {
        for b in nicks {
            let same = a != b && group(a) == group(b);
            assert_eq!(view.same_family(idx(a), idx(b)), same, "{a} {b}");
        }
    }
    assert_eq!(
        view.relay(idx("relay2")).unwrap().family_ids,
        vec![A.to_owned(), "ed25519:unshared".to_owned()]
    );

    let cfg = PathConfig {
        enforce_distinct_subnets: false,
        ..PathConfig::default()
    };
    let sel = PathSelector::with_config(&view, cfg.clone());
    let opts = PathOptions::default();
    let mut rng = ChaCha20Rng::seed_from_u64(321);
    let mut seen = std::collections::BTreeSet::new();
    for len in [2usize, 3, 4] {
        for _ in 0..100 {
            let p = sel.internal_path(len, None, None, &opts, &mut rng).unwrap();
            let groups: Vec<u8> = p.records(&view).map(|r| group(&r.nickname)).collect();
            let mut distinct = groups.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), len, "two hops of one family: {groups:?}");
            seen.extend(p.records(&view).map(|r| r.nickname.clone()));
        }
    }
    // Every family supplies hops: the rule removes combinations, not relays. (exit0 itself
    // weighs 0 as a middle here, Wmd = 0, so relay0-2 always win its family's draws.)
    let families: std::collections::BTreeSet<u8> = seen.iter().map(|n| group(n)).collect();
    assert_eq!(families.len(), 4, "{seen:?}");
    assert!(seen.contains("relay0") && seen.contains("auth0") && seen.contains("auth1"));
    // Four families cannot fill five hops; without the family IDs they can.
    assert!(matches!(
        sel.internal_path(5, None, None, &opts, &mut rng),
        Err(PathError::NoCandidates(_))
    ));
    let plain = NetView::from_microdescs(
        &onion_dir::consensus::parse(MDCONS)
            .unwrap()
            .assume_verified(),
        &onion_dir::microdesc::parse_many(MDS).unwrap(),
    )
    .unwrap();
    assert!(PathSelector::with_config(&plain, cfg)
        .internal_path(5, None, None, &opts, &mut rng)
        .is_ok());
}
