//! Congestion control at the end of a circuit (proposal 324): the relay's answer to the
//! ntor-v3 request (§4.1, proposal 332), SENDMEs every `sendme_inc` cells both ways, no
//! stream SENDMEs, the congestion window limiting what the exit sends, and XON/XOFF with the
//! rate advisory on exit streams (§4.1.1). The client is the real client circuit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use onion_crypto::keys::NtorSecretKey;
use onion_crypto::ntor_v3::NtorV3Client;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use crate::stream::StreamEvent;
use onion_cell::relaymsg::{Xon, MAX_RELAY_DATA_LEN};

fn relay(rng: &mut ChaCha20Rng) -> (RelayKeys, HopTarget) {
    let ntor = NtorSecretKey::generate(rng);
    let keys = RelayKeys {
        rsa_id: RsaIdentity([7; 20]),
        ed_id: Ed25519Identity([7; 32]),
        ntor_keys: vec![ntor.clone()],
    };
    let target = HopTarget {
        rsa_id: keys.rsa_id,
        ed_id: Some(keys.ed_id),
        ntor_key: *ntor.public(),
        addrs: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9001)],
        ntor_v3: true,
    };
    (keys, target)
}

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

/// A relay that supports congestion control with `sendme_inc`.
fn cc_relay(sendme_inc: u8) -> RelayConfig {
    RelayConfig {
        congestion_control: Some(CcConfig {
            sendme_inc,
            ..CcConfig::default()
        }),
        ..RelayConfig::default()
    }
}

/// A one-hop circuit: the client asks for congestion control (`request`, consensus
/// `sendme_inc` 31) from a relay configured with `config`.
fn one_hop(request: bool, config: &RelayConfig) -> (Circuit, RelayCircuit, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (keys, target) = relay(&mut rng);
    let cfg = CircConfig {
        congestion_control: Some(Box::default()),
        ..CircConfig::default()
    };
    let (mut c, create) = if request {
        Circuit::create_requesting_cc(cfg, &target, at(0), &mut rng).unwrap()
    } else {
        Circuit::create(cfg, &target, HandshakeKind::NtorV3, at(0), &mut rng).unwrap()
    };
    let (r, reply) = RelayCircuit::accept_with(&keys, config, &create, at(0), &mut rng).unwrap();
    c.try_cell(at(0), reply)
        .expect("the client accepts the answer");
    while c.poll_event().is_some() {}
    (c, r, rng)
}

/// Move cells both ways at `now` until both are quiet; returns the relay's events.
fn pump(
    c: &mut Circuit,
    r: &mut RelayCircuit,
    rng: &mut ChaCha20Rng,
    now: Instant,
) -> Vec<RelayEvent> {
    let mut evs = Vec::new();
    loop {
        let mut moved = false;
        while let Some(m) = c.poll_cell(rng) {
            moved = true;
            r.try_from_client(now, m).expect("relay input");
        }
        while let Some(out) = r.poll_cell(rng) {
            moved = true;
            if let RelayOutput::ToClient(m) = out {
                c.try_cell(now, m).expect("client input");
            }
        }
        while let Some(e) = r.poll_event() {
            moved = true;
            evs.push(e);
        }
        if !moved {
            return evs;
        }
    }
}

fn client_events(c: &mut Circuit) -> Vec<CircEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// A BEGIN_DIR stream, connected: (client id, exit id).
fn dir_stream(
    c: &mut Circuit,
    r: &mut RelayCircuit,
    rng: &mut ChaCha20Rng,
) -> (StreamId, StreamId) {
    let id = c.begin_dir(at(0)).unwrap();
    let es = pump(c, r, rng, at(0))
        .iter()
        .find_map(|e| match e {
            RelayEvent::BeginDir { stream } => Some(*stream),
            _ => None,
        })
        .expect("BEGIN_DIR");
    r.connected(es, None).unwrap();
    pump(c, r, rng, at(0));
    client_events(c);
    (id, es)
}

