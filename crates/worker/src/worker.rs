//! [`LlbWorker`]: the solver's worker for kiln-llb vertices. Dispatches each op
//! kind to its module and computes cache keys ([`crate::keys`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_context::{StatCache, Tree};
use kiln_executor::Executor;
use kiln_llb::op::{FileAction, Op, SourceOp};
use kiln_llb::{Digest, Vertex};
use kiln_snapshot::LayerId;
use kiln_solver::{Cx, Key, KeyInput, Resolved};

use crate::error::Error;
use crate::keys::{self, InputPart};
use crate::state::State;
use crate::value::Value;
use crate::{exec, fileop, git, http, image};

/// A build context the graph may read (`context`, or a `--build-context`).
#[derive(Debug)]
pub struct ContextSource {
    /// The directory seen through its `.dockerignore`.
    pub tree: Tree,
    /// Its stat cache, saved when the build ends.
    pub stat_cache: Mutex<StatCache>,
}

/// Settings of the RUN steps of one build.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// The hostname RUN steps see.
    pub hostname: String,
    /// Secrets, SSH agents and entitlements granted to RUN steps.
    pub grants: std::sync::Arc<crate::mounts::ExecGrants>,
    /// Memory and process limits of RUN steps.
    pub limits: kiln_executor::Limits,
    /// `/dev/shm` size and resource limits of RUN steps.
    pub resources: kiln_executor::Resources,
}

/// The worker of one build.
pub struct LlbWorker {
    pub(crate) state: State,
    pub(crate) contexts: HashMap<String, ContextSource>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) exec: ExecSettings,
    /// Downloads made while computing a key, waiting for `execute`.
    /// (Keyed by vertex digest.)
    pub(crate) downloads: Mutex<HashMap<Digest, http::Download>>,
    /// Git refs resolved while computing a key, for `execute`.
    pub(crate) git_commits: Mutex<HashMap<Digest, git::Resolved>>,
    /// Git commits and download digests the keys were made of, kept for
    /// the provenance (`attest`).
    pub(crate) resolved: Mutex<crate::attest::Resolved>,
    /// Vertices whose new layer goes into the image being built, and the
    /// image's mtime clamp: their diffIDs are computed as soon as they are
    /// built (see `image::prefetch_diff_id`).
    pub(crate) image_layers: Option<(std::collections::HashSet<Digest>, Option<i64>)>,
    /// Records of `--cache-from` caches, whose layers are fetched when a
    /// step needs them.
    pub(crate) imported: Arc<crate::cache::Imported>,
    /// Directory names of the cache mounts this build's steps mounted.
    pub(crate) used_cache_mounts: Mutex<std::collections::BTreeSet<String>>,
    /// Where the cache mounts of `--no-cache` steps live, made anew for this
    /// build and removed with it (see `mounts::prepare`).
    pub(crate) fresh_cache_mounts: Mutex<Option<tempfile::TempDir>>,
    /// Records why steps run (`--explain`), with what keys and context
    /// files were seen while keying.
    pub(crate) explainer: Option<crate::explain::Explainer>,
    seen: Mutex<HashMap<Digest, Seen>>,
    explanations: Mutex<Vec<(String, String)>>,
    /// With the native snapshotter, a scratch directory where a step leaves
    /// its tree for the next step of its chain (`kiln_snapshot::native::Kept`);
    /// made on first use, removed with the worker.
    views: std::sync::OnceLock<Option<tempfile::TempDir>>,
}

/// What keying a vertex saw, and the context files it reads (listed when
/// it runs), for its explanation.
#[derive(Debug, Default)]
struct Seen {
    key: Option<Key>,
    /// Context files read, per input index: path → digest (hex prefix).
    files: HashMap<u32, std::collections::BTreeMap<String, String>>,
}

