//! `.dockerignore` pattern matching: a port of moby/patternmatcher.
//!
//! A [`Matcher`] holds an ordered list of patterns; `!pattern` is an
//! exception. A path is matched when the last pattern that matches it (or,
//! for the parent-aware methods, one of its parent directories) is not an
//! exception. Patterns are cleaned like Go's `filepath.Clean`, validated with
//! Go's `filepath.Match`, and compiled as upstream does: a pattern without
//! wildcards is an exact comparison, `prefix/**` a prefix test, `**suffix` a
//! suffix test, anything else a regular expression in which `*` is `[^/]*`,
//! `?` is `[^/]`, `**` is `(.*/)?` (or `.*` at the end), `.+()$` are escaped,
//! and everything else — `[...]`, `\x` escapes, and (through an upstream bug)
//! `|`, `{` and `}` — reaches Go's regexp as written, so `a|b` is an
//! alternation. kiln maps that Go regexp onto the `regex` crate exactly.
//!
//! Paths are byte strings, relative, `/`-separated and clean (`a/b`, never
//! `./a` or `a/`), the form fsutil's walker produces. A pattern whose regex
//! does not compile is reported when it is first evaluated against a path, as
//! upstream's lazy compilation does; a pattern never reached (because of the
//! skip rules) never errors.
//!
//! Unlike upstream, a `Matcher` is immutable after [`Matcher::new`], so it is
//! `Send + Sync` and can be shared by parallel walkers.

use crate::gostd::{glob, path, regexp, utf8};
use crate::text::show;

/// Why a pattern list is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A pattern that is just `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// Go's `filepath.ErrBadPattern`: the pattern is malformed (found by
    /// `filepath.Match` when the matcher is built, or by the regex compiler
    /// when the pattern is first used).
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern {
        /// The pattern as written (after cleaning), lossily decoded.
        pattern: String,
    },
    /// A [`MatchInfo`] from a different matcher.
    #[error("wrong number of values in parentMatched")]
    WrongMatchInfo,
}

/// How a pattern is tested (upstream's `matchType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The path equals the pattern.
    Exact,
    /// The path starts with the pattern minus its trailing `**`.
    Prefix,
    /// The path ends with the pattern minus its leading `**`.
    Suffix,
    /// The compiled regular expression matches.
    Regexp,
    /// The regular expression does not compile: every use is an error.
    Bad,
}

/// One cleaned pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: Vec<u8>,
    dirs: usize,
    exclusion: bool,
    kind: MatchKind,
    go_regex: Option<String>,
    regex: Option<regex::bytes::Regex>,
}

impl Pattern {
    /// The cleaned pattern, without the leading `!` of an exception.
    pub fn as_bytes(&self) -> &[u8] {
        &self.cleaned
    }

    /// Whether this is an exception (`!pattern`).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// How the pattern is tested.
    pub fn kind(&self) -> MatchKind {
        self.kind
    }

    /// The Go regular expression upstream builds for a regex (or bad)
    /// pattern, e.g. `^[^/]*\.txt$` for `*.txt`.
    pub fn go_regex(&self) -> Option<&str> {
        self.go_regex.as_deref()
    }

    fn bad(&self) -> PatternError {
        PatternError::BadPattern {
            pattern: show(&self.cleaned),
        }
    }

