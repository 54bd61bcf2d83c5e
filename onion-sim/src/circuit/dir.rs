//! A relay's directory service: BEGIN_DIR streams carrying one HTTP request each
//! (tor-spec §6.2 "BEGIN_DIR", dir-spec §4), for the [`Edge`] slot of a relay.
//!
//! [`DirEdge`] does the stream side: it accepts BEGIN_DIR (CONNECTED), gathers the request's
//! bytes (bounded), asks its [`DirService`] for the answer once the request is complete,
//! writes the answer within the stream's windows and closes the stream (RELAY_END DONE), as a
//! directory cache does over HTTP/1.0. What the requests mean (an HSDir storing and serving
//! onion-service descriptors, say) is the [`DirService`]'s business.

use std::collections::BTreeMap;

use onion_cell::relaymsg::EndReason;

use super::net::{Edge, RelayCx};
use onion_circuit::relay::RelayEvent;
use onion_circuit::stream::StreamId;

/// Largest request a [`DirEdge`] buffers; a longer one ends the stream (RESOURCELIMIT).
pub const MAX_DIR_REQUEST: usize = 64 * 1024;

/// What a directory answers.
pub trait DirService {
    /// The response to `request` (all the bytes received so far on one stream), or `None`
    /// while the request is incomplete. `cx` is the relay's, for its story.
    fn respond(&mut self, cx: &mut RelayCx<'_>, request: &[u8]) -> Option<Vec<u8>>;
}

#[derive(Debug, Default)]
struct DirStream {
    request: Vec<u8>,
    /// The answer, once known, and how much of it was sent.
    response: Option<(Vec<u8>, usize)>,
}

/// The BEGIN_DIR side of a relay, answering with `S`.
#[derive(Debug)]
pub struct DirEdge<S> {
    service: S,
    streams: BTreeMap<(usize, StreamId), DirStream>,
}

impl<S: DirService> DirEdge<S> {
    /// A directory answering with `service`.
    pub fn new(service: S) -> Self {
        DirEdge {
            service,
            streams: BTreeMap::new(),
        }
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }
}

impl<S: DirService> Edge for DirEdge<S> {
    fn on_event(
        &mut self,
        cx: &mut RelayCx<'_>,
        circ: usize,
        ev: RelayEvent,
    ) -> Option<RelayEvent> {
        match ev {
            RelayEvent::BeginDir { stream } => {
                if let Some(c) = cx.circ(circ) {
                    if c.connected(stream, None).is_ok() {
                        self.streams.insert((circ, stream), DirStream::default());
                    }
                }
                None
            }
            RelayEvent::Data { stream, data } => {
                let key = (circ, stream);
                let Some(s) = self.streams.get_mut(&key) else {
                    return Some(RelayEvent::Data { stream, data });
                };
                if s.response.is_some() {
                    // HTTP/1.0: one request per stream; anything after it is ignored.
                    return None;
                }
                if s.request.len() + data.len() > MAX_DIR_REQUEST {
                    self.streams.remove(&key);
                    if let Some(c) = cx.circ(circ) {
                        let _ = c.end_stream(stream, EndReason::RESOURCELIMIT);
                    }
                    cx.say(format!(
                        "stream {stream}: directory request too long, stream ended"
                    ));
                    return None;
                }
                s.request.extend_from_slice(&data);
                if let Some(resp) = self.service.respond(cx, &s.request) {
                    s.response = Some((resp, 0));
                }
                None
            }
            RelayEvent::StreamEnded { stream, reason } => {
                self.streams.remove(&(circ, stream));
                Some(RelayEvent::StreamEnded { stream, reason })
            }
            RelayEvent::Closed { error } => {
                self.streams.retain(|(c, _), _| *c != circ);
                Some(RelayEvent::Closed { error })
            }
            other => Some(other),
        }
    }

    /// Write the answers within the windows; end each stream when its answer is out.
    fn step(&mut self, cx: &mut RelayCx<'_>) -> bool {
        let mut moved = false;
        let mut done = Vec::new();
        for (&(circ, stream), s) in &mut self.streams {
            let Some((resp, sent)) = &mut s.response else {
                continue;
            };
            let Some(c) = cx.circ(circ) else {
                done.push((circ, stream));
                continue;
            };
            if *sent < resp.len() {
                let n = c.send(stream, &resp[*sent..]).unwrap_or(0);
                if n > 0 {
                    moved = true;
                    *sent += n;
                }
            }
            if *sent >= resp.len() {
                let _ = c.end_stream(stream, EndReason::DONE);
                moved = true;
                done.push((circ, stream));
            }
        }
        for k in done {
            self.streams.remove(&k);
        }
        moved
    }
}
