//! Tests of the guards and paths, on a 300-relay synthetic network and on the private test
//! network's real documents (onion-dir/testdata/tornet: C tor 0.4.9, every relay on
//! 127.0.0.1).

use std::collections::HashSet;

use onion_dir::netview::NetView;
use onion_dir::policy::ExitTarget;
use onion_dir::select::path::{ExitRequest, PathConfig, PathOptions};
use onion_dir::select::vanguards::VanguardShape;
use onion_dir::{consensus, microdesc, synth, RsaIdentity, Timestamp};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::dir::{Authority, DirMode, Directory};

/// A wall-clock start (2026-11-23), for the dates the guard state records.
const T0: Timestamp = Timestamp(1_795_418_410);

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A 300-relay synthetic network as a directory.
fn synth_dir() -> Directory {
    let net = synth::network(300, 7);
    let cons = consensus::parse(&net.consensus).unwrap().assume_verified();
    let mds = microdesc::parse_many(&net.microdescs).unwrap();
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    Directory::from_consensus(&cons, view, DirMode::Micro, 300, String::new())
}

/// The synthetic network's addresses crowd few /16s; without the subnet rule (as on a
/// testing network) a path's last hop conflicts with at most a family member.
fn synth_config() -> GuardsConfig {
    GuardsConfig {
        path: PathConfig {
            enforce_distinct_subnets: false,
            ..PathConfig::default()
        },
        ..GuardsConfig::default()
    }
}

/// Fresh guards on the synthetic directory.
fn fresh(dir: &Directory, r: &mut ChaCha20Rng) -> Guards {
    let (mut g, err) = Guards::new(None, synth_config());
    assert!(err.is_none());
    g.on_directory(dir, T0, r);
    g
}

fn any_exit() -> ExitRequest {
    ExitRequest::Target(ExitTarget::Port(443))
}

/// `n` circuits (exit and internal, alternately) built through fresh paths; their guards.
fn build_some(g: &mut Guards, dir: &Directory, n: usize, r: &mut ChaCha20Rng) -> Vec<RsaIdentity> {
    (0..n)
        .map(|i| {
            let p = if i % 2 == 0 {
                g.exit_path(dir, any_exit(), 3, &PathOptions::default(), T0, r)
            } else {
                g.internal_path(dir, 3, LastHop::Random, &PathOptions::default(), T0, r)
            }
            .unwrap();
            assert_eq!(
                g.built(p.ticket, T0, r).unwrap(),
                Built::Usable,
                "circuit {i}"
            );
            g.closed(p.ticket, T0);
            p.hops[0].rsa_id
        })
        .collect()
}

/// A fresh sample chooses three primary guards; every circuit enters through them; the state
/// text handed out restores the same primary guards in a new instance, and an unchanged
/// state is not handed out again.
#[test]
fn restart_from_state_text_keeps_the_primary_guards() {
    let dir = synth_dir();
    let mut r = rng(1);
    let mut g = fresh(&dir, &mut r);
    let primary = g.primary().to_vec();
    assert_eq!(primary.len(), 3, "N_PRIMARY_GUARDS is 3 (guard-spec §4.6)");
    let firsts = build_some(&mut g, &dir, 40, &mut r);
    assert!(firsts.iter().all(|f| primary.contains(f)), "{firsts:?}");
    let text = g.poll_persist().expect("a new sample is state to keep");
    assert!(
        text.lines().all(|l| l.starts_with("Guard in=default ")),
        "{text}"
    );
    assert!(
        text.contains("confirmed_on="),
        "built circuits confirm their guard"
    );
    assert_eq!(g.poll_persist(), None, "nothing changed since");

    // Restarted without a circuit of its own yet: the same primaries, in the same order.
    let (mut again, err) = Guards::new(Some(&text), synth_config());
    assert!(err.is_none());
    again.on_directory(&dir, Timestamp(T0.0 + 3600), &mut rng(2));
    assert_eq!(again.primary(), primary.as_slice());
    let firsts = build_some(&mut again, &dir, 10, &mut rng(3));
    assert!(firsts.iter().all(|f| primary.contains(f)));

    // A different seed without the state samples other guards: the state is what kept them.
    let other = fresh(&dir, &mut rng(99));
    assert_ne!(other.primary(), primary.as_slice());
}

