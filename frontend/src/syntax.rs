//! Dockerfile text → syntax tree: directives, comments, continuation lines,
//! heredocs, and the per-instruction argument shapes.
//!
//! A port of BuildKit's `frontend/dockerfile/parser`, with one addition: every
//! word remembers the byte offset it came from, across continuation lines, so
//! that later errors can point at a line *and column*. [`Ast::dump`] prints the
//! tree in BuildKit's `Node.Dump` format, which is how BuildKit's own parser test
//! files (`testdata/buildkit/parser`) are checked.
//!
//! Known divergence: BuildKit reads builder flags (`--from=…`) byte by byte and
//! re-encodes each byte of a multi-byte character as a Latin-1 character; kiln
//! reads characters, so non-ASCII flag values survive intact.

use std::fmt::Write as _;

use crate::diagnostic::Diagnostic;
use crate::quote::{go_quote, go_quote_list};
use crate::shell::{Lexer, NoEnv};
use crate::source::SourceFile;

/// A word of an instruction and where it starts in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub value: String,
    /// Byte offset in the Dockerfile.
    pub offset: usize,
}

/// A here-document attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, without quotes.
    pub name: String,
    /// The file descriptor in `3<<EOF` (0 when not given).
    pub fd: u32,
    /// Whether the content is subject to variable expansion (unquoted delimiter).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped.
    pub chomp: bool,
    /// The lines between the instruction and the delimiter, line endings kept.
    pub content: String,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction name as written (`RUN`, `run`, `Run`).
    pub keyword: String,
    pub offset: usize,
    /// `--name=value` builder flags, as written (quotes removed).
    pub flags: Vec<Word>,
    /// The arguments, shaped by the instruction (see the parse functions).
    pub args: Vec<Word>,
    /// For `ONBUILD`: the instruction it registers.
    pub sub: Option<Box<Node>>,
    /// Whether the arguments were a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// The instruction's logical line, continuation lines joined.
    pub original: String,
    /// Offset of the argument text (after the keyword and flags).
    pub args_offset: usize,
    pub start_line: usize,
    pub end_line: usize,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword, lowercased.
    pub fn command(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// Prints the node as BuildKit's `Node.Dump`.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<&str> = self.flags.iter().map(|f| f.value.as_str()).collect();
            let _ = write!(s, " {}", go_quote_list(&flags));
        }
        if let Some(sub) = &self.sub {
            let _ = write!(s, " ({})", sub.dump());
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(&a.value));
        }
        s.trim().to_owned()
    }
}

/// A parser directive (`# syntax=…`, `# escape=…`, `# check=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub value: String,
    pub line: usize,
}

/// The directives found at the top of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    pub syntax: Option<Directive>,
    pub escape: Option<Directive>,
    pub check: Option<Directive>,
}

/// The parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Ast {
    pub nodes: Vec<Node>,
    pub escape: char,
    pub directives: Directives,
    /// Empty continuation lines (NoEmptyContinuation), one per instruction.
    pub warnings: Vec<Diagnostic>,
}

impl Ast {
    /// All nodes in BuildKit's dump format (`(from \"alpine\")`), one per line.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push('(');
            s.push_str(&n.dump());
            s.push_str(")\n");
        }
        s
    }
}

/// Parses `file`.
pub fn parse(file: &SourceFile) -> Result<Ast, Diagnostic> {
    Parser::new(file).run()
}

/// Go's `unicode.IsSpace` is Rust's `char::is_whitespace`.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// The whitespace of BuildKit's `reWhitespace` (`[\t\v\f\r ]`).
fn is_ws_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// A logical line made of pieces of several physical lines, with the map back to
/// the source.
#[derive(Default)]
struct LogicalLine {
    text: String,
    /// (offset in `text`, offset in the source) at the start of each piece.
    pieces: Vec<(usize, usize)>,
}

impl LogicalLine {
    fn push(&mut self, s: &str, source_offset: usize) {
        if s.is_empty() {
            return;
        }
        self.pieces.push((self.text.len(), source_offset));
        self.text.push_str(s);
    }

    fn source_offset(&self, logical: usize) -> usize {
        let i = self.pieces.partition_point(|(l, _)| *l <= logical);
        match i.checked_sub(1).and_then(|i| self.pieces.get(i)) {
            Some((l, s)) => s + (logical - l),
            None => self.pieces.first().map_or(0, |p| p.1),
        }
    }
}

struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

const VALID_DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

