//! Onion services (rend-spec-v3), as sans-IO sub-machines of the client: connecting to a
//! `.onion` address ([`connect`]) and hosting a service ([`host`]).
//!
//! [`OnionServices`] holds both. It owns no circuit: it asks the core for what it needs
//! through [`HsAction`]s (build a circuit of a [`HsPurpose`] ending at a relay, send an
//! onion-service message to a circuit's last hop, carry an HTTP request over BEGIN_DIR, add
//! the virtual hop agreed by hs-ntor, close a circuit, a connect request is ready or failed)
//! and is told what happened (`circuit_built`, `circuit_closed`, `message`, `dir_response`,
//! `incoming_stream`), plus the time ([`OnionServices::handle_timeout`],
//! [`OnionServices::poll_timeout`]).
//!
//! Circuits are named by [`HsCircRef`]s that this machine allocates when it asks for a
//! circuit ([`HsAction::BuildCircuit`]); the core keeps a map from them to its own circuits
//! and reports every event of such a circuit under its reference. Circuit crypto stays
//! with the core: the virtual hop's keys come in [`HsAction::AddVirtualHop`].
//!
//! The run loop of the core, for this part (the client's `client/onion.rs` is the real one):
//!
//! ```
//! use std::collections::HashMap;
//!
//! use onion_circuit::circuit::{CircEvent, Circuit, HopTarget};
//! use onion_client::hs::{
//!     HsAction, HsCircRef, HsConfig, HsPurpose, IncomingDecision, IncomingRef, OnionServices,
//! };
//! use onion_client::{Instant, Timestamp};
//! use rand_core::{CryptoRngCore, SeedableRng};
//!
//! /// The core's side: its built onion-service circuits by reference, and its work lists.
//! #[derive(Default)]
//! struct Core {
//!     circuits: HashMap<HsCircRef, Circuit>,
//!     /// To build (a path of the purpose's shape); then `hs.handle_circuit_built(circ, &last,
//!     /// last_hop_kh, now, rng)`, or `hs.handle_circuit_closed(circ, why, now, rng)`.
//!     builds: Vec<(HsCircRef, HsPurpose, Option<HopTarget>)>,
//!     /// To carry over BEGIN_DIR; then `hs.handle_dir_answer(circ, dir::decode_response(&raw,
//!     /// max_body), now, rng)`.
//!     dir_requests: Vec<(HsCircRef, Vec<u8>, usize)>,
//!     next_stream: u64,
//! }
//!
//! impl Core {
//!     /// Carry out what the machines ask until they ask nothing more.
//!     fn drive(&mut self, hs: &mut OnionServices, now: Instant, rng: &mut impl CryptoRngCore) {
//!         while let Some(action) = hs.poll_action() {
//!             match action {
//!                 HsAction::BuildCircuit { circ, purpose, last_hop } => {
//!                     self.builds.push((circ, purpose, last_hop));
//!                 }
//!                 HsAction::SendMessage { circ, msg } => {
//!                     // Encoded once, into the relay cell for the last hop.
//!                     let sent = self.circuits.get_mut(&circ).and_then(|c| {
//!                         let last = c.n_hops().checked_sub(1)?;
//!                         c.send_msg(last, None, &msg).ok()
//!                     });
//!                     if sent.is_none() {
//!                         hs.handle_circuit_closed(circ, "message not sent", now, rng);
//!                     }
//!                 }
//!                 HsAction::DirRequest { circ, request, max_body } => {
//!                     self.dir_requests.push((circ, request, max_body));
//!                 }
//!                 HsAction::AddVirtualHop { circ, hop } => {
//!                     let c = self.circuits.get_mut(&circ);
//!                     let added = c.zip(hop.layer().ok()).map(|(c, layer)| {
//!                         c.set_accept_inbound_streams(hop.accepts_streams());
//!                         match hop.congestion_control() {
//!                             Some(cc) => c.add_virtual_hop_cc(Box::new(layer), cc),
//!                             None => c.add_virtual_hop(Box::new(layer)),
//!                         }
//!                     });
//!                     if !matches!(added, Some(Ok(()))) {
//!                         hs.handle_circuit_closed(circ, "virtual hop refused", now, rng);
//!                     }
//!                 }
//!                 HsAction::CloseCircuit { circ } => {
//!                     if let Some(mut c) = self.circuits.remove(&circ) {
//!                         c.destroy();
//!                     }
//!                 }
//!                 HsAction::Ready { .. } => { /* BEGIN (host "") for its streams on circ */ }
//!                 HsAction::Failed { .. } => { /* end the request's streams with error */ }
//!                 HsAction::IncomingTimedOut { .. } => { /* END TIMEOUT on that stream */ }
//!                 HsAction::Published { .. } => { /* clients can find the service now */ }
//!                 _ => {}
//!             }
//!         }
//!     }
//!
//!     /// An event of the onion-service circuit `circ`. When it closes (DESTROY, a failure,
//!     /// a timeout), the core says `hs.handle_circuit_closed(circ, why, now, rng)` instead.
//!     fn on_event(
//!         &mut self,
//!         hs: &mut OnionServices,
//!         circ: HsCircRef,
//!         event: &CircEvent,
//!         now: Instant,
//!         rng: &mut impl CryptoRngCore,
//!     ) {
//!         match event {
//!             CircEvent::Msg { msg, .. } => hs.handle_message(circ, msg, now, rng),
//!             CircEvent::IncomingStream { port, .. } => {
//!                 self.next_stream += 1;
//!                 match hs.incoming_stream(circ, *port, IncomingRef(self.next_stream), now) {
//!                     IncomingDecision::Offer { .. } => { /* ask the application */ }
//!                     IncomingDecision::Reject(_reason) => { /* Circuit::reject_stream */ }
//!                 }
//!             }
//!             _ => {}
//!         }
//!         self.drive(hs, now, rng);
//!     }
//! }
//!
//! let (now, wall) = (Instant::ZERO, Timestamp::from_unix(1_700_000_000));
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
//! let mut hs = OnionServices::new(HsConfig::default(), now, wall);
//! let mut core = Core::default();
//! // With a verified directory (`hs.set_directory(&dir, now, wall, &mut rng)?`, again for
//! // every new one), `hs.connect("<56 base32>.onion", isolation, now, &mut rng)?` asks for a
//! // rendezvous and `hs.host(HostConfig::new(identity, ports), now, &mut rng)?` hosts a
//! // service; here the machine has no directory and a bad address is refused at once.
//! assert!(hs.connect("nowhere.onion", 0, now, &mut rng).is_err());
//! core.drive(&mut hs, now, &mut rng);
//! assert!(core.builds.is_empty() && core.dir_requests.is_empty());
//! if let Some(at) = hs.poll_timeout() {
//!     hs.handle_timeout(at, wall, &mut rng);
//!     core.drive(&mut hs, at, &mut rng);
//! }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use onion_cell::relaymsg::{EndReason, RelayMsg};
use onion_cell::RelayCmd;
use onion_circuit::cc::CcConfig;
use onion_circuit::circuit::HopTarget;
use onion_crypto::keys::NtorOnionKey;
use onion_crypto::{Ed25519Identity, RsaIdentity};
use onion_dir::netview::RelayRecord;
use onion_dir::RelayFlags;
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::ntor::HsRendKeys;
use onion_hs::ring::{HsDirParams, HsDirRelay, SharedRandom};
use onion_hs::TimePeriodConfig;
use rand_core::CryptoRngCore;

