//! The destination side of `COPY`/`ADD`: BuildKit's copy semantics
//! (`tonistiigi/fsutil/copy`), applied to a mounted root filesystem.
//!
//! The source side — which paths a COPY reads, with `.dockerignore`, wildcards,
//! `--exclude` and `--parents` — is `kiln-context`'s job; it hands over the
//! selected entries of each matched source, parents before children. This module
//! decides where each one lands and with which metadata:
//!
//! * the destination is resolved inside the root (symlinks in the image never
//!   lead out of it);
//! * a file copied onto an existing directory goes inside it; a directory copies
//!   its contents (`contents_only`, the Dockerfile default) or itself;
//! * missing parents are created `0755` (or the `--chmod` octal mode) and get
//!   the `--chown` owner;
//! * every copied entry keeps its mode (or gets `--chmod`), its mtime and — for
//!   stage sources — its owner and xattrs; context files are owned by `0:0`
//!   unless `--chown`, as the Docker client resets them;
//! * hard links inside one copied tree stay hard links.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::os::unix::ffi::OsStringExt;

use filetime::FileTime;
use kiln_context::{Entry, FileType};
use rayon::prelude::*;

use crate::mode::ModeSet;
use crate::reuse::{Donor, Manifest};

/// Why a copy failed. Paths are inside the destination root (`/app/x`) or
/// relative to the source, never host paths of the state directory.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot copy to non-directory: {0}")]
    NotADirectory(String),
    #[error("cannot replace directory {0} with a file")]
    ReplaceDirectory(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("resolving {path} in the destination: {message}")]
    Resolve { path: String, message: String },
}

/// How copied entries are changed.
#[derive(Debug, Clone)]
pub enum ModeChange {
    /// `--chmod=0755`: these permission bits for everything copied.
    Octal(u32),
    /// `--chmod=u=rwX,go=rX`: applied to each entry's own mode.
    Symbolic(ModeSet),
}

/// Options of one copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Owner of every copied entry; `None` keeps the source's owner.
    pub chown: Option<(u32, u32)>,
    /// Owner of directories the copy creates as missing parents; `None`: root.
    pub parents_owner: Option<(u32, u32)>,
    pub mode: Option<ModeChange>,
    /// Copy extended attributes (stage and image sources; not the context).
    pub xattrs: bool,
    /// Copy a socket as an empty regular file with its permissions (the
    /// build context: BuildKit's file-sync receiver writes every entry that
    /// is not a directory, symlink, device or fifo as a regular file).
    pub sockets_as_files: bool,
}

/// One entry of a selected source, parents before children.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Path relative to the matched source; empty for the source itself.
    pub rel: PathBuf,
    /// Where to read it on the host.
    pub path: PathBuf,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Copies into one destination root; keeps hard-link state across the sources
/// of one COPY instruction, as BuildKit's copier does.
#[derive(Debug)]
pub struct Copier<'a> {
    root: &'a Path,
    opts: CopyOptions,
    links: HashMap<(u64, u64), PathBuf>,
}

/// The display form of a host path inside `root` (`/app/x`).
fn inside(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

/// `mkdir -p` inside the root: creates `path` and its missing parents with
/// `mode`, owned by `owner` (root when `None`). `path` is a host path already
/// resolved inside the root.
pub fn mkdir_all(
    root: &Path,
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), CopyError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(CopyError::NotADirectory(inside(root, path))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", path)(e)),
    }
    if let Some(parent) = path.parent()
        && parent != path
        && parent.starts_with(root)
    {
        mkdir_all(root, parent, mode, owner)?;
    }
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(io_err("mkdir", path)(e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io_err("chmod", path))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))?;
    }
    Ok(())
}

