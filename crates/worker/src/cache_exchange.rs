//! Cache export and import (`--cache-to`, `--cache-from`): the solver's
//! cache records of one build, with their layer blobs, as an OCI artifact
//! that a local directory or any OCI registry can hold.
//!
//! # Format (`kiln cache v1`)
//!
//! One OCI image manifest whose config has the media type
//! [`CONFIG_MEDIA_TYPE`] and whose layers are ordinary layer blobs (the very
//! blobs the build's images use, so the cache and the images share them in
//! a registry). The config is a table, not a graph:
//!
//! ```json
//! {"version":1,
//!  "layers":[{"diff_id":"sha256:…","blob":0}, …],
//!  "records":[{"key":"<solver key, hex>","layers":[0,3]}, …]}
//! ```
//!
//! A record says: the vertex with this cache key evaluates to the filesystem
//! made of these layers, bottom first (`blob` indexes the manifest's
//! layers). Keys already depend on their inputs' keys, so the table needs no
//! edges: it is a DAG by construction and needs none of the loop removal
//! BuildKit's cache export does. Records are sorted by key and layers
//! numbered in order of first use, so the same cache has the same digest.
//!
//! `mode=min` exports the records whose filesystem is a prefix of the
//! result's (the result's own steps and its base); `mode=max` every record
//! of the build, intermediate stages included.
//!
//! # Export merges on write
//!
//! An export writes the union of its records and those already at the
//! destination, bounded by `max-records` (least recently exported evicted
//! first, by the `age` each record carries); see [`merge_previous`] and
//! [`export_to_registry`] for what can race (ARCHITECTURE.md has the
//! consistency model).
//!
//! # Import is lazy
//!
//! [`RecordingCache`] answers the solver's lookups from the local cache
//! first, then from the imported records; an imported hit is a value whose
//! layers are *diffIDs* (`sha256:…`) instead of snapshot ids. Nothing is
//! downloaded for it: only when a step after the last hit needs the
//! filesystem ([`crate::LlbWorker`]'s `layers_of`) or an output needs the
//! image are the blobs fetched and unpacked ([`materialize`]). A registry
//! import records the cache's repository as holding the blobs, so pushing
//! the result to the same registry mounts them instead of uploading.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_llb::Digest;
use kiln_oci::{Compression, Descriptor, Manifest, MediaTypes, media};
use kiln_reference::Reference;
use kiln_registry::Client;
use kiln_snapshot::LayerId;
use kiln_solver::{CacheError, CacheStore, DirCache, Key};
use serde::{Deserialize, Serialize};

use crate::Value;
use crate::error::Error;
use crate::image;
use crate::state::{State, write_atomic};

/// Media type of the cache config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// The annotation naming the cache manifest in a local cache directory.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Which records an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The result's layers only.
    #[default]
    Min,
    /// Every step of every stage.
    Max,
}

/// Where a cache goes or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An OCI layout directory.
    Local(PathBuf),
    /// A registry reference (`host/repo:tag`).
    Registry(String),
    /// `--cache-to type=inline`: in the image's own config.
    Inline,
}

/// `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    pub location: Location,
    pub mode: Mode,
    pub compression: Compression,
    /// `ignore-error=true`: a failed export is reported, not fatal.
    pub ignore_error: bool,
    /// `mounts=true`: the build's `RUN --mount=type=cache` directories go too.
    pub mounts: bool,
    /// `max-records=N` (kiln's): at most this many records stay at the
    /// destination after merging with what is there; the least recently
    /// exported go first ([`DEFAULT_MAX_RECORDS`]).
    pub max_records: usize,
}

/// Records a cache destination keeps at most, unless `max-records=` says.
pub const DEFAULT_MAX_RECORDS: usize = 10_000;

/// Cache mounts a destination keeps at most (the least recently exported
/// go first).
const MAX_MOUNTS: usize = 256;

/// How often an export to a registry reads, merges and writes again when it
/// finds that another exporter replaced its write before it could check it.
const MERGE_ATTEMPTS: usize = 5;

/// `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    pub location: Location,
}

/// Splits `type=local,dest=d,mode=max` into its attributes.
fn attributes(flag: &str, spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            // buildx: a bare value is a registry reference.
            None if !spec.contains('=') => ("ref", part.trim()),
            None => {
                return Err(format!("{flag} {spec:?}: {part:?} is not KEY=VALUE"));
            }
        };
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("{flag} {spec:?}: {k} given twice"));
        }
    }
    if !out.contains_key("type") && out.contains_key("ref") {
        out.insert("type".to_owned(), "registry".to_owned());
    }
    Ok(out)
}

fn location(
    flag: &str,
    spec: &str,
    a: &mut BTreeMap<String, String>,
    dir_key: &str,
) -> Result<Location, String> {
    let kind = a.remove("type").unwrap_or_default();
    let missing = |what: &str| format!("{flag} {spec:?}: {what} is required");
    match kind.as_str() {
        "local" => Ok(Location::Local(PathBuf::from(
            a.remove(dir_key).ok_or_else(|| missing(dir_key))?,
        ))),
        "registry" => Ok(Location::Registry(
            a.remove("ref").ok_or_else(|| missing("ref"))?,
        )),
        "inline" if flag == "--cache-to" => Ok(Location::Inline),
        "inline" => Err(format!(
            "{flag} type=inline: an inline cache is read from its image: \
             --cache-from type=registry,ref=<image>"
        )),
        "gha" | "s3" | "azblob" => Err(format!(
            "{flag} type={kind} is not supported yet (kiln's caches go to type=local and \
             type=registry)"
        )),
        "" => Err(missing("type")),
        other => Err(format!(
            "{flag} {spec:?}: unknown cache type {other:?} (expected local, registry or inline)"
        )),
    }
}

fn no_rest(flag: &str, spec: &str, a: &BTreeMap<String, String>) -> Result<(), String> {
    match a.keys().next() {
        None => Ok(()),
        Some(k) => Err(format!("{flag} {spec:?}: unknown attribute {k:?}")),
    }
}

fn boolean(flag: &str, k: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{flag} {k}={v:?}: expected true or false")),
    }
}

