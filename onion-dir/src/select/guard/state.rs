//! The persistent guard state as text (guard-spec Appendix A.5): one line per sampled guard,
//!
//! ```text
//! Guard in=default rsa_id=<40 hex> nickname=<nick> sampled_on=2016-11-29T19:39:31
//!   sampled_by=<version> listed=1 [unlisted_since=<date>] [confirmed_on=<date>]
//!   [confirmed_idx=<n>] [<unknown K=V>...]
//! ```
//!
//! (one line per guard, wrapped here). The order of the `K=V` entries does not matter;
//! unknown entries are kept and written back, as A.5 requires. Lines of other guard-state
//! instances (`in=` another name) are kept verbatim; blank lines and lines of other keywords
//! are skipped (a tor `state` file has many).

use super::{GuardMgr, GuardParams, SampledGuard};
use crate::ids::RsaIdentity;
use crate::Timestamp;

/// The most `Guard` lines a state may hold (tor's sample is at most 60 per instance).
pub const MAX_STATE_GUARDS: usize = 4096;

/// The most unknown `K=V` entries kept per guard.
pub const MAX_EXTRA_ENTRIES: usize = 64;

/// Why a persisted guard state was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardStateError {
    /// A required key is missing on a `Guard` line (1-based line number).
    #[error("line {line}: missing required key `{key}`")]
    MissingKey {
        /// The line.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// A value could not be parsed.
    #[error("line {line}: bad value for `{key}`")]
    BadValue {
        /// The line.
        line: usize,
        /// The key.
        key: String,
    },
    /// An entry without `=`.
    #[error("line {line}: entry `{entry}` is not K=V")]
    NotKeyValue {
        /// The line.
        line: usize,
        /// The entry, truncated to 40 bytes.
        entry: String,
    },
    /// The same key twice on one line.
    #[error("line {line}: key `{key}` repeated")]
    DuplicateKey {
        /// The line.
        line: usize,
        /// The key.
        key: String,
    },
    /// The same guard twice in this instance.
    #[error("line {line}: guard {id} listed twice")]
    DuplicateGuard {
        /// The line.
        line: usize,
        /// The guard.
        id: RsaIdentity,
    },
    /// Too many guards, or too many unknown entries on a line.
    #[error("line {line}: too many entries")]
    TooMany {
        /// The line.
        line: usize,
    },
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The latest time the text format can hold (9999-12-31T23:59:59).
pub const MAX_STATE_TIME: Timestamp = Timestamp::from_unix(253_402_300_799);

/// Format a time as `YYYY-MM-DDTHH:MM:SS` (guard-spec A.5). Times past [`MAX_STATE_TIME`]
/// are clamped to it.
pub fn format_time(t: Timestamp) -> String {
    let t = t.min(MAX_STATE_TIME).unix();
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parse `YYYY-MM-DDTHH:MM:SS` (years 1970-9999).
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 19
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if y < 1970 || !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d > mdays {
        return None;
    }
    let days = u64::try_from(days_from_civil(i64::from(y), mo, d)).ok()?;
    Some(Timestamp::from_unix(
        days * 86400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(se),
    ))
}

/// A value in the state format is any run of non-space characters; `=` is allowed only in
/// values. Anything else (spaces, newlines, empty) cannot be written and is dropped.
fn writable_value(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_whitespace)
}

fn writable_key(k: &str) -> bool {
    writable_value(k) && !k.contains('=')
}

