//! Test harness: a private C tor network on 127.0.0.1, started with the repository's
//! `tornet/tornet` script (authorities, exits, middles, a C tor client with a SOCKS port, a
//! C tor onion service, and an HTTP server), shared by all tests of one test binary. The
//! interop tests of onion-cli and onion-tokio run against it: C tor is the judge of
//! behaviour.
//!
//! - [`network`] starts the network once per test binary (startup costs 20-40 s), waits for a
//!   consensus that every node holds (bounded; a clear panic otherwise), and returns `None`
//!   with a printed notice when `tor` is not installed.
//! - Every process the network started is stopped when the test binary exits, even on panic,
//!   abort or SIGKILL: a watchdog shell blocks on a pipe whose only writer is this process and
//!   runs `tornet stop` when it closes. A `TorNet` value that is dropped normally stops its
//!   network at once.
//! - Set `ONION_KEEP_TORNET=1` to keep the network's directory (logs) after the run. The
//!   network lives under the temporary directory (`TMPDIR`).
//!
//! # A test's loop
//!
//! An interop test takes the shared network, runs what it checks against it (here C tor's
//! own client, fetching the local page through an exit) and compares with what the network
//! knows:
//!
//! ```no_run
//! let Some(net) = onion_tornet::network() else {
//!     return; // C tor is not installed: the test is skipped with a notice
//! };
//! let ((status, body, stderr), _retries) =
//!     onion_tornet::curl_socks_retrying(net.socks_port, &net.url("/"), 30, 3);
//! assert!(status.success(), "curl: {stderr}");
//! assert_eq!(body, net.http_body.as_bytes());
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository's private-network script.
pub const TORNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tornet/tornet");

/// Upper bound for `tornet start` (key generation) and for `tornet wait`.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const WAIT_TIMEOUT_S: u64 = 180;

/// One relay of the private network.
#[derive(Clone, Debug)]
pub struct Relay {
    /// Nickname (`auth0`, `exit1`, `relay2`, ...).
    pub nickname: String,
    /// `authority`, `exit` or `middle`.
    pub role: String,
    /// `127.0.0.1:ORPORT`.
    pub or_addr: String,
    /// `127.0.0.1:DIRPORT`.
    pub dir_addr: String,
    /// RSA identity fingerprint, 40 upper-case hex digits.
    pub fingerprint: String,
    /// Ed25519 identity, unpadded base64 (as in C tor's `fingerprint-ed25519`).
    pub ed25519: String,
    /// Its data directory.
    pub datadir: PathBuf,
    /// Its process id.
    pub pid: u32,
}

/// A running private network and everything a test needs to know about it.
pub struct TorNet {
    /// The network's directory (all state and logs).
    pub dir: PathBuf,
    /// Every relay (authorities, exits, middles).
    pub relays: Vec<Relay>,
    /// The `DirAuthority ...` torrc lines.
    pub dirauthority_lines: Vec<String>,
    /// A file holding those lines (for `--authorities`).
    pub authorities_file: PathBuf,
    /// C tor client's SOCKS port.
    pub socks_port: u16,
    /// C tor client's data directory (its `cached-consensus` is the reference relay list).
    pub client_datadir: PathBuf,
    /// The onion service's hostname (`....onion`).
    pub onion_hostname: String,
    /// The local HTTP server: port, URL, document root and the body of `/`.
    pub http_port: u16,
    /// `http://127.0.0.1:PORT/`.
    pub http_url: String,
    /// Document root: files written here are served.
    pub http_root: PathBuf,
    /// The body of `/`.
    pub http_body: String,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    onion_ready: OnceLock<Result<(), String>>,
}

static NET: OnceLock<Result<TorNet, String>> = OnceLock::new();
static NET_ANY_EXIT: OnceLock<Result<TorNet, String>> = OnceLock::new();

/// True if `tor` and `tor-gencert` are on PATH.
pub fn tor_installed() -> bool {
    ["tor", "tor-gencert"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The network shared by this test binary, started on first use; `None` (with a notice) if
/// `tor` is not installed. Panics with the reason if the network does not come up in time.
pub fn network() -> Option<&'static TorNet> {
    if !tor_installed() {
        eprintln!("SKIPPED: `tor`/`tor-gencert` not installed (apt-get install tor); interop test not run");
        return None;
    }
    match NET.get_or_init(TorNet::start) {
        Ok(n) => Some(n),
        Err(e) => panic!("private tor network failed: {e}"),
    }
}

/// As [`network`], but the network is started with `tornet start --any-exit`: its
/// authorities vote the Exit flag for any relay (relays of ours that join it can be exits).
/// A test binary uses either this or [`network`].
pub fn network_any_exit() -> Option<&'static TorNet> {
    if !tor_installed() {
        eprintln!("SKIPPED: `tor`/`tor-gencert` not installed (apt-get install tor); interop test not run");
        return None;
    }
    match NET_ANY_EXIT.get_or_init(|| TorNet::start_with(true)) {
        Ok(n) => Some(n),
        Err(e) => panic!("private tor network failed: {e}"),
    }
}

