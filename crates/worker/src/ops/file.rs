//! File ops (`COPY`, `ADD`, `WORKDIR`, heredoc files): edit a mounted root
//! filesystem, BuildKit's `llbsolver/file` backend semantics.
//!
//! The parent's layers are mounted with a fresh upper directory (a new layer
//! draft) in kiln's private mount namespace; on an empty base the draft's
//! directory is edited directly. Every path is resolved inside the root
//! (`kiln_snapshot::resolve_in_root`), so a symlink in the image never leads a
//! write to the host.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_context::{ExpandOptions, Filter, Source, Tree};
use kiln_llb::op::{Chmod, Chown, Copy, FileAction, FileOp, Mkdir, Mkfile, Rm};
use kiln_snapshot::MountGuard;
use kiln_solver::{Cx, Resolved};

use crate::copy::{Copier, CopyError, CopyOptions, ModeChange, SourceEntry, mkdir_all};
use crate::error::{Error, FileOpError, InternalError};
use crate::mode::ModeSet;
use crate::ops::shared::{ContextSource, Contexts, Layers};
use crate::users;
use crate::value::{LayerRef, Value};

/// The sources a copy action selects from `tree`.
fn expand(tree: &Tree, c: &Copy) -> Result<Vec<Source>, kiln_context::ContextError> {
    let opts = ExpandOptions {
        allow_wildcard: c.allow_wildcard,
        allow_empty_wildcard: c.allow_empty_wildcard,
        follow_symlinks: c.follow_symlinks,
    };
    tree.expand(&c.src, &opts)
}

/// What a copy reads from, for a message, the same on every run and
/// machine: a build context's name, or the short cache key of a stage or
/// image (BuildKit names a per-run ref there).
fn source_ref(key: Option<&kiln_solver::Key>, value: &Value) -> String {
    match (value, key) {
        (Value::Context { name }, _) => name.clone(),
        (Value::Fs { .. }, Some(k)) => k.to_hex()[..12].to_owned(),
        (Value::Fs { layers }, None) if layers.is_empty() => "scratch".to_owned(),
        (Value::Fs { .. }, None) => "an uncached filesystem".to_owned(),
    }
}

/// How a failure to read a copy's sources for its cache key is reported:
/// `of` names what was read ([`source_ref`]).
fn checksum_error(of: &str) -> impl Fn(kiln_context::ContextError) -> Error + '_ {
    move |source| {
        FileOpError::Checksum {
            of: of.to_owned(),
            source,
        }
        .into()
    }
}

/// The include/exclude filter of a copy action.
pub fn filter(c: &Copy) -> Result<Filter, Error> {
    Filter::new(&c.include, &c.exclude).map_err(|e| FileOpError::Pattern(e).into())
}

/// Content digests of what `actions`' copies read from input `index` (the
/// context `name`): one digest per copy, in action order. With `files`,
/// also each file read and its digest (for `--explain`; only for steps
/// that run, so that a cached rebuild of a large context pays nothing).
pub(crate) fn context_reads(
    contexts: &Contexts,
    actions: &[FileAction],
    index: u32,
    name: &str,
    mut files: Option<&mut std::collections::BTreeMap<String, String>>,
) -> Result<Vec<kiln_llb::Digest>, Error> {
    let ctx = contexts.get(name)?;
    let mut out = Vec::new();
    for a in actions {
        let FileAction::Copy(c) = a else { continue };
        if c.from != Some(index) {
            continue;
        }
        let sources = expand(&ctx.tree, c).map_err(checksum_error(name))?;
        let patterns = filter(c)?;
        let mut cache = ctx
            .stat_cache
            .lock()
            .map_err(|_| InternalError::Poisoned("stat cache"))?;
        let opts = kiln_context::DigestOptions {
            include_ownership: false,
        };
        let digest = if let Some(files) = files.as_deref_mut() {
            // The step runs: its copy takes this walk (`copy`).
            let listed = ctx
                .tree
                .digest_listed(&sources, &patterns, &mut cache, &opts)
                .map_err(checksum_error(name))?;
            for (path, sha) in listed.listing {
                files.insert(
                    String::from_utf8_lossy(&path).into_owned(),
                    kiln_llb::Digest::from_bytes(sha).hex()[..16].to_owned(),
                );
            }
            for (s, entries) in sources.iter().zip(listed.walked) {
                ctx.leave_walk(c, s, entries);
            }
            listed.digest
        } else {
            ctx.tree
                .digest(&sources, &patterns, &mut cache, &opts)
                .map_err(checksum_error(name))?
                .0
        };
        out.push(digest);
    }
    Ok(out)
}

