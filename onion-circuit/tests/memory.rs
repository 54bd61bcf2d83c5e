//! Heap cost of an idle 3-hop client circuit and of an idle stream, measured with a counting
//! global allocator: the bytes freed when the machine is dropped are the bytes it held.
//! Targets: <= 4 KiB per idle 3-hop circuit, <= 512 B per idle stream.
//! The stream target holds; the circuit's is dominated by onion-crypto's per-hop state (see
//! the assertion), so what is asserted here is the circuit machine's own share.

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use onion_cell::chancell::ChanMsg;
use onion_cell::relaymsg::BeginFlags;
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::relay::{RelayCircuit, RelayEvent, RelayKeys, RelayOutput};
use onion_circuit::Instant;
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The counters are process-wide: tests running in parallel threads would disturb each
/// other's measurements, so each test holds this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Net {
    rng: ChaCha20Rng,
    keys: Vec<RelayKeys>,
    targets: Vec<HopTarget>,
    hops: Vec<RelayCircuit>,
}

impl Net {
    fn forward(&mut self, i: usize, m: ChanMsg<'static>, client: &mut Circuit) {
        if i == self.hops.len() {
            let (c, reply) = RelayCircuit::accept(&self.keys[i], &m, Instant::ZERO, &mut self.rng)
                .expect("accept");
            self.hops.push(c);
            self.backward(i, reply, client);
        } else {
            self.hops[i].handle_from_client(Instant::ZERO, m);
            assert!(!self.hops[i].is_closed(), "relay input");
        }
    }
    fn backward(&mut self, i: usize, m: ChanMsg<'static>, client: &mut Circuit) {
        if i == 0 {
            client.handle_cell(Instant::ZERO, m);
            assert!(!client.is_closed(), "client input");
        } else {
            self.hops[i - 1].handle_from_next(Instant::ZERO, m);
            assert!(!self.hops[i - 1].is_closed(), "relay input");
        }
    }
    fn run(&mut self, client: &mut Circuit) -> Vec<RelayEvent> {
        let mut evs = Vec::new();
        loop {
            let mut moved = false;
            while let Some(m) = client.poll_cell(&mut self.rng) {
                moved = true;
                self.forward(0, m, client);
            }
            while let Some(e) = client.poll_event() {
                moved = true;
                assert!(!matches!(e, CircEvent::Closed { .. }), "{e:?}");
            }
            for i in 0..self.hops.len() {
                while let Some(out) = self.hops[i].poll_cell(&mut self.rng) {
                    moved = true;
                    match out {
                        RelayOutput::ToClient(m) => self.backward(i, m, client),
                        RelayOutput::ToNext(m) => self.forward(i + 1, m, client),
                    }
                }
                while let Some(e) = self.hops[i].poll_event() {
                    moved = true;
                    if let RelayEvent::Extend(req) = e {
                        self.forward(i + 1, req.create, client);
                    } else {
                        evs.push(e);
                    }
                }
            }
            if !moved {
                return evs;
            }
        }
    }
}

fn setup(seed: u64) -> (Net, Circuit) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut keys = Vec::new();
    let mut targets = Vec::new();
    for n in 1..=3u8 {
        let ntor = NtorSecretKey::generate(&mut rng);
        targets.push(HopTarget {
            rsa_id: RsaIdentity([n; 20]),
            ed_id: Some(Ed25519Identity([n; 32])),
            ntor_key: *ntor.public(),
            addrs: vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
                9001,
            )],
            ntor_v3: true,
        });
        keys.push(RelayKeys {
            rsa_id: RsaIdentity([n; 20]),
            ed_id: Ed25519Identity([n; 32]),
            ntor_keys: vec![ntor],
        });
    }
    let (mut client, create) = Circuit::create(
        CircConfig::default(),
        &targets[0],
        HandshakeKind::NtorV3,
        Instant::ZERO,
        &mut rng,
    )
    .expect("create");
    let mut net = Net {
        rng,
        keys,
        targets,
        hops: Vec::new(),
    };
    net.forward(0, create, &mut client);
    net.run(&mut client);
    for i in 1..3 {
        let t = net.targets[i].clone();
        client
            .extend(&t, Instant::ZERO, &mut net.rng)
            .expect("extend");
        net.run(&mut client);
    }
    assert_eq!(client.n_hops(), 3);
    (net, client)
}

/// Bytes freed by dropping `x`: the heap it held.
fn heap_of<T>(x: T) -> isize {
    let reg = Region::new(GLOBAL);
    drop(x);
    let c = reg.change();
    c.bytes_deallocated as isize - c.bytes_allocated as isize
}

/// Let the circuit sit idle: run its timers (`poll_timeout` / `handle_timeout`, as an
/// embedding would) until it has none left. The idle check frees the hops' key schedules.
fn idle(client: &mut Circuit) {
    let mut n = 0;
    while let Some(t) = client.poll_timeout() {
        client.handle_timeout(t);
        assert!(!client.is_closed(), "timeout");
        n += 1;
        assert!(n < 10, "timers keep firing on an idle circuit");
    }
    assert!(client.is_compact());
}

