//! The cache format (`kiln cache v1`), apart from where it is kept: the
//! config blob, its parsing, and the merge on write. A transport
//! (`super::transport`) stores and fetches the manifest, config and blobs this
//! module makes and reads.

use std::collections::{BTreeMap, HashMap};

use kiln_llb::Digest;
use kiln_oci::{Descriptor, Manifest, MediaTypes, media};
use kiln_solver::Key;
use serde::{Deserialize, Serialize};

use super::error::CacheError;
use crate::error::Error;
use crate::state::State;

/// Media type of the cache config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";

/// Cache mounts a destination keeps at most (the least recently exported
/// go first).
pub const MAX_MOUNTS: usize = 256;

/// A cache: its manifest and config.
pub type Cache = (Manifest, CacheConfig);

/// The cache config blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub version: u32,
    pub layers: Vec<CacheLayer>,
    pub records: Vec<CacheRecord>,
    /// `RUN --mount=type=cache` directories (`mounts=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CacheMountRecord>,
    /// Keys of content-keyed steps → the content key their record is under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<CacheLink>,
}

/// A content-keyed step (a `COPY --from`): its key names its source stage
/// by key, `target` by the content it copied, and the record is under
/// `target` (see `kiln_solver::Worker::keys_by_content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLink {
    pub key: Key,
    pub target: Key,
}

/// A cache mount: its directory name under `<root>/cache-mounts/` (which
/// scopes it as the build did), its id, and the blob of its content (a tar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMountRecord {
    pub key: String,
    pub id: String,
    /// Index into the manifest's layers.
    pub blob: usize,
    /// Exports to this destination since this mount was last exported (0,
    /// left out, for the export that wrote it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub age: u32,
}

pub fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    pub diff_id: Digest,
    /// Index into the manifest's layers.
    pub blob: usize,
    /// When the layer was made (RFC 3339, as the image history writes it):
    /// a build whose steps come from this cache dates their history as the
    /// build that made them did, so it gives the same image (BuildKit keeps
    /// a result's `createdAt` in its cache config for the same reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub key: Key,
    pub layers: Vec<usize>,
    /// Exports to this destination since this record was last exported (0,
    /// left out, for the export that wrote it): the eviction order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub age: u32,
}

pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest, Error> {
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|source| CacheError::InvalidManifest {
            what: what.to_owned(),
            source,
        })?;
    check_cache_manifest(&m, what)?;
    Ok(m)
}

pub fn check_cache_manifest(m: &Manifest, what: &str) -> Result<(), Error> {
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(CacheError::NotACacheConfig {
            what: what.to_owned(),
            media_type: m.config.media_type.clone(),
            expected: CONFIG_MEDIA_TYPE,
        }
        .into());
    }
    Ok(())
}

/// The inline cache in an image config (`kiln.cache.v1`), if any.
pub fn inline_config(config: &[u8], what: &str) -> Result<Option<CacheConfig>, Error> {
    let image = kiln_oci::ImageConfigFile::from_json(config, what).map_err(|source| {
        CacheError::ImageConfig {
            what: what.to_owned(),
            source,
        }
    })?;
    let Some(inline) = image.inline_cache else {
        return Ok(None);
    };
    let mut c: CacheConfig =
        serde_json::from_value(inline).map_err(|source| CacheError::InvalidInline {
            what: what.to_owned(),
            source,
        })?;
    if c.version != 1 {
        return Err(CacheError::InlineVersion {
            what: what.to_owned(),
            version: c.version,
        }
        .into());
    }
    // Each layer made when its history entry says (the entries with a
    // layer, in order, date the image's layers).
    let times: Vec<Option<&String>> = image
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created.as_ref())
        .collect();
    if times.len() == image.rootfs.diff_ids.len() {
        for l in &mut c.layers {
            if l.created.is_none()
                && let Some(i) = image.rootfs.diff_ids.iter().position(|d| *d == l.diff_id)
            {
                l.created = times[i].cloned();
            }
        }
    }
    Ok(Some(c))
}

