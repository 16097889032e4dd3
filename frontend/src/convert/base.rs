//! Base images and ONBUILD (BuildKit's base-image resolution in
//! `toDispatchState`): the reachable stages' `FROM` images are resolved
//! through the [`ImageResolver`](crate::resolver::ImageResolver), named
//! contexts become source vertices, and the ONBUILD triggers of a base
//! (image or stage) are prepended to the stage's commands, which may add
//! dependencies and so make more stages reachable.

use kiln_llb::op::{Copy as CopyAction, FileAction, FileOp, Op, SourceOp};
use kiln_llb::{Platform, VertexMeta};

use crate::contexts::NamedContext;
use crate::instructions::{self, Command, Instruction};
use crate::lint::Rule;
use crate::quote::go_quote;
use crate::resolver::Resolution;
use crate::source::SourceFile;
use crate::syntax::{self, Node};

use super::shared::{Converter, R, Shared};
use super::stages;
use super::state::{Base, Cmd, Stage, empty_image, empty_image_unresolved};

/// Resolves the base images of the reachable states and runs their ONBUILD
/// triggers (which may add dependencies), until nothing changes.
pub(super) fn resolve_stages(conv: &mut Converter, target: usize) -> R<Vec<bool>> {
    loop {
        let reachable = stages::reachable_from(conv, target);
        for (i, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
            let st = &mut conv.stages[i];
            if !st.resolved {
                resolve_base(&mut conv.cx, st)?;
            }
        }
        let mut new_deps = false;
        for (i, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
            if !conv.stages[i].onbuild_init {
                new_deps |= init_onbuild(conv, i)?;
            }
        }
        if !new_deps {
            return Ok(reachable);
        }
    }
}

/// The source vertices of a named context that is not an image.
fn resolve_named(
    cx: &mut Shared,
    st: &mut Stage,
    key: &str,
    nc: &NamedContext,
    platform: &Platform,
) -> R<()> {
    let ignore_cache = cx.opts.no_cache;
    let meta = |name: String| VertexMeta {
        name: format!("[context {key}] {name}"),
        ignore_cache,
        ..VertexMeta::default()
    };
    let root = match nc {
        NamedContext::Local { source } => {
            let local = cx.add(
                Op::Source(SourceOp::Local {
                    name: source.clone(),
                }),
                Vec::new(),
                meta("load from client".to_owned()),
            )?;
            // `FROM` a directory: its files as the stage's filesystem.
            let op = Op::File(FileOp {
                base: None,
                actions: vec![FileAction::Copy(CopyAction {
                    from: Some(0),
                    src: "/".to_owned(),
                    dest: "/".to_owned(),
                    chown: None,
                    mode: None,
                    follow_symlinks: true,
                    contents_only: true,
                    include: Vec::new(),
                    exclude: Vec::new(),
                    required: Vec::new(),
                    unpack: false,
                    create_dest_path: true,
                    allow_wildcard: false,
                    allow_empty_wildcard: false,
                })],
            });
            let copy = cx.add(op, vec![local], meta("snapshot".to_owned()))?;
            st.local = Some((local, copy));
            Some(copy)
        }
        NamedContext::Git {
            remote,
            git_ref,
            subdir,
            keep_git_dir,
        } => {
            let op = Op::Source(SourceOp::Git {
                remote: remote.clone(),
                git_ref: git_ref.clone(),
                subdir: subdir.clone(),
                keep_git_dir: *keep_git_dir,
                checksum: String::new(),
                skip_submodules: false,
            });
            let mut shown = remote.clone();
            if !git_ref.is_empty() {
                shown.push('#');
                shown.push_str(git_ref);
            }
            Some(cx.add(op, Vec::new(), meta(shown))?)
        }
        NamedContext::Http { url } => {
            let op = Op::Source(SourceOp::Http {
                url: url.clone(),
                filename: "context".to_owned(),
                checksum: String::new(),
            });
            Some(cx.add(op, Vec::new(), meta(url.clone()))?)
        }
        NamedContext::Resolved { reference, image } => {
            let mut config = image.config.clone();
            if config.platform.is_none() {
                config.platform = Some(platform.clone());
            }
            st.image = config;
            st.image_digest = image.digest.clone();
            if image.has_layers {
                let op = Op::Source(SourceOp::Image {
                    reference: reference.clone(),
                    digest: image.digest.clone(),
                    platform: platform.clone(),
                });
                Some(cx.add(op, Vec::new(), meta(reference.clone()))?)
            } else {
                None
            }
        }
        NamedContext::Image { .. } | NamedContext::Scratch => None,
    };
    if !matches!(nc, NamedContext::Resolved { .. }) {
        st.image = empty_image(platform);
    }
    st.platform = Some(platform.clone());
    st.root = root;
    if st.stage_index.is_none() {
        st.dispatched = true;
    }
    Ok(())
}

