//! The client side of a circuit (tor-spec §5 "Circuit management", §5.5 "Routing relay
//! cells", §6 "Application connections and stream management", §7.3–7.4 flow control).
//!
//! A [`Circuit`] is built one hop at a time: [`Circuit::create`] gives the CREATE2 (ntor or
//! ntor-v3) or CREATE_FAST message for the first hop; every later hop is added with
//! [`Circuit::extend`], which sends EXTEND2 in a RELAY_EARLY cell to the current last hop.
//! Each completed hop adds a tor1 layer ([`onion_crypto::tor1`]); outgoing relay cells are
//! encrypted for the hop they address, incoming ones are attributed to the hop that
//! recognises them.
//!
//! The machine does no I/O, reads no clock and owns no RNG. The embedding (normally through a
//! channel, which adds the circuit id) runs the loop shown in the [crate documentation](crate):
//! inputs with `now` ([`Circuit::handle_cell`], [`Circuit::handle_timeout`], user commands),
//! then every output drained ([`Circuit::poll_cell`], [`Circuit::poll_event`]) before sleeping
//! until [`Circuit::poll_timeout`].
//!
//! Timers ([`Circuit::poll_timeout`]): the build timeout, stream connect/resolve timeouts, the
//! end of a half-closed stream's window ([`CircConfig::half_closed_timeout`]), and the idle
//! check ([`CircConfig::idle_after`]) that frees the hops' expanded AES key schedules
//! (6 × 704 bytes on a 3-hop circuit) while no cell flows; the next cell rebuilds them.
//!
//! RELAY_EARLY (tor-spec §5.6): EXTEND2 always goes in one, and so do the first few other
//! cells to hops beyond the guard (to conceal the circuit length), keeping
//! [`RELAY_EARLY_RESERVED_FOR_EXTEND`] for later extensions; never more than
//! [`MAX_RELAY_EARLY`] in all.
//!
//! Errors: a command (`begin`, `send`, `extend`, ...) returns an `Err` only for what the
//! caller can act on (a stream or hop that does not exist, a bound, a closed circuit), and
//! leaves the circuit as it was. Inputs ([`Circuit::handle_cell`],
//! [`Circuit::handle_timeout`]) return nothing: a hop's fault (a cell recognised by no hop, a
//! bad SENDME digest, a window overrun, a bad handshake reply) or a build timeout closes the
//! circuit: a DESTROY (reason NONE, as an OP must use, tor-spec §5.4) is queued, every stream
//! ends, and [`CircEvent::Closed`] reports the error, once. Nothing here panics on peer
//! input.

#[cfg(test)]
mod cc_tests;
pub mod error;
#[cfg(test)]
mod half_closed_tests;
#[cfg(test)]
mod inbound_tests;
#[cfg(test)]
mod vhop_cc_tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use onion_cell::chancell::{ChanMsg, Create2, DestroyReason, HandshakeType, RelayPayload};
use onion_cell::extension::{CcResponse, ExtList};
use onion_cell::linkspec::LinkSpec;
use onion_cell::relay::{
    RelayCell, CMD_OFFSET, DIGEST_OFFSET, LENGTH_OFFSET, RECOGNIZED_OFFSET, RELAY_HEADER_LEN,
    STREAM_ID_OFFSET,
};
use onion_cell::relaymsg::{
    Begin, BeginFlags, End, EndReason, Extend2, RelayCmd, RelayMsg, Resolve, ResolvedAnswer,
    Sendme, MAX_RELAY_DATA_LEN,
};
use onion_crypto::fast::{FastClient, FastClientPending};
use onion_crypto::keys::NtorOnionKey;
use onion_crypto::ntor::{NtorClient, NtorClientPending};
use onion_crypto::ntor_v3::{NtorV3Client, NtorV3ClientPending, CIRCUIT_EXTEND_VERIFICATION};
use onion_crypto::tor1::{self, CellBody, ClientCircuitCrypto, ClientLayer, Tor1ClientHop};
use onion_crypto::{Ed25519Identity, KeyGenerator, RsaIdentity};
use rand_core::CryptoRngCore;

pub use self::error::{CircError, Unexpected};
use crate::cc::flowctl::{FlowCtrlParams, FlowSignal};
use crate::cc::{CcConfig, CcError, CongestionControl};
use crate::flow::{sendme_tag, CircRecvWindow, FlowStats, SendmeTag};
use crate::sendme::{CircSender, SendmeError};
use crate::stream::{
    flow_signal_msg, Admit, Stream, StreamEvent, StreamId, StreamMap, StreamState,
};
use crate::Instant;

/// Most RELAY_EARLY cells a client sends on one circuit (tor-spec §5.6).
pub const MAX_RELAY_EARLY: u8 = 8;

/// RELAY_EARLY cells kept for later EXTEND2s: other cells to hops beyond the first use
/// RELAY_EARLY only while more than this many are left (tor-spec §5.6: "Clients SHOULD send
/// the first ~8 RELAY cells that are not targeted at the first hop of any circuit as
/// RELAY_EARLY cells too, in order to partially conceal the circuit length"; EXTEND2 MUST
/// use one, so a circuit that is used before being extended further, as an onion-service
/// circuit may be, keeps enough for two more hops).
pub const RELAY_EARLY_RESERVED_FOR_EXTEND: u8 = 2;

/// Tunables of a client circuit.
#[derive(Debug, Clone)]
pub struct CircConfig {
    /// How long one hop may take to answer CREATE2/CREATE_FAST/EXTEND2 before the circuit is
    /// abandoned (C tor adapts its build timeout; 60 s is its ceiling before it has data).
    pub build_timeout: Duration,
    /// How long a BEGIN / BEGIN_DIR / RESOLVE may wait for its answer (C tor's
    /// "CircuitStreamTimeout" default is 10 s for the first attempt; we use 60 s, the SOCKS
    /// timeout, since we do not retry on another circuit ourselves).
    pub stream_timeout: Duration,
    /// Accept unauthenticated (version 0) circuit SENDMEs (consensus parameter
    /// `sendme_accept_min_version` = 0). Off by default: current relays send version 1.
    pub accept_sendme_v0: bool,
    /// Accept RELAY_BEGIN from the last hop, reported as [`CircEvent::IncomingStream`] and
    /// answered with [`Circuit::accept_stream`] or [`Circuit::reject_stream`]. An onion
    /// service sets this on a rendezvous circuit once the client's virtual hop is added
    /// (rend-spec-v3 §4.2: the client opens streams to the service). Off by default: a client
    /// drops BEGIN, as C tor does.
    pub accept_inbound_streams: bool,
    /// How long a stream we ended (RELAY_END sent) stays half-closed, absorbing the cells
    /// the other edge may still have in flight (tor-spec §6.3; C tor too keeps such streams
    /// only for a bounded time). When it expires the stream id is forgotten and may be
    /// reused; later cells for it are treated as cells for an unknown stream (DATA dropped,
    /// tor-spec §6.2.1).
    pub half_closed_timeout: Duration,
    /// After this long without any cell through the circuit's crypto, the hops' expanded
    /// AES key schedules are freed (2 × 704 bytes per hop) and only the raw keys kept; the
    /// next cell rebuilds them (about 50 ns per direction and hop). The check runs from
    /// [`Circuit::handle_timeout`], so the schedules are dropped between one and two periods
    /// after the last cell. `None` keeps them expanded for the circuit's whole life.
    pub idle_after: Option<Duration>,
    /// Congestion control (proposal 324) to request from the exit in
    /// [`Circuit::extend_exit`]: the consensus parameters for the circuit's kind of path,
    /// with the consensus `sendme_inc` that the exit's answer is checked against. `None`
    /// (the default) never requests it, and the circuit runs fixed windows (tor-spec §7.3).
    /// Boxed: most circuits never use it, and the circuit stays as small as without it.
    pub congestion_control: Option<Box<CcConfig>>,
    /// Stream flow control on congestion-controlled hops (proposal 324 §4: `cc_xoff_client`
    /// and the `cc_xon_*` parameters of [`Circuit::note_stream_buffer`]).
    pub flow_control: FlowCtrlParams,
}

impl Default for CircConfig {
    fn default() -> Self {
        CircConfig {
            build_timeout: Duration::from_secs(60),
            stream_timeout: Duration::from_secs(60),
            accept_sendme_v0: false,
            accept_inbound_streams: false,
            half_closed_timeout: Duration::from_secs(60),
            idle_after: Some(Duration::from_secs(5)),
            congestion_control: None,
            flow_control: FlowCtrlParams::default(),
        }
    }
}

/// Which handshake creates the first hop (tor-spec §5.1, §5.1.4, §5.1.5; proposal 332).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// CREATE2 with ntor (type 2).
    Ntor,
    /// CREATE2 with ntor-v3 (type 3); needs the relay's ed25519 identity.
    NtorV3,
    /// CREATE_FAST (no public-key crypto; only safe on a channel whose TLS authenticated the
    /// relay, and it marks us as a client to the relay).
    CreateFast,
}