use crate::dir::{Directory, Failure};
use crate::{ErrorKind, Instant, Timestamp};

pub mod connect;
pub mod host;
#[cfg(test)]
mod tests;

pub use connect::{ConnectConfig, HsRequest};
pub use host::{HostConfig, IncomingDecision, IncomingRef, ServiceId, ServiceStats};

/// An onion-service circuit, named by this machine when it asks for it
/// ([`HsAction::BuildCircuit`]). Never reused within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HsCircRef(pub u64);

/// What an onion-service circuit is for: its path shape (vanguards-lite, proposal 333) and
/// which relay messages it may receive (rend-spec-v3 §3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HsPurpose {
    /// A client's circuit to an HSDir for a descriptor fetch (`G -> L2 -> M -> HSDir`, then
    /// BEGIN_DIR; rend-spec-v3 §2.2.6).
    HsDirFetch,
    /// A service's circuit to an HSDir for a descriptor upload (same shape).
    HsDirUpload,
    /// A client's circuit to an introduction point (`G -> L2 -> M -> I`): INTRODUCE1 out,
    /// INTRODUCE_ACK in (§3.2).
    ClientIntro,
    /// A client's rendezvous circuit (`G -> L2 -> RP`, 3 hops, the rendezvous point chosen
    /// by the core): ESTABLISH_RENDEZVOUS out; RENDEZVOUS_ESTABLISHED and RENDEZVOUS2 in
    /// (§3.2.1, §4.2); then streams to the service.
    ClientRend,
    /// A service's circuit to one of its introduction points (`G -> L2 -> M -> I`):
    /// ESTABLISH_INTRO out; INTRO_ESTABLISHED and INTRODUCE2 in (§3.1).
    ServiceIntro,
    /// A service's circuit to a client's rendezvous point (`G -> L2 -> M -> RP`):
    /// RENDEZVOUS1 out, then streams from the client (§4.2).
    ServiceRend,
}

