//! An onion service in the in-memory Tor network (rend-spec-v3 §2–§4 end to end).
//!
//! Relays run onion-circuit's real relay circuits ([`RelayCircuit`]: ntor / ntor-v3
//! handshakes, tor1 layers, SENDMEs); the client and the service run real client circuits
//! ([`Circuit`]); cells pass between them in memory, hop by hop, with a virtual clock that
//! advances one link latency per round and one seeded RNG. (Channels are left out here: the
//! link layer is exercised by onion-circuit's own network, `onion_circuit::sim`.) On top of
//! that, every relay can act as an HSDir (BEGIN_DIR, `POST /tor/hs/3/publish`,
//! `GET /tor/hs/3/<blinded key>`), an introduction point ([`IntroPoint`], ESTABLISH_INTRO
//! checked against the circuit's `KH`) and a rendezvous point ([`RendPoint`], the two circuits
//! joined with [`RelayCircuit::splice`]).
//!
//! [`run`] plays the whole story:
//!
//! 1. the service builds a 3-hop circuit to each of its introduction points and sends
//!    ESTABLISH_INTRO there (§3.1);
//! 2. it builds its descriptors for the two upload slots and POSTs them to the responsible
//!    HSDirs of the hash ring, each over a 3-hop circuit and a BEGIN_DIR stream (§2.2.4.2);
//! 3. the client computes the responsible HSDirs, fetches the descriptor over a 3-hop circuit
//!    and decrypts it (§2.2.4.1);
//! 4. it picks a rendezvous point, builds a circuit there and sends ESTABLISH_RENDEZVOUS
//!    (§3.2), then INTRODUCE1 over a circuit to an introduction point, which forwards it to
//!    the service as INTRODUCE2 and acknowledges it (§3.2, §3.3);
//! 5. the service completes hs-ntor, builds a circuit to the rendezvous point and sends
//!    RENDEZVOUS1; the rendezvous point joins the circuits and sends RENDEZVOUS2 to the client
//!    (§4.1, §4.2); both ends add the virtual hop (AES-256 / SHA3-256 tor1 layer);
//! 6. the client opens a stream over the joined circuit and fetches a page with HTTP/1.0; the
//!    service answers from a small web server; SENDMEs flow end to end through the splice.
//!
//! The [`HsReport`] records what each side built and what the protocol told it, so that tests
//! can check that neither learns the other's relays beyond the introduction points (which the
//! descriptor names) and the rendezvous point (which INTRODUCE2 names).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use onion_cell::relaymsg::{BeginFlags, EndReason};
use onion_cell::RelayCmd;
use onion_circuit::circuit::{CircConfig, CircEvent, Circuit, HandshakeKind, HopTarget};
use onion_circuit::flow::FlowStats;
use onion_circuit::relay::{RelayCircuit, RelayEvent, RelayKeys, RelayOutput};
use onion_circuit::sim::web::{expected_body, WebConn};
use onion_circuit::sim::StoryLine;
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::Digest as _;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use crate::cellmsg;
use crate::client::HsClient;
use crate::desc::ClientAuthConfig;
use crate::keys::ExpandedKeypair;
use crate::linkspec::LinkSpec;
use crate::relay::{IntroPoint, RendPoint};
use crate::ring::{HsDirParams, HsDirRelay, SharedRandom};
use crate::service::{HsService, HsServiceConfig, UPLOAD_PATH};
use crate::time::TimePeriodConfig;

/// The consensus `valid-after` the run pretends to be in (2026-11-23 07:20:00 UTC).
pub const VALID_AFTER: u64 = 1_795_418_400;
/// One-way delay of every link (one round of the run loop).
pub const LATENCY: Duration = Duration::from_millis(10);
/// Bound on rounds of one run-loop call (a safety net against a livelock).
const MAX_ROUNDS: usize = 100_000;
/// Bound on bytes buffered per HSDir request.
const MAX_DIR_REQUEST: usize = 64 * 1024;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct HsSimConfig {
    /// Seed of the one RNG every party draws from.
    pub seed: u64,
    /// Number of relays (at least 10: two path relays for each side, three introduction
    /// points, a rendezvous point and HSDirs).
    pub relays: usize,
    /// Size of the page body the client fetches.
    pub page_len: u64,
    /// Whether the service requires client authorization (the client holds the key).
    pub client_auth: bool,
}

