//! The directory cache's files in the relay's data directory, under C tor's names
//! (`cached-certs`, `cached-consensus`, `cached-microdesc-consensus`, `cached-microdescs`,
//! `cached-descriptors`: [`onion_relay::dir_saved::CacheDoc::file_name`]), so a restarted
//! relay serves what it held before it fetches anything, as C tor's cache does.
//!
//! Files are written with [`crate::net::private::write_atomic`] (mode 0600, a new temporary
//! file renamed into place) in the data directory, which `onion relay` keeps at mode 0700
//! ([`super::keys::KeyDir::open`]); only the documents that changed since they were last
//! read or written are written again. Reading is bounded
//! ([`onion_relay::dir_saved::CacheDoc::max_bytes`]): a larger file, one that is not
//! UTF-8, or one that cannot be read is reported and ignored; what is read is verified
//! again by [`onion_relay::dir_saved::restore`] before anything is served.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use onion_relay::dir_saved::{CacheDoc, SavedCache};
use sha2::{Digest, Sha256};

use crate::net::private;

/// The cache files of one data directory.
#[derive(Debug)]
pub struct CacheFiles {
    dir: PathBuf,
    /// SHA-256 of each document as last read or written: an equal one is not written again.
    known: HashMap<CacheDoc, [u8; 32]>,
}

impl CacheFiles {
    /// The files of the (private) data directory `dir`.
    pub fn new(dir: &Path) -> Self {
        CacheFiles {
            dir: dir.to_path_buf(),
            known: HashMap::new(),
        }
    }

    /// Where `doc` is kept.
    pub fn path(&self, doc: CacheDoc) -> PathBuf {
        self.dir.join(doc.file_name())
    }

    /// Reads every file present; a file larger than its bound (`store_max` for the
    /// descriptors), not UTF-8, or unreadable is left out and reported (one line each,
    /// naming the file).
    pub fn load(&mut self, store_max: usize) -> (SavedCache, Vec<String>) {
        let mut saved = SavedCache::default();
        let mut problems = Vec::new();
        for doc in CacheDoc::ALL {
            let path = self.path(doc);
            match read_bounded(&path, doc.max_bytes(store_max)) {
                Ok(None) => {}
                Ok(Some(text)) => {
                    self.known
                        .insert(doc, Sha256::digest(text.as_bytes()).into());
                    saved.set(doc, Some(text));
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        (saved, problems)
    }

    /// Writes the documents of `saved` that differ from what was last read or written
    /// (a document `saved` lacks is left as it is); returns the files written.
    pub fn save(&mut self, saved: &SavedCache) -> io::Result<Vec<&'static str>> {
        let mut written = Vec::new();
        for doc in CacheDoc::ALL {
            let Some(text) = saved.get(doc) else {
                continue;
            };
            let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            if self.known.get(&doc) == Some(&digest) {
                continue;
            }
            private::write_atomic(&self.dir, doc.file_name(), text.as_bytes()).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", self.path(doc).display()))
            })?;
            self.known.insert(doc, digest);
            written.push(doc.file_name());
        }
        Ok(written)
    }
}