impl DirectiveParser {
    /// BuildKit's `DirectiveParser.ParseLine`: `#key=value` lines at the top of
    /// the file, stopping at the first line that is not one.
    fn parse_line(&mut self, line: &str) -> Result<Option<(String, String)>, String> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let rest = rest.trim_start_matches(is_space);
        match match_directive(rest) {
            Some((k, v)) if VALID_DIRECTIVES.contains(&k.as_str()) => {
                if self.seen.contains(&k) {
                    return Err(format!("only one {k} parser directive can be used"));
                }
                self.seen.push(k.clone());
                Ok(Some((k, v)))
            }
            _ => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` with Go's `\s` (`[\t\n\f\r ]`).
fn match_directive(s: &str) -> Option<(String, String)> {
    let go_s = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_end = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map_or(s.len(), |(i, _)| i);
    let key = &s[..key_end];
    let rest = s[key_end..].trim_start_matches(go_s);
    let rest = rest.strip_prefix('=')?;
    let value = rest.trim_start_matches(go_s).trim_end_matches(go_s);
    if value.is_empty() {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.to_owned()))
}

struct Parser<'a> {
    file: &'a SourceFile,
    /// (start offset, line without its terminator, line with it).
    lines: Vec<(usize, &'a str, &'a str)>,
    next: usize,
    escape: char,
    directive_parser: DirectiveParser,
    directives: Directives,
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(is_space).starts_with('#')
}

impl<'a> Parser<'a> {
    fn new(file: &'a SourceFile) -> Parser<'a> {
        let text = file.text();
        let mut lines = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = text[start..]
                .find('\n')
                .map_or(text.len(), |i| start + i + 1);
            let full = &text[start..end];
            lines.push((start, trim_newline(full), full));
            start = end;
        }
        // A byte-order mark is dropped from the first line.
        if let Some((s, l, f)) = lines.first_mut()
            && let (Some(l2), Some(f2)) = (l.strip_prefix('\u{feff}'), f.strip_prefix('\u{feff}'))
        {
            *s += '\u{feff}'.len_utf8();
            *l = l2;
            *f = f2;
        }
        Parser {
            file,
            lines,
            next: 0,
            escape: '\\',
            directive_parser: DirectiveParser {
                done: false,
                seen: Vec::new(),
            },
            directives: Directives::default(),
        }
    }

    fn err(&self, offset: usize, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.file, offset, msg)
    }

    /// BuildKit's `processLine`: strips the line ending (and, for the first line
    /// of an instruction, leading whitespace), feeds the directive parser, and
    /// blanks comment lines. Returns the kept text and its source offset.
    fn process_line(
        &mut self,
        start: usize,
        line: &'a str,
        strip_left: bool,
        line_no: usize,
    ) -> Result<(&'a str, usize, bool), Diagnostic> {
        let mut text = line;
        let mut offset = start;
        if strip_left {
            let trimmed = text.trim_start_matches(is_space);
            offset += text.len() - trimmed.len();
            text = trimmed;
        }
        let directive = self
            .directive_parser
            .parse_line(text)
            .map_err(|m| self.err(offset, m))?;
        let mut is_directive = false;
        if let Some((k, v)) = directive {
            is_directive = true;
            let d = Directive {
                value: v.clone(),
                line: line_no,
            };
            match k.as_str() {
                "escape" => {
                    if v != "`" && v != "\\" {
                        return Err(self.err(
                            offset,
                            format!("invalid escape token '{v}' does not match ` or \\"),
                        ));
                    }
                    self.escape = v.chars().next().unwrap_or('\\');
                    self.directives.escape = Some(d);
                }
                "syntax" => self.directives.syntax = Some(d),
                _ => self.directives.check = Some(d),
            }
        }
        if is_comment(text) {
            text = "";
        }
        Ok((text, offset, is_directive))
    }

    /// BuildKit's line-continuation regex: a trailing escape (followed only by
    /// spaces/tabs) not itself escaped. Returns the line without it and whether
    /// the instruction ends here.
    fn trim_continuation<'s>(&self, line: &'s str) -> (&'s str, bool) {
        let stripped = line.trim_end_matches([' ', '\t']);
        let Some(before) = stripped.strip_suffix(self.escape) else {
            return (line, true);
        };
        if before.is_empty() {
            return ("", false);
        }
        if before.ends_with(self.escape) {
            return (line, true);
        }
        (before, false)
    }

    fn run(mut self) -> Result<Ast, Diagnostic> {
        let mut nodes = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();

        while self.next < self.lines.len() {
            let (start, line, _) = self.lines[self.next];
            self.next += 1;
            let line_no = self.next;
            if is_comment(line) {
                // BuildKit drops the first byte of the untrimmed line, then trims.
                let comment = line.get(1..).unwrap_or("").trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_owned());
                }
            }
            let (text, offset, is_directive) = self.process_line(start, line, true, line_no)?;
            if is_directive {
                comments.pop();
            }
            let start_line = line_no;
            let (first, mut end) = self.trim_continuation(text);
            if end && first.is_empty() {
                continue;
            }
            let mut logical = LogicalLine::default();
            logical.push(first, offset);

            let mut empty_continuation = false;
            while !end && self.next < self.lines.len() {
                let (s, l, _) = self.lines[self.next];
                self.next += 1;
                let n = self.next;
                let (text, off, _) = self.process_line(s, l, false, n)?;
                if is_comment(l) {
                    continue;
                }
                if text.trim_start_matches(is_space).is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (piece, e) = self.trim_continuation(text);
                end = e;
                logical.push(piece, off);
            }
            let mut end_line = self.next;

            let node_offset = logical.source_offset(0);
            let mut node = self
                .node_from_line(&logical, 0, &logical.text, comments.clone())
                .map_err(|(off, msg)| {
                    self.err(logical.source_offset(off), msg)
                        .with_end_line(end_line)
                })?;
            if empty_continuation {
                // BuildKit reports it at the instruction's last line.
                let last = self
                    .lines
                    .get(end_line.saturating_sub(1))
                    .map_or(node_offset, |l| l.0);
                warnings.push(
                    self.err(last, "Empty continuation line")
                        .with_end_line(end_line)
                        .warning(
                            "NoEmptyContinuation",
                            "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
                        ),
                );
            }

            if node_can_contain_heredoc(&node) && logical.text.contains("<<") {
                let docs = heredocs_from_line(&logical.text)
                    .map_err(|msg| self.err(node_offset, msg).with_end_line(end_line))?;
                for mut doc in docs {
                    let mut content = String::new();
                    let mut terminated = false;
                    while self.next < self.lines.len() {
                        let (_, l, full) = self.lines[self.next];
                        self.next += 1;
                        let candidate = if doc.chomp {
                            l.trim_start_matches('\t')
                        } else {
                            l
                        };
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(full);
                    }
                    end_line = self.next;
                    if !terminated {
                        return Err(self
                            .err(
                                node_offset,
                                format!(
                                    "unterminated heredoc: no line {} before the end of the file",
                                    go_quote(&doc.name)
                                ),
                            )
                            .with_end_line(end_line));
                    }
                    doc.content = content;
                    node.heredocs.push(doc);
                }
            }
            node.start_line = start_line;
            node.end_line = end_line;
            nodes.push(node);
            comments.clear();
        }

        if nodes.is_empty() {
            let end = self.file.text().len();
            return Err(self.err(end, "file with no instructions"));
        }
        Ok(Ast {
            nodes,
            escape: self.escape,
            directives: self.directives,
            warnings,
        })
    }

    /// BuildKit's `newNodeFromLine`. `base` is the offset of `line` within the
    /// logical line; errors carry a logical offset.
    fn node_from_line(
        &self,
        logical: &LogicalLine,
        base: usize,
        line: &str,
        comments: Vec<String>,
    ) -> Result<Node, (usize, String)> {
        let at = |o: usize| logical.source_offset(base + o);
        let lead = line.len() - line.trim_start_matches(is_space).len();
        let trimmed = line.trim_matches(is_space);
        let (cmd, rest, rest_start) = match trimmed.char_indices().find(|(_, c)| is_ws_sep(*c)) {
            Some((i, _)) => {
                let after = trimmed[i..].trim_start_matches(is_ws_sep);
                let rest_start = lead + (trimmed.len() - after.len());
                (&trimmed[..i], after, rest_start)
            }
            None => (trimmed, "", lead + trimmed.len()),
        };
        let cmd_offset = lead;
        let (args_rel, flags) = extract_builder_flags(rest, self.escape);
        let flags: Vec<Word> = flags
            .into_iter()
            .map(|(v, o)| Word {
                value: v,
                offset: at(rest_start + o),
            })
            .collect();
        let remaining = &rest[args_rel..];
        let args_lead = remaining.len() - remaining.trim_start_matches(is_space).len();
        let args = remaining.trim_matches(is_space);
        let args_start = rest_start + args_rel + args_lead;

        let mut node = Node {
            keyword: cmd.to_owned(),
            offset: at(cmd_offset),
            flags,
            args: Vec::new(),
            sub: None,
            json: false,
            heredocs: Vec::new(),
            original: line.to_owned(),
            args_offset: at(args_start),
            start_line: 0,
            end_line: 0,
            comments,
        };
        let word = |value: String, rel: usize| Word {
            value,
            offset: at(args_start + rel),
        };
        let words = |list: Vec<(String, usize)>| -> Vec<Word> {
            list.into_iter().map(|(v, o)| word(v, o)).collect()
        };

        match cmd.to_ascii_lowercase().as_str() {
            "add" | "copy" | "volume" => {
                let (list, json) = parse_maybe_json_to_list(args).map_err(|m| (args_start, m))?;
                node.args = words(list);
                node.json = json;
            }
            "arg" => node.args = words(parse_words(args, self.escape)),
            "cmd" | "entrypoint" | "run" | "shell" => {
                let (list, json) = parse_maybe_json(args).map_err(|m| (args_start, m))?;
                node.args = words(list);
                node.json = json;
            }
            "env" | "label" => {
                let key = if cmd.eq_ignore_ascii_case("env") {
                    "ENV"
                } else {
                    "LABEL"
                };
                node.args = words(
                    parse_name_val(args, key, self.escape).map_err(|(o, m)| (args_start + o, m))?,
                );
            }
            "expose" | "from" => node.args = words(split_ws(args)),
            "healthcheck" => {
                let (list, json) = parse_health_config(args).map_err(|m| (args_start, m))?;
                node.args = words(list);
                node.json = json;
            }
            "maintainer" | "stopsignal" | "user" | "workdir" => {
                if !args.is_empty() {
                    node.args = vec![word(args.to_owned(), 0)];
                }
            }
            "onbuild" => {
                if !args.is_empty() {
                    // `ONBUILD ONBUILD …` is refused when instructions are
                    // typed; stop hostile chains here before they exhaust the
                    // stack.
                    if base > 0 && depth_of(&logical.text[..base]) >= MAX_ONBUILD_NESTING {
                        return Err((
                            args_start,
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_owned(),
                        ));
                    }
                    let sub = self.node_from_line(logical, base + args_start, args, Vec::new())?;
                    node.sub = Some(Box::new(sub));
                }
            }
            // Unknown instructions parse (BuildKit ignores their arguments) and
            // are rejected when the instructions are typed.
            _ => node.args = vec![word(String::new(), 0)],
        }
        Ok(node)
    }
}

