//! Hosting a v3 onion service (rend-spec-v3 §2.2.4.2, §3.1, §3.3, §4.2): the worked example
//! of driving `onion_hs::publish::Publisher` (which owns `onion_hs::service::HsService`) over
//! circuits built by [`hsnet::start_circuit_to`].
//!
//! [`Service::run`] is one loop:
//! 1. Every few voting intervals a fresh directory comes from `refresh` and becomes a
//!    [`ConsensusView`] for the publisher (HSDirs with the ring inputs, relays usable as
//!    introduction points, SRVs, valid-after, the time-period parameters; a testing network's
//!    period is 24 voting intervals, as C tor's `TestingTorNetwork`).
//! 2. The publisher's actions are carried out: a 4-hop circuit to an introduction point, then
//!    its ESTABLISH_INTRO MACed with the last hop's `KH` (`Circuit::hop_kh`); a descriptor
//!    POSTed over BEGIN_DIR to an HSDir; an introduction circuit closed. Outcomes go back to
//!    the publisher, which decides about retries, rotation and re-uploads.
//! 3. INTRO_ESTABLISHED, INTRODUCE2 and closed circuits on the introduction circuits are
//!    reported; an INTRODUCE2 leads to a 4-hop circuit to the client's rendezvous point,
//!    RENDEZVOUS1, the client's virtual hop, and streams spliced to TCP connections to the
//!    target.
//!
//! Nothing a client or the target does can stall the loop or grow our memory without bound:
//!
//! - INTRODUCE2 is rate-limited ([`INTRO_RATE`], [`INTRO_BURST`]) and queued up to
//!   [`MAX_PENDING_INTROS`] (the newest is dropped beyond, and the drops logged), before
//!   any decryption. Rendezvous circuits are built without blocking the loop
//!   ([`hsnet::start_circuit_to`]), [`MAX_REND_BUILDS`] at a time, each within
//!   [`REND_TIMEOUT`]. Congestion control (proposal 324) runs on a rendezvous circuit
//!   only when the service has it on ([`Service::set_congestion_control`]; its descriptor
//!   then advertises `flow-control`) and the client asks in INTRODUCE2
//!   (`RendezvousRequest::asks_congestion_control`): then the client's virtual hop runs
//!   Tor Vegas with the service's consensus `sendme_inc` and `_onion` parameters, as C tor's
//!   `hs_circ_setup_congestion_control`. A request to a service without it is refused (C
//!   tor too: the client should not have asked, its descriptor had no `flow-control`).
//! - The target is connected on a thread of its own; each target connection is a
//!   [`Pipe`]: bytes from the target are read only as far as the stream and circuit windows
//!   can send them (tor-spec §7.3-7.4), and bytes for the target are queued up to
//!   [`OUT_HIGH`](crate::net::pipe::OUT_HIGH), then the stream is held (no stream SENDME: the client stops after one
//!   window). At most [`MAX_STREAMS`] target connections are open.
//! - Introduction circuits and descriptor uploads go on without blocking the loop either
//!   (each within [`STEP_TIMEOUT`]); a new channel to a guard is opened off the loop
//!   ([`Client::start_connect`]; an open one is shared).

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_cell::relaymsg::{EndReason, RelayMsg};
use onion_cell::RelayCmd;
use onion_circuit::cc::CcConfig;
use onion_circuit::circuit::CircEvent;
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use onion_dir::netview::RelayIdx;
use onion_dir::select::path::PathConfig;
use onion_dir::{RelayFlags, RsaIdentity};
use onion_hs::cellmsg::{body_of, to_relay_msg};
use onion_hs::linkspec::LS_RSA_ID;
use onion_hs::publish::{
    ConsensusView, IntroCandidate, IntroId, PublishAction, Publisher, UploadId,
};
use onion_hs::service::{RendezvousRequest, UPLOAD_PATH};
use rand_core::OsRng;

use super::bootstrap::{Directory, REFRESH_RETRY};
use super::client::{Client, Purpose};
use super::event::{ConnId, Input};
use super::hsnet::{self, HsParams, PendingCirc};
use super::http;
use super::pipe::{next_blocked, read_grant, Pipe, OUT_LOW, READ_AHEAD};

/// How long one circuit build, ESTABLISH_INTRO or upload may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a rendezvous may take, from INTRODUCE2 to a built circuit (C tor's
/// `MAX_REND_TIMEOUT`, 30 s); a queued request older than half of it is dropped, as C tor
/// drops one it could not answer before the client gives up.
const REND_TIMEOUT: Duration = Duration::from_secs(30);

/// Rendezvous circuits built at the same time, at most (C tor's
/// `MAX_CHEAP_REND_CIRCUITS_IN_PROGRESS`); further introductions wait in the queue.
const MAX_REND_BUILDS: usize = 16;

/// Attempts (paths) at reaching one client's rendezvous point.
const REND_ATTEMPTS: u32 = 2;

/// Introductions waiting for a rendezvous circuit, at most. When full, the newest
/// INTRODUCE2 is dropped and logged (C tor trims its pending-rendezvous queue when it is
/// over its limit); the client retries through another introduction point.
const MAX_PENDING_INTROS: usize = 64;

/// INTRODUCE2 accepted per second on average, and in a burst: C tor's defaults for the
/// introduction-point DoS defence (`HiddenServiceEnableIntroDoSRatePerSec` 25,
/// `...BurstPerSec` 200), applied here by the service to all its introduction points
/// together, before any decryption. Beyond it, INTRODUCE2 is dropped.
const INTRO_RATE: u64 = 25;
/// See [`INTRO_RATE`].
const INTRO_BURST: u64 = 200;

