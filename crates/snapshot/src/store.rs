//! The layer store: a directory of committed layers plus the drafts being
//! written.
//!
//! ```text
//! <dir>/<id>/diff/                  a committed layer (overlay upper-dir format)
//! <dir>/<id>/meta.json              its LayerMeta (written before the layer appears)
//! <dir>/<id>/<side file>            written by the layer's maker (e.g. copy-manifest)
//! <dir>/tmp/<id>/{diff,work}/       a draft; commit renames tmp/<id> to <id>
//! <dir>/tmp/<id>.lock               flock(2)ed by the process owning the draft
//! <dir>/tmp/rm-<id>/                a layer being removed (renamed away first)
//! <dir>/index/<key>/<sha256(value)> a label index entry: contains the layer id
//! <dir>/synced                      `<boot id> <ns since boot>` of the latest sync
//! ```
//!
//! A layer becomes visible by one `rename(2)` of a complete directory, so a
//! reader never sees half a layer, and a crash leaves only entries under
//! `tmp/`, which [`LayerStore::open`] / [`LayerStore::cleanup`] remove. A
//! draft's lock file is held with `flock(2)` for the draft's lifetime, so a
//! cleanup run by another kiln process sharing the state directory never
//! deletes a live draft: only those whose owner died (the kernel drops the
//! lock with the process).
//!
//! Durability: a commit does not flush the layer's files (an fsync per file,
//! or a `syncfs(2)` per layer, would put the writeback of every step on the
//! build's critical path, and a `syncfs` also flushes whatever else is dirty
//! on the filesystem). A process that dies leaves the page cache intact; only
//! a crash of the machine can lose what was not written back. So a layer is
//! committed with the boot id and time (`LayerMeta::unsynced`), and
//! [`LayerStore::sync`] (one `syncfs`) records in `<dir>/synced` when it
//! started; it runs before a durable record names layers (an image's,
//! [`LayerStore::sync_layers`]). The first opening of the store after a
//! reboot keeps the layers a sync covered and removes the others, which the
//! build cache then rebuilds, as BuildKit rebuilds what a crash lost (it
//! fsyncs its content-store blobs, not its snapshots).
//!
//! Ids are 12 random characters of `[a-z0-9]` (62 bits): short, because an
//! overlay mount of N layers spells out N paths `<dir>/<id>/diff` in a mount
//! option string limited to one page (see [`crate::mount`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::{sync_dir, write_atomic, write_replacing};
use crate::token::{ID_ALPHABET, random_token};

/// Length of a layer id.
pub const LAYER_ID_LEN: usize = 12;

/// Errors of the layer store. Each names the layer or path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation on the store failed.
    #[error("layer store: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A string is not a valid layer id.
    #[error("invalid layer id {0:?}: expected {LAYER_ID_LEN} characters of [a-z0-9]")]
    InvalidId(String),
    /// No committed layer has this id.
    #[error("layer {0} does not exist")]
    NotFound(LayerId),
    /// A layer's meta.json cannot be parsed.
    #[error("layer {id}: corrupt meta.json: {source}")]
    CorruptMeta {
        /// The layer.
        id: LayerId,
        /// The parse error.
        source: serde_json::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The id of a layer: [`LAYER_ID_LEN`] characters of `[a-z0-9]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LayerId(String);

impl LayerId {
    /// Parses and validates an id.
    pub fn parse(s: &str) -> Result<LayerId, StoreError> {
        if s.len() == LAYER_ID_LEN && s.bytes().all(|b| ID_ALPHABET.contains(&b)) {
            Ok(LayerId(s.to_string()))
        } else {
            Err(StoreError::InvalidId(s.to_string()))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn random() -> io::Result<LayerId> {
        Ok(LayerId(random_token(LAYER_ID_LEN)?))
    }
}

impl TryFrom<String> for LayerId {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        LayerId::parse(&s)
    }
}

impl From<LayerId> for String {
    fn from(id: LayerId) -> String {
        id.0
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerId({})", self.0)
    }
}

/// Metadata stored beside a layer (`meta.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// Free-form labels, e.g. `kiln.diff_id=sha256:…`. Each label is also
    /// indexed for [`LayerStore::find_by_label`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Size of the layer in bytes, if known (meaning is the caller's: e.g.
    /// the uncompressed tar size or the disk usage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Set by [`LayerDraft::commit`]: the layer's files were not flushed to
    /// disk when it was committed (see "Durability" in the module docs).
    /// Cleared by the first opening of the store after a reboot if a
    /// [`LayerStore::sync`] covered the layer; otherwise that opening
    /// removes the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<Unsynced>,
}

