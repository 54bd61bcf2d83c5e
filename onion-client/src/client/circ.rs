//! Circuits of the client: what each is for, how far its build got, which streams it carries,
//! and which relay messages it may receive.

use std::collections::BTreeMap;
use std::time::Duration;

use onion_cell::chancell::{ChanMsg, DestroyReason};
use onion_cell::relaymsg::RelayMsg;
use onion_cell::CircId;
use onion_circuit::channel::PeerIds;
use onion_circuit::circuit::{CircConfig, CircError, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_dir::policy::ExitTarget;
use onion_dir::RsaIdentity;

use super::config::Isolation;
use super::event::ConnId;
use super::{CLEAN_CIRCUIT_IDLE, DIR_CIRCUIT_IDLE};
use crate::dir::Directory;
use crate::guards::{Blame, Built, Ticket};
use crate::timeout::CircuitKind;
use crate::{Error, Instant};

/// What a circuit is for: which streams it takes, and which onion-service messages
/// (rend-spec-v3 §3) it may receive.
///
/// Each onion-service message has one place in the protocol: INTRODUCE_ACK answers our
/// INTRODUCE1 at a client's introduction point, RENDEZVOUS_ESTABLISHED and RENDEZVOUS2 come
/// from a client's rendezvous point, INTRO_ESTABLISHED and INTRODUCE2 from a service's
/// introduction point. Anywhere else (another purpose, a hop other than the last) it is a
/// protocol violation, as C tor treats a relay command its circuit's purpose does not
/// expect: the circuit is closed ([`msg_verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A 3-hop exit circuit for application streams.
    General,
    /// A one-hop circuit carrying directory requests (BEGIN_DIR).
    Dir,
    /// To an HSDir (descriptor fetch or upload over BEGIN_DIR).
    HsDir,
    /// A client's circuit to an introduction point, after INTRODUCE1: INTRODUCE_ACK.
    ClientIntro,
    /// A client's circuit to its rendezvous point: RENDEZVOUS_ESTABLISHED and RENDEZVOUS2.
    ClientRend,
    /// A service's circuit to its introduction point: INTRO_ESTABLISHED and INTRODUCE2.
    ServiceIntro,
    /// A service's circuit to a client's rendezvous point: none (streams only).
    ServiceRend,
}

/// What to do with a relay message a circuit handed up (`CircEvent::Msg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give it to whoever waits for it on this circuit.
    Accept,
    /// Drop it: not an onion-service message, and nothing here waits for it (tor-spec §6.1:
    /// a recognised cell that is not understood is dropped).
    Ignore,
    /// Close the circuit (DESTROY, reason PROTOCOL): the message may not come from there.
    Violation(&'static str),
}

/// Whether a circuit of `purpose` may receive `msg` from hop `hop` (0-based) of its `n_hops`
/// hops on `stream` (`None`: the circuit itself, stream id 0): onion-service messages only
/// from the last hop, never on a stream, and only those the purpose expects (rend-spec-v3
/// §3.1.2, §3.2.2, §3.3, §4.2).
pub fn msg_verdict(
    purpose: Purpose,
    hop: usize,
    n_hops: usize,
    stream: Option<StreamId>,
    msg: &RelayMsg<'_>,
) -> Verdict {
    use RelayMsg as M;
    let expected = match msg {
        M::IntroduceAck(_) => purpose == Purpose::ClientIntro,
        M::RendezvousEstablished | M::Rendezvous2(_) => purpose == Purpose::ClientRend,
        M::IntroEstablished(_) | M::Introduce2(_) => purpose == Purpose::ServiceIntro,
        // Messages only a relay (introduction or rendezvous point) may receive.
        M::EstablishIntro(_) | M::EstablishRendezvous(_) | M::Introduce1(_) | M::Rendezvous1(_) => {
            return Verdict::Violation("a message only relays receive")
        }
        _ => return Verdict::Ignore,
    };
    if !expected {
        Verdict::Violation("an onion-service message this circuit's purpose does not expect")
    } else if hop + 1 != n_hops {
        Verdict::Violation("an onion-service message from a hop other than the last")
    } else if stream.is_some() {
        Verdict::Violation("an onion-service message on a stream")
    } else {
        Verdict::Accept
    }
}

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CircPhase {
    /// Its channel is being opened; CREATE goes out once it is.
    AwaitChannel,
    /// Hops are being added.
    Building,
    /// Built, but its guard is not primary and a better one may work (guard-spec §4.9):
    /// no stream yet.
    Waiting,
    /// Built and usable.
    Open,
}

