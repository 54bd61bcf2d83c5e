//! Tor v3 onion services (rend-spec-v3).
//!
//! Part of onion, a sans-IO Tor stack: nothing here opens a socket, reads a clock or draws from
//! a global random number generator. Time and randomness
//! (`&mut impl rand_core::CryptoRngCore`) are parameters.
//!
//! | rend-spec-v3 section | module |
//! |---|---|
//! | §0.3 building blocks (H, KDF, MAC, STREAM) | [`ops`] |
//! | §0.4 link specifiers | [`linkspec`] |
//! | §6 \[ONIONADDRESS\] | [`address`] |
//! | §2.1 \[SUBCRED\], App. A.2 \[KEYBLIND\] | [`keys`] |
//! | C tor's key files, §1.9.1 \[CLIENT-AUTH\] key formats | [`keyfile`] |
//! | §2.2.1 \[TIME-PERIODS\] | [`time`] |
//! | §2.2.3 \[HASHRING\], §2.2.4 \[FETCHUPLOADDESC\], §2.3.1 | [`ring`] |
//! | cert-spec §2.1 (types 08, 09, 0B) | [`cert`] |
//! | §2.4 \[DESC-OUTER\], §2.5 \[HS-DESC-ENC\], client auth | [`desc`] |
//! | §3.3.2 \[NTOR-WITH-EXTRA-DATA\], §4.2.1 key expansion | [`ntor`] |
//! | §3.1–§4.2 messages: what onion services require of onion-cell's (`onion_cell::hs`), and their MACs, signatures and encryption | [`msg`] |
//! | §3.1, §3.2, §4.1, §4.2 at the relays (intro point, rendezvous point) | [`relay`] |
//! | client: §2.2.4.1, §3.2, §4 | [`client`] |
//! | service: §2.2.4.2, §3.1, §3.3, §4.2 | [`service`] |
//! | service publishing: §2.2.2, §2.2.4.2, §2.2.5, §3.1, intro point rotation | [`publish`] |
//! | errors: one [`enum@Error`] that every module's error converts into, classified by [`ErrorKind`] | [`error`] |
//!
//! The client and service machines work on onion-cell's relay messages; the embedder owns
//! the circuits (`onion-circuit`), sends what they return (encoded once, into the cell) and
//! feeds back what arrives.
//!
//! # Run loop
//!
//! The service's [`publish::Publisher`] is driven like every machine of the stack: inputs
//! carry the wall-clock `now` first and the caller's RNG last, what to do comes out of
//! `poll_action`, and the embedder wakes it at `poll_timeout`:
//!
//! ```
//! use onion_dir::Timestamp;
//! use onion_hs::publish::{ConsensusView, PublishAction, Publisher, PublisherConfig};
//! use onion_hs::service::{HsService, HsServiceConfig};
//! use onion_hs::ExpandedKeypair;
//!
//! fn turn(
//!     p: &mut Publisher,
//!     now: Timestamp,
//!     consensus: Option<ConsensusView>,
//!     rng: &mut impl rand_core::CryptoRngCore,
//! ) -> Option<Timestamp> {
//!     if let Some(view) = consensus {
//!         p.set_consensus(now, view, rng);
//!     }
//!     if p.poll_timeout().is_some_and(|t| t <= now) {
//!         p.handle_timeout(now, rng);
//!     }
//!     while let Some(action) = p.poll_action() {
//!         match action {
//!             // Build a circuit to `relay`; when built, send p.intro_circuit_built(intro, kh)
//!             // and report INTRO_ESTABLISHED with p.intro_established(now, intro, rng).
//!             PublishAction::BuildIntroCircuit { intro: _, relay: _ } => {}
//!             PublishAction::CloseIntroCircuit { intro: _ } => {}
//!             // POST the descriptor to the HSDir, then p.upload_result(now, upload, ok, rng).
//!             PublishAction::Upload { upload, .. } => p.upload_result(now, upload, true, rng),
//!         }
//!     }
//!     p.poll_timeout()
//! }
//! let hs = HsService::new(ExpandedKeypair::from_seed(&[7; 32]), HsServiceConfig::default());
//! let mut p = Publisher::new(hs, PublisherConfig::default());
//! # use rand_core::SeedableRng;
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1); // the caller's CSPRNG
//! assert_eq!(turn(&mut p, Timestamp::from_unix(1_700_000_000), None, &mut rng), None);
//! ```

pub mod address;
pub mod cert;
pub mod client;
pub mod desc;
pub mod error;
mod keccak;
pub mod keyfile;
pub mod keys;
pub mod linkspec;
pub mod msg;
pub mod ntor;
pub mod ops;
pub mod publish;
pub mod relay;
pub mod ring;
pub mod service;
pub mod time;
mod util;

pub use address::{AddressError, OnionAddress};
pub use error::{Error, ErrorKind};
pub use keys::{
    Credential, ExpandedKeypair, HsBlindedKey, HsBlindedKeypair, HsIdKey, Subcredential,
};
pub use time::{TimePeriod, TimePeriodConfig};
/// Re-exported: client authorization keys are `x25519_dalek::StaticSecret`.
pub use x25519_dalek;
