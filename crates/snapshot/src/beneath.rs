//! File operations on a tree a RUN step controlled (an upper dir, a native
//! snapshotter's tree) that never follow a symlink: the step may have
//! replaced any directory on a path with a symlink to a host directory, and
//! kiln, on the host, must not then stat, remove or write there (BuildKit's
//! CVE-2024-23652 was such a removal).
//!
//! Every operation opens the parent directory of its target below `root`
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` (or, on kernels before 5.6, one `openat(O_NOFOLLOW
//! | O_DIRECTORY)` per component), then acts on the last name relative to
//! that descriptor (`AT_SYMLINK_NOFOLLOW`). A symlink anywhere on the way
//! is an error (`ELOOP`/`ENOTDIR`); a symlink as the last name is acted on
//! itself, never followed.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The components of `rel`, which must be relative, without `..`.
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not a plain relative path", rel.display()),
                ));
            }
        }
    }
    Ok(out)
}

/// Opens the directory `rel` below `dir` without following any symlink.
fn open_below(dir: impl AsFd, rel: &[&OsStr]) -> io::Result<OwnedFd> {
    let joined: PathBuf = if rel.is_empty() {
        PathBuf::from(".")
    } else {
        rel.iter().collect()
    };
    match rustix::fs::openat2(
        &dir,
        &joined,
        dir_flags(),
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOSYS) => {}
        Err(e) => return Err(e.into()),
    }
    // Before Linux 5.6: one component at a time, none of them a symlink.
    let mut cur = rustix::fs::openat(&dir, ".", dir_flags(), Mode::empty())?;
    for n in rel {
        cur = rustix::fs::openat(&cur, *n, dir_flags(), Mode::empty())?;
    }
    Ok(cur)
}

/// The directory `root` (trusted: kiln's own path).
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// An entry `rel` below a root, reached without following symlinks: its
/// parent directory open, and its name.
#[derive(Debug)]
pub struct Entry {
    parent: OwnedFd,
    name: OsString,
}

impl Entry {
    /// Opens the parent of `rel` (a relative path of at least one
    /// component) below `root`.
    pub fn open(root: &Path, rel: &Path) -> io::Result<Entry> {
        let names = names(rel)?;
        let Some((last, parents)) = names.split_last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root itself is not an entry",
            ));
        };
        let root = open_root(root)?;
        let parent = open_below(&root, parents)?;
        Ok(Entry {
            parent,
            name: last.to_os_string(),
        })
    }

    /// `lstat` of the entry.
    pub fn stat(&self) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::statat(
            &self.parent,
            &self.name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.stat()
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
    }

    /// Whether the entry is a directory with nothing in it.
    pub fn is_empty_dir(&self) -> io::Result<bool> {
        let fd = rustix::fs::openat(&self.parent, &self.name, dir_flags(), Mode::empty())?;
        let dir = rustix::fs::Dir::read_from(&fd)?;
        for e in dir {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes the entry: an empty directory (`dir`) or anything else.
    pub fn remove(&self, dir: bool) -> io::Result<()> {
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        Ok(rustix::fs::unlinkat(&self.parent, &self.name, flags)?)
    }

    /// A path naming the entry through its open parent
    /// (`/proc/self/fd/N/NAME`): valid while `self` lives, resolved by the
    /// kernel from the parent directory itself, so no symlink on the way to
    /// it is followed. For calls that only take paths (extended attributes,
    /// `remove_dir_all`, which does not follow a symlink as its last name).
    pub fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.parent.as_raw_fd()));
        p.push(&self.name);
        p
    }

    /// The name, for messages.
    pub fn name(&self) -> &OsStr {
        &self.name
    }
}

/// Removes `rel` below `root` and everything under it, without following a
/// symlink anywhere (a symlink is removed itself). Missing: `Ok`.
pub fn remove_all(root: &Path, rel: &Path) -> io::Result<()> {
    let e = match Entry::open(root, rel) {
        Ok(e) => e,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    let st = match e.stat() {
        Ok(st) => st,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
        // std's remove_dir_all opens its argument with O_NOFOLLOW and works
        // on descriptors below it.
        std::fs::remove_dir_all(e.path())
    } else {
        e.remove(false)
    }
}

/// Whether `rel` exists below `root` with no symlink on the way (the last
/// component may be one).
pub fn exists(root: &Path, rel: &Path) -> bool {
    Entry::open(root, rel).and_then(|e| e.stat()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn never_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let host = t.path().join("host");
        fs::create_dir_all(root.join("real/b")).unwrap();
        fs::create_dir_all(host.join("b/c")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("a")).unwrap();
        // Through the symlink: refused, and the host dir stays.
        assert!(Entry::open(&root, Path::new("a/b/c")).is_err());
        assert!(remove_all(&root, Path::new("a/b")).is_err());
        assert!(!exists(&root, Path::new("a/b")));
        assert!(host.join("b/c").is_dir());
        // The symlink itself is an entry: removed, not followed.
        let e = Entry::open(&root, Path::new("a")).unwrap();
        assert!(!e.is_dir());
        e.remove(false).unwrap();
        assert!(host.join("b/c").is_dir());
        // Plain directories work.
        let e = Entry::open(&root, Path::new("real/b")).unwrap();
        assert!(e.is_empty_dir().unwrap());
        e.remove(true).unwrap();
        assert!(!root.join("real/b").exists());
        // `..` is refused.
        assert!(Entry::open(&root, Path::new("real/../a")).is_err());
        // remove_all of a tree.
        fs::create_dir_all(root.join("t/u/v")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("t/u/link")).unwrap();
        remove_all(&root, Path::new("t")).unwrap();
        assert!(!root.join("t").exists());
        assert!(host.join("b/c").is_dir());
    }
}
