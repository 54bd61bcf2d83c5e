//! Streams multiplexed on a circuit: ids, states, windows and half-closed bookkeeping
//! (tor-spec §6.2 "Opening streams and transferring data", §6.3 "Closing streams", §7.4).
//!
//! This module holds the per-stream state shared by the client circuit and the relay-side exit;
//! the cells themselves are built and parsed by the circuit machines. A stream costs a few dozen
//! bytes: no buffer is kept here (data is handed to the embedding as events as soon as it
//! arrives, and outgoing data is packaged straight into cells).

use bytes::Bytes;
use onion_cell::relaymsg::{EndReason, RelayMsg, Xon, MAX_RELAY_DATA_LEN};

use crate::cc::flowctl::{FlowCtrlParams, FlowSignal};
use crate::cc::CongestionControl;
use crate::flow::{
    CircSendWindow, FlowError, FlowStats, StreamRecvWindow, StreamSendWindow, WindowKind,
    STREAM_WINDOW_START,
};
use crate::Instant;

/// A stream identifier on one circuit (tor-spec §6.1: "No stream may have a StreamID of
/// zero"); the one type of `onion-cell`, re-exported where streams live.
pub use onion_cell::relay::StreamId;

/// What the other edge of a stream did, reported the same way at both ends of a circuit:
/// by the client's [`Circuit`](crate::circuit::Circuit) as
/// [`CircEvent::Stream`](crate::circuit::CircEvent::Stream) and by a relay's
/// [`RelayCircuit`](crate::relay::RelayCircuit) as
/// [`RelayEvent::Stream`](crate::relay::RelayEvent::Stream). Handing out a
/// [`StreamEvent::Data`] from `poll_event` counts as the embedding taking the bytes: that is
/// when the stream's SENDMEs are queued (tor-spec §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Bytes arrived on a stream: one RELAY_DATA cell's worth (tor-spec §6.2).
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Bytes,
    },
    /// The stream ended: RELAY_END from the other edge (tor-spec §6.3), or a local cause:
    /// DESTROY when the circuit goes away (or, at the client, is truncated before the
    /// stream's hop), TIMEOUT for a BEGIN or RESOLVE the client's exit left unanswered.
    Ended {
        /// The stream.
        stream: StreamId,
        /// Why: the other edge's reason, or the local cause.
        reason: EndReason,
    },
}

impl StreamEvent {
    /// The stream this event is about.
    pub fn stream(&self) -> StreamId {
        match self {
            StreamEvent::Data { stream, .. } | StreamEvent::Ended { stream, .. } => *stream,
        }
    }
}

/// Where a stream is in its life (tor-spec §6.2, §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// BEGIN / BEGIN_DIR sent (client) or received (exit), no CONNECTED yet. The client gives
    /// up at `deadline` (the stream connect timeout).
    Connecting {
        /// When the client abandons the attempt.
        deadline: Option<Instant>,
    },
    /// RESOLVE sent, waiting for RESOLVED (no stream is created at the exit, tor-spec §6.4).
    Resolving {
        /// When the client abandons the lookup.
        deadline: Option<Instant>,
    },
    /// CONNECTED seen: DATA flows both ways.
    Open,
    /// We sent END; the peer may still have cells in flight (tor-spec §6.3): we accept at most
    /// what it was allowed to send, then forget the stream when its END arrives or at
    /// `until`, whichever comes first.
    HalfClosed {
        /// When the stream is forgotten even without the peer's END (`None`: only then).
        until: Option<Instant>,
        /// DATA cells the peer may still send (our deliver window when we closed).
        data_left: u16,
        /// Stream SENDMEs the peer may still send (cells of ours it has not acknowledged / 50).
        sendmes_left: u16,
        /// Whether a CONNECTED may still arrive (we closed while connecting).
        connected_pending: bool,
    },
}

