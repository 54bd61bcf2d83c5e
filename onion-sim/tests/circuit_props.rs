//! Property tests: no sequence of peer cells makes a circuit machine panic, and honest
//! traffic of any shape arrives intact.

use onion_cell::chancell::{ChanMsg, DestroyReason, RelayPayload};
use onion_cell::relaymsg::BeginFlags;
use onion_circuit::circuit::{CircEvent, HandshakeKind};
use onion_circuit::relay::RelayEvent;
use onion_circuit::stream::StreamEvent;
use onion_sim::circuit::wired::Wired;
use proptest::prelude::*;

fn built() -> Wired {
    let mut w = Wired::new(11, HandshakeKind::Ntor, true, 3).expect("create");
    w.build().expect("build");
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bodies from any side, raw or encrypted for a hop, never panic.
    #[test]
    fn arbitrary_cells_never_panic(
        recs in proptest::collection::vec((0u8..6, 0usize..3, proptest::collection::vec(any::<u8>(), 0..509)), 1..12)
    ) {
        let mut w = built();
        for (mode, hop, bytes) in recs {
            let mut body = Box::new([0u8; 509]);
            body[..bytes.len()].copy_from_slice(&bytes);
            match mode {
                0 => w.forward(hop, ChanMsg::Relay(RelayPayload::Owned(body))),
                1 => w.forward(hop, ChanMsg::RelayEarly(RelayPayload::Owned(body))),
                2 => w.backward(hop, ChanMsg::Relay(RelayPayload::Owned(body))),
                3 => { let _ = w.client.send_raw(hop, body, false); }
                4 => w.backward(0, ChanMsg::Relay(RelayPayload::Owned(body))),
                _ => w.forward(hop, ChanMsg::Destroy(DestroyReason(bytes.first().copied().unwrap_or(0)))),
            }
            w.run();
        }
    }

    /// Recognised relay messages with arbitrary command and payload at the exit never panic,
    /// and the exit either handles them or closes the circuit with an error.
    #[test]
    fn arbitrary_relay_messages_at_the_exit(
        cmd in any::<u8>(), stream in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..498)
    ) {
        let mut w = built();
        let mut body = Box::new([0u8; 509]);
        body[0] = cmd;
        body[3..5].copy_from_slice(&stream.to_be_bytes());
        body[9..11].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        body[11..11 + payload.len()].copy_from_slice(&payload);
        w.client.send_raw(2, body, cmd == 14).expect("send_raw");
        w.run();
        // If the exit gave up on the circuit, the DESTROY reached the client.
        prop_assert!(!w.hops[2].is_closed() || w.client.is_closed());
    }

    /// Any sequence of write sizes arrives intact, in order, through three hops.
    #[test]
    fn writes_of_any_size_arrive_intact(sizes in proptest::collection::vec(0usize..5000, 1..20)) {
        let mut w = built();
        let now = w.now;
        let cs = w.client.begin("example.org", 80, BeginFlags::default(), now).expect("begin");
        w.run();
        let es = w.relay_events.iter().find_map(|(_, e)| match e {
            RelayEvent::Begin { stream, .. } => Some(*stream), _ => None }).expect("begin");
        w.hops[2].connected(es, None).expect("connected");
        w.run();
        let mut expect = Vec::new();
        for (k, n) in sizes.iter().enumerate() {
            let chunk: Vec<u8> = (0..*n).map(|i| (i + k) as u8).collect();
            let mut off = 0;
            while off < chunk.len() {
                off += w.client.send(cs, &chunk[off..]).expect("send");
                w.run();
            }
            expect.extend_from_slice(&chunk);
        }
        w.run();
        let got: Vec<u8> = w.relay_events.iter().filter_map(|(_, e)| match e {
            RelayEvent::Stream(StreamEvent::Data { data, .. }) => Some(data.to_vec()), _ => None }).flatten().collect();
        prop_assert_eq!(got, expect);
        let closed = w.client_events.iter().any(|e| matches!(e, CircEvent::Closed { .. }));
        prop_assert!(!closed, "the circuit closed");
    }
}
