//! What a directory cache fetches and holds beside the consensus: the microdescriptors
//! the microdescriptor consensus lists and the server descriptors the `ns` consensus
//! lists (dir-spec §4 "Directory caches" and §5: a cache fetches every descriptor the
//! consensus lists, from the authorities, and serves them).
//!
//! [`DescriptorStore`] is told the verified consensuses ([`DescriptorStore::set_consensus`]),
//! says which documents are missing, takes fetched batches and keeps only the documents
//! whose digest the consensus lists (a microdescriptor's SHA-256 is its `m` line, dir-spec
//! §3.3; a server descriptor's SHA-1 of its signed part is its `r` line's digest, §3.4.1):
//! an answer that is not what was asked for is dropped, so the cache serves only what the
//! signed consensus vouches for. [`DescriptorStore::fill`] puts what it holds into the
//! [`DirDocuments`] given to [`crate::Relay::set_directory_documents`].
//!
//! Bounds: at most [`DescriptorStore::max_bytes`] bytes of documents (reaction: a document
//! beyond it is not kept and counted in [`Added::over_limit`]; clients get 404 for it and
//! ask another cache), and only what the current consensuses list (documents no longer
//! listed are dropped when a new consensus comes).

use std::collections::{HashMap, HashSet};

use onion_crypto::RsaIdentity;
use onion_dir::consensus::{Consensus, Flavor};
use onion_dir::MdDigest;

use crate::dir::{DirDocuments, ServerDescriptor};

/// Default bound of the bytes held: 64 MiB, several times what today's network's
/// microdescriptors (about 10 000 of 500 bytes) and server descriptors (2-3 KB each)
/// take together.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// What one batch given to [`DescriptorStore::add_microdescs`] or
/// [`DescriptorStore::add_server_descriptors`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Added {
    /// Documents kept (listed, not held before, within the bound).
    pub kept: usize,
    /// Documents the consensus does not list (or already held): dropped.
    pub unlisted: usize,
    /// Listed documents dropped because the store was full.
    pub over_limit: usize,
    /// Whether (part of) the batch did not parse.
    pub malformed: bool,
}

/// The microdescriptors and server descriptors a directory cache holds, checked against
/// the consensus digests.
#[derive(Debug, Clone)]
pub struct DescriptorStore {
    /// Digests listed by the current microdescriptor consensus.
    listed_md: HashSet<[u8; 32]>,
    /// Descriptor digests listed by the current `ns` consensus, with their relay.
    listed_desc: HashMap<[u8; 20], RsaIdentity>,
    micro: HashMap<[u8; 32], Vec<u8>>,
    descs: HashMap<[u8; 20], ServerDescriptor>,
    bytes: usize,
    max_bytes: usize,
}

impl Default for DescriptorStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

