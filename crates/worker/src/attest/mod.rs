//! Attestations of a build (`--provenance`, `--sbom`, `--attest`) and
//! `--annotation`: the worker's side of `kiln-attest` and `kiln-sbom`.
//!
//! After the solve, [`prepare`] makes each platform image's predicates
//! once: the SLSA provenance (from the definition, the sources the solve
//! resolved — image digests, git commits, download digests — and the
//! content digests of the local contexts) and the SPDX SBOM (kiln's own
//! scan of the image's layers, mounted read-only, or the statements an SBOM
//! generator image wrote: `scan.rs` makes the graph ops that run it, which
//! the solve runs with the build's, `sbom.rs` reads what it wrote). Each output then wraps them in
//! statements about the manifest *it* wrote ([`Attestations::index`]): an
//! OCI index of the image manifests and their attestation manifests, in
//! BuildKit's layout. The image manifests are those the outputs write
//! anyway, so an image has the same manifest digest with and without
//! attestations; only the index is new.
//!
//! Which outputs carry them, as buildx 0.13 with BuildKit 0.13: the
//! default provenance (`mode=min`, buildx's `inline-only`) goes only to
//! registry pushes; asked-for attestations go to pushes, `type=oci` and the
//! local image store; `type=docker` cannot hold an index (buildx's error,
//! see `export::check_attestations`); `type=local` and `type=tar` get them
//! as files beside the image's, as BuildKit's local and tar exporters write
//! them ([`Attestations::write_local`]). Each output says which it carries
//! ([`Carries`]); the outputs' files (`export/`) put them where they go.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_attest::layout::{self, BlobSink, ImageEntry, OciPlatform};
use kiln_attest::provenance::{self, BuildRecord, Secrets};
use kiln_attest::{Annotations, Statement};
use kiln_llb::{Definition, Digest, Platform};
use kiln_oci::{Descriptor, MediaTypes};

use crate::error::{AttestError, Error};
use crate::image::Committed;
pub use crate::resolved::{Resolved, context_digest};
use crate::state::State;
use crate::worker::LlbWorker;
pub use kiln_store::attestations::{forget, store_index, stored_blobs, stored_index};
pub use sbom::{BundleEntry, SPDX_PREDICATE, bundle_in};
pub use scan::{Generator, OUT_DIR, ScanGraphError, scan_graph};

mod layers;
mod mounted;
mod sbom;
mod scan;

/// `--sbom` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SbomRequest {
    /// `generator=`: the SBOM generator image (normalized); `None`: kiln's
    /// own scanner.
    pub generator: Option<String>,
    /// The other attributes, for the generator's environment.
    pub params: BTreeMap<String, String>,
    /// With a generator: the exec vertex of its scan of each platform's
    /// image, in the order of the definitions ([`scan_graph`]; the cli adds
    /// them to the build's graph).
    pub scans: Vec<Digest>,
}

/// An `oci-layout://` named context, for its material: BuildKit names it
/// `pkg:oci/NAME?digest=…` (the context's name with the layout entry's
/// digest, which buildx sends as the reference) with that digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciLayoutSource {
    /// The reference the graph's image source shows for it
    /// (`oci-layout://DIR@DIGEST`).
    pub shown: String,
    /// The context's name (`foo`; a `::PLATFORM` suffix left off).
    pub name: String,
    /// The digest of the layout's `index.json` entry.
    pub digest: Digest,
}

/// What the cli asks for.
#[derive(Clone, Default)]
pub struct AttestRequest {
    /// Provenance options; `None`: no provenance.
    pub provenance: Option<kiln_attest::Options>,
    /// The provenance is buildx's default (`mode=min,inline-only=true`),
    /// not asked for: only registry pushes carry it.
    pub default_provenance: bool,
    pub sbom: Option<SbomRequest>,
    pub annotations: Annotations,
    /// What the cli knows of the build: frontend options, the Dockerfile,
    /// secret and SSH ids, local source names, VCS, builder platform. The
    /// worker adds materials, graph, times.
    pub record: BuildRecord,
    /// Values of `--secret`, never to appear in an attestation.
    pub secret_values: Vec<String>,
    /// Whether a build-argument name looks secret.
    pub is_secret_name: Option<fn(&str) -> bool>,
    /// Names the SBOM's root package (the image's first name).
    pub image_name: Option<String>,
    /// The `oci-layout://` named contexts.
    pub oci_layouts: Vec<OciLayoutSource>,
    /// The main build context is a git URL (fetched into a directory the
    /// graph reads as the local source `context`): its material. The
    /// context and the Dockerfile are then no local sources.
    pub context_material: Option<kiln_attest::slsa::Material>,
}