impl<'a> Copier<'a> {
    pub fn new(root: &'a Path, opts: CopyOptions) -> Copier<'a> {
        Copier {
            root,
            opts,
            links: HashMap::new(),
        }
    }

    fn parent_mode(&self) -> u32 {
        match &self.opts.mode {
            Some(ModeChange::Octal(m)) => *m,
            _ => 0o755,
        }
    }

    /// Makes sure the directory that will hold `dest` exists (BuildKit's
    /// `ensureDstPath`): `dest` itself when it ends in `/`, else its parent.
    /// `dest` is absolute inside the root, cleaned, with its trailing `/` kept.
    pub fn ensure_dest_dir(&self, dest: &str) -> Result<(), CopyError> {
        let dir = if dest.ends_with('/') || dest.ends_with("/.") {
            dest
        } else {
            match dest.rfind('/') {
                Some(i) => &dest[..=i],
                None => "/",
            }
        };
        let host = self.resolve(dir, true)?;
        mkdir_all(
            self.root,
            &host,
            self.parent_mode(),
            self.opts.parents_owner,
        )
    }

    /// Resolves `path` (absolute inside the root) to a host path, following
    /// symlinks without leaving the root.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<PathBuf, CopyError> {
        kiln_snapshot::resolve_in_root(self.root, Path::new(path), follow_last).map_err(|e| {
            CopyError::Resolve {
                path: path.to_owned(),
                message: e.to_string(),
            }
        })
    }

