//! Benchmark (ignored by default): cells per second through one middle relay over real TLS
//! on loopback, for `onion relay` and for a C tor relay of the same private network, in the
//! same run, and the relay process's CPU time for those cells.
//!
//! ```text
//! cargo test -p onion-cli --release --test bench_relay -- --ignored --nocapture
//! ```
//!
//! One private C tor network (tornet) is started; `onion relay` joins it and waits until the
//! C tor exits' consensus lists it (a C tor exit refuses streams whose previous hop it does
//! not know as a relay). Then, for each middle in turn, onion's own client code
//! (onion-circuit's initiator `Channel` and client `Circuit` over rustls) builds a circuit
//! middle → C tor exit (ntor) and downloads a file from the network's HTTP server through
//! it, with Tor's fixed windows (tor-spec §7). The exit and the client are the same for
//! both middles; only the middle changes. Measured for each: RELAY_DATA cells carried per
//! wall-clock second, and per CPU second of the middle process (user + system time from
//! `/proc/PID/stat` before and after). `BENCH_RELAY_MIB` sets the file size (default 64)
//! and `BENCH_RELAY_ROUNDS` the transfers per middle (default 3, interleaved).

mod support;

#[allow(dead_code, unused_imports)]
#[path = "../src/net/tls.rs"]
mod tls;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant as StdInstant};

use onion_cell::relaymsg::BeginFlags;
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::stream::StreamEvent;
use onion_circuit::Instant;
use onion_crypto::keyfile;
use onion_crypto::RsaIdentity;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use support::{network, Daemon, TorNet};

/// Payload bytes of one RELAY_DATA cell (tor-spec §6.1).
const CELL_DATA: u64 = 498;

