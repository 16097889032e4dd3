//! Reading a directory tree ahead of a walk, on every core.
//!
//! The walk itself is sequential: it emits parents before children and
//! siblings in byte order, and decides what exists in the view as it goes.
//! Its cost on a large context is almost all `getdents` and one `statx` per
//! entry, which do not depend on those decisions. So before a walk of a
//! directory, [`prefetch`] lists and stats the directories the walk
//! will enter, in parallel, and the walk reads them from memory.
//!
//! The prefetch skips exactly what the walk skips without a `stat`: an
//! ignored non-directory, and an ignored directory that
//! `.dockerignore`'s exceptions cannot reach into ([`View::prunes`]).
//! Anything it could not read (an error, a pattern it cannot match) is
//! simply not prefetched: the walk then reads it itself and reports the
//! error as it always did. So a prefetch can make a walk faster but never
//! changes what it finds.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One directory entry read ahead.
pub(super) struct Child {
    pub(super) name: OsString,
    /// Whether `getdents` said it is a directory (`None`: unknown type).
    pub(super) dir_hint: Option<bool>,
    /// Its `lstat`, or `None` when that failed (the walk retries and
    /// reports the failure).
    meta: Option<Metadata>,
}

impl Child {
    /// Its `lstat`, as read ahead or read now.
    pub(super) fn metadata(&self, host: &Path) -> io::Result<Metadata> {
        match &self.meta {
            Some(m) => Ok(m.clone()),
            None => fs::symlink_metadata(host),
        }
    }
}

/// Directories read ahead: host path → entries sorted by name bytes,
/// without those the walk would skip unread.
#[derive(Default)]
pub(super) struct Prefetched {
    dirs: HashMap<PathBuf, Vec<Child>>,
}

impl Prefetched {
    /// The entries of `dir`, if it was read ahead.
    pub(super) fn get(&self, dir: &Path) -> Option<&[Child]> {
        self.dirs.get(dir).map(Vec::as_slice)
    }

    /// How many entries were read ahead: about what the walk will emit.
    pub(super) fn len(&self) -> usize {
        self.dirs.values().map(Vec::len).sum()
    }
}

/// The walk's rules for what it skips without a `stat` (the `Tree`'s).
pub(super) trait View: Sync {
    /// Whether the in-tree path `rel` is ignored, given its parent's match
    /// info; `buf` receives its own. `None`: the rules cannot tell (the walk
    /// will say why).
    fn ignored(&self, rel: &[u8], parent: &[bool], buf: &mut Vec<bool>) -> Option<bool>;
    /// Whether the walk skips the ignored directory `dir` outright.
    fn prunes(&self, dir: &[u8]) -> bool;
}

/// Whether the walk passes over the entry `rel` without a `stat`: an
/// ignored entry that is not a directory, or an ignored directory that the
/// ignore rules prune. The walk and the prefetch both ask this, so the
/// prefetch reads exactly what the walk will look at.
pub(super) fn skipped_unread(
    view: &dyn View,
    ignored: bool,
    dir_hint: Option<bool>,
    rel: &[u8],
) -> bool {
    ignored && (dir_hint == Some(false) || view.prunes(rel))
}

/// Reads the directory `host` (in-tree `tree_rel`, whose ignore match info
/// is `ign_info`) and everything beneath it the walk would enter.
pub(super) fn prefetch(
    view: &dyn View,
    host: &Path,
    tree_rel: &[u8],
    ign_info: &[bool],
) -> Prefetched {
    let dirs = Mutex::new(HashMap::new());
    rayon::scope(|s| {
        let (host, rel, info) = (host.to_owned(), tree_rel.to_vec(), ign_info.to_vec());
        fetch_dir(view, s, host, rel, info, &dirs);
    });
    Prefetched {
        dirs: dirs.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

fn fetch_dir<'s>(
    view: &'s dyn View,
    s: &rayon::Scope<'s>,
    host: PathBuf,
    tree_rel: Vec<u8>,
    ign_info: Vec<bool>,
    dirs: &'s Mutex<HashMap<PathBuf, Vec<Child>>>,
) {
    let Ok(rd) = fs::read_dir(&host) else {
        return;
    };
    let mut children = Vec::new();
    let mut buf = Vec::new();
    for e in rd {
        let Ok(e) = e else {
            return;
        };
        let name = e.file_name();
        let dir_hint = e.file_type().ok().map(|t| t.is_dir());
        let child_tree_rel = join_rel(&tree_rel, name.as_bytes());
        let Some(ignored) = view.ignored(&child_tree_rel, &ign_info, &mut buf) else {
            return;
        };
        // The walk skips these without a stat (nor lists them here).
        if skipped_unread(view, ignored, dir_hint, &child_tree_rel) {
            continue;
        }
        let meta = e.metadata().ok();
        if meta.as_ref().is_some_and(Metadata::is_dir) {
            let (child_host, info) = (e.path(), buf.clone());
            s.spawn(move |s| fetch_dir(view, s, child_host, child_tree_rel, info, dirs));
        }
        children.push(Child {
            name,
            dir_hint,
            meta,
        });
    }
    children.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    dirs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(host, children);
}

/// `parent/name`, or `name` at the top.
pub(super) fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}
