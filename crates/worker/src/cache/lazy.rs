//! Lazy import: the solver's cache store answers from the imported records
//! with diffIDs instead of snapshots, and a layer's blob is fetched through
//! its transport only when a step or an output needs it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_llb::Digest;
use kiln_snapshot::LayerId;
use kiln_solver::{CacheError, CacheStore, DirCache, Key};

use super::imported::Imported;
use crate::error::Error;
use crate::state::State;
use crate::value::{LayerRef, Value};
use kiln_store::layers as image;

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

/// The cache store of a build: the local cache, then the imported records;
/// remembers every record the solve looked up or stored, for the export.
pub struct RecordingCache {
    local: Arc<DirCache>,
    imported: Arc<Imported>,
    seen: Mutex<HashMap<Key, Vec<u8>>>,
}

impl std::fmt::Debug for RecordingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingCache")
            .field("imported", &self.imported.len())
            .finish_non_exhaustive()
    }
}

impl RecordingCache {
    pub fn new(local: Arc<DirCache>, imported: Arc<Imported>) -> RecordingCache {
        RecordingCache {
            local,
            imported,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, key: &Key, bytes: &[u8]) {
        if let Ok(mut s) = self.seen.lock() {
            s.insert(*key, bytes.to_vec());
        }
    }

    /// The filesystem records the solve saw: key → layers.
    pub fn records(&self) -> Vec<(Key, Vec<LayerRef>)> {
        let seen = match self.seen.lock() {
            Ok(s) => s.clone(),
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<(Key, Vec<LayerRef>)> = seen
            .into_iter()
            .filter_map(|(k, b)| match serde_json::from_slice::<Value>(&b).ok()? {
                Value::Fs { layers } if !layers.is_empty() => Some((k, layers)),
                _ => None,
            })
            .collect();
        out.sort_by_key(|r| r.0);
        out
    }

    /// The links the solve saw: key of a content-keyed step → content key.
    pub fn links(&self) -> Vec<(Key, Key)> {
        let Ok(seen) = self.seen.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(Key, Key)> = seen
            .iter()
            .filter_map(|(k, b)| Some((*k, kiln_solver::parse_link(b)?)))
            .collect();
        out.sort();
        out
    }
}

impl CacheStore for RecordingCache {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, CacheError> {
        if let Some(b) = self.local.get(key)? {
            self.record(key, &b);
            return Ok(Some(b));
        }
        if let Some(target) = self.imported.links.get(key) {
            let b = kiln_solver::link_bytes(target);
            self.record(key, &b);
            return Ok(Some(b));
        }
        let Some(layers) = self.imported.records.get(key) else {
            return Ok(None);
        };
        let value = Value::Fs {
            layers: layers.iter().copied().map(LayerRef::Remote).collect(),
        };
        let Ok(b) = serde_json::to_vec(&value) else {
            return Ok(None);
        };
        self.record(key, &b);
        Ok(Some(b))
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<(), CacheError> {
        self.local.put(key, value)?;
        self.record(key, value);
        Ok(())
    }

    fn claim(
        &self,
        key: &Key,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<kiln_solver::Claim>, CacheError> {
        self.local.claim(key, cancelled)
    }
}

/// Whether a layer of a cached value can still be had: a snapshot that
/// exists, or a diffID that is unpacked, has a blob here or in an imported
/// cache.
pub fn layer_available(state: &State, imported: &Imported, layer: &LayerRef) -> bool {
    match layer {
        LayerRef::Snapshot(id) => state.layers.exists(id),
        LayerRef::Remote(d) => {
            imported.has_layer(d)
                || matches!(
                    state
                        .layers
                        .find_by_label(image::LABEL_DIFF_ID, &d.to_string()),
                    Ok(Some(_))
                )
                || has_blob(state, d)
        }
    }
}

fn has_blob(state: &State, diff_id: &Digest) -> bool {
    crate::blobs::stored_blobs(state, diff_id).is_ok_and(|b| !b.is_empty())
}

/// Restores the imported cache mount `key` into `dest` (a directory to be
/// created); `false` when no imported cache has it.
pub fn restore_mount(
    state: &State,
    imported: &Imported,
    key: &str,
    dest: &Path,
) -> Result<bool, Error> {
    let Some((_, desc, source)) = imported.mounts.get(key) else {
        return Ok(false);
    };
    source.fetch(state, desc)?;
    let file = state.content.open_blob(&desc.digest)?;
    let (_, tar) = kiln_oci::decompress(io::BufReader::new(file)).map_err(|e| Error::Io {
        what: format!("decompressing cache mount blob {}", desc.digest),
        source: e,
    })?;
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    kiln_snapshot::unpack_layer(tar, dest, state.whiteouts)?;
    Ok(true)
}

/// Makes sure the content store has a blob of layer `diff_id`, fetching it
/// from the imported cache that has it.
pub(super) fn ensure_blob(
    state: &State,
    imported: &Imported,
    diff_id: &Digest,
) -> Result<(), Error> {
    if has_blob(state, diff_id) {
        return Ok(());
    }
    let (desc, source) = imported
        .layers
        .get(diff_id)
        .ok_or(super::error::CacheError::LayerUnavailable { diff_id: *diff_id })?;
    source.fetch(state, desc)?;
    let compression = crate::registry::layer_compression(&desc.media_type).ok_or_else(|| {
        super::error::CacheError::LayerMediaType {
            diff_id: *diff_id,
            media_type: desc.media_type.clone(),
        }
    })?;
    // Checked before it is recorded as the layer: a cache is input.
    let size = kiln_oci::verify_blob(&state.content, &desc.digest, diff_id)?;
    state
        .layer_blobs
        .add(&state.content, diff_id, compression, desc)?;
    state.layer_blobs.set_size(diff_id, size)?;
    Ok(())
}

/// The snapshot of a layer of a value, fetching and unpacking an imported
/// layer the first time it is needed.
pub fn materialize(state: &State, imported: &Imported, layer: &LayerRef) -> Result<LayerId, Error> {
    match layer {
        LayerRef::Snapshot(id) => Ok(id.clone()),
        LayerRef::Remote(d) => {
            if let Some(id) = state
                .layers
                .find_by_label(image::LABEL_DIFF_ID, &d.to_string())?
            {
                return Ok(id);
            }
            ensure_blob(state, imported, d)?;
            Ok(image::unpacked_layer(state, d, imported.created(d))?)
        }
    }
}

/// A layer of a value as the export sees it: an unpacked snapshot by the
/// diffID it was unpacked from, anything else as it is.
pub(super) fn canonical(state: &State, layer: &LayerRef) -> LayerRef {
    if let LayerRef::Snapshot(id) = layer
        && let Ok(l) = state.layers.get(id)
        && let Some(d) = l.meta.labels.get(image::LABEL_DIFF_ID)
        && let Ok(d) = d.parse()
    {
        return LayerRef::Remote(d);
    }
    layer.clone()
}
