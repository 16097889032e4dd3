//! The end of planning: warnings about unused build args and contexts, the
//! target image's labels and platform, the stage list and the pruned graph
//! (BuildKit's end of `toDispatchState`), and `--call outline`
//! (`dispatchState.Outline`).

use std::collections::BTreeSet;

use kiln_llb::{Definition, Graph, SbomExtras, Stage as LlbStage, StageBase};

use crate::contexts::NamedContext;
use crate::diagnostic::{Diagnostic, Severity};
use crate::outline::{self, Outline, OutlineArg, OutlineMount};

use super::options::{PROXY_ARGS, Plan, SBOM_SCAN_CONTEXT, SBOM_SCAN_STAGE, builtin_arg_note};
use super::shared::{Converter, R};
use super::state::Base;

pub(super) fn finish(conv: &mut Converter, target: usize, reachable: &[bool]) -> R<Plan> {
    let cx = &mut conv.cx;
    // Build args nobody declared.
    let unused: Vec<&str> = cx
        .opts
        .build_args
        .keys()
        .filter(|k| {
            !cx.declared_args.contains(*k)
                && !PROXY_ARGS.contains(&k.as_str())
                && builtin_arg_note(k).is_none()
        })
        .map(String::as_str)
        .collect();
    if !unused.is_empty() {
        cx.warnings.push(Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::unlocated(
                cx.file.name(),
                format!(
                    "one or more build-args [{}] were not consumed",
                    unused.join(" ")
                ),
            )
        });
    }

    // Named contexts nothing refers to (BuildKit ignores them silently).
    for name in cx.opts.named_contexts.keys() {
        if !cx.used_contexts.contains(name) {
            cx.warnings.push(Diagnostic {
                severity: Severity::Warning,
                ..Diagnostic::unlocated(
                    cx.file.name(),
                    format!(
                        "--build-context {name}: no stage, FROM or --from of the build names it"
                    ),
                )
            });
        }
    }

    // The target image: --label, platform.
    let st = &mut conv.stages[target];
    st.image.labels.extend(cx.opts.labels.clone());
    let tp = &cx.target_platform;
    st.image.platform = match st.image.platform.take() {
        // An explicit --platform sets the OS and architecture; the base's
        // variant and OS version stay when it names neither and the OS and
        // architecture are the same (BuildKit's end of toDispatchState).
        Some(mut p) if !cx.implicit_target => {
            let same = p.os == tp.os && p.architecture == tp.architecture;
            p.os = tp.os.clone();
            p.architecture = tp.architecture.clone();
            if !tp.variant.is_empty() || !same {
                p.variant = tp.variant.clone();
            }
            if !tp.os_version.is_empty() || !same {
                p.os_version = tp.os_version.clone();
            }
            Some(p.normalized())
        }
        Some(p) => Some(p),
        None => Some(tp.clone()),
    };

    let stages: Vec<LlbStage> = conv
        .stages
        .iter()
        .enumerate()
        .filter(|(i, s)| reachable[*i] && s.stage_index.is_some())
        .map(|(_, s)| LlbStage {
            name: s.display_name(),
            index: s.stage_index.unwrap_or(0),
            platform: cx.platform_of(s),
            base: match &s.base {
                Base::Scratch => StageBase::Scratch,
                Base::Stage(b) => StageBase::Stage {
                    name: conv.stages[*b].display_name(),
                },
                Base::Image(r) => StageBase::Image {
                    reference: r.to_string(),
                    digest: s.image_digest.clone(),
                },
                Base::Named(_, NamedContext::Resolved { reference, .. }) => StageBase::Image {
                    reference: reference.clone(),
                    digest: s.image_digest.clone(),
                },
                Base::Named(..) => StageBase::Scratch,
            },
            root: s.root,
            config: s.image.clone(),
            location: s.location.clone(),
        })
        .collect();
    let target_stage = stages
        .iter()
        .position(|s| Some(s.index) == conv.stages[target].stage_index)
        .unwrap_or(stages.len().saturating_sub(1));
    let root = conv.stages[target].root;
    let graph = match root {
        Some(r) => cx.graph.pruned(&[r]),
        None => Graph::new(),
    };
    let context_paths = if cx.ctx_paths.contains("/") {
        vec![".".to_owned()]
    } else {
        cx.ctx_paths
            .iter()
            .map(|p| p.trim_start_matches('/').to_owned())
            .collect()
    };
    let sbom_extras = sbom_extras(conv, target, reachable);
    let cx = &mut conv.cx;
    let warnings = std::mem::take(&mut cx.warnings);
    let source_date_epoch = cx.epoch;
    Ok(Plan {
        outline: outline(conv, target),
        definition: Definition {
            graph,
            target: root,
            target_stage,
            stages,
            context_paths,
            source_date_epoch,
            sbom_extras,
        },
        warnings,
    })
}

/// BuildKit's `isEnabledForStage`: a Go boolean, or a comma-separated list
/// of stage names.
fn enabled_for_stage(stage: &str, value: &str) -> bool {
    match crate::mount::parse_go_bool(value) {
        Some(b) => b,
        None => value.split(',').any(|s| s == stage),
    }
}

