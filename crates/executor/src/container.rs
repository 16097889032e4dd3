//! The `container` isolation mode: RUN steps in a single-use container that
//! may not make namespaces or mounts (Docker's default capabilities,
//! seccomp profile and AppArmor profile; a Kubernetes pod without
//! `privileged`), where `unshare(CLONE_NEWNS)` fails.
//!
//! # How
//!
//! As Kaniko does: the container's own root filesystem shows the stack of
//! the step that runs ([`kiln_snapshot::InPlace`]: cleared and filled with
//! the native snapshotter's copies, or brought forward from the previous
//! step's tree), the step runs there with the container's `/proc`, `/dev`,
//! `/sys`, `/etc/hosts` and `/etc/resolv.conf`, and what it changed is
//! diffed into its layer by walking the tree. The paths the container keeps
//! are *excluded* — never filled, removed, walked or diffed: every mount
//! point of the container (`/proc`, `/sys`, `/dev`, the files Docker mounts
//! in `/etc`, volumes: the build context, the state directory when it is a
//! volume), kiln's own directory and state directory, and whatever else the
//! build reads or writes (the cli lists them). `RUN --mount`s are placed in
//! the tree and taken away after the step (`container/mounts.rs`). The
//! process is started by a helper that is the step's subreaper and kills
//! whatever it leaves running (`container/helper.rs`).
//!
//! One root means one step at a time: RUN steps are serialised (file
//! operations, pulls and exports still run in parallel, in trees of their
//! own under the state directory).
//!
//! # What it refuses
//!
//! It replaces the root filesystem, so it refuses to run where that would
//! damage a machine that is not a throwaway container
//! ([`host::container_evidence`]; `--throwaway` overrides), as a user
//! other than root, without the capabilities it needs
//! ([`host::NEEDED_CAPS`]), and as a dynamically linked binary (whose
//! libraries the build would replace). `RUN --network=none` needs a
//! network namespace and `--memory`/`--pids-limit` writable control
//! groups: refused by name.

mod helper;
pub mod host;
mod mounts;

use std::ffi::OsString;
use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use kiln_snapshot::{Exclusions, InPlace, WhiteoutFormat};

use crate::api::{Executor, ExitStatus, Stream};
use crate::cgroup::Limits;
use crate::error::{ExecError, StartFailure};
use crate::isolation::Isolation;
use crate::output::{Chunk, pump};
use crate::spec::STATUS_RESERVE;
use crate::spec::{Network, RunSpec, Status};

pub use helper::helper_main;
use host::{Evidence, HostFacts};

/// kiln's own directory in the tree (excluded, on the root's filesystem):
/// mount targets put aside, probe files.
const WORK: &str = ".kiln-work";

/// Top-level directories of images (and of the Filesystem Hierarchy
/// Standard): kiln's own directory must be none of them, since the build
/// replaces them.
const IMAGE_DIRS: [&str; 17] = [
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt",
    "root", "run", "sbin", "srv", "usr",
];

/// Why the mode cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "--isolation=container replaces the root filesystem with the build's, and {0}: \
         refusing to damage it. If it is a single-use container or machine all the same, \
         say so with --throwaway"
    )]
    NotAContainer(String),
    #[error(
        "--isolation=container needs root in the container (uid 0), this is uid {0}: run \
         the container as root (Docker's default; in Kubernetes, runAsUser: 0)"
    )]
    NotRoot(u32),
    #[error(
        "--isolation=container: this container lacks capabilities kiln needs: {}. \
         Docker's default set has them (`docker run --cap-drop=ALL`, or a pod whose \
         securityContext drops them, removes them): drop fewer, or add these back",
        .0.iter().map(|(n, why)| format!("{n} ({why})")).collect::<Vec<_>>().join(", ")
    )]
    MissingCaps(Vec<(&'static str, &'static str)>),
    #[error(
        "--isolation=container needs a statically linked kiln (kiln's image has one): this \
         kiln loads shared libraries from /lib, which the build replaces"
    )]
    Dynamic,
    #[error(
        "--isolation=container: kiln is at {0}, in a directory the build replaces: run \
         kiln's image (kiln in /kiln/bin), or put kiln in a top-level directory of its own"
    )]
    KilnDir(PathBuf),
    #[error("--isolation=container: {path} cannot be kept apart from the build: {why}")]
    Keep { path: PathBuf, why: String },
}

