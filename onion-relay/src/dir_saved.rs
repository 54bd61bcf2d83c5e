//! What a directory cache keeps between runs, and how it is taken back.
//!
//! A restarted cache should serve at once what it held, as C tor's does: C tor keeps its
//! directory documents in its data directory (`cached-certs`, `cached-consensus`,
//! `cached-microdesc-consensus`, `cached-microdescs`, `cached-descriptors`) and reloads
//! them at start (dir-spec §5 "Client operation"; a cache is a client of the authorities
//! first). This module holds no file: [`saved`] hands the embedder the text of each of
//! those documents ([`SavedCache`], one per [`CacheDoc`], under C tor's file names), and
//! [`restore`] takes such texts back and keeps only what verifies again, exactly as a
//! fetched document is checked:
//!
//! * key certificates: each must parse and verify (its signatures, and not expired at
//!   `now`, dir-spec §3.1);
//! * each consensus: its flavour is the file's, a majority of the configured v3 authorities
//!   signed it with those certificates (dir-spec §3.4.1), and it is still "reasonably live"
//!   (at most [`REASONABLY_LIVE`] past its valid-until: a cache serves no older one, as C
//!   tor's `networkstatus_consensus_reasonably_live`);
//! * microdescriptors and server descriptors: only those whose digest the restored
//!   consensus of their kind lists ([`DescriptorStore`]'s own check, dir-spec §3.3 and
//!   §3.4.1).
//!
//! A document that fails is dropped and reported ([`Restored::rejected`]); the rest are
//! still used. Bounds: each text given to [`restore`] longer than [`CacheDoc::max_bytes`]
//! is refused unread, and the descriptor store keeps its own byte bound.

use onion_crypto::{RsaIdentity, Timestamp};
use onion_dir::authcert::{self, AuthCert};
use onion_dir::consensus::{self, Flavor};

use crate::store::{Added, DescriptorStore};

/// How long after its valid-until a consensus may still be served (C tor's
/// `REASONABLY_LIVE_TIME`, 24 hours).
pub const REASONABLY_LIVE: u64 = 24 * 3600;

/// Largest key-certificate file taken back: far above the nine authorities' certificates
/// (about 2.3 KB each) a real network has.
pub const MAX_CERTS_BYTES: usize = 1 << 20;

/// One document a directory cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheDoc {
    /// The authorities' key certificates.
    Certs,
    /// The `ns` consensus.
    Consensus,
    /// The microdescriptor consensus.
    ConsensusMicrodesc,
    /// The microdescriptors the microdescriptor consensus lists.
    Microdescs,
    /// The server descriptors the `ns` consensus lists.
    Descriptors,
}

impl CacheDoc {
    /// Every document, in the order [`restore`] takes them (certificates first: the
    /// consensuses are checked with them).
    pub const ALL: [CacheDoc; 5] = [
        CacheDoc::Certs,
        CacheDoc::Consensus,
        CacheDoc::ConsensusMicrodesc,
        CacheDoc::Microdescs,
        CacheDoc::Descriptors,
    ];

    /// C tor's name for the file holding it in the data directory.
    pub fn file_name(self) -> &'static str {
        match self {
            CacheDoc::Certs => "cached-certs",
            CacheDoc::Consensus => "cached-consensus",
            CacheDoc::ConsensusMicrodesc => "cached-microdesc-consensus",
            CacheDoc::Microdescs => "cached-microdescs",
            CacheDoc::Descriptors => "cached-descriptors",
        }
    }

    /// The longest text of it [`restore`] takes: a consensus as long as a fetched one may
    /// be ([`onion_dir::consdiff::MAX_BYTES`]), descriptors as many bytes as the store
    /// holds (`store_max`), certificates [`MAX_CERTS_BYTES`].
    pub fn max_bytes(self, store_max: usize) -> usize {
        match self {
            CacheDoc::Certs => MAX_CERTS_BYTES,
            CacheDoc::Consensus | CacheDoc::ConsensusMicrodesc => onion_dir::consdiff::MAX_BYTES,
            CacheDoc::Microdescs | CacheDoc::Descriptors => store_max,
        }
    }
}

/// The text of each document a cache keeps (`None`: nothing held of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedCache {
    docs: [Option<String>; 5],
}

