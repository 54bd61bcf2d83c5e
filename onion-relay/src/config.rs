//! What a relay is told at start: its role ([`RelayConfig`]) and the bound of every queue and
//! rate it keeps ([`Limits`]).

use core::time::Duration;
use std::net::IpAddr;

use onion_circuit::relay::RelayConfig as CircRelayConfig;
use onion_dir::consensus::NetParams;
use onion_dir::policy::ExitPolicy;
use onion_hs::relay::{HsDirLimits, IntroDosParams};

use crate::tls::TlsLinkCert;

/// How a relay runs. Start from [`RelayConfig::new`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Our public addresses, sent as MYADDR in NETINFO (tor-spec §4.5) and refused as
    /// EXTEND2 and exit targets (a relay does not extend or exit to itself).
    pub addresses: Vec<IpAddr>,
    /// The exit policy (dir-spec §2.1.3, first matching rule wins). `None`: not an exit,
    /// BEGIN is answered with END EXITPOLICY and RESOLVE with a non-transient error, as a
    /// relay whose policy is `reject *:*` does.
    pub exit_policy: Option<ExitPolicy>,
    /// Refuse exit connections to private, loopback, link-local and unspecified addresses
    /// and to our own addresses whatever the policy says (C tor's `ExitPolicyRejectPrivate`,
    /// default on).
    pub exit_reject_private: bool,
    /// Extend circuits to relays at private addresses (C tor's
    /// `ExtendAllowPrivateAddresses`, off by default, on in testing networks).
    pub extend_allow_private: bool,
    /// Answer BEGIN_DIR as a directory cache from [`crate::Relay::set_directory_documents`]
    /// (tor-spec §6.2.1). Off: BEGIN_DIR is answered with END NOTDIRECTORY.
    pub dir_cache: bool,
    /// Store and serve v3 onion-service descriptors over BEGIN_DIR (rend-spec-v3 §2.2,
    /// `POST /tor/hs/3/publish`, `GET /tor/hs/3/<blinded key>`). BEGIN_DIR is then accepted
    /// even without [`RelayConfig::dir_cache`]; other documents are answered 404 unless
    /// the cache holds them. Off: the onion-service requests get 404 like any document the
    /// cache does not hold.
    pub hs_dir: bool,
    /// Act as an introduction point (rend-spec-v3 §3: ESTABLISH_INTRO, INTRODUCE1 relayed as
    /// INTRODUCE2). Off: those messages close their circuit (TORPROTOCOL).
    pub intro_point: bool,
    /// Act as a rendezvous point (rend-spec-v3 §4: ESTABLISH_RENDEZVOUS, RENDEZVOUS1 joining
    /// two circuits). Off: those messages close their circuit (TORPROTOCOL).
    pub rend_point: bool,
    /// What circuits ending here offer (congestion control, proposal 324).
    pub circuits: CircRelayConfig,
    /// The TLS certificate and key the embedder's TLS server presents. `None`: a fresh
    /// RSA-2048 certificate is made by [`crate::Relay::new`] (slow: hundreds of
    /// milliseconds).
    pub link_cert: Option<TlsLinkCert>,
    /// Verify initiators that authenticate (tor-spec §4.4.2; [`crate::Event::TlsExporter`]
    /// asks for the TLS exporter value). Default on. Off (an embedder without TLS exporter
    /// values), every initiator counts as an unauthenticated client: EXTEND2 cannot reuse
    /// channels other relays opened to us, and their CREATE cells count against the
    /// per-address limits unless their addresses are given to
    /// [`crate::Relay::set_relay_addresses`].
    pub verify_initiator_auth: bool,
    /// Send a PADDING cell on a channel idle this long (tor-spec §3; C tor's
    /// `KeepalivePeriod`, 5 minutes).
    pub keepalive: Option<Duration>,
    /// Free the expanded AES key schedules (2 × 704 bytes a circuit) of circuits no cell
    /// went through for this long (one to two such periods: one sweep of all circuits per
    /// period); the next cell rebuilds them (about 50 ns each). Default 5 seconds, as the
    /// client's circuits (`CircConfig::idle_after`). `None`: never.
    pub compact_idle: Option<Duration>,
    /// C tor's `CircuitPriorityHalflife` option, in seconds: the half-life of the cell
    /// counts by which the circuits sharing a channel take turns (EWMA scheduling). Negative
    /// (the default, -1): the consensus's `CircuitPriorityHalflifeMsec`
    /// ([`ConsensusParams::circuit_priority_halflife`]), 30 s until one is given; under
    /// 0.00001 (0 included): 30 s, as C tor treats a value too small to be a half-life.
    /// See [`circuit_priority_halflife`].
    pub circuit_priority_halflife: f64,
    /// Bounds and rates.
    pub limits: Limits,
}

