//! Time, the two types the whole stack uses for it.
//!
//! * [`Timestamp`], the wall clock: seconds since the Unix epoch (UTC), with the text form
//!   directory documents write (`YYYY-MM-DD HH:MM:SS`). Callers pass one (convertible from
//!   `std::time::SystemTime` with the `std` feature) to every certificate expiry, document
//!   validity and schedule check.
//! * [`Instant`], the monotonic clock, for timers, timeouts, rates and RTTs: nanoseconds on
//!   the embedder's monotonic clock from an origin it picks (process start, say). Only
//!   differences between two values mean anything. A wall clock may jump, a timer must not,
//!   so the two never convert into each other.
//!
//! No crate of the stack reads a clock: every input carries `now`. `std::time::Instant`
//! cannot be created on `wasm32-unknown-unknown` or on most embedded targets, hence a small
//! value type of our own. Crates above re-export both (`onion_circuit::Instant`,
//! `onion_dir::Timestamp`), the same types.

use core::fmt;
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

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// From seconds since the Unix epoch.
    pub const fn from_unix(secs: u64) -> Self {
        Timestamp(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> u64 {
        self.0
    }

    /// Add seconds, saturating.
    pub const fn add_secs(self, s: u64) -> Self {
        Timestamp(self.0.saturating_add(s))
    }

    /// Subtract seconds, saturating at the epoch.
    pub const fn sub_secs(self, s: u64) -> Self {
        Timestamp(self.0.saturating_sub(s))
    }

    /// Parse the two arguments `YYYY-MM-DD` and `HH:MM:SS` (dir-spec's time format).
    pub fn parse(date: &str, time: &str) -> Option<Self> {
        let d = date.as_bytes();
        let t = time.as_bytes();
        if d.len() != 10
            || t.len() != 8
            || d[4] != b'-'
            || d[7] != b'-'
            || t[2] != b':'
            || t[5] != b':'
        {
            return None;
        }
        let num = |b: &[u8]| -> Option<u64> {
            b.iter().try_fold(0u64, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
            })
        };
        let (y, mo, da) = (num(&d[0..4])?, num(&d[5..7])?, num(&d[8..10])?);
        let (h, mi, s) = (num(&t[0..2])?, num(&t[3..5])?, num(&t[6..8])?);
        if !(1970..=9999).contains(&y)
            || !(1..=12).contains(&mo)
            || da < 1
            || da > days_in_month(y, mo)
        {
            return None;
        }
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let days = days_from_civil(y, mo, da);
        Some(Timestamp(days * 86400 + h * 3600 + mi * 60 + s))
    }

    /// Parse a single `YYYY-MM-DD HH:MM:SS` string.
    pub fn parse_str(s: &str) -> Option<Self> {
        let (d, t) = s.split_once(' ')?;
        Self::parse(d, t)
    }
}

fn is_leap(y: u64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (y >= 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0 / 86400;
        let secs = self.0 % 86400;
        // civil_from_days
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + u64::from(m <= 2);
        write!(
            f,
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

#[cfg(feature = "std")]
impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Self {
        Timestamp(
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }
}

#[cfg(feature = "std")]
impl From<Timestamp> for std::time::SystemTime {
    fn from(t: Timestamp) -> Self {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    #[test]
    fn instant_arithmetic_saturates() {
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

    #[test]
    fn known() {
        assert_eq!(
            Timestamp::parse_str("1970-01-01 00:00:00"),
            Some(Timestamp(0))
        );
        assert_eq!(
            Timestamp::parse_str("2022-11-19 10:00:00"),
            Some(Timestamp(1_668_852_000))
        );
        assert_eq!(Timestamp::parse_str("2022-02-29 10:00:00"), None);
        assert_eq!(Timestamp(1_668_852_000).to_string(), "2022-11-19 10:00:00");
    }

    proptest! {
        #[test]
        fn roundtrip(s in 0u64..253_402_300_799) {
            let t = Timestamp(s);
            prop_assert_eq!(Timestamp::parse_str(&t.to_string()), Some(t));
        }
        #[test]
        fn never_panics(a in "\\PC{0,12}", b in "\\PC{0,10}") {
            let _ = Timestamp::parse(&a, &b);
        }
    }
}
