//! Test support: the private C tor network on 127.0.0.1 of the `onion-tornet` harness
//! ([`network`], [`TorNet`], [`run_bounded`], [`curl_socks`], ...; re-exported here, see
//! that crate), shared by all tests of one test binary, and the `onion` binary under test
//! ([`onion`], [`Daemon`]).
//!
//! Set `ONION_KEEP_TORNET=1` to keep the network's directory (logs) after the run.

#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use onion_tornet::*;

/// The `onion` binary under test.
pub fn onion() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onion"))
}

/// A background `onion` process (a proxy or a service), killed when dropped, whose stderr
/// is collected line by line.
pub struct Daemon {
    child: Child,
    lines: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Start `onion ARGS...`.
    pub fn start(args: &[&str]) -> Daemon {
        let mut child = onion()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start onion");
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let l2 = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let r = std::io::BufReader::new(&mut stderr);
            for line in r.lines().map_while(Result::ok) {
                if let Ok(mut v) = l2.lock() {
                    v.push(line);
                }
            }
        });
        Daemon { child, lines }
    }

    /// Wait until a stderr line contains `needle` (panics after `timeout`, showing stderr).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .ok()
                .and_then(|v| v.iter().find(|l| l.contains(needle)).cloned())
            {
                return l;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("onion exited ({st}) before {needle:?}:\n{}", self.stderr());
            }
            if Instant::now() > deadline {
                panic!("no {needle:?} within {timeout:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.lines.lock().map(|v| v.join("\n")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
