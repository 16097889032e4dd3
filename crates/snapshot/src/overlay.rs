//! The overlayfs snapshotter ([`Overlayfs`]): a layer stack is an overlay
//! mount whose upper dir the kernel fills with the changes
//! ([`mount_overlay`]), and [`probe_overlay`] says whether overlay can be
//! mounted here at all.
//!
//! ## Overlay options
//!
//! Every overlay mount passes `index=off,redirect_dir=off,metacopy=off`
//! whatever the kernel's or the module's defaults: with these, an upper dir
//! holds only plain files, directories, whiteouts (0/0 character devices)
//! and opaque markers (`trusted.overlay.opaque=y`), which is exactly what
//! [`crate::write_layer_tar`] turns into an OCI layer. (With `redirect_dir`
//! a renamed directory would be a redirect xattr pointing into a lower
//! layer; with `metacopy` a chmod would copy up metadata only; both make the
//! upper meaningless without its lowers.) In a user namespace (rootless
//! mode, [`in_user_namespace`]) every overlay also gets `userxattr` (kernel
//! ≥ 5.11): overlay then keeps its markers in `user.overlay.*` xattrs, which
//! an unprivileged process may write, the unpacker writes too
//! ([`crate::mount::opaque_xattr`]) and the tar writer understands.
//!
//! ## How many layers
//!
//! `mount(2)` copies at most one page of option data, so the legacy mount
//! can name about `(PAGE_SIZE - len(upperdir, workdir, options)) /
//! (len(<store>/<id>/diff) + 1)` lower dirs: with a store at
//! `/var/lib/kiln/snapshots` (40 bytes per lower) about 100 layers. Beyond
//! that, [`mount_overlay`] falls back to the new mount API (`fsopen` +
//! `fsconfig("lowerdir+")`, Linux ≥ 6.8), which passes each lower dir
//! separately (each path at most 255 bytes) and so is limited only by
//! overlay's own maximum stack depth, [`MAX_OVERLAY_LAYERS`]. On older
//! kernels the fallback fails with [`MountError::TooManyLayers`], naming the
//! count.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

use crate::mount::{
    MAX_OVERLAY_LAYERS, MountError, MountGuard, in_user_namespace, kernel_message,
    mount_without_overlay,
};
use crate::snapshotter::Snapshotter;

/// Overlay mounts: the kernel records each step's diff.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overlayfs;

impl Snapshotter for Overlayfs {
    fn name(&self) -> &'static str {
        "overlayfs"
    }

    fn mount(
        &self,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
    ) -> Result<MountGuard, MountError> {
        mount_overlay(lowers, upper, target)
    }
}

/// The options kiln always passes to overlay (see the module docs).
pub const OVERLAY_FIXED_OPTIONS: [(&str, &str); 3] = [
    ("index", "off"),
    ("redirect_dir", "off"),
    ("metacopy", "off"),
];
/// Mounts a tiny overlay (one lower, an upper, a work dir) under `scratch`
/// and unmounts it: whether overlay can be used here, as this process is
/// (rootless mode checks it once, before a build).
pub fn probe_overlay(scratch: &Path) -> Result<(), MountError> {
    let dir = tempfile::Builder::new()
        .prefix("overlay-probe-")
        .tempdir_in(scratch)
        .map_err(|source| MountError::EmptyDir {
            target: scratch.to_path_buf(),
            source,
        })?;
    let sub = |n: &str| {
        let p = dir.path().join(n);
        std::fs::create_dir(&p).map(|()| p)
    };
    let made =
        (|| Ok::<_, io::Error>((sub("lower")?, sub("upper")?, sub("work")?, sub("merged")?)))();
    let (lower, upper, work, merged) = made.map_err(|source| MountError::EmptyDir {
        target: dir.path().to_path_buf(),
        source,
    })?;
    let guard = mount_overlay(&[lower], Some((&upper, &work)), &merged)?;
    guard.unmount()
}

/// [`probe_overlay`], remembered in the file `record` (of the state
/// directory) for this kernel release, user namespace or not, and the
/// filesystem `scratch` is on: a build that finds the same three there does
/// not mount and unmount a probe again (the unmount alone took 1–110 ms of
/// every no-op build under load). A failed probe forgets the record.
pub fn probe_overlay_remembered(scratch: &Path, record: &Path) -> Result<(), MountError> {
    use std::os::unix::fs::MetadataExt as _;
    let key = std::fs::metadata(scratch).ok().map(|m| {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "overlay ok: kernel {release}, user namespace {}, filesystem {}\n",
            in_user_namespace(),
            m.dev()
        )
    });
    if let Some(k) = &key
        && std::fs::read_to_string(record).ok().as_deref() == Some(k.as_str())
    {
        return Ok(());
    }
    match probe_overlay(scratch) {
        Ok(()) => {
            if let Some(k) = key {
                // Only an optimisation: a record that cannot be written
                // means the next build probes again.
                let _ = crate::atomic::write_replacing(record, k.as_bytes(), false);
            }
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(record);
            Err(e)
        }
    }
}

