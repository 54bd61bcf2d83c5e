//! Streams that end at this relay (tor-spec §6): exit streams to TCP targets allowed by the
//! exit policy, RESOLVE requests, and BEGIN_DIR streams answered by the directory cache.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use onion_cell::relaymsg::{End, EndReason, ExitPolicyAddr, ResolvedAnswer, ResolvedValue};
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;

use super::{skey, Relay};
use crate::dir::{head_end, Answer};
use crate::event::{is_internal, Event, ResolveError, StreamHandle, TargetError};

/// TTL sent with CONNECTED and RESOLVED addresses (C tor clips TTLs to 60 or 3600 s; it
/// sends the lower bucket for answers it did not cache).
const ANSWER_TTL: u32 = 60;

/// Longest host name a BEGIN or RESOLVE may carry (RFC 1035's 255 octets).
const MAX_HOSTNAME: usize = 255;

#[derive(Debug)]
pub(super) enum ExitState {
    /// A RESOLVE waiting for [`Relay::handle_resolved`].
    Resolve,
    /// A BEGIN whose host name is being resolved; then connect to `port`.
    Resolving { port: u16 },
    /// Waiting for the embedder's TCP connect.
    Connecting,
    /// Connected: data flows.
    Open,
    /// A BEGIN_DIR stream: the request so far, then the answer.
    Dir {
        request: Vec<u8>,
        answer: Option<Answer>,
    },
}

/// One stream ending here.
#[derive(Debug)]
pub(super) struct Exit {
    pub(super) circ: u64,
    pub(super) id: StreamId,
    pub(super) state: ExitState,
    /// From the client, for the target.
    to_target: VecDeque<Bytes>,
    to_target_len: usize,
    /// From the target, not yet taken by the circuit's windows.
    from_target: Vec<u8>,
    /// The target closed its side: END DONE once `from_target` is sent.
    target_eof: bool,
    /// `handle_target_data` took less than offered: send ResumeTarget when room is back.
    refused: bool,
    /// Resolve or connect deadline.
    pub(super) deadline: Option<Instant>,
}

impl Exit {
    /// Bytes buffered by this stream.
    pub(super) fn queued(&self) -> usize {
        self.to_target_len
            + self.from_target.len()
            + match &self.state {
                ExitState::Dir { request, .. } => request.len(),
                _ => 0,
            }
    }

    fn has_target(&self) -> bool {
        matches!(self.state, ExitState::Connecting | ExitState::Open)
    }
}

/// A BEGIN's host as an address, if it is one (`[v6]` or a dotted quad).
fn literal(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse().ok()
}

/// Whether `name` may be handed to a resolver: ASCII letters, digits, `-`, `_` and dots,
/// not `.onion` (an exit does not serve onion services, tor-spec §6.2).
fn resolvable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOSTNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !name
            .to_ascii_lowercase()
            .trim_end_matches('.')
            .ends_with(".onion")
}

impl Relay {
    fn new_handle(&mut self, k: u64, id: StreamId, state: ExitState) -> StreamHandle {
        let h = StreamHandle(self.next_stream);
        self.next_stream += 1;
        let deadline = match state {
            ExitState::Resolve | ExitState::Resolving { .. } => {
                self.now.checked_add(self.cfg.limits.resolve_timeout)
            }
            ExitState::Connecting => self.now.checked_add(self.cfg.limits.target_connect_timeout),
            _ => None,
        };
        self.streams.insert(
            h,
            Exit {
                circ: k,
                id,
                state,
                to_target: VecDeque::new(),
                to_target_len: 0,
                from_target: Vec::new(),
                target_eof: false,
                refused: false,
                deadline,
            },
        );
        self.by_stream.insert(skey(k, id), h);
        if let Some(c) = self.circs.get_mut(&k) {
            c.streams.insert(h);
        }
        h
    }

