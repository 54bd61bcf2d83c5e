//! A simulated Tor network for the embedder's client, `onion_client::Client`: directory
//! authorities whose documents are signed for real, guard, middle and exit relays, a web
//! server behind the exits, and links with configurable latency and bandwidth, in virtual
//! time with one seeded RNG, so that the same seed gives the same run.
//!
//! | module | what it holds |
//! |---|---|
//! | [`authority`] | authorities' keys, key certificates (dir-spec §3.1), signed microdescriptor consensuses and microdescriptors (§3.3, §3.4.1), consensus diffs (§4.5.1) |
//! | [`driver`] | the embedder's run loop for `onion_client::Client` on a world ([`driver::Sim`]): connections, bytes, timers, persistence in memory, the application's HTTP fetches with their bodies' SHA-256 checked, and other clients hosting onion services ([`driver::Service`]) |
//! | [`runs`] | the scenarios: `onion sim`'s bootstrap and fetch told step by step, concurrent streams, a relay dying, guard failure, a refresh by diff, a restart, an onion service with client authorization |
//! | [`world`] | the network ([`world::World`]): relays that are [`onion_relay::Relay`]s, exit streams to the web server, BEGIN_DIR directory service, HSDirs, introduction and rendezvous points, connections the client opens as over sockets |
//!
//! The client side of [`world::World`] is raw connections (open, bytes, close), exactly what
//! an embedder's sockets give the client, so the client runs here as over real TCP and TLS:
//! `onion_client::Client` through [`driver`], a bare onion-circuit channel and circuit in
//! [`crate::circuit`], or the congestion-control experiment's client in [`crate::cc`]. Only
//! bytes cross; the relays' side is the code `onion relay` runs.

pub mod authority;
pub mod driver;
pub mod runs;
pub mod world;