/// One stream's state and windows.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Its id on the circuit.
    pub id: StreamId,
    /// The hop (0-based) the stream ends at; always the last hop on the relay side.
    pub hop: u8,
    /// Life-cycle state.
    pub state: StreamState,
    /// Package window (tor-spec §7.4).
    pub send: StreamSendWindow,
    /// Deliver window (tor-spec §7.4).
    pub recv: StreamRecvWindow,
    /// DATA cells received but not yet taken by the embedding (their events not yet polled).
    pub undelivered: u16,
    /// The embedding cannot take more of this stream's data for now
    /// (`Circuit::hold_stream`): data is still delivered, but no stream SENDME goes out, so
    /// the exit stops after the stream window while the circuit's other streams go on.
    pub held: bool,
    /// The stream runs on a congestion-controlled hop (proposal 324 §4): no stream windows
    /// and no stream SENDMEs either way; flow control is XON/XOFF.
    pub windowless: bool,
    /// On a windowless stream: we sent XOFF (the embedding holds the stream) and no XON yet.
    pub xoff_sent: bool,
    /// On a windowless stream: the other edge sent XOFF and no XON yet; we send no DATA.
    pub xoff_received: bool,
    /// On a windowless stream, once needed: the drain rate our XONs advise and the pacing
    /// the other edge's XON asked for (proposal 324 §4.1.1).
    pub flowctl: Option<Box<crate::cc::flowctl::StreamFlowCtl>>,
}

/// One more cell of a kind a half-closed stream may still receive, `left` of them: dropped
/// quietly, or `refused` once none is left (tor-spec §6.3: "SHOULD kill the circuit if it
/// receives more than permitted").
fn absorb(left: &mut u16, refused: StreamError) -> Result<Admit, StreamError> {
    if *left == 0 {
        return Err(refused);
    }
    *left -= 1;
    Ok(Admit::DropQuietly)
}

/// What to do with a cell that arrived for a stream in some state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Process it normally.
    Process,
    /// The stream is half-closed and this cell was still allowed: drop it quietly.
    DropQuietly,
}

/// A cell arrived on a stream that was not allowed to send it (tor-spec §6.3: "SHOULD kill the
/// circuit if it receives more than permitted").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// More DATA on a half-closed stream than its window allowed.
    #[error("stream {0}: DATA after END beyond the remaining window")]
    DataAfterEnd(StreamId),
    /// A SENDME on a half-closed stream beyond what it could owe us.
    #[error("stream {0}: SENDME after END beyond what was outstanding")]
    SendmeAfterEnd(StreamId),
    /// CONNECTED on a stream that was already connected, or closed after connecting.
    #[error("stream {0}: unexpected CONNECTED")]
    UnexpectedConnected(StreamId),
    /// DATA before CONNECTED on a client stream (the exit may not send data first).
    #[error("stream {0}: DATA before CONNECTED")]
    DataBeforeConnected(StreamId),
    /// A flow-control violation on the stream.
    #[error("stream {id}: {err}")]
    Flow {
        /// The stream.
        id: StreamId,
        /// The violation.
        err: FlowError,
    },
}

impl Stream {
    /// A new stream in `state`, with full windows.
    pub fn new(id: StreamId, hop: u8, state: StreamState) -> Self {
        Stream {
            id,
            hop,
            state,
            send: StreamSendWindow::default(),
            recv: StreamRecvWindow::default(),
            undelivered: 0,
            held: false,
            windowless: false,
            xoff_sent: false,
            xoff_received: false,
            flowctl: None,
        }
    }

    /// Whether the stream is half-closed (we sent END).
    pub fn is_half_closed(&self) -> bool {
        matches!(self.state, StreamState::HalfClosed { .. })
    }

