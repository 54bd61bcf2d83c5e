//! The onion-service roles of the relay, on `onion_hs::relay`'s state:
//!
//! * **HSDir** (rend-spec-v3 §2.2): `POST /tor/hs/3/publish` and `GET /tor/hs/3/<z>` on
//!   BEGIN_DIR streams, answered from an [`HsDirStore`] (descriptor checked, revision counter
//!   only increasing, expired after its lifetime, bounded). As in C tor, both are refused
//!   with 503 on circuits that come straight from a client (not anonymous).
//! * **Introduction point** (§3.1, §3.2): ESTABLISH_INTRO verified against the circuit's `KH`,
//!   with the DoS extension's INTRODUCE2 rate limit; INTRODUCE1 relayed unchanged as
//!   INTRODUCE2 on the service's circuit and answered with INTRODUCE_ACK.
//! * **Rendezvous point** (§4.1, §4.2): ESTABLISH_RENDEZVOUS registers a cookie; RENDEZVOUS1
//!   sends RENDEZVOUS2 to the cookie's circuit and joins the two: relay cells then pass
//!   between them with only this hop's layer removed and added (the end-to-end layer stays
//!   closed to us), and when one side goes the other is torn down.
//!
//! The checks that close a circuit follow C tor (`hs_intropoint.c`, `rendmid.c`): these
//! messages are accepted only on a circuit that ends here and has no onion-service role yet;
//! INTRODUCE1 at most once per circuit and never from a client connected directly to us.

use std::sync::Arc;

use onion_cell::chancell::DestroyReason;
use onion_cell::hs::IntroduceAckStatus;
use onion_cell::{RelayCmd, RelayMsg};
use onion_circuit::stream::StreamId;
use onion_circuit::{ErrorKind, Instant};
use onion_hs::relay::{introduce_ack, HsDirStore, IntroDosParams, IntroPoint, RendPoint};

use super::{Relay, RelayStats};
use crate::config::RelayConfig;
use crate::dir::Answer;

/// What a circuit is to the onion-service roles (C tor's circuit purposes `OR`,
/// `INTRO_POINT`, `REND_POINT_WAITING`, `REND_ESTABLISHED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum HsPurpose {
    /// An ordinary circuit.
    #[default]
    Or,
    /// A service's introduction circuit.
    Intro,
    /// A client's rendezvous circuit waiting for RENDEZVOUS1.
    RendWaiting,
    /// Joined to this circuit at the rendezvous point.
    Joined(u64),
}

/// The relay's onion-service state.
#[derive(Debug)]
pub(super) struct HsRoles {
    pub(super) intro: IntroPoint<u64>,
    pub(super) rend: RendPoint<u64>,
    pub(super) hsdir: HsDirStore,
}

impl HsRoles {
    pub(super) fn new(cfg: &RelayConfig) -> Self {
        HsRoles {
            intro: IntroPoint::new(cfg.limits.intro_dos, cfg.limits.max_intro_circuits),
            rend: RendPoint::new(cfg.limits.max_rend_cookies),
            hsdir: HsDirStore::new(cfg.limits.hsdir),
        }
    }
}

/// Most bytes of an HTTP head before a descriptor upload's body.
pub(super) const MAX_POST_HEAD: usize = 4096;

fn short(status: &str) -> Answer {
    let head = format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
    Answer {
        pieces: vec![head.into_bytes().into()],
        piece: 0,
        offset: 0,
    }
}

/// What [`dir_request`] made of a directory request.
pub(super) enum DirVerdict {
    /// Not an onion-service request: the directory cache answers it.
    NotOurs,
    /// A descriptor upload whose body has not all arrived.
    NeedBody,
    /// The answer.
    Answer(Answer),
}

