//! Full-size documents of the public Tor network (November 2022, 6,088 relays)
//! parse completely; the microdescriptors present match their `m` lines.

use std::io::Read;

use onion_dir::consensus::{self, Flavor};
use onion_dir::microdesc;

fn read_gz(name: &str) -> String {
    let p = format!("{}/testdata/real/{name}.gz", env!("CARGO_MANIFEST_DIR"));
    let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut s = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn real_microdesc_consensus() {
    let text = read_gz("real-microdesc-consensus-2022-11-19.txt");
    let c = consensus::parse(&text).unwrap().assume_verified();
    assert_eq!(c.flavor, Flavor::Microdesc);
    assert_eq!(c.relays.len(), 6088);
    assert_eq!(c.relays.len(), text.matches("\nr ").count());
    assert_eq!(c.consensus_method, Some(32));
    assert_eq!(c.valid_after.to_string(), "2022-11-19 10:00:00");
    // dir-spec §5.1's own example: valid from 10:00, fresh until 11:00, valid until 13:00,
    // so the next one is fetched between 11:45 and 12:50 (7/8 of the remaining 75 minutes).
    let (start, end) = c.refresh_window();
    assert_eq!(start.to_string(), "2022-11-19 11:45:00");
    assert_eq!(end.to_string(), "2022-11-19 12:50:37");
    assert_eq!(c.authorities.len(), text.matches("\ndir-source ").count());
    assert_eq!(
        c.signatures.len(),
        text.matches("\ndirectory-signature ").count()
    );
    assert!(c.relays.iter().all(|r| r.md_digest.is_some()));
    // Identities strictly ascending, as dir-spec §3.4.1 requires.
    assert!(c.relays.windows(2).all(|w| w[0].identity < w[1].identity));
    let ipv6 = c.relays.iter().filter(|r| r.ipv6.is_some()).count();
    assert!(ipv6 > 0 && ipv6 <= text.matches("\na [").count());
    assert_eq!(c.bandwidth_weights.get("Wgg").map(|v| v > 0), Some(true));
    let exits = c
        .relays
        .iter()
        .filter(|r| r.flags.contains(onion_dir::RelayFlags::EXIT))
        .count();
    assert_eq!(
        exits,
        text.lines()
            .filter(|l| l.starts_with("s ") && l.contains(" Exit"))
            .count()
    );
}

#[test]
fn real_ns_consensus() {
    let text = read_gz("real-ns-consensus-2022-11-19.txt");
    let c = consensus::parse(&text).unwrap().assume_verified();
    assert_eq!(c.flavor, Flavor::Ns);
    assert_eq!(c.relays.len(), 6088);
    assert!(c
        .relays
        .iter()
        .all(|r| r.descriptor_digest.is_some() && r.policy.is_some()));
    let web = c
        .relays
        .iter()
        .filter(|r| r.policy.as_ref().is_some_and(|p| p.allows_port(443)))
        .count();
    assert!(web > 1000, "{web}");
    // Both flavours list the same relays in the same order.
    let md_text = read_gz("real-microdesc-consensus-2022-11-19.txt");
    let md = consensus::parse(&md_text).unwrap().assume_verified();
    for (a, b) in c.relays.iter().zip(&md.relays) {
        assert_eq!(
            (a.identity, a.nickname, a.flags),
            (b.identity, b.nickname, b.flags)
        );
    }
}

#[test]
fn real_microdescs() {
    let text = read_gz("real-cached-microdescs-2022-11-19.txt");
    let mds = microdesc::parse_many(&text).unwrap();
    assert_eq!(mds.len(), 1788);
    let c_text = read_gz("real-microdesc-consensus-2022-11-19.txt");
    let c = consensus::parse(&c_text).unwrap().assume_verified();
    let digests: std::collections::HashSet<_> =
        c.relays.iter().filter_map(|r| r.md_digest).collect();
    let matched = mds.iter().filter(|m| digests.contains(&m.digest)).count();
    // A partial cache of that time: a share of them is referenced by this consensus.
    assert!(matched > 0, "{matched}");
    let fam = mds.iter().filter(|m| !m.family.is_empty()).count();
    assert_eq!(fam, text.matches("\nfamily ").count());
    // Exits by summary: every `p accept` list naming 443 exactly.
    let web = mds.iter().filter(|m| m.allows_port(false, 443)).count();
    let accept_443 = text
        .lines()
        .filter(|l| {
            l.starts_with("p accept ")
                && l[9..].split(',').any(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    a.parse::<u16>().unwrap() <= 443 && 443 <= b.parse::<u16>().unwrap()
                })
        })
        .count();
    let reject_not_443 = text
        .lines()
        .filter(|l| {
            l.starts_with("p reject ")
                && !l[9..].split(',').any(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    a.parse::<u16>().unwrap() <= 443 && 443 <= b.parse::<u16>().unwrap()
                })
        })
        .count();
    assert_eq!(web, accept_443 + reject_not_443);
    assert!(web > 100, "{web}");
}
