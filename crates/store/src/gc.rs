//! Garbage collection of the state directory (`kiln prune`), and what
//! `kiln du` reports: choose roots, mark what they reach, sweep the rest.
//!
//! Roots are the images that stay (named images always; dangling ones unless
//! pruned) and the build cache entries that stay (all of them, unless
//! `--all`). From an image: its configuration blob, the manifests its names
//! record (and every blob they list), every recorded blob of each of its
//! layers (diffIDs), the snapshots it was built from or unpacked into, and
//! any built snapshot whose tar is one of its layers (a blob can be made
//! again from it). From a cache entry: its snapshots, and the blobs recorded
//! for their diffIDs. Everything else in `blobs/`, `layerblobs/`,
//! `snapshots/` and `image-layers/` is swept, and cache entries whose layers
//! are gone. So whatever an image that stays needs for an export, a save or
//! a push stays too (see [`crate::blobs`]).
//!
//! The sweep removes what refers before what is referred to (image records,
//! then their snapshot maps, cache entries, snapshots; a blob's records
//! before the blob), so a prune killed at any point leaves no record that
//! names something gone.
//!
//! The caller holds the store lock exclusively ([`crate::lock`]), so no build
//! is using what is swept. The size-based policy (`--keep-storage`, and the
//! automatic collection after builds) chooses fewer roots: cache entries,
//! least recently used first, until what remains on disk fits. [`Plan`] is
//! computed first, then [`sweep`] applies it. [`usage`] is `kiln du`.

use std::collections::BTreeSet;
use std::fs;

use kiln_llb::Digest;
use kiln_snapshot::LayerId;

use crate::blobs::{LABEL_DIFF_ID, LABEL_TAR, dir_size};
use crate::error::Error;
use crate::images::{records, remove_record};
use crate::layers::load_config;
use crate::state::State;
use crate::values::CacheValues;

/// What to prune.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// Also drop the whole build cache (not only entries whose layers are gone).
    pub all: bool,
    /// Only what was created before this time (seconds since 1970).
    pub until: Option<i64>,
    /// `--keep-storage`: also drop build cache entries, least recently
    /// used first, until the store holds at most this many bytes.
    pub keep_storage: Option<u64>,
}

/// What a prune removes (or would remove).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Dangling images to remove.
    pub images: Vec<Digest>,
    /// Cache entries to remove.
    pub cache_entries: Vec<kiln_solver::Key>,
    /// Blobs to remove, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Snapshots to remove, with the bytes their files take.
    pub layers: Vec<(LayerId, u64)>,
    /// Layers (diffIDs) no image or cache entry uses any more: their
    /// records go.
    pub layer_records: Vec<Digest>,
    /// Counts and sizes of what exists.
    pub total_images: usize,
    pub named_images: usize,
    pub total_cache_entries: usize,
    /// Bytes on disk of the blobs and of the snapshots.
    pub blob_bytes: u64,
    pub layer_bytes: u64,
}

impl Plan {
    /// Bytes the store holds on disk after the sweep.
    pub fn remaining(&self) -> u64 {
        (self.blob_bytes + self.layer_bytes).saturating_sub(self.reclaimed())
    }

    /// Bytes the sweep frees on disk.
    pub fn reclaimed(&self) -> u64 {
        self.blobs.iter().map(|(_, s)| s).sum::<u64>()
            + self.layers.iter().map(|(_, s)| s).sum::<u64>()
    }
}

fn created(state: &State, id: &Digest) -> Option<i64> {
    let c = load_config(state, id).ok()?;
    parse_rfc3339(c.created.as_deref()?)
}

/// Seconds of an RFC 3339 UTC time (what kiln and Docker write).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86400 + h * 3600 + mi * 60 + sec)
}

