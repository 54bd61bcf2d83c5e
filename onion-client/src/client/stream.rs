//! One application stream (or name resolution, or directory request): where it stands, the
//! circuit it runs on, and the bytes received for the application, bounded.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use onion_cell::relaymsg::{BeginFlags, EndReason, ResolvedAnswer, ResolvedValue};
use onion_circuit::stream::StreamId;
use onion_dir::http::MAX_HEAD_BYTES as MAX_HEAD;
use onion_dir::policy::ExitTarget;
use onion_dir::select::path::{Exclusions, ExitRequest, PathOptions};
use onion_dir::RsaIdentity;

use super::circ::{Circ, CircPhase, Purpose};
use super::config::Isolation;
use super::event::{Event, StreamHandle};
use super::{end_error, STREAM_ATTEMPTS};
use crate::dir::{decode_response, Failure, RequestId};
use crate::guards::LastHop;
use crate::{Error, Instant};

/// The most bytes a peer may legitimately have in flight toward a stream we just held,
/// beyond what we hold it at: one stream window plus one SENDME increment of full DATA cells
/// (tor-spec §7.4: 500 + 50 cells of 498 bytes; the increment covers a SENDME that crossed
/// the hold), or on a congestion-controlled circuit, which has no stream windows,
/// `xoff_in_flight` ([`crate::Limits::xoff_in_flight`]: the exit's own congestion window,
/// proposal 324 §4.1.1, which our window toward it says nothing about), at least as much.
pub(crate) fn in_flight_allowance(congestion_controlled: bool, xoff_in_flight: usize) -> usize {
    use onion_cell::relaymsg::MAX_RELAY_DATA_LEN;
    use onion_circuit::flow::{STREAM_WINDOW_INCREMENT, STREAM_WINDOW_START};
    let window = usize::from(STREAM_WINDOW_START + STREAM_WINDOW_INCREMENT)
        .saturating_mul(MAX_RELAY_DATA_LEN);
    match congestion_controlled {
        true => window.max(xoff_in_flight),
        false => window,
    }
}

/// The most exits remembered as refusing every stream ([`NotOpenEnd::RetryExitRefusesAll`]).
pub(crate) const MAX_REFUSING_EXITS: usize = 64;

/// What becomes of a stream the other edge ended before CONNECTED (or RESOLVED), by the END
/// reason: C tor's `connection_ap_process_end_not_open` and `edge_reason_is_retriable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotOpenEnd {
    /// TORPROTOCOL or DESTROY: the END may be an exit's answer to a cell tagged on the way
    /// (C tor's path-bias reasoning), so the circuit is closed; every stream on it ends
    /// with DESTROY.
    CloseCircuit,
    /// EXITPOLICY: tried on another circuit whose exit is not this one.
    RetryAvoidingExit,
    /// HIBERNATING, RESOURCELIMIT: the exit takes no stream at all; tried on another
    /// circuit, and the exit is used for no stream any more.
    RetryExitRefusesAll,
    /// RESOLVEFAILED, MISC (or an END without a reason), NOROUTE: tried on another circuit,
    /// and this one takes no new stream (C tor retries these while the address failed
    /// fewer than three times: [`STREAM_ATTEMPTS`] here).
    RetryCircuitUnusable,
    /// Any other reason (DONE, CONNECTREFUSED, TIMEOUT, INTERNAL, ...), or any reason but
    /// TORPROTOCOL and DESTROY on a stream that is not tried elsewhere (`retriable`
    /// false: an onion service's stream, a directory request): the stream ends with it.
    End,
}

/// The handling of an END received before CONNECTED (see [`NotOpenEnd`]).
pub(crate) fn end_not_open(reason: EndReason, retriable: bool) -> NotOpenEnd {
    match reason {
        EndReason::TORPROTOCOL | EndReason::DESTROY => NotOpenEnd::CloseCircuit,
        _ if !retriable => NotOpenEnd::End,
        EndReason::EXITPOLICY => NotOpenEnd::RetryAvoidingExit,
        EndReason::HIBERNATING | EndReason::RESOURCELIMIT => NotOpenEnd::RetryExitRefusesAll,
        EndReason::RESOLVEFAILED | EndReason::MISC | EndReason::NOROUTE => {
            NotOpenEnd::RetryCircuitUnusable
        }
        _ => NotOpenEnd::End,
    }
}

