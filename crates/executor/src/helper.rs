//! The helper process (`kiln __exec`): sets up the namespaces and the root
//! filesystem of one RUN step, runs it, and reports how it ended.
//!
//! ```text
//! kiln (threads) ──spawn──▶ helper: unshare(mnt,pid,uts,ipc[,net]), mount the layers,
//!                                   create mount stubs, fork
//!                              └─▶ child = pid 1: mount proc/dev/sys/…, pivot_root,
//!                                   hostname, caps, setgroups/setgid/setuid, execve
//!                           helper: wait, unmount (native: diff into the upper dir),
//!                                   remove stubs from the upper dir,
//!                                   write status, exit
//! ```
//!
//! The helper and the child both ask for SIGKILL when their parent dies, and
//! every mount lives in the helper's mount namespace: whatever happens to
//! kiln, no process or mount of a RUN step outlives it.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid};

use crate::error::StartFailure;
use crate::plan::{Step, TargetKind, container_steps, hosts_file};
use crate::spec::{AttachMode, ChildError, Network, Request, RunSpec, Status};
use crate::sys;
use crate::users::{self, ExecUser};

/// Paths of `/proc` and `/sys` hidden from the process (containerd's default
/// spec, which BuildKit and Docker use): a directory gets an empty read-only
/// tmpfs, a file `/dev/null`.
const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths of `/proc` made read-only (containerd's default spec).
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Capabilities of a RUN step: Docker's default set.
pub(crate) const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Entry point of `kiln __exec`. Never returns.
pub fn helper_main() -> ! {
    let code = match helper() {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io::stderr(), "kiln __exec: {e}");
            125
        }
    };
    std::process::exit(code)
}

fn helper() -> Result<i32, String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if crate::parent::parent_gone() {
        return Err("parent already gone".to_owned());
    }
    let mut input = Vec::new();
    io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading the request: {e}"))?;
    let req: Request =
        serde_json::from_slice(&input).map_err(|e| format!("decoding the request: {e}"))?;
    let status = match run(&req) {
        Ok(s) => s,
        Err(e) => Status::SetupError(e),
    };
    let code = match &status {
        Status::Exited(c) => *c,
        Status::Signaled(s) => 128 + s,
        Status::SetupError(_) => 125,
        Status::NotStarted(f) if f.is_missing() => 127,
        Status::NotStarted(_) => 126,
    };
    let body = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
    // Over the bytes the parent reserved (no truncation: a full disk has no
    // room for new blocks).
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&req.status)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &body))
        .map_err(|e| format!("writing {}: {e}", req.status.display()))?;
    Ok(code)
}

/// A path inside the root, resolved without leaving it.
fn inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    kiln_snapshot::resolve_in_root(root, Path::new(path), true)
        .map_err(|e| format!("resolving {path} in the root filesystem: {e}"))
}

/// Creates `p` (and its parents) as a directory or an empty file.
fn create_target(p: &Path, kind: TargetKind) -> io::Result<()> {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    match kind {
        TargetKind::Dir => fs::create_dir_all(p),
        TargetKind::File => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map(drop),
    }
}

