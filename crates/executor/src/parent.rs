//! The helper's parent: how a helper learns it is gone.

/// The environment variable by which a helper learns its parent's pid.
pub(crate) const PARENT_ENV: &str = "_KILN_HELPER_PARENT";

/// Whether the process that started this helper is gone (call it after
/// `PR_SET_PDEATHSIG`): the parent is not the one that set [`PARENT_ENV`]
/// (without it: the parent is pid 1). Comparing with 1 alone is wrong where
/// kiln itself is pid 1, as a container's entrypoint.
pub(crate) fn parent_gone() -> bool {
    let ppid = nix::unistd::getppid().as_raw();
    match std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(expected) => ppid != expected,
        None => ppid == 1,
    }
}
