//! Images in the local store: resolving `FROM` names, committing a build
//! result as an image, importing a root filesystem tarball. The image
//! source op is `crate::ops::image`'s.
//!
//! Unpacking an image's layers into snapshots and the diffIDs of layers are
//! the store's ([`kiln_store::layers`], re-exported here): unpacked layers
//! keep the diffID and blob they came with, built layers' diffIDs are
//! computed from their generated tar.

use std::io::Read;

use kiln_frontend::{ImageResolver, Resolution, ResolvedImage};
use kiln_llb::image::{Healthcheck as LlbHealthcheck, History as LlbHistory, ImageConfig};
use kiln_llb::{Digest, Platform};
use kiln_oci::{Compression, History, ImageConfigFile, ImageRef, RuntimeConfig};
use kiln_snapshot::LayerId;
pub use kiln_store::layers::{LABEL_DIFF_ID, diff_id, image_layers, layer_blob, prefetch_diff_id};
pub use kiln_store::state::DiffIdCells;

use crate::error::{Error, ImageError};
use crate::state::State;

/// The configuration of image `id` in the content store
/// ([`kiln_store::layers::load_config`]).
pub fn load_config(state: &State, id: &Digest) -> Result<ImageConfigFile, Error> {
    Ok(kiln_store::layers::load_config(state, id)?)
}

pub use kiln_store::blobs::LABEL_CREATED;

/// An OCI configuration as the frontend sees it.
pub fn to_llb(c: &ImageConfigFile) -> ImageConfig {
    let r = &c.config;
    ImageConfig {
        platform: Some(c.platform()),
        author: c.author.clone(),
        user: r.user.clone(),
        exposed_ports: r.exposed_ports.clone(),
        env: r.env.clone(),
        entrypoint: (!r.entrypoint.is_empty()).then(|| r.entrypoint.clone()),
        cmd: (!r.cmd.is_empty()).then(|| r.cmd.clone()),
        args_escaped: r.args_escaped,
        volumes: r.volumes.clone(),
        working_dir: r.working_dir.clone(),
        labels: r.labels.clone(),
        stop_signal: r.stop_signal.clone(),
        shell: r.shell.clone(),
        healthcheck: r.healthcheck.as_ref().map(|h| LlbHealthcheck {
            test: h.test.clone(),
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: i32::try_from(h.retries).unwrap_or(i32::MAX),
        }),
        on_build: r.on_build.clone(),
        history: c
            .history
            .iter()
            .map(|h| LlbHistory {
                created_by: h.created_by.clone(),
                comment: h.comment.clone(),
                empty_layer: h.empty_layer,
            })
            .collect(),
    }
}

/// The runtime part of an OCI configuration from the frontend's.
pub fn runtime_config(c: &ImageConfig) -> RuntimeConfig {
    RuntimeConfig {
        user: c.user.clone(),
        exposed_ports: c.exposed_ports.clone(),
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone().unwrap_or_default(),
        cmd: c.cmd.clone().unwrap_or_default(),
        volumes: c.volumes.clone(),
        working_dir: c.working_dir.clone(),
        labels: c.labels.clone(),
        stop_signal: c.stop_signal.clone(),
        args_escaped: c.args_escaped,
        healthcheck: c.healthcheck.as_ref().map(|h| kiln_oci::Healthcheck {
            test: h.test.clone(),
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: i64::from(h.retries),
        }),
        on_build: c.on_build.clone(),
        shell: c.shell.clone(),
    }
}

/// When `FROM` asks a registry rather than the local store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Use a local image of that name; pull only names the store lacks
    /// (`docker build` without `--pull`).
    #[default]
    Missing,
    /// Resolve every name against its registry (`--pull`).
    Always,
}

/// A base image as a build resolved it (for `--metadata-file` and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// The normalised reference `FROM` named.
    pub reference: String,
    /// The digest of what the name resolved to: the registry's index or
    /// manifest digest for pulled images, the stored manifest (or image ID)
    /// for local ones.
    pub digest: Digest,
    /// Image ID (config digest).
    pub id: Digest,
    /// Whether it came from a registry in this build.
    pub pulled: bool,
}

/// Resolves `FROM` names: the local image store first, then (with a client)
/// the registry. Each name is resolved once per build.
pub struct StoreResolver<'a> {
    pub state: &'a State,
    pub registry: Option<&'a kiln_registry::Client>,
    pub pull: PullPolicy,
    /// Where transfer progress lines go.
    pub log: &'a (dyn Fn(&str) + Sync),
    resolved: std::sync::Mutex<Vec<(ResolvedBase, Platform)>>,
}