/// One circuit of the client.
#[derive(Debug)]
pub(crate) struct Circ {
    pub conn: ConnId,
    /// Its id on the channel, once CREATE went out.
    pub id: Option<CircId>,
    /// The machine, once CREATE went out.
    pub circ: Option<Circuit>,
    pub purpose: Purpose,
    pub phase: CircPhase,
    /// The hops, guard first.
    pub path: Vec<HopTarget>,
    /// CREATE_FAST rather than ntor for the first hop (an authority or fallback, whose
    /// onion key is unknown before bootstrap; its TLS identity authenticates it).
    pub fast: bool,
    /// The guard module's handle for this path.
    pub ticket: Option<Ticket>,
    /// The build must finish by then.
    pub deadline: Instant,
    /// When the build started (for build-time learning, path-spec §2.4).
    pub started: Instant,
    /// It passed the learned timeout and builds on as a measurement only, until the close
    /// timeout (path-spec §2.4.4); no stream waits for it.
    pub timed_out: bool,
    /// The streams of one token only (path-spec §2.2, stream isolation), once a stream chose
    /// it.
    pub isolation: Option<Isolation>,
    /// Its first stream was attached then: after `max_circuit_dirtiness` it takes no more.
    pub dirty_since: Option<Instant>,
    /// No stream since then.
    pub idle_since: Instant,
    /// Stream id on the circuit → stream handle number.
    pub streams: BTreeMap<u16, u64>,
    /// Built to an exit the application named (path-spec §2.2.2): only streams naming this
    /// exit use it, and a stream naming none never does.
    pub named_exit: Option<RsaIdentity>,
    /// A preemptive internal circuit (path-spec §2.1.1, vanguards-lite shape `G -> L2 -> M`)
    /// kept for an onion-service rendezvous: no exit stream uses it.
    pub internal: bool,
    /// How long it may stay built and unused before it closes.
    pub clean_idle: Duration,
    /// Its relays were chosen with the Stable flag (C tor's `need_uptime`): a preemptive
    /// internal circuit that may be cannibalized for a purpose that needs stability.
    pub stable: bool,
    /// A built internal circuit taken for an onion-service purpose and extended by one hop
    /// to a relay named by someone else (path-spec §2.3, [`super::preempt`]): its guard was
    /// reported built already, and the extension is not a build-time measurement.
    pub cannibalized: bool,
    /// It takes no new stream (C tor's `mark_circuit_unusable_for_new_conns`): a stream on
    /// it timed out waiting for CONNECTED, or its exit could not resolve or reach a
    /// destination (END RESOLVEFAILED, MISC, NOROUTE). Its streams go on; it closes once
    /// they are gone.
    pub unusable: bool,
}

impl Circ {
    /// The exit (last hop) identity.
    pub fn exit(&self) -> Option<RsaIdentity> {
        self.path.last().map(|h| h.rsa_id)
    }

    /// The first hop's identity.
    pub fn first(&self) -> Option<RsaIdentity> {
        self.path.first().map(|h| h.rsa_id)
    }

