//! Tor channel cells and relay messages (tor-spec "Cell Packet format", "Relay cells").
//!
//! Part of onion, a sans-IO Tor stack: nothing here opens a socket, reads a clock or draws from
//! a global random number generator. Time and randomness are parameters.
//!
//! The crate is `#![no_std]` (with `alloc`) when its `std` feature is off.
//!
//! # Map from the specification to modules
//!
//! | spec section | module |
//! |---|---|
//! | tor-spec §0.1.1 integer encoding | [`reader`], [`writer`] |
//! | tor-spec §3 cell packet format, CIRCID_LEN, variable-length cells | [`codec`], [`circid`] |
//! | tor-spec §3 commands; §4.1 VERSIONS; §4.2 CERTS; §4.3 AUTH_CHALLENGE; §4.4 AUTHENTICATE; §4.5 NETINFO; §5.1 CREATE/CREATED/CREATE2/CREATED2/CREATE_FAST/CREATED_FAST; §5.4 DESTROY; §7.2 PADDING/VPADDING/PADDING_NEGOTIATE | [`chancell`] |
//! | tor-spec §6.1 relay cell header and padding | [`relay`] |
//! | tor-spec §5.1.2 EXTEND/EXTEND2/EXTENDED/EXTENDED2; §6.2 BEGIN/DATA/CONNECTED/BEGIN_DIR; §6.3 END; §6.4 RESOLVE/RESOLVED; §5.4 TRUNCATE/TRUNCATED; §7.2 DROP; §7.3.1 SENDME; prop 324 §4 XON/XOFF | [`relaymsg`] |
//! | tor-spec §5.1.2 link specifiers | [`linkspec`] |
//! | prop 332 ntor-v3 extension lists; prop 324 §10.3 congestion-control extensions; rend-spec-v3 §3.1.1 extension fields and §3.1.1.1 DoS parameters | [`extension`] |
//! | rend-spec-v3 §3.1–3.3 ESTABLISH_INTRO, INTRO_ESTABLISHED, INTRODUCE1/2, INTRODUCE_ACK; §4.1–4.2 ESTABLISH_RENDEZVOUS, RENDEZVOUS1/2 | [`hs`] |
//! | errors | [`error`] |
//!
//! # Zero copy
//!
//! Decoded messages borrow their byte fields from the input (`Cow::Borrowed`, or
//! [`chancell::RelayPayload::Borrowed`] for the 509-byte relay body). Call `into_owned()` on
//! a cell or message to keep it after the input buffer is gone. Encoders write into a
//! caller's `Vec<u8>` or `&mut [u8]` ([`writer::Writer`]).
//!
//! # Example: encode, and the receive loop
//!
//! ```
//! use onion_cell::chancell::{ChanCell, ChanMsg, RelayPayload};
//! use onion_cell::circid::CircId;
//! use onion_cell::codec::{CellDecoder, CellFormat, encode_cell};
//! use onion_cell::relay::{RelayCell, StreamId};
//! use onion_cell::relaymsg::{Data, RelayMsg};
//!
//! # fn main() -> Result<(), onion_cell::error::Error> {
//! let mut rng = rand_core::OsRng; // any RngCore; tests use a seeded ChaCha
//! # let mut rng = ZeroRng;
//! // A DATA message on stream 7, as a plaintext relay body with spec padding.
//! let body = RelayCell::new(StreamId::new(7), RelayMsg::Data(Data::new(b"hello")?)).encode(&mut rng)?;
//! // (A circuit would now set the digest and encrypt `body` in place.)
//! let cell = ChanCell::new(CircId::new(0x8000_0001), ChanMsg::Relay(body.0.into()));
//! let format = CellFormat::for_version(5)?;
//! let mut wire = Vec::new();
//! encode_cell(format, &cell, &mut wire)?;
//! assert_eq!(wire.len(), 514);
//!
//! // The receive loop: push what TLS delivered (in any chunks), then take every whole cell.
//! let mut dec = CellDecoder::new(format);
//! let mut cells = Vec::new();
//! for chunk in wire.chunks(100) {
//!     dec.push(chunk);
//!     while let Some(cell) = dec.next_cell()? {
//!         cells.push(cell.into_owned());
//!     }
//! }
//! let [got] = &cells[..] else { panic!("one cell") };
//! let ChanMsg::Relay(payload) = &got.msg else { unreachable!() };
//! let relay = RelayCell::decode(payload.as_bytes())?;
//! assert_eq!(relay.msg, RelayMsg::Data(Data::new(b"hello")?));
//! # Ok(()) }
//! # struct ZeroRng;
//! # impl rand_core::RngCore for ZeroRng {
//! #   fn next_u32(&mut self) -> u32 { 0 } fn next_u64(&mut self) -> u64 { 0 }
//! #   fn fill_bytes(&mut self, d: &mut [u8]) { d.fill(0) }
//! #   fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> { d.fill(0); Ok(()) }
//! # }
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;

pub mod chancell;
pub mod circid;
pub mod codec;
pub mod error;
pub mod extension;
pub mod hs;
pub mod linkspec;
pub mod reader;
pub mod relay;
pub mod relaymsg;
pub mod writer;

pub use chancell::{ChanCell, ChanCmd, ChanMsg};
pub use circid::CircId;
pub use codec::{CellDecoder, CellFormat};
pub use error::{Error, ErrorKind};
pub use relay::{RelayCell, RelayCellBody, StreamId};
pub use relaymsg::{RelayCmd, RelayMsg};
