//! Channels: the link protocol between two Tor nodes, as a sans-IO state machine
//! (tor-spec §2 "Connections", §3 "Cell Packet format", §4 "Negotiating and initializing
//! connections", §5.1.1 "Choosing circuit IDs", §5.4 "Tearing down circuits", §7.2 "Link
//! padding").
//!
//! A [`Channel`] sits on top of a TLS connection that the embedder owns: it reads the
//! plaintext bytes that TLS delivers ([`Channel::handle_input`], any chunking) and produces
//! the plaintext bytes to write ([`Channel::poll_transmit`]). It runs the in-protocol ("v3")
//! handshake from either end:
//!
//! * [`Channel::initiator`] (a client, or a relay extending a circuit) sends VERSIONS,
//!   reads the responder's VERSIONS, CERTS, AUTH_CHALLENGE and NETINFO, validates the CERTS
//!   cell as C tor does (RSA identity certificate, RSA→ed25519 cross-certificate, ed25519
//!   signing and link certificates, the link certificate against the TLS certificate
//!   digest), checks the proven identities against the expected ones, and answers with
//!   NETINFO without authenticating (clients do not send AUTHENTICATE).
//! * [`Channel::initiator_authenticated`] (a relay opening a channel to another relay)
//!   does the same and also authenticates with CERTS and AUTHENTICATE (§4.4.2, type 3,
//!   "Ed25519-SHA256-RFC5705"), given [`InitiatorCredentials`] and the TLS exporter value.
//! * [`Channel::responder`] (a relay) answers VERSIONS with VERSIONS, CERTS (from
//!   [`ResponderCerts`]), AUTH_CHALLENGE and NETINFO, and accepts an unauthenticated
//!   initiator once its NETINFO arrives. With [`ChanConfig::verify_initiator_auth`] it
//!   also checks an authenticating initiator ([`Channel::tls_exporter_needed`],
//!   [`Channel::provide_tls_exporter`]).
//!
//! Interoperability: the initiator was run against C tor 0.4.9.11 relays over TLS 1.3
//! (certificates accepted, identities checked, CREATE_FAST answered; AUTHENTICATE accepted
//! by the relay), and a C tor 0.4.9.11 client completed the handshake with the responder
//! (it logged "Authenticated it with RSA and Ed25519"). The bytes of both are kept as
//! known-answer tests (`tests/channel_ctor.rs`).
//!
//! Link protocols 3 to 5 are offered; the highest shared one is used (5 with any current
//! C tor). Once open, the channel keeps the map of circuit ids in use, allocates new ids
//! by the rules of §5.1.1 ([`Channel::new_circ_id`]), hands circuit cells to the circuit
//! layer ([`ChanEvent::CircuitCell`]), drops cells for unknown circuits (§5.5.1), forgets
//! circuits on DESTROY, and ignores padding. Any protocol violation closes the channel
//! with a precise [`ChanError`].
//!
//! Nothing here reads a clock, opens a socket or draws randomness of its own: `now` is a
//! monotonic [`Instant`], the wall clock (for certificate expiry and NETINFO) is given once
//! at construction, and randomness comes in as an argument.
//!
//! # Run loop
//!
//! After any input (`handle_input`, `handle_timeout`, `send`, ...), drain `poll_transmit`
//! and `poll_event` until they return `None`, then wait for input or for `poll_timeout()`.
//! `handle_input` returns how many bytes it consumed: it stops early when the event queue
//! or the outbound buffer is full, so offer the rest again after draining (a responder with
//! [`ChanConfig::verify_initiator_auth`] also stops until [`Channel::tls_exporter_needed`]
//! is answered with [`Channel::provide_tls_exporter`]). `now` must not go backwards.
//!
//! Errors: inputs (`handle_input`, `handle_timeout`, `provide_tls_exporter`,
//! `handle_connection_closed`) return no error; a peer's violation or a timeout closes the
//! channel and its [`ChanError`] arrives once, as [`ChanEvent::Closed`], the last event.
//! Commands (`send`, `new_circ_id`) return a [`SendError`] for the caller's mistakes and
//! bounds, and leave the channel as it was.
//!
//! ```no_run
//! # use onion_circuit::channel::*; use onion_circuit::Instant;
//! # fn tls_read(_: &mut [u8]) -> usize { 0 } fn tls_write(_: &[u8]) {} fn clock() -> Instant { Instant::ZERO }
//! # fn run(mut chan: Channel) -> Result<(), ChanError> {
//! let (mut buf, mut out) = ([0u8; 4096], Vec::new());
//! loop {
//!     while chan.poll_transmit(&mut out).is_some() { tls_write(&out); out.clear(); }
//!     while let Some(ev) = chan.poll_event() {
//!         // The one report of a fatal error.
//!         match ev { ChanEvent::Closed(e) => return Err(e), other => println!("{other:?}") }
//!     }
//!     let n = tls_read(&mut buf); // with a timeout at chan.poll_timeout()
//!     if n == 0 { chan.handle_timeout(clock()); continue; }
//!     let mut off = 0;
//!     while off < n {
//!         off += chan.handle_input(clock(), &buf[off..n]); // all of it once closed
//!         while let Some(ev) = chan.poll_event() {
//!             match ev { ChanEvent::Closed(e) => return Err(e), other => println!("{other:?}") }
//!         }
//!         while chan.poll_transmit(&mut out).is_some() { tls_write(&out); out.clear(); }
//!     }
//! }
//! # }
//! ```

mod certs;
mod circmap;
mod config;
mod error;
mod event;
mod input;
mod pool;

use onion_crypto::Timestamp;
use std::collections::VecDeque;
use std::net::IpAddr;

use onion_cell::chancell::{
    AuthChallenge, ChanCell, ChanCmd, ChanMsg, DestroyReason, Netinfo, NetinfoAddr, Versions,
};
use onion_cell::codec::{cell_len, decode_cell, encode_cell, CellFormat, DecodeError};
use onion_cell::CircId;
use onion_crypto::Ed25519Identity;
use rand_core::CryptoRngCore;
use sha2::{Digest as _, Sha256};

use crate::Instant;

pub use certs::{InitiatorCredentials, RelayLinkKeys, ResponderCerts, TLS_EXPORTER_LABEL};
pub use circmap::{CircOrigin, CircState};
pub use config::{ChanConfig, PeerIds};
pub use error::{CertsError, ChanError, SendError};
pub use event::{ChanEvent, ChanOpen, CircViolation};
pub use input::{Fed, InputBuffer, InputFull};
pub use pool::{BodyPool, CellBody};

use circmap::CircMap;

/// The link protocol versions we offer (tor-spec §4.1: "implementations MUST NOT list any
/// version before 3"; 4 widens circuit ids, 5 adds padding negotiation).
pub const LINK_VERSIONS: [u16; 3] = [3, 4, 5];

