//! Go's view of byte strings: `utf8.DecodeRune`, `strings.TrimSpace`, and the
//! rune sequence `regexp` matches against.

use std::borrow::Cow;

/// The rune Go decodes at the start of `s` and its width in bytes, as
/// `utf8.DecodeRune`: an invalid or truncated sequence is `(U+FFFD, 1)`, the
/// empty string is `(U+FFFD, 0)`.
pub(crate) fn decode_rune(s: &[u8]) -> (char, usize) {
    let Some(&first) = s.first() else {
        return (char::REPLACEMENT_CHARACTER, 0);
    };
    if first < 0x80 {
        return (char::from(first), 1);
    }
    let head = &s[..s.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(v) => v,
        // `valid_up_to` is a char boundary, so this never fails.
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
    };
    match valid.chars().next() {
        Some(c) => (c, c.len_utf8()),
        None => (char::REPLACEMENT_CHARACTER, 1),
    }
}

/// `s` as the sequence of runes Go's `regexp` sees: valid UTF-8 unchanged,
/// every byte of an invalid sequence replaced by U+FFFD (Go decodes invalid
/// input one byte at a time, each as `RuneError`). Borrowed when `s` is valid.
pub(crate) fn go_runes(s: &[u8]) -> Cow<'_, [u8]> {
    if std::str::from_utf8(s).is_ok() {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len() + 8);
    let mut rest = s;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(v) => {
                out.extend_from_slice(v.as_bytes());
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.extend_from_slice(&rest[..good]);
                let bad = e.error_len().unwrap_or(rest.len() - good);
                for _ in 0..bad {
                    out.extend_from_slice("\u{FFFD}".as_bytes());
                }
                rest = &rest[good + bad..];
            }
        }
    }
    Cow::Owned(out)
}

/// Go's `unicode.IsSpace` (the White_Space property, which is also what
/// Rust's `char::is_whitespace` implements).
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `strings.TrimSpace` on bytes: leading and trailing Unicode white
/// space removed; invalid UTF-8 is never space.
pub(crate) fn trim_space(s: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < s.len() {
        let (c, w) = decode_rune(&s[start..]);
        if !is_space(c) || (c == char::REPLACEMENT_CHARACTER && w == 1) {
            break;
        }
        start += w;
    }
    // Walk forward remembering where the trailing run of spaces began: for
    // Go's decoding this equals trimming backwards with DecodeLastRune,
    // because an invalid byte never absorbs the valid sequence after it.
    let mut end = start;
    let mut i = start;
    while i < s.len() {
        let (c, w) = decode_rune(&s[i..]);
        i += w;
        if !is_space(c) || (c == char::REPLACEMENT_CHARACTER && w == 1) {
            end = i;
        }
    }
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_like_go() {
        assert_eq!(decode_rune(b""), ('\u{FFFD}', 0));
        assert_eq!(decode_rune(b"a"), ('a', 1));
        assert_eq!(decode_rune("é!".as_bytes()), ('é', 2));
        assert_eq!(decode_rune(b"\xff"), ('\u{FFFD}', 1));
        assert_eq!(decode_rune(b"\xe2\x82"), ('\u{FFFD}', 1));
        assert_eq!(decode_rune(b"\xed\xa0\x80"), ('\u{FFFD}', 1)); // surrogate
    }

    #[test]
    fn runes_replace_each_invalid_byte() {
        assert_eq!(&*go_runes(b"ok"), b"ok");
        assert_eq!(
            &*go_runes(b"a\xf0\x9f\x98b"),
            "a\u{FFFD}\u{FFFD}\u{FFFD}b".as_bytes()
        );
        assert_eq!(&*go_runes(b"\xffx\xc3"), "\u{FFFD}x\u{FFFD}".as_bytes());
    }

    #[test]
    fn trim_space_like_go() {
        assert_eq!(trim_space(b"  a b \t\r\n"), b"a b");
        assert_eq!(trim_space("\u{a0}x\u{2028}".as_bytes()), b"x");
        assert_eq!(trim_space(b" \xff "), b"\xff");
        assert_eq!(trim_space(b"   "), b"");
        assert_eq!(trim_space("\u{feff}a".as_bytes()), "\u{feff}a".as_bytes());
    }
}
