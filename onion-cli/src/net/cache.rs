//! The data directory: directory documents cached between runs (dir-spec §5 "Client
//! operation": a client starts from the consensus it has while that is still live, i.e.
//! before its valid-until, as C tor does at start-up, and fetches a new one otherwise).
//!
//! Each document is a file `NAME` with a sidecar `NAME.valid-until` holding the Unix time
//! (seconds) until which it may be reused without asking the network again. The directory
//! is private to the user (mode 0700, checked and created by [`private::check_private_dir`]
//! as C tor checks its `DataDirectory`), and files are written by [`private::write_atomic`]
//! (mode 0600, a new temporary file renamed into place), so an interrupted run never leaves
//! a half-written document behind. Reading a cached document does not trust it: the caller
//! verifies it exactly as a freshly fetched one.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_client::dir::{Cached, DirMode, DocKind};

use super::private::{self, DirKind};

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
    /// Use `dir`, created (mode 0700) if needed; refused if it is not private to this user
    /// (see [`private::check_private_dir`]: another user's, writable by others, or a
    /// symbolic link), fixed to 0700 if others could only read it.
    pub fn open(dir: &Path) -> io::Result<Cache> {
        private::check_private_dir(dir, DirKind::Data)?;
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

    /// Replace the file `name` with `data`, atomically and readable by the user only
    /// ([`private::write_atomic`]).
    pub fn write(&self, name: &str, data: &[u8]) -> io::Result<()> {
        private::write_atomic(&self.dir, name, data)
    }
}

/// The data-directory file of the guard state (C tor's name for its state file; guard-spec
/// A.5 `Guard` lines).
pub const STATE_FILE: &str = "state";
/// The data-directory file of the circuit build times (path-spec §2.4).
pub const BUILD_TIMES_FILE: &str = "circuit-build-times";

/// The data-directory files of a directory mode: consensus, certificates, descriptors (C
/// tor's names).
pub fn doc_files(mode: DirMode) -> [&'static str; 3] {
    match mode {
        DirMode::Micro => [
            "cached-microdesc-consensus",
            "cached-certs",
            "cached-microdescs",
        ],
        DirMode::Full => ["cached-consensus", "cached-certs", "cached-descriptors"],
    }
}

impl Cache {
    /// The directory documents of `mode` held and still live at `now`; the client verifies
    /// each again as if fetched.
    pub fn documents(&self, mode: DirMode, now: SystemTime) -> Cached {
        let [cons, certs, descs] = doc_files(mode);
        Cached {
            consensus: self.get_live(cons, now),
            certificates: self.get_live(certs, now),
            descriptors: self.get_live(descs, now),
        }
    }

    /// Keep the document `kind` of `mode` until `until`.
    pub fn put_document(
        &self,
        mode: DirMode,
        kind: DocKind,
        text: &str,
        until: SystemTime,
    ) -> io::Result<()> {
        let [cons, certs, descs] = doc_files(mode);
        let name = match kind {
            DocKind::Consensus => cons,
            DocKind::Certificates => certs,
            DocKind::Microdescs | DocKind::ServerDescs => descs,
        };
        self.put(name, text, until)
    }

    /// The `Guard` lines of the state file.
    pub fn guards(&self) -> Option<String> {
        let text = self.read(STATE_FILE)?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("Guard "))
                .flat_map(|l| [l, "\n"])
                .collect(),
        )
    }

    /// Replace the state file's `Guard` lines by `guards`, keeping its other lines (C tor's
    /// `state` holds more, should the data directory be shared with it) in order.
    pub fn put_guards(&self, guards: &str) -> io::Result<()> {
        let old = self.read(STATE_FILE).unwrap_or_default();
        self.write(STATE_FILE, merged_state(&old, guards).as_bytes())
    }
}

/// The state file `old` with its `Guard` lines replaced by `guards`, its other lines kept.
fn merged_state(old: &str, guards: &str) -> String {
    let mut out: String = old
        .lines()
        .filter(|l| !l.starts_with("Guard "))
        .flat_map(|l| [l, "\n"])
        .collect();
    out.push_str(guards);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
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

    /// The data directory and every file written there, the guard state included, are
    /// private: 0700 and 0600 whatever the umask; a directory others can write is refused.
    #[cfg(unix)]
    #[test]
    fn directory_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("onion-cache-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        c.put("cached-consensus", "text", SystemTime::now())
            .unwrap();
        c.write("state", b"Guard in=default\n").unwrap();
        for f in ["cached-consensus", "cached-consensus.valid-until", "state"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Cache::open(&dir).unwrap_err().to_string();
        assert!(e.contains("other users can write"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Cache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The state file keeps lines that are not guards; guards read back are those written.
    #[test]
    fn guard_lines_replace_only_guard_lines() {
        let dir = std::env::temp_dir().join(format!("onion-cache-guards-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cache::open(&dir).unwrap();
        assert_eq!(c.guards(), None);
        c.write(
            STATE_FILE,
            b"TorVersion x\nGuard in=default rsa_id=A\nLastWritten y\n",
        )
        .unwrap();
        assert_eq!(c.guards().as_deref(), Some("Guard in=default rsa_id=A\n"));
        c.put_guards("Guard in=default rsa_id=B\nGuard in=default rsa_id=C")
            .unwrap();
        assert_eq!(
            c.read(STATE_FILE).unwrap(),
            "TorVersion x\nLastWritten y\nGuard in=default rsa_id=B\nGuard in=default rsa_id=C\n"
        );
        let t0 = SystemTime::now();
        c.put_document(
            DirMode::Micro,
            DocKind::Microdescs,
            "md",
            t0 + Duration::from_secs(60),
        )
        .unwrap();
        let docs = c.documents(DirMode::Micro, t0);
        assert_eq!(docs.descriptors.as_deref(), Some("md"));
        assert_eq!(docs.consensus, None);
        assert_eq!(c.documents(DirMode::Full, t0).descriptors, None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