    /// Move to half-closed after sending END, remembering what the peer may still send, until
    /// `until` at the latest.
    pub fn half_close(&mut self, until: Option<Instant>) {
        let connected_pending = matches!(self.state, StreamState::Connecting { .. });
        let outstanding = STREAM_WINDOW_START.saturating_sub(self.send.available());
        // Without stream windows the peer's in-flight data is bounded only by the circuit's
        // congestion window; the half-closed timeout bounds how long it is absorbed.
        let (data_left, sendmes_left) = if self.windowless {
            (u16::MAX, 0)
        } else {
            (
                self.recv.available(),
                outstanding.div_ceil(crate::flow::STREAM_WINDOW_INCREMENT),
            )
        };
        self.state = StreamState::HalfClosed {
            until,
            data_left,
            sendmes_left,
            connected_pending,
        };
    }

    /// Admit an incoming DATA cell (and count it against the deliver window).
    pub fn on_data(&mut self) -> Result<Admit, StreamError> {
        match &mut self.state {
            StreamState::HalfClosed { data_left, .. } => {
                absorb(data_left, StreamError::DataAfterEnd(self.id))
            }
            StreamState::Connecting { .. } | StreamState::Resolving { .. } => {
                Err(StreamError::DataBeforeConnected(self.id))
            }
            StreamState::Open => {
                if !self.windowless {
                    self.recv
                        .take()
                        .map_err(|err| StreamError::Flow { id: self.id, err })?;
                }
                self.undelivered = self.undelivered.saturating_add(1);
                Ok(Admit::Process)
            }
        }
    }

    /// The embedding took one DATA cell's bytes: returns how many stream SENDMEs to send now
    /// (tor-spec §7.4: window <= 450 and fewer than ten cells waiting to be flushed).
    pub fn on_delivered(&mut self) -> u16 {
        self.undelivered = self.undelivered.saturating_sub(1);
        self.sendmes_due()
    }

    /// How many stream SENDMEs to send now (tor-spec §7.4), counted off the deliver window:
    /// none while the embedding still has ten or more cells of it to take, while it holds the
    /// stream, or once the stream is half-closed.
    pub fn sendmes_due(&mut self) -> u16 {
        let mut n = 0;
        if self.undelivered < 10 && !self.held && !self.is_half_closed() && !self.windowless {
            while self.recv.consider_sendme() {
                n += 1;
            }
        }
        n
    }

    /// Admit an incoming stream-level SENDME.
    pub fn on_sendme(&mut self) -> Result<Admit, StreamError> {
        match &mut self.state {
            StreamState::HalfClosed { sendmes_left, .. } => {
                absorb(sendmes_left, StreamError::SendmeAfterEnd(self.id))
            }
            // C tor closes a congestion-controlled circuit on a stream SENDME.
            _ if self.windowless => Err(StreamError::Flow {
                id: self.id,
                err: FlowError::UnexpectedSendme(WindowKind::Stream),
            }),
            _ => {
                self.send
                    .handle_sendme()
                    .map_err(|err| StreamError::Flow { id: self.id, err })?;
                Ok(Admit::Process)
            }
        }
    }

    /// Admit an incoming CONNECTED.
    pub fn on_connected(&mut self) -> Result<Admit, StreamError> {
        match &mut self.state {
            StreamState::Connecting { .. } => {
                self.state = StreamState::Open;
                Ok(Admit::Process)
            }
            StreamState::HalfClosed {
                connected_pending, ..
            } if *connected_pending => {
                *connected_pending = false;
                Ok(Admit::DropQuietly)
            }
            _ => Err(StreamError::UnexpectedConnected(self.id)),
        }
    }

    /// The connect or resolve deadline, or the end of the half-closed window, if one is
    /// running.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            StreamState::Connecting { deadline } | StreamState::Resolving { deadline } => deadline,
            StreamState::HalfClosed { until, .. } => until,
            StreamState::Open => None,
        }
    }
}