impl std::fmt::Debug for StoreResolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreResolver")
            .field("state", &self.state.root)
            .field("pull", &self.pull)
            .finish_non_exhaustive()
    }
}

impl<'a> StoreResolver<'a> {
    /// A resolver of the local store only.
    pub fn local(state: &'a State) -> StoreResolver<'a> {
        StoreResolver::new(state, None, PullPolicy::Missing, &|_| {})
    }

    pub fn new(
        state: &'a State,
        registry: Option<&'a kiln_registry::Client>,
        pull: PullPolicy,
        log: &'a (dyn Fn(&str) + Sync),
    ) -> StoreResolver<'a> {
        StoreResolver {
            state,
            registry,
            pull,
            log,
            resolved: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The base images resolved so far, in order.
    pub fn resolved(&self) -> Vec<ResolvedBase> {
        self.resolved
            .lock()
            .map(|r| r.iter().map(|(b, _)| b.clone()).collect())
            .unwrap_or_default()
    }

    /// The resolutions made so far as (reference, digest it resolved to),
    /// each reference once, for `--metadata-file`.
    pub fn resolutions(&self) -> Vec<(String, Digest)> {
        let mut out: Vec<(String, Digest)> = Vec::new();
        for b in self.resolved() {
            let e = (b.reference, b.digest);
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }

    /// The image a normalised reference names in the store.
    pub fn lookup(&self, reference: &str) -> Result<Option<ImageRef>, Error> {
        if let Some(r) = self.state.images.get(reference)? {
            return Ok(Some(r));
        }
        // `name@sha256:…`: any local image with that manifest or ID.
        if let Some((_, digest)) = reference.split_once('@')
            && let Ok(d) = digest.parse::<Digest>()
        {
            for (_, r) in self.state.images.list()? {
                if r.id == d || r.manifest == Some(d) {
                    return Ok(Some(r));
                }
            }
            if self.state.content.has(&d)? {
                return Ok(Some(ImageRef {
                    id: d,
                    manifest: None,
                }));
            }
        }
        Ok(None)
    }

    fn pull_image(&self, reference: &str, platform: &Platform) -> Result<ResolvedBase, String> {
        let Some(client) = self.registry else {
            return Err("not found in the local image store".to_owned());
        };
        let r = kiln_reference::Reference::parse_normalized(reference)
            .map_err(|e| format!("invalid reference: {e}"))?;
        let pulled =
            crate::registry::pull(self.state, client, &r, platform, self.log).map_err(|e| {
                match self.pull {
                    PullPolicy::Always => format!("pulling it failed: {e}"),
                    PullPolicy::Missing => {
                        format!("not in the local image store, and pulling it failed: {e}")
                    }
                }
            })?;
        Ok(ResolvedBase {
            reference: reference.to_owned(),
            digest: pulled.resolved,
            id: pulled.id,
            pulled: true,
        })
    }

    fn resolve_base(&self, reference: &str, platform: &Platform) -> Result<ResolvedBase, String> {
        if self.pull == PullPolicy::Always && self.registry.is_some() {
            return self.pull_image(reference, platform);
        }
        let per_platform = self
            .state
            .images
            .platforms_of(reference)
            .map_err(|e| e.to_string())?;
        if !per_platform.is_empty() {
            // A multi-platform name: its entry for this platform, as a
            // registry's index would give (the best match: a Windows OS
            // version as containerd matches it).
            let found = per_platform
                .iter()
                .filter_map(|(p, r)| {
                    let p = p.parse::<Platform>().ok()?;
                    let same = p.os == platform.os
                        && p.architecture == platform.architecture
                        && (p.variant == platform.variant || platform.variant.is_empty());
                    // Windows: a compatible OS version, the same one first.
                    let rank = if p.os == "windows" {
                        (platform.rank(&p)?, p.os_version != platform.os_version)
                    } else {
                        (0, false)
                    };
                    same.then_some((rank, r))
                })
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, r)| r);
            if let Some(r) = found {
                return Ok(ResolvedBase {
                    reference: reference.to_owned(),
                    digest: r.manifest.unwrap_or(r.id),
                    id: r.id,
                    pulled: false,
                });
            }
            let has = format!(
                "the local image has no {} image (it has {})",
                platform.format(),
                per_platform.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            if self.registry.is_none() {
                return Err(has);
            }
            return self.pull_image(reference, platform).map_err(|e| {
                format!(
                    "{has}, and {}",
                    e.trim_start_matches("not in the local image store, and ")
                )
            });
        }
        if let Some(r) = self.lookup(reference).map_err(|e| e.to_string())? {
            let config = load_config(self.state, &r.id).map_err(|e| e.to_string())?;
            let p = config.platform();
            if p.os.is_empty() || (p.os == platform.os && p.architecture == platform.architecture) {
                return Ok(ResolvedBase {
                    reference: reference.to_owned(),
                    digest: r.manifest.unwrap_or(r.id),
                    id: r.id,
                    pulled: false,
                });
            }
            if self.registry.is_none() {
                return Err(format!(
                    "the local image is for {}, not {} (`kiln import --platform {}` makes a base for another platform)",
                    p.format(),
                    platform.format(),
                    platform.format()
                ));
            }
        }
        self.pull_image(reference, platform)
    }
}

impl ImageResolver for StoreResolver<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Resolution, String> {
        let memo = self.resolved.lock().ok().and_then(|r| {
            r.iter()
                .find(|(b, p)| b.reference == reference && p == platform)
                .map(|(b, _)| b.clone())
        });
        let base = match memo {
            Some(b) => b,
            None => {
                let b = self.resolve_base(reference, platform)?;
                if let Ok(mut r) = self.resolved.lock() {
                    r.push((b.clone(), platform.clone()));
                }
                b
            }
        };
        let config = load_config(self.state, &base.id).map_err(|e| e.to_string())?;
        Ok(Resolution::Resolved(ResolvedImage {
            digest: Some(base.id.to_string()),
            has_layers: !config.rootfs.diff_ids.is_empty(),
            config: to_llb(&config),
        }))
    }

    fn source_time(&self, source: &kiln_frontend::TimedSource) -> Result<Option<i64>, String> {
        crate::remote::source_time(self.state, source).map_err(|e| e.to_string())
    }
}

/// What the result of a build is committed with.
#[derive(Debug, Clone)]
pub struct CommitRequest<'a> {
    /// The target stage's configuration (history included).
    pub config: &'a ImageConfig,
    pub platform: &'a Platform,
    /// The target's layers, bottom first.
    pub layers: &'a [LayerId],
    /// History of the image the stage chain starts from (with its times).
    pub base_history: &'a [History],
    /// `SOURCE_DATE_EPOCH`: the creation time of everything new. Without it
    /// each new history entry gets the time its layer was made (entries
    /// without a layer the time of the entry before), and the image the
    /// time of its last entry.
    pub epoch: Option<i64>,
    /// The time to use for what has no other (no layer before it).
    pub now: (i64, u32),
    /// mtime clamp of built layers (`SOURCE_DATE_EPOCH`).
    pub clamp: Option<i64>,
    /// `--cache-to type=inline`: the records to write into the config.
    pub inline_cache: Option<&'a crate::cache::InlineRecords>,
}

