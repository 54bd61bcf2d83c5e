//! Onion services on the client's circuits and streams: the sub-machines of [`crate::hs`]
//! ([`OnionServices`]) ask for circuits, messages, BEGIN_DIR requests and virtual hops
//! ([`HsAction`]); this file carries them out with the client's own machinery and reports
//! back. Everything it needs from the rest of the client is a handful of calls:
//! [`super::Client::drive_hs`] after every input (from `settle`), [`super::Client::hs_message`] for an
//! accepted onion-service message, [`super::Client::hs_incoming`] for a stream a peer opens,
//! [`super::Client::hs_take_dir_answer`] in front of the directory machine's answers, and the
//! directory and timeout hooks.
//!
//! - Circuits: vanguards-lite paths (proposal 333) from the guard module, `G -> L2 -> RP` for
//!   the client's rendezvous circuit (the rendezvous point drawn at random), `G -> L2 -> M ->
//!   target` for the others, Stable relays only, launched with the purpose that tells which
//!   onion-service messages they may receive ([`Purpose`]). A circuit is reported built once
//!   it is open (after guard-spec §4.9 waiting, if any), and closed once the client dropped
//!   it for any reason.
//! - Streams to a `.onion` host wait for [`HsAction::Ready`] and then BEGIN with an empty
//!   host on the rendezvous circuit (rend-spec-v3 §4.2); a failure ends them with
//!   [`Error::OnionService`] (proposal 304 classes). A stream that loses its rendezvous
//!   circuit asks again, as any stream is retried on another circuit.
//! - A hosted service's streams on its rendezvous circuits for its ports are handed to the
//!   application undecided ([`Event::IncomingStream`]); it accepts or rejects each
//!   ([`super::Client::accept_stream`], [`super::Client::reject_stream`]) within the
//!   bounds and the time [`crate::hs::host`] keeps.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use onion_cell::relaymsg::{BeginFlags, EndReason, RelayMsg};
use onion_circuit::stream::StreamId;
use onion_dir::select::path::PathOptions;
use onion_dir::select::vanguards::VanguardShape;
use onion_dir::Timestamp;

use super::circ::{CircPhase, Purpose};
use super::config::{ClientConfig, Isolation};
use super::event::{Event, ServiceHandle, StreamHandle};
use super::stream::{Phase, Stream, Target};
use crate::dir::{Directory, Failure, RequestId};
use crate::guards::LastHop;
use crate::hs::{
    is_onion, ConnectConfig, HostConfig, HsAction, HsCircRef, HsConfig, HsPurpose, HsRequest,
    IncomingDecision, IncomingRef, OnionServices, ServiceId, ServiceStats,
};
use crate::{Error, Instant};

/// The onion-service machines and what ties them to the client's circuits and streams.
pub(crate) struct HsLinks {
    hs: OnionServices,
    /// Its circuits: reference → circuit key, and whether it was reported built.
    circs: HashMap<HsCircRef, (u64, bool)>,
    keys: HashMap<u64, HsCircRef>,
    /// BEGIN_DIR requests carried for it, by the request id of their stream (counted down
    /// from `u64::MAX`, away from the directory machine's ids, which count up from 0).
    dir_reqs: HashMap<RequestId, HsCircRef>,
    next_dir_req: u64,
    /// Connect requests and the streams waiting for each.
    requests: HashMap<HsRequest, Vec<u64>>,
    /// Streams with a request in flight.
    pub(super) asked: HashSet<u64>,
    /// Hosted services' incoming streams not accepted or rejected yet.
    undecided: HashSet<u64>,
    /// The directory last given to the machines.
    dir: Option<Arc<Directory>>,
    /// Services hosted now (stable internal circuits are then built ahead, `preempt.rs`).
    pub(super) hosted: usize,
    /// The ports of the services hosted now (whether their rendezvous circuits need
    /// Stable relays: [`super::Client::hs_needs_stable`]).
    hosted_ports: HashMap<ServiceId, Vec<u16>>,
    /// What the onion-service circuits cost (`preempt.rs`).
    pub(super) circ_stats: crate::predict::HsCircuitStats,
}

