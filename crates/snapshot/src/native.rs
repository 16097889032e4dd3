//! The native snapshotter: layer stacks materialised by copying, for hosts
//! where overlayfs cannot be mounted.
//!
//! ## Why it exists
//!
//! overlayfs is kiln's snapshotter wherever it can be mounted, because the
//! kernel computes each step's diff for free (see the crate docs). Some
//! hosts cannot mount it: a user namespace on Linux < 5.11 (rootless mode
//! before overlay learnt `userxattr`), a state directory on a filesystem
//! overlay refuses as an upper dir (overlayfs itself, as inside a container
//! whose root is an overlay; some network filesystems), or a kernel built
//! without overlay. containerd and BuildKit call their fallback for these
//! hosts "native"; so does kiln (`--snapshotter native`).
//!
//! ## The shape
//!
//! The layer *format* does not change: the store keeps overlay upper dirs
//! (whiteouts as 0/0 character devices, opaque markers as xattrs), so a
//! state directory written by one snapshotter is read by the other, the tar
//! writer is shared, and a native build gives the same layers as an overlay
//! build. Only *mounting* changes, behind the same [`Snapshotter`] trait
//! ([`Native`]) and the same [`crate::MountGuard`]:
//!
//! - **writable** (a `RUN` root, a file op's destination, a read-write
//!   mount): the merged view of the lower layers is *copied* into the
//!   target directory (file data with holes kept), which is then
//!   bind-mounted on itself (`pivot_root` wants a mount
//!   point). Right after, the inode number and ctime of every entry are
//!   recorded ([`Baseline`]). On [`crate::MountGuard::unmount`] the tree is
//!   compared with that record, and what changed is written into the upper
//!   dir in overlay's own format, as overlay would have written it: changed
//!   and new entries are hard-linked there (no second copy), their parent
//!   directories made with their current metadata, deleted entries become
//!   whiteouts, and a directory made where the lowers had something is
//!   opaque.
//! - **read-only** with two or more lowers (`COPY --from`, exports): the
//!   merged view is made of hard links to the layers' files and bind-mounted
//!   read-only, so nothing is copied and nothing can write through it. (One
//!   lower is a read-only bind mount, none an empty tmpfs, as with overlay.)
//!
//! ## Change detection
//!
//! Every change to an inode (data, mode, owner, xattrs, times, link count)
//! sets its ctime to the current time, which no process can set back, and
//! replacing a path gives it another inode (told apart by inode number and
//! birth time, since numbers are reused at once). So an entry is unchanged
//! exactly when its inode and ctime are those recorded. Before the tree is handed
//! out, [`Baseline::capture`] waits until the filesystem's clock has passed
//! the newest recorded ctime (a few milliseconds at most), so that a change
//! made in the same clock tick as the copy still shows.
//!
//! Each name of a lower layer gets an inode of its own in a writable tree,
//! even where the layer has two names for one inode: overlay (with
//! `index=off`) copies up only the name written to, or linked to, and
//! deleting one name leaves the other alone, and so must the diff. Hard
//! links a step makes itself are kept in its diff, as with overlay.
//!
//! Differences from overlay, both rare in builds: a file opened for writing
//! but not written is unchanged here (overlay copies it up on open); a
//! lower hard link shows `st_nlink` 1 in a writable tree (overlay shows the
//! lower's count).
//!
//! ## Cost, and kept trees
//!
//! A writable mount copies the whole root filesystem of its base, as
//! containerd's native snapshotter does, and the diff walks it once. For a
//! chain of steps (each step's base is the previous step's result) that
//! copy is avoided: a mount given a *views* directory
//! ([`Snapshotter::mount_reusing`], one scratch directory per build)
//! leaves its tree there on unmount, and the next mount of exactly the
//! stack that tree now shows (same lowers, plus the new layer: keyed by
//! their layer ids) takes it by one `rename`. [`NativeKept`] says what makes a
//! used tree equal to a fresh copy of the new stack. So a chain copies its
//! base once, then each step pays its own walk and the copies of the files
//! it changed. (Without a journal, ext4 also makes every inode allocation
//! slower for a while after many deletions, which the per-step copy and
//! removal used to pay: `benches/results/2026-11-25-snapshotter.md`.)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use filetime::FileTime;

use crate::beneath::Entry;
use nix::sys::stat::{Mode, SFlag};

use crate::exclusions::{Exclusions, NO_EXCLUSIONS};
use crate::mount::{Kept, KeptTree, MountError, MountGuard, Tree};
use crate::snapshotter::Snapshotter;
use crate::whiteout::{WhiteoutFormat, is_opaque, is_overlay_xattr};

/// The native snapshotter (this module), as a [`Snapshotter`]: with its
/// bind mounts ([`Native::mounted`], `native`) or without
/// ([`Native::unmounted`], `native-unmounted`). Deletions are recorded in
/// the [`WhiteoutFormat`] it is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Native {
    bind: bool,
    whiteouts: WhiteoutFormat,
}

