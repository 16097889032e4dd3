//! `RUN --mount`: what each mount type becomes (BuildKit's
//! `convert_runmount.go`, `convert_secrets.go`, `convert_ssh.go`).

use kiln_llb::op::{CacheSharing, Mount as LlbMount, MountKind};

use crate::mount::{Mount, MountType, Sharing};
use crate::paths;
use crate::quote::go_quote;
use crate::syntax::Word;

use super::shared::R;
use super::step::{Inputs, Step};

/// The mount `m` of a RUN in stage `s`; `source_state` is the stage or image
/// its `from=` names.
pub(super) fn mount(
    s: &mut Step,
    m: &Mount,
    source_state: Option<usize>,
    raw: &Word,
    end: usize,
    inputs: &mut Inputs,
) -> R<LlbMount> {
    match m.kind {
        MountType::Secret => secret(s, m, raw, end),
        MountType::Ssh => ssh(s, m, raw, end),
        _ => filesystem(s, m, source_state, raw, end, inputs),
    }
}

fn secret(s: &mut Step, m: &Mount, raw: &Word, end: usize) -> R<LlbMount> {
    let mut id = if m.source.is_empty() {
        m.id.clone()
    } else {
        m.source.clone()
    };
    if id.is_empty() {
        if m.target.is_empty() {
            return Err(s.err_at(raw.offset, end, "one of source, target required"));
        }
        id = paths::base(&m.target);
    }
    let line = s.cx.file.position(raw.offset).line;
    s.st.outline
        .secrets
        .entry(id.clone())
        .or_insert((m.required, line));
    let target = if m.env.is_none() && m.target.is_empty() {
        format!("/run/secrets/{}", paths::base(&id))
    } else {
        m.target.clone()
    };
    Ok(LlbMount {
        target,
        input: None,
        source: "/".to_owned(),
        readonly: true,
        output: false,
        kind: MountKind::Secret {
            id,
            env: m.env.clone().unwrap_or_default(),
            required: m.required,
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
            mode: m.mode.unwrap_or(0o400),
        },
    })
}

fn ssh(s: &mut Step, m: &Mount, raw: &Word, end: usize) -> R<LlbMount> {
    if !m.source.is_empty() {
        return Err(s.err_at(raw.offset, end, "ssh does not support source"));
    }
    let id = if m.id.is_empty() {
        "default".to_owned()
    } else {
        m.id.clone()
    };
    let line = s.cx.file.position(raw.offset).line;
    s.st.outline
        .ssh
        .entry(id.clone())
        .or_insert((m.required, line));
    // Default targets are assigned once all mounts are known.
    Ok(LlbMount {
        target: m.target.clone(),
        input: None,
        source: "/".to_owned(),
        readonly: true,
        output: false,
        kind: MountKind::Ssh {
            id,
            required: m.required,
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
            mode: m.mode.unwrap_or(0o600),
        },
    })
}

/// A bind, cache or tmpfs mount. The filesystem mounted: a stage or image
/// (`from=`), the build context (bind without `from=`), or nothing (cache,
/// tmpfs).
fn filesystem(
    s: &mut Step,
    m: &Mount,
    source_state: Option<usize>,
    raw: &Word,
    end: usize,
    inputs: &mut Inputs,
) -> R<LlbMount> {
    let input = match (m.kind, source_state) {
        (MountType::Tmpfs, _) => None,
        (_, Some(j)) => {
            let from = s.others.get(j).filter(|o| o.dispatched);
            let Some(from) = from else {
                return Err(s.err_at(
                    raw.offset,
                    end,
                    format!(
                        "cannot mount from stage {} to {}, stage needs to be defined before current command",
                        go_quote(&m.from),
                        go_quote(&m.target)
                    ),
                ));
            };
            from.root.map(|d| inputs.index(d))
        }
        (MountType::Cache, None) => None,
        (_, None) => {
            let c = s.cx.context_source()?;
            Some(inputs.index(c))
        }
    };
    let target = if paths::clean(&m.target).starts_with('/') {
        m.target.clone()
    } else {
        paths::join(&["/", &s.st.cwd, &m.target])
    };
    if target == "/" {
        return Err(s.err_at(
            raw.offset,
            end,
            format!("invalid mount target {}", go_quote(&target)),
        ));
    }
    let source = paths::join(&["/", &m.source]);
    if m.kind == MountType::Bind && source_state.is_none() {
        s.cx.ctx_paths.insert(source.clone());
    }
    let kind = match m.kind {
        MountType::Cache => {
            let id = if m.id.is_empty() {
                paths::clean(&m.target)
            } else {
                m.id.clone()
            };
            let with_owner = source == "/";
            MountKind::Cache {
                id,
                sharing: match m.sharing {
                    Some(Sharing::Private) => CacheSharing::Private,
                    Some(Sharing::Locked) => CacheSharing::Locked,
                    _ => CacheSharing::Shared,
                },
                uid: m.uid.filter(|_| with_owner),
                gid: m.gid.filter(|_| with_owner),
                mode: m.mode.filter(|_| with_owner),
            }
        }
        MountType::Tmpfs => MountKind::Tmpfs { size: m.size_limit },
        _ => MountKind::Bind,
    };
    Ok(LlbMount {
        target,
        input,
        source,
        readonly: m.readonly,
        output: false,
        kind,
    })
}
