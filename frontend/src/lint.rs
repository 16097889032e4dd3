//! Build checks: BuildKit's Dockerfile lint rules (`docker build --check`).
//!
//! Rule names, descriptions, messages and documentation links are BuildKit's
//! (`frontend/dockerfile/linter/ruleset.go`), so that a warning reads the same
//! as with `docker build`. A warning is a [`Diagnostic`] of severity
//! `Warning` whose `rule` is [`Rule::name`].
//!
//! Where each rule runs follows BuildKit:
//!
//! - rules about the text of the Dockerfile ([`check_parsed`]): instruction
//!   and stage-name casing, `FROM … AS` casing, `MAINTAINER`, duplicate and
//!   reserved stage names — for every stage, reachable or not;
//! - rules about what an instruction does (`UndefinedVar`, `JSONArgsRecommended`,
//!   `WorkdirRelativePath`, …) run in `convert` as the instruction is
//!   dispatched, with the variables and image configuration of that point —
//!   so, as in BuildKit, only for the stages the build reaches (all stages with
//!   [`crate::BuildOptions::all_stages`], which is what `--check` sets);
//! - `NoEmptyContinuation` is found by the parser.
//!
//! The configuration is BuildKit's: the `# check=` parser directive, replaced
//! by the `BUILDKIT_DOCKERFILE_CHECK` build arg when given, plus `# check=skip=`
//! comments directly above an instruction, which skip rules for that
//! instruction only.
//!
//! `CopyIgnoredFile` needs `.dockerignore`, which the frontend does not read:
//! the caller passes its rules in ([`crate::BuildOptions::dockerignore`]).
//! `InvalidDefinitionDescription` is experimental, as in BuildKit: it runs
//! only when `# check=experimental=` enables it, and `skip=` does not apply.

use std::collections::HashSet;

use crate::diagnostic::Diagnostic;
use crate::instructions::{Dockerfile, Instruction};
use crate::source::SourceFile;
use crate::syntax::Node;

/// A lint rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    StageNameCasing,
    FromAsCasing,
    NoEmptyContinuation,
    ConsistentInstructionCasing,
    DuplicateStageName,
    ReservedStageName,
    JsonArgsRecommended,
    MaintainerDeprecated,
    UndefinedArgInFrom,
    WorkdirRelativePath,
    UndefinedVar,
    MultipleInstructionsDisallowed,
    LegacyKeyValueFormat,
    RedundantTargetPlatform,
    SecretsUsedInArgOrEnv,
    InvalidDefaultArgInFrom,
    FromPlatformFlagConstDisallowed,
    ExposeProtoCasing,
    ExposeInvalidFormat,
    InvalidBaseImagePlatform,
    CopyIgnoredFile,
    InvalidDefinitionDescription,
}

impl Rule {
    /// Every rule kiln checks.
    pub const ALL: [Rule; 22] = [
        Rule::StageNameCasing,
        Rule::FromAsCasing,
        Rule::NoEmptyContinuation,
        Rule::ConsistentInstructionCasing,
        Rule::DuplicateStageName,
        Rule::ReservedStageName,
        Rule::JsonArgsRecommended,
        Rule::MaintainerDeprecated,
        Rule::UndefinedArgInFrom,
        Rule::WorkdirRelativePath,
        Rule::UndefinedVar,
        Rule::MultipleInstructionsDisallowed,
        Rule::LegacyKeyValueFormat,
        Rule::RedundantTargetPlatform,
        Rule::SecretsUsedInArgOrEnv,
        Rule::InvalidDefaultArgInFrom,
        Rule::FromPlatformFlagConstDisallowed,
        Rule::ExposeProtoCasing,
        Rule::ExposeInvalidFormat,
        Rule::InvalidBaseImagePlatform,
        Rule::CopyIgnoredFile,
        Rule::InvalidDefinitionDescription,
    ];