/// What a client must know of a relay to make it a hop: identities, onion key and addresses
/// (from its microdescriptor and consensus entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopTarget {
    /// SHA-1 of the relay's RSA identity key (link specifier type 2, ntor NODEID).
    pub rsa_id: RsaIdentity,
    /// The relay's ed25519 identity (link specifier type 3, ntor-v3 ID), if known.
    pub ed_id: Option<Ed25519Identity>,
    /// The relay's current ntor onion key.
    pub ntor_key: NtorOnionKey,
    /// Its ORPorts (IPv4 first; link specifiers 0 and 1).
    pub addrs: Vec<SocketAddr>,
    /// Whether it accepts ntor-v3 (protocol "Relay=4"); EXTEND2 then uses type 3.
    pub ntor_v3: bool,
}

impl HopTarget {
    /// The link specifiers naming this relay in an EXTEND2, in the order the spec recommends
    /// (tor-spec §5.1.2: `[00]`, `[02]`, `[03]`, `[01]`).
    pub fn link_specs(&self) -> Vec<LinkSpec<'static>> {
        let mut v = Vec::with_capacity(4);
        if let Some(SocketAddr::V4(a)) = self.addrs.iter().find(|a| a.is_ipv4()) {
            v.push(LinkSpec::OrPortV4(*a));
        }
        v.push(LinkSpec::RsaId(self.rsa_id.0));
        if let Some(ed) = &self.ed_id {
            v.push(LinkSpec::Ed25519Id(ed.0));
        }
        if let Some(SocketAddr::V6(a)) = self.addrs.iter().find(|a| a.is_ipv6()) {
            v.push(LinkSpec::OrPortV6(*a));
        }
        v
    }
}

/// Something that happened on the circuit, for the embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircEvent {
    /// A hop completed its handshake; the circuit now has `hops` hops.
    HopAdded {
        /// Number of hops now.
        hops: usize,
    },
    /// The exit accepted a BEGIN / BEGIN_DIR (RELAY_CONNECTED, tor-spec §6.2).
    StreamConnected {
        /// The stream.
        stream: StreamId,
        /// The address the exit connected to and its TTL, if it said.
        addr: Option<(IpAddr, u32)>,
    },
    /// Data or an end on a stream, as a relay's circuit end reports them too.
    Stream(StreamEvent),
    /// The answers to a RESOLVE (RELAY_RESOLVED, tor-spec §6.4).
    Resolved {
        /// The stream id the RESOLVE used.
        stream: StreamId,
        /// The answers.
        answers: Vec<ResolvedAnswer<'static>>,
    },
    /// A relay message the circuit does not handle itself (onion-service messages and the
    /// like), from `hop`.
    Msg {
        /// The hop that sent it.
        hop: usize,
        /// Its stream id (`None` for circuit-level messages).
        stream: Option<StreamId>,
        /// The message (boxed: it is rare and large, and events should stay small).
        msg: Box<RelayMsg<'static>>,
    },
    /// A hop cut the circuit after itself (RELAY_TRUNCATED, tor-spec §5.4); `hops` remain.
    Truncated {
        /// Hops left.
        hops: usize,
        /// The reason given.
        reason: DestroyReason,
    },
    /// The last hop asked us to open a stream (RELAY_BEGIN, tor-spec §6.2), with
    /// [`CircConfig::accept_inbound_streams`] set. Answer with [`Circuit::accept_stream`] or
    /// [`Circuit::reject_stream`]; DATA may already arrive on it meanwhile.
    IncomingStream {
        /// The stream id the peer chose.
        stream: StreamId,
        /// The requested host: empty when an onion-service client connects to a service
        /// (C tor sends `":PORT"` there, rend-spec-v3 §4.2).
        host: String,
        /// The requested port.
        port: u16,
    },
    /// The circuit is closed; the last event of the circuit. `error` is `None` when the
    /// peer sent DESTROY or the user closed it, and says what went wrong otherwise: this is
    /// the one place a fatal error is reported ([`CircError::kind`] tells a hop's violation
    /// from a timeout).
    Closed {
        /// The DESTROY reason received, if the peer destroyed it.
        remote_reason: Option<DestroyReason>,
        /// The local error that closed it, if any.
        error: Option<CircError>,
    },
}

enum PendingHandshake {
    Ntor(NtorClientPending),
    NtorV3(NtorV3ClientPending),
    Fast(FastClientPending),
}

struct Pending {
    handshake: PendingHandshake,
    deadline: Instant,
    /// The handshake asked for congestion control (proposal 324 §4.1).
    cc_requested: bool,
}

/// Per-hop flow-control state (the crypto lives in [`ClientCircuitCrypto`]).
#[derive(Debug)]
struct HopFlow {
    /// Our sending end toward the hop: the package window, or the congestion window if the
    /// hop negotiated congestion control.
    send: CircSender,
    /// Asks for a SENDME every 100 cells, or every `sendme_inc` under congestion control.
    recv: CircRecvWindow,
    /// The hop's `KH` (tor-spec §5.2.2: the DIGEST_LEN bytes after the tor1 keys; for
    /// CREATE_FAST the KH of its reply), `None` for a virtual hop.
    kh: Option<HopKh>,
}

impl HopFlow {
    /// A new hop's flow control: full windows, or under congestion control `cc` a SENDME
    /// asked for every negotiated `sendme_inc` cells received.
    fn new(accept_sendme_v0: bool, kh: Option<HopKh>, cc: Option<CongestionControl>) -> Self {
        let send = CircSender::new(accept_sendme_v0, cc);
        HopFlow {
            recv: send.deliver_window(),
            send,
            kh,
        }
    }
}

/// A hop's `KH`, zeroized on drop and never printed.
struct HopKh([u8; KH_LEN]);

impl core::fmt::Debug for HopKh {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HopKh(..)")
    }
}

impl Drop for HopKh {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Length of a hop's `KH` (DIGEST_LEN).
pub const KH_LEN: usize = 20;

/// A relay cell waiting for [`Circuit::poll_cell`]: plaintext header and message, padding and
/// digest still to be added.
struct Queued {
    hop: u8,
    early: bool,
    /// This DATA cell is the one whose digest the hop's next SENDME will carry.
    sendme_trigger: bool,
    /// Built by the caller ([`Circuit::send_raw`]): keep its padding bytes as they are.
    raw: bool,
    body: Box<CellBody>,
}

/// A client circuit: its hops' crypto and windows, its streams, and its output queues.
pub struct Circuit {
    config: CircConfig,
    crypto: ClientCircuitCrypto,
    hops: Vec<HopFlow>,
    pending: Option<Pending>,
    streams: StreamMap,
    /// Non-relay cells to send (CREATE2, CREATE_FAST, DESTROY), before any relay cell.
    chan_out: Option<ChanMsg<'static>>,
    relay_out: VecDeque<Queued>,
    events: VecDeque<CircEvent>,
    relay_early_left: u8,
    closed: bool,
    stats: FlowStats,
    /// The latest `now` any input carried (for commands that take no time, such as
    /// [`Circuit::close_stream`], and for cells sent from [`Circuit::poll_cell`]).
    last_now: Instant,
    /// A cell went through the crypto since the last idle check.
    used: bool,
    /// The hops' key schedules are freed ([`CircConfig::idle_after`]).
    compacted: bool,
    /// When to check next whether the circuit has been idle for a whole period.
    idle_check: Option<Instant>,
}

impl core::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Circuit")
            .field("hops", &self.hops.len())
            .field("extending", &self.pending.is_some())
            .field("streams", &self.streams.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// A zero-filling RNG, used only while encoding into a body whose padding is overwritten with
/// real randomness at [`Circuit::poll_cell`].
struct ZeroPad;
impl rand_core::RngCore for ZeroPad {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, d: &mut [u8]) {
        d.fill(0)
    }
    fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
        d.fill(0);
        Ok(())
    }
}

/// Encode `msg` on `stream` (`None`: a circuit-level message) into a fresh plaintext body
/// (padding left zero).
pub(crate) fn encode_body(
    stream: Option<StreamId>,
    msg: &RelayMsg<'_>,
    what: &'static str,
) -> Result<Box<CellBody>, CircError> {
    let mut body = Box::new([0u8; tor1::CELL_BODY_LEN]);
    RelayCell::new(stream, msg.clone())
        .encode_into(&mut body, &mut ZeroPad)
        .map_err(|err| CircError::Encode { what, err })?;
    Ok(body)
}

/// A DATA body for `stream` carrying `data` (at most 498 bytes), without going through
/// [`RelayMsg`] (no intermediate copy).
pub(crate) fn data_body(stream: StreamId, data: &[u8]) -> Box<CellBody> {
    let mut body = Box::new([0u8; tor1::CELL_BODY_LEN]);
    onion_cell::relay::encode_data_into(&mut body, Some(stream), data);
    body
}

