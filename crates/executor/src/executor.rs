//! The executor of the `namespaces` mode: every RUN step through a helper
//! process (`kiln __exec`, `helper.rs`).

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::api::{Executor, ExitStatus, Stream};
use crate::error::ExecError;
use crate::output::{Chunk, pump};
use crate::parent::PARENT_ENV;
use crate::spec::{AttachMode, MountKind, Request, RunSpec, STATUS_RESERVE, Status};
use crate::{cgroup, network, seccomp, sys};

/// The real executor: re-executes `program args…` as the helper.
#[derive(Debug)]
pub struct NamespaceExecutor {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    /// Network namespaces of `Network::Isolated` steps, reused.
    networks: std::sync::Arc<network::Pool>,
    /// What mounts the steps' root filesystems: the helper is told its name.
    snapshotter: std::sync::Arc<dyn kiln_snapshot::Snapshotter>,
}

impl NamespaceExecutor {
    /// `program args…` must end up calling [`crate::helper_main`]; the
    /// steps' root filesystems are mounted with `snapshotter`.
    pub fn new(
        program: PathBuf,
        args: Vec<std::ffi::OsString>,
        snapshotter: std::sync::Arc<dyn kiln_snapshot::Snapshotter>,
    ) -> NamespaceExecutor {
        // The seccomp filter (tens of milliseconds of CPU to compile) is
        // compiled when the first RUN step needs it (`step_seccomp`), or
        // read from the cache `with_filter_cache` names.
        cgroup::LIVE_EXECUTORS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        NamespaceExecutor {
            program,
            args,
            env: Vec::new(),
            networks: Default::default(),
            snapshotter,
        }
    }

    /// Keeps the compiled seccomp filter in `dir` (of the state directory)
    /// for later kiln processes of the same binary and kernel
    /// (`seccomp::prepare_default_filter`: compiled ahead, on a thread, only
    /// when it is not there yet).
    pub fn with_filter_cache(self, dir: PathBuf) -> NamespaceExecutor {
        seccomp::prepare_default_filter(dir);
        self
    }

