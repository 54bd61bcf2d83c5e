//! Making consensus diffs (dir-spec §4.5.1, appendix E): the cache's side of
//! [`crate::consdiff`], which applies them.
//!
//! A diff from `base` to `target` is
//!
//! ```text
//! network-status-diff-version 1
//! hash <SHA3-256 of base's signed part> <SHA3-256 of all of target>
//! <n1>,$d                     (base's signatures, as §4.5.1's generators start)
//! <ed commands, last line first>
//! ```
//!
//! # How lines are matched
//!
//! A consensus is a header, router entries sorted by identity (each from an `r` line to
//! the next), a footer (from `directory-footer`) and signatures (dir-spec §3.4.1). Entries
//! of the two consensuses are paired by the identity of their `r` line in one merge walk
//! (an entry only in base is deleted, one only in target inserted), and the lines of the
//! header, the footer and each pair of entries are matched by a longest common
//! subsequence. This finds what changed between two consensuses in time linear in their
//! size (a general line diff of two consensuses of thousands of relays costs quadratic
//! time or memory). A section whose table would exceed [`MAX_TABLE_CELLS`] is replaced
//! whole: the diff is longer, still correct.
//!
//! # Checks
//!
//! Inputs are bounded by [`crate::consdiff::MAX_BYTES`] and must end with a newline;
//! base must have a `directory-signature` line (its signed part is FromDigest). A target
//! line that reads `.` cannot be written in an ed block and is refused. Every diff made is
//! applied with [`crate::consdiff::apply`] before it is returned, so a diff that would
//! not give back `target` exactly is an error, never an output.

use sha3::{Digest, Sha3_256};

use crate::consdiff::{self, MAX_BYTES};

/// Largest longest-common-subsequence table (cells) made for one section; a larger
/// section is replaced whole.
pub const MAX_TABLE_CELLS: usize = 1 << 16;

/// Why no diff was made (the cache then serves the full consensus).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenError {
    /// An input is larger than [`MAX_BYTES`].
    #[error("consensus of {len} bytes is more than the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An input is empty or its last line has no newline.
    #[error("consensus text is empty or its last line has no newline")]
    Unterminated,
    /// Base has no `directory-signature` line: it has no signed part (dir-spec §3.4.1).
    #[error("base consensus has no directory-signature line")]
    BaseUnsigned,
    /// Target has a line holding just `.`, which an ed block cannot carry (appendix E).
    #[error("target consensus line {line} is a lone '.'")]
    DotLine {
        /// 1-based line number in target.
        line: usize,
    },
    /// The diff made does not give back target (a bug; reported, not served).
    #[error("the diff made does not apply: {0}")]
    SelfCheck(consdiff::DiffError),
}

/// One edit: base lines `a.0..a.1` (0-based, end excluded) become target lines `b.0..b.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hunk {
    a: (usize, usize),
    b: (usize, usize),
}

/// The sections of a consensus, as line indices.
struct Sections {
    /// Header: `0..entries.0`.
    entries: (usize, usize),
    /// Footer: `entries.1..sigs`.
    sigs: usize,
}

fn sections(lines: &[&str]) -> Sections {
    let n = lines.len();
    let sigs = lines
        .iter()
        .position(|l| l.starts_with("directory-signature "))
        .unwrap_or(n);
    let first_r = lines[..sigs]
        .iter()
        .position(|l| l.starts_with("r "))
        .unwrap_or(sigs);
    let footer = lines[first_r..sigs]
        .iter()
        .position(|l| l.starts_with("directory-footer"))
        .map_or(sigs, |p| first_r + p);
    Sections {
        entries: (first_r, footer),
        sigs,
    }
}