impl CacheTo {
    /// Parses a `--cache-to` value, buildx's syntax.
    pub fn parse(spec: &str) -> Result<CacheTo, String> {
        const FLAG: &str = "--cache-to";
        let mut a = attributes(FLAG, spec)?;
        let location = location(FLAG, spec, &mut a, "dest")?;
        let mode = match a.remove("mode").as_deref() {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(m) => {
                return Err(format!("{FLAG} mode={m:?}: expected min or max"));
            }
        };
        let compression = match a.remove("compression").as_deref() {
            None | Some("gzip") => Compression::gzip(),
            Some("zstd") => Compression::zstd(),
            Some("uncompressed") => Compression::Uncompressed,
            Some(c) => {
                return Err(format!(
                    "{FLAG} compression={c:?}: expected gzip, zstd or uncompressed"
                ));
            }
        };
        let ignore_error = match a.remove("ignore-error") {
            Some(v) => boolean(FLAG, "ignore-error", &v)?,
            None => false,
        };
        let mounts = match a.remove("mounts") {
            Some(v) => boolean(FLAG, "mounts", &v)?,
            None => false,
        };
        let max_records = match a.remove("max-records") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "{FLAG} max-records={v:?}: expected a number of records above 0"
                    ));
                }
            },
            None => DEFAULT_MAX_RECORDS,
        };
        // What kiln's format always is.
        for (k, always) in [("image-manifest", "true"), ("oci-mediatypes", "true")] {
            if let Some(v) = a.remove(k)
                && v != always
            {
                return Err(format!(
                    "{FLAG} {k}={v}: kiln's cache is always an OCI image manifest ({k}={always})"
                ));
            }
        }
        no_rest(FLAG, spec, &a)?;
        if location == Location::Inline {
            // BuildKit's inline cache is min mode only; it has no blobs of
            // its own to carry mounts, and its layers are the image's.
            if mode == Mode::Max {
                return Err(format!(
                    "{FLAG} type=inline: mode=max is not supported (an inline cache holds the \
                     image's own layers; use type=registry or type=local for mode=max)"
                ));
            }
            if mounts {
                return Err(format!(
                    "{FLAG} type=inline: mounts=true is not supported (cache mounts travel with \
                     type=registry or type=local)"
                ));
            }
            if spec.contains("compression=") {
                return Err(format!(
                    "{FLAG} type=inline: compression= does not apply (the layers are the image's, \
                     compressed as its output says)"
                ));
            }
        }
        Ok(CacheTo {
            location,
            mode,
            compression,
            ignore_error,
            mounts,
            max_records,
        })
    }
}

impl CacheFrom {
    /// Parses a `--cache-from` value, buildx's syntax.
    pub fn parse(spec: &str) -> Result<CacheFrom, String> {
        const FLAG: &str = "--cache-from";
        let mut a = attributes(FLAG, spec)?;
        let location = location(FLAG, spec, &mut a, "src")?;
        no_rest(FLAG, spec, &a)?;
        Ok(CacheFrom { location })
    }
}

/// The cache config blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CacheConfig {
    version: u32,
    layers: Vec<CacheLayer>,
    records: Vec<CacheRecord>,
    /// `RUN --mount=type=cache` directories (`mounts=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<CacheMountRecord>,
    /// Keys of content-keyed steps → the content key their record is under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    links: Vec<CacheLink>,
}

/// A content-keyed step (a `COPY --from`): its key names its source stage
/// by key, `target` by the content it copied, and the record is under
/// `target` (see `kiln_solver::Worker::keys_by_content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheLink {
    key: Key,
    target: Key,
}

/// A cache mount: its directory name under `<root>/cache-mounts/` (which
/// scopes it as the build did), its id, and the blob of its content (a tar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheMountRecord {
    key: String,
    id: String,
    /// Index into the manifest's layers.
    blob: usize,
    /// Exports to this destination since this mount was last exported (0,
    /// left out, for the export that wrote it).
    #[serde(default, skip_serializing_if = "is_zero")]
    age: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheLayer {
    diff_id: Digest,
    /// Index into the manifest's layers.
    blob: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheRecord {
    key: Key,
    layers: Vec<usize>,
    /// Exports to this destination since this record was last exported (0,
    /// left out, for the export that wrote it): the eviction order.
    #[serde(default, skip_serializing_if = "is_zero")]
    age: u32,
}

/// Where the blobs of an imported cache are.
#[derive(Debug)]
enum BlobSource {
    Dir(PathBuf),
    Registry {
        client: Client,
        reference: Reference,
    },
}

/// The records of the caches given with `--cache-from`.
#[derive(Debug, Default)]
pub struct Imported {
    /// diffID → its blob and where to get it.
    layers: HashMap<Digest, (Descriptor, Arc<BlobSource>)>,
    /// key → diffIDs, bottom first.
    records: HashMap<Key, Vec<Digest>>,
    /// Cache mount directory name → its id, blob and where to get it.
    mounts: HashMap<String, (String, Descriptor, Arc<BlobSource>)>,
    /// Key of a content-keyed step → its content key.
    links: HashMap<Key, Key>,
}

impl Imported {
    /// Adds what `other` imported (a multi-platform build imports the
    /// images of `--cache-from` once per platform); entries already here win.
    pub fn merge(&mut self, other: Imported) {
        for (k, v) in other.layers {
            self.layers.entry(k).or_insert(v);
        }
        for (k, v) in other.records {
            self.records.entry(k).or_insert(v);
        }
        for (k, v) in other.mounts {
            self.mounts.entry(k).or_insert(v);
        }
        for (k, v) in other.links {
            self.links.entry(k).or_insert(v);
        }
    }

    /// Number of records imported.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing was imported.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of cache mounts imported.
    pub fn mounts_len(&self) -> usize {
        self.mounts.len()
    }

    /// Whether the layer with `diff_id` can be fetched from an imported cache.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layers.contains_key(diff_id)
    }
}

