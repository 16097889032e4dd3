//! Dispatch (BuildKit's `dispatch`): the reachable stages in Dockerfile
//! order, each starting from its base, each instruction expanded with the
//! stage's variables at that point and handed to its family (`copy`, `run`,
//! `env`, `config`, `workdir`).

use crate::diagnostic::Diagnostic;
use crate::instructions::Instruction;
use crate::lint::Rule;
use crate::syntax::Node;

use super::shared::{Converter, MAX_INHERITED_SETTINGS, R};
use super::state::{Base, Cmd, default_path};
use super::step::{self, Step};
use super::{config, copy, env, run, workdir};
use crate::paths;

/// Dispatches the reachable stages that are not dispatched yet.
pub(super) fn dispatch_all(conv: &mut Converter, reachable: &[bool]) -> R<()> {
    for (i, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
        if conv.stages[i].dispatched {
            continue;
        }
        let Some((st, others)) = step::split(&mut conv.stages, i) else {
            continue;
        };
        let mut s = Step {
            cx: &mut conv.cx,
            st,
            others,
        };
        init_state(&mut s)?;
        s.st.dispatched = true;
        let cmds = std::mem::take(&mut s.st.commands);
        let result = cmds.iter().try_for_each(|cmd| dispatch(&mut s, cmd));
        s.st.commands = cmds;
        result?;
    }
    Ok(())
}

/// The start of a stage: the base's filesystem, config and environment.
fn init_state(s: &mut Step) -> R<()> {
    if let Base::Stage(b) = s.st.base {
        let Some(base) = s.others.get(b) else {
            return Err(Diagnostic::unlocated(
                s.cx.file.name(),
                "internal error: a stage is its own base",
            ));
        };
        // Every stage keeps its own configuration (the plan shows each), so
        // a chain of stages each FROM the previous one holds settings
        // quadratic in its length: 10,000 chained stages would take tens of
        // GB. A bound turns that into an error.
        let inherited = {
            let img = &base.image;
            img.env.len() + img.history.len() + img.labels.len() + img.on_build.len()
        };
        s.cx.inherited_settings += inherited;
        if s.cx.inherited_settings > MAX_INHERITED_SETTINGS {
            let (offset, end) =
                s.st.node
                    .as_ref()
                    .map_or((0, 0), |n| (n.offset, n.end_line));
            return Err(s.err_at(
                offset,
                end,
                format!(
                    "too many inherited stage settings: the stages up to this one copy \
                     {} environment variables, labels and history entries from their base \
                     stages in all (kiln's limit is {MAX_INHERITED_SETTINGS}; a long chain \
                     of stages each FROM the previous one copies everything before it into \
                     every stage)",
                    s.cx.inherited_settings
                ),
            ));
        }
        // The state continues from the base stage (BuildKit's `init`).
        let st = &mut *s.st;
        st.root = base.root;
        st.platform = base.platform.clone();
        st.image = base.image.clone();
        st.image.on_build.clear();
        st.env = base.env.clone();
        st.cwd = base.cwd.clone();
        st.user = base.user.clone();
        st.build_args.extend(base.build_args.iter().cloned());
        st.workdir_set = base.workdir_set;
        st.image_digest = base.image_digest.clone();
    }
    let platform = s.cx.platform_of(s.st);
    let st = &mut *s.st;
    if st.image.env_get("PATH").is_none()
        && let Some(path) = default_path(&platform)
    {
        st.image.env.push(path);
    }
    if st.platform.is_none() {
        st.platform = Some(platform);
    }
    // The image's variables are (re)applied on top of what the state has,
    // which moves them after any ARG a base stage declared.
    for kv in &st.image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        st.env.set(k, v);
    }
    if !st.image.working_dir.is_empty() {
        let wd = paths::normalize_workdir(&st.image.working_dir, &st.image.working_dir);
        st.image.working_dir = wd.clone();
        st.cwd = wd;
    }
    if !st.image.user.is_empty() {
        st.user = st.image.user.clone();
    }
    Ok(())
}

fn dispatch(s: &mut Step, cmd: &Cmd) -> R<()> {
    let node = &cmd.command.node;
    let end = node.end_line;
    lint_instruction(s, node, &cmd.command.instruction);
    match &cmd.command.instruction {
        Instruction::Env(kvs) => env::env(s, node, kvs),
        Instruction::Arg(defs) => env::arg(s, node, defs),
        Instruction::Label(kvs) => env::label(s, kvs, end),
        Instruction::Add(a) => copy::add(s, cmd, a),
        Instruction::Copy(c) => copy::copy(s, cmd, c),
        Instruction::Run(r) => run::run(s, cmd, r),
        Instruction::Workdir(w) => workdir::workdir(s, cmd, w),
        Instruction::User(w) => workdir::user(s, w, end),
        Instruction::Maintainer(w) => config::maintainer(s, w),
        Instruction::Onbuild(expr) => config::onbuild(s, expr),
        Instruction::Cmd(line) => config::cmd(s, line),
        Instruction::Entrypoint(line) => config::entrypoint(s, line),
        Instruction::Healthcheck(h) => config::healthcheck(s, h),
        Instruction::Expose(ports) => config::expose(s, node, ports),
        Instruction::Volume(vs) => config::volume(s, vs, end),
        Instruction::StopSignal(w) => config::stop_signal(s, w, end),
        Instruction::Shell(sh) => config::shell(s, sh),
    }
}

/// The rules about one instruction that need no substitution result.
fn lint_instruction(s: &mut Step, node: &Node, instruction: &Instruction) {
    let kw = &node.keyword;
    let slot = match instruction {
        Instruction::Cmd(_) => Some(0),
        Instruction::Entrypoint(_) => Some(1),
        Instruction::Healthcheck(_) => Some(2),
        _ => None,
    };
    if let Some(slot) = slot {
        // Reported at the earlier instruction: that is the one ignored.
        if let Some((offset, end)) = s.st.used_once[slot] {
            let w = Rule::MultipleInstructionsDisallowed.mark(s.err_at(
                offset,
                end,
                format!(
                    "Multiple {kw} instructions should not be used in the same stage because only the last one will be used"
                ),
            ));
            s.lint(w);
        }
        s.st.used_once[slot] = Some((node.offset, node.end_line));
    }
    match instruction {
        Instruction::Cmd(line) | Instruction::Entrypoint(line)
            if line.prepend_shell && s.st.image.shell.is_empty() =>
        {
            let w = Rule::JsonArgsRecommended.at_node(
                s.cx.file,
                node,
                format!(
                    "JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"
                ),
            );
            s.lint(w);
        }
        Instruction::Env(kvs) | Instruction::Label(kvs) => {
            for _ in kvs.iter().filter(|kv| kv.legacy) {
                let w = Rule::LegacyKeyValueFormat.at_node(
                    s.cx.file,
                    node,
                    format!(
                        "\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"
                    ),
                );
                s.lint(w);
            }
        }
        Instruction::Arg(defs) => {
            for d in defs {
                s.cx.lint_secret_key("ARG", &d.key.value, node);
            }
        }
        _ => {}
    }
}
