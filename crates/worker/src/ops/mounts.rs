//! The extra mounts of a RUN step (`RUN --mount=type=…`), turned into what
//! `kiln-executor` mounts, plus what the build grants RUN steps
//! ([`ExecGrants`]: `--secret`, `--ssh`, `--allow`).
//!
//! * `bind`: the build context is bound in place (read-only) when no
//!   `.dockerignore` hides anything, else the selection is copied to scratch
//!   space first; a stage or image is mounted from its layers in kiln's
//!   private mount namespace (which the helper inherits). `rw` gets an
//!   overlay with a throwaway upper directory (a copy for a single file):
//!   the layer below is never written.
//! * `cache`: a directory of `<root>/cache-mounts/<key>/data` (see
//!   [`cache_dir_key`]), created atomically (built under a temporary name,
//!   then renamed) and kept between builds; never part of a layer or a
//!   cache key. `<key>/lock` is `flock`ed: shared by `sharing=shared`
//!   users, exclusively by `locked` ones (who wait) and `private` ones (who
//!   get a fresh throwaway directory when the cache is in use). Under
//!   `--no-cache` a cache scoped by `from=` or its ownership is a fresh
//!   directory of the build's (see [`prepare`]).
//! * `tmpfs`, `secret`, `ssh`: a tmpfs; a file on a tmpfs of the helper's
//!   (secrets never touch a disk) or an environment variable; a socket in
//!   scratch space, with the mount's owner and mode, forwarding each
//!   connection to the agent socket given with `--ssh`.
//!
//! Mount points the image lacks are removed from the layer by the executor.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln_context::{ExpandOptions, Filter, Tree};
use kiln_executor::{ExtraMount, MountKind as ExecMount, SecretData};
use kiln_llb::Digest;
use kiln_llb::op::{CacheSharing, ExecOp, Mount, MountKind};
use kiln_snapshot::MountGuard;
use kiln_solver::{Cx, Resolved};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::copy::{Copier, CopyOptions, SourceEntry};
use crate::error::{Error, InternalError, RunMountError, Unsupported};
pub use crate::grants::{ExecGrants, Secret};
use crate::ops::shared::{Contexts, Layers};
use crate::value::Value;

pub use kiln_store::cache_mounts::{CACHE_MOUNTS_DIR, CacheMountInfo, cache_mounts};

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

/// What the mounts of RUN steps need of their build: the layers of stages
/// and images they mount, the build contexts, the secrets and SSH agents
/// granted, and the build's cache mounts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MountOps<'a> {
    pub(crate) layers: Layers<'a>,
    pub(crate) contexts: &'a Contexts,
    pub(crate) grants: &'a ExecGrants,
    pub(crate) cache_mounts: &'a CacheMounts,
}

/// The cache mounts of one build's steps.
#[derive(Debug, Default)]
pub(crate) struct CacheMounts {
    /// Directory names of the kept cache mounts this build's steps mounted.
    used: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Where the cache mounts of `--no-cache` steps live, made anew for this
    /// build and removed with it (see [`prepare`]).
    fresh: std::sync::Mutex<Option<tempfile::TempDir>>,
}

