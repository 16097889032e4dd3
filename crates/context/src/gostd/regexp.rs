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
//! Unicode classes (`\p{Greek}`) accept exactly Go's names; their contents
//! come from the Unicode version of the `regex` crate, which may be newer
//! than the Go toolchain's.

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

/// What precedes the current position, for Go's repetition rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Start of the expression or of a group, or after `|`: nothing to repeat.
    Nothing,
    /// Something repeatable.
    Atom,
    /// A repetition operator (Go forbids stacking them: `a**`).
    Repeat,
}

/// The Rust spelling of Go regexp source `src`.
pub(crate) fn translate(src: &str) -> Result<String, Unsupported> {
    let t: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() * 2);
    let mut last = Last::Nothing;
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        match c {
            '\\' => {
                let before = out.len();
                i = escape_outside_class(&t, i, &mut out)?;
                if out.len() != before {
                    last = Last::Atom;
                }
            }
            '[' => {
                let (class, next) = parse_class(&t, i)?;
                out.push_str(&class);
                i = next;
                last = Last::Atom;
            }
            '(' => {
                // Flag groups and named captures never come out of
                // patternmatcher; refuse rather than guess.
                if t.get(i + 1) == Some(&'?') {
                    return Err(Unsupported);
                }
                out.push('(');
                depth += 1;
                i += 1;
                last = Last::Nothing;
            }
            ')' => {
                depth = depth.checked_sub(1).ok_or(Unsupported)?;
                out.push(')');
                i += 1;
                last = Last::Atom;
            }
            '|' => {
                out.push('|');
                i += 1;
                last = Last::Nothing;
            }
            '*' | '+' | '?' => {
                i = repeat(&t, i + 1, &c.to_string(), last, &mut out)?;
                last = Last::Repeat;
            }
            '{' => match parse_repeat(&t, i)? {
                Some(end) => {
                    let op: String = t[i..end].iter().collect();
                    i = repeat(&t, end, &op, last, &mut out)?;
                    last = Last::Repeat;
                }
                None => {
                    push_literal(&mut out, u32::from('{'));
                    i += 1;
                    last = Last::Atom;
                }
            },
            '.' => {
                out.push('.');
                i += 1;
                last = Last::Atom;
            }
            // Assertions, grouped so that Rust accepts a repetition of them
            // as Go does (`^*`).
            '^' => {
                out.push_str("(?:^)");
                i += 1;
                last = Last::Atom;
            }
            '$' => {
                out.push_str("(?:$)");
                i += 1;
                last = Last::Atom;
            }
            _ => {
                push_literal(&mut out, u32::from(c));
                i += 1;
                last = Last::Atom;
            }
        }
    }
    if depth != 0 {
        return Err(Unsupported);
    }
    Ok(out)
}

/// Emits repetition operator `op` (its source ends before `t[next]`), with
/// Go's checks: something to repeat, no stacked operators; a following `?`
/// makes it non-greedy.
fn repeat(
    t: &[char],
    mut next: usize,
    op: &str,
    last: Last,
    out: &mut String,
) -> Result<usize, Unsupported> {
    if last != Last::Atom {
        return Err(Unsupported);
    }
    out.push_str(op);
    if t.get(next) == Some(&'?') {
        out.push('?');
        next += 1;
    }
    Ok(next)
}

/// `{n}`, `{n,}` or `{n,m}` starting at `i`: the index after it; `None` if
/// this `{` is a literal; an error for counts Go rejects (over 1000, or
/// max < min).
fn parse_repeat(t: &[char], i: usize) -> Result<Option<usize>, Unsupported> {
    let mut j = i + 1;
    let number = |j: &mut usize| -> Option<u64> {
        let start = *j;
        while t.get(*j).is_some_and(char::is_ascii_digit) {
            *j += 1;
        }
        // Go disallows leading zeros: then the `{` is a literal.
        if *j == start || (*j - start > 1 && t[start] == '0') {
            return None;
        }
        Some(t[start..*j].iter().fold(0u64, |n, d| {
            (n * 10 + u64::from(d.to_digit(10).unwrap_or(0))).min(1_000_000)
        }))
    };
    let Some(min) = number(&mut j) else {
        return Ok(None);
    };
    let mut max = Some(min);
    if t.get(j) == Some(&',') {
        j += 1;
        max = if t.get(j) == Some(&'}') {
            None
        } else {
            match number(&mut j) {
                Some(m) => Some(m),
                None => return Ok(None),
            }
        };
    }
    if t.get(j) != Some(&'}') {
        return Ok(None);
    }
    if min > 1000 || max.is_some_and(|m| m > 1000 || m < min) {
        return Err(Unsupported);
    }
    Ok(Some(j + 1))
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
    if UNICODE_NAMES.binary_search(&name.as_str()).is_err() {
        return Err(Unsupported);
    }
    let p = if sign { 'p' } else { 'P' };
    Ok(Some((format!(r"\{p}{{{name}}}"), next)))
}

/// Go's `unicode.Categories` and `unicode.Scripts` keys plus `Any` (Go 1.19
/// tables, plus the Unicode 15 scripts added in Go 1.21): the exact names
/// `\p{…}` accepts.
const UNICODE_NAMES: &[&str] = &[
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Any",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "C",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Cc",
    "Cf",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Co",
    "Common",
    "Coptic",
    "Cs",
    "Cuneiform",
    "Cypriot",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kawi",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "L",
    "Lao",
    "Latin",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Ll",
    "Lm",
    "Lo",
    "Lt",
    "Lu",
    "Lycian",
    "Lydian",
    "M",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Mc",
    "Me",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Mn",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "N",
    "Nabataean",
    "Nag_Mundari",
    "Nandinagari",
    "Nd",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nl",
    "No",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Oriya",
    "Osage",
    "Osmanya",
    "P",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Pc",
    "Pd",
    "Pe",
    "Pf",
    "Phags_Pa",
    "Phoenician",
    "Pi",
    "Po",
    "Ps",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "S",
    "Samaritan",
    "Saurashtra",
    "Sc",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sk",
    "Sm",
    "So",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Ugaritic",
    "Vai",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Z",
    "Zanabazar_Square",
    "Zl",
    "Zp",
    "Zs",
];

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
/// `\x{D800}`-style escapes) matches what Go's literal-prefix search makes
/// of it: `string(rune(0xD800))`, which is U+FFFD.
fn push_literal(out: &mut String, r: u32) {
    let r = char::from_u32(r).map_or(0xFFFD, u32::from);
    let _ = write!(out, r"\x{{{r:X}}}");
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
