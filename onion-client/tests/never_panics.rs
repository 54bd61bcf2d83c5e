//! The Client fed arbitrary connection bytes, connection events, commands and time never
//! panics, and keeps its bounds.

mod support;

use std::time::Duration;

use onion_client::dir::{Authority, DirConfig, DirMode};
use onion_client::{Client, ClientConfig, ConnId, Event, Isolation, State, StreamHandle};
use onion_dir::RsaIdentity;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{wall, Net, WALL};

#[derive(Debug, Clone)]
enum Op {
    Connect(u8, u16, u8),
    Resolve(u8),
    Connected(u8, [u8; 32]),
    Input(u8, Vec<u8>),
    Closed(u8),
    Blocked(u8, bool),
    Write(u8, u16),
    Read(u8, u16),
    Shutdown(u8),
    Close(u8),
    Transmit,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), any::<u16>(), 0u8..3).prop_map(|(h, p, i)| Op::Connect(h, p, i)),
        any::<u8>().prop_map(Op::Resolve),
        (any::<u8>(), any::<[u8; 32]>()).prop_map(|(c, d)| Op::Connected(c, d)),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..1200))
            .prop_map(|(c, b)| Op::Input(c, b)),
        // Inputs that look like cells: a VERSIONS-shaped start, then cell-sized chunks.
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(c, mut b)| {
            let mut v = vec![0, 0, 7, 0, 6, 0, 3, 0, 4, 0, 5];
            v.append(&mut b);
            Op::Input(c, v)
        }),
        any::<u8>().prop_map(Op::Closed),
        (any::<u8>(), any::<bool>()).prop_map(|(c, b)| Op::Blocked(c, b)),
        (any::<u8>(), any::<u16>()).prop_map(|(s, n)| Op::Write(s, n)),
        (any::<u8>(), any::<u16>()).prop_map(|(s, n)| Op::Read(s, n)),
        any::<u8>().prop_map(Op::Shutdown),
        any::<u8>().prop_map(Op::Close),
        Just(Op::Transmit),
        any::<u16>().prop_map(Op::Advance),
    ]
}

fn pick<T: Copy>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(i) % v.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_client_never_panics(ops in proptest::collection::vec(op(), 1..60)) {
        let net = Net::new(5, 21);
        let mut dir = DirConfig::new(
            vec![Authority {
                name: "a".into(),
                rsa_id: RsaIdentity([1; 20]),
                v3ident: RsaIdentity([2; 20]),
                or_addr: Some("10.99.0.1:9001".parse().unwrap()),
            }],
            vec![],
            DirMode::Micro,
        );
        dir.max_attempts = 2;
        let mut cfg = ClientConfig::new(dir);
        cfg.limits.max_streams = 16;
        cfg.limits.channel_inbound = 4096;
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut now = net.now;
        let mut c = Client::new(cfg, State::default(), now, WALL, &mut rng).unwrap();
        c.adopt_directory(net.directory(), now).unwrap();
        let mut conns: Vec<ConnId> = Vec::new();
        let mut streams: Vec<StreamHandle> = Vec::new();
        let hosts = ["echo", "example.com", "10.0.0.1", "[::1]", "x.onion"];
        for op in ops {
            match op {
                Op::Connect(h, p, i) => {
                    let host = hosts[usize::from(h) % hosts.len()];
                    if let Ok(s) = c.connect(host, p, Isolation(u64::from(i)), now) {
                        streams.push(s);
                    }
                }
                Op::Resolve(h) => {
                    if let Ok(s) = c.resolve(hosts[usize::from(h) % hosts.len()], Isolation::NONE, now) {
                        streams.push(s);
                    }
                }
                Op::Connected(i, d) => {
                    if let Some(conn) = pick(&conns, i) {
                        c.handle_connected(conn, now, d);
                    }
                }
                Op::Input(i, b) => {
                    if let Some(conn) = pick(&conns, i) {
                        c.handle_input(conn, now, &b);
                    }
                }
                Op::Closed(i) => {
                    if let Some(conn) = pick(&conns, i) {
                        c.handle_closed(conn, now);
                    }
                }
                Op::Blocked(i, b) => {
                    if let Some(conn) = pick(&conns, i) {
                        c.set_blocked(conn, b);
                    }
                }
                Op::Write(i, n) => {
                    if let Some(s) = pick(&streams, i) {
                        let _ = c.write(s, &vec![1u8; usize::from(n)], now);
                    }
                }
                Op::Read(i, n) => {
                    if let Some(s) = pick(&streams, i) {
                        let _ = c.read(s, &mut vec![0u8; usize::from(n)], now);
                    }
                }
                Op::Shutdown(i) => {
                    if let Some(s) = pick(&streams, i) {
                        let _ = c.shutdown_write(s, now);
                    }
                }
                Op::Close(i) => {
                    if let Some(s) = pick(&streams, i) {
                        c.close(s, now);
                    }
                }
                Op::Transmit => {
                    let mut out = Vec::new();
                    let mut n = 0;
                    while c.poll_transmit(now, &mut out).is_some() {
                        n += 1;
                        prop_assert!(n < 10_000);
                        out.clear();
                    }
                }
                Op::Advance(ms) => {
                    now = now + Duration::from_millis(u64::from(ms) * 10);
                    c.handle_timeout(now, wall(now));
                }
            }
            while let Some(ev) = c.poll_event() {
                if let Event::Connect { conn, .. } = ev {
                    conns.push(conn);
                }
            }
            let (chans, circs, n) = c.counts();
            prop_assert!(chans <= 64 && circs <= 128);
            // Directory requests are streams too, beyond the application's limit of 16.
            prop_assert!(n <= 16 + 8);
        }
    }
}
