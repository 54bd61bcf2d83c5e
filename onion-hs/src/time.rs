//! Time periods, rend-spec-v3 §2.2.1 \[TIME-PERIODS\], and the shared-random schedule they are
//! aligned with (§2.2.4 \[FETCHUPLOADDESC\]).
//!
//! `period_num = floor((unix_minutes - rotation_offset) / period_length)`. The period length
//! comes from the consensus parameter `hsdir_interval` (default 1440 minutes); the rotation
//! offset is 12 voting intervals. A test network (`TestingTorNetwork 1`) instead uses one
//! shared-random protocol run, 24 × the voting interval, as the period length. Both derivations
//! are constructors of [`TimePeriodConfig`]. All times are the stack's wall-clock
//! [`Timestamp`], given by the caller.

use onion_dir::Timestamp;

/// Default period length (minutes), rend-spec-v3 §2.2.1.
pub const DEFAULT_PERIOD_LENGTH_MINUTES: u32 = 1440;
/// Bounds of `hsdir_interval` (param-spec): 30 minutes to 10 days.
pub const PERIOD_LENGTH_RANGE: core::ops::RangeInclusive<u32> = 30..=14400;
/// Rounds of the shared-random protocol run (dir-spec / proposal 250): 12 commit + 12 reveal.
pub const SR_ROUNDS_PER_RUN: u32 = 24;

/// Invalid time-period configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// `hsdir_interval` outside 30..=14400 minutes.
    #[error("hsdir_interval {0} minutes is outside 30..=14400")]
    BadInterval(i64),
    /// A voting interval that is zero or does not give whole minutes.
    #[error("voting interval {0} s gives no whole-minute time period")]
    BadVotingInterval(u32),
}

/// How to cut time into periods: length and rotation offset, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimePeriodConfig {
    length_minutes: u32,
    rotation_offset_minutes: u32,
    voting_interval_secs: u32,
}

impl Default for TimePeriodConfig {
    /// The public network: 1440-minute periods, 1-hour voting, 720-minute offset.
    fn default() -> Self {
        TimePeriodConfig {
            length_minutes: DEFAULT_PERIOD_LENGTH_MINUTES,
            rotation_offset_minutes: 720,
            voting_interval_secs: 3600,
        }
    }
}

impl TimePeriodConfig {
    /// From a consensus: `hsdir_interval` (if present) and the voting interval (seconds).
    pub fn from_consensus(
        hsdir_interval: Option<i64>,
        voting_interval_secs: u32,
    ) -> Result<Self, TimeError> {
        let length = match hsdir_interval {
            None => DEFAULT_PERIOD_LENGTH_MINUTES,
            Some(v) => u32::try_from(v)
                .ok()
                .filter(|l| PERIOD_LENGTH_RANGE.contains(l))
                .ok_or(TimeError::BadInterval(v))?,
        };
        let offset = rotation_offset(voting_interval_secs)?;
        Ok(TimePeriodConfig {
            length_minutes: length,
            rotation_offset_minutes: offset,
            voting_interval_secs,
        })
    }

    /// A test network (`TestingTorNetwork 1`): the period is one shared-random protocol run,
    /// 24 × the voting interval (8 minutes for a 20 s interval), offset 12 intervals.
    pub fn testing_network(voting_interval_secs: u32) -> Result<Self, TimeError> {
        let run = u64::from(voting_interval_secs) * u64::from(SR_ROUNDS_PER_RUN);
        let length = u32::try_from(run / 60)
            .ok()
            .filter(|&l| l > 0)
            .ok_or(TimeError::BadVotingInterval(voting_interval_secs))?;
        Ok(TimePeriodConfig {
            length_minutes: length,
            rotation_offset_minutes: rotation_offset(voting_interval_secs)?,
            voting_interval_secs,
        })
    }

