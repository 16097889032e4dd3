//! OCI layer tar → layer dir ([`unpack_layer`]), and `ADD archive.tar /dest`
//! ([`extract_archive`]).
//!
//! ## Names
//!
//! As moby's `archive.Unpack`/`UnpackLayer`: a leading `/` is stripped (an
//! absolute name is taken relative to the target), the name is cleaned
//! lexically (`a/./b/../c` → `a/c`), and a name that still climbs out
//! (`../x`, `a/../../x`) is **rejected** with an error naming the entry; an
//! entry naming the root itself (`./`) is skipped. Hardlink targets get the
//! same treatment.
//!
//! ## unpack_layer: a layer dir in overlay upper-dir format
//!
//! - `.wh.<name>` → a whiteout `<name>` (a 0/0 character device, or a
//!   whiteout file: the format the caller gives, see [`crate::whiteout`]), unless
//!   this same tar already put a real `<name>` there: a file of this layer
//!   hides the lower one by itself (the OCI spec: a whiteout applies to
//!   lower layers only); a directory of this layer is made opaque.
//!   `.wh..wh..opq` → `trusted.overlay.opaque=y` (`user.overlay.opaque=y`
//!   in a user namespace, see [`crate::mount`]) on its directory. Other
//!   `.wh..wh.*` names (AUFS metadata) are skipped, as moby does.
//! - A directory created over a whiteout of the same tar (`.wh.x` then
//!   `x/`), or implied under one, is made opaque: the tar said "delete the
//!   lower `x`, then create `x`".
//! - Entries are never written through a symlink: an entry whose parent
//!   path crosses a symlink or a non-directory is an error (a layer dir is
//!   not a merged root; following the link would write into another part
//!   of this layer). Missing parent directories are created 0755 root:root
//!   with mtime 0 (moby's `ImpliedDirectoryMode`; mtime 0 instead of "now" so
//!   that the layer dir stays reproducible).
//! - A hardlink must point to a non-directory that an earlier entry of the
//!   same tar created, reached without crossing a symlink. A hardlink
//!   entry's own header metadata is not applied (the inode already has the
//!   target's; writers, kiln's included, repeat the same values).
//! - Duplicate names: the later entry wins (the earlier one is removed,
//!   recursively for a directory, unless both are directories: then the
//!   metadata of the later one applies), like Docker.
//! - Ownership (numeric uid/gid, uname/gname ignored), permission bits with
//!   setuid/setgid/sticky, mtime (also of symlinks; directories after their
//!   content) and xattrs are applied, except the overlay's own xattrs
//!   (`trusted.overlay.*`, `user.overlay.*`: a tar must not forge overlay
//!   metadata) and `security.selinux`. An xattr the filesystem refuses with
//!   ENOTSUP, or a `user.*` xattr refused with EPERM on a symlink or device,
//!   is skipped, as containerd does.
//! - GNU sparse files are written sparse (holes are seeked over, never
//!   written), so a "huge" sparse file costs only its data.
//!
//! ## extract_archive: ADD semantics
//!
//! BuildKit's `ADD local.tar /dest` runs moby's `chrootarchive.Untar` with
//! the chroot at the destination directory: entries are merged into the
//! existing tree, symlinks already in the tree (or created by earlier
//! entries) *are* followed when resolving an entry's parent, but only
//! inside `dest_dir` (absolute targets restart at `dest_dir`, `..` stops
//! there: [`crate::resolve_in_root`]); the entry's own final component is
//! never followed (an existing file, symlink or directory in the way is
//! removed and replaced, except a directory by a directory, whose metadata
//! is then overwritten by the entry's, as moby does). `.wh.` files get no
//! special meaning (moby's default whiteout format leaves them as files);
//! note that such a file cannot survive into an image anyway: exported, it
//! is a whiteout to whoever applies the layer (Docker 20.10's classic
//! builder shows the same: `ADD` of a tar holding `dir/.wh.x` yields a
//! deleted `x`, not a file).
//! `chown` replaces every entry's owner (ADD `--chown`); implied parent
//! directories are created 0755 root:root. xattrs are best effort as in
//! BuildKit (`BestEffortXattrs`).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag};