impl std::fmt::Debug for AttestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestRequest")
            .field("provenance", &self.provenance)
            .field("default_provenance", &self.default_provenance)
            .field("sbom", &self.sbom)
            .field("annotations", &self.annotations)
            .finish_non_exhaustive()
    }
}

impl AttestRequest {
    /// Whether any attestation is asked for (the default provenance
    /// included).
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom.is_some()
    }

    /// Whether an attestation was asked for explicitly.
    pub fn explicit(&self) -> bool {
        self.sbom.is_some() || (self.provenance.is_some() && !self.default_provenance)
    }
}

/// Which attestations an output carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carries {
    /// None (it cannot hold an index: `type=docker`).
    Nothing,
    /// Those asked for, never the default provenance (`type=oci`, the
    /// image store; BuildKit's local and tar exporters write the
    /// statements beside the files, never the inline-only default).
    Asked,
    /// Every one, the default provenance included (registry pushes).
    All,
}

impl Carries {
    /// Whether it carries a predicate (`implicit`: the default provenance).
    pub fn carries(self, implicit: bool) -> bool {
        match self {
            Carries::Nothing => false,
            Carries::Asked => !implicit,
            Carries::All => true,
        }
    }
}

/// Whether outputs carrying `outputs` would carry what `req` asks for: the
/// default provenance goes to registry pushes only, so a build into the
/// image store alone does not make it (it walks the whole context for its
/// digest).
pub fn needed(req: &AttestRequest, outputs: impl IntoIterator<Item = Carries>) -> bool {
    if req.explicit() || !req.annotations.is_empty() {
        return true;
    }
    req.any() && outputs.into_iter().any(|c| c.carries(true))
}

/// A predicate of one platform's image.
#[derive(Clone, Debug)]
struct Predicate {
    predicate_type: String,
    value: serde_json::Value,
    /// The default provenance: registry pushes only.
    implicit: bool,
    /// The name a local output gives its file (`provenance.json`).
    file_name: String,
    /// The subjects a generator's statement named (none: the image's).
    subjects: Vec<kiln_attest::Subject>,
}

/// The predicates of every platform's image, made once per build.
#[derive(Clone, Debug)]
pub struct Attestations {
    per_platform: Vec<(Platform, Vec<Predicate>)>,
    annotations: Annotations,
}

/// The digest a material gives a base image: the manifest digest when the
/// store knows the image by one (pulled images), else the image ID.
fn image_digest(state: &State, reference: &str, id: &str) -> String {
    let Ok(id) = id.parse::<Digest>() else {
        return id.to_owned();
    };
    let mut refs: Vec<kiln_oci::ImageRef> = Vec::new();
    if let Ok(Some(r)) = state.images.get(reference) {
        refs.push(r);
    }
    if let Ok(per) = state.images.platforms_of(reference) {
        refs.extend(per.into_values());
    }
    refs.iter()
        .find(|r| r.id == id)
        .and_then(|r| r.manifest)
        .unwrap_or(id)
        .to_string()
}

fn digest_set(d: &str) -> BTreeMap<String, String> {
    match d.split_once(':') {
        Some((alg, hex)) => BTreeMap::from([(alg.to_owned(), hex.to_owned())]),
        None => BTreeMap::new(),
    }
}

fn rfc3339(t: (i64, u32)) -> String {
    kiln_oci::rfc3339(t.0, t.1).unwrap_or_default()
}