/// Link authentication method of AUTH_CHALLENGE that responders offer:
/// 3 = Ed25519-SHA256-RFC5705 (tor-spec §4.4.2), as C tor 0.4.9 offers.
const AUTH_METHOD_ED25519: u16 = 3;

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We opened the TCP/TLS connection.
    Initiator,
    /// We accepted it (a relay's ORPort).
    Responder,
}

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: VERSIONS sent, waiting for the responder's VERSIONS.
    /// Responder: waiting for the initiator's VERSIONS.
    AwaitVersions,
    /// Initiator: waiting for CERTS.
    AwaitCerts,
    /// Initiator: CERTS verified, waiting for (AUTH_CHALLENGE and) NETINFO.
    /// Responder: our cells sent, waiting for the initiator's NETINFO (maybe after CERTS
    /// and AUTHENTICATE, which we do not verify).
    AwaitNetinfo,
    /// Handshake complete.
    Open,
    /// Closed; no further input is processed.
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitVersions => "awaiting VERSIONS",
            State::AwaitCerts => "awaiting CERTS",
            State::AwaitNetinfo => "awaiting NETINFO",
            State::Open => "open",
            State::Closed => "closed",
        }
    }
}

/// A channel: the link handshake plus the circuit-id map, over a TLS byte stream that the
/// embedder drives. See the [module documentation](self) for the run loop.
///
/// `Clone` copies the whole state (a snapshot, for simulators and fuzzing); the two copies
/// then evolve independently and must not both be connected to the same peer.
#[derive(Debug, Clone)]
pub struct Channel {
    role: Role,
    config: ChanConfig,
    state: State,
    format: CellFormat,
    /// Monotonic time of creation, and the wall clock (Unix seconds) at that moment.
    created: Instant,
    wall_at_created: u64,
    deadline: Option<Instant>,
    /// When to check for idleness next (see [`ChanConfig::keepalive`]), and whether bytes
    /// went out since the last check.
    keepalive_at: Option<Instant>,
    sent_since_keepalive: bool,
    /// A partial cell carried over between `handle_input` calls (at most one cell).
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    events: VecDeque<ChanEvent>,
    circs: CircMap,
    closed: Option<ChanError>,
    // Initiator: what to check.
    expected: PeerIds,
    tls_cert_sha256: Option<[u8; 32]>,
    verified: PeerIds,
    // Handshake bookkeeping.
    got_certs: bool,
    got_auth_challenge: bool,
    got_authenticate: bool,
    // Responder: what to send.
    responder_certs: Option<ResponderCerts>,
    challenge: [u8; 32],
    // Initiator authentication (tor-spec §4.4.2), when configured.
    auth: Option<Box<AuthState>>,
    // Responder: verification of an authenticating initiator, when configured.
    resp_auth: Option<Box<RespAuthState>>,
    // Counters (for tests and diagnostics).
    dropped_cells: u64,
    padding_cells: u64,
    /// Spare bodies for the RELAY cells received ([`Channel::swap_body_pool`]).
    bodies: BodyPool,
}

/// What an initiator relay needs to authenticate on one channel (tor-spec §4.4.2).
#[derive(Clone, Debug)]
pub struct InitiatorAuth {
    /// The relay's credentials (see [`RelayLinkKeys::initiator_credentials`]).
    pub credentials: InitiatorCredentials,
    /// The RFC 5705 exporter output of this TLS connection: label
    /// [`TLS_EXPORTER_LABEL`], context [`InitiatorCredentials::tls_exporter_context`],
    /// length 32.
    pub tls_exporter: [u8; 32],
}

/// The state of an authenticating initiator: the transcript digests and the values that go
/// into AUTHENTICATE.
#[derive(Clone)]
struct AuthState {
    auth: InitiatorAuth,
    rand: [u8; 24],
    /// SHA-256 of every byte the responder sent, up to and including AUTH_CHALLENGE.
    slog: Sha256,
    /// SHA-256 of every byte we sent before AUTHENTICATE.
    clog: Sha256,
    /// SHA-256 of the responder's RSA identity key and its ed25519 identity (once CERTS
    /// verified).
    peer: Option<([u8; 32], Ed25519Identity)>,
    /// True once we sent CERTS, AUTHENTICATE and NETINFO.
    done: bool,
}

impl core::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AuthState")
            .field("identity", &self.auth.credentials.ed25519_identity())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// A responder's state for checking an authenticating initiator (tor-spec §4.4.2).
#[derive(Clone, Debug)]
struct RespAuthState {
    /// SHA-256 of our VERSIONS, CERTS and AUTH_CHALLENGE cells.
    slog: Sha256,
    /// SHA-256 of every byte the initiator sent before AUTHENTICATE.
    clog: Sha256,
    /// The initiator's verified CERTS.
    proof: Option<certs::CertsProof>,
    /// The TLS exporter value, once the embedder gave it.
    exporter: Option<[u8; 32]>,
    /// An AUTHENTICATE body waiting for the exporter value.
    pending: Option<Vec<u8>>,
}

/// The TYPE field of AuthType 3, Ed25519-SHA256-RFC5705 (tor-spec §4.4.2).
const AUTH_TYPE_3: &[u8; 8] = b"AUTH0003";
/// The length of TYPE through RAND: 8 + 8 * 32 + 24.
const AUTH3_SIGNED_LEN: usize = 288;

fn cmd_name(cmd: ChanCmd) -> &'static str {
    cmd.name().unwrap_or("unknown-command")
}

fn is_circuit_cmd(cmd: ChanCmd) -> bool {
    matches!(
        cmd,
        ChanCmd::CREATE
            | ChanCmd::CREATED
            | ChanCmd::RELAY
            | ChanCmd::DESTROY
            | ChanCmd::CREATE_FAST
            | ChanCmd::CREATED_FAST
            | ChanCmd::RELAY_EARLY
            | ChanCmd::CREATE2
            | ChanCmd::CREATED2
    )
}

fn is_create(cmd: ChanCmd) -> bool {
    matches!(
        cmd,
        ChanCmd::CREATE | ChanCmd::CREATE_FAST | ChanCmd::CREATE2
    )
}

fn is_created(cmd: ChanCmd) -> bool {
    matches!(
        cmd,
        ChanCmd::CREATED | ChanCmd::CREATED_FAST | ChanCmd::CREATED2
    )
}

fn netinfo_addr(a: Option<IpAddr>) -> NetinfoAddr<'static> {
    match a {
        Some(ip) => NetinfoAddr::Ip(ip),
        None => NetinfoAddr::Other {
            atype: 0,
            value: Vec::new().into(),
        },
    }
}

impl Channel {
    fn new(role: Role, config: ChanConfig, now: Instant, wallclock: Timestamp) -> Self {
        let deadline = now.checked_add(config.handshake_timeout);
        let max_circuits = config.max_circuits;
        Channel {
            role,
            config,
            state: State::AwaitVersions,
            format: CellFormat::UNNEGOTIATED,
            created: now,
            wall_at_created: wallclock.unix(),
            deadline,
            keepalive_at: None,
            sent_since_keepalive: false,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            events: VecDeque::new(),
            circs: CircMap::new(max_circuits),
            closed: None,
            expected: PeerIds::default(),
            tls_cert_sha256: None,
            verified: PeerIds::default(),
            got_certs: false,
            got_auth_challenge: false,
            got_authenticate: false,
            responder_certs: None,
            challenge: [0; 32],
            auth: None,
            resp_auth: None,
            dropped_cells: 0,
            padding_cells: 0,
            bodies: BodyPool::default(),
        }
    }