/// The stream id (0 for none) and data length of a decrypted RELAY_DATA cell, read from
/// its header without decoding the message (both ends hand DATA over in the cell's own
/// buffer, see [`data_bytes`]); a length beyond the cell is malformed.
pub(crate) fn data_cell_header(body: &CellBody) -> Result<(u16, usize), onion_cell::Error> {
    let len = onion_cell::relay::read_data_len(body)?;
    Ok((
        StreamId::to_field(onion_cell::relay::read_stream_id(body)),
        len,
    ))
}

/// The `len` data bytes of a decrypted DATA cell as [`Bytes`]. A cell at least half full
/// keeps its own buffer: no copy, and no allocation at all for a full cell (498 bytes: the
/// buffer is used to its end, so `Bytes` takes the box as it is), one small reference-count
/// allocation otherwise. A shorter one is copied, so that an application holding many
/// small chunks does not hold a 509-byte buffer for each.
pub(crate) fn data_bytes(body: Box<CellBody>, len: usize) -> Bytes {
    use bytes::Buf;
    let len = len.min(MAX_RELAY_DATA_LEN);
    if len < MAX_RELAY_DATA_LEN / 2 {
        return Bytes::copy_from_slice(&body[RELAY_HEADER_LEN..RELAY_HEADER_LEN + len]);
    }
    let boxed: Box<[u8]> = body;
    let mut v = boxed.into_vec();
    v.truncate(RELAY_HEADER_LEN + len);
    let mut b = Bytes::from(v);
    b.advance(RELAY_HEADER_LEN);
    b
}

/// Fill the padding of a plaintext body (tor-spec §6.1: four zero bytes, then random bytes).
pub(crate) fn pad_body(body: &mut CellBody, rng: &mut impl CryptoRngCore) {
    onion_cell::relay::pad_after_data(body, rng);
}

fn hop_from_keys(keys: &KeyGenerator) -> Result<Tor1ClientHop, CircError> {
    let material = keys
        .expand(tor1::TOR1_KEY_LEN)
        .map_err(|e| CircError::Handshake {
            hop: 0,
            err: onion_crypto::HandshakeError::Kdf(e),
        })?;
    Tor1ClientHop::from_key_material(&material)
        .map_err(|_| CircError::HandshakeUnsupported("tor1 key material"))
}

/// The empty ntor-v3 extension list (N_EXTENSIONS = 0, proposal 332 "circuit parameters").
const NTOR_V3_NO_EXTENSIONS: &[u8] = &[0];

/// The ntor-v3 client message asking for congestion control: one extension, type 1
/// (`CC_FIELD_REQUEST`), empty (proposal 324 §4.1 / §10.3, proposal 332).
const NTOR_V3_CC_REQUEST: &[u8] = &[1, 1, 0];

impl Circuit {
    /// Start a circuit at `first`: returns the circuit and the CREATE2 / CREATE_FAST message
    /// to send on the channel (tor-spec §5.1, §5.3 steps 4–5).
    pub fn create(
        config: CircConfig,
        first: &HopTarget,
        kind: HandshakeKind,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Circuit, ChanMsg<'static>), CircError> {
        let (handshake, msg) = match kind {
            HandshakeKind::Ntor => {
                let (p, skin) = NtorClient::start(rng, &first.rsa_id, &first.ntor_key);
                let msg = ChanMsg::Create2(Create2 {
                    handshake_type: HandshakeType::NTOR,
                    hdata: skin.to_vec().into(),
                });
                (PendingHandshake::Ntor(p), msg)
            }
            HandshakeKind::NtorV3 => {
                let ed = first.ed_id.as_ref().ok_or(CircError::HandshakeUnsupported(
                    "ntor-v3 needs an ed25519 id",
                ))?;
                let (p, skin) = NtorV3Client::start(
                    rng,
                    ed,
                    &first.ntor_key,
                    NTOR_V3_NO_EXTENSIONS,
                    CIRCUIT_EXTEND_VERIFICATION,
                );
                let msg = ChanMsg::Create2(Create2 {
                    handshake_type: HandshakeType::NTOR_V3,
                    hdata: skin.into(),
                });
                (PendingHandshake::NtorV3(p), msg)
            }
            HandshakeKind::CreateFast => {
                let (p, x) = FastClient::start(rng);
                (PendingHandshake::Fast(p), ChanMsg::CreateFast(x))
            }
        };
        let circ = Circuit {
            crypto: ClientCircuitCrypto::new(),
            hops: Vec::new(),
            pending: Some(Pending {
                handshake,
                deadline: now + config.build_timeout,
                cc_requested: false,
            }),
            streams: StreamMap::new(),
            chan_out: None,
            relay_out: VecDeque::new(),
            events: VecDeque::new(),
            relay_early_left: MAX_RELAY_EARLY,
            closed: false,
            stats: FlowStats::default(),
            last_now: now,
            used: false,
            compacted: false,
            idle_check: None,
            config,
        };
        Ok((circ, msg))
    }

    /// [`Circuit::create`] with ntor-v3 asking the (only) hop for congestion control, so
    /// that tests can negotiate it with a one-hop circuit.
    #[cfg(test)]
    pub(crate) fn create_requesting_cc(
        config: CircConfig,
        first: &HopTarget,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Circuit, ChanMsg<'static>), CircError> {
        let ed = first.ed_id.as_ref().ok_or(CircError::HandshakeUnsupported(
            "ntor-v3 needs an ed25519 id",
        ))?;
        let (mut circ, _) = Circuit::create(config, first, HandshakeKind::Ntor, now, rng)?;
        let (p, skin) = NtorV3Client::start(
            rng,
            ed,
            &first.ntor_key,
            NTOR_V3_CC_REQUEST,
            CIRCUIT_EXTEND_VERIFICATION,
        );
        circ.pending = Some(Pending {
            handshake: PendingHandshake::NtorV3(p),
            deadline: now + circ.config.build_timeout,
            cc_requested: true,
        });
        let msg = ChanMsg::Create2(Create2 {
            handshake_type: HandshakeType::NTOR_V3,
            hdata: skin.into(),
        });
        Ok((circ, msg))
    }

    /// Flow-control counters (DATA cells and SENDMEs each way).
    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// The `KH` of hop `hop` from its circuit handshake (tor-spec §5.2.2), which an onion
    /// service's ESTABLISH_INTRO must MAC (rend-spec-v3 §3.1.1: the last hop's KH). `None`
    /// for a virtual hop or a hop that does not exist.
    pub fn hop_kh(&self, hop: usize) -> Option<&[u8; KH_LEN]> {
        self.hops.get(hop)?.kh.as_ref().map(|k| &k.0)
    }

    /// RELAY_BEGIN from `hop`: with [`CircConfig::accept_inbound_streams`] and from the last
    /// hop, a new stream reported as [`CircEvent::IncomingStream`]; otherwise dropped
    /// (tor-spec §6.1). The host may be empty (an onion-service client sends only the port,
    /// rend-spec-v3 §1.1). A BEGIN on stream 0 is a protocol violation.
    fn incoming_begin(
        &mut self,
        hop: usize,
        stream: u16,
        begin: onion_cell::relaymsg::Begin<'_>,
    ) -> Result<(), CircError> {
        if !self.config.accept_inbound_streams || hop + 1 != self.hops.len() {
            return Ok(());
        }
        let id = StreamId::new(stream)
            .ok_or(CircError::Unexpected(Unexpected::RelayMsg(RelayCmd::BEGIN)))?;
        if self.streams.get(id).is_some() {
            // A BEGIN reusing a live stream id: drop it rather than disturb that stream.
            return Ok(());
        }
        let mut st = Stream::new(id, hop as u8, StreamState::Open);
        st.windowless = self
            .hops
            .get(hop)
            .is_some_and(|h| h.send.congestion_control().is_some());
        if !self.streams.insert(st) {
            // Past MAX_STREAMS_PER_CIRCUIT: refuse at once, as C tor's exit refuses a stream
            // it has no resources for (tor-spec §6.3, END reason RESOURCELIMIT). No event: the
            // embedder must not open a connection for a stream nobody tracks.
            let body = encode_body(
                Some(id),
                &RelayMsg::End(End::new(EndReason::RESOURCELIMIT)),
                "END",
            )?;
            self.queue_relay(hop, body);
            return Ok(());
        }
        self.events.push_back(CircEvent::IncomingStream {
            stream: id,
            host: begin.host.into_owned(),
            port: begin.port,
        });
        Ok(())
    }

    /// Turn [`CircConfig::accept_inbound_streams`] on or off, e.g. on a circuit to a
    /// rendezvous point once the client's virtual hop is added (rend-spec-v3 §4.2).
    pub fn set_accept_inbound_streams(&mut self, on: bool) {
        self.config.accept_inbound_streams = on;
    }