impl Native {
    /// Copies and hard links, diffed on unmount; a writable tree is
    /// bind-mounted on itself, a read-only view bind-mounted read-only
    /// ([`mount`]). Deletions become `whiteouts`.
    pub fn mounted(whiteouts: WhiteoutFormat) -> Native {
        Native {
            bind: true,
            whiteouts,
        }
    }

    /// The same trees left plain directories: no bind mount makes a
    /// writable tree a mount point or a read-only view read-only. For a
    /// process that may not mount at all (kiln in an unprivileged
    /// container, `--isolation=container`), where only kiln reads the views
    /// and RUN steps get copies (see [`crate::inplace`], and [`unmounted`]).
    pub fn unmounted(whiteouts: WhiteoutFormat) -> Native {
        Native {
            bind: false,
            whiteouts,
        }
    }
}

impl Snapshotter for Native {
    fn name(&self) -> &'static str {
        if self.bind {
            "native"
        } else {
            "native-unmounted"
        }
    }

    fn mount(
        &self,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
    ) -> Result<MountGuard, MountError> {
        materialize(lowers, upper, target, self.whiteouts, None, self.bind)
    }

    fn mount_reusing(
        &self,
        lowers: &[PathBuf],
        upper: (&Path, &Path),
        target: &Path,
        views: &Path,
    ) -> Result<MountGuard, MountError> {
        materialize(
            lowers,
            Some(upper),
            target,
            self.whiteouts,
            Some(views),
            self.bind,
        )
    }

    /// With its bind mounts only: a build without mounts
    /// (`--isolation=container`) runs its steps in place, not in kept trees.
    fn keeps_trees(&self) -> bool {
        self.bind
    }

    fn whiteouts(&self) -> WhiteoutFormat {
        self.whiteouts
    }
}

/// The native snapshotter's state of a mount, kept in its guard.
#[derive(Debug)]
pub(crate) struct Materialized {
    /// Where the diff goes, with what the tree was when handed out
    /// (writable mounts only).
    upper: Option<(PathBuf, Baseline)>,
    /// How the diff records deletions.
    whiteouts: WhiteoutFormat,
    /// Where the tree may wait for the next mount of its stack (see
    /// [`NativeKept`]), and the lowers it was made from.
    views: Option<(PathBuf, Vec<PathBuf>)>,
}

impl Materialized {
    /// Writes the diff (writable mounts). With a views directory, the tree
    /// is then made independent of the upper dir and kept; otherwise, and
    /// whenever anything fails, the target is emptied.
    fn finish_native(self, target: &Path) -> Result<Option<NativeKept>, MountError> {
        let Some((upper, baseline)) = self.upper else {
            clear(target);
            return Ok(None);
        };
        let linked = match Differ::new(target, &upper, &baseline, self.whiteouts).run() {
            Ok(linked) => linked,
            Err(e) => {
                clear(target);
                return Err(e);
            }
        };
        let Some((views, lowers)) = self.views else {
            clear(target);
            return Ok(None);
        };
        let mut kept = NativeKept {
            target: target.to_path_buf(),
            upper,
            lowers,
            baseline,
            views: Some(views),
            ok: true,
        };
        kept.unlink_all(&linked);
        Ok(Some(kept))
    }

    pub(crate) fn set_upper(&mut self, upper: PathBuf, baseline: Baseline) {
        self.upper = Some((upper, baseline));
    }
}

impl Tree for Materialized {
    fn finish(self: Box<Self>, target: &Path) -> Result<Option<Kept>, MountError> {
        Ok((*self).finish_native(target)?.map(|k| Kept(Box::new(k))))
    }

