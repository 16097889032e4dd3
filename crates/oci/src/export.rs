//! Exports from the content store: OCI image layouts (directories), OCI
//! archives (the same as a tar stream) and `docker load` archives.
//!
//! What is written follows containerd's archive exporter, which BuildKit's
//! `oci` and `docker` exporters use, and `docker save` (moby 25+):
//!
//! - `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json`, and every
//!   blob reachable from the exported manifests under `blobs/sha256/<hex>`.
//! - One `index.json` entry per (manifest, name), with the annotations
//!   `io.containerd.image.name` = the full name and
//!   `org.opencontainers.image.ref.name` = its tag (the full name when it has
//!   none or is pinned by digest only), as containerd's `ociReferenceName`. An
//!   image without names gets one entry without name annotations.
//! - The docker archive is an OCI archive plus `manifest.json`
//!   (`[{"Config","RepoTags","Layers"}]`, paths `blobs/sha256/<hex>`) and the
//!   legacy `repositories` file (`{"repo":{"tag":"<top layer hex>"}}`), as
//!   `docker save` writes since moby 25. So one file works with `docker load`,
//!   `skopeo … docker-archive:` and `oci-archive:`. `RepoTags` are familiar
//!   names (`busybox:latest`); names pinned by digest cannot be tags and are
//!   left out of `RepoTags`.
//!
//! Archives are deterministic: entries sorted by name, mtime 0, uid/gid 0, no
//! user names, fixed modes (directories 0755, blobs and `oci-layout` 0444,
//! other files 0644), ustar headers; all JSON canonical. Blobs are streamed
//! from the store and re-hashed on the way (a corrupt store blob fails the
//! export rather than producing a bad archive); a layer is never held in
//! memory.
//!
//! Writing into an existing layout directory adds to it: other entries of its
//! `index.json` are kept, an entry with the same name annotations is replaced
//! (as BuildKit's `ociindex`), blobs already present are not rewritten, and
//! entries written by other tools keep the fields kiln does not model (the
//! existing `index.json` is edited as JSON). The existing index is read and
//! validated before anything is written. The layout directory itself is
//! `flock`ed during the update (BuildKit locks `index.json.lock` instead; the
//! two do not exclude each other) and `index.json` is replaced atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_llb::Digest;
use serde::Serialize;

use crate::atomic::{DirLock, create_temp, remove_stale_temps, sync_dir, write_atomic};
use crate::content::{ContentError, ContentStore};
use crate::hashing::HashingReader;
use crate::json::{JsonError, to_canonical_json};
use crate::manifest::{Descriptor, Index, Manifest};
use crate::media::{self, MediaTypes};

/// Annotation with the full image name (containerd, BuildKit, Docker).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation with the reference name inside a layout (the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Bound on index nesting when walking (content addressing rules out cycles;
/// this bounds hostile depth).
const MAX_DEPTH: usize = 8;

/// Errors of exports. Each names the blob, file or image involved.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Writing the archive stream failed.
    #[error("export: writing {entry} to the archive: {source}")]
    Write { entry: String, source: io::Error },
    /// A blob changed size or content in the store while being exported.
    #[error(
        "export: blob {digest} in the content store does not match its descriptor (expected {expected} bytes, read {read}, digest {actual})"
    )]
    BlobMismatch {
        digest: Digest,
        expected: u64,
        read: u64,
        actual: Digest,
    },
    /// A manifest or index in the store could not be parsed.
    #[error("export: {what} {digest} is not valid JSON of its type: {source}")]
    BadDocument {
        what: &'static str,
        digest: Digest,
        source: serde_json::Error,
    },
    /// A top-level descriptor is neither a manifest nor an index.
    #[error(
        "export: {digest} has media type {media_type:?}; only manifests and indexes can be exported"
    )]
    NotAManifest { digest: Digest, media_type: String },
    /// The docker archive format has no place for multi-platform indexes.
    #[error(
        "export: {digest} is an index; a docker archive can only hold single-platform manifests (pick one platform)"
    )]
    IndexInDockerArchive { digest: Digest },
    #[error("export: indexes nested deeper than {MAX_DEPTH} levels at {digest}")]
    TooDeep { digest: Digest },
    /// The layout's existing `index.json` cannot be read.
    #[error("export: existing {path} is not a valid OCI index: {source}")]
    BadLayoutIndex {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// An image to export: a manifest (or index) in the content store and the
/// names to give it (fully normalised references; may be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportImage {
    pub manifest: Descriptor,
    pub names: Vec<String>,
}