    /// Whether a stream of `isolation` to `port` may use it at `now`: a general circuit not
    /// past its dirtiness, of the same isolation (or none yet), with room for a stream,
    /// whose exit's policy allows the port in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn fits(
        &self,
        isolation: Isolation,
        port: u16,
        dir: Option<&Directory>,
        now: Instant,
        dirtiness: std::time::Duration,
        max_streams: usize,
    ) -> bool {
        if self.purpose != Purpose::General
            || self.internal
            || self.unusable
            || self.isolation.is_some_and(|i| i != isolation)
            || self.streams.len() >= max_streams
            || self
                .dirty_since
                .is_some_and(|d| now.saturating_duration_since(d) >= dirtiness)
        {
            return false;
        }
        exit_allows(dir, self.exit(), port)
    }

    /// Record stream `id` (handle `handle`) on it.
    pub fn attach(&mut self, id: StreamId, handle: u64, isolation: Isolation, now: Instant) {
        self.streams.insert(id.get(), handle);
        self.isolation.get_or_insert(isolation);
        self.dirty_since.get_or_insert(now);
    }
}

/// Whether circuits of `purpose` are onion-service circuits (rend-spec-v3 §3): the ones a
/// pre-built internal circuit may be cannibalized for.
pub(crate) fn is_onion_purpose(purpose: Purpose) -> bool {
    !matches!(purpose, Purpose::General | Purpose::Dir)
}

/// Whether the relay `exit` allows exiting to `port` in `dir` (path-spec §2.2.1 "might
/// support" for a hostname).
pub(crate) fn exit_allows(dir: Option<&Directory>, exit: Option<RsaIdentity>, port: u16) -> bool {
    let (Some(dir), Some(exit)) = (dir, exit) else {
        return false;
    };
    dir.view
        .by_rsa_id(&exit)
        .and_then(|i| dir.view.relay(i))
        .is_some_and(|r| r.policy.allows(ExitTarget::Port(port)))
}

/// Whether the relay `id` offers congestion control: `FlowCtrl=2` and ntor-v3 (`Relay=4`) in
/// its consensus `pr` line (proposal 324 §4).
pub(crate) fn offers_cc(dir: &Directory, id: &RsaIdentity) -> bool {
    dir.protocols(id)
        .is_some_and(|p| p.supports("FlowCtrl", 2) && p.supports("Relay", 4))
}

impl super::Client {
    /// Builds in flight (waiting for their channel or adding hops).
    pub(super) fn building(&self) -> usize {
        self.circs
            .values()
            .filter(|c| matches!(c.phase, CircPhase::AwaitChannel | CircPhase::Building))
            .count()
    }

