//! Images from and to registries: `FROM` names the local store does not have,
//! `kiln pull`, `--push` and `kiln push`.
//!
//! The distribution protocol itself (auth, retries, verification) is
//! `kiln-registry`'s; this module decides what to fetch and where it goes:
//!
//! * a pull stores the index (if any), the platform's manifest and the config
//!   blob as they came (so the image ID is the registry's config digest), and
//!   downloads the layer blobs the store does not have, several at a time;
//!   unpacking is [`kiln_store::layers::image_layers`]'s, the first time a build
//!   needs the filesystem, once per layer for every image that shares it;
//! * a push uploads the config and layer blobs the registry does not have
//!   (cross-repository mounts for blobs known to live in another repository
//!   of the same registry), then the manifest, under each name;
//! * which repositories hold a blob is remembered in
//!   `<root>/distribution/<hex>.json`, a hint for mounts, never a cache key.

use std::collections::BTreeSet;
use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_llb::{Digest, Platform};
use kiln_oci::{Compression, Descriptor, ImageConfigFile, ImageRef, Manifest, MediaTypes, media};
use kiln_reference::Reference;
use kiln_registry::{Client, PushedBlob};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ImageError, RegistryFailure, RegistryProblem};
use crate::images::human_size;
use crate::state::{State, write_atomic};

/// Blobs transferred at once.
const PARALLEL_TRANSFERS: usize = 4;

/// Where progress lines of transfers go (the cli prints them).
pub type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Image ID (digest of the config blob).
    pub id: Digest,
    /// Digest of the platform's image manifest.
    pub manifest: Digest,
    /// Digest of the index the manifest was picked from, if the name
    /// pointed at one.
    pub index: Option<Digest>,
    /// The digest the name resolved to (index or manifest): what a
    /// `name@digest` reference of this pull would be.
    pub resolved: Digest,
    /// Bytes downloaded (blobs the store already had are not counted).
    pub downloaded: u64,
}

fn err(reference: &impl std::fmt::Display, problem: RegistryProblem) -> Error {
    Error::Registry(RegistryFailure::Content {
        reference: reference.to_string(),
        problem,
    })
}

/// The compression a layer media type says.
pub(crate) fn layer_compression(mt: &str) -> Option<Compression> {
    match mt {
        media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP | media::OCI_LAYER_NONDIST_GZIP => {
            Some(Compression::gzip())
        }
        media::OCI_LAYER_ZSTD | media::OCI_LAYER_NONDIST_ZSTD => Some(Compression::zstd()),
        media::OCI_LAYER_TAR | media::DOCKER_LAYER_TAR | media::OCI_LAYER_NONDIST_TAR => {
            Some(Compression::Uncompressed)
        }
        _ => None,
    }
}

