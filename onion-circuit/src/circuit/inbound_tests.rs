//! Tests of the onion-service additions: a hop's `KH` and inbound RELAY_BEGIN.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use onion_cell::chancell::{ChanMsg, Created2};
use onion_cell::relaymsg::{EndReason, RelayCmd, RelayMsg};
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::relay::{RelayCircuit, RelayKeys, RelayOutput};

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
        ntor_v3: false,
    };
    (keys, target)
}

#[test]
fn ntor_kh_is_the_digest_after_the_tor1_keys() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (keys, target) = relay(&mut rng);
    let (mut c, create) = Circuit::create(
        CircConfig::default(),
        &target,
        HandshakeKind::Ntor,
        Instant::ZERO,
        &mut rng,
    )
    .unwrap();
    assert_eq!(c.hop_kh(0), None);
    let ChanMsg::Create2(c2) = create else {
        panic!("not CREATE2")
    };
    let (reply, gen) =
        onion_crypto::ntor::server(&mut rng, &keys.rsa_id, &keys.ntor_keys, &c2.hdata).unwrap();
    c.try_cell(
        Instant::ZERO,
        ChanMsg::Created2(Created2 {
            hdata: reply.to_vec().into(),
        }),
    )
    .unwrap();
    let k = gen.expand(tor1::TOR1_KEY_LEN + KH_LEN).unwrap();
    assert_eq!(c.hop_kh(0).unwrap()[..], k[tor1::TOR1_KEY_LEN..]);
    assert_eq!(c.hop_kh(1), None);
}

#[test]
fn create_fast_kh_is_the_reply_kh() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (_, target) = relay(&mut rng);
    let (mut c, create) = Circuit::create(
        CircConfig::default(),
        &target,
        HandshakeKind::CreateFast,
        Instant::ZERO,
        &mut rng,
    )
    .unwrap();
    let ChanMsg::CreateFast(x) = create else {
        panic!("not CREATE_FAST")
    };
    let (reply, _) = onion_crypto::fast::server(&mut rng, &x).unwrap();
    let mut y = [0u8; 20];
    y.copy_from_slice(&reply[..20]);
    let mut kh = [0u8; 20];
    kh.copy_from_slice(&reply[20..]);
    c.try_cell(Instant::ZERO, ChanMsg::CreatedFast { y, kh })
        .unwrap();
    assert_eq!(c.hop_kh(0), Some(&kh));
}

/// A one-hop circuit (as the service's circuit to the rendezvous point) and the relay.
pub(super) fn one_hop(accept: bool) -> (Circuit, RelayCircuit, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (keys, target) = relay(&mut rng);
    let config = CircConfig {
        accept_inbound_streams: accept,
        ..CircConfig::default()
    };
    let (mut c, create) = Circuit::create(
        config,
        &target,
        HandshakeKind::Ntor,
        Instant::ZERO,
        &mut rng,
    )
    .unwrap();
    let (r, reply) = RelayCircuit::accept(&keys, &create, Instant::ZERO, &mut rng).unwrap();
    c.try_cell(Instant::ZERO, reply).unwrap();
    while c.poll_event().is_some() {}
    (c, r, rng)
}

/// Send a raw relay message from the relay to the client circuit.
pub(super) fn from_relay(
    c: &mut Circuit,
    r: &mut RelayCircuit,
    rng: &mut ChaCha20Rng,
    stream: u16,
    cmd: RelayCmd,
    body: &[u8],
) {
    r.send_msg(
        StreamId::new(stream),
        &RelayMsg::Unknown {
            cmd,
            body: body.to_vec().into(),
        },
    )
    .unwrap();
    while let Some(out) = r.poll_cell(rng) {
        if let RelayOutput::ToClient(m) = out {
            c.handle_cell(Instant::ZERO, m);
        }
    }
}

