//! Streams that end before CONNECTED, over the in-process relay network (tests/support),
//! against what C tor's client does (`connection_ap_process_end_not_open`,
//! `connection_ap_expire_beginning`, `connection_edge_destroy` as a circuit goes): which END
//! reasons send the stream to another circuit, which close the circuit, which end the
//! stream; what a BEGIN left unanswered and a circuit destroyed under a connecting stream
//! come to.

mod support;

use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_client::{Client, ClientConfig, Error, Isolation, State, StreamHandle};
use onion_dir::policy::PortSet;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use support::{closed, opened, quiet_config, Net, WALL};

/// The circuit attempts a stream gets before it ends (the client's `STREAM_ATTEMPTS`, as C
/// tor's `MAX_RESOLVE_FAILURES` for the reasons it counts).
const ATTEMPTS: usize = 3;

fn config() -> ClientConfig {
    let mut cfg = quiet_config();
    cfg.preemptive_circuits = false;
    cfg
}

fn client_on(net: &mut Net) -> Client {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut c = Client::new(config(), State::default(), net.now, WALL, &mut rng).unwrap();
    c.adopt_directory(net.directory(), net.now).unwrap();
    net.run(&mut c);
    c
}

/// BEGINs the relays received for `host`.
fn begins(net: &Net, host: &str) -> usize {
    net.begins.iter().filter(|b| b.1 == host).count()
}

/// Run until `s` closed (at most ten minutes of virtual time); its error.
fn end_of(net: &mut Net, c: &mut Client, s: StreamHandle) -> Option<Error> {
    let done = net.run_until(c, Duration::from_secs(600), |n| closed(n, s).is_some());
    assert!(done, "the stream never ended");
    closed(net, s).unwrap()
}

#[test]
fn an_end_before_connected_is_retried_only_for_the_reasons_c_tor_retries() {
    // (reason, tried on other circuits)
    let cases = [
        (EndReason::MISC, true),
        (EndReason::RESOLVEFAILED, true),
        (EndReason::CONNECTREFUSED, false),
        (EndReason::EXITPOLICY, true),
        (EndReason::DONE, false),
        (EndReason::TIMEOUT, false),
        (EndReason::NOROUTE, true),
        (EndReason::HIBERNATING, true),
        (EndReason::INTERNAL, false),
        (EndReason::RESOURCELIMIT, true),
        (EndReason::CONNRESET, false),
        (EndReason::NOTDIRECTORY, false),
    ];
    for (i, (reason, retried)) in cases.into_iter().enumerate() {
        let mut net = Net::new(8, 40 + i as u64);
        let mut c = client_on(&mut net);
        let host = format!("end-{}", reason.0);
        let s = c.connect(&host, 80, Isolation::NONE, net.now).unwrap();
        let e = end_of(&mut net, &mut c, s);
        assert_eq!(e, Some(Error::StreamEnded(reason)), "{reason:?}");
        let want = if retried { ATTEMPTS } else { 1 };
        assert_eq!(begins(&net, &host), want, "{reason:?}");
    }
}

#[test]
fn torprotocol_or_destroy_before_connected_closes_the_circuit() {
    for (i, reason) in [EndReason::TORPROTOCOL, EndReason::DESTROY]
        .into_iter()
        .enumerate()
    {
        let mut net = Net::new(8, 60 + i as u64);
        let mut c = client_on(&mut net);
        // A stream open on the circuit the refused one will use (same isolation).
        let open = c.connect("silent", 80, Isolation(3), net.now).unwrap();
        net.run(&mut c);
        assert!(opened(&net, open));
        let host = format!("end-{}", reason.0);
        let s = c.connect(&host, 80, Isolation(3), net.now).unwrap();
        let e = end_of(&mut net, &mut c, s);
        // Not tried elsewhere; the stream and the circuit's other stream go with it.
        assert_eq!(begins(&net, &host), 1, "{reason:?}");
        assert_eq!(
            e,
            Some(Error::StreamEnded(EndReason::DESTROY)),
            "{reason:?}"
        );
        assert_eq!(
            closed(&net, open),
            Some(Some(Error::StreamEnded(EndReason::DESTROY))),
            "{reason:?}"
        );
        // A new stream gets a new circuit.
        let again = c.connect("echo", 80, Isolation(3), net.now).unwrap();
        assert!(net.run_until(&mut c, Duration::from_secs(60), |n| opened(n, again)));
    }
}

#[test]
fn a_circuit_destroyed_under_a_connecting_stream_ends_it_with_destroy() {
    let mut net = Net::new(8, 70);
    let mut c = client_on(&mut net);
    let s = c.connect("destroy", 80, Isolation::NONE, net.now).unwrap();
    let e = end_of(&mut net, &mut c, s);
    assert_eq!(e, Some(Error::StreamEnded(EndReason::DESTROY)));
    assert_eq!(begins(&net, "destroy"), 1);
}

