//! One build, end to end: the frontend's definition becomes a solver DAG, the
//! solver runs it with an [`LlbWorker`], the target becomes an image in the
//! store, and the outputs are written.
//!
//! [`build`] is the sequence of the phases; each is a method of `Build`,
//! which holds the request and what planning it found.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_context::{StatCache, Tree};
use kiln_executor::Executor;
use kiln_llb::{Definition, Graph, Platform, StageBase, Vertex};
use kiln_oci::History;
use kiln_snapshot::LayerId;
use kiln_solver::{CancelToken, Dag, Event, Node, SolveError, Solver};

pub use crate::export::{Output, platform_dir};

use crate::cache;
use crate::error::{Error, ImageError, InternalError, OutputError, StepError};
use crate::export::Single;
use crate::image::{self, CommitRequest, Committed, StoreResolver};
use crate::ops::exec::ExecSettings;
use crate::ops::shared::ContextSource;
use crate::state::State;
use crate::value::{LayerRef, Value};
use crate::worker::LlbWorker;

/// Everything a build needs besides the state directory.
pub struct BuildRequest {
    pub definition: Definition,
    /// A multi-platform build's other target platforms (`--platform a,b`):
    /// their definitions, planned separately; their graphs are merged into
    /// one DAG ([`dag_of_platforms`]), so what they share is built once.
    pub more_platforms: Vec<Definition>,
    /// A multi-platform result even for one platform (an index, as
    /// `BUILDKIT_MULTI_PLATFORM=1` asks); always so with `more_platforms`.
    pub multi_platform: bool,
    /// The main build context (`context` in the graph).
    pub context_dir: PathBuf,
    /// The Dockerfile, for `<Dockerfile>.dockerignore`.
    pub dockerfile: Option<PathBuf>,
    /// Whether the main context's `.dockerignore` applies: not for a
    /// remote context made into a directory (a git or HTTP URL, a tar on
    /// stdin), which BuildKit reads whole.
    pub context_dockerignore: bool,
    /// What names a remote main context in `--explain` records (its URL
    /// and `-f`): the directory it was fetched into changes every build.
    pub context_scope: Option<String>,
    /// Local directories of `--build-context`, by local source name; each
    /// is seen through its own `.dockerignore`.
    pub local_contexts: Vec<(String, PathBuf)>,
    pub outputs: Vec<Output>,
    /// Bound on RUN steps running at once.
    pub max_parallelism: usize,
    /// `SOURCE_DATE_EPOCH`: creation times and the mtime clamp of layers.
    pub source_date_epoch: Option<i64>,
    /// `rewrite-timestamp=true`: the manifests mark the layers the build
    /// made as clamped to `source_date_epoch` (see `export/manifest.rs`).
    pub rewrite_timestamp: bool,
    /// The time the build started (used when there is no epoch).
    pub now: (i64, u32),
    pub executor: Arc<dyn Executor>,
    /// Hostname of RUN steps.
    pub hostname: String,
    /// Memory and process limits of RUN steps (never part of a cache key).
    pub limits: kiln_executor::Limits,
    /// `--shm-size` and `--ulimit` of RUN steps (never part of a cache key).
    pub resources: kiln_executor::Resources,
    /// Secrets, SSH agents and entitlements of RUN steps.
    pub grants: crate::grants::ExecGrants,
    /// The registry client, for pushes.
    pub registry: Option<kiln_registry::Client>,
    /// Where push progress lines go.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
    /// Where the bytes of archives the outputs write are reported (pushes
    /// report theirs through the registry client's own sink).
    pub transfers: Option<kiln_registry::ProgressSink>,
    /// `--cache-from`: caches whose records answer lookups the local cache
    /// cannot.
    pub cache_from: Vec<crate::cache::CacheFrom>,
    /// `--cache-to`: where the build's cache records go.
    pub cache_to: Vec<crate::cache::CacheTo>,
    /// `--provenance`, `--sbom`, `--attest`, `--annotation` (the cli checks
    /// them against the outputs first: `export::check_attestations`).
    pub attest: crate::attest::AttestRequest,
}

