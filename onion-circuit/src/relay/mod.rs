//! The relay side of a circuit: one hop's view (tor-spec §5.1–5.6, §6, §7.3–7.4).
//!
//! A [`RelayCircuit`] is born from a CREATE2 (ntor or ntor-v3) or CREATE_FAST cell, answered
//! with the relay's keys ([`RelayCircuit::accept`]). Afterwards it sits between two channels:
//! the *client side* (previous hop, where the CREATE came from) and, once extended, the *next
//! side*. Cells from the client side lose one tor1 layer; cells this relay recognises are
//! handled here, the others are forwarded to the next hop. Cells from the next side gain one
//! layer and go back toward the client.
//!
//! Decisions that need the outside world are events for the embedding:
//!
//! * EXTEND2 → [`RelayEvent::Extend`]: open or reuse a channel to the named relay, check its
//!   identities, allocate a circuit id there and send the CREATE2 it carries; feed the
//!   CREATED2 back with [`RelayCircuit::handle_from_next`] (it becomes EXTENDED2), or call
//!   [`RelayCircuit::extend_failed`].
//! * BEGIN → [`RelayEvent::Begin`]: apply the exit policy, connect, then
//!   [`RelayCircuit::connected`] or [`RelayCircuit::end_stream`]. DATA then flows with
//!   [`StreamEvent::Data`] and [`RelayCircuit::send`].
//! * BEGIN_DIR → [`RelayEvent::BeginDir`], answered by the embedding's directory service.
//! * RESOLVE → [`RelayEvent::Resolve`], answered with [`RelayCircuit::resolved`].
//!
//! Run loop, as for the client circuit: inputs with `now` ([`RelayCircuit::handle_from_client`],
//! [`RelayCircuit::handle_from_next`], [`RelayCircuit::handle_timeout`], which return
//! nothing), then drain [`RelayCircuit::poll_cell`] (each output says which side it goes to)
//! and [`RelayCircuit::poll_event`] before sleeping until [`RelayCircuit::poll_timeout`]. A
//! cell that breaks the protocol closes the circuit: DESTROY goes toward the client with the
//! reason its error's kind gives ([`RelayError::destroy_reason`], tor-spec §5.4) and the error
//! arrives once, as [`RelayEvent::Closed`]. Commands (`send`, `connected`, `end_stream`, ...)
//! return an `Err` only for the caller's mistakes and leave the circuit as it was.
//!
//! ```
//! use onion_circuit::relay::{RelayCircuit, RelayEvent, RelayOutput};
//! use onion_circuit::Instant;
//! use onion_cell::chancell::ChanMsg;
//!
//! /// One turn of an exit's circuit: a cell from the client side, then every output.
//! fn turn(
//!     rc: &mut RelayCircuit,
//!     now: Instant,
//!     from_client: Option<ChanMsg<'_>>,
//!     to_client: &mut Vec<ChanMsg<'static>>,
//!     to_next: &mut Vec<ChanMsg<'static>>,
//!     rng: &mut impl rand_core::CryptoRngCore,
//! ) -> Option<Instant> {
//!     if let Some(msg) = from_client {
//!         rc.handle_from_client(now, msg);
//!     }
//!     if rc.poll_timeout().is_some_and(|t| t <= now) {
//!         rc.handle_timeout(now);
//!     }
//!     while let Some(out) = rc.poll_cell(rng) {
//!         match out {
//!             RelayOutput::ToClient(m) => to_client.push(m),
//!             RelayOutput::ToNext(m) => to_next.push(m),
//!         }
//!     }
//!     while let Some(ev) = rc.poll_event() {
//!         match ev {
//!             // The one report of a fatal error; its DESTROY is already in `to_client`.
//!             RelayEvent::Closed { error } => {
//!                 if let Some(e) = error {
//!                     eprintln!("circuit closed ({}): {e}", e.kind());
//!                 }
//!                 return None;
//!             }
//!             // Extend, Begin, BeginDir, Resolve, Data, StreamEnded, Msg: act on them.
//!             _ => {}
//!         }
//!     }
//!     rc.poll_timeout()
//! }
//! ```
//!
//! Congestion control (proposal 324): a relay configured to support it
//! ([`RelayConfig::congestion_control`], advertised as `FlowCtrl=2`) answers an ntor-v3
//! CREATE2 whose client message carries the request extension with the response extension
//! and its `sendme_inc` (§4.1, proposal 332), and then runs Tor Vegas for what it sends toward
//! the client when the circuit ends here: the congestion window replaces the fixed package
//! window, a SENDME goes back every `sendme_inc` DATA cells received and is expected every
//! `sendme_inc` sent, streams have no windows and no stream SENDMEs, and XON/XOFF with the
//! rate advisory (§4.1.1) stop and pace them ([`RelayCircuit::note_stream_buffer`]). A circuit
//! that is later extended only forwards: nothing of this applies to cells passing through.

mod splice;

#[cfg(test)]
mod cc_tests;

pub use self::splice::{KH_LEN, MAX_SPLICE_QUEUE};

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use onion_cell::chancell::{ChanCmd, ChanMsg, Create2, Created2, DestroyReason, HandshakeType};
use onion_cell::extension::{CcRequest, CcResponse, ExtBody, ExtList};
use onion_cell::linkspec::LinkSpec;
use onion_cell::reader::Reader;
use onion_cell::relay::RelayCell;
use onion_cell::relaymsg::{
    BeginFlags, Connected, End, EndReason, Extended2, RelayCmd, RelayMsg, Resolved, ResolvedAnswer,
    Sendme,
};
use onion_crypto::keys::NtorSecretKey;
use onion_crypto::ntor_v3::{NtorV3Server, CIRCUIT_EXTEND_VERIFICATION};
use onion_crypto::tor1::{self, CellBody, Tor1RelayCrypto};
use onion_crypto::{fast, ntor, Ed25519Identity, KeyGenerator, RsaIdentity};
use rand_core::CryptoRngCore;

use crate::cc::flowctl::FlowCtrlParams;
use crate::cc::{CcConfig, CcError, CongestionControl};
use crate::channel::BodyPool;
use crate::circuit::{data_body, data_bytes, data_cell_header, encode_body, pad_body};
use crate::error::ErrorKind;
use crate::flow::{sendme_tag, CircRecvWindow, FlowError, FlowStats, SendmeTag};
use crate::sendme::{CircSender, SendmeError};
use crate::stream::{
    flow_signal_msg, Admit, Stream, StreamError, StreamEvent, StreamId, StreamMap, StreamState,
};
use crate::Instant;

/// Most RELAY_EARLY cells accepted from the client side (tor-spec §5.6: "more than 8 …
/// SHOULD close the circuit").
pub const MAX_RELAY_EARLY_IN: u8 = 8;