fn now() -> (i64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// The provenance record of one platform's definition.
fn record(
    state: &State,
    worker: &LlbWorker,
    req: &AttestRequest,
    (def, img): (&Definition, &Committed),
    started: (i64, u32),
    epoch: Option<i64>,
) -> Result<BuildRecord, Error> {
    let mut rec = req.record.clone();
    let mut images = Vec::new();
    let mut git = Vec::new();
    let mut http = Vec::new();
    let mut locals: Vec<String> = Vec::new();
    let mut network = false;
    let resolved = worker.resolved_sources();
    let mut index: BTreeMap<Digest, usize> = BTreeMap::new();
    let mut steps = Vec::new();
    for v in def.graph.vertices() {
        match &v.op {
            kiln_llb::Op::Source(kiln_llb::op::SourceOp::Image {
                reference,
                digest,
                platform,
            }) => {
                let layout = req.oci_layouts.iter().find(|l| l.shown == *reference);
                let material = layout.and_then(|l| {
                    let r = format!("{}@{}", l.name, l.digest);
                    Some(kiln_attest::slsa::Material {
                        uri: kiln_attest::purl::image_purl("oci", &r, Some(platform))?,
                        digest: digest_set(&l.digest.to_string()),
                    })
                });
                let material = material.unwrap_or_else(|| {
                    let (kind, r) = match reference.strip_prefix("oci-layout://") {
                        Some(r) => ("oci", r),
                        None => ("docker", reference.as_str()),
                    };
                    let d = digest
                        .as_deref()
                        .map(|d| image_digest(state, reference, d))
                        .unwrap_or_default();
                    kiln_attest::slsa::Material {
                        uri: kiln_attest::purl::image_purl(kind, r, Some(platform))
                            .unwrap_or_else(|| reference.clone()),
                        digest: digest_set(&d),
                    }
                });
                images.push(material);
            }
            kiln_llb::Op::Source(kiln_llb::op::SourceOp::Git { remote, .. }) => {
                let commit = resolved.git.get(&v.digest).cloned().unwrap_or_default();
                let alg = if commit.len() == 64 { "sha256" } else { "sha1" };
                git.push(kiln_attest::slsa::Material {
                    uri: remote.clone(),
                    digest: if commit.is_empty() {
                        BTreeMap::new()
                    } else {
                        BTreeMap::from([(alg.to_owned(), commit)])
                    },
                });
            }
            kiln_llb::Op::Source(kiln_llb::op::SourceOp::Http { url, checksum, .. }) => {
                let d = resolved
                    .http
                    .get(&v.digest)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| checksum.clone());
                http.push(kiln_attest::slsa::Material {
                    uri: url.clone(),
                    digest: digest_set(&d),
                });
            }
            kiln_llb::Op::Source(kiln_llb::op::SourceOp::Local { name })
                if !locals.contains(name) =>
            {
                locals.push(name.clone());
            }
            kiln_llb::Op::Exec(e) => {
                network |= e.network != kiln_llb::op::Network::None;
                // Secret and SSH ids (never values) for mode=max.
                for m in &e.mounts {
                    let (list, id, required) = match &m.kind {
                        kiln_llb::op::MountKind::Secret { id, required, .. } => {
                            (&mut rec.secrets, id, *required)
                        }
                        kiln_llb::op::MountKind::Ssh { id, required, .. } => {
                            (&mut rec.ssh, id, *required)
                        }
                        _ => continue,
                    };
                    if !list.iter().any(|(i, _)| i == id) {
                        list.push((id.clone(), !required));
                    }
                }
            }
            _ => {}
        }
        index.insert(v.digest, steps.len());
        steps.push(provenance::Step {
            digest: v.digest.to_string(),
            op: serde_json::to_value(&v.op).unwrap_or_default(),
            inputs: v
                .inputs
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect(),
            lines: v.meta.location.as_ref().map(|l| (l.start_line, l.end_line)),
        });
    }
    if let Some(m) = &req.context_material {
        // What the graph reads as `context` is the checkout.
        locals.retain(|l| l != "context");
        git.retain(|g| g.uri != m.uri);
        git.insert(0, m.clone());
    }
    let mut local_materials = Vec::new();
    for name in &locals {
        local_materials.push(provenance::local_material(
            name,
            &worker.context_digest(name)?,
        ));
    }
    let mut all_named = true;
    for m in images.iter().chain(&git).chain(&http) {
        all_named &= !m.digest.is_empty();
    }
    rec.materials = images;
    rec.materials.extend(git);
    rec.materials.extend(http);
    rec.local_materials = local_materials;
    // A Dockerfile in a git context is the repository's, not a local one.
    if req.context_material.is_none() || rec.locals.iter().any(|l| l == "dockerfile") {
        rec.local_materials.push(kiln_attest::slsa::Material {
            uri: format!(
                "{}dockerfile/{}",
                provenance::LOCAL_SCHEME,
                rec.dockerfile_name
            ),
            digest: BTreeMap::from([("sha256".to_owned(), Digest::of(&rec.dockerfile).hex())]),
        });
    }
    // As BuildKit: a local source (the Dockerfile is one) is no material,
    // so the materials are incomplete.
    rec.materials_complete = all_named && rec.local_materials.is_empty();
    rec.network = network;
    for l in &locals {
        if !rec.locals.contains(l) {
            rec.locals.push(l.clone());
        }
    }
    // BuildKit's definition ends with the result: a vertex with no op
    // whose one input is the target (its digest is kiln's own).
    if let Some(t) = def.target
        && let Some(&ti) = index.get(&t)
    {
        steps.push(provenance::Step {
            digest: Digest::of(format!("kiln result {t}").as_bytes()).to_string(),
            op: serde_json::json!({}),
            inputs: vec![ti],
            lines: None,
        });
    }
    rec.steps = steps;
    if req
        .provenance
        .as_ref()
        .is_some_and(|o| o.mode == kiln_attest::Mode::Max)
        && let Some(t) = def.target
    {
        rec.layers = step_layers(state, def, t, img, &index, epoch)?;
    }
    // With SOURCE_DATE_EPOCH the provenance is a function of the inputs,
    // as the image is: its times are the epoch and its invocation id a
    // digest of what it records, so the same build pushes the same index
    // (BuildKit writes the wall clock and a random id; kiln keeps its
    // same-inputs-same-digest rule for everything it pushes).
    if let Some(e) = epoch {
        rec.started_on = rfc3339((e, 0));
        rec.finished_on = rfc3339((e, 0));
        let mut h = format!(
            "{:?}{:?}{:?}{:?}",
            rec.args, rec.materials, rec.local_materials, rec.locals
        )
        .into_bytes();
        h.extend_from_slice(&rec.dockerfile);
        for s in &rec.steps {
            h.extend_from_slice(s.digest.as_bytes());
        }
        rec.invocation_id = Digest::of(&h).hex()[..25].to_owned();
    } else {
        rec.started_on = rfc3339(started);
        rec.finished_on = rfc3339(now());
    }
    if rec.invocation_id.is_empty() {
        rec.invocation_id = Digest::of(format!("{:?}{:?}", started, std::process::id()).as_bytes())
            .hex()[..25]
            .to_owned();
    }
    Ok(rec)
}

