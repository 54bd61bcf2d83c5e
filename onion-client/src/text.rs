//! Text that came from the network (an HTTP reason phrase, a header line, a peer's error
//! text), made safe to print: a peer must not be able to move the cursor, rewrite earlier
//! lines, retitle the window or inject a fake log line on the user's terminal, nor flood it.
//!
//! [`escape`] is the one function every printing site of such text goes through: this
//! crate's errors that quote a peer, and any front end that prints such text.

/// At most this many characters of a peer's text are shown; the rest is summarised.
pub const MAX_SHOWN: usize = 200;

/// `s` with every control character (C0 such as ESC and newline, DEL, C1 such as CSI),
/// every Unicode format or separator character (bidirectional overrides, zero-width
/// characters, line separators) and the backslash written as a Rust escape (`\x1b` is
/// shown as `\u{1b}`, a newline as `\n`), so the result is one line of printable text that
/// names exactly what was received. Quotes are kept as they are. At most [`MAX_SHOWN`]
/// characters are shown; a longer text ends with `... (N more bytes)`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_SHOWN * 2));
    for (n, (i, c)) in s.char_indices().enumerate() {
        if n == MAX_SHOWN {
            out.push_str(&format!("... ({} more bytes)", s.len() - i));
            break;
        }
        match c {
            '"' | '\'' => out.push(c),
            // `char::escape_debug` keeps printable characters and escapes the rest
            // (`is_printable` excludes the Cc, Cf, Zl and Zp categories); the DEL and the
            // C1 controls are Cc.
            _ => out.extend(c.escape_debug()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printable(s: &str) -> bool {
        s.chars().all(|c| (' '..='~').contains(&c))
    }

    #[test]
    fn controls_and_format_characters_are_escaped() {
        assert_eq!(escape("Not Found"), "Not Found");
        assert_eq!(escape("it's \"ok\""), "it's \"ok\"");
        assert_eq!(
            escape("OK\x1b[2J\x1b]0;owned\x07\r\nonion: fake"),
            "OK\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\r\\nonion: fake"
        );
        assert_eq!(escape("a\\b\t\x7f\u{9b}"), "a\\\\b\\t\\u{7f}\\u{9b}");
        assert_eq!(
            escape("x\u{202e}y\u{200b}\u{2028}"),
            "x\\u{202e}y\\u{200b}\\u{2028}"
        );
        assert_eq!(escape("é日"), "é日");
        assert!(printable(&escape("\x00\x01\x1b\u{85}\u{feff}")));
    }

    #[test]
    fn long_text_is_cut() {
        let long = "a".repeat(1000);
        let e = escape(&long);
        assert_eq!(e, format!("{}... (800 more bytes)", "a".repeat(MAX_SHOWN)));
        let e = escape(&"\x1b".repeat(1000));
        assert!(
            e.len() < MAX_SHOWN * 10 + 30 && e.ends_with("(800 more bytes)"),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn output_is_one_bounded_line_without_controls(s in "\\PC{0,300}|[\\x00-\\x1f\\x7f-\\u{9f}]{0,50}") {
            let e = escape(&s);
            proptest::prop_assert!(!e.chars().any(|c| c.is_control()));
            proptest::prop_assert!(e.chars().count() <= MAX_SHOWN * 10 + 30);
        }
    }
}