impl DescriptorStore {
    /// An empty store holding at most `max_bytes` bytes of documents.
    pub fn new(max_bytes: usize) -> Self {
        DescriptorStore {
            listed_md: HashSet::new(),
            listed_desc: HashMap::new(),
            micro: HashMap::new(),
            descs: HashMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The bound given to [`DescriptorStore::new`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes of documents held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Microdescriptors held.
    pub fn n_microdescs(&self) -> usize {
        self.micro.len()
    }

    /// Server descriptors held.
    pub fn n_server_descriptors(&self) -> usize {
        self.descs.len()
    }

    /// A newly verified consensus (either flavour; the caller checked its signatures):
    /// from now on the documents it lists are wanted, and the held ones of its kind it
    /// no longer lists are dropped.
    pub fn set_consensus(&mut self, consensus: &Consensus<'_>) {
        match consensus.flavor {
            Flavor::Microdesc => {
                self.listed_md = consensus
                    .relays
                    .iter()
                    .filter_map(|r| r.md_digest.map(|d| d.0))
                    .collect();
                let listed = &self.listed_md;
                let mut freed = 0;
                self.micro.retain(|d, t| {
                    let keep = listed.contains(d);
                    if !keep {
                        freed += t.len();
                    }
                    keep
                });
                self.bytes -= freed;
            }
            Flavor::Ns => {
                self.listed_desc = consensus
                    .relays
                    .iter()
                    .filter_map(|r| r.descriptor_digest.map(|d| (d, r.identity)))
                    .collect();
                let listed = &self.listed_desc;
                let mut freed = 0;
                self.descs.retain(|d, s| {
                    let keep = listed.get(d) == Some(&s.identity);
                    if !keep {
                        freed += s.text.len();
                    }
                    keep
                });
                self.bytes -= freed;
            }
        }
    }

    /// The microdescriptors listed and not held, sorted (fetch them with
    /// `onion_dir::http::DirRequest::microdescs`, 92 a request).
    pub fn missing_microdescs(&self) -> Vec<MdDigest> {
        let mut v: Vec<MdDigest> = self
            .listed_md
            .iter()
            .filter(|d| !self.micro.contains_key(*d))
            .map(|d| MdDigest(*d))
            .collect();
        v.sort_unstable_by_key(|d| d.0);
        v
    }

    /// The server descriptors listed and not held, sorted (fetch them with
    /// `onion_dir::http::DirRequest::server_descriptors`).
    pub fn missing_server_descriptors(&self) -> Vec<[u8; 20]> {
        let mut v: Vec<[u8; 20]> = self
            .listed_desc
            .keys()
            .filter(|d| !self.descs.contains_key(*d))
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    fn room(&self, n: usize) -> bool {
        self.bytes.saturating_add(n) <= self.max_bytes
    }

    /// A fetched batch of microdescriptors (`/tor/micro/d/` answer): each one whose SHA-256
    /// the microdescriptor consensus lists is kept, the rest dropped. A batch that does not
    /// parse is dropped whole.
    pub fn add_microdescs(&mut self, text: &str) -> Added {
        let mut a = Added::default();
        let Ok(mds) = onion_dir::microdesc::parse_many(text) else {
            a.malformed = true;
            return a;
        };
        for m in mds {
            let d = m.digest.0;
            if !self.listed_md.contains(&d) || self.micro.contains_key(&d) {
                a.unlisted += 1;
            } else if !self.room(m.text.len()) {
                a.over_limit += 1;
            } else {
                self.bytes += m.text.len();
                self.micro.insert(d, m.text.as_bytes().to_vec());
                a.kept += 1;
            }
        }
        a
    }

    /// A fetched batch of server descriptors (`/tor/server/d/` answer): each one whose
    /// digest the `ns` consensus lists for the relay it names is kept, the rest dropped. A
    /// descriptor that does not parse is dropped (the others of the batch are still looked
    /// at).
    pub fn add_server_descriptors(&mut self, text: &str) -> Added {
        let mut a = Added::default();
        let parsed = match onion_dir::routerdesc::parse_many(text) {
            Ok(v) => v,
            Err(_) => {
                a.malformed = true;
                split_descriptors(text)
                    .filter_map(|t| onion_dir::routerdesc::UnverifiedRouterDesc::parse(t).ok())
                    .collect()
            }
        };
        for p in parsed {
            let d = p.peek();
            let listed = self.listed_desc.get(&d.digest) == Some(&d.fingerprint);
            if !listed || self.descs.contains_key(&d.digest) {
                a.unlisted += 1;
            } else if !self.room(d.text.len()) {
                a.over_limit += 1;
            } else {
                self.bytes += d.text.len();
                self.descs.insert(
                    d.digest,
                    ServerDescriptor {
                        identity: d.fingerprint,
                        digest: d.digest,
                        text: d.text.as_bytes().to_vec(),
                    },
                );
                a.kept += 1;
            }
        }
        a
    }

    /// The microdescriptors held, one after the other in digest order (as a
    /// `/tor/micro/d/` answer, and as C tor's `cached-microdescs` without its annotations):
    /// what [`DescriptorStore::add_microdescs`] takes back.
    pub fn microdescs_text(&self) -> String {
        let mut md: Vec<(&[u8; 32], &Vec<u8>)> = self.micro.iter().collect();
        md.sort_unstable_by_key(|(d, _)| **d);
        md.into_iter()
            .map(|(_, t)| String::from_utf8_lossy(t))
            .collect()
    }

    /// The server descriptors held, one after the other in digest order (as C tor's
    /// `cached-descriptors` without its annotations): what
    /// [`DescriptorStore::add_server_descriptors`] takes back.
    pub fn server_descriptors_text(&self) -> String {
        let mut sd: Vec<&ServerDescriptor> = self.descs.values().collect();
        sd.sort_unstable_by_key(|s| s.digest);
        sd.into_iter()
            .map(|s| String::from_utf8_lossy(&s.text))
            .collect()
    }

    /// Puts the held documents into `docs` (replacing its microdescriptors and server
    /// descriptors), in digest order.
    pub fn fill(&self, docs: &mut DirDocuments) {
        let mut md: Vec<(&[u8; 32], &Vec<u8>)> = self.micro.iter().collect();
        md.sort_unstable_by_key(|(d, _)| **d);
        docs.microdescs = md.into_iter().map(|(_, t)| t.clone()).collect();
        let mut sd: Vec<&ServerDescriptor> = self.descs.values().collect();
        sd.sort_unstable_by_key(|s| s.digest);
        docs.server_descriptors = sd.into_iter().cloned().collect();
    }
}

/// When a directory cache holding `consensus` fetches the next one (dir-spec §4.1): at a
/// random time in the first half-interval after it stops being fresh, the interval being
/// fresh-until minus valid-after; `random` picks the point (any value: it is reduced to
/// the half-interval). A cache that fetches later serves an older consensus than the
/// network has, in which its own latest descriptor may not be listed yet.
pub fn next_consensus_fetch(consensus: &Consensus<'_>, random: u64) -> onion_crypto::Timestamp {
    let fu = consensus.fresh_until.unix();
    let half = fu.saturating_sub(consensus.valid_after.unix()) / 2;
    let offset = if half == 0 { 0 } else { random % (half + 1) };
    onion_crypto::Timestamp::from_unix(fu.saturating_add(offset))
}

/// The descriptors of a batch, each from its `router` line to the next one (or the end).
fn split_descriptors(text: &str) -> impl Iterator<Item = &str> {
    let mut starts: Vec<usize> = text
        .match_indices("router ")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
        .collect();
    starts.push(text.len());
    let pieces: Vec<&str> = starts
        .windows(2)
        .filter_map(|w| text.get(w[0]..w[1]))
        .collect();
    pieces.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_docs::{listing_store as store, DESCS, MD, MICRO, NS};
    use onion_dir::http::DirRequest;

    /// The decoded body of the cache's answer to `req`.
    fn body(cache: &crate::dir::DirCache, req: &DirRequest) -> String {
        let mut a = cache.answer(&req.to_bytes(), 1 << 20);
        let mut r = onion_dir::http::ResponseReader::new(1 << 20);
        while let Some(ch) = a.next_chunk() {
            let n = ch.len();
            r.handle_bytes(ch).expect("bytes");
            a.advance(n);
        }
        let resp = r.finish().expect("response");
        assert_eq!(resp.head.status, 200);
        resp.body
    }

    #[test]
    fn keeps_what_the_consensus_lists_and_drops_the_rest() {
        let mut s = store(DEFAULT_MAX_BYTES);
        let listed_md = s.missing_microdescs();
        let listed_sd = s.missing_server_descriptors();
        assert_eq!((listed_md.len(), listed_sd.len()), (8, 8));
        let a = s.add_microdescs(MICRO);
        assert_eq!((a.kept, a.unlisted, a.malformed), (8, 0, false));
        assert!(s.missing_microdescs().is_empty());
        // The cache file holds older descriptors too: only the listed ones are kept.
        let a = s.add_server_descriptors(DESCS);
        assert_eq!((a.kept, a.unlisted), (8, 16), "{a:?}");
        assert!(s.missing_server_descriptors().is_empty());
        // Given again: nothing new.
        assert_eq!(s.add_microdescs(MICRO).kept, 0);
        // What is held is served by the cache, each under its consensus digest.
        let mut docs = DirDocuments::default();
        s.fill(&mut docs);
        assert_eq!(docs.microdescs.len(), 8);
        assert_eq!(docs.server_descriptors.len(), 8);
        let cache = crate::dir::DirCache::new(docs);
        for req in DirRequest::microdescs(&listed_md) {
            let body = body(&cache, &req);
            let got = onion_dir::microdesc::parse_many(&body).expect("microdescs");
            let mut got: Vec<[u8; 32]> = got.iter().map(|m| m.digest.0).collect();
            got.sort_unstable();
            assert_eq!(got, listed_md.iter().map(|d| d.0).collect::<Vec<_>>());
        }
        for req in DirRequest::server_descriptors(&listed_sd) {
            let body = body(&cache, &req);
            let got = onion_dir::routerdesc::parse_many(&body).expect("descriptors");
            let mut got: Vec<[u8; 20]> = got.iter().map(|d| d.peek().digest).collect();
            got.sort_unstable();
            assert_eq!(got, listed_sd);
        }
    }

    #[test]
    fn a_descriptor_altered_in_transit_is_not_kept() {
        let mut s = store(DEFAULT_MAX_BYTES);
        // One byte changed in a listed microdescriptor: its digest no longer matches.
        let altered = MICRO.replacen("ntor-onion-key ", "ntor-onion-key  ", 1);
        let a = s.add_microdescs(&altered);
        assert_eq!((a.kept, a.unlisted), (7, 1), "{a:?}");
        assert_eq!(s.missing_microdescs().len(), 1);
        // A server descriptor with a changed line: dropped, the others kept; junk is
        // malformed and nothing is kept of it.
        let altered = DESCS.replace("uptime ", "uptime 1");
        let a = s.add_server_descriptors(&altered);
        assert_eq!(a.kept, 0, "{a:?}");
        let a = s.add_server_descriptors("router junk\n");
        assert!(a.malformed && a.kept == 0);
        assert!(s.add_microdescs("@x\nnot a microdescriptor\n").malformed);
        assert_eq!(s.missing_server_descriptors().len(), 8);
    }

    #[test]
    fn the_next_consensus_is_fetched_in_the_half_interval_after_fresh_until() {
        let c = onion_dir::consensus::parse(NS).expect("ns");
        let c = c.peek();
        // The test network's consensus: valid-after 07:20:00, fresh-until 07:20:20.
        let fu = c.fresh_until.unix();
        assert_eq!(fu - c.valid_after.unix(), 20);
        let times: Vec<u64> = [0u64, 3, 10, 11, 25, u64::MAX]
            .iter()
            .map(|&r| next_consensus_fetch(c, r).unix() - fu)
            .collect();
        assert_eq!(times, vec![0, 3, 10, 0, 3, u64::MAX % 11]);
        assert!(times.iter().all(|&t| t <= 10));
    }

    #[test]
    fn bounded_and_pruned_by_a_new_consensus() {
        // Room for about two microdescriptors.
        let first = onion_dir::microdesc::parse_many(MICRO).unwrap()[0]
            .text
            .len();
        let mut s = store(first * 2 + 10);
        let a = s.add_microdescs(MICRO);
        assert!(
            a.kept <= 2 && a.kept >= 1 && a.over_limit == 8 - a.kept,
            "{a:?}"
        );
        assert!(s.bytes() <= s.max_bytes());
        // A microdescriptor consensus listing none of them: everything held goes.
        let mut s = store(DEFAULT_MAX_BYTES);
        s.add_microdescs(MICRO);
        s.add_server_descriptors(DESCS);
        let held = s.bytes();
        let mut in_entries = false;
        let empty: String = MD
            .split_inclusive('\n')
            .filter(|l| {
                in_entries =
                    (in_entries || l.starts_with("r ")) && !l.starts_with("directory-footer");
                !in_entries
            })
            .collect();
        let c = onion_dir::consensus::parse(&empty).expect("consensus");
        s.set_consensus(c.peek());
        assert_eq!(s.n_microdescs(), 0);
        assert_eq!(s.n_server_descriptors(), 8);
        assert!(s.bytes() < held && s.bytes() > 0);
        assert!(s.missing_microdescs().is_empty());
    }
}
