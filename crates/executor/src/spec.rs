//! What to run: the [`RunSpec`] the caller hands over, and the wire format
//! between the caller and the helper process.

use std::path::PathBuf;

use nix::sys::resource::Resource;
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
    /// (`kiln_snapshot::Snapshotter::mount_reusing`).
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
    /// `--shm-size` and `--ulimit`.
    #[serde(default)]
    pub resources: Resources,
}

/// What a step gets besides its control groups' limits: the size of its
/// `/dev/shm` (`docker build --shm-size`) and its resource limits
/// (`--ulimit`), as BuildKit's `shm-size` and `ulimit` options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Bytes; `None` is 64 MiB, Docker's default.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Set by the step's pid 1 before it execs, in order.
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
}

/// One `--ulimit NAME=SOFT[:HARD]` (`-1` is unlimited), as
/// `github.com/docker/go-units.ParseUlimit` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// go-units' name: `nofile`, `nproc`, `core`, …
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// The resource `name` stands for.
    pub(crate) fn resource(&self) -> Option<Resource> {
        ULIMIT_NAMES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, r)| *r)
    }
}

/// A `--ulimit` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    #[error("invalid ulimit argument: {0}")]
    Argument(String),
    #[error("invalid ulimit type: {0}")]
    Type(String),
    #[error("too many limit value arguments - {0}, can only have up to two, `soft[:hard]`")]
    TooMany(String),
    #[error("invalid ulimit value {0:?}")]
    Value(String),
    #[error("ulimit soft limit must be less than or equal to hard limit: {0} > {1}")]
    SoftAboveHard(i64, i64),
}

/// go-units' names.
const ULIMIT_NAMES: [(&str, Resource); 15] = [
    ("core", Resource::RLIMIT_CORE),
    ("cpu", Resource::RLIMIT_CPU),
    ("data", Resource::RLIMIT_DATA),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("locks", Resource::RLIMIT_LOCKS),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE),
    ("nice", Resource::RLIMIT_NICE),
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("rss", Resource::RLIMIT_RSS),
    ("rtprio", Resource::RLIMIT_RTPRIO),
    ("rttime", Resource::RLIMIT_RTTIME),
    ("sigpending", Resource::RLIMIT_SIGPENDING),
    ("stack", Resource::RLIMIT_STACK),
];

impl std::str::FromStr for Ulimit {
    type Err = UlimitError;

    fn from_str(val: &str) -> Result<Ulimit, UlimitError> {
        let (name, limits) = val
            .split_once('=')
            .ok_or_else(|| UlimitError::Argument(val.to_owned()))?;
        if !ULIMIT_NAMES.iter().any(|(n, _)| *n == name) {
            return Err(UlimitError::Type(name.to_owned()));
        }
        let parts: Vec<&str> = limits.split(':').collect();
        if parts.len() > 2 {
            return Err(UlimitError::TooMany(limits.to_owned()));
        }
        let num = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| UlimitError::Value(s.to_owned()))
        };
        let soft = num(parts[0])?;
        let hard = match parts.get(1) {
            Some(h) => num(h)?,
            None => soft,
        };
        if soft > hard && hard != -1 {
            return Err(UlimitError::SoftAboveHard(soft, hard));
        }
        // -1 (or any negative value, as Go's conversion to rlimit gives) is
        // RLIM_INFINITY.
        let lim = |v: i64| u64::try_from(v).unwrap_or(libc::RLIM_INFINITY);
        Ok(Ulimit {
            name: name.to_owned(),
            soft: lim(soft),
            hard: lim(hard),
        })
    }
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
    /// How the helper mounts the root filesystem: the name of the caller's
    /// snapshotter (`kiln_snapshot::snapshotter_named`).
    pub snapshotter: String,
    /// How the helper records deletions: the caller's snapshotter's
    /// (`kiln_snapshot::Snapshotter::whiteouts`).
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
    /// The step's cgroup v2 group: the helper forks the step's pid 1 into
    /// it (`sys::fork_into_cgroup`); the caller put the helper in the v1
    /// groups only.
    #[serde(default)]
    pub v2_group: Option<PathBuf>,
    /// `kiln run`: the process's stdio is a terminal or descriptors of the
    /// caller's, handed to the helper as its descriptor 3 (`Attach`);
    /// `None` for RUN steps (stdin `/dev/null`, output through pipes).
    #[serde(default)]
    pub attach: Option<AttachMode>,
}

