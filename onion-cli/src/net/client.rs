//! The client run loop: channels, circuits and streams driven over real sockets.
//!
//! [`Client`] owns every state machine. [`Client::step`] is one turn of the loop described in
//! the [module documentation](super): wait for one input (or the earliest timeout), feed it,
//! route channel cells to their circuits, then drain every circuit's cells into its channel
//! and every channel's bytes into TLS. The blocking helpers ([`Client::connect`],
//! [`Client::create`], [`Client::extend`], [`Client::begin`], [`Client::fetch`]) just call
//! `step` until what they wait for has happened or their deadline passed: every network
//! wait is bounded.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use onion_cell::relaymsg::{BeginFlags, EndReason, RelayMsg};
use onion_cell::CircId;
use onion_circuit::channel::{ChanEvent, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use rand_core::OsRng;

use super::event::{Inbox, Input};
use super::guards::Guards;
use super::link::Link;
use super::Clock;

/// A circuit and where it lives.
pub struct Circ {
    /// Index of its channel in the client's links.
    pub link: usize,
    /// Its id on that channel.
    pub id: CircId,
    /// The state machine.
    pub circ: Circuit,
    /// Events not yet taken by the application.
    pub events: VecDeque<CircEvent>,
    /// Why it can no longer be used, once it cannot.
    pub dead: Option<String>,
    /// Leave the circuit's events in the machine: an application that cannot take more data
    /// sets it, so no stream SENDME goes out for data it has not taken (tor-spec §7.4) and
    /// the exit stops. A closed circuit then shows as `circ.is_closed()`, not as `dead`.
    pub hold: bool,
}

/// What a stream to open is for.
pub enum Target<'a> {
    /// RELAY_BEGIN to `host:port` at the exit.
    Exit(&'a str, u16),
    /// RELAY_BEGIN_DIR to the last hop's directory service.
    Dir,
}

/// All the machines of one client, and the loop that drives them.
pub struct Client {
    /// The clock handed to the machines.
    pub clock: Clock,
    inbox: Inbox,
    rng: OsRng,
    links: Vec<Link>,
    link_open: Vec<bool>,
    link_dead: Vec<Option<String>>,
    /// The circuits, by index.
    pub circs: Vec<Circ>,
    /// Inputs for sockets that are not channels (SOCKS clients), kept for the application.
    others: VecDeque<Input>,
    /// The entry guards of every circuit this client builds.
    pub guards: Guards,
}

impl Client {
    /// A client with no connections.
    pub fn new() -> Client {
        Client {
            clock: Clock::new(),
            inbox: Inbox::new(),
            rng: OsRng,
            links: Vec::new(),
            link_open: Vec::new(),
            link_dead: Vec::new(),
            circs: Vec::new(),
            others: VecDeque::new(),
            guards: Guards::default(),
        }
    }

    /// The deadline `d` from now.
    pub fn deadline(&self, d: Duration) -> Instant {
        self.clock.now() + d
    }

    /// The inbox, to register more sockets (SOCKS clients) with the same loop.
    pub fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    /// Open a channel to `addr`, which must prove `ids`; returns its index.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        ids: PeerIds,
        deadline: Instant,
    ) -> Result<usize, String> {
        let timeout = self.clock.until(deadline).max(Duration::from_secs(1));
        let link = Link::connect(&mut self.inbox, &self.clock, addr, ids, timeout)?;
        self.links.push(link);
        self.link_open.push(false);
        self.link_dead.push(None);
        let idx = self.links.len() - 1;
        loop {
            self.dispatch();
            if let Some(e) = &self.link_dead[idx] {
                return Err(e.clone());
            }
            if self.link_open[idx] {
                return Ok(idx);
            }
            self.step(deadline)
                .map_err(|e| format!("{addr}: link handshake: {e}"))?;
        }
    }

    /// Create a one-hop circuit to the relay at the far end of channel `link`.
    pub fn create(
        &mut self,
        link: usize,
        first: &HopTarget,
        kind: HandshakeKind,
        deadline: Instant,
    ) -> Result<usize, String> {
        let l = self.links.get_mut(link).ok_or("no such channel")?;
        let id = l
            .chan
            .new_circ_id(&mut self.rng)
            .map_err(|e| format!("circuit id: {e}"))?;
        let config = CircConfig {
            build_timeout: self.clock.until(deadline).max(Duration::from_secs(1)),
            ..CircConfig::default()
        };
        let (circ, create) = Circuit::create(config, first, kind, self.clock.now(), &mut self.rng)
            .map_err(|e| format!("create: {e}"))?;
        l.chan
            .send(id, &create)
            .map_err(|e| format!("create: {e}"))?;
        l.pump(&self.clock)?;
        self.circs.push(Circ {
            link,
            id,
            circ,
            events: VecDeque::new(),
            dead: None,
            hold: false,
        });
        let c = self.circs.len() - 1;
        self.wait_hops(c, 1, deadline)?;
        Ok(c)
    }

    /// Extend circuit `c` by one hop.
    pub fn extend(&mut self, c: usize, hop: &HopTarget, deadline: Instant) -> Result<(), String> {
        let circ = self.circs.get_mut(c).ok_or("no such circuit")?;
        let want = circ.circ.n_hops() + 1;
        circ.circ
            .extend(hop, self.clock.now(), &mut self.rng)
            .map_err(|e| format!("extend: {e}"))?;
        self.wait_hops(c, want, deadline)
    }

    fn wait_hops(&mut self, c: usize, hops: usize, deadline: Instant) -> Result<(), String> {
        loop {
            if self
                .take_event(
                    c,
                    |e| matches!(e, CircEvent::HopAdded { hops: h } if *h >= hops),
                )
                .is_some()
            {
                return Ok(());
            }
            self.check_alive(c)?;
            self.step(deadline)
                .map_err(|e| format!("building hop {hops}: {e}"))?;
        }
    }

    /// Open a stream on circuit `c`; waits for RELAY_CONNECTED.
    pub fn begin(
        &mut self,
        c: usize,
        target: Target<'_>,
        deadline: Instant,
    ) -> Result<StreamId, BeginError> {
        let now = self.clock.now();
        let circ = &mut self
            .circs
            .get_mut(c)
            .ok_or_else(|| BeginError::Failed("no such circuit".into()))?
            .circ;
        let s = match target {
            Target::Exit(host, port) => circ.begin(host, port, BeginFlags(0), now),
            Target::Dir => circ.begin_dir(now),
        }
        .map_err(|e| BeginError::Failed(format!("begin: {e}")))?;
        loop {
            let ev = self.take_event(c, |e| match e {
                CircEvent::StreamConnected { stream, .. } => *stream == s,
                CircEvent::StreamEnded { stream, .. } => *stream == s,
                _ => false,
            });
            match ev {
                Some(CircEvent::StreamEnded { reason, .. }) => {
                    return Err(BeginError::Refused(reason))
                }
                Some(_) => return Ok(s),
                None => self.check_alive(c).map_err(BeginError::Failed)?,
            }
            self.step(deadline)
                .map_err(|e| BeginError::Failed(format!("opening stream: {e}")))?;
        }
    }

    /// Send `request` on stream `s` of circuit `c` and collect everything until the stream
    /// ends; `progress` sees the byte count as data arrives. At most `max` bytes are kept.
    pub fn fetch(
        &mut self,
        c: usize,
        s: StreamId,
        request: &[u8],
        max: usize,
        deadline: Instant,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<u8>, String> {
        let mut pending = request;
        let mut body = Vec::new();
        loop {
            if !pending.is_empty() && self.check_alive(c).is_ok() {
                let n = self.circs[c]
                    .circ
                    .send(s, pending)
                    .map_err(|e| format!("send: {e}"))?;
                pending = &pending[n..];
            }
            while let Some(ev) = self.take_event(c, |e| match e {
                CircEvent::Data { stream, .. } | CircEvent::StreamEnded { stream, .. } => {
                    *stream == s
                }
                _ => false,
            }) {
                match ev {
                    CircEvent::Data { data, .. } => {
                        if body.len() + data.len() > max {
                            let _ = self.circs[c].circ.close_stream(s);
                            return Err(format!("response larger than {max} bytes"));
                        }
                        body.extend_from_slice(&data);
                        progress(body.len());
                    }
                    CircEvent::StreamEnded { reason, .. } => {
                        return if reason == EndReason::DONE || reason == EndReason::MISC {
                            Ok(body)
                        } else {
                            Err(format!(
                                "stream ended after {} bytes: {}",
                                body.len(),
                                end_reason(reason)
                            ))
                        };
                    }
                    _ => {}
                }
            }
            if let Err(e) = self.check_alive(c) {
                return Err(format!("{e} after {} bytes", body.len()));
            }
            self.step(deadline)
                .map_err(|e| format!("after {} bytes: {e}", body.len()))?;
        }
    }

    /// Wait for a relay message on circuit `c` that `want` selects (onion-service messages
    /// such as RENDEZVOUS_ESTABLISHED, INTRODUCE_ACK, RENDEZVOUS2).
    pub fn wait_msg(
        &mut self,
        c: usize,
        want: impl Fn(&RelayMsg<'static>) -> bool,
        deadline: Instant,
    ) -> Result<RelayMsg<'static>, String> {
        loop {
            let ev = self.take_event(c, |e| matches!(e, CircEvent::Msg { msg, .. } if want(msg)));
            if let Some(CircEvent::Msg { msg, .. }) = ev {
                return Ok(*msg);
            }
            self.check_alive(c)?;
            self.step(deadline)?;
        }
    }

    /// Close circuit `c` (DESTROY) and forget its events.
    pub fn destroy(&mut self, c: usize) {
        if let Some(circ) = self.circs.get_mut(c) {
            circ.circ.destroy();
            circ.events.clear();
            circ.dead = Some("closed by us".into());
        }
        let _ = self.flush();
    }

    fn check_alive(&self, c: usize) -> Result<(), String> {
        match self.circs.get(c) {
            None => Err("no such circuit".into()),
            Some(circ) => match &circ.dead {
                Some(why) => Err(why.clone()),
                None => Ok(()),
            },
        }
    }

    /// An input for a socket that is not a channel (SOCKS clients), if one arrived.
    pub fn take_other(&mut self) -> Option<Input> {
        self.others.pop_front()
    }

    /// The first queued event of circuit `c` that `pred` selects, removed from the queue;
    /// the others stay for whoever waits for them.
    fn take_event(&mut self, c: usize, pred: impl Fn(&CircEvent) -> bool) -> Option<CircEvent> {
        let q = &mut self.circs.get_mut(c)?.events;
        let i = q.iter().position(pred)?;
        q.remove(i)
    }

    /// One turn of the loop: wait for one input or timeout, feed it, drain every machine.
    /// Inputs of sockets that are not channels are kept for [`Client::take_other`].
    /// Fails only when `deadline` passes.
    pub fn step(&mut self, deadline: Instant) -> Result<(), String> {
        self.flush()?;
        let mut wake = deadline;
        for l in &self.links {
            if let Some(t) = l.chan.poll_timeout() {
                wake = wake.min(t);
            }
        }
        for c in &self.circs {
            if let Some(t) = c.circ.poll_timeout() {
                wake = wake.min(t);
            }
        }
        let input = self.inbox.wait(Some(self.clock.until(wake)));
        let now = self.clock.now();
        let mut other = None;
        match input {
            Some(i @ (Input::Bytes(..) | Input::Closed(..))) => {
                let conn = match &i {
                    Input::Bytes(c, _) | Input::Closed(c, _) => *c,
                    Input::Accepted(_) => 0,
                };
                match self.links.iter().position(|l| l.conn == conn) {
                    Some(idx) => {
                        if let Err(e) = self.links[idx].handle(&self.clock, i) {
                            self.kill_link(idx, &e);
                        }
                    }
                    None => other = Some(i),
                }
            }
            Some(i @ Input::Accepted(_)) => other = Some(i),
            None => {
                for l in &mut self.links {
                    l.chan.handle_timeout(now);
                }
                for c in &mut self.circs {
                    let _ = c.circ.handle_timeout(now);
                }
                if now >= deadline {
                    return Err("timed out".into());
                }
            }
        }
        self.others.extend(other);
        self.dispatch();
        self.flush()
    }

    /// Route channel events to circuits.
    fn dispatch(&mut self) {
        let now = self.clock.now();
        for idx in 0..self.links.len() {
            for ev in self.links[idx].take_events() {
                match ev {
                    ChanEvent::CircuitCell { circ_id, msg } => {
                        if let Some(c) = self
                            .circs
                            .iter_mut()
                            .find(|c| c.link == idx && c.id == circ_id)
                        {
                            // A fatal error also arrives as CircEvent::Closed.
                            let _ = c.circ.handle_cell(now, msg);
                        }
                    }
                    ChanEvent::Open(_) => self.link_open[idx] = true,
                    ChanEvent::Closed(e) => self.kill_link(idx, &e.to_string()),
                    _ => {}
                }
            }
        }
    }

    fn kill_link(&mut self, idx: usize, why: &str) {
        let addr = self.links[idx].tls.addr();
        let why = format!("channel to {addr} closed: {why}");
        self.links[idx].chan.close();
        self.links[idx].tls.close();
        for c in self.circs.iter_mut().filter(|c| c.link == idx) {
            if c.dead.is_none() {
                c.dead = Some(why.clone());
            }
        }
        self.link_dead[idx] = Some(why);
    }

    /// Drain every circuit's cells into its channel and events into its queue, then every
    /// channel's bytes into TLS.
    pub fn flush(&mut self) -> Result<(), String> {
        for c in &mut self.circs {
            while let Some(cell) = c.circ.poll_cell(&mut self.rng) {
                if self.link_dead[c.link].is_some() {
                    continue;
                }
                if let Err(e) = self.links[c.link].chan.send(c.id, &cell) {
                    c.dead = Some(format!("channel refused a cell: {e}"));
                }
            }
            if c.hold {
                continue;
            }
            while let Some(ev) = c.circ.poll_event() {
                if let CircEvent::Closed { .. } = ev {
                    c.dead.get_or_insert_with(|| closed_reason(&ev));
                }
                c.events.push_back(ev);
            }
        }
        for idx in 0..self.links.len() {
            if self.link_dead[idx].is_none() {
                if let Err(e) = self.links[idx].pump(&self.clock) {
                    self.kill_link(idx, &e);
                }
            }
        }
        Ok(())
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// A readable reason for a `CircEvent::Closed`.
pub fn closed_reason(ev: &CircEvent) -> String {
    match ev {
        CircEvent::Closed {
            remote_reason: Some(r),
            ..
        } => format!(
            "circuit destroyed by relay ({})",
            r.name().unwrap_or("unknown reason")
        ),
        CircEvent::Closed { error: Some(e), .. } => format!("circuit closed: {e}"),
        _ => "circuit closed".into(),
    }
}

/// Why [`Client::begin`] gave no open stream.
#[derive(Debug, Clone)]
pub enum BeginError {
    /// The far end answered with END before CONNECTED.
    Refused(EndReason),
    /// The request could not be sent, or the circuit failed while waiting.
    Failed(String),
}

/// What a client does after an exit refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Give up: the refusal would be the same anywhere.
    No,
    /// Try again on a new circuit; the exit may be chosen again.
    NewCircuit,
    /// Try again on a new circuit through another exit.
    OtherExit,
}

impl BeginError {
    /// C tor's client rule for an END before CONNECTED (tor-spec §6.3; C tor's
    /// `connection_ap_process_end_not_open`): an exit-policy refusal, an exit out of
    /// resources or hibernating rule that exit out; RESOLVEFAILED, TIMEOUT, MISC and NOROUTE
    /// are retried on a fresh circuit (MISC is what an exit answers when it does not yet know
    /// the previous hop as a relay, a matter of the middle hop, not of the exit). Everything
    /// else, and a failed circuit, ends the attempt.
    pub fn retry(&self) -> Retry {
        match self {
            BeginError::Refused(r) => match *r {
                EndReason::EXITPOLICY | EndReason::RESOURCELIMIT | EndReason::HIBERNATING => {
                    Retry::OtherExit
                }
                EndReason::RESOLVEFAILED
                | EndReason::TIMEOUT
                | EndReason::MISC
                | EndReason::NOROUTE => Retry::NewCircuit,
                _ => Retry::No,
            },
            BeginError::Failed(_) => Retry::No,
        }
    }
}

impl std::fmt::Display for BeginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BeginError::Refused(r) => write!(f, "stream refused: {}", end_reason(*r)),
            BeginError::Failed(e) => f.write_str(e),
        }
    }
}

impl From<BeginError> for String {
    fn from(e: BeginError) -> String {
        e.to_string()
    }
}

/// A readable RELAY_END reason.
pub fn end_reason(r: EndReason) -> String {
    match r.name() {
        Some(n) => n.to_string(),
        None => format!("reason {}", r.0),
    }
}
