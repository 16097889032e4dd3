//! Helpers shared by the integration tests: building trees and tars.

#![allow(dead_code, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;

/// Sets the mtime of `p` (not following symlinks).
pub fn set_mtime(p: &Path, t: i64) {
    let ft = FileTime::from_unix_time(t, 0);
    filetime::set_symlink_file_times(p, ft, ft).unwrap();
}

/// Writes a file with content and mode.
pub fn file(root: &Path, rel: impl AsRef<OsStr>, content: &[u8], mode: u32) -> PathBuf {
    let p = root.join(rel.as_ref());
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Creates a directory with a mode.
pub fn dir(root: &Path, rel: impl AsRef<OsStr>, mode: u32) -> PathBuf {
    let p = root.join(rel.as_ref());
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Creates a symlink.
pub fn symlink(root: &Path, rel: impl AsRef<OsStr>, target: impl AsRef<OsStr>) -> PathBuf {
    let p = root.join(rel.as_ref());
    std::os::unix::fs::symlink(target.as_ref(), &p).unwrap();
    p
}

/// Sets every mtime under `root` (not `root` itself) to `t`, directories
/// last.
pub fn set_all_mtimes(root: &Path, t: i64) {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
                dirs.push(p);
            } else {
                set_mtime(&p, t);
            }
        }
    }
    for d in dirs.iter().rev() {
        set_mtime(d, t);
    }
}

/// A listing of a tree: type, path, mode, uid, gid, size/target, mtime,
/// xattrs; sorted. For before/after comparisons.
pub fn tree_listing(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .escape_ascii()
                .to_string();
            let t = m.file_type();
            let extra = if t.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if t.is_file() {
                format!(
                    "size={} content={}",
                    m.len(),
                    String::from_utf8_lossy(&fs::read(&p).unwrap())
                )
            } else {
                format!("rdev={}", m.rdev())
            };
            let mut xs: Vec<String> = xattr::list(&p)
                .map(|l| {
                    l.map(|n| {
                        let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                        format!("{}={}", n.to_string_lossy(), v.escape_ascii())
                    })
                    .collect()
                })
                .unwrap_or_default();
            xs.sort();
            lines.push(format!(
                "{rel} mode={:o} uid={} gid={} {extra} mtime={} {}",
                m.mode(),
                m.uid(),
                m.gid(),
                if t.is_dir() {
                    String::from("-")
                } else {
                    m.mtime().to_string()
                },
                xs.join(",")
            ));
            if t.is_dir() {
                stack.push(p);
            }
        }
    }
    lines.sort();
    lines.join("\n")
}

/// One raw tar entry for hostile tars: names are written as given (the tar
/// crate's path setters refuse `..`).
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub data: &'a [u8],
    pub link: &'a [u8],
    pub mode: u32,
}

impl<'a> Raw<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            kind: tar::EntryType::Regular,
            data,
            link: b"",
            mode: 0o644,
        }
    }
    pub fn dir(name: &'a str) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            kind: tar::EntryType::Directory,
            data: b"",
            link: b"",
            mode: 0o755,
        }
    }
    pub fn symlink(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            kind: tar::EntryType::Symlink,
            data: b"",
            link: target.as_bytes(),
            mode: 0o777,
        }
    }
    pub fn hardlink(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            kind: tar::EntryType::Link,
            data: b"",
            link: target.as_bytes(),
            mode: 0o644,
        }
    }
}

/// Builds a tar of raw entries owned by `uid:gid`, mtime 1000.
pub fn raw_tar(entries: &[Raw<'_>], uid: u64, gid: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name.fill(0);
            old.name[..e.name.len()].copy_from_slice(e.name);
            old.linkname.fill(0);
            old.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1000);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The effective uid/gid of the test process.
pub fn me() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}
