//! Reading image archives into the content store (`kiln load`): `docker save`
//! archives (`manifest.json`, both the legacy `<id>.json` + `<layer>/layer.tar`
//! layout and moby 25's `blobs/sha256/…`) and OCI layout archives
//! (`index.json`, names from `io.containerd.image.name` or a full reference in
//! `org.opencontainers.image.ref.name`).
//!
//! The archive is first spooled into a scratch directory (regular files only,
//! names checked to stay inside it; symlinks, which legacy docker archives use
//! for shared layers, are kept as a name map), then every blob goes into the
//! content store with its digest verified: against the digest in its name
//! (`blobs/sha256/<hex>`, `<hex>.json`), against its descriptor (OCI), and
//! every layer's uncompressed digest against the configuration's diffIDs.
//! Nothing is named or recorded here; the caller does that with the
//! returned [`LoadedImage`]s.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use kiln_llb::{Digest, Platform};

use crate::compression::{self, Compression, Format};
use crate::config::ImageConfigFile;
use crate::content::{BlobInfo, ContentError, ContentStore};
use crate::export::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::hashing::HashingReader;
use crate::manifest::{Descriptor, Index, Manifest};
use crate::media;
use crate::tarsize::UnpackedSize;

/// Errors of loading an archive. Each names the entry involved.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load: {what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("load: {0}")]
    Invalid(String),
    #[error("load: {what}")]
    Content {
        what: String,
        #[source]
        source: ContentError,
    },
}

/// A layer of a loaded image: its blob in the store and what it unpacks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedLayer {
    pub diff_id: Digest,
    pub descriptor: Descriptor,
    /// The compression to record the blob under.
    pub compression: Compression,
    /// The layer's unpacked size (see [`crate::tarsize`]).
    pub unpacked_size: u64,
}

/// An image read from an archive, its blobs in the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// Image ID (config digest).
    pub id: Digest,
    pub layers: Vec<LoadedLayer>,
    /// The manifest, when the archive had one (OCI); stored too.
    pub manifest: Option<Digest>,
    /// Names given in the archive (as written, not normalised).
    pub names: Vec<String>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

/// The spooled archive.
struct Spool {
    dir: PathBuf,
    /// Symlink entries: name → target name (resolved against the entry's
    /// directory).
    links: BTreeMap<String, String>,
}

/// Normalises an entry name: no `..`, no absolute paths, `./` dropped.
fn clean(name: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Spool {
    fn read(input: impl Read, dir: &Path) -> Result<Spool, LoadError> {
        let mut links = BTreeMap::new();
        let mut ar = tar::Archive::new(input);
        for entry in ar.entries().map_err(io_err("reading the archive"))? {
            let mut entry = entry.map_err(io_err("reading the archive"))?;
            let path = entry.path().map_err(io_err("reading an entry name"))?;
            let Some(name) = clean(&path) else { continue };
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().map_err(io_err("reading a link"))? else {
                    continue;
                };
                let base = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target)
                } else {
                    target.into_owned()
                };
                if let Some(t) = clean(&base) {
                    links.insert(name, t);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let dest = dir.join(&name);
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).map_err(io_err(format!("creating {}", p.display())))?;
            }
            let mut f = fs::File::create(&dest).map_err(io_err(format!("writing {name}")))?;
            io::copy(&mut entry, &mut f).map_err(io_err(format!("writing {name}")))?;
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            links,
        })
    }

    /// The spooled file of entry `name` (following link entries).
    fn path(&self, name: &str) -> Result<PathBuf, LoadError> {
        let mut n = clean(Path::new(name))
            .ok_or_else(|| LoadError::Invalid(format!("bad entry name {name:?}")))?;
        for _ in 0..8 {
            let p = self.dir.join(&n);
            if p.is_file() {
                return Ok(p);
            }
            match self.links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        Err(LoadError::Invalid(format!(
            "the archive has no file {name:?}"
        )))
    }

    fn open(&self, name: &str) -> Result<fs::File, LoadError> {
        let p = self.path(name)?;
        fs::File::open(&p).map_err(io_err(format!("opening {name}")))
    }

    fn exists(&self, name: &str) -> bool {
        self.path(name).is_ok()
    }
}

/// The digest a name like `blobs/sha256/<hex>` or `<hex>.json` promises.
fn digest_in_name(name: &str) -> Option<Digest> {
    let n = name.rsplit('/').next()?;
    let hex = n.strip_suffix(".json").unwrap_or(n);
    if name.contains("blobs/sha256/") || n.ends_with(".json") {
        format!("sha256:{hex}").parse().ok()
    } else {
        None
    }
}

