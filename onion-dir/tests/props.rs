//! Property tests: no parser panics on any input (random lines built from the
//! documents' own vocabulary, and random mutations of the real C tor fixtures),
//! and mutating a signed document never yields a verified one.

use onion_dir::netdoc::{Limits, Tokenizer};
use onion_dir::{authcert, consensus, microdesc, routerdesc, Timestamp};
use proptest::prelude::*;

fn read(name: &str) -> String {
    let p = format!("{}/testdata/tornet/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn now() -> Timestamp {
    Timestamp::parse_str("2026-11-23 07:20:09").unwrap()
}

/// Run every parser (and verification where it parses) on `s`.
fn exercise(s: &str) {
    for it in Tokenizer::new(s, Limits::SMALL).into_iter().flatten() {
        if it.is_err() {
            break;
        }
    }
    if let Ok(c) = consensus::parse(s) {
        let c = c.assume_verified();
        let _ = c.freshness(now());
        let _ = c.signed_digest(consensus::DigestAlgorithm::Sha256);
    }
    let _ = microdesc::parse_many(s);
    if let Ok(ds) = routerdesc::parse_many(s) {
        for d in ds {
            let _ = d.verify(now());
        }
    }
    if let Ok(cs) = authcert::parse_many(s) {
        for c in cs {
            let _ = c.verify(now());
        }
    }
}

const KEYWORDS: &[&str] = &[
    "network-status-version",
    "vote-status",
    "consensus-method",
    "valid-after",
    "fresh-until",
    "valid-until",
    "voting-delay",
    "known-flags",
    "params",
    "dir-source",
    "contact",
    "vote-digest",
    "r",
    "a",
    "s",
    "v",
    "pr",
    "w",
    "p",
    "m",
    "directory-footer",
    "bandwidth-weights",
    "directory-signature",
    "onion-key",
    "ntor-onion-key",
    "family",
    "family-ids",
    "p6",
    "id",
    "router",
    "identity-ed25519",
    "master-key-ed25519",
    "bandwidth",
    "published",
    "signing-key",
    "router-signature",
    "router-sig-ed25519",
    "accept",
    "reject",
    "dir-key-certificate-version",
    "fingerprint",
    "dir-identity-key",
    "dir-signing-key",
    "dir-key-crosscert",
    "dir-key-certification",
    "dir-key-published",
    "dir-key-expires",
    "shared-rand-current-value",
    "@last-listed",
    "opt",
];

fn arb_line() -> impl Strategy<Value = String> {
    let kw = proptest::sample::select(KEYWORDS);
    let arg = prop_oneof![
        "[A-Za-z0-9+/=]{0,44}",
        "[0-9]{1,6}",
        Just("2026-11-23 07:20:00".to_owned()),
        Just("127.0.0.1".to_owned()),
        Just("3 microdesc".to_owned()),
        Just("consensus".to_owned()),
        Just("sha256".to_owned()),
        Just("accept 80,443".to_owned()),
        Just("Bandwidth=5".to_owned()),
        Just("Link=1-5".to_owned()),
        "\\PC{0,12}",
    ];
    let obj = prop_oneof![
        3 => Just(String::new()),
        1 => "[A-Za-z0-9+/]{0,80}".prop_map(|b| format!("\n-----BEGIN SIGNATURE-----\n{b}\n-----END SIGNATURE-----")),
        1 => Just("\n-----BEGIN RSA PUBLIC KEY-----\nAAAA".to_owned()),
    ];
    (kw, proptest::collection::vec(arg, 0..4), obj)
        .prop_map(|(k, a, o)| format!("{k} {}{o}", a.join(" ")))
}

#[derive(Debug, Clone)]
enum Mutation {
    SetByte(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    Truncate(usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (
            any::<usize>(),
            prop_oneof![b' '..=b'~', Just(b'\n'), Just(b'\t')]
        )
            .prop_map(|(i, b)| Mutation::SetByte(i, b)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(doc: &str, ms: &[Mutation]) -> String {
    let mut lines: Vec<String> = doc.split_inclusive('\n').map(str::to_owned).collect();
    for m in ms {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match *m {
            Mutation::SetByte(i, b) => {
                let l = &mut lines[i % n];
                let mut bytes = std::mem::take(l).into_bytes();
                if !bytes.is_empty() {
                    let k = (i / n) % bytes.len();
                    bytes[k] = b;
                }
                *l = String::from_utf8(bytes).unwrap();
            }
            Mutation::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Truncate(i) => lines.truncate(i % n),
        }
    }
    lines.concat()
}

const FIXTURES: &[&str] = &[
    "cached-consensus",
    "cached-microdesc-consensus",
    "cached-microdescs.new",
    "relay0.server-descriptor",
    "authority_certificate.auth0",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_documents_never_panic(lines in proptest::collection::vec(arb_line(), 0..40)) {
        exercise(&lines.join("\n"));
    }

    #[test]
    fn random_text_never_panics(s in "\\PC{0,300}") {
        exercise(&s);
    }

    #[test]
    fn mutated_fixtures_never_panic(f in 0..FIXTURES.len(), ms in proptest::collection::vec(arb_mutation(), 1..6)) {
        let doc = read(FIXTURES[f]);
        exercise(&mutate(&doc, &ms));
    }

    #[test]
    fn mutated_signed_descriptor_never_verifies(i in any::<usize>(), b in b' '..=b'~') {
        // Any single-byte change inside the signed part either fails to parse
        // or fails to verify (or is no change at all).
        let doc = read("relay0.server-descriptor");
        let end = doc.find("router-signature\n").unwrap() + "router-signature\n".len();
        let k = i % end;
        let mut bytes = doc.clone().into_bytes();
        prop_assume!(bytes[k] != b && bytes[k] != b'\n');
        bytes[k] = b;
        let bad = String::from_utf8(bytes).unwrap();
        if let Ok(d) = routerdesc::UnverifiedRouterDesc::parse(&bad) {
            prop_assert!(d.verify(now()).is_err());
        }
    }

    #[test]
    fn mutated_signed_consensus_never_verifies(i in any::<usize>(), b in b' '..=b'~') {
        let certs: Vec<_> = authcert::parse_many(&read("cached-certs")).unwrap()
            .into_iter().map(|c| c.verify(now()).unwrap()).collect();
        let ids: Vec<_> = certs.iter().map(|c| c.fingerprint).collect();
        let doc = read("cached-microdesc-consensus");
        let signed_len = consensus::parse(&doc).unwrap().peek().signed_len;
        let k = i % signed_len;
        let mut bytes = doc.clone().into_bytes();
        prop_assume!(bytes[k] != b && bytes[k] != b'\n');
        bytes[k] = b;
        let bad = String::from_utf8(bytes).unwrap();
        if let Ok(u) = consensus::parse(&bad) {
            prop_assert!(u.verify(&ids, &certs, now()).is_err());
        }
    }
}
