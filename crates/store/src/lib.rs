//! `kiln-store`: the state directory (`--root`) and what it holds, below the
//! worker.
//!
//! The system crates each own one store of the state directory (kiln-oci the
//! content store, the image index and the layer-blob records; kiln-snapshot the
//! snapshots; kiln-solver the build cache). This crate opens them together
//! ([`State`], whose module documents the layout) and keeps the records that
//! tie them together:
//!
//! * the state directory's lock ([`lock`]): builds share it, `prune` holds it
//!   exclusively;
//! * the images in the store ([`images`]: records, names, `rmi`) and the
//!   attestations stored with them ([`attestations`]);
//! * the layers of images ([`layers`]: configurations, unpacking, diffIDs) and
//!   their blobs ([`blobs`]: which blob a layer exports with, sizes);
//! * garbage collection and `kiln du` ([`gc`]), `kiln check` ([`check`]), and
//!   the listing of cache mounts ([`cache_mounts`]).
//!
//! What the build cache's values are is kiln-worker's business; garbage
//! collection and check ask the worker through [`CacheValues`].
//!
//! Architecture invariant: this crate knows neither Dockerfiles, the graph
//! IR's ops nor the worker (`.ci/check-deps`); it never prints and never
//! reads the process environment.

pub mod attestations;
pub mod blobs;
pub mod cache_mounts;
pub mod check;
mod error;
pub mod gc;
pub mod images;
pub mod layers;
pub mod lock;
pub mod state;
pub mod values;

pub use error::Error;
pub use state::State;
pub use values::CacheValues;