impl HsLinks {
    /// The machines for `cfg` (a testing network's time periods when every authority is on
    /// a private address, as [`crate::guards::is_testing_network`] decides).
    pub(crate) fn new(cfg: &ClientConfig, now: Instant, wall: Timestamp) -> HsLinks {
        let config = HsConfig {
            testing_network: crate::guards::is_testing_network(&cfg.dir.authorities),
            congestion_control: cfg.congestion_control,
            // A connection attempt gives up when its streams would (their deadline is set
            // the same way), so they end with the attempt's typed error; a rendezvous
            // circuit is reused as long as an exit circuit would be.
            connect: ConnectConfig {
                connect_timeout: cfg.stream_timeout + cfg.build_timeout,
                max_circuit_dirtiness: cfg.max_circuit_dirtiness,
                ..ConnectConfig::default()
            },
        };
        HsLinks {
            hs: OnionServices::new(config, now, wall),
            circs: HashMap::new(),
            keys: HashMap::new(),
            dir_reqs: HashMap::new(),
            next_dir_req: u64::MAX,
            requests: HashMap::new(),
            asked: HashSet::new(),
            hosted_ports: HashMap::new(),
            undecided: HashSet::new(),
            dir: None,
            hosted: 0,
            circ_stats: Default::default(),
        }
    }
}

/// The client's purpose for an onion-service circuit.
fn purpose_of(p: HsPurpose) -> Purpose {
    match p {
        HsPurpose::HsDirFetch | HsPurpose::HsDirUpload => Purpose::HsDir,
        HsPurpose::ClientIntro => Purpose::ClientIntro,
        HsPurpose::ClientRend => Purpose::ClientRend,
        HsPurpose::ServiceIntro => Purpose::ServiceIntro,
        HsPurpose::ServiceRend => Purpose::ServiceRend,
    }
}

impl super::Client {
    /// Host an onion service (rend-spec-v3 §2.2.4.2, §3.1, §4.2): it is published once the
    /// directory is in use, and streams its clients open to its ports come as
    /// [`Event::IncomingStream`]. The embedder keeps `config.identity` (the service's key)
    /// to host it again after a restart.
    ///
    /// Errors with kind [`crate::ErrorKind::Resource`] beyond
    /// [`crate::hs::host::MAX_SERVICES`] services, [`crate::ErrorKind::Misuse`] for a
    /// service hosted already.
    pub fn host_onion_service(
        &mut self,
        config: HostConfig,
        now: Instant,
    ) -> Result<ServiceHandle, Error> {
        self.see(now);
        let ports = config.ports.clone();
        let id = self
            .hs
            .hs
            .host(config, self.now, &mut self.rng)
            .map_err(Error::OnionService)?;
        self.hs.hosted += 1;
        self.hs.hosted_ports.insert(id, ports);
        self.settle();
        Ok(ServiceHandle(id.0))
    }

    /// Stop hosting `service`: its circuits close.
    pub fn stop_onion_service(
        &mut self,
        service: ServiceHandle,
        now: Instant,
    ) -> Result<(), Error> {
        self.see(now);
        self.hs
            .hs
            .stop_hosting(ServiceId(service.0))
            .map_err(Error::OnionService)?;
        self.hs.hosted = self.hs.hosted.saturating_sub(1);
        self.hs.hosted_ports.remove(&ServiceId(service.0));
        self.settle();
        Ok(())
    }

    /// A hosted service's onion address.
    pub fn onion_service_address(&self, service: ServiceHandle) -> Option<onion_hs::OnionAddress> {
        self.hs.hs.service_address(ServiceId(service.0))
    }

    /// A hosted service's counters (introductions taken and dropped, rendezvous, uploads).
    pub fn onion_service_stats(&self, service: ServiceHandle) -> Option<ServiceStats> {
        self.hs.hs.service_stats(ServiceId(service.0))
    }