    /// Experimental rules run only when `# check=experimental=` names them.
    pub fn is_experimental(self) -> bool {
        self == Rule::InvalidDefinitionDescription
    }

    /// BuildKit's rule name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::StageNameCasing => "StageNameCasing",
            Rule::FromAsCasing => "FromAsCasing",
            Rule::NoEmptyContinuation => "NoEmptyContinuation",
            Rule::ConsistentInstructionCasing => "ConsistentInstructionCasing",
            Rule::DuplicateStageName => "DuplicateStageName",
            Rule::ReservedStageName => "ReservedStageName",
            Rule::JsonArgsRecommended => "JSONArgsRecommended",
            Rule::MaintainerDeprecated => "MaintainerDeprecated",
            Rule::UndefinedArgInFrom => "UndefinedArgInFrom",
            Rule::WorkdirRelativePath => "WorkdirRelativePath",
            Rule::UndefinedVar => "UndefinedVar",
            Rule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            Rule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
            Rule::RedundantTargetPlatform => "RedundantTargetPlatform",
            Rule::SecretsUsedInArgOrEnv => "SecretsUsedInArgOrEnv",
            Rule::InvalidDefaultArgInFrom => "InvalidDefaultArgInFrom",
            Rule::FromPlatformFlagConstDisallowed => "FromPlatformFlagConstDisallowed",
            Rule::ExposeProtoCasing => "ExposeProtoCasing",
            Rule::ExposeInvalidFormat => "ExposeInvalidFormat",
            Rule::InvalidBaseImagePlatform => "InvalidBaseImagePlatform",
            Rule::CopyIgnoredFile => "CopyIgnoredFile",
            Rule::InvalidDefinitionDescription => "InvalidDefinitionDescription",
        }
    }

    /// The rule with BuildKit's name `name`.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }

    /// BuildKit's one-line description of the rule.
    pub fn description(self) -> &'static str {
        match self {
            Rule::StageNameCasing => "Stage names should be lowercase",
            Rule::FromAsCasing => "The 'as' keyword should match the case of the 'from' keyword",
            Rule::NoEmptyContinuation => {
                "Empty continuation lines will become errors in a future release"
            }
            Rule::ConsistentInstructionCasing => {
                "All commands within the Dockerfile should use the same casing (either upper or lower)"
            }
            Rule::DuplicateStageName => "Stage names should be unique",
            Rule::ReservedStageName => "Reserved words should not be used as stage names",
            Rule::JsonArgsRecommended => {
                "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"
            }
            Rule::MaintainerDeprecated => {
                "The MAINTAINER instruction is deprecated, use a label instead to define an image author"
            }
            Rule::UndefinedArgInFrom => "FROM command must use declared ARGs",
            Rule::WorkdirRelativePath => {
                "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes"
            }
            Rule::UndefinedVar => "Variables should be defined before their use",
            Rule::MultipleInstructionsDisallowed => {
                "Multiple instructions of the same type should not be used in the same stage"
            }
            Rule::LegacyKeyValueFormat => {
                "Legacy key/value format with whitespace separator should not be used"
            }
            Rule::RedundantTargetPlatform => {
                "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"
            }
            Rule::SecretsUsedInArgOrEnv => {
                "Sensitive data should not be used in the ARG or ENV commands"
            }
            Rule::InvalidDefaultArgInFrom => {
                "Default value for global ARG results in an empty or invalid base image name"
            }
            Rule::FromPlatformFlagConstDisallowed => {
                "FROM --platform flag should not use a constant value"
            }
            Rule::ExposeProtoCasing => "Protocol in EXPOSE instruction should be lowercase",
            Rule::ExposeInvalidFormat => {
                "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release"
            }
            Rule::InvalidBaseImagePlatform => {
                "Base image platform does not match expected target platform"
            }
            Rule::CopyIgnoredFile => "Attempting to Copy file that is excluded by .dockerignore",
            Rule::InvalidDefinitionDescription => {
                "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment."
            }
        }
    }

    /// The documentation page of the rule (BuildKit has none for
    /// `InvalidBaseImagePlatform`).
    pub fn url(self) -> Option<&'static str> {
        let url = self.page();
        (!url.is_empty()).then_some(url)
    }

    fn page(self) -> &'static str {
        match self {
            Rule::StageNameCasing => {
                "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"
            }
            Rule::FromAsCasing => "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
            Rule::NoEmptyContinuation => {
                "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"
            }
            Rule::ConsistentInstructionCasing => {
                "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/"
            }
            Rule::DuplicateStageName => {
                "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/"
            }
            Rule::ReservedStageName => {
                "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/"
            }
            Rule::JsonArgsRecommended => {
                "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
            }
            Rule::MaintainerDeprecated => {
                "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
            }
            Rule::UndefinedArgInFrom => {
                "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"
            }
            Rule::WorkdirRelativePath => {
                "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/"
            }
            Rule::UndefinedVar => "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
            Rule::MultipleInstructionsDisallowed => {
                "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/"
            }
            Rule::LegacyKeyValueFormat => {
                "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/"
            }
            Rule::RedundantTargetPlatform => {
                "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/"
            }
            Rule::SecretsUsedInArgOrEnv => {
                "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"
            }
            Rule::InvalidDefaultArgInFrom => {
                "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/"
            }
            Rule::FromPlatformFlagConstDisallowed => {
                "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/"
            }
            Rule::ExposeProtoCasing => {
                "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/"
            }
            Rule::ExposeInvalidFormat => {
                "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/"
            }
            Rule::InvalidBaseImagePlatform => "",
            Rule::CopyIgnoredFile => {
                "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/"
            }
            Rule::InvalidDefinitionDescription => {
                "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/"
            }
        }
    }

    /// A warning of this rule about instruction `node`.
    pub fn at_node(self, file: &SourceFile, node: &Node, message: String) -> Diagnostic {
        self.mark(Diagnostic::at(file, node.offset, message).with_end_line(node.end_line))
    }

    /// `d` as a warning of this rule.
    pub fn mark(self, d: Diagnostic) -> Diagnostic {
        let mut d = d.warning(self.name(), "");
        d.url = self.url();
        d
    }
}

