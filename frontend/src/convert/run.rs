//! RUN: the command (shell or exec form, heredocs), its mounts
//! (`run_mount`), the exec vertex, and the `RUN |N ARG=v …` history line.

use std::collections::BTreeSet;

use kiln_llb::VertexMeta;
use kiln_llb::op::{
    Device, ExecOp, FileAction, FileOp, Mkfile, Mount as LlbMount, MountKind, Network, Op,
};

use crate::instructions::{CmdLine, Run};
use crate::mount::{self, MountType};
use crate::paths;
use crate::quote::go_list;
use crate::syntax;

use super::run_mount;
use super::shared::R;
use super::state::Cmd;
use super::step::{Inputs, Step};

pub(super) fn run(s: &mut Step, cmd: &Cmd, run: &Run) -> R<()> {
    let node = &cmd.command.node;
    let end = node.end_line;
    let platform = s.cx.platform_of(s.st);
    if platform.os != "linux" {
        return Err(s.err_node(
            node,
            format!(
                "RUN for platform {platform} is not supported yet: kiln runs build steps on Linux only (a stage for another OS may only copy files; FROM --platform=$BUILDPLATFORM runs a stage on the build machine)"
            ),
        ));
    }
    let mut inputs = Inputs::default();
    let mut extra_mounts = Vec::new();
    let mut custom = cmd.command.code().to_owned();
    let args = command(s, cmd, run, &mut inputs, &mut extra_mounts, &mut custom)?;

    // Mounts, expanded with the stage's variables.
    let mut mounts = Vec::new();
    let mut secret_env_mask = Vec::new();
    let root_input = s.st.root.map(|d| inputs.index(d));
    for (mi, raw) in run.mounts.iter().enumerate() {
        let lex = s.cx.lex;
        let env = &s.st.env;
        let mut unmatched = BTreeSet::new();
        let mut expand = |v: &str| -> Result<String, String> {
            lex.process_word(v, env)
                .map(|p| {
                    unmatched.extend(p.unmatched);
                    p.result
                })
                .map_err(|e| e.to_string())
        };
        let parsed = mount::parse_mount(&raw.value, &mut expand);
        if !unmatched.is_empty() {
            s.report_undefined(raw.offset, end, &unmatched);
        }
        let m = parsed.map_err(|e| s.err_at(raw.offset, end, e))?;
        if m.kind == MountType::Secret
            && let Some(e) = &m.env
        {
            secret_env_mask.push((e.clone(), "****".to_owned()));
        }
        let source_state = cmd.sources.get(mi).copied().flatten();
        mounts.push(run_mount::mount(
            s,
            &m,
            source_state,
            raw,
            end,
            &mut inputs,
        )?);
    }

    // The n-th SSH mount without a target gets agent socket n, and the
    // first one becomes SSH_AUTH_SOCK unless the stage sets it.
    let mut ssh_sock = None;
    for (n, m) in mounts
        .iter_mut()
        .filter(|m| matches!(m.kind, MountKind::Ssh { .. }))
        .enumerate()
    {
        if m.target.is_empty() {
            m.target = format!("/run/buildkit/ssh_agent.{n}");
        }
        ssh_sock.get_or_insert_with(|| m.target.clone());
    }

    let text = s.display_text(&custom, &secret_env_mask, true);
    let title = s.prefix(&text, cmd.onbuild);
    let meta = VertexMeta {
        ignore_cache: s.st.ignore_cache,
        ..s.meta(title, Some(node))
    };

    let mut all_mounts = vec![LlbMount::root(root_input)];
    all_mounts.extend(extra_mounts);
    all_mounts.extend(mounts);
    let st = &*s.st;
    let network = match run.network {
        Network::Default => st.network,
        other => other,
    };
    let env = match ssh_sock {
        Some(sock) if st.env.get("SSH_AUTH_SOCK").is_none() => {
            let mut env = st.env.clone();
            env.set("SSH_AUTH_SOCK", &sock);
            env.to_strings()
        }
        _ => st.env.to_strings(),
    };
    let op = Op::Exec(ExecOp {
        args: args.clone(),
        env,
        cwd: st.cwd.clone(),
        user: st.user.clone(),
        mounts: all_mounts,
        network,
        security: run.security,
        hostname: st.hostname.clone(),
        proxy_env: s.cx.proxy.clone(),
        devices: Vec::<Device>::new(),
        platform: Some(Box::new(s.cx.platform_of(st))),
    });
    s.st.root = Some(s.add(op, inputs.0, meta)?);
    let history = history(s, args);
    s.st.commit(history, true);
    Ok(())
}

