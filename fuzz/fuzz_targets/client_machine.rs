//! Arbitrary connection bytes, connection events, commands and time at a bootstrapped
//! `onion_client::Client`.
//!
//! The client adopts a directory of four relays whose link keys are real (made once per
//! process: RSA key generation is slow), so a connection the input accepts completes the
//! link handshake with a real responder channel (tor-spec §4) and later bytes reach the
//! client's open channels, circuits and streams: raw bytes, or well-framed fixed and
//! variable-length cells on the circuit ids the client chose (its CREATE2s seen by the
//! relay side), so that framing does not stop the input at the first cell.
//!
//! The input is a list of records: one op byte, one selector byte, a length byte and that
//! many data bytes. Nothing may panic, loop or grow without bound; after every record the
//! client's counts stay within its limits.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use onion_cell::CircId;
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, RelayLinkKeys};
use onion_client::dir::{Authority, DirConfig, DirMode, Directory};
use onion_client::{Client, ClientConfig, ConnId, Event, Instant, Isolation, State, Timestamp};
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::relay_keys::ResponderCerts;
use onion_dir::consensus::BandwidthWeights;
use onion_dir::netview::{NetView, RelayRecord};
use onion_dir::policy::{PortSet, RelayPolicy};
use onion_dir::{RelayFlags, RsaIdentity};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const CONSENSUS: &str = include_str!("../../onion-dir/testdata/tornet/cached-microdesc-consensus");
/// Ten seconds after the test network's consensus became valid.
const WALL: u64 = 1_795_418_410;
/// The TLS certificate digest every connection reports (the relays' CERTS certify it).
const TLS_DIGEST: [u8; 32] = [7; 32];
const RELAYS: usize = 4;
const HOSTS: [&str; 5] = ["example.com", "10.0.0.1", "echo", "[::1]", "x.onion"];

fn system(now: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(WALL) + now.saturating_duration_since(Instant::ZERO)
}

/// Per relay: its address and the CERTS it answers with; and the directory listing them.
struct World {
    relays: Vec<(SocketAddr, ResponderCerts)>,
    directory: Arc<Directory>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (mut relays, mut records) = (Vec::new(), Vec::new());
        for i in 0..RELAYS {
            let link = RelayLinkKeys::generate(system(Instant::ZERO), &mut rng).expect("keys");
            let certs = link
                .responder_certs(&TLS_DIGEST, system(Instant::ZERO))
                .expect("certs");
            let v4 = SocketAddrV4::new(Ipv4Addr::new(10, i as u8 + 1, 0, 1), 9001);
            let ids = link.ids();
            records.push(RelayRecord {
                nickname: format!("relay{i}"),
                rsa_id: ids.rsa.expect("rsa"),
                ed_id: ids.ed25519.map(|e| e.0),
                ntor_onion_key: Some(NtorSecretKey::generate(&mut rng).public().0),
                ipv4: Some(v4),
                flags: RelayFlags(
                    RelayFlags::RUNNING.0
                        | RelayFlags::VALID.0
                        | RelayFlags::FAST.0
                        | RelayFlags::STABLE.0
                        | RelayFlags::GUARD.0
                        | RelayFlags::EXIT.0
                        | RelayFlags::V2DIR.0,
                ),
                bandwidth: 1000,
                policy: RelayPolicy::Summary {
                    v4: PortSet::all(),
                    v6: PortSet::none(),
                },
                ..RelayRecord::default()
            });
            relays.push((SocketAddr::V4(v4), certs));
        }
        let mut guards: Vec<RsaIdentity> = records.iter().map(|r| r.rsa_id).collect();
        guards.sort();
        let view = NetView::from_records(records, BandwidthWeights::uniform(10000)).expect("view");
        let cons = onion_dir::consensus::parse(CONSENSUS)
            .expect("consensus")
            .assume_verified();
        let mut d = Directory::from_consensus(&cons, view, DirMode::Micro, RELAYS, String::new());
        d.listed_guards = guards;
        World {
            relays,
            directory: Arc::new(d),
        }
    })
}

/// One connection the client asked for, and the relay end if the input accepted it.
struct Conn {
    id: ConnId,
    relay: Option<usize>,
    /// Reported connected (TCP and TLS up).
    accepted: bool,
    chan: Option<Channel>,
    /// Circuit ids the client used on it (seen by the relay end).
    circs: Vec<CircId>,
}

fn pick<T>(v: &[T], sel: u8) -> Option<&T> {
    (!v.is_empty()).then(|| &v[usize::from(sel) % v.len()])
}