fn mtime(path: &std::path::Path) -> Option<i64> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    let d = m.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// When a cache entry was last written or hit (`DirCache::get` touches it),
/// in nanoseconds (0 if unknown): entries used within one second must still
/// be ordered.
fn mtime_ns(path: &std::path::Path) -> u128 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Decides what a prune with `opts` removes, without removing anything.
/// With `keep_storage`, cache entries are dropped least recently used first
/// (the mtime of the entry, which a cache hit updates), a growing share at a time, until what remains fits; an
/// entry whose layers other roots keep frees nothing, so the size is
/// recomputed after each share.
/// `values` reads the cache entries' values (the worker's).
pub fn plan(state: &State, values: &dyn CacheValues, opts: PruneOptions) -> Result<Plan, Error> {
    let p = plan_dropping(state, values, opts, &BTreeSet::new())?;
    match opts.keep_storage {
        Some(limit) => fit(state, values, opts, p, limit),
        None => Ok(p),
    }
}

/// `base` (a plan made with `opts`) extended, as `keep_storage` does, until
/// the store fits in `limit` bytes; `base` itself when it already fits.
pub fn fit(
    state: &State,
    values: &dyn CacheValues,
    opts: PruneOptions,
    base: Plan,
    limit: u64,
) -> Result<Plan, Error> {
    let mut p = base;
    if p.remaining() <= limit {
        return Ok(p);
    }
    let already: BTreeSet<kiln_solver::Key> = p.cache_entries.iter().copied().collect();
    let mut candidates: Vec<(u128, kiln_solver::Key)> = state
        .cache
        .keys()
        .map_err(Error::Cache)?
        .into_iter()
        .filter(|k| !already.contains(k))
        .map(|k| (mtime_ns(&state.cache.path_of(&k)), k))
        .collect();
    candidates.sort();
    let mut drop = BTreeSet::new();
    let mut next = 0;
    while p.remaining() > limit && next < candidates.len() {
        let share = ((candidates.len() - next) / 8).max(1);
        for (_, k) in &candidates[next..next + share] {
            drop.insert(*k);
        }
        next += share;
        p = plan_dropping(state, values, opts, &drop)?;
    }
    Ok(p)
}