/// `buildkit_metadata.layers`: the descriptors of the image's layers
/// (gzip blobs, BuildKit's default compression, annotations left out) each
/// step of its chain holds ([`layers::chain_lengths`]).
fn step_layers(
    state: &State,
    def: &Definition,
    target: Digest,
    img: &Committed,
    index: &BTreeMap<Digest, usize>,
    epoch: Option<i64>,
) -> Result<BTreeMap<String, Vec<Vec<layout::Descriptor>>>, Error> {
    let mut descs = Vec::with_capacity(img.layers.len());
    for l in &img.layers {
        let d = kiln_store::layers::layer_blob(state, l, epoch, kiln_oci::Compression::default())?;
        let mut d = to_layout(&d)?;
        d.annotations.clear();
        d.platform = None;
        descs.push(d);
    }
    let mut out = BTreeMap::new();
    for (d, n) in layers::chain_lengths(&def.graph, target, descs.len()) {
        if let (Some(i), Some(chain)) = (index.get(&d), descs.get(..n))
            && n > 0
        {
            out.insert(format!("step{i}:0"), vec![chain.to_vec()]);
        }
    }
    Ok(out)
}

/// Makes the predicates of every platform's image. `images` are the
/// committed images in `defs` order; with an SBOM generator, `scans` are
/// the root filesystems of its scans, in the same order.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    state: &State,
    worker: &LlbWorker,
    req: &AttestRequest,
    defs: &[&Definition],
    images: &[(Platform, Committed)],
    scans: &[Vec<kiln_snapshot::LayerId>],
    started: (i64, u32),
    epoch: Option<i64>,
) -> Result<Option<Attestations>, Error> {
    if !req.any() && req.annotations.is_empty() {
        return Ok(None);
    }
    let have: Vec<Platform> = images.iter().map(|(p, _)| p.clone()).collect();
    if let Some(p) = req.annotations.unknown_platforms(&have).first() {
        return Err(AttestError::UnknownPlatform {
            platform: p.to_string(),
        }
        .into());
    }
    let mut per_platform = Vec::new();
    for (i, (def, (platform, img))) in defs.iter().zip(images).enumerate() {
        let mut preds = Vec::new();
        if let Some(opts) = &req.provenance {
            let rec = record(state, worker, req, (def, img), started, epoch)?;
            let is_secret = req.is_secret_name.unwrap_or(|_| false);
            let (ptype, value) = provenance::predicate(
                &rec,
                opts,
                &Secrets {
                    is_secret_name: &is_secret,
                    values: req.secret_values.clone(),
                },
            );
            preds.push(Predicate {
                predicate_type: ptype.to_owned(),
                value,
                implicit: req.default_provenance,
                file_name: "provenance.json".to_owned(),
                subjects: Vec::new(),
            });
        }
        match &req.sbom {
            Some(SbomRequest {
                generator: Some(image),
                ..
            }) => {
                let layers = scans.get(i).ok_or_else(|| AttestError::Generator {
                    image: image.clone(),
                    why: format!("no scan of the {platform} image"),
                })?;
                for entry in sbom::read_bundle(state, layers, image)? {
                    let mut value = entry.predicate;
                    provenance::scrub_value(&mut value, &scrub_list(req));
                    preds.push(Predicate {
                        predicate_type: entry.predicate_type,
                        value,
                        implicit: false,
                        file_name: entry.file_name,
                        subjects: entry.subjects,
                    });
                }
            }
            Some(_) => {
                let name = req.image_name.clone().unwrap_or_else(|| img.id.to_string());
                let mut doc =
                    sbom::own_scan(state, img, &name, epoch.map_or_else(now, |e| (e, 0)))?;
                // A secret value may not reach an attestation this way either.
                provenance::scrub_value(&mut doc, &scrub_list(req));
                preds.push(Predicate {
                    predicate_type: kiln_sbom::spdx::PREDICATE.to_owned(),
                    value: doc,
                    implicit: false,
                    file_name: "sbom.spdx.json".to_owned(),
                    subjects: Vec::new(),
                });
            }
            None => {}
        }
        per_platform.push((platform.clone(), preds));
    }
    Ok(Some(Attestations {
        per_platform,
        annotations: req.annotations.clone(),
    }))
}