/// What the mode needs to know from the cli.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The root filesystem steps run in: `/`. (Anywhere else, steps are
    /// chrooted there: how tests run the mode on a host.)
    pub root: PathBuf,
    /// The kiln binary (its top-level directory is kept).
    pub kiln: PathBuf,
    /// `program args…` runs [`helper_main`] (`/proc/self/exe
    /// __exec-container`).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Absolute paths the build must not touch: the state directory, the
    /// build's inputs and outputs, credentials. Need not exist.
    pub keep: Vec<PathBuf>,
    /// How layers record deletions.
    pub whiteouts: WhiteoutFormat,
}

/// The mode (see the module docs).
#[derive(Debug)]
pub struct Container {
    settings: Settings,
    exclusions: Exclusions,
    evidence: Option<Evidence>,
}

impl Container {
    /// Checks that the mode may and can run here (see the module docs;
    /// `throwaway`: the user says this is a throwaway machine) and works
    /// out what the build must keep.
    pub fn new(
        settings: Settings,
        facts: &HostFacts,
        throwaway: bool,
    ) -> Result<Container, ContainerError> {
        let assessment = host::assess(facts);
        let evidence = host::container_evidence(facts);
        if evidence.is_none() && !throwaway {
            let why = match assessment.machine {
                Some(m) if !assessment.clues.is_empty() => {
                    format!("{m} (even though {})", assessment.clues.join("; "))
                }
                Some(m) => m,
                None => "this machine does not look like a throwaway container (no \
                         /.dockerenv, /run/.containerenv, KUBERNETES_SERVICE_HOST, container \
                         variable, container cgroup, engine's root overlay or engine-mounted \
                         /etc/hosts)"
                    .to_owned(),
            };
            return Err(ContainerError::NotAContainer(why));
        }
        if facts.euid != 0 {
            return Err(ContainerError::NotRoot(facts.euid));
        }
        let missing = host::missing_caps(host::effective_caps(&facts.status));
        if !missing.is_empty() {
            return Err(ContainerError::MissingCaps(missing));
        }
        let in_place = settings.root == Path::new("/");
        if in_place && !host::is_static(&facts.maps) {
            return Err(ContainerError::Dynamic);
        }
        let mut exclusions = Exclusions::new();
        let mut keep = |p: &Path| -> Result<(), ContainerError> {
            let Ok(rel) = p.strip_prefix(&settings.root) else {
                return Ok(());
            };
            exclusions.add(rel).map_err(|why| ContainerError::Keep {
                path: p.to_path_buf(),
                why,
            })
        };
        for m in host::parse_mountinfo(&facts.mountinfo) {
            if m.point != settings.root {
                keep(&m.point)?;
            }
        }
        for p in &settings.keep {
            keep(p)?;
        }
        for m in host::MARKERS {
            keep(Path::new(m))?;
        }
        if in_place {
            let first = settings.kiln.components().nth(1).map(|c| c.as_os_str());
            match first {
                Some(d) if !IMAGE_DIRS.iter().any(|x| *x == d) => {
                    keep(&Path::new("/").join(d))?;
                }
                _ => return Err(ContainerError::KilnDir(settings.kiln.clone())),
            }
        }
        Ok(Container {
            settings,
            exclusions,
            evidence,
        })
    }

    /// The mode, its layers recording deletions as `whiteouts` (known once
    /// the state directory is open).
    pub fn with_whiteouts(mut self, whiteouts: WhiteoutFormat) -> Container {
        self.settings.whiteouts = whiteouts;
        self
    }

    /// Why kiln believes it is in a container (none: `--throwaway`).
    pub fn evidence(&self) -> Option<&Evidence> {
        self.evidence.as_ref()
    }

    /// The paths kept apart from the build, relative to the root.
    pub fn kept(&self) -> Vec<&Path> {
        self.exclusions.paths().collect()
    }
}

