//! Relay benchmarks (onion-relay `Relay`): cells forwarded by a middle relay in memory.
//! A client channel and a two-hop circuit (CREATE_FAST to the middle, EXTEND2 to a second
//! relay) are set up once through the relays' real handshakes; then batches of RELAY cells
//! arrive on the client's connection and the middle deframes them, finds the circuit,
//! removes its layer (AES-128-CTR and the unrecognised check, tor-spec §5.5.2.2) and frames
//! them onto its channel to the next relay, whose bytes are taken and dropped. What is
//! measured is the relay machine's work per forwarded cell, without TLS or sockets.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel};
use onion_circuit::circuit::{CircConfig, Circuit, HandshakeKind, HopTarget};
use onion_circuit::Instant;
use onion_crypto::relay_keyset::RelayKeySet;
use onion_relay::{ConnId, Event, Relay, RelayConfig, TlsLinkCert};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Cells per measured batch.
const CELLS: usize = 200;
/// The TLS exporter value both ends of the relay-to-relay link agree on.
const EXPORTER: [u8; 32] = [5; 32];
/// The client's connection at the middle, and the second relay's connection from it.
const CLIENT: ConnId = ConnId(1);
const FROM_MIDDLE: ConnId = ConnId(1);

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

fn relay(rng: &mut ChaCha20Rng, ip: IpAddr) -> Relay {
    let keys = RelayKeySet::generate(wall(), false, rng).expect("keys");
    let mut cfg = RelayConfig::new(vec![ip]);
    cfg.extend_allow_private = true;
    let mut fake = vec![0u8; 64];
    rng.fill_bytes(&mut fake);
    cfg.link_cert = Some(TlsLinkCert::from_der(fake, Default::default()));
    Relay::new(cfg, keys, Instant::ZERO, wall().into(), rng).expect("relay")
}

fn target(r: &Relay, addr: SocketAddr) -> HopTarget {
    HopTarget {
        rsa_id: r.keys().rsa_identity().public().identity(),
        ed_id: Some(r.keys().ed_identity()),
        ntor_key: *r.keys().ntor_key().public(),
        addrs: vec![addr],
        ntor_v3: true,
    }
}

/// The client, the middle `m` and the next relay `x`, joined by in-memory links.
struct Net {
    m: Relay,
    x: Relay,
    chan: Channel,
    circ: Circuit,
    id: onion_cell::CircId,
    out_conn: Option<ConnId>,
    m_addr: SocketAddr,
    rng: ChaCha20Rng,
}

impl Net {
    /// Move bytes and events until nothing moves.
    fn pump(&mut self) {
        let now = Instant::ZERO;
        let mut out = Vec::new();
        loop {
            let mut moved = false;
            while let Some(m) = self.circ.poll_cell(&mut self.rng) {
                self.chan.send(self.id, &m).expect("send");
            }
            while self.chan.poll_transmit(&mut out).is_some() {
                self.m.handle_input(CLIENT, now, &out);
                out.clear();
                moved = true;
            }
            while let Some(ev) = self.m.poll_event() {
                moved = true;
                if let Event::Connect { conn, .. } = ev {
                    self.out_conn = Some(conn);
                    let from = SocketAddr::new(self.m_addr.ip(), 50000);
                    self.x
                        .handle_accepted(FROM_MIDDLE, now, from)
                        .expect("accept");
                    let sha = self.x.link_cert().sha256();
                    self.m.handle_connected(conn, now, sha, EXPORTER);
                }
            }
            while let Some(ev) = self.x.poll_event() {
                moved = true;
                if let Event::TlsExporter { conn, .. } = ev {
                    self.x.provide_tls_exporter(conn, now, EXPORTER);
                }
            }
            while let Some(conn) = self.m.poll_transmit(now, &mut out) {
                moved = true;
                if conn == CLIENT {
                    let mut off = 0;
                    while off < out.len() {
                        off += self.chan.handle_input(now, &out[off..]);
                        assert_eq!(self.chan.close_error(), None, "input");
                        while let Some(ev) = self.chan.poll_event() {
                            if let ChanEvent::CircuitCell { msg, .. } = ev {
                                self.circ.handle_cell(now, msg);
                                assert!(!self.circ.is_closed(), "cell");
                            }
                        }
                    }
                } else {
                    self.x.handle_input(FROM_MIDDLE, now, &out);
                }
                out.clear();
            }
            while self.x.poll_transmit(now, &mut out).is_some() {
                moved = true;
                if let Some(c) = self.out_conn {
                    self.m.handle_input(c, now, &out);
                }
                out.clear();
            }
            if !moved {
                return;
            }
        }
    }
}

/// A client with a two-hop circuit through `m` to `x`.
fn setup() -> Net {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let m_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 9001);
    let x_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 9001);
    let mut m = relay(&mut rng, m_addr.ip());
    let x = relay(&mut rng, x_addr.ip());
    let now = Instant::ZERO;
    let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 40000);
    m.handle_accepted(CLIENT, now, client).expect("accept");
    let chan = Channel::initiator(
        ChanConfig::default(),
        m.identities(),
        Some(m.link_cert().sha256()),
        now,
        wall(),
    );
    let (circ, create) = Circuit::create(
        CircConfig::default(),
        &target(&m, m_addr),
        HandshakeKind::CreateFast,
        now,
        &mut rng,
    )
    .expect("create");
    let x_target = target(&x, x_addr);
    let mut net = Net {
        m,
        x,
        chan,
        circ,
        id: onion_cell::CircId::ZERO,
        out_conn: None,
        m_addr,
        rng,
    };
    // The link handshake first, then the CREATE_FAST.
    net.pump();
    assert!(net.chan.is_open());
    net.id = net.chan.new_circ_id(&mut net.rng).expect("id");
    net.chan.send(net.id, &create).expect("create");
    net.pump();
    while net.circ.poll_event().is_some() {}
    assert_eq!(net.circ.n_hops(), 1);
    net.circ
        .extend(&x_target, now, &mut net.rng)
        .expect("extend");
    net.pump();
    assert_eq!(net.circ.n_hops(), 2, "the circuit reaches the second relay");
    assert_eq!(net.x.n_circuits(), 1);
    net
}

fn bench(c: &mut Criterion) {
    let mut net = setup();
    // A batch of RELAY cells on the circuit, as the client's channel frames them. The
    // middle cannot recognise them (they are for the next hop): it forwards each.
    let body = [0x42u8; 509];
    for _ in 0..CELLS {
        net.chan.send_relay(net.id, false, &body).expect("send");
    }
    let mut batch = Vec::new();
    net.chan.poll_transmit(&mut batch);
    assert_eq!(batch.len(), CELLS * 514);
    let out_conn = net
        .out_conn
        .expect("the middle's channel to the next relay");
    let mut out = Vec::with_capacity(CELLS * 514 + 1024);
    let now = Instant::ZERO;
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(CELLS as u64));
    g.bench_function("middle_forward_200_cells", |b| {
        b.iter(|| {
            net.m.handle_input(CLIENT, now, &batch);
            let mut n = 0;
            while let Some(conn) = net.m.poll_transmit(now, &mut out) {
                assert_eq!(conn, out_conn);
                n += out.len();
                out.clear();
            }
            assert_eq!(n, CELLS * 514);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