fn read_small(p: &Path) -> Option<String> {
    let f = fs::File::open(p).ok()?;
    let mut s = String::new();
    f.take(10 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

fn run(req: &Request) -> Result<Status, String> {
    let spec = &req.spec;
    let snapshotter = kiln_snapshot::snapshotter_named(&req.snapshotter, req.whiteouts)
        .ok_or_else(|| format!("unknown snapshotter {:?}", req.snapshotter))?;
    // The cgroup namespace's root is the step's own group (the caller put
    // this process there before sending the request).
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // The default network: a namespace of the executor's pool.
    if let Some(netns) = &req.netns {
        crate::network::join(netns)?;
    }
    nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    let root = spec.rootfs.mountpoint.clone();
    let upper = (spec.rootfs.upper.as_path(), spec.rootfs.work.as_path());
    let guard = match &spec.rootfs.views {
        Some(views) => snapshotter.mount_reusing(&spec.rootfs.lowers, upper, &root, views),
        None => snapshotter.mount(&spec.rootfs.lowers, Some(upper), &root),
    }
    .map_err(|e| e.to_string())?;

    // Generated files live beside the mount point, outside the root.
    let base = root.as_os_str().as_bytes().to_vec();
    let sibling = |ext: &str| {
        let mut b = base.clone();
        b.extend_from_slice(ext.as_bytes());
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&b).to_owned())
    };
    let hosts = sibling(".hosts");
    let resolv = sibling(".resolv");
    fs::write(&hosts, hosts_file(&spec.hostname)).map_err(|e| format!("writing hosts: {e}"))?;
    fs::write(&resolv, &req.resolv_conf).map_err(|e| format!("writing resolv.conf: {e}"))?;

    let secrets = sibling(".secrets");
    write_secrets(&secrets, spec)?;

    let mut steps = container_steps(spec, &hosts, &resolv, &secrets);
    steps.extend(cgroup_mounts(req));
    // Mount points outside /dev (which is a fresh tmpfs) that the image lacks
    // are created now, through the overlay, and removed again afterwards,
    // together with the missing parent directories created for them (as
    // BuildKit's `MountStubsCleaner` does).
    let mut stubs: Vec<PathBuf> = Vec::new();
    for s in &steps {
        if let Step::Mount { target, kind, .. } = s
            && !target.starts_with("/dev/")
            && !target.starts_with("/sys/")
        {
            let p = inside(&root, target)?;
            if fs::symlink_metadata(&p).is_err() {
                let mut missing = Vec::new();
                let mut q = p.as_path();
                while q != root && fs::symlink_metadata(q).is_err() {
                    missing.push(q.to_path_buf());
                    match q.parent() {
                        Some(parent) => q = parent,
                        None => break,
                    }
                }
                create_target(&p, *kind)
                    .map_err(|e| format!("creating mount point {target}: {e}"))?;
                // Parents first: removal goes in reverse.
                for m in missing.iter().rev() {
                    if let Ok(rel) = m.strip_prefix(&root) {
                        stubs.push(rel.to_path_buf());
                    }
                }
            }
        }
    }
    let cwd = inside(&root, &spec.cwd)?;
    if fs::symlink_metadata(&cwd).is_err() {
        fs::create_dir_all(&cwd)
            .map_err(|e| format!("creating working directory {}: {e}", spec.cwd))?;
    }
    let user = users::resolve(
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
    .map_err(|e| e.to_string())?;
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }

    let seccomp = seccomp_filter(req)?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Never written: the child sees its read end close if the helper dies.
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    match fork_child(req.v2_group.as_deref())? {
        ForkResult::Child => {
            drop(err_r);
            drop(alive_w);
            let e = child(
                spec,
                req.attach,
                &root,
                &steps,
                &user,
                &env,
                &alive_r,
                seccomp.as_deref(),
            );
            e.send(err_w);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(alive_r);
            let failed = ChildError::receive(err_r);
            let status = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break Status::Exited(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => break Status::Signaled(sig as i32),
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waiting for the process: {e}")),
                }
            };
            drop(alive_w);
            let kept = guard.unmount_keeping().map_err(|e| e.to_string())?;
            let removed = remove_stubs(&spec.rootfs.upper, &spec.rootfs.lowers, &stubs);
            // A tree the native snapshotter keeps for the next step gets
            // the same stub removals; only a step that succeeded has one.
            if let Some(mut kept) = kept
                && failed.is_none()
                && status == Status::Exited(0)
            {
                for rel in &removed {
                    kept.removed(rel);
                }
                for stub in &stubs {
                    kept.touched_ancestors(stub);
                }
                kept.offer();
            }
            Ok(failed.unwrap_or(status))
        }
    }
}

/// Forks the step's pid 1: into the step's v2 group `v2` when it has one
/// (born there, `sys::fork_into_cgroup`; on kernels without
/// `CLONE_INTO_CGROUP` the helper moves itself there first).
fn fork_child(v2: Option<&Path>) -> Result<nix::unistd::ForkResult, String> {
    if let Some(dir) = v2 {
        let group = fs::File::open(dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
        match sys::fork_into_cgroup(std::os::fd::AsFd::as_fd(&group)) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {
                let procs = dir.join("cgroup.procs");
                fs::write(&procs, std::process::id().to_string())
                    .map_err(|e| format!("writing {}: {e}", procs.display()))?;
            }
            Err(e) => return Err(format!("fork: {e}")),
        }
    }
    sys::fork_helper().map_err(|e| format!("fork: {e}"))
}