/// When an unsynced layer was committed: the boot (the kernel's
/// `boot_id`) and the time since boot (`CLOCK_BOOTTIME`, nanoseconds) once
/// its content was complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsynced {
    /// `/proc/sys/kernel/random/boot_id` at commit.
    pub boot: String,
    /// Nanoseconds since that boot.
    pub at: u64,
}

/// The file recording the latest [`LayerStore::sync`]: `<boot> <at>`.
const SYNCED_FILE: &str = "synced";
/// `flock`ed while [`SYNCED_FILE`] is read and written.
const SYNCED_LOCK: &str = "synced.lock";

/// A committed layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Its id.
    pub id: LayerId,
    /// `<store>/<id>`: the layer's directory.
    pub path: PathBuf,
    /// `<store>/<id>/diff`: the content, in overlay upper-dir format; use it
    /// as an overlay lower dir.
    pub diff: PathBuf,
    /// Its metadata.
    pub meta: LayerMeta,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Serialises read-modify-write of meta.json within this process.
    meta_lock: Mutex<()>,
    /// The kernel's boot id; `None` where it cannot be read (then every
    /// commit flushes the filesystem, as no reboot could be recognised).
    boot: Option<String>,
}

/// The current boot's id (`/proc/sys/kernel/random/boot_id`).
fn boot_id() -> Option<String> {
    let s = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let s = s.trim();
    (!s.is_empty() && !s.contains(char::is_whitespace)).then(|| s.to_owned())
}

/// Nanoseconds since boot (`CLOCK_BOOTTIME`: it counts suspended time too,
/// so it never goes back within one boot).
fn since_boot() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// The content of [`SYNCED_FILE`]: the boot and time of the latest sync.
type Synced = (String, u64);

fn parse_synced(s: &str) -> Option<Synced> {
    let (boot, at) = s.trim().split_once(' ')?;
    Some((boot.to_owned(), at.parse().ok()?))
}

/// The layer store rooted at a directory (`<state>/snapshots`). Cheap to
/// clone; clones share the same store.
#[derive(Clone, Debug)]
pub struct LayerStore {
    inner: Arc<Inner>,
}

/// The file that says a store has whiteout files.
const WHITEOUT_FILES_MARK: &str = "whiteout-files";

impl LayerStore {
    /// Opens (creating if needed) the store at `dir`, and removes drafts left
    /// behind by crashed processes (see [`LayerStore::cleanup`]). `dir` is
    /// made absolute, since layer paths end up in mount options.
    pub fn open(dir: impl AsRef<Path>) -> Result<LayerStore, StoreError> {
        Self::open_as(dir.as_ref(), boot_id())
    }

    /// Opens the store as if the machine had booted with id `boot`: how the
    /// tests simulate a reboot.
    #[doc(hidden)]
    pub fn open_with_boot_id(dir: impl AsRef<Path>, boot: &str) -> Result<LayerStore, StoreError> {
        Self::open_as(dir.as_ref(), Some(boot.to_owned()))
    }

    fn open_as(dir: &Path, boot: Option<String>) -> Result<LayerStore, StoreError> {
        let dir = std::path::absolute(dir).map_err(io_err("resolving", dir))?;
        for sub in [dir.clone(), dir.join("tmp"), dir.join("index")] {
            fs::create_dir_all(&sub).map_err(io_err("creating", &sub))?;
        }
        let store = LayerStore {
            inner: Arc::new(Inner {
                dir,
                meta_lock: Mutex::new(()),
                boot,
            }),
        };
        store.cleanup()?;
        store.recover()?;
        Ok(store)
    }

