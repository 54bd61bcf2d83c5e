//! The simulated network of `onion_sim::client` on its own, driven by a hand-built client
//! (one onion-circuit channel and circuit over a raw connection): the authorities' documents
//! are served over BEGIN_DIR and verify, a 3-hop circuit fetches a body from the web server,
//! and a relay dying mid-transfer ends the circuit.

use std::time::Duration;

use onion_cell::relaymsg::{BeginFlags, EndReason};
use onion_cell::CircId;
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_circuit::Instant;
use onion_sim::client::world::{LinkId, NetEvent, Role, World, WorldConfig, WALL_BASE};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A client made of one channel and one circuit through `path`.
struct Raw {
    link: LinkId,
    expected: PeerIds,
    chan: Option<Channel>,
    circ: Option<(CircId, Circuit)>,
    path: Vec<HopTarget>,
    rng: ChaCha20Rng,
    events: Vec<CircEvent>,
    closed: bool,
}

fn wall(now: Instant) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(WALL_BASE) + Duration::from_nanos(now.as_nanos())
}

impl Raw {
    fn new(w: &mut World, path: &[usize]) -> Raw {
        let path: Vec<HopTarget> = path.iter().map(|&r| w.relay_target(r)).collect();
        let link = w.connect(path[0].addrs[0]);
        Raw {
            link,
            expected: PeerIds {
                rsa: Some(path[0].rsa_id),
                ed25519: path[0].ed_id,
            },
            chan: None,
            circ: None,
            path,
            rng: ChaCha20Rng::seed_from_u64(5),
            events: Vec::new(),
            closed: false,
        }
    }

    /// Move everything that can move now; whether anything did.
    fn step(&mut self, w: &mut World) -> bool {
        let now = w.now();
        let mut moved = w.pump();
        while let Some(ev) = w.poll_event() {
            moved = true;
            match ev {
                NetEvent::Connected { link, cert_sha256 } if link == self.link => {
                    let cfg = ChanConfig::default();
                    self.chan = Some(Channel::initiator(
                        cfg,
                        self.expected,
                        Some(cert_sha256),
                        now,
                        wall(now),
                    ));
                }
                NetEvent::Data { link, bytes } if link == self.link => {
                    if let Some(c) = &mut self.chan {
                        let mut off = 0;
                        while off < bytes.len() {
                            let n = c.handle_input(now, &bytes[off..]);
                            if n == 0 || c.is_closed() {
                                break;
                            }
                            off += n;
                        }
                    }
                }
                NetEvent::Closed { .. } => self.closed = true,
                _ => {}
            }
        }
        let Some(chan) = &mut self.chan else {
            return moved;
        };
        while let Some(ev) = chan.poll_event() {
            moved = true;
            match ev {
                ChanEvent::Open(_) => {
                    let (circ, create) = Circuit::create(
                        CircConfig::default(),
                        &self.path[0],
                        HandshakeKind::NtorV3,
                        now,
                        &mut self.rng,
                    )
                    .expect("create");
                    let id = chan.new_circ_id(&mut self.rng).expect("id");
                    chan.send(id, &create).expect("send CREATE2");
                    self.circ = Some((id, circ));
                }
                ChanEvent::CircuitCell { msg, .. } => {
                    if let Some((_, c)) = &mut self.circ {
                        c.handle_cell(now, msg);
                    }
                }
                ChanEvent::Closed(_) => self.closed = true,
                _ => {}
            }
        }
        if let Some((id, circ)) = &mut self.circ {
            loop {
                while let Some(m) = circ.poll_cell(&mut self.rng) {
                    moved = true;
                    let _ = chan.send(*id, &m);
                }
                let Some(ev) = circ.poll_event() else { break };
                moved = true;
                match ev {
                    CircEvent::HopAdded { hops } if hops < self.path.len() => {
                        circ.extend(&self.path[hops], now, &mut self.rng)
                            .expect("extend");
                    }
                    other => self.events.push(other),
                }
            }
        }
        let mut out = Vec::new();
        if chan.poll_transmit(&mut out).is_some() && !out.is_empty() {
            moved = true;
            w.send(self.link, out);
        }
        moved
    }

    /// Run until `done` or ten virtual minutes.
    fn run(&mut self, w: &mut World, mut done: impl FnMut(&mut Raw) -> bool) {
        let limit = w.now() + Duration::from_secs(600);
        loop {
            while self.step(w) {}
            if done(self) {
                return;
            }
            let next = [
                w.next_time(),
                self.chan.as_ref().and_then(Channel::poll_timeout),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= limit => {
                    w.advance_to(t);
                    if let Some(c) = &mut self.chan {
                        if c.poll_timeout().is_some_and(|x| x <= t) {
                            c.handle_timeout(t);
                        }
                    }
                }
                _ => panic!("stalled at {:?}: {:?}", w.now(), self.events),
            }
        }
    }

    fn circ(&mut self) -> &mut Circuit {
        &mut self.circ.as_mut().expect("circuit").1
    }