/// The extra SBOM scan targets (BuildKit's `Dockerfile2LLB`): the context
/// when the target asks for it (`BUILDKIT_SBOM_SCAN_CONTEXT`), and every
/// other stage the target needs that asks for a scan
/// (`BUILDKIT_SBOM_SCAN_STAGE`). Each stage reads the global value of the
/// argument, then its own `ARG`s; a build argument counts only through a
/// declaration, as any other. An unnamed stage's name is empty there.
fn sbom_extras(conv: &Converter, target: usize, reachable: &[bool]) -> SbomExtras {
    let asks = |i: usize, key: &str| {
        let st = &conv.stages[i];
        let name = st.name.as_deref().unwrap_or_default();
        let mut on = conv
            .cx
            .global_args
            .get(key)
            .is_some_and(|v| enabled_for_stage(name, v));
        for (k, v) in &st.build_args {
            if k == key
                && let Some(v) = v
            {
                on = enabled_for_stage(name, v);
            }
        }
        on
    };
    let mut extras = SbomExtras {
        context: asks(target, SBOM_SCAN_CONTEXT),
        ..SbomExtras::default()
    };
    let mut roots = Vec::new();
    for (i, st) in conv.stages.iter().enumerate() {
        if i == target || !reachable[i] || st.stage_index.is_none() {
            continue;
        }
        if asks(i, SBOM_SCAN_STAGE) {
            extras.stages.push((st.display_name(), st.root));
            roots.extend(st.root);
        }
    }
    if !roots.is_empty() {
        extras.graph = conv.cx.graph.pruned(&roots);
    }
    extras
}

/// `--call outline` for state `target`: the ARGs it and the stages it
/// depends on use, with their values and descriptions, and the secrets and
/// SSH sockets their RUN steps mount (BuildKit's `dispatchState.Outline`;
/// the first stage met in target, base, dependencies order wins).
fn outline(conv: &Converter, target: usize) -> Outline {
    let mut out = Outline::default();
    if let Some(node) = &conv.stages[target].node {
        out.name = conv.stages[target].name.clone().unwrap_or_default();
        out.description = outline::doc_comment(&node.comments, &out.name);
    }
    let mut seen_args = BTreeSet::new();
    let mut seen_secrets = BTreeSet::new();
    let mut seen_ssh = BTreeSet::new();
    let mut seen_states = vec![false; conv.stages.len()];
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen_states[i], true) {
            continue;
        }
        let st = &conv.stages[i];
        let info = |k: &str| {
            st.outline
                .args
                .get(k)
                .or_else(|| conv.cx.meta_outline.get(k))
        };
        // Used ARGs, and the global ARGs their defaults refer to.
        let mut used = BTreeSet::new();
        let mut todo: Vec<&String> = st.outline.used.iter().collect();
        while let Some(k) = todo.pop() {
            if used.insert(k.clone())
                && let Some(a) = info(k)
            {
                todo.extend(a.deps.iter());
            }
        }
        for k in used {
            if let Some(a) = info(&k)
                && seen_args.insert(k.clone())
            {
                out.args.push(OutlineArg {
                    name: k,
                    value: a.value.clone(),
                    description: a.description.clone(),
                    line: a.line,
                });
            }
        }
        for (list, seen, found) in [
            (&mut out.secrets, &mut seen_secrets, &st.outline.secrets),
            (&mut out.ssh, &mut seen_ssh, &st.outline.ssh),
        ] {
            for (id, (required, line)) in found {
                if seen.insert(id.clone()) {
                    list.push(OutlineMount {
                        name: id.clone(),
                        required: *required,
                        line: *line,
                    });
                }
            }
        }
        // Pre-order: this state, its base, then its dependencies.
        stack.extend(st.deps.iter().rev().map(|(d, _)| *d));
        if let Base::Stage(b) = st.base {
            stack.push(b);
        }
    }
    out.args.sort_by_key(|a| a.line);
    out.secrets.sort_by_key(|a| a.line);
    out.ssh.sort_by_key(|a| a.line);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::{BuildOptions, Offline, SourceFile};

    /// The extras of `dockerfile` with `args`: (context, stage names).
    fn extras(dockerfile: &str, args: &[(&str, &str)]) -> (bool, Vec<String>) {
        let file =
            SourceFile::from_bytes("Dockerfile", dockerfile.as_bytes().to_vec()).expect("UTF-8");
        let opts = BuildOptions {
            build_args: args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..BuildOptions::default()
        };
        let plan = crate::plan(&file, &opts, &Offline).unwrap_or_else(|e| panic!("{}", e.render()));
        let e = plan.definition.sbom_extras;
        (e.context, e.stages.into_iter().map(|(n, _)| n).collect())
    }

    const STAGES: &str = "\
ARG BUILDKIT_SBOM_SCAN_CONTEXT
ARG BUILDKIT_SBOM_SCAN_STAGE=a,b
FROM scratch AS a
COPY x /a
FROM scratch AS b
ARG BUILDKIT_SBOM_SCAN_STAGE=false
COPY x /b
FROM scratch
ARG BUILDKIT_SBOM_SCAN_STAGE=true
COPY --from=a /a /
COPY --from=b /b /
";

    #[test]
    fn stages_ask_by_name_and_by_their_own_args() {
        // `b` turns itself off; the target is never an extra.
        assert_eq!(extras(STAGES, &[]), (false, vec!["a".to_owned()]));
        // A build argument sets what the Dockerfile declares.
        assert_eq!(
            extras(
                STAGES,
                &[
                    ("BUILDKIT_SBOM_SCAN_STAGE", "true"),
                    ("BUILDKIT_SBOM_SCAN_CONTEXT", "1")
                ]
            ),
            (true, vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn an_undeclared_build_argument_asks_nothing() {
        let df = "FROM scratch AS a\nCOPY x /a\nFROM scratch\nCOPY --from=a /a /\n";
        assert_eq!(
            extras(
                df,
                &[
                    ("BUILDKIT_SBOM_SCAN_STAGE", "true"),
                    ("BUILDKIT_SBOM_SCAN_CONTEXT", "true")
                ]
            ),
            (false, Vec::new())
        );
    }
}