/// The cgroup filesystems of the step (`plan::cgroup_steps`): its own
/// groups, which the caller made. None in a user namespace (rootless),
/// where `/sys` is the host's, read-only, with `/sys/fs/cgroup` hidden
/// (`apply`), or a fresh sysfs with an empty `/sys/fs/cgroup`.
fn cgroup_mounts(req: &Request) -> Vec<Step> {
    crate::plan::cgroup_steps(&req.cgroups, req.spec.privileged)
}

/// The seccomp filter the caller compiled for this step (none for
/// `--security=insecure`).
fn seccomp_filter(req: &Request) -> Result<Option<Vec<u8>>, String> {
    match &req.seccomp {
        None => Ok(None),
        Some(h) => hex::decode(h)
            .map(Some)
            .map_err(|e| format!("decoding the seccomp filter: {e}")),
    }
}

/// Mounts a small tmpfs (in the helper's mount namespace, so it dies with
/// it) on `dir` and writes the content of each secret mount of `spec` there,
/// with its owner and mode. Nothing is written when there is no secret.
fn write_secrets(dir: &Path, spec: &RunSpec) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let files: Vec<(usize, &crate::spec::ExtraMount)> = spec
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m.kind, crate::spec::MountKind::SecretFile { .. }))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=700"),
    )
    .map_err(|e| format!("mounting the secrets tmpfs: {e}"))?;
    for (i, m) in files {
        let crate::spec::MountKind::SecretFile {
            data,
            uid,
            gid,
            mode,
        } = &m.kind
        else {
            continue;
        };
        let p = crate::plan::secret_file(dir, i);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| format!("creating the secret file for {}: {e}", m.target))?;
        f.write_all(&data.0)
            .map_err(|e| format!("writing the secret file for {}: {e}", m.target))?;
        drop(f);
        std::os::unix::fs::chown(&p, Some(*uid), Some(*gid))
            .map_err(|e| format!("chown of the secret file for {}: {e}", m.target))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| format!("chmod of the secret file for {}: {e}", m.target))?;
    }
    Ok(())
}

/// Removes the mount stubs from the upper directory (the overlay is
/// unmounted), and the parent directories that only exist in the upper
/// because a stub was created in them. Returns what it removed.
///
/// The upper dir is a tree the step controlled: it may have replaced a
/// stub's parent with a symlink to a host directory. Every look-up here
/// goes through `kiln_snapshot::beneath` and so never follows a symlink;
/// a stub whose path now crosses one is left alone (BuildKit's
/// CVE-2024-23652 was this removal following the symlink).
fn remove_stubs(upper: &Path, lowers: &[PathBuf], stubs: &[PathBuf]) -> Vec<PathBuf> {
    use kiln_snapshot::beneath::Entry;
    let mut removed = Vec::new();
    for rel in stubs.iter().rev() {
        let Ok(e) = Entry::open(upper, rel) else {
            continue;
        };
        let Ok(st) = e.stat() else {
            continue;
        };
        let ft = rustix_file_type(st.st_mode);
        let empty = match ft {
            FileKind::Dir => e.is_empty_dir().unwrap_or(false),
            FileKind::File => st.st_size == 0,
            FileKind::Other => false,
        };
        if !empty || e.remove(ft == FileKind::Dir).is_err() {
            continue;
        }
        removed.push(rel.clone());
        let mut parent = rel.parent();
        while let Some(d) = parent {
            if d.as_os_str().is_empty() {
                break;
            }
            if !unchanged_copy_up(upper, lowers, d) {
                break;
            }
            if Entry::open(upper, d).and_then(|e| e.remove(true)).is_err() {
                break;
            }
            removed.push(d.to_path_buf());
            parent = d.parent();
        }
    }
    removed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Dir,
    File,
    Other,
}

fn rustix_file_type(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFREG => FileKind::File,
        _ => FileKind::Other,
    }
}

