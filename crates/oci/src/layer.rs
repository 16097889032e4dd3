//! Layer blobs: making compressed blobs from layer tars, and remembering
//! which blobs exist for which diffID (`<state>/layerblobs`).
//!
//! A layer has one identity, its diffID (the digest of the uncompressed tar,
//! what the image config lists), one size (its unpacked size, see
//! [`crate::tarsize`]) and any number of blobs: the one it was imported,
//! pulled or loaded with, others of the same layer compressed elsewhere (a
//! registry's gzip is not kiln's), and those kiln makes for an export, one per
//! compression, lazily, then reused. Blobs made by kiln are keyed by the exact
//! [`Compression`] including its level, because the level determines the
//! bytes: reusing a level-9 blob for a level-6 request would make the exported
//! digest depend on what happened to be cached (BuildKit reuses any blob of
//! the algorithm unless `force-compression` is set; kiln prefers reproducible
//! digests).
//!
//! Files: `layerblobs/<diffID hex>.json`, canonical JSON
//! `{"blobs":[{"compression":{…},"descriptor":{…}}],"size":N}`. The blobs are
//! in the order they were recorded and a record is never replaced, so the
//! first blob of a compression stays the layer's own: what an image that uses
//! the layer exports does not change when the same layer arrives in another
//! blob. Changes are read-modify-writes under an exclusive `flock` on the
//! directory with atomic replacement, as in [`crate::index`].
//!
//! **Invariant:** a record never names a blob the content store does not
//! hold. [`LayerBlobs::add`] refuses a blob that is not stored, and whoever
//! removes blobs (garbage collection, `kiln check --repair`) forgets their
//! records first ([`LayerBlobs::remove_blob`]).
//!
//! [`compress_layer`] and [`ingest_layer`] stream in one pass: decompress (if
//! needed) → hash the tar (diffID) and count its files (size) → compress →
//! hash and store the blob. A layer is never held in memory.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_llb::Digest;
use serde::{Deserialize, Serialize};

use crate::atomic::{DirLock, Durability, remove_stale_temps_once, write_atomic_with};
use crate::compression::{self, Compression, Format};
use crate::content::{ContentError, ContentStore};
use crate::hashing::HashingReader;
use crate::json::{JsonError, to_canonical_json};
use crate::manifest::Descriptor;
use crate::media::MediaTypes;
use crate::tarsize::UnpackedSize;

/// Errors of layer handling. Each names the layer or file involved.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer blobs: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Reading, decompressing or compressing the layer stream failed.
    #[error("layer stream ({what}): {source}")]
    Stream { what: String, source: io::Error },
    #[error("layer blob record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A regenerated layer tar does not hash to the diffID it was made for
    /// (the tar generator is not deterministic, or the layer changed).
    #[error("layer {expected}: regenerated tar has diffID {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    /// A blob does not unpack to the layer it is given for.
    #[error("layer blob {blob} unpacks to {actual}, not to the layer {expected}")]
    BlobMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    /// [`LayerBlobs::add`] of a blob the content store does not hold.
    #[error("layer {diff_id}: blob {blob} is not in the content store; it cannot be recorded")]
    NotStored { diff_id: Digest, blob: Digest },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// A layer blob in the content store and the diffID of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The stored blob, with the OCI layer media type of its compression (see
    /// [`Compression::layer_media_type`] for Docker types).
    pub descriptor: Descriptor,
    /// What the input was (for [`ingest_layer`]; `Tar` or `Unknown` when it was
    /// not compressed).
    pub source_format: Format,
    /// The layer's unpacked size (see [`crate::tarsize`]).
    pub unpacked_size: u64,
}

/// Compresses an uncompressed layer tar into the store.
pub fn compress_layer(
    store: &ContentStore,
    tar: impl Read,
    compression: Compression,
) -> Result<LayerBlob, LayerError> {
    write_layer(store, Box::new(tar), Format::Tar, compression)
}

/// Stores a layer given in any format (tar, tar.gz, tar.zst, tar.bz2, tar.xz,
/// detected by magic bytes) as a `target`-compressed blob, computing the
/// diffID on the way.
pub fn ingest_layer(
    store: &ContentStore,
    input: impl Read,
    target: Compression,
) -> Result<LayerBlob, LayerError> {
    let (format, reader) = compression::decompress(input).map_err(|source| LayerError::Stream {
        what: "detecting compression".into(),
        source,
    })?;
    write_layer(store, reader, format, target)
}

