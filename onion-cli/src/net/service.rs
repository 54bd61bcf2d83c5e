//! Hosting a v3 onion service (rend-spec-v3 §2.2.4.2, §3.1, §3.3, §4.2): the worked example
//! of driving `onion_hs::publish::Publisher` (which owns `onion_hs::service::HsService`) over
//! circuits built by [`super::path::build`].
//!
//! [`Service::run`] is one loop:
//! 1. Every few voting intervals a fresh directory comes from `refresh` and becomes a
//!    [`ConsensusView`] for the publisher (HSDirs with the ring inputs, relays usable as
//!    introduction points, SRVs, valid-after, the time-period parameters; a testing network's
//!    period is 24 voting intervals, as C tor's `TestingTorNetwork`).
//! 2. The publisher's actions are carried out: a 3-hop circuit to an introduction point, then
//!    its ESTABLISH_INTRO MACed with the last hop's `KH` (`Circuit::hop_kh`); a descriptor
//!    POSTed over BEGIN_DIR to an HSDir; an introduction circuit closed. Outcomes go back to
//!    the publisher, which decides about retries, rotation and re-uploads.
//! 3. INTRO_ESTABLISHED, INTRODUCE2 and closed circuits on the introduction circuits are
//!    reported; an INTRODUCE2 leads to a 3-hop circuit to the client's rendezvous point,
//!    RENDEZVOUS1, the client's virtual hop, and streams spliced to TCP connections to the
//!    target.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_cell::relaymsg::{EndReason, RelayMsg};
use onion_cell::RelayCmd;
use onion_circuit::circuit::CircEvent;
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use onion_dir::netview::RelayIdx;
use onion_dir::path::PathConfig;
use onion_dir::{RelayFlags, RsaIdentity};
use onion_hs::cellmsg::{body_of, to_relay_msg};
use onion_hs::linkspec::LS_RSA_ID;
use onion_hs::publish::{ConsensusView, IntroCandidate, IntroId, PublishAction, Publisher};
use onion_hs::service::UPLOAD_PATH;
use rand_core::OsRng;

use super::bootstrap::{Directory, REFRESH_RETRY};
use super::client::Client;
use super::event::{ConnId, Input};
use super::hsnet::{self, HsParams};

/// How long one circuit build, ESTABLISH_INTRO or upload may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A client stream spliced to a TCP connection to the target.
struct Splice {
    circ: usize,
    stream: StreamId,
    conn: ConnId,
    sock: TcpStream,
    /// Bytes from the target that the circuit's windows have not taken yet.
    up: Vec<u8>,
    /// The target closed its side: end the stream once `up` is sent.
    eof: bool,
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

/// A running onion service.
pub struct Service {
    publisher: Publisher,
    dir: Directory,
    config: PathConfig,
    testing: bool,
    intro_circs: Vec<IntroCirc>,
    /// Rendezvous circuits joined to a client.
    rend_circs: Vec<usize>,
    splices: Vec<Splice>,
    target: SocketAddr,
    virtual_port: u16,
    /// Successful uploads so far (the first batch announces the service).
    uploads_ok: u64,
    announced: bool,
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
        Service {
            publisher,
            dir,
            config,
            testing,
            intro_circs: Vec::new(),
            rend_circs: Vec::new(),
            splices: Vec::new(),
            target,
            virtual_port,
            uploads_ok: 0,
            announced: false,
        }
    }