/// Reads the cache manifests `from` names (the manifests and configs only;
/// no layer blob). A registry cache that does not exist yet is skipped with
/// a warning through `log`, as BuildKit does.
pub fn import(
    from: &[CacheFrom],
    client: Option<&Client>,
    state: &State,
    platform: &kiln_llb::Platform,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Imported, Error> {
    let mut out = Imported::default();
    for f in from {
        let (manifest, config, source) = match &f.location {
            Location::Local(dir) => {
                let Some((m, c)) = read_local(dir)? else {
                    log(&format!(
                        "warning: --cache-from {}: no cache there yet",
                        dir.display()
                    ));
                    continue;
                };
                (m, c, BlobSource::Dir(dir.clone()))
            }
            Location::Inline => {
                return Err(Error::Other(
                    "--cache-from type=inline: read an inline cache from its image with \
                     --cache-from type=registry,ref=<image>"
                        .to_owned(),
                ));
            }
            Location::Registry(name) => {
                let client = client.ok_or_else(|| {
                    Error::Other("importing a registry cache needs a registry client".to_owned())
                })?;
                let reference = Reference::parse_normalized(name)
                    .map_err(|e| Error::Other(format!("--cache-from ref {name:?}: {e}")))?
                    .with_default_tag();
                let fetched = match client.resolve(&reference, platform) {
                    Ok(r) => r.manifest,
                    Err(kiln_registry::RegistryError::NotFound { .. }) => {
                        log(&format!("warning: --cache-from {reference}: not found"));
                        continue;
                    }
                    Err(e) => return Err(Error::Other(format!("--cache-from {reference}: {e}"))),
                };
                let what = reference.to_string();
                let manifest: Manifest = serde_json::from_slice(&fetched.bytes)
                    .map_err(|e| Error::Other(format!("cache {what}: invalid manifest: {e}")))?;
                client
                    .fetch_blob(&reference, &manifest.config, &state.content, &|_| {})
                    .map_err(|e| Error::Other(format!("--cache-from {reference}: {e}")))?;
                let config_bytes = state.content.read(&manifest.config.digest)?;
                let config = if media::is_image_config(&manifest.config.media_type) {
                    // An image: its inline cache, if it was built with one.
                    match inline_config(&config_bytes, &what)? {
                        Some(c) => c,
                        None => {
                            log(&format!(
                                "warning: --cache-from {reference}: an image without an inline \
                                 cache (build it with --cache-to type=inline)"
                            ));
                            continue;
                        }
                    }
                } else {
                    check_cache_manifest(&manifest, &what)?;
                    parse_config(&config_bytes, &what)?
                };
                // The blobs live in that repository: a push of the result
                // to the same registry mounts them.
                let mut digests: Vec<Digest> = manifest.layers.iter().map(|l| l.digest).collect();
                digests.push(manifest.config.digest);
                crate::registry::remember(
                    state,
                    &digests,
                    &format!("{}/{}", reference.domain(), reference.path()),
                );
                (
                    manifest,
                    config,
                    BlobSource::Registry {
                        client: client.clone(),
                        reference,
                    },
                )
            }
        };
        let source = Arc::new(source);
        let mut diff_ids = Vec::with_capacity(config.layers.len());
        // A record's blob index, checked against the manifest.
        let blob_at = |i: usize, what: String| {
            manifest.layers.get(i).ok_or_else(|| {
                Error::Other(format!(
                    "cache {}: {what} names blob #{i} of {}",
                    f.location.describe(),
                    manifest.layers.len()
                ))
            })
        };
        for l in &config.layers {
            let blob = blob_at(l.blob, format!("layer {}", l.diff_id))?;
            out.layers
                .entry(l.diff_id)
                .or_insert_with(|| (blob.clone(), source.clone()));
            diff_ids.push(l.diff_id);
        }
        for m in &config.mounts {
            let blob = blob_at(m.blob, format!("cache mount {:?}", m.id))?;
            if m.key.is_empty() || !m.key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Other(format!(
                    "cache {}: invalid cache mount key {:?}",
                    f.location.describe(),
                    m.key
                )));
            }
            out.mounts
                .entry(m.key.clone())
                .or_insert_with(|| (m.id.clone(), blob.clone(), source.clone()));
        }
        for r in config.records {
            let layers = r
                .layers
                .iter()
                .map(|i| {
                    diff_ids.get(*i).copied().ok_or_else(|| {
                        Error::Other(format!(
                            "cache {}: record {} names layer #{i} of {}",
                            f.location.describe(),
                            r.key,
                            diff_ids.len()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.records.entry(r.key).or_insert(layers);
        }
        for l in config.links {
            out.links.entry(l.key).or_insert(l.target);
        }
    }
    Ok(out)
}

impl Location {
    fn describe(&self) -> String {
        match self {
            Location::Inline => "inline".to_owned(),
            Location::Local(d) => d.display().to_string(),
            Location::Registry(r) => r.clone(),
        }
    }
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest, Error> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::Other(format!("cache {what}: invalid manifest: {e}")))?;
    check_cache_manifest(&m, what)?;
    Ok(m)
}

fn check_cache_manifest(m: &Manifest, what: &str) -> Result<(), Error> {
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(Error::Other(format!(
            "cache {what}: not a kiln cache (its config is of type {:?}, expected {CONFIG_MEDIA_TYPE:?})",
            m.config.media_type
        )));
    }
    Ok(())
}

/// The inline cache in an image config (`kiln.cache.v1`), if any.
fn inline_config(config: &[u8], what: &str) -> Result<Option<CacheConfig>, Error> {
    let image = kiln_oci::ImageConfigFile::from_json(config, what)
        .map_err(|e| Error::Other(format!("cache {what}: {e}")))?;
    let Some(inline) = image.inline_cache else {
        return Ok(None);
    };
    let c: CacheConfig = serde_json::from_value(inline)
        .map_err(|e| Error::Other(format!("cache {what}: invalid inline cache: {e}")))?;
    if c.version != 1 {
        return Err(Error::Other(format!(
            "cache {what}: inline cache version {} (this kiln reads version 1)",
            c.version
        )));
    }
    Ok(Some(c))
}

/// The records of a result an inline cache holds (`--cache-to
/// type=inline`): those whose filesystem is a prefix of the result's, as
/// `mode=min`, each by its number of layers; and the links to them.
#[derive(Debug, Clone, Default)]
pub struct InlineRecords {
    records: Vec<(Key, usize)>,
    links: Vec<(Key, Key)>,
}

impl InlineRecords {
    /// Selects the records of `result` (its layers, bottom first) among
    /// what the solve saw.
    pub fn select(
        state: &State,
        records: &[(Key, Vec<String>)],
        links: &[(Key, Key)],
        result: &[String],
    ) -> InlineRecords {
        let result: Vec<String> = result.iter().map(|l| canonical(state, l)).collect();
        let records: Vec<(Key, usize)> = records
            .iter()
            .filter_map(|(k, ls)| {
                let ls: Vec<String> = ls.iter().map(|l| canonical(state, l)).collect();
                (!ls.is_empty() && ls.len() <= result.len() && result[..ls.len()] == ls[..])
                    .then_some((*k, ls.len()))
            })
            .collect();
        let written: std::collections::HashSet<Key> = records.iter().map(|r| r.0).collect();
        let links = links
            .iter()
            .filter(|(_, t)| written.contains(t))
            .copied()
            .collect();
        InlineRecords { records, links }
    }

    /// The cache config to put in the image config, whose layers have
    /// `diff_ids` (blob `i` is the image's layer `i`).
    pub fn config(&self, diff_ids: &[Digest]) -> Result<serde_json::Value, Error> {
        let config = CacheConfig {
            version: 1,
            layers: diff_ids
                .iter()
                .enumerate()
                .map(|(blob, d)| CacheLayer { diff_id: *d, blob })
                .collect(),
            records: self
                .records
                .iter()
                .filter(|(_, n)| *n <= diff_ids.len())
                .map(|(key, n)| CacheRecord {
                    key: *key,
                    layers: (0..*n).collect(),
                    age: 0,
                })
                .collect(),
            mounts: Vec::new(),
            links: self
                .links
                .iter()
                .map(|(key, target)| CacheLink {
                    key: *key,
                    target: *target,
                })
                .collect(),
        };
        serde_json::to_value(&config)
            .map_err(|e| Error::Other(format!("encoding the inline cache: {e}")))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn parse_config(bytes: &[u8], what: &str) -> Result<CacheConfig, Error> {
    let c: CacheConfig = serde_json::from_slice(bytes)
        .map_err(|e| Error::Other(format!("cache {what}: invalid cache config: {e}")))?;
    if c.version != 1 {
        return Err(Error::Other(format!(
            "cache {what}: cache format version {} is not supported (kiln reads version 1)",
            c.version
        )));
    }
    Ok(c)
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

/// The blob file `digest` of a local cache directory.
fn local_blob(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// The manifest and config of the local cache in `dir`; `None` when the
/// directory has no cache yet.
fn read_local(dir: &Path) -> Result<Option<(Manifest, CacheConfig)>, Error> {
    let index_path = dir.join("index.json");
    let bytes = match fs::read(&index_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", &index_path)(e)),
    };
    let index: kiln_oci::Index = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: invalid OCI index: {e}", index_path.display())))?;
    let Some(d) = index
        .manifests
        .iter()
        .rev()
        .find(|d| media::is_manifest(&d.media_type))
    else {
        return Err(Error::Other(format!(
            "{}: no manifest in this OCI layout",
            index_path.display()
        )));
    };
    let read = |digest: &Digest| {
        let p = local_blob(dir, digest);
        let b = fs::read(&p).map_err(io_err("reading", &p))?;
        let actual = Digest::of(&b);
        if actual != *digest {
            return Err(Error::Other(format!(
                "{}: content does not match its name (got {actual})",
                p.display()
            )));
        }
        Ok(b)
    };
    let what = dir.display().to_string();
    let manifest = parse_manifest(&read(&d.digest)?, &what)?;
    let config = parse_config(&read(&manifest.config.digest)?, &what)?;
    Ok(Some((manifest, config)))
}

/// The cache store of a build: the local cache, then the imported records;
/// remembers every record the solve looked up or stored, for the export.
pub struct RecordingCache {
    local: Arc<DirCache>,
    imported: Arc<Imported>,
    seen: Mutex<HashMap<Key, Vec<u8>>>,
}

impl std::fmt::Debug for RecordingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingCache")
            .field("imported", &self.imported.len())
            .finish_non_exhaustive()
    }
}

impl RecordingCache {
    pub fn new(local: Arc<DirCache>, imported: Arc<Imported>) -> RecordingCache {
        RecordingCache {
            local,
            imported,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, key: &Key, bytes: &[u8]) {
        if let Ok(mut s) = self.seen.lock() {
            s.insert(*key, bytes.to_vec());
        }
    }

    /// The filesystem records the solve saw: key → layers.
    pub fn records(&self) -> Vec<(Key, Vec<String>)> {
        let seen = match self.seen.lock() {
            Ok(s) => s.clone(),
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<(Key, Vec<String>)> = seen
            .into_iter()
            .filter_map(|(k, b)| match serde_json::from_slice::<Value>(&b).ok()? {
                Value::Fs { layers } if !layers.is_empty() => Some((k, layers)),
                _ => None,
            })
            .collect();
        out.sort_by_key(|r| r.0);
        out
    }

    /// The links the solve saw: key of a content-keyed step → content key.
    pub fn links(&self) -> Vec<(Key, Key)> {
        let Ok(seen) = self.seen.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(Key, Key)> = seen
            .iter()
            .filter_map(|(k, b)| Some((*k, kiln_solver::parse_link(b)?)))
            .collect();
        out.sort();
        out
    }
}

impl CacheStore for RecordingCache {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, CacheError> {
        if let Some(b) = self.local.get(key)? {
            self.record(key, &b);
            return Ok(Some(b));
        }
        if let Some(target) = self.imported.links.get(key) {
            let b = kiln_solver::link_bytes(target);
            self.record(key, &b);
            return Ok(Some(b));
        }
        let Some(layers) = self.imported.records.get(key) else {
            return Ok(None);
        };
        let value = Value::Fs {
            layers: layers.iter().map(|d| d.to_string()).collect(),
        };
        let Ok(b) = serde_json::to_vec(&value) else {
            return Ok(None);
        };
        self.record(key, &b);
        Ok(Some(b))
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<(), CacheError> {
        self.local.put(key, value)?;
        self.record(key, value);
        Ok(())
    }

    fn claim(
        &self,
        key: &Key,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<kiln_solver::Claim>, CacheError> {
        self.local.claim(key, cancelled)
    }
}

/// A layer of a value: a snapshot, or (an imported cache hit) a diffID whose
/// blob has not been fetched yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerRef {
    Snapshot(LayerId),
    Remote(Digest),
}

impl LayerRef {
    pub fn parse(s: &str) -> Result<LayerRef, Error> {
        if s.starts_with("sha256:") {
            let d = s
                .parse()
                .map_err(|_| Error::Other(format!("invalid layer diffID {s:?}")))?;
            return Ok(LayerRef::Remote(d));
        }
        Ok(LayerRef::Snapshot(LayerId::parse(s)?))
    }
}

/// Whether a layer of a cached value can still be had: a snapshot that
/// exists, or a diffID that is unpacked, has a blob here or in an imported
/// cache.
pub fn layer_available(state: &State, imported: &Imported, layer: &str) -> bool {
    match LayerRef::parse(layer) {
        Ok(LayerRef::Snapshot(id)) => state.layers.exists(&id),
        Ok(LayerRef::Remote(d)) => {
            imported.has_layer(&d)
                || matches!(
                    state
                        .layers
                        .find_by_label(image::LABEL_DIFF_ID, &d.to_string()),
                    Ok(Some(_))
                )
                || has_blob(state, &d)
        }
        Err(_) => false,
    }
}

fn has_blob(state: &State, diff_id: &Digest) -> bool {
    crate::blobs::stored_blobs(state, diff_id).is_ok_and(|b| !b.is_empty())
}

/// Copies blob `desc` from `source` into the content store (a no-op when it
/// is there).
fn fetch_into_store(state: &State, desc: &Descriptor, source: &BlobSource) -> Result<(), Error> {
    if state.content.has(&desc.digest)? {
        return Ok(());
    }
    match source {
        BlobSource::Dir(dir) => {
            let p = local_blob(dir, &desc.digest);
            let f = fs::File::open(&p).map_err(io_err("opening", &p))?;
            state
                .content
                .put_reader(io::BufReader::new(f), Some(&desc.digest))?;
        }
        BlobSource::Registry { client, reference } => client
            .fetch_blob(reference, desc, &state.content, &|_| {})
            .map_err(|e| Error::Other(format!("cache {reference}: {e}")))?,
    }
    Ok(())
}

/// Restores the imported cache mount `key` into `dest` (a directory to be
/// created); `false` when no imported cache has it.
pub fn restore_mount(
    state: &State,
    imported: &Imported,
    key: &str,
    dest: &Path,
) -> Result<bool, Error> {
    let Some((_, desc, source)) = imported.mounts.get(key) else {
        return Ok(false);
    };
    fetch_into_store(state, desc, source)?;
    let file = state.content.open_blob(&desc.digest)?;
    let (_, tar) = kiln_oci::decompress(io::BufReader::new(file)).map_err(|e| Error::Io {
        what: format!("decompressing cache mount blob {}", desc.digest),
        source: e,
    })?;
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    kiln_snapshot::unpack_layer(tar, dest)?;
    Ok(true)
}

/// Makes sure the content store has a blob of layer `diff_id`, fetching it
/// from the imported cache that has it.
fn ensure_blob(state: &State, imported: &Imported, diff_id: &Digest) -> Result<(), Error> {
    if has_blob(state, diff_id) {
        return Ok(());
    }
    let (desc, source) = imported.layers.get(diff_id).ok_or_else(|| {
        Error::Other(format!(
            "layer {diff_id}: not in the store and in no imported cache"
        ))
    })?;
    fetch_into_store(state, desc, source)?;
    let compression = crate::registry::layer_compression(&desc.media_type).ok_or_else(|| {
        Error::Other(format!(
            "layer {diff_id}: unknown layer media type {:?}",
            desc.media_type
        ))
    })?;
    // Checked before it is recorded as the layer: a cache is input.
    let size = kiln_oci::verify_blob(&state.content, &desc.digest, diff_id)?;
    state
        .layer_blobs
        .add(&state.content, diff_id, compression, desc)?;
    state.layer_blobs.set_size(diff_id, size)?;
    Ok(())
}

/// The snapshot of a layer of a value, fetching and unpacking an imported
/// layer the first time it is needed.
pub fn materialize(state: &State, imported: &Imported, layer: &str) -> Result<LayerId, Error> {
    match LayerRef::parse(layer)? {
        LayerRef::Snapshot(id) => Ok(id),
        LayerRef::Remote(d) => {
            if let Some(id) = state
                .layers
                .find_by_label(image::LABEL_DIFF_ID, &d.to_string())?
            {
                return Ok(id);
            }
            ensure_blob(state, imported, &d)?;
            image::unpacked_layer(state, &d)
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub records: usize,
    pub layers: usize,
    pub mounts: usize,
    /// The cache manifest.
    pub manifest: Digest,
}

/// A layer string of a value as the export sees it: an unpacked snapshot
/// by the diffID it was unpacked from, anything else as it is.
fn canonical(state: &State, layer: &str) -> String {
    if let Ok(LayerRef::Snapshot(id)) = LayerRef::parse(layer)
        && let Ok(l) = state.layers.get(&id)
        && let Some(d) = l.meta.labels.get(image::LABEL_DIFF_ID)
    {
        return d.clone();
    }
    layer.to_owned()
}

/// The build an export writes the cache of.
#[derive(Debug, Clone, Copy)]
pub struct ExportRequest<'a> {
    /// What the solve saw ([`RecordingCache::records`]).
    pub records: &'a [(Key, Vec<String>)],
    /// The links it saw ([`RecordingCache::links`]).
    pub links: &'a [(Key, Key)],
    /// Each result's layers, bottom first (one result per target platform).
    pub results: &'a [Vec<String>],
    /// The build's mtime clamp (`SOURCE_DATE_EPOCH`).
    pub clamp: Option<i64>,
    /// Names of the cache mount directories the build's steps use, for
    /// `mounts=true`.
    pub cache_mounts: &'a [String],
}

/// Writes the cache of a build: its records selected by `to.mode` against
/// the result's layers, and their blobs.
pub fn export(
    state: &State,
    imported: &Imported,
    req: ExportRequest<'_>,
    to: &CacheTo,
    client: Option<&Client>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Exported, Error> {
    let ExportRequest {
        records,
        links,
        results,
        clamp,
        cache_mounts,
    } = req;
    if to.location == Location::Inline {
        return Err(Error::Other(
            "an inline cache is written into the image config, not exported".to_owned(),
        ));
    }
    // Unpacked layers are named by their diffID, as imported hits are, so
    // that a chain is recognised whichever way its layers came.
    let results: Vec<Vec<String>> = results
        .iter()
        .map(|r| r.iter().map(|l| canonical(state, l)).collect())
        .collect();
    let records: Vec<(Key, Vec<String>)> = records
        .iter()
        .map(|(k, ls)| (*k, ls.iter().map(|l| canonical(state, l)).collect()))
        .collect();
    let chosen: Vec<&(Key, Vec<String>)> = records
        .iter()
        .filter(|(_, layers)| match to.mode {
            Mode::Max => true,
            Mode::Min => results
                .iter()
                .any(|result| layers.len() <= result.len() && result[..layers.len()] == layers[..]),
        })
        .collect();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    let mut config = CacheConfig {
        version: 1,
        ..CacheConfig::default()
    };
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut blob_index: HashMap<Digest, usize> = HashMap::new();
    for (key, layers) in &chosen {
        let mut idx = Vec::with_capacity(layers.len());
        for l in layers {
            if let Some(i) = index_of.get(l.as_str()) {
                idx.push(*i);
                continue;
            }
            let (diff_id, desc) = match LayerRef::parse(l)? {
                LayerRef::Snapshot(id) => (
                    image::diff_id(state, &id, clamp)?,
                    image::layer_blob(state, &id, clamp, to.compression)?,
                ),
                LayerRef::Remote(d) => {
                    ensure_blob(state, imported, &d)?;
                    (
                        d,
                        crate::blobs::blob(state, &d, to.compression, None, &Default::default())?,
                    )
                }
            };
            let blob = *blob_index.entry(desc.digest).or_insert_with(|| {
                blobs.push(desc.clone());
                blobs.len() - 1
            });
            let i = config.layers.len();
            config.layers.push(CacheLayer { diff_id, blob });
            index_of.insert(l.as_str(), i);
            idx.push(i);
        }
        config.records.push(CacheRecord {
            key: *key,
            layers: idx,
            age: 0,
        });
    }
    // The links to records written (so a min-mode cache has those of the
    // result's chain).
    let written: std::collections::HashSet<Key> = config.records.iter().map(|r| r.key).collect();
    config.links = links
        .iter()
        .filter(|(_, target)| written.contains(target))
        .map(|(key, target)| CacheLink {
            key: *key,
            target: *target,
        })
        .collect();
    if to.mounts {
        for key in cache_mounts {
            let dir = state.root.join(crate::mounts::CACHE_MOUNTS_DIR).join(key);
            let data = dir.join("data");
            if !data.is_dir() {
                continue;
            }
            let id = fs::read_to_string(dir.join("id")).unwrap_or_default();
            let desc = mount_blob(state, &data, to.compression)?;
            let blob = *blob_index.entry(desc.digest).or_insert_with(|| {
                blobs.push(desc.clone());
                blobs.len() - 1
            });
            config.mounts.push(CacheMountRecord {
                key: key.clone(),
                id,
                blob,
                age: 0,
            });
        }
    }
    let what = to.location.describe();
    let (config, manifest_desc) = match &to.location {
        Location::Inline => unreachable!("refused above"),
        Location::Local(dir) => {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            // Exporters on one machine (or one shared file system) take
            // turns: read, merge and write under the directory's lock.
            let lock_path = dir.join(LOCAL_LOCK);
            let lock = fs::File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
            lock.lock().map_err(io_err("locking", &lock_path))?;
            let prev = match read_local(dir) {
                Ok(p) => p,
                Err(e) => {
                    log(&format!(
                        "warning: --cache-to {what}: replacing what is there, not a kiln cache: {e}"
                    ));
                    None
                }
            };
            let (config, blobs) = merged_with(&config, &blobs, prev.as_ref(), to, &what, log)?;
            let (manifest, desc) = cache_manifest(state, &config, blobs)?;
            write_local(state, dir, &manifest, &desc)?;
            drop(lock);
            (config, desc)
        }
        Location::Registry(name) => {
            let client = client.ok_or_else(|| {
                Error::Other("exporting to a registry needs a registry client".to_owned())
            })?;
            export_to_registry(state, client, name, &config, &blobs, to, log)?
        }
    };
    Ok(Exported {
        records: config.records.len(),
        layers: config.layers.len(),
        mounts: config.mounts.len(),
        manifest: manifest_desc.digest,
    })
}

/// The lock file exporters to one local cache directory take turns with.
const LOCAL_LOCK: &str = ".kiln-cache.lock";

/// Largest cache config read back from a registry to merge with.
const CONFIG_LIMIT: u64 = 256 << 20;

/// How long an export to a registry waits, after its write, before it checks
/// a second time that the reference still holds its records.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// The config and manifest of a cache, put into the content store.
fn cache_manifest(
    state: &State,
    config: &CacheConfig,
    blobs: Vec<Descriptor>,
) -> Result<(Manifest, Descriptor), Error> {
    let config_blob = state.content.put_json(config)?;
    let mut manifest = Manifest::new(
        MediaTypes::Oci,
        Descriptor::new(CONFIG_MEDIA_TYPE, config_blob),
        blobs,
    );
    manifest.annotations.insert(
        "org.opencontainers.image.title".to_owned(),
        "kiln build cache".to_owned(),
    );
    let manifest_blob = state.content.put_json(&manifest)?;
    Ok((
        manifest,
        Descriptor::new(media::OCI_MANIFEST, manifest_blob),
    ))
}

/// This export merged with the cache `prev` at the destination (if any).
fn merged_with(
    config: &CacheConfig,
    blobs: &[Descriptor],
    prev: Option<&Cache>,
    to: &CacheTo,
    what: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(CacheConfig, Vec<Descriptor>), Error> {
    let Some((m, c)) = prev else {
        return Ok((config.clone(), blobs.to_vec()));
    };
    let (config, blobs, merged) =
        merge_previous((config, blobs), (c, &m.layers), to.max_records, what)?;
    log(&format!(
        "merged with the cache at {what}: {} records of earlier exports kept, {} evicted \
         (max-records={})",
        merged.kept, merged.evicted, to.max_records
    ));
    Ok((config, blobs))
}

/// A cache: its manifest and config.
type Cache = (Manifest, CacheConfig);

/// The kiln cache a registry reference holds now: its manifest digest, and
/// the manifest and config when it is a kiln cache.
fn read_registry(
    client: &Client,
    reference: &Reference,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Option<(Digest, Option<Cache>)>, Error> {
    let fetched = match client.get_manifest(reference) {
        Ok(f) => f,
        Err(kiln_registry::RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::Registry(e.to_string())),
    };
    let what = reference.to_string();
    let manifest = match serde_json::from_slice::<Manifest>(&fetched.bytes) {
        Ok(m) if m.config.media_type == CONFIG_MEDIA_TYPE => m,
        _ => {
            log(&format!(
                "warning: --cache-to {what}: replacing {} ({}), which is not a kiln cache",
                fetched.digest, fetched.media_type
            ));
            return Ok(Some((fetched.digest, None)));
        }
    };
    let bytes = client
        .get_blob_bytes(reference, &manifest.config, CONFIG_LIMIT)
        .map_err(|e| Error::Registry(e.to_string()))?;
    let config = parse_config(&bytes, &what)?;
    Ok(Some((fetched.digest, Some((manifest, config)))))
}

/// Exports to a registry reference, merging on write: this export's blobs
/// (and its own manifest, by digest) first; then, quickly, read what the
/// reference holds, merge, write the merged manifest under the tag; then
/// check, right away and again after [`SETTLE`], that the reference still
/// holds every record of this export, reading, merging and writing again
/// when another exporter replaced it with a cache that lacks them.
fn export_to_registry(
    state: &State,
    client: &Client,
    name: &str,
    config: &CacheConfig,
    blobs: &[Descriptor],
    to: &CacheTo,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(CacheConfig, Descriptor), Error> {
    let reference = Reference::parse_normalized(name)
        .map_err(|e| Error::Other(format!("--cache-to ref {name:?}: {e}")))?
        .with_default_tag();
    let what = reference.to_string();
    let (_, own_desc) = cache_manifest(state, config, blobs.to_vec())?;
    let by_digest = format!(
        "{}/{}@{}",
        reference.domain(),
        reference.path(),
        own_desc.digest
    );
    crate::registry::push(state, client, &own_desc, &[by_digest], log)?;
    let own_keys: Vec<Key> = config.records.iter().map(|r| r.key).collect();
    let holds_own = |c: &CacheConfig| {
        let have: std::collections::HashSet<Key> = c.records.iter().map(|r| r.key).collect();
        own_keys.iter().all(|k| have.contains(k))
    };
    for _ in 0..MERGE_ATTEMPTS {
        let prev = read_registry(client, &reference, log)?;
        let prev_cache = prev.as_ref().and_then(|(_, c)| c.as_ref());
        let (merged, merged_blobs) = merged_with(config, blobs, prev_cache, to, &what, log)?;
        let (_, desc) = cache_manifest(state, &merged, merged_blobs)?;
        crate::registry::push(state, client, &desc, &[name.to_owned()], log)?;
        let mut replaced = false;
        for wait in [None, Some(SETTLE)] {
            if let Some(w) = wait {
                std::thread::sleep(w);
            }
            match read_registry(client, &reference, log)? {
                Some((d, _)) if d == desc.digest => {}
                Some((d, Some((_, c)))) if holds_own(&c) => {
                    log(&format!(
                        "--cache-to {what}: another exporter wrote {d} after this one, with \
                         this export's records"
                    ));
                }
                other => {
                    log(&format!(
                        "--cache-to {what}: another exporter replaced this export's cache \
                         ({}) without its records: merging again",
                        other.map_or_else(|| "deleted".to_owned(), |(d, _)| d.to_string())
                    ));
                    replaced = true;
                    break;
                }
            }
        }
        if !replaced {
            return Ok((merged, desc));
        }
    }
    Err(Error::Registry(format!(
        "--cache-to {what}: other exporters replaced this export's cache {MERGE_ATTEMPTS} times \
         without its records; giving up (its records are in the registry by digest, \
         {}@{})",
        reference.name(),
        own_desc.digest
    )))
}

/// A record's layers, bottom first: diffID and blob.
type FlatLayers = Vec<(Digest, Descriptor)>;

/// A cache config with its blobs resolved: every record's layers as
/// (diffID, blob), every mount's blob; what merging works on.
#[derive(Debug, Default)]
struct Flat {
    records: BTreeMap<Key, (u32, FlatLayers)>,
    mounts: BTreeMap<String, (u32, String, Descriptor)>,
    links: BTreeMap<Key, Key>,
}

impl Flat {
    fn of(c: &CacheConfig, blobs: &[Descriptor], what: &str) -> Result<Flat, Error> {
        let blob = |i: usize| {
            blobs.get(i).cloned().ok_or_else(|| {
                Error::Other(format!("cache {what}: names blob #{i} of {}", blobs.len()))
            })
        };
        let layers = c
            .layers
            .iter()
            .map(|l| Ok((l.diff_id, blob(l.blob)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut out = Flat::default();
        for r in &c.records {
            let ls = r
                .layers
                .iter()
                .map(|i| {
                    layers.get(*i).cloned().ok_or_else(|| {
                        Error::Other(format!(
                            "cache {what}: record {} names layer #{i} of {}",
                            r.key,
                            layers.len()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.records.insert(r.key, (r.age, ls));
        }
        for m in &c.mounts {
            out.mounts
                .insert(m.key.clone(), (m.age, m.id.clone(), blob(m.blob)?));
        }
        for l in &c.links {
            out.links.insert(l.key, l.target);
        }
        Ok(out)
    }

    /// The config and blobs: records by key, layers and blobs numbered by
    /// first use (records, then mounts).
    fn build(&self) -> (CacheConfig, Vec<Descriptor>) {
        let mut config = CacheConfig {
            version: 1,
            ..CacheConfig::default()
        };
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut blob_at: HashMap<Digest, usize> = HashMap::new();
        let mut blob_index = |d: &Descriptor, blobs: &mut Vec<Descriptor>| {
            *blob_at.entry(d.digest).or_insert_with(|| {
                blobs.push(d.clone());
                blobs.len() - 1
            })
        };
        let mut layer_at: HashMap<(Digest, Digest), usize> = HashMap::new();
        for (key, (age, layers)) in &self.records {
            let mut idx = Vec::with_capacity(layers.len());
            for (diff_id, desc) in layers {
                let i = match layer_at.get(&(*diff_id, desc.digest)) {
                    Some(i) => *i,
                    None => {
                        let blob = blob_index(desc, &mut blobs);
                        config.layers.push(CacheLayer {
                            diff_id: *diff_id,
                            blob,
                        });
                        layer_at.insert((*diff_id, desc.digest), config.layers.len() - 1);
                        config.layers.len() - 1
                    }
                };
                idx.push(i);
            }
            config.records.push(CacheRecord {
                key: *key,
                layers: idx,
                age: *age,
            });
        }
        for (key, (age, id, desc)) in &self.mounts {
            let blob = blob_index(desc, &mut blobs);
            config.mounts.push(CacheMountRecord {
                key: key.clone(),
                id: id.clone(),
                blob,
                age: *age,
            });
        }
        config.links = self
            .links
            .iter()
            .filter(|(_, target)| self.records.contains_key(target))
            .map(|(key, target)| CacheLink {
                key: *key,
                target: *target,
            })
            .collect();
        (config, blobs)
    }
}

/// What merging an export with the cache at its destination did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Records of earlier exports kept.
    pub kept: usize,
    /// Records of earlier exports dropped by the bound.
    pub evicted: usize,
}

/// Merge on write: `own` (this export's config and blobs) plus what `prev`
/// (the destination's cache) has that `own` lacks, each of those one export
/// older. `own` is kept whole; of the rest, the youngest records (by age,
/// then key) up to `max_records` in all, and the youngest mounts up to
/// [`MAX_MOUNTS`]. Links go with the records they lead to.
fn merge_previous(
    own: (&CacheConfig, &[Descriptor]),
    prev: (&CacheConfig, &[Descriptor]),
    max_records: usize,
    what: &str,
) -> Result<(CacheConfig, Vec<Descriptor>, Merged), Error> {
    let mut flat = Flat::of(own.0, own.1, "being exported")?;
    let old = Flat::of(prev.0, prev.1, what)?;
    let mut candidates: Vec<(u32, Key, FlatLayers)> = old
        .records
        .into_iter()
        .filter(|(k, _)| !flat.records.contains_key(k))
        .map(|(k, (age, layers))| (age.saturating_add(1), k, layers))
        .collect();
    candidates.sort_by_key(|(age, key, _)| (*age, *key));
    let room = max_records.saturating_sub(flat.records.len());
    let mut merged = Merged::default();
    for (i, (age, key, layers)) in candidates.into_iter().enumerate() {
        if i < room {
            flat.records.insert(key, (age, layers));
            merged.kept += 1;
        } else {
            merged.evicted += 1;
        }
    }
    let mut mounts: Vec<(u32, String, String, Descriptor)> = old
        .mounts
        .into_iter()
        .filter(|(k, _)| !flat.mounts.contains_key(k))
        .map(|(k, (age, id, d))| (age.saturating_add(1), k, id, d))
        .collect();
    mounts.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let room = MAX_MOUNTS.saturating_sub(flat.mounts.len());
    for (age, key, id, d) in mounts.into_iter().take(room) {
        flat.mounts.insert(key, (age, id, d));
    }
    for (k, t) in old.links {
        flat.links.entry(k).or_insert(t);
    }
    let (config, blobs) = flat.build();
    Ok((config, blobs, merged))
}

/// The content of cache mount directory `data` as a compressed tar blob.
fn mount_blob(state: &State, data: &Path, compression: Compression) -> Result<Descriptor, Error> {
    let (reader, mut writer) = io::pipe().map_err(io_err("making a pipe for", data))?;
    let dir = data.to_path_buf();
    let tarring = std::thread::spawn(move || {
        kiln_snapshot::write_layer_tar(
            &dir,
            &mut writer,
            &kiln_snapshot::TarOptions { mtime_clamp: None },
        )
    });
    let blob = kiln_oci::compress_layer(&state.content, reader, compression);
    match tarring.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(Error::Other(format!(
                "writing the tar of {} panicked",
                data.display()
            )));
        }
    }
    Ok(blob?.descriptor)
}

/// Writes the cache into the OCI layout `dir`: missing blobs, then an
/// `index.json` naming only this cache (replaced atomically).
fn write_local(
    state: &State,
    dir: &Path,
    manifest: &Manifest,
    manifest_desc: &Descriptor,
) -> Result<(), Error> {
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(io_err("creating", &blob_dir))?;
    let mut all = vec![manifest.config.clone()];
    all.extend(manifest.layers.iter().cloned());
    all.push(manifest_desc.clone());
    for d in &all {
        let dest = local_blob(dir, &d.digest);
        if fs::metadata(&dest).is_ok_and(|m| m.len() == d.size) {
            continue;
        }
        let src = state.content.path(&d.digest);
        let tmp = blob_dir.join(format!(".tmp-{}", d.digest.hex()));
        if fs::hard_link(&src, &tmp).is_err() {
            fs::copy(&src, &tmp).map_err(io_err("copying into", &tmp))?;
        }
        fs::rename(&tmp, &dest).map_err(io_err("renaming into", &dest))?;
    }
    let mut entry = manifest_desc.clone();
    entry
        .annotations
        .insert(REF_NAME.to_owned(), "cache".to_owned());
    let index = kiln_oci::Index::new(MediaTypes::Oci, vec![entry]);
    let body = serde_json::to_vec(&index).map_err(|e| Error::Io {
        what: "encoding the cache index".to_owned(),
        source: io::Error::other(e),
    })?;
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_atomic(&dir.join("index.json"), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_cache_specs() {
        let t = CacheTo::parse("type=local,dest=/tmp/c,mode=max").unwrap();
        assert_eq!(t.location, Location::Local("/tmp/c".into()));
        assert_eq!(t.mode, Mode::Max);
        let t = CacheTo::parse("type=registry,ref=host:5000/a/b:cache,compression=zstd").unwrap();
        assert_eq!(t.location, Location::Registry("host:5000/a/b:cache".into()));
        assert_eq!(t.mode, Mode::Min);
        assert_eq!(t.compression, Compression::zstd());
        let f = CacheFrom::parse("host:5000/a/b:cache").unwrap();
        assert_eq!(f.location, Location::Registry("host:5000/a/b:cache".into()));
        let f = CacheFrom::parse("type=local,src=d").unwrap();
        assert_eq!(f.location, Location::Local("d".into()));
    }

    /// A cache of one-layer records `keys` (layer i is blob i, made of the
    /// key's first byte), and of `mounts`.
    fn cache(keys: &[u8], mounts: &[&str]) -> (CacheConfig, Vec<Descriptor>) {
        let mut flat = Flat::default();
        for k in keys {
            let d = Digest::of(&[*k]);
            let blob = Descriptor::new(
                media::OCI_LAYER_GZIP,
                kiln_oci::BlobInfo { digest: d, size: 1 },
            );
            flat.records.insert(key(*k), (0, vec![(d, blob)]));
        }
        for m in mounts {
            let d = Digest::of(m.as_bytes());
            let blob = Descriptor::new(
                media::OCI_LAYER_GZIP,
                kiln_oci::BlobInfo { digest: d, size: 1 },
            );
            flat.mounts
                .insert((*m).to_owned(), (0, (*m).to_owned(), blob));
        }
        flat.build()
    }

    fn key(k: u8) -> Key {
        Key::derive("test", &[&[k]])
    }

    fn keys(c: &CacheConfig) -> Vec<(Key, u32)> {
        c.records.iter().map(|r| (r.key, r.age)).collect()
    }

    #[test]
    fn merge_on_write_keeps_the_union_and_evicts_the_oldest() {
        // Two exporters' caches merge into the union; the records of the
        // one written before are one export older.
        let (a, a_blobs) = cache(&[1, 2], &["m1"]);
        let (b, b_blobs) = cache(&[2, 3], &["m2"]);
        let (ab, ab_blobs, merged) =
            merge_previous((&b, &b_blobs), (&a, &a_blobs), 100, "test").unwrap();
        assert_eq!(
            merged,
            Merged {
                kept: 1,
                evicted: 0
            }
        );
        let mut want = vec![(key(1), 1), (key(2), 0), (key(3), 0)];
        want.sort();
        assert_eq!(keys(&ab), want);
        assert_eq!(ab.mounts.len(), 2);
        assert_eq!(ab_blobs.len(), 5, "three layers and two mounts");
        // Every record still names its own layer blob.
        let flat = Flat::of(&ab, &ab_blobs, "test").unwrap();
        for k in [1u8, 2, 3] {
            assert_eq!(flat.records[&key(k)].1[0].0, Digest::of(&[k]));
        }
        // A third export over the union, bound 4: its own 2 records, then the
        // youngest earlier ones (age 1: key 3, and key 2 is its own), and
        // key 1 (age 2) is evicted.
        let (c, c_blobs) = cache(&[2, 4, 5], &[]);
        let (abc, abc_blobs, merged) =
            merge_previous((&c, &c_blobs), (&ab, &ab_blobs), 4, "test").unwrap();
        assert_eq!(
            merged,
            Merged {
                kept: 1,
                evicted: 1
            }
        );
        let mut want = vec![(key(2), 0), (key(3), 1), (key(4), 0), (key(5), 0)];
        want.sort();
        assert_eq!(keys(&abc), want);
        // An export larger than the bound keeps all of its own records.
        let (d, d_blobs) = cache(&[6, 7, 8], &[]);
        let (only, _, merged) =
            merge_previous((&d, &d_blobs), (&abc, &abc_blobs), 2, "test").unwrap();
        assert_eq!(only.records.len(), 3);
        assert_eq!(merged.kept, 0);
    }

    #[test]
    fn refuses_what_it_does_not_do() {
        let e = |s: &str| CacheTo::parse(s).unwrap_err();
        assert_eq!(
            CacheTo::parse("type=inline").unwrap().location,
            Location::Inline
        );
        assert!(e("type=inline,mode=max").contains("mode=max is not supported"));
        assert!(e("type=inline,compression=zstd").contains("does not apply"));
        assert!(
            CacheFrom::parse("type=inline")
                .unwrap_err()
                .contains("--cache-from type=registry,ref=<image>")
        );
        assert!(e("type=local").contains("dest is required"));
        assert!(e("type=local,dest=d,mode=all").contains("expected min or max"));
        assert!(e("type=local,dest=d,bogus=1").contains("unknown attribute \"bogus\""));
        assert!(
            CacheTo::parse("type=local,dest=d,mounts=true")
                .unwrap()
                .mounts
        );
        assert!(e("type=local,dest=d,mounts=yes").contains("expected true or false"));
        assert!(e("type=gha").contains("not supported"));
        assert!(e("type=local,dest=d,dest=e").contains("given twice"));
        let e = CacheFrom::parse("type=local,dest=d").unwrap_err();
        assert!(e.contains("src is required"), "{e}");
    }
}
