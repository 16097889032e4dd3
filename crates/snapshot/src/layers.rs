//! Which snapshotter mounts a layer stack: overlayfs, or the native
//! snapshotter's trees (chosen once per process, `native::snapshotter`).

use std::path::{Path, PathBuf};

use crate::mount::{MountError, MountGuard, mount_overlay};
use crate::native;
use crate::whiteout::whiteout_format;

/// Mounts the layer stack `lowers` (bottom → top), optionally with a
/// writable `upper` = `(upper dir, work dir)`, on `target`, with this
/// process's [`crate::snapshotter`]: [`mount_overlay`], or the native
/// snapshotter's copies (see [`crate::native`]). Either way the upper dir
/// holds the changes once the guard is [unmounted](MountGuard::unmount).
pub fn mount_layers(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<MountGuard, MountError> {
    match native::snapshotter() {
        native::Snapshotter::Overlayfs => mount_overlay(lowers, upper, target),
        native::Snapshotter::Native => {
            native::mount(lowers, upper, target, whiteout_format(), None)
        }
        native::Snapshotter::NativeUnmounted => {
            native::unmounted(lowers, upper, target, whiteout_format(), None)
        }
    }
}

/// [`mount_layers`] of a writable mount whose upper dir becomes a layer of
/// the store: with the native snapshotter, the tree is taken from `views`
/// (a scratch directory of this build) when the previous step left it
/// there, and left there for the next step on unmount (see
/// [`native::Kept`]). `views` must be on the target's filesystem.
pub fn mount_layers_reusing(
    lowers: &[PathBuf],
    upper: (&Path, &Path),
    target: &Path,
    views: &Path,
) -> Result<MountGuard, MountError> {
    match native::snapshotter() {
        native::Snapshotter::Overlayfs => mount_overlay(lowers, Some(upper), target),
        native::Snapshotter::Native => {
            native::mount(lowers, Some(upper), target, whiteout_format(), Some(views))
        }
        native::Snapshotter::NativeUnmounted => {
            native::unmounted(lowers, Some(upper), target, whiteout_format(), Some(views))
        }
    }
}
