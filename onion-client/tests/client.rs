//! The Client driven over an in-process network of real relay machines (tests/support):
//! bootstrap over BEGIN_DIR, channels shared by circuits, isolation, dirtiness, stream flow
//! control toward the application, END reasons, failures and retries, idle channels, limits.

mod support;

use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_client::dir::{Authority, DirConfig, DirMode};
use onion_client::{
    Client, ClientConfig, Error, ErrorKind, Event, Instant, Isolation, State, StreamHandle,
};
use onion_dir::RsaIdentity;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{closed, opened, quiet_config, testdata, Net, WALL};

fn config() -> ClientConfig {
    let mut cfg = quiet_config();
    // Circuits are counted: none is built ahead of need unless a test asks.
    cfg.preemptive_circuits = false;
    cfg
}

/// A client that uses the network's directory.
fn client_on(net: &mut Net, cfg: ClientConfig) -> Client {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(net.directory(), net.now).unwrap();
    net.run(&mut c);
    c
}

/// Read everything `s` has now.
fn read_all(c: &mut Client, net: &Net, s: StreamHandle) -> (Vec<u8>, Option<Result<(), Error>>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(s, &mut buf, net.now) {
            Ok(Some(0)) => return (out, Some(Ok(()))),
            Ok(Some(n)) => out.extend_from_slice(&buf[..n]),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(Err(e))),
        }
    }
}

#[test]
fn bootstrap_carries_requests_over_begin_dir_to_authorities() {
    let mut net = Net::new(3, 1);
    // Three relays play the test network's authorities: their link identity is theirs, the
    // v3 signing identities are the real ones, so the real consensus verifies.
    let lines = testdata("dirauthority-lines.txt");
    let v3: Vec<RsaIdentity> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let mut b = [0u8; 20];
            hex::decode_to_slice(w[4].strip_prefix("v3ident=").unwrap(), &mut b).unwrap();
            RsaIdentity(b)
        })
        .collect();
    let mut auths = Vec::new();
    for (i, v) in v3.iter().enumerate() {
        let r = &mut net.relays[i];
        r.docs = vec![
            (
                "/tor/status-vote/current/consensus".into(),
                testdata("cached-microdesc-consensus"),
            ),
            ("/tor/keys/fp/".into(), testdata("cached-certs")),
            ("/tor/micro/d/".into(), testdata("cached-microdescs.new")),
        ];
        auths.push(Authority {
            name: format!("auth{i}"),
            rsa_id: r.keys.rsa_id,
            v3ident: *v,
            or_addr: Some(r.addr),
        });
    }
    let cfg = ClientConfig::new(DirConfig::new(auths, vec![], DirMode::Micro));
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut c = Client::new(cfg, State::default(), net.now, WALL, &mut rng).unwrap();
    assert!(!c.is_bootstrapped());
    let done = net.run_until(&mut c, Duration::from_secs(120), |n| {
        n.events
            .iter()
            .any(|e| matches!(e, Event::DirectoryChanged(_)))
    });
    assert!(
        done,
        "no directory; events: {:?}",
        net.events
            .iter()
            .filter(|e| !matches!(e, Event::Persist(_)))
            .collect::<Vec<_>>()
    );
    assert!(c.is_bootstrapped());
    let d = c.directory().unwrap();
    assert_eq!(d.relays_listed, 8);
    assert!(d.signatures_valid >= d.signatures_needed);
    assert!(!d.view.is_empty());
    // The consensus, certificates and descriptors are handed over to persist.
    let persisted = net
        .events
        .iter()
        .filter(|e| matches!(e, Event::Persist(_)))
        .count();
    assert!(persisted >= 3, "{persisted} documents persisted");
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::Bootstrap { percent: 100, .. })));
    // One channel per authority at most: requests to one source share its circuit.
    assert!(net.connects <= 3, "{} connections", net.connects);
}

#[test]
fn streams_share_one_circuit_and_one_channel() {
    let mut net = Net::new(6, 2);
    let mut c = client_on(&mut net, config());
    let streams: Vec<StreamHandle> = (0..10)
        .map(|_| c.connect("echo", 80, Isolation::NONE, net.now).unwrap())
        .collect();
    net.run(&mut c);
    assert!(streams.iter().all(|s| opened(&net, *s)));
    assert!(!net.duplicate_channels(), "one channel per relay");
    assert_eq!(net.multi_hop_circuits(), 1, "one three-hop circuit");
    for (i, s) in streams.iter().enumerate() {
        let msg = format!("hello {i}");
        assert_eq!(c.write(*s, msg.as_bytes(), net.now).unwrap(), msg.len());
    }
    net.run(&mut c);
    for (i, s) in streams.iter().enumerate() {
        let (got, end) = read_all(&mut c, &net, *s);
        assert_eq!(got, format!("hello {i}").as_bytes());
        assert!(end.is_none());
    }
}

