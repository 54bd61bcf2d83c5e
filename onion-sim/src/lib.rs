//! A deterministic, in-memory Tor network built from the onion state machines.
//!
//! Every party in one process, with virtual time and one seeded RNG, so that the same seed
//! gives the same run, byte for byte. Only the transport is simulated: connections carry
//! the bytes the parties write (no TLS; a relay's link certificate is real and its digest is
//! handed to the initiator as TLS would show it) and delay them by a latency plus the time the
//! link's bandwidth needs. Every relay is an [`onion_relay::Relay`], the machine
//! `onion relay` runs (link handshakes, ntor and ntor-v3 circuit handshakes, tor1 relay
//! crypto, EXTEND2, exit streams, SENDME flow control and congestion control, tor-spec
//! §2–§7; the directory cache; the onion-service roles, rend-spec-v3 §2–§4); clients are
//! `onion_client::Client`, the code embedders run, or a bare onion-circuit channel and
//! circuit.
//!
//! | module | what it simulates |
//! |---|---|
//! | [`client`] | the network ([`client::world`]): directory authorities with really signed documents, guard, middle and exit relays (also HSDirs, introduction and rendezvous points), a web server, links with their own latency and bandwidth; `onion_client::Client` connects as over sockets ([`client::driver`]). Runs ([`client::runs`]): `onion sim`'s bootstrap and fetch told step by step ([`client::runs::fetch_document`]), 100 concurrent streams (`onion sim --client`), an exit dying, guard failure and recovery, a refresh by consensus diff, a restart from persisted state, an onion service with or without client authorization (`onion sim --onion`) |
//! | [`circuit`] | the circuit-level story on the same network (`onion sim --circuit`): a bare client builds a circuit through given relays and fetches a document, cell by cell ([`circuit::run`], [`circuit::Sim`]); the web server ([`circuit::web`]); [`circuit::wired`], a client circuit and its relay circuits wired cell by cell without channels, for tests, fuzz targets and benchmarks |
//! | [`cc`] | the congestion-control experiment: a download through a bottleneck with Tor Vegas (under C tor's or other consensus values) and with fixed windows |
//!
//! Users: `onion sim` and its `--circuit`, `--client`, `--onion`, `--bottleneck` runs
//! (onion-cli), the end-to-end benchmarks (benches), the `circuit_relay` fuzz target, and the
//! tests in this crate's `tests/`.
//!
//! # Run loop
//!
//! A simulation is driven like the machines it runs, with virtual time: every party's inputs
//! are handled, every output drained, then the clock jumps to the earliest timer or link
//! delivery. [`client::driver::Sim::run_until`] runs that loop for `onion_client::Client`
//! until a condition holds; the same seed gives the same run:
//!
//! ```
//! use std::time::Duration;
//! use onion_client::Isolation;
//! use onion_sim::client::driver::{Outcome, Sim};
//! use onion_sim::client::world::WorldConfig;
//!
//! # fn main() -> Result<(), onion_sim::circuit::SimError> {
//! let cfg = WorldConfig { seed: 7, ..WorldConfig::default() };
//! // Authorities, relays (each an onion_relay::Relay) and a client with nothing stored.
//! let mut sim = Sim::new(cfg.clone(), None)?;
//! // Pump every party, then advance to the next event, until the client has a directory.
//! sim.run_until(Duration::from_secs(300), |s| s.client.is_bootstrapped())?;
//! // An HTTP fetch of 100 kB through a circuit the client builds.
//! sim.fetch(100_000, Isolation::NONE)?;
//! sim.run_until(Duration::from_secs(300), |s| s.fetches.all[0].outcome != Outcome::Running)?;
//! assert_eq!(sim.fetches.all[0].outcome, Outcome::Ok); // the body's SHA-256 is the server's
//! let story = onion_sim::client::runs::fetch_document(cfg.clone(), 10_000)?.story;
//! assert_eq!(onion_sim::client::runs::fetch_document(cfg, 10_000)?.story, story);
//! # Ok(()) }
//! ```
//!
//! This crate lives apart from the library crates so that an embedder's build compiles none
//! of it.

pub mod cc;
pub mod circuit;
pub mod client;