    /// Upstream's `Pattern.match`.
    fn matches(&self, path: &[u8]) -> Result<bool, PatternError> {
        let p = &self.cleaned;
        Ok(match self.kind {
            MatchKind::Exact => path == p.as_slice(),
            MatchKind::Prefix => path.starts_with(&p[..p.len().saturating_sub(2)]),
            MatchKind::Suffix => {
                let suffix = p.get(2..).unwrap_or_default();
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            MatchKind::Regexp => match &self.regex {
                Some(re) => re.is_match(&utf8::go_runes(path)),
                None => return Err(self.bad()),
            },
            MatchKind::Bad => return Err(self.bad()),
        })
    }

    /// Whether this pattern matches `file` or, when not, one of its parent
    /// directories (`a`, `a/b` for `a/b/c`). Errors on the parents are
    /// ignored, as upstream does (the file's own test already reported them).
    fn matches_self_or_parent(&self, file: &[u8]) -> Result<bool, PatternError> {
        if self.matches(file)? {
            return Ok(true);
        }
        let parent = path::dir(file);
        if parent == b"." {
            return Ok(false);
        }
        for (i, &b) in parent.iter().enumerate() {
            if b == b'/' && self.matches(&parent[..i]).unwrap_or(false) {
                return Ok(true);
            }
        }
        Ok(self.matches(&parent).unwrap_or(false))
    }
}

/// Upstream's `compile`: the match kind and, for regex patterns, the Go
/// regular expression. `pattern` is scanned rune by rune like Go's
/// `text/scanner` (invalid bytes read as U+FFFD, a leading BOM skipped).
fn compile(pattern: &[u8]) -> (MatchKind, String) {
    let mut runes = Vec::with_capacity(pattern.len());
    let mut rest = pattern;
    while !rest.is_empty() {
        let (c, w) = utf8::decode_rune(rest);
        runes.push(c);
        rest = &rest[w..];
    }
    if runes.first() == Some(&'\u{FEFF}') {
        runes.remove(0);
    }
    let mut reg = String::from("^");
    let mut kind = MatchKind::Exact;
    let n = runes.len();
    let mut k = 0;
    let mut i = 0;
    while k < n {
        let ch = runes[k];
        k += 1;
        match ch {
            '*' if runes.get(k) == Some(&'*') => {
                k += 1;
                // Treat **/ as **: eat the "/".
                if runes.get(k) == Some(&'/') {
                    k += 1;
                }
                if k == n {
                    // "**" at the end: to align with .gitignore accept all.
                    if kind == MatchKind::Exact {
                        kind = MatchKind::Prefix;
                    } else {
                        reg.push_str(".*");
                        kind = MatchKind::Regexp;
                    }
                } else {
                    // Any number of directories, even none.
                    reg.push_str("(.*/)?");
                    kind = MatchKind::Regexp;
                }
                if i == 0 {
                    kind = MatchKind::Suffix;
                }
            }
            '*' => {
                reg.push_str("[^/]*");
                kind = MatchKind::Regexp;
            }
            '?' => {
                reg.push_str("[^/]");
                kind = MatchKind::Regexp;
            }
            // Upstream means to escape `.+()|{}$`, but its bitmap (`[8]byte`
            // indexed by `b%8`, bit `b/8`) loses every byte >= 64, so `{`,
            // `|` and `}` reach Go's regexp raw: `a|b` is an alternation and
            // `a{2}` a repetition. Reproduced.
            '.' | '+' | '(' | ')' | '$' => {
                reg.push('\\');
                reg.push(ch);
            }
            '\\' => {
                // Escape the next char; a trailing \ is left alone.
                if k < n {
                    reg.push('\\');
                    reg.push(runes[k]);
                    k += 1;
                    kind = MatchKind::Regexp;
                } else {
                    reg.push('\\');
                }
            }
            '[' | ']' => {
                reg.push(ch);
                kind = MatchKind::Regexp;
            }
            _ => reg.push(ch),
        }
        i += 1;
    }
    reg.push('$');
    (kind, reg)
}

/// What [`Matcher::matches_using_parent_results`] learned about a directory,
/// passed back in for its children: which patterns matched it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of `.dockerignore`-style patterns (upstream's
/// `PatternMatcher`).
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Upstream's `New`: trims each pattern, drops empty ones, cleans the
    /// rest, splits off a leading `!`, and rejects malformed patterns.
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Result<Matcher, PatternError> {
        let mut pm = Matcher {
            patterns: Vec::with_capacity(patterns.len()),
            exclusions: false,
        };
        for p in patterns {
            let p = utf8::trim_space(p.as_ref());
            if p.is_empty() {
                continue;
            }
            let cleaned = path::clean(p);
            let (exclusion, body) = match cleaned.split_first() {
                Some((b'!', rest)) => {
                    if rest.is_empty() {
                        return Err(PatternError::IllegalExclusion);
                    }
                    (true, rest.to_vec())
                }
                _ => (false, cleaned),
            };
            pm.exclusions |= exclusion;
            if glob::fnmatch(&body, b".").is_err() {
                return Err(PatternError::BadPattern {
                    pattern: show(&body),
                });
            }
            let (mut kind, reg) = compile(&body);
            let (go_regex, regex) = if kind == MatchKind::Regexp {
                let re = regexp::compile(&reg).ok();
                if re.is_none() {
                    kind = MatchKind::Bad;
                }
                (Some(reg), re)
            } else {
                (None, None)
            };
            pm.patterns.push(Pattern {
                dirs: body.split(|&b| b == b'/').count(),
                cleaned: body,
                exclusion,
                kind,
                go_regex,
                regex,
            });
        }
        Ok(pm)
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is an exception.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Upstream's `MatchesOrParentMatches`: whether `file` or one of its
    /// parent directories matches, the last matching pattern deciding.
    pub fn matches_or_parent_matches(&self, file: &[u8]) -> Result<bool, PatternError> {
        let mut matched = false;
        for pattern in &self.patterns {
            // Skip an inclusion once matched, an exclusion until matched.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches_self_or_parent(file)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Upstream's `MatchesUsingParentResults`: like
    /// [`Matcher::matches_or_parent_matches`], but the caller passes what was
    /// learned about the parent directory (the default `MatchInfo` for a
    /// top-level path, or when unknown) and gets this path's info back.
    /// This is the variant fsutil's walker and BuildKit's copy use; it is
    /// subtly different from the parent-scanning one (a pattern skipped for
    /// a parent is re-tested against the child itself only).
    pub fn matches_using_parent_results(
        &self,
        file: &[u8],
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let mut info = MatchInfo::default();
        let m =
            self.matches_with_parent_into(file, &parent.parent_matched, &mut info.parent_matched)?;
        Ok((m, info))
    }

    /// [`Matcher::matches_using_parent_results`] writing the info into a
    /// caller-owned buffer (walkers reuse them).
    pub(crate) fn matches_with_parent_into(
        &self,
        file: &[u8],
        parent_matched: &[bool],
        out: &mut Vec<bool>,
    ) -> Result<bool, PatternError> {
        if !parent_matched.is_empty() && parent_matched.len() != self.patterns.len() {
            return Err(PatternError::WrongMatchInfo);
        }
        out.clear();
        out.resize(self.patterns.len(), false);
        let mut matched = false;
        for (i, pattern) in self.patterns.iter().enumerate() {
            // If the parent matched this pattern, no need to recheck.
            let mut m = parent_matched.get(i).copied().unwrap_or(false);
            if !m {
                if pattern.exclusion != matched {
                    continue;
                }
                m = if parent_matched.is_empty() {
                    pattern.matches_self_or_parent(file)?
                } else {
                    pattern.matches(file)?
                };
            }
            out[i] = m;
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Upstream's deprecated `MatchesUsingParentResult` (one bool for the
    /// parent). Kept for parity with upstream's test vectors.
    pub fn matches_using_parent_result(
        &self,
        file: &[u8],
        parent_matched: bool,
    ) -> Result<bool, PatternError> {
        let mut matched = parent_matched;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(file)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Upstream's deprecated `Matches`, which only checks the parent prefix
    /// with as many components as the pattern has. Kept for parity with
    /// upstream's test vectors; walkers use the parent-aware methods.
    pub fn matches(&self, file: &[u8]) -> Result<bool, PatternError> {
        let mut matched = false;
        let parent = path::dir(file);
        let parent_dirs: Vec<&[u8]> = parent.split(|&b| b == b'/').collect();
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut m = pattern.matches(file)?;
            if !m && parent != b"." && pattern.dirs <= parent_dirs.len() {
                m = pattern
                    .matches(&parent_dirs[..pattern.dirs].join(&b'/'))
                    .unwrap_or(false);
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }
}

/// Upstream's package-level `Matches(file, patterns)`: builds a matcher,
/// cleans `file`, and never matches `.`.
pub fn matches<P: AsRef<[u8]>>(file: &[u8], patterns: &[P]) -> Result<bool, PatternError> {
    let pm = Matcher::new(patterns)?;
    let file = path::clean(file);
    if file == b"." {
        return Ok(false);
    }
    pm.matches(&file)
}

/// Upstream's package-level `MatchesOrParentMatches(file, patterns)`.
pub fn matches_or_parent_matches<P: AsRef<[u8]>>(
    file: &[u8],
    patterns: &[P],
) -> Result<bool, PatternError> {
    let pm = Matcher::new(patterns)?;
    let file = path::clean(file);
    if file == b"." {
        return Ok(false);
    }
    pm.matches_or_parent_matches(&file)
}

/// The pattern with a trailing `/**` or `/*` removed (fsutil's
/// `patternWithoutTrailingGlob`), used to decide whether a directory can be
/// skipped.
pub(crate) fn without_trailing_glob(p: &[u8]) -> &[u8] {
    let p = p.strip_suffix(b"/**").unwrap_or(p);
    p.strip_suffix(b"/*").unwrap_or(p)
}

/// fsutil's `patternChars` test: does the pattern (minus a trailing glob)
/// contain a wildcard or escape, so it is not a plain path prefix?
pub(crate) fn has_pattern_chars(p: &[u8]) -> bool {
    without_trailing_glob(p)
        .iter()
        .any(|b| matches!(b, b'*' | b'[' | b']' | b'?' | b'^' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_kinds() {
        assert_eq!(compile(b"**").0, MatchKind::Suffix);
        assert_eq!(compile(b"dir/**").0, MatchKind::Prefix);
        assert_eq!(compile(b"a.b").0, MatchKind::Exact);
        assert_eq!(
            compile(b"*.go"),
            (MatchKind::Regexp, r"^[^/]*\.go$".to_owned())
        );
        // A BOM at the start is skipped by Go's scanner.
        assert_eq!(
            compile("\u{feff}*".as_bytes()),
            (MatchKind::Regexp, "^[^/]*$".to_owned())
        );
    }

    #[test]
    fn bad_regex_errors_only_when_reached() {
        let pm = Matcher::new(&["a", "[Local-Only]/"]).expect("passes filepath.Match");
        assert_eq!(pm.matches_or_parent_matches(b"a"), Ok(true));
        assert!(pm.matches_or_parent_matches(b"x").is_err());
    }

    #[test]
    fn non_utf8_paths() {
        let pm = Matcher::new(&[b"a?c".as_slice(), b"x\xff*"]).expect("valid");
        assert_eq!(pm.matches_or_parent_matches(b"a\xffc"), Ok(true));
        assert_eq!(pm.matches_or_parent_matches(b"a\xff\xfec"), Ok(false));
        assert_eq!(pm.matches_or_parent_matches(b"x\xfeyz"), Ok(true));
    }
}