/// The router entries between `range`: (start, end, identity field of the `r` line).
fn entries<'a>(lines: &[&'a str], range: (usize, usize)) -> Vec<(usize, usize, &'a str)> {
    let mut out: Vec<(usize, usize, &'a str)> = Vec::new();
    for (i, line) in lines.iter().enumerate().take(range.1).skip(range.0) {
        if line.starts_with("r ") {
            if let Some(last) = out.last_mut() {
                last.1 = i;
            }
            let id = line.split(' ').nth(2).unwrap_or("");
            out.push((i, range.1, id));
        }
    }
    out
}

/// Hunks turning `a[ar.0..ar.1]` into `b[br.0..br.1]`, by a longest common subsequence of
/// lines (or one replacement when the table would be too large).
fn diff_section(
    a: &[&str],
    ar: (usize, usize),
    b: &[&str],
    br: (usize, usize),
    out: &mut Vec<Hunk>,
) {
    // Common prefix and suffix first: most sections are unchanged or nearly.
    let (mut a0, mut a1, mut b0, mut b1) = (ar.0, ar.1, br.0, br.1);
    while a0 < a1 && b0 < b1 && a[a0] == b[b0] {
        a0 += 1;
        b0 += 1;
    }
    while a0 < a1 && b0 < b1 && a[a1 - 1] == b[b1 - 1] {
        a1 -= 1;
        b1 -= 1;
    }
    if a0 == a1 && b0 == b1 {
        return;
    }
    let (la, lb) = (a1 - a0, b1 - b0);
    let cells = (la + 1).saturating_mul(lb + 1);
    if la == 0 || lb == 0 || cells > MAX_TABLE_CELLS {
        out.push(Hunk {
            a: (a0, a1),
            b: (b0, b1),
        });
        return;
    }
    // t[i][j]: length of the LCS of a[a0+i..a1] and b[b0+j..b1].
    let w = lb + 1;
    let mut t = vec![0u32; cells];
    for i in (0..la).rev() {
        for j in (0..lb).rev() {
            t[i * w + j] = if a[a0 + i] == b[b0 + j] {
                t[(i + 1) * w + j + 1] + 1
            } else {
                t[(i + 1) * w + j].max(t[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut open: Option<Hunk> = None;
    let flush = |open: &mut Option<Hunk>, out: &mut Vec<Hunk>| {
        if let Some(h) = open.take() {
            out.push(h);
        }
    };
    while i < la || j < lb {
        if i < la && j < lb && a[a0 + i] == b[b0 + j] {
            flush(&mut open, out);
            i += 1;
            j += 1;
            continue;
        }
        let h = open.get_or_insert(Hunk {
            a: (a0 + i, a0 + i),
            b: (b0 + j, b0 + j),
        });
        if j >= lb || (i < la && t[(i + 1) * w + j] >= t[i * w + j + 1]) {
            i += 1;
            h.a.1 = a0 + i;
        } else {
            j += 1;
            h.b.1 = b0 + j;
        }
    }
    flush(&mut open, out);
}

fn split_lines(text: &str) -> Result<Vec<&str>, GenError> {
    if text.len() > MAX_BYTES {
        return Err(GenError::TooLarge {
            len: text.len(),
            max: MAX_BYTES,
        });
    }
    if !text.ends_with('\n') {
        return Err(GenError::Unterminated);
    }
    Ok(text.split_inclusive('\n').collect())
}

/// The diff from `base` to `target` (both full consensus texts of one flavour), as dir-spec
/// §4.5.1 and appendix E define it and [`crate::consdiff::apply`] applies it.
pub fn generate(base: &str, target: &str) -> Result<String, GenError> {
    let a = split_lines(base)?;
    let b = split_lines(target)?;
    if let Some(p) = b.iter().position(|l| *l == ".\n") {
        return Err(GenError::DotLine { line: p + 1 });
    }
    let from = consdiff::signed_part_digest(base).ok_or(GenError::BaseUnsigned)?;
    let to = hex::encode(Sha3_256::digest(target.as_bytes()));
    let sa = sections(&a);
    let sb = sections(&b);
    if sa.sigs == a.len() {
        return Err(GenError::BaseUnsigned);
    }

    let mut hunks = Vec::new();
    diff_section(&a, (0, sa.entries.0), &b, (0, sb.entries.0), &mut hunks);
    let ea = entries(&a, sa.entries);
    let eb = entries(&b, sb.entries);
    let (mut i, mut j) = (0, 0);
    let (mut pa, mut pb) = (sa.entries.0, sb.entries.0);
    while i < ea.len() || j < eb.len() {
        let ord = match (ea.get(i), eb.get(j)) {
            (Some(x), Some(y)) => x.2.cmp(y.2),
            (Some(_), None) => core::cmp::Ordering::Less,
            _ => core::cmp::Ordering::Greater,
        };
        match ord {
            core::cmp::Ordering::Equal => {
                diff_section(&a, (ea[i].0, ea[i].1), &b, (eb[j].0, eb[j].1), &mut hunks);
                pa = ea[i].1;
                pb = eb[j].1;
                i += 1;
                j += 1;
            }
            core::cmp::Ordering::Less => {
                hunks.push(Hunk {
                    a: (ea[i].0, ea[i].1),
                    b: (pb, pb),
                });
                pa = ea[i].1;
                i += 1;
            }
            core::cmp::Ordering::Greater => {
                hunks.push(Hunk {
                    a: (pa, pa),
                    b: (eb[j].0, eb[j].1),
                });
                pb = eb[j].1;
                j += 1;
            }
        }
    }
    diff_section(&a, sa.entries_end(), &b, sb.entries_end(), &mut hunks);
    // The signatures: base's are deleted by the first command (`<n1>,$d`), target's are
    // inserted where they began.
    hunks.push(Hunk {
        a: (sa.sigs, sa.sigs),
        b: (sb.sigs, b.len()),
    });

    // Adjacent hunks become one: two commands may not touch the same place (appendix E's
    // ordering, checked by the applier).
    let mut merged: Vec<Hunk> = Vec::with_capacity(hunks.len());
    for h in hunks {
        if h.a.0 == h.a.1 && h.b.0 == h.b.1 {
            continue;
        }
        match merged.last_mut() {
            Some(last) if last.a.1 == h.a.0 => {
                last.a.1 = h.a.1;
                last.b.1 = h.b.1;
            }
            _ => merged.push(h),
        }
    }

    let mut out = String::with_capacity(256 + target.len() / 8);
    out.push_str("network-status-diff-version 1\n");
    out.push_str(&format!(
        "hash {} {}\n",
        from.to_uppercase(),
        to.to_uppercase()
    ));
    out.push_str(&format!("{},$d\n", sa.sigs + 1));
    for h in merged.iter().rev() {
        let (s, e) = (h.a.0 + 1, h.a.1);
        let range = if e > s {
            format!("{s},{e}")
        } else {
            format!("{s}")
        };
        if h.a.0 == h.a.1 {
            out.push_str(&format!("{}a\n", h.a.0));
        } else if h.b.0 == h.b.1 {
            out.push_str(&format!("{range}d\n"));
            continue;
        } else {
            out.push_str(&format!("{range}c\n"));
        }
        for l in &b[h.b.0..h.b.1] {
            out.push_str(l);
        }
        out.push_str(".\n");
    }
    match consdiff::apply(base, &out) {
        Ok(t) if t == target => Ok(out),
        Ok(_) => Err(GenError::SelfCheck(consdiff::DiffError::ToDigestMismatch {
            expected: Sha3_256::digest(target.as_bytes()).into(),
            actual: [0; 32],
        })),
        Err(e) => Err(GenError::SelfCheck(e)),
    }
}

impl Sections {
    fn entries_end(&self) -> (usize, usize) {
        (self.entries.1, self.sigs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consensus(header: &str, relays: &[(&str, &str)], sig: &str) -> String {
        let mut s = format!("network-status-version 3\n{header}");
        for (id, rest) in relays {
            s.push_str(&format!(
                "r nick {id} digest 2026-12-06 12:00:00 127.0.0.1 9001 0\n"
            ));
            s.push_str(rest);
        }
        s.push_str("directory-footer\nbandwidth-weights Wbd=0\n");
        s.push_str(&format!(
            "directory-signature sha256 AAAA BBBB\n-----BEGIN SIGNATURE-----\n{sig}\n-----END SIGNATURE-----\n"
        ));
        s
    }

    #[test]
    fn round_trip_generate_then_apply() {
        let base = consensus(
            "valid-after 2026-12-06 12:00:00\nparams a=1\n",
            &[
                ("AAA", "s Fast Running\nw Bandwidth=10\n"),
                ("BBB", "s Running\nw Bandwidth=20\n"),
                ("CCC", "s Exit Running\nw Bandwidth=30\n"),
            ],
            "c2lnMQ==",
        );
        let target = consensus(
            "valid-after 2026-12-06 13:00:00\nparams a=1 b=2\n",
            &[
                ("AAA", "s Fast Running\nw Bandwidth=11\n"),
                ("BBA", "s Guard Running\nw Bandwidth=5\n"),
                ("CCC", "s Exit Running\nw Bandwidth=30\n"),
                ("DDD", "s Running\nw Bandwidth=40\n"),
            ],
            "c2lnMg==",
        );
        let d = generate(&base, &target).unwrap();
        assert!(consdiff::is_diff(&d));
        assert_eq!(consdiff::apply(&base, &d).unwrap(), target);
        // The signatures go first, as dir-spec §4.5.1's generators do.
        assert_eq!(d.lines().nth(2), Some("15,$d"));
        // Unchanged entry CCC is not in the diff.
        assert!(!d.contains("Bandwidth=30"));
        // FromDigest is what a client sends in X-Or-Diff-From-Consensus.
        let from = consdiff::signed_part_digest(&base).unwrap().to_uppercase();
        assert!(d.lines().nth(1).unwrap().contains(&from));
        // Same document: a diff with only the signature commands.
        let same = generate(&target, &target).unwrap();
        assert_eq!(consdiff::apply(&target, &same).unwrap(), target);
        // Everything removed or everything new.
        let empty = consensus("", &[], "eA==");
        for (x, y) in [(&base, &empty), (&empty, &target)] {
            assert_eq!(consdiff::apply(x, &generate(x, y).unwrap()).unwrap(), *y);
        }
    }

    #[test]
    fn large_sections_and_refusals() {
        // A header longer than the table bound is replaced whole, still exactly.
        let long_a: String = (0..400).map(|i| format!("x {i}\n")).collect();
        let long_b: String = (0..400).map(|i| format!("x {}\n", i * 3 % 401)).collect();
        let base = consensus(&long_a, &[("AAA", "s Running\n")], "YQ==");
        let target = consensus(&long_b, &[("AAA", "s Running\n")], "Yg==");
        let d = generate(&base, &target).unwrap();
        assert_eq!(consdiff::apply(&base, &d).unwrap(), target);
        assert_eq!(generate("x\n", &target), Err(GenError::BaseUnsigned));
        assert_eq!(generate(&base, "no newline"), Err(GenError::Unterminated));
        let dotted = consensus(".\n", &[], "Yg==");
        assert_eq!(generate(&base, &dotted), Err(GenError::DotLine { line: 2 }));
        let huge = "a".repeat(MAX_BYTES + 1);
        assert!(matches!(
            generate(&huge, &target),
            Err(GenError::TooLarge { .. })
        ));
    }
}
