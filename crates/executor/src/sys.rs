//! The few system calls that need `unsafe`: `fork`, resetting signal
//! dispositions, bringing up the loopback interface, and, for rootless mode,
//! adopting inherited pipe descriptors and ignoring Ctrl-C in the waiting
//! parent. Everything else goes
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