#[test]
fn isolation_tokens_get_separate_circuits() {
    let mut net = Net::new(6, 3);
    let mut c = client_on(&mut net, config());
    let a = c.connect("echo", 80, Isolation(1), net.now).unwrap();
    let b = c.connect("echo", 80, Isolation(2), net.now).unwrap();
    let a2 = c.connect("echo", 443, Isolation(1), net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, a) && opened(&net, b) && opened(&net, a2));
    // Two circuits (the third stream shares the first's).
    assert_eq!(net.multi_hop_circuits(), 2);
    assert!(!net.duplicate_channels());
}

#[test]
fn end_reasons_surface_as_typed_errors() {
    let mut net = Net::new(6, 4);
    let mut c = client_on(&mut net, config());
    let ok = c.connect("big1000", 80, Isolation::NONE, net.now).unwrap();
    let refused = c.connect("refuse", 80, Isolation::NONE, net.now).unwrap();
    net.run_until(&mut c, Duration::from_secs(60), |n| {
        closed(n, refused).is_some()
    });
    let (got, end) = read_all(&mut c, &net, ok);
    assert_eq!(got.len(), 1000);
    assert!(matches!(end, Some(Ok(()))), "clean end: {end:?}");
    assert_eq!(closed(&net, ok), Some(None));
    // An exit policy refusal is tried on other circuits, then reported with its reason.
    let e = closed(&net, refused).unwrap().unwrap();
    assert_eq!(e, Error::StreamEnded(EndReason::EXITPOLICY));
    assert_eq!(e.kind(), ErrorKind::Network);
    // The handle is gone once the end was read.
    assert!(matches!(
        c.read(ok, &mut [0; 8], net.now),
        Err(Error::Misuse(_))
    ));
}

#[test]
fn a_full_receive_buffer_holds_only_its_stream() {
    let mut net = Net::new(6, 5);
    let mut cfg = config();
    cfg.limits.stream_recv_buffer = 16 << 10;
    let mut c = client_on(&mut net, cfg);
    let total = 400_000;
    let big = c
        .connect(&format!("big{total}"), 80, Isolation::NONE, net.now)
        .unwrap();
    let echo = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, big) && opened(&net, echo));
    assert_eq!(net.multi_hop_circuits(), 1, "both streams on one circuit");
    // Nobody reads `big`: the exit stops after one stream window (no SENDME goes out), so the
    // client holds the buffer limit plus at most one window, and the transfer is not over.
    let held = c.read(big, &mut [], net.now);
    assert_eq!(held.unwrap(), Some(0));
    assert!(
        closed(&net, big).is_none(),
        "the exit is held back, not done"
    );
    // The circuit's other stream still flows.
    c.write(echo, b"ping", net.now).unwrap();
    net.run(&mut c);
    let (got, _) = read_all(&mut c, &net, echo);
    assert_eq!(got, b"ping");
    // Reading releases it; every byte arrives, none is dropped.
    let mut all = Vec::new();
    for _ in 0..1000 {
        let (got, end) = read_all(&mut c, &net, big);
        assert!(
            got.len() <= (16 << 10) + 500 * 498,
            "buffered {} bytes",
            got.len()
        );
        all.extend(got);
        if end.is_some() {
            break;
        }
        net.run(&mut c);
    }
    assert_eq!(all.len(), total);
}

#[test]
fn a_blocked_connection_holds_cells_in_the_circuits() {
    let mut net = Net::new(6, 6);
    let mut c = client_on(&mut net, config());
    let s = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    // The channel of the exit circuit: the connection that sent the most.
    let conn = *net.sent.iter().max_by_key(|(_, n)| **n).unwrap().0;
    c.set_blocked(conn, true);
    let data = vec![7u8; 1 << 20];
    let mut written = 0;
    loop {
        let n = c.write(s, &data[written..], net.now).unwrap();
        if n == 0 {
            break;
        }
        written += n;
    }
    // The windows bound what a stream takes (500 cells of 498 bytes, tor-spec §7.4).
    assert!(written > 0 && written <= 500 * 498, "{written}");
    let before = net.sent.get(&conn).copied().unwrap_or(0);
    let mut buf = Vec::new();
    while let Some(other) = c.poll_transmit(net.now, &mut buf) {
        assert_ne!(other, conn, "nothing for the blocked connection");
        buf.clear();
    }
    net.run(&mut c);
    assert_eq!(net.sent.get(&conn).copied().unwrap_or(0), before);
    c.set_blocked(conn, false);
    let mut echoed = 0;
    for _ in 0..200 {
        net.run(&mut c);
        echoed += read_all(&mut c, &net, s).0.len();
        if written < data.len() {
            if let Ok(n) = c.write(s, &data[written..], net.now) {
                written += n;
            }
        }
        if echoed == data.len() {
            break;
        }
    }
    assert_eq!(echoed, data.len(), "every byte went through and back");
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::StreamWritable { stream } if *stream == s)));
}