/// A committed image.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Image ID: digest of the canonical configuration.
    pub id: Digest,
    pub config: ImageConfigFile,
    pub layers: Vec<LayerId>,
}

/// Writes the image configuration of a build result into the content store.
pub fn commit(state: &State, req: &CommitRequest<'_>) -> Result<Committed, Error> {
    let time = |secs: i64, nanos: u32| {
        kiln_oci::rfc3339(secs, nanos).map_err(|e| Error::from(ImageError::from(e)))
    };
    let now = time(req.now.0, req.now.1)?;
    let fixed = req.epoch.map(|e| time(e, 0)).transpose()?;
    // The image's own platform (the base's variant and OS version, kept by
    // the frontend as BuildKit keeps them) when it is the stage's OS and
    // architecture, which the manifest's descriptor names.
    let platform = match &req.config.platform {
        Some(p) if p.os == req.platform.os && p.architecture == req.platform.architecture => p,
        _ => req.platform,
    };
    let mut config = ImageConfigFile::new(platform);
    config.author = req.config.author.clone();
    config.config = runtime_config(req.config);
    let mut layer_times = Vec::with_capacity(req.layers.len());
    for l in req.layers {
        let d = diff_id(state, l, req.clamp)?;
        let layer = state.layers.get(l)?;
        // The layer's size, recorded once per diffID (see kiln_store::blobs).
        if state.layer_blobs.size(&d)?.is_none() {
            let size = kiln_store::blobs::dir_size(&layer.diff);
            state.layer_blobs.set_size(&d, size)?;
        }
        config.rootfs.diff_ids.push(d);
        layer_times.push(layer.meta.labels.get(LABEL_CREATED).cloned());
    }
    if let Some(inline) = req.inline_cache {
        config.inline_cache = Some(inline.config(&config.rootfs.diff_ids)?);
    }
    let mut history: Vec<History> = Vec::with_capacity(req.config.history.len());
    let mut layer = 0;
    let mut last: Option<String> = None;
    for (i, h) in req.config.history.iter().enumerate() {
        let entry = match req.base_history.get(i) {
            Some(b) if b.created_by == h.created_by && b.comment == h.comment => b.clone(),
            _ => {
                let created = match &fixed {
                    Some(t) => t.clone(),
                    None if !h.empty_layer => layer_times
                        .get(layer)
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| now.clone()),
                    None => last.clone().unwrap_or_else(|| now.clone()),
                };
                History {
                    created: Some(created),
                    created_by: h.created_by.clone(),
                    author: String::new(),
                    comment: h.comment.clone(),
                    empty_layer: h.empty_layer,
                }
            }
        };
        if !entry.empty_layer {
            layer += 1;
        }
        if entry.created.is_some() {
            last = entry.created.clone();
        }
        history.push(entry);
    }
    normalize_history(&mut history, config.rootfs.diff_ids.len(), &now);
    config.created = Some(match fixed {
        Some(t) => t,
        None => history
            .iter()
            .rev()
            .find_map(|h| h.created.clone())
            .unwrap_or(now),
    });
    config.history = history;
    let bytes = config.to_json()?;
    let blob = state.content.put_bytes(&bytes)?;
    state.set_image_layers(&blob.digest, req.layers)?;
    Ok(Committed {
        id: blob.digest,
        config,
        layers: req.layers.to_vec(),
    })
}

