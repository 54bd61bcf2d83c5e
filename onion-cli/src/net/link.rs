//! A channel to one relay: [`TlsLink`] below, `onion_circuit::channel::Channel` above.
//!
//! This is the bottom of the run loop: raw bytes from the socket go through TLS into the
//! channel; the channel's output goes through TLS back to the socket; the channel's events
//! are queued here for the layer above (circuits) to take with [`Link::take_events`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use onion_circuit::channel::{ChanConfig, ChanEvent, ChanOpen, Channel, PeerIds};

use super::event::{ConnId, Inbox, Input};
use super::tls::TlsLink;
use super::Clock;

/// How long one TLS write may block before the link counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// A TLS connection and the channel over it.
pub struct Link {
    /// The TLS connection.
    pub tls: TlsLink,
    /// The channel state machine.
    pub chan: Channel,
    /// The socket's id in the [`Inbox`].
    pub conn: ConnId,
    plain: Vec<u8>,
    out: Vec<u8>,
    events: Vec<ChanEvent>,
}

impl Link {
    /// Connect to `addr`, complete TLS, start the channel handshake (VERSIONS is sent) and
    /// register the socket with `inbox`. The channel's own handshake timeout (from `config`)
    /// bounds the rest of the handshake.
    pub fn connect(
        inbox: &mut Inbox,
        clock: &Clock,
        addr: SocketAddr,
        expected: PeerIds,
        timeout: Duration,
    ) -> Result<Link, String> {
        let tls = TlsLink::connect(addr, timeout).map_err(|e| e.to_string())?;
        Link::over(tls, inbox, clock, expected, timeout)
    }

    /// The channel over an established TLS connection (made by [`TlsLink::connect`], e.g. on
    /// a thread of its own so that the loop does not wait for TCP and TLS): the channel
    /// handshake is started (VERSIONS is sent) and the socket registered with `inbox`.
    pub fn over(
        mut tls: TlsLink,
        inbox: &mut Inbox,
        clock: &Clock,
        expected: PeerIds,
        timeout: Duration,
    ) -> Result<Link, String> {
        let addr = tls.addr();
        let mut config = ChanConfig::default();
        config.handshake_timeout = timeout;
        config.peer_addr = Some(addr.ip());
        let chan = Channel::initiator(
            config,
            expected,
            Some(tls.cert_sha256()),
            clock.now(),
            SystemTime::now(),
        );
        let reader = tls.reader().map_err(|e| format!("{addr}: {e}"))?;
        let early = tls.feed(&[]).map_err(|e| e.to_string())?;
        let conn = inbox.watch(reader);
        let mut link = Link {
            tls,
            chan,
            conn,
            plain: early,
            out: Vec::new(),
            events: Vec::new(),
        };
        link.pump(clock)?;
        Ok(link)
    }

    /// Feed one input of this link's socket (bytes or end of stream).
    pub fn handle(&mut self, clock: &Clock, input: Input) -> Result<(), String> {
        match input {
            Input::Bytes(_, raw) => {
                let plain = self.tls.feed(&raw).map_err(|e| e.to_string())?;
                self.plain.extend_from_slice(&plain);
            }
            Input::Closed(_, err) => {
                self.chan.handle_connection_closed();
                if let Some(e) = err {
                    return Err(format!("{}: {e}", self.tls.addr()));
                }
            }
            Input::Accepted(_) => {}
        }
        self.pump(clock)
    }

    /// Hand buffered plaintext to the channel, collect its events, write its output.
    /// Call after anything that may have made the channel produce output.
    pub fn pump(&mut self, clock: &Clock) -> Result<(), String> {
        loop {
            let mut used = 0;
            if !self.plain.is_empty() {
                // A protocol error also arrives as ChanEvent::Closed, handled by the caller.
                used = self
                    .chan
                    .handle_input(clock.now(), &self.plain)
                    .unwrap_or(self.plain.len());
                self.plain.drain(..used);
            }
            while let Some(ev) = self.chan.poll_event() {
                self.events.push(ev);
            }
            while self.chan.poll_transmit(&mut self.out).is_some() {
                let r = self.tls.send(&self.out, WRITE_TIMEOUT);
                self.out.clear();
                if let Err(e) = r {
                    self.chan.handle_connection_closed();
                    return Err(e.to_string());
                }
            }
            if self.plain.is_empty() || used == 0 && self.chan.is_closed() {
                return Ok(());
            }
        }
    }

    /// The channel events collected so far.
    pub fn take_events(&mut self) -> Vec<ChanEvent> {
        std::mem::take(&mut self.events)
    }
}

/// Open a channel to `addr` and wait for its handshake, bounded by `timeout` overall.
/// Returns the link with the handshake's result.
pub fn open(
    addr: SocketAddr,
    expected: PeerIds,
    timeout: Duration,
) -> Result<(Link, Inbox, ChanOpen), String> {
    let clock = Clock::new();
    let mut inbox = Inbox::new();
    let deadline = clock.now() + timeout;
    let mut link = Link::connect(&mut inbox, &clock, addr, expected, timeout)?;
    loop {
        for ev in link.take_events() {
            match ev {
                ChanEvent::Open(open) => return Ok((link, inbox, open)),
                ChanEvent::Closed(e) => return Err(format!("{addr}: channel: {e}")),
                _ => {}
            }
        }
        let wake = match link.chan.poll_timeout() {
            Some(t) if t < deadline => t,
            _ => deadline,
        };
        match inbox.wait(Some(clock.until(wake))) {
            Some(input) => link.handle(&clock, input)?,
            None if clock.now() >= deadline => {
                return Err(format!(
                    "{addr}: link handshake timed out after {timeout:?}"
                ))
            }
            None => {
                link.chan.handle_timeout(clock.now());
                link.pump(&clock)?;
            }
        }
    }
}
