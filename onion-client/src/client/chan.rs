//! Channels: one TLS connection to one relay and the link protocol over it (tor-spec §2, §4),
//! shared by every circuit through that relay.

use std::net::SocketAddr;
use std::time::Duration;

use onion_cell::chancell::ChanMsg;
use onion_cell::CircId;
use onion_circuit::channel::{ChanConfig, ChanEvent, Channel, InputBuffer, PeerIds};
use rand_core::RngCore;

use super::event::{ConnId, Event};
use crate::{Error, Instant, Timestamp};

/// C tor's `KeepalivePeriod`: an open channel on which nothing was sent for this long sends
/// a PADDING cell (tor-spec §3), so that NATs and idle timers keep the connection.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(300);

/// The link protocol version from which both ends pad idle channels (tor-spec §4.1: link
/// protocol 5 adds link padding; C tor's `MIN_LINK_PROTO_FOR_CHANNEL_PADDING`).
const MIN_LINK_FOR_PADDING: u16 = 5;

/// Channel padding as the consensus sets it (padding-spec §2.6), read as C tor's
/// `channelpadding_new_consensus_params` reads it: `nf_ito_low` (default 1500 ms, 0 to
/// 60000), `nf_ito_high` (default 9500 ms, `nf_ito_low` to 60000), `nf_pad_before_usage`
/// (default 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PaddingParams {
    pub low_ms: u32,
    pub high_ms: u32,
    pub before_usage: bool,
}

impl Default for PaddingParams {
    fn default() -> Self {
        PaddingParams {
            low_ms: 1500,
            high_ms: 9500,
            before_usage: true,
        }
    }
}

impl PaddingParams {
    /// The parameters in consensus `(name, value)` pairs (the last of a name counts).
    pub fn from_entries<'a>(params: impl IntoIterator<Item = (&'a str, i64)>) -> Self {
        let mut low = 1500i64;
        let mut high = 9500i64;
        let mut before = 1i64;
        for (k, v) in params {
            match k {
                "nf_ito_low" => low = v,
                "nf_ito_high" => high = v,
                "nf_pad_before_usage" => before = v,
                _ => {}
            }
        }
        let low = low.clamp(0, 60_000);
        let high = high.clamp(low, 60_000);
        PaddingParams {
            low_ms: low as u32,
            high_ms: high as u32,
            before_usage: before.clamp(0, 1) == 1,
        }
    }

    /// Whether the consensus turns padding off (`nf_ito_low` = `nf_ito_high` = 0).
    fn disabled(&self) -> bool {
        self.low_ms == 0 && self.high_ms == 0
    }

    /// How long an idle channel waits before its PADDING cell: `low + max(X, X)` with `X`
    /// uniform in `[0, high - low)` (padding-spec §2.3; the `max` makes the rate of the two
    /// ends' padding together close to the range's middle).
    fn sample(&self, rng: &mut impl RngCore) -> Duration {
        let range = u64::from(self.high_ms.saturating_sub(self.low_ms));
        let extra = match range {
            0 => 0,
            r => (rng.next_u64() % r).max(rng.next_u64() % r),
        };
        Duration::from_millis(u64::from(self.low_ms) + extra)
    }
}

/// Link padding on the client's open channels (padding-spec §2): what an embedder reports,
/// and how a test sees that both ends of a channel pad it when idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaddingStats {
    /// Channels open now.
    pub channels: usize,
    /// Of those, the channels padded when idle: link protocol 5 or later, multi-hop circuits
    /// through them, padding not turned off by the consensus.
    pub padded: usize,
    /// PADDING cells this client sent for idleness on the padded channels.
    pub sent: u64,
    /// PADDING and VPADDING cells the relays sent on the padded channels.
    pub received: u64,
}