    /// Explicit values (minutes); `length_minutes` must be nonzero.
    pub fn new(
        length_minutes: u32,
        rotation_offset_minutes: u32,
        voting_interval_secs: u32,
    ) -> Result<Self, TimeError> {
        if length_minutes == 0 {
            return Err(TimeError::BadInterval(0));
        }
        if voting_interval_secs == 0 {
            return Err(TimeError::BadVotingInterval(0));
        }
        Ok(TimePeriodConfig {
            length_minutes,
            rotation_offset_minutes,
            voting_interval_secs,
        })
    }

    /// Period length in minutes.
    pub fn length_minutes(&self) -> u32 {
        self.length_minutes
    }

    /// Rotation offset in minutes.
    pub fn rotation_offset_minutes(&self) -> u32 {
        self.rotation_offset_minutes
    }

    /// The period containing `t`.
    pub fn period_at(&self, t: Timestamp) -> TimePeriod {
        let minutes = (t.unix() / 60).saturating_sub(u64::from(self.rotation_offset_minutes));
        TimePeriod {
            num: minutes / u64::from(self.length_minutes),
            length_minutes: self.length_minutes,
            rotation_offset_minutes: self.rotation_offset_minutes,
        }
    }

    /// Start of the shared-random protocol run containing `t`; runs are 24 voting intervals
    /// long and aligned to the epoch.
    pub fn srv_run_start(&self, t: Timestamp) -> Timestamp {
        let run = u64::from(self.voting_interval_secs) * u64::from(SR_ROUNDS_PER_RUN);
        // `run` is nonzero: every constructor rejects a zero voting interval.
        Timestamp::from_unix(t.unix() - t.unix() % run.max(1))
    }

    /// Whether `valid_after` (of the live consensus) lies between the start of a time period
    /// and the next SRV (the `-` segments of §2.2.4's diagram). C tor's
    /// `hs_in_period_between_tp_and_srv`.
    pub fn between_tp_and_srv(&self, valid_after: Timestamp) -> bool {
        let srv_start = self.srv_run_start(valid_after);
        let tp_start = self.period_at(srv_start).next().start();
        !(valid_after >= srv_start && valid_after < tp_start)
    }
}

fn rotation_offset(voting_interval_secs: u32) -> Result<u32, TimeError> {
    if voting_interval_secs == 0 {
        return Err(TimeError::BadVotingInterval(0));
    }
    u32::try_from(u64::from(voting_interval_secs) * 12 / 60)
        .map_err(|_| TimeError::BadVotingInterval(voting_interval_secs))
}

/// One time period: its number, and the length/offset it was computed with (the length is
/// part of the blinding nonce and of the hash-ring indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimePeriod {
    num: u64,
    length_minutes: u32,
    rotation_offset_minutes: u32,
}

impl TimePeriod {
    /// A period from its number and length (minutes); the offset is used only by
    /// [`TimePeriod::start`].
    pub fn new(num: u64, length_minutes: u32, rotation_offset_minutes: u32) -> Self {
        TimePeriod {
            num,
            length_minutes,
            rotation_offset_minutes,
        }
    }

    /// The period number.
    pub fn num(&self) -> u64 {
        self.num
    }

    /// Length in minutes.
    pub fn length_minutes(&self) -> u32 {
        self.length_minutes
    }

    /// First second of the period.
    pub fn start(&self) -> Timestamp {
        Timestamp::from_unix(
            self.num
                .saturating_mul(u64::from(self.length_minutes))
                .saturating_add(u64::from(self.rotation_offset_minutes))
                .saturating_mul(60),
        )
    }

    /// First second after the period.
    pub fn end(&self) -> Timestamp {
        self.next().start()
    }

    /// The following period.
    pub fn next(&self) -> TimePeriod {
        TimePeriod {
            num: self.num.saturating_add(1),
            ..*self
        }
    }

    /// The preceding period.
    pub fn prev(&self) -> TimePeriod {
        TimePeriod {
            num: self.num.saturating_sub(1),
            ..*self
        }
    }
}
