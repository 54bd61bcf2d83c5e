//! Arbitrary cells at relay-side circuits (and the client circuit) after valid handshakes.
//!
//! A 3-hop circuit is built with real ntor-v3 handshakes; then the input is cut into
//! 511-byte records: `mode`, `hop`, and a 509-byte cell body. Modes: 0 = the body arrives at
//! relay `hop` from its client side as RELAY; 1 = as RELAY_EARLY; 2 = from its next side;
//! 3 = the client encrypts the body for `hop` (so the relay recognises it and parses the
//! relay message inside); 4 = the body arrives at the client from the guard; 5 = a DESTROY.
//! Nothing may panic, loop or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_cell::chancell::{ChanMsg, DestroyReason, RelayPayload};
use onion_circuit::circuit::HandshakeKind;
use onion_sim::circuit::wired::Wired;

fuzz_target!(|data: &[u8]| {
    let Ok(mut w) = Wired::new(5, HandshakeKind::NtorV3, true, 3) else {
        return;
    };
    if w.build().is_err() {
        return;
    }
    for rec in data.chunks(511).take(64) {
        let b1 = rec.get(1).copied().unwrap_or(0);
        let (mode, hop) = (rec[0] % 6, usize::from(b1) % 3);
        let mut body = Box::new([0u8; 509]);
        let src = rec.get(2..).unwrap_or(&[]);
        body[..src.len()].copy_from_slice(src);
        match mode {
            0 => w.forward(hop, ChanMsg::Relay(RelayPayload::Owned(body))),
            1 => w.forward(hop, ChanMsg::RelayEarly(RelayPayload::Owned(body))),
            2 => w.backward(hop, ChanMsg::Relay(RelayPayload::Owned(body))),
            3 => {
                let _ = w.client.send_raw(hop, body, rec[0] & 0x80 != 0);
            }
            4 => w.backward(0, ChanMsg::Relay(RelayPayload::Owned(body))),
            _ => w.forward(hop, ChanMsg::Destroy(DestroyReason(b1))),
        }
        w.run();
        // Answer exit requests so that streams get exercised too.
        let pending: Vec<_> = w.relay_events.drain(..).collect();
        for (i, ev) in pending {
            if let onion_circuit::relay::RelayEvent::Begin { stream, .. }
            | onion_circuit::relay::RelayEvent::BeginDir { stream } = ev
            {
                if let Some(h) = w.hops.get_mut(i) {
                    let _ = h.connected(stream, None);
                    let _ = h.send(stream, src);
                }
            }
        }
        w.run();
    }
});
