//! `kiln-snapshot`: filesystem states as stacks of layer directories on
//! overlayfs, and the conversions between a layer directory and an OCI layer
//! tar.
//!
//! ## The model
//!
//! A filesystem state is an ordered list of *layers*, bottom → top. A layer
//! is a directory in overlayfs *upper dir* format: plain files and
//! directories, plus the overlay's two deletion markers, the *whiteout* (a
//! 0/0 character device: "the lower `x` is gone") and the *opaque
//! directory* (xattr `trusted.overlay.opaque=y`: "nothing below this
//! directory shows through"). This one format serves every purpose:
//!
//! - a `RUN` step runs on an overlay mount whose lower dirs are its parent's
//!   layers and whose upper dir is a fresh layer draft: when the process
//!   exits, the upper dir *is* the step's diff, computed by the kernel for
//!   free, with no tree walk and no comparison;
//! - a pulled image layer is unpacked from its tar into a layer dir, turning
//!   OCI `.wh.` whiteouts into overlay ones ([`unpack_layer`]), after which it
//!   stacks like any other;
//! - exporting turns a layer dir back into a deterministic OCI layer tar
//!   ([`write_layer_tar`]): byte-identical for identical trees, so layer
//!   digests are reproducible.
//!
//! There is no compression here (the `oci` crate does it) and no process
//! execution (the `executor` crate mounts its own overlay from the paths
//! this crate gives it).
//!
//! ## Modules
//!
//! - [`store`] — [`LayerStore`], the directory of committed layers with
//!   their [`LayerMeta`] and a label index; drafts are built under `tmp/` and
//!   published by one `rename(2)`.
//! - [`mount`] — [`private_mount_namespace`] and the unmounting
//!   [`MountGuard`].
//! - [`securejoin`] — [`resolve_in_root`], chroot-style path resolution in
//!   userspace (a port of cyphar/filepath-securejoin).
//! - [`export`] — [`write_layer_tar`].
//! - [`unpack`] — [`unpack_layer`] (image layers) and [`extract_archive`]
//!   (`ADD archive.tar`).
//! - [`listing`] — [`tar_listing`], a line per tar header, for tests and
//!   debugging.
//! - [`snapshotter`] — the [`Snapshotter`] trait: a layer stack shown at a
//!   target, its changes left in an upper dir; one module per
//!   implementation, found by name with [`snapshotter_named`]:
//! - [`overlay`] — [`Overlayfs`], overlay mounts (the kernel's diff,
//!   [`mount_overlay`]);
//! - [`native`] — [`Native`], the native snapshotter: layer stacks copied
//!   into a directory and diffed, where overlay cannot be mounted.
//! - [`inplace`] — the native snapshotter's trees in a directory that is no
//!   mount and keeps paths of its own (a container's root filesystem).
//!
//! ## Invariants
//!
//! - Nothing that reaches a tar depends on inode numbers, directory read
//!   order, atime, ctime or the host (host user names are never written).
//! - A committed layer is immutable and complete: it appears by a single
//!   rename after its content and metadata are on disk; every state file
//!   (meta, index) is replaced atomically (temp file, fsync, rename).
//! - Unpacking never writes outside its target directory, whatever the tar
//!   says: names are cleaned and escapes rejected, entries are never written
//!   through a symlink of a layer, and `ADD` resolves symlinks only inside
//!   its destination.
//! - Upper dirs stay portable diffs: overlay is always mounted with
//!   `index=off,redirect_dir=off,metacopy=off`.

mod atomic;
pub mod beneath;
pub mod exclusions;
pub mod export;
pub mod inplace;
pub mod listing;
pub mod mount;
mod named;
pub mod native;
pub mod overlay;
pub mod securejoin;
pub mod snapshotter;
pub mod store;
mod token;
pub mod unpack;
pub mod whiteout;

pub use exclusions::Exclusions;
pub use export::{ExportError, TarOptions, TarStats, write_layer_tar};
pub use inplace::{Checkout, InPlace};
pub use listing::{tar_listing, tar_listing_with_digests};
pub use mount::{
    Kept, MountError, MountGuard, has_cap_sys_admin, in_user_namespace, opaque_xattr,
    private_mount_namespace,
};
pub use named::snapshotter_named;
pub use native::{Native, copy_file_contents};
pub use overlay::{Overlayfs, mount_overlay, probe_overlay, probe_overlay_remembered};
pub use securejoin::{ResolveError, resolve_in_root};
pub use snapshotter::Snapshotter;
pub use store::{Layer, LayerDraft, LayerId, LayerMeta, LayerStore, StoreError};
pub use unpack::{ExtractOptions, UnpackError, UnpackStats, extract_archive, unpack_layer};
pub use whiteout::WhiteoutFormat;

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the layer store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From mounting.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// From path resolution.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// From writing a layer tar.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// From unpacking a tar.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
