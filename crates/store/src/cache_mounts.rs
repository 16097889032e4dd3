//! The cache mounts the state directory keeps (`<root>/cache-mounts/<key>`,
//! the directories of `RUN --mount=type=cache`): what `kiln du` lists and
//! `kiln prune --all` deletes. kiln-worker makes and mounts them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The directory of cache mounts under the state directory.
pub const CACHE_MOUNTS_DIR: &str = "cache-mounts";

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

/// A cache mount kept in the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountInfo {
    /// The `id` of the mount (the target when none was given).
    pub id: String,
    pub dir: PathBuf,
    /// Bytes of its files.
    pub size: u64,
    /// When a step last mounted it (seconds since 1970), if known.
    pub last_used: Option<i64>,
}

/// Bytes of the files below `p` (not following symlinks).
fn tree_size(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    fs::read_dir(p)
        .map(|d| d.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// The cache mounts of the state directory at `root`, by id (leftovers of
/// creations that crashed included, with an empty id).
pub fn cache_mounts(root: &Path) -> Vec<CacheMountInfo> {
    let Ok(entries) = fs::read_dir(root.join(CACHE_MOUNTS_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<CacheMountInfo> = entries
        .flatten()
        .map(|e| CacheMountInfo {
            id: fs::read_to_string(e.path().join("id")).unwrap_or_default(),
            size: tree_size(&e.path()),
            last_used: fs::metadata(e.path().join("lock"))
                .or_else(|_| fs::metadata(e.path()))
                .ok()
                .map(|m| filetime::FileTime::from_last_modification_time(&m).unix_seconds()),
            dir: e.path(),
        })
        .collect();
    out.sort_by(|a, b| (&a.id, &a.dir).cmp(&(&b.id, &b.dir)));
    out
}

/// Deletes the cache mounts last used before `until` (all of them when
/// `None`): `kiln prune --all`. The caller holds the state directory's lock
/// exclusively, so no build uses them.
pub fn delete_cache_mounts(root: &Path, until: Option<i64>) -> Result<Vec<CacheMountInfo>, Error> {
    let mounts: Vec<CacheMountInfo> = cache_mounts(root)
        .into_iter()
        .filter(|m| match (until, m.last_used) {
            (None, _) => true,
            (Some(u), Some(t)) => t < u,
            (Some(_), None) => false,
        })
        .collect();
    for m in &mounts {
        // Renamed first, so a crash halfway leaves a directory that is
        // recognisably garbage, never a half-deleted cache.
        let doomed = m.dir.with_file_name(format!(
            ".deleted-{}",
            m.dir
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let target = if fs::rename(&m.dir, &doomed).is_ok() {
            doomed
        } else {
            m.dir.clone()
        };
        fs::remove_dir_all(&target).map_err(io_err("removing the cache mount", &target))?;
    }
    Ok(mounts)
}