/// Writes (or adds to) an OCI image layout in `dir`. Returns the layout's new
/// `index.json`.
pub fn write_oci_layout(
    store: &ContentStore,
    dir: &Path,
    images: &[ExportImage],
) -> Result<Index, ExportError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { op, path, source }
    };
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(io("create directory", &blob_dir))?;
    let plan = plan(store, images)?;
    let _lock = DirLock::exclusive(dir).map_err(io("lock", dir))?;
    remove_stale_temps(dir).map_err(io("clean", dir))?;
    remove_stale_temps(&blob_dir).map_err(io("clean", &blob_dir))?;

    let index_path = dir.join("index.json");
    let bad = |source| ExportError::BadLayoutIndex {
        path: index_path.clone(),
        source,
    };
    // The existing index is validated as an `Index` but edited as JSON, so
    // fields kiln does not model (artifactType, data, os.features, …) in
    // entries written by other tools survive.
    let mut index = match fs::read(&index_path) {
        Ok(b) => {
            serde_json::from_slice::<Index>(&b).map_err(bad)?;
            match serde_json::from_slice::<serde_json::Value>(&b).map_err(bad)? {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(), // unreachable: it parsed as an Index
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(io("read", &index_path)(e)),
    };
    for d in &plan.blobs {
        let dest = blob_dir.join(d.digest.hex());
        if fs::metadata(&dest).is_ok_and(|m| m.len() == d.size) {
            continue;
        }
        let (tmp, mut f) =
            create_temp(&blob_dir, &d.digest.hex()).map_err(io("create", &blob_dir))?;
        let result = copy_blob(store, d, &mut f, &tmp).and_then(|()| {
            f.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io("chmod", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, &dest).map_err(io("rename", &tmp))
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    sync_dir(&blob_dir).map_err(io("fsync", &blob_dir))?;

    if index
        .get("schemaVersion")
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
        == 0
    {
        index.insert("schemaVersion".into(), 2.into());
    }
    if index
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .is_empty()
    {
        index.insert("mediaType".into(), media::OCI_INDEX.into());
    }
    let mut manifests = match index.remove("manifests") {
        Some(serde_json::Value::Array(a)) => a,
        _ => Vec::new(),
    };
    for entry in plan.index_entries {
        let key = name_key(&entry);
        let entry = serde_json::to_value(&entry).map_err(|source| JsonError::Serialize {
            what: "descriptor",
            source,
        })?;
        if key.is_some() {
            manifests.retain(|m| value_name_key(m) != key);
        }
        if !manifests.contains(&entry) {
            manifests.push(entry);
        }
    }
    index.insert("manifests".into(), serde_json::Value::Array(manifests));
    let index_bytes = to_canonical_json(&index)?;
    let layout_path = dir.join("oci-layout");
    if fs::read(&layout_path).ok().as_deref() != Some(LAYOUT_FILE) {
        write_atomic(&layout_path, LAYOUT_FILE).map_err(io("write", &layout_path))?;
    }
    write_atomic(&index_path, &index_bytes).map_err(io("write", &index_path))?;
    serde_json::from_slice(&index_bytes).map_err(bad)
}

/// Writes an OCI archive (a tar of an OCI layout) to `out`; returns `out`.
pub fn write_oci_archive<W: Write>(
    store: &ContentStore,
    out: W,
    images: &[ExportImage],
) -> Result<W, ExportError> {
    let plan = plan(store, images)?;
    let mut entries = plan.layout_entries()?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    write_tar(store, out, entries)
}

/// Writes a `docker load` archive (which is also an OCI archive) to `out`;
/// returns `out`. Every image must be a single-platform manifest.
pub fn write_docker_archive<W: Write>(
    store: &ContentStore,
    out: W,
    images: &[ExportImage],
) -> Result<W, ExportError> {
    let plan = plan(store, images)?;
    let mut entries = plan.layout_entries()?;

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Item {
        config: String,
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    // One manifest.json item per manifest (names merged), in first-seen order.
    let mut items: Vec<(Digest, Item)> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (image, manifest) in images.iter().zip(&plan.manifests) {
        let Some(m) = manifest else {
            return Err(ExportError::IndexInDockerArchive {
                digest: image.manifest.digest,
            });
        };
        let pos = match items.iter().position(|(d, _)| *d == image.manifest.digest) {
            Some(p) => p,
            None => {
                items.push((
                    image.manifest.digest,
                    Item {
                        config: blob_path(&m.config.digest),
                        repo_tags: Vec::new(),
                        layers: m.layers.iter().map(|l| blob_path(&l.digest)).collect(),
                    },
                ));
                items.len() - 1
            }
        };
        for name in &image.names {
            let Some((repo, tag)) = familiar_tag(name) else {
                continue;
            };
            let tagged = format!("{repo}:{tag}");
            if !items[pos].1.repo_tags.contains(&tagged) {
                items[pos].1.repo_tags.push(tagged);
            }
            if let Some(top) = m.layers.last() {
                repositories
                    .entry(repo)
                    .or_default()
                    .insert(tag, top.digest.hex());
            }
        }
    }
    let items: Vec<Item> = items.into_iter().map(|(_, i)| i).collect();
    entries.push(Entry::bytes(
        "manifest.json",
        0o644,
        to_canonical_json(&items)?,
    ));
    if !repositories.is_empty() {
        entries.push(Entry::bytes(
            "repositories",
            0o644,
            to_canonical_json(&repositories)?,
        ));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    write_tar(store, out, entries)
}

/// The `org.opencontainers.image.ref.name` of a normalised name, as
/// containerd's `ociReferenceName`: the tag (`latest`), `tag@digest` when both,
/// and the full name when there is no tag.
pub fn oci_ref_name(name: &str) -> String {
    let (_, tag, digest) = split_ref(name);
    match (tag, digest) {
        (Some(t), None) => t.to_owned(),
        (Some(t), Some(d)) => format!("{t}@{d}"),
        (None, _) => name.to_owned(),
    }
}

/// The familiar repository (`busybox`, `user/app`, `localhost:5000/a`) and tag
/// of a normalised name, for `RepoTags`; `latest` when it has no tag; `None`
/// when it is pinned by digest.
pub fn familiar_tag(name: &str) -> Option<(String, String)> {
    let (repo, tag, digest) = split_ref(name);
    if digest.is_some() {
        return None;
    }
    let mut familiar = repo;
    if let Some(rest) = familiar.strip_prefix("docker.io/") {
        familiar = match rest.strip_prefix("library/") {
            Some(r) if !r.contains('/') => r,
            _ => rest,
        };
    }
    Some((familiar.to_owned(), tag.unwrap_or("latest").to_owned()))
}

/// `(repository, tag, digest)` of a reference.
fn split_ref(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last..].rfind(':') {
        Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn name_key(d: &Descriptor) -> Option<(Option<String>, Option<String>)> {
    let ref_name = d.annotations.get(ANNOTATION_REF_NAME).cloned();
    let image_name = d.annotations.get(ANNOTATION_IMAGE_NAME).cloned();
    if ref_name.is_none() && image_name.is_none() {
        return None;
    }
    Some((ref_name, image_name))
}

/// [`name_key`] of a descriptor kept as JSON.
fn value_name_key(v: &serde_json::Value) -> Option<(Option<String>, Option<String>)> {
    let get = |k: &str| v["annotations"][k].as_str().map(str::to_owned);
    let (ref_name, image_name) = (get(ANNOTATION_REF_NAME), get(ANNOTATION_IMAGE_NAME));
    if ref_name.is_none() && image_name.is_none() {
        return None;
    }
    Some((ref_name, image_name))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// What an export writes: the blobs (deduplicated, in walk order), the
/// `index.json` entries, and each image's manifest when it is one.
struct Plan {
    blobs: Vec<Descriptor>,
    index_entries: Vec<Descriptor>,
    manifests: Vec<Option<Manifest>>,
}

fn plan(store: &ContentStore, images: &[ExportImage]) -> Result<Plan, ExportError> {
    let mut plan = Plan {
        blobs: Vec::new(),
        index_entries: Vec::new(),
        manifests: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for image in images {
        let top = &image.manifest;
        if !media::is_manifest(&top.media_type) && !media::is_index(&top.media_type) {
            return Err(ExportError::NotAManifest {
                digest: top.digest,
                media_type: top.media_type.clone(),
            });
        }
        plan.manifests
            .push(walk(store, top, 0, &mut seen, &mut plan.blobs)?);
        if image.names.is_empty() {
            plan.index_entries.push(top.clone());
        }
        for name in &image.names {
            let mut d = top.clone();
            d.annotations
                .insert(ANNOTATION_IMAGE_NAME.to_owned(), name.clone());
            d.annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), oci_ref_name(name));
            plan.index_entries.push(d);
        }
    }
    Ok(plan)
}

/// Adds `d` and everything it references to `out`; returns the manifest when
/// `d` is one.
fn walk(
    store: &ContentStore,
    d: &Descriptor,
    depth: usize,
    seen: &mut BTreeSet<Digest>,
    out: &mut Vec<Descriptor>,
) -> Result<Option<Manifest>, ExportError> {
    if depth > MAX_DEPTH {
        return Err(ExportError::TooDeep { digest: d.digest });
    }
    let new = seen.insert(d.digest);
    if new {
        out.push(d.clone());
    }
    if media::is_manifest(&d.media_type) {
        let m: Manifest = serde_json::from_slice(&store.read(&d.digest)?).map_err(|source| {
            ExportError::BadDocument {
                what: "manifest",
                digest: d.digest,
                source,
            }
        })?;
        if new {
            for child in std::iter::once(&m.config).chain(&m.layers) {
                if seen.insert(child.digest) {
                    out.push(child.clone());
                }
            }
        }
        return Ok(Some(m));
    }
    if media::is_index(&d.media_type) && new {
        let idx: Index = serde_json::from_slice(&store.read(&d.digest)?).map_err(|source| {
            ExportError::BadDocument {
                what: "index",
                digest: d.digest,
                source,
            }
        })?;
        for child in &idx.manifests {
            walk(store, child, depth + 1, seen, out)?;
        }
    }
    Ok(None)
}

impl Plan {
    /// The entries of an OCI layout: directories, blobs, `index.json`,
    /// `oci-layout`.
    fn layout_entries(&self) -> Result<Vec<Entry>, ExportError> {
        let mut entries = vec![
            Entry::dir("blobs/"),
            Entry::dir("blobs/sha256/"),
            Entry::bytes("oci-layout", 0o444, LAYOUT_FILE.to_vec()),
            Entry::bytes(
                "index.json",
                0o644,
                to_canonical_json(&Index::new(MediaTypes::Oci, self.index_entries.clone()))?,
            ),
        ];
        for d in &self.blobs {
            entries.push(Entry {
                name: blob_path(&d.digest),
                mode: 0o444,
                content: Content::Blob(d.clone()),
            });
        }
        Ok(entries)
    }
}

struct Entry {
    name: String,
    mode: u32,
    content: Content,
}

enum Content {
    Dir,
    Bytes(Vec<u8>),
    Blob(Descriptor),
}

impl Entry {
    fn dir(name: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            mode: 0o755,
            content: Content::Dir,
        }
    }

    fn bytes(name: &str, mode: u32, b: Vec<u8>) -> Entry {
        Entry {
            name: name.to_owned(),
            mode,
            content: Content::Bytes(b),
        }
    }
}

fn write_tar<W: Write>(
    store: &ContentStore,
    out: W,
    entries: Vec<Entry>,
) -> Result<W, ExportError> {
    let mut tar = tar::Builder::new(out);
    let mut last: Option<String> = None;
    for e in entries {
        if last.as_deref() == Some(e.name.as_str()) {
            continue;
        }
        let werr = |entry: &str| {
            let entry = entry.to_owned();
            move |source| ExportError::Write { entry, source }
        };
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match &e.content {
            Content::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_path(&e.name).map_err(werr(&e.name))?;
                h.set_cksum();
                tar.append(&h, io::empty()).map_err(werr(&e.name))?;
            }
            Content::Bytes(b) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(b.len() as u64);
                h.set_path(&e.name).map_err(werr(&e.name))?;
                h.set_cksum();
                tar.append(&h, &b[..]).map_err(werr(&e.name))?;
            }
            Content::Blob(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.size);
                h.set_path(&e.name).map_err(werr(&e.name))?;
                h.set_cksum();
                let f = store.open_blob(&d.digest)?;
                let mut r = HashingReader::new(f.take(d.size));
                tar.append(&h, &mut r).map_err(werr(&e.name))?;
                check_blob(d, r)?;
            }
        }
        last = Some(e.name);
    }
    tar.into_inner().map_err(|source| ExportError::Write {
        entry: "the end-of-archive marker".into(),
        source,
    })
}

/// Streams a store blob into `w`, verifying size and digest.
fn copy_blob(
    store: &ContentStore,
    d: &Descriptor,
    w: &mut impl Write,
    path: &Path,
) -> Result<(), ExportError> {
    let f = store.open_blob(&d.digest)?;
    let mut r = HashingReader::new(f.take(d.size));
    io::copy(&mut r, w).map_err(|source| ExportError::Io {
        op: "copy blob to",
        path: path.to_path_buf(),
        source,
    })?;
    check_blob(d, r)
}

fn check_blob<R>(d: &Descriptor, r: HashingReader<R>) -> Result<(), ExportError>
where
    R: Read,
{
    let (actual, read, _) = r.finish();
    if actual != d.digest || read != d.size {
        return Err(ExportError::BlobMismatch {
            digest: d.digest,
            expected: d.size,
            read,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names() {
        assert_eq!(oci_ref_name("docker.io/library/busybox:latest"), "latest");
        assert_eq!(oci_ref_name("localhost:5000/a/b:v1"), "v1");
        assert_eq!(oci_ref_name("localhost:5000/a/b"), "localhost:5000/a/b");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            oci_ref_name(&format!("docker.io/x/y@{d}")),
            format!("docker.io/x/y@{d}")
        );
        assert_eq!(
            oci_ref_name(&format!("docker.io/x/y:t@{d}")),
            format!("t@{d}")
        );

        let ft = |n: &str| familiar_tag(n).map(|(r, t)| format!("{r}:{t}"));
        assert_eq!(
            ft("docker.io/library/busybox:latest").as_deref(),
            Some("busybox:latest")
        );
        assert_eq!(ft("docker.io/user/app:1").as_deref(), Some("user/app:1"));
        assert_eq!(
            ft("docker.io/library/a/b:1").as_deref(),
            Some("library/a/b:1")
        );
        assert_eq!(
            ft("localhost:5000/a/b:tag").as_deref(),
            Some("localhost:5000/a/b:tag")
        );
        assert_eq!(
            ft("localhost:5000/a").as_deref(),
            Some("localhost:5000/a:latest")
        );
        assert_eq!(ft(&format!("docker.io/library/busybox@{d}")), None);
    }
}