/// The snapshots an image-layers record names (empty when it has none).
fn image_layer_ids(state: &State, id: &Digest) -> Vec<String> {
    let path = state.root.join("image-layers").join(id.hex());
    fs::read(&path)
        .ok()
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .and_then(|v| {
            v["layers"].as_array().map(|ls| {
                ls.iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The diffIDs a snapshot's labels say it holds: unpacked from, or whose
/// tar it is (built).
fn labelled_diff_ids(meta: &kiln_snapshot::LayerMeta) -> impl Iterator<Item = Digest> + '_ {
    meta.labels
        .iter()
        .filter(|(k, _)| *k == LABEL_DIFF_ID || k.starts_with(LABEL_TAR))
        .filter_map(|(_, v)| v.parse::<Digest>().ok())
}

/// [`plan`], also dropping the cache entries in `drop`.
fn plan_dropping(
    state: &State,
    values: &dyn CacheValues,
    opts: PruneOptions,
    drop: &BTreeSet<kiln_solver::Key>,
) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    let old_enough = |t: Option<i64>| match (opts.until, t) {
        (None, _) => true,
        (Some(u), Some(t)) => t < u,
        (Some(_), None) => false,
    };
    // Images.
    let names = state.images.list()?;
    let named: BTreeSet<Digest> = names.iter().map(|(_, r)| r.id).collect();
    let recorded = records(state)?;
    let mut live_images: BTreeSet<Digest> = named.clone();
    for id in &recorded {
        if named.contains(id) {
            continue;
        }
        if old_enough(created(state, id)) {
            plan.images.push(*id);
        } else {
            live_images.insert(*id);
        }
    }
    plan.total_images = named.union(&recorded).count();
    plan.named_images = named.len();

    let mut live_blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut live_layers: BTreeSet<String> = BTreeSet::new();
    // The layers live images are made of.
    let mut live_diff_ids: BTreeSet<Digest> = BTreeSet::new();
    for (_, r) in &names {
        if let Some(m) = r.manifest {
            live_blobs.insert(m);
            if let Ok(bytes) = state.content.read(&m)
                && let Ok(man) = serde_json::from_slice::<kiln_oci::Manifest>(&bytes)
            {
                live_blobs.insert(man.config.digest);
                live_blobs.extend(man.layers.iter().map(|l| l.digest));
            }
        }
    }
    for id in &live_images {
        live_blobs.insert(*id);
        // The attestations the store keeps for it (`attestations::store_index`).
        live_blobs.extend(crate::attestations::stored_blobs(state, id));
        if let Ok(c) = load_config(state, id) {
            live_diff_ids.extend(c.rootfs.diff_ids.iter().copied());
        }
        live_layers.extend(image_layer_ids(state, id));
    }
    // Cache entries.
    let keys = state.cache.keys().map_err(Error::Cache)?;
    plan.total_cache_entries = keys.len();
    let key_set: BTreeSet<kiln_solver::Key> = keys.iter().copied().collect();
    for key in keys {
        let path = state.cache.path_of(&key);
        let bytes = fs::read(&path).ok();
        // A link to a content key with no entry leads nowhere.
        let dangling = bytes
            .as_deref()
            .and_then(kiln_solver::parse_link)
            .is_some_and(|target| !key_set.contains(&target) || drop.contains(&target));
        let layers: Vec<String> = bytes
            .as_deref()
            .and_then(|b| values.layers(b).ok())
            .unwrap_or_default();
        let broken = dangling
            || layers
                .iter()
                .any(|l| LayerId::parse(l).map_or(true, |l| !state.layers.exists(&l)));
        if broken || drop.contains(&key) || (opts.all && old_enough(mtime(&path))) {
            plan.cache_entries.push(key);
        } else {
            live_layers.extend(layers);
        }
    }
    // Snapshots: the live ones, and those that hold a layer of a live image
    // (unpacked from it, or built: a blob of it can be made again).
    let mut blob_diff_ids = live_diff_ids.clone();
    for l in &state.layers.list()? {
        let Ok(layer) = state.layers.get(l) else {
            continue;
        };
        let size = dir_size(&layer.diff);
        plan.layer_bytes += size;
        let holds_live = labelled_diff_ids(&layer.meta).any(|d| live_diff_ids.contains(&d));
        if live_layers.contains(l.as_str()) || holds_live {
            // Cached layers keep the blobs made of their tars.
            blob_diff_ids.extend(labelled_diff_ids(&layer.meta));
        } else {
            plan.layers.push((l.clone(), size));
        }
    }
    for d in &blob_diff_ids {
        for (_, desc) in state.layer_blobs.list(d)? {
            live_blobs.insert(desc.digest);
        }
    }
    plan.layer_records = state
        .layer_blobs
        .diff_ids()?
        .into_iter()
        .filter(|d| !blob_diff_ids.contains(d))
        .collect();
    // Blobs.
    for d in state.content.digests()? {
        let size = state.content.size(&d).unwrap_or(0);
        plan.blob_bytes += size;
        if !live_blobs.contains(&d) {
            plan.blobs.push((d, size));
        }
    }
    Ok(plan)
}

/// Applies a plan (with the store lock held exclusively). What refers goes
/// before what it refers to, so a sweep that dies halfway leaves nothing
/// that names what is gone.
pub fn sweep(state: &State, plan: &Plan) -> Result<(), Error> {
    for id in &plan.images {
        remove_record(state, id)?;
        crate::attestations::forget(state, id);
    }
    // image-layers records of images that are gone, or whose snapshots go.
    let keep = {
        let mut k: BTreeSet<Digest> = records(state)?;
        k.extend(state.images.list()?.into_iter().map(|(_, r)| r.id));
        k
    };
    let doomed: BTreeSet<&str> = plan.layers.iter().map(|(l, _)| l.as_str()).collect();
    if let Ok(rd) = fs::read_dir(state.root.join("image-layers")) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Debris of a killed writer (no build runs while this runs).
            if kiln_oci::temp_owner(&name).is_some() {
                let _ = fs::remove_file(e.path());
                continue;
            }
            let id = format!("sha256:{name}").parse::<Digest>().ok();
            if let Some(id) = id
                && (!keep.contains(&id)
                    || state.image_layers(&id).is_none()
                    || image_layer_ids(state, &id)
                        .iter()
                        .any(|l| doomed.contains(l.as_str())))
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    for key in &plan.cache_entries {
        state.cache.remove(key).map_err(Error::Cache)?;
    }
    // Claim lock files (see `DirCache::claims_dir`): no build holds one while
    // the store is held exclusively. Best effort: they are empty files.
    let _ = fs::remove_dir_all(state.cache.claims_dir());
    for (l, _) in &plan.layers {
        state.layers.remove(l)?;
    }
    // A blob's records go before the blob.
    let records = crate::blobs::blob_records(state)?;
    for (d, _) in &plan.blobs {
        crate::blobs::remove_blob(state, d, &records)?;
    }
    for d in &plan.layer_records {
        state.layer_blobs.forget(d)?;
    }
    Ok(())
}

/// One image as `kiln du -v` shows it.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    pub id: Digest,
    /// Its names; empty when dangling.
    pub names: Vec<String>,
    /// Its size, as `kiln images` shows it.
    pub size: u64,
    /// The part of it that other images share (layers they have too).
    pub shared: u64,
}

/// What `kiln du` reports. Sizes are unpacked sizes (see [`crate::blobs`]),
/// and each layer is counted in one row: the images' layers once each, the
/// snapshots only the build cache has, and those nothing has.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub images: Vec<ImageUsage>,
    pub named_images: usize,
    /// Every layer of an image in the store, once.
    pub images_size: u64,
    /// The layers only dangling images have (what `kiln prune` frees of the
    /// images).
    pub images_reclaimable: u64,
    pub cache_entries: usize,
    /// The snapshots cache entries hold that no image has a layer of
    /// (`kiln prune --all` frees it).
    pub cache_size: u64,
    /// The snapshots nothing holds any more (a removed image's layers):
    /// `kiln prune` frees it.
    pub unused_size: u64,
}

/// `kiln du`'s numbers; `values` reads the cache entries' values.
pub fn usage(state: &State, values: &dyn CacheValues) -> Result<Usage, Error> {
    let list = crate::images::list(state)?;
    let keys = state.cache.keys().map_err(Error::Cache)?;
    let mut out = Usage {
        named_images: list.iter().filter(|i| !i.names.is_empty()).count(),
        cache_entries: keys.len(),
        ..Usage::default()
    };
    let mut cached: BTreeSet<String> = BTreeSet::new();
    for key in keys {
        if let Ok(bytes) = fs::read(state.cache.path_of(&key))
            && let Ok(layers) = values.layers(&bytes)
        {
            cached.extend(layers);
        }
    }
    // diffID → its size and the images that have it (named or not).
    let mut layers: std::collections::BTreeMap<Digest, (u64, BTreeSet<Digest>, bool)> =
        std::collections::BTreeMap::new();
    let mut mapped: BTreeSet<String> = BTreeSet::new();
    let mut per_image = Vec::with_capacity(list.len());
    for img in &list {
        let sizes = crate::blobs::layer_sizes(state, &img.id, &img.config);
        for (d, s) in img.config.rootfs.diff_ids.iter().zip(&sizes) {
            let e = layers.entry(*d).or_insert((*s, BTreeSet::new(), false));
            e.1.insert(img.id);
            e.2 |= !img.names.is_empty();
        }
        mapped.extend(image_layer_ids(state, &img.id));
        per_image.push((img, sizes));
    }
    for (img, sizes) in per_image {
        let shared = img
            .config
            .rootfs
            .diff_ids
            .iter()
            .zip(&sizes)
            .filter(|(d, _)| layers.get(*d).is_some_and(|(_, users, _)| users.len() > 1))
            .map(|(_, s)| s)
            .sum();
        out.images.push(ImageUsage {
            id: img.id,
            names: img.names.clone(),
            size: sizes.iter().sum(),
            shared,
        });
    }
    for (size, _, named) in layers.values() {
        out.images_size += size;
        if !named {
            out.images_reclaimable += size;
        }
    }
    for l in &state.layers.list()? {
        let Ok(layer) = state.layers.get(l) else {
            continue;
        };
        let an_image_layer = mapped.contains(l.as_str())
            || labelled_diff_ids(&layer.meta).any(|d| layers.contains_key(&d));
        if an_image_layer {
            continue;
        }
        if cached.contains(l.as_str()) {
            out.cache_size += dir_size(&layer.diff);
        } else {
            out.unused_size += dir_size(&layer.diff);
        }
    }
    Ok(out)
}
