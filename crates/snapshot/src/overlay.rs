//! The overlayfs snapshotter: a layer stack is an overlay mount whose upper
//! dir the kernel fills with the changes ([`mount_overlay`], whose options
//! are in [`crate::mount`]'s docs).

use std::path::{Path, PathBuf};

use crate::mount::{MountError, MountGuard, mount_overlay};
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
