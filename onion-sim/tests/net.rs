//! The building blocks of the in-memory network (`onion_sim::circuit::net`), used directly:
//! parties build circuits through relays over channels, a relay's BEGIN_DIR handler answers
//! with a pluggable directory service, relays without one refuse, channels are reused.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_cell::{RelayCmd, RelayMsg};
use onion_circuit::circuit::{CircEvent, HandshakeKind};
use onion_circuit::relay::RelayEvent;
use onion_circuit::Instant;
use onion_sim::circuit::dir::{DirEdge, DirService};
use onion_sim::circuit::net::{CircRef, Edge, Net, NetConfig, Queue, RelayCx};

/// Answers `GET /<n>` with `n` bytes of `b'x'`, once the request head is complete.
struct Fill;

impl DirService for Fill {
    fn respond(&mut self, cx: &mut RelayCx<'_>, request: &[u8]) -> Option<Vec<u8>> {
        let end = request.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&request[..end]).ok()?;
        let n: usize = head
            .strip_prefix("GET /")?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        cx.say(format!("serving {n} bytes"));
        let mut v = format!("HTTP/1.0 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        v.resize(v.len() + n, b'x');
        Some(v)
    }
}

fn net(n: usize) -> Net {
    let mut net = Net::new(NetConfig {
        seed: 5,
        latency: Duration::from_millis(5),
        bandwidth: 0,
        story: true,
    });
    for i in 0..n {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8 + 1)), 9001);
        net.add_relay(&format!("r{i}"), addr).expect("relay");
    }
    net
}

fn limit() -> Instant {
    Instant::ZERO + Duration::from_secs(600)
}

fn built(net: &mut Net, at: CircRef, hops: usize) {
    assert!(net.run_quiet(&mut Queue, limit()));
    let ev = net.events(at).pop_front();
    assert!(
        matches!(ev, Some(CircEvent::HopAdded { hops: h }) if h == hops),
        "{ev:?}"
    );
    assert_eq!(net.circuit(at).map(|c| c.n_hops()), Some(hops));
}

/// Send `req` on a BEGIN_DIR stream of `at`; the bytes received and the END reason.
fn dir_fetch(net: &mut Net, at: CircRef, req: &[u8]) -> (Vec<u8>, Option<EndReason>) {
    let now = net.now();
    let stream = net
        .circuit_mut(at)
        .expect("circuit")
        .begin_dir(now)
        .expect("BEGIN_DIR");
    assert!(net.run_quiet(&mut Queue, limit()));
    let mut out = Vec::new();
    let mut end = None;
    let mut sent = false;
    for _ in 0..1000 {
        while let Some(ev) = net.events(at).pop_front() {
            match ev {
                CircEvent::StreamConnected { stream: s, .. } if s == stream => {
                    let n = net
                        .circuit_mut(at)
                        .expect("circuit")
                        .send(stream, req)
                        .expect("send");
                    assert_eq!(n, req.len());
                    sent = true;
                }
                CircEvent::Data { stream: s, data } if s == stream => out.extend_from_slice(&data),
                CircEvent::StreamEnded { stream: s, reason } if s == stream => end = Some(reason),
                _ => {}
            }
        }
        if end.is_some() {
            break;
        }
        assert!(net.run_quiet(&mut Queue, limit()));
        if !sent && end.is_none() && net.events(at).is_empty() {
            break;
        }
    }
    (out, end)
}

