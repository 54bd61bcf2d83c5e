//! The private C tor network for this crate's interop tests: the `onion-tornet` harness
//! (started once per test binary with the repository's `tornet/tornet` script; see that
//! crate), shared with onion-cli's interop tests. Set `ONION_KEEP_TORNET=1` to keep the
//! network's directory (logs) afterwards.

pub use onion_tornet::*;
