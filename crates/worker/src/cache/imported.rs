//! Import (`--cache-from`): the records of the caches named, read through
//! their transports (manifests and configs only; no layer blob).

use std::collections::HashMap;
use std::sync::Arc;

use kiln_llb::Digest;
use kiln_oci::Descriptor;
use kiln_registry::Client;
use kiln_solver::Key;

use super::error::CacheError;
use super::spec::CacheFrom;
use super::transport::{Cx, Remote};
use crate::error::Error;
use crate::state::State;

/// The records of the caches given with `--cache-from`.
#[derive(Debug, Default)]
pub struct Imported {
    /// diffID → its blob and where to get it.
    pub(super) layers: HashMap<Digest, (Descriptor, Arc<dyn Remote>)>,
    /// key → diffIDs, bottom first.
    pub(super) records: HashMap<Key, Vec<Digest>>,
    /// Cache mount directory name → its id, blob and where to get it.
    pub(super) mounts: HashMap<String, (String, Descriptor, Arc<dyn Remote>)>,
    /// Key of a content-keyed step → its content key.
    pub(super) links: HashMap<Key, Key>,
    /// diffID → when the step that made it ran, as the cache says.
    pub(super) created: HashMap<Digest, String>,
}

impl Imported {
    /// Adds what `other` imported (a multi-platform build imports the
    /// images of `--cache-from` once per platform); entries already here win.
    pub fn merge(&mut self, other: Imported) {
        for (k, v) in other.layers {
            self.layers.entry(k).or_insert(v);
        }
        for (k, v) in other.records {
            self.records.entry(k).or_insert(v);
        }
        for (k, v) in other.mounts {
            self.mounts.entry(k).or_insert(v);
        }
        for (k, v) in other.links {
            self.links.entry(k).or_insert(v);
        }
        for (k, v) in other.created {
            self.created.entry(k).or_insert(v);
        }
    }

    /// When the layer `diff_id` was made, if an imported cache says.
    pub fn created(&self, diff_id: &Digest) -> Option<&str> {
        self.created.get(diff_id).map(String::as_str)
    }

    /// Number of records imported.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing was imported.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of cache mounts imported.
    pub fn mounts_len(&self) -> usize {
        self.mounts.len()
    }

    /// Whether the layer with `diff_id` can be fetched from an imported cache.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layers.contains_key(diff_id)
    }
}

/// Reads the cache manifests `from` names (the manifests and configs only;
/// no layer blob). A registry cache that does not exist yet is skipped with
/// a warning through `log`, as BuildKit does.
///
/// `first` is false for a multi-platform build's other platforms: only the
/// transports whose cache depends on the platform are read again.
pub fn import(
    from: &[CacheFrom],
    client: Option<&Client>,
    state: &State,
    platform: &kiln_llb::Platform,
    first: bool,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Imported, Error> {
    let cx = Cx {
        state,
        registry: client,
        log,
    };
    let mut out = Imported::default();
    for f in from {
        let Some(transport) = f.location.transport() else {
            return Err(CacheError::InlineImport.into());
        };
        if !first && !transport.per_platform() {
            continue;
        }
        let remote = transport.connect(&cx)?;
        let Some((manifest, config)) = remote.import(&cx, platform)? else {
            continue;
        };
        let source = remote;
        let mut diff_ids = Vec::with_capacity(config.layers.len());
        // A record's blob index, checked against the manifest.
        let blob_at = |i: usize, what: String| {
            manifest.layers.get(i).ok_or_else(|| CacheError::BlobIndex {
                what: f.location.describe(),
                by: what,
                index: i,
                len: manifest.layers.len(),
            })
        };
        for l in &config.layers {
            let blob = blob_at(l.blob, format!("layer {}", l.diff_id))?;
            out.layers
                .entry(l.diff_id)
                .or_insert_with(|| (blob.clone(), source.clone()));
            if let Some(t) = &l.created {
                out.created.entry(l.diff_id).or_insert_with(|| t.clone());
            }
            diff_ids.push(l.diff_id);
        }
        for m in &config.mounts {
            let blob = blob_at(m.blob, format!("cache mount {:?}", m.id))?;
            if m.key.is_empty() || !m.key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CacheError::MountKey {
                    what: f.location.describe(),
                    key: m.key.clone(),
                }
                .into());
            }
            out.mounts
                .entry(m.key.clone())
                .or_insert_with(|| (m.id.clone(), blob.clone(), source.clone()));
        }
        for r in config.records {
            let layers = r
                .layers
                .iter()
                .map(|i| {
                    diff_ids
                        .get(*i)
                        .copied()
                        .ok_or_else(|| CacheError::LayerIndex {
                            what: f.location.describe(),
                            record: r.key,
                            index: *i,
                            len: diff_ids.len(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.records.entry(r.key).or_insert(layers);
        }
        for l in config.links {
            out.links.entry(l.key).or_insert(l.target);
        }
    }
    Ok(out)
}
