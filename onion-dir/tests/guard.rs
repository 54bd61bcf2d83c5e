//! The guard-spec state machine: sampling, primary guards, confirmation, failure and retry,
//! waiting circuits, expiry, and the persisted state (guard-spec §4, A.5).

use std::net::{Ipv4Addr, SocketAddrV4};

use onion_dir::consensus::BandwidthWeights;
use onion_dir::netview::{NetView, RelayIdx, RelayRecord};
use onion_dir::policy::{PortSet, RelayPolicy};
use onion_dir::select::guard::state::{format_time, parse_time};
use onion_dir::select::guard::{
    GuardCircState, GuardError, GuardEvent, GuardMgr, GuardParams, GuardUsage, Reachable,
};
use onion_dir::select::path::{Exclusions, ExitRequest, PathConfig, PathOptions, PathSelector};
use onion_dir::Timestamp;
use onion_dir::{RelayFlags, RsaIdentity};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn guard_flags() -> RelayFlags {
    RelayFlags::RUNNING
        | RelayFlags::VALID
        | RelayFlags::FAST
        | RelayFlags::STABLE
        | RelayFlags::GUARD
        | RelayFlags::V2DIR
}

/// `n` guards and 10 exits, each in its own /16.
fn network(n: u8, unlisted: &[u8]) -> NetView {
    let mut recs: Vec<RelayRecord> = (0..n)
        .filter(|i| !unlisted.contains(i))
        .map(|i| RelayRecord {
            nickname: format!("g{i}"),
            rsa_id: RsaIdentity([i; 20]),
            ipv4: Some(SocketAddrV4::new(Ipv4Addr::new(10, i, 0, 1), 9001)),
            flags: guard_flags(),
            bandwidth: 100 + u32::from(i),
            ..Default::default()
        })
        .collect();
    for j in 0..10u8 {
        recs.push(RelayRecord {
            nickname: format!("x{j}"),
            rsa_id: RsaIdentity([200 + j; 20]),
            ipv4: Some(SocketAddrV4::new(Ipv4Addr::new(20, j, 0, 1), 9001)),
            flags: RelayFlags::RUNNING | RelayFlags::VALID | RelayFlags::FAST | RelayFlags::EXIT,
            bandwidth: 100,
            policy: RelayPolicy::Summary {
                v4: PortSet::all(),
                v6: PortSet::none(),
            },
            ..Default::default()
        });
    }
    NetView::from_records(recs, BandwidthWeights::default()).unwrap()
}

fn reach(mgr: &GuardMgr, id: &RsaIdentity) -> Reachable {
    mgr.sampled()
        .iter()
        .find(|g| g.rsa_id == *id)
        .unwrap()
        .reachable
}

