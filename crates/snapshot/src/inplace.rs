//! Layer stacks shown by a directory that is not a mount and that holds
//! things of its own: the root filesystem of a single-use container, where
//! kiln can neither mount nor make namespaces (`--isolation=container`).
//!
//! ## Why
//!
//! Without `CAP_SYS_ADMIN` there is no overlay and no bind mount, so a RUN
//! step cannot get a root filesystem of its own with `/proc`, `/dev` and
//! `/sys` in it. As Kaniko does, kiln then makes the container's own root
//! directory show the step's stack, and runs the step there: the
//! container's mounts (`/proc`, `/sys`, `/dev`, `/etc/hosts`, volumes),
//! kiln's own directory and its state directory stay where they are and are
//! no part of the stack ([`Exclusions`]); everything else is the stack's.
//!
//! ## The machinery is the native snapshotter's
//!
//! [`InPlace::checkout`] makes the directory show a stack with the native
//! snapshotter's [`Filler`] (after [`clear`]ing what was there), or, when it
//! already shows a prefix of the stack, by applying the missing layers
//! (a chain of steps: a step's tree is the next one's); the baseline is the
//! native snapshotter's, and [`Checkout::commit`] writes the diff with its
//! [`Differ`], so the layers are those of the native snapshotter, hence of
//! overlay (`testdata/snapshot/native` runs every case in place too). The
//! differences: excluded paths are never walked, filled, whited out or
//! removed; a file whose inode has other names is copied into the upper
//! dir, never linked (another name may be outside the tree); and paths kiln
//! itself changed and put back for the step (mount points, see the
//! executor) are recorded again ([`Checkout::refresh`]).
//!
//! Nothing here follows a symlink out of the tree or crosses into another
//! filesystem: [`clear`] refuses an entry on another device than the root
//! (a mount point missing from the exclusions).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::exclusions::Exclusions;
use crate::mount::MountError;
use crate::native::{
    Baseline, Differ, Filler, NativeKept, apply_meta, copy_entry, err, settle_in, stack_key,
};
use crate::whiteout::{WhiteoutFormat, is_opaque, is_whiteout};

/// A directory that shows layer stacks in place (see the module docs).
#[derive(Debug)]
pub struct InPlace {
    root: PathBuf,
    exclude: Exclusions,
    whiteouts: WhiteoutFormat,
    /// An excluded directory of the tree's own filesystem, for kiln's
    /// probes and for what it puts aside.
    work: PathBuf,
    /// The layer dirs the tree shows, bottom first; `None`: unknown (a step
    /// did not finish, or nothing was checked out yet), cleared first.
    shows: Option<Vec<PathBuf>>,
}