/// The stream side of congestion control and XON/XOFF (proposal 324 §4.1.1), the same at
/// both edges of a circuit: a client's [`crate::circuit::Circuit`] and a relay's exit
/// streams ([`crate::relay::RelayCircuit`]) keep their streams' flow through these.
impl Stream {
    /// Bytes a stream on a congestion-controlled circuit may send now: `window_cells` cells
    /// of the congestion window (`cwnd - inflight`), none after the other edge's XOFF, and no
    /// more than the rate its last XON advised allows at `now`.
    pub(crate) fn cc_send_capacity(&self, window_cells: u64, now: Instant) -> usize {
        if self.xoff_received {
            return 0;
        }
        let cells = usize::try_from(window_cells).unwrap_or(usize::MAX);
        let bytes = cells.saturating_mul(MAX_RELAY_DATA_LEN);
        match &self.flowctl {
            Some(fc) => {
                let tokens = fc.limit.clone().available(now);
                bytes.min(usize::try_from(tokens).unwrap_or(usize::MAX))
            }
            None => bytes,
        }
    }

    /// XOFF or XON from the other edge at `now`: XOFF stops our sending on the stream until
    /// XON; an XON's advisory rate paces it from then on (rate 0: unlimited), as C tor
    /// adjusts the edge's token bucket. Counted in `stats`. Dropped, as C tor drops them
    /// (nothing closes), on a stream without congestion control or a half-closed one.
    pub(crate) fn on_xon_xoff(&mut self, msg: &RelayMsg<'_>, now: Instant, stats: &mut FlowStats) {
        if !self.windowless || self.is_half_closed() {
            return;
        }
        match msg {
            RelayMsg::Xoff => {
                self.xoff_received = true;
                stats.xoff_received += 1;
            }
            RelayMsg::Xon(x) => {
                self.xoff_received = false;
                stats.xon_received += 1;
                let fc = self.flowctl.get_or_insert_with(Default::default);
                fc.limit.on_xon(now, x.kbps_ewma);
                fc.starved = false;
            }
            _ => {}
        }
    }

    /// The embedding wrote `written` bytes of the stream to its destination and still holds
    /// `buffered`: the XOFF / XON to send to the other edge, if any (XOFF once more than
    /// `xoff_bytes` wait, XON once drained, advisory XONs when the drain rate changes; C
    /// tor's `flow_control_decide_xoff` / `flow_control_decide_xon`).
    pub(crate) fn note_buffer(
        &mut self,
        p: &FlowCtrlParams,
        now: Instant,
        written: usize,
        buffered: usize,
        xoff_bytes: u64,
    ) -> [Option<FlowSignal>; 2] {
        let fc = self.flowctl.get_or_insert_with(Default::default);
        let (written, buffered) = (written as u64, buffered as u64);
        let mut signals = [None, None];
        if written > 0 {
            signals[0] = fc
                .drain
                .on_drained(p, now, written, buffered, &mut self.xoff_sent);
        }
        signals[1] = fc
            .drain
            .on_buffered(p, now, buffered, xoff_bytes, &mut self.xoff_sent);
        signals
    }

    /// When a stream that the advised rate held back (its data refused for lack of tokens)
    /// may send a cell again: the embedding's timer, after which it offers the data again.
    pub(crate) fn paced_until(&self) -> Option<Instant> {
        let fc = self.flowctl.as_deref().filter(|fc| fc.starved)?;
        fc.limit.ready_at(MAX_RELAY_DATA_LEN as u64)
    }

    /// Time passed to `now`: a stream held back by the advised rate is ready once a cell's
    /// worth of tokens has come.
    pub(crate) fn unpace(&mut self, now: Instant) {
        if let Some(fc) = self.flowctl.as_deref_mut() {
            if fc.starved
                && fc
                    .limit
                    .ready_at(MAX_RELAY_DATA_LEN as u64)
                    .map_or(true, |t| t <= now)
            {
                fc.starved = false;
            }
        }
    }
}