#[test]
fn a_request_is_answered_with_our_sendme_inc_and_both_ends_run_it() {
    let (c, r, _) = one_hop(true, &cc_relay(31));
    let rc = r
        .congestion_control()
        .expect("relay runs congestion control");
    assert_eq!(rc.config().sendme_inc, 31);
    assert_eq!(rc.cwnd(), 124, "cc_cwnd_init");
    let cc = c.congestion_control(0).expect("client runs it too");
    assert_eq!(cc.config().sendme_inc, 31);
    // A relay whose consensus says 32 answers 32, which the client (consensus 31) accepts
    // within ±1.
    let (c, r, _) = one_hop(true, &cc_relay(32));
    assert_eq!(r.congestion_control().unwrap().config().sendme_inc, 32);
    assert_eq!(c.congestion_control(0).unwrap().config().sendme_inc, 32);
}

#[test]
fn no_support_or_no_request_means_fixed_windows() {
    // The relay does not support it (no FlowCtrl=2): an empty extension list, which the
    // client takes as a refusal.
    let (c, r, _) = one_hop(true, &RelayConfig::default());
    assert!(r.congestion_control().is_none());
    assert!(c.congestion_control(0).is_none());
    assert!(!c.is_closed());
    // The client did not ask: the relay does not turn it on.
    let (c, r, _) = one_hop(false, &cc_relay(31));
    assert!(r.congestion_control().is_none());
    assert!(c.congestion_control(0).is_none());
}

#[test]
fn a_client_message_that_is_not_an_extension_list_fails_the_handshake() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (keys, target) = relay(&mut rng);
    for msg in [&[][..], &[2, 1, 0][..], &[1, 1, 5, 0][..]] {
        let (_, skin) = NtorV3Client::start(
            &mut rng,
            &keys.ed_id,
            &target.ntor_key,
            msg,
            CIRCUIT_EXTEND_VERIFICATION,
        );
        let create = ChanMsg::Create2(Create2 {
            handshake_type: HandshakeType::NTOR_V3,
            hdata: skin.into(),
        });
        let r = RelayCircuit::accept_with(&keys, &cc_relay(31), &create, at(0), &mut rng);
        assert!(matches!(r, Err(RelayError::BadExtensions(_))), "{msg:?}");
    }
    // Unknown extensions beside the request are ignored (proposal 332).
    let (_, skin) = NtorV3Client::start(
        &mut rng,
        &keys.ed_id,
        &target.ntor_key,
        &[2, 9, 2, 0xaa, 0xbb, 1, 0],
        CIRCUIT_EXTEND_VERIFICATION,
    );
    let create = ChanMsg::Create2(Create2 {
        handshake_type: HandshakeType::NTOR_V3,
        hdata: skin.into(),
    });
    let (r, _) = RelayCircuit::accept_with(&keys, &cc_relay(31), &create, at(0), &mut rng).unwrap();
    assert!(r.congestion_control().is_some());
}

#[test]
fn a_sendme_every_sendme_inc_cells_received_and_no_stream_sendmes() {
    let (mut c, mut r, mut rng) = one_hop(true, &cc_relay(31));
    let (id, _) = dir_stream(&mut c, &mut r, &mut rng);
    // The client uploads 100 cells' worth in 101 cells (its window is 124; the first of
    // every 31 is cut 32 bytes short).
    let n = c.send(id, &vec![5u8; 100 * MAX_RELAY_DATA_LEN]).unwrap();
    assert_eq!(n, 100 * MAX_RELAY_DATA_LEN);
    pump(&mut c, &mut r, &mut rng, at(10));
    let st = r.stats();
    assert_eq!(st.data_cells_received, 101);
    assert_eq!(st.circ_sendmes_sent, 3, "after cells 31, 62 and 93");
    assert_eq!(
        st.stream_sendmes_sent, 0,
        "no stream SENDMEs under congestion control"
    );
    // The client took the three SENDMEs as acknowledgements of 93 cells.
    let cc = c.congestion_control(0).unwrap();
    assert_eq!(cc.inflight(), 101 - 93);
    assert_eq!(c.stats().circ_sendmes_received, 3);
}

