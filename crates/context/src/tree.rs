//! A directory seen the way BuildKit's COPY sees a build context.
//!
//! BuildKit first transfers the context through fsutil's filtered walk: a
//! path the `.dockerignore` matcher excludes is not sent, except that a
//! directory is still walked when an exception (`!pattern`) might re-include
//! something beneath it, and a directory holding a re-included path is sent
//! too. The copy then runs on that snapshot: wildcard sources are resolved
//! with `filepath.Match`, a source named directly is followed if it is a
//! symlink (inside the root), and the copier applies `--exclude` and
//! `--parents` include patterns relative to the source, creating a directory
//! that is not itself included only when something beneath it is.
//!
//! [`Tree`] reproduces that end result without materialising the snapshot:
//! one depth-first walk (siblings in byte order, one `readdir` per directory
//! and one `fstatat` per entry that is looked at) decides, per entry, whether
//! it exists in the snapshot ("in view") and whether the copy selects it.
//! Directories whose existence or selection depends on what lies beneath them
//! are held on the walk's stack and emitted, parents first, as soon as a
//! descendant proves them — which is exactly the order fsutil and the copier
//! create them in.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirEntry, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::ContextError;
use crate::gostd::{glob, path};
use crate::ignorefile;
use crate::patternmatcher::{self, Matcher, PatternError};
use crate::resolve::{self, Node, ResolveError};
use crate::text::show;

mod prefetch;

use prefetch::{Child, Prefetched, View, join_rel};

/// A directory seen through optional `.dockerignore` rules.
#[derive(Debug, Clone)]
pub struct Tree {
    root: PathBuf,
    ignore: Option<Matcher>,
    /// fsutil's `onlyPrefixExcludeExceptions`: every exception is a plain
    /// path (plus an optional trailing `/*` or `/**`), so an excluded
    /// directory can be skipped unless an exception lies beneath it.
    only_prefix_exceptions: bool,
    /// Those exceptions, minus the trailing glob, plus `/`.
    exception_prefixes: Vec<Vec<u8>>,
    /// With [`Tree::reading_once`]: the directories walks started from, as
    /// the first of them read them ahead (with all a walk from there
    /// enters), by host path.
    read_once: Option<ReadOnce>,
}

/// The directories a [`Tree::reading_once`] tree has read ahead (shown by
/// count: there may be thousands).
#[derive(Clone, Default)]
struct ReadOnce(Arc<Mutex<HashMap<PathBuf, Arc<Prefetched>>>>);

impl std::fmt::Debug for ReadOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or_default();
        write!(f, "ReadOnce({n} directories)")
    }
}

/// How [`Tree::expand`] resolves a COPY source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpandOptions {
    /// `*`, `?` and `[...]` in the source are wildcards (COPY/ADD: true).
    pub allow_wildcard: bool,
    /// A wildcard that matches nothing is not an error (COPY/ADD: true).
    pub allow_empty_wildcard: bool,
    /// A source that is itself a symlink is followed, inside the root
    /// (COPY/ADD: true). Symlinks in parent components always are.
    pub follow_symlinks: bool,
}

/// One resolved COPY source.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as matched, absolute inside the tree (`/src/a.go`). Its base
    /// name is what COPY names the copy. For a wildcard match this is below
    /// the resolved wildcard base, as BuildKit reports it.
    pub path: PathBuf,
    /// The path after following symlinks, absolute inside the tree.
    pub resolved: PathBuf,
    /// The host path of `resolved`.
    pub host_path: PathBuf,
    /// `lstat` of `host_path`.
    pub metadata: Metadata,
}

/// COPY's `--exclude` and `--parents` patterns, relative to the source.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// When set, only entries matching one of these (or lying beneath a
    /// match) are selected; their parent directories come along.
    pub include: Option<Matcher>,
    /// Entries matching these are not selected (exceptions with `!` work as
    /// in `.dockerignore`).
    pub exclude: Option<Matcher>,
}

