//! What an application configures ([`TorClientConfig`] and its builder), the directory
//! authority list format it reads, and the data directory where [`onion_client::Persist`]
//! is kept between runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use onion_client::dir::{authorities, Authority, DirMode, DocKind};
use onion_client::{ClientConfig, Persist, State};
use onion_io::cache::Cache;

use crate::error::{Error, ErrorKind};

pub use onion_client::dir::authorities::PUBLIC_AUTHORITIES;

/// How long one directory request may take (circuit, stream and response), as the `onion`
/// command allows.
const DIR_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes an authorities file may have (the public list is under 2 KiB).
const MAX_AUTHORITIES_FILE: u64 = 1 << 20;

/// How a [`crate::TorClient`] runs. Build one with [`TorClientConfig::builder`];
/// [`TorClientConfig::default`] is the public network with in-memory state.
#[derive(Debug, Clone)]
pub struct TorClientConfig {
    pub(crate) client: ClientConfig,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) bootstrap_timeout: Duration,
}

impl Default for TorClientConfig {
    fn default() -> Self {
        // The built-in list always parses (a unit test checks it).
        let auths = parse_authorities(PUBLIC_AUTHORITIES).unwrap_or_default();
        TorClientConfig {
            client: client_config(auths),
            data_dir: None,
            bootstrap_timeout: Duration::from_secs(180),
        }
    }
}

impl TorClientConfig {
    /// A builder starting from the defaults (public network, in-memory state, C tor's
    /// client defaults).
    pub fn builder() -> TorClientConfigBuilder {
        TorClientConfigBuilder {
            authorities: None,
            data_dir: None,
            congestion_control: false,
            bootstrap_timeout: Duration::from_secs(180),
            limits: None,
        }
    }

    /// The onion-client configuration this runs with.
    pub fn client_config(&self) -> &ClientConfig {
        &self.client
    }
}

/// Builds a [`TorClientConfig`].
#[derive(Debug, Clone)]
pub struct TorClientConfigBuilder {
    authorities: Option<AuthSource>,
    data_dir: Option<PathBuf>,
    congestion_control: bool,
    bootstrap_timeout: Duration,
    limits: Option<onion_client::Limits>,
}

#[derive(Debug, Clone)]
enum AuthSource {
    File(PathBuf),
    Text(String),
}

impl TorClientConfigBuilder {
    /// Keep state (directory documents, guards, circuit build times) in `dir`: created with
    /// mode 0700 if missing, files written with mode 0600. Without it, state lives in memory
    /// and is lost at exit (every start bootstraps from the authorities).
    pub fn data_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keep state in memory only (the default).
    pub fn in_memory(mut self) -> Self {
        self.data_dir = None;
        self
    }

    /// Read the directory authorities from `path`, in C tor's torrc `DirAuthority` format
    /// (`DirAuthority name orport=N v3ident=HEX ip:dirport FINGERPRINT`), as a private
    /// network lists them. Without it, the public network's authorities are used.
    pub fn authorities_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.authorities = Some(AuthSource::File(path.into()));
        self
    }

    /// The directory authorities as text in the same format as
    /// [`TorClientConfigBuilder::authorities_file`].
    pub fn authorities(mut self, text: impl Into<String>) -> Self {
        self.authorities = Some(AuthSource::Text(text.into()));
        self
    }

    /// Negotiate congestion control (proposal 324) with exits that offer it (default off).
    pub fn congestion_control(mut self, on: bool) -> Self {
        self.congestion_control = on;
        self
    }

    /// How long [`crate::TorClient::bootstrap`] waits for a usable directory (default 180 s).
    pub fn bootstrap_timeout(mut self, d: Duration) -> Self {
        self.bootstrap_timeout = d;
        self
    }

    /// Every queue's bound in the client machine (default [`onion_client::Limits::default`]).
    pub fn limits(mut self, limits: onion_client::Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The configuration. Errors (kind `Misuse`) for an authorities file that cannot be read
    /// or parsed, or one without a v3 authority with an ORPort.
    ///
    /// This reads the authorities file (small, bounded to 1 MiB) synchronously: build the
    /// configuration before entering async code, or from `spawn_blocking`.
    pub fn build(self) -> Result<TorClientConfig, Error> {
        let text = match self.authorities {
            None => PUBLIC_AUTHORITIES.to_string(),
            Some(AuthSource::Text(t)) => t,
            Some(AuthSource::File(p)) => read_bounded(&p)?,
        };
        let auths = parse_authorities(&text)?;
        let mut client = client_config(auths);
        client.congestion_control = self.congestion_control;
        if let Some(l) = self.limits {
            client.limits = l;
        }
        Ok(TorClientConfig {
            client,
            data_dir: self.data_dir,
            bootstrap_timeout: self.bootstrap_timeout,
        })
    }
}

