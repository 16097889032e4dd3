//! Stages, the target and their dependencies (BuildKit's `toDispatchState`
//! before dispatch): global ARGs (seen only by FROM), one state per stage and
//! per image a `--from` names, `--build-context` replacements, the
//! dependencies of `COPY --from` and `RUN --mount from=`, and cycle detection.

use std::collections::BTreeSet;

use kiln_llb::{Platform, SourceLocation};
use kiln_reference::Reference;

use crate::contexts::{self, NamedContext};
use crate::diagnostic::Diagnostic;
use crate::instructions::{self, Command, Dockerfile, Instruction};
use crate::lint::{self, Rule};
use crate::mount;
use crate::quote::go_quote;
use crate::shell::{NoEnv, Processed};
use crate::suggest::did_you_mean;
use crate::syntax::{Node, Word};

use super::shared::{Converter, R, Shared};
use super::state::{Base, Cmd, EnvList, OutlineArgInfo};

/// `UndefinedArgInFrom`: variables in a FROM that no global ARG declares.
pub(super) fn report_undefined_from_args(
    cx: &mut Shared,
    node: &Node,
    unmatched: &BTreeSet<String>,
) {
    if unmatched.is_empty() {
        return;
    }
    let mut keys: Vec<&str> = cx
        .declared_args
        .iter()
        .map(String::as_str)
        .chain(cx.global_args.vars.keys().map(String::as_str))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut found = Vec::new();
    for name in unmatched {
        if keys.contains(&name.as_str()) {
            continue;
        }
        let hint = lint::suggest(name, keys.iter().copied());
        found.push(Rule::UndefinedArgInFrom.at_node(
            cx.file,
            node,
            lint::undefined_arg_in_from_message(name, hint),
        ));
    }
    for w in found {
        cx.lint(w);
    }
}

/// The rules about `FROM --platform`: undeclared ARGs, a redundant
/// `$TARGETPLATFORM`, a constant platform in a stage whose name does not
/// mention it (BuildKit's `reportRedundantTargetPlatform`,
/// `reportConstPlatformDisallowed`).
pub(super) fn lint_from_platform(cx: &mut Shared, stage: &instructions::Stage, p: &Processed) {
    let node = &stage.node;
    let Some(word) = &stage.platform else {
        return;
    };
    report_undefined_from_args(cx, node, &p.unmatched);
    if p.unmatched.is_empty()
        && p.matched.len() == 1
        && p.matched.contains("TARGETPLATFORM")
        && cx.global_args.get("TARGETPLATFORM") == Some(p.result.as_str())
    {
        cx.lint(Rule::RedundantTargetPlatform.at_node(
            cx.file,
            node,
            format!(
                "Setting platform to predefined {} in FROM is redundant as this is the default behavior",
                word.value
            ),
        ));
    }
    if p.matched.is_empty() && p.unmatched.is_empty() {
        let Ok(platform) = p.result.parse::<Platform>() else {
            return;
        };
        let name = stage.name.as_deref().unwrap_or("");
        if !name.contains(&platform.os) && !name.contains(&platform.architecture) {
            cx.lint(Rule::FromPlatformFlagConstDisallowed.at_node(
                cx.file,
                node,
                format!(
                    "FROM --platform flag should not use constant value {}",
                    go_quote(&p.result)
                ),
            ));
        }
    }
}

/// BuildKit's `wrapSuggestAny` for an error about a FROM value: ` (did you
/// mean X?)` for the first variable it did not find that is close to a
/// global ARG, else nothing.
fn suggest_unmatched(cx: &Shared, unmatched: &BTreeSet<String>) -> String {
    let mut keys: Vec<(&u64, &str)> = cx
        .global_args
        .vars
        .iter()
        .map(|(k, (seq, _))| (seq, k.as_str()))
        .collect();
    keys.sort_unstable();
    unmatched
        .iter()
        .find_map(|name| lint::suggest(name, keys.iter().map(|(_, k)| *k)))
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

/// `InvalidDefaultArgInFrom`: base names that are not valid references
/// when every global ARG has its default value (BuildKit's
/// `validateBaseImagesWithDefaultArgs`; substitution errors are left to
/// the conversion).
pub(super) fn check_default_base_names(cx: &mut Shared, df: &Dockerfile) {
    let mut env = cx.global_args.clone();
    for cmd in &df.meta_args {
        let Instruction::Arg(defs) = &cmd.instruction else {
            continue;
        };
        for def in defs {
            if let Some(d) = &def.default {
                let Ok(p) = cx.lex.process_word(&d.value, &env) else {
                    return;
                };
                env.set(&def.key.value, &p.result);
            }
        }
    }
    for stage in &df.stages {
        let Ok(p) = cx.lex.process_word(&stage.base.value, &env) else {
            return;
        };
        if Reference::parse_normalized(&p.result).is_err() {
            cx.lint(Rule::InvalidDefaultArgInFrom.at_node(
                cx.file,
                &stage.node,
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    stage.base.value
                ),
            ));
        }
    }
}

