//! The local image index: image names → image IDs (`<state>/images`).
//!
//! One file, `images/images.json`, canonical JSON of
//! `{"images": {"<name>": {"id": "sha256:…", "manifest": "sha256:…"}}}`.
//! One file rather than one per name because a name contains `/` and `:` and
//! the whole index is small (a few hundred bytes per name); it also makes
//! `list` a single consistent snapshot.
//!
//! Concurrency and crash safety: readers read the file without locking (it is
//! only ever replaced by `rename`, so they see a whole old or a whole new
//! version). Every change is a read-modify-write under an exclusive `flock` on
//! the `images/` directory, written with [`crate::atomic`]'s temp + fsync +
//! rename, so concurrent kiln processes never lose each other's updates and a
//! crash leaves the old or the new index.
//!
//! A multi-platform name (a multi-platform build's `-t`, or `kiln import
//! --platform` of one name for several platforms) also has an entry per
//! platform under `"platforms": {"<name>": {"linux/arm64": {…}}}`, as a
//! registry's index would; its entry under `images` is its default platform's
//! (this machine's, else the first). [`ImageIndex::list`] and
//! [`ImageIndex::names_of`] see every platform's image, so `kiln images`
//! shows one row per platform and garbage collection keeps them all.
//!
//! Names are fully normalised references (`docker.io/library/busybox:latest`);
//! normalising is the caller's job. The index only refuses names that could not
//! be references at all (empty, whitespace or control characters).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kiln_llb::Digest;
use serde::{Deserialize, Serialize};

use crate::atomic::{DirLock, remove_stale_temps_once, write_atomic};
use crate::json::{JsonError, to_canonical_json};

const FILE: &str = "images.json";

/// Errors of the image index. Each names the file or name involved.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("image index: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The index file is not what kiln writes.
    #[error("image index {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid image name {0:?}: names are normalised references without whitespace")]
    InvalidName(String),
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// What a name points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The image ID: the digest of the image configuration.
    pub id: Digest,
    /// The manifest, when known (pulled or exported images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Digest>,
}

#[derive(Default, Serialize, Deserialize)]
struct IndexFile {
    #[serde(default)]
    images: BTreeMap<String, ImageRef>,
    /// Per-platform images of multi-platform names (`os/arch[/variant]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    platforms: BTreeMap<String, BTreeMap<String, ImageRef>>,
}