fn read_bounded(p: &Path) -> Result<String, Error> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| Error::config(format!("{}: {e}", p.display())))?;
    let mut text = String::new();
    f.take(MAX_AUTHORITIES_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Error::config(format!("{}: {e}", p.display())))?;
    Ok(text)
}

/// onion-client's configuration for `auths` ([`ClientConfig::for_network`]: C tor's fallbacks
/// on the public network; none and relaxed path rules on a testing network), with
/// microdescriptors on the public network and full descriptors on a testing network.
fn client_config(auths: Vec<Authority>) -> ClientConfig {
    // A testing network's exits accept only its own addresses (127.0.0.0/8), which no
    // microdescriptor policy summary can express (dir-spec §3.3 `p` lines summarize the
    // ports open to most addresses): there full descriptors are used, as `onion get` does.
    let mode = if onion_client::guards::is_testing_network(&auths) {
        DirMode::Full
    } else {
        DirMode::Micro
    };
    let mut cfg = ClientConfig::for_network(auths, mode);
    cfg.dir.request_timeout = DIR_REQUEST_TIMEOUT;
    cfg
}

/// Parse a list of directory authorities in the torrc `DirAuthority` format
/// ([`onion_client::dir::authorities`]); only v3 authorities with an ORPort are kept (the
/// client reaches them over BEGIN_DIR), and a list without one is an error (kind `Misuse`).
pub fn parse_authorities(text: &str) -> Result<Vec<Authority>, Error> {
    let list = authorities::parse_list(text).map_err(|e| Error::config(e.to_string()))?;
    let out: Vec<Authority> = authorities::v3_authorities(&list)
        .into_iter()
        .filter(|a| a.or_addr.is_some())
        .collect();
    if out.is_empty() {
        return Err(Error::config(
            "no v3 directory authority with an ORPort (`v3ident=`, `orport=`) in the list",
        ));
    }
    Ok(out)
}

/// The data directory ([`onion_io::cache`]: C tor's rules for a private directory, files of
/// mode 0600 replaced atomically, the same files as the `onion` command's `--data-dir`) and
/// the directory mode of the client whose state it keeps.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    cache: Cache,
    mode: DirMode,
}

impl DataDir {
    /// Open `dir`, creating it (mode 0700) if missing; refused (kind `Misuse`) if it is not
    /// private to this user (another user's, writable by others, a symbolic link), made
    /// private with a warning on stderr if others could only read it. Blocking: call from
    /// `spawn_blocking`.
    pub(crate) fn open(dir: &Path, mode: DirMode) -> Result<DataDir, Error> {
        let cache = Cache::open(dir).map_err(|e| {
            Error::local(
                ErrorKind::Misuse,
                format!("data directory {}: {e}", dir.display()),
            )
        })?;
        if let Some(fixed) = cache.mode_fixed() {
            eprintln!("onion-tokio: warning: {fixed}");
        }
        Ok(DataDir { cache, mode })
    }

    /// What an earlier run kept (expired documents left out). Blocking.
    pub(crate) fn load(&self, now: SystemTime) -> State {
        self.cache.load(self.mode, now)
    }

