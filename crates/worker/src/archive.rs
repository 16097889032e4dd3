//! `kiln save` and `kiln load`: images of the store to and from `docker
//! save` / OCI archives.

use std::io::Read;

use kiln_llb::Digest;
use kiln_oci::{BlobInfo, Compression, Descriptor, ExportImage, Manifest, MediaTypes, media};

use crate::error::Error;
use crate::image::{LABEL_DIFF_ID, image_layers, layer_blob, load_config};
use crate::state::State;

/// The `SOURCE_DATE_EPOCH` clamp with which built layer `layer` hashes to
/// `diff_id` (`None` inside: unclamped), if it was computed.
fn clamp_of(
    labels: &std::collections::BTreeMap<String, String>,
    diff_id: &str,
) -> Option<Option<i64>> {
    labels.iter().find_map(|(k, v)| {
        if v != diff_id {
            return None;
        }
        if k == "kiln.tar.diff_id" {
            return Some(None);
        }
        k.strip_prefix("kiln.tar.diff_id@")
            .and_then(|e| e.parse().ok())
            .map(Some)
    })
}

/// The layer blob of the `i`th layer of image `id`: a recorded blob of its
/// diffID (gzip preferred), else one compressed now from its built layer.
fn blob_of(state: &State, id: &Digest, i: usize, diff_id: &Digest) -> Result<Descriptor, Error> {
    let blobs = state.layer_blobs.list(diff_id)?;
    if let Some((_, d)) = blobs
        .iter()
        .find(|(c, _)| matches!(c, Compression::Gzip { .. }))
        .or_else(|| blobs.first())
        && state.content.has(&d.digest)?
    {
        return Ok(d.clone());
    }
    let layers = image_layers(state, id)?;
    let layer = layers
        .get(i)
        .ok_or_else(|| Error::Other(format!("image {id}: layer {i} is missing")))?;
    let l = state.layers.get(layer)?;
    let clamp = if l.meta.labels.contains_key(LABEL_DIFF_ID) {
        None
    } else {
        clamp_of(&l.meta.labels, &diff_id.to_string()).ok_or_else(|| {
            Error::Other(format!(
                "image {id}: no layer with diffID {diff_id} in the store"
            ))
        })?
    };
    layer_blob(state, layer, clamp, Compression::gzip())
}

/// A manifest for image `id` in the content store (its own config blob, its
/// layer blobs), ready for an archive with `names`.
pub fn export_image(
    state: &State,
    id: &Digest,
    names: Vec<String>,
    types: MediaTypes,
) -> Result<ExportImage, Error> {
    let config = load_config(state, id)?;
    let mut layers = Vec::with_capacity(config.rootfs.diff_ids.len());
    for (i, diff_id) in config.rootfs.diff_ids.iter().enumerate() {
        let mut d = blob_of(state, id, i, diff_id)?;
        d.media_type = match (types, d.media_type.as_str()) {
            (MediaTypes::Docker, media::OCI_LAYER_GZIP) => media::DOCKER_LAYER_GZIP.to_owned(),
            (MediaTypes::Docker, media::OCI_LAYER_TAR) => media::DOCKER_LAYER_TAR.to_owned(),
            (MediaTypes::Oci, media::DOCKER_LAYER_GZIP) => media::OCI_LAYER_GZIP.to_owned(),
            (MediaTypes::Oci, media::DOCKER_LAYER_TAR) => media::OCI_LAYER_TAR.to_owned(),
            (_, other) => other.to_owned(),
        };
        layers.push(d);
    }
    let size = state.content.size(id)?;
    let config_desc = Descriptor::new(types.config(), BlobInfo { digest: *id, size });
    let manifest = Manifest::new(types, config_desc, layers);
    let blob = state.content.put_json(&manifest)?;
    let mut desc = Descriptor::new(types.manifest(), blob);
    desc.platform = Some(config.platform());
    Ok(ExportImage {
        manifest: desc,
        names,
    })
}

/// What `kiln load` stored: each image ID with the names it was given.
pub type Loaded = Vec<(Digest, Vec<String>)>;

/// `kiln load`: stores the images of a docker or OCI archive (digests
/// verified), records their layer blobs (unpacked on first use, once per
/// diffID) and names them. `normalize` turns an archive's names into store
/// names (`None`: not a valid name, skipped).
pub fn load(
    state: &State,
    input: impl Read,
    normalize: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Error> {
    let scratch = state.scratch()?;
    let images = kiln_oci::load_archive(&state.content, input, scratch.path())
        .map_err(kiln_oci::Error::from)?;
    let mut out = Vec::new();
    for img in images {
        for l in &img.layers {
            let known = state.layer_blobs.list(&l.diff_id)?;
            if !known.iter().any(|(c, _)| *c == l.compression) {
                state
                    .layer_blobs
                    .add(&l.diff_id, l.compression, &l.descriptor)?;
            }
        }
        crate::images::record(state, &img.id)?;
        let mut names = Vec::new();
        for n in &img.names {
            if let Some(n) = normalize(n) {
                state.images.set(
                    &n,
                    kiln_oci::ImageRef {
                        id: img.id,
                        manifest: img.manifest,
                    },
                )?;
                names.push(n);
            }
        }
        out.push((img.id, names));
    }
    Ok(out)
}