/// Whether `rel` in the upper dir is an empty, non-opaque directory with the
/// same owner and mode as in the topmost lower that has it: a copy-up that
/// changes nothing in the merged view. (Lowers are committed layers, which
/// no step writes; the upper is looked at without following symlinks.)
fn unchanged_copy_up(upper: &Path, lowers: &[PathBuf], rel: &Path) -> bool {
    let Ok(e) = kiln_snapshot::beneath::Entry::open(upper, rel) else {
        return false;
    };
    let Ok(m) = e.stat() else {
        return false;
    };
    if rustix_file_type(m.st_mode) != FileKind::Dir || !e.is_empty_dir().unwrap_or(false) {
        return false;
    }
    if kiln_snapshot::whiteout::is_opaque(&e.path()) {
        return false;
    }
    // Layers written by earlier steps may hold symlinks too.
    let Some(l) = lowers.iter().rev().find_map(|l| {
        kiln_snapshot::beneath::Entry::open(l, rel)
            .and_then(|e| e.stat())
            .ok()
    }) else {
        return false;
    };
    rustix_file_type(l.st_mode) == FileKind::Dir
        && l.st_mode == m.st_mode
        && l.st_uid == m.st_uid
        && l.st_gid == m.st_gid
}

/// The container side: mounts, pivot_root, identity, exec. Returns only on
/// failure, with the message for the caller.
#[allow(clippy::too_many_arguments)]
fn child(
    spec: &RunSpec,
    attach: Option<AttachMode>,
    root: &Path,
    steps: &[Step],
    user: &ExecUser,
    env: &[String],
    alive: &OwnedFd,
    seccomp: Option<&[u8]>,
) -> ChildError {
    match child_setup(spec, attach, root, steps, user, env, alive, seccomp) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// `kiln run -t`: a pseudo-terminal of the container's own devpts (mounted
/// at `root`/dev/pts by now), as runc makes a container's console: its
/// secondary side is returned (for stdin, stdout, stderr), its primary side
/// goes to kiln over `socket` (`SCM_RIGHTS`), which copies between it and
/// the user's terminal. A pty of the host's devpts would have no name in the
/// container (`tty` says "not a tty").
fn console(root: &Path, socket: &OwnedFd) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    use std::io::IoSlice;
    let primary = rustix::fs::open(
        root.join("dev/pts/ptmx"),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::pty::unlockpt(&primary)?;
    let secondary = rustix::pty::ioctl_tiocgptpeer(
        &primary,
        rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
    )?;
    let fds = [std::os::fd::AsFd::as_fd(&primary)];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"t")],
        &mut control,
        rustix::net::SendFlags::empty(),
    )?;
    // The caller sizes the terminal, then answers: a process that asks
    // for its size at once (`stty size`) must not see 0x0. An end of the
    // socket instead (a caller gone) is not waited on further.
    let mut ack = [0u8; 1];
    loop {
        match rustix::io::read(socket, &mut ack) {
            Err(rustix::io::Errno::INTR) => continue,
            r => {
                r?;
                break;
            }
        }
    }
    Ok(secondary)
}

/// Whether the write end of the `alive` pipe (held by the helper) is closed.
fn parent_gone(alive: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}