/// A state text that does not parse is reported, and the guards start fresh; the fresh state
/// replaces it at the next persist.
#[test]
fn a_bad_state_starts_fresh_and_is_reported() {
    let dir = synth_dir();
    let bad = "Guard in=default rsa_id=not-hex sampled_on=2026-01-01T00:00:00\n";
    let (mut g, err) = Guards::new(Some(bad), synth_config());
    assert!(err.is_some());
    assert!(g.manager().sampled().is_empty());
    g.on_directory(&dir, T0, &mut rng(4));
    assert_eq!(g.primary().len(), 3);
    let text = g.poll_persist().expect("the bad text is replaced");
    assert!(!text.contains("not-hex"));
}

/// guard-spec §4.9: with every primary guard failed, the next circuit goes through a
/// non-primary guard and, built after a long time without any circuit (the internet may
/// have been down), waits while the primary guards are retried; once they fail again it is
/// announced usable. Another such circuit, left waiting, is abandoned after
/// `NONPRIMARY_GUARD_IDLE_TIMEOUT`.
#[test]
fn a_circuit_through_a_non_primary_guard_waits_for_the_better_ones() {
    let dir = synth_dir();
    let mut r = rng(5);
    let mut g = fresh(&dir, &mut r);
    let primary = g.primary().to_vec();
    let opts = PathOptions::default();
    // Fail circuits until every primary guard is unreachable.
    let mut failed = HashSet::new();
    let waiting = loop {
        let p = g
            .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
            .unwrap();
        let first = p.hops[0].rsa_id;
        if primary.contains(&first) {
            assert!(p.usable_on_completion);
            g.failed(p.ticket, Blame::Guard, T0);
            failed.insert(first);
            assert!(failed.len() <= 3);
            continue;
        }
        assert_eq!(failed.len(), 3, "a primary guard was left untried");
        assert!(!p.usable_on_completion, "a primary guard may still work");
        break p;
    };
    // Built: the first circuit in a long while makes the primary guards worth retrying.
    assert_eq!(g.built(waiting.ticket, T0, &mut r).unwrap(), Built::Wait);
    assert_eq!(g.poll_event(), None);
    // The primaries are tried again; each fails; then the waiting circuit is announced.
    let mut events = Vec::new();
    for _ in 0..20 {
        let p = g
            .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
            .unwrap();
        if primary.contains(&p.hops[0].rsa_id) {
            g.failed(p.ticket, Blame::Guard, T0);
        } else {
            g.closed(p.ticket, T0);
        }
        events.extend(std::iter::from_fn(|| g.poll_event()));
        if !events.is_empty() {
            break;
        }
    }
    assert_eq!(events, vec![GuardsEvent::Usable(waiting.ticket)]);
    g.closed(waiting.ticket, T0);

    // A second process in the same situation whose waiting circuit sees no news: abandoned
    // after the idle timeout, at the time poll_timeout names.
    let mut g = fresh(&dir, &mut rng(5));
    let mut r = rng(5);
    let mut failed = 0;
    let p = loop {
        let p = g
            .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
            .unwrap();
        if p.usable_on_completion {
            g.failed(p.ticket, Blame::Guard, T0);
            failed += 1;
            assert!(failed <= 3);
            continue;
        }
        break p;
    };
    assert_eq!(g.built(p.ticket, T0, &mut r).unwrap(), Built::Wait);
    let idle = g.manager().params().nonprimary_idle_timeout.as_secs();
    let mut now = T0;
    let mut abandoned = false;
    for _ in 0..100 {
        let Some(t) = g.poll_timeout() else { break };
        assert!(t >= now);
        now = t;
        g.handle_timeout(now);
        if let Some(ev) = g.poll_event() {
            assert_eq!(ev, GuardsEvent::Abandon(p.ticket));
            abandoned = true;
            break;
        }
    }
    assert!(abandoned);
    assert!(now.0 > T0.0 + idle, "abandoned at {} s", now.0 - T0.0);
    g.closed(p.ticket, now);
    assert_eq!(
        g.built(p.ticket, now, &mut r),
        Err(Error::Misuse("guard ticket not open"))
    );
}

/// A ticket is reported built once; a second report is the caller's mistake.
#[test]
fn built_twice_is_misuse() {
    let dir = synth_dir();
    let mut r = rng(15);
    let mut g = fresh(&dir, &mut r);
    let p = g.dir_guard(&dir, T0, &mut r).unwrap();
    assert_eq!(g.built(p.ticket, T0, &mut r), Ok(Built::Usable));
    assert!(matches!(
        g.built(p.ticket, T0, &mut r),
        Err(Error::Misuse(_))
    ));
}

