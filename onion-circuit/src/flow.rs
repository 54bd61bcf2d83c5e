//! SENDME flow control: circuit and stream windows (tor-spec §7.3, §7.3.1, §7.4).
//!
//! Every endpoint of a circuit keeps, per hop it talks to, a *package* window (how many more
//! RELAY_DATA cells it may originate) and a *deliver* window (how many more it will accept).
//! Circuit windows start at 1000 and move by 100; stream windows start at 500 and move by 50.
//!
//! Circuit-level SENDMEs are authenticated (version 1, §7.3.1): the sender of DATA remembers the
//! running digest of every cell that will trigger a SENDME (the 100th, 200th, … cell), and the
//! receiver echoes the digest of the cell that made it send the SENDME. A mismatch, a SENDME
//! nobody asked for, or a deliver window going below zero tears the circuit down.
//!
//! These types hold no buffers: a window is a counter, and at most ten 20-byte digests are
//! remembered (one per outstanding increment of a 1000-cell window).

use std::collections::VecDeque;

use subtle::ConstantTimeEq;

/// Initial circuit-level package and deliver window (tor-spec §7.3, "circwindow" default).
pub const CIRC_WINDOW_START: u16 = 1000;
/// Circuit-level window increment carried by one SENDME (tor-spec §7.3).
pub const CIRC_WINDOW_INCREMENT: u16 = 100;
/// Initial stream-level package and deliver window (tor-spec §7.4).
pub const STREAM_WINDOW_START: u16 = 500;
/// Stream-level window increment carried by one SENDME (tor-spec §7.4).
pub const STREAM_WINDOW_INCREMENT: u16 = 50;

/// Payload bytes of a full RELAY_DATA cell (tor-spec §6.1: 509 - 11).
const MAX_DATA_LEN: usize = 498;

/// How many bytes short of full the first DATA cell of each increment is (4 zero bytes and
/// 28 random ones of padding).
pub const SENDME_UNPREDICTABLE_GAP: usize = 32;

/// Length of the digest an authenticated SENDME carries (tor-spec §7.3.1).
pub const SENDME_DIGEST_LEN: usize = 20;

/// The SENDME v1 tag for a running digest: its first [`SENDME_DIGEST_LEN`] bytes (tor1's
/// SHA-1 is exactly that long; a longer digest, such as the onion-service hop's SHA3-256, is
/// truncated, as tor-spec §7.3.1 says), zero-padded if shorter.
pub fn sendme_tag(digest: &[u8]) -> [u8; SENDME_DIGEST_LEN] {
    let mut tag = [0u8; SENDME_DIGEST_LEN];
    let n = digest.len().min(SENDME_DIGEST_LEN);
    tag[..n].copy_from_slice(&digest[..n]);
    tag
}

/// A flow-control violation by the peer; each one tears the circuit (or stream) down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A RELAY_DATA cell arrived while our deliver window was already zero (tor-spec §7.3:
    /// "If a deliver window goes below 0, the circuit should be torn down").
    #[error("window overrun: RELAY_DATA arrived with the {0} deliver window at zero")]
    WindowOverrun(WindowKind),
    /// A SENDME arrived that would raise the package window above its start value: the peer
    /// acknowledged cells we never sent.
    #[error("unexpected SENDME: the {0} package window is already full")]
    UnexpectedSendme(WindowKind),
    /// An authenticated SENDME carried a digest that is not the one of the cell it acknowledges
    /// (tor-spec §7.3: "On failure to match, the circuit should be torn down").
    #[error("SENDME v1 digest does not match the cell it acknowledges")]
    SendmeDigestMismatch,
    /// A SENDME version below the minimum we accept, or unknown (tor-spec §7.3.1).
    #[error("SENDME version {0} is not accepted")]
    SendmeVersionRejected(u8),
    /// A version-1 SENDME whose DATA field is shorter than 20 bytes (tor-spec §7.3.1).
    #[error("SENDME v1 digest field is {0} bytes, fewer than 20")]
    SendmeDigestTooShort(usize),
}

/// Which kind of window a [`FlowError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The circuit-level window of one hop (tor-spec §7.3).
    Circuit,
    /// A stream-level window (tor-spec §7.4).
    Stream,
}