#[allow(clippy::too_many_arguments)]
fn child_setup(
    spec: &RunSpec,
    attach: Option<AttachMode>,
    root: &Path,
    steps: &[Step],
    user: &ExecUser,
    env: &[String],
    alive: &OwnedFd,
    req_seccomp: Option<&[u8]>,
) -> Result<std::convert::Infallible, ChildError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    // A mount namespace of the child's own: `pivot_root` below moves the root
    // of every process in the namespace, and the helper must keep its own.
    // The cgroup namespace is made here, once the child is in the step's
    // groups (its v2 group since its birth, `fork_child`), so that they
    // are its root.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("unshare: {e}"))?;
    for s in steps {
        apply(root, s)?;
    }
    if spec.network == Network::None {
        sys::loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
    }
    // stdio: `/dev/null` and the helper's pipes for a RUN step; for
    // `kiln run`, descriptor 3 of the helper (the caller's stdin, or a
    // terminal for all three), which `confine` closes with the rest.
    match attach {
        Some(AttachMode::Stdin) => {
            let three = sys::fd3().map_err(|e| format!("stdin: {e}"))?;
            nix::unistd::dup2_stdin(&three).map_err(|e| format!("stdin: {e}"))?;
        }
        Some(AttachMode::Tty) => {
            let socket = sys::fd3().map_err(|e| format!("terminal: {e}"))?;
            let terminal = console(root, &socket).map_err(|e| format!("terminal: {e}"))?;
            nix::unistd::dup2_stdin(&terminal).map_err(|e| format!("terminal: {e}"))?;
            nix::unistd::dup2_stdout(&terminal).map_err(|e| format!("terminal: {e}"))?;
            nix::unistd::dup2_stderr(&terminal).map_err(|e| format!("terminal: {e}"))?;
        }
        None | Some(AttachMode::Output) => {
            let null: OwnedFd = fs::File::open("/dev/null")
                .map_err(|e| format!("opening /dev/null: {e}"))?
                .into();
            nix::unistd::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
        }
    }
    nix::unistd::chdir(root).map_err(|e| format!("chdir to the root: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    if !spec.privileged {
        for path in READONLY_PATHS {
            readonly_path(path)?;
        }
        for path in MASKED_PATHS {
            mask_path(path)?;
        }
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if attach == Some(AttachMode::Tty) {
        sys::take_controlling_terminal().map_err(|e| format!("controlling terminal: {e}"))?;
    }
    nix::unistd::chdir(spec.cwd.as_str()).map_err(|e| format!("chdir to {}: {e}", spec.cwd))?;
    let keep: CapsHashSet = if spec.privileged {
        // Everything kiln itself holds (all capabilities when kiln runs
        // as root on the host; less inside a restricted container).
        caps::read(None, CapSet::Permitted).map_err(|e| format!("capabilities: {e}"))?
    } else {
        DEFAULT_CAPS.into_iter().collect()
    };
    for c in caps::runtime::thread_all_supported() {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c).map_err(|e| format!("dropping {c}: {e}"))?;
        }
    }
    for u in &spec.resources.ulimits {
        // Before the credentials change: raising a hard limit needs
        // CAP_SYS_RESOURCE, which the step's user may not have.
        let r = u
            .resource()
            .ok_or_else(|| format!("unknown ulimit {:?}", u.name))?;
        nix::sys::resource::setrlimit(r, u.soft, u.hard)
            .map_err(|e| format!("setting ulimit {}={}:{}: {e}", u.name, u.soft, u.hard))?;
    }
    confine(req_seccomp)?;
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(user.gid))
        .map_err(|e| format!("setgid {}: {e}", user.gid))?;
    nix::unistd::setuid(Uid::from_raw(user.uid))
        .map_err(|e| format!("setuid {}: {e}", user.uid))?;
    // Changing credentials clears the parent death signal: set it again,
    // then make sure the parent did not die in between (its end of the
    // `alive` pipe closes when it does).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if parent_gone(alive) {
        return Err("the helper is gone".to_owned().into());
    }
    if user.uid == 0 {
        caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
            .map_err(|e| format!("capabilities: {e}"))?;
        caps::set(None, CapSet::Effective, &keep).map_err(|e| format!("capabilities: {e}"))?;
        caps::set(None, CapSet::Permitted, &keep).map_err(|e| format!("capabilities: {e}"))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    sys::reset_signals().map_err(|e| format!("resetting signals: {e}"))?;
    let program = lookup(&spec.args, env)?;
    let argv: Vec<CString> = spec
        .args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "argument contains a NUL byte".to_owned())?;
    let envp: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "environment contains a NUL byte".to_owned())?;
    match nix::unistd::execve(&program, &argv, &envp) {
        Ok(never) => match never {},
        Err(e) => Err(ChildError::NotStarted(StartFailure::Exec {
            program: program.to_string_lossy().into_owned(),
            errno: e as i32,
        })),
    }
}