impl RelayConfig {
    /// A middle/guard relay at `addresses`: no exit, no directory cache, C tor's limits.
    pub fn new(addresses: Vec<IpAddr>) -> Self {
        RelayConfig {
            addresses,
            exit_policy: None,
            exit_reject_private: true,
            extend_allow_private: false,
            dir_cache: false,
            hs_dir: false,
            intro_point: true,
            rend_point: true,
            circuits: CircRelayConfig::default(),
            link_cert: None,
            verify_initiator_auth: true,
            keepalive: Some(Duration::from_secs(300)),
            compact_idle: Some(Duration::from_secs(5)),
            circuit_priority_halflife: -1.0,
            limits: Limits::default(),
        }
    }
}

/// Every bound a relay keeps, each with its reaction when reached (dos-spec, C tor 0.4.9's
/// defaults where it has one).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Connections (inbound and outbound) held at once. Reaction: a new inbound
    /// connection is refused ([`crate::Relay::handle_accepted`] returns an error); an
    /// EXTEND2 needing a new connection fails with DESTROY (RESOURCELIMIT).
    pub max_connections: usize,
    /// Concurrent inbound connections from one client address (dos-spec
    /// `DoSConnectionMaxConcurrentCount`, default 100). Reaction: a new connection from it
    /// is refused (`DoSConnectionDefenseType` 2, "immediately close new connections").
    /// Addresses of known relays ([`crate::Relay::set_relay_addresses`]) are exempt.
    pub max_conns_per_addr: usize,
    /// Circuits one channel may carry (C tor has only the circuit-id space; this bounds a
    /// single peer's share). Reaction: CREATE beyond it is answered with DESTROY
    /// (RESOURCELIMIT) by the channel.
    pub circuits_per_channel: usize,
    /// Circuit creation rate per client address (dos-spec `DoSCircuitCreationRate`,
    /// default 3 per second), applied once the address has at least
    /// [`Limits::create_min_conns`] connections open.
    pub create_rate: u32,
    /// The burst of that token bucket (`DoSCircuitCreationBurst`, default 90).
    pub create_burst: u32,
    /// Connections an address needs before the creation rate applies
    /// (`DoSCircuitCreationMinConnections`, default 3).
    pub create_min_conns: usize,
    /// How long an address that emptied its bucket is refused
    /// (`DoSCircuitCreationDefenseTimePeriod`, default 1 hour). Reaction: every CREATE from
    /// it is answered with DESTROY (RESOURCELIMIT) meanwhile
    /// (`DoSCircuitCreationDefenseType` 2).
    pub create_defense_period: Duration,
    /// Input bytes held for a channel that has not yet processed them. Reaction: the
    /// channel is closed.
    pub channel_inbound: usize,
    /// Output bytes a channel holds before circuits stop moving cells onto it (they wait
    /// in the circuits' queues, bounded by [`Limits::circuit_queue_cells`]).
    pub channel_outbound: usize,
    /// Cells one circuit may hold in one direction (C tor's consensus parameter
    /// `circ_max_cell_queue_size`, default 50000). Reaction: the circuit is closed, DESTROY
    /// (RESOURCELIMIT) both ways.
    pub circuit_queue_cells: usize,
    /// All queued bytes together (C tor's `MaxMemInQueues`): circuit cell queues, channel
    /// input and output buffers, exit stream buffers. Reaction (dos-spec "Responding to low
    /// memory", C tor's `circuits_handle_oom`): circuits are closed, DESTROY
    /// (RESOURCELIMIT) both ways, the one whose oldest queued data has waited longest
    /// first, until the total is below 90% of this.
    pub max_queued_bytes: usize,
    /// Bytes an exit stream buffers in each direction. Toward the target: beyond it the
    /// circuit's cells are held (no stream SENDME, or XOFF under congestion control,
    /// reaches the client). From the target: [`crate::Relay::handle_target_data`] takes no
    /// more until [`crate::Event::ResumeTarget`].
    pub stream_buffer: usize,
    /// Exit and directory streams at once over all circuits. Reaction: BEGIN, BEGIN_DIR
    /// and RESOLVE beyond it are answered with END (RESOURCELIMIT).
    pub max_streams: usize,
    /// Bytes of one directory request. Reaction: the stream ends (RESOURCELIMIT). An HSDir
    /// takes up to [`HsDirLimits::max_descriptor`] more for a descriptor upload.
    pub max_dir_request: usize,
    /// Bytes of one directory answer. Reaction: 503 (the request asked for too much).
    pub max_dir_response: usize,
    /// How long an open channel may carry no circuit. Reaction: it is closed
    /// ([`crate::Event::Disconnect`]), as C tor closes channels that had no circuits for 3
    /// to 4.5 minutes (`channelpadding_get_channel_idle_timeout`). Default 3 minutes.
    pub channel_idle: Duration,
    /// How long an outbound connection (EXTEND2) may take to open. Reaction: the circuits
    /// waiting for it get DESTROY (CONNECTFAILED).
    pub connect_timeout: Duration,
    /// How long an exit's TCP connect may take. Reaction: END (TIMEOUT), the target
    /// connection is abandoned ([`crate::Event::CloseTarget`]).
    pub target_connect_timeout: Duration,
    /// How long a name resolution may take. Reaction: END (RESOLVEFAILED) / a transient
    /// RESOLVED error.
    pub resolve_timeout: Duration,
    /// The HSDir's store: descriptor size (param-spec `HSV3MaxDescriptorSize`, 50 000),
    /// descriptors and bytes held. Reactions: a larger descriptor is refused with 400; when
    /// the store is full the descriptors stored earliest are evicted to make room (as C
    /// tor's out-of-memory handler cleans its HSDir cache oldest first).
    pub hsdir: HsDirLimits,
    /// Introduction circuits registered at once (ESTABLISH_INTRO). Reaction: a further
    /// ESTABLISH_INTRO (for a new auth key) closes its circuit with DESTROY (RESOURCELIMIT).
    pub max_intro_circuits: usize,
    /// Rendezvous cookies waiting for their RENDEZVOUS1. Reaction: a further
    /// ESTABLISH_RENDEZVOUS closes its circuit with DESTROY (RESOURCELIMIT).
    pub max_rend_cookies: usize,
    /// The network-wide INTRODUCE2 rate limit of introduction circuits (param-spec
    /// `HiddenServiceEnableIntroDoS*`; default off, 25 per second, burst 200), until
    /// [`crate::Relay::set_intro_dos_params`] gives the consensus's. Reaction: an INTRODUCE1
    /// beyond it is answered with INTRODUCE_ACK status 1, as C tor answers.
    pub intro_dos: IntroDosParams,
    /// Silently drop ESTABLISH_RENDEZVOUS from clients connected directly to us (dos-spec
    /// `DoSRefuseSingleHopClientRendezvous`, default 0: off).
    pub refuse_single_hop_rendezvous: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16_384,
            max_conns_per_addr: 100,
            circuits_per_channel: 8192,
            create_rate: 3,
            create_burst: 90,
            create_min_conns: 3,
            create_defense_period: Duration::from_secs(3600),
            channel_inbound: 1 << 20,
            channel_outbound: 256 << 10,
            circuit_queue_cells: 50_000,
            max_queued_bytes: 512 << 20,
            stream_buffer: 256 << 10,
            max_streams: 65_536,
            max_dir_request: 16 << 10,
            max_dir_response: 32 << 20,
            channel_idle: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(10),
            target_connect_timeout: Duration::from_secs(60),
            resolve_timeout: Duration::from_secs(30),
            hsdir: HsDirLimits::default(),
            max_intro_circuits: 16_384,
            max_rend_cookies: 16_384,
            intro_dos: IntroDosParams::default(),
            refuse_single_hop_rendezvous: false,
        }
    }
}

