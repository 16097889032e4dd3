//! The state directory (`--root`): one place, one layout, opened once per
//! command.
//!
//! ```text
//! <root>/blobs/sha256/…      content store (kiln-oci): configs, manifests, layer blobs
//! <root>/images/             image names → image IDs (kiln-oci)
//! <root>/layerblobs/         diffID → compressed blobs (kiln-oci)
//! <root>/snapshots/          layer directories (kiln-snapshot)
//! <root>/cache/              solver cache: cache key → value (kiln-solver)
//! <root>/image-layers/       image ID → the snapshot layers it was built from
//! <root>/image-records/      image ID → {}: the images in the store, named or dangling (images.rs)
//! <root>/attestations/       image ID → the attestation index stored with it (attestations.rs)
//! <root>/lock                flock: shared by builds/imports/loads, exclusive by prune (lock.rs)
//! <root>/context/            stat caches of build contexts (kiln-context)
//! <root>/distribution/       blob → registry repositories holding it (push mount hints)
//! <root>/tmp/                mount points and scratch space of running builds
//! <root>/cache-mounts/       RUN --mount=type=cache directories, by key (cache_mounts.rs; kiln-worker mounts them)
//! ```
//!
//! Every write below the root is atomic (the stores write a temporary file in
//! the same directory, fsync it and rename it; this crate's own records go
//! through the same helper, [`kiln_oci::write_atomic`]), so a crash leaves the
//! old or the new state, never a torn one.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use kiln_llb::Digest;
use kiln_oci::{ContentStore, ImageIndex, LayerBlobs};
use kiln_snapshot::{LayerId, LayerStore, Overlayfs, Snapshotter, WhiteoutFormat};
use kiln_solver::DirCache;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The opened stores of a state directory.
#[derive(Debug, Clone)]
pub struct State {
    pub root: PathBuf,
    pub content: ContentStore,
    pub images: ImageIndex,
    pub layer_blobs: LayerBlobs,
    pub layers: LayerStore,
    pub cache: std::sync::Arc<DirCache>,
    /// diffIDs being computed by this process (shared by its clones).
    pub diff_ids: std::sync::Arc<DiffIdCells>,
    /// What shows the layers as trees: overlayfs when opened; the binary
    /// sets its choice (`--snapshotter`) before a build.
    pub snapshotter: Arc<dyn Snapshotter>,
    /// How layers unpacked by this process record deletions: whiteout
    /// devices when opened; the binary sets whiteout files where devices
    /// cannot be made (`kiln_snapshot::whiteout`), before anything writes
    /// a layer, and makes its snapshotter with the same value.
    pub whiteouts: WhiteoutFormat,
}

/// The directory of image records (see [`crate::images`]).
pub const RECORDS_DIR: &str = "image-records";

/// diffIDs being computed in this process, one cell per layer and clamp,
/// so that the prefetch started when a layer is committed
/// ([`crate::layers::prefetch_diff_id`]) and the export that needs the
/// diffID compute it once: the second caller waits for the first.
#[derive(Debug, Default)]
pub struct DiffIdCells {
    cells: Mutex<HashMap<DiffIdKey, Arc<DiffIdCell>>>,
}

/// A layer and the mtime clamp of its tar.
type DiffIdKey = (LayerId, Option<i64>);
/// The diffID of one layer and clamp, or why computing it failed.
pub(crate) type DiffIdCell = OnceLock<Result<Digest, String>>;

impl DiffIdCells {
    /// The cell of `layer` with `clamp`, made on first use.
    pub(crate) fn cell(&self, layer: &LayerId, clamp: Option<i64>) -> Arc<DiffIdCell> {
        let mut cells = self
            .cells
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cells.entry((layer.clone(), clamp)).or_default().clone()
    }
}

/// The snapshot layers an image was made of, so that `FROM` a local image
/// reuses them instead of unpacking blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageLayers {
    layers: Vec<String>,
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

