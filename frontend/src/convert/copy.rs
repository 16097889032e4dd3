//! COPY and ADD (BuildKit's `convert_copy.go`): sources from the context, a
//! stage or image (`--from`), git repositories and URLs (ADD), heredocs;
//! `--chown`, `--chmod`, `--link`, `--parents`, `--exclude`, `--checksum`.

use kiln_llb::VertexMeta;
use kiln_llb::op::{Chown, Copy as CopyAction, FileAction, FileOp, MergeOp, Mkfile, Op, SourceOp};

use crate::chmod;
use crate::gitref::{self, GitRef};
use crate::instructions::{Add, Copy, InlineSource};
use crate::lint::Rule;
use crate::paths;
use crate::quote::go_quote;
use crate::shell::Lexer;
use crate::syntax::{Node, Word};

use super::shared::R;
use super::state::Cmd;
use super::step::{Inputs, Step, chown};

struct CopySpec {
    add: bool,
    sources: Vec<Word>,
    inline: Vec<InlineSource>,
    dest: Word,
    chown: Option<Word>,
    chmod: Option<Word>,
    link: bool,
    parents: bool,
    excludes: Vec<String>,
    keep_git_dir: Option<bool>,
    checksum: Option<Word>,
    unpack: Option<bool>,
    from_state: Option<usize>,
}

pub(super) fn copy(s: &mut Step, cmd: &Cmd, c: &Copy) -> R<()> {
    let end = cmd.command.node.end_line;
    let source_state = cmd.sources.first().copied().flatten();
    if let Some(j) = source_state
        && !s.others.get(j).is_some_and(|o| o.dispatched)
    {
        let from = c.from.as_ref().map_or("", |w| w.value.as_str());
        return Err(s.err_at(
            c.from
                .as_ref()
                .map_or(cmd.command.node.offset, |w| w.offset),
            end,
            format!(
                "cannot copy from stage {}, it needs to be defined before current stage {}",
                go_quote(from),
                go_quote(&s.st.display_name())
            ),
        ));
    }
    let spec = CopySpec {
        add: false,
        sources: s.expand_words(&c.paths.sources, end)?,
        inline: c.paths.inline.clone(),
        dest: Word {
            value: s.expand(&c.paths.dest, end)?,
            offset: c.paths.dest.offset,
        },
        chown: s.expand_opt(&c.chown, end)?,
        chmod: s.expand_opt(&c.chmod, end)?,
        link: c.link,
        parents: c.parents,
        excludes: c.excludes.iter().map(|w| w.value.clone()).collect(),
        keep_git_dir: None,
        checksum: None,
        unpack: None,
        from_state: source_state,
    };
    copy_spec(s, cmd, spec)
}

pub(super) fn add(s: &mut Step, cmd: &Cmd, a: &Add) -> R<()> {
    let end = cmd.command.node.end_line;
    let spec = CopySpec {
        add: true,
        sources: s.expand_words(&a.paths.sources, end)?,
        inline: a.paths.inline.clone(),
        dest: Word {
            value: s.expand(&a.paths.dest, end)?,
            offset: a.paths.dest.offset,
        },
        chown: s.expand_opt(&a.chown, end)?,
        chmod: s.expand_opt(&a.chmod, end)?,
        link: a.link,
        parents: false,
        excludes: a.excludes.iter().map(|w| w.value.clone()).collect(),
        keep_git_dir: a.keep_git_dir,
        checksum: s.expand_opt(&a.checksum, end)?,
        unpack: a.unpack,
        from_state: None,
    };
    copy_spec(s, cmd, spec)
}

/// What every copy action of one instruction shares.
struct Action<'c> {
    spec: &'c CopySpec,
    node: &'c Node,
    step: &'c str,
    template: CopyAction,
}