fn write_layer(
    store: &ContentStore,
    tar: Box<dyn Read + '_>,
    source_format: Format,
    compression: Compression,
) -> Result<LayerBlob, LayerError> {
    let stream = |what: &str| {
        let what = format!("{what} ({source_format} → {compression})");
        move |source| LayerError::Stream { what, source }
    };
    let mut tar = UnpackedSize::new(HashingReader::new(tar));
    let writer = store.writer()?;
    let mut enc = compression
        .encoder(writer)
        .map_err(stream("starting compressor"))?;
    io::copy(&mut tar, &mut enc).map_err(stream("copying"))?;
    let writer = enc.finish().map_err(stream("finishing compressor"))?;
    let blob = writer.commit(None)?;
    let unpacked_size = tar.size();
    let (diff_id, _, _) = tar.into_inner().finish();
    Ok(LayerBlob {
        diff_id,
        descriptor: Descriptor::new(compression.layer_media_type(MediaTypes::Oci), blob),
        source_format,
        unpacked_size,
    })
}

/// Checks that the stored blob `digest` (any compression [`compression::decompress`]
/// reads) unpacks to the layer `diff_id`; returns the layer's unpacked size.
pub fn verify_blob(
    store: &ContentStore,
    digest: &Digest,
    diff_id: &Digest,
) -> Result<u64, LayerError> {
    let f = store.open_blob(digest)?;
    let what = |op: &str| {
        let what = format!("{op} layer blob {digest}");
        move |source| LayerError::Stream { what, source }
    };
    let (_, tar) = compression::decompress(io::BufReader::new(f)).map_err(what("reading"))?;
    let mut r = UnpackedSize::new(HashingReader::new(tar));
    io::copy(&mut r, &mut io::sink()).map_err(what("decompressing"))?;
    let size = r.size();
    let (actual, _, _) = r.into_inner().finish();
    if actual != *diff_id {
        return Err(LayerError::BlobMismatch {
            blob: *digest,
            expected: *diff_id,
            actual,
        });
    }
    Ok(size)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    compression: Compression,
    descriptor: Descriptor,
}

#[derive(Default, Serialize, Deserialize)]
struct RecordFile {
    #[serde(default)]
    blobs: Vec<Record>,
    /// The layer's unpacked size, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

/// The map from diffIDs to their compressed blobs and unpacked sizes.
#[derive(Clone, Debug)]
pub struct LayerBlobs {
    dir: PathBuf,
}

impl LayerBlobs {
    /// Opens (creating if needed) the map in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<LayerBlobs, LayerError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| LayerError::Io {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(LayerBlobs { dir })
    }