/// Target connections open (or being opened) at the same time, at most; a BEGIN beyond it
/// is refused with END RESOURCELIMIT. Each costs a socket and two threads ([`Pipe`]).
const MAX_STREAMS: usize = 256;

/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A token bucket ([`INTRO_RATE`], [`INTRO_BURST`]) over the loop's clock.
struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens, in thousandths.
    milli: u64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            milli: burst * 1000,
            last: now,
        }
    }

    /// Take one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let ms =
            u64::try_from(now.saturating_duration_since(self.last).as_millis()).unwrap_or(u64::MAX);
        self.last = now.max(self.last);
        self.milli = self
            .milli
            .saturating_add(ms.saturating_mul(self.rate))
            .min(self.burst * 1000);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Whether to take an INTRODUCE2 when `queued` introductions wait: not when the queue is
/// full ([`MAX_PENDING_INTROS`]: the newest is dropped), nor beyond the rate limit; decided
/// before any decryption, so that a flood costs little.
fn admit(bucket: &mut TokenBucket, queued: usize, now: Instant) -> bool {
    queued < MAX_PENDING_INTROS && bucket.take(now)
}

/// Where a client stream's target connection stands.
enum TargetState {
    /// The connect runs on its own thread; the stream is held (no SENDME), so what the
    /// client sends meanwhile is at most one stream window.
    Connecting {
        /// Data that arrived before the target answered.
        early: Vec<u8>,
    },
    /// Connected: bytes flow through the pipe.
    Open {
        pipe: Pipe,
        /// Bytes from the target the circuit has not taken yet (at most [`READ_AHEAD`]).
        up: Vec<u8>,
        /// Read credit granted to the pipe and not yet used.
        in_flight: usize,
        /// The target closed its side: end the stream once `up` is sent.
        eof: bool,
        /// Its output reached [`OUT_HIGH`](crate::net::pipe::OUT_HIGH) and has not drained to [`OUT_LOW`]: stream held.
        blocked: bool,
    },
}

/// A client stream spliced to a TCP connection to the target.
struct Splice {
    circ: usize,
    stream: StreamId,
    conn: ConnId,
    state: TargetState,
}

/// An INTRODUCE2 waiting for its rendezvous circuit.
struct PendingIntro {
    req: RendezvousRequest,
    rp: RelayIdx,
    /// The congestion control of its rendezvous circuit ([`rendezvous_cc`]).
    cc: Option<CcConfig>,
    since: Instant,
    attempts: u32,
}

/// A rendezvous circuit being built for a client.
struct RendBuild {
    intro: PendingIntro,
    circ: PendingCirc,
}

/// An introduction circuit.
struct IntroCirc {
    intro: IntroId,
    circ: usize,
    /// INTRO_ESTABLISHED arrived.
    established: bool,
    /// Until when INTRO_ESTABLISHED may take.
    deadline: Instant,
}

/// An introduction circuit being built.
struct IntroBuild {
    intro: IntroId,
    name: String,
    circ: PendingCirc,
}

/// Where a descriptor upload stands.
enum UploadStage {
    /// The circuit to the HSDir is being built.
    Building(PendingCirc),
    /// BEGIN_DIR sent on circuit `circ`: the request goes out once the stream is
    /// connected, as far as the windows allow; the response is collected.
    Open {
        circ: usize,
        stream: StreamId,
        connected: bool,
        sent: usize,
        response: Vec<u8>,
    },
}

/// A descriptor upload to one HSDir.
struct Upload {
    upload: UploadId,
    /// The HSDir and time period, for the log.
    name: String,
    request: Vec<u8>,
    stage: UploadStage,
    deadline: Instant,
}

/// The most an HSDir's answer to an upload may be.
const MAX_UPLOAD_RESPONSE: usize = 64 * 1024;

/// One step of upload `u`: `None` while it goes on, its outcome once it ended.
fn upload_step(client: &mut Client, u: &mut Upload, now: Instant) -> Option<Result<(), String>> {
    if now >= u.deadline {
        return Some(Err(format!("no answer within {STEP_TIMEOUT:?}")));
    }
    if let UploadStage::Building(p) = &mut u.stage {
        match hsnet::poll_circuit(client, p)? {
            Err(e) => return Some(Err(e)),
            Ok(c) => {
                client.set_purpose(c, Purpose::HsDir);
                let circ = &mut client.circs.get_mut(c)?.circ;
                match circ.begin_dir(now) {
                    Ok(stream) => {
                        u.stage = UploadStage::Open {
                            circ: c,
                            stream,
                            connected: false,
                            sent: 0,
                            response: Vec::new(),
                        }
                    }
                    Err(e) => return Some(Err(format!("BEGIN_DIR: {e}"))),
                }
            }
        }
    }
    let UploadStage::Open {
        circ: c,
        stream,
        connected,
        sent,
        response,
    } = &mut u.stage
    else {
        return None;
    };
    let Some(circ) = client.circs.get_mut(*c) else {
        return Some(Err("circuit released".into()));
    };
    while let Some(ev) = circ.events.pop_front() {
        match ev {
            CircEvent::StreamConnected { stream: s, .. } if s == *stream => *connected = true,
            CircEvent::Data { stream: s, data } if s == *stream => {
                if response.len() + data.len() > MAX_UPLOAD_RESPONSE {
                    return Some(Err(format!(
                        "response larger than {MAX_UPLOAD_RESPONSE} bytes"
                    )));
                }
                response.extend_from_slice(&data);
            }
            CircEvent::StreamEnded { stream: s, reason } if s == *stream => {
                if !*connected {
                    return Some(Err(format!(
                        "BEGIN_DIR refused: {}",
                        super::client::end_reason(reason)
                    )));
                }
                return Some(match http::parse_response(response, true) {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status_text())),
                    Err(e) => Err(e.to_string()),
                });
            }
            _ => {}
        }
    }
    if let Some(why) = &circ.dead {
        return Some(Err(why.clone()));
    }
    if *connected && *sent < u.request.len() {
        match circ.circ.send(*stream, &u.request[*sent..]) {
            Ok(n) => *sent += n,
            Err(e) => return Some(Err(format!("send: {e}"))),
        }
    }
    None
}