/// What `.dockerignore` excludes, for `CopyIgnoredFile`.
pub trait IgnoreRules: std::fmt::Debug + Send + Sync {
    /// Whether a COPY/ADD source from the build context (Go-cleaned, as
    /// written, wildcards included) is excluded, with BuildKit's
    /// `validateCopySourcePath` rules (none when the file has exceptions).
    fn excludes(&self, source: &str) -> bool;
}

/// Names BuildKit reserves: a stage cannot be referred to by them.
const RESERVED_STAGE_NAMES: [&str; 2] = ["context", "scratch"];

/// The rules about the Dockerfile's text, for every stage (BuildKit runs them
/// while typing instructions, before any stage is resolved).
pub fn check_parsed(file: &SourceFile, df: &Dockerfile) -> Vec<Diagnostic> {
    let mut out = check_instructions(file, df);
    out.extend(stage_names(file, df));
    out.extend(instruction_casing(file, df));
    out.sort_by_key(|w| w.line().unwrap_or(0));
    out
}

/// The rules BuildKit checks while typing each instruction: stage name
/// casing, `AS` casing, `MAINTAINER`, ARG and stage descriptions.
pub fn check_instructions(file: &SourceFile, df: &Dockerfile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let args = df
        .meta_args
        .iter()
        .chain(df.stages.iter().flat_map(|s| &s.commands));
    for cmd in args {
        if let Instruction::Arg(defs) = &cmd.instruction {
            let keys: Vec<&str> = defs.iter().map(|d| d.key.value.as_str()).collect();
            out.extend(definition_description(file, &cmd.node, "ARG", &keys));
        }
    }
    for stage in &df.stages {
        let node = &stage.node;
        // `FROM image AS Name`: node.args is [image, AS, Name].
        if let [_, as_kw, name] = node.args.as_slice() {
            if name.value != name.value.to_lowercase() {
                out.push(Rule::StageNameCasing.at_node(
                    file,
                    node,
                    format!("Stage name '{}' should be lowercase", name.value),
                ));
            }
            if !from_matches_as_case(&node.keyword, &as_kw.value) {
                out.push(Rule::FromAsCasing.at_node(
                    file,
                    node,
                    format!(
                        "'{}' and '{}' keywords' casing do not match",
                        as_kw.value, node.keyword
                    ),
                ));
            }
        }
        if let Some(name) = &stage.name {
            out.extend(definition_description(file, node, "FROM", &[name]));
        }
        for cmd in &stage.commands {
            if matches!(cmd.instruction, Instruction::Maintainer(_)) {
                out.push(Rule::MaintainerDeprecated.at_node(
                    file,
                    &cmd.node,
                    "Maintainer instruction is deprecated in favor of using label".to_owned(),
                ));
            }
        }
    }
    out
}

