//! Hosting a v3 onion service (rend-spec-v3 §2.2.4.2, §3.1, §3.3, §4.2), driving
//! `onion_hs::service::HsService` over circuits built by [`super::path::build`].
//!
//! 1. Introduction points: a 3-hop circuit to each of [`INTRO_POINTS`] relays, then
//!    ESTABLISH_INTRO MACed with the last hop's `KH` (`Circuit::hop_kh`); INTRO_ESTABLISHED
//!    must come back.
//! 2. Descriptors for both upload slots (current and next time period; a testing network's
//!    period is 24 voting intervals, as C tor's `TestingTorNetwork`) are POSTed over
//!    BEGIN_DIR to every responsible HSDir.
//! 3. Then [`Service::serve`] loops: an INTRODUCE2 on an introduction circuit is decrypted, a
//!    3-hop circuit is built to the client's rendezvous point, RENDEZVOUS1 is sent, the
//!    client's virtual hop is added and the circuit accepts RELAY_BEGIN; each stream is
//!    spliced to a TCP connection to the target.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_cell::relaymsg::{EndReason, RelayMsg};
use onion_cell::RelayCmd;
use onion_circuit::circuit::CircEvent;
use onion_circuit::stream::StreamId;
use onion_dir::netview::{RelayIdx, RelayRecord};
use onion_dir::path::{Exclusions, PathConfig, PathOptions, PathSelector};
use onion_dir::{consensus, RelayFlags, RsaIdentity};
use onion_hs::cellmsg::{body_of, to_relay_msg};
use onion_hs::linkspec::{LinkSpec, LS_RSA_ID};
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::service::{HsService, UPLOAD_PATH};
use onion_hs::TimePeriodConfig;
use rand_core::OsRng;

use super::bootstrap::Directory;
use super::client::{Client, Target};
use super::event::{ConnId, Input};
use super::http;
use super::path;

/// How many introduction points the service keeps (C tor's default is 3).
pub const INTRO_POINTS: usize = 3;
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

/// A running onion service.
pub struct Service {
    hs: HsService,
    dir: Directory,
    config: PathConfig,
    testing: bool,
    /// Introduction circuits: (introduction point index in `hs`, circuit).
    intro_circs: Vec<(usize, usize)>,
    /// Rendezvous circuits joined to a client.
    rend_circs: Vec<usize>,
    splices: Vec<Splice>,
    target: SocketAddr,
    virtual_port: u16,
}

impl Service {
    /// A service with identity `hs` over the verified directory `dir` (of a testing network
    /// if `testing`), forwarding streams to `virtual_port` to `target`.
    pub fn new(
        hs: HsService,
        dir: Directory,
        config: PathConfig,
        testing: bool,
        target: SocketAddr,
        virtual_port: u16,
    ) -> Service {
        Service {
            hs,
            dir,
            config,
            testing,
            intro_circs: Vec::new(),
            rend_circs: Vec::new(),
            splices: Vec::new(),
            target,
            virtual_port,
        }
    }

