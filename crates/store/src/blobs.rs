//! The layers of stored images: which blob a layer exports with, whether it
//! can be exported at all, and how big it is.
//!
//! A layer (diffID) may have several blobs in the store (`layerblobs/`): the
//! one it came with (import, pull, load), the same layer compressed by
//! another registry or client, and those kiln made for exports. Whatever a
//! name reaches must stay exportable (`save`, `-o`, `push`), so for every
//! layer of every image in the store one of these holds (the store's
//! invariant, which garbage collection keeps and `kiln check` verifies):
//!
//! * the store holds a blob of it (or, for a pulled or loaded name, the blob
//!   its manifest lists), or
//! * a *built* snapshot of it exists: kiln's tar of the snapshot is the
//!   layer (the diffID recorded in its `kiln.tar.diff_id*` label), so a blob
//!   can be made again.
//!
//! An unpacked snapshot does not count: a tar kiln writes of it is generally
//! not the tar it was unpacked from (other headers, times, order). [`blob`]
//! still tries that as a last resort, and keeps the result only when it
//! reproduces the diffID.
//!
//! Which blob an export takes is a function of the image alone, so that an
//! image exports and pushes to the same digest whatever else arrives in the
//! store ([`blob`]).
//!
//! Sizes: kiln's one definition of a layer's size is Docker's, the bytes of
//! the regular files it holds, each file once ([`kiln_oci::tarsize`]). It is
//! recorded per diffID when a layer arrives (import, pull, load, unpack,
//! build) and read back from there ([`layer_size`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use kiln_llb::Digest;
use kiln_oci::{Compression, Descriptor, LoadedLayer, Manifest};
use kiln_snapshot::{LayerId, TarOptions};

use crate::error::Error;
use crate::state::State;

/// Label of unpacked layers: the diffID of the blob they came from.
pub const LABEL_DIFF_ID: &str = "kiln.diff_id";

/// Label of built layers: when the op that made them ran (RFC 3339). The
/// history of an image built from cached layers keeps these times, so an
/// unchanged rebuild gives the same image ID, as with BuildKit; a layer
/// unpacked from an imported cache gets the time the cache recorded.
pub const LABEL_CREATED: &str = "kiln.created";

/// The metadata of a layer an op just made: its creation time, now.
pub fn built_layer_meta() -> kiln_snapshot::LayerMeta {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut meta = kiln_snapshot::LayerMeta::default();
    if let Ok(t) = kiln_oci::rfc3339(
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        now.subsec_nanos(),
    ) {
        meta.labels.insert(LABEL_CREATED.to_owned(), t);
    }
    meta
}

/// Label prefix of built layers: the diffID of their generated tar
/// (suffixed with `@<epoch>` for a clamped tar).
pub const LABEL_TAR: &str = "kiln.tar.diff_id";

/// What a snapshot is to a diffID it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// A built layer whose tar, generated with this mtime clamp, is the
    /// layer: a blob can be made from it.
    Built(LayerId, Option<i64>),
    /// A layer unpacked from a blob of the layer.
    Unpacked(LayerId),
}

/// What snapshot `layer` is to `diff_id`, if it holds it.
pub fn snapshot_of(state: &State, layer: &LayerId, diff_id: &Digest) -> Option<Snapshot> {
    let l = state.layers.get(layer).ok()?;
    let want = diff_id.to_string();
    if l.meta.labels.get(LABEL_DIFF_ID) == Some(&want) {
        return Some(Snapshot::Unpacked(layer.clone()));
    }
    for (k, v) in &l.meta.labels {
        if *v != want {
            continue;
        }
        if k == LABEL_TAR {
            return Some(Snapshot::Built(layer.clone(), None));
        }
        if let Some(e) = k.strip_prefix(LABEL_TAR).and_then(|r| r.strip_prefix('@'))
            && let Ok(e) = e.parse()
        {
            return Some(Snapshot::Built(layer.clone(), Some(e)));
        }
    }
    None
}

/// The snapshots that hold a layer of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders {
    /// The image's own: the snapshot it was built from or unpacked into
    /// (its `image-layers` record), or the one an export was given.
    pub own: Option<Snapshot>,
    /// Others that hold the layer: the unpacked one, a built one with the
    /// layer's (unclamped) diffID.
    pub others: Vec<Snapshot>,
}

impl Holders {
    /// Whether a blob of the layer can be made (a built snapshot holds it).
    pub fn can_make_blob(&self) -> bool {
        self.own
            .iter()
            .chain(&self.others)
            .any(|s| matches!(s, Snapshot::Built(..)))
    }
}