impl GuardMgr {
    /// The persistent part of the state in guard-spec A.5 format, one `Guard` line per sampled
    /// guard, in sample order.
    pub fn to_state_string(&self) -> String {
        let mut out = String::new();
        for g in &self.sampled {
            out.push_str("Guard in=");
            out.push_str(&self.instance);
            out.push_str(" rsa_id=");
            out.push_str(&g.rsa_id.to_string());
            if let Some(n) = g.nickname.as_deref().filter(|n| writable_value(n)) {
                out.push_str(" nickname=");
                out.push_str(n);
            }
            out.push_str(" sampled_on=");
            out.push_str(&format_time(g.sampled_on));
            if let Some(v) = g.sampled_by.as_deref().filter(|v| writable_value(v)) {
                out.push_str(" sampled_by=");
                out.push_str(v);
            }
            out.push_str(if g.listed { " listed=1" } else { " listed=0" });
            if let Some(t) = g.unlisted_since {
                out.push_str(" unlisted_since=");
                out.push_str(&format_time(t));
            }
            if let Some(t) = g.confirmed_on {
                out.push_str(" confirmed_on=");
                out.push_str(&format_time(t));
                if let Some(i) = self.confirmed.iter().position(|c| *c == g.rsa_id) {
                    out.push_str(&format!(" confirmed_idx={i}"));
                }
            }
            for (k, v) in &g.extra {
                if writable_key(k) && writable_value(v) {
                    out.push(' ');
                    out.push_str(k);
                    out.push('=');
                    out.push_str(v);
                }
            }
            out.push('\n');
        }
        for l in &self.foreign_lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// Restore a guard manager from [`GuardMgr::to_state_string`] output (or the `Guard`
    /// lines of a tor `state` file) for the instance named `default`. Transient fields
    /// (reachability, pending, retry times) start fresh, as guard-spec §4.1 says they do not
    /// persist; the primary list is recomputed on the next consensus.
    pub fn from_state_str(params: GuardParams, text: &str) -> Result<Self, GuardStateError> {
        let mut mgr = GuardMgr::new(params);
        let mut confirmed: Vec<(u64, Timestamp, RsaIdentity)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let Some(rest) = line.strip_prefix("Guard ") else {
                continue;
            };
            if mgr.sampled.len() + mgr.foreign_lines.len() >= MAX_STATE_GUARDS {
                return Err(GuardStateError::TooMany { line: line_no });
            }
            let mut kv: Vec<(&str, &str)> = Vec::new();
            for entry in rest.split_ascii_whitespace() {
                let Some((k, v)) = entry.split_once('=') else {
                    return Err(GuardStateError::NotKeyValue {
                        line: line_no,
                        entry: entry.chars().take(40).collect(),
                    });
                };
                if kv.iter().any(|(k2, _)| *k2 == k) {
                    return Err(GuardStateError::DuplicateKey {
                        line: line_no,
                        key: k.chars().take(40).collect(),
                    });
                }
                if kv.len() >= MAX_EXTRA_ENTRIES + 16 {
                    return Err(GuardStateError::TooMany { line: line_no });
                }
                kv.push((k, v));
            }
            let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            let bad = |key: &str| GuardStateError::BadValue {
                line: line_no,
                key: key.to_string(),
            };
            let instance = get("in").ok_or(GuardStateError::MissingKey {
                line: line_no,
                key: "in",
            })?;
            if instance != mgr.instance {
                mgr.foreign_lines.push(line.trim_end().to_string());
                continue;
            }
            let rsa_id = get("rsa_id")
                .ok_or(GuardStateError::MissingKey {
                    line: line_no,
                    key: "rsa_id",
                })
                .and_then(|v| RsaIdentity::from_hex(v).map_err(|_| bad("rsa_id")))?;
            let sampled_on = get("sampled_on")
                .ok_or(GuardStateError::MissingKey {
                    line: line_no,
                    key: "sampled_on",
                })
                .and_then(|v| parse_time(v).ok_or_else(|| bad("sampled_on")))?;
            let listed = match get("listed") {
                Some("1") => true,
                Some("0") => false,
                Some(_) => return Err(bad("listed")),
                None => {
                    return Err(GuardStateError::MissingKey {
                        line: line_no,
                        key: "listed",
                    })
                }
            };
            let time_opt = |key: &str| -> Result<Option<Timestamp>, GuardStateError> {
                get(key)
                    .map(|v| parse_time(v).ok_or_else(|| bad(key)))
                    .transpose()
            };
            let unlisted_since = time_opt("unlisted_since")?;
            let confirmed_on = time_opt("confirmed_on")?;
            let confirmed_idx = get("confirmed_idx")
                .map(|v| v.parse::<u64>().map_err(|_| bad("confirmed_idx")))
                .transpose()?;
            if mgr.sampled.iter().any(|g| g.rsa_id == rsa_id) {
                return Err(GuardStateError::DuplicateGuard {
                    line: line_no,
                    id: rsa_id,
                });
            }
            const KNOWN: [&str; 9] = [
                "in",
                "rsa_id",
                "nickname",
                "sampled_on",
                "sampled_by",
                "listed",
                "unlisted_since",
                "confirmed_on",
                "confirmed_idx",
            ];
            let extra: Vec<(String, String)> = kv
                .iter()
                .filter(|(k, _)| !KNOWN.contains(k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if extra.len() > MAX_EXTRA_ENTRIES {
                return Err(GuardStateError::TooMany { line: line_no });
            }
            if let Some(on) = confirmed_on {
                confirmed.push((confirmed_idx.unwrap_or(u64::MAX), on, rsa_id));
            }
            mgr.sampled.push(SampledGuard {
                rsa_id,
                nickname: get("nickname").map(str::to_string),
                sampled_on,
                sampled_by: get("sampled_by").map(str::to_string),
                listed,
                unlisted_since,
                confirmed_on,
                extra,
                ..SampledGuard::new(rsa_id, sampled_on)
            });
        }
        // Confirmed order: by confirmed_idx, then by confirmation date (guard-spec §4.3).
        confirmed.sort_by_key(|&(idx, on, id)| (idx, on, id));
        mgr.confirmed = confirmed.into_iter().map(|(_, _, id)| id).collect();
        Ok(mgr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_known_answers() {
        assert_eq!(format_time(Timestamp(0)), "1970-01-01T00:00:00");
        assert_eq!(
            parse_time("2016-11-29T19:39:31"),
            Some(Timestamp(1_480_448_371))
        );
        assert_eq!(format_time(Timestamp(1_480_448_371)), "2016-11-29T19:39:31");
        assert_eq!(
            parse_time("2024-02-29T00:00:00"),
            Some(Timestamp(1_709_164_800))
        );
        assert_eq!(parse_time("2023-02-29T00:00:00"), None);
        assert_eq!(parse_time("2016-11-29 19:39:31"), None);
        assert_eq!(parse_time("+016-11-29T19:39:31"), None);
        assert_eq!(format_time(MAX_STATE_TIME), "9999-12-31T23:59:59");
        assert_eq!(parse_time("9999-12-31T23:59:59"), Some(MAX_STATE_TIME));
    }
}