    /// Empties the target without a diff (the mount was dropped).
    fn discard(self: Box<Self>, target: &Path) {
        clear(target);
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl KeptTree for NativeKept {
    fn removed(&mut self, rel: &Path) {
        NativeKept::removed(self, rel);
    }
    fn touched(&mut self, rel: &Path) {
        NativeKept::touched(self, rel);
    }
    fn touched_ancestors(&mut self, rel: &Path) {
        NativeKept::touched_ancestors(self, rel);
    }
    fn replaced(&mut self, rel: &Path) {
        NativeKept::replaced(self, rel);
    }
    fn offer(self: Box<Self>) {
        NativeKept::offer(*self);
    }
}

pub(crate) fn err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError::Native {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(nix::errno::Errno) -> MountError + 'a {
    move |e| err(op, path)(e.into())
}

/// [`Native::mounted`]'s [`Snapshotter::mount`] (see the module docs),
/// recording deletions as `whiteouts`. With `views` (a directory of this
/// process, see [`NativeKept`]), a writable mount takes the tree a finished mount
/// left there for this very stack instead of copying one, and leaves its
/// own there when unmounted.
pub fn mount(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    whiteouts: WhiteoutFormat,
    views: Option<&Path>,
) -> Result<MountGuard, MountError> {
    materialize(lowers, upper, target, whiteouts, views, true)
}

/// [`mount`] without any mount ([`Native::unmounted`]): the same
/// trees, left plain directories. A read-only view of any number of layers
/// is hard links (nothing protects the layers from writes through it: only
/// kiln may read it); a writable tree is a copy, diffed by
/// [`MountGuard::unmount`] as with [`mount`].
pub fn unmounted(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    whiteouts: WhiteoutFormat,
    views: Option<&Path>,
) -> Result<MountGuard, MountError> {
    materialize(lowers, upper, target, whiteouts, views, false)
}

fn materialize(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    whiteouts: WhiteoutFormat,
    views: Option<&Path>,
    bind: bool,
) -> Result<MountGuard, MountError> {
    if bind
        && upper.is_none()
        && let Some(mounted) = crate::mount::mount_without_overlay(lowers, target)
    {
        // An empty tmpfs or a read-only bind mount: no overlay involved.
        return mounted;
    }
    // The guard empties the target if anything below fails.
    // The upper dir is set once the tree is complete.
    let views = views.filter(|_| upper.is_some());
    let mut guard = MountGuard::with_tree(
        target,
        Box::new(Materialized {
            upper: None,
            whiteouts,
            views: views.map(|v| (v.to_path_buf(), lowers.to_vec())),
        }),
    );
    let copy = upper.is_some();
    let mut filler = Filler {
        copy,
        dirs: Vec::new(),
        exclude: &NO_EXCLUSIONS,
    };
    let reused = views.is_some_and(|v| take_view(v, lowers, target));
    if !reused {
        filler.fill(lowers, target)?;
    }
    // The root's metadata: the upper dir's for a writable mount (overlay
    // shows the upper root), else the top layer's.
    let root_src = match (upper, lowers.last()) {
        (Some((up, _)), _) => Some(up.to_path_buf()),
        (None, Some(top)) => Some(top.clone()),
        (None, None) => None,
    };
    if let Some(src) = root_src {
        let meta = fs::symlink_metadata(&src).map_err(err("stat", &src))?;
        filler.dirs.push((target.to_path_buf(), src, meta));
    }
    filler.finish_dirs()?;
    if let Some((up, _)) = upper {
        let baseline = Baseline::capture(target, &NO_EXCLUSIONS)?;
        settle(target, baseline.newest)?;
        if let Some(m) = guard.tree_mut::<Materialized>() {
            m.set_upper(up.to_path_buf(), baseline);
        }
    }
    if bind {
        guard.bind(target, !copy)?;
    }
    Ok(guard)
}

/// Builds the merged view of a layer stack in a directory.
pub(crate) struct Filler<'x> {
    /// Copy files (writable mounts) or hard-link them (read-only views).
    pub(crate) copy: bool,
    /// Directories made, with their source: metadata is applied last,
    /// deepest first, once their contents no longer change their times.
    pub(crate) dirs: Vec<(PathBuf, PathBuf, Metadata)>,
    /// Paths of the target that are not the stack's (see
    /// [`crate::inplace`]): left as they are, never filled.
    pub(crate) exclude: &'x Exclusions,
}

impl Filler<'_> {
    pub(crate) fn fill(&mut self, lowers: &[PathBuf], target: &Path) -> Result<(), MountError> {
        // Top layer first; a layer whose root is opaque hides those below.
        let mut contrib: Vec<(usize, &Path)> = Vec::new();
        for (i, l) in lowers.iter().enumerate().rev() {
            contrib.push((i, l.as_path()));
            if is_opaque(l) {
                break;
            }
        }
        self.dir(Path::new(""), &contrib, target)
    }

    /// Fills `dst` with the merged directory `rel` of the layers `contrib`
    /// (top first; in each, `rel` is a directory).
    fn dir(
        &mut self,
        rel: &Path,
        contrib: &[(usize, &Path)],
        dst: &Path,
    ) -> Result<(), MountError> {
        let mut names = BTreeSet::<OsString>::new();
        for (_, l) in contrib {
            let d = l.join(rel);
            for e in fs::read_dir(&d).map_err(err("reading", &d))? {
                names.insert(e.map_err(err("reading", &d))?.file_name());
            }
        }
        for name in names {
            let child = rel.join(&name);
            if self.exclude.is_excluded(&child) {
                // The target keeps its own: a mount point, kiln's files.
                continue;
            }
            let kept = self.exclude.is_ancestor(&child);
            let mut found = None;
            for (k, (_, l)) in contrib.iter().enumerate() {
                let p = l.join(&child);
                match fs::symlink_metadata(&p) {
                    Ok(m) => {
                        found = Some((k, p, m));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(err("stat", &p)(e)),
                }
            }
            let Some((k, src, meta)) = found else {
                continue;
            };
            if crate::whiteout::is_whiteout(&src, &meta) {
                continue;
            }
            let d = dst.join(&name);
            if meta.is_dir() {
                let mut sub = vec![contrib[k]];
                if !is_opaque(&src) {
                    for &(i, l) in &contrib[k + 1..] {
                        let p = l.join(&child);
                        match fs::symlink_metadata(&p) {
                            Ok(m) if m.is_dir() => {
                                sub.push((i, l));
                                if is_opaque(&p) {
                                    break;
                                }
                            }
                            Ok(_) => break,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(err("stat", &p)(e)),
                        }
                    }
                }
                // A directory the target keeps (it holds excluded paths)
                // gets the stack's metadata and the rest of its entries.
                let keep = kept && fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir());
                if !keep {
                    fs::create_dir(&d).map_err(err("creating", &d))?;
                }
                self.dirs.push((d.clone(), src, meta));
                self.dir(&child, &sub, &d)?;
            } else if !(kept && fs::symlink_metadata(&d).is_ok()) {
                // (Where the target keeps a directory, the stack's
                // non-directory is not shown: the target's wins.)
                self.place(&src, &meta, &d)?;
            }
        }
        Ok(())
    }

