//! Resolving a path inside a root with every symlink bounded by the root:
//! BuildKit's `contenthash.rootPath`, itself cyphar/filepath-securejoin's
//! `SecureJoin`.
//!
//! Components are applied one at a time to a path that is known to contain
//! no symlinks, so `..` is lexical there and can never climb above the root;
//! a symlink's target is spliced in front of the unresolved rest, an absolute
//! target restarting from the root. Components that do not exist are taken
//! as plain names. Existence is asked of a callback, so the same code serves
//! a plain directory and a directory seen through `.dockerignore` (where an
//! ignored symlink does not exist).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::gostd::path;

/// Symlinks followed before giving up (Linux's MAXSYMLINKS is 40; BuildKit
/// allows 255).
pub(crate) const MAX_SYMLINKS: usize = 255;

/// A resolved path.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The path inside the root, absolute and clean (`/` for the root).
    pub rel: Vec<u8>,
    /// The root joined with `rel`.
    pub host: PathBuf,
}

/// Why resolution failed.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// More than [`MAX_SYMLINKS`] symlinks; carries the in-tree path reached.
    TooManyLinks(Vec<u8>),
    /// `lstat` or `readlink` failed on the in-tree path.
    Io(Vec<u8>, std::io::Error),
}

/// What the caller says about an in-tree path.
pub(crate) enum Node {
    /// Does not exist (or is hidden): take the component as a plain name.
    Missing,
    /// Exists and is not a symlink.
    Plain,
    /// Exists and is a symlink.
    Symlink,
}

/// `root` joined with the in-tree path `rel` (absolute or not).
pub(crate) fn host_path(root: &Path, rel: &[u8]) -> PathBuf {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// Resolves `unsafe_path` inside `root`. `node` classifies in-tree paths;
/// with `follow_trailing` false a symlink in the last component is kept.
pub(crate) fn secure_join(
    root: &Path,
    unsafe_path: &[u8],
    follow_trailing: bool,
    mut node: impl FnMut(&[u8], &Path) -> std::io::Result<Node>,
) -> Result<Resolved, ResolveError> {
    let mut unsafe_path: Vec<u8> = unsafe_path.to_vec();
    let mut current: Vec<u8> = Vec::new();
    let mut links = 0;
    while !unsafe_path.is_empty() {
        if unsafe_path.last() == Some(&b'/') {
            unsafe_path.pop();
        }
        let (part, rest) = match unsafe_path.iter().position(|&b| b == b'/') {
            Some(i) => (unsafe_path[..i].to_vec(), unsafe_path[i + 1..].to_vec()),
            None => (std::mem::take(&mut unsafe_path), Vec::new()),
        };
        unsafe_path = rest;
        let mut joined = b"/".to_vec();
        joined.extend_from_slice(&current);
        joined.push(b'/');
        joined.extend_from_slice(&part);
        let next = path::clean(&joined);
        if next == b"/" {
            current.clear();
            continue;
        }
        let host = host_path(root, &next);
        match node(&next, &host).map_err(|e| ResolveError::Io(next.clone(), e))? {
            Node::Missing | Node::Plain => {
                current = next;
                continue;
            }
            Node::Symlink => {}
        }
        if !follow_trailing && unsafe_path.is_empty() {
            current = next;
            break;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(ResolveError::TooManyLinks(next));
        }
        let dest = std::fs::read_link(&host).map_err(|e| ResolveError::Io(next.clone(), e))?;
        let dest = dest.as_os_str().as_bytes();
        if dest.first() == Some(&b'/') {
            current.clear();
        }
        let mut spliced = dest.to_vec();
        spliced.push(b'/');
        spliced.extend_from_slice(&unsafe_path);
        unsafe_path = spliced;
    }
    let mut joined = b"/".to_vec();
    joined.extend_from_slice(&current);
    let rel = path::clean(&joined);
    Ok(Resolved {
        host: host_path(root, &rel),
        rel,
    })
}

/// [`secure_join`] on a plain directory, following the last component.
pub(crate) fn secure_join_host(root: &Path, unsafe_path: &[u8]) -> Result<Resolved, ResolveError> {
    secure_join(
        root,
        unsafe_path,
        true,
        |_, host| match std::fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => Ok(Node::Symlink),
            Ok(_) => Ok(Node::Plain),
            Err(e) if is_not_found(&e) => Ok(Node::Missing),
            Err(e) => Err(e),
        },
    )
}

/// fsutil's `isNotExist`: ENOENT or ENOTDIR.
pub(crate) fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || e.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn bounded_by_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("d")).expect("mkdir");
        symlink("/d", root.join("abs")).expect("symlink");
        symlink("../../../d", root.join("d/up")).expect("symlink");
        symlink("loop", root.join("loop")).expect("symlink");
        let r = |p: &str| {
            secure_join_host(root, p.as_bytes())
                .map(|r| String::from_utf8_lossy(&r.rel).into_owned())
                .unwrap_or_else(|e| format!("{e:?}"))
        };
        assert_eq!(r("/abs/x"), "/d/x");
        assert_eq!(r("/d/up"), "/d");
        assert_eq!(r("/../../etc"), "/etc");
        assert_eq!(r("/"), "/");
        assert!(r("/loop").starts_with("TooManyLinks"));
    }
}