impl HsPurpose {
    /// Whether the core chooses the last hop itself (only the client's rendezvous point).
    pub fn core_chooses_last_hop(self) -> bool {
        self == HsPurpose::ClientRend
    }
}

/// Which end of the rendezvous circuit a [`VirtualHop`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualHopSide {
    /// The client: sends with `Kf`/`Df`.
    Client,
    /// The service: sends with `Kb`/`Db`, and takes streams from the client.
    Service,
}

/// The other party's hop on a rendezvous circuit, agreed by hs-ntor (rend-spec-v3 §4.2.1):
/// the core adds it to the circuit (`Circuit::add_virtual_hop`, or `add_virtual_hop_cc` when
/// [`VirtualHop::congestion_control`] is `Some`), and, when
/// [`VirtualHop::accepts_streams`], lets the last hop open streams
/// (`Circuit::set_accept_inbound_streams(true)`).
#[derive(Clone)]
pub struct VirtualHop {
    keys: HsRendKeys,
    side: VirtualHopSide,
    cc: Option<CcConfig>,
}

impl VirtualHop {
    /// The relay-crypto layer to add (AES-256-CTR and SHA3-256 digests, §4.2.1).
    pub fn layer(&self) -> Result<onion_crypto::tor1::HsClientHop, onion_crypto::Tor1Error> {
        match self.side {
            VirtualHopSide::Client => self.keys.client_layer(),
            VirtualHopSide::Service => self.keys.service_layer(),
        }
    }

    /// Which end.
    pub fn side(&self) -> VirtualHopSide {
        self.side
    }

    /// Congestion control (proposal 324) for the virtual hop, when both ends agreed on it.
    pub fn congestion_control(&self) -> Option<CcConfig> {
        self.cc
    }

    /// Whether the other end may open streams (the service's end).
    pub fn accepts_streams(&self) -> bool {
        self.side == VirtualHopSide::Service
    }

    /// The 128 bytes of key material `Df | Db | Kf | Kb` (both ends hold the same).
    pub fn key_material(&self) -> [u8; 128] {
        self.keys.to_bytes()
    }
}

impl fmt::Debug for VirtualHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualHop")
            .field("side", &self.side)
            .field("cc", &self.cc)
            .finish_non_exhaustive()
    }
}

/// Something the core must do for the onion-service machines.
#[derive(Debug)]
#[non_exhaustive]
pub enum HsAction {
    /// Build a circuit for `purpose` (its shape: [`HsPurpose`]) ending at `last_hop`, or at
    /// a rendezvous point of the core's choice when `last_hop` is `None`
    /// ([`HsPurpose::ClientRend`]). No relay on it is asked for congestion control. Report
    /// [`OnionServices::handle_circuit_built`] or [`OnionServices::handle_circuit_closed`].
    BuildCircuit {
        /// The reference to report it under.
        circ: HsCircRef,
        /// What it is for.
        purpose: HsPurpose,
        /// Its last relay, if this machine chose it.
        last_hop: Option<HopTarget>,
    },
    /// Send the onion-service message `msg` to the last hop of `circ`, stream 0
    /// (`Circuit::send_msg`, which encodes it into the cell).
    SendMessage {
        /// The circuit.
        circ: HsCircRef,
        /// The message (ESTABLISH_INTRO, ESTABLISH_RENDEZVOUS, INTRODUCE1 or RENDEZVOUS1).
        msg: RelayMsg<'static>,
    },
    /// Open a BEGIN_DIR stream on `circ` (tor-spec §6.2.1; rend-spec-v3 §2.2.6), send
    /// `request` (a complete HTTP/1.0 request), read the response until the stream ends
    /// (its body at most `max_body` bytes: more is a failure), and report it with
    /// [`OnionServices::handle_dir_answer`] (decoded, as `dir::decode_response` does) or
    /// [`OnionServices::handle_dir_response`] (raw).
    DirRequest {
        /// The circuit.
        circ: HsCircRef,
        /// The HTTP request bytes.
        request: Vec<u8>,
        /// The most the response's body may be.
        max_body: usize,
    },
    /// Add the other party's virtual hop to `circ` ([`VirtualHop`]).
    AddVirtualHop {
        /// The rendezvous circuit.
        circ: HsCircRef,
        /// The hop.
        hop: VirtualHop,
    },
    /// Close `circ` (DESTROY); nothing more is expected about it.
    CloseCircuit {
        /// The circuit.
        circ: HsCircRef,
    },
    /// The connection asked for by [`OnionServices::connect`] is ready: open its streams on
    /// the rendezvous circuit `circ` (RELAY_BEGIN with an empty host and the port, §4.2).
    Ready {
        /// The request.
        request: HsRequest,
        /// Its rendezvous circuit (shared by the requests to the same service and isolation
        /// until it is dirty).
        circ: HsCircRef,
    },
    /// The connection asked for by [`OnionServices::connect`] failed.
    Failed {
        /// The request.
        request: HsRequest,
        /// Why.
        error: HsError,
    },
    /// The application did not accept or reject the incoming stream `stream` within
    /// [`HostConfig::undecided_timeout`]: refuse it with END TIMEOUT and tell the
    /// application it closed. It no longer counts as undecided.
    IncomingTimedOut {
        /// The stream, as the core named it to [`OnionServices::incoming_stream`].
        stream: IncomingRef,
    },
    /// A hosted service's descriptor reached at least one HSDir for the first time: clients
    /// can find it now.
    Published {
        /// The service.
        service: ServiceId,
    },
}

