//! Mounts: a private mount namespace for the kiln process; the guard of
//! what a snapshotter makes at a target ([`MountGuard`]: it unmounts, and
//! diffs and removes a tree made instead of a mount), with the mounts that
//! need no overlay (an empty read-only tmpfs, a read-only bind mount of one
//! layer, [`mount_without_overlay`]); and the errors of every mount
//! ([`MountError`]). Overlay's own mounting is [`crate::overlay`]'s.
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Overlay's maximum number of lower layers (`OVL_MAX_STACK`), which
/// [`MountError::StackTooDeep`] names.
pub const MAX_OVERLAY_LAYERS: usize = 500;

/// Whether this process runs in a user namespace other than the initial one
/// (its `uid_map` is not the identity map of every id): rootless mode.
/// Computed once.
pub fn in_user_namespace() -> bool {
    static IN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
            let fields: Vec<&str> = m.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        })
    })
}

/// Whether this process holds `CAP_SYS_ADMIN` (bit 21 of `CapEff` in
/// `/proc/self/status`), which `trusted.*` extended attributes need.
/// Computed once.
pub fn has_cap_sys_admin() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|caps| caps & (1 << 21) != 0)
    })
}

/// The xattr that marks an opaque directory in a layer: `trusted.overlay.opaque`,
/// or `user.overlay.opaque` in a user namespace (where overlay is mounted
/// with `userxattr` and `trusted.*` cannot be written) and in a process
/// without `CAP_SYS_ADMIN` (kiln in an unprivileged container, which cannot
/// mount overlay anyway and may not write `trusted.*`).
pub fn opaque_xattr() -> &'static str {
    if in_user_namespace() || !has_cap_sys_admin() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// Errors of the mount functions. Each names the mount target or the path
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `unshare(CLONE_NEWNS)` or making `/` private failed.
    #[error("private mount namespace: {op}: {source}")]
    Namespace {
        /// What failed.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A mount system call failed.
    #[error("mount {kind} on {}: {op}: {source}{}", target.display(), kernel_message(.detail))]
    Mount {
        /// `overlay`, `bind`, `tmpfs`.
        kind: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The failing step.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
        /// Messages the kernel logged for an `fsconfig` mount, if any.
        detail: String,
    },
    /// Too many lower dirs for this kernel.
    #[error(
        "mount overlay on {}: {count} lower layers do not fit in one mount(2) option page ({len} bytes > {max}) and this kernel has no fsconfig \"lowerdir+\" (Linux >= 6.8): {source}",
        target.display()
    )]
    TooManyLayers {
        /// The mount point.
        target: PathBuf,
        /// Number of lower layers requested.
        count: usize,
        /// Length of the option string.
        len: usize,
        /// The page-size limit.
        max: usize,
        /// Why the fallback failed.
        source: io::Error,
    },
    /// More lower layers than overlay supports at all.
    #[error("mount overlay on {}: {count} lower layers exceed overlay's maximum of {MAX_OVERLAY_LAYERS}", target.display())]
    StackTooDeep {
        /// The mount point.
        target: PathBuf,
        /// Number of lower layers requested.
        count: usize,
    },
    /// A path cannot be passed to the kernel (contains a NUL byte, or is
    /// longer than the 255 bytes an `fsconfig` string may have).
    #[error("mount on {}: unusable path {}: {why}", target.display(), path.display())]
    BadPath {
        /// The mount point.
        target: PathBuf,
        /// The offending path.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// Creating the empty lower dir failed.
    #[error("mount on {}: creating an empty lower dir: {source}", target.display())]
    EmptyDir {
        /// The mount point.
        target: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The native snapshotter failed to copy a tree or write its diff.
    #[error("native snapshotter: {op} {}: {source}", path.display())]
    Native {
        /// What failed.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Unmounting failed.
    #[error("unmount {}: {source}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

pub(crate) fn kernel_message(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// Moves the calling process into a new mount namespace whose mounts are
/// all private (`unshare(CLONE_NEWNS)` + `mount --make-rprivate /`).
///
/// Call it once, at process start, while the process is still
/// single-threaded (`unshare(CLONE_NEWNS)` affects only the calling thread's
/// view in a multi-threaded process, so other threads would not see kiln's
/// mounts). Afterwards every mount kiln makes lives in a namespace that dies
/// with the process: a crash, a `kill -9` or a forgotten guard can never
/// leave overlay mounts behind on the host, and no host mount event
/// propagates in (nor any of ours out). Needs `CAP_SYS_ADMIN`.
pub fn private_mount_namespace() -> Result<(), MountError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        MountError::Namespace {
            op: "unshare(CLONE_NEWNS)",
            source: e.into(),
        }
    })?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| MountError::Namespace {
        op: "making / rprivate",
        source: e.into(),
    })
}

/// A tree a snapshotter makes at a guard's target instead of mounting
/// (the native snapshotter's, `native.rs`): what unmounting does with it.
pub(crate) trait Tree: std::fmt::Debug + Send {
    /// Writes its changes (writable trees) and returns it when it may wait
    /// for the next mount of its stack; otherwise empties the target.
    fn finish(self: Box<Self>, target: &Path) -> Result<Option<Kept>, MountError>;
    /// Empties the target without writing anything (the guard was dropped).
    fn discard(self: Box<Self>, target: &Path);
    /// For [`MountGuard::tree_mut`].
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// A finished tree that may serve the next mount of its stack, told what
/// the caller changes in the upper dir after the diff.
pub(crate) trait KeptTree: std::fmt::Debug + Send {
    fn removed(&mut self, rel: &Path);
    fn touched(&mut self, rel: &Path);
    fn touched_ancestors(&mut self, rel: &Path);
    fn replaced(&mut self, rel: &Path);
    fn offer(self: Box<Self>);
}

/// A tree kept after an unmount ([`MountGuard::unmount_keeping`]): report
/// what changed in the upper dir since the diff, then [offer](Kept::offer)
/// it for the next mount of its stack; dropping it discards it (it is only
/// ever an optimisation). See the native snapshotter's `NativeKept`.
#[derive(Debug)]
pub struct Kept(pub(crate) Box<dyn KeptTree>);

impl Kept {
    /// `rel` (relative to the tree's root) was removed from the upper dir.
    pub fn removed(&mut self, rel: &Path) {
        self.0.removed(rel);
    }

