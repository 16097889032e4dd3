//! Export (`--cache-to`): the records of a build chosen by mode, their
//! blobs, cache mounts, and the merge on write with what the destination
//! holds, the same for every transport.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use kiln_llb::Digest;
use kiln_oci::{Compression, Descriptor};
use kiln_registry::Client;
use kiln_solver::Key;

use super::error::CacheError;
use super::format::{
    self, Cache, CacheConfig, CacheLayer, CacheLink, CacheMountRecord, CacheRecord, merge_previous,
};
use super::imported::Imported;
use super::lazy::{canonical, ensure_blob};
use super::spec::{CacheTo, Mode};
use super::transport::{Current, Cx, Remote};
use crate::error::Error;
use crate::state::State;
use crate::value::LayerRef;
use kiln_store::layers as image;

/// How often an export without exclusive access reads, merges and writes
/// again when it finds that another exporter replaced its write before it
/// could check it.
const MERGE_ATTEMPTS: usize = 5;

/// How long an export without exclusive access waits, after its write,
/// before it checks a second time that the index still holds its records.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub records: usize,
    pub layers: usize,
    pub mounts: usize,
    /// The cache manifest.
    pub manifest: Digest,
}

/// The build an export writes the cache of.
#[derive(Debug, Clone, Copy)]
pub struct ExportRequest<'a> {
    /// What the solve saw ([`RecordingCache::records`]).
    pub records: &'a [(Key, Vec<LayerRef>)],
    /// The links it saw ([`RecordingCache::links`]).
    pub links: &'a [(Key, Key)],
    /// Each result's layers, bottom first (one result per target platform).
    pub results: &'a [Vec<LayerRef>],
    /// The build's mtime clamp (`SOURCE_DATE_EPOCH`).
    pub clamp: Option<i64>,
    /// Names of the cache mount directories the build's steps use, for
    /// `mounts=true`.
    pub cache_mounts: &'a [String],
}

