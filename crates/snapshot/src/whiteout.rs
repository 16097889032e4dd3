//! Whiteouts in a layer dir: overlay's 0/0 character device, or kiln's
//! *whiteout file* where no such device can be made; and the other overlay
//! markers every reader of a layer dir tells apart ([`is_opaque`],
//! [`is_overlay_xattr`]).
//!
//! A layer records "the lower `x` is gone" as overlay does, with a 0/0
//! character device `x`. Making one needs `mknod`, which some hosts refuse:
//! a user namespace before Linux 5.8, and a state directory on overlayfs
//! (kiln in a container whose root is an overlay), which never lets a
//! whiteout device be created through it. There kiln writes a *whiteout
//! file* instead: an empty regular file of mode 0 with the xattr
//! `user.kiln.whiteout=y` ([`WhiteoutFormat::File`]). The tar writer, the
//! unpacker and the native snapshotter read both forms; overlay reads only
//! devices (it would show a whiteout file as an empty file), so the file
//! form is only ever chosen together with the native snapshotter, and a
//! layer store that has had it is marked
//! ([`crate::LayerStore::has_whiteout_files`]) so that overlay is never used
//! on it again.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag};

/// The xattr of a whiteout file.
pub const WHITEOUT_FILE_XATTR: &str = "user.kiln.whiteout";

/// How a tree's deletions are written: a value, chosen once by the binary
/// for its state directory (`kiln_store::State::whiteouts`) and carried by
/// what writes whiteouts — the unpacker ([`crate::unpack_layer`]), the
/// native snapshotter ([`crate::Native`], whose
/// [`Snapshotter::whiteouts`](crate::Snapshotter::whiteouts) the executor
/// sends to its RUN helper) and [`crate::InPlace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhiteoutFormat {
    /// 0/0 character devices (overlay's own).
    #[default]
    Device,
    /// Whiteout files (see the module docs): native snapshotter only.
    File,
}

/// Makes a whiteout at `path` (which must not exist), in `format`.
pub fn make_whiteout(path: &Path, format: WhiteoutFormat) -> io::Result<()> {
    match format {
        WhiteoutFormat::Device => {
            nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
        }
        WhiteoutFormat::File => {
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o000)
                .open(path)?;
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
            xattr::set(path, WHITEOUT_FILE_XATTR, b"y")
        }
    }
}

/// Whether the entry `path` of a layer dir, whose metadata is `m`, is a
/// whiteout (either form).
pub fn is_whiteout(path: &Path, m: &Metadata) -> bool {
    let ft = m.file_type();
    if ft.is_char_device() {
        return m.rdev() == 0;
    }
    ft.is_file()
        && m.len() == 0
        && m.mode() & 0o7777 == 0
        && matches!(xattr::get(path, WHITEOUT_FILE_XATTR), Ok(Some(v)) if v == b"y")
}

/// Whether directory `dir` of a layer is opaque: its overlay opaque xattr
/// (`trusted.overlay.opaque` as root, `user.overlay.opaque` in a user
/// namespace) is `y`.
pub fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|k| matches!(xattr::get(dir, k), Ok(Some(v)) if v == b"y"))
}

/// Whether xattr `name` is one of overlay's own (`trusted.overlay.*`,
/// `user.overlay.*`): layer bookkeeping, never part of a file's content.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Whether this process may make whiteout devices on the filesystem of
/// `scratch`: a device is made there and removed. `Ok(false)` when `mknod`
/// is refused (`EPERM`, `EOPNOTSUPP`); other failures are errors.
pub fn whiteout_devices_allowed(scratch: &Path) -> io::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("whiteout-probe-")
        .tempdir_in(scratch)?;
    match make_whiteout(&dir.path().join("w"), WhiteoutFormat::Device) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => Ok(false),
        Err(e) => Err(e),
    }
}
