//! Mounts: a private mount namespace for the kiln process, and overlay /
//! bind mounts of layer stacks with a guard that unmounts them.
//!
//! ## Overlay options
//!
//! Every overlay mount passes `index=off,redirect_dir=off,metacopy=off`
//! whatever the kernel's or the module's defaults: with these, an upper dir
//! holds only plain files, directories, whiteouts (0/0 character devices)
//! and opaque markers (`trusted.overlay.opaque=y`), which is exactly what
//! [`crate::write_layer_tar`] turns into an OCI layer. (With `redirect_dir`
//! a renamed directory would be a redirect xattr pointing into a lower
//! layer; with `metacopy` a chmod would copy up metadata only; both make the
//! upper meaningless without its lowers.) In a user namespace (rootless
//! mode, [`in_user_namespace`]) every overlay also gets `userxattr` (kernel
//! ≥ 5.11): overlay then keeps its markers in `user.overlay.*` xattrs, which
//! an unprivileged process may write, the unpacker writes too
//! ([`opaque_xattr`]) and the tar writer understands.
//!
//! ## How many layers
//!
//! `mount(2)` copies at most one page of option data, so the legacy mount
//! can name about `(PAGE_SIZE - len(upperdir, workdir, options)) /
//! (len(<store>/<id>/diff) + 1)` lower dirs: with a store at
//! `/var/lib/kiln/snapshots` (40 bytes per lower) about 100 layers. Beyond
//! that, [`mount_overlay`] falls back to the new mount API (`fsopen` +
//! `fsconfig("lowerdir+")`, Linux ≥ 6.8), which passes each lower dir
//! separately (each path at most 255 bytes) and so is limited only by
//! overlay's own maximum stack depth, [`MAX_OVERLAY_LAYERS`]. On older
//! kernels the fallback fails with [`MountError::TooManyLayers`], naming the
//! count.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

/// Overlay's maximum number of lower layers (`OVL_MAX_STACK`).
pub const MAX_OVERLAY_LAYERS: usize = 500;

/// The options kiln always passes to overlay (see the module docs).
pub const OVERLAY_FIXED_OPTIONS: [(&str, &str); 3] = [
    ("index", "off"),
    ("redirect_dir", "off"),
    ("metacopy", "off"),
];

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

/// Mounts a tiny overlay (one lower, an upper, a work dir) under `scratch`
/// and unmounts it: whether overlay can be used here, as this process is
/// (rootless mode checks it once, before a build).
pub fn probe_overlay(scratch: &Path) -> Result<(), MountError> {
    let dir = tempfile::Builder::new()
        .prefix("overlay-probe-")
        .tempdir_in(scratch)
        .map_err(|source| MountError::EmptyDir {
            target: scratch.to_path_buf(),
            source,
        })?;
    let sub = |n: &str| {
        let p = dir.path().join(n);
        std::fs::create_dir(&p).map(|()| p)
    };
    let made =
        (|| Ok::<_, io::Error>((sub("lower")?, sub("upper")?, sub("work")?, sub("merged")?)))();
    let (lower, upper, work, merged) = made.map_err(|source| MountError::EmptyDir {
        target: dir.path().to_path_buf(),
        source,
    })?;
    let guard = mount_overlay(&[lower], Some((&upper, &work)), &merged)?;
    guard.unmount()
}

/// [`probe_overlay`], remembered in the file `record` (of the state
/// directory) for this kernel release, user namespace or not, and the
/// filesystem `scratch` is on: a build that finds the same three there does
/// not mount and unmount a probe again (the unmount alone took 1–110 ms of
/// every no-op build under load). A failed probe forgets the record.
pub fn probe_overlay_remembered(scratch: &Path, record: &Path) -> Result<(), MountError> {
    use std::os::unix::fs::MetadataExt as _;
    let key = std::fs::metadata(scratch).ok().map(|m| {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "overlay ok: kernel {release}, user namespace {}, filesystem {}\n",
            in_user_namespace(),
            m.dev()
        )
    });
    if let Some(k) = &key
        && std::fs::read_to_string(record).ok().as_deref() == Some(k.as_str())
    {
        return Ok(());
    }
    match probe_overlay(scratch) {
        Ok(()) => {
            if let Some(k) = key {
                // Only an optimisation: a record that cannot be written
                // means the next build probes again.
                let _ = crate::atomic::write_replacing(record, k.as_bytes(), false);
            }
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(record);
            Err(e)
        }
    }
}