    fn built(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, CircEvent::HopAdded { hops } if *hops == self.path.len()))
    }

    /// The bytes received on `s` and how it ended, once it ended.
    fn stream_result(&self, s: StreamId) -> Option<(Vec<u8>, EndReason)> {
        let end = self.events.iter().find_map(|e| match e {
            CircEvent::Stream(StreamEvent::Ended { stream, reason }) if *stream == s => {
                Some(*reason)
            }
            _ => None,
        })?;
        let mut body = Vec::new();
        for e in &self.events {
            if let CircEvent::Stream(StreamEvent::Data { stream, data }) = e {
                if *stream == s {
                    body.extend_from_slice(data);
                }
            }
        }
        Some((body, end))
    }
}

fn world() -> World {
    World::new(WorldConfig {
        story: true,
        ..WorldConfig::default()
    })
    .expect("world")
}

/// One HTTP GET on a new stream (BEGIN_DIR when `host` is `None`); the whole response.
fn get(w: &mut World, raw: &mut Raw, host: Option<&str>, path: &str) -> (Vec<u8>, EndReason) {
    let now = w.now();
    let s = match host {
        Some(h) => raw.circ().begin(h, 80, BeginFlags::default(), now),
        None => raw.circ().begin_dir(now),
    }
    .expect("begin");
    raw.run(w, |r| {
        r.events
            .iter()
            .any(|e| matches!(e, CircEvent::StreamConnected { stream, .. } if *stream == s))
    });
    let req = format!("GET {path} HTTP/1.0\r\n\r\n");
    assert_eq!(raw.circ().send(s, req.as_bytes()).expect("send"), req.len());
    raw.run(w, |r| r.stream_result(s).is_some());
    raw.stream_result(s).expect("ended")
}

fn body_of(resp: &[u8]) -> &[u8] {
    let end = resp
        .windows(4)
        .position(|x| x == b"\r\n\r\n")
        .expect("head");
    assert!(resp.starts_with(b"HTTP/1.0 200"), "{:?}", &resp[..end]);
    &resp[end + 4..]
}

/// An authority serves its certificates, the consensus and the microdescriptors over
/// BEGIN_DIR on a one-hop circuit, and they verify with onion-dir: a quorum of real
/// signatures, microdescriptors matching the consensus's digests.
#[test]
fn authority_documents_over_begin_dir_verify() {
    let mut w = world();
    let auth = w.relays_of(Role::Authority)[0];
    let mut raw = Raw::new(&mut w, &[auth]);
    raw.run(&mut w, |r| r.built());
    let (certs, end) = get(&mut w, &mut raw, None, "/tor/keys/all");
    assert_eq!(end, EndReason::DONE);
    let certs = String::from_utf8(body_of(&certs).to_vec()).expect("utf8");
    let (cons, _) = get(
        &mut w,
        &mut raw,
        None,
        "/tor/status-vote/current/consensus-microdesc/AB+CD",
    );
    let cons = String::from_utf8(body_of(&cons).to_vec()).expect("utf8");
    let now = w.wall();
    let verified: Vec<_> = onion_dir::authcert::parse_many(&certs)
        .expect("certs")
        .into_iter()
        .map(|c| c.verify(now).expect("certificate verifies"))
        .collect();
    assert_eq!(verified.len(), 3);
    let ids: Vec<_> = w.authorities().iter().map(|a| a.v3ident).collect();
    let c = onion_dir::consensus::parse(&cons)
        .expect("consensus parses")
        .verify(&ids, &verified, now)
        .expect("consensus verifies");
    assert_eq!(c.relays.len(), w.n_relays());
    let digests: Vec<String> = w
        .publication()
        .microdescs
        .iter()
        .map(|(d, _)| d.to_base64())
        .collect();
    let (mds, _) = get(
        &mut w,
        &mut raw,
        None,
        &format!("/tor/micro/d/{}", digests.join("-")),
    );
    let mds = String::from_utf8(body_of(&mds).to_vec()).expect("utf8");
    let parsed = onion_dir::microdesc::parse_many(&mds).expect("microdescs");
    assert_eq!(parsed.len(), w.n_relays());
    for m in &parsed {
        assert!(digests.contains(&m.digest.to_base64()));
    }
    // An unknown path is a 404, and the log says what was served.
    let (nf, _) = get(&mut w, &mut raw, None, "/tor/nothing");
    assert!(nf.starts_with(b"HTTP/1.0 404"));
    assert_eq!(w.dir_log().len(), 4);
    assert!(w.dir_log().iter().all(|l| l.relay == "auth0"));
}

