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
//! Secrets: the circuit machines hold no key bytes of their own. Handshake states, key
//! generators and tor1 layers are onion-crypto types, which zeroize on drop.

pub mod cc;
pub mod channel;
pub mod circuit;
pub mod flow;
pub mod relay;
pub mod stream;
pub mod time;

pub use time::Instant;