impl std::fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRequest")
            .field("context_dir", &self.context_dir)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image, when an output needed one (a multi-platform build's
    /// first platform).
    pub image: Option<Committed>,
    /// Every platform's image of a multi-platform build, in `--platform`
    /// order; empty for a single-platform build.
    pub platform_images: Vec<(Platform, Committed)>,
    /// The manifests the outputs wrote (OCI and docker archives/layouts).
    pub manifests: Vec<kiln_oci::Descriptor>,
    /// Why each step that ran did (`--explain`): (step name, reason), in the
    /// order they ran.
    pub explanations: Vec<(String, String)>,
}

/// The solver DAG of a definition: one node per vertex, in the graph's
/// (topological) order.
pub fn dag(def: &Definition) -> Result<Dag<Vertex>, Error> {
    let mut index = HashMap::new();
    let mut nodes = Vec::with_capacity(def.graph.len());
    for (i, v) in def.graph.vertices().enumerate() {
        let mut inputs = Vec::with_capacity(v.inputs.len());
        for d in &v.inputs {
            inputs.push(*index.get(d).ok_or(InternalError::UnknownInput {
                vertex: v.digest,
                input: *d,
            })?);
        }
        index.insert(v.digest, i);
        nodes.push(Node {
            payload: v.clone(),
            inputs,
            ignore_cache: v.meta.ignore_cache,
            name: v.meta.name.clone(),
        });
    }
    Dag::new(nodes).map_err(|e| InternalError::from(e).into())
}

/// The DAG of a (multi-platform) build: the graphs of every target
/// platform's definition merged, identical vertices (a stage built for the
/// build platform, the context it copies) collapsing into one.
pub fn dag_of_platforms(first: &Definition, more: &[Definition]) -> Result<Dag<Vertex>, Error> {
    dag_with(first, more, &[])
}

/// [`dag_of_platforms`] with more graphs merged in (an SBOM generator's
/// scans, [`crate::attest::scan_graph`]).
pub fn dag_with(
    first: &Definition,
    more: &[Definition],
    extra: &[Graph],
) -> Result<Dag<Vertex>, Error> {
    if more.is_empty() && extra.is_empty() {
        return dag(first);
    }
    let mut merged = first.clone();
    for d in more {
        merged.graph.merge(&d.graph);
    }
    for g in extra {
        merged.graph.merge(g);
    }
    dag(&merged)
}

/// What a multi-platform result cannot be written as (checked before the
/// build starts).
fn check_multi_platform_outputs(req: &BuildRequest) -> Result<(), Error> {
    if req.more_platforms.is_empty() && !req.multi_platform {
        return Ok(());
    }
    if let Some(o) = req.outputs.iter().find(|o| !o.holds_index()) {
        return Err(OutputError::NoManifestList { kind: o.kind() }.into());
    }
    Ok(())
}

/// The history of the image a stage's chain of `FROM`s starts from.
fn base_history(state: &State, def: &Definition, stage: usize) -> Result<Vec<History>, Error> {
    let mut seen = 0;
    let mut s = &def.stages[stage];
    loop {
        match &s.base {
            StageBase::Scratch => return Ok(Vec::new()),
            StageBase::Image { digest, reference } => {
                let Some(d) = digest else {
                    return Err(ImageError::NotResolved {
                        reference: reference.clone(),
                    }
                    .into());
                };
                let id = d.parse().map_err(|source| ImageError::BadDigest {
                    reference: reference.clone(),
                    source,
                })?;
                return Ok(kiln_store::layers::load_config(state, &id)?.history);
            }
            StageBase::Stage { name } => {
                seen += 1;
                let next = def
                    .stages
                    .iter()
                    .find(|st| st.name.eq_ignore_ascii_case(name))
                    .filter(|_| seen <= def.stages.len())
                    .ok_or_else(|| ImageError::StageNotFound { name: name.clone() })?;
                s = next;
            }
        }
    }
}