/// BuildKit's `normalizeLayersAndHistory`: one non-empty history entry per
/// layer, marking extra entries empty from the bottom or adding entries for
/// layers the history does not account for.
fn normalize_history(history: &mut Vec<History>, layers: usize, created: &str) {
    let with_layer = history.iter().filter(|h| !h.empty_layer).count();
    if with_layer > layers {
        let mut seen = 0;
        for h in history.iter_mut() {
            if seen >= layers {
                h.empty_layer = true;
            }
            if !h.empty_layer {
                seen += 1;
            }
        }
    } else {
        for _ in with_layer..layers {
            history.push(History {
                created: Some(created.to_owned()),
                created_by: "created by kiln".to_owned(),
                author: String::new(),
                comment: "buildkit.exporter.image.v0".to_owned(),
                empty_layer: false,
            });
        }
    }
}

/// `kiln import`: a root filesystem tarball as a one-layer image.
pub struct ImportRequest<'a> {
    /// The tarball (plain or compressed).
    pub tar: Box<dyn Read + 'a>,
    /// Runtime settings from `--change` instructions.
    pub config: ImageConfig,
    /// History comment (`Imported from -`, or `--message`).
    pub comment: String,
    pub platform: Platform,
    pub created: (i64, u32),
}

impl std::fmt::Debug for ImportRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportRequest")
            .field("comment", &self.comment)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// Stores the tarball as a gzip layer blob and writes an image configuration
/// for it; returns the image ID.
pub fn import(state: &State, req: ImportRequest<'_>) -> Result<Digest, Error> {
    let blob = kiln_oci::ingest_layer(&state.content, req.tar, Compression::gzip())?;
    state.layer_blobs.add(
        &state.content,
        &blob.diff_id,
        Compression::gzip(),
        &blob.descriptor,
    )?;
    state
        .layer_blobs
        .set_size(&blob.diff_id, blob.unpacked_size)?;
    let created = kiln_oci::rfc3339(req.created.0, req.created.1).map_err(ImageError::from)?;
    let mut config = ImageConfigFile::new(&req.platform);
    config.created = Some(created.clone());
    config.config = runtime_config(&req.config);
    config.rootfs.diff_ids.push(blob.diff_id);
    config.history.push(History {
        created: Some(created),
        comment: req.comment,
        ..History::default()
    });
    let bytes = config.to_json()?;
    let id = state.content.put_bytes(&bytes)?.digest;
    kiln_store::images::record(state, &id)?;
    Ok(id)
}
