//! Tor channels, circuits and streams as sans-IO state machines (tor-spec "Channels", "Circuit management", "Streams").
//!
//! Part of onion, a sans-IO Tor stack: nothing here opens a socket, reads a clock or draws from
//! a global random number generator. Time and randomness are parameters.
//!
//! # Map from the specification to modules
//!
//! | spec section | module |
//! |---|---|
//! | tor-spec §5.1–5.4 creating, extending, truncating and destroying circuits (client side); §5.5 routing relay cells from and to the origin; §5.6 RELAY_EARLY; §6.2–6.4 BEGIN, BEGIN_DIR, CONNECTED, DATA, END, RESOLVE/RESOLVED (client side) | [`circuit`] |
//! | tor-spec §5.1–5.6 as a relay: CREATE2/CREATE_FAST answered, EXTEND2 → CREATE2 → EXTENDED2, TRUNCATE, DESTROY propagation, one layer stripped/added, exit streams | [`relay`] |
//! | tor-spec §6.1–6.3 stream ids, states, half-closed streams | [`stream`] |
//! | tor-spec §7.3, §7.3.1, §7.4 circuit and stream windows, authenticated SENDME v1 | [`flow`] |
//! | proposal 324 §2.1, §3.3 congestion control: RTT, Tor Vegas | [`cc`] |
//!
//! # Run loop
//!
//! Every machine takes inputs carrying `now` (`handle_*`), then has its outputs drained
//! (`poll_*`) before the embedder sleeps until the earliest `poll_timeout`.
//!
//! Errors follow one contract. An input (`handle_cell`, `handle_timeout`,
//! `handle_from_client`, ...) is never the caller's mistake, so it returns nothing: a peer's
//! fault found there closes the circuit (DESTROY queued) and arrives once, as the circuit's
//! `Closed` event carrying the typed error. A command (`begin`, `send`, `extend`, ...)
//! returns an `Err` for what the caller must act on (a stream that does not exist, a bound,
//! a closed circuit) and leaves the machine as it was. Every error type has a `kind()`
//! ([`ErrorKind`]) telling apart the peer's fault, the caller's, a timeout and the rest. A
//! client circuit on its channel, one turn:
//!
//! ```
//! use onion_circuit::channel::{ChanEvent, Channel};
//! use onion_circuit::circuit::{CircError, CircEvent, Circuit};
//! use onion_circuit::Instant;
//! use onion_cell::CircId;
//!
//! /// One turn: feed what arrived, then drain every output before sleeping until the
//! /// earliest `poll_timeout`. `Err` once the circuit has closed on an error.
//! fn turn(
//!     chan: &mut Channel,
//!     circ: &mut Circuit,
//!     circ_id: CircId,
//!     now: Instant,
//!     from_tls: &[u8],
//!     to_tls: &mut Vec<u8>,
//!     rng: &mut impl rand_core::CryptoRngCore,
//! ) -> Result<Option<Instant>, CircError> {
//!     chan.handle_input(now, from_tls); // a broken channel: ChanEvent::Closed
//!     chan.handle_timeout(now);
//!     circ.handle_timeout(now);
//!     while let Some(ev) = chan.poll_event() {
//!         if let ChanEvent::CircuitCell { circ_id: id, msg } = ev {
//!             if id == circ_id {
//!                 circ.handle_cell(now, msg); // CREATED2, RELAY, DESTROY, ...
//!             }
//!         }
//!     }
//!     // User commands go here: circ.begin(..), circ.send(..), circ.extend(..).
//!     while let Some(msg) = circ.poll_cell(rng) {
//!         let _ = chan.send(circ_id, &msg);
//!     }
//!     let mut closed = None;
//!     while let Some(ev) = circ.poll_event() {
//!         match ev {
//!             // The one report of a fatal error (its DESTROY was sent above).
//!             CircEvent::Closed { error, .. } => closed = Some(error),
//!             _ => { /* hops added, streams opened, data, ends */ }
//!         }
//!     }
//!     while chan.poll_transmit(to_tls).is_some() {}
//!     match closed {
//!         Some(Some(e)) => Err(e),
//!         Some(None) => Ok(None),
//!         None => Ok([chan.poll_timeout(), circ.poll_timeout()].into_iter().flatten().min()),
//!     }
//! }
//! ```
//!
//! Secrets: the circuit machines hold no key bytes of their own. Handshake states, key
//! generators and tor1 layers are onion-crypto types, which zeroize on drop.

pub mod cc;
pub mod channel;
pub mod circuit;
pub mod error;
pub mod flow;
pub mod relay;
mod sendme;
pub mod stream;

pub use error::ErrorKind;
/// The stack's monotonic time, [`onion_crypto::time::Instant`] (the same type, re-exported):
/// every input of these machines carries one as `now`.
pub use onion_crypto::time::Instant;
