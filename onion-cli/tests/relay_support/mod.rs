//! Helpers of the `onion relay` interop tests: starting our relays in a private C tor
//! network, waiting for the authorities to list them, reading their counters, and a C tor
//! client with its own torrc lines.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::{self, Daemon, TorNet};

/// A fresh private directory under the network's directory.
pub fn fresh_dir(net: &TorNet, name: &str) -> PathBuf {
    let d = net.dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Starts `onion relay` and waits for its key line; returns the daemon and the fingerprint.
pub fn start_relay(net: &TorNet, nickname: &str, data_dir: &Path, port: u16) -> (Daemon, String) {
    start_relay_with(net, nickname, data_dir, port, &[])
}

/// [`start_relay`] with more arguments.
pub fn start_relay_with(
    net: &TorNet,
    nickname: &str,
    data_dir: &Path,
    port: u16,
    more: &[&str],
) -> (Daemon, String) {
    let or_port = format!("127.0.0.1:{port}");
    let mut args = vec![
        "relay",
        "--or-port",
        &or_port,
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--authorities",
        net.authorities_file.to_str().unwrap(),
        "--nickname",
        nickname,
        "--contact",
        "onion-test@tornet.invalid",
        "--testing-network",
    ];
    args.extend_from_slice(more);
    let mut d = Daemon::start(&args);
    let line = d.wait_for("fingerprint", Duration::from_secs(60));
    let fp = line
        .split("fingerprint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(fp.len(), 40, "{line}");
    (d, fp)
}

/// Waits until every authority answered the upload with 200; returns those lines.
pub fn wait_accepted(d: &Daemon, n_auth: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = d.stderr();
        let ups: Vec<String> = err
            .lines()
            .filter(|l| l.contains("descriptor upload to"))
            .map(str::to_string)
            .collect();
        if ups.len() >= n_auth {
            assert!(
                ups.iter().all(|l| l.contains(": accepted")),
                "an authority refused the descriptor:\n{err}"
            );
            return ups;
        }
        assert!(Instant::now() < deadline, "uploads not answered:\n{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unpadded standard base64 (the consensus `r` line's identity form).
pub fn base64_unpadded(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The flags (`s` line) of the relay `fp` in the consensus at `path`, if listed.
pub fn consensus_flags(path: &Path, fp: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = hex::decode(fp).ok()?;
    let b64 = base64_unpadded(&id);
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("r ") && l.split(' ').nth(2) == Some(b64.as_str()) {
            for l2 in lines.by_ref() {
                if let Some(flags) = l2.strip_prefix("s ") {
                    return Some(flags.split(' ').map(str::to_string).collect());
                }
                if l2.starts_with("r ") {
                    return Some(Vec::new());
                }
            }
        }
    }
    None
}

/// The `Bandwidth=` weight (kilobytes per second, dir-spec §3.4.1 `w` line) of the relay
/// `fp` in the consensus at `path`, if listed with one.
pub fn consensus_bandwidth(path: &Path, fp: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let b64 = base64_unpadded(&hex::decode(fp).ok()?);
    let mut lines = text.lines();
    lines.find(|l| l.starts_with("r ") && l.split(' ').nth(2) == Some(b64.as_str()))?;
    for l in lines {
        if l.starts_with("r ") {
            return None;
        }
        if let Some(w) = l.strip_prefix("w ") {
            return w
                .split(' ')
                .find_map(|kv| kv.strip_prefix("Bandwidth="))
                .and_then(|v| v.parse().ok());
        }
    }
    None
}

/// The bandwidth-observed value (bytes per second) of the relay's first published
/// descriptor, from its "publishing descriptor ... bandwidth observed N bytes/s" line.
pub fn first_published_bandwidth(d: &Daemon) -> Option<u64> {
    let err = d.stderr();
    let line = err.lines().find(|l| l.contains("publishing descriptor"))?;
    line.split("bandwidth observed ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The relays of `fps` whose microdescriptor the C tor node with data directory `datadir`
/// does not hold yet: those its microdescriptor consensus (`cached-microdesc-consensus`)
/// does not list, or lists with an `m` digest (dir-spec §3.4.1: sha256 of the
/// microdescriptor, from its `onion-key` line) that matches nothing in its microdescriptor
/// cache (`cached-microdescs` and the journal `cached-microdescs.new`, where C tor appends
/// each microdescriptor as it arrives).
pub fn microdescs_missing<'a>(datadir: &Path, fps: &[&'a str]) -> Vec<&'a str> {
    let consensus =
        std::fs::read_to_string(datadir.join("cached-microdesc-consensus")).unwrap_or_default();
    let mut held = std::collections::HashSet::new();
    for f in ["cached-microdescs", "cached-microdescs.new"] {
        let text = std::fs::read_to_string(datadir.join(f)).unwrap_or_default();
        // Each microdescriptor runs from its `onion-key` line to the next annotation
        // (`@...`) or `onion-key` line.
        let mut cur: Option<String> = None;
        for l in text.split_inclusive('\n') {
            let starts = l.starts_with("onion-key");
            if l.starts_with('@') || starts {
                if let Some(md) = cur.take() {
                    held.insert(base64_unpadded(&Sha256::digest(md.as_bytes())));
                }
                if starts {
                    cur = Some(l.to_string());
                }
            } else if let Some(md) = cur.as_mut() {
                md.push_str(l);
            }
        }
        if let Some(md) = cur {
            held.insert(base64_unpadded(&Sha256::digest(md.as_bytes())));
        }
    }
    fps.iter()
        .copied()
        .filter(|fp| {
            let Some(id) = hex::decode(fp).ok().map(|id| base64_unpadded(&id)) else {
                return true;
            };
            let mut lines = consensus.lines();
            if lines
                .find(|l| l.starts_with("r ") && l.split(' ').nth(2) == Some(id.as_str()))
                .is_none()
            {
                return true;
            }
            let digest = lines
                .take_while(|l| !l.starts_with("r "))
                .find_map(|l| l.strip_prefix("m "));
            !digest.is_some_and(|d| held.contains(d.trim()))
        })
        .collect()
}

/// Waits until the consensus at every path lists every relay of `fps` with Running and
/// Valid; returns the flags of each relay in the first path's consensus.
pub fn wait_listed(paths: &[PathBuf], fps: &[&str], timeout: Duration) -> Vec<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let all: Option<Vec<Vec<String>>> = paths
            .iter()
            .flat_map(|p| fps.iter().map(move |fp| consensus_flags(p, fp)))
            .collect();
        if let Some(all) = all {
            if all
                .iter()
                .all(|f| f.iter().any(|x| x == "Running") && f.iter().any(|x| x == "Valid"))
            {
                return all[..fps.len()].to_vec();
            }
        }
        assert!(
            Instant::now() < deadline,
            "not listed Running+Valid within {timeout:?}: {:?}",
            paths
                .iter()
                .map(|p| fps
                    .iter()
                    .map(|fp| consensus_flags(p, fp))
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A C tor client of the network with `extra` torrc lines; killed on drop.
pub struct TorClient {
    child: Child,
    /// Its data directory (`notice.log` and `info.log` are there).
    pub dir: PathBuf,
    /// Its SOCKS port.
    pub socks_port: u16,
}

impl TorClient {
    pub fn start(net: &TorNet, name: &str, extra: &str) -> TorClient {
        let dir = fresh_dir(net, name);
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let socks_port = support::free_port();
        let torrc = format!(
            "TestingTorNetwork 1\nDataDirectory {d}\nRunAsDaemon 0\nSandbox 0\n\
             Log notice file {d}/notice.log\nLog info file {d}/info.log\nSafeLogging 0\nSocksPort 127.0.0.1:{socks_port}\n\
             Address 127.0.0.1\nAddressDisableIPv6 1\nClientUseIPv6 0\n\
             PathsNeededToBuildCircuits 0.67\nUseMicrodescriptors 0\n{auth}\n{extra}\n",
            d = dir.display(),
            auth = net.dirauthority_lines.join("\n"),
        );
        let torrc_path = dir.join("torrc");
        std::fs::write(&torrc_path, torrc).unwrap();
        let empty = dir.join("torrc-defaults");
        std::fs::write(&empty, "").unwrap();
        let child = Command::new("tor")
            .arg("-f")
            .arg(&torrc_path)
            .arg("--defaults-torrc")
            .arg(&empty)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tor");
        TorClient {
            child,
            dir,
            socks_port,
        }
    }

    pub fn wait_bootstrapped(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(self.dir.join("notice.log")).unwrap_or_default();
            if log.contains("Bootstrapped 100%") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "C tor client not bootstrapped:\n{}",
                support::last_lines(&log, 20)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for TorClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The counters of the relay's latest `stats:` line (`name value` pairs; `refused a/b` is
/// left out).
pub fn last_stats(d: &Daemon) -> Option<std::collections::HashMap<String, u64>> {
    let err = d.stderr();
    let line = err.lines().rfind(|l| l.contains("onion relay: stats:"))?;
    let words: Vec<&str> = line.split("stats:").nth(1)?.split_whitespace().collect();
    Some(
        words
            .chunks(2)
            .filter_map(|p| Some((p.first()?.to_string(), p.get(1)?.parse().ok()?)))
            .collect(),
    )
}

/// One counter of the relay's latest stats line (0 when absent).
pub fn stat(d: &Daemon, name: &str) -> u64 {
    last_stats(d)
        .and_then(|m| m.get(name).copied())
        .unwrap_or(0)
}

/// Waits until `ok` holds for the relay's latest counters; returns them (panics after
/// `timeout`, showing the relay's last lines).
pub fn wait_stats(
    d: &Daemon,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&std::collections::HashMap<String, u64>) -> bool,
) -> std::collections::HashMap<String, u64> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(m) = last_stats(d).filter(|m| ok(m)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}:\n{}",
            support::last_lines(&d.stderr(), 15)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts that the relay published only after its reachability self-test succeeded (the
/// self-test line comes before the first "publishing descriptor" line).
pub fn assert_published_after_self_test(d: &Daemon) {
    let err = d.stderr();
    let pos = |needle: &str| err.lines().position(|l| l.contains(needle));
    let reachable = pos("self-test: ORPort").expect("no successful self-test");
    let published = pos("publishing descriptor").expect("no descriptor published");
    assert!(
        reachable < published,
        "published before the self-test:\n{err}"
    );
}

/// The torrc lines giving a C tor client a control port on 127.0.0.1 (no authentication:
/// a private test network on loopback).
pub fn control_port_lines(port: u16) -> String {
    format!("ControlPort 127.0.0.1:{port}\nCookieAuthentication 0\n")
}

/// Asynchronous events (control-spec §4.1) of a C tor client's control port, recorded by a
/// thread until the client exits (at most [`Events::MAX_LINES`] lines are kept).
pub struct Events {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Events {
    /// Lines kept; later ones are dropped.
    pub const MAX_LINES: usize = 200_000;

    /// Connects to the control port on 127.0.0.1:`port` and subscribes to `names`
    /// (`SETEVENTS`, e.g. `CIRC CIRC_BW`). Panics if the port does not answer within 30 s.
    pub fn subscribe(port: u16, names: &str) -> Events {
        use std::io::{BufRead, Write};
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "control port {port}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let mut w = s.try_clone().unwrap();
        w.write_all(format!("AUTHENTICATE \"\"\r\nSETEVENTS {names}\r\n").as_bytes())
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                let mut v = l2.lock().unwrap();
                if v.len() < Events::MAX_LINES {
                    v.push(line);
                }
            }
        });
        Events { lines }
    }

    /// The event lines (`650 ...`) received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("650 "))
            .cloned()
            .collect()
    }
}

/// `GETINFO key` on the control port at 127.0.0.1:`port` (control-spec §3.9): the reply's
/// data lines.
pub fn getinfo(port: u16, key: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("control port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("AUTHENTICATE \"\"\r\nGETINFO {key}\r\nQUIT\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    // A one-line value comes as `250-key=value`, a longer one as `250+key=`, its lines and
    // a lone `.`.
    out.lines()
        .filter_map(|l| match l.strip_prefix("250-") {
            Some(kv) => kv.split_once('=').map(|(_, v)| v.to_string()),
            None => (!l.starts_with("250") && l != ".").then(|| l.to_string()),
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The ids of the client's built circuits whose last hop is the relay `fp` (from
/// `GETINFO circuit-status`: `ID BUILT $FP~name,...,$FP~name ...`).
pub fn circuits_ending_at(port: u16, fp: &str) -> Vec<String> {
    getinfo(port, "circuit-status")
        .iter()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let id = w.next()?;
            if w.next()? != "BUILT" {
                return None;
            }
            let last = w.next()?.rsplit(',').next()?;
            last.trim_start_matches('$')
                .starts_with(fp)
                .then(|| id.to_string())
        })
        .collect()
}

/// The ids of the client's built circuits with the relay `fp` on their path.
pub fn circuits_through(port: u16, fp: &str) -> Vec<String> {
    getinfo(port, "circuit-status")
        .iter()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let id = w.next()?;
            if w.next()? != "BUILT" {
                return None;
            }
            w.next()?
                .split(',')
                .any(|hop| hop.trim_start_matches('$').starts_with(fp))
                .then(|| id.to_string())
        })
        .collect()
}

/// `CLOSECIRCUIT id` on the control port at 127.0.0.1:`port` (control-spec §3.18): the
/// client sends DESTROY for that circuit. Panics unless the client answers `250`.
pub fn close_circuit(port: u16, id: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("control port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("AUTHENTICATE \"\"\r\nCLOSECIRCUIT {id}\r\nQUIT\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let replies: Vec<&str> = out.lines().collect();
    assert!(
        replies.len() >= 2 && replies[1].starts_with("250"),
        "CLOSECIRCUIT {id}: {out}"
    );
}
