//! A RUN step's extra mounts (`RUN --mount`) where nothing can be mounted:
//! each is *placed* at its target in the tree before the step and taken
//! away after it, so that the layer is what it would be with real mounts.
//!
//! | mount | placed as | afterwards |
//! |---|---|---|
//! | read-only bind (context, stage, image) | a copy | removed |
//! | read-write bind (cache mount, `rw` bind, ssh socket) | the source itself, renamed in (a copy where it is on another filesystem) | renamed back (copied back) |
//! | tmpfs | an empty directory, mode 1777 | removed |
//! | secret file | the file, with its owner and mode | truncated through the descriptor kiln kept, then removed |
//!
//! What the image had at a target is renamed aside into kiln's own
//! directory of the tree and renamed back after the step; directories made
//! on the way to a target are removed again when empty; and the directory
//! where kiln changed the tree (the target's nearest existing ancestor) gets
//! its times back when the step did not change it itself, and is recorded
//! again (`Checkout::refresh`), as is every path put back. So the diff sees
//! only what the step did outside its mounts, as overlay would.
//!
//! Differences from real mounts, which the step can tell: a read-only bind
//! mount is writable (its copy is thrown away, where a mount refuses with
//! `EROFS`); a mount point can be removed or renamed, which fails the step
//! afterwards (the source of a cache mount would be lost: the cache is
//! emptied); a hard link from a mount to the tree is possible (files of the
//! upper dir are then copies, see `kiln_snapshot::inplace`); the secret file
//! lies on the tree's filesystem (no tmpfs to put it on) for the step's
//! duration. A read-write source is locked exclusively (`flock` on its
//! parent directory) while it is placed: two steps cannot have one cache
//! directory in their trees at once, so `sharing=shared` cache mounts
//! behave as `locked` ones.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use filetime::FileTime;
use kiln_snapshot::Checkout;
use kiln_snapshot::beneath::Entry;
use nix::fcntl::{Flock, FlockArg};

use crate::spec::{ExtraMount, MountKind};

/// What was put at a target.
#[derive(Debug)]
enum Content {
    /// A copy, or an empty directory: removed afterwards.
    Throwaway,
    /// The source itself, renamed in; `copied`: copied in (another
    /// filesystem), to be copied back.
    Moved {
        source: PathBuf,
        copied: bool,
        _lock: Option<Flock<File>>,
        /// Owner and mode of a source directory, to make an empty one
        /// again if the step loses it.
        meta: Option<(u32, u32, u32)>,
    },
    /// A secret's file, kept open to empty it whatever the step did.
    Secret(File),
}

/// One placed mount.
#[derive(Debug)]
struct Placed {
    target: String,
    /// The target in the tree, relative to its root, resolved.
    rel: PathBuf,
    content: Content,
    /// The inode put there.
    ino: (u64, u64),
    /// Where the image's entry at the target waits, if it had one.
    hidden: Option<PathBuf>,
    /// Directories made on the way, outermost first.
    made: Vec<PathBuf>,
}

/// An anchor's access and modification times before kiln changed it, and
/// its ctime (seconds, nanoseconds) once every mount was placed.
type AnchorTimes = (FileTime, FileTime, Option<(i64, i64)>);

/// The mounts of one step, in the tree.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    placed: Vec<Placed>,
    /// Each anchor's times before kiln changed it, and its ctime once every
    /// mount was placed.
    anchors: BTreeMap<PathBuf, AnchorTimes>,
    hidden_count: usize,
}

fn resolve(root: &Path, target: &str) -> Result<PathBuf, String> {
    let p = kiln_snapshot::resolve_in_root(root, Path::new(target), true)
        .map_err(|e| format!("RUN --mount target {target}: {e}"))?;
    Ok(p.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_default())
}

