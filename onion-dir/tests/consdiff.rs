//! Consensus diffs (dir-spec §4.5, appendix E) on real documents and random
//! ones: a hand-written diff in C tor's form between two tornet consensuses, a
//! 5% diff of the public consensus, and properties (random edits round-trip;
//! no input panics).

use std::io::Read;

use onion_dir::consdiff::{self, DiffError};
use onion_dir::consensus;
use proptest::prelude::*;
use sha3::{Digest, Sha3_256};

fn tornet(name: &str) -> String {
    let p = format!("{}/testdata/tornet/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn read_gz(name: &str) -> String {
    let p = format!("{}/testdata/real/{name}.gz", env!("CARGO_MANIFEST_DIR"));
    let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut s = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn sha3_hex(s: &str) -> String {
    hex::encode(Sha3_256::digest(s.as_bytes()))
}

/// SHA3-256 of the tornet consensus's signed part, computed independently
/// (python3 hashlib.sha3_256 of the bytes through "directory-signature ").
const TORNET_FROM: &str = "d39d02f0a3808e26303850c5f101a65dd7d064b1df9c1b0c5c2bd0f95a6dd642";
/// SHA3-256 of the hand-edited consensus, computed independently (python3).
const TORNET_TO: &str = "a894fe6747c49a5f0899e2e035336c30a2929210bca47850d46de6c6f6236777";

/// A diff written by hand in C tor's form, from testdata/tornet/cached-consensus
/// (101 lines: relays at 25..=72, footer at 73..=74, signatures at 75..=101) to
/// the next consensus: the signatures go first ("75,$d") and come back as two
/// new ones ("74a"), a relay is added after the last one, relay2's flags and
/// bandwidth change, relay1 leaves, exit0 has a new descriptor, and the times
/// move on; commands run back to front.
const TORNET_DIFF: &str = r#"network-status-diff-version 1
hash d39d02f0a3808e26303850c5f101a65dd7d064b1df9c1b0c5c2bd0f95a6dd642 a894fe6747c49a5f0899e2e035336c30a2929210bca47850d46de6c6f6236777
75,$d
74a
directory-signature 329F4451BAA808E78DF40D2F286080779AD22095 946D305676732F1606974925DE85459800ABCEF5
-----BEGIN SIGNATURE-----
pU3KGCUwux1tEyze1iN7LtkeP3IfyxlxF0SU1kk8nVw0YL4xIB5p/tqg7ui5mX9c
fCmZ/a/lkyU81lSvTfrXFCegrrP+6SMvivIhH57kkcWxC+y1Vjv8Hm+TQn7LyP4p
VeXNjkbcjtS3wnZNKlpNdncG+F2GkAJK1r2jQBvpyMvMyTX2zR9hImrhUziuGjQA
TTO6DSRqwEyBsbryPjv57vX3nytJNK+H9VILablLDZguhbtVtnKocmN6zXRm/LYO
Do/xhGOw5LK6KXA0dPBkrGj3APWwKz3GZvRb3qosyu3NK1FXQQ5N7krys09DCgc0
R95jbA6AbJV7poTWQx+16g==
-----END SIGNATURE-----
directory-signature 782671BC1D5C5E8D3AC5E9E615327F5DA5D2C6EE 1AC6669CAE367B32A217613F3A5EDBED49AF5B0A
-----BEGIN SIGNATURE-----
10JNCeFdAkxYSPI9H6b3Nh1/YY0VMucOIOKmZo3n9H6EZ+VG1T7I4qEle9slbJs+
T7tJgUbvcDDL+VNyUtzOrddktqMvuwmt6uEJxKmXIDl1NSuHixRcikLYhM9M/act
jh1d2SWJCC2FKnEihz7oBa3ViUIWejhShhlcZ5+caZTkW4qxCYASBwlh833kNt39
yZ1uda9lR8+xG0IHJILcUxwrw5B8lhfrXlCJ5AGGuqilfRGeb7ZdAKvDKvOOZn8C
LoctScwVyQuZm3crT8em/UyRShbbRwh1Kw8VRLg1wOcZCX36hwHpIy8h8oEmh3hp
duv8wyf1kxdlJ0upgptEBg==
-----END SIGNATURE-----
.
72a
r relay3 /7u5t1ZQm2kq3cW9bV0xY8aN4rE kJ2vQ0Xb3m8r1yT5wZ7cL9dF4gA 2026-11-23 07:20:35 127.0.0.1 41234 0
s Fast HSDir Running Stable V2Dir Valid
v Tor 0.4.9.11
pr Conflux=1 Cons=1-2 Desc=1-4 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=3-5 LinkAuth=3 Microdesc=1-3 Padding=2 Relay=2-6
w Bandwidth=12 Unmeasured=1
p reject 1-65535
.
53c
w Bandwidth=120 Unmeasured=1
.
50c
s Fast HSDir Running Stable V2Dir Valid
.
37,42d
25c
r exit0 OVXLLx5Ix2+TuzxxAT/0oXmka1k Ydp2Ew4vbMkHwmbFbLhzyD0ifqA 2026-11-23 07:20:41 127.0.0.1 53337 0
.
4,6c
valid-after 2026-11-23 07:20:20
fresh-until 2026-11-23 07:20:40
valid-until 2026-11-23 07:21:00
.
"#;

/// The new relay added by the diff.
const RELAY3: [&str; 6] = [
    "r relay3 /7u5t1ZQm2kq3cW9bV0xY8aN4rE kJ2vQ0Xb3m8r1yT5wZ7cL9dF4gA 2026-11-23 07:20:35 127.0.0.1 41234 0",
    "s Fast HSDir Running Stable V2Dir Valid",
    "v Tor 0.4.9.11",
    "pr Conflux=1 Cons=1-2 Desc=1-4 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=3-5 LinkAuth=3 Microdesc=1-3 Padding=2 Relay=2-6",
    "w Bandwidth=12 Unmeasured=1",
    "p reject 1-65535",
];

/// The edited consensus, built line by line from the base (not from the diff
/// text, except for the new signature block).
fn tornet_edited(base: &str) -> String {
    let sigs_at = TORNET_DIFF.find("74a\n").unwrap() + 4;
    let sigs_len = TORNET_DIFF[sigs_at..].find("\n.\n").unwrap() + 1;
    let new_sigs = &TORNET_DIFF[sigs_at..sigs_at + sigs_len];
    assert_eq!(new_sigs.matches("directory-signature ").count(), 2);
    let mut out = String::new();
    for (i, line) in base.lines().enumerate() {
        let n = i + 1;
        let line = match n {
            4 => "valid-after 2026-11-23 07:20:20",
            5 => "fresh-until 2026-11-23 07:20:40",
            6 => "valid-until 2026-11-23 07:21:00",
            25 => "r exit0 OVXLLx5Ix2+TuzxxAT/0oXmka1k Ydp2Ew4vbMkHwmbFbLhzyD0ifqA 2026-11-23 07:20:41 127.0.0.1 53337 0",
            37..=42 | 75.. => continue,
            50 => "s Fast HSDir Running Stable V2Dir Valid",
            53 => "w Bandwidth=120 Unmeasured=1",
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
        if n == 72 {
            for l in RELAY3 {
                out.push_str(l);
                out.push('\n');
            }
        }
        if n == 74 {
            out.push_str(new_sigs);
        }
    }
    out
}

#[test]
fn tornet_hand_written_diff_known_answer() {
    let base = tornet("cached-consensus");
    assert_eq!(base.lines().count(), 101);
    assert!(consdiff::is_diff(TORNET_DIFF));
    assert!(!consdiff::is_diff(&base));
    assert_eq!(
        consdiff::signed_part_digest(&base).as_deref(),
        Some(TORNET_FROM)
    );
    // The same signed part the consensus parser finds (dir-spec §3.4.1).
    for text in [&base, &read_gz("real-ns-consensus-2022-11-19.txt")] {
        let c = consensus::parse(text).unwrap().assume_verified();
        assert_eq!(
            consdiff::signed_part_digest(text),
            Some(sha3_hex(&text[..c.signed_len]))
        );
    }
    let expected = tornet_edited(&base);
    assert_eq!(sha3_hex(&expected), TORNET_TO);

    let new = consdiff::apply(&base, TORNET_DIFF).unwrap();
    assert_eq!(new, expected);
    assert!(new.ends_with("-----END SIGNATURE-----\n"));

    // The result is a consensus again: 8 relays, relay1 gone, relay3 new.
    let c = consensus::parse(&new).unwrap().assume_verified();
    assert_eq!(c.relays.len(), 8);
    assert_eq!(c.valid_after.to_string(), "2026-11-23 07:20:20");
    assert!(!new.contains("\nr relay1 "));
    assert!(new.contains("\nr relay3 "));
    assert_eq!(c.signatures.len(), 2);
    // The client's next request names the new consensus by its signed part.
    assert_ne!(
        consdiff::signed_part_digest(&new).as_deref(),
        Some(TORNET_FROM)
    );
}

#[test]
fn tornet_diff_refuses_other_bases() {
    let base = tornet("cached-consensus");
    // Another consensus (the microdesc flavour of the same period).
    let md = tornet("cached-microdesc-consensus");
    assert!(matches!(
        consdiff::apply(&md, TORNET_DIFF),
        Err(DiffError::FromDigestMismatch { .. })
    ));
    // Same signed part, other signatures: FromDigest still matches (it covers
    // only the signed part) and the result is the same, since "75,$d" drops them.
    let sig_at = base.find("\ndirectory-signature ").unwrap() + 1;
    let resigned = format!(
        "{}directory-signature 0000000000000000000000000000000000000000 1111111111111111111111111111111111111111\n-----BEGIN SIGNATURE-----\nAAAA\n-----END SIGNATURE-----\n",
        &base[..sig_at]
    );
    assert_eq!(resigned.lines().count(), 78);
    assert_eq!(
        consdiff::apply(&resigned, TORNET_DIFF),
        Ok(tornet_edited(&base))
    );
    // A relay line of the base changed: the signed part differs.
    let edited = base.replacen("w Bandwidth=81 ", "w Bandwidth=82 ", 1);
    assert!(matches!(
        consdiff::apply(&edited, TORNET_DIFF),
        Err(DiffError::FromDigestMismatch { .. })
    ));
    // A changed ToDigest.
    let bad_to = TORNET_DIFF.replacen(TORNET_TO, &TORNET_TO.replace('a', "b"), 1);
    assert!(matches!(
        consdiff::apply(&base, &bad_to),
        Err(DiffError::ToDigestMismatch { .. })
    ));
    // A dropped "." line leaves the last block open.
    let open = TORNET_DIFF.strip_suffix(".\n").unwrap();
    assert_eq!(
        consdiff::apply(&base, open),
        Err(DiffError::UnterminatedBlock {
            line: open.lines().count() - 3
        })
    );
}

/// One edit of a test base, in original line numbers (1-based).
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Change(usize, usize, Vec<String>),
    Append(usize, Vec<String>),
}

/// Test-only diff writer: `edits` ascending and non-overlapping; returns the
/// diff's command chunks (each command with its block), back to front as
/// appendix E requires, and the edited text. `dollar` writes deletions that
/// reach the last line as `<n1>,$d`.
fn write_commands(base_lines: &[&str], edits: &[Edit], dollar: bool) -> (Vec<String>, String) {
    let n = base_lines.len();
    let range = |s: usize, e: usize| {
        if s == e {
            format!("{s}")
        } else {
            format!("{s},{e}")
        }
    };
    let block =
        |lines: &[String]| lines.iter().map(|l| format!("{l}\n")).collect::<String>() + ".\n";
    let chunks = edits
        .iter()
        .rev()
        .map(|e| match e {
            Edit::Delete(s, e) if dollar && *e == n && s < e => format!("{s},$d\n"),
            Edit::Delete(s, e) => format!("{}d\n", range(*s, *e)),
            Edit::Change(s, e, b) => format!("{}c\n{}", range(*s, *e), block(b)),
            Edit::Append(a, b) => format!("{a}a\n{}", block(b)),
        })
        .collect();
    // The edited text, built forward.
    let mut out: Vec<&str> = Vec::new();
    let mut next = 1; // next base line to copy
    for e in edits {
        let (keep_to, skip_to, add): (usize, usize, &[String]) = match e {
            Edit::Delete(s, e) => (*s - 1, *e, &[]),
            Edit::Change(s, e, b) => (*s - 1, *e, b),
            Edit::Append(a, b) => (*a, *a, b),
        };
        out.extend(&base_lines[next - 1..keep_to]);
        out.extend(add.iter().map(String::as_str));
        next = skip_to + 1;
    }
    out.extend(&base_lines[next - 1..]);
    let text = out.iter().map(|l| format!("{l}\n")).collect();
    (chunks, text)
}

/// A whole diff from `base` to `expected` with the given command chunks.
fn diff_text(base: &str, expected: &str, chunks: &[String]) -> String {
    format!(
        "network-status-diff-version 1\nhash {} {}\n{}",
        consdiff::signed_part_digest(base).unwrap(),
        sha3_hex(expected),
        chunks.concat()
    )
}

/// Turns random choices into ascending, non-overlapping edits of `n` lines.
fn plan(n: usize, choices: &[(u8, u8, Vec<String>)]) -> Vec<Edit> {
    let mut edits = Vec::new();
    let mut pos = 0; // lines before this are decided
    let mut last_append = None;
    for (kind, len, block) in choices {
        let end = (pos + 1 + usize::from(*len % 4)).min(n);
        match kind % 4 {
            0 => pos = end,
            1 if pos < n => {
                edits.push(Edit::Delete(pos + 1, end));
                pos = end;
            }
            2 if pos < n => {
                edits.push(Edit::Change(pos + 1, end, block.clone()));
                pos = end;
            }
            3 if last_append != Some(pos) => {
                edits.push(Edit::Append(pos, block.clone()));
                last_append = Some(pos);
            }
            _ => {}
        }
    }
    edits
}

fn lines_strategy() -> impl Strategy<Value = Vec<String>> {
    // Base lines may be anything without a newline, "." included.
    prop::collection::vec("[a-z0-9 .,$]{0,6}", 0..40)
}

fn choices_strategy() -> impl Strategy<Value = Vec<(u8, u8, Vec<String>)>> {
    // Block lines: anything but "." (which would end the block).
    let block = prop::collection::vec("[a-z0-9 ,$]{0,6}|\\.\\.|[0-9]+d", 1..4);
    prop::collection::vec((any::<u8>(), any::<u8>(), block), 0..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random base + random non-overlapping edits: the written diff applies to
    /// exactly the edited text, whose digest the diff names.
    #[test]
    fn random_edits_round_trip(
        mut lines in lines_strategy(),
        sig_at in any::<prop::sample::Index>(),
        choices in choices_strategy(),
        dollar in any::<bool>(),
    ) {
        // The base needs a signed part for FromDigest.
        lines.insert(sig_at.index(lines.len() + 1), "directory-signature x".into());
        let base: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let base_lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let edits = plan(base_lines.len(), &choices);
        let (chunks, expected) = write_commands(&base_lines, &edits, dollar);
        let diff = diff_text(&base, &expected, &chunks);
        prop_assert_eq!(consdiff::apply(&base, &diff), Ok(expected.clone()));
        // Swapping the first two commands breaks the back-to-front order.
        if chunks.len() >= 2 {
            let mut swapped = chunks.clone();
            swapped.swap(0, 1);
            let r = consdiff::apply(&base, &diff_text(&base, &expected, &swapped));
            prop_assert!(matches!(r, Err(DiffError::OutOfOrder { .. })), "{:?}", r);
        }
        // Any other ToDigest is refused.
        let other = format!("{expected}x\n");
        let r = consdiff::apply(&base, &diff_text(&base, &other, &chunks));
        prop_assert!(matches!(r, Err(DiffError::ToDigestMismatch { .. })), "{:?}", r);
    }

    /// Arbitrary bytes as base and diff never panic.
    #[test]
    fn arbitrary_bytes_never_panic(base in prop::collection::vec(any::<u8>(), 0..400),
                                   diff in prop::collection::vec(any::<u8>(), 0..400)) {
        let base = String::from_utf8_lossy(&base);
        let diff = String::from_utf8_lossy(&diff);
        if let Ok(out) = consdiff::apply(&base, &diff) {
            prop_assert!(out.len() <= base.len() + diff.len());
        }
        let _ = consdiff::signed_part_digest(&base);
    }

    /// A valid header followed by command-like noise never panics, and any
    /// result is bounded by the inputs and matches the diff's ToDigest.
    #[test]
    fn command_noise_never_panics(
        lines in lines_strategy(),
        body in "([0-9,$acdmsw.]{0,5}\n){0,20}",
        to_base in any::<bool>(),
    ) {
        let mut base: String = lines.iter().map(|l| format!("{l}\n")).collect();
        base.push_str("directory-signature z\n");
        // ToDigest of the base: a body that changes nothing is accepted.
        let to = if to_base { sha3_hex(&base) } else { "ab".repeat(32) };
        let diff = format!(
            "network-status-diff-version 1\nhash {} {to}\n{body}",
            consdiff::signed_part_digest(&base).unwrap()
        );
        if let Ok(out) = consdiff::apply(&base, &diff) {
            prop_assert!(out.len() <= base.len() + diff.len());
            prop_assert_eq!(sha3_hex(&out), to);
        }
    }
}

/// The public consensus (6,088 relays): a diff changing every 20th line (5%),
/// removing and re-adding the signatures as C tor does, applies exactly.
#[test]
fn real_consensus_five_percent() {
    let base = read_gz("real-ns-consensus-2022-11-19.txt");
    let lines: Vec<&str> = base.lines().collect();
    let sig = lines
        .iter()
        .position(|l| l.starts_with("directory-signature "))
        .unwrap();
    let mut edits: Vec<Edit> = (20..sig)
        .step_by(20)
        .map(|n| Edit::Change(n, n, vec![format!("{} changed", lines[n - 1])]))
        .collect();
    let new_sigs: Vec<String> = lines[sig..].iter().rev().map(|l| l.to_string()).collect();
    edits.push(Edit::Append(sig, new_sigs));
    edits.push(Edit::Delete(sig + 1, lines.len()));
    let (chunks, expected) = write_commands(&lines, &edits, true);
    assert!(chunks[0].ends_with(",$d\n") && chunks[1].starts_with(&format!("{sig}a\n")));
    // One line in 20 of the document changed: 1,964 commands.
    assert_eq!(chunks.len(), (sig - 1) / 20 + 2);
    assert_eq!(chunks.len(), 1964);
    let diff = diff_text(&base, &expected, &chunks);
    assert_eq!(
        consdiff::apply(&base, &diff).as_deref(),
        Ok(expected.as_str())
    );
    assert_eq!(expected.lines().count(), lines.len());
}
