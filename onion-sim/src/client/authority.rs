//! Simulated directory authorities and the documents they publish, signed for real.
//!
//! Each [`DirAuthority`] holds an RSA identity key (whose SHA-1 is its v3 identity) and a
//! medium-term RSA signing key. Its key certificate (dir-spec §3.1: the identity key signs
//! the certificate, the signing key cross-certifies the identity key's digest) and its
//! signature on every consensus (dir-spec §3.4.1: PKCS#1 v1.5 over the bare SHA-256 of the
//! signed part) verify exactly as the real authorities' do, so a client checks them with the
//! same code it runs against the public network. [`Publication`] is one consensus of the
//! microdescriptor flavour (dir-spec §3.4.1, §3.9) with the microdescriptors it lists
//! (dir-spec §3.3); [`diff`] makes a consensus diff between two of them (dir-spec §4.5.1 and
//! appendix E).

use std::fmt::Write;
use std::net::SocketAddrV4;

use base64::Engine;
use rand_chacha::ChaCha20Rng;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use sha3::Sha3_256;

use onion_crypto::rsa::RsaKeypair;
use onion_dir::{Ed25519Identity, MdDigest, RsaIdentity, Timestamp};

use crate::circuit::SimError;

/// The protocol versions every simulated relay announces (tor-spec §9): what C tor 0.4.9
/// relays list, so that clients use ntor-v3, congestion control (FlowCtrl=2) and the
/// current onion-service versions with them.
pub const RELAY_PROTOCOLS: &str = "Conflux=1 Cons=1-2 Desc=1-4 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=3-5 LinkAuth=3 Microdesc=1-3 Padding=2 Relay=2-6";

/// How long a consensus is fresh (dir-spec §3.4.1 `fresh-until`): one hour, as on the
/// public network.
pub const FRESH: u64 = 3600;
/// How long a consensus is valid (`valid-until`): three hours.
pub const VALID: u64 = 3 * 3600;

/// A directory authority's keys.
pub struct DirAuthority {
    /// Its nickname.
    pub name: String,
    /// The long-term identity key; its SHA-1 is the v3 identity clients are configured with.
    pub identity: RsaKeypair,
    /// The medium-term key that signs consensuses.
    pub signing: RsaKeypair,
}

impl core::fmt::Debug for DirAuthority {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DirAuthority")
            .field("name", &self.name)
            .field("v3ident", &self.v3ident())
            .finish_non_exhaustive()
    }
}

/// Unpadded base64, as directory documents write keys and digests.
fn base64_unpadded(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(data)
}

fn setup(e: impl core::fmt::Display) -> SimError {
    SimError::Setup(e.to_string())
}

/// A PEM object (`-----BEGIN {label}-----`, base64 in 64-character lines) for `der`.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(core::str::from_utf8(chunk).unwrap_or(""));
        s.push('\n');
    }
    let _ = writeln!(s, "-----END {label}-----");
    s
}

impl DirAuthority {
    /// An authority named `name` with fresh 1024-bit keys (the smallest dir-spec §3.1
    /// accepts; small keys keep the simulation fast).
    pub fn generate(name: &str, rng: &mut ChaCha20Rng) -> Result<DirAuthority, SimError> {
        Ok(DirAuthority {
            name: name.to_owned(),
            identity: RsaKeypair::generate(rng, 1024).map_err(setup)?,
            signing: RsaKeypair::generate(rng, 1024).map_err(setup)?,
        })
    }

    /// The v3 identity: SHA-1 of the identity key's DER.
    pub fn v3ident(&self) -> RsaIdentity {
        self.identity.public().identity()
    }

    /// SHA-1 of the signing key's DER (the `signing-key-digest` of its signatures).
    pub fn signing_key_digest(&self) -> RsaIdentity {
        self.signing.public().identity()
    }