fn resolve_base(cx: &mut Shared, st: &mut Stage) -> R<()> {
    st.resolved = true;
    let platform = cx.platform_of(st);
    match st.base.clone() {
        Base::Stage(_) => {}
        Base::Named(key, nc) => resolve_named(cx, st, &key, &nc, &platform)?,
        Base::Scratch => {
            st.image = empty_image(&platform);
            st.platform = Some(platform);
            if st.stage_index.is_none() {
                st.dispatched = true;
            }
        }
        Base::Image(reference) => {
            let name = reference.to_string();
            let word = st.base_word.clone();
            let end = st.node.as_ref().map_or(0, |n| n.end_line);
            let resolution = cx
                .resolver
                .resolve(&name, &platform)
                .map_err(|e| cx.err_at(word.offset, end, format!("{}: {e}", word.value)))?;
            let (image, digest, scratch) = match resolution {
                Resolution::Resolved(r) => (r.config, r.digest, !r.has_layers),
                Resolution::Unresolved => (empty_image_unresolved(&platform), None, false),
            };
            let mut image = image;
            let mut platform = platform;
            if st.platform.is_none() && cx.implicit_target {
                // BuildKit's autoDetectPlatform: an image for another
                // architecture keeps its own platform.
                if let Some(p) = &image.platform
                    && (p.os != platform.os || p.architecture != platform.architecture)
                    && (p.os == cx.opts.build_platform.os
                        && p.architecture == cx.opts.build_platform.architecture)
                {
                    platform = p.clone();
                }
            }
            if let (Some(p), Some(node)) = (&image.platform, &st.node)
                && (p.os != platform.os || p.architecture != platform.architecture)
            {
                let orig = cx
                    .lex
                    .process_word(&word.value, &cx.global_args)
                    .map_or_else(|_| word.value.clone(), |w| w.result);
                let w = Rule::InvalidBaseImagePlatform.at_node(
                    cx.file,
                    node,
                    format!(
                        "Base image {orig} was pulled with platform {}, expected {} for current build",
                        go_quote(&p.format_all()),
                        go_quote(&platform.format_all())
                    ),
                );
                cx.lint(w);
            }
            if image.platform.is_none() {
                image.platform = Some(platform.clone());
            }
            st.image = image;
            st.image_digest = digest.clone();
            st.platform = Some(platform.clone());
            if !scratch {
                let shown = match &digest {
                    Some(d) => format!("{name}@{d}"),
                    None => name.clone(),
                };
                let title = cx.prefix(st, &format!("FROM {shown}"), false);
                let meta = cx.meta(st, title, st.node.as_ref());
                let op = Op::Source(SourceOp::Image {
                    reference: name,
                    digest,
                    platform,
                });
                st.root = Some(cx.add(op, Vec::new(), meta)?);
            }
            if st.stage_index.is_none() {
                st.dispatched = true;
            }
        }
    }
    Ok(())
}

/// Parses ONBUILD triggers of state `i`'s base and prepends them to its
/// commands. Returns whether they added dependencies.
fn init_onbuild(conv: &mut Converter, i: usize) -> R<bool> {
    conv.stages[i].onbuild_init = true;
    if conv.stages[i].stage_index.is_none() {
        return Ok(false);
    }
    let triggers: Vec<String> = match conv.stages[i].base {
        Base::Stage(b) => conv.stages[b]
            .commands
            .iter()
            .filter(|c| !c.onbuild)
            .filter_map(|c| match &c.command.instruction {
                Instruction::Onbuild(expr) => Some(expr.clone()),
                _ => None,
            })
            .collect(),
        // An image, also one a named context gives (`oci-layout://`, as
        // BuildKit's testOnBuildNamedContext).
        Base::Image(_) | Base::Named(_, NamedContext::Resolved { .. }) => {
            std::mem::take(&mut conv.stages[i].image.on_build)
        }
        Base::Scratch | Base::Named(..) => Vec::new(),
    };
    if triggers.is_empty() {
        return Ok(false);
    }
    let node = conv.stages[i].node.clone();
    let (at, end) = node.as_ref().map_or((0, 0), |n| (n.offset, n.end_line));
    let mut cmds = Vec::new();
    let mut new_deps = false;
    for trigger in triggers {
        let fail = |e: String| {
            conv.cx.err_at(
                at,
                end,
                format!("ONBUILD trigger {}: {e}", go_quote(&trigger)),
            )
        };
        let tf = SourceFile::new(conv.cx.file.name(), trigger.clone());
        let ast = syntax::parse(&tf).map_err(|d| fail(d.message))?;
        if ast.nodes.len() != 1 {
            return Err(fail("onbuild trigger should be a single expression".into()));
        }
        let mut tnode = ast.nodes[0].clone();
        let instruction = instructions::parse_instruction(&tnode).map_err(|(_, m)| fail(m))?;
        // Triggers are located at the FROM line of the stage that runs them.
        if let Some(n) = &node {
            relocate(&mut tnode, n);
        }
        let command = Command {
            instruction,
            node: tnode,
        };
        let sources = stages::command_sources(conv, &command)?;
        let st = &mut conv.stages[i];
        for s in sources.iter().flatten() {
            st.deps.push((*s, at));
            new_deps = true;
        }
        // BuildKit counts every trigger as a step, not only those that
        // make a vertex.
        st.cmd_total += 1;
        cmds.push(Cmd {
            command,
            sources,
            onbuild: true,
        });
    }
    let st = &mut conv.stages[i];
    let rest = std::mem::take(&mut st.commands);
    cmds.extend(rest);
    st.commands = cmds;
    if new_deps {
        stages::check_cycles(conv)?;
    }
    Ok(new_deps)
}

/// Places an ONBUILD trigger's node at `at` (the FROM line that runs it).
fn relocate(node: &mut Node, at: &Node) {
    node.offset = at.offset;
    node.args_offset = at.offset;
    node.start_line = at.start_line;
    node.end_line = at.end_line;
    for w in node.args.iter_mut().chain(node.flags.iter_mut()) {
        w.offset = at.offset;
    }
    if let Some(sub) = &mut node.sub {
        relocate(sub, at);
    }
}