    /// A non-directory at `dst`: hard-linked (a read-only view, where a
    /// layer's own hard links stay links) or copied (a writable tree, where
    /// every name gets an inode of its own: see the module docs).
    fn place(&mut self, src: &Path, m: &Metadata, dst: &Path) -> Result<(), MountError> {
        if !self.copy && fs::hard_link(src, dst).is_ok() {
            return Ok(());
        }
        copy_entry(src, m, dst)
    }

    pub(crate) fn finish_dirs(&mut self) -> Result<(), MountError> {
        for (dst, src, meta) in self.dirs.drain(..).rev() {
            apply_meta(&src, &meta, &dst)?;
        }
        Ok(())
    }
}

/// Copies one non-directory entry with its metadata.
pub(crate) fn copy_entry(src: &Path, m: &Metadata, dst: &Path) -> Result<(), MountError> {
    let ft = m.file_type();
    if ft.is_file() {
        let mut from = File::open(src).map_err(err("opening", src))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)
            .map_err(err("creating", dst))?;
        copy_file_contents(&mut from, &mut to).map_err(err("copying to", dst))?;
    } else if ft.is_symlink() {
        let link = fs::read_link(src).map_err(err("reading link", src))?;
        std::os::unix::fs::symlink(link, dst).map_err(err("creating symlink", dst))?;
    } else {
        let kind = SFlag::from_bits_truncate(m.mode() & libc::S_IFMT);
        let perm = Mode::from_bits_truncate(m.mode() & 0o7777);
        nix::sys::stat::mknod(dst, kind, perm, m.rdev()).map_err(nix_err("mknod", dst))?;
    }
    apply_meta(src, m, dst)
}

/// Gives `dst` the owner, xattrs (overlay's own left out), mode and times of
/// `src` (whose metadata is `m`): owner first, since chown clears setuid
/// bits and `security.capability`.
pub(crate) fn apply_meta(src: &Path, m: &Metadata, dst: &Path) -> Result<(), MountError> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(err("chown", dst))?;
    if let Ok(names) = xattr::list(src) {
        for name in names {
            if is_overlay_xattr(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str())) {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(src, &name) {
                match xattr::set(dst, &name, &v) {
                    Ok(()) => {}
                    // As the unpacker: unsupported here, or `user.*` on a
                    // symlink or device.
                    Err(e)
                        if e.raw_os_error() == Some(libc::ENOTSUP)
                            || e.raw_os_error() == Some(libc::EPERM) => {}
                    Err(e) => return Err(err("setting xattrs of", dst)(e)),
                }
            }
        }
    }
    if !m.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(err("chmod", dst))?;
    }
    filetime::set_symlink_file_times(
        dst,
        FileTime::from_last_access_time(m),
        FileTime::from_last_modification_time(m),
    )
    .map_err(err("setting times of", dst))
}

/// Copies the data of `from` to `to` (both at offset 0). A sparse file
/// (fewer blocks than its size) is copied segment by segment
/// (`SEEK_DATA`/`SEEK_HOLE`), keeping its holes; others with
/// `copy_file_range` (reflinks where the filesystem can).
pub fn copy_file_contents(from: &mut File, to: &mut File) -> io::Result<()> {
    let meta = from.metadata()?;
    if meta.blocks().saturating_mul(512) < meta.len() {
        return copy_sparse(from, to, meta.len());
    }
    // std::io::copy uses copy_file_range/sendfile between files on Linux.
    io::copy(from, to).map(drop)
}