#[test]
fn idle_circuit_and_stream_heap() {
    let _serial = serial();
    // A 3-hop circuit just built (queues drained, key schedules expanded: "active").
    let (_net, client) = setup(1);
    let active_heap = heap_of(client);

    // The same circuit after its idle period.
    let (_net, mut client) = setup(1);
    idle(&mut client);
    let circ_heap = heap_of(client);

    // The same circuit with one idle open stream.
    let (mut net, mut client) = setup(1);
    let s = client
        .begin("www.example.com", 80, BeginFlags::default(), Instant::ZERO)
        .expect("begin");
    let evs = net.run(&mut client);
    let es = evs
        .iter()
        .find_map(|e| match e {
            RelayEvent::Begin { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("begin at exit");
    net.hops[2].connected(es, None).expect("connected");
    net.run(&mut client);
    assert!(client.send_capacity(s) > 0, "stream open");
    idle(&mut client);
    let with_stream = heap_of(client);
    let stream_heap = with_stream - circ_heap;

    // The exit's relay circuit with its stream, for the record.
    let exit = net.hops.pop().expect("exit");
    let exit_heap = heap_of(exit);
    let hop = std::mem::size_of::<onion_crypto::tor1::Tor1ClientHop>() as isize;
    let schedule = std::mem::size_of::<aes::Aes128Enc>() as isize;
    eprintln!(
        "3-hop client circuit: {active_heap} B of heap while active, {circ_heap} B idle (size_of::<Circuit>() = {} B, not heap); idle stream: {stream_heap} B; exit relay circuit with one stream: {exit_heap} B",
        std::mem::size_of::<Circuit>()
    );
    eprintln!(
        "of which tor1 hop states: {} B idle (3 x {hop} B), plus 6 x {schedule} B key schedules while active; circuit machine: {} B",
        3 * hop,
        circ_heap - 3 * hop
    );
    // The targets: an idle 3-hop circuit <= 4 KiB, an idle stream <= 512 B.
    assert!(circ_heap <= 4096, "idle 3-hop circuit holds {circ_heap} B");
    assert!(stream_heap <= 512, "idle stream holds {stream_heap} B");
    // While active, the six expanded AES key schedules make most of the difference (the
    // rest is queue capacity that compacting also returns).
    assert!(active_heap - circ_heap >= 6 * schedule);
    assert!(active_heap - circ_heap <= 6 * schedule + 512);
}

/// An idle circuit whose key schedules were freed works again as soon as it is used: a
/// stream opens, more than a circuit window's worth of SENDME-acknowledged DATA flows both
/// ways (the SENDME v1 digests prove the running digests were kept), and it compacts again
/// when idle once more.
#[test]
fn idle_circuit_becomes_active_again() {
    let _serial = serial();
    let (mut net, mut client) = setup(2);
    idle(&mut client);
    let s = client
        .begin("www.example.com", 80, BeginFlags::default(), Instant::ZERO)
        .expect("begin");
    assert!(client.is_compact(), "nothing sent yet");
    let evs = net.run(&mut client);
    assert!(!client.is_compact(), "the BEGIN expanded the schedules");
    let es = evs
        .iter()
        .find_map(|e| match e {
            RelayEvent::Begin { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("begin at exit");
    net.hops[2].connected(es, None).expect("connected");
    net.run(&mut client);
    let chunk = vec![0x5au8; 498];
    let mut up = 0usize;
    let mut down = 0usize;
    // 300 cells each way per round; compact (as the idle timer would) between rounds.
    for round in 0..5 {
        for _ in 0..300 {
            up += client.send(s, &chunk).expect("send");
            down += net.hops[2].send(es, &chunk).expect("exit send");
        }
        let evs = net.run(&mut client);
        assert!(
            evs.iter().all(|e| !matches!(e, RelayEvent::Closed { .. })),
            "round {round}: {evs:?}"
        );
        client.compact();
        for h in &mut net.hops {
            h.compact();
        }
    }
    let st = client.stats();
    assert!(up >= 1000 * 498 && down >= 1000 * 498, "{up} {down}");
    assert!(
        st.circ_sendmes_sent >= 10 && st.circ_sendmes_received >= 10,
        "{st:?}"
    );
    assert!(!client.is_closed());
    idle(&mut client);
}

/// A one-hop circuit that never carries a relay cell (made with CREATE_FAST and left alone)
/// still frees its key schedules once idle: adding a hop arms the idle check.
#[test]
fn unused_one_hop_circuit_compacts() {
    let _serial = serial();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let ntor = NtorSecretKey::generate(&mut rng);
    let keys = RelayKeys {
        rsa_id: RsaIdentity([9; 20]),
        ed_id: Ed25519Identity([9; 32]),
        ntor_keys: vec![ntor.clone()],
    };
    let target = HopTarget {
        rsa_id: keys.rsa_id,
        ed_id: Some(keys.ed_id),
        ntor_key: *ntor.public(),
        addrs: vec![],
        ntor_v3: false,
    };
    let (mut client, create) = Circuit::create(
        CircConfig::default(),
        &target,
        HandshakeKind::CreateFast,
        Instant::ZERO,
        &mut rng,
    )
    .expect("create");
    let (_relay, reply) =
        RelayCircuit::accept(&keys, &create, Instant::ZERO, &mut rng).expect("accept");
    client.handle_cell(Instant::ZERO, reply);
    assert!(!client.is_closed(), "created");
    assert_eq!(client.n_hops(), 1);
    assert!(client.poll_timeout().is_some(), "idle check armed");
    idle(&mut client);
    assert_eq!(client.poll_timeout(), None);
}