/// BEGIN_DIR at a relay with a directory service: the request goes in, a response larger
/// than the stream window comes back (the handler writes as SENDMEs open the windows), then
/// RELAY_END DONE (tor-spec §6.2, §7.4).
#[test]
fn begin_dir_answered_by_the_directory_service() {
    let mut net = net(3);
    net.add_edge(2, Box::new(DirEdge::new(Fill)));
    let p = net.add_party("alice", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let at = net
        .build_circuit(p, &[0, 1, 2], HandshakeKind::NtorV3)
        .expect("build");
    built(&mut net, at, 3);
    let (resp, end) = dir_fetch(&mut net, at, b"GET /400000 HTTP/1.0\r\n\r\n");
    assert_eq!(end, Some(EndReason::DONE));
    let head = b"HTTP/1.0 200 OK\r\nContent-Length: 400000\r\n\r\n";
    assert_eq!(&resp[..head.len()], head);
    assert_eq!(resp.len(), head.len() + 400_000);
    assert!(resp[head.len()..].iter().all(|&b| b == b'x'));
    let stats = net.circuit(at).expect("circuit").stats();
    assert!(stats.stream_sendmes_sent >= 10, "{stats:?}");
    assert!(net
        .story()
        .iter()
        .any(|l| l.party == "r2" && l.text == "serving 400000 bytes"));
    // The directory relay saw the middle, never the party.
    assert!(!net.relay_peers(2).contains("alice"));
    assert!(net.relay_peers(2).contains("r1"));
}

/// A relay without a directory service refuses BEGIN_DIR with NOTDIRECTORY.
#[test]
fn begin_dir_refused_without_a_directory() {
    let mut net = net(2);
    let p = net.add_party("alice", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let at = net
        .build_circuit(p, &[0, 1], HandshakeKind::Ntor)
        .expect("build");
    built(&mut net, at, 2);
    let (resp, end) = dir_fetch(&mut net, at, b"GET / HTTP/1.0\r\n\r\n");
    assert!(resp.is_empty());
    assert_eq!(end, Some(EndReason::NOTDIRECTORY));
}

/// A party's second circuit through the same first relay reuses its open channel
/// (tor-spec §5.3.1), and a relay extending twice to the same relay reuses its channel too.
#[test]
fn channels_are_reused() {
    let mut net = net(3);
    let p = net.add_party("alice", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let a = net
        .build_circuit(p, &[0, 1, 2], HandshakeKind::NtorV3)
        .expect("a");
    built(&mut net, a, 3);
    let b = net
        .build_circuit(p, &[0, 1], HandshakeKind::CreateFast)
        .expect("b");
    built(&mut net, b, 2);
    let opened = |who: &str| {
        net.story()
            .iter()
            .filter(|l| l.party == who && l.text.starts_with("opening a channel"))
            .count()
    };
    assert_eq!(opened("alice"), 1);
    assert_eq!(opened("r0"), 1);
    assert_eq!(net.party_circuits(p).count(), 2);
    assert!(net.party_failure(p).is_none());
}

/// An edge handler that tries joins at its relay when an ESTABLISH_RENDEZVOUS arrives, and
/// says how each went.
struct TryJoin;

impl Edge for TryJoin {
    fn on_event(
        &mut self,
        cx: &mut RelayCx<'_>,
        circ: usize,
        ev: RelayEvent,
    ) -> Option<RelayEvent> {
        let RelayEvent::Msg { .. } = ev else {
            return Some(ev);
        };
        let same = cx.splice(circ, circ);
        let continuing = cx.splice(circ, 0);
        let ends_here = cx.splice(circ, 2);
        let again = cx.splice(circ, 2);
        cx.say(format!(
            "same {same}, continuing {continuing}, ends here {ends_here}, again {again}"
        ));
        None
    }
}

/// `RelayCx::splice` joins two circuits that end at the relay, and refuses (leaving both
/// unjoined) a circuit with itself, one that continues to a next hop, and a second join
/// (rend-spec-v3 §4.2: only circuits that end at the rendezvous point are joined).
#[test]
fn splice_only_joins_circuits_that_end_here() {
    let mut net = net(2);
    net.add_edge(0, Box::new(TryJoin));
    let p = net.add_party("alice", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let a = net
        .build_circuit(p, &[0, 1], HandshakeKind::NtorV3)
        .expect("a");
    built(&mut net, a, 2);
    let b = net
        .build_circuit(p, &[0], HandshakeKind::NtorV3)
        .expect("b");
    built(&mut net, b, 1);
    let c = net
        .build_circuit(p, &[0], HandshakeKind::NtorV3)
        .expect("c");
    built(&mut net, c, 1);
    let msg = RelayMsg::decode(RelayCmd::ESTABLISH_RENDEZVOUS, &[9; 20]).expect("msg");
    net.circuit_mut(b)
        .expect("b")
        .send_msg(0, None, &msg)
        .expect("send");
    assert!(net.run_quiet(&mut Queue, limit()));
    assert!(net.story().iter().any(|l| l.party == "r0"
        && l.text == "same false, continuing false, ends here true, again false"));
}