/// Reads an archive from `input` (spooling it in `scratch`, an empty
/// directory) and stores its images' blobs in `store`.
pub fn load_archive(
    store: &ContentStore,
    input: impl Read,
    scratch: &Path,
) -> Result<Vec<LoadedImage>, LoadError> {
    let spool = Spool::read(input, scratch)?;
    if spool.exists("manifest.json") {
        load_docker(store, &spool)
    } else if spool.exists("index.json") {
        load_oci(store, &spool)
    } else {
        Err(LoadError::Invalid(
            "neither manifest.json (docker archive) nor index.json (OCI layout) in the archive"
                .to_owned(),
        ))
    }
}

fn put(
    store: &ContentStore,
    spool: &Spool,
    name: &str,
    expected: Option<&Digest>,
) -> Result<BlobInfo, LoadError> {
    let f = spool.open(name)?;
    store
        .put_reader(io::BufReader::new(f), expected)
        .map_err(|source| LoadError::Content {
            what: name.to_owned(),
            source,
        })
}

fn read_config(store: &ContentStore, id: &Digest) -> Result<ImageConfigFile, LoadError> {
    let bytes = store.read(id).map_err(|source| LoadError::Content {
        what: format!("config {id}"),
        source,
    })?;
    ImageConfigFile::from_json(&bytes, &id.to_string())
        .map_err(|e| LoadError::Invalid(format!("config {id}: {e}")))
}

/// Stores a layer blob and checks what it unpacks to.
fn put_layer(
    store: &ContentStore,
    spool: &Spool,
    name: &str,
    expected: Option<&Digest>,
    diff_id: &Digest,
) -> Result<LoadedLayer, LoadError> {
    let blob = put(store, spool, name, expected)?;
    let f = spool.open(name)?;
    let (format, tar) = compression::decompress(io::BufReader::new(f))
        .map_err(io_err(format!("reading {name}")))?;
    let mut h = UnpackedSize::new(HashingReader::new(tar));
    io::copy(&mut h, &mut io::sink()).map_err(io_err(format!("decompressing {name}")))?;
    let unpacked_size = h.size();
    let (actual, _, _) = h.into_inner().finish();
    if actual != *diff_id {
        return Err(LoadError::Invalid(format!(
            "layer {name} unpacks to {actual}, but the configuration says {diff_id}"
        )));
    }
    let (compression, media_type) = match format {
        Format::Gzip => (Compression::gzip(), media::OCI_LAYER_GZIP),
        Format::Zstd => (Compression::zstd(), media::OCI_LAYER_ZSTD),
        Format::Tar | Format::Unknown => (Compression::Uncompressed, media::OCI_LAYER_TAR),
        other => {
            return Err(LoadError::Invalid(format!(
                "layer {name} is {other}-compressed; image layers are tar, gzip or zstd"
            )));
        }
    };
    Ok(LoadedLayer {
        diff_id: *diff_id,
        descriptor: Descriptor::new(media_type, blob),
        compression,
        unpacked_size,
    })
}