#[test]
fn a_relay_dying_ends_its_streams_and_the_next_stream_gets_a_new_circuit() {
    let mut net = Net::new(6, 8);
    let mut c = client_on(&mut net, config());
    let s = c.connect("silent", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    // The exit is the relay of the newest relay circuit.
    let exit = (0..net.relays.len())
        .rev()
        .find(|&r| net.relays[r].addr != connect_addr(&net))
        .unwrap();
    let _ = exit;
    // Kill every relay but the guard: the circuit loses its middle or exit.
    let guard_addr = connect_addr(&net);
    for r in 0..net.relays.len() {
        if net.relays[r].addr != guard_addr {
            net.kill_relay(&mut c, r);
        }
    }
    net.run(&mut c);
    let e = closed(&net, s)
        .expect("the stream ended")
        .expect("with an error");
    assert_eq!(e, Error::StreamEnded(EndReason::DESTROY));
    // Relays come back (the consensus still lists them): a new stream gets a new circuit.
    for r in &mut net.relays {
        r.down = false;
    }
    let s2 = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run_until(&mut c, Duration::from_secs(60), |n| opened(n, s2));
    assert!(opened(&net, s2));
}

fn connect_addr(net: &Net) -> std::net::SocketAddr {
    net.events
        .iter()
        .find_map(|e| match e {
            Event::Connect { addr, .. } => Some(*addr),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_guard_that_is_down_is_replaced() {
    let mut net = Net::new(8, 9);
    let mut c = client_on(&mut net, config());
    let s = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    let first = connect_addr(&net);
    let g = net.relays.iter().position(|r| r.addr == first).unwrap();
    net.kill_relay(&mut c, g);
    net.run(&mut c);
    let s2 = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    let ok = net.run_until(&mut c, Duration::from_secs(120), |n| {
        opened(n, s2) || closed(n, s2).is_some()
    });
    assert!(ok && opened(&net, s2), "events: {:?}", closed(&net, s2));
    let addrs: Vec<_> = net
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Connect { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    assert!(addrs.iter().any(|a| *a != first), "another guard was tried");
}

#[test]
fn dirty_circuits_take_no_new_streams_and_idle_channels_close() {
    let mut net = Net::new(6, 10);
    let mut c = client_on(&mut net, config());
    let a = c.connect("silent", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, a));
    assert_eq!(net.multi_hop_circuits(), 1);
    // Eleven minutes later (MaxCircuitDirtiness is ten) a new stream needs a new circuit.
    let later = net.now + Duration::from_secs(660);
    while net.now < later {
        net.advance(&mut c, later);
    }
    let b = c.connect("silent", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, b));
    assert_eq!(net.multi_hop_circuits(), 2);
    // Both closed: the dirty circuits close, then the idle channel, within minutes.
    c.close(a, net.now);
    c.close(b, net.now);
    let end = net.now + Duration::from_secs(2000);
    while c.counts() != (0, 0, 0) && net.now < end {
        net.advance(&mut c, end);
    }
    assert_eq!(c.counts(), (0, 0, 0), "all closed by {:?}", net.now);
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnect { .. })));
    // Within MaxCircuitDirtiness of the last stream's circuit, plus the idle time of a channel
    // (at most 1.5 × 180 s).
    assert!(net.now <= Instant::ZERO + Duration::from_secs(660 + 600 + 270 + 1));
}

#[test]
fn limits_refuse_with_a_resource_error() {
    let mut net = Net::new(6, 11);
    let mut cfg = config();
    cfg.limits.max_streams = 2;
    let mut c = client_on(&mut net, cfg);
    c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    let e = c.connect("echo", 80, Isolation::NONE, net.now).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Resource);
    let e = c.connect("", 80, Isolation::NONE, net.now).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Misuse);
}

#[test]
fn resolve_answers_with_addresses() {
    let mut net = Net::new(6, 12);
    let mut c = client_on(&mut net, config());
    let r = c.resolve("example.com", Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    let answer = net.events.iter().find_map(|e| match e {
        Event::Resolved { request, answers } if *request == r => Some(answers.clone()),
        _ => None,
    });
    assert_eq!(answer, Some(Ok(vec!["192.0.2.53".parse().unwrap()])));
}

#[test]
fn streams_wait_for_the_directory() {
    let mut net = Net::new(6, 13);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(config(), State::default(), net.now, WALL, &mut rng).unwrap();
    let s = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(!opened(&net, s) && closed(&net, s).is_none());
    c.adopt_directory(net.directory(), net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    let _ = Instant::ZERO;
}

#[test]
fn a_full_event_queue_holds_input_until_drained() {
    let mut net = Net::new(6, 14);
    let mut cfg = config();
    cfg.limits.max_events = 4;
    let mut c = client_on(&mut net, cfg);
    let streams: Vec<StreamHandle> = (0..20)
        .map(|_| c.connect("echo", 80, Isolation::NONE, net.now).unwrap())
        .collect();
    let all = net.run_until(&mut c, Duration::from_secs(30), |n| {
        streams.iter().all(|s| opened(n, *s))
    });
    assert!(all, "every stream opened once the events were taken");
}

#[test]
fn a_connect_that_never_completes_times_out_and_other_guards_are_tried() {
    let mut net = Net::new(6, 15);
    for r in &mut net.relays {
        r.blackhole = true;
    }
    let mut c = client_on(&mut net, config());
    let s = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    let ended = net.run_until(&mut c, Duration::from_secs(300), |n| closed(n, s).is_some());
    assert!(ended);
    let e = closed(&net, s).unwrap().unwrap();
    assert!(
        matches!(e.kind(), ErrorKind::Network | ErrorKind::Timeout),
        "{e}"
    );
    let connects: Vec<_> = net
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Connect { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    assert!(connects.len() >= 2, "{connects:?}");
    // The connection attempts that timed out were given up (Disconnect).
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnect { .. })));
    // The network comes back: a new stream opens, and the guard state is handed over.
    for r in &mut net.relays {
        r.blackhole = false;
    }
    let s2 = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    let ok = net.run_until(&mut c, Duration::from_secs(600), |n| opened(n, s2));
    assert!(ok, "{:?}", closed(&net, s2));
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::Persist(onion_client::Persist::Guards(_)))));
}

