//! WORKDIR and USER: where and as whom the following steps run.

use kiln_llb::op::{FileAction, FileOp, Mkdir, Op};

use crate::lint::Rule;
use crate::paths;
use crate::quote::go_quote;
use crate::syntax::Word;

use super::shared::R;
use super::state::Cmd;
use super::step::{Inputs, Step, chown};

pub(super) fn workdir(s: &mut Step, cmd: &Cmd, w: &Word) -> R<()> {
    let node = &cmd.command.node;
    let path = s.expand(w, node.end_line)?;
    if !s.st.workdir_set && !path.starts_with('/') {
        let w = Rule::WorkdirRelativePath.at_node(
            s.cx.file,
            node,
            format!(
                "Relative workdir {} can have unexpected results if the base image changes",
                go_quote(&path)
            ),
        );
        s.lint(w);
    }
    s.st.workdir_set = true;
    let wd = paths::normalize_workdir(&s.st.image.working_dir, &path);
    s.st.image.working_dir = wd.clone();
    s.st.cwd = wd.clone();
    let mut layer = false;
    if wd != "/" {
        let text = s.display_text(cmd.command.code(), &[], false);
        let title = s.prefix(&text, cmd.onbuild);
        let meta = s.meta(title, Some(node));
        let mut inputs = Inputs::default();
        let base = s.st.root.map(|d| inputs.index(d));
        let op = Op::File(FileOp {
            base,
            actions: vec![FileAction::Mkdir(Mkdir {
                path: wd.clone(),
                mode: 0o755,
                parents: true,
                chown: chown(&s.st.image.user),
            })],
        });
        s.st.root = Some(s.add(op, inputs.0, meta)?);
        layer = true;
    }
    s.st.commit_with(format!("WORKDIR {wd}"), layer, false);
    Ok(())
}

pub(super) fn user(s: &mut Step, w: &Word, end: usize) -> R<()> {
    let user = s.expand(w, end)?;
    s.st.user = user.clone();
    s.st.image.user = user.clone();
    s.st.commit(format!("USER {user}"), false);
    Ok(())
}
