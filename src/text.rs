//! Text meant for terminals and log lines, with control characters escaped so peer-chosen strings cannot forge lines or drive the terminal.

use std::fmt::{self, Write};

/// Shows a string with control characters (and the Unicode line separators and
/// bidirectional overrides) written as Rust escapes, e.g. a newline as `\n` and ESC as
/// `\u{1b}`; a backslash is doubled so that an escape in the input cannot pass for ours.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if needs_escape(c) {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The escaped text as a `String`.
pub(crate) fn printable(text: &str) -> String {
    Printable(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(
            printable("a\nb\x1b[31m\t\\é\u{202e}"),
            "a\\nb\\u{1b}[31m\\t\\\\é\\u{202e}"
        );
        assert_eq!(printable("plain id-1"), "plain id-1");
    }
}