#[test]
fn sampling_primary_and_confirmation() {
    let view = network(100, &[]);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut mgr = GuardMgr::new(GuardParams::default());
    mgr.update_consensus(Timestamp::from_unix(T0), &view, &mut rng);
    // MIN_FILTERED_SAMPLE guards sampled, all usable; 3 primaries in sample order.
    assert_eq!(mgr.sampled().len(), 20);
    assert!(mgr
        .sampled()
        .iter()
        .all(|g| g.sampled_on.unix() <= T0 && g.sampled_on.unix() >= T0 - 12 * DAY));
    let prim: Vec<RsaIdentity> = mgr.primary().to_vec();
    assert_eq!(prim.len(), 3);
    let first3: Vec<RsaIdentity> = mgr.sampled().iter().take(3).map(|g| g.rsa_id).collect();
    assert_eq!(prim, first3);

    // A data circuit uses the first primary (NUM_USABLE_PRIMARY_GUARDS = 1).
    let pick = mgr
        .select(
            Timestamp::from_unix(T0),
            &view,
            GuardUsage::Data,
            &[],
            &PathConfig::default(),
            &mut rng,
        )
        .unwrap();
    assert_eq!(pick.guard, prim[0]);
    assert_eq!(pick.state, GuardCircState::UsableOnCompletion);
    assert_eq!(
        mgr.circuit_succeeded(Timestamp::from_unix(T0 + 1), pick.circ, &mut rng),
        Ok(GuardCircState::Complete)
    );
    assert_eq!(mgr.confirmed(), &[prim[0]]);
    assert_eq!(reach(&mgr, &prim[0]), Reachable::Yes);
    // Reporting twice is an error.
    assert_eq!(
        mgr.circuit_failed(Timestamp::from_unix(T0 + 2), pick.circ),
        Ok(()),
        "the circuit is still tracked until closed"
    );
    assert_eq!(
        mgr.circuit_failed(Timestamp::from_unix(T0 + 2), pick.circ),
        Err(GuardError::UnknownCircuit(pick.circ))
    );
    assert_eq!(
        mgr.circuit_closed(Timestamp::from_unix(T0 + 2), pick.circ),
        Err(GuardError::UnknownCircuit(pick.circ))
    );
    assert_eq!(
        mgr.circuit_succeeded(Timestamp::from_unix(T0 + 2), pick.circ, &mut rng),
        Err(GuardError::UnknownCircuit(pick.circ))
    );

    // Directory fetches may use any of the first three primaries.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let p = mgr
            .select(
                Timestamp::from_unix(T0 + 3),
                &view,
                GuardUsage::Dir,
                &[],
                &PathConfig::default(),
                &mut rng,
            )
            .unwrap();
        seen.insert(p.guard);
        mgr.circuit_closed(Timestamp::from_unix(T0 + 3), p.circ)
            .unwrap();
    }
    // prim[0] failed above, so only primaries 1 and 2 are reachable now.
    assert_eq!(seen.len(), 2);
    assert!(!seen.contains(&prim[0]));
}

