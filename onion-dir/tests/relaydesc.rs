//! A relay's own server descriptor and extra-info document (onion_dir::relaydesc): encoded
//! and signed with an onion_crypto::relay_keyset::RelayKeySet, then parsed and verified by
//! onion-dir's parsers, by Debian's stem (an independent implementation), and against C
//! tor's extra-info documents.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV6};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use onion_crypto::relay_keyset::{OnionKeyParams, RelayKeySet};
use onion_dir::extrainfo::{self, UnverifiedExtraInfo};
use onion_dir::microdesc::FamilyMember;
use onion_dir::policy::{ExitPolicy, PolicyRule, PolicySummary};
use onion_dir::relaydesc::{
    EncodeError, ExtraInfo, ServerDescriptor, SignedDescriptor, SignedExtraInfo,
    ONION_RELAY_PROTOCOLS,
};
use onion_dir::routerdesc::{Bandwidth, RouterDesc, UnverifiedRouterDesc};
use onion_dir::{Protocols, Timestamp};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// When the test key sets are made (and documents published).
const T0: u64 = 1_796_547_440;

/// Key sets are slow to make (RSA-1024): one with a TAP key and one without, shared.
fn keys(tap: bool) -> &'static RelayKeySet {
    static WITH: OnceLock<RelayKeySet> = OnceLock::new();
    static WITHOUT: OnceLock<RelayKeySet> = OnceLock::new();
    let (cell, seed) = if tap { (&WITH, 1) } else { (&WITHOUT, 2) };
    cell.get_or_init(|| {
        RelayKeySet::generate(Timestamp(T0), tap, &mut ChaCha20Rng::seed_from_u64(seed))
            .expect("keys")
    })
}

fn rule(kw: &str, pat: &str) -> PolicyRule {
    PolicyRule::parse(kw, pat).expect("rule")
}

fn sample(published: Timestamp) -> ServerDescriptor {
    ServerDescriptor {
        nickname: "onionTest0".into(),
        address: Ipv4Addr::new(127, 0, 0, 1),
        or_port: 35567,
        dir_port: 0,
        ipv6: Some(SocketAddrV6::new(
            "2001:db8::7".parse().expect("v6"),
            9001,
            0,
            0,
        )),
        platform: "onion 0.1.0 on Linux".into(),
        protocols: Protocols::parse(ONION_RELAY_PROTOCOLS).expect("proto"),
        published,
        uptime: 72,
        bandwidth: Bandwidth {
            average: 1_073_741_824,
            burst: 1_073_741_824,
            observed: 81_077,
        },
        extra_info: None,
        family: vec![
            "$F8A6B001F7A62D014969CA22A87FDE1D271BEF16".into(),
            "$3955CB2F1E48C76F93BB3C71013FF4A179A46B59~exit0".into(),
        ],
        hibernating: false,
        hidden_service_dir: true,
        contact: Some("relay0@tornet.invalid <0xDEADBEEF>".into()),
        exit_policy: ExitPolicy {
            rules: vec![
                rule("accept", "127.0.0.0/8:*"),
                rule("reject", "10.0.0.0/255.0.0.0:25"),
                rule("accept", "*:80-81"),
                rule("reject", "*:*"),
            ],
        },
        ipv6_policy: PolicySummary::parse("accept 80,443").expect("summary"),
        tunnelled_dir_server: true,
        caches_extra_info: false,
    }
}

fn publish(
    desc: &mut ServerDescriptor,
    keys: &RelayKeySet,
    seed: u64,
) -> (SignedDescriptor, SignedExtraInfo) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ei = ExtraInfo {
        nickname: desc.nickname.clone(),
        published: desc.published,
    }
    .encode(keys, &mut rng)
    .expect("extra-info");
    desc.extra_info = Some(ei.digests);
    let d = desc
        .encode(keys, &OnionKeyParams::default(), &mut rng)
        .expect("descriptor");
    (d, ei)
}

fn verify(text: &str, now: u64) -> RouterDesc<'_> {
    UnverifiedRouterDesc::parse(text)
        .expect("parses")
        .verify(Timestamp::from_unix(now))
        .expect("verifies")
}

