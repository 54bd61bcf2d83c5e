//! Heap held by a relay per circuit: a client opens one channel and many one-hop circuits
//! (CREATE_FAST and ntor-v3), and the relay's allocations that stay live are counted with a
//! counting global allocator, busy and after the idle sweep freed the circuits' key
//! schedules (`RelayConfig::compact_idle`).

mod support;

use std::alloc::System;
use std::net::SocketAddr;
use std::time::Duration;

use onion_circuit::channel::{ChanEvent, Channel};
use onion_circuit::circuit::{CircConfig, Circuit, HandshakeKind, HopTarget};
use onion_circuit::Instant;
use onion_relay::Relay;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use support::{open_channel, relay, wall, RELAY_IP};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 500;

/// Move bytes both ways until nothing moves; client-side cells go to `circs`.
fn pump(relay: &mut Relay, chan: &mut Channel, circs: &mut [Circuit], ids: &[u32]) {
    let now = Instant::ZERO;
    support::pump(relay, chan, |ev| {
        if let ChanEvent::CircuitCell { circ_id, msg } = ev {
            if let Some(i) = ids.iter().position(|x| *x == circ_id.get()) {
                circs[i].handle_cell(now, msg);
                assert!(!circs[i].is_closed(), "cell");
            }
        }
    });
}

/// Bytes the relay frees when dropped after `n` circuits of `kind` were created on it
/// (`idle`: and then left without a cell for two idle periods).
fn relay_bytes(kind: HandshakeKind, n: usize, idle: bool) -> usize {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut relay = relay(&mut rng, |_| {});
    let target = HopTarget {
        rsa_id: relay.keys().rsa_identity().public().identity(),
        ed_id: Some(relay.keys().ed_identity()),
        ntor_key: *relay.keys().ntor_key().public(),
        addrs: vec![SocketAddr::new(RELAY_IP, 9001)],
        ntor_v3: true,
    };
    let now = Instant::ZERO;
    let mut chan = open_channel(&mut relay);
    let mut circs = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..n {
        let (c, create) =
            Circuit::create(CircConfig::default(), &target, kind, now, &mut rng).expect("create");
        let id = chan.new_circ_id(&mut rng).expect("id");
        chan.send(id, &create).expect("send");
        circs.push(c);
        ids.push(id.get());
        pump(&mut relay, &mut chan, &mut circs, &ids);
    }
    assert_eq!(relay.n_circuits(), n);
    assert!(circs.iter().all(|c| c.n_hops() == 1));
    if idle {
        let mut now = now;
        while relay.n_compacted_circuits() < n {
            let next = relay.poll_timeout().expect("the idle sweep is due");
            assert!(next <= Instant::ZERO + Duration::from_secs(11), "{next:?}");
            now = now.max(next);
            relay.handle_timeout(now, wall().into());
        }
        assert_eq!(relay.n_circuits(), n);
    }
    let region = Region::new(GLOBAL);
    drop(relay);
    region.change().bytes_deallocated
}

fn per_circuit(kind: HandshakeKind, idle: bool) -> usize {
    (relay_bytes(kind, N, idle) - relay_bytes(kind, 0, idle)) / N
}

#[test]
fn heap_per_relay_circuit() {
    let fast = per_circuit(HandshakeKind::CreateFast, false);
    let ntor = per_circuit(HandshakeKind::NtorV3, false);
    let fast_idle = per_circuit(HandshakeKind::CreateFast, true);
    let ntor_idle = per_circuit(HandshakeKind::NtorV3, true);
    eprintln!(
        "relay heap per circuit: CREATE_FAST {fast} B, ntor-v3 {ntor} B; idle (key schedules \
         freed): CREATE_FAST {fast_idle} B, ntor-v3 {ntor_idle} B"
    );
    // Crypto state (two AES-CTR states and running digests), the circuit machine, the
    // channel's circuit map entry and the relay's indexes.
    assert!(fast < 4096, "{fast}");
    assert!(ntor < 4096, "{ntor}");
    // The idle sweep frees the two expanded AES-128 key schedules (2 x 704 bytes, less
    // whatever the allocator rounding gives back).
    assert!(fast_idle + 1000 < fast, "{fast_idle} vs {fast}");
    assert!(ntor_idle + 1000 < ntor, "{ntor_idle} vs {ntor}");
}