/// [`OVERLAY_FIXED_OPTIONS`], except in a user namespace: there
/// `redirect_dir=nofollow`, since `userxattr` refuses `off` (which the
/// kernel reads as `follow` when `redirect_always_follow` is set); redirects
/// are neither created nor followed, so uppers stay plain diffs all the same.
fn overlay_fixed_options() -> [(&'static str, &'static str); 3] {
    if in_user_namespace() {
        [
            ("index", "off"),
            ("redirect_dir", "nofollow"),
            ("metacopy", "off"),
        ]
    } else {
        OVERLAY_FIXED_OPTIONS
    }
}
/// Mounts the layer stack `lowers` (bottom → top), optionally with a
/// writable `upper` = `(upper dir, work dir)`, on `target`:
///
/// - lowers + upper: overlay (with no lowers, an empty temporary lower dir,
///   since overlay needs one);
/// - no upper, 0 lowers: an empty read-only tmpfs;
/// - no upper, 1 lower: a read-only bind mount of it;
/// - no upper, ≥ 2 lowers: a read-only overlay of lower dirs only.
///
/// Overlay always gets the options of the module docs. The returned guard
/// unmounts on drop. Needs `CAP_SYS_ADMIN`.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<MountGuard, MountError> {
    if upper.is_none()
        && let Some(mounted) = mount_without_overlay(lowers, target)
    {
        return mounted;
    }
    let mut empty = None;
    let mut lower_paths: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    if lower_paths.is_empty() {
        let dir = tempfile::Builder::new()
            .prefix("kiln-empty-lower-")
            .tempdir()
            .map_err(|source| MountError::EmptyDir {
                target: target.to_path_buf(),
                source,
            })?;
        empty = Some(dir);
    }
    if let Some(dir) = &empty {
        lower_paths.push(dir.path());
    }
    mount_overlayfs(&lower_paths, upper, target)?;
    Ok(MountGuard::mounted(target, empty))
}

