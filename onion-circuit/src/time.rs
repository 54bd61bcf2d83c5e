//! Monotonic time as the state machines see it.
//!
//! The machines never read a clock: every input carries `now`. `std::time::Instant` cannot be
//! created on `wasm32-unknown-unknown` or on most embedded targets, so time is a small value type
//! of our own: nanoseconds on the embedder's monotonic clock, from an origin the embedder picks
//! (process start, say). Only differences between two values mean anything.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the embedder's monotonic clock, in nanoseconds from an arbitrary origin.
///
/// An embedder with `std` typically keeps one `std::time::Instant` as the origin and passes
/// `Instant::from_duration(origin.elapsed())`. Tests and simulators advance it by hand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the clock.
    pub const ZERO: Instant = Instant(0);

    /// The instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// The instant `d` after the origin (saturating at about 584 years).
    pub fn from_duration(d: Duration) -> Self {
        Instant(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let d = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(d).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating addition: a timeout too far in the future is simply "never".
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant(u64::MAX))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating difference, as [`Instant::saturating_duration_since`].
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_nanos(10);
        assert_eq!(t + Duration::from_nanos(5), Instant::from_nanos(15));
        assert_eq!(Instant::from_nanos(3) - t, Duration::ZERO);
        assert_eq!(t - Instant::from_nanos(3), Duration::from_nanos(7));
        assert_eq!(
            Instant::from_nanos(u64::MAX) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
        assert_eq!(
            Instant::from_duration(Duration::from_secs(2)).as_nanos(),
            2_000_000_000
        );
    }
}