    /// Where a source whose own (unfollowed) name is `name` lands for the
    /// destination `dest` (BuildKit's `prepareTargetDir`), creating the
    /// directory that will hold it.
    pub fn prepare_target(
        &self,
        src_meta: &Metadata,
        name: &OsStr,
        dest: &str,
        contents_only: bool,
    ) -> Result<(PathBuf, bool), CopyError> {
        let trimmed = dest.trim_end_matches('/');
        let dest_host = self.resolve(if trimmed.is_empty() { "/" } else { trimmed }, true)?;
        let dest_meta = match fs::metadata(&dest_host) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("stat", &dest_host)(e)),
        };
        let src_dir = src_meta.is_dir();
        let mut target = dest_host.clone();
        let dest_is_dir = dest_meta.as_ref().is_some_and(Metadata::is_dir);
        if (!contents_only && src_dir && dest_meta.is_some()) || (!src_dir && dest_is_dir) {
            target = dest_host.join(name);
        }
        let holder = if contents_only && src_dir && dest_meta.is_none() {
            target.clone()
        } else {
            target
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.root.to_path_buf())
        };
        // Fresh: nothing is at the target yet (or only the directory that
        // `mkdir_all` is about to make of it).
        let fresh = match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_err("stat", &target)(e)),
            Ok(_) => false,
        };
        mkdir_all(
            self.root,
            &holder,
            self.parent_mode(),
            self.opts.parents_owner,
        )?;
        Ok((target, fresh))
    }

    /// Copies one matched source (its entries, parents first) to `target`.
    pub fn copy_source(&mut self, entries: &[SourceEntry], target: &Path) -> Result<(), CopyError> {
        // Directories whose metadata is applied once their contents are in,
        // innermost last: (target, source metadata, what to apply).
        let mut open: Vec<OpenDir> = Vec::new();
        for e in entries {
            let dst = if e.rel.as_os_str().is_empty() {
                target.to_path_buf()
            } else {
                target.join(&e.rel)
            };
            while let Some(dir) = open.last() {
                if dst.starts_with(&dir.dst) && dst != dir.dst {
                    break;
                }
                if let Some(dir) = open.pop() {
                    self.finish_dir(&dir)?;
                }
            }
            let overwrite = !e.rel.as_os_str().is_empty();
            if let Some((meta, finish)) = self.copy_entry(e, &dst, overwrite)? {
                open.push(OpenDir {
                    dst,
                    src: e.path.clone(),
                    meta,
                    finish,
                });
            }
        }
        while let Some(dir) = open.pop() {
            self.finish_dir(&dir)?;
        }
        Ok(())
    }

    fn finish_dir(&self, dir: &OpenDir) -> Result<(), CopyError> {
        match dir.finish {
            DirFinish::Info => self.copy_info(&dir.meta, &dir.src, &dir.dst, true),
            DirFinish::Times => set_times(&dir.meta, &dir.dst),
        }
    }

    /// Copies one entry; for a directory, returns what to apply once its
    /// contents are copied.
    fn copy_entry(
        &mut self,
        e: &SourceEntry,
        dst: &Path,
        overwrite: bool,
    ) -> Result<Option<(Metadata, DirFinish)>, CopyError> {
        let meta = fs::symlink_metadata(&e.path).map_err(io_err("stat", &e.path))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let created = match fs::symlink_metadata(dst) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(dst).map_err(io_err("mkdir", dst))?;
                    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                        .map_err(io_err("chmod", dst))?;
                    true
                }
                Err(err) => return Err(io_err("stat", dst)(err)),
                Ok(m) if !m.is_dir() => {
                    return Err(CopyError::NotADirectory(inside(self.root, dst)));
                }
                Ok(_) => {
                    if overwrite {
                        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                            .map_err(io_err("chmod", dst))?;
                    }
                    false
                }
            };
            let finish = if overwrite || created {
                DirFinish::Info
            } else {
                DirFinish::Times
            };
            return Ok(Some((meta, finish)));
        }
        self.ensure_empty_file_target(dst)?;
        if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1
                && let Some(first) = self.links.get(&key)
            {
                fs::hard_link(first, dst).map_err(io_err("link", dst))?;
            } else {
                copy_file(&e.path, dst)?;
                if meta.nlink() > 1 {
                    self.links.insert(key, dst.to_path_buf());
                }
            }
        } else {
            create_special(&meta, &e.path, dst, self.opts.sockets_as_files)?;
        }
        self.copy_info(&meta, &e.path, dst, false)?;
        Ok(None)
    }

    /// Copies a directory source into `stage`, a directory of its own on
    /// the destination's filesystem that nothing else sees yet (it is
    /// renamed into place later), so no overlay stands between the copy
    /// and the disk: directories are made in order, then files are copied
    /// on all cores, then directory metadata is applied innermost first.
    /// `stage` may exist already (an empty directory standing for an
    /// existing destination, whose own metadata is then only its times).
    ///
    /// `reuse` hard-links regular files from an earlier layer instead of
    /// copying them when their content digest (`shas[i]`, for context
    /// sources) and resulting metadata match; the manifest of the new
    /// layer's files is returned. `at` is the stage's path in the layer.
    pub fn copy_staged(
        &mut self,
        entries: &[Entry],
        shas: &[Option<[u8; 32]>],
        stage: &Path,
        at: &Path,
        reuse: Option<&Donor>,
    ) -> Result<(Manifest, StagedStats), CopyError> {
        let mut dirs: Vec<OpenDir> = Vec::new();
        let mut files: Vec<usize> = Vec::new();
        let mut linked: Vec<usize> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let dst = stage.join(&e.path);
            if e.file_type == FileType::Dir {
                let meta =
                    fs::symlink_metadata(&e.host_path).map_err(io_err("stat", &e.host_path))?;
                let exists = e.path.as_os_str().is_empty() && dst.is_dir();
                if !exists {
                    fs::create_dir(&dst).map_err(io_err("mkdir", &dst))?;
                    fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                        .map_err(io_err("chmod", &dst))?;
                }
                dirs.push(OpenDir {
                    dst,
                    src: e.host_path.clone(),
                    meta,
                    finish: if exists {
                        DirFinish::Times
                    } else {
                        DirFinish::Info
                    },
                });
            } else if e.file_type == FileType::File && e.nlink > 1 {
                linked.push(i);
            } else {
                files.push(i);
            }
        }
        let this = &*self;
        let done: Vec<Result<Staged, CopyError>> = files
            .par_iter()
            .map(|&i| {
                this.stage_file(
                    &entries[i],
                    shas.get(i).copied().flatten(),
                    stage,
                    at,
                    reuse,
                )
            })
            .collect();
        let mut manifest = Manifest::default();
        let mut stats = StagedStats::default();
        for r in done {
            match r? {
                Staged::Linked(path, sha) => {
                    stats.linked += 1;
                    manifest.insert(path, sha);
                }
                Staged::Copied(Some((path, sha))) => {
                    stats.copied += 1;
                    manifest.insert(path, sha);
                }
                Staged::Copied(None) => stats.copied += 1,
                Staged::Other => {}
            }
        }
        // Files with several names: the first copy, the rest links to it.
        for i in linked {
            let e = &entries[i];
            let meta = fs::symlink_metadata(&e.host_path).map_err(io_err("stat", &e.host_path))?;
            let dst = stage.join(&e.path);
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                fs::hard_link(first, &dst).map_err(io_err("link", &dst))?;
            } else {
                copy_file(&e.host_path, &dst)?;
                self.links.insert(key, dst.clone());
            }
            self.copy_info(&meta, &e.host_path, &dst, false)?;
            stats.copied += 1;
        }
        while let Some(dir) = dirs.pop() {
            self.finish_dir(&dir)?;
        }
        Ok((manifest, stats))
    }

    /// One non-directory entry of a staged copy.
    fn stage_file(
        &self,
        e: &Entry,
        sha: Option<[u8; 32]>,
        stage: &Path,
        at: &Path,
        reuse: Option<&Donor>,
    ) -> Result<Staged, CopyError> {
        let dst = stage.join(&e.path);
        let in_layer = at.join(&e.path).into_os_string().into_vec();
        // A file whose digest (taken at the walk's stat) is the donor's
        // copy's: linked as the walk saw it, the content the cache key
        // names, so its own stat is not read again.
        if e.file_type == FileType::File
            && let (Some(sha), Some(donor)) = (sha, reuse)
            && donor.manifest.get(&in_layer) == Some(&sha)
        {
            let from = donor.diff.join(at).join(&e.path);
            if let Ok(d) = fs::symlink_metadata(&from)
                && d.file_type().is_file()
                && d.len() == e.size
                && d.mtime() * 1_000_000_000 + d.mtime_nsec() == e.mtime_ns
                && d.mode() & 0o7777 == self.mode_of(e.mode, false)
                && (d.uid(), d.gid()) == self.owner_of(e.uid, e.gid)
                && !self.opts.xattrs
                && fs::hard_link(&from, &dst).is_ok()
            {
                return Ok(Staged::Linked(in_layer, sha));
            }
        }
        let meta = fs::symlink_metadata(&e.host_path).map_err(io_err("stat", &e.host_path))?;
        if !meta.file_type().is_file() {
            create_special(&meta, &e.host_path, &dst, self.opts.sockets_as_files)?;
            self.copy_info(&meta, &e.host_path, &dst, false)?;
            return Ok(Staged::Other);
        }
        copy_file(&e.host_path, &dst)?;
        self.copy_info(&meta, &e.host_path, &dst, false)?;
        // Record the digest only if the source did not change while it was
        // copied (the same stat the cache key's digest was taken at).
        let unchanged = fs::symlink_metadata(&e.host_path).is_ok_and(|m| {
            m.len() == e.size
                && m.ino() == e.ino
                && m.mtime() * 1_000_000_000 + m.mtime_nsec() == e.mtime_ns
                && m.ctime() * 1_000_000_000 + m.ctime_nsec() == e.ctime_ns
        });
        Ok(Staged::Copied(
            sha.filter(|_| unchanged).map(|sha| (in_layer, sha)),
        ))
    }

    fn ensure_empty_file_target(&self, dst: &Path) -> Result<(), CopyError> {
        match fs::symlink_metadata(dst) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("stat", dst)(e)),
            Ok(m) if m.is_dir() => Err(CopyError::ReplaceDirectory(inside(self.root, dst))),
            Ok(_) => fs::remove_file(dst).map_err(io_err("remove", dst)),
        }
    }

    /// The owner a copy of an entry owned by `uid`:`gid` gets.
    fn owner_of(&self, uid: u32, gid: u32) -> (u32, u32) {
        self.opts.chown.unwrap_or((uid, gid))
    }

    /// The permission bits a copy of an entry of `st_mode` `mode` gets.
    fn mode_of(&self, mode: u32, is_dir: bool) -> u32 {
        match &self.opts.mode {
            None => mode & 0o7777,
            Some(ModeChange::Octal(m)) => *m & 0o7777,
            Some(ModeChange::Symbolic(set)) => set.apply(mode, is_dir) & 0o7777,
        }
    }

    /// Owner, mode, times and (for stage sources) xattrs of `dst` from `meta`.
    fn copy_info(
        &self,
        meta: &Metadata,
        src: &Path,
        dst: &Path,
        is_dir: bool,
    ) -> Result<(), CopyError> {
        let (uid, gid) = self.owner_of(meta.uid(), meta.gid());
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(io_err("chown", dst))?;
        if !meta.file_type().is_symlink() {
            let mode = self.mode_of(meta.mode(), is_dir);
            fs::set_permissions(dst, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", dst))?;
        }
        set_times(meta, dst)?;
        if self.opts.xattrs {
            copy_xattrs(src, dst);
        }
        Ok(())
    }
}