#[test]
fn a_circuit_whose_exit_could_not_resolve_takes_no_new_stream() {
    let mut net = Net::new(8, 71);
    let mut c = client_on(&mut net);
    let open = c.connect("silent", 80, Isolation(5), net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, open));
    let first = c.stream_circuit(open).unwrap().circuit;
    let host = format!("end-{}", EndReason::RESOLVEFAILED.0);
    let s = c.connect(&host, 80, Isolation(5), net.now).unwrap();
    end_of(&mut net, &mut c, s);
    assert_eq!(begins(&net, &host), ATTEMPTS);
    // Its stream goes on; a new stream of the same isolation takes another circuit.
    assert_eq!(closed(&net, open), None);
    let next = c.connect("echo", 80, Isolation(5), net.now).unwrap();
    assert!(net.run_until(&mut c, Duration::from_secs(60), |n| opened(n, next)));
    assert_ne!(c.stream_circuit(next).unwrap().circuit, first);
    // Once its last stream is gone, it closes.
    net.advance(&mut c, net.now + Duration::from_secs(1));
    let (_, circuits, _) = c.counts();
    c.close(open, net.now);
    net.run(&mut c);
    net.advance(&mut c, net.now + Duration::from_secs(1));
    assert_eq!(c.counts().1, circuits - 1);
}

#[test]
fn an_exit_that_hibernates_takes_no_more_streams_on_its_open_circuits() {
    let mut net = Net::new(8, 72);
    let mut c = client_on(&mut net);
    let open = c.connect("silent", 80, Isolation(6), net.now).unwrap();
    net.run(&mut c);
    let first = c.stream_circuit(open).unwrap();
    let exit = first.hops.last().unwrap().rsa_id;
    let host = format!("end-{}", EndReason::HIBERNATING.0);
    let s = c.connect(&host, 80, Isolation(6), net.now).unwrap();
    end_of(&mut net, &mut c, s);
    // The circuit through it would fit a new stream of that isolation: it is not taken.
    let next = c.connect("echo", 80, Isolation(6), net.now).unwrap();
    assert!(net.run_until(&mut c, Duration::from_secs(60), |n| opened(n, next)));
    let v = c.stream_circuit(next).unwrap();
    assert_ne!(v.circuit, first.circuit);
    assert_ne!(v.hops.last().unwrap().rsa_id, exit);
}

#[test]
fn a_begin_left_unanswered_gets_end_and_is_tried_on_other_circuits() {
    let mut net = Net::new(8, 73);
    let mut c = client_on(&mut net);
    let (t0, circs0) = (net.now, c.counts().1);
    let s = c.connect("mute", 80, Isolation::NONE, net.now).unwrap();
    let e = end_of(&mut net, &mut c, s);
    assert_eq!(e, Some(Error::StreamEnded(EndReason::TIMEOUT)));
    assert_eq!(begins(&net, "mute"), ATTEMPTS);
    // Each attempt was given up with END (MISC: a client names no reason for its own
    // streams), one per attempt, after C tor's retry timeouts (10 s, 10 s, then 15 s), well
    // before the whole stream timeout (60 s) would have ended even the first.
    let misc = net.ends.iter().filter(|e| e.1 == EndReason::MISC).count();
    assert_eq!(misc, ATTEMPTS, "{:?}", net.ends);
    let spent = net.now.saturating_duration_since(t0);
    assert!(spent >= Duration::from_secs(35), "{spent:?}");
    assert!(spent < Duration::from_secs(60), "{spent:?}");
    // The circuits it was tried on took no new stream: without one, they closed (what is
    // left is what was open before: the bootstrap's directory circuit, idle for a minute).
    net.advance(&mut c, net.now + Duration::from_secs(1));
    assert!(c.counts().1 <= circs0, "{circs0} then {:?}", c.counts());
}

#[test]
fn a_stream_to_a_long_lived_port_takes_only_a_stable_circuit() {
    let mut net = Net::new(8, 74);
    // Relays 0-2: stable guards, no exits; 3: a stable exit to port 22 only; 4-7: exits to
    // 80 and 22 without the Stable flag.
    for (i, r) in net.relays.iter_mut().enumerate() {
        r.exit_ports = match i {
            0..=2 => PortSet::none(),
            3 => PortSet::from_ranges([(22, 22)]),
            _ => PortSet::from_ranges([(22, 22), (80, 80)]),
        };
        r.unstable = i >= 4;
    }
    let mut c = client_on(&mut net);
    let web = c.connect("silent", 80, Isolation(4), net.now).unwrap();
    net.run(&mut c);
    assert!(opened(&net, web));
    let first = c.stream_circuit(web).unwrap();
    // Its exit allows 22 too, and its isolation fits; but 22 is a long-lived port (C tor's
    // default LongLivedPorts): the stream gets a circuit of Stable relays.
    let ssh = c.connect("echo", 22, Isolation(4), net.now).unwrap();
    assert!(net.run_until(&mut c, Duration::from_secs(60), |n| opened(n, ssh)));
    let v = c.stream_circuit(ssh).unwrap();
    assert_ne!(v.circuit, first.circuit);
    assert_eq!(v.hops.last().unwrap().rsa_id, net.relays[3].keys.rsa_id);
    // Another stream to 80 still takes the first circuit.
    let web2 = c.connect("silent", 80, Isolation(4), net.now).unwrap();
    net.run(&mut c);
    assert_eq!(c.stream_circuit(web2).unwrap().circuit, first.circuit);
}