/// Pulls the image `reference` names for `platform` into the store and
/// records the name. Layers are downloaded, not unpacked.
pub fn pull(
    state: &State,
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    log: Log<'_>,
) -> Result<Pulled, Error> {
    let reference = reference.clone().with_default_tag();
    log(&format!("resolve {reference}"));
    let resolved = client.resolve(&reference, platform).map_err(Error::from)?;
    let mut stored = Vec::new();
    for m in resolved.index.iter().chain([&resolved.manifest]) {
        let blob = state.content.put_bytes(&m.bytes)?;
        if blob.digest != m.digest {
            return Err(err(
                &reference,
                RegistryProblem::ManifestDigest {
                    expected: m.digest,
                    actual: blob.digest,
                },
            ));
        }
        stored.push(blob.digest);
    }
    let manifest: Manifest = serde_json::from_slice(&resolved.manifest.bytes)
        .map_err(|e| err(&reference, RegistryProblem::InvalidManifest(e)))?;
    let config_type = manifest.config.media_type.as_str();
    if config_type != media::OCI_CONFIG && config_type != media::DOCKER_CONFIG {
        return Err(err(
            &reference,
            RegistryProblem::NotAnImage(config_type.to_owned()),
        ));
    }
    let downloaded = AtomicUsize::new(0);
    fetch(state, client, &reference, &manifest.config, &downloaded)?;
    let config_bytes = state.content.read(&manifest.config.digest)?;
    let config = ImageConfigFile::from_json(&config_bytes, &manifest.config.digest.to_string())?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(err(
            &reference,
            RegistryProblem::LayerCount {
                layers: manifest.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            },
        ));
    }
    // Every layer blob the manifest lists is fetched when the store lacks
    // it, even when the layer is there in another blob or unpacked: a name
    // pushes and saves its own manifest, and every blob it needs must be
    // kept (issue 21). Each blob is checked to unpack to its diffID, which
    // also gives the layer's size.
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let compression = layer_compression(&desc.media_type).ok_or_else(|| {
            err(
                &reference,
                RegistryProblem::LayerMediaType {
                    digest: desc.digest,
                    media_type: desc.media_type.clone(),
                },
            )
        })?;
        layers.push((desc.clone(), *diff_id, compression));
    }
    parallel(&layers, |(desc, diff_id, _)| {
        let started = std::time::Instant::now();
        let fetched = !state.content.has(&desc.digest)?;
        fetch(state, client, &reference, desc, &downloaded)?;
        let recorded = state
            .layer_blobs
            .list(diff_id)?
            .iter()
            .any(|(_, d)| d.digest == desc.digest);
        if fetched || !recorded || state.layer_blobs.size(diff_id)?.is_none() {
            let size = kiln_oci::verify_blob(&state.content, &desc.digest, diff_id)
                .map_err(|e| err(&reference, RegistryProblem::Blob(e)))?;
            state.layer_blobs.set_size(diff_id, size)?;
        }
        if fetched {
            log(&format!(
                "{} {} done",
                desc.digest,
                transfer(desc.size, started.elapsed())
            ));
        }
        Ok(())
    })?;
    // Recorded once the blobs are in the store: a pull killed halfway leaves
    // no record that points at nothing.
    for (desc, diff_id, compression) in &layers {
        state
            .layer_blobs
            .add(&state.content, diff_id, *compression, desc)?;
    }
    let repo = repository(&reference);
    let mut blobs: Vec<Digest> = manifest.layers.iter().map(|l| l.digest).collect();
    blobs.push(manifest.config.digest);
    blobs.extend(stored.iter().copied());
    remember(state, &blobs, &repo);
    log("DONE");
    let resolved_digest = resolved
        .index
        .as_ref()
        .map_or(resolved.manifest.digest, |i| i.digest);
    crate::images::naming(state, &[manifest.config.digest], |ix| {
        Ok(ix.set(
            &reference.to_string(),
            ImageRef {
                id: manifest.config.digest,
                manifest: Some(resolved.manifest.digest),
            },
        )?)
    })?;
    Ok(Pulled {
        id: manifest.config.digest,
        manifest: resolved.manifest.digest,
        index: resolved.index.as_ref().map(|i| i.digest),
        resolved: resolved_digest,
        downloaded: downloaded.load(Ordering::SeqCst) as u64,
    })
}

