//! Syntax tree → typed instructions grouped into stages.
//!
//! A port of BuildKit's `frontend/dockerfile/instructions`: builder flags are
//! checked against what each instruction accepts, argument counts are checked,
//! and heredocs are attached to the arguments that name them. Nothing is
//! expanded here; variables are substituted when the stage is converted, with
//! the environment of that point in the build.

use std::time::Duration;

use kiln_llb::op::{Network, Security};

use crate::diagnostic::Diagnostic;
use crate::quote::go_quote;
use crate::source::SourceFile;
use crate::suggest::did_you_mean;
use crate::syntax::{self, Ast, Heredoc, Node, Word};

/// A `KEY=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Word,
    pub value: Word,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
}

/// One name of an ARG, with its default if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    pub key: Word,
    pub default: Option<Word>,
}

/// A heredoc used as a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSource {
    pub name: String,
    pub data: String,
    pub expand: bool,
}

/// Sources and destination of COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesAndDest {
    pub sources: Vec<Word>,
    pub inline: Vec<InlineSource>,
    pub dest: Word,
}

/// A heredoc fed to RUN/CMD/ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    pub data: String,
    pub chomp: bool,
}

/// The command of RUN, CMD, ENTRYPOINT: exec form (a list) or shell form (one
/// string run by the stage's shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdLine {
    pub args: Vec<String>,
    pub files: Vec<InlineFile>,
    /// Shell form.
    pub prepend_shell: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub paths: SourcesAndDest,
    pub from: Option<Word>,
    pub chown: Option<Word>,
    pub chmod: Option<Word>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub paths: SourcesAndDest,
    pub chown: Option<Word>,
    pub chmod: Option<Word>,
    pub link: bool,
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<Word>,
    pub unpack: Option<bool>,
    pub excludes: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub cmd: CmdLine,
    /// Raw `--mount` values; typed once variables are expanded.
    pub mounts: Vec<Word>,
    pub network: Network,
    pub security: Security,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Cmd {
        test: Vec<String>,
        interval: Duration,
        timeout: Duration,
        start_period: Duration,
        start_interval: Duration,
        retries: i32,
    },
}

/// A typed instruction (other than FROM, which starts a [`Stage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Env(Vec<KeyValue>),
    Maintainer(Word),
    Label(Vec<KeyValue>),
    Add(Add),
    Copy(Copy),
    /// The trigger text, registered verbatim in the image.
    Onbuild(String),
    Workdir(Word),
    Run(Run),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    Healthcheck(Healthcheck),
    Expose(Vec<Word>),
    User(Word),
    Volume(Vec<Word>),
    StopSignal(Word),
    Arg(Vec<ArgDef>),
    Shell(Vec<String>),
}

/// An instruction with its syntax node (for locations and history text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub instruction: Instruction,
    pub node: Node,
}

impl Command {
    /// The instruction's text, whitespace-trimmed (BuildKit's `String()`).
    pub fn code(&self) -> &str {
        self.node.original.trim()
    }
}

/// A `FROM` and the instructions that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    pub base: Word,
    pub platform: Option<Word>,
    pub commands: Vec<Command>,
    pub node: Node,
}

/// A Dockerfile as stages.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// ARGs before the first FROM.
    pub meta_args: Vec<Command>,
    pub stages: Vec<Stage>,
    pub ast: Ast,
}

/// Parser failure inside an instruction: byte offset and message.
type Fail = (usize, String);

/// Types every node of `ast`.
pub fn from_ast(file: &SourceFile, ast: Ast) -> Result<Dockerfile, Diagnostic> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.nodes {
        // BuildKit's `parseError`: what typing an instruction finds is a
        // "dockerfile parse error on line N".
        let located = |(offset, msg): Fail| {
            let msg = format!("dockerfile parse error on line {}: {msg}", node.start_line);
            Diagnostic::at(file, offset, msg).with_end_line(node.end_line)
        };
        if node.command() == "from" {
            stages.push(parse_from(node).map_err(located)?);
            continue;
        }
        let instruction = parse_instruction(node).map_err(located)?;
        let cmd = Command {
            instruction,
            node: node.clone(),
        };
        match stages.last_mut() {
            Some(stage) => stage.commands.push(cmd),
            None if matches!(cmd.instruction, Instruction::Arg(_)) => meta_args.push(cmd),
            None => {
                return Err(Diagnostic::at(
                    file,
                    node.offset,
                    format!(
                        "{} instruction before the first FROM: only ARG may precede FROM (no build stage in current context)",
                        node.keyword.to_uppercase()
                    ),
                )
                .with_end_line(node.end_line));
            }
        }
    }
    Ok(Dockerfile {
        meta_args,
        stages,
        ast,
    })
}