/// What bounds a stream's DATA cells: the congestion window of its circuit (proposal 324
/// §4: no stream window), or the circuit's package window (tor-spec §7.3) with the stream's
/// own (§7.4).
pub(crate) enum SendLimit<'a> {
    /// Congestion control: `cwnd - inflight`, and the send time of each SENDME-eliciting
    /// cell is the time it is packaged, as C tor notes it.
    Cc(&'a mut CongestionControl),
    /// Fixed windows: the circuit's package window.
    Window(&'a mut CircSendWindow),
}

impl Stream {
    /// Cut `data` into this stream's DATA cells at `now`, as many as `limit`, the other
    /// edge's XOFF and its XON rate allow; `cell(chunk, trigger)` receives each cell's bytes
    /// (at most 498) and whether its digest is the one the next circuit SENDME must echo
    /// (tor-spec §7.3.1). Returns the bytes taken. A stream the rate holds back is marked to
    /// wait for [`Stream::paced_until`].
    pub(crate) fn package(
        &mut self,
        limit: SendLimit<'_>,
        now: Instant,
        data: &[u8],
        mut cell: impl FnMut(&[u8], bool),
    ) -> usize {
        if self.xoff_received {
            // Proposal 324 §4.1.1: the other edge asked us to stop reading this stream.
            return 0;
        }
        let mut taken = 0;
        match limit {
            SendLimit::Cc(cc) => {
                let mut budget = match self.flowctl.as_deref_mut() {
                    Some(fc) => fc.limit.available(now),
                    None => u64::MAX,
                };
                while taken < data.len() {
                    let n = (data.len() - taken).min(cc.next_data_len());
                    if (n as u64) > budget {
                        if let Some(fc) = self.flowctl.as_deref_mut() {
                            fc.starved = true;
                        }
                        break;
                    }
                    let Some(trigger) = cc.on_data_sent(now) else {
                        break;
                    };
                    cell(&data[taken..taken + n], trigger);
                    taken += n;
                    budget -= n as u64;
                }
                if let Some(fc) = self.flowctl.as_deref_mut() {
                    fc.limit.take(taken as u64);
                }
            }
            SendLimit::Window(circ) => {
                while taken < data.len() && self.send.available() > 0 {
                    let n = (data.len() - taken).min(circ.next_data_len());
                    let Some(trigger) = circ.take() else {
                        break;
                    };
                    self.send.take();
                    cell(&data[taken..taken + n], trigger);
                    taken += n;
                }
            }
        }
        taken
    }
}

/// The relay message carrying `sig` (RELAY_XOFF, or RELAY_XON with its advisory rate),
/// counted in `stats` as sent.
pub(crate) fn flow_signal_msg(sig: FlowSignal, stats: &mut FlowStats) -> RelayMsg<'static> {
    match sig {
        FlowSignal::Xoff => {
            stats.xoff_sent += 1;
            RelayMsg::Xoff
        }
        FlowSignal::Xon { kbps_ewma } => {
            stats.xon_sent += 1;
            RelayMsg::Xon(Xon { kbps_ewma })
        }
    }
}

/// The streams of one circuit, in a small vector (circuits rarely carry more than a handful;
/// a linear scan beats hashing at that size and costs no heap when empty).
#[derive(Debug, Clone, Default)]
pub struct StreamMap {
    streams: Vec<Stream>,
    next_id: u16,
}

/// At most this many streams (open or half-closed) per circuit, to bound memory.
pub const MAX_STREAMS_PER_CIRCUIT: usize = 1024;

impl StreamMap {
    /// An empty map.
    pub fn new() -> Self {
        StreamMap {
            streams: Vec::new(),
            next_id: 1,
        }
    }