/// Onion-service failures. [`HsError::kind`] classifies them as the crate's
/// [`crate::Error`] does; [`HsError::socks5_reply`] gives C tor's extended SOCKS error
/// (proposal 304) for the client's failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HsError {
    /// The `.onion` address does not parse or its key is not a valid point (rend-spec-v3 §6).
    #[error("invalid onion address: {0}")]
    BadAddress(String),
    /// No responsible HSDir gave a descriptor (not found, or not reachable).
    #[error("onion-service descriptor not found ({tried} HSDirs tried; last: {last})")]
    DescriptorNotFound {
        /// HSDirs asked.
        tried: usize,
        /// The last failure.
        last: String,
    },
    /// Descriptors arrived and none parsed and verified (rend-spec-v3 §2.4, §2.5).
    #[error("onion-service descriptor invalid: {0}")]
    DescriptorInvalid(String),
    /// The descriptor is encrypted to authorized clients and no key was given
    /// (rend-spec-v3 §2.5.1.2).
    #[error("the onion service requires client authorization and no key is configured")]
    ClientAuthMissing,
    /// The descriptor is encrypted to authorized clients and the key given is not one.
    #[error("the onion service's descriptor does not admit the configured client key")]
    ClientAuthWrong,
    /// Every introduction point failed (rend-spec-v3 §3.2).
    #[error("introduction failed ({tried} introduction points tried; last: {last})")]
    IntroFailed {
        /// Introduction points tried.
        tried: usize,
        /// The last failure.
        last: String,
    },
    /// The introduction did not complete in time.
    #[error("introduction timed out")]
    IntroTimedOut,
    /// The rendezvous circuit, ESTABLISH_RENDEZVOUS or RENDEZVOUS2 failed (rend-spec-v3
    /// §3.2.1, §4.2).
    #[error("rendezvous failed: {0}")]
    RendezvousFailed(String),
    /// No verified directory yet, or it lacks what onion services need.
    #[error("no usable directory for onion services: {0}")]
    NoDirectory(String),
    /// A bound is reached (connect requests, hosted services).
    #[error("onion-service limit reached: {0}")]
    Resource(&'static str),
    /// A call that the documentation rules out (an unknown service or reference).
    #[error("misuse: {0}")]
    Misuse(&'static str),
    /// A hosted service's machine failed (a bad key, a descriptor that does not build).
    #[error("onion service: {0}")]
    Service(String),
}

impl HsError {
    /// The stable classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HsError::BadAddress(_) | HsError::Misuse(_) => ErrorKind::Misuse,
            HsError::DescriptorInvalid(_) => ErrorKind::PeerProtocol,
            HsError::ClientAuthMissing | HsError::ClientAuthWrong => ErrorKind::Misuse,
            HsError::IntroTimedOut => ErrorKind::Timeout,
            HsError::DescriptorNotFound { .. }
            | HsError::IntroFailed { .. }
            | HsError::RendezvousFailed(_)
            | HsError::NoDirectory(_) => ErrorKind::Network,
            HsError::Resource(_) => ErrorKind::Resource,
            HsError::Service(_) => ErrorKind::PeerProtocol,
        }
    }

    /// The SOCKS5 reply C tor gives for this failure with `ExtendedErrors` (proposal 304):
    /// 0xF0 descriptor not found, 0xF1 descriptor invalid, 0xF2 introduction failed, 0xF3
    /// rendezvous failed, 0xF4 client authorization missing, 0xF5 client authorization
    /// wrong, 0xF6 bad address, 0xF7 introduction timed out; 0x01 (general failure) else.
    pub fn socks5_reply(&self) -> u8 {
        match self {
            HsError::DescriptorNotFound { .. } => 0xF0,
            HsError::DescriptorInvalid(_) => 0xF1,
            HsError::IntroFailed { .. } => 0xF2,
            HsError::RendezvousFailed(_) => 0xF3,
            HsError::ClientAuthMissing => 0xF4,
            HsError::ClientAuthWrong => 0xF5,
            HsError::BadAddress(_) => 0xF6,
            HsError::IntroTimedOut => 0xF7,
            _ => 0x01,
        }
    }
}