#[test]
fn failover_to_nonprimary_waits_then_completes_and_retry_schedule() {
    let view = network(100, &[]);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut mgr = GuardMgr::new(GuardParams::default());
    mgr.update_consensus(Timestamp::from_unix(T0), &view, &mut rng);
    let prim: Vec<RsaIdentity> = mgr.primary().to_vec();
    let cfg = PathConfig::default();
    // A first success: we are on the internet, and the first primary is confirmed.
    let p = mgr
        .select(
            Timestamp::from_unix(T0),
            &view,
            GuardUsage::Data,
            &[],
            &cfg,
            &mut rng,
        )
        .unwrap();
    assert_eq!(
        mgr.circuit_succeeded(Timestamp::from_unix(T0), p.circ, &mut rng),
        Ok(GuardCircState::Complete)
    );
    mgr.circuit_closed(Timestamp::from_unix(T0), p.circ)
        .unwrap();
    // Every primary fails in turn.
    let mut now = T0 + 10;
    for expected in &prim {
        let p = mgr
            .select(
                Timestamp::from_unix(now),
                &view,
                GuardUsage::Data,
                &[],
                &cfg,
                &mut rng,
            )
            .unwrap();
        assert_eq!(&p.guard, expected);
        mgr.circuit_failed(Timestamp::from_unix(now), p.circ)
            .unwrap();
        now += 1;
    }
    assert!(prim.iter().all(|id| reach(&mgr, id) == Reachable::No));
    // Now non-primary guards, in sample order, each pending.
    let s3 = mgr.sampled()[3].rsa_id;
    let s4 = mgr.sampled()[4].rsa_id;
    let c3 = mgr
        .select(
            Timestamp::from_unix(now),
            &view,
            GuardUsage::Data,
            &[],
            &cfg,
            &mut rng,
        )
        .unwrap();
    assert_eq!(c3.state, GuardCircState::UsableIfNoBetterGuard);
    assert_eq!(c3.guard, s3);
    assert!(mgr.sampled()[3].pending);
    let c4 = mgr
        .select(
            Timestamp::from_unix(now),
            &view,
            GuardUsage::Data,
            &[],
            &cfg,
            &mut rng,
        )
        .unwrap();
    assert_eq!(c4.guard, s4);
    // The second finishes first. Its guard is confirmed (so it ranks above the pending
    // one and becomes primary after the confirmed first primary); the primaries before it
    // are down, so the circuit is usable at once.
    assert_eq!(
        mgr.circuit_succeeded(Timestamp::from_unix(now + 5), c4.circ, &mut rng),
        Ok(GuardCircState::Complete)
    );
    assert_eq!(mgr.poll_event(), Some(GuardEvent::CircuitUsable(c4.circ)));
    assert_eq!(mgr.confirmed(), &[prim[0], s4]);
    assert_eq!(mgr.primary(), &[prim[0], s4, prim[1]]);
    // The first one succeeds later: a better guard (s4) works, so it waits...
    assert_eq!(
        mgr.circuit_succeeded(Timestamp::from_unix(now + 6), c3.circ, &mut rng),
        Ok(GuardCircState::WaitingForBetterGuard)
    );
    assert_eq!(mgr.poll_event(), None);
    // Retry schedule: the first primary failed at T0 + 10 and is retried 10 minutes later.
    let failed_at = T0 + 10;
    mgr.handle_timeout(Timestamp::from_unix(failed_at + 599));
    assert_eq!(reach(&mgr, &prim[0]), Reachable::No);
    assert_eq!(
        mgr.poll_timeout(),
        Some(Timestamp::from_unix(failed_at + 600))
    );
    mgr.handle_timeout(Timestamp::from_unix(failed_at + 600));
    assert_eq!(reach(&mgr, &prim[0]), Reachable::Maybe);
    // The waiting circuit expires after NONPRIMARY_GUARD_IDLE_TIMEOUT (600 s).
    mgr.handle_timeout(Timestamp::from_unix(now + 6 + 600));
    assert_eq!(mgr.poll_event(), None);
    mgr.handle_timeout(Timestamp::from_unix(now + 6 + 601));
    assert_eq!(mgr.poll_event(), Some(GuardEvent::CircuitExpired(c3.circ)));
    // prim[2] is no longer primary: the non-primary schedule (hourly) applies to it.
    mgr.handle_timeout(Timestamp::from_unix(failed_at + 2 + 1200));
    assert_eq!(reach(&mgr, &prim[2]), Reachable::No);
    mgr.handle_timeout(Timestamp::from_unix(failed_at + 2 + 3600));
    assert_eq!(reach(&mgr, &prim[2]), Reachable::Maybe);
}