/// A fixed-length (command below 128) or variable-length cell of link protocol 4 or 5
/// (tor-spec §3), with `body` as its payload (zero-padded to 509 bytes when fixed).
fn cell(circ: CircId, cmd: u8, body: &[u8]) -> Vec<u8> {
    let mut c = u32::from(circ).to_be_bytes().to_vec();
    c.push(cmd);
    if cmd >= 128 {
        c.extend_from_slice(&(body.len() as u16).to_be_bytes());
        c.extend_from_slice(body);
    } else {
        let n = body.len().min(509);
        c.extend_from_slice(&body[..n]);
        c.resize(5 + 509, 0);
    }
    c
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let auth = Authority {
        name: "auth".into(),
        rsa_id: RsaIdentity([1; 20]),
        v3ident: RsaIdentity([2; 20]),
        or_addr: Some("10.99.0.1:9001".parse().expect("addr")),
    };
    let mut dir = DirConfig::new(vec![auth], vec![], DirMode::Micro);
    dir.max_attempts = 2;
    let mut cfg = ClientConfig::new(dir);
    cfg.limits.max_streams = 16;
    cfg.limits.channel_inbound = 16 << 10;
    cfg.limits.max_events = 256;
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut now = Instant::ZERO;
    let wall =
        |now: Instant| Timestamp(WALL + now.saturating_duration_since(Instant::ZERO).as_secs());
    let Ok(mut client) = Client::new(cfg, State::default(), now, wall(now), &mut rng) else {
        return;
    };
    if client.adopt_directory(w.directory.clone(), now).is_err() {
        return;
    }
    let mut conns: Vec<Conn> = Vec::new();
    let mut streams = Vec::new();
    let mut out = Vec::new();
    let mut rest = data;
    while let [op, sel, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(n);
        rest = after;
        let sel = *sel;
        match op % 14 {
            0 => {
                let host = HOSTS[usize::from(sel) % HOSTS.len()];
                let port = u16::from_be_bytes([*len, sel]);
                if let Ok(s) = client.connect(host, port, Isolation(u64::from(sel % 3)), now) {
                    streams.push(s);
                }
            }
            1 => {
                let host = HOSTS[usize::from(sel) % HOSTS.len()];
                if let Ok(s) = client.resolve(host, Isolation::NONE, now) {
                    streams.push(s);
                }
            }
            // Accept the connection: TCP and TLS are up, a relay's responder channel answers.
            2 => {
                if let Some(c) = conns
                    .iter_mut()
                    .filter(|c| !c.accepted)
                    .nth(usize::from(sel) % 4)
                {
                    if let Some(r) = c.relay {
                        let mut cc = ChanConfig::default();
                        cc.peer_addr = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
                        cc.my_addrs = vec![w.relays[r].0.ip()];
                        c.chan = Some(Channel::responder(
                            cc,
                            &w.relays[r].1,
                            now,
                            system(now),
                            &mut rng,
                        ));
                    }
                    c.accepted = true;
                    client.handle_connected(c.id, now, TLS_DIGEST);
                }
            }
            // Bytes both ways between the client and the relay ends, until quiet.
            3 => {
                for _ in 0..64 {
                    let mut moved = false;
                    while let Some(id) = client.poll_transmit(now, &mut out) {
                        moved = true;
                        if let Some(ch) = conns
                            .iter_mut()
                            .find(|c| c.id == id)
                            .and_then(|c| c.chan.as_mut())
                        {
                            ch.handle_input(now, &out);
                        }
                        out.clear();
                    }
                    for c in conns.iter_mut() {
                        let Some(ch) = c.chan.as_mut() else { continue };
                        while let Some(ev) = ch.poll_event() {
                            if let ChanEvent::CircuitCell { circ_id, .. } = ev {
                                if c.circs.len() < 64 && !c.circs.contains(&circ_id) {
                                    c.circs.push(circ_id);
                                }
                            }
                        }
                        if ch.poll_transmit(&mut out).is_some() {
                            moved = true;
                            client.handle_input(c.id, now, &out);
                        }
                        out.clear();
                    }
                    if !moved {
                        break;
                    }
                }
            }
            4 => {
                if let Some(c) = pick(&conns, sel) {
                    client.handle_input(c.id, now, bytes);
                }
            }
            // A well-framed cell on a circuit the client opened (or circuit id 0).
            5 => {
                if let (Some(c), [cmd, body @ ..]) = (pick(&conns, sel), bytes) {
                    let circ = pick(&c.circs, *len).copied().unwrap_or(CircId::from(0u32));
                    client.handle_input(c.id, now, &cell(circ, *cmd, body));
                }
            }
            6 => {
                if let Some(c) = pick(&conns, sel) {
                    let id = c.id;
                    conns.retain(|c| c.id != id);
                    client.handle_closed(id, now);
                }
            }
            7 => {
                if let Some(c) = pick(&conns, sel) {
                    client.set_blocked(c.id, *len % 2 == 0);
                }
            }
            8 => {
                if let Some(&s) = pick(&streams, sel) {
                    let _ = client.write(s, bytes, now);
                }
            }
            9 => {
                if let Some(&s) = pick(&streams, sel) {
                    let _ = client.read(s, &mut vec![0u8; usize::from(*len) * 16], now);
                }
            }
            10 => {
                if let Some(&s) = pick(&streams, sel) {
                    let _ = client.shutdown_write(s, now);
                }
            }
            11 => {
                if let Some(&s) = pick(&streams, sel) {
                    client.close(s, now);
                }
            }
            12 => {
                now = now + Duration::from_millis(u64::from(sel) * u64::from(*len) * 10);
                client.handle_timeout(now, wall(now));
            }
            _ => {
                let mut sends = 0;
                while client.poll_transmit(now, &mut out).is_some() {
                    sends += 1;
                    assert!(sends < 100_000, "poll_transmit never ends");
                    out.clear();
                }
            }
        }
        let mut events = 0;
        while let Some(ev) = client.poll_event() {
            events += 1;
            assert!(events < 100_000, "poll_event never ends");
            match ev {
                Event::Connect { conn, addr, .. } => conns.push(Conn {
                    id: conn,
                    relay: w.relays.iter().position(|(a, _)| *a == addr),
                    accepted: false,
                    chan: None,
                    circs: Vec::new(),
                }),
                Event::Disconnect { conn } => conns.retain(|c| c.id != conn),
                _ => {}
            }
        }
        let (chans, circs, n) = client.counts();
        assert!(
            chans <= 64 && circs <= 128,
            "{chans} channels, {circs} circuits"
        );
        // Directory requests are streams too, beyond the application's 16.
        assert!(n <= 16 + 16, "{n} streams");
        assert!(conns.len() <= 64 + 8, "{} connections", conns.len());
    }
});