const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Types one instruction (not FROM).
pub fn parse_instruction(node: &Node) -> Result<Instruction, Fail> {
    let cmd = node.command();
    let name = cmd.to_uppercase();
    match cmd.as_str() {
        "env" => {
            Flags::parse(node, &[])?;
            Ok(Instruction::Env(key_values(node, "ENV")?))
        }
        "maintainer" => {
            let w = exactly_one(node, "MAINTAINER")?;
            Flags::parse(node, &[])?;
            Ok(Instruction::Maintainer(w))
        }
        "label" => {
            Flags::parse(node, &[])?;
            Ok(Instruction::Label(key_values(node, "LABEL")?))
        }
        "add" => parse_add(node),
        "copy" => parse_copy(node),
        "onbuild" => parse_onbuild(node),
        "workdir" => {
            let w = exactly_one(node, "WORKDIR")?;
            Flags::parse(node, &[])?;
            Ok(Instruction::Workdir(w))
        }
        "run" => parse_run(node),
        "cmd" => {
            Flags::parse(node, &[])?;
            Ok(Instruction::Cmd(cmd_line(node)))
        }
        "entrypoint" => {
            Flags::parse(node, &[])?;
            Ok(Instruction::Entrypoint(cmd_line(node)))
        }
        "healthcheck" => parse_healthcheck(node),
        "expose" => {
            if node.args.is_empty() {
                return Err((node.offset, at_least_one("EXPOSE")));
            }
            Flags::parse(node, &[])?;
            let mut ports = node.args.clone();
            ports.sort_by(|a, b| a.value.cmp(&b.value));
            Ok(Instruction::Expose(ports))
        }
        "user" => {
            let w = exactly_one(node, "USER")?;
            Flags::parse(node, &[])?;
            Ok(Instruction::User(w))
        }
        "volume" => {
            if node.args.is_empty() {
                return Err((node.offset, at_least_one("VOLUME")));
            }
            Flags::parse(node, &[])?;
            let mut out = Vec::new();
            for w in &node.args {
                let v = w.value.trim();
                if v.is_empty() {
                    return Err((
                        w.offset,
                        "VOLUME specified can not be an empty string".into(),
                    ));
                }
                out.push(Word {
                    value: v.to_owned(),
                    offset: w.offset,
                });
            }
            Ok(Instruction::Volume(out))
        }
        "stopsignal" => {
            let w = exactly_one(node, "STOPSIGNAL")?;
            // BuildKit does not look at STOPSIGNAL's flags; kiln rejects them
            // rather than ignore them silently.
            Flags::parse(node, &[])?;
            Ok(Instruction::StopSignal(w))
        }
        "arg" => parse_arg(node),
        "shell" => {
            Flags::parse(node, &[])?;
            let line = cmd_line(node);
            if line.args.is_empty() {
                return Err((node.offset, at_least_one("SHELL")));
            }
            if !node.json {
                return Err((
                    node.args_offset,
                    format!(
                        "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"] (got {})",
                        node.original.trim()
                    ),
                ));
            }
            Ok(Instruction::Shell(line.args))
        }
        "from" => Err((node.offset, "FROM is not allowed here".into())),
        _ => {
            let mut msg = format!("unknown instruction: {}", node.keyword);
            if let Some(s) = did_you_mean(&cmd, INSTRUCTIONS) {
                msg.push_str(&format!(" (did you mean {}?)", s.to_uppercase()));
            }
            let _ = name;
            Err((node.offset, msg))
        }
    }
}

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}

fn exactly_one(node: &Node, cmd: &str) -> Result<Word, Fail> {
    match node.args.as_slice() {
        [w] => Ok(w.clone()),
        _ => Err((node.offset, format!("{cmd} requires exactly one argument"))),
    }
}

fn key_values(node: &Node, cmd: &str) -> Result<Vec<KeyValue>, Fail> {
    if node.args.is_empty() {
        return Err((node.offset, at_least_one(cmd)));
    }
    let mut out = Vec::new();
    for triple in node.args.chunks(3) {
        let [k, v, sep] = triple else {
            return Err((
                node.offset,
                format!("Bad input to {cmd}, too many arguments"),
            ));
        };
        if k.value.is_empty() {
            return Err((k.offset, format!("{cmd} names can not be blank")));
        }
        out.push(KeyValue {
            key: k.clone(),
            value: v.clone(),
            legacy: sep.value.is_empty(),
        });
    }
    Ok(out)
}