    /// The client authorization key for the onion service `addr` (rend-spec-v3 §2.5.1.2), or
    /// `None` to forget it.
    pub fn set_onion_client_auth(
        &mut self,
        addr: &str,
        key: Option<onion_hs::x25519_dalek::StaticSecret>,
    ) -> Result<(), Error> {
        self.hs
            .hs
            .set_client_auth(addr, key)
            .map_err(Error::OnionService)
    }

    /// Give the machines the directory in use when it changed.
    fn hs_directory(&mut self) {
        let Some(d) = self.dir.directory().cloned() else {
            return;
        };
        if self.hs.dir.as_ref().is_some_and(|o| Arc::ptr_eq(o, &d)) {
            return;
        }
        let wall = self.wall_now();
        // A directory without usable time-period parameters leaves the previous one in use.
        let _ = self.hs.hs.set_directory(&d, self.now, wall, &mut self.rng);
        self.hs.dir = Some(d);
    }

    /// Time passed.
    pub(super) fn hs_timeout(&mut self) {
        let wall = self.wall_now();
        self.hs.hs.handle_timeout(self.now, wall, &mut self.rng);
    }

    /// When the onion-service machines want [`super::Client::handle_timeout`].
    pub(super) fn hs_poll_timeout(&self) -> Option<Instant> {
        self.hs.hs.poll_timeout()
    }

    /// An onion-service message arrived on circuit `key` (its purpose allows it).
    pub(super) fn hs_message(&mut self, key: u64, msg: &RelayMsg<'_>) {
        if let Some(r) = self.hs.keys.get(&key).copied() {
            self.hs.hs.handle_message(r, msg, self.now, &mut self.rng);
        }
    }

    /// The answer to a directory request: taken here if it was one of the onion-service
    /// machines' (`None`), else given back for the directory machine.
    pub(super) fn hs_take_dir_answer(
        &mut self,
        req: RequestId,
        answer: Result<Vec<u8>, Failure>,
    ) -> Option<Result<Vec<u8>, Failure>> {
        match self.hs.dir_reqs.remove(&req) {
            Some(r) => {
                self.hs
                    .hs
                    .handle_dir_answer(r, answer, self.now, &mut self.rng);
                None
            }
            None => Some(answer),
        }
    }

    /// The last hop of circuit `key` asks to open stream `id` to `port`: offered to the
    /// application for a hosted service's port on its rendezvous circuit (undecided until
    /// [`super::Client::accept_stream`] or [`super::Client::reject_stream`]), refused
    /// otherwise (C tor drops BEGIN on client circuits; an END answers it here), and refused
    /// with RESOURCELIMIT beyond the undecided bounds or [`super::Limits::max_streams`].
    pub(super) fn hs_incoming(&mut self, key: u64, id: StreamId, port: u16) {
        let h = self.next_stream;
        let open = self.circs.get(&key).is_some_and(|c| c.circ.is_some());
        let decision = match (self.hs.keys.get(&key), open) {
            (Some(r), true) => self
                .hs
                .hs
                .incoming_stream(*r, port, IncomingRef(h), self.now),
            _ => IncomingDecision::Reject(EndReason::MISC),
        };
        let full = self.streams.len() >= self.cfg.limits.max_streams;
        let Some(c) = self.circs.get_mut(&key) else {
            return;
        };
        let Some(m) = c.circ.as_mut() else {
            return;
        };
        let service = match decision {
            IncomingDecision::Offer { .. } if full => {
                self.hs.hs.incoming_decided(IncomingRef(h));
                let _ = m.reject_stream(id, EndReason::RESOURCELIMIT);
                return;
            }
            IncomingDecision::Offer { service } => service,
            IncomingDecision::Reject(reason) => {
                let _ = m.reject_stream(id, reason);
                return;
            }
        };
        let now = self.now;
        self.next_stream += 1;
        let mut s = Stream::new(
            Target::Exit {
                host: "".into(),
                port,
            },
            Isolation::NONE,
            now,
        );
        s.phase = Phase::Incoming;
        s.circ = Some(key);
        s.id = Some(id);
        c.attach(id, h, Isolation::NONE, now);
        self.streams.insert(h, s);
        self.hs.undecided.insert(h);
        self.emit(Event::IncomingStream {
            service: ServiceHandle(service.0),
            stream: StreamHandle(h),
            port,
        });
    }

