//! `resolve_in_root`: a port of cyphar/filepath-securejoin's `SecureJoin`.
//!
//! Resolves `path` as if `root` were `/` (as a chroot would): symlinks along
//! the path are followed, absolute symlink targets restart at `root`, and
//! `..` never climbs above `root`. Pure userspace, on `lstat`/`readlink`, so
//! it needs no privileges and no mounts. Non-existent components are taken
//! as plain names (the result may not exist yet). The result is only safe as
//! long as nobody swaps path components for symlinks afterwards: kiln uses it
//! on trees nothing else writes to while it runs (a stopped container's
//! rootfs, a layer being unpacked).
//!
//! Differences from upstream, for kiln's callers: `follow_last = false`
//! leaves the final component unresolved (like `lstat` vs `stat`; a trailing
//! `/`, `/.` or `/..` still forces it to be followed, as in POSIX), and paths
//! are bytes (non-UTF-8 names work).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Maximum number of symlinks followed in one resolution (upstream's
/// `MaxSymlinkLimit`, Linux's own limit is 40).
pub const MAX_SYMLINKS: usize = 255;

/// Errors of [`resolve_in_root`].
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `root` contains a `..` component.
    #[error("resolve {} in {}: the root contains '..'", path.display(), root.display())]
    UnsafeRoot {
        /// The root.
        root: PathBuf,
        /// The path being resolved.
        path: PathBuf,
    },
    /// More than [`MAX_SYMLINKS`] symlinks (a loop, most likely).
    #[error("resolve {} in {}: too many levels of symbolic links", path.display(), root.display())]
    TooManyLinks {
        /// The root.
        root: PathBuf,
        /// The path being resolved.
        path: PathBuf,
    },
    /// `lstat` or `readlink` failed other than with ENOENT/ENOTDIR.
    #[error("resolve {} in {}: {}: {source}", path.display(), root.display(), at.display())]
    Io {
        /// The root.
        root: PathBuf,
        /// The path being resolved.
        path: PathBuf,
        /// The host path that failed.
        at: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn is_not_exist(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Resolves `path` inside `root` with chroot semantics (see the module
/// docs) and returns `root` joined with the resolved path. When `follow_last`
/// is false and the last component is a symlink, it is returned as is.
pub fn resolve_in_root(
    root: &Path,
    path: &Path,
    follow_last: bool,
) -> Result<PathBuf, ResolveError> {
    let root_bytes = root.as_os_str().as_bytes();
    if root_bytes.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(ResolveError::UnsafeRoot {
            root: root.to_path_buf(),
            path: path.to_path_buf(),
        });
    }
    let path_bytes = path.as_os_str().as_bytes();
    // The components resolved so far (no symlinks, no dots).
    let mut current: Vec<Vec<u8>> = Vec::new();
    // What remains to walk, as a stack of components (top = next). A
    // trailing slash forces the last component to be followed.
    let mut remaining: Vec<Vec<u8>> = Vec::new();
    push_components(&mut remaining, path_bytes);
    let mut force_follow_last = path_bytes.ends_with(b"/");
    let mut links = 0usize;
    let mut full = root.to_path_buf();
    while let Some(part) = remaining.pop() {
        match part.as_slice() {
            b"" | b"." => continue,
            b".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        // As in POSIX, a trailing `/`, `.` or `..` makes the component
        // before it a directory to enter, hence followed.
        let is_last = remaining.iter().all(|c| c.is_empty());
        if is_last && !follow_last && !force_follow_last {
            current.push(part);
            continue;
        }
        full.clear();
        full.push(root);
        for c in &current {
            full.push(OsStr::from_bytes(c));
        }
        full.push(OsStr::from_bytes(&part));
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => Some(m),
            Err(e) if is_not_exist(&e) => None,
            Err(source) => return Err(io_error(root, path, &full, source)),
        };
        if !meta.is_some_and(|m| m.file_type().is_symlink()) {
            current.push(part);
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(ResolveError::TooManyLinks {
                root: root.to_path_buf(),
                path: path.to_path_buf(),
            });
        }
        let target = std::fs::read_link(&full).map_err(|e| io_error(root, path, &full, e))?;
        let target = target.into_os_string().into_vec();
        if is_last && target.ends_with(b"/") {
            force_follow_last = true;
        }
        if target.starts_with(b"/") {
            current.clear();
        }
        push_components(&mut remaining, &target);
    }
    let mut out = root.to_path_buf();
    for c in current {
        out.push(OsString::from_vec(c));
    }
    Ok(out)
}

/// Pushes the components of `p` so that the first one is on top.
fn push_components(stack: &mut Vec<Vec<u8>>, p: &[u8]) {
    for c in p.split(|&b| b == b'/').rev() {
        stack.push(c.to_vec());
    }
}

fn io_error(root: &Path, path: &Path, at: &Path, source: io::Error) -> ResolveError {
    ResolveError::Io {
        root: root.to_path_buf(),
        path: path.to_path_buf(),
        at: at.to_path_buf(),
        source,
    }
}
