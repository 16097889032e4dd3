//! A persistent map from a file's stat to its content digest, so that a
//! rebuild with unchanged files reads no file contents.
//!
//! Keyed by the file's path inside its tree; an entry is trusted only while
//! size, mtime, ctime, inode, device and mode all still agree. ctime and the
//! inode catch what size and mtime miss (`touch -r`, a file replaced by
//! another with the same size and mtime).
//!
//! A file changed in the same clock tick as it was hashed could keep its
//! stat, so an entry whose ctime is not strictly older than the start of the
//! digest that hashed it is "racily clean" (git's term) and is not trusted
//! or saved: it is hashed again next time, when its ctime is in the past.
//!
//! One cache per tree root: keys are in-tree paths.
//!
//! # File format (version 1)
//!
//! ```text
//! "KILNSTAT" u32:version=1 u64:count
//! count × { u32:path_len path u64:size i64:mtime_ns i64:ctime_ns
//!           u64:ino u64:dev u32:mode [32]sha256 }
//! [32]sha256 of everything before it
//! ```
//!
//! Integers are big-endian. A missing, truncated, corrupt or
//! other-version file loads as an empty cache: the cache can only ever make
//! a build faster, never fail it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::ContextError;

const MAGIC: &[u8; 8] = b"KILNSTAT";
const VERSION: u32 = 1;

/// The stat fields an entry is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatKey {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    key: StatKey,
    sha: [u8; 32],
    /// Looked up or stored since load: kept on save.
    seen: bool,
}

/// Content digests of files by stat (see the module docs).
#[derive(Debug, Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    entries: HashMap<Vec<u8>, CacheEntry>,
    /// An entry was added or removed since load.
    changed: bool,
}

impl StatCache {
    /// An empty cache that is never saved.
    pub fn in_memory() -> StatCache {
        StatCache::default()
    }

    /// The cache stored in `file`; empty when the file is missing or cannot
    /// be decoded. [`StatCache::save`] writes it back there.
    pub fn load(file: &Path) -> StatCache {
        let entries = std::fs::read(file)
            .ok()
            .and_then(|data| decode(&data))
            .unwrap_or_default();
        StatCache {
            file: Some(file.to_owned()),
            entries,
            changed: false,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the entries used since [`StatCache::load`] to its file,
    /// atomically (temporary file in the same directory, fsync, rename,
    /// fsync of the directory). Entries not looked up since load are dropped.
    /// A cache from [`StatCache::in_memory`] is not written, nor one that
    /// would be written unchanged (the no-op rebuild).
    pub fn save(&self) -> Result<(), ContextError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.changed && self.entries.values().all(|e| e.seen) {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ContextError::Io { path, source }
        };
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let data = self.encode();
        let mut tmp = tempfile::Builder::new()
            .prefix(".statcache")
            .tempfile_in(dir)
            .map_err(io(dir))?;
        tmp.write_all(&data).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(file).map_err(|e| ContextError::Io {
            path: file.clone(),
            source: e.error,
        })?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(())
    }

    /// The digest cached for `path` if its stat still matches.
    pub(crate) fn lookup(&mut self, path: &[u8], key: &StatKey) -> Option<[u8; 32]> {
        let e = self.entries.get_mut(path)?;
        if e.key != *key {
            return None;
        }
        e.seen = true;
        Some(e.sha)
    }

    /// Records the digest of `path` with stat `key`.
    pub(crate) fn insert(&mut self, path: Vec<u8>, key: StatKey, sha: [u8; 32]) {
        self.changed = true;
        self.entries.insert(
            path,
            CacheEntry {
                key,
                sha,
                seen: true,
            },
        );
    }

    /// Forgets `path` (its last hash was racy).
    pub(crate) fn forget(&mut self, path: &[u8]) {
        self.changed |= self.entries.remove(path).is_some();
    }

    fn encode(&self) -> Vec<u8> {
        let mut keys: Vec<(&Vec<u8>, &CacheEntry)> =
            self.entries.iter().filter(|(_, e)| e.seen).collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(24 + keys.len() * 120);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(keys.len() as u64).to_be_bytes());
        for (path, e) in keys {
            out.extend_from_slice(&(path.len() as u32).to_be_bytes());
            out.extend_from_slice(path);
            out.extend_from_slice(&e.key.size.to_be_bytes());
            out.extend_from_slice(&e.key.mtime_ns.to_be_bytes());
            out.extend_from_slice(&e.key.ctime_ns.to_be_bytes());
            out.extend_from_slice(&e.key.ino.to_be_bytes());
            out.extend_from_slice(&e.key.dev.to_be_bytes());
            out.extend_from_slice(&e.key.mode.to_be_bytes());
            out.extend_from_slice(&e.sha);
        }
        let sum: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&sum);
        out
    }
}

/// A reader over the file body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }
}

fn decode(data: &[u8]) -> Option<HashMap<Vec<u8>, CacheEntry>> {
    let body_len = data.len().checked_sub(32)?;
    let (body, sum) = data.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC || r.u32()? != VERSION {
        return None;
    }
    let count = r.u64()?;
    // Each entry takes at least 88 bytes: a count beyond that is corrupt.
    if count > (body.len() / 88) as u64 {
        return None;
    }
    let mut entries = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let len = r.u32()? as usize;
        let path = r.take(len)?.to_vec();
        let key = StatKey {
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            ino: r.u64()?,
            dev: r.u64()?,
            mode: r.u32()?,
        };
        let sha = r.array()?;
        entries.insert(
            path,
            CacheEntry {
                key,
                sha,
                seen: false,
            },
        );
    }
    r.0.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> StatKey {
        StatKey {
            size: n,
            mtime_ns: -1,
            ctime_ns: 2,
            ino: 3,
            dev: 4,
            mode: 0o100644,
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cache");
        let mut c = StatCache::load(&file);
        assert!(c.is_empty());
        c.insert(b"/a".to_vec(), key(1), [7; 32]);
        c.insert(b"/b\xff".to_vec(), key(2), [8; 32]);
        c.save().expect("save");

        let mut c = StatCache::load(&file);
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(b"/a", &key(1)), Some([7; 32]));
        assert_eq!(c.lookup(b"/a", &key(9)), None);
        // "/b\xff" was not looked up: dropped on save.
        c.save().expect("save");
        let c = StatCache::load(&file);
        assert_eq!(c.len(), 1);

        let mut data = std::fs::read(&file).expect("read");
        data[20] ^= 1;
        std::fs::write(&file, &data).expect("write");
        assert!(StatCache::load(&file).is_empty());
        std::fs::write(&file, b"KILNSTAT").expect("write");
        assert!(StatCache::load(&file).is_empty());
    }

    #[test]
    fn an_unchanged_cache_is_not_rewritten() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cache");
        let mut c = StatCache::load(&file);
        c.insert(b"/a".to_vec(), key(1), [7; 32]);
        c.save().expect("save");
        let ino = std::fs::metadata(&file).expect("stat").ino();
        // Every entry used, none added: the file stays as it was.
        let mut c = StatCache::load(&file);
        assert_eq!(c.lookup(b"/a", &key(1)), Some([7; 32]));
        c.save().expect("save");
        assert_eq!(std::fs::metadata(&file).expect("stat").ino(), ino);
        // A new entry is written (by a rename: a new inode).
        c.insert(b"/b".to_vec(), key(2), [8; 32]);
        c.save().expect("save");
        assert_ne!(std::fs::metadata(&file).expect("stat").ino(), ino);
        assert_eq!(StatCache::load(&file).len(), 2);
    }
}
