//! The typed operations of the graph.
//!
//! An op refers to the filesystems it reads through *input indices*: positions in
//! the `inputs` list of its vertex, which holds the digests of other vertices. The
//! op itself therefore never names another vertex directly, and two ops that do the
//! same thing to the same inputs encode to the same bytes.
//!
//! Every optional or empty field is left out of the encoding, so adding a field
//! later does not change the digest of graphs that do not use it.

use serde::{Deserialize, Serialize};

use crate::platform::Platform;

/// Position of an input in [`crate::Vertex::inputs`].
pub type InputIndex = u32;

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Source(SourceOp),
    Exec(ExecOp),
    File(FileOp),
    Merge(MergeOp),
}

impl Op {
    /// `source`, `exec`, `file` or `merge`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Source(_) => "source",
            Op::Exec(_) => "exec",
            Op::File(_) => "file",
            Op::Merge(_) => "merge",
        }
    }

    /// Every input index the op refers to, in order of appearance.
    pub fn input_refs(&self) -> Vec<InputIndex> {
        match self {
            Op::Source(_) => Vec::new(),
            Op::Exec(e) => e.mounts.iter().filter_map(|m| m.input).collect(),
            Op::File(f) => f
                .base
                .into_iter()
                .chain(f.actions.iter().filter_map(|a| match a {
                    FileAction::Copy(c) => c.from,
                    _ => None,
                }))
                .collect(),
            Op::Merge(m) => m.inputs.clone(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum SourceOp {
    /// A container image. `reference` is fully qualified
    /// (`docker.io/library/alpine:3.20`); `digest` is the manifest digest once the
    /// reference has been resolved.
    Image {
        reference: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        platform: Platform,
    },
    /// A build context, named, never located: `context` is the main context,
    /// other names come from `--build-context`. Which paths of it are read is
    /// recorded by the ops that read it (and summed up in
    /// [`crate::Definition::context_paths`]), so adding a COPY does not change
    /// the digest of every other vertex that reads the context.
    Local { name: String },
    /// A git repository at a ref.
    Git {
        remote: String,
        #[serde(default, skip_serializing_if = "String::is_empty", rename = "ref")]
        git_ref: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        subdir: String,
        #[serde(default, skip_serializing_if = "is_false")]
        keep_git_dir: bool,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        checksum: String,
        #[serde(default, skip_serializing_if = "is_false")]
        skip_submodules: bool,
    },
    /// A file downloaded over HTTP(S), stored under `filename`.
    Http {
        url: String,
        filename: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        checksum: String,
    },
}

/// `RUN --network`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

impl Network {
    pub fn is_default(&self) -> bool {
        *self == Network::Default
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Network::Default => "default",
            Network::None => "none",
            Network::Host => "host",
        }
    }
}

/// `RUN --security`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

impl Security {
    pub fn is_sandbox(&self) -> bool {
        *self == Security::Sandbox
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Security::Sandbox => "sandbox",
            Security::Insecure => "insecure",
        }
    }
}

/// Proxy variables handed to RUN steps from the predefined build args. They reach
/// the process environment but must never decide whether a step is cached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProxyEnv {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_proxy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub https_proxy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ftp_proxy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub no_proxy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub all_proxy: String,
}

impl ProxyEnv {
    pub fn is_empty(&self) -> bool {
        *self == ProxyEnv::default()
    }
}

/// A process run in a container (`RUN`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecOp {
    pub args: Vec<String>,
    /// `KEY=value`, in order.
    pub env: Vec<String>,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The root filesystem is the mount with target `/` and `output: true`.
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Network::is_default")]
    pub network: Network,
    #[serde(default, skip_serializing_if = "Security::is_sandbox")]
    pub security: Security,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "ProxyEnv::is_empty")]
    pub proxy_env: ProxyEnv,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// The platform the process runs as (its stage's): part of the digest,
    /// because the same command gives a different result on another
    /// architecture, and what tells the worker whether it needs emulation.
    /// (Boxed: most ops are not execs, and `Op` stays small.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Box<Platform>>,
}

/// `RUN --device`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
}

