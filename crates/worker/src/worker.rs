//! [`LlbWorker`]: the solver's worker for kiln-llb vertices, and what one
//! build's ops share (the state, the contexts, the executor, what keying
//! found). How it answers the solver, lending each op kind what it needs
//! and sending it to its module of [`crate::ops`], is `dispatch`'s (a
//! child module, so that the fields stay private to the two).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_executor::Executor;
use kiln_llb::Digest;
use kiln_snapshot::LayerId;
use kiln_solver::Key;

use crate::error::{Error, InternalError};
use crate::ops::exec::ExecSettings;
use crate::ops::mounts::CacheMounts;
use crate::ops::shared::{ContextSource, Contexts, Layers, Views};
use crate::resolved::{Download, GitCommit, Resolved};
use crate::state::State;
use crate::value::Value;

mod dispatch;

/// The worker of one build. Its fields are its own and its dispatch's
/// (`worker/dispatch.rs`), which lends each op what it needs.
pub struct LlbWorker {
    state: State,
    contexts: Contexts,
    executor: Arc<dyn Executor>,
    exec: ExecSettings,
    /// Downloads made while computing a key, waiting for `execute`.
    /// (Keyed by vertex digest.)
    downloads: Mutex<HashMap<Digest, Download>>,
    /// Git refs resolved while computing a key, for `execute`.
    git_commits: Mutex<HashMap<Digest, GitCommit>>,
    /// Git commits and download digests the keys were made of, kept for
    /// the provenance (`attest`).
    resolved: Mutex<Resolved>,
    /// Vertices whose new layer goes into the image being built, and the
    /// image's mtime clamp: their diffIDs are computed as soon as they are
    /// built (see `image::prefetch_diff_id`).
    image_layers: Option<(std::collections::HashSet<Digest>, Option<i64>)>,
    /// Records of `--cache-from` caches, whose layers are fetched when a
    /// step needs them.
    imported: Arc<crate::cache::Imported>,
    /// The cache mounts this build's steps mounted, and the fresh ones of
    /// its `--no-cache` steps (see `ops::mounts::prepare`).
    cache_mounts: CacheMounts,
    /// Records why steps run (`--explain`), with what keys and context
    /// files were seen while keying.
    explainer: Option<crate::explain::Explainer>,
    seen: Mutex<HashMap<Digest, Seen>>,
    explanations: Mutex<Vec<(String, String)>>,
    /// With the native snapshotter, where a step leaves its tree for the
    /// next step of its chain; made on first use, removed with the worker.
    views: Views,
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
            .field("contexts", &self.contexts.names().collect::<Vec<_>>())
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
            contexts: Contexts::new(contexts),
            executor,
            exec,
            downloads: Mutex::new(HashMap::new()),
            git_commits: Mutex::new(HashMap::new()),
            resolved: Mutex::default(),
            image_layers: None,
            imported: Arc::default(),
            cache_mounts: CacheMounts::default(),
            explainer: None,
            seen: Mutex::default(),
            explanations: Mutex::default(),
            views: Views::default(),
        }
    }

    /// The layers of values, as the ops see them.
    fn layers(&self) -> Layers<'_> {
        Layers::new(&self.state, &self.imported, &self.views)
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
        self.cache_mounts.used()
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
        self.layers().layers_of(v)
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
        let ctx = self.contexts.get(name)?;
        let mut cache = ctx
            .stat_cache
            .lock()
            .map_err(|_| InternalError::Poisoned("stat cache"))?;
        crate::resolved::context_digest(&ctx.tree, &mut cache)
    }
}