/// What a relay takes from each new consensus ([`crate::Relay::set_consensus_params`]), as a
/// C tor relay re-reads its consensus parameters on every new consensus (param-spec).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsensusParams {
    /// What circuits created from now on offer: congestion control and stream flow control
    /// from the `cc_*` values (proposal 324 §6.5, §4). The embedder maps them (the same
    /// mapping its client side uses), so that both ends of a circuit agree.
    pub circuits: CircRelayConfig,
    /// `circ_max_cell_queue_size` (param-spec: default 50 000, clamped to 1 000 ..=
    /// `INT32_MAX`): replaces [`Limits::circuit_queue_cells`] for every circuit.
    pub circuit_queue_cells: usize,
    /// `CircuitPriorityHalflifeMsec` (param-spec §2: default 30 000, clamped to 1 ..=
    /// `INT32_MAX` ms): the EWMA scheduler's half-life on every channel, unless
    /// [`RelayConfig::circuit_priority_halflife`] sets one.
    pub circuit_priority_halflife: Duration,
}

/// param-spec §2's `CircuitPriorityHalflifeMsec`: default, smallest and largest value.
pub const CIRCUIT_PRIORITY_HALFLIFE_MSEC: (i32, i32, i32) = (30_000, 1, i32::MAX);

/// The EWMA half-life a relay uses, as C tor's `get_circuit_priority_halflife` picks it:
/// the `configured` option ([`RelayConfig::circuit_priority_halflife`], seconds) when it is
/// not negative, else the consensus's value (`None` before any consensus: the default,
/// 30 s); a configured value under 0.00001 s is taken as the default.
pub fn circuit_priority_halflife(configured: f64, consensus: Option<Duration>) -> Duration {
    const EPSILON: f64 = 0.00001;
    let default = Duration::from_millis(CIRCUIT_PRIORITY_HALFLIFE_MSEC.0 as u64);
    if configured >= -EPSILON {
        if configured < EPSILON || !configured.is_finite() {
            return default;
        }
        return Duration::try_from_secs_f64(configured).unwrap_or(default);
    }
    consensus.unwrap_or(default)
}

