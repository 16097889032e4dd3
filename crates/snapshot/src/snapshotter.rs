//! The [`Snapshotter`] trait: how a stack of layer directories becomes a
//! tree at a target, and how a writable tree's changes become an upper dir
//! (containerd's snapshotter interface, in kiln's terms). One module per
//! implementation: [`crate::overlay`] (overlayfs, the kernel's diff) and
//! [`crate::native`] (copies diffed on unmount, where overlay cannot be
//! mounted); [`crate::snapshotter_named`] finds one by its name.
//!
//! Whatever the implementation, the upper dir holds the changes in overlay's
//! upper-dir format once the guard is [unmounted](MountGuard::unmount), so
//! the same build gives the same layers on any of them.

use std::path::{Path, PathBuf};

use crate::mount::{MountError, MountGuard};
use crate::whiteout::WhiteoutFormat;

/// One way of making layer stacks into trees (see the module docs). Chosen
/// by the binary and passed as a value (`Arc<dyn Snapshotter>`) to what
/// mounts; a process that runs a step for another one (the RUN helper) is
/// told its [`name`](Snapshotter::name).
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// The name `--snapshotter` and the RUN helper's request spell it with
    /// (`overlayfs`, `native`, `native-unmounted`).
    fn name(&self) -> &'static str;

    /// Shows the layer stack `lowers` (bottom → top) at `target`,
    /// optionally writable with `upper` = `(upper dir, work dir)`. The
    /// guard's [`unmount`](MountGuard::unmount) leaves the changes in the
    /// upper dir.
    fn mount(
        &self,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
    ) -> Result<MountGuard, MountError>;

    /// [`mount`](Snapshotter::mount) of a writable tree whose upper dir
    /// becomes a layer of the store, where the snapshotter may take the tree
    /// from `views` (a scratch directory of this build, on the target's
    /// filesystem) when an earlier mount left it there for this stack, and
    /// leave its own there on unmount. By default, a plain mount.
    fn mount_reusing(
        &self,
        lowers: &[PathBuf],
        upper: (&Path, &Path),
        target: &Path,
        views: &Path,
    ) -> Result<MountGuard, MountError> {
        let _ = views;
        self.mount(lowers, Some(upper), target)
    }

    /// Whether [`mount_reusing`](Snapshotter::mount_reusing) keeps trees in
    /// its views directory: only then does a build make one.
    fn keeps_trees(&self) -> bool {
        false
    }

    /// How the upper dirs it writes record deletions (overlay: devices,
    /// the kernel's). A process told this snapshotter's name (the RUN
    /// helper) is told this too, for
    /// [`snapshotter_named`](crate::snapshotter_named).
    fn whiteouts(&self) -> WhiteoutFormat {
        WhiteoutFormat::Device
    }
}