#[test]
fn congestion_control_is_negotiated_with_exits_that_offer_it() {
    for on in [false, true] {
        let mut net = Net::new(6, 16);
        net.congestion_control = true;
        let mut cfg = config();
        cfg.congestion_control = on;
        let mut c = client_on(&mut net, cfg);
        let total = 300_000;
        let s = c
            .connect(&format!("big{total}"), 80, Isolation::NONE, net.now)
            .unwrap();
        net.run(&mut c);
        assert!(opened(&net, s));
        // Only the exit runs it (C tor negotiates it with the last hop alone).
        assert_eq!(
            net.cc_circuits(),
            usize::from(on),
            "congestion control {on}"
        );
        let mut got = 0;
        for _ in 0..100 {
            let (data, end) = read_all(&mut c, &net, s);
            got += data.len();
            if end.is_some() {
                break;
            }
            net.run(&mut c);
        }
        assert_eq!(got, total);
    }
}

#[test]
fn circuits_on_one_channel_take_turns() {
    let mut net = Net::new(6, 17);
    let mut cfg = config();
    // Four cells at a time in the channel: the rest wait in their circuits.
    cfg.limits.channel_outbound = 4 * 514;
    let mut c = client_on(&mut net, cfg);
    let a = c.connect("echo", 80, Isolation(1), net.now).unwrap();
    net.run(&mut c);
    // The second circuit ends at the first's exit, so that its guard (which avoids its exit)
    // is the same first primary guard whatever exits are drawn.
    let exit = c.stream_circuit(a).unwrap().hops[2].rsa_id;
    let b = c
        .connect_via("echo", 80, Isolation(2), exit, net.now)
        .unwrap();
    net.run(&mut c);
    assert!(opened(&net, a) && opened(&net, b));
    assert_eq!(net.multi_hop_circuits(), 2);
    let data = vec![1u8; 100_000];
    assert!(c.write(a, &data, net.now).unwrap() > 50_000);
    assert!(c.write(b, &data, net.now).unwrap() > 50_000);
    // The cells as they leave, by circuit id (link protocol 4+: 4-byte id, then the command).
    let mut ids: Vec<u32> = Vec::new();
    let mut out = Vec::new();
    let mut conns = Vec::new();
    while ids.len() < 60 {
        out.clear();
        let Some(conn) = c.poll_transmit(net.now, &mut out) else {
            break;
        };
        conns.push(conn);
        for cell in out.chunks(514) {
            ids.push(u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]));
        }
    }
    conns.dedup();
    assert_eq!(conns.len(), 1, "one channel: {conns:?}");
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        2,
        "both circuits on one channel: {distinct:x?}"
    );
    let first = ids.iter().filter(|i| **i == distinct[0]).count();
    let second = ids.len() - first;
    assert!(
        first.abs_diff(second) <= 2,
        "{first} cells against {second}: {ids:x?}"
    );
}

#[test]
fn a_connection_the_embedder_reports_closed_is_not_disconnected_again() {
    let mut net = Net::new(6, 18);
    let mut c = client_on(&mut net, config());
    let s = c.connect("silent", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    let conn = *net.sent.iter().max_by_key(|(_, n)| **n).unwrap().0;
    net.close_conn(conn);
    c.handle_closed(conn, net.now);
    net.run(&mut c);
    assert!(!net
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnect { conn: x } if *x == conn)));
    // Its circuit's stream ended with it.
    assert_eq!(
        closed(&net, s),
        Some(Some(Error::StreamEnded(EndReason::DESTROY)))
    );
}

/// The relay index of `id`.
fn relay_of(net: &Net, id: RsaIdentity) -> usize {
    net.relays.iter().position(|r| r.keys.rsa_id == id).unwrap()
}