impl Filter {
    /// A filter from pattern lists; an empty list means "no filter".
    pub fn new<I: AsRef<[u8]>, E: AsRef<[u8]>>(
        include: &[I],
        exclude: &[E],
    ) -> Result<Filter, PatternError> {
        let matcher = |p: &[&[u8]]| -> Result<Option<Matcher>, PatternError> {
            if p.is_empty() {
                Ok(None)
            } else {
                Matcher::new(p).map(Some)
            }
        };
        let inc: Vec<&[u8]> = include.iter().map(AsRef::as_ref).collect();
        let exc: Vec<&[u8]> = exclude.iter().map(AsRef::as_ref).collect();
        Ok(Filter {
            include: matcher(&inc)?,
            exclude: matcher(&exc)?,
        })
    }
}

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed inside a copied directory).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
}

impl FileType {
    /// The type of `meta` (from `lstat`).
    pub fn of(meta: &Metadata) -> FileType {
        let t = meta.file_type();
        if t.is_dir() {
            FileType::Dir
        } else if t.is_symlink() {
            FileType::Symlink
        } else if t.is_fifo() {
            FileType::Fifo
        } else if t.is_char_device() {
            FileType::CharDevice
        } else if t.is_block_device() {
            FileType::BlockDevice
        } else if t.is_socket() {
            FileType::Socket
        } else {
            FileType::File
        }
    }

    /// A short lowercase name (`file`, `dir`, `symlink`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Fifo => "fifo",
            FileType::CharDevice => "char",
            FileType::BlockDevice => "block",
            FileType::Socket => "socket",
        }
    }
}

/// One entry of a COPY selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the source; empty for the source itself.
    pub path: PathBuf,
    /// Path inside the tree, absolute (`/src/a/b`), after resolving the
    /// source: the key of the stat cache.
    pub tree_path: PathBuf,
    /// Where it is on the host.
    pub host_path: PathBuf,
    /// Its type.
    pub file_type: FileType,
    /// The full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (meaningful for regular files and symlinks).
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// A symlink's target, as stored.
    pub symlink_target: Option<Vec<u8>>,
    /// Device holding the entry (with `ino`, identifies hard links).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Device number, for character and block devices.
    pub rdev: u64,
}

/// The target of the symlink at `host`, as stored.
pub(crate) fn link_target(host: &Path) -> Result<Vec<u8>, ContextError> {
    let t = fs::read_link(host).map_err(|source| ContextError::Io {
        path: host.to_owned(),
        source,
    })?;
    Ok(t.into_os_string().as_bytes().to_vec())
}

impl Entry {
    fn new(
        path: &[u8],
        tree_path: &[u8],
        host_path: PathBuf,
        meta: &Metadata,
    ) -> Result<Entry, ContextError> {
        let file_type = FileType::of(meta);
        let symlink_target = if file_type == FileType::Symlink {
            Some(link_target(&host_path)?)
        } else {
            None
        };
        Ok(Entry {
            path: PathBuf::from(OsStr::from_bytes(path)),
            tree_path: PathBuf::from(OsStr::from_bytes(tree_path)),
            host_path,
            file_type,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            symlink_target,
            dev: meta.dev(),
            ino: meta.ino(),
            nlink: meta.nlink(),
            rdev: meta.rdev(),
        })
    }
}

/// Where the ignore matcher stands on one in-tree path.
struct ViewState {
    /// An ancestor is excluded and skipped by the walker: nothing here exists.
    ancestor_pruned: bool,
    /// The path itself is excluded.
    ignored: bool,
    /// Were it an excluded directory, the walker would skip it.
    pruned_if_dir: bool,
    /// Match info for its children.
    info: Vec<bool>,
}

/// What a walk visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    Continue,
    /// Do not descend into this directory (no effect on other entries).
    SkipDir,
    /// End the walk.
    Stop,
}

/// One node handed to a walk visitor.
pub(crate) struct Visited<'a> {
    /// Relative to the walk's start ("" for the start).
    pub(crate) rel: &'a [u8],
    /// Inside the tree, without the leading `/` ("" for the root).
    pub(crate) tree_rel: &'a [u8],
    pub(crate) host: &'a Path,
    pub(crate) meta: &'a Metadata,
    depth: usize,
}

/// A directory on the walk's stack.
struct Frame<'p> {
    host: PathBuf,
    rel: Vec<u8>,
    tree_rel: Vec<u8>,
    meta: Metadata,
    ign_info: Vec<bool>,
    inc_info: Vec<bool>,
    exc_info: Vec<bool>,
    /// Known to exist in the (ignore-filtered) view.
    in_view: bool,
    /// Selected by the copy filter itself (not just as a parent).
    selected: bool,
    /// Handed to the visitor already.
    emitted: bool,
    /// The entries not yet visited; `None` until read.
    children: Option<Children<'p>>,
}