impl Default for HsSimConfig {
    fn default() -> Self {
        HsSimConfig {
            seed: 1,
            relays: 12,
            page_len: 300_000,
            client_auth: false,
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HsSimError {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(&'static str),
    /// A step of the scenario failed.
    #[error("{step}: {detail}")]
    Step {
        /// The step.
        step: &'static str,
        /// What went wrong.
        detail: String,
    },
}

fn fail(step: &'static str, detail: impl core::fmt::Display) -> HsSimError {
    HsSimError::Step {
        step,
        detail: detail.to_string(),
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct HsReport {
    /// One line per significant event, in time order.
    pub story: Vec<StoryLine>,
    /// The service's onion address.
    pub address: String,
    /// The HTTP status line the client received.
    pub status_line: String,
    /// The page body the client received.
    pub body: Vec<u8>,
    /// The body the service's web server sent.
    pub expected_body: Vec<u8>,
    /// SHA-256 of `body`.
    pub digest: [u8; 32],
    /// Relays the client built circuits through (its own choices).
    pub client_path: BTreeSet<String>,
    /// Relays the service built circuits through (its own choices).
    pub service_path: BTreeSet<String>,
    /// Relays of the service named to the client by the protocol (the descriptor's
    /// introduction points).
    pub client_learned: BTreeSet<String>,
    /// Relays of the client named to the service by the protocol (INTRODUCE2's rendezvous
    /// point).
    pub service_learned: BTreeSet<String>,
    /// The service's guard and middle relays (private to it).
    pub service_private: BTreeSet<String>,
    /// The client's guard and middle relays (private to it).
    pub client_private: BTreeSet<String>,
    /// The introduction points.
    pub intro_points: Vec<String>,
    /// The rendezvous point.
    pub rend_point: String,
    /// For each relay, the parties and relays adjacent to it on some circuit.
    pub neighbours: Vec<(String, BTreeSet<String>)>,
    /// Virtual time of the whole run.
    pub total_time: Duration,
    /// The HSDirs the descriptors were uploaded to (public: chosen by the hash ring).
    pub hsdirs: BTreeSet<String>,
    /// The client's flow-control counters on the rendezvous circuit (SENDMEs end to end).
    pub client_stats: FlowStats,
    /// The service's flow-control counters on its rendezvous circuit.
    pub service_stats: FlowStats,
}

impl HsReport {
    /// The neighbours a relay saw.
    pub fn neighbours_of(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.neighbours
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// The digest as lowercase hex.
    pub fn digest_hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

struct RelayNode {
    name: String,
    keys: RelayKeys,
    target: HopTarget,
    specs: Vec<LinkSpec>,
    hsdir: bool,
    intro: IntroPoint<usize>,
    rend: RendPoint<usize>,
    /// Descriptors by base64 blinded key.
    store: HashMap<String, String>,
    /// Directory requests being received, by (slot, stream).
    dir_in: HashMap<(usize, u16), Vec<u8>>,
    seen: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy)]
enum Prev {
    Origin(usize),
    Slot(usize),
}

struct Slot {
    relay: usize,
    rc: RelayCircuit,
    prev: Prev,
    next: Option<usize>,
}

struct Origin {
    party: &'static str,
    circ: Circuit,
    first: Option<usize>,
    events: VecDeque<CircEvent>,
}

/// The service's web server on its rendezvous circuit.
struct Serving {
    origin: usize,
    stream: Option<StreamId>,
    web: WebConn,
    /// Bytes taken from the web server, not yet accepted by the circuit.
    pending: Vec<u8>,
    closed: bool,
}

struct Net {
    rng: ChaCha20Rng,
    start: Instant,
    now: Instant,
    relays: Vec<RelayNode>,
    slots: Vec<Slot>,
    origins: Vec<Origin>,
    splice: HashMap<usize, usize>,
    serving: Option<Serving>,
    story: Vec<StoryLine>,
    page_seed: u64,
}

impl Net {
    fn say(&mut self, party: &str, text: impl Into<String>) {
        self.story.push(StoryLine {
            at: self.now.saturating_duration_since(self.start),
            party: party.to_owned(),
            text: text.into(),
        });
    }

    fn relay_by_rsa(&self, rsa: &[u8; 20]) -> Option<usize> {
        self.relays.iter().position(|r| &r.keys.rsa_id.0 == rsa)
    }

    fn relay_by_specs(&self, specs: &[LinkSpec]) -> Option<usize> {
        specs
            .iter()
            .find_map(LinkSpec::as_rsa_id)
            .and_then(|id| self.relay_by_rsa(&id))
    }

    /// Build a circuit for `party` through `path`.
    fn build(&mut self, party: &'static str, path: &[usize]) -> Result<usize, HsSimError> {
        let first = *path.first().ok_or(HsSimError::Config("empty path"))?;
        let (circ, create) = Circuit::create(
            CircConfig::default(),
            &self.relays[first].target,
            HandshakeKind::NtorV3,
            self.now,
            &mut self.rng,
        )
        .map_err(|e| fail("create", e))?;
        let o = self.origins.len();
        self.origins.push(Origin {
            party,
            circ,
            first: None,
            events: VecDeque::new(),
        });
        let (rc, reply) =
            RelayCircuit::accept(&self.relays[first].keys, &create, self.now, &mut self.rng)
                .map_err(|e| fail("CREATE2", e))?;
        self.relays[first].seen.insert(party.to_owned());
        self.slots.push(Slot {
            relay: first,
            rc,
            prev: Prev::Origin(o),
            next: None,
        });
        self.origins[o].first = Some(self.slots.len() - 1);
        self.tick();
        self.origins[o]
            .circ
            .handle_cell(self.now, reply)
            .map_err(|e| fail("CREATED2", e))?;
        for &hop in &path[1..] {
            let t = self.relays[hop].target.clone();
            self.origins[o]
                .circ
                .extend(&t, self.now, &mut self.rng)
                .map_err(|e| fail("EXTEND2", e))?;
            self.run();
        }
        if self.origins[o].circ.n_hops() != path.len() {
            return Err(fail(
                "build",
                format!("{} hops of {}", self.origins[o].circ.n_hops(), path.len()),
            ));
        }
        self.origins[o].events.clear();
        let names: Vec<&str> = path.iter().map(|&i| self.relays[i].name.as_str()).collect();
        let line = format!("circuit {o} built: {}", names.join(" → "));
        self.say(party, line);
        Ok(o)
    }

    fn tick(&mut self) {
        self.now = self.now + LATENCY;
    }

    /// Send a relay message of `cmd` with `body` from origin `o` to its last hop.
    fn send_origin(&mut self, o: usize, cmd: RelayCmd, body: &[u8]) -> Result<(), HsSimError> {
        let m = cellmsg::to_relay_msg(cmd, body).map_err(|e| fail("encode", e))?;
        let c = &mut self.origins[o].circ;
        let last = c.n_hops().checked_sub(1).ok_or(fail("send", "no hop"))?;
        c.send_msg(last, 0, &m).map_err(|e| fail("send", e))
    }

    fn send_slot(&mut self, s: usize, cmd: RelayCmd, body: &[u8]) {
        match cellmsg::to_relay_msg(cmd, body) {
            Ok(m) => {
                if let Err(e) = self.slots[s].rc.send_msg(0, &m) {
                    let name = self.relays[self.slots[s].relay].name.clone();
                    self.say(&name, format!("cannot send {cmd}: {e}"));
                }
            }
            Err(e) => {
                let name = self.relays[self.slots[s].relay].name.clone();
                self.say(&name, format!("cannot encode {cmd}: {e}"));
            }
        }
    }

    /// Take the first message of `cmd` that origin `o` received.
    fn take_msg(&mut self, o: usize, cmd: RelayCmd) -> Option<Vec<u8>> {
        let ev = &mut self.origins[o].events;
        let i = ev
            .iter()
            .position(|e| matches!(e, CircEvent::Msg { msg, .. } if msg.cmd() == cmd))?;
        match ev.remove(i) {
            Some(CircEvent::Msg { msg, .. }) => cellmsg::body_of(&msg).ok(),
            _ => None,
        }
    }

    /// Pass cells and act on events until nothing moves.
    fn run(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for o in 0..self.origins.len() {
                while let Some(m) = self.origins[o].circ.poll_cell(&mut self.rng) {
                    moved = true;
                    if let Some(s) = self.origins[o].first {
                        let _ = self.slots[s].rc.handle_from_client(self.now, m);
                    }
                }
                while let Some(e) = self.origins[o].circ.poll_event() {
                    moved = true;
                    self.origins[o].events.push_back(e);
                }
            }
            for s in 0..self.slots.len() {
                while let Some(out) = self.slots[s].rc.poll_cell(&mut self.rng) {
                    moved = true;
                    match out {
                        RelayOutput::ToClient(m) => match self.slots[s].prev {
                            Prev::Origin(o) => {
                                let _ = self.origins[o].circ.handle_cell(self.now, m);
                            }
                            Prev::Slot(p) => {
                                let _ = self.slots[p].rc.handle_from_next(self.now, m);
                            }
                        },
                        RelayOutput::ToNext(m) => {
                            if let Some(n) = self.slots[s].next {
                                let _ = self.slots[n].rc.handle_from_client(self.now, m);
                            }
                        }
                    }
                }
                while let Some(b) = self.slots[s].rc.poll_spliced() {
                    moved = true;
                    if let Some(&other) = self.splice.get(&s) {
                        let _ = self.slots[other].rc.splice_in(b);
                    }
                }
                while let Some(e) = self.slots[s].rc.poll_event() {
                    moved = true;
                    self.relay_event(s, e);
                }
            }
            moved |= self.serve();
            if !moved {
                return;
            }
            self.tick();
        }
    }

    fn relay_event(&mut self, s: usize, e: RelayEvent) {
        let r = self.slots[s].relay;
        let name = self.relays[r].name.clone();
        match e {
            RelayEvent::Extend(req) => {
                let Some(j) = self.relay_by_rsa(&req.rsa_id.0) else {
                    self.slots[s]
                        .rc
                        .extend_failed(onion_cell::chancell::DestroyReason::CONNECTFAILED);
                    return;
                };
                match RelayCircuit::accept(
                    &self.relays[j].keys,
                    &req.create,
                    self.now,
                    &mut self.rng,
                ) {
                    Ok((rc, reply)) => {
                        self.slots.push(Slot {
                            relay: j,
                            rc,
                            prev: Prev::Slot(s),
                            next: None,
                        });
                        self.slots[s].next = Some(self.slots.len() - 1);
                        let jn = self.relays[j].name.clone();
                        self.relays[j].seen.insert(name.clone());
                        self.relays[r].seen.insert(jn);
                        let _ = self.slots[s].rc.handle_from_next(self.now, reply);
                    }
                    Err(_) => self.slots[s]
                        .rc
                        .extend_failed(onion_cell::chancell::DestroyReason::PROTOCOL),
                }
            }
            RelayEvent::Msg { msg, .. } => {
                let cmd = msg.cmd();
                let Ok(body) = cellmsg::body_of(&msg) else {
                    return;
                };
                self.hs_msg(s, &name, cmd, &body);
            }
            RelayEvent::BeginDir { stream } => {
                if self.relays[r].hsdir {
                    self.relays[r].dir_in.insert((s, stream.get()), Vec::new());
                    let _ = self.slots[s].rc.connected(stream, None);
                } else {
                    let _ = self.slots[s].rc.end_stream(stream, EndReason::NOTDIRECTORY);
                }
            }
            RelayEvent::Data { stream, data } => {
                let key = (s, stream.get());
                let Some(buf) = self.relays[r].dir_in.get_mut(&key) else {
                    return;
                };
                if buf.len() + data.len() > MAX_DIR_REQUEST {
                    self.relays[r].dir_in.remove(&key);
                    let _ = self.slots[s]
                        .rc
                        .end_stream(stream, EndReason::RESOURCELIMIT);
                    return;
                }
                buf.extend_from_slice(&data);
                let buf = buf.clone();
                if let Some(resp) = self.dir_request(r, &buf) {
                    self.relays[r].dir_in.remove(&key);
                    let _ = self.slots[s].rc.send(stream, &resp);
                    let _ = self.slots[s].rc.end_stream(stream, EndReason::DONE);
                }
            }
            _ => {}
        }
    }

    /// An HSDir's answer to a complete request, `None` while incomplete (dir-spec HTTP,
    /// rend-spec-v3 §2.2.6).
    fn dir_request(&mut self, r: usize, buf: &[u8]) -> Option<Vec<u8>> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = core::str::from_utf8(&buf[..end]).ok()?;
        let body = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let line = lines.next()?;
        let mut parts = line.split(' ');
        let (method, path) = (parts.next()?, parts.next()?);
        let name = self.relays[r].name.clone();
        let not_found = b"HTTP/1.0 404 Not found\r\n\r\n".to_vec();
        match method {
            "POST" if path == UPLOAD_PATH => {
                let len: usize = lines
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())?;
                if body.len() < len {
                    return None;
                }
                let text = core::str::from_utf8(&body[..len]).ok();
                let key = text
                    .and_then(|t| crate::desc::OuterDescriptor::parse(t).ok())
                    .and_then(|d| d.claimed_blinded_key().ok());
                match (text, key) {
                    (Some(t), Some(k)) => {
                        let b64 = crate::util::b64_pad(k.as_bytes());
                        self.say(
                            &name,
                            format!("HSDir stores descriptor for blinded key {}…", &b64[..8]),
                        );
                        self.relays[r].store.insert(b64, t.to_owned());
                        Some(b"HTTP/1.0 200 OK\r\n\r\n".to_vec())
                    }
                    _ => Some(b"HTTP/1.0 400 Bad descriptor\r\n\r\n".to_vec()),
                }
            }
            "GET" => {
                let key = path.strip_prefix("/tor/hs/3/")?;
                match self.relays[r].store.get(key) {
                    Some(t) => {
                        let t = t.clone();
                        self.say(
                            &name,
                            format!(
                                "HSDir serves descriptor for blinded key {}…",
                                key.get(..8).unwrap_or(key)
                            ),
                        );
                        let mut v =
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", t.len())
                                .into_bytes();
                        v.extend_from_slice(t.as_bytes());
                        Some(v)
                    }
                    None => {
                        self.say(&name, "HSDir has no such descriptor: 404");
                        Some(not_found)
                    }
                }
            }
            _ => Some(not_found),
        }
    }

    /// The onion-service roles of a relay: introduction and rendezvous point.
    fn hs_msg(&mut self, s: usize, name: &str, cmd: RelayCmd, body: &[u8]) {
        let r = self.slots[s].relay;
        if cmd == RelayCmd::ESTABLISH_INTRO {
            let kh = *self.slots[s].rc.kh();
            match self.relays[r].intro.handle_establish_intro(s, &kh, body) {
                Ok(reply) => {
                    self.say(
                        name,
                        "intro point: ESTABLISH_INTRO verified (auth key, signature, MAC over KH)",
                    );
                    self.send_slot(s, RelayCmd::INTRO_ESTABLISHED, &reply);
                }
                Err(e) => self.say(name, format!("intro point: ESTABLISH_INTRO refused: {e}")),
            }
        } else if cmd == RelayCmd::INTRODUCE1 {
            let routing = self.relays[r].intro.handle_introduce1(body);
            match &routing.to_service {
                Some((svc, b2)) => {
                    self.say(name, "intro point: INTRODUCE1 → INTRODUCE2 on the service's circuit, INTRODUCE_ACK to the client");
                    let (svc, b2) = (*svc, b2.clone());
                    self.send_slot(svc, RelayCmd::INTRODUCE2, &b2);
                }
                None => self.say(name, "intro point: INTRODUCE1 for an unknown service"),
            }
            self.send_slot(s, RelayCmd::INTRODUCE_ACK, &routing.ack);
        } else if cmd == RelayCmd::ESTABLISH_RENDEZVOUS {
            match self.relays[r].rend.handle_establish_rendezvous(s, body) {
                Ok(()) => {
                    self.say(name, "rendezvous point: cookie registered");
                    self.send_slot(s, RelayCmd::RENDEZVOUS_ESTABLISHED, &[]);
                }
                Err(e) => self.say(name, format!("rendezvous point: refused: {e}")),
            }
        } else if cmd == RelayCmd::RENDEZVOUS1 {
            match self.relays[r].rend.handle_rendezvous1(s, body) {
                Ok(j) => {
                    self.send_slot(j.client, RelayCmd::RENDEZVOUS2, &j.rendezvous2);
                    // RENDEZVOUS2 is queued before the join, so it is the client's next cell.
                    let a = self.slots[j.client].rc.splice();
                    let b = self.slots[s].rc.splice();
                    if a.is_ok() && b.is_ok() {
                        self.splice.insert(j.client, s);
                        self.splice.insert(s, j.client);
                        self.say(name, "rendezvous point: RENDEZVOUS1 matches the cookie: RENDEZVOUS2 to the client, circuits joined");
                    }
                }
                Err(e) => self.say(name, format!("rendezvous point: RENDEZVOUS1 refused: {e}")),
            }
        }
    }

    /// The service's web server: accept the stream, read the request, send the page within
    /// the windows, then close. Returns whether anything happened.
    fn serve(&mut self) -> bool {
        let Some(mut sv) = self.serving.take() else {
            return false;
        };
        let mut moved = false;
        let o = sv.origin;
        let events: Vec<CircEvent> = self.origins[o].events.drain(..).collect();
        for e in events {
            match e {
                CircEvent::IncomingStream { stream, host, port } => {
                    moved = true;
                    if sv.stream.is_none() && self.origins[o].circ.accept_stream(stream).is_ok() {
                        sv.stream = Some(stream);
                        self.say(
                            "service",
                            format!(
                                "incoming stream {} to {host}:{port} accepted (RELAY_CONNECTED)",
                                stream.get()
                            ),
                        );
                    } else {
                        let _ = self.origins[o]
                            .circ
                            .reject_stream(stream, EndReason::EXITPOLICY);
                    }
                }
                CircEvent::Data { stream, data } if Some(stream) == sv.stream => {
                    moved = true;
                    if let Some(line) = sv.web.handle_input(&data) {
                        self.say("service", format!("web server: request \"{line}\""));
                    }
                }
                other => self.origins[o].events.push_back(other),
            }
        }
        if let (Some(stream), false) = (sv.stream, sv.closed) {
            let circ = &mut self.origins[o].circ;
            loop {
                let cap = circ.send_capacity(stream);
                if cap == 0 {
                    break;
                }
                if sv.pending.is_empty() {
                    sv.pending = sv.web.poll_output(cap);
                    if sv.pending.is_empty() {
                        break;
                    }
                }
                let n = circ.send(stream, &sv.pending).unwrap_or(0);
                if n == 0 {
                    break;
                }
                moved = true;
                sv.pending.drain(..n);
            }
            if sv.web.is_done() && sv.pending.is_empty() && circ.close_stream(stream).is_ok() {
                moved = true;
                sv.closed = true;
                self.say(
                    "service",
                    "web server: page sent, stream closed (RELAY_END)",
                );
            }
        }
        self.serving = Some(sv);
        moved
    }

    /// Open a BEGIN_DIR stream on `o`, send `request`, collect the response until END.
    fn dir_exchange(&mut self, o: usize, request: &[u8]) -> Result<Vec<u8>, HsSimError> {
        let stream = self.origins[o]
            .circ
            .begin_dir(self.now)
            .map_err(|e| fail("BEGIN_DIR", e))?;
        self.run();
        self.stream_exchange(o, stream, request)
    }

    fn stream_exchange(
        &mut self,
        o: usize,
        stream: StreamId,
        request: &[u8],
    ) -> Result<Vec<u8>, HsSimError> {
        let connected = self.origins[o]
            .events
            .iter()
            .any(|e| matches!(e, CircEvent::StreamConnected { stream: s, .. } if *s == stream));
        if !connected {
            return Err(fail("stream", "not connected"));
        }
        let mut off = 0;
        while off < request.len() {
            let n = self.origins[o]
                .circ
                .send(stream, &request[off..])
                .map_err(|e| fail("send", e))?;
            off += n;
            self.run();
            if n == 0 {
                return Err(fail("send", "window closed"));
            }
        }
        self.run();
        let mut out = Vec::new();
        let mut ended = false;
        let events: Vec<CircEvent> = self.origins[o].events.drain(..).collect();
        for e in events {
            match e {
                CircEvent::Data { stream: s, data } if s == stream => out.extend_from_slice(&data),
                CircEvent::StreamEnded { stream: s, .. } if s == stream => ended = true,
                _ => {}
            }
        }
        if !ended {
            return Err(fail("stream", "no RELAY_END"));
        }
        Ok(out)
    }
}

fn split_http(resp: &[u8]) -> (String, &[u8]) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let line_end = resp.windows(2).position(|w| w == b"\r\n").unwrap_or(end);
    let status = String::from_utf8_lossy(&resp[..line_end.min(end)]).into_owned();
    (status, resp.get(end + 4..).unwrap_or_default())
}

fn make_relays(rng: &mut ChaCha20Rng, n: usize) -> Vec<RelayNode> {
    (0..n)
        .map(|i| {
            let mut rsa = [0u8; 20];
            let mut ed = [0u8; 32];
            rng.fill_bytes(&mut rsa);
            rng.fill_bytes(&mut ed);
            let ntor = NtorSecretKey::generate(rng);
            let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, (i as u8).wrapping_add(1)), 9001);
            let target = HopTarget {
                rsa_id: RsaIdentity(rsa),
                ed_id: Some(Ed25519Identity(ed)),
                ntor_key: *ntor.public(),
                addrs: vec![SocketAddr::new(IpAddr::V4(*addr.ip()), addr.port())],
                ntor_v3: true,
            };
            RelayNode {
                name: format!("relay{i}"),
                keys: RelayKeys {
                    rsa_id: RsaIdentity(rsa),
                    ed_id: Ed25519Identity(ed),
                    ntor_keys: vec![ntor],
                },
                target,
                specs: vec![
                    LinkSpec::ipv4(addr),
                    LinkSpec::rsa_id(rsa),
                    LinkSpec::ed25519_id(ed),
                ],
                hsdir: true,
                intro: IntroPoint::default(),
                rend: RendPoint::default(),
                store: HashMap::new(),
                dir_in: HashMap::new(),
                seen: BTreeSet::new(),
            }
        })
        .collect()
}

impl Net {
    /// `n` relays from `seed`. Path relays: 0, 1 for the client; 2, 3 for the service. They
    /// are not HSDirs, so that no descriptor circuit extends back to its own middle.
    fn new(seed: u64, n: usize) -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut relays = make_relays(&mut rng, n);
        for r in relays.iter_mut().take(4) {
            r.hsdir = false;
        }
        let start = Instant::ZERO;
        Net {
            rng,
            start,
            now: start,
            relays,
            slots: Vec::new(),
            origins: Vec::new(),
            splice: HashMap::new(),
            serving: None,
            story: Vec::new(),
            page_seed: seed ^ 0x5eed,
        }
    }
}