    /// Write what the client handed over. Blocking.
    pub(crate) fn store(&self, p: &Persist) -> std::io::Result<()> {
        self.cache.store(self.mode, p)
    }
}

/// Persisted state waiting for the writer, the latest of each kind only (a newer one
/// replaces an older one not yet written), so the queue never holds more than one entry per
/// kind: six.
#[derive(Debug, Default)]
pub(crate) struct PersistQueue {
    pending: BTreeMap<&'static str, Persist>,
}

impl PersistQueue {
    pub(crate) fn push(&mut self, p: Persist) {
        let key = match &p {
            Persist::Directory { kind, .. } => match kind {
                DocKind::Consensus => "consensus",
                DocKind::Certificates => "certificates",
                DocKind::Microdescs => "microdescs",
                DocKind::ServerDescs => "server-descriptors",
            },
            Persist::Guards(_) => "guards",
            Persist::BuildTimes(_) => "build-times",
            _ => "other",
        };
        self.pending.insert(key, p);
    }

    pub(crate) fn take(&mut self) -> Vec<Persist> {
        std::mem::take(&mut self.pending).into_values().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_authorities_parse() {
        let a = parse_authorities(PUBLIC_AUTHORITIES).unwrap();
        assert!(a.len() >= 8, "{}", a.len());
        assert!(a.iter().any(|x| x.name == "moria1"));
        let cfg = TorClientConfig::default();
        assert!(!cfg.client.dir.fallbacks.is_empty());
        assert!(cfg.client.path.enforce_distinct_subnets);
    }

    #[test]
    fn private_authorities_are_a_testing_network() {
        let text = "DirAuthority auth0 orport=5001 no-v2 v3ident=329F4451BAA808E78DF40D2F286080779AD22095 127.0.0.1:7001 A07048407BC479AA3FDD636ABF78594D2378FAF6\n";
        let cfg = TorClientConfig::builder()
            .authorities(text)
            .build()
            .unwrap();
        assert_eq!(cfg.client.dir.authorities.len(), 1);
        assert_eq!(cfg.client.dir.authorities[0].name, "auth0");
        assert_eq!(
            cfg.client.dir.authorities[0].or_addr,
            Some("127.0.0.1:5001".parse().unwrap())
        );
        assert!(cfg.client.dir.fallbacks.is_empty());
        assert!(!cfg.client.path.enforce_distinct_subnets);
        assert_eq!(cfg.client.dir.mode, DirMode::Full);
        let e = TorClientConfig::builder()
            .authorities("# nothing\n")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Misuse);
        let e = TorClientConfig::builder()
            .authorities("DirAuthority x orport=1 v3ident=XYZ 127.0.0.1:2 AB\n")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    /// State goes to the data directory and comes back; a directory other users can write
    /// is refused as a misuse (onion-io's tests check the rest of the rules).
    #[test]
    fn data_directory_round_trip_and_refusal() {
        let dir = std::env::temp_dir().join(format!("onion-tokio-dd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = DataDir::open(&dir.join("sub"), DirMode::Micro).unwrap();
        d.store(&Persist::Directory {
            kind: DocKind::Consensus,
            text: "cons".into(),
            keep_until: onion_client::Timestamp(4_000_000_000),
        })
        .unwrap();
        let st = d.load(SystemTime::now());
        assert_eq!(st.directory.consensus.as_deref(), Some("cons"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let sub = dir.join("sub");
            std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
            let e = DataDir::open(&sub, DirMode::Micro).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Misuse);
            assert!(e.to_string().contains("other users can write"), "{e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn persist_queue_keeps_the_latest_of_each_kind() {
        let mut q = PersistQueue::default();
        for i in 0..100 {
            q.push(Persist::Guards(format!("{i}")));
            q.push(Persist::BuildTimes(format!("{i}")));
        }
        assert_eq!(q.len(), 2);
        let v = q.take();
        assert!(v.contains(&Persist::Guards("99".into())));
        assert_eq!(q.len(), 0);
    }
}