impl SavedCache {
    fn index(doc: CacheDoc) -> usize {
        match doc {
            CacheDoc::Certs => 0,
            CacheDoc::Consensus => 1,
            CacheDoc::ConsensusMicrodesc => 2,
            CacheDoc::Microdescs => 3,
            CacheDoc::Descriptors => 4,
        }
    }

    /// The text of `doc`, if any.
    pub fn get(&self, doc: CacheDoc) -> Option<&str> {
        self.docs[Self::index(doc)].as_deref()
    }

    /// Sets the text of `doc`.
    pub fn set(&mut self, doc: CacheDoc, text: Option<String>) {
        self.docs[Self::index(doc)] = text;
    }
}

/// What a cache holds, as texts to keep: the key certificates (each one's text, as
/// fetched, in text order so that the same set gives the same file whatever order the
/// authority sent them in), both consensuses as signed, and the descriptors of `store`
/// (in digest order). A document of which nothing is held is `None`.
pub fn saved(
    certs: &[String],
    consensus: Option<&str>,
    consensus_md: Option<&str>,
    store: &DescriptorStore,
) -> SavedCache {
    let mut s = SavedCache::default();
    let nonempty = |t: String| (!t.is_empty()).then_some(t);
    let mut certs: Vec<&str> = certs.iter().map(String::as_str).collect();
    certs.sort_unstable();
    s.set(CacheDoc::Certs, nonempty(certs.concat()));
    s.set(CacheDoc::Consensus, consensus.map(str::to_owned));
    s.set(
        CacheDoc::ConsensusMicrodesc,
        consensus_md.map(str::to_owned),
    );
    s.set(CacheDoc::Microdescs, nonempty(store.microdescs_text()));
    s.set(
        CacheDoc::Descriptors,
        nonempty(store.server_descriptors_text()),
    );
    s
}

/// What [`restore`] kept.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The key certificates that verified, each one's text.
    pub certs: Vec<String>,
    /// The `ns` consensus, if it verified and is reasonably live.
    pub consensus: Option<String>,
    /// The microdescriptor consensus, likewise.
    pub consensus_md: Option<String>,
    /// The descriptors the restored consensuses list.
    pub store: DescriptorStore,
    /// Documents (or parts of them) dropped, and why.
    pub rejected: Vec<(CacheDoc, String)>,
}

/// Takes back what [`saved`] gave (as read from wherever the embedder kept it), keeping
/// what verifies at `now` against the configured v3 authorities `v3`, by the rules of the
/// module documentation; the descriptors go into a new store of `store_max` bytes.
pub fn restore(
    saved: &SavedCache,
    v3: &[RsaIdentity],
    now: Timestamp,
    store_max: usize,
) -> Restored {
    let mut r = Restored {
        certs: Vec::new(),
        consensus: None,
        consensus_md: None,
        store: DescriptorStore::new(store_max),
        rejected: Vec::new(),
    };
    let text = |doc: CacheDoc, rejected: &mut Vec<(CacheDoc, String)>| -> Option<&str> {
        let t = saved.get(doc)?;
        let max = doc.max_bytes(store_max);
        if t.len() > max {
            rejected.push((doc, format!("{} bytes, more than {max}", t.len())));
            return None;
        }
        Some(t)
    };
    let mut certs: Vec<AuthCert> = Vec::new();
    if let Some(t) = text(CacheDoc::Certs, &mut r.rejected) {
        match authcert::parse_many(t) {
            Ok(parsed) => {
                for c in parsed {
                    let body = c.text.to_owned();
                    match c.verify(now) {
                        Ok(c) => {
                            certs.push(c);
                            r.certs.push(body);
                        }
                        Err(e) => r
                            .rejected
                            .push((CacheDoc::Certs, format!("certificate: {e}"))),
                    }
                }
            }
            Err(e) => r.rejected.push((CacheDoc::Certs, e.to_string())),
        }
    }
    for (doc, flavor) in [
        (CacheDoc::Consensus, Flavor::Ns),
        (CacheDoc::ConsensusMicrodesc, Flavor::Microdesc),
    ] {
        let Some(t) = text(doc, &mut r.rejected) else {
            continue;
        };
        match check_consensus(t, flavor, v3, &certs, now) {
            Ok(()) => {
                if let Ok(c) = consensus::parse(t) {
                    r.store.set_consensus(c.peek());
                }
                let t = Some(t.to_owned());
                match flavor {
                    Flavor::Ns => r.consensus = t,
                    Flavor::Microdesc => r.consensus_md = t,
                }
            }
            Err(e) => r.rejected.push((doc, e)),
        }
    }
    // The descriptors, each kind only under the consensus that lists it.
    type Add = fn(&mut DescriptorStore, &str) -> Added;
    let kinds: [(CacheDoc, bool, Add); 2] = [
        (
            CacheDoc::Microdescs,
            r.consensus_md.is_some(),
            DescriptorStore::add_microdescs,
        ),
        (
            CacheDoc::Descriptors,
            r.consensus.is_some(),
            DescriptorStore::add_server_descriptors,
        ),
    ];
    for (doc, listed, add) in kinds {
        let Some(t) = listed.then(|| text(doc, &mut r.rejected)).flatten() else {
            continue;
        };
        let a = add(&mut r.store, t);
        if a.malformed || a.unlisted > 0 || a.over_limit > 0 {
            r.rejected.push((doc, format!("not all kept: {a:?}")));
        }
    }
    r
}