pub fn parse_config(bytes: &[u8], what: &str) -> Result<CacheConfig, Error> {
    let c: CacheConfig =
        serde_json::from_slice(bytes).map_err(|source| CacheError::InvalidConfig {
            what: what.to_owned(),
            source,
        })?;
    if c.version != 1 {
        return Err(CacheError::Version {
            what: what.to_owned(),
            version: c.version,
        }
        .into());
    }
    Ok(c)
}

/// The config and manifest of a cache, put into the content store.
pub fn cache_manifest(
    state: &State,
    config: &CacheConfig,
    blobs: Vec<Descriptor>,
) -> Result<(Manifest, Descriptor), Error> {
    let config_blob = state.content.put_json(config)?;
    let mut manifest = Manifest::new(
        MediaTypes::Oci,
        Descriptor::new(CONFIG_MEDIA_TYPE, config_blob),
        blobs,
    );
    manifest.annotations.insert(
        "org.opencontainers.image.title".to_owned(),
        "kiln build cache".to_owned(),
    );
    let manifest_blob = state.content.put_json(&manifest)?;
    Ok((
        manifest,
        Descriptor::new(media::OCI_MANIFEST, manifest_blob),
    ))
}

/// A record's layers, bottom first: diffID and blob.
pub type FlatLayers = Vec<(Digest, Descriptor)>;

/// A cache config with its blobs resolved: every record's layers as
/// (diffID, blob), every mount's blob; what merging works on.
#[derive(Debug, Default)]
pub struct Flat {
    pub records: BTreeMap<Key, (u32, FlatLayers)>,
    pub mounts: BTreeMap<String, (u32, String, Descriptor)>,
    pub links: BTreeMap<Key, Key>,
    /// diffID → when the layer was made ([`CacheLayer::created`]).
    pub created: BTreeMap<Digest, String>,
}