/// The snapshots that hold `diff_id`, layer `i` of image `image`.
pub fn snapshots(state: &State, image: Option<(&Digest, usize)>, diff_id: &Digest) -> Holders {
    let mut out = Holders::default();
    if let Some((id, i)) = image
        && let Some(layers) = state.image_layers(id)
        && let Some(l) = layers.get(i)
    {
        out.own = snapshot_of(state, l, diff_id);
    }
    let key = diff_id.to_string();
    for label in [LABEL_DIFF_ID, LABEL_TAR] {
        if let Ok(Some(l)) = state.layers.find_by_label(label, &key)
            && let Some(s) = snapshot_of(state, &l, diff_id)
            && out.own.as_ref() != Some(&s)
            && !out.others.contains(&s)
        {
            out.others.push(s);
        }
    }
    out
}

/// The recorded blobs of `diff_id` that the store holds, in recorded order.
pub fn stored_blobs(
    state: &State,
    diff_id: &Digest,
) -> Result<Vec<(Compression, Descriptor)>, Error> {
    let mut out = Vec::new();
    for (c, d) in state.layer_blobs.list(diff_id)? {
        if state.content.has(&d.digest)? {
            out.push((c, d));
        }
    }
    Ok(out)
}

/// The blob of layer `diff_id` for an export with `compression`. It is
/// chosen by what the image is, never by what else arrived in the store
/// since, so an image exports and pushes to the same digest for as long as
/// it is in the store:
///
/// 1. `preferred` (the blob a pulled or loaded name's manifest lists for
///    this layer), when the store holds it;
/// 2. a layer the image built (`holders.own` is a built snapshot): the
///    first recorded blob of exactly `compression`, else one made now from
///    the snapshot and recorded (kiln's tar and compressors are
///    deterministic, so it is the same blob on every machine);
/// 3. a layer it did not build keeps the blob it came with: the first
///    recorded blob the store holds (records are never reordered, and a
///    layer's blobs stay while an image has it);
/// 4. for a store that lost that (damage): one made from another built
///    snapshot of the layer, or from an unpacked one if kiln's tar of it
///    reproduces the diffID.
pub fn blob(
    state: &State,
    diff_id: &Digest,
    compression: Compression,
    preferred: Option<&Descriptor>,
    holders: &Holders,
) -> Result<Descriptor, Error> {
    if let Some(p) = preferred
        && state.content.has(&p.digest)?
    {
        return Ok(p.clone());
    }
    if let Some(Snapshot::Built(layer, clamp)) = &holders.own {
        return compress_snapshot(state, layer, *clamp, diff_id, compression);
    }
    if let Some((_, d)) = stored_blobs(state, diff_id)?.first() {
        return Ok(d.clone());
    }
    let all: Vec<&Snapshot> = holders.own.iter().chain(&holders.others).collect();
    if let Some((layer, clamp)) = all.iter().find_map(|s| match s {
        Snapshot::Built(l, c) => Some((l, *c)),
        Snapshot::Unpacked(_) => None,
    }) {
        return compress_snapshot(state, layer, clamp, diff_id, compression);
    }
    let mut last = None;
    for s in all {
        if let Snapshot::Unpacked(l) = s {
            match compress_snapshot(state, l, None, diff_id, compression) {
                Ok(d) => return Ok(d),
                Err(e) => last = Some(e),
            }
        }
    }
    Err(match last {
        Some(e) => Error::NotRemade {
            diff_id: *diff_id,
            error: Box::new(e),
        },
        None => Error::NoBlob { diff_id: *diff_id },
    })
}

/// Compresses kiln's tar of `layer` (with `clamp`) as a blob of `diff_id`
/// (checked) and records it.
pub fn compress_snapshot(
    state: &State,
    layer: &LayerId,
    clamp: Option<i64>,
    diff_id: &Digest,
    compression: Compression,
) -> Result<Descriptor, Error> {
    let diff = state.layers.get(layer)?.diff;
    // The tar is generated on a thread and streamed through a pipe into the
    // compressor; if generating it fails, that error (not the truncated
    // stream's) is the one to report.
    let (tx, rx) = std::sync::mpsc::channel();
    let r = state
        .layer_blobs
        .get_or_compress(&state.content, diff_id, compression, move || {
            let (reader, mut writer) = io::pipe()?;
            std::thread::spawn(move || {
                let r = kiln_snapshot::write_layer_tar(
                    &diff,
                    &mut writer,
                    &TarOptions { mtime_clamp: clamp },
                );
                let _ = tx.send(r.err());
            });
            Ok(reader)
        });
    match r {
        Ok(desc) => Ok(desc),
        Err(e) => match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(Some(tar_error)) => Err(tar_error.into()),
            _ => Err(e.into()),
        },
    }
}

/// The layer blobs of image `id` (config `config`) for an export with
/// `compression`, bottom first. `manifest` is the manifest a name of it
/// records (pulled or loaded): its blobs are preferred.
pub fn image_blobs(
    state: &State,
    id: &Digest,
    config: &kiln_oci::ImageConfigFile,
    manifest: Option<&Digest>,
    compression: Compression,
) -> Result<Vec<Descriptor>, Error> {
    let listed = manifest_layers(state, id, manifest);
    let mut out = Vec::with_capacity(config.rootfs.diff_ids.len());
    for (i, d) in config.rootfs.diff_ids.iter().enumerate() {
        let holders = snapshots(state, Some((id, i)), d);
        out.push(
            blob(state, d, compression, listed.get(i), &holders).map_err(|e| {
                Error::ImageLayer {
                    id: *id,
                    error: Box::new(e),
                }
            })?,
        );
    }
    Ok(out)
}