/// guard-spec §4.5 driven by the timers: a failed primary guard is left alone until its retry
/// time, which `poll_timeout` names; after `handle_timeout` then, circuits use it again.
#[test]
fn a_failed_primary_guard_is_retried_at_the_time_poll_timeout_names() {
    let dir = synth_dir();
    let mut r = rng(16);
    let mut g = fresh(&dir, &mut r);
    let primary = g.primary().to_vec();
    assert_eq!(g.poll_timeout(), None, "nothing to retry yet");
    // Fail every primary guard once.
    let mut failed = HashSet::new();
    while failed.len() < 3 {
        let p = g.dir_guard(&dir, T0, &mut r).unwrap();
        assert!(primary.contains(&p.hops[0].rsa_id));
        failed.insert(p.hops[0].rsa_id);
        g.failed(p.ticket, Blame::Guard, T0);
    }
    let retry = g.poll_timeout().expect("a retry is scheduled");
    assert!(retry > T0);
    // Before the retry time circuits avoid them.
    let p = g
        .internal_path(
            &dir,
            3,
            LastHop::Random,
            &PathOptions::default(),
            T0,
            &mut r,
        )
        .unwrap();
    assert!(!primary.contains(&p.hops[0].rsa_id));
    g.closed(p.ticket, T0);
    g.handle_timeout(retry);
    let p = g
        .internal_path(
            &dir,
            3,
            LastHop::Random,
            &PathOptions::default(),
            retry,
            &mut r,
        )
        .unwrap();
    assert!(
        primary.contains(&p.hops[0].rsa_id),
        "retried after {} s",
        retry.0 - T0.0
    );
    assert!(p.usable_on_completion);
}

/// guard-spec §4.12: the primary guards without a descriptor are named, to be fetched first.
#[test]
fn primary_guards_without_descriptors_are_named() {
    let net = synth::network(300, 7);
    let cons = consensus::parse(&net.consensus).unwrap().assume_verified();
    let mds = microdesc::parse_many(&net.microdescs).unwrap();
    let full = NetView::from_microdescs(&cons, &mds).unwrap();
    let dir = Directory::from_consensus(&cons, full, DirMode::Micro, 300, String::new());
    let mut g = fresh(&dir, &mut rng(17));
    assert!(g.missing_descriptors(&dir).is_empty());
    let first = g.primary()[0];
    // The same consensus with the first primary's microdescriptor missing.
    let kept: Vec<_> = mds
        .iter()
        .filter(|m| {
            !cons
                .relays
                .iter()
                .any(|rs| rs.md_digest == Some(m.digest) && rs.identity == first)
        })
        .cloned()
        .collect();
    let view = NetView::from_microdescs(&cons, &kept).unwrap();
    let partial = Directory::from_consensus(&cons, view, DirMode::Micro, 299, String::new());
    g.on_directory(&partial, T0, &mut rng(18));
    assert_eq!(
        g.primary()[0],
        first,
        "still listed: still primary (guard-spec §4.12)"
    );
    assert_eq!(g.missing_descriptors(&partial), vec![first]);
}

/// When the caller excludes every primary guard, the circuit goes through another guard and
/// is usable at once: no primary guard could have served it.
#[test]
fn excluding_every_primary_still_gives_a_usable_circuit() {
    let dir = synth_dir();
    let mut r = rng(7);
    let mut g = fresh(&dir, &mut r);
    let primary = g.primary().to_vec();
    let exclude = Exclusions::from_ids(&dir.view, primary.iter());
    let opts = PathOptions {
        exclude: &exclude,
        ..PathOptions::default()
    };
    let p = g
        .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
        .unwrap();
    assert!(!primary.contains(&p.hops[0].rsa_id));
    assert!(p.usable_on_completion);
    assert_eq!(g.built(p.ticket, T0, &mut r).unwrap(), Built::Usable);
}

