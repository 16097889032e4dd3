//! Word splitting and variable substitution, as BuildKit's `shell.Lex` does it.
//!
//! This is a faithful port of `frontend/dockerfile/shell/lex.go`, including its
//! quirks, because a Dockerfile means whatever BuildKit makes of it. It is
//! checked against BuildKit's own test vectors (`envVarTest`, `wordsTest`,
//! `TestProcessWithMatches`) in `testdata/buildkit/shell`.
//!
//! One quirk kept on purpose: the word buffer is shared between a word and the
//! `${name:-word}` expansions nested in it, so with [`Lexer::process_words`] the
//! characters of a word before such an expansion are dropped
//! (`a${x:-b}c` splits to `["bc"]`). BuildKit behaves so; kiln matches it.

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;

/// Looks up variables for substitution.
pub trait EnvLookup {
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// No variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl EnvLookup for NoEnv {
    fn lookup(&self, _: &str) -> Option<&str> {
        None
    }
}

impl EnvLookup for [(String, String)] {
    /// The last definition wins.
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl EnvLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// A substitution or quoting error. Displays as BuildKit does:
/// `failed to process "<word>": <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellError {
    pub word: String,
    pub reason: String,
}

impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Long words are shortened: the message must stay readable.
        let word: String = if self.word.chars().count() > 80 {
            self.word.chars().take(77).chain("...".chars()).collect()
        } else {
            self.word.clone()
        };
        write!(
            f,
            "failed to process {}: {}",
            crate::quote::go_quote(&word),
            self.reason
        )
    }
}

impl std::error::Error for ShellError {}

/// The result of processing one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processed {
    /// The word after quote removal and substitution.
    pub result: String,
    /// The word split into fields after substitution.
    pub words: Vec<String>,
    /// Variables that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not found.
    pub unmatched: BTreeSet<String>,
}

/// Lexer options (the fields of BuildKit's `shell.Lex`).
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as they are written.
    pub skip_unset_env: bool,
}

impl Lexer {
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Quote removal and substitution of one word (`ProcessWordWithMatches`).
    pub fn process_word(&self, word: &str, env: &dyn EnvLookup) -> Result<Processed, ShellError> {
        let mut sw = ShellWord::new(self, word, env);
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Processed {
                result,
                words,
                matched: sw.matched,
                unmatched: sw.unmatched,
            }),
            Err(reason) => Err(ShellError {
                word: word.to_owned(),
                reason,
            }),
        }
    }

    /// The fields of `word` after substitution (`ProcessWords`).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Vec<String>, ShellError> {
        self.process_word(word, env).map(|p| p.words)
    }
}

struct ShellWord<'a> {
    lex: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn EnvLookup,
    raw_escapes: bool,
    /// Shared by nested calls, as in BuildKit (see the module docs).
    words_buffer: String,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    depth: usize,
}

/// How deeply `${…}` substitutions may nest.
const MAX_NESTING: usize = 256;

#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(buf, ch);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsDigit` (decimal digits of any script).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

impl<'a> ShellWord<'a> {
    fn new(lex: &'a Lexer, word: &str, env: &'a dyn EnvLookup) -> ShellWord<'a> {
        ShellWord {
            lex,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: lex.raw_escapes,
            words_buffer: String::new(),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_owned());
                Some(v.to_owned())
            }
            None => {
                self.unmatched.insert(name.to_owned());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        // `${a:-${b:-${c…}}}` recurses once per level; bound it so hostile
        // input gets an error instead of exhausting the stack.
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "substitutions nested more than {MAX_NESTING} levels deep"
            ));
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        self.words_buffer.clear();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;

        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                let w = words.finish(&mut self.words_buffer);
                return Ok((result, w));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if quotes => Some(self.process_single_quote()?),
                '"' if quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&mut self.words_buffer, &tmp);
                } else {
                    words.add_raw_string(&mut self.words_buffer, &tmp);
                }
                continue;
            }
            let mut ch = self.next().unwrap_or(ch);
            if ch == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(&mut self.words_buffer, ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(&mut self.words_buffer, ch);
            } else {
                words.add_char(&mut self.words_buffer, ch);
            }
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        let w = words.finish(&mut self.words_buffer);
        Ok((result, w))
    }

    /// The text up to `stop`; at the end of input without `stop`, the error is
    /// `missing` (the syntax error users understand).
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        missing: &str,
    ) -> Result<String, String> {
        match self.process_stop_on(stop, raw_escapes) {
            Ok((text, _)) => Ok(text),
            Err(_) if self.peek().is_none() => Err(missing.to_owned()),
            Err(e) => Err(e),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // A lone escape at the end is dropped (and the loop
                            // then reports the missing quote).
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err("syntax error: missing '}'".to_owned());
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        None => return Err("syntax error: missing '}'".to_owned()),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = self.process_until(Some('}'), raw, "syntax error: missing '}'")?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = value.as_deref().is_none_or(str::is_empty);
                match ch {
                    '-' => Ok(if value.is_none() || (null_is_unset && empty) {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if value.is_none() || (null_is_unset && empty) {
                        String::new()
                    } else {
                        word
                    }),
                    '?' => match value {
                        None => {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                word.as_str()
                            };
                            Err(format!("{name}: {msg}"))
                        }
                        Some(v) if null_is_unset && v.is_empty() => {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                word.as_str()
                            };
                            Err(format!("{name}: {msg}"))
                        }
                        Some(v) => Ok(v),
                    },
                    '%' | '#' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_owned()),
                            None => (false, word),
                        };
                        if ch == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern =
                    self.process_until(Some('/'), true, "syntax error: missing '/' in ${}")?;
                let replacement =
                    self.process_until(Some('}'), true, "syntax error: missing '}'")?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let re = shell_pattern_regex(&pattern, true, false)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                if replace_all {
                    Ok(re.replace_all(&value, replacement.as_str()).into_owned())
                } else {
                    Ok(match re.find(&value) {
                        Some(m) => {
                            format!(
                                "{}{}{}",
                                &value[..m.start()],
                                replacement,
                                &value[m.end()..]
                            )
                        }
                        None => value,
                    })
                }
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(c) = self.peek().filter(|c| is_digit(*c)) {
                    self.next();
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next(); // '<'
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.next();
        let mut result = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            result.push(c);
            self.next();
        }
        result
    }
}