/// guard -> middle -> exit: the body from the web server arrives whole, the circuit
/// exists at each relay, and the exit counted the stream.
#[test]
fn three_hop_fetch_from_the_web_server() {
    let mut w = world();
    let path = [
        w.relays_of(Role::Guard)[0],
        w.relays_of(Role::Middle)[0],
        w.relays_of(Role::Exit)[0],
    ];
    let mut raw = Raw::new(&mut w, &path);
    raw.run(&mut w, |r| r.built());
    for &r in &path {
        assert_eq!(w.relay_circuits(r), 1, "{}", w.relay_name(r));
    }
    let start = w.now();
    let (resp, end) = get(&mut w, &mut raw, Some("www.example.com"), "/300000");
    assert_eq!(end, EndReason::DONE);
    assert_eq!(body_of(&resp), &w.expected_body(300_000)[..]);
    let exit = w.relay_stats(path[2]);
    assert_eq!(exit.exit_streams, 1);
    assert!(exit.exit_bytes >= 300_000);
    // 300 kB over 12.5 MB/s links with 60 ms round trips: well under a second, not zero.
    let took = w.now() - start;
    assert!(
        took > Duration::from_millis(100) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // A port the exit policy does not accept is refused as C tor does (tor-spec §6.3).
    let now = w.now();
    let s = raw
        .circ()
        .begin("www.example.com", 25, BeginFlags::default(), now)
        .expect("begin");
    raw.run(&mut w, |r| r.stream_result(s).is_some());
    assert_eq!(
        raw.stream_result(s).expect("ended").1,
        EndReason::EXITPOLICY
    );
}

/// The middle relay dies mid-transfer: the guard tears the circuit down toward the client
/// (the stream never completes), and new connections to the dead relay are refused.
#[test]
fn relay_dying_mid_transfer_ends_the_circuit() {
    let mut w = world();
    let path = [
        w.relays_of(Role::Guard)[0],
        w.relays_of(Role::Middle)[0],
        w.relays_of(Role::Exit)[0],
    ];
    let mut raw = Raw::new(&mut w, &path);
    raw.run(&mut w, |r| r.built());
    let now = w.now();
    let s = raw
        .circ()
        .begin("www.example.com", 80, BeginFlags::default(), now)
        .expect("begin");
    raw.run(&mut w, |r| {
        r.events
            .iter()
            .any(|e| matches!(e, CircEvent::StreamConnected { .. }))
    });
    let req = b"GET /5000000 HTTP/1.0\r\n\r\n";
    raw.circ().send(s, req).expect("send");
    // Let some of the body arrive, then kill the middle.
    raw.run(&mut w, |r| {
        r.events
            .iter()
            .filter(|e| matches!(e, CircEvent::Stream(StreamEvent::Data { .. })))
            .count()
            > 200
    });
    w.kill_relay(path[1]);
    raw.run(&mut w, |r| {
        r.circ.as_ref().is_some_and(|(_, c)| c.is_closed())
    });
    let got: usize = raw
        .events
        .iter()
        .map(|e| match e {
            CircEvent::Stream(StreamEvent::Data { data, .. }) => data.len(),
            _ => 0,
        })
        .sum();
    assert!(got < 5_000_000, "{got}");
    assert!(!w.relay_up(path[1]));
    assert_eq!(w.relay_circuits(path[0]), 0, "the guard forgot the circuit");
    // A new connection to the dead relay is refused.
    let link = w.connect(w.relay_addr(path[1]));
    let limit = w.now() + Duration::from_secs(5);
    let mut refused = false;
    while !refused {
        w.pump();
        while let Some(ev) = w.poll_event() {
            refused |= ev == NetEvent::Closed { link };
        }
        match w.next_time() {
            Some(t) if t <= limit => w.advance_to(t),
            _ => break,
        }
    }
    assert!(refused);
}

/// A directory request longer than the relay buffers is refused: the stream ends with
/// RESOURCELIMIT instead of the relay growing its buffer.
#[test]
fn oversized_directory_request_ends_the_stream() {
    let mut w = world();
    let auth = w.relays_of(Role::Authority)[0];
    let mut raw = Raw::new(&mut w, &[auth]);
    raw.run(&mut w, |r| r.built());
    let now = w.now();
    let s = raw.circ().begin_dir(now).expect("begin_dir");
    raw.run(&mut w, |r| {
        r.events
            .iter()
            .any(|e| matches!(e, CircEvent::StreamConnected { stream, .. } if *stream == s))
    });
    let mut req = b"GET /tor/".to_vec();
    // Beyond the bound and the allowance an HSDir adds for a descriptor upload.
    req.resize(2 * onion_sim::client::world::MAX_DIR_REQUEST + 10, b'a');
    let mut sent = 0;
    while sent < req.len() {
        let n = raw.circ().send(s, &req[sent..]).expect("send");
        sent += n;
        raw.run(&mut w, |r| {
            r.stream_result(s).is_some()
                || r.circ.as_ref().is_some_and(|(_, c)| c.send_capacity(s) > 0)
        });
        if raw.stream_result(s).is_some() {
            break;
        }
    }
    raw.run(&mut w, |r| r.stream_result(s).is_some());
    let (body, reason) = raw.stream_result(s).expect("ended");
    assert_eq!(reason, EndReason::RESOURCELIMIT);
    assert!(body.is_empty());
    assert!(w.dir_log().is_empty(), "nothing answered");
}
