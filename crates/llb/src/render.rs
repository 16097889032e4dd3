//! Printing a [`Definition`]: the formats of `kiln plan`.
//!
//! These are pure functions to `String`; which one is printed where is the
//! caller's business.

use std::fmt::Write as _;

use serde_json::json;

use crate::digest::Digest;
use crate::op::{Copy, FileAction, MountKind, Op, SourceOp};
use crate::{Definition, StageBase, Vertex};

impl Definition {
    /// One line per vertex: short digest, name (`[build 2/5] RUN make`), and the
    /// Dockerfile location.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for v in self.graph.vertices() {
            let _ = write!(out, "{}  {}", v.digest.short(), vertex_title(v));
            if let Some(loc) = &v.meta.location {
                let _ = write!(out, "  {loc}");
            }
            out.push('\n');
        }
        match &self.target {
            Some(t) => {
                let _ = writeln!(out, "target {}", t.short());
            }
            None => out.push_str("target scratch (empty filesystem)\n"),
        }
        out
    }

    /// The JSON plan:
    /// `{"target": "sha256:..", "vertices": [{"digest", "op", "inputs", "stage",
    /// "location", "name", "definition"}], "stages": [...]}`.
    pub fn render_json(&self) -> serde_json::Value {
        let vertices: Vec<_> = self
            .graph
            .vertices()
            .map(|v| {
                json!({
                    "digest": v.digest,
                    "op": v.op.kind(),
                    "inputs": v.inputs,
                    "stage": v.meta.stage,
                    "location": v.meta.location.as_ref().map(ToString::to_string),
                    "name": v.meta.name,
                    "ignore_cache": v.meta.ignore_cache,
                    "definition": v.op,
                })
            })
            .collect();
        let mut plan = json!({
            "target": self.target,
            "target_stage": self.target_stage().name,
            "vertices": vertices,
            "stages": self.stages,
            "context_paths": self.context_paths,
        });
        if let Some(e) = self.source_date_epoch {
            plan["source_date_epoch"] = json!(e);
        }
        plan
    }

    /// Graphviz `dot`.
    pub fn render_dot(&self) -> String {
        let mut out = String::from("digraph kiln {\n  rankdir=BT;\n  node [shape=box];\n");
        for v in self.graph.vertices() {
            let label = format!("{}\\n{}", v.digest.short(), vertex_title(v));
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\"];",
                v.digest,
                dot_escape(&label)
            );
        }
        for v in self.graph.vertices() {
            for input in &v.inputs {
                let _ = writeln!(out, "  \"{input}\" -> \"{}\";", v.digest);
            }
        }
        out.push_str("}\n");
        out
    }

    /// Every vertex with all of its op, then every stage with its image config:
    /// the long form used by `kiln plan --format llb` and the frontend tests.
    pub fn render_llb(&self) -> String {
        let mut out = String::new();
        for v in self.graph.vertices() {
            let _ = write!(out, "{}  {}", v.digest.short(), vertex_title(v));
            if let Some(loc) = &v.meta.location {
                let _ = write!(out, "  {loc}");
            }
            if v.meta.ignore_cache {
                out.push_str("  [no-cache]");
            }
            out.push('\n');
            render_op(v, &mut out);
        }
        out.push('\n');
        for (i, stage) in self.stages.iter().enumerate() {
            let marker = if i == self.target_stage {
                " (target)"
            } else {
                ""
            };
            let base = match &stage.base {
                StageBase::Scratch => "scratch".to_owned(),
                StageBase::Stage { name } => format!("stage {name}"),
                StageBase::Image { reference, digest } => match digest {
                    Some(d) => format!("image {reference}@{d}"),
                    None => format!("image {reference} (unresolved)"),
                },
            };
            let root = stage
                .root
                .map_or_else(|| "scratch".to_owned(), |d| d.short());
            let _ = writeln!(
                out,
                "stage {} #{}{marker}  {}  from {base}  root {root}  {}",
                stage.name, stage.index, stage.platform, stage.location
            );
            let config = serde_json::to_string_pretty(&stage.config).unwrap_or_default();
            for line in config.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        if let Some(e) = self.source_date_epoch {
            let _ = writeln!(out, "source-date-epoch {e}");
        }
        out
    }
}

