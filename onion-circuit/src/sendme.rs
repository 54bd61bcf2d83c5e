//! The sending end of circuit-level flow control, one type for both ends of a circuit: a
//! client's sender toward each hop ([`crate::circuit`]) and the sender of a circuit that ends
//! at a relay (an exit, an onion-service endpoint; [`crate::relay`]).
//!
//! A circuit either runs the fixed package window (tor-spec §7.3, [`CircSendWindow`]) or,
//! when the hop negotiated it, congestion control (proposal 324, [`CongestionControl`]: the
//! congestion window with Tor Vegas). Either way every SENDME-eliciting DATA cell's running
//! digest is kept, oldest first, and the next circuit SENDME must echo it (tor-spec §7.3.1,
//! proposal 289); under congestion control each SENDME also gives an RTT sample and
//! acknowledges `sendme_inc` cells (proposal 324 §2.1, §2.2). The stream side of packaging
//! ([`Stream::package`](crate::stream::Stream)) takes its limit from here.

use std::collections::VecDeque;

use onion_cell::relaymsg::MAX_RELAY_DATA_LEN;

use crate::cc::{CcError, CongestionControl};
use crate::flow::{
    check_sendme_tag, sendme_tag, CircRecvWindow, CircSendWindow, FlowError, SendmeTag,
    SENDME_DIGEST_LEN,
};
use crate::stream::{SendLimit, Stream};
use crate::Instant;

/// The sending end of one circuit's flow control toward the other end (for a client, one
/// per hop).
#[derive(Debug)]
pub(crate) enum CircSender {
    /// Fixed windows (tor-spec §7.3): the package window keeps its own SENDME digests.
    Window(CircSendWindow),
    /// Congestion control (proposal 324); boxed, as most circuits' hops run without it.
    Cc(Box<CcSender>),
}

/// The congestion-controlled sender (proposal 324).
#[derive(Debug)]
pub(crate) struct CcSender {
    cc: CongestionControl,
    /// Digests of the SENDME-eliciting cells sent, oldest first, for the authenticated
    /// SENDMEs (tor-spec §7.3.1). One per timestamp the congestion control keeps, so bounded
    /// by `cwnd / sendme_inc + 1`.
    expected: VecDeque<[u8; SENDME_DIGEST_LEN]>,
    /// Unauthenticated (version 0) SENDMEs pass (`sendme_accept_min_version` = 0).
    accept_v0: bool,
    /// The channel the DATA cells leave on refuses more cells (C tor's "blocked on
    /// channel" congestion signal to Vegas); a client, without that signal, keeps `false`.
    chan_blocked: bool,
}

/// A circuit SENDME that closes the circuit: a flow-control violation (bad or missing
/// authentication, nothing to acknowledge under fixed windows), or a congestion-control one
/// (nothing in flight to acknowledge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendmeError {
    /// tor-spec §7.3, §7.3.1.
    Flow(FlowError),
    /// Proposal 324 §2.2.
    Cc(CcError),
}

impl CircSender {
    /// A fresh sender: the full fixed window, or congestion control `cc` when negotiated.
    /// `accept_v0` lets unauthenticated SENDMEs through (tor-spec §7.3.1).
    pub(crate) fn new(accept_v0: bool, cc: Option<CongestionControl>) -> Self {
        match cc {
            None => CircSender::Window(CircSendWindow::new(accept_v0)),
            Some(cc) => CircSender::Cc(Box::new(CcSender {
                cc,
                expected: VecDeque::new(),
                accept_v0,
                chan_blocked: false,
            })),
        }
    }

    /// The deliver window that goes with this sender at the same end: a SENDME every 100
    /// cells (tor-spec §7.3), or every negotiated `sendme_inc` cells under congestion
    /// control (proposal 324 §2.2, §4.1).
    pub(crate) fn deliver_window(&self) -> CircRecvWindow {
        match self {
            CircSender::Window(_) => CircRecvWindow::default(),
            CircSender::Cc(c) => CircRecvWindow::with_increment(c.cc.config().sendme_inc),
        }
    }

    /// The congestion control, if negotiated (window, inflight, RTT).
    pub(crate) fn congestion_control(&self) -> Option<&CongestionControl> {
        match self {
            CircSender::Window(_) => None,
            CircSender::Cc(c) => Some(&c.cc),
        }
    }

    /// Whether the channel the DATA cells leave on refuses more cells now; only congestion
    /// control listens.
    pub(crate) fn set_chan_blocked(&mut self, blocked: bool) {
        if let CircSender::Cc(c) = self {
            c.chan_blocked = blocked;
        }
    }

