//! Where resolved values live between solves: a byte store keyed by [`Key`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::key::Key;

/// A failed cache read or write.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A filesystem operation on the cache directory failed.
    #[error("cache: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Any other store failure (for stores that are not directories).
    #[error("cache: {key}: {message}")]
    Other {
        /// The key being read or written.
        key: Key,
        /// What went wrong.
        message: String,
    },
}

/// A persistent map from keys to opaque bytes (the solver stores JSON).
///
/// `get` returning bytes that do not decode is not an error of the store: the solver
/// treats such an entry as a miss and overwrites it.
pub trait CacheStore: Send + Sync {
    /// The bytes stored under `key`, or `None` when there are none.
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, CacheError>;
    /// Stores `value` under `key`, replacing any previous value. After it returns,
    /// readers see either nothing, the old value or the new value, never a mix.
    fn put(&self, key: &Key, value: &[u8]) -> Result<(), CacheError>;

    /// Claims `key` before its value is computed, so that solves in other processes
    /// sharing the store do not compute it at the same time: a second claim of the
    /// same key waits until the first [`Claim`] is dropped (the solver then finds
    /// the value stored and does not execute). `cancelled` is polled while waiting;
    /// once it returns true the wait ends with `Ok(None)`. `Ok(None)` also means the
    /// store does not coordinate (the default, fine for stores private to a process).
    fn claim(
        &self,
        _key: &Key,
        _cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Claim>, CacheError> {
        Ok(None)
    }
}

/// A held claim on a key ([`CacheStore::claim`]); released when dropped.
pub struct Claim(#[allow(dead_code)] Box<dyn Send>);

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

impl Claim {
    /// A claim held as long as `guard` lives (a locked file, say).
    pub fn new(guard: impl Send + 'static) -> Claim {
        Claim(Box::new(guard))
    }
}

/// A [`CacheStore`] in a directory: one file per key at `<dir>/<hex[0..2]>/<hex>`.
///
/// Writes are atomic: the value goes to a temporary file in the same directory
/// (named `.tmp-...`, which can never be mistaken for a key), is fsynced, and is
/// renamed over the final name. The directory is not fsynced (a journal commit per
/// step): a crash of the machine leaves the old entry or the complete new one, or
/// none (a cache miss), and at worst a stray temporary file, which
/// [`DirCache::keys`] and [`CacheStore::get`] ignore. The rename becomes durable
/// with the filesystem's next commit (kiln syncs the filesystem before an image
/// names layers). Several processes may share one directory.
#[derive(Debug)]
pub struct DirCache {
    dir: PathBuf,
}

/// Distinguishes temporary files written concurrently by one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

impl DirCache {
    /// Opens (creating if needed) a cache directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DirCache, CacheError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(DirCache { dir })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`'s value.
    pub fn path_of(&self, key: &Key) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Every key with a stored value, sorted. Temporary and foreign files are skipped.
    pub fn keys(&self) -> Result<Vec<Key>, CacheError> {
        let mut keys = Vec::new();
        for shard in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let shard = shard.map_err(io_err("list", &self.dir))?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str().filter(|n| n.len() == 2) else {
                continue;
            };
            let shard_path = shard.path();
            if !shard_path.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard_path).map_err(io_err("list", &shard_path))? {
                let entry = entry.map_err(io_err("list", &shard_path))?;
                let name = entry.file_name();
                if let Some(key) = name
                    .to_str()
                    .filter(|n| n.starts_with(prefix))
                    .and_then(Key::from_hex)
                {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Where claims are locked: `<dir>/claims/<hex>.lock` (never a key's shard,
    /// whose names are two characters). Lock files stay; removing one while a
    /// process waits on it would let a third process lock a new file and run the
    /// same step, so only a collection that holds the whole store removes them.
    pub fn claims_dir(&self) -> PathBuf {
        self.dir.join("claims")
    }

    /// Deletes `key`'s value; returns whether there was one.
    pub fn remove(&self, key: &Key) -> Result<bool, CacheError> {
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Creates `<dir>/<hex[0..2]>` if missing, making the new entry durable.
    fn shard_dir(&self, key: &Key) -> Result<PathBuf, CacheError> {
        let shard = self.dir.join(&key.to_hex()[..2]);
        match fs::create_dir(&shard) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &shard)(e)),
        }
        Ok(shard)
    }
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

impl CacheStore for DirCache {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path_of(key);
        match fs::read(&path) {
            Ok(bytes) => {
                // A hit marks the entry used (its mtime), which is what
                // size-based collection orders by. Best effort: a read-only
                // store still serves hits.
                let _ = fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<(), CacheError> {
        let shard = self.shard_dir(key)?;
        let path = shard.join(key.to_hex());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = shard.join(format!(".tmp-{}-{}-{n}", key.to_hex(), std::process::id()));
        let write = || -> Result<(), CacheError> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(value).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("sync", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))
        };
        if let Err(e) = write() {
            // Best effort: the write already failed, and a leftover is harmless.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// An exclusive `flock` on `claims/<hex>.lock`, polled (so that a cancelled
    /// solve stops waiting); the kernel releases it if the process dies.
    fn claim(&self, key: &Key, cancelled: &dyn Fn() -> bool) -> Result<Option<Claim>, CacheError> {
        let dir = self.claims_dir();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let path = dir.join(format!("{}.lock", key.to_hex()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Claim::new(file))),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
            }
            if cancelled() {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// An in-memory [`CacheStore`], for tests and for solves that must not persist.
#[derive(Debug, Default)]
pub struct MemoryCache {
    map: Mutex<HashMap<Key, Vec<u8>>>,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> MemoryCache {
        MemoryCache::default()
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<u8>>> {
        // A panic elsewhere cannot leave the map half-updated: every operation is one call.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl CacheStore for MemoryCache {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.lock().get(key).cloned())
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<(), CacheError> {
        self.lock().insert(*key, value.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::derive("test", &[s.as_bytes()])
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("list dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn dir_cache_round_trip_layout_and_overwrite() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = DirCache::open(tmp.path().join("c")).expect("open");
        let k = key("a");
        assert_eq!(cache.get(&k).expect("get"), None);
        cache.put(&k, b"one").expect("put");
        let hex = k.to_hex();
        assert_eq!(
            fs::read(tmp.path().join("c").join(&hex[..2]).join(&hex)).expect("read file"),
            b"one"
        );
        cache.put(&k, b"two").expect("overwrite");
        assert_eq!(cache.get(&k).expect("get"), Some(b"two".to_vec()));
        // Only the final file: no temporary files are left behind.
        assert_eq!(
            names(&cache.dir().join(&hex[..2])),
            std::slice::from_ref(&hex)
        );
        assert_eq!(cache.keys().expect("keys"), [k]);
        // Persists across handles.
        let again = DirCache::open(tmp.path().join("c")).expect("reopen");
        assert_eq!(again.get(&k).expect("get"), Some(b"two".to_vec()));
        assert!(again.remove(&k).expect("remove"));
        assert!(!again.remove(&k).expect("remove again"));
        assert_eq!(again.get(&k).expect("get"), None);
    }

    #[test]
    fn temporary_and_foreign_files_are_not_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = DirCache::open(tmp.path()).expect("open");
        let k = key("a");
        cache.put(&k, b"v").expect("put");
        let hex = k.to_hex();
        let shard = tmp.path().join(&hex[..2]);
        // What a crash between create and rename leaves behind, plus junk.
        fs::write(shard.join(format!(".tmp-{hex}-1-0")), b"partial").expect("write");
        fs::write(shard.join("README"), b"x").expect("write");
        let other = key("b").to_hex();
        fs::write(shard.join(&other), b"misplaced").expect("write"); // wrong shard
        fs::write(tmp.path().join("zz"), b"not a dir").expect("write");
        assert_eq!(cache.keys().expect("keys"), [k]);
        assert_eq!(cache.get(&k).expect("get"), Some(b"v".to_vec()));
        cache.put(&k, b"w").expect("put over leftovers");
        assert_eq!(cache.get(&k).expect("get"), Some(b"w".to_vec()));
    }

    #[test]
    fn concurrent_writers_never_expose_partial_values() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = DirCache::open(tmp.path()).expect("open");
        let k = key("a");
        let big_a = vec![b'a'; 1 << 20];
        let big_b = vec![b'b'; 1 << 20];
        std::thread::scope(|s| {
            for value in [&big_a, &big_b] {
                let cache = &cache;
                s.spawn(move || {
                    for _ in 0..20 {
                        cache.put(&k, value).expect("put");
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..200 {
                    if let Some(v) = cache.get(&k).expect("get") {
                        assert!(v == big_a || v == big_b, "torn read");
                    }
                }
            });
        });
        let hex = k.to_hex();
        assert_eq!(names(&tmp.path().join(&hex[..2])), [hex]);
    }

    #[test]
    fn write_failure_names_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = DirCache::open(tmp.path()).expect("open");
        let k = key("a");
        let shard = tmp.path().join(&k.to_hex()[..2]);
        fs::write(&shard, b"a file where the shard directory belongs").expect("write");
        let err = cache.put(&k, b"v").expect_err("put must fail");
        assert!(
            err.to_string().contains(&shard.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn memory_cache_round_trip() {
        let cache = MemoryCache::new();
        assert!(cache.is_empty());
        cache.put(&key("a"), b"1").expect("put");
        cache.put(&key("a"), b"2").expect("put");
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&key("a")).expect("get"), Some(b"2".to_vec()));
        assert_eq!(cache.get(&key("b")).expect("get"), None);
    }
}