    /// Starts the initiator side of a channel over a freshly completed TLS connection, and
    /// queues our VERSIONS cell.
    ///
    /// * `expected`: the identities the responder must prove (tor-spec §2: from the
    ///   consensus, the fallback list, or the EXTEND2 cell). An absent identity is not
    ///   checked; the proven ones are reported in [`ChanOpen::peer`] either way.
    /// * `tls_cert_sha256`: SHA-256 of the DER certificate the responder presented in TLS.
    ///   The responder's Signing->Link certificate must certify it (§4.2). `None` skips that
    ///   check, which is only sound when there is no TLS at all (an in-memory simulation);
    ///   over real TLS always pass it, or an active attacker can relay the handshake.
    /// * `wallclock`: the current wall-clock time, for certificate expiry (§4.2) and the
    ///   NETINFO clock skew (§4.5). Later wall-clock times are derived from it and `now`.
    pub fn initiator(
        config: ChanConfig,
        expected: PeerIds,
        tls_cert_sha256: Option<[u8; 32]>,
        now: Instant,
        wallclock: impl Into<Timestamp>,
    ) -> Self {
        let mut c = Channel::new(Role::Initiator, config, now, wallclock.into());
        c.expected = expected;
        c.tls_cert_sha256 = tls_cert_sha256;
        c.queue_versions();
        c
    }

    /// Starts the initiator side of a channel opened by a relay that authenticates itself
    /// (tor-spec §4.4, link authentication type 3 "Ed25519-SHA256-RFC5705"), as C tor
    /// relays do when they extend circuits: after verifying the responder's CERTS and on
    /// its AUTH_CHALLENGE (if it offers method 3), the channel sends CERTS (types 2, 4, 6,
    /// 7), AUTHENTICATE and NETINFO (with our time and [`ChanConfig::my_addrs`]).
    ///
    /// `tls_cert_sha256` is required here: it is the SCERT field of AUTHENTICATE. The
    /// 24-byte RAND field is drawn from `rng`. Otherwise as [`Channel::initiator`].
    pub fn initiator_authenticated(
        config: ChanConfig,
        expected: PeerIds,
        tls_cert_sha256: [u8; 32],
        auth: InitiatorAuth,
        now: Instant,
        wallclock: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let mut c = Channel::new(Role::Initiator, config, now, wallclock.into());
        c.expected = expected;
        c.tls_cert_sha256 = Some(tls_cert_sha256);
        let mut rand = [0u8; 24];
        rng.fill_bytes(&mut rand);
        c.auth = Some(Box::new(AuthState {
            auth,
            rand,
            slog: Sha256::new(),
            clog: Sha256::new(),
            peer: None,
            done: false,
        }));
        c.queue_versions();
        c
    }

    /// Starts the responder (relay) side of a channel over a freshly accepted TLS
    /// connection. Nothing is sent until the initiator's VERSIONS cell arrives; then
    /// VERSIONS, CERTS (from `certs`, whose link certificate must certify the TLS
    /// certificate this connection uses), AUTH_CHALLENGE (a fresh 32-byte challenge drawn
    /// from `rng`, §4.3) and NETINFO (time from `wallclock`, addresses from
    /// [`ChanConfig::peer_addr`] and [`ChanConfig::my_addrs`]).
    pub fn responder(
        config: ChanConfig,
        certs: &ResponderCerts,
        now: Instant,
        wallclock: impl Into<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let mut challenge = [0u8; 32];
        rng.fill_bytes(&mut challenge);
        let verify = config.verify_initiator_auth;
        let mut c = Channel::new(Role::Responder, config, now, wallclock.into());
        if verify {
            c.resp_auth = Some(Box::new(RespAuthState {
                slog: Sha256::new(),
                clog: Sha256::new(),
                proof: None,
                exporter: None,
                pending: None,
            }));
        }
        c.responder_certs = Some(certs.clone());
        c.challenge = challenge;
        c
    }

    /// Which end of the connection this channel is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the handshake has completed and until the channel closes.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// True once the channel has closed (see [`ChanEvent::Closed`]).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Why the channel closed (the error its [`ChanEvent::Closed`] carried), `None` while it
    /// is open: state to read, as [`Channel::is_closed`], for an embedder that tears the
    /// connection down later than it took the event.
    pub fn close_error(&self) -> Option<&ChanError> {
        self.closed.as_ref()
    }

    /// The negotiated link protocol version, once VERSIONS cells have been exchanged.
    pub fn link_version(&self) -> Option<u16> {
        self.format.version()
    }

    /// The identities the peer has proven so far (see [`ChanOpen::peer`]).
    pub fn peer_ids(&self) -> PeerIds {
        self.verified
    }

    /// The state of circuit `id` on this channel, if it is in use.
    pub fn circuit_state(&self, id: CircId) -> Option<(CircOrigin, CircState)> {
        self.circs.get(id).map(|e| (e.origin, e.state))
    }

    /// The number of circuit ids in use.
    pub fn n_circuits(&self) -> usize {
        self.circs.len()
    }

    /// The number of bytes waiting for [`Channel::poll_transmit`]. Circuit code can use it
    /// for back-pressure.
    pub fn outbound_len(&self) -> usize {
        self.outbuf.len()
    }

    /// Cells dropped as the spec asks (unknown commands, cells for unknown circuits, late
    /// handshake cells).
    pub fn dropped_cells(&self) -> u64 {
        self.dropped_cells
    }

    /// PADDING and VPADDING cells received and ignored.
    pub fn padding_cells(&self) -> u64 {
        self.padding_cells
    }

    /// The wall-clock time (Unix seconds) corresponding to `now`.
    fn wall_now(&self, now: Instant) -> u64 {
        self.wall_at_created
            .saturating_add((now - self.created).as_secs())
    }

