//! `SOURCE_DATE_EPOCH` as the Dockerfile frontend resolves it (BuildKit's
//! `epoch.go`, Dockerfile frontend 1.24): from `--build-arg`, or else from
//! the Dockerfile's own global `ARG SOURCE_DATE_EPOCH=…` default. A number
//! is the epoch; an empty `--build-arg` resets a Dockerfile default.
//!
//! BuildKit also takes the time from a source: `context` (the build
//! context's git commit or HTTP `Last-Modified`, which the caller fetched
//! and gives as `BuildOptions::context_epoch`; nothing for a local
//! directory: `BuildOptions::local_context`), a named context, or a
//! stage made of one remote `ADD` (`FROM scratch` plus ARGs, checked as
//! BuildKit checks it). The time of a named context's or such a stage's
//! source comes from the caller ([`ImageResolver::source_time`]): an HTTP
//! `Last-Modified` or the newest file of the archive, a git commit's time;
//! a local directory or an image has none. Any other value is invalid.
//!
//! [`ImageResolver::source_time`]: crate::resolver::ImageResolver::source_time
//!
//! The resolved value replaces the build arg and the global ARG, so a
//! stage's `ARG SOURCE_DATE_EPOCH` sees it, and goes to the worker in
//! [`Definition::source_date_epoch`](kiln_llb::Definition).

use crate::contexts::{self, NamedContext};
use crate::diagnostic::Diagnostic;
use crate::instructions::{self, Dockerfile, Instruction};
use crate::resolver::TimedSource;
use crate::syntax::Node;

use super::copy;
use super::shared::{Converter, R, Shared};
use super::state::EnvList;

use super::options::SOURCE_DATE_EPOCH as KEY;

/// Resolves the build's epoch into `conv.cx.epoch` and rewrites the
/// build arg and global ARG to its value (BuildKit's `setBuildArgValue`).
pub(super) fn resolve(conv: &mut Converter, df: &Dockerfile) -> R<()> {
    let cx = &mut conv.cx;
    let from_build_arg = cx.opts.build_args.get(KEY);
    let (value, default_at) = match from_build_arg {
        Some(v) => (v.clone(), None),
        None => match cx.global_args.get(KEY).filter(|v| !v.is_empty()) {
            Some(v) => (v.to_owned(), default_node(df)),
            None => return Ok(()),
        },
    };
    // `context` names the main context's time; a local directory has none.
    let epoch = if value.is_empty() {
        None
    } else if value == "context" && (cx.opts.local_context || cx.opts.context_epoch.is_some()) {
        cx.opts.context_epoch
    } else {
        parse(cx, df, &value, default_at)?
    };
    let formatted = epoch.map(|e| e.to_string());
    if from_build_arg.is_some() {
        cx.epoch_arg = Some(formatted.clone());
    }
    if cx.global_args.get(KEY).is_some() {
        match &formatted {
            Some(v) => cx.global_args.set(KEY, v),
            None => cx.global_args.remove(KEY),
        }
    }
    cx.epoch = epoch;
    Ok(())
}

/// The last global `ARG SOURCE_DATE_EPOCH=…` (where a bad default is
/// reported).
fn default_node(df: &Dockerfile) -> Option<&Node> {
    df.meta_args
        .iter()
        .filter(|c| match &c.instruction {
            Instruction::Arg(defs) => defs
                .iter()
                .any(|d| d.key.value == KEY && d.default.is_some()),
            _ => false,
        })
        .map(|c| &c.node)
        .next_back()
}