/// [`OVERLAY_FIXED_OPTIONS`], except in a user namespace: there
/// `redirect_dir=nofollow`, since `userxattr` refuses `off` (which the
/// kernel reads as `follow` when `redirect_always_follow` is set); redirects
/// are neither created nor followed, so uppers stay plain diffs all the same.
fn overlay_fixed_options() -> [(&'static str, &'static str); 3] {
    if in_user_namespace() {
        [
            ("index", "off"),
            ("redirect_dir", "nofollow"),
            ("metacopy", "off"),
        ]
    } else {
        OVERLAY_FIXED_OPTIONS
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

fn kernel_message(detail: &str) -> String {
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

/// Mounts the layer stack `lowers` (bottom → top), optionally with a
/// writable `upper` = `(upper dir, work dir)`, on `target`:
///
/// - lowers + upper: overlay (with no lowers, an empty temporary lower dir,
///   since overlay needs one);
/// - no upper, 0 lowers: an empty read-only tmpfs;
/// - no upper, 1 lower: a read-only bind mount of it;
/// - no upper, ≥ 2 lowers: a read-only overlay of lower dirs only.
///
/// Overlay always gets the options of the module docs. The returned guard
/// unmounts on drop. Needs `CAP_SYS_ADMIN`.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<MountGuard, MountError> {
    let guard = |empty| MountGuard {
        target: target.to_path_buf(),
        mounted: true,
        empty,
        native: None,
    };
    match (lowers, upper) {
        ([], None) => {
            let err = |op| {
                move |e: nix::errno::Errno| MountError::Mount {
                    kind: "tmpfs",
                    target: target.to_path_buf(),
                    op,
                    source: e.into(),
                    detail: String::new(),
                }
            };
            nix::mount::mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("size=4k,mode=755"),
            )
            .map_err(err("mount"))?;
            Ok(guard(None))
        }
        ([single], None) => {
            // Marked mounted by the bind, so a failed remount unmounts.
            let mut g = MountGuard {
                target: target.to_path_buf(),
                mounted: false,
                empty: None,
                native: None,
            };
            g.bind(single, true)?;
            Ok(g)
        }
        (_, _) => {
            let mut empty = None;
            let mut lower_paths: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
            if lower_paths.is_empty() {
                let dir = tempfile::Builder::new()
                    .prefix("kiln-empty-lower-")
                    .tempdir()
                    .map_err(|source| MountError::EmptyDir {
                        target: target.to_path_buf(),
                        source,
                    })?;
                empty = Some(dir);
            }
            if let Some(dir) = &empty {
                lower_paths.push(dir.path());
            }
            mount_overlayfs(&lower_paths, upper, target)?;
            Ok(guard(empty))
        }
    }
}

/// Escapes a path for overlay's legacy option parser: `\`, `,` and `:` are
/// backslash-escaped.
fn escape_option_path(out: &mut Vec<u8>, p: &Path) {
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The `mount(2)` option string for an overlay of `lowers` (bottom → top).
pub(crate) fn overlay_options(lowers: &[&Path], upper: Option<(&Path, &Path)>) -> Vec<u8> {
    let mut opts = b"lowerdir=".to_vec();
    for (i, l) in lowers.iter().rev().enumerate() {
        if i > 0 {
            opts.push(b':');
        }
        escape_option_path(&mut opts, l);
    }
    if let Some((up, work)) = upper {
        opts.extend_from_slice(b",upperdir=");
        escape_option_path(&mut opts, up);
        opts.extend_from_slice(b",workdir=");
        escape_option_path(&mut opts, work);
    }
    for (k, v) in overlay_fixed_options() {
        opts.push(b',');
        opts.extend_from_slice(k.as_bytes());
        opts.push(b'=');
        opts.extend_from_slice(v.as_bytes());
    }
    if in_user_namespace() {
        opts.extend_from_slice(b",userxattr");
    }
    opts
}

fn page_size() -> usize {
    rustix::param::page_size()
}

fn mount_overlayfs(
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), MountError> {
    if lowers.len() > MAX_OVERLAY_LAYERS {
        return Err(MountError::StackTooDeep {
            target: target.to_path_buf(),
            count: lowers.len(),
        });
    }
    let all_paths = lowers
        .iter()
        .copied()
        .chain(upper.into_iter().flat_map(|(u, w)| [u, w]));
    for p in all_paths {
        if p.as_os_str().as_bytes().contains(&0) {
            return Err(MountError::BadPath {
                target: target.to_path_buf(),
                path: p.to_path_buf(),
                why: "contains a NUL byte",
            });
        }
    }
    let opts = overlay_options(lowers, upper);
    let flags = if upper.is_none() {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let max = page_size() - 1;
    if opts.len() <= max {
        return nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(OsStr::from_bytes(&opts)),
        )
        .map_err(|e| MountError::Mount {
            kind: "overlay",
            target: target.to_path_buf(),
            op: "mount",
            source: e.into(),
            detail: String::new(),
        });
    }
    mount_overlay_fsconfig(lowers, upper, target).map_err(|e| match e {
        FsconfigError::Unsupported(source) => MountError::TooManyLayers {
            target: target.to_path_buf(),
            count: lowers.len(),
            len: opts.len(),
            max,
            source,
        },
        FsconfigError::Other(e) => e,
    })
}

enum FsconfigError {
    /// The kernel has no `lowerdir+` (or no fsopen at all).
    Unsupported(io::Error),
    Other(MountError),
}

/// Mounts an overlay with the new mount API, one `fsconfig("lowerdir+")`
/// call per lower dir (Linux ≥ 6.8).
fn mount_overlay_fsconfig(
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), FsconfigError> {
    let fail = |op: &'static str, fd: Option<&rustix::fd::OwnedFd>, e: rustix::io::Errno| {
        FsconfigError::Other(MountError::Mount {
            kind: "overlay",
            target: target.to_path_buf(),
            op,
            source: e.into(),
            detail: fd.map(read_fs_messages).unwrap_or_default(),
        })
    };
    let check = |p: &Path| {
        if p.as_os_str().len() > 255 {
            Err(FsconfigError::Other(MountError::BadPath {
                target: target.to_path_buf(),
                path: p.to_path_buf(),
                why: "longer than the 255 bytes fsconfig accepts",
            }))
        } else {
            Ok(())
        }
    };
    let fd = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| FsconfigError::Unsupported(e.into()))?;
    // lowerdir+ appends, topmost first, like the colon-separated list.
    for (i, l) in lowers.iter().rev().enumerate() {
        check(l)?;
        if let Err(e) = rustix::mount::fsconfig_set_string(&fd, "lowerdir+", *l) {
            if i == 0 && e == rustix::io::Errno::INVAL {
                return Err(FsconfigError::Unsupported(io::Error::other(format!(
                    "fsconfig(lowerdir+): {e}{}",
                    kernel_message(&read_fs_messages(&fd))
                ))));
            }
            return Err(fail("fsconfig(lowerdir+)", Some(&fd), e));
        }
    }
    if let Some((up, work)) = upper {
        check(up)?;
        check(work)?;
        rustix::mount::fsconfig_set_string(&fd, "upperdir", up)
            .map_err(|e| fail("fsconfig(upperdir)", Some(&fd), e))?;
        rustix::mount::fsconfig_set_string(&fd, "workdir", work)
            .map_err(|e| fail("fsconfig(workdir)", Some(&fd), e))?;
    }
    for (k, v) in overlay_fixed_options() {
        rustix::mount::fsconfig_set_string(&fd, k, v)
            .map_err(|e| fail("fsconfig(options)", Some(&fd), e))?;
    }
    if in_user_namespace() {
        rustix::mount::fsconfig_set_flag(&fd, "userxattr")
            .map_err(|e| fail("fsconfig(userxattr)", Some(&fd), e))?;
    }
    rustix::mount::fsconfig_create(&fd).map_err(|e| fail("fsconfig(create)", Some(&fd), e))?;
    let attrs = if upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rustix::mount::fsmount(&fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| fail("fsmount", Some(&fd), e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", None, e))
}

/// The messages the kernel logged on an fs context (`e overlay: …` lines).
fn read_fs_messages(fd: &rustix::fd::OwnedFd) -> String {
    let Ok(dup) = fd.try_clone() else {
        return String::new();
    };
    let mut file = std::fs::File::from(dup);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA when there are no more.
    for _ in 0..16 {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !out.is_empty() {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_list_the_top_layer_first_and_escape_separators() {
        let a = Path::new("/s/aaa/diff");
        let b = Path::new("/s/b:b,b\\/diff");
        let opts = overlay_options(&[a, b], Some((Path::new("/u"), Path::new("/w"))));
        let (redirect, userxattr) = if in_user_namespace() {
            ("nofollow", ",userxattr")
        } else {
            ("off", "")
        };
        assert_eq!(
            String::from_utf8(opts).unwrap(),
            format!(
                "lowerdir=/s/b\\:b\\,b\\\\/diff:/s/aaa/diff,upperdir=/u,workdir=/w,index=off,redirect_dir={redirect},metacopy=off{userxattr}"
            )
        );
    }
}