/// How long an exit stream we ended stays half-closed by default (see
/// [`RelayCircuit::set_half_closed_timeout`]).
pub const DEFAULT_HALF_CLOSED_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(60);

/// A relay's long-term keys as circuit handshakes need them.
#[derive(Clone)]
pub struct RelayKeys {
    /// SHA-1 of the RSA identity key (ntor NODEID).
    pub rsa_id: RsaIdentity,
    /// The ed25519 identity (ntor-v3 ID).
    pub ed_id: Ed25519Identity,
    /// The ntor onion keys held: current first, then the previous one (either is accepted).
    pub ntor_keys: Vec<NtorSecretKey>,
}

impl core::fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RelayKeys")
            .field("rsa_id", &self.rsa_id)
            .field("ed_id", &self.ed_id)
            .finish_non_exhaustive()
    }
}

/// Why a relay circuit refused a cell or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The CREATE cell is not one we accept (TAP, unknown handshake type, or not a CREATE).
    #[error("unsupported create: {0}")]
    UnsupportedCreate(&'static str),
    /// The client's handshake did not verify (wrong key id, bad MAC, wrong length...).
    #[error("handshake failed: {0}")]
    Handshake(#[from] onion_crypto::HandshakeError),
    /// A cell not valid in the circuit's state or direction (the client side's fault).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A call the circuit's state rules out (the caller's fault; the circuit is unchanged).
    #[error("misuse: {0}")]
    Misuse(&'static str),
    /// A bounded queue is full: the circuit closes rather than grow it.
    #[error("queue full: {0}")]
    QueueFull(&'static str),
    /// A failure of our own (a message we build did not encode).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// An unexpected channel cell.
    #[error("unexpected {0:?} cell")]
    UnexpectedCell(ChanCmd),
    /// An unexpected relay message.
    #[error("unexpected relay {0:?} message")]
    UnexpectedMsg(RelayCmd),
    /// A relay cell addressed to us did not decode.
    #[error("malformed relay cell: {0}")]
    Malformed(onion_cell::Error),
    /// The ntor-v3 client message is not an extension list (proposal 332).
    #[error("malformed ntor-v3 client extensions: {0}")]
    BadExtensions(onion_cell::Error),
    /// The client broke flow control.
    #[error("flow control: {0}")]
    Flow(#[from] FlowError),
    /// The client broke congestion control (a SENDME for nothing in flight).
    #[error(transparent)]
    Cc(#[from] CcError),
    /// A stream-level violation.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream does not exist or is not open.
    #[error("no open stream {0}")]
    NoSuchStream(StreamId),
    /// The circuit is closed.
    #[error("circuit is closed")]
    Closed,
    /// A message could not be encoded.
    #[error("cannot encode {what}: {err}")]
    Encode {
        /// What.
        what: &'static str,
        /// Why.
        err: onion_cell::Error,
    },
}

impl From<crate::circuit::CircError> for RelayError {
    fn from(e: crate::circuit::CircError) -> Self {
        match e {
            crate::circuit::CircError::Encode { what, err } => RelayError::Encode { what, err },
            _ => RelayError::Internal("encoding a relay message"),
        }
    }
}

impl RelayError {
    /// Who is to blame: the client side ([`ErrorKind::PeerProtocol`]), the caller
    /// ([`ErrorKind::Misuse`]), a missing feature, a full queue, or ourselves.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RelayError::UnsupportedCreate(_) => ErrorKind::Unsupported,
            RelayError::Handshake(_)
            | RelayError::Protocol(_)
            | RelayError::UnexpectedCell(_)
            | RelayError::UnexpectedMsg(_)
            | RelayError::Malformed(_)
            | RelayError::BadExtensions(_)
            | RelayError::Flow(_)
            | RelayError::Cc(_)
            | RelayError::Stream(_) => ErrorKind::PeerProtocol,
            RelayError::Misuse(_) | RelayError::NoSuchStream(_) => ErrorKind::Misuse,
            RelayError::QueueFull(_) => ErrorKind::Resource,
            RelayError::Closed => ErrorKind::Closed,
            RelayError::Internal(_) | RelayError::Encode { .. } => ErrorKind::Internal,
        }
    }

    /// The DESTROY reason to send toward the client for this error (tor-spec §5.4),
    /// from its [`RelayError::kind`]: PROTOCOL only for the client side's violations.
    pub fn destroy_reason(&self) -> DestroyReason {
        self.kind().destroy_reason()
    }
}

/// What a relay offers its circuits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayConfig {
    /// Congestion control (proposal 324), for a relay that advertises `FlowCtrl=2`: the
    /// consensus parameters for exit circuits (`cc_vegas_*_exit` and the rest, as C tor's
    /// relay runs them) with `sendme_inc` the consensus `cc_sendme_inc`, which the response
    /// extension carries. `None` (the default): requests are answered with an empty
    /// extension list and every circuit runs fixed windows (tor-spec §7.3), as a relay that
    /// does not implement it must.
    pub congestion_control: Option<CcConfig>,
    /// Stream flow control on congestion-controlled circuits (`cc_xoff_exit`, `cc_xon_*`).
    pub flow_control: FlowCtrlParams,
}

/// Where the relay should connect to extend the circuit (from the EXTEND2 link specifiers,
/// tor-spec §5.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendRequest {
    /// The next relay's RSA identity digest (required, as C tor requires it).
    pub rsa_id: RsaIdentity,
    /// Its ed25519 identity, if given (all-zero means "not given", tor-spec §5.3).
    pub ed_id: Option<Ed25519Identity>,
    /// The addresses given (the first of each family is the one to use).
    pub addrs: Vec<SocketAddr>,
    /// The CREATE2 to send on the new circuit once the channel is open.
    pub create: ChanMsg<'static>,
}

/// Something the embedding must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// EXTEND2: connect to the next relay and send it the CREATE2.
    Extend(ExtendRequest),
    /// BEGIN: connect `stream` to `host:port` if the exit policy allows.
    Begin {
        /// The stream.
        stream: StreamId,
        /// Hostname or address.
        host: String,
        /// Port.
        port: u16,
        /// The client's address-family preferences.
        flags: BeginFlags,
    },
    /// BEGIN_DIR: attach `stream` to the relay's directory service.
    BeginDir {
        /// The stream.
        stream: StreamId,
    },
    /// RESOLVE: look `query` up and answer with [`RelayCircuit::resolved`].
    Resolve {
        /// The id to answer on.
        stream: StreamId,
        /// The name.
        query: String,
    },
    /// DATA from the client on an exit stream, or the client ending one (RELAY_END), as the
    /// client's circuit end reports them too.
    Stream(StreamEvent),
    /// A recognised message the circuit does not handle itself (onion-service messages).
    Msg {
        /// Stream id (`None` for circuit-level).
        stream: Option<StreamId>,
        /// The message (boxed: rare and large).
        msg: Box<RelayMsg<'static>>,
    },
    /// The circuit is closed; every exit stream is gone. The last event of the circuit.
    Closed {
        /// The error that closed it, if we did (none after a DESTROY or
        /// [`RelayCircuit::extend_failed`]): the one place a fatal error is reported.
        error: Option<RelayError>,
    },
}