fn scrub_list(req: &AttestRequest) -> Vec<String> {
    req.secret_values
        .iter()
        .filter(|v| v.len() >= provenance::MIN_SCRUBBED_LEN)
        .cloned()
        .collect()
}

/// The content store as a [`BlobSink`].
struct Sink<'a>(&'a State);

impl BlobSink for Sink<'_> {
    type Error = Error;
    fn put_json(&mut self, value: &serde_json::Value) -> Result<(Digest, u64), Error> {
        let b = self.0.content.put_json(value)?;
        Ok((b.digest, b.size))
    }
}

fn to_layout(d: &Descriptor) -> Result<layout::Descriptor, Error> {
    convert(d, d.digest)
}

fn from_layout(d: &layout::Descriptor) -> Result<Descriptor, Error> {
    convert(d, d.digest)
}

/// kiln-oci's descriptor as kiln-attest's, or back: the two serialize to
/// the same OCI JSON.
fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(
    d: &A,
    digest: Digest,
) -> Result<B, Error> {
    serde_json::to_value(d)
        .and_then(serde_json::from_value)
        .map_err(|source| AttestError::Descriptor { digest, source }.into())
}

/// How a local or tar output names the statement files it writes, as
/// BuildKit's `CreateFS`: `attestation-prefix=` before the name and, when
/// the platforms of a multi-platform result share one directory
/// (`platform-split=false`), the platform's directory name before the
/// extension (`provenance.linux_amd64.json`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementNames<'a> {
    /// `attestation-prefix=`.
    pub prefix: &'a str,
    /// The platform (`linux_amd64`), when platforms share a directory.
    pub platform: Option<&'a str>,
}