/// `# syntax=` names the frontend to use. kiln has one built in; it accepts
/// the official Dockerfile frontends and refuses others rather than build
/// with different semantics.
pub(super) fn check_syntax_directive(cx: &Shared, df: &Dockerfile) -> R<()> {
    let Some(d) = &df.ast.directives.syntax else {
        return Ok(());
    };
    let image = d.value.split_whitespace().next().unwrap_or("");
    let repo = Reference::parse_normalized(image)
        .map(|r| r.name())
        .unwrap_or_default();
    let official = matches!(
        repo.as_str(),
        "docker.io/docker/dockerfile" | "docker.io/docker/dockerfile-upstream"
    );
    let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
    if !official || tag.contains("labs") {
        let at = cx.file.line_start(d.line);
        return Err(cx.err_at(
            at,
            d.line,
            format!(
                "unsupported syntax directive {}: kiln builds with its own implementation of the stable docker/dockerfile:1 syntax and cannot run other frontends",
                go_quote(&d.value)
            ),
        ));
    }
    Ok(())
}

/// BuildKit's automatic platform args plus `TARGETSTAGE`.
pub(super) fn default_args(cx: &Shared, target: &str) -> EnvList {
    let bp = &cx.opts.build_platform;
    let tp = &cx.target_platform;
    let target = if target.is_empty() { "default" } else { target };
    let mut env = EnvList::default();
    let pairs = [
        ("BUILDPLATFORM", bp.format()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDOSVERSION", bp.os_version.clone()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", bp.variant.clone()),
        ("TARGETPLATFORM", tp.format_all()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETOSVERSION", tp.os_version.clone()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", tp.variant.clone()),
        ("TARGETSTAGE", target.to_owned()),
    ];
    for (k, v) in pairs {
        let v = cx.opts.build_args.get(k).cloned().unwrap_or(v);
        env.set(k, &v);
    }
    env
}

pub(super) fn eval_meta_args(cx: &mut Shared, meta: &[Command]) -> R<()> {
    for cmd in meta {
        let Instruction::Arg(defs) = &cmd.instruction else {
            continue;
        };
        for def in defs {
            cx.declared_args.insert(def.key.value.clone());
            let key = &def.key.value;
            let mut deps = BTreeSet::new();
            let value = match cx.opts.build_args.get(key) {
                Some(v) => Some(v.clone()),
                None => match &def.default {
                    Some(d) => {
                        let p = cx
                            .lex
                            .process_word(&d.value, &cx.global_args)
                            .map_err(|e| cx.err_at(d.offset, cmd.node.end_line, e.to_string()))?;
                        deps = p.matched;
                        if deps.remove(key)
                            && let Some(old) = cx.meta_outline.get(key)
                        {
                            deps.extend(old.deps.iter().cloned());
                        }
                        Some(p.result)
                    }
                    None => None,
                },
            };
            cx.meta_outline.insert(
                key.clone(),
                OutlineArgInfo {
                    value: value.clone().unwrap_or_default(),
                    description: crate::outline::doc_comment(&cmd.node.comments, key),
                    line: cmd.node.start_line,
                    deps,
                },
            );
            if let Some(v) = value {
                cx.global_args.set(key, &v);
            }
        }
    }
    Ok(())
}

pub(super) fn stage_names(conv: &Converter) -> Vec<String> {
    conv.stages.iter().filter_map(|s| s.name.clone()).collect()
}