impl CacheMounts {
    /// Directory names of the kept cache mounts this build's steps mounted.
    pub(crate) fn used(&self) -> Vec<String> {
        self.used
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What the mounts of one step hold until it is done: mounts in kiln's
/// namespace, cache locks, ssh forwarders, private cache directories.
/// Dropped before the scratch directory they live in.
#[derive(Default)]
pub(crate) struct Prepared {
    pub mounts: Vec<ExtraMount>,
    /// `KEY=value` of `type=secret,env=KEY` mounts.
    pub env: Vec<String>,
    // Order matters: forwarders stop first, then mounts go, then locks.
    ssh: Vec<SshForwarder>,
    guards: Vec<MountGuard>,
    locks: Vec<Flock<File>>,
    /// Cache directories this step already holds a lock on (a second mount
    /// of the same cache in one step must not wait for the first).
    held: std::collections::HashSet<PathBuf>,
}

impl Prepared {
    /// Unmounts what was mounted, reporting failures.
    pub fn finish(mut self) -> Result<(), Error> {
        self.ssh.clear();
        for g in self.guards.drain(..).rev() {
            g.unmount()?;
        }
        Ok(())
    }
}

/// A mount's content comes from a build context: the digest of what it
/// shows (the `source` subtree, through `.dockerignore`).
pub(crate) fn context_digest(contexts: &Contexts, name: &str, m: &Mount) -> Result<Digest, Error> {
    let ctx = contexts.get(name)?;
    let sources =
        ctx.tree
            .expand(&m.source, &follow())
            .map_err(|source| RunMountError::CacheKey {
                target: m.target.clone(),
                source,
            })?;
    let mut cache = ctx
        .stat_cache
        .lock()
        .map_err(|_| InternalError::Poisoned("stat cache"))?;
    let (digest, _) = ctx.tree.digest(
        &sources,
        &Filter::default(),
        &mut cache,
        &kiln_context::DigestOptions {
            include_ownership: false,
        },
    )?;
    Ok(digest)
}

/// Whether input `index` of `e` is read only through bind mounts that are
/// not the step's output: then what those mounts show, not the input's key,
/// is what the step depends on (BuildKit's content-based keys of exec
/// mounts: `getMountDeps` leaves them out only for the writable root).
pub(crate) fn content_mounted(e: &ExecOp, index: u32) -> bool {
    let mut used = e
        .mounts
        .iter()
        .filter(|m| m.input == Some(index))
        .peekable();
    used.peek().is_some() && used.all(|m| matches!(m.kind, MountKind::Bind) && !m.output)
}

/// Content digests of what the bind mounts of `e` show of input `index`, a
/// filesystem (a stage or an image): one per mount, with ownership (the mount
/// shows it). The filesystem is mounted read-only for the walk.
pub(crate) fn fs_digests(
    layers: Layers<'_>,
    e: &ExecOp,
    index: u32,
    value: &Value,
) -> Result<Vec<Digest>, Error> {
    layers.digest_mounted(value, |tree, cache, opts| {
        e.mounts
            .iter()
            .filter(|m| m.input == Some(index))
            .map(|m| {
                let sources = tree.expand(&m.source, &follow()).map_err(|source| {
                    RunMountError::CacheKey {
                        target: m.target.clone(),
                        source,
                    }
                })?;
                Ok(tree.digest(&sources, &Filter::default(), cache, opts)?.0)
            })
            .collect()
    })
}

fn follow() -> ExpandOptions {
    ExpandOptions {
        allow_wildcard: false,
        allow_empty_wildcard: false,
        follow_symlinks: true,
    }
}

/// Everything but the root mount of `e`, ready for the executor.
///
/// `ignore_cache` (the step is under `--no-cache`): a cache mount whose
/// directory is scoped by what it starts from (`from=`, or an explicit
/// `uid`/`gid`/`mode`) gets a fresh directory, shared by the steps of this
/// build as the kept one would be and removed when the build ends, and the
/// kept one is left alone. That is what BuildKit does
/// (moby/buildkit#5305, `testCacheMountModeNoCache`): it scopes such a
/// cache by the ref it starts from, and under `--no-cache` that ref (the
/// stage, or the directory its frontend makes for the ownership) is made
/// anew. A cache mount with only an `id` is shared as without `--no-cache`.
pub(crate) fn prepare(
    ops: MountOps<'_>,
    e: &ExecOp,
    inputs: &[Resolved<Value>],
    scratch: &Path,
    ignore_cache: bool,
    cx: &Cx,
) -> Result<Prepared, Error> {
    let mut p = Prepared::default();
    let mut ssh_index = 0usize;
    for (i, m) in e.mounts.iter().enumerate() {
        if m.target == "/" && m.output {
            continue;
        }
        let slot = scratch.join(format!("m{i}"));
        match &m.kind {
            MountKind::Bind => {
                let source = bind(ops, m, inputs, &slot, &mut p)?;
                p.mounts.push(ExtraMount {
                    target: m.target.clone(),
                    kind: ExecMount::Bind {
                        source,
                        readonly: m.readonly,
                    },
                });
            }
            MountKind::Cache {
                id,
                sharing,
                uid,
                gid,
                mode,
            } => {
                let ownership = (*uid, *gid, *mode);
                let fresh = ignore_cache && (m.input.is_some() || ownership != (None, None, None));
                let source = cache(
                    ops, m, id, *sharing, ownership, fresh, inputs, &slot, &mut p, cx,
                )?;
                p.mounts.push(ExtraMount {
                    target: m.target.clone(),
                    kind: ExecMount::Bind {
                        source,
                        readonly: m.readonly,
                    },
                });
            }
            MountKind::Tmpfs { size } => p.mounts.push(ExtraMount {
                target: m.target.clone(),
                kind: ExecMount::Tmpfs { size: *size },
            }),
            MountKind::Secret {
                id,
                env,
                required,
                uid,
                gid,
                mode,
            } => {
                let Some(secret) = ops.grants.secrets.get(id) else {
                    if *required {
                        return Err(RunMountError::SecretNotFound { id: id.clone() }.into());
                    }
                    continue;
                };
                if !env.is_empty() {
                    let value = std::str::from_utf8(&secret.0).map_err(|_| {
                        RunMountError::SecretNotUtf8 {
                            id: id.clone(),
                            env: env.clone(),
                        }
                    })?;
                    p.env.push(format!("{env}={value}"));
                }
                if !m.target.is_empty() {
                    p.mounts.push(ExtraMount {
                        target: m.target.clone(),
                        kind: ExecMount::SecretFile {
                            data: SecretData(secret.0.clone()),
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                        },
                    });
                }
            }
            MountKind::Ssh {
                id,
                required,
                uid,
                gid,
                mode,
            } => {
                let Some(agent) = ops.grants.ssh.get(id) else {
                    if *required {
                        return Err(RunMountError::NoSshAgent { id: id.clone() }.into());
                    }
                    continue;
                };
                let sock = scratch.join(format!("ssh{ssh_index}.sock"));
                ssh_index += 1;
                p.ssh
                    .push(SshForwarder::start(&sock, agent, (*uid, *gid), *mode)?);
                p.mounts.push(ExtraMount {
                    target: m.target.clone(),
                    kind: ExecMount::Bind {
                        source: sock,
                        readonly: false,
                    },
                });
            }
        }
    }
    // Parents before children: `/a` must be mounted before `/a/b`.
    p.mounts
        .sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
    Ok(p)
}

fn missing_input(m: &Mount, index: u32) -> InternalError {
    InternalError::MissingInput {
        user: format!("mount {}", m.target),
        index,
    }
}

fn cache_source_not_found(m: &Mount) -> RunMountError {
    RunMountError::CacheSourceNotFound {
        target: m.target.clone(),
        path: m.source.clone(),
    }
}

/// The input a mount reads, if any.
fn input<'a>(m: &Mount, inputs: &'a [Resolved<Value>]) -> Result<Option<&'a Value>, Error> {
    match m.input {
        None => Ok(None),
        Some(i) => inputs
            .get(i as usize)
            .map(|r| Some(&r.value))
            .ok_or_else(|| missing_input(m, i).into()),
    }
}