impl StatementNames<'_> {
    /// The name of the file of statement `base` (`provenance.json`).
    pub fn name(&self, base: &str) -> String {
        let name = format!("{}{base}", self.prefix);
        let Some(p) = self.platform else {
            return name;
        };
        // Go's path.Ext: from the last dot of the last element.
        let last = name.rfind('/').map_or(0, |i| i + 1);
        match name[last..].rfind('.') {
            Some(i) => format!("{}.{p}{}", &name[..last + i], &name[last + i..]),
            None => format!("{name}.{p}"),
        }
    }
}

impl Attestations {
    /// Writes the statements of `platform`'s image into a local output
    /// `dest`, as BuildKit's local exporter does: one file per attestation
    /// (`provenance.json`, `sbom.spdx.json`), its subjects every regular
    /// file of the output with its digest, indented JSON, mode 0600, the
    /// epoch's time when there is one. The inline-only default provenance
    /// is not written.
    ///
    /// `names` names the files; returns the names written.
    pub fn write_local(
        &self,
        state: &State,
        layers: &[kiln_snapshot::LayerId],
        platform: &Platform,
        dest: &Path,
        clamp: Option<i64>,
        names: StatementNames<'_>,
    ) -> Result<Vec<String>, Error> {
        let Some((_, preds)) = self.per_platform.iter().find(|(p, _)| p == platform) else {
            return Ok(Vec::new());
        };
        let preds: Vec<&Predicate> = preds.iter().filter(|p| !p.implicit).collect();
        if preds.is_empty() {
            return Ok(Vec::new());
        }
        // The image's files (what BuildKit walks: the result's mount), not
        // the directory, which may hold files of earlier exports.
        let mounted = mounted::Mounted::new(state, layers)?;
        let subjects = file_subjects(mounted.path())?;
        drop(mounted);
        let mut written = Vec::with_capacity(preds.len());
        for p in preds {
            let name = names.name(&p.file_name);
            if written.contains(&name) {
                return Err(AttestError::DuplicateName { name }.into());
            }
            let st = Statement::new(
                kiln_attest::statement::STATEMENT_V1,
                &p.predicate_type,
                if p.subjects.is_empty() {
                    subjects.clone()
                } else {
                    p.subjects.clone()
                },
                p.value.clone(),
            );
            let bytes = serde_json::to_vec_pretty(&st).map_err(|source| AttestError::Encode {
                name: name.to_string(),
                source,
            })?;
            let path = dest.join(&name);
            let io = |source| Error::Io {
                what: format!("writing {}", path.display()),
                source,
            };
            std::fs::write(&path, &bytes).map_err(io)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            if let Some(t) = clamp {
                filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(t, 0))
                    .map_err(io)?;
            }
            written.push(name);
        }
        Ok(written)
    }

    /// Whether an output that carries `out` carries anything of these:
    /// attestations, or annotations that need an index.
    pub fn applies_to(&self, out: Carries) -> bool {
        let preds = self
            .per_platform
            .iter()
            .flat_map(|(_, p)| p)
            .any(|p| out.carries(p.implicit));
        preds || (out.carries(false) && !self.annotations.is_empty())
    }

    /// With manifest annotations, each manifest rewritten with them (a new
    /// digest, as BuildKit's); otherwise as given.
    fn annotate(
        &self,
        state: &State,
        manifests: &[(Platform, Descriptor)],
    ) -> Result<Vec<(Platform, Descriptor)>, Error> {
        let mut out = Vec::with_capacity(manifests.len());
        for (p, d) in manifests {
            let mut d = d.clone();
            let extra = self.annotations.manifest_for(p);
            if !extra.is_empty() {
                let mut m: kiln_oci::Manifest =
                    serde_json::from_slice(&state.content.read(&d.digest)?).map_err(|source| {
                        AttestError::Manifest {
                            digest: d.digest,
                            source,
                        }
                    })?;
                m.annotations.extend(extra);
                let b = state.content.put_json(&m)?;
                d.digest = b.digest;
                d.size = b.size;
            }
            d.annotations
                .extend(self.annotations.manifest_descriptor_for(p));
            out.push((p.clone(), d));
        }
        Ok(out)
    }

    /// The index an output writes for `manifests` (one per platform, in
    /// build order), with the statements it carries about them (subjects:
    /// `names` as purls); `None` when it writes no index (a single
    /// platform with nothing to attach). Returns the index and every
    /// manifest it lists (to push).
    pub fn index(
        &self,
        state: &State,
        out: Carries,
        names: &[String],
        manifests: &[(Platform, Descriptor)],
        types: MediaTypes,
    ) -> Result<Option<(Descriptor, Vec<Descriptor>)>, Error> {
        let manifests = self.annotate(state, manifests)?;
        let mut entries = Vec::with_capacity(manifests.len());
        let mut any = false;
        for (p, d) in &manifests {
            let preds = self
                .per_platform
                .iter()
                .find(|(q, _)| q == p)
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default();
            let statements: Vec<Statement> = preds
                .iter()
                .filter(|pr| out.carries(pr.implicit))
                .map(|pr| {
                    Statement::new(
                        kiln_attest::statement::STATEMENT_V1,
                        &pr.predicate_type,
                        if pr.subjects.is_empty() {
                            kiln_attest::statement::image_subjects(names, p, &d.digest)
                        } else {
                            pr.subjects.clone()
                        },
                        pr.value.clone(),
                    )
                })
                .collect();
            any |= !statements.is_empty();
            let mut ld = to_layout(d)?;
            ld.platform = Some(OciPlatform::of(p));
            entries.push(ImageEntry {
                manifest: ld,
                statements,
            });
        }
        if !any && manifests.len() == 1 && !self.annotations.need_index() {
            return Ok(None);
        }
        // BuildKit turns OCI media types on for attestations and index
        // annotations.
        let index_type = if any || !self.annotations.is_empty() {
            MediaTypes::Oci.index()
        } else {
            types.index()
        };
        let (idx, listed) = layout::index(
            &mut Sink(state),
            &entries,
            &self.annotations.index,
            index_type,
        )?;
        let mut idx = from_layout(&idx)?;
        idx.annotations
            .extend(self.annotations.index_descriptor.clone());
        let listed = listed
            .iter()
            .map(from_layout)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((idx, listed)))
    }
}