impl super::Client {
    /// Link padding on the channels open now ([`PaddingStats`]).
    pub fn padding_stats(&self) -> PaddingStats {
        let mut s = PaddingStats::default();
        for c in self.chans.values().filter(|c| c.open) {
            s.channels += 1;
            if c.pads(&self.padding) {
                s.padded += 1;
                s.sent += c.padding_sent;
                s.received += c.channel.as_ref().map_or(0, Channel::padding_cells);
            }
        }
        s
    }
}

/// One connection the client asked for and the channel over it.
#[derive(Debug)]
pub(crate) struct Chan {
    pub addr: SocketAddr,
    pub ids: PeerIds,
    /// `None` while the embedder opens TCP and TLS.
    pub channel: Option<Channel>,
    /// The link handshake finished.
    pub open: bool,
    /// Connect plus handshake must be done by then (`None` once open).
    pub deadline: Option<Instant>,
    /// Input the channel has not consumed yet (it takes less only while its own queues are
    /// full), at most [`crate::Limits::channel_inbound`] bytes.
    pub inbuf: InputBuffer,
    /// Circuits on it (keys into the client's circuits), in round-robin order, the next to
    /// serve at `rr`.
    pub circs: Vec<u64>,
    pub rr: usize,
    /// With no circuit since: closed at this time (C tor closes idle client channels).
    pub idle_close: Option<Instant>,
    /// The embedder's connection takes no more bytes for now.
    pub blocked: bool,
    /// The embedder reported the connection closed: no Disconnect is owed for it.
    pub peer_closed: bool,
    /// A circuit of more than one hop went through it (C tor's `CHANNEL_USED_FOR_FULL_CIRCS`:
    /// traffic that wants anonymity, so the channel is padded, padding-spec §2.2).
    pub full_circs: bool,
    /// A RELAY cell of such a circuit went out on it (`CHANNEL_USED_FOR_USER_TRAFFIC`).
    pub user_traffic: bool,
    /// When a cell last went out or came in (C tor's `timestamp_xfer`).
    pub last_xfer: Instant,
    /// When to send a PADDING cell if nothing moves before (padding-spec §2.2).
    pub pad_at: Option<Instant>,
    /// PADDING cells sent for idleness.
    pub padding_sent: u64,
}

impl Chan {
    pub fn new(addr: SocketAddr, ids: PeerIds, deadline: Instant) -> Chan {
        Chan {
            addr,
            ids,
            channel: None,
            open: false,
            deadline: Some(deadline),
            inbuf: InputBuffer::new(),
            circs: Vec::new(),
            rr: 0,
            idle_close: None,
            blocked: false,
            peer_closed: false,
            full_circs: false,
            user_traffic: false,
            last_xfer: deadline,
            pad_at: None,
            padding_sent: 0,
        }
    }

    /// Whether the channel is padded when idle (padding-spec §2.2 and C tor's
    /// `channelpadding_decide_to_pad_channel` for a client): it is open, its link protocol
    /// pads (5 or more: the relay pads it too), it carries multi-hop circuits (or user
    /// traffic when `nf_pad_before_usage` is 0), and the consensus does not turn padding off.
    /// One-hop (directory) channels are not padded. No PADDING_NEGOTIATE is ever sent: a
    /// client negotiates only to change the defaults, which this client does not.
    fn pads(&self, p: &PaddingParams) -> bool {
        let link = self.channel.as_ref().and_then(Channel::link_version);
        self.open
            && link.is_some_and(|v| v >= MIN_LINK_FOR_PADDING)
            && (self.user_traffic || (self.full_circs && p.before_usage))
            && !p.disabled()
    }

    /// Start the link handshake over the TLS connection that just opened (tor-spec §4:
    /// VERSIONS is queued). `cert` is SHA-256 of the relay's TLS certificate; `wall` the
    /// wall clock for certificate validity and the NETINFO time.
    pub fn start(&mut self, now: Instant, wall: Timestamp, cert: [u8; 32]) {
        let mut config = ChanConfig::default();
        let left = self.deadline.map_or(Duration::from_secs(30), |d| {
            d.saturating_duration_since(now)
        });
        config.handshake_timeout = left.max(Duration::from_secs(1));
        config.peer_addr = Some(self.addr.ip());
        config.keepalive = Some(KEEPALIVE);
        self.channel = Some(Channel::initiator(config, self.ids, Some(cert), now, wall));
    }