/// An HSDir request on a BEGIN_DIR stream (rend-spec-v3 §2.2.6, dir-spec appendix B): the
/// request so far is `req`, its head ends at `head_end`. `anonymous`: the circuit did not
/// come straight from a client.
pub(super) fn dir_request(
    hs: &mut HsRoles,
    on: bool,
    req: &[u8],
    head_end: usize,
    anonymous: bool,
    wall: onion_dir::Timestamp,
    stats: &mut RelayStats,
) -> DirVerdict {
    let Some(head) = req
        .get(..head_end)
        .and_then(|h| core::str::from_utf8(h).ok())
    else {
        return DirVerdict::NotOurs;
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return DirVerdict::NotOurs;
    };
    // An absolute URL names the same path (C tor's parse_http_url).
    let path = path
        .strip_prefix("http://")
        .and_then(|p| p.find('/').map(|i| &p[i..]))
        .unwrap_or(path);
    if !on || !path.starts_with("/tor/hs/") {
        return DirVerdict::NotOurs;
    }
    let now = wall;
    match method {
        "GET" => {
            if !anonymous {
                return DirVerdict::Answer(short(
                    "503 Rejecting single hop HS v3 descriptor request",
                ));
            }
            let Some(query) = path.strip_prefix("/tor/hs/3/") else {
                return DirVerdict::Answer(short("404 Not found"));
            };
            match hs.hsdir.get(query, now) {
                Some(text) => {
                    stats.hs_descriptors_served += 1;
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: identity\r\nContent-Length: {}\r\n\r\n",
                        text.len()
                    );
                    let body: Arc<[u8]> = Arc::from(text.as_bytes());
                    DirVerdict::Answer(Answer {
                        pieces: vec![head.into_bytes().into(), body],
                        piece: 0,
                        offset: 0,
                    })
                }
                None => DirVerdict::Answer(short("404 Not found")),
            }
        }
        "POST" => {
            let len = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            let Some(len) = len else {
                return DirVerdict::Answer(short("400 Bad request"));
            };
            if head_end > MAX_POST_HEAD {
                return DirVerdict::Answer(short("400 Bad request"));
            }
            if len > hs.hsdir_limit() {
                stats.hs_descriptors_refused += 1;
                return DirVerdict::Answer(short("400 Invalid HS descriptor. Rejected."));
            }
            let body = &req[head_end..];
            if body.len() < len {
                return DirVerdict::NeedBody;
            }
            if !anonymous {
                return DirVerdict::Answer(short("503 Rejecting single hop HS descriptor post"));
            }
            if path != onion_hs::service::UPLOAD_PATH {
                stats.hs_descriptors_refused += 1;
                return DirVerdict::Answer(short("400 Invalid HS descriptor. Rejected."));
            }
            match hs.hsdir.publish(&body[..len], now) {
                Ok(_) => {
                    stats.hs_descriptors_stored += 1;
                    DirVerdict::Answer(short("200 HS descriptor stored successfully."))
                }
                Err(_) => {
                    stats.hs_descriptors_refused += 1;
                    DirVerdict::Answer(short("400 Invalid HS descriptor. Rejected."))
                }
            }
        }
        _ => DirVerdict::Answer(short("405 Method not allowed")),
    }
}

impl HsRoles {
    fn hsdir_limit(&self) -> usize {
        self.hsdir.limits().max_descriptor
    }
}

impl Relay {
    /// The consensus's INTRODUCE2 defence parameters (param-spec
    /// `HiddenServiceEnableIntroDoS*`): applied to every introduction circuit whose
    /// ESTABLISH_INTRO did not set its own.
    pub fn set_intro_dos_params(&mut self, p: IntroDosParams) {
        self.hs.intro.set_dos_defaults(p);
    }

    /// Bytes a directory request may have beyond [`crate::Limits::max_dir_request`]: room
    /// for a descriptor upload when we are an HSDir.
    pub(super) fn hs_post_allowance(&self) -> usize {
        if self.cfg.hs_dir {
            self.hs.hsdir.limits().max_descriptor + MAX_POST_HEAD
        } else {
            0
        }
    }

