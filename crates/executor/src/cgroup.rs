//! Resource limits of a RUN step (`kiln build --memory`, `--pids-limit`): a
//! control group per step, made before the step's helper reads its request
//! (so every process of the step starts inside it) and removed when the step
//! is over.
//!
//! Both cgroup layouts are handled, because build machines have both:
//!
//! - **v2** (`/sys/fs/cgroup/cgroup.controllers` exists, or a unified
//!   hierarchy mounted elsewhere that has the controllers): the step's group
//!   is a child of kiln's own group. A v2 group with processes cannot hand
//!   controllers to its children, so kiln first moves itself into a leaf
//!   child `kiln-<pid>` of its group (once), then enables `memory` and
//!   `pids` in its group's `cgroup.subtree_control`.
//! - **v1** (one hierarchy per controller, `/sys/fs/cgroup/memory`,
//!   `/sys/fs/cgroup/pids`): a child of kiln's group in each hierarchy that
//!   has a limit to set.
//!
//! Limits never enter a cache key (as in BuildKit: a step's result does not
//! depend on them); a step killed for want of memory fails, and the failure
//! says so.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ExecError;

/// Limits on a step's processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (bytes) the step's processes may use together.
    pub memory: Option<u64>,
    /// How many processes (and threads) the step may have at once.
    pub pids: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.pids.is_some()
    }
}

/// The control groups of one step; removed on drop.
#[derive(Debug)]
pub struct StepCgroup {
    /// (directory, v2) of each group made.
    dirs: Vec<(PathBuf, bool)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn err(what: impl std::fmt::Display) -> ExecError {
    ExecError::Helper(format!("resource limits (--memory, --pids-limit): {what}"))
}

/// Removes the step groups below `parent` that a kiln process left when it
/// was killed (its Drop never ran): `kiln-step-PID-N` whose process is
/// gone (a group that still holds a process cannot be removed). Once per
/// process and parent.
fn sweep_stale(parent: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut swept) = SWEPT.lock() else {
        return;
    };
    if swept.iter().any(|p| p == parent) {
        return;
    }
    swept.push(parent.to_path_buf());
    drop(swept);
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("kiln-step-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            // A confined parent holds the step groups made in it.
            for child in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(child.path());
                }
            }
            let _ = fs::remove_dir(e.path());
        }
    }
}

/// This process's group below `parent` that holds the device allow-list
/// (v1: `devices.deny`/`devices.allow`; v2: the device program), made once;
/// each confined step gets a group inside it, which inherits the list.
/// Named like a step group, so that a killed kiln's is swept the same way.
static MADE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// How many executors of this process are alive: the last one to go
/// removes the confined parents (`release_confined`).
pub(crate) static LIVE_EXECUTORS: AtomicU64 = AtomicU64::new(0);

/// Removes this process's confined parents once no executor is left (their
/// steps are over by then; a parent a step still uses is not empty and stays).
pub(crate) fn release_confined() {
    let Ok(mut made) = MADE.lock() else {
        return;
    };
    if LIVE_EXECUTORS.load(Ordering::SeqCst) != 0 {
        return;
    }
    for d in made.drain(..) {
        let _ = fs::remove_dir(d);
    }
}

fn confined_parent(parent: &Path, v2: bool) -> Result<PathBuf, ExecError> {
    let dir = parent.join(format!("kiln-step-{}-confined", std::process::id()));
    let mut made = MADE
        .lock()
        .map_err(|_| confine_err("a step's confinement panicked"))?;
    if made.contains(&dir) {
        return Ok(dir);
    }
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(confine_err(format!("creating {}: {e}", dir.display()))),
    }
    if v2 {
        crate::devices::attach_v2(&dir).map_err(confine_err)?;
    } else {
        write(&dir.join("devices.deny"), "a")?;
        for rule in crate::devices::DEVICE_RULES {
            write(&dir.join("devices.allow"), rule)?;
        }
    }
    made.push(dir.clone());
    Ok(dir)
}

fn confine_err(what: impl std::fmt::Display) -> ExecError {
    ExecError::Helper(format!("confining the step (cgroups): {what}"))
}