    /// End stream `id` of circuit `k` with `reason` (RELAY_END, tor-spec §6.3).
    fn end(&mut self, k: u64, id: StreamId, reason: EndReason) {
        if let Some(c) = self.circs.get_mut(&k) {
            let _ = c.rc.end_stream(id, reason);
            self.dirty.insert(k);
        }
    }

    /// END EXITPOLICY naming the refused address `ip` and its TTL (tor-spec §6.3). Without
    /// the address a C tor client takes the refusal as "this exit's policy is stricter than
    /// it published" and stops using the exit for every stream (relay.c,
    /// `adjust_exit_policy_from_exitpolicy_failure`: an unspecified address means reject
    /// all); with it, a client that knows the exit's policy only as a summary
    /// (microdescriptors) adds just that address to the circuit's refused ones, and one that
    /// asked by name learns what the name resolved to.
    fn end_policy(&mut self, k: u64, id: StreamId, ip: IpAddr) {
        if let Some(c) = self.circs.get_mut(&k) {
            let end = End {
                reason: EndReason::EXITPOLICY,
                exit_policy: Some(ExitPolicyAddr {
                    addr: ip,
                    ttl: ANSWER_TTL,
                }),
            };
            let _ = c.rc.end_stream_with(id, end);
            self.dirty.insert(k);
        }
    }

    /// Forget a stream; `tell`: the embedder holds a target connection to close.
    pub(super) fn forget_stream(&mut self, h: StreamHandle, tell: bool) {
        let Some(e) = self.streams.remove(&h) else {
            return;
        };
        self.by_stream.remove(&skey(e.circ, e.id));
        if let Some(c) = self.circs.get_mut(&e.circ) {
            c.streams.remove(&h);
            if c.held && e.to_target_len > 0 {
                c.held = false;
                self.dirty.insert(e.circ);
            }
        }
        if tell && e.has_target() {
            self.events.push_back(Event::CloseTarget { stream: h });
        }
    }

    /// Whether the exit policy (and the private-address rule) lets us connect to `ip:port`.
    fn allowed(&self, ip: IpAddr, port: u16) -> bool {
        let Some(p) = &self.cfg.exit_policy else {
            return false;
        };
        if self.cfg.exit_reject_private && (is_internal(ip) || self.cfg.addresses.contains(&ip)) {
            return false;
        }
        p.allows(ip, port)
    }

    fn streams_full(&self) -> bool {
        self.streams.len() >= self.cfg.limits.max_streams
    }

    /// BEGIN (tor-spec §6.2): check the exit policy, then resolve or connect.
    pub(super) fn begin(&mut self, k: u64, id: StreamId, host: String, port: u16) {
        if self.cfg.exit_policy.is_none() {
            return self.end(k, id, EndReason::EXITPOLICY);
        }
        if self.streams_full() {
            return self.end(k, id, EndReason::RESOURCELIMIT);
        }
        match literal(&host) {
            Some(ip) => {
                if !self.allowed(ip, port) {
                    return self.end_policy(k, id, ip);
                }
                let h = self.new_handle(k, id, ExitState::Connecting);
                self.events.push_back(Event::OpenTarget {
                    stream: h,
                    addr: SocketAddr::new(ip, port),
                });
            }
            None => {
                let could = self
                    .cfg
                    .exit_policy
                    .as_ref()
                    .is_some_and(|p| p.allows_port(port));
                if !could {
                    return self.end(k, id, EndReason::EXITPOLICY);
                }
                if !resolvable(&host) {
                    return self.end(k, id, EndReason::RESOLVEFAILED);
                }
                let h = self.new_handle(k, id, ExitState::Resolving { port });
                self.events.push_back(Event::Resolve {
                    request: h,
                    name: host,
                });
            }
        }
    }

    /// BEGIN_DIR (tor-spec §6.2.1): the directory cache answers, or END NOTDIRECTORY.
    pub(super) fn begin_dir(&mut self, k: u64, id: StreamId) {
        if !self.cfg.dir_cache && !self.cfg.hs_dir {
            return self.end(k, id, EndReason::NOTDIRECTORY);
        }
        if self.streams_full() {
            return self.end(k, id, EndReason::RESOURCELIMIT);
        }
        let Some(c) = self.circs.get_mut(&k) else {
            return;
        };
        if c.rc.connected(id, None).is_err() {
            return;
        }
        self.dirty.insert(k);
        self.new_handle(
            k,
            id,
            ExitState::Dir {
                request: Vec::new(),
                answer: None,
            },
        );
    }