pub(super) fn create_states(conv: &mut Converter, df: &Dockerfile) -> R<()> {
    for (i, stage) in df.stages.iter().enumerate() {
        let node = &stage.node;
        let expanded = conv
            .cx
            .lex
            .process_word(&stage.base.value, &conv.cx.global_args)
            .map_err(|e| {
                conv.cx
                    .err_at(stage.base.offset, node.end_line, e.to_string())
            })?;
        report_undefined_from_args(&mut conv.cx, node, &expanded.unmatched);
        if expanded.result.is_empty() {
            return Err(conv.cx.err_at(
                stage.base.offset,
                node.end_line,
                format!("base name ({}) should not be blank", stage.base.value),
            ));
        }
        let base_name = expanded.result;
        let base = if let Some(j) = conv.find_stage(&base_name) {
            Base::Stage(j)
        } else if base_name == "scratch" {
            Base::Scratch
        } else {
            let r = Reference::parse_normalized(&base_name).map_err(|e| {
                conv.cx.err_at(
                    stage.base.offset,
                    node.end_line,
                    format!("failed to parse stage name {}: {e}", go_quote(&base_name)),
                )
            })?;
            Base::Image(r.with_default_tag())
        };
        let mut st = conv.cx.new_stage(Some(i), base, stage.base.clone());
        st.outline.used.extend(expanded.matched.iter().cloned());
        if let Some(pw) = &stage.platform {
            let processed = conv
                .cx
                .lex
                .process_word(&pw.value, &conv.cx.global_args)
                .map_err(|e| {
                    conv.cx.err_at(
                        pw.offset,
                        node.end_line,
                        format!("failed to process arguments for platform: {e}"),
                    )
                })?;
            lint_from_platform(&mut conv.cx, stage, &processed);
            st.outline.used.extend(processed.matched.iter().cloned());
            let hint = suggest_unmatched(&conv.cx, &processed.unmatched);
            let p = processed.result;
            if p.is_empty() {
                return Err(conv.cx.err_at(
                    pw.offset,
                    node.end_line,
                    format!("empty platform value from expression {}{hint}", pw.value),
                ));
            }
            let platform: Platform = p.parse().map_err(|e| {
                conv.cx.err_at(
                    pw.offset,
                    node.end_line,
                    format!("failed to parse platform {}: {e}{hint}", pw.value),
                )
            })?;
            st.platform = Some(platform);
        }
        let ctx_platform = st
            .platform
            .clone()
            .unwrap_or_else(|| conv.cx.target_platform.clone());
        // `--build-context NAME=…` replaces the stage named NAME (with
        // its commands), or else the image the stage starts from.
        let replaced = match &stage.name {
            Some(n) => named_base(
                &mut conv.cx,
                n,
                &ctx_platform,
                stage.base.offset,
                node.end_line,
            )?,
            None => None,
        };
        if replaced.is_none()
            && matches!(st.base, Base::Image(_))
            && let Some(b) = named_base(
                &mut conv.cx,
                &base_name,
                &ctx_platform,
                stage.base.offset,
                node.end_line,
            )?
        {
            st.base = b;
        }
        // A duplicate name is a warning (`DuplicateStageName`, lint.rs);
        // as in BuildKit's `addState`, the name means the latest stage of
        // that name from here on.
        st.name = stage.name.clone();
        if let Some(n) = &stage.name {
            conv.cx.stage_index.insert(n.clone(), conv.stages.len());
        }
        st.display = stage.name.clone().unwrap_or_else(|| format!("stage-{i}"));
        st.location = conv.cx.location(node);
        st.ignore_cache = conv.cx.opts.no_cache
            || stage.name.as_ref().is_some_and(|n| {
                conv.cx
                    .opts
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            });
        let mut total = usize::from(matches!(st.base, Base::Image(_)));
        for cmd in &stage.commands {
            if matches!(
                cmd.instruction,
                Instruction::Add(_)
                    | Instruction::Copy(_)
                    | Instruction::Run(_)
                    | Instruction::Workdir(_)
            ) {
                total += 1;
            }
        }
        st.cmd_total = total;
        st.commands = stage
            .commands
            .iter()
            .map(|c| Cmd {
                command: c.clone(),
                sources: Vec::new(),
                onbuild: false,
            })
            .collect();
        if let Some(b) = replaced {
            // BuildKit dispatches nothing of a replaced stage, not even
            // the ONBUILD triggers of an image replacing it.
            st.base = b;
            st.commands.clear();
            st.cmd_total = 0;
            st.onbuild_init = true;
        }
        st.node = Some(node.clone());
        conv.stages.push(st);
    }
    for f in &conv.cx.opts.no_cache_filter {
        if conv.find_stage(f).is_none() {
            return Err(Diagnostic::unlocated(
                conv.cx.file.name(),
                format!("--no-cache-filter: no stage named {}", go_quote(f)),
            ));
        }
    }
    Ok(())
}