    fn selector(&self) -> PathSelector<'_> {
        PathSelector::with_config(&self.dir.view, self.config.clone())
    }

    /// A 3-hop circuit whose last hop is `last`.
    fn circuit_to(&self, client: &mut Client, last: RelayIdx) -> Result<usize, String> {
        let opts = PathOptions {
            need_stable: true,
            ..PathOptions::default()
        };
        let p = self
            .selector()
            .internal_path(3, Some(last), None, &opts, &mut OsRng)
            .map_err(|e| format!("path: {e}"))?;
        let hops: Vec<_> = p.records(&self.dir.view).collect();
        let deadline = client.deadline(STEP_TIMEOUT);
        Ok(path::build(client, &hops, deadline)?.0)
    }

    /// Step 1: establish [`INTRO_POINTS`] introduction points (a relay that fails is
    /// replaced, a few times).
    pub fn establish_intro_points(&mut self, client: &mut Client) -> Result<(), String> {
        let mut used: Vec<RsaIdentity> = Vec::new();
        let mut failures = 0;
        while self.intro_circs.len() < INTRO_POINTS {
            let exclude = Exclusions::from_ids(&self.dir.view, used.iter());
            let opts = PathOptions {
                need_stable: true,
                exclude: &exclude,
                ..PathOptions::default()
            };
            let p = self
                .selector()
                .internal_path(3, None, None, &opts, &mut OsRng)
                .map_err(|e| format!("introduction point: {e}"))?;
            let ip = p
                .records(&self.dir.view)
                .last()
                .ok_or("empty path")?
                .clone();
            used.push(ip.rsa_id);
            match self.establish_intro(client, &ip) {
                Ok(()) => eprintln!("onion: introduction point {} established", ip.nickname),
                Err(e) if failures < 2 * INTRO_POINTS => {
                    failures += 1;
                    eprintln!("onion: introduction point {}: {e}", ip.nickname);
                }
                Err(e) => return Err(format!("introduction point {}: {e}", ip.nickname)),
            }
        }
        Ok(())
    }

    fn establish_intro(&mut self, client: &mut Client, ip: &RelayRecord) -> Result<(), String> {
        let idx = self
            .dir
            .view
            .by_rsa_id(&ip.rsa_id)
            .ok_or("not in consensus")?;
        let onion_key = ip.ntor_onion_key.ok_or("no ntor onion key")?;
        let c = self.circuit_to(client, idx)?;
        let circ = &client.circs[c].circ;
        let last = circ.n_hops() - 1;
        let kh = *circ.hop_kh(last).ok_or("no KH for the last hop")?;
        let i = self
            .hs
            .add_intro_point(&mut OsRng, link_specs(ip), onion_key);
        let body = self
            .hs
            .establish_intro(i, &kh)
            .map_err(|e| format!("ESTABLISH_INTRO: {e}"))?;
        let deadline = client.deadline(STEP_TIMEOUT);
        send(client, c, RelayCmd::ESTABLISH_INTRO, &body)?;
        client.wait_msg(c, |m| matches!(m, RelayMsg::IntroEstablished(_)), deadline)?;
        self.hs
            .handle_intro_established(i)
            .map_err(|e| e.to_string())?;
        self.intro_circs.push((i, c));
        Ok(())
    }

    /// Step 2: build and upload the descriptors of both upload slots to their HSDirs.
    /// Fails only if no HSDir took one. Returns when to publish again: every 12 voting
    /// intervals (half a testing network's time period), at most hourly, well within the
    /// descriptors' 3-hour lifetime at the HSDirs (rend-spec-v3 §2.2.4.2, as C tor).
    pub fn publish(&mut self, client: &mut Client) -> Result<Duration, String> {
        let cons = consensus::parse(&self.dir.consensus)
            .map_err(|e| format!("consensus: {e}"))?
            .assume_verified(); // verified by bootstrap
        let va = cons.valid_after.0;
        let interval = u32::try_from(cons.fresh_until.0.saturating_sub(va)).unwrap_or(3600);
        let cfg = if self.testing {
            TimePeriodConfig::testing_network(interval)
        } else {
            let p = cons.params.get("hsdir_interval").map(i64::from);
            TimePeriodConfig::from_consensus(p, interval)
        }
        .map_err(|e| format!("time period: {e}"))?;
        let srv = SharedRandom {
            current: cons.shared_rand_current.as_ref().map(|s| s.value),
            previous: cons.shared_rand_previous.as_ref().map(|s| s.value),
        };
        let params = HsDirParams::from_consensus(|k| cons.params.get(k).map(i64::from));
        let (idxs, ring): (Vec<RelayIdx>, Vec<HsDirRelay>) = hsdir_ring(&self.dir);
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (mut ok, mut errors) = (0, Vec::new());
        for slot in srv.service_upload(&cfg, va) {
            let text = self
                .hs
                .build_descriptor(&mut OsRng, slot.period, now_unix)
                .map_err(|e| format!("descriptor: {e}"))?;
            for pos in self.hs.hsdirs_to_upload(&ring, &slot, &params) {
                let Some(&idx) = idxs.get(pos) else { continue };
                let name = self
                    .dir
                    .view
                    .relay(idx)
                    .map_or("?", |r| &r.nickname)
                    .to_owned();
                match self.upload(client, idx, &text) {
                    Ok(()) => ok += 1,
                    Err(e) => errors.push(format!("{name}: {e}")),
                }
            }
        }
        eprintln!("onion: descriptor uploaded to {ok} HSDirs");
        for e in &errors {
            eprintln!("onion: upload to HSDir {e}");
        }
        match ok {
            0 => Err(format!(
                "no HSDir took the descriptor ({})",
                errors.join("; ")
            )),
            _ => Ok(Duration::from_secs(u64::from(interval) * 12).min(Duration::from_secs(3600))),
        }
    }

    fn upload(&self, client: &mut Client, hsdir: RelayIdx, desc: &str) -> Result<(), String> {
        let c = self.circuit_to(client, hsdir)?;
        let deadline = client.deadline(STEP_TIMEOUT);
        let r = (|| {
            let s = client.begin(c, Target::Dir, deadline)?;
            let mut req = format!(
                "POST {UPLOAD_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
                desc.len()
            )
            .into_bytes();
            req.extend_from_slice(desc.as_bytes());
            let raw = client.fetch(c, s, &req, 64 * 1024, deadline, |_| {})?;
            let resp = http::parse_response(&raw, true).map_err(|e| e.to_string())?;
            match resp.status {
                200 => Ok(()),
                _ => Err(format!("HTTP {} {}", resp.status, resp.reason)),
            }
        })();
        client.destroy(c);
        r
    }

    /// Step 3: serve clients until every introduction circuit is gone. Every `republish`,
    /// a fresh directory comes from `refresh` and the descriptors are published again.
    pub fn serve(
        &mut self,
        client: &mut Client,
        mut republish: Duration,
        refresh: &dyn Fn(&mut Client) -> Result<Directory, String>,
    ) -> Result<(), String> {
        let mut next_publish = client.deadline(republish);
        loop {
            let _ = client.step(next_publish);
            if client.clock.now() >= next_publish {
                match refresh(client) {
                    Ok(dir) => self.dir = dir,
                    Err(e) => eprintln!("onion: directory refresh: {e}"),
                }
                match self.publish(client) {
                    Ok(r) => republish = r,
                    Err(e) => eprintln!("onion: re-publishing: {e}"),
                }
                next_publish = client.deadline(republish);
            }
            while let Some(input) = client.take_other() {
                self.target_input(client, input);
            }
            for (i, c) in self.intro_circs.clone() {
                while let Some(ev) = client.circs[c].events.pop_front() {
                    if let CircEvent::Msg { msg, .. } = ev {
                        if let RelayMsg::Introduce2(_) = *msg {
                            if let Err(e) = self.introduce2(client, i, &msg) {
                                eprintln!("onion: INTRODUCE2: {e}");
                            }
                        }
                    }
                }
            }
            self.rend_events(client);
            if self
                .intro_circs
                .iter()
                .all(|&(_, c)| client.circs[c].dead.is_some())
            {
                return Err("every introduction circuit closed".into());
            }
        }
    }

    fn introduce2(
        &mut self,
        client: &mut Client,
        ip: usize,
        msg: &RelayMsg<'_>,
    ) -> Result<(), String> {
        let body = body_of(msg).map_err(|e| e.to_string())?;
        let req = self
            .hs
            .handle_introduce2(&mut OsRng, ip, &body)
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

/// Every relay with an ed25519 identity, with its HSDir flag, for the hash ring
/// (rend-spec-v3 §2.2.3), and its index in the directory.
fn hsdir_ring(dir: &Directory) -> (Vec<RelayIdx>, Vec<HsDirRelay>) {
    dir.view
        .relays()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            Some((
                RelayIdx(u32::try_from(i).ok()?),
                HsDirRelay {
                    ed25519_id: r.ed_id?,
                    rsa_id: r.rsa_id.0,
                    is_hsdir: r.flags.contains(RelayFlags::HSDIR),
                },
            ))
        })
        .unzip()
}

/// The link specifiers published for an introduction point.
fn link_specs(r: &RelayRecord) -> Vec<LinkSpec> {
    let mut v = Vec::new();
    if let Some(a) = r.ipv4 {
        v.push(LinkSpec::ipv4(a));
    }
    v.push(LinkSpec::rsa_id(r.rsa_id.0));
    if let Some(ed) = r.ed_id {
        v.push(LinkSpec::ed25519_id(ed));
    }
    v
}

/// Send an onion-service message body built by onion-hs to the last hop of circuit `c`.
fn send(client: &mut Client, c: usize, cmd: RelayCmd, body: &[u8]) -> Result<(), String> {
    let msg = to_relay_msg(cmd, body).map_err(|e| format!("{cmd:?}: {e}"))?;
    let circ = &mut client.circs[c].circ;
    let last = circ.n_hops().checked_sub(1).ok_or("circuit has no hops")?;
    circ.send_msg(last, 0, &msg)
        .map_err(|e| format!("send: {e}"))?;
    client.flush()
}