    /// A 4-hop vanguards-lite circuit (`G -> L2 -> M -> last`) whose last hop is `last`.
    fn circuit_to(&self, client: &mut Client, last: RelayIdx) -> Result<usize, String> {
        let deadline = client.deadline(STEP_TIMEOUT);
        Ok(hsnet::circuit_to(client, &self.dir, &self.config, Some(last), deadline)?.0)
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
            valid_after: hp.valid_after,
            periods: hp.periods,
            shared_random: hp.shared_random,
            params: hp.params,
            hsdirs,
            intro_candidates,
        })
    }

    /// Carry out what the publisher asks until it asks nothing more.
    fn do_actions(&mut self, client: &mut Client) {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while let Some(a) = self.publisher.poll_action() {
            match a {
                PublishAction::BuildIntroCircuit { intro, relay } => {
                    let name = self.name(&relay);
                    match self.launch_intro(client, intro, &relay) {
                        Ok(()) => eprintln!("onion: introduction circuit to {name} built"),
                        Err(e) => {
                            eprintln!("onion: introduction point {name}: {e}");
                            let _ =
                                self.publisher
                                    .intro_circuit_closed(&mut OsRng, intro, unix_now());
                        }
                    }
                }
                PublishAction::CloseIntroCircuit { intro } => {
                    if let Some(k) = self.intro_circs.iter().position(|c| c.intro == intro) {
                        let ic = self.intro_circs.remove(k);
                        client.destroy(ic.circ);
                        eprintln!("onion: introduction point rotated out");
                    }
                }
                PublishAction::Upload {
                    upload,
                    hsdir,
                    period,
                    descriptor,
                    ..
                } => {
                    let name = self.name(&hsdir);
                    let r = match self.dir.view.by_rsa_id(&RsaIdentity(hsdir)) {
                        Some(idx) => self.upload(client, idx, &descriptor),
                        None => Err("not in the consensus".into()),
                    };
                    match &r {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(format!("{name} (period {}): {e}", period.num())),
                    }
                    self.publisher
                        .upload_result(&mut OsRng, upload, r.is_ok(), unix_now());
                }
            }
        }
        if ok > 0 || !failed.is_empty() {
            eprintln!("onion: descriptor uploaded to {ok} HSDirs");
            for e in &failed {
                eprintln!("onion: upload to HSDir {e}");
            }
        }
        self.uploads_ok += u64::from(ok);
        if self.uploads_ok > 0 && !self.announced {
            self.announced = true;
            eprintln!(
                "onion: service published; forwarding port {} to {}",
                self.virtual_port, self.target
            );
        }
    }

    fn name(&self, rsa: &[u8; 20]) -> String {
        self.dir
            .view
            .by_rsa_id(&RsaIdentity(*rsa))
            .and_then(|i| self.dir.view.relay(i))
            .map_or_else(|| "?".to_owned(), |r| r.nickname.clone())
    }

    /// A circuit to the introduction point's relay and ESTABLISH_INTRO on it (§3.1).
    fn launch_intro(
        &mut self,
        client: &mut Client,
        intro: IntroId,
        relay: &[u8; 20],
    ) -> Result<(), String> {
        let idx = self
            .dir
            .view
            .by_rsa_id(&RsaIdentity(*relay))
            .ok_or("not in consensus")?;
        let c = self.circuit_to(client, idx)?;
        let circ = &client.circs[c].circ;
        let last = circ.n_hops() - 1;
        let kh = *circ.hop_kh(last).ok_or("no KH for the last hop")?;
        let body = self
            .publisher
            .intro_circuit_built(intro, &kh)
            .map_err(|e| format!("ESTABLISH_INTRO: {e}"));
        let r = body.and_then(|b| send(client, c, RelayCmd::ESTABLISH_INTRO, &b));
        if let Err(e) = r {
            client.destroy(c);
            return Err(e);
        }
        self.intro_circs.push(IntroCirc {
            intro,
            circ: c,
            established: false,
            deadline: client.deadline(STEP_TIMEOUT),
        });
        Ok(())
    }

    fn upload(&self, client: &mut Client, hsdir: RelayIdx, desc: &str) -> Result<(), String> {
        let c = self.circuit_to(client, hsdir)?;
        let deadline = client.deadline(STEP_TIMEOUT);
        let mut req = format!(
            "POST {UPLOAD_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            desc.len()
        )
        .into_bytes();
        req.extend_from_slice(desc.as_bytes());
        hsnet::dir_exchange(client, c, &req, 64 * 1024, deadline).map(|_| ())
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
        self.publisher.set_consensus(&mut OsRng, view, unix_now());
        let mut next_refresh = client.deadline(self.dir.refresh_delay());
        loop {
            self.do_actions(client);
            let mut wake = next_refresh;
            if let Some(t) = self.publisher.poll_timeout() {
                let now = unix_now();
                wake = wake.min(client.deadline(Duration::from_secs(t.saturating_sub(now))));
            }
            for ic in self.intro_circs.iter().filter(|c| !c.established) {
                wake = wake.min(ic.deadline);
            }
            let _ = client.step(wake);
            let now = client.clock.now();
            if now >= next_refresh {
                let delay = match refresh(client, &self.dir).and_then(|dir| {
                    self.dir = dir;
                    self.consensus_view()
                }) {
                    Ok(view) => {
                        self.publisher.set_consensus(&mut OsRng, view, unix_now());
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
            while let Some(input) = client.take_other() {
                self.target_input(client, input);
            }
            self.intro_events(client);
            if self
                .publisher
                .poll_timeout()
                .is_some_and(|t| t <= unix_now())
            {
                self.publisher.handle_timeout(&mut OsRng, unix_now());
            }
            self.rend_events(client);
        }
    }

    /// INTRO_ESTABLISHED, INTRODUCE2 and closures on the introduction circuits, reported to
    /// the publisher.
    fn intro_events(&mut self, client: &mut Client) {
        let now = client.clock.now();
        let mut k = 0;
        while k < self.intro_circs.len() {
            let (intro, c) = (self.intro_circs[k].intro, self.intro_circs[k].circ);
            while let Some(ev) = client.circs[c].events.pop_front() {
                let CircEvent::Msg { msg, .. } = ev else {
                    continue;
                };
                match *msg {
                    RelayMsg::IntroEstablished(_) if !self.intro_circs[k].established => {
                        self.intro_circs[k].established = true;
                        eprintln!("onion: introduction point established");
                        let _ = self
                            .publisher
                            .intro_established(&mut OsRng, intro, unix_now());
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
            let dead = client.circs[c].dead.clone();
            let late = !ic.established && now >= ic.deadline;
            if dead.is_some() || late {
                let why = dead.unwrap_or_else(|| "no INTRO_ESTABLISHED in time".into());
                eprintln!("onion: introduction circuit gone: {why}");
                client.destroy(c);
                self.intro_circs.remove(k);
                let _ = self
                    .publisher
                    .intro_circuit_closed(&mut OsRng, intro, unix_now());
                continue;
            }
            k += 1;
        }
    }

    fn introduce2(
        &mut self,
        client: &mut Client,
        intro: IntroId,
        msg: &RelayMsg<'_>,
    ) -> Result<(), String> {
        let body = body_of(msg).map_err(|e| e.to_string())?;
        let req = self
            .publisher
            .handle_introduce2(&mut OsRng, intro, &body, unix_now())
            .map_err(|e| e.to_string())?;
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
        let c = self.circuit_to(client, rp)?;
        send(client, c, RelayCmd::RENDEZVOUS1, &req.rendezvous1)?;
        let layer = req.keys.service_layer().map_err(|e| e.to_string())?;
        let circ = &mut client.circs[c].circ;
        circ.add_virtual_hop(Box::new(layer))
            .map_err(|e| format!("virtual hop: {e}"))?;
        circ.set_accept_inbound_streams(true);
        eprintln!("onion: rendezvous with a client");
        self.rend_circs.push(c);
        Ok(())
    }

    /// Streams opened, data and ends on the rendezvous circuits.
    fn rend_events(&mut self, client: &mut Client) {
        for c in self.rend_circs.clone() {
            while let Some(ev) = client.circs[c].events.pop_front() {
                match ev {
                    CircEvent::IncomingStream { stream, port, .. } => {
                        let circ = &mut client.circs[c].circ;
                        if port != self.virtual_port {
                            let _ = circ.reject_stream(stream, EndReason::EXITPOLICY);
                            continue;
                        }
                        match TcpStream::connect_timeout(&self.target, Duration::from_secs(10)) {
                            Ok(sock) => {
                                let Ok(reader) = sock.try_clone() else {
                                    let _ = circ.reject_stream(stream, EndReason::RESOURCELIMIT);
                                    continue;
                                };
                                let _ = circ.accept_stream(stream);
                                let conn = client.inbox().watch(reader);
                                self.splices.push(Splice {
                                    circ: c,
                                    stream,
                                    conn,
                                    sock,
                                    up: Vec::new(),
                                    eof: false,
                                });
                            }
                            Err(e) => {
                                eprintln!("onion: target {}: {e}", self.target);
                                let _ = circ.reject_stream(stream, EndReason::CONNECTREFUSED);
                            }
                        }
                    }
                    CircEvent::Data { stream, data } => {
                        if let Some(s) = self.splice(c, stream) {
                            if s.sock.write_all(&data).is_err() {
                                let _ = client.circs[c].circ.close_stream(stream);
                            }
                        }
                    }
                    CircEvent::StreamEnded { stream, .. } => {
                        if let Some(s) = self.splice(c, stream) {
                            let _ = s.sock.shutdown(Shutdown::Write);
                        }
                    }
                    _ => {}
                }
            }
        }
        // Target bytes into the circuits, as far as windows allow; end finished streams.
        for s in &mut self.splices {
            let circ = &mut client.circs[s.circ].circ;
            if !s.up.is_empty() {
                if let Ok(n) = circ.send(s.stream, &s.up) {
                    s.up.drain(..n);
                }
            }
            if s.eof && s.up.is_empty() {
                let _ = circ.close_stream(s.stream);
            }
        }
        let circs = &client.circs;
        self.splices.retain(|s| {
            let done = s.eof && s.up.is_empty() || circs[s.circ].dead.is_some();
            if done {
                let _ = s.sock.shutdown(Shutdown::Both);
            }
            !done
        });
        self.rend_circs.retain(|&c| match &client.circs[c].dead {
            Some(why) => {
                eprintln!("onion: rendezvous circuit gone: {why}");
                false
            }
            None => true,
        });
        let _ = client.flush();
    }

    fn splice(&mut self, circ: usize, stream: StreamId) -> Option<&mut Splice> {
        self.splices
            .iter_mut()
            .find(|s| s.circ == circ && s.stream == stream)
    }

    /// Bytes or end of stream from a target connection.
    fn target_input(&mut self, _client: &mut Client, input: Input) {
        let (Input::Bytes(conn, _) | Input::Closed(conn, _)) = &input else {
            return;
        };
        let Some(s) = self.splices.iter_mut().find(|s| s.conn == *conn) else {
            return;
        };
        match input {
            Input::Bytes(_, data) => s.up.extend_from_slice(&data),
            _ => s.eof = true,
        }
    }
}

/// Send an onion-service message body built by onion-hs to the last hop of circuit `c`.
fn send(client: &mut Client, c: usize, cmd: RelayCmd, body: &[u8]) -> Result<(), String> {
    let msg = to_relay_msg(cmd, body).map_err(|e| format!("{cmd:?}: {e}"))?;
    hsnet::send_to_last(client, c, &msg)
}