fn mkdir(p: &Path) -> Result<(), Error> {
    fs::create_dir_all(p).map_err(io_err("creating", p))
}

/// Mounts the layers of `v` on `slot/fs` (read-only, or with a throwaway
/// upper in `slot`) and returns the mount point.
fn mount_fs(
    ops: MountOps<'_>,
    v: Option<&Value>,
    rw: bool,
    slot: &Path,
    p: &mut Prepared,
) -> Result<PathBuf, Error> {
    let layers = match v {
        Some(v) => ops.layers.state.layer_dirs(&ops.layers.layers_of(v)?)?,
        None => Vec::new(),
    };
    let mnt = slot.join("fs");
    mkdir(&mnt)?;
    let guard = if rw {
        let (upper, work) = (slot.join("upper"), slot.join("work"));
        mkdir(&upper)?;
        mkdir(&work)?;
        ops.layers
            .state
            .snapshotter
            .mount(&layers, Some((&upper, &work)), &mnt)?
    } else {
        ops.layers.state.snapshotter.mount(&layers, None, &mnt)?
    };
    p.guards.push(guard);
    Ok(mnt)
}

/// A path inside a mounted filesystem, which must exist.
fn inside(mnt: &Path, m: &Mount, what: &'static str) -> Result<PathBuf, Error> {
    let path =
        kiln_snapshot::resolve_in_root(mnt, Path::new(&m.source), true).map_err(|source| {
            RunMountError::BadSource {
                kind: what,
                target: m.target.clone(),
                path: m.source.clone(),
                source,
            }
        })?;
    fs::symlink_metadata(&path).map_err(|_| RunMountError::SourceNotFound {
        kind: what,
        target: m.target.clone(),
        path: m.source.clone(),
    })?;
    Ok(path)
}