/// Writes the cache of a build: its records selected by `to.mode` against
/// the result's layers, and their blobs.
pub fn export(
    state: &State,
    imported: &Imported,
    req: ExportRequest<'_>,
    to: &CacheTo,
    client: Option<&Client>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Exported, Error> {
    let ExportRequest {
        records,
        links,
        results,
        clamp,
        cache_mounts,
    } = req;
    let Some(transport) = to.location.transport() else {
        return Err(CacheError::InlineExport.into());
    };
    // Unpacked layers are named by their diffID, as imported hits are, so
    // that a chain is recognised whichever way its layers came.
    let results: Vec<Vec<LayerRef>> = results
        .iter()
        .map(|r| r.iter().map(|l| canonical(state, l)).collect())
        .collect();
    let records: Vec<(Key, Vec<LayerRef>)> = records
        .iter()
        .map(|(k, ls)| (*k, ls.iter().map(|l| canonical(state, l)).collect()))
        .collect();
    let chosen: Vec<&(Key, Vec<LayerRef>)> = records
        .iter()
        .filter(|(_, layers)| match to.mode {
            Mode::Max => true,
            Mode::Min => results
                .iter()
                .any(|result| layers.len() <= result.len() && result[..layers.len()] == layers[..]),
        })
        .collect();
    let mut index_of: HashMap<&LayerRef, usize> = HashMap::new();
    let mut config = CacheConfig {
        version: 1,
        ..CacheConfig::default()
    };
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut blob_index: HashMap<Digest, usize> = HashMap::new();
    for (key, layers) in &chosen {
        let mut idx = Vec::with_capacity(layers.len());
        for l in layers {
            if let Some(i) = index_of.get(l) {
                idx.push(*i);
                continue;
            }
            let (diff_id, desc, created) = match l {
                LayerRef::Snapshot(id) => (
                    image::diff_id(state, id, clamp)?,
                    image::layer_blob(state, id, clamp, to.compression)?,
                    created_label(state, id),
                ),
                LayerRef::Remote(d) => {
                    ensure_blob(state, imported, d)?;
                    let created = imported.created(d).map(str::to_owned).or_else(|| {
                        let id = state
                            .layers
                            .find_by_label(image::LABEL_DIFF_ID, &d.to_string())
                            .ok()??;
                        created_label(state, &id)
                    });
                    (
                        *d,
                        crate::blobs::blob(state, d, to.compression, None, &Default::default())?,
                        created,
                    )
                }
            };
            let blob = *blob_index.entry(desc.digest).or_insert_with(|| {
                blobs.push(desc.clone());
                blobs.len() - 1
            });
            let i = config.layers.len();
            config.layers.push(CacheLayer {
                diff_id,
                blob,
                created,
            });
            index_of.insert(l, i);
            idx.push(i);
        }
        config.records.push(CacheRecord {
            key: *key,
            layers: idx,
            age: 0,
        });
    }
    // The links to records written (so a min-mode cache has those of the
    // result's chain).
    let written: std::collections::HashSet<Key> = config.records.iter().map(|r| r.key).collect();
    config.links = links
        .iter()
        .filter(|(_, target)| written.contains(target))
        .map(|(key, target)| CacheLink {
            key: *key,
            target: *target,
        })
        .collect();
    if to.mounts {
        for key in cache_mounts {
            let dir = state
                .root
                .join(kiln_store::cache_mounts::CACHE_MOUNTS_DIR)
                .join(key);
            let data = dir.join("data");
            if !data.is_dir() {
                continue;
            }
            let id = fs::read_to_string(dir.join("id")).unwrap_or_default();
            let desc = mount_blob(state, &data, to.compression)?;
            let blob = *blob_index.entry(desc.digest).or_insert_with(|| {
                blobs.push(desc.clone());
                blobs.len() - 1
            });
            config.mounts.push(CacheMountRecord {
                key: key.clone(),
                id,
                blob,
                age: 0,
            });
        }
    }
    let cx = Cx {
        state,
        registry: client,
        log,
    };
    let remote = transport.connect(&cx)?;
    let (config, manifest_desc) = write(&cx, &*remote, &config, &blobs, to)?;
    Ok(Exported {
        records: config.records.len(),
        layers: config.layers.len(),
        mounts: config.mounts.len(),
        manifest: manifest_desc.digest,
    })
}

/// Merge on write through `remote`. With exclusive access (a local
/// directory's lock): read, merge, write. Without (a registry, object
/// storage): this export's blobs and manifest first, unnamed; then,
/// quickly, read what the index names, merge, write the merged manifest and
/// name it; then check, right away and again after [`SETTLE`], that the
/// index still names a cache with every record of this export, reading,
/// merging and writing again when another exporter replaced it with a cache
/// that lacks them.
fn write(
    cx: &Cx<'_>,
    remote: &dyn Remote,
    config: &CacheConfig,
    blobs: &[Descriptor],
    to: &CacheTo,
) -> Result<(CacheConfig, Descriptor), Error> {
    let what = remote.describe();
    let log = cx.log;
    if let Some(lock) = remote.exclusive()? {
        let prev = match remote.current(cx) {
            Ok(p) => p.and_then(|c| c.cache),
            Err(e) => {
                log(&format!(
                    "warning: --cache-to {what}: replacing what is there, not a kiln cache: {e}"
                ));
                None
            }
        };
        let (config, blobs) = merged_with(config, blobs, prev.as_ref(), to, &what, log)?;
        let (manifest, desc) = format::cache_manifest(cx.state, &config, blobs)?;
        remote.publish(cx, &manifest, &desc)?;
        drop(lock);
        return Ok((config, desc));
    }
    let (own_manifest, own_desc) = format::cache_manifest(cx.state, config, blobs.to_vec())?;
    remote.put_cache(cx, &own_manifest, &own_desc)?;
    let own_keys: Vec<Key> = config.records.iter().map(|r| r.key).collect();
    let holds_own = |c: &CacheConfig| {
        let have: HashSet<Key> = c.records.iter().map(|r| r.key).collect();
        own_keys.iter().all(|k| have.contains(k))
    };
    for _ in 0..MERGE_ATTEMPTS {
        let prev = remote.current(cx)?;
        let prev_cache = prev.as_ref().and_then(|c| c.cache.as_ref());
        let (merged, merged_blobs) = merged_with(config, blobs, prev_cache, to, &what, log)?;
        let (manifest, desc) = format::cache_manifest(cx.state, &merged, merged_blobs)?;
        remote.publish(cx, &manifest, &desc)?;
        let mut replaced = false;
        for wait in [None, Some(SETTLE)] {
            if let Some(w) = wait {
                std::thread::sleep(w);
            }
            match remote.current(cx)? {
                Some(Current { digest, .. }) if digest == desc.digest => {}
                Some(Current {
                    digest,
                    cache: Some((_, c)),
                }) if holds_own(&c) => {
                    log(&format!(
                        "--cache-to {what}: another exporter wrote {digest} after this one, with \
                         this export's records"
                    ));
                }
                other => {
                    log(&format!(
                        "--cache-to {what}: another exporter replaced this export's cache \
                         ({}) without its records: merging again",
                        other.map_or_else(|| "deleted".to_owned(), |c| c.digest.to_string())
                    ));
                    replaced = true;
                    break;
                }
            }
        }
        if !replaced {
            return Ok((merged, desc));
        }
    }
    Err(Error::Cache(CacheError::Contended {
        what,
        attempts: MERGE_ATTEMPTS,
        own: own_desc.digest,
    }))
}

/// When the step that made layer `id` ran (its `kiln.created` label).
fn created_label(state: &State, id: &kiln_snapshot::LayerId) -> Option<String> {
    let layer = state.layers.get(id).ok()?;
    layer.meta.labels.get(image::LABEL_CREATED).cloned()
}

/// This export merged with the cache `prev` at the destination (if any).
fn merged_with(
    config: &CacheConfig,
    blobs: &[Descriptor],
    prev: Option<&Cache>,
    to: &CacheTo,
    what: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(CacheConfig, Vec<Descriptor>), Error> {
    let Some((m, c)) = prev else {
        return Ok((config.clone(), blobs.to_vec()));
    };
    let (config, blobs, merged) =
        merge_previous((config, blobs), (c, &m.layers), to.max_records, what)?;
    log(&format!(
        "merged with the cache at {what}: {} records of earlier exports kept, {} evicted \
         (max-records={})",
        merged.kept, merged.evicted, to.max_records
    ));
    Ok((config, blobs))
}

/// The content of cache mount directory `data` as a compressed tar blob.
fn mount_blob(state: &State, data: &Path, compression: Compression) -> Result<Descriptor, Error> {
    let (reader, mut writer) = io::pipe().map_err(io_err("making a pipe for", data))?;
    let dir = data.to_path_buf();
    let tarring = std::thread::spawn(move || {
        kiln_snapshot::write_layer_tar(
            &dir,
            &mut writer,
            &kiln_snapshot::TarOptions { mtime_clamp: None },
        )
    });
    let blob = kiln_oci::compress_layer(&state.content, reader, compression);
    match tarring.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(CacheError::TarPanicked {
                path: data.to_path_buf(),
            }
            .into());
        }
    }
    Ok(blob?.descriptor)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kiln_oci::media;

    use super::*;
    use crate::cache::format::Flat;
    use crate::cache::spec::CacheTo;
    use crate::cache::transport::read_cache;

    /// A transport in memory: blobs by digest and an index naming one
    /// manifest. `rival`: a cache another exporter writes right after this
    /// export's first write, as a racing exporter without its records would.
    #[derive(Debug, Default)]
    struct Memory {
        blobs: Mutex<HashMap<Digest, Vec<u8>>>,
        index: Mutex<Option<Digest>>,
        rival: Mutex<Option<Digest>>,
        index_writes: Mutex<usize>,
    }

    impl Remote for Memory {
        fn describe(&self) -> String {
            "memory".to_owned()
        }

        fn current(&self, cx: &Cx<'_>) -> Result<Option<Current>, Error> {
            let Some(digest) = *self.index.lock().unwrap() else {
                return Ok(None);
            };
            let size = self.blobs.lock().unwrap()[&digest].len() as u64;
            let desc = Descriptor::new(media::OCI_MANIFEST, kiln_oci::BlobInfo { digest, size });
            let cache = read_cache(cx, self, &desc)?;
            Ok(Some(Current {
                digest,
                cache: Some(cache),
            }))
        }

        fn has(&self, desc: &Descriptor) -> Result<bool, Error> {
            Ok(self.blobs.lock().unwrap().contains_key(&desc.digest))
        }

        fn fetch(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
            let bytes = self.blobs.lock().unwrap()[&desc.digest].clone();
            state.content.put_bytes(&bytes)?;
            Ok(())
        }

        fn put(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
            let bytes = state.content.read(&desc.digest)?;
            self.blobs.lock().unwrap().insert(desc.digest, bytes);
            Ok(())
        }

        fn write_index(&self, _: &Cx<'_>, desc: &Descriptor) -> Result<(), Error> {
            *self.index_writes.lock().unwrap() += 1;
            let rival = self.rival.lock().unwrap().take();
            *self.index.lock().unwrap() = Some(rival.unwrap_or(desc.digest));
            Ok(())
        }
    }

    /// A cache of one-layer records `keys`, its layer blobs in the store.
    fn cache(state: &State, keys: &[u8]) -> (CacheConfig, Vec<Descriptor>) {
        let mut flat = Flat::default();
        for k in keys {
            let info = state.content.put_bytes(&[*k]).unwrap();
            let blob = Descriptor::new(media::OCI_LAYER_GZIP, info);
            flat.records.insert(key(*k), (0, vec![(info.digest, blob)]));
        }
        flat.build()
    }

    fn key(k: u8) -> Key {
        Key::derive("test", &[&[k]])
    }

    #[test]
    fn a_racing_exporter_that_drops_this_exports_records_is_merged_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let log = |_: &str| {};
        let cx = Cx {
            state: &state,
            registry: None,
            log: &log,
        };
        let remote = Memory::default();
        // The other exporter's cache is in the store already; it replaces
        // this export's first write.
        let (theirs, their_blobs) = cache(&state, &[1, 2]);
        let (m, d) = format::cache_manifest(&state, &theirs, their_blobs).unwrap();
        remote.put_cache(&cx, &m, &d).unwrap();
        *remote.rival.lock().unwrap() = Some(d.digest);

        let (ours, our_blobs) = cache(&state, &[3]);
        let to = CacheTo::parse("type=local,dest=unused,mode=max").unwrap();
        let (merged, desc) = write(&cx, &remote, &ours, &our_blobs, &to).unwrap();

        let keys: HashSet<Key> = merged.records.iter().map(|r| r.key).collect();
        assert_eq!(keys, [key(1), key(2), key(3)].into_iter().collect());
        assert_eq!(*remote.index.lock().unwrap(), Some(desc.digest));
        assert_eq!(
            *remote.index_writes.lock().unwrap(),
            2,
            "written, replaced, merged again"
        );
        // What an importer reads: the union, every blob there.
        let (_, config) = remote.current(&cx).unwrap().unwrap().cache.unwrap();
        assert_eq!(config.records.len(), 3);
    }
}
