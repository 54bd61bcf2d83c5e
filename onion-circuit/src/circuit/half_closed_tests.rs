//! Half-closed streams on the client side (tor-spec §6.2.1, §6.3): late cells absorbed
//! within [`CircConfig::half_closed_timeout`], the stream forgotten by timer after it, and
//! DATA for a stream that was never opened dropped (but counted by the circuit window); and
//! the zero-copy DATA delivery.

use onion_cell::relaymsg::RelayCmd;
use rand_chacha::ChaCha20Rng;

use super::inbound_tests::{events, from_relay, one_hop};
use super::*;
use crate::relay::{RelayCircuit, RelayEvent, RelayOutput};
use crate::stream::StreamEvent;

const SECOND: Duration = Duration::from_secs(1);

/// Run every timer due up to `t` (as an embedding would), returning the events.
fn run_timers_until(c: &mut Circuit, t: Instant) -> Vec<CircEvent> {
    while let Some(d) = c.poll_timeout().filter(|d| *d <= t) {
        c.try_timeout(d).expect("timeouts are not fatal here");
    }
    c.try_timeout(t).expect("not fatal");
    events(c)
}

/// Deliver the client's queued cells to the relay (or drop them, `lost`), and the relay's
/// to the client; returns the relay's events.
fn pump(
    c: &mut Circuit,
    r: &mut RelayCircuit,
    rng: &mut ChaCha20Rng,
    lost: bool,
) -> Vec<RelayEvent> {
    while let Some(m) = c.poll_cell(rng) {
        if !lost {
            r.try_from_client(Instant::ZERO, m).expect("relay input");
        }
    }
    while let Some(out) = r.poll_cell(rng) {
        if let RelayOutput::ToClient(m) = out {
            c.handle_cell(c.last_now, m);
        }
    }
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// The relay's id for the stream a BEGIN/BEGIN_DIR opened.
fn begun(evs: &[RelayEvent]) -> StreamId {
    evs.iter()
        .find_map(|e| match e {
            RelayEvent::BeginDir { stream } => Some(*stream),
            _ => None,
        })
        .expect("BEGIN_DIR at the relay")
}

#[test]
fn late_data_absorbed_then_stream_expires() {
    let (mut c, mut r, mut rng) = one_hop(true);
    let start = Instant::ZERO + 10 * SECOND;
    c.try_timeout(start).expect("time passes");
    let id = c.begin_dir(start).expect("begin_dir");
    let es = begun(&pump(&mut c, &mut r, &mut rng, false));
    assert_eq!(es, id);
    r.connected(es, None).expect("connected");
    r.send(es, b"hello").expect("relay data");
    pump(&mut c, &mut r, &mut rng, false);
    assert_eq!(events(&mut c).len(), 2, "StreamConnected and Data");
    let received = c.stats().data_cells_received;

    // We end it; the END is still in flight (lost here, so the relay never answers with
    // its own END and keeps sending: only the timer can forget the stream).
    c.close_stream(id).expect("close");
    pump(&mut c, &mut r, &mut rng, true);
    assert_eq!(c.n_streams(), 1);
    let expiry = start + c.config.half_closed_timeout;
    assert_eq!(c.config.half_closed_timeout, 60 * SECOND);

    // Late DATA from the other edge is absorbed quietly.
    for _ in 0..3 {
        r.send(es, b"late").expect("relay data");
    }
    pump(&mut c, &mut r, &mut rng, true);
    assert!(events(&mut c).is_empty());
    assert!(!c.is_closed());
    assert_eq!(c.stats().data_cells_received, received);
    // The id stays taken: a BEGIN from the other end with it is dropped.
    from_relay(
        &mut c,
        &mut r,
        &mut rng,
        id.get(),
        RelayCmd::BEGIN,
        b":80\0",
    );
    assert!(events(&mut c).is_empty());

    // The half-closed window is a timer: it is among the next timeouts, and nothing is
    // reported when it ends (the embedding closed the stream itself).
    assert!(c.poll_timeout().is_some_and(|t| t <= expiry));
    assert!(run_timers_until(&mut c, start + 59 * SECOND).is_empty());
    assert_eq!(c.n_streams(), 1, "kept within the window");
    assert!(run_timers_until(&mut c, expiry).is_empty());
    assert_eq!(c.n_streams(), 0, "forgotten after it");

    // Now the id is unknown: DATA and END for it are dropped as for any unknown stream
    // (tor-spec §6.2.1), and the id can be used again.
    r.send(es, b"later").expect("relay data");
    pump(&mut c, &mut r, &mut rng, true);
    r.end_stream(es, EndReason::DONE).expect("relay end");
    pump(&mut c, &mut r, &mut rng, true);
    assert!(events(&mut c).is_empty());
    assert!(!c.is_closed());
    assert_eq!(c.stats().data_cells_received, received);
    from_relay(
        &mut c,
        &mut r,
        &mut rng,
        id.get(),
        RelayCmd::BEGIN,
        b":80\0",
    );
    assert_eq!(
        events(&mut c),
        vec![CircEvent::IncomingStream {
            stream: id,
            host: String::new(),
            port: 80
        }]
    );
}

#[test]
fn end_from_the_other_edge_forgets_a_half_closed_stream_at_once() {
    let (mut c, mut r, mut rng) = one_hop(true);
    from_relay(&mut c, &mut r, &mut rng, 9, RelayCmd::BEGIN, b":80\0");
    let id = StreamId::new(9).expect("nonzero");
    c.accept_stream(id).expect("accept");
    c.close_stream(id).expect("close");
    events(&mut c);
    from_relay(&mut c, &mut r, &mut rng, 9, RelayCmd::END, &[6]);
    assert!(
        events(&mut c).is_empty(),
        "no StreamEnded for a stream we closed"
    );
    assert_eq!(c.n_streams(), 0);
    // No half-closed timer is left: past the window nothing is reported either.
    let later = Instant::ZERO + 3600 * SECOND;
    assert!(run_timers_until(&mut c, later).is_empty());
}

#[test]
fn configurable_window() {
    let (mut c, mut r, mut rng) = one_hop(true);
    c.config.half_closed_timeout = 2 * SECOND;
    from_relay(&mut c, &mut r, &mut rng, 3, RelayCmd::BEGIN, b":80\0");
    let id = StreamId::new(3).expect("nonzero");
    c.accept_stream(id).expect("accept");
    c.close_stream(id).expect("close");
    events(&mut c);
    run_timers_until(&mut c, Instant::ZERO + SECOND);
    assert_eq!(c.n_streams(), 1);
    run_timers_until(&mut c, Instant::ZERO + 2 * SECOND);
    assert_eq!(c.n_streams(), 0);
}

#[test]
fn data_for_a_never_opened_stream_is_dropped_but_counted() {
    let (mut c, mut r, mut rng) = one_hop(false);
    // The relay believes in a stream the client never opened (a BEGIN_DIR the client's
    // stream table knows nothing of, sent raw).
    let mut body = Box::new([0u8; tor1::CELL_BODY_LEN]);
    body[0] = RelayCmd::BEGIN_DIR.0;
    body[3..5].copy_from_slice(&42u16.to_be_bytes());
    c.send_raw(0, body, false).expect("raw");
    let es = begun(&pump(&mut c, &mut r, &mut rng, false));
    r.connected(es, None).expect("connected");
    // 100 DATA cells on it: dropped (tor-spec §6.2.1), the circuit stays open, and they still
    // count against the circuit's deliver window, so the 100th makes us send a circuit
    // SENDME (tor-spec §7.3), which the relay accepts.
    for _ in 0..100 {
        r.send(es, b"x").expect("relay data");
    }
    pump(&mut c, &mut r, &mut rng, false);
    assert!(events(&mut c).is_empty(), "CONNECTED and DATA dropped");
    assert!(!c.is_closed());
    assert_eq!(c.n_streams(), 0);
    assert_eq!(c.stats().data_cells_received, 0);
    assert_eq!(c.stats().circ_sendmes_sent, 1);
    pump(&mut c, &mut r, &mut rng, false);
    assert!(!r.is_closed());
    assert_eq!(r.stats().circ_sendmes_received, 1);
}

/// DATA bodies are handed out in the cell's own buffer, bytes exactly as sent, for a full
/// cell and for shorter ones.
#[test]
fn data_bytes_keeps_the_payload() {
    for len in [0usize, 1, 100, 248, 249, 497, MAX_RELAY_DATA_LEN] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let body = data_body(StreamId::new(5).expect("nonzero"), &payload);
        assert_eq!(&data_bytes(body, len)[..], &payload[..], "len {len}");
    }
    // A length field beyond the maximum is clamped (the callers refuse it first).
    let body = data_body(
        StreamId::new(5).expect("nonzero"),
        &[9u8; MAX_RELAY_DATA_LEN],
    );
    assert_eq!(data_bytes(body, 600).len(), MAX_RELAY_DATA_LEN);
}

#[test]
fn close_says_misc_unless_told_another_reason() {
    for (reason, close_with) in [
        (EndReason::MISC, None),
        (EndReason::DONE, Some(EndReason::DONE)),
    ] {
        let (mut c, mut r, mut rng) = one_hop(true);
        let id = c.begin_dir(Instant::ZERO).expect("begin_dir");
        let es = begun(&pump(&mut c, &mut r, &mut rng, false));
        r.connected(es, None).expect("connected");
        pump(&mut c, &mut r, &mut rng, false);
        match close_with {
            None => c.close_stream(id).expect("close"),
            Some(why) => c.close_stream_with(id, why).expect("close"),
        }
        let evs = pump(&mut c, &mut r, &mut rng, false);
        let got = evs.iter().find_map(|e| match e {
            RelayEvent::Stream(StreamEvent::Ended { stream, reason }) if *stream == es => {
                Some(*reason)
            }
            _ => None,
        });
        assert_eq!(got, Some(reason));
    }
}