impl Isolation for Container {
    fn name(&self) -> &'static str {
        "container"
    }

    fn snapshotter(&self) -> Option<Arc<dyn kiln_snapshot::Snapshotter>> {
        Some(Arc::new(kiln_snapshot::Native::unmounted(
            self.settings.whiteouts,
        )))
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), String> {
        if limits.any() {
            return Err("--memory and --pids-limit are not supported with \
                        --isolation=container: the container's control groups are \
                        read-only; set the limits on the container itself"
                .to_owned());
        }
        Ok(())
    }

    /// The steps run in place ([`InPlace`], the native snapshotter's
    /// machinery on the container's root), whatever `_snapshotter` makes the
    /// build's other trees with (the one [`Isolation::snapshotter`] imposes).
    fn executor(
        &self,
        _snapshotter: Arc<dyn kiln_snapshot::Snapshotter>,
    ) -> Result<Arc<dyn Executor>, ExecError> {
        let tree = InPlace::new(
            &self.settings.root,
            self.exclusions.clone(),
            self.settings.whiteouts,
            Path::new(WORK),
        )
        .map_err(|e| ExecError::Setup(e.to_string()))?;
        // Steps run as root beside kiln: they may not read its memory,
        // nor its environment through /proc.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| ExecError::Setup(format!("prctl(PR_SET_DUMPABLE): {e}")))?;
        Ok(Arc::new(ContainerExecutor {
            tree: Mutex::new(tree),
            program: self.settings.program.clone(),
            args: self.settings.args.clone(),
            chroot: (self.settings.root != Path::new("/")).then(|| self.settings.root.clone()),
        }))
    }
}

/// Runs RUN steps one at a time in the tree (see the module docs).
#[derive(Debug)]
pub struct ContainerExecutor {
    tree: Mutex<InPlace>,
    program: PathBuf,
    args: Vec<OsString>,
    chroot: Option<PathBuf>,
}

impl Drop for ContainerExecutor {
    /// The container is left as it was: only the paths it keeps.
    fn drop(&mut self) {
        if let Ok(tree) = self.tree.get_mut() {
            let _ = tree.clear();
            let _ = fs::remove_dir_all(tree.work());
        }
    }
}

/// A path inside the root, resolved without leaving it.
fn inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    kiln_snapshot::resolve_in_root(root, Path::new(path), true)
        .map_err(|e| format!("resolving {path} in the root filesystem: {e}"))
}

