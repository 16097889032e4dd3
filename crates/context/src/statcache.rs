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
}

/// Bytes of a record after its path: size, mtime, ctime, ino, dev, mode, sha.
const RECORD_TAIL: usize = 8 * 5 + 4 + 32;

/// What happened to a loaded record since load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Not looked up: dropped on save.
    Unseen,
    /// Looked up: kept on save.
    Seen,
    /// Replaced by an added entry, or forgotten.
    Removed,
}

/// Content digests of files by stat (see the module docs).
///
/// The loaded file is kept as it is, records sorted by path, and looked up
/// in place: a walk visits paths in nearly that order, so most lookups are
/// the record after the previous one, and a rebuild that changed nothing
/// builds no map at all. Entries hashed since load live in a small map.
#[derive(Debug, Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    /// The loaded file's records (`count × record`, sorted by path).
    base: Vec<u8>,
    /// Where each record of `base` starts.
    index: Vec<u32>,
    marks: Vec<Mark>,
    /// The record after the last one found: where the next lookup looks first.
    cursor: usize,
    /// Entries hashed since load; never also a live record of `base`.
    added: HashMap<Vec<u8>, CacheEntry>,
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
        let (base, index) = std::fs::read(file)
            .ok()
            .and_then(decode)
            .unwrap_or_default();
        StatCache {
            file: Some(file.to_owned()),
            marks: vec![Mark::Unseen; index.len()],
            base,
            index,
            ..StatCache::default()
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.marks.iter().filter(|m| **m != Mark::Removed).count() + self.added.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        if !self.changed && self.marks.iter().all(|m| *m == Mark::Seen) {
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
        if !self.added.is_empty()
            && let Some(e) = self.added.get(path)
        {
            return (e.key == *key).then_some(e.sha);
        }
        let i = self.find(path)?;
        if self.marks[i] == Mark::Removed {
            return None;
        }
        let (_, e) = self.record(i)?;
        if e.key != *key {
            return None;
        }
        self.marks[i] = Mark::Seen;
        Some(e.sha)
    }

    /// Records the digest of `path` with stat `key`.
    pub(crate) fn insert(&mut self, path: Vec<u8>, key: StatKey, sha: [u8; 32]) {
        self.changed = true;
        if let Some(i) = self.find(&path) {
            self.marks[i] = Mark::Removed;
        }
        self.added.insert(path, CacheEntry { key, sha });
    }

    /// Forgets `path` (its last hash was racy).
    pub(crate) fn forget(&mut self, path: &[u8]) {
        if let Some(i) = self.find(path)
            && self.marks[i] != Mark::Removed
        {
            self.marks[i] = Mark::Removed;
            self.changed = true;
        }
        self.changed |= self.added.remove(path).is_some();
    }

    /// The loaded record for `path`: the one at the cursor, else by binary
    /// search.
    fn find(&mut self, path: &[u8]) -> Option<usize> {
        let i = match self.index.get(self.cursor) {
            Some(_) if self.record_path(self.cursor) == path => self.cursor,
            _ => self
                .index
                .binary_search_by(|&at| record_path_at(&self.base, at).cmp(path))
                .ok()?,
        };
        self.cursor = i + 1;
        Some(i)
    }

    fn record_path(&self, i: usize) -> &[u8] {
        record_path_at(&self.base, self.index[i])
    }

    /// Record `i`: its path and entry (always there: `decode` checked the
    /// bounds of every record).
    fn record(&self, i: usize) -> Option<(&[u8], CacheEntry)> {
        let path = self.record_path(i);
        let at = self.index[i] as usize + 4 + path.len();
        let entry = read_entry(&mut Reader(self.base.get(at..at + RECORD_TAIL)?))?;
        Some((path, entry))
    }

    fn encode(&self) -> Vec<u8> {
        let mut keys: Vec<(&[u8], CacheEntry)> = (0..self.index.len())
            .filter(|&i| self.marks[i] == Mark::Seen)
            .filter_map(|i| self.record(i))
            .chain(self.added.iter().map(|(p, e)| (p.as_slice(), e.clone())))
            .collect();
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

/// The path of the record at offset `at` (`decode` checked its bounds).
fn record_path_at(base: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let len = base
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_be_bytes(b) as usize);
    base.get(at + 4..at + 4 + len).unwrap_or_default()
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

fn read_entry(r: &mut Reader<'_>) -> Option<CacheEntry> {
    Some(CacheEntry {
        key: StatKey {
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            ino: r.u64()?,
            dev: r.u64()?,
            mode: r.u32()?,
        },
        sha: r.array()?,
    })
}

/// The file's records (the file without its header and checksum) and where
/// each starts; `None` when the file is not a well-formed cache whose paths
/// are strictly increasing.
fn decode(mut data: Vec<u8>) -> Option<(Vec<u8>, Vec<u32>)> {
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
    // Each entry takes at least 80 bytes: a count beyond that is corrupt.
    if count > (body.len() / (4 + RECORD_TAIL)) as u64 || body.len() > u32::MAX as usize {
        return None;
    }
    const HEADER: usize = 8 + 4 + 8;
    let mut index = Vec::with_capacity(count as usize);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..count {
        let at = body.len() - r.0.len() - HEADER;
        let len = r.u32()? as usize;
        let path = r.take(len)?;
        r.take(RECORD_TAIL)?;
        if prev.is_some_and(|p| p >= path) {
            return None;
        }
        prev = Some(path);
        index.push(at as u32);
    }
    if !r.0.is_empty() {
        return None;
    }
    data.truncate(body_len);
    data.drain(..HEADER);
    Some((data, index))
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
    fn lookups_in_any_order_replacements_and_forgetting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cache");
        let mut c = StatCache::load(&file);
        for (i, p) in [&b"/a.txt"[..], b"/a/b", b"/a/c", b"/b", b"/c"]
            .iter()
            .enumerate()
        {
            c.insert(p.to_vec(), key(i as u64), [i as u8; 32]);
        }
        c.save().expect("save");

        let mut c = StatCache::load(&file);
        assert_eq!(c.len(), 5);
        // Walk order ("/a/b" before "/a.txt"), backwards, twice.
        for p in [&b"/a/b"[..], b"/a/c", b"/a.txt", b"/c", b"/b", b"/a/b"] {
            assert!(c.lookup(p, &key(0)).is_some() == (p == b"/a.txt"), "{p:?}");
        }
        assert_eq!(c.lookup(b"/c", &key(4)), Some([4; 32]));
        assert_eq!(c.lookup(b"/missing", &key(4)), None);
        // A loaded entry replaced, another forgotten, one added.
        c.insert(b"/b".to_vec(), key(9), [9; 32]);
        assert_eq!(c.lookup(b"/b", &key(3)), None);
        assert_eq!(c.lookup(b"/b", &key(9)), Some([9; 32]));
        c.forget(b"/c");
        assert_eq!(c.lookup(b"/c", &key(4)), None);
        c.insert(b"/0".to_vec(), key(7), [7; 32]);
        assert_eq!(c.len(), 5);
        c.save().expect("save");

        // Kept: what was looked up or added ("/a/c" never matched: dropped).
        let mut c = StatCache::load(&file);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(b"/0", &key(7)), Some([7; 32]));
        assert_eq!(c.lookup(b"/a.txt", &key(0)), Some([0; 32]));
        assert_eq!(c.lookup(b"/b", &key(9)), Some([9; 32]));
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
