//! Private directories and files: a data directory and an onion-service or relay key
//! directory hold what other users of the machine must neither read nor replace (guard
//! choices, cached directory documents, secret keys).
//!
//! The rules follow C tor's `check_private_dir` (src/lib/fs/dir.c), with one difference
//! stated below:
//!
//! - A missing directory is created with mode 0700 (its missing parents too).
//! - The directory is opened without following a symbolic link (`O_NOFOLLOW`) and checked on
//!   that open descriptor, so it cannot be swapped between the check and a mode change. A
//!   symbolic link, or anything but a directory, is refused.
//! - A directory owned by another user is refused (C tor: "not owned by this user").
//! - A directory that other users can write (group- or world-writable) is refused, whoever
//!   owns it. C tor instead fixes the mode of a data directory it owns; but anyone could have
//!   put a file there while it was writable (a `state` that picks the guards, a symbolic link
//!   where a document will be written), and a chmod does not undo that.
//! - A directory only readable or searchable by others is fixed to 0700 when it is the data
//!   directory ([`DirKind::Data`], as C tor does with `CPD_CREATE`), and refused when it is a
//!   key directory ([`DirKind::Keys`], as C tor does for a `HiddenServiceDir` with
//!   `CPD_CHECK_MODE_ONLY`): a key that others could read is no longer secret. A fixed mode
//!   is reported to the caller ([`ModeFixed`]), which tells the user (C tor logs a warning).
//!
//! Files are written by [`write_atomic`]: a new temporary file with a random name, created
//! with `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600 (so neither an existing file nor a
//! symbolic link planted under that name is ever written through), synced, then renamed
//! over the final name, so a crash never leaves a half-written file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

/// Which directory is checked, and so what happens when others can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirKind {
    /// The data directory: a mode that lets others read or search it is fixed to 0700.
    Data,
    /// A key directory: a mode that lets others read or search it is refused.
    Keys,
}

/// The mode bits that give other users any access.
const OTHERS: u32 = 0o077;
/// The mode bits that let other users write.
const OTHERS_WRITE: u32 = 0o022;

fn refused(dir: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {why}", dir.display()),
    )
}

/// A data directory that other users could read, and whose mode [`check_private_dir`]
/// fixed: worth a warning to the user (what was readable may have been read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeFixed {
    /// The directory.
    pub dir: PathBuf,
    /// Its mode before (permission bits).
    pub was: u32,
    /// Its mode now.
    pub now: u32,
}

impl std::fmt::Display for ModeFixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: other users could read it (mode {:04o}); its mode is now {:04o}",
            self.dir.display(),
            self.was,
            self.now
        )
    }
}