    /// Feeds bytes received from TLS. Returns how many were consumed: fewer than
    /// `data.len()` only when the event queue or the outbound buffer is full (drain them and
    /// offer the rest again).
    ///
    /// Nothing else is returned: bytes from TLS are never the caller's mistake. A protocol
    /// violation by the peer (or a handshake past its deadline) closes the channel, and its
    /// [`ChanError`] arrives once, as [`ChanEvent::Closed`]. A closed channel consumes and
    /// drops all input (the whole of `data` is reported consumed), so a feeding loop ends.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> usize {
        if self.closed.is_some() {
            return data.len();
        }
        if self.deadline_passed(now) {
            self.close_with(ChanError::HandshakeTimeout);
            return data.len();
        }
        match self.consume(now, data) {
            Ok(n) => n,
            Err(e) => {
                self.close_with(e);
                data.len()
            }
        }
    }

    fn queues_full(&self) -> bool {
        self.waiting_for_exporter()
            || self.events.len() >= self.config.max_pending_events
            || self.outbuf.len() >= self.config.max_outbound_bytes
    }

    fn consume(&mut self, now: Instant, data: &[u8]) -> Result<usize, ChanError> {
        let mut used = 0usize;
        // First finish a partial cell carried over from an earlier call.
        if !self.inbuf.is_empty() {
            if self.queues_full() {
                return Ok(0);
            }
            let mut buf = core::mem::take(&mut self.inbuf);
            let r = self.fill_partial(&mut buf, data, &mut used);
            match r {
                Ok(true) => {
                    let res = self.process_raw(now, &buf);
                    buf.clear();
                    self.inbuf = buf;
                    res?;
                }
                Ok(false) => {
                    self.inbuf = buf;
                    return Ok(used);
                }
                Err(e) => return Err(e),
            }
        }
        while used < data.len() {
            if self.queues_full() || matches!(self.state, State::Closed) {
                break;
            }
            let rest = data.get(used..).unwrap_or(&[]);
            self.early_check(rest)?;
            match cell_len(self.format, rest) {
                Ok(len) => {
                    let cell = rest.get(..len).unwrap_or(&[]);
                    used += len;
                    self.process_raw(now, cell)?;
                }
                Err(DecodeError::NeedMore { .. }) => {
                    self.inbuf.extend_from_slice(rest);
                    used = data.len();
                }
                Err(e) => {
                    return Err(ChanError::MalformedCell {
                        cmd: "cell header",
                        error: decode_error(e),
                    })
                }
            }
        }
        Ok(used)
    }

    /// Moves bytes from `data[*used..]` into `buf` until it holds one whole cell. Returns
    /// `true` when it does.
    fn fill_partial(
        &mut self,
        buf: &mut Vec<u8>,
        data: &[u8],
        used: &mut usize,
    ) -> Result<bool, ChanError> {
        loop {
            self.early_check(buf)?;
            match cell_len(self.format, buf) {
                Ok(_) => return Ok(true),
                Err(DecodeError::NeedMore { need }) => {
                    let rest = data.get(*used..).unwrap_or(&[]);
                    if rest.is_empty() {
                        return Ok(false);
                    }
                    let take = need.min(rest.len());
                    buf.extend_from_slice(rest.get(..take).unwrap_or(&[]));
                    *used += take;
                }
                Err(e) => {
                    return Err(ChanError::MalformedCell {
                        cmd: "cell header",
                        error: decode_error(e),
                    })
                }
            }
        }
    }

    /// Rejects a cell as soon as its command is known, without waiting for (up to 64 KiB
    /// of) its body, when the handshake state cannot accept it.
    fn early_check(&self, prefix: &[u8]) -> Result<(), ChanError> {
        let Some(&cmd) = prefix.get(self.format.circ_id_len()) else {
            return Ok(());
        };
        let cmd = ChanCmd(cmd);
        if !self.allowed_in_state(cmd) {
            return Err(ChanError::UnexpectedCell {
                cmd: cmd_name(cmd),
                state: self.state.name(),
            });
        }
        Ok(())
    }

    /// The cells each handshake state accepts (tor-spec §4: "the first cell must be
    /// VERSIONS, VPADDING, or AUTHORIZE, and no other cell type is allowed to intervene
    /// besides those specified, except for VPADDING cells"). Open channels accept anything
    /// (unknown commands are dropped).
    fn allowed_in_state(&self, cmd: ChanCmd) -> bool {
        match (&self.state, self.role) {
            (State::AwaitVersions, _) => matches!(
                cmd,
                ChanCmd::VERSIONS | ChanCmd::VPADDING | ChanCmd::AUTHORIZE
            ),
            (State::AwaitCerts, _) => {
                matches!(cmd, ChanCmd::VERSIONS | ChanCmd::VPADDING | ChanCmd::CERTS)
            }
            (State::AwaitNetinfo, Role::Initiator) => matches!(
                cmd,
                ChanCmd::VERSIONS | ChanCmd::VPADDING | ChanCmd::AUTH_CHALLENGE | ChanCmd::NETINFO
            ),
            (State::AwaitNetinfo, Role::Responder) => matches!(
                cmd,
                ChanCmd::VERSIONS
                    | ChanCmd::VPADDING
                    | ChanCmd::CERTS
                    | ChanCmd::AUTHENTICATE
                    | ChanCmd::NETINFO
            ),
            (State::Open, _) | (State::Closed, _) => true,
        }
    }

    /// Decodes and processes one complete cell.
    fn process_raw(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ChanError> {
        if !self.got_authenticate && !matches!(self.state, State::Open | State::Closed) {
            let cmd = bytes.get(self.format.circ_id_len()).copied();
            if let Some(r) = self.resp_auth.as_mut() {
                // CLOG: every byte the initiator sent before AUTHENTICATE.
                if cmd != Some(ChanCmd::AUTHENTICATE.0) {
                    r.clog.update(bytes);
                }
            }
        }
        if !self.got_auth_challenge && !matches!(self.state, State::Open | State::Closed) {
            if let Some(a) = self.auth.as_mut() {
                // SLOG: "all bytes sent from the responder to the initiator as part of the
                // negotiation up to and including the AUTH_CHALLENGE cell" (§4.4.1).
                a.slog.update(bytes);
            }
        }
        let cl = self.format.circ_id_len();
        let cmd = ChanCmd(bytes.get(cl).copied().unwrap_or(0));
        match decode_cell(self.format, bytes) {
            Ok((cell, _)) => self.process_cell(now, cell),
            Err(DecodeError::Malformed(error)) => self.malformed(bytes, cmd, error),
            Err(e) => Err(ChanError::MalformedCell {
                cmd: cmd_name(cmd),
                error: decode_error(e),
            }),
        }
    }

    /// A cell whose framing is intact but whose body does not decode.
    fn malformed(
        &mut self,
        bytes: &[u8],
        cmd: ChanCmd,
        error: onion_cell::Error,
    ) -> Result<(), ChanError> {
        if matches!(self.state, State::Open) && is_circuit_cmd(cmd) {
            let id = read_circ_id(self.format, bytes);
            if id.is_zero() {
                return Err(ChanError::CircuitCellOnIdZero { cmd: cmd_name(cmd) });
            }
            let reason = CircViolation::Malformed {
                cmd: cmd_name(cmd),
                error,
            };
            if self.circs.get(id).is_some() {
                self.kill_circuit(id, reason);
            } else if is_create(cmd) && self.accepts_inbound() {
                // A bad CREATE for a new circuit: refuse that circuit only (C tor answers
                // with DESTROY rather than closing the channel).
                self.queue_destroy(id, DestroyReason::PROTOCOL);
            } else {
                self.dropped_cells += 1;
            }
            return Ok(());
        }
        if matches!(self.state, State::Open) {
            // Malformed non-circuit cells on an open channel are cells we would ignore
            // anyway (late handshake cells, padding negotiation).
            self.dropped_cells += 1;
            return Ok(());
        }
        Err(ChanError::MalformedCell {
            cmd: cmd_name(cmd),
            error,
        })
    }

    fn process_cell(&mut self, now: Instant, cell: ChanCell<'_>) -> Result<(), ChanError> {
        let ChanCell { circ_id, msg } = cell;
        let cmd = msg.cmd();
        if !self.allowed_in_state(cmd) {
            return Err(ChanError::UnexpectedCell {
                cmd: cmd_name(cmd),
                state: self.state.name(),
            });
        }
        match msg {
            ChanMsg::Padding | ChanMsg::Vpadding { .. } => {
                self.padding_cells += 1;
                Ok(())
            }
            ChanMsg::Versions(v) => self.on_versions(now, v),
            ChanMsg::Authorize(_) => {
                self.dropped_cells += 1;
                Ok(())
            }
            ChanMsg::Certs(c) => self.on_certs(now, &c),
            ChanMsg::AuthChallenge(a) => self.on_auth_challenge(now, &a),
            ChanMsg::Authenticate(a) => self.on_authenticate(&a),
            ChanMsg::Netinfo(n) => self.on_netinfo(now, &n),
            msg if is_circuit_cmd(cmd) => self.on_circuit_cell(circ_id, msg),
            _ => {
                // PADDING_NEGOTIATE (we do not pad) and unknown commands: tor-spec §3,
                // "an OR must drop the cell".
                self.dropped_cells += 1;
                Ok(())
            }
        }
    }

    fn on_versions(&mut self, now: Instant, v: Versions) -> Result<(), ChanError> {
        if !matches!(self.state, State::AwaitVersions) {
            // §4.1: "Any VERSIONS cells sent after the first VERSIONS cell MUST be ignored."
            self.dropped_cells += 1;
            return Ok(());
        }
        let Some(version) = v.best_shared(&LINK_VERSIONS) else {
            return Err(ChanError::NoCommonVersion {
                offered: v.versions.iter().take(16).copied().collect(),
            });
        };
        self.format =
            CellFormat::for_version(version).map_err(|error| ChanError::MalformedCell {
                cmd: "VERSIONS",
                error,
            })?;
        match self.role {
            Role::Initiator => self.state = State::AwaitCerts,
            Role::Responder => {
                let before = self.outbuf.len();
                self.queue_versions();
                self.queue_responder_handshake(now, before);
                self.state = State::AwaitNetinfo;
            }
        }
        Ok(())
    }

    fn on_certs(
        &mut self,
        now: Instant,
        c: &onion_cell::chancell::Certs<'_>,
    ) -> Result<(), ChanError> {
        if self.got_certs {
            return Err(ChanError::DuplicateCell { cmd: "CERTS" });
        }
        self.got_certs = true;
        match self.role {
            Role::Initiator => {
                let wall = self.wall_now(now);
                let proof = certs::verify_responder_certs(c, self.tls_cert_sha256.as_ref(), wall)?;
                let (rsa, ed) = (proof.rsa, proof.ed);
                if let Some(a) = self.auth.as_mut() {
                    a.peer = Some((proof.rsa_key_sha256, proof.ed));
                }
                let rsa_ok = self.expected.rsa.map_or(true, |e| e.ct_eq(&rsa));
                let ed_ok = self.expected.ed25519.map_or(true, |e| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(&e.0[..], &ed.0[..]))
                });
                if !(rsa_ok && ed_ok) {
                    return Err(ChanError::IdentityMismatch {
                        expected_rsa: self.expected.rsa,
                        expected_ed: self.expected.ed25519,
                        got_rsa: rsa,
                        got_ed: ed,
                    });
                }
                self.verified = PeerIds::new(rsa, ed);
                self.state = State::AwaitNetinfo;
            }
            Role::Responder => {
                // The initiator wants to authenticate. Unless configured to verify it, we
                // ignore it and the peer stays unauthenticated (tor-spec §2: "an OR should
                // not believe that an incoming connection is from another OR unless the
                // certificates are present and well-formed").
                if self.resp_auth.is_some() {
                    let wall = self.wall_now(now);
                    // C tor closes the connection on a bad CERTS cell from an initiator.
                    let proof = certs::verify_initiator_certs(c, wall)?;
                    if let Some(r) = self.resp_auth.as_mut() {
                        r.proof = Some(proof);
                    }
                }
            }
        }
        Ok(())
    }

    fn on_auth_challenge(&mut self, now: Instant, a: &AuthChallenge) -> Result<(), ChanError> {
        if self.got_auth_challenge {
            return Err(ChanError::DuplicateCell {
                cmd: "AUTH_CHALLENGE",
            });
        }
        // §4.3/§4.4: an initiator that does not authenticate ignores the challenge and just
        // sends NETINFO (when the responder's NETINFO arrives). One that does answers now,
        // if the responder accepts method 3; otherwise it goes on unauthenticated, as C
        // tor does.
        self.got_auth_challenge = true;
        if self.auth.is_some() && a.methods.contains(&AUTH_METHOD_ED25519) {
            self.send_authentication(now);
        }
        Ok(())
    }

    fn on_authenticate(
        &mut self,
        a: &onion_cell::chancell::Authenticate<'_>,
    ) -> Result<(), ChanError> {
        if !self.got_certs {
            return Err(ChanError::UnexpectedCell {
                cmd: "AUTHENTICATE",
                state: "awaiting NETINFO before CERTS",
            });
        }
        if self.got_authenticate {
            return Err(ChanError::DuplicateCell {
                cmd: "AUTHENTICATE",
            });
        }
        self.got_authenticate = true;
        let Some(r) = self.resp_auth.as_mut() else {
            return Ok(());
        };
        if a.auth_type != 3 {
            // We offered only method 3 (§4.4: responders must not accept an AuthType they
            // did not offer).
            return Err(ChanError::AuthenticateRejected {
                reason: "AuthType not offered in AUTH_CHALLENGE",
            });
        }
        if a.auth.len() < AUTH3_SIGNED_LEN + 64 {
            return Err(ChanError::AuthenticateRejected {
                reason: "Authentication field too short",
            });
        }
        if r.exporter.is_some() {
            let body = a.auth.to_vec();
            self.check_authenticate(&body)
        } else {
            r.pending = Some(a.auth.to_vec());
            Ok(())
        }
    }

    /// True while an AUTHENTICATE cell waits for [`Channel::provide_tls_exporter`]: input
    /// is not consumed meanwhile.
    fn waiting_for_exporter(&self) -> bool {
        self.resp_auth.as_ref().is_some_and(|r| r.pending.is_some())
    }

    /// The context of the TLS exporter value a responder with
    /// [`ChanConfig::verify_initiator_auth`] needs, once the initiator's CERTS cell has been
    /// verified and until the value is given with [`Channel::provide_tls_exporter`]: the
    /// initiator's CID (SHA-256 of its RSA identity key). Check it after draining events;
    /// while an AUTHENTICATE cell waits for the value, input is not consumed.
    pub fn tls_exporter_needed(&self) -> Option<[u8; 32]> {
        let r = self.resp_auth.as_ref()?;
        if r.exporter.is_some() || self.closed.is_some() {
            return None;
        }
        r.proof.map(|p| p.rsa_key_sha256)
    }

    /// Gives a responder the TLS exporter value asked for by
    /// [`Channel::tls_exporter_needed`]: the RFC 5705 exporter of this TLS connection with
    /// label [`TLS_EXPORTER_LABEL`], that context, and length 32. A pending
    /// AUTHENTICATE cell is then checked; if it is wrong the channel closes and
    /// [`ChanError::AuthenticateRejected`] arrives once, as [`ChanEvent::Closed`]. A value
    /// nobody asked for, or given to a closed channel, is ignored.
    pub fn provide_tls_exporter(&mut self, exporter: [u8; 32]) {
        if self.closed.is_some() {
            return;
        }
        let Some(r) = self.resp_auth.as_mut() else {
            return;
        };
        r.exporter = Some(exporter);
        let Some(body) = r.pending.take() else {
            return;
        };
        if let Err(e) = self.check_authenticate(&body) {
            self.close_with(e);
        }
    }

    /// Checks an AUTHENTICATE body of type 3 (tor-spec §4.4.2): TYPE through TLSSECRETS
    /// must be exactly what we compute, and SIG (the last 64 bytes) must be the
    /// authentication key's signature over everything before it.
    fn check_authenticate(&mut self, body: &[u8]) -> Result<(), ChanError> {
        let reject = |reason| ChanError::AuthenticateRejected { reason };
        let own = self
            .responder_certs
            .as_ref()
            .and_then(ResponderCerts::auth_fields)
            .ok_or(reject("our own certificates do not decode"))?;
        let Some(r) = self.resp_auth.as_ref() else {
            return Ok(());
        };
        let proof = r.proof.ok_or(reject("no verified CERTS"))?;
        let exporter = r.exporter.ok_or(reject("no TLS exporter value"))?;
        let (sid, sid_ed, scert) = own;
        let mut expected = Vec::with_capacity(AUTH3_SIGNED_LEN);
        expected.extend_from_slice(AUTH_TYPE_3);
        expected.extend_from_slice(&proof.rsa_key_sha256);
        expected.extend_from_slice(&sid);
        expected.extend_from_slice(proof.ed.as_bytes());
        expected.extend_from_slice(sid_ed.as_bytes());
        expected.extend_from_slice(&r.slog.clone().finalize());
        expected.extend_from_slice(&r.clog.clone().finalize());
        expected.extend_from_slice(&scert);
        expected.extend_from_slice(&exporter);
        let got = body.get(..expected.len()).unwrap_or(&[]);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(got, &expected[..])) {
            return Err(reject("a field from TYPE to TLSSECRETS is not as expected"));
        }
        let split = body.len().saturating_sub(64);
        let (signed, sig) = body.split_at(split);
        let sig: [u8; 64] = sig.try_into().map_err(|_| reject("no signature"))?;
        let key = onion_crypto::Ed25519Identity(proof.leaf_key)
            .to_public_key()
            .map_err(|_| reject("authentication key is not a valid ed25519 key"))?;
        key.verify_strict(
            signed,
            &onion_crypto::keys::Ed25519Signature::from_bytes(&sig),
        )
        .map_err(|_| reject("bad signature"))?;
        self.verified = PeerIds::new(proof.rsa, proof.ed);
        Ok(())
    }

    fn on_netinfo(&mut self, now: Instant, n: &Netinfo<'_>) -> Result<(), ChanError> {
        if !matches!(self.state, State::AwaitNetinfo) {
            self.dropped_cells += 1;
            return Ok(());
        }
        let clock_skew_secs = if n.timestamp == 0 {
            None
        } else {
            let ours = i64::try_from(self.wall_now(now)).unwrap_or(i64::MAX);
            Some(i64::from(n.timestamp).saturating_sub(ours))
        };
        let authenticated = self.auth.as_ref().is_some_and(|a| a.done);
        if self.role == Role::Initiator && !authenticated {
            // §4: "If it does not want to authenticate, it MUST send a NETINFO cell."
            let body = Netinfo {
                timestamp: 0, // §4.5: "Clients SHOULD send "0" as their timestamp"
                other_addr: netinfo_addr(self.config.peer_addr),
                my_addrs: Vec::new(),
            };
            self.queue_cell(CircId::ZERO, &ChanMsg::Netinfo(body));
        }
        self.state = State::Open;
        self.deadline = None;
        self.keepalive_at = self.config.keepalive.and_then(|k| now.checked_add(k));
        self.events.push_back(ChanEvent::Open(ChanOpen {
            link_version: self.format.version().unwrap_or(0),
            peer: self.verified,
            clock_skew_secs,
            our_addr_seen_by_peer: n.other_addr.ip(),
            peer_addrs: n.my_addrs.iter().filter_map(NetinfoAddr::ip).collect(),
            we_authenticated: authenticated,
        }));
        Ok(())
    }

    fn accepts_inbound(&self) -> bool {
        self.config
            .accept_inbound_circuits
            .unwrap_or(self.role == Role::Responder)
    }

    fn wide_ids(&self) -> bool {
        self.format.circ_id_len() == 4
    }

    fn on_circuit_cell(&mut self, id: CircId, msg: ChanMsg<'_>) -> Result<(), ChanError> {
        let cmd = msg.cmd();
        if id.is_zero() {
            return Err(ChanError::CircuitCellOnIdZero { cmd: cmd_name(cmd) });
        }
        let entry = self.circs.get_hot(id);
        if is_create(cmd) {
            if entry.is_some() {
                // C tor: "Received CREATE cell for known circ. Dropping."
                self.dropped_cells += 1;
                return Ok(());
            }
            if !self.accepts_inbound() {
                // A client answers CREATE with DESTROY (C tor does, with reason PROTOCOL).
                self.queue_destroy(id, DestroyReason::PROTOCOL);
                return Ok(());
            }
            let peer_is_initiator = self.role == Role::Responder;
            if !circmap::peer_may_allocate(id, self.wide_ids(), peer_is_initiator) {
                // §5.1.1: wrong half of the id space; "implementations MAY decide to
                // refuse in case of a violation".
                self.queue_destroy(id, DestroyReason::PROTOCOL);
                return Ok(());
            }
            if !self.circs.insert(id, CircOrigin::Remote) {
                self.queue_destroy(id, DestroyReason::RESOURCELIMIT);
                return Ok(());
            }
            self.push_circ_event(id, msg);
            return Ok(());
        }
        let Some(entry) = entry else {
            // §5.5.1 and §5.4: cells for unknown (or already destroyed) circuits are dropped.
            self.dropped_cells += 1;
            return Ok(());
        };
        if cmd == ChanCmd::DESTROY {
            self.circs.remove(id);
            self.push_circ_event(id, msg);
            return Ok(());
        }
        // CREATED* answers our pending CREATE*; RELAY / RELAY_EARLY need an open circuit.
        let created = is_created(cmd);
        let allowed = if created {
            entry.origin == CircOrigin::Local && entry.state == CircState::Pending
        } else {
            entry.state == CircState::Open
        };
        if !allowed {
            self.kill_circuit(
                id,
                CircViolation::WrongState {
                    cmd: cmd_name(cmd),
                    state: state_name(entry.origin, entry.state),
                },
            );
            return Ok(());
        }
        if created {
            self.circs.set_open(id);
        }
        self.push_circ_event(id, msg);
        Ok(())
    }

    fn push_circ_event(&mut self, circ_id: CircId, msg: ChanMsg<'_>) {
        use onion_cell::chancell::RelayPayload::{Borrowed, Owned};
        let msg = match msg {
            ChanMsg::Relay(Borrowed(b)) => ChanMsg::Relay(Owned(self.bodies.copy_of(b))),
            ChanMsg::RelayEarly(Borrowed(b)) => ChanMsg::RelayEarly(Owned(self.bodies.copy_of(b))),
            m => m.into_owned(),
        };
        self.events
            .push_back(ChanEvent::CircuitCell { circ_id, msg });
    }

    /// Exchange the channel's spare cell bodies with `pool`'s: the RELAY cells this
    /// channel receives while it holds a pool are copied into its bodies before any fresh
    /// allocation. A relay that forwards cells lends its pool around
    /// [`Channel::handle_input`] and takes it back, and puts every body it has sent
    /// ([`BodyPool::put_msg`]) into it. A channel holds none of its own.
    pub fn swap_body_pool(&mut self, pool: &mut BodyPool) {
        core::mem::swap(&mut self.bodies, pool);
    }

    fn kill_circuit(&mut self, id: CircId, reason: CircViolation) {
        self.circs.remove(id);
        self.queue_destroy(id, DestroyReason::PROTOCOL);
        self.events.push_back(ChanEvent::CircuitKilled {
            circ_id: id,
            reason,
        });
    }

    fn queue_destroy(&mut self, id: CircId, reason: DestroyReason) {
        self.queue_cell(id, &ChanMsg::Destroy(reason));
    }

    /// Encodes a cell we generate ourselves. Our own cells always encode; a failure would
    /// be a bug, and is dropped rather than panicking.
    fn queue_cell(&mut self, id: CircId, msg: &ChanMsg<'_>) {
        let cell = ChanCell {
            circ_id: id,
            msg: msg.clone(),
        };
        let before = self.outbuf.len();
        if encode_cell(self.format, &cell, &mut self.outbuf).is_err() {
            self.outbuf.truncate(before);
        }
    }

    fn queue_versions(&mut self) {
        // The VERSIONS cell always uses 2-byte circuit ids (§3, §4.1).
        let cell = ChanCell {
            circ_id: CircId::ZERO,
            msg: ChanMsg::Versions(Versions {
                versions: LINK_VERSIONS.to_vec(),
            }),
        };
        let before = self.outbuf.len();
        if encode_cell(CellFormat::UNNEGOTIATED, &cell, &mut self.outbuf).is_err() {
            self.outbuf.truncate(before);
        }
        self.log_sent(before);
    }

    /// Adds the bytes queued since `before` to the CLOG transcript of an authenticating
    /// initiator (before AUTHENTICATE).
    fn log_sent(&mut self, before: usize) {
        if let Some(a) = self.auth.as_mut() {
            if !a.done {
                a.clog.update(self.outbuf.get(before..).unwrap_or(&[]));
            }
        }
    }

    /// Sends CERTS, AUTHENTICATE and NETINFO (tor-spec §4: "If it does want to
    /// authenticate, it MUST send a CERTS cell, an AUTHENTICATE cell (4.4), and a
    /// NETINFO"), in answer to an AUTH_CHALLENGE offering method 3.
    fn send_authentication(&mut self, now: Instant) {
        let Some(mut a) = self.auth.take() else {
            return;
        };
        let Some((sid, sid_ed)) = a.peer else {
            self.auth = Some(a);
            return;
        };
        let before = self.outbuf.len();
        let certs = ChanMsg::Certs(certs::initiator_certs_cell(&a.auth.credentials));
        self.queue_cell(CircId::ZERO, &certs);
        a.clog.update(self.outbuf.get(before..).unwrap_or(&[]));
        let creds = &a.auth.credentials;
        let mut body = Vec::with_capacity(352);
        body.extend_from_slice(AUTH_TYPE_3);
        body.extend_from_slice(creds.rsa_key_sha256());
        body.extend_from_slice(&sid);
        body.extend_from_slice(creds.ed25519_identity().as_bytes());
        body.extend_from_slice(sid_ed.as_bytes());
        body.extend_from_slice(&a.slog.clone().finalize());
        body.extend_from_slice(&a.clog.clone().finalize());
        body.extend_from_slice(&self.tls_cert_sha256.unwrap_or([0; 32]));
        body.extend_from_slice(&a.auth.tls_exporter);
        body.extend_from_slice(&a.rand);
        let sig = onion_crypto::keys::Ed25519Signer::sign(creds.auth_key(), &body);
        body.extend_from_slice(&sig.to_bytes());
        let msg = ChanMsg::Authenticate(onion_cell::chancell::Authenticate {
            auth_type: 3,
            auth: body.into(),
        });
        self.queue_cell(CircId::ZERO, &msg);
        a.done = true;
        self.auth = Some(a);
        self.queue_relay_netinfo(now);
    }

    /// NETINFO as a relay sends it: our time, the peer's address, our addresses.
    fn queue_relay_netinfo(&mut self, now: Instant) {
        let netinfo = Netinfo {
            timestamp: u32::try_from(self.wall_now(now)).unwrap_or(u32::MAX),
            other_addr: netinfo_addr(self.config.peer_addr),
            my_addrs: self
                .config
                .my_addrs
                .iter()
                .take(255)
                .map(|a| NetinfoAddr::Ip(*a))
                .collect(),
        };
        self.queue_cell(CircId::ZERO, &ChanMsg::Netinfo(netinfo));
    }

    /// The responder's CERTS, AUTH_CHALLENGE and NETINFO (§4: "The responder sends a
    /// VERSIONS cell, a CERTS cell …, an AUTH_CHALLENGE cell …, and a NETINFO cell").
    fn queue_responder_handshake(&mut self, now: Instant, before: usize) {
        if let Some(certs) = self.responder_certs.take() {
            let msg = ChanMsg::Certs(certs::responder_certs_cell(&certs));
            self.queue_cell(CircId::ZERO, &msg);
            self.responder_certs = Some(certs);
        }
        let challenge = ChanMsg::AuthChallenge(AuthChallenge {
            challenge: self.challenge,
            methods: vec![AUTH_METHOD_ED25519],
        });
        self.queue_cell(CircId::ZERO, &challenge);
        if let Some(r) = self.resp_auth.as_mut() {
            // SLOG: our VERSIONS, CERTS and AUTH_CHALLENGE (not NETINFO).
            r.slog.update(self.outbuf.get(before..).unwrap_or(&[]));
        }
        self.queue_relay_netinfo(now);
    }

    fn deadline_passed(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Tells the channel that time has passed. Closes it with
    /// [`ChanError::HandshakeTimeout`] if the handshake has not finished by its deadline;
    /// on an open channel with [`ChanConfig::keepalive`] set, queues a PADDING cell if
    /// nothing was transmitted during the last period (tor-spec §3: "If there is no other
    /// traffic, ORs and OPs send one another a PADDING cell every few minutes").
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if self.deadline_passed(now) {
            self.close_with(ChanError::HandshakeTimeout);
            return;
        }
        if let (Some(at), Some(period)) = (self.keepalive_at, self.config.keepalive) {
            if now >= at {
                if !self.sent_since_keepalive && self.outbuf.is_empty() {
                    self.queue_cell(CircId::ZERO, &ChanMsg::Padding);
                }
                self.sent_since_keepalive = false;
                self.keepalive_at = now.checked_add(period);
            }
        }
    }

    /// When to call [`Channel::handle_timeout`] next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            None
        } else {
            match (self.deadline, self.keepalive_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }

    /// Appends the bytes to write to TLS to `out`. Returns how many were appended, or
    /// `None` if there is nothing to send.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        if self.outbuf.is_empty() {
            return None;
        }
        let n = self.outbuf.len();
        self.sent_since_keepalive = true;
        if out.is_empty() {
            core::mem::swap(out, &mut self.outbuf);
        } else {
            out.append(&mut self.outbuf);
        }
        Some(n)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ChanEvent> {
        self.events.pop_front()
    }

    /// Tells the channel that the TLS connection ended (EOF or error): the channel closes
    /// with [`ChanError::ConnectionClosed`] (the circuit layer sees [`ChanEvent::Closed`]).
    pub fn handle_connection_closed(&mut self) {
        if self.closed.is_none() {
            self.close_with(ChanError::ConnectionClosed);
        }
    }

    /// Closes the channel: every circuit on it is gone (tor-spec §5.4, CHANNEL_CLOSED).
    /// Queues [`ChanEvent::Closed`]; pending outbound bytes are discarded.
    pub fn close(&mut self) {
        if self.closed.is_none() {
            self.close_with(ChanError::ClosedLocally);
        }
    }

    fn close_with(&mut self, e: ChanError) {
        self.state = State::Closed;
        self.deadline = None;
        self.keepalive_at = None;
        self.outbuf.clear();
        self.inbuf.clear();
        self.circs.clear();
        self.closed = Some(e.clone());
        self.events.push_back(ChanEvent::Closed(e));
    }

    /// Reserves a fresh circuit id for a circuit we are about to create (tor-spec §5.1.1):
    /// random, nonzero, unused, with the most significant bit set on the initiator side and
    /// clear on the responder side. Send CREATE2 (or CREATE_FAST) on it next.
    pub fn new_circ_id(&mut self, rng: &mut impl CryptoRngCore) -> Result<CircId, SendError> {
        self.check_open()?;
        let high = self.role == Role::Initiator;
        self.circs
            .allocate(self.wide_ids(), high, rng)
            .ok_or(SendError::CircIdsExhausted)
    }

    fn check_open(&self) -> Result<(), SendError> {
        match self.state {
            State::Open => Ok(()),
            State::Closed => Err(SendError::Closed),
            _ => Err(SendError::NotOpen),
        }
    }

    /// Queues a circuit message: CREATE*/CREATED*/RELAY/RELAY_EARLY/DESTROY on a circuit
    /// id, or PADDING/VPADDING/PADDING_NEGOTIATE on id 0.
    ///
    /// The circuit map follows: CREATE* is allowed on an id from [`Channel::new_circ_id`],
    /// CREATED* on an id the peer created (which opens it), RELAY on an open circuit, and
    /// DESTROY on any circuit in use (which forgets it).
    pub fn send(&mut self, circ_id: CircId, msg: &ChanMsg<'_>) -> Result<(), SendError> {
        self.check_open()?;
        if self.outbuf.len() >= self.config.max_outbound_bytes {
            return Err(SendError::QueueFull);
        }
        let cmd = msg.cmd();
        let name = cmd_name(cmd);
        if matches!(
            cmd,
            ChanCmd::PADDING | ChanCmd::VPADDING | ChanCmd::PADDING_NEGOTIATE
        ) {
            return self.encode_out(CircId::ZERO, msg);
        }
        if !is_circuit_cmd(cmd) {
            return Err(SendError::NotACircuitMessage { cmd: name });
        }
        let entry = self
            .circs
            .get_hot(circ_id)
            .ok_or(SendError::UnknownCircuit(circ_id))?;
        let wrong = SendError::WrongCircuitState { circ_id, cmd: name };
        let ok = if is_create(cmd) {
            entry.origin == CircOrigin::Local && entry.state == CircState::Pending
        } else if is_created(cmd) {
            entry.origin == CircOrigin::Remote && entry.state == CircState::Pending
        } else if cmd == ChanCmd::DESTROY {
            true
        } else {
            entry.state == CircState::Open
        };
        if !ok {
            return Err(wrong);
        }
        self.encode_out(circ_id, msg)?;
        if is_created(cmd) {
            self.circs.set_open(circ_id);
        } else if cmd == ChanCmd::DESTROY {
            self.circs.remove(circ_id);
        }
        Ok(())
    }

    /// Forgets a circuit id without sending anything (for example an id from
    /// [`Channel::new_circ_id`] that was never used). Returns whether it was in use.
    pub fn release_circ_id(&mut self, circ_id: CircId) -> bool {
        self.circs.remove(circ_id).is_some()
    }

    fn encode_out(&mut self, circ_id: CircId, msg: &ChanMsg<'_>) -> Result<(), SendError> {
        // RELAY cells are the bulk of the traffic: write them without copying the body
        // into a temporary message.
        if let ChanMsg::Relay(p) | ChanMsg::RelayEarly(p) = msg {
            self.write_circ_id(circ_id)?;
            self.outbuf.push(msg.cmd().0);
            self.outbuf.extend_from_slice(p.as_bytes());
            return Ok(());
        }
        let cell = ChanCell {
            circ_id,
            msg: msg.clone(),
        };
        let before = self.outbuf.len();
        encode_cell(self.format, &cell, &mut self.outbuf).map_err(|e| {
            self.outbuf.truncate(before);
            SendError::Encode(e)
        })
    }
}