impl InPlace {
    /// The tree `root` without the `exclude`d paths, whose deletions are
    /// recorded as `whiteouts`. `work` (relative to `root`) becomes an
    /// excluded directory of kiln's; it is made if missing.
    pub fn new(
        root: &Path,
        mut exclude: Exclusions,
        whiteouts: WhiteoutFormat,
        work: &Path,
    ) -> Result<InPlace, MountError> {
        exclude.add(work).map_err(|why| MountError::Native {
            op: "excluding",
            path: work.to_path_buf(),
            source: io::Error::other(why),
        })?;
        let work = root.join(work);
        fs::create_dir_all(&work).map_err(err("creating", &work))?;
        Ok(InPlace {
            root: root.to_path_buf(),
            exclude,
            whiteouts,
            work,
            shows: None,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The excluded paths.
    pub fn exclusions(&self) -> &Exclusions {
        &self.exclude
    }

    /// kiln's own directory in the tree (excluded, on the tree's
    /// filesystem).
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// Makes the tree show `lowers` (bottom first) with the metadata of the
    /// writable `upper` at its root, and records it: the tree a step runs
    /// in, whose changes [`Checkout::commit`] writes into `upper`. The tree
    /// is taken as it is when it shows `lowers` already (the previous step's
    /// result), the layers it lacks are applied when it shows a prefix of
    /// them, and it is cleared and filled otherwise.
    pub fn checkout(
        &mut self,
        lowers: &[PathBuf],
        upper: &Path,
    ) -> Result<Checkout<'_>, MountError> {
        let shows = self.shows.take();
        match shows {
            Some(s) if s.len() <= lowers.len() && s[..] == lowers[..s.len()] => {
                for l in &lowers[s.len()..] {
                    self.apply(l)?;
                }
            }
            _ => {
                clear(&self.root, &self.exclude)?;
                let mut filler = Filler {
                    copy: true,
                    dirs: Vec::new(),
                    exclude: &self.exclude,
                };
                filler.fill(lowers, &self.root)?;
                filler.finish_dirs()?;
            }
        }
        // The root shows the upper dir's metadata (as overlay does).
        let m = fs::symlink_metadata(upper).map_err(err("stat", upper))?;
        apply_meta(upper, &m, &self.root)?;
        let baseline = Baseline::capture(&self.root, &self.exclude)?;
        settle_in(&self.work, baseline.newest)?;
        Ok(Checkout {
            tree: self,
            lowers: lowers.to_vec(),
            upper: upper.to_path_buf(),
            baseline,
        })
    }

    /// Empties the tree but for the excluded paths (the end of a build).
    pub fn clear(&mut self) -> Result<(), MountError> {
        self.shows = None;
        clear(&self.root, &self.exclude)
    }

    /// Puts the layer dir `layer` on top of what the tree shows, as overlay
    /// would show it above: whiteouts remove, an opaque directory replaces
    /// what was there, other entries replace or merge (directories).
    fn apply(&self, layer: &Path) -> Result<(), MountError> {
        if is_opaque(layer) {
            clear(&self.root, &self.exclude)?;
        }
        let mut dirs: Vec<(PathBuf, PathBuf, fs::Metadata)> = Vec::new();
        self.apply_dir(layer, Path::new(""), &mut dirs)?;
        for (dst, src, m) in dirs.into_iter().rev() {
            apply_meta(&src, &m, &dst)?;
            drop_other_xattrs(&src, &dst)?;
        }
        let m = fs::symlink_metadata(layer).map_err(err("stat", layer))?;
        apply_meta(layer, &m, &self.root)
    }

    /// The device of the root (what [`clear`] stays on).
    fn dev(&self) -> Result<u64, MountError> {
        Ok(fs::symlink_metadata(&self.root)
            .map_err(err("stat", &self.root))?
            .dev())
    }

    fn apply_dir(
        &self,
        layer: &Path,
        rel: &Path,
        dirs: &mut Vec<(PathBuf, PathBuf, fs::Metadata)>,
    ) -> Result<(), MountError> {
        let d = layer.join(rel);
        let mut names: Vec<OsString> = Vec::new();
        for e in fs::read_dir(&d).map_err(err("reading", &d))? {
            names.push(e.map_err(err("reading", &d))?.file_name());
        }
        names.sort();
        for name in names {
            let child = rel.join(&name);
            if self.exclude.is_excluded(&child) {
                continue;
            }
            let kept = self.exclude.is_ancestor(&child);
            let src = layer.join(&child);
            let dst = self.root.join(&child);
            let m = fs::symlink_metadata(&src).map_err(err("stat", &src))?;
            let there = fs::symlink_metadata(&dst).ok();
            let dev = self.dev()?;
            if is_whiteout(&src, &m) {
                if kept {
                    clear_below(&self.root, &child, &self.exclude)?;
                } else if there.is_some() {
                    remove_same_device(&dst, dev)?;
                }
                continue;
            }
            if m.is_dir() {
                let is_dir = there.as_ref().is_some_and(fs::Metadata::is_dir);
                if is_dir && is_opaque(&src) {
                    clear_below(&self.root, &child, &self.exclude)?;
                } else if !is_dir {
                    if there.is_some() {
                        remove_same_device(&dst, dev)?;
                    }
                    fs::create_dir(&dst).map_err(err("creating", &dst))?;
                }
                dirs.push((dst, src.clone(), m));
                self.apply_dir(layer, &child, dirs)?;
            } else if kept {
                // The tree keeps a directory here (see `Filler`).
                continue;
            } else {
                if there.is_some() {
                    remove_same_device(&dst, dev)?;
                }
                copy_entry(&src, &m, &dst)?;
            }
        }
        Ok(())
    }
}

/// A tree checked out for one step (see [`InPlace::checkout`]). Dropping
/// it without [`Checkout::commit`] leaves the tree in an unknown state,
/// cleared at the next checkout.
#[derive(Debug)]
pub struct Checkout<'a> {
    tree: &'a mut InPlace,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    baseline: Baseline,
}

impl Checkout<'_> {
    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.tree.root
    }

    /// kiln's excluded directory on the tree's filesystem.
    pub fn work(&self) -> &Path {
        &self.tree.work
    }

    /// The excluded paths.
    pub fn exclusions(&self) -> &Exclusions {
        &self.tree.exclude
    }

    /// `rel` was changed by kiln and put back as it was (a mount point's
    /// directory: renamed away and back): its state now is the baseline.
    pub fn refresh(&mut self, rel: &Path) {
        self.baseline.refresh(&self.tree.root, rel);
    }

    /// Waits until a change made from now on gets a newer ctime than
    /// anything kiln did to the tree so far (call it once the step's mount
    /// points are in place).
    pub fn settle(&self) -> Result<(), MountError> {
        let mut newest = self.baseline.newest;
        let m = fs::symlink_metadata(&self.tree.work).map_err(err("stat", &self.tree.work))?;
        newest = newest.max((m.ctime(), m.ctime_nsec()));
        // Whatever kiln just did: a probe made now is newer than all of it.
        let probe = self.tree.work.join(".settle");
        fs::write(&probe, b"").map_err(err("creating", &probe))?;
        let m = fs::symlink_metadata(&probe).map_err(err("stat", &probe))?;
        let _ = fs::remove_file(&probe);
        newest = newest.max((m.ctime(), m.ctime_nsec()));
        settle_in(&self.tree.work, newest)
    }

    /// Writes what changed into the upper dir: the tree then shows the
    /// stack with the new layer (the next step's base).
    pub fn commit(self) -> Result<(), MountError> {
        let root = self.tree.root.clone();
        let linked = Differ::new(&root, &self.upper, &self.baseline, self.tree.whiteouts)
            .in_place(&self.tree.exclude)
            .run()?;
        let ok =
            NativeKept::repair_in_place(&root, &self.upper, &self.lowers, self.baseline, &linked);
        if ok {
            let mut shows = self.lowers;
            shows.push(self.upper);
            // Only a stack of store layers can be recognised again.
            let dirs: Vec<&Path> = shows.iter().map(PathBuf::as_path).collect();
            if stack_key(&dirs).is_some() {
                self.tree.shows = Some(shows);
            }
        }
        Ok(())
    }
}