/// What a stream is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// RELAY_BEGIN to `host:port` (tor-spec §6.2).
    Exit { host: Box<str>, port: u16 },
    /// RELAY_RESOLVE of a name (tor-spec §6.4).
    Resolve { name: Box<str> },
    /// RELAY_BEGIN_DIR carrying one request of the directory machine (tor-spec §6.2.1),
    /// whose decoded response may be at most `max_body` bytes.
    Dir {
        req: RequestId,
        http: Box<[u8]>,
        max_body: usize,
        deadline: Instant,
    },
}

/// Where a stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a circuit (until `deadline`).
    Waiting { deadline: Instant },
    /// BEGIN / BEGIN_DIR / RESOLVE sent on its circuit; unanswered at `deadline`
    /// (an exit stream's attempt: [`attempt_timeout`] after it was sent; a stream to an
    /// onion service: `cfg.stream_timeout`) it is given up
    /// ([`super::Client::stream_timeouts`]; a directory request has its own deadline).
    Connecting { deadline: Instant },
    /// A hosted onion service's incoming stream (RELAY_BEGIN from the client) that the
    /// application has not accepted or rejected yet (`onion.rs`): no CONNECTED sent,
    /// writes refused; bytes the client sent early are kept for reading.
    Incoming,
    /// CONNECTED: data flows.
    Open,
    /// Ended by the other edge or a failure: only the buffered bytes and the ending remain.
    Ended,
}

/// One stream of the client.
#[derive(Debug)]
pub(crate) struct Stream {
    pub target: Target,
    pub isolation: Isolation,
    pub phase: Phase,
    /// Its circuit (key into the client's circuits) and id there, once attached; or the
    /// circuit being built that it waits for.
    pub circ: Option<u64>,
    pub id: Option<StreamId>,
    /// The exit the application named ([`crate::Client::connect_via`], path-spec §2.2.2):
    /// its circuits end there, whatever the relay's policy says, and carry only streams that
    /// name the same exit.
    pub exit: Option<RsaIdentity>,
    /// Circuit attempts that failed for it, and relays to leave out of its next paths.
    pub failures: u8,
    pub avoid: Vec<RsaIdentity>,
    /// Received bytes not yet read, oldest first, the first `skip` bytes of the front
    /// chunk already read.
    recv: VecDeque<Bytes>,
    skip: usize,
    len: usize,
    /// The stream's flow is held (`Circuit::hold_stream`) because `recv` is full.
    pub held: bool,
    /// How it ended: `Some(None)` cleanly, `Some(Some(e))` with an error.
    pub end: Option<Option<Box<Error>>>,
    /// The application called `shutdown_write`.
    pub write_closed: bool,
    /// The application was told the stream is readable and has not read since.
    pub readable_told: bool,
    /// A write took less than offered: tell the application when it would take more.
    pub want_writable: bool,
}

impl Stream {
    pub fn new(target: Target, isolation: Isolation, deadline: Instant) -> Stream {
        Stream {
            target,
            isolation,
            phase: Phase::Waiting { deadline },
            circ: None,
            id: None,
            exit: None,
            failures: 0,
            avoid: Vec::new(),
            recv: VecDeque::new(),
            skip: 0,
            len: 0,
            held: false,
            end: None,
            write_closed: false,
            readable_told: false,
            want_writable: false,
        }
    }

    /// The port an exit must allow, for an exit stream.
    pub fn port(&self) -> Option<u16> {
        match &self.target {
            Target::Exit { port, .. } => Some(*port),
            _ => None,
        }
    }

    /// Bytes received and not yet read.
    pub fn buffered(&self) -> usize {
        self.len
    }

    /// Keep `data` for the application.
    pub fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.recv.push_back(data);
    }

    /// Copy up to `buf.len()` received bytes into `buf`; returns how many.
    pub fn take(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.recv.front() else {
                break;
            };
            let avail = &front[self.skip..];
            let k = avail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&avail[..k]);
            n += k;
            self.skip += k;
            if self.skip == front.len() {
                self.recv.pop_front();
                self.skip = 0;
            }
        }
        self.len -= n;
        if self.recv.is_empty() && self.recv.capacity() > 8 {
            self.recv = VecDeque::new();
        }
        n
    }

    /// Everything received, in one buffer (a directory response).
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for (i, c) in self.recv.drain(..).enumerate() {
            out.extend_from_slice(if i == 0 { &c[self.skip..] } else { &c[..] });
        }
        self.skip = 0;
        self.len = 0;
        out
    }
}

