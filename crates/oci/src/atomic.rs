//! Crash-safe state files: atomic replacement and directory locks.
//!
//! Every write to kiln's state directory goes through [`write_atomic`] (or
//! [`write_atomic_with`]): the bytes go to a temporary file in the
//! destination's directory, are fsynced, and the file is renamed over the
//! destination, then the directory is fsynced. A reader therefore sees the old
//! file or the new one, never a torn one, even across a power cut.
//!
//! Records that a build writes at every step and whose loss costs only a
//! recomputation skip some of those fsyncs ([`Durability`]): each is a
//! journal commit, and on a busy disk the two of every record were a third
//! of the time of a build of short RUN steps. A machine crash may then lose the newest such
//! records; the next `syncfs` of the state directory (before an image names
//! layers) makes them durable with everything else.
//!
//! Read-modify-write cycles are serialised across threads and processes with
//! [`DirLock`], an exclusive `flock` on the directory itself (no lock files to
//! leave behind or to delete racily). Temporary files made by `write_atomic`
//! start with [`TEMP_PREFIX`]; a writer that holds the directory lock knows any
//! such file is debris of a crashed writer and removes it
//! ([`remove_stale_temps`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// Prefix of temporary files in state directories.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary file that no other live writer uses: the process id
/// plus a per-process counter. Creation uses `O_EXCL`, so a collision with
/// debris of a dead process with the same pid is detected and retried.
pub(crate) fn temp_name(stem: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}-{n}-{stem}", std::process::id())
}

/// The pid of the process that made the temporary file named `name` (see
/// [`temp_name`]), or `None` when `name` is not one.
pub fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

/// Creates a new temporary file in `dir` (exclusive create, mode 0644).
pub(crate) fn create_temp(dir: &Path, stem: &str) -> io::Result<(PathBuf, File)> {
    loop {
        let path = dir.join(temp_name(stem));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a replacement guarantees after a crash of the machine (a killed
/// process loses nothing: the page cache survives it). Every kind is atomic
/// for readers: they see the old file or the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// File and directory fsynced: the new content survives a crash.
    Durable,
    /// File fsynced, directory not: after a crash the old content or the
    /// complete new one, never an empty or torn file. For records whose
    /// loss is a cache miss or a recomputation (cache entries, a new
    /// layer's size record).
    Complete,
    /// No fsync: after a crash the file may also be empty. For records
    /// whose readers treat an unreadable one as absent (`--explain`'s).
    Volatile,
}

/// Atomically replaces `path` with `bytes` (temp file in the same directory,
/// fsync, rename, fsync of the directory): [`Durability::Durable`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, Durability::Durable)
}

/// Atomically replaces `path` with `bytes`, as durable as `durability` says.
pub fn write_atomic_with(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let dir = parent(path);
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut f) = create_temp(dir, &stem)?;
    let result = (|| {
        f.write_all(bytes)?;
        if durability != Durability::Volatile {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, path)?;
        match durability {
            Durability::Durable => sync_dir(dir),
            Durability::Complete | Durability::Volatile => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory, making renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory of `path` (`.` for a bare name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes `.tmp-*` files in `dir`. Only call while holding the [`DirLock`] of
/// `dir`: then no live writer can own one.
pub(crate) fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// [`remove_stale_temps`] the first time this process changes `dir`, not
/// on every change: temporary files are only left behind by a process that
/// died, and listing a directory of thousands of records (`layerblobs/`)
/// on every RUN step's commit cost more than the step. Same lock rule.
pub(crate) fn remove_stale_temps_once(dir: &Path) -> io::Result<usize> {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
    if swept.iter().any(|d| d == dir) {
        return Ok(0);
    }
    let removed = remove_stale_temps(dir)?;
    swept.push(dir.to_path_buf());
    Ok(removed)
}

/// An exclusive `flock` on a directory, released on drop (or when the process
/// dies). Blocks until the lock is free.
#[derive(Debug)]
pub(crate) struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    /// Locks `dir` exclusively.
    pub(crate) fn exclusive(dir: &Path) -> io::Result<DirLock> {
        let f = File::open(dir)?;
        match Flock::lock(f, FlockArg::LockExclusive) {
            Ok(lock) => Ok(DirLock { _lock: lock }),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_tell_their_owner() {
        let name = temp_name("3f2a");
        assert_eq!(temp_owner(&name), Some(std::process::id()));
        assert_eq!(temp_owner("3f2a"), None);
        assert_eq!(temp_owner(".tmp-x-1-3f2a"), None);
    }

    #[test]
    fn every_durability_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (i, durability) in [
            Durability::Durable,
            Durability::Complete,
            Durability::Volatile,
        ]
        .into_iter()
        .enumerate()
        {
            let p = d.path().join(format!("f{i}"));
            write_atomic_with(&p, b"one", durability).unwrap_or_else(|e| panic!("{e}"));
            write_atomic_with(&p, b"two", durability).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(fs::read(&p).unwrap_or_else(|e| panic!("{e}")), b"two");
        }
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|e| e.unwrap_or_else(|e| panic!("{e}")).file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap_or_else(|e| panic!("{e}"));
        write_atomic(&p, b"two").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::read(&p).unwrap_or_default(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }

    #[test]
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (tmp, _f) = create_temp(dir.path(), "x").unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("keep"), b"").ok();
        let _lock = DirLock::exclusive(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(remove_stale_temps(dir.path()).ok(), Some(1));
        assert!(!tmp.exists());
        assert!(dir.path().join("keep").exists());
    }
}
