//! What to run: the [`RunSpec`] the caller hands over, and the wire format
//! between the caller and the helper process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The root filesystem: an overlay of `lowers` with a writable `upper`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    /// Layer directories, bottom first (may be empty).
    pub lowers: Vec<PathBuf>,
    /// Receives every change the process makes (the new layer).
    pub upper: PathBuf,
    /// Overlay's work directory, on the upper's filesystem.
    pub work: PathBuf,
    /// An empty directory to mount the root on (only inside the helper's
    /// mount namespace; it stays empty for everyone else).
    pub mountpoint: PathBuf,
    /// With the native snapshotter: where the previous step may have left
    /// the tree of `lowers`, and where this step leaves its own
    /// (`kiln_snapshot::mount_layers_reusing`).
    #[serde(default)]
    pub views: Option<PathBuf>,
}

/// The network a RUN step sees (see `network.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// A network namespace of the step's own, with outbound access through
    /// slirp4netns (BuildKit's default: a namespace per RUN step).
    #[default]
    Isolated,
    /// The host's network namespace (`--network=host`, an entitlement).
    Host,
    /// A new, empty network namespace with only the loopback interface, up.
    None,
}

/// An extra mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraMount {
    /// Absolute path in the container.
    pub target: String,
    pub kind: MountKind,
}

/// What an [`ExtraMount`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// A host file or directory.
    Bind { source: PathBuf, readonly: bool },
    /// A fresh tmpfs (`size` bytes, 0 for the kernel default).
    Tmpfs { size: u64 },
    /// A file with `data` as its content, owner `uid:gid` and `mode`, written
    /// to a tmpfs private to the step and bind-mounted read-only (secrets:
    /// the content never touches a disk).
    SecretFile {
        data: SecretData,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

/// Secret bytes: carried to the helper over its stdin pipe, never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub Vec<u8>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretData(<{} bytes>)", self.0.len())
    }
}

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    pub rootfs: Rootfs,
    /// argv; a bare `args[0]` is looked up in the `PATH` of `env`.
    pub args: Vec<String>,
    /// The whole environment, `KEY=value`. `HOME` is added from the user's
    /// passwd entry when missing, as BuildKit does.
    pub env: Vec<String>,
    /// Working directory, created when missing.
    pub cwd: String,
    /// `USER`: `""`, `name`, `uid`, `name:group`, `uid:gid`.
    pub user: String,
    pub hostname: String,
    pub network: Network,
    /// Mounted in order, after the container's own mounts (sort parents
    /// before children).
    pub mounts: Vec<ExtraMount>,
    /// `RUN --security=insecure`: every capability, writable `/sys`, no
    /// masked or read-only `/proc` paths.
    #[serde(default)]
    pub privileged: bool,
    /// Memory and process limits (`kiln build --memory`, `--pids-limit`).
    #[serde(default)]
    pub limits: crate::cgroup::Limits,
}

/// What the caller sends the helper on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub spec: RunSpec,
    /// Where the helper writes its [`Status`].
    pub status: PathBuf,
    /// The container's `/etc/resolv.conf` (`network::resolv_conf`).
    pub resolv_conf: String,
    /// The network namespace to join (`Network::Isolated`), as a path.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// How the helper mounts the root filesystem: the caller's snapshotter.
    #[serde(default)]
    pub snapshotter: kiln_snapshot::Snapshotter,
    /// How the helper records deletions: the caller's whiteout format.
    #[serde(default)]
    pub whiteouts: kiln_snapshot::WhiteoutFormat,
    /// The step's seccomp filter (BPF instructions, hex), compiled once per
    /// kiln process (`seccomp.rs`); `None` for `--security=insecure`.
    #[serde(default)]
    pub seccomp: Option<String>,
    /// The step's control groups, bind-mounted read-only at
    /// `/sys/fs/cgroup` (`plan::cgroup_steps`): (name, host directory).
    #[serde(default)]
    pub cgroups: Vec<(String, PathBuf)>,
}

/// What the helper reports when it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// The process ran and exited with this code.
    Exited(i32),
    /// The process was killed by this signal.
    Signaled(i32),
    /// The container could not be set up or the command not started.
    SetupError(String),
}
