//! `kiln-oci`: everything kiln knows about images as data — the content store,
//! the image model, the local image index, layer compression, and the OCI and
//! Docker archive formats.
//!
//! # Where it sits
//!
//! kiln's state directory (`--root`, e.g. `/var/lib/kiln`) holds, among the
//! directories of other crates:
//!
//! ```text
//! blobs/        ContentStore: blobs by digest (configs, manifests, layer blobs)
//! images/       ImageIndex:   image name → image ID (+ manifest)
//! layerblobs/   LayerBlobs:   layer diffID → its compressed blobs and unpacked size
//! ```
//!
//! A build produces layers as directories (another crate turns them into tars).
//! At the end the worker computes each layer's diffID, writes an
//! [`ImageConfigFile`] into the store and names it in the [`ImageIndex`]; the
//! image ID is the config digest, as in Docker. Compressed layer blobs are made
//! lazily, once per (diffID, compression), when an export or a push needs them
//! ([`LayerBlobs::get_or_compress`]), then reused. An export assembles a
//! manifest ([`write_image`]) and writes an OCI layout, an OCI archive or a
//! `docker load` archive ([`write_oci_layout`], [`write_oci_archive`],
//! [`write_docker_archive`]) from the store.
//!
//! # Invariants
//!
//! - **A blob under a digest has that digest.** Blobs reach `blobs/sha256/` only
//!   by rename after being written, fsynced and hashed; a mismatch with the
//!   expected digest stores nothing ([`content`]).
//! - **Every state write is atomic and every read-modify-write is locked.**
//!   Temp file in the same directory + fsync + rename + directory fsync; an
//!   exclusive `flock` on the directory around changes of the image index, the
//!   layer-blob map and OCI layouts ([`atomic`]). Concurrent kiln processes do
//!   not lose each other's updates; a crash leaves the old or the new file.
//! - **Same input, same bytes.** Everything that ends up in a digest is
//!   canonical: JSON with sorted keys and no whitespace ([`to_canonical_json`]),
//!   gzip with a fixed header, archives with sorted entries and fixed
//!   metadata. No timestamps, inode numbers or host paths: times are passed in
//!   by the caller ([`rfc3339`]), never read from the clock.
//! - **Streams, not buffers.** Layers are compressed, ingested and exported in
//!   one streaming pass; only small JSON documents are read into memory
//!   ([`ContentStore::read`] refuses large blobs).
//! - **Pulled data is input.** Configs, manifests and indexes from elsewhere are
//!   parsed tolerantly (unknown fields ignored, `null` as empty) and every
//!   failure is an error naming the blob or file, never a panic.
//!
//! # Shape
//!
//! The image model is kiln's own serde structs rather than `oci-spec`: they
//! carry Docker's extensions (Healthcheck, OnBuild, Shell, ArgsEscaped) with
//! Docker's names and omission rules, use sorted maps, and tolerate what Go
//! writes (`null` slices). Only `kiln_llb::Digest` (sha256 only) and
//! `kiln_llb::Platform` are shared with the graph crate.
//!
//! Each module has its own error type; [`Error`] gathers them for callers that
//! do not care which part failed.

pub mod archive_load;
mod atomic;
pub mod compression;
pub mod config;
pub mod content;
pub mod export;
mod gojson;
pub mod hashing;
pub mod image;
pub mod index;
pub mod json;
pub mod layer;
mod literals;
pub mod manifest;
pub mod media;
pub mod pgzip;
pub mod tarsize;
pub mod timestamp;

pub use archive_load::{LoadError, LoadedImage, LoadedLayer, load_archive, load_layout_image};
/// The one atomic-write helper of kiln's state directory (the store's
/// records use it too, through `kiln-store`).
pub use atomic::{Durability, temp_owner, write_atomic, write_atomic_with};
pub use compression::{Compression, CompressionError, Encoder, Format, decompress, detect};
pub use config::{Healthcheck, History, ImageConfigFile, RootFs, RuntimeConfig};
pub use content::{BlobInfo, BlobWriter, ContentError, ContentStore};
pub use export::{
    ExportError, ExportImage, write_docker_archive, write_oci_archive, write_oci_layout,
};
pub use hashing::{HashingReader, HashingWriter};
pub use image::{ImageError, WrittenImage, write_image};
pub use index::{ImageIndex, ImageRef, IndexError, Locked};
pub use json::{JsonError, canonicalize, to_canonical_json};
pub use layer::{LayerBlob, LayerBlobs, LayerError, compress_layer, ingest_layer, verify_blob};
pub use manifest::{Descriptor, Index, Manifest};
pub use media::MediaTypes;
pub use tarsize::UnpackedSize;
pub use timestamp::{TimeError, rfc3339};

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error(transparent)]
    Load(#[from] LoadError),
}
