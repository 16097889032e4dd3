//! What several op families need, as small values the dispatch lends them:
//! the build contexts a graph may read ([`Contexts`]) and the layers of the
//! state as trees ([`Layers`]: the state, the imported caches whose layers
//! are fetched on use, and the native snapshotter's [`Views`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use kiln_context::{DigestOptions, Entry, Source, StatCache, Tree};
use kiln_llb::op::Copy;
use kiln_snapshot::{LayerId, MountGuard};

use crate::cache::Imported;
use crate::error::{BuildContextError, Error};
use crate::state::State;
use crate::value::Value;

/// A build context the graph may read (`context`, or a `--build-context`).
#[derive(Debug)]
pub struct ContextSource {
    /// The directory seen through its `.dockerignore`.
    pub tree: Tree,
    /// Its stat cache, saved when the build ends.
    pub stat_cache: Mutex<StatCache>,
    /// Walks of a copy's source that a step about to run made for its
    /// `--explain` listing, left for that copy to take rather than walk
    /// the context again.
    walks: Mutex<HashMap<(Copy, PathBuf), Vec<Entry>>>,
}

impl ContextSource {
    pub fn new(tree: Tree, stat_cache: StatCache) -> ContextSource {
        ContextSource {
            tree,
            stat_cache: Mutex::new(stat_cache),
            walks: Mutex::default(),
        }
    }

    /// Leaves the walk of `source` made for the copy `c`.
    pub(crate) fn leave_walk(&self, c: &Copy, source: &Source, entries: Vec<Entry>) {
        if let Ok(mut w) = self.walks.lock() {
            w.insert((c.clone(), source.host_path.clone()), entries);
        }
    }

    /// The walk of `source` left for the copy `c`, if any: taken, so each
    /// walk serves one copy and none outlives it.
    pub(crate) fn take_walk(&self, c: &Copy, source: &Source) -> Option<Vec<Entry>> {
        let mut w = self.walks.lock().ok()?;
        w.remove(&(c.clone(), source.host_path.clone()))
    }
}

/// The build contexts of one build, by name.
#[derive(Debug, Default)]
pub(crate) struct Contexts(HashMap<String, ContextSource>);

impl Contexts {
    pub(crate) fn new(contexts: HashMap<String, ContextSource>) -> Contexts {
        Contexts(contexts)
    }

    /// The context named `name`.
    pub(crate) fn get(&self, name: &str) -> Result<&ContextSource, Error> {
        self.0.get(name).ok_or_else(|| {
            BuildContextError::NotDefined {
                name: name.to_owned(),
            }
            .into()
        })
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &ContextSource> {
        self.0.values()
    }
}

/// With the native snapshotter, a scratch directory where a step leaves
/// its tree for the next step of its chain (`kiln_snapshot::native::Kept`);
/// made on first use, removed with its owner (the worker).
#[derive(Debug, Default)]
pub(crate) struct Views(OnceLock<Option<tempfile::TempDir>>);

impl Views {
    /// The directory (none unless `state`'s snapshotter keeps trees, or if
    /// it cannot be made: then every step copies its stack).
    fn dir(&self, state: &State) -> Option<&Path> {
        self.0
            .get_or_init(|| {
                state
                    .snapshotter
                    .keeps_trees()
                    .then(|| state.scratch().ok())
                    .flatten()
            })
            .as_ref()
            .map(tempfile::TempDir::path)
    }
}

/// The layers of filesystem values, and trees of them: what file ops, RUN
/// steps and their mounts, and the content keys of copies read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layers<'a> {
    pub(crate) state: &'a State,
    /// Records of `--cache-from` caches, whose layers are fetched when a
    /// step needs them.
    pub(crate) imported: &'a Imported,
    views: &'a Views,
}

impl<'a> Layers<'a> {
    pub(crate) fn new(state: &'a State, imported: &'a Imported, views: &'a Views) -> Layers<'a> {
        Layers {
            state,
            imported,
            views,
        }
    }

    /// Where steps leave their trees for the next step (native snapshotter
    /// only; none if it cannot be made: then every step copies its stack).
    pub(crate) fn views_dir(&self) -> Option<&'a Path> {
        self.views.dir(self.state)
    }

    /// The layers of an input that must be a filesystem.
    pub(crate) fn layers_of(&self, v: &Value) -> Result<Vec<LayerId>, Error> {
        match v {
            Value::Fs { layers } => layers
                .iter()
                .map(|l| crate::cache::materialize(self.state, self.imported, l))
                .collect(),
            Value::Context { name } => {
                Err(BuildContextError::NotAFilesystem { name: name.clone() }.into())
            }
        }
    }

    /// A filesystem value mounted read-only at `mnt` (created here), as the
    /// tree a copy reads from; unmounted when the guard is.
    pub(crate) fn mount_read_only(
        &self,
        value: &Value,
        mnt: &Path,
    ) -> Result<(Tree, MountGuard), Error> {
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

    /// Content digests of a filesystem value's files, for a cache key:
    /// `digests` runs with the value mounted read-only, an in-memory stat
    /// cache and ownership included (a copy or mount from a stage keeps
    /// it); the value is unmounted afterwards, whatever `digests` returned.
    pub(crate) fn digest_mounted<T>(
        &self,
        value: &Value,
        digests: impl FnOnce(&Tree, &mut StatCache, &DigestOptions) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let scratch = self.state.scratch()?;
        let (tree, guard) = self.mount_read_only(value, &scratch.path().join("src"))?;
        let mut cache = StatCache::in_memory();
        let opts = DigestOptions {
            include_ownership: true,
        };
        let out = digests(&tree, &mut cache, &opts);
        guard.unmount()?;
        out
    }
}