    /// Accept an incoming stream: RELAY_CONNECTED (tor-spec §6.2; an onion service sends it
    /// with an empty body, as C tor does). Data may be sent on it from now on.
    pub fn accept_stream(&mut self, stream: StreamId) -> Result<(), CircError> {
        self.check_open()?;
        let hop = self
            .streams
            .get(stream)
            .filter(|s| s.state == StreamState::Open)
            .ok_or(CircError::NoSuchStream(stream))?
            .hop;
        let body = encode_body(
            Some(stream),
            &RelayMsg::Connected(onion_cell::relaymsg::Connected { addr: None }),
            "CONNECTED",
        )?;
        self.queue_relay(usize::from(hop), body);
        Ok(())
    }

    /// Refuse an incoming stream: RELAY_END with `reason` (tor-spec §6.3; e.g.
    /// CONNECTREFUSED, or EXITPOLICY for a port the service does not serve); it is forgotten.
    pub fn reject_stream(&mut self, stream: StreamId, reason: EndReason) -> Result<(), CircError> {
        self.check_open()?;
        let s = self
            .streams
            .remove(stream)
            .ok_or(CircError::NoSuchStream(stream))?;
        let body = encode_body(Some(stream), &RelayMsg::End(End::new(reason)), "END")?;
        self.queue_relay(usize::from(s.hop), body);
        Ok(())
    }

    /// Number of completed hops.
    pub fn n_hops(&self) -> usize {
        self.hops.len()
    }

    /// Whether the circuit is closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a hop is being added.
    pub fn is_extending(&self) -> bool {
        self.pending.is_some()
    }

    /// Number of streams tracked (open, connecting, or half-closed).
    pub fn n_streams(&self) -> usize {
        self.streams.len()
    }

    /// Extend the circuit by `target`: EXTEND2 (ntor-v3 if `target.ntor_v3`, else ntor) in a
    /// RELAY_EARLY cell to the current last hop (tor-spec §5.1.2, §5.3, §5.6).
    pub fn extend(
        &mut self,
        target: &HopTarget,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), CircError> {
        self.extend_inner(target, false, now, rng)
    }

    /// Extend the circuit by its exit `target`, as [`Circuit::extend`], asking it for
    /// congestion control (proposal 324 §4.1: the `CC_FIELD_REQUEST` extension, type 1, in
    /// the ntor-v3 client message) when [`CircConfig::congestion_control`] is set and the
    /// target speaks ntor-v3. The caller asks only a relay that advertises `FlowCtrl=2`, and
    /// only for the last hop (C tor negotiates congestion control with the exit alone). If
    /// the exit agrees, with a `sendme_inc` within one of the consensus value, the circuit
    /// runs Tor Vegas toward it ([`Circuit::congestion_control`]).
    pub fn extend_exit(
        &mut self,
        target: &HopTarget,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), CircError> {
        let cc = self.config.congestion_control.is_some() && target.ntor_v3;
        self.extend_inner(target, cc, now, rng)
    }

    /// The congestion control of hop `hop`, if it negotiated it.
    pub fn congestion_control(&self, hop: usize) -> Option<&CongestionControl> {
        self.hops.get(hop)?.send.congestion_control()
    }

    fn extend_inner(
        &mut self,
        target: &HopTarget,
        request_cc: bool,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), CircError> {
        self.check_open()?;
        self.see(now);
        if self.pending.is_some() {
            return Err(CircError::ExtendInProgress);
        }
        let last = self
            .hops
            .len()
            .checked_sub(1)
            .ok_or(CircError::NoSuchHop { hop: 0, hops: 0 })?;
        if self.relay_early_left == 0 {
            return Err(CircError::RelayEarlyExhausted);
        }
        let mut cc_requested = false;
        let (handshake, htype, hdata) = match (&target.ed_id, target.ntor_v3) {
            (Some(ed), true) => {
                cc_requested = request_cc;
                let msg: &[u8] = if request_cc {
                    NTOR_V3_CC_REQUEST
                } else {
                    NTOR_V3_NO_EXTENSIONS
                };
                let (p, skin) = NtorV3Client::start(
                    rng,
                    ed,
                    &target.ntor_key,
                    msg,
                    CIRCUIT_EXTEND_VERIFICATION,
                );
                (PendingHandshake::NtorV3(p), HandshakeType::NTOR_V3, skin)
            }
            _ => {
                let (p, skin) = NtorClient::start(rng, &target.rsa_id, &target.ntor_key);
                (
                    PendingHandshake::Ntor(p),
                    HandshakeType::NTOR,
                    skin.to_vec(),
                )
            }
        };
        let msg = RelayMsg::Extend2(Extend2 {
            linkspecs: target.link_specs(),
            handshake_type: htype,
            hdata: hdata.into(),
        });
        let body = encode_body(None, &msg, "EXTEND2")?;
        self.relay_early_left -= 1;
        self.relay_out.push_back(Queued {
            hop: last as u8,
            early: true,
            sendme_trigger: false,
            raw: false,
            body,
        });
        self.pending = Some(Pending {
            handshake,
            deadline: now + self.config.build_timeout,
            cc_requested,
        });
        Ok(())
    }

    /// Add a hop whose keys were agreed out of band (the onion-service "virtual hop" of
    /// rend-spec-v3, whose layer uses AES-256 and SHA3-256).
    pub fn add_virtual_hop(&mut self, layer: Box<dyn ClientLayer>) -> Result<(), CircError> {
        self.add_virtual_hop_inner(layer, None)
    }

    /// Add an onion-service virtual hop, as [`Circuit::add_virtual_hop`], that runs
    /// congestion control (proposal 324 §4.1, rend-spec-v3 §4.2): the client asked for it
    /// in INTRODUCE1 (extension type 1) after the service advertised `flow-control` with its
    /// `sendme_inc` in the descriptor, so both ends agree on `cc.sendme_inc` without a
    /// handshake reply. C tor 0.4.9 then runs Tor Vegas end to end between client and
    /// service with the consensus `_onion` parameters (`CC_PATH_ONION`; the exit ones for a
    /// single onion service) and the descriptor's `sendme_inc` (the service's own consensus
    /// value on its side); the relays of the two half-circuits keep fixed windows toward
    /// their own ends. `cc.sendme_inc` 0 is refused ([`CcError::SendmeIncOutOfRange`]).
    pub fn add_virtual_hop_cc(
        &mut self,
        layer: Box<dyn ClientLayer>,
        cc: CcConfig,
    ) -> Result<(), CircError> {
        if cc.sendme_inc == 0 {
            return Err(CircError::CongestionControl {
                hop: self.hops.len(),
                err: CcError::SendmeIncOutOfRange {
                    got: 0,
                    consensus: cc.sendme_inc,
                },
            });
        }
        self.add_virtual_hop_inner(layer, Some(cc))
    }

    fn add_virtual_hop_inner(
        &mut self,
        layer: Box<dyn ClientLayer>,
        cc: Option<CcConfig>,
    ) -> Result<(), CircError> {
        self.check_open()?;
        if self.pending.is_some() {
            return Err(CircError::ExtendInProgress);
        }
        self.crypto.add_boxed_hop(layer);
        self.mark_used();
        self.hops.push(HopFlow::new(
            self.config.accept_sendme_v0,
            None,
            cc.map(CongestionControl::new),
        ));
        self.events.push_back(CircEvent::HopAdded {
            hops: self.hops.len(),
        });
        Ok(())
    }

    /// Ask the last hop to connect to `host:port` (RELAY_BEGIN, tor-spec §6.2).
    pub fn begin(
        &mut self,
        host: &str,
        port: u16,
        flags: BeginFlags,
        now: Instant,
    ) -> Result<StreamId, CircError> {
        let msg = RelayMsg::Begin(Begin {
            host: host.to_ascii_lowercase().into(),
            port,
            flags,
        });
        self.open_stream(msg, now, false)
    }

    /// Open a directory stream to the last hop (RELAY_BEGIN_DIR, tor-spec §6.2.1).
    pub fn begin_dir(&mut self, now: Instant) -> Result<StreamId, CircError> {
        self.open_stream(RelayMsg::BeginDir, now, false)
    }

    /// Ask the last hop to resolve `name` (RELAY_RESOLVE, tor-spec §6.4). The answer comes
    /// as [`CircEvent::Resolved`] with the returned id.
    pub fn resolve(&mut self, name: &str, now: Instant) -> Result<StreamId, CircError> {
        let msg = RelayMsg::Resolve(Resolve {
            query: name.to_owned().into(),
        });
        self.open_stream(msg, now, true)
    }

    fn open_stream(
        &mut self,
        msg: RelayMsg<'_>,
        now: Instant,
        resolve: bool,
    ) -> Result<StreamId, CircError> {
        self.check_open()?;
        self.see(now);
        let hop = self
            .hops
            .len()
            .checked_sub(1)
            .ok_or(CircError::NoSuchHop { hop: 0, hops: 0 })?;
        let id = self.streams.alloc_id().ok_or(CircError::TooManyStreams)?;
        let body = encode_body(Some(id), &msg, "stream request")?;
        let deadline = Some(now + self.config.stream_timeout);
        let state = if resolve {
            StreamState::Resolving { deadline }
        } else {
            StreamState::Connecting { deadline }
        };
        let mut st = Stream::new(id, hop as u8, state);
        st.windowless = self
            .hops
            .get(hop)
            .is_some_and(|h| h.send.congestion_control().is_some());
        self.streams.insert(st);
        self.queue_relay(hop, body);
        Ok(id)
    }