impl std::fmt::Debug for LlbWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlbWorker")
            .field("state", &self.state.root)
            .field("contexts", &self.contexts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LlbWorker {
    pub fn new(
        state: State,
        contexts: HashMap<String, ContextSource>,
        executor: Arc<dyn Executor>,
        exec: ExecSettings,
    ) -> LlbWorker {
        LlbWorker {
            state,
            contexts,
            executor,
            exec,
            downloads: Mutex::new(HashMap::new()),
            git_commits: Mutex::new(HashMap::new()),
            resolved: Mutex::default(),
            image_layers: None,
            imported: Arc::default(),
            used_cache_mounts: Mutex::default(),
            fresh_cache_mounts: Mutex::default(),
            explainer: None,
            seen: Mutex::default(),
            explanations: Mutex::default(),
            views: std::sync::OnceLock::new(),
        }
    }

    /// Where steps leave their trees for the next step (native snapshotter
    /// only; none if it cannot be made: then every step copies its stack).
    pub(crate) fn views_dir(&self) -> Option<&std::path::Path> {
        self.views
            .get_or_init(|| {
                (kiln_snapshot::snapshotter() == kiln_snapshot::Snapshotter::Native)
                    .then(|| self.state.scratch().ok())
                    .flatten()
            })
            .as_ref()
            .map(tempfile::TempDir::path)
    }

    /// Keeps a record of every step that runs and says why it ran, compared
    /// with its last run (`kiln build --explain`).
    pub fn with_explainer(mut self, explainer: crate::explain::Explainer) -> LlbWorker {
        self.explainer = Some(explainer);
        self
    }

    /// Why each step that ran did, in the order they ran: (step name, reason).
    pub fn explanations(&self) -> Vec<(String, String)> {
        self.explanations
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Directory names of the cache mounts this build's steps mounted.
    pub fn used_cache_mounts(&self) -> Vec<String> {
        self.used_cache_mounts
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Answers cache lookups that hit an imported cache: their layers are
    /// fetched from it when needed.
    pub fn with_imported(mut self, imported: Arc<crate::cache::Imported>) -> LlbWorker {
        self.imported = imported;
        self
    }

    /// `value`, just built by `v`: starts computing its new layer's diffID
    /// when the layer goes into the image.
    fn built(&self, v: &Vertex, value: Value) -> Value {
        if let (Some((vertices, clamp)), Value::Fs { layers }) = (&self.image_layers, &value)
            && vertices.contains(&v.digest)
            && let Some(Ok(last)) = layers.last().map(|l| LayerId::parse(l))
        {
            kiln_store::layers::prefetch_diff_id(&self.state, last, *clamp);
        }
        value
    }

    /// Prefetch the diffIDs of the layers `vertices` build, for an image
    /// with mtime clamp `clamp`.
    pub fn with_image_layers(
        mut self,
        vertices: std::collections::HashSet<Digest>,
        clamp: Option<i64>,
    ) -> LlbWorker {
        self.image_layers = Some((vertices, clamp));
        self
    }

    /// The context named `name`.
    pub(crate) fn context(&self, name: &str) -> Result<&ContextSource, Error> {
        self.contexts.get(name).ok_or_else(|| {
            Error::Other(format!(
                "build context {name:?} is not defined (no --build-context gives it)"
            ))
        })
    }

    /// Saves the stat caches of the contexts (called once the build is done).
    pub fn save_stat_caches(&self) -> Result<(), Error> {
        for c in self.contexts.values() {
            if let Ok(cache) = c.stat_cache.lock() {
                cache.save()?;
            }
        }
        Ok(())
    }

    /// The layers of an input that must be a filesystem.
    pub(crate) fn layers_of(&self, v: &Value) -> Result<Vec<LayerId>, Error> {
        match v {
            Value::Fs { layers } => layers
                .iter()
                .map(|l| crate::cache::materialize(&self.state, &self.imported, l))
                .collect(),
            Value::Context { name } => Err(Error::Other(format!(
                "build context {name:?} used where a filesystem is expected"
            ))),
        }
    }

    /// The git commits and download digests this build's sources resolved
    /// to (the provenance's materials).
    pub(crate) fn resolved_sources(&self) -> crate::attest::Resolved {
        self.resolved
            .lock()
            .map(|r| crate::attest::Resolved {
                git: r.git.clone(),
                http: r.http.clone(),
            })
            .unwrap_or_default()
    }

    /// The content digest of the whole build context `name` (the
    /// provenance's `kiln-local://NAME` material).
    pub(crate) fn context_digest(&self, name: &str) -> Result<Digest, Error> {
        let ctx = self.context(name)?;
        let mut cache = ctx
            .stat_cache
            .lock()
            .map_err(|_| Error::Other("stat cache lock poisoned".to_owned()))?;
        crate::attest::context_digest(&ctx.tree, &mut cache)
    }

    /// Content digests of what `op`'s copy actions read from input `index`
    /// (a context): one digest per action, in action order. With `files`,
    /// also each file read and its digest (for `--explain`; only for steps
    /// that run, so that a cached rebuild of a large context pays nothing).
    fn context_reads(
        &self,
        actions: &[FileAction],
        index: u32,
        name: &str,
        mut files: Option<&mut std::collections::BTreeMap<String, String>>,
    ) -> Result<Vec<Digest>, Error> {
        let ctx = self.context(name)?;
        let mut out = Vec::new();
        for a in actions {
            let FileAction::Copy(c) = a else { continue };
            if c.from != Some(index) {
                continue;
            }
            let sources = fileop::expand(&ctx.tree, c)?;
            let filter = fileop::filter(c)?;
            let mut cache = ctx
                .stat_cache
                .lock()
                .map_err(|_| Error::Other("stat cache lock poisoned".to_owned()))?;
            let opts = kiln_context::DigestOptions {
                include_ownership: false,
            };
            let digest = if let Some(files) = files.as_deref_mut() {
                let (digest, _, listing) = ctx
                    .tree
                    .digest_listed(&sources, &filter, &mut cache, &opts)?;
                for (path, sha) in listing {
                    files.insert(
                        String::from_utf8_lossy(&path).into_owned(),
                        Digest::from_bytes(sha).hex()[..16].to_owned(),
                    );
                }
                digest
            } else {
                ctx.tree.digest(&sources, &filter, &mut cache, &opts)?.0
            };
            out.push(digest);
        }
        Ok(out)
    }
}

impl LlbWorker {
    /// A filesystem value mounted read-only at `mnt` (created here), as the
    /// tree a copy reads from; unmounted when the guard is.
    pub(crate) fn mount_read_only(
        &self,
        value: &Value,
        mnt: &std::path::Path,
    ) -> Result<(Tree, kiln_snapshot::MountGuard), Error> {
        let layers = self.layers_of(value)?;
        std::fs::create_dir(mnt).map_err(|e| Error::Io {
            what: format!("creating {}", mnt.display()),
            source: e,
        })?;
        let guard = kiln_snapshot::mount_layers(&self.state.layer_dirs(&layers)?, None, mnt)?;
        Ok((Tree::new(mnt.to_path_buf(), None), guard))
    }

    /// Content digests of what `actions`' copies read from input `index`, a
    /// filesystem (a stage or an image): one per copy, with ownership (COPY
    /// --from keeps it). The filesystem is mounted read-only for the walk.
    fn fs_reads(
        &self,
        actions: &[FileAction],
        index: u32,
        value: &Value,
    ) -> Result<Vec<Digest>, Error> {
        let scratch = self.state.scratch()?;
        let (tree, guard) = self.mount_read_only(value, &scratch.path().join("src"))?;
        let mut cache = StatCache::in_memory();
        let opts = kiln_context::DigestOptions {
            include_ownership: true,
        };
        let digests = actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) if c.from == Some(index) => Some(c),
                _ => None,
            })
            .map(|c| {
                let sources = fileop::expand(&tree, c)?;
                let filter = fileop::filter(c)?;
                Ok(tree.digest(&sources, &filter, &mut cache, &opts)?.0)
            })
            .collect::<Result<Vec<_>, Error>>();
        guard.unmount()?;
        digests
    }
}