#[test]
fn a_named_exit_ends_the_path_whatever_its_policy_and_keeps_its_circuits_to_itself() {
    let mut net = Net::new(8, 19);
    // Relay 5 allows no port in its policy summary: only a named exit reaches it.
    net.relays[5].exit_ports = onion_dir::policy::PortSet::none();
    let named = net.relays[5].keys.rsa_id;
    let mut c = client_on(&mut net, config());
    let a = c
        .connect_via("echo", 80, Isolation::NONE, named, net.now)
        .unwrap();
    let plain = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, a) && opened(&net, plain));
    let va = c.stream_circuit(a).unwrap();
    let ids: Vec<RsaIdentity> = va.hops.iter().map(|h| h.rsa_id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], named, "the path ends at the named exit");
    assert!(ids[..2].iter().all(|h| *h != named));
    // One BEGIN reached relay 5: the named stream's (the other went to an exit whose policy
    // allows port 80).
    assert_eq!(net.begins.iter().filter(|b| b.0 == 5).count(), 1);
    // A stream naming no exit does not share the named exit's circuit (and its exit is one
    // whose policy allows the port).
    let vp = c.stream_circuit(plain).unwrap();
    assert_ne!(vp.circuit, va.circuit);
    assert_ne!(vp.hops.last().unwrap().rsa_id, named);
    // Another stream naming the same exit shares its circuit; one naming another does not.
    let b = c
        .connect_via("echo", 443, Isolation::NONE, named, net.now)
        .unwrap();
    let other = net.relays[6].keys.rsa_id;
    let d = c
        .connect_via("echo", 80, Isolation::NONE, other, net.now)
        .unwrap();
    net.run(&mut c);
    assert!(opened(&net, b) && opened(&net, d));
    assert_eq!(c.stream_circuit(b).unwrap().circuit, va.circuit);
    let vd = c.stream_circuit(d).unwrap();
    assert_ne!(vd.circuit, va.circuit);
    assert_eq!(vd.hops.last().unwrap().rsa_id, other);
    // Data flows through it.
    c.write(a, b"via", net.now).unwrap();
    net.run(&mut c);
    assert_eq!(read_all(&mut c, &net, a).0, b"via");
    // An onion service is not reached through an exit.
    let e = c
        .connect_via("abc.onion", 80, Isolation::NONE, named, net.now)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Misuse);
}

#[test]
fn a_named_exit_is_kept_on_retries_and_its_circuit_lost_brings_a_new_one_to_it() {
    let mut net = Net::new(8, 20);
    let named = net.relays[3].keys.rsa_id;
    let mut c = client_on(&mut net, config());
    // The exit refuses: the stream is tried again, always at the exit it named.
    let s = c
        .connect_via("refuse", 80, Isolation::NONE, named, net.now)
        .unwrap();
    net.run_until(&mut c, Duration::from_secs(120), |n| closed(n, s).is_some());
    assert_eq!(
        closed(&net, s),
        Some(Some(Error::StreamEnded(EndReason::EXITPOLICY)))
    );
    let tried: Vec<usize> = net
        .begins
        .iter()
        .filter(|b| b.1 == "refuse")
        .map(|b| b.0)
        .collect();
    assert!(tried.len() >= 2, "{tried:?}");
    assert!(tried.iter().all(|r| *r == 3), "{tried:?}");
    // Its circuit's middle dies while a stream waits for CONNECTED: the stream is retried
    // on a new circuit to the same exit.
    let w = c
        .connect_via("silent", 80, Isolation(9), named, net.now)
        .unwrap();
    net.run(&mut c);
    assert!(opened(&net, w));
    let first = c.stream_circuit(w).unwrap();
    let middle = relay_of(&net, first.hops[1].rsa_id);
    net.kill_relay(&mut c, middle);
    net.run(&mut c);
    let again = c
        .connect_via("echo", 80, Isolation(9), named, net.now)
        .unwrap();
    let ok = net.run_until(&mut c, Duration::from_secs(120), |n| opened(n, again));
    assert!(ok, "{:?}", closed(&net, again));
    let v = c.stream_circuit(again).unwrap();
    assert_ne!(v.circuit, first.circuit);
    assert_eq!(v.hops.last().unwrap().rsa_id, named);
    assert!(v.hops.iter().all(|h| h.rsa_id != first.hops[1].rsa_id));
}

