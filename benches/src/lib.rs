//! Shared helpers for onion's criterion benchmarks (see `benches/`).

use rand_chacha::rand_core::SeedableRng;

/// A deterministic RNG, so that every benchmark run measures the same inputs.
pub fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}
