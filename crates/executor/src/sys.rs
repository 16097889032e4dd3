//! The few system calls that need `unsafe`: `fork`, resetting signal
//! dispositions, bringing up the loopback interface, and, for rootless mode,
//! adopting inherited pipe descriptors and ignoring Ctrl-C in the waiting
//! parent, and, for `kiln run`, handing a descriptor to the helper as its
//! descriptor 3 and taking a terminal as the controlling one. Everything
//! else goes
//! through `nix`'s safe wrappers.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

use nix::unistd::{ForkResult, fork};

/// Forks the (single-threaded) helper.
pub(crate) fn fork_helper() -> io::Result<ForkResult> {
    // SAFETY: the helper process is single-threaded when it forks (it is a
    // freshly exec'd kiln binary that has started no threads), so the child
    // may run arbitrary code, allocation included.
    unsafe { fork() }.map_err(io::Error::from)
}

/// Makes `fd` (of this process) descriptor 3 of the process `cmd` starts,
/// without close-on-exec there (`kiln run`'s stdin or terminal).
pub(crate) fn as_fd3_of(cmd: &mut std::process::Command, fd: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec: dup2 and fcntl are
    // async-signal-safe and touch only the child's descriptor table; `fd`
    // stays open in the parent until the child has been spawned.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Descriptor 3, which the caller made the helper's (`as_fd3_of`), owned:
/// dropped (closed) once it has been duplicated where it goes.
pub(crate) fn fd3() -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // Only called in the helper's child when the request says the caller
    // attached descriptor 3; F_GETFD proves it is open before it is owned.
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(3, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: descriptor 3 is open (above) and nothing else in this
    // process owns it: the helper never opens it for itself (its own
    // descriptors are close-on-exec and were made after it started).
    Ok(unsafe { OwnedFd::from_raw_fd(3) })
}

/// Makes the terminal on descriptor 0 the controlling terminal of this
/// process's session (which it leads, after `setsid`).
pub(crate) fn take_controlling_terminal() -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument and changes only the
    // session's terminal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the `IFF_UP` flag of `lo` in the current network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    use std::os::fd::AsRawFd as _;
    // SAFETY: `ifreq` is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into `req`, a valid ifreq that
    // outlives the call; the socket fd is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Default dispositions for every signal and an empty signal mask: the
/// helper is the kiln binary, whose Rust runtime ignores SIGPIPE, and
/// ignored signals survive `execve`. (Without this, `yes | head` in a RUN
/// step would loop on EPIPE instead of dying.) The raw system call reaches
/// the real-time signals glibc keeps for itself too.
pub(crate) fn reset_signals() -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a zeroed `sigaction` with SIG_DFL (0) is a valid argument;
        // the kernel copies it; no handler code is involved.
        let act: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: rt_sigaction(sig, &act, NULL, sizeof(sigset_t) as the kernel
        // sees it = 8); invalid signal numbers just fail with EINVAL.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &act as *const libc::sigaction,
                std::ptr::null_mut::<libc::sigaction>(),
                8usize,
            )
        };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// Takes ownership of the two pipe descriptors a rootless parent passed
/// down (`rootless::SYNC_ENV`), so they are closed when dropped.
pub(crate) fn adopt_fds(r: i32, w: i32) -> (OwnedFd, OwnedFd) {
    use std::os::fd::FromRawFd as _;
    // SAFETY: the caller checked that both are open descriptors (>= 3, in
    // /proc/self/fd) inherited for this purpose; nothing else in the
    // process owns them (it has only just started).
    unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) }
}

/// Ignores SIGINT and SIGQUIT in the rootless parent, which only waits for
/// its child: the terminal sends them to both, and the child decides.
pub(crate) fn ignore_interrupts() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Installs a seccomp filter (classic BPF, `struct sock_filter` array in
/// native byte order) on the calling thread. Needs CAP_SYS_ADMIN (or
/// no-new-privileges, which kiln does not set).
pub(crate) fn install_seccomp(bpf: &[u8]) -> io::Result<()> {
    if bpf.is_empty() || !bpf.len().is_multiple_of(8) || bpf.len() / 8 > usize::from(u16::MAX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "malformed seccomp filter",
        ));
    }
    let insns: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `insns`, which outlives the call; the kernel
    // copies the program and does not keep the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0usize,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec
/// (`close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`), so that only 0–2 reach
/// the step's program: descriptors kiln inherited from whatever started it
/// (a CI runner, make's jobserver, a shell's `exec 7<dir`) would otherwise
/// give the step a way out of its root (CVE-2024-21626's class). Falls back
/// to setting `FD_CLOEXEC` on each open descriptor where the kernel lacks
/// `close_range` (before 5.11).
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing; it only
    // sets a flag on descriptors, which no Rust object's validity depends on.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) && err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only changes the descriptor's close-on-exec flag;
        // a descriptor closed meanwhile (the directory listing's own) just
        // fails with EBADF, which is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Loads `prog` (eBPF instructions, native byte order) as a
/// `BPF_PROG_TYPE_CGROUP_DEVICE` program; its descriptor (close-on-exec, as
/// every bpf descriptor) attaches it to groups.
pub(crate) fn load_device_program(prog: &[u8]) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    if prog.is_empty() || !prog.len().is_multiple_of(8) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "malformed program",
        ));
    }
    let insns: Vec<u64> = prog
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let license = c"Apache-2.0";
    // union bpf_attr, BPF_PROG_LOAD part (little-endian layout of two u32
    // in one u64): prog_type, insn_cnt, insns, license; the rest zero.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(BPF_PROG_TYPE_CGROUP_DEVICE) | ((insns.len() as u64) << 32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // SAFETY: `attr` is a valid bpf_attr for BPF_PROG_LOAD of the size given;
    // the pointers in it (`insns`, `license`) outlive the call, and the
    // kernel copies what they point at.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the new program descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches the device program `prog` to the cgroup v2 directory `group`
/// (the attachment lives as long as the group).
pub(crate) fn attach_device_program(prog: &OwnedFd, group: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    // BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags.
    let mut attr = [0u64; 16];
    attr[0] = group.as_raw_fd() as u32 as u64 | ((prog.as_raw_fd() as u32 as u64) << 32);
    attr[1] = u64::from(BPF_CGROUP_DEVICE);
    // SAFETY: `attr` is a valid bpf_attr for BPF_PROG_ATTACH; both
    // descriptors are open for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct clone_args` of `clone3(2)` (the kernel's VER2 layout, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks the (single-threaded) helper's child directly into the cgroup v2
/// group `group` (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7): no
/// migration of a running process, which takes the kernel's cgroup
/// threadgroup lock for writing and waits for an RCU grace period —
/// milliseconds on every RUN step. `None` when the kernel (or a seccomp
/// filter around kiln) has no `clone3` or no `CLONE_INTO_CGROUP`.
pub(crate) fn fork_into_cgroup(
    group: std::os::fd::BorrowedFd<'_>,
) -> io::Result<Option<ForkResult>> {
    use std::os::fd::AsRawFd as _;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: group.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork. The helper is
    // single-threaded when it forks (a freshly exec'd kiln binary that has
    // started no threads), so the child may run arbitrary code, allocation
    // included, as after `fork_helper`. glibc's own fork bookkeeping is
    // skipped: the child calls no pthread function that depends on it
    // before it execs.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        0 => Ok(Some(ForkResult::Child)),
        p if p > 0 => Ok(Some(ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(p as i32),
        })),
        _ => {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM) => Ok(None),
                _ => Err(e),
            }
        }
    }
}
