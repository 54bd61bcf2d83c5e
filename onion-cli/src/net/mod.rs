//! The real-network embedding: drives the sans-IO crates over TCP + TLS.
//!
//! This is the worked example for anyone embedding onion. The crates never touch a socket, a
//! clock or an RNG; this module supplies all three with nothing but `std::net`, threads and
//! `rustls`:
//!
//! - [`tls`]: TLS to relays with Tor's certificate rules (self-signed link certificates; the
//!   relay's identity is proven by the CERTS cell over the certificate's SHA-256 digest).
//! - [`event`]: one event loop thread owns every state machine; one small thread per socket
//!   only reads, and sends what it read to the loop over a channel. Each turn of the loop
//!   feeds the inputs that arrived (bytes, EOF, a new SOCKS client) into the machines, drains
//!   their `poll_transmit` and `poll_event` until empty, then waits for the next input at
//!   most until the earliest `poll_timeout` (then `handle_timeout`): the code is
//!   [`driver::Driver`]'s loop, and the library crates' top-level docs show the same loop as
//!   compiled doc tests.
//! - [`driver`]: the loop around one `onion_client::Client` that every network command
//!   (`get`, `socks`, `serve`, `bootstrap`) runs on.
//! - [`authority`]: directory authority lists in C tor's `DirAuthority` format, read by the
//!   library (`onion_client::dir::authorities`); named here for `onion relay`'s modules.
//! - [`cache`]: directory documents, guard state and build times kept in the data directory,
//!   and [`private`]: the data and key directories and their files, private to the user
//!   (both shared with onion-tokio in `onion_io`, as are the TLS rules of [`tls`]).

pub use onion_client::dir::authorities as authority;
pub use onion_io::cache;
pub mod driver;
pub mod event;
pub mod pipe;
pub mod private;
pub mod tls;

use std::time::Duration;

/// The monotonic clock handed to the state machines: nanoseconds since the clock was made.
///
/// The machines take `onion_circuit::Instant` (`now`) on every input and return deadlines in
/// the same unit from `poll_timeout`; this is the only place that reads the OS clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// The current time, for the state machines.
    pub fn now(&self) -> onion_circuit::Instant {
        onion_circuit::Instant::from_duration(self.origin.elapsed())
    }

    /// How long until `deadline` (zero if it has passed).
    pub fn until(&self, deadline: onion_circuit::Instant) -> Duration {
        deadline.saturating_duration_since(self.now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