impl TorNet {
    /// Start a new network in a fresh temporary directory and wait until it is usable.
    pub fn start() -> Result<TorNet, String> {
        Self::start_with(false)
    }

    /// [`TorNet::start`]; `any_exit`: `tornet start --any-exit`.
    pub fn start_with(any_exit: bool) -> Result<TorNet, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("onion-tornet-{}-{nanos}", std::process::id()));
        let keep = std::env::var_os("ONION_KEEP_TORNET").is_some();
        let watchdog = spawn_watchdog(&dir, keep)?;
        let t0 = Instant::now();
        eprintln!("tornet: starting a private network in {}", dir.display());
        let (st, _, err) = run_bounded(
            Command::new(TORNET)
                .arg("start")
                .arg(&dir)
                .args(any_exit.then_some("--any-exit")),
            START_TIMEOUT,
        )?;
        if !st.success() {
            return Err(format!("`tornet start` failed: {}", last_lines(&err, 15)));
        }
        let (st, _, err) = run_bounded(
            Command::new(TORNET)
                .arg("wait")
                .arg(&dir)
                .args(["--timeout", &WAIT_TIMEOUT_S.to_string()]),
            Duration::from_secs(WAIT_TIMEOUT_S + 30),
        )?;
        if !st.success() {
            return Err(format!("no usable consensus: {}", last_lines(&err, 25)));
        }
        let mut net = Self::load(&dir)?;
        net.watchdog = Mutex::new(Some(watchdog));
        // A relay stuck in C tor's download back-off should not sink every test: after the
        // bound, go on with a notice (streams refused meanwhile are retried by the client).
        if let Err(e) = net.wait_for_settled_consensus(Duration::from_secs(240)) {
            eprintln!("tornet: WARNING, going on anyway: {e}");
        }
        eprintln!(
            "tornet: network ready after {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        Ok(net)
    }

    fn load(dir: &Path) -> Result<TorNet, String> {
        let text = std::fs::read_to_string(dir.join("state.json"))
            .map_err(|e| format!("{}/state.json: {e}", dir.display()))?;
        let st: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("state.json: {e}"))?;
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let port = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as u16;
        let nodes = st["nodes"].as_object().ok_or("state.json: no nodes")?;
        let mut relays = Vec::new();
        for (name, n) in nodes {
            if n.get("orport").is_none() {
                continue;
            }
            let datadir = PathBuf::from(s(&n["datadir"]));
            let ed25519 = std::fs::read_to_string(datadir.join("fingerprint-ed25519"))
                .ok()
                .and_then(|t| t.split_whitespace().nth(1).map(str::to_string))
                .unwrap_or_else(|| s(&n["ed25519"]));
            relays.push(Relay {
                nickname: name.clone(),
                role: s(&n["role"]),
                or_addr: format!("127.0.0.1:{}", port(&n["orport"])),
                dir_addr: format!("127.0.0.1:{}", port(&n["dirport"])),
                fingerprint: s(&n["fingerprint"]),
                ed25519,
                datadir,
                pid: st["pids"][name].as_u64().unwrap_or(0) as u32,
            });
        }
        relays.sort_by(|a, b| a.nickname.cmp(&b.nickname));
        let dirauthority_lines: Vec<String> = st["dirauthority_lines"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        let authorities_file = dir.join("authorities.txt");
        std::fs::write(&authorities_file, dirauthority_lines.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", authorities_file.display()))?;
        let hs_dir = PathBuf::from(s(&nodes["hs"]["datadir"])).join("hidden_service");
        let onion_hostname = std::fs::read_to_string(hs_dir.join("hostname"))
            .map(|h| h.trim().to_string())
            .map_err(|e| format!("onion service hostname: {e}"))?;
        let http_port = port(&st["http"]["port"]);
        Ok(TorNet {
            dir: dir.to_path_buf(),
            relays,
            dirauthority_lines,
            authorities_file,
            socks_port: port(&nodes["client"]["socksport"]),
            client_datadir: PathBuf::from(s(&nodes["client"]["datadir"])),
            onion_hostname,
            http_port,
            http_url: format!("http://127.0.0.1:{http_port}/"),
            http_root: PathBuf::from(s(&st["http"]["root"])),
            http_body: s(&st["http"]["body"]),
            watchdog: Mutex::new(None),
            onion_ready: OnceLock::new(),
        })
    }

    /// Wait until every relay and C tor's client hold a consensus (each flavour they keep,
    /// and at least one) listing every relay. Until then a relay may not know its neighbours:
    /// an exit refuses streams from a previous hop missing from its consensus ("open a stream
    /// from unknown relay", END reason MISC; an exit with no consensus yet refuses them all),
    /// and C tor's client's relay list is incomplete.
    fn wait_for_settled_consensus(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut dirs: Vec<PathBuf> = self.relays.iter().map(|r| r.datadir.clone()).collect();
        dirs.push(self.client_datadir.clone());
        loop {
            let lagging: Vec<String> = dirs
                .iter()
                .filter_map(|d| {
                    let counts: Vec<(&str, usize)> =
                        ["cached-consensus", "cached-microdesc-consensus"]
                            .into_iter()
                            .filter_map(|f| {
                                let text = std::fs::read_to_string(d.join(f)).ok()?;
                                Some((f, text.lines().filter(|l| l.starts_with("r ")).count()))
                            })
                            .collect();
                    let settled =
                        !counts.is_empty() && counts.iter().all(|&(_, n)| n >= self.relays.len());
                    (!settled).then(|| format!("{}: {counts:?}", d.display()))
                })
                .collect();
            if lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "consensus did not reach every node within {timeout:?}: {}",
                    lagging.join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Wait (once per network) until C tor's client can fetch the page through the onion
    /// service: the service's descriptor is then on the HSDirs.
    pub fn wait_onion(&self) -> Result<(), String> {
        self.onion_ready
            .get_or_init(|| {
                let (st, _, err) = run_bounded(
                    Command::new(TORNET).arg("wait").arg(&self.dir).args([
                        "--onion",
                        "--timeout",
                        "150",
                    ]),
                    Duration::from_secs(180),
                )?;
                if st.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "onion service not reachable: {}",
                        last_lines(&err, 20)
                    ))
                }
            })
            .clone()
    }

    /// `http://127.0.0.1:PORT/path` of the local HTTP server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http_url, path.trim_start_matches('/'))
    }

    /// The relay called `nickname`.
    pub fn relay(&self, nickname: &str) -> &Relay {
        self.relays
            .iter()
            .find(|r| r.nickname == nickname)
            .unwrap_or_else(|| panic!("no relay {nickname}"))
    }

    /// Kill one relay (SIGKILL), as a crash would.
    pub fn kill_relay(&self, nickname: &str) {
        let pid = self.relay(nickname).pid;
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }

    /// Stop every process of the network now (idempotent).
    pub fn stop(&self) {
        let w = self.watchdog.lock().map(|mut g| g.take()).unwrap_or(None);
        if let Some((mut child, stdin)) = w {
            drop(stdin); // the watchdog runs `tornet stop` when its stdin closes
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
        }
    }
}