#[test]
fn the_exit_sends_within_cwnd_and_sendmes_open_it() {
    let (mut c, mut r, mut rng) = one_hop(true, &cc_relay(31));
    let (_, es) = dir_stream(&mut c, &mut r, &mut rng);
    assert_eq!(r.send_capacity(es), 124 * MAX_RELAY_DATA_LEN);
    let body = vec![9u8; 400 * MAX_RELAY_DATA_LEN];
    let n = r.send_at(at(0), es, &body).unwrap();
    assert_eq!(
        n,
        124 * MAX_RELAY_DATA_LEN - 4 * crate::flow::SENDME_UNPREDICTABLE_GAP
    );
    assert_eq!(r.send_capacity(es), 0);
    assert_eq!(r.send(es, b"more").unwrap(), 0);
    assert_eq!(r.congestion_control().unwrap().inflight(), 124);
    // The cells reach the client 40 ms later; its 4 SENDMEs (after 31, 62, 93, 124) come
    // back at once: four RTT samples of 40 ms; slow start grows the window by 31 for each
    // of the first three, while the window is full, but not at the fourth (31 cells in
    // flight is under cc_cwnd_full_minpct, 25 %, of 217).
    pump(&mut c, &mut r, &mut rng, at(40));
    let cc = r.congestion_control().unwrap();
    assert_eq!(cc.inflight(), 0);
    assert_eq!(cc.rtt().ewma_usec, 40_000);
    assert_eq!(cc.cwnd(), 124 + 3 * 31);
    assert_eq!(r.stats().circ_sendmes_received, 4);
    assert_eq!(c.stats().stream_sendmes_sent, 0);
    let got: usize = client_events(&mut c)
        .iter()
        .map(|e| match e {
            CircEvent::Stream(StreamEvent::Data { data, .. }) => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(got, n);
}

#[test]
fn a_stream_sendme_or_an_unexpected_circuit_sendme_closes() {
    let (mut c, mut r, mut rng) = one_hop(true, &cc_relay(31));
    let (_, es) = dir_stream(&mut c, &mut r, &mut rng);
    let m = RelayMsg::Sendme(Sendme { tag: None });
    let cell = RelayCell::new(Some(es), m);
    assert!(matches!(
        r.handle_recognized(cell, false),
        Err(RelayError::Stream(_))
    ));
    // A circuit SENDME with nothing in flight.
    let (_, mut r2, _) = one_hop(true, &cc_relay(31));
    let cell = RelayCell::new(None, RelayMsg::Sendme(Sendme { tag: Some([0; 20]) }));
    assert!(matches!(
        r2.handle_recognized(cell, false),
        Err(RelayError::Flow(FlowError::UnexpectedSendme(_)))
    ));
    let _ = (&mut c, &mut rng);
}

#[test]
fn xoff_when_the_destination_is_slow_then_xon_with_its_rate() {
    let (mut c, mut r, mut rng) = one_hop(true, &cc_relay(31));
    let (id, es) = dir_stream(&mut c, &mut r, &mut rng);
    // The exit's connection to the destination holds 400 cells: nothing yet.
    let cell = MAX_RELAY_DATA_LEN;
    r.note_stream_buffer(at(0), es, 0, 400 * cell).unwrap();
    pump(&mut c, &mut r, &mut rng, at(0));
    assert_eq!(r.stats().xoff_sent, 0);
    // Past cc_xoff_exit (500 cells) for more than the 5 ms grace period: one XOFF, and the
    // client stops.
    r.note_stream_buffer(at(1), es, 0, 501 * cell).unwrap();
    pump(&mut c, &mut r, &mut rng, at(1));
    assert_eq!(r.stats().xoff_sent, 0, "within the grace period");
    r.note_stream_buffer(at(7), es, 0, 520 * cell).unwrap();
    pump(&mut c, &mut r, &mut rng, at(7));
    assert_eq!((r.stats().xoff_sent, c.stats().xoff_received), (1, 1));
    assert_eq!(c.send_capacity(id), 0);
    assert_eq!(c.send(id, b"wait").unwrap(), 0);
    // The destination drains 10 cells per ms: after 501 cells (the first rate sample) and
    // then to empty, XON with the measured rate.
    let mut buffered = 520 * cell;
    let mut t = 7;
    while buffered > 0 {
        t += 1;
        let w = buffered.min(10 * cell);
        buffered -= w;
        r.note_stream_buffer(at(t), es, w, buffered).unwrap();
    }
    pump(&mut c, &mut r, &mut rng, at(t));
    assert_eq!((r.stats().xon_sent, c.stats().xon_received), (1, 1));
    // 510 cells over the 58 ms since buffering began (t = 0) = 4378 kB/s.
    let rate = 4378u64;
    assert_eq!(r.stats().xoff_received, 0);
    // The client paces the stream: at most one second's worth at once, then by time.
    let burst = (rate * 1000) as usize;
    assert_eq!(c.send_capacity(id), (124 * cell).min(burst));
    assert_eq!(
        r.stats().stream_sendmes_sent + c.stats().stream_sendmes_sent,
        0
    );
}

#[test]
fn an_xon_rate_paces_the_exit() {
    let (mut c, mut r, mut rng) = one_hop(true, &cc_relay(31));
    let (id, es) = dir_stream(&mut c, &mut r, &mut rng);
    // The client's application has 600 cells waiting (XOFF) and reads one cell every
    // 50 ms: the first rate sample, 501 cells over 25.05 s, is 9 kB/s, and the XON that
    // ends the XOFF when the buffer is empty advises it.
    let cell = MAX_RELAY_DATA_LEN;
    // (XOFF at the first report more than the 5 ms grace period after the first one over.)
    c.note_stream_buffer(at(0), id, 0, 600 * cell);
    c.note_stream_buffer(at(6), id, 0, 600 * cell);
    pump(&mut c, &mut r, &mut rng, at(6));
    assert_eq!(r.stats().xoff_received, 1);
    assert_eq!(r.send_capacity(es), 0);
    let mut t = 6;
    for left in (0..600).rev() {
        t += 50;
        c.note_stream_buffer(at(t), id, cell, left * cell);
    }
    pump(&mut c, &mut r, &mut rng, at(t));
    assert_eq!((c.stats().xon_sent, r.stats().xon_received), (1, 1));
    // 9000 bytes of burst: 18 full cells (the first cut 32 bytes short), then the exit
    // waits for tokens, which come at 9 bytes per ms.
    assert_eq!(r.send_capacity(es), 9000);
    let n = r.send_at(at(t), es, &vec![1u8; 20_000]).unwrap();
    assert_eq!(n, 18 * cell - crate::flow::SENDME_UNPREDICTABLE_GAP);
    let wake = r.poll_timeout().expect("the exit waits for tokens");
    assert!(wake > at(t) && wake <= at(t + 56), "{wake:?}");
    r.handle_timeout(wake);
    assert_eq!(r.send_at(wake, es, &[1u8; 498]).unwrap(), 498);
}

#[test]
fn xon_xoff_without_congestion_control_are_dropped() {
    let (mut c, mut r, mut rng) = one_hop(true, &RelayConfig::default());
    let (_, es) = dir_stream(&mut c, &mut r, &mut rng);
    let cell = RelayCell::new(Some(es), RelayMsg::Xoff);
    assert!(r.handle_recognized(cell, false).is_ok());
    assert!(r.poll_event().is_none());
    assert_eq!(r.stats().xoff_received, 0);
    assert_eq!(r.send_capacity(es), 500 * MAX_RELAY_DATA_LEN);
    // And the exit's buffer report is a no-op: stream windows push back instead.
    r.note_stream_buffer(at(0), es, 0, 10_000 * MAX_RELAY_DATA_LEN)
        .unwrap();
    assert_eq!(r.stats().xoff_sent, 0);
    let _ = (&mut c, &mut rng);
}

/// A relay that negotiated congestion control and is then extended is a middle hop: it
/// forwards both ways and counts nothing (the exit beyond runs its own).
#[test]
fn once_extended_it_only_forwards() {
    let (mut c, mut r, mut rng) = one_hop(true, &cc_relay(31));
    assert!(r.congestion_control().is_some());
    let mut rng2 = ChaCha20Rng::seed_from_u64(5);
    let (_, mut next) = relay(&mut rng2);
    next.rsa_id = RsaIdentity([8; 20]);
    next.ed_id = Some(Ed25519Identity([8; 32]));
    c.extend(&next, at(0), &mut rng).unwrap();
    let evs = pump(&mut c, &mut r, &mut rng, at(0));
    assert!(matches!(evs.as_slice(), [RelayEvent::Extend(_)]), "{evs:?}");
    r.try_from_next(
        at(1),
        ChanMsg::Created2(Created2 {
            hdata: vec![0; 64].into(),
        }),
    )
    .unwrap();
    // The EXTENDED2 goes back (its handshake is junk: the client closes; irrelevant here).
    assert!(matches!(
        r.poll_cell(&mut rng),
        Some(RelayOutput::ToClient(_))
    ));
    // 500 cells each way that are not for this hop pass through.
    for i in 0..500u32 {
        let mut body = Box::new([0u8; 509]);
        body[..4].copy_from_slice(&i.to_be_bytes());
        body[4] = 0xff;
        r.try_from_client(
            at(2),
            ChanMsg::Relay(onion_cell::chancell::RelayPayload::Owned(body.clone())),
        )
        .unwrap();
        r.try_from_next(
            at(2),
            ChanMsg::Relay(onion_cell::chancell::RelayPayload::Owned(body)),
        )
        .unwrap();
    }
    let (mut fwd, mut back) = (0, 0);
    while let Some(out) = r.poll_cell(&mut rng) {
        match out {
            RelayOutput::ToNext(_) => fwd += 1,
            RelayOutput::ToClient(_) => back += 1,
        }
    }
    assert_eq!((fwd, back), (500, 500));
    let st = r.stats();
    assert_eq!((st.data_cells_received, st.circ_sendmes_sent), (0, 0));
    assert_eq!(r.congestion_control().unwrap().inflight(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Whatever the timing of the client's SENDMEs (delivered after random delays, in
    /// random batches), the exit never has more than cwnd cells in flight after sending,
    /// and cwnd stays within [cwnd_min, cwnd_max] once slow start has set it.
    #[test]
    fn exit_inflight_within_cwnd_whatever_the_timing(
        steps in proptest::collection::vec((0u64..300, any::<bool>(), 1usize..200), 1..60),
    ) {
        let (mut c, mut r, mut rng) = one_hop(true, &cc_relay(31));
        let (_, es) = dir_stream(&mut c, &mut r, &mut rng);
        let cfg = *r.congestion_control().unwrap().config();
        let chunk = vec![3u8; 200 * MAX_RELAY_DATA_LEN];
        let mut now = 0u64;
        let mut to_client: VecDeque<ChanMsg<'static>> = VecDeque::new();
        for (dt, deliver, cells) in steps {
            now += dt;
            let _ = r.send_at(at(now), es, &chunk[..cells * MAX_RELAY_DATA_LEN]);
            let cc = r.congestion_control().unwrap();
            prop_assert!(cc.inflight() <= cc.cwnd());
            while let Some(RelayOutput::ToClient(m)) = r.poll_cell(&mut rng) {
                to_client.push_back(m);
            }
            if deliver {
                while let Some(m) = to_client.pop_front() {
                    c.try_cell(at(now), m).unwrap();
                }
                while c.poll_event().is_some() {}
                while let Some(m) = c.poll_cell(&mut rng) {
                    r.try_from_client(at(now), m).unwrap();
                }
            }
            let cc = r.congestion_control().unwrap();
            prop_assert!(cc.cwnd() <= u64::from(cfg.cwnd_max));
            prop_assert!(cc.cwnd() >= u64::from(cfg.cwnd_min).min(u64::from(cfg.cwnd_init)));
            prop_assert!(!r.is_closed());
        }
    }
}

/// XOFF/XON that do not apply (no congestion control on the circuit, or stream 0) are
/// dropped by the client, as C tor's client drops them: the circuit and the stream go on,
/// and the stream's window is untouched.
#[test]
fn the_client_drops_xon_xoff_that_do_not_apply() {
    let (mut c, mut r, mut rng) = one_hop(false, &RelayConfig::default());
    assert!(c.congestion_control(0).is_none());
    let (id, es) = dir_stream(&mut c, &mut r, &mut rng);
    let before = c.send_capacity(id);
    r.send_msg(Some(es), &RelayMsg::Xoff).unwrap();
    r.send_msg(None, &RelayMsg::Xoff).unwrap();
    r.send_msg(Some(es), &RelayMsg::Xon(Xon { kbps_ewma: 1 }))
        .unwrap();
    pump(&mut c, &mut r, &mut rng, at(1));
    assert!(!c.is_closed());
    assert_eq!(c.stats().xoff_received + c.stats().xon_received, 0);
    assert_eq!(c.send_capacity(id), before);
    assert_eq!(c.send(id, b"still open").unwrap(), 10);
}

/// A caller's mistake (ending a stream that does not exist) is `Misuse`, whose DESTROY
/// reason would be INTERNAL, and leaves the circuit as it was; the client's violation
/// (DATA on stream 0) closes the circuit with DESTROY PROTOCOL (tor-spec §5.4).
#[test]
fn a_local_no_such_stream_is_misuse_and_a_peer_violation_destroys_with_protocol() {
    let (mut c, mut r, mut rng) = one_hop(false, &RelayConfig::default());
    let (id, es) = dir_stream(&mut c, &mut r, &mut rng);
    let gone = StreamId::new(es.get().wrapping_add(100)).expect("nonzero");
    let err = r.end_stream(gone, EndReason::DONE).unwrap_err();
    assert_eq!(err, RelayError::NoSuchStream(gone));
    assert_eq!(err.kind(), crate::ErrorKind::Misuse);
    assert_eq!(err.destroy_reason(), DestroyReason::INTERNAL);
    assert_eq!(r.send(es, b"still open").unwrap(), 10);
    pump(&mut c, &mut r, &mut rng, at(0));
    assert!(client_events(&mut c).iter().any(
        |e| matches!(e, CircEvent::Stream(StreamEvent::Data { stream, .. }) if *stream == id)
    ));
    // DATA on stream 0 from the client: a violation, DESTROY PROTOCOL toward it.
    let mut body = crate::circuit::encode_body(None, &RelayMsg::Drop, "test").unwrap();
    body[onion_cell::relay::CMD_OFFSET] = RelayCmd::DATA.0;
    c.send_raw(0, body, false).unwrap();
    let m = c.poll_cell(&mut rng).expect("the cell");
    let err = r.try_from_client(at(0), m).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::PeerProtocol);
    assert!(matches!(
        r.poll_cell(&mut rng),
        Some(RelayOutput::ToClient(ChanMsg::Destroy(
            DestroyReason::PROTOCOL
        )))
    ));
}

/// A bound reached at this relay (the queue of a joined circuit, rend-spec-v3 §4.2, that the
/// embedding does not drain) is a local resource limit, not the client's violation: the
/// circuit closes with DESTROY RESOURCELIMIT toward the client, DESTROYED toward nobody
/// else, and the error arrives once, as the Closed event (tor-spec §5.4).
#[test]
fn a_full_joined_circuit_queue_destroys_with_resourcelimit() {
    let (_c, mut r, mut rng) = one_hop(false, &RelayConfig::default());
    r.splice().unwrap();
    // Cells this hop does not recognise: for the joined circuit.
    let cell = || {
        ChanMsg::Relay(onion_cell::chancell::RelayPayload::Owned(Box::new(
            [0x5a; 509],
        )))
    };
    for _ in 0..MAX_SPLICE_QUEUE {
        r.handle_from_client(at(0), cell());
    }
    assert!(!r.is_closed());
    r.handle_from_client(at(0), cell());
    assert!(r.is_closed());
    assert_eq!(
        r.poll_cell(&mut rng),
        Some(RelayOutput::ToClient(ChanMsg::Destroy(
            DestroyReason::RESOURCELIMIT
        )))
    );
    assert_eq!(r.poll_cell(&mut rng), None);
    let closed: Vec<RelayEvent> = std::iter::from_fn(|| r.poll_event()).collect();
    assert_eq!(
        closed,
        vec![RelayEvent::Closed {
            error: Some(RelayError::QueueFull("joined circuit queue"))
        }]
    );
    // Later cells are ignored: no second report.
    r.handle_from_client(at(0), cell());
    assert_eq!(r.poll_event(), None);
}
