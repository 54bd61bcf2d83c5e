//! Joining two circuits at their last hops (`RelayCircuit::splice`, as a rendezvous point
//! does, rend-spec-v3 §4.2), on circuits wired cell by cell ([`onion_sim::circuit::wired`]).

use onion_cell::chancell::{ChanMsg, RelayPayload};
use onion_cell::relaymsg::RelayMsg;
use onion_circuit::circuit::HandshakeKind;
use onion_circuit::relay::RelayOutput;
use onion_sim::circuit::wired::Wired;

/// Two 2-hop circuits, joined at their last hops: a cell the last hop of one does not
/// recognise comes out of the other toward its client; recognised cells stay local.
#[test]
fn kh_matches_client_and_splice_forwards() {
    let mut a = Wired::new(7, HandshakeKind::Ntor, true, 2).unwrap();
    a.build().unwrap();
    let mut b = Wired::new(8, HandshakeKind::Ntor, true, 2).unwrap();
    b.build().unwrap();
    assert_eq!(a.client.hop_kh(1), Some(a.hops[1].kh()));
    assert_eq!(a.client.hop_kh(0), Some(a.hops[0].kh()));
    // Not joined yet: refused.
    assert!(a.hops[1].splice_in(Box::new([0u8; 509])).is_err());
    // A circuit that continues cannot be joined.
    assert!(a.hops[0].splice().is_err());
    a.hops[1].splice().unwrap();
    b.hops[1].splice().unwrap();
    assert!(a.hops[1].is_spliced());
    // Recognised at the joining hop: handled there, not forwarded.
    a.client.send_msg(1, None, &RelayMsg::Drop).unwrap();
    a.run();
    assert!(a.hops[1].poll_spliced().is_none());
    // Unrecognised (random plaintext at hop 1): forwarded.
    a.forward(
        1,
        ChanMsg::Relay(RelayPayload::Owned(Box::new([0x5a; 509]))),
    );
    let body = a.hops[1].poll_spliced().expect("forwarded");
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    assert!(!a.hops[1].is_closed());
    b.hops[1].splice_in(body).unwrap();
    assert!(matches!(
        b.hops[1].poll_cell(&mut b.rng),
        Some(RelayOutput::ToClient(ChanMsg::Relay(_)))
    ));
    // Without joining, the same cell closes the circuit (tor-spec §5.5.2.2).
    let mut c = Wired::new(9, HandshakeKind::Ntor, true, 1).unwrap();
    c.forward(
        0,
        ChanMsg::Relay(RelayPayload::Owned(Box::new([0x5a; 509]))),
    );
    assert!(c.hops[0].is_closed());
}
