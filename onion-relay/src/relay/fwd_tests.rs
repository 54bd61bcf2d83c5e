//! Tests of the forwarding path's bookkeeping: cell bodies reused within their bound, and
//! circuits found whichever side of a relay-to-relay connection opened it.

use std::net::{IpAddr, Ipv4Addr};

use onion_circuit::circuit::HandshakeKind;
use onion_circuit::stream::StreamId;

use super::SPARE_BODIES;
use crate::tests::{three_relays, Net};

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 + i / 509) as u8).collect()
}

fn fetch(net: &mut Net, i: usize, len: usize) -> StreamId {
    net.reply = pattern(len);
    let s = net.begin(i, "example.com", 80);
    net.send(i, s, b"GET / HTTP/1.0\r\n\r\n");
    net.run();
    let got = net.circs[i].data.get(&s.get()).cloned().unwrap_or_default();
    assert!(
        got == pattern(len),
        "{} of {len} bytes, or not the same",
        got.len()
    );
    s
}

/// The bodies of the cells a relay forwarded (and the exit's DATA cells) are kept for the
/// next cells, never more than the bound, and the data arrives intact through them.
#[test]
fn forwarded_cell_bodies_are_reused_within_their_bound() {
    let (mut net, c) = three_relays(41);
    let i = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(i), 3);
    fetch(&mut net, i, 600_000);
    for r in 0..3 {
        let kept = net.relays[r].bodies.len();
        assert!(kept <= SPARE_BODIES, "relay {r}: {kept}");
        // Every relay sent RELAY cells (forwarded, or the exit's own): it kept bodies.
        assert!(kept > 0, "relay {r} kept no body");
    }
    // The same again on the same relays: the kept bodies carry it, the bound holds.
    let j = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    fetch(&mut net, j, 300_000);
    for r in 0..3 {
        assert!(net.relays[r].bodies.len() <= SPARE_BODIES, "relay {r}");
    }
}

/// A circuit may come in on a connection the relay opened itself (the peer extends over the
/// channel it already has to us): its cells are found as the client side's, while the
/// circuits we extended over the same connection are found as the next hop's.
#[test]
fn circuits_on_a_connection_we_opened_are_found_both_ways() {
    let (mut net, c) = three_relays(43);
    // Relay 0 opens the connection to relay 1 for this circuit.
    let a = net.build(c, &[0, 1, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(a), 3);
    // A client of relay 1 extends to relay 0: relay 1 reuses its channel to relay 0, so at
    // relay 0 this circuit arrives on the connection relay 0 opened.
    let (c1, _) = net
        .connect_client(1, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)))
        .expect("connect");
    let b = net.build(c1, &[1, 0, 2], HandshakeKind::NtorV3);
    assert_eq!(net.hops(b), 3);
    let (at0, _) = net.relay_link(0, 1).expect("link between relays 0 and 1");
    assert!(at0.is_outbound(), "relay 0 opened the connection");
    assert_eq!(net.relays[1].stats().channels_reused, 1);
    assert_eq!(
        net.relays[0].stats().channels_opened,
        2,
        "to relay 1 and to the exit"
    );
    // Both carry their data, each way.
    fetch(&mut net, a, 200_000);
    fetch(&mut net, b, 200_000);
    net.circs[b].circ.destroy();
    net.run();
    assert_eq!(
        net.relays[0].n_circuits(),
        1,
        "the DESTROY on it found the circuit"
    );
}