    /// How many bytes [`Circuit::send`] would accept on `stream` now (stream and circuit
    /// windows of its hop, tor-spec §7.3–7.4).
    pub fn send_capacity(&self, stream: StreamId) -> usize {
        let Some(s) = self.streams.get(stream) else {
            return 0;
        };
        if s.state != StreamState::Open || self.closed {
            return 0;
        }
        let Some(h) = self.hops.get(usize::from(s.hop)) else {
            return 0;
        };
        h.send.capacity(s, self.last_now)
    }

    /// Queue `data` on an open stream as RELAY_DATA cells of up to 498 bytes. Returns how many
    /// bytes were taken: no more than the stream and circuit package windows allow (tor-spec
    /// §7.3: "sends no more RELAY_DATA cells until receiving a RELAY_SENDME").
    pub fn send(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, CircError> {
        self.check_open()?;
        let s = self
            .streams
            .get_mut(stream)
            .filter(|s| s.state == StreamState::Open)
            .ok_or(CircError::NoSuchStream(stream))?;
        let hop = usize::from(s.hop);
        let Some(flow) = self.hops.get_mut(hop) else {
            return Err(CircError::NoSuchStream(stream));
        };
        let (relay_out, stats) = (&mut self.relay_out, &mut self.stats);
        let taken = s.package(flow.send.limit(), self.last_now, data, |chunk, trigger| {
            stats.data_cells_sent += 1;
            relay_out.push_back(Queued {
                hop: hop as u8,
                early: false,
                sendme_trigger: trigger,
                raw: false,
                body: data_body(stream, chunk),
            });
        });
        Ok(taken)
    }

    /// Close a stream: send RELAY_END (reason MISC, the only reason an OP should send, tor-spec
    /// §6.3) and keep it half-closed until the other edge's END arrives or
    /// [`CircConfig::half_closed_timeout`] passes, whichever comes first. Meanwhile the cells
    /// the exit may still have sent (up to our deliver window of DATA, the SENDMEs it owes,
    /// a CONNECTED) are absorbed, more than that closes the circuit, and the id is not
    /// reused. The window starts at the latest `now` the circuit was given (this call takes
    /// none; the embedding's loop gives one with every cell and timeout).
    pub fn close_stream(&mut self, stream: StreamId) -> Result<(), CircError> {
        self.close_stream_with(stream, EndReason::MISC)
    }

    /// [`Circuit::close_stream`] with another END reason: for the edge of a stream this side
    /// did not originate (an onion service's stream, which C tor ends with DONE when its
    /// application closes it normally). An OP's own streams say MISC (tor-spec §6.3).
    pub fn close_stream_with(
        &mut self,
        stream: StreamId,
        reason: EndReason,
    ) -> Result<(), CircError> {
        self.check_open()?;
        let s = self
            .streams
            .live_mut(stream)
            .ok_or(CircError::NoSuchStream(stream))?;
        let hop = usize::from(s.hop);
        if matches!(s.state, StreamState::Resolving { .. }) {
            // No stream exists at the exit for a RESOLVE (tor-spec §6.4): just forget it.
            self.streams.remove(stream);
            return Ok(());
        }
        s.half_close(Some(self.last_now + self.config.half_closed_timeout));
        let body = encode_body(Some(stream), &RelayMsg::End(End::new(reason)), "END")?;
        self.queue_relay(hop, body);
        Ok(())
    }

    /// Send an arbitrary relay message to `hop` (for onion-service messages such as
    /// ESTABLISH_INTRO, or DROP padding). DATA must go through [`Circuit::send`].
    pub fn send_msg(
        &mut self,
        hop: usize,
        stream: Option<StreamId>,
        msg: &RelayMsg<'_>,
    ) -> Result<(), CircError> {
        self.check_hop(hop)?;
        if msg.cmd() == RelayCmd::DATA {
            return Err(CircError::Unexpected(Unexpected::RelayMsg(RelayCmd::DATA)));
        }
        let body = encode_body(stream, msg, "relay message")?;
        self.queue_relay(hop, body);
        Ok(())
    }

    /// Send a relay cell body built by the caller to `hop` (for tests, fuzzing and padding
    /// experiments): the circuit sets `recognized` and the digest and encrypts it, nothing
    /// else. A malformed header makes the hop close the circuit, as it should. Flow control
    /// is not applied: a DATA cell sent this way can overrun the hop's window.
    pub fn send_raw(
        &mut self,
        hop: usize,
        mut body: Box<CellBody>,
        early: bool,
    ) -> Result<(), CircError> {
        self.check_hop(hop)?;
        if early {
            if self.relay_early_left == 0 {
                return Err(CircError::RelayEarlyExhausted);
            }
            self.relay_early_left -= 1;
        }
        // 'Recognized' and the digest are the relay crypto's to set (tor-spec §6.1).
        body[RECOGNIZED_OFFSET..STREAM_ID_OFFSET].fill(0);
        body[DIGEST_OFFSET..LENGTH_OFFSET].fill(0);
        self.relay_out.push_back(Queued {
            hop: hop as u8,
            early,
            sendme_trigger: false,
            raw: true,
            body,
        });
        Ok(())
    }

    /// Ask hop `hop` to cut the circuit after itself (RELAY_TRUNCATE, tor-spec §5.4). Hops
    /// beyond it are dropped when RELAY_TRUNCATED arrives.
    pub fn truncate(&mut self, hop: usize) -> Result<(), CircError> {
        self.check_hop(hop)?;
        let body = encode_body(None, &RelayMsg::Truncate, "TRUNCATE")?;
        self.queue_relay(hop, body);
        Ok(())
    }

    /// Tear the circuit down with reason NONE: [`Circuit::destroy_with_reason`] for the
    /// ordinary close where nothing went wrong.
    pub fn destroy(&mut self) {
        self.destroy_with_reason(DestroyReason::NONE);
    }

    /// Tear the circuit down: queue DESTROY carrying `reason` (tor-spec §5.4, e.g.
    /// PROTOCOL when a hop broke the protocol) and end every stream. Does nothing on a
    /// circuit already closed: its DESTROY, if any, is already queued or sent.
    pub fn destroy_with_reason(&mut self, reason: DestroyReason) {
        if !self.closed {
            self.close(None, None);
            self.chan_out = Some(ChanMsg::Destroy(reason));
        }
    }

    fn check_open(&self) -> Result<(), CircError> {
        if self.closed {
            Err(CircError::Closed)
        } else {
            Ok(())
        }
    }

    /// The circuit is open and has a hop `hop` (0-based) to send to.
    fn check_hop(&self, hop: usize) -> Result<(), CircError> {
        self.check_open()?;
        if hop >= self.hops.len() {
            return Err(CircError::NoSuchHop {
                hop,
                hops: self.hops.len(),
            });
        }
        Ok(())
    }

    fn queue_relay(&mut self, hop: usize, body: Box<CellBody>) {
        self.relay_out.push_back(Queued {
            hop: hop as u8,
            early: false,
            sendme_trigger: false,
            raw: false,
            body,
        });
    }

    /// Close: drop queued relay cells, queue DESTROY (unless the peer destroyed it), end
    /// streams, report.
    fn close(&mut self, remote_reason: Option<DestroyReason>, error: Option<CircError>) {
        self.closed = true;
        self.pending = None;
        // No cell will ever be encrypted or decrypted again: free the hop states.
        self.crypto.truncate(0);
        self.idle_check = None;
        self.relay_out.clear();
        self.relay_out.shrink_to_fit();
        if remote_reason.is_none() {
            self.chan_out = Some(ChanMsg::Destroy(DestroyReason::NONE));
        }
        self.events
            .extend(self.streams.destroy_all().map(CircEvent::Stream));
        self.events.push_back(CircEvent::Closed {
            remote_reason,
            error,
        });
    }

    /// Close the circuit on a fatal error found while handling an input: DESTROY queued,
    /// streams ended, and the error reported once, in [`CircEvent::Closed`].
    fn fail(&mut self, err: CircError) {
        if !self.closed {
            self.close(None, Some(err));
        }
    }

    /// Handle a cell the channel delivered for this circuit.
    ///
    /// Nothing is returned: a cell is never the caller's mistake. A cell that breaks the
    /// protocol (unrecognised by every hop, malformed, out of place, a window overrun, a
    /// handshake reply that does not verify) closes the circuit (tor-spec §5.4, §5.5.3):
    /// DESTROY is queued for [`Circuit::poll_cell`] and the error arrives once, as
    /// [`CircEvent::Closed`] from [`Circuit::poll_event`]. A cell for a closed circuit is
    /// ignored.
    pub fn handle_cell(&mut self, now: Instant, msg: ChanMsg<'_>) {
        self.see(now);
        if self.closed {
            // tor-spec §5.4: after DESTROY, ignore everything for the circuit.
            return;
        }
        if let Err(e) = self.on_cell(msg) {
            self.fail(e);
        }
    }

    /// [`Circuit::handle_cell`] on an open circuit; an error is fatal.
    fn on_cell(&mut self, msg: ChanMsg<'_>) -> Result<(), CircError> {
        match msg {
            ChanMsg::Created2(c) => self.handle_created(&c.hdata, false),
            ChanMsg::CreatedFast { y, kh } => {
                let mut reply = [0u8; 40];
                reply[..20].copy_from_slice(&y);
                reply[20..].copy_from_slice(&kh);
                self.handle_created(&reply, true)
            }
            ChanMsg::Relay(p) => {
                self.mark_used();
                self.handle_relay(p)
            }
            ChanMsg::RelayEarly(_) => Err(CircError::Unexpected(Unexpected::InboundRelayEarly)),
            ChanMsg::Destroy(reason) => {
                self.close(Some(reason), None);
                Ok(())
            }
            ChanMsg::Padding | ChanMsg::Vpadding { .. } => Ok(()),
            other => Err(CircError::Unexpected(Unexpected::ChanCell(other.cmd()))),
        }
    }

    fn handle_created(&mut self, reply: &[u8], fast: bool) -> Result<(), CircError> {
        let cmd = if fast {
            onion_cell::ChanCmd::CREATED_FAST
        } else {
            onion_cell::ChanCmd::CREATED2
        };
        if !self.hops.is_empty() {
            return Err(CircError::Unexpected(Unexpected::ChanCell(cmd)));
        }
        match &self.pending {
            Some(Pending {
                handshake: PendingHandshake::Fast(_),
                ..
            }) if fast => {}
            Some(Pending {
                handshake: PendingHandshake::Ntor(_) | PendingHandshake::NtorV3(_),
                ..
            }) if !fast => {}
            _ => return Err(CircError::Unexpected(Unexpected::ChanCell(cmd))),
        }
        self.finish_handshake(reply)
    }

    /// Complete the pending handshake with `reply` and add the hop.
    fn finish_handshake(&mut self, reply: &[u8]) -> Result<(), CircError> {
        let hop = self.hops.len();
        let Some(pending) = self.pending.take() else {
            return Err(CircError::Unexpected(Unexpected::RelayMsg(
                RelayCmd::EXTENDED2,
            )));
        };
        let fast = matches!(pending.handshake, PendingHandshake::Fast(_));
        let mut server_msg = None;
        let keys = match pending.handshake {
            PendingHandshake::Ntor(p) => p.finish(reply),
            PendingHandshake::NtorV3(p) => p.finish(reply).map(|(msg, keys)| {
                server_msg = Some(msg);
                keys
            }),
            PendingHandshake::Fast(p) => p.finish(reply),
        };
        let keys = match keys {
            Ok(k) => k,
            Err(err) => return Err(CircError::Handshake { hop, err }),
        };
        let cc = match self.negotiated_cc(pending.cc_requested, server_msg.as_deref()) {
            Ok(cc) => cc,
            Err(err) => return Err(CircError::CongestionControl { hop, err }),
        };
        let layer = hop_from_keys(&keys)?;
        let mut kh = HopKh([0; KH_LEN]);
        if fast {
            // CREATED_FAST carries KH itself (tor-spec §5.1.5: Y | KH).
            match reply.get(20..20 + KH_LEN) {
                Some(k) => kh.0.copy_from_slice(k),
                None => return Err(CircError::HandshakeUnsupported("CREATED_FAST length")),
            }
        } else {
            match keys.expand(tor1::TOR1_KEY_LEN + KH_LEN) {
                Ok(m) => kh.0.copy_from_slice(&m[tor1::TOR1_KEY_LEN..]),
                Err(e) => {
                    return Err(CircError::Handshake {
                        hop,
                        err: onion_crypto::HandshakeError::Kdf(e),
                    })
                }
            }
        }
        self.crypto.add_hop(layer);
        // A new hop's schedules are expanded: the idle check must run.
        self.mark_used();
        self.hops
            .push(HopFlow::new(self.config.accept_sendme_v0, Some(kh), cc));
        self.events.push_back(CircEvent::HopAdded {
            hops: self.hops.len(),
        });
        Ok(())
    }

    /// The outcome of congestion-control negotiation from the ntor-v3 server message
    /// (proposal 324 §4.1): `Some` if we asked and the relay answered `CC_FIELD_RESPONSE`
    /// with an acceptable `sendme_inc`; `None` if we did not ask or it declined (no such
    /// extension). Unknown extensions are ignored, as C tor does.
    fn negotiated_cc(
        &self,
        requested: bool,
        server_msg: Option<&[u8]>,
    ) -> Result<Option<CongestionControl>, CcError> {
        let Some(msg) = server_msg else {
            return Ok(None);
        };
        // C tor answers a request-less handshake with an empty message or an empty list.
        if msg.is_empty() {
            return Ok(None);
        }
        let exts = ExtList::decode_all(msg).map_err(CcError::BadExtensions)?;
        let Some(resp) = exts.get::<CcResponse>() else {
            return Ok(None);
        };
        let resp = resp.map_err(CcError::BadExtensions)?;
        let cfg = match (requested, self.config.congestion_control.as_deref()) {
            (true, Some(cfg)) => *cfg,
            _ => return Err(CcError::UnrequestedResponse),
        };
        if !cfg.sendme_inc_acceptable(resp.sendme_inc) {
            return Err(CcError::SendmeIncOutOfRange {
                got: resp.sendme_inc,
                consensus: cfg.sendme_inc,
            });
        }
        Ok(Some(CongestionControl::new(CcConfig {
            sendme_inc: resp.sendme_inc,
            ..cfg
        })))
    }

    fn handle_relay(&mut self, payload: RelayPayload<'_>) -> Result<(), CircError> {
        // The channel hands over an owned body: decrypt it in place, no copy.
        let mut body = payload.into_box();
        let hop = match self.crypto.decrypt_inbound(&mut body) {
            Ok(h) => h,
            Err(_) => return Err(CircError::NotRecognized),
        };
        if body[CMD_OFFSET] == RelayCmd::DATA.0 {
            // The bulk of the traffic: handed to the embedding in the cell's own buffer, with
            // no copy (see `data_bytes`).
            let (stream, len) = match data_cell_header(&body) {
                Ok(h) => h,
                Err(err) => return Err(CircError::Malformed { hop, err }),
            };
            return self.on_data(hop, stream, move || data_bytes(body, len));
        }
        let cell = match RelayCell::decode(&body) {
            Ok(c) => c,
            Err(err) => return Err(CircError::Malformed { hop, err }),
        };
        let stream = StreamId::to_field(cell.stream_id);
        self.dispatch(hop, stream, cell.msg)
    }

    fn dispatch(&mut self, hop: usize, stream: u16, msg: RelayMsg<'_>) -> Result<(), CircError> {
        let unexpected = |m: &RelayMsg<'_>| CircError::Unexpected(Unexpected::RelayMsg(m.cmd()));
        match msg {
            RelayMsg::Data(d) => self.on_data(hop, stream, move || d.into_bytes()),
            RelayMsg::Sendme(sm) => {
                if stream == 0 {
                    let flow = self.hops.get_mut(hop).ok_or(CircError::NotRecognized)?;
                    let tag = match &sm.tag {
                        Some(t) => SendmeTag::V1(t),
                        None => SendmeTag::V0,
                    };
                    flow.send
                        .on_sendme(tag, self.last_now, 0)
                        .map_err(|e| match e {
                            SendmeError::Flow(err) => CircError::Flow { hop, err },
                            SendmeError::Cc(err) => CircError::CongestionControl { hop, err },
                        })?;
                    self.stats.circ_sendmes_received += 1;
                    Ok(())
                } else {
                    let Some(s) = StreamId::new(stream).and_then(|id| self.streams.get_mut(id))
                    else {
                        return Ok(());
                    };
                    if s.on_sendme()? == Admit::Process {
                        self.stats.stream_sendmes_received += 1;
                    }
                    Ok(())
                }
            }
            RelayMsg::Connected(c) => {
                let Some(id) = StreamId::new(stream) else {
                    return Err(unexpected(&RelayMsg::Connected(c)));
                };
                let Some(s) = self.streams.get_mut(id) else {
                    return Ok(());
                };
                if s.on_connected()? == Admit::Process {
                    self.events.push_back(CircEvent::StreamConnected {
                        stream: id,
                        addr: c.addr,
                    });
                }
                Ok(())
            }
            RelayMsg::End(end) => {
                let Some(id) = StreamId::new(stream) else {
                    return Err(unexpected(&RelayMsg::End(end)));
                };
                if let Some(s) = self.streams.remove(id) {
                    if !s.is_half_closed() {
                        self.events.push_back(CircEvent::Stream(StreamEvent::Ended {
                            stream: id,
                            reason: end.reason,
                        }));
                    }
                    self.streams.shrink();
                }
                Ok(())
            }
            RelayMsg::Resolved(r) => {
                let Some(id) = StreamId::new(stream) else {
                    return Err(unexpected(&RelayMsg::Resolved(r)));
                };
                match self.streams.get(id).map(|s| s.state) {
                    Some(StreamState::Resolving { .. }) => {
                        self.streams.remove(id);
                        self.events.push_back(CircEvent::Resolved {
                            stream: id,
                            answers: r.answers.into_iter().map(own_answer).collect(),
                        });
                        Ok(())
                    }
                    Some(_) => Err(unexpected(&RelayMsg::Resolved(r))),
                    None => Ok(()),
                }
            }
            RelayMsg::Extended2(e) => {
                if hop + 1 != self.hops.len() || self.pending.is_none() {
                    return Err(unexpected(&RelayMsg::Extended2(e)));
                }
                let hdata = e.hdata.into_owned();
                self.finish_handshake(&hdata)
            }
            RelayMsg::Truncated(reason) => {
                let keep = hop + 1;
                self.crypto.truncate(keep);
                self.hops.truncate(keep);
                self.relay_out.retain(|q| usize::from(q.hop) < keep);
                self.pending = None;
                let gone: Vec<StreamId> = self
                    .streams
                    .iter()
                    .filter(|s| usize::from(s.hop) >= keep)
                    .map(|s| s.id)
                    .collect();
                for id in gone {
                    if let Some(s) = self.streams.remove(id) {
                        if !s.is_half_closed() {
                            self.events.push_back(CircEvent::Stream(StreamEvent::Ended {
                                stream: id,
                                reason: EndReason::DESTROY,
                            }));
                        }
                    }
                }
                self.events
                    .push_back(CircEvent::Truncated { hops: keep, reason });
                Ok(())
            }
            RelayMsg::Drop => Ok(()),
            RelayMsg::Xoff | RelayMsg::Xon(_) => self.on_xon_xoff(hop, stream, msg),
            RelayMsg::Begin(b) => self.incoming_begin(hop, stream, b),
            // Forward-only commands have no business arriving at the client; tor-spec §6.1
            // says an ununderstood recognised cell is dropped, and C tor drops these too.
            RelayMsg::BeginDir
            | RelayMsg::Resolve(_)
            | RelayMsg::Extend(_)
            | RelayMsg::Extend2(_)
            | RelayMsg::Truncate
            | RelayMsg::Extended(_) => Ok(()),
            RelayMsg::Unknown { .. } => Ok(()),
            other => {
                self.events.push_back(CircEvent::Msg {
                    hop,
                    stream: StreamId::new(stream),
                    msg: Box::new(other.into_owned()),
                });
                Ok(())
            }
        }
    }

    /// XOFF / XON from the other edge of a stream (proposal 324 §4.1.1): XOFF stops our
    /// sending on it until XON. They count only on a congestion-controlled stream from its
    /// own hop; elsewhere (stream 0, an unknown or half-closed stream, a stream without
    /// congestion control, another hop) they are dropped and the circuit stays, as C tor's
    /// client does (`circuit_process_stream_xoff`/`_xon` refuse them, and relay.c closes
    /// nothing). An XON's advisory rate paces our sending on the stream from then on, as C
    /// tor adjusts the edge's token bucket (rate 0: unlimited).
    fn on_xon_xoff(&mut self, hop: usize, stream: u16, msg: RelayMsg<'_>) -> Result<(), CircError> {
        let now = self.last_now;
        let own_hop = |s: &&mut Stream| usize::from(s.hop) == hop;
        if let Some(s) = StreamId::new(stream)
            .and_then(|id| self.streams.get_mut(id))
            .filter(own_hop)
        {
            s.on_xon_xoff(&msg, now, &mut self.stats);
        }
        Ok(())
    }

    /// RELAY_DATA from `hop` on `stream`: counted by the circuit's deliver window (tor-spec
    /// §7.3, for every stream, known or not), then by the stream's (§7.4) and handed to the
    /// embedding; dropped for an unknown stream (§6.2.1) and absorbed for a half-closed one
    /// (§6.3). `data` makes the bytes only when they are delivered.
    fn on_data(
        &mut self,
        hop: usize,
        stream: u16,
        data: impl FnOnce() -> Bytes,
    ) -> Result<(), CircError> {
        let flow = self.hops.get_mut(hop).ok_or(CircError::NotRecognized)?;
        let due = flow
            .recv
            .take()
            .map_err(|err| CircError::Flow { hop, err })?;
        if due {
            self.queue_circ_sendme(hop)?;
        }
        let Some(id) = StreamId::new(stream) else {
            return Err(CircError::Unexpected(Unexpected::RelayMsg(RelayCmd::DATA)));
        };
        let Some(s) = self
            .streams
            .get_mut(id)
            .filter(|s| usize::from(s.hop) == hop)
        else {
            // tor-spec §6.2.1: DATA for an unrecognised stream is dropped.
            return Ok(());
        };
        if s.on_data()? == Admit::Process {
            self.stats.data_cells_received += 1;
            self.events.push_back(CircEvent::Stream(StreamEvent::Data {
                stream: id,
                data: data(),
            }));
        }
        Ok(())
    }

    /// Queue an authenticated circuit SENDME to `hop`, carrying the digest of the DATA cell
    /// just received (tor-spec §7.3.1).
    fn queue_circ_sendme(&mut self, hop: usize) -> Result<(), CircError> {
        let tag = sendme_tag(self.crypto.last_received_digest(hop).unwrap_or_default());
        let body = encode_body(None, &RelayMsg::Sendme(Sendme { tag: Some(tag) }), "SENDME")?;
        self.stats.circ_sendmes_sent += 1;
        self.queue_relay(hop, body);
        Ok(())
    }

    /// Handle the passing of time: the build timeout, stream connect/resolve timeouts,
    /// half-closed windows, XON pacing and the idle check.
    ///
    /// Nothing is returned, as for [`Circuit::handle_cell`]: a hop that does not answer
    /// CREATE2/EXTEND2 in time ([`CircConfig::build_timeout`]) closes the circuit and the
    /// [`CircError::BuildTimeout`] arrives once, as [`CircEvent::Closed`]; a stream whose
    /// BEGIN or RESOLVE went unanswered ends with [`StreamEvent::Ended`] (TIMEOUT).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.see(now);
        if self.closed {
            return;
        }
        if let Some(p) = &self.pending {
            if p.deadline <= now {
                let hop = self.hops.len();
                return self.fail(CircError::BuildTimeout { hop });
            }
        }
        // A stream paced by an XON's rate may send again: the embedding offers its data.
        for s in self.streams.iter_mut() {
            s.unpace(now);
        }
        let mut gone = false;
        for s in self.streams.expire(now) {
            gone = true;
            // A half-closed stream's window ran out: forget it quietly (the embedding
            // closed it itself). A connect or resolve attempt timed out: tell.
            if !s.is_half_closed() {
                self.events.push_back(CircEvent::Stream(StreamEvent::Ended {
                    stream: s.id,
                    reason: EndReason::TIMEOUT,
                }));
            }
        }
        if gone {
            self.streams.shrink();
        }
        if self.idle_check.is_some_and(|t| t <= now) {
            if self.used {
                // Something happened during the last period: look again one period later.
                self.used = false;
                self.idle_check = self.config.idle_after.map(|d| now + d);
            } else {
                self.idle_check = None;
                self.compact();
            }
        }
    }