impl Drop for TorNet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A shell that waits for its stdin to close (this process exited or dropped it) and then
/// stops the network in `dir` and removes the directory (unless `keep`).
fn spawn_watchdog(dir: &Path, keep: bool) -> Result<(Child, ChildStdin), String> {
    let script = format!(
        "cat >/dev/null; '{t}' stop '{d}' >/dev/null 2>&1; {rm}",
        t = TORNET,
        d = dir.display(),
        rm = if keep {
            String::from("true")
        } else {
            format!("rm -rf '{}'", dir.display())
        }
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the watchdog shell: {e}"))?;
    let stdin = child.stdin.take().ok_or("watchdog has no stdin")?;
    Ok((child, stdin))
}

/// Run a command to completion within `timeout` (killed after it), capturing its output.
pub fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<(ExitStatus, String, String), String> {
    let (st, out, err) = run_bounded_bytes(cmd, timeout)?;
    Ok((st, String::from_utf8_lossy(&out).into_owned(), err))
}

/// As [`run_bounded`], with stdout as raw bytes.
pub fn run_bounded_bytes(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<(ExitStatus, Vec<u8>, String), String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{desc}: {e}"))?;
    let mut out_pipe = child.stdout.take().ok_or("no stdout")?;
    let mut err_pipe = child.stderr.take().ok_or("no stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{desc} did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("{desc}: {e}")),
        }
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    Ok((status, out, String::from_utf8_lossy(&err).into_owned()))
}

/// The last `n` lines of `text`, joined (for failure messages).
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// [`curl_socks`], repeated (at most `attempts` times, 2 s apart) while it fails. A young
/// private network's exits sometimes refuse a stream (END reason MISC) from a relay they have
/// not yet learnt of; a request through a proxy is then simply made again, as a browser would.
/// Returns the last result and how many attempts failed before it.
pub fn curl_socks_retrying(
    socks_port: u16,
    url: &str,
    max_time: u64,
    attempts: usize,
) -> ((ExitStatus, Vec<u8>, String), usize) {
    let mut failed = 0;
    loop {
        let r = curl_socks(socks_port, url, max_time);
        if r.0.success() || failed + 1 >= attempts {
            return (r, failed);
        }
        eprintln!("curl through SOCKS failed ({}), trying again", r.2.trim());
        failed += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `curl --socks5-hostname` through `127.0.0.1:socks_port`, bounded by `max_time` seconds:
/// its exit status, the body and its stderr.
pub fn curl_socks(socks_port: u16, url: &str, max_time: u64) -> (ExitStatus, Vec<u8>, String) {
    run_bounded_bytes(
        Command::new("curl")
            .args(["-sS", "--max-time", &max_time.to_string()])
            .args(["--socks5-hostname", &format!("127.0.0.1:{socks_port}")])
            .arg(url),
        Duration::from_secs(max_time + 10),
    )
    .expect("curl")
}