#[test]
fn close_ends_the_stream_with_misc_as_c_tor_does_on_client_circuits() {
    let mut net = Net::new(6, 21);
    let mut c = client_on(&mut net, config());
    let s = c.connect("silent", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    c.close(s, net.now);
    net.run(&mut c);
    // tor-spec §6.3: an OP sends no reason but MISC for its own streams (C tor's
    // connection_edge_end rewrites DONE to MISC on client circuits).
    assert_eq!(net.ends.len(), 1, "{:?}", net.ends);
    assert_eq!(net.ends[0].1, EndReason::MISC);
    assert!(closed(&net, s).is_none(), "no event follows close()");
    assert!(matches!(
        c.read(s, &mut [0; 4], net.now),
        Err(Error::Misuse(_))
    ));
}

/// A client that builds circuits ahead of need, on a network without build-timeout learning
/// (no test circuits: only predictions launch circuits).
fn predicting(net: &mut Net) -> Client {
    net.params = "cbtdisabled=1".into();
    let mut cfg = config();
    cfg.preemptive_circuits = true;
    client_on(net, cfg)
}

/// Run `secs` seconds of virtual time.
fn pass(net: &mut Net, c: &mut Client, secs: u64) {
    let end = net.now + Duration::from_secs(secs);
    net.run_until(c, Duration::from_secs(secs), |n| n.now >= end);
}

#[test]
fn predicted_ports_get_circuits_built_ahead_and_a_new_stream_finds_one() {
    let mut net = Net::new(10, 22);
    // Relays 0-4 exit to 443 only, 5-9 to 8080 only.
    for (i, r) in net.relays.iter_mut().enumerate() {
        r.exit_ports = match i < 5 {
            true => onion_dir::policy::PortSet::from_ranges([(443, 443)]),
            false => onion_dir::policy::PortSet::from_ranges([(8080, 8080)]),
        };
    }
    let mut c = predicting(&mut net);
    // At start 443 is predicted (C tor 0.4.9), and onion-service use for one window: two
    // exit circuits for 443 and three internal ones are built with no stream asking.
    pass(&mut net, &mut c, 5);
    let built = net.multi_hop_circuits();
    assert_eq!(built, 5, "2 exit + 3 internal circuits ahead of need");
    let connects = net.connects;
    let s = c.connect("echo", 443, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    assert_eq!(
        net.multi_hop_circuits(),
        built,
        "the stream took a circuit built ahead"
    );
    let exit = c.stream_circuit(s).unwrap().hops[2].rsa_id;
    assert!(relay_of(&net, exit) < 5);
    // A stream to 8080 has no circuit ready: it gets one on demand, and from then on 8080 is
    // predicted, so two clean circuits for it are built within a second or two (and one for
    // 443, whose circuit the first stream took: a circuit tied to an isolation token does
    // not count, as in C tor's circuit_stream_is_being_handled).
    let a = c.connect("echo", 8080, Isolation(1), net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, a));
    let after_a = net.multi_hop_circuits();
    assert_eq!(after_a, built + 1);
    pass(&mut net, &mut c, 3);
    assert_eq!(
        net.multi_hop_circuits(),
        after_a + 3,
        "two clean circuits for 8080, one for 443"
    );
    // Another 8080 stream (another isolation token) takes one of them: nothing is built for
    // it, and nothing is connected.
    let before = (net.multi_hop_circuits(), net.connects);
    let b = c.connect("echo", 8080, Isolation(2), net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, b));
    assert_eq!((net.multi_hop_circuits(), net.connects), before);
    let vb = c.stream_circuit(b).unwrap();
    assert!(relay_of(&net, vb.hops[2].rsa_id) >= 5);
    assert!(net.connects >= connects);
}

#[test]
fn predictions_expire_and_circuits_built_ahead_close() {
    let mut net = Net::new(8, 23);
    let mut c = predicting(&mut net);
    let s = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    c.close(s, net.now);
    pass(&mut net, &mut c, 5);
    assert!(c.counts().1 >= 3, "circuits built ahead: {:?}", c.counts());
    // Nothing used for 100 minutes: predictions (30 to 60 minutes, C tor's
    // CircuitsAvailableTimeout from nf_conntimeout_clients) are over, the clean circuits
    // closed after them, and no new one is built. (The adopted directory's refresh is
    // retried after two hours: before that nothing else builds circuits.)
    pass(&mut net, &mut c, 6000);
    assert_eq!(c.counts(), (0, 0, 0), "all closed");
    let connects = net.connects;
    pass(&mut net, &mut c, 600);
    assert_eq!(
        net.connects, connects,
        "nothing built once predictions ended"
    );
    // Nothing wakes the client every second any more.
    assert!(c
        .poll_timeout()
        .map_or(true, |t| t > net.now + Duration::from_secs(60)));
}

#[test]
fn circuits_built_ahead_are_bounded() {
    let mut net = Net::new(8, 24);
    let mut c = predicting(&mut net);
    // Forty ports used by streams of one circuit (tied to its isolation token, so no port
    // is handled by a clean circuit): each asks for two circuits, but at most 14 clean
    // circuits are kept (C tor's MAX_UNUSED_OPEN_CIRCUITS).
    for port in 1000..1040 {
        c.connect("silent", port, Isolation::NONE, net.now).unwrap();
    }
    net.run(&mut c);
    pass(&mut net, &mut c, 30);
    let (_, circuits, _) = c.counts();
    assert!(circuits > 2, "{circuits}");
    assert!(
        circuits <= 1 + onion_client::predict::MAX_UNUSED_OPEN_CIRCUITS,
        "{circuits} circuits"
    );
}

/// PADDING cells relays receive from a client holding one idle stream for `secs`, with
/// consensus parameters `params`; and on how many connections. The client's own count
/// ([`onion_client::Client::padding_stats`]) agrees.
fn idle_padding(params: &str, secs: u64, open_stream: bool) -> (u64, usize) {
    let mut net = Net::new(6, 25);
    net.params = params.into();
    let mut c = client_on(&mut net, config());
    if open_stream {
        let s = c.connect("silent", 80, Isolation::NONE, net.now).unwrap();
        net.run(&mut c);
        assert!(opened(&net, s));
    }
    let before = net.padding_received();
    pass(&mut net, &mut c, secs);
    let per_conn = net.padding_by_conn();
    let stats = c.padding_stats();
    let on_padded = match stats.padded {
        0 => 0,
        _ => net.padding_received(),
    };
    assert_eq!(stats.sent, on_padded, "{stats:?}");
    (
        net.padding_received() - before,
        per_conn.iter().filter(|n| **n > 0).count(),
    )
}