pub(super) fn events(c: &mut Circuit) -> Vec<CircEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn begin_with_empty_host_is_an_incoming_stream() {
    let (mut c, mut r, mut rng) = one_hop(true);
    from_relay(&mut c, &mut r, &mut rng, 5, RelayCmd::BEGIN, b":80\0");
    let id = StreamId::new(5).unwrap();
    assert_eq!(
        events(&mut c),
        vec![CircEvent::IncomingStream {
            stream: id,
            host: String::new(),
            port: 80
        }]
    );
    // A second BEGIN with the same id is dropped; one with a host and flags is accepted.
    from_relay(&mut c, &mut r, &mut rng, 5, RelayCmd::BEGIN, b":81\0");
    from_relay(
        &mut c,
        &mut r,
        &mut rng,
        6,
        RelayCmd::BEGIN,
        b"x.onion:443\0\0\0\0\x01",
    );
    assert_eq!(
        events(&mut c),
        vec![CircEvent::IncomingStream {
            stream: StreamId::new(6).unwrap(),
            host: "x.onion".into(),
            port: 443
        }]
    );
    c.reject_stream(StreamId::new(6).unwrap(), EndReason::EXITPOLICY)
        .unwrap();
    assert_eq!(c.n_streams(), 1);
    assert!(c.accept_stream(StreamId::new(6).unwrap()).is_err());
    c.accept_stream(id).unwrap();
    // The relay recognises what the circuit sent: END for stream 6, then CONNECTED (which a
    // rendezvous point would forward, and a plain relay refuses).
    let end = c.poll_cell(&mut rng).unwrap();
    r.try_from_client(Instant::ZERO, end).unwrap();
    let connected = c.poll_cell(&mut rng).unwrap();
    assert_eq!(
        r.try_from_client(Instant::ZERO, connected).unwrap_err(),
        crate::relay::RelayError::UnexpectedMsg(RelayCmd::CONNECTED)
    );
    // The stream is open for data.
    assert_eq!(c.send(id, b"hello").unwrap(), 5);
    assert!(c.poll_cell(&mut rng).is_some());
}

#[test]
fn begin_is_dropped_without_the_flag() {
    let (mut c, mut r, mut rng) = one_hop(false);
    from_relay(&mut c, &mut r, &mut rng, 5, RelayCmd::BEGIN, b":80\0");
    assert!(events(&mut c).is_empty());
    assert!(!c.is_closed());
    assert_eq!(c.n_streams(), 0);
    // Turned on later (a service, once the client's virtual hop is there).
    c.set_accept_inbound_streams(true);
    from_relay(&mut c, &mut r, &mut rng, 5, RelayCmd::BEGIN, b":80\0");
    assert_eq!(events(&mut c).len(), 1);
}

#[test]
fn malformed_begin_closes_the_circuit() {
    for (stream, body) in [
        (5u16, &b"no-port\0"[..]),
        (5, b":0\0"),
        (5, b":99999\0"),
        (5, b"\xff:80\0"),
        (0, b":80\0"),
    ] {
        let (mut c, mut r, mut rng) = one_hop(true);
        from_relay(&mut c, &mut r, &mut rng, stream, RelayCmd::BEGIN, body);
        assert!(c.is_closed(), "{body:?} on stream {stream}");
    }
}

/// Past the per-circuit stream cap an inbound BEGIN is refused with END RESOURCELIMIT and no
/// event: an embedder must never open a connection for a stream the circuit does not track.
#[test]
fn begin_past_the_stream_cap_is_refused_without_an_event() {
    use crate::stream::MAX_STREAMS_PER_CIRCUIT;
    let (mut c, mut r, mut rng) = one_hop(true);
    let cap = MAX_STREAMS_PER_CIRCUIT as u16;
    for id in 1..=cap {
        from_relay(&mut c, &mut r, &mut rng, id, RelayCmd::BEGIN, b":80\0");
    }
    assert_eq!(events(&mut c).len(), MAX_STREAMS_PER_CIRCUIT);
    assert!(
        c.poll_cell(&mut rng).is_none(),
        "nothing sent for tracked streams"
    );
    from_relay(&mut c, &mut r, &mut rng, cap + 1, RelayCmd::BEGIN, b":80\0");
    assert!(events(&mut c).is_empty(), "no IncomingStream past the cap");
    assert_eq!(c.n_streams(), MAX_STREAMS_PER_CIRCUIT);
    assert!(!c.is_closed());
    let id = StreamId::new(cap + 1).unwrap();
    assert!(
        c.accept_stream(id).is_err(),
        "the refused stream is not tracked"
    );
    // Exactly one cell went out for it (the END), and the relay reads it as a valid cell.
    let end = c.poll_cell(&mut rng).expect("END RESOURCELIMIT");
    assert!(c.poll_cell(&mut rng).is_none());
    r.try_from_client(Instant::ZERO, end).unwrap();
    // Once a stream is gone, a new BEGIN is accepted again.
    c.reject_stream(StreamId::new(1).unwrap(), EndReason::DONE)
        .unwrap();
    from_relay(&mut c, &mut r, &mut rng, cap + 2, RelayCmd::BEGIN, b":80\0");
    assert_eq!(events(&mut c).len(), 1);
}
