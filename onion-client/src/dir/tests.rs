//! Tests of the directory machine, driven with the private test network's real documents
//! (onion-dir/testdata/tornet: three authorities, eight relays, written by C tor 0.4.9).

use std::time::Duration;

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha3::{Digest, Sha3_256};

use super::*;
use onion_dir::MdDigest;

const TORNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-dir/testdata/tornet");

fn testdata(name: &str) -> String {
    std::fs::read_to_string(format!("{TORNET}/{name}")).unwrap()
}

/// Ten seconds after the test network's consensus became valid (2026-11-23 07:20:10).
const WALL: Timestamp = Timestamp(1_795_418_410);

/// The test network's authorities, from its `DirAuthority` lines.
fn authorities() -> Vec<Authority> {
    testdata("dirauthority-lines.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let hex20 = |s: &str| {
                let mut b = [0u8; 20];
                hex::decode_to_slice(s, &mut b).unwrap();
                RsaIdentity(b)
            };
            let orport: u16 = w[2].strip_prefix("orport=").unwrap().parse().unwrap();
            Authority {
                name: w[1].into(),
                rsa_id: hex20(w[6]),
                v3ident: hex20(w[4].strip_prefix("v3ident=").unwrap()),
                or_addr: Some(format!("127.0.0.1:{orport}").parse().unwrap()),
            }
        })
        .collect()
}

fn consensus_text(mode: DirMode) -> String {
    testdata(match mode {
        DirMode::Micro => "cached-microdesc-consensus",
        DirMode::Full => "cached-consensus",
    })
}

fn descriptors_text(mode: DirMode) -> String {
    testdata(match mode {
        DirMode::Micro => "cached-microdescs.new",
        DirMode::Full => "cached-descriptors.new",
    })
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(11)
}

fn config(mode: DirMode) -> DirConfig {
    DirConfig::new(authorities(), vec![], mode)
}

/// Which requests a [`FakeDir`] fails, and how.
type FailWhen = Box<dyn FnMut(&Request) -> Option<Failure>>;

/// A directory that answers from fixed documents by path prefix (404 otherwise), records
/// every request, and fails the requests its `fail` function picks.
struct FakeDir {
    answers: Vec<(&'static str, String)>,
    requests: Vec<Request>,
    fail: FailWhen,
}

impl FakeDir {
    fn new(mode: DirMode, consensus: String) -> Self {
        let descs = match mode {
            DirMode::Micro => ("/tor/micro/d/", descriptors_text(mode)),
            DirMode::Full => ("/tor/server/d/", descriptors_text(mode)),
        };
        FakeDir {
            answers: vec![
                ("/tor/status-vote/current/consensus", consensus),
                ("/tor/keys/fp/", testdata("cached-certs")),
                descs,
            ],
            requests: vec![],
            fail: Box::new(|_| None),
        }
    }

    fn answer(&mut self, req: &Request) -> Result<Vec<u8>, Failure> {
        self.requests.push(req.clone());
        if let Some(f) = (self.fail)(req) {
            return Err(f);
        }
        match self.answers.iter().find(|(p, _)| req.path.starts_with(p)) {
            Some((_, body)) if body.len() > req.max_body => Err(Failure::TooLarge),
            Some((_, body)) => Ok(body.clone().into_bytes()),
            None => Err(Failure::Http {
                status: 404,
                reason: "Not found".into(),
            }),
        }
    }