/// `args[0]` as runc finds it: a path as is, a bare name in `PATH` of `env`.
fn lookup(args: &[String], env: &[String]) -> Result<CString, ChildError> {
    let Some(name) = args.first() else {
        return Err("no command given".to_owned().into());
    };
    let to_c = |s: &str| {
        CString::new(s.as_bytes())
            .map_err(|_| ChildError::from("command contains a NUL byte".to_owned()))
    };
    if name.contains('/') {
        return to_c(name);
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if let Ok(m) = fs::metadata(&candidate)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return to_c(&candidate.to_string_lossy());
        }
    }
    Err(ChildError::NotStarted(StartFailure::NotInPath {
        name: name.clone(),
    }))
}

/// Applies one setup step below `root` (before `pivot_root`).
fn apply(root: &Path, s: &Step) -> Result<(), String> {
    match s {
        Step::Symlink { path, to } => {
            let p = root.join(path.trim_start_matches('/'));
            std::os::unix::fs::symlink(to, &p).map_err(|e| format!("symlink {path}: {e}"))
        }
        Step::Remount { target, flags } => {
            let p = inside(root, target)?;
            remount_ro(&p, *flags).map_err(|e| format!("remounting {target} read-only: {e}"))
        }
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            kind,
            readonly_bind,
        } => {
            let p = inside(root, target)?;
            if fs::symlink_metadata(&p).is_err() {
                create_target(&p, *kind)
                    .map_err(|e| format!("creating mount point {target}: {e}"))?;
            }
            let r = nix::mount::mount(Some(source.as_path()), &p, *fstype, *flags, data.as_deref());
            if let Err(e) = r {
                if *fstype == Some("sysfs") {
                    // Not allowed here (e.g. in a user namespace): a
                    // read-only recursive bind of the host's /sys instead.
                    nix::mount::mount(
                        Some("/sys"),
                        &p,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(|e| format!("mounting /sys: {e}"))?;
                    remount_ro(
                        &p,
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    )
                    .map_err(|e| format!("remounting /sys read-only: {e}"))?;
                    // The host's cgroup mounts came along (still writable):
                    // hidden under an empty read-only tmpfs.
                    let cg = p.join("fs/cgroup");
                    if cg.is_dir() {
                        nix::mount::mount(
                            Some("tmpfs"),
                            &cg,
                            Some("tmpfs"),
                            MsFlags::MS_RDONLY
                                | MsFlags::MS_NOSUID
                                | MsFlags::MS_NODEV
                                | MsFlags::MS_NOEXEC,
                            Some("mode=755"),
                        )
                        .map_err(|e| format!("hiding the host's /sys/fs/cgroup: {e}"))?;
                    }
                    return Ok(());
                }
                return Err(format!("mounting {} on {target}: {e}", source.display()));
            }
            if *readonly_bind {
                remount_ro(&p, *flags & !(MsFlags::MS_BIND | MsFlags::MS_REC))
                    .map_err(|e| format!("remounting {target} read-only: {e}"))?;
            }
            Ok(())
        }
    }
}

/// What keeps the step's program from reaching the host through the kernel:
/// only descriptors 0–2 survive `execve`, and Docker's default seccomp
/// profile (`seccomp.rs`, absent for `--security=insecure`) is installed
/// now, while the process still holds CAP_SYS_ADMIN, so that no-new-privileges
/// is not needed and setuid programs work as under BuildKit.
fn confine(seccomp: Option<&[u8]>) -> Result<(), String> {
    sys::cloexec_from(3).map_err(|e| format!("closing inherited descriptors: {e}"))?;
    if let Some(bpf) = seccomp {
        sys::install_seccomp(bpf).map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    Ok(())
}

/// Makes `path` (inside the new root) read-only, if it exists.
fn readonly_path(path: &str) -> Result<(), String> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    nix::mount::mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind mount {path} on itself: {e}"))?;
    remount_ro(
        Path::new(path),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
    .map_err(|e| format!("remounting {path} read-only: {e}"))
}

/// Hides `path` (inside the new root), if it exists.
fn mask_path(path: &str) -> Result<(), String> {
    let Ok(m) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let r = if m.is_dir() {
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        nix::mount::mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.map_err(|e| format!("masking {path}: {e}"))
}

fn remount_ro(p: &Path, flags: MsFlags) -> nix::Result<()> {
    nix::mount::mount(
        None::<&str>,
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None::<&str>,
    )
}