impl IndexFile {
    /// Every (name, image), platform entries included, each pair once.
    fn entries(self) -> Vec<(String, ImageRef)> {
        let mut out: Vec<(String, ImageRef)> = Vec::new();
        for (name, r) in self.images {
            for p in self
                .platforms
                .get(&name)
                .into_iter()
                .flat_map(|m| m.values())
            {
                if *p != r && !out.iter().any(|(n, x)| *n == name && x == p) {
                    out.push((name.clone(), *p));
                }
            }
            out.push((name, r));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The index of local image names.
#[derive(Clone, Debug)]
pub struct ImageIndex {
    dir: PathBuf,
}

impl ImageIndex {
    /// Opens (creating if needed) the index in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<ImageIndex, IndexError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| IndexError::Io {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(ImageIndex { dir })
    }

    /// The index file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Points `name` at `image`. Returns what it pointed at before.
    pub fn set(&self, name: &str, image: ImageRef) -> Result<Option<ImageRef>, IndexError> {
        self.locked(|ix| ix.set(name, image))?
    }

    /// Points `name` at one image per platform (`os/arch[/variant]`), with
    /// `default` (one of them) as its single-platform entry. Replaces what
    /// the name pointed at.
    pub fn set_platforms(
        &self,
        name: &str,
        images: &[(String, ImageRef)],
        default: ImageRef,
    ) -> Result<(), IndexError> {
        self.locked(|ix| ix.set_platforms(name, images, default))?
    }

    /// Forgets the manifest `manifest` wherever `name` records it (its entry
    /// and its platforms'), keeping the images: for a manifest that lost a
    /// blob (`kiln check --repair`). Returns whether something changed.
    pub fn forget_manifest(&self, name: &str, manifest: &Digest) -> Result<bool, IndexError> {
        self.update(|f| {
            let mut changed = false;
            let entries = f.images.get_mut(name).into_iter().chain(
                f.platforms
                    .get_mut(name)
                    .into_iter()
                    .flat_map(|m| m.values_mut()),
            );
            for r in entries {
                if r.manifest == Some(*manifest) {
                    r.manifest = None;
                    changed = true;
                }
            }
            changed
        })
    }

    /// The images of `name` by platform; empty for a single-platform name.
    pub fn platforms_of(&self, name: &str) -> Result<BTreeMap<String, ImageRef>, IndexError> {
        Ok(self.load()?.platforms.remove(name).unwrap_or_default())
    }

    /// What `name` points at.
    pub fn get(&self, name: &str) -> Result<Option<ImageRef>, IndexError> {
        Ok(self.load()?.images.get(name).copied())
    }

    /// Removes `name`. Returns what it pointed at.
    pub fn remove(&self, name: &str) -> Result<Option<ImageRef>, IndexError> {
        self.locked(|ix| ix.remove(name))?
    }

    /// Every name, sorted; a multi-platform name once per platform.
    pub fn list(&self) -> Result<Vec<(String, ImageRef)>, IndexError> {
        Ok(self.load()?.entries())
    }

    /// The names whose image ID is `id`, sorted.
    pub fn names_of(&self, id: &Digest) -> Result<Vec<String>, IndexError> {
        let mut names: Vec<String> = self
            .load()?
            .entries()
            .into_iter()
            .filter(|(_, r)| r.id == *id)
            .map(|(n, _)| n)
            .collect();
        names.dedup();
        Ok(names)
    }

    fn load(&self) -> Result<IndexFile, IndexError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| IndexError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(source) => Err(IndexError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Runs `f` with the index locked against every other change (by any
    /// process): for a caller that keeps something beside the index in step
    /// with it — kiln's image records, which a name must never outlive.
    /// Changes go through the [`Locked`] view (taking the lock again from
    /// the same process would wait forever).
    pub fn locked<T>(&self, f: impl FnOnce(&Locked<'_>) -> T) -> Result<T, IndexError> {
        let _lock = DirLock::exclusive(&self.dir).map_err(|source| IndexError::Io {
            op: "lock",
            path: self.dir.clone(),
            source,
        })?;
        Ok(f(&Locked { index: self }))
    }

    fn update<T>(&self, change: impl FnOnce(&mut IndexFile) -> T) -> Result<T, IndexError> {
        let _lock = DirLock::exclusive(&self.dir).map_err(|source| IndexError::Io {
            op: "lock",
            path: self.dir.clone(),
            source,
        })?;
        self.update_locked(change)
    }

    /// [`ImageIndex::update`] for a caller that holds the lock.
    fn update_locked<T>(&self, change: impl FnOnce(&mut IndexFile) -> T) -> Result<T, IndexError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| IndexError::Io { op, path, source }
        };
        remove_stale_temps_once(&self.dir).map_err(io("clean", &self.dir))?;
        let mut file = self.load()?;
        let before = to_canonical_json(&file)?;
        let out = change(&mut file);
        let bytes = to_canonical_json(&file)?;
        // An unchanged index is not rewritten (a rebuild that re-tags the
        // same image costs no fsync).
        if bytes != before {
            let path = self.path();
            write_atomic(&path, &bytes).map_err(io("write", &path))?;
        }
        Ok(out)
    }
}

/// The index while [`ImageIndex::locked`] holds its lock.
#[derive(Debug)]
pub struct Locked<'a> {
    index: &'a ImageIndex,
}

impl Locked<'_> {
    /// [`ImageIndex::set`].
    pub fn set(&self, name: &str, image: ImageRef) -> Result<Option<ImageRef>, IndexError> {
        check_name(name)?;
        self.index.update_locked(|f| {
            f.platforms.remove(name);
            f.images.insert(name.to_owned(), image)
        })
    }

    /// [`ImageIndex::set_platforms`].
    pub fn set_platforms(
        &self,
        name: &str,
        images: &[(String, ImageRef)],
        default: ImageRef,
    ) -> Result<(), IndexError> {
        check_name(name)?;
        self.index.update_locked(|f| {
            f.images.insert(name.to_owned(), default);
            f.platforms
                .insert(name.to_owned(), images.iter().cloned().collect());
        })
    }

    /// [`ImageIndex::remove`].
    pub fn remove(&self, name: &str) -> Result<Option<ImageRef>, IndexError> {
        self.index.update_locked(|f| {
            f.platforms.remove(name);
            f.images.remove(name)
        })
    }

    /// [`ImageIndex::names_of`].
    pub fn names_of(&self, id: &Digest) -> Result<Vec<String>, IndexError> {
        self.index.names_of(id)
    }

    /// [`ImageIndex::get`].
    pub fn get(&self, name: &str) -> Result<Option<ImageRef>, IndexError> {
        self.index.get(name)
    }

    /// [`ImageIndex::platforms_of`].
    pub fn platforms_of(&self, name: &str) -> Result<BTreeMap<String, ImageRef>, IndexError> {
        self.index.platforms_of(name)
    }
}

fn check_name(name: &str) -> Result<(), IndexError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(IndexError::InvalidName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Digest {
        Digest::of(&n.to_le_bytes())
    }

    #[test]
    fn set_get_remove_list_names_of() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ImageIndex::open(dir.path().join("images")).unwrap();
        assert_eq!(idx.get("docker.io/library/a:latest").unwrap(), None);
        assert!(idx.list().unwrap().is_empty());
        let a = ImageRef {
            id: id(1),
            manifest: None,
        };
        let b = ImageRef {
            id: id(2),
            manifest: Some(id(3)),
        };
        assert_eq!(idx.set("docker.io/library/a:latest", a).unwrap(), None);
        assert_eq!(idx.set("localhost:5000/x/y:1", b).unwrap(), None);
        assert_eq!(idx.set("docker.io/library/a:v2", a).unwrap(), None);
        assert_eq!(idx.get("docker.io/library/a:latest").unwrap(), Some(a));
        assert_eq!(
            idx.names_of(&id(1)).unwrap(),
            ["docker.io/library/a:latest", "docker.io/library/a:v2"]
        );
        // Retagging returns the old target.
        assert_eq!(idx.set("docker.io/library/a:latest", b).unwrap(), Some(a));
        assert_eq!(idx.names_of(&id(1)).unwrap(), ["docker.io/library/a:v2"]);
        assert_eq!(idx.remove("docker.io/library/a:v2").unwrap(), Some(a));
        assert_eq!(idx.remove("docker.io/library/a:v2").unwrap(), None);
        let names: Vec<String> = idx.list().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["docker.io/library/a:latest", "localhost:5000/x/y:1"]
        );
        // The file is canonical JSON and nothing else is left in the directory.
        let text = fs::read_to_string(idx.path()).unwrap();
        assert!(
            text.starts_with(r#"{"images":{"docker.io/library/a:latest":{"id":"sha256:"#),
            "{text}"
        );
        assert_eq!(fs::read_dir(dir.path().join("images")).unwrap().count(), 1);
    }

