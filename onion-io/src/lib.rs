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

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
pub mod private;
pub mod tls;