/// Every field the descriptor was built from comes back out of onion-dir's parser, and
/// every signature and cross-certificate verifies.
fn check_fields(
    d: &RouterDesc<'_>,
    want: &ServerDescriptor,
    keys: &RelayKeySet,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.nickname, want.nickname.as_str());
    prop_assert_eq!(d.address, want.address);
    prop_assert_eq!(d.or_port, want.or_port);
    prop_assert_eq!(d.dir_port, want.dir_port);
    prop_assert_eq!(d.ipv6, want.ipv6);
    prop_assert_eq!(d.fingerprint, keys.rsa_identity().public().identity());
    prop_assert_eq!(d.master_key, Some(keys.ed_identity()));
    prop_assert_eq!(d.platform, Some(want.platform.as_str()));
    prop_assert_eq!(d.protocols, want.protocols);
    prop_assert_eq!(d.published, want.published);
    prop_assert_eq!(d.uptime, Some(want.uptime));
    prop_assert_eq!(d.bandwidth, want.bandwidth);
    prop_assert_eq!(d.family.0, want.family.join(" "));
    prop_assert_eq!(d.hidden_service_dir, want.hidden_service_dir);
    prop_assert_eq!(d.tunnelled_dir_server, want.tunnelled_dir_server);
    prop_assert_eq!(d.contact, want.contact.as_deref());
    prop_assert_eq!(d.ntor_onion_key, keys.ntor_key().public().0);
    prop_assert_eq!(d.onion_key.is_some(), keys.tap_key().is_some());
    prop_assert_eq!(
        d.signing_key.der(),
        &keys.rsa_identity().public().to_pkcs1_der()[..]
    );
    let rules = if want.exit_policy.rules.is_empty() {
        vec![rule("reject", "*:*")]
    } else {
        want.exit_policy.rules.clone()
    };
    prop_assert_eq!(&d.exit_policy.rules, &rules);
    prop_assert_eq!(&d.ipv6_policy, &want.ipv6_policy);
    prop_assert_eq!(d.extra_info_digest, want.extra_info.map(|e| e.sha1));
    Ok(())
}

#[test]
fn descriptor_and_extra_info_round_trip_through_the_parsers() {
    for tap in [true, false] {
        let keys = keys(tap);
        let mut want = sample(Timestamp::from_unix(T0 + 60));
        let (d, ei) = publish(&mut want, keys, 3);
        let got = verify(&d.text, T0 + 120);
        check_fields(&got, &want, keys).expect("fields");
        assert_eq!(got.digest, d.digest);
        assert_eq!(got.text, d.text);
        assert!(d.text.ends_with("-----END SIGNATURE-----\n"));
        // One item per line of C tor's fingerprint form.
        assert!(d.text.contains(&format!(
            "\nfingerprint {}\n",
            keys.rsa_identity()
                .public()
                .identity()
                .to_string()
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        )));
        // The descriptor names its extra-info by both digests, and they are the parser's.
        let line = d
            .text
            .lines()
            .find(|l| l.starts_with("extra-info-digest "))
            .expect("extra-info-digest");
        let e = UnverifiedExtraInfo::parse(&ei.text)
            .expect("parses")
            .verify(
                &got.signing_key,
                got.master_key.as_ref(),
                Timestamp::from_unix(T0 + 120),
            )
            .expect("verifies");
        assert_eq!(e.sha1, ei.digests.sha1);
        assert_eq!(e.sha256, ei.digests.sha256);
        assert_eq!(
            line,
            format!(
                "extra-info-digest {} {}",
                hex::encode_upper(e.sha1),
                base64_nopad(&e.sha256)
            )
        );
        assert_eq!(e.nickname, want.nickname);
        assert_eq!(e.published, want.published);
        assert_eq!(e.fingerprint, got.fingerprint);
        assert_eq!(e.text, ei.text);
    }
}

