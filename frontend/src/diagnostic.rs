//! Located messages: every error and warning the frontend produces.
//!
//! A diagnostic carries everything needed to print it (`Dockerfile:3:5: message`,
//! the source line and a caret), so printing it needs no access to the file.

use std::fmt;

use crate::source::SourceFile;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// Where in the Dockerfile a diagnostic points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Last line of the instruction the diagnostic is about (≥ `line`).
    pub end_line: usize,
    /// The text of `line`, for the caret display.
    pub source_line: String,
}

/// A message about the Dockerfile, usually with a position in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The Dockerfile's name as given by the user (`Dockerfile`, `-`, …).
    pub file: String,
    pub location: Option<Location>,
    pub message: String,
    /// Lint rule name for warnings that are lint rules (`NoEmptyContinuation`).
    pub rule: Option<&'static str>,
    /// A link that explains the rule.
    pub url: Option<&'static str>,
    /// Warnings that belong with this error and are printed after it: the
    /// lint warnings behind a `# check=error=true` failure, which BuildKit
    /// lists for a failing build too.
    pub notes: Vec<Diagnostic>,
}

impl Diagnostic {
    /// An error at byte `offset` of `file`.
    pub fn at(file: &SourceFile, offset: usize, message: impl Into<String>) -> Diagnostic {
        let pos = file.position(offset);
        Diagnostic {
            severity: Severity::Error,
            file: file.name().to_owned(),
            location: Some(Location {
                line: pos.line,
                column: pos.column,
                end_line: pos.line,
                source_line: file.line_text(pos.line).to_owned(),
            }),
            message: message.into(),
            rule: None,
            url: None,
            notes: Vec::new(),
        }
    }

    /// An error about `file` as a whole, or about the build options.
    pub fn unlocated(file: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            location: None,
            message: message.into(),
            rule: None,
            url: None,
            notes: Vec::new(),
        }
    }

    /// Marks the diagnostic as spanning up to `end_line`.
    pub fn with_end_line(mut self, end_line: usize) -> Diagnostic {
        if let Some(loc) = &mut self.location {
            loc.end_line = end_line.max(loc.line);
        }
        self
    }

    /// Turns the diagnostic into a warning from lint rule `rule`.
    pub fn warning(mut self, rule: &'static str, url: &'static str) -> Diagnostic {
        self.severity = Severity::Warning;
        self.rule = Some(rule);
        self.url = Some(url);
        self
    }

    /// 1-based line, if located.
    pub fn line(&self) -> Option<usize> {
        self.location.as_ref().map(|l| l.line)
    }

    /// The full display: the `file:line:col: message` header, then the source
    /// line and a caret under the column.
    pub fn render(&self) -> String {
        let mut out = self.to_string();
        if let Some(loc) = &self.location {
            let num = loc.line.to_string();
            let pad = " ".repeat(num.len());
            let chars: Vec<char> = loc.source_line.chars().filter(|c| *c != '\r').collect();
            let col = loc.column.saturating_sub(1).min(chars.len());
            // Very long lines are shown as a window around the column.
            let (from, to) = if chars.len() > SHOWN_WIDTH {
                let from = col.saturating_sub(SHOWN_WIDTH / 4);
                (from, (from + SHOWN_WIDTH).min(chars.len()))
            } else {
                (0, chars.len())
            };
            let mut shown: String = chars[from..to].iter().collect();
            let mut lead: String = chars[from..col]
                .iter()
                // Keep tabs so the caret lines up under a tab-indented line.
                .map(|c| if *c == '\t' { '\t' } else { ' ' })
                .collect();
            if from > 0 {
                shown.insert(0, '…');
                lead.insert(0, ' ');
            }
            if to < chars.len() {
                shown.push('…');
            }
            out.push_str(&format!("\n {num} | {shown}\n {pad} | {lead}^"));
        }
        for note in &self.notes {
            let kind = match note.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            out.push_str(&format!("\n{kind}: {}", note.render()));
            if let Some(url) = note.url {
                out.push_str(&format!("\n   = {url}"));
            }
        }
        out
    }
}

/// Reading a file is here rather than in `source.rs` because its error is a
/// [`Diagnostic`], which is built on [`SourceFile`] (no import circle).
impl SourceFile {
    /// `text` as read from `name`. Invalid UTF-8 is rejected with the position of
    /// the first bad byte: kiln does not guess encodings.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<SourceFile, Diagnostic> {
        let name = name.into();
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SourceFile::new(name, text)),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                // Offsets before the first invalid byte are the same in the lossy copy.
                let file = SourceFile::new(name, lossy);
                Err(Diagnostic::at(
                    &file,
                    valid,
                    "the Dockerfile is not valid UTF-8 (only UTF-8 text is supported)",
                ))
            }
        }
    }
}

/// Characters of a source line shown under a diagnostic.
const SHOWN_WIDTH: usize = 120;

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(
                f,
                "{}:{}:{}: {}",
                self.file, loc.line, loc.column, self.message
            )?,
            None => write!(f, "{}: {}", self.file, self.message)?,
        }
        if let Some(rule) = self.rule {
            write!(f, " ({rule})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_windowed() {
        let line = format!("RUN {}x{}", "a".repeat(300), "b".repeat(300));
        let f = SourceFile::new("Dockerfile", format!("FROM a\n{line}\n"));
        let d = Diagnostic::at(&f, 7 + 304, "here");
        let r = d.render();
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines[1].chars().count() < 140, "{r}");
        let caret = lines[2].chars().position(|c| c == '^').unwrap();
        assert_eq!(lines[1].chars().nth(caret), Some('x'), "{r}");
    }

    #[test]
    fn renders_caret_under_column() {
        let f = SourceFile::new("Dockerfile", "FROM a\n\tCOPY --nope x y\n");
        let d = Diagnostic::at(&f, 7 + 6, "unknown flag: --nope");
        assert_eq!(
            d.render(),
            "Dockerfile:2:7: unknown flag: --nope\n 2 | \tCOPY --nope x y\n   | \t     ^"
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = SourceFile::from_bytes("Dockerfile", b"FROM a\nRUN \xff\n".to_vec())
            .expect_err("not UTF-8");
        let loc = err.location.expect("located");
        assert_eq!((loc.line, loc.column), (2, 5));
    }
}
