//! What the client holds in memory for an idle channel, circuit and stream, measured with a
//! counting allocator: the client's heap is what it frees when dropped (after the in-process
//! network is gone). One test per binary, so that nothing else allocates meanwhile.

mod support;

use std::alloc::System;

use onion_client::dir::{Authority, DirConfig, DirMode};
use onion_client::{Client, ClientConfig, Event, Isolation, State};
use onion_dir::RsaIdentity;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use support::{Net, WALL};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The client's live heap with `n` idle streams on one circuit (0: bootstrapped, no circuit).
fn client_heap(n: usize) -> (isize, Client) {
    let mut net = Net::new(6, 30);
    let mut dir = DirConfig::new(
        vec![Authority {
            name: "a".into(),
            rsa_id: RsaIdentity([1; 20]),
            v3ident: RsaIdentity([2; 20]),
            or_addr: None,
        }],
        vec![],
        DirMode::Micro,
    );
    dir.refresh_from_guards = false;
    dir.retry_delay = std::time::Duration::from_secs(7200);
    let mut cfg = ClientConfig::new(dir);
    cfg.limits.max_streams_per_circuit = 1000;
    // One circuit is measured: none is built ahead of need.
    cfg.preemptive_circuits = false;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(net.directory(), net.now).unwrap();
    net.run(&mut c);
    for _ in 0..n {
        c.connect("silent", 80, Isolation::NONE, net.now).unwrap();
    }
    net.run(&mut c);
    let opened = net
        .events
        .iter()
        .filter(|e| matches!(e, Event::StreamOpened { .. }))
        .count();
    assert_eq!(opened, n);
    if n > 0 {
        assert_eq!(net.multi_hop_circuits(), 1, "all streams on one circuit");
    }
    // Let the circuits' idle timers free their expanded keys (the state of an idle circuit).
    let later = net.now + std::time::Duration::from_secs(20);
    net.advance(&mut c, later);
    net.advance(&mut c, later);
    drop(net);
    (0, c)
}

/// The heap `c` frees when dropped: what it holds.
fn heap_of(c: Client) -> isize {
    let region = Region::new(GLOBAL);
    drop(c);
    let freed = region.change();
    freed.bytes_deallocated as isize - freed.bytes_allocated as isize
}

#[test]
fn idle_channel_circuit_and_streams() {
    let h0 = heap_of(client_heap(0).1);
    let h1 = heap_of(client_heap(1).1);
    let (_, c1000) = client_heap(1000);
    let (chans, circs, streams) = c1000.counts();
    // One exit circuit, and the one-hop circuits of the directory refresh.
    assert!(circs >= 1 && streams == 1000, "{circs} {streams}");
    let h1000 = heap_of(c1000);
    let first = h1 - h0;
    let per_stream = (h1000 - h1) / 999;
    println!(
        "client heap: bootstrapped {h0} B; + one channel, circuit and stream {first} B; \
         1000 idle streams on one circuit {} B above that ({per_stream} B per stream); \
         {chans} channel(s)",
        h1000 - h0
    );
    // The stated bounds (README): an idle channel with one 3-hop circuit and one stream under
    // 24 KiB; 1,000 idle streams on one circuit under 512 KiB.
    assert!(first < 24 << 10, "{first}");
    assert!(h1000 - h0 < 512 << 10, "{}", h1000 - h0);
}
