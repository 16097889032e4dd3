//! Which lint rules run (BuildKit's `ParseLintOptions` and
//! `WithMergedConfigFromComments`), and the warnings found while planning.

use crate::diagnostic::Diagnostic;
use crate::lint;
use crate::mount;
use crate::quote::go_quote;
use crate::source::SourceFile;
use crate::syntax;

use super::options::BuildOptions;

/// The `# check=` directive: which lint rules to skip, and whether a rule
/// violation fails the build (BuildKit's `ParseLintOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub experimental_all: bool,
    pub experimental: Vec<String>,
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true;experimental=all`.
    pub fn parse(s: &str) -> Result<CheckConfig, String> {
        let mut c = CheckConfig::default();
        let s = s.trim();
        if s.is_empty() {
            return Ok(c);
        }
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {}", go_quote(part)));
            };
            let v = v.trim();
            let list = || {
                v.split(',')
                    .map(|r| r.trim().to_owned())
                    .collect::<Vec<_>>()
            };
            match k.trim() {
                "skip" if v == "all" => c.skip_all = true,
                "skip" => c.skip = list(),
                "experimental" if v == "all" => c.experimental_all = true,
                "experimental" => c.experimental = list(),
                "error" => {
                    c.error = mount::parse_go_bool(v).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: invalid syntax",
                            go_quote(part)
                        )
                    })?;
                }
                other => return Err(format!("invalid check option {}", go_quote(other))),
            }
        }
        Ok(c)
    }

    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.iter().any(|r| r == rule)
    }

    /// Whether experimental rule `rule` is enabled.
    pub fn enables(&self, rule: &str) -> bool {
        self.experimental_all || self.experimental.iter().any(|r| r == rule)
    }
}

/// Which lint rules run: the file's configuration (the `BUILDKIT_DOCKERFILE_CHECK`
/// build arg if given — it replaces the directive, as in BuildKit's dockerui —
/// else the `# check=` directive), and the `# check=` comments directly above
/// instructions, which add skips and experimental rules for that instruction
/// (BuildKit's `WithMergedConfigFromComments`).
#[derive(Debug, Clone, Default)]
pub struct LintConfig {
    pub file: CheckConfig,
    /// (first line, last line, configuration) of commented instructions.
    pub instructions: Vec<(usize, usize, CheckConfig)>,
}

impl LintConfig {
    pub fn new(
        file: &SourceFile,
        ast: &syntax::Ast,
        opts: &BuildOptions,
    ) -> Result<LintConfig, Diagnostic> {
        let config = if let Some(v) = opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
            CheckConfig::parse(v).map_err(|e| {
                Diagnostic::unlocated(
                    file.name(),
                    format!("failed to parse BUILDKIT_DOCKERFILE_CHECK: {e}"),
                )
            })?
        } else {
            match &ast.directives.check {
                Some(d) => CheckConfig::parse(&d.value).map_err(|e| {
                    Diagnostic::at(
                        file,
                        file.line_start(d.line),
                        format!("failed to parse check options: {e}"),
                    )
                    .with_end_line(d.line)
                })?,
                None => CheckConfig::default(),
            }
        };
        let instructions = ast
            .nodes
            .iter()
            .filter_map(|n| {
                let c = instruction_check(&n.comments)?;
                Some((n.start_line, n.end_line, c))
            })
            .collect();
        Ok(LintConfig {
            file: config,
            instructions,
        })
    }

    /// Whether warning `w` is reported. Experimental rules run only when
    /// enabled and are not skipped by `skip=` (as in BuildKit's `Linter.Run`).
    pub fn keeps(&self, w: &Diagnostic) -> bool {
        let Some(rule) = w.rule else {
            return true;
        };
        let line = w.line().unwrap_or(0);
        let configs = std::iter::once(&self.file).chain(
            self.instructions
                .iter()
                .filter(|(from, to, _)| (*from..=*to).contains(&line))
                .map(|(_, _, c)| c),
        );
        if lint::Rule::from_name(rule).is_some_and(lint::Rule::is_experimental) {
            let mut configs = configs;
            return configs.any(|c| c.enables(rule));
        }
        let mut configs = configs;
        !configs.any(|c| c.skips(rule))
    }
}

/// The `check=` comment among the comments directly above an instruction
/// (BuildKit's `WithMergedConfigFromComments`: the first one counts, its value
/// up to the first space; one that does not parse is ignored, as in BuildKit).
fn instruction_check(comments: &[String]) -> Option<CheckConfig> {
    for c in comments {
        let Some((name, value)) = c.split_once('=') else {
            continue;
        };
        let name = name.trim_end();
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid || !name.eq_ignore_ascii_case("check") {
            continue;
        }
        let value = value.trim();
        let value = value.split(' ').next().unwrap_or("");
        return CheckConfig::parse(value).ok();
    }
    None
}

/// The lint warnings found while planning, kept until the end, when the
/// configuration is applied (a rule may be skipped for one instruction only).
#[derive(Debug, Default)]
pub(super) struct Lints {
    found: Vec<Diagnostic>,
    pub config: LintConfig,
}

impl Lints {
    /// Records a lint warning.
    pub fn push(&mut self, w: Diagnostic) {
        self.found.push(w);
    }

    /// The lint warnings found so far that the configuration does not skip,
    /// in Dockerfile order (stable: same-line warnings keep the order they
    /// were found in).
    pub fn take(&mut self) -> Vec<Diagnostic> {
        let mut out = std::mem::take(&mut self.found);
        out.retain(|w| self.config.keeps(w));
        out.sort_by_key(|w| w.line().unwrap_or(0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_options() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("bogus").is_err());
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("nope=1").is_err());
        assert_eq!(CheckConfig::parse("  ").unwrap(), CheckConfig::default());
    }
}
