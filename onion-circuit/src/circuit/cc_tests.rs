//! Congestion control on a client circuit (proposal 324): negotiation in the ntor-v3
//! handshake (§4.1, proposal 332), SENDMEs every `sendme_inc` cells, no stream windows, the
//! congestion window as the package window, RTT from SENDME timing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use onion_cell::relaymsg::RelayCmd;
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::inbound_tests::{events, from_relay};
use super::*;
use crate::flow::SENDME_UNPREDICTABLE_GAP;
use crate::relay::{RelayCircuit, RelayEvent, RelayKeys, RelayOutput};
use crate::stream::StreamEvent;

fn relay(rng: &mut ChaCha20Rng) -> (RelayKeys, HopTarget) {
    let ntor = NtorSecretKey::generate(rng);
    let keys = RelayKeys {
        rsa_id: RsaIdentity([9; 20]),
        ed_id: Ed25519Identity([9; 32]),
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

fn cc_config() -> CircConfig {
    CircConfig {
        congestion_control: Some(Box::default()),
        ..CircConfig::default()
    }
}

/// A one-hop circuit whose hop answers the ntor-v3 handshake with `server_msg`; `request`
/// says whether the client asks for congestion control. Returns the client's result of
/// handling the CREATED2, the CREATE2 handshake length, and the parts.
fn negotiate(
    request: bool,
    server_msg: &[u8],
) -> (
    Result<(), CircError>,
    usize,
    Circuit,
    RelayCircuit,
    ChaCha20Rng,
) {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (keys, target) = relay(&mut rng);
    let (mut c, create) = if request {
        Circuit::create_requesting_cc(cc_config(), &target, Instant::ZERO, &mut rng).unwrap()
    } else {
        Circuit::create(
            cc_config(),
            &target,
            HandshakeKind::NtorV3,
            Instant::ZERO,
            &mut rng,
        )
        .unwrap()
    };
    let ChanMsg::Create2(c2) = &create else {
        panic!("not CREATE2")
    };
    let hlen = c2.hdata.len();
    let (r, reply) =
        RelayCircuit::accept_with_server_msg(&keys, &create, Instant::ZERO, &mut rng, server_msg)
            .unwrap();
    let res = c.try_cell(Instant::ZERO, reply);
    while c.poll_event().is_some() {}
    (res, hlen, c, r, rng)
}

#[test]
fn request_is_an_empty_type_1_extension_and_a_valid_answer_turns_cc_on() {
    // ntor-v3 CREATE2 is 128 bytes plus the encrypted message: [0] without a request,
    // [1, 1, 0] (one extension, type 1, length 0) with one.
    let (res, plain_len, c, _, _) = negotiate(false, &[0]);
    res.unwrap();
    assert_eq!(plain_len, 129);
    assert!(c.congestion_control(0).is_none());
    for inc in [30u8, 31, 32] {
        let (res, len, c, _, _) = negotiate(true, &[1, 2, 1, inc]);
        res.unwrap();
        assert_eq!(len, 131);
        let cc = c.congestion_control(0).expect("negotiated");
        assert_eq!(cc.config().sendme_inc, inc);
        assert_eq!((cc.cwnd(), cc.inflight()), (124, 0));
        assert!(cc.in_slow_start());
    }
    // An unknown extension before the answer is skipped.
    let (res, _, c, _, _) = negotiate(true, &[2, 9, 2, 0xaa, 0xbb, 2, 1, 31]);
    res.unwrap();
    assert_eq!(c.congestion_control(0).unwrap().config().sendme_inc, 31);
}

#[test]
fn a_relay_that_declines_leaves_fixed_windows() {
    for msg in [&[][..], &[0][..], &[1, 7, 0][..]] {
        let (res, _, c, _, _) = negotiate(true, msg);
        res.unwrap();
        assert!(c.congestion_control(0).is_none(), "{msg:?}");
    }
}

#[test]
fn bad_answers_close_the_circuit() {
    let cases: [(bool, &[u8], CcError); 5] = [
        (
            true,
            &[1, 2, 1, 33],
            CcError::SendmeIncOutOfRange {
                got: 33,
                consensus: 31,
            },
        ),
        (
            true,
            &[1, 2, 1, 29],
            CcError::SendmeIncOutOfRange {
                got: 29,
                consensus: 31,
            },
        ),
        (
            true,
            &[1, 2, 1, 0],
            CcError::SendmeIncOutOfRange {
                got: 0,
                consensus: 31,
            },
        ),
        (false, &[1, 2, 1, 31], CcError::UnrequestedResponse),
        (true, &[1, 2, 0], CcError::UnexpectedSendme),
    ];
    for (request, msg, want) in cases {
        let (res, _, c, _, _) = negotiate(request, msg);
        match res {
            Err(CircError::CongestionControl { hop: 0, err }) => {
                // The truncated answer is a decoding error (its details are onion-cell's).
                if want == CcError::UnexpectedSendme {
                    assert!(matches!(err, CcError::BadExtensions(_)), "{err:?}");
                } else {
                    assert_eq!(err, want, "{msg:?}");
                }
            }
            other => panic!("{msg:?}: {other:?}"),
        }
        assert!(c.check_open().is_err());
    }
}

/// Deliver the client's cells to the relay (or drop them), the relay's to the client.
fn pump(
    c: &mut Circuit,
    r: &mut RelayCircuit,
    rng: &mut ChaCha20Rng,
    deliver: bool,
) -> Vec<RelayEvent> {
    while let Some(m) = c.poll_cell(rng) {
        if deliver {
            r.try_from_client(Instant::ZERO, m).expect("relay input");
        }
    }
    while let Some(out) = r.poll_cell(rng) {
        if let RelayOutput::ToClient(m) = out {
            c.try_cell(c.last_now, m).expect("client input");
        }
    }
    std::iter::from_fn(|| r.poll_event()).collect()
}

fn open_dir_stream(
    c: &mut Circuit,
    r: &mut RelayCircuit,
    rng: &mut ChaCha20Rng,
) -> (StreamId, StreamId) {
    let id = c.begin_dir(Instant::ZERO).unwrap();
    let es = pump(c, r, rng, true)
        .iter()
        .find_map(|e| match e {
            RelayEvent::BeginDir { stream } => Some(*stream),
            _ => None,
        })
        .expect("BEGIN_DIR");
    r.connected(es, None).unwrap();
    pump(c, r, rng, true);
    events(c);
    (id, es)
}

#[test]
fn receiving_sends_a_circuit_sendme_every_sendme_inc_cells_and_no_stream_sendme() {
    let (res, _, mut c, mut r, mut rng) = negotiate(true, &[1, 2, 1, 31]);
    res.unwrap();
    let (_, es) = open_dir_stream(&mut c, &mut r, &mut rng);
    // 100 cells' worth from the hop (within its congestion window, 124); the client's
    // answers are not delivered.
    let sent = r.send(es, &vec![7u8; 100 * MAX_RELAY_DATA_LEN]).unwrap();
    assert_eq!(sent, 100 * MAX_RELAY_DATA_LEN);
    pump(&mut c, &mut r, &mut rng, false);
    let data = events(&mut c)
        .iter()
        .filter(|e| matches!(e, CircEvent::Stream(StreamEvent::Data { .. })))
        .count();
    // 101 cells: the hop cuts the first of every 31 cells 32 bytes short.
    assert_eq!(data, 101);
    pump(&mut c, &mut r, &mut rng, false);
    let st = c.stats();
    assert_eq!(st.circ_sendmes_sent, 3, "after cells 31, 62, 93");
    assert_eq!(
        st.stream_sendmes_sent, 0,
        "no stream SENDMEs under congestion control"
    );
}

#[test]
fn fixed_windows_still_send_stream_sendmes() {
    let (res, _, mut c, mut r, mut rng) = negotiate(true, &[0]);
    res.unwrap();
    let (_, es) = open_dir_stream(&mut c, &mut r, &mut rng);
    r.send(es, &vec![7u8; 100 * MAX_RELAY_DATA_LEN]).unwrap();
    pump(&mut c, &mut r, &mut rng, false);
    events(&mut c);
    let st = c.stats();
    // 101 cells: one circuit SENDME (at 100); the stream window went 500 -> 399, and
    // SENDMEs are sent while it is <= 450: 399 -> 449 -> 499.
    assert_eq!((st.circ_sendmes_sent, st.stream_sendmes_sent), (1, 2));
}

#[test]
fn sending_is_limited_by_cwnd_and_a_sendme_takes_an_rtt_sample() {
    let (res, _, mut c, mut r, mut rng) = negotiate(true, &[1, 2, 1, 31]);
    res.unwrap();
    let (id, _) = open_dir_stream(&mut c, &mut r, &mut rng);
    // cwnd 124, no stream window: 124 cells, the first of each 31 cut 32 bytes short.
    assert_eq!(c.send_capacity(id), 124 * MAX_RELAY_DATA_LEN);
    let n = c.send(id, &vec![1u8; 300 * MAX_RELAY_DATA_LEN]).unwrap();
    assert_eq!(n, 124 * MAX_RELAY_DATA_LEN - 4 * SENDME_UNPREDICTABLE_GAP);
    assert_eq!(c.send_capacity(id), 0);
    assert_eq!(c.send(id, b"more").unwrap(), 0);
    // Encrypt and send them (not delivered): the SENDME-eliciting cells' digests are kept.
    while c.poll_cell(&mut rng).is_some() {}
    let expected = c.hops[0].send.expected_digests().unwrap().clone();
    assert_eq!(expected.len(), 4);
    assert_eq!(c.congestion_control(0).unwrap().inflight(), 124);

    // A SENDME with a wrong digest closes the circuit, as with fixed windows.
    let mut bad = c.hops[0].send.expected_digests().unwrap()[0];
    bad[0] ^= 1;
    let mut body = vec![1u8, 0, 20];
    body.extend_from_slice(&bad);

    // The right digest, 50 ms after the cells were queued: one RTT sample of 50 ms,
    // slow start adds 31 (the window was full), 31 cells acknowledged.
    c.try_timeout(Instant::ZERO + Duration::from_millis(50))
        .unwrap();
    let mut good = vec![1u8, 0, 20];
    good.extend_from_slice(&expected[0]);
    from_relay(&mut c, &mut r, &mut rng, 0, RelayCmd::SENDME, &good);
    let cc = c.congestion_control(0).expect("still open");
    assert_eq!(cc.rtt().ewma_usec, 50_000);
    assert_eq!((cc.cwnd(), cc.inflight()), (155, 93));
    assert_eq!(c.send_capacity(id), 62 * MAX_RELAY_DATA_LEN);

    from_relay(&mut c, &mut r, &mut rng, 0, RelayCmd::SENDME, &body);
    assert!(c.check_open().is_err(), "digest mismatch closes");
}

#[test]
fn a_stream_sendme_on_a_cc_circuit_closes_it() {
    let (res, _, mut c, mut r, mut rng) = negotiate(true, &[1, 2, 1, 31]);
    res.unwrap();
    let (id, _) = open_dir_stream(&mut c, &mut r, &mut rng);
    from_relay(&mut c, &mut r, &mut rng, id.get(), RelayCmd::SENDME, &[]);
    assert!(c.check_open().is_err());
}

/// The relay messages the client sent, as the hop sees them.
fn client_msgs(
    c: &mut Circuit,
    r: &mut RelayCircuit,
    rng: &mut ChaCha20Rng,
) -> Vec<RelayMsg<'static>> {
    pump(c, r, rng, true)
        .into_iter()
        .filter_map(|e| match e {
            RelayEvent::Msg { msg, .. } => Some(*msg),
            _ => None,
        })
        .collect()
}

#[test]
fn xoff_from_the_exit_stops_the_stream_until_xon() {
    let (res, _, mut c, mut r, mut rng) = negotiate(true, &[1, 2, 1, 31]);
    res.unwrap();
    let (id, _) = open_dir_stream(&mut c, &mut r, &mut rng);
    from_relay(&mut c, &mut r, &mut rng, id.get(), RelayCmd::XOFF, &[0]);
    assert!(c.check_open().is_ok());
    assert_eq!(c.send_capacity(id), 0);
    assert_eq!(c.send(id, b"held back").unwrap(), 0);
    // An advisory rate of 100 kB/s allows a burst of 100,000 bytes: the congestion window
    // (124 cells) is the smaller limit here.
    from_relay(
        &mut c,
        &mut r,
        &mut rng,
        id.get(),
        RelayCmd::XON,
        &[0, 0, 0, 0, 100],
    );
    assert_eq!(c.send_capacity(id), 124 * MAX_RELAY_DATA_LEN);
    assert_eq!(c.send(id, b"go").unwrap(), 2);
    // An XON advising 10 kB/s paces the stream (proposal 324 §4.1.1, as C tor's token
    // bucket): 10,000 bytes at once, then the circuit's timer says when more may go.
    from_relay(
        &mut c,
        &mut r,
        &mut rng,
        id.get(),
        RelayCmd::XON,
        &[0, 0, 0, 0, 10],
    );
    assert_eq!(c.send_capacity(id), 10_000);
    let n = c.send(id, &[7u8; 20_000]).unwrap();
    assert_eq!(n, 20 * MAX_RELAY_DATA_LEN, "20 full cells; the 21st waits");
    let wake = c.poll_timeout().expect("a paced stream waits for its rate");
    assert!(
        wake <= Instant::ZERO + Duration::from_millis(60),
        "{wake:?}"
    );
    c.try_timeout(wake).unwrap();
    assert!(c.send(id, &[7u8; 498]).unwrap() > 0);
    // XON with rate 0 lifts the limit.
    from_relay(
        &mut c,
        &mut r,
        &mut rng,
        id.get(),
        RelayCmd::XON,
        &[0, 0, 0, 0, 0],
    );
    assert!(c.send_capacity(id) > 10_000);
    // An unknown XOFF version is malformed: the circuit closes.
    from_relay(&mut c, &mut r, &mut rng, id.get(), RelayCmd::XOFF, &[1]);
    assert!(c.check_open().is_err());
}

/// XOFF on a stream without congestion control is dropped, as C tor's client drops it
/// (proposal 324 §4.1.1 gives it meaning only on congestion-controlled circuits): the
/// circuit stays open and the stream still sends.
#[test]
fn xon_xoff_on_a_fixed_window_stream_is_dropped() {
    let (res, _, mut c, mut r, mut rng) = negotiate(true, &[0]);
    res.unwrap();
    let (id, _) = open_dir_stream(&mut c, &mut r, &mut rng);
    from_relay(&mut c, &mut r, &mut rng, id.get(), RelayCmd::XOFF, &[0]);
    assert!(c.check_open().is_ok());
    assert!(c.send(id, &[1u8; 10]).unwrap() > 0);
}

#[test]
fn holding_a_cc_stream_sends_one_xoff_and_releasing_it_one_xon() {
    let (res, _, mut c, mut r, mut rng) = negotiate(true, &[1, 2, 1, 31]);
    res.unwrap();
    let (id, es) = open_dir_stream(&mut c, &mut r, &mut rng);
    c.hold_stream(id, true);
    c.hold_stream(id, true);
    // The exit (running congestion control) takes XON/XOFF itself: no event.
    assert_eq!(client_msgs(&mut c, &mut r, &mut rng), vec![]);
    assert_eq!((c.stats().xoff_sent, r.stats().xoff_received), (1, 1));
    assert_eq!(r.send_capacity(es), 0, "the exit stopped the stream");
    c.hold_stream(id, false);
    c.hold_stream(id, false);
    client_msgs(&mut c, &mut r, &mut rng);
    assert_eq!((c.stats().xon_sent, r.stats().xon_received), (1, 1));
    assert_eq!(r.send_capacity(es), 124 * MAX_RELAY_DATA_LEN);
    assert_eq!(c.stats().stream_sendmes_sent, 0);
}