/// Whether `text` is a consensus of `flavor` that a majority of `v3` signed (checked with
/// `certs`) and that is reasonably live at `now`; the error says why not.
pub fn check_consensus(
    text: &str,
    flavor: Flavor,
    v3: &[RsaIdentity],
    certs: &[AuthCert],
    now: Timestamp,
) -> Result<(), String> {
    let parsed = consensus::parse(text).map_err(|e| format!("does not parse: {e}"))?;
    let c = parsed.peek();
    if c.flavor != flavor {
        return Err(format!("not a {} consensus", flavor.name()));
    }
    let until = c.valid_until.unix().saturating_add(REASONABLY_LIVE);
    if now.unix() > until {
        return Err(format!("valid until {}: too old to serve", c.valid_until));
    }
    let report = parsed.check_signatures(v3, certs, now);
    if !report.quorum() {
        return Err(format!(
            "signed by {} of the {} authorities ({} needed)",
            report.verified.len(),
            v3.len(),
            report.needed
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_docs::{listing_store, v3_authorities as v3, valid_time as now};
    use crate::test_docs::{CERTS, DESCS, MD, MICRO, NS};

    /// A full cache as the relay holds it after fetching everything.
    fn full() -> (Vec<String>, DescriptorStore) {
        let mut s = listing_store(crate::store::DEFAULT_MAX_BYTES);
        s.add_microdescs(MICRO);
        s.add_server_descriptors(DESCS);
        (CERTS.iter().map(|t| t.to_string()).collect(), s)
    }

    #[test]
    fn what_is_saved_comes_back_and_verifies() {
        let (certs, store) = full();
        let s = saved(&certs, Some(NS), Some(MD), &store);
        assert_eq!(s.get(CacheDoc::Consensus), Some(NS));
        let mut sorted = certs.clone();
        sorted.sort();
        assert_eq!(s.get(CacheDoc::Certs), Some(sorted.concat().as_str()));
        let r = restore(&s, &v3(), now(), store.max_bytes());
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert_eq!(r.certs, sorted);
        assert_eq!(
            (r.consensus.as_deref(), r.consensus_md.as_deref()),
            (Some(NS), Some(MD))
        );
        assert_eq!(r.store.n_microdescs(), store.n_microdescs());
        assert_eq!(r.store.n_server_descriptors(), 8);
        assert!(r.store.missing_microdescs().is_empty());
        assert!(r.store.missing_server_descriptors().is_empty());
        // The certificates in another order: the same file.
        let mut reversed = certs.clone();
        reversed.reverse();
        assert_eq!(saved(&reversed, Some(NS), Some(MD), &store), s);
        // Saved again, the same texts: nothing was lost or added on the way.
        assert_eq!(
            saved(
                &r.certs,
                r.consensus.as_deref(),
                r.consensus_md.as_deref(),
                &r.store
            ),
            s
        );
        // C tor's own files (with their annotations) are taken too.
        let mut c = SavedCache::default();
        c.set(
            CacheDoc::Certs,
            Some(include_str!("../../onion-dir/testdata/tornet/cached-certs").into()),
        );
        c.set(CacheDoc::ConsensusMicrodesc, Some(MD.into()));
        c.set(CacheDoc::Microdescs, Some(MICRO.into()));
        let r = restore(&c, &v3(), now(), store.max_bytes());
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert_eq!((r.store.n_microdescs(), r.consensus.is_none()), (8, true));
    }

    #[test]
    fn what_does_not_verify_is_reported_and_dropped() {
        let (certs, store) = full();
        let good = saved(&certs, Some(NS), Some(MD), &store);
        let docs = |r: &Restored| r.rejected.iter().map(|(d, _)| *d).collect::<Vec<_>>();
        // Too old: a day past its valid-until.
        let late = Timestamp::from_unix(
            consensus::parse(NS).unwrap().peek().valid_until.unix() + REASONABLY_LIVE + 1,
        );
        let r = restore(&good, &v3(), late, store.max_bytes());
        assert!(r.consensus.is_none() && r.consensus_md.is_none());
        assert_eq!(r.store.n_microdescs() + r.store.n_server_descriptors(), 0);
        assert!(docs(&r).contains(&CacheDoc::Consensus), "{:?}", r.rejected);
        // Within a day of it: still served.
        let r = restore(
            &good,
            &v3(),
            Timestamp::from_unix(late.unix() - 2),
            store.max_bytes(),
        );
        assert!(
            r.consensus.is_some() && r.rejected.is_empty(),
            "{:?}",
            r.rejected
        );
        // Signed by authorities not configured.
        let r = restore(&good, &[RsaIdentity([1; 20])], now(), store.max_bytes());
        assert_eq!(
            docs(&r),
            vec![CacheDoc::Consensus, CacheDoc::ConsensusMicrodesc]
        );
        assert!(
            r.rejected[0].1.contains("signed by 0 of the 1"),
            "{:?}",
            r.rejected
        );
        // A changed byte in the signed part: the signatures fail; the other flavour and its
        // microdescriptors are kept.
        let mut bad = good.clone();
        bad.set(
            CacheDoc::Consensus,
            Some(NS.replacen("Running", "Runninh", 1)),
        );
        let r = restore(&bad, &v3(), now(), store.max_bytes());
        assert_eq!(docs(&r), vec![CacheDoc::Consensus]);
        assert!(r.consensus.is_none() && r.consensus_md.is_some());
        assert_eq!(
            (r.store.n_microdescs(), r.store.n_server_descriptors()),
            (8, 0)
        );
        // Truncated files, the flavours swapped, junk certificates, an altered descriptor.
        let mut bad = good.clone();
        bad.set(CacheDoc::Consensus, Some(MD.into()));
        bad.set(
            CacheDoc::ConsensusMicrodesc,
            Some(MD[..MD.len() / 2].into()),
        );
        bad.set(
            CacheDoc::Certs,
            Some("dir-key-certificate-version 3\njunk\n".into()),
        );
        let r = restore(&bad, &v3(), now(), store.max_bytes());
        assert!(r.consensus.is_none() && r.consensus_md.is_none() && r.certs.is_empty());
        assert_eq!(
            docs(&r),
            vec![
                CacheDoc::Certs,
                CacheDoc::Consensus,
                CacheDoc::ConsensusMicrodesc
            ]
        );
        assert!(
            r.rejected[1].1.contains("not a ns consensus"),
            "{:?}",
            r.rejected
        );
        let mut bad = good.clone();
        let altered = good.get(CacheDoc::Microdescs).unwrap().replacen(
            "ntor-onion-key ",
            "ntor-onion-key  ",
            1,
        );
        bad.set(CacheDoc::Microdescs, Some(altered));
        let r = restore(&bad, &v3(), now(), store.max_bytes());
        assert_eq!(docs(&r), vec![CacheDoc::Microdescs]);
        assert_eq!(r.store.n_microdescs(), 7);
        assert_eq!(r.store.missing_microdescs().len(), 1);
        // Longer than the bound: refused unread.
        let r = restore(&good, &v3(), now(), 100);
        assert_eq!(docs(&r), vec![CacheDoc::Microdescs, CacheDoc::Descriptors]);
        assert_eq!(r.store.bytes(), 0);
        assert!(r.consensus.is_some());
    }

    #[test]
    fn file_names_are_c_tors() {
        let names: Vec<_> = CacheDoc::ALL.iter().map(|d| d.file_name()).collect();
        assert_eq!(
            names,
            [
                "cached-certs",
                "cached-consensus",
                "cached-microdesc-consensus",
                "cached-microdescs",
                "cached-descriptors"
            ]
        );
        assert_eq!(
            saved(&[], None, None, &DescriptorStore::default()),
            SavedCache::default()
        );
    }
}