/// Content digests of what `actions`' copies read from input `index`, a
/// filesystem (a stage or an image): one per copy, with ownership (COPY
/// --from keeps it). The filesystem is mounted read-only for the walk.
pub(crate) fn fs_reads(
    layers: Layers<'_>,
    actions: &[FileAction],
    index: u32,
    key: &kiln_solver::Key,
    value: &Value,
) -> Result<Vec<kiln_llb::Digest>, Error> {
    let of = source_ref(Some(key), value);
    layers.digest_mounted(value, |tree, cache, opts| {
        actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) if c.from == Some(index) => Some(c),
                _ => None,
            })
            .map(|c| {
                let sources = expand(tree, c).map_err(checksum_error(&of))?;
                let patterns = filter(c)?;
                let digest = tree.digest(&sources, &patterns, cache, opts);
                Ok(digest.map_err(checksum_error(&of))?.0)
            })
            .collect()
    })
}

fn io_err(what: &str, path: &str) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {path}");
    move |source| Error::Io { what, source }
}

/// Where an action reads from.
enum SourceTree<'a> {
    Context(&'a ContextSource),
    Mounted(Tree),
}

impl SourceTree<'_> {
    fn tree(&self) -> &Tree {
        match self {
            SourceTree::Context(c) => &c.tree,
            SourceTree::Mounted(t) => t,
        }
    }

    /// The stat cache holding the content digests of a context's files.
    fn stat_cache(&self) -> Option<&std::sync::Mutex<kiln_context::StatCache>> {
        match self {
            SourceTree::Context(c) => Some(&c.stat_cache),
            SourceTree::Mounted(_) => None,
        }
    }
    fn is_context(&self) -> bool {
        matches!(self, SourceTree::Context(_))
    }

    /// The walk of `source` already made for the copy `c` (a context's,
    /// see `context_reads`).
    fn walked(&self, c: &Copy, source: &Source) -> Option<Vec<kiln_context::Entry>> {
        match self {
            SourceTree::Context(ctx) => ctx.take_walk(c, source),
            SourceTree::Mounted(_) => None,
        }
    }
}

/// What a file op needs of its build: the layers of its inputs and the
/// build contexts it may copy from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileOps<'a> {
    pub(crate) layers: Layers<'a>,
    pub(crate) contexts: &'a Contexts,
}