fn load_docker(store: &ContentStore, spool: &Spool) -> Result<Vec<LoadedImage>, LoadError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Item {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        #[serde(default)]
        layers: Vec<String>,
    }
    let bytes = fs::read(spool.path("manifest.json")?).map_err(io_err("reading manifest.json"))?;
    let items: Vec<Item> = serde_json::from_slice(&bytes)
        .map_err(|e| LoadError::Invalid(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for item in items {
        let config = put(
            store,
            spool,
            &item.config,
            digest_in_name(&item.config).as_ref(),
        )?;
        let cfg = read_config(store, &config.digest)?;
        if cfg.rootfs.diff_ids.len() != item.layers.len() {
            return Err(LoadError::Invalid(format!(
                "{}: {} diffIDs in the configuration but {} layers in manifest.json",
                item.config,
                cfg.rootfs.diff_ids.len(),
                item.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in item.layers.iter().zip(&cfg.rootfs.diff_ids) {
            let expected = if name.contains("blobs/sha256/") {
                digest_in_name(name)
            } else {
                None
            };
            layers.push(put_layer(store, spool, name, expected.as_ref(), diff_id)?);
        }
        out.push(LoadedImage {
            id: config.digest,
            layers,
            manifest: None,
            names: item.repo_tags.unwrap_or_default(),
        });
    }
    Ok(out)
}

fn blob_name(d: &Descriptor) -> String {
    format!("blobs/sha256/{}", d.digest.hex())
}

fn load_oci(store: &ContentStore, spool: &Spool) -> Result<Vec<LoadedImage>, LoadError> {
    let bytes = fs::read(spool.path("index.json")?).map_err(io_err("reading index.json"))?;
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| LoadError::Invalid(format!("index.json: {e}")))?;
    let host = Platform::host();
    let mut out: Vec<LoadedImage> = Vec::new();
    for top in &index.manifests {
        let name = top
            .annotations
            .get(ANNOTATION_IMAGE_NAME)
            .cloned()
            .or_else(|| {
                top.annotations
                    .get(ANNOTATION_REF_NAME)
                    .filter(|n| n.contains('/') || n.contains(':'))
                    .cloned()
            });
        let desc = platform_manifest(store, spool, top, &host)?;
        if let Some(img) = out.iter_mut().find(|i| i.manifest == Some(desc.digest)) {
            img.names.extend(name);
            continue;
        }
        let mut img = load_manifest(store, spool, &desc)?;
        img.names = name.into_iter().collect();
        out.push(img);
    }
    Ok(out)
}

/// Stores the image of an OCI layout *directory* (`--build-context
/// NAME=oci-layout://DIR`): the first entry of its `index.json` that `pick`
/// accepts, and of an index the manifest for `want`. Blobs are verified as
/// those of an archive; the directory is only read.
pub fn load_layout_image(
    store: &ContentStore,
    dir: &Path,
    pick: &dyn Fn(&Descriptor) -> bool,
    want: &Platform,
) -> Result<LoadedImage, LoadError> {
    let spool = Spool {
        dir: dir.to_path_buf(),
        links: BTreeMap::new(),
    };
    let path = dir.join("index.json");
    let bytes = fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| LoadError::Invalid(format!("{}: {e}", path.display())))?;
    let top = index.manifests.iter().find(|d| pick(d)).ok_or_else(|| {
        LoadError::Invalid(format!("{}: no such image in the layout", path.display()))
    })?;
    let desc = platform_manifest(store, &spool, top, want)?;
    load_manifest(store, &spool, &desc)
}

/// The manifest `top` stands for: itself, or the entry for `want` of the
/// index (or nested indexes) it names, which are stored on the way.
fn platform_manifest(
    store: &ContentStore,
    spool: &Spool,
    top: &Descriptor,
    want: &Platform,
) -> Result<Descriptor, LoadError> {
    let mut desc = top.clone();
    for _ in 0..8 {
        if !media::is_index(&desc.media_type) {
            break;
        }
        put(store, spool, &blob_name(&desc), Some(&desc.digest))?;
        let idx: Index = serde_json::from_slice(&read_blob(store, &desc.digest)?)
            .map_err(|e| LoadError::Invalid(format!("index {}: {e}", desc.digest)))?;
        desc = idx
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
            })
            .or_else(|| idx.manifests.first())
            .cloned()
            .ok_or_else(|| LoadError::Invalid(format!("index {} is empty", desc.digest)))?;
    }
    if !media::is_manifest(&desc.media_type) {
        return Err(LoadError::Invalid(format!(
            "{} has media type {:?}, not an image manifest",
            desc.digest, desc.media_type
        )));
    }
    Ok(desc)
}

/// Stores manifest `desc`, its config and its layers (checked against the
/// config's diffIDs). The result has no names.
fn load_manifest(
    store: &ContentStore,
    spool: &Spool,
    desc: &Descriptor,
) -> Result<LoadedImage, LoadError> {
    put(store, spool, &blob_name(desc), Some(&desc.digest))?;
    let m: Manifest = serde_json::from_slice(&read_blob(store, &desc.digest)?)
        .map_err(|e| LoadError::Invalid(format!("manifest {}: {e}", desc.digest)))?;
    put(store, spool, &blob_name(&m.config), Some(&m.config.digest))?;
    let cfg = read_config(store, &m.config.digest)?;
    if cfg.rootfs.diff_ids.len() != m.layers.len() {
        return Err(LoadError::Invalid(format!(
            "manifest {}: {} layers but {} diffIDs in its configuration",
            desc.digest,
            m.layers.len(),
            cfg.rootfs.diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (l, diff_id) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
        let mut loaded = put_layer(store, spool, &blob_name(l), Some(&l.digest), diff_id)?;
        if loaded.descriptor.size != l.size {
            return Err(LoadError::Invalid(format!(
                "layer {}: {} bytes, but its descriptor says {}",
                l.digest, loaded.descriptor.size, l.size
            )));
        }
        loaded.descriptor.media_type = l.media_type.clone();
        layers.push(loaded);
    }
    Ok(LoadedImage {
        id: m.config.digest,
        layers,
        manifest: Some(desc.digest),
        names: Vec::new(),
    })
}

fn read_blob(store: &ContentStore, d: &Digest) -> Result<Vec<u8>, LoadError> {
    store.read(d).map_err(|source| LoadError::Content {
        what: format!("{d}"),
        source,
    })
}
