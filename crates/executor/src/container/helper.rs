//! The helper process of `--isolation=container` (`kiln __exec-container`):
//! runs one RUN step in the container's own root filesystem, and makes sure
//! no process of the step outlives it.
//!
//! ```text
//! kiln (threads) ──spawn──▶ helper: not dumpable, own session, subreaper,
//!                                   SIGCHLD/SIGTERM through a signalfd, fork
//!                              └─▶ child: own session, [chroot], chdir,
//!                                   bounding set, descriptors, groups, uid,
//!                                   execve
//!                           helper: wait; when the step's process ends (or on
//!                                   SIGTERM: kiln cancelled or died), kill
//!                                   every process left below it, write status
//! ```
//!
//! There is no pid namespace to take a step's processes with it, so the
//! helper is their *child subreaper*: a process of the step whose parent
//! dies is re-parented to the helper (not to the container's init), and
//! when the step's own process ends the helper kills its children until it
//! has none (as the kernel kills a pid namespace when its init ends). Its
//! parent's death reaches it as SIGTERM (`PR_SET_PDEATHSIG`), handled the
//! same way, so a killed kiln leaves no step running either.
//!
//! The helper is single-threaded (a freshly executed kiln binary), so its
//! child may allocate between `fork` and `execve`.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write as _};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use caps::{CapSet, CapsHashSet};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use crate::error::StartFailure;
use crate::spec::{ChildError, Status};
use crate::sys;

/// What the executor sends the helper on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    /// `chroot` here first; `None`: the container's own root (the mode's
    /// normal case; a root elsewhere is how the tests run it on a host).
    pub root: Option<PathBuf>,
    /// The program, a path inside the root.
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Working directory inside the root (it exists).
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// `--security=insecure`: keep every capability kiln has.
    pub privileged: bool,
    /// Where the helper writes its [`Status`].
    pub status: PathBuf,
}

/// Entry point of `kiln __exec-container`. Never returns.
pub fn helper_main() -> ! {
    let code = match helper() {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io::stderr(), "kiln __exec-container: {e}");
            125
        }
    };
    std::process::exit(code)
}

fn helper() -> Result<i32, String> {
    // Blocked before anything can deliver them: read from a signalfd below.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(|e| format!("prctl: {e}"))?;
    if crate::parent::parent_gone() {
        return Err("parent already gone".to_owned());
    }
    let mut input = Vec::new();
    io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading the request: {e}"))?;
    let req: Request =
        serde_json::from_slice(&input).map_err(|e| format!("decoding the request: {e}"))?;
    // A step runs as root beside this process: it may not read its memory.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl: {e}"))?;
    // Away from kiln's terminal: Ctrl-C reaches kiln, which cancels.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("becoming the step's subreaper: {e}"))?;
    let signals = SignalFd::new(&mask).map_err(|e| format!("signalfd: {e}"))?;
    let status = run(&req, &signals);
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            kill_all();
            Status::SetupError(e)
        }
    };
    let body = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&req.status)
        .and_then(|mut f| f.write_all(&body))
        .map_err(|e| format!("writing {}: {e}", req.status.display()))?;
    Ok(0)
}

fn run(req: &Request, signals: &SignalFd) -> Result<Status, String> {
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    match sys::fork_helper().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(err_r);
            drop(alive_w);
            let e = match child(req, &alive_r) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            e.send(err_w);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(alive_r);
            let failed = ChildError::receive(err_r);
            let status = wait(child, signals);
            drop(alive_w);
            // Whatever the step left running goes with it.
            kill_all();
            match failed {
                Some(f) => Ok(f),
                None => status,
            }
        }
    }
}

/// Waits for the step's process, reaping whatever else ends meanwhile;
/// SIGTERM, SIGINT or SIGHUP (kiln cancelling or gone) end the wait.
fn wait(child: Pid, signals: &SignalFd) -> Result<Status, String> {
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    return Ok(Status::Exited(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    return Ok(Status::Signaled(sig as i32));
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECHILD) => {
                    return Err("the step's process is gone".to_owned());
                }
                Err(e) => return Err(format!("waiting for the step: {e}")),
            }
        }
        match signals.read_signal() {
            Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => {}
            Ok(Some(info)) => {
                return Err(format!(
                    "stopped by signal {} (kiln cancelled the step or ended)",
                    info.ssi_signo
                ));
            }
            Ok(None) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("reading signals: {e}")),
        }
    }
}

/// The helper's children (the step's process and every orphan of the step
/// re-parented here), from `/proc`.
fn children() -> Vec<Pid> {
    let me = std::process::id().to_string();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid …: the command may hold spaces and ')'.
            let rest = &stat[stat.rfind(')')? + 1..];
            let ppid = rest.split_whitespace().nth(1)?;
            (ppid == me).then_some(Pid::from_raw(pid))
        })
        .collect()
}

/// Kills every process below the helper: its children, then whatever is
/// re-parented to it as they die, until it has none.
fn kill_all() {
    loop {
        for pid in children() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        match waitpid(None, None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
}

/// Whether the write end of the `alive` pipe (held by the helper) is closed.
fn parent_gone(alive: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// The step's side: identity, then exec. Returns only on failure.
fn child(req: &Request, alive: &OwnedFd) -> Result<std::convert::Infallible, ChildError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let null: OwnedFd = fs::File::open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?
        .into();
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
    drop(null);
    if let Some(root) = &req.root {
        nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
        nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    }
    nix::unistd::chdir(req.cwd.as_str()).map_err(|e| format!("chdir to {}: {e}", req.cwd))?;
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(|e| format!("capabilities: {e}"))?;
    let keep: CapsHashSet = if req.privileged {
        permitted
    } else {
        crate::helper::DEFAULT_CAPS
            .into_iter()
            .filter(|c| permitted.contains(c))
            .collect()
    };
    for c in caps::runtime::thread_all_supported() {
        if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, c).map_err(|e| format!("dropping {c}: {e}"))?;
        }
    }
    sys::cloexec_from(3).map_err(|e| format!("closing inherited descriptors: {e}"))?;
    let groups: Vec<Gid> = req.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(req.gid)).map_err(|e| format!("setgid {}: {e}", req.gid))?;
    nix::unistd::setuid(Uid::from_raw(req.uid)).map_err(|e| format!("setuid {}: {e}", req.uid))?;
    // Changing credentials clears the parent death signal.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if parent_gone(alive) {
        return Err("the helper is gone".to_owned().into());
    }
    if req.uid == 0 {
        caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
            .map_err(|e| format!("capabilities: {e}"))?;
        caps::set(None, CapSet::Effective, &keep).map_err(|e| format!("capabilities: {e}"))?;
        caps::set(None, CapSet::Permitted, &keep).map_err(|e| format!("capabilities: {e}"))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    sys::reset_signals().map_err(|e| format!("resetting signals: {e}"))?;
    let program = CString::new(req.program.as_bytes())
        .map_err(|_| "command contains a NUL byte".to_owned())?;
    let argv: Vec<CString> = req
        .args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "argument contains a NUL byte".to_owned())?;
    let envp: Vec<CString> = req
        .env
        .iter()
        .map(|e| CString::new(e.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "environment contains a NUL byte".to_owned())?;
    match nix::unistd::execve(&program, &argv, &envp) {
        Ok(never) => match never {},
        Err(e) => Err(ChildError::NotStarted(StartFailure::Exec {
            program: req.program.clone(),
            errno: e as i32,
        })),
    }
}