/// Runs a file op: returns the parent's layers plus the new one.
pub(crate) fn execute(
    ops: FileOps<'_>,
    f: &FileOp,
    inputs: &[Resolved<Value>],
    cx: &Cx,
) -> Result<Value, Error> {
    let input = |i: u32| {
        inputs
            .get(i as usize)
            .ok_or_else(|| InternalError::MissingInput {
                user: "file op".to_owned(),
                index: i,
            })
    };
    let base = match f.base {
        Some(i) => ops.layers.layers_of(&input(i)?.value)?,
        None => Vec::new(),
    };
    let state = ops.layers.state;
    let draft = state.layers.create()?;
    let scratch = state.scratch()?;
    let mut guard: Option<MountGuard> = None;
    let root: PathBuf = if base.is_empty() {
        draft.diff_dir().to_path_buf()
    } else {
        let mnt = scratch.path().join("root");
        fs::create_dir(&mnt).map_err(|e| Error::Io {
            what: format!("creating {}", mnt.display()),
            source: e,
        })?;
        let (lowers, upper) = (
            state.layer_dirs(&base)?,
            (draft.diff_dir(), draft.work_dir()),
        );
        guard = Some(match ops.layers.views_dir() {
            Some(views) => state
                .snapshotter
                .mount_reusing(&lowers, upper, &mnt, views)?,
            None => state.snapshotter.mount(&lowers, Some(upper), &mnt)?,
        });
        mnt
    };
    // A file op that is one copy may stage a directory source off the
    // overlay (see `Staging`).
    let mut staging = match f.actions.as_slice() {
        [FileAction::Copy(c)] => Some(Staging::new(&state.layers, &draft, c, inputs)),
        _ => None,
    };
    // Inputs read by copies, mounted read-only on first use, with what
    // they are for a message.
    let mut sources: HashMap<u32, (SourceTree<'_>, Option<MountGuard>, String)> = HashMap::new();
    for action in &f.actions {
        if cx.is_cancelled() {
            return Err(Error::Cancelled);
        }
        match action {
            FileAction::Copy(c) => {
                let from = c.from.ok_or(InternalError::CopyFromScratch)?;
                if let std::collections::hash_map::Entry::Vacant(slot) = sources.entry(from) {
                    let resolved = input(from)?;
                    let entry = match &resolved.value {
                        Value::Context { name } => {
                            (SourceTree::Context(ops.contexts.get(name)?), None)
                        }
                        v @ Value::Fs { .. } => {
                            let mnt = scratch.path().join(format!("src{from}"));
                            let (tree, g) = ops.layers.mount_read_only(v, &mnt)?;
                            (SourceTree::Mounted(tree), Some(g))
                        }
                    };
                    let of = source_ref(resolved.key.as_ref(), &resolved.value);
                    slot.insert((entry.0, entry.1, of));
                }
                let (src, _, of) = &sources[&from];
                copy(&root, src, of, c, staging.as_mut())?;
            }
            FileAction::Mkdir(m) => mkdir(&root, m)?,
            FileAction::Mkfile(m) => mkfile(&root, m)?,
            FileAction::Rm(r) => rm(&root, r)?,
        }
    }
    // Source mounts first, then the destination; the draft commits unmounted.
    for (_, (_, g, _)) in sources.drain() {
        if let Some(g) = g {
            g.unmount()?;
        }
    }
    // The native snapshotter may keep the tree for the next step, once it
    // knows what the staging below puts into the upper dir.
    let kept = match guard.take() {
        Some(g) => g.unmount_keeping()?,
        None => None,
    };
    let mut meta = kiln_store::blobs::built_layer_meta();
    let mut staged = None;
    let mut merged = false;
    if let Some(st) = staging {
        merged = st.merged;
        if st.stats.linked > 0 {
            cx.log(
                kiln_solver::Stream::Stdout,
                format!(
                    "{} of {} files unchanged since an earlier copy: linked, not copied\n",
                    st.stats.linked,
                    st.stats.linked + st.stats.copied
                )
                .as_bytes(),
            );
        }
        staged = st.finish(&draft, &mut meta)?;
    }
    // A tree merged into existing entries is not a whole subtree the kept
    // tree could take over: the next mount copies afresh (`Kept` dropped).
    if let Some(mut kept) = kept.filter(|_| !(merged && staged.is_some())) {
        if let Some(rel) = &staged {
            kept.replaced(rel);
            kept.touched_ancestors(rel);
        }
        kept.offer();
    }
    let layer = draft.commit(meta)?;
    let mut layers: Vec<LayerRef> = base.iter().cloned().map(LayerRef::Snapshot).collect();
    layers.push(LayerRef::Snapshot(layer.id));
    Ok(Value::Fs { layers })
}

/// Reads a file of the destination (`/etc/passwd`) if it exists.
fn read_in_root(root: &Path, path: &str) -> Option<String> {
    let p = kiln_snapshot::resolve_in_root(root, Path::new(path), true).ok()?;
    let f = fs::File::open(p).ok()?;
    let mut s = String::new();
    // BuildKit refuses user files over 10 MiB; read at most that.
    f.take(10 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

fn owner(root: &Path, chown: Option<&Chown>) -> Result<Option<(u32, u32)>, Error> {
    match chown {
        None => Ok(None),
        Some(c) => {
            let passwd = read_in_root(root, "/etc/passwd");
            let group = read_in_root(root, "/etc/group");
            Ok(Some(users::resolve_chown(
                c,
                passwd.as_deref(),
                group.as_deref(),
            )?))
        }
    }
}

fn resolve(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, Error> {
    kiln_snapshot::resolve_in_root(root, Path::new(path), follow_last).map_err(|e| {
        Error::Copy(CopyError::Resolve {
            path: path.to_owned(),
            message: e.to_string(),
        })
    })
}

/// Whether `path` is a (possibly compressed) tar archive, as BuildKit decides
/// for `ADD`: a regular file whose decompressed stream starts with a valid
/// tar header.
pub(crate) fn is_archive(path: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_file() {
        return false;
    }
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let Ok((_, r)) = kiln_oci::decompress(io::BufReader::new(f)) else {
        return false;
    };
    let mut ar = tar::Archive::new(r);
    let Ok(mut entries) = ar.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// Staging of a copy whose destination is a fresh directory: the tree is
/// built in a directory of the draft beside the diff, where no overlay
/// slows each file operation and files can be copied in parallel and
/// hard-linked from an earlier layer (`crate::reuse`); once the overlay is
/// unmounted it replaces the empty directory made through the overlay
/// (which copied its parents up), keeping that directory's overlay xattrs.
struct Staging {
    /// Where to look for an earlier layer to link unchanged files from.
    layers: kiln_snapshot::LayerStore,
    /// The copy's site (context sources only; see `crate::reuse`).
    site: Option<String>,
    /// `(stage, its final place in the diff)` once a copy was staged.
    staged: Option<(PathBuf, PathBuf)>,
    stage_dir: PathBuf,
    upper: PathBuf,
    manifest: crate::reuse::Manifest,
    stats: crate::copy::StagedStats,
    /// The copy went into a directory that had entries: the staged tree
    /// is merged with them, not all of that directory.
    merged: bool,
}

impl Staging {
    fn new(
        layers: &kiln_snapshot::LayerStore,
        draft: &kiln_snapshot::LayerDraft,
        c: &Copy,
        inputs: &[Resolved<Value>],
    ) -> Staging {
        let context = c
            .from
            .and_then(|i| inputs.get(i as usize))
            .and_then(|r| match &r.value {
                Value::Context { name } => Some(name.clone()),
                Value::Fs { .. } => None,
            });
        let site = context
            .as_ref()
            .map(|name| crate::reuse::site(name, std::slice::from_ref(&c.src), &c.dest));
        Staging {
            layers: layers.clone(),
            site,
            staged: None,
            stage_dir: draft.root_dir().join("stage"),
            upper: draft.diff_dir().to_path_buf(),
            manifest: Default::default(),
            stats: Default::default(),
            merged: false,
        }
    }

    /// The latest layer made at this copy's site, if it has a manifest:
    /// looked up only when a copy is actually staged.
    fn donor(&self) -> Result<Option<crate::reuse::Donor>, Error> {
        let Some(site) = &self.site else {
            return Ok(None);
        };
        let Some(id) = self
            .layers
            .find_by_label(crate::reuse::LABEL_COPY_SITE, site)?
        else {
            return Ok(None);
        };
        Ok(self
            .layers
            .get(&id)
            .ok()
            .and_then(|l| crate::reuse::Donor::open(&l.path, l.diff)))
    }

    /// Renames the staged tree into place and records the manifest; returns
    /// where the tree went, relative to the diff.
    fn finish(
        self,
        draft: &kiln_snapshot::LayerDraft,
        meta: &mut kiln_snapshot::LayerMeta,
    ) -> Result<Option<PathBuf>, Error> {
        let Some((stage, place)) = self.staged else {
            return Ok(None);
        };
        // Overlay marks a directory made over a deleted one opaque: keep
        // whatever overlay wrote on the placeholder.
        if let Ok(names) = xattr::list(&place) {
            for name in names {
                if let Ok(Some(v)) = xattr::get(&place, &name) {
                    xattr::set(&stage, &name, &v)
                        .map_err(io_err("setting xattrs on", &stage.display().to_string()))?;
                }
            }
        }
        // The rename changes the times of the directory holding the place,
        // which the copy through the mount would not have: kept as they were.
        let holder = place
            .parent()
            .and_then(|p| fs::symlink_metadata(p).ok().map(|m| (p.to_path_buf(), m)));
        fs::rename(&stage, &place).map_err(io_err(
            "moving the staged copy to",
            &place.display().to_string(),
        ))?;
        if let Some((p, m)) = holder {
            filetime::set_symlink_file_times(
                &p,
                filetime::FileTime::from_last_access_time(&m),
                filetime::FileTime::from_last_modification_time(&m),
            )
            .map_err(io_err("setting the times of", &p.display().to_string()))?;
        }
        if let Some(site) = self.site
            && !self.manifest.is_empty()
        {
            crate::reuse::write_manifest(draft.root_dir(), &self.manifest)
                .map_err(io_err("writing the copy manifest of", draft.id().as_str()))?;
            meta.labels
                .insert(crate::reuse::LABEL_COPY_SITE.to_owned(), site);
        }
        match place.strip_prefix(&self.upper) {
            Ok(rel) => Ok(Some(rel.to_path_buf())),
            Err(_) => Err(InternalError::StagedOutsideDiff(place.to_path_buf()).into()),
        }
    }
}

/// Copies directory source `s` to `target` through a stage (see
/// [`Staging`]); `target` exists as an empty directory in the overlay's
/// upper dir when this is called; `made` says whether it is the directory
/// `prepare_target` made for the destination (it keeps that mode and owner
/// and gets the source's times) rather than a placeholder for the source
/// directory itself (which gets all the source's metadata).
#[allow(clippy::too_many_arguments)]
fn copy_staged(
    st: &mut Staging,
    root: &Path,
    copier: &mut Copier<'_>,
    entries: &[kiln_context::Entry],
    target: &Path,
    made: bool,
    cache: Option<&std::sync::Mutex<kiln_context::StatCache>>,
) -> Result<(), Error> {
    let at = target
        .strip_prefix(root)
        .map_err(|_| InternalError::StagedOutsideRoot(target.to_path_buf()))?
        .to_path_buf();
    let stage = st.stage_dir.clone();
    if made {
        // Stands for the directory `mkdir_all` made: its mode and owner.
        let made =
            fs::symlink_metadata(target).map_err(io_err("stat", &target.display().to_string()))?;
        fs::create_dir(&stage).map_err(io_err("creating", &stage.display().to_string()))?;
        fs::set_permissions(
            &stage,
            fs::Permissions::from_mode(made.permissions().mode() & 0o7777),
        )
        .map_err(io_err("chmod", &stage.display().to_string()))?;
        std::os::unix::fs::lchown(
            &stage,
            Some(std::os::unix::fs::MetadataExt::uid(&made)),
            Some(std::os::unix::fs::MetadataExt::gid(&made)),
        )
        .map_err(io_err("chown", &stage.display().to_string()))?;
    }
    let shas: Vec<Option<[u8; 32]>> = match cache {
        Some(cache) => {
            let mut cache = cache
                .lock()
                .map_err(|_| InternalError::Poisoned("stat cache"))?;
            entries
                .iter()
                .map(|e| {
                    (e.file_type == kiln_context::FileType::File)
                        .then(|| cache.digest_of(e))
                        .flatten()
                })
                .collect()
        }
        None => Vec::new(),
    };
    let donor = st.donor()?;
    let (manifest, stats) = copier.copy_staged(entries, &shas, &stage, &at, donor.as_ref())?;
    st.manifest = manifest;
    st.stats = stats;
    st.staged = Some((stage, st.upper.join(&at)));
    Ok(())
}

/// `of` names the source for a message ([`source_ref`]).
fn copy(
    root: &Path,
    src: &SourceTree<'_>,
    of: &str,
    c: &Copy,
    mut staging: Option<&mut Staging>,
) -> Result<(), Error> {
    let chown = owner(root, c.chown.as_ref())?;
    let mode = match &c.mode {
        None => None,
        Some(Chmod::Octal(m)) => Some(ModeChange::Octal(*m)),
        Some(Chmod::Symbolic(s)) => Some(ModeChange::Symbolic(
            ModeSet::parse(s).map_err(FileOpError::from)?,
        )),
    };
    let opts = CopyOptions {
        chown: chown.or(if src.is_context() { Some((0, 0)) } else { None }),
        parents_owner: chown,
        mode,
        xattrs: !src.is_context(),
        sockets_as_files: src.is_context(),
    };
    let mut copier = Copier::new(root, opts);
    if c.create_dest_path {
        copier.ensure_dest_dir(&c.dest)?;
    } else {
        let parent = match c.dest.trim_end_matches('/').rfind('/') {
            Some(0) | None => "/".to_owned(),
            Some(i) => c.dest[..i].to_owned(),
        };
        let p = resolve(root, &parent, true)?;
        fs::symlink_metadata(&p).map_err(io_err("stat", &c.dest))?;
    }
    let tree = src.tree();
    for r in &c.required {
        tree.expand(
            r,
            &ExpandOptions {
                allow_wildcard: false,
                allow_empty_wildcard: false,
                follow_symlinks: false,
            },
        )
        .map_err(checksum_error(of))?;
    }
    let matched = expand(tree, c).map_err(checksum_error(of))?;
    let filter = filter(c)?;
    for s in &matched {
        if c.unpack && is_archive(&s.host_path) {
            let dest = resolve(root, &c.dest, true)?;
            mkdir_all(root, &dest, 0o755, chown)?;
            let f = fs::File::open(&s.host_path).map_err(io_err("open", &c.src))?;
            let (_, r) = kiln_oci::decompress(io::BufReader::new(f))
                .map_err(io_err("decompress", &c.src))?;
            kiln_snapshot::extract_archive(r, &dest, &kiln_snapshot::ExtractOptions { chown })?;
            continue;
        }
        let name = s.path.file_name().unwrap_or(s.path.as_os_str());
        // The root has no name of its own: copying it copies its contents
        // (BuildKit: `ADD <git>` copies `/` without contents-only).
        let contents_only = c.contents_only || s.path.file_name().is_none();
        let (target, fresh) = copier.prepare_target(&s.metadata, name, &c.dest, contents_only)?;
        let walked = match src.walked(c, s) {
            Some(w) => w,
            None => tree.walk(s, &filter)?,
        };
        // A directory that exists already (`WORKDIR /app` + `COPY . .`) is
        // staged too when the copy only adds to it, merges directories or
        // replaces non-directories (see `merge_into`).
        let into = if fresh || !(matched.len() == 1 && s.metadata.is_dir()) {
            None
        } else {
            merge_into(&target, &walked)?
        };
        if (fresh || into.is_some())
            && matched.len() == 1
            && s.metadata.is_dir()
            && let Some(st) = staging.as_deref_mut()
        {
            let made = target.is_dir();
            if !made {
                fs::create_dir(&target).map_err(io_err("mkdir", &c.dest))?;
            }
            if let Some(merge) = into {
                // Copies the directory up (overlay) or marks it changed (the
                // native snapshotter): the placeholder the stage replaces.
                let m = fs::symlink_metadata(&target).map_err(io_err("stat", &c.dest))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(m.mode() & 0o7777))
                    .map_err(io_err("chmod", &c.dest))?;
                st.merged |= merge == Merge::NonEmpty;
            }
            copy_staged(
                st,
                root,
                &mut copier,
                &walked,
                &target,
                made,
                src.stat_cache(),
            )?;
            continue;
        }
        let entries: Vec<SourceEntry> = walked
            .into_iter()
            .map(|e| SourceEntry {
                rel: e.path,
                path: e.host_path,
            })
            .collect();
        copier.copy_source(&entries, &target)?;
    }
    Ok(())
}

/// How a staged copy goes into an existing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// The directory is empty: the staged tree is all of it.
    Empty,
    /// It has entries: the staged tree goes into the layer as an upper
    /// directory over them, which is what the copy makes only because every
    /// entry of the source that exists there is a directory over a directory
    /// (merged, as overlay merges a non-opaque upper directory) or a
    /// non-directory over a non-directory (hidden, as an upper entry hides
    /// a lower one).
    NonEmpty,
}

/// Whether the copy of `entries` into the existing directory `target` (in
/// the mounted root) can be staged; `None` when it cannot (the target is not
/// a directory, or a source entry meets an existing entry of the other kind:
/// the copy then goes through the mount, which refuses or replaces as
/// BuildKit does). Only paths under an existing directory are looked up, so
/// a copy into an empty `WORKDIR` costs one `readdir`.
fn merge_into(target: &Path, entries: &[kiln_context::Entry]) -> Result<Option<Merge>, Error> {
    let io = |e| Error::Io {
        what: format!("reading {}", target.display()),
        source: e,
    };
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    if fs::read_dir(target).map_err(io)?.next().is_none() {
        return Ok(Some(Merge::Empty));
    }
    // Source directories that exist in the target as directories: only
    // their children can meet something.
    let mut existing: std::collections::HashSet<&Path> = std::collections::HashSet::new();
    existing.insert(Path::new(""));
    for e in entries {
        let Some(parent) = e.path.parent() else {
            continue; // the source itself: `target`
        };
        if !existing.contains(parent) {
            continue;
        }
        let there = match fs::symlink_metadata(target.join(&e.path)) {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return Ok(None),
        };
        let is_dir = e.file_type == kiln_context::FileType::Dir;
        if is_dir != there.is_dir() {
            return Ok(None);
        }
        if is_dir {
            existing.insert(&e.path);
        }
    }
    Ok(Some(Merge::NonEmpty))
}

fn mkdir(root: &Path, m: &Mkdir) -> Result<(), Error> {
    let owner = owner(root, m.chown.as_ref())?;
    let p = resolve(root, &m.path, true)?;
    if m.parents {
        mkdir_all(root, &p, m.mode & 0o777, owner)?;
        return Ok(());
    }
    match fs::create_dir(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err("mkdir", &m.path)(e)),
    }
    fs::set_permissions(&p, fs::Permissions::from_mode(m.mode & 0o777))
        .map_err(io_err("chmod", &m.path))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(io_err("chown", &m.path))?;
    }
    Ok(())
}

fn mkfile(root: &Path, m: &Mkfile) -> Result<(), Error> {
    let owner = owner(root, m.chown.as_ref())?;
    let p = resolve(root, &m.path, true)?;
    let existed = fs::symlink_metadata(&p).is_ok();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(io_err("create", &m.path))?;
    f.write_all(m.data.as_bytes())
        .map_err(io_err("write", &m.path))?;
    if !existed {
        f.set_permissions(fs::Permissions::from_mode(m.mode & 0o777))
            .map_err(io_err("chmod", &m.path))?;
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(io_err("chown", &m.path))?;
    }
    Ok(())
}

fn rm(root: &Path, r: &Rm) -> Result<(), Error> {
    let paths: Vec<String> = if r.allow_wildcard {
        let tree = Tree::new(root.to_path_buf(), None);
        let found = tree.expand(
            &r.path,
            &ExpandOptions {
                allow_wildcard: true,
                allow_empty_wildcard: true,
                follow_symlinks: false,
            },
        )?;
        found
            .iter()
            .map(|s| s.path.to_string_lossy().into_owned())
            .collect()
    } else {
        vec![r.path.clone()]
    };
    for p in paths {
        let abs = if p.starts_with('/') {
            p
        } else {
            format!("/{p}")
        };
        let (dir, base) = match abs.rfind('/') {
            Some(i) => (&abs[..=i], &abs[i + 1..]),
            None => ("/", abs.as_str()),
        };
        if base.is_empty() {
            return Err(FileOpError::RemoveEmptyPath { path: abs }.into());
        }
        let target = resolve(root, dir, true)?.join(base);
        if !r.allow_not_found && fs::metadata(&target).is_err() {
            return Err(Error::Io {
                what: format!("remove {abs}"),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&target).map_err(io_err("remove", &abs))?,
            Ok(_) => fs::remove_file(&target).map_err(io_err("remove", &abs))?,
            Err(_) => {}
        }
    }
    Ok(())
}