/// The layers the manifest `manifest` lists, when it is stored and is a
/// manifest of image `id` (else none).
pub fn manifest_layers(state: &State, id: &Digest, manifest: Option<&Digest>) -> Vec<Descriptor> {
    manifest
        .and_then(|m| state.content.read(m).ok())
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .filter(|m| m.config.digest == *id)
        .map(|m| m.layers)
        .unwrap_or_default()
}

/// Whether layer `i` (`diff_id`) of image `id` can be exported without
/// guessing: a stored blob, or a built snapshot (see the module docs).
pub fn exportable(state: &State, id: &Digest, i: usize, diff_id: &Digest) -> Result<bool, Error> {
    if !stored_blobs(state, diff_id)?.is_empty() {
        return Ok(true);
    }
    Ok(snapshots(state, Some((id, i)), diff_id).can_make_blob())
}

/// Records the blobs of layers loaded from an archive or a layout (already
/// in the content store and checked against their diffIDs), and their sizes.
pub fn record_loaded(state: &State, layers: &[LoadedLayer]) -> Result<(), Error> {
    for l in layers {
        state
            .layer_blobs
            .add(&state.content, &l.diff_id, l.compression, &l.descriptor)?;
        state.layer_blobs.set_size(&l.diff_id, l.unpacked_size)?;
    }
    Ok(())
}

/// The unpacked size of layer `diff_id` (see the module docs): the recorded
/// one, else (a store written before sizes were recorded) counted from a
/// snapshot of it or from a stored blob, and recorded; 0 when none is there.
pub fn layer_size(state: &State, diff_id: &Digest, snapshot: Option<&LayerId>) -> u64 {
    if let Ok(Some(s)) = state.layer_blobs.size(diff_id) {
        return s;
    }
    let unpacked = state
        .layers
        .find_by_label(LABEL_DIFF_ID, &diff_id.to_string())
        .ok()
        .flatten();
    let counted = snapshot
        .into_iter()
        .chain(unpacked.as_ref())
        .find_map(|l| state.layers.get(l).ok())
        .map(|layer| dir_size(&layer.diff))
        .or_else(|| {
            let blobs = stored_blobs(state, diff_id).ok()?;
            let (_, d) = blobs.first()?;
            kiln_oci::verify_blob(&state.content, &d.digest, diff_id).ok()
        });
    match counted {
        Some(size) => {
            // Best effort: the next look is one file read.
            let _ = state.layer_blobs.set_size(diff_id, size);
            size
        }
        None => 0,
    }
}

/// The size of each layer of image `id`, bottom first.
pub fn layer_sizes(state: &State, id: &Digest, config: &kiln_oci::ImageConfigFile) -> Vec<u64> {
    let built = state.image_layers(id).unwrap_or_default();
    config
        .rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| layer_size(state, d, built.get(i)))
        .collect()
}

/// The unpacked size of the layer directory `dir` (overlay upper-dir
/// format): the bytes of its regular files, each inode once, as the tar
/// kiln writes of it holds them (whiteouts and directories are nothing).
pub fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut seen: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    total
}

/// Every recorded blob → the diffIDs whose records name it (for removing
/// blobs: records are forgotten first).
pub fn blob_records(state: &State) -> Result<BTreeMap<Digest, Vec<Digest>>, Error> {
    let mut out: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
    for d in state.layer_blobs.diff_ids()? {
        let Ok(list) = state.layer_blobs.list(&d) else {
            continue;
        };
        for (_, desc) in list {
            out.entry(desc.digest).or_default().push(d);
        }
    }
    Ok(out)
}

/// Removes blob `digest` from the content store, forgetting the records
/// that name it first (`records`: see [`blob_records`]), so that no record
/// names a blob the store does not hold, whenever the process dies.
pub fn remove_blob(
    state: &State,
    digest: &Digest,
    records: &BTreeMap<Digest, Vec<Digest>>,
) -> Result<(), Error> {
    for diff_id in records.get(digest).into_iter().flatten() {
        state.layer_blobs.remove_blob(diff_id, digest)?;
    }
    state.content.remove(digest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dir_size_counts_regular_files_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/one"), [1u8; 1000]).unwrap();
        std::fs::hard_link(p.join("a/one"), p.join("a/b/link")).unwrap();
        std::fs::write(p.join("a/b/two"), [2u8; 24]).unwrap();
        std::fs::write(p.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("a/one", p.join("sym")).unwrap();
        assert_eq!(dir_size(p), 1024);
        assert_eq!(dir_size(&p.join("missing")), 0);
    }
}