    /// An environment variable for the helper process (tests use one to turn
    /// their own binary into the helper).
    pub fn with_env(mut self, key: &str, value: &str) -> NamespaceExecutor {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The seccomp filter of `spec` as the helper receives it: Docker's
/// default profile, compiled once per process; none for a privileged
/// (`--security=insecure`) step, as in BuildKit. A step whose writes all
/// go to its own layer (no writable bind mount: a cache mount, a host
/// directory of `kiln run -v`) gets the profile with the flushing calls
/// made no-ops (`seccomp::sync_noop`, a deliberate difference from
/// BuildKit, ARCHITECTURE.md).
fn step_seccomp(spec: &RunSpec) -> Result<Option<String>, ExecError> {
    if spec.privileged {
        return Ok(None);
    }
    let sync_is_noop = !spec.mounts.iter().any(|m| {
        matches!(
            m.kind,
            MountKind::Bind {
                readonly: false,
                ..
            }
        )
    });
    static HEX: [std::sync::OnceLock<String>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let cell = &HEX[usize::from(sync_is_noop)];
    if let Some(h) = cell.get() {
        return Ok(Some(h.clone()));
    }
    let bpf = seccomp::step_filter(sync_is_noop).map_err(ExecError::Setup)?;
    Ok(Some(cell.get_or_init(|| hex::encode(bpf)).clone()))
}

impl Clone for NamespaceExecutor {
    fn clone(&self) -> NamespaceExecutor {
        cgroup::LIVE_EXECUTORS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        NamespaceExecutor {
            program: self.program.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            networks: self.networks.clone(),
            snapshotter: self.snapshotter.clone(),
        }
    }
}

impl Drop for NamespaceExecutor {
    /// The last executor of the process removes the groups that held its
    /// steps' device allow-list, and waits for a seccomp filter still being
    /// compiled for the state directory.
    fn drop(&mut self) {
        if cgroup::LIVE_EXECUTORS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            cgroup::release_confined();
            seccomp::finish_default_filter();
        }
    }
}

/// The caller's side of a process attached to its stdio (`kiln run`).
#[derive(Debug)]
pub struct Attach {
    pub mode: AttachMode,
    /// The helper's descriptor 3: the process's stdin ([`AttachMode::Stdin`])
    /// or the socket its terminal comes back on ([`AttachMode::Tty`],
    /// [`receive_terminal`]); `None` for [`AttachMode::Output`].
    pub input: Option<std::os::fd::OwnedFd>,
}

/// The caller's end of an [`AttachMode::Tty`] socket: the primary side of
/// the container's terminal, once the helper has made it, sized as `size`
/// says before the helper goes on to start the process; `None` when the
/// helper ended without sending one (its error is in the run's result).
pub fn receive_terminal(
    socket: &std::os::fd::OwnedFd,
    size: Option<rustix::termios::Winsize>,
) -> io::Result<Option<std::os::fd::OwnedFd>> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Ok(None);
    }
    for m in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = m
            && let Some(fd) = fds.next()
        {
            if let Some(ws) = size {
                // A terminal that cannot be sized still works (at 0x0).
                let _ = rustix::termios::tcsetwinsize(&fd, ws);
            }
            // The helper waits for this before it starts the process.
            rustix::io::write(socket, b"s")?;
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// A socket pair for [`AttachMode::Tty`]: (the caller's end, the helper's).
pub fn terminal_socket() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

impl NamespaceExecutor {
    /// Runs `spec` as [`Executor::run`] does, but attached to the caller's
    /// stdio as `attach` says: its output goes straight to this process's
    /// stdout and stderr (or the terminal), not through a callback.
    pub fn run_attached(
        &self,
        spec: &RunSpec,
        attach: &Attach,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ExitStatus, ExecError> {
        self.spawn(spec, Some(attach), &mut |_, _| {}, cancelled)
    }
}

impl Executor for NamespaceExecutor {
    fn run(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ExitStatus, ExecError> {
        self.spawn(spec, None, output, cancelled)
    }
}

impl NamespaceExecutor {
    fn spawn(
        &self,
        spec: &RunSpec,
        attach: Option<&Attach>,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ExitStatus, ExecError> {
        let mut status_path = spec.rootfs.mountpoint.clone().into_os_string();
        status_path.push(".status");
        let status_path = PathBuf::from(status_path);
        // The helper overwrites these bytes with its status (JSON, then spaces,
        // which JSON allows): reserved now, so that a step that fills the disk
        // still has its status written.
        std::fs::write(&status_path, [b' '; STATUS_RESERVE])
            .map_err(|e| ExecError::Helper(format!("reserving {}: {e}", status_path.display())))?;
        // Made before the helper starts, filled before it reads its request:
        // every process of the step starts inside the groups.
        let cgroup = cgroup::StepCgroup::create(&spec.limits, spec.privileged)?;
        let mut netns = self.networks.lease(spec.network)?;
        let req = Request {
            spec: spec.clone(),
            status: status_path.clone(),
            resolv_conf: network::resolv_conf(spec.network),
            netns: netns.as_ref().and_then(network::Lease::path),
            snapshotter: self.snapshotter.name().to_owned(),
            whiteouts: self.snapshotter.whiteouts(),
            seccomp: step_seccomp(spec)?,
            cgroups: cgroup.as_ref().map(|c| c.mounts()).unwrap_or_default(),
            v2_group: cgroup
                .as_ref()
                .and_then(|c| c.v2_dir())
                .map(Path::to_path_buf),
            attach: attach.map(|a| a.mode),
        };
        let body = serde_json::to_vec(&req).map_err(|e| ExecError::Helper(e.to_string()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::piped());
        match attach {
            None => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Some(Attach {
                input: Some(fd), ..
            }) => {
                use std::os::fd::AsRawFd as _;
                sys::as_fd3_of(&mut cmd, fd.as_raw_fd());
            }
            Some(_) => {}
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if let Some(cg) = &cgroup
            && let Err(e) = cg.add_v1(child.id())
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
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
        let mut open = if attach.is_some() { 0 } else { 2 };
        let mut killed = false;
        // Attached: nothing to pump, the helper's end is all there is.
        while attach.is_some() && !killed {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => {}
            }
            if cancelled() {
                let _ = child.kill();
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        while open > 0 {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Chunk::Data(s, d)) => output(s, &d),
                Ok(Chunk::Eof) => open -= 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !killed && cancelled() {
                let _ = child.kill();
                killed = true;
            }
        }
        let exit = child.wait().map_err(|source| ExecError::Io {
            what: "waiting for the helper".to_owned(),
            source,
        })?;
        if killed {
            return Err(ExecError::Cancelled);
        }
        let status = std::fs::read(&status_path).ok();
        let _ = std::fs::remove_file(&status_path);
        if let Some(cg) = &cgroup
            && cg.oom_killed()
        {
            let limit = spec.limits.memory.unwrap_or_default();
            output(
                Stream::Stderr,
                format!(
                    "kiln: a process of this step was killed for want of memory \
                     (--memory {limit} bytes)\n"
                )
                .as_bytes(),
            );
        }
        drop(cgroup);
        let status = status.and_then(|b| serde_json::from_slice::<Status>(&b).ok());
        // Ended normally: its pid 1 was reaped, so no process of the step
        // is left in the namespace.
        if let Some(ns) = &mut netns
            && matches!(status, Some(Status::Exited(_) | Status::Signaled(_)))
            && !spec.privileged
        {
            ns.give_back();
        }
        drop(netns);
        match status {
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
