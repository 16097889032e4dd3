//! The content store: blobs named by their SHA-256 digest.
//!
//! Layout under the store's directory (`<state>/blobs`):
//!
//! ```text
//! sha256/<hex>     committed blobs, read-only (0444), never modified
//! ingest/<name>    blobs being written (one per live BlobWriter)
//! ```
//!
//! A blob reaches `sha256/` only by `rename` from `ingest/` after it was written
//! completely, fsynced and hashed, so a corrupt or partial blob can never appear
//! under a digest (the invariant every reader relies on). When the caller states
//! the digest it expects, a mismatch deletes the temp file and fails: nothing is
//! left behind. A blob that already exists is not written twice.
//!
//! Crash debris: a writer holds an exclusive `flock` on its ingest file for its
//! whole life. [`ContentStore::cleanup`] (run by [`ContentStore::open`]) removes
//! exactly the ingest files whose lock it can take, i.e. whose writer is gone
//! (the kernel drops the lock when a process dies). No timestamps or pid
//! guesses are involved, so it is safe while other kiln processes write. A
//! writer re-checks after locking that its file is still linked (a cleanup could
//! have deleted it between create and lock) and starts over if not.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_llb::Digest;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::atomic::{create_temp, sync_dir};
use crate::hashing;
use crate::json::{JsonError, to_canonical_json};

/// [`ContentStore::read`] refuses blobs larger than this (manifests and configs
/// are far smaller; registries cap manifests at 4 MiB). Layers are streamed
/// with [`ContentStore::open_blob`].
pub const MAX_READ: u64 = 64 << 20;

/// Errors of the content store. Each names the blob or path involved.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A filesystem operation failed.
    #[error("content store: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The blob is not in the store.
    #[error("blob {digest} not found in the content store ({path})")]
    NotFound { digest: Digest, path: PathBuf },
    /// What was written does not hash to the digest the caller expected.
    #[error(
        "blob digest mismatch: expected {expected}, got {actual} ({size} bytes); nothing was stored"
    )]
    Mismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    /// A stored blob no longer hashes to its name (disk corruption, tampering).
    #[error("blob {digest} is corrupt: its content hashes to {actual} ({path})")]
    Corrupt {
        digest: Digest,
        actual: Digest,
        path: PathBuf,
    },
    /// [`ContentStore::read`] of a blob above [`MAX_READ`].
    #[error("blob {digest} is {size} bytes, too large to read into memory (limit {MAX_READ})")]
    TooLarge { digest: Digest, size: u64 },
    /// A value could not be encoded as JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The digest and size of a stored blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// A directory of blobs named by digest. Cheap to clone; all methods take
