//! Property tests of the channel: any chunking of a valid handshake works, and no input
//! (before, during or after the handshake) panics or grows the buffers past their bounds.

use std::sync::OnceLock;

use onion_circuit::channel::*;
use onion_circuit::Instant;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod channel_common;
use channel_common::{keys, wall, Input, TLS_DIGEST};

fn certs() -> &'static ResponderCerts {
    static C: OnceLock<ResponderCerts> = OnceLock::new();
    C.get_or_init(|| keys().responder_certs(&TLS_DIGEST, wall()).expect("certs"))
}

fn initiator() -> Channel {
    channel_common::initiator(ChanConfig::default())
}

fn responder(seed: u64) -> Channel {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Channel::responder(
        ChanConfig::default(),
        certs(),
        Instant::ZERO,
        wall(),
        &mut rng,
    )
}

fn drain(c: &mut Channel) -> Vec<u8> {
    let mut out = Vec::new();
    c.poll_transmit(&mut out);
    out
}

/// Feeds `data` in the given chunk sizes (cycled), draining events; returns them.
fn feed_chunks(c: &mut Channel, data: &[u8], sizes: &[usize]) -> Vec<ChanEvent> {
    let mut ev = Vec::new();
    let mut off = 0;
    let mut k = 0;
    let mut stalls = 0;
    while off < data.len() {
        let size = sizes
            .get(k % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        k += 1;
        let end = (off + size).min(data.len());
        match c.input(Instant::ZERO, &data[off..end]) {
            Ok(n) => {
                off += n;
                stalls = if n == 0 { stalls + 1 } else { 0 };
                assert!(stalls < 3, "no progress after draining");
            }
            Err(_) => break,
        }
        ev.extend(std::iter::from_fn(|| c.poll_event()));
        drain(c);
    }
    ev.extend(std::iter::from_fn(|| c.poll_event()));
    ev
}

/// The bytes a responder sends, and an initiator that has just sent VERSIONS.
fn responder_bytes() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let mut i = initiator();
        let mut r = responder(1);
        r.input(Instant::ZERO, &drain(&mut i)).unwrap();
        drain(&mut r)
    })
}

/// An initiator and a responder with an open channel between them.
fn open_pair() -> (Channel, Channel) {
    let mut i = initiator();
    let mut r = responder(2);
    r.input(Instant::ZERO, &drain(&mut i)).unwrap();
    i.input(Instant::ZERO, &drain(&mut r)).unwrap();
    r.input(Instant::ZERO, &drain(&mut i)).unwrap();
    assert!(i.is_open() && r.is_open());
    while i.poll_event().is_some() {}
    while r.poll_event().is_some() {}
    (i, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_chunking_of_the_handshake_opens(sizes in proptest::collection::vec(1usize..700, 1..20)) {
        let mut i = initiator();
        drain(&mut i);
        let ev = feed_chunks(&mut i, responder_bytes(), &sizes);
        prop_assert!(matches!(&ev[..], [ChanEvent::Open(o)] if o.link_version == 5 && o.peer == keys().ids()), "{:?}", ev);
        // And the responder accepts the initiator's bytes in any chunking too.
        let mut r = responder(3);
        let mut i2 = initiator();
        let mut client = drain(&mut i2);
        r.handle_input(Instant::ZERO, &[]);
        i2.input(Instant::ZERO, &{ let mut r0 = responder(4); r0.input(Instant::ZERO, &client).unwrap(); drain(&mut r0) }).unwrap();
        client.extend(drain(&mut i2));
        let ev = feed_chunks(&mut r, &client, &sizes);
        prop_assert!(matches!(&ev[..], [ChanEvent::Open(o)] if o.link_version == 5), "{:?}", ev);
    }

    #[test]
    fn arbitrary_bytes_after_handshake_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000), sizes in proptest::collection::vec(1usize..600, 1..8)) {
        let (mut i, mut r) = open_pair();
        for c in [&mut i, &mut r] {
            let ev = feed_chunks(c, &data, &sizes);
            prop_assert!(c.is_open() || c.is_closed());
            if c.is_closed() {
                prop_assert!(matches!(ev.last(), Some(ChanEvent::Closed(_))));
            }
            prop_assert!(c.outbound_len() <= ChanConfig::default().max_outbound_bytes + 514);
        }
    }

    #[test]
    fn arbitrary_bytes_mid_handshake_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2100) {
        // The initiator gets part of a real handshake, then garbage.
        let real = responder_bytes();
        let cut = cut.min(real.len());
        let mut input = real[..cut].to_vec();
        input.extend_from_slice(&data);
        let mut i = initiator();
        drain(&mut i);
        let ev = feed_chunks(&mut i, &input, &[97]);
        prop_assert!(ev.len() <= 2);
        // A fresh responder gets garbage.
        let mut r = responder(5);
        let _ = feed_chunks(&mut r, &data, &[13]);
    }

    #[test]
    fn single_byte_flips_in_the_handshake_never_open_with_wrong_ids(pos in 0usize..2100, bit in 0u8..8) {
        let mut input = responder_bytes().clone();
        let pos = pos % input.len();
        input[pos] ^= 1 << bit;
        let mut i = initiator();
        drain(&mut i);
        let ev = feed_chunks(&mut i, &input, &[4096]);
        for e in &ev {
            if let ChanEvent::Open(o) = e {
                // Only padding, unsigned fields (challenge, NETINFO) or the unused RSA
                // link certificate can change without breaking authentication.
                prop_assert_eq!(o.peer, keys().ids());
            }
        }
    }
}