/// Runs the build. `events` receives the solver's progress; `cancel` stops it.
///
/// The phases, in order: plan (which node is each platform's target, what
/// the request cannot do), the worker (contexts, explainer, the image's
/// chain), the imported caches, the solve, each platform's layers, then,
/// unless cancelled, the images, the outputs (with their attestations) and
/// the cache exports.
pub async fn build(
    state: &State,
    dag: Arc<Dag<Vertex>>,
    req: BuildRequest,
    events: Arc<dyn Fn(Event) + Send + Sync>,
    cancel: &CancelToken,
) -> Result<BuildResult, Error> {
    let b = Build::plan(state, &req, &dag, cancel)?;
    let worker = b.worker()?;
    let imported = b.import_caches()?;
    let worker = Arc::new(worker.with_imported(imported.clone()));
    let cache = Arc::new(cache::RecordingCache::new(
        state.cache.clone(),
        imported.clone(),
    ));
    let values = b.solve(&worker, cache.clone(), events).await?;
    let platforms = b.platform_layers(&worker, &values)?;
    let scans = b.scan_layers(&worker, &values)?;
    // Ctrl-C after the solve stops the outputs too, between their phases.
    b.stop()?;
    let seen = b.seen(&cache);
    let images = b.commit_images(&platforms, &seen)?;
    let manifests = if b.multi {
        b.write_multi(&worker, &images, &platforms, &scans)?
    } else {
        b.write_single(&worker, &images, &platforms, &scans)?
    };
    b.export_caches(&worker, &imported, &seen, &platforms, images.inline_records)?;
    Ok(BuildResult {
        image: images.image,
        platform_images: images.platform_images,
        manifests,
        explanations: worker.explanations(),
    })
}

/// One build's request and what its plan found, shared by its phases.
struct Build<'a> {
    state: &'a State,
    req: &'a BuildRequest,
    dag: &'a Arc<Dag<Vertex>>,
    cancel: &'a CancelToken,
    /// Every target platform's definition, in `--platform` order.
    defs: Vec<&'a Definition>,
    /// Whether the result is an index.
    multi: bool,
    /// Each platform's target node (none for a definition without one).
    targets: Vec<Option<usize>>,
    /// With an SBOM generator, the node of its scan of each platform.
    scans: Vec<usize>,
    /// Whether an inline cache is asked for (`--cache-to type=inline`).
    inline: bool,
}

/// A platform's result: its layers as the solve gave them (an imported
/// cache hit by diffID), and unpacked as snapshots.
type PlatformLayers = (Vec<LayerRef>, Vec<LayerId>);

/// No layers (a platform without a target).
static NO_LAYERS: PlatformLayers = (Vec::new(), Vec::new());

/// The records and links the solve saw ([`cache::RecordingCache`]), for an
/// inline cache and the exports.
struct Seen {
    records: Vec<(kiln_solver::Key, Vec<LayerRef>)>,
    links: Vec<(kiln_solver::Key, kiln_solver::Key)>,
}

/// The images a build committed.
struct Images {
    /// The first platform's, when an output needs an image.
    image: Option<Committed>,
    /// The records of the first platform's inline cache, if one was written.
    inline_records: Option<usize>,
    /// Every platform's image of a multi-platform build.
    platform_images: Vec<(Platform, Committed)>,
}