/// `handleJSONArgs` and the heredoc files of RUN/CMD/ENTRYPOINT.
fn cmd_line(node: &Node) -> CmdLine {
    let values: Vec<String> = node.args.iter().map(|w| w.value.clone()).collect();
    let args = if node.json || values.is_empty() {
        values
    } else {
        vec![values.join(" ")]
    };
    CmdLine {
        args,
        files: node
            .heredocs
            .iter()
            .map(|h| InlineFile {
                name: h.name.clone(),
                data: h.content.clone(),
                chomp: h.chomp,
            })
            .collect(),
        prepend_shell: !node.json,
    }
}

fn parse_from(node: &Node) -> Result<Stage, Fail> {
    let args = &node.args;
    let name = match args.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.value.eq_ignore_ascii_case("as") => {
            let lower = name.value.to_lowercase();
            let valid = lower.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && lower.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !valid {
                return Err((
                    name.offset,
                    format!(
                        "invalid name for build stage: {}, name can't start with a number or contain symbols",
                        go_quote(&name.value)
                    ),
                ));
            }
            Some(lower)
        }
        _ => {
            let at = args.get(1).map_or(node.offset, |w| w.offset);
            return Err((
                at,
                "FROM requires either one or three arguments (FROM <image> [AS <name>])".into(),
            ));
        }
    };
    let flags = Flags::parse(node, &[("platform", Kind::Str)])?;
    Ok(Stage {
        name,
        base: args[0].clone(),
        platform: flags.word("platform"),
        commands: Vec::new(),
        node: node.clone(),
    })
}

fn sources_and_dest(node: &Node, cmd: &str) -> Result<SourcesAndDest, Fail> {
    let Some((dest, srcs)) = node.args.split_last() else {
        return Err((node.offset, no_destination(cmd)));
    };
    if syntax::parse_heredoc(&dest.value).ok().flatten().is_some() {
        return Err((
            dest.offset,
            format!("{cmd} cannot accept a heredoc as a destination"),
        ));
    }
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for src in srcs {
        match syntax::parse_heredoc(&src.value).ok().flatten() {
            Some(h) => {
                let doc: Option<&Heredoc> = node.heredocs.iter().find(|d| d.name == h.name);
                let mut data = doc.map(|d| d.content.clone()).unwrap_or_default();
                if h.chomp {
                    data = syntax::chomp_heredoc_content(&data);
                }
                inline.push(InlineSource {
                    name: h.name,
                    data,
                    expand: h.expand,
                });
            }
            None => sources.push(src.clone()),
        }
    }
    Ok(SourcesAndDest {
        sources,
        inline,
        dest: dest.clone(),
    })
}

fn no_destination(cmd: &str) -> String {
    format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
    )
}

fn parse_add(node: &Node) -> Result<Instruction, Fail> {
    if node.args.len() < 2 {
        return Err((node.offset, no_destination("ADD")));
    }
    let f = Flags::parse(
        node,
        &[
            ("chown", Kind::Str),
            ("chmod", Kind::Str),
            ("link", Kind::Bool),
            ("keep-git-dir", Kind::Bool),
            ("checksum", Kind::Str),
            ("unpack", Kind::Bool),
            ("exclude", Kind::Strs),
        ],
    )?;
    Ok(Instruction::Add(Add {
        paths: sources_and_dest(node, "ADD")?,
        chown: f.word("chown"),
        chmod: f.word("chmod"),
        link: f.bool("link").unwrap_or(false),
        keep_git_dir: f.bool("keep-git-dir"),
        checksum: f.word("checksum"),
        unpack: f.bool("unpack"),
        excludes: f.words("exclude"),
    }))
}

fn parse_copy(node: &Node) -> Result<Instruction, Fail> {
    if node.args.len() < 2 {
        return Err((node.offset, no_destination("COPY")));
    }
    let f = Flags::parse(
        node,
        &[
            ("chown", Kind::Str),
            ("from", Kind::Str),
            ("chmod", Kind::Str),
            ("link", Kind::Bool),
            ("exclude", Kind::Strs),
            ("parents", Kind::Bool),
        ],
    )?;
    Ok(Instruction::Copy(Copy {
        paths: sources_and_dest(node, "COPY")?,
        from: f.word("from"),
        chown: f.word("chown"),
        chmod: f.word("chmod"),
        link: f.bool("link").unwrap_or(false),
        parents: f.bool("parents").unwrap_or(false),
        excludes: f.words("exclude"),
    }))
}

