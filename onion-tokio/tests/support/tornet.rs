//! A private C tor network for this crate's interop tests, started once per test binary with
//! the repository's `tornet/tornet` script (authorities, exits, middles, a C tor client with
//! a SOCKS port, and an HTTP server on 127.0.0.1). Every process it started is stopped when
//! the test binary exits, however it exits: a watchdog shell blocks on a pipe whose only
//! writer is this process and runs `tornet stop` when the pipe closes. Set
//! `ONION_KEEP_TORNET=1` to keep the network's directory (logs) afterwards.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const TORNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tornet/tornet");

/// A running network.
pub struct TorNet {
    pub dir: PathBuf,
    /// A file with the `DirAuthority` lines.
    pub authorities_file: PathBuf,
    /// C tor client's SOCKS port.
    pub socks_port: u16,
    /// The HTTP server's port, document root and the body of `/`.
    pub http_port: u16,
    pub http_root: PathBuf,
    pub http_body: String,
    /// The C tor onion service's hostname (`....onion`), in front of the HTTP server.
    pub onion_hostname: String,
    /// Data directories of every relay and of the C tor client.
    datadirs: Vec<PathBuf>,
    relays: usize,
    _watchdog: Mutex<(Child, ChildStdin)>,
}

static NET: OnceLock<Result<TorNet, String>> = OnceLock::new();

fn installed(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The network of this test binary, or `None` (with a notice) without `tor`.
pub fn network() -> Option<&'static TorNet> {
    if !installed("tor") || !installed("tor-gencert") {
        eprintln!("SKIPPED: `tor`/`tor-gencert` not installed; interop test not run");
        return None;
    }
    match NET.get_or_init(TorNet::start) {
        Ok(n) => Some(n),
        Err(e) => panic!("private tor network failed: {e}"),
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(20).collect();
    Err(format!(
        "{cmd:?} failed: {}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

impl TorNet {
    fn start() -> Result<TorNet, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("onion-tokio-tornet-{}-{nanos}", std::process::id()));
        let keep = std::env::var_os("ONION_KEEP_TORNET").is_some();
        let script = format!(
            "cat >/dev/null; {TORNET} stop '{d}' >/dev/null 2>&1; {rm}",
            d = dir.display(),
            rm = if keep {
                String::new()
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
            .map_err(|e| format!("watchdog: {e}"))?;
        let stdin = child.stdin.take().ok_or("watchdog stdin")?;
        let t0 = Instant::now();
        eprintln!("tornet: starting a private network in {}", dir.display());
        run(Command::new(TORNET).arg("start").arg(&dir))?;
        run(Command::new(TORNET)
            .arg("wait")
            .arg(&dir)
            .args(["--timeout", "180"]))?;
        let text = std::fs::read_to_string(dir.join("state.json")).map_err(|e| e.to_string())?;
        let st: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let port = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as u16;
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let nodes = st["nodes"].as_object().ok_or("state.json: no nodes")?;
        let mut datadirs: Vec<PathBuf> = nodes
            .values()
            .filter(|n| n.get("orport").is_some())
            .map(|n| PathBuf::from(s(&n["datadir"])))
            .collect();
        let relays = datadirs.len();
        datadirs.push(PathBuf::from(s(&nodes["client"]["datadir"])));
        let lines: Vec<String> = st["dirauthority_lines"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        let authorities_file = dir.join("authorities.txt");
        std::fs::write(&authorities_file, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
        let hs = PathBuf::from(s(&nodes["hs"]["datadir"])).join("hidden_service/hostname");
        let onion_hostname = std::fs::read_to_string(&hs)
            .map(|h| h.trim().to_string())
            .map_err(|e| format!("{}: {e}", hs.display()))?;
        let net = TorNet {
            onion_hostname,
            authorities_file,
            socks_port: port(&nodes["client"]["socksport"]),
            http_port: port(&st["http"]["port"]),
            http_root: PathBuf::from(s(&st["http"]["root"])),
            http_body: s(&st["http"]["body"]),
            datadirs,
            relays,
            dir,
            _watchdog: Mutex::new((child, stdin)),
        };
        if let Err(e) = net.wait_settled(Duration::from_secs(240)) {
            eprintln!("tornet: WARNING, going on anyway: {e}");
        }
        eprintln!(
            "tornet: network ready after {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        Ok(net)
    }

    /// Wait until every relay and the C tor client hold a consensus listing every relay (an
    /// exit refuses streams from a relay missing from its consensus).
    fn wait_settled(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lagging: Vec<String> = self
                .datadirs
                .iter()
                .filter(|d| {
                    let n = ["cached-consensus", "cached-microdesc-consensus"]
                        .iter()
                        .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
                        .map(|t| t.lines().filter(|l| l.starts_with("r ")).count())
                        .max()
                        .unwrap_or(0);
                    n < self.relays
                })
                .map(|d| d.display().to_string())
                .collect();
            if lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("consensus not settled at {}", lagging.join(", ")));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `http://127.0.0.1:PORT/path` of the local HTTP server.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.http_port,
            path.trim_start_matches('/')
        )
    }
}

/// `curl --socks5-hostname` through C tor's client, bounded by `max_time` seconds:
/// (success, body, stderr).
pub fn curl_socks(socks_port: u16, url: &str, max_time: u64) -> (bool, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", &max_time.to_string()])
        .args(["--socks5-hostname", &format!("127.0.0.1:{socks_port}")])
        .arg(url)
        .output();
    match out {
        Ok(o) => (
            o.status.success(),
            o.stdout,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, Vec::new(), e.to_string()),
    }
}