impl Flat {
    pub fn of(c: &CacheConfig, blobs: &[Descriptor], what: &str) -> Result<Flat, Error> {
        let blob = |i: usize| {
            blobs
                .get(i)
                .cloned()
                .ok_or_else(|| CacheError::ManifestBlobIndex {
                    what: what.to_owned(),
                    index: i,
                    len: blobs.len(),
                })
        };
        let layers = c
            .layers
            .iter()
            .map(|l| Ok((l.diff_id, blob(l.blob)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut out = Flat::default();
        for l in &c.layers {
            if let Some(t) = &l.created {
                out.created.entry(l.diff_id).or_insert_with(|| t.clone());
            }
        }
        for r in &c.records {
            let ls = r
                .layers
                .iter()
                .map(|i| {
                    layers
                        .get(*i)
                        .cloned()
                        .ok_or_else(|| CacheError::LayerIndex {
                            what: what.to_owned(),
                            record: r.key,
                            index: *i,
                            len: layers.len(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.records.insert(r.key, (r.age, ls));
        }
        for m in &c.mounts {
            out.mounts
                .insert(m.key.clone(), (m.age, m.id.clone(), blob(m.blob)?));
        }
        for l in &c.links {
            out.links.insert(l.key, l.target);
        }
        Ok(out)
    }

    /// The config and blobs: records by key, layers and blobs numbered by
    /// first use (records, then mounts).
    pub fn build(&self) -> (CacheConfig, Vec<Descriptor>) {
        let mut config = CacheConfig {
            version: 1,
            ..CacheConfig::default()
        };
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut blob_at: HashMap<Digest, usize> = HashMap::new();
        let mut blob_index = |d: &Descriptor, blobs: &mut Vec<Descriptor>| {
            *blob_at.entry(d.digest).or_insert_with(|| {
                blobs.push(d.clone());
                blobs.len() - 1
            })
        };
        let mut layer_at: HashMap<(Digest, Digest), usize> = HashMap::new();
        for (key, (age, layers)) in &self.records {
            let mut idx = Vec::with_capacity(layers.len());
            for (diff_id, desc) in layers {
                let i = match layer_at.get(&(*diff_id, desc.digest)) {
                    Some(i) => *i,
                    None => {
                        let blob = blob_index(desc, &mut blobs);
                        config.layers.push(CacheLayer {
                            diff_id: *diff_id,
                            blob,
                            created: self.created.get(diff_id).cloned(),
                        });
                        layer_at.insert((*diff_id, desc.digest), config.layers.len() - 1);
                        config.layers.len() - 1
                    }
                };
                idx.push(i);
            }
            config.records.push(CacheRecord {
                key: *key,
                layers: idx,
                age: *age,
            });
        }
        for (key, (age, id, desc)) in &self.mounts {
            let blob = blob_index(desc, &mut blobs);
            config.mounts.push(CacheMountRecord {
                key: key.clone(),
                id: id.clone(),
                blob,
                age: *age,
            });
        }
        config.links = self
            .links
            .iter()
            .filter(|(_, target)| self.records.contains_key(target))
            .map(|(key, target)| CacheLink {
                key: *key,
                target: *target,
            })
            .collect();
        (config, blobs)
    }
}

/// What merging an export with the cache at its destination did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Records of earlier exports kept.
    pub kept: usize,
    /// Records of earlier exports dropped by the bound.
    pub evicted: usize,
}

/// Merge on write: `own` (this export's config and blobs) plus what `prev`
/// (the destination's cache) has that `own` lacks, each of those one export
/// older. `own` is kept whole; of the rest, the youngest records (by age,
/// then key) up to `max_records` in all, and the youngest mounts up to
/// [`MAX_MOUNTS`]. Links go with the records they lead to.
pub fn merge_previous(
    own: (&CacheConfig, &[Descriptor]),
    prev: (&CacheConfig, &[Descriptor]),
    max_records: usize,
    what: &str,
) -> Result<(CacheConfig, Vec<Descriptor>, Merged), Error> {
    let mut flat = Flat::of(own.0, own.1, "being exported")?;
    let old = Flat::of(prev.0, prev.1, what)?;
    // This export's times win; the others' come along with their layers.
    for (d, t) in &old.created {
        flat.created.entry(*d).or_insert_with(|| t.clone());
    }
    let mut candidates: Vec<(u32, Key, FlatLayers)> = old
        .records
        .into_iter()
        .filter(|(k, _)| !flat.records.contains_key(k))
        .map(|(k, (age, layers))| (age.saturating_add(1), k, layers))
        .collect();
    candidates.sort_by_key(|(age, key, _)| (*age, *key));
    let room = max_records.saturating_sub(flat.records.len());
    let mut merged = Merged::default();
    for (i, (age, key, layers)) in candidates.into_iter().enumerate() {
        if i < room {
            flat.records.insert(key, (age, layers));
            merged.kept += 1;
        } else {
            merged.evicted += 1;
        }
    }
    let mut mounts: Vec<(u32, String, String, Descriptor)> = old
        .mounts
        .into_iter()
        .filter(|(k, _)| !flat.mounts.contains_key(k))
        .map(|(k, (age, id, d))| (age.saturating_add(1), k, id, d))
        .collect();
    mounts.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let room = MAX_MOUNTS.saturating_sub(flat.mounts.len());
    for (age, key, id, d) in mounts.into_iter().take(room) {
        flat.mounts.insert(key, (age, id, d));
    }
    for (k, t) in old.links {
        flat.links.entry(k).or_insert(t);
    }
    let (config, blobs) = flat.build();
    Ok((config, blobs, merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of one-layer records `keys` (layer i is blob i, made of the
    /// key's first byte), and of `mounts`.
    fn cache(keys: &[u8], mounts: &[&str]) -> (CacheConfig, Vec<Descriptor>) {
        let mut flat = Flat::default();
        for k in keys {
            let d = Digest::of(&[*k]);
            let blob = Descriptor::new(
                media::OCI_LAYER_GZIP,
                kiln_oci::BlobInfo { digest: d, size: 1 },
            );
            flat.records.insert(key(*k), (0, vec![(d, blob)]));
        }
        for m in mounts {
            let d = Digest::of(m.as_bytes());
            let blob = Descriptor::new(
                media::OCI_LAYER_GZIP,
                kiln_oci::BlobInfo { digest: d, size: 1 },
            );
            flat.mounts
                .insert((*m).to_owned(), (0, (*m).to_owned(), blob));
        }
        flat.build()
    }

    fn key(k: u8) -> Key {
        Key::derive("test", &[&[k]])
    }

    fn keys(c: &CacheConfig) -> Vec<(Key, u32)> {
        c.records.iter().map(|r| (r.key, r.age)).collect()
    }

    #[test]
    fn layer_times_survive_the_merge_and_this_export_wins() {
        let dated = |keys: &[u8], when: &str| {
            let (mut c, blobs) = cache(keys, &[]);
            for l in &mut c.layers {
                l.created = Some(when.to_owned());
            }
            (c, blobs)
        };
        let (a, a_blobs) = dated(&[1, 2], "a");
        let (b, b_blobs) = dated(&[2, 3], "b");
        let (ab, ab_blobs, _) = merge_previous((&b, &b_blobs), (&a, &a_blobs), 100, "t").unwrap();
        let flat = Flat::of(&ab, &ab_blobs, "t").unwrap();
        // Key 1 came from a's export, keys 2 and 3 from b's (b's time of
        // the layer both made).
        assert_eq!(flat.created[&Digest::of(&[1])], "a");
        assert_eq!(flat.created[&Digest::of(&[2])], "b");
        assert_eq!(flat.created[&Digest::of(&[3])], "b");
        // A config without times reads as before (the field is optional
        // and left out when unknown).
        let (plain, _) = cache(&[9], &[]);
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("created"), "{json}");
        assert_eq!(parse_config(json.as_bytes(), "t").unwrap(), plain);
    }

    #[test]
    fn merge_on_write_keeps_the_union_and_evicts_the_oldest() {
        // Two exporters' caches merge into the union; the records of the
        // one written before are one export older.
        let (a, a_blobs) = cache(&[1, 2], &["m1"]);
        let (b, b_blobs) = cache(&[2, 3], &["m2"]);
        let (ab, ab_blobs, merged) =
            merge_previous((&b, &b_blobs), (&a, &a_blobs), 100, "test").unwrap();
        assert_eq!(
            merged,
            Merged {
                kept: 1,
                evicted: 0
            }
        );
        let mut want = vec![(key(1), 1), (key(2), 0), (key(3), 0)];
        want.sort();
        assert_eq!(keys(&ab), want);
        assert_eq!(ab.mounts.len(), 2);
        assert_eq!(ab_blobs.len(), 5, "three layers and two mounts");
        // Every record still names its own layer blob.
        let flat = Flat::of(&ab, &ab_blobs, "test").unwrap();
        for k in [1u8, 2, 3] {
            assert_eq!(flat.records[&key(k)].1[0].0, Digest::of(&[k]));
        }
        // A third export over the union, bound 4: its own 2 records, then the
        // youngest earlier ones (age 1: key 3, and key 2 is its own), and
        // key 1 (age 2) is evicted.
        let (c, c_blobs) = cache(&[2, 4, 5], &[]);
        let (abc, abc_blobs, merged) =
            merge_previous((&c, &c_blobs), (&ab, &ab_blobs), 4, "test").unwrap();
        assert_eq!(
            merged,
            Merged {
                kept: 1,
                evicted: 1
            }
        );
        let mut want = vec![(key(2), 0), (key(3), 1), (key(4), 0), (key(5), 0)];
        want.sort();
        assert_eq!(keys(&abc), want);
        // An export larger than the bound keeps all of its own records.
        let (d, d_blobs) = cache(&[6, 7, 8], &[]);
        let (only, _, merged) =
            merge_previous((&d, &d_blobs), (&abc, &abc_blobs), 2, "test").unwrap();
        assert_eq!(only.records.len(), 3);
        assert_eq!(merged.kept, 0);
    }
}