fn io(what: String) -> impl FnOnce(io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn ino(m: &fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

fn stat_in(root: &Path, rel: &Path) -> io::Result<fs::Metadata> {
    if rel.as_os_str().is_empty() {
        return fs::symlink_metadata(root);
    }
    let e = Entry::open(root, rel)?;
    fs::symlink_metadata(e.path())
}

/// Takes `lock` (a directory) exclusively, polling, until `cancelled`.
fn lock_dir(dir: &Path, cancelled: &dyn Fn() -> bool) -> Result<Flock<File>, String> {
    let mut f = File::open(dir).map_err(io(format!("opening {}", dir.display())))?;
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => f = back,
            Err((_, e)) => return Err(format!("locking {}: {e}", dir.display())),
        }
        if cancelled() {
            return Err("cancelled".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Placement {
    /// Places `mounts` (parents before children) in the tree; on failure
    /// what was placed is taken away again.
    pub(crate) fn place(
        co: &mut Checkout<'_>,
        mounts: &[ExtraMount],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Placement, String> {
        let mut p = Placement::default();
        for m in mounts {
            if let Err(e) = p.place_one(co, m, cancelled) {
                let _ = p.remove(co);
                return Err(e);
            }
        }
        let root = co.root().to_path_buf();
        for (anchor, (_, _, after)) in p.anchors.iter_mut() {
            *after = stat_in(&root, anchor)
                .ok()
                .map(|m| (m.ctime(), m.ctime_nsec()));
        }
        Ok(p)
    }

    fn place_one(
        &mut self,
        co: &mut Checkout<'_>,
        m: &ExtraMount,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), String> {
        let root = co.root().to_path_buf();
        let target = m.target.as_str();
        let rel = resolve(&root, target)?;
        if rel.as_os_str().is_empty() {
            return Err(format!(
                "RUN --mount target {target}: the root filesystem itself"
            ));
        }
        let x = co.exclusions();
        if x.covers(&rel) || x.is_ancestor(&rel) {
            return Err(format!(
                "RUN --mount target {target} is not supported yet with --isolation=container: \
                 it is (or holds) a path the container keeps (a mount point of the container, \
                 kiln's directory or its state directory)"
            ));
        }
        // The nearest existing ancestor, and the directories to make.
        let mut anchor = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut missing = Vec::new();
        while !anchor.as_os_str().is_empty() && stat_in(&root, &anchor).is_err() {
            missing.push(anchor.clone());
            anchor = anchor.parent().map(Path::to_path_buf).unwrap_or_default();
        }
        let am = stat_in(&root, &anchor).map_err(io(format!(
            "RUN --mount target {target}: {}",
            anchor.display()
        )))?;
        if !am.is_dir() {
            return Err(format!(
                "RUN --mount target {target}: {} is not a directory",
                anchor.display()
            ));
        }
        self.anchors.entry(anchor.clone()).or_insert((
            FileTime::from_last_access_time(&am),
            FileTime::from_last_modification_time(&am),
            None,
        ));
        let mut placed = Placed {
            target: target.to_owned(),
            rel: rel.clone(),
            content: Content::Throwaway,
            ino: (0, 0),
            hidden: None,
            made: Vec::new(),
        };
        for d in missing.iter().rev() {
            let p = root.join(d);
            fs::create_dir(&p).map_err(io(format!("creating {}", p.display())))?;
            placed.made.push(d.clone());
        }
        let at = root.join(&rel);
        if fs::symlink_metadata(&at).is_ok() {
            let aside = co.work().join(format!("hidden-{}", self.hidden_count));
            self.hidden_count += 1;
            fs::rename(&at, &aside).map_err(io(format!(
                "putting the image's {target} aside for the mount"
            )))?;
            placed.hidden = Some(aside);
        }
        // Recorded now, so that a failure below undoes what was done.
        let r = fill(&at, m, cancelled);
        match r {
            Ok(content) => placed.content = content,
            Err(e) => {
                self.placed.push(placed);
                return Err(format!("RUN --mount target {target}: {e}"));
            }
        }
        placed.ino = fs::symlink_metadata(&at)
            .map(|m| ino(&m))
            .map_err(io(format!("RUN --mount target {target}")))?;
        self.placed.push(placed);
        Ok(())
    }

    /// Takes every mount away again (the step has ended): secrets are
    /// emptied first, whatever happens next. An error says what the step
    /// did to a mount point that kiln could not undo.
    pub(crate) fn remove(mut self, co: &mut Checkout<'_>) -> Result<(), String> {
        for p in &self.placed {
            if let Content::Secret(f) = &p.content {
                let _ = f.set_len(0);
                let _ = f.sync_all();
            }
        }
        let root = co.root().to_path_buf();
        // The anchors as the step left them.
        let now: BTreeMap<PathBuf, Option<fs::Metadata>> = self
            .anchors
            .keys()
            .map(|a| (a.clone(), stat_in(&root, a).ok()))
            .collect();
        let mut errors = Vec::new();
        let mut restored = Vec::new();
        for p in self.placed.drain(..).rev() {
            if let Err(e) = remove_one(&root, &p) {
                errors.push(format!("RUN --mount target {}: {e}", p.target));
            }
            if let Some(aside) = &p.hidden {
                let at = root.join(&p.rel);
                match fs::rename(aside, &at) {
                    Ok(()) => restored.push(p.rel.clone()),
                    Err(e) => errors.push(format!(
                        "RUN --mount target {}: putting the image's entry back: {e}",
                        p.target
                    )),
                }
            }
            for d in p.made.iter().rev() {
                match Entry::open(&root, d) {
                    Ok(e) if e.is_empty_dir().unwrap_or(false) => {
                        let _ = e.remove(true);
                    }
                    _ => break,
                }
            }
        }
        for (anchor, (atime, mtime, after)) in &self.anchors {
            let Some(Some(left)) = now.get(anchor) else {
                continue;
            };
            let Ok(e) = stat_in(&root, anchor) else {
                continue;
            };
            if !e.is_dir() {
                continue;
            }
            let path = root.join(anchor);
            let untouched = *after == Some((left.ctime(), left.ctime_nsec()));
            if untouched {
                // Only kiln changed it: as it was, and as recorded.
                let _ = filetime::set_file_times(&path, *atime, *mtime);
                co.refresh(anchor);
            } else {
                // The step changed it too: its time is the step's.
                let _ = filetime::set_file_times(
                    &path,
                    FileTime::from_last_access_time(left),
                    FileTime::from_last_modification_time(left),
                );
            }
        }
        for rel in restored {
            co.refresh(&rel);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// Puts the content of mount `m` at `at` (which does not exist).
fn fill(at: &Path, m: &ExtraMount, cancelled: &dyn Fn() -> bool) -> Result<Content, String> {
    match &m.kind {
        MountKind::Bind {
            source,
            readonly: true,
        } => {
            kiln_snapshot::inplace::copy_tree(source, at).map_err(|e| e.to_string())?;
            Ok(Content::Throwaway)
        }
        MountKind::Bind {
            source,
            readonly: false,
        } => {
            let parent = source.parent().unwrap_or(source);
            let lock = lock_dir(parent, cancelled)?;
            let sm = fs::symlink_metadata(source).map_err(io(format!("{}", source.display())))?;
            let meta = sm
                .is_dir()
                .then(|| (sm.uid(), sm.gid(), sm.mode() & 0o7777));
            let copied = match fs::rename(source, at) {
                Ok(()) => false,
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    kiln_snapshot::inplace::copy_tree(source, at).map_err(|e| e.to_string())?;
                    true
                }
                Err(e) => return Err(format!("moving {} in: {e}", source.display())),
            };
            Ok(Content::Moved {
                source: source.clone(),
                copied,
                _lock: Some(lock),
                meta,
            })
        }
        MountKind::Tmpfs { .. } => {
            fs::create_dir(at).map_err(io(format!("creating {}", at.display())))?;
            fs::set_permissions(at, fs::Permissions::from_mode(0o1777))
                .map_err(io(format!("chmod {}", at.display())))?;
            Ok(Content::Throwaway)
        }
        MountKind::SecretFile {
            data,
            uid,
            gid,
            mode,
        } => {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(at)
                .map_err(io("creating the secret file".to_owned()))?;
            f.write_all(&data.0)
                .map_err(io("writing the secret file".to_owned()))?;
            std::os::unix::fs::fchown(&f, Some(*uid), Some(*gid))
                .map_err(io("chown of the secret file".to_owned()))?;
            f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io("chmod of the secret file".to_owned()))?;
            Ok(Content::Secret(f))
        }
    }
}

/// Takes what was placed at `p.rel` away (never through a symlink the step
/// made on the way).
fn remove_one(root: &Path, p: &Placed) -> Result<(), String> {
    let entry = Entry::open(root, &p.rel);
    let here = entry
        .as_ref()
        .ok()
        .and_then(|e| fs::symlink_metadata(e.path()).ok());
    let same = here.as_ref().is_some_and(|m| ino(m) == p.ino);
    match &p.content {
        Content::Moved {
            source,
            copied,
            meta,
            ..
        } => {
            let (Ok(e), true) = (&entry, same) else {
                // The source is lost with the tree: an empty one keeps the
                // cache usable.
                if let Some(meta) = meta {
                    remake(source, *meta);
                }
                return Err("the step removed, moved or replaced the mount point \
                     (with --isolation=container it is a plain directory; its content is lost)"
                    .to_owned());
            };
            if *copied {
                let tmp = source.with_extension("kiln-back");
                let _ = kiln_snapshot::beneath::remove_all(
                    tmp.parent().unwrap_or(root),
                    Path::new(tmp.file_name().unwrap_or_default()),
                );
                kiln_snapshot::inplace::copy_tree(&e.path(), &tmp).map_err(|e| e.to_string())?;
                let _ = fs::remove_dir_all(source).or_else(|_| fs::remove_file(source));
                fs::rename(&tmp, source).map_err(io(format!("{}", source.display())))?;
                kiln_snapshot::beneath::remove_all(root, &p.rel).map_err(|e| e.to_string())?;
            } else {
                fs::rename(e.path(), source)
                    .map_err(io(format!("moving {} back", source.display())))?;
            }
            Ok(())
        }
        Content::Secret(f) => {
            let linked = f.metadata().map(|m| m.nlink()).unwrap_or(1);
            let _ = kiln_snapshot::beneath::remove_all(root, &p.rel);
            if !same || linked != 1 {
                return Err("the step moved or linked the secret file \
                            (it was emptied; with --isolation=container it is a plain file)"
                    .to_owned());
            }
            Ok(())
        }
        Content::Throwaway => {
            kiln_snapshot::beneath::remove_all(root, &p.rel).map_err(|e| e.to_string())?;
            if !same && here.is_some() {
                return Err("the step replaced the mount point".to_owned());
            }
            Ok(())
        }
    }
}

/// An empty directory (owner and mode `meta`) where a cache's source was.
fn remake(source: &Path, meta: (u32, u32, u32)) {
    if fs::symlink_metadata(source).is_ok() {
        return;
    }
    if fs::create_dir(source).is_ok() {
        let _ = std::os::unix::fs::chown(source, Some(meta.0), Some(meta.1));
        let _ = fs::set_permissions(source, fs::Permissions::from_mode(meta.2));
    }
}