/// A relay that failed an extension is left out of the next paths (every hop but the guard)
/// until the exclusion expires; the set of avoided relays is bounded.
#[test]
fn a_relay_that_failed_an_extension_is_avoided_for_a_while() {
    let dir = synth_dir();
    let mut r = rng(8);
    let mut g = fresh(&dir, &mut r);
    let p = g
        .exit_path(&dir, any_exit(), 3, &PathOptions::default(), T0, &mut r)
        .unwrap();
    let bad = p.hops[2].rsa_id;
    g.failed(p.ticket, Blame::Hop(2), T0);
    let avoided: Vec<_> = g.avoided(T0).collect();
    assert_eq!(avoided, vec![(bad, Timestamp(T0.0 + AVOID_FAILED_FOR))]);
    // Named by the caller, it is still used: avoiding steers random choices only.
    let idx = dir.view.by_rsa_id(&bad).unwrap();
    let named = ExitRequest::Named(idx, None);
    let p = g
        .exit_path(&dir, named, 3, &PathOptions::default(), T0, &mut r)
        .unwrap();
    assert_eq!(p.hops[2].rsa_id, bad);
    g.closed(p.ticket, T0);
    for _ in 0..50 {
        let p = g
            .exit_path(&dir, any_exit(), 3, &PathOptions::default(), T0, &mut r)
            .unwrap();
        assert!(p.hops[1..].iter().all(|h| h.rsa_id != bad));
        g.closed(p.ticket, T0);
    }
    // The exclusion ends on time.
    assert_eq!(g.avoided(Timestamp(T0.0 + AVOID_FAILED_FOR - 1)).count(), 1);
    let later = Timestamp(T0.0 + AVOID_FAILED_FOR);
    assert_eq!(g.avoided(later).count(), 0);

    // Bounded: failures of many relays keep the latest MAX_AVOIDED.
    let mut now = later;
    for i in 0..(MAX_AVOIDED + 10) {
        now = Timestamp(later.0 + i as u64);
        let p = g
            .internal_path(
                &dir,
                3,
                LastHop::Random,
                &PathOptions::default(),
                now,
                &mut r,
            )
            .unwrap();
        g.failed(p.ticket, Blame::Hop(1), now);
    }
    assert!(g.avoided(now).count() <= MAX_AVOIDED);
    assert!(
        g.avoided(now).count() >= MAX_AVOIDED - 10,
        "distinct middles mostly"
    );
}

/// Onion-service paths have proposal 333's shapes: a primary guard, one of the layer-2
/// vanguards, (long shape) a middle, then the last hop, given or random or external.
#[test]
fn vanguard_paths_have_the_proposal_333_shapes() {
    let dir = synth_dir();
    let mut r = rng(9);
    let mut g = fresh(&dir, &mut r);
    let l2: Vec<RsaIdentity> = g.layer2().iter().map(|x| x.id).collect();
    assert_eq!(l2.len(), 4, "guard-hs-l2-number defaults to 4");
    let primary = g.primary().to_vec();
    let opts = PathOptions {
        need_stable: true,
        ..PathOptions::default()
    };
    let mut seconds = HashSet::new();
    for i in 0..40u32 {
        let target = dir.view.relay(RelayIdx(i * 7 % 300)).unwrap().rsa_id;
        let (shape, last) = match i % 3 {
            0 => (VanguardShape::Short, LastHop::Random),
            1 => (VanguardShape::Long, LastHop::Relay(target)),
            _ => {
                let mut h = hop_target(dir.view.relay(RelayIdx(i)).unwrap()).unwrap();
                h.rsa_id = RsaIdentity([0xee; 20]);
                (VanguardShape::Long, LastHop::External(h))
            }
        };
        let p = g
            .vanguard_path(&dir, shape, last, &opts, T0, &mut r)
            .unwrap();
        assert_eq!(p.hops.len(), shape.path_len());
        assert_eq!(p.names.len(), p.hops.len());
        assert!(primary.contains(&p.hops[0].rsa_id));
        assert!(
            l2.contains(&p.hops[1].rsa_id),
            "second hop from the layer-2 set"
        );
        let ids: Vec<RsaIdentity> = p.hops.iter().map(|h| h.rsa_id).collect();
        assert_ne!(ids[1], ids[0]);
        assert_ne!(Some(&ids[1]), ids.last());
        match i % 3 {
            1 => assert_eq!(ids[3], target),
            2 => assert_eq!(ids[3], RsaIdentity([0xee; 20])),
            _ => assert_ne!(ids[2], ids[0]),
        }
        seconds.insert(ids[1]);
        assert_eq!(g.built(p.ticket, T0, &mut r).unwrap(), Built::Usable);
        g.closed(p.ticket, T0);
    }
    assert!(seconds.len() > 1, "the second hop spreads over the set");
    // Not persisted: the layer-2 set lives in memory only (proposal 333 §1); the state
    // holds the sampled guards and nothing else.
    let text = g.poll_persist().unwrap();
    let sampled: HashSet<String> = g
        .manager()
        .sampled()
        .iter()
        .map(|s| s.rsa_id.to_string())
        .collect();
    for id in &l2 {
        assert_eq!(
            text.contains(&id.to_string()),
            sampled.contains(&id.to_string())
        );
    }
    assert_eq!(text.lines().count(), sampled.len());
    // A new identity draws a new set.
    g.forget_layer2();
    assert!(g.layer2().is_empty());
    let p = g
        .vanguard_path(
            &dir,
            VanguardShape::Short,
            LastHop::Random,
            &opts,
            T0,
            &mut r,
        )
        .unwrap();
    assert_eq!(g.layer2().len(), 4);
    assert!(g.layer2().iter().any(|x| x.id == p.hops[1].rsa_id));
    assert_ne!(g.layer2().iter().map(|x| x.id).collect::<Vec<_>>(), l2);
}