    /// Number of streams tracked (including half-closed ones).
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is tracked.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Pick an unused stream id (sequentially, skipping zero and ids in use, as C tor does), or
    /// `None` if the circuit already carries [`MAX_STREAMS_PER_CIRCUIT`] streams.
    pub fn alloc_id(&mut self) -> Option<StreamId> {
        if self.streams.len() >= MAX_STREAMS_PER_CIRCUIT {
            return None;
        }
        loop {
            let candidate = StreamId::new(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = candidate {
                if self.get(id).is_none() {
                    return Some(id);
                }
            }
        }
    }

    /// Track a stream; `false` if the id is in use or the map is full.
    pub fn insert(&mut self, s: Stream) -> bool {
        if self.streams.len() >= MAX_STREAMS_PER_CIRCUIT || self.get(s.id).is_some() {
            return false;
        }
        self.streams.push(s);
        true
    }

    /// The stream `id`.
    pub fn get(&self, id: StreamId) -> Option<&Stream> {
        self.streams.iter().find(|s| s.id == id)
    }

    /// The stream `id`, mutably.
    pub fn get_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|s| s.id == id)
    }

    /// The stream `id` if it is live (not half-closed: we have not sent its END), mutably.
    pub fn live_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        self.get_mut(id).filter(|s| !s.is_half_closed())
    }

    /// Forget the stream `id`, returning it.
    pub fn remove(&mut self, id: StreamId) -> Option<Stream> {
        let pos = self.streams.iter().position(|s| s.id == id)?;
        Some(self.streams.swap_remove(pos))
    }

    /// Iterate over the streams.
    pub fn iter(&self) -> impl Iterator<Item = &Stream> {
        self.streams.iter()
    }

    /// Iterate mutably over the streams.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Stream> {
        self.streams.iter_mut()
    }

    /// The earliest connect/resolve deadline or half-closed expiry of any stream.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.streams.iter().filter_map(Stream::deadline).min()
    }

    /// Remove and return the streams whose deadline ([`Stream::deadline`]) has passed at
    /// `now`: connect/resolve attempts that timed out, and half-closed streams whose window
    /// ended (their ids become free).
    pub fn expire(&mut self, now: Instant) -> Vec<Stream> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.streams.len() {
            if self.streams[i].deadline().is_some_and(|d| d <= now) {
                gone.push(self.streams.swap_remove(i));
            } else {
                i += 1;
            }
        }
        gone
    }

    /// The circuit went away: forget every stream and return what to report of them, one
    /// [`StreamEvent::Ended`] with reason DESTROY for each stream the embedding still holds
    /// (a half-closed one, which the embedding closed itself, goes silently).
    pub fn destroy_all(&mut self) -> impl Iterator<Item = StreamEvent> {
        core::mem::replace(self, StreamMap::new())
            .streams
            .into_iter()
            .filter(|s| !s.is_half_closed())
            .map(|s| StreamEvent::Ended {
                stream: s.id,
                reason: EndReason::DESTROY,
            })
    }

    /// Give memory back after many streams came and went.
    pub fn shrink(&mut self) {
        if self.streams.capacity() > 2 * self.streams.len() + 4 {
            self.streams.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sid(v: u16) -> StreamId {
        StreamId::new(v).expect("nonzero")
    }

    /// The stream side of XON/XOFF that both edges use (proposal 324 §4.1.1): XOFF stops
    /// the stream, XON with a rate paces it (the capacity is the rate's tokens, then none
    /// until they refill), and a stream without congestion control ignores both.
    #[test]
    fn xon_xoff_stop_and_pace_a_windowless_stream() {
        let now = Instant::ZERO + core::time::Duration::from_secs(1);
        let mut stats = FlowStats::default();
        let mut s = Stream::new(sid(1), 0, StreamState::Open);
        s.on_xon_xoff(&RelayMsg::Xoff, now, &mut stats);
        assert!(!s.xoff_received, "a windowed stream ignores XOFF");
        s.windowless = true;
        assert_eq!(s.cc_send_capacity(10, now), 10 * MAX_RELAY_DATA_LEN);
        s.on_xon_xoff(&RelayMsg::Xoff, now, &mut stats);
        assert_eq!(s.cc_send_capacity(10, now), 0);
        // XON at 1 kB/s: one second's worth of tokens, then paced.
        s.on_xon_xoff(&RelayMsg::Xon(Xon { kbps_ewma: 1 }), now, &mut stats);
        assert_eq!(s.cc_send_capacity(10, now), 1000);
        let fc = s.flowctl.as_deref_mut().expect("rate kept");
        fc.limit.take(1000);
        fc.starved = true;
        assert_eq!(s.cc_send_capacity(10, now), 0);
        let ready = s.paced_until().expect("waits for tokens");
        assert!(ready > now);
        s.unpace(now);
        assert!(s.paced_until().is_some(), "not before its time");
        s.unpace(ready);
        assert_eq!(s.paced_until(), None);
        assert_eq!((stats.xoff_received, stats.xon_received), (1, 1));
        // What goes out is counted too.
        assert_eq!(
            flow_signal_msg(FlowSignal::Xoff, &mut stats),
            RelayMsg::Xoff
        );
        assert_eq!(stats.xoff_sent, 1);
    }

    #[test]
    fn ids_skip_zero_and_used() {
        let mut m = StreamMap::new();
        m.next_id = u16::MAX;
        let a = m.alloc_id().expect("id");
        assert_eq!(a.get(), u16::MAX);
        m.insert(Stream::new(a, 2, StreamState::Open));
        m.insert(Stream::new(sid(1), 2, StreamState::Open));
        let b = m.alloc_id().expect("id");
        assert_eq!(b.get(), 2, "wraps past 0 and past the used id 1");
    }

    #[test]
    fn windowless_stream_has_no_windows_and_refuses_stream_sendmes() {
        let mut s = Stream::new(sid(4), 2, StreamState::Open);
        s.windowless = true;
        // More than a 500-cell window, none delivered: no overrun, no SENDME due.
        for _ in 0..600 {
            assert_eq!(s.on_data().expect("ok"), Admit::Process);
        }
        for _ in 0..600 {
            assert_eq!(s.on_delivered(), 0);
        }
        assert_eq!(
            s.on_sendme(),
            Err(StreamError::Flow {
                id: sid(4),
                err: FlowError::UnexpectedSendme(WindowKind::Stream)
            })
        );
        // Half-closed: late data is absorbed up to the bound, no SENDME is owed.
        s.half_close(None);
        for _ in 0..1000 {
            assert_eq!(s.on_data().expect("ok"), Admit::DropQuietly);
        }
        assert_eq!(s.on_sendme(), Err(StreamError::SendmeAfterEnd(sid(4))));
    }

    #[test]
    fn half_closed_accounting() {
        let mut s = Stream::new(sid(3), 2, StreamState::Open);
        // We sent 120 cells (3 SENDMEs may still come), received 10.
        for _ in 0..120 {
            assert!(s.send.take());
        }
        for _ in 0..10 {
            s.on_data().expect("ok");
        }
        s.half_close(None);
        assert!(s.is_half_closed());
        for _ in 0..490 {
            assert_eq!(s.on_data().expect("ok"), Admit::DropQuietly);
        }
        assert_eq!(s.on_data(), Err(StreamError::DataAfterEnd(sid(3))));
        for _ in 0..3 {
            assert_eq!(s.on_sendme().expect("ok"), Admit::DropQuietly);
        }
        assert_eq!(s.on_sendme(), Err(StreamError::SendmeAfterEnd(sid(3))));
        assert_eq!(
            s.on_connected(),
            Err(StreamError::UnexpectedConnected(sid(3)))
        );
    }

    #[test]
    fn connected_after_close_while_connecting_is_tolerated_once() {
        let mut s = Stream::new(sid(4), 0, StreamState::Connecting { deadline: None });
        assert_eq!(s.on_data(), Err(StreamError::DataBeforeConnected(sid(4))));
        s.half_close(None);
        assert_eq!(s.on_connected(), Ok(Admit::DropQuietly));
        assert!(s.on_connected().is_err());
    }

    #[test]
    fn expiry() {
        let mut m = StreamMap::new();
        let t = |n| Instant::from_nanos(n);
        m.insert(Stream::new(
            sid(1),
            0,
            StreamState::Connecting {
                deadline: Some(t(10)),
            },
        ));
        m.insert(Stream::new(
            sid(2),
            0,
            StreamState::Resolving {
                deadline: Some(t(5)),
            },
        ));
        m.insert(Stream::new(sid(3), 0, StreamState::Open));
        assert_eq!(m.next_deadline(), Some(t(5)));
        let ids = |v: Vec<Stream>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(m.expire(t(7))), vec![sid(2)]);
        assert_eq!(ids(m.expire(t(10))), vec![sid(1)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.next_deadline(), None);
    }

    /// A half-closed stream is kept until its window ends, then forgotten: its id can be
    /// used again.
    #[test]
    fn half_closed_expiry_frees_the_id() {
        let t = |n| Instant::from_nanos(n);
        let mut m = StreamMap::new();
        let mut s = Stream::new(sid(7), 2, StreamState::Open);
        s.half_close(Some(t(100)));
        assert!(m.insert(s));
        assert_eq!(m.next_deadline(), Some(t(100)));
        assert!(m.expire(t(99)).is_empty());
        assert!(
            !m.insert(Stream::new(sid(7), 2, StreamState::Open)),
            "id still in use"
        );
        let gone = m.expire(t(100));
        assert_eq!(gone.len(), 1);
        assert!(gone[0].is_half_closed());
        assert!(m.is_empty());
        assert_eq!(m.next_deadline(), None);
        assert!(
            m.insert(Stream::new(sid(7), 2, StreamState::Open)),
            "id free again"
        );
    }

    /// When the circuit goes away, each stream the embedding holds ends with DESTROY; a
    /// half-closed one (the embedding closed it) is forgotten without an event.
    #[test]
    fn destroy_all_ends_the_held_streams_only() {
        let mut m = StreamMap::new();
        m.insert(Stream::new(sid(1), 0, StreamState::Open));
        let mut closed = Stream::new(sid(2), 0, StreamState::Open);
        closed.half_close(None);
        m.insert(closed);
        m.insert(Stream::new(
            sid(3),
            0,
            StreamState::Connecting { deadline: None },
        ));
        let mut ended: Vec<StreamEvent> = m.destroy_all().collect();
        ended.sort_by_key(StreamEvent::stream);
        let destroyed = |n| StreamEvent::Ended {
            stream: sid(n),
            reason: EndReason::DESTROY,
        };
        assert_eq!(ended, vec![destroyed(1), destroyed(3)]);
        assert!(m.is_empty());
        assert_eq!(m.alloc_id(), Some(sid(1)), "ids start again");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Allocated ids are unique and nonzero whatever the starting point.
        #[test]
        fn alloc_unique(start in any::<u16>(), n in 1usize..300) {
            let mut m = StreamMap::new();
            m.next_id = start;
            for _ in 0..n {
                let id = m.alloc_id().expect("room");
                prop_assert!(m.insert(Stream::new(id, 0, StreamState::Open)));
            }
            prop_assert_eq!(m.len(), n);
        }

        /// Arbitrary sequences of peer cells on a stream never panic.
        #[test]
        fn arbitrary_peer_cells(ops in proptest::collection::vec(0u8..4, 0..1200)) {
            let mut s = Stream::new(sid(9), 1, StreamState::Connecting { deadline: None });
            for op in ops {
                let _ = match op {
                    0 => s.on_data().map(|_| ()),
                    1 => s.on_sendme().map(|_| ()),
                    2 => s.on_connected().map(|_| ()),
                    _ => { s.half_close(None); Ok(()) }
                };
            }
        }
    }
}