/// How many nested ONBUILDs the syntax tree keeps (for BuildKit's dump
/// format); deeper chains are an error.
const MAX_ONBUILD_NESTING: usize = 16;

/// Number of ONBUILD keywords in the prefix of a logical line.
fn depth_of(prefix: &str) -> usize {
    prefix
        .split(is_ws_sep)
        .filter(|w| w.eq_ignore_ascii_case("onbuild"))
        .count()
}

fn node_can_contain_heredoc(node: &Node) -> bool {
    let n = match &node.sub {
        Some(sub) if node.keyword.eq_ignore_ascii_case("onbuild") => sub,
        _ => node,
    };
    let cmd = n.command();
    (cmd == "add" || cmd == "copy" || cmd == "run") && !n.json
}

/// BuildKit's `extractBuilderFlags`: leading `--flag` words. Returns the offset
/// where the rest of the line starts and the flags with their offsets.
fn extract_builder_flags(line: &str, escape: char) -> (usize, Vec<(String, usize)>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let (pos, mut ch) = if at_end { (line.len(), '\0') } else { chars[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            let next_is_dash = chars.get(i + 1).is_some_and(|(_, c)| *c == '-');
            if ch != '-' || !next_is_dash {
                return (pos, words);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push((word, word_start));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (pos, words);
                }
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), word_start));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                i += 1;
                ch = chars[i].1;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        if ch == escape {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            ch = chars[i].1;
        }
        word.push(ch);
        i += 1;
    }
    (line.len(), words)
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes and escapes kept
/// (they are removed later, when the words are expanded).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<(String, usize)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut word_start = 0;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let (pos, mut ch) = if at_end { (rest.len(), '\0') } else { chars[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push((word, word_start));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), word_start));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i].1;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            word.push(ch);
            ch = chars[i].1;
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// Splits on `[\t\v\f\r ]+` (BuildKit's `reWhitespace.Split(s, -1)` for a
/// trimmed, non-empty `s`).
fn split_ws(s: &str) -> Vec<(String, usize)> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_sep = false;
    for (i, c) in s.char_indices() {
        if is_ws_sep(c) {
            if !in_sep {
                out.push((s[start..i].to_owned(), start));
                in_sep = true;
            }
        } else if in_sep {
            start = i;
            in_sep = false;
        }
    }
    if in_sep {
        out.push((String::new(), s.len()));
    } else {
        out.push((s[start..].to_owned(), start));
    }
    out
}