/// The consensus can turn vanguards-lite off: the path keeps its length with an ordinary
/// middle second.
#[test]
fn without_vanguards_lite_an_onion_service_path_is_an_internal_path() {
    let net = synth::network(300, 7);
    let text = net
        .consensus
        .replacen("params ", "params vanguards-lite-enabled=0 ", 1);
    assert_ne!(
        text, net.consensus,
        "the synthetic consensus has a params line"
    );
    let cons = consensus::parse(&text).unwrap().assume_verified();
    let mds = microdesc::parse_many(&net.microdescs).unwrap();
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    let dir = Directory::from_consensus(&cons, view, DirMode::Micro, 300, String::new());
    let mut r = rng(10);
    let mut g = fresh(&dir, &mut r);
    assert!(g.layer2().is_empty());
    let p = g
        .vanguard_path(
            &dir,
            VanguardShape::Long,
            LastHop::Random,
            &PathOptions::default(),
            T0,
            &mut r,
        )
        .unwrap();
    assert_eq!(p.hops.len(), 4);
}

/// A directory guard is a one-hop path through a primary guard.
#[test]
fn a_directory_guard_is_a_primary_guard() {
    let dir = synth_dir();
    let mut r = rng(11);
    let mut g = fresh(&dir, &mut r);
    for _ in 0..10 {
        let p = g.dir_guard(&dir, T0, &mut r).unwrap();
        assert_eq!(p.hops.len(), 1);
        assert!(g.primary().contains(&p.hops[0].rsa_id));
        assert!(p.usable_on_completion);
        g.closed(p.ticket, T0);
    }
}

/// Open tickets are bounded: past MAX_TICKETS a path is refused until fates are reported.
#[test]
fn open_tickets_are_bounded() {
    let dir = synth_dir();
    let mut r = rng(12);
    let mut g = fresh(&dir, &mut r);
    let mut tickets = Vec::new();
    for _ in 0..MAX_TICKETS {
        tickets.push(g.dir_guard(&dir, T0, &mut r).unwrap().ticket);
    }
    assert!(matches!(
        g.dir_guard(&dir, T0, &mut r),
        Err(Error::Resource(_))
    ));
    g.closed(tickets[0], T0);
    assert!(g.dir_guard(&dir, T0, &mut r).is_ok());
}

const TORNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-dir/testdata/tornet");

fn testdata(name: &str) -> String {
    std::fs::read_to_string(format!("{TORNET}/{name}")).unwrap()
}

/// The test network's authorities (127.0.0.1) and a public one.
fn tornet_authorities() -> Vec<Authority> {
    testdata("dirauthority-lines.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Authority {
                name: w[1].into(),
                rsa_id: RsaIdentity([1; 20]),
                v3ident: RsaIdentity([2; 20]),
                or_addr: Some(w[5].parse().unwrap()),
            }
        })
        .collect()
}

/// The private test network (all relays on 127.0.0.1) is recognised from its authorities;
/// its path rules let hops share a /16, without which no path exists there.
#[test]
fn a_testing_network_relaxes_the_subnet_rule() {
    let auths = tornet_authorities();
    assert!(is_testing_network(&auths));
    let cfg = path_config(&auths);
    assert!(!cfg.enforce_distinct_subnets);
    let mut public = auths.clone();
    public[0].or_addr = Some("128.31.0.39:9101".parse().unwrap());
    assert!(!is_testing_network(&public));
    assert!(path_config(&public).enforce_distinct_subnets);
    let mut unknown = auths.clone();
    for a in &mut unknown {
        a.or_addr = None;
    }
    assert!(
        !is_testing_network(&unknown),
        "no address: not known to be private"
    );

    let text = testdata("cached-microdesc-consensus");
    let cons = consensus::parse(&text).unwrap().assume_verified();
    let mds_text = testdata("cached-microdescs.new");
    let mds = microdesc::parse_many(&mds_text).unwrap();
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    let dir = Directory::from_consensus(&cons, view, DirMode::Micro, mds.len(), String::new());
    let mut r = rng(13);
    let (mut strict, _) = Guards::new(None, GuardsConfig::default());
    strict.on_directory(&dir, T0, &mut r);
    assert!(matches!(
        strict.internal_path(
            &dir,
            3,
            LastHop::Random,
            &PathOptions::default(),
            T0,
            &mut r
        ),
        Err(Error::NoPath(_))
    ));
    let (mut testing, _) = Guards::new(
        None,
        GuardsConfig {
            path: cfg,
            ..GuardsConfig::default()
        },
    );
    testing.on_directory(&dir, T0, &mut r);
    for _ in 0..10 {
        let p = testing
            .internal_path(
                &dir,
                3,
                LastHop::Random,
                &PathOptions::default(),
                T0,
                &mut r,
            )
            .unwrap();
        assert!(p.hops.iter().all(|h| h.addrs[0].ip().is_loopback()));
        testing.closed(p.ticket, T0);
    }
}

