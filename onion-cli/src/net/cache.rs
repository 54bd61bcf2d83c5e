//! The data directory: directory documents cached between runs (dir-spec §5 "Client
//! operation": a client starts from the consensus it has while that is still live, i.e.
//! before its valid-until, as C tor does at start-up, and fetches a new one otherwise).
//!
//! Each document is a file `NAME` with a sidecar `NAME.valid-until` holding the Unix time
//! (seconds) until which it may be reused without asking the network again. Writes go to a
//! temporary file first and are renamed into place, so an interrupted run never leaves a
//! half-written document behind. Reading a cached document does not trust it: the caller
//! verifies it exactly as a freshly fetched one.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bound on a cached document (the public ns consensus is ~3 MB, server descriptors
/// ~10 MB; the microdesc consensus and microdescriptors, kept under C tor's names
/// `cached-microdesc-consensus` and `cached-microdescs`, are smaller).
const MAX_DOC: u64 = 64 * 1024 * 1024;

/// A data directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Use (and create if needed) `dir`.
    pub fn open(dir: &Path) -> io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The document `name`, if stored and still reusable at `now`.
    pub fn get_live(&self, name: &str, now: SystemTime) -> Option<String> {
        let until = std::fs::read_to_string(self.dir.join(format!("{name}.valid-until"))).ok()?;
        let until = UNIX_EPOCH + Duration::from_secs(until.trim().parse::<u64>().ok()?);
        if now >= until {
            return None;
        }
        let path = self.dir.join(name);
        if std::fs::metadata(&path).ok()?.len() > MAX_DOC {
            return None;
        }
        std::fs::read_to_string(path).ok()
    }

    /// Store `text` as `name`, reusable until `until`.
    pub fn put(&self, name: &str, text: &str, until: SystemTime) -> io::Result<()> {
        let secs = until
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.write(name, text.as_bytes())?;
        self.write(&format!("{name}.valid-until"), secs.to_string().as_bytes())
    }

    /// The file `name` (state kept between runs, not a document with a lifetime), if
    /// present and no larger than a document may be.
    pub fn read(&self, name: &str) -> Option<String> {
        let path = self.dir.join(name);
        if std::fs::metadata(&path).ok()?.len() > MAX_DOC {
            return None;
        }
        std::fs::read_to_string(path).ok()
    }

    /// Replace the file `name` with `data`, atomically (written aside, then renamed).
    pub fn write(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::rename(tmp, self.dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_then_expired() {
        let dir = std::env::temp_dir().join(format!("onion-cache-test-{}", std::process::id()));
        let c = Cache::open(&dir).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(c.get_live("doc", t0), None);
        c.put("doc", "hello", t0 + Duration::from_secs(60)).unwrap();
        assert_eq!(c.get_live("doc", t0).as_deref(), Some("hello"));
        assert_eq!(c.get_live("doc", t0 + Duration::from_secs(60)), None);
        std::fs::write(dir.join("doc.valid-until"), "garbage").unwrap();
        assert_eq!(c.get_live("doc", t0), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