/// Starts `onion relay` in `net` (testing-network settings) with a fresh data directory;
/// returns it, its data directory and its fingerprint.
fn start_relay(net: &TorNet, port: u16) -> (Daemon, std::path::PathBuf, String) {
    let dir = net.dir.join("onion-relay-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let or_port = format!("127.0.0.1:{port}");
    let mut d = Daemon::start(&[
        "relay",
        "--or-port",
        &or_port,
        "--data-dir",
        dir.to_str().expect("path"),
        "--authorities",
        net.authorities_file.to_str().expect("path"),
        "--nickname",
        "onionBench",
        "--contact",
        "onion-bench@tornet.invalid",
        "--testing-network",
    ]);
    let line = d.wait_for("fingerprint", Duration::from_secs(60));
    let fp = line
        .split("fingerprint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(fp.len(), 40, "{line}");
    (d, dir, fp)
}

/// Waits until the consensus at `path` has an `r` line for the relay `fp`.
fn wait_listed(path: &Path, fp: &str, timeout: Duration) {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let id = hex::decode(fp).expect("fingerprint");
    let mut b64 = String::new();
    for chunk in id.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    let deadline = StdInstant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.starts_with("r ") && l.split(' ').nth(2) == Some(b64.as_str()))
        {
            return;
        }
        assert!(
            StdInstant::now() < deadline,
            "{fp} not listed in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What a client needs to build a circuit through a relay, read from its data directory
/// (C tor's key files, which `onion relay` writes too).
fn hop_target(datadir: &Path, fingerprint: &str, addr: SocketAddr) -> HopTarget {
    let keys = datadir.join("keys");
    let ntor = std::fs::read(keys.join("secret_onion_key_ntor")).expect("ntor key file");
    let ntor = keyfile::decode_ntor_secret_key(&ntor).expect("ntor key");
    let ed_id = std::fs::read(keys.join("ed25519_master_id_public_key"))
        .ok()
        .and_then(|f| keyfile::decode_ed25519_public_key(&f).ok());
    let mut rsa = [0u8; 20];
    rsa.copy_from_slice(&hex::decode(fingerprint).expect("fingerprint hex"));
    HopTarget {
        rsa_id: RsaIdentity(rsa),
        ed_id,
        ntor_key: *ntor.public(),
        addrs: vec![addr],
        ntor_v3: false,
    }
}

/// User + system CPU time of process `pid` (fields 14 and 15 of `/proc/PID/stat`, in
/// clock ticks of 1/100 s on Linux).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// The process whose command line mentions `needle` (our relay, by its data directory).
fn pid_of(needle: &str) -> u32 {
    for e in std::fs::read_dir("/proc").expect("proc") {
        let Ok(e) = e else { continue };
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && cmd.contains("relay") && pid != std::process::id() {
            return pid;
        }
    }
    panic!("no process mentions {needle}");
}

/// One transfer: bytes of the HTTP answer and the wall time of the body transfer.
struct Transfer {
    bytes: u64,
    wall: Duration,
    cpu: Duration,
}

/// Build middle → exit with onion's client code over TLS and fetch `path` from the HTTP
/// server at `http`; `pid` is the middle's process.
fn transfer(
    middle: &HopTarget,
    exit: &HopTarget,
    http: SocketAddr,
    path: &str,
    pid: u32,
) -> Transfer {
    let t0 = StdInstant::now();
    let now = |t0: StdInstant| Instant::from_duration(t0.elapsed());
    let wall = std::time::SystemTime::now();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let addr = middle.addrs[0];
    let mut link = tls::TlsLink::connect(addr, Duration::from_secs(10)).expect("TLS");
    let mut sock = link.reader().expect("socket");
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .expect("timeout");
    let ids = PeerIds {
        rsa: Some(middle.rsa_id),
        ed25519: middle.ed_id,
    };
    // NETINFO names the address we connected to (C tor closes a channel whose NETINFO
    // has none).
    let mut cfg = ChanConfig::default();
    cfg.peer_addr = Some(addr.ip());
    let mut chan = Channel::initiator(cfg, ids, Some(link.cert_sha256()), now(t0), wall);
    let (mut circ, create) = Circuit::create(
        CircConfig::default(),
        middle,
        HandshakeKind::Ntor,
        now(t0),
        &mut rng,
    )
    .expect("create");
    let mut id = None;
    let mut create = Some(create);
    let mut stream = None;
    let mut got: u64 = 0;
    let mut started: Option<(StdInstant, Duration)> = None;
    let mut ended = false;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut plain = link.feed(&[]).expect("tls");
    let deadline = t0 + Duration::from_secs(600);
    while !ended {
        assert!(
            StdInstant::now() < deadline,
            "transfer stalled at {got} bytes"
        );
        // Input.
        let mut off = 0;
        while off < plain.len() {
            off += chan.handle_input(now(t0), &plain[off..]);
            assert_eq!(chan.close_error(), None, "channel input");
            while let Some(ev) = chan.poll_event() {
                match ev {
                    ChanEvent::Open(_) if id.is_none() => {
                        let c = chan.new_circ_id(&mut rng).expect("circ id");
                        chan.send(c, &create.take().expect("create")).expect("send");
                        id = Some(c);
                    }
                    ChanEvent::CircuitCell { msg, .. } => {
                        circ.handle_cell(now(t0), msg);
                        assert!(!circ.is_closed(), "cell");
                    }
                    ChanEvent::Closed(e) => panic!("channel closed: {e:?}"),
                    _ => {}
                }
            }
        }
        while let Some(ev) = circ.poll_event() {
            match ev {
                CircEvent::HopAdded { hops: 1 } => {
                    circ.extend_exit(exit, now(t0), &mut rng).expect("extend");
                }
                CircEvent::HopAdded { .. } => {
                    let s = circ
                        .begin(
                            &http.ip().to_string(),
                            http.port(),
                            BeginFlags::default(),
                            now(t0),
                        )
                        .expect("begin");
                    stream = Some(s);
                }
                CircEvent::StreamConnected { .. } => {
                    let req = format!("GET /{path} HTTP/1.0\r\nHost: {http}\r\n\r\n");
                    circ.send(stream.expect("stream"), req.as_bytes())
                        .expect("request");
                    started = Some((StdInstant::now(), cpu_time(pid)));
                }
                CircEvent::Stream(StreamEvent::Data { data, .. }) => got += data.len() as u64,
                CircEvent::Stream(StreamEvent::Ended { .. }) => ended = true,
                CircEvent::Closed { .. } => panic!("circuit closed after {got} bytes"),
                _ => {}
            }
        }
        // Output.
        if let Some(c) = id {
            while let Some(m) = circ.poll_cell(&mut rng) {
                chan.send(c, &m).expect("send");
            }
        }
        while chan.poll_transmit(&mut out).is_some() {}
        if !out.is_empty() {
            link.send(&out, Duration::from_secs(10)).expect("tls send");
            out.clear();
        }
        plain = match sock.read(&mut buf) {
            Ok(0) => panic!("connection closed after {got} bytes"),
            Ok(n) => link.feed(&buf[..n]).expect("tls"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Vec::new()
            }
            Err(e) => panic!("read: {e}"),
        };
    }
    let (at, cpu0) = started.expect("the stream opened");
    let t = Transfer {
        bytes: got,
        wall: at.elapsed(),
        cpu: cpu_time(pid).saturating_sub(cpu0),
    };
    link.close();
    t
}

#[test]
#[ignore = "benchmark: starts a private C tor network and moves hundreds of MiB"]
fn cells_per_second_through_one_middle_relay() {
    let Some(net) = network() else { return };
    let mib: u64 = std::env::var("BENCH_RELAY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rounds: usize = std::env::var("BENCH_RELAY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let port = support::free_port();
    let (relay, dir, fp) = start_relay(net, port);
    let exit = net
        .relays
        .iter()
        .find(|r| r.role == "exit")
        .expect("a C tor exit");
    let ctor = net
        .relays
        .iter()
        .find(|r| r.role == "middle")
        .expect("a C tor middle");
    wait_listed(
        &exit.datadir.join("cached-consensus"),
        &fp,
        Duration::from_secs(180),
    );
    let body: Vec<u8> = (0..(mib << 20) as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(net.http_root.join("bench.bin"), &body).expect("write body");
    let http: SocketAddr = format!("127.0.0.1:{}", net.http_port)
        .parse()
        .expect("http");
    let exit_t = hop_target(
        &exit.datadir,
        &exit.fingerprint,
        exit.or_addr.parse().expect("addr"),
    );
    let ours_t = hop_target(
        &dir,
        &fp,
        format!("127.0.0.1:{port}").parse().expect("addr"),
    );
    let ctor_t = hop_target(
        &ctor.datadir,
        &ctor.fingerprint,
        ctor.or_addr.parse().expect("addr"),
    );
    let ours_pid = pid_of(dir.to_str().expect("path"));
    let ctor_pid: u32 = std::fs::read_to_string(ctor.datadir.join("pid"))
        .expect("C tor pid file")
        .trim()
        .parse()
        .expect("pid");
    let mut totals = [(0u64, Duration::ZERO, Duration::ZERO); 2];
    for round in 0..rounds {
        for (k, (name, t, pid)) in [
            ("onion relay", &ours_t, ours_pid),
            ("C tor", &ctor_t, ctor_pid),
        ]
        .into_iter()
        .enumerate()
        {
            let r = transfer(t, &exit_t, http, "bench.bin", pid);
            assert!(r.bytes >= body.len() as u64, "{name}: {} bytes", r.bytes);
            let cells = r.bytes / CELL_DATA;
            eprintln!(
                "round {round} {name}: {cells} cells in {:.2} s ({:.0} cells/s), middle CPU {:.2} s ({:.0} cells per CPU-second)",
                r.wall.as_secs_f64(),
                cells as f64 / r.wall.as_secs_f64(),
                r.cpu.as_secs_f64(),
                cells as f64 / r.cpu.as_secs_f64().max(0.01),
            );
            totals[k].0 += cells;
            totals[k].1 += r.wall;
            totals[k].2 += r.cpu;
        }
    }
    for (k, name) in ["onion relay", "C tor 0.4.9"].into_iter().enumerate() {
        let (cells, wall, cpu) = totals[k];
        eprintln!(
            "BENCH {name} as middle: {cells} cells, {:.0} cells/s wall, {:.0} cells per CPU-second",
            cells as f64 / wall.as_secs_f64(),
            cells as f64 / cpu.as_secs_f64().max(0.01),
        );
    }
    drop(relay);
}