fn copy_sparse(from: &File, to: &File, len: u64) -> io::Result<()> {
    use nix::unistd::{Whence, lseek};
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut pos: i64 = 0;
    let end = i64::try_from(len).map_err(io::Error::other)?;
    while pos < end {
        let data = match lseek(from, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(from, data, Whence::SeekHole)?;
        let (start, n) = (u64::try_from(data), u64::try_from(hole - data));
        let (Ok(start), Ok(n)) = (start, n) else {
            return Err(io::Error::other("bad SEEK_DATA/SEEK_HOLE offsets"));
        };
        let mut r = from;
        let mut w = to;
        r.seek(SeekFrom::Start(start))?;
        w.seek(SeekFrom::Start(start))?;
        io::copy(&mut r.take(n), &mut w)?;
        pos = hole;
    }
    to.set_len(len)
}

/// What one entry of a handed-out tree was.
#[derive(Debug, Clone, Copy)]
struct Rec {
    ino: u64,
    /// The birth time, where the filesystem has one: an inode number is
    /// reused at once (`rm -rf d && mkdir d` often gives the new `d` the
    /// old number), a birth time is not.
    born: Option<std::time::SystemTime>,
    ctime: (i64, i64),
    dir: bool,
}

fn rec(m: &Metadata) -> Rec {
    Rec {
        ino: m.ino(),
        born: m.created().ok(),
        ctime: (m.ctime(), m.ctime_nsec()),
        dir: m.is_dir(),
    }
}

impl Rec {
    /// Whether `m` is the same inode as recorded.
    fn same_inode(&self, m: &Metadata) -> bool {
        self.ino == m.ino() && self.born == m.created().ok()
    }
}

/// Every entry of a tree when it was handed out, by path relative to its
/// root (`""` is the root).
#[derive(Debug)]
pub(crate) struct Baseline {
    entries: HashMap<PathBuf, Rec>,
    /// The newest ctime recorded.
    pub(crate) newest: (i64, i64),
}

impl Baseline {
    /// Records `root`, leaving out the `exclude`d paths (and what is below
    /// them). The caller then waits for the clock ([`settle`]) before the
    /// tree changes, so that a change shows (see the module docs).
    pub(crate) fn capture(root: &Path, exclude: &Exclusions) -> Result<Baseline, MountError> {
        let mut entries = HashMap::new();
        let m = fs::symlink_metadata(root).map_err(err("stat", root))?;
        let mut newest = (m.ctime(), m.ctime_nsec());
        entries.insert(PathBuf::new(), rec(&m));
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            for e in fs::read_dir(&dir).map_err(err("reading", &dir))? {
                let e = e.map_err(err("reading", &dir))?;
                let child = rel.join(e.file_name());
                if exclude.is_excluded(&child) {
                    continue;
                }
                let p = e.path();
                let m = fs::symlink_metadata(&p).map_err(err("stat", &p))?;
                newest = newest.max((m.ctime(), m.ctime_nsec()));
                if m.is_dir() {
                    stack.push(child.clone());
                }
                entries.insert(child, rec(&m));
            }
        }
        Ok(Baseline { entries, newest })
    }

    /// Records `rel` of `root` again as it is now: kiln changed it and put
    /// it back (a mount point of a tree that is not a mount), so that
    /// change is not the step's. Gone: forgotten.
    pub(crate) fn refresh(&mut self, root: &Path, rel: &Path) {
        let p = root.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) => {
                self.newest = self.newest.max((m.ctime(), m.ctime_nsec()));
                self.entries.insert(rel.to_path_buf(), rec(&m));
            }
            Err(_) => {
                self.entries.remove(rel);
            }
        }
    }
}

/// Waits until a file made beside `root` gets a ctime newer than `newest`:
/// a few milliseconds, up to a second on a filesystem that keeps whole
/// seconds (ext4 with 128-byte inodes); given up after two.
pub(crate) fn settle(root: &Path, newest: (i64, i64)) -> Result<(), MountError> {
    settle_in(root.parent().unwrap_or(root), newest)
}

/// [`settle`], with the probe file made in `beside` (a directory on the
/// tree's filesystem).
pub(crate) fn settle_in(beside: &Path, newest: (i64, i64)) -> Result<(), MountError> {
    let probe = tempfile::Builder::new()
        .prefix(".ctime-probe-")
        .tempfile_in(beside)
        .map_err(err("creating a file in", beside))?;
    let start = Instant::now();
    let mut mode = 0o600;
    loop {
        let m = probe
            .as_file()
            .metadata()
            .map_err(err("stat", probe.path()))?;
        if (m.ctime(), m.ctime_nsec()) > newest || start.elapsed() > Duration::from_secs(2) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
        mode ^= 0o040;
        probe
            .as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err("chmod", probe.path()))?;
    }
}

/// Writes the changes of a handed-out tree into an upper dir.
pub(crate) struct Differ<'a> {
    target: &'a Path,
    upper: &'a Path,
    base: &'a Baseline,
    whiteouts: WhiteoutFormat,
    /// Paths that are not the tree's (see [`crate::inplace`]): never
    /// walked, never whited out.
    exclude: &'a Exclusions,
    /// Copy (never hard-link) a file whose inode has other names: the tree
    /// is not a mount, so another name may be outside it (a cache mount's
    /// file the step linked to), and the upper dir must not share it.
    copy_shared: bool,
    /// Paths present now.
    seen: HashSet<PathBuf>,
    /// Directories that are the recorded ones (same inode): a recorded
    /// child missing from them was deleted.
    kept: HashSet<PathBuf>,
    /// Directories made in the upper dir, in order (metadata applied last).
    made: Vec<PathBuf>,
    made_set: HashSet<PathBuf>,
    /// (dev, ino) → upper path, for entries copied because linking failed.
    links: HashMap<(u64, u64), PathBuf>,
    /// Entries hard-linked into the upper dir.
    linked: Vec<PathBuf>,
}