impl kiln_solver::Worker for LlbWorker {
    type Payload = Vertex;
    type Value = Value;
    type Error = Error;

    fn cache_key(
        &self,
        v: &Vertex,
        inputs: &[KeyInput<Value>],
        _cx: &Cx,
    ) -> Result<Option<Key>, Error> {
        let key = self.key_of(v, inputs)?;
        if self.explainer.is_some()
            && let Ok(mut m) = self.seen.lock()
        {
            m.insert(
                v.digest,
                Seen {
                    key,
                    files: HashMap::new(),
                },
            );
        }
        Ok(key)
    }

    fn execute(&self, v: &Vertex, inputs: &[Resolved<Value>], cx: &Cx) -> Result<Value, Error> {
        let Some(x) = &self.explainer else {
            return self.run_op(v, inputs, cx);
        };
        if matches!(v.op, Op::Source(SourceOp::Local { .. })) {
            return self.run_op(v, inputs, cx);
        }
        let mut seen = self
            .seen
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&v.digest))
            .unwrap_or_default();
        // The context files the step reads, listed now that it runs (the
        // stat cache makes this a walk, not a read).
        if let Op::File(f) = &v.op {
            for (i, input) in inputs.iter().enumerate() {
                if let (None, Value::Context { name }) = (&input.key, &input.value) {
                    let files = seen.files.entry(i as u32).or_default();
                    self.context_reads(&f.actions, i as u32, name, Some(files))?;
                }
            }
        }
        let pairs: Vec<(Option<Key>, &Value)> = inputs.iter().map(|r| (r.key, &r.value)).collect();
        let record = x.record(v, seen.key, &pairs, &|i| seen.files.get(&i).cloned());
        let why = x.explain(&self.state, v, &record);
        let value = self.run_op(v, inputs, cx)?;
        if let Some((why, site)) = why {
            // Kept only once the step succeeded: the next run compares with it.
            let _ = crate::explain::keep(&site, &record);
            if let Ok(mut e) = self.explanations.lock() {
                e.push((v.meta.name.clone(), why));
            }
        }
        Ok(value)
    }

    fn is_valid(&self, value: &Value) -> bool {
        match value {
            Value::Fs { layers } => layers
                .iter()
                .all(|l| crate::cache::layer_available(&self.state, &self.imported, l)),
            Value::Context { .. } => false,
        }
    }

    fn is_heavy(&self, v: &Vertex) -> bool {
        matches!(v.op, Op::Exec(_))
    }

    /// A file op copying from a stage or an image (an input with a key that is
    /// not the op's base): its content key names the files it copies, so a
    /// rebuilt stage whose copied files did not change spares the copy and
    /// every step after it (BuildKit's content-based cache keys).
    ///
    /// A RUN step that bind-mounts a stage or an image (`RUN
    /// --mount=from=STAGE`, read-only or not: a writable bind mount's changes
    /// are thrown away) is content-keyed the same way: its content key names
    /// what each such mount shows, so a rebuilt stage whose mounted directory
    /// did not change spares the step.
    fn keys_by_content(&self, v: &Vertex, inputs: &[KeyInput<Value>]) -> bool {
        if let Op::Exec(e) = &v.op {
            return inputs.iter().enumerate().any(|(i, input)| {
                input.key.is_some() && crate::mounts::content_mounted(e, i as u32)
            });
        }
        let Op::File(f) = &v.op else { return false };
        f.actions.iter().any(|a| match a {
            FileAction::Copy(c) => c.from.is_some_and(|j| {
                Some(j) != f.base && inputs.get(j as usize).is_some_and(|i| i.key.is_some())
            }),
            _ => false,
        })
    }

    fn content_key(
        &self,
        v: &Vertex,
        inputs: &[Resolved<Value>],
        _cx: &Cx,
    ) -> Result<Option<Key>, Error> {
        if let Op::Exec(e) = &v.op {
            let mut parts = Vec::with_capacity(inputs.len());
            for (i, input) in inputs.iter().enumerate() {
                let i = i as u32;
                parts.push(match (&input.key, &input.value) {
                    (None, Value::Context { name }) => InputPart::Content(
                        e.mounts
                            .iter()
                            .filter(|m| m.input == Some(i))
                            .map(|m| crate::mounts::context_digest(self, name, m))
                            .collect::<Result<_, _>>()?,
                    ),
                    (None, _) => return Ok(None),
                    (Some(_), value) if crate::mounts::content_mounted(e, i) => {
                        InputPart::Content(crate::mounts::fs_digests(self, e, i, value)?)
                    }
                    (Some(k), _) => InputPart::Key(*k),
                });
            }
            return Ok(Some(keys::op_key(&v.op, &parts)));
        }
        let Op::File(f) = &v.op else { return Ok(None) };
        let mut parts = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let i = i as u32;
            match (&input.key, &input.value) {
                (None, Value::Context { name }) => {
                    parts.push(InputPart::Content(
                        self.context_reads(&f.actions, i, name, None)?,
                    ));
                }
                (None, _) => return Ok(None),
                (Some(k), _) if Some(i) == f.base => parts.push(InputPart::Key(*k)),
                (Some(_), value) => {
                    parts.push(InputPart::Content(self.fs_reads(&f.actions, i, value)?));
                }
            }
        }
        Ok(Some(keys::op_key(&v.op, &parts)))
    }
}