/// The result of a connect done off the loop: the stream's id and the socket.
type Connected = (ConnId, std::io::Result<TcpStream>);

/// A running onion service.
pub struct Service {
    publisher: Publisher,
    dir: Directory,
    config: PathConfig,
    testing: bool,
    intro_circs: Vec<IntroCirc>,
    /// Introduction circuits being built.
    intro_builds: Vec<IntroBuild>,
    /// Descriptor uploads under way.
    uploads: Vec<Upload>,
    /// Uploads of the current batch that succeeded, and the failures.
    batch_ok: u64,
    batch_failed: Vec<String>,
    /// Rendezvous circuits joined to a client.
    rend_circs: Vec<usize>,
    /// Introductions waiting for a rendezvous circuit (at most [`MAX_PENDING_INTROS`]).
    pending: VecDeque<PendingIntro>,
    /// Rendezvous circuits being built (at most [`MAX_REND_BUILDS`]).
    rend_builds: Vec<RendBuild>,
    /// INTRODUCE2 rate limit.
    intro_bucket: Option<TokenBucket>,
    /// INTRODUCE2 dropped by the rate limit or a full queue since the last log line.
    dropped: u64,
    splices: Vec<Splice>,
    /// Connects finished off the loop (each also wakes the loop through the inbox).
    connected_rx: Receiver<Connected>,
    connected_tx: Sender<Connected>,
    target: SocketAddr,
    virtual_port: u16,
    /// Successful uploads so far (the first batch announces the service).
    uploads_ok: u64,
    announced: bool,
    /// Congestion control for rendezvous circuits whose client asks for it.
    cc: Option<CcConfig>,
}