fn copy_spec(s: &mut Step, cmd: &Cmd, mut spec: CopySpec) -> R<()> {
    let node = &cmd.command.node;
    let end = node.end_line;
    let dest = {
        let p = if spec.dest.value.is_empty() || spec.dest.value == "." {
            "./"
        } else {
            spec.dest.value.as_str()
        };
        paths::normalize(&s.st.cwd, p, true)
    };
    let owner: Option<Chown> = spec.chown.as_ref().and_then(|w| chown(&w.value));
    let mode = match &spec.chmod {
        Some(w) if !w.value.is_empty() => {
            Some(chmod::parse(&w.value).map_err(|e| s.err_at(w.offset, end, e))?)
        }
        _ => None,
    };
    if let Some(ck) = &spec.checksum {
        if spec.sources.len() != 1 {
            return Err(s.err_at(
                ck.offset,
                end,
                "checksum can't be specified for multiple sources",
            ));
        }
        let src = &spec.sources[0].value;
        if !is_http(src) && gitref::parse(src).ok().flatten().is_none() {
            return Err(s.err_at(ck.offset, end, "checksum requires HTTP(S) or Git sources"));
        }
    }
    let mut msg = String::from(if spec.add { "ADD" } else { "COPY" });
    if spec.parents {
        msg.push_str(" --parents");
    }
    if let Some(w) = spec.chown.as_ref().filter(|w| !w.value.is_empty()) {
        msg.push_str(&format!(" --chown={}", w.value));
    }
    if let Some(w) = spec.chmod.as_ref().filter(|w| !w.value.is_empty()) {
        msg.push_str(&format!(" --chmod={}", w.value));
    }

    let text = s.display_text(cmd.command.code(), &[], false);
    let link = spec.link && mode.is_none();
    let step = s.prefix(&text, cmd.onbuild);

    let mut inputs = Inputs::default();
    let base = if link {
        None
    } else {
        s.st.root.map(|d| inputs.index(d))
    };
    let sources = std::mem::take(&mut spec.sources);
    let a = Action {
        template: CopyAction {
            from: None,
            src: String::new(),
            dest,
            chown: owner,
            mode,
            follow_symlinks: false,
            contents_only: false,
            include: Vec::new(),
            exclude: spec.excludes.clone(),
            required: Vec::new(),
            unpack: false,
            create_dest_path: true,
            allow_wildcard: false,
            allow_empty_wildcard: false,
        },
        spec: &spec,
        node,
        step: &step,
    };
    let mut actions = Vec::new();
    for src in sources {
        msg.push_str(&format!(" {}", src.value));
        let git = gitref::parse(&src.value).map_err(|e| s.err_at(src.offset, end, e))?;
        let action = if let Some(g) = git {
            git_source(s, &a, &src, g, &mut inputs)?
        } else if is_http(&src.value) {
            http_source(s, &a, &src, &mut inputs)?
        } else {
            path_source(s, &a, &src, &mut inputs)?
        };
        actions.push(FileAction::Copy(action));
    }
    for inline in &spec.inline {
        msg.push_str(&format!(" <<{}", inline.name));
        actions.push(FileAction::Copy(inline_source(s, &a, inline, &mut inputs)?));
    }
    msg.push_str(&format!(" {}", spec.dest.value));

    let meta = s.meta(step.clone(), Some(node));
    let file_op = Op::File(FileOp { base, actions });
    let copied = s.add(file_op, inputs.0, meta)?;
    let result = match (link, s.st.root) {
        (true, Some(root)) => {
            // `--link`: the copy is made on an empty filesystem and layered
            // on top, so it does not depend on what is below.
            let name = step.replacen("] ", "] LINK ", 1);
            let name = if name == step {
                format!("LINK {step}")
            } else {
                name
            };
            let meta = s.meta(name, Some(node));
            let op = Op::Merge(MergeOp { inputs: vec![0, 1] });
            s.add(op, vec![root, copied], meta)?
        }
        _ => copied,
    };
    s.st.root = Some(result);
    s.st.commit(msg, true);
    Ok(())
}