pub(super) fn resolve_target(conv: &Converter, df: &Dockerfile) -> R<usize> {
    let Some(t) = &conv.cx.opts.target else {
        return Ok(df.stages.len() - 1);
    };
    if let Some(i) = conv.find_stage(t) {
        return Ok(i);
    }
    let names = stage_names(conv);
    let mut msg = format!("target stage {} could not be found", go_quote(t));
    if let Some(s) = did_you_mean(t, names.iter().map(String::as_str)) {
        msg.push_str(&format!(" (did you mean {s}?)"));
    }
    let listed: Vec<String> = conv
        .stages
        .iter()
        .filter_map(|s| {
            s.name
                .as_ref()
                .map(|n| format!("{n} ({}:{})", conv.cx.file.name(), s.location.start_line))
        })
        .collect();
    if listed.is_empty() {
        msg.push_str("; the Dockerfile has no named stages");
    } else {
        msg.push_str(&format!("; stages: {}", listed.join(", ")));
    }
    Err(Diagnostic::unlocated(conv.cx.file.name(), msg))
}

/// The state a `--from`/`from=` value names: a stage, a stage index, or an
/// image (a new image-only state).
pub(super) fn source_state(
    conv: &mut Converter,
    from: &Word,
    end_line: usize,
    allow_index: bool,
) -> R<usize> {
    let value = from.value.as_str();
    if allow_index && let Ok(index) = value.parse::<i64>() {
        let stages = conv
            .stages
            .iter()
            .filter(|s| s.stage_index.is_some())
            .count();
        return usize::try_from(index)
            .ok()
            .filter(|i| *i < stages)
            .ok_or_else(|| {
                conv.cx.err_at(
                    from.offset,
                    end_line,
                    format!("invalid stage index {index}: the Dockerfile has {stages} stages"),
                )
            });
    }
    if let Some(i) = conv.find_stage(value) {
        return Ok(i);
    }
    let platform = conv.cx.target_platform.clone();
    let base = if value == "scratch" {
        Base::Scratch
    } else if let Some(b) = named_base(&mut conv.cx, value, &platform, from.offset, end_line)? {
        b
    } else {
        let r = Reference::parse_normalized(value).map_err(|e| {
            conv.cx.err_at(
                from.offset,
                end_line,
                format!(
                    "{} is neither a stage nor a valid image reference: {e}",
                    go_quote(value)
                ),
            )
        })?;
        Base::Image(r.with_default_tag())
    };
    let mut st = conv.cx.new_stage(None, base, from.clone());
    st.location = SourceLocation {
        file: conv.cx.file.name().to_owned(),
        start_line: u32::try_from(conv.cx.file.position(from.offset).line).unwrap_or(0),
        end_line: u32::try_from(end_line).unwrap_or(0),
    };
    conv.stages.push(st);
    Ok(conv.stages.len() - 1)
}

