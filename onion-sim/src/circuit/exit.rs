//! The exit service of a relay: BEGIN to the web server over simulated TCP, and RESOLVE
//! (tor-spec §6.2, §6.4), for the [`Edge`] slot of a relay.
//!
//! The exit resolves [`WEB_HOST`] to [`WEB_ADDR`] with its (simulated) DNS and accepts only
//! port 80 there (its exit policy). A TCP connection is two byte pipes with the network's link
//! latency and bandwidth; it opens one round trip after the BEGIN. The web server writes only
//! as much as the circuit's windows let the exit package (TCP back-pressure), so a large
//! response exercises SENDME flow control end to end.

use std::net::IpAddr;
use std::rc::Rc;

use onion_cell::relaymsg::{EndReason, ResolvedAnswer, ResolvedValue};

use super::net::{Chunk, Edge, Pipe, RelayCx};
use super::web::{WebConn, SPAN_MAX};
use super::{WEB_ADDR, WEB_HOST};
use onion_circuit::relay::RelayEvent;
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;

/// The party name the web server's story lines and what it saw go under.
pub const WEB: &str = "web";

/// An exit's TCP connection to the web server.
struct Tcp {
    circ: usize,
    stream: StreamId,
    web: WebConn,
    connect_at: Option<Instant>,
    to_web: Pipe,
    /// The web server's writes in flight: spans of its response, read from it when they
    /// arrive ([`WebConn::output_piece`]), so the bytes are copied once, into cells.
    to_exit: Pipe<Span>,
    /// Bytes arrived at the exit but not yet packaged (windows closed): `exit_buf[exit_off..]`
    /// (packaging advances the offset instead of moving the rest to the front).
    exit_buf: Vec<u8>,
    exit_off: usize,
    in_flight: usize,
    closed: bool,
}

/// The exit service of one relay, with its connections to the web server.
pub struct Exit {
    /// One period of the web server's response bodies (from the seed), shared by its
    /// connections.
    pattern: Rc<[u8]>,
    tcps: Vec<Tcp>,
    /// Where a piece of the response that includes head bytes is assembled.
    scratch: Vec<u8>,
}

/// A span of the web server's response: offset and length.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    len: usize,
}

impl Chunk for Span {
    fn len(&self) -> usize {
        self.len
    }
}

impl Tcp {
    fn pending(&self) -> &[u8] {
        &self.exit_buf[self.exit_off..]
    }

    /// `n` pending bytes were packaged.
    fn consume(&mut self, n: usize) {
        self.exit_off += n;
        if self.exit_off >= self.exit_buf.len() {
            self.exit_buf.clear();
            self.exit_off = 0;
        }
    }
}

/// Queue bytes the circuit could not take yet behind `buf[*off..]`.
fn keep(buf: &mut Vec<u8>, off: &mut usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if *off > 0 && *off >= buf.len() / 2 {
        buf.drain(..*off);
        *off = 0;
    }
    buf.extend_from_slice(bytes);
}

impl core::fmt::Debug for Exit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Exit")
            .field("connections", &self.tcps.len())
            .finish_non_exhaustive()
    }
}