use crate::securejoin::{ResolveError, resolve_in_root};
use crate::store::remove_tree;
use crate::whiteout::WhiteoutFormat;

/// Options of [`extract_archive`].
#[derive(Clone, Debug, Default)]
pub struct ExtractOptions {
    /// Owner (uid, gid) for every extracted entry instead of the tar's.
    pub chown: Option<(u32, u32)>,
}

/// What an unpack did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (whiteouts included, skipped ones not).
    pub entries: u64,
    /// Sum of the entries' sizes (file content bytes).
    pub bytes: u64,
    /// Whiteouts and opaque markers converted (layer mode only).
    pub whiteouts: u64,
    /// Character and block devices left out because this process runs in a
    /// user namespace (rootless), which may not create them.
    pub skipped_devices: u64,
}

/// Errors of [`unpack_layer`] and [`extract_archive`]. Each names the tar
/// entry involved when there is one.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading the tar stream failed (corrupt or truncated archive).
    #[error("unpack into {}: reading the tar{}: {source}", target.display(), after(.entry))]
    Tar {
        /// The target directory.
        target: PathBuf,
        /// The last entry read successfully, if any.
        entry: Option<String>,
        /// The underlying error.
        source: io::Error,
    },
    /// A filesystem operation for an entry failed.
    #[error("unpack tar entry {entry:?}: {op} {}: {source}", path.display())]
    Io {
        /// The tar entry.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The entry's name (or hardlink target) climbs out of the target.
    #[error("unpack tar entry {entry:?}: {what} {name:?} escapes the target directory")]
    Escape {
        /// The tar entry.
        entry: String,
        /// `name` or `hardlink target`.
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// An entry would be written below a symlink or a non-directory.
    #[error("unpack tar entry {entry:?}: parent {parent:?} is {kind}, not a directory")]
    BadParent {
        /// The tar entry.
        entry: String,
        /// The parent, relative to the target.
        parent: String,
        /// `a symlink`, `a file`, ….
        kind: &'static str,
    },
    /// A hardlink whose target is not acceptable.
    #[error("unpack tar entry {entry:?}: hardlink to {target:?}: {why}")]
    BadHardlink {
        /// The tar entry.
        entry: String,
        /// Its link target.
        target: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A malformed entry (bad whiteout name, unsupported type, empty
    /// symlink target, …).
    #[error("unpack tar entry {entry:?}: {why}")]
    BadEntry {
        /// The tar entry.
        entry: String,
        /// What is wrong.
        why: String,
    },
    /// Resolving a path inside the destination failed.
    #[error("unpack tar entry {entry:?}: {source}")]
    Resolve {
        /// The tar entry.
        entry: String,
        /// The underlying error.
        source: ResolveError,
    },
}

fn after(entry: &Option<String>) -> String {
    entry
        .as_ref()
        .map(|e| format!(" after entry {e:?}"))
        .unwrap_or_default()
}

/// Unpacks an uncompressed OCI layer tar into `diff_dir` (normally a fresh
/// [`crate::LayerDraft::diff_dir`]) in overlay upper-dir format. See the
/// module docs for the exact semantics. Deletions are written as
/// `whiteouts`. Needs root for whiteouts (`mknod`, `trusted.*` xattrs) and
/// for foreign ownership.
pub fn unpack_layer(
    tar: impl Read,
    diff_dir: &Path,
    whiteouts: WhiteoutFormat,
) -> Result<UnpackStats, UnpackError> {
    Unpacker::new(diff_dir, Mode_::Layer { whiteouts }).run(tar)
}

/// Extracts an uncompressed tar into the existing tree `dest_dir` with the
/// semantics of Dockerfile `ADD archive.tar /dest` (see the module docs).
pub fn extract_archive(
    tar: impl Read,
    dest_dir: &Path,
    opts: &ExtractOptions,
) -> Result<UnpackStats, UnpackError> {
    Unpacker::new(dest_dir, Mode_::Extract { chown: opts.chown }).run(tar)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode_ {
    Layer { whiteouts: WhiteoutFormat },
    Extract { chown: Option<(u32, u32)> },
}

struct Unpacker {
    root: PathBuf,
    mode: Mode_,
    stats: UnpackStats,
    buf: Vec<u8>,
    /// Directories whose mtime is set at the end (after their content).
    dir_times: Vec<(PathBuf, i64)>,
    /// Layer mode: implied directories (mtime 0 at the end).
    implied: Vec<PathBuf>,
    /// Layer mode: relative paths known to be real directories.
    known_dirs: HashSet<Vec<u8>>,
    /// Layer mode: relative paths of non-directories created by this tar.
    created: HashSet<Vec<u8>>,
    /// Extract mode: resolved parent directories, by relative path.
    resolved: HashMap<Vec<u8>, PathBuf>,
}

/// The cleaned components of a tar name; `None` for the root itself.
fn clean_name(raw: &[u8]) -> Result<Option<Vec<&[u8]>>, ()> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if comps.pop().is_none() {
                    return Err(());
                }
            }
            _ => comps.push(c),
        }
    }
    Ok(if comps.is_empty() { None } else { Some(comps) })
}