impl core::fmt::Display for WindowKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WindowKind::Circuit => "circuit",
            WindowKind::Stream => "stream",
        })
    }
}

/// Counters of the flow-control traffic of one circuit endpoint, for diagnostics (what
/// `onion sim` reports). Cheap: a few integers, updated as cells pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// RELAY_DATA cells packaged by this endpoint.
    pub data_cells_sent: u64,
    /// RELAY_DATA cells delivered to this endpoint.
    pub data_cells_received: u64,
    /// Circuit-level (authenticated) SENDMEs sent.
    pub circ_sendmes_sent: u64,
    /// Circuit-level SENDMEs received and accepted.
    pub circ_sendmes_received: u64,
    /// Stream-level SENDMEs sent.
    pub stream_sendmes_sent: u64,
    /// Stream-level SENDMEs received.
    pub stream_sendmes_received: u64,
    /// RELAY_XOFF sent (congestion-controlled streams, proposal 324 §4.1.1).
    pub xoff_sent: u64,
    /// RELAY_XON sent.
    pub xon_sent: u64,
    /// RELAY_XOFF received and applied.
    pub xoff_received: u64,
    /// RELAY_XON received and applied.
    pub xon_received: u64,
}

/// A SENDME as received, reduced to what flow control needs (tor-spec §7.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendmeTag<'a> {
    /// Version 0: no authentication.
    V0,
    /// Version 1: the digest of the acknowledged cell (at least 20 bytes; only the first 20 count).
    V1(&'a [u8]),
    /// Any other version.
    Other(u8),
}

/// The circuit-level package window of one hop, with the digests SENDME v1 must echo
/// (tor-spec §7.3).
#[derive(Debug, Clone)]
pub struct CircSendWindow {
    window: u16,
    /// Digests of the cells that will trigger the peer's SENDMEs, oldest first. Bounded by
    /// `CIRC_WINDOW_START / CIRC_WINDOW_INCREMENT` entries.
    expected: VecDeque<[u8; SENDME_DIGEST_LEN]>,
    accept_v0: bool,
}

impl Default for CircSendWindow {
    fn default() -> Self {
        Self::new(false)
    }
}

impl CircSendWindow {
    /// A full window. `accept_v0` lets unauthenticated SENDMEs through (consensus parameter
    /// `sendme_accept_min_version` = 0); by default only version 1 is accepted, as current C tor.
    pub fn new(accept_v0: bool) -> Self {
        CircSendWindow {
            window: CIRC_WINDOW_START,
            expected: VecDeque::new(),
            accept_v0,
        }
    }

    /// How many more RELAY_DATA cells may be packaged now.
    pub fn available(&self) -> u16 {
        self.window
    }

    /// Account for one RELAY_DATA cell about to be packaged. Returns `true` when this cell is
    /// the one whose digest the next SENDME will carry (the caller then passes that digest to
    /// [`CircSendWindow::record_digest`] after encrypting it), or `None` if the window is empty.
    pub fn take(&mut self) -> Option<bool> {
        if self.window == 0 {
            return None;
        }
        // tor-spec §7.3: the digest to remember is the one of the cell that brings the window
        // to a multiple of the increment (the 100th, 200th, … cell).
        self.window -= 1;
        Some(self.window % CIRC_WINDOW_INCREMENT == 0)
    }

    /// The most payload bytes the next DATA cell should carry: the first cell of every
    /// 100-cell increment is cut [`SENDME_UNPREDICTABLE_GAP`] bytes short, so that its padding
    /// holds random bytes (tor-spec §7.3: "every 100 cells (increment), random bytes should
    /// be introduced in at least one cell", which keeps the digest a SENDME v1 echoes
    /// unpredictable to a peer that did not receive the cells).
    pub fn next_data_len(&self) -> usize {
        if self.window % CIRC_WINDOW_INCREMENT == 0 {
            MAX_DATA_LEN - SENDME_UNPREDICTABLE_GAP
        } else {
            MAX_DATA_LEN
        }
    }