/// Run the onion-service story (see the module documentation).
pub fn run(cfg: &HsSimConfig) -> Result<HsReport, HsSimError> {
    if cfg.relays < 10 || cfg.relays > 200 {
        return Err(HsSimError::Config("relays must be 10..=200"));
    }
    let mut net = Net::new(cfg.seed, cfg.relays);
    let (c_guard, c_mid, s_guard, s_mid) = (0, 1, 2, 3);
    let unix = |net: &Net| VALID_AFTER + net.now.saturating_duration_since(net.start).as_secs();
    let tp = TimePeriodConfig::testing_network(20).map_err(|e| fail("time period", e))?;
    let params = HsDirParams {
        n_replicas: 2,
        spread_fetch: 2,
        spread_store: 3,
    };
    let sr = SharedRandom {
        current: Some([0xcc; 32]),
        previous: Some([0xbb; 32]),
    };
    let ring: Vec<HsDirRelay> = net
        .relays
        .iter()
        .map(|r| HsDirRelay {
            ed25519_id: r.keys.ed_id.0,
            rsa_id: r.keys.rsa_id.0,
            is_hsdir: r.hsdir,
        })
        .collect();

    // The service.
    let client_secret = {
        let mut k = [0u8; 32];
        net.rng.fill_bytes(&mut k);
        StaticSecret::from(k)
    };
    let mut scfg = HsServiceConfig::default();
    if cfg.client_auth {
        scfg.client_auth = Some(ClientAuthConfig {
            clients: vec![XPublic::from(&client_secret)],
        });
    }
    let mut service = HsService::new(ExpandedKeypair::generate(&mut net.rng), scfg);
    let address = service.address().to_string();
    net.say("service", format!("onion service {address} starts"));

    // 1. Introduction points: three of the relays 4.. chosen by the service.
    let mut candidates: Vec<usize> = (4..cfg.relays).collect();
    let mut ips = Vec::new();
    for _ in 0..3 {
        let k = (net.rng.next_u32() as usize) % candidates.len();
        ips.push(candidates.remove(k));
    }
    let mut ip_of_origin = HashMap::new();
    for &ipr in &ips {
        let ipi = service.add_intro_point(
            &mut net.rng,
            net.relays[ipr].specs.clone(),
            net.relays[ipr].target.ntor_key.0,
        );
        let o = net.build("service", &[s_guard, s_mid, ipr])?;
        let kh = *net.origins[o]
            .circ
            .hop_kh(2)
            .ok_or(fail("ESTABLISH_INTRO", "no KH"))?;
        let body = service
            .establish_intro(ipi, &kh)
            .map_err(|e| fail("ESTABLISH_INTRO", e))?;
        net.send_origin(o, RelayCmd::ESTABLISH_INTRO, &body)?;
        net.run();
        net.take_msg(o, RelayCmd::INTRO_ESTABLISHED)
            .ok_or(fail("ESTABLISH_INTRO", "no INTRO_ESTABLISHED"))?;
        service
            .handle_intro_established(ipi)
            .map_err(|e| fail("INTRO_ESTABLISHED", e))?;
        ip_of_origin.insert(o, ipi);
        let n = net.relays[ipr].name.clone();
        net.say("service", format!("introduction point {n} established"));
    }

    // 2. Descriptors to the responsible HSDirs.
    let mut uploads: Vec<(usize, String)> = Vec::new();
    let mut hsdirs = BTreeSet::new();
    for slot in sr.service_upload(&tp, VALID_AFTER) {
        let now_unix = unix(&net);
        let text = service
            .build_descriptor(&mut net.rng, slot.period, now_unix)
            .map_err(|e| fail("descriptor", e))?;
        let dirs = service.hsdirs_to_upload(&ring, &slot, &params);
        let names: Vec<&str> = dirs.iter().map(|&d| net.relays[d].name.as_str()).collect();
        let line = format!(
            "descriptor for time period {} ({} bytes, encrypted) → HSDirs {}",
            slot.period.num(),
            text.len(),
            names.join(", ")
        );
        net.say("service", line);
        uploads.extend(dirs.into_iter().map(|d| (d, text.clone())));
        hsdirs.extend(uploads.iter().map(|(d, _)| net.relays[*d].name.clone()));
    }
    for (d, text) in uploads {
        let o = net.build("service", &[s_guard, s_mid, d])?;
        let req = format!(
            "POST {UPLOAD_PATH} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        let resp = net.dir_exchange(o, req.as_bytes())?;
        let (status, _) = split_http(&resp);
        if !status.contains(" 200 ") {
            return Err(fail("upload", status));
        }
        net.origins[o].circ.destroy();
        net.run();
    }

    // 3. The client fetches the descriptor.
    let addr = crate::OnionAddress::parse(&address).map_err(|e| fail("address", e))?;
    net.say("client", format!("connecting to {address}"));
    let mut client = HsClient::new(addr).map_err(|e| fail("client", e))?;
    let sel = sr.client_fetch(&tp, VALID_AFTER);
    let dirs = client.hsdirs_to_fetch(&ring, &sel, &params);
    let key = cfg.client_auth.then_some(&client_secret);
    let mut fetched = false;
    for d in dirs {
        let o = net.build("client", &[c_guard, c_mid, d])?;
        let req = format!("GET {} HTTP/1.0\r\n\r\n", client.fetch_path(sel.period));
        let resp = net.dir_exchange(o, req.as_bytes())?;
        net.origins[o].circ.destroy();
        net.run();
        let (status, body) = split_http(&resp);
        let dn = net.relays[d].name.clone();
        if !status.contains(" 200 ") {
            net.say(
                "client",
                format!("HSDir {dn}: {status}; trying the next one"),
            );
            continue;
        }
        let text = String::from_utf8_lossy(body).into_owned();
        let now_unix = unix(&net);
        match client.handle_descriptor(&text, sel.period, key, now_unix) {
            Ok(()) => {
                net.say(
                    "client",
                    format!("descriptor from HSDir {dn} verified and decrypted"),
                );
                fetched = true;
                break;
            }
            Err(e) => net.say(
                "client",
                format!("descriptor from HSDir {dn} rejected: {e}"),
            ),
        }
    }
    if !fetched {
        return Err(fail("fetch", "no HSDir had a usable descriptor"));
    }
    let desc_ips: Vec<Vec<LinkSpec>> = client
        .descriptor()
        .map(|d| {
            d.second_layer
                .intro_points
                .iter()
                .map(|ip| ip.link_specifiers.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut client_learned = BTreeSet::new();
    for specs in &desc_ips {
        let r = net
            .relay_by_specs(specs)
            .ok_or(fail("descriptor", "unknown intro point"))?;
        client_learned.insert(net.relays[r].name.clone());
    }
    let line = format!(
        "descriptor names introduction points {}",
        client_learned
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    net.say("client", line);

    // 4. Rendezvous point and introduction.
    let rp_candidates: Vec<usize> = (4..cfg.relays)
        .filter(|r| !client_learned.contains(&net.relays[*r].name))
        .collect();
    let rp = rp_candidates[(net.rng.next_u32() as usize) % rp_candidates.len()];
    let rend_o = net.build("client", &[c_guard, c_mid, rp])?;
    let est = client
        .establish_rendezvous(&mut net.rng)
        .map_err(|e| fail("ESTABLISH_RENDEZVOUS", e))?;
    net.send_origin(rend_o, RelayCmd::ESTABLISH_RENDEZVOUS, &est)?;
    net.run();
    net.take_msg(rend_o, RelayCmd::RENDEZVOUS_ESTABLISHED)
        .ok_or(fail("ESTABLISH_RENDEZVOUS", "no RENDEZVOUS_ESTABLISHED"))?;
    client
        .handle_rendezvous_established()
        .map_err(|e| fail("RENDEZVOUS_ESTABLISHED", e))?;
    let rpn = net.relays[rp].name.clone();
    net.say("client", format!("rendezvous point {rpn} ready"));

    let rp_key = net.relays[rp].target.ntor_key.0;
    let rp_specs = net.relays[rp].specs.clone();
    let (ipd, intro1) = client
        .introduce(&mut net.rng, &rp_key, rp_specs)
        .map_err(|e| fail("INTRODUCE1", e))?;
    let ipr = net
        .relay_by_specs(&ipd.link_specifiers)
        .ok_or(fail("INTRODUCE1", "unknown intro point"))?;
    let intro_o = net.build("client", &[c_guard, c_mid, ipr])?;
    net.send_origin(intro_o, RelayCmd::INTRODUCE1, &intro1)?;
    let ipn = net.relays[ipr].name.clone();
    net.say("client", format!("INTRODUCE1 sent through {ipn}"));
    net.run();
    let ack = net
        .take_msg(intro_o, RelayCmd::INTRODUCE_ACK)
        .ok_or(fail("INTRODUCE1", "no INTRODUCE_ACK"))?;
    client
        .handle_introduce_ack(&ack)
        .map_err(|e| fail("INTRODUCE_ACK", e))?;
    net.say("client", "INTRODUCE_ACK: success");
    net.origins[intro_o].circ.destroy();

    // 5. The service answers at the rendezvous point.
    let mut intro2 = None;
    for (&o, &ipi) in &ip_of_origin {
        if let Some(b) = net.take_msg(o, RelayCmd::INTRODUCE2) {
            intro2 = Some((ipi, b));
        }
    }
    let (ipi, intro2) = intro2.ok_or(fail("INTRODUCE2", "none arrived"))?;
    let req = service
        .handle_introduce2(&mut net.rng, ipi, &intro2)
        .map_err(|e| fail("INTRODUCE2", e))?;
    let srp = net
        .relay_by_specs(&req.link_specifiers)
        .ok_or(fail("INTRODUCE2", "unknown rendezvous point"))?;
    let mut service_learned = BTreeSet::new();
    service_learned.insert(net.relays[srp].name.clone());
    let srpn = net.relays[srp].name.clone();
    net.say(
        "service",
        format!("INTRODUCE2 decrypted, hs-ntor done: meet the client at {srpn}"),
    );
    let svc_o = net.build("service", &[s_guard, s_mid, srp])?;
    net.send_origin(svc_o, RelayCmd::RENDEZVOUS1, &req.rendezvous1)?;
    let layer = req
        .keys
        .service_layer()
        .map_err(|e| fail("virtual hop", e))?;
    net.origins[svc_o]
        .circ
        .add_virtual_hop(Box::new(layer))
        .map_err(|e| fail("virtual hop", e))?;
    net.origins[svc_o].circ.set_accept_inbound_streams(true);
    net.serving = Some(Serving {
        origin: svc_o,
        stream: None,
        web: WebConn::new(net.page_seed),
        pending: Vec::new(),
        closed: false,
    });
    net.run();
    let r2 = net
        .take_msg(rend_o, RelayCmd::RENDEZVOUS2)
        .ok_or(fail("RENDEZVOUS2", "none arrived"))?;
    let keys = client
        .handle_rendezvous2(&r2)
        .map_err(|e| fail("RENDEZVOUS2", e))?;
    let layer = keys.client_layer().map_err(|e| fail("virtual hop", e))?;
    net.origins[rend_o]
        .circ
        .add_virtual_hop(Box::new(layer))
        .map_err(|e| fail("virtual hop", e))?;
    net.origins[rend_o].events.clear();
    net.say(
        "client",
        "RENDEZVOUS2: hs-ntor verified, virtual hop added (AES-256, SHA3-256)",
    );

    // 6. A page over the joined circuit.
    let stream = net.origins[rend_o]
        .circ
        .begin(&address, 80, BeginFlags::default(), net.now)
        .map_err(|e| fail("BEGIN", e))?;
    net.run();
    let t0 = net.now;
    let req = format!("GET /{} HTTP/1.0\r\nHost: {address}\r\n\r\n", cfg.page_len);
    net.say(
        "client",
        format!("stream {} connected; GET /{}", stream.get(), cfg.page_len),
    );
    let resp = net.stream_exchange(rend_o, stream, req.as_bytes())?;
    let (status_line, body) = split_http(&resp);
    let body = body.to_vec();
    let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
    let took = net.now.saturating_duration_since(t0);
    net.say(
        "client",
        format!(
            "{status_line}: {} bytes in {:.2} s of virtual time",
            body.len(),
            took.as_secs_f64()
        ),
    );
    let client_stats = net.origins[rend_o].circ.stats();
    let service_stats = net.origins[svc_o].circ.stats();
    net.origins[rend_o].circ.destroy();
    net.run();
    net.say("client", "rendezvous circuit destroyed");

    let mut client_path = BTreeSet::new();
    let mut service_path = BTreeSet::new();
    for s in &net.slots {
        let mut p = s.prev;
        let owner = loop {
            match p {
                Prev::Origin(o) => break net.origins[o].party,
                Prev::Slot(q) => p = net.slots[q].prev,
            }
        };
        let n = net.relays[s.relay].name.clone();
        if owner == "client" {
            client_path.insert(n);
        } else {
            service_path.insert(n);
        }
    }
    let name = |i: usize| net.relays[i].name.clone();
    let mut story = net.story.clone();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    story.push(StoryLine {
        at: net.now.saturating_duration_since(net.start),
        party: "client".into(),
        text: format!("page SHA-256 {hex}"),
    });
    Ok(HsReport {
        story,
        address,
        status_line,
        expected_body: expected_body(net.page_seed, cfg.page_len),
        body,
        digest,
        client_path,
        service_path,
        client_learned,
        service_learned,
        service_private: [name(s_guard), name(s_mid)].into_iter().collect(),
        client_private: [name(c_guard), name(c_mid)].into_iter().collect(),
        intro_points: ips.iter().map(|&i| name(i)).collect(),
        rend_point: name(rp),
        neighbours: net
            .relays
            .iter()
            .map(|r| (r.name.clone(), r.seen.clone()))
            .collect(),
        total_time: net.now.saturating_duration_since(net.start),
        hsdirs,
        client_stats,
        service_stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::IntroduceAck;
    use proptest::prelude::*;

    fn service(net: &mut Net) -> HsService {
        HsService::new(
            ExpandedKeypair::generate(&mut net.rng),
            HsServiceConfig::default(),
        )
    }

    /// ESTABLISH_INTRO whose MAC covers another circuit's KH is refused by the intro point
    /// (rend-spec-v3 §3.1.1), over real circuits; the right KH is accepted.
    #[test]
    fn establish_intro_with_wrong_kh_refused() {
        let mut net = Net::new(11, 10);
        let mut svc = service(&mut net);
        let ip = svc.add_intro_point(&mut net.rng, net.relays[5].specs.clone(), [0; 32]);
        let o = net.build("service", &[2, 3, 5]).unwrap();
        let wrong = *net.origins[o].circ.hop_kh(1).unwrap();
        let body = svc.establish_intro(ip, &wrong).unwrap();
        net.send_origin(o, RelayCmd::ESTABLISH_INTRO, &body)
            .unwrap();
        net.run();
        assert!(net.take_msg(o, RelayCmd::INTRO_ESTABLISHED).is_none());
        assert!(net.story.iter().any(|l| l.text.contains("refused")));
        let o2 = net.build("service", &[2, 3, 5]).unwrap();
        let kh = *net.origins[o2].circ.hop_kh(2).unwrap();
        let body = svc.establish_intro(ip, &kh).unwrap();
        net.send_origin(o2, RelayCmd::ESTABLISH_INTRO, &body)
            .unwrap();
        net.run();
        assert!(net.take_msg(o2, RelayCmd::INTRO_ESTABLISHED).is_some());
    }

    /// INTRODUCE1 for a service the intro point does not know: INTRODUCE_ACK with status 1
    /// (rend-spec-v3 §3.2.3), and nothing is forwarded.
    #[test]
    fn introduce1_for_unknown_service_nacked() {
        let mut net = Net::new(12, 10);
        let mut svc = service(&mut net);
        let ip = svc.add_intro_point(&mut net.rng, net.relays[6].specs.clone(), [1; 32]);
        svc.handle_intro_established(ip).unwrap();
        let period = TimePeriodConfig::testing_network(20)
            .unwrap()
            .period_at(VALID_AFTER);
        let text = svc
            .build_descriptor(&mut net.rng, period, VALID_AFTER)
            .unwrap();
        let mut client = HsClient::new(svc.address()).unwrap();
        client
            .handle_descriptor(&text, period, None, VALID_AFTER)
            .unwrap();
        client.establish_rendezvous(&mut net.rng).unwrap();
        client.handle_rendezvous_established().unwrap();
        let (_, body) = client
            .introduce(&mut net.rng, &[2; 32], net.relays[7].specs.clone())
            .unwrap();
        let o = net.build("client", &[0, 1, 6]).unwrap();
        net.send_origin(o, RelayCmd::INTRODUCE1, &body).unwrap();
        net.run();
        let ack = net.take_msg(o, RelayCmd::INTRODUCE_ACK).unwrap();
        assert_eq!(IntroduceAck::parse(&ack).unwrap().status, 1);
        assert!(net.origins.iter().all(|x| x.events.is_empty()));
    }

    /// RENDEZVOUS1 with an unknown cookie joins nothing and the client gets no RENDEZVOUS2.
    #[test]
    fn rendezvous1_unknown_cookie_refused() {
        let mut net = Net::new(13, 10);
        let o = net.build("service", &[2, 3, 8]).unwrap();
        let body = crate::msg::Rendezvous1 {
            rend_cookie: [7; 20],
            handshake_info: [0; 64],
        }
        .encode();
        net.send_origin(o, RelayCmd::RENDEZVOUS1, &body).unwrap();
        net.run();
        assert!(net.splice.is_empty());
        assert!(net
            .story
            .iter()
            .any(|l| l.text.contains("RENDEZVOUS1 refused")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The HSDir's request handling never panics on arbitrary bytes.
        #[test]
        fn hsdir_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut net = Net::new(14, 10);
            let _ = net.dir_request(5, &bytes);
            let mut req = b"GET /tor/hs/3/".to_vec();
            req.extend_from_slice(&bytes);
            req.extend_from_slice(b" HTTP/1.0\r\n\r\n");
            let _ = net.dir_request(5, &req);
            let mut post = format!("POST {UPLOAD_PATH} HTTP/1.0\r\nContent-Length: {}\r\n\r\n", bytes.len()).into_bytes();
            post.extend_from_slice(&bytes);
            prop_assert!(net.dir_request(5, &post).is_some());
        }
    }
}