impl super::Client {
    /// Give every waiting stream a circuit: an open one that fits it, else one being built
    /// that will, else a new one (when limits allow; otherwise it waits). Streams past their
    /// deadline end with TIMEOUT.
    pub(super) fn attach_streams(&mut self) {
        let now = self.now;
        let waiting: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Waiting { .. }))
            .map(|(h, _)| *h)
            .collect();
        for h in waiting {
            let Some(s) = self.streams.get(&h) else {
                continue;
            };
            let Phase::Waiting { deadline } = s.phase else {
                continue;
            };
            if deadline <= now {
                self.end_stream(h, Some(Error::StreamEnded(EndReason::TIMEOUT)));
                continue;
            }
            // A stream to an onion service waits for its rendezvous circuit (`onion.rs`).
            if matches!(&s.target, Target::Exit { host, .. } if crate::hs::is_onion(host)) {
                continue;
            }
            // A stream bound to a circuit (a directory request; or one waiting for the
            // circuit launched for it) waits for that one while it is being built.
            if let Some(key) = s.circ {
                match self.circs.get(&key).map(|c| (c.phase, c.timed_out)) {
                    Some((_, true)) if !matches!(s.target, Target::Dir { .. }) => {}
                    Some((CircPhase::Open, _)) => {
                        let pinned = matches!(s.target, Target::Dir { .. });
                        if pinned || self.circ_fits(key, h) {
                            self.begin_on(h, key);
                            continue;
                        }
                    }
                    Some(_) => continue,
                    None => {}
                }
                if matches!(s.target, Target::Dir { .. }) {
                    continue;
                }
            }
            if self.dir.directory().is_none() {
                continue;
            }
            let open = self
                .circs
                .iter()
                .filter(|(_, c)| c.phase == CircPhase::Open)
                .map(|(k, _)| *k)
                .find(|k| self.circ_fits(*k, h));
            if let Some(key) = open {
                self.begin_on(h, key);
                continue;
            }
            let building = self
                .circs
                .iter()
                .filter(|(_, c)| {
                    matches!(c.phase, CircPhase::AwaitChannel | CircPhase::Building) && !c.timed_out
                })
                .map(|(k, _)| *k)
                .find(|k| self.circ_fits(*k, h));
            if let Some(key) = building {
                if let Some(s) = self.streams.get_mut(&h) {
                    s.circ = Some(key);
                }
                continue;
            }
            self.launch_for(h);
        }
    }

    /// Whether circuit `key` may carry stream `h`.
    fn circ_fits(&self, key: u64, h: u64) -> bool {
        let (Some(c), Some(s)) = (self.circs.get(&key), self.streams.get(&h)) else {
            return false;
        };
        let dir = self.dir.directory().map(|d| &**d);
        let max = self.cfg.limits.max_streams_per_circuit;
        let dirty = self.cfg.max_circuit_dirtiness;
        if c.unusable
            || s.avoid
                .iter()
                .any(|a| c.path.iter().any(|p| p.rsa_id == *a))
        {
            return false;
        }
        // An exit that refused every stream is used no more (a named one excepted: the
        // application chose it).
        if s.exit.is_none() && c.exit().is_some_and(|x| self.refusing_exits.contains(&x)) {
            return false;
        }
        // A stream to a long-lived port needs a stable circuit (path-spec §2.2; C tor's
        // `circuit_is_acceptable` takes only circuits built with `need_uptime` for it): one
        // built from Stable relays.
        let long_lived = s
            .port()
            .is_some_and(|p| self.cfg.path.long_lived_ports.contains(&p));
        if long_lived && !(c.stable || super::preempt::path_stable(self.dir.directory(), c)) {
            return false;
        }
        // A named exit's circuits are for the streams naming it (path-spec §2.2.2), and
        // only for them: its policy is not consulted, the application chose it.
        if c.named_exit != s.exit {
            return false;
        }
        if c.named_exit.is_some() {
            let port = s.port().unwrap_or(0);
            return c.fits(s.isolation, port, None, self.now, dirty, max)
                || (c.purpose == Purpose::General
                    && c.isolation.map_or(true, |i| i == s.isolation)
                    && c.streams.len() < max
                    && c.dirty_since
                        .map_or(true, |d| self.now.saturating_duration_since(d) < dirty));
        }
        match s.port() {
            Some(port) => c.fits(s.isolation, port, dir, self.now, dirty, max),
            // A resolve goes to any exit circuit of its isolation.
            None => {
                c.fits(s.isolation, 0, None, self.now, dirty, max) || {
                    c.purpose == Purpose::General
                        && !c.internal
                        && c.isolation.map_or(true, |i| i == s.isolation)
                        && c.streams.len() < max
                        && c.dirty_since
                            .map_or(true, |d| self.now.saturating_duration_since(d) < dirty)
                }
            }
        }
    }

    /// Launch an exit circuit for stream `h` (path-spec §2.2: an exit that allows its port).
    fn launch_for(&mut self, h: u64) {
        let Some(s) = self.streams.get(&h) else {
            return;
        };
        let Some(dir) = self.dir.directory().cloned() else {
            return;
        };
        let request = match s.port() {
            Some(port) => ExitRequest::Target(ExitTarget::Port(port)),
            None => ExitRequest::Any,
        };
        let isolation = s.isolation;
        let named = s.exit;
        // Exits that refused every stream are left out, unless the application named the
        // exit or the relay is a primary guard (exclusions hold for every position).
        let primary = self.guards.primary();
        let refusing = self
            .refusing_exits
            .iter()
            .filter(|x| named.is_none() && !primary.contains(x));
        let exclude = Exclusions::from_ids(
            &dir.view,
            s.avoid
                .iter()
                .filter(|a| Some(**a) != named)
                .chain(refusing),
        );
        let opts = PathOptions {
            exclude: &exclude,
            ..PathOptions::default()
        };
        let wall = self.wall_now();
        let path = match named {
            // path-spec §2.2.2: the path ends at the named relay whatever its policy
            // (summary) says, as C tor's ExitNodes with one relay; guard and middle are
            // chosen as for an internal path to it, so they avoid its family and /16.
            Some(exit) => {
                self.guards
                    .internal_path(&dir, 3, LastHop::Relay(exit), &opts, wall, &mut self.rng)
            }
            None => self
                .guards
                .exit_path(&dir, request, 3, &opts, wall, &mut self.rng),
        };
        let planned =
            path.and_then(|p| self.launch(p.hops, Some(p.ticket), Purpose::General, false));
        match planned {
            Ok(key) => {
                if let Some(c) = self.circs.get_mut(&key) {
                    c.isolation = Some(isolation);
                    c.named_exit = named;
                }
                if let Some(s) = self.streams.get_mut(&h) {
                    s.circ = Some(key);
                }
            }
            // No room now: the stream waits for a circuit to finish or close.
            Err(e) if e.kind() == crate::ErrorKind::Resource => {}
            Err(e) => self.end_stream(h, Some(e)),
        }
    }

    /// Send stream `h`'s BEGIN, BEGIN_DIR or RESOLVE on circuit `key`.
    fn begin_on(&mut self, h: u64, key: u64) {
        let now = self.now;
        let (Some(s), Some(c)) = (self.streams.get_mut(&h), self.circs.get_mut(&key)) else {
            return;
        };
        let Some(m) = c.circ.as_mut() else {
            return;
        };
        let r = match &s.target {
            Target::Exit { host, port } => m.begin(host, *port, BeginFlags::default(), now),
            Target::Resolve { name } => m.resolve(name, now),
            Target::Dir { .. } => m.begin_dir(now),
        };
        let wait = match &s.target {
            Target::Exit { host, .. } if crate::hs::is_onion(host) => self.cfg.stream_timeout,
            Target::Dir { .. } => self.cfg.stream_timeout,
            _ => attempt_timeout(&self.cfg, s.failures),
        };
        match r {
            Ok(id) => {
                s.id = Some(id);
                s.circ = Some(key);
                s.phase = Phase::Connecting {
                    deadline: now + wait,
                };
                c.attach(id, h, s.isolation, now);
            }
            Err(e) => {
                s.circ = None;
                self.end_stream(h, Some(Error::Circuit(e)));
            }
        }
    }

    /// The stream of `id` on circuit `key`, if any.
    fn stream_of(&self, key: u64, id: StreamId) -> Option<u64> {
        self.circs.get(&key)?.streams.get(&id.get()).copied()
    }

    /// RELAY_CONNECTED: the stream is open; a directory stream sends its request.
    pub(super) fn stream_connected(&mut self, key: u64, id: StreamId) {
        let Some(h) = self.stream_of(key, id) else {
            return;
        };
        let Some(s) = self.streams.get_mut(&h) else {
            return;
        };
        if !matches!(s.phase, Phase::Connecting { .. }) {
            return;
        }
        s.phase = Phase::Open;
        match &s.target {
            Target::Dir { http, req, .. } => {
                let req = *req;
                let m = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut());
                let sent = m.map(|m| m.send(id, http));
                if !matches!(sent, Some(Ok(n)) if n == http.len()) {
                    self.drop_stream(h, true);
                    let e = Failure::Network("directory request not sent".into());
                    self.dir_answer(req, Err(e));
                }
            }
            _ => self.emit(Event::StreamOpened {
                stream: StreamHandle(h),
            }),
        }
    }

    /// Bytes arrived for a stream: kept for the application (held once the buffer is
    /// full), or for the directory machine (at most the request's size).
    pub(super) fn stream_data(&mut self, key: u64, id: StreamId, data: Bytes) {
        let Some(h) = self.stream_of(key, id) else {
            return;
        };
        let limit = self.cfg.limits.stream_recv_buffer;
        let Some(s) = self.streams.get_mut(&h) else {
            return;
        };
        if s.end.is_some() {
            return;
        }
        s.push(data);
        if let Target::Dir { max_body, .. } = s.target {
            if s.buffered() > max_body.saturating_add(MAX_HEAD) {
                let req = match &s.target {
                    Target::Dir { req, .. } => *req,
                    _ => return,
                };
                self.drop_stream(h, true);
                self.dir_answer(req, Err(Failure::TooLarge));
            }
            return;
        }
        if !s.readable_told {
            s.readable_told = true;
            self.emit(Event::StreamReadable {
                stream: StreamHandle(h),
            });
        }
        let Some(s) = self.streams.get_mut(&h) else {
            return;
        };
        if s.buffered() >= limit && !s.held {
            s.held = true;
            if let Some(m) = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut()) {
                m.hold_stream(id, true);
            }
        }
        // The hard bound: a held stream takes what the peer may have in flight when it was
        // held, and nothing beyond (a peer past it ignores the windows or XOFF).
        let cc = self
            .circs
            .get(&key)
            .and_then(|c| c.circ.as_ref())
            .and_then(|m| m.congestion_control(m.n_hops().checked_sub(1)?))
            .is_some();
        let cap = limit.saturating_add(in_flight_allowance(cc, self.cfg.limits.xoff_in_flight));
        if self.streams.get(&h).is_some_and(|s| s.buffered() > cap) {
            if let Some(m) = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut()) {
                let _ = m.close_stream(id);
            }
            self.end_stream(
                h,
                Some(Error::Violation(
                    "more data on a held stream than its window or XOFF allow",
                )),
            );
        }
    }

    /// RELAY_END for a stream (or the circuit's own end of it: DESTROY as its circuit goes,
    /// TIMEOUT from its backstop expiry, both handled as C tor does).
    ///
    /// Before CONNECTED (or RESOLVED) the reason decides, as C tor's
    /// `connection_ap_process_end_not_open` does ([`end_not_open`]): the circuit is closed,
    /// or the stream is tried on another circuit, or it ends with the reason.
    pub(super) fn stream_ended(&mut self, key: u64, id: StreamId, reason: EndReason) {
        let Some(h) = self.stream_of(key, id) else {
            return;
        };
        if let Some(c) = self.circs.get_mut(&key) {
            c.streams.remove(&id.get());
            if c.streams.is_empty() {
                c.idle_since = self.now;
            }
        }
        let Some(s) = self.streams.get_mut(&h) else {
            return;
        };
        s.id = None;
        if !matches!(s.phase, Phase::Connecting { .. }) {
            self.end_stream(h, end_error(reason));
            return;
        }
        // A stream to an onion service is never tried elsewhere: its other end is the
        // service itself, whatever circuit carries it (C tor retries only when
        // `!connection_edge_is_rendezvous_stream`); nor is a directory request, which the
        // directory machine retries itself.
        let retriable = match &s.target {
            Target::Exit { host, .. } => !crate::hs::is_onion(host),
            Target::Resolve { .. } => true,
            Target::Dir { .. } => false,
        };
        let exit = self.circs.get(&key).and_then(Circ::exit);
        match end_not_open(reason, retriable) {
            NotOpenEnd::CloseCircuit => {
                // The stream goes with its circuit, as every stream on it (C tor's
                // `connection_edge_destroy`: DESTROY).
                self.end_stream(h, Some(Error::StreamEnded(EndReason::DESTROY)));
                if let Some(m) = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut()) {
                    m.destroy();
                }
                let why = Error::Violation("END TORPROTOCOL or DESTROY before CONNECTED");
                self.fail_circ(key, why, true);
            }
            NotOpenEnd::RetryAvoidingExit => self.retry_stream(h, exit, end_error(reason)),
            NotOpenEnd::RetryExitRefusesAll => {
                if let Some(x) =
                    exit.filter(|x| Some(*x) != self.streams.get(&h).and_then(|s| s.exit))
                {
                    self.note_refusing_exit(x);
                }
                self.retry_stream(h, exit, end_error(reason));
            }
            NotOpenEnd::RetryCircuitUnusable => {
                if let Some(c) = self.circs.get_mut(&key) {
                    c.unusable = true;
                }
                self.retry_stream(h, None, end_error(reason));
            }
            // DONE before CONNECTED is a refusal, not a clean end (C tor's client answers
            // its SOCKS application "connection refused",
            // `stream_end_reason_to_socks5_response`): an onion service sends it for a port
            // it does not serve.
            NotOpenEnd::End => self.end_stream(h, Some(Error::StreamEnded(reason))),
        }
    }

    /// Remember that exit `x` refuses every stream (END HIBERNATING or RESOURCELIMIT): no
    /// stream is attached to its circuits any more, as C tor marks the relay's exit policy
    /// `reject *:*` for the rest of its run (`policies_set_node_exitpolicy_to_reject_all`).
    /// New exit paths leave it out (`launch_for`), unless it is a primary guard: path
    /// exclusions hold for every position, and a guard must stay one. At most
    /// [`MAX_REFUSING_EXITS`] are kept, the oldest forgotten first.
    fn note_refusing_exit(&mut self, x: RsaIdentity) {
        if self.refusing_exits.contains(&x) {
            return;
        }
        if self.refusing_exits.len() >= MAX_REFUSING_EXITS {
            self.refusing_exits.pop_front();
        }
        self.refusing_exits.push_back(x);
    }

    /// RELAY_RESOLVED for a resolve.
    pub(super) fn stream_resolved(
        &mut self,
        key: u64,
        id: StreamId,
        answers: Vec<ResolvedAnswer<'static>>,
    ) {
        let Some(h) = self.stream_of(key, id) else {
            return;
        };
        if let Some(c) = self.circs.get_mut(&key) {
            c.streams.remove(&id.get());
        }
        self.streams.remove(&h);
        let ips: Vec<IpAddr> = answers
            .iter()
            .filter_map(|a| match a.value {
                ResolvedValue::Ip(ip) => Some(ip),
                _ => None,
            })
            .collect();
        let answers = match ips.is_empty() {
            true => Err(Error::StreamEnded(EndReason::RESOLVEFAILED)),
            false => Ok(ips),
        };
        self.emit(Event::Resolved {
            request: StreamHandle(h),
            answers,
        });
    }

    /// The circuit of stream `h` failed (`failed_hop` the relay blamed, if any): a stream
    /// waiting for it tries another circuit (or ends after [`STREAM_ATTEMPTS`]); a stream on
    /// it ends with DESTROY.
    pub(super) fn stream_lost_circuit(
        &mut self,
        h: u64,
        why: &Error,
        failed_hop: Option<RsaIdentity>,
    ) {
        let Some(s) = self.streams.get(&h) else {
            return;
        };
        match (&s.target, s.phase) {
            (Target::Dir { req, .. }, _) => {
                let req = *req;
                self.streams.remove(&h);
                self.dir_answer(req, Err(Failure::Network(why.to_string())));
            }
            // Not yet on it (waiting for it to be built): another circuit will do.
            (_, Phase::Waiting { .. }) => self.retry_stream(h, failed_hop, Some(why.clone())),
            // On it: the stream goes with it, before CONNECTED as after (C tor's
            // `circuit_about_to_free` → `connection_edge_destroy` on every stream of an
            // origin circuit: closed with DESTROY, not tried elsewhere).
            (_, Phase::Connecting { .. } | Phase::Open | Phase::Incoming) => {
                self.end_stream(h, Some(Error::StreamEnded(EndReason::DESTROY)))
            }
            (_, Phase::Ended) => {}
        }
    }

    /// Put stream `h` back to waiting, leaving out `avoid`; end it with `why` after
    /// [`STREAM_ATTEMPTS`] failures.
    fn retry_stream(&mut self, h: u64, avoid: Option<RsaIdentity>, why: Option<Error>) {
        let Some(s) = self.streams.get_mut(&h) else {
            return;
        };
        s.failures = s.failures.saturating_add(1);
        s.circ = None;
        s.id = None;
        if s.failures >= STREAM_ATTEMPTS {
            let e = why.unwrap_or(Error::StreamEnded(EndReason::MISC));
            self.end_stream(h, Some(e));
            return;
        }
        // A named exit is kept on retries: only the rest of the path changes.
        if let Some(a) = avoid.filter(|a| Some(*a) != s.exit) {
            if s.avoid.len() < usize::from(STREAM_ATTEMPTS) {
                s.avoid.push(a);
            }
        }
        let deadline = match s.phase {
            Phase::Waiting { deadline } => deadline,
            _ => self.now + self.cfg.stream_timeout,
        };
        s.phase = Phase::Waiting { deadline };
    }

    /// Stream `h` ended (`None`: cleanly). An application stream keeps its unread bytes and
    /// the end for [`crate::Client::read`]; a resolve reports; a directory request hands its
    /// response to the directory machine.
    pub(super) fn end_stream(&mut self, h: u64, why: Option<Error>) {
        let Some(s) = self.streams.get_mut(&h) else {
            return;
        };
        if let (Some(key), Some(id)) = (s.circ, s.id) {
            if let Some(c) = self.circs.get_mut(&key) {
                c.streams.remove(&id.get());
                if c.streams.is_empty() {
                    c.idle_since = self.now;
                }
            }
        }
        s.id = None;
        match &s.target {
            Target::Dir { req, max_body, .. } => {
                let (req, max) = (*req, *max_body);
                let answer = match why {
                    None => decode_response(&s.take_all(), max),
                    Some(e) => Err(Failure::Network(e.to_string())),
                };
                self.streams.remove(&h);
                self.dir_answer(req, answer);
            }
            Target::Resolve { .. } => {
                self.streams.remove(&h);
                let e = why.unwrap_or(Error::StreamEnded(EndReason::RESOLVEFAILED));
                self.emit(Event::Resolved {
                    request: StreamHandle(h),
                    answers: Err(e),
                });
            }
            Target::Exit { .. } => {
                s.phase = Phase::Ended;
                s.end = Some(why.clone().map(Box::new));
                s.held = false;
                self.emit(Event::StreamClosed {
                    stream: StreamHandle(h),
                    error: why,
                });
            }
        }
    }

    /// Forget stream `h`; with `send_end`, an open or connecting stream gets RELAY_END.
    pub(super) fn drop_stream(&mut self, h: u64, send_end: bool) {
        let Some(s) = self.streams.remove(&h) else {
            return;
        };
        let (Some(key), Some(id)) = (s.circ, s.id) else {
            return;
        };
        if let Some(c) = self.circs.get_mut(&key) {
            c.streams.remove(&id.get());
            if c.streams.is_empty() {
                c.idle_since = self.now;
            }
            // tor-spec §6.3: an OP tells the exit nothing about why its own stream ends
            // (MISC, as C tor rewrites every reason on client circuits); the edge of a hosted
            // onion service's stream ends it as C tor's service does, DONE.
            let reason = match c.purpose {
                Purpose::ServiceRend => EndReason::DONE,
                _ => EndReason::MISC,
            };
            if let (true, Some(m)) = (send_end, c.circ.as_mut()) {
                let _ = m.close_stream_with(id, reason);
            }
        }
    }

    /// Directory requests past their deadline are dropped (the directory machine has
    /// timed them out itself). A BEGIN or RESOLVE unanswered at its deadline is
    /// given up as C tor's `connection_ap_expire_beginning` does: END to the exit (MISC, as
    /// a client says for its own streams), its circuit takes no new stream, and the stream
    /// is tried on another circuit (after [`STREAM_ATTEMPTS`] it ends with TIMEOUT); a
    /// stream to an onion service ends with TIMEOUT.
    pub(super) fn stream_timeouts(&mut self) {
        let now = self.now;
        let unanswered: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                !matches!(s.target, Target::Dir { .. })
                    && matches!(s.phase, Phase::Connecting { deadline } if deadline <= now)
            })
            .map(|(h, _)| *h)
            .collect();
        for h in unanswered {
            let Some(s) = self.streams.get_mut(&h) else {
                continue;
            };
            let (key, id) = (s.circ, s.id.take());
            let onion = matches!(&s.target, Target::Exit { host, .. } if crate::hs::is_onion(host));
            if let Some(c) = key.and_then(|k| self.circs.get_mut(&k)) {
                if let Some(id) = id {
                    c.streams.remove(&id.get());
                    if let Some(m) = c.circ.as_mut() {
                        let _ = m.close_stream(id);
                    }
                }
                if c.streams.is_empty() {
                    c.idle_since = now;
                }
                if !onion {
                    c.unusable = true;
                }
            }
            let e = Error::StreamEnded(EndReason::TIMEOUT);
            match onion {
                true => self.end_stream(h, Some(e)),
                false => self.retry_stream(h, None, Some(e)),
            }
        }
        let late: Vec<(u64, RequestId)> = self
            .streams
            .iter()
            .filter_map(|(h, s)| match s.target {
                Target::Dir { req, deadline, .. } if deadline <= now => Some((*h, req)),
                _ => None,
            })
            .collect();
        for (h, req) in late {
            self.drop_stream(h, true);
            self.dir_answer(req, Err(Failure::Timeout));
        }
    }

    /// Tell streams whose write was cut short that their windows opened again.
    pub(super) fn tell_writable(&mut self) {
        let mut ready = Vec::new();
        for (h, s) in self.streams.iter_mut().filter(|(_, s)| s.want_writable) {
            let (Some(key), Some(id)) = (s.circ, s.id) else {
                continue;
            };
            let cap = self
                .circs
                .get(&key)
                .and_then(|c| c.circ.as_ref())
                .map_or(0, |m| m.send_capacity(id));
            if cap > 0 {
                s.want_writable = false;
                ready.push(*h);
            }
        }
        for h in ready {
            self.emit(Event::StreamWritable {
                stream: StreamHandle(h),
            });
        }
    }
}