    /// When [`Circuit::handle_timeout`] must next be called: the build timeout, a stream's
    /// connect/resolve timeout or half-closed window, or the idle check
    /// ([`CircConfig::idle_after`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let paced = self.streams.iter().filter_map(Stream::paced_until).min();
        [
            self.pending.as_ref().map(|p| p.deadline),
            self.streams.next_deadline(),
            self.idle_check,
            paced,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Free the hops' expanded key schedules now (as [`CircConfig::idle_after`] does after
    /// an idle period), for an embedding that knows the circuit will be idle, e.g. a
    /// pre-built circuit put in a pool. Nothing observable changes: the next cell through a
    /// hop rebuilds its schedule from the kept key.
    pub fn compact(&mut self) {
        self.crypto.compact();
        self.compacted = true;
        // Spare capacity left by the build and by bursts is returned too (not per cell:
        // the queues keep their capacity while the circuit is busy).
        self.hops.shrink_to_fit();
        self.streams.shrink();
        if self.relay_out.is_empty() {
            self.relay_out = VecDeque::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
    }

    /// Whether the hops' key schedules are currently freed (no cell since the last
    /// [`Circuit::compact`] or idle period).
    pub fn is_compact(&self) -> bool {
        self.compacted
    }

    /// Remember the latest time an input carried.
    fn see(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// A cell went through the crypto: the schedules are (again) expanded, and the idle
    /// check must run.
    fn mark_used(&mut self) {
        self.used = true;
        self.compacted = false;
        if self.idle_check.is_none() {
            self.idle_check = self.config.idle_after.map(|d| self.last_now + d);
        }
    }

    /// The next cell to send on the channel: DESTROY first, then relay cells in order, each
    /// padded, digested for its hop and encrypted (tor-spec §5.5.2.1, §6.1).
    pub fn poll_cell(&mut self, rng: &mut impl CryptoRngCore) -> Option<ChanMsg<'static>> {
        if let Some(m) = self.chan_out.take() {
            return Some(m);
        }
        let (q, hop) = loop {
            let mut q = self.relay_out.pop_front()?;
            if self.relay_out.is_empty() && self.relay_out.capacity() > 64 {
                self.relay_out.shrink_to_fit();
            }
            if !q.raw {
                pad_body(&mut q.body, rng);
            }
            let hop = usize::from(q.hop);
            // A hop that went away (TRUNCATED) after the cell was queued: drop the cell.
            if self.crypto.encrypt_outbound(&mut q.body, hop).is_ok() {
                break (q, hop);
            }
        };
        self.mark_used();
        // Conceal the circuit length: the first few cells beyond the guard go as RELAY_EARLY
        // too, like EXTEND2 (tor-spec §5.6), never more than MAX_RELAY_EARLY in all.
        let early = q.early
            || (hop > 0 && !q.raw && self.relay_early_left > RELAY_EARLY_RESERVED_FOR_EXTEND);
        if early && !q.early {
            self.relay_early_left -= 1;
        }
        if q.sendme_trigger {
            if let (Some(d), Some(flow)) =
                (self.crypto.last_sent_digest(hop), self.hops.get_mut(hop))
            {
                flow.send.record_digest(d);
            }
        }
        let payload = RelayPayload::Owned(q.body);
        Some(if early {
            ChanMsg::RelayEarly(payload)
        } else {
            ChanMsg::Relay(payload)
        })
    }

    /// Whether cells are waiting for [`Circuit::poll_cell`].
    pub fn has_output(&self) -> bool {
        self.chan_out.is_some() || !self.relay_out.is_empty()
    }

    /// The next event for the embedding.
    ///
    /// Handing out a [`StreamEvent::Data`] counts as the application taking the bytes: that is
    /// when stream SENDMEs are queued (tor-spec §7.4), so an embedding that stops polling
    /// stops the exit's stream after 500 cells.
    pub fn poll_event(&mut self) -> Option<CircEvent> {
        let e = self.events.pop_front();
        match &e {
            Some(CircEvent::Stream(StreamEvent::Data { stream, .. })) => self.delivered(*stream),
            None if self.events.capacity() > 64 => self.events.shrink_to_fit(),
            _ => {}
        }
        e
    }

    /// Hold (`true`) or release stream `stream`'s flow: while held, its data still arrives as
    /// events but no stream SENDME is sent (tor-spec §7.4), so the exit stops after one
    /// stream window (500 cells) while the circuit's other streams go on. For an embedding
    /// whose consumer of this one stream is slow (a SOCKS client not reading): holding the
    /// stream bounds what it must buffer to one window without stalling the circuit.
    /// Releasing sends the SENDMEs that were held back. On a congestion-controlled circuit,
    /// which has no stream windows, holding sends RELAY_XOFF once and releasing sends
    /// RELAY_XON (proposal 324 §4.1.1). Unknown streams are ignored.
    pub fn hold_stream(&mut self, stream: StreamId, hold: bool) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        s.held = hold;
        let hop = usize::from(s.hop);
        if s.windowless {
            // Congestion control: no stream SENDMEs to withhold; XOFF stops the other edge
            // and XON lets it go on, advising the drain rate measured by
            // [`Circuit::note_stream_buffer`] (0, no advice, if none was).
            let half_closed = s.is_half_closed();
            let fc = s.flowctl.get_or_insert_with(Default::default);
            let sig = if hold && !s.xoff_sent && !half_closed {
                fc.drain.xoff(&mut s.xoff_sent)
            } else if !hold && s.xoff_sent {
                fc.drain.xon(&mut s.xoff_sent)
            } else {
                return;
            };
            self.queue_flow_signal(stream, hop, sig);
            return;
        }
        let n = s.sendmes_due();
        self.queue_stream_sendmes(stream, hop, n);
    }

    /// The embedding wrote `written` bytes of `stream` to its application and still holds
    /// `buffered` bytes of it: on a congestion-controlled hop, RELAY_XOFF goes to the other
    /// edge once more than `cc_xoff_client` cells wait, RELAY_XON once they have drained,
    /// and advisory XONs with the measured drain rate when it changes (proposal 324 §4.1.1;
    /// C tor's `flow_control_decide_xoff` / `flow_control_decide_xon`, see
    /// [`DrainRate`](crate::cc::flowctl::DrainRate)). Call it when data is buffered (with
    /// `written` 0) and whenever some is written out. An alternative to
    /// [`Circuit::hold_stream`] for an embedding that knows its buffer; without congestion
    /// control it does nothing (stream windows push back, tor-spec §7.4).
    pub fn note_stream_buffer(
        &mut self,
        now: Instant,
        stream: StreamId,
        written: usize,
        buffered: usize,
    ) {
        self.see(now);
        if self.closed {
            return;
        }
        let p = self.config.flow_control;
        let Some(s) = self
            .streams
            .get_mut(stream)
            .filter(|s| s.windowless && s.state == StreamState::Open)
        else {
            return;
        };
        let hop = usize::from(s.hop);
        let signals = s.note_buffer(&p, now, written, buffered, p.xoff_client_bytes());
        for sig in signals.into_iter().flatten() {
            self.queue_flow_signal(stream, hop, sig);
        }
    }

    /// Queue RELAY_XOFF or RELAY_XON on `stream` toward `hop`.
    fn queue_flow_signal(&mut self, stream: StreamId, hop: usize, sig: FlowSignal) {
        let msg = flow_signal_msg(sig, &mut self.stats);
        if let Ok(body) = encode_body(Some(stream), &msg, "XON/XOFF") {
            self.queue_relay(hop, body);
        }
    }

    fn delivered(&mut self, stream: StreamId) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let (hop, n) = (usize::from(s.hop), s.on_delivered());
        self.queue_stream_sendmes(stream, hop, n);
    }

