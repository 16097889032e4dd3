//! Assembling an image in the content store: config + layer blobs → manifest.

use crate::config::ImageConfigFile;
use crate::content::ContentStore;
use crate::manifest::{Descriptor, Manifest};
use crate::media::{self, MediaTypes};

/// An image written to the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenImage {
    /// The configuration blob; its digest is the image ID.
    pub config: Descriptor,
    /// The manifest blob, with the image's platform set.
    pub manifest: Descriptor,
}

/// Errors of image assembly.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The manifest must have one layer per `rootfs.diff_ids` entry.
    #[error("image has {diff_ids} diffIDs in its config but {layers} layer blobs")]
    LayerCount { diff_ids: usize, layers: usize },
    /// A layer descriptor whose media type is not a layer type.
    #[error("layer {digest} has media type {media_type:?}, which is not a layer type")]
    NotALayer {
        digest: kiln_llb::Digest,
        media_type: String,
    },
    /// Writing the config or the manifest to the content store failed.
    #[error(transparent)]
    Content(#[from] crate::content::ContentError),
    /// Serialising the config failed.
    #[error(transparent)]
    Json(#[from] crate::json::JsonError),
}

/// Writes `config` (canonical JSON) and a manifest referencing it and `layers`
/// (bottom first, one per `config.rootfs.diff_ids`) to the store.
///
/// Layer descriptors keep their media type except for the family: with
/// [`MediaTypes::Docker`], OCI tar/gzip layer types become the Docker ones (and
/// the other way round), zstd stays OCI.
pub fn write_image(
    store: &ContentStore,
    config: &ImageConfigFile,
    layers: &[Descriptor],
    types: MediaTypes,
) -> Result<WrittenImage, ImageError> {
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(ImageError::LayerCount {
            diff_ids: config.rootfs.diff_ids.len(),
            layers: layers.len(),
        });
    }
    let layers = layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.media_type =
                layer_type(&l.media_type, types).ok_or_else(|| ImageError::NotALayer {
                    digest: l.digest,
                    media_type: l.media_type.clone(),
                })?;
            Ok(l)
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    let config_blob = store.put_bytes(&config.to_json()?)?;
    let config_desc = Descriptor::new(types.config(), config_blob);
    let manifest = Manifest::new(types, config_desc.clone(), layers);
    let manifest_blob = store.put_json(&manifest)?;
    let mut manifest_desc = Descriptor::new(types.manifest(), manifest_blob);
    manifest_desc.platform = Some(config.platform());
    Ok(WrittenImage {
        config: config_desc,
        manifest: manifest_desc,
    })
}

/// The layer media type `mt` in the family `types`.
fn layer_type(mt: &str, types: MediaTypes) -> Option<String> {
    let tar = [media::OCI_LAYER_TAR, media::DOCKER_LAYER_TAR];
    let gzip = [media::OCI_LAYER_GZIP, media::DOCKER_LAYER_GZIP];
    let pick = |pair: [&'static str; 2]| match types {
        MediaTypes::Oci => pair[0],
        MediaTypes::Docker => pair[1],
    };
    if tar.contains(&mt) {
        Some(pick(tar).to_owned())
    } else if gzip.contains(&mt) {
        Some(pick(gzip).to_owned())
    } else if media::is_layer(mt) {
        // zstd, non-distributable and foreign layers keep their type.
        Some(mt.to_owned())
    } else {
        None
    }
}