    /// Remember the running digest of a cell for which [`CircSendWindow::take`] returned `true`.
    pub fn record_digest(&mut self, digest: [u8; SENDME_DIGEST_LEN]) {
        if self.expected.len() < usize::from(CIRC_WINDOW_START / CIRC_WINDOW_INCREMENT) {
            self.expected.push_back(digest);
        }
    }

    /// Handle a circuit-level SENDME: check its authentication and open the window by 100.
    pub fn handle_sendme(&mut self, tag: SendmeTag<'_>) -> Result<(), FlowError> {
        if self.window > CIRC_WINDOW_START - CIRC_WINDOW_INCREMENT {
            return Err(FlowError::UnexpectedSendme(WindowKind::Circuit));
        }
        check_sendme_tag(self.expected.pop_front(), tag, self.accept_v0)?;
        self.window += CIRC_WINDOW_INCREMENT;
        Ok(())
    }
}

/// Check a circuit SENDME's authentication (tor-spec §7.3.1) against `expected`, the digest
/// of the oldest SENDME-eliciting cell in flight, already taken off its queue: a v1 tag must
/// echo it, a v0 tag passes only if `accept_v0`. Fixed windows and congestion control share it.
pub(crate) fn check_sendme_tag(
    expected: Option<[u8; SENDME_DIGEST_LEN]>,
    tag: SendmeTag<'_>,
    accept_v0: bool,
) -> Result<(), FlowError> {
    match tag {
        SendmeTag::V0 if accept_v0 => Ok(()),
        SendmeTag::V0 => Err(FlowError::SendmeVersionRejected(0)),
        SendmeTag::Other(v) => Err(FlowError::SendmeVersionRejected(v)),
        SendmeTag::V1(d) => {
            let got = d
                .get(..SENDME_DIGEST_LEN)
                .ok_or(FlowError::SendmeDigestTooShort(d.len()))?;
            let expected = expected.ok_or(FlowError::UnexpectedSendme(WindowKind::Circuit))?;
            if bool::from(expected.ct_eq(got)) {
                Ok(())
            } else {
                Err(FlowError::SendmeDigestMismatch)
            }
        }
    }
}

/// The circuit-level deliver window of one hop (tor-spec §7.3).
#[derive(Debug, Clone, Copy)]
pub struct CircRecvWindow {
    window: u16,
    increment: u16,
}

impl Default for CircRecvWindow {
    fn default() -> Self {
        CircRecvWindow {
            window: CIRC_WINDOW_START,
            increment: CIRC_WINDOW_INCREMENT,
        }
    }
}

impl CircRecvWindow {
    /// A full window that asks for a SENDME every `increment` cells instead of 100: on a
    /// congestion-controlled circuit the negotiated `sendme_inc` (proposal 324 §2.2, §4.1).
    /// The window itself stays 1000, as in C tor, so it is never the limit: a SENDME goes
    /// out as soon as `increment` cells have arrived. `increment` is taken as at least 1.
    pub fn with_increment(increment: u8) -> Self {
        CircRecvWindow {
            window: CIRC_WINDOW_START,
            increment: u16::from(increment.max(1)),
        }
    }

    /// How many more RELAY_DATA cells the peer may send before we must have sent a SENDME.
    pub fn available(&self) -> u16 {
        self.window
    }