fn vertex_title(v: &Vertex) -> String {
    let mut title = v.meta.name.clone();
    if let Op::Source(SourceOp::Image { digest: None, .. }) = &v.op {
        title.push_str(" (unresolved)");
    }
    title
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("\\\\n", "\\n")
}

fn json_str<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn input_name(v: &Vertex, index: Option<u32>) -> String {
    match index.and_then(|i| v.inputs.get(i as usize)) {
        Some(d) => short(d),
        None => "scratch".to_owned(),
    }
}

fn short(d: &Digest) -> String {
    d.short()
}

fn render_op(v: &Vertex, out: &mut String) {
    match &v.op {
        Op::Source(s) => match s {
            SourceOp::Image {
                reference,
                digest,
                platform,
            } => {
                let _ = write!(out, "    image {reference} {platform}");
                match digest {
                    Some(d) => {
                        let _ = writeln!(out, " {d}");
                    }
                    None => out.push_str(" unresolved\n"),
                }
            }
            SourceOp::Local { name } => {
                let _ = writeln!(out, "    local {name}");
            }
            SourceOp::Git {
                remote,
                git_ref,
                subdir,
                keep_git_dir,
                checksum,
                skip_submodules,
            } => {
                let _ = write!(out, "    git {remote}");
                for (k, val) in [("ref", git_ref), ("subdir", subdir), ("checksum", checksum)] {
                    if !val.is_empty() {
                        let _ = write!(out, " {k}={val}");
                    }
                }
                if *keep_git_dir {
                    out.push_str(" keep-git-dir");
                }
                if *skip_submodules {
                    out.push_str(" skip-submodules");
                }
                out.push('\n');
            }
            SourceOp::Http {
                url,
                filename,
                checksum,
            } => {
                let _ = write!(out, "    http {url} filename={filename}");
                if !checksum.is_empty() {
                    let _ = write!(out, " checksum={checksum}");
                }
                out.push('\n');
            }
        },
        Op::Exec(e) => {
            let _ = writeln!(out, "    args {}", json_str(&e.args));
            for kv in &e.env {
                let _ = writeln!(out, "    env {}", json_str(kv));
            }
            let _ = write!(out, "    cwd {}", json_str(&e.cwd));
            if !e.user.is_empty() {
                let _ = write!(out, " user {}", json_str(&e.user));
            }
            if !e.network.is_default() {
                let _ = write!(out, " network {}", e.network.as_str());
            }
            if !e.security.is_sandbox() {
                let _ = write!(out, " security {}", e.security.as_str());
            }
            if !e.hostname.is_empty() {
                let _ = write!(out, " hostname {}", e.hostname);
            }
            if let Some(p) = &e.platform {
                let _ = write!(out, " platform {p}");
            }
            out.push('\n');
            if !e.proxy_env.is_empty() {
                let _ = writeln!(out, "    proxy {}", json_str(&e.proxy_env));
            }
            for d in &e.devices {
                let _ = writeln!(
                    out,
                    "    device {}{}",
                    d.name,
                    if d.required { " required" } else { "" }
                );
            }
            for m in &e.mounts {
                let _ = write!(out, "    mount {}", json_str(&m.target));
                let kind = match &m.kind {
                    MountKind::Bind => "bind".to_owned(),
                    MountKind::Cache {
                        id,
                        sharing,
                        uid,
                        gid,
                        mode,
                    } => {
                        let mut s =
                            format!("cache id={} sharing={}", json_str(id), sharing.as_str());
                        if let Some(u) = uid {
                            let _ = write!(s, " uid={u}");
                        }
                        if let Some(g) = gid {
                            let _ = write!(s, " gid={g}");
                        }
                        if let Some(m) = mode {
                            let _ = write!(s, " mode={m:04o}");
                        }
                        s
                    }
                    MountKind::Tmpfs { size } => format!("tmpfs size={size}"),
                    MountKind::Secret {
                        id,
                        env,
                        required,
                        uid,
                        gid,
                        mode,
                    } => {
                        let mut s = format!(
                            "secret id={} uid={uid} gid={gid} mode={mode:04o}",
                            json_str(id)
                        );
                        if !env.is_empty() {
                            let _ = write!(s, " env={env}");
                        }
                        if *required {
                            s.push_str(" required");
                        }
                        s
                    }
                    MountKind::Ssh {
                        id,
                        required,
                        uid,
                        gid,
                        mode,
                    } => {
                        let mut s = format!(
                            "ssh id={} uid={uid} gid={gid} mode={mode:04o}",
                            json_str(id)
                        );
                        if *required {
                            s.push_str(" required");
                        }
                        s
                    }
                };
                let _ = write!(out, " {kind}");
                if m.input.is_some() || m.source != "/" {
                    let _ = write!(out, " from {}:{}", input_name(v, m.input), m.source);
                }
                if m.readonly {
                    out.push_str(" readonly");
                }
                if m.output {
                    out.push_str(" output");
                }
                out.push('\n');
            }
        }
        Op::File(f) => {
            let _ = writeln!(out, "    on {}", input_name(v, f.base));
            for a in &f.actions {
                match a {
                    FileAction::Copy(c) => render_copy(v, c, out),
                    FileAction::Mkdir(m) => {
                        let _ = write!(out, "    mkdir {} {:04o}", json_str(&m.path), m.mode);
                        if m.parents {
                            out.push_str(" parents");
                        }
                        if let Some(c) = &m.chown {
                            let _ = write!(out, " chown={c}");
                        }
                        out.push('\n');
                    }
                    FileAction::Mkfile(m) => {
                        let _ = write!(out, "    mkfile {} {:04o}", json_str(&m.path), m.mode);
                        if let Some(c) = &m.chown {
                            let _ = write!(out, " chown={c}");
                        }
                        let _ = writeln!(out, " data={}", json_str(&m.data));
                    }
                    FileAction::Rm(r) => {
                        let _ = write!(out, "    rm {}", json_str(&r.path));
                        if r.allow_not_found {
                            out.push_str(" allow-not-found");
                        }
                        if r.allow_wildcard {
                            out.push_str(" allow-wildcard");
                        }
                        out.push('\n');
                    }
                }
            }
        }
        Op::Merge(m) => {
            let names: Vec<String> = m.inputs.iter().map(|i| input_name(v, Some(*i))).collect();
            let _ = writeln!(out, "    merge {}", names.join(" + "));
        }
    }
}

fn render_copy(v: &Vertex, c: &Copy, out: &mut String) {
    let _ = write!(
        out,
        "    copy {}:{} -> {}",
        input_name(v, c.from),
        json_str(&c.src),
        json_str(&c.dest)
    );
    if let Some(ch) = &c.chown {
        let _ = write!(out, " chown={ch}");
    }
    if let Some(m) = &c.mode {
        let _ = write!(out, " chmod={m}");
    }
    for (flag, name) in [
        (c.follow_symlinks, "follow-symlinks"),
        (c.contents_only, "contents-only"),
        (c.unpack, "unpack"),
        (c.create_dest_path, "create-dest-path"),
        (c.allow_wildcard, "allow-wildcard"),
        (c.allow_empty_wildcard, "allow-empty-wildcard"),
    ] {
        if flag {
            let _ = write!(out, " {name}");
        }
    }
    if !c.include.is_empty() {
        let _ = write!(out, " include={}", json_str(&c.include));
    }
    if !c.exclude.is_empty() {
        let _ = write!(out, " exclude={}", json_str(&c.exclude));
    }
    if !c.required.is_empty() {
        let _ = write!(out, " required={}", json_str(&c.required));
    }
    out.push('\n');
}