proptest! {
    /// Any state text: no panic; either it restores or it is reported and a fresh sample
    /// works.
    #[test]
    fn any_state_text_is_safe(text in ".{0,400}", lines in proptest::collection::vec(
        "Guard in=default rsa_id=[0-9A-F]{40}( [a-z_]{1,12}=[ -~&&[^ ]]{0,24}){0,6}", 0..6)) {
        let dir = synth_dir();
        for t in [text, lines.join("\n")] {
            let (mut g, _err) = Guards::new(Some(&t), synth_config());
            let mut r = rng(14);
            g.on_directory(&dir, T0, &mut r);
            let p = g.exit_path(&dir, any_exit(), 3, &PathOptions::default(), T0, &mut r);
            if let Ok(p) = p {
                let _ = g.built(p.ticket, T0, &mut r);
            }
            let _ = g.poll_persist();
        }
    }
}

/// A last hop given from elsewhere (an introduction point from a descriptor) ends the path;
/// when the directory lists it, no other hop is that relay, the guard included (a relay is
/// never asked to extend back to itself or its predecessor).
#[test]
fn an_external_last_hop_is_appended_and_never_repeated() {
    let dir = synth_dir();
    let mut r = rng(19);
    let mut g = fresh(&dir, &mut r);
    let first = g.primary()[0];
    let ext = hop_target(dir.view.relay(dir.view.by_rsa_id(&first).unwrap()).unwrap()).unwrap();
    let opts = PathOptions::default();
    for len in [2, 3, 4] {
        for _ in 0..10 {
            let p = g
                .internal_path(&dir, len, LastHop::External(ext.clone()), &opts, T0, &mut r)
                .unwrap();
            assert_eq!(p.hops.len(), len);
            assert_eq!(p.hops[len - 1].rsa_id, first);
            assert!(p.hops[..len - 1].iter().all(|h| h.rsa_id != first));
            g.closed(p.ticket, T0);
        }
    }
    assert!(matches!(
        g.internal_path(&dir, 1, LastHop::External(ext.clone()), &opts, T0, &mut r),
        Err(Error::NoPath(_))
    ));
    assert!(matches!(
        g.internal_path(&dir, 1, LastHop::Relay(first), &opts, T0, &mut r),
        Err(Error::NoPath(_))
    ));
    // A vanguard path chooses its guard without looking at the last hop (data circuits use
    // the first primary guard, guard-n-primary-guards-to-use = 1): the long shape may end at
    // the guard, the short one refuses to.
    let long = g
        .vanguard_path(
            &dir,
            VanguardShape::Long,
            LastHop::External(ext.clone()),
            &opts,
            T0,
            &mut r,
        )
        .unwrap();
    assert_eq!(long.hops[0].rsa_id, first);
    assert_eq!(long.hops[3].rsa_id, first);
    assert!(long.hops[1..3].iter().all(|h| h.rsa_id != first));
    g.closed(long.ticket, T0);
    let short = g.vanguard_path(
        &dir,
        VanguardShape::Short,
        LastHop::External(ext),
        &opts,
        T0,
        &mut r,
    );
    assert!(matches!(short, Err(Error::NoPath(_))), "{short:?}");
    let other = hop_target(dir.view.relay(RelayIdx(3)).unwrap()).unwrap();
    let short = g
        .vanguard_path(
            &dir,
            VanguardShape::Short,
            LastHop::External(other),
            &opts,
            T0,
            &mut r,
        )
        .unwrap();
    assert_eq!(short.hops.len(), 3);
    assert_eq!(short.hops[0].rsa_id, first);
    g.closed(short.ticket, T0);
    assert_eq!(g.open.len(), 0, "a refused path leaves no ticket open");
}