    /// What bounds the next DATA cells ([`Stream::package`](crate::stream::Stream)).
    pub(crate) fn limit(&mut self) -> SendLimit<'_> {
        match self {
            CircSender::Window(w) => SendLimit::Window(w),
            CircSender::Cc(c) => SendLimit::Cc(&mut c.cc),
        }
    }

    /// Bytes an open stream `s` on this circuit may send at `now`: within the circuit and
    /// stream package windows (tor-spec §7.3, §7.4), or under congestion control within
    /// `cwnd - inflight`, none after the other edge's XOFF and no more than its XON's rate
    /// allows (proposal 324 §4).
    pub(crate) fn capacity(&self, s: &Stream, now: Instant) -> usize {
        match self {
            CircSender::Window(w) => {
                usize::from(w.available().min(s.send.available())) * MAX_RELAY_DATA_LEN
            }
            CircSender::Cc(c) => s.cc_send_capacity(c.cc.send_window(), now),
        }
    }

    /// A SENDME-eliciting DATA cell went out with this running `digest`: the SENDME that
    /// acknowledges it must echo its tag (tor-spec §7.3.1).
    pub(crate) fn record_digest(&mut self, digest: &[u8]) {
        let tag = sendme_tag(digest);
        match self {
            CircSender::Window(w) => w.record_digest(tag),
            CircSender::Cc(c) => c.expected.push_back(tag),
        }
    }

    /// A circuit SENDME with `tag` arrived at `now`: check its authentication against the
    /// oldest digest kept, then open the window by 100 (tor-spec §7.3) or, under congestion
    /// control, take the RTT sample and acknowledge `sendme_inc` cells (proposal 324 §2.1,
    /// §3.3). `chan_queued` is how many of this circuit's cells wait for the channel (0 where
    /// the embedding has no such count).
    pub(crate) fn on_sendme(
        &mut self,
        tag: SendmeTag<'_>,
        now: Instant,
        chan_queued: u64,
    ) -> Result<(), SendmeError> {
        match self {
            CircSender::Window(w) => w.handle_sendme(tag).map_err(SendmeError::Flow),
            CircSender::Cc(c) => {
                check_sendme_tag(c.expected.pop_front(), tag, c.accept_v0)
                    .map_err(SendmeError::Flow)?;
                c.cc.on_sendme(now, c.chan_blocked, chan_queued)
                    .map_err(SendmeError::Cc)
            }
        }
    }

    /// The digests kept for the SENDMEs to come under congestion control, oldest first.
    #[cfg(test)]
    pub(crate) fn expected_digests(&self) -> Option<&VecDeque<[u8; SENDME_DIGEST_LEN]>> {
        match self {
            CircSender::Window(_) => None,
            CircSender::Cc(c) => Some(&c.expected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cc::CcConfig;
    use crate::flow::{WindowKind, CIRC_WINDOW_INCREMENT};

    /// Package one DATA cell through the sender's limit; whether it elicits a SENDME.
    fn send_one(s: &mut CircSender, now: Instant) -> Option<bool> {
        match s.limit() {
            SendLimit::Window(w) => w.take(),
            SendLimit::Cc(cc) => cc.on_data_sent(now),
        }
    }

    #[test]
    fn fixed_window_echoes_the_100th_cell() {
        let mut s = CircSender::new(false, None);
        assert!(s.congestion_control().is_none());
        let mut recv = s.deliver_window();
        let due: Vec<bool> = (0..100).map(|_| recv.take().unwrap()).collect();
        assert_eq!(
            due.iter().position(|&d| d),
            Some(99),
            "SENDME after 100 cells"
        );
        for i in 1..=CIRC_WINDOW_INCREMENT {
            assert_eq!(send_one(&mut s, Instant::ZERO), Some(i == 100));
        }
        s.record_digest(&[3u8; 20]);
        assert_eq!(
            s.on_sendme(SendmeTag::V1(&[4u8; 20]), Instant::ZERO, 0),
            Err(SendmeError::Flow(FlowError::SendmeDigestMismatch))
        );
        // The refused SENDME used up the first digest (the circuit closes on it anyway): the
        // next SENDME echoes the next eliciting cell, and with no digest left one more
        // acknowledges cells never sent.
        for _ in 0..100 {
            send_one(&mut s, Instant::ZERO);
        }
        s.record_digest(&[5u8; 20]);
        assert_eq!(
            s.on_sendme(SendmeTag::V1(&[5u8; 20]), Instant::ZERO, 0),
            Ok(())
        );
        assert_eq!(
            s.on_sendme(SendmeTag::V1(&[5u8; 20]), Instant::ZERO, 0),
            Err(SendmeError::Flow(FlowError::UnexpectedSendme(
                WindowKind::Circuit
            )))
        );
    }

    #[test]
    fn congestion_control_checks_the_tag_then_acknowledges_sendme_inc_cells() {
        let cfg = CcConfig {
            sendme_inc: 31,
            ..CcConfig::default()
        };
        let mut s = CircSender::new(false, Some(CongestionControl::new(cfg)));
        let mut recv = s.deliver_window();
        let due = (0..31).filter(|_| recv.take().unwrap()).count();
        assert_eq!(due, 1, "a SENDME every sendme_inc cells");
        // Nothing sent yet: a SENDME acknowledges nothing.
        assert_eq!(
            s.on_sendme(SendmeTag::V1(&[0u8; 20]), Instant::ZERO, 0),
            Err(SendmeError::Flow(FlowError::UnexpectedSendme(
                WindowKind::Circuit
            )))
        );
        assert_eq!(
            s.on_sendme(SendmeTag::V0, Instant::ZERO, 0),
            Err(SendmeError::Flow(FlowError::SendmeVersionRejected(0)))
        );
        let sent: Vec<bool> = (0..31)
            .map(|_| send_one(&mut s, Instant::ZERO).unwrap())
            .collect();
        assert_eq!(sent.iter().filter(|&&t| t).count(), 1);
        // A longer running digest (the onion-service hop's SHA3-256) counts by its first 20
        // bytes (tor-spec §7.3.1).
        let mut digest = [9u8; 32];
        digest[25] = 1;
        s.record_digest(&digest);
        assert_eq!(s.expected_digests().map(|e| e.len()), Some(1));
        let later = Instant::ZERO + core::time::Duration::from_millis(40);
        assert_eq!(s.on_sendme(SendmeTag::V1(&[9u8; 20]), later, 0), Ok(()));
        let cc = s.congestion_control().unwrap();
        assert_eq!(cc.inflight(), 0);
        assert_eq!(cc.rtt().ewma_usec, 40_000);
        // The timestamp was taken with the digest: one more is a congestion-control error.
        s.record_digest(&digest);
        assert_eq!(
            s.on_sendme(SendmeTag::V1(&[9u8; 20]), later, 0),
            Err(SendmeError::Cc(CcError::UnexpectedSendme))
        );
    }
}
