//! Client and relay circuit machines wired directly to each other (no channel): a 3-hop
//! circuit, streams, flow control, and the fault cases of tor-spec §5–7.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use onion_cell::chancell::{ChanMsg, DestroyReason, RelayPayload};
use onion_cell::relaymsg::{BeginFlags, EndReason};
use onion_circuit::circuit::{CircConfig, CircError, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::flow::FlowError;
use onion_circuit::relay::{RelayCircuit, RelayEvent, RelayKeys, RelayOutput};
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_circuit::Instant;
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Relay {
    keys: RelayKeys,
    target: HopTarget,
}

fn relay(rng: &mut ChaCha20Rng, n: u8, v3: bool) -> Relay {
    let ntor = NtorSecretKey::generate(rng);
    let keys = RelayKeys {
        rsa_id: RsaIdentity([n; 20]),
        ed_id: Ed25519Identity([n; 32]),
        ntor_keys: vec![ntor.clone()],
    };
    let target = HopTarget {
        rsa_id: keys.rsa_id,
        ed_id: Some(keys.ed_id),
        ntor_key: *ntor.public(),
        addrs: vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
            9001,
        )],
        ntor_v3: v3,
    };
    Relay { keys, target }
}

/// A client circuit and the relay circuits of its hops, passing cells by hand.
struct Net {
    rng: ChaCha20Rng,
    now: Instant,
    client: Circuit,
    relays: Vec<Relay>,
    hops: Vec<RelayCircuit>,
    client_events: Vec<CircEvent>,
    relay_events: Vec<(usize, RelayEvent)>,
    /// Hop index that silently drops every cell it gets (a relay that never answers).
    mute: Option<usize>,
    /// RELAY_EARLY cells the client sent.
    early_sent: usize,
}