    /// Onion-service descriptors the HSDir holds.
    pub fn n_hs_descriptors(&self) -> usize {
        self.hs.hsdir.len()
    }

    /// Whether circuit `k` came straight from a client (its previous hop did not
    /// authenticate as a relay): C tor's `channel_is_client`.
    pub(super) fn comes_from_client(&self, k: u64) -> bool {
        self.circs
            .get(&k)
            .and_then(|c| self.conns.get(&c.client.0))
            .map_or(true, |x| x.proven.is_empty())
    }

    /// A recognised relay message the circuit does not handle itself (the onion-service
    /// messages, on the circuit itself: `stream` `None`). Others are dropped, as C tor drops
    /// what it does not expect.
    pub(super) fn hs_msg(&mut self, k: u64, stream: Option<StreamId>, msg: RelayMsg<'static>) {
        let cmd = msg.cmd();
        let ours = [
            RelayCmd::ESTABLISH_INTRO,
            RelayCmd::INTRODUCE1,
            RelayCmd::ESTABLISH_RENDEZVOUS,
            RelayCmd::RENDEZVOUS1,
        ];
        if !ours.contains(&cmd) {
            return;
        }
        if stream.is_some() {
            return self.hs_close(k, ErrorKind::PeerProtocol);
        }
        let (purpose, edge) = match self.circs.get(&k) {
            Some(c) => (c.hs, c.next.is_none() && c.waiting_on.is_none()),
            None => return,
        };
        // Every one of these needs an ordinary circuit that ends here.
        if purpose != HsPurpose::Or {
            return self.hs_close(k, ErrorKind::PeerProtocol);
        }
        if cmd == RelayCmd::ESTABLISH_RENDEZVOUS
            && self.cfg.limits.refuse_single_hop_rendezvous
            && self.comes_from_client(k)
        {
            // Silent drop: the client times out before it moves on (C tor).
            self.stats.rend_refused_single_hop += 1;
            return;
        }
        if !edge {
            return self.hs_close(k, ErrorKind::PeerProtocol);
        }
        match &msg {
            RelayMsg::EstablishIntro(m) => self.establish_intro(k, m),
            RelayMsg::Introduce1(m) => self.introduce1(k, m),
            RelayMsg::EstablishRendezvous(m) => self.establish_rendezvous(k, m),
            RelayMsg::Rendezvous1(m) => self.rendezvous1(k, m),
            _ => {}
        }
    }

    /// Close circuit `k` now (DESTROY both ways) for a failure of kind `kind`: the reason
    /// toward its origin follows from it (tor-spec §5.4: PROTOCOL for the origin's
    /// violations and for a role we do not offer, RESOURCELIMIT for a bound reached here,
    /// INTERNAL for our own failures).
    fn hs_close(&mut self, k: u64, kind: ErrorKind) {
        self.stats.hs_circuits_closed += 1;
        self.kill_circ(k, kind.destroy_reason());
    }

    /// Send an onion-service message toward the origin of circuit `k` (encoded once, into
    /// the cell). False when the circuit is gone or went over its queue bound (and was
    /// closed for it).
    fn hs_send(&mut self, k: u64, m: &RelayMsg<'_>) -> bool {
        let limit = self.cfg.limits.circuit_queue_cells;
        let Some(c) = self.circs.get_mut(&k) else {
            return false;
        };
        if c.rc.send_msg(None, m).is_err() {
            return false;
        }
        self.dirty.insert(k);
        if c.rc.queued_to_client() > limit {
            self.stats.circuits_killed_queue += 1;
            self.kill_circ(k, DestroyReason::RESOURCELIMIT);
            return false;
        }
        true
    }

