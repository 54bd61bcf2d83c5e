//! Consensus diffs (dir-spec §4.5, appendix E): apply a cache's ed-style diff to
//! the consensus a client already holds.
//!
//! A client that has a consensus sends the SHA3-256 digest of its *signed part*
//! ([`signed_part_digest`], dir-spec §4.5.2 `X-Or-Diff-From-Consensus`); a cache
//! may answer with a diff instead of the full document ([`is_diff`]). The diff
//! (§4.5.1) is
//!
//! ```text
//! network-status-diff-version 1
//! hash <FromDigest> <ToDigest>
//! <limited ed commands, appendix E>
//! ```
//!
//! and [`apply`] checks both digests around the edit, so the only possible
//! outcomes are the exact consensus the cache meant, or an error.
//!
//! # The accepted ed subset (appendix E)
//!
//! Exactly `<n1>d`, `<n1>,<n2>d`, `<n1>,$d`, `<n1>c`, `<n1>,<n2>c` and `<n1>a`;
//! "clients MUST NOT accept other ed commands", so anything else (`s/x/y/`, `w`,
//! `1,2m3`, a `$` with `c`/`a`, a range with `a`, spaces, signs) is refused.
//! `c` and `a` are followed by a block of lines ended by a line holding just
//! `.`. Numbers are 1-indexed line numbers of the *original* file, which is why
//! commands run back to front. The rules we enforce, where the spec leaves
//! room:
//!
//! - `d`/`c` need `1 <= n1 <= n2 <= lines`; `$` is the number of lines of the
//!   original file. A one-line range (`<n>,<n>d`, or `<lines>,$d`) is accepted
//!   as the spec reads it; C tor's applier refuses ranges with `n2 <= n1`, but
//!   its generator never writes them (it writes `<n>d`), so this only widens
//!   what we accept to what the spec says.
//! - `<n>a` needs `0 <= n <= lines` (`0a` inserts before the first line).
//! - Ordering: every command must lie strictly before what the previous one
//!   touched. After `d`/`c` of lines `n1..=n2`, the next command may touch
//!   lines up to `n1 - 1` (so `<n1-1>a` is allowed: it inserts just before the
//!   replaced lines). After `<n>a`, the next command may touch lines up to `n`
//!   (line `n` lies before the insertion point), but may not be another `<n>a`:
//!   two blocks at the same point would make their order depend on reading the
//!   commands back to front. (C tor's applier takes it; its generator writes
//!   one block per insertion point, so no real diff has it.)
//! - A `c`/`a` block must hold at least one line (C tor refuses empty blocks
//!   too: `c` with none is a `d`, `a` with none does nothing).
//! - The spec requires the *generator* to start with `<n1>,$d` removing the
//!   base's signatures; like C tor we do not enforce that, since the ToDigest
//!   check already rejects any result that is not the cache's consensus.
//!
//! # Lines and the result
//!
//! Base, diff and result are sequences of lines each ended by `\n` (as C tor's
//! `consensus_split_lines` requires of its inputs, and as its
//! `consensus_join_lines` builds the result: every line, the last included, is
//! followed by `\n`; no lines give the empty text). A base or diff whose last
//! line lacks its `\n` is refused.
//!
//! # Bounds
//!
//! Base and diff are each capped at [`MAX_BYTES`] (the consensus size limit
//! [`Limits::LARGE`](crate::netdoc::Limits::LARGE)). The result is built from
//! slices of the two inputs, each byte used at most once, so its size is at
//! most `base.len() + diff.len()`; besides it the only allocation is one slice
//! reference per command. Line numbers that do not fit a `usize` are an error,
//! and no input panics.

use sha3::{Digest, Sha3_256};

/// Largest accepted base consensus or diff, in bytes (the consensus limit of
/// [`Limits::LARGE`](crate::netdoc::Limits::LARGE)).
pub const MAX_BYTES: usize = crate::netdoc::Limits::LARGE.max_bytes;

/// Prefix of a consensus diff's first line (dir-spec §4.5.1).
const VERSION_PREFIX: &str = "network-status-diff-version ";
/// The only diff version defined (dir-spec §4.5.1).
const VERSION_LINE: &str = "network-status-diff-version 1";
/// Keyword starting the signature lines of a consensus (dir-spec §3.4.1).
const SIG_KEYWORD: &str = "directory-signature ";

