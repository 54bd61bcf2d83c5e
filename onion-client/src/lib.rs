//! The Tor client an application embeds, sans-IO like the rest of onion: nothing here opens
//! a socket, reads a clock, starts a thread or draws from a global random number generator.
//! Time (a monotonic [`Instant`] and a wall-clock [`Timestamp`]) and randomness (a
//! `&mut impl CryptoRngCore`) are arguments.
//!
//! | part | module | spec |
//! |---|---|---|
//! | directory bootstrap and refresh, the owned verified directory | [`dir`] | dir-spec §4, §5; guard-spec §4.6 |
//!
//! Guards, channels, circuits, streams and onion services follow in the same shape.
//!
//! # The run loop
//!
//! Every machine is driven the same way: after any input (`handle_*`), drain its outputs
//! (`poll_*`) until `None`, then sleep until `poll_timeout()`. Inputs carry a
//! non-decreasing `now`. The directory machine asks for HTTP requests to be carried; the
//! embedder carries them over BEGIN_DIR streams (here a stand-in answers every request with
//! a network failure, so the machine retries and finally gives up):
//!
//! ```
//! use onion_client::dir::{Authority, Cached, DirConfig, DirEvent, DirMachine, DirMode, Failure};
//! use onion_client::{Instant, Timestamp};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), onion_client::Error> {
//! let auth = Authority {
//!     name: "auth0".into(),
//!     rsa_id: onion_dir::RsaIdentity([1; 20]),
//!     v3ident: onion_dir::RsaIdentity([2; 20]),
//!     or_addr: Some("127.0.0.1:5000".parse().unwrap()),
//! };
//! let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(7); // the embedder's
//! let mut now = Instant::ZERO; // the embedder's monotonic clock
//! let wall = Timestamp(1_795_418_410); // and its wall clock
//! let cfg = DirConfig::new(vec![auth], vec![], DirMode::Micro);
//! let mut dir = DirMachine::new(cfg, Cached::default(), now, wall, &mut rng)?;
//! let mut failures = 0;
//! while failures == 0 {
//!     while let Some(req) = dir.poll_request() {
//!         // Open (or reuse) a circuit to `req.source`, send `req.to_http()` on a BEGIN_DIR
//!         // stream, read to its end and decode it with `onion_client::dir::decode_response`.
//!         let answer = Err(Failure::Network("no network in this example".into()));
//!         dir.handle_response(req.id, now, wall, answer, &mut rng);
//!     }
//!     while let Some(event) = dir.poll_event() {
//!         match event {
//!             DirEvent::Progress { percent, what } => println!("bootstrap {percent}%: {what}"),
//!             DirEvent::Directory(d) => println!("{} relays usable", d.view.len()),
//!             DirEvent::Persist { .. } => { /* store it; give it back in `Cached` */ }
//!             DirEvent::Failed(e) => { println!("{e} ({})", e.kind()); failures += 1 }
//!         }
//!     }
//!     if let Some(t) = dir.poll_timeout() {
//!         now = now.max(t); // sleep until then
//!         dir.handle_timeout(now, wall, &mut rng);
//!     }
//! }
//! # Ok(()) }
//! ```

mod client;
pub mod dir;
pub mod hs;
pub mod guards;
mod error;
pub mod predict;
pub mod timeout;

pub use client::{
    msg_verdict, Client, ClientConfig, ConnId, Event, Isolation, Limits, Persist, Purpose,
    ServiceHandle, State, StreamHandle, Verdict,
};
pub use error::{Error, ErrorKind};
pub use onion_circuit::Instant;
pub use onion_dir::Timestamp;