fn set_limits_v2(dir: &Path, limits: &Limits) -> Result<(), ExecError> {
    if let Some(m) = limits.memory {
        write(&dir.join("memory.max"), &m.to_string())?;
        // No swap beyond the limit, as `docker run --memory` with
        // swap accounting off behaves.
        let _ = fs::write(dir.join("memory.swap.max"), "0");
    }
    if let Some(p) = limits.pids {
        write(&dir.join("pids.max"), &p.to_string())?;
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<(), ExecError> {
    fs::write(path, value).map_err(|e| err(format!("writing {value:?} to {}: {e}", path.display())))
}

/// The group of this process in the hierarchy of `controller` (`""`: v2), from
/// `/proc/self/cgroup`.
fn own_group(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_owned())
    })
}

/// Where the v2 hierarchy is mounted, if it has the controllers needed.
fn v2_root(limits: &Limits) -> Option<PathBuf> {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let root = PathBuf::from(root);
        let Ok(ctrls) = fs::read_to_string(root.join("cgroup.controllers")) else {
            continue;
        };
        let has = |c: &str| ctrls.split_whitespace().any(|x| x == c);
        if (limits.memory.is_none() || has("memory")) && (limits.pids.is_none() || has("pids")) {
            return Some(root);
        }
    }
    None
}

/// The cgroup v1 hierarchies of this process: (mount directory under
/// `/sys/fs/cgroup`, controllers as `/proc/self/cgroup` lists them, own group).
fn v1_hierarchies() -> Vec<(PathBuf, String, String)> {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = Vec::new();
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            continue;
        }
        let base = Path::new("/sys/fs/cgroup");
        let name = ctrls.strip_prefix("name=").unwrap_or(ctrls);
        let candidates = std::iter::once(name.to_owned()).chain(
            ctrls
                .split(',')
                .map(|c| c.strip_prefix("name=").unwrap_or(c).to_owned()),
        );
        if let Some(dir) = candidates
            .map(|c| base.join(c))
            .find(|d| d.join("cgroup.procs").exists())
        {
            out.push((dir, ctrls.to_owned(), path.to_owned()));
        }
    }
    out
}

/// Where the v2 hierarchy is mounted, if this process is in one (with
/// `cgroup.controllers`, whatever they are).
fn v2_any() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|r| r.join("cgroup.controllers").exists())
}