/// Drops the extended attributes of `dst` that `src` lacks (overlay's own
/// aside): a directory kept across layers must end with the new one's set.
fn drop_other_xattrs(src: &Path, dst: &Path) -> Result<(), MountError> {
    let Ok(names) = xattr::list(dst) else {
        return Ok(());
    };
    for name in names {
        if crate::whiteout::is_overlay_xattr(std::os::unix::ffi::OsStrExt::as_bytes(
            name.as_os_str(),
        )) {
            continue;
        }
        if !matches!(xattr::get(src, &name), Ok(Some(_))) {
            match xattr::remove(dst, &name) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                Err(e) => return Err(err("removing xattrs of", dst)(e)),
            }
        }
    }
    Ok(())
}

/// Empties `root` but for the excluded paths and the directories above
/// them. Refuses to cross into another filesystem.
pub fn clear(root: &Path, exclude: &Exclusions) -> Result<(), MountError> {
    clear_below(root, Path::new(""), exclude)
}

/// Empties directory `rel` of `root` as [`clear`] does.
fn clear_below(root: &Path, rel: &Path, exclude: &Exclusions) -> Result<(), MountError> {
    let dev = fs::symlink_metadata(root).map_err(err("stat", root))?.dev();
    let dir = root.join(rel);
    let mut names = Vec::new();
    for e in fs::read_dir(&dir).map_err(err("reading", &dir))? {
        names.push(e.map_err(err("reading", &dir))?.file_name());
    }
    for name in names {
        let child = rel.join(&name);
        if exclude.is_excluded(&child) {
            continue;
        }
        if exclude.is_ancestor(&child) {
            let p = root.join(&child);
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                clear_below(root, &child, exclude)?;
                continue;
            }
        }
        remove_same_device(&root.join(&child), dev)?;
    }
    Ok(())
}

