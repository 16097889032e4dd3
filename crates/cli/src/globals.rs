//! What every command is given: the global flags, and whether kiln runs
//! rootless (entering the user namespace it needs).

use crate::args;
use crate::failure::Failure;
use crate::progress;

/// The flags every command takes.
#[derive(Debug)]
pub struct Globals {
    pub root: Option<std::path::PathBuf>,
    pub insecure_registries: Vec<String>,
    pub registry_config: Option<std::path::PathBuf>,
    /// `--debug`: say how the build is set up (namespaces, snapshotter).
    pub debug: bool,
    /// `--snapshotter`.
    pub snapshotter: args::SnapshotterChoice,
    /// `--isolation`.
    pub isolation: args::IsolationChoice,
    /// `--throwaway`: the container isolation mode may replace this
    /// machine's root filesystem.
    pub throwaway: bool,
}

/// Whether this process is the rootless child: root of a user namespace
/// that maps the invoking user's subordinate ids.
pub(crate) static ROOTLESS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether kiln runs rootless (in the user namespace it made for itself).
pub fn rootless() -> bool {
    ROOTLESS.get().copied().unwrap_or(false)
}

/// Rootless: when kiln is neither root nor in its user namespace yet, runs
/// this command again as root of a user namespace mapping the user's
/// subordinate ids and returns how it ended (`Failure::Status` carries its
/// exit code); `None` when no namespace is needed. Call it while the process
/// is single-threaded.
pub fn enter_rootless(debug: bool) -> Option<Result<(), Failure>> {
    if rootless() || nix::unistd::geteuid().is_root() {
        return None;
    }
    Some(rootless_parent(debug))
}

fn rootless_parent(debug: bool) -> Result<(), Failure> {
    use kiln_executor::rootless::{Host, HostUser, preflight, run_in_namespace};
    let uid = nix::unistd::getuid();
    let user = HostUser {
        uid: uid.as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        name: nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name),
    };
    let mut host = Host::system(std::env::var_os("PATH"));
    // Where the subordinate id files are, for hosts (and tests) that keep
    // them elsewhere.
    if let Some(p) = std::env::var_os("KILN_SUBUID_FILE") {
        host.subuid = p.into();
    }
    if let Some(p) = std::env::var_os("KILN_SUBGID_FILE") {
        host.subgid = p.into();
    }
    let plan = preflight(&host, &user).map_err(|e| Failure::Internal(e.into()))?;
    if debug {
        progress::say(&format!("debug: rootless: {}", plan.describe()));
    }
    let status = run_in_namespace(&plan).map_err(|e| Failure::Internal(e.into()))?;
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(4),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(4),
        (None, None) => 4,
    };
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::Status(code))
    }
}