#[test]
fn restrictions_and_path_integration() {
    let view = network(30, &[]);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut mgr = GuardMgr::new(GuardParams::default());
    mgr.update_consensus(Timestamp::from_unix(T0), &view, &mut rng);
    let prim0 = mgr.primary()[0];
    let cfg = PathConfig::default();
    let sel = PathSelector::with_config(&view, cfg.clone());
    let opts = PathOptions::default();
    // Exit first, then a guard that does not conflict with it, then the middle.
    let exit = sel.choose_exit(None, &opts, &[], &mut rng).unwrap();
    let pick = mgr
        .select(
            Timestamp::from_unix(T0),
            &view,
            GuardUsage::Data,
            &[exit],
            &cfg,
            &mut rng,
        )
        .unwrap();
    let path = sel
        .exit_path(
            ExitRequest::Named(exit, None),
            3,
            Some(pick.idx),
            &opts,
            &mut rng,
        )
        .unwrap();
    assert_eq!(path.hops()[0], pick.idx);
    assert_eq!(path.hops()[2], exit);
    // Avoiding the first primary itself (e.g. it is the chosen exit) moves to the next one.
    let p0_idx = view.by_rsa_id(&prim0).unwrap();
    let pick = mgr
        .select(
            Timestamp::from_unix(T0),
            &view,
            GuardUsage::Data,
            &[p0_idx],
            &cfg,
            &mut rng,
        )
        .unwrap();
    assert_ne!(pick.guard, prim0);
    assert_eq!(pick.guard, mgr.primary()[1]);
    // The one-call form: exit, then a guard from the manager, then the middle.
    for _ in 0..50 {
        let (path, pick) = mgr
            .exit_path(
                Timestamp::from_unix(T0),
                &sel,
                ExitRequest::Any,
                3,
                &opts,
                &mut rng,
            )
            .unwrap();
        assert_eq!(path.hops()[0], pick.idx);
        assert!(mgr.primary().contains(&pick.guard));
        let exit = path.hops()[2];
        assert!(!view.same_subnet(exit, pick.idx) && !view.same_family(exit, pick.idx));
        mgr.circuit_closed(Timestamp::from_unix(T0), pick.circ)
            .unwrap();
    }
    // A circuit that must not use the first primary (its caller saw it fail) gets the next
    // primary, through which it is usable at once; the first stays primary for the others.
    let exclude = Exclusions::from_indices([p0_idx]);
    let pick = mgr
        .select_excluding(
            Timestamp::from_unix(T0),
            &view,
            GuardUsage::Data,
            &[],
            &exclude,
            &cfg,
            &mut rng,
        )
        .unwrap();
    assert_eq!(pick.guard, mgr.primary()[1]);
    assert_eq!(pick.state, GuardCircState::UsableOnCompletion);
    mgr.circuit_closed(Timestamp::from_unix(T0), pick.circ)
        .unwrap();
    assert_eq!(mgr.primary()[0], prim0);
    let opts_ex = PathOptions {
        exclude: &exclude,
        ..PathOptions::default()
    };
    for _ in 0..20 {
        let (path, pick) = mgr
            .exit_path(
                Timestamp::from_unix(T0),
                &sel,
                ExitRequest::Any,
                3,
                &opts_ex,
                &mut rng,
            )
            .unwrap();
        assert!(!path.hops().contains(&p0_idx));
        assert_ne!(pick.guard, prim0);
        mgr.circuit_closed(Timestamp::from_unix(T0), pick.circ)
            .unwrap();
    }
    // Excluding by configuration removes it from the filtered set and the primaries.
    mgr.set_excluded(vec![prim0]);
    assert!(!mgr.primary().contains(&prim0));
}

#[test]
fn unlisted_and_old_guards_expire() {
    let view = network(100, &[]);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut mgr = GuardMgr::new(GuardParams::default());
    mgr.update_consensus(Timestamp::from_unix(T0), &view, &mut rng);
    let first = mgr.sampled()[0].rsa_id;
    // The first guard leaves the consensus.
    let view2 = network(100, &[first.0[0]]);
    mgr.update_consensus(Timestamp::from_unix(T0 + DAY), &view2, &mut rng);
    let g = mgr.sampled().iter().find(|g| g.rsa_id == first).unwrap();
    assert!(!g.listed);
    let since = g.unlisted_since.unwrap().unix();
    assert!((T0 + DAY - 4 * DAY..=T0 + DAY).contains(&since));
    assert!(!mgr.primary().contains(&first));
    // 21 days later it is removed (REMOVE_UNLISTED_GUARDS_AFTER = 20 days).
    mgr.update_consensus(Timestamp::from_unix(T0 + 22 * DAY), &view2, &mut rng);
    assert!(mgr.sampled().iter().all(|g| g.rsa_id != first));
    // After GUARD_LIFETIME every unconfirmed guard of the first sample has been replaced.
    let old: Vec<RsaIdentity> = mgr
        .sampled()
        .iter()
        .filter(|g| g.sampled_on.unix() <= T0)
        .map(|g| g.rsa_id)
        .collect();
    assert_eq!(old.len(), 19);
    mgr.update_consensus(Timestamp::from_unix(T0 + 121 * DAY), &view2, &mut rng);
    // (A relay may be sampled again, with a new date.)
    assert!(mgr.sampled().iter().all(|g| g.sampled_on.unix() > T0 + DAY));
    assert_eq!(mgr.sampled().len(), 20);
}