/// param-spec's `circ_max_cell_queue_size`: default, smallest and largest value.
pub const CIRC_MAX_CELL_QUEUE_SIZE: (i32, i32, i32) = (50_000, 1_000, i32::MAX);

impl ConsensusParams {
    /// The values of a consensus whose `params` line is `params`; `circuits` is what the
    /// embedder made of its `cc_*` values.
    pub fn new(circuits: CircRelayConfig, params: &NetParams<'_>) -> Self {
        let (default, min, max) = CIRC_MAX_CELL_QUEUE_SIZE;
        let q = params.get_clamped("circ_max_cell_queue_size", default, min, max);
        let (default, min, max) = CIRCUIT_PRIORITY_HALFLIFE_MSEC;
        let h = params.get_clamped("CircuitPriorityHalflifeMsec", default, min, max);
        ConsensusParams {
            circuits,
            circuit_queue_cells: usize::try_from(q).unwrap_or(50_000),
            circuit_priority_halflife: Duration::from_millis(u64::try_from(h).unwrap_or(30_000)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_halflife_comes_from_the_consensus_unless_configured() {
        let secs = Duration::from_secs;
        let params = |v: i32| {
            let p = NetParams {
                entries: vec![("CircuitPriorityHalflifeMsec", v)],
            };
            ConsensusParams::new(CircRelayConfig::default(), &p).circuit_priority_halflife
        };
        // The consensus value, clamped to 1 ..= INT32_MAX ms; 30 s when absent.
        assert_eq!(params(10_000), secs(10));
        assert_eq!(params(0), Duration::from_millis(1));
        assert_eq!(params(-5), Duration::from_millis(1));
        assert_eq!(params(i32::MAX), Duration::from_millis(i32::MAX as u64));
        let none = ConsensusParams::new(CircRelayConfig::default(), &NetParams::default());
        assert_eq!(none.circuit_priority_halflife, secs(30));
        // The option: -1 (the default) takes the consensus's, 30 s before there is one;
        // 0 is the default half-life; a positive value (seconds, fractions allowed) wins.
        let cfg = RelayConfig::new(vec![]);
        assert_eq!(cfg.circuit_priority_halflife, -1.0);
        assert_eq!(circuit_priority_halflife(-1.0, Some(secs(10))), secs(10));
        assert_eq!(circuit_priority_halflife(-1.0, None), secs(30));
        assert_eq!(circuit_priority_halflife(0.0, Some(secs(10))), secs(30));
        assert_eq!(circuit_priority_halflife(1e-6, Some(secs(10))), secs(30));
        assert_eq!(
            circuit_priority_halflife(2.5, Some(secs(10))),
            Duration::from_millis(2500)
        );
        assert_eq!(circuit_priority_halflife(f64::NAN, None), secs(30));
        assert_eq!(circuit_priority_halflife(f64::INFINITY, None), secs(30));
    }
}
