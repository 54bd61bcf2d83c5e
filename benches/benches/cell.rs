//! Benchmarks of onion-cell's hot paths: decoding a 514-byte RELAY channel cell, encoding a
//! full (498-byte) DATA relay message, CREATE2 encode/decode.
//!
//! Targets: decode a RELAY channel cell <= 50 ns, encode a full DATA message
//! <= 60 ns.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use onion_cell::chancell::{ChanCell, ChanMsg, Create2, HandshakeType};
use onion_cell::codec::{decode_cell, encode_cell_into, CellDecoder, CellFormat};
use onion_cell::relay::{RelayCell, StreamId};
use onion_cell::relaymsg::{Data, RelayMsg};
use onion_cell::CircId;
use rand_chacha::rand_core::SeedableRng;

fn benches(c: &mut Criterion) {
    let format = CellFormat::for_version(5).expect("version 5");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let payload = [0x42u8; 498];

    // A RELAY channel cell carrying a full DATA message.
    let body = RelayCell::new(
        StreamId::new(3),
        RelayMsg::Data(Data::new(&payload).expect("fits")),
    )
    .encode(&mut rng)
    .expect("encodes");
    let relay = ChanCell::new(CircId::new(0x8000_0001), ChanMsg::Relay(body.0.into()));
    let mut wire = [0u8; 514];
    encode_cell_into(format, &relay, &mut wire).expect("encodes");

    let mut g = c.benchmark_group("cell");
    g.bench_function("decode_relay_chan_cell_514", |b| {
        b.iter(|| {
            let (cell, n) = decode_cell(format, black_box(&wire)).expect("decodes");
            black_box((cell, n));
        })
    });
    g.bench_function("encode_relay_chan_cell_514", |b| {
        let mut out = [0u8; 514];
        b.iter(|| {
            encode_cell_into(format, black_box(&relay), &mut out).expect("encodes");
            black_box(&out);
        })
    });
    g.bench_function("encode_full_data_relay_msg", |b| {
        let mut out = [0u8; 509];
        b.iter(|| {
            let msg = RelayMsg::Data(Data::new(black_box(&payload)).expect("fits"));
            RelayCell::new(StreamId::new(3), msg)
                .encode_into(&mut out, &mut rng)
                .expect("encodes");
            black_box(&out);
        })
    });
    g.bench_function("encode_full_data_relay_msg_by_value", |b| {
        b.iter(|| {
            let msg = RelayMsg::Data(Data::new(black_box(&payload)).expect("fits"));
            let body = RelayCell::new(StreamId::new(3), msg)
                .encode(&mut rng)
                .expect("encodes");
            black_box(&body);
        })
    });
    g.bench_function("decode_full_data_relay_msg", |b| {
        b.iter(|| {
            let cell = RelayCell::decode(black_box(&body.0)).expect("decodes");
            black_box(cell);
        })
    });

    // CREATE2 with an ntor onion skin (84 bytes).
    let hdata = [0x17u8; 84];
    let create2 = ChanCell::new(
        CircId::new(0x8000_0002),
        ChanMsg::Create2(Create2 {
            handshake_type: HandshakeType::NTOR,
            hdata: Cow::Borrowed(&hdata),
        }),
    );
    let mut c2wire = [0u8; 514];
    encode_cell_into(format, &create2, &mut c2wire).expect("encodes");
    g.bench_function("encode_create2", |b| {
        let mut out = [0u8; 514];
        b.iter(|| {
            encode_cell_into(format, black_box(&create2), &mut out).expect("encodes");
            black_box(&out);
        })
    });
    g.bench_function("decode_create2", |b| {
        b.iter(|| {
            let (cell, n) = decode_cell(format, black_box(&c2wire)).expect("decodes");
            black_box((cell, n));
        })
    });

    // Streaming: 64 RELAY cells pushed in 1000-byte chunks (as TLS might deliver them).
    let stream: Vec<u8> = wire.iter().copied().cycle().take(514 * 64).collect();
    g.bench_function("stream_decode_64_relay_cells", |b| {
        let mut dec = CellDecoder::new(format);
        b.iter(|| {
            let mut n = 0;
            for chunk in stream.chunks(1000) {
                dec.push(chunk);
                while let Ok(Some(cell)) = dec.next_cell() {
                    black_box(cell);
                    n += 1;
                }
            }
            assert_eq!(n, 64);
        })
    });
    g.finish();
}

criterion_group!(cell, benches);
criterion_main!(cell);
