//! Typed instructions → build graph: stages, ARG scoping, substitution, and one
//! graph vertex per filesystem change.
//!
//! This follows BuildKit's `dockerfile2llb` step by step, and is split as it
//! is:
//!
//! - `stages`: global ARGs are evaluated first and seen only by FROM lines;
//!   stages are resolved, their dependencies (`FROM <stage>`, `COPY --from`,
//!   `RUN --mount=from=`) collected and checked for cycles; the target.
//! - `base`: base images resolved through the [`ImageResolver`], named
//!   contexts, ONBUILD triggers.
//! - `dispatch`: only the stages the target needs are dispatched, in
//!   Dockerfile order; each instruction is expanded with the environment of
//!   the stage at that point and handed to its family, which either edits the
//!   image configuration or adds a vertex: `copy` (COPY, ADD), `run` and
//!   `run_mount` (RUN and its mounts, secrets, SSH), `env` (ENV, ARG, LABEL),
//!   `workdir` (WORKDIR, USER), `config` (CMD, ENTRYPOINT, HEALTHCHECK, …).
//! - `finish`: the stage list, the pruned graph, `--call outline`.
//! - `lint_config`: which lint rules run (`# check=`).
//!
//! The stages live in one list beside the state they share (`shared`); a
//! stage is dispatched through a split borrow (`step::Step`: `&mut Stage`,
//! `&mut Shared`, and the other stages read-only). No file of this module
//! imports this one, and the imports between them form no circle
//! (`.ci/check-module-cycles`).

mod base;
mod config;
mod copy;
mod dispatch;
mod env;
mod epoch;
mod finish;
mod lint_config;
mod options;
mod run;
mod run_mount;
mod shared;
mod stages;
mod state;
mod step;
mod workdir;

use crate::diagnostic::{Diagnostic, Severity};
use crate::instructions::Dockerfile;
use crate::lint;
use crate::source::SourceFile;

pub use self::lint_config::{CheckConfig, LintConfig};
pub use self::options::{BuildOptions, CheckReport, Plan};
pub use crate::resolver::{ImageResolver, Offline, Resolution, ResolvedImage, StaticResolver};

use self::options::builtin_arg_note;
use self::shared::{Converter, R};

/// Plans the build of `dockerfile` (already typed) with `opts`.
pub fn convert(
    file: &SourceFile,
    df: Dockerfile,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, Diagnostic> {
    let mut conv = Converter::new(file, &df, opts, resolver)?;
    run(&mut conv, df)
}

/// Lints `dockerfile` the way BuildKit's `DockerfileLint` does: the build is
/// planned (every stage when no `--target` is given) and the warnings are
/// kept even when planning fails.
pub fn check(
    file: &SourceFile,
    df: Dockerfile,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> CheckReport {
    let mut opts = opts.clone();
    opts.all_stages = opts.target.is_none();
    let mut conv = match Converter::new(file, &df, &opts, resolver) {
        Ok(conv) => conv,
        Err(e) => {
            return CheckReport {
                warnings: Vec::new(),
                error: Some(e),
            };
        }
    };
    match run(&mut conv, df) {
        Ok(plan) => CheckReport {
            warnings: plan.warnings,
            error: None,
        },
        Err(mut e) => {
            // The report lists the warnings itself.
            e.notes.clear();
            let mut warnings = std::mem::take(&mut conv.cx.warnings);
            warnings.extend(conv.cx.lints.take());
            CheckReport {
                warnings,
                error: Some(e),
            }
        }
    }
}

fn run(conv: &mut Converter, df: Dockerfile) -> R<Plan> {
    let cx = &mut conv.cx;
    if df.stages.is_empty() {
        let at = df.ast.nodes.last().map_or(0, |n| n.offset);
        return Err(cx.err_at(
            at,
            0,
            "dockerfile contains no stages to build: the Dockerfile has no FROM instruction",
        ));
    }
    stages::check_syntax_directive(cx, &df)?;
    cx.lints.config = LintConfig::new(cx.file, &df.ast, cx.opts)?;
    // Parse-time rules and the parser's own (NoEmptyContinuation).
    let parsed = lint::check_parsed(cx.file, &df);
    let (rules, notes): (Vec<Diagnostic>, Vec<Diagnostic>) = std::mem::take(&mut cx.warnings)
        .into_iter()
        .partition(|w| w.rule.is_some());
    cx.warnings = notes;
    for w in rules.into_iter().chain(parsed) {
        cx.lint(w);
    }
    for (k, v) in &cx.opts.build_args {
        if let Some(note) = builtin_arg_note(k)
            && !note.is_empty()
        {
            cx.warnings.push(Diagnostic {
                severity: Severity::Warning,
                ..Diagnostic::unlocated(
                    cx.file.name(),
                    format!("build-arg {k}={v} has no effect: {note}"),
                )
            });
        }
    }

    let target_name = match &cx.opts.target {
        Some(t) => t.to_lowercase(),
        None => df
            .stages
            .last()
            .and_then(|s| s.name.clone())
            .unwrap_or_default(),
    };
    cx.global_args = stages::default_args(cx, &target_name);
    stages::check_default_base_names(cx, &df);
    stages::eval_meta_args(cx, &df.meta_args)?;
    epoch::resolve(conv, &df)?;
    stages::create_states(conv, &df)?;
    let target = stages::resolve_target(conv, &df)?;
    stages::build_dependencies(conv)?;
    stages::check_cycles(conv)?;
    // Progress names drop the stage name when the build has one state
    // (counting what BuildKit counts: mounts without `from=` too).
    if conv.stages.len() + conv.cx.anonymous_states == 1 {
        conv.stages[0].display.clear();
    }
    let reachable = base::resolve_stages(conv, target)?;
    dispatch::dispatch_all(conv, &reachable)?;
    let cx = &mut conv.cx;
    let lints = cx.lints.take();
    cx.warnings.splice(0..0, lints);
    if cx.lints.config.file.error {
        let mut rules: Vec<&str> = cx.warnings.iter().filter_map(|w| w.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        if let Some(first) = cx.warnings.iter().find(|w| w.rule.is_some()) {
            let mut e = first.clone();
            e.severity = Severity::Error;
            e.rule = None;
            e.url = None;
            e.notes = cx
                .warnings
                .iter()
                .filter(|w| w.rule.is_some())
                .cloned()
                .collect();
            // BuildKit's words (linter.go); the warnings, listed with the
            // error, say what each rule found.
            e.message = format!("lint violation found for rules: {}", rules.join(", "));
            return Err(e);
        }
    }
    finish::finish(conv, target, &reachable)
}