/// Why a consensus diff does not apply. Line numbers (`line`) are 1-based line
/// numbers in the diff text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// The diff is larger than [`MAX_BYTES`].
    #[error("consensus diff is {len} bytes, more than the {max}-byte limit")]
    DiffTooLarge {
        /// Size of the diff.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The base consensus is larger than [`MAX_BYTES`].
    #[error("base consensus is {len} bytes, more than the {max}-byte limit")]
    BaseTooLarge {
        /// Size of the base.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Line 1 does not start with `network-status-diff-version ` (§4.5.1).
    #[error("diff line 1: not a consensus diff (no network-status-diff-version line)")]
    NotADiff,
    /// Line 1 is a version line for a version other than 1 (§4.5.1).
    #[error("diff line 1: unsupported consensus diff version (only 1 is defined)")]
    UnsupportedVersion,
    /// The diff's last line is not ended by a newline.
    #[error("diff line {line}: last line of the diff has no terminating newline")]
    DiffUnterminated {
        /// The unterminated line.
        line: usize,
    },
    /// The base's last line is not ended by a newline.
    #[error("base consensus: last line has no terminating newline")]
    BaseUnterminated,
    /// Line 2 is not `hash SP FromDigest SP ToDigest` with two 64-digit hex
    /// SHA3-256 digests (§4.5.1).
    #[error("diff line 2: bad hash line: {0}")]
    BadHashLine(&'static str),
    /// The base has no `directory-signature` line, so it has no signed part to
    /// compare with FromDigest (§3.4.1).
    #[error("base consensus has no directory-signature line, so no signed part to check FromDigest against")]
    BaseUnsigned,
    /// FromDigest is not the SHA3-256 of the base's signed part: the diff was
    /// made from another consensus (§4.5.1).
    #[error("diff line 2: FromDigest {} is not the base's signed-part digest {}", hex::encode(.expected), hex::encode(.actual))]
    FromDigestMismatch {
        /// FromDigest from the diff.
        expected: [u8; 32],
        /// SHA3-256 of the base's signed part.
        actual: [u8; 32],
    },
    /// ToDigest is not the SHA3-256 of the whole result (§4.5.1).
    #[error("diff line 2: ToDigest {} is not the digest {} of the edited consensus", hex::encode(.expected), hex::encode(.actual))]
    ToDigestMismatch {
        /// ToDigest from the diff.
        expected: [u8; 32],
        /// SHA3-256 of the result.
        actual: [u8; 32],
    },
    /// The line is not one of the six command forms of appendix E (other ed
    /// commands, stray text, a missing number, an unknown letter, trailing
    /// characters).
    #[error("diff line {line}: not one of the allowed ed commands (<n>d, <n>,<m>d, <n>,$d, <n>c, <n>,<m>c, <n>a)")]
    ForbiddenCommand {
        /// The offending line.
        line: usize,
    },
    /// A line number does not fit a `usize`.
    #[error("diff line {line}: line number too large")]
    NumberTooLarge {
        /// The offending line.
        line: usize,
    },
    /// `$` used with `c` or `a` (appendix E allows it only in `<n1>,$d`).
    #[error("diff line {line}: '$' is only allowed in <n>,$d")]
    DollarNotDelete {
        /// The offending line.
        line: usize,
    },
    /// `a` given a range (appendix E allows only `<n1>a`).
    #[error("diff line {line}: 'a' takes one line number, not a range")]
    AppendRange {
        /// The offending line.
        line: usize,
    },
    /// `d` or `c` naming line 0 (line numbers are 1-indexed).
    #[error("diff line {line}: line numbers of d and c start at 1")]
    ZeroLine {
        /// The offending line.
        line: usize,
    },
    /// A range `<n1>,<n2>` with `n1 > n2`.
    #[error("diff line {line}: range {start},{end} ends before it starts")]
    ReversedRange {
        /// The offending line.
        line: usize,
        /// n1.
        start: usize,
        /// n2.
        end: usize,
    },
    /// A line number beyond the base's last line.
    #[error("diff line {line}: line {number} is beyond the base's {lines} lines")]
    OutOfRange {
        /// The offending line.
        line: usize,
        /// The line number named.
        number: usize,
        /// Lines in the base.
        lines: usize,
    },
    /// A command that is not strictly before the lines touched by the previous
    /// one (commands run back to front, appendix E).
    #[error("diff line {line}: command is not strictly before the one at diff line {previous} (commands must run back to front)")]
    OutOfOrder {
        /// The offending line.
        line: usize,
        /// The line of the previous command.
        previous: usize,
    },
    /// A `c`/`a` block with no line holding just `.` after it.
    #[error("diff line {line}: block of the command is not ended by a '.' line")]
    UnterminatedBlock {
        /// The line of the command.
        line: usize,
    },
    /// A `c`/`a` block with no lines.
    #[error("diff line {line}: command has an empty block")]
    EmptyBlock {
        /// The line of the command.
        line: usize,
    },
}

/// Whether a directory response body is a consensus diff (starts with
/// `network-status-diff-version `, dir-spec §4.5.1) rather than a consensus.
pub fn is_diff(body: &str) -> bool {
    body.starts_with(VERSION_PREFIX)
}

/// Byte length of the signed part of a consensus (dir-spec §3.4.1): from the
/// start through the space after the first `directory-signature` keyword at
/// the start of a line. `None` without such a line.
fn signed_part_len(consensus: &str) -> Option<usize> {
    let bytes = consensus.as_bytes();
    let at = if consensus.starts_with(SIG_KEYWORD) {
        0
    } else {
        memchr::memmem::find(bytes, b"\ndirectory-signature ")? + 1
    };
    Some(at + SIG_KEYWORD.len())
}

/// Hex (lowercase, 64 chars) SHA3-256 of the signed part of a consensus text
/// (dir-spec §3.4.1: from the start through the space after the first
/// `directory-signature` keyword at the start of a line). This is the value a
/// client sends in `X-Or-Diff-From-Consensus` (§4.5.2) and a diff's FromDigest
/// (§4.5.1). `None` if the text has no `directory-signature` line.
pub fn signed_part_digest(consensus: &str) -> Option<String> {
    signed_digest_bytes(consensus).map(hex::encode)
}

fn signed_digest_bytes(consensus: &str) -> Option<[u8; 32]> {
    let len = signed_part_len(consensus)?;
    let part = consensus.as_bytes().get(..len)?;
    Some(Sha3_256::digest(part).into())
}

/// One parsed command of appendix E; line numbers are 1-based in the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Delete lines `start..=end`.
    Delete { start: usize, end: usize },
    /// Replace lines `start..=end` by the following block.
    Change { start: usize, end: usize },
    /// Insert the following block after line `after` (0: at the beginning).
    Append { after: usize },
}

/// Reads a run of ASCII digits as a number; `Ok(None)` if there is none.
fn number(s: &[u8], pos: &mut usize, line: usize) -> Result<Option<usize>, DiffError> {
    let start = *pos;
    let mut n: usize = 0;
    while let Some(d) = s.get(*pos).filter(|b| b.is_ascii_digit()) {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(DiffError::NumberTooLarge { line })?;
        *pos += 1;
    }
    Ok((*pos > start).then_some(n))
}

/// Parses one command line (appendix E) against a base of `lines` lines.
fn parse_command(text: &str, line: usize, lines: usize) -> Result<Command, DiffError> {
    let forbidden = DiffError::ForbiddenCommand { line };
    let s = text.as_bytes();
    let mut pos = 0;
    let start = number(s, &mut pos, line)?.ok_or(forbidden.clone())?;
    // (end, range given, end was `$`)
    let (end, range, dollar) = if s.get(pos) == Some(&b',') {
        pos += 1;
        if s.get(pos) == Some(&b'$') {
            pos += 1;
            (lines, true, true)
        } else {
            let end = number(s, &mut pos, line)?.ok_or(forbidden.clone())?;
            (end, true, false)
        }
    } else {
        (start, false, false)
    };
    let (&op, rest) = s
        .get(pos..)
        .and_then(|r| r.split_first())
        .ok_or(forbidden.clone())?;
    if !rest.is_empty() || !matches!(op, b'a' | b'c' | b'd') {
        return Err(forbidden);
    }
    if dollar && op != b'd' {
        return Err(DiffError::DollarNotDelete { line });
    }
    if range && op == b'a' {
        return Err(DiffError::AppendRange { line });
    }
    if op != b'a' && start == 0 {
        return Err(DiffError::ZeroLine { line });
    }
    for number in [start, end] {
        if number > lines {
            return Err(DiffError::OutOfRange {
                line,
                number,
                lines,
            });
        }
    }
    if start > end {
        return Err(DiffError::ReversedRange { line, start, end });
    }
    Ok(match op {
        b'a' => Command::Append { after: start },
        b'c' => Command::Change { start, end },
        _ => Command::Delete { start, end },
    })
}

/// Walks the base's line boundaries from the end towards the start, as the
/// back-to-front commands need, without an index of all lines.
struct BackCursor<'a> {
    text: &'a [u8],
    /// The cursor stands just after this many lines...
    lines: usize,
    /// ...at this byte offset.
    end: usize,
}