/// `&self` and are safe to call from several threads and processes at once.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store in `dir`, and removes ingest files
    /// left by writers that died.
    pub fn open(dir: impl AsRef<Path>) -> Result<ContentStore, ContentError> {
        let root = dir.as_ref().to_path_buf();
        for sub in ["sha256", "ingest"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
        }
        let store = ContentStore { root };
        store.cleanup()?;
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    /// Whether the blob is in the store.
    pub fn has(&self, digest: &Digest) -> Result<bool, ContentError> {
        let p = self.path(digest);
        p.try_exists().map_err(io_err("stat", &p))
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, ContentError> {
        let p = self.path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) => Err(self.not_found_or(digest, &p, "stat", e)),
        }
    }

    /// Opens a stored blob for streaming.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| self.not_found_or(digest, &p, "open", e))
    }

    /// Reads a small stored blob (manifest, config, index) into memory.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let p = self.path(digest);
        let f = self.open_blob(digest)?;
        let size = f.metadata().map_err(io_err("stat", &p))?.len();
        if size > MAX_READ {
            return Err(ContentError::TooLarge {
                digest: *digest,
                size,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        f.take(MAX_READ + 1)
            .read_to_end(&mut buf)
            .map_err(io_err("read", &p))?;
        Ok(buf)
    }

    /// Re-hashes a stored blob and checks it still matches its name.
    pub fn verify(&self, digest: &Digest) -> Result<BlobInfo, ContentError> {
        let p = self.path(digest);
        let f = self.open_blob(digest)?;
        let mut r = hashing::HashingReader::new(f);
        io::copy(&mut r, &mut io::sink()).map_err(io_err("read", &p))?;
        let (actual, size, _) = r.finish();
        if actual != *digest {
            return Err(ContentError::Corrupt {
                digest: *digest,
                actual,
                path: p,
            });
        }
        Ok(BlobInfo {
            digest: actual,
            size,
        })
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter, ContentError> {
        let ingest = self.root.join("ingest");
        loop {
            let (temp, file) = create_temp(&ingest, "blob").map_err(io_err("create", &ingest))?;
            let lock_fd = file.try_clone().map_err(io_err("dup", &temp))?;
            let lock = match Flock::lock(lock_fd, FlockArg::LockExclusive) {
                Ok(l) => l,
                Err((_, errno)) => return Err(io_err("lock", &temp)(errno.into())),
            };
            // A concurrent cleanup may have unlinked the file before we locked
            // it; then start over with a new one.
            let linked = file.metadata().map_err(io_err("stat", &temp))?;
            if std::os::unix::fs::MetadataExt::nlink(&linked) == 0 {
                continue;
            }
            return Ok(BlobWriter {
                out: BufWriter::with_capacity(128 << 10, file),
                _lock: lock,
                temp: Some(temp),
                root: self.root.clone(),
                hasher: Sha256::new(),
                size: 0,
            });
        }
    }

    /// Stores `bytes` and returns their digest and size.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobInfo, ContentError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(|e| w.io_error("write", e))?;
        w.commit(None)
    }

    /// Streams `reader` into the store, verifying `expected` when given.
    pub fn put_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<BlobInfo, ContentError> {
        let mut w = self.writer()?;
        io::copy(&mut reader, &mut w).map_err(|e| w.io_error("copy into", e))?;
        w.commit(expected)
    }

    /// Stores the canonical JSON of `value` (see [`to_canonical_json`]).
    pub fn put_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<BlobInfo, ContentError> {
        let bytes = to_canonical_json(value)?;
        self.put_bytes(&bytes)
    }

    /// Deletes a blob. Returns whether it existed. (For garbage collection: the
    /// caller must know nothing references it.)
    pub fn remove(&self, digest: &Digest) -> Result<bool, ContentError> {
        let p = self.path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    /// Every blob in the store, sorted. Files under `sha256/` whose names are
    /// not 64 lowercase hex characters are ignored.
    pub fn digests(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = self.root.join("sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            if let Some(Ok(d)) = name
                .to_str()
                .map(|n| format!("sha256:{n}").parse::<Digest>())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes ingest files whose writer is gone (its `flock` is free). Returns
    /// how many were removed. Safe to run while other processes write.
    pub fn cleanup(&self) -> Result<usize, ContentError> {
        let ingest = self.root.join("ingest");
        let mut removed = 0;
        for entry in fs::read_dir(&ingest).map_err(io_err("list", &ingest))? {
            let entry = entry.map_err(io_err("list", &ingest))?;
            let path = entry.path();
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open", &path)(e)),
            };
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(_lock) => match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &path)(e)),
                },
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {} // a live writer
                Err((_, errno)) => return Err(io_err("lock", &path)(errno.into())),
            }
        }
        Ok(removed)
    }

    fn not_found_or(
        &self,
        digest: &Digest,
        p: &Path,
        op: &'static str,
        e: io::Error,
    ) -> ContentError {
        if e.kind() == io::ErrorKind::NotFound {
            ContentError::NotFound {
                digest: *digest,
                path: p.to_path_buf(),
            }
        } else {
            io_err(op, p)(e)
        }
    }
}

