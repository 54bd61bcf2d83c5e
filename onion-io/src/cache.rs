//! The data directory: directory documents cached between runs (dir-spec §5 "Client
//! operation": a client starts from the consensus it has while that is still live, i.e.
//! before its valid-until, as C tor does at start-up, and fetches a new one otherwise).
//!
//! Each document is a file `NAME` with a sidecar `NAME.valid-until` holding the Unix time
//! (seconds) until which it may be reused without asking the network again. The directory
//! is private to the user (mode 0700, checked and created by [`private::check_private_dir`]
//! as C tor checks its `DataDirectory`), and files are written by [`private::write_atomic`]
//! (mode 0600, a new temporary file renamed into place), so an interrupted run never leaves
//! a half-written document behind. Reading a cached document does not trust it: the client
//! verifies it exactly as a freshly fetched one.
//!
//! The file names are C tor's (`cached-consensus`, `cached-microdescs`, `state` with its
//! `Guard` lines, ...). A front end gives what [`onion_client::Event::Persist`] hands over to
//! [`Cache::store`], and starts the next client from [`Cache::load`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_client::dir::{Cached, DirMode, DocKind};
use onion_client::{Persist, State};

use crate::private::{self, DirKind, ModeFixed};

/// Upper bound on a cached document (the public ns consensus is ~3 MB, server descriptors
/// ~10 MB; the microdesc consensus and microdescriptors, kept under C tor's names
/// `cached-microdesc-consensus` and `cached-microdescs`, are smaller).
const MAX_DOC: u64 = 64 * 1024 * 1024;

/// A data directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    mode_fixed: Option<ModeFixed>,
}

impl Cache {
    /// Use `dir`, created (mode 0700) if needed; refused if it is not private to this user
    /// (see [`private::check_private_dir`]: another user's, writable by others, or a
    /// symbolic link), fixed to 0700 if others could only read it ([`Cache::mode_fixed`]).
    pub fn open(dir: &Path) -> io::Result<Cache> {
        let mode_fixed = private::check_private_dir(dir, DirKind::Data)?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            mode_fixed,
        })
    }

    /// Whether [`Cache::open`] had to make the directory private (others could read it):
    /// worth a warning to the user.
    pub fn mode_fixed(&self) -> Option<&ModeFixed> {
        self.mode_fixed.as_ref()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The document `name`, if stored and still reusable at `now`.
    pub fn get_live(&self, name: &str, now: SystemTime) -> Option<String> {
        let until = std::fs::read_to_string(self.dir.join(format!("{name}.valid-until"))).ok()?;
        let until = UNIX_EPOCH + Duration::from_secs(until.trim().parse::<u64>().ok()?);
        if now >= until {
            return None;
        }
        self.read(name)
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

impl Cache {
    /// What an earlier run kept for a client in `mode`: the directory documents still live
    /// at `now`, the guard state and the circuit build times. The client checks all of it
    /// again.
    pub fn load(&self, mode: DirMode, now: SystemTime) -> State {
        let mut state = State::default();
        state.directory = self.documents(mode, now);
        state.guards = self.guards();
        state.build_times = self.read(BUILD_TIMES_FILE);
        state
    }

    /// Keep what a client in `mode` handed over to persist.
    pub fn store(&self, mode: DirMode, p: &Persist) -> io::Result<()> {
        match p {
            Persist::Directory {
                kind,
                text,
                keep_until,
            } => self.put_document(mode, *kind, text, SystemTime::from(*keep_until)),
            Persist::Guards(text) => self.put_guards(text),
            Persist::BuildTimes(text) => self.write(BUILD_TIMES_FILE, text.as_bytes()),
            _ => Ok(()),
        }
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
        let dir = std::env::temp_dir().join(format!("onion-io-cache-test-{}", std::process::id()));
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
        let dir = std::env::temp_dir().join(format!("onion-io-cache-modes-{}", std::process::id()));
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
        let c = Cache::open(&dir).unwrap();
        assert_eq!(c.mode_fixed().map(|f| f.was), Some(0o755));
        assert_eq!(mode(&dir), 0o700);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The state file keeps lines that are not guards; guards read back are those written.
    #[test]
    fn guard_lines_replace_only_guard_lines() {
        let dir =
            std::env::temp_dir().join(format!("onion-io-cache-guards-{}", std::process::id()));
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

    /// What a client hands over comes back at the next start, in files of mode 0600 in a
    /// new 0700 directory; expired documents do not come back.
    #[test]
    fn persisted_state_round_trip() {
        let dir = std::env::temp_dir().join(format!("onion-io-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cache::open(&dir.join("sub")).unwrap();
        assert_eq!(c.mode_fixed(), None);
        let later = onion_client::Timestamp(4_000_000_000);
        let past = onion_client::Timestamp(1_000);
        let mode = DirMode::Micro;
        c.store(mode, &Persist::Guards("Guard in=default rsa_id=A\n".into()))
            .unwrap();
        c.store(mode, &Persist::BuildTimes("times\n".into()))
            .unwrap();
        c.store(
            mode,
            &Persist::Directory {
                kind: DocKind::Consensus,
                text: "cons".into(),
                keep_until: later,
            },
        )
        .unwrap();
        c.store(
            mode,
            &Persist::Directory {
                kind: DocKind::Microdescs,
                text: "mds".into(),
                keep_until: past,
            },
        )
        .unwrap();
        let st = c.load(mode, SystemTime::now());
        assert_eq!(st.guards.as_deref(), Some("Guard in=default rsa_id=A\n"));
        assert_eq!(st.build_times.as_deref(), Some("times\n"));
        assert_eq!(st.directory.consensus.as_deref(), Some("cons"));
        assert_eq!(st.directory.descriptors, None);
        // The full-descriptor mode keeps its documents under other names.
        assert_eq!(
            c.load(DirMode::Full, SystemTime::now()).directory.consensus,
            None
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m(&dir.join("sub")), 0o700);
            for f in [STATE_FILE, BUILD_TIMES_FILE, "cached-microdesc-consensus"] {
                assert_eq!(m(&dir.join("sub").join(f)), 0o600, "{f}");
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