impl<'a> Differ<'a> {
    pub(crate) fn new(
        target: &'a Path,
        upper: &'a Path,
        base: &'a Baseline,
        whiteouts: WhiteoutFormat,
    ) -> Differ<'a> {
        Differ {
            target,
            upper,
            base,
            whiteouts,
            exclude: &NO_EXCLUSIONS,
            copy_shared: false,
            seen: HashSet::new(),
            kept: HashSet::new(),
            made: Vec::new(),
            made_set: HashSet::new(),
            links: HashMap::new(),
            linked: Vec::new(),
        }
    }

    /// A diff of a tree that is not a mount: `exclude`d paths left out,
    /// files with other names copied.
    pub(crate) fn in_place(mut self, exclude: &'a Exclusions) -> Differ<'a> {
        self.exclude = exclude;
        self.copy_shared = true;
        self
    }

    /// Writes the diff; returns the entries hard-linked into the upper dir.
    pub(crate) fn run(mut self) -> Result<Vec<PathBuf>, MountError> {
        let root = PathBuf::new();
        self.kept.insert(root.clone());
        self.seen.insert(root.clone());
        self.visit(&root, false)?;
        let mut gone: Vec<&PathBuf> = self
            .base
            .entries
            .keys()
            .filter(|p| !self.seen.contains(*p))
            .filter(|p| p.parent().is_some_and(|d| self.kept.contains(d)))
            .collect();
        gone.sort();
        for p in gone {
            if let Some(parent) = p.parent() {
                self.ensure_dir(parent)?;
            }
            let w = self.upper.join(p);
            crate::whiteout::make_whiteout(&w, self.whiteouts)
                .map_err(err("creating whiteout", &w))?;
        }
        // The root shows in the upper dir's own metadata.
        let m = fs::symlink_metadata(self.target).map_err(err("stat", self.target))?;
        apply_meta(self.target, &m, self.upper)?;
        for rel in self.made.iter().rev() {
            let src = self.target.join(rel);
            let m = fs::symlink_metadata(&src).map_err(err("stat", &src))?;
            apply_meta(&src, &m, &self.upper.join(rel))?;
        }
        Ok(self.linked)
    }

    /// Walks directory `rel` of the tree; `whole`: it is new, so all of it
    /// goes to the upper dir.
    fn visit(&mut self, rel: &Path, whole: bool) -> Result<(), MountError> {
        let dir = self.target.join(rel);
        let mut children = Vec::new();
        for e in fs::read_dir(&dir).map_err(err("reading", &dir))? {
            children.push(e.map_err(err("reading", &dir))?.file_name());
        }
        children.sort();
        for name in children {
            let child = rel.join(&name);
            if self.exclude.is_excluded(&child) {
                continue;
            }
            let p = self.target.join(&child);
            let m = fs::symlink_metadata(&p).map_err(err("stat", &p))?;
            self.seen.insert(child.clone());
            let was = if whole {
                None
            } else {
                self.base.entries.get(&child).copied()
            };
            match was {
                Some(r) if r.same_inode(&m) && r.ctime == (m.ctime(), m.ctime_nsec()) => {
                    if m.is_dir() {
                        self.kept.insert(child.clone());
                        self.visit(&child, false)?;
                    }
                }
                Some(r) if r.dir && m.is_dir() && r.same_inode(&m) => {
                    // The same directory, changed itself.
                    self.ensure_dir(&child)?;
                    self.kept.insert(child.clone());
                    self.visit(&child, false)?;
                }
                Some(_) => self.emit(&child, &m, true)?,
                None => self.emit(&child, &m, false)?,
            }
        }
        Ok(())
    }

    /// Puts a new or replaced entry in the upper dir; `over_lower`: the
    /// lowers had something at this path, so a directory here is opaque.
    fn emit(&mut self, rel: &Path, m: &Metadata, over_lower: bool) -> Result<(), MountError> {
        if m.is_dir() {
            self.ensure_dir(rel)?;
            if over_lower {
                let d = self.upper.join(rel);
                xattr::set(&d, crate::mount::opaque_xattr(), b"y")
                    .map_err(err("marking opaque", &d))?;
            }
            return self.visit(rel, true);
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let (src, dst) = (self.target.join(rel), self.upper.join(rel));
        let shared = self.copy_shared && m.nlink() > 1;
        if !shared && fs::hard_link(&src, &dst).is_ok() {
            self.linked.push(rel.to_path_buf());
            return Ok(());
        }
        if shared {
            // The tree's name gets an inode of its own again afterwards,
            // as a linked one does (overlay shows the layer's hard links
            // as one inode, but writing one name copies up only that name).
            self.linked.push(rel.to_path_buf());
        }
        let key = (m.dev(), m.ino());
        if let Some(first) = self.links.get(&key)
            && fs::hard_link(first, &dst).is_ok()
        {
            return Ok(());
        }
        copy_entry(&src, m, &dst)?;
        self.links.insert(key, dst);
        Ok(())
    }

    /// Makes directory `rel` (and its parents) in the upper dir.
    fn ensure_dir(&mut self, rel: &Path) -> Result<(), MountError> {
        if rel.as_os_str().is_empty() || self.made_set.contains(rel) {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let d = self.upper.join(rel);
        match fs::create_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("creating", &d)(e)),
        }
        self.made_set.insert(rel.to_path_buf());
        self.made.push(rel.to_path_buf());
        Ok(())
    }
}