/// A cell for one of the circuit's two channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOutput {
    /// For the channel toward the client (the previous hop).
    ToClient(ChanMsg<'static>),
    /// For the channel toward the next hop.
    ToNext(ChanMsg<'static>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    None,
    Extending,
    Open,
}

enum Inbound {
    /// Originated here: pad, digest, encrypt at poll time.
    Originated { body: Box<CellBody>, trigger: bool },
    /// Already a channel message (a forwarded, re-encrypted relay cell or a DESTROY).
    Ready(ChanMsg<'static>),
}

/// One relay's state for one circuit.
pub struct RelayCircuit {
    crypto: Tor1RelayCrypto,
    next: Next,
    /// Created with CREATE_FAST: we are surely the first hop (tor-spec §5.4).
    first_hop: bool,
    /// Our sending end toward the client: the package window, or the congestion window if
    /// negotiated at CREATE2.
    send: CircSender,
    /// Asks for a SENDME every 100 cells, or every `sendme_inc` under congestion control.
    recv: CircRecvWindow,
    streams: StreamMap,
    to_client: VecDeque<Inbound>,
    to_next: VecDeque<ChanMsg<'static>>,
    events: VecDeque<RelayEvent>,
    /// Bytes of the [`StreamEvent::Data`] in `events` (the embedding's memory accounting).
    event_data_bytes: usize,
    relay_early_seen: u8,
    closed: bool,
    our_rsa_id: RsaIdentity,
    /// KH and rendezvous joining (onion services, [`splice`]).
    hs: splice::HsHooks,
    stats: FlowStats,
    /// The latest `now` an input carried ([`RelayCircuit::end_stream`] takes none).
    last_now: Instant,
    /// How long a stream we ended stays half-closed.
    half_closed_timeout: core::time::Duration,
    /// Stream flow-control parameters (XON/XOFF, proposal 324 §4.1.1), in force when
    /// congestion control was negotiated.
    flow_control: FlowCtrlParams,
}

impl core::fmt::Debug for RelayCircuit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RelayCircuit")
            .field("next", &self.next)
            .field("streams", &self.streams.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Whether an ntor-v3 client message asks for congestion control (proposal 324 §4.1: the
/// `CC_FIELD_REQUEST` extension, other extensions ignored). A message that is not an
/// extension list fails the handshake, as in C tor (`congestion_control_parse_ext_request`,
/// which also ignores bytes after the list).
fn cc_requested(client_msg: &[u8]) -> Result<bool, RelayError> {
    let mut r = Reader::new(client_msg);
    let exts = ExtList::decode(&mut r).map_err(RelayError::BadExtensions)?;
    Ok(exts.find(CcRequest::EXT_TYPE).is_some())
}

fn relay_crypto(keys: &KeyGenerator) -> Result<Tor1RelayCrypto, RelayError> {
    let material = keys
        .expand(tor1::TOR1_KEY_LEN)
        .map_err(|e| RelayError::Handshake(onion_crypto::HandshakeError::Kdf(e)))?;
    Tor1RelayCrypto::from_key_material(&material)
        .map_err(|_| RelayError::UnsupportedCreate("tor1 key material"))
}

impl RelayCircuit {
    /// Answer a CREATE2 (ntor, ntor-v3) or CREATE_FAST cell with `keys` (tor-spec §5.1,
    /// §5.1.4, §5.1.5, proposal 332). Returns the circuit and the CREATED2 / CREATED_FAST to
    /// send back. On error, the embedding answers with DESTROY
    /// ([`RelayError::destroy_reason`]).
    pub fn accept(
        keys: &RelayKeys,
        create: &ChanMsg<'_>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(RelayCircuit, ChanMsg<'static>), RelayError> {
        Self::accept_with(keys, &RelayConfig::default(), create, now, rng)
    }

    /// [`RelayCircuit::accept`] with `config`: an ntor-v3 client message asking for congestion
    /// control (the `CC_FIELD_REQUEST` extension, type 1) is answered with the
    /// `CC_FIELD_RESPONSE` extension carrying our `sendme_inc` when
    /// [`RelayConfig::congestion_control`] is set, and the circuit then runs it (proposal
    /// 324 §4.1); otherwise, or without a request, with an empty extension list. A client
    /// message that is not an extension list fails the handshake, as in C tor.
    pub fn accept_with(
        keys: &RelayKeys,
        config: &RelayConfig,
        create: &ChanMsg<'_>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(RelayCircuit, ChanMsg<'static>), RelayError> {
        Self::accept_inner(keys, config, create, now, rng, None)
    }

    /// [`RelayCircuit::accept`] answering an ntor-v3 handshake with `server_msg`, whatever was
    /// asked (tests of the client's congestion-control negotiation); the circuit runs
    /// congestion control if `server_msg` carries a response extension.
    #[cfg(test)]
    pub(crate) fn accept_with_server_msg(
        keys: &RelayKeys,
        create: &ChanMsg<'_>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
        server_msg: &[u8],
    ) -> Result<(RelayCircuit, ChanMsg<'static>), RelayError> {
        let config = RelayConfig::default();
        Self::accept_inner(keys, &config, create, now, rng, Some(server_msg))
    }

    /// `forced_reply`: answer ntor-v3 with these bytes whatever was asked (tests only).
    fn accept_inner(
        keys: &RelayKeys,
        config: &RelayConfig,
        create: &ChanMsg<'_>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
        forced_reply: Option<&[u8]>,
    ) -> Result<(RelayCircuit, ChanMsg<'static>), RelayError> {
        let mut cc = None;
        let (kg, reply, first_hop) = match create {
            ChanMsg::Create2(c) if c.handshake_type == HandshakeType::NTOR => {
                let (reply, kg) = ntor::server(rng, &keys.rsa_id, &keys.ntor_keys, &c.hdata)?;
                let msg = ChanMsg::Created2(Created2 {
                    hdata: reply.to_vec().into(),
                });
                (kg, msg, false)
            }
            ChanMsg::Create2(c) if c.handshake_type == HandshakeType::NTOR_V3 => {
                let (pending, client_msg) = NtorV3Server::receive(
                    &keys.ed_id,
                    &keys.ntor_keys,
                    CIRCUIT_EXTEND_VERIFICATION,
                    &c.hdata,
                )?;
                let mut answer = ExtList::new();
                if cc_requested(&client_msg)? {
                    if let Some(cfg) = config.congestion_control {
                        answer
                            .push(&CcResponse {
                                sendme_inc: cfg.sendme_inc,
                            })
                            .map_err(|err| RelayError::Encode {
                                what: "congestion-control response",
                                err,
                            })?;
                        cc = Some(cfg);
                    }
                }
                let mut server_msg = Vec::with_capacity(8);
                answer
                    .encode(&mut server_msg)
                    .map_err(|err| RelayError::Encode {
                        what: "ntor-v3 server extensions",
                        err,
                    })?;
                if let Some(forced) = forced_reply {
                    // Run what the forced answer says was negotiated.
                    server_msg = forced.to_vec();
                    cc = ExtList::decode_all(forced)
                        .ok()
                        .and_then(|l| l.get::<CcResponse>()?.ok())
                        .map(|r| CcConfig {
                            sendme_inc: r.sendme_inc,
                            ..CcConfig::default()
                        });
                }
                let (reply, kg) = pending.reply(rng, &server_msg)?;
                (
                    kg,
                    ChanMsg::Created2(Created2 {
                        hdata: reply.into(),
                    }),
                    false,
                )
            }
            ChanMsg::Create2(_) => {
                return Err(RelayError::UnsupportedCreate("CREATE2 handshake type"))
            }
            ChanMsg::CreateFast(x) => {
                let (reply, kg) = fast::server(rng, x)?;
                let mut y = [0u8; 20];
                let mut kh = [0u8; 20];
                y.copy_from_slice(&reply[..20]);
                kh.copy_from_slice(&reply[20..]);
                (kg, ChanMsg::CreatedFast { y, kh }, true)
            }
            ChanMsg::Create(_) => return Err(RelayError::UnsupportedCreate("TAP CREATE")),
            other => return Err(RelayError::UnexpectedCell(other.cmd())),
        };
        let send = CircSender::new(false, cc.map(CongestionControl::new));
        let circ = RelayCircuit {
            crypto: relay_crypto(&kg)?,
            next: Next::None,
            first_hop,
            recv: send.deliver_window(),
            send,
            streams: StreamMap::new(),
            to_client: VecDeque::new(),
            to_next: VecDeque::new(),
            events: VecDeque::new(),
            event_data_bytes: 0,
            relay_early_seen: 0,
            closed: false,
            our_rsa_id: keys.rsa_id,
            hs: splice::HsHooks::new(&kg, &reply)?,
            stats: FlowStats::default(),
            last_now: now,
            half_closed_timeout: DEFAULT_HALF_CLOSED_TIMEOUT,
            flow_control: config.flow_control,
        };
        Ok((circ, reply))
    }

    /// The congestion control of this circuit, if negotiated (window, inflight, RTT).
    pub fn congestion_control(&self) -> Option<&CongestionControl> {
        self.send.congestion_control()
    }

    /// Tell the circuit whether the channel toward the client accepts more cells now:
    /// congestion control treats a blocked channel as congestion (C tor's "blocked on
    /// channel" signal to Vegas). Without congestion control this changes nothing.
    pub fn set_client_channel_blocked(&mut self, blocked: bool) {
        self.send.set_chan_blocked(blocked);
    }

    /// Cells waiting in this circuit for the channel toward the client
    /// ([`RelayCircuit::poll_to_client`]).
    pub fn queued_to_client(&self) -> usize {
        self.to_client.len()
    }

    /// Cells waiting in this circuit for the channel toward the next hop.
    pub fn queued_to_next(&self) -> usize {
        self.to_next.len()
    }

    /// Bytes of stream data received from the client that wait in this circuit's events
    /// ([`StreamEvent::Data`] not yet taken by [`RelayCircuit::poll_event`]). An embedding that
    /// holds the circuit's events (its stream buffer is full) counts them with its other
    /// queues, so that a client that goes on sending is bounded by its out-of-memory handler.
    pub fn queued_event_bytes(&self) -> usize {
        self.event_data_bytes
    }

    /// Whether the circuit is closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Flow-control counters of this hop as an endpoint (exit streams, SENDMEs).
    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Whether the circuit continues to a next hop (or is being extended).
    pub fn has_next(&self) -> bool {
        self.next != Next::None
    }

    /// Number of exit streams (half-closed ones included).
    pub fn n_streams(&self) -> usize {
        self.streams.len()
    }

    /// How long a stream ended with [`RelayCircuit::end_stream`] stays half-closed
    /// (default [`DEFAULT_HALF_CLOSED_TIMEOUT`]); applies to streams ended afterwards.
    pub fn set_half_closed_timeout(&mut self, d: core::time::Duration) {
        self.half_closed_timeout = d;
    }

    /// When [`RelayCircuit::handle_timeout`] must next be called: the end of the earliest
    /// half-closed window, or when a stream paced by an XON's rate may send a cell again
    /// (after [`RelayCircuit::send`] refused data for lack of it; the embedding then offers
    /// the data again).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let paced = self.streams.iter().filter_map(Stream::paced_until).min();
        match (self.streams.next_deadline(), paced) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handle the passing of time: half-closed streams whose window ended are forgotten
    /// (their ids become free; later cells for them are treated as for unknown streams,
    /// tor-spec §6.2.1). Nothing is reported: the embedding ended them itself.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if self.closed {
            return;
        }
        for s in self.streams.iter_mut() {
            s.unpace(now);
        }
        if !self.streams.expire(now).is_empty() {
            self.streams.shrink();
        }
    }

    /// Free this hop's expanded AES key schedules (2 × 704 bytes) while the circuit is idle;
    /// the next cell rebuilds them from the kept keys (about 50 ns each), so nothing
    /// observable changes. For an embedding that tracks idle circuits (a relay may carry
    /// thousands).
    pub fn compact(&mut self) {
        self.crypto.compact();
    }

    fn close(&mut self, error: Option<RelayError>, tell_client: bool, tell_next: bool) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.to_client.clear();
        self.to_next.clear();
        if tell_client {
            let reason = error
                .as_ref()
                .map_or(DestroyReason::DESTROYED, RelayError::destroy_reason);
            self.to_client
                .push_back(Inbound::Ready(ChanMsg::Destroy(reason)));
        }
        if tell_next && self.next != Next::None {
            // tor-spec §5.4: do not propagate the reason; use DESTROYED.
            self.to_next
                .push_back(ChanMsg::Destroy(DestroyReason::DESTROYED));
        }
        self.next = Next::None;
        self.end_all_streams();
        self.events.push_back(RelayEvent::Closed { error });
    }

    /// Report every stream the embedding still holds as ended (half-closed ones it already
    /// closed itself) and forget them.
    fn end_all_streams(&mut self) {
        self.events
            .extend(self.streams.destroy_all().map(RelayEvent::Stream));
    }

    /// Close the circuit on a fatal error found while handling a cell: DESTROY both ways
    /// (toward the client with the reason the error's kind gives,
    /// [`RelayError::destroy_reason`]), and the error reported once, in
    /// [`RelayEvent::Closed`].
    fn fail(&mut self, e: RelayError) {
        self.close(Some(e), true, true);
    }

    /// Handle a cell from the client side.
    ///
    /// Nothing is returned: a cell is never the caller's mistake. A cell that breaks the
    /// protocol closes the circuit: DESTROY goes toward the client with the reason the
    /// error's [`RelayError::kind`] gives (PROTOCOL for the client side's violations,
    /// RESOURCELIMIT for a full queue, tor-spec §5.4) and toward the next hop with
    /// DESTROYED, and the error arrives once, as [`RelayEvent::Closed`]. A DESTROY closes
    /// it without an error. A cell for a closed circuit is ignored.
    pub fn handle_from_client(&mut self, now: Instant, msg: ChanMsg<'_>) {
        self.handle_input(now, |c| c.on_from_client(msg));
    }

    /// Run `on` for an input at `now` on an open circuit (a closed one ignores its inputs):
    /// its error closes the circuit ([`RelayCircuit::fail`]).
    fn handle_input(&mut self, now: Instant, on: impl FnOnce(&mut Self) -> Result<(), RelayError>) {
        self.last_now = self.last_now.max(now);
        if self.closed {
            return;
        }
        if let Err(e) = on(self) {
            self.fail(e);
        }
    }

    /// [`RelayCircuit::handle_from_client`] on an open circuit; an error is fatal.
    fn on_from_client(&mut self, msg: ChanMsg<'_>) -> Result<(), RelayError> {
        let (payload, early) = match msg {
            ChanMsg::Relay(p) => (p, false),
            ChanMsg::RelayEarly(p) => {
                self.relay_early_seen = self.relay_early_seen.saturating_add(1);
                if self.relay_early_seen > MAX_RELAY_EARLY_IN {
                    return Err(RelayError::Protocol("more than 8 RELAY_EARLY cells"));
                }
                (p, true)
            }
            ChanMsg::Destroy(_) => {
                self.close(None, false, true);
                return Ok(());
            }
            ChanMsg::Padding | ChanMsg::Vpadding { .. } => return Ok(()),
            other => return Err(RelayError::UnexpectedCell(other.cmd())),
        };
        // The channel hands over an owned body: decrypt it in place and forward the same box.
        let mut body = payload.into_box();
        if self.crypto.decrypt_outbound(&mut body) {
            if body[onion_cell::relay::CMD_OFFSET] == RelayCmd::DATA.0 {
                // The bulk of an upload: handed to the embedding in the cell's own buffer.
                let (stream, len) = data_cell_header(&body).map_err(RelayError::Malformed)?;
                return self.on_data(stream, move || data_bytes(body, len));
            }
            let cell = RelayCell::decode(&body).map_err(RelayError::Malformed)?;
            return self.handle_recognized(cell, early);
        }
        if self.hs.is_spliced() {
            // Joined at a rendezvous point (rend-spec-v3 §4.2): for the other circuit.
            if !self.hs.push(body) {
                return Err(RelayError::QueueFull("joined circuit queue"));
            }
            return Ok(());
        }
        if self.next == Next::Open {
            let p = onion_cell::chancell::RelayPayload::Owned(body);
            self.to_next.push_back(if early {
                ChanMsg::RelayEarly(p)
            } else {
                ChanMsg::Relay(p)
            });
            Ok(())
        } else {
            // tor-spec §5.5.2.2: unrecognised at the end of the circuit is an error.
            Err(RelayError::Protocol(
                "unrecognised relay cell at the end of the circuit",
            ))
        }
    }

    /// Handle a cell from the next hop's side, as [`RelayCircuit::handle_from_client`]
    /// does: nothing is returned, a violation closes the circuit and arrives once, as
    /// [`RelayEvent::Closed`]; a DESTROY from the next hop travels on toward the client.
    pub fn handle_from_next(&mut self, now: Instant, msg: ChanMsg<'_>) {
        self.handle_input(now, |c| c.on_from_next(msg));
    }

    /// [`RelayCircuit::handle_from_next`] on an open circuit; an error is fatal.
    fn on_from_next(&mut self, msg: ChanMsg<'_>) -> Result<(), RelayError> {
        match msg {
            ChanMsg::Created2(c) if self.next == Next::Extending => {
                self.next = Next::Open;
                let m = RelayMsg::Extended2(Extended2 { hdata: c.hdata });
                self.originate(None, &m)
            }
            ChanMsg::Relay(p) if self.next == Next::Open => {
                let mut body = p.into_box();
                self.crypto.encrypt_inbound(&mut body);
                self.to_client.push_back(Inbound::Ready(ChanMsg::Relay(
                    onion_cell::chancell::RelayPayload::Owned(body),
                )));
                Ok(())
            }
            ChanMsg::RelayEarly(_) => Err(RelayError::Protocol("inbound RELAY_EARLY cell")),
            ChanMsg::Destroy(_) => {
                // Since 0.4.5.13 relays propagate DESTROY toward the client too (tor-spec §5.4).
                self.next = Next::None;
                self.close(None, true, false);
                Ok(())
            }
            ChanMsg::Padding | ChanMsg::Vpadding { .. } => Ok(()),
            other => Err(RelayError::UnexpectedCell(other.cmd())),
        }
    }

    /// The embedding could not open the channel or the next relay's identity was wrong:
    /// tear the circuit down toward the client with `reason` (e.g. CONNECTFAILED,
    /// OR_IDENTITY).
    pub fn extend_failed(&mut self, reason: DestroyReason) {
        if self.closed {
            return;
        }
        self.next = Next::None;
        self.closed = true;
        self.to_client.clear();
        self.to_client
            .push_back(Inbound::Ready(ChanMsg::Destroy(reason)));
        self.end_all_streams();
        self.events.push_back(RelayEvent::Closed { error: None });
    }

    fn originate(
        &mut self,
        stream: Option<StreamId>,
        msg: &RelayMsg<'_>,
    ) -> Result<(), RelayError> {
        let body = encode_body(stream, msg, "relay message")?;
        self.to_client.push_back(Inbound::Originated {
            body,
            trigger: false,
        });
        Ok(())
    }

    fn handle_recognized(&mut self, cell: RelayCell<'_>, early: bool) -> Result<(), RelayError> {
        let stream = StreamId::to_field(cell.stream_id);
        let sid = StreamId::new(stream);
        match cell.msg {
            RelayMsg::Extend2(ext) => {
                if !early {
                    return Err(RelayError::Protocol("EXTEND2 not in a RELAY_EARLY cell"));
                }
                if self.next != Next::None {
                    return Err(RelayError::Protocol("EXTEND2 on an extended circuit"));
                }
                let mut rsa = None;
                let mut ed = None;
                let mut addrs = Vec::new();
                for ls in &ext.linkspecs {
                    match ls {
                        LinkSpec::OrPortV4(a) => addrs.push(SocketAddr::V4(*a)),
                        LinkSpec::OrPortV6(a) => addrs.push(SocketAddr::V6(*a)),
                        LinkSpec::RsaId(id) if rsa.is_none() => rsa = Some(RsaIdentity(*id)),
                        LinkSpec::Ed25519Id(id) if ed.is_none() => ed = Some(Ed25519Identity(*id)),
                        LinkSpec::RsaId(_) | LinkSpec::Ed25519Id(_) => {
                            return Err(RelayError::Protocol("EXTEND2 repeats an identity"))
                        }
                        _ => {}
                    }
                }
                let rsa = rsa.ok_or(RelayError::Protocol("EXTEND2 without an RSA identity"))?;
                if rsa.0 == [0; 20] || rsa == self.our_rsa_id {
                    return Err(RelayError::Protocol(
                        "EXTEND2 to a zero identity or back to ourselves",
                    ));
                }
                let ed = ed.filter(|e| e.0 != [0; 32]);
                self.next = Next::Extending;
                self.events.push_back(RelayEvent::Extend(ExtendRequest {
                    rsa_id: rsa,
                    ed_id: ed,
                    addrs,
                    create: ChanMsg::Create2(Create2 {
                        handshake_type: ext.handshake_type,
                        hdata: ext.hdata.into_owned().into(),
                    }),
                }));
                Ok(())
            }
            RelayMsg::Truncate => {
                if self.next != Next::None {
                    self.to_next
                        .push_back(ChanMsg::Destroy(DestroyReason::REQUESTED));
                    self.next = Next::None;
                }
                self.originate(None, &RelayMsg::Truncated(DestroyReason::REQUESTED))
            }
            RelayMsg::Begin(b) => {
                let id = sid.ok_or(RelayError::Protocol("BEGIN on stream 0"))?;
                if self.first_hop {
                    // tor-spec §5.4: refuse to be a one-hop proxy.
                    return Err(RelayError::Protocol("BEGIN at the first hop"));
                }
                if !self.new_stream(id)? {
                    return Ok(());
                }
                if b.host.is_empty() {
                    // Only an onion service accepts a port without a host; an exit has no
                    // destination to connect to (tor-spec §6.2).
                    return self.end_stream(id, EndReason::RESOLVEFAILED);
                }
                self.events.push_back(RelayEvent::Begin {
                    stream: id,
                    host: b.host.into_owned(),
                    port: b.port,
                    flags: b.flags,
                });
                Ok(())
            }
            RelayMsg::BeginDir => {
                let id = sid.ok_or(RelayError::Protocol("BEGIN_DIR on stream 0"))?;
                if !self.new_stream(id)? {
                    return Ok(());
                }
                self.events.push_back(RelayEvent::BeginDir { stream: id });
                Ok(())
            }
            RelayMsg::Resolve(r) => {
                let id = sid.ok_or(RelayError::Protocol("RESOLVE on stream 0"))?;
                self.events.push_back(RelayEvent::Resolve {
                    stream: id,
                    query: r.query.into_owned(),
                });
                Ok(())
            }
            RelayMsg::Data(d) => self.on_data(stream, move || d.into_bytes()),
            RelayMsg::Sendme(sm) => match sid {
                None => {
                    let tag = match &sm.tag {
                        Some(t) => SendmeTag::V1(t),
                        None => SendmeTag::V0,
                    };
                    let queued = self.to_client.len() as u64;
                    self.send
                        .on_sendme(tag, self.last_now, queued)
                        .map_err(|e| match e {
                            SendmeError::Flow(e) => RelayError::Flow(e),
                            SendmeError::Cc(e) => RelayError::Cc(e),
                        })?;
                    self.stats.circ_sendmes_received += 1;
                    Ok(())
                }
                Some(id) => {
                    if let Some(s) = self.streams.get_mut(id) {
                        if s.on_sendme()? == Admit::Process {
                            self.stats.stream_sendmes_received += 1;
                        }
                    }
                    Ok(())
                }
            },
            RelayMsg::End(end) => {
                let id = sid.ok_or(RelayError::Protocol("END on stream 0"))?;
                if let Some(s) = self.streams.remove(id) {
                    if !s.is_half_closed() {
                        self.events
                            .push_back(RelayEvent::Stream(StreamEvent::Ended {
                                stream: id,
                                reason: end.reason,
                            }));
                    }
                    self.streams.shrink();
                }
                Ok(())
            }
            RelayMsg::Drop => Ok(()),
            m @ (RelayMsg::Xoff | RelayMsg::Xon(_)) => {
                self.on_xon_xoff(sid, &m);
                Ok(())
            }
            RelayMsg::Unknown { .. } => Ok(()),
            // Backward-only messages from the client side.
            m @ (RelayMsg::Connected(_)
            | RelayMsg::Extended(_)
            | RelayMsg::Extended2(_)
            | RelayMsg::Truncated(_)
            | RelayMsg::Resolved(_)
            | RelayMsg::Extend(_)) => Err(RelayError::UnexpectedMsg(m.cmd())),
            other => {
                self.events.push_back(RelayEvent::Msg {
                    stream: StreamId::new(stream),
                    msg: Box::new(other.into_owned()),
                });
                Ok(())
            }
        }
    }

    /// RELAY_DATA from the client on `stream`: counted by the circuit's deliver window
    /// (tor-spec §7.3; an authenticated SENDME goes back every 100 cells), then by the
    /// stream's, and handed to the embedding; dropped for an unknown stream (§6.2.1).
    /// `data` makes the bytes only when they are delivered.
    fn on_data(&mut self, stream: u16, data: impl FnOnce() -> Bytes) -> Result<(), RelayError> {
        if self.recv.take()? {
            let tag = sendme_tag(self.crypto.last_received_digest());
            self.stats.circ_sendmes_sent += 1;
            self.originate(None, &RelayMsg::Sendme(Sendme { tag: Some(tag) }))?;
        }
        let id = StreamId::new(stream).ok_or(RelayError::Protocol("DATA on stream 0"))?;
        let Some(s) = self.streams.get_mut(id) else {
            return Ok(());
        };
        if s.on_data()? == Admit::Process {
            self.stats.data_cells_received += 1;
            let data = data();
            self.event_data_bytes += data.len();
            self.events
                .push_back(RelayEvent::Stream(StreamEvent::Data { stream: id, data }));
        }
        Ok(())
    }

    /// XOFF / XON from the client on an exit stream (proposal 324 §4.1.1): XOFF stops our
    /// packaging of the stream until XON; an XON's advisory rate paces it from then on
    /// ([`RateLimit`](crate::cc::flowctl::RateLimit), as C tor adjusts the edge's token
    /// bucket). Without congestion control, on stream 0, an unknown or a half-closed stream
    /// they are dropped, as C tor drops them (it closes nothing).
    fn on_xon_xoff(&mut self, sid: Option<StreamId>, msg: &RelayMsg<'_>) {
        let now = self.last_now;
        if let Some(s) = sid.and_then(|id| self.streams.get_mut(id)) {
            s.on_xon_xoff(msg, now, &mut self.stats);
        }
    }

    /// The exit's connection for `stream` wrote `written` bytes toward the destination and
    /// still holds `buffered` bytes of the stream's data: on a congestion-controlled circuit,
    /// RELAY_XOFF goes to the client once more than `cc_xoff_exit` cells wait, RELAY_XON
    /// once they have drained, and advisory XONs when the drain rate changes (proposal 324
    /// §4.1.1; C tor's `flow_control_decide_xoff` / `flow_control_decide_xon`, see
    /// [`DrainRate`](crate::cc::flowctl::DrainRate)). Call it when data is buffered (with
    /// `written` 0) and whenever some is written out. Without congestion control it does
    /// nothing: stream windows push back instead (tor-spec §7.4).
    pub fn note_stream_buffer(
        &mut self,
        now: Instant,
        stream: StreamId,
        written: usize,
        buffered: usize,
    ) -> Result<(), RelayError> {
        self.last_now = self.last_now.max(now);
        if self.closed {
            return Err(RelayError::Closed);
        }
        if self.send.congestion_control().is_none() {
            return Ok(());
        }
        let p = self.flow_control;
        let Some(s) = self
            .streams
            .get_mut(stream)
            .filter(|s| s.windowless && !s.is_half_closed())
        else {
            return Err(RelayError::NoSuchStream(stream));
        };
        let signals = s.note_buffer(&p, now, written, buffered, p.xoff_exit_bytes());
        for sig in signals.into_iter().flatten() {
            let msg = flow_signal_msg(sig, &mut self.stats);
            self.originate(Some(stream), &msg)?;
        }
        Ok(())
    }

    /// The live (not half-closed) stream `stream` of `streams`, on a circuit not `closed`
    /// (fields, not `self`, so that the other fields stay usable beside the stream).
    fn live_stream(
        streams: &mut StreamMap,
        closed: bool,
        stream: StreamId,
    ) -> Result<&mut Stream, RelayError> {
        if closed {
            return Err(RelayError::Closed);
        }
        streams
            .live_mut(stream)
            .ok_or(RelayError::NoSuchStream(stream))
    }

    /// Track a new exit stream; `Ok(false)` if the circuit already carries
    /// [`MAX_STREAMS_PER_CIRCUIT`](crate::stream::MAX_STREAMS_PER_CIRCUIT) streams, in which
    /// case RELAY_END RESOURCELIMIT has been sent (tor-spec §6.3) and no event is raised.
    fn new_stream(&mut self, id: StreamId) -> Result<bool, RelayError> {
        if self.streams.get(id).is_some() {
            return Err(RelayError::Protocol("BEGIN for a stream id in use"));
        }
        // Exit streams accept optimistic data (tor-spec §6.2), so they start "open" on our
        // side: the embedding queues data until its connection completes.
        let mut st = Stream::new(id, 0, StreamState::Open);
        // Proposal 324 §4: no stream windows on a congestion-controlled circuit.
        st.windowless = self.send.congestion_control().is_some();
        if !self.streams.insert(st) {
            self.originate(Some(id), &RelayMsg::End(End::new(EndReason::RESOURCELIMIT)))?;
            return Ok(false);
        }
        Ok(true)
    }

    /// The connection for `stream` is up: send RELAY_CONNECTED (tor-spec §6.2; for BEGIN_DIR
    /// pass `None`, an empty body).
    pub fn connected(
        &mut self,
        stream: StreamId,
        addr: Option<(IpAddr, u32)>,
    ) -> Result<(), RelayError> {
        if self.closed {
            return Err(RelayError::Closed);
        }
        if self.streams.get(stream).is_none() {
            return Err(RelayError::NoSuchStream(stream));
        }
        self.originate(Some(stream), &RelayMsg::Connected(Connected { addr }))
    }

    /// End an exit stream with `reason` (refused by policy, connection failed, or done),
    /// sending RELAY_END (tor-spec §6.3). The stream stays half-closed, absorbing what the
    /// client may still have in flight, until the client's END or the half-closed timeout
    /// ([`RelayCircuit::set_half_closed_timeout`], counted from the latest `now` given, run
    /// by [`RelayCircuit::handle_timeout`]).
    pub fn end_stream(&mut self, stream: StreamId, reason: EndReason) -> Result<(), RelayError> {
        self.end_stream_with(stream, End::new(reason))
    }

    /// [`RelayCircuit::end_stream`] with a whole END body: EXITPOLICY with the refused
    /// address and its TTL (tor-spec §6.3), so that the client learns which address the
    /// exit refused.
    pub fn end_stream_with(&mut self, stream: StreamId, end: End) -> Result<(), RelayError> {
        let s = Self::live_stream(&mut self.streams, self.closed, stream)?;
        s.half_close(Some(self.last_now + self.half_closed_timeout));
        self.originate(Some(stream), &RelayMsg::End(end))
    }

    /// Answer a RESOLVE (tor-spec §6.4).
    pub fn resolved(
        &mut self,
        stream: StreamId,
        answers: Vec<ResolvedAnswer<'static>>,
    ) -> Result<(), RelayError> {
        if self.closed {
            return Err(RelayError::Closed);
        }
        self.originate(Some(stream), &RelayMsg::Resolved(Resolved { answers }))
    }

    /// Send a recognised message toward the client (onion-service replies and the like).
    pub fn send_msg(
        &mut self,
        stream: Option<StreamId>,
        msg: &RelayMsg<'_>,
    ) -> Result<(), RelayError> {
        if self.closed {
            return Err(RelayError::Closed);
        }
        if msg.cmd() == RelayCmd::DATA {
            return Err(RelayError::UnexpectedMsg(RelayCmd::DATA));
        }
        self.originate(stream, msg)
    }

    /// How many bytes [`RelayCircuit::send`] would accept on `stream` now: within the stream
    /// and circuit package windows, or under congestion control within `cwnd - inflight`,
    /// none after the client's XOFF, and no more than an XON's advisory rate allows.
    pub fn send_capacity(&self, stream: StreamId) -> usize {
        match self.streams.get(stream) {
            Some(s) if !s.is_half_closed() && !self.closed => self.send.capacity(s, self.last_now),
            _ => 0,
        }
    }

    /// [`RelayCircuit::send`] at `now`: under congestion control the time a
    /// SENDME-eliciting cell is sent starts its RTT sample (proposal 324 §2.1), and an
    /// advisory rate's token bucket refills with time, so an embedding that sends outside
    /// its handling of an input gives the time here.
    pub fn send_at(
        &mut self,
        now: Instant,
        stream: StreamId,
        data: &[u8],
    ) -> Result<usize, RelayError> {
        self.last_now = self.last_now.max(now);
        self.send(stream, data)
    }

    /// Send exit-stream data toward the client, as DATA cells of up to 498 bytes, within the
    /// stream and circuit package windows (under congestion control: the congestion window,
    /// the client's XOFF and XON rate, proposal 324 §3, §4). Returns the bytes taken. The
    /// time is the latest `now` an input carried (see [`RelayCircuit::send_at`]).
    pub fn send(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, RelayError> {
        self.send_pooled(stream, data, &mut BodyPool::default())
    }

    /// [`RelayCircuit::send_at`] with the DATA cells written into bodies taken from
    /// `bodies` while it has some (an exit that puts the bodies of the cells it sent back
    /// into the pool, [`BodyPool::put_msg`], allocates none in the steady state).
    pub fn send_at_pooled(
        &mut self,
        now: Instant,
        stream: StreamId,
        data: &[u8],
        bodies: &mut BodyPool,
    ) -> Result<usize, RelayError> {
        self.last_now = self.last_now.max(now);
        self.send_pooled(stream, data, bodies)
    }

    fn send_pooled(
        &mut self,
        stream: StreamId,
        data: &[u8],
        bodies: &mut BodyPool,
    ) -> Result<usize, RelayError> {
        let s = Self::live_stream(&mut self.streams, self.closed, stream)?;
        let now = self.last_now;
        let (to_client, stats) = (&mut self.to_client, &mut self.stats);
        let taken = s.package(self.send.limit(), now, data, |chunk, trigger| {
            stats.data_cells_sent += 1;
            // Header and data are written here and the rest is padding written when the
            // cell leaves (`pad_body`): nothing of a reused body's earlier cell remains.
            let body = match bodies.take() {
                Some(mut b) => {
                    onion_cell::relay::encode_data_into(&mut b, Some(stream), chunk);
                    b
                }
                None => data_body(stream, chunk),
            };
            to_client.push_back(Inbound::Originated { body, trigger });
        });
        Ok(taken)
    }

    /// The next cell to send, and to which side.
    pub fn poll_cell(&mut self, rng: &mut impl CryptoRngCore) -> Option<RelayOutput> {
        if let Some(m) = self.poll_to_next() {
            return Some(RelayOutput::ToNext(m));
        }
        self.poll_to_client(rng).map(RelayOutput::ToClient)
    }

    /// The next cell for the channel toward the next hop only: for an embedding whose
    /// channel toward the client is full, so that cells the other way still move (a relay
    /// queues per circuit and direction, as C tor's circuit queues do).
    pub fn poll_to_next(&mut self) -> Option<ChanMsg<'static>> {
        self.to_next.pop_front()
    }

    /// The next cell for the channel toward the client only (see
    /// [`RelayCircuit::poll_to_next`]).
    pub fn poll_to_client(&mut self, rng: &mut impl CryptoRngCore) -> Option<ChanMsg<'static>> {
        let out = self.to_client.pop_front()?;
        if self.to_client.is_empty() && self.to_client.capacity() > 64 {
            self.to_client.shrink_to_fit();
        }
        Some(match out {
            Inbound::Ready(m) => m,
            Inbound::Originated { mut body, trigger } => {
                pad_body(&mut body, rng);
                self.crypto.originate_inbound(&mut body);
                if trigger {
                    self.send.record_digest(self.crypto.last_sent_digest());
                }
                ChanMsg::Relay(onion_cell::chancell::RelayPayload::Owned(body))
            }
        })
    }

    /// The next event for the embedding. Handing out [`StreamEvent::Data`] counts as the
    /// embedding taking the bytes (stream SENDMEs are queued then, tor-spec §7.4).
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        let e = self.events.pop_front();
        if let Some(RelayEvent::Stream(StreamEvent::Data { stream, data })) = &e {
            self.event_data_bytes = self.event_data_bytes.saturating_sub(data.len());
            let id = *stream;
            let n = self.streams.get_mut(id).map_or(0, Stream::on_delivered);
            for _ in 0..n {
                self.stats.stream_sendmes_sent += 1;
                let _ = self.originate(Some(id), &RelayMsg::Sendme(Sendme { tag: None }));
            }
        }
        e
    }
}

