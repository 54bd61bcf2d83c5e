//! Channel benchmarks (onion-circuit `channel`): a full link handshake between an
//! initiator and a responder in memory (dominated by the initiator's CERTS checks: two RSA
//! signature checks and two ed25519 ones), and relay-cell throughput through an open
//! channel (framing on one side, deframing and event delivery on the other).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use onion_cell::chancell::{ChanMsg, Create2, Created2, HandshakeType};
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, RelayLinkKeys};
use onion_circuit::Instant;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const TLS: [u8; 32] = [9; 32];

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

fn out(c: &mut Channel) -> Vec<u8> {
    let mut v = Vec::new();
    c.poll_transmit(&mut v);
    v
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let keys = RelayLinkKeys::generate(wall(), &mut rng).expect("keys");
    let certs = keys.responder_certs(&TLS, wall()).expect("certs");
    let handshake = |rng: &mut ChaCha20Rng| {
        let mut i = Channel::initiator(
            ChanConfig::default(),
            keys.ids(),
            Some(TLS),
            Instant::ZERO,
            wall(),
        );
        let mut r = Channel::responder(ChanConfig::default(), &certs, Instant::ZERO, wall(), rng);
        r.handle_input(Instant::ZERO, &out(&mut i));
        i.handle_input(Instant::ZERO, &out(&mut r));
        r.handle_input(Instant::ZERO, &out(&mut i));
        assert!(i.is_open() && r.is_open());
        (i, r)
    };
    c.bench_function("channel/handshake", |b| b.iter(|| handshake(&mut rng)));

    let (mut i, mut r) = handshake(&mut rng);
    while i.poll_event().is_some() {}
    while r.poll_event().is_some() {}
    let id = i.new_circ_id(&mut rng).expect("id");
    let create = ChanMsg::Create2(Create2 {
        handshake_type: HandshakeType::NTOR,
        hdata: vec![1; 84].into(),
    });
    i.send(id, &create).expect("create");
    r.handle_input(Instant::ZERO, &out(&mut i));
    assert_eq!(r.close_error(), None, "create in");
    r.send(
        id,
        &ChanMsg::Created2(Created2 {
            hdata: vec![2; 64].into(),
        }),
    )
    .expect("created");
    i.handle_input(Instant::ZERO, &out(&mut r));
    assert_eq!(i.close_error(), None, "created in");
    while i.poll_event().is_some() {}
    while r.poll_event().is_some() {}

    const CELLS: usize = 200;
    let body = [0x42u8; 509];
    let mut g = c.benchmark_group("channel");
    g.throughput(Throughput::Bytes((CELLS * 514) as u64));
    let mut wire = Vec::with_capacity(CELLS * 514);
    g.bench_function("relay_cells_200", |b| {
        b.iter(|| {
            for _ in 0..CELLS {
                i.send_relay(id, false, &body).expect("send");
            }
            wire.clear();
            i.poll_transmit(&mut wire);
            let mut off = 0;
            let mut n = 0;
            while off < wire.len() {
                off += r.handle_input(Instant::ZERO, &wire[off..]);
                while let Some(e) = r.poll_event() {
                    if let ChanEvent::CircuitCell { .. } = e {
                        n += 1;
                    }
                }
            }
            assert_eq!(n, CELLS);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