/// Congestion control for rendezvous circuits, from the consensus (proposal 324 §6.5): the
/// Vegas parameters for onion-service paths (`cc_vegas_*_onion`) and for single onion
/// services (the exit ones), whose `sendme_inc` is the consensus `cc_sendme_inc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnionCc {
    /// Parameters for a rendezvous circuit to an ordinary onion service.
    pub onion: CcConfig,
    /// Parameters for one to a single onion service (C tor: `CC_PATH_ONION_SOS`).
    pub single_onion: CcConfig,
}

impl OnionCc {
    /// From the consensus parameters; `None` when the consensus runs fixed windows
    /// (`cc_alg=0`).
    pub fn from_directory(dir: &Directory) -> Option<OnionCc> {
        use onion_dir::ccparams::CcPath;
        Some(OnionCc {
            onion: dir.congestion_control(CcPath::Onion)?,
            single_onion: dir.congestion_control(CcPath::Exit)?,
        })
    }

    /// The configuration of the virtual hop to a service whose descriptor advertises
    /// `sendme_inc`, or `None` when C tor would reject that value: 0, or more than one away
    /// from the consensus `cc_sendme_inc` (`congestion_control_validate_sendme_increment`).
    pub fn for_descriptor(&self, sendme_inc: u8, single_onion: bool) -> Option<CcConfig> {
        if !self.onion.sendme_inc_acceptable(sendme_inc) {
            return None;
        }
        let base = match single_onion {
            true => self.single_onion,
            false => self.onion,
        };
        Some(CcConfig { sendme_inc, ..base })
    }
}

/// What the onion-service machines take from a verified directory: the hash-ring inputs
/// (rend-spec-v3 §2.2.1, §2.2.3, §2.3.1) and the relays.
#[derive(Clone)]
pub struct HsNet {
    /// The directory.
    pub dir: Arc<Directory>,
    /// The consensus's `valid-after`.
    pub valid_after: Timestamp,
    /// Time periods: from `hsdir_interval`, or 24 voting intervals on a testing network, as
    /// C tor's `TestingTorNetwork`.
    pub periods: TimePeriodConfig,
    /// The shared random values.
    pub shared_random: SharedRandom,
    /// `hsdir_n_replicas`, `hsdir_spread_fetch`, `hsdir_spread_store`.
    pub params: HsDirParams,
    /// Every relay with an ed25519 identity, with its HSDir flag (ring positions index
    /// [`HsNet::ring_relays`]).
    pub ring: Vec<HsDirRelay>,
    /// Where each ring entry is in `dir.view.relays()`.
    pub ring_relays: Vec<usize>,
    /// Congestion control of rendezvous circuits, when the consensus enables it.
    pub cc: Option<OnionCc>,
}

impl HsNet {
    /// Read them from `dir` (of a testing network if `testing`).
    pub fn from_directory(dir: Arc<Directory>, testing: bool) -> Result<HsNet, HsError> {
        let interval = u32::try_from(dir.voting_interval()).unwrap_or(3600);
        let periods = if testing {
            TimePeriodConfig::testing_network(interval)
        } else {
            let p = dir.param("hsdir_interval").map(i64::from);
            TimePeriodConfig::from_consensus(p, interval)
        }
        .map_err(|e| HsError::NoDirectory(format!("time period: {e}")))?;
        let mut ring = Vec::new();
        let mut ring_relays = Vec::new();
        for (i, r) in dir.view.relays().iter().enumerate() {
            if let Some(ed) = r.ed_id {
                ring.push(HsDirRelay {
                    ed25519_id: ed,
                    rsa_id: r.rsa_id,
                    is_hsdir: r.flags.contains(RelayFlags::HSDIR),
                });
                ring_relays.push(i);
            }
        }
        Ok(HsNet {
            valid_after: dir.valid_after,
            periods,
            shared_random: SharedRandom {
                current: dir.shared_rand_current,
                previous: dir.shared_rand_previous,
            },
            params: HsDirParams::from_consensus(|k| dir.param(k).map(i64::from)),
            cc: OnionCc::from_directory(&dir),
            ring,
            ring_relays,
            dir,
        })
    }

    /// The relay at ring position `pos`.
    pub fn ring_relay(&self, pos: usize) -> Option<&RelayRecord> {
        let i = *self.ring_relays.get(pos)?;
        self.dir.view.relays().get(i)
    }

    /// A relay by RSA identity.
    pub fn relay_by_rsa(&self, id: RsaIdentity) -> Option<&RelayRecord> {
        let idx = self.dir.view.by_rsa_id(&id)?;
        self.dir.view.relay(idx)
    }
}

