//! Tor directory documents and path selection (dir-spec, path-spec, guard-spec).
//!
//! Part of onion, a sans-IO Tor stack: nothing here opens a socket, reads a clock or draws from
//! a global random number generator. Time and randomness are parameters.
//!
//! # Documents (dir-spec)
//!
//! | spec | module |
//! |---|---|
//! | §1.2 meta-format: items, objects, multiplicity | [`netdoc`] (zero-copy tokenizer, limits) |
//! | §1.3 signatures; RSA PKCS#1 v1.5 over a bare digest | [`sig`] (on onion-crypto) |
//! | §2.1.1 server descriptors (ed25519 certs via `onion_crypto::cert`) | [`routerdesc`] |
//! | §2.1.1, §2.1.2 a relay's own server descriptor and extra-info document: encode and sign | [`relaydesc`] |
//! | §2.1.2 extra-info documents | [`extrainfo`] |
//! | §2.1.1 / §3.8.2 exit policies and summaries | [`policy`] |
//! | §3.1 authority key certificates | [`authcert`] |
//! | §3.3 microdescriptors | [`microdesc`] |
//! | §3.4.1, §3.9 consensus (ns and microdesc), quorum, §5.1 freshness | [`consensus`] |
//! | §4.3, §5, §6 directory HTTP requests and responses | [`http`] |
//! | §4.5 consensus diffs: apply, make | [`consdiff`], [`consdiff_gen`] |
//! | proposal 324 §6.5 congestion-control parameters of `params` | [`ccparams`] |
//!
//! Relay choice (path-spec, guard-spec): [`netview`] prepares relays, weights, families and
//! subnets for weighted choice (path-spec §2.2, §5.1); [`select`] chooses paths (path-spec
//! §2.2), entry guards (guard-spec §4) and vanguards (proposal 333).
//!
//! Parsed documents borrow from their text. Signed documents come out of the
//! parser as `Unverified*` types; only verification (or an explicit
//! `assume_verified`) yields the usable type:
//!
//! ```no_run
//! # fn f(text: &str, certs: &[onion_dir::authcert::AuthCert], auths: &[onion_dir::RsaIdentity]) -> Result<(), onion_dir::Error> {
//! use onion_dir::{consensus, Timestamp};
//! let now = Timestamp::from(std::time::SystemTime::UNIX_EPOCH); // the caller's clock
//! let c = consensus::parse(text)?.verify(auths, certs, now)?;
//! assert!(c.freshness(now) != consensus::Freshness::Expired);
//! # Ok(()) }
//! ```
//!
//! # Run loop
//!
//! The guard manager is driven like every machine of the stack: inputs carry `now` first and
//! the caller's RNG last, outputs are drained with `poll_event`, and the embedder wakes it at
//! `poll_timeout`:
//!
//! ```
//! use onion_dir::netview::NetView;
//! use onion_dir::select::guard::{GuardEvent, GuardMgr, GuardParams, GuardUsage};
//! use onion_dir::select::path::PathConfig;
//! use onion_dir::Timestamp;
//!
//! fn turn(
//!     mgr: &mut GuardMgr,
//!     view: &NetView,
//!     now: Timestamp,
//!     rng: &mut impl rand_core::CryptoRngCore,
//! ) -> Option<Timestamp> {
//!     mgr.update_consensus(now, view, rng); // on each new consensus
//!     if let Ok(pick) = mgr.select(now, view, GuardUsage::Data, &[], &PathConfig::default(), rng) {
//!         // Build the circuit through `pick.guard`, then report how it went:
//!         let _ = mgr.circuit_succeeded(now, pick.circ, rng);
//!     }
//!     mgr.handle_timeout(now);
//!     while let Some(ev) = mgr.poll_event() {
//!         match ev {
//!             GuardEvent::CircuitUsable(_circ) => { /* attach streams */ }
//!             GuardEvent::CircuitExpired(_circ) => { /* close it */ }
//!         }
//!     }
//!     mgr.poll_timeout() // sleep until then, or until the next input
//! }
//! let mut mgr = GuardMgr::new(GuardParams::default());
//! let view = NetView::from_records(Vec::new(), Default::default()).unwrap();
//! # use rand_core::SeedableRng;
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1); // the caller's CSPRNG
//! assert_eq!(turn(&mut mgr, &view, Timestamp::from_unix(1_700_000_000), &mut rng), None);
//! ```

pub mod netview;
pub mod select;

pub mod authcert;
pub mod ccparams;
pub mod consdiff;
pub mod consdiff_gen;
pub mod consensus;
mod encode;
pub mod error;
pub mod extrainfo;
pub mod http;
pub mod ids;
pub mod microdesc;
pub mod netdoc;
pub mod policy;
pub mod relaydesc;
pub mod routerdesc;
pub mod sig;
pub mod synth;

pub use error::{Error, ErrorKind, HttpError, ParseError, ParseProblem, VerifyError};
pub use ids::{Ed25519Identity, MdDigest, Protocols, RelayFlags, RsaIdentity};
pub use onion_crypto::Timestamp;