#[test]
fn state_round_trip_keeps_unknown_fields_and_order() {
    let view = network(100, &[]);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut mgr = GuardMgr::new(GuardParams::default());
    mgr.update_consensus(Timestamp::from_unix(T0), &view, &mut rng);
    let cfg = PathConfig::default();
    // Confirm two guards: the first primary, then (after it fails) the second.
    for _ in 0..2 {
        let p = mgr
            .select(
                Timestamp::from_unix(T0),
                &view,
                GuardUsage::Data,
                &[],
                &cfg,
                &mut rng,
            )
            .unwrap();
        mgr.circuit_succeeded(Timestamp::from_unix(T0), p.circ, &mut rng)
            .unwrap();
        let q = mgr
            .select(
                Timestamp::from_unix(T0),
                &view,
                GuardUsage::Data,
                &[],
                &cfg,
                &mut rng,
            )
            .unwrap();
        mgr.circuit_failed(Timestamp::from_unix(T0), q.circ)
            .unwrap();
    }
    assert_eq!(mgr.confirmed().len(), 2);
    let text = mgr.to_state_string();
    let extra = "Guard in=default rsa_id=FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF listed=0 \
                 sampled_on=2026-01-01T00:00:00 pb_use_attempts=3.000000 future_key=x=y\n\
                 Guard in=bridges rsa_id=EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE listed=1 sampled_on=2026-01-01T00:00:00\n\
                 EntryGuardDownSince something else\n";
    let text = format!("{text}{extra}");
    let restored = GuardMgr::from_state_str(GuardParams::default(), &text).unwrap();
    assert_eq!(restored.sampled().len(), 21);
    assert_eq!(restored.confirmed(), mgr.confirmed());
    let last = restored.sampled().last().unwrap();
    assert_eq!(
        last.extra,
        vec![
            ("pb_use_attempts".to_string(), "3.000000".to_string()),
            ("future_key".to_string(), "x=y".to_string())
        ]
    );
    let again = restored.to_state_string();
    assert_eq!(
        GuardMgr::from_state_str(GuardParams::default(), &again)
            .unwrap()
            .to_state_string(),
        again
    );
    assert!(again.contains("Guard in=bridges rsa_id=EEEE"));
    assert!(again.contains("pb_use_attempts=3.000000"));
    for (g, h) in mgr.sampled().iter().zip(restored.sampled()) {
        assert_eq!(g.rsa_id, h.rsa_id);
        assert_eq!(g.sampled_on, h.sampled_on);
        assert_eq!(g.confirmed_on, h.confirmed_on);
        assert_eq!(g.nickname, h.nickname);
        assert_eq!(
            h.reachable,
            Reachable::Maybe,
            "transient state starts fresh"
        );
    }
    // After a consensus the restored manager has the same primaries.
    let mut restored = restored;
    restored.update_consensus(Timestamp::from_unix(T0), &view, &mut rng);
    assert_eq!(&restored.primary()[..2], mgr.confirmed());
}