/// `ReservedStageName` and `DuplicateStageName` (BuildKit's
/// `validateStageNames`, once every instruction is typed).
fn stage_names(file: &SourceFile, df: &Dockerfile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    for stage in &df.stages {
        let node = &stage.node;
        if let Some(name) = &stage.name {
            if RESERVED_STAGE_NAMES.contains(&name.as_str()) {
                out.push(Rule::ReservedStageName.at_node(
                    file,
                    node,
                    format!(
                        "Stage name should not use the same name as reserved stage {}",
                        crate::quote::go_quote(name)
                    ),
                ));
            }
            if !names.insert(name) {
                out.push(Rule::DuplicateStageName.at_node(
                    file,
                    node,
                    format!(
                        "Duplicate stage name {}, stage names should be unique",
                        crate::quote::go_quote(name)
                    ),
                ));
            }
        }
    }
    out
}

/// `InvalidDefinitionDescription`: the comment line right above an ARG or a
/// named FROM should start with the name it describes (BuildKit's
/// `validateDefinitionDescription`).
fn definition_description(
    file: &SourceFile,
    node: &Node,
    instruction: &str,
    keys: &[&str],
) -> Option<Diagnostic> {
    let last = node.comments.last()?;
    let first_word = last.split(' ').next().unwrap_or("");
    let (first_key, more) = keys.split_first()?;
    if keys.contains(&first_word) {
        return None;
    }
    let example = if more.is_empty() {
        first_key
    } else {
        "<arg_key>"
    };
    Some(Rule::InvalidDefinitionDescription.at_node(
        file,
        node,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
    ))
}

/// BuildKit's `doesFromCaseMatchAsCase`: a mixed-case `FROM` is left to
/// `ConsistentInstructionCasing`.
fn from_matches_as_case(from: &str, as_kw: &str) -> bool {
    let lower = from == from.to_lowercase();
    let upper = from == from.to_uppercase();
    if lower {
        as_kw == as_kw.to_lowercase()
    } else if upper {
        as_kw == as_kw.to_uppercase()
    } else {
        true
    }
}