/// A directory's entries not yet visited: read by the walk, or ahead of it.
enum Children<'p> {
    Read(std::vec::IntoIter<(OsString, DirEntry)>),
    Prefetched(std::slice::Iter<'p, Child>),
}

impl<'p> Children<'p> {
    fn next(&mut self) -> Option<Next<'p>> {
        match self {
            Children::Read(it) => it.next().map(|(name, e)| Next::Read(name, e)),
            Children::Prefetched(it) => it.next().map(Next::Prefetched),
        }
    }
}

/// One entry of a directory, as [`Children`] yields it.
enum Next<'p> {
    Read(OsString, DirEntry),
    Prefetched(&'p Child),
}

impl Next<'_> {
    fn name(&self) -> &[u8] {
        match self {
            Next::Read(name, _) => name.as_bytes(),
            Next::Prefetched(c) => c.name.as_bytes(),
        }
    }

    fn dir_hint(&self) -> Option<bool> {
        match self {
            Next::Read(_, e) => e.file_type().ok().map(|t| t.is_dir()),
            Next::Prefetched(c) => c.dir_hint,
        }
    }

    fn host(&self, parent: &Path) -> PathBuf {
        match self {
            Next::Read(_, e) => e.path(),
            Next::Prefetched(c) => parent.join(&c.name),
        }
    }

    /// Its `lstat`; `host` is [`Next::host`].
    fn metadata(&self, host: &Path) -> std::io::Result<Metadata> {
        match self {
            Next::Read(_, e) => e.metadata(),
            Next::Prefetched(c) => c.metadata(host),
        }
    }
}

/// The start of a walk.
struct Start {
    host: PathBuf,
    tree_rel: Vec<u8>,
    meta: Metadata,
    ign_info: Vec<bool>,
    /// Hand the start itself to the visitor first.
    emit: bool,
}

impl View for Tree {
    fn ignored(&self, rel: &[u8], parent: &[bool], buf: &mut Vec<bool>) -> Option<bool> {
        match &self.ignore {
            Some(m) => m.matches_with_parent_into(rel, parent, buf).ok(),
            None => {
                buf.clear();
                Some(false)
            }
        }
    }

    fn prunes(&self, dir: &[u8]) -> bool {
        Tree::prunes(self, dir)
    }
}

impl Tree {
    /// `root` seen through `ignore` (`None`: every file exists, as for a
    /// stage's filesystem).
    pub fn new(root: PathBuf, ignore: Option<Matcher>) -> Tree {
        let mut only_prefix_exceptions = true;
        let mut exception_prefixes = Vec::new();
        if let Some(m) = &ignore {
            for p in m.patterns().iter().filter(|p| p.is_exclusion()) {
                if patternmatcher::has_pattern_chars(p.as_bytes()) {
                    only_prefix_exceptions = false;
                }
                let mut prefix = patternmatcher::without_trailing_glob(p.as_bytes()).to_vec();
                prefix.push(b'/');
                exception_prefixes.push(prefix);
            }
        }
        Tree {
            root,
            ignore: ignore.filter(|m| !m.is_empty()),
            only_prefix_exceptions,
            exception_prefixes,
            read_once: None,
        }
    }

    /// This tree, its walks reading each directory they start from only
    /// once: a later walk from the same directory (and its clones') sees the
    /// entries, and their `stat`, as the first one did. A build reads its
    /// context so, as one snapshot, as BuildKit does (it transfers the
    /// context once, then checksums and copies from that copy): a copy's
    /// cache key, its `--explain` listing and the copy itself then cost one
    /// `stat` per file between them, not one each.
    pub fn reading_once(mut self) -> Tree {
        self.read_once = Some(ReadOnce::default());
        self
    }

    /// `dir` and what a walk from it enters, read ahead: as first read,
    /// with [`Tree::reading_once`].
    fn read_ahead(&self, dir: &Path, tree_rel: &[u8], ign_info: &[bool]) -> Arc<Prefetched> {
        let read = || Arc::new(prefetch::prefetch(self, dir, tree_rel, ign_info));
        let Some(memo) = &self.read_once else {
            return read();
        };
        if let Some(r) = memo.0.lock().ok().and_then(|m| m.get(dir).cloned()) {
            return r;
        }
        let r = read();
        // Two first walks at once both read: the one kept first stands.
        match memo.0.lock() {
            Ok(mut m) => Arc::clone(m.entry(dir.to_owned()).or_insert(r)),
            Err(_) => r,
        }
    }