/// `ADD <git URL>`: a git source vertex copied whole.
fn git_source(
    s: &mut Step,
    a: &Action,
    src: &Word,
    g: GitRef,
    inputs: &mut Inputs,
) -> R<CopyAction> {
    let (spec, end) = (a.spec, a.node.end_line);
    if !spec.add {
        return Err(s.err_at(src.offset, end, "source can't be a git ref for COPY"));
    }
    if let (Some(x), Some(y)) = (spec.keep_git_dir, g.keep_git_dir)
        && x != y
    {
        return Err(s.err_at(src.offset, end, "inconsistent keep-git-dir configuration"));
    }
    let keep = g.keep_git_dir.or(spec.keep_git_dir).unwrap_or(false);
    let mut checksum = spec
        .checksum
        .as_ref()
        .map(|w| w.value.clone())
        .unwrap_or_default();
    if !g.checksum.is_empty() {
        if !checksum.is_empty() && checksum != g.checksum {
            return Err(s.err_at(
                src.offset,
                end,
                format!(
                    "checksum mismatch {} != {}",
                    go_quote(&checksum),
                    go_quote(&g.checksum)
                ),
            ));
        }
        checksum = g.checksum.clone();
    }
    let meta = VertexMeta {
        name: a.step.to_owned(),
        ..s.meta(String::new(), Some(a.node))
    };
    let op = Op::Source(SourceOp::Git {
        remote: g.remote,
        git_ref: g.git_ref,
        subdir: g.subdir,
        keep_git_dir: keep,
        checksum,
        skip_submodules: g.submodules == Some(false),
    });
    let d = s.add(op, Vec::new(), meta)?;
    Ok(CopyAction {
        from: Some(inputs.index(d)),
        src: "/".to_owned(),
        ..a.template.clone()
    })
}

/// `ADD <URL>`: an HTTP source vertex (one file).
fn http_source(s: &mut Step, a: &Action, src: &Word, inputs: &mut Inputs) -> R<CopyAction> {
    let (spec, end) = (a.spec, a.node.end_line);
    if !spec.add {
        return Err(s.err_at(src.offset, end, "source can't be a URL for COPY"));
    }
    let filename = url_filename(&src.value);
    let checksum = match &spec.checksum {
        Some(w) => {
            check_digest(&w.value).map_err(|e| s.err_at(w.offset, end, e))?;
            w.value.clone()
        }
        None => String::new(),
    };
    let meta = VertexMeta {
        name: a.step.to_owned(),
        ..s.meta(String::new(), Some(a.node))
    };
    let op = Op::Source(SourceOp::Http {
        url: src.value.clone(),
        filename: filename.clone(),
        checksum,
    });
    let d = s.add(op, Vec::new(), meta)?;
    Ok(CopyAction {
        from: Some(inputs.index(d)),
        src: format!("/{filename}"),
        unpack: spec.unpack.unwrap_or(false),
        ..a.template.clone()
    })
}

/// A path in the build context, or in the stage or image of `--from`.
fn path_source(s: &mut Step, a: &Action, src: &Word, inputs: &mut Inputs) -> R<CopyAction> {
    let (spec, end) = (a.spec, a.node.end_line);
    if spec.from_state.is_none() {
        lint_ignored_source(s, &src.value, spec.add, a.node);
    }
    let mut src_path = src.value.clone();
    let mut include = Vec::new();
    let mut required = Vec::new();
    if spec.parents {
        let (parent, pattern) = match src_path.split_once("/./") {
            Some((p, pat)) => (p.to_owned(), pat.to_owned()),
            None => ("/".to_owned(), src_path.clone()),
        };
        let pattern = paths::normalize("/", &pattern, false);
        include.push(pattern.trim_start_matches('/').to_owned());
        if !contains_wildcards(&parent) && !contains_wildcards(&pattern) {
            required.push(paths::normalize(
                "/",
                &paths::join(&[&parent, &pattern]),
                false,
            ));
        }
        src_path = parent;
    }
    let src_abs = paths::normalize("/", &src_path, false);
    let from = match spec.from_state {
        Some(j) => s
            .others
            .get(j)
            .and_then(|o| o.read_root())
            .map(|d| inputs.index(d)),
        None => {
            if escapes_context(&src.value) {
                return Err(s.err_at(
                    src.offset,
                    end,
                    format!(
                        "{} source {} is outside the build context",
                        if spec.add { "ADD" } else { "COPY" },
                        src.value
                    ),
                ));
            }
            s.cx.ctx_paths.insert(paths::join(&["/", &src.value]));
            let c = s.cx.context_source()?;
            Some(inputs.index(c))
        }
    };
    Ok(CopyAction {
        from,
        src: src_abs,
        follow_symlinks: true,
        contents_only: true,
        include,
        required,
        unpack: spec.unpack.unwrap_or(spec.add),
        allow_wildcard: true,
        allow_empty_wildcard: true,
        ..a.template.clone()
    })
}