/// The regular files under `dir`, as BuildKit's local exporter names its
/// subjects (relative paths, in the order of a depth-first walk with each
/// directory's entries sorted), with their SHA-256.
fn file_subjects(dir: &Path) -> Result<Vec<kiln_attest::Subject>, Error> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<kiln_attest::Subject>) -> Result<(), Error> {
        let io = |what: &str, p: &Path, source| Error::Io {
            what: format!("{what} {}", p.display()),
            source,
        };
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
            .map_err(|e| io("reading", dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| io("reading", dir, e))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let p = e.path();
            let t = e.file_type().map_err(|err| io("reading", &p, err))?;
            if t.is_dir() {
                walk(root, &p, out)?;
            } else if t.is_file() {
                let mut f = std::fs::File::open(&p).map_err(|err| io("opening", &p, err))?;
                let mut h = <sha2::Sha256 as sha2::Digest>::new();
                std::io::copy(&mut f, &mut h).map_err(|err| io("reading", &p, err))?;
                let hex: String = sha2::Digest::finalize(h)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let name = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                out.push(kiln_attest::Subject {
                    name,
                    digest: BTreeMap::from([("sha256".to_owned(), hex)]),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::StatementNames;

    #[test]
    fn statement_names() {
        let plain = StatementNames::default();
        assert_eq!(plain.name("provenance.json"), "provenance.json");
        let merged = StatementNames {
            prefix: "att-",
            platform: Some("linux_arm_v7"),
        };
        assert_eq!(
            merged.name("sbom.spdx.json"),
            "att-sbom.spdx.linux_arm_v7.json"
        );
        let no_ext = StatementNames {
            prefix: "",
            platform: Some("linux_amd64"),
        };
        assert_eq!(no_ext.name("provenance"), "provenance.linux_amd64");
    }
}