fn join_rel(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lstat(p: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn kind_of(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// The parts of a tar header an unpack needs, read once.
struct EntryInfo {
    name: String,
    typeflag: tar::EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    link: Option<Vec<u8>>,
    dev: (u32, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Unpacker {
    fn new(root: &Path, mode: Mode_) -> Unpacker {
        Unpacker {
            root: root.to_path_buf(),
            mode,
            stats: UnpackStats::default(),
            buf: vec![0u8; 1 << 20],
            dir_times: Vec::new(),
            implied: Vec::new(),
            known_dirs: HashSet::new(),
            created: HashSet::new(),
            resolved: HashMap::new(),
        }
    }

    fn run(mut self, tar: impl Read) -> Result<UnpackStats, UnpackError> {
        let mut archive = tar::Archive::new(tar);
        let mut last: Option<String> = None;
        let tar_err = |target: &Path, last: &Option<String>, source| UnpackError::Tar {
            target: target.to_path_buf(),
            entry: last.clone(),
            source,
        };
        let entries = archive
            .entries()
            .map_err(|e| tar_err(&self.root, &last, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| tar_err(&self.root, &last, e))?;
            let raw = entry.path_bytes().into_owned();
            let name = lossy(&raw);
            last = Some(name.clone());
            let info = read_info(&mut entry, name).map_err(|e| tar_err(&self.root, &last, e))?;
            if info.typeflag.is_pax_global_extensions() {
                continue;
            }
            let comps = match clean_name(&raw) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(()) => {
                    return Err(UnpackError::Escape {
                        entry: info.name,
                        what: "name",
                        name: lossy(&raw),
                    });
                }
            };
            self.stats.entries += 1;
            self.stats.bytes += info.size;
            match self.mode {
                Mode_::Layer { whiteouts } => {
                    self.layer_entry(&mut entry, &info, &comps, whiteouts)?
                }
                Mode_::Extract { chown } => self.extract_entry(&mut entry, &info, &comps, chown)?,
            }
        }
        self.finish()
    }

    fn finish(self) -> Result<UnpackStats, UnpackError> {
        let set = |p: &Path, t: i64| {
            let ft = FileTime::from_unix_time(t, 0);
            filetime::set_symlink_file_times(p, ft, ft).map_err(|source| UnpackError::Io {
                entry: lossy(
                    p.strip_prefix(&self.root)
                        .unwrap_or(p)
                        .as_os_str()
                        .as_bytes(),
                ),
                op: "setting times of",
                path: p.to_path_buf(),
                source,
            })
        };
        for p in &self.implied {
            // Replaced by a later entry? Then that entry's times apply.
            if lstat(p).ok().flatten().is_some_and(|m| m.is_dir()) {
                set(p, 0)?;
            }
        }
        for (p, t) in self.dir_times.iter().rev() {
            if lstat(p).ok().flatten().is_some_and(|m| m.is_dir()) {
                set(p, *t)?;
            }
        }
        Ok(self.stats)
    }

    fn io<'a>(
        &self,
        entry: &'a str,
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> UnpackError + 'a {
        move |source| UnpackError::Io {
            entry: entry.to_string(),
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    // ----- layer mode -----

    /// Makes sure the parent components exist as real directories (never
    /// through a symlink) and returns the parent's host path.
    fn layer_parent(&mut self, entry: &str, parents: &[&[u8]]) -> Result<PathBuf, UnpackError> {
        let mut abs = self.root.clone();
        let mut rel: Vec<u8> = Vec::new();
        for c in parents {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(c);
            abs.push(OsStr::from_bytes(c));
            if self.known_dirs.contains(&rel) {
                continue;
            }
            let meta = lstat(&abs).map_err(self.io(entry, "lstat", &abs))?;
            match meta {
                Some(m) if m.is_dir() => {}
                Some(m) if crate::whiteout::is_whiteout(&abs, &m) => {
                    // `.wh.x` then `x/y`: a new, opaque x.
                    fs::remove_file(&abs).map_err(self.io(entry, "removing", &abs))?;
                    self.mkdir_implied(entry, &abs)?;
                    self.set_opaque(entry, &abs)?;
                }
                Some(m) => {
                    return Err(UnpackError::BadParent {
                        entry: entry.to_string(),
                        parent: lossy(&rel),
                        kind: kind_of(&m),
                    });
                }
                None => self.mkdir_implied(entry, &abs)?,
            }
            self.known_dirs.insert(rel.clone());
        }
        Ok(abs)
    }

    fn mkdir_implied(&mut self, entry: &str, abs: &Path) -> Result<(), UnpackError> {
        fs::create_dir(abs).map_err(self.io(entry, "creating directory", abs))?;
        fs::set_permissions(abs, fs::Permissions::from_mode(0o755))
            .map_err(self.io(entry, "chmod", abs))?;
        self.implied.push(abs.to_path_buf());
        Ok(())
    }

    fn set_opaque(&mut self, entry: &str, dir: &Path) -> Result<(), UnpackError> {
        xattr::set(dir, crate::mount::opaque_xattr(), b"y").map_err(self.io(
            entry,
            "marking opaque",
            dir,
        ))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn layer_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        info: &EntryInfo,
        comps: &[&[u8]],
        whiteouts: WhiteoutFormat,
    ) -> Result<(), UnpackError> {
        let (base, parents) = match comps.split_last() {
            Some(x) => x,
            None => return Ok(()),
        };
        let e = info.name.as_str();
        if let Some(original) = base.strip_prefix(b".wh.") {
            let parent = self.layer_parent(e, parents)?;
            if *base == b".wh..wh..opq" {
                return self.set_opaque(e, &parent);
            }
            if original.starts_with(b".wh.") {
                return Ok(()); // AUFS metadata
            }
            if original.is_empty() || original == b"." || original == b".." {
                return Err(UnpackError::BadEntry {
                    entry: e.to_string(),
                    why: "invalid whiteout name".into(),
                });
            }
            let target = parent.join(OsStr::from_bytes(original));
            match lstat(&target).map_err(self.io(e, "lstat", &target))? {
                None => {
                    crate::whiteout::make_whiteout(&target, whiteouts).map_err(self.io(
                        e,
                        "creating whiteout",
                        &target,
                    ))?;
                    // mtime 0, so that the layer dir is reproducible.
                    let zero = FileTime::from_unix_time(0, 0);
                    filetime::set_symlink_file_times(&target, zero, zero).map_err(self.io(
                        e,
                        "setting times of",
                        &target,
                    ))?;
                    self.stats.whiteouts += 1;
                }
                Some(m) if m.is_dir() => self.set_opaque(e, &target)?,
                Some(_) => {} // a whiteout already, or this layer's own file
            }
            return Ok(());
        }
        let parent = self.layer_parent(e, parents)?;
        let dst = parent.join(OsStr::from_bytes(base));
        let rel = join_rel(comps);
        let is_dir = info.typeflag.is_dir();
        let mut make_opaque = false;
        if let Some(m) = lstat(&dst).map_err(self.io(e, "lstat", &dst))?
            && !(m.is_dir() && is_dir)
        {
            make_opaque = is_dir && crate::whiteout::is_whiteout(&dst, &m);
            if m.is_dir() {
                self.known_dirs.clear();
            }
            remove_tree(&dst).map_err(self.io(e, "removing", &dst))?;
        }
        if info.typeflag.is_hard_link() {
            let link = info.link.as_deref().unwrap_or_default();
            let target = self.layer_link_target(e, link)?;
            fs::hard_link(&target, &dst).map_err(self.io(e, "hardlinking", &dst))?;
            self.created.insert(rel);
            return Ok(());
        }
        self.create(entry, info, &dst, None)?;
        if is_dir {
            self.known_dirs.insert(rel);
            if make_opaque {
                self.set_opaque(e, &dst)?;
            }
        } else {
            self.created.insert(rel);
        }
        Ok(())
    }

    /// Validates a hardlink target of a layer tar and returns its host path.
    fn layer_link_target(&self, e: &str, link: &[u8]) -> Result<PathBuf, UnpackError> {
        let bad = |why| UnpackError::BadHardlink {
            entry: e.to_string(),
            target: lossy(link),
            why,
        };
        let comps = match clean_name(link) {
            Ok(Some(c)) => c,
            Ok(None) => return Err(bad("it names the layer root")),
            Err(()) => {
                return Err(UnpackError::Escape {
                    entry: e.to_string(),
                    what: "hardlink target",
                    name: lossy(link),
                });
            }
        };
        if !self.created.contains(&join_rel(&comps)) {
            return Err(bad("not an earlier entry of this tar"));
        }
        let mut abs = self.root.clone();
        for (i, c) in comps.iter().enumerate() {
            abs.push(OsStr::from_bytes(c));
            let m = lstat(&abs)
                .map_err(self.io(e, "lstat", &abs))?
                .ok_or_else(|| bad("it no longer exists"))?;
            let last = i + 1 == comps.len();
            if !last && !m.is_dir() {
                return Err(bad("its path crosses a symlink or a file"));
            }
            if last && m.is_dir() {
                return Err(bad("it is a directory"));
            }
        }
        Ok(abs)
    }

    // ----- extract mode -----

    fn extract_parent(&mut self, e: &str, parents: &[&[u8]]) -> Result<PathBuf, UnpackError> {
        let rel = join_rel(parents);
        if let Some(p) = self.resolved.get(&rel) {
            return Ok(p.clone());
        }
        let mut resolved = self.root.clone();
        for i in 0..parents.len() {
            let prefix = join_rel(&parents[..=i]);
            resolved = resolve_in_root(&self.root, Path::new(OsStr::from_bytes(&prefix)), true)
                .map_err(|source| UnpackError::Resolve {
                    entry: e.to_string(),
                    source,
                })?;
            match fs::metadata(&resolved) {
                Ok(m) if m.is_dir() => {}
                Ok(m) => {
                    return Err(UnpackError::BadParent {
                        entry: e.to_string(),
                        parent: lossy(&prefix),
                        kind: kind_of(&m),
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    // The resolution may end in several missing components
                    // (a symlink to a missing path): create each, 0755.
                    let below = resolved.strip_prefix(&self.root).unwrap_or(Path::new(""));
                    let mut cur = self.root.clone();
                    for c in below.components() {
                        cur.push(c);
                        if lstat(&cur).map_err(self.io(e, "lstat", &cur))?.is_none() {
                            fs::create_dir(&cur).map_err(self.io(e, "creating directory", &cur))?;
                            fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                                .map_err(self.io(e, "chmod", &cur))?;
                        }
                    }
                }
                Err(err) => return Err(self.io(e, "stat", &resolved)(err)),
            }
        }
        self.resolved.insert(rel, resolved.clone());
        Ok(resolved)
    }

    fn extract_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        info: &EntryInfo,
        comps: &[&[u8]],
        chown: Option<(u32, u32)>,
    ) -> Result<(), UnpackError> {
        let (base, parents) = match comps.split_last() {
            Some(x) => x,
            None => return Ok(()),
        };
        let e = info.name.as_str();
        let parent = self.extract_parent(e, parents)?;
        let dst = parent.join(OsStr::from_bytes(base));
        let is_dir = info.typeflag.is_dir();
        if let Some(m) = lstat(&dst).map_err(self.io(e, "lstat", &dst))?
            && !(m.is_dir() && is_dir)
        {
            remove_tree(&dst).map_err(self.io(e, "removing", &dst))?;
            self.resolved.clear();
        }
        if info.typeflag.is_hard_link() {
            let link = info.link.as_deref().unwrap_or_default();
            let comps = match clean_name(link) {
                Ok(Some(c)) => c,
                Ok(None) | Err(()) => {
                    return Err(UnpackError::Escape {
                        entry: e.to_string(),
                        what: "hardlink target",
                        name: lossy(link),
                    });
                }
            };
            let (tbase, tparents) = comps.split_last().ok_or_else(|| UnpackError::BadEntry {
                entry: e.to_string(),
                why: "empty hardlink target".into(),
            })?;
            let tparent = resolve_in_root(
                &self.root,
                Path::new(OsStr::from_bytes(&join_rel(tparents))),
                true,
            )
            .map_err(|source| UnpackError::Resolve {
                entry: e.to_string(),
                source,
            })?;
            let target = tparent.join(OsStr::from_bytes(tbase));
            fs::hard_link(&target, &dst).map_err(self.io(e, "hardlinking", &dst))?;
            return Ok(());
        }
        if info.typeflag.is_symlink() {
            self.resolved.clear();
        }
        self.create(entry, info, &dst, chown)
    }

    // ----- shared -----

    /// Creates `dst` (which does not exist, or is a directory when the entry
    /// is one) from the entry and applies its metadata.
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        info: &EntryInfo,
        dst: &Path,
        chown: Option<(u32, u32)>,
    ) -> Result<(), UnpackError> {
        let e = info.name.as_str();
        let t = info.typeflag;
        let perm = Mode::from_bits_truncate(info.mode & 0o777);
        if t.is_dir() {
            if lstat(dst).map_err(self.io(e, "lstat", dst))?.is_none() {
                fs::create_dir(dst).map_err(self.io(e, "creating directory", dst))?;
            }
        } else if t.is_file() || t.is_contiguous() || t == tar::EntryType::GNUSparse {
            if t == tar::EntryType::GNUSparse {
                entry
                    .unpack(dst)
                    .map_err(self.io(e, "writing sparse file", dst))?;
            } else {
                self.write_file(entry, info, dst)?;
            }
        } else if t.is_symlink() {
            let link = info.link.as_deref().unwrap_or_default();
            if link.is_empty() {
                return Err(UnpackError::BadEntry {
                    entry: e.to_string(),
                    why: "symlink with an empty target".into(),
                });
            }
            std::os::unix::fs::symlink(OsStr::from_bytes(link), dst).map_err(self.io(
                e,
                "creating symlink",
                dst,
            ))?;
        } else if t.is_character_special() || t.is_block_special() || t.is_fifo() {
            let kind = if t.is_character_special() {
                SFlag::S_IFCHR
            } else if t.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            let dev = nix::sys::stat::makedev(u64::from(info.dev.0), u64::from(info.dev.1));
            if kind != SFlag::S_IFIFO && crate::mount::in_user_namespace() {
                // A user namespace may not create device nodes: skipped, as
                // containerd and BuildKit do in rootless mode.
                self.stats.skipped_devices += 1;
                return Ok(());
            }
            nix::sys::stat::mknod(dst, kind, perm, dev)
                .map_err(|err| self.io(e, "mknod", dst)(err.into()))?;
        } else {
            return Err(UnpackError::BadEntry {
                entry: e.to_string(),
                why: format!("unsupported entry type {:?}", t.as_byte() as char),
            });
        }
        // Owner first (chown clears setuid bits and security.capability),
        // then xattrs, then the mode, then times.
        let (uid, gid) = chown.unwrap_or((info.uid, info.gid));
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(self.io(e, "chown", dst))?;
        for (k, v) in &info.xattrs {
            if crate::whiteout::is_overlay_xattr(k) || k == b"security.selinux" {
                continue;
            }
            if let Err(err) = xattr::set(dst, OsStr::from_bytes(k), v) {
                let skip = err.raw_os_error() == Some(libc::ENOTSUP)
                    || (err.raw_os_error() == Some(libc::EPERM)
                        && (k.starts_with(b"user.") && !t.is_dir() && !t.is_file()
                            || matches!(self.mode, Mode_::Extract { .. })));
                if !skip {
                    return Err(self.io(e, "setting xattrs of", dst)(err));
                }
            }
        }
        if !t.is_symlink() {
            fs::set_permissions(dst, fs::Permissions::from_mode(info.mode & 0o7777))
                .map_err(self.io(e, "chmod", dst))?;
        }
        if t.is_dir() {
            self.dir_times.push((dst.to_path_buf(), info.mtime));
        } else {
            let ft = FileTime::from_unix_time(info.mtime, 0);
            filetime::set_symlink_file_times(dst, ft, ft).map_err(self.io(
                e,
                "setting times of",
                dst,
            ))?;
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        info: &EntryInfo,
        dst: &Path,
    ) -> Result<(), UnpackError> {
        let e = info.name.as_str();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dst)
            .map_err(self.io(e, "creating", dst))?;
        let mut written = 0u64;
        let mut buf = std::mem::take(&mut self.buf);
        let r = (|| loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.io(e, "reading tar data for", dst)(err)),
            };
            f.write_all(&buf[..n]).map_err(self.io(e, "writing", dst))?;
            written += n as u64;
        })();
        self.buf = buf;
        r?;
        if written != info.size {
            return Err(UnpackError::BadEntry {
                entry: e.to_string(),
                why: format!("truncated: {written} of {} bytes", info.size),
            });
        }
        Ok(())
    }
}

fn read_info<R: Read>(entry: &mut tar::Entry<'_, R>, name: String) -> io::Result<EntryInfo> {
    let mut xattrs = Vec::new();
    // PAX records that override header fields the tar crate leaves alone.
    let (mut pax_uid, mut pax_gid, mut pax_mtime) = (None, None, None);
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            // The tar crate splits PAX data at newlines, so a value with a
            // newline (possible in a binary xattr) is unreadable: fail
            // rather than drop it silently.
            let ext = ext.map_err(|e| {
                io::Error::other(format!(
                    "{e} (a PAX record value containing a newline is not supported)"
                ))
            })?;
            let key = ext.key_bytes();
            if let Some(k) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((k.to_vec(), ext.value_bytes().to_vec()));
                continue;
            }
            let value = std::str::from_utf8(ext.value_bytes()).ok();
            match key {
                b"uid" => pax_uid = value.and_then(|v| v.parse::<u32>().ok()),
                b"gid" => pax_gid = value.and_then(|v| v.parse::<u32>().ok()),
                // Seconds, possibly with a fraction ("1700000000.5", "-3").
                b"mtime" => {
                    pax_mtime = value
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse::<i64>().ok());
                }
                _ => {}
            }
        }
    }
    let link = entry.link_name_bytes().map(|l| l.into_owned());
    let h = entry.header();
    let typeflag = h.entry_type();
    let num = |r: io::Result<u64>, what: &str| {
        r.and_then(|v| {
            u32::try_from(v).map_err(|_| io::Error::other(format!("{what} {v} out of range")))
        })
    };
    let is_dev = typeflag.is_character_special() || typeflag.is_block_special();
    let dev = if is_dev {
        (
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    let uid = match pax_uid {
        Some(u) => u,
        None => num(h.uid(), "uid")?,
    };
    let gid = match pax_gid {
        Some(g) => g,
        None => num(h.gid(), "gid")?,
    };
    let mtime = match pax_mtime {
        Some(t) => t,
        None => i64::try_from(h.mtime()?).unwrap_or(i64::MAX),
    };
    Ok(EntryInfo {
        typeflag,
        mode: h.mode()?,
        uid,
        gid,
        mtime,
        size: entry.size(),
        link,
        dev,
        xattrs,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_escapes_rejected() {
        let show = |s: &str| match clean_name(s.as_bytes()) {
            Ok(Some(c)) => lossy(&join_rel(&c)),
            Ok(None) => "<root>".into(),
            Err(()) => "<escape>".into(),
        };
        assert_eq!(show("etc/passwd"), "etc/passwd");
        assert_eq!(show("/etc/passwd"), "etc/passwd");
        assert_eq!(show("./a/./b//c/"), "a/b/c");
        assert_eq!(show("a/../b"), "b");
        assert_eq!(show("./"), "<root>");
        assert_eq!(show("/"), "<root>");
        assert_eq!(show("../x"), "<escape>");
        assert_eq!(show("a/../../x"), "<escape>");
        assert_eq!(show("/../x"), "<escape>");
    }
}