/// The states a command reads, as BuildKit's `toCommand`/`detectRunMount`.
pub(super) fn command_sources(conv: &mut Converter, cmd: &Command) -> R<Vec<Option<usize>>> {
    let end = cmd.node.end_line;
    match &cmd.instruction {
        Instruction::Copy(c) => {
            let Some(from) = &c.from else {
                return Ok(Vec::new());
            };
            let expanded = conv
                .cx
                .lex
                .process_word(&from.value, &NoEnv)
                .map_err(|e| conv.cx.err_at(from.offset, end, e.to_string()))?;
            if expanded.result != from.value {
                return Err(conv.cx.err_at(
                    from.offset,
                    end,
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                ));
            }
            Ok(vec![Some(source_state(conv, from, end, true)?)])
        }
        Instruction::Run(r) => {
            let mut out = Vec::new();
            for m in &r.mounts {
                let from =
                    mount::mount_from(&m.value).map_err(|e| conv.cx.err_at(m.offset, end, e))?;
                match from {
                    Some(v) if !v.is_empty() => {
                        let w = Word {
                            value: v,
                            offset: m.offset,
                        };
                        out.push(Some(source_state(conv, &w, end, false)?));
                    }
                    _ => {
                        // BuildKit registers an anonymous `scratch` state for
                        // such a mount; it only shows in progress names.
                        conv.cx.anonymous_states += 1;
                        out.push(None);
                    }
                }
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

pub(super) fn build_dependencies(conv: &mut Converter) -> R<()> {
    let n = conv.stages.len();
    for i in 0..n {
        let cmds = std::mem::take(&mut conv.stages[i].commands);
        let mut out = Vec::with_capacity(cmds.len());
        for mut c in cmds {
            c.sources = command_sources(conv, &c.command)?;
            for s in c.sources.iter().flatten() {
                conv.stages[i].deps.push((*s, c.command.node.offset));
            }
            out.push(c);
        }
        conv.stages[i].commands = out;
    }
    Ok(())
}

pub(super) fn check_cycles(conv: &Converter) -> R<()> {
    // Depth-first search over `deps`, as BuildKit's validateCircularDependency
    // (iterative: a chain of thousands of stages must not exhaust the stack).
    let n = conv.stages.len();
    let mut visited = vec![false; n];
    let mut on_path = vec![false; n];
    let visit = |root: usize, visited: &mut [bool], on_path: &mut [bool]| -> Option<Vec<usize>> {
        if visited[root] {
            return None;
        }
        visited[root] = true;
        on_path[root] = true;
        // (state, index of the next dependency to look at)
        let mut stack = vec![(root, 0usize)];
        let mut trail: Vec<usize> = Vec::new();
        while let Some(&mut (st, ref mut next)) = stack.last_mut() {
            let Some(&(dep, offset)) = conv.stages[st].deps.get(*next) else {
                on_path[st] = false;
                stack.pop();
                trail.pop();
                continue;
            };
            *next += 1;
            if on_path[dep] {
                trail.push(offset);
                return Some(trail);
            }
            if !visited[dep] {
                visited[dep] = true;
                on_path[dep] = true;
                trail.push(offset);
                stack.push((dep, 0));
            }
        }
        None
    };
    for s in 0..n {
        if let Some(trail) = visit(s, &mut visited, &mut on_path) {
            let at = trail.first().copied().unwrap_or(0);
            let lines: Vec<String> = trail
                .iter()
                .map(|o| format!("{}:{}", conv.cx.file.name(), conv.cx.file.position(*o).line))
                .collect();
            return Err(conv.cx.err_at(
                at,
                0,
                format!(
                    "circular dependency detected on stage: {} (through {})",
                    conv.stages[s].display_name(),
                    lines.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn reachable_from(conv: &Converter, target: usize) -> Vec<bool> {
    if conv.cx.opts.all_stages {
        return vec![true; conv.stages.len()];
    }
    let mut seen = vec![false; conv.stages.len()];
    let mut stack = vec![target];
    while let Some(s) = stack.pop() {
        if std::mem::replace(&mut seen[s], true) {
            continue;
        }
        if let Base::Stage(b) = conv.stages[s].base {
            stack.push(b);
        }
        stack.extend(conv.stages[s].deps.iter().map(|(d, _)| *d));
    }
    seen
}

/// The base a `--build-context` named `name` gives, if any.
pub(super) fn named_base(
    cx: &mut Shared,
    name: &str,
    platform: &Platform,
    offset: usize,
    end_line: usize,
) -> R<Option<Base>> {
    if cx.opts.named_contexts.is_empty() {
        return Ok(None);
    }
    let Some(key) = contexts::context_key(name) else {
        return Ok(None);
    };
    let Some((matched, nc)) = contexts::lookup(&cx.opts.named_contexts, &key, platform) else {
        return Ok(None);
    };
    cx.used_contexts.insert(matched.to_owned());
    Ok(Some(match nc {
        NamedContext::Scratch => Base::Scratch,
        NamedContext::Image { reference } => {
            let r = Reference::parse_normalized(reference).map_err(|e| {
                cx.err_at(
                    offset,
                    end_line,
                    format!("--build-context {key}: invalid image reference {reference}: {e}"),
                )
            })?;
            Base::Image(r.with_default_tag())
        }
        other => Base::Named(key, other.clone()),
    }))
}