    /// Start a circuit through `path` for `purpose` (CREATE_FAST to the first hop when
    /// `fast`, else ntor), sharing the channel to its first hop. Returns its key. Errors with
    /// [`Error::Resource`] at [`crate::Limits::max_circuits`] circuits or
    /// [`crate::Limits::max_building`] builds, or when no channel can be opened; the path's
    /// ticket is then closed. A hosted onion service's introduction and rendezvous circuits
    /// do not wait behind other builds (a visitor waits on the rendezvous, which C tor builds
    /// at once on INTRODUCE2): they have bounds of their own (the publisher's launch rate,
    /// `hs::HostConfig::max_rend_builds` at once) and still count against `max_circuits`.
    pub(super) fn launch(
        &mut self,
        mut hops: Vec<HopTarget>,
        ticket: Option<Ticket>,
        purpose: Purpose,
        fast: bool,
    ) -> Result<u64, Error> {
        let wall = self.wall_now();
        let l = &self.cfg.limits;
        let room = if self.circs.len() >= l.max_circuits {
            Err(Error::Resource("too many circuits (Limits::max_circuits)"))
        } else if self.building() >= l.max_building
            && !matches!(purpose, Purpose::ServiceIntro | Purpose::ServiceRend)
        {
            Err(Error::Resource(
                "too many circuit builds (Limits::max_building)",
            ))
        } else {
            Ok(())
        };
        let first = hops.first().cloned();
        let conn = room.and_then(|()| {
            let first = first.ok_or(Error::NoPath("empty path".into()))?;
            let addr = *first
                .addrs
                .first()
                .ok_or_else(|| Error::NoPath(format!("relay {} has no address", first.rsa_id)))?;
            let ids = PeerIds {
                rsa: Some(first.rsa_id),
                ed25519: first.ed_id,
            };
            self.channel_for(addr, ids)
        });
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                if let Some(t) = ticket {
                    // Blame nobody: the circuit was never tried.
                    self.guards.failed(t, Blame::Other, wall);
                }
                return Err(e);
            }
        };
        // The exit of a congestion-controlled circuit is reached with ntor-v3, which carries
        // the request (proposal 324 §4.1).
        if purpose == Purpose::General && self.cfg.congestion_control && self.cc.is_some() {
            if let (Some(exit), Some(dir)) = (hops.last_mut(), self.dir.directory()) {
                exit.ntor_v3 = exit.ed_id.is_some() && offers_cc(dir, &exit.rsa_id);
            }
        }
        let key = self.next_circ;
        self.next_circ += 1;
        let now = self.now;
        self.build_times.note_launched(now);
        let multi_hop = hops.len() > 1;
        self.circs.insert(
            key,
            Circ {
                conn,
                id: None,
                circ: None,
                purpose,
                phase: CircPhase::AwaitChannel,
                path: hops,
                fast,
                ticket,
                deadline: now + self.build_timeout(purpose),
                started: now,
                timed_out: false,
                isolation: None,
                dirty_since: None,
                idle_since: now,
                streams: BTreeMap::new(),
                named_exit: None,
                internal: false,
                clean_idle: CLEAN_CIRCUIT_IDLE,
                stable: false,
                cannibalized: false,
                unusable: false,
            },
        );
        let open = match self.chans.get_mut(&conn) {
            Some(c) => {
                c.circs.push(key);
                c.idle_close = None;
                // A channel that carries multi-hop circuits is padded (padding-spec §2.2).
                c.full_circs |= multi_hop;
                c.open
            }
            None => false,
        };
        self.pad_schedule(conn);
        if open {
            self.start_create(key);
        }
        Ok(key)
    }

    /// The circuit's channel is open: CREATE2 (ntor) or CREATE_FAST goes out (tor-spec §5.1).
    pub(super) fn start_create(&mut self, key: u64) {
        let now = self.now;
        let Some(c) = self.circs.get(&key) else {
            return;
        };
        if c.phase != CircPhase::AwaitChannel {
            return;
        }
        let conn = c.conn;
        let kind = match c.fast {
            true => HandshakeKind::CreateFast,
            false => HandshakeKind::Ntor,
        };
        let config = CircConfig {
            build_timeout: c
                .deadline
                .saturating_duration_since(now)
                .max(Duration::from_secs(1)),
            // The client ends a BEGIN or RESOLVE left unanswered itself, at the latest at
            // `cfg.stream_timeout`, with END and a retry (`stream.rs`); the circuit's own
            // expiry is only a backstop behind it.
            stream_timeout: self.cfg.stream_timeout.saturating_mul(2),
            congestion_control: match c.purpose {
                Purpose::General if self.cfg.congestion_control => self.cc.map(Box::new),
                _ => None,
            },
            ..CircConfig::default()
        };
        let Some(first) = c.path.first().cloned() else {
            return;
        };
        let Some(ch) = self.chans.get_mut(&conn).and_then(|c| c.channel.as_mut()) else {
            return;
        };
        let made = ch
            .new_circ_id(&mut self.rng)
            .map_err(|e| Error::Network(format!("no circuit id: {e}")))
            .and_then(|id| {
                let (m, create) = Circuit::create(config, &first, kind, now, &mut self.rng)
                    .map_err(Error::Circuit)?;
                ch.send(id, &create)
                    .map_err(|e| Error::Network(format!("CREATE not sent: {e}")))?;
                Ok((id, m))
            });
        match made {
            Ok((id, m)) => {
                self.by_id.insert((conn, id), key);
                if let Some(c) = self.circs.get_mut(&key) {
                    c.id = Some(id);
                    c.circ = Some(m);
                    c.phase = CircPhase::Building;
                }
            }
            Err(e) => self.fail_circ(key, e, true),
        }
    }

    /// A cell for circuit `key` arrived.
    pub(super) fn circ_cell(&mut self, key: u64, msg: ChanMsg<'static>) {
        let now = self.now;
        if let Some(m) = self.circs.get_mut(&key).and_then(|c| c.circ.as_mut()) {
            // A hop's violation closes the circuit; its Closed event says why.
            m.handle_cell(now, msg);
        }
        self.circ_events(key);
    }

    /// Handle what circuit `key` reports.
    pub(super) fn circ_events(&mut self, key: u64) {
        loop {
            let Some(c) = self.circs.get_mut(&key) else {
                return;
            };
            let Some(m) = c.circ.as_mut() else {
                return;
            };
            let Some(ev) = m.poll_event() else {
                return;
            };
            match ev {
                CircEvent::HopAdded { hops } => self.hop_added(key, hops),
                CircEvent::StreamConnected { stream, .. } => self.stream_connected(key, stream),
                CircEvent::Stream(StreamEvent::Data { stream, data }) => {
                    self.stream_data(key, stream, data)
                }
                CircEvent::Stream(StreamEvent::Ended { stream, reason }) => {
                    self.stream_ended(key, stream, reason)
                }
                CircEvent::Resolved { stream, answers } => {
                    self.stream_resolved(key, stream, answers)
                }
                CircEvent::Msg {
                    hop, stream, msg, ..
                } => {
                    let n = m.n_hops();
                    if let Verdict::Violation(why) = msg_verdict(c.purpose, hop, n, stream, &msg) {
                        m.destroy_with_reason(DestroyReason::PROTOCOL);
                        self.fail_circ(key, Error::Violation(why), true);
                        return;
                    }
                    self.hs_message(key, &msg);
                }
                // A hosted onion service's stream, or refused (`onion.rs`).
                CircEvent::IncomingStream { stream, port, .. } => {
                    self.hs_incoming(key, stream, port)
                }
                CircEvent::Truncated { .. } => {
                    // A shorter circuit is not what was built: give it up.
                    m.destroy();
                    let e = Error::Network("a hop truncated the circuit".into());
                    self.fail_circ(key, e, true);
                    return;
                }
                CircEvent::Closed {
                    remote_reason,
                    error,
                } => {
                    let e = match (error, remote_reason) {
                        (Some(e), _) => Error::Circuit(e),
                        (None, Some(r)) => {
                            Error::Network(format!("the relay destroyed the circuit ({r:?})"))
                        }
                        (None, None) => Error::Network("circuit closed".into()),
                    };
                    self.fail_circ(key, e, true);
                    return;
                }
                _ => {}
            }
        }
    }

    /// Hop `hops` was added: extend to the next, or the build is done.
    fn hop_added(&mut self, key: u64, hops: usize) {
        let now = self.now;
        let wall = self.wall_now();
        let Some(c) = self.circs.get_mut(&key) else {
            return;
        };
        let Some(m) = c.circ.as_mut() else {
            return;
        };
        if let Some(next) = c.path.get(hops) {
            let r = match hops + 1 == c.path.len() && c.purpose == Purpose::General && !c.internal {
                true => m.extend_exit(next, now, &mut self.rng),
                false => m.extend(next, now, &mut self.rng),
            };
            match r {
                Err(e) => self.fail_circ(key, Error::Circuit(e), true),
                Ok(()) if is_onion_purpose(c.purpose) => self.hs_note_extend(),
                Ok(()) => {}
            }
            return;
        }
        if c.cannibalized {
            // One hop added to a circuit built and reported before: no build time to
            // learn, no guard to confirm again.
            c.phase = CircPhase::Open;
            c.idle_since = now;
            return;
        }
        if c.path.len() >= 3 {
            let elapsed = now.saturating_duration_since(c.started);
            self.build_times.record_success(elapsed, c.timed_out);
        }
        if c.timed_out {
            // A measurement only (path-spec §2.4.4): not offered to streams.
            self.close_circ(key);
            return;
        }
        c.phase = match c.ticket.map(|t| self.guards.built(t, wall, &mut self.rng)) {
            Some(Ok(Built::Wait)) => CircPhase::Waiting,
            _ => CircPhase::Open,
        };
        c.idle_since = now;
    }

    /// The build deadline of a new circuit: the learned timeout (path-spec §2.4), or
    /// [`crate::ClientConfig::build_timeout`] when learning is off.
    pub(super) fn build_timeout(&self, purpose: Purpose) -> Duration {
        if self.build_times.disabled() {
            return self.cfg.build_timeout;
        }
        let kind = match purpose {
            Purpose::ClientIntro => CircuitKind::ClientIntro,
            Purpose::ServiceIntro => CircuitKind::ServiceIntro,
            _ => CircuitKind::Normal,
        };
        self.build_times.timeout_for(kind)
    }

    /// A build passed its deadline. Once enough build times are known (path-spec §2.4.4)
    /// the circuit keeps building as a measurement until the close timeout, and its streams
    /// look elsewhere; otherwise, or at the close timeout, it is given up.
    fn build_expired(&mut self, key: u64) {
        let now = self.now;
        let Some(c) = self.circs.get_mut(&key) else {
            return;
        };
        let hops = c.circ.as_ref().map_or(0, Circuit::n_hops);
        if c.cannibalized {
            // Its extension is no build-time measurement (`hop_added`): given up at once.
            self.fail_circ(
                key,
                Error::Circuit(CircError::BuildTimeout { hop: hops }),
                true,
            );
            return;
        }
        if !c.timed_out && c.path.len() >= 3 && self.build_times.enough_to_compute() {
            self.build_times.record_timeout(hops > 0);
            c.timed_out = true;
            c.deadline = c.started + self.build_times.close_timeout();
            let waiting: Vec<u64> = self
                .streams
                .iter()
                .filter(|(_, s)| s.circ == Some(key) && s.id.is_none())
                .map(|(h, _)| *h)
                .collect();
            for h in waiting {
                if let Some(s) = self.streams.get_mut(&h) {
                    s.circ = None;
                }
            }
            if c.deadline > now {
                return;
            }
        }
        if c.timed_out {
            self.build_times.record_abandoned(c.started, now);
        } else if c.path.len() >= 3 {
            self.build_times.record_timeout(hops > 0);
        }
        self.fail_circ(
            key,
            Error::Circuit(CircError::BuildTimeout { hop: hops }),
            true,
        );
    }

    /// Circuit `key` failed or closed: tell the paths module whom to blame, send its
    /// DESTROY if it has one queued (`flush`), and retry or end its streams.
    pub(super) fn fail_circ(&mut self, key: u64, why: Error, flush: bool) {
        let wall = self.wall_now();
        let Some(mut c) = self.circs.remove(&key) else {
            return;
        };
        let hops = c.circ.as_ref().map_or(0, Circuit::n_hops);
        if let Some(t) = c.ticket {
            match c.phase {
                // The extension of a cannibalized circuit failed: its guard and its first
                // hops worked (the guard was reported built); the relay it was extended to
                // is avoided as a fresh build's failed hop would be, unless we timed out.
                CircPhase::AwaitChannel | CircPhase::Building if c.cannibalized => {
                    let timeout = matches!(why, Error::Circuit(CircError::BuildTimeout { .. }));
                    if let (false, Some(h)) = (timeout, c.path.get(hops)) {
                        self.guards.avoid(h.rsa_id, wall);
                    }
                    self.guards.closed(t, wall);
                }
                CircPhase::AwaitChannel | CircPhase::Building => {
                    let blame = match (&why, hops) {
                        (Error::Circuit(CircError::BuildTimeout { .. }), _) => Blame::Other,
                        (_, 0) => Blame::Guard,
                        (_, h) => Blame::Hop(h),
                    };
                    self.guards.failed(t, blame, wall);
                }
                _ => self.guards.closed(t, wall),
            }
        }
        let failed_hop = match c.phase {
            CircPhase::AwaitChannel | CircPhase::Building => c.path.get(hops).map(|h| h.rsa_id),
            _ => None,
        };
        if let (Some(m), Some(id)) = (c.circ.as_mut(), c.id) {
            if flush {
                if !m.is_closed() {
                    m.destroy();
                }
                if let Some(cell @ ChanMsg::Destroy(_)) = m.poll_cell(&mut self.rng) {
                    if let Some(ch) = self.chans.get_mut(&c.conn).and_then(|x| x.channel.as_mut()) {
                        let _ = ch.send(id, &cell);
                    }
                }
            }
            self.by_id.remove(&(c.conn, id));
        }
        if let Some(ch) = self.chans.get_mut(&c.conn) {
            ch.remove_circ(key);
        }
        self.chan_maybe_idle(c.conn);
        let mut waiting: Vec<u64> = c.streams.values().copied().collect();
        waiting.extend(
            self.streams
                .iter()
                .filter(|(_, s)| s.circ == Some(key) && s.id.is_none())
                .map(|(h, _)| *h),
        );
        for h in waiting {
            self.stream_lost_circuit(h, &why, failed_hop);
        }
    }

    /// Close circuit `key` ourselves (no longer needed).
    pub(super) fn close_circ(&mut self, key: u64) {
        self.fail_circ(
            key,
            Error::Network("circuit closed by the client".into()),
            true,
        );
    }

    /// When circuit `c` must be looked at again: its build deadline, or when it becomes
    /// idle long enough to close.
    pub(super) fn circ_deadline(&self, c: &Circ) -> Option<Instant> {
        match c.phase {
            CircPhase::AwaitChannel | CircPhase::Building => Some(c.deadline),
            _ if !c.streams.is_empty() => None,
            // No stream will come: closed once its last stream is gone.
            _ if c.unusable => Some(c.idle_since),
            // A hosted service's introduction circuit lives until its publisher closes it.
            _ if c.purpose == Purpose::ServiceIntro => None,
            CircPhase::Waiting | CircPhase::Open => Some(match (c.purpose, c.dirty_since) {
                (Purpose::Dir, _) => c.idle_since + DIR_CIRCUIT_IDLE,
                (_, Some(d)) => (d + self.cfg.max_circuit_dirtiness).max(c.idle_since),
                (_, None) => c.idle_since + c.clean_idle,
            }),
        }
    }

    /// Build deadlines, the circuits' own timers, idle circuits.
    pub(super) fn circ_timeouts(&mut self) {
        let now = self.now;
        let keys: Vec<u64> = self.circs.keys().copied().collect();
        for key in keys {
            let Some(c) = self.circs.get_mut(&key) else {
                continue;
            };
            if let Some(m) = c.circ.as_mut() {
                m.handle_timeout(now);
            }
            self.circ_events(key);
            let Some(c) = self.circs.get(&key) else {
                continue;
            };
            if self.circ_deadline(c).is_some_and(|d| d <= now) {
                if matches!(c.phase, CircPhase::AwaitChannel | CircPhase::Building) {
                    self.build_expired(key);
                } else {
                    self.close_circ(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_cell::relaymsg::RelayMsg;

    #[test]
    fn onion_service_messages_only_where_expected() {
        let m = RelayMsg::RendezvousEstablished;
        assert_eq!(
            msg_verdict(Purpose::ClientRend, 2, 3, None, &m),
            Verdict::Accept
        );
        assert!(matches!(
            msg_verdict(Purpose::General, 2, 3, None, &m),
            Verdict::Violation(_)
        ));
        assert!(matches!(
            msg_verdict(Purpose::ClientRend, 1, 3, None, &m),
            Verdict::Violation(_)
        ));
        assert!(matches!(
            msg_verdict(Purpose::ClientRend, 2, 3, StreamId::new(5), &m),
            Verdict::Violation(_)
        ));
        assert_eq!(
            msg_verdict(Purpose::General, 2, 3, None, &RelayMsg::Drop),
            Verdict::Ignore
        );
    }
}