impl BackCursor<'_> {
    /// Moves back to just after line `to` (`to <= self.lines`), returning the
    /// byte offset there.
    fn seek(&mut self, to: usize) -> usize {
        while self.lines > to {
            // Invariant: with lines > 0, text[end - 1] is the '\n' ending line `lines`.
            let before = self.text.get(..self.end.saturating_sub(1)).unwrap_or(&[]);
            self.end = memchr::memrchr(b'\n', before).map_or(0, |p| p + 1);
            self.lines -= 1;
        }
        self.end
    }
}

/// The lines of the diff text, each with its 1-based number and byte span.
struct DiffLines<'a> {
    text: &'a str,
    pos: usize,
    number: usize,
}

impl<'a> DiffLines<'a> {
    /// Next line (without its `\n`), its number and its start offset.
    fn next_line(&mut self) -> Option<(usize, &'a str, usize)> {
        let rest = self.text.get(self.pos..).filter(|r| !r.is_empty())?;
        let start = self.pos;
        let len = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
        self.pos += len + 1;
        self.number += 1;
        Some((self.number, rest.get(..len)?, start))
    }
}

/// Parses the `hash FromDigest ToDigest` line (dir-spec §4.5.1).
fn parse_hash_line(line: Option<&str>) -> Result<([u8; 32], [u8; 32]), DiffError> {
    let line = line.ok_or(DiffError::BadHashLine("missing"))?;
    let mut words = line.split(' ');
    if words.next() != Some("hash") {
        return Err(DiffError::BadHashLine("does not start with \"hash \""));
    }
    let mut digest = || -> Result<[u8; 32], DiffError> {
        let w = words
            .next()
            .ok_or(DiffError::BadHashLine("needs two digests"))?;
        let mut out = [0u8; 32];
        if w.len() != 64 || hex::decode_to_slice(w, &mut out).is_err() {
            return Err(DiffError::BadHashLine(
                "digest is not 64 hexadecimal digits",
            ));
        }
        Ok(out)
    };
    let from = digest()?;
    let to = digest()?;
    if words.next().is_some() {
        return Err(DiffError::BadHashLine("extra text after the two digests"));
    }
    Ok((from, to))
}