impl<'a> Build<'a> {
    /// The plan: what the outputs cannot hold, each platform's target node,
    /// an inline cache without an image to put it in; all refused before
    /// anything runs.
    fn plan(
        state: &'a State,
        req: &'a BuildRequest,
        dag: &'a Arc<Dag<Vertex>>,
        cancel: &'a CancelToken,
    ) -> Result<Build<'a>, Error> {
        check_multi_platform_outputs(req)?;
        let defs: Vec<&Definition> = std::iter::once(&req.definition)
            .chain(&req.more_platforms)
            .collect();
        let multi = defs.len() > 1 || req.multi_platform;
        let mut targets: Vec<Option<usize>> = Vec::with_capacity(defs.len());
        for d in &defs {
            targets.push(match d.target {
                Some(d) => Some(
                    dag.nodes()
                        .iter()
                        .position(|n| n.payload.digest == d)
                        .ok_or(InternalError::TargetNotInGraph { target: d })?,
                ),
                None => None,
            });
        }
        let mut scans = Vec::new();
        for d in req.attest.sbom.iter().flat_map(|s| &s.scans) {
            scans.push(
                dag.nodes()
                    .iter()
                    .position(|n| n.payload.digest == *d)
                    .ok_or(InternalError::TargetNotInGraph { target: *d })?,
            );
        }
        let inline = req.cache_to.iter().any(|t| t.location.is_inline());
        if inline && !req.outputs.iter().any(|o| o.needs_image()) {
            return Err(OutputError::InlineCacheWithoutImage.into());
        }
        Ok(Build {
            state,
            req,
            dag,
            cancel,
            defs,
            multi,
            targets,
            scans,
            inline,
        })
    }

    /// The build contexts: the main one (through its `.dockerignore` unless
    /// it is a remote context) and each `--build-context` directory, with
    /// their stat caches.
    fn contexts(&self) -> Result<HashMap<String, ContextSource>, Error> {
        let (state, req) = (self.state, self.req);
        // Each context is read as one snapshot (`Tree::reading_once`).
        let tree = if req.context_dockerignore {
            Tree::open_context(&req.context_dir, req.dockerfile.as_deref())?
        } else {
            Tree::new(req.context_dir.clone(), None)
        }
        .reading_once();
        let stat_cache = StatCache::load(&state.context_cache(&req.context_dir));
        let mut contexts = HashMap::new();
        contexts.insert("context".to_owned(), ContextSource::new(tree, stat_cache));
        for (name, dir) in &req.local_contexts {
            let tree = Tree::open_context(dir, None)?.reading_once();
            let stat_cache = StatCache::load(&state.context_cache(dir));
            contexts.insert(name.clone(), ContextSource::new(tree, stat_cache));
        }
        Ok(contexts)
    }

    /// The worker of the solve (without the imported caches): the contexts,
    /// the RUN steps' settings, the `--explain` explainer, and the vertices
    /// whose layers go into the image (their diffIDs are computed early).
    fn worker(&self) -> Result<LlbWorker, Error> {
        let (req, dag) = (self.req, self.dag);
        let mut worker = LlbWorker::new(
            self.state.clone(),
            self.contexts()?,
            req.executor.clone(),
            ExecSettings {
                hostname: req.hostname.clone(),
                grants: Arc::new(req.grants.clone()),
                limits: req.limits,
                resources: req.resources.clone(),
            },
        );
        worker = worker.with_explainer(crate::explain::Explainer {
            scope: explain_scope(req),
            names: dag
                .nodes()
                .iter()
                .map(|n| (n.payload.digest, n.name.clone()))
                .collect(),
        });
        if req.outputs.iter().any(|o| o.needs_image()) && self.targets.iter().any(Option::is_some) {
            let mut chain = std::collections::HashSet::new();
            for t in self.targets.iter().flatten() {
                chain.extend(image_chain(dag, *t));
            }
            worker = worker.with_image_layers(chain, req.source_date_epoch);
        }
        Ok(worker)
    }

    /// `--cache-from`: the records of every imported cache, for the first
    /// platform and, from a registry reference that may name an index, for
    /// each other platform too (other caches do not depend on it).
    fn import_caches(&self) -> Result<Arc<cache::Imported>, Error> {
        let (state, req) = (self.state, self.req);
        let mut imported = cache::import(
            &req.cache_from,
            req.registry.as_ref(),
            state,
            &req.definition.target_stage().platform,
            true,
            &*req.log,
        )?;
        let by_platform = req
            .cache_from
            .iter()
            .any(|f| f.location.transport().is_some_and(|t| t.per_platform()));
        if by_platform {
            for d in &req.more_platforms {
                imported.merge(cache::import(
                    &req.cache_from,
                    req.registry.as_ref(),
                    state,
                    &d.target_stage().platform,
                    false,
                    &*req.log,
                )?);
            }
        }
        let imported = Arc::new(imported);
        if !req.cache_from.is_empty() {
            (req.log)(&format!(
                "imported {} cache records and {} cache mounts from --cache-from",
                imported.len(),
                imported.mounts_len()
            ));
        }
        Ok(imported)
    }

    /// The solve: every platform's target and SBOM generator scan, each
    /// node once (platforms may share one), by node. The contexts' stat caches are saved
    /// whether it succeeds or not; a failed step becomes a [`StepError`].
    async fn solve(
        &self,
        worker: &Arc<LlbWorker>,
        cache: Arc<cache::RecordingCache>,
        events: Arc<dyn Fn(Event) + Send + Sync>,
    ) -> Result<HashMap<usize, Vec<LayerRef>>, Error> {
        let solver = Solver::new(worker.clone(), cache, self.req.max_parallelism.max(1));
        let mut unique: Vec<usize> = Vec::new();
        for t in self.targets.iter().flatten().chain(&self.scans) {
            if !unique.contains(t) {
                unique.push(*t);
            }
        }
        let mut values = HashMap::new();
        if unique.is_empty() {
            return Ok(values);
        }
        let solved = solver
            .solve_with_cancel(self.dag.clone(), &unique, events, self.cancel)
            .await;
        worker.save_stat_caches()?;
        let solved = solved.map_err(|e| step_error(self.dag, e))?;
        if solved.len() != unique.len() {
            return Err(InternalError::FewerResults.into());
        }
        for (t, r) in unique.iter().zip(solved) {
            match r.value {
                Value::Fs { layers } => {
                    values.insert(*t, layers);
                }
                Value::Context { .. } => {
                    return Err(OutputError::ContextResult.into());
                }
            }
        }
        Ok(values)
    }

    /// Each platform's layers, in `--platform` order; those of an imported
    /// cache hit are fetched here, the first time their content is needed.
    fn platform_layers(
        &self,
        worker: &LlbWorker,
        values: &HashMap<usize, Vec<LayerRef>>,
    ) -> Result<Vec<PlatformLayers>, Error> {
        let mut platform_layers = Vec::with_capacity(self.defs.len());
        for t in &self.targets {
            let refs = t.and_then(|t| values.get(&t).cloned()).unwrap_or_default();
            let ids = if t.is_some() {
                worker.layers_of(&Value::Fs {
                    layers: refs.clone(),
                })?
            } else {
                Vec::new()
            };
            platform_layers.push((refs, ids));
        }
        Ok(platform_layers)
    }

    /// The root filesystems of the SBOM generator's scans, in `--platform`
    /// order (none without a generator).
    fn scan_layers(
        &self,
        worker: &LlbWorker,
        values: &HashMap<usize, Vec<LayerRef>>,
    ) -> Result<Vec<Vec<LayerId>>, Error> {
        let mut out = Vec::with_capacity(self.scans.len());
        for s in &self.scans {
            let refs = values.get(s).cloned().unwrap_or_default();
            out.push(worker.layers_of(&Value::Fs { layers: refs })?);
        }
        Ok(out)
    }

    /// [`Error::Cancelled`] once the build is cancelled (checked between
    /// the phases after the solve).
    fn stop(&self) -> Result<(), Error> {
        if self.cancel.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The records the solve saw, gathered once and only when an inline
    /// cache or an export needs them: a cached rebuild without --cache-to
    /// pays nothing for them.
    fn seen(&self, cache: &cache::RecordingCache) -> Seen {
        if self.inline || !self.req.cache_to.is_empty() {
            Seen {
                records: cache.records(),
                links: cache.links(),
            }
        } else {
            Seen {
                records: Vec::new(),
                links: Vec::new(),
            }
        }
    }

    /// A platform's image: its target stage's config over its layers
    /// (`refs` as the solve gave them, `layers` unpacked), with its chain's
    /// records when an inline cache is asked for (and their number).
    fn commit_image(
        &self,
        d: &Definition,
        (refs, layers): &PlatformLayers,
        seen: &Seen,
    ) -> Result<(Committed, Option<usize>), Error> {
        let state = self.state;
        let history = base_history(state, d, d.target_stage)?;
        let inline_cache = self
            .inline
            .then(|| cache::InlineRecords::select(state, &seen.records, &seen.links, refs));
        let committed = image::commit(
            state,
            &CommitRequest {
                config: &d.target_stage().config,
                platform: &d.target_stage().platform,
                layers,
                base_history: &history,
                epoch: self.req.source_date_epoch,
                now: self.req.now,
                clamp: self.req.source_date_epoch,
                inline_cache: inline_cache.as_ref(),
            },
        )?;
        Ok((committed, inline_cache.map(|i| i.len())))
    }

    /// The images the outputs need: the first platform's when an output
    /// needs an image (a filesystem output with attestations too: its SBOM
    /// scans the image's layers, the statements are about its files), then,
    /// for a multi-platform build, every other platform's.
    fn commit_images(&self, platforms: &[PlatformLayers], seen: &Seen) -> Result<Images, Error> {
        let req = self.req;
        let needs_image = req
            .outputs
            .iter()
            .any(|o| o.needs_image() || (req.attest.explicit() && o.carries().carries(false)));
        let (image, inline_records) = if needs_image {
            let first = platforms.first().unwrap_or(&NO_LAYERS);
            let (img, n) = self.commit_image(&req.definition, first, seen)?;
            (Some(img), n)
        } else {
            (None, None)
        };
        let mut platform_images = Vec::new();
        if self.multi {
            for (i, d) in self.defs.iter().enumerate() {
                let platform = d.target_stage().platform.clone();
                let committed = match (&image, i) {
                    (Some(img), 0) => Some(img.clone()),
                    (Some(_), _) => {
                        let layers = platforms.get(i).unwrap_or(&NO_LAYERS);
                        Some(self.commit_image(d, layers, seen)?.0)
                    }
                    (None, _) => None,
                };
                if let Some(c) = committed {
                    platform_images.push((platform, c));
                }
            }
        }
        Ok(Images {
            image,
            inline_records,
            platform_images,
        })
    }

    /// The attestations of `images` when the request or the outputs ask
    /// for them.
    fn attestations(
        &self,
        worker: &LlbWorker,
        images: &[(Platform, Committed)],
        scans: &[Vec<LayerId>],
    ) -> Result<Option<crate::attest::Attestations>, Error> {
        let req = self.req;
        if !crate::attest::needed(&req.attest, req.outputs.iter().map(|o| o.carries())) {
            return Ok(None);
        }
        crate::attest::prepare(
            self.state,
            worker,
            &req.attest,
            &self.defs,
            images,
            scans,
            req.now,
            req.source_date_epoch,
        )
    }

    /// A multi-platform result's outputs, each writing the index of every
    /// platform's image (or layers), with their attestations.
    fn write_multi(
        &self,
        worker: &LlbWorker,
        images: &Images,
        platforms: &[PlatformLayers],
        scans: &[Vec<LayerId>],
    ) -> Result<Vec<kiln_oci::Descriptor>, Error> {
        let req = self.req;
        let per_platform: Vec<(Platform, Vec<LayerId>)> = self
            .defs
            .iter()
            .zip(platforms)
            .map(|(d, (_, ids))| (d.target_stage().platform.clone(), ids.clone()))
            .collect();
        self.stop()?;
        let att = self.attestations(worker, &images.platform_images, scans)?;
        crate::multi::write_outputs(
            self.state,
            &images.platform_images,
            &per_platform,
            &req.outputs,
            req.source_date_epoch,
            req.rewrite_timestamp,
            req.registry.as_ref(),
            att.as_ref(),
            &*req.log,
        )
    }

    /// A single-platform result's outputs, in order (stopping between them
    /// when cancelled), with the image's attestations; a push's manifest
    /// comes first (what `--metadata-file` reports).
    fn write_single(
        &self,
        worker: &LlbWorker,
        images: &Images,
        platforms: &[PlatformLayers],
        scans: &[Vec<LayerId>],
    ) -> Result<Vec<kiln_oci::Descriptor>, Error> {
        let req = self.req;
        let att = match &images.image {
            Some(img) => {
                self.attestations(worker, &[(img.config.platform(), img.clone())], scans)?
            }
            None => None,
        };
        let layers = platforms
            .first()
            .map(|(_, ids)| &ids[..])
            .unwrap_or_default();
        let single = Single {
            state: self.state,
            platform: &self.defs[0].target_stage().platform,
            image: images.image.as_ref(),
            layers,
            clamp: req.source_date_epoch,
            rewritten: req.rewrite_timestamp,
            att: att.as_ref(),
            progress: req.transfers.as_ref(),
            registry: req.registry.as_ref(),
            log: &*req.log,
        };
        let mut manifests = Vec::new();
        for out in &req.outputs {
            self.stop()?;
            if let Some(d) = out.write(&single)? {
                if out.pushes() {
                    manifests.insert(0, d);
                } else {
                    manifests.push(d);
                }
            }
        }
        Ok(manifests)
    }

    /// `--cache-to`: says how many records an inline cache holds, then
    /// writes every other cache (the records the solve saw, by mode, the
    /// cache mounts the steps used); a failure is a warning with
    /// `ignore-error=true`.
    fn export_caches(
        &self,
        worker: &LlbWorker,
        imported: &cache::Imported,
        seen: &Seen,
        platforms: &[PlatformLayers],
        inline_records: Option<usize>,
    ) -> Result<(), Error> {
        let req = self.req;
        let cache_mounts = if req.cache_to.is_empty() {
            Vec::new()
        } else {
            let mut mounts = named_cache_mounts(self.dag);
            mounts.extend(worker.used_cache_mounts());
            mounts.into_iter().collect::<Vec<_>>()
        };
        if let Some(n) = inline_records {
            (req.log)(&format!(
                "wrote an inline cache ({n} records) into the image config"
            ));
        }
        let all_results: Vec<Vec<LayerRef>> = platforms.iter().map(|(r, _)| r.clone()).collect();
        for to in req.cache_to.iter().filter(|t| !t.location.is_inline()) {
            self.stop()?;
            let r = cache::export(
                self.state,
                imported,
                cache::ExportRequest {
                    records: &seen.records,
                    links: &seen.links,
                    results: &all_results,
                    clamp: req.source_date_epoch,
                    cache_mounts: &cache_mounts,
                },
                to,
                req.registry.as_ref(),
                &*req.log,
            );
            match r {
                Ok(e) => (req.log)(&format!(
                    "exported the cache ({} records, {} layers, {} cache mounts) as {}",
                    e.records, e.layers, e.mounts, e.manifest
                )),
                Err(e) if to.ignore_error => {
                    (req.log)(&format!("warning: exporting the cache failed: {e}"))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The directory names of the cache mounts the Dockerfile names (those
/// seeded `from=` another step are known only once they were mounted:
/// `LlbWorker::used_cache_mounts`).
fn named_cache_mounts(dag: &Dag<Vertex>) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for node in dag.nodes() {
        let kiln_llb::op::Op::Exec(e) = &node.payload.op else {
            continue;
        };
        for m in &e.mounts {
            if let kiln_llb::op::MountKind::Cache {
                id, uid, gid, mode, ..
            } = &m.kind
                && m.input.is_none()
            {
                out.insert(crate::ops::mounts::cache_dir_key(
                    id,
                    None,
                    &m.source,
                    (*uid, *gid, *mode),
                ));
            }
        }
    }
    out
}

/// What distinguishes one project's steps from another's in `--explain`
/// records: the context directory and the Dockerfile (host paths, which
/// name record files and never enter a cache key).
fn explain_scope(req: &BuildRequest) -> String {
    if let Some(scope) = &req.context_scope {
        return scope.clone();
    }
    let dir = std::fs::canonicalize(&req.context_dir).unwrap_or_else(|_| req.context_dir.clone());
    let file = req
        .dockerfile
        .as_ref()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
        .unwrap_or_default();
    format!("{}\0{}", dir.display(), file.display())
}

/// The vertices whose result layers make up the root filesystem of
/// `target`'s result: from the target down its chain of root filesystems
/// (an exec's root mount, a file op's base, a merge's inputs).
fn image_chain(dag: &Dag<Vertex>, target: usize) -> std::collections::HashSet<kiln_llb::Digest> {
    let mut chain = std::collections::HashSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        let Some(node) = dag.node(i) else { continue };
        if !chain.insert(node.payload.digest) {
            continue;
        }
        let input = |k: &kiln_llb::op::InputIndex| node.inputs.get(*k as usize).copied();
        match &node.payload.op {
            kiln_llb::op::Op::Exec(e) => todo.extend(
                e.mounts
                    .iter()
                    .filter(|m| m.target == "/")
                    .filter_map(|m| m.input.as_ref().and_then(input)),
            ),
            kiln_llb::op::Op::File(f) => todo.extend(f.base.as_ref().and_then(input)),
            kiln_llb::op::Op::Merge(m) => todo.extend(m.inputs.iter().filter_map(input)),
            kiln_llb::op::Op::Source(_) => {}
        }
    }
    chain
}

/// A solver error as the user should see it.
fn step_error(dag: &Dag<Vertex>, e: SolveError<Error>) -> Error {
    match e {
        SolveError::Node { node, name, source } => {
            if matches!(source, Error::Cancelled) {
                return Error::Cancelled;
            }
            let location = dag.node(node).and_then(|n| n.payload.meta.location.clone());
            Error::Step(Box::new(StepError {
                name,
                location,
                message: source.to_string(),
                node,
            }))
        }
        SolveError::Cancelled => Error::Cancelled,
        other => Error::Solve(Box::new(other)),
    }
}

/// The image resolver of builds on `state`, local store only.
pub fn resolver(state: &State) -> StoreResolver<'_> {
    StoreResolver::local(state)
}