/// How many kept trees a views directory holds at most: one per chain of
/// steps in progress is what pays; more only fills the disk.
const MAX_VIEWS: usize = 2;

/// The name of the tree of the stack `dirs` in a views directory: a digest
/// of their layer ids (`<store>/<id>/diff`, `<store>/tmp/<id>/diff` for a
/// draft, which keeps its id when committed), or none for directories
/// outside a layer store.
pub(crate) fn stack_key(dirs: &[&Path]) -> Option<String> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for d in dirs {
        if d.file_name()? != "diff" {
            return None;
        }
        let id = d.parent()?.file_name()?;
        h.update(std::os::unix::ffi::OsStrExt::as_bytes(id));
        h.update(b"/");
    }
    Some(hex::encode(h.finalize()))
}

/// Moves the kept tree of the stack `lowers` onto `target` (an empty
/// directory), if `views` has one.
fn take_view(views: &Path, lowers: &[PathBuf], target: &Path) -> bool {
    let dirs: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    let Some(key) = stack_key(&dirs) else {
        return false;
    };
    fs::rename(views.join(key), target).is_ok()
}

/// The tree of a finished writable mount, kept so that the next mount of
/// the stack it now shows (its lowers and its new layer: the next step of a
/// chain) takes it instead of copying the whole stack again.
///
/// After the diff the tree is the merged view of lowers + upper exactly,
/// but for two things, which this type repairs before the tree is offered:
/// the entries the diff hard-linked into the upper dir (they get inodes of
/// their own again, [`NativeKept::unlink`], so the next step cannot write through
/// to a committed layer), and whatever the caller changes in the upper dir
/// after the diff (the RUN helper's mount stubs, a file op's staged copy),
/// which it reports with [`NativeKept::removed`], [`NativeKept::touched`] and
/// [`NativeKept::replaced`]. A repair that fails, or a caller that drops the value
/// without [`NativeKept::offer`], discards the tree: it is only ever an
/// optimisation.
#[derive(Debug)]
pub(crate) struct NativeKept {
    target: PathBuf,
    upper: PathBuf,
    lowers: Vec<PathBuf>,
    baseline: Baseline,
    /// Where the tree is offered; none for a tree that stays where it is
    /// (in place, [`crate::inplace`]), which dropping then leaves alone.
    views: Option<PathBuf>,
    /// No repair failed.
    ok: bool,
}

impl NativeKept {
    /// The repairs of a tree that stays where it is, after its diff into
    /// `upper` (which linked `linked` there): whether they all succeeded.
    pub(crate) fn repair_in_place(
        target: &Path,
        upper: &Path,
        lowers: &[PathBuf],
        baseline: Baseline,
        linked: &[PathBuf],
    ) -> bool {
        let mut kept = NativeKept {
            target: target.to_path_buf(),
            upper: upper.to_path_buf(),
            lowers: lowers.to_vec(),
            baseline,
            views: None,
            ok: true,
        };
        kept.unlink_all(linked);
        kept.ok
    }

    /// Gives every entry the diff linked into the upper dir an inode of its
    /// own again, and its directory its times back.
    fn unlink_all(&mut self, linked: &[PathBuf]) {
        for rel in linked {
            self.unlink(rel);
        }
        // Putting the copies in place changed their directories' times.
        let parents: BTreeSet<&Path> = linked.iter().filter_map(|r| r.parent()).collect();
        for dir in parents {
            self.touched(dir);
        }
    }