    /// Locks [`SYNCED_FILE`] and reads it.
    fn synced(&self) -> Result<(Flock<File>, Option<Synced>), StoreError> {
        let lock_path = self.inner.dir.join(SYNCED_LOCK);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Io {
            op: "locking",
            path: lock_path.clone(),
            source: e.into(),
        })?;
        let path = self.inner.dir.join(SYNCED_FILE);
        let synced = match fs::read_to_string(&path) {
            Ok(s) => parse_synced(&s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        Ok((lock, synced))
    }

    fn write_synced(&self, boot: &str, at: u64) -> Result<(), StoreError> {
        let path = self.inner.dir.join(SYNCED_FILE);
        write_atomic(&path, format!("{boot} {at}\n").as_bytes()).map_err(io_err("writing", &path))
    }

    /// The first opening after a reboot: layers committed unsynced in an
    /// earlier boot are kept if a [`LayerStore::sync`] of that boot came
    /// after them (their mark is cleared), and removed otherwise, since
    /// their files may have been lost with the page cache. The solver
    /// checks that a cache entry's layers exist, so what is removed is
    /// rebuilt. Returns how many layers were removed.
    fn recover(&self) -> Result<usize, StoreError> {
        let Some(boot) = self.inner.boot.as_deref() else {
            return Ok(0);
        };
        let (_lock, synced) = self.synced()?;
        if synced.as_ref().is_some_and(|(b, _)| b == boot) {
            return Ok(0);
        }
        let mut removed = 0;
        for id in self.list()? {
            let mut meta = match self.read_meta(&id) {
                Ok(m) => m,
                Err(StoreError::NotFound(_)) => continue,
                // An unsynced meta.json may be torn by the crash.
                Err(StoreError::CorruptMeta { .. }) => {
                    let from = self.layer_dir(&id);
                    let to = self.tmp_dir().join(format!("rm-{id}"));
                    fs::rename(&from, &to).map_err(io_err("renaming", &from))?;
                    remove_tree(&to).map_err(io_err("removing", &to))?;
                    removed += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(u) = &meta.unsynced else { continue };
            if u.boot == boot {
                continue;
            }
            let covered = synced
                .as_ref()
                .is_some_and(|(b, at)| *b == u.boot && *at >= u.at);
            if covered {
                meta.unsynced = None;
                self.write_meta(&self.layer_dir(&id), &meta)?;
            } else {
                match self.remove(&id) {
                    Ok(()) => removed += 1,
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.write_synced(boot, 0)?;
        Ok(removed)
    }

    /// Makes every layer committed so far durable: one `syncfs(2)` of the
    /// store's filesystem, then [`SYNCED_FILE`] records the time it started
    /// (see [`LayerStore::recover`]). Called before a durable record names
    /// layers (an image's), not per layer: a cache layer lost in a crash of
    /// the machine is rebuilt.
    pub fn sync(&self) -> Result<(), StoreError> {
        let at = since_boot();
        let dirf = File::open(&self.inner.dir).map_err(io_err("opening", &self.inner.dir))?;
        rustix::fs::syncfs(&dirf).map_err(|e| io_err("syncing", &self.inner.dir)(e.into()))?;
        let Some(boot) = self.inner.boot.as_deref() else {
            return Ok(());
        };
        let (_lock, synced) = self.synced()?;
        // Another process may have recorded a later sync meanwhile.
        if synced.is_some_and(|(b, t)| b == boot && t >= at) {
            return Ok(());
        }
        self.write_synced(boot, at)
    }

    /// [`LayerStore::sync`], unless every one of `layers` is durable already
    /// (committed synced, or covered by the latest sync of this boot).
    pub fn sync_layers(&self, layers: &[LayerId]) -> Result<(), StoreError> {
        if self.inner.boot.is_none() {
            return Ok(()); // every commit synced
        }
        let synced = fs::read_to_string(self.inner.dir.join(SYNCED_FILE))
            .ok()
            .and_then(|s| parse_synced(&s));
        for id in layers {
            let meta = match self.read_meta(id) {
                Ok(m) => m,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let durable = meta.unsynced.as_ref().is_none_or(|u| {
                synced
                    .as_ref()
                    .is_some_and(|(b, at)| *b == u.boot && *at >= u.at)
            });
            if !durable {
                return self.sync();
            }
        }
        Ok(())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn tmp_dir(&self) -> PathBuf {
        self.inner.dir.join("tmp")
    }

    fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.inner.dir.join(id.as_str())
    }

    /// Removes leftovers under `tmp/`: drafts whose owner is gone (their lock
    /// can be taken) and layers whose removal was interrupted. Live drafts of
    /// this or any other process are left alone; committed layers are never
    /// touched. Returns how many entries were removed.
    pub fn cleanup(&self) -> Result<usize, StoreError> {
        let tmp = self.tmp_dir();
        let mut removed = 0;
        let entries = fs::read_dir(&tmp).map_err(io_err("reading", &tmp))?;
        for entry in entries {
            let entry = entry.map_err(io_err("reading", &tmp))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if let Some(id) = name.strip_prefix("rm-") {
                if LayerId::parse(id).is_ok() {
                    remove_tree(&path).map_err(io_err("removing", &path))?;
                    removed += 1;
                }
                continue;
            }
            if LayerId::parse(name).is_err() {
                continue;
            }
            let lock_path = tmp.join(format!("{name}.lock"));
            let lock = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(io_err("opening", &lock_path))?;
            match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
                Ok(_held) => {
                    remove_tree(&path).map_err(io_err("removing", &path))?;
                    remove_if_exists(&lock_path).map_err(io_err("removing", &lock_path))?;
                    removed += 1;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {} // a live draft
                Err((_, e)) => {
                    return Err(StoreError::Io {
                        op: "locking",
                        path: lock_path,
                        source: e.into(),
                    });
                }
            }
        }
        Ok(removed)
    }

    /// Whether layers here may hold whiteout files (see
    /// [`crate::whiteout`]): then only the native snapshotter can mount them.
    pub fn has_whiteout_files(&self) -> bool {
        self.inner.dir.join(WHITEOUT_FILES_MARK).exists()
    }

    /// Records, before any is written, that layers here may hold whiteout
    /// files. Never undone (no layer is rewritten).
    pub fn mark_whiteout_files(&self) -> Result<(), StoreError> {
        let p = self.inner.dir.join(WHITEOUT_FILES_MARK);
        crate::atomic::write_atomic(
            &p,
            b"Layers here may hold whiteout files (user.kiln.whiteout): \
              only kiln's native snapshotter can mount them.\n",
        )
        .map_err(io_err("writing", &p))
    }

    /// Starts a new layer. Write its content into [`LayerDraft::diff_dir`]
    /// (directly, or as the upper dir of an overlay mount with
    /// [`LayerDraft::work_dir`] as work dir), then [`LayerDraft::commit`].
    pub fn create(&self) -> Result<LayerDraft, StoreError> {
        let tmp = self.tmp_dir();
        loop {
            let id = LayerId::random().map_err(io_err("generating an id in", &tmp))?;
            if self.layer_dir(&id).exists() {
                continue;
            }
            let lock_path = tmp.join(format!("{id}.lock"));
            let lock = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock_path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("creating", &lock_path)(e)),
            };
            let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
                StoreError::Io {
                    op: "locking",
                    path: lock_path.clone(),
                    source: e.into(),
                }
            })?;
            // A concurrent cleanup may have locked and unlinked the file
            // between our create and our lock: then our lock guards nothing.
            let ours = lock.metadata().map_err(io_err("stat", &lock_path))?;
            match fs::metadata(&lock_path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
                _ => continue,
            }
            let root = tmp.join(id.as_str());
            fs::create_dir(&root).map_err(io_err("creating", &root))?;
            let draft = LayerDraft {
                store: self.clone(),
                diff: root.join("diff"),
                work: root.join("work"),
                root,
                lock_path,
                lock: Some(lock),
                id,
                done: false,
            };
            for d in [&draft.diff, &draft.work] {
                fs::create_dir(d).map_err(io_err("creating", d))?;
            }
            // The layer's root directory is the root of the filesystem
            // view; 0755 whatever the umask.
            fs::set_permissions(&draft.diff, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", &draft.diff))?;
            return Ok(draft);
        }
    }

    /// Whether a committed layer with this id exists.
    pub fn exists(&self, id: &LayerId) -> bool {
        self.layer_dir(id).join("meta.json").is_file()
    }

    /// The committed layer `id`.
    pub fn get(&self, id: &LayerId) -> Result<Layer, StoreError> {
        let path = self.layer_dir(id);
        let meta = self.read_meta(id)?;
        Ok(Layer {
            id: id.clone(),
            diff: path.join("diff"),
            path,
            meta,
        })
    }

    fn read_meta(&self, id: &LayerId) -> Result<LayerMeta, StoreError> {
        let meta_path = self.layer_dir(id).join("meta.json");
        let bytes = match fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.clone()));
            }
            Err(e) => return Err(io_err("reading", &meta_path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptMeta {
            id: id.clone(),
            source,
        })
    }

    /// The ids of all committed layers, sorted.
    pub fn list(&self) -> Result<Vec<LayerId>, StoreError> {
        let dir = &self.inner.dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("reading", dir))? {
            let entry = entry.map_err(io_err("reading", dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|s| LayerId::parse(s).ok())
                && self.exists(&id)
            {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a committed layer: it disappears at once (renamed under
    /// `tmp/`), then its files are deleted. Its index entries are removed
    /// when they still point to it. The caller must make sure no mount uses
    /// it.
    pub fn remove(&self, id: &LayerId) -> Result<(), StoreError> {
        let meta = self.read_meta(id)?;
        let from = self.layer_dir(id);
        let to = self.tmp_dir().join(format!("rm-{id}"));
        fs::rename(&from, &to).map_err(io_err("renaming", &from))?;
        sync_dir(self.dir()).map_err(io_err("syncing", self.dir()))?;
        for (k, v) in &meta.labels {
            let entry = self.index_path(k, v);
            if fs::read_to_string(&entry).is_ok_and(|s| s == id.as_str()) {
                remove_if_exists(&entry).map_err(io_err("removing", &entry))?;
            }
        }
        remove_tree(&to).map_err(io_err("removing", &to))
    }

    /// Sets one label of a committed layer (e.g. a diff id learned at
    /// export), rewriting its meta.json atomically, and indexes it.
    pub fn set_label(&self, id: &LayerId, key: &str, value: &str) -> Result<(), StoreError> {
        let durable;
        {
            let _guard = self
                .inner
                .meta_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut meta = self.read_meta(id)?;
            meta.labels.insert(key.to_string(), value.to_string());
            self.write_meta(&self.layer_dir(id), &meta)?;
            durable = meta.unsynced.is_none();
        }
        self.index(id, key, value, durable)
    }

    /// The layer most recently indexed with label `key` = `value`, if it
    /// still exists and still carries that label. One small file read plus
    /// the layer's meta.json.
    pub fn find_by_label(&self, key: &str, value: &str) -> Result<Option<LayerId>, StoreError> {
        let entry = self.index_path(key, value);
        let content = match fs::read_to_string(&entry) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &entry)(e)),
        };
        let Ok(id) = LayerId::parse(content.trim()) else {
            return Ok(None);
        };
        match self.read_meta(&id) {
            Ok(meta) if meta.labels.get(key).is_some_and(|v| v == value) => Ok(Some(id)),
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_meta(&self, layer_root: &Path, meta: &LayerMeta) -> Result<(), StoreError> {
        let path = layer_root.join("meta.json");
        let mut bytes = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::Io {
            op: "serialising",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        // An unsynced layer's meta is as durable as its files: no fsync.
        write_replacing(&path, &bytes, meta.unsynced.is_none()).map_err(io_err("writing", &path))
    }

    fn index_path(&self, key: &str, value: &str) -> PathBuf {
        let key_dir = if !key.is_empty()
            && key.len() <= 128
            && !key.starts_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            key.to_string()
        } else {
            format!("={}", hex::encode(Sha256::digest(key.as_bytes())))
        };
        self.inner
            .dir
            .join("index")
            .join(key_dir)
            .join(hex::encode(Sha256::digest(value.as_bytes())))
    }

    /// Indexes `id` under label `key` = `value`; `durable`: fsynced (an
    /// entry naming a layer that is gone, or a torn one, reads as none).
    fn index(&self, id: &LayerId, key: &str, value: &str, durable: bool) -> Result<(), StoreError> {
        let entry = self.index_path(key, value);
        if let Some(parent) = entry.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        write_replacing(&entry, id.as_str().as_bytes(), durable).map_err(io_err("writing", &entry))
    }
}

/// A layer being written. Dropping it without [`LayerDraft::commit`] removes
/// it (best effort; a crash leaves it to [`LayerStore::cleanup`]).
#[derive(Debug)]
pub struct LayerDraft {
    store: LayerStore,
    id: LayerId,
    root: PathBuf,
    diff: PathBuf,
    work: PathBuf,
    lock_path: PathBuf,
    lock: Option<Flock<File>>,
    done: bool,
}

impl LayerDraft {
    /// The id the layer will have once committed.
    pub fn id(&self) -> &LayerId {
        &self.id
    }

    /// Where the content goes (the overlay upper dir). Its path changes on
    /// commit: use [`Layer::diff`] afterwards.
    pub fn diff_dir(&self) -> &Path {
        &self.diff
    }

    /// The draft's own directory, holding [`LayerDraft::diff_dir`]: a place
    /// on the same filesystem for side files that travel with the layer
    /// (readable afterwards under [`Layer::path`]) and for staging trees
    /// that are renamed into the diff before commit.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// An empty directory on the same filesystem as [`LayerDraft::diff_dir`],
    /// for overlay's `workdir=`. Emptied on commit.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// Makes the layer visible under its id, with `meta` (labels indexed).
    /// Any overlay mount using the draft must be unmounted first. The work
    /// dir is deleted (overlay leaves a root-owned `work/work` of mode 000
    /// in it).
    pub fn commit(mut self, mut meta: LayerMeta) -> Result<Layer, StoreError> {
        remove_tree(&self.work).map_err(io_err("removing", &self.work))?;
        // Durability (module docs): the content is not flushed here; the
        // layer records the boot and time it was complete at, so that the
        // first opening after a reboot can tell whether a sync covered it.
        // Without a boot id, every commit flushes the filesystem first.
        meta.unsynced = match &self.store.inner.boot {
            Some(boot) => Some(Unsynced {
                boot: boot.clone(),
                at: since_boot(),
            }),
            None => {
                let dirf = File::open(&self.root).map_err(io_err("opening", &self.root))?;
                rustix::fs::syncfs(&dirf).map_err(|e| io_err("syncing", &self.root)(e.into()))?;
                None
            }
        };
        self.store.write_meta(&self.root, &meta)?;
        let dest = self.store.layer_dir(&self.id);
        fs::rename(&self.root, &dest).map_err(io_err("committing", &dest))?;
        self.done = true;
        if meta.unsynced.is_none() {
            sync_dir(self.store.dir()).map_err(io_err("syncing", self.store.dir()))?;
        }
        self.release_lock();
        for (k, v) in &meta.labels {
            self.store.index(&self.id, k, v, meta.unsynced.is_none())?;
        }
        Ok(Layer {
            id: self.id.clone(),
            diff: dest.join("diff"),
            path: dest,
            meta,
        })
    }

    fn release_lock(&mut self) {
        let _ = remove_if_exists(&self.lock_path);
        self.lock = None;
    }
}

impl Drop for LayerDraft {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_tree(&self.root);
            self.release_lock();
        }
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `rm -rf`, tolerating a missing path and directories without permissions
/// (overlay's `work/work` is mode 000; an unprivileged caller needs to chmod
/// it before descending).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return remove_if_exists(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_traversable(path)?;
            match fs::remove_dir_all(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        }
        Err(e) => Err(e),
    }
}

fn make_traversable(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_traversable(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LayerStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path().join("snapshots")).unwrap();
        (dir, store)
    }

    #[test]
    fn ids_are_short_and_valid() {
        for _ in 0..100 {
            let id = LayerId::random().unwrap();
            assert_eq!(LayerId::parse(id.as_str()).unwrap(), id);
        }
        assert!(LayerId::parse("ABCDEFGHIJKL").is_err());
        assert!(LayerId::parse("abc").is_err());
        assert!(LayerId::parse("../../etc/pa").is_err());
    }

    #[test]
    fn commit_makes_a_layer_visible_with_meta_and_index() {
        let (_t, store) = store();
        let draft = store.create().unwrap();
        let id = draft.id().clone();
        assert!(!store.exists(&id));
        fs::write(draft.diff_dir().join("hello"), b"hi").unwrap();
        fs::create_dir_all(draft.work_dir().join("work")).unwrap();
        fs::set_permissions(
            draft.work_dir().join("work"),
            fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let mut meta = LayerMeta::default();
        meta.labels
            .insert("kiln.diff_id".into(), "sha256:abc".into());
        meta.size = Some(2);
        let layer = draft.commit(meta.clone()).unwrap();
        assert!(store.exists(&id));
        assert_eq!(fs::read(layer.diff.join("hello")).unwrap(), b"hi");
        assert!(!layer.path.join("work").exists());
        let got = store.get(&id).unwrap();
        // Committed without a flush, marked with this boot.
        let mark = got.meta.unsynced.clone().unwrap();
        assert_eq!(Some(&mark.boot), store.inner.boot.as_ref());
        assert_eq!(
            got.meta,
            LayerMeta {
                unsynced: Some(mark),
                ..meta
            }
        );
        assert_eq!(store.list().unwrap(), vec![id.clone()]);
        assert_eq!(
            store.find_by_label("kiln.diff_id", "sha256:abc").unwrap(),
            Some(id.clone())
        );
        assert_eq!(
            store.find_by_label("kiln.diff_id", "sha256:abd").unwrap(),
            None
        );
        // Nothing left in tmp/.
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn dropped_draft_is_removed() {
        let (_t, store) = store();
        let draft = store.create().unwrap();
        let id = draft.id().clone();
        fs::write(draft.diff_dir().join("x"), b"x").unwrap();
        drop(draft);
        assert!(!store.exists(&id));
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn cleanup_removes_dead_drafts_but_not_live_ones_or_layers() {
        let (_t, store) = store();
        let committed = store
            .create()
            .unwrap()
            .commit(LayerMeta::default())
            .unwrap();
        let live = store.create().unwrap();
        // A crashed draft: a directory whose lock file nobody holds.
        let dead = store.tmp_dir().join("deaddeaddead");
        fs::create_dir_all(dead.join("diff")).unwrap();
        fs::write(store.tmp_dir().join("deaddeaddead.lock"), b"").unwrap();
        // An interrupted removal.
        fs::create_dir_all(store.tmp_dir().join("rm-aaaaaaaaaaaa/diff")).unwrap();
        assert_eq!(store.cleanup().unwrap(), 2);
        assert!(!dead.exists());
        assert!(live.diff_dir().exists());
        assert!(store.exists(&committed.id));
        // Reopening cleans up as well and keeps the live draft.
        let reopened = LayerStore::open(store.dir()).unwrap();
        assert!(live.diff_dir().exists());
        assert_eq!(reopened.list().unwrap(), vec![committed.id]);
    }

    #[test]
    fn set_label_and_stale_index_entries() {
        let (_t, store) = store();
        let a = store
            .create()
            .unwrap()
            .commit(LayerMeta::default())
            .unwrap();
        store.set_label(&a.id, "kiln.diff_id", "sha256:1").unwrap();
        store
            .set_label(&a.id, "weird/key with spaces", "v")
            .unwrap();
        assert_eq!(store.get(&a.id).unwrap().meta.labels.len(), 2);
        assert_eq!(
            store.find_by_label("kiln.diff_id", "sha256:1").unwrap(),
            Some(a.id.clone())
        );
        assert_eq!(
            store.find_by_label("weird/key with spaces", "v").unwrap(),
            Some(a.id.clone())
        );
        // Relabelled: the old index entry is stale.
        store.set_label(&a.id, "kiln.diff_id", "sha256:2").unwrap();
        assert_eq!(
            store.find_by_label("kiln.diff_id", "sha256:1").unwrap(),
            None
        );
        // Removed: gone from list, get, index.
        store.remove(&a.id).unwrap();
        assert!(!store.exists(&a.id));
        assert!(matches!(store.get(&a.id), Err(StoreError::NotFound(_))));
        assert_eq!(
            store.find_by_label("kiln.diff_id", "sha256:2").unwrap(),
            None
        );
        assert!(store.list().unwrap().is_empty());
        // An index entry pointing to a missing layer reads as None.
        let b = store
            .create()
            .unwrap()
            .commit(LayerMeta::default())
            .unwrap();
        store.set_label(&b.id, "k", "v").unwrap();
        fs::rename(b.path.clone(), store.tmp_dir().join("elsewhere")).unwrap();
        assert_eq!(store.find_by_label("k", "v").unwrap(), None);
    }

    fn commit_one(store: &LayerStore, content: &[u8]) -> LayerId {
        let draft = store.create().unwrap();
        fs::write(draft.diff_dir().join("f"), content).unwrap();
        let id = draft.id().clone();
        draft.commit(LayerMeta::default()).unwrap();
        id
    }

    #[test]
    fn after_a_reboot_only_synced_layers_remain() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("snapshots");
        let a = LayerStore::open_with_boot_id(&at, "boot-a").unwrap();
        let synced = commit_one(&a, b"synced");
        // An image naming `synced` makes it durable; nothing to do the
        // second time.
        a.sync_layers(std::slice::from_ref(&synced)).unwrap();
        let recorded = fs::read_to_string(at.join(SYNCED_FILE)).unwrap();
        assert!(recorded.starts_with("boot-a "), "{recorded}");
        a.sync_layers(std::slice::from_ref(&synced)).unwrap();
        assert_eq!(fs::read_to_string(at.join(SYNCED_FILE)).unwrap(), recorded);
        let lost = commit_one(&a, b"not synced");
        // A crash of the machine may leave an unsynced meta.json empty.
        let torn = commit_one(&a, b"torn");
        fs::write(a.layer_dir(&torn).join("meta.json"), b"").unwrap();
        // Reopened in the same boot (a process that died): both stay.
        let again = LayerStore::open_with_boot_id(&at, "boot-a").unwrap();
        assert_eq!(again.list().unwrap().len(), 3);
        // The machine rebooted: the layer no sync covered may have lost its
        // files and is removed; the other is kept and marked durable.
        let b = LayerStore::open_with_boot_id(&at, "boot-b").unwrap();
        assert_eq!(b.list().unwrap(), vec![synced.clone()]);
        assert!(!b.exists(&lost));
        assert!(!b.layer_dir(&torn).exists());
        assert_eq!(b.get(&synced).unwrap().meta.unsynced, None);
        assert_eq!(
            fs::read(b.get(&synced).unwrap().diff.join("f")).unwrap(),
            b"synced"
        );
        assert_eq!(
            fs::read_to_string(at.join(SYNCED_FILE)).unwrap(),
            "boot-b 0\n"
        );
        // A layer of this boot survives a later opening in the same boot
        // without a sync; the next reboot removes it.
        let c = commit_one(&b, b"c");
        let b2 = LayerStore::open_with_boot_id(&at, "boot-b").unwrap();
        assert!(b2.exists(&c));
        let d = LayerStore::open_with_boot_id(&at, "boot-d").unwrap();
        assert!(!d.exists(&c));
        assert!(d.exists(&synced));
    }
}