/// Converts a shell wildcard pattern (`?`, `*`, backslash escapes; no brackets)
/// to a regular expression, as BuildKit's `convertShellPatternToRegex`.
pub fn shell_pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => {
                out.push_str(star);
                continue;
            }
            '?' => {
                out.push('.');
                continue;
            }
            '\\' => {
                // `}` and `/` are escaped only to get them past `${…}` parsing.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                out.push('\\');
                match chars.next() {
                    Some(c @ ('*' | '?' | '\\')) => out.push(c),
                    Some(c) => return Err(format!("invalid escape '\\{c}'")),
                    None => return Err("invalid escape '\\'".to_owned()),
                }
                continue;
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => out.push('\\'),
            _ => {}
        }
        out.push(tok);
    }
    Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = shell_pattern_regex(pattern, greedy, true)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_owned(),
        None => value.to_owned(),
    })
}

/// Reverses a pattern, keeping each escape in front of the character it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let last = p.len().saturating_sub(1);
    let mut out = vec!['\0'; p.len()];
    let mut i = 0;
    while i < p.len() {
        let out_idx = last - i;
        if p[i] == '\\' && i != last {
            out[out_idx - 1] = p[i];
            out[out_idx] = p[i + 1];
            i += 2;
        } else {
            out[out_idx] = p[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    // Regular expressions cannot find the shortest rightmost match, so reverse
    // both and trim a prefix instead.
    let rp = reverse_pattern(pattern);
    let rv: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&rp, &rv, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_regex() {
        let re = |p: &str| shell_pattern_regex(p, true, true).map(|r| r.as_str().to_owned());
        assert_eq!(re("*").as_deref(), Ok("^.*"));
        assert_eq!(re("?").as_deref(), Ok("^."));
        assert_eq!(re("\\*").as_deref(), Ok("^\\*"));
        assert_eq!(
            re("(()[]{\\}^$.\\*\\?|\\\\").as_deref(),
            Ok("^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\")
        );
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(re(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reverse() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("\\\\\\ab"), "b\\a\\\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
        assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
        assert_eq!(reverse_pattern("\\\\b"), "b\\\\");
    }

    #[test]
    fn mandatory_vars() {
        let lex = Lexer::new('\\');
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let set = env(&[("VAR", "plain"), ("ARG", "x")]);
        let empty = env(&[("VAR", ""), ("ARG", "x")]);
        let unset = env(&[("ARG", "x")]);
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";
        assert_eq!(lex.process_word(no_empty, &set).unwrap().result, "plain");
        let e = lex.process_word(no_empty, &empty).unwrap_err();
        assert!(e.to_string().contains("message herex"), "{e}");
        let e = lex.process_word(no_empty, &unset).unwrap_err();
        assert!(e.to_string().contains("message herex"), "{e}");
        assert_eq!(lex.process_word(no_unset, &set).unwrap().result, "plain");
        assert_eq!(lex.process_word(no_unset, &empty).unwrap().result, "");
        let e = lex.process_word(no_unset, &unset).unwrap_err();
        assert!(e.to_string().contains("message herex"), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let lex = Lexer::new('\\');
        let ok = format!("{}x{}", "${a:-".repeat(100), "}".repeat(100));
        assert_eq!(lex.process_word(&ok, &NoEnv).unwrap().result, "x");
        let deep = format!("{}x{}", "${a:-".repeat(100_000), "}".repeat(100_000));
        let e = lex.process_word(&deep, &NoEnv).unwrap_err();
        assert!(e.reason.contains("nested more than"), "{e}");
    }

    #[test]
    fn shared_word_buffer_quirk() {
        let lex = Lexer::new('\\');
        assert_eq!(lex.process_words("a${x:-b}c", &NoEnv).unwrap(), ["bc"]);
        assert_eq!(lex.process_word("a${x:-b}c", &NoEnv).unwrap().result, "abc");
    }
}