    /// Gives the hard-linked entry `rel` an inode of its own, a copy of the
    /// upper dir's.
    fn unlink(&mut self, rel: &Path) {
        // Both trees were written by a step: no symlink is followed on the
        // way to `rel` (`beneath`).
        let (Ok(src), Ok(dst)) = (
            Entry::open(&self.upper, rel),
            Entry::open(&self.target, rel),
        ) else {
            self.ok = false;
            return;
        };
        let (src, dst) = (src.path(), dst.path());
        let tmp = dst.with_file_name(".kiln-unlink");
        let done = fs::symlink_metadata(&src)
            .map_err(err("stat", &src))
            .and_then(|m| copy_entry(&src, &m, &tmp))
            .and_then(|()| fs::rename(&tmp, &dst).map_err(err("renaming", &tmp)));
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
            self.ok = false;
        }
    }

    /// The metadata of `rel` as the next mount would copy it: the upper
    /// dir's entry, else the topmost lower's (if the tree had it before the
    /// step). The entry keeps its parent open: its `path()` is valid while
    /// it lives.
    fn source_of(&self, rel: &Path) -> Option<(Entry, Metadata)> {
        if let Ok(up) = Entry::open(&self.upper, rel)
            && let Ok(m) = fs::symlink_metadata(up.path())
        {
            return Some((up, m));
        }
        if !self.baseline.entries.contains_key(rel) {
            return None;
        }
        self.lowers.iter().rev().find_map(|l| {
            let e = Entry::open(l, rel).ok()?;
            let p = e.path();
            let m = fs::symlink_metadata(&p).ok()?;
            (!crate::whiteout::is_whiteout(&p, &m)).then_some((e, m))
        })
    }

    /// The caller removed `rel` from the upper dir after the diff.
    pub fn removed(&mut self, rel: &Path) {
        let Ok(dst) = Entry::open(&self.target, rel) else {
            self.ok = false;
            return;
        };
        let r = match self.source_of(rel) {
            Some((src, m)) => apply_meta(&src.path(), &m, &dst.path()),
            None => remove_entry(&dst.path()),
        };
        self.ok &= r.is_ok();
    }

    /// The caller changed the metadata of directory `rel` in the upper dir
    /// after the diff (adding or removing entries in it changes its times).
    pub fn touched(&mut self, rel: &Path) {
        if rel.as_os_str().is_empty() {
            if let Some((src, m)) = self.source_of_root() {
                self.ok &= apply_meta(&src, &m, &self.target).is_ok();
            }
            return;
        }
        let Ok(dst) = Entry::open(&self.target, rel) else {
            self.ok = false;
            return;
        };
        if let Some((src, m)) = self.source_of(rel)
            && fs::symlink_metadata(dst.path()).is_ok()
        {
            self.ok &= apply_meta(&src.path(), &m, &dst.path()).is_ok();
        }
    }

    /// The root's metadata source: the upper dir itself (whose metadata the
    /// diff set from the tree's root).
    fn source_of_root(&self) -> Option<(PathBuf, Metadata)> {
        let m = fs::symlink_metadata(&self.upper).ok()?;
        Some((self.upper.clone(), m))
    }

    /// [`NativeKept::touched`] for every directory above `rel` (the caller added
    /// or removed `rel` there).
    pub fn touched_ancestors(&mut self, rel: &Path) {
        for dir in rel.ancestors().skip(1) {
            self.touched(dir);
        }
    }

    /// The caller put a new `rel` into the upper dir after the diff (a whole
    /// tree): the kept tree gets a copy of it.
    pub fn replaced(&mut self, rel: &Path) {
        let r = (|| {
            let src_e = Entry::open(&self.upper, rel).map_err(err("opening", rel))?;
            let dst_e = Entry::open(&self.target, rel).map_err(err("opening", rel))?;
            let (src, dst) = (src_e.path(), dst_e.path());
            remove_entry(&dst)?;
            let m = fs::symlink_metadata(&src).map_err(err("stat", &src))?;
            if !m.is_dir() {
                return copy_entry(&src, &m, &dst);
            }
            fs::create_dir(&dst).map_err(err("creating", &dst))?;
            let mut filler = Filler {
                copy: true,
                dirs: vec![(dst.clone(), src.clone(), m)],
                exclude: &NO_EXCLUSIONS,
            };
            filler.dir(rel, &[(0, self.upper.as_path())], &dst)?;
            filler.finish_dirs()
        })();
        self.ok &= r.is_ok();
    }

    /// Leaves the tree in the views directory for the next mount of the
    /// stack lowers + upper (the oldest kept tree makes room), or discards
    /// it if a repair failed.
    pub fn offer(self) {
        let mut dirs: Vec<&Path> = self.lowers.iter().map(PathBuf::as_path).collect();
        dirs.push(&self.upper);
        let key = stack_key(&dirs);
        if self.ok
            && let Some(key) = key
            && let Some(views) = &self.views
        {
            let mut old: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(views)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            old.sort();
            while old.len() >= MAX_VIEWS {
                let (_, p) = old.remove(0);
                let _ = fs::remove_dir_all(p);
            }
            let at = views.join(key);
            if fs::rename(&self.target, &at).is_ok() {
                // The mount point stays, empty, as after an unmount; the
                // kept tree's own time orders it for eviction.
                let _ = fs::create_dir(&self.target);
                let now = FileTime::now();
                let _ = filetime::set_file_mtime(&at, now);
                // The directory's metadata is the upper's again at the next
                // mount; nothing else reads it meanwhile.
            }
        }
        // Drop empties the target if the tree is still there.
    }
}

impl Drop for NativeKept {
    fn drop(&mut self) {
        if self.views.is_some() {
            clear(&self.target);
        }
    }
}

/// Removes everything in `dir` (best effort: the scratch space that holds
/// it is removed later anyway).
fn clear(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let _ = remove_entry(&e.path());
    }
}

/// Removes whatever is at `p`, a whole tree if a directory; nothing there
/// is fine.
fn remove_entry(p: &Path) -> Result<(), MountError> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => return Ok(()),
    };
    r.map_err(err("removing", p))
}