    /// Whether it goes to the relay of `ids` (every identity asked for matches).
    pub fn serves(&self, ids: &PeerIds) -> bool {
        let rsa = ids.rsa.is_none() || ids.rsa == self.ids.rsa;
        let ed =
            ids.ed25519.is_none() || self.ids.ed25519.is_none() || ids.ed25519 == self.ids.ed25519;
        rsa && ed && (ids.rsa.is_some() || ids.ed25519 == self.ids.ed25519)
    }

    /// Forget circuit `key`.
    pub fn remove_circ(&mut self, key: u64) {
        if let Some(i) = self.circs.iter().position(|&k| k == key) {
            self.circs.remove(i);
            if self.rr > i {
                self.rr -= 1;
            }
        }
        if self.rr >= self.circs.len() {
            self.rr = 0;
        }
    }
}

impl super::Client {
    /// A channel to the relay `ids` at `addr`: an open or opening one is shared (tor-spec §2:
    /// one channel carries many circuits), else a new connection is asked for
    /// ([`Event::Connect`]). Errors with [`Error::Resource`] at
    /// [`crate::Limits::max_channels`] channels or [`crate::Limits::max_connecting`]
    /// connects in flight.
    pub(super) fn channel_for(&mut self, addr: SocketAddr, ids: PeerIds) -> Result<ConnId, Error> {
        if let Some((conn, _)) = self
            .chans
            .iter()
            .find(|(_, c)| c.serves(&ids) && !c.channel.as_ref().is_some_and(Channel::is_closed))
        {
            return Ok(*conn);
        }
        let l = &self.cfg.limits;
        if self.chans.len() >= l.max_channels {
            return Err(Error::Resource("too many channels (Limits::max_channels)"));
        }
        if self.chans.values().filter(|c| !c.open).count() >= l.max_connecting {
            return Err(Error::Resource(
                "too many connects in flight (Limits::max_connecting)",
            ));
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let deadline = self.now + l.connect_timeout;
        self.chans.insert(conn, Chan::new(addr, ids, deadline));
        self.emit(Event::Connect { conn, addr, ids });
        Ok(conn)
    }

    /// Feed `bytes` to the channel of `conn` and handle what it says.
    pub(super) fn chan_input(&mut self, conn: ConnId, bytes: &[u8]) {
        let limit = self.cfg.limits.channel_inbound;
        let Some(c) = self.chans.get_mut(&conn) else {
            return;
        };
        if c.channel.is_none() {
            return;
        }
        if c.inbuf.push(bytes, limit).is_err() {
            self.close_chan(
                conn,
                Error::Resource("channel input beyond Limits::channel_inbound"),
            );
            return;
        }
        if !bytes.is_empty() {
            self.build_times.network_live(self.now);
        }
        self.pump_chan(conn);
        if !bytes.is_empty() {
            self.chan_xfer(conn);
        }
    }

    /// Cells moved on `conn` now: its padding timer starts again (C tor resets it on every
    /// cell sent or received, `channel_timestamp_xmit` / `_recv`).
    pub(super) fn chan_xfer(&mut self, conn: ConnId) {
        let now = self.now;
        if let Some(c) = self.chans.get_mut(&conn) {
            c.last_xfer = now;
            c.pad_at = None;
        }
        self.pad_schedule(conn);
    }

    /// Draw the padding time of `conn` if it is padded and has none.
    pub(super) fn pad_schedule(&mut self, conn: ConnId) {
        let p = self.padding;
        let Some(c) = self.chans.get_mut(&conn) else {
            return;
        };
        if !c.pads(&p) {
            c.pad_at = None;
        } else if c.pad_at.is_none() {
            c.pad_at = Some(c.last_xfer + p.sample(&mut self.rng));
        }
    }

    /// Send the PADDING cell of an idle channel whose time came (padding-spec §2.2): only
    /// when nothing waits to go out on it (its own queue, or the embedder's socket).
    fn pad_if_idle(&mut self, conn: ConnId) {
        let now = self.now;
        let Some(c) = self.chans.get_mut(&conn) else {
            return;
        };
        if !c.pad_at.is_some_and(|t| t <= now) {
            return;
        }
        c.pad_at = None;
        let Some(ch) = c.channel.as_mut() else {
            return;
        };
        if c.blocked || ch.outbound_len() > 0 {
            // Busy: the transfer resets the timer.
            return;
        }
        if ch.send(CircId::ZERO, &ChanMsg::Padding).is_ok() {
            c.padding_sent += 1;
        }
        c.last_xfer = now;
        self.pad_schedule(conn);
    }

    /// Hand the buffered input to the channel until it takes no more, handling its events
    /// in between (it stops taking input while its event queue is full).
    pub(super) fn pump_chan(&mut self, conn: ConnId) {
        loop {
            if self.events.len() >= self.cfg.limits.max_events {
                // The embedder has not taken the events yet: the input waits.
                self.input_held = true;
                return;
            }
            let now = self.now;
            let Some(c) = self.chans.get_mut(&conn) else {
                return;
            };
            let Some(ch) = c.channel.as_mut() else {
                return;
            };
            // A violation closes the channel (all of it consumed); ChanEvent::Closed says why.
            let fed = c.inbuf.feed(ch, now);
            let evented = self.chan_events(conn);
            if !fed.again(evented) {
                return;
            }
        }
    }

    /// Handle the channel's events; returns whether there were any.
    pub(super) fn chan_events(&mut self, conn: ConnId) -> bool {
        let mut any = false;
        loop {
            let Some(ev) = self
                .chans
                .get_mut(&conn)
                .and_then(|c| c.channel.as_mut())
                .and_then(Channel::poll_event)
            else {
                return any;
            };
            any = true;
            match ev {
                ChanEvent::Open(_) => {
                    let waiting = match self.chans.get_mut(&conn) {
                        Some(c) => {
                            c.open = true;
                            c.deadline = None;
                            c.circs.clone()
                        }
                        None => Vec::new(),
                    };
                    for key in waiting {
                        self.start_create(key);
                    }
                    self.chan_maybe_idle(conn);
                }
                ChanEvent::CircuitCell { circ_id, msg } => {
                    if let Some(&key) = self.by_id.get(&(conn, circ_id)) {
                        self.circ_cell(key, msg);
                    }
                }
                ChanEvent::CircuitKilled { circ_id, .. } => {
                    if let Some(key) = self.by_id.remove(&(conn, circ_id)) {
                        self.fail_circ(
                            key,
                            Error::Violation("the relay broke the protocol on the circuit"),
                            false,
                        );
                    }
                }
                ChanEvent::Closed(e) => {
                    self.close_chan(conn, Error::Channel(e));
                    return true;
                }
                _ => {}
            }
        }
    }

    /// The embedder says `conn` closed (or never opened).
    pub(super) fn chan_closed(&mut self, conn: ConnId, _local: bool) {
        let Some(c) = self.chans.get_mut(&conn) else {
            return;
        };
        c.peer_closed = true;
        match c.channel.as_mut() {
            Some(ch) => {
                ch.handle_connection_closed();
                self.chan_events(conn);
            }
            None => {
                let addr = c.addr;
                self.forget_chan(
                    conn,
                    Error::Network(format!("connection to {addr} failed")),
                    false,
                );
            }
        }
    }

    /// Close `conn` for `why`: its circuits fail, the embedder is told to disconnect.
    pub(super) fn close_chan(&mut self, conn: ConnId, why: Error) {
        self.forget_chan(conn, why, true);
    }

    fn forget_chan(&mut self, conn: ConnId, why: Error, tell: bool) {
        let Some(mut c) = self.chans.remove(&conn) else {
            return;
        };
        if let Some(ch) = c.channel.as_mut() {
            ch.close();
        }
        for key in std::mem::take(&mut c.circs) {
            if let Some(ci) = self.circs.get(&key) {
                if let Some(id) = ci.id {
                    self.by_id.remove(&(conn, id));
                }
            }
            self.fail_circ(key, why.clone(), false);
        }
        if tell && !c.peer_closed {
            self.emit(Event::Disconnect { conn });
        }
        if self.tx_last == Some(conn) {
            self.tx_last = None;
        }
    }

    /// Start the idle timer of a channel that carries no circuit (C tor closes client
    /// channels idle for a randomized time), or stop it.
    pub(super) fn chan_maybe_idle(&mut self, conn: ConnId) {
        let idle = self.cfg.limits.channel_idle;
        let extra = idle.as_millis() as u64 / 2;
        let jitter = match extra {
            0 => 0,
            n => self.rng.next_u64() % n,
        };
        let now = self.now;
        if let Some(c) = self.chans.get_mut(&conn) {
            if !c.circs.is_empty() {
                c.idle_close = None;
            } else if c.open && c.idle_close.is_none() {
                c.idle_close = Some(now + idle + Duration::from_millis(jitter));
            }
        }
    }

    /// Move cells of the circuits on `conn` into its channel while it holds less than
    /// [`crate::Limits::channel_outbound`] bytes, one cell per circuit in turn.
    pub(super) fn fill_channel(&mut self, conn: ConnId) {
        let limit = self.cfg.limits.channel_outbound;
        let Some(c) = self.chans.get_mut(&conn) else {
            return;
        };
        let Some(ch) = c.channel.as_mut() else {
            return;
        };
        if !c.open {
            return;
        }
        let n = c.circs.len();
        let mut idle_rounds = 0;
        while ch.outbound_len() < limit && n > 0 && idle_rounds < n {
            let key = c.circs[c.rr % n];
            c.rr = (c.rr + 1) % n;
            let Some(circ) = self.circs.get_mut(&key) else {
                idle_rounds += 1;
                continue;
            };
            let (Some(id), Some(m)) = (circ.id, circ.circ.as_mut()) else {
                idle_rounds += 1;
                continue;
            };
            match m.poll_cell(&mut self.rng) {
                Some(cell) => {
                    idle_rounds = 0;
                    if matches!(cell, ChanMsg::Relay(_)) && circ.path.len() > 1 {
                        c.user_traffic = true;
                    }
                    // Only fails on a channel that is closing; its Closed event follows.
                    let _ = ch.send(id, &cell);
                }
                None => idle_rounds += 1,
            }
        }
    }

    /// Connect and handshake deadlines, the channels' own timers, idle channels.
    pub(super) fn chan_timeouts(&mut self) {
        let now = self.now;
        let conns: Vec<ConnId> = self.chans.keys().copied().collect();
        for conn in conns {
            let Some(c) = self.chans.get_mut(&conn) else {
                continue;
            };
            if c.deadline.is_some_and(|d| d <= now) {
                let addr = c.addr;
                self.close_chan(
                    conn,
                    Error::Network(format!("connection to {addr} timed out")),
                );
                continue;
            }
            if c.idle_close.is_some_and(|d| d <= now) && c.circs.is_empty() {
                if let Some(ch) = c.channel.as_mut() {
                    ch.close();
                }
                self.chans.remove(&conn);
                self.emit(Event::Disconnect { conn });
                continue;
            }
            if let Some(ch) = c.channel.as_mut() {
                ch.handle_timeout(now);
            }
            self.chan_events(conn);
            self.pad_schedule(conn);
            self.pad_if_idle(conn);
        }
    }
}