/// Copies the selection `entries` of a tree to `dest` (which must not
/// exist).
fn copy_tree(entries: Vec<kiln_context::Entry>, dest: &Path, xattrs: bool) -> Result<(), Error> {
    let root = dest.parent().unwrap_or(dest);
    let entries: Vec<SourceEntry> = entries
        .into_iter()
        .map(|e| SourceEntry {
            rel: e.path,
            path: e.host_path,
        })
        .collect();
    let mut copier = Copier::new(
        root,
        CopyOptions {
            xattrs,
            ..CopyOptions::default()
        },
    );
    copier.copy_source(&entries, dest)?;
    Ok(())
}

/// Whether a directory of the walk `entries` (a selection through
/// `.dockerignore`) has more children on disk than in the selection, i.e.
/// whether binding the directory in place would show ignored files.
fn hides_something(entries: &[kiln_context::Entry]) -> Result<bool, Error> {
    let mut shown: HashMap<&Path, usize> = HashMap::new();
    for e in entries {
        if let Some(parent) = e.path.parent().filter(|_| !e.path.as_os_str().is_empty()) {
            *shown.entry(parent).or_default() += 1;
        }
    }
    for e in entries {
        if e.file_type != kiln_context::FileType::Dir {
            continue;
        }
        let on_disk = fs::read_dir(&e.host_path)
            .map_err(io_err("listing", &e.host_path))?
            .count();
        if on_disk != shown.get(e.path.as_path()).copied().unwrap_or(0) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The host path a `type=bind` mount binds.
fn bind(
    ops: MountOps<'_>,
    m: &Mount,
    inputs: &[Resolved<Value>],
    slot: &Path,
    p: &mut Prepared,
) -> Result<PathBuf, Error> {
    match input(m, inputs)? {
        Some(Value::Context { name }) => {
            let ctx = ops.contexts.get(name)?;
            let src = ctx.tree.expand(&m.source, &follow()).map_err(|source| {
                RunMountError::BindSource {
                    target: m.target.clone(),
                    source,
                }
            })?;
            let Some(src) = src.into_iter().next() else {
                return Err(RunMountError::SourceNotFound {
                    kind: "bind",
                    target: m.target.clone(),
                    path: m.source.clone(),
                }
                .into());
            };
            let is_dir = src.metadata.is_dir();
            let visible = match ctx.tree.ignore() {
                Some(_) => Some(ctx.tree.walk(&src, &Filter::default())?),
                None => None,
            };
            let hides = match &visible {
                Some(entries) => hides_something(entries)?,
                None => false,
            };
            if hides || (!m.readonly && !is_dir) {
                // Only what .dockerignore lets through is visible; a file
                // mounted read-write is a throwaway copy.
                mkdir(slot)?;
                let dest = slot.join("copy");
                let entries = match visible {
                    Some(v) => v,
                    None => ctx.tree.walk(&src, &Filter::default())?,
                };
                copy_tree(entries, &dest, false)?;
                Ok(dest)
            } else if m.readonly {
                Ok(src.host_path)
            } else {
                let (upper, work, mnt) = (slot.join("upper"), slot.join("work"), slot.join("fs"));
                for d in [&upper, &work, &mnt] {
                    mkdir(d)?;
                }
                p.guards.push(ops.layers.state.snapshotter.mount(
                    std::slice::from_ref(&src.host_path),
                    Some((&upper, &work)),
                    &mnt,
                )?);
                Ok(mnt)
            }
        }
        v => {
            let mnt = mount_fs(ops, v, !m.readonly, slot, p)?;
            inside(&mnt, m, "bind")
        }
    }
}

/// Explicit `uid`/`gid`/`mode` of a cache mount.
pub type CacheOwnership = (Option<u32>, Option<u32>, Option<u32>);

/// The name of a cache mount's directory. BuildKit scopes a cache by its id
/// and by the filesystem it starts from: `from` and `source` when given,
/// else the directory its frontend makes for explicit `uid`/`gid`/`mode`
/// (so `id=x,uid=1000` and `id=x` are two caches there, and here).
pub fn cache_dir_key(
    id: &str,
    from: Option<&str>,
    source: &str,
    ownership: CacheOwnership,
) -> String {
    let mut s = format!("kiln.cachemount.v1\0{id}");
    if let Some(f) = from {
        s.push_str(&format!("\0{f}\0{source}"));
    }
    if ownership != (None, None, None) {
        s.push_str(&format!("\0owner {ownership:?}"));
    }
    Digest::of(s.as_bytes()).hex()
}

/// The host directory a `type=cache` mount binds.
#[allow(clippy::too_many_arguments)]
fn cache(
    ops: MountOps<'_>,
    m: &Mount,
    id: &str,
    sharing: CacheSharing,
    ownership: CacheOwnership,
    fresh: bool,
    inputs: &[Resolved<Value>],
    slot: &Path,
    p: &mut Prepared,
    cx: &Cx,
) -> Result<PathBuf, Error> {
    let from = match m.input {
        None if m.source != "/" => {
            return Err(Unsupported::CacheMountSubdir {
                target: m.target.clone(),
            }
            .into());
        }
        None => None,
        Some(i) => {
            let r = inputs.get(i as usize).ok_or_else(|| missing_input(m, i))?;
            Some(match (&r.key, &r.value) {
                (Some(k), _) => k.to_hex(),
                (None, Value::Context { name }) => context_digest(ops.contexts, name, m)?.hex(),
                (None, Value::Fs { .. }) => {
                    return Err(RunMountError::CacheFromWithoutKey {
                        target: m.target.clone(),
                    }
                    .into());
                }
            })
        }
    };
    let owner = (ownership.0.unwrap_or(0), ownership.1.unwrap_or(0));
    let mode = ownership.2.unwrap_or(0o755);
    let key = cache_dir_key(id, from.as_deref(), &m.source, ownership);
    let dir = if fresh {
        let mut root = ops
            .cache_mounts
            .fresh
            .lock()
            .map_err(|_| InternalError::Poisoned("cache mount"))?;
        if root.is_none() {
            *root = Some(ops.layers.state.scratch()?);
        }
        root.as_ref()
            .map_or_else(PathBuf::new, |t| t.path().join(&key))
    } else {
        if let Ok(mut used) = ops.cache_mounts.used.lock() {
            used.insert(key.clone());
        }
        ops.layers.state.root.join(CACHE_MOUNTS_DIR).join(&key)
    };
    if p.held.contains(&dir) {
        return Ok(dir.join("data"));
    }
    if !dir.is_dir() && (fresh || !restore_cache(ops, id, &key, &dir)?) {
        create_cache(ops, m, &dir, owner, mode, inputs, p)?;
    }
    let lock_path = dir.join("lock");
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))
    };
    let lock_err = |e: Errno| io_err("locking", &lock_path)(io::Error::from(e));
    // Waits for a conflicting user (a `locked` or `private` one, or for
    // `locked`, any), saying so once, and gives up when the build is
    // cancelled.
    let wait = |exclusive: bool| -> Result<Flock<File>, Error> {
        let arg = if exclusive {
            FlockArg::LockExclusiveNonblock
        } else {
            FlockArg::LockSharedNonblock
        };
        let mut f = open()?;
        let mut said = false;
        loop {
            match Flock::lock(f, arg) {
                Ok(l) => return Ok(l),
                Err((back, Errno::EWOULDBLOCK)) => f = back,
                Err((_, e)) => return Err(lock_err(e)),
            }
            if cx.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if !said {
                cx.log(
                    kiln_solver::Stream::Stderr,
                    format!("waiting for cache mount {id:?}, in use by another step\n").as_bytes(),
                );
                said = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // The lock file's mtime is the cache's last use (`prune --filter until=`).
    let _ = filetime::set_file_mtime(&lock_path, filetime::FileTime::now());
    match sharing {
        CacheSharing::Shared => p.locks.push(wait(false)?),
        CacheSharing::Locked => p.locks.push(wait(true)?),
        CacheSharing::Private => match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
            Ok(l) => p.locks.push(l),
            Err((_, Errno::EWOULDBLOCK)) => {
                // In use: this step gets a fresh directory of its own,
                // thrown away afterwards.
                let fresh = slot.join("private");
                mkdir(slot)?;
                fill_cache(ops, m, &fresh, owner, mode, inputs, p)?;
                return Ok(fresh);
            }
            Err((_, e)) => return Err(lock_err(e)),
        },
    }
    p.held.insert(dir.clone());
    Ok(dir.join("data"))
}

/// Makes `data` a new cache directory: seeded from `from`/`source`, or empty
/// with the mount's owner and mode.
fn fill_cache(
    ops: MountOps<'_>,
    m: &Mount,
    data: &Path,
    owner: (u32, u32),
    mode: u32,
    inputs: &[Resolved<Value>],
    p: &mut Prepared,
) -> Result<(), Error> {
    match input(m, inputs)? {
        None => {
            fs::create_dir(data).map_err(io_err("creating", data))?;
            fs::set_permissions(data, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io_err("chmod", data))?;
            std::os::unix::fs::chown(data, Some(owner.0), Some(owner.1))
                .map_err(io_err("chown", data))?;
        }
        Some(Value::Context { name }) => {
            let ctx = ops.contexts.get(name)?;
            let src = ctx.tree.expand(&m.source, &follow())?;
            let src = src
                .into_iter()
                .next()
                .ok_or_else(|| cache_source_not_found(m))?;
            copy_tree(ctx.tree.walk(&src, &Filter::default())?, data, false)?;
        }
        Some(v) => {
            let slot = data.with_extension("seed");
            let mnt = mount_fs(ops, Some(v), false, &slot, p)?;
            let copied = (|| -> Result<(), Error> {
                let tree = Tree::new(mnt.clone(), None);
                let src = tree.expand(&m.source, &follow())?;
                let src = src
                    .into_iter()
                    .next()
                    .ok_or_else(|| cache_source_not_found(m))?;
                copy_tree(tree.walk(&src, &Filter::default())?, data, true)
            })();
            // Unmounted before anything removes the directory it is in.
            if let Some(g) = p.guards.pop() {
                g.unmount()?;
            }
            copied?;
            let _ = fs::remove_dir_all(&slot);
        }
    }
    Ok(())
}

/// Creates the cache directory `dir` atomically: built under a temporary
/// name beside it, then renamed (a concurrent creator's rename wins, ours is
/// removed).
/// Creates cache mount `dir` from an imported cache (`--cache-from` of a
/// cache exported with `mounts=true`); `false` when none has it.
fn restore_cache(ops: MountOps<'_>, id: &str, key: &str, dir: &Path) -> Result<bool, Error> {
    let parent = dir.parent().unwrap_or(dir);
    mkdir(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)
        .map_err(io_err("creating a cache directory in", parent))?;
    if !crate::cache::restore_mount(
        ops.layers.state,
        ops.layers.imported,
        key,
        &tmp.path().join("data"),
    )? {
        return Ok(false);
    }
    let mut f = File::create(tmp.path().join("id")).map_err(io_err("creating", tmp.path()))?;
    f.write_all(id.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing the id in", tmp.path()))?;
    let staged = tmp.keep();
    match fs::rename(&staged, dir) {
        Ok(()) => Ok(true),
        Err(_) if dir.is_dir() => {
            let _ = fs::remove_dir_all(&staged);
            Ok(true)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staged);
            Err(io_err("creating", dir)(e))
        }
    }
}

fn create_cache(
    ops: MountOps<'_>,
    m: &Mount,
    dir: &Path,
    owner: (u32, u32),
    mode: u32,
    inputs: &[Resolved<Value>],
    p: &mut Prepared,
) -> Result<(), Error> {
    let parent = dir.parent().unwrap_or(dir);
    mkdir(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)
        .map_err(io_err("creating a cache directory in", parent))?;
    let id = match &m.kind {
        MountKind::Cache { id, .. } => id.as_str(),
        _ => "",
    };
    fill_cache(ops, m, &tmp.path().join("data"), owner, mode, inputs, p)?;
    let mut f = File::create(tmp.path().join("id")).map_err(io_err("creating", tmp.path()))?;
    f.write_all(id.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing the id in", tmp.path()))?;
    let staged = tmp.keep();
    match fs::rename(&staged, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.is_dir() => {
            let _ = fs::remove_dir_all(&staged);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staged);
            Err(io_err("creating", dir)(e))
        }
    }
}

/// A socket with the mount's owner and mode that forwards every connection
/// to an SSH agent socket, until dropped.
struct SshForwarder {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SshForwarder {
    fn start(path: &Path, agent: &Path, owner: (u32, u32), mode: u32) -> Result<Self, Error> {
        let listener = UnixListener::bind(path).map_err(io_err("creating the ssh socket", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err("chmod", path))?;
        std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
            .map_err(io_err("chown", path))?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let Ok(up) = UnixStream::connect(&agent) else {
                    continue;
                };
                forward(conn, up);
            }
        });
        Ok(SshForwarder {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

/// Copies both ways between `a` and `b` on two threads of their own.
fn forward(a: UnixStream, b: UnixStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let pump = |mut from: UnixStream, mut to: UnixStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    pump(a, b2);
    pump(b, a2);
}

impl Drop for SshForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop; if that fails, the thread is left to end
        // with the process rather than waited for forever.
        if UnixStream::connect(&self.path).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Deletes the cache mounts last used before `until` (all of them when
/// `None`): `kiln prune --all` (see [`kiln_store::cache_mounts`]).
pub fn delete_cache_mounts(root: &Path, until: Option<i64>) -> Result<Vec<CacheMountInfo>, Error> {
    Ok(kiln_store::cache_mounts::delete_cache_mounts(root, until)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn ssh_forwarder_relays_both_ways_with_the_mounts_mode() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let agent_path = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap_or_else(|e| panic!("{e}"));
        // A fake agent: answers each request with its bytes reversed.
        let server = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            buf.reverse();
            c.write_all(&buf).unwrap_or_else(|e| panic!("{e}"));
        });
        let sock = dir.path().join("fwd.sock");
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let fwd = SshForwarder::start(&sock, &agent_path, (uid, gid), 0o600)
            .unwrap_or_else(|e| panic!("{e}"));
        let meta = fs::metadata(&sock).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let mut c = UnixStream::connect(&sock).unwrap_or_else(|e| panic!("{e}"));
        c.write_all(b"hello").unwrap_or_else(|e| panic!("{e}"));
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&back, b"olleh");
        server.join().unwrap_or_else(|_| panic!("agent thread"));
        drop(fwd);
        assert!(!sock.exists(), "the forwarder's socket outlived it");
    }

    #[test]
    fn cache_keys_scope_by_id_and_seed() {
        let none = (None, None, None);
        let key = |id, from, source| cache_dir_key(id, from, source, none);
        assert_eq!(key("a", None, "/"), key("a", None, "/x"));
        assert_ne!(key("a", None, "/"), key("b", None, "/"));
        assert_ne!(key("a", None, "/"), key("a", Some("k"), "/"));
        assert_ne!(key("a", Some("k"), "/"), key("a", Some("k"), "/sub"));
        assert_ne!(
            key("a", None, "/"),
            cache_dir_key("a", None, "/", (Some(1000), None, None))
        );
        assert_eq!(
            cache_dir_key("a", None, "/", (Some(1000), None, Some(0o750))),
            cache_dir_key("a", None, "/", (Some(1000), None, Some(0o750)))
        );
    }
}