/// How long attempt number `failures` (0 for the first) of an exit stream waits for CONNECTED
/// or RESOLVED before it is given up and tried elsewhere: C tor's `compute_retry_timeout`
/// (`CircuitStreamTimeout` when set, else 10 s for the first two attempts and 15 s after),
/// never more than the whole stream timeout.
pub(super) fn attempt_timeout(cfg: &super::ClientConfig, failures: u8) -> Duration {
    let t = cfg.stream_attempt_timeout.unwrap_or(match failures {
        0 | 1 => Duration::from_secs(10),
        _ => Duration::from_secs(15),
    });
    t.min(cfg.stream_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_stream_takes_a_window_and_an_increment_in_flight() {
        // Fixed windows: 550 cells of 498 bytes, whatever the configured XOFF allowance.
        assert_eq!(in_flight_allowance(false, 8 << 20), 550 * 498);
        // Congestion control: the exit's window, bounded by the limit, never below a window.
        assert_eq!(in_flight_allowance(true, 8 << 20), 8 << 20);
        assert_eq!(in_flight_allowance(true, 0), 550 * 498);
    }

    #[test]
    fn receive_buffer_reads_across_chunks() {
        let mut s = Stream::new(
            Target::Resolve { name: "x".into() },
            Isolation::NONE,
            Instant::ZERO,
        );
        s.push(Bytes::from_static(b"hello "));
        s.push(Bytes::new());
        s.push(Bytes::from_static(b"world"));
        assert_eq!(s.buffered(), 11);
        let mut buf = [0u8; 4];
        assert_eq!(s.take(&mut buf), 4);
        assert_eq!(&buf, b"hell");
        assert_eq!(s.buffered(), 7);
        assert_eq!(s.take_all(), b"o world");
        assert_eq!(s.take(&mut buf), 0);
    }
}