fn parse_onbuild(node: &Node) -> Result<Instruction, Fail> {
    let Some(sub) = &node.sub else {
        return Err((node.offset, at_least_one("ONBUILD")));
    };
    Flags::parse(node, &[])?;
    let trigger = sub.keyword.to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err((
                sub.offset,
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
            ));
        }
        "MAINTAINER" | "FROM" => {
            return Err((
                sub.offset,
                format!("{trigger} isn't allowed as an ONBUILD trigger"),
            ));
        }
        _ => {}
    }
    // The trigger must itself be a valid instruction.
    parse_instruction(sub)?;
    // `(?i)^\s*ONBUILD\s*` removed from the original line.
    let original = node.original.trim_start_matches(char::is_whitespace);
    let mut expr = match original.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => original[7..]
            .trim_start_matches(char::is_whitespace)
            .to_owned(),
        _ => original.to_owned(),
    };
    for doc in &node.heredocs {
        expr.push('\n');
        expr.push_str(&doc.content);
        expr.push_str(&doc.name);
    }
    Ok(Instruction::Onbuild(expr))
}

fn parse_run(node: &Node) -> Result<Instruction, Fail> {
    let f = Flags::parse(
        node,
        &[
            ("mount", Kind::Strs),
            ("network", Kind::Str),
            ("security", Kind::Str),
            ("device", Kind::Strs),
        ],
    )?;
    if let Some(d) = f.words("device").first() {
        return Err((
            d.offset,
            "RUN --device is only available in the docker/dockerfile:1-labs syntax, which kiln does not support".into(),
        ));
    }
    let network = match f.word("network") {
        None => Network::Default,
        Some(w) => match w.value.as_str() {
            "default" => Network::Default,
            "none" => Network::None,
            "host" => Network::Host,
            other => {
                return Err((
                    w.offset,
                    format!(
                        "invalid network mode {} (expected default, none or host)",
                        go_quote(other)
                    ),
                ));
            }
        },
    };
    let security = match f.word("security") {
        None => Security::Sandbox,
        Some(w) => match w.value.as_str() {
            "sandbox" => Security::Sandbox,
            "insecure" => Security::Insecure,
            other => {
                return Err((
                    w.offset,
                    format!(
                        "security {} is not valid (expected sandbox or insecure)",
                        go_quote(other)
                    ),
                ));
            }
        },
    };
    let mounts = f.words("mount");
    for m in &mounts {
        crate::mount::check_unexpanded(&m.value).map_err(|e| (m.offset, e))?;
    }
    Ok(Instruction::Run(Run {
        cmd: cmd_line(node),
        mounts,
        network,
        security,
    }))
}

fn parse_healthcheck(node: &Node) -> Result<Instruction, Fail> {
    let Some(typ) = node.args.first() else {
        return Err((node.offset, at_least_one("HEALTHCHECK")));
    };
    let kind = typ.value.to_uppercase();
    let rest = &node.args[1..];
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err((rest[0].offset, "HEALTHCHECK NONE takes no arguments".into()));
        }
        // BuildKit ignores flags on HEALTHCHECK NONE; kiln rejects them.
        Flags::parse(node, &[])?;
        return Ok(Instruction::Healthcheck(Healthcheck::None));
    }
    let f = Flags::parse(
        node,
        &[
            ("interval", Kind::Str),
            ("timeout", Kind::Str),
            ("start-period", Kind::Str),
            ("start-interval", Kind::Str),
            ("retries", Kind::Str),
        ],
    )?;
    if kind != "CMD" {
        return Err((
            typ.offset,
            format!(
                "Unknown type {} in HEALTHCHECK (try CMD)",
                go_quote(&typ.value)
            ),
        ));
    }
    let values: Vec<String> = rest.iter().map(|w| w.value.clone()).collect();
    let cmd = if node.json || values.is_empty() {
        values
    } else {
        vec![values.join(" ")]
    };
    if cmd.is_empty() {
        return Err((typ.offset, "Missing command after HEALTHCHECK CMD".into()));
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_owned()];
    test.extend(cmd);
    let duration = |name: &str| -> Result<Duration, Fail> {
        match f.word(name) {
            None => Ok(Duration::ZERO),
            Some(w) if w.value.is_empty() => Ok(Duration::ZERO),
            Some(w) => {
                let n = crate::duration::parse_go_duration_nanos(&w.value).map_err(|e| {
                    (
                        w.offset,
                        format!("invalid --{name} {}: {e}", go_quote(&w.value)),
                    )
                })?;
                if n == 0 {
                    return Ok(Duration::ZERO);
                }
                if n < 1_000_000 {
                    return Err((
                        w.offset,
                        format!("Interval \"{name}\" cannot be less than 1ms"),
                    ));
                }
                Ok(Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX)))
            }
        }
    };
    let retries = match f.word("retries") {
        None => 0,
        Some(w) if w.value.is_empty() => 0,
        Some(w) => {
            let n: i64 = w
                .value
                .parse()
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    (
                        w.offset,
                        format!("invalid --retries {}: not a number", go_quote(&w.value)),
                    )
                })?;
            if n < 0 {
                return Err((w.offset, format!("--retries cannot be negative ({n})")));
            }
            i32::try_from(n).unwrap_or(i32::MAX)
        }
    };
    Ok(Instruction::Healthcheck(Healthcheck::Cmd {
        test,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    }))
}