/// `ConsistentInstructionCasing`: every keyword in the majority's casing
/// (BuildKit's `validateCommandCasing`; ARGs before the first FROM are not
/// counted, and a tie counts as uppercase).
fn instruction_casing(file: &SourceFile, df: &Dockerfile) -> Vec<Diagnostic> {
    let nodes: Vec<&Node> = df
        .stages
        .iter()
        .flat_map(|s| std::iter::once(&s.node).chain(s.commands.iter().map(|c| &c.node)))
        .collect();
    let (mut lower, mut upper) = (0usize, 0usize);
    for n in &nodes {
        let k = &n.keyword;
        if *k == k.to_lowercase() {
            lower += 1;
        } else if *k == k.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    let mut out = Vec::new();
    for n in nodes {
        let k = &n.keyword;
        let correct = if majority_lower && *k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        out.push(Rule::ConsistentInstructionCasing.at_node(
            file,
            n,
            format!("Command '{k}' should match the case of the command majority ({correct})"),
        ));
    }
    out
}

/// `SecretsUsedInArgOrEnv`: whether `key` names sensitive data — one of its
/// `_`-separated words is a secret token, and none is an allowed token
/// (`public`, `file`, `version`): BuildKit's `getSecretsRegex`,
/// `(?i)(?:_|^)(?:token…)(?:_|$)`.
pub fn is_secret_key(key: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let has = |tokens: &[&str]| edge_words(key).iter().any(|w| tokens.contains(&w.as_str()));
    has(&DENY) && !has(&ALLOW)
}

/// The candidates `(?:_|^)TOKEN(?:_|$)` can match in `key`, lowercased: every
/// `_`-separated piece of the name.
fn edge_words(key: &str) -> Vec<String> {
    key.to_lowercase().split('_').map(str::to_owned).collect()
}

/// The option closest to `word` (edit distance below 3, case-sensitive,
/// first best wins; none if `word` is itself an option) — BuildKit's
/// `suggest.Search` with `caseSensitive`.
pub fn suggest<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<&str> = None;
    let mut min = 3;
    for o in options {
        if o == word {
            return None;
        }
        let d = crate::suggest::levenshtein(word, o);
        if d < min {
            best = Some(o);
            min = d;
        }
    }
    best
}

/// `ExposeProtoCasing` and `ExposeInvalidFormat` for one EXPOSE port spec
/// (`[ip:][hostPort:]containerPort[/proto]`, split as BuildKit's
/// `splitParts` splits it).
pub fn expose_findings(raw: &str) -> Vec<(Rule, String)> {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        0 => (String::new(), "", ""),
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let has_ip_or_host = !ip.is_empty() || !host.is_empty();
    let proto = container.split_once('/').map_or("", |(_, p)| p);
    let mut out = Vec::new();
    if proto != proto.to_lowercase() {
        out.push((
            Rule::ExposeProtoCasing,
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
        ));
    }
    if has_ip_or_host {
        out.push((
            Rule::ExposeInvalidFormat,
            format!(
                "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
            ),
        ));
    }
    out
}

/// Formats `UndefinedVar`'s message.
pub fn undefined_var_message(name: &str, suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("Usage of undefined variable '${name}' (did you mean ${s}?)"),
        None => format!("Usage of undefined variable '${name}'"),
    }
}

/// Formats `UndefinedArgInFrom`'s message.
pub fn undefined_arg_in_from_message(name: &str, suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("FROM argument '{name}' is not declared (did you mean {s}?)"),
        None => format!("FROM argument '{name}' is not declared"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_follow_buildkit_regex() {
        for k in [
            "api_key",
            "DATABASE_PASSWORD",
            "GITHUB_TOKEN",
            "secret_MESSAGE",
            "AUTH",
            "my_secret_thing",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "KEYBOARD",
            "PUBLIC_KEY",
            "key_file",
            "TOKEN_VERSION",
            "MONKEY",
            "PATH",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn suggestions_are_case_sensitive_and_close() {
        assert_eq!(suggest("FOOO", ["FOO", "BAR"]), Some("FOO"));
        assert_eq!(suggest("foo", ["FOO"]), None);
        assert_eq!(suggest("FOO", ["FOO", "FO"]), None);
        assert_eq!(suggest("XYZW", ["FOO"]), None);
    }

    #[test]
    fn rule_names_round_trip() {
        for r in Rule::ALL {
            assert_eq!(Rule::from_name(r.name()), Some(r));
            assert!(r.url().is_none_or(|u| u.ends_with('/')), "{}", r.name());
        }
        assert_eq!(
            Rule::from_name("JSONArgsRecommended"),
            Some(Rule::JsonArgsRecommended)
        );
    }
}