/// The text of `path` if present (`None` if there is no such file); an error if it is
/// longer than `max` bytes, not UTF-8, or unreadable.
fn read_bounded(path: &Path, max: usize) -> io::Result<Option<String>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut data = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut data)?;
    if data.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    String::from_utf8(data)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_crypto::Timestamp;
    use onion_relay::dir_saved::{restore, saved};
    use onion_relay::DescriptorStore;
    use std::os::unix::fs::PermissionsExt;

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-dir/testdata/tornet/");

    fn testdata(name: &str) -> String {
        std::fs::read_to_string(format!("{TESTDATA}{name}")).expect(name)
    }

    fn v3(certs: &[String]) -> Vec<onion_crypto::RsaIdentity> {
        certs
            .iter()
            .map(|t| {
                onion_dir::authcert::UnverifiedAuthCert::parse(t)
                    .expect("cert")
                    .peek()
                    .fingerprint
            })
            .collect()
    }

    /// Saved to a private directory, read back, verified: the same documents, in 0600
    /// files named as C tor names them; saving again writes nothing; a corrupt file is
    /// reported (or dropped at verification) and the others still restored.
    #[test]
    fn cache_files_round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("onion-relay-dircache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        private::check_private_dir(&dir, private::DirKind::Data).unwrap();
        let (ns, md) = (
            testdata("cached-consensus"),
            testdata("cached-microdesc-consensus"),
        );
        let certs: Vec<String> = (0..3)
            .map(|i| testdata(&format!("authority_certificate.auth{i}")))
            .collect();
        let mut store = DescriptorStore::default();
        let now = onion_dir::consensus::parse(&ns).unwrap().peek().valid_after;
        store.set_consensus(onion_dir::consensus::parse(&ns).unwrap().peek());
        store.set_consensus(onion_dir::consensus::parse(&md).unwrap().peek());
        store.add_microdescs(&testdata("cached-microdescs.new"));
        store.add_server_descriptors(&testdata("cached-descriptors.new"));
        let s = saved(&certs, Some(&ns), Some(&md), &store);

        let mut files = CacheFiles::new(&dir);
        let written = files.save(&s).unwrap();
        assert_eq!(written.len(), 5, "{written:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for doc in CacheDoc::ALL {
            assert_eq!(mode(&dir.join(doc.file_name())), 0o600, "{doc:?}");
        }
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            std::fs::read_to_string(dir.join("cached-consensus")).unwrap(),
            ns
        );
        // Unchanged: nothing written again.
        assert!(files.save(&s).unwrap().is_empty());

        // A new process reads them back: the same documents, all verified.
        let mut again = CacheFiles::new(&dir);
        let (loaded, problems) = again.load(store.max_bytes());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(loaded, s);
        let r = restore(
            &loaded,
            &v3(&certs),
            Timestamp::from_unix(now.unix() + 60),
            store.max_bytes(),
        );
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert_eq!(r.consensus.as_deref(), Some(ns.as_str()));
        assert_eq!(r.store.n_microdescs(), store.n_microdescs());
        assert_eq!(r.store.n_server_descriptors(), store.n_server_descriptors());
        // What was read is known: saving the same again writes nothing.
        assert!(again.save(&loaded).unwrap().is_empty());

        // Corrupt files: the ns consensus cut short, the certificates not UTF-8, the
        // descriptor files longer than the bound. Each bad file is reported and left out;
        // the consensuses' texts are still taken.
        let cut = &ns[..ns.len() - 100];
        std::fs::write(dir.join("cached-consensus"), cut).unwrap();
        std::fs::write(dir.join("cached-certs"), b"\xff\xfe certificates").unwrap();
        let mut third = CacheFiles::new(&dir);
        let (loaded, problems) = third.load(store.microdescs_text().len() - 1);
        assert_eq!(problems.len(), 3, "{problems:?}");
        for want in [
            "cached-certs: not UTF-8",
            "cached-microdescs: longer than",
            "cached-descriptors: longer than",
        ] {
            assert!(problems.iter().any(|p| p.contains(want)), "{problems:?}");
        }
        assert!(
            loaded.get(CacheDoc::Certs).is_none() && loaded.get(CacheDoc::Microdescs).is_none()
        );
        assert_eq!(loaded.get(CacheDoc::ConsensusMicrodesc), Some(md.as_str()));
        // Without certificates no consensus verifies: nothing is served from these files.
        let r = restore(&loaded, &v3(&certs), now, store.max_bytes());
        assert!(r.consensus.is_none() && r.consensus_md.is_none());
        // With the certificates back, the cut consensus alone is refused.
        std::fs::write(dir.join("cached-certs"), certs.concat()).unwrap();
        let (loaded, problems) = CacheFiles::new(&dir).load(store.max_bytes());
        assert!(problems.is_empty());
        let r = restore(&loaded, &v3(&certs), now, store.max_bytes());
        assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
        assert_eq!(r.rejected[0].0, CacheDoc::Consensus);
        assert!(r.consensus.is_none() && r.consensus_md.is_some());
        assert_eq!(r.store.n_microdescs(), store.n_microdescs());
        // A missing directory entry is no problem: an empty data directory reads as empty.
        let empty = dir.join("empty");
        private::check_private_dir(&empty, private::DirKind::Data).unwrap();
        let (loaded, problems) = CacheFiles::new(&empty).load(store.max_bytes());
        assert!(problems.is_empty() && loaded == SavedCache::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