    /// `rel` was written in the upper dir.
    pub fn touched(&mut self, rel: &Path) {
        self.0.touched(rel);
    }

    /// Every directory above `rel` was touched.
    pub fn touched_ancestors(&mut self, rel: &Path) {
        self.0.touched_ancestors(rel);
    }

    /// `rel` was replaced in the upper dir.
    pub fn replaced(&mut self, rel: &Path) {
        self.0.replaced(rel);
    }

    /// Hands the tree to the next mount of its stack.
    pub fn offer(self) {
        self.0.offer();
    }
}

/// A mount that is detached (`umount2(MNT_DETACH)`) when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard unmounts at once"]
pub struct MountGuard {
    target: PathBuf,
    mounted: bool,
    /// The empty lower dir of an overlay without layers, removed after the
    /// unmount.
    empty: Option<tempfile::TempDir>,
    /// A tree a snapshotter made at the target (the native snapshotter's):
    /// diffed (if writable) and removed after the unmount.
    native: Option<Box<dyn Tree>>,
}

impl MountGuard {
    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure (dropping unmounts too but ignores
    /// errors). With the native snapshotter, a writable mount's changes are
    /// written to its upper dir here, and only here.
    pub fn unmount(self) -> Result<(), MountError> {
        if let Some(kept) = self.unmount_keeping()? {
            kept.offer();
        }
        Ok(())
    }

    /// [`MountGuard::unmount`], for a caller that changes the upper dir
    /// afterwards: a tree the native snapshotter would keep for the next
    /// mount of the stack is returned, for the caller to report its changes
    /// and then [offer](Kept::offer) it.
    pub fn unmount_keeping(mut self) -> Result<Option<Kept>, MountError> {
        if self.mounted {
            self.mounted = false;
            nix::mount::umount2(&self.target, MntFlags::MNT_DETACH).map_err(|e| {
                MountError::Unmount {
                    target: self.target.clone(),
                    source: e.into(),
                }
            })?;
        }
        match self.native.take() {
            Some(n) => n.finish(&self.target),
            None => Ok(None),
        }
    }

    /// A guard for what was just mounted at `target`, with the empty
    /// lower dir to remove after the unmount, if any.
    pub(crate) fn mounted(target: &Path, empty: Option<tempfile::TempDir>) -> MountGuard {
        MountGuard {
            target: target.to_path_buf(),
            mounted: true,
            empty,
            native: None,
        }
    }

    /// A guard for a tree a snapshotter is about to make at `target` (not
    /// mounted yet).
    pub(crate) fn with_tree(target: &Path, tree: Box<dyn Tree>) -> MountGuard {
        MountGuard {
            target: target.to_path_buf(),
            mounted: false,
            empty: None,
            native: Some(tree),
        }
    }

    /// The guard's tree, as the snapshotter that made it knows it.
    pub(crate) fn tree_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.native
            .as_mut()
            .and_then(|t| t.as_any_mut().downcast_mut::<T>())
    }

    /// Bind-mounts `source` on the target (read-only if asked): a single
    /// layer, or the target itself (the native snapshotter's trees: a mount
    /// point for `pivot_root`, or a view nothing writes through).
    pub(crate) fn bind(&mut self, source: &Path, read_only: bool) -> Result<(), MountError> {
        let err = |op| {
            let target = self.target.clone();
            move |e: nix::errno::Errno| MountError::Mount {
                kind: "bind",
                target,
                op,
                source: e.into(),
                detail: String::new(),
            }
        };
        nix::mount::mount(
            Some(source),
            &self.target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err("bind"))?;
        self.mounted = true;
        // A bind mount ignores MS_RDONLY on creation: remount it.
        if read_only {
            nix::mount::mount(
                None::<&str>,
                &self.target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(err("remount read-only"))?;
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
        }
        if let Some(n) = self.native.take() {
            n.discard(&self.target);
        }
        // `empty` (if any) is removed by its own drop, after the unmount.
        let _ = self.empty.take();
    }
}

/// A read-only view of fewer than two layers, which needs no overlay: an
/// empty read-only tmpfs (no layer) or a read-only bind mount of the one
/// layer; `None` for two or more. Needs `CAP_SYS_ADMIN`.
pub(crate) fn mount_without_overlay(
    lowers: &[PathBuf],
    target: &Path,
) -> Option<Result<MountGuard, MountError>> {
    match lowers {
        [] => {
            let err = |op| {
                move |e: nix::errno::Errno| MountError::Mount {
                    kind: "tmpfs",
                    target: target.to_path_buf(),
                    op,
                    source: e.into(),
                    detail: String::new(),
                }
            };
            Some(
                nix::mount::mount(
                    Some("tmpfs"),
                    target,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("size=4k,mode=755"),
                )
                .map(|()| MountGuard::mounted(target, None))
                .map_err(err("mount")),
            )
        }
        [single] => {
            // Marked mounted by the bind, so a failed remount unmounts.
            let mut g = MountGuard {
                target: target.to_path_buf(),
                mounted: false,
                empty: None,
                native: None,
            };
            Some(g.bind(single, true).map(|()| g))
        }
        _ => None,
    }
}
