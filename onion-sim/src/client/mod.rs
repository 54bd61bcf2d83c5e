//! A simulated Tor network for the embedder's client, `onion_client::Client`: directory
//! authorities whose documents are signed for real, guard, middle and exit relays, a web
//! server behind the exits, and links with configurable latency and bandwidth, in virtual
//! time with one seeded RNG, so that the same seed gives the same run.
//!
//! | module | what it holds |
//! |---|---|
//! | [`authority`] | authorities' keys, key certificates (dir-spec §3.1), signed microdescriptor consensuses and microdescriptors (§3.3, §3.4.1), consensus diffs (§4.5.1) |
//! | [`driver`] | the embedder's run loop for `onion_client::Client` on a world ([`driver::Sim`]): connections, bytes, timers, persistence in memory, the application's HTTP fetches with their bodies' SHA-256 checked, and other clients hosting onion services ([`driver::Service`]) |
//! | [`runs`] | the scenarios: bootstrap, concurrent streams, a relay dying, guard failure, a refresh by diff, a restart, an onion service with client authorization |
//! | [`world`] | the network ([`world::World`]): relays running onion-circuit's relay side, exit streams to the web server, BEGIN_DIR directory service, HSDirs, introduction and rendezvous points, connections the client opens as over sockets |
//!
//! The client side of [`world::World`] is raw connections (open, bytes, close), exactly what
//! an embedder's sockets give the client, so the client runs here as over real TCP and TLS.
//! That is why it is a network of its own rather than [`crate::circuit::net`]: there, the
//! network owns its clients' channels and circuits; here the client owns them and only bytes
//! cross. The relays' side is the same onion-circuit code in both.

pub mod authority;
pub mod driver;
pub mod runs;
pub mod world;