/// What a staged copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StagedStats {
    /// Regular files copied.
    pub copied: u64,
    /// Regular files hard-linked from the donor layer.
    pub linked: u64,
}

/// The outcome of one staged non-directory entry.
enum Staged {
    /// Linked from the donor: its path in the layer and digest.
    Linked(Vec<u8>, [u8; 32]),
    /// Copied; with its path and digest when known and stable.
    Copied(Option<(Vec<u8>, [u8; 32])>),
    /// A symlink or special file.
    Other,
}

/// Creates a symlink, device, fifo or socket like `src` (a socket as an
/// empty regular file with `sockets_as_files`).
fn create_special(
    meta: &Metadata,
    src: &Path,
    dst: &Path,
    sockets_as_files: bool,
) -> Result<(), CopyError> {
    let ft = meta.file_type();
    if ft.is_socket() && sockets_as_files {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o777)
            .open(dst)
            .map_err(io_err("create", dst))?;
    } else if ft.is_symlink() {
        let link = fs::read_link(src).map_err(io_err("readlink", src))?;
        std::os::unix::fs::symlink(&link, dst).map_err(io_err("symlink", dst))?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
        let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
        let perm = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
        nix::sys::stat::mknod(dst, kind, perm, meta.rdev())
            .map_err(|e| io_err("mknod", dst)(io::Error::from(e)))?;
    }
    Ok(())
}