    /// Accept the incoming stream `stream` of a hosted onion service
    /// ([`Event::IncomingStream`]): RELAY_CONNECTED goes to the client (tor-spec §6.2; empty,
    /// as C tor's service sends it), and the stream is read and written as any other from
    /// now on. Accept once the service's target is connected, so that a client is not told
    /// CONNECTED for a stream that then ends at once.
    ///
    /// Errors: [`Error::Misuse`] for a handle that is not an undecided incoming stream
    /// (unknown, decided already, or ended: the client gave up, its circuit closed, or
    /// [`crate::hs::HostConfig::undecided_timeout`] passed; [`Event::StreamClosed`] said so).
    pub fn accept_stream(&mut self, stream: StreamHandle, now: Instant) -> Result<(), Error> {
        self.see(now);
        let (key, id) = self.undecided_stream(stream)?;
        let m = self
            .circs
            .get_mut(&key)
            .and_then(|c| c.circ.as_mut())
            .ok_or(Error::Misuse("the stream's circuit is gone"))?;
        m.accept_stream(id).map_err(Error::Circuit)?;
        if let Some(s) = self.streams.get_mut(&stream.0) {
            s.phase = Phase::Open;
        }
        self.hs.undecided.remove(&stream.0);
        self.hs.hs.incoming_decided(IncomingRef(stream.0));
        self.settle();
        Ok(())
    }

    /// Reject the incoming stream `stream` of a hosted onion service
    /// ([`Event::IncomingStream`]): RELAY_END with `reason` goes to the client (tor-spec
    /// §6.3), and the handle is forgotten (no event follows). C tor's service answers
    /// CONNECTREFUSED when its target refused the connection (its errno mapping:
    /// ECONNREFUSED), TIMEOUT when the connect timed out, NOROUTE when the target is
    /// unreachable, RESOURCELIMIT when it is out of sockets; a C tor client turns these
    /// into its SOCKS error (CONNECTREFUSED: "connection refused").
    ///
    /// Errors: [`Error::Misuse`] as for [`Client::accept_stream`](super::Client::accept_stream).
    pub fn reject_stream(
        &mut self,
        stream: StreamHandle,
        reason: EndReason,
        now: Instant,
    ) -> Result<(), Error> {
        self.see(now);
        let (key, id) = self.undecided_stream(stream)?;
        self.streams.remove(&stream.0);
        self.hs.undecided.remove(&stream.0);
        self.hs.hs.incoming_decided(IncomingRef(stream.0));
        if let Some(c) = self.circs.get_mut(&key) {
            c.streams.remove(&id.get());
            if c.streams.is_empty() {
                c.idle_since = self.now;
            }
            if let Some(m) = c.circ.as_mut() {
                m.reject_stream(id, reason).map_err(Error::Circuit)?;
            }
        }
        self.settle();
        Ok(())
    }

    /// The circuit and stream id of `stream` if it is an undecided incoming stream.
    fn undecided_stream(&self, stream: StreamHandle) -> Result<(u64, StreamId), Error> {
        let s = self
            .streams
            .get(&stream.0)
            .ok_or(Error::Misuse("no such stream"))?;
        match (s.phase, s.circ, s.id) {
            (Phase::Incoming, Some(key), Some(id)) => Ok((key, id)),
            _ => Err(Error::Misuse(
                "not an incoming stream waiting for accept or reject",
            )),
        }
    }