    /// The build context `dir` with the ignore file that applies to
    /// `dockerfile` (see [`ignorefile::find_ignore_file`]).
    pub fn open_context(dir: &Path, dockerfile: Option<&Path>) -> Result<Tree, ContextError> {
        let ignore = match ignorefile::find_ignore_file(dir, dockerfile) {
            Some(file) => {
                let patterns = ignorefile::read_file(&file)?;
                Some(
                    Matcher::new(&patterns).map_err(|source| ContextError::IgnorePattern {
                        file: file.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Tree::new(dir.to_owned(), ignore))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ignore rules, if any.
    pub fn ignore(&self) -> Option<&Matcher> {
        self.ignore.as_ref()
    }

    /// Resolves one COPY source (`/`, `/a/b.txt`, `/src/*.go`, `/d*/x`) as
    /// BuildKit's copy does. Matches come in walk order (byte order, parents
    /// first). A missing or ignored path, a wildcard matching nothing
    /// (unless allowed), a wildcard whose fixed base directory is missing, or
    /// a followed symlink whose target is missing or ignored is
    /// [`ContextError::NotFound`].
    pub fn expand(
        &self,
        src: impl AsRef<OsStr>,
        opts: &ExpandOptions,
    ) -> Result<Vec<Source>, ContextError> {
        let raw = src.as_ref().as_bytes();
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(raw);
        let src = path::clean(&abs);
        if opts.allow_wildcard {
            let (base, pattern) = split_wildcards(&src);
            if !pattern.is_empty() {
                let matches = self.resolve_wildcards(&base, &pattern, opts.follow_symlinks)?;
                if matches.is_empty() && !opts.allow_empty_wildcard {
                    return Err(ContextError::NotFound { path: show(&src) });
                }
                return matches
                    .into_iter()
                    .map(|m| self.source(&m, opts.follow_symlinks))
                    .collect();
            }
        }
        Ok(vec![self.source(&src, opts.follow_symlinks)?])
    }

    /// The source named by the clean absolute in-tree path `src`.
    fn source(&self, src: &[u8], follow: bool) -> Result<Source, ContextError> {
        let resolved = self.resolve(src, follow).map_err(|e| match e {
            ContextError::TooManyLinks { .. } => ContextError::TooManyLinks { path: show(src) },
            e => e,
        })?;
        let (resolved, meta) = self.stat_in_view(resolved, src)?;
        Ok(Source {
            path: PathBuf::from(OsStr::from_bytes(src)),
            resolved: PathBuf::from(OsStr::from_bytes(&resolved.rel)),
            host_path: resolved.host,
            metadata: meta,
        })
    }

    /// `lstat` of a resolved path that must exist in the view (not missing,
    /// not ignored); `NotFound` names `shown`, the path as the user wrote it.
    fn stat_in_view(
        &self,
        resolved: resolve::Resolved,
        shown: &[u8],
    ) -> Result<(resolve::Resolved, fs::Metadata), ContextError> {
        let not_found = || {
            if lexical(&resolved.rel) == lexical(shown) {
                ContextError::NotFound { path: show(shown) }
            } else {
                ContextError::NotFoundThroughSymlink {
                    path: show(shown),
                    resolved: show(&resolved.rel),
                }
            }
        };
        let meta = match fs::symlink_metadata(&resolved.host) {
            Ok(m) => m,
            Err(e) if resolve::is_not_found(&e) => return Err(not_found()),
            Err(source) => {
                return Err(ContextError::Io {
                    path: resolved.host,
                    source,
                });
            }
        };
        if !self.exists_in_view(&resolved.rel, &meta)? {
            return Err(not_found());
        }
        Ok((resolved, meta))
    }

    /// Secure-join `p` inside the root, where ignored symlinks do not exist.
    fn resolve(&self, p: &[u8], follow: bool) -> Result<resolve::Resolved, ContextError> {
        let mut view_err = None;
        let r = resolve::secure_join(&self.root, p, follow, |rel, host| {
            let meta = match fs::symlink_metadata(host) {
                Ok(m) => m,
                Err(e) if resolve::is_not_found(&e) => return Ok(Node::Missing),
                Err(e) => return Err(e),
            };
            if !meta.file_type().is_symlink() {
                return Ok(Node::Plain);
            }
            match self.exists_in_view(rel, &meta) {
                Ok(true) => Ok(Node::Symlink),
                Ok(false) => Ok(Node::Missing),
                Err(e) => {
                    view_err = Some(e);
                    Ok(Node::Missing)
                }
            }
        });
        if let Some(e) = view_err {
            return Err(e);
        }
        r.map_err(|e| match e {
            ResolveError::TooManyLinks(at) => ContextError::TooManyLinks { path: show(&at) },
            ResolveError::Io(at, source) => ContextError::Io {
                path: resolve::host_path(&self.root, &at),
                source,
            },
        })
    }

    /// The ignore matcher walked down the components of `rel` (in-tree,
    /// absolute or not), the way fsutil's walker would reach it.
    fn view_state(&self, rel: &[u8]) -> Result<ViewState, ContextError> {
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        let mut st = ViewState {
            ancestor_pruned: false,
            ignored: false,
            pruned_if_dir: false,
            info: Vec::new(),
        };
        let Some(m) = &self.ignore else {
            return Ok(st);
        };
        if rel.is_empty() {
            return Ok(st);
        }
        let mut next = Vec::new();
        let mut end = 0;
        loop {
            end = match rel[end..].iter().position(|&b| b == b'/') {
                Some(i) => end + i,
                None => rel.len(),
            };
            let prefix = &rel[..end];
            st.ignored = m
                .matches_with_parent_into(prefix, &st.info, &mut next)
                .map_err(|source| ContextError::Pattern {
                    path: show(prefix),
                    source,
                })?;
            std::mem::swap(&mut st.info, &mut next);
            st.pruned_if_dir = st.ignored && self.prunes(prefix);
            if end == rel.len() {
                return Ok(st);
            }
            if st.pruned_if_dir {
                st.ancestor_pruned = true;
                return Ok(st);
            }
            end += 1;
        }
    }

    /// Whether fsutil's walker skips the excluded directory `dir` outright.
    fn prunes(&self, dir: &[u8]) -> bool {
        if !self.only_prefix_exceptions {
            return false;
        }
        !self
            .exception_prefixes
            .iter()
            .any(|p| p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/')
    }

    /// Whether the in-tree path `rel` (with `lstat` `meta`) exists in the
    /// ignore-filtered view.
    fn exists_in_view(&self, rel: &[u8], meta: &Metadata) -> Result<bool, ContextError> {
        let st = self.view_state(rel)?;
        if st.ancestor_pruned {
            return Ok(false);
        }
        if !st.ignored {
            return Ok(true);
        }
        if !meta.is_dir() || st.pruned_if_dir {
            return Ok(false);
        }
        // An excluded directory exists if something beneath it does.
        let tree_rel = rel.strip_prefix(b"/").unwrap_or(rel).to_vec();
        let start = Start {
            host: resolve::host_path(&self.root, &tree_rel),
            tree_rel,
            meta: meta.clone(),
            ign_info: st.info,
            emit: false,
        };
        let mut found = false;
        self.run(
            start,
            &Filter::default(),
            &Prefetched::default(),
            &mut |_| {
                found = true;
                Ok(Visit::Stop)
            },
        )?;
        Ok(found)
    }

    /// BuildKit's `resolveWildcards`: the in-tree paths below `base` whose
    /// path relative to `base` matches `pattern`, in walk order; a matching
    /// directory is not searched further.
    fn resolve_wildcards(
        &self,
        base: &[u8],
        pattern: &[u8],
        follow: bool,
    ) -> Result<Vec<Vec<u8>>, ContextError> {
        let resolved = self.resolve(base, follow)?;
        let (resolved, meta) = self.stat_in_view(resolved, base)?;
        if !meta.is_dir() {
            return Ok(Vec::new());
        }
        let st = self.view_state(&resolved.rel)?;
        // Without bracket classes or escapes, a match has exactly as many
        // components as the pattern, each matching its own component: prune.
        let components: Option<Vec<&[u8]>> = (!glob::has_class(pattern)
            && !pattern.contains(&b'\\'))
        .then(|| pattern.split(|&b| b == b'/').collect());
        let tree_rel = resolved
            .rel
            .strip_prefix(b"/")
            .unwrap_or(&resolved.rel)
            .to_vec();
        let start = Start {
            host: resolved.host.clone(),
            tree_rel,
            meta,
            ign_info: st.info,
            emit: false,
        };
        let mut out = Vec::new();
        self.run(
            start,
            &Filter::default(),
            &Prefetched::default(),
            &mut |v| {
                if let Some(comps) = &components {
                    let name = v.rel.rsplit(|&b| b == b'/').next().unwrap_or_default();
                    let Some(comp) = v.depth.checked_sub(1).and_then(|d| comps.get(d)) else {
                        return Ok(Visit::SkipDir);
                    };
                    if !glob::fnmatch(comp, name).unwrap_or(false) {
                        return Ok(Visit::SkipDir);
                    }
                    if v.depth < comps.len() {
                        return Ok(Visit::Continue);
                    }
                }
                if glob::fnmatch(pattern, v.rel).unwrap_or(false) {
                    let mut p = b"/".to_vec();
                    p.extend_from_slice(v.tree_rel);
                    out.push(p);
                    return Ok(Visit::SkipDir);
                }
                Ok(Visit::Continue)
            },
        )?;
        Ok(out)
    }

    /// Every entry COPY would copy from `source`: the source itself and, for
    /// a directory, everything beneath it that exists in the view and passes
    /// `filter`, plus the directories leading to such entries. Parents come
    /// before children, siblings in byte order of their names.
    pub fn walk(&self, source: &Source, filter: &Filter) -> Result<Vec<Entry>, ContextError> {
        let out = std::cell::RefCell::new(Vec::new());
        self.for_each_entry(
            source,
            filter,
            &mut |n| out.borrow_mut().reserve(n),
            &mut |v| {
                let mut tree_path = b"/".to_vec();
                tree_path.extend_from_slice(v.tree_rel);
                let e = Entry::new(v.rel, &tree_path, v.host.to_owned(), v.meta)?;
                out.borrow_mut().push(e);
                Ok(())
            },
        )?;
        Ok(out.into_inner())
    }

    /// Hands `visit` every entry [`Tree::walk`] returns, in the same order,
    /// without collecting them; `expect` first learns about how many there
    /// will be.
    pub(crate) fn for_each_entry(
        &self,
        source: &Source,
        filter: &Filter,
        expect: &mut dyn FnMut(usize),
        visit: &mut dyn FnMut(&Visited<'_>) -> Result<(), ContextError>,
    ) -> Result<(), ContextError> {
        let tree_rel = source.resolved.as_os_str().as_bytes();
        let tree_rel = tree_rel.strip_prefix(b"/").unwrap_or(tree_rel).to_vec();
        let st = self.view_state(&tree_rel)?;
        let pre = if source.metadata.is_dir() {
            self.read_ahead(&source.host_path, &tree_rel, &st.info)
        } else {
            Arc::default()
        };
        expect(pre.len() + 1);
        let start = Start {
            host: source.host_path.clone(),
            tree_rel,
            meta: source.metadata.clone(),
            ign_info: st.info,
            emit: true,
        };
        self.run(start, filter, &pre, &mut |v| {
            visit(v)?;
            Ok(Visit::Continue)
        })
    }

    /// The walk engine (see the module docs).
    fn run(
        &self,
        start: Start,
        filter: &Filter,
        pre: &Prefetched,
        visit: &mut dyn FnMut(&Visited<'_>) -> Result<Visit, ContextError>,
    ) -> Result<(), ContextError> {
        let is_dir = start.meta.is_dir();
        let mut frames = vec![Frame {
            host: start.host,
            rel: Vec::new(),
            tree_rel: start.tree_rel,
            meta: start.meta,
            ign_info: start.ign_info,
            inc_info: Vec::new(),
            exc_info: Vec::new(),
            in_view: true,
            selected: true,
            emitted: !start.emit,
            children: None,
        }];
        if start.emit && emit_pending(&mut frames, 0, visit)? != Visit::Continue {
            return Ok(());
        }
        if !is_dir {
            return Ok(());
        }
        let exceptions = filter.exclude.as_ref().is_some_and(Matcher::exclusions);
        let mut buf = Vec::new();
        while let Some(top) = frames.last_mut() {
            if top.children.is_none() {
                top.children = Some(match pre.get(&top.host) {
                    Some(read) => Children::Prefetched(read.iter()),
                    None => Children::Read(read_children(&top.host, !top.in_view)?.into_iter()),
                });
            }
            let Some(next) = top.children.as_mut().and_then(Children::next) else {
                frames.pop();
                continue;
            };
            let parent = &frames[frames.len() - 1];
            let name = next.name();
            let child_rel = join_rel(&parent.rel, name);
            let child_tree_rel = join_rel(&parent.tree_rel, name);
            let depth = frames.len();
            let dir_hint = next.dir_hint();

            // Ignore rules: does it exist in the view? An excluded file does
            // not; an excluded directory is walked only when an exception
            // might re-include something in it, and exists only if one does.
            let (ignored, ign_info) = match &self.ignore {
                Some(m) => {
                    let ignored = m
                        .matches_with_parent_into(&child_tree_rel, &parent.ign_info, &mut buf)
                        .map_err(|source| ContextError::Pattern {
                            path: show(&child_tree_rel),
                            source,
                        })?;
                    (ignored, buf.clone())
                }
                None => (false, Vec::new()),
            };
            if prefetch::skipped_unread(self, ignored, dir_hint, &child_tree_rel) {
                continue;
            }

            // The copy filter, relative to the source (BuildKit's copier).
            let mut selected = true;
            let mut excluded = false;
            let mut inc_info = Vec::new();
            let mut exc_info = Vec::new();
            if let Some(inc) = &filter.include {
                selected = inc
                    .matches_with_parent_into(&child_rel, &parent.inc_info, &mut buf)
                    .map_err(|source| ContextError::Pattern {
                        path: show(&child_rel),
                        source,
                    })?;
                inc_info = buf.clone();
            }
            if let Some(exc) = &filter.exclude {
                if exc
                    .matches_with_parent_into(&child_rel, &parent.exc_info, &mut buf)
                    .map_err(|source| ContextError::Pattern {
                        path: show(&child_rel),
                        source,
                    })?
                {
                    selected = false;
                    excluded = true;
                }
                exc_info = buf.clone();
            }

            let host = next.host(&parent.host);
            let meta = match next.metadata(&host) {
                Ok(m) => m,
                Err(e) if resolve::is_not_found(&e) => continue,
                Err(source) => return Err(ContextError::Io { path: host, source }),
            };
            let child_is_dir = meta.is_dir();
            if ignored && !child_is_dir {
                continue;
            }

            // The copier skips an excluded path without looking inside
            // unless exceptions or include patterns might select something
            // beneath it; a non-directory it does not select is skipped.
            let copy_skips = (!selected && filter.include.is_none() && !exceptions)
                || (child_is_dir && excluded && !exceptions)
                || (!child_is_dir && !selected);

            // Existence in the view does not depend on the copy filter: an
            // excluded directory the copy skips may still prove that its
            // (excluded) parents exist.
            let in_view = if !ignored {
                true
            } else if copy_skips && frames.iter().any(|f| !f.in_view) {
                let start = Start {
                    host: host.clone(),
                    tree_rel: child_tree_rel.clone(),
                    meta: meta.clone(),
                    ign_info: ign_info.clone(),
                    emit: false,
                };
                let mut found = false;
                self.run(start, &Filter::default(), pre, &mut |_| {
                    found = true;
                    Ok(Visit::Stop)
                })?;
                found
            } else {
                false
            };
            if in_view {
                match confirm_view(&mut frames, visit)? {
                    Visit::Continue => {}
                    Visit::SkipDir => continue,
                    Visit::Stop => return Ok(()),
                }
            }
            if copy_skips {
                continue;
            }

            let last = frames.len() - 1;
            if child_is_dir {
                frames.push(Frame {
                    host,
                    rel: child_rel,
                    tree_rel: child_tree_rel,
                    meta,
                    ign_info,
                    inc_info,
                    exc_info,
                    in_view: !ignored,
                    selected,
                    emitted: false,
                    children: None,
                });
                if !ignored && selected {
                    match emit_pending(&mut frames, last + 1, visit)? {
                        Visit::Continue => {}
                        Visit::SkipDir => {
                            frames.truncate(last + 1);
                        }
                        Visit::Stop => return Ok(()),
                    }
                }
            } else {
                // A selected non-directory in the view: parents first.
                match emit_pending(&mut frames, last, visit)? {
                    Visit::Continue => {}
                    Visit::SkipDir => continue,
                    Visit::Stop => return Ok(()),
                }
                let v = Visited {
                    rel: &child_rel,
                    tree_rel: &child_tree_rel,
                    host: &host,
                    meta: &meta,
                    depth,
                };
                if visit(&v)? == Visit::Stop {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Marks every stacked directory as existing in the view (a descendant
/// does), emitting those the copy selects. `SkipDir` means an ancestor was
/// skipped by the visitor and the current entry must be dropped.
fn confirm_view(
    frames: &mut Vec<Frame<'_>>,
    visit: &mut dyn FnMut(&Visited<'_>) -> Result<Visit, ContextError>,
) -> Result<Visit, ContextError> {
    for i in 0..frames.len() {
        if frames[i].in_view {
            continue;
        }
        frames[i].in_view = true;
        if frames[i].selected {
            match emit_pending(frames, i, visit)? {
                Visit::Continue => {}
                other => return Ok(other),
            }
        }
    }
    Ok(Visit::Continue)
}

/// Emits the not-yet-emitted directories `frames[..=upto]`, parents first.
/// When the visitor skips one, the walk abandons everything beneath it.
fn emit_pending(
    frames: &mut Vec<Frame<'_>>,
    upto: usize,
    visit: &mut dyn FnMut(&Visited<'_>) -> Result<Visit, ContextError>,
) -> Result<Visit, ContextError> {
    for i in 0..=upto.min(frames.len().saturating_sub(1)) {
        if frames[i].emitted {
            continue;
        }
        frames[i].emitted = true;
        let f = &frames[i];
        let v = Visited {
            rel: &f.rel,
            tree_rel: &f.tree_rel,
            host: &f.host,
            meta: &f.meta,
            depth: i,
        };
        match visit(&v)? {
            Visit::Continue => {}
            Visit::SkipDir => {
                frames.truncate(i + 1);
                frames[i].children = Some(Children::Read(Vec::new().into_iter()));
                return Ok(Visit::SkipDir);
            }
            Visit::Stop => return Ok(Visit::Stop),
        }
    }
    Ok(Visit::Continue)
}

/// The entries of `dir`, sorted by name bytes. A directory that exists only
/// as an excluded one (`hidden`) and cannot be read is empty, as fsutil
/// ignores permission errors on excluded paths; a directory that vanished is
/// empty too.
fn read_children(dir: &Path, hidden: bool) -> Result<Vec<(OsString, DirEntry)>, ContextError> {
    let io_err = |source| ContextError::Io {
        path: dir.to_owned(),
        source,
    };
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if resolve::is_not_found(&e) => return Ok(Vec::new()),
        Err(e) if hidden && e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(io_err(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err)?;
        out.push((e.file_name(), e));
    }
    out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// fsutil's `splitWildcards`: the components before the first one with a
/// wildcard (as a clean absolute path) and the rest (joined with `/`; empty
/// when there is no wildcard).
fn split_wildcards(p: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut base: Vec<u8> = b"/".to_vec();
    let mut rest: Vec<u8> = Vec::new();
    let mut found = false;
    for part in p.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if !found && glob::contains_wildcards(part) {
            found = true;
        }
        if found {
            if !rest.is_empty() {
                rest.push(b'/');
            }
            rest.extend_from_slice(part);
        } else {
            base = path::join(&base, part);
        }
    }
    (base, rest)
}

/// The components of an in-tree path, cleaned lexically (`.` and empty
/// components dropped, `..` applied, never above the root).
fn lexical(p: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Tree>();
        send_sync::<Filter>();
        send_sync::<Source>();
        send_sync::<Entry>();
    }

    #[test]
    fn splits_at_first_wildcard() {
        let s = |p: &str| {
            let (a, b) = split_wildcards(p.as_bytes());
            (
                String::from_utf8(a).unwrap_or_default(),
                String::from_utf8(b).unwrap_or_default(),
            )
        };
        assert_eq!(s("/src/*.go"), ("/src".into(), "*.go".into()));
        assert_eq!(s("/d*/x"), ("/".into(), "d*/x".into()));
        assert_eq!(s("/a/b"), ("/a/b".into(), "".into()));
        assert_eq!(s("/a\\*b"), ("/a\\*b".into(), "".into()));
        assert_eq!(s("/*"), ("/".into(), "*".into()));
    }
}
