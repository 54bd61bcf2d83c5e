//! The relay's key directory, `DATA_DIR/keys/` (mode 0700, files 0600), in C tor's file
//! formats (tor-spec §0.3 names the keys; [`onion_crypto::keyfile`] encodes them), so a C
//! tor relay's `keys/` loads here and ours loads in C tor.
//!
//! The onion-key rotation time, which C tor keeps as `LastRotatedOnionKey` in its `state`
//! file, is kept in `DATA_DIR/relay-state` as the one line `LastRotatedOnionKey
//! YYYY-MM-DD HH:MM:SS` (the same keyword and time format).

use std::io;
use std::path::{Path, PathBuf};

use onion_crypto::keyfile;
use onion_crypto::relay_keyset::{KeyFiles, OnionKeyParams, RelayKeySet, Rotation};
use onion_dir::Timestamp;
use rand_core::CryptoRngCore;

use crate::net::private::{self, DirKind};

/// Largest key file read (the largest, an RSA-1024 PEM, is under 1 KiB).
const MAX_KEY_FILE: u64 = 16 << 10;
/// Name of the state file in the data directory.
pub const STATE_FILE: &str = "relay-state";
const STATE_KEYWORD: &str = "LastRotatedOnionKey";

/// Where the relay keeps its keys and state.
#[derive(Debug, Clone)]
pub struct KeyDir {
    data_dir: PathBuf,
    keys_dir: PathBuf,
}

impl KeyDir {
    /// Checks (or creates) `data_dir` and `data_dir/keys` as private directories.
    pub fn open(data_dir: &Path) -> io::Result<KeyDir> {
        private::check_private_dir(data_dir, DirKind::Data)?;
        let keys_dir = data_dir.join("keys");
        private::check_private_dir(&keys_dir, DirKind::Keys)?;
        Ok(KeyDir {
            data_dir: data_dir.to_path_buf(),
            keys_dir,
        })
    }

