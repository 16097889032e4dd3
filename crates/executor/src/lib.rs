//! `kiln-executor`: runs one RUN step in fresh Linux namespaces on an
//! overlayfs root, and streams its output.
//!
//! # Why a helper process
//!
//! `unshare`, `fork` and `pivot_root` must not be called from a
//! multi-threaded process such as kiln's tokio runtime: after a fork only
//! async-signal-safe code may run, and `unshare(CLONE_NEWNS)` fails in a
//! threaded process. So the caller ([`NamespaceExecutor`]) re-executes the
//! kiln binary as a single-threaded helper (`kiln __exec`, entry point
//! [`helper_main`]) and hands it the [`RunSpec`] on stdin. The helper creates
//! the namespaces (mount, pid, uts, ipc, and net for `--network=none`; the
//! default network is a namespace from a pool, see `network.rs`), mounts
//! the overlay, forks the process that becomes pid 1 of the new pid
//! namespace, and reports how it ended in a small status file.
//!
//! # Guarantees
//!
//! * No process outlives a step: the helper and pid 1 both die with their
//!   parent (`PR_SET_PDEATHSIG`), and when pid 1 dies the kernel kills the rest
//!   of its pid namespace. Cancelling kills the helper.
//! * No mount outlives a step: every mount lives in the helper's own mount
//!   namespace.
//! * The upper directory holds exactly what the command changed: mount points
//!   the image lacked (`/proc`, `/dev`, `/sys`, `/etc/hosts`,
//!   `/etc/resolv.conf`) are created for the run and removed afterwards,
//!   together with directories that exist in the upper only because of them.
//! * The process sees what BuildKit gives a RUN step: Docker's default
//!   capability set, `/dev` with the usual nodes, read-only `/sys`,
//!   containerd's masked and read-only `/proc` paths, generated `/etc/hosts`
//!   and `/etc/resolv.conf`, `HOME` from `/etc/passwd`, umask 022, default
//!   signal dispositions (the helper's Rust runtime ignores SIGPIPE), its own
//!   session, `/dev/null` as stdin.
//!
//! The container setup is computed as data first ([`plan`]), so what a spec
//! mounts is tested without root; user resolution is a pure function
//! ([`users`]). The only `unsafe` code is in `sys.rs`: `fork`, resetting
//! signal dispositions, and one `ioctl`.

mod api;
mod cgroup;
pub mod container;
mod devices;
mod error;
mod executor;
mod helper;
pub mod isolation;
pub mod namespaces;
mod network;
mod output;
mod parent;
mod plan;
pub mod rootless;
mod seccomp;
mod spec;
mod sys;
pub mod users;

pub use api::{Executor, ExitStatus, Stream};
pub use cgroup::Limits;
pub use error::{ExecError, StartFailure};
pub use executor::{Attach, NamespaceExecutor, receive_terminal, terminal_socket};
pub use helper::helper_main;
pub use spec::{
    AttachMode, ExtraMount, MountKind, Network, Resources, Rootfs, RunSpec, SecretData, Ulimit,
    UlimitError,
};