/// Make sure `dir` is a private directory of this user, creating it (mode 0700) if missing,
/// by the rules of the module documentation. The error says what is wrong and with which
/// directory; a data directory whose mode was fixed is reported as [`ModeFixed`].
#[cfg(unix)]
pub fn check_private_dir(dir: &Path, kind: DirKind) -> io::Result<Option<ModeFixed>> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};

    let f = match open_dir_nofollow(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| refused(dir, format!("cannot create it: {e}")))?;
            open_dir_nofollow(dir)?
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_dir() {
        return Err(refused(dir, "not a directory".into()));
    }
    let me = rustix::process::getuid().as_raw();
    if meta.uid() != me {
        return Err(refused(
            dir,
            format!(
                "owned by user {}, not by this user ({me}); refusing it, as C tor does",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & OTHERS_WRITE != 0 {
        return Err(refused(
            dir,
            format!(
                "other users can write to it (mode {mode:04o}); refusing it (files may have \
                 been put there): use a new directory, or check it and chmod 700 it"
            ),
        ));
    }
    if mode & OTHERS != 0 {
        match kind {
            DirKind::Keys => {
                return Err(refused(
                    dir,
                    format!(
                        "other users can read it (mode {mode:04o}); refusing a key directory \
                         that is not private (chmod 700 it)"
                    ),
                ))
            }
            DirKind::Data => {
                let fixed = (mode & !OTHERS) | 0o700;
                f.set_permissions(std::fs::Permissions::from_mode(fixed))
                    .map_err(|e| refused(dir, format!("cannot chmod it to {fixed:04o}: {e}")))?;
                return Ok(Some(ModeFixed {
                    dir: dir.to_path_buf(),
                    was: mode,
                    now: fixed,
                }));
            }
        }
    }
    Ok(None)
}

/// Without Unix permissions there is nothing to check: the directory is only created.
#[cfg(not(unix))]
pub fn check_private_dir(dir: &Path, _kind: DirKind) -> io::Result<Option<ModeFixed>> {
    std::fs::create_dir_all(dir).map(|()| None)
}

/// Open `dir` itself (not what a symbolic link there points to) for `fstat`/`fchmod`.
#[cfg(unix)]
fn open_dir_nofollow(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        // Linux answers ELOOP or ENOTDIR for a symbolic link, depending on what it points to.
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                Err(refused(
                    dir,
                    "a symbolic link; refusing it, as C tor does (name the directory itself)"
                        .into(),
                ))
            } else {
                Err(refused(dir, "not a directory".into()))
            }
        }
        Err(e) => {
            let e = io::Error::from(e);
            Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
        }
    }
}

/// Create the new file `path` for writing, mode 0600; fails if anything (a file, a
/// symbolic link, even a dangling one) is already there.
#[cfg(unix)]
fn create_new_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn create_new_private(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Replace the file `name` of the private directory `dir` with `data`, atomically: written
/// to a new temporary file (random name, `O_EXCL|O_NOFOLLOW`, mode 0600), synced to disk,
/// then renamed into place. `name` is a plain file name, not a path.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let mut r = [0u8; 8];
    OsRng.fill_bytes(&mut r);
    write_atomic_via(dir, name, &format!(".{name}.{}.tmp", hex::encode(r)), data)
}

/// [`write_atomic`] with the temporary file name `tmp` chosen by the caller.
fn write_atomic_via(dir: &Path, name: &str, tmp: &str, data: &[u8]) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    let tmp = dir.join(tmp);
    let mut f = create_new_private(&tmp)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", tmp.display())))?;
    let written = f
        .write_all(data)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, dir.join(name)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself is durable once the directory is synced; a failure here loses
    // nothing that was there before.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Read a secret file of at most `max` bytes, refusing it if other users may read it (its
