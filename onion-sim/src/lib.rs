//! A deterministic, in-memory Tor network built from the onion state machines.
//!
//! Every party in one process, with virtual time and one seeded RNG, so that the same seed
//! gives the same run, byte for byte. Only the transport is simulated: channels (tor-spec §2,
//! §4: VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO, with real link certificates) write their
//! cells as bytes onto in-memory links that delay them by a latency plus the time the link's
//! bandwidth needs; everything above (ntor and ntor-v3 circuit handshakes, tor1 relay crypto,
//! EXTEND2, streams, SENDME flow control, tor-spec §5–§7) is the real code of
//! [`onion_circuit`]; in the [`client`] world every relay is an [`onion_relay::Relay`] (the
//! machine `onion relay` runs) and the onion-service story (rend-spec-v3 §2–§4) runs on
//! `onion_client::Client` and [`onion_hs`].
//!
//! | module | what it simulates |
//! |---|---|
//! | [`circuit`] | client, guard, middle and exit relays and a web server: a client builds a circuit and fetches a document through it ([`circuit::run`], [`circuit::Sim`]); the reusable network ([`circuit::net`]), exit, BEGIN_DIR and web-server parts; [`circuit::wired`], a client circuit and its relay circuits wired cell by cell without channels, for tests, fuzz targets and benchmarks |
//! | [`client`] | a network for the embedder's client (`onion_client::Client`): directory authorities with really signed documents, guard, middle and exit relays (also HSDirs, introduction and rendezvous points), a web server, links with their own latency and bandwidth; the client connects as over sockets. Runs ([`client::runs`]): bootstrap, 100 concurrent streams, an exit dying, guard failure and recovery, a refresh by consensus diff, a restart from persisted state, an onion service with or without client authorization (`onion sim --onion`, [`client::runs::onion_fetch`]) |
//! | [`cc`] | the congestion-control experiment: a download through a bottleneck with Tor Vegas (under C tor's or other consensus values) and with fixed windows |
//!
//! Users: `onion sim`, `onion sim --onion` and `onion sim --client` (onion-cli), the
//! end-to-end circuit benchmark (benches), the `circuit_relay` fuzz target, and the tests in
//! this crate's `tests/`.
//!
//! # Run loop
//!
//! A simulation is driven like the machines it runs, with virtual time: every party's inputs
//! are handled, every output drained, then the clock jumps to the earliest timer or link
//! delivery. [`circuit::Sim::run_to_end`] runs that loop until the client is done and the
//! network is quiet; the same seed gives the same run:
//!
//! ```
//! use onion_sim::circuit::{Sim, SimConfig};
//!
//! # fn main() -> Result<(), onion_sim::circuit::SimError> {
//! let cfg = SimConfig { seed: 7, ..SimConfig::default() };
//! let mut sim = Sim::new(cfg.clone())?;
//! sim.run_to_end()?; // pump every party, then advance to the next event, until quiet
//! let report = sim.report();
//! assert_eq!(report.body, report.expected_body);
//! assert_eq!(onion_sim::circuit::run(cfg)?.story, report.story);
//! # Ok(()) }
//! ```
//!
//! This crate lives apart from the library crates so that an embedder's build compiles none
//! of it. [`circuit`] and [`cc`] drive the circuit machines directly;
//! [`client`] runs the embedder's layer (`onion_client::Client`) as over sockets, so that
//! the simulator exercises exactly the code that embedders run.

pub mod cc;
pub mod circuit;
pub mod client;