/// A copied directory whose metadata is applied after its contents.
#[derive(Debug)]
struct OpenDir {
    dst: PathBuf,
    src: PathBuf,
    meta: Metadata,
    finish: DirFinish,
}

#[derive(Debug, Clone, Copy)]
enum DirFinish {
    /// Owner, mode, times, xattrs (a directory the copy created or overwrote).
    Info,
    /// Only the source's times (the existing top-level destination directory).
    Times,
}

fn set_times(meta: &Metadata, dst: &Path) -> Result<(), CopyError> {
    let atime = FileTime::from_last_access_time(meta);
    let mtime = FileTime::from_last_modification_time(meta);
    filetime::set_symlink_file_times(dst, atime, mtime).map_err(io_err("set times on", dst))
}

/// Copies extended attributes, ignoring errors (BuildKit logs and continues).
fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else { return };
    for name in names {
        if let Ok(Some(value)) = xattr::get(src, &name) {
            let _ = xattr::set(dst, &name, &value);
        }
    }
}

/// Copies file content: `copy_file_range` (reflinks where the filesystem
/// can), keeping the holes of a sparse file: a 1 TB sparse file in a
/// context must not become 1 TB on disk.
fn copy_file(src: &Path, dst: &Path) -> Result<(), CopyError> {
    let mut from = fs::File::open(src).map_err(io_err("open", src))?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io_err("create", dst))?;
    kiln_snapshot::copy_file_contents(&mut from, &mut to).map_err(io_err("copy to", dst))
}
