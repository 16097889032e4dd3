//! `kiln save` and `kiln load`: images of the store to and from `docker
//! save` / OCI archives.

use std::io::Read;

use kiln_llb::Digest;
use kiln_oci::{BlobInfo, Compression, Descriptor, ExportImage, Manifest, MediaTypes, media};

use crate::error::Error;
use crate::state::State;
use kiln_store::layers::load_config;

/// A manifest for image `id` in the content store (its own config blob, its
/// layer blobs, gzip preferred; see [`crate::blobs::blob`]), ready for an
/// archive with `names`.
pub fn export_image(
    state: &State,
    id: &Digest,
    names: Vec<String>,
    types: MediaTypes,
) -> Result<ExportImage, Error> {
    export_named(state, id, None, names, types)
}

/// [`export_image`] of an image a name reaches: the layer blobs of the
/// manifest the name records (pulled or loaded), when it has one, are
/// preferred.
pub fn export_named(
    state: &State,
    id: &Digest,
    manifest: Option<&Digest>,
    names: Vec<String>,
    types: MediaTypes,
) -> Result<ExportImage, Error> {
    let config = load_config(state, id)?;
    let blobs = crate::blobs::image_blobs(state, id, &config, manifest, Compression::gzip())?;
    let mut layers = Vec::with_capacity(blobs.len());
    for mut d in blobs {
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
        crate::blobs::record_loaded(state, &img.layers)?;
        let names = crate::images::naming(state, &[img.id], |ix| {
            let mut names = Vec::new();
            for n in &img.names {
                if let Some(n) = normalize(n) {
                    ix.set(
                        &n,
                        kiln_oci::ImageRef {
                            id: img.id,
                            manifest: img.manifest,
                        },
                    )?;
                    names.push(n);
                }
            }
            Ok(names)
        })?;
        out.push((img.id, names));
    }
    Ok(out)
}