#[test]
fn state_errors_name_the_problem() {
    let p = GuardParams::default;
    let e = |s: &str| GuardMgr::from_state_str(p(), s).unwrap_err().to_string();
    assert_eq!(
        e("Guard in=default listed=1 sampled_on=2026-01-01T00:00:00"),
        "line 1: missing required key `rsa_id`"
    );
    assert_eq!(
        e("\nGuard in=default rsa_id=zz listed=1 sampled_on=2026-01-01T00:00:00"),
        "line 2: bad value for `rsa_id`"
    );
    assert!(e("Guard in=default rsa_id=FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF listed=2 sampled_on=2026-01-01T00:00:00").contains("`listed`"));
    assert!(e("Guard in=default novalue").contains("not K=V"));
    assert!(e("Guard in=default in=x").contains("repeated"));
    let line = "Guard in=default rsa_id=FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF listed=1 sampled_on=2026-01-01T00:00:00\n";
    assert!(e(&format!("{line}{line}")).contains("listed twice"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn state_parser_never_panics(s in "(Guard [ -~]{0,120}\n){0,4}") {
        let _ = GuardMgr::from_state_str(GuardParams::default(), &s);
    }

    #[test]
    fn time_round_trip(t in 0u64..253_402_300_799) {
        let t = Timestamp::from_unix(t);
        prop_assert_eq!(parse_time(&format_time(t)), Some(t));
    }

    #[test]
    fn state_round_trip(
        guards in proptest::collection::vec(
            (any::<[u8; 20]>(), "[A-Za-z0-9]{1,19}", 0u64..4_000_000_000, any::<bool>(),
             proptest::option::of(0u64..4_000_000_000), proptest::option::of(0u64..4_000_000_000),
             proptest::collection::vec(("[a-z_]{1,8}", "[!-~]{1,10}"), 0..3)),
            0..12),
    ) {
        let mut text = String::new();
        let mut seen = std::collections::HashSet::new();
        let mut idx = 0;
        for (id, nick, sampled, listed, unlisted, confirmed, extra) in &guards {
            if !seen.insert(*id) {
                continue;
            }
            text.push_str(&format!(
                "Guard in=default rsa_id={} nickname={nick} sampled_on={} listed={}",
                hex::encode(id), format_time(Timestamp::from_unix(*sampled)), u8::from(*listed)
            ));
            if let Some(u) = unlisted {
                text.push_str(&format!(" unlisted_since={}", format_time(Timestamp::from_unix(*u))));
            }
            if let Some(c) = confirmed {
                text.push_str(&format!(" confirmed_on={} confirmed_idx={idx}", format_time(Timestamp::from_unix(*c))));
                idx += 1;
            }
            let mut keys = std::collections::HashSet::new();
            for (k, v) in extra {
                if keys.insert(k.clone()) && !["in", "rsa_id", "nickname", "listed", "sampled_on", "sampled_by", "unlisted_since", "confirmed_on", "confirmed_idx"].contains(&k.as_str()) {
                    text.push_str(&format!(" x{k}={v}"));
                }
            }
            text.push('\n');
        }
        let a = GuardMgr::from_state_str(GuardParams::default(), &text).unwrap();
        let out = a.to_state_string();
        let b = GuardMgr::from_state_str(GuardParams::default(), &out).unwrap();
        prop_assert_eq!(a.sampled(), b.sampled());
        prop_assert_eq!(a.confirmed(), b.confirmed());
        prop_assert_eq!(b.to_state_string(), out);
        prop_assert_eq!(a.sampled().len(), seen.len());
    }
}

#[test]
fn guard_params_from_consensus() {
    let p = GuardParams::default().with_consensus_params([
        ("guard-n-primary-guards", 5),
        ("guard-lifetime-days", 0), // out of range: ignored
        ("guard-n-primary-dir-guards-to-use", 2),
        ("guard-remove-unlisted-guards-after-days", 10),
        ("unrelated", 7),
    ]);
    assert_eq!(p.n_primary, 5);
    assert_eq!(p.guard_lifetime.as_secs(), 120 * DAY);
    assert_eq!(p.n_usable_primary_dir, 2);
    assert_eq!(p.remove_unlisted_after.as_secs(), 10 * DAY);
    assert_eq!(p.primary_retry.interval(0), 600);
    assert_eq!(p.primary_retry.interval(7 * 3600), 90 * 60);
    assert_eq!(p.nonprimary_retry.interval(400 * 3600), 36 * 3600);
    let _ = RelayIdx(0);
}

/// Every guard parameter of param-spec §11 lands in its field, in its unit, and a value
/// outside its range leaves the default.
#[test]
fn guard_params_every_name_and_range() {
    let max = i64::from(i32::MAX);
    let p = GuardParams::default().with_consensus_params([
        ("guard-lifetime-days", 3650),
        ("guard-confirmed-min-lifetime-days", 1),
        ("guard-internet-likely-down-interval", max),
        ("guard-max-sample-size", 7),
        ("guard-max-sample-threshold-percent", 100),
        ("guard-min-filtered-sample-size", 9),
        ("guard-n-primary-guards", 4),
        ("guard-n-primary-guards-to-use", 2),
        ("guard-n-primary-dir-guards-to-use", 5),
        ("guard-nonprimary-guard-connect-timeout", 30),
        ("guard-nonprimary-guard-idle-timeout", 1200),
        ("guard-remove-unlisted-guards-after-days", 3),
    ]);
    assert_eq!(p.guard_lifetime.as_secs(), 3650 * DAY);
    assert_eq!(p.confirmed_min_lifetime.as_secs(), DAY);
    assert_eq!(p.internet_likely_down.as_secs(), 2_147_483_647);
    assert_eq!(p.max_sample_size, 7);
    assert_eq!(p.max_sample_threshold_percent, 100);
    assert_eq!(p.min_filtered_sample, 9);
    assert_eq!(p.n_primary, 4);
    assert_eq!(p.n_usable_primary, 2);
    assert_eq!(p.n_usable_primary_dir, 5);
    assert_eq!(p.nonprimary_connect_timeout.as_secs(), 30);
    assert_eq!(p.nonprimary_idle_timeout.as_secs(), 1200);
    assert_eq!(p.remove_unlisted_after.as_secs(), 3 * DAY);
    let d = GuardParams::default();
    let out = GuardParams::default().with_consensus_params([
        ("guard-lifetime-days", 3651),
        ("guard-internet-likely-down-interval", max + 1),
        ("guard-max-sample-threshold-percent", 101),
        ("guard-n-primary-guards", 0),
        ("guard-nonprimary-guard-idle-timeout", -5),
    ]);
    assert_eq!(out, d);
}

fn gunzip(path: &str) -> String {
    use std::io::Read;
    let f = std::fs::File::open(path).unwrap();
    let mut s = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// On the real network: the sample comes from relays with descriptors, and a guard whose
/// descriptor goes missing stays listed (guard-spec §4.12) when the consensus is used.
#[test]
fn real_consensus_missing_descriptor_keeps_guard_listed() {
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
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut mgr = GuardMgr::new(GuardParams::default());
    mgr.update_from_consensus(Timestamp::from_unix(T0), &cons, &view, &mut rng);
    assert_eq!(mgr.sampled().len(), 20);
    assert!(mgr.missing_descriptors(&view).is_empty());
    let p0 = mgr.primary()[0];
    // Drop p0's microdescriptor.
    let digest = cons
        .relays
        .iter()
        .find(|r| r.identity == p0)
        .and_then(|r| r.md_digest)
        .unwrap();
    let fewer: Vec<_> = mds.iter().filter(|m| m.digest != digest).cloned().collect();
    let view2 = NetView::from_microdescs(&cons, &fewer).unwrap();
    assert_eq!(view2.len() + 1, view.len());
    let mut with_cons = mgr.clone();
    with_cons.update_from_consensus(Timestamp::from_unix(T0 + 60), &cons, &view2, &mut rng);
    assert_eq!(with_cons.primary()[0], p0);
    assert_eq!(with_cons.missing_descriptors(&view2), vec![p0]);
    // It cannot carry a circuit without its descriptor: the next primary is used.
    let pick = with_cons
        .select(
            Timestamp::from_unix(T0 + 60),
            &view2,
            GuardUsage::Data,
            &[],
            &PathConfig::default(),
            &mut rng,
        )
        .unwrap();
    assert_ne!(pick.guard, p0);
    // Judged from the view alone, it looks unlisted.
    mgr.update_consensus(Timestamp::from_unix(T0 + 60), &view2, &mut rng);
    assert!(!mgr.primary().contains(&p0));
}
