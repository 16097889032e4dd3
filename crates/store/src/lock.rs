//! The state directory's lock, `<root>/lock`: builds, imports and loads hold
//! it shared, `prune` holds it exclusively, so garbage collection never
//! removes what a running build is about to use.
//!
//! `flock` locks die with the process, so a killed kiln never leaves the
//! store locked.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// Shared (builds, loads, removals of names) or exclusive (prune).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// A held lock on the state directory, released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
}

/// Takes the lock of the state directory at `root`. If another process holds
/// it in a conflicting way, `waiting` is called once (to tell the user) and
/// the call blocks until the lock is free.
pub fn lock(root: &Path, kind: LockKind, waiting: impl FnOnce()) -> Result<StoreLock, Error> {
    let path = root.join("lock");
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| Error::Io { what, source }
    };
    std::fs::create_dir_all(root).map_err(io("creating the directory of"))?;
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    };
    let (try_arg, arg) = match kind {
        LockKind::Shared => (FlockArg::LockSharedNonblock, FlockArg::LockShared),
        LockKind::Exclusive => (FlockArg::LockExclusiveNonblock, FlockArg::LockExclusive),
    };
    let f = open().map_err(io("opening"))?;
    match Flock::lock(f, try_arg) {
        Ok(l) => return Ok(StoreLock { _lock: l }),
        Err((_, Errno::EWOULDBLOCK)) => {}
        Err((_, e)) => return Err(io("locking")(std::io::Error::from(e))),
    }
    waiting();
    let f = open().map_err(io("opening"))?;
    match Flock::lock(f, arg) {
        Ok(l) => Ok(StoreLock { _lock: l }),
        Err((_, e)) => Err(io("locking")(std::io::Error::from(e))),
    }
}

/// Takes the lock only if nobody holds it in a conflicting way right now
/// (`None` otherwise): what the automatic garbage collection after a build
/// uses, so that it never makes a build wait.
pub fn try_lock(root: &Path, kind: LockKind) -> Result<Option<StoreLock>, Error> {
    let path = root.join("lock");
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| Error::Io { what, source }
    };
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("opening"))?;
    let arg = match kind {
        LockKind::Shared => FlockArg::LockSharedNonblock,
        LockKind::Exclusive => FlockArg::LockExclusiveNonblock,
    };
    match Flock::lock(f, arg) {
        Ok(l) => Ok(Some(StoreLock { _lock: l })),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(io("locking")(std::io::Error::from(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclusive_waits() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = lock(dir.path(), LockKind::Shared, || panic!("shared waited")).ok();
        let b = lock(dir.path(), LockKind::Shared, || panic!("shared waited")).ok();
        assert!(a.is_some() && b.is_some());
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        let t = std::thread::spawn(move || {
            let waited = std::cell::Cell::new(false);
            let l = lock(&root, LockKind::Exclusive, || waited.set(true));
            let _ = tx.send(());
            (l.is_ok(), waited.get())
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            rx.try_recv().is_err(),
            "exclusive lock taken while shared held"
        );
        drop(a);
        drop(b);
        let (ok, waited) = t.join().unwrap_or_else(|_| panic!("thread"));
        assert!(ok && waited);
    }
}
