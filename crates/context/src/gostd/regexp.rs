//! Go `regexp` syntax (RE2 with Go's Perl flags) re-expressed for Rust's
//! `regex` crate.
//!
//! patternmatcher turns a `.dockerignore` pattern into Go regexp source and
//! hands it to Go's parser; the user's `[...]`, `^`, `]` and `\x` escapes
//! reach that parser unchanged. Rust's syntax differs exactly there: `[` and
//! `&&`/`--`/`~~` inside a class mean nested classes and set operations, `\s`
//! includes `\v`, `\d`/`\w` are Unicode-aware, octal escapes and `\Q…\E` are
//! not supported. So this module parses the Go source with Go's rules
//! (`regexp/syntax/parse.go`) and prints an equivalent Rust regex in which
//! every literal is a `\x{…}` escape and every Go class becomes an explicit
//! Rust class. What Go rejects is rejected ([`Unsupported`]).
//!
//! Matching runs on [`super::utf8::go_runes`] of the path, so an invalid byte
//! is U+FFFD to both engines, as in Go.
//!
//! Known difference: Unicode class names (`\p{Greek}`) are looked up by the
//! Rust crate, which also accepts some spellings Go rejects (`\p{greek}`).

use std::fmt::Write as _;

/// Go's parser rejects the expression (or it uses a form kiln cannot map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsupported;

/// Compiles Go regexp source `src` into an equivalent Rust byte regex.
pub(crate) fn compile(src: &str) -> Result<regex::bytes::Regex, Unsupported> {
    let rust = translate(src)?;
    regex::bytes::RegexBuilder::new(&rust)
        .unicode(true)
        .build()
        .map_err(|_| Unsupported)
}