fn parse_arg(node: &Node) -> Result<Instruction, Fail> {
    if node.args.is_empty() {
        return Err((node.offset, at_least_one("ARG")));
    }
    Flags::parse(node, &[])?;
    let mut out = Vec::new();
    for w in &node.args {
        let def = match w.value.split_once('=') {
            Some((k, v)) => {
                if k.is_empty() {
                    return Err((w.offset, "ARG names can not be blank".into()));
                }
                ArgDef {
                    key: Word {
                        value: k.to_owned(),
                        offset: w.offset,
                    },
                    default: Some(Word {
                        value: v.to_owned(),
                        offset: w.offset + k.len() + 1,
                    }),
                }
            }
            None => ArgDef {
                key: w.clone(),
                default: None,
            },
        };
        out.push(def);
    }
    Ok(Instruction::Arg(out))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    Strs,
}

/// Builder flags of one instruction, checked (BuildKit's `BFlags`).
struct Flags {
    values: Vec<(&'static str, Word)>,
}

impl Flags {
    fn parse(node: &Node, allowed: &[(&'static str, Kind)]) -> Result<Flags, Fail> {
        let mut values: Vec<(&'static str, Word)> = Vec::new();
        for flag in &node.flags {
            let a = flag.value.as_str();
            if a == "--" {
                break;
            }
            let Some(body) = a.strip_prefix("--") else {
                return Err((flag.offset, format!("arg should start with -- : {a}")));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(known, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let mut msg = format!("unknown flag: --{name}");
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                if let Some(s) = did_you_mean(name, names) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                } else if allowed.is_empty() {
                    msg.push_str(&format!(
                        " ({} takes no flags)",
                        node.keyword.to_uppercase()
                    ));
                }
                return Err((flag.offset, msg));
            };
            if kind != Kind::Strs && values.iter().any(|(n, _)| *n == known) {
                return Err((flag.offset, format!("duplicate flag specified: --{name}")));
            }
            let value = match kind {
                Kind::Bool => match value {
                    Some("") => {
                        return Err((flag.offset, format!("missing a value on flag: --{name}")));
                    }
                    None => "true".to_owned(),
                    Some(v) if v.eq_ignore_ascii_case("true") => "true".to_owned(),
                    Some(v) if v.eq_ignore_ascii_case("false") => "false".to_owned(),
                    Some(v) => {
                        return Err((
                            flag.offset,
                            format!("expecting boolean value for flag --{name}, not: {v}"),
                        ));
                    }
                },
                Kind::Str | Kind::Strs => match value {
                    None => {
                        return Err((flag.offset, format!("missing a value on flag: --{name}")));
                    }
                    Some(v) => v.to_owned(),
                },
            };
            values.push((
                known,
                Word {
                    value,
                    // Point at the value, after `--name=`.
                    offset: flag.offset + 3 + name.len(),
                },
            ));
        }
        Ok(Flags { values })
    }

    fn word(&self, name: &str) -> Option<Word> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| w.clone())
    }

    fn words(&self, name: &str) -> Vec<Word> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, w)| w.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.word(name).map(|w| w.value == "true")
    }
}