    /// The data directory (private, mode 0700).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The key directory.
    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    /// Reads every present key file; `None` when there is no `secret_id_key` (a new relay).
    fn read_files(&self) -> io::Result<Option<KeyFiles>> {
        let names = [
            keyfile::SECRET_ID_KEY,
            keyfile::ED25519_MASTER_ID_SECRET_KEY,
            keyfile::ED25519_MASTER_ID_PUBLIC_KEY,
            keyfile::ED25519_SIGNING_SECRET_KEY,
            keyfile::ED25519_SIGNING_CERT,
            keyfile::SECRET_ONION_KEY_NTOR,
            keyfile::SECRET_ONION_KEY_NTOR_OLD,
            keyfile::SECRET_ONION_KEY,
            keyfile::SECRET_ONION_KEY_OLD,
        ];
        let mut files = KeyFiles::default();
        for name in names {
            let path = self.keys_dir.join(name);
            match private::read_secret(&path, MAX_KEY_FILE) {
                Ok(bytes) => {
                    files.set(name, bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files.secret_id_key.is_some().then_some(files))
    }

    /// Writes `keys` as C tor's key files, removing the files of keys the set no longer
    /// holds (a previous onion key past its grace period), and the rotation time.
    pub fn write(&self, keys: &RelayKeySet) -> io::Result<()> {
        let files = keys.to_files().map_err(io::Error::other)?;
        for (name, bytes) in files.entries() {
            private::write_atomic(&self.keys_dir, name, bytes)?;
        }
        for (name, present) in [
            (
                keyfile::SECRET_ONION_KEY_NTOR_OLD,
                files.secret_onion_key_ntor_old.is_some(),
            ),
            (
                keyfile::SECRET_ONION_KEY_OLD,
                files.secret_onion_key_old.is_some(),
            ),
        ] {
            if !present {
                match std::fs::remove_file(self.keys_dir.join(name)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        let line = format!(
            "{STATE_KEYWORD} {}\n",
            Timestamp::from_unix(keys.onion_key_set_at().0)
        );
        private::write_atomic(&self.data_dir, STATE_FILE, line.as_bytes())
    }

    /// The onion-key rotation time from the state file (`None` when absent; an unreadable
    /// line is an error naming the file).
    fn read_rotation_time(&self) -> io::Result<Option<Timestamp>> {
        let path = self.data_dir.join(STATE_FILE);
        let text = match private::read_secret(&path, MAX_KEY_FILE) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&text);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(STATE_KEYWORD) {
                return Timestamp::parse_str(rest.trim())
                    .map(|t| Some(Timestamp(t.unix())))
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: bad {STATE_KEYWORD} line", path.display()),
                        )
                    });
            }
        }
        Ok(None)
    }

    /// Loads the key set, or generates one (with a TAP onion key, which C tor 0.4.9
    /// authorities require in a descriptor) at the first start; then rotates what is due
    /// at `now` and writes the files back if anything changed. Returns the keys and whether
    /// they were generated.
    pub fn load_or_generate(
        &self,
        now: Timestamp,
        params: &OnionKeyParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(RelayKeySet, bool), String> {
        let shown = self.keys_dir.display();
        let (mut keys, loaded) = match self.read_files().map_err(|e| e.to_string())? {
            Some(files) => {
                let at = self.read_rotation_time().map_err(|e| e.to_string())?;
                RelayKeySet::from_files(now, &files, at, rng)
                    .map_err(|e| format!("{shown}: {e}"))?
            }
            None => {
                let keys = RelayKeySet::generate(now, true, rng)
                    .map_err(|e| format!("generating relay keys: {e}"))?;
                let r = Rotation {
                    generated: true,
                    ..Rotation::default()
                };
                (keys, r)
            }
        };
        let rotated = keys
            .rotate(now, params, rng)
            .map_err(|e| format!("{shown}: {e}"))?;
        if loaded.files_changed() || rotated.files_changed() {
            self.write(&keys).map_err(|e| format!("{shown}: {e}"))?;
        }
        Ok((keys, loaded.generated))
    }
}

/// A second, equal key set (through the file encoding): the relay machine owns one, the
/// descriptor builder and the rotation keep the other.
pub fn duplicate(
    keys: &RelayKeySet,
    now: Timestamp,
    rng: &mut impl CryptoRngCore,
) -> Result<RelayKeySet, String> {
    let files = keys.to_files().map_err(|e| e.to_string())?;
    RelayKeySet::from_files(now, &files, Some(keys.onion_key_set_at()), rng)
        .map(|(k, _)| k)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn keys_persist_with_private_modes_and_rotation_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("onion-relay-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let now = Timestamp(1_796_000_000);
        let params = OnionKeyParams::new(None, None);
        let kd = KeyDir::open(&dir).unwrap();
        let (a, generated) = kd.load_or_generate(now, &params, &mut rng).unwrap();
        assert!(generated);
        assert!(a.tap_key().is_some());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(kd.keys_dir()), 0o700);
        assert_eq!(mode(&kd.keys_dir().join(keyfile::SECRET_ID_KEY)), 0o600);
        assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);
        // Loaded again a day later: the same identities, nothing regenerated.
        let later = Timestamp(now.0 + 86_400);
        let (b, generated) = kd.load_or_generate(later, &params, &mut rng).unwrap();
        assert!(!generated);
        assert_eq!(
            a.rsa_identity().public().identity(),
            b.rsa_identity().public().identity()
        );
        assert_eq!(a.ed_identity(), b.ed_identity());
        assert_eq!(b.onion_key_set_at(), now);
        // After the rotation period the onion key rotates, the old one kept and written.
        let rotated = Timestamp(now.0 + params.rotation_secs() + 1);
        let (c, _) = kd.load_or_generate(rotated, &params, &mut rng).unwrap();
        assert_eq!(c.onion_key_set_at(), rotated);
        assert_eq!(c.ntor_keys().len(), 2);
        assert!(kd
            .keys_dir()
            .join(keyfile::SECRET_ONION_KEY_NTOR_OLD)
            .exists());
        let d = duplicate(&c, rotated, &mut rng).unwrap();
        assert_eq!(d.ed_identity(), c.ed_identity());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
