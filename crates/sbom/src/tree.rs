//! What a scan reads: an image's filesystem ([`Tree`]) and the layers it is
//! made of ([`Layers`]), behind traits so that the scanners know neither
//! mounts nor snapshot formats. [`DirTree`] and [`DirLayers`] read
//! directories, never following a symlink (an image is untrusted: a link
//! `/var/lib/dpkg/status -> /etc/shadow` must not make kiln read the host's
//! file).

use std::fs;
use std::io::{self, Read as _};
use std::path::{Component, Path, PathBuf};

/// What kind of entry a walk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// An entry of a walk: its absolute in-image path (`/usr/bin/x`), kind,
/// size and mode bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
}

impl Entry {
    /// A regular file with an execute bit.
    pub fn is_executable(&self) -> bool {
        self.kind == Kind::File && self.mode & 0o111 != 0
    }
}

/// An image filesystem as the scanners see it.
pub trait Tree {
    /// Calls `f` for every entry below `/`, parents before children, without
    /// following symlinks.
    fn walk(&self, f: &mut dyn FnMut(&Entry)) -> io::Result<()>;
    /// The regular file at `path`, at most `limit` bytes (longer files are
    /// an error); `None` when there is none or a symlink is on the way.
    fn read(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>>;
    /// The regular file at `path` opened for reading (binaries are read in
    /// parts); `None` as for [`Tree::read`].
    fn open(&self, path: &str) -> io::Result<Option<fs::File>>;
}

/// The layers of an image, bottom first, for attributing packages.
pub trait Layers {
    fn count(&self) -> usize;
    /// The layer's identifier (its diffID, `sha256:…`).
    fn id(&self, layer: usize) -> String;
    /// Whether `layer` itself has an entry at `path` (not a deletion).
    fn has(&self, layer: usize, path: &str) -> bool;
    /// The regular file `path` as `layer` wrote it.
    fn read(&self, layer: usize, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>>;
}

/// No layers (a directory scanned on its own): nothing is attributed.
#[derive(Debug, Default)]
pub struct NoLayers;

impl Layers for NoLayers {
    fn count(&self) -> usize {
        0
    }
    fn id(&self, _: usize) -> String {
        String::new()
    }
    fn has(&self, _: usize, _: &str) -> bool {
        false
    }
    fn read(&self, _: usize, _: &str, _: u64) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

/// `path` (absolute, in-image) below `root`, if no component of it below
/// the root is a symlink and it has no `..`.
fn beneath(root: &Path, path: &str) -> io::Result<Option<PathBuf>> {
    let mut p = root.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                p.push(n);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_symlink() => return Ok(None),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) if e.raw_os_error() == Some(20) => return Ok(None), // ENOTDIR
                    Err(e) => return Err(e),
                }
            }
            Component::ParentDir | Component::Prefix(_) => return Ok(None),
        }
    }
    Ok(Some(p))
}

fn read_regular(p: &Path, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let m = fs::symlink_metadata(p)?;
    if !m.file_type().is_file() {
        return Ok(None);
    }
    if m.len() > limit {
        return Err(io::Error::other(format!(
            "{path}: {} bytes, more than the {limit} a scan reads",
            m.len()
        )));
    }
    let mut out = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
    fs::File::open(p)?.take(limit).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// A directory as an image filesystem.
#[derive(Clone, Debug)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> DirTree {
        DirTree { root: root.into() }
    }
}

impl Tree for DirTree {
    fn walk(&self, f: &mut dyn FnMut(&Entry)) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut stack: Vec<(PathBuf, String)> = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let mut entries: Vec<fs::DirEntry> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(fs::DirEntry::file_name);
            let mut subdirs = Vec::new();
            for e in entries {
                let m = e.metadata()?;
                let name = e.file_name();
                let path = format!("{rel}/{}", name.to_string_lossy());
                let ft = m.file_type();
                let kind = if ft.is_symlink() {
                    Kind::Symlink
                } else if ft.is_dir() {
                    Kind::Dir
                } else if ft.is_file() {
                    Kind::File
                } else {
                    Kind::Other
                };
                f(&Entry {
                    path: path.clone(),
                    kind,
                    size: m.len(),
                    mode: m.permissions().mode(),
                });
                if kind == Kind::Dir {
                    subdirs.push((e.path(), path));
                }
            }
            // Depth first, in name order.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    fn read(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        match beneath(&self.root, path)? {
            Some(p) => read_regular(&p, path, limit),
            None => Ok(None),
        }
    }

    fn open(&self, path: &str) -> io::Result<Option<fs::File>> {
        let Some(p) = beneath(&self.root, path)? else {
            return Ok(None);
        };
        if !fs::symlink_metadata(&p)?.file_type().is_file() {
            return Ok(None);
        }
        fs::File::open(p).map(Some)
    }
}

/// Whether an entry of a layer directory records a deletion.
pub type WhiteoutTest = Box<dyn Fn(&Path, &fs::Metadata) -> bool + Send + Sync>;

/// Layers as directories (overlay upper dirs: a deletion is an entry that
/// `is_whiteout` recognises), bottom first, with their ids.
pub struct DirLayers {
    pub layers: Vec<(String, PathBuf)>,
    pub is_whiteout: WhiteoutTest,
}

impl std::fmt::Debug for DirLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirLayers")
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

impl Layers for DirLayers {
    fn count(&self) -> usize {
        self.layers.len()
    }

    fn id(&self, layer: usize) -> String {
        self.layers
            .get(layer)
            .map(|(id, _)| id.clone())
            .unwrap_or_default()
    }

    fn has(&self, layer: usize, path: &str) -> bool {
        let Some((_, dir)) = self.layers.get(layer) else {
            return false;
        };
        match beneath(dir, path) {
            Ok(Some(p)) => fs::symlink_metadata(&p).is_ok_and(|m| !(self.is_whiteout)(&p, &m)),
            _ => false,
        }
    }

    fn read(&self, layer: usize, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Some((_, dir)) = self.layers.get(layer) else {
            return Ok(None);
        };
        match beneath(dir, path)? {
            Some(p) => read_regular(&p, path, limit),
            None => Ok(None),
        }
    }
}
