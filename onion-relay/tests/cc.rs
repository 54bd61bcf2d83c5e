//! Congestion control at our exit as a C tor client meets it (proposal 324 §4.1, proposal
//! 332): the bytes of the handshake, not our own client's interpretation of them.
//!
//! A C tor 0.4.9 client that picks an exit advertising `FlowCtrl=2` sends CREATE2 of type
//! ntor-v3 whose encrypted client message is the extension list `01 01 00` (one field,
//! `CC_FIELD_REQUEST` = 1, empty). It accepts the circuit only if the relay's encrypted
//! server message holds `CC_FIELD_RESPONSE` (2) with one byte, `sendme_inc`, within one of
//! its consensus `cc_sendme_inc` (C tor `congestion_control_parse_ext_response`); an empty
//! list (`00`) means the exit runs fixed windows. The relay here is driven through its
//! public API only, over a real channel, and the ntor-v3 client side is onion-crypto's.

mod support;

use onion_cell::chancell::{ChanMsg, Create2, HandshakeType};
use onion_circuit::cc::CcConfig;
use onion_circuit::channel::{ChanEvent, Channel};
use onion_crypto::ntor_v3::{NtorV3Client, CIRCUIT_EXTEND_VERIFICATION};
use onion_relay::{ConsensusParams, Relay};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use support::{open_channel, pump, relay};

/// A C tor client's ntor-v3 CREATE2 carrying `client_msg` on `chan`; returns the decrypted
/// server message of the relay's CREATED2.
fn ntor_v3_create(
    relay: &mut Relay,
    chan: &mut Channel,
    rng: &mut ChaCha20Rng,
    client_msg: &[u8],
) -> Vec<u8> {
    let ed = relay.keys().ed_identity();
    let onion_key = *relay.keys().ntor_key().public();
    let (pending, hdata) = NtorV3Client::start(
        rng,
        &ed,
        &onion_key,
        client_msg,
        CIRCUIT_EXTEND_VERIFICATION,
    );
    let id = chan.new_circ_id(rng).expect("circuit id");
    let create2 = Create2 {
        handshake_type: HandshakeType::NTOR_V3,
        hdata: hdata.into(),
    };
    chan.send(id, &ChanMsg::Create2(create2)).expect("CREATE2");
    let mut created = None;
    pump(relay, chan, |ev| {
        if let ChanEvent::CircuitCell {
            circ_id,
            msg: ChanMsg::Created2(c),
        } = ev
        {
            if circ_id == id {
                created = Some(c.hdata.into_owned());
            }
        }
    });
    let created = created.expect("CREATED2");
    pending
        .finish(&created)
        .expect("the ntor-v3 reply checks")
        .0
}

/// A relay configured with `cc` (None: as a relay that does not implement congestion
/// control) answers one ntor-v3 CREATE2 carrying `client_msg`; returns the decrypted server
/// message of its CREATED2 and the relay's circuit count.
fn server_message(cc: Option<CcConfig>, client_msg: &[u8]) -> (Vec<u8>, usize) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut relay = relay(&mut rng, |cfg| cfg.circuits.congestion_control = cc);
    let mut chan = open_channel(&mut relay);
    let msg = ntor_v3_create(&mut relay, &mut chan, &mut rng, client_msg);
    (msg, relay.n_circuits())
}

/// C tor's request gets C tor's response: one `CC_FIELD_RESPONSE` carrying the relay's
/// `sendme_inc` (the consensus `cc_sendme_inc`, 31 by default, or whatever the consensus
/// says), which a C tor client accepts (within one of its own consensus value).
#[test]
fn a_c_tor_client_request_gets_the_cc_response() {
    let (msg, n) = server_message(Some(CcConfig::default()), &[1, 1, 0]);
    assert_eq!(msg, [1, 2, 1, 31]);
    assert_eq!(n, 1);
    let cfg = CcConfig {
        sendme_inc: 32,
        ..CcConfig::default()
    };
    let (msg, _) = server_message(Some(cfg), &[1, 1, 0]);
    assert_eq!(msg, [1, 2, 1, 32]);
    // C tor's acceptance rule, applied to what we sent: within one of its consensus value.
    assert!(CcConfig::default().sendme_inc_acceptable(msg[3]));
}

/// A C tor client that does not ask (congestion control off in its consensus, `cc_alg=0`)
/// sends an empty extension list; so does an ntor-v3 request with unknown extensions only.
/// Either gets an empty list back: the circuit runs fixed windows. A relay configured
/// without congestion control answers a request with an empty list too, which C tor's
/// client takes as "fixed windows" and keeps the circuit.
#[test]
fn no_request_or_no_support_gets_an_empty_list() {
    for client_msg in [&[0u8][..], &[1, 9, 2, 0xaa, 0xbb][..]] {
        let (msg, n) = server_message(Some(CcConfig::default()), client_msg);
        assert_eq!(msg, [0], "{client_msg:?}");
        assert_eq!(n, 1);
    }
    let (msg, n) = server_message(None, &[1, 1, 0]);
    assert_eq!(msg, [0]);
    assert_eq!(n, 1);
}

/// A new consensus's values reach circuits made after it: the relay answers the same C tor
/// request with the `sendme_inc` of the consensus it was last given
/// ([`Relay::set_consensus_params`]), while the circuit made before keeps its own.
#[test]
fn a_new_consensus_sets_what_new_circuits_negotiate() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut relay = relay(&mut rng, |cfg| {
        cfg.circuits.congestion_control = Some(CcConfig::default())
    });
    let mut chan = open_channel(&mut relay);
    let now = onion_circuit::Instant::ZERO;
    let mut create =
        |relay: &mut Relay, chan: &mut Channel| ntor_v3_create(relay, chan, &mut rng, &[1, 1, 0]);
    assert_eq!(create(&mut relay, &mut chan), [1, 2, 1, 31]);
    // The network moves to cc_sendme_inc=33 and a smaller queue bound.
    let params = onion_dir::consensus::NetParams {
        entries: vec![("cc_sendme_inc", 33), ("circ_max_cell_queue_size", 10)],
    };
    let circuits = onion_circuit::relay::RelayConfig {
        congestion_control: Some(CcConfig {
            sendme_inc: 33,
            ..CcConfig::default()
        }),
        ..Default::default()
    };
    let p = ConsensusParams::new(circuits, &params);
    // Below param-spec's minimum: clamped to 1000.
    assert_eq!(p.circuit_queue_cells, 1000);
    relay.set_consensus_params(p, now);
    assert_eq!(create(&mut relay, &mut chan), [1, 2, 1, 33]);
    // Turned off (cc_alg=0): fixed windows for the next circuit.
    let off = onion_circuit::relay::RelayConfig {
        congestion_control: None,
        ..Default::default()
    };
    relay.set_consensus_params(ConsensusParams::new(off, &params), now);
    assert_eq!(create(&mut relay, &mut chan), [0]);
    assert_eq!(relay.n_circuits(), 3);
}