/// `reWhitespace.Split(s, 2)`.
fn split_ws_once(s: &str) -> Option<(&str, &str, usize)> {
    let (i, _) = s.char_indices().find(|(_, c)| is_ws_sep(*c))?;
    let after = s[i..].trim_start_matches(is_ws_sep);
    Some((&s[..i], after, s.len() - after.len()))
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// `Ok(Some(..))`: a JSON array of strings; `Ok(None)`: not JSON (use the shell
/// form); `Err`: a JSON array with a non-string element.
fn parse_json(rest: &str) -> Result<Option<Vec<(String, usize)>>, String> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let fixed = replace_lone_surrogates(rest);
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(&fixed) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match v {
            serde_json::Value::String(s) => out.push((s, 0)),
            _ => return Err(NOT_STRING_ARRAY.to_owned()),
        }
    }
    Ok(Some(out))
}

/// Go's JSON decoder turns a `\uXXXX` escape of an unpaired UTF-16 surrogate
/// into U+FFFD; serde_json rejects it. Rewrite such escapes (inside strings
/// only) so both read the same text.
fn replace_lone_surrogates(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.contains("\\u") {
        return std::borrow::Cow::Borrowed(json);
    }
    let b = json.as_bytes();
    let hex4 = |i: usize| -> Option<u32> {
        let s = json.get(i..i + 4)?;
        if s.bytes().all(|c| c.is_ascii_hexdigit()) {
            u32::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    let escape_at = |i: usize| -> Option<u32> {
        (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
            .then(|| hex4(i + 2))
            .flatten()
    };
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut i, mut copied) = (false, 0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                in_string = !in_string;
                i += 1;
            }
            b'\\' if in_string => {
                let Some(cu) = escape_at(i) else {
                    i += 2;
                    continue;
                };
                let high = (0xD800..0xDC00).contains(&cu);
                let low = (0xDC00..0xE000).contains(&cu);
                let paired =
                    high && escape_at(i + 6).is_some_and(|n| (0xDC00..0xE000).contains(&n));
                if paired {
                    i += 12;
                } else if high || low {
                    out.push_str(&json[copied..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    copied = i;
                } else {
                    i += 6;
                }
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(json);
    }
    out.push_str(&json[copied..]);
    std::borrow::Cow::Owned(out)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<(String, usize)>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest)? {
        Some(list) => Ok((list, true)),
        None => Ok((vec![(rest.to_owned(), 0)], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<(String, usize)>, bool), String> {
    match parse_json(rest)? {
        Some(list) => Ok((list, true)),
        None => Ok((split_ws(rest), false)),
    }
}

fn parse_health_config(rest: &str) -> Result<(Vec<(String, usize)>, bool), String> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let after = rest[sep..].trim_start_matches(is_space);
    let next = rest.len() - after.len();
    let (cmd, json) = parse_maybe_json(after)?;
    let mut out = vec![(rest[..sep].to_owned(), 0)];
    out.extend(cmd.into_iter().map(|(v, o)| (v, o + next)));
    Ok((out, json))
}

/// ENV and LABEL: `KEY value` (legacy) or `k=v k2="v 2"`. Produces triples
/// `key, value, separator` (`=` or empty for the legacy form), as BuildKit.
fn parse_name_val(
    rest: &str,
    key: &str,
    escape: char,
) -> Result<Vec<(String, usize)>, (usize, String)> {
    let words = parse_words(rest, escape);
    let Some((first, _)) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some((k, v, voff)) = split_ws_once(rest) else {
            return Err((0, format!("{key} must have two arguments")));
        };
        return Ok(vec![
            (k.to_owned(), 0),
            (v.to_owned(), voff),
            (String::new(), rest.len()),
        ]);
    }
    let mut out = Vec::new();
    for (w, off) in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err((
                off,
                format!(
                    "Syntax error - can't find = in {}. Must be of the form: name=value",
                    go_quote(&w)
                ),
            ));
        };
        let voff = off + k.len() + 1;
        out.push((k.to_owned(), off));
        out.push((v.to_owned(), voff));
        out.push(("=".to_owned(), voff));
    }
    Ok(out)
}

/// BuildKit's `ParseHeredoc`: a word of the form `[fd]<<[-]NAME`.
pub(crate) fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, String> {
    // ^(\d*)<<(-?)\s*([^<]*)$
    let digits = src.len() - src.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = src[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = src[..digits].parse::<u32>().unwrap_or(0);
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &NoEnv).map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &NoEnv).map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(doc) = parse_heredoc(&w)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Removes leading tabs from every line (`<<-`).
pub fn chomp_heredoc_content(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        parse_words(s, '\\').into_iter().map(|(w, _)| w).collect()
    }

    #[test]
    fn parse_words_like_buildkit() {
        assert_eq!(words("foo"), ["foo"]);
        assert_eq!(words("foo bar"), ["foo", "bar"]);
        assert_eq!(words("foo\\ bar"), ["foo\\ bar"]);
        assert_eq!(words("foo=bar"), ["foo=bar"]);
        assert_eq!(words("foo bar 'abc xyz'"), ["foo", "bar", "'abc xyz'"]);
        assert_eq!(words("foo bar \"abc xyz\""), ["foo", "bar", "\"abc xyz\""]);
        assert_eq!(words("àöû"), ["àöû"]);
        assert_eq!(words("föo bàr \"âbc xÿz\""), ["föo", "bàr", "\"âbc xÿz\""]);
    }

    #[test]
    fn json_lone_surrogates_read_as_go_does() {
        let cmd = |s: &str| {
            parse_json(s)
                .ok()
                .flatten()
                .map(|v| v.into_iter().map(|(w, _)| w).collect::<Vec<_>>())
        };
        assert_eq!(cmd(r#"["\ud800"]"#), Some(vec!["\u{fffd}".to_owned()]));
        assert_eq!(
            cmd(r#"["\udc00x", "\ud83d\ude80"]"#),
            Some(vec!["\u{fffd}x".to_owned(), "🚀".to_owned()])
        );
        assert_eq!(cmd(r#"["\\ud800"]"#), Some(vec!["\\ud800".to_owned()]));
        assert_eq!(cmd(r#"["é\q"]"#), None);
    }

    #[test]
    fn heredoc_words() {
        let h = |s: &str| {
            parse_heredoc(s)
                .ok()
                .flatten()
                .map(|h| (h.name, h.fd, h.expand, h.chomp))
        };
        assert_eq!(h("<<EOF"), Some(("EOF".into(), 0, true, false)));
        assert_eq!(h("<<-EOF"), Some(("EOF".into(), 0, true, true)));
        assert_eq!(h("3<<'EOF'"), Some(("EOF".into(), 3, false, false)));
        assert_eq!(h("<<\"E\"OF"), Some(("EOF".into(), 0, false, false)));
        assert_eq!(h("<< EOF"), Some(("EOF".into(), 0, true, false)));
        assert_eq!(h("<<"), None);
        assert_eq!(h("a<<EOF"), None);
        assert_eq!(h("<<EOF<"), None);
    }

    #[test]
    fn flags_and_offsets() {
        let (rest, flags) = extract_builder_flags("--from=a --chown=\"x y\" src dst", '\\');
        assert_eq!(
            flags,
            [("--from=a".to_owned(), 0), ("--chown=x y".to_owned(), 9)]
        );
        assert_eq!(rest, 23);
        let (rest, flags) = extract_builder_flags("-- --x y", '\\');
        assert!(flags.is_empty());
        assert_eq!(rest, 2);
    }

    #[test]
    fn word_offsets_survive_continuations() {
        let f = SourceFile::new("Dockerfile", "FROM a\nCOPY --from=b \\\n  x \\\n  y\n");
        let ast = parse(&f).unwrap();
        let copy = &ast.nodes[1];
        let pos: Vec<_> = copy
            .args
            .iter()
            .map(|w| {
                (
                    w.value.as_str(),
                    f.position(w.offset).line,
                    f.position(w.offset).column,
                )
            })
            .collect();
        assert_eq!(pos, [("x", 3, 3), ("y", 4, 3)]);
        assert_eq!(f.position(copy.flags[0].offset).column, 6);
        assert_eq!((copy.start_line, copy.end_line), (2, 4));
    }
}