    fn establish_intro(&mut self, k: u64, msg: &onion_cell::hs::EstablishIntro<'_>) {
        if !self.cfg.intro_point {
            return self.hs_close(k, ErrorKind::Unsupported);
        }
        let Some(kh) = self.circs.get(&k).map(|c| *c.rc.kh()) else {
            return;
        };
        let now = self.now;
        match self.hs.intro.handle_establish_intro(k, now, &kh, msg) {
            Ok(est) => {
                if let Some(c) = self.circs.get_mut(&k) {
                    c.hs = HsPurpose::Intro;
                }
                self.stats.intro_established += 1;
                self.hs_send(k, &RelayMsg::IntroEstablished(est.reply));
            }
            Err(e) => self.hs_close(k, e.kind()),
        }
    }

    fn introduce1(&mut self, k: u64, msg: &onion_cell::hs::Introduce<'_>) {
        if !self.cfg.intro_point {
            return self.hs_close(k, ErrorKind::Unsupported);
        }
        // rend-spec-v3 §3.2.1: LEGACY_KEY_ID at least; one INTRODUCE1 per circuit; never
        // from a single-hop client circuit (C tor's circuit_is_suitable_for_introduce1).
        let once = self.circs.get(&k).is_some_and(|c| !c.introduced);
        if !once || self.comes_from_client(k) {
            return self.hs_close(k, ErrorKind::PeerProtocol);
        }
        if let Some(c) = self.circs.get_mut(&k) {
            c.introduced = true;
        }
        let now = self.now;
        let mut r = self.hs.intro.handle_introduce1(now, msg);
        if r.rate_limited {
            self.stats.introduce1_rate_limited += 1;
        }
        if let Some((svc, b2)) = r.to_service.take() {
            let ok = self
                .circs
                .get(&svc)
                .is_some_and(|c| c.hs == HsPurpose::Intro)
                && self.hs_send(svc, &RelayMsg::Introduce2(b2));
            if ok {
                self.stats.introduce2_relayed += 1;
            } else {
                r.ack = introduce_ack(IntroduceAckStatus::CANT_RELAY);
            }
        }
        if r.status() != IntroduceAckStatus::SUCCESS {
            self.stats.introduce1_nacked += 1;
        }
        self.hs_send(k, &RelayMsg::IntroduceAck(r.ack));
    }

    fn establish_rendezvous(&mut self, k: u64, msg: &onion_cell::hs::EstablishRendezvous) {
        if !self.cfg.rend_point {
            return self.hs_close(k, ErrorKind::Unsupported);
        }
        match self.hs.rend.handle_establish_rendezvous(k, msg) {
            Ok(()) => {
                if let Some(c) = self.circs.get_mut(&k) {
                    c.hs = HsPurpose::RendWaiting;
                }
                self.stats.rend_established += 1;
                self.hs_send(k, &RelayMsg::RendezvousEstablished);
            }
            Err(e) => self.hs_close(k, e.kind()),
        }
    }

    fn rendezvous1(&mut self, k: u64, msg: &onion_cell::hs::Rendezvous1<'_>) {
        if !self.cfg.rend_point {
            return self.hs_close(k, ErrorKind::Unsupported);
        }
        let j = match self.hs.rend.handle_rendezvous1(k, msg) {
            Ok(j) => j,
            Err(e) => return self.hs_close(k, e.kind()),
        };
        let client = j.client;
        let joinable = |r: &Self, x: u64| {
            r.circs
                .get(&x)
                .is_some_and(|c| !c.rc.is_closed() && c.next.is_none() && !c.rc.is_spliced())
        };
        if client == k || !joinable(self, client) || !joinable(self, k) {
            return self.hs_close(k, ErrorKind::PeerProtocol);
        }
        // RENDEZVOUS2 is queued before the join, so it is the client's next cell. It fails
        // when the client's circuit went over its queue bound (and was closed for it): the
        // join cannot happen, through no fault of the service.
        if !self.hs_send(client, &RelayMsg::Rendezvous2(j.rendezvous2)) {
            return self.hs_close(k, ErrorKind::Resource);
        }
        for (a, b) in [(client, k), (k, client)] {
            if let Some(c) = self.circs.get_mut(&a) {
                let _ = c.rc.splice();
                c.hs = HsPurpose::Joined(b);
            }
        }
        self.stats.rend_joined += 1;
        self.dirty.insert(client);
        self.dirty.insert(k);
    }