    /// The record file of `diff_id` (for messages).
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", diff_id.hex()))
    }

    fn load(&self, diff_id: &Digest) -> Result<RecordFile, LayerError> {
        let path = self.path(diff_id);
        match fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| LayerError::Corrupt { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RecordFile::default()),
            Err(source) => Err(LayerError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// The first recorded blob of `diff_id` with exactly this compression.
    pub fn get(
        &self,
        diff_id: &Digest,
        compression: Compression,
    ) -> Result<Option<Descriptor>, LayerError> {
        Ok(self
            .load(diff_id)?
            .blobs
            .into_iter()
            .find(|r| r.compression == compression)
            .map(|r| r.descriptor))
    }

    /// Every recorded blob of `diff_id`, in the order they were recorded.
    pub fn list(&self, diff_id: &Digest) -> Result<Vec<(Compression, Descriptor)>, LayerError> {
        Ok(self
            .load(diff_id)?
            .blobs
            .into_iter()
            .map(|r| (r.compression, r.descriptor))
            .collect())
    }

    /// The recorded unpacked size of `diff_id`, if known.
    pub fn size(&self, diff_id: &Digest) -> Result<Option<u64>, LayerError> {
        Ok(self.load(diff_id)?.size)
    }

    /// Every diffID with a record, sorted (for `kiln check`).
    pub fn diff_ids(&self) -> Result<Vec<Digest>, LayerError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|source| LayerError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let name = e.file_name();
            if let Some(Ok(d)) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(|hex| format!("sha256:{hex}").parse::<Digest>())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Records that the stored blob `descriptor` is `diff_id` compressed with
    /// `compression`, after the blobs already recorded (a blob recorded
    /// before is left where it is). Refuses a blob `store` does not hold.
    pub fn add(
        &self,
        store: &ContentStore,
        diff_id: &Digest,
        compression: Compression,
        descriptor: &Descriptor,
    ) -> Result<(), LayerError> {
        if self
            .list(diff_id)?
            .iter()
            .any(|(_, d)| d.digest == descriptor.digest)
        {
            return Ok(());
        }
        self.modify(diff_id, Durability::Durable, |f| {
            if !store.has(&descriptor.digest)? {
                return Err(LayerError::NotStored {
                    diff_id: *diff_id,
                    blob: descriptor.digest,
                });
            }
            if !f
                .blobs
                .iter()
                .any(|r| r.descriptor.digest == descriptor.digest)
            {
                f.blobs.push(Record {
                    compression,
                    descriptor: descriptor.clone(),
                });
            }
            Ok(())
        })
    }

    /// Records the unpacked size of `diff_id` (when it was not known).
    pub fn set_size(&self, diff_id: &Digest, size: u64) -> Result<(), LayerError> {
        if self.size(diff_id)?.is_some() {
            return Ok(());
        }
        // Recorded for every new layer an image is made of; a size lost in a
        // crash of the machine is counted again (`kiln_store::blobs`).
        self.modify(diff_id, Durability::Complete, |f| {
            f.size.get_or_insert(size);
            Ok(())
        })
    }

    /// Forgets the blob `blob` of `diff_id` (before it is removed from the
    /// content store: garbage collection, repairs).
    pub fn remove_blob(&self, diff_id: &Digest, blob: &Digest) -> Result<(), LayerError> {
        self.modify(diff_id, Durability::Durable, |f| {
            f.blobs.retain(|r| r.descriptor.digest != *blob);
            Ok(())
        })
    }

    /// Forgets everything about `diff_id` (garbage collection of a layer no
    /// image uses, once its blobs are forgotten and removed).
    pub fn forget(&self, diff_id: &Digest) -> Result<(), LayerError> {
        self.modify(diff_id, Durability::Durable, |f| {
            *f = RecordFile::default();
            Ok(())
        })
    }

    /// Changes the record of `diff_id` under the directory lock, written as
    /// durably as `durability` says.
    fn modify(
        &self,
        diff_id: &Digest,
        durability: Durability,
        change: impl FnOnce(&mut RecordFile) -> Result<(), LayerError>,
    ) -> Result<(), LayerError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LayerError::Io { op, path, source }
        };
        let _lock = DirLock::exclusive(&self.dir).map_err(io("lock", &self.dir))?;
        remove_stale_temps_once(&self.dir).map_err(io("clean", &self.dir))?;
        let mut file = self.load(diff_id)?;
        change(&mut file)?;
        let path = self.path(diff_id);
        if file.blobs.is_empty() && file.size.is_none() {
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("remove", &path)(e)),
            };
        }
        let bytes = to_canonical_json(&file)?;
        write_atomic_with(&path, &bytes, durability).map_err(io("write", &path))
    }

    /// The blob of `diff_id` with `compression`: the first recorded one of
    /// that compression the store holds, otherwise made now from the tar that
    /// `open_tar` returns (checked to hash to `diff_id`), stored and recorded.
    pub fn get_or_compress<R: Read>(
        &self,
        store: &ContentStore,
        diff_id: &Digest,
        compression: Compression,
        open_tar: impl FnOnce() -> io::Result<R>,
    ) -> Result<Descriptor, LayerError> {
        for (c, d) in self.list(diff_id)? {
            if c == compression && store.has(&d.digest)? {
                return Ok(d);
            }
        }
        let tar = open_tar().map_err(|source| LayerError::Stream {
            what: format!("opening the tar of layer {diff_id}"),
            source,
        })?;
        let blob = compress_layer(store, tar, compression)?;
        if blob.diff_id != *diff_id {
            return Err(LayerError::DiffIdMismatch {
                expected: *diff_id,
                actual: blob.diff_id,
            });
        }
        self.add(store, diff_id, compression, &blob.descriptor)?;
        self.set_size(diff_id, blob.unpacked_size)?;
        Ok(blob.descriptor)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::media;

    fn tar_bytes(content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", content).unwrap();
        b.into_inner().unwrap()
    }

    fn setup() -> (tempfile::TempDir, ContentStore, LayerBlobs) {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(d.path().join("blobs")).unwrap();
        let l = LayerBlobs::open(d.path().join("layerblobs")).unwrap();
        (d, s, l)
    }

    #[test]
    fn compress_layer_reports_diff_id_and_blob() {
        let (_d, s, _) = setup();
        let tar = tar_bytes(b"hello\n");
        let b = compress_layer(&s, &tar[..], Compression::gzip()).unwrap();
        assert_eq!(b.diff_id, Digest::of(&tar));
        assert_eq!(b.descriptor.media_type, media::OCI_LAYER_GZIP);
        let blob = s.read(&b.descriptor.digest).unwrap();
        assert_eq!(b.descriptor.size, blob.len() as u64);
        assert_eq!(&blob[..3], &[0x1f, 0x8b, 8]);
        // Deterministic: the same tar gives the same blob.
        let again = compress_layer(&s, &tar[..], Compression::gzip()).unwrap();
        assert_eq!(again, b);
        // Uncompressed: the blob is the tar.
        let u = compress_layer(&s, &tar[..], Compression::Uncompressed).unwrap();
        assert_eq!(u.descriptor.digest, u.diff_id);
        assert_eq!(u.descriptor.media_type, media::OCI_LAYER_TAR);
    }

    #[test]
    fn ingest_any_format_to_any_target() {
        let (_d, s, _) = setup();
        let tar = tar_bytes(b"some content");
        let gz = {
            let mut e = Compression::gzip().encoder(Vec::new()).unwrap();
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        for (input, fmt) in [(&tar, Format::Tar), (&gz, Format::Gzip), (&xz, Format::Xz)] {
            for target in [
                Compression::Uncompressed,
                Compression::gzip(),
                Compression::zstd(),
            ] {
                let b = ingest_layer(&s, &input[..], target).unwrap();
                assert_eq!(b.source_format, fmt);
                assert_eq!(b.diff_id, Digest::of(&tar), "{fmt} → {target}");
                let (f, mut r) =
                    compression::decompress(s.open_blob(&b.descriptor.digest).unwrap()).unwrap();
                assert_eq!(f, target.format());
                let mut out = Vec::new();
                r.read_to_end(&mut out).unwrap();
                assert_eq!(out, tar);
            }
        }
        // A corrupt gzip stream is an error, and nothing is stored.
        let before = s.digests().unwrap();
        let mut bad = gz.clone();
        let n = bad.len();
        bad.truncate(n / 2);
        let e = ingest_layer(&s, &bad[..], Compression::gzip()).unwrap_err();
        assert!(matches!(e, LayerError::Stream { .. }), "{e}");
        assert_eq!(s.digests().unwrap(), before);
    }

    #[test]
    fn blob_map_add_get_list_remove() {
        let (d, s, l) = setup();
        let tar = tar_bytes(b"x");
        let gz = compress_layer(&s, &tar[..], Compression::gzip()).unwrap();
        let diff = gz.diff_id;
        assert_eq!(gz.unpacked_size, 1);
        assert_eq!(l.get(&diff, Compression::gzip()).unwrap(), None);
        l.add(&s, &diff, Compression::gzip(), &gz.descriptor)
            .unwrap();
        assert_eq!(
            l.get(&diff, Compression::gzip()).unwrap(),
            Some(gz.descriptor.clone())
        );
        // Exact level match only.
        assert_eq!(l.get(&diff, Compression::Gzip { level: 9 }).unwrap(), None);
        let zs = compress_layer(&s, &tar[..], Compression::zstd()).unwrap();
        l.add(&s, &diff, Compression::zstd(), &zs.descriptor)
            .unwrap();
        // The same layer in another gzip blob (compressed elsewhere) is
        // recorded after the first, which stays the layer's own.
        let other_gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
            e.write_all(&tar).unwrap();
            s.put_bytes(&e.finish().unwrap()).unwrap()
        };
        let other = Descriptor::new(media::OCI_LAYER_GZIP, other_gz);
        l.add(&s, &diff, Compression::gzip(), &other).unwrap();
        l.add(&s, &diff, Compression::gzip(), &gz.descriptor)
            .unwrap();
        let all = l.list(&diff).unwrap();
        assert_eq!(
            all.iter().map(|(_, d)| d.digest).collect::<Vec<_>>(),
            vec![gz.descriptor.digest, zs.descriptor.digest, other.digest]
        );
        assert_eq!(
            l.get(&diff, Compression::gzip()).unwrap(),
            Some(gz.descriptor.clone())
        );
        // A blob the store does not hold is never recorded.
        let missing = Descriptor::new(
            media::OCI_LAYER_GZIP,
            crate::BlobInfo {
                digest: Digest::of(b"not stored"),
                size: 1,
            },
        );
        let e = l.add(&s, &diff, Compression::gzip(), &missing).unwrap_err();
        assert!(matches!(e, LayerError::NotStored { .. }), "{e}");
        assert_eq!(l.list(&diff).unwrap().len(), 3);
        // Sizes are kept with the record, and only the first one counts.
        assert_eq!(l.size(&diff).unwrap(), None);
        l.set_size(&diff, 1).unwrap();
        l.set_size(&diff, 99).unwrap();
        assert_eq!(l.size(&diff).unwrap(), Some(1));
        for b in [gz.descriptor.digest, zs.descriptor.digest, other.digest] {
            l.remove_blob(&diff, &b).unwrap();
        }
        assert!(l.list(&diff).unwrap().is_empty());
        assert_eq!(l.size(&diff).unwrap(), Some(1));
        assert_eq!(l.diff_ids().unwrap(), vec![diff]);
        l.forget(&diff).unwrap();
        assert_eq!(
            fs::read_dir(d.path().join("layerblobs")).unwrap().count(),
            0
        );
        // Corrupt record: an error naming the file.
        fs::write(l.path(&diff), b"[").unwrap();
        let e = l.get(&diff, Compression::gzip()).unwrap_err();
        assert!(e.to_string().contains(&diff.hex()), "{e}");
    }

    #[test]
    fn verify_blob_checks_the_layer_and_counts_it() {
        let (_d, s, _) = setup();
        let tar = tar_bytes(b"twelve bytes");
        let gz = compress_layer(&s, &tar[..], Compression::gzip()).unwrap();
        assert_eq!(
            verify_blob(&s, &gz.descriptor.digest, &gz.diff_id).unwrap(),
            12
        );
        let e = verify_blob(&s, &gz.descriptor.digest, &Digest::of(b"other")).unwrap_err();
        assert!(matches!(e, LayerError::BlobMismatch { .. }), "{e}");
        let e = verify_blob(&s, &Digest::of(b"absent"), &gz.diff_id).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }

    #[test]
    fn get_or_compress_is_lazy_and_checks_the_diff_id() {
        let (_d, s, l) = setup();
        let tar = tar_bytes(b"lazy");
        let diff = Digest::of(&tar);
        let mut calls = 0;
        let d1 = l
            .get_or_compress(&s, &diff, Compression::gzip(), || {
                calls += 1;
                Ok(&tar[..])
            })
            .unwrap();
        let d2 = l
            .get_or_compress(&s, &diff, Compression::gzip(), || -> io::Result<&[u8]> {
                panic!("must reuse the recorded blob")
            })
            .unwrap();
        assert_eq!((d1.clone(), calls), (d2, 1));
        // If the blob was garbage-collected from the store, it is made again.
        s.remove(&d1.digest).unwrap();
        let d3 = l
            .get_or_compress(&s, &diff, Compression::gzip(), || Ok(&tar[..]))
            .unwrap();
        assert_eq!(d3, d1);
        assert!(s.has(&d1.digest).unwrap());
        // A tar that does not match the diffID is refused.
        let other = tar_bytes(b"other");
        let e = l
            .get_or_compress(&s, &diff, Compression::zstd(), || Ok(&other[..]))
            .unwrap_err();
        assert!(matches!(e, LayerError::DiffIdMismatch { .. }), "{e}");
        assert_eq!(l.get(&diff, Compression::zstd()).unwrap(), None);
        assert_eq!(l.size(&diff).unwrap(), Some(4));
    }
}