impl LlbWorker {
    fn key_of(&self, v: &Vertex, inputs: &[KeyInput<Value>]) -> Result<Option<Key>, Error> {
        match &v.op {
            Op::Source(SourceOp::Local { .. }) => Ok(None),
            Op::Source(
                s @ SourceOp::Image {
                    digest, reference, ..
                },
            ) => match digest {
                Some(d) => Ok(Some(keys::image_key(d, s))),
                None => Err(Error::Other(format!(
                    "{reference}: image not found in the local store"
                ))),
            },
            Op::Source(SourceOp::Http { .. }) => http::cache_key(self, v).map(Some),
            Op::Source(SourceOp::Git { .. }) => git::cache_key(self, v).map(Some),
            Op::File(f) => {
                let mut parts = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    match (&input.key, &input.value) {
                        (Some(k), _) => parts.push(InputPart::Key(*k)),
                        (None, Some(Value::Context { name })) => {
                            parts.push(InputPart::Content(
                                self.context_reads(&f.actions, i as u32, name, None)?,
                            ));
                        }
                        (None, _) => return Ok(None),
                    }
                }
                Ok(Some(keys::op_key(&v.op, &parts)))
            }
            Op::Exec(e) => {
                // Refused even when cached, as BuildKit checks entitlements
                // before solving.
                exec::check_supported(self, e)?;
                let mut parts = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    match (&input.key, &input.value) {
                        (Some(k), _) => parts.push(InputPart::Key(*k)),
                        // A context mounted by the step: what it shows.
                        (None, Some(Value::Context { name })) => {
                            let mut reads = Vec::new();
                            for m in e.mounts.iter().filter(|m| m.input == Some(i as u32)) {
                                reads.push(crate::mounts::context_digest(self, name, m)?);
                            }
                            parts.push(InputPart::Content(reads));
                        }
                        (None, _) => return Ok(None),
                    }
                }
                Ok(Some(keys::op_key(&v.op, &parts)))
            }
            Op::Merge(_) => {
                let mut parts = Vec::with_capacity(inputs.len());
                for input in inputs {
                    match input.key {
                        Some(k) => parts.push(InputPart::Key(k)),
                        None => return Ok(None),
                    }
                }
                Ok(Some(keys::op_key(&v.op, &parts)))
            }
        }
    }

    /// Runs `v` (what `execute` does, without the explanation).
    fn run_op(&self, v: &Vertex, inputs: &[Resolved<Value>], cx: &Cx) -> Result<Value, Error> {
        match &v.op {
            Op::Source(SourceOp::Local { name }) => {
                self.context(name)?;
                Ok(Value::Context { name: name.clone() })
            }
            Op::Source(s @ SourceOp::Image { .. }) => image::source(self, s),
            Op::Source(SourceOp::Http { .. }) => http::execute(self, v),
            Op::Source(SourceOp::Git { .. }) => git::execute(self, v),
            Op::File(f) => Ok(self.built(v, fileop::execute(self, f, inputs, cx)?)),
            Op::Exec(e) => {
                Ok(self.built(v, exec::execute(self, e, inputs, v.meta.ignore_cache, cx)?))
            }
            Op::Merge(m) => {
                let mut layers = Vec::new();
                for i in &m.inputs {
                    let input = inputs.get(*i as usize).ok_or_else(|| {
                        Error::Other(format!("merge refers to missing input #{i}"))
                    })?;
                    match &input.value {
                        Value::Fs { layers: l } => layers.extend(l.iter().cloned()),
                        Value::Context { name } => {
                            return Err(Error::Other(format!(
                                "merge of build context {name:?} is not supported"
                            )));
                        }
                    }
                }
                Ok(Value::Fs { layers })
            }
        }
    }
}
