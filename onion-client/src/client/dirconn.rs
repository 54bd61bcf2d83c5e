//! Carrying the directory machine's requests: each on a BEGIN_DIR stream (tor-spec §6.2.1)
//! over a one-hop circuit to the source it names, CREATE_FAST to an authority or fallback
//! (whose TLS identity authenticates it; its onion key is not known before bootstrap) and
//! ntor to a directory guard (guard-spec §4.6). One circuit per source carries its requests
//! one after another and in parallel, and is closed after [`super::DIR_CIRCUIT_IDLE`] without
//! one.

use onion_circuit::circuit::HopTarget;
use onion_crypto::keys::NtorOnionKey;
use std::net::SocketAddr;

use super::circ::{CircPhase, Purpose};
use super::event::{Event, Persist};
use super::stream::{Stream, Target};
use crate::dir::{DirEvent, Failure, Request, RequestId, Source};
use crate::guards::{Blame, Ticket};
use crate::{Error, Instant, Isolation};

impl super::Client {
    /// Move the directory machine's events into the client's and carry its requests.
    pub(super) fn drive_dir(&mut self) {
        // Each answer may make the machine ask again: bounded by its own limits.
        loop {
            let mut any = false;
            while let Some(ev) = self.dir.poll_event() {
                any = true;
                let ev = match ev {
                    DirEvent::Progress { percent, what } => Event::Bootstrap { percent, what },
                    DirEvent::Directory(d) => {
                        self.new_directory(&d);
                        Event::DirectoryChanged(d)
                    }
                    DirEvent::Persist {
                        kind,
                        text,
                        keep_until,
                    } => Event::Persist(Persist::Directory {
                        kind,
                        text,
                        keep_until,
                    }),
                    DirEvent::Failed(e) => Event::DirectoryFailed(e),
                };
                self.emit(ev);
            }
            while let Some(req) = self.dir.poll_request() {
                any = true;
                if let Err(e) = self.carry(&req) {
                    self.dir_answer(req.id, Err(Failure::Network(e.to_string())));
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Hand the answer to request `req` to the directory machine.
    pub(super) fn dir_answer(&mut self, req: RequestId, answer: Result<Vec<u8>, Failure>) {
        // The onion-service machines' requests are theirs (`onion.rs`).
        let Some(answer) = self.hs_take_dir_answer(req, answer) else {
            return;
        };
        let wall = self.wall_now();
        self.dir
            .handle_response(req, self.now, wall, answer, &mut self.rng);
    }

    /// The relay of a source: a path of one hop, the guard ticket of a directory guard, and
    /// whether CREATE_FAST is used.
    fn source_path(&mut self, source: Source) -> Result<(HopTarget, Option<Ticket>, bool), Error> {
        let fast = |rsa_id, addr: SocketAddr| HopTarget {
            rsa_id,
            ed_id: None,
            ntor_key: NtorOnionKey([0; 32]),
            addrs: vec![addr],
            ntor_v3: false,
        };
        let wall = self.wall_now();
        let hop = match source {
            Source::Authority(i) => {
                let a = self
                    .cfg
                    .dir
                    .authorities
                    .get(i)
                    .ok_or(Error::Misuse("no such authority"))?;
                let addr = a
                    .or_addr
                    .ok_or_else(|| Error::NoPath(format!("authority {} has no ORPort", a.name)))?;
                fast(a.rsa_id, addr)
            }
            Source::Fallback(i) => {
                let f = self
                    .cfg
                    .dir
                    .fallbacks
                    .get(i)
                    .ok_or(Error::Misuse("no such fallback"))?;
                fast(f.rsa_id, SocketAddr::V4(f.or_addr))
            }
            Source::DirGuard => {
                let dir = self.dir.directory().cloned().ok_or_else(|| {
                    Error::NoPath("no directory guard without a directory".into())
                })?;
                let p = self.guards.dir_guard(&dir, wall, &mut self.rng)?;
                let hop = p.hops.into_iter().next();
                let hop = hop.ok_or_else(|| Error::NoPath("empty directory guard path".into()));
                return match hop {
                    Ok(h) => Ok((h, Some(p.ticket), false)),
                    Err(e) => {
                        self.guards.failed(p.ticket, Blame::Other, wall);
                        Err(e)
                    }
                };
            }
        };
        Ok((hop, None, true))
    }

    /// Start carrying `req`: a BEGIN_DIR stream waiting for a one-hop circuit to its source.
    fn carry(&mut self, req: &Request) -> Result<(), Error> {
        if self.streams.len() >= self.cfg.limits.max_streams {
            return Err(Error::Resource("too many streams (Limits::max_streams)"));
        }
        let (hop, ticket, fast) = self.source_path(req.source)?;
        let first = Some(hop.rsa_id);
        let max = self.cfg.limits.max_streams_per_circuit;
        let reuse = self
            .circs
            .iter()
            .find(|(_, c)| {
                c.purpose == Purpose::Dir
                    && c.path.len() == 1
                    && c.first() == first
                    && c.streams.len() < max
                    && c.phase != CircPhase::Waiting
            })
            .map(|(k, _)| *k);
        let key = match reuse {
            Some(k) => {
                if let Some(t) = ticket {
                    let wall = self.wall_now();
                    self.guards.closed(t, wall);
                }
                k
            }
            None => self.launch(vec![hop], ticket, Purpose::Dir, fast)?,
        };
        let deadline = self.now + self.cfg.dir.request_timeout;
        self.add_dir_stream(key, req.id, req.to_http(), req.max_body, deadline);
        Ok(())
    }

    /// Add a BEGIN_DIR stream (tor-spec §6.2.1) sending `http` for `req` on circuit `key`
    /// only, with an answer body of at most `max_body` bytes, given up at `deadline`. Used
    /// for the directory machine's requests and the onion-service machine's HSDir requests;
    /// the caller has checked [`super::Limits::max_streams`].
    pub(super) fn add_dir_stream(
        &mut self,
        key: u64,
        req: RequestId,
        http: Vec<u8>,
        max_body: usize,
        deadline: Instant,
    ) {
        let mut s = Stream::new(
            Target::Dir {
                req,
                http: http.into(),
                max_body,
                deadline,
            },
            Isolation::NONE,
            deadline,
        );
        s.circ = Some(key);
        let h = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(h, s);
    }
}