/// Apply `diff` (dir-spec §4.5.1 + appendix E) to `base`, the full text of the
/// consensus it was made from: check the header, that FromDigest is the
/// SHA3-256 of base's signed part, apply the limited ed commands, and check
/// that ToDigest is the SHA3-256 of the entire result; return the new
/// consensus text. See the [module documentation](self) for the exact rules.
pub fn apply(base: &str, diff: &str) -> Result<String, DiffError> {
    if diff.len() > MAX_BYTES {
        return Err(DiffError::DiffTooLarge {
            len: diff.len(),
            max: MAX_BYTES,
        });
    }
    if base.len() > MAX_BYTES {
        return Err(DiffError::BaseTooLarge {
            len: base.len(),
            max: MAX_BYTES,
        });
    }
    if !is_diff(diff) {
        return Err(DiffError::NotADiff);
    }
    if !diff.ends_with('\n') {
        let line = memchr::memchr_iter(b'\n', diff.as_bytes()).count() + 1;
        return Err(DiffError::DiffUnterminated { line });
    }
    if !base.is_empty() && !base.ends_with('\n') {
        return Err(DiffError::BaseUnterminated);
    }
    let mut lines = DiffLines {
        text: diff,
        pos: 0,
        number: 0,
    };
    if lines.next_line().map(|l| l.1) != Some(VERSION_LINE) {
        return Err(DiffError::UnsupportedVersion);
    }
    let (from, to) = parse_hash_line(lines.next_line().map(|l| l.1))?;
    let actual_from = signed_digest_bytes(base).ok_or(DiffError::BaseUnsigned)?;
    if actual_from != from {
        return Err(DiffError::FromDigestMismatch {
            expected: from,
            actual: actual_from,
        });
    }

    let base_lines = memchr::memchr_iter(b'\n', base.as_bytes()).count();
    let mut cursor = BackCursor {
        text: base.as_bytes(),
        lines: base_lines,
        end: base.len(),
    };
    // Pieces of the result, last first: slices of base and of diff.
    let mut pieces: Vec<&str> = Vec::new();
    // Lines 1..=limit of the base are still untouched.
    let mut limit = base_lines;
    // Whether the previous command was `<limit>a`.
    let mut appended_at_limit = false;
    let mut previous = 0;
    while let Some((line, text, _)) = lines.next_line() {
        let cmd = parse_command(text, line, base_lines)?;
        let (keep_from, next_limit, has_block) = match cmd {
            Command::Delete { start, end } | Command::Change { start, end } => {
                if end > limit {
                    return Err(DiffError::OutOfOrder { line, previous });
                }
                (end, start - 1, matches!(cmd, Command::Change { .. }))
            }
            Command::Append { after } => {
                if after > limit || (after == limit && appended_at_limit) {
                    return Err(DiffError::OutOfOrder { line, previous });
                }
                (after, after, true)
            }
        };
        // Unchanged lines after the command.
        let hi = cursor.seek(limit);
        let lo = cursor.seek(keep_from);
        pieces.push(base.get(lo..hi).unwrap_or(""));
        // Lines removed by d/c are skipped by seeking past them.
        cursor.seek(next_limit);
        if has_block {
            let block_start = lines.pos;
            let block_end = loop {
                let Some((_, l, at)) = lines.next_line() else {
                    return Err(DiffError::UnterminatedBlock { line });
                };
                if l == "." {
                    break at;
                }
            };
            if block_end == block_start {
                return Err(DiffError::EmptyBlock { line });
            }
            pieces.push(diff.get(block_start..block_end).unwrap_or(""));
        }
        appended_at_limit = matches!(cmd, Command::Append { .. });
        limit = next_limit;
        previous = line;
    }
    let hi = cursor.seek(limit);
    pieces.push(base.get(..hi).unwrap_or(""));

    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut out = String::with_capacity(total);
    for p in pieces.iter().rev() {
        out.push_str(p);
    }
    let actual_to: [u8; 32] = Sha3_256::digest(out.as_bytes()).into();
    if actual_to != to {
        return Err(DiffError::ToDigestMismatch {
            expected: to,
            actual: actual_to,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six lines; the signed part ends inside line 6.
    const BASE: &str = "a\nb\nc\nd\ne\ndirectory-signature s\n";

    fn sha3_hex(s: &str) -> String {
        hex::encode(Sha3_256::digest(s.as_bytes()))
    }

    /// A diff from `base` with the given commands, whose ToDigest is that of `expected`.
    fn diff(base: &str, expected: &str, commands: &str) -> String {
        format!(
            "network-status-diff-version 1\nhash {} {}\n{commands}",
            signed_part_digest(base).unwrap(),
            sha3_hex(expected)
        )
    }

    /// Applies `commands` to BASE and checks the result is `expected`.
    fn check(commands: &str, expected: &str) {
        assert_eq!(
            apply(BASE, &diff(BASE, expected, commands)).as_deref(),
            Ok(expected),
            "commands {commands:?}"
        );
    }

    /// Applies `commands` to BASE (ToDigest of BASE itself) and returns the error.
    fn err(commands: &str) -> DiffError {
        apply(BASE, &diff(BASE, BASE, commands)).unwrap_err()
    }

    #[test]
    fn signed_part_digest_known_answer() {
        // Computed independently: python3 hashlib.sha3_256 of the signed part.
        assert_eq!(
            signed_part_digest("network-status-version 3\ndirectory-signature A B\nsig\n")
                .as_deref(),
            Some("8497ebe8ee826b4743ac246224201893e90d732c1ef752bb124921a003a94dbf")
        );
        assert_eq!(signed_part_digest("network-status-version 3\n"), None);
        // Not at the start of a line, or another keyword: not the signature.
        assert_eq!(signed_part_digest("x directory-signature A\n"), None);
        assert_eq!(signed_part_digest("x\ndirectory-signatures A\n"), None);
        assert_eq!(
            signed_part_digest("directory-signature A\n").as_deref(),
            Some(sha3_hex("directory-signature ").as_str())
        );
        // Only the first signature counts.
        let two = "n\ndirectory-signature A\nx\ndirectory-signature B\n";
        assert_eq!(
            signed_part_digest(two),
            Some(sha3_hex("n\ndirectory-signature "))
        );
    }

    #[test]
    fn is_diff_looks_at_the_first_line() {
        assert!(is_diff("network-status-diff-version 1\nhash a b\n"));
        assert!(is_diff("network-status-diff-version 2\n"));
        assert!(!is_diff("network-status-version 3\n"));
        assert!(!is_diff(" network-status-diff-version 1\n"));
        assert!(!is_diff(""));
    }

    #[test]
    fn delete() {
        check("2d\n", "a\nc\nd\ne\ndirectory-signature s\n");
        check("2,4d\n", "a\ne\ndirectory-signature s\n");
        check("2,2d\n", "a\nc\nd\ne\ndirectory-signature s\n");
        check("5,$d\n", "a\nb\nc\nd\n");
        check("6,$d\n", "a\nb\nc\nd\ne\n");
        check("1,$d\n", "");
        check("6d\n1d\n", "b\nc\nd\ne\n");
    }

    #[test]
    fn change() {
        check("3c\nX\n.\n", "a\nb\nX\nd\ne\ndirectory-signature s\n");
        check(
            "2,3c\nX\nY\nZ\n.\n",
            "a\nX\nY\nZ\nd\ne\ndirectory-signature s\n",
        );
        check("1,6c\nonly\n.\n", "only\n");
        // Block lines that look like commands, or like "." with more, are data.
        check(
            "1c\n2d\n..\n\n.\n",
            "2d\n..\n\nb\nc\nd\ne\ndirectory-signature s\n",
        );
    }

    #[test]
    fn append() {
        check("0a\nX\n.\n", "X\na\nb\nc\nd\ne\ndirectory-signature s\n");
        check(
            "3a\nX\nY\n.\n",
            "a\nb\nc\nX\nY\nd\ne\ndirectory-signature s\n",
        );
        check("6a\nZ\n.\n", "a\nb\nc\nd\ne\ndirectory-signature s\nZ\n");
        // An empty base has no signed part, so no diff applies to it.
        let to = "x\ndirectory-signature y\n";
        let d = format!(
            "network-status-diff-version 1\nhash {} {}\n0a\nx\ndirectory-signature y\n.\n",
            "0".repeat(64),
            sha3_hex(to)
        );
        assert_eq!(apply("", &d), Err(DiffError::BaseUnsigned));
    }

    #[test]
    fn several_commands_back_to_front() {
        // C tor's shape: signatures removed first, then edits back to front.
        check(
            "6,$d\n5a\ndirectory-signature t\n.\n4,5c\nD\n.\n2a\nQ\n.\n1d\n",
            "b\nQ\nc\nD\ndirectory-signature t\n",
        );
        // d then a just before the deleted lines; a then c of the line before it.
        check("5d\n4a\nX\n.\n", "a\nb\nc\nd\nX\ndirectory-signature s\n");
        check(
            "4a\nX\n.\n4c\nY\n.\n",
            "a\nb\nc\nY\nX\ne\ndirectory-signature s\n",
        );
        check(
            "4a\nX\n.\n4d\n3a\nY\n.\n",
            "a\nb\nc\nY\nX\ne\ndirectory-signature s\n",
        );
    }

    #[test]
    fn no_commands_keeps_the_base() {
        check("", BASE);
    }

    #[test]
    fn commands_out_of_order() {
        assert_eq!(
            err("2d\n3d\n"),
            DiffError::OutOfOrder {
                line: 4,
                previous: 3
            }
        );
        assert_eq!(
            err("2,4d\n4d\n"),
            DiffError::OutOfOrder {
                line: 4,
                previous: 3
            }
        );
        assert_eq!(
            err("2,4d\n3,5d\n"),
            DiffError::OutOfOrder {
                line: 4,
                previous: 3
            }
        );
        assert_eq!(
            err("3c\nX\n.\n3d\n"),
            DiffError::OutOfOrder {
                line: 6,
                previous: 3
            }
        );
        assert_eq!(
            err("2d\n2a\nX\n.\n"),
            DiffError::OutOfOrder {
                line: 4,
                previous: 3
            }
        );
        assert_eq!(
            err("4a\nX\n.\n4a\nY\n.\n"),
            DiffError::OutOfOrder {
                line: 6,
                previous: 3
            }
        );
        assert_eq!(
            err("2a\nX\n.\n3d\n"),
            DiffError::OutOfOrder {
                line: 6,
                previous: 3
            }
        );
        // `$` is the original last line, so it can only come first.
        assert_eq!(
            err("6d\n5,$d\n"),
            DiffError::OutOfOrder {
                line: 4,
                previous: 3
            }
        );
    }

    #[test]
    fn commands_out_of_range() {
        let oor = |line, number| DiffError::OutOfRange {
            line,
            number,
            lines: 6,
        };
        assert_eq!(err("7d\n"), oor(3, 7));
        assert_eq!(err("7a\nX\n.\n"), oor(3, 7));
        assert_eq!(err("2,9c\nX\n.\n"), oor(3, 9));
        assert_eq!(err("7,$d\n"), oor(3, 7));
        assert_eq!(
            err("2d\n1,2d\n"),
            DiffError::OutOfOrder {
                line: 4,
                previous: 3
            }
        );
        assert_eq!(
            err("4,2d\n"),
            DiffError::ReversedRange {
                line: 3,
                start: 4,
                end: 2
            }
        );
        assert_eq!(err("0d\n"), DiffError::ZeroLine { line: 3 });
        assert_eq!(err("0,2c\nX\n.\n"), DiffError::ZeroLine { line: 3 });
        assert_eq!(err("0c\nX\n.\n"), DiffError::ZeroLine { line: 3 });
        assert_eq!(
            err("99999999999999999999999999d\n"),
            DiffError::NumberTooLarge { line: 3 }
        );
        assert_eq!(
            err("1,99999999999999999999999999d\n"),
            DiffError::NumberTooLarge { line: 3 }
        );
        assert_eq!(err(&format!("{}d\n", usize::MAX)), oor(3, usize::MAX));
    }

    #[test]
    fn forbidden_commands() {
        for bad in [
            "s/x/y/", "1,2m3", "w", "q", "", "1", "1dd", " 1d", "1 d", "1d ", "+1d", "-1d", "1,d",
            ",1d", "$d", ".", "1,2", "1,$", "1,$$d", "1;2d", "1,2,3d", "1i", "1D", "1d\r", "$,1d",
            "1,2j", "e file", "r file", "1,2t5", "g/x/d", "u",
        ] {
            assert_eq!(
                err(&format!("{bad}\n")),
                DiffError::ForbiddenCommand { line: 3 },
                "{bad:?}"
            );
        }
        assert_eq!(err("1,$c\nX\n.\n"), DiffError::DollarNotDelete { line: 3 });
        assert_eq!(err("1,$a\nX\n.\n"), DiffError::DollarNotDelete { line: 3 });
        assert_eq!(err("1,2a\nX\n.\n"), DiffError::AppendRange { line: 3 });
        // A bad command after good ones is reported at its own line.
        assert_eq!(
            err("5d\n3c\nX\n.\nw\n"),
            DiffError::ForbiddenCommand { line: 7 }
        );
    }

    #[test]
    fn blocks() {
        assert_eq!(err("2c\nX\n"), DiffError::UnterminatedBlock { line: 3 });
        assert_eq!(err("2a\n"), DiffError::UnterminatedBlock { line: 3 });
        assert_eq!(
            err("5d\n2a\nX\n. \n"),
            DiffError::UnterminatedBlock { line: 4 }
        );
        assert_eq!(err("2c\n.\n"), DiffError::EmptyBlock { line: 3 });
        assert_eq!(err("6d\n2a\n.\n"), DiffError::EmptyBlock { line: 4 });
    }

    #[test]
    fn header_checks() {
        let d = diff(BASE, BASE, "");
        let from = signed_part_digest(BASE).unwrap();
        let to = sha3_hex(BASE);
        assert_eq!(apply(BASE, BASE), Err(DiffError::NotADiff));
        assert_eq!(apply(BASE, ""), Err(DiffError::NotADiff));
        assert_eq!(
            apply(BASE, "network-status-diff-version 2\nhash\n"),
            Err(DiffError::UnsupportedVersion)
        );
        assert_eq!(
            apply(BASE, "network-status-diff-version 1 \nhash\n"),
            Err(DiffError::UnsupportedVersion)
        );
        assert_eq!(
            apply(BASE, d.trim_end()),
            Err(DiffError::DiffUnterminated { line: 2 })
        );
        assert_eq!(apply(BASE.trim_end(), &d), Err(DiffError::BaseUnterminated));
        assert_eq!(
            apply("network-status-version 3\n", &d),
            Err(DiffError::BaseUnsigned)
        );
        let hash_line = |h: &str| apply(BASE, &format!("network-status-diff-version 1\n{h}\n"));
        assert!(matches!(
            apply(BASE, "network-status-diff-version 1\n"),
            Err(DiffError::BadHashLine(_))
        ));
        for bad in [
            format!("hash {from}"),
            format!("hash {from} {to} {to}"),
            format!("hash  {from} {to}"),
            format!("hash {from}  {to}"),
            format!("hash {from} {to} "),
            format!("Hash {from} {to}"),
            format!("hash {} {to}", &from[1..]),
            format!("hash {from}0 {to}"),
            format!("hash {} {to}", from.replace(|_| true, "g")),
            format!("hash\t{from} {to}"),
            String::new(),
        ] {
            assert!(
                matches!(hash_line(&bad), Err(DiffError::BadHashLine(_))),
                "{bad:?}"
            );
        }
        // Upper-case hex is hex.
        assert_eq!(
            hash_line(&format!(
                "hash {} {}",
                from.to_uppercase(),
                to.to_uppercase()
            ))
            .as_deref(),
            Ok(BASE)
        );
    }

    #[test]
    fn digest_mismatches() {
        let other = "z\ndirectory-signature s\n";
        let from_other: [u8; 32] = Sha3_256::digest("z\ndirectory-signature ").into();
        let from_base: [u8; 32] = Sha3_256::digest("a\nb\nc\nd\ne\ndirectory-signature ").into();
        // A diff made from another consensus.
        assert_eq!(
            apply(BASE, &diff(other, BASE, "")),
            Err(DiffError::FromDigestMismatch {
                expected: from_other,
                actual: from_base
            })
        );
        // FromDigest covers the signed part only: other signatures still match.
        let resigned = "a\nb\nc\nd\ne\ndirectory-signature t\n";
        assert_eq!(
            apply(resigned, &diff(BASE, resigned, "")).as_deref(),
            Ok(resigned)
        );
        // ToDigest must be the digest of the whole result.
        let wrong_to: [u8; 32] = Sha3_256::digest("a\n").into();
        let result: [u8; 32] = Sha3_256::digest("b\nc\nd\ne\ndirectory-signature s\n").into();
        let e = apply(BASE, &diff(BASE, "a\n", "1d\n")).unwrap_err();
        assert_eq!(
            e,
            DiffError::ToDigestMismatch {
                expected: wrong_to,
                actual: result
            }
        );
        assert!(e.to_string().contains(&hex::encode(result)), "{e}");
        // The result ends with its newline: a ToDigest without it does not match.
        let no_nl = "b\nc\nd\ne\ndirectory-signature s";
        assert!(matches!(
            apply(BASE, &diff(BASE, no_nl, "1d\n")),
            Err(DiffError::ToDigestMismatch { .. })
        ));
    }

    #[test]
    fn size_caps() {
        let big = "x".repeat(MAX_BYTES + 1);
        assert_eq!(
            apply(BASE, &big),
            Err(DiffError::DiffTooLarge {
                len: MAX_BYTES + 1,
                max: MAX_BYTES
            })
        );
        assert_eq!(
            apply(&big, &diff(BASE, BASE, "")),
            Err(DiffError::BaseTooLarge {
                len: MAX_BYTES + 1,
                max: MAX_BYTES
            })
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = err("1d\n1,2m3\n");
        assert!(e.to_string().starts_with("diff line 4:"), "{e}");
        let e = err("2,9c\nX\n.\n");
        assert_eq!(
            e.to_string(),
            "diff line 3: line 9 is beyond the base's 6 lines"
        );
    }
}