    /// Queue `n` stream SENDMEs for `stream` toward `hop`.
    fn queue_stream_sendmes(&mut self, stream: StreamId, hop: usize, n: u16) {
        for _ in 0..n {
            if let Ok(body) = encode_body(
                Some(stream),
                &RelayMsg::Sendme(Sendme { tag: None }),
                "SENDME",
            ) {
                self.stats.stream_sendmes_sent += 1;
                self.queue_relay(hop, body);
            }
        }
    }
}

/// Inputs with the error they closed the circuit with, for the crate's tests: what an
/// embedding learns from the [`CircEvent::Closed`] the input queued (the event stays queued).
#[cfg(test)]
impl Circuit {
    /// [`Circuit::handle_cell`], then `Err` with the error if this cell closed the circuit.
    pub(crate) fn try_cell(&mut self, now: Instant, msg: ChanMsg<'_>) -> Result<(), CircError> {
        let was_closed = self.closed;
        self.handle_cell(now, msg);
        self.close_error(was_closed)
    }

    /// [`Circuit::handle_timeout`], then `Err` with the error if the timeout closed it.
    pub(crate) fn try_timeout(&mut self, now: Instant) -> Result<(), CircError> {
        let was_closed = self.closed;
        self.handle_timeout(now);
        self.close_error(was_closed)
    }

    fn close_error(&self, was_closed: bool) -> Result<(), CircError> {
        if was_closed || !self.closed {
            return Ok(());
        }
        let closed = self.events.iter().rev().find_map(|e| match e {
            CircEvent::Closed { error, .. } => Some(error.clone()),
            _ => None,
        });
        match closed {
            Some(Some(e)) => Err(e),
            Some(None) => Ok(()),
            None => panic!("closed without a Closed event"),
        }
    }
}

fn own_answer(a: ResolvedAnswer<'_>) -> ResolvedAnswer<'static> {
    use onion_cell::relaymsg::ResolvedValue as V;
    let value = match a.value {
        V::Hostname(h) => V::Hostname(h.into_owned().into()),
        V::Ip(ip) => V::Ip(ip),
        V::TransientError(e) => V::TransientError(e.into_owned().into()),
        V::NontransientError(e) => V::NontransientError(e.into_owned().into()),
        V::Unknown { answer_type, value } => V::Unknown {
            answer_type,
            value: value.into_owned().into(),
        },
    };
    ResolvedAnswer { value, ttl: a.ttl }
}