impl StepCgroup {
    /// Makes the step's groups: one in every hierarchy kiln is in (v1
    /// controllers and the v2 tree), with `limits` set and, unless the step
    /// is privileged, the device allow-list (v1 `devices.deny`/`allow`; on
    /// v2 the same rules as an eBPF device program). `None` when there is
    /// nothing to make: in a user namespace (rootless), where no hierarchy
    /// is delegated, unless limits ask for one. Fails with the reason when
    /// the host does not let kiln make a group it needs.
    pub fn create(limits: &Limits, privileged: bool) -> Result<Option<StepCgroup>, ExecError> {
        if kiln_snapshot::in_user_namespace() {
            return Self::create_limits_only(limits);
        }
        let name = format!(
            "kiln-step-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = StepCgroup { dirs: Vec::new() };
        let limits_v2 = limits.any() && v2_root(limits).is_some();
        // Whether the v2 group got the device program: then a v1 `devices`
        // group would be a second guard that costs a migration (an RCU
        // grace period) per step, and is not made.
        let mut v2_confined = false;
        if let Some(root) = v2_any() {
            let own =
                own_group("").ok_or_else(|| err("no cgroup v2 entry in /proc/self/cgroup"))?;
            let parent = root.join(own.trim_start_matches('/'));
            if limits_v2 {
                enable_controllers_v2(&parent, limits)?;
            }
            sweep_stale(&parent);
            // The device program is attached once, to a group of this
            // process's that every confined step's group is made in
            // (programs of a parent apply to its descendants). Steps with
            // v2 limits need the controllers of kiln's own group: theirs
            // get the program directly.
            let v1_devices = v1_hierarchies()
                .iter()
                .any(|(_, c, _)| c.split(',').any(|x| x == "devices"));
            let base = if privileged || limits_v2 {
                parent.clone()
            } else {
                match confined_parent(&parent, true) {
                    Ok(p) => {
                        v2_confined = true;
                        p
                    }
                    // On a hybrid host where the program cannot be
                    // attached, the v1 `devices` hierarchy confines the step.
                    Err(_) if v1_devices => parent.clone(),
                    Err(e) => return Err(e),
                }
            };
            let dir = base.join(&name);
            fs::create_dir(&dir)
                .map_err(|e| confine_err(format!("creating {}: {e}", dir.display())))?;
            cg.dirs.push((dir.clone(), true));
            if limits_v2 {
                set_limits_v2(&dir, limits)?;
                if !privileged {
                    match crate::devices::attach_v2(&dir) {
                        Ok(()) => v2_confined = true,
                        Err(e) if !v1_devices => return Err(confine_err(e)),
                        Err(_) => {}
                    }
                }
            }
        }
        for (root, ctrls, own) in v1_hierarchies() {
            let has = |c: &str| ctrls.split(',').any(|x| x == c);
            let parent = root.join(own.trim_start_matches('/'));
            sweep_stale(&parent);
            let confined = has("devices") && !privileged && !v2_confined;
            let dir = if confined {
                confined_parent(&parent, false)?.join(&name)
            } else {
                parent.join(&name)
            };
            let needed = confined
                || (!limits_v2
                    && ((has("memory") && limits.memory.is_some())
                        || (has("pids") && limits.pids.is_some())));
            // Hierarchies the step needs nothing from get no group: moving a
            // process into a v1 group waits for an RCU grace period, a
            // cost per step and hierarchy. (The step's cgroup namespace
            // shows kiln's group as the root of those.)
            if !needed {
                continue;
            }
            fs::create_dir(&dir)
                .map_err(|e| confine_err(format!("creating {}: {e}", dir.display())))?;
            cg.dirs.push((dir.clone(), false));
            if !limits_v2 {
                if has("memory")
                    && let Some(m) = limits.memory
                {
                    write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                    let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), m.to_string());
                }
                if has("pids")
                    && let Some(p) = limits.pids
                {
                    write(&dir.join("pids.max"), &p.to_string())?;
                }
            }
        }
        if limits.memory.is_some() && !limits_v2 && !cg.has_v1("memory") {
            return Err(err(
                "this host has no cgroup v1 memory hierarchy and no cgroup v2 with the memory controller",
            ));
        }
        if limits.pids.is_some() && !limits_v2 && !cg.has_v1("pids") {
            return Err(err(
                "this host has no cgroup v1 pids hierarchy and no cgroup v2 with the pids controller",
            ));
        }
        Ok(Some(cg))
    }

    fn has_v1(&self, controller: &str) -> bool {
        self.dirs.iter().any(|(d, v2)| {
            !*v2 && d
                .join(match controller {
                    "memory" => "memory.limit_in_bytes",
                    _ => "pids.max",
                })
                .exists()
        })
    }

    /// Rootless: groups only for limits (which then need a delegated
    /// hierarchy, and fail saying so without one).
    fn create_limits_only(limits: &Limits) -> Result<Option<StepCgroup>, ExecError> {
        if !limits.any() {
            return Ok(None);
        }
        let name = format!(
            "kiln-step-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = StepCgroup { dirs: Vec::new() };
        if let Some(root) = v2_root(limits) {
            let own =
                own_group("").ok_or_else(|| err("no cgroup v2 entry in /proc/self/cgroup"))?;
            let parent = root.join(own.trim_start_matches('/'));
            enable_controllers_v2(&parent, limits)?;
            let dir = parent.join(&name);
            fs::create_dir(&dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
            cg.dirs.push((dir.clone(), true));
            set_limits_v2(&dir, limits)?;
            return Ok(Some(cg));
        }
        for (controller, file, value) in [
            ("memory", "memory.limit_in_bytes", limits.memory),
            ("pids", "pids.max", limits.pids),
        ] {
            let Some(value) = value else { continue };
            let root = Path::new("/sys/fs/cgroup").join(controller);
            let own = own_group(controller).ok_or_else(|| {
                err(format!(
                    "this host has no cgroup v1 {controller} hierarchy and no cgroup v2 with \
                     the {controller} controller"
                ))
            })?;
            let dir = root.join(own.trim_start_matches('/')).join(&name);
            fs::create_dir(&dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
            cg.dirs.push((dir.clone(), false));
            write(&dir.join(file), &value.to_string())?;
            if controller == "memory" {
                let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), value.to_string());
            }
        }
        Ok(Some(cg))
    }

    /// The step's groups as the helper bind-mounts them, read-only, at
    /// `/sys/fs/cgroup`: (name under `/sys/fs/cgroup`, `""` for a v2-only
    /// host, host directory).
    pub(crate) fn mounts(&self) -> Vec<(String, PathBuf)> {
        let v2_only = v1_hierarchies().is_empty();
        self.dirs
            .iter()
            .filter_map(|(dir, v2)| {
                let name = if *v2 && v2_only {
                    String::new()
                } else if *v2 {
                    "unified".to_owned()
                } else {
                    // /sys/fs/cgroup/<hierarchy>/<kiln's group>/<step>
                    dir.strip_prefix("/sys/fs/cgroup")
                        .ok()?
                        .components()
                        .next()?
                        .as_os_str()
                        .to_str()?
                        .to_owned()
                };
                Some((name, dir.clone()))
            })
            .collect()
    }

    /// The step's v2 group, if it has one: the helper forks the step's
    /// pid 1 into it (`sys::fork_into_cgroup`).
    pub(crate) fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(_, v2)| *v2)
            .map(|(d, _)| d.as_path())
    }

    /// Moves process `pid` (the step's helper, before it starts the step)
    /// into the step's v1 groups (each move waits for an RCU grace period;
    /// the v2 group gets the step's pid 1 at birth instead, `v2_dir`).
    pub(crate) fn add_v1(&self, pid: u32) -> Result<(), ExecError> {
        for (dir, v2) in &self.dirs {
            if *v2 {
                continue;
            }
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the kernel killed a process of the step for want of memory.
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|(dir, v2)| {
            let (file, key) = if *v2 {
                ("memory.events", "oom_kill ")
            } else {
                ("memory.oom_control", "oom_kill ")
            };
            fs::read_to_string(dir.join(file)).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.strip_prefix(key)
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    }
}

/// Makes `parent` able to limit its children: kiln moves itself into a leaf
/// child first (a v2 group with processes cannot enable controllers for its
/// children), then enables the controllers needed.
fn enable_controllers_v2(parent: &Path, limits: &Limits) -> Result<(), ExecError> {
    let wanted: Vec<&str> = [limits.memory.map(|_| "memory"), limits.pids.map(|_| "pids")]
        .into_iter()
        .flatten()
        .collect();
    let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let me = std::process::id().to_string();
    let procs = fs::read_to_string(parent.join("cgroup.procs")).unwrap_or_default();
    if procs.split_whitespace().any(|p| p == me) {
        let leaf = parent.join(format!("kiln-{me}"));
        match fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("creating {}: {e}", leaf.display()))),
        }
        write(&leaf.join("cgroup.procs"), &me)?;
    }
    let change: String = missing.iter().map(|c| format!("+{c} ")).collect();
    fs::write(parent.join("cgroup.subtree_control"), change.trim()).map_err(|e| {
        err(format!(
            "enabling {} for the groups below {}: {e} (other processes share kiln's cgroup; \
             run kiln in a group of its own, e.g. `systemd-run --scope -p Delegate=yes kiln …`)",
            missing.join(", "),
            parent.display()
        ))
    })
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        for (dir, _) in &self.dirs {
            // The step's processes are gone by now (its pid namespace ended
            // with the helper); the kernel may need a moment to let go.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limits_no_group() {
        assert!(!Limits::default().any());
        assert!(
            Limits {
                pids: Some(10),
                ..Limits::default()
            }
            .any()
        );
    }
}