/// A relay of the directory as a circuit's last hop; `None` without an ntor onion key.
pub fn hop_target(r: &RelayRecord) -> Option<HopTarget> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    if let Some(a) = r.ipv4 {
        addrs.push(SocketAddr::V4(a));
    }
    if let Some(a) = r.ipv6 {
        addrs.push(SocketAddr::V6(a));
    }
    Some(HopTarget {
        rsa_id: r.rsa_id,
        ed_id: r.ed_id.map(Ed25519Identity),
        ntor_key: NtorOnionKey(r.ntor_onion_key?),
        addrs,
        ntor_v3: false,
    })
}

/// A relay named by link specifiers and an ntor onion key (an introduction point from a
/// descriptor, rend-spec-v3 §2.5.2.2; a rendezvous point from INTRODUCE2, §3.3) as a
/// circuit's last hop. `None` without an RSA identity, which EXTEND2 needs.
pub fn hop_target_from_link_specs(specs: &[RawLinkSpec], onion_key: [u8; 32]) -> Option<HopTarget> {
    let rsa = specs.iter().find_map(RawLinkSpec::as_rsa_id)?;
    let ed = specs.iter().find_map(RawLinkSpec::as_ed25519_id);
    let mut addrs: Vec<SocketAddr> = Vec::new();
    addrs.extend(specs.iter().filter_map(|l| l.as_ipv4()).map(SocketAddr::V4));
    addrs.extend(specs.iter().filter_map(|l| l.as_ipv6()).map(SocketAddr::V6));
    Some(HopTarget {
        rsa_id: rsa,
        ed_id: ed.map(Ed25519Identity),
        ntor_key: NtorOnionKey(onion_key),
        addrs,
        ntor_v3: false,
    })
}

/// The link specifiers that name a relay in onion-service messages and descriptors
/// (rend-spec-v3 §2.5.2.2, §3.3): its IPv4 ORPort, RSA and ed25519 identities.
pub fn link_specs_of(t: &HopTarget) -> Vec<RawLinkSpec> {
    let mut v = Vec::new();
    if let Some(SocketAddr::V4(a)) = t.addrs.iter().find(|a| a.is_ipv4()) {
        v.push(RawLinkSpec::ipv4(*a));
    }
    v.push(RawLinkSpec::rsa_id(t.rsa_id));
    if let Some(ed) = &t.ed_id {
        v.push(RawLinkSpec::ed25519_id(ed.0));
    }
    v
}

/// The clock of the sub-machines: the monotonic `now` of every input, and the wall clock
/// extrapolated from the last one given (`wall = last_wall + (now - last_now)`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    at: Instant,
    wall: Timestamp,
}

impl Clock {
    /// The wall clock at `now`.
    pub(crate) fn wall(&self, now: Instant) -> Timestamp {
        self.wall
            .add_secs(now.saturating_duration_since(self.at).as_secs())
    }

    /// The monotonic instant at which the wall clock reads `wall` (the last instant given,
    /// if that time is past).
    pub(crate) fn instant_of(&self, wall: Timestamp) -> Instant {
        let delta = wall.unix().saturating_sub(self.wall.unix());
        self.at
            .checked_add(Duration::from_secs(delta))
            .unwrap_or(self.at)
    }

    fn set(&mut self, now: Instant, wall: Timestamp) {
        self.at = now;
        self.wall = wall;
    }
}

/// What both sub-machines share: the directory, the clock, references and actions.
pub(crate) struct Shared {
    pub(crate) net: Option<HsNet>,
    pub(crate) clock: Clock,
    next_ref: u64,
    pub(crate) actions: VecDeque<HsAction>,
}

impl Shared {
    /// A fresh circuit reference.
    pub(crate) fn new_ref(&mut self) -> HsCircRef {
        self.next_ref += 1;
        HsCircRef(self.next_ref)
    }

    pub(crate) fn push(&mut self, a: HsAction) {
        self.actions.push_back(a);
    }
}

/// Who a circuit reference belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Client,
    Host,
}

/// Configuration of the onion-service machines.
#[derive(Debug, Clone, Default)]
pub struct HsConfig {
    /// The network is a testing network (C tor's `TestingTorNetwork`: a time period of 24
    /// voting intervals).
    pub testing_network: bool,
    /// Run congestion control (proposal 324) on rendezvous circuits when the consensus
    /// enables it and the other end agrees.
    pub congestion_control: bool,
    /// The client side's timeouts and bounds.
    pub connect: ConnectConfig,
}

/// The onion-service client and host, as one sub-machine of the core. See the module
/// documentation.
pub struct OnionServices {
    config: HsConfig,
    shared: Shared,
    client: connect::Connector,
    host: host::Host,
    owners: HashMap<HsCircRef, Owner>,
}