/// Escapes a path for overlay's legacy option parser: `\`, `,` and `:` are
/// backslash-escaped.
fn escape_option_path(out: &mut Vec<u8>, p: &Path) {
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The `mount(2)` option string for an overlay of `lowers` (bottom → top).
pub(crate) fn overlay_options(lowers: &[&Path], upper: Option<(&Path, &Path)>) -> Vec<u8> {
    let mut opts = b"lowerdir=".to_vec();
    for (i, l) in lowers.iter().rev().enumerate() {
        if i > 0 {
            opts.push(b':');
        }
        escape_option_path(&mut opts, l);
    }
    if let Some((up, work)) = upper {
        opts.extend_from_slice(b",upperdir=");
        escape_option_path(&mut opts, up);
        opts.extend_from_slice(b",workdir=");
        escape_option_path(&mut opts, work);
    }
    for (k, v) in overlay_fixed_options() {
        opts.push(b',');
        opts.extend_from_slice(k.as_bytes());
        opts.push(b'=');
        opts.extend_from_slice(v.as_bytes());
    }
    if in_user_namespace() {
        opts.extend_from_slice(b",userxattr");
    }
    opts
}

fn page_size() -> usize {
    rustix::param::page_size()
}

fn mount_overlayfs(
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), MountError> {
    if lowers.len() > MAX_OVERLAY_LAYERS {
        return Err(MountError::StackTooDeep {
            target: target.to_path_buf(),
            count: lowers.len(),
        });
    }
    let all_paths = lowers
        .iter()
        .copied()
        .chain(upper.into_iter().flat_map(|(u, w)| [u, w]));
    for p in all_paths {
        if p.as_os_str().as_bytes().contains(&0) {
            return Err(MountError::BadPath {
                target: target.to_path_buf(),
                path: p.to_path_buf(),
                why: "contains a NUL byte",
            });
        }
    }
    let opts = overlay_options(lowers, upper);
    let flags = if upper.is_none() {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let max = page_size() - 1;
    if opts.len() <= max {
        return nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(OsStr::from_bytes(&opts)),
        )
        .map_err(|e| MountError::Mount {
            kind: "overlay",
            target: target.to_path_buf(),
            op: "mount",
            source: e.into(),
            detail: String::new(),
        });
    }
    mount_overlay_fsconfig(lowers, upper, target).map_err(|e| match e {
        FsconfigError::Unsupported(source) => MountError::TooManyLayers {
            target: target.to_path_buf(),
            count: lowers.len(),
            len: opts.len(),
            max,
            source,
        },
        FsconfigError::Other(e) => e,
    })
}

enum FsconfigError {
    /// The kernel has no `lowerdir+` (or no fsopen at all).
    Unsupported(io::Error),
    Other(MountError),
}

/// Mounts an overlay with the new mount API, one `fsconfig("lowerdir+")`
/// call per lower dir (Linux ≥ 6.8).
fn mount_overlay_fsconfig(
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), FsconfigError> {
    let fail = |op: &'static str, fd: Option<&rustix::fd::OwnedFd>, e: rustix::io::Errno| {
        FsconfigError::Other(MountError::Mount {
            kind: "overlay",
            target: target.to_path_buf(),
            op,
            source: e.into(),
            detail: fd.map(read_fs_messages).unwrap_or_default(),
        })
    };
    let check = |p: &Path| {
        if p.as_os_str().len() > 255 {
            Err(FsconfigError::Other(MountError::BadPath {
                target: target.to_path_buf(),
                path: p.to_path_buf(),
                why: "longer than the 255 bytes fsconfig accepts",
            }))
        } else {
            Ok(())
        }
    };
    let fd = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| FsconfigError::Unsupported(e.into()))?;
    // lowerdir+ appends, topmost first, like the colon-separated list.
    for (i, l) in lowers.iter().rev().enumerate() {
        check(l)?;
        if let Err(e) = rustix::mount::fsconfig_set_string(&fd, "lowerdir+", *l) {
            if i == 0 && e == rustix::io::Errno::INVAL {
                return Err(FsconfigError::Unsupported(io::Error::other(format!(
                    "fsconfig(lowerdir+): {e}{}",
                    kernel_message(&read_fs_messages(&fd))
                ))));
            }
            return Err(fail("fsconfig(lowerdir+)", Some(&fd), e));
        }
    }
    if let Some((up, work)) = upper {
        check(up)?;
        check(work)?;
        rustix::mount::fsconfig_set_string(&fd, "upperdir", up)
            .map_err(|e| fail("fsconfig(upperdir)", Some(&fd), e))?;
        rustix::mount::fsconfig_set_string(&fd, "workdir", work)
            .map_err(|e| fail("fsconfig(workdir)", Some(&fd), e))?;
    }
    for (k, v) in overlay_fixed_options() {
        rustix::mount::fsconfig_set_string(&fd, k, v)
            .map_err(|e| fail("fsconfig(options)", Some(&fd), e))?;
    }
    if in_user_namespace() {
        rustix::mount::fsconfig_set_flag(&fd, "userxattr")
            .map_err(|e| fail("fsconfig(userxattr)", Some(&fd), e))?;
    }
    rustix::mount::fsconfig_create(&fd).map_err(|e| fail("fsconfig(create)", Some(&fd), e))?;
    let attrs = if upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rustix::mount::fsmount(&fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| fail("fsmount", Some(&fd), e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", None, e))
}

/// The messages the kernel logged on an fs context (`e overlay: …` lines).
fn read_fs_messages(fd: &rustix::fd::OwnedFd) -> String {
    let Ok(dup) = fd.try_clone() else {
        return String::new();
    };
    let mut file = std::fs::File::from(dup);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA when there are no more.
    for _ in 0..16 {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !out.is_empty() {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_list_the_top_layer_first_and_escape_separators() {
        let a = Path::new("/s/aaa/diff");
        let b = Path::new("/s/b:b,b\\/diff");
        let opts = overlay_options(&[a, b], Some((Path::new("/u"), Path::new("/w"))));
        let (redirect, userxattr) = if in_user_namespace() {
            ("nofollow", ",userxattr")
        } else {
            ("off", "")
        };
        assert_eq!(
            String::from_utf8(opts).unwrap(),
            format!(
                "lowerdir=/s/b\\:b\\,b\\\\/diff:/s/aaa/diff,upperdir=/u,workdir=/w,index=off,redirect_dir={redirect},metacopy=off{userxattr}"
            )
        );
    }
}
