//! Command output on stdout: a reader that went away (`ferry sync -n | head`) ends the
//! output quietly instead of a panic; control characters in names are shown escaped.

use std::borrow::Cow;
use std::io::{self, Write as _};

/// Writes `text` to stdout at once. A closed pipe is not an error: whoever read the output
/// has what they wanted.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// `name` with control characters shown as escapes (`\n`, `\x1b`), so that a file name
/// holding a newline is one line of a listing and cannot pass for another.
pub fn shown(name: &str) -> Cow<'_, str> {
    if !name.chars().any(char::is_control) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(shown("plain name é"), "plain name é");
        assert!(matches!(shown("plain"), Cow::Borrowed(_)));
        assert_eq!(
            shown("evil\n2026 INFO removed\x1b[2J\t"),
            "evil\\n2026 INFO removed\\u{1b}[2J\\t"
        );
    }
}