/// The timers never name a time already handled: a circuit still building through a
/// non-primary guard past NONPRIMARY_GUARD_CONNECT_TIMEOUT must not make an embedder's loop
/// spin on a past deadline. Beside it, a circuit built through a better non-primary guard
/// waits while the building one might still win (guard-spec §4.9) and is usable once its
/// connect timeout passed; the failed primary guards are retried on schedule (§4.5).
#[test]
fn poll_timeout_never_names_a_handled_time() {
    let dir = synth_dir();
    let mut r = rng(20);
    let mut g = fresh(&dir, &mut r);
    let primary = g.primary().to_vec();
    let opts = PathOptions::default();
    let mut non_primary = Vec::new();
    while non_primary.len() < 2 {
        let p = g
            .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
            .unwrap();
        if p.usable_on_completion {
            g.failed(p.ticket, Blame::Guard, T0);
        } else {
            non_primary.push(p);
        }
    }
    // The first is built and waits; the second is still building.
    assert_eq!(
        g.built(non_primary[0].ticket, T0, &mut r).unwrap(),
        Built::Wait
    );
    let connect = g.manager().params().nonprimary_connect_timeout.as_secs();
    let mut handled = T0;
    let mut events = Vec::new();
    let mut wakeups = 0;
    while let Some(t) = g.poll_timeout() {
        wakeups += 1;
        assert!(wakeups < 10, "the timers keep firing");
        assert!(
            t > handled,
            "{} s after handling {} s",
            t.0 - T0.0,
            handled.0 - T0.0
        );
        g.handle_timeout(t);
        handled = t;
        events.extend(std::iter::from_fn(|| g.poll_event()).map(|e| (e, t.0 - T0.0)));
    }
    assert_eq!(
        events,
        vec![(GuardsEvent::Usable(non_primary[0].ticket), connect + 1)]
    );
    // The connect timeout, then the retry of the guard the newly confirmed one pushed out
    // of the primaries (the non-primary schedule: hourly at first); the primaries were
    // marked worth retrying when the first circuit in a long while was built (§4.8).
    assert_eq!(wakeups, 2);
    assert_eq!(handled.0 - T0.0, 3600);
    // The guard that worked is confirmed and now the first primary guard (§4.4); the
    // later circuits go through it.
    assert_eq!(g.primary()[0], non_primary[0].hops[0].rsa_id);
    assert!(!primary.contains(&g.primary()[0]));
    let p = g
        .internal_path(&dir, 3, LastHop::Random, &opts, handled, &mut r)
        .unwrap();
    assert_eq!(p.hops[0].rsa_id, g.primary()[0]);
    assert!(p.usable_on_completion);
}

/// Avoiding is a preference: on the 8-relay test network, with every relay avoided but
/// the guards, paths are still found; with one relay avoided, paths leave it out.
#[test]
fn avoided_relays_are_used_rather_than_no_path() {
    let text = testdata("cached-microdesc-consensus");
    let cons = consensus::parse(&text).unwrap().assume_verified();
    let mds_text = testdata("cached-microdescs.new");
    let mds = microdesc::parse_many(&mds_text).unwrap();
    let view = NetView::from_microdescs(&cons, &mds).unwrap();
    let dir = Directory::from_consensus(&cons, view, DirMode::Micro, mds.len(), String::new());
    let config = GuardsConfig {
        path: path_config(&tornet_authorities()),
        ..GuardsConfig::default()
    };
    let (mut g, _) = Guards::new(None, config);
    let mut r = rng(21);
    g.on_directory(&dir, T0, &mut r);
    let opts = PathOptions::default();
    // One relay avoided: never a later hop while others can serve. (Its exits allow only
    // 127.0.0.0/8, which microdescriptor port summaries cannot say: internal paths here.)
    let p = g
        .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
        .unwrap();
    let middle = p.hops[1].rsa_id;
    g.failed(p.ticket, Blame::Hop(1), T0);
    for _ in 0..20 {
        let p = g
            .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
            .unwrap();
        assert!(p.hops[1..].iter().all(|h| h.rsa_id != middle));
        g.closed(p.ticket, T0);
    }
    // Every relay avoided: the paths use them anyway.
    for i in 0..dir.view.len() {
        let id = dir.view.relay(RelayIdx(i as u32)).unwrap().rsa_id;
        g.avoid(id, T0);
    }
    assert_eq!(g.avoided(T0).count(), dir.view.len());
    for _ in 0..5 {
        let p = g
            .internal_path(&dir, 3, LastHop::Random, &opts, T0, &mut r)
            .unwrap();
        assert_eq!(p.hops.len(), 3);
        g.closed(p.ticket, T0);
        let p = g
            .vanguard_path(
                &dir,
                VanguardShape::Long,
                LastHop::Random,
                &opts,
                T0,
                &mut r,
            )
            .unwrap();
        assert_eq!(p.hops.len(), 4);
        g.closed(p.ticket, T0);
    }
    assert_eq!(
        g.open.len(),
        0,
        "the failed first attempts left no ticket open"
    );
}

