//! The Tor client an application embeds, sans-IO like the rest of onion: nothing here opens
//! a socket, reads a clock, starts a thread or draws from a global random number generator.
//! Time (a monotonic [`Instant`] and a wall-clock [`Timestamp`]) is an argument of every
//! input, and randomness is read once, when [`Client::new`] seeds the client's own generator.
//!
//! | part | module | spec |
//! |---|---|---|
//! | the machine: channels shared per relay, circuits, streams, directory requests over BEGIN_DIR | [`Client`] | tor-spec §2–§7 |
//! | directory bootstrap and refresh, the owned verified directory | [`dir`] | dir-spec §4, §5; guard-spec §4.6 |
//! | guards, vanguards-lite and path choice | [`guards`] | guard-spec, path-spec §2.2, proposal 333 |
//! | circuit build timeout learning, predicted ports | [`timeout`], [`predict`] | path-spec §2.4, §2.1.1 |
//! | onion services (client and host) | [`hs`] | rend-spec-v3 |
//!
//! # The run loop
//!
//! [`Client`] is driven like every machine of onion: after any input (`handle_*` or a
//! command), drain its outputs (`poll_transmit`, `poll_event`) until `None`, then sleep until
//! `poll_timeout()` or the next input. Inputs carry a non-decreasing `now`. The embedder owns
//! the transports: [`Event::Connect`] asks it to open TCP and TLS to a relay, and it reports
//! back with [`Client::handle_connected`] (and the TLS certificate's SHA-256),
//! [`Client::handle_input`] and [`Client::handle_closed`]. It stores what
//! [`Event::Persist`] hands over and gives it back in [`State`] at the next start.
//!
//! Here the embedder has no network (every connection fails), so the client keeps trying
//! its authority and the stream waits; a real embedder loops for as long as it runs:
//!
//! ```
//! use onion_client::dir::{Authority, DirConfig, DirMode};
//! use onion_client::{Client, ClientConfig, Event, Instant, Isolation, State, Timestamp};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), onion_client::Error> {
//! let auth = Authority {
//!     name: "auth0".into(),
//!     rsa_id: onion_dir::RsaIdentity([1; 20]),
//!     v3ident: onion_dir::RsaIdentity([2; 20]),
//!     or_addr: Some("127.0.0.1:5000".parse().unwrap()),
//! };
//! let config = ClientConfig::new(DirConfig::new(vec![auth], vec![], DirMode::Micro));
//! let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(7); // the embedder's
//! let mut now = Instant::ZERO; // the embedder's monotonic clock
//! let wall = Timestamp(1_795_418_410); // and its wall clock
//! let mut client = Client::new(config, State::default(), now, wall, &mut rng)?;
//! let stream = client.connect("example.com", 80, Isolation::NONE, now)?;
//! let mut out = Vec::new();
//! for _ in 0..20 {
//!     while let Some(conn) = client.poll_transmit(now, &mut out) {
//!         // Write `out` to the TLS connection of `conn` (if its socket is full, keep the
//!         // rest and call `client.set_blocked(conn, true)` until it drains).
//!         out.clear();
//!     }
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             Event::Connect { conn, addr, .. } => {
//!                 // Open TCP to `addr`, then TLS; on success
//!                 // `client.handle_connected(conn, now, sha256_of_peer_certificate)`.
//!                 println!("connecting to {addr}: no network here");
//!                 client.handle_closed(conn, now);
//!             }
//!             Event::Disconnect { conn } => println!("close {conn:?}"),
//!             Event::StreamOpened { stream } => {
//!                 client.write(stream, b"GET / HTTP/1.0\r\n\r\n", now)?;
//!             }
//!             Event::StreamReadable { stream } => {
//!                 let mut buf = [0u8; 4096];
//!                 while let Ok(Some(n)) = client.read(stream, &mut buf, now) {
//!                     if n == 0 {
//!                         break;
//!                     }
//!                     // Hand buf[..n] to the application.
//!                 }
//!             }
//!             Event::StreamClosed { stream, error } => println!("{stream:?} closed: {error:?}"),
//!             Event::Bootstrap { percent, what } => println!("bootstrap {percent}%: {what}"),
//!             Event::Persist(_) => { /* store it; give it back in `State` */ }
//!             _ => {}
//!         }
//!     }
//!     // Sleep until the next input or `poll_timeout()`; here time just jumps.
//!     now = client.poll_timeout().unwrap_or(now + Duration::from_secs(1)).max(now);
//!     client.handle_timeout(now, Timestamp(wall.0 + now.saturating_duration_since(Instant::ZERO).as_secs()));
//! }
//! assert!(!client.is_bootstrapped());
//! client.close(stream, now);
//! # Ok(()) }
//! ```
//!
//! The directory machine ([`dir::DirMachine`]) can also be driven on its own, by an embedder
//! that carries its HTTP requests itself.

mod client;
pub mod dir;
mod error;
pub mod guards;
pub mod hs;
pub mod predict;
pub mod socks;
pub mod text;
pub mod timeout;

pub use client::{
    msg_verdict, CcView, CircuitView, Client, ClientConfig, ConnId, Event, HopView, Isolation,
    Limits, PaddingStats, Persist, Purpose, ServiceHandle, State, StreamHandle, Verdict,
};
pub use error::{Error, ErrorKind};
pub use onion_circuit::Instant;
pub use onion_dir::Timestamp;