#[test]
fn idle_channels_of_multi_hop_circuits_are_padded_as_the_consensus_says() {
    // C tor's defaults (padding-spec §2.2, §2.6): a PADDING cell after 1.5 to 9.5 s of
    // idleness, max(X, X) distributed (mean about 6.8 s one-sided).
    let (n, padded) = idle_padding("cbtdisabled=1", 300, true);
    // The guard's channel only (not the one-hop directory channel).
    assert_eq!(padded, 1, "channels padded");
    assert!(
        (300 / 10..=300 * 2 / 3).contains(&n),
        "{n} PADDING cells in 300 s"
    );
    assert!((30..=70).contains(&n), "{n}: about 300 / 6.8");
    // A fixed interval from the consensus: one every 5 s.
    let (n, _) = idle_padding("cbtdisabled=1 nf_ito_high=5000 nf_ito_low=5000", 300, true);
    assert!((59..=60).contains(&n), "{n}");
    // Turned off by the consensus: none (the 5-minute keepalive aside).
    let (n, _) = idle_padding("cbtdisabled=1 nf_ito_high=0 nf_ito_low=0", 290, true);
    assert_eq!(n, 0);
}

#[test]
fn busy_channels_and_channels_without_circuits_are_not_padded() {
    // No multi-hop circuit: nothing to pad.
    let (n, _) = idle_padding("cbtdisabled=1", 120, false);
    assert_eq!(n, 0);
    // A stream that keeps the channel busy more often than every 1.5 s: no padding.
    let mut net = Net::new(6, 26);
    net.params = "cbtdisabled=1".into();
    let mut c = client_on(&mut net, config());
    let s = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    let before = net.padding_received();
    for _ in 0..100 {
        c.write(s, b"ping", net.now).unwrap();
        pass(&mut net, &mut c, 1);
        assert_eq!(read_all(&mut c, &net, s).0, b"ping");
    }
    assert_eq!(net.padding_received(), before);
}