    /// The key certificate (dir-spec §3.1), valid from `published` to `expires`.
    pub fn certificate(
        &self,
        published: Timestamp,
        expires: Timestamp,
        rng: &mut ChaCha20Rng,
    ) -> Result<String, SimError> {
        let id_der = self.identity.public().to_pkcs1_der();
        let sk_der = self.signing.public().to_pkcs1_der();
        let mut s = String::new();
        let _ = writeln!(s, "dir-key-certificate-version 3");
        let _ = writeln!(s, "fingerprint {}", self.v3ident());
        let _ = writeln!(s, "dir-key-published {published}");
        let _ = writeln!(s, "dir-key-expires {expires}");
        s.push_str("dir-identity-key\n");
        s.push_str(&pem("RSA PUBLIC KEY", &id_der));
        s.push_str("dir-signing-key\n");
        s.push_str(&pem("RSA PUBLIC KEY", &sk_der));
        // The signing key signs the SHA-1 of the identity key (bare digest).
        let id_digest: [u8; 20] = Sha1::digest(&id_der).into();
        let cross = self
            .signing
            .sign_unprefixed(rng, &id_digest)
            .map_err(setup)?;
        s.push_str("dir-key-crosscert\n");
        s.push_str(&pem("ID SIGNATURE", &cross));
        // The identity key signs everything through the certification keyword's line.
        s.push_str("dir-key-certification\n");
        let digest: [u8; 20] = Sha1::digest(s.as_bytes()).into();
        let sig = self.identity.sign_unprefixed(rng, &digest).map_err(setup)?;
        s.push_str(&pem("SIGNATURE", &sig));
        Ok(s)
    }
}

/// What the consensus says about one relay.
#[derive(Debug, Clone)]
pub struct RelayEntry {
    /// Nickname.
    pub nickname: String,
    /// RSA identity (SHA-1 of its RSA identity key).
    pub rsa_id: RsaIdentity,
    /// Ed25519 identity (in its microdescriptor).
    pub ed_id: Ed25519Identity,
    /// Curve25519 ntor onion key (in its microdescriptor).
    pub ntor_key: [u8; 32],
    /// IPv4 address and ORPort.
    pub addr: SocketAddrV4,
    /// Flags, as consensus keywords (sorted on output).
    pub flags: Vec<&'static str>,
    /// Exit policy summary (`p` line of the microdescriptor, dir-spec §3.3), e.g.
    /// `accept 80,443`; `None` for a relay that exits nowhere.
    pub exit_policy: Option<String>,
    /// Consensus weight.
    pub bandwidth: u32,
}

impl RelayEntry {
    /// The relay's microdescriptor (dir-spec §3.3).
    pub fn microdesc(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "ntor-onion-key {}", base64_unpadded(&self.ntor_key));
        let _ = writeln!(s, "id ed25519 {}", base64_unpadded(&self.ed_id.0));
        if let Some(p) = &self.exit_policy {
            let _ = writeln!(s, "p {p}");
        }
        s
    }
}

/// One signed consensus and the microdescriptors it lists.
#[derive(Debug, Clone)]
pub struct Publication {
    /// `valid-after`.
    pub valid_after: Timestamp,
    /// The consensus text (microdescriptor flavour), signed by every authority.
    pub consensus: String,
    /// Every listed relay's microdescriptor, with its digest.
    pub microdescs: Vec<(MdDigest, String)>,
}

impl Publication {
    /// SHA3-256 of the consensus's signed part, lowercase hex: the name a client gives it
    /// in `X-Or-Diff-From-Consensus` (dir-spec §4.5.2).
    pub fn digest(&self) -> Option<String> {
        onion_dir::consdiff::signed_part_digest(&self.consensus)
    }
}

/// Where an authority says it is (`dir-source`, dir-spec §3.4.1).
#[derive(Debug, Clone, Copy)]
pub struct AuthoritySource<'a> {
    /// Its keys.
    pub authority: &'a DirAuthority,
    /// Its relay's address (ORPort).
    pub addr: SocketAddrV4,
}