/// Runs `f` on every item, [`PARALLEL_TRANSFERS`] at a time; the first
/// error stops the others from starting new items and is returned.
fn parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<(), Error> + Sync) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_TRANSFERS.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    if let Err(e) = f(item) {
                        if let Ok(mut slot) = failure.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn fetch(
    state: &State,
    client: &Client,
    reference: &Reference,
    desc: &Descriptor,
    downloaded: &AtomicUsize,
) -> Result<(), Error> {
    if state.content.has(&desc.digest)? {
        return Ok(());
    }
    client
        .fetch_blob(reference, desc, &state.content, &|_| {})
        .map_err(Error::from)?;
    downloaded.fetch_add(usize::try_from(desc.size).unwrap_or(0), Ordering::SeqCst);
    Ok(())
}

/// `host/path` of a reference.
fn repository(r: &Reference) -> String {
    format!("{}/{}", r.domain(), r.path())
}

/// `12.35MB in 0.8s (15.44MB/s)`.
fn transfer(size: u64, took: std::time::Duration) -> String {
    let secs = took.as_secs_f64();
    if secs < 0.001 {
        return human_size(size);
    }
    format!(
        "{} in {secs:.1}s ({}/s)",
        human_size(size),
        human_size((size as f64 / secs) as u64)
    )
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Sources {
    repositories: BTreeSet<String>,
}

fn sources_path(state: &State, d: &Digest) -> std::path::PathBuf {
    state
        .root
        .join("distribution")
        .join(format!("{}.json", d.hex()))
}

fn sources(state: &State, d: &Digest) -> Sources {
    fs::read(sources_path(state, d))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records that `blobs` live in `repo`. A hint only: failures are ignored.
pub(crate) fn remember(state: &State, blobs: &[Digest], repo: &str) {
    let dir = state.root.join("distribution");
    if fs::create_dir_all(&dir).is_err() {
        return;
    }
    for d in blobs {
        let mut s = sources(state, d);
        if s.repositories.insert(repo.to_owned())
            && let Ok(body) = serde_json::to_vec(&s)
        {
            let _ = write_atomic(&sources_path(state, d), &body);
        }
    }
}

/// A repository of the same registry (other than `repo`) that holds `d`.
fn mount_source(state: &State, d: &Digest, repo: &Reference) -> Option<String> {
    let host = format!("{}/", repo.domain());
    let this = repository(repo);
    sources(state, d)
        .repositories
        .into_iter()
        .find(|r| *r != this && r.starts_with(&host))
        .and_then(|r| r.strip_prefix(&host).map(str::to_owned))
}

/// The manifest to push for the stored image `r`: the one it was pulled or
/// loaded with when all its blobs are here, else one made from its layer
/// blobs (see [`crate::blobs::blob`]; built layers with `compression`) with
/// media types `types`.
pub fn manifest_for(
    state: &State,
    r: &ImageRef,
    compression: Compression,
    types: MediaTypes,
) -> Result<Descriptor, Error> {
    if let Some(m) = r.manifest
        && let Ok(bytes) = state.content.read(&m)
        && let Ok(parsed) = serde_json::from_slice::<Manifest>(&bytes)
        && parsed.config.digest == r.id
    {
        let mut complete = state.content.has(&parsed.config.digest)?;
        for l in &parsed.layers {
            complete &= state.content.has(&l.digest)?;
        }
        if complete {
            let mt = if parsed.media_type.is_empty() {
                media::OCI_MANIFEST.to_owned()
            } else {
                parsed.media_type.clone()
            };
            return Ok(Descriptor {
                media_type: mt,
                digest: m,
                size: bytes.len() as u64,
                urls: Vec::new(),
                annotations: Default::default(),
                platform: None,
            });
        }
    }
    let config = kiln_store::layers::load_config(state, &r.id)?;
    let descs = crate::blobs::image_blobs(state, &r.id, &config, None, compression)?;
    let written = kiln_oci::write_image(&state.content, &config, &descs, types)
        .map_err(kiln_oci::Error::from)?;
    if written.config.digest != r.id {
        return Err(ImageError::ConfigReencode { id: r.id }.into());
    }
    Ok(written.manifest)
}

/// Pushes the manifest `manifest` (in the store) and its blobs under each of
/// `names`; returns the pushed digest.
pub fn push(
    state: &State,
    client: &Client,
    manifest: &Descriptor,
    names: &[String],
    log: Log<'_>,
) -> Result<Digest, Error> {
    for name in names {
        let reference = parse_name(name)?;
        log(&format!("pushing {reference}"));
        let tag = reference
            .tag()
            .map(str::to_owned)
            .unwrap_or_else(|| manifest.digest.to_string());
        push_manifest(state, client, &reference, manifest, &tag, log)?;
        log("DONE");
    }
    Ok(manifest.digest)
}

/// Pushes a multi-platform image: each platform's manifest (and its blobs)
/// by digest, then the index `index` that lists them, under each of `names`.
pub fn push_index(
    state: &State,
    client: &Client,
    index: &Descriptor,
    manifests: &[Descriptor],
    names: &[String],
    log: Log<'_>,
) -> Result<Digest, Error> {
    let bytes = state.content.read(&index.digest)?;
    for name in names {
        let reference = parse_name(name)?;
        log(&format!("pushing {reference}"));
        for m in manifests {
            push_manifest(state, client, &reference, m, &m.digest.to_string(), log)?;
        }
        let tag = reference
            .tag()
            .map(str::to_owned)
            .unwrap_or_else(|| index.digest.to_string());
        let pushed = client
            .put_manifest(&reference, &tag, &index.media_type, &bytes)
            .map_err(Error::from)?;
        if pushed != index.digest {
            return Err(err(
                &reference,
                RegistryProblem::Stored {
                    what: "index",
                    stored: pushed,
                    expected: index.digest,
                },
            ));
        }
        log(&format!(
            "{reference}: index digest: {} size: {}",
            index.digest,
            bytes.len()
        ));
        log("DONE");
    }
    Ok(index.digest)
}

fn parse_name(name: &str) -> Result<Reference, Error> {
    Ok(Reference::parse_normalized(name)
        .map_err(|source| ImageError::BadName {
            name: name.to_owned(),
            source,
        })?
        .with_default_tag())
}

/// Pushes the blobs of the image manifest `manifest`, then the manifest
/// under `tag` (a tag or its digest) of `reference`'s repository.
fn push_manifest(
    state: &State,
    client: &Client,
    reference: &Reference,
    manifest: &Descriptor,
    tag: &str,
    log: Log<'_>,
) -> Result<(), Error> {
    let bytes = state.content.read(&manifest.digest)?;
    let parsed: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| err(&manifest.digest, RegistryProblem::InvalidManifest(e)))?;
    let mut blobs = vec![parsed.config.clone()];
    blobs.extend(parsed.layers.iter().cloned());
    parallel(&blobs, |desc| {
        let started = std::time::Instant::now();
        let how = push_blob(state, client, reference, desc)?;
        log(&format!(
            "{} {}",
            desc.digest,
            match how {
                PushedBlob::Existed => "already exists".to_owned(),
                PushedBlob::Mounted => "mounted".to_owned(),
                PushedBlob::Uploaded =>
                    format!("{} pushed", transfer(desc.size, started.elapsed())),
            }
        ));
        Ok(())
    })?;
    let pushed = put_manifest_settled(client, reference, tag, manifest, &bytes, &blobs, log)?;
    if pushed != manifest.digest {
        return Err(err(
            reference,
            RegistryProblem::Stored {
                what: "manifest",
                stored: pushed,
                expected: manifest.digest,
            },
        ));
    }
    let mut all: Vec<Digest> = blobs.iter().map(|b| b.digest).collect();
    all.push(manifest.digest);
    remember(state, &all, &repository(reference));
    log(&format!(
        "{reference}: digest: {} size: {}",
        manifest.digest,
        bytes.len()
    ));
    Ok(())
}

/// How often a manifest whose blobs are all there is put again after the
/// registry refused it (400) for a blob.
const MANIFEST_SETTLE_ATTEMPTS: u32 = 5;

/// Puts `manifest` (whose blobs were just pushed) under `tag`. A registry
/// may still refuse it with 400 (`MANIFEST_BLOB_UNKNOWN`) for a blob it has:
/// the CNCF distribution server's filesystem storage rewrites a blob's link
/// in place (truncate, then write) when another client pushes the same blob,
/// so its check of the manifest's blobs can read the link empty; registries
/// on object storage have the same window between a write and a read. So
/// when the put fails with 400 and a `HEAD` of every blob finds it, the put
/// is tried again after a pause (the manifest's bytes are the same: the
/// retry is idempotent); a blob the registry really lacks, or a 400 that
/// persists, is the error it was.
fn put_manifest_settled(
    client: &Client,
    reference: &Reference,
    tag: &str,
    manifest: &Descriptor,
    bytes: &[u8],
    blobs: &[Descriptor],
    log: Log<'_>,
) -> Result<Digest, Error> {
    let mut pause = std::time::Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        let e = match client.put_manifest(reference, tag, &manifest.media_type, bytes) {
            Ok(d) => return Ok(d),
            Err(e) => e,
        };
        let refused = matches!(e, kiln_registry::RegistryError::Status { status: 400, .. });
        if !refused || attempt >= MANIFEST_SETTLE_ATTEMPTS {
            return Err(e.into());
        }
        for b in blobs {
            match client.head_blob(reference, &b.digest) {
                Ok(Some(_)) => {}
                // Missing (or not known): the refusal stands.
                _ => return Err(e.into()),
            }
        }
        log(&format!(
            "{reference}: the registry refused the manifest although it has each of its \
             blobs ({e}): putting it again"
        ));
        std::thread::sleep(pause);
        pause *= 2;
        attempt += 1;
    }
}

fn push_blob(
    state: &State,
    client: &Client,
    reference: &Reference,
    desc: &Descriptor,
) -> Result<PushedBlob, Error> {
    let mount = mount_source(state, &desc.digest, reference);
    let content = state.content.clone();
    let digest = desc.digest;
    client
        .push_blob(reference, desc, mount.as_deref(), &move || {
            content
                .open_blob(&digest)
                .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn std::io::Read + Send>)
                .map_err(std::io::Error::other)
        })
        .map_err(Error::from)
}