    /// Incoming streams that left the undecided phase by another way (closed by the
    /// application, ended by the client, their circuit lost) no longer count against the
    /// service's bounds.
    fn hs_reconcile_undecided(&mut self) {
        let streams = &self.streams;
        let gone: Vec<u64> = self
            .hs
            .undecided
            .iter()
            .filter(|h| !streams.get(h).is_some_and(|s| s.phase == Phase::Incoming))
            .copied()
            .collect();
        for h in gone {
            self.hs.undecided.remove(&h);
            self.hs.hs.incoming_decided(IncomingRef(h));
        }
    }

    /// The application left incoming stream `h` undecided too long: END TIMEOUT to the
    /// client, and [`Event::StreamClosed`] with the same reason to the application.
    fn hs_incoming_timed_out(&mut self, h: u64) {
        self.hs.undecided.remove(&h);
        let Ok((key, id)) = self.undecided_stream(StreamHandle(h)) else {
            return;
        };
        if let Some(m) = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut()) {
            let _ = m.reject_stream(id, EndReason::TIMEOUT);
        }
        self.end_stream(h, Some(Error::StreamEnded(EndReason::TIMEOUT)));
    }

    /// Carry out what the onion-service machines ask, and tell them what happened to their
    /// circuits and waiting streams. Called after every input.
    pub(super) fn drive_hs(&mut self) {
        self.hs_directory();
        self.hs_reconcile_undecided();
        // Streams to a `.onion` host that wait for a rendezvous circuit and have not asked
        // (before bootstrap they wait, as exit streams do).
        let bootstrapped = self.hs.dir.is_some();
        let want: Vec<(u64, String, Isolation)> = self
            .streams
            .iter()
            .filter(|(h, s)| {
                bootstrapped
                    && matches!(s.phase, Phase::Waiting { .. })
                    && !self.hs.asked.contains(h)
            })
            .filter_map(|(h, s)| match &s.target {
                Target::Exit { host, .. } if is_onion(host) => {
                    Some((*h, host.to_string(), s.isolation))
                }
                _ => None,
            })
            .collect();
        for (h, host, isolation) in want {
            match self
                .hs
                .hs
                .connect(&host, isolation.0, self.now, &mut self.rng)
            {
                Ok(req) => {
                    self.hs.asked.insert(h);
                    self.hs.requests.entry(req).or_default().push(h);
                }
                Err(e) => self.end_stream(h, Some(Error::OnionService(e))),
            }
        }
        // Circuits that opened or went away.
        let mut built = Vec::new();
        let mut gone = Vec::new();
        for (r, (key, reported)) in &self.hs.circs {
            match self.circs.get(key) {
                None => gone.push(*r),
                Some(c) if !*reported && c.phase == CircPhase::Open => built.push(*r),
                Some(_) => {}
            }
        }
        for r in gone {
            if let Some((key, _)) = self.hs.circs.remove(&r) {
                self.hs.keys.remove(&key);
            }
            // Its directory request, if one was in flight, is answered by the closure.
            self.hs.dir_reqs.retain(|_, c| *c != r);
            self.hs
                .hs
                .handle_circuit_closed(r, "the circuit closed", self.now, &mut self.rng);
        }
        for r in built {
            let Some((key, reported)) = self.hs.circs.get_mut(&r) else {
                continue;
            };
            *reported = true;
            let key = *key;
            let Some(c) = self.circs.get(&key) else {
                continue;
            };
            let (Some(last), Some(m)) = (c.path.last().cloned(), c.circ.as_ref()) else {
                continue;
            };
            let kh = m
                .n_hops()
                .checked_sub(1)
                .and_then(|i| m.hop_kh(i))
                .copied()
                .unwrap_or([0; 20]);
            self.hs
                .hs
                .handle_circuit_built(r, &last, &kh, self.now, &mut self.rng);
        }
        while let Some(a) = self.hs.hs.poll_action() {
            self.hs_apply(a);
        }
    }

    /// Circuit key of reference `r`, if the circuit is still there.
    fn hs_key(&self, r: HsCircRef) -> Option<u64> {
        self.hs
            .circs
            .get(&r)
            .map(|(k, _)| *k)
            .filter(|k| self.circs.contains_key(k))
    }

    fn hs_apply(&mut self, a: HsAction) {
        let now = self.now;
        match a {
            HsAction::BuildCircuit {
                circ,
                purpose,
                last_hop,
            } => {
                let key = self.hs_circuit(purpose, last_hop);
                match key {
                    Ok(key) => {
                        self.hs.circs.insert(circ, (key, false));
                        self.hs.keys.insert(key, circ);
                    }
                    Err(e) => {
                        self.hs
                            .hs
                            .handle_circuit_closed(circ, &e.to_string(), now, &mut self.rng)
                    }
                }
            }
            HsAction::SendMessage { circ, msg } => {
                let sent = self.hs_key(circ).and_then(|key| {
                    let m = self.circs.get_mut(&key)?.circ.as_mut()?;
                    let last = m.n_hops().checked_sub(1)?;
                    m.send_msg(last, None, &msg).ok()
                });
                if sent.is_none() {
                    self.hs_close(circ);
                }
            }
            HsAction::DirRequest {
                circ,
                request,
                max_body,
            } => {
                let key = self.hs_key(circ);
                let req = RequestId(self.hs.next_dir_req);
                self.hs.next_dir_req -= 1;
                let Some(key) = key.filter(|_| self.streams.len() < self.cfg.limits.max_streams)
                else {
                    let e = Failure::Network("no room for the directory stream".into());
                    self.hs
                        .hs
                        .handle_dir_answer(circ, Err(e), now, &mut self.rng);
                    return;
                };
                let deadline = now + self.cfg.stream_timeout;
                self.add_dir_stream(key, req, request, max_body, deadline);
                self.hs.dir_reqs.insert(req, circ);
            }
            HsAction::AddVirtualHop { circ, hop } => {
                let added = self.hs_key(circ).and_then(|key| {
                    let m = self.circs.get_mut(&key)?.circ.as_mut()?;
                    let layer = Box::new(hop.layer().ok()?);
                    match hop.congestion_control() {
                        Some(cc) => m.add_virtual_hop_cc(layer, cc),
                        None => m.add_virtual_hop(layer),
                    }
                    .ok()?;
                    if hop.accepts_streams() {
                        m.set_accept_inbound_streams(true);
                    }
                    Some(())
                });
                if added.is_none() {
                    self.hs_close(circ);
                }
            }
            HsAction::CloseCircuit { circ } => self.hs_close(circ),
            HsAction::Ready { request, circ } => {
                let key = self.hs_key(circ);
                for h in self.hs.requests.remove(&request).unwrap_or_default() {
                    self.hs.asked.remove(&h);
                    // Closed meanwhile: the stream asks again.
                    if let Some(key) = key {
                        self.begin_onion(h, key);
                    }
                }
            }
            HsAction::Failed { request, error } => {
                for h in self.hs.requests.remove(&request).unwrap_or_default() {
                    self.hs.asked.remove(&h);
                    self.end_stream(h, Some(Error::OnionService(error.clone())));
                }
            }
            HsAction::IncomingTimedOut { stream } => self.hs_incoming_timed_out(stream.0),
            HsAction::Published { .. } => {}
        }
    }

    /// Whether an onion-service circuit for `purpose` needs Stable relays (C tor's
    /// `CIRCLAUNCH_NEED_UPTIME`, which also limits the pre-built circuits it may cannibalize
    /// to stable ones): always for a hosted service's introduction circuits
    /// (`hs_circ_launch_intro_point`); for a hosted service's rendezvous circuits when one of
    /// its ports is in `LongLivedPorts` (`hs_service_requires_uptime_circ`); for a client's
    /// rendezvous and introduction circuits when the stream they are for goes to such a port
    /// (`circuit_get_open_circ_or_launch`'s `need_uptime`). The machines do not say which
    /// service or request a circuit is for: any hosted service with such a port, any stream
    /// waiting for an onion service to such a port, asks for it.
    pub(super) fn hs_needs_stable(&self, purpose: HsPurpose) -> bool {
        let long_lived = |p: u16| self.cfg.path.long_lived_ports.contains(&p);
        match purpose {
            HsPurpose::ServiceIntro => true,
            HsPurpose::ServiceRend => self
                .hs
                .hosted_ports
                .values()
                .flatten()
                .any(|p| long_lived(*p)),
            HsPurpose::ClientRend | HsPurpose::ClientIntro => self
                .hs
                .asked
                .iter()
                .filter_map(|h| self.streams.get(h))
                .any(|s| s.port().is_some_and(long_lived)),
            HsPurpose::HsDirFetch | HsPurpose::HsDirUpload => false,
        }
    }

    /// A circuit for the onion-service `purpose` ending at `last_hop` (or at a relay of our
    /// choice): a pre-built internal circuit when one fits (`preempt.rs`: taken as it is for
    /// a client's rendezvous point, extended by one hop otherwise, as C tor cannibalizes),
    /// else a vanguards-lite path built from scratch (proposal 333 §1). Stable relays
    /// ([`super::Client::hs_needs_stable`]) for a hosted service's introduction circuits, and for
    /// rendezvous and introduction circuits whose streams go to a `LongLivedPorts` port.
    fn hs_circuit(
        &mut self,
        purpose: HsPurpose,
        last_hop: Option<onion_circuit::circuit::HopTarget>,
    ) -> Result<u64, Error> {
        let need_stable = self.hs_needs_stable(purpose);
        let taken = match (&last_hop, purpose) {
            (None, HsPurpose::ClientRend) => self.take_internal(need_stable),
            (Some(t), _) => self.cannibalize(purpose_of(purpose), t, need_stable),
            (None, _) => None,
        };
        if let Some(key) = taken {
            if let Some(c) = self.circs.get_mut(&key) {
                c.purpose = purpose_of(purpose);
            }
            return Ok(key);
        }
        let dir = self
            .dir
            .directory()
            .cloned()
            .ok_or_else(|| Error::NoPath("no directory".into()))?;
        let shape = match purpose {
            HsPurpose::ClientRend => VanguardShape::Short,
            _ => VanguardShape::Long,
        };
        let last = last_hop.map_or(LastHop::Random, LastHop::External);
        let opts = PathOptions {
            need_stable,
            ..PathOptions::default()
        };
        let wall = self.wall_now();
        let p = self
            .guards
            .vanguard_path(&dir, shape, last, &opts, wall, &mut self.rng)?;
        let key = self.launch(p.hops, Some(p.ticket), purpose_of(purpose), false)?;
        self.hs_note_launched();
        Ok(key)
    }

    /// Close an onion-service circuit the machines gave up.
    fn hs_close(&mut self, circ: HsCircRef) {
        self.hs.dir_reqs.retain(|_, c| *c != circ);
        if let Some((key, _)) = self.hs.circs.remove(&circ) {
            self.hs.keys.remove(&key);
            if self.circs.contains_key(&key) {
                self.close_circ(key);
            }
        }
    }

    /// BEGIN for the waiting stream `h` to the onion service on rendezvous circuit `key`:
    /// an empty host and the port (rend-spec-v3 §4.2).
    fn begin_onion(&mut self, h: u64, key: u64) {
        let now = self.now;
        let (Some(s), Some(c)) = (self.streams.get_mut(&h), self.circs.get_mut(&key)) else {
            return;
        };
        if !matches!(s.phase, Phase::Waiting { .. }) {
            return;
        }
        let (Some(port), Some(m)) = (s.port(), c.circ.as_mut()) else {
            return;
        };
        match m.begin("", port, BeginFlags::default(), now) {
            Ok(id) => {
                s.id = Some(id);
                s.circ = Some(key);
                s.phase = Phase::Connecting {
                    deadline: now + self.cfg.stream_timeout,
                };
                c.attach(id, h, s.isolation, now);
            }
            Err(e) => self.end_stream(h, Some(Error::Circuit(e))),
        }
    }
}