fn read_small(p: &Path) -> Option<String> {
    let f = fs::File::open(p).ok()?;
    let mut s = String::new();
    f.take(10 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// `args[0]` as runc finds it, in the tree: a path as is, a bare name in
/// `PATH` of `env`.
fn lookup(root: &Path, args: &[String], env: &[String]) -> Result<String, ExecError> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(name) = args.first() else {
        return Err(ExecError::Setup("no command given".to_owned()));
    };
    if name.contains('/') {
        return Ok(name.clone());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
        if let Ok(p) = inside(root, &candidate)
            && let Ok(m) = fs::metadata(&p)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(StartFailure::NotInPath { name: name.clone() }.into())
}

impl Executor for ContainerExecutor {
    fn run(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ExitStatus, ExecError> {
        if spec.network == Network::None {
            return Err(ExecError::Setup(
                "RUN --network=none is not supported with --isolation=container: a network \
                 namespace needs CAP_SYS_ADMIN, which the container does not have"
                    .to_owned(),
            ));
        }
        if spec.limits.any() {
            return Err(ExecError::Setup(
                "--memory and --pids-limit are not supported with --isolation=container".to_owned(),
            ));
        }
        // One root: one step at a time.
        let mut tree = self
            .tree
            .lock()
            .map_err(|_| ExecError::Setup("the root filesystem's lock is poisoned".to_owned()))?;
        let mut co = tree
            .checkout(&spec.rootfs.lowers, &spec.rootfs.upper)
            .map_err(|e| ExecError::Setup(e.to_string()))?;
        let placement =
            mounts::Placement::place(&mut co, &spec.mounts, cancelled).map_err(ExecError::Setup)?;
        let started = self.start(&mut co, spec);
        let status = match started {
            Ok(req) => self.supervise(&req, output, cancelled),
            Err(e) => Err(e),
        };
        let removed = placement.remove(&mut co);
        let status = status?;
        if let Err(e) = removed {
            return Err(ExecError::Setup(e));
        }
        if status == ExitStatus::Code(0) {
            co.commit().map_err(|e| ExecError::Setup(e.to_string()))?;
        }
        Ok(status)
    }
}

impl ContainerExecutor {
    /// The working directory, the user and the program, resolved in the
    /// tree: the helper's request.
    fn start(
        &self,
        co: &mut kiln_snapshot::Checkout<'_>,
        spec: &RunSpec,
    ) -> Result<helper::Request, ExecError> {
        let root = co.root().to_path_buf();
        let setup = ExecError::Setup;
        let cwd = inside(&root, &spec.cwd).map_err(setup)?;
        if fs::symlink_metadata(&cwd).is_err() {
            fs::create_dir_all(&cwd).map_err(|e| {
                ExecError::Setup(format!("creating working directory {}: {e}", spec.cwd))
            })?;
        }
        // Changes made by kiln from here on (the working directory is the
        // step's, as under overlay) must show in the diff.
        co.settle().map_err(|e| ExecError::Setup(e.to_string()))?;
        let user = crate::users::resolve(
            &spec.user,
            inside(&root, "/etc/passwd")
                .ok()
                .and_then(|p| read_small(&p))
                .as_deref(),
            inside(&root, "/etc/group")
                .ok()
                .and_then(|p| read_small(&p))
                .as_deref(),
        )
        .map_err(|e| ExecError::Setup(e.to_string()))?;
        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        let program = lookup(&root, &spec.args, &env)?;
        let mut status = spec.rootfs.mountpoint.clone().into_os_string();
        status.push(".status");
        Ok(helper::Request {
            root: self.chroot.clone(),
            program,
            args: spec.args.clone(),
            env,
            cwd: spec.cwd.clone(),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups,
            privileged: spec.privileged,
            status: PathBuf::from(status),
        })
    }

    /// Runs the helper, streams the step's output, and stops it when
    /// `cancelled`.
    fn supervise(
        &self,
        req: &helper::Request,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ExitStatus, ExecError> {
        fs::write(&req.status, [b' '; STATUS_RESERVE])
            .map_err(|e| ExecError::Helper(format!("reserving {}: {e}", req.status.display())))?;
        let body = serde_json::to_vec(req).map_err(|e| ExecError::Helper(e.to_string()))?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env(crate::parent::PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&body).map_err(|source| ExecError::Io {
                what: "sending the step to the helper".to_owned(),
                source,
            })?;
        }
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            pump(out, Stream::Stdout, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, Stream::Stderr, tx.clone());
        }
        drop(tx);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let mut open = 2;
        let mut stopping: Option<Instant> = None;
        while open > 0 {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Chunk::Data(s, d)) => output(s, &d),
                Ok(Chunk::Eof) => open -= 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            match stopping {
                // The helper kills the step's processes on SIGTERM.
                None if cancelled() => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                    stopping = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                }
                _ => {}
            }
        }
        let exit = child.wait().map_err(|source| ExecError::Io {
            what: "waiting for the helper".to_owned(),
            source,
        })?;
        let status = fs::read(&req.status).ok();
        let _ = fs::remove_file(&req.status);
        if stopping.is_some() {
            return Err(ExecError::Cancelled);
        }
        match status.and_then(|b| serde_json::from_slice::<Status>(&b).ok()) {
            Some(Status::Exited(c)) => Ok(ExitStatus::Code(c)),
            Some(Status::Signaled(s)) => Ok(ExitStatus::Signal(s)),
            Some(Status::SetupError(m)) => Err(ExecError::Setup(m)),
            Some(Status::NotStarted(f)) => Err(ExecError::NotStarted(f)),
            None => Err(ExecError::Helper(format!(
                "ended without a status ({exit})"
            ))),
        }
    }
}