/// The Rust spelling of Go regexp source `src`.
pub(crate) fn translate(src: &str) -> Result<String, Unsupported> {
    let t: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() * 2);
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        match c {
            '\\' => i = escape_outside_class(&t, i, &mut out)?,
            '[' => {
                let (class, next) = parse_class(&t, i)?;
                out.push_str(&class);
                i = next;
            }
            '(' => {
                // Flag groups and named captures never come out of
                // patternmatcher; refuse rather than guess.
                if t.get(i + 1) == Some(&'?') {
                    return Err(Unsupported);
                }
                out.push('(');
                i += 1;
            }
            ')' | '|' | '*' | '+' | '?' | '.' | '^' | '$' => {
                out.push(c);
                i += 1;
            }
            '{' => match parse_repeat(&t, i) {
                Some(end) => {
                    out.extend(&t[i..end]);
                    i = end;
                }
                None => {
                    push_literal(&mut out, u32::from('{'));
                    i += 1;
                }
            },
            _ => {
                push_literal(&mut out, u32::from(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `{n}`, `{n,}` or `{n,m}` starting at `i`: the index after it.
fn parse_repeat(t: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let digits = |j: &mut usize| {
        let start = *j;
        while t.get(*j).is_some_and(char::is_ascii_digit) {
            *j += 1;
        }
        *j > start
    };
    if !digits(&mut j) {
        return None;
    }
    if t.get(j) == Some(&',') {
        j += 1;
        digits(&mut j);
    }
    (t.get(j) == Some(&'}')).then_some(j + 1)
}

/// A backslash sequence outside a class at `t[i] == '\\'`; returns the index
/// after it.
fn escape_outside_class(t: &[char], i: usize, out: &mut String) -> Result<usize, Unsupported> {
    match t.get(i + 1) {
        Some('A') => {
            out.push_str(r"\A");
            return Ok(i + 2);
        }
        Some('b') => {
            out.push_str(r"(?-u:\b)");
            return Ok(i + 2);
        }
        Some('B') => {
            out.push_str(r"(?-u:\B)");
            return Ok(i + 2);
        }
        Some('C') => return Err(Unsupported),
        Some('Q') => {
            // \Q ... \E: everything up to \E (or the end) is literal.
            let mut j = i + 2;
            while j < t.len() {
                if t[j] == '\\' && t.get(j + 1) == Some(&'E') {
                    return Ok(j + 2);
                }
                push_literal(out, u32::from(t[j]));
                j += 1;
            }
            return Ok(j);
        }
        Some('z') => {
            out.push_str(r"\z");
            return Ok(i + 2);
        }
        _ => {}
    }
    if let Some((class, next)) = unicode_class(t, i)? {
        let _ = write!(out, "[{class}]");
        return Ok(next);
    }
    if let Some(class) = perl_class(t, i) {
        let _ = write!(out, "[{class}]");
        return Ok(i + 2);
    }
    let (r, next) = parse_escape(t, i)?;
    push_literal(out, r);
    Ok(next)
}

/// Go's `parseEscape` at `t[i] == '\\'`: the rune it denotes (possibly a
/// surrogate code point, which Go accepts and never matches) and the index
/// after it.
fn parse_escape(t: &[char], i: usize) -> Result<(u32, usize), Unsupported> {
    let c = *t.get(i + 1).ok_or(Unsupported)?;
    let mut j = i + 2;
    match c {
        '1'..='7' | '0' => {
            if c != '0' && !t.get(j).is_some_and(|d| ('0'..='7').contains(d)) {
                // A single non-zero digit is a backreference: unsupported.
                return Err(Unsupported);
            }
            let mut r = u32::from(c) - u32::from('0');
            for _ in 1..3 {
                match t.get(j) {
                    Some(d @ '0'..='7') => {
                        r = r * 8 + (u32::from(*d) - u32::from('0'));
                        j += 1;
                    }
                    _ => break,
                }
            }
            Ok((r, j))
        }
        'x' => {
            let c = *t.get(j).ok_or(Unsupported)?;
            j += 1;
            if c == '{' {
                let mut r: u32 = 0;
                let mut nhex = 0;
                loop {
                    let c = *t.get(j).ok_or(Unsupported)?;
                    j += 1;
                    if c == '}' {
                        break;
                    }
                    r = r * 16 + c.to_digit(16).ok_or(Unsupported)?;
                    if r > 0x10FFFF {
                        return Err(Unsupported);
                    }
                    nhex += 1;
                }
                if nhex == 0 {
                    return Err(Unsupported);
                }
                return Ok((r, j));
            }
            let x = c.to_digit(16);
            let y = t.get(j).and_then(|c| c.to_digit(16));
            match (x, y) {
                (Some(x), Some(y)) => Ok((x * 16 + y, j + 1)),
                _ => Err(Unsupported),
            }
        }
        'a' => Ok((7, j)),
        'f' => Ok((12, j)),
        'n' => Ok((10, j)),
        'r' => Ok((13, j)),
        't' => Ok((9, j)),
        'v' => Ok((11, j)),
        // Escaped ASCII punctuation (and `_`) is itself.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((u32::from(c), j)),
        _ => Err(Unsupported),
    }
}

/// `\d \D \s \S \w \W` at `t[i] == '\\'` as the body of a Rust class, with
/// Go's ASCII-only definitions (Go's `\s` has no `\v`).
fn perl_class(t: &[char], i: usize) -> Option<&'static str> {
    Some(match t.get(i + 1)? {
        'd' => r"0-9",
        'D' => r"[^0-9]",
        's' => r"\t\n\x0C\r ",
        'S' => r"[^\t\n\x0C\r ]",
        'w' => r"0-9A-Za-z_",
        'W' => r"[^0-9A-Za-z_]",
        _ => return None,
    })
}

/// `\pN`, `\p{Name}`, `\P{…}`, `\p{^…}` at `t[i] == '\\'` as a Rust class
/// item; `None` if this is not one.
fn unicode_class(t: &[char], i: usize) -> Result<Option<(String, usize)>, Unsupported> {
    let mut sign = match t.get(i + 1) {
        Some('p') => true,
        Some('P') => false,
        _ => return Ok(None),
    };
    let c = *t.get(i + 2).ok_or(Unsupported)?;
    let (mut name, next): (String, usize) = if c == '{' {
        let end = t[i + 3..]
            .iter()
            .position(|&c| c == '}')
            .ok_or(Unsupported)?;
        (t[i + 3..i + 3 + end].iter().collect(), i + 4 + end)
    } else {
        (c.to_string(), i + 3)
    };
    if let Some(rest) = name.strip_prefix('^') {
        sign = !sign;
        name = rest.to_owned();
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Unsupported);
    }
    let p = if sign { 'p' } else { 'P' };
    Ok(Some((format!(r"\{p}{{{name}}}"), next)))
}

const POSIX_CLASSES: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// Go's `parseClass` at `t[i] == '['`: the Rust class and the index after it.
fn parse_class(t: &[char], i: usize) -> Result<(String, usize), Unsupported> {
    let mut out = String::from("[");
    let mut j = i + 1;
    if t.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    let mut first = true;
    loop {
        let c = *t.get(j).ok_or(Unsupported)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        // POSIX [:alnum:] and friends.
        if c == '[' && t.get(j + 1) == Some(&':') {
            let rest: String = t[j + 2..].iter().collect();
            if let Some(end) = rest.find(":]") {
                let name = &rest[..end];
                let bare = name.strip_prefix('^').unwrap_or(name);
                if !POSIX_CLASSES.contains(&bare) {
                    return Err(Unsupported);
                }
                let _ = write!(out, "[:{name}:]");
                j += 2 + name.chars().count() + 2;
                continue;
            }
        }
        if c == '\\' {
            if let Some((class, next)) = unicode_class(t, j)? {
                out.push_str(&class);
                j = next;
                continue;
            }
            if let Some(class) = perl_class(t, j) {
                if class.starts_with('[') {
                    out.push_str(class);
                } else {
                    let _ = write!(out, "[{class}]");
                }
                j += 2;
                continue;
            }
        }
        let (lo, next) = class_char(t, j)?;
        j = next;
        let mut hi = lo;
        if t.get(j) == Some(&'-') && t.get(j + 1).is_some_and(|&c| c != ']') {
            let (h, next) = class_char(t, j + 1)?;
            if h < lo {
                return Err(Unsupported);
            }
            hi = h;
            j = next;
        }
        push_range(&mut out, lo, hi);
    }
    out.push(']');
    Ok((out, j + 1))
}

fn class_char(t: &[char], j: usize) -> Result<(u32, usize), Unsupported> {
    match t.get(j) {
        None => Err(Unsupported),
        Some('\\') => parse_escape(t, j),
        Some(&c) => Ok((u32::from(c), j + 1)),
    }
}

/// A literal outside a class. A surrogate code point (only reachable through
/// `\x{D800}`-style escapes) never matches Go's decoded input.
fn push_literal(out: &mut String, r: u32) {
    if char::from_u32(r).is_some() {
        let _ = write!(out, r"\x{{{r:X}}}");
    } else {
        out.push_str(r"[^\x{0}-\x{10FFFF}]");
    }
}

/// A class range with surrogates (which Rust cannot name) cut out.
fn push_range(out: &mut String, lo: u32, hi: u32) {
    let mut item = |lo: u32, hi: u32| {
        if lo == hi {
            let _ = write!(out, r"\x{{{lo:X}}}");
        } else {
            let _ = write!(out, r"\x{{{lo:X}}}-\x{{{hi:X}}}");
        }
    };
    const SUR_LO: u32 = 0xD800;
    const SUR_HI: u32 = 0xDFFF;
    if hi < SUR_LO || lo > SUR_HI {
        item(lo, hi);
        return;
    }
    if lo < SUR_LO {
        item(lo, SUR_LO - 1);
    }
    if hi > SUR_HI {
        item(SUR_HI + 1, hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_match(go: &str, s: &str) -> bool {
        compile(go)
            .map(|re| re.is_match(s.as_bytes()))
            .unwrap_or_else(|_| panic!("{go} should compile"))
    }

    #[test]
    fn generated_forms() {
        assert!(is_match(r"^(.*/)?dir2/[^/]*$", "a/b/dir2/x"));
        assert!(!is_match(r"^[^/]*\.txt$", "a/b.txt"));
        assert!(is_match(r"^a\+b\{c\}$", "a+b{c}"));
    }

    #[test]
    fn go_class_rules() {
        // `[` inside a class is literal in Go; `&&` is not intersection.
        assert!(is_match(r"^[[^/]*]$", "[]"));
        assert!(is_match(r"^[a&&b]$", "&"));
        assert!(is_match(r"^[]a]$", "]"));
        assert!(is_match(r"^[[:alpha:]]$", "q"));
        assert!(is_match(r"^[\--a]$", "B"));
        assert!(compile(r"^[[:foo:]]$").is_err());
        assert!(compile(r"^[Local-Only]$").is_err());
    }

    #[test]
    fn go_escapes() {
        assert!(is_match(r"^\d$", "7"));
        assert!(!is_match(r"^\d$", "٣")); // Arabic-Indic digit: ASCII only in Go
        assert!(!is_match(r"^\s$", "\u{b}")); // no \v in Go's \s
        assert!(is_match(r"^\101$", "A"));
        assert!(is_match(r"^\x41\x{42}$", "AB"));
        assert!(is_match(r"^\Q.*\E$", ".*"));
        assert!(compile(r"^\e$").is_err());
        assert!(compile(r"^\8$").is_err());
        assert!(compile(r"^\1$").is_err());
        assert!(compile("^a\\").is_err()); // trailing backslash
    }
}