    /// RESOLVE (tor-spec §6.4).
    pub(super) fn resolve(&mut self, k: u64, id: StreamId, query: String) {
        let answer = |v: ResolvedValue<'static>| {
            vec![ResolvedAnswer {
                value: v,
                ttl: ANSWER_TTL,
            }]
        };
        let direct = if self.cfg.exit_policy.is_none() {
            Some(answer(ResolvedValue::NontransientError(Vec::new().into())))
        } else if self.streams_full() {
            Some(answer(ResolvedValue::TransientError(Vec::new().into())))
        } else if let Some(ip) = literal(&query) {
            Some(answer(ResolvedValue::Ip(ip)))
        } else if !resolvable(&query) {
            Some(answer(ResolvedValue::NontransientError(Vec::new().into())))
        } else {
            None
        };
        match direct {
            Some(a) => {
                if let Some(c) = self.circs.get_mut(&k) {
                    let _ = c.rc.resolved(id, a);
                    self.dirty.insert(k);
                }
            }
            None => {
                let h = self.new_handle(k, id, ExitState::Resolve);
                self.events.push_back(Event::Resolve {
                    request: h,
                    name: query,
                });
            }
        }
    }

    /// Circuit `k` is held by a full stream buffer while cells still arrive on it: each such
    /// step decides XOFF again for every full stream, as C tor decides at every arrival
    /// (`flow_control_decide_xoff`), so that the grace period (proposal 324 §4.1.1, 5 ms in
    /// C tor 0.4.9) ends in an XOFF although the held cells never reach the buffer.
    /// Without it the client, never told to stop, would keep filling the circuit's queue.
    pub(super) fn recheck_full_streams(&mut self, k: u64) {
        let buf_limit = self.cfg.limits.stream_buffer;
        let xoff = usize::try_from(self.cfg.circuits.flow_control.xoff_exit_bytes())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let now = self.now;
        let Some(c) = self.circs.get_mut(&k) else {
            return;
        };
        for h in &c.streams {
            let Some(e) = self.streams.get(h) else {
                continue;
            };
            if e.to_target_len >= buf_limit {
                let _ =
                    c.rc.note_stream_buffer(now, e.id, 0, e.to_target_len.max(xoff));
            }
        }
    }

    /// DATA from the client on stream `id`.
    pub(super) fn stream_data(&mut self, k: u64, id: StreamId, data: Bytes) {
        let Some(&h) = self.by_stream.get(&skey(k, id)) else {
            return;
        };
        let max_req = self.cfg.limits.max_dir_request + self.hs_post_allowance();
        let max_resp = self.cfg.limits.max_dir_response;
        let (hs_on, anonymous, wall) =
            (self.cfg.hs_dir, !self.comes_from_client(k), self.wall_now());
        let buf_limit = self.cfg.limits.stream_buffer;
        let xoff = self.cfg.circuits.flow_control.xoff_exit_bytes();
        let now = self.now;
        let Some(e) = self.streams.get_mut(&h) else {
            return;
        };
        match &mut e.state {
            ExitState::Dir { request, answer } => {
                if answer.is_some() {
                    // HTTP/1.0: one request per stream; what follows is ignored.
                    return;
                }
                if request.len() + data.len() > max_req {
                    self.forget_stream(h, false);
                    return self.end(k, id, EndReason::RESOURCELIMIT);
                }
                request.extend_from_slice(&data);
                if let Some(end) = head_end(request) {
                    let hs = &mut self.hs;
                    let stats = &mut self.stats;
                    let report = match super::hs::dir_request(
                        hs, hs_on, request, end, anonymous, wall, stats,
                    ) {
                        super::hs::DirVerdict::NeedBody => return,
                        super::hs::DirVerdict::Answer(a) => {
                            let r = crate::dir::DirAnswered::of(&request[..end], &a, false);
                            *answer = Some(a);
                            r
                        }
                        super::hs::DirVerdict::NotOurs => {
                            let (a, r) = self.dir.answer_reported(&request[..end], max_resp);
                            *answer = Some(a);
                            r
                        }
                    };
                    *request = Vec::new();
                    self.dirty.insert(k);
                    self.events.push_back(Event::DirAnswered(report));
                }
            }
            ExitState::Resolve => {}
            ExitState::Resolving { .. } | ExitState::Connecting | ExitState::Open => {
                let was_empty = e.to_target_len == 0;
                e.to_target_len += data.len();
                e.to_target.push_back(data);
                let len = e.to_target_len;
                let open = matches!(e.state, ExitState::Open);
                // A full buffer holds the circuit's events. Under congestion control
                // (no stream windows) it is reported as above the XOFF threshold so that
                // XOFF stops the client at once and what is held stays within what was in
                // flight (proposal 324 §4.1.1).
                let reported = if len >= buf_limit {
                    len.max(
                        usize::try_from(xoff)
                            .unwrap_or(usize::MAX)
                            .saturating_add(1),
                    )
                } else {
                    len
                };
                if let Some(c) = self.circs.get_mut(&k) {
                    let _ = c.rc.note_stream_buffer(now, id, 0, reported);
                    if len >= buf_limit {
                        c.held = true;
                    }
                }
                if open && was_empty {
                    self.events.push_back(Event::TargetData { stream: h });
                }
            }
        }
    }

    /// The client ended stream `id` (RELAY_END), or the circuit closed.
    pub(super) fn client_ended(&mut self, k: u64, id: StreamId) {
        if let Some(&h) = self.by_stream.get(&skey(k, id)) {
            self.forget_stream(h, true);
        }
    }

    /// Circuit `k` closed: every stream goes.
    pub(super) fn drop_streams(&mut self, k: u64) {
        let hs: Vec<StreamHandle> = self
            .circs
            .get(&k)
            .map(|c| c.streams.iter().copied().collect())
            .unwrap_or_default();
        for h in hs {
            self.forget_stream(h, true);
        }
    }

    /// Move what a stream holds for the client into its circuit, as windows allow; end
    /// finished streams. Returns whether anything moved.
    pub(super) fn flush_stream(&mut self, h: StreamHandle) -> bool {
        let now = self.now;
        let half = self.cfg.limits.stream_buffer / 2;
        let Some(e) = self.streams.get_mut(&h) else {
            return false;
        };
        let Some(c) = self.circs.get_mut(&e.circ) else {
            return false;
        };
        let mut moved = false;
        match &mut e.state {
            ExitState::Dir {
                answer: Some(a), ..
            } => {
                while let Some(chunk) = a.next_chunk() {
                    let n =
                        c.rc.send_at_pooled(now, e.id, chunk, &mut self.bodies)
                            .unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    moved = true;
                    a.advance(n);
                }
                if a.done() {
                    let _ = c.rc.end_stream(e.id, EndReason::DONE);
                    self.forget_stream(h, false);
                    return true;
                }
            }
            ExitState::Open => {
                if !e.from_target.is_empty() {
                    let n =
                        c.rc.send_at_pooled(now, e.id, &e.from_target, &mut self.bodies)
                            .unwrap_or(0);
                    if n > 0 {
                        moved = true;
                        e.from_target.drain(..n);
                    }
                }
                if e.refused && e.from_target.len() <= half {
                    e.refused = false;
                    self.events.push_back(Event::ResumeTarget { stream: h });
                }
                if e.target_eof && e.from_target.is_empty() {
                    let _ = c.rc.end_stream(e.id, EndReason::DONE);
                    self.forget_stream(h, false);
                    return true;
                }
            }
            _ => {}
        }
        moved
    }

    /// Resolve and connect deadlines.
    pub(super) fn stream_timeouts(&mut self) {
        let now = self.now;
        let due: Vec<StreamHandle> = self
            .streams
            .iter()
            .filter(|(_, e)| e.deadline.is_some_and(|d| d <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            match self.streams.get(&h).map(|e| &e.state) {
                Some(ExitState::Resolve | ExitState::Resolving { .. }) => {
                    self.resolved(h, Err(ResolveError::Transient));
                }
                Some(ExitState::Connecting) => self.target_failed(h, TargetError::Timeout, true),
                _ => {}
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // The embedder's side.

    /// The answer to [`Event::Resolve`]: the addresses found, or why none.
    pub fn handle_resolved(
        &mut self,
        request: StreamHandle,
        now: Instant,
        answer: Result<Vec<IpAddr>, ResolveError>,
    ) {
        self.see(now);
        self.resolved(request, answer);
        self.settle();
    }

    fn resolved(&mut self, h: StreamHandle, answer: Result<Vec<IpAddr>, ResolveError>) {
        let Some(e) = self.streams.get(&h) else {
            return;
        };
        let (k, id) = (e.circ, e.id);
        match e.state {
            ExitState::Resolve => {
                let answers = match answer {
                    Ok(a) if !a.is_empty() => a
                        .into_iter()
                        .take(16)
                        .map(|ip| ResolvedAnswer {
                            value: ResolvedValue::Ip(ip),
                            ttl: ANSWER_TTL,
                        })
                        .collect(),
                    Ok(_) | Err(ResolveError::NotFound) => vec![ResolvedAnswer {
                        value: ResolvedValue::NontransientError(Vec::new().into()),
                        ttl: ANSWER_TTL,
                    }],
                    Err(_) => vec![ResolvedAnswer {
                        value: ResolvedValue::TransientError(Vec::new().into()),
                        ttl: ANSWER_TTL,
                    }],
                };
                self.forget_stream(h, false);
                if let Some(c) = self.circs.get_mut(&k) {
                    let _ = c.rc.resolved(id, answers);
                    self.dirty.insert(k);
                }
            }
            ExitState::Resolving { port } => {
                let addrs = match answer {
                    Ok(a) if !a.is_empty() => a,
                    _ => {
                        self.forget_stream(h, false);
                        return self.end(k, id, EndReason::RESOLVEFAILED);
                    }
                };
                let Some(ip) = addrs.iter().copied().find(|ip| self.allowed(*ip, port)) else {
                    self.forget_stream(h, false);
                    // The address a client would have used: the first IPv4 one, as C tor
                    // connects to the first answer of its resolver (IPv4 preferred).
                    return match addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                        Some(&refused) => self.end_policy(k, id, refused),
                        None => self.end(k, id, EndReason::EXITPOLICY),
                    };
                };
                let deadline = self.now.checked_add(self.cfg.limits.target_connect_timeout);
                if let Some(e) = self.streams.get_mut(&h) {
                    e.state = ExitState::Connecting;
                    e.deadline = deadline;
                }
                self.events.push_back(Event::OpenTarget {
                    stream: h,
                    addr: SocketAddr::new(ip, port),
                });
            }
            _ => {}
        }
    }

    /// The target of `stream` ([`Event::OpenTarget`]) is connected at `addr`: CONNECTED
    /// goes to the client (tor-spec §6.2) and data the client sent early is offered
    /// ([`Event::TargetData`]).
    pub fn handle_target_connected(
        &mut self,
        stream: StreamHandle,
        now: Instant,
        addr: SocketAddr,
    ) {
        self.see(now);
        let Some(e) = self.streams.get_mut(&stream) else {
            return;
        };
        if !matches!(e.state, ExitState::Connecting) {
            return;
        }
        e.state = ExitState::Open;
        e.deadline = None;
        let pending = e.to_target_len > 0;
        let (k, id) = (e.circ, e.id);
        if let Some(c) = self.circs.get_mut(&k) {
            let _ = c.rc.connected(id, Some((addr.ip(), ANSWER_TTL)));
            self.dirty.insert(k);
        }
        if pending {
            self.events.push_back(Event::TargetData { stream });
        }
        self.settle();
    }

    /// The target connection of `stream` failed (before or after connecting): END with the
    /// reason for `error` ([`TargetError::end_reason`]). The handle is forgotten.
    pub fn handle_target_failed(&mut self, stream: StreamHandle, now: Instant, error: TargetError) {
        self.see(now);
        self.target_failed(stream, error, false);
        self.settle();
    }

    fn target_failed(&mut self, h: StreamHandle, error: TargetError, tell: bool) {
        let Some(e) = self.streams.get(&h) else {
            return;
        };
        let (k, id) = (e.circ, e.id);
        self.forget_stream(h, tell);
        self.end(k, id, error.end_reason());
    }

    /// Bytes the target of `stream` sent. Returns how many were taken: fewer than offered
    /// once the stream holds [`crate::Limits::stream_buffer`] bytes the circuit's windows
    /// did not yet let out; keep the rest and offer it after [`Event::ResumeTarget`].
    pub fn handle_target_data(
        &mut self,
        stream: StreamHandle,
        now: Instant,
        bytes: &[u8],
    ) -> usize {
        self.see(now);
        let limit = self.cfg.limits.stream_buffer;
        let Some(e) = self.streams.get_mut(&stream) else {
            return 0;
        };
        if !matches!(e.state, ExitState::Open) || e.target_eof {
            return 0;
        }
        let room = limit.saturating_sub(e.from_target.len());
        let n = room.min(bytes.len());
        e.from_target.extend_from_slice(&bytes[..n]);
        if n < bytes.len() {
            e.refused = true;
        }
        self.flush_stream(stream);
        if let Some(e) = self.streams.get(&stream) {
            let k = e.circ;
            self.dirty.insert(k);
        }
        self.unchecked_bytes = self.unchecked_bytes.saturating_add(n);
        self.settle();
        n
    }

    /// The target closed its side of `stream`: END DONE once what it sent has gone out.
    pub fn handle_target_closed(&mut self, stream: StreamHandle, now: Instant) {
        self.see(now);
        let Some(e) = self.streams.get_mut(&stream) else {
            return;
        };
        if matches!(e.state, ExitState::Connecting) {
            return self.handle_target_failed(stream, now, TargetError::Refused);
        }
        e.target_eof = true;
        e.to_target.clear();
        e.to_target_len = 0;
        let k = e.circ;
        self.flush_stream(stream);
        self.dirty.insert(k);
        self.settle();
    }

    /// Takes at most `max` bytes the client sent on `stream` for its target, appending them
    /// to `out`; returns how many (0: nothing waits). Taking them makes room: stream
    /// SENDMEs (or XON) go back to the client as the buffer drains.
    pub fn target_transmit(
        &mut self,
        stream: StreamHandle,
        now: Instant,
        out: &mut Vec<u8>,
        max: usize,
    ) -> usize {
        self.see(now);
        let limit = self.cfg.limits.stream_buffer;
        let Some(e) = self.streams.get_mut(&stream) else {
            return 0;
        };
        if !matches!(e.state, ExitState::Open) {
            return 0;
        }
        let mut n = 0;
        while n < max {
            let Some(front) = e.to_target.front_mut() else {
                break;
            };
            let take = front.len().min(max - n);
            out.extend_from_slice(&front[..take]);
            n += take;
            if take == front.len() {
                e.to_target.pop_front();
            } else {
                *front = front.slice(take..);
            }
        }
        e.to_target_len -= n;
        let (k, id, left) = (e.circ, e.id, e.to_target_len);
        if n > 0 {
            if let Some(c) = self.circs.get_mut(&k) {
                let _ = c.rc.note_stream_buffer(self.now, id, n, left);
                if c.held && left < limit {
                    c.held = false;
                }
                self.dirty.insert(k);
            }
            self.settle();
        }
        n
    }
}