/// One step of a client's life, for the sequence test below.
#[derive(Clone, Debug)]
enum Op {
    Exit,
    Internal,
    Vanguard,
    DirGuard,
    Built(usize),
    Failed(usize, u8),
    Closed(usize),
    Wait(u64),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Exit),
        Just(Op::Internal),
        Just(Op::Vanguard),
        Just(Op::DirGuard),
        (0..8usize).prop_map(Op::Built),
        ((0..8usize), (0..4u8)).prop_map(|(i, b)| Op::Failed(i, b)),
        (0..8usize).prop_map(Op::Closed),
        (0..2000u64).prop_map(Op::Wait),
        Just(Op::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of paths, fates and timeouts: no panic; events name only open tickets,
    /// at most once each; a ticket is answered built once; the timers never name a handled
    /// time; what is persisted restores the same primary guards.
    #[test]
    fn any_sequence_keeps_the_bookkeeping_right(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = synth_dir();
        let mut r = rng(22);
        let mut g = fresh(&dir, &mut r);
        let mut now = T0;
        let mut handled: Option<Timestamp> = None;
        // Open tickets, and whether each was reported built.
        let mut open: Vec<(Ticket, bool)> = Vec::new();
        let opts = PathOptions::default();
        for op in ops {
            let path = match op {
                Op::Exit => Some(g.exit_path(&dir, any_exit(), 3, &opts, now, &mut r)),
                Op::Internal => Some(g.internal_path(&dir, 3, LastHop::Random, &opts, now, &mut r)),
                Op::Vanguard => Some(g.vanguard_path(&dir, VanguardShape::Long, LastHop::Random, &opts, now, &mut r)),
                Op::DirGuard => Some(g.dir_guard(&dir, now, &mut r)),
                Op::Built(i) if i < open.len() => {
                    let (t, built) = open[i];
                    let answer = g.built(t, now, &mut r);
                    prop_assert_eq!(answer.is_err(), built, "{:?}", answer);
                    open[i].1 = true;
                    None
                }
                Op::Failed(i, b) if i < open.len() => {
                    let (t, _) = open.remove(i);
                    let blame = match b { 0 => Blame::Guard, 1 => Blame::Other, n => Blame::Hop(n as usize) };
                    g.failed(t, blame, now);
                    None
                }
                Op::Closed(i) if i < open.len() => {
                    let (t, _) = open.remove(i);
                    g.closed(t, now);
                    None
                }
                Op::Wait(s) => {
                    now = Timestamp(now.0 + s);
                    None
                }
                Op::Timeout => {
                    if let Some(t) = g.poll_timeout() {
                        if let Some(h) = handled {
                            prop_assert!(t > h);
                        }
                        now = now.max(t);
                    }
                    g.handle_timeout(now);
                    handled = Some(now);
                    None
                }
                _ => None,
            };
            if let Some(p) = path {
                let p = p.unwrap();
                prop_assert!(!p.hops.is_empty());
                open.push((p.ticket, false));
            }
            let mut seen = HashSet::new();
            while let Some(ev) = g.poll_event() {
                let t = match ev { GuardsEvent::Usable(t) | GuardsEvent::Abandon(t) => t };
                prop_assert!(open.iter().any(|(o, _)| *o == t), "{:?} names a closed ticket", ev);
                prop_assert!(seen.insert(ev), "{:?} twice", ev);
                if let GuardsEvent::Abandon(t) = ev {
                    open.retain(|(o, _)| *o != t);
                    g.closed(t, now);
                }
            }
            prop_assert_eq!(g.open.len(), open.len());
        }
        if let Some(text) = g.poll_persist() {
            let (mut again, err) = Guards::new(Some(&text), synth_config());
            prop_assert!(err.is_none());
            again.on_directory(&dir, now, &mut r);
            prop_assert_eq!(again.primary(), g.primary());
        }
    }
}
