//! Fuzz consensus-diff application (dir-spec §4.5, appendix E) against a naive
//! model of the limited ed format.
//!
//! Input: `base NUL rest`. If `rest` is a whole diff it is applied as is (no
//! panic, bounded output). Otherwise `rest` is taken as the ed commands: the
//! target writes the header with the base's real FromDigest, learns the
//! result's digest from the ToDigest error, applies again with it, and checks
//! that the diff is accepted exactly when the model accepts it, with the same
//! text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_dir::consdiff::{self, DiffError};

/// A line number: ASCII digits only, fitting a usize.
fn num(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The edited text, or None if the commands are not a valid appendix-E script.
/// Positions: line k is 2k-1, the gap after line k is 2k; every command must
/// lie entirely below the lowest position the previous one touched.
fn model(base: &str, cmds: &str) -> Option<String> {
    if !base.is_empty() && !base.ends_with('\n') {
        return None;
    }
    if !cmds.is_empty() && !cmds.ends_with('\n') {
        return None;
    }
    let mut doc: Vec<&str> = base.split_terminator('\n').collect();
    let n = doc.len();
    let mut bound = 2 * n + 1;
    let mut it = cmds.split_terminator('\n');
    while let Some(c) = it.next() {
        let op = c.chars().last()?;
        let range = &c[..c.len() - op.len_utf8()];
        let (s, e, dollar, ranged) = match range.split_once(',') {
            None => {
                let s = num(range)?;
                (s, s, false, false)
            }
            Some((a, "$")) => (num(a)?, n, true, true),
            Some((a, b)) => (num(a)?, num(b)?, false, true),
        };
        let (lo, hi) = match op {
            'd' | 'c' if s >= 1 && s <= e && e <= n && (op == 'd' || !dollar) => {
                (2 * s - 1, 2 * e - 1)
            }
            'a' if !ranged && s <= n => (2 * s, 2 * s),
            _ => return None,
        };
        if hi >= bound {
            return None;
        }
        bound = lo;
        let mut block = Vec::new();
        if op != 'd' {
            loop {
                match it.next()? {
                    "." => break,
                    l => block.push(l),
                }
            }
            if block.is_empty() {
                return None;
            }
        }
        match op {
            'a' => drop(doc.splice(s..s, block)),
            _ => drop(doc.splice(s - 1..e, block)),
        }
    }
    Some(doc.iter().map(|l| format!("{l}\n")).collect())
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (base, rest) = s.split_once('\0').unwrap_or(("", s));
    if consdiff::is_diff(rest) {
        if let Ok(out) = consdiff::apply(base, rest) {
            assert!(out.len() <= base.len() + rest.len());
        }
        return;
    }
    let mut base = base.to_string();
    if consdiff::signed_part_digest(&base).is_none() {
        if !base.is_empty() && !base.ends_with('\n') {
            base.push('\n');
        }
        base.push_str("directory-signature x\n");
    }
    let from = consdiff::signed_part_digest(&base).unwrap();
    let diff = |to: &str| format!("network-status-diff-version 1\nhash {from} {to}\n{rest}");
    let expected = model(&base, rest);
    match consdiff::apply(&base, &diff(&"0".repeat(64))) {
        Err(DiffError::ToDigestMismatch { actual, .. }) => {
            let out = consdiff::apply(&base, &diff(&hex_lower(&actual)));
            assert_eq!(out.as_ref().ok(), expected.as_ref(), "{out:?}");
        }
        Ok(out) => assert_eq!(Some(&out), expected.as_ref()),
        Err(e) => assert!(expected.is_none(), "model accepts, apply says {e}"),
    }
});

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