impl Net {
    fn new(seed: u64, kind: HandshakeKind, v3: bool, n: usize) -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let relays: Vec<Relay> = (0..n).map(|i| relay(&mut rng, i as u8 + 1, v3)).collect();
        let now = Instant::ZERO;
        let (client, create) = Circuit::create(
            CircConfig::default(),
            &relays[0].target,
            kind,
            now,
            &mut rng,
        )
        .expect("create");
        let mut net = Net {
            rng,
            now,
            client,
            relays,
            hops: Vec::new(),
            client_events: Vec::new(),
            relay_events: Vec::new(),
            mute: None,
            early_sent: 0,
        };
        net.deliver_forward(0, create);
        net
    }

    /// A cell arriving at hop `i` from its client side.
    fn deliver_forward(&mut self, i: usize, msg: ChanMsg<'static>) {
        if self.mute == Some(i) {
            return;
        }
        if i == self.hops.len() {
            match msg {
                ChanMsg::Create2(_) | ChanMsg::CreateFast(_) => {
                    let (c, reply) =
                        RelayCircuit::accept(&self.relays[i].keys, &msg, self.now, &mut self.rng)
                            .expect("accept");
                    self.hops.push(c);
                    self.deliver_backward(i, reply);
                }
                _ => {}
            }
            return;
        }
        self.hops[i].handle_from_client(self.now, msg);
    }

    /// A cell from hop `i` (or, for `i == 0`, to the client) going toward the client.
    fn deliver_backward(&mut self, i: usize, msg: ChanMsg<'static>) {
        if i == 0 {
            self.client.handle_cell(self.now, msg);
        } else {
            self.hops[i - 1].handle_from_next(self.now, msg);
        }
    }

    /// Run until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(m) = self.client.poll_cell(&mut self.rng) {
                moved = true;
                if matches!(m, ChanMsg::RelayEarly(_)) {
                    self.early_sent += 1;
                }
                self.deliver_forward(0, m);
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.client_events.push(e);
            }
            for i in 0..self.hops.len() {
                while let Some(out) = self.hops[i].poll_cell(&mut self.rng) {
                    moved = true;
                    match out {
                        RelayOutput::ToClient(m) => self.deliver_backward(i, m),
                        RelayOutput::ToNext(m) => self.deliver_forward(i + 1, m),
                    }
                }
                while let Some(e) = self.hops[i].poll_event() {
                    moved = true;
                    if let RelayEvent::Extend(req) = &e {
                        self.relay_events.push((i, e.clone()));
                        let create = req.create.clone();
                        self.deliver_forward(i + 1, create);
                        continue;
                    }
                    self.relay_events.push((i, e));
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn build(&mut self) {
        self.run();
        for i in 1..self.relays.len() {
            let t = self.relays[i].target.clone();
            self.client
                .extend(&t, self.now, &mut self.rng)
                .expect("extend");
            self.run();
        }
    }

    fn take_client_events(&mut self) -> Vec<CircEvent> {
        std::mem::take(&mut self.client_events)
    }
}

fn sid(e: &[(usize, RelayEvent)]) -> StreamId {
    e.iter()
        .find_map(|(_, e)| match e {
            RelayEvent::Begin { stream, .. } | RelayEvent::BeginDir { stream } => Some(*stream),
            _ => None,
        })
        .expect("a begin")
}

#[test]
fn builds_three_hops_with_each_handshake() {
    for (seed, kind, v3) in [
        (1, HandshakeKind::Ntor, false),
        (2, HandshakeKind::NtorV3, true),
        (3, HandshakeKind::CreateFast, false),
    ] {
        let mut net = Net::new(seed, kind, v3, 3);
        net.build();
        assert_eq!(net.client.n_hops(), 3, "{kind:?}");
        let added: Vec<_> = net
            .take_client_events()
            .into_iter()
            .filter_map(|e| match e {
                CircEvent::HopAdded { hops } => Some(hops),
                _ => None,
            })
            .collect();
        assert_eq!(added, vec![1, 2, 3]);
        assert!(net.hops[0].has_next() && net.hops[1].has_next() && !net.hops[2].has_next());
    }
}

#[test]
fn one_hop_and_five_hop_circuits() {
    let mut one = Net::new(4, HandshakeKind::Ntor, false, 1);
    one.build();
    assert_eq!(one.client.n_hops(), 1);
    let s = one.client.begin_dir(one.now).expect("begin_dir");
    one.run();
    assert!(
        matches!(one.relay_events.last(), Some((0, RelayEvent::BeginDir { stream })) if *stream == s)
    );

    let mut five = Net::new(5, HandshakeKind::Ntor, true, 5);
    five.build();
    assert_eq!(five.client.n_hops(), 5);
}

/// Bytes flow both ways past several SENDME increments; the data arrives intact.
#[test]
fn stream_round_trip_with_sendmes() {
    let mut net = Net::new(6, HandshakeKind::Ntor, true, 3);
    net.build();
    let cs = net
        .client
        .begin("Example.COM", 80, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    let (exit_idx, host) = net
        .relay_events
        .iter()
        .find_map(|(i, e)| match e {
            RelayEvent::Begin { host, .. } => Some((*i, host.clone())),
            _ => None,
        })
        .expect("begin at exit");
    assert_eq!((exit_idx, host.as_str()), (2, "example.com"));
    let es = sid(&net.relay_events);
    net.hops[2]
        .connected(es, Some((IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), 300)))
        .expect("connected");
    net.run();
    assert!(net
        .take_client_events()
        .iter()
        .any(|e| matches!(e, CircEvent::StreamConnected { stream, .. } if *stream == cs)));

    // 600 KB from the exit to the client: needs stream and circuit SENDMEs to flow back.
    let payload: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..10_000 {
        if sent < payload.len() {
            sent += net.hops[2].send(es, &payload[sent..]).expect("send");
        }
        net.run();
        for e in net.take_client_events() {
            if let CircEvent::Stream(StreamEvent::Data { stream, data }) = e {
                assert_eq!(stream, cs);
                got.extend_from_slice(&data);
            }
        }
        if got.len() == payload.len() {
            break;
        }
    }
    assert_eq!(got, payload);

    // And 300 KB the other way.
    let up: Vec<u8> = (0..300_000u32).map(|i| (i % 13) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..10_000 {
        if sent < up.len() {
            sent += net.client.send(cs, &up[sent..]).expect("send");
        }
        net.run();
        for (_, e) in net.relay_events.drain(..) {
            if let RelayEvent::Stream(StreamEvent::Data { data, .. }) = e {
                got.extend_from_slice(&data);
            }
        }
        if got.len() == up.len() {
            break;
        }
    }
    assert_eq!(got, up);

    // Close from the client; the exit sees END, then answers END; no stream left.
    net.client.close_stream(cs).expect("close");
    net.run();
    assert!(net.relay_events.iter().any(
        |(_, e)| matches!(e, RelayEvent::Stream(StreamEvent::Ended { stream, .. }) if *stream == es)
    ));
    assert_eq!(net.hops[2].n_streams(), 0);
    assert_eq!(
        net.client.n_streams(),
        1,
        "half-closed until the exit's END"
    );
}

fn client_stream_events(net: &mut Net) -> Vec<StreamEvent> {
    net.take_client_events()
        .into_iter()
        .filter_map(|e| match e {
            CircEvent::Stream(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Both ends of a circuit report what the other edge did on a stream as the one
/// [`StreamEvent`]: bytes sent at one edge arrive as the same `Data` at the other, and an END
/// as the same `Ended`, whichever way they travel.
#[test]
fn both_edges_report_stream_data_and_ends_as_one_event_type() {
    let mut net = Net::new(16, HandshakeKind::NtorV3, true, 3);
    net.build();
    let cs = net
        .client
        .begin("example.com", 80, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[2].connected(es, None).expect("connected");
    net.run();
    net.relay_events.clear();
    net.take_client_events();

    net.client.send(cs, b"ping").expect("send");
    net.hops[2].send(es, b"pong").expect("send");
    net.run();
    let at_exit: Vec<StreamEvent> = net
        .relay_events
        .drain(..)
        .filter_map(|(_, e)| match e {
            RelayEvent::Stream(s) => Some(s),
            _ => None,
        })
        .collect();
    let at_client = client_stream_events(&mut net);
    let data = |stream, b: &'static [u8]| StreamEvent::Data {
        stream,
        data: bytes::Bytes::from_static(b),
    };
    assert_eq!(at_exit, vec![data(es, b"ping")]);
    assert_eq!(at_client, vec![data(cs, b"pong")]);

    // The exit ends the stream: the client sees the exit's reason.
    net.hops[2].end_stream(es, EndReason::DONE).expect("end");
    net.run();
    let ended = client_stream_events(&mut net);
    assert_eq!(
        ended,
        vec![StreamEvent::Ended {
            stream: cs,
            reason: EndReason::DONE
        }]
    );
    assert_eq!(ended[0].stream(), cs);
}

#[test]
fn send_is_window_limited() {
    let mut net = Net::new(7, HandshakeKind::Ntor, false, 3);
    net.build();
    let cs = net
        .client
        .begin("a.b", 1, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[2].connected(es, None).expect("connected");
    net.run();
    // Without delivering anything, the exit may package at most 500 cells on the stream.
    let big = vec![0u8; 1_000_000];
    let n = net.hops[2].send(es, &big).expect("send");
    // The first cell of each 100-cell increment is cut short to carry random padding.
    assert_eq!(
        n,
        500 * 498 - 5 * onion_circuit::flow::SENDME_UNPREDICTABLE_GAP
    );
    assert_eq!(net.hops[2].send(es, &big).expect("send"), 0);
    assert_eq!(net.client.send_capacity(cs), 500 * 498);
}

#[test]
fn resolve_and_refused_begin() {
    let mut net = Net::new(8, HandshakeKind::Ntor, false, 3);
    net.build();
    let r = net.client.resolve("example.com", net.now).expect("resolve");
    net.run();
    let (rs, q) = net
        .relay_events
        .iter()
        .find_map(|(_, e)| match e {
            RelayEvent::Resolve { stream, query } => Some((*stream, query.clone())),
            _ => None,
        })
        .expect("resolve event");
    assert_eq!((rs, q.as_str()), (r, "example.com"));
    let ans = onion_cell::relaymsg::ResolvedAnswer {
        value: onion_cell::relaymsg::ResolvedValue::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
        ttl: 60,
    };
    net.hops[2]
        .resolved(rs, vec![ans.clone()])
        .expect("resolved");
    net.run();
    assert!(net.take_client_events().contains(&CircEvent::Resolved {
        stream: r,
        answers: vec![ans]
    }));

    let s = net
        .client
        .begin("10.0.0.1", 25, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[2]
        .end_stream(es, EndReason::EXITPOLICY)
        .expect("end");
    net.run();
    assert!(net
        .take_client_events()
        .contains(&CircEvent::Stream(StreamEvent::Ended {
            stream: s,
            reason: EndReason::EXITPOLICY
        })));

    // A BEGIN without a host (what a client sends an onion service) names no destination:
    // the exit ends it itself, without asking the embedding to connect anywhere.
    let before = net.relay_events.len();
    let s = net
        .client
        .begin("", 80, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    assert!(!net.relay_events[before..]
        .iter()
        .any(|(_, e)| matches!(e, RelayEvent::Begin { .. })));
    assert!(net
        .take_client_events()
        .contains(&CircEvent::Stream(StreamEvent::Ended {
            stream: s,
            reason: EndReason::RESOLVEFAILED
        })));
}

#[test]
fn truncate_then_extend_again() {
    let mut net = Net::new(9, HandshakeKind::Ntor, false, 3);
    net.build();
    net.client.truncate(0).expect("truncate");
    net.run();
    assert!(net.take_client_events().contains(&CircEvent::Truncated {
        hops: 1,
        reason: DestroyReason::REQUESTED
    }));
    assert_eq!(net.client.n_hops(), 1);
    assert!(net.hops[1].is_closed(), "the middle got DESTROY");
    assert!(!net.hops[0].has_next());
    // The guard can be extended again (to a fresh relay circuit at index 1).
    net.hops.truncate(1);
    let t = net.relays[1].target.clone();
    net.client
        .extend(&t, net.now, &mut net.rng)
        .expect("extend");
    net.run();
    assert_eq!(net.client.n_hops(), 2);
}

// ---------------------------------------------------------------------------------------
// Fault tests.

/// The events waiting on the client circuit.
fn drain(c: &mut Circuit) -> Vec<CircEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn closed_error(events: &[CircEvent]) -> Option<CircError> {
    events.iter().find_map(|e| match e {
        CircEvent::Closed { error, .. } => error.clone(),
        _ => None,
    })
}

#[test]
fn garbage_from_the_guard_closes_the_circuit() {
    let mut net = Net::new(10, HandshakeKind::Ntor, false, 3);
    net.build();
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut junk = [0u8; 509];
    rand_chacha::rand_core::RngCore::fill_bytes(&mut rng, &mut junk);
    net.client
        .handle_cell(net.now, ChanMsg::Relay(RelayPayload::Owned(Box::new(junk))));
    assert!(net.client.is_closed());
    // It queued a DESTROY with reason NONE.
    assert_eq!(
        net.client.poll_cell(&mut net.rng),
        Some(ChanMsg::Destroy(DestroyReason::NONE))
    );
    // The error is reported once, as the Closed event, with its kind.
    let ev = drain(&mut net.client);
    assert_eq!(closed_error(&ev), Some(CircError::NotRecognized));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, CircEvent::Closed { .. }))
            .count(),
        1
    );
    assert_eq!(
        CircError::NotRecognized.kind(),
        onion_circuit::ErrorKind::PeerProtocol
    );
    // Further input is ignored (no second report), commands refused.
    net.client
        .handle_cell(net.now, ChanMsg::Destroy(DestroyReason::NONE));
    assert_eq!(net.client.poll_event(), None);
    assert_eq!(net.client.poll_cell(&mut net.rng), None);
    assert_eq!(
        net.client.begin("x", 1, BeginFlags::default(), net.now),
        Err(CircError::Closed)
    );
}

#[test]
fn garbage_at_a_relay_destroys_both_ways() {
    let mut net = Net::new(11, HandshakeKind::Ntor, false, 3);
    net.build();
    let junk = ChanMsg::Relay(RelayPayload::Owned(Box::new([0x5a; 509])));
    // The guard cannot recognise it and forwards it; the exit can't either: it destroys.
    net.hops[0].handle_from_client(net.now, junk);
    net.run();
    assert!(net.hops[2].is_closed());
    assert!(net.client.is_closed());
    let ev = net.take_client_events();
    assert!(ev.iter().any(|e| matches!(
        e,
        CircEvent::Closed {
            remote_reason: Some(_),
            ..
        }
    )));
}

#[test]
fn unexpected_channel_cell_and_inbound_relay_early() {
    let mut net = Net::new(12, HandshakeKind::Ntor, false, 2);
    net.build();
    net.client.handle_cell(
        net.now,
        ChanMsg::RelayEarly(RelayPayload::Owned(Box::new([0; 509]))),
    );
    let r = closed_error(&drain(&mut net.client));
    assert!(matches!(r, Some(CircError::Unexpected(_))), "{r:?}");
    let mut net = Net::new(13, HandshakeKind::Ntor, false, 2);
    net.build();
    net.client
        .handle_cell(net.now, ChanMsg::CreateFast([0; 20]));
    let r = closed_error(&drain(&mut net.client));
    assert!(matches!(r, Some(CircError::Unexpected(_))), "{r:?}");
}

/// A relay answering EXTEND2 with a corrupted handshake: the client closes with a handshake
/// error.
#[test]
fn extended2_with_bad_handshake_reply() {
    let mut net = Net::new(14, HandshakeKind::Ntor, false, 3);
    net.run();
    // Corrupt the EXTENDED2 on its way: flip a bit in the encrypted body of the next
    // backward relay cell (its content is the handshake reply, so the relay digest still
    // verifies only if we flip in the part covered... it does not: a flipped bit breaks the
    // digest and the cell goes unrecognised). Instead, make the middle relay answer with a
    // bogus CREATED2 by swapping its onion key for another one.
    let mut other = ChaCha20Rng::seed_from_u64(1234);
    net.relays[1].keys.ntor_keys = vec![NtorSecretKey::generate(&mut other)];
    let t = net.relays[1].target.clone();
    net.client
        .extend(&t, net.now, &mut net.rng)
        .expect("extend");
    // The middle, with the wrong key, refuses the CREATE2: accept() fails. Emulate a relay
    // that answers anyway with a random CREATED2 by feeding EXTENDED2 made at the guard.
    net.mute = Some(1);
    net.run();
    let bogus = ChanMsg::Created2(onion_cell::chancell::Created2 {
        hdata: vec![7u8; 64].into(),
    });
    net.hops[0].handle_from_next(net.now, bogus);
    net.run();
    let err = closed_error(&net.take_client_events());
    assert!(
        matches!(err, Some(CircError::Handshake { hop: 1, .. })),
        "{err:?}"
    );
}

#[test]
fn sendme_with_wrong_digest_closes_the_circuit() {
    let mut net = Net::new(15, HandshakeKind::Ntor, false, 1);
    net.build();
    let cs = net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[0].connected(es, None).expect("connected");
    net.run();
    // The client sends 100 cells: the relay owes a SENDME carrying cell 100's digest.
    // Intercept: relay circuit SENDME is generated inside the relay; corrupt it by sending
    // the client a forged circuit SENDME from the relay side instead, before the real one.
    let data = vec![1u8; 100 * 498];
    assert_eq!(net.client.send(cs, &data).expect("send"), data.len());
    while let Some(m) = net.client.poll_cell(&mut net.rng) {
        // Drop the cells: the relay never sees them, so its digest is unrelated.
        let _ = m;
    }
    let forged = onion_cell::relaymsg::RelayMsg::Sendme(onion_cell::relaymsg::Sendme {
        tag: Some([0xAB; 20]),
    });
    net.hops[0].send_msg(None, &forged).expect("send_msg");
    net.run();
    let err = closed_error(&net.take_client_events());
    assert_eq!(
        err,
        Some(CircError::Flow {
            hop: 0,
            err: FlowError::SendmeDigestMismatch
        })
    );
}

#[test]
fn sendme_nobody_asked_for() {
    let mut net = Net::new(16, HandshakeKind::Ntor, false, 1);
    net.build();
    let forged =
        onion_cell::relaymsg::RelayMsg::Sendme(onion_cell::relaymsg::Sendme { tag: Some([0; 20]) });
    net.hops[0].send_msg(None, &forged).expect("send_msg");
    net.run();
    assert!(matches!(
        closed_error(&net.take_client_events()),
        Some(CircError::Flow {
            err: FlowError::UnexpectedSendme(_),
            ..
        })
    ));
}

/// An exit that ignores the stream window: the client, whose application stopped reading,
/// closes the circuit when the stream's deliver window would go below zero (tor-spec §7.4,
/// §7.3 "If a deliver window goes below 0, the circuit should be torn down").
#[test]
fn window_overrun_closes_the_circuit() {
    let mut net = Net::new(17, HandshakeKind::Ntor, false, 1);
    net.build();
    let cs = net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[0].connected(es, None).expect("connected");
    net.run();
    net.take_client_events();
    // The exit packages a full stream window (500 cells); the client's application does not
    // read (no poll_event), so the client sends no stream SENDME.
    let big = vec![0u8; 1_000_000];
    let full = 500 * 498 - 5 * onion_circuit::flow::SENDME_UNPREDICTABLE_GAP;
    assert_eq!(net.hops[0].send(es, &big).expect("send"), full);
    while let Some(out) = net.hops[0].poll_cell(&mut net.rng) {
        if let RelayOutput::ToClient(m) = out {
            net.client.handle_cell(net.now, m);
            assert!(!net.client.is_closed(), "within the window");
        }
    }
    // Emulate an exit that ignores its window: grant it 50 more cells behind the client's
    // back (a stream SENDME the client's window accounting does not know about).
    let grant = onion_cell::relaymsg::RelayMsg::Sendme(Default::default());
    net.client.send_msg(0, Some(cs), &grant).expect("send_msg");
    while let Some(m) = net.client.poll_cell(&mut net.rng) {
        net.hops[0].handle_from_client(net.now, m);
    }
    assert_eq!(
        net.hops[0].send(es, &big).expect("send"),
        50 * 498 - onion_circuit::flow::SENDME_UNPREDICTABLE_GAP
    );
    while let Some(out) = net.hops[0].poll_cell(&mut net.rng) {
        if let RelayOutput::ToClient(m) = out {
            net.client.handle_cell(net.now, m);
        }
    }
    let result = closed_error(&drain(&mut net.client));
    assert!(
        matches!(
            result,
            Some(CircError::Stream(
                onion_circuit::stream::StreamError::Flow {
                    err: FlowError::WindowOverrun(onion_circuit::flow::WindowKind::Stream),
                    ..
                }
            ))
        ),
        "{result:?}"
    );
    assert!(net.client.is_closed());
}

/// A held stream (its consumer is slow) stops at its window while the circuit's other stream
/// goes on; released, it gets the rest.
#[test]
fn held_stream_stops_at_its_window_while_another_flows() {
    let mut net = Net::new(23, HandshakeKind::Ntor, false, 1);
    net.build();
    let slow = net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    let es_slow = sid(&net.relay_events);
    net.relay_events.clear();
    let fast = net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    let es_fast = sid(&net.relay_events);
    net.hops[0].connected(es_slow, None).expect("connected");
    net.hops[0].connected(es_fast, None).expect("connected");
    net.run();
    net.take_client_events();
    net.client.hold_stream(slow, true);
    let big = vec![5u8; 600_000];
    let (mut sent, mut got) = ([0usize; 2], [0usize; 2]);
    let step = |net: &mut Net, sent: &mut [usize; 2], got: &mut [usize; 2]| {
        for (i, es) in [es_slow, es_fast].into_iter().enumerate() {
            if sent[i] < big.len() {
                sent[i] += net.hops[0].send(es, &big[sent[i]..]).unwrap_or(0);
            }
        }
        net.run();
        for e in net.take_client_events() {
            if let CircEvent::Stream(StreamEvent::Data { stream, data }) = e {
                got[usize::from(stream == fast)] += data.len();
            }
        }
    };
    for _ in 0..400 {
        step(&mut net, &mut sent, &mut got);
    }
    assert_eq!(got[1], big.len(), "the other stream is not held up");
    // The held one got one stream window and no more: the exit waits for its SENDMEs.
    let window = 500 * 498;
    assert!(got[0] <= window && got[0] > window - 10 * 498, "{}", got[0]);
    assert!(!net.client.is_closed());
    net.client.hold_stream(slow, false);
    for _ in 0..400 {
        step(&mut net, &mut sent, &mut got);
    }
    assert_eq!(got[0], big.len(), "released, the held stream gets the rest");
}

/// A reading application keeps the stream going: SENDMEs are sent as data is taken.
#[test]
fn reading_application_gets_everything() {
    let mut net = Net::new(22, HandshakeKind::Ntor, false, 1);
    net.build();
    let _cs = net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[0].connected(es, None).expect("connected");
    let big = vec![3u8; 2_000_000];
    let mut sent = 0;
    let mut got = 0;
    for _ in 0..1000 {
        if sent < big.len() {
            sent += net.hops[0].send(es, &big[sent..]).expect("send");
        }
        net.run();
        for e in net.take_client_events() {
            if let CircEvent::Stream(StreamEvent::Data { data, .. }) = e {
                got += data.len();
            }
        }
        if got == big.len() {
            break;
        }
    }
    assert_eq!(got, big.len());
    assert!(!net.client.is_closed());
}

#[test]
fn destroy_mid_stream_ends_streams() {
    let mut net = Net::new(18, HandshakeKind::Ntor, false, 3);
    net.build();
    let cs = net
        .client
        .begin("a.example", 443, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[2].connected(es, None).expect("connected");
    net.run();
    net.hops[2].send(es, b"partial").expect("send");
    net.run();
    net.take_client_events();
    // The middle's next side dies: it destroys toward the client.
    net.hops[1].handle_from_next(net.now, ChanMsg::Destroy(DestroyReason::CHANNEL_CLOSED));
    net.run();
    let ev = net.take_client_events();
    assert!(ev.contains(&CircEvent::Stream(StreamEvent::Ended {
        stream: cs,
        reason: EndReason::DESTROY
    })));
    assert!(ev.contains(&CircEvent::Closed {
        remote_reason: Some(DestroyReason::DESTROYED),
        error: None
    }));
    assert!(net.client.is_closed());
    assert_eq!(
        net.client.poll_cell(&mut net.rng),
        None,
        "no DESTROY back to a DESTROY"
    );
}

#[test]
fn relay_that_never_answers_times_out() {
    let mut net = Net::new(19, HandshakeKind::Ntor, false, 3);
    net.run();
    net.mute = Some(1);
    let t = net.relays[1].target.clone();
    net.client
        .extend(&t, net.now, &mut net.rng)
        .expect("extend");
    net.run();
    // The idle check (CircConfig::idle_after) also runs meanwhile; it is not fatal.
    let build_deadline = net.now + Duration::from_secs(60);
    let mut deadline = net.client.poll_timeout().expect("a timer armed");
    while deadline < build_deadline {
        net.client.handle_timeout(deadline);
        assert!(!net.client.is_closed());
        deadline = net.client.poll_timeout().expect("build timeout armed");
    }
    assert_eq!(deadline, build_deadline);
    net.client.handle_timeout(net.now + Duration::from_secs(59));
    assert!(!net.client.is_closed());
    net.now = deadline;
    net.client.handle_timeout(net.now);
    assert!(net.client.is_closed());
    let e = closed_error(&drain(&mut net.client));
    assert_eq!(e, Some(CircError::BuildTimeout { hop: 1 }));
    assert_eq!(e.map(|e| e.kind()), Some(onion_circuit::ErrorKind::Timeout));
    net.run();
    assert!(net.hops[0].is_closed(), "the DESTROY reached the guard");
}

#[test]
fn stream_connect_timeout() {
    let mut net = Net::new(20, HandshakeKind::Ntor, false, 3);
    net.build();
    let cs = net
        .client
        .begin("slow.example", 80, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    let start = net.now;
    let ended = loop {
        let t = net.client.poll_timeout().expect("stream timeout armed");
        net.now = t;
        net.client.handle_timeout(t);
        assert!(!net.client.is_closed(), "not fatal");
        if let Some(e) = net.client.poll_event() {
            break e;
        }
    };
    assert_eq!(
        ended,
        CircEvent::Stream(StreamEvent::Ended {
            stream: cs,
            reason: EndReason::TIMEOUT
        })
    );
    assert_eq!(net.now, start + Duration::from_secs(60));
    // Only the idle check is left, and it stops once the circuit is compacted.
    for _ in 0..2 {
        if let Some(t) = net.client.poll_timeout() {
            net.client.handle_timeout(t);
            assert!(!net.client.is_closed(), "not fatal");
        }
    }
    assert!(net.client.is_compact());
    assert_eq!(net.client.poll_timeout(), None);
}

#[test]
fn relay_rejects_extend_outside_relay_early_and_begin_at_first_hop() {
    // CREATE_FAST marks the relay as first hop: BEGIN there tears the circuit down.
    let mut net = Net::new(21, HandshakeKind::CreateFast, false, 1);
    net.build();
    net.client
        .begin("x.example", 80, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    assert!(net.hops[0].is_closed());
    assert!(net.client.is_closed());
}

/// tor-spec §5.6: relays reject EXTEND2 not carried in RELAY_EARLY.
#[test]
fn extend2_outside_relay_early_is_refused() {
    use onion_cell::relay::RelayCell;
    use onion_cell::relaymsg::{Extend2, RelayMsg};
    let mut net = Net::new(23, HandshakeKind::Ntor, false, 2);
    net.run();
    let t = net.relays[1].target.clone();
    let msg = RelayMsg::Extend2(Extend2 {
        linkspecs: t.link_specs(),
        handshake_type: onion_cell::chancell::HandshakeType::NTOR,
        hdata: vec![0u8; 84].into(),
    });
    let body = RelayCell::new(None, msg)
        .encode(&mut net.rng)
        .expect("encode");
    net.client
        .send_raw(0, Box::new(body.0), false)
        .expect("send_raw");
    net.run();
    assert!(net.hops[0].is_closed());
    assert!(net.client.is_closed());
    assert!(!net
        .relay_events
        .iter()
        .any(|(_, e)| matches!(e, RelayEvent::Extend(_))));
}

/// A relay that receives a cell with no valid relay header on a recognised path, or a DATA
/// beyond the window sent raw by a misbehaving client, closes without panicking.
#[test]
fn raw_data_beyond_the_window_at_the_exit() {
    let mut net = Net::new(24, HandshakeKind::Ntor, false, 1);
    net.build();
    let _cs = net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[0].connected(es, None).expect("connected");
    net.run();
    // 600 raw DATA cells on the stream: the exit's circuit deliver window (1000, refilled
    // by 100 for each SENDME it sends) is not overrun, but its stream window (500, refilled
    // only as the embedding takes data, which it does not here) is.
    for _ in 0..600 {
        let mut body = Box::new([0u8; 509]);
        body[0] = 2;
        body[3..5].copy_from_slice(&es.get().to_be_bytes());
        body[10] = 1;
        let _ = net.client.send_raw(0, body, false);
    }
    while let Some(m) = net.client.poll_cell(&mut net.rng) {
        net.hops[0].handle_from_client(net.now, m);
    }
    assert!(net.hops[0].is_closed(), "stream window overrun at the exit");
}

/// tor-spec §5.6: EXTEND2 goes in RELAY_EARLY, and so do the first few other cells beyond
/// the guard (concealing the circuit length), keeping two for later extensions; cells to the
/// first hop never do; and the client never sends more than 8.
#[test]
fn client_relay_early_budget() {
    use onion_circuit::circuit::{MAX_RELAY_EARLY, RELAY_EARLY_RESERVED_FOR_EXTEND};
    // A one-hop (directory) circuit: nothing is ever RELAY_EARLY.
    let mut net = Net::new(30, HandshakeKind::Ntor, false, 1);
    net.build();
    net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    assert_eq!(net.early_sent, 0);

    // Three hops: two EXTEND2s, then the BEGIN and the first DATA cells, up to the reserve.
    let mut net = Net::new(31, HandshakeKind::Ntor, false, 3);
    net.build();
    assert_eq!(net.early_sent, 2);
    let cs = net
        .client
        .begin("x.example", 80, BeginFlags::default(), net.now)
        .expect("begin");
    net.run();
    assert_eq!(net.early_sent, 3, "the BEGIN went as RELAY_EARLY");
    let es = sid(&net.relay_events);
    net.hops[2].connected(es, None).expect("connected");
    net.run();
    net.client.send(cs, &[7u8; 20 * 498]).expect("send");
    net.run();
    let cap = usize::from(MAX_RELAY_EARLY - RELAY_EARLY_RESERVED_FOR_EXTEND);
    assert_eq!(net.early_sent, cap);
    assert!(!net.hops.iter().any(RelayCircuit::is_closed));
    let got: usize = net
        .relay_events
        .iter()
        .filter_map(|(_, e)| match e {
            RelayEvent::Stream(StreamEvent::Data { data, .. }) => Some(data.len()),
            _ => None,
        })
        .sum();
    assert_eq!(got, 20 * 498, "RELAY_EARLY DATA delivered like RELAY");

    // Nine hops: eight EXTEND2s use the whole budget; a ninth extension is refused, and
    // later cells go as plain RELAY cells.
    let mut net = Net::new(32, HandshakeKind::Ntor, false, 10);
    net.run();
    for i in 1..9 {
        let t = net.relays[i].target.clone();
        net.client
            .extend(&t, net.now, &mut net.rng)
            .expect("extend");
        net.run();
    }
    assert_eq!(net.client.n_hops(), 9);
    assert_eq!(net.early_sent, usize::from(MAX_RELAY_EARLY));
    let t = net.relays[9].target.clone();
    assert_eq!(
        net.client.extend(&t, net.now, &mut net.rng),
        Err(CircError::RelayEarlyExhausted)
    );
    net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    assert_eq!(net.early_sent, usize::from(MAX_RELAY_EARLY));
    assert!(!net.hops.iter().any(RelayCircuit::is_closed));
}

/// tor-spec §5.6: a relay closes a circuit on which it receives more than 8 RELAY_EARLY
/// cells (ours would never send them: they are forged from RELAY cells here).
#[test]
fn relay_closes_the_circuit_after_eight_relay_early() {
    use onion_cell::relaymsg::RelayMsg;
    let mut net = Net::new(33, HandshakeKind::Ntor, false, 1);
    net.build();
    for i in 0..9 {
        net.client.send_msg(0, None, &RelayMsg::Drop).expect("drop");
        let Some(ChanMsg::Relay(p)) = net.client.poll_cell(&mut net.rng) else {
            panic!("a RELAY cell")
        };
        net.hops[0].handle_from_client(net.now, ChanMsg::RelayEarly(p));
        if i < 8 {
            assert!(!net.hops[0].is_closed(), "RELAY_EARLY {i}");
        } else {
            assert!(net.hops[0].is_closed());
        }
    }
    // The client side's violation: DESTROY PROTOCOL toward it (tor-spec §5.4), and the
    // error reported once, as the Closed event.
    assert_eq!(
        net.hops[0].poll_cell(&mut net.rng),
        Some(RelayOutput::ToClient(ChanMsg::Destroy(
            DestroyReason::PROTOCOL
        )))
    );
    let closed: Vec<RelayEvent> = std::iter::from_fn(|| net.hops[0].poll_event())
        .filter(|e| matches!(e, RelayEvent::Closed { .. }))
        .collect();
    assert!(
        matches!(
            &closed[..],
            [RelayEvent::Closed { error: Some(e) }] if e.kind() == onion_circuit::ErrorKind::PeerProtocol
        ),
        "{closed:?}"
    );
    net.deliver_backward(0, ChanMsg::Destroy(DestroyReason::PROTOCOL));
    // The relay sent DESTROY toward the client.
    net.run();
    assert!(net.client.is_closed());
}

/// tor-spec §6.3 at the exit: a stream the exit ended stays half-closed, absorbing the DATA
/// the client had in flight, until its window ends by timer; then it is forgotten and
/// later DATA for it is dropped as for an unknown stream (§6.2.1).
#[test]
fn exit_half_closed_stream_expires_by_timer() {
    let mut net = Net::new(34, HandshakeKind::Ntor, false, 1);
    net.build();
    net.now = Instant::ZERO + Duration::from_secs(5);
    let cs = net.client.begin_dir(net.now).expect("begin_dir");
    net.run();
    let es = sid(&net.relay_events);
    net.hops[0].connected(es, None).expect("connected");
    net.run();
    net.relay_events.clear();
    // The client sends while the exit ends the stream: the DATA crosses the END.
    net.client.send(cs, &[1u8; 3 * 498]).expect("send");
    net.hops[0].set_half_closed_timeout(Duration::from_secs(30));
    net.hops[0]
        .end_stream(es, EndReason::DONE)
        .expect("end_stream");
    while let Some(m) = net.client.poll_cell(&mut net.rng) {
        net.hops[0].handle_from_client(net.now, m);
        assert!(!net.hops[0].is_closed(), "late DATA absorbed");
    }
    net.run();
    assert!(!net
        .relay_events
        .iter()
        .any(|(_, e)| matches!(e, RelayEvent::Stream(StreamEvent::Data { .. }))));
    assert_eq!(net.hops[0].n_streams(), 1, "half-closed");
    let expiry = net.now + Duration::from_secs(30);
    assert_eq!(net.hops[0].poll_timeout(), Some(expiry));
    net.hops[0].handle_timeout(net.now + Duration::from_secs(29));
    assert_eq!(net.hops[0].n_streams(), 1);
    net.hops[0].handle_timeout(expiry);
    assert_eq!(net.hops[0].n_streams(), 0, "forgotten");
    assert_eq!(net.hops[0].poll_timeout(), None);
    // Later DATA on that id (sent raw: the client forgot the stream on the exit's END).
    let mut body = Box::new([0u8; 509]);
    body[0] = 2;
    body[3..5].copy_from_slice(&es.get().to_be_bytes());
    body[10] = 4;
    net.client.send_raw(0, body, false).expect("raw");
    net.run();
    assert!(!net.hops[0].is_closed());
    assert!(!net
        .relay_events
        .iter()
        .any(|(_, e)| matches!(e, RelayEvent::Stream(StreamEvent::Data { .. }))));
}

#[test]
fn destroy_with_reason_sends_that_reason_and_only_once() {
    let mut net = Net::new(19, HandshakeKind::Ntor, false, 3);
    net.build();
    net.take_client_events();
    net.client.destroy_with_reason(DestroyReason::PROTOCOL);
    assert!(net.client.is_closed());
    assert_eq!(
        net.client.poll_cell(&mut net.rng),
        Some(ChanMsg::Destroy(DestroyReason::PROTOCOL))
    );
    assert_eq!(net.client.poll_cell(&mut net.rng), None);
    let ev = drain(&mut net.client);
    assert!(ev.contains(&CircEvent::Closed {
        remote_reason: None,
        error: None
    }));
    // A second close changes nothing: the DESTROY already went out.
    net.client.destroy_with_reason(DestroyReason::INTERNAL);
    net.client.destroy();
    assert_eq!(net.client.poll_cell(&mut net.rng), None);
}

#[test]
fn plain_destroy_sends_reason_none() {
    let mut net = Net::new(20, HandshakeKind::Ntor, false, 1);
    net.build();
    net.client.destroy();
    assert_eq!(
        net.client.poll_cell(&mut net.rng),
        Some(ChanMsg::Destroy(DestroyReason::NONE))
    );
}