/// The command a RUN executes: its arguments, a heredoc turned into the
/// script (a shebang script is written to a file mounted at `/dev/pipes/`),
/// and the shell prepended for the shell form.
fn command(
    s: &mut Step,
    cmd: &Cmd,
    run: &Run,
    inputs: &mut Inputs,
    extra_mounts: &mut Vec<LlbMount>,
    custom: &mut String,
) -> R<Vec<String>> {
    let node = &cmd.command.node;
    let mut args = run.cmd.args.clone();
    if args.is_empty() && !run.cmd.prepend_shell {
        return Err(s.err_node(
            node,
            "RUN needs a command: the exec form array is empty (arguments are required)",
        ));
    }
    if !run.cmd.files.is_empty() {
        if args.len() != 1 || !run.cmd.prepend_shell {
            return Err(s.err_node(
                node,
                format!(
                    "parsing produced an invalid run command: {}",
                    go_list(&args)
                ),
            ));
        }
        let single = syntax::parse_heredoc(&args[0]).ok().flatten();
        if single.is_some() {
            let file = &run.cmd.files[0];
            let data = if file.chomp {
                syntax::chomp_heredoc_content(&file.data)
            } else {
                file.data.clone()
            };
            if data.starts_with("#!") {
                // A script with a shebang: write it to a file and run it.
                let meta = VertexMeta {
                    name: "[internal] preparing inline document".to_owned(),
                    ..VertexMeta::default()
                };
                let mkfile = Op::File(FileOp {
                    base: None,
                    actions: vec![FileAction::Mkfile(Mkfile {
                        path: format!("/{}", file.name),
                        mode: 0o755,
                        data: data.clone(),
                        chown: None,
                    })],
                });
                let d = s.add(mkfile, Vec::new(), meta)?;
                extra_mounts.push(LlbMount {
                    target: "/dev/pipes/".to_owned(),
                    input: Some(inputs.index(d)),
                    source: "/".to_owned(),
                    readonly: true,
                    output: false,
                    kind: MountKind::Bind,
                });
                args = vec![paths::join(&["/dev/pipes/", &file.name])];
            } else {
                args = vec![data];
            }
            custom.push_str(&format!(" ({})", summarize_heredoc(&file.data)));
        } else {
            let mut joined = args[0].clone();
            for f in &run.cmd.files {
                joined.push('\n');
                joined.push_str(&f.data);
                joined.push_str(&f.name);
            }
            args = vec![joined];
        }
    }
    if run.cmd.prepend_shell {
        let line = CmdLine {
            args,
            files: Vec::new(),
            prepend_shell: true,
        };
        args = s.with_shell(&line);
    }
    Ok(args)
}

/// History: `RUN |N ARG=v … <args>`.
fn history(s: &Step, args: Vec<String>) -> String {
    let st = &*s.st;
    let mut build_env: Vec<(String, String)> = Vec::new();
    for (k, v) in &st.build_args {
        let val = st
            .env
            .get(k)
            .map(str::to_owned)
            .unwrap_or_else(|| v.clone().unwrap_or_default());
        match build_env.iter_mut().find(|(bk, _)| bk == k) {
            Some(e) => e.1 = val,
            None => build_env.push((k.clone(), val)),
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if !build_env.is_empty() {
        parts.push(format!("|{}", build_env.len()));
        parts.extend(build_env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args);
    format!("RUN {}", parts.join(" "))
}

fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim();
    let normalized = doc.replace("\r\n", "\n");
    let mut lines = normalized.split('\n');
    let first = lines.next().unwrap_or("").to_owned();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_summary() {
        assert_eq!(summarize_heredoc("\necho a\necho b\n"), "echo a...");
        assert_eq!(summarize_heredoc("echo a\n"), "echo a");
    }
}