/// `COPY <<EOF`: the document as a file of its own vertex.
fn inline_source(
    s: &mut Step,
    a: &Action,
    inline: &InlineSource,
    inputs: &mut Inputs,
) -> R<CopyAction> {
    let data = if inline.expand {
        let mut lex = Lexer::new('\\');
        lex.skip_process_quotes = true;
        lex.process_word(&inline.data, &s.st.env)
            .map_err(|e| s.err_node(a.node, e.to_string()))?
            .result
    } else {
        inline.data.clone()
    };
    let meta = VertexMeta {
        name: "[internal] preparing inline document".to_owned(),
        ..VertexMeta::default()
    };
    let op = Op::File(FileOp {
        base: None,
        actions: vec![FileAction::Mkfile(Mkfile {
            path: paths::join(&["/", &inline.name]),
            mode: 0o644,
            data,
            chown: None,
        })],
    });
    let d = s.add(op, Vec::new(), meta)?;
    Ok(CopyAction {
        from: Some(inputs.index(d)),
        src: paths::join(&["/", &inline.name]),
        ..a.template.clone()
    })
}

/// `CopyIgnoredFile`: a COPY/ADD source from the context that
/// `.dockerignore` excludes.
fn lint_ignored_source(s: &mut Step, src: &str, add: bool, node: &Node) {
    let Some(rules) = &s.cx.opts.dockerignore else {
        return;
    };
    let cleaned = paths::clean(src);
    if rules.excludes(&cleaned) {
        let cmd = if add { "Add" } else { "Copy" };
        let w = Rule::CopyIgnoredFile.at_node(
            s.cx.file,
            node,
            format!(
                "Attempting to {cmd} file {} that is excluded by .dockerignore",
                go_quote(&cleaned)
            ),
        );
        s.lint(w);
    }
}

/// Whether a relative context path climbs above the context root (`../x`,
/// `a/../../x`). BuildKit reads such a path as if it started at the root;
/// kiln refuses it, as Docker's classic builder did, because it is always a
/// mistake. Absolute paths are inside the context by definition.
fn escapes_context(path: &str) -> bool {
    if path.starts_with('/') {
        return false;
    }
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

pub(super) fn is_http(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://"))
        && gitref::parse(src).ok().flatten().is_none()
}

fn url_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme
        .split_once('/')
        .map_or("", |(_, p)| p)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let base = paths::base(&format!("/{path}"));
    if base == "." || base == "/" || base.is_empty() {
        "__unnamed__".to_owned()
    } else {
        base
    }
}

pub(super) fn check_digest(d: &str) -> Result<(), String> {
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("invalid checksum digest format: {}", go_quote(d)))?;
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm: {}", go_quote(d))),
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(format!("invalid checksum digest: {}", go_quote(d)));
    }
    Ok(())
}

fn contains_wildcards(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' | b'?' | b'[' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_filenames() {
        assert_eq!(
            url_filename("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_filename("https://example.com/"), "__unnamed__");
        assert_eq!(url_filename("https://example.com"), "__unnamed__");
    }
}