/// Seconds since the Unix epoch (the publisher's clock).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Service {
    /// A service publishing through `publisher` over the verified directory `dir` (of a
    /// testing network if `testing`), forwarding streams to `virtual_port` to `target`.
    pub fn new(
        publisher: Publisher,
        dir: Directory,
        config: PathConfig,
        testing: bool,
        target: SocketAddr,
        virtual_port: u16,
    ) -> Service {
        let (connected_tx, connected_rx) = channel();
        Service {
            publisher,
            dir,
            config,
            testing,
            intro_circs: Vec::new(),
            intro_builds: Vec::new(),
            uploads: Vec::new(),
            batch_ok: 0,
            batch_failed: Vec::new(),
            rend_circs: Vec::new(),
            pending: VecDeque::new(),
            rend_builds: Vec::new(),
            intro_bucket: None,
            dropped: 0,
            splices: Vec::new(),
            connected_rx,
            connected_tx,
            target,
            virtual_port,
            uploads_ok: 0,
            announced: false,
            cc: None,
        }
    }

    /// Run congestion control (proposal 324) on the rendezvous circuits of clients that ask
    /// for it, with `cc` (the consensus `_onion` parameters and `cc_sendme_inc`, the value
    /// the descriptor advertises); `None` (the default) refuses such introductions.
    pub fn set_congestion_control(&mut self, cc: Option<CcConfig>) {
        self.cc = cc;
    }

    /// What the publisher needs of the current directory.
    fn consensus_view(&self) -> Result<ConsensusView, String> {
        let hp = HsParams::of(&self.dir, self.testing)?;
        let hsdirs = hsnet::hsdir_ring(&self.dir)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let intro_candidates = self
            .dir
            .view
            .relays()
            .iter()
            .filter(|r| {
                r.flags
                    .contains(RelayFlags::STABLE | RelayFlags::RUNNING | RelayFlags::VALID)
            })
            .filter_map(|r| {
                Some(IntroCandidate {
                    rsa_id: r.rsa_id.0,
                    onion_key: r.ntor_onion_key?,
                    link_specifiers: hsnet::link_specs(r),
                })
            })
            .collect();
        Ok(ConsensusView {
            valid_after: onion_dir::Timestamp::from_unix(hp.valid_after),
            periods: hp.periods,
            shared_random: hp.shared_random,
            params: hp.params,
            hsdirs,
            intro_candidates,
        })
    }

    /// Start what the publisher asks until it asks nothing more: introduction circuits and
    /// uploads are followed by [`Service::intro_builds_done`] and [`Service::uploads_step`].
    /// Nothing here waits for the network.
    fn do_actions(&mut self, client: &mut Client) {
        while let Some(a) = self.publisher.poll_action() {
            self.do_action(client, a);
        }
    }

    fn do_action(&mut self, client: &mut Client, a: PublishAction) {
        match a {
            PublishAction::BuildIntroCircuit { intro, relay } => {
                let name = self.name(&relay);
                let r = match self.dir.view.by_rsa_id(&RsaIdentity(relay)) {
                    Some(idx) => {
                        let deadline = client.deadline(STEP_TIMEOUT);
                        hsnet::start_circuit_to(client, &self.dir, &self.config, idx, deadline)
                    }
                    None => Err("not in the consensus".into()),
                };
                match r {
                    Ok(circ) => self.intro_builds.push(IntroBuild { intro, name, circ }),
                    Err(e) => {
                        eprintln!("onion: introduction point {name}: {e}");
                        let _ = self.publisher.intro_circuit_closed(
                            onion_dir::Timestamp::from_unix(unix_now()),
                            intro,
                            &mut OsRng,
                        );
                    }
                }
            }
            PublishAction::CloseIntroCircuit { intro } => {
                if let Some(k) = self.intro_circs.iter().position(|c| c.intro == intro) {
                    let ic = self.intro_circs.remove(k);
                    client.destroy(ic.circ);
                    eprintln!("onion: introduction point rotated out");
                }
                if let Some(k) = self.intro_builds.iter().position(|b| b.intro == intro) {
                    let b = self.intro_builds.swap_remove(k);
                    hsnet::abandon(client, b.circ);
                }
            }
            PublishAction::Upload {
                upload,
                hsdir,
                period,
                descriptor,
                ..
            } => {
                let name = format!("{} (period {})", self.name(&hsdir), period.num());
                let deadline = client.deadline(STEP_TIMEOUT);
                let r = match self.dir.view.by_rsa_id(&RsaIdentity(hsdir)) {
                    Some(idx) => {
                        hsnet::start_circuit_to(client, &self.dir, &self.config, idx, deadline)
                    }
                    None => Err("not in the consensus".into()),
                };
                let mut request = format!(
                    "POST {UPLOAD_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
                    descriptor.len()
                )
                .into_bytes();
                request.extend_from_slice(descriptor.as_bytes());
                match r {
                    Ok(circ) => self.uploads.push(Upload {
                        upload,
                        name,
                        request,
                        stage: UploadStage::Building(circ),
                        deadline,
                    }),
                    Err(e) => self.upload_done(upload, &name, Err(e)),
                }
            }
        }
    }

    fn name(&self, rsa: &[u8; 20]) -> String {
        self.dir
            .view
            .by_rsa_id(&RsaIdentity(*rsa))
            .and_then(|i| self.dir.view.relay(i))
            .map_or_else(|| "?".to_owned(), |r| r.nickname.clone())
    }

    /// Introduction circuits that finished building: ESTABLISH_INTRO, MACed with the last
    /// hop's `KH` (rend-spec-v3 §3.1.1), or the failure reported to the publisher.
    fn intro_builds_done(&mut self, client: &mut Client) {
        let mut k = 0;
        while k < self.intro_builds.len() {
            let Some(r) = hsnet::poll_circuit(client, &mut self.intro_builds[k].circ) else {
                k += 1;
                continue;
            };
            let b = self.intro_builds.swap_remove(k);
            let established = r.and_then(|c| {
                self.establish_intro(client, b.intro, c).inspect_err(|_| {
                    client.destroy(c);
                })
            });
            match established {
                Ok(()) => eprintln!("onion: introduction circuit to {} built", b.name),
                Err(e) => {
                    eprintln!("onion: introduction point {}: {e}", b.name);
                    let _ = self.publisher.intro_circuit_closed(
                        onion_dir::Timestamp::from_unix(unix_now()),
                        b.intro,
                        &mut OsRng,
                    );
                }
            }
        }
    }

    /// ESTABLISH_INTRO on the built circuit `c` (§3.1).
    fn establish_intro(
        &mut self,
        client: &mut Client,
        intro: IntroId,
        c: usize,
    ) -> Result<(), String> {
        let circ = &client.circs.get(c).ok_or("circuit released")?.circ;
        let last = circ.n_hops().checked_sub(1).ok_or("circuit has no hops")?;
        let kh = *circ.hop_kh(last).ok_or("no KH for the last hop")?;
        let body = self
            .publisher
            .intro_circuit_built(intro, &kh)
            .map_err(|e| format!("ESTABLISH_INTRO: {e}"))?;
        send(client, c, RelayCmd::ESTABLISH_INTRO, &body)?;
        self.intro_circs.push(IntroCirc {
            intro,
            circ: c,
            established: false,
            deadline: client.deadline(STEP_TIMEOUT),
        });
        Ok(())
    }

    /// Uploads under way: once the circuit to the HSDir is built, a BEGIN_DIR stream, the
    /// POST (dir-spec §4.3 / rend-spec-v3 §2.2.6), and the response until the HSDir ends the
    /// stream; each outcome goes to the publisher.
    fn uploads_step(&mut self, client: &mut Client) {
        let now = client.clock.now();
        let mut k = 0;
        while k < self.uploads.len() {
            match upload_step(client, &mut self.uploads[k], now) {
                None => k += 1,
                Some(r) => {
                    let u = self.uploads.swap_remove(k);
                    match u.stage {
                        UploadStage::Building(p) => hsnet::abandon(client, p),
                        UploadStage::Open { circ, .. } => client.destroy(circ),
                    }
                    self.upload_done(u.upload, &u.name, r);
                }
            }
        }
    }

    /// An upload ended: reported to the publisher; once none is under way, one log line
    /// for the batch (and the first success announces the service).
    fn upload_done(&mut self, upload: UploadId, name: &str, r: Result<(), String>) {
        self.publisher.upload_result(
            onion_dir::Timestamp::from_unix(unix_now()),
            upload,
            r.is_ok(),
            &mut OsRng,
        );
        match r {
            Ok(()) => self.batch_ok += 1,
            Err(e) => self.batch_failed.push(format!("{name}: {e}")),
        }
        if !self.uploads.is_empty() {
            return;
        }
        eprintln!("onion: descriptor uploaded to {} HSDirs", self.batch_ok);
        for e in self.batch_failed.drain(..) {
            eprintln!("onion: upload to HSDir {e}");
        }
        self.uploads_ok += self.batch_ok;
        self.batch_ok = 0;
        if self.uploads_ok > 0 && !self.announced {
            self.announced = true;
            eprintln!(
                "onion: service published; forwarding port {} to {}",
                self.virtual_port, self.target
            );
        }
    }

    /// Publish and serve clients, forever; when the consensus's refresh time comes (dir-spec
    /// §5.1, [`Directory::refresh_delay`]) a new directory comes from `refresh`, so that a
    /// new time period or shared random value is seen within a voting interval or two.
    /// Fails only if the first directory gives no usable consensus view.
    pub fn run(
        &mut self,
        client: &mut Client,
        refresh: &dyn Fn(&mut Client, &Directory) -> Result<Directory, String>,
    ) -> Result<(), String> {
        let view = self.consensus_view()?;
        self.publisher.set_consensus(
            onion_dir::Timestamp::from_unix(unix_now()),
            view,
            &mut OsRng,
        );
        let mut next_refresh = client.deadline(self.dir.refresh_delay());
        loop {
            self.do_actions(client);
            let mut wake = next_refresh;
            if let Some(t) = self
                .publisher
                .poll_timeout()
                .map(onion_dir::Timestamp::unix)
            {
                let now = unix_now();
                wake = wake.min(client.deadline(Duration::from_secs(t.saturating_sub(now))));
            }
            for ic in self.intro_circs.iter().filter(|c| !c.established) {
                wake = wake.min(ic.deadline);
            }
            if let Some(p) = self.pending.front() {
                wake = wake.min(p.since + REND_TIMEOUT / 2);
            }
            for u in &self.uploads {
                wake = wake.min(u.deadline);
            }
            let _ = client.step(wake);
            let now = client.clock.now();
            if now >= next_refresh {
                let delay = match refresh(client, &self.dir).and_then(|dir| {
                    self.dir = dir;
                    self.consensus_view()
                }) {
                    Ok(view) => {
                        self.publisher.set_consensus(
                            onion_dir::Timestamp::from_unix(unix_now()),
                            view,
                            &mut OsRng,
                        );
                        self.dir.refresh_delay()
                    }
                    Err(e) => {
                        eprintln!("onion: directory refresh: {e}; retrying in {REFRESH_RETRY:?}");
                        REFRESH_RETRY
                    }
                };
                // Never sooner than REFRESH_RETRY: a directory whose refresh time has
                // already passed (or that the network has not replaced yet) is not asked
                // for again in a loop.
                next_refresh = client.deadline(delay.max(REFRESH_RETRY));
            }
            self.turn(client);
            if self
                .publisher
                .poll_timeout()
                .is_some_and(|t| t.unix() <= unix_now())
            {
                self.publisher
                    .handle_timeout(onion_dir::Timestamp::from_unix(unix_now()), &mut OsRng);
            }
        }
    }

    /// Everything but the publisher's actions, once per turn of the loop: target inputs,
    /// introductions, rendezvous builds, stream events and bytes.
    fn turn(&mut self, client: &mut Client) {
        while let Some(input) = client.take_other() {
            self.target_input(input);
        }
        while let Ok((conn, r)) = self.connected_rx.try_recv() {
            self.target_connected(client, conn, r);
        }
        self.intro_builds_done(client);
        self.uploads_step(client);
        self.intro_events(client);
        self.start_rendezvous(client);
        self.rend_builds_done(client);
        self.rend_events(client);
        self.pump(client);
    }

    /// INTRO_ESTABLISHED, INTRODUCE2 and closures on the introduction circuits, reported to
    /// the publisher.
    fn intro_events(&mut self, client: &mut Client) {
        let now = client.clock.now();
        let mut k = 0;
        while k < self.intro_circs.len() {
            let (intro, c) = (self.intro_circs[k].intro, self.intro_circs[k].circ);
            while let Some(ev) = client.circs.get_mut(c).and_then(|c| c.events.pop_front()) {
                let CircEvent::Msg { msg, .. } = ev else {
                    continue;
                };
                match *msg {
                    RelayMsg::IntroEstablished(_) if !self.intro_circs[k].established => {
                        self.intro_circs[k].established = true;
                        eprintln!("onion: introduction point established");
                        let _ = self.publisher.intro_established(
                            onion_dir::Timestamp::from_unix(unix_now()),
                            intro,
                            &mut OsRng,
                        );
                    }
                    RelayMsg::Introduce2(_) => {
                        if let Err(e) = self.introduce2(client, intro, &msg) {
                            eprintln!("onion: INTRODUCE2: {e}");
                        }
                    }
                    _ => {}
                }
            }
            let ic = &self.intro_circs[k];
            let dead = client
                .circs
                .get(c)
                .map_or_else(|| Some("circuit released".to_string()), |c| c.dead.clone());
            let late = !ic.established && now >= ic.deadline;
            if dead.is_some() || late {
                let why = dead.unwrap_or_else(|| "no INTRO_ESTABLISHED in time".into());
                eprintln!("onion: introduction circuit gone: {why}");
                client.destroy(c);
                self.intro_circs.remove(k);
                let _ = self.publisher.intro_circuit_closed(
                    onion_dir::Timestamp::from_unix(unix_now()),
                    intro,
                    &mut OsRng,
                );
                continue;
            }
            k += 1;
        }
        if self.dropped > 0 {
            eprintln!(
                "onion: {} INTRODUCE2 dropped (more than {INTRO_RATE}/s, burst {INTRO_BURST}, \
                 or {MAX_PENDING_INTROS} introductions already waiting)",
                self.dropped
            );
            self.dropped = 0;
        }
    }

    /// An INTRODUCE2: rate-limited, decrypted and checked by the publisher, then queued for
    /// a rendezvous circuit (rend-spec-v3 §3.3, §4.2).
    fn introduce2(
        &mut self,
        client: &mut Client,
        intro: IntroId,
        msg: &RelayMsg<'_>,
    ) -> Result<(), String> {
        let now = client.clock.now();
        let bucket = self
            .intro_bucket
            .get_or_insert_with(|| TokenBucket::new(INTRO_RATE, INTRO_BURST, now));
        if !admit(bucket, self.pending.len(), now) {
            self.dropped += 1;
            return Ok(());
        }
        let body = body_of(msg).map_err(|e| e.to_string())?;
        let req = self
            .publisher
            .handle_introduce2(
                onion_dir::Timestamp::from_unix(unix_now()),
                intro,
                &body,
                &mut OsRng,
            )
            .map_err(|e| e.to_string())?;
        let cc = rendezvous_cc(self.cc, req.asks_congestion_control())?;
        let rp_id = req
            .link_specifiers
            .iter()
            .find(|l| l.ty == LS_RSA_ID)
            .and_then(|l| <[u8; 20]>::try_from(l.body.as_slice()).ok())
            .ok_or("rendezvous point without an RSA identity")?;
        let rp = self
            .dir
            .view
            .by_rsa_id(&RsaIdentity(rp_id))
            .ok_or("rendezvous point not in the consensus")?;
        self.pending.push_back(PendingIntro {
            req,
            rp,
            cc,
            since: now,
            attempts: 0,
        });
        Ok(())
    }

    /// Start rendezvous circuits for queued introductions, up to [`MAX_REND_BUILDS`] at a
    /// time; drop the ones that waited too long.
    fn start_rendezvous(&mut self, client: &mut Client) {
        let now = client.clock.now();
        while self.rend_builds.len() < MAX_REND_BUILDS {
            let Some(mut p) = self.pending.pop_front() else {
                return;
            };
            if now >= p.since + REND_TIMEOUT / 2 && p.attempts == 0 {
                eprintln!("onion: introduction waited too long for a rendezvous circuit: dropped");
                continue;
            }
            p.attempts += 1;
            let deadline = p.since + REND_TIMEOUT;
            match hsnet::start_circuit_to(client, &self.dir, &self.config, p.rp, deadline) {
                Ok(circ) => self.rend_builds.push(RendBuild { intro: p, circ }),
                Err(e) => self.rend_failed(p, &e, now),
            }
        }
    }

    /// A rendezvous attempt failed: retried on another path while attempts and time remain.
    fn rend_failed(&mut self, p: PendingIntro, why: &str, now: Instant) {
        if p.attempts < REND_ATTEMPTS && now < p.since + REND_TIMEOUT {
            eprintln!("onion: rendezvous circuit attempt {}: {why}", p.attempts);
            self.pending.push_front(p);
        } else {
            eprintln!("onion: rendezvous with a client failed: {why}");
        }
    }

    /// Rendezvous circuits that finished building: RENDEZVOUS1, the client's virtual hop,
    /// and streams accepted from now on (rend-spec-v3 §4.2).
    fn rend_builds_done(&mut self, client: &mut Client) {
        let now = client.clock.now();
        let mut k = 0;
        while k < self.rend_builds.len() {
            let Some(r) = hsnet::poll_circuit(client, &mut self.rend_builds[k].circ) else {
                k += 1;
                continue;
            };
            let b = self.rend_builds.swap_remove(k);
            let cc = b.intro.cc;
            let joined = r.and_then(|c| match join_client(client, c, &b.intro.req, cc) {
                Ok(()) => Ok(c),
                Err(e) => {
                    client.destroy(c);
                    Err(e)
                }
            });
            match joined {
                Ok(c) => {
                    match cc {
                        Some(cc) => eprintln!(
                            "onion: rendezvous with a client (congestion control, \
                             sendme_inc {})",
                            cc.sendme_inc
                        ),
                        None => eprintln!("onion: rendezvous with a client"),
                    }
                    self.rend_circs.push(c);
                }
                Err(e) => self.rend_failed(b.intro, &e, now),
            }
        }
    }

    /// Streams opened, data and ends on the rendezvous circuits; circuits that closed.
    fn rend_events(&mut self, client: &mut Client) {
        for c in self.rend_circs.clone() {
            while let Some(ev) = client.circs.get_mut(c).and_then(|c| c.events.pop_front()) {
                match ev {
                    CircEvent::IncomingStream { stream, port, .. } => {
                        self.incoming_stream(client, c, stream, port);
                    }
                    CircEvent::Data { stream, data } => {
                        let Some(i) = self.find(c, stream) else {
                            continue;
                        };
                        match &mut self.splices[i].state {
                            TargetState::Connecting { early } => early.extend_from_slice(&data),
                            TargetState::Open { pipe, .. } => pipe.push(&data),
                        }
                    }
                    CircEvent::StreamEnded { stream, .. } => {
                        if let Some(i) = self.find(c, stream) {
                            // The client's END: flush what it sent, then close.
                            let s = self.splices.swap_remove(i);
                            if let TargetState::Open { pipe, .. } = s.state {
                                pipe.finish();
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut gone = Vec::new();
        self.rend_circs.retain(|&c| {
            let dead = client
                .circs
                .get(c)
                .map_or_else(|| Some("circuit released".to_string()), |c| c.dead.clone());
            match dead {
                Some(why) => {
                    let (links, circs) = client.held();
                    eprintln!(
                        "onion: rendezvous circuit gone: {why} ({links} channels, {circs} \
                         circuits held; {} circuit slots)",
                        client.circuit_slots()
                    );
                    gone.push(c);
                    false
                }
                None => true,
            }
        });
        for c in gone {
            while let Some(i) = self.splices.iter().position(|s| s.circ == c) {
                let s = self.splices.swap_remove(i);
                if let TargetState::Open { pipe, .. } = s.state {
                    pipe.abort();
                }
            }
            client.destroy(c);
        }
    }

    /// A client asked for a stream (RELAY_BEGIN on the rendezvous circuit): refused if not
    /// to our port or over [`MAX_STREAMS`]; otherwise held while the target is connected on
    /// a thread of its own, so that the loop never waits for the target.
    fn incoming_stream(&mut self, client: &mut Client, c: usize, stream: StreamId, port: u16) {
        let Some(circ) = client.circs.get_mut(c) else {
            return;
        };
        let circ = &mut circ.circ;
        if port != self.virtual_port {
            let _ = circ.reject_stream(stream, EndReason::EXITPOLICY);
            return;
        }
        if self.splices.len() >= MAX_STREAMS {
            eprintln!("onion: {MAX_STREAMS} target connections open: stream refused");
            let _ = circ.reject_stream(stream, EndReason::RESOURCELIMIT);
            return;
        }
        circ.hold_stream(stream, true);
        let (conn, wake) = client.inbox().sender();
        let tx = self.connected_tx.clone();
        let target = self.target;
        let spawned = std::thread::Builder::new()
            .name(format!("connect-{conn}"))
            .spawn(move || {
                let r = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT);
                if tx.send((conn, r)).is_ok() {
                    // Wake the loop; the result waits in the channel.
                    let _ = wake.send(Input::Bytes(conn, Vec::new()));
                }
            });
        if spawned.is_err() {
            if let Some(circ) = client.circs.get_mut(c) {
                let _ = circ.circ.reject_stream(stream, EndReason::RESOURCELIMIT);
            }
            return;
        }
        self.splices.push(Splice {
            circ: c,
            stream,
            conn,
            state: TargetState::Connecting { early: Vec::new() },
        });
    }

    /// A connect finished: the stream is accepted (RELAY_CONNECTED) and its pipe started,
    /// or refused (END CONNECTREFUSED, or what accepting it failed with).
    fn target_connected(
        &mut self,
        client: &mut Client,
        conn: ConnId,
        r: std::io::Result<TcpStream>,
    ) {
        // The stream may have ended meanwhile: the socket is then just dropped.
        let Some(i) = self.splices.iter().position(|s| s.conn == conn) else {
            return;
        };
        let (c, stream) = (self.splices[i].circ, self.splices[i].stream);
        let Some(circ) = client.circs.get_mut(c).map(|c| &mut c.circ) else {
            self.splices.swap_remove(i);
            return;
        };
        let sock = match r {
            Ok(sock) => sock,
            Err(e) => {
                eprintln!("onion: target {}: {e}", self.target);
                let _ = circ.reject_stream(stream, EndReason::CONNECTREFUSED);
                self.splices.swap_remove(i);
                return;
            }
        };
        let (_, tx) = client.inbox().sender();
        let pipe = match Pipe::start(sock, conn, tx) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("onion: target connection: {e}");
                if let Some(circ) = client.circs.get_mut(c) {
                    let _ = circ.circ.reject_stream(stream, EndReason::RESOURCELIMIT);
                }
                self.splices.swap_remove(i);
                return;
            }
        };
        let circ = &mut client.circs[c].circ;
        if let Err(e) = circ.accept_stream(stream) {
            eprintln!("onion: stream cannot be accepted: {e}");
            pipe.abort();
            self.splices.swap_remove(i);
            return;
        }
        let s = &mut self.splices[i];
        if let TargetState::Connecting { early } = &s.state {
            pipe.push(early);
        }
        s.state = TargetState::Open {
            pipe,
            up: Vec::new(),
            in_flight: 0,
            eof: false,
            blocked: false,
        };
        // Released by the next pump unless the early data already filled the pipe.
        circ.hold_stream(stream, false);
    }

    /// Move bytes both ways as far as windows and buffers allow; end finished streams.
    fn pump(&mut self, client: &mut Client) {
        let mut i = 0;
        while i < self.splices.len() {
            let s = &mut self.splices[i];
            let Some(circ) = client
                .circs
                .get_mut(s.circ)
                .filter(|c| c.dead.is_none())
                .map(|c| &mut c.circ)
            else {
                i += 1;
                continue;
            };
            let TargetState::Open {
                pipe,
                up,
                in_flight,
                eof,
                blocked,
            } = &mut s.state
            else {
                i += 1;
                continue;
            };
            if !up.is_empty() {
                if let Ok(n) = circ.send(s.stream, up) {
                    up.drain(..n);
                }
            }
            if *eof && up.is_empty() {
                let _ = circ.close_stream(s.stream);
                let s = self.splices.swap_remove(i);
                if let TargetState::Open { pipe, .. } = s.state {
                    pipe.finish();
                }
                continue;
            }
            let want = circ.send_capacity(s.stream).min(READ_AHEAD);
            let g = read_grant(want, up.len(), *in_flight);
            pipe.grant(g);
            *in_flight += g;
            let was = *blocked;
            *blocked = next_blocked(*blocked, pipe.queued());
            if *blocked {
                pipe.wake_below(OUT_LOW);
            }
            if *blocked != was {
                circ.hold_stream(s.stream, *blocked);
            }
            i += 1;
        }
        let _ = client.flush();
    }

    fn find(&self, circ: usize, stream: StreamId) -> Option<usize> {
        self.splices
            .iter()
            .position(|s| s.circ == circ && s.stream == stream)
    }

    /// Bytes or end of stream from a target connection's pipe.
    fn target_input(&mut self, input: Input) {
        let (Input::Bytes(conn, _) | Input::Closed(conn, _)) = &input else {
            return;
        };
        let Some(s) = self.splices.iter_mut().find(|s| s.conn == *conn) else {
            return;
        };
        let TargetState::Open {
            up, in_flight, eof, ..
        } = &mut s.state
        else {
            return;
        };
        match input {
            Input::Bytes(_, data) => {
                *in_flight = in_flight.saturating_sub(data.len());
                up.extend_from_slice(&data);
            }
            // End of the target's output (the pipe reports a failed write the same way):
            // the stream ends once what was read is sent.
            _ => *eof = true,
        }
    }
}

/// The congestion control of a client's rendezvous circuit: the service's `offered` one if
/// the client `asks` (proposal 324 §4.2; C tor's `hs_circ_setup_congestion_control`),
/// fixed windows if not; a request to a service that offers none is refused, as C tor
/// refuses an INTRODUCE2 asking for it when its network does not enable it.
fn rendezvous_cc(offered: Option<CcConfig>, asks: bool) -> Result<Option<CcConfig>, String> {
    match (offered, asks) {
        (Some(cc), true) => Ok(Some(cc)),
        (None, true) => Err(
            "the client asks for congestion control (proposal 324), which \
                             this service does not run and does not advertise: \
                             introduction refused"
                .into(),
        ),
        (_, false) => Ok(None),
    }
}

/// Join the client on the built rendezvous circuit `c`: RENDEZVOUS1, then the client's
/// virtual hop (congestion-controlled with `cc` if given), and inbound streams accepted
/// (rend-spec-v3 §4.2).
fn join_client(
    client: &mut Client,
    c: usize,
    req: &RendezvousRequest,
    cc: Option<CcConfig>,
) -> Result<(), String> {
    send(client, c, RelayCmd::RENDEZVOUS1, &req.rendezvous1)?;
    let layer = req.keys.service_layer().map_err(|e| e.to_string())?;
    let circ = &mut client.circs.get_mut(c).ok_or("circuit released")?.circ;
    match cc {
        Some(cc) => circ.add_virtual_hop_cc(Box::new(layer), cc),
        None => circ.add_virtual_hop(Box::new(layer)),
    }
    .map_err(|e| format!("virtual hop: {e}"))?;
    circ.set_accept_inbound_streams(true);
    Ok(())
}

/// Send an onion-service message body built by onion-hs to the last hop of circuit `c`.
fn send(client: &mut Client, c: usize, cmd: RelayCmd, body: &[u8]) -> Result<(), String> {
    let msg = to_relay_msg(cmd, body).map_err(|e| format!("{cmd:?}: {e}"))?;
    hsnet::send_to_last(client, c, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_control_only_when_offered_and_asked() {
        let cc = CcConfig {
            sendme_inc: 33,
            ..CcConfig::default()
        };
        assert_eq!(rendezvous_cc(Some(cc), true), Ok(Some(cc)));
        assert_eq!(rendezvous_cc(Some(cc), false), Ok(None));
        assert_eq!(rendezvous_cc(None, false), Ok(None));
        assert!(rendezvous_cc(None, true)
            .unwrap_err()
            .contains("introduction refused"));
    }

    #[test]
    fn intro_rate_limit_allows_the_burst_then_the_rate() {
        let t0 = Instant::from_duration(Duration::from_secs(100));
        let mut b = TokenBucket::new(INTRO_RATE, INTRO_BURST, t0);
        let n = (0..1000).take_while(|_| b.take(t0)).count();
        assert_eq!(n as u64, INTRO_BURST);
        assert!(!b.take(t0));
        // One second later: the rate's worth, not more.
        let t1 = t0 + Duration::from_secs(1);
        let n = (0..1000).take_while(|_| b.take(t1)).count();
        assert_eq!(n as u64, INTRO_RATE);
        // A long pause refills to the burst only.
        let t2 = t1 + Duration::from_secs(3600);
        let n = (0..1000).take_while(|_| b.take(t2)).count();
        assert_eq!(n as u64, INTRO_BURST);
        // A clock that goes back does not mint tokens.
        assert!(!b.take(t0));
    }

    #[test]
    fn introductions_are_dropped_when_the_queue_is_full_or_over_the_rate() {
        let t0 = Instant::from_duration(Duration::from_secs(5));
        let mut b = TokenBucket::new(INTRO_RATE, INTRO_BURST, t0);
        // A full queue drops the newest without spending a token.
        for _ in 0..1000 {
            assert!(!admit(&mut b, MAX_PENDING_INTROS, t0));
        }
        let mut queued = 0;
        while admit(&mut b, queued, t0) {
            queued += 1;
        }
        assert_eq!(queued, MAX_PENDING_INTROS);
        // The queue drained (rendezvous circuits started): the rest of the burst, no more.
        let taken = (0..1000).take_while(|_| admit(&mut b, 0, t0)).count();
        assert_eq!((queued + taken) as u64, INTRO_BURST);
    }
}