#[test]
fn a_stream_error_arrives_through_read_after_the_buffered_bytes() {
    let mut net = Net::new(6, 27);
    let mut c = client_on(&mut net, config());
    let s = c.connect("echo", 80, Isolation::NONE, net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    c.write(s, b"hello", net.now).unwrap();
    net.run(&mut c);
    // The echo is buffered, unread; then every relay but the guard dies.
    let guard = c.stream_circuit(s).unwrap().hops[0].rsa_id;
    for r in 0..net.relays.len() {
        if net.relays[r].keys.rsa_id != guard {
            net.kill_relay(&mut c, r);
        }
    }
    net.run(&mut c);
    let e = closed(&net, s).unwrap().unwrap();
    assert_eq!(e, Error::StreamEnded(EndReason::DESTROY));
    // Writes fail with the same error; reads give the bytes, then the error, once.
    assert_eq!(c.write(s, b"more", net.now), Err(e.clone()));
    let mut buf = [0u8; 64];
    assert_eq!(
        c.read(s, &mut [], net.now),
        Ok(Some(0)),
        "an empty read changes nothing"
    );
    assert_eq!(c.read(s, &mut buf, net.now), Ok(Some(5)));
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(c.read(s, &mut buf, net.now), Err(e));
    assert!(matches!(
        c.read(s, &mut buf, net.now),
        Err(Error::Misuse(_))
    ));
    // A stream refused before it opened: the same error through read, with no bytes.
    let r = c.connect("refuse", 80, Isolation::NONE, net.now).unwrap();
    for r in &mut net.relays {
        r.down = false;
    }
    net.run_until(&mut c, Duration::from_secs(120), |n| closed(n, r).is_some());
    let e = closed(&net, r).unwrap().unwrap();
    assert_eq!(c.read(r, &mut buf, net.now), Err(e));
}

#[test]
fn a_full_window_arriving_at_a_held_stream_is_kept() {
    let mut net = Net::new(6, 28);
    let mut cfg = config();
    // Held after its first cells: the exit's whole window is still in flight.
    cfg.limits.stream_recv_buffer = 1000;
    let mut c = client_on(&mut net, cfg);
    let total = 400_000;
    let s = c
        .connect(&format!("big{total}"), 80, Isolation::NONE, net.now)
        .unwrap();
    net.run(&mut c);
    net.run_until(&mut c, Duration::from_secs(5), |_| false);
    assert!(opened(&net, s));
    // Nothing read: exactly one stream window (500 cells) arrived, no SENDME went out, and
    // the stream neither lost bytes nor ended.
    assert!(closed(&net, s).is_none(), "{:?}", closed(&net, s));
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    match c.read(s, &mut buf, net.now) {
        Ok(Some(n)) => all.extend_from_slice(&buf[..n]),
        other => panic!("{other:?}"),
    }
    // 500 cells (the exit's chunks do not fill every cell): far past the 1000 bytes the
    // stream was held at, within one window.
    assert!(
        all.len() > 400 * 498 && all.len() <= 500 * 498,
        "{}",
        all.len()
    );
    // Reading releases it; the rest follows, in full.
    for _ in 0..1000 {
        net.run(&mut c);
        match c.read(s, &mut buf, net.now) {
            Ok(Some(0)) => break,
            Ok(Some(n)) => all.extend_from_slice(&buf[..n]),
            Ok(None) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(all.len(), total);
    assert!(all.iter().all(|b| *b == b'x'));
}

#[test]
fn a_hanging_build_blocks_nothing_else_and_its_stream_moves_on_after_the_timeout() {
    let mut net = Net::new(8, 29);
    // Relay 4 takes circuits but never answers an EXTEND toward it.
    net.relays[4].mute = true;
    let mut c = client_on(&mut net, config());
    // Ten isolation tokens: ten circuits building at once, some through relay 4.
    let streams: Vec<StreamHandle> = (0..10)
        .map(|i| c.connect("echo", 80, Isolation(i + 1), net.now).unwrap())
        .collect();
    net.run(&mut c);
    let open_now = streams.iter().filter(|s| opened(&net, **s)).count();
    assert!(
        (1..10).contains(&open_now),
        "{open_now} opened at once (the others hang at relay 4)"
    );
    // The others move to new paths once their build times out (60 s while learning) and
    // open; none ends.
    let ok = net.run_until(&mut c, Duration::from_secs(200), |n| {
        streams.iter().all(|s| opened(n, *s))
    });
    assert!(
        ok,
        "{:?}",
        streams.iter().map(|s| closed(&net, *s)).collect::<Vec<_>>()
    );
    assert!(net.now >= Instant::ZERO + Duration::from_secs(60));
    let mute = net.relays[4].keys.rsa_id;
    for s in &streams {
        let v = c.stream_circuit(*s).unwrap();
        assert!(v.hops.iter().all(|h| h.rsa_id != mute));
    }
}

#[test]
fn the_build_timeout_is_learned_from_build_times() {
    let mut net = Net::new(8, 31);
    // Ten build times suffice here (C tor: cbtmincircs, 100 by default).
    net.params = "cbtmincircs=10".into();
    let mut c = client_on(&mut net, config());
    let first: Vec<StreamHandle> = (0..12)
        .map(|i| c.connect("echo", 80, Isolation(i + 1), net.now).unwrap())
        .collect();
    net.run(&mut c);
    assert!(first.iter().all(|s| opened(&net, *s)));
    // Builds on this network take no time: the learned timeout is far below the initial
    // 60 s, so a build that hangs is given up within seconds and its stream moves on.
    net.relays[4].mute = true;
    let start = net.now;
    let streams: Vec<StreamHandle> = (0..10)
        .map(|i| c.connect("echo", 80, Isolation(100 + i), net.now).unwrap())
        .collect();
    net.run(&mut c);
    let open_now = streams.iter().filter(|s| opened(&net, **s)).count();
    assert!(open_now < 10, "some builds hang at relay 4");
    let ok = net.run_until(&mut c, Duration::from_secs(200), |n| {
        streams.iter().all(|s| opened(n, *s))
    });
    assert!(ok);
    let took = net.now.saturating_duration_since(start);
    assert!(
        took > Duration::ZERO && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// A reader that stops while a congestion-controlled exit has a large window in flight
/// (proposal 324 §4.1.1): the cells the exit sent before our RELAY_XOFF reached it are more
/// than our own congestion window toward the exit (which carries almost nothing from us and
/// stays at `cc_cwnd_init`), and they are legitimate: the stream keeps them and ends whole.
#[test]
fn a_held_stream_keeps_what_a_congestion_controlled_exit_had_in_flight() {
    let mut net = Net::new(6, 41);
    net.congestion_control = true;
    // An exit whose window grew to 1,500 cells (750 KB in flight).
    net.relay_cwnd_init = Some(1500);
    let mut cfg = config();
    cfg.congestion_control = true;
    cfg.limits.stream_recv_buffer = 1000;
    let mut c = client_on(&mut net, cfg);
    let total = 3_000_000;
    let s = c
        .connect(&format!("big{total}"), 80, Isolation::NONE, net.now)
        .unwrap();
    net.run(&mut c);
    assert!(opened(&net, s));
    assert!(closed(&net, s).is_none(), "{:?}", closed(&net, s));
    assert_eq!(net.cc_circuits(), 1);
    net.run_until(&mut c, Duration::from_secs(5), |_| false);
    assert!(closed(&net, s).is_none(), "{:?}", closed(&net, s));
    let mut got = Vec::new();
    let (data, end) = read_all(&mut c, &net, s);
    assert!(end.is_none(), "{end:?}");
    // Far past the 1000 bytes it was held at: the exit's window, which our XOFF stopped.
    assert!(data.len() > 500_000 && data.len() < total, "{}", data.len());
    got.extend_from_slice(&data);
    for _ in 0..100_000 {
        let (data, end) = read_all(&mut c, &net, s);
        got.extend_from_slice(&data);
        match end {
            Some(Ok(())) => break,
            Some(Err(e)) => panic!("stream ended after {} bytes: {e}", got.len()),
            None => net.run(&mut c),
        }
    }
    assert_eq!(got.len(), total);
}