/// A blob being written: implements [`Write`], hashing as it goes, into a
/// temporary file of the store. [`BlobWriter::commit`] makes it visible under
/// its digest; dropping it without committing deletes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    out: BufWriter<File>,
    _lock: Flock<File>,
    temp: Option<PathBuf>,
    root: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.size
    }

    /// Finishes the blob: flush, fsync, and — if its digest equals `expected`
    /// (when given) — rename it into place (or drop it if the store already has
    /// it). On a mismatch nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<BlobInfo, ContentError> {
        let temp = self.temp.clone().unwrap_or_default();
        self.out.flush().map_err(io_err("write", &temp))?;
        let hasher = std::mem::take(&mut self.hasher);
        let digest = hashing::finish(hasher);
        let size = self.size;
        if let Some(exp) = expected
            && *exp != digest
        {
            // Drop deletes the temp file.
            return Err(ContentError::Mismatch {
                expected: *exp,
                actual: digest,
                size,
            });
        }
        let dest = self.root.join("sha256").join(digest.hex());
        let info = BlobInfo { digest, size };
        if dest.exists() {
            return Ok(info); // dedup: Drop removes the temp file
        }
        let file = self.out.get_ref();
        file.sync_all().map_err(io_err("fsync", &temp))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err("chmod", &temp))?;
        fs::rename(&temp, &dest).map_err(io_err("rename", &temp))?;
        self.temp = None;
        let dir = self.root.join("sha256");
        sync_dir(&dir).map_err(io_err("fsync", &dir))?;
        Ok(info)
    }

    fn io_error(&self, op: &'static str, e: io::Error) -> ContentError {
        ContentError::Io {
            op,
            path: self.temp.clone().unwrap_or_default(),
            source: e,
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = fs::remove_file(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path().join("blobs")).unwrap();
        (dir, s)
    }

    fn ingest_files(s: &ContentStore) -> usize {
        fs::read_dir(s.root().join("ingest")).unwrap().count()
    }

    #[test]
    fn put_read_has_size_path() {
        let (_d, s) = store();
        let info = s.put_bytes(b"hello").unwrap();
        assert_eq!(info.digest, Digest::of(b"hello"));
        assert_eq!(info.size, 5);
        assert!(s.has(&info.digest).unwrap());
        assert_eq!(s.size(&info.digest).unwrap(), 5);
        assert_eq!(s.read(&info.digest).unwrap(), b"hello");
        assert_eq!(fs::read(s.path(&info.digest)).unwrap(), b"hello");
        let mode = fs::metadata(s.path(&info.digest))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert_eq!(s.digests().unwrap(), vec![info.digest]);
        assert_eq!(s.verify(&info.digest).unwrap(), info);
        assert_eq!(ingest_files(&s), 0);
    }

    #[test]
    fn writer_streams_and_commit_verifies() {
        let (_d, s) = store();
        let data = vec![7u8; 300_000];
        let mut w = s.writer().unwrap();
        for chunk in data.chunks(1000) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.written(), 300_000);
        let info = w.commit(Some(&Digest::of(&data))).unwrap();
        assert_eq!(info.size, 300_000);
        assert_eq!(s.size(&info.digest).unwrap(), 300_000);
    }

    #[test]
    fn mismatch_is_rejected_and_leaves_nothing() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"actual").unwrap();
        let wrong = Digest::of(b"expected");
        let err = w.commit(Some(&wrong)).unwrap_err();
        assert!(matches!(err, ContentError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains(&wrong.to_string()));
        assert!(!s.has(&wrong).unwrap());
        assert!(!s.has(&Digest::of(b"actual")).unwrap());
        assert_eq!(ingest_files(&s), 0);
        assert!(s.digests().unwrap().is_empty());
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"partial").unwrap();
        assert_eq!(ingest_files(&s), 1);
        drop(w);
        assert_eq!(ingest_files(&s), 0);
        assert!(s.digests().unwrap().is_empty());
    }

    #[test]
    fn dedup_keeps_one_copy() {
        let (_d, s) = store();
        let a = s.put_bytes(b"same").unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(s.path(&a.digest)).unwrap());
        let b = s.put_reader(&b"same"[..], Some(&a.digest)).unwrap();
        assert_eq!(a, b);
        let inode2 = std::os::unix::fs::MetadataExt::ino(&fs::metadata(s.path(&a.digest)).unwrap());
        assert_eq!(inode, inode2, "the existing blob is not replaced");
        assert_eq!(s.digests().unwrap().len(), 1);
        assert_eq!(ingest_files(&s), 0);
    }

    #[test]
    fn cleanup_removes_only_abandoned_ingest_files() {
        let (_d, s) = store();
        // Debris of a crashed writer: an ingest file nobody holds a lock on.
        fs::write(s.root().join("ingest/.tmp-999999-0-blob"), b"junk").unwrap();
        // A live writer in this process.
        let mut live = s.writer().unwrap();
        live.write_all(b"in progress").unwrap();
        live.flush().unwrap();
        assert_eq!(ingest_files(&s), 2);
        assert_eq!(s.cleanup().unwrap(), 1);
        assert_eq!(ingest_files(&s), 1);
        let info = live.commit(None).unwrap();
        assert_eq!(s.read(&info.digest).unwrap(), b"in progress");
        // Reopening the store also cleans.
        fs::write(s.root().join("ingest/.tmp-999999-1-blob"), b"junk").unwrap();
        let s2 = ContentStore::open(s.root()).unwrap();
        assert_eq!(ingest_files(&s2), 0);
    }

    #[test]
    fn missing_blob_errors_name_the_digest() {
        let (_d, s) = store();
        let d = Digest::of(b"nope");
        for err in [
            s.read(&d).unwrap_err(),
            s.size(&d).unwrap_err(),
            s.open_blob(&d).map(|_| ()).unwrap_err(),
        ] {
            assert!(matches!(err, ContentError::NotFound { .. }));
            assert!(err.to_string().contains(&d.to_string()), "{err}");
        }
        assert!(!s.remove(&d).unwrap());
    }

    #[test]
    fn verify_detects_corruption() {
        let (_d, s) = store();
        let info = s.put_bytes(b"good").unwrap();
        let p = s.path(&info.digest);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"evil").unwrap();
        assert!(matches!(
            s.verify(&info.digest),
            Err(ContentError::Corrupt { .. })
        ));
        assert!(s.remove(&info.digest).unwrap());
        assert!(!s.has(&info.digest).unwrap());
    }

    #[test]
    fn concurrent_writers_of_the_same_blob() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| s.put_bytes(&data).unwrap());
            }
        });
        assert_eq!(s.digests().unwrap(), vec![Digest::of(&data)]);
        assert_eq!(s.read(&Digest::of(&data)).unwrap(), data);
        assert_eq!(ingest_files(&s), 0);
    }
}
