//! The store's error: the typed errors of the stores it opens, and what
//! goes wrong with its own records.

use std::io;

use kiln_llb::Digest;
use kiln_snapshot::LayerId;

/// Everything that can go wrong in the state directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Content(#[from] kiln_oci::ContentError),
    #[error(transparent)]
    Index(#[from] kiln_oci::IndexError),
    #[error(transparent)]
    LayerBlobs(#[from] kiln_oci::LayerError),
    #[error(transparent)]
    Json(#[from] kiln_oci::JsonError),
    #[error(transparent)]
    Snapshots(#[from] kiln_snapshot::StoreError),
    #[error(transparent)]
    Unpack(#[from] kiln_snapshot::UnpackError),
    #[error(transparent)]
    LayerTar(#[from] kiln_snapshot::ExportError),
    /// The build cache (`<root>/cache`) could not be listed or changed
    /// (shown as the cache's message, without a cause of its own).
    #[error("{0}")]
    Cache(kiln_solver::CacheError),
    /// An image ID prefix names more than one image.
    #[error("{text}: ambiguous image ID prefix ({count} images start with it)")]
    AmbiguousId { text: String, count: usize },
    /// `rmi` by ID of an image with several names, without `force`.
    #[error(
        "conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
    )]
    MultipleNames { short: String },
    /// No blob of a layer is in the store, and no snapshot makes one.
    #[error(
        "layer {diff_id}: no blob of it is in the store and no snapshot to make one from; `kiln check` names the image to remove or pull again"
    )]
    NoBlob { diff_id: Digest },
    /// No blob of a layer is in the store, and kiln's tar of its unpacked
    /// snapshot is not the layer.
    #[error(
        "layer {diff_id}: no blob of it is in the store, and its unpacked snapshot does not make it again ({error}); `kiln check` names the image to remove or pull again"
    )]
    NotRemade { diff_id: Digest, error: Box<Error> },
    /// A layer of image `id` could not be exported.
    #[error("image {id}: {error}")]
    ImageLayer { id: Digest, error: Box<Error> },
    /// A layer to unpack has no blob in the content store.
    #[error("layer {diff_id}: no blob in the content store to unpack it from")]
    NothingToUnpack { diff_id: Digest },
    /// A blob unpacked to another diffID than its layer's.
    #[error("layer blob {blob} does not match its diffID: expected {expected}, got {actual}")]
    DiffIdMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    /// A snapshot's diffID label does not parse.
    #[error("layer {}: label {label}: {message}", layer.as_str())]
    BadLabel {
        layer: LayerId,
        label: &'static str,
        message: String,
    },
    /// Computing a diffID failed (maybe on another thread of this process,
    /// which keeps the message).
    #[error("{0}")]
    DiffId(String),
    /// `kiln check --repair` could not make a layer again.
    #[error("no snapshot of it makes the layer again; {rmi}")]
    Unrepairable { rmi: String },
    /// `kiln check --repair` could not unmount a leftover mount.
    #[error("unmounting {}: {source}", path.display())]
    Unmount {
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
    /// `kiln check --repair` could not kill a leftover process.
    #[error("killing process {pid}: {source}")]
    Kill {
        pid: i32,
        #[source]
        source: nix::Error,
    },
}
