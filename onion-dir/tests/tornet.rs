//! The C tor fixtures of `testdata/tornet/` against stem's independent parse
//! (`stem-summary.json`): relay by relay, signatures, digests.

use onion_dir::consensus::{self, DigestAlgorithm, Flavor};
use onion_dir::{authcert, microdesc, RsaIdentity, Timestamp};
use serde_json::Value;

fn read(name: &str) -> String {
    let p = format!("{}/testdata/tornet/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn stem() -> Value {
    serde_json::from_str(&read("stem-summary.json")).unwrap()
}

/// The harvest time: all documents are valid then.
fn now() -> Timestamp {
    Timestamp::parse_str("2026-11-23 07:20:09").unwrap()
}

fn authorities() -> Vec<RsaIdentity> {
    [
        "329F4451BAA808E78DF40D2F286080779AD22095",
        "2332F32FF2867FDC5BB4865EC0C8B5BBA6C570E6",
        "782671BC1D5C5E8D3AC5E9E615327F5DA5D2C6EE",
    ]
    .iter()
    .map(|h| RsaIdentity::from_hex(h).unwrap())
    .collect()
}

fn certs() -> Vec<authcert::AuthCert> {
    let text = read("cached-certs");
    authcert::parse_many(&text)
        .unwrap()
        .into_iter()
        .map(|c| c.verify(now()).unwrap())
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn relays_match_stem() {
    let stem = stem();
    let ns_text = read("cached-consensus");
    let md_text = read("cached-microdesc-consensus");
    let ns = consensus::parse(&ns_text).unwrap().assume_verified();
    let md = consensus::parse(&md_text).unwrap().assume_verified();
    assert_eq!(ns.flavor, Flavor::Ns);
    assert_eq!(md.flavor, Flavor::Microdesc);
    let routers = stem["routers"].as_array().unwrap();
    assert_eq!(ns.relays.len(), routers.len());
    assert_eq!(md.relays.len(), routers.len());
    for r in routers {
        let fp = RsaIdentity::from_hex(r["fingerprint"].as_str().unwrap()).unwrap();
        let n = ns
            .relays
            .iter()
            .find(|x| x.identity == fp)
            .expect("relay in ns");
        let m = md
            .relays
            .iter()
            .find(|x| x.identity == fp)
            .expect("relay in md");
        for x in [n, m] {
            assert_eq!(x.nickname, r["nickname"].as_str().unwrap());
            assert_eq!(x.address.to_string(), r["address"].as_str().unwrap());
            assert_eq!(u64::from(x.or_port), r["or_port"].as_u64().unwrap());
            // stem reports a DirPort of 0 as null.
            assert_eq!(u64::from(x.dir_port), r["dir_port"].as_u64().unwrap_or(0));
            assert_eq!(x.version, r["version"].as_str());
            assert_eq!(x.unmeasured, r["is_unmeasured"].as_bool().unwrap());
        }
        assert_eq!(n.flags.names().collect::<Vec<_>>(), strs(&r["flags"]));
        assert_eq!(m.flags.names().collect::<Vec<_>>(), strs(&r["md_flags"]));
        assert_eq!(
            u64::from(n.bandwidth.unwrap()),
            r["bandwidth"].as_u64().unwrap()
        );
        assert_eq!(n.published.to_string(), r["published"].as_str().unwrap());
        assert_eq!(
            hex::encode_upper(n.descriptor_digest.unwrap()),
            r["descriptor_digest_hex"].as_str().unwrap()
        );
        assert_eq!(
            n.policy.as_ref().unwrap().to_string(),
            r["exit_policy_summary"].as_str().unwrap()
        );
        assert_eq!(
            m.md_digest.unwrap().to_base64(),
            r["microdescriptor_digest"].as_str().unwrap()
        );
    }
}

#[test]
fn header_matches_stem() {
    let stem = stem();
    for (file, key) in [
        ("cached-consensus", "consensus"),
        ("cached-microdesc-consensus", "microdesc_consensus"),
    ] {
        let s = &stem[key];
        let text = read(file);
        let c = consensus::parse(&text).unwrap().assume_verified();
        assert_eq!(
            c.valid_after.to_string(),
            s["valid_after"].as_str().unwrap()
        );
        assert_eq!(
            c.fresh_until.to_string(),
            s["fresh_until"].as_str().unwrap()
        );
        assert_eq!(
            c.valid_until.to_string(),
            s["valid_until"].as_str().unwrap()
        );
        assert_eq!(
            u64::from(c.consensus_method.unwrap()),
            s["consensus_method"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(c.voting_delay.0),
            s["vote_delay"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(c.voting_delay.1),
            s["dist_delay"].as_u64().unwrap()
        );
        assert_eq!(c.known_flags, strs(&s["known_flags"]));
        // These documents have no `params` line; stem reports its defaults
        // then. Every parameter we do parse must agree with stem's value.
        assert_eq!(c.params.entries.is_empty(), !text.contains("\nparams"));
        for (k, v) in &c.params.entries {
            assert_eq!(s["params"][k].as_i64(), Some(i64::from(*v)), "{k}");
        }
        for (k, v) in s["bandwidth_weights"].as_object().unwrap() {
            assert_eq!(c.bandwidth_weights.get(k).map(i64::from), v.as_i64(), "{k}");
        }
        let auths = s["authorities"].as_array().unwrap();
        assert_eq!(c.authorities.len(), auths.len());
        for (a, sa) in c.authorities.iter().zip(auths) {
            assert_eq!(a.nickname, sa["nickname"].as_str().unwrap());
            assert_eq!(a.identity.to_string(), sa["v3ident"].as_str().unwrap());
            assert_eq!(u64::from(a.dir_port), sa["dir_port"].as_u64().unwrap());
            assert_eq!(u64::from(a.or_port), sa["or_port"].as_u64().unwrap());
        }
        let sigs = s["signatures"].as_array().unwrap();
        assert_eq!(c.signatures.len(), sigs.len());
        for (g, sg) in c.signatures.iter().zip(sigs) {
            assert_eq!(g.identity.to_string(), sg["identity"].as_str().unwrap());
            assert_eq!(
                g.signing_key_digest.to_string(),
                sg["key_digest"].as_str().unwrap()
            );
        }
        let sr = c.shared_rand_current.unwrap();
        assert_eq!(
            onion_dir::MdDigest(sr.value).to_base64() + "=",
            s["shared_randomness_current_value"].as_str().unwrap()
        );
        // The signed digest equals the independent check's.
        for chk in s["independent_signature_check"].as_array().unwrap() {
            let alg = match chk["method"].as_str().unwrap() {
                "sha1" => DigestAlgorithm::Sha1,
                _ => DigestAlgorithm::Sha256,
            };
            assert_eq!(
                hex::encode_upper(c.signed_digest(alg).unwrap()),
                chk["signed_digest_hex"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn certificates_verify() {
    let stem = stem();
    let certs = certs();
    let sc = stem["key_certificates"].as_array().unwrap();
    assert_eq!(certs.len(), sc.len());
    for (c, s) in certs.iter().zip(sc) {
        assert_eq!(
            c.fingerprint.to_string(),
            s["fingerprint"].as_str().unwrap()
        );
        assert_eq!(c.published.to_string(), s["published"].as_str().unwrap());
        assert_eq!(c.expires.to_string(), s["expires"].as_str().unwrap());
    }
    for n in 0..3 {
        let t = read(&format!("authority_certificate.auth{n}"));
        let c = authcert::UnverifiedAuthCert::parse(&t)
            .unwrap()
            .verify(now())
            .unwrap();
        assert!(certs.contains(&c));
    }
    // Expired at a later time, not yet valid before publication.
    let t = read("authority_certificate.auth0");
    let late = Timestamp::parse_str("2028-01-01 00:00:00").unwrap();
    assert!(authcert::UnverifiedAuthCert::parse(&t)
        .unwrap()
        .verify(late)
        .is_err());
    let early = Timestamp::parse_str("2026-01-01 00:00:00").unwrap();
    assert!(authcert::UnverifiedAuthCert::parse(&t)
        .unwrap()
        .verify(early)
        .is_err());
}

#[test]
fn tampered_certificate_fails() {
    let t = read("authority_certificate.auth1");
    // Change one digit of the published time (inside the signed part).
    let bad = t.replacen("dir-key-published 2026", "dir-key-published 2025", 1);
    assert_ne!(bad, t);
    let c = authcert::UnverifiedAuthCert::parse(&bad).unwrap();
    assert!(c.verify_signatures().is_err());
}

#[test]
fn consensus_signatures_verify() {
    let certs = certs();
    let auths = authorities();
    for file in ["cached-consensus", "cached-microdesc-consensus"] {
        let text = read(file);
        let u = consensus::parse(&text).unwrap();
        let rep = u.check_signatures(&auths, &certs, now());
        assert_eq!(rep.verified.len(), 3, "{file}: {rep:?}");
        assert!(rep.bad.is_empty() && rep.missing_certs.is_empty());
        assert!(u.verify(&auths, &certs, now()).is_ok());
    }
}

#[test]
fn tampered_consensus_fails() {
    let certs = certs();
    let auths = authorities();
    for file in ["cached-consensus", "cached-microdesc-consensus"] {
        let text = read(file);
        let signed_len = consensus::parse(&text).unwrap().peek().signed_len;
        // Flip one byte at a few positions inside the signed part, keeping the
        // document parseable: change a bandwidth digit.
        let pos = text.find("Bandwidth=").unwrap() + "Bandwidth=".len();
        assert!(pos < signed_len);
        let mut bytes = text.clone().into_bytes();
        bytes[pos] = if bytes[pos] == b'9' { b'8' } else { b'9' };
        let bad = String::from_utf8(bytes).unwrap();
        let u = consensus::parse(&bad).unwrap();
        let rep = u.check_signatures(&auths, &certs, now());
        assert!(rep.verified.is_empty(), "{file}");
        assert_eq!(rep.bad.len(), 3);
        assert!(u.verify(&auths, &certs, now()).is_err());
        // The space after the first `directory-signature` is signed too; a
        // byte in a signature object is not.
        let u = consensus::parse(&text).unwrap();
        assert!(u.verify(&auths, &certs, now()).is_ok());
    }
}

#[test]
fn quorum_rules() {
    let certs = certs();
    let text = read("cached-consensus");
    let u = consensus::parse(&text).unwrap();
    // With five configured authorities of which three signed: 3 > 5/2, accepted.
    let mut five = authorities();
    five.push(RsaIdentity([1; 20]));
    five.push(RsaIdentity([2; 20]));
    assert!(u.check_signatures(&five, &certs, now()).quorum());
    // With six configured: 3 is not more than half.
    let mut six = five.clone();
    six.push(RsaIdentity([3; 20]));
    assert!(!u.check_signatures(&six, &certs, now()).quorum());
    // Only two certificates available: 2 of 3 is still a majority.
    assert!(u
        .check_signatures(&authorities(), &certs[..2], now())
        .quorum());
    assert!(!u
        .check_signatures(&authorities(), &certs[..1], now())
        .quorum());
    // Certificates expired at `now`: no quorum.
    let late = Timestamp::parse_str("2028-01-01 00:00:00").unwrap();
    let rep = u.check_signatures(&authorities(), &certs, late);
    assert_eq!(rep.missing_certs.len(), 3);
}

#[test]
fn freshness() {
    use consensus::Freshness::*;
    let text = read("cached-microdesc-consensus");
    let c = consensus::parse(&text).unwrap().assume_verified();
    let va = c.valid_after;
    assert_eq!(c.freshness(va.sub_secs(1)), NotYetValid);
    assert_eq!(c.freshness(va), Live);
    assert!(c.is_fresh(va.add_secs(19)));
    assert!(!c.is_fresh(va.add_secs(20)));
    assert_eq!(c.freshness(va.add_secs(40)), Live);
    assert_eq!(c.freshness(va.add_secs(41)), ReasonablyLive);
    assert_eq!(c.freshness(va.add_secs(40 + 24 * 3600)), ReasonablyLive);
    assert_eq!(c.freshness(va.add_secs(41 + 24 * 3600)), Expired);
    // dir-spec §5.1: fetch the next one between 3/4 of an interval (20 s) after fresh-until
    // and 7/8 of the way from there to valid-until.
    assert_eq!(c.refresh_window(), (va.add_secs(35), va.add_secs(39)));
    // The same from the three times alone; times out of order give an empty window at
    // valid-until.
    assert_eq!(
        consensus::refresh_window(va, c.fresh_until, c.valid_until),
        c.refresh_window()
    );
    let vu = va.add_secs(10);
    assert_eq!(consensus::refresh_window(va, va.add_secs(20), vu), (vu, vu));
}

#[test]
fn microdescs_match_stem_and_consensus() {
    let stem = stem();
    let text = read("cached-microdescs.new");
    let mds = microdesc::parse_many(&text).unwrap();
    let smd = stem["microdescriptors"].as_array().unwrap();
    assert_eq!(mds.len(), smd.len());
    for s in smd {
        let m = mds
            .iter()
            .find(|m| m.digest.to_base64() == s["digest_sha256_b64"].as_str().unwrap())
            .expect("microdescriptor with stem's digest");
        assert_eq!(
            m.digest.to_base64(),
            s["digest_sha256_b64"].as_str().unwrap()
        );
        assert_eq!(
            onion_dir::MdDigest(m.ntor_onion_key).to_base64(),
            s["ntor_onion_key"].as_str().unwrap()
        );
        assert_eq!(
            m.ed25519_id.unwrap().to_base64(),
            s["ed25519_identity"].as_str().unwrap()
        );
        assert_eq!(
            m.tap_onion_key.is_some(),
            s["has_tap_onion_key"].as_bool().unwrap()
        );
        assert_eq!(
            m.ipv4_policy.to_string(),
            s["exit_policy_summary"].as_str().unwrap()
        );
        assert!(m.family.is_empty());
    }
    // Every consensus `m` line has its microdescriptor.
    let ctext = read("cached-microdesc-consensus");
    let c = consensus::parse(&ctext).unwrap().assume_verified();
    for r in &c.relays {
        assert!(
            mds.iter().any(|m| Some(m.digest) == r.md_digest),
            "{}",
            r.nickname
        );
    }
}

#[test]
fn server_descriptors_match_stem_and_verify() {
    use onion_dir::routerdesc;
    let stem = stem();
    let text = read("cached-descriptors.new");
    let descs = routerdesc::parse_many(&text).unwrap();
    let sd = stem["server_descriptors"].as_array().unwrap();
    assert_eq!(descs.len(), sd.len());
    let ns_text = read("cached-consensus");
    let ns = consensus::parse(&ns_text).unwrap().assume_verified();
    let verified: Vec<_> = descs
        .into_iter()
        .map(|u| u.verify(now()).unwrap())
        .collect();
    for s in sd {
        let d = verified
            .iter()
            .find(|d| hex::encode_upper(d.digest) == s["digest_sha1_hex"].as_str().unwrap())
            .expect("descriptor with stem's digest");
        assert_eq!(d.nickname, s["nickname"].as_str().unwrap());
        assert_eq!(
            d.fingerprint.to_string(),
            s["fingerprint"].as_str().unwrap()
        );
        assert_eq!(d.address.to_string(), s["address"].as_str().unwrap());
        assert_eq!(u64::from(d.or_port), s["or_port"].as_u64().unwrap());
        assert_eq!(d.published.to_string(), s["published"].as_str().unwrap());
        assert_eq!(d.platform, s["platform"].as_str());
        assert_eq!(
            hex::encode_upper(d.digest),
            s["digest_sha1_hex"].as_str().unwrap()
        );
        assert_eq!(
            onion_dir::MdDigest(d.ntor_onion_key).to_base64(),
            s["ntor_onion_key"].as_str().unwrap()
        );
        assert_eq!(
            d.master_key.unwrap().to_base64(),
            s["ed25519_master_key"].as_str().unwrap()
        );
        assert_eq!(
            d.exit_policy.to_string(),
            s["exit_policy"].as_str().unwrap()
        );
        assert_eq!(d.bandwidth.average, s["bandwidth_avg"].as_u64().unwrap());
        assert_eq!(d.bandwidth.burst, s["bandwidth_burst"].as_u64().unwrap());
        assert_eq!(
            d.bandwidth.observed,
            s["bandwidth_observed"].as_u64().unwrap()
        );
        // The consensus references exactly the descriptors stem says it does.
        let referenced = ns
            .relays
            .iter()
            .any(|r| r.descriptor_digest == Some(d.digest));
        assert_eq!(referenced, s["referenced_by_consensus"].as_bool().unwrap());
    }
}

#[test]
fn exit_descriptor_policy() {
    use onion_dir::routerdesc;
    let text = read("cached-descriptors.new");
    let descs = routerdesc::parse_many(&text).unwrap();
    let exit = descs
        .iter()
        .find(|d| d.peek().nickname == "exit0")
        .unwrap()
        .peek();
    let lo = "127.0.0.1".parse().unwrap();
    let far = "8.8.8.8".parse().unwrap();
    assert!(exit.exit_policy.allows(lo, 80));
    assert!(!exit.exit_policy.allows(far, 80));
    let relay = descs
        .iter()
        .find(|d| d.peek().nickname == "relay0")
        .unwrap()
        .peek();
    assert!(!relay.exit_policy.allows(lo, 80));
    assert!(!relay.exit_policy.allows_port(80));
}

#[test]
fn tampered_descriptor_fails() {
    use onion_dir::routerdesc;
    let text = read("relay0.server-descriptor");
    assert!(routerdesc::UnverifiedRouterDesc::parse(&text)
        .unwrap()
        .verify(now())
        .is_ok());
    // One byte in the signed part: the uptime.
    let bad = text.replacen("uptime 72", "uptime 73", 1);
    assert_ne!(bad, text);
    assert!(routerdesc::UnverifiedRouterDesc::parse(&bad)
        .unwrap()
        .verify(now())
        .is_err());
    // Certificates expire: far in the future verification fails.
    let late = Timestamp::parse_str("2030-01-01 00:00:00").unwrap();
    assert!(routerdesc::UnverifiedRouterDesc::parse(&text)
        .unwrap()
        .verify(late)
        .is_err());
}

#[test]
fn microdesc_fetch_roundtrip() {
    use onion_dir::http::{DirRequest, ResponseReader};
    use std::io::Write;
    // The client asks for every microdescriptor the consensus names …
    let ctext = read("cached-microdesc-consensus");
    let c = consensus::parse(&ctext).unwrap().assume_verified();
    let wanted: Vec<_> = c.relays.iter().filter_map(|r| r.md_digest).collect();
    let reqs = DirRequest::microdescs(&wanted);
    assert_eq!(reqs.len(), 1);
    let req = String::from_utf8(reqs[0].to_bytes()).unwrap();
    assert!(req.starts_with("GET /tor/micro/d/") && req.ends_with("\r\n\r\n"));
    // … a cache answers with the documents (no annotations), deflated …
    let body: String = read("cached-microdescs.new")
        .lines()
        .filter(|l| !l.starts_with('@'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(body.as_bytes()).unwrap();
    let mut resp =
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: deflate\r\n\r\n"
            .to_vec();
    resp.extend(z.finish().unwrap());
    let mut rd = ResponseReader::new(1 << 20);
    for chunk in resp.chunks(100) {
        rd.handle_bytes(chunk).unwrap();
    }
    let got = rd.finish().unwrap();
    // … and every digest requested arrives, matching its `m` line.
    let mds = microdesc::parse_many(&got.body).unwrap();
    let mut have: Vec<_> = mds.iter().map(|m| m.digest).collect();
    have.sort();
    let mut want = wanted.clone();
    want.sort();
    assert_eq!(have, want);
}