    #[test]
    fn multi_platform_names() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ImageIndex::open(dir.path()).unwrap();
        let amd = ImageRef {
            id: id(1),
            manifest: None,
        };
        let arm = ImageRef {
            id: id(2),
            manifest: None,
        };
        let both = [
            ("linux/amd64".to_owned(), amd),
            ("linux/arm64".to_owned(), arm),
        ];
        idx.set_platforms("x/m:1", &both, amd).unwrap();
        assert_eq!(idx.get("x/m:1").unwrap(), Some(amd));
        assert_eq!(
            idx.platforms_of("x/m:1").unwrap().get("linux/arm64"),
            Some(&arm)
        );
        assert_eq!(
            idx.list().unwrap(),
            [("x/m:1".to_owned(), arm), ("x/m:1".to_owned(), amd)]
        );
        assert_eq!(idx.names_of(&id(2)).unwrap(), ["x/m:1"]);
        // A single-platform set replaces the index.
        idx.set("x/m:1", arm).unwrap();
        assert!(idx.platforms_of("x/m:1").unwrap().is_empty());
        idx.set_platforms("x/m:1", &both, amd).unwrap();
        assert_eq!(idx.remove("x/m:1").unwrap(), Some(amd));
        assert!(idx.list().unwrap().is_empty());
        assert!(idx.platforms_of("x/m:1").unwrap().is_empty());
    }

    #[test]
    fn bad_names_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ImageIndex::open(dir.path()).unwrap();
        let r = ImageRef {
            id: id(1),
            manifest: None,
        };
        assert!(matches!(idx.set("", r), Err(IndexError::InvalidName(_))));
        assert!(matches!(idx.set("a b", r), Err(IndexError::InvalidName(_))));
        fs::write(idx.path(), b"{not json").unwrap();
        let err = idx.get("x").unwrap_err();
        assert!(err.to_string().contains("images.json"), "{err}");
        assert!(matches!(idx.set("x", r), Err(IndexError::Corrupt { .. })));
        fs::write(idx.path(), br#"{"images":{"x":{"id":"md5:00"}}}"#).unwrap();
        assert!(matches!(idx.list(), Err(IndexError::Corrupt { .. })));
    }

    #[test]
    fn concurrent_threads_do_not_lose_updates() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ImageIndex::open(dir.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let idx = idx.clone();
                s.spawn(move || {
                    for i in 0..25u32 {
                        let r = ImageRef {
                            id: id(t * 100 + i),
                            manifest: None,
                        };
                        idx.set(&format!("example.com/t{t}:{i}"), r).unwrap();
                    }
                });
            }
        });
        assert_eq!(idx.list().unwrap().len(), 100);
        for t in 0..4u32 {
            for i in 0..25u32 {
                assert_eq!(
                    idx.get(&format!("example.com/t{t}:{i}"))
                        .unwrap()
                        .map(|r| r.id),
                    Some(id(t * 100 + i))
                );
            }
        }
    }

    #[test]
    fn forget_manifest_keeps_the_images() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ImageIndex::open(dir.path().join("images")).unwrap();
        let m = id(9);
        let with = ImageRef {
            id: id(1),
            manifest: Some(m),
        };
        idx.set("r/a:1", with).unwrap();
        idx.set(
            "r/b:1",
            ImageRef {
                id: id(2),
                manifest: Some(id(8)),
            },
        )
        .unwrap();
        idx.set_platforms(
            "r/multi:1",
            &[
                ("linux/amd64".to_owned(), with),
                ("linux/arm64".to_owned(), with),
            ],
            with,
        )
        .unwrap();
        assert!(idx.forget_manifest("r/a:1", &m).unwrap());
        assert!(!idx.forget_manifest("r/a:1", &m).unwrap());
        assert!(!idx.forget_manifest("r/b:1", &m).unwrap());
        assert!(idx.forget_manifest("r/multi:1", &m).unwrap());
        let bare = ImageRef {
            id: id(1),
            manifest: None,
        };
        assert_eq!(idx.get("r/a:1").unwrap(), Some(bare));
        assert_eq!(idx.get("r/b:1").unwrap().unwrap().manifest, Some(id(8)));
        assert!(
            idx.platforms_of("r/multi:1")
                .unwrap()
                .values()
                .all(|r| *r == bare)
        );
    }

    #[test]
    fn stale_temp_files_are_cleaned_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ImageIndex::open(dir.path()).unwrap();
        fs::write(dir.path().join(".tmp-1-0-images.json"), b"half").unwrap();
        idx.set(
            "a/b:c",
            ImageRef {
                id: id(1),
                manifest: None,
            },
        )
        .unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
