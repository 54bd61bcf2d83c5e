//! Structure rules of dir-spec §1.2 and §3.4.1: errors name the line and the
//! keyword; unknown keywords are skipped; ordering and multiplicity enforced.

use onion_dir::{authcert, consensus, microdesc, routerdesc, ParseError, ParseProblem};

fn read(name: &str) -> String {
    let p = format!("{}/testdata/tornet/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// 1-based line number of the first line starting with `prefix`.
fn line_of(doc: &str, prefix: &str) -> u32 {
    doc.lines().position(|l| l.starts_with(prefix)).unwrap() as u32 + 1
}

fn err(doc: &str) -> ParseError {
    consensus::parse(doc).unwrap_err()
}

#[test]
fn unknown_keywords_are_skipped() {
    let doc = read("cached-microdesc-consensus");
    let extended = doc
        .replacen("known-flags", "x-future-item 1 2 3\nknown-flags", 1)
        .replacen("\nm ", "\nfuture-router-item abc\nm ", 1)
        .replacen("bandwidth-weights", "x-footer-thing\nbandwidth-weights", 1);
    let c = consensus::parse(&extended).unwrap().assume_verified();
    assert_eq!(c.relays.len(), 8);
    // Unknown items with objects too.
    let d = read("relay0.server-descriptor").replacen(
        "hidden-service-dir\n",
        "hidden-service-dir\nx-new\n-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
        1,
    );
    assert!(routerdesc::UnverifiedRouterDesc::parse(&d).is_ok());
}

#[test]
fn multiplicity_enforced() {
    let doc = read("cached-microdesc-consensus");
    // A second `s` line in the first router entry.
    let s_line = line_of(&doc, "s ");
    let bad = doc.replacen("\ns ", "\ns Fast\ns ", 1);
    let e = err(&bad);
    assert_eq!(
        (e.line, e.keyword.as_str(), &e.problem),
        (s_line + 1, "s", &ParseProblem::DuplicateItem)
    );
    assert!(e.to_string().contains(&format!("line {}", s_line + 1)));
    // A second valid-after.
    let bad = doc.replacen(
        "fresh-until",
        "valid-after 2026-11-23 07:20:00\nfresh-until",
        1,
    );
    let e = err(&bad);
    assert_eq!(
        (e.keyword.as_str(), e.problem),
        ("valid-after", ParseProblem::DuplicateItem)
    );
    // A missing known-flags.
    let bad: String = doc
        .lines()
        .filter(|l| !l.starts_with("known-flags"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(err(&bad).problem, ParseProblem::MissingItem("known-flags"));
    // A router entry without `m` in the microdesc flavour.
    let r_line = line_of(&doc, "r ");
    let bad = doc.replacen("\nm ", "\nx-m ", 1);
    let e = err(&bad);
    assert_eq!(
        (e.line, e.keyword.as_str(), e.problem),
        (r_line, "r", ParseProblem::MissingItem("m"))
    );
}

#[test]
fn ordering_enforced() {
    let doc = read("cached-microdesc-consensus");
    // Preamble item inside the router section.
    let bad = doc.replacen("\nw ", "\nvalid-until 2026-11-23 07:20:40\nw ", 1);
    assert_eq!(err(&bad).problem, ParseProblem::UnexpectedItem);
    // A router entry after the footer.
    let bad = doc.replacen(
        "bandwidth-weights",
        "r x AAAAAAAAAAAAAAAAAAAAAAAAAAA 2038-01-01 00:00:00 1.2.3.4 1 0\nbandwidth-weights",
        1,
    );
    assert_eq!(err(&bad).keyword, "r");
    // Something after the signatures.
    let bad = format!("{doc}s Fast\n");
    assert_eq!(err(&bad).problem, ParseProblem::UnexpectedItem);
    // Not starting with network-status-version.
    let bad = format!("vote-status consensus\n{doc}");
    assert_eq!(
        err(&bad).problem,
        ParseProblem::MissingItem("network-status-version")
    );
    // A vote is not a consensus.
    let bad = doc.replacen("vote-status consensus", "vote-status vote", 1);
    assert!(matches!(err(&bad).problem, ParseProblem::Unsupported(_)));
}

#[test]
fn bad_arguments_named() {
    let doc = read("cached-microdesc-consensus");
    let bad = doc.replacen("127.0.0.1 53337", "127.0.0.300 53337", 1);
    let e = err(&bad);
    assert_eq!(
        (e.keyword.as_str(), e.problem),
        ("r", ParseProblem::BadArgument("IP"))
    );
    let bad = doc.replacen("w Bandwidth=81", "w Bandwidth=eighty", 1);
    assert_eq!(err(&bad).problem, ParseProblem::BadArgument("Bandwidth"));
    let bad = doc.replacen(
        "valid-after 2026-11-23 07:20:00",
        "valid-after 2026-13-23 07:20:00",
        1,
    );
    assert_eq!(err(&bad).keyword, "valid-after");
    let bad = doc.replacen(
        "fresh-until 2026-11-23 07:20:20",
        "fresh-until 2026-11-23 07:19:00",
        1,
    );
    assert_eq!(err(&bad).keyword, "fresh-until");
    let bad = doc.replacen("-----END SIGNATURE-----\n", "", 1);
    assert!(matches!(
        err(&bad).problem,
        ParseProblem::BadObject | ParseProblem::UnterminatedObject
    ));
    assert_eq!(err("").problem, ParseProblem::Truncated);
}

#[test]
fn other_documents() {
    let md = read("cached-microdescs.new");
    let bad = md.replacen("ntor-onion-key ", "ntor-onion-key !!", 1);
    let e = microdesc::parse_many(&bad).unwrap_err();
    assert_eq!(
        (e.keyword.as_str(), e.line),
        ("ntor-onion-key", line_of(&md, "ntor-onion-key"))
    );
    let bad = md.replacen(
        "id ed25519",
        "id ed25519 YOKyG52JDaRrYiJ3nwYWRqWAAwWHjrlh4Q2X8vAbu7g\nid ed25519",
        1,
    );
    assert_eq!(
        microdesc::parse_many(&bad).unwrap_err().problem,
        ParseProblem::DuplicateItem
    );

    let d = read("relay0.server-descriptor");
    let bad = d.replacen("bandwidth ", "bandwidth 1\nbandwidth ", 1);
    assert_eq!(
        routerdesc::UnverifiedRouterDesc::parse(&bad)
            .unwrap_err()
            .problem,
        ParseProblem::DuplicateItem
    );
    let bad = d.replacen("published", "x-published", 1);
    assert_eq!(
        routerdesc::UnverifiedRouterDesc::parse(&bad)
            .unwrap_err()
            .problem,
        ParseProblem::MissingItem("published")
    );
    let bad = d.replacen("fingerprint F8A6", "fingerprint F8A7", 1);
    assert_eq!(
        routerdesc::UnverifiedRouterDesc::parse(&bad)
            .unwrap_err()
            .keyword,
        "fingerprint"
    );

    let c = read("authority_certificate.auth0");
    let bad = c.replacen("fingerprint 329F", "fingerprint 329E", 1);
    assert_eq!(
        authcert::UnverifiedAuthCert::parse(&bad)
            .unwrap_err()
            .keyword,
        "fingerprint"
    );
    let bad = c.replacen(
        "dir-key-certificate-version 3",
        "dir-key-certificate-version 4",
        1,
    );
    assert!(matches!(
        authcert::UnverifiedAuthCert::parse(&bad)
            .unwrap_err()
            .problem,
        ParseProblem::Unsupported(_)
    ));
}

#[test]
fn unknown_item_floods_are_not_stored() {
    // 200,000 unknown items in one microdescriptor: accepted (skipped), and the
    // digest still covers them, since they are part of the text.
    let md = "onion-key\n-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\nntor-onion-key HeskCAJbE/gv154Yaj2DO5DrRJuPErRro985oPV+IVk\n";
    let flood = format!("{md}{}", "x\n".repeat(200_000));
    let mds = microdesc::parse_many(&flood).unwrap();
    assert_eq!(mds.len(), 1);
    assert_eq!(mds[0].text.len(), flood.len());
    let doc = read("cached-microdesc-consensus").replacen(
        "known-flags",
        &format!("{}known-flags", "y 1\n".repeat(100_000)),
        1,
    );
    assert_eq!(consensus::parse(&doc).unwrap().peek().relays.len(), 8);
}

#[test]
fn unknown_signature_algorithms_ignored() {
    let doc = read("cached-microdesc-consensus");
    let extra = doc.replacen(
        "directory-signature sha256",
        "directory-signature sha3-512 whatever\n-----BEGIN SIGNATURE-----\nAAAA\n-----END SIGNATURE-----\ndirectory-signature sha256",
        1,
    );
    let c = consensus::parse(&extra).unwrap().assume_verified();
    assert_eq!(c.signatures.len(), 3);
    assert!(c
        .signatures
        .iter()
        .all(|s| s.algorithm == consensus::DigestAlgorithm::Sha256));
    // A known algorithm with a malformed identity is an error.
    let bad = doc.replacen(
        "directory-signature sha256 2332",
        "directory-signature sha256 Z332",
        1,
    );
    assert_eq!(
        err(&bad).problem,
        ParseProblem::BadArgument("identity (hex)")
    );
}

#[test]
fn entries_sorted_by_identity() {
    let doc = read("cached-microdesc-consensus");
    let c = consensus::parse(&doc).unwrap().assume_verified();
    for r in &c.relays {
        assert_eq!(c.relay(&r.identity).map(|x| x.nickname), Some(r.nickname));
    }
    assert!(c.relay(&onion_dir::RsaIdentity([0xff; 20])).is_none());
    // Swap the first two entries: rejected, naming the second `r` line.
    let entries: Vec<&str> = doc.split("\nr ").collect();
    let mut swapped = entries.clone();
    swapped.swap(1, 2);
    // Keep the footer attached to the last entry.
    let bad = swapped.join("\nr ");
    let e = err(&bad);
    assert_eq!(
        (e.keyword.as_str(), e.problem),
        (
            "r",
            ParseProblem::BadArgument("identity not in ascending order")
        )
    );
}