impl Channel {
    fn write_circ_id(&mut self, circ_id: CircId) -> Result<(), SendError> {
        let id = circ_id.get();
        if self.format.circ_id_len() == 4 {
            self.outbuf.extend_from_slice(&id.to_be_bytes());
        } else {
            let id16 = u16::try_from(id).map_err(|_| {
                SendError::Encode(onion_cell::Error::BadValue {
                    field: "CircID",
                    value: u64::from(id),
                })
            })?;
            self.outbuf.extend_from_slice(&id16.to_be_bytes());
        }
        Ok(())
    }

    /// Queues a RELAY (or, with `early`, RELAY_EARLY) cell with an already encrypted
    /// 509-byte body on an open circuit: the same as [`Channel::send`] with
    /// [`ChanMsg::Relay`], without building a message.
    pub fn send_relay(
        &mut self,
        circ_id: CircId,
        early: bool,
        body: &[u8; onion_cell::chancell::CELL_BODY_LEN],
    ) -> Result<(), SendError> {
        self.check_open()?;
        if self.outbuf.len() >= self.config.max_outbound_bytes {
            return Err(SendError::QueueFull);
        }
        let cmd = if early {
            ChanCmd::RELAY_EARLY
        } else {
            ChanCmd::RELAY
        };
        match self.circs.get_hot(circ_id) {
            None => return Err(SendError::UnknownCircuit(circ_id)),
            Some(e) if e.state != CircState::Open => {
                return Err(SendError::WrongCircuitState {
                    circ_id,
                    cmd: cmd_name(cmd),
                })
            }
            Some(_) => {}
        }
        self.write_circ_id(circ_id)?;
        self.outbuf.push(cmd.0);
        self.outbuf.extend_from_slice(body);
        Ok(())
    }
}

fn state_name(origin: CircOrigin, state: CircState) -> &'static str {
    match (origin, state) {
        (CircOrigin::Local, CircState::Pending) => "waiting for CREATED",
        (CircOrigin::Remote, CircState::Pending) => "created by peer, not answered",
        (_, CircState::Open) => "open",
    }
}

fn decode_error(e: DecodeError) -> onion_cell::Error {
    match e {
        DecodeError::Malformed(e) => e,
        DecodeError::NeedMore { need } => onion_cell::Error::Truncated {
            field: "cell",
            need,
        },
        _ => onion_cell::Error::Unsupported {
            what: "cell framing",
        },
    }
}

fn read_circ_id(format: CellFormat, bytes: &[u8]) -> CircId {
    let v = if format.circ_id_len() == 4 {
        bytes
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    } else {
        bytes
            .get(..2)
            .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])))
    };
    CircId::new(v.unwrap_or(0))
}
