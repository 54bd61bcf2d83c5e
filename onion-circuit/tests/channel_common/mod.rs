//! Fixtures shared by the channel test binaries: a fixed wall clock, a TLS certificate
//! digest and one relay key set (RSA-1024 generation is slow: made once per binary).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onion_circuit::channel::{ChanConfig, ChanError, Channel, RelayLinkKeys};
use onion_circuit::Instant;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The SHA-256 of the responder's (pretend) TLS certificate.
pub const TLS_DIGEST: [u8; 32] = [0x5a; 32];

/// The wall clock of the tests.
pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

/// The responder's keys.
pub fn keys() -> &'static RelayLinkKeys {
    static KEYS: OnceLock<RelayLinkKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        RelayLinkKeys::generate(wall(), &mut rng).expect("keys")
    })
}

/// An initiator at time zero that expects [`keys`] and the TLS certificate [`TLS_DIGEST`].
pub fn initiator(cfg: ChanConfig) -> Channel {
    Channel::initiator(cfg, keys().ids(), Some(TLS_DIGEST), Instant::ZERO, wall())
}

/// [`Channel::handle_input`] with its outcome as a `Result`, for the assertions of these
/// tests: `Err` with the error the channel closed with ([`Channel::close_error`]; its
/// `Closed` event stays queued, the one report), on this call and every later one.
pub trait Input {
    /// Feed `data`; the bytes consumed, or why the channel is closed.
    fn input(&mut self, now: Instant, data: &[u8]) -> Result<usize, ChanError>;
}

impl Input for Channel {
    fn input(&mut self, now: Instant, data: &[u8]) -> Result<usize, ChanError> {
        let n = self.handle_input(now, data);
        match self.close_error() {
            Some(e) => Err(e.clone()),
            None => Ok(n),
        }
    }
}