    fn count(&self, prefix: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    fn descriptor_requests(&self) -> usize {
        self.count("/tor/micro/") + self.count("/tor/server/")
    }
}

/// Carry every request the machine has (and those its answers cause) to `dir`, and return
/// the events.
fn drive(m: &mut DirMachine, dir: &mut FakeDir, now: Instant, wall: Timestamp) -> Vec<DirEvent> {
    let mut rng = rng();
    let mut events = vec![];
    for _ in 0..1000 {
        let Some(req) = m.poll_request() else { break };
        let answer = dir.answer(&req);
        m.handle_response(req.id, now, wall, answer, &mut rng);
    }
    while let Some(e) = m.poll_event() {
        events.push(e);
    }
    events
}

fn directories(events: &[DirEvent]) -> Vec<Arc<Directory>> {
    events
        .iter()
        .filter_map(|e| match e {
            DirEvent::Directory(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn failures(events: &[DirEvent]) -> Vec<&Error> {
    events
        .iter()
        .filter_map(|e| match e {
            DirEvent::Failed(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn persisted(events: &[DirEvent]) -> Cached {
    let mut c = Cached::default();
    for e in events {
        if let DirEvent::Persist { kind, text, .. } = e {
            match kind {
                DocKind::Consensus => c.consensus = Some(text.clone()),
                DocKind::Certificates => c.certificates = Some(text.clone()),
                _ => c.descriptors = Some(text.clone()),
            }
        }
    }
    c
}

fn bootstrap(mode: DirMode) -> (DirMachine, FakeDir, Vec<DirEvent>) {
    let mut dir = FakeDir::new(mode, consensus_text(mode));
    let mut m = DirMachine::new(
        config(mode),
        Cached::default(),
        Instant::ZERO,
        WALL,
        &mut rng(),
    )
    .unwrap();
    let events = drive(&mut m, &mut dir, Instant::ZERO, WALL);
    (m, dir, events)
}

/// From nothing to a verified directory in both modes: the consensus, its signers'
/// certificates, then one batch of descriptors; every relay of the test network usable,
/// the documents handed over for storage, and the next refresh set in the refresh window.
#[test]
fn bootstrap_to_a_verified_directory_in_both_modes() {
    for mode in [DirMode::Micro, DirMode::Full] {
        let (mut m, dir, events) = bootstrap(mode);
        assert!(failures(&events).is_empty(), "{events:?}");
        let dirs = directories(&events);
        assert_eq!(dirs.len(), 1);
        let d = &dirs[0];
        assert_eq!(d.mode, mode);
        assert_eq!(d.relays_listed, 8);
        assert_eq!(d.view.len(), 8, "{mode:?}");
        assert_eq!(d.descriptors, 8);
        assert_eq!((d.signatures_valid, d.signatures_needed), (3, 2));
        assert!(!d.from_cache);
        assert_eq!(
            d.valid_after,
            Timestamp::parse_str("2026-11-23 07:20:00").unwrap()
        );
        // Facts the directory keeps so that consumers need not parse the consensus again.
        assert!(d.shared_rand_current.is_some());
        assert!(!d.listed_guards.is_empty());
        assert!(d.listed_guards.iter().all(|g| d.is_listed_guard(g)));
        assert_eq!(d.voting_interval(), 20);
        // Every relay's `pr` line, and the parameters, as the consensus gives them.
        let text = consensus_text(mode);
        let cons = onion_dir::consensus::parse(&text).unwrap();
        let cons = cons.peek();
        for r in &cons.relays {
            assert_eq!(d.protocols(&r.identity), Some(&r.protocols));
        }
        assert_eq!(d.protocols(&RsaIdentity([0; 20])), None);
        let cc: Vec<RsaIdentity> = d
            .relays_supporting(|p| p.supports("FlowCtrl", 2) && p.supports("Relay", 4))
            .collect();
        let want: Vec<RsaIdentity> = cons
            .relays
            .iter()
            .filter(|r| r.protocols.supports("FlowCtrl", 2) && r.protocols.supports("Relay", 4))
            .map(|r| r.identity)
            .collect();
        assert_eq!(cc, want);
        assert!(!cc.is_empty());
        assert_eq!(d.net_params().entries.len(), cons.params.entries.len());
        for (k, v) in &cons.params.entries {
            assert_eq!(d.param(k), Some(*v));
        }
        let paths: Vec<&str> = dir.requests.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        let flavour = match mode {
            DirMode::Micro => "consensus-microdesc/",
            DirMode::Full => "consensus/",
        };
        assert!(
            paths[0].starts_with(&format!("/tor/status-vote/current/{flavour}")),
            "{paths:?}"
        );
        assert!(paths[1].starts_with("/tor/keys/fp/"));
        assert_eq!(dir.descriptor_requests(), 1);
        // A bootstrap offers no diff, and asks an authority (no fallbacks configured).
        assert!(dir.requests.iter().all(|r| r.diff_from.is_none()));
        assert!(dir
            .requests
            .iter()
            .all(|r| matches!(r.source, Source::Authority(_))));
        let stored = persisted(&events);
        assert_eq!(
            stored.consensus.as_deref(),
            Some(consensus_text(mode).as_str())
        );
        assert!(stored.certificates.is_some() && stored.descriptors.is_some());
        assert!(events
            .iter()
            .any(|e| matches!(e, DirEvent::Progress { percent: 100, .. })));
        assert!(std::ptr::eq(m.directory().unwrap().as_ref(), d.as_ref()));
        // Refresh: between 35 s (fresh-until + 3/4 of the interval) and 39 s after
        // valid-after, so 25 to 29 s from now, and never sooner than the retry delay.
        let t = m.poll_timeout().unwrap();
        let wait = t.saturating_duration_since(Instant::ZERO);
        assert!(
            wait >= Duration::from_secs(25) && wait <= Duration::from_secs(29),
            "{wait:?}"
        );
        assert!(m.poll_request().is_none());
    }
}

/// A consensus altered after signing (a relay's address changed) is refused and no
/// descriptor is ever asked for, however often it is retried; one signed by authorities
/// that are not configured gets no certificate request either.
#[test]
fn a_consensus_that_does_not_verify_leads_to_no_descriptor_request() {
    for mode in [DirMode::Micro, DirMode::Full] {
        let good = consensus_text(mode);
        let forged = good.replacen("127.0.0.1 53337", "10.6.6.6 53337", 1);
        assert_ne!(forged, good);
        let mut dir = FakeDir::new(mode, forged);
        let mut m = DirMachine::new(
            config(mode),
            Cached::default(),
            Instant::ZERO,
            WALL,
            &mut rng(),
        )
        .unwrap();
        let events = drive(&mut m, &mut dir, Instant::ZERO, WALL);
        assert!(directories(&events).is_empty());
        let f = failures(&events);
        assert_eq!(f.len(), 1, "{events:?}");
        assert_eq!(f[0].kind(), crate::ErrorKind::PeerProtocol);
        assert!(
            f[0].to_string().contains("consensus failed verification"),
            "{}",
            f[0]
        );
        assert_eq!(dir.descriptor_requests(), 0, "{:?}", dir.requests);
        let cons_requests = dir.count("/tor/status-vote/");
        assert_eq!(cons_requests, 6, "max_attempts");

        // Not signed by any configured authority: refused before certificates.
        let mut cfg = config(mode);
        for a in &mut cfg.authorities {
            a.v3ident = RsaIdentity([0x42; 20]);
        }
        let mut dir = FakeDir::new(mode, good);
        let mut m =
            DirMachine::new(cfg, Cached::default(), Instant::ZERO, WALL, &mut rng()).unwrap();
        let events = drive(&mut m, &mut dir, Instant::ZERO, WALL);
        assert!(failures(&events)[0]
            .to_string()
            .contains("none of the configured authorities"));

        // dir-spec §5.1: a directory answers 404 when its consensus lacks a majority of the
        // authorities named in the URL: that is a verification failure too.
        let mut dir = FakeDir::new(mode, String::new());
        dir.answers.remove(0);
        let mut m = DirMachine::new(
            config(mode),
            Cached::default(),
            Instant::ZERO,
            WALL,
            &mut rng(),
        )
        .unwrap();
        let events = drive(&mut m, &mut dir, Instant::ZERO, WALL);
        let f = failures(&events);
        assert!(
            f[0].to_string().contains(
                "consensus failed verification: the directory has none signed by a majority"
            ),
            "{}",
            f[0]
        );
        assert_eq!(f[0].kind(), crate::ErrorKind::PeerProtocol);
        assert_eq!(dir.count("/tor/keys/") + dir.descriptor_requests(), 0);
        assert_eq!(dir.count("/tor/keys/"), 0);
        assert_eq!(dir.descriptor_requests(), 0);
    }
}

/// A source that fails (transport, HTTP error, timeout) is not asked again while others
/// remain: the next attempt goes elsewhere and the bootstrap completes; a descriptor batch
/// that fails is asked again of another source too.
#[test]
fn a_failed_source_is_retried_elsewhere() {
    let mode = DirMode::Micro;
    let mut dir = FakeDir::new(mode, consensus_text(mode));
    let mut first: Option<Source> = None;
    let mut bad_desc: Option<Source> = None;
    dir.fail = Box::new(move |r| {
        if r.kind == DocKind::Consensus && first.map_or(true, |s| s == r.source) {
            first = Some(r.source);
            return Some(Failure::Network("connection refused".into()));
        }
        if r.kind == DocKind::Microdescs && bad_desc.map_or(true, |s| s == r.source) {
            bad_desc = Some(r.source);
            return Some(Failure::Http {
                status: 503,
                reason: "Busy\x1b[2J".into(),
            });
        }
        None
    });
    let mut m = DirMachine::new(
        config(mode),
        Cached::default(),
        Instant::ZERO,
        WALL,
        &mut rng(),
    )
    .unwrap();
    let events = drive(&mut m, &mut dir, Instant::ZERO, WALL);
    assert_eq!(directories(&events).len(), 1, "{events:?}");
    let cons: Vec<Source> = dir
        .requests
        .iter()
        .filter(|r| r.kind == DocKind::Consensus)
        .map(|r| r.source)
        .collect();
    assert_eq!(cons.len(), 2);
    assert_ne!(cons[0], cons[1]);
    let descs: Vec<Source> = dir
        .requests
        .iter()
        .filter(|r| r.kind == DocKind::Microdescs)
        .map(|r| r.source)
        .collect();
    assert_eq!(descs.len(), 2);
    assert_ne!(descs[0], descs[1]);
    // The reason phrase reached the progress line escaped.
    let lines: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            DirEvent::Progress { what, .. } => Some(what),
            _ => None,
        })
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("HTTP 503 Busy\\u{1b}[2J")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.chars().any(char::is_control)));

    // A request that is never answered times out and is asked elsewhere.
    let mut m = DirMachine::new(
        config(mode),
        Cached::default(),
        Instant::ZERO,
        WALL,
        &mut rng(),
    )
    .unwrap();
    let lost = m.poll_request().unwrap();
    let deadline = m.poll_timeout().unwrap();
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(60));
    m.handle_timeout(deadline, WALL, &mut rng());
    let again = m.poll_request().unwrap();
    assert_eq!(again.kind, DocKind::Consensus);
    assert_ne!(again.source, lost.source);
    // Its late answer is ignored.
    m.handle_response(
        lost.id,
        deadline,
        WALL,
        Ok(consensus_text(mode).into_bytes()),
        &mut rng(),
    );
    assert!(m.poll_request().is_none());
}

/// Descriptor bodies are taken up to the budget: a response that would pass it stops the
/// round with an error naming the limit (and no retry); one that fits exactly is taken.
/// The default budgets are stated for the public network: three times its descriptors.
#[test]
fn descriptor_bytes_stay_within_the_budget() {
    let mode = DirMode::Micro;
    let size = descriptors_text(mode).len();
    let run = |budget: usize| {
        let mut cfg = config(mode);
        cfg.descriptor_budget = budget;
        let mut dir = FakeDir::new(mode, consensus_text(mode));
        let mut m =
            DirMachine::new(cfg, Cached::default(), Instant::ZERO, WALL, &mut rng()).unwrap();
        let events = drive(&mut m, &mut dir, Instant::ZERO, WALL);
        (events, dir)
    };
    let (events, dir) = run(size);
    assert_eq!(directories(&events).len(), 1);
    assert_eq!(dir.requests.last().unwrap().max_body, size);
    for budget in [size - 1, 1] {
        let (events, dir) = run(budget);
        assert!(directories(&events).is_empty());
        let f = failures(&events);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].to_string()
                .contains(&format!("microdescriptors responses exceed {budget} bytes")),
            "{}",
            f[0]
        );
        assert_eq!(dir.descriptor_requests(), 1, "no retry past the budget");
    }
    // Each request may bring at most its batch's worth: 8 microdescriptors here.
    let (_, dir) = run(usize::MAX);
    assert_eq!(
        dir.requests.last().unwrap().max_body,
        8 * DirMode::Micro.max_descriptor()
    );
    assert!(DirMode::Micro.descriptor_budget() >= 3 * 2_200_000);
    assert!(DirMode::Full.descriptor_budget() >= 3 * 10_000_000);
    assert_eq!((DirMode::Micro.batch(), DirMode::Full.batch()), (92, 96));
}

/// Descriptors are asked for in batches of 92 (microdescriptors) or 96 (server
/// descriptors), at most `max_parallel` at once.
#[test]
fn descriptors_are_batched() {
    let digests: Vec<MdDigest> = (0..200u8).map(|i| MdDigest([i; 32])).collect();
    let paths: Vec<String> = digests
        .chunks(DirMode::Micro.batch())
        .map(|c| DirRequest::microdescs(c)[0].path.clone())
        .collect();
    assert_eq!(paths.len(), 3);
    assert_eq!(paths[0].matches('-').count(), 91);
    let ds: Vec<[u8; 20]> = (0..200u8).map(|i| [i; 20]).collect();
    let n: Vec<usize> = ds
        .chunks(DirMode::Full.batch())
        .map(|c| {
            DirRequest::server_descriptors(c)[0]
                .path
                .matches('+')
                .count()
                + 1
        })
        .collect();
    assert_eq!(n, vec![96, 96, 8]);
}

/// Stored documents give a directory at once while the consensus is live, verified again:
/// no request; a stored consensus altered since, or one past valid-until, is not used.
#[test]
fn cached_documents_are_reused_while_live_and_verified_again() {
    for mode in [DirMode::Micro, DirMode::Full] {
        let (_, _, events) = bootstrap(mode);
        let stored = persisted(&events);
        let mut m = DirMachine::new(
            config(mode),
            stored.clone(),
            Instant::ZERO,
            WALL,
            &mut rng(),
        )
        .unwrap();
        assert!(m.poll_request().is_none());
        let events: Vec<DirEvent> = std::iter::from_fn(|| m.poll_event()).collect();
        let d = directories(&events);
        assert_eq!(d.len(), 1, "{events:?}");
        assert!(d[0].from_cache);
        assert_eq!(d[0].view.len(), 8);
        assert!(!events.iter().any(|e| matches!(e, DirEvent::Persist { .. })));

        // Altered in store: refused, fetched again; the stored certificates are still used
        // (no certificate request) and the stored descriptors too (no descriptor request).
        let mut tampered = stored.clone();
        tampered.consensus = Some(stored.consensus.clone().unwrap().replacen(
            "127.0.0.1 53337",
            "10.6.6.6 53337",
            1,
        ));
        let mut m =
            DirMachine::new(config(mode), tampered, Instant::ZERO, WALL, &mut rng()).unwrap();
        let mut dir = FakeDir::new(mode, consensus_text(mode));
        let events = drive(&mut m, &mut dir, Instant::ZERO, WALL);
        let d = directories(&events);
        assert_eq!(d.len(), 1);
        assert!(!d[0].from_cache);
        assert_eq!(dir.count("/tor/status-vote/"), 1);
        assert_eq!(dir.count("/tor/keys/"), 0);
        assert_eq!(dir.descriptor_requests(), 0);

        // Past valid-until: not used.
        let late = Timestamp(WALL.0 + 3600);
        let m = DirMachine::new(
            config(mode),
            stored.clone(),
            Instant::ZERO,
            late,
            &mut rng(),
        )
        .unwrap();
        assert!(m.directory().is_none());
        let mut m = m;
        assert_eq!(m.poll_request().unwrap().kind, DocKind::Consensus);
    }
}

/// A diff from `base` to `to` that is the whole of `to` after dropping `base`'s lines
/// `from..` (dir-spec §4.5.1, appendix E).
fn diff_dropping_tail(base: &str, from_line: usize) -> (String, String) {
    let kept: String = base
        .lines()
        .take(from_line - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let from = consdiff::signed_part_digest(base).unwrap();
    let to = hex::encode(Sha3_256::digest(kept.as_bytes()));
    (
        format!("network-status-diff-version 1\nhash {from} {to}\n{from_line},$d\n"),
        kept,
    )
}

/// At the refresh time the machine asks a directory guard, offering its consensus for a
/// diff; a diff is applied and the result verified (here: the same consensus with one of
/// its three signatures dropped, still a quorum, so the directory is up to date); a diff
/// that does not apply is followed by a request for the whole document from the same
/// source; a diff whose result does not verify is refused with no descriptor request.
#[test]
fn refresh_by_diff() {
    let mode = DirMode::Micro;
    let (mut m, _, _) = bootstrap(mode);
    let base = consensus_text(mode);
    let (diff, result) = diff_dropping_tail(&base, 93);
    assert_eq!(consdiff::apply(&base, &diff).unwrap(), result);
    let (mut m1, refresh_at, wall) = clone_machine(&mut m);
    // The refresh time is in the window: 35 to 39 s after valid-after.
    assert!((WALL.0 + 25..=WALL.0 + 29).contains(&wall.0), "{wall}");
    let req = m1.poll_request().unwrap();
    assert_eq!(req.source, Source::DirGuard);
    assert_eq!(req.diff_from, consdiff::signed_part_digest(&base));
    assert!(String::from_utf8(req.to_http()).unwrap().contains(&format!(
        "\r\nX-Or-Diff-From-Consensus: {}\r\n",
        req.diff_from.as_ref().unwrap()
    )));
    m1.handle_response(
        req.id,
        refresh_at,
        wall,
        Ok(diff.clone().into_bytes()),
        &mut rng(),
    );
    let mut dir = FakeDir::new(mode, String::new());
    let events = drive(&mut m1, &mut dir, refresh_at, wall);
    assert!(failures(&events).is_empty(), "{events:?}");
    assert!(
        dir.requests.is_empty(),
        "nothing more to fetch: {:?}",
        dir.requests
    );
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            DirEvent::Progress { what, .. } => Some(what.clone()),
            _ => None,
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("consensus received as a diff")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("no newer consensus")),
        "{lines:?}"
    );

    // A diff from another base: asked again whole, of the same guard, without the offer.
    let (mut m2, refresh_at, wall) = clone_machine(&mut m);
    let req = m2.poll_request().unwrap();
    let (other, _) = diff_dropping_tail(&base.replacen("valid-after", "valid-after ", 1), 93);
    m2.handle_response(req.id, refresh_at, wall, Ok(other.into_bytes()), &mut rng());
    let again = m2.poll_request().unwrap();
    assert_eq!(
        (again.source, again.diff_from.as_deref()),
        (Source::DirGuard, None)
    );
    assert_eq!(again.path, req.path);

    // A diff whose result is forged: refused, no descriptor request, another source asked.
    let (mut m3, refresh_at, wall) = clone_machine(&mut m);
    let req = m3.poll_request().unwrap();
    let forged = base.replacen("127.0.0.1 53337", "10.6.6.6 53337", 1);
    let kept: String = forged.lines().take(92).map(|l| format!("{l}\n")).collect();
    let bad = format!(
        "network-status-diff-version 1\nhash {} {}\n93,$d\n25c\n{}\n.\n",
        consdiff::signed_part_digest(&base).unwrap(),
        hex::encode(Sha3_256::digest(kept.as_bytes())),
        forged.lines().nth(24).unwrap()
    );
    assert_eq!(consdiff::apply(&base, &bad).unwrap(), kept);
    m3.handle_response(req.id, refresh_at, wall, Ok(bad.into_bytes()), &mut rng());
    let events: Vec<DirEvent> = std::iter::from_fn(|| m3.poll_event()).collect();
    let next = m3.poll_request().unwrap();
    assert_eq!(next.kind, DocKind::Consensus, "{events:?}");
    assert!(m3.poll_request().is_none());
    assert!(directories(&events).is_empty());
}

/// A machine in the state of `m` with its refresh started: a fresh machine from the same
/// stored documents (verified again), woken at its refresh time; that time and the wall
/// clock then.
fn clone_machine(m: &mut DirMachine) -> (DirMachine, Instant, Timestamp) {
    let d = m.directory().unwrap().clone();
    let cached = Cached {
        consensus: Some(d.consensus_text().to_owned()),
        certificates: Some(testdata("cached-certs")),
        descriptors: Some(d.descriptors_text().to_owned()),
    };
    let mut c = DirMachine::new(config(d.mode), cached, Instant::ZERO, WALL, &mut rng()).unwrap();
    while c.poll_event().is_some() {}
    let at = c.poll_timeout().unwrap();
    let wall = Timestamp(WALL.0 + at.saturating_duration_since(Instant::ZERO).as_secs());
    c.handle_timeout(at, wall, &mut rng());
    while c.poll_event().is_some() {}
    (c, at, wall)
}

#[test]
fn config_misuse_is_refused() {
    let e = DirMachine::new(
        DirConfig::new(vec![], vec![], DirMode::Micro),
        Cached::default(),
        Instant::ZERO,
        WALL,
        &mut rng(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Misuse);
    let mut cfg = config(DirMode::Micro);
    cfg.max_attempts = 0;
    assert!(DirMachine::new(cfg, Cached::default(), Instant::ZERO, WALL, &mut rng()).is_err());
}

#[test]
fn responses_are_decoded() {
    let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello\n";
    assert_eq!(decode_response(ok, 100).unwrap(), b"hello\n");
    assert_eq!(decode_response(ok, 3), Err(Failure::TooLarge));
    let nf = b"HTTP/1.0 404 Not found\r\n\r\n";
    assert_eq!(
        decode_response(nf, 100),
        Err(Failure::Http {
            status: 404,
            reason: "Not found".into()
        })
    );
    assert!(matches!(
        decode_response(b"garbage", 100),
        Err(Failure::Network(_))
    ));
}

/// One step of a hostile or broken network.
#[derive(Debug, Clone)]
enum Step {
    /// Answer the oldest request with these bytes.
    Bytes(Vec<u8>),
    /// Answer it with a real document, cut at this fraction of its length.
    Cut(u8, u16),
    /// Answer it with a failure.
    Fail(u8),
    /// Answer an arbitrary request id.
    Stray(u64),
    /// Let time pass.
    Wait(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(Step::Bytes),
        (any::<u8>(), any::<u16>()).prop_map(|(d, c)| Step::Cut(d, c)),
        any::<u8>().prop_map(Step::Fail),
        any::<u64>().prop_map(Step::Stray),
        any::<u16>().prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the responses, the machine neither panics nor lets its queues grow past
    /// their bounds.
    #[test]
    fn never_panics_on_arbitrary_responses(
        full in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let mode = if full { DirMode::Full } else { DirMode::Micro };
        let docs = [
            consensus_text(mode),
            testdata("cached-certs"),
            descriptors_text(mode),
            consensus_text(mode).replacen("127.0.0.1 53337", "10.6.6.6 53337", 1),
        ];
        let mut rng = rng();
        let mut now = Instant::ZERO;
        let mut wall = WALL;
        let mut m = DirMachine::new(config(mode), Cached::default(), now, wall, &mut rng).unwrap();
        let mut queue: VecDeque<Request> = VecDeque::new();
        for s in steps {
            while let Some(r) = m.poll_request() {
                queue.push_back(r);
            }
            match s {
                Step::Wait(secs) => {
                    now = now + Duration::from_secs(u64::from(secs));
                    wall = Timestamp(wall.0 + u64::from(secs));
                    m.handle_timeout(now, wall, &mut rng);
                }
                Step::Stray(id) => m.handle_response(RequestId(id), now, wall, Ok(vec![]), &mut rng),
                other => {
                    let Some(r) = queue.pop_front() else { continue };
                    let answer = match other {
                        Step::Bytes(b) => Ok(b),
                        Step::Cut(d, c) => {
                            let doc = &docs[usize::from(d) % docs.len()];
                            let at = doc.len() * usize::from(c) / usize::from(u16::MAX);
                            Ok(doc.as_bytes()[..at].to_vec())
                        }
                        Step::Fail(f) => Err(match f % 4 {
                            0 => Failure::Timeout,
                            1 => Failure::TooLarge,
                            2 => Failure::Http { status: 500, reason: "x".into() },
                            _ => Failure::Network("reset".into()),
                        }),
                        _ => unreachable!(),
                    };
                    m.handle_response(r.id, now, wall, answer, &mut rng);
                }
            }
            prop_assert!(m.pending.len() <= m.cfg.max_parallel.max(1));
            prop_assert!(m.events.len() <= MAX_EVENTS);
            prop_assert!(m.poll_timeout().is_some() || !m.requests.is_empty() || !queue.is_empty());
            while m.poll_event().is_some() {}
        }
    }
}

/// A machine made to refresh a directory of another one asks directory guards first (twice,
/// offering a diff), then the authorities; the certificates come with the directory, so
/// none is fetched; a consensus no newer than the one held gives no new directory; and
/// one bootstrap round says "consensus verified" once, at its end.
#[test]
fn a_refreshing_machine_asks_guards_then_authorities() {
    let mode = DirMode::Micro;
    let (m, _, events) = bootstrap(mode);
    let said = |events: &[DirEvent], s: &str| {
        events
            .iter()
            .filter(|e| matches!(e, DirEvent::Progress { what, .. } if what.contains(s)))
            .count()
    };
    assert_eq!(said(&events, "consensus verified"), 1);
    let current = m.directory().unwrap().clone();
    assert!(!current.certificates_text().is_empty());
    let wall = Timestamp(WALL.0 + 26);
    let mut r = DirMachine::refreshing(
        config(mode),
        current.clone(),
        Instant::ZERO,
        wall,
        &mut rng(),
    )
    .unwrap();
    let mut sources = vec![];
    for _ in 0..2 {
        let req = r.poll_request().unwrap();
        assert!(req.diff_from.is_some());
        sources.push(req.source);
        r.handle_response(
            req.id,
            Instant::ZERO,
            wall,
            Err(Failure::Network("x".into())),
            &mut rng(),
        );
    }
    let req = r.poll_request().unwrap();
    sources.push(req.source);
    assert_eq!(&sources[..2], &[Source::DirGuard, Source::DirGuard]);
    assert!(matches!(sources[2], Source::Authority(_)));
    // The same consensus again: nothing new, no certificate or descriptor request.
    r.handle_response(
        req.id,
        Instant::ZERO,
        wall,
        Ok(consensus_text(mode).into_bytes()),
        &mut rng(),
    );
    assert!(r.poll_request().is_none());
    let events: Vec<DirEvent> = std::iter::from_fn(|| r.poll_event()).collect();
    assert!(
        directories(&events).is_empty() && failures(&events).is_empty(),
        "{events:?}"
    );
    assert_eq!(said(&events, "no newer consensus"), 1);
    assert_eq!(said(&events, "consensus verified"), 0);
    assert!(Arc::ptr_eq(r.directory().unwrap(), &current));
    // Another mode's directory is refused.
    let e = DirMachine::refreshing(
        config(DirMode::Full),
        current,
        Instant::ZERO,
        wall,
        &mut rng(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Misuse);
}

/// The guard list the directory carries gives the guard manager the same state as the
/// consensus itself (guard-spec §4.10 IS_LISTED), so guards need not re-parse it.
#[test]
fn listed_guards_update_the_guard_manager_as_the_consensus_does() {
    use onion_dir::select::guard::{GuardMgr, GuardParams};
    let (m, _, _) = bootstrap(DirMode::Micro);
    let d = m.directory().unwrap();
    let text = consensus_text(DirMode::Micro);
    let cons = onion_dir::consensus::parse(&text).unwrap();
    let certs: Vec<_> = onion_dir::authcert::parse_many(&testdata("cached-certs"))
        .unwrap()
        .into_iter()
        .map(|c| c.verify(WALL).unwrap())
        .collect();
    let v3: Vec<RsaIdentity> = authorities().iter().map(|a| a.v3ident).collect();
    let cons = cons.verify(&v3, &certs, WALL).unwrap();
    let now = WALL;
    let mut a = GuardMgr::new(GuardParams::default());
    a.update_from_consensus(now, &cons, &d.view, &mut rng());
    let mut b = GuardMgr::new(GuardParams::default());
    let listed = d.listed_guards.iter().copied().collect();
    b.update_listed_ids(now, &d.view, &listed, &mut rng());
    let ids = |g: &GuardMgr| -> Vec<(RsaIdentity, bool)> {
        g.sampled().iter().map(|s| (s.rsa_id, s.listed)).collect()
    };
    assert!(!a.sampled().is_empty());
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.primary(), b.primary());
}
