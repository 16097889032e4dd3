//! [`LlbWorker`]: the solver's worker for kiln-llb vertices, and what one
//! build's ops share (the state, the contexts, the executor, what keying
//! found). How it answers the solver, dispatching each op kind to its
//! module, is [`crate::dispatch`]'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_context::{StatCache, Tree};
use kiln_executor::Executor;
use kiln_llb::Digest;
use kiln_snapshot::LayerId;
use kiln_solver::Key;

use crate::error::{BuildContextError, Error, InternalError};
use crate::state::State;
use crate::value::Value;

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
    pub grants: std::sync::Arc<crate::grants::ExecGrants>,
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
    pub(crate) downloads: Mutex<HashMap<Digest, crate::resolved::Download>>,
    /// Git refs resolved while computing a key, for `execute`.
    pub(crate) git_commits: Mutex<HashMap<Digest, crate::resolved::GitCommit>>,
    /// Git commits and download digests the keys were made of, kept for
    /// the provenance (`attest`).
    pub(crate) resolved: Mutex<crate::resolved::Resolved>,
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
    pub(crate) seen: Mutex<HashMap<Digest, Seen>>,
    pub(crate) explanations: Mutex<Vec<(String, String)>>,
    /// With the native snapshotter, a scratch directory where a step leaves
    /// its tree for the next step of its chain (`kiln_snapshot::native::Kept`);
    /// made on first use, removed with the worker.
    views: std::sync::OnceLock<Option<tempfile::TempDir>>,
}

/// What keying a vertex saw, and the context files it reads (listed when
/// it runs), for its explanation.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) key: Option<Key>,
    /// Context files read, per input index: path → digest (hex prefix).
    pub(crate) files: HashMap<u32, std::collections::BTreeMap<String, String>>,
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
                self.state
                    .snapshotter
                    .keeps_trees()
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
            BuildContextError::NotDefined {
                name: name.to_owned(),
            }
            .into()
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
            Value::Context { name } => {
                Err(BuildContextError::NotAFilesystem { name: name.clone() }.into())
            }
        }
    }

    /// The git commits and download digests this build's sources resolved
    /// to (the provenance's materials).
    pub(crate) fn resolved_sources(&self) -> crate::resolved::Resolved {
        self.resolved
            .lock()
            .map(|r| crate::resolved::Resolved {
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
            .map_err(|_| InternalError::Poisoned("stat cache"))?;
        crate::resolved::context_digest(&ctx.tree, &mut cache)
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
        let guard = self
            .state
            .snapshotter
            .mount(&self.state.layer_dirs(&layers)?, None, mnt)?;
        Ok((Tree::new(mnt.to_path_buf(), None), guard))
    }
}