/// Inputs with the error they closed the circuit with, for the crate's tests: what an
/// embedding learns from the [`RelayEvent::Closed`] the input queued (the event stays
/// queued).
#[cfg(test)]
impl RelayCircuit {
    /// [`RelayCircuit::handle_from_client`], then `Err` with the error if this cell closed
    /// the circuit.
    pub(crate) fn try_from_client(
        &mut self,
        now: Instant,
        msg: ChanMsg<'_>,
    ) -> Result<(), RelayError> {
        let was_closed = self.closed;
        self.handle_from_client(now, msg);
        self.close_error(was_closed)
    }

    /// [`RelayCircuit::handle_from_next`], then `Err` as [`RelayCircuit::try_from_client`].
    pub(crate) fn try_from_next(
        &mut self,
        now: Instant,
        msg: ChanMsg<'_>,
    ) -> Result<(), RelayError> {
        let was_closed = self.closed;
        self.handle_from_next(now, msg);
        self.close_error(was_closed)
    }

    fn close_error(&self, was_closed: bool) -> Result<(), RelayError> {
        if was_closed || !self.closed {
            return Ok(());
        }
        let closed = self.events.iter().rev().find_map(|e| match e {
            RelayEvent::Closed { error } => Some(error.clone()),
            _ => None,
        });
        match closed {
            Some(Some(e)) => Err(e),
            Some(None) => Ok(()),
            None => panic!("closed without a Closed event"),
        }
    }
}