fn base64_nopad(b: &[u8]) -> String {
    use std::fmt::Write as _;
    // Independent of onion-dir's encoder: standard alphabet, no padding.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            let _ = write!(s, "{}", A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

/// A change to any signed byte breaks a signature; a descriptor verified with the wrong
/// relay's keys fails.
#[test]
fn tampering_is_detected() {
    let other_keys = keys(false);
    let keys = keys(true);
    let mut want = sample(Timestamp::from_unix(T0));
    let (d, ei) = publish(&mut want, keys, 4);
    for (from, to) in [
        ("uptime 72\n", "uptime 73\n"),
        ("reject *:*\n", "accept *:*\n"),
        ("hidden-service-dir\n", ""),
    ] {
        let bad = d.text.replacen(from, to, 1);
        assert_ne!(bad, d.text);
        assert!(
            UnverifiedRouterDesc::parse(&bad)
                .expect("parses")
                .verify(Timestamp::from_unix(T0))
                .is_err(),
            "{from:?}"
        );
    }
    let bad = ei.text.replacen(
        &format!("published {}", want.published),
        &format!("published {}", Timestamp::from_unix(T0 + 1)),
        1,
    );
    let desc = verify(&d.text, T0);
    assert!(UnverifiedExtraInfo::parse(&bad)
        .expect("parses")
        .verify(
            &desc.signing_key,
            desc.master_key.as_ref(),
            Timestamp::from_unix(T0)
        )
        .is_err());
    // The other relay's keys do not verify this extra-info.
    let mut other = sample(Timestamp::from_unix(T0));
    let (od, _) = publish(&mut other, other_keys, 5);
    let other_desc = verify(&od.text, T0);
    assert!(UnverifiedExtraInfo::parse(&ei.text)
        .expect("parses")
        .verify(
            &other_desc.signing_key,
            other_desc.master_key.as_ref(),
            Timestamp::from_unix(T0)
        )
        .is_err());
    // The ntor cross-certificate lasts one onion-key rotation period from publication.
    assert!(UnverifiedRouterDesc::parse(&d.text)
        .expect("parses")
        .verify(Timestamp::from_unix(T0 + 28 * 86400 + 3600))
        .is_err());
}

#[test]
fn fields_that_would_break_the_document_are_refused() {
    let keys = keys(false);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let p = OnionKeyParams::default();
    let base = sample(Timestamp::from_unix(T0));
    let cases: Vec<(ServerDescriptor, &str)> = vec![
        (
            ServerDescriptor {
                nickname: "bad-nick".into(),
                ..base.clone()
            },
            "router",
        ),
        (
            ServerDescriptor {
                contact: Some("me\nreject *:*".into()),
                ..base.clone()
            },
            "contact",
        ),
        (
            ServerDescriptor {
                platform: String::new(),
                ..base.clone()
            },
            "platform",
        ),
        (
            ServerDescriptor {
                family: vec!["a b".into()],
                ..base.clone()
            },
            "family",
        ),
        (
            ServerDescriptor {
                or_port: 0,
                ..base.clone()
            },
            "router",
        ),
        (
            ServerDescriptor {
                exit_policy: ExitPolicy {
                    rules: vec![rule("accept6", "[2001:db8::]/32:80")],
                },
                ..base.clone()
            },
            "accept/reject",
        ),
    ];
    for (d, field) in cases {
        match d.encode(keys, &p, &mut rng) {
            Err(EncodeError::BadField { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // A descriptor authorities would refuse for its size (dir-spec §2.1: 20,000 bytes).
    let huge = ServerDescriptor {
        exit_policy: ExitPolicy {
            rules: (1..=2000)
                .map(|p| rule("accept", &format!("*:{p}")))
                .collect(),
        },
        ..base.clone()
    };
    assert!(matches!(
        huge.encode(keys, &p, &mut rng),
        Err(EncodeError::BadField {
            field: "router",
            ..
        })
    ));
    // An empty policy is written as C tor writes it.
    let d = ServerDescriptor {
        exit_policy: ExitPolicy::default(),
        ipv6_policy: PolicySummary::reject_all(),
        ..base
    }
    .encode(keys, &p, &mut rng)
    .expect("encodes");
    assert!(
        d.text.contains("\nreject *:*\nrouter-sig-ed25519 ")
            || d.text.contains("\nreject *:*\ntunnelled-dir-server\n")
    );
    assert!(!d.text.contains("ipv6-policy"));
}

/// The upload request carries the descriptor then the extra-info document, each intact.
#[test]
fn upload_request_carries_both_documents() {
    let keys = keys(true);
    let mut want = sample(Timestamp::from_unix(T0));
    let (d, ei) = publish(&mut want, keys, 8);
    let req = onion_dir::http::descriptor_upload(
        "127.0.0.1:7001".parse().expect("addr"),
        &d.text,
        Some(&ei.text),
        "I just started",
    )
    .expect("request");
    let text = String::from_utf8(req).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("POST /tor/ HTTP/1.0\r\n"));
    assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
    let (desc_part, ei_part) = body.split_at(d.text.len());
    verify(desc_part, T0);
    assert_eq!(ei_part, ei.text);
    assert!(UnverifiedExtraInfo::parse(ei_part).is_ok());
}

/// C tor's own extra-info documents parse, and relay0's verifies against its descriptor
/// and matches the digests its descriptor names.
#[test]
fn c_tor_extra_info_documents_verify() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tornet/");
    let eis = std::fs::read_to_string(format!("{dir}cached-extrainfo.new")).expect("fixture");
    let desc_text =
        std::fs::read_to_string(format!("{dir}relay0.server-descriptor")).expect("fixture");
    let now = Timestamp::parse_str("2026-11-23 07:20:09").expect("time");
    let desc = UnverifiedRouterDesc::parse(&desc_text)
        .expect("parses")
        .verify(now)
        .expect("verifies");
    let all = extrainfo::parse_many(&eis).expect("parses");
    assert_eq!(all.len(), 24);
    let wanted = desc.extra_info_digest.expect("digest");
    let mine: Vec<_> = all
        .into_iter()
        .filter(|e| e.peek().sha1 == wanted)
        .collect();
    assert_eq!(mine.len(), 1);
    let e = mine
        .into_iter()
        .next()
        .expect("one")
        .verify(&desc.signing_key, desc.master_key.as_ref(), now)
        .expect("verifies");
    assert_eq!(e.nickname, "relay0");
    assert_eq!(
        base64_nopad(&e.sha256),
        "HUmuEFmje8iwdRQcA0nzoUT9u/QaW47/ze8XF7vwJ40"
    );
}

/// The Python run by [`stem_accepts`]: parses with validation (stem checks the item
/// structure, the fingerprint against the signing key and the signatures) and prints the
/// fields it read as JSON, and whether it refuses a descriptor with one changed byte.
const STEM_SCRIPT: &str = r#"
import json, sys
from stem.descriptor.server_descriptor import RelayDescriptor
from stem.descriptor.extrainfo_descriptor import RelayExtraInfoDescriptor
desc_text, ei_text = sys.stdin.read().split('\n\x00\n')
d = RelayDescriptor(desc_text.encode(), validate=True)
e = RelayExtraInfoDescriptor(ei_text.encode(), validate=True)
# A changed byte must be refused: stem checks the signatures, not only the syntax.
try:
  RelayDescriptor(desc_text.replace('uptime 72', 'uptime 73').encode(), validate=True)
  tamper_refused = False
except ValueError:
  tamper_refused = True
print(json.dumps({
  'nickname': d.nickname, 'address': d.address, 'or_port': d.or_port,
  'fingerprint': d.fingerprint, 'ed25519_master_key': d.ed25519_master_key,
  'platform': d.platform.decode(), 'published': str(d.published),
  'uptime': d.uptime, 'bandwidth': [d.average_bandwidth, d.burst_bandwidth, d.observed_bandwidth],
  'exit_policy': str(d.exit_policy), 'ipv6_policy': str(d.exit_policy_v6),
  'contact': d.contact.decode(), 'family': sorted(d.family),
  'ntor_onion_key': d.ntor_onion_key, 'hsdir': d.is_hidden_service_dir,
  'tunnelled': d.allow_tunneled_dir_requests, 'protocols': {k: sorted(v) for k, v in d.protocols.items()},
  'or_addresses': [[a, p, v6] for a, p, v6 in d.or_addresses],
  'extra_info_digest': d.extra_info_digest, 'extra_info_sha256': d.extra_info_sha256_digest,
  'digest': d.digest(),
  'ei_nickname': e.nickname, 'ei_fingerprint': e.fingerprint, 'ei_published': str(e.published),
  'ei_digest': e.digest(), 'tamper_refused': tamper_refused,
}))
"#;

#[test]
fn stem_accepts() {
    let python = "/usr/bin/python3";
    let has_stem = Command::new(python)
        .args(["-c", "import stem.descriptor.server_descriptor"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_stem {
        eprintln!("stem_accepts: skipped, {python} with stem (python3-stem) is not installed");
        return;
    }
    let keys = keys(true);
    let mut want = sample(Timestamp::from_unix(T0));
    let (d, ei) = publish(&mut want, keys, 7);
    let mut child = Command::new(python)
        .args(["-c", STEM_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = format!("{}\n\0\n{}", d.text, ei.text);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "stem refused the documents: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.text,
        ei.text
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let fp = keys.rsa_identity().public().identity().to_string();
    assert_eq!(v["nickname"], "onionTest0");
    assert_eq!(v["address"], "127.0.0.1");
    assert_eq!(v["or_port"], 35567);
    assert_eq!(v["fingerprint"], fp.as_str());
    assert_eq!(
        v["ed25519_master_key"],
        keys.ed_identity().to_string().as_str()
    );
    assert_eq!(v["platform"], "onion 0.1.0 on Linux");
    assert_eq!(v["published"], want.published.to_string().as_str());
    assert_eq!(v["uptime"], 72);
    assert_eq!(
        v["bandwidth"],
        serde_json::json!([1_073_741_824u64, 1_073_741_824u64, 81_077])
    );
    assert_eq!(
        v["exit_policy"],
        "accept 127.0.0.0/8:*, reject 10.0.0.0/8:25, accept *:80-81, reject *:*"
    );
    assert_eq!(v["ipv6_policy"], "accept 80,443");
    assert_eq!(v["contact"], "relay0@tornet.invalid <0xDEADBEEF>");
    assert_eq!(
        v["family"],
        serde_json::json!([
            "$3955CB2F1E48C76F93BB3C71013FF4A179A46B59~exit0",
            "$F8A6B001F7A62D014969CA22A87FDE1D271BEF16"
        ])
    );
    assert_eq!(
        v["ntor_onion_key"]
            .as_str()
            .map(|s| s.trim_end_matches('=')),
        Some(base64_nopad(keys.ntor_key().public().as_bytes()).as_str())
    );
    assert_eq!(v["hsdir"], true);
    assert_eq!(v["tunnelled"], true);
    assert_eq!(
        v["protocols"],
        serde_json::json!({
            "Cons": [1, 2], "Desc": [1, 2], "DirCache": [2], "FlowCtrl": [1, 2], "HSDir": [2],
            "HSIntro": [4, 5],
            "HSRend": [1, 2], "Link": [3, 4, 5], "LinkAuth": [3], "Microdesc": [1, 2],
            "Relay": [2, 4]
        })
    );
    assert_eq!(
        v["or_addresses"],
        serde_json::json!([["2001:db8::7", 9001, true]])
    );
    assert_eq!(v["digest"], hex::encode_upper(d.digest).as_str());
    assert_eq!(
        v["extra_info_digest"],
        hex::encode_upper(ei.digests.sha1).as_str()
    );
    assert_eq!(
        v["extra_info_sha256"],
        base64_nopad(&ei.digests.sha256).as_str()
    );
    assert_eq!(v["ei_nickname"], "onionTest0");
    assert_eq!(v["ei_fingerprint"], fp.as_str());
    assert_eq!(v["ei_published"], want.published.to_string().as_str());
    assert_eq!(v["ei_digest"], hex::encode_upper(ei.digests.sha1).as_str());
    assert_eq!(v["tamper_refused"], true);
}

fn arb_rule() -> impl Strategy<Value = PolicyRule> {
    (
        any::<bool>(),
        prop_oneof![
            Just("*".to_owned()),
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, b)| {
                let ip = Ipv4Addr::from(a);
                if b == 32 {
                    ip.to_string()
                } else {
                    format!("{ip}/{b}")
                }
            }),
        ],
        prop_oneof![
            Just("*".to_owned()),
            (1u16..=65535).prop_map(|p| p.to_string()),
            (1u16..=65535, 1u16..=65535).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        ],
    )
        .prop_map(|(accept, addr, ports)| {
            PolicyRule::parse(
                if accept { "accept" } else { "reject" },
                &format!("{addr}:{ports}"),
            )
            .expect("valid rule")
        })
}

fn arb_descriptor() -> impl Strategy<Value = (ServerDescriptor, bool)> {
    (
        "[a-zA-Z0-9]{1,19}",
        any::<[u8; 4]>(),
        (1u16..=65535, any::<u16>()),
        proptest::option::of((any::<[u16; 8]>(), 1u16..=65535)),
        "[ -~]{0,40}",
        (T0 - 86400 * 20..T0 + 86400 * 20, any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        proptest::collection::vec("\\$[0-9A-F]{40}|[a-zA-Z0-9]{1,19}", 0..4),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        proptest::collection::vec(arb_rule(), 0..6),
        prop_oneof![
            Just("reject 1-65535".to_owned()),
            Just("accept 80,443".to_owned()),
            Just("reject 25,119,135-139".to_owned())
        ],
    )
        .prop_map(
            |(
                nick,
                ip,
                (or_port, dir_port),
                v6,
                contact,
                (published, uptime),
                bw,
                family,
                flags,
                rules,
                v6pol,
            )| {
                let contact = contact.trim().to_owned();
                (
                    ServerDescriptor {
                        nickname: nick,
                        address: Ipv4Addr::from(ip),
                        or_port,
                        dir_port,
                        ipv6: v6.map(|(a, p)| SocketAddrV6::new(a.into(), p, 0, 0)),
                        platform: "onion 0.1.0 on Linux".into(),
                        protocols: Protocols::parse(ONION_RELAY_PROTOCOLS).expect("proto"),
                        published: Timestamp::from_unix(published),
                        uptime: u64::from(uptime),
                        bandwidth: Bandwidth {
                            average: u64::from(bw.0),
                            burst: u64::from(bw.1),
                            observed: u64::from(bw.2),
                        },
                        extra_info: None,
                        family,
                        hibernating: flags.0,
                        hidden_service_dir: flags.1,
                        contact: (!contact.is_empty()).then_some(contact),
                        exit_policy: ExitPolicy { rules },
                        ipv6_policy: PolicySummary::parse(&v6pol).expect("summary"),
                        tunnelled_dir_server: flags.2,
                        caches_extra_info: flags.3,
                    },
                    flags.4,
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any representable descriptor (and its extra-info) parses back to its fields with
    /// every signature valid.
    #[test]
    fn generated_descriptors_round_trip((mut want, tap) in arb_descriptor(), seed: u64) {
        let keys = keys(tap);
        let (d, ei) = publish(&mut want, keys, seed);
        // Valid while both the signing certificate (made at T0, 30 days) and the ntor
        // cross-certificate (published + 28 days) are.
        let now = want.published.unix().max(T0);
        let got = UnverifiedRouterDesc::parse(&d.text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", d.text)))?
            .verify(Timestamp::from_unix(now))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", d.text)))?;
        check_fields(&got, &want, keys)?;
        prop_assert_eq!(got.digest, d.digest);
        for m in got.family.members() {
            prop_assert!(!matches!(m, FamilyMember::Other(_)));
        }
        let e = UnverifiedExtraInfo::parse(&ei.text)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .verify(&got.signing_key, got.master_key.as_ref(), Timestamp::from_unix(now))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(e.sha1, ei.digests.sha1);
        prop_assert_eq!(e.sha256, ei.digests.sha256);
    }

    /// The extra-info parser never panics on arbitrary text.
    #[test]
    fn extra_info_parser_never_panics(s in "\\PC{0,300}") {
        let _ = extrainfo::parse_many(&s);
    }
}