/// Removes `p` and what is below it, never following a symlink and never
/// entering a directory of another device (a mount point kiln did not
/// know of: an error, nothing there is touched).
fn remove_same_device(p: &Path, dev: u64) -> Result<(), MountError> {
    let m = fs::symlink_metadata(p).map_err(err("stat", p))?;
    if m.dev() != dev {
        return Err(MountError::Native {
            op: "refusing to remove (another filesystem is mounted there)",
            path: p.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::EXDEV),
        });
    }
    if !m.is_dir() {
        return fs::remove_file(p).map_err(err("removing", p));
    }
    for e in fs::read_dir(p).map_err(err("reading", p))? {
        let e = e.map_err(err("reading", p))?;
        remove_same_device(&e.path(), dev)?;
    }
    fs::remove_dir(p).map_err(err("removing", p))
}

/// Copies `src` (a file, a symlink, a special file or a whole directory)
/// to `dst`, which must not exist, with owners, modes, times and extended
/// attributes, never following a symlink in `src`: what a read-only bind
/// mount would show, as a copy (a RUN step's mount where nothing can be
/// mounted).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), MountError> {
    let m = fs::symlink_metadata(src).map_err(err("stat", src))?;
    if !m.is_dir() {
        return copy_entry(src, &m, dst);
    }
    fs::create_dir(dst).map_err(err("creating", dst))?;
    for e in fs::read_dir(src).map_err(err("reading", src))? {
        let e = e.map_err(err("reading", src))?;
        copy_tree(&e.path(), &dst.join(e.file_name()))?;
    }
    apply_meta(src, &m, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_keep_their_ancestors() {
        let mut x = Exclusions::new();
        x.add(Path::new("/etc/hosts")).unwrap();
        x.add(Path::new("var/run/secrets/k8s")).unwrap();
        assert!(x.is_excluded(Path::new("etc/hosts")));
        assert!(!x.is_excluded(Path::new("etc")));
        assert!(x.is_ancestor(Path::new("etc")));
        assert!(x.is_ancestor(Path::new("var/run")));
        assert!(x.covers(Path::new("var/run/secrets/k8s/token")));
        assert!(!x.covers(Path::new("var/run/other")));
        assert!(x.add(Path::new("/")).is_err());
        assert!(x.add(Path::new("a/../b")).is_err());
    }

    #[test]
    fn clear_leaves_excluded_paths_and_never_follows_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("etc/ssl")).unwrap();
        fs::create_dir_all(root.join("kiln/state")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("etc/hosts"), "h").unwrap();
        fs::write(root.join("etc/ssl/x"), "x").unwrap();
        fs::write(root.join("kiln/state/s"), "s").unwrap();
        fs::write(outside.join("precious"), "p").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/link")).unwrap();
        let mut x = Exclusions::new();
        x.add(Path::new("etc/hosts")).unwrap();
        x.add(Path::new("kiln")).unwrap();
        clear(&root, &x).unwrap();
        let mut left: Vec<String> = Vec::new();
        for p in ["etc", "etc/hosts", "etc/ssl", "etc/link", "kiln/state/s"] {
            if fs::symlink_metadata(root.join(p)).is_ok() {
                left.push(p.to_owned());
            }
        }
        assert_eq!(left, ["etc", "etc/hosts", "kiln/state/s"]);
        assert!(outside.join("precious").exists());
    }
}