    /// Account for one received RELAY_DATA cell. Returns `Ok(true)` when a SENDME (carrying the
    /// digest of this very cell) must be sent now, and an error if the peer overran the window.
    ///
    /// The circuit-level SENDME does not wait for the application (as in C tor): stream
    /// windows, which do, are what push back on a slow reader.
    pub fn take(&mut self) -> Result<bool, FlowError> {
        if self.window == 0 {
            return Err(FlowError::WindowOverrun(WindowKind::Circuit));
        }
        self.window -= 1;
        // tor-spec §7.3: "send a RELAY_SENDME when it reaches 900" (with the default
        // increment; START - sendme_inc under congestion control).
        if self.window <= CIRC_WINDOW_START - self.increment {
            self.window += self.increment;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// A stream's package window (tor-spec §7.4). Stream SENDMEs are never authenticated.
#[derive(Debug, Clone, Copy)]
pub struct StreamSendWindow {
    window: u16,
}

impl Default for StreamSendWindow {
    fn default() -> Self {
        StreamSendWindow {
            window: STREAM_WINDOW_START,
        }
    }
}

impl StreamSendWindow {
    /// How many more RELAY_DATA cells this stream may package now.
    pub fn available(&self) -> u16 {
        self.window
    }

    /// Account for one packaged RELAY_DATA cell; `false` if the window is empty.
    pub fn take(&mut self) -> bool {
        if self.window == 0 {
            return false;
        }
        self.window -= 1;
        true
    }

    /// Handle a stream-level SENDME: open the window by 50.
    pub fn handle_sendme(&mut self) -> Result<(), FlowError> {
        if self.window > STREAM_WINDOW_START - STREAM_WINDOW_INCREMENT {
            return Err(FlowError::UnexpectedSendme(WindowKind::Stream));
        }
        self.window += STREAM_WINDOW_INCREMENT;
        Ok(())
    }
}

/// A stream's deliver window (tor-spec §7.4).
#[derive(Debug, Clone, Copy)]
pub struct StreamRecvWindow {
    window: u16,
}

impl Default for StreamRecvWindow {
    fn default() -> Self {
        StreamRecvWindow {
            window: STREAM_WINDOW_START,
        }
    }
}

impl StreamRecvWindow {
    /// How many more RELAY_DATA cells the peer may send on this stream.
    pub fn available(&self) -> u16 {
        self.window
    }

    /// Account for one received RELAY_DATA cell; an error if the peer overran the window.
    pub fn take(&mut self) -> Result<(), FlowError> {
        if self.window == 0 {
            return Err(FlowError::WindowOverrun(WindowKind::Stream));
        }
        self.window -= 1;
        Ok(())
    }

    /// Whether a stream SENDME should be sent now; if so the window is reopened by 50.
    ///
    /// tor-spec §7.4: send one when "the window is <= 450, and there are less than ten cell
    /// payloads remaining to be flushed". The caller checks the second condition: the
    /// circuits call this only when the embedding has taken the data (polled its event), so an
    /// application that stops reading stops the SENDMEs and the peer's stream.
    pub fn consider_sendme(&mut self) -> bool {
        if self.window <= STREAM_WINDOW_START - STREAM_WINDOW_INCREMENT {
            self.window += STREAM_WINDOW_INCREMENT;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest(i: u32) -> [u8; 20] {
        let mut d = [0u8; 20];
        d[..4].copy_from_slice(&i.to_be_bytes());
        d
    }

    #[test]
    fn circuit_window_cycle() {
        let mut send = CircSendWindow::default();
        let mut recv = CircRecvWindow::default();
        let mut triggers = 0;
        for i in 0..1000u32 {
            let trig = send.take().expect("window open");
            if trig {
                send.record_digest(digest(i));
                triggers += 1;
            }
            let s = recv.take().expect("no overrun");
            assert_eq!(
                trig, s,
                "cell {i}: sender and receiver agree on the trigger"
            );
        }
        assert_eq!(triggers, 10);
        assert_eq!(send.available(), 0);
        assert_eq!(send.take(), None);
        // Acknowledge the first increment with the right digest.
        send.handle_sendme(SendmeTag::V1(&digest(99))).expect("ok");
        assert_eq!(send.available(), 100);
        // The second with a wrong one.
        assert_eq!(
            send.handle_sendme(SendmeTag::V1(&digest(7))),
            Err(FlowError::SendmeDigestMismatch)
        );
    }

    #[test]
    fn first_cell_of_each_increment_is_short() {
        let mut send = CircSendWindow::default();
        let mut lens = Vec::new();
        for _ in 0..300 {
            lens.push(send.next_data_len());
            send.take();
        }
        let short: Vec<usize> = (0..300).filter(|i| lens[*i] < MAX_DATA_LEN).collect();
        assert_eq!(short, vec![0, 100, 200]);
        assert_eq!(lens[0], MAX_DATA_LEN - SENDME_UNPREDICTABLE_GAP);
    }

    #[test]
    fn unexpected_and_short_sendme() {
        let mut send = CircSendWindow::default();
        assert_eq!(
            send.handle_sendme(SendmeTag::V1(&[0; 20])),
            Err(FlowError::UnexpectedSendme(WindowKind::Circuit))
        );
        for _ in 0..100 {
            if send.take() == Some(true) {
                send.record_digest([1; 20]);
            }
        }
        assert_eq!(
            send.handle_sendme(SendmeTag::V1(&[1; 19])),
            Err(FlowError::SendmeDigestTooShort(19))
        );
        assert_eq!(
            send.handle_sendme(SendmeTag::V0),
            Err(FlowError::SendmeVersionRejected(0))
        );
        assert_eq!(
            send.handle_sendme(SendmeTag::Other(9)),
            Err(FlowError::SendmeVersionRejected(9))
        );
        let mut v0 = CircSendWindow::new(true);
        for _ in 0..100 {
            v0.take();
        }
        assert_eq!(v0.handle_sendme(SendmeTag::V0), Ok(()));
        assert_eq!(v0.available(), 1000);
    }

    #[test]
    fn longer_digest_field_uses_first_20_bytes() {
        let mut send = CircSendWindow::default();
        for _ in 0..100 {
            if send.take() == Some(true) {
                send.record_digest([5; 20]);
            }
        }
        let mut long = [5u8; 32];
        long[25] = 0;
        assert_eq!(send.handle_sendme(SendmeTag::V1(&long)), Ok(()));
    }

    #[test]
    fn overrun_detected() {
        // take() refills by an increment as it asks for a SENDME, so an overrun is a DATA cell
        // arriving when a peer has used up everything granted: a window of 0.
        let mut recv = CircRecvWindow {
            window: 0,
            increment: CIRC_WINDOW_INCREMENT,
        };
        assert_eq!(
            recv.take(),
            Err(FlowError::WindowOverrun(WindowKind::Circuit))
        );
        let mut s = StreamRecvWindow { window: 0 };
        assert_eq!(s.take(), Err(FlowError::WindowOverrun(WindowKind::Stream)));
    }

    #[test]
    fn stream_window_cycle() {
        let mut send = StreamSendWindow::default();
        let mut recv = StreamRecvWindow::default();
        let mut sendmes = 0;
        for _ in 0..500 {
            assert!(send.take());
            recv.take().expect("ok");
            if recv.consider_sendme() {
                sendmes += 1;
            }
        }
        assert!(!send.take());
        assert_eq!(sendmes, 10);
        for _ in 0..10 {
            send.handle_sendme().expect("ok");
        }
        assert_eq!(send.available(), 500);
        assert_eq!(
            send.handle_sendme(),
            Err(FlowError::UnexpectedSendme(WindowKind::Stream))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Any interleaving of sends and (honest) SENDMEs keeps the sender within its window,
        /// and every honest SENDME is accepted.
        #[test]
        fn honest_peers_never_fail(ops in proptest::collection::vec(any::<bool>(), 0..3000)) {
            let mut send = CircSendWindow::default();
            let mut recv = CircRecvWindow::default();
            let mut pending_sendmes: VecDeque<[u8; 20]> = VecDeque::new();
            let mut n = 0u32;
            for op in ops {
                if op {
                    if let Some(trig) = send.take() {
                        n += 1;
                        if trig { send.record_digest(digest(n)); }
                        if recv.take().expect("no overrun") { pending_sendmes.push_back(digest(n)); }
                    }
                } else if let Some(d) = pending_sendmes.pop_front() {
                    prop_assert_eq!(send.handle_sendme(SendmeTag::V1(&d)), Ok(()));
                }
                prop_assert!(send.available() <= CIRC_WINDOW_START);
            }
        }

        /// Arbitrary SENDME tags never panic and never push the window above its start.
        #[test]
        fn arbitrary_sendmes_never_panic(
            sends in 0u16..1200,
            tags in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..40)), 0..20),
        ) {
            let mut send = CircSendWindow::default();
            for _ in 0..sends {
                if send.take() == Some(true) { send.record_digest([0; 20]); }
            }
            for (v, d) in &tags {
                let tag = match v { 0 => SendmeTag::V0, 1 => SendmeTag::V1(d), _ => SendmeTag::Other(*v) };
                let _ = send.handle_sendme(tag);
                prop_assert!(send.available() <= CIRC_WINDOW_START);
            }
        }
    }
}