/// A number, or the time of the source `value` names (`None`: it has none).
fn parse(cx: &Shared, df: &Dockerfile, value: &str, at: Option<&Node>) -> R<Option<i64>> {
    // Go's strconv.ParseInt(v, 10, 64): an optional sign and digits.
    if let Ok(n) = value.parse::<i64>() {
        return Ok(Some(n));
    }
    let err = |msg: String| match at {
        Some(n) => cx.err_node(n, msg),
        None => Diagnostic::unlocated(cx.file.name(), msg),
    };
    let unsupported = |what: String| {
        err(format!(
            "SOURCE_DATE_EPOCH={value} is not supported yet: kiln cannot take the time from {what}"
        ))
    };
    if value == "context" {
        return Err(unsupported(
            "the build context's source (its git commit or HTTP Last-Modified)".into(),
        ));
    }
    let time_of = |source: TimedSource| {
        cx.resolver
            .source_time(&source)
            .map_err(|e| err(format!("SOURCE_DATE_EPOCH={value}: {e}")))
    };
    let platform = cx.target_platform.clone();
    if let Some(key) = contexts::context_key(value)
        && let Some((_, named)) = contexts::lookup(&cx.opts.named_contexts, &key, &platform)
    {
        return match named {
            NamedContext::Http { url } => time_of(TimedSource::Http { url: url.clone() }),
            NamedContext::Git {
                remote, git_ref, ..
            } => time_of(TimedSource::Git {
                remote: remote.clone(),
                git_ref: git_ref.clone(),
                checksum: String::new(),
            }),
            // BuildKit finds no source metadata for these.
            NamedContext::Local { .. }
            | NamedContext::Image { .. }
            | NamedContext::Resolved { .. }
            | NamedContext::Scratch => Ok(None),
        };
    }
    if let Some(stage) = df.stages.iter().find(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(value))
    }) {
        let source = source_stage(cx, stage).map_err(|msg| cx.err_node(&stage.node, msg))?;
        return time_of(source);
    }
    Err(err(format!("invalid SOURCE_DATE_EPOCH: {value}")))
}

/// BuildKit's `sourceDateEpochStageSource`: the stage a SOURCE_DATE_EPOCH
/// names is `FROM scratch`, ARGs and exactly one remote ADD, whose source
/// this returns.
fn source_stage(cx: &Shared, stage: &instructions::Stage) -> Result<TimedSource, String> {
    let mut env: EnvList = cx.global_args.clone();
    env.remove(KEY);
    let base = cx
        .lex
        .process_word(&stage.base.value, &env)
        .map_err(|e| {
            format!(
                "failed to process source stage base name {:?}: {e}",
                stage.base.value
            )
        })?
        .result;
    if base != "scratch" {
        return Err("SOURCE_DATE_EPOCH stage must use FROM scratch".into());
    }
    let mut source = None;
    for cmd in &stage.commands {
        match &cmd.instruction {
            Instruction::Arg(defs) => {
                for def in defs {
                    if let Some(v) = cx.opts.build_args.get(&def.key.value) {
                        env.set(&def.key.value, v);
                    } else if let Some(d) = &def.default {
                        let v = cx
                            .lex
                            .process_word(&d.value, &env)
                            .map_err(|e| e.to_string())?;
                        env.set(&def.key.value, &v.result);
                    }
                }
            }
            Instruction::Add(add) => {
                if source.is_some() {
                    return Err(
                        "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD".into(),
                    );
                }
                if !add.paths.inline.is_empty() || add.paths.sources.len() != 1 {
                    return Err(
                        "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source".into(),
                    );
                }
                let src = cx
                    .lex
                    .process_word(&add.paths.sources[0].value, &env)
                    .map_err(|e| e.to_string())?
                    .result;
                let checksum = match &add.checksum {
                    Some(ck) => {
                        cx.lex
                            .process_word(&ck.value, &env)
                            .map_err(|e| e.to_string())?
                            .result
                    }
                    None => String::new(),
                };
                if copy::is_http(&src) {
                    if !checksum.is_empty() {
                        copy::check_digest(&checksum)?;
                    }
                    source = Some(TimedSource::Http { url: src });
                } else if let Some(g) = crate::gitref::parse(&src)? {
                    source = Some(TimedSource::Git {
                        remote: g.remote,
                        git_ref: g.git_ref,
                        checksum: if checksum.is_empty() {
                            g.checksum
                        } else {
                            checksum
                        },
                    });
                } else {
                    return Err(
                        "SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD".into(),
                    );
                }
            }
            _ => {
                return Err(format!(
                    "SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported {} instruction",
                    cmd.node.keyword.to_lowercase()
                ));
            }
        }
    }
    source.ok_or_else(|| "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD".into())
}