/// How a process attached to the caller's stdio gets it (`kiln run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Descriptor 3 becomes stdin; stdout and stderr are the helper's own
    /// (the caller's). `docker run -i`.
    Stdin,
    /// Output only: stdin is `/dev/null`, stdout and stderr the caller's.
    /// `docker run` without `-i`.
    Output,
    /// Descriptor 3 is a Unix socket: the helper makes a terminal in the
    /// container's devpts, sends its primary side over the socket, and
    /// makes the secondary side stdin, stdout, stderr and the session's
    /// controlling terminal. `docker run -t`.
    Tty,
}

/// What the helper reports when it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// The process ran and exited with this code.
    Exited(i32),
    /// The process was killed by this signal.
    Signaled(i32),
    /// The container could not be set up.
    SetupError(String),
    /// The container was set up but the command could not be started.
    NotStarted(crate::error::StartFailure),
}

/// What a step's process writes to its helper when it fails before its
/// `execve` succeeds (JSON over a close-on-exec pipe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChildError {
    Setup(String),
    NotStarted(crate::error::StartFailure),
}

impl From<String> for ChildError {
    fn from(s: String) -> Self {
        ChildError::Setup(s)
    }
}

impl ChildError {
    /// Writes `self` to the helper's pipe (best effort: the step's process
    /// exits right after).
    pub(crate) fn send(&self, to: std::os::fd::OwnedFd) {
        use std::io::Write as _;
        let body = serde_json::to_vec(self).unwrap_or_else(|_| b"\"setup\"".to_vec());
        let _ = std::fs::File::from(to).write_all(&body);
    }

    /// What the helper read from the pipe: `None` when the command started
    /// (the pipe closed on exec, nothing written).
    pub(crate) fn receive(from: std::os::fd::OwnedFd) -> Option<Status> {
        use std::io::Read as _;
        let mut body = Vec::new();
        let _ = std::fs::File::from(from).read_to_end(&mut body);
        if body.is_empty() {
            return None;
        }
        Some(match serde_json::from_slice(&body) {
            Ok(ChildError::Setup(m)) => Status::SetupError(m),
            Ok(ChildError::NotStarted(f)) => Status::NotStarted(f),
            Err(_) => Status::SetupError(String::from_utf8_lossy(&body).into_owned()),
        })
    }
}

/// Bytes reserved for the helper's status file (a status is far smaller).
pub(crate) const STATUS_RESERVE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_as_go_units_reads_them() {
        let u = |s: &str| s.parse::<Ulimit>();
        assert_eq!(
            u("nofile=1062:1062"),
            Ok(Ulimit {
                name: "nofile".into(),
                soft: 1062,
                hard: 1062
            })
        );
        assert_eq!(
            u("nproc=100"),
            Ok(Ulimit {
                name: "nproc".into(),
                soft: 100,
                hard: 100
            })
        );
        assert_eq!(u("core=-1").map(|u| u.hard), Ok(libc::RLIM_INFINITY));
        assert_eq!(u("nofile"), Err(UlimitError::Argument("nofile".into())));
        assert_eq!(u("files=1"), Err(UlimitError::Type("files".into())));
        assert_eq!(u("nofile=1:2:3"), Err(UlimitError::TooMany("1:2:3".into())));
        assert_eq!(u("nofile=x"), Err(UlimitError::Value("x".into())));
        assert_eq!(u("nofile=20:10"), Err(UlimitError::SoftAboveHard(20, 10)));
    }
}
