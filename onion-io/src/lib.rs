//! The pieces both front ends of onion need around the sans-IO crates, written once.
//!
//! onion's library crates (onion-cell up to onion-client) touch no file, socket, clock or
//! global RNG: an embedder supplies them. Two embedders ship with onion, the blocking `onion`
//! command (onion-cli) and the async onion-tokio, and both need the same things that are
//! neither protocol logic nor sockets:
//!
//! - [`tls`]: the rustls client configuration for a relay's ORPort with Tor's certificate
//!   rules (tor-spec §2: any self-signed link certificate, its handshake signature still
//!   verified; its SHA-256 digest goes to the channel, which checks it against the CERTS
//!   cell, tor-spec §4.2).
//! - [`private`]: private directories and files (C tor's `check_private_dir` rules; files
//!   replaced atomically with mode 0600), for the data directory and key directories.
//! - [`cache`]: the data directory as the store of what `onion_client::Client` hands over to
//!   persist (directory documents, guard state, circuit build times) and gets back at the
//!   next start.
//!
//! Keeping them here gives one copy for the two front ends, and keeps files and TLS out of
//! the library crates.
//!
//! # Run loop
//!
//! A front end opens the data directory, starts the client from what an earlier run kept,
//! and, in the client's run loop (onion-client's crate documentation), stores each
//! [`onion_client::Event::Persist`] as it comes out:
//!
//! ```no_run
//! use onion_client::dir::{DirConfig, DirMode};
//! use onion_client::{Client, ClientConfig, Event, Instant, Timestamp};
//! use onion_io::cache::Cache;
//! use std::time::{SystemTime, UNIX_EPOCH};
//!
//! /// One turn's events: what to persist goes to the data directory at once.
//! fn drain(client: &mut Client, cache: &Cache, mode: DirMode) -> std::io::Result<()> {
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             Event::Persist(p) => cache.store(mode, &p)?,
//!             _ => { /* connections and streams, as onion-client's run loop shows */ }
//!         }
//!     }
//!     Ok(())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mode = DirMode::Micro;
//! let cache = Cache::open(std::path::Path::new("/var/lib/onion"))?;
//! let state = cache.load(mode, SystemTime::now()); // documents still live, guards, build times
//! let wall = Timestamp(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
//! let config = ClientConfig::new(DirConfig::new(vec![], vec![], mode)); // the real authorities
//! let mut rng = rand_core::OsRng;
//! let mut client = Client::new(config, state, Instant::ZERO, wall, &mut rng)?;
//! loop {
//!     // Inputs and timeouts as in onion-client's run loop, then:
//!     drain(&mut client, &cache, mode)?;
//! #   break;
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
pub mod private;
pub mod tls;