impl Exit {
    /// An exit whose web server answers with bodies drawn from `seed`.
    pub fn new(seed: u64) -> Exit {
        Exit {
            pattern: super::web::pattern(seed),
            tcps: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn close_matching(&mut self, circ: usize, stream: Option<StreamId>) {
        for t in &mut self.tcps {
            if t.circ == circ && stream.map_or(true, |s| s == t.stream) {
                t.closed = true;
            }
        }
    }

    fn begin(
        &mut self,
        cx: &mut RelayCx<'_>,
        circ: usize,
        stream: StreamId,
        host: &str,
        port: u16,
    ) {
        cx.saw(format!("{host}:{port}"));
        cx.say(format!("stream {stream}: BEGIN {host}:{port}"));
        let ip = if host.eq_ignore_ascii_case(WEB_HOST) {
            Some(IpAddr::V4(WEB_ADDR))
        } else {
            host.parse::<IpAddr>().ok()
        };
        let verdict = if ip.is_none() {
            Some(EndReason::RESOLVEFAILED)
        } else if ip != Some(IpAddr::V4(WEB_ADDR)) || port != 80 {
            Some(EndReason::CONNECTREFUSED)
        } else {
            None
        };
        if let Some(reason) = verdict {
            if let Some(c) = cx.circ(circ) {
                let _ = c.end_stream(stream, reason);
            }
            cx.say(format!("stream {stream}: refused ({reason:?})"));
            return;
        }
        cx.saw(format!("{WEB_ADDR}:80"));
        let me = cx.addr().ip().to_string();
        cx.other_saw(WEB, me);
        cx.say(format!(
            "stream {stream}: resolved {host} to {WEB_ADDR}; exit policy accepts port {port}; connecting"
        ));
        let (latency, _) = cx.link();
        self.tcps.push(Tcp {
            circ,
            stream,
            web: WebConn::with_pattern(self.pattern.clone()),
            connect_at: Some(cx.now() + latency * 2),
            to_web: Pipe::default(),
            to_exit: Pipe::default(),
            exit_buf: Vec::new(),
            exit_off: 0,
            in_flight: 0,
            closed: false,
        });
    }

    fn tcp_connected(&mut self, cx: &mut RelayCx<'_>, ti: usize) {
        let (i, stream) = (self.tcps[ti].circ, self.tcps[ti].stream);
        let from = cx.addr().ip();
        cx.log(WEB, format!("accepted a TCP connection from {from}"));
        if let Some(c) = cx.circ(i) {
            let _ = c.connected(stream, Some((IpAddr::V4(WEB_ADDR), 300)));
            cx.say(format!(
                "stream {stream}: connected to {WEB_ADDR}:80, CONNECTED sent"
            ));
        }
    }
}

impl Edge for Exit {
    fn on_event(
        &mut self,
        cx: &mut RelayCx<'_>,
        circ: usize,
        ev: RelayEvent,
    ) -> Option<RelayEvent> {
        match ev {
            RelayEvent::Begin {
                stream, host, port, ..
            } => self.begin(cx, circ, stream, &host, port),
            RelayEvent::Resolve { stream, query } => {
                let value = if query.eq_ignore_ascii_case(WEB_HOST) {
                    ResolvedValue::Ip(IpAddr::V4(WEB_ADDR))
                } else {
                    ResolvedValue::NontransientError(b"Error resolving hostname".to_vec().into())
                };
                if let Some(c) = cx.circ(circ) {
                    let _ = c.resolved(stream, vec![ResolvedAnswer { value, ttl: 300 }]);
                }
                cx.say(format!("RESOLVE {query} answered"));
            }
            RelayEvent::Data { stream, data } => {
                let (lat, bw) = cx.link();
                let now = cx.now();
                match self
                    .tcps
                    .iter_mut()
                    .find(|t| t.circ == circ && t.stream == stream && !t.closed)
                {
                    Some(t) => t.to_web.push(now, data.to_vec(), lat, bw),
                    None => return Some(RelayEvent::Data { stream, data }),
                }
            }
            RelayEvent::StreamEnded { stream, reason } => {
                self.close_matching(circ, Some(stream));
                return Some(RelayEvent::StreamEnded { stream, reason });
            }
            RelayEvent::Closed { error } => {
                self.close_matching(circ, None);
                return Some(RelayEvent::Closed { error });
            }
            other => return Some(other),
        }
        None
    }

    fn step(&mut self, cx: &mut RelayCx<'_>) -> bool {
        let mut moved = false;
        let now = cx.now();
        let (lat, bw) = cx.link();
        for ti in 0..self.tcps.len() {
            let t = &mut self.tcps[ti];
            if t.closed || t.connect_at.is_some() {
                continue;
            }
            let Some(c) = cx.circ(t.circ) else {
                t.closed = true;
                continue;
            };
            // Package what arrived at the exit.
            if !t.pending().is_empty() {
                if let Ok(n) = c.send(t.stream, t.pending()) {
                    if n > 0 {
                        moved = true;
                        t.consume(n);
                    }
                }
            }
            // The web server writes as much as the exit will take (TCP back-pressure).
            let room = c
                .send_capacity(t.stream)
                .saturating_sub(t.pending().len() + t.in_flight);
            if room > 0 {
                let (start, len) = t.web.take_output(room.min(SPAN_MAX));
                if len > 0 {
                    moved = true;
                    t.in_flight += len;
                    t.to_exit.push(now, Span { start, len }, lat, bw);
                }
            }
            if t.web.is_done()
                && t.in_flight == 0
                && t.pending().is_empty()
                && t.to_exit.q.is_empty()
            {
                t.closed = true;
                let stream = t.stream;
                let _ = c.end_stream(stream, EndReason::DONE);
                moved = true;
                cx.log(WEB, "response sent, closing the connection");
                cx.say(format!(
                    "stream {stream}: web server closed, RELAY_END (DONE) sent"
                ));
            }
        }
        moved
    }

    fn next_time(&self) -> Option<Instant> {
        self.tcps
            .iter()
            .flat_map(|t| [t.connect_at, t.to_web.next_at(), t.to_exit.next_at()])
            .flatten()
            .min()
    }

    fn deliver_due(&mut self, cx: &mut RelayCx<'_>) {
        let now = cx.now();
        for ti in 0..self.tcps.len() {
            if self.tcps[ti].connect_at.is_some_and(|t| t <= now) {
                self.tcps[ti].connect_at = None;
                self.tcp_connected(cx, ti);
            }
            while let Some(bytes) = self.tcps[ti].to_web.pop_due(now) {
                if let Some(line) = self.tcps[ti].web.handle_input(&bytes) {
                    let from = cx.addr().ip();
                    cx.log(WEB, format!("request from {from}: \"{line}\""));
                }
            }
            while let Some(span) = self.tcps[ti].to_exit.pop_due(now) {
                let t = &mut self.tcps[ti];
                t.in_flight = t.in_flight.saturating_sub(span.len);
                // The whole span is one slice of the response (SPAN_MAX bounds the writes),
                // packaged in one call as if it were one buffer of bytes.
                let piece = t.web.output_piece(span.start, span.len, &mut self.scratch);
                // Package straight from the response when nothing is waiting before it.
                let mut used = 0;
                if t.exit_off >= t.exit_buf.len() && !t.closed {
                    if let Some(c) = cx.circ(t.circ) {
                        used = c.send(t.stream, piece).unwrap_or(0);
                    }
                }
                keep(&mut t.exit_buf, &mut t.exit_off, &piece[used..]);
            }
        }
    }
}