impl OnionServices {
    /// A machine with nothing to do until [`OnionServices::set_directory`].
    pub fn new(config: HsConfig, now: Instant, wall: Timestamp) -> Self {
        OnionServices {
            client: connect::Connector::new(config.connect.clone()),
            host: host::Host::new(),
            config,
            shared: Shared {
                net: None,
                clock: Clock { at: now, wall },
                next_ref: 0,
                actions: VecDeque::new(),
            },
            owners: HashMap::new(),
        }
    }

    /// A new verified directory: the ring and time periods for fetches, and a new consensus
    /// view for every hosted service's publisher (which may re-upload, rend-spec-v3
    /// §2.2.2).
    pub fn set_directory(
        &mut self,
        dir: &Arc<Directory>,
        now: Instant,
        wall: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), HsError> {
        self.shared.clock.set(now, wall);
        let mut net = HsNet::from_directory(dir.clone(), self.config.testing_network)?;
        if !self.config.congestion_control {
            net.cc = None;
        }
        self.shared.net = Some(net);
        self.host.set_directory(&mut self.shared, now, rng);
        self.collect_owners();
        Ok(())
    }

    /// The directory in use, if any.
    pub fn net(&self) -> Option<&HsNet> {
        self.shared.net.as_ref()
    }

    /// Connect to the onion service `addr` (`<56 base32>.onion`, sub-domains allowed) for
    /// streams of `isolation`: the answer comes as [`HsAction::Ready`] (at once if a
    /// rendezvous circuit to it is open and not dirty) or [`HsAction::Failed`].
    pub fn connect(
        &mut self,
        addr: &str,
        isolation: u64,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<HsRequest, HsError> {
        let r = self
            .client
            .connect(&mut self.shared, addr, isolation, now, rng);
        self.collect_owners();
        r
    }

    /// Give up a request (its streams were closed); the attempt goes on for the others.
    pub fn cancel(&mut self, request: HsRequest) {
        self.client.cancel(request);
    }

    /// The client authorization key for the service `addr` (rend-spec-v3 §2.5.1.2; C tor's
    /// `ClientOnionAuthDir`), or `None` to forget it. Cached descriptors of it are dropped.
    pub fn set_client_auth(
        &mut self,
        addr: &str,
        key: Option<onion_hs::x25519_dalek::StaticSecret>,
    ) -> Result<(), HsError> {
        self.client.set_client_auth(addr, key)
    }

    /// Host an onion service.
    pub fn host(
        &mut self,
        config: HostConfig,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<ServiceId, HsError> {
        let cc = self.shared.net.as_ref().and_then(|n| n.cc).map(|c| c.onion);
        let r = self.host.add(&mut self.shared, config, cc, now, rng);
        self.collect_owners();
        r
    }

    /// Stop hosting `service`: its circuits are closed.
    pub fn stop_hosting(&mut self, service: ServiceId) -> Result<(), HsError> {
        let r = self.host.remove(&mut self.shared, service);
        self.collect_owners();
        r
    }

    /// A hosted service's onion address.
    pub fn service_address(&self, service: ServiceId) -> Option<onion_hs::OnionAddress> {
        self.host.address(service)
    }

    /// Counters of a hosted service (introductions taken and dropped, rendezvous).
    pub fn service_stats(&self, service: ServiceId) -> Option<ServiceStats> {
        self.host.stats(service)
    }

    /// The next thing for the core to do.
    pub fn poll_action(&mut self) -> Option<HsAction> {
        self.shared.actions.pop_front()
    }

    /// Whether `circ` is an onion-service circuit of this machine.
    pub fn owns(&self, circ: HsCircRef) -> bool {
        self.owners.contains_key(&circ)
    }

    /// Circuit `circ` (asked for by [`HsAction::BuildCircuit`]) is built; `last_hop` is its
    /// last relay (for [`HsPurpose::ClientRend`], the rendezvous point the core chose) and
    /// `last_hop_kh` that hop's `KH` (tor-spec §5.2; ESTABLISH_INTRO is bound to it).
    pub fn handle_circuit_built(
        &mut self,
        circ: HsCircRef,
        last_hop: &HopTarget,
        last_hop_kh: &[u8],
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        match self.owners.get(&circ) {
            Some(Owner::Client) => {
                self.client
                    .circuit_built(&mut self.shared, circ, last_hop, now, rng)
            }
            Some(Owner::Host) => {
                self.host
                    .circuit_built(&mut self.shared, circ, last_hop_kh, now, rng)
            }
            None => self.shared.push(HsAction::CloseCircuit { circ }),
        }
        self.collect_owners();
    }

    /// Circuit `circ` failed to build, or closed (DESTROY, TRUNCATED, a protocol error),
    /// or the core gave up on it; `why` is for the log and errors.
    pub fn handle_circuit_closed(
        &mut self,
        circ: HsCircRef,
        why: &str,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        match self.owners.remove(&circ) {
            Some(Owner::Client) => {
                self.client
                    .circuit_closed(&mut self.shared, circ, why, now, rng)
            }
            Some(Owner::Host) => self.host.circuit_closed(&mut self.shared, circ, now, rng),
            None => {}
        }
        self.collect_owners();
    }

    /// An onion-service message arrived from the last hop of `circ` (`CircEvent::Msg`).
    /// Messages other than INTRO_ESTABLISHED, INTRODUCE2, INTRODUCE_ACK,
    /// RENDEZVOUS_ESTABLISHED and RENDEZVOUS2 are ignored.
    pub fn handle_message(
        &mut self,
        circ: HsCircRef,
        msg: &RelayMsg<'_>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let cmd = msg.cmd();
        // Only the onion-service answers concern these machines; anything else the circuit
        // handed up (padding, say) is not theirs to judge (tor-spec §6.1: dropped).
        if !matches!(
            cmd,
            RelayCmd::INTRO_ESTABLISHED
                | RelayCmd::INTRODUCE2
                | RelayCmd::INTRODUCE_ACK
                | RelayCmd::RENDEZVOUS_ESTABLISHED
                | RelayCmd::RENDEZVOUS2
        ) {
            return;
        }
        match self.owners.get(&circ) {
            Some(Owner::Client) => self.client.message(&mut self.shared, circ, msg, now, rng),
            Some(Owner::Host) => self.host.message(&mut self.shared, circ, msg, now, rng),
            None => {}
        }
        self.collect_owners();
    }

    /// The answer to [`HsAction::DirRequest`] on `circ`, raw: the HTTP response bytes (head
    /// and body, as the stream carried them), or why the stream failed.
    pub fn handle_dir_response(
        &mut self,
        circ: HsCircRef,
        response: Result<Vec<u8>, String>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        let answer = response
            .map_err(Failure::Network)
            .and_then(|raw| crate::dir::decode_response(&raw, connect::MAX_DESCRIPTOR_BODY));
        self.handle_dir_answer(circ, answer, now, rng);
    }

    /// The answer to [`HsAction::DirRequest`] on `circ`, decoded: the body of a 200 response,
    /// or the failure (a network failure, a timeout, another status, a body too large). The
    /// core closes nothing: this machine says [`HsAction::CloseCircuit`].
    pub fn handle_dir_answer(
        &mut self,
        circ: HsCircRef,
        answer: Result<Vec<u8>, Failure>,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) {
        match self.owners.get(&circ) {
            Some(Owner::Client) => self
                .client
                .dir_answer(&mut self.shared, circ, answer, now, rng),
            Some(Owner::Host) => self
                .host
                .dir_answer(&mut self.shared, circ, answer, now, rng),
            None => {}
        }
        self.collect_owners();
    }

    /// Time passed: deadlines, retries, the publishers' schedules.
    pub fn handle_timeout(&mut self, now: Instant, wall: Timestamp, rng: &mut impl CryptoRngCore) {
        self.shared.clock.set(now, wall);
        self.client.handle_timeout(&mut self.shared, now, rng);
        self.host.handle_timeout(&mut self.shared, now, rng);
        self.collect_owners();
    }

    /// When [`OnionServices::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.client.poll_timeout();
        let b = self.host.poll_timeout(&self.shared);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Record the owners of the circuits asked for since the last call.
    fn collect_owners(&mut self) {
        for c in self.client.take_new_circuits() {
            self.owners.insert(c, Owner::Client);
        }
        for c in self.host.take_new_circuits() {
            self.owners.insert(c, Owner::Host);
        }
        // A circuit this machine closed is forgotten.
        for a in &self.shared.actions {
            if let HsAction::CloseCircuit { circ } = a {
                self.owners.remove(circ);
            }
        }
    }
}

/// Whether `host` names an onion service (`….onion`, any ASCII case): streams to it go
/// through [`OnionServices::connect`], not to an exit.
pub fn is_onion(host: &str) -> bool {
    let b = host.as_bytes();
    b.len() > 6 && b[b.len() - 6..].eq_ignore_ascii_case(b".onion")
}

/// The END reason for a stream to a port a hosted service does not serve: DONE, as C tor's
/// service sends it (`handle_hs_exit_conn`: not EXITPOLICY, which would tell a port scanner
/// that the port is closed), keeping the circuit. A C tor client reports DONE before
/// CONNECTED to its application as "connection refused".
pub(crate) const REJECT_PORT: EndReason = EndReason::DONE;