/// A microdescriptor consensus valid from `valid_after` listing `relays` (in any order:
/// entries are sorted by identity as dir-spec §3.4.1 requires), signed by every authority
/// of `sources`.
pub fn publish(
    sources: &[AuthoritySource<'_>],
    relays: &[RelayEntry],
    valid_after: Timestamp,
    rng: &mut ChaCha20Rng,
) -> Result<Publication, SimError> {
    let mut s = String::with_capacity(2048 + relays.len() * 300);
    s.push_str("network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 35\n");
    let _ = writeln!(s, "valid-after {valid_after}");
    let _ = writeln!(s, "fresh-until {}", Timestamp(valid_after.0 + FRESH));
    let _ = writeln!(s, "valid-until {}", Timestamp(valid_after.0 + VALID));
    s.push_str("voting-delay 300 300\nclient-versions 0.4.9.11\nserver-versions 0.4.9.11\n");
    s.push_str("known-flags Authority Exit Fast Guard HSDir Running Stable V2Dir Valid\n");
    let _ = writeln!(s, "recommended-client-protocols Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 Microdesc=2 Relay=2-4");
    let _ = writeln!(s, "recommended-relay-protocols Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=2 Link=4-5 LinkAuth=3 Microdesc=2 Relay=2-4");
    let _ = writeln!(
        s,
        "required-client-protocols Cons=2 Desc=2 FlowCtrl=1 Link=4 Microdesc=2 Relay=2"
    );
    let _ = writeln!(s, "required-relay-protocols Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=2 Link=4-5 LinkAuth=3 Microdesc=2 Relay=2-4");
    // The shared random values (dir-spec §3.4.1, srv-spec): fixed per consensus period
    // here, as the onion-service ring (rend-spec-v3 §2.2.3) only needs both sides to agree.
    let srv = |n: u64| {
        let d: [u8; 32] = Sha256::digest(format!("srv {n}").as_bytes()).into();
        base64::engine::general_purpose::STANDARD.encode(d)
    };
    let day = valid_after.0 / 86_400;
    let _ = writeln!(s, "shared-rand-previous-value 9 {}", srv(day));
    let _ = writeln!(s, "shared-rand-current-value 9 {}", srv(day + 1));
    let mut srcs: Vec<&AuthoritySource<'_>> = sources.iter().collect();
    srcs.sort_by_key(|a| a.authority.v3ident().0);
    for a in &srcs {
        let ip = a.addr.ip();
        let _ = writeln!(
            s,
            "dir-source {} {} {ip} {ip} 0 {}",
            a.authority.name,
            a.authority.v3ident(),
            a.addr.port()
        );
        let _ = writeln!(s, "contact {}@sim.invalid", a.authority.name);
        let _ = writeln!(s, "vote-digest {}", a.authority.signing_key_digest());
    }
    let mut entries: Vec<&RelayEntry> = relays.iter().collect();
    entries.sort_by_key(|r| r.rsa_id.0);
    let mut microdescs = Vec::with_capacity(entries.len());
    for r in entries {
        let md = r.microdesc();
        let digest = onion_dir::microdesc::parse_one(&md)
            .map_err(|e| SimError::Setup(format!("microdescriptor of {}: {e}", r.nickname)))?
            .digest;
        let mut flags = r.flags.clone();
        flags.sort_unstable();
        flags.dedup();
        let _ = writeln!(
            s,
            "r {} {} 2038-01-01 00:00:00 {} {} 0",
            r.nickname,
            base64_unpadded(&r.rsa_id.0),
            r.addr.ip(),
            r.addr.port()
        );
        let _ = writeln!(s, "m {}", digest.to_base64());
        let _ = writeln!(s, "s {}", flags.join(" "));
        s.push_str("v Tor 0.4.9.11\n");
        let _ = writeln!(s, "pr {RELAY_PROTOCOLS}");
        let _ = writeln!(s, "w Bandwidth={}", r.bandwidth);
        microdescs.push((digest, md));
    }
    s.push_str("directory-footer\n");
    s.push_str("bandwidth-weights Wbd=3333 Wbe=0 Wbg=0 Wbm=10000 Wdb=10000 Web=10000 Wed=3333 Wee=10000 Weg=3333 Wem=10000 Wgb=10000 Wgd=3333 Wgg=10000 Wgm=10000 Wmb=10000 Wmd=3333 Wme=0 Wmg=0 Wmm=10000\n");
    // dir-spec §3.4.1: the signed part runs through the space after the first
    // `directory-signature` keyword; every authority signs the same digest.
    let mut sigs: Vec<(String, Vec<u8>)> = Vec::new();
    if srcs.is_empty() {
        return Err(setup("no authorities"));
    }
    let head_of = |a: &DirAuthority| format!("sha256 {} {}\n", a.v3ident(), a.signing_key_digest());
    let mut signed = s.clone();
    signed.push_str("directory-signature ");
    let digest: [u8; 32] = Sha256::digest(signed.as_bytes()).into();
    for a in &srcs {
        let sig = a
            .authority
            .signing
            .sign_unprefixed(rng, &digest)
            .map_err(setup)?;
        sigs.push((head_of(a.authority), sig));
    }
    for (head, sig) in sigs {
        s.push_str("directory-signature ");
        s.push_str(&head);
        s.push_str(&pem("SIGNATURE", &sig));
    }
    Ok(Publication {
        valid_after,
        consensus: s,
        microdescs,
    })
}

/// Largest base × target line product [`diff`] compares line by line; beyond it the diff
/// replaces everything after the common prefix and before the common suffix in one block.
const MAX_LCS_CELLS: usize = 4_000_000;

/// A consensus diff (dir-spec §4.5.1, appendix E) turning `base` into `target`: the
/// version line, the hash line (SHA3-256 of base's signed part, of the whole target), then
/// ed commands (`d`, `c`, `a`) from the last line up, found with a longest common
/// subsequence of lines. `None` if `base` has no signed part.
pub fn diff(base: &str, target: &str) -> Option<String> {
    let from = onion_dir::consdiff::signed_part_digest(base)?;
    let to = hex::encode(Sha3_256::digest(target.as_bytes()));
    let a: Vec<&str> = base.lines().collect();
    let b: Vec<&str> = target.lines().collect();
    // Common prefix and suffix, then a longest common subsequence of what is left.
    let mut pre = 0;
    while pre < a.len() && pre < b.len() && a[pre] == b[pre] {
        pre += 1;
    }
    let mut suf = 0;
    while suf < a.len() - pre && suf < b.len() - pre && a[a.len() - 1 - suf] == b[b.len() - 1 - suf]
    {
        suf += 1;
    }
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    // Matched line pairs (indices into a and b), in order.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    if am.len().saturating_mul(bm.len()) <= MAX_LCS_CELLS {
        let (n, m) = (am.len(), bm.len());
        let mut t = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                t[i * (m + 1) + j] = if am[i] == bm[j] {
                    t[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if am[i] == bm[j] {
                pairs.push((pre + i, pre + j));
                i += 1;
                j += 1;
            } else if t[(i + 1) * (m + 1) + j] >= t[i * (m + 1) + j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    // Hunks between matches: base lines [ai, aj) become target lines [bi, bj).
    let mut hunks: Vec<(usize, usize, usize, usize)> = Vec::new();
    let (mut ai, mut bi) = (pre, pre);
    for &(pa, pb) in pairs
        .iter()
        .chain(std::iter::once(&(a.len() - suf, b.len() - suf)))
    {
        if pa > ai || pb > bi {
            hunks.push((ai, pa, bi, pb));
        }
        ai = pa + 1;
        bi = pb + 1;
    }
    let mut out = format!("network-status-diff-version 1\nhash {from} {to}\n");
    for &(ai, aj, bi, bj) in hunks.iter().rev() {
        // Line numbers are 1-based in the base.
        let range = if aj - ai == 1 {
            format!("{}", ai + 1)
        } else {
            format!("{},{}", ai + 1, aj)
        };
        if bj == bi {
            let _ = writeln!(out, "{range}d");
            continue;
        }
        if aj == ai {
            let _ = writeln!(out, "{ai}a");
        } else {
            let _ = writeln!(out, "{range}c");
        }
        for l in &b[bi..bj] {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str(".\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn entry(i: u8, exit: bool) -> RelayEntry {
        RelayEntry {
            nickname: format!("relay{i}"),
            rsa_id: RsaIdentity([i; 20]),
            ed_id: Ed25519Identity([i; 32]),
            ntor_key: [i.wrapping_add(1); 32],
            addr: SocketAddrV4::new(std::net::Ipv4Addr::new(10, i, 0, 1), 9001),
            flags: vec!["Fast", "Running", "Valid", "Guard", "Stable", "V2Dir"],
            exit_policy: exit.then(|| "accept 80,443".to_owned()),
            bandwidth: 1000,
        }
    }

    /// The certificates and the consensus verify with onion-dir's checks, and a diff
    /// between two consensuses applies to give the second exactly.
    #[test]
    fn documents_verify_and_diffs_apply() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let auths: Vec<DirAuthority> = (0..3)
            .map(|i| DirAuthority::generate(&format!("auth{i}"), &mut rng).unwrap())
            .collect();
        let va = Timestamp(1_780_000_000 - 1_780_000_000 % 3600);
        let certs: Vec<String> = auths
            .iter()
            .map(|a| {
                a.certificate(
                    Timestamp(va.0 - 86400),
                    Timestamp(va.0 + 86400 * 365),
                    &mut rng,
                )
                .unwrap()
            })
            .collect();
        let all = certs.concat();
        let parsed = onion_dir::authcert::parse_many(&all).unwrap();
        let verified: Vec<onion_dir::authcert::AuthCert> =
            parsed.into_iter().map(|c| c.verify(va).unwrap()).collect();
        let sources: Vec<AuthoritySource<'_>> = auths
            .iter()
            .enumerate()
            .map(|(i, a)| AuthoritySource {
                authority: a,
                addr: SocketAddrV4::new(std::net::Ipv4Addr::new(10, 200, i as u8, 1), 9001),
            })
            .collect();
        let relays: Vec<RelayEntry> = (1..=6).map(|i| entry(i, i > 4)).collect();
        let p1 = publish(&sources, &relays, va, &mut rng).unwrap();
        let ids: Vec<RsaIdentity> = auths.iter().map(DirAuthority::v3ident).collect();
        let c = onion_dir::consensus::UnverifiedConsensus::parse(&p1.consensus).unwrap();
        let rep = c.check_signatures(&ids, &verified, va);
        assert_eq!(rep.verified.len(), 3, "{rep:?}");
        assert!(c.verify(&ids, &verified, va).is_ok());
        // Microdescriptor digests are the ones the consensus lists.
        for (d, md) in &p1.microdescs {
            assert_eq!(onion_dir::microdesc::parse_one(md).unwrap().digest, *d);
            assert!(p1.consensus.contains(&format!("m {}\n", d.to_base64())));
        }
        // One relay leaves, one joins: the diff turns p1 into p2.
        let mut relays2 = relays.clone();
        relays2.remove(2);
        relays2.push(entry(9, true));
        let p2 = publish(&sources, &relays2, Timestamp(va.0 + 3600), &mut rng).unwrap();
        let d = diff(&p1.consensus, &p2.consensus).unwrap();
        assert!(onion_dir::consdiff::is_diff(&d));
        assert!(
            d.len() < p2.consensus.len(),
            "{} vs {}",
            d.len(),
            p2.consensus.len()
        );
        assert_eq!(
            onion_dir::consdiff::apply(&p1.consensus, &d).unwrap(),
            p2.consensus
        );
        // And the other way round, and from a document to itself.
        let back = diff(&p2.consensus, &p1.consensus).unwrap();
        assert_eq!(
            onion_dir::consdiff::apply(&p2.consensus, &back).unwrap(),
            p1.consensus
        );
        let same = diff(&p1.consensus, &p1.consensus).unwrap();
        assert_eq!(
            onion_dir::consdiff::apply(&p1.consensus, &same).unwrap(),
            p1.consensus
        );
    }
}