/// mode has any of the bits 0o077): a secret others can read is no longer one, and C tor's
/// users are told to keep `HiddenServiceDir` private. The error is one line naming the file
/// and its mode.
pub fn read_secret(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata()?.permissions().mode() & 0o7777;
        if mode & OTHERS != 0 {
            return Err(refused(
                path,
                format!(
                    "other users may read this secret key (mode {mode:04o}); refusing it \
                     (chmod 600 it)"
                ),
            ));
        }
    }
    let mut data = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: longer than {max} bytes", path.display()),
        ));
    }
    Ok(data)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("onion-io-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn missing_directories_are_created_0700() {
        let d = tmp("create");
        let inner = d.join("a/b");
        check_private_dir(&inner, DirKind::Data).unwrap();
        assert_eq!(mode(&inner), 0o700);
        assert_eq!(mode(&d), 0o700);
        // Checking again is fine and changes nothing.
        check_private_dir(&inner, DirKind::Keys).unwrap();
        assert_eq!(mode(&inner), 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writable_by_others_is_refused_readable_is_fixed_or_refused() {
        let d = tmp("modes");
        std::fs::create_dir_all(&d).unwrap();
        for m in [0o777, 0o770, 0o702, 0o720, 0o1777] {
            chmod(&d, m);
            for kind in [DirKind::Data, DirKind::Keys] {
                let e = check_private_dir(&d, kind).unwrap_err().to_string();
                assert!(
                    e.contains("other users can write") && !e.contains('\n'),
                    "{e}"
                );
                assert!(e.contains(&format!("{m:04o}")), "{e}");
            }
            assert_eq!(mode(&d), m, "a refused directory is left as it was");
        }
        chmod(&d, 0o755);
        let e = check_private_dir(&d, DirKind::Keys)
            .unwrap_err()
            .to_string();
        assert!(e.contains("other users can read it (mode 0755)"), "{e}");
        assert_eq!(mode(&d), 0o755);
        let fixed = check_private_dir(&d, DirKind::Data).unwrap().unwrap();
        assert_eq!((fixed.was, fixed.now), (0o755, 0o700));
        assert!(fixed.to_string().contains("mode 0755"), "{fixed}");
        assert_eq!(mode(&d), 0o700);
        assert_eq!(check_private_dir(&d, DirKind::Data).unwrap(), None);
        chmod(&d, 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_and_files_are_refused() {
        let d = tmp("links");
        let real = d.join("real");
        check_private_dir(&real, DirKind::Data).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = check_private_dir(&link, DirKind::Data)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let file = d.join("file");
        std::fs::write(&file, "x").unwrap();
        let e = check_private_dir(&file, DirKind::Data)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A directory owned by another user is refused: one given to `nobody` when the tests
    /// run as root, else `/` (root's).
    #[test]
    fn another_users_directory_is_refused() {
        let d = tmp("owner");
        let (dir, owner) = if rustix::process::getuid().is_root() {
            check_private_dir(&d, DirKind::Data).unwrap();
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            (d.as_path(), 65534)
        } else {
            (Path::new("/"), 0)
        };
        for kind in [DirKind::Data, DirKind::Keys] {
            let e = check_private_dir(dir, kind).unwrap_err().to_string();
            assert!(e.contains(&format!("owned by user {owner},")), "{e}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn atomic_writes_are_0600_and_never_follow_a_planted_link() {
        let d = tmp("write");
        check_private_dir(&d, DirKind::Data).unwrap();
        write_atomic(&d, "state", b"one").unwrap();
        assert_eq!(std::fs::read(d.join("state")).unwrap(), b"one");
        assert_eq!(mode(&d.join("state")), 0o600);
        // Replacing an existing 0644 file gives a 0600 one.
        chmod(&d.join("state"), 0o644);
        write_atomic(&d, "state", b"two").unwrap();
        assert_eq!(std::fs::read(d.join("state")).unwrap(), b"two");
        assert_eq!(mode(&d.join("state")), 0o600);
        // Only the final file is left.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state"]);

        // A symbolic link (to a victim file, or dangling) where the temporary file would go:
        // the write fails, and neither the victim nor the final file is touched.
        let victim = d.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.join(".state.x.tmp")).unwrap();
        assert!(write_atomic_via(&d, "state", ".state.x.tmp", b"evil").is_err());
        std::os::unix::fs::symlink(d.join("nowhere"), d.join(".state.y.tmp")).unwrap();
        assert!(write_atomic_via(&d, "state", ".state.y.tmp", b"evil").is_err());
        assert!(!d.join("nowhere").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(d.join("state")).unwrap(), b"two");
        assert!(write_atomic(&d, "../x", b"x").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn secrets_others_can_read_are_refused() {
        let d = tmp("secret");
        check_private_dir(&d, DirKind::Keys).unwrap();
        write_atomic(&d, "key", b"secret").unwrap();
        assert_eq!(read_secret(&d.join("key"), 100).unwrap(), b"secret");
        let e = read_secret(&d.join("key"), 3).unwrap_err().to_string();
        assert!(e.contains("longer than 3 bytes"), "{e}");
        for m in [0o644, 0o640, 0o604, 0o610] {
            chmod(&d.join("key"), m);
            let e = read_secret(&d.join("key"), 100).unwrap_err().to_string();
            assert!(
                e.contains("key:") && e.contains(&format!("mode {m:04o}")) && !e.contains('\n'),
                "{e}"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
