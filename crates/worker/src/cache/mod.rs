//! Cache export and import (`--cache-to`, `--cache-from`): the solver's
//! cache records of one build, with their layer blobs, as an OCI artifact
//! that a local directory, any OCI registry or S3-compatible object storage
//! can hold.
//!
//! # Format (`kiln cache v1`)
//!
//! One OCI image manifest whose config has the media type
//! [`CONFIG_MEDIA_TYPE`] and whose layers are ordinary layer blobs (the very
//! blobs the build's images use, so the cache and the images share them in
//! a registry). The config is a table, not a graph:
//!
//! ```json
//! {"version":1,
//!  "layers":[{"diff_id":"sha256:…","blob":0}, …],
//!  "records":[{"key":"<solver key, hex>","layers":[0,3]}, …]}
//! ```
//!
//! A record says: the vertex with this cache key evaluates to the filesystem
//! made of these layers, bottom first (`blob` indexes the manifest's
//! layers). Keys already depend on their inputs' keys, so the table needs no
//! edges: it is a DAG by construction and needs none of the loop removal
//! BuildKit's cache export does. Records are sorted by key and layers
//! numbered in order of first use, so the same cache has the same digest.
//!
//! `mode=min` exports the records whose filesystem is a prefix of the
//! result's (the result's own steps and its base); `mode=max` every record
//! of the build, intermediate stages included.
//!
//! # Export merges on write
//!
//! An export writes the union of its records and those already at the
//! destination, bounded by `max-records` (least recently exported evicted
//! first, by the `age` each record carries); see `format::merge_previous` and
//! `export::write` for what can race (ARCHITECTURE.md has the
//! consistency model).
//!
//! # Import is lazy
//!
//! [`RecordingCache`] answers the solver's lookups from the local cache
//! first, then from the imported records; an imported hit is a value whose
//! layers are *diffIDs* ([`crate::LayerRef::Remote`], written `sha256:…`)
//! instead of snapshot ids. Nothing is
//! downloaded for it: only when a step after the last hit needs the
//! filesystem ([`crate::LlbWorker`]'s `layers_of`) or an output needs the
//! image are the blobs fetched and unpacked ([`materialize`]). A registry
//! import records the cache's repository as holding the blobs, so pushing
//! the result to the same registry mounts them instead of uploading.

//! # Layout
//!
//! - `format`: the config, its parsing, the merge (no I/O but the content
//!   store);
//! - `transport`: the [`Transport`] / [`Remote`] traits, one file per
//!   implementation (`local`, `registry`, `s3`), registered in `spec`;
//! - `spec`: the flags' syntax; `attrs`: its `k=v` splitter;
//! - `imported` and `lazy`: import and the lazy fetch; `export`: export and
//!   the merge on write; `inline`: `--cache-to type=inline`.

mod attrs;
pub mod error;
mod export;
mod format;
mod imported;
mod inline;
mod lazy;
mod local;
mod registry;
mod s3;
mod spec;
pub mod transport;

pub use error::CacheError;
pub use export::{ExportRequest, Exported, export};
pub use format::{CONFIG_MEDIA_TYPE, Merged};
pub use imported::{Imported, import};
pub use inline::InlineRecords;
pub use lazy::{RecordingCache, layer_available, materialize, restore_mount};
pub use spec::{CacheFrom, CacheTo, DEFAULT_MAX_RECORDS, Location, Mode};
pub use transport::{Remote, Transport};