impl State {
    /// Opens (creating as needed) the state directory at `root`.
    pub fn open(root: &Path) -> Result<State, Error> {
        fs::create_dir_all(root).map_err(io("creating state directory", root))?;
        for sub in ["tmp", "image-layers", "context", RECORDS_DIR] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(io("creating", &d))?;
        }
        remove_stale_scratch(&root.join("tmp"));
        Ok(State {
            root: root.to_path_buf(),
            content: ContentStore::open(root.join("blobs"))?,
            images: ImageIndex::open(root.join("images"))?,
            layer_blobs: LayerBlobs::open(root.join("layerblobs"))?,
            layers: LayerStore::open(root.join("snapshots"))?,
            cache: std::sync::Arc::new(DirCache::open(root.join("cache")).map_err(|e| {
                Error::Io {
                    what: "opening the cache".to_owned(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?),
            diff_ids: Default::default(),
            snapshotter: Arc::new(Overlayfs),
            whiteouts: WhiteoutFormat::Device,
        })
    }

    /// Host paths of the diff directories of `layers`, bottom first (the
    /// lower dirs of an overlay mount of them).
    pub fn layer_dirs(&self, layers: &[LayerId]) -> Result<Vec<PathBuf>, Error> {
        layers
            .iter()
            .map(|id| Ok(self.layers.get(id)?.diff))
            .collect()
    }

    /// A fresh scratch directory under `<root>/tmp`, removed when dropped.
    /// Its name starts with `k<pid>.`, so that one left by a process that
    /// was killed can be told from those of running builds.
    pub fn scratch(&self) -> Result<tempfile::TempDir, Error> {
        let tmp = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(&format!("k{}.", std::process::id()))
            .tempdir_in(&tmp)
            .map_err(io("creating a scratch directory in", &tmp))
    }

    /// Where the stat cache of the build context at `dir` lives (the host path
    /// names the file; it never enters a cache key).
    pub fn context_cache(&self, dir: &Path) -> PathBuf {
        let abs = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let name = Digest::of(abs.as_os_str().as_encoded_bytes()).hex();
        self.root.join("context").join(format!("{name}.json"))
    }

    /// Records which snapshot layers image `id` is made of.
    pub fn set_image_layers(&self, id: &Digest, layers: &[LayerId]) -> Result<(), Error> {
        let path = self.root.join("image-layers").join(id.hex());
        let body = serde_json::to_vec(&ImageLayers {
            layers: layers.iter().map(|l| l.as_str().to_owned()).collect(),
        })
        .map_err(|e| Error::Io {
            what: "encoding image layers".to_owned(),
            source: std::io::Error::other(e),
        })?;
        // A rebuild commits the same image again: nothing to write.
        if fs::read(&path).is_ok_and(|old| old == body) {
            return Ok(());
        }
        // An image outlives a crash of the machine: its layers are flushed
        // (one syncfs for all the build's layers) before the record names
        // them (kiln_snapshot's "Durability").
        self.layers.sync_layers(layers)?;
        write_atomic(&path, &body)
    }

    /// The snapshot layers of image `id`, if they were recorded and all still
    /// exist.
    pub fn image_layers(&self, id: &Digest) -> Option<Vec<LayerId>> {
        let path = self.root.join("image-layers").join(id.hex());
        let body = fs::read(path).ok()?;
        let rec: ImageLayers = serde_json::from_slice(&body).ok()?;
        let mut out = Vec::with_capacity(rec.layers.len());
        for l in rec.layers {
            let id = LayerId::parse(&l).ok()?;
            if !self.layers.exists(&id) {
                return None;
            }
            out.push(id);
        }
        Some(out)
    }
}

/// The pid of the kiln process a scratch directory name (`k<pid>.…`, see
/// [`State::scratch`]) belongs to.
pub fn scratch_owner(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix('k')?.split_once('.')?;
    pid.parse().ok()
}

/// Removes the scratch directories of processes that are gone (killed
/// builds). Their mounts died with their mount namespaces, so what is left is
/// plain directories and small files. Best effort: an error leaves the
/// directory for the next time.
fn remove_stale_scratch(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(scratch_owner) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Writes `value` as JSON to `path` atomically, creating its directory,
/// as durably as `durability` says ([`kiln_oci::Durability`]).
pub fn write_json<T: Serialize>(
    path: &Path,
    value: &T,
    durability: kiln_oci::Durability,
) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let body = serde_json::to_vec(value).map_err(|e| Error::Io {
        what: format!("encoding {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    kiln_oci::write_atomic_with(path, &body, durability).map_err(io("writing", path))
}

/// Writes `body` to `path` atomically (temp file in the same directory,
/// fsync, rename, fsync of the directory: [`kiln_oci::write_atomic`]).
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), Error> {
    kiln_oci::write_atomic(path, body).map_err(io("writing", path))
}
