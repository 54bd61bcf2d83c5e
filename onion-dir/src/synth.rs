//! Synthetic directory documents for tests and benchmarks: a microdescriptor
//! consensus of any size together with the microdescriptors it references, so
//! that parsers and path selection can be measured on a network larger than
//! today's (the public network may grow tenfold: 70,000 relays).
//!
//! The documents follow dir-spec §3.3 and §3.4.1 syntactically; they are
//! deterministic functions of `(n, seed)`. Their signature is random bytes:
//! they are meant for [`crate::consensus::UnverifiedConsensus::assume_verified`].

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::encode::base64_unpadded;

/// A small deterministic generator (SplitMix64); not for cryptography.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for c in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        out
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A synthetic network: the consensus text and the microdescriptor batch.
#[derive(Debug, Clone)]
pub struct SynthNetwork {
    /// A microdescriptor-flavoured consensus (unsigned: random signature bytes).
    pub consensus: String,
    /// The microdescriptors referenced by the consensus, concatenated.
    pub microdescs: String,
}

/// Generate a network of `n` relays. About 30% carry Guard, 15% Exit, 5% both;
/// bandwidths are heavy-tailed; one relay in ten belongs to a family of 3.
pub fn network(n: usize, seed: u64) -> SynthNetwork {
    let mut rng = Mix(seed);
    let mut ids: Vec<[u8; 20]> = (0..n).map(|_| rng.bytes::<20>()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut mds = String::with_capacity(n * 400);
    let mut digests = Vec::with_capacity(ids.len());
    for (i, _) in ids.iter().enumerate() {
        let start = mds.len();
        mds.push_str("onion-key\n-----BEGIN RSA PUBLIC KEY-----\n");
        let key: [u8; 140] = rng.bytes();
        let b64 = base64_unpadded(&key);
        for chunk in b64.as_bytes().chunks(64) {
            mds.push_str(std::str::from_utf8(chunk).unwrap_or(""));
            mds.push('\n');
        }
        mds.push_str("-----END RSA PUBLIC KEY-----\n");
        let _ = writeln!(
            mds,
            "ntor-onion-key {}",
            base64_unpadded(&rng.bytes::<32>())
        );
        if i % 10 < 3 && ids.len() >= 3 {
            let base = i - i % 10;
            let fam: Vec<String> = (base..base + 3)
                .filter_map(|j| ids.get(j))
                .map(|id| format!("${}", hex::encode_upper(id)))
                .collect();
            let _ = writeln!(mds, "family {}", fam.join(" "));
        }
        if is_exit(i) {
            mds.push_str("p accept 20-23,43,53,79-81,88,110,143,194,220,389,443,464-465,531,543-544,554,563,587,636,706,749,853,873,902-904,981,989-995,1194,1220,1293,1500,1533,1677,1723,1755,1863,2082-2083,2086-2087,2095-2096,2102-2104,3128,3389,3690,4321,4643,5050,5190,5222-5223,5228,5900,6660-6669,6679,6697,8000,8008,8074,8080,8082,8087-8088,8232-8233,8332-8333,8443,8888,9418,9999-10000,11371,19294,19638,50002,64738\n");
        }
        let _ = writeln!(mds, "id ed25519 {}", base64_unpadded(&rng.bytes::<32>()));
        let body = mds.get(start..).unwrap_or("");
        digests.push(base64_unpadded(&Sha256::digest(body.as_bytes())));
    }

    let mut c = String::with_capacity(ids.len() * 320 + 4096);
    c.push_str(
        "network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 32\n\
valid-after 2022-11-19 10:00:00\nfresh-until 2022-11-19 11:00:00\nvalid-until 2022-11-19 13:00:00\n\
voting-delay 300 300\nclient-versions 0.4.7.10\nserver-versions 0.4.7.10\n\
known-flags Authority BadExit Exit Fast Guard HSDir MiddleOnly NoEdConsensus Running Stable StaleDesc Sybil V2Dir Valid\n\
recommended-client-protocols Cons=2 Desc=2 DirCache=2 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 Microdesc=2 Relay=2\n\
recommended-relay-protocols Cons=2 Desc=2 DirCache=2 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 LinkAuth=3 Microdesc=2 Relay=2\n\
required-client-protocols Cons=2 Desc=2 Link=4 Microdesc=2 Relay=2\n\
required-relay-protocols Cons=2 Desc=2 DirCache=2 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 LinkAuth=3 Microdesc=2 Relay=2\n\
params bwweightscale=10000 cbttestfreq=10 circwindow=1000\n",
    );
    for a in 0..9u8 {
        let _ = writeln!(
            c,
            "dir-source auth{a} {} 10.0.0.{a} 10.0.0.{a} 80 443\ncontact auth{a}@example.invalid\nvote-digest {}",
            hex::encode_upper([a; 20]),
            hex::encode_upper([a.wrapping_add(100); 20])
        );
    }
    for (i, (id, digest)) in ids.iter().zip(&digests).enumerate() {
        let ip = rng.next() as u32;
        let _ = writeln!(
            c,
            "r relay{i} {} 2038-01-01 00:00:00 {}.{}.{}.{} {} 0",
            base64_unpadded(id),
            (ip >> 24) % 223 + 1,
            (ip >> 16) & 255,
            (ip >> 8) & 255,
            ip & 255,
            9000 + rng.below(1000)
        );
        if i % 3 == 0 {
            let _ = writeln!(c, "a [2001:db8::{:x}]:9001", i & 0xffff);
        }
        let _ = writeln!(c, "m {digest}");
        let mut flags = String::from("s");
        if is_exit(i) {
            flags.push_str(" Exit");
        }
        flags.push_str(" Fast");
        if is_guard(i) {
            flags.push_str(" Guard");
        }
        flags.push_str(" HSDir Running Stable V2Dir Valid\n");
        c.push_str(&flags);
        c.push_str("v Tor 0.4.7.10\npr Cons=1-2 Desc=1-2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=1-5 LinkAuth=1,3 Microdesc=1-2 Padding=2 Relay=1-4\n");
        let bw = 1 + rng.below(100) * rng.below(100) * rng.below(20);
        let _ = writeln!(c, "w Bandwidth={bw}");
    }
    c.push_str("directory-footer\nbandwidth-weights Wbd=0 Wbe=0 Wbg=4114 Wbm=10000 Wdb=10000 Web=10000 Wed=10000 Wee=10000 Weg=10000 Wem=10000 Wgb=10000 Wgd=0 Wgg=5886 Wgm=5886 Wmb=10000 Wmd=0 Wme=0 Wmg=4114 Wmm=10000\n");
    for a in 0..9u8 {
        let _ = writeln!(
            c,
            "directory-signature sha256 {} {}\n-----BEGIN SIGNATURE-----",
            hex::encode_upper([a; 20]),
            hex::encode_upper([a.wrapping_add(50); 20])
        );
        let sig: [u8; 256] = rng.bytes();
        for chunk in base64_unpadded(&sig).as_bytes().chunks(64) {
            c.push_str(std::str::from_utf8(chunk).unwrap_or(""));
            c.push('\n');
        }
        c.push_str("-----END SIGNATURE-----\n");
    }
    SynthNetwork {
        consensus: c,
        microdescs: mds,
    }
}

fn is_exit(i: usize) -> bool {
    i % 20 < 3
}

fn is_guard(i: usize) -> bool {
    i % 10 >= 1 && i % 10 <= 3 || i % 20 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_network_parses_and_matches() {
        let net = network(500, 7);
        let c = crate::consensus::parse(&net.consensus)
            .unwrap()
            .assume_verified();
        assert_eq!(c.relays.len(), 500);
        let mds = crate::microdesc::parse_many(&net.microdescs).unwrap();
        assert_eq!(mds.len(), 500);
        for (r, m) in c.relays.iter().zip(&mds) {
            assert_eq!(r.md_digest, Some(m.digest));
        }
        assert!(mds.iter().any(|m| m.family.ids().count() == 3));
        assert!(c.relays.iter().any(|r| r
            .flags
            .contains(crate::RelayFlags::EXIT | crate::RelayFlags::GUARD)));
    }
}
