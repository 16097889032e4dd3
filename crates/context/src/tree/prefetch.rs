//! Reading a directory tree ahead of a walk, on every core.
//!
//! The walk itself is sequential: it emits parents before children and
//! siblings in byte order, and decides what exists in the view as it goes.
//! Its cost on a large context is almost all `getdents` and one `statx` per
//! entry, which do not depend on those decisions. So before a walk of a
//! directory, [`Tree::prefetch`] lists and stats the directories the walk
//! will enter, in parallel, and the walk reads them from memory.
//!
//! The prefetch skips exactly what the walk skips without a `stat`: an
//! ignored non-directory, and an ignored directory that
//! `.dockerignore`'s exceptions cannot reach into (see `Tree::prunes`).
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

use super::{Tree, join_rel};

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

impl Tree {
    /// Reads the directory `host` (in-tree `tree_rel`, whose ignore match
    /// info is `ign_info`) and everything beneath it the walk would enter.
    pub(super) fn prefetch(&self, host: &Path, tree_rel: &[u8], ign_info: &[bool]) -> Prefetched {
        let dirs = Mutex::new(HashMap::new());
        rayon::scope(|s| {
            self.fetch_dir(
                s,
                host.to_owned(),
                tree_rel.to_vec(),
                ign_info.to_vec(),
                &dirs,
            );
        });
        Prefetched {
            dirs: dirs.into_inner().unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn fetch_dir<'s>(
        &'s self,
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
            let (ignored, info) = match &self.ignore {
                Some(m) => match m.matches_with_parent_into(&child_tree_rel, &ign_info, &mut buf) {
                    Ok(ignored) => (ignored, buf.clone()),
                    Err(_) => return,
                },
                None => (false, Vec::new()),
            };
            // The walk skips these without a stat (nor lists them here).
            if ignored && (dir_hint == Some(false) || self.prunes(&child_tree_rel)) {
                continue;
            }
            let meta = e.metadata().ok();
            if meta.as_ref().is_some_and(Metadata::is_dir) {
                let child_host = e.path();
                s.spawn(move |s| self.fetch_dir(s, child_host, child_tree_rel, info, dirs));
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
}
