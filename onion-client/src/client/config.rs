//! What the embedder configures ([`ClientConfig`], [`Limits`]) and what it hands back from an
//! earlier run ([`State`]), and the caller-given stream isolation token ([`Isolation`]).

use std::time::Duration;

use onion_dir::select::path::PathConfig;

use crate::dir::{Cached, DirConfig};

/// A stream isolation token (path-spec §2.2 "stream isolation"; C tor's `IsolateSOCKSAuth`):
/// a circuit carries streams of one token only. An embedder maps each SOCKS username/password
/// pair (or anything else it wants kept apart) to its own token; [`Isolation::NONE`] is the
/// token of streams that ask for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Isolation(pub u64);

impl Isolation {
    /// The token of streams without isolation needs (they share circuits with each other).
    pub const NONE: Isolation = Isolation(0);
}

/// Every queue's bound. When a bound is reached the client says so: a command gets an
/// [`crate::Error`] of kind [`crate::ErrorKind::Resource`], a peer is held back (no more of its
/// bytes are read, no SENDME goes out), and never is anything dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Channels (TLS connections to relays) open or opening at once. A circuit that needs one
    /// more waits until one closes. Default 64.
    pub max_channels: usize,
    /// Connects (TCP+TLS and link handshake) in flight at once. Default 8.
    pub max_connecting: usize,
    /// How long a connect plus link handshake may take (tor-spec §4; C tor gives up on an
    /// OR connection after 10 s of TCP and then the handshake). Default 30 s.
    pub connect_timeout: Duration,
    /// Circuits (built or being built) at once. Default 128.
    pub max_circuits: usize,
    /// Circuit builds in flight at once. Default 16.
    pub max_building: usize,
    /// Application streams on one circuit (onion-circuit allows at most
    /// [`onion_circuit::stream::MAX_STREAMS_PER_CIRCUIT`]); a full circuit sends new streams to
    /// another. Default 256.
    pub max_streams_per_circuit: usize,
    /// Application streams (and resolves) at once; [`crate::Client::connect`] beyond it fails
    /// with kind [`crate::ErrorKind::Resource`]. Default 4096.
    pub max_streams: usize,
    /// Bytes held per stream for the application to [`crate::Client::read`] before the
    /// stream is held (`Circuit::hold_stream`): its SENDMEs stop (or RELAY_XOFF goes out) and
    /// the exit stops sending on it; reading below half of it releases it. A soft bound: what
    /// the exit legitimately had in flight still arrives and is kept (never dropped), so a
    /// stream may hold this plus one stream window and one SENDME increment (550 cells of 498
    /// bytes, tor-spec §7.4), or on a congestion-controlled circuit
    /// [`Limits::xoff_in_flight`]. Beyond that hard bound the peer ignored the windows or
    /// XOFF: the stream ends with [`crate::Error::Violation`]. Default 256 KiB.
    pub stream_recv_buffer: usize,
    /// Bytes a congestion-controlled exit may still deliver to a held stream after its
    /// RELAY_XOFF went out (proposal 324 §4.1.1). A congestion-controlled circuit has no
    /// stream windows: the exit stops when the XOFF reaches it, and what it sent before is
    /// bounded only by its own congestion window, which the consensus caps at 2^31 cells
    /// (`cc_cwnd_max`) and which Tor Vegas holds near the path's bandwidth-delay product —
    /// not by our window toward the exit, which carries almost nothing and stays small.
    /// Default 8 MiB: the bandwidth-delay product of a 200 Mbit/s path with a 300 ms round
    /// trip, the largest the congestion-control experiment (`onion sim --bottleneck`) runs.
    pub xoff_in_flight: usize,
    /// Bytes a channel may hold for the embedder's `poll_transmit` before circuits on it stop
    /// being polled for cells (backpressure). Default 64 KiB (about 120 cells).
    pub channel_outbound: usize,
    /// Bytes a connection may hold of input the channel has not consumed yet (it consumes
    /// less than it is given only while its own output or event queue is full).
    /// [`crate::Client::handle_input`] beyond it closes the connection. Default 1 MiB.
    pub channel_inbound: usize,
    /// How long a channel without circuits stays open: a uniform draw in `[idle, 1.5 × idle)`
    /// (C tor closes a client's channel without circuits after a random 180 to 270 s,
    /// `channelpadding_get_channel_idle_timeout`). Default 180 s.
    pub channel_idle: Duration,
    /// Events held for the embedder ([`crate::Client::poll_event`]). When this many wait,
    /// the client stops feeding its connections' input to their channels: the bytes wait in
    /// the connection's inbound buffer ([`Limits::channel_inbound`]) and are taken once the
    /// embedder has drained the events ([`crate::Client::poll_timeout`] is then due at
    /// once). A soft bound: one batch of a channel's input may add a few hundred more.
    /// Default 4096.
    pub max_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_channels: 64,
            max_connecting: 8,
            connect_timeout: Duration::from_secs(30),
            max_circuits: 128,
            max_building: 16,
            max_streams_per_circuit: 256,
            max_streams: 4096,
            stream_recv_buffer: 256 << 10,
            xoff_in_flight: 8 << 20,
            channel_outbound: 64 << 10,
            channel_inbound: 1 << 20,
            channel_idle: Duration::from_secs(180),
            max_events: 4096,
        }
    }
}