    /// Cells circuit `from` handed over for its joined circuit `to`: add `to`'s layer and
    /// queue them toward its origin. A queue beyond [`crate::Limits::circuit_queue_cells`]
    /// closes both.
    pub(super) fn splice_to(
        &mut self,
        from: u64,
        to: u64,
        cells: impl IntoIterator<Item = Box<onion_crypto::tor1::CellBody>>,
    ) {
        let limit = self.cfg.limits.circuit_queue_cells;
        let Some(c) = self.circs.get_mut(&to) else {
            return;
        };
        let mut n = 0u64;
        for b in cells {
            if c.rc.splice_in(b).is_err() {
                break;
            }
            n += 1;
        }
        self.stats.rend_cells_spliced += n;
        self.dirty.insert(to);
        if c.rc.queued_to_client() > limit {
            self.stats.circuits_killed_queue += 1;
            self.kill_circ(to, DestroyReason::RESOURCELIMIT);
            self.kill_circ(from, DestroyReason::RESOURCELIMIT);
        }
    }

    /// Circuit `k` (with onion-service purpose `purpose`) is gone: forget its registration;
    /// a joined circuit is torn down too (its partner is, to it, its next hop: a DESTROY
    /// from there travels on toward its origin, tor-spec §5.4).
    pub(super) fn hs_circ_gone(&mut self, k: u64, purpose: HsPurpose) {
        match purpose {
            HsPurpose::Or => {}
            HsPurpose::Intro => self.hs.intro.circuit_closed(k),
            HsPurpose::RendWaiting => self.hs.rend.circuit_closed(k),
            HsPurpose::Joined(o) => {
                let now = self.now;
                if let Some(c) = self.circs.get_mut(&o) {
                    if c.hs == HsPurpose::Joined(k) {
                        c.hs = HsPurpose::Or;
                        c.rc.handle_from_next(
                            now,
                            onion_cell::chancell::ChanMsg::Destroy(DestroyReason::FINISHED),
                        );
                        self.dirty.insert(o);
                    }
                }
            }
        }
    }

    /// Drop the HSDir's expired descriptors.
    pub(super) fn hs_expire(&mut self) {
        let now = self.wall_now();
        self.hs.hsdir.handle_timeout(now);
    }

    /// When the next descriptor expires, on the monotonic clock.
    pub(super) fn hs_timeout(&self) -> Option<Instant> {
        let at = self.hs.hsdir.poll_timeout()?;
        let wall = self.wall_now();
        self.now.checked_add(core::time::Duration::from_secs(
            at.unix().saturating_sub(wall.unix()),
        ))
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;
    use onion_hs::relay::RelayRoleError;

    #[test]
    fn a_role_refusal_destroys_with_the_reason_of_its_kind() {
        let cases = [
            (RelayRoleError::Full, DestroyReason::RESOURCELIMIT),
            (RelayRoleError::InUse, DestroyReason::PROTOCOL),
            (RelayRoleError::CircuitBusy, DestroyReason::PROTOCOL),
            (RelayRoleError::UnknownCookie, DestroyReason::PROTOCOL),
        ];
        for (e, reason) in cases {
            assert_eq!(e.kind().destroy_reason(), reason, "{e}");
        }
        // Not offering a role is not a bound nor our failure; our own failure is INTERNAL.
        assert_eq!(
            ErrorKind::Unsupported.destroy_reason(),
            DestroyReason::PROTOCOL
        );
        assert_eq!(
            ErrorKind::Internal.destroy_reason(),
            DestroyReason::INTERNAL
        );
    }
}