/// A filesystem made visible to an exec op.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container. Empty only for an env-only secret.
    pub target: String,
    /// The input that provides the content; `None` is an empty filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputIndex>,
    /// Path inside the input that is mounted (`/` for all of it).
    #[serde(default = "root", skip_serializing_if = "is_root")]
    pub source: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
    /// Whether the changes made under this mount are the op's result.
    #[serde(default, skip_serializing_if = "is_false")]
    pub output: bool,
    #[serde(flatten)]
    pub kind: MountKind,
}

impl Mount {
    /// An exec's root filesystem: `input` (`None`: an empty one) mounted
    /// read-write at `/`, its changes the op's result.
    pub fn root(input: Option<InputIndex>) -> Mount {
        Mount {
            target: "/".to_owned(),
            input,
            source: root(),
            readonly: false,
            output: true,
            kind: MountKind::Bind,
        }
    }
}

fn root() -> String {
    "/".to_owned()
}
fn is_root(s: &String) -> bool {
    s == "/"
}

/// The kind of a mount and the fields only that kind has.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    Bind,
    Cache {
        id: String,
        sharing: CacheSharing,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    Tmpfs {
        /// Bytes; 0 is the kernel default.
        #[serde(default, skip_serializing_if = "is_zero")]
        size: u64,
    },
    Secret {
        id: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        env: String,
        #[serde(default, skip_serializing_if = "is_false")]
        required: bool,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    Ssh {
        id: String,
        #[serde(default, skip_serializing_if = "is_false")]
        required: bool,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `RUN --mount=type=cache,sharing=...`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

impl CacheSharing {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }
}

/// Edits to a filesystem (`COPY`, `ADD`, `WORKDIR`, heredoc files).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileOp {
    /// The filesystem the actions apply to; `None` starts from an empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<InputIndex>,
    /// Applied in order, each to the result of the previous one.
    pub actions: Vec<FileAction>,
}

/// One edit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FileAction {
    Copy(Copy),
    Mkfile(Mkfile),
    Mkdir(Mkdir),
    Rm(Rm),
}

/// Copy `src` of input `from` (`None`: an empty filesystem) to `dest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Copy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<InputIndex>,
    pub src: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<Chown>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Chmod>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow_symlinks: bool,
    /// Copy the contents of a source directory, not the directory itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub contents_only: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Paths that must exist (`COPY --parents` without wildcards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// Unpack local tar archives (`ADD`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unpack: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub create_dest_path: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_wildcard: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_empty_wildcard: bool,
}

/// Create a file with fixed content.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mkfile {
    pub path: String,
    pub mode: u32,
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<Chown>,
}

/// Create a directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mkdir {
    pub path: String,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub parents: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<Chown>,
}

/// Remove a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rm {
    pub path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_not_found: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_wildcard: bool,
}

/// Owner of copied or created files. Names are looked up in the destination's
/// `/etc/passwd` and `/etc/group` when the op runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chown {
    pub user: IdOrName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<IdOrName>,
}

/// A numeric id or a name to look up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

impl IdOrName {
    /// A number if `s` is one (as Go's `strconv.Atoi` would read it), else a name.
    pub fn parse(s: &str) -> IdOrName {
        match s.parse::<u32>() {
            Ok(n) if !s.starts_with('+') => IdOrName::Id(n),
            _ => IdOrName::Name(s.to_owned()),
        }
    }
}

impl std::fmt::Display for IdOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdOrName::Id(n) => write!(f, "{n}"),
            IdOrName::Name(s) => f.write_str(s),
        }
    }
}

impl std::fmt::Display for Chown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.user)?;
        if let Some(g) = &self.group {
            write!(f, ":{g}")?;
        }
        Ok(())
    }
}

/// Mode of copied files: octal bits, or a symbolic expression (`u=rwX,go=rX`)
/// applied to each file's own mode.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chmod {
    Octal(u32),
    Symbolic(String),
}

impl std::fmt::Display for Chmod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chmod::Octal(m) => write!(f, "{m:04o}"),
            Chmod::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Layer the inputs on top of each other, first at the bottom (`COPY --link`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MergeOp {
    pub inputs: Vec<InputIndex>,
}