/// How the client works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Directory authorities, fallbacks, mode and the directory machine's limits.
    pub dir: DirConfig,
    /// Path selection (testing-network relaxations and the like).
    pub path: PathConfig,
    /// Negotiate congestion control (proposal 324) with exits that offer `FlowCtrl=2`, with
    /// the consensus's parameters. On by default, as in C tor 0.4.9: it then takes effect
    /// only while the consensus enables it (`cc_alg` not 0); `false` keeps fixed windows
    /// whatever the consensus says.
    pub congestion_control: bool,
    /// The circuit build deadline when build-timeout learning is off (consensus
    /// `cbtdisabled`); otherwise the learned timeout applies ([`crate::timeout`], path-spec
    /// §2.4: 60 s until enough builds were seen).
    pub build_timeout: Duration,
    /// How long a circuit takes new streams after its first one (C tor's
    /// `MaxCircuitDirtiness`, 10 minutes).
    pub max_circuit_dirtiness: Duration,
    /// How long a BEGIN, BEGIN_DIR or RESOLVE may wait for its answer at most. An exit
    /// stream's attempt is given up sooner, after [`Self::stream_attempt_timeout`].
    pub stream_timeout: Duration,
    /// How long one attempt of an exit stream (BEGIN or RESOLVE) waits for its answer before
    /// it is tried on another circuit: C tor's `CircuitStreamTimeout`. `None`, the default,
    /// is C tor's `compute_retry_timeout`: 10 s for the first two attempts, 15 s after. Never
    /// more than [`Self::stream_timeout`].
    pub stream_attempt_timeout: Option<Duration>,
    /// Keep clean circuits built ahead of need for the exit ports streams used recently
    /// (path-spec §2.1.1, C tor's predicted ports: [`crate::predict`]), for onion-service
    /// rendezvous, and while the build timeout is learned (test circuits, path-spec §2.4.2).
    /// On by default, as in C tor; `false` builds circuits only for streams waiting.
    pub preemptive_circuits: bool,
    /// Every queue's bound.
    pub limits: Limits,
}

impl ClientConfig {
    /// A configuration with C tor's defaults around `dir`: path selection for the public
    /// network, congestion control on when the consensus enables it, a 60 s build timeout,
    /// 10 minutes dirtiness, 60 s stream timeout (an exit stream's attempt 10 s, then 15 s), default [`Limits`].
    pub fn new(dir: DirConfig) -> Self {
        ClientConfig {
            dir,
            path: PathConfig::default(),
            congestion_control: true,
            build_timeout: Duration::from_secs(60),
            max_circuit_dirtiness: Duration::from_secs(600),
            stream_timeout: Duration::from_secs(60),
            stream_attempt_timeout: None,
            preemptive_circuits: true,
            limits: Limits::default(),
        }
    }

    /// The configuration for the network whose directory authorities are `authorities`,
    /// reading `mode` documents, as C tor sets itself up for it: on the public network, C
    /// tor's fallback directories and path-spec §2.2's path rules; on a testing network
    /// (every authority on a loopback or private address,
    /// [`crate::guards::is_testing_network`]), no fallbacks and the path rules C tor relaxes
    /// there ([`crate::guards::path_config`]). The rest as [`ClientConfig::new`].
    pub fn for_network(authorities: Vec<crate::dir::Authority>, mode: crate::dir::DirMode) -> Self {
        let fallbacks = match crate::guards::is_testing_network(&authorities) {
            true => Vec::new(),
            false => crate::dir::c_tor_fallbacks(),
        };
        let path = crate::guards::path_config(&authorities);
        let mut cfg = ClientConfig::new(DirConfig::new(authorities, fallbacks, mode));
        cfg.path = path;
        cfg
    }
}

/// What the embedder kept from an earlier run ([`crate::Event::Persist`]) and gives back to
/// [`crate::Client::new`]. Everything is checked again before use.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct State {
    /// Cached directory documents.
    pub directory: Cached,
    /// Guard state (guard-spec §4 "state" text), from [`crate::Persist::Guards`].
    pub guards: Option<String>,
    /// Circuit build times (path-spec §2.4), from [`crate::Persist::BuildTimes`].
    pub build_times: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::{Authority, DirMode};

    fn authority(addr: &str) -> Authority {
        Authority {
            name: "auth0".into(),
            rsa_id: onion_dir::RsaIdentity([1; 20]),
            v3ident: onion_dir::RsaIdentity([2; 20]),
            or_addr: Some(addr.parse().unwrap()),
        }
    }

    /// A testing network (authorities on private addresses) gets no fallbacks and C tor's
    /// relaxed path rules; the public network gets C tor's fallbacks and path-spec's rules.
    #[test]
    fn for_network_tells_testing_networks_apart() {
        let testing = vec![authority("127.0.0.1:5000")];
        let cfg = ClientConfig::for_network(testing.clone(), DirMode::Full);
        assert!(cfg.dir.fallbacks.is_empty());
        assert_eq!(cfg.path, crate::guards::path_config(&testing));
        assert_ne!(cfg.path, PathConfig::default());
        assert_eq!(cfg.dir.mode, DirMode::Full);
        let public = vec![authority("128.31.0.39:9101")];
        let cfg = ClientConfig::for_network(public, DirMode::Micro);
        assert_eq!(cfg.dir.fallbacks, crate::dir::c_tor_fallbacks());
        assert!(!cfg.dir.fallbacks.is_empty());
        assert_eq!(cfg.path, PathConfig::default());
    }
}
