//! A Tor relay as one sans-IO state machine: [`Relay`], the relay counterpart of
//! `onion_client::Client`.
//!
//! The relay does the protocol; the embedder owns sockets, TLS, DNS and the clock:
//!
//! * **Inbound connections** (tor-spec §2, §4): the embedder's TLS server presents
//!   [`Relay::link_cert`] and reports each accepted connection with
//!   [`Relay::handle_accepted`]. The relay runs the responder handshake (VERSIONS, CERTS,
//!   AUTH_CHALLENGE, NETINFO) with `onion_circuit`'s `Channel::responder`; an initiator
//!   that authenticates (another relay) is verified, for which the relay asks for the TLS
//!   exporter value ([`Event::TlsExporter`]).
//! * **Circuits** (§5): CREATE2 (ntor, ntor-v3) and CREATE_FAST answered with the onion
//!   keys of the [`onion_crypto::relay_keyset::RelayKeySet`]; layered crypto by
//!   `onion_circuit::relay::RelayCircuit`; EXTEND2 reuses a channel to the named relay
//!   (§5.3.1: one whose peer proved the identities, or one being opened for them) or opens
//!   one ([`Event::Connect`], an authenticating initiator channel); cells forwarded both
//!   ways; DESTROY and TRUNCATE propagated (§5.4); a circuit is freed when either side
//!   goes.
//! * **Exit** (§6): BEGIN checked against the exit policy ([`RelayConfig::exit_policy`],
//!   private addresses refused unless told otherwise); host names resolved by the embedder
//!   ([`Event::Resolve`]) and the resolved address checked again; the TCP connection
//!   opened by the embedder ([`Event::OpenTarget`]); data both ways within the circuit's
//!   windows, with bounded buffers that push back on the target and on the client; END
//!   with the reason of §6.3 (EXITPOLICY, RESOLVEFAILED, CONNECTREFUSED, TIMEOUT, NOROUTE,
//!   CONNRESET, DONE, RESOURCELIMIT). RESOLVE answered with RESOLVED (§6.4).
//! * **Directory cache** (§6.2.1, dir-spec §4): BEGIN_DIR streams answered from the
//!   documents the embedder gives ([`Relay::set_directory_documents`], [`dir`]), which it
//!   keeps between runs through [`dir_saved`] (verified again when taken back).
//! * **Limits** ([`Limits`], dos-spec): connections per address, circuit-creation rate per
//!   address, circuits per channel, per-circuit cell queues, channel buffers, and an
//!   out-of-memory handler that closes the circuits whose queued data is oldest first.
//!
//! Nothing here reads a clock, opens a socket or draws from a global RNG: `now` (monotonic,
//! [`Instant`]) comes with every input and the wall clock with [`Relay::new`] and
//! [`Relay::handle_timeout`]; the rng given to [`Relay::new`] seeds the relay's own
//! ChaCha20 generator, so a seeded run is deterministic.
//!
//! * **Onion services** (rend-spec-v3): HSDir (descriptors stored from and served over
//!   BEGIN_DIR, [`RelayConfig::hs_dir`]), introduction point (ESTABLISH_INTRO with the DoS
//!   extension's INTRODUCE2 rate limit, INTRODUCE1 relayed as INTRODUCE2) and rendezvous
//!   point (RENDEZVOUS1 joins two circuits), on `onion_hs::relay`'s state.
//!
//! Not served: TAP CREATE cells, descriptors and their upload (the embedder builds and
//! posts them).
//!
//! # Run loop
//!
//! After every input (`handle_*`, `provide_tls_exporter`, `target_transmit`), drain
//! [`Relay::poll_event`] and [`Relay::poll_transmit`] (or [`Relay::poll_transmit_to`] per
//! socket) until they return nothing, then wait for sockets or for
//! [`Relay::poll_timeout`] and call [`Relay::handle_timeout`].
//!
//! ```no_run
//! # use onion_relay::*; use onion_circuit::Instant;
//! # fn clock() -> Instant { Instant::ZERO }
//! # fn write(_: ConnId, _: &[u8]) {} fn act(_: Event) {}
//! # fn run(relay: &mut Relay) {
//! let mut out = Vec::new();
//! loop {
//!     while let Some(ev) = relay.poll_event() { act(ev) }
//!     while let Some(conn) = relay.poll_transmit(clock(), &mut out) {
//!         write(conn, &out);
//!         out.clear();
//!     }
//!     // ... wait for a socket or relay.poll_timeout(), feed what came with
//!     // relay.handle_input(conn, clock(), &bytes) or relay.handle_timeout(clock(), wall)
//! #   break;
//! }
//! # }
//! ```

pub mod bwhist;
pub mod config;
pub mod dir;
pub mod dir_saved;
mod dos;
pub mod event;
mod relay;
pub mod store;
pub mod tls;

#[cfg(test)]
mod test_docs;
#[cfg(test)]
mod tests;

pub use config::{ConsensusParams, Limits, RelayConfig};
pub use dir::{DirDocuments, ServerDescriptor};
pub use event::{ConnId, Error, ErrorKind, Event, ResolveError, StreamHandle, TargetError};
pub use onion_circuit::Instant;
pub use onion_crypto::Timestamp;
pub use relay::{Relay, RelayStats};
pub use store::DescriptorStore;
pub use tls::TlsLinkCert;
