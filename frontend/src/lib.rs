//! `kiln-frontend`: Dockerfile → build graph.
//!
//! The frontend is a pure function from a Dockerfile's text and the build
//! options to a [`kiln_llb::Definition`]. It is split the way BuildKit splits its
//! Dockerfile frontend, because that is the shape of the problem:
//!
//! 1. [`syntax`]: text → syntax tree (directives, comments, continuation lines,
//!    heredocs, JSON or shell forms). Every word keeps its byte offset so errors
//!    point at a line and column.
//! 2. [`instructions`]: syntax tree → typed instructions grouped into stages;
//!    flags and argument counts are checked here.
//! 3. [`mod@convert`]: stages → graph. ARG scoping, variable substitution
//!    ([`shell`]), stage dependencies, `--target` pruning, ONBUILD triggers, and
//!    the image configuration each stage ends with.
//!
//! Base images are the one thing the frontend cannot know by itself (their ENV,
//! WORKDIR and ONBUILD take part in the build). The caller passes an
//! [`ImageResolver`]; [`Offline`] resolves nothing, and planning still works.
//!
//! Architecture invariant: this crate performs no I/O — no filesystem, network,
//! clock or environment access. Everything comes in through arguments. (Checked
//! by the `disallowed-methods` list in `clippy.toml`.)
//!
//! Architecture invariant: bad input is a [`Diagnostic`] with a line and column,
//! never a panic. The parser is fuzzed (`fuzz/`).

pub mod chmod;
pub mod contexts;
pub mod convert;
pub mod diagnostic;
pub mod duration;
pub mod expose;
pub mod gitref;
pub mod instructions;
pub mod kv;
pub mod lint;
pub mod mount;
pub mod outline;
pub mod paths;
pub mod quote;
pub mod resolver;
pub mod shell;
pub mod signal;
pub mod source;
mod suggest;
pub mod syntax;

pub use contexts::NamedContext;
pub use convert::{BuildOptions, CheckConfig, CheckReport, Plan};
pub use diagnostic::{Diagnostic, Location, Severity};
pub use instructions::Dockerfile;
pub use resolver::{
    ImageResolver, Offline, Resolution, ResolvedImage, StaticResolver, TimedSource,
};
pub use source::SourceFile;

/// The version of this Dockerfile frontend (the `kiln-frontend` crate's):
/// what provenance records as `dockerfileVersion`, where BuildKit records
/// its Dockerfile frontend's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// BuildKit's first check of a Dockerfile: it has some bytes (one with only
/// comments or blank lines is the parser's "file with no instructions").
fn check_not_empty(file: &SourceFile) -> Result<(), Diagnostic> {
    if file.text().is_empty() {
        return Err(Diagnostic::unlocated(
            file.name(),
            "the Dockerfile cannot be empty",
        ));
    }
    Ok(())
}

/// Parses `file` into typed stages (no substitution, no graph).
pub fn parse(file: &SourceFile) -> Result<Dockerfile, Diagnostic> {
    let ast = syntax::parse(file)?;
    instructions::from_ast(file, ast)
}

/// Plans the build of `file`: parse, type, convert.
pub fn plan(
    file: &SourceFile,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, Diagnostic> {
    check_not_empty(file)?;
    let df = parse(file)?;
    convert::convert(file, df, opts, resolver)
}

/// Lints `file` (`kiln build --check`): the warnings of every stage, and the
/// error that planning stopped at, if any.
pub fn check(file: &SourceFile, opts: &BuildOptions, resolver: &dyn ImageResolver) -> CheckReport {
    if let Err(e) = check_not_empty(file) {
        return CheckReport {
            warnings: Vec::new(),
            error: Some(e),
        };
    }
    let ast = match syntax::parse(file) {
        Ok(ast) => ast,
        Err(e) => {
            return CheckReport {
                warnings: Vec::new(),
                error: Some(e),
            };
        }
    };
    match instructions::from_ast(file, ast.clone()) {
        Ok(df) => convert::check(file, df, opts, resolver),
        Err(e) => {
            // As BuildKit, the warnings of the instructions typed before the
            // one that failed are still reported (the parser's, and the rules
            // checked while typing; not those that need the whole file).
            let failed_at = e.line().unwrap_or(usize::MAX);
            let config = match convert::LintConfig::new(file, &ast, opts) {
                Ok(c) => c,
                Err(config_error) => {
                    return CheckReport {
                        warnings: Vec::new(),
                        error: Some(config_error),
                    };
                }
            };
            let mut before = ast;
            before.nodes.retain(|n| n.end_line < failed_at);
            let mut warnings = before.warnings.clone();
            if let Ok(df) = instructions::from_ast(file, before) {
                warnings.extend(lint::check_instructions(file, &df));
            }
            warnings.retain(|w| config.keeps(w));
            CheckReport {
                warnings,
                error: Some(e),
            }
        }
    }
}
